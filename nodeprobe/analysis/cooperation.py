"""Cooperation and crossover (METHODS v2 §5).

For node counts n on a grid, draw R random node sets S of size n at a site (its linear readout
``logits = W x + b``) and measure what the set does together against what its members do alone:

* ``acc(S)``, ``|O_S|``, ``|Λ_S|`` (METHODS §3, via :func:`~nodeprobe.analysis.confusion.unit_stats_many`);
* ``U(S) = |∪_{i∈S} Λ_{i}|`` and ``Σ(S) = Σ_{i∈S} |Λ_{i}|`` from the single nodes' learned sets;
* ``P(S)`` = mean precision over the outputs O_S; ``inv_outputs`` = ``Rg(S) = 1/|O_S|``, the
  random-guess reference (of P, and of a class's recall if the items were spread evenly over O_S);
* cooperation gain ``G(S) = |Λ_S| − Σ(S)`` and union gain ``G∪(S) = |Λ_S| − U(S)``;
* *retained recall* ``Rt(S)`` = mean over the classes k ∈ ∪_{i∈S} Λ_{i} of the set's recall
  ``r_S(k)`` (None when that union is empty: the set is left out of the row's Rt and counted in
  ``n_no_union``);
* ``learned_per_node`` = ``|Λ_S| / n``.

Per n: mean ± std (population std, ddof = 0) over the R sets; Rt over the sets with a non-empty
union only (mean and std None when no set of that n has one).

**Crossover (v2)**: ``n_star`` = the grid point with the lowest mean Rt(n) (ties → smallest n,
over the n where Rt is defined) when it is *interior* — neither the first nor the last grid
point; otherwise (minimum at an end of the grid, or Rt defined nowhere) ``n_star`` is None and
``crossover_found`` False: "no crossover in the grid" (never n* = 1).  The retired v1 figure
(n with the lowest mean P, ties → smallest n) is kept as ``p_min_n``.  Also the smallest and the
largest n with mean G > 0 (``first_positive_gain``, ``last_positive_gain``; None if none).

Conventions:

* ``n_classes`` (≥ K, default K): labels may name classes without a row in W (a block readout's
  unseen classes, :func:`~nodeprobe.analysis.readout.prepare_labelled`); no unit predicts them, so
  their items never count as correct; the unit statistics use n_classes classes.
* grid: ``sorted({min(g, d) for g in grid})`` — capped at d, so the full node set is included when
  d is not on the grid (default grid: METHODS §5).
* sampling: ``rng = numpy.random.default_rng(seed)``; for each n in grid order, R draws of
  ``rng.choice(d, n, replace=False)`` (sorted).  n = 1 is sampled like any other n, but its
  predictions are the single-node ones (:func:`~nodeprobe.analysis.readout.node_predictions`,
  upper envelope); n ≥ 2 uses dense float logits ``X[:, S] @ W[:, S].T + b'`` chunked over items.
  The single nodes' learned sets come from the same single-node predictions, for all d nodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from jaxtyping import Float, Int
from torch import Tensor

from nodeprobe.analysis.confusion import unit_stats_many
from nodeprobe.analysis.readout import Mode, iter_node_predictions, prepare_labelled, set_predictions
from nodeprobe.errors import NodeprobeError

DEFAULT_GRID: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768)
QUANTITIES = ("acc", "n_outputs", "n_learned", "union", "sum", "precision", "inv_outputs", "gain", "union_gain",
              "retained_recall", "learned_per_node")


@dataclass(frozen=True)
class MeanStd:
    """Mean and population std; both None for a quantity defined on none of the sets
    (``retained_recall`` when every set has U(S) = ∅)."""

    mean: float | None
    std: float | None


@dataclass(frozen=True)
class SubsetResult:
    """One node set S: the METHODS §5 quantities."""

    n: int
    nodes: tuple[int, ...]
    acc: float
    n_outputs: int
    n_learned: int
    union: int  # U(S)
    sum: int  # Σ(S)
    precision: float  # P(S)
    inv_outputs: float  # Rg(S) = 1/|O_S|
    gain: int  # G(S)
    union_gain: int  # G∪(S)
    retained_recall: float | None  # Rt(S): mean recall of the set over ∪_{i∈S} Λ_{i}; None when that is empty
    learned_per_node: float  # |Λ_S| / n


@dataclass(frozen=True)
class CoopRow:
    """Mean ± std over the R node sets of size n."""

    n: int
    n_subsets: int
    acc: MeanStd
    n_outputs: MeanStd
    n_learned: MeanStd
    union: MeanStd
    sum: MeanStd
    precision: MeanStd
    inv_outputs: MeanStd  # Rg(n) = mean of 1/|O_S|
    gain: MeanStd
    union_gain: MeanStd
    retained_recall: MeanStd  # over the sets with U(S) ≠ ∅ only
    n_no_union: int  # sets with U(S) = ∅, left out of retained_recall
    learned_per_node: MeanStd


@dataclass(frozen=True)
class CooperationResult:
    rows: tuple[CoopRow, ...]
    subsets: tuple[SubsetResult, ...]
    n_star: int | None  # interior grid point with the lowest mean Rt(n); None: no crossover in the grid
    crossover_found: bool
    p_min_n: int  # retired v1 crossover: n with the lowest mean P(n)
    first_positive_gain: int | None  # smallest n with mean G(n) > 0
    last_positive_gain: int | None  # largest n with mean G(n) > 0
    single_learned: tuple[tuple[int, ...], ...]  # Λ_{i} for every node i
    settings: dict[str, Any] = field(default_factory=dict)


def _mean_std(vals: list) -> MeanStd:
    v = np.array([x for x in vals if x is not None], dtype=np.float64)
    return MeanStd(float(v.mean()), float(v.std())) if v.size else MeanStd(None, None)


def _row(n: int, subs: list[SubsetResult]) -> CoopRow:
    return CoopRow(
        n=n,
        n_subsets=len(subs),
        n_no_union=sum(1 for s in subs if s.retained_recall is None),
        **{q: _mean_std([getattr(s, q) for s in subs]) for q in QUANTITIES},
    )


def crossover(rows: Sequence[CoopRow]) -> int | None:
    """n* of METHODS v2 §5: the grid point with the lowest mean retained recall (ties → smallest
    n, over the rows where it is defined) if it is neither the first nor the last of those rows
    (a tie with an end counts as the end); else None (no crossover in the grid).  Rows where Rt is
    undefined (no set with U ≠ ∅) do not make a point interior.

    Example:
        >>> r = lambda n, rt: CoopRow(n, 1, *[MeanStd(0.0, 0.0)] * 9, MeanStd(rt, 0.0), 0, MeanStd(0.0, 0.0))
        >>> crossover([r(1, 0.9), r(2, 0.4), r(4, 0.6)]), crossover([r(1, 0.9), r(2, 0.6), r(4, 0.4)])
        (2, None)
        >>> crossover([r(1, None), r(2, 0.4), r(4, 0.6), r(8, 0.7)])   # n = 2 is the first defined point
        >>> crossover([r(1, 0.9), r(2, 0.4), r(4, 0.4)])               # tied with the last: a plateau
    """
    ok = [(r.retained_recall.mean, r.n) for r in rows if r.retained_recall.mean is not None]
    if len(ok) < 3:
        return None
    low = min(v for v, _ in ok)
    ends = {ok[0][1], ok[-1][1]}  # the ends of the range where Rt is defined
    at = [n for v, n in ok if v == low]
    if any(n in ends for n in at):  # lowest at an end (or tied with one): no interior minimum
        return None
    return at[0]


def cooperation(
    W: Float[Tensor, "K d"],
    b: Float[Tensor, "K"],
    X: Float[Tensor, "N d"],
    y: Int[Tensor, "N"],
    mode: Mode = "zero",
    means: Float[Tensor, "d"] | None = None,
    *,
    R: int = 20,
    seed: int = 0,
    grid: Sequence[int] = DEFAULT_GRID,
    tau_recall: float = 0.5,
    tau_lift: float = 2.0,
    min_count: int = 5,
    n_classes: int | None = None,
) -> CooperationResult:
    """Cooperation gain, retained recall and crossover over random node sets (METHODS v2 §5).

    ``n_classes``: the number of classes of ``y`` when some have no row in W (default: K rows).

    Example:
        >>> import torch
        >>> W = torch.tensor([[0.0, 0.0], [1.0, 1.0]]); b = torch.tensor([0.0, -1.5])
        >>> X = torch.tensor([[1.0, 1.0]] * 10 + [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]] * 10)
        >>> y = torch.tensor([1] * 10 + [0] * 30)
        >>> res = cooperation(W, b, X, y, R=2, grid=[1, 2])
        >>> [(r.n, r.gain.mean) for r in res.rows], res.first_positive_gain, res.last_positive_gain
        ([(1, 0.0), (2, 1.0)], 2, 2)
        >>> res.n_star, res.crossover_found, res.p_min_n  # two grid points: nothing is interior
        (None, False, 1)
    """
    r, yt = prepare_labelled(W, b, X, y, mode, means, n_classes)
    d = r.W.shape[1]
    K = r.W.shape[0] if n_classes is None else int(n_classes)
    N = r.X.shape[0]
    if isinstance(R, bool) or not isinstance(R, (int, np.integer)) or R < 1:
        raise NodeprobeError(f"R={R!r}: need a positive number of subsets per n")
    g = [int(v) for v in grid]
    if not g or min(g) < 1:
        raise NodeprobeError(f"grid={list(grid)}: need node counts ≥ 1")
    ns = sorted({min(v, d) for v in g})

    single_pred = np.empty((d, N), dtype=np.int64)
    for p in iter_node_predictions(r):
        single_pred[p.node] = p.pred
    single = unit_stats_many(yt, single_pred, K, tau_recall, tau_lift, min_count)
    single_learned = tuple(s.learned for s in single)
    single_size = np.array([len(lam) for lam in single_learned])
    Nk = np.bincount(yt, minlength=K)

    rng = np.random.default_rng(seed)
    draws = [(n, np.sort(rng.choice(d, size=n, replace=False))) for n in ns for _ in range(R)]

    subsets: list[SubsetResult] = []
    for a in range(0, len(draws), 64):  # batches of node sets share one unit_stats_many call
        batch = draws[a : a + 64]
        preds = np.stack(
            [single_pred[S[0]] if n == 1 else set_predictions(r, S) for n, S in batch]
        )
        for (n, S), pred, st in zip(batch, preds, unit_stats_many(yt, preds, K, tau_recall, tau_lift, min_count)):
            U = sorted(set().union(*(single_learned[i] for i in S)))
            union = len(U)
            if U:  # every k in U has N_k ≥ 1 (a learned class has C[k, k] ≥ 1)
                hits = np.bincount(yt[pred == yt], minlength=K)
                rt = float(np.mean(hits[U] / Nk[U]))
            else:
                rt = None
            total = int(single_size[S].sum())
            subsets.append(
                SubsetResult(
                    n=n,
                    nodes=tuple(int(i) for i in S),
                    acc=st.acc,
                    n_outputs=st.n_outputs,
                    n_learned=st.n_learned,
                    union=union,
                    sum=total,
                    precision=st.mean_precision,
                    inv_outputs=1.0 / st.n_outputs,
                    gain=st.n_learned - total,
                    union_gain=st.n_learned - union,
                    retained_recall=rt,
                    learned_per_node=st.n_learned / n,
                )
            )
    rows = tuple(_row(n, [s for s in subsets if s.n == n]) for n in ns)
    mean_p = np.array([r.precision.mean for r in rows])
    p_min_n = rows[int(np.argmin(mean_p))].n
    n_star = crossover(rows)
    pos = [r.n for r in rows if r.gain.mean > 0]
    settings = {
        "mode": mode,
        "R": int(R),
        "seed": int(seed),
        "grid": tuple(ns),
        "tau_recall": tau_recall,
        "tau_lift": tau_lift,
        "min_count": int(min_count),
        "n_items": N,
        "n_classes": K,
        "d": d,
    }
    return CooperationResult(
        rows=rows,
        subsets=tuple(subsets),
        n_star=n_star,
        crossover_found=n_star is not None,
        p_min_n=p_min_n,
        first_positive_gain=pos[0] if pos else None,
        last_positive_gain=pos[-1] if pos else None,
        single_learned=single_learned,
        settings=settings,
    )
