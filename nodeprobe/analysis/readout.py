"""Readout predictions of nodes and node sets (METHODS §2, §7).

At the ``readout`` site the logits are exactly linear, ``logits = W x + b`` (W: K × d).  Isolating
node set S keeps ``x_S`` and replaces the other coordinates by 0 (``mode="zero"``) or by their
eval-set means μ (``mode="mean"``), i.e. ``logits = W[:, S] x_S + b'``.

**Bias convention** (one formula everywhere, so that the node set ``{i}`` reproduces
:func:`node_predictions` bit for bit):

* zero mode: ``b' = b``;
* mean mode: ``b'_S = (b + W @ μ) − W[:, S] @ μ_S``, which for a single node is
  ``(b + W @ μ) − W[:, i] * μ_i`` (elementwise).  In exact arithmetic this is METHODS §2's
  ``b + W[:, ~S] μ_{~S}``.

**Reference arithmetic.**  The predictions of node i are defined as the dense computation
``argmax_k (X[:, i, None] * W[None, :, i] + b'_i)`` (multiply, round, add, round) in the
*reference dtype* (float64 if any of W, b, X, μ is float64, else float32; half precision and
integer inputs are computed in float32), with ties going to the lowest class index.
:func:`dense_node_predictions` is that computation, chunked.

**Single nodes without an O(N·K) pass** (:func:`node_predictions`).  For node i the K logits are
lines in x: slope ``W[k, i]``, intercept ``b'_k``.  Per node we build, in float64,

1. the *upper envelope* (lines sorted by slope, equal slopes → highest intercept then lowest
   index; monotone-chain / convex-hull trick with exact orientation tests for float32 data; lines
   through a breakpoint shared by ≥ 3 lines are kept as zero-length "point" segments when they
   have the lowest index there), and
2. the upper envelope of all remaining lines ("second layer"),

and for every item binary-search (``np.searchsorted``, vectorised over N) its envelope segment.
The found line and its two envelope neighbours are evaluated in the reference arithmetic and the
maximum (lowest index on ties) is taken.  That answer is then *certified*: every other line is
bounded by the envelope lines two positions away (the envelope's values at a fixed x are unimodal
along the envelope) and by the second layer; if that bound plus a rigorous rounding-error margin
is below the winning value, no other line can win the dense computation.  Items that cannot be
certified (exact or near ties with a line outside the three candidates; essentially never for
continuous data) are recomputed densely, deduplicated by x.  The result equals the dense
reference exactly, and the cost is O(K log K) per node plus O(N log K) per node.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator, Literal, NamedTuple, Sequence

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from nodeprobe.analysis._arrays import float_array, labels, ref_dtype, to_numpy
from nodeprobe.analysis.confusion import argmax_lowest
from nodeprobe.errors import NodeprobeError

Mode = Literal["zero", "mean"]
_PREFILTER_MIN = 48  # below this many candidate lines the monotone chain runs on all of them
_N_PROBES = 17
_DENSE_CELLS = 1 << 22  # elements per chunk in the dense paths


# --------------------------------------------------------------------------------------------
# the upper envelope of lines y = s·x + c
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Envelope:
    """Upper envelope of K lines ``y = slopes[k]·x + intercepts[k]``, with ties → lowest index.

    ``lines[t]`` (class ids, left to right = increasing slope) is the argmax on the segment
    between ``breakpoints[t-1]`` and ``breakpoints[t]`` (−∞/+∞ at the ends).  Every listed line
    is the lowest-index argmax at some x of the domain; ``strict[t]`` says it wins on a set with
    nonempty interior (relative to the domain; a one-point interval is its own interior).  A
    non-strict line wins only at single points: where ≥ 3 lines cross and it has the lowest
    index, or at an interval end by the tie rule.  ``reachable`` = the strict lines, sorted.
    """

    lines: np.ndarray
    breakpoints: np.ndarray
    strict: np.ndarray
    interval: tuple[float, float] | None

    @property
    def reachable(self) -> tuple[int, ...]:
        return tuple(sorted(int(k) for k in self.lines[self.strict]))


def _upper_chain(xs: list[float], ys: list[float]) -> list[int]:
    """Monotone chain of the upper hull of points sorted by strictly increasing x; collinear
    points on hull edges are kept.  Orientation tests in float64 are exact for float32 data."""
    st: list[int] = []
    for i in range(len(xs)):
        xi, yi = xs[i], ys[i]
        while len(st) >= 2:
            o, a = st[-2], st[-1]
            xo, yo = xs[o], ys[o]
            if (xs[a] - xo) * (yi - yo) - (ys[a] - yo) * (xi - xo) > 0:
                st.pop()  # a lies strictly below the segment o → i
            else:
                break
        st.append(i)
    return st


def _sorted_lines(s: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Positions sorted by (slope ↑, intercept ↓, index ↑) with identical lines but the
    lowest-index one removed (an identical higher-index line can never be the argmax)."""
    order = np.argsort(s, kind="stable")
    so = s[order]
    tie = so[1:] == so[:-1]
    if tie.any():  # equal slopes: reorder each group by intercept ↓ (stable: index ↑ on full ties)
        grp = np.zeros(order.size, dtype=bool)
        grp[1:] |= tie
        grp[:-1] |= tie
        sub = order[grp]
        order[grp] = sub[np.lexsort((-c[sub], s[sub]))]
    co = c[order]
    dup = np.zeros(order.size, dtype=bool)
    dup[1:] = (so[1:] == so[:-1]) & (co[1:] == co[:-1])
    return order[~dup]


