"""Reachable classes against independent checkers, and the bound acc ≤ UB.

Checkers (none shares a code path with the implementation under test):
* n = 1: exact rational enumeration of every pairwise crossing (Fractions);
* unbounded, n ≥ 2: the Motzkin alternative — k is unreachable iff some convex combination of the
  other lines has the same slope vector and an intercept ≥ b_k (a feasibility LP over λ), whereas
  the implementation uses qhull (n = 2, 3) or a primal LP over (x, t);
* box: the minimax dual — k is reachable iff min over λ in the simplex of
  max_{x ∈ box} Σ_j λ_j ((w_k − w_j)·x + b_k − b_j) > 0, the inner max in closed form;
* plus a sampling lower bound: every class that wins a random point by a clear margin must be
  reachable.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from nodeprobe.analysis.hull import hull_bound, hull_bound_single_nodes, reachable_classes
from nodeprobe.errors import NodeprobeError


def others_of(W, b, k):
    """Lines k competes with: all j ≠ k except identical lines with a higher index."""
    same = np.all(W == W[k], axis=1) & (b == b[k])
    return [j for j in range(len(b)) if j != k and not (same[j] and j > k)]


def motzkin_reachable(W, b) -> tuple[int, ...]:
    out = []
    for k in range(len(b)):
        J = others_of(W, b, k)
        if not J:
            out.append(k)
            continue
        D = (W[J] - W[k]).T  # n × m
        A_eq = np.vstack([D, np.ones(len(J))])
        b_eq = np.concatenate([np.zeros(W.shape[1]), [1.0]])
        A_ub = -(b[J] - b[k])[None, :]  # Σ λ_j (b_j − b_k) ≥ 0
        res = linprog(np.zeros(len(J)), A_ub=A_ub, b_ub=[1e-9], A_eq=A_eq, b_eq=b_eq, method="highs")
        if res.status == 2:  # infeasible: no dominating combination
            out.append(k)
    return tuple(out)


def minimax_reachable(W, b, lo, hi) -> tuple[int, ...]:
    n = W.shape[1]
    out = []
    for k in range(len(b)):
        J = others_of(W, b, k)
        if not J:
            out.append(k)
            continue
        m = len(J)
        A = (W[k] - W[J]).T  # a(λ) = A λ  (n × m)
        beta = b[k] - b[J]
        # variables λ (m), z (n): minimise β·λ + Σ z  s.t. z_i ≥ lo_i a_i, z_i ≥ hi_i a_i
        cost = np.concatenate([beta, np.ones(n)])
        rows = [np.hstack([lo[i] * A[i], -np.eye(n)[i]]) for i in range(n)]
        rows += [np.hstack([hi[i] * A[i], -np.eye(n)[i]]) for i in range(n)]
        A_eq = np.concatenate([np.ones(m), np.zeros(n)])[None, :]
        res = linprog(cost, A_ub=np.array(rows), b_ub=np.zeros(2 * n), A_eq=A_eq, b_eq=[1.0],
                      bounds=[(0, None)] * m + [(None, None)] * n, method="highs")
        assert res.status == 0
        if res.fun > 1e-7:
            out.append(k)
    return tuple(out)


def sampled_winners(W, b, pts, margin=1e-6) -> set[int]:
    V = pts @ W.T + b
    srt = np.sort(V, axis=1)
    ok = srt[:, -1] - srt[:, -2] > margin
    return set(np.argmax(V[ok], axis=1).tolist())


def exact_1d(slopes, icpts, interval=None) -> tuple[int, ...]:
    lines = [(Fraction(float(s)), Fraction(float(c))) for s, c in zip(slopes, icpts)]
    crit = {(cb - ca) / (sa - sb) for a, (sa, ca) in enumerate(lines) for (sb, cb) in lines[a + 1 :] if sa != sb}
    if interval is not None:
        lo, hi = (Fraction(float(v)) for v in interval)
        pts = sorted({x for x in crit if lo < x < hi} | {lo, hi})
        mids = [lo] if lo == hi else [(u + v) / 2 for u, v in zip(pts, pts[1:])]
    else:
        pts = sorted(crit) or [Fraction(0)]
        mids = [pts[0] - 1, pts[-1] + 1] + [(u + v) / 2 for u, v in zip(pts, pts[1:])]
    win = set()
    for x in mids:
        vals = [s * x + c for s, c in lines]
        win.add(vals.index(max(vals)))
    return tuple(sorted(win))


@pytest.mark.parametrize("seed", range(6))
def test_n1_against_exact_enumeration(seed):
    rng = np.random.default_rng(seed)
    K = int(rng.integers(2, 12))
    if seed % 2:
        w, c = rng.integers(-3, 4, K).astype(float), rng.integers(-3, 4, K).astype(float)
        lo = float(rng.integers(-3, 2))
        box = (lo, lo + float(rng.integers(0, 3)))
    else:
        w, c = rng.normal(size=K).astype(np.float32), rng.normal(size=K).astype(np.float32)
        lo = float(np.float32(rng.normal()))
        box = (lo, float(np.float32(lo + rng.uniform(0, 2))))
    assert reachable_classes(w[:, None], c) == exact_1d(w, c)
    assert reachable_classes(w[:, None], c, box=([box[0]], [box[1]])) == exact_1d(w, c, box)


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("seed", range(5))
def test_n23_random_against_dual_checkers(n, seed):
    rng = np.random.default_rng(100 * n + seed)
    K = int(rng.integers(4, 14))
    W = rng.normal(size=(K, n))
    b = rng.normal(size=K)
    got = reachable_classes(W, b)
    assert got == motzkin_reachable(W, b)
    far = rng.normal(size=(4000, n)) * rng.choice([0.3, 1, 3, 10, 100], size=(4000, 1))
    assert sampled_winners(W, b, far) <= set(got)
    lo = rng.normal(size=n) - 0.3
    hi = lo + rng.uniform(0.1, 1.5, size=n)
    got_box = reachable_classes(W, b, box=(lo, hi))
    assert got_box == minimax_reachable(W, b, lo, hi)
    inside = lo + rng.random((4000, n)) * (hi - lo)
    assert sampled_winners(W, b, inside) <= set(got_box) <= set(got)


@pytest.mark.parametrize("seed", range(6))
def test_degenerate_integer_instances(seed):
    """Duplicates, coplanar and collinear lifted points: qhull's degenerate cases."""
    rng = np.random.default_rng(200 + seed)
    n = 2 + seed % 2
    K = int(rng.integers(3, 12))
    W = rng.integers(-1, 2, size=(K, n)).astype(float)
    b = rng.integers(-1, 2, size=K).astype(float)
    if seed % 3 == 0:
        W[:, 0] = 0.0  # lifted points not full-dimensional
    assert reachable_classes(W, b) == motzkin_reachable(W, b)
    lo, hi = -np.ones(n), np.ones(n)
    assert reachable_classes(W, b, box=(lo, hi)) == minimax_reachable(W, b, lo, hi)


