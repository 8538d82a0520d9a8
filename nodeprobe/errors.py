"""The one user-facing error type.

Everything a user can cause (a bad option, a missing file, a checkpoint of another architecture)
is raised as :class:`NodeprobeError` at the edge (CLI, loaders).  The CLI renders it as one line
on stderr and exits with code 2; library users catch it like any exception.

Example:
    >>> from nodeprobe.errors import NodeprobeError
    >>> try:
    ...     raise NodeprobeError("--layer 9: the model has blocks 0–5")
    ... except NodeprobeError as e:
    ...     print(e, e.exit_code)
    --layer 9: the model has blocks 0–5 2
"""

from __future__ import annotations


class NodeprobeError(Exception):
    """A user-facing error: one line naming the bad value and what is allowed (exit code 2)."""

    exit_code = 2

    def __init__(self, message: str):
        message = " ".join(str(message).split())  # always one line
        super().__init__(message)
        self.message = message


def check(condition: bool, message: str) -> None:
    """Raise :class:`NodeprobeError` with ``message`` unless ``condition`` holds.

    Example:
        >>> check(3 < 6, "fine")
    """
    if not condition:
        raise NodeprobeError(message)
