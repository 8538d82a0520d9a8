"""Shared validation and helpers of the report functions (private)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from nodeprobe.errors import NodeprobeError


def check_thresholds(tau_recall: float, tau_lift: float, min_count: int) -> None:
    """The METHODS §3 thresholds as CLI errors (before any work)."""
    if not (isinstance(tau_recall, (int, float)) and 0.0 <= tau_recall <= 1.0):
        raise NodeprobeError(f"tau_recall={tau_recall}: expected a number in [0, 1]")
    if not (isinstance(tau_lift, (int, float)) and tau_lift >= 0.0 and math.isfinite(tau_lift)):
        raise NodeprobeError(f"tau_lift={tau_lift}: expected a finite number ≥ 0")
    if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) or min_count < 1:
        raise NodeprobeError(f"min_count={min_count}: expected an integer ≥ 1")




def check_cache_matches(cache, eval_set) -> None:
    if eval_set is not None and eval_set.fingerprint != cache.eval_fingerprint:
        raise NodeprobeError(
            f"cache {cache.path} was built from other data (eval-set fingerprint {cache.eval_fingerprint}≠"
            f"{eval_set.fingerprint}); rebuild with `rebuild` or another `cache`"
        )


def parse_nodes(text: str | Sequence[int], d: int | None = None, flag: str = "nodes") -> list[int]:
    """``"12,40"`` → ``[12, 40]`` (ranges ``3-7`` allowed); one-line errors for bad/empty/repeated.

    Example:
        >>> parse_nodes("12,40,3-5")
        [12, 40, 3, 4, 5]
    """
    if isinstance(text, str):
        out: list[int] = []
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                if "-" in part[1:]:
                    a, b = part.split("-", 1) if not part.startswith("-") else (part, "")
                    lo, hi = int(a), int(b)
                    if hi < lo:
                        raise ValueError
                    out.extend(range(lo, hi + 1))
                else:
                    out.append(int(part))
            except ValueError:
                raise NodeprobeError(f"{flag}={text}: expected node numbers like 12,40 or 3-7") from None
    else:
        out = [int(v) for v in text]
    if not out:
        raise NodeprobeError(f"{flag}={text!r}: the node set is empty")
    if len(set(out)) != len(out):
        raise NodeprobeError(f"{flag}={text}: a node is repeated")
    if d is not None:
        bad = [i for i in out if not 0 <= i < d]
        if bad:
            raise NodeprobeError(f"{flag}={bad[0]}: the readout has nodes 0–{d - 1}")
    return out

