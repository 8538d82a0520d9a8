"""Order parameters of symmetry breaking over training, and the breaking step (pure).

Over a family of units (the readout nodes; the heads, with the heads of a block as one
permutation-symmetric family, METHODS §3) the order parameters at a training step are

* ``mean_size`` — mean |Λ_u| per unit (rises when units start to learn classes),
* ``coverage`` — |∪_u Λ_u| / K,
* ``mean_jaccard`` — mean pairwise Jaccard overlap of the Λ_u (falls when units take different
  classes).  At random init every unit learns nothing, and two units that both learned nothing
  are indistinguishable: by default (``empty_pairs="one"``) such a pair counts as overlap **1**, so
  the symmetric phase reads J = 1 and any specialisation lowers it.  (``"exclude"``, the
  :func:`~nodeprobe.analysis.confusion.symmetry_summary` default, leaves such pairs out; then a
  step where no unit learned anything has J = 0, and no fall from step 0 can be seen.)
* for heads, ``mean_jaccard`` is the mean over blocks of the within-block mean Jaccard (heads of
  different blocks are not interchangeable); ``mean_size`` and ``coverage`` run over all heads.

**When symmetry breaks** (:func:`symmetry_breaking`).  With the baseline at step 0 (the random
init), the breaking step of a family is the first step ``s > 0`` (in increasing step order) with
``J(s) < J(0) − margin_jaccard`` **and** ``S(s) > S(0) + margin_size``, where J is ``mean_jaccard``
and S is ``mean_size``; both margins default to 0 (strict inequalities).  NaN values never
qualify; no such step → ``None``.

Example:
    >>> symmetry_breaking([0, 10, 100], jaccard=[1.0, 1.0, 0.4], size=[0.0, 0.2, 1.5])
    100
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nodeprobe.analysis.confusion import symmetry_summary
from nodeprobe.errors import NodeprobeError

EMPTY_PAIRS = ("one", "exclude", "zero")


@dataclass(frozen=True)
class FamilyParams:
    """Order parameters of one family of units at one step."""

    n_units: int
    mean_size: float  # mean |Λ| per unit
    max_size: int
    n_learning: int  # units with |Λ| > 0
    n_covered: int
    coverage: float  # |∪Λ| / K
    mean_jaccard: float
    n_pairs: int


def check_empty_pairs(empty_pairs: str) -> None:
    """Refuse an ``empty_pairs`` rule other than those of ``EMPTY_PAIRS`` (one-line error).

    Example:
        >>> check_empty_pairs("one")
    """
    if empty_pairs not in EMPTY_PAIRS:
        raise NodeprobeError(f"empty_pairs={empty_pairs}: expected one of {', '.join(EMPTY_PAIRS)}")


def family_params(learned_sets: Sequence[Sequence[int]], K: int, empty_pairs: str = "one") -> FamilyParams:
    """Order parameters of one family from its learned sets.

    Example:
        >>> f = family_params([[0, 1], [1, 2], [], []], K=4)
        >>> f.mean_size, f.coverage, f.n_learning, round(f.mean_jaccard, 4)   # (1/3 + 0·4 + 1) / 6
        (1.0, 0.75, 2, 0.2222)
    """
    check_empty_pairs(empty_pairs)
    s = symmetry_summary(learned_sets, K, empty_pairs=empty_pairs)
    sizes = [len(set(x)) for x in learned_sets]
    return FamilyParams(
        n_units=s.n_units, mean_size=s.mean_size, max_size=max(sizes, default=0),
        n_learning=sum(1 for x in sizes if x), n_covered=s.n_covered, coverage=s.coverage,
        mean_jaccard=s.mean_jaccard, n_pairs=s.n_pairs,
    )


def head_family_params(head_sets: Sequence[Sequence[Sequence[int]]], K: int,
                       empty_pairs: str = "one") -> tuple[FamilyParams, list[FamilyParams]]:
    """``(all heads, per block)``: the all-heads entry has mean_size / coverage over all heads and
    mean_jaccard = the mean over blocks of the within-block Jaccard (``n_pairs`` summed).

    Example:
        >>> allh, per = head_family_params([[[0], [0]], [[1], [2]]], K=3)
        >>> [p.mean_jaccard for p in per], allh.mean_jaccard, allh.coverage
        ([1.0, 0.0], 0.5, 1.0)
    """
    if not head_sets:
        raise NodeprobeError("head_family_params: no blocks")
    per = [family_params(row, K, empty_pairs) for row in head_sets]
    flat = [s for row in head_sets for s in row]
    allh = family_params(flat, K, empty_pairs)
    js = [p.mean_jaccard for p in per]
    allh = FamilyParams(
        n_units=allh.n_units, mean_size=allh.mean_size, max_size=allh.max_size, n_learning=allh.n_learning,
        n_covered=allh.n_covered, coverage=allh.coverage,
        mean_jaccard=float(np.mean(js)), n_pairs=sum(p.n_pairs for p in per),
    )
    return allh, per


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def symmetry_breaking(
    steps: Sequence[int],
    jaccard: Sequence[float | None],
    size: Sequence[float | None],
    *,
    margin_jaccard: float = 0.0,
    margin_size: float = 0.0,
) -> int | None:
    """The first step after step 0 where J < J(0) − margin_jaccard and S > S(0) + margin_size.

    ``steps`` need not be sorted; one of them must be 0 (the baseline).

    Example:
        >>> symmetry_breaking([0, 1, 2], [1.0, 0.9, 0.5], [0.0, 0.1, 0.5], margin_jaccard=0.2)
        2
        >>> symmetry_breaking([0, 1], [1.0, 1.0], [0.0, 3.0]) is None      # J never fell
        True
    """
    steps = [int(s) for s in steps]
    if not (len(steps) == len(jaccard) == len(size)):
        raise NodeprobeError("symmetry_breaking: steps, jaccard and size differ in length")
    for name, m in (("margin_jaccard", margin_jaccard), ("margin_size", margin_size)):
        if not (isinstance(m, (int, float)) and m >= 0 and math.isfinite(m)):
            raise NodeprobeError(f"--{name.replace('_', '-')} {m}: expected a number ≥ 0")
    if 0 not in steps:
        raise NodeprobeError("symmetry_breaking: no step 0 (random-init baseline) among the steps")
    if len(set(steps)) != len(steps):
        raise NodeprobeError("symmetry_breaking: a step occurs twice")
    i0 = steps.index(0)
    j0, s0 = _num(jaccard[i0]), _num(size[i0])
    for i in sorted(range(len(steps)), key=lambda i: steps[i]):
        if steps[i] <= 0:
            continue
        j, s = _num(jaccard[i]), _num(size[i])
        if j < j0 - margin_jaccard and s > s0 + margin_size:  # NaN compares False
            return steps[i]
    return None
