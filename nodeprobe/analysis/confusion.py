"""Confusion-derived metrics (METHODS §3): the one definition of learned sets, lift and SNR.

Everything here starts from integer label vectors ``y_true`` (true class of each of the N items)
and ``y_pred`` (the unit's argmax prediction), with K classes.  Nothing builds a dense K×K matrix
unless K is small: the per-class quantities need only three length-K vectors per unit

* ``N_k``      = items of true class k               (``bincount(y_true)``),
* ``C[k, k]``  = items of class k predicted as k     (``bincount(y_true[y_pred == y_true])``),
* ``Σ_i C[i,k]`` = items predicted as k              (``bincount(y_pred)``),

and the SNR needs the largest off-diagonal count of the (few) learned rows, which is counted from
the misclassified items of those rows only.  That works unchanged for K = 16 (FewRel) and
K = 30522 (MLM vocab).

Definitions (METHODS §3; defaults τ_r = 0.5, τ_ℓ = 2, n_min = 5):

* ``acc = trace(C) / N``; outputs ``O = {j : Σ_k C[k, j] > 0}``.
* recall ``r(k) = C[k,k] / N_k``; precision ``p(k) = C[k,k] / Σ_i C[i,k]``;
  lift ``ℓ(k) = p(k) / (N_k / N)``.
* learned set ``Λ = {k : r(k) ≥ τ_r and ℓ(k) ≥ τ_ℓ and C[k,k] ≥ n_min}``.  A class with
  ``C[k,k] = 0`` is never learned, whatever the thresholds (its precision and lift are 0 or
  undefined), so ``min_count = 0`` behaves like ``min_count = 1``.
* SNR = mean over k ∈ Λ of ``C[k,k] / max_{j≠k} C[k,j]``, where a row without any error (ratio ∞)
  counts as ``N_k``.  **The SNR of a unit with an empty Λ is 0.**
* Threshold comparisons are exact: recall and lift are each computed as one correctly rounded
  division of integers (``lift = C[k,k]·N / (Σ_i C[i,k] · N_k)``), so a lift of exactly 2 counts
  as ≥ 2.

Predictions are argmax over logits with ties going to the lowest class index; use
:func:`argmax_lowest` to get that guaranteed (``torch.argmax`` documents "first occurrence" and does
so on CPU, which the tests check, but the helper does not rely on it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
from jaxtyping import Float, Int
from scipy import sparse
from torch import Tensor

from nodeprobe.analysis._arrays import check_K, labels
from nodeprobe.errors import NodeprobeError

Labels = Int[Tensor, "N"] | Int[np.ndarray, "N"]
"""Class ids, one per item (a torch or numpy integer vector)."""

#: above this many classes :func:`confusion_matrix` returns a scipy sparse matrix by default
DENSE_K_MAX = 2048
# work arrays of unit_stats_many hold at most about this many (unit, class) cells per chunk
_CELLS_PER_CHUNK = 1 << 22


def argmax_lowest(
    logits: Float[Tensor, "... K"] | Float[np.ndarray, "... K"], dim: int = -1
) -> Int[Tensor, "..."] | Int[np.ndarray, "..."]:
    """Argmax along ``dim`` with ties broken towards the lowest index (torch in → torch out).

    Implemented as ``min{k : logits[k] == max(logits)}`` so the tie rule does not depend on a
    backend's argmax.  NaN logits raise :class:`NodeprobeError`.

    Example:
        >>> import torch
        >>> argmax_lowest(torch.tensor([[0.0, 2.0, 2.0], [1.0, 1.0, 1.0]])).tolist()
        [1, 0]
    """
    if isinstance(logits, torch.Tensor):
        if logits.shape[dim] == 0:
            raise NodeprobeError("argmax over an empty class axis")
        m = logits.amax(dim=dim, keepdim=True)
        if torch.isnan(m).any():
            raise NodeprobeError("logits contain NaN")
        K = logits.shape[dim]
        shape = [1] * logits.dim()
        shape[dim] = K
        idx = torch.arange(K, device=logits.device).view(shape)
        return torch.where(logits == m, idx, K).amin(dim=dim)
    arr = np.asarray(logits)
    if arr.shape[dim] == 0:
        raise NodeprobeError("argmax over an empty class axis")
    m = arr.max(axis=dim, keepdims=True)
    if np.isnan(m).any():
        raise NodeprobeError("logits contain NaN")
    K = arr.shape[dim]
    shape = [1] * arr.ndim
    shape[dim] = K
    idx = np.arange(K).reshape(shape)
    return np.where(arr == m, idx, K).min(axis=dim)


def confusion_matrix(
    y_true: Labels,
    y_pred: Labels,
    K: int,
    dense: bool | None = None,
) -> Int[np.ndarray, "K K"] | sparse.csr_array:
    """Confusion counts ``C[k, j]`` = items of true class k predicted as j.

    Dense int64 ``[K, K]`` numpy array when ``dense`` (default: K ≤ 2048), otherwise a
    ``scipy.sparse.csr_array`` built from the ``k·K + j`` codes (never a dense K×K buffer).

    Example:
        >>> confusion_matrix([0, 0, 1], [0, 1, 1], K=2).tolist()
        [[1, 1], [0, 1]]
    """
    K = check_K(K)
    yt = labels(y_true, "y_true", K)
    yp = labels(y_pred, "y_pred", K)
    if yt.shape != yp.shape:
        raise NodeprobeError(f"y_true has {yt.size} items but y_pred has {yp.size}")
    if dense is None:
        dense = K <= DENSE_K_MAX
    codes = yt * K + yp
    if dense:
        return np.bincount(codes, minlength=K * K).reshape(K, K)
    uniq, counts = np.unique(codes, return_counts=True)
    return sparse.csr_array((counts.astype(np.int64), (uniq // K, uniq % K)), shape=(K, K))


@dataclass(frozen=True, eq=False)
class UnitStats:
    """Confusion-derived numbers of one unit (METHODS §3).

    ``recall``, ``precision``, ``lift`` and ``snr_per_class`` are aligned with ``learned``.
    ``mean_precision`` is P = mean over the outputs O of the precision (METHODS §5).
    """

    acc: float
    n_items: int
    n_classes: int
    outputs: np.ndarray  # sorted class ids j with Σ_k C[k, j] > 0
    learned: tuple[int, ...]  # Λ, sorted
    recall: np.ndarray
    precision: np.ndarray
    lift: np.ndarray
    snr_per_class: np.ndarray
    snr: float  # mean of snr_per_class; 0.0 when Λ is empty
    mean_precision: float

    @property
    def n_outputs(self) -> int:
        return int(self.outputs.size)

    @property
    def n_learned(self) -> int:
        return len(self.learned)


def _check_thresholds(tau_recall: float, tau_lift: float, min_count: int) -> None:
    if not (0.0 <= tau_recall <= 1.0):
        raise NodeprobeError(f"tau_recall={tau_recall}: must lie in [0, 1]")
    if not (tau_lift >= 0.0):
        raise NodeprobeError(f"tau_lift={tau_lift}: must be ≥ 0")
    if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) or min_count < 0:
        raise NodeprobeError(f"min_count={min_count!r}: must be an integer ≥ 0")


def unit_stats_many(
    y_true: Labels,
    Y_pred: Int[Tensor, "U N"] | Int[np.ndarray, "U N"],
    K: int,
    tau_recall: float = 0.5,
    tau_lift: float = 2.0,
    min_count: int = 5,
) -> list[UnitStats]:
    """:class:`UnitStats` of U units that share the true labels (one row of ``Y_pred`` per unit).

    Vectorised over units with bincounts on ``u·K + k`` codes, in chunks of at most about 4M
    (unit, class) cells and 16M (unit, item) cells, so 768 nodes × 1,120 items × K=16 is one chunk and 192 nodes × 20k items ×
    K=30522 takes ~45 chunks of O(N·U/45 + K·U/45) work each; no K×K matrix is ever formed.

    Example:
        >>> [s.learned for s in unit_stats_many([0]*6 + [1]*6, [[0]*6 + [1]*6, [0]*12], K=2)]
        [(0, 1), ()]
    """
    K = check_K(K)
    _check_thresholds(tau_recall, tau_lift, min_count)
    yt = labels(y_true, "y_true", K)
    Yp = labels(Y_pred, "Y_pred", K, ndim=2)
    N = yt.size
    if N == 0:
        raise NodeprobeError("no items: y_true is empty")
    if Yp.shape[1] != N:
        raise NodeprobeError(f"Y_pred has {Yp.shape[1]} items per unit but y_true has {N}")
    Nk = np.bincount(yt, minlength=K)
    n_min = max(int(min_count), 1)
    out: list[UnitStats] = []
    chunk = max(1, min(_CELLS_PER_CHUNK // K, 4 * _CELLS_PER_CHUNK // N))
    for u0 in range(0, Yp.shape[0], chunk):
        out.extend(_stats_chunk(yt, Nk, Yp[u0 : u0 + chunk], K, tau_recall, tau_lift, n_min))
    return out


def _stats_chunk(yt, Nk, P, K, tau_r, tau_l, n_min) -> list[UnitStats]:
    Uc, N = P.shape
    offs = (np.arange(Uc, dtype=np.int64) * K)[:, None]
    cell = P + offs  # (u, predicted class) cell ids
    colsum = np.bincount(cell.ravel(), minlength=Uc * K).reshape(Uc, K)
    correct = P == yt[None, :]
    diag = np.bincount(cell[correct], minlength=Uc * K).reshape(Uc, K)

    # learned-set candidates: C[k,k] ≥ n_min (sparse), then the exact threshold tests
    uu, kk = np.nonzero(diag >= n_min)
    d = diag[uu, kk]
    nk = Nk[kk]
    cs = colsum[uu, kk]
    recall = d / nk
    precision = d / cs
    lift = (d * N) / (cs * nk)  # one correctly rounded division of exact integers
    keep = (recall >= tau_r) & (lift >= tau_l)
    uu, kk, d, nk = uu[keep], kk[keep], d[keep], nk[keep]
    recall, precision, lift = recall[keep], precision[keep], lift[keep]

    # SNR: largest off-diagonal count of each learned row, from the misclassified items of those rows
    learned_mask = np.zeros((Uc, K), dtype=bool)
    learned_mask[uu, kk] = True
    rows_u, rows_n = np.nonzero(learned_mask[:, yt] & ~correct)
    maxoff = np.zeros(Uc * K, dtype=np.int64)
    if rows_u.size:
        codes = (rows_u * K + yt[rows_n]) * K + P[rows_u, rows_n]
        uniq, counts = np.unique(codes, return_counts=True)
        np.maximum.at(maxoff, uniq // K, counts)
    mo = maxoff[uu * K + kk]
    snr_k = np.where(mo > 0, d / np.maximum(mo, 1), nk).astype(np.float64)

    acc = diag.sum(axis=1) / N
    has_out = colsum > 0
    prec_all = np.divide(diag, colsum, out=np.zeros((Uc, K)), where=has_out)
    mean_prec = prec_all.sum(axis=1) / has_out.sum(axis=1)

    bounds = np.searchsorted(uu, np.arange(Uc + 1))  # uu is sorted (row-major nonzero)
    res = []
    for u in range(Uc):
        a, b = bounds[u], bounds[u + 1]
        s = snr_k[a:b]
        res.append(
            UnitStats(
                acc=float(acc[u]),
                n_items=int(N),
                n_classes=int(K),
                outputs=np.flatnonzero(has_out[u]),
                learned=tuple(int(k) for k in kk[a:b]),
                recall=recall[a:b],
                precision=precision[a:b],
                lift=lift[a:b],
                snr_per_class=s,
                snr=float(s.mean()) if s.size else 0.0,
                mean_precision=float(mean_prec[u]),
            )
        )
    return res


def unit_stats(
    y_true: Labels,
    y_pred: Labels,
    K: int,
    tau_recall: float = 0.5,
    tau_lift: float = 2.0,
    min_count: int = 5,
) -> UnitStats:
    """:class:`UnitStats` of one unit from its predictions.

    Example:
        >>> s = unit_stats([0]*6 + [1]*6, [0]*6 + [1]*6, K=2)
        >>> s.acc, s.learned, s.lift.tolist(), s.snr
        (1.0, (0, 1), [2.0, 2.0], 6.0)
    """
    yp = labels(y_pred, "y_pred", check_K(K))
    return unit_stats_many(y_true, yp[None, :], K, tau_recall, tau_lift, min_count)[0]


def learned_set(
    y_true: Labels,
    y_pred: Labels,
    K: int,
    tau_recall: float = 0.5,
    tau_lift: float = 2.0,
    min_count: int = 5,
) -> tuple[int, ...]:
    """The learned set Λ (sorted class ids) of one unit.

    Example:
        >>> learned_set([0]*6 + [1]*6, [0]*12, K=2)   # one class for everything: lift 1
        ()
    """
    return unit_stats(y_true, y_pred, K, tau_recall, tau_lift, min_count).learned


def snr(
    y_true: Labels,
    y_pred: Labels,
    K: int,
    tau_recall: float = 0.5,
    tau_lift: float = 2.0,
    min_count: int = 5,
) -> float:
    """SNR of one unit: mean over k ∈ Λ of ``C[k,k] / max_{j≠k} C[k,j]`` (∞ → N_k; empty Λ → 0).

    Example:
        >>> y = [0] * 8 + [1] * 8 + [2] * 8
        >>> snr(y, [0] * 6 + [1] * 2 + [1] * 8 + [2] * 8, K=3)  # (6/2 + 8 + 8) / 3; rows 1, 2: no errors
        6.333333333333333
    """
    return unit_stats(y_true, y_pred, K, tau_recall, tau_lift, min_count).snr


@dataclass(frozen=True)
class SymmetrySummary:
    """Symmetry-breaking summary over a family of units (METHODS §3).

    ``size_hist[s]`` = number of units with |Λ| = s (sizes that occur only); ``owners[k]`` = number
    of units whose Λ contains class k (classes owned by at least one unit only; absent → 0).
    ``mean_jaccard`` is over the unordered unit pairs counted in ``n_pairs`` (see
    :func:`symmetry_summary` for empty sets).
    """

    n_units: int
    n_classes: int
    size_hist: dict[int, int]
    mean_size: float
    n_covered: int
    coverage: float
    mean_jaccard: float
    n_pairs: int
    owners: dict[int, int]
    empty_pairs: str


def symmetry_summary(
    learned_sets: Sequence[Sequence[int]],
    K: int,
    empty_pairs: Literal["exclude", "zero", "one"] = "exclude",
    no_pairs_value: float = 0.0,
) -> SymmetrySummary:
    """Distribution of |Λ|, coverage |∪Λ|/K, mean pairwise Jaccard overlap, owners per class.

    Jaccard of two sets is |A∩B|/|A∪B|; a pair where *both* sets are empty has no defined overlap:
    ``empty_pairs="exclude"`` (default) leaves such pairs out, ``"zero"``/``"one"`` count them as
    0/1.  A pair with exactly one empty set has overlap 0.  If no pair remains (fewer than two
    units, or all excluded) the mean is ``no_pairs_value`` (default 0.0).

    Example:
        >>> s = symmetry_summary([[0, 1], [1, 2], [], []], K=4)
        >>> s.size_hist, s.coverage, round(s.mean_jaccard, 4), s.n_pairs, s.owners
        ({0: 2, 2: 2}, 0.75, 0.0667, 5, {0: 1, 1: 2, 2: 1})
    """
    K = check_K(K)
    if empty_pairs not in ("exclude", "zero", "one"):
        raise NodeprobeError(f"empty_pairs={empty_pairs!r}: choose exclude, zero or one")
    sets = []
    for i, s in enumerate(learned_sets):
        arr = np.unique(labels(np.asarray(list(s), dtype=np.int64), f"learned_sets[{i}]", K))
        sets.append(arr)
    U = len(sets)
    sizes = np.array([a.size for a in sets], dtype=np.int64)
    size_hist = dict(sorted(Counter(sizes.tolist()).items()))
    owner_counts = Counter(int(k) for a in sets for k in a)
    owners = dict(sorted(owner_counts.items()))

    n_pairs = 0
    mean_j = float(no_pairs_value)
    if U >= 2:
        rows = np.repeat(np.arange(U), sizes)
        cols = np.concatenate(sets) if sizes.sum() else np.zeros(0, dtype=np.int64)
        M = sparse.csr_array((np.ones(cols.size, dtype=np.int64), (rows, cols)), shape=(U, K))
        inter = (M @ M.T).toarray()
        iu, ju = np.triu_indices(U, k=1)
        it = inter[iu, ju]
        un = sizes[iu] + sizes[ju] - it
        both_empty = un == 0
        jac = np.divide(it, un, out=np.zeros(it.shape), where=~both_empty)
        if empty_pairs == "exclude":
            jac = jac[~both_empty]
        elif empty_pairs == "one":
            jac[both_empty] = 1.0
        n_pairs = int(jac.size)
        if n_pairs:
            mean_j = float(jac.mean())
    return SymmetrySummary(
        n_units=U,
        n_classes=K,
        size_hist=size_hist,
        mean_size=float(sizes.mean()) if U else 0.0,
        n_covered=len(owners),
        coverage=len(owners) / K,
        mean_jaccard=mean_j,
        n_pairs=n_pairs,
        owners=owners,
        empty_pairs=empty_pairs,
    )
