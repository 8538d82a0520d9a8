"""Convex-hull bound (METHODS §6): which classes can a node set output at all?

For node set S at ``readout`` the logits are ``W_S x + b'`` (W_S = ``W[:, S]``, K × n).  Class k
is **reachable** on a domain 𝒳 (ℝⁿ: *unbounded*; the box of observed activations: *data range*)
if it is the argmax on a set with nonempty interior relative to 𝒳, i.e.
``w_k·x + b'_k > max_{j≠k} (w_j·x + b'_j)`` on an open set (METHODS' strict inequality).
Conventions:

* Identical lines (same row of W_S and same b'): only the lowest index is reachable (ties → lowest
  index, as in the argmax).
* A class that wins only on a measure-zero set (three lines through one point where the middle one
  has the lowest index, an interval end by the tie rule) is *not* reachable.  Such a class can
  still be predicted for a data point sitting exactly on that set; the bound therefore adds the
  observed outputs: ``UB = Σ_{k ∈ R ∪ O} N_k / N`` so ``acc ≤ UB`` holds always, and
  ``outputs_unreached`` lists ``O \\ R`` (empty except for such exact ties, or regions thinner
  than ``tol``).
* A degenerate box side (low = high) is a fixed coordinate; a box that is a single point has the
  lowest-index argmax at that point as its one reachable class.

Methods, by n = |S|:

* n = 1: the lines on the upper envelope (:func:`nodeprobe.analysis.readout.upper_envelope`),
  over the interval for the data-range bound; exact.
* n = 2, 3, unbounded: vertices of the upper convex hull of the lifted points ``(w_k, b'_k)``
  (qhull via ``scipy.spatial.ConvexHull``): a vertex is reachable iff one of its facets has an
  outward normal with positive b-component.  Degenerate inputs (fewer than n+2 distinct points,
  points not spanning ℝ^{n+1}, qhull errors) and vertices whose facets are all within 1e-9 of
  vertical are decided by the LP instead.
* box with n ≥ 2, and any n ≥ 4: one LP per class (HiGHS): maximise t subject to
  ``(w_k − w_j)·x + (b'_k − b'_j) ≥ t`` for every j ≠ k (identical lines removed), x in the box
  (or free), t ≤ 1, after dividing W_S and b' by ``σ = max(|W_S|, |b'|)``.  Reachable iff
  ``t* > tol`` (default 1e-9, HiGHS feasibility tolerances 1e-10): regions whose largest margin is
  below ``tol·σ`` logits are treated as unreachable.  Classes already seen as the strict argmax of
  a witness point (the data, in :func:`hull_bound`) with margin > ``tol·σ`` need no LP.
* ``classes=`` (:func:`hull_bound`, many classes): only those rows plus the outputs are decided,
  each still against every row — the full answer restricted to them, so the UB is a lower estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from jaxtyping import Float, Int
from scipy.optimize import linprog
from scipy.spatial import ConvexHull, QhullError
from torch import Tensor

from nodeprobe.analysis._arrays import float_array
from nodeprobe.analysis.confusion import unit_stats, unit_stats_many
from nodeprobe.analysis.readout import (
    Mode,
    iter_node_predictions,
    node_set,
    predict_node,
    prepare_labelled,
    restrict_envelope,
    set_bias,
    set_predictions,
    upper_envelope,
)
from nodeprobe.errors import NodeprobeError

DEFAULT_TOL = 1e-9
_VERTICAL_TOL = 1e-9
_HIGHS = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}


def _box_arrays(box, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    if box is None:
        return None
    try:
        lo, hi = box
    except (TypeError, ValueError):
        raise NodeprobeError("box: expected a (low, high) pair of length-n arrays") from None
    lo = float_array(np.atleast_1d(np.asarray(lo, dtype=np.float64)), "box low", 1, np.float64)
    hi = float_array(np.atleast_1d(np.asarray(hi, dtype=np.float64)), "box high", 1, np.float64)
    if lo.shape != (n,) or hi.shape != (n,):
        raise NodeprobeError(f"box: low and high must have length n={n}, got {lo.size} and {hi.size}")
    if np.any(lo > hi):
        raise NodeprobeError("box: low must be ≤ high in every coordinate")
    return lo, hi


def _witnessed(Wd, bd, points, tol, sigma) -> set[int]:
    """Positions (into Wd) that are the strict argmax of some point with margin > tol·σ."""
    out: set[int] = set()
    if points is None or len(points) == 0 or Wd.shape[0] < 2:
        return out
    step = max(1, (1 << 22) // Wd.shape[0])
    for a in range(0, len(points), step):
        V = points[a : a + step] @ Wd.T + bd
        top2 = np.partition(V, -2, axis=1)[:, -2:]
        ok = top2[:, 1] - top2[:, 0] > tol * sigma
        if ok.any():
            out.update(np.argmax(V[ok], axis=1).tolist())
    return out


def _lp_margin(Wd, bd, k, box) -> float:
    """max t s.t. (w_k − w_j)·x + b_k − b_j ≥ t ∀ j ≠ k, x ∈ box, t ≤ 1 (Wd, bd already scaled)."""
    n = Wd.shape[1]
    others = np.arange(Wd.shape[0]) != k
    A = np.column_stack([Wd[others] - Wd[k], np.ones(int(others.sum()))])
    rhs = bd[k] - bd[others]
    cost = np.zeros(n + 1)
    cost[-1] = -1.0
    if box is None:
        bounds = [(None, None)] * n
    else:
        bounds = list(zip(box[0].tolist(), box[1].tolist()))
    res = linprog(cost, A_ub=A, b_ub=rhs, bounds=bounds + [(None, 1.0)], method="highs", options=_HIGHS)
    assert res.status == 0, f"reachability LP failed: {res.message}"
    return -float(res.fun)


def _lp_reachable(Wd, bd, classes, box, tol, witnesses, max_lp) -> set[int] | None:
    """LP path on deduplicated lines; positions into Wd.  None when more than max_lp LPs needed."""
    m = Wd.shape[0]
    classes = set(classes)
    if m == 1:
        return {0} & classes
    sigma = max(float(np.abs(Wd).max()), float(np.abs(bd).max()), 1e-300)
    Ws, bs = Wd / sigma, bd / sigma
    found = _witnessed(Ws, bs, witnesses, tol, 1.0) & classes
    todo = sorted(k for k in classes if k not in found)
    if max_lp is not None and len(todo) > max_lp:
        return None
    return found | {k for k in todo if _lp_margin(Ws, bs, k, box) > tol}


def _qhull_reachable(Wd, bd, n) -> tuple[set[int], set[int]] | None:
    """(reachable, undecided) positions from the lifted upper hull, or None if degenerate."""
    P = np.column_stack([Wd, bd])
    if P.shape[0] < n + 2 or np.linalg.matrix_rank(P - P.mean(axis=0)) < n + 1:
        return None
    try:
        hull = ConvexHull(P)
    except QhullError:
        return None
    up_comp = hull.equations[:, n]  # b-component of the unit outward normals
    upper = up_comp > _VERTICAL_TOL
    vertical = np.abs(up_comp) <= _VERTICAL_TOL
    reach = set(np.unique(hull.simplices[upper]).tolist())
    undecided = set(np.unique(hull.simplices[vertical]).tolist()) - reach
    return reach, undecided


def _within_unbounded(r_unb, r_dat):
    """The data range lies in ℝⁿ: whatever is reached there is reached unbounded too.  (A degenerate
    data range — one point — is decided by argmax, ties to the lowest class, and that class may win
    nowhere strictly; without the union the unbounded bound could fall below the data bound.)"""
    if r_unb is None or r_dat is None:
        return r_unb
    return tuple(sorted(set(r_unb) | set(r_dat)))


def _reachable(Wn, bn, box, tol=DEFAULT_TOL, witnesses=None, max_lp=None, cand=None) -> tuple[int, ...] | None:
    """Reachable rows of ``Wn x + bn``; with ``cand`` (row ids) only those rows are decided — each
    still against every row — and the answer is the full one intersected with ``cand``."""
    K, n = Wn.shape
    keep_only = (lambda t: t) if cand is None else (lambda t: tuple(k for k in t if k in cand))
    if n == 1:  # exact (rational decisions at the interval ends)
        interval = None if box is None else (float(box[0][0]), float(box[1][0]))
        return keep_only(upper_envelope(Wn[:, 0], bn, interval).reachable)
    if n == 0 or (box is not None and np.all(box[0] == box[1])):
        x = np.zeros(n) if n == 0 else box[0]
        v = Wn @ x + bn
        return keep_only((int(np.flatnonzero(v == v.max())[0]),))
    P = np.column_stack([Wn, bn])
    _, first = np.unique(P, axis=0, return_index=True)
    keep = np.sort(first)  # lowest index of each group of identical lines
    Wd, bd = Wn[keep], bn[keep]
    # a candidate that repeats a lower-index line is unreachable by the tie rule: it has no position
    classes: Sequence[int] = range(keep.size) if cand is None else [p for p, k in enumerate(keep.tolist()) if k in cand]
    if box is None and n in (2, 3):
        qh = _qhull_reachable(Wd, bd, n)
        if qh is not None:
            reach, undecided = qh
            if cand is not None:
                reach &= set(classes)
                undecided &= set(classes)
            if undecided:
                extra = _lp_reachable(Wd, bd, sorted(undecided), None, tol, None, None)
                reach |= extra & undecided
            return tuple(sorted(int(keep[p]) for p in reach))
    got = _lp_reachable(Wd, bd, classes, box, tol, witnesses, max_lp)
    if got is None:
        return None
    return tuple(sorted(int(keep[p]) for p in got))


def reachable_classes(
    W: Float[Tensor, "K n"] | Float[np.ndarray, "K n"],
    b: Float[Tensor, "K"] | Float[np.ndarray, "K"],
    box: tuple[Float[np.ndarray, "n"], Float[np.ndarray, "n"]] | None = None,
    *,
    tol: float = DEFAULT_TOL,
    witnesses: Float[np.ndarray, "M n"] | None = None,
) -> tuple[int, ...]:
    """Sorted class ids reachable as the strict argmax of ``W x + b`` for x ∈ ℝⁿ (``box=None``)
    or x in ``box = (low, high)``.  W is already restricted to the node set and b is b'.

    ``witnesses``: optional points known to lie in the domain; classes that win at one of them
    by more than ``tol·σ`` skip their LP.  See the module docstring for methods and conventions.

    Example:
        >>> import numpy as np
        >>> W = np.array([[-1.0], [0.0], [1.0]]); b = np.array([0.0, -1.0, 0.0])
        >>> reachable_classes(W, b), reachable_classes(W, b, box=([0.5], [2.0]))
        ((0, 2), (2,))
        >>> W2 = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0], [0.0, 0.0]])
        >>> reachable_classes(W2, np.array([0.0, 0.0, 0.0, -1.0]))   # class 3 is inside the hull
        (0, 1, 2)
    """
    Wn = float_array(W, "W", 2, np.float64)
    bn = float_array(b, "b", 1, np.float64)
    if bn.shape != (Wn.shape[0],) or Wn.shape[0] == 0:
        raise NodeprobeError(f"b has shape {tuple(bn.shape)}, W has shape {tuple(Wn.shape)}: need K ≥ 1 rows each")
    bx = _box_arrays(box, Wn.shape[1])
    wit = None if witnesses is None else float_array(witnesses, "witnesses", 2, np.float64)
    if wit is not None and wit.shape[1] != Wn.shape[1]:
        raise NodeprobeError(f"witnesses have {wit.shape[1]} coordinates, expected {Wn.shape[1]}")
    if wit is not None and bx is not None and np.any((wit < bx[0]) | (wit > bx[1])):
        raise NodeprobeError("witnesses must lie inside the box")
    if not tol >= 0:
        raise NodeprobeError(f"tol={tol}: must be ≥ 0")
    out = _reachable(Wn, bn, bx, tol, wit, None)
    assert out is not None
    return out


# --------------------------------------------------------------------------------------------
# bounds
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HullBound:
    """Achieved vs reachable for one node set (METHODS §6).

    ``ub_* = Σ_{k ∈ R ∪ O} N_k / N``; ``efficiency_* = acc / ub_*`` (NaN when ub is 0).
    ``reachable_*``, ``ub_*``, ``efficiency_*`` are None when not computed (more than ``max_lp``
    LPs would be needed).  ``outputs_unreached_*`` = O \\ R (normally empty).
    """

    nodes: tuple[int, ...]
    n_items: int
    n_classes: int
    acc: float
    n_outputs: int
    n_learned: int
    reachable_unbounded: tuple[int, ...] | None
    reachable_data: tuple[int, ...] | None
    ub_unbounded: float | None
    ub_data: float | None
    efficiency_unbounded: float | None
    efficiency_data: float | None
    outputs_unreached_unbounded: tuple[int, ...]
    outputs_unreached_data: tuple[int, ...]
    data_low: tuple[float, ...]
    data_high: tuple[float, ...]
    tested: tuple[int, ...] | None = None  # rows whose reachability was decided; None: every row

    @property
    def n_reachable_unbounded(self) -> int | None:
        return None if self.reachable_unbounded is None else len(self.reachable_unbounded)

    @property
    def n_reachable_data(self) -> int | None:
        return None if self.reachable_data is None else len(self.reachable_data)


def _ub(reach, outputs: np.ndarray, Nk: np.ndarray, N: int):
    if reach is None:
        return None, ()
    unreached = tuple(int(k) for k in np.setdiff1d(outputs, np.asarray(reach, dtype=np.int64)))
    cls = np.union1d(np.asarray(reach, dtype=np.int64), outputs)
    return float(Nk[cls].sum() / N), unreached


def _eff(acc: float, ub: float | None) -> float | None:
    if ub is None:
        return None
    return acc / ub if ub > 0 else float("nan")


def hull_bound(
    W: Float[Tensor, "K d"],
    b: Float[Tensor, "K"],
    X: Float[Tensor, "N d"],
    y: Int[Tensor, "N"],
    nodes: Sequence[int] | Int[Tensor, "n"],
    mode: Mode = "zero",
    means: Float[Tensor, "d"] | None = None,
    *,
    tol: float = DEFAULT_TOL,
    max_lp: int = 2000,
    tau_recall: float = 0.5,
    tau_lift: float = 2.0,
    min_count: int = 5,
    n_classes: int | None = None,
    classes: Sequence[int] | Int[Tensor, "m"] | None = None,
    n_other: int | None = None,
) -> HullBound:
    """Reachable classes of node set S (unbounded and over the data box ``[min X_S, max X_S]``)
    against the achieved accuracy, outputs and learned set of S.

    Predictions use the readout conventions of :mod:`nodeprobe.analysis.readout` (the envelope
    path for a single node, dense float logits otherwise).

    Example:
        >>> import torch
        >>> W = torch.tensor([[0.0], [1.0]]); b = torch.tensor([0.0, -1.5])
        >>> X = torch.tensor([[0.0], [1.0], [0.5], [1.0]]); y = torch.tensor([0, 1, 0, 1])
        >>> hb = hull_bound(W, b, X, y, [0])
        >>> hb.reachable_unbounded, hb.reachable_data, hb.ub_data, hb.acc
        ((0, 1), (0,), 0.5, 0.5)

    ``n_classes``: as in :func:`~nodeprobe.analysis.readout.prepare_labelled` (labels of classes
    without a row in W count in N but are never reachable).

    ``classes`` (rows of W, for a node set of n ≥ 2): decide reachability only for these rows plus
    the set's outputs (always included); with ``n_other`` only the first ``n_other`` rows of
    ``classes`` that are not outputs are used (pass a seeded permutation for a random sample).
    Each tested row still competes with every row, so ``reachable_*`` is the full answer
    intersected with ``tested`` and ``ub_*`` (over ``tested ∪ outputs``) is a lower estimate of
    the full bound; ``acc ≤ ub_*`` still holds.  ``tested`` is None when every row was tested.
    """
    r, yt = prepare_labelled(W, b, X, y, mode, means, n_classes)
    Wn, Xn = r.W, r.X
    K, d = Wn.shape
    KL = K if n_classes is None else int(n_classes)
    N = Xn.shape[0]
    S = node_set(nodes, d)
    bias = set_bias(r, S)
    if S.size == 1:
        i = int(S[0])
        pred, _ = predict_node(np.ascontiguousarray(Xn[:, i]), np.ascontiguousarray(Wn[:, i]), bias)
    else:
        pred = set_predictions(r, S)
    st = unit_stats(yt, pred, KL, tau_recall, tau_lift, min_count)
    Ws = Wn[:, S].astype(np.float64)
    b64 = np.asarray(bias, dtype=np.float64)
    Xs = Xn[:, S].astype(np.float64)
    box = (Xs.min(axis=0), Xs.max(axis=0))
    tested = _tested_rows(classes, n_other, st.outputs, K) if S.size >= 2 else None
    cand = None if tested is None else set(tested)
    n_cand = K if tested is None else len(tested)
    # witnesses only help if they could leave at most max_lp classes to the LP
    wit = Xs if (S.size >= 2 and n_cand - min(N, n_cand) <= max_lp) else None
    needs_lp_unb = S.size >= 4
    r_unb = _reachable(Ws, b64, None, tol, wit, max_lp if needs_lp_unb else None, cand)
    r_dat = _reachable(Ws, b64, box, tol, wit, max_lp if S.size >= 2 else None, cand)
    r_unb = _within_unbounded(r_unb, r_dat)
    Nk = np.bincount(yt, minlength=KL)
    ub_u, un_u = _ub(r_unb, st.outputs, Nk, N)
    ub_d, un_d = _ub(r_dat, st.outputs, Nk, N)
    return HullBound(
        nodes=tuple(int(i) for i in S),
        n_items=N,
        n_classes=KL,
        acc=st.acc,
        n_outputs=st.n_outputs,
        n_learned=st.n_learned,
        reachable_unbounded=r_unb,
        reachable_data=r_dat,
        ub_unbounded=ub_u,
        ub_data=ub_d,
        efficiency_unbounded=_eff(st.acc, ub_u),
        efficiency_data=_eff(st.acc, ub_d),
        outputs_unreached_unbounded=un_u,
        outputs_unreached_data=un_d,
        data_low=tuple(float(v) for v in box[0]),
        data_high=tuple(float(v) for v in box[1]),
        tested=tested,
    )


def _tested_rows(classes, n_other, outputs: np.ndarray, K: int) -> tuple[int, ...] | None:
    """``outputs ∪ classes`` (``classes`` cut to its first ``n_other`` non-outputs), sorted; None
    when that is every row."""
    if classes is None:
        if n_other is not None:
            raise NodeprobeError("n_other needs classes= (the rows to draw the other classes from, in order)")
        return None
    c = np.asarray(classes.detach().cpu().numpy() if isinstance(classes, Tensor) else classes).reshape(-1)
    if c.size and (not np.issubdtype(c.dtype, np.integer) or c.min() < 0 or c.max() >= K):
        raise NodeprobeError(f"classes: expected row numbers 0–{K - 1} of W")
    out = set(int(k) for k in outputs)
    others = list(dict.fromkeys(int(k) for k in c if int(k) not in out))
    if n_other is not None:
        if isinstance(n_other, bool) or not isinstance(n_other, (int, np.integer)) or n_other < 0:
            raise NodeprobeError(f"n_other={n_other!r}: must be an integer ≥ 0")
        others = others[: int(n_other)]
    tested = tuple(sorted(out | set(others)))
    return None if len(tested) == K else tested


@dataclass(frozen=True, eq=False)
class SingleNodeHull:
    """:class:`HullBound` numbers of every single node, as arrays of length d.

    ``gap_data = ub_data − acc``; ``farthest_below`` = the ``top`` nodes with the largest gap
    (ties → lower node index), the candidates for non-optimal learning.
    """

    n_items: int
    n_classes: int
    acc: np.ndarray
    n_outputs: np.ndarray
    n_learned: np.ndarray
    reachable_unbounded: list[tuple[int, ...]]
    reachable_data: list[tuple[int, ...]]
    n_reachable_unbounded: np.ndarray
    n_reachable_data: np.ndarray
    ub_unbounded: np.ndarray
    ub_data: np.ndarray
    efficiency_unbounded: np.ndarray
    efficiency_data: np.ndarray
    n_outputs_unreached_unbounded: np.ndarray
    n_outputs_unreached_data: np.ndarray
    gap_data: np.ndarray
    farthest_below: tuple[int, ...]


def hull_bound_single_nodes(
    W: Float[Tensor, "K d"],
    b: Float[Tensor, "K"],
    X: Float[Tensor, "N d"],
    y: Int[Tensor, "N"],
    mode: Mode = "zero",
    means: Float[Tensor, "d"] | None = None,
    *,
    top: int = 10,
    tau_recall: float = 0.5,
    tau_lift: float = 2.0,
    min_count: int = 5,
    n_classes: int | None = None,
) -> SingleNodeHull:
    """Hull bound of every single node: one upper envelope per node serves the predictions,
    the unbounded bound and (restricted to ``[min X_i, max X_i]``) the data-range bound.

    Example:
        >>> import torch
        >>> W = torch.tensor([[0.0, 0.0], [1.0, -1.0]]); b = torch.tensor([0.0, -1.5])
        >>> X = torch.tensor([[0.0, 0.0], [1.0, -2.0], [0.5, 0.0], [1.0, -2.0]])
        >>> r = hull_bound_single_nodes(W, b, X, torch.tensor([0, 1, 0, 1]))
        >>> r.reachable_data, r.acc.tolist(), r.farthest_below
        ([(0,), (0, 1)], [0.5, 1.0], (0, 1))
    """
    r, yt = prepare_labelled(W, b, X, y, mode, means, n_classes)
    K, d = r.W.shape
    KL = K if n_classes is None else int(n_classes)
    N = r.X.shape[0]
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 0:
        raise NodeprobeError(f"top={top!r}: must be an integer ≥ 0")
    preds = np.empty((d, N), dtype=np.int64)
    r_unb: list[tuple[int, ...]] = []
    r_dat: list[tuple[int, ...]] = []
    lo, hi = r.X.min(axis=0), r.X.max(axis=0)
    for i, s, c, lines, pred, _ in iter_node_predictions(r):
        preds[i] = pred
        r_unb.append(tuple(sorted(int(k) for k in lines.env1[~lines.point1])))
        s64, c64 = s.astype(np.float64), c.astype(np.float64)
        sel, strict = restrict_envelope(lines.env1, lines.point1, s64, c64, np.arange(K), float(lo[i]), float(hi[i]))
        r_dat.append(tuple(sorted(int(k) for k in lines.env1[sel][strict])))
        r_unb[-1] = _within_unbounded(r_unb[-1], r_dat[-1])
    stats = unit_stats_many(yt, preds, KL, tau_recall, tau_lift, min_count)
    Nk = np.bincount(yt, minlength=KL)
    acc = np.array([st.acc for st in stats])
    ubs_u = [_ub(r, st.outputs, Nk, N) for r, st in zip(r_unb, stats)]
    ubs_d = [_ub(r, st.outputs, Nk, N) for r, st in zip(r_dat, stats)]
    ub_u = np.array([u for u, _ in ubs_u])
    ub_d = np.array([u for u, _ in ubs_d])
    gap = ub_d - acc
    order = np.lexsort((np.arange(d), -gap))
    with np.errstate(divide="ignore", invalid="ignore"):
        eff_u = np.where(ub_u > 0, acc / ub_u, np.nan)
        eff_d = np.where(ub_d > 0, acc / ub_d, np.nan)
    return SingleNodeHull(
        n_items=N,
        n_classes=KL,
        acc=acc,
        n_outputs=np.array([st.n_outputs for st in stats]),
        n_learned=np.array([st.n_learned for st in stats]),
        reachable_unbounded=r_unb,
        reachable_data=r_dat,
        n_reachable_unbounded=np.array([len(r) for r in r_unb]),
        n_reachable_data=np.array([len(r) for r in r_dat]),
        ub_unbounded=ub_u,
        ub_data=ub_d,
        efficiency_unbounded=eff_u,
        efficiency_data=eff_d,
        n_outputs_unreached_unbounded=np.array([len(u) for _, u in ubs_u]),
        n_outputs_unreached_data=np.array([len(u) for _, u in ubs_d]),
        gap_data=gap,
        farthest_below=tuple(int(i) for i in order[: int(top)]),
    )
