"""Progress reporting, injected: the library reports to whatever reporter a front end installed.

Core modules (evaluation, caching, studies, training) never draw bars themselves: they call
:func:`iterate` (a bar over items) and :func:`training_bar` (a bar with loss and tokens/s), and those
go to the reporter in use — silent unless a front end installed one.  The CLI installs the Rich
reporter (:class:`nodeprobe.render.progress.RichReporter`) once at start-up; a script or a test
can install its own for a block with :func:`use_reporter`.  This module imports nothing but the
standard library.

A reporter is any object with the two methods of :class:`Reporter`; a training bar is any object
with the two methods of :class:`TrainingBar`.  ``enabled=False`` (a function's ``progress=False``)
bypasses the reporter entirely.

Example:
    >>> for x in iterate(range(3), 3, "eval"):  # silent: no reporter installed
    ...     pass
    >>> class Count:
    ...     def __init__(self): self.seen = []
    ...     def iterate(self, items, total, description):
    ...         for x in items:
    ...             self.seen.append(description)
    ...             yield x
    ...     def training_bar(self, total, description):
    ...         return SILENT.training_bar(total, description)
    >>> r = Count()
    >>> with use_reporter(r):
    ...     list(iterate("ab", 2, "letters"))
    ['a', 'b']
    >>> r.seen
    ['letters', 'letters']
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator
from typing import ContextManager, Protocol, runtime_checkable

__all__ = ["Reporter", "SILENT", "SilentReporter", "TrainingBar", "current", "install", "iterate", "training_bar",
           "use_reporter"]


@runtime_checkable
class TrainingBar(Protocol):
    """A training bar: ``advance(n)`` moves it ``n`` steps (a resumed run); ``update(loss=…, tps=…)``
    moves it one step (``advance=``) and shows the step's loss and tokens/s."""

    def advance(self, n: int = 1) -> None: ...

    def update(self, advance: int = 1, **fields) -> None: ...


@runtime_checkable
class Reporter(Protocol):
    """What a front end provides: a bar over items and a training bar."""

    def iterate(self, items: Iterable, total: int | None, description: str) -> Iterator:
        """Yield ``items`` unchanged, showing ``total`` steps under ``description``."""
        ...

    def training_bar(self, total: int, description: str) -> ContextManager[TrainingBar]:
        """A context manager giving a :class:`TrainingBar` of ``total`` steps."""
        ...


class _SilentBar:
    def advance(self, n: int = 1) -> None:
        pass

    def update(self, advance: int = 1, **fields) -> None:
        pass


class SilentReporter:
    """The default reporter: shows nothing.

    Example:
        >>> list(SILENT.iterate([1, 2], 2, "x"))
        [1, 2]
    """

    def iterate(self, items: Iterable, total: int | None, description: str) -> Iterator:
        return iter(items)

    @contextlib.contextmanager
    def training_bar(self, total: int, description: str) -> Iterator[TrainingBar]:
        yield _SilentBar()


SILENT = SilentReporter()
_installed: Reporter = SILENT  # process-wide, set by the front end (every thread sees it)
_scoped: contextvars.ContextVar[Reporter | None] = contextvars.ContextVar("nodeprobe_reporter", default=None)


def install(reporter: Reporter | None) -> Reporter:
    """Make ``reporter`` the process-wide reporter (``None``: silent again); returns the previous one.

    The CLI entry point calls ``install(RichReporter())`` once.

    Example:
        >>> old = install(SILENT)
        >>> current() is SILENT
        True
        >>> _ = install(old)
    """
    global _installed
    _check(reporter)
    old, _installed = _installed, reporter if reporter is not None else SILENT
    return old


@contextlib.contextmanager
def use_reporter(reporter: Reporter | None) -> Iterator[Reporter]:
    """Use ``reporter`` (``None``: silent) inside the block, in this thread/task only.

    Example:
        >>> with use_reporter(SILENT) as r:
        ...     current() is r
        True
    """
    _check(reporter)
    r = reporter if reporter is not None else SILENT
    token = _scoped.set(r)
    try:
        yield r
    finally:
        _scoped.reset(token)


def current() -> Reporter:
    """The reporter in use: the one of an enclosing :func:`use_reporter`, else the installed one."""
    scoped = _scoped.get()
    return scoped if scoped is not None else _installed


def iterate(items: Iterable, total: int | None = None, description: str = "", enabled: bool = True) -> Iterator:
    """Iterate ``items`` with a bar of the current reporter (``enabled=False``: no bar).

    Example:
        >>> sum(iterate(range(4), 4, "sum"))
        6
    """
    if not enabled:
        return iter(items)
    return iter(current().iterate(items, total, description))


def training_bar(total: int, description: str, enabled: bool = True) -> ContextManager[TrainingBar]:
    """A training bar of ``total`` steps from the current reporter (``enabled=False``: silent).

    Example:
        >>> with training_bar(10, "pretrain") as bar:
        ...     bar.advance(2); bar.update(loss=7.5, tps=1000.0)
    """
    if not enabled:
        return SILENT.training_bar(total, description)
    return current().training_bar(total, description)


def _check(reporter) -> None:
    if reporter is not None and not isinstance(reporter, Reporter):
        raise TypeError(f"reporter={reporter!r}: expected an object with iterate() and training_bar() methods")
