"""Small file-reading helpers shared by the loaders (not public API).

Every failure a user can cause (missing file, unreadable bytes, bad UTF-8) becomes a one-line
:class:`~nodeprobe.errors.NodeprobeError` that names the file.
"""

from __future__ import annotations

import os
from pathlib import Path

from nodeprobe.errors import NodeprobeError

PathLike = str | os.PathLike


def as_path(path: PathLike, what: str) -> Path:
    """``path`` as a :class:`Path`; :class:`NodeprobeError` if it is not a string/path."""
    if not isinstance(path, (str, os.PathLike)):
        raise NodeprobeError(f"{what}: expected a file path, got {type(path).__name__} {path!r}")
    return Path(path).expanduser()


def read_bytes(path: PathLike, what: str) -> bytes:
    """The bytes of ``path``; a missing/unreadable file raises :class:`NodeprobeError`."""
    p = as_path(path, what)
    if not p.exists():
        raise NodeprobeError(f"{p}: {what} not found (give an existing file)")
    if p.is_dir():
        raise NodeprobeError(f"{p}: {what} is a directory (give a file)")
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
        raise NodeprobeError(
            f"{p}: {what} is not UTF-8 text (bad byte at offset {e.start}); allowed: UTF-8"
        ) from e
    return text.replace("\r\n", "\n").replace("\r", "\n")


def short(value: object, n: int = 60) -> str:
    """``repr(value)`` cut to ``n`` characters, for error messages."""
    r = repr(value)
    return r if len(r) <= n else r[: n - 1] + "…"
