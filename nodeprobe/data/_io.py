"""Small file-reading helpers shared by the loaders (not public API).

Every failure a user can cause (missing file, unreadable bytes, bad UTF-8) becomes a one-line
:class:`~nodeprobe.errors.NodeprobeError` that names the file.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Iterator
from pathlib import Path

from nodeprobe.errors import NodeprobeError

PathLike = str | os.PathLike


def as_path(path: PathLike, what: str) -> Path:
    """``path`` as a :class:`Path`; :class:`NodeprobeError` if it is not a string/path."""
    if not isinstance(path, (str, os.PathLike)):
        raise NodeprobeError(f"{what}: expected a file path, got {type(path).__name__} {path!r}")
    return Path(path).expanduser()


def _check_file(p: Path, what: str) -> None:
    if not p.exists():
        raise NodeprobeError(f"{p}: {what} not found (give an existing file)")
    if p.is_dir():
        raise NodeprobeError(f"{p}: {what} is a directory (give a file)")


def _not_utf8(p: Path, what: str, offset: int) -> NodeprobeError:
    return NodeprobeError(f"{p}: {what} is not UTF-8 text (bad byte at offset {offset}); allowed: UTF-8")


def read_bytes(path: PathLike, what: str) -> bytes:
    """The bytes of ``path``; a missing/unreadable file raises :class:`NodeprobeError`."""
    p = as_path(path, what)
    _check_file(p, what)
    try:
        return p.read_bytes()
    except OSError as e:
        raise NodeprobeError(f"{p}: cannot read {what} ({e.strerror or e})") from e


def read_text(path: PathLike, what: str) -> str:
    """``path`` decoded as UTF-8 (BOM dropped, CRLF → LF); bad bytes raise :class:`NodeprobeError`."""
    p = as_path(path, what)
    data = read_bytes(p, what)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _not_utf8(p, what, e.start) from e
    return text.replace("\r\n", "\n").replace("\r", "\n")


def iter_lines(path: PathLike, what: str, chunk_bytes: int = 1 << 16) -> Iterator[str]:
    r"""Stream the lines of ``path`` without reading it whole: exactly
    ``read_text(path, what).split("\n")`` (BOM dropped, CRLF/CR → LF, no line ends, a last
    ``""`` after a final newline), holding one ``chunk_bytes`` chunk plus the current line.

    The same one-line :class:`NodeprobeError` as :func:`read_text` for a missing file, a
    directory, an unreadable file or bad UTF-8 (same offset, counted after a BOM); the check of
    the file runs at the first ``next()``, a decoding error where the bad byte is reached.

    Example:
        >>> import tempfile, os
        >>> with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
        ...     _ = f.write(b"\xef\xbb\xbfa\r\nb\rc\n")
        >>> list(iter_lines(f.name, "text file"))
        ['a', 'b', 'c', '']
        >>> os.unlink(f.name)
    """
    p = as_path(path, what)
    _check_file(p, what)
    try:
        f = open(p, "rb")
    except OSError as e:
        raise NodeprobeError(f"{p}: cannot read {what} ({e.strerror or e})") from e
    with f:
        dec = codecs.getincrementaldecoder("utf-8")("strict")
        pos = 0  # bytes (after the BOM) fed to the decoder so far
        first = True
        carry: list[str] = []  # the current unfinished line (no "\n"; maybe a final "\r")

        def read() -> bytes:
            try:
                return f.read(chunk_bytes)
            except OSError as e:
                raise NodeprobeError(f"{p}: cannot read {what} ({e.strerror or e})") from e

        while True:
            raw = read()
            final = not raw
            if first:
                first = False
                while 0 < len(raw) < 3 and codecs.BOM_UTF8.startswith(raw):  # a BOM split by a short read
                    more = read()
                    if not more:
                        break
                    raw += more
                if raw.startswith(codecs.BOM_UTF8):
                    raw = raw[3:]
            pending = len(dec.getstate()[0])
            try:
                text = dec.decode(raw, final)
            except UnicodeDecodeError as e:
                raise _not_utf8(p, what, pos - pending + e.start) from e
            pos += len(raw)
            if "\n" not in text and "\r" not in text and not final:
                if text:
                    carry.append(text)
                continue
            text = "".join(carry) + text
            carry = []
            hold = not final and text.endswith("\r")  # maybe the first half of a CRLF
            if hold:
                text = text[:-1]
            if "\r" in text:
                text = text.replace("\r\n", "\n").replace("\r", "\n")
            lines = text.split("\n")
            if final:
                yield from lines
                return
            yield from lines[:-1]
            carry = [lines[-1]] + (["\r"] if hold else [])


def short(value: object, n: int = 60) -> str:
    """``repr(value)`` cut to ``n`` characters, for error messages."""
    r = repr(value)
    return r if len(r) <= n else r[: n - 1] + "…"