def test_lp_path_for_larger_n():
    rng = np.random.default_rng(7)
    W = rng.normal(size=(9, 5))
    b = rng.normal(size=9) * 2
    W[8] = W[2]
    b[8] = b[2]  # an identical copy: only the lower index counts
    got = reachable_classes(W, b)
    assert got == motzkin_reachable(W, b) and 8 not in got
    lo, hi = -0.2 * np.ones(5), 0.3 * np.ones(5)
    assert reachable_classes(W, b, box=(lo, hi)) == minimax_reachable(W, b, lo, hi)


def test_identical_lines_lowest_index_only():
    W = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, -1.0], [0.0, 1.0]])
    b = np.zeros(5)
    assert reachable_classes(W, b) == (0, 1, 3)
    assert reachable_classes(W[:, :1], b) == (0, 3)  # n = 1: slopes 1, 0, 1, -1, 0
    # a single point box: the lowest-index argmax there
    assert reachable_classes(W, b, box=([1.0, 1.0], [1.0, 1.0])) == (0,)


def test_two_node_hand_bound():
    # class 1 needs x0 + x1 > 1.5: neither node reaches it alone within the data range
    W = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([0.0, -1.5])
    X = torch.tensor([[1.0, 1.0]] * 10 + [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]] * 10)
    y = torch.tensor([1] * 10 + [0] * 30)
    pair = hull_bound(W, b, X, y, [0, 1])
    assert pair.reachable_unbounded == (0, 1) and pair.reachable_data == (0, 1)
    assert pair.acc == 1.0 and pair.ub_data == 1.0 and pair.efficiency_data == 1.0
    assert pair.n_learned == 1 and pair.n_outputs == 2
    one = hull_bound(W, b, X, y, [0])
    assert one.reachable_unbounded == (0, 1) and one.reachable_data == (0,)
    assert one.acc == 0.75 and one.ub_unbounded == 1.0 and one.ub_data == 0.75
    singles = hull_bound_single_nodes(W, b, X, y)
    assert singles.reachable_data == [(0,), (0,)] and singles.ub_data.tolist() == [0.75, 0.75]
    assert singles.acc.tolist() == [0.75, 0.75] and singles.n_learned.tolist() == [0, 0]


