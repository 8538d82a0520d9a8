"""The one user-facing error type.

Everything a user can cause (a bad value, a missing file, a checkpoint of another architecture)
is raised as :class:`NodeprobeError`.  The library names *parameters* (``layer=9: …``, `` `layer` ``);
a front end says the same in its own words with :meth:`NodeprobeError.in_flags` (the CLI:
``--layer 9: …``), renders it as one line on stderr and exits with code 2; library users catch it
like any exception.

Example:
    >>> from nodeprobe.errors import NodeprobeError
    >>> try:
    ...     raise NodeprobeError("layer=9: the model has blocks 0–5")
    ... except NodeprobeError as e:
    ...     print(e, e.exit_code)
    ...     print(e.in_flags({"layer": "--layer"}))
    layer=9: the model has blocks 0–5 2
    --layer 9: the model has blocks 0–5
"""

from __future__ import annotations

import re


class NodeprobeError(Exception):
    """A user-facing error: one line naming the bad value and what is allowed (exit code 2)."""

    exit_code = 2

    def __init__(self, message: str):
        # always one line: line breaks (and the blanks around them) become one space; spaces inside
        # a line stay as they are, so a path with two spaces is echoed exactly
        message = re.sub(r"[ \t]*[\r\n]+[ \t]*", " ", str(message)).strip()
        super().__init__(message)
        self.message = message

    def in_flags(self, flags: dict[str, str]) -> str:
        """The message with parameter names said as a command line's flags (:func:`in_flags`)."""
        return in_flags(self.message, flags)




def in_flags(message: str, flags: dict[str, str]) -> str:
    """Say a library error in this command line's words: ``layer=9: …`` → ``--layer 9: …`` and
    `` `layer` `` → ``--layer``, for the parameters the command has (others stay as written).

    Example:
        >>> in_flags("layer=9: the model has blocks 0–5; see `head`", {"layer": "--layer", "head": "--head"})
        '--layer 9: the model has blocks 0–5; see --head'
    """
    import re

    def valued(m):
        flag = flags.get(m.group(1))
        return f"{flag} " if flag else m.group(0)

    def bare(m):
        return flags.get(m.group(1), m.group(0))

    # a name only where a word starts (message start, after a space or an opening bracket/quote): never
    # inside a value such as a path data/seed=1/x.txt
    message = re.sub(r"(?<![^\s(\[{,;'\"])([A-Za-z_][A-Za-z0-9_]*)=(?!True\b|False\b|None\b)", valued, message)
    return re.sub(r"`([A-Za-z_][A-Za-z0-9_]*)`", bare, message)


def reason(e: BaseException, limit: int = 160) -> str:
    """Why a library call failed, as one short line: the innermost exception's type and the first
    line of its message (``OSError``'s ``strerror``), whitespace collapsed, cut at ``limit``.

    Example:
        >>> try:
        ...     try:
        ...         int("forty-eight")
        ...     except ValueError as inner:
        ...         raise RuntimeError("could not load") from inner
        ... except RuntimeError as e:
        ...     reason(e)
        "ValueError: invalid literal for int() with base 10: 'forty-eight'"
    """
    seen, hops = e, 0
    while hops < 20:  # the innermost cause says what is wrong; the outer ones say where
        nxt = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
        if nxt is None or nxt is seen:
            break
        seen, hops = nxt, hops + 1
    text = getattr(seen, "strerror", None) if isinstance(seen, OSError) else None
    text = text or (str(seen).strip().split("\n")[0] if str(seen).strip() else "")
    text = " ".join(re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text).split())  # no terminal colour codes
    out = f"{type(seen).__name__}: {text}" if text else type(seen).__name__
    return (out[: limit - 1] + "…") if len(out) > limit else out