def _prefilter(s: np.ndarray, c: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Drop candidates strictly below the upper hull of a few extreme points (Akl–Toussaint).

    ``cand`` is sorted by strictly increasing slope.  The hull of any subset lies below the full
    hull, so a point below it by more than the rounding margin is no envelope line (not even a
    tie at a single point); points within the margin are kept for the exact chain."""
    sc, cc = s[cand], c[cand]
    span_s = sc[-1] - sc[0]
    span_c = cc.max() - cc.min()
    scale = span_c / span_s if (span_s > 0 and span_c > 0) else 1.0
    probes = scale * np.tan(np.linspace(-1.5, 1.5, _N_PROBES))
    win = [0, cand.size - 1] + [int(np.argmax(cc + sc * x)) for x in probes]
    win = np.unique(np.array(win))
    ch = win[_upper_chain(sc[win].tolist(), cc[win].tolist())]
    h = np.interp(sc, sc[ch], cc[ch])
    margin = 1e-9 * float(np.abs(cc).max()) + 1e-300
    return cand[cc >= h - margin]


def _envelope_from_sorted(
    order: np.ndarray, s: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Tie-broken upper envelope of the lines ``order`` (as sorted by :func:`_sorted_lines`).

    Returns (positions left to right, point_only flags)."""
    if order.size == 0:
        return order, np.zeros(0, dtype=bool)
    so = s[order]
    first = np.ones(order.size, dtype=bool)
    first[1:] = so[1:] != so[:-1]
    cand = order[first]  # strictly increasing slopes; highest intercept, then lowest index
    if cand.size >= _PREFILTER_MIN:
        cand = _prefilter(s, c, cand)
    xs, ys = s[cand].tolist(), c[cand].tolist()
    hull = _upper_chain(xs, ys)
    m = len(hull)
    if m <= 2:
        pos = cand[hull]
        return pos, np.zeros(pos.size, dtype=bool)
    # collinear interior points: all lines through one breakpoint; keep the lowest-index one as a
    # point segment if it beats both corner lines there
    keep: list[int] = [hull[0]]
    point: list[bool] = [False]
    t = 1
    while t < m:
        if t == m - 1:
            keep.append(hull[t])
            point.append(False)
            break
        run = []
        while t < m - 1:
            o, a, b = hull[t - 1], hull[t], hull[t + 1]
            if (xs[a] - xs[o]) * (ys[b] - ys[o]) - (ys[a] - ys[o]) * (xs[b] - xs[o]) == 0:
                run.append(a)
                t += 1
            else:
                break
        if run:
            best = min(run, key=lambda q: int(cand[q]))
            if cand[best] < min(cand[keep[-1]], cand[hull[t]]):
                keep.append(best)
                point.append(True)
        keep.append(hull[t])
        point.append(False)
        t += 1
    return cand[np.array(keep)], np.array(point, dtype=bool)


def _breakpoints(pos: np.ndarray, s: np.ndarray, c: np.ndarray) -> np.ndarray:
    if pos.size < 2:
        return np.zeros(0, dtype=np.float64)
    a, b = pos[:-1], pos[1:]
    bp = (c[a] - c[b]) / (s[b] - s[a])
    return np.maximum.accumulate(bp)  # rounding can swap breakpoints that coincide exactly


def _frac_val(s: float, c: float, x: float) -> Fraction:
    return Fraction(s) * Fraction(x) + Fraction(c)


def _exact_winner(cands: Sequence[int], s, c, idx, x: float) -> int:
    """Position (among ``cands``) of the exact lowest-index argmax at x."""
    vals = [(_frac_val(float(s[p]), float(c[p]), x), -int(idx[p]), p) for p in cands]
    return max(vals)[2]


def _neighbour_ge(
    env: np.ndarray, s: np.ndarray, c: np.ndarray, x: float, step: int
) -> np.ndarray:
    """For t with a neighbour t+step: sign of f_t(x) − f_{t+step}(x), exact (-1, 0, 1)."""
    t = np.arange(env.size)
    nb = t + step
    ok = (nb >= 0) & (nb < env.size)
    out = np.zeros(env.size, dtype=np.int64)
    a, b = env[t[ok]], env[nb[ok]]
    d = (s[a] - s[b]) * x + (c[a] - c[b])
    mag = np.abs(s[a] * x) + np.abs(s[b] * x) + np.abs(c[a]) + np.abs(c[b])
    sign = np.sign(d).astype(np.int64)
    unsure = np.abs(d) <= 1e-12 * mag + 1e-300
    for q in np.flatnonzero(unsure):
        diff = _frac_val(float(s[a[q]]), float(c[a[q]]), x) - _frac_val(float(s[b[q]]), float(c[b[q]]), x)
        sign[q] = (diff > 0) - (diff < 0)
    out[t[ok]] = sign
    return out


def restrict_envelope(env, point, s, c, idx, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """The envelope ``env`` (line positions left to right, ``point`` = point-only flags, lines
    ``s·x + c`` in float64, ``idx`` = class ids) restricted to ``[lo, hi]``: the indices into
    ``env`` of the lines that win somewhere there (contiguous) and their strict flags.
    Decisions at the ends are exact (rational arithmetic).

    Example:
        >>> import numpy as np
        >>> s, c = np.array([-1.0, 0.0, 1.0]), np.array([0.0, -1.0, 0.0])
        >>> sel, strict = restrict_envelope(np.array([0, 2]), np.array([False, False]), s, c, np.arange(3), 0.5, 2.0)
        >>> sel.tolist(), strict.tolist()
        ([1], [True])
    """
    m = env.size
    bp = _breakpoints(env, s, c)

    def winner(x: float) -> int:
        p = int(np.searchsorted(bp, x))
        cands = [env[q] for q in range(max(0, p - 2), min(m, p + 3))]
        w = _exact_winner(cands, s, c, idx, x)
        return int(np.flatnonzero(env == w)[0])

    t_lo = winner(lo)
    if lo == hi:
        return np.array([t_lo]), np.array([True])
    t_hi = winner(hi)
    # left edge of t below hi ⟺ f_t(hi) > f_{t-1}(hi); right edge above lo ⟺ f_t(lo) > f_{t+1}(lo)
    left = _neighbour_ge(env, s, c, hi, -1)
    right = _neighbour_ge(env, s, c, lo, +1)
    first, last = np.arange(m) == 0, np.arange(m) == m - 1
    strict = ~point & (first | (left > 0)) & (last | (right > 0))
    pt_in = point & (left >= 0) & (right >= 0)
    member = strict | pt_in
    member[t_lo] = member[t_hi] = True
    sel = np.flatnonzero(member)
    assert sel.size and np.all(np.diff(sel) == 1), "interval envelope must be contiguous"
    return sel, strict[sel]


def upper_envelope(
    slopes: Float[Tensor, "K"] | Float[np.ndarray, "K"],
    intercepts: Float[Tensor, "K"] | Float[np.ndarray, "K"],
    interval: tuple[float, float] | None = None,
) -> Envelope:
    """Upper envelope of the lines ``slopes[k]·x + intercepts[k]`` over ℝ or over ``[lo, hi]``.

    Computed in float64 (exact orientation tests for float32-representable inputs); equal slopes
    keep the highest intercept (lowest index on an exact tie); where several lines cross at one
    point the lowest index among them wins that point.  Decisions at the interval ends use exact
    rational arithmetic.

    Example:
        >>> env = upper_envelope([-1.0, 0.0, 1.0], [0.0, -1.0, 0.0])
        >>> env.lines.tolist(), env.breakpoints.tolist(), env.reachable
        ([0, 2], [0.0], (0, 2))
        >>> upper_envelope([-1.0, 0.0, 1.0], [0.0, -1.0, 0.0], interval=(0.5, 2.0)).reachable
        (2,)
    """
    s = float_array(slopes, "slopes", 1).astype(np.float64)
    c = float_array(intercepts, "intercepts", 1).astype(np.float64)
    if s.size != c.size or s.size == 0:
        raise NodeprobeError(f"need as many slopes as intercepts (≥ 1), got {s.size} and {c.size}")
    idx = np.arange(s.size)
    env, point = _envelope_from_sorted(_sorted_lines(s, c), s, c)
    if interval is None:
        return Envelope(env.astype(np.int64), _breakpoints(env, s, c), ~point, None)
    lo, hi = (float(v) for v in interval)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise NodeprobeError(f"interval={interval}: need finite lo ≤ hi")
    sel, strict = restrict_envelope(env, point, s, c, idx, lo, hi)
    env = env[sel]
    return Envelope(env.astype(np.int64), _breakpoints(env, s, c), strict, (lo, hi))


# --------------------------------------------------------------------------------------------
# biases, validation
# --------------------------------------------------------------------------------------------


class ReadoutArrays(NamedTuple):
    """The validated inputs of a readout analysis, as numpy arrays in the reference dtype.

    ``W`` [K, d], ``b`` [K], ``X`` [N, d]; ``means`` [d] in mean mode, else None; ``base`` [K] is
    the bias of the full node set (``b`` in zero mode, ``b + W @ μ`` in mean mode), from which
    :func:`set_bias` subtracts the isolated nodes' share; ``dtype`` is the reference dtype.
    """

    W: np.ndarray
    b: np.ndarray
    X: np.ndarray
    means: np.ndarray | None
    base: np.ndarray
    dtype: np.dtype


def prepare_readout(W, b, X, mode: Mode = "zero", means=None) -> ReadoutArrays:
    """Validate ``W x + b`` inputs and convert them to the reference dtype (module docstring).

    Example:
        >>> import numpy as np
        >>> r = prepare_readout(np.eye(2), np.zeros(2), np.ones((3, 2)), "mean", np.array([1.0, 2.0]))
        >>> r.base.tolist(), r.dtype
        ([1.0, 2.0], dtype('float64'))
    """
    if mode not in ("zero", "mean"):
        raise NodeprobeError(f"mode={mode!r}: choose zero or mean")
    rd = ref_dtype(W, b, X, means if mode == "mean" else None)
    Wn = float_array(W, "W", 2, rd)
    bn = float_array(b, "b", 1, rd)
    Xn = float_array(X, "X", 2, rd)
    K, d = Wn.shape
    if bn.shape != (K,):
        raise NodeprobeError(f"b has shape {tuple(bn.shape)}, expected ({K},) to match W {tuple(Wn.shape)}")
    if Xn.shape[1] != d:
        raise NodeprobeError(f"X has {Xn.shape[1]} nodes per item but W has {d} columns")
    mu = None
    base = bn
    if mode == "mean":
        if means is None:
            raise NodeprobeError("mode='mean' needs means (the eval-set mean of each node)")
        mu = float_array(means, "means", 1, rd)
        if mu.shape != (d,):
            raise NodeprobeError(f"means has shape {tuple(mu.shape)}, expected ({d},)")
        base = (torch.from_numpy(bn) + torch.from_numpy(Wn) @ torch.from_numpy(mu)).numpy()
    return ReadoutArrays(Wn, bn, Xn, mu, base, rd)


def prepare_labelled(W, b, X, y, mode: Mode = "zero", means=None,
                     n_classes: int | None = None) -> tuple[ReadoutArrays, np.ndarray]:
    """:func:`prepare_readout` plus the labels ``y`` (int64, one per item of X, at least one item).

    ``n_classes`` (≥ K, default K): the labels may name classes ``K … n_classes − 1`` that have no
    row in W — classes a block readout never saw in training (METHODS §2: logit −∞), which no unit
    can predict.

    Example:
        >>> import numpy as np
        >>> r, y = prepare_labelled(np.eye(2), np.zeros(2), np.ones((3, 2)), [0, 1, 1])
        >>> r.X.shape, y.tolist()
        ((3, 2), [0, 1, 1])
    """
    r = prepare_readout(W, b, X, mode, means)
    N = r.X.shape[0]
    K = r.W.shape[0]
    if n_classes is not None and (isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer))
                                  or n_classes < K):
        raise NodeprobeError(f"n_classes={n_classes!r}: expected an integer ≥ {K} (the rows of W)")
    yt = labels(y, "y", K if n_classes is None else int(n_classes))
    if yt.size != N or N == 0:
        raise NodeprobeError(f"y has {yt.size} items but X has {N} (need ≥ 1)")
    return r, yt