def test_single_nodes_match_node_set_of_one():
    rng = np.random.default_rng(3)
    K, N, d = 12, 200, 6
    W = torch.from_numpy(rng.normal(size=(K, d)).astype(np.float32))
    b = torch.from_numpy(rng.normal(size=K).astype(np.float32))
    X = torch.from_numpy(rng.normal(size=(N, d)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, K, N))
    mu = X.mean(0)
    singles = hull_bound_single_nodes(W, b, X, y, "mean", mu, top=3)
    for i in range(d):
        hb = hull_bound(W, b, X, y, [i], "mean", mu)
        assert hb.reachable_unbounded == singles.reachable_unbounded[i]
        assert hb.reachable_data == singles.reachable_data[i]
        assert hb.acc == singles.acc[i] and hb.ub_data == singles.ub_data[i]
    gaps = singles.gap_data
    assert list(singles.farthest_below) == sorted(range(d), key=lambda i: (-gaps[i], i))[:3]


def test_not_computed_when_too_many_lps():
    rng = np.random.default_rng(4)
    K, d = 40, 6
    W, b = rng.normal(size=(K, d)), rng.normal(size=K)
    X, y = rng.normal(size=(3, d)), rng.integers(0, K, 3)
    hb = hull_bound(W, b, X, y, list(range(5)), max_lp=5)
    assert hb.reachable_unbounded is None and hb.ub_unbounded is None and hb.efficiency_data is None
    assert hb.acc >= 0 and hb.n_outputs >= 1


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    K=st.integers(2, 7),
    n=st.integers(1, 3),
    N=st.integers(1, 30),
    integer=st.booleans(),
    mode=st.sampled_from(["zero", "mean"]),
)
def test_acc_never_exceeds_bound(seed, K, n, N, integer, mode):
    rng = np.random.default_rng(seed)
    d = n + 1
    if integer:  # tie-heavy
        W = rng.integers(-2, 3, (K, d)).astype(np.float32)
        b = rng.integers(-2, 3, K).astype(np.float32)
        X = rng.integers(-2, 3, (N, d)).astype(np.float32)
    else:
        W = rng.normal(size=(K, d)).astype(np.float32)
        b = rng.normal(size=K).astype(np.float32)
        X = rng.normal(size=(N, d)).astype(np.float32)
    y = rng.integers(0, K, N)
    nodes = sorted(rng.choice(d, n, replace=False).tolist())
    hb = hull_bound(W, b, X, y, nodes, mode, X.mean(0))
    assert hb.acc <= hb.ub_data <= hb.ub_unbounded <= 1.0
    assert hb.n_learned <= hb.n_outputs
    assert set(hb.reachable_data) <= set(hb.reachable_unbounded)
    if not integer:  # continuous data: every output is a strictly reachable class
        assert hb.outputs_unreached_data == () and hb.outputs_unreached_unbounded == ()
        assert hb.n_outputs <= hb.n_reachable_data


def test_user_errors():
    W, b = np.ones((3, 2)), np.zeros(3)
    with pytest.raises(NodeprobeError, match="box"):
        reachable_classes(W, b, box=([1.0, 0.0], [0.0, 0.0]))
    with pytest.raises(NodeprobeError, match="length"):
        reachable_classes(W, b, box=([0.0], [1.0]))
    with pytest.raises(NodeprobeError, match="shape"):
        reachable_classes(W, np.zeros(2))
    with pytest.raises(NodeprobeError, match="items"):
        hull_bound(W, b, np.zeros((4, 2)), [0, 1], [0])


