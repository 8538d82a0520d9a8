"""One writer per output folder: a lock file that a dead process does not hold forever.

Two identical commands writing the same ``--out`` / ``--cache`` at once would interleave their
files.  :func:`hold` makes the second one refuse instead: it creates ``<folder>/.nodeprobe.lock``
atomically (``O_CREAT | O_EXCL``) holding the writer's pid, hostname and start time, and removes it
when the block ends (also on an exception).  A lock left by a process that is gone (killed with
``kill -9``: its pid is not alive on this host) is taken over; a live one raises a one-line
:class:`~nodeprobe.errors.NodeprobeError` naming the holder and the file to remove if it is gone.
Within one process the lock is re-entrant (a cache build inside ``get_or_build_cache``).

A folder that :func:`hold` had to create is removed again on release when nothing else was written
into it (a refused command leaves nothing behind).

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> with hold(d, "out"):
    ...     (d / LOCK_NAME).is_file()
    True
    >>> d.exists()                      # created for the lock, nothing written: removed again
    False
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from nodeprobe.errors import NodeprobeError

LOCK_NAME = ".nodeprobe.lock"
_TAKEOVER = ".nodeprobe.lock.takeover"
_YOUNG_S = 10.0  # an unreadable (just created, not yet written) lock younger than this counts as live

_held: dict[Path, "Lock"] = {}  # folder (resolved) → the lock this process holds there
_guard = threading.Lock()


def _host() -> str:
    return socket.gethostname()


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    except OSError:
        return True
    return True


def _read(lockfile: Path) -> dict | None:
    try:
        info = json.loads(lockfile.read_text(encoding="utf-8"))
        int(info["pid"]), str(info["host"])
        return info
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _is_stale(lockfile: Path, info: dict | None) -> bool:
    """A lock whose holder is gone: its pid is dead on this host (or is ours, but this process does
    not hold it: a reused pid), or it is unreadable and not young."""
    if info is None:
        try:
            return time.time() - lockfile.stat().st_mtime > _YOUNG_S
        except FileNotFoundError:
            return True
    if info["host"] != _host():
        return False  # cannot tell from here: treated as live
    pid = int(info["pid"])
    if pid == os.getpid():
        return True  # our pid, yet not in _held (checked by the caller): left by an earlier process
    return not _alive(pid)


class Lock:
    """A held lock (see :func:`hold`); :meth:`release` removes its file (once per acquisition)."""

    def __init__(self, folder: Path, lockfile: Path, what: str, created: bool):
        self.folder, self.lockfile, self.what, self.created = folder, lockfile, what, created
        self.count = 1

    def release(self) -> None:
        with _guard:
            if self.count <= 0:
                return
            self.count -= 1
            if self.count:
                return
            _held.pop(self.folder.resolve(), None)
        with contextlib.suppress(OSError):
            self.lockfile.unlink()
        if self.created:
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # only when empty: nothing was written


def _create(lockfile: Path, what: str) -> bool:
    """Create ``lockfile`` atomically with this process's record; False if it exists."""
    try:
        fd = os.open(lockfile, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    info = {"pid": os.getpid(), "host": _host(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "what": what}
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(info) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return True


def _take_over(folder: Path, lockfile: Path, seen: dict | None, what: str) -> bool:
    """Replace a stale lock by ours; only one process may do so at a time (a takeover file)."""
    guard = folder / _TAKEOVER
    try:
        fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        with contextlib.suppress(OSError):  # a takeover interrupted by a kill: long gone
            if time.time() - guard.stat().st_mtime > 60:
                guard.unlink()
        return False
    os.close(fd)
    try:
        if _read(lockfile) != seen:  # someone else took it over meanwhile
            return False
        with contextlib.suppress(FileNotFoundError):
            lockfile.unlink()
        return _create(lockfile, what)
    finally:
        with contextlib.suppress(OSError):
            guard.unlink()


def acquire(path: str | os.PathLike, what: str) -> Lock:
    """Take the lock of folder ``path`` (created if missing) or raise :class:`NodeprobeError`;
    the caller releases it (:meth:`Lock.release`; :func:`hold` does so itself).  ``what`` names the
    parameter in messages (``out``, ``cache``)."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise NodeprobeError(f"{what}={folder}: is a file; give a folder")
    with _guard:
        mine = _held.get(folder.resolve())
        if mine is not None and mine.lockfile.is_file():
            mine.count += 1
            return mine
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NodeprobeError(f"{what}={folder}: cannot create it ({e.strerror})") from None
    lockfile = folder / LOCK_NAME
    for _ in range(3):
        try:
            if _create(lockfile, what):
                break
            info = _read(lockfile)
            if _is_stale(lockfile, info) and _take_over(folder, lockfile, info, what):
                break
        except PermissionError:
            raise NodeprobeError(f"{what}={folder}: not writable") from None
        except OSError as e:
            raise NodeprobeError(f"{what}={folder}: cannot write there ({e.strerror})") from None
        if not lockfile.exists():
            continue  # released meanwhile: try again
        info = _read(lockfile) or {}
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise NodeprobeError(
            f"{what}={folder}: in use by another nodeprobe process (pid {info.get('pid', '?')}"
            f"{'' if info.get('host', _host()) == _host() else ' on ' + str(info.get('host'))}, "
            f"since {info.get('since', '?')}); wait for it or remove {lockfile} if it is gone"
        )
    else:  # pragma: no cover - the lock kept appearing and vanishing
        raise NodeprobeError(f"{what}={folder}: in use by another nodeprobe process; try again")
    lock = Lock(folder, lockfile, what, created)
    with _guard:
        _held[folder.resolve()] = lock
    return lock


def check_not_written(path: str | os.PathLike, what: str) -> None:
    """Raise :class:`NodeprobeError` when another live process holds the lock of folder ``path``
    (a reader's check: a cache being rebuilt is not read half-written); a stale lock, none, or this
    process's own passes.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> check_not_written(d, "cache")
        >>> with hold(d, "cache"):
        ...     check_not_written(d, "cache")       # our own lock
    """
    folder = Path(path)
    lockfile = folder / LOCK_NAME
    if not lockfile.is_file():
        return
    with _guard:
        if folder.resolve() in _held:
            return
    info = _read(lockfile)
    if _is_stale(lockfile, info):
        return
    info = info or {}
    raise NodeprobeError(
        f"{what}={folder}: being written by another nodeprobe process (pid {info.get('pid', '?')}"
        f"{'' if info.get('host', _host()) == _host() else ' on ' + str(info.get('host'))}, "
        f"since {info.get('since', '?')}); wait for it to finish, or remove {lockfile} if it is gone"
    )


@contextlib.contextmanager
def hold(path: str | os.PathLike, what: str) -> Iterator[Lock]:
    """Hold the lock of folder ``path`` for the block (see the module docstring).

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> with hold(d, "cache"):
        ...     with hold(d, "cache"):      # re-entrant within a process
        ...         pass
    """
    lock = acquire(path, what)
    try:
        yield lock
    finally:
        lock.release()


@atexit.register
def _release_all() -> None:  # a lock taken for a process's lifetime (a training run) ends with it
    for lock in list(_held.values()):
        lock.count = 1
        lock.release()
