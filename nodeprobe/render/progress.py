"""Rich progress bars for every long loop (training, evaluation, caching, sweeps).

Bars go to stderr so that JSON on stdout stays clean; they disappear when ``enabled=False`` or
when stderr is not a terminal and ``NODEPROBE_PROGRESS=0``.

Example:
    >>> for batch in track_items(range(3), total=3, description="eval", enabled=False):
    ...     pass
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_console = Console(stderr=True)


def _enabled(enabled: bool) -> bool:
    return enabled and os.environ.get("NODEPROBE_PROGRESS", "1") != "0"


class _Bar:
    def __init__(self, progress: Progress | None, task):
        self._p, self._t = progress, task

    def advance(self, n: int = 1) -> None:
        if self._p is not None and n:
            self._p.advance(self._t, n)

    def update(self, advance: int = 1, **fields) -> None:
        if self._p is not None:
            self._p.update(self._t, advance=advance, **fields)


@contextlib.contextmanager
def training_progress(total: int, description: str, enabled: bool = True) -> Iterator[_Bar]:
    """A bar showing steps, loss and tokens/s; ``bar.update(loss=…, tps=…)`` advances one step."""
    if not _enabled(enabled):
        yield _Bar(None, None)
        return
    cols = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TextColumn("{task.fields[tps]:,.0f} tok/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*cols, console=_console, transient=False) as p:
        t = p.add_task(description, total=total, loss=float("nan"), tps=0.0)
        yield _Bar(p, t)


def track_items(items: Iterable, total: int | None = None, description: str = "", enabled: bool = True):
    """Iterate ``items`` with a Rich bar (steps done / total, elapsed, remaining)."""
    if not _enabled(enabled):
        yield from items
        return
    cols = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*cols, console=_console, transient=True) as p:
        t = p.add_task(description, total=total)
        for x in items:
            yield x
            p.advance(t)
