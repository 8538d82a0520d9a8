"""Rich progress bars: the reporter the CLI installs for every long loop (training, evaluation,
caching, sweeps) — an implementation of :class:`nodeprobe.progress.Reporter`.

Bars go to stderr so that JSON on stdout stays clean; ``NODEPROBE_PROGRESS=0`` turns them off.
Item bars are transient (they disappear when done); the training bar stays, with steps, loss and
tokens/s.

Example:
    >>> import nodeprobe.progress
    >>> with nodeprobe.progress.use_reporter(RichReporter()):        # the CLI: install(RichReporter())
    ...     for batch in nodeprobe.progress.iterate(range(3), 3, "eval", enabled=False):
    ...         pass
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

from nodeprobe.progress import SILENT

_console = Console(stderr=True)


def _enabled() -> bool:
    return os.environ.get("NODEPROBE_PROGRESS", "1") != "0"


class _Bar:
    def __init__(self, progress: Progress, task):
        self._p, self._t = progress, task

    def advance(self, n: int = 1) -> None:
        if n:
            self._p.advance(self._t, n)

    def update(self, advance: int = 1, **fields) -> None:
        self._p.update(self._t, advance=advance, **fields)


class RichReporter:
    """Rich bars on stderr (a :class:`nodeprobe.progress.Reporter`); silent when
    ``NODEPROBE_PROGRESS=0`` (read at each bar).

    Example:
        >>> r = RichReporter()
        >>> import os; os.environ["NODEPROBE_PROGRESS"] = "0"
        >>> list(r.iterate(range(2), 2, "eval"))
        [0, 1]
        >>> del os.environ["NODEPROBE_PROGRESS"]
    """

    def __init__(self, console: Console | None = None):
        self.console = console or _console

    @contextlib.contextmanager
    def training_bar(self, total: int, description: str) -> Iterator:
        """A bar showing steps, loss and tokens/s; ``bar.update(loss=…, tps=…)`` advances one step."""
        if not _enabled():
            with SILENT.training_bar(total, description) as bar:
                yield bar
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
        with Progress(*cols, console=self.console, transient=False) as p:
            t = p.add_task(description, total=total, loss=float("nan"), tps=0.0)
            yield _Bar(p, t)

    def iterate(self, items: Iterable, total: int | None, description: str) -> Iterator:
        """Iterate ``items`` with a transient bar (steps done / total, elapsed, remaining)."""
        if not _enabled():
            yield from items
            return
        cols = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn()]
        with Progress(*cols, console=self.console, transient=True) as p:
            t = p.add_task(description, total=total)
            for x in items:
                yield x
                p.advance(t)
