"""Sizes that cannot fit, refused up front: an estimate of a size's memory (or a lower bound of its
time) against this machine's RAM (or :data:`MAX_SECONDS`), before anything is allocated or run.

No numpy, no torch: the CLI calls these before any heavy import.

Example:
    >>> check_budget("--bins", 10**12, need_bytes=10**12 * 100, how="≥ 100 bytes a bin")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    nodeprobe.errors.NodeprobeError: --bins 1000000000000: needs ≈ 100 TB of memory (≥ 100 bytes a bin); limit ...
    >>> check_budget("--bins", 10, need_bytes=1000)
"""

from __future__ import annotations

import os

from nodeprobe.errors import NodeprobeError

MAX_SECONDS = 30 * 24 * 3600  # a lower-bound time estimate beyond 30 days is refused as absurd


def ram_bytes() -> int | None:
    """This machine's physical memory in bytes (``None`` where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def human_bytes(n: float) -> str:
    """``1.5e12`` → ``'1.5 TB'`` (decimal units)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB", "EB"):
        if abs(n) < 1000 or unit == "EB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} EB"  # pragma: no cover


def human_seconds(s: float) -> str:
    """``3600`` → ``'1 h'``; years for the absurd."""
    for unit, size in (("years", 365 * 86400), ("days", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.3g} {unit}"
    return f"{s:.3g} s"


def check_budget(flag: str, value, *, need_bytes: float | None = None, seconds: float | None = None,
                 how: str = "") -> None:
    """One line naming ``flag value``, the estimate (``how`` it was made) and the limit, when
    ``need_bytes`` exceeds the RAM or ``seconds`` (a lower bound) exceeds :data:`MAX_SECONDS`."""
    said = f" ({how})" if how else ""
    flag = f"{flag}{value}" if flag.endswith("=") else f"{flag} {value}"  # library: ``R=…``; CLI: ``--R …``
    ram = ram_bytes()
    if need_bytes is not None and ram is not None and need_bytes > ram:
        raise NodeprobeError(f"{flag}: needs ≈ {human_bytes(need_bytes)} of memory{said}; "
                             f"limit {human_bytes(ram)} (this machine's RAM)")
    if seconds is not None and seconds > MAX_SECONDS:
        raise NodeprobeError(f"{flag}: would take at least ≈ {human_seconds(seconds)}{said}; "
                             f"limit {human_seconds(MAX_SECONDS)}")