def test_a_one_point_data_range_is_reached_unbounded_too():
    # found by the property test above: all items at x = 0, where classes 1, 2, 4, 5 tie and the
    # argmax (ties → lowest) outputs class 1, which wins nowhere strictly.  The unbounded bound must
    # still cover it (the data range lies in ℝ): acc = 1 ≤ ub_data ≤ ub_unbounded.
    W = np.array([[0, 0], [0, -1], [2, -1], [1, -1], [0, 2], [-2, 1]], dtype=np.float32)
    b = np.array([0, 1, 1, -1, 1, 1], dtype=np.float32)
    X = np.array([[0, -2]], dtype=np.float32)
    hb = hull_bound(W, b, X, np.array([1]), [0], "zero", X.mean(0))
    assert hb.acc == 1.0 and hb.reachable_data == (1,)
    assert set(hb.reachable_unbounded) == {1, 2, 5} and hb.ub_unbounded == hb.ub_data == 1.0


# --------------------------------------------------------------------------------------------
# classes=: deciding reachability for a subset of rows (class sampling for large K)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 4, 5])
@pytest.mark.parametrize("seed", range(4))
def test_class_subset_is_the_full_answer_restricted(n, seed):
    """Against brute force: the full-class LP/qhull answer intersected with the tested rows."""
    rng = np.random.default_rng(100 * n + seed)
    K, d, N = 25, 6, 40
    W, b = rng.normal(size=(K, d)), rng.normal(size=K)
    W[7], b[7] = W[3], b[3]  # an identical line: the higher index is never reachable
    X, y = rng.normal(size=(N, d)), rng.integers(0, K + 1, N)  # label K: a class with no row
    S = sorted(rng.choice(d, size=n, replace=False).tolist())
    full = hull_bound(W, b, X, y, S, n_classes=K + 1)
    assert full.tested is None
    cand = rng.choice(K, size=8, replace=False).tolist() + [7, 3]
    part = hull_bound(W, b, X, y, S, n_classes=K + 1, classes=cand)
    out = {int(k) for k in np.unique(np.argmax(X[:, S] @ W[:, S].T + b, axis=1))}
    tested = set(part.tested)
    assert tested == set(cand) | out
    for fr, pr in ((full.reachable_unbounded, part.reachable_unbounded), (full.reachable_data, part.reachable_data)):
        assert pr == tuple(k for k in fr if k in tested)
    assert 7 not in part.reachable_unbounded
    Nk = np.bincount(y, minlength=K + 1)
    for pr, ub in ((part.reachable_unbounded, part.ub_unbounded), (part.reachable_data, part.ub_data)):
        assert ub == pytest.approx(Nk[sorted(set(pr) | out)].sum() / N)
        assert part.acc <= ub + 1e-12
    assert part.ub_data <= full.ub_data + 1e-12 and part.ub_unbounded <= full.ub_unbounded + 1e-12
    assert part.acc == full.acc and part.n_outputs == full.n_outputs


def test_n_other_takes_the_first_non_outputs_in_order():
    rng = np.random.default_rng(9)
    K, d, N = 30, 5, 20
    W, b = rng.normal(size=(K, d)), rng.normal(size=K)
    X, y = rng.normal(size=(N, d)), rng.integers(0, K, N)
    perm = rng.permutation(K)
    hb = hull_bound(W, b, X, y, [0, 1, 2, 3], classes=perm, n_other=4)
    out = set(np.unique(np.argmax(X[:, :4] @ W[:, :4].T + b, axis=1)).tolist())
    others = [int(k) for k in perm if k not in out][:4]
    assert set(hb.tested) == out | set(others)
    full = hull_bound(W, b, X, y, [0, 1, 2, 3])
    assert hb.reachable_data == tuple(k for k in full.reachable_data if k in set(hb.tested))
    # every row asked for: the same as no restriction
    assert hull_bound(W, b, X, y, [0, 1, 2, 3], classes=perm, n_other=K).tested is None
    # a single node is exact over all classes: the restriction does not apply
    assert hull_bound(W, b, X, y, [2], classes=[0], n_other=0).tested is None


def test_class_subset_user_errors():
    W, b = np.eye(3), np.zeros(3)
    X, y = np.eye(3), np.array([0, 1, 2])
    with pytest.raises(NodeprobeError, match="row numbers"):
        hull_bound(W, b, X, y, [0, 1], classes=[3])
    with pytest.raises(NodeprobeError, match="n_other needs classes"):
        hull_bound(W, b, X, y, [0, 1], n_other=2)
    with pytest.raises(NodeprobeError, match="n_other"):
        hull_bound(W, b, X, y, [0, 1], classes=[0], n_other=-1)
