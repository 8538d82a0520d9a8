"""Cooperation and crossover (METHODS §5).

For node counts n on a grid, draw R random node sets S of size n at ``readout`` and measure what
the set does together against what its members do alone:

* ``acc(S)``, ``|O_S|``, ``|Λ_S|`` (METHODS §3, via :func:`~nodeprobe.analysis.confusion.unit_stats_many`);
* ``U(S) = |∪_{i∈S} Λ_{i}|`` and ``Σ(S) = Σ_{i∈S} |Λ_{i}|`` from the single nodes' learned sets;
* ``P(S)`` = mean precision over the outputs O_S, and its random-guess reference ``1/|O_S|``;
* cooperation gain ``G(S) = |Λ_S| − Σ(S)`` and union gain ``G∪(S) = |Λ_S| − U(S)``.

Per n: mean ± std (population std, ddof = 0) over the R sets.  Crossover ``n*`` = the n with the
lowest mean P (ties → smallest n); also the smallest n with mean G > 0 (None if none).

Conventions:

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
QUANTITIES = ("acc", "n_outputs", "n_learned", "union", "sum", "precision", "inv_outputs", "gain", "union_gain")


@dataclass(frozen=True)
class MeanStd:
    mean: float
    std: float


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
    inv_outputs: float  # 1/|O_S|
    gain: int  # G(S)
    union_gain: int  # G∪(S)


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
    inv_outputs: MeanStd
    gain: MeanStd
    union_gain: MeanStd


@dataclass(frozen=True)
class CooperationResult:
    rows: tuple[CoopRow, ...]
    subsets: tuple[SubsetResult, ...]
    n_star: int  # argmin over n of mean P(n)
    first_positive_gain: int | None  # smallest n with mean G(n) > 0
    single_learned: tuple[tuple[int, ...], ...]  # Λ_{i} for every node i
    settings: dict[str, Any] = field(default_factory=dict)


def _row(n: int, subs: list[SubsetResult]) -> CoopRow:
    vals = {q: np.array([getattr(s, q) for s in subs], dtype=np.float64) for q in QUANTITIES}
    return CoopRow(
        n=n,
        n_subsets=len(subs),
        **{q: MeanStd(float(v.mean()), float(v.std())) for q, v in vals.items()},
    )


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
) -> CooperationResult:
    """Cooperation gain and crossover over random node sets (METHODS §5).

    Example:
        >>> import torch
        >>> W = torch.tensor([[0.0, 0.0], [1.0, 1.0]]); b = torch.tensor([0.0, -1.5])
        >>> X = torch.tensor([[1.0, 1.0]] * 10 + [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]] * 10)
        >>> y = torch.tensor([1] * 10 + [0] * 30)
        >>> res = cooperation(W, b, X, y, R=2, grid=[1, 2])
        >>> [(r.n, r.gain.mean) for r in res.rows], res.first_positive_gain
        ([(1, 0.0), (2, 1.0)], 2)
    """
    r, yt = prepare_labelled(W, b, X, y, mode, means)
    K, d = r.W.shape
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

    rng = np.random.default_rng(seed)
    draws = [(n, np.sort(rng.choice(d, size=n, replace=False))) for n in ns for _ in range(R)]

    subsets: list[SubsetResult] = []
    for a in range(0, len(draws), 64):  # batches of node sets share one unit_stats_many call
        batch = draws[a : a + 64]
        preds = np.stack(
            [single_pred[S[0]] if n == 1 else set_predictions(r, S) for n, S in batch]
        )
        for (n, S), st in zip(batch, unit_stats_many(yt, preds, K, tau_recall, tau_lift, min_count)):
            union = len(set().union(*(single_learned[i] for i in S)))
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
                )
            )
    rows = tuple(_row(n, [s for s in subsets if s.n == n]) for n in ns)
    mean_p = np.array([r.precision.mean for r in rows])
    n_star = rows[int(np.argmin(mean_p))].n
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
        first_positive_gain=pos[0] if pos else None,
        single_learned=single_learned,
        settings=settings,
    )
