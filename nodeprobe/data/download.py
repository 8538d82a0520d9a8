"""Locating the data folder and fetching public originals with checksum verification.

:func:`resolve_data_dir` picks, in order: the path given, ``$NODEPROBE_DATA``,
``<repo>/../shared/data`` when it exists (development checkout), else the user cache
``$XDG_CACHE_HOME/nodeprobe`` (default ``~/.cache/nodeprobe``), where :func:`ensure_file`
downloads :data:`KNOWN_SOURCES` on demand.

:func:`fetch` streams to a temporary file inside ``dest_dir``, verifies the checksum(s) and
renames atomically; an HTTP/network error or a checksum mismatch raises
:class:`~nodeprobe.errors.NodeprobeError` and leaves nothing behind.

Example:
    >>> path = ensure_file("fewrel/train_wiki.json")  # downloads once  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from nodeprobe.data._io import PathLike, as_path
from nodeprobe.data_home import default_data_dir, download_dir
from nodeprobe.errors import NodeprobeError

__all__ = ["Source", "KNOWN_SOURCES", "fetch", "resolve_data_dir", "ensure_file", "download_dir"]

_FEWREL = "https://raw.githubusercontent.com/thunlp/FewRel/master/data/"


@dataclass(frozen=True)
class Source:
    """A public file: its URL and the checksums known for it (``None`` = unknown)."""

    url: str
    sha256: str | None = None
    md5: str | None = None


#: data-folder-relative path → public original.
KNOWN_SOURCES: dict[str, Source] = {
    "fewrel/train_wiki.json": Source(_FEWREL + "train_wiki.json", md5="5e663e9c3f1bfbdb2de72696e9504fd7"),
    "fewrel/val_wiki.json": Source(_FEWREL + "val_wiki.json"),
    "fewrel/val_nyt.json": Source(_FEWREL + "val_nyt.json"),
    "fewrel/pid2name.json": Source(_FEWREL + "pid2name.json"),
    "tokenizer/bert-base-uncased-vocab.txt": Source(
        "https://huggingface.co/bert-base-uncased/resolve/main/vocab.txt",
        sha256="07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    ),
}


def _digests(path: Path) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def _mismatch(sha_got: str, md5_got: str, sha256: str | None, md5: str | None) -> str | None:
    if sha256 is not None and sha_got != sha256.lower():
        return f"sha256 {sha_got} ≠ expected {sha256.lower()}"
    if md5 is not None and md5_got != md5.lower():
        return f"md5 {md5_got} ≠ expected {md5.lower()}"
    return None


def fetch(
    url: str,
    dest_dir: PathLike,
    sha256: str | None = None,
    md5: str | None = None,
    *,
    filename: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` into ``dest_dir`` (atomically) and verify the checksum(s).

    An existing file that matches the given checksums (or any existing file when none are
    given) is returned without downloading. Returns the final path.

    Example:
        >>> fetch(KNOWN_SOURCES["fewrel/train_wiki.json"].url, "~/.cache/nodeprobe/fewrel",
        ...       md5=KNOWN_SOURCES["fewrel/train_wiki.json"].md5)  # doctest: +SKIP
        PosixPath('/home/me/.cache/nodeprobe/fewrel/train_wiki.json')
    """
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https", "file"):
        raise NodeprobeError(f"{url}: unsupported URL scheme {parsed.scheme!r}; allowed: http, https, file")
    name = filename or Path(urllib.parse.unquote(parsed.path)).name
    if not name or name in (".", ".."):
        raise NodeprobeError(f"{url}: no file name in the URL; pass filename=")
    d = as_path(dest_dir, "download directory")
    dest = d / name
    if dest.is_file():
        if sha256 is None and md5 is None:
            return dest
        if _mismatch(*_digests(dest), sha256, md5) is None:
            return dest
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=d, prefix=f".{name}.", suffix=".part")
    except OSError as e:
        raise NodeprobeError(f"{d}: cannot write the download directory ({e.strerror or e})") from e
    tmp = Path(tmp_name)
    sha, h_md5 = hashlib.sha256(), hashlib.md5()
    try:
        with os.fdopen(fd, "wb") as out:
            req = urllib.request.Request(url, headers={"User-Agent": "nodeprobe"})
            try:
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    for chunk in iter(lambda: resp.read(1 << 20), b""):
                        out.write(chunk)
                        sha.update(chunk)
                        h_md5.update(chunk)
            except urllib.error.HTTPError as e:
                raise NodeprobeError(f"{url}: HTTP {e.code} {e.reason}; nothing was saved") from e
            except urllib.error.URLError as e:
                raise NodeprobeError(f"{url}: cannot download ({e.reason}); nothing was saved") from e
            except (OSError, ValueError) as e:  # timeouts, connection resets, bad responses
                raise NodeprobeError(f"{url}: download failed ({type(e).__name__}: {e}); nothing was saved") from e
        bad = _mismatch(sha.hexdigest(), h_md5.hexdigest(), sha256, md5)
        if bad:
            raise NodeprobeError(f"{url}: checksum mismatch ({bad}); the download was discarded")
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def resolve_data_dir(path: PathLike | None = None) -> Path:
    """The data folder: ``path``, else ``$NODEPROBE_DATA``, else ``<repo>/../shared/data`` if it
    exists, else the user download folder (see :func:`download_dir`; not created here).

    Example:
        >>> resolve_data_dir("/data/nodeprobe")
        PosixPath('/data/nodeprobe')
    """
    if path is not None:
        p = as_path(path, "data directory")
        what = "given path"
    elif os.environ.get("NODEPROBE_DATA"):
        p = default_data_dir()
        what = "$NODEPROBE_DATA"
    else:
        return default_data_dir()  # ../shared/data, else the download folder
    if p.exists() and not p.is_dir():
        raise NodeprobeError(f"{p}: data directory ({what}) is a file; allowed: a directory")
    return p


def ensure_file(relpath: str, data_dir: PathLike | None = None, *, timeout: float = 60.0) -> Path:
    """``<data_dir>/<relpath>``, downloading it from :data:`KNOWN_SOURCES` if it is missing.

    Example:
        >>> ensure_file("fewrel/pid2name.json")  # doctest: +SKIP
        PosixPath('/work/shared/data/fewrel/pid2name.json')
    """
    d = resolve_data_dir(data_dir)
    f = d / relpath
    if f.is_file():
        return f
    src = KNOWN_SOURCES.get(relpath)
    if src is None:
        raise NodeprobeError(
            f"{f}: not found and no public download is known for {relpath!r}; allowed downloads: "
            f"{', '.join(KNOWN_SOURCES)}"
        )
    return fetch(src.url, f.parent, sha256=src.sha256, md5=src.md5, filename=f.name, timeout=timeout)