def _node_bias(r: ReadoutArrays, i: int) -> np.ndarray:
    if r.means is None:
        return r.base
    return r.base - r.W[:, i] * r.means[i]


def set_bias(r: ReadoutArrays, nodes: np.ndarray) -> np.ndarray:
    """The bias ``b'`` of node set ``nodes`` (a :func:`node_set` array) in the reference dtype.

    Example:
        >>> import numpy as np
        >>> r = prepare_readout(np.array([[1.0, 2.0], [0.0, 1.0]]), np.zeros(2), np.zeros((1, 2)),
        ...                     "mean", np.array([1.0, 3.0]))
        >>> set_bias(r, np.array([0])).tolist()
        [6.0, 3.0]
    """
    if r.means is None:
        return r.base
    if nodes.size == 1:
        return _node_bias(r, int(nodes[0]))
    return (torch.from_numpy(r.base) - torch.from_numpy(r.W[:, nodes]) @ torch.from_numpy(r.means[nodes])).numpy()


def node_set(nodes, d: int) -> np.ndarray:
    """Validated node indices (int64, distinct, in ``[0, d)``, at least one) of a node set.

    Example:
        >>> node_set([3, 0], d=4).tolist()
        [3, 0]
    """
    arr = np.asarray(to_numpy(nodes)).reshape(-1)
    if arr.size and (arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer)):
        raise NodeprobeError(f"nodes: expected integer node indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size == 0:
        raise NodeprobeError("nodes: the node set is empty")
    if arr.min() < 0 or arr.max() >= d:
        raise NodeprobeError(f"nodes: indices must lie in [0, {d}), got range [{arr.min()}, {arr.max()}]")
    if np.unique(arr).size != arr.size:
        raise NodeprobeError("nodes: repeated node index")
    return arr


def _prepare_set(W, b, X, nodes, mode, means) -> tuple[ReadoutArrays, np.ndarray]:
    r = prepare_readout(W, b, X, mode, means)
    return r, node_set(nodes, r.W.shape[1])


def readout_bias(
    W: Float[Tensor, "K d"],
    b: Float[Tensor, "K"],
    nodes: Sequence[int] | Int[Tensor, "n"],
    mode: Mode = "zero",
    means: Float[Tensor, "d"] | None = None,
) -> Float[Tensor, "K"]:
    """The bias ``b'`` of node set S (see the module docstring for the formula).

    Example:
        >>> import torch
        >>> W = torch.tensor([[1.0, 2.0], [0.0, 1.0]]); b = torch.zeros(2)
        >>> readout_bias(W, b, [0], "mean", torch.tensor([1.0, 3.0])).tolist()   # b + W[:, 1]·μ_1
        [6.0, 3.0]
    """
    r, S = _prepare_set(W, b, np.zeros((1, np.shape(W)[1]), np.float32), nodes, mode, means)
    return torch.from_numpy(np.array(set_bias(r, S)))


# --------------------------------------------------------------------------------------------
# node sets: dense
# --------------------------------------------------------------------------------------------


def readout_logits(
    W: Float[Tensor, "K d"],
    b: Float[Tensor, "K"],
    X: Float[Tensor, "N d"],
    nodes: Sequence[int] | Int[Tensor, "n"],
    mode: Mode = "zero",
    means: Float[Tensor, "d"] | None = None,
) -> Float[Tensor, "N K"]:
    """Logits of node set S: ``X[:, S] @ W[:, S].T + b'`` (dense, numpy BLAS in the reference
    dtype; for large N·K use :func:`readout_predictions`, which argmaxes the same logits chunk by
    chunk).

    Example:
        >>> import torch
        >>> W = torch.tensor([[1.0, 0.0], [0.0, 1.0]]); b = torch.zeros(2)
        >>> readout_logits(W, b, torch.tensor([[2.0, 5.0]]), [0]).tolist()
        [[2.0, 0.0]]
    """
    r, S = _prepare_set(W, b, X, nodes, mode, means)
    return torch.from_numpy(np.ascontiguousarray(r.X[:, S]) @ np.ascontiguousarray(r.W[:, S].T) + set_bias(r, S))


def set_predictions(r: ReadoutArrays, S: np.ndarray, chunk_cells: int = _DENSE_CELLS) -> np.ndarray:
    """Predictions (int64 [N], ties → lowest index) of node set ``S`` on prepared arrays ``r``,
    chunked over items so at most ``chunk_cells`` logits exist at a time.

    Example:
        >>> import numpy as np
        >>> r = prepare_readout(np.eye(2), np.zeros(2), np.array([[2.0, 5.0], [0.0, 0.0]]))
        >>> set_predictions(r, np.array([0, 1])).tolist()
        [1, 0]
    """
    K = r.W.shape[0]
    bias = set_bias(r, S)
    WsT = np.ascontiguousarray(r.W[:, S].T)
    Xs = np.ascontiguousarray(r.X[:, S])
    out = np.empty(r.X.shape[0], dtype=np.int64)
    step = max(1, chunk_cells // K)
    for n0 in range(0, r.X.shape[0], step):
        out[n0 : n0 + step] = argmax_lowest(Xs[n0 : n0 + step] @ WsT + bias)
    return out


def readout_predictions(
    W: Float[Tensor, "K d"],
    b: Float[Tensor, "K"],
    X: Float[Tensor, "N d"],
    nodes: Sequence[int] | Int[Tensor, "n"],
    mode: Mode = "zero",
    means: Float[Tensor, "d"] | None = None,
    chunk_cells: int = _DENSE_CELLS,
) -> Int[Tensor, "N"]:
    """Argmax (ties → lowest index) of :func:`readout_logits`, chunked over items so at most
    ``chunk_cells`` logits exist at a time.

    Example:
        >>> import torch
        >>> W = torch.tensor([[1.0, 0.0], [0.0, 1.0]]); b = torch.zeros(2)
        >>> readout_predictions(W, b, torch.tensor([[2.0, 5.0], [0.0, 0.0]]), [0, 1]).tolist()
        [1, 0]
    """
    r, S = _prepare_set(W, b, X, nodes, mode, means)
    return torch.from_numpy(set_predictions(r, S, chunk_cells))


def dense_node_predictions(
    W: Float[Tensor, "K d"],
    b: Float[Tensor, "K"],
    X: Float[Tensor, "N d"],
    mode: Mode = "zero",
    means: Float[Tensor, "d"] | None = None,
    chunk_cells: int = _DENSE_CELLS,
) -> Int[Tensor, "N d"]:
    """Single-node predictions by brute force (the benchmark baseline and the definition):
    ``argmax_k (X[:, i, None] * W[None, :, i] + b'_i)`` for every node i, chunked in torch.

    Example:
        >>> import torch
        >>> W = torch.tensor([[1.0, 0.0], [-1.0, 2.0]]); b = torch.tensor([0.0, 0.5])
        >>> dense_node_predictions(W, b, torch.tensor([[1.0, 1.0], [-1.0, -1.0]])).tolist()
        [[0, 1], [1, 0]]
    """
    Wn, _, Xn, mu, base, _ = prepare_readout(W, b, X, mode, means)
    K, d = Wn.shape
    N = Xn.shape[0]
    Wt = torch.from_numpy(np.ascontiguousarray(Wn.T))  # [d, K]
    if mu is None:
        Bt = torch.from_numpy(base)[None, :].expand(d, K)
    else:
        Bt = torch.from_numpy(base)[None, :] - Wt * torch.from_numpy(mu)[:, None]
    Xt = torch.from_numpy(Xn)
    out = torch.empty((N, d), dtype=torch.int64)
    node_step = max(1, min(d, _DENSE_CELLS // K))
    for i0 in range(0, d, node_step):
        i1 = min(d, i0 + node_step)
        item_step = max(1, chunk_cells // (K * (i1 - i0)))
        for n0 in range(0, N, item_step):
            vals = Xt[n0 : n0 + item_step, i0:i1, None] * Wt[None, i0:i1, :] + Bt[None, i0:i1, :]
            out[n0 : n0 + item_step, i0:i1] = argmax_lowest(vals)
    return out


# --------------------------------------------------------------------------------------------
# single nodes: envelope + binary search
# --------------------------------------------------------------------------------------------


@dataclass
class NodeLines:
    """Both envelope layers of one node's K lines (positions = class ids).

    ``env1``/``point1``/``bp1``: the upper envelope (left to right), its point-only flags and
    breakpoints; ``env2``/``bp2``: the upper envelope of the remaining lines (the second layer).
    """

    env1: np.ndarray
    point1: np.ndarray
    bp1: np.ndarray
    env2: np.ndarray
    bp2: np.ndarray


def node_lines(s64: np.ndarray, c64: np.ndarray) -> NodeLines:
    """Both envelope layers of the lines ``s64[k]·x + c64[k]`` (float64 arrays).

    Example:
        >>> import numpy as np
        >>> nl = node_lines(np.array([-1.0, 0.0, 1.0]), np.array([0.0, -1.0, 0.0]))
        >>> nl.env1.tolist(), nl.env2.tolist()
        ([0, 2], [1])
    """
    order = _sorted_lines(s64, c64)
    env1, point1 = _envelope_from_sorted(order, s64, c64)
    rest = order[~np.isin(order, env1)]
    env2, _ = _envelope_from_sorted(rest, s64, c64)
    return NodeLines(env1, point1, _breakpoints(env1, s64, c64), env2, _breakpoints(env2, s64, c64))


def _max_at(x64, pos_arr, bp, s64, c64, offsets) -> np.ndarray:
    """max over envelope positions (searchsorted(bp, x) + offsets) of the float64 line values."""
    m = pos_arr.size
    out = np.full(x64.shape, -np.inf)
    if m == 0:
        return out
    p = np.searchsorted(bp, x64)
    for off in offsets:
        q = p + off
        valid = (q >= 0) & (q < m)
        cls = pos_arr[np.clip(q, 0, m - 1)]
        v = x64 * s64[cls] + c64[cls]
        out = np.maximum(out, np.where(valid, v, -np.inf))
    return out


def predict_node(x: np.ndarray, s: np.ndarray, c: np.ndarray, lines: NodeLines | None = None,
                 certify: bool = True) -> tuple[np.ndarray, int]:
    """Predictions of one node: ``argmax_k (x·s[k] + c[k])`` (ties → lowest k) for the items
    ``x``, via the envelope (module docstring); ``x``, ``s``, ``c`` are arrays in the reference
    dtype.  Returns (predictions int64 [N], how many x values needed the dense fallback).

    Example:
        >>> import numpy as np
        >>> pred, n_dense = predict_node(np.array([-2.0, 0.5, 2.0]), np.array([-1.0, 0.0, 1.0]),
        ...                              np.array([0.0, -1.0, 0.0]))
        >>> pred.tolist(), n_dense
        ([0, 2, 2], 0)
    """
    rd = x.dtype
    K = s.size
    s64, c64 = s.astype(np.float64), c.astype(np.float64)
    if lines is None:
        lines = node_lines(s64, c64)
    x64 = x.astype(np.float64)
    env1, bp1 = lines.env1, lines.bp1
    m1 = env1.size
    p = np.searchsorted(bp1, x64)
    cand = env1[np.clip(p[:, None] + np.array([-1, 0, 1]), 0, m1 - 1)]  # [N, 3] class ids
    v = x[:, None] * s[cand] + c[cand]  # the reference arithmetic
    best = v.max(axis=1)
    win = np.where(v == best[:, None], cand, K).min(axis=1)
    if not certify:
        return win, 0
    out = _max_at(x64, env1, bp1, s64, c64, (-2, 2))
    out = np.maximum(out, _max_at(x64, lines.env2, lines.bp2, s64, c64, (-1, 0, 1)))
    u = float(np.finfo(rd).eps) / 2
    scale = np.abs(x64) * float(np.abs(s64).max()) + float(np.abs(c64).max())
    delta = 4.0 * (u + 2.0**-53) * scale + 4.0 * float(np.finfo(rd).tiny)
    unsure = ~(out + delta < best.astype(np.float64)) | ~np.isfinite(best)
    n_dense = 0
    if unsure.any():
        xu, inv = np.unique(x[unsure], return_inverse=True)
        res = np.empty(xu.size, dtype=np.int64)
        step = max(1, _DENSE_CELLS // K)
        for a in range(0, xu.size, step):
            vals = xu[a : a + step, None] * s[None, :] + c[None, :]
            res[a : a + step] = np.argmax(vals, axis=1)  # numpy: first occurrence of the max
        win[unsure] = res[inv.reshape(-1)]
        n_dense = int(xu.size)
    return win, n_dense


class NodePrediction(NamedTuple):
    """One node's lines, envelope layers and predictions (see :func:`iter_node_predictions`)."""

    node: int
    slopes: np.ndarray  # W[:, i], reference dtype
    intercepts: np.ndarray  # b'_i, reference dtype
    lines: NodeLines
    pred: np.ndarray  # int64 [N]
    n_dense: int  # x values that needed the dense fallback


def iter_node_predictions(r: ReadoutArrays, certify: bool = True) -> Iterator[NodePrediction]:
    """For every node i of prepared arrays ``r``, in order: its :class:`NodePrediction`.

    Example:
        >>> import numpy as np
        >>> r = prepare_readout(np.array([[1.0, 0.0], [-1.0, 2.0]]), np.array([0.0, 0.5]),
        ...                     np.array([[1.0, 1.0], [-1.0, -1.0]]))
        >>> [(p.node, p.pred.tolist()) for p in iter_node_predictions(r)]
        [(0, [0, 1]), (1, [1, 0])]
    """
    for i in range(r.W.shape[1]):
        s = np.ascontiguousarray(r.W[:, i])
        c = _node_bias(r, i)
        lines = node_lines(s.astype(np.float64), c.astype(np.float64))
        pred, nd = predict_node(np.ascontiguousarray(r.X[:, i]), s, c, lines, certify)
        yield NodePrediction(i, s, c, lines, pred, nd)


def _node_predictions_impl(W, b, X, mode, means, certify: bool = True):
    """(predictions [N, d] int64, number of x values that needed the dense fallback)."""
    r = prepare_readout(W, b, X, mode, means)
    preds = np.empty(r.X.shape, dtype=np.int64)
    n_dense = 0
    for i, _, _, _, pred, nd in iter_node_predictions(r, certify):
        preds[:, i] = pred
        n_dense += nd
    return preds, n_dense


def node_predictions(
    W: Float[Tensor, "K d"],
    b: Float[Tensor, "K"],
    X: Float[Tensor, "N d"],
    mode: Mode = "zero",
    means: Float[Tensor, "d"] | None = None,
) -> Int[Tensor, "N d"]:
    """Prediction of every single node for every item: column i is
    ``argmax_k (W[k, i]·X[n, i] + b'_k)`` with ties → lowest index, computed from the upper
    envelope of the K lines of node i and a binary search per item (never an O(N·K) pass per
    node); equal to :func:`dense_node_predictions` exactly (see the module docstring).

    Example:
        >>> import torch
        >>> W = torch.tensor([[1.0, 0.0], [-1.0, 2.0]]); b = torch.tensor([0.0, 0.5])
        >>> node_predictions(W, b, torch.tensor([[1.0, 1.0], [-1.0, -1.0]])).tolist()
        [[0, 1], [1, 0]]
    """
    preds, _ = _node_predictions_impl(W, b, X, mode, means)
    return torch.from_numpy(preds)
