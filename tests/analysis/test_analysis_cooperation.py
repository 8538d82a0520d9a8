"""Cooperation gain, crossover and determinism (METHODS §5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nodeprobe.analysis.confusion import unit_stats
from nodeprobe.analysis.cooperation import DEFAULT_GRID, cooperation
from nodeprobe.analysis.readout import readout_predictions
from nodeprobe.errors import NodeprobeError


def pair_case():
    """Class 1 needs x0 + x1 > 1.5: neither node alone ever predicts it, the pair learns it."""
    W = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([0.0, -1.5])
    X = torch.tensor([[1.0, 1.0]] * 10 + [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]] * 10)
    y = torch.tensor([1] * 10 + [0] * 30)
    return W, b, X, y


def test_pair_learns_what_neither_node_learns():
    W, b, X, y = pair_case()
    res = cooperation(W, b, X, y, R=3, grid=[1, 2])
    assert res.single_learned == ((), ())
    r1, r2 = res.rows
    assert (r1.n, r2.n) == (1, 2)
    # pair: class 1 recall 1, precision 1, lift 1/(10/40) = 4 -> learned; class 0 lift 4/3 -> not
    assert r2.n_learned.mean == 1.0 and r2.sum.mean == 0.0 and r2.union.mean == 0.0
    assert r2.gain == r2.union_gain and r2.gain.mean == 1.0 and r2.gain.std == 0.0
    assert r2.acc.mean == 1.0 and r2.precision.mean == 1.0 and r2.inv_outputs.mean == 0.5
    # singles: always class 0 -> acc 3/4, P = precision of class 0 = 30/40, 1/|O| = 1
    assert r1.acc.mean == 0.75 and r1.precision.mean == 0.75 and r1.inv_outputs.mean == 1.0
    assert r1.gain.mean == 0.0
    assert res.first_positive_gain == res.last_positive_gain == 2
    assert res.p_min_n == 1  # retired v1 figure: mean P 0.75 at n=1, 1.0 at n=2
    assert res.n_star is None and not res.crossover_found  # two grid points: none interior
    # no single node learns anything: U(S) = ∅ for every set, Rt undefined and counted
    assert all(s.retained_recall is None for s in res.subsets)
    assert r1.retained_recall.mean is None and r1.retained_recall.std is None and r1.n_no_union == 3
    assert r2.n_no_union == 3 and r2.learned_per_node.mean == 0.5 and r1.learned_per_node.mean == 0.0
    assert all(s.nodes == (0, 1) for s in res.subsets if s.n == 2)


def test_grid_is_capped_and_settings_recorded():
    W, b, X, y = pair_case()
    res = cooperation(W, b, X, y, R=2)
    assert res.settings["grid"] == (1, 2) and [r.n for r in res.rows] == [1, 2]
    assert res.settings["R"] == 2 and res.settings["seed"] == 0 and res.settings["mode"] == "zero"
    assert DEFAULT_GRID[-1] == 768 and len(DEFAULT_GRID) == 19


def random_case(seed=0, K=6, N=150, d=20):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, N)
    proto = rng.normal(size=(K, d))
    X = (proto[y] * 0.8 + rng.normal(size=(N, d))).astype(np.float32)
    W = np.stack([X[y == k].mean(0) for k in range(K)]).astype(np.float32) * 3
    b = rng.normal(size=K).astype(np.float32) * 0.1
    return torch.from_numpy(W), torch.from_numpy(b), torch.from_numpy(X), torch.from_numpy(y)


def test_same_seed_identical_results_other_seed_other_subsets():
    W, b, X, y = random_case()
    kw = dict(R=5, grid=[1, 2, 3, 5, 8, 20, 64], mode="mean", means=X.mean(0))
    a = cooperation(W, b, X, y, seed=7, **kw)
    c = cooperation(W, b, X, y, seed=7, **kw)
    assert a.rows == c.rows and a.subsets == c.subsets and a.n_star == c.n_star and a.p_min_n == c.p_min_n
    other = cooperation(W, b, X, y, seed=8, **kw)
    assert [s.nodes for s in other.subsets] != [s.nodes for s in a.subsets]
    assert [r.n for r in a.rows] == [1, 2, 3, 5, 8, 20]  # 64 capped at d = 20


def test_subset_quantities_match_direct_computation():
    W, b, X, y = random_case(seed=1)
    res = cooperation(W, b, X, y, R=4, grid=[1, 4, 9], seed=3)
    K = W.shape[0]
    for s in res.subsets:
        assert len(set(s.nodes)) == s.n == len(s.nodes)
        pred = readout_predictions(W, b, X, list(s.nodes))
        st = unit_stats(y, pred, K)
        assert s.acc == st.acc and s.n_learned == st.n_learned and s.n_outputs == st.n_outputs
        assert s.precision == pytest.approx(st.mean_precision)
        lam = [res.single_learned[i] for i in s.nodes]
        assert s.sum == sum(map(len, lam)) and s.union == len(set().union(*lam))
        assert s.gain == s.n_learned - s.sum and s.union_gain == s.n_learned - s.union
    for row in res.rows:
        vals = np.array([s.acc for s in res.subsets if s.n == row.n])
        assert row.n_subsets == 4
        assert row.acc.mean == pytest.approx(vals.mean()) and row.acc.std == pytest.approx(vals.std())
    assert res.p_min_n == min(res.rows, key=lambda r: (r.precision.mean, r.n)).n


def test_user_errors():
    W, b, X, y = pair_case()
    with pytest.raises(NodeprobeError, match="R="):
        cooperation(W, b, X, y, R=0)
    with pytest.raises(NodeprobeError, match="grid"):
        cooperation(W, b, X, y, grid=[0, 1])
    with pytest.raises(NodeprobeError, match="items"):
        cooperation(W, b, X, y[:5])


# ---------------------------------------------------------------------- v2: retained recall, crossover
def _recall_by_hand(y, pred, k):
    y, pred = y.tolist(), pred.tolist()
    mine = [p for t, p in zip(y, pred) if t == k]
    return sum(1 for p in mine if p == k) / len(mine)


def test_retained_recall_matches_a_hand_computation():
    W, b, X, y = random_case(seed=0, K=5, N=120, d=9)
    res = cooperation(W, b, X, y, R=12, grid=[1, 2, 3, 5, 9], seed=4)
    seen_some = seen_none = False
    for s in res.subsets:
        U = sorted(set().union(*(res.single_learned[i] for i in s.nodes)))
        pred = readout_predictions(W, b, X, list(s.nodes))
        if not U:
            assert s.retained_recall is None
            seen_none = True
            continue
        seen_some = True
        want = sum(_recall_by_hand(y, pred, k) for k in U) / len(U)
        assert s.retained_recall == pytest.approx(want, abs=1e-12)
        assert s.learned_per_node == s.n_learned / s.n
    assert seen_some and seen_none
    for row in res.rows:
        subs = [s for s in res.subsets if s.n == row.n]
        rts = [s.retained_recall for s in subs if s.retained_recall is not None]
        assert row.n_no_union == len(subs) - len(rts)
        if rts:
            assert row.retained_recall.mean == pytest.approx(np.mean(rts))
            assert row.retained_recall.std == pytest.approx(np.std(rts))
        assert row.learned_per_node.mean == pytest.approx(np.mean([s.n_learned / s.n for s in subs]))
    # single nodes keep what they learned: Rt({i}) ≥ τ_r
    ones = [s.retained_recall for s in res.subsets if s.n == 1 and s.retained_recall is not None]
    assert ones and all(v >= 0.5 for v in ones)


def test_interior_minimum_of_retained_recall_is_the_crossover():
    # prototypes + noise: a single node keeps its classes, a few nodes mix their outputs (recall of
    # the members' classes drops), many nodes classify well again (recall rises)
    W, b, X, y = random_case(seed=0)
    res = cooperation(W, b, X, y, R=10, grid=[1, 2, 3, 5, 8, 20], seed=0)
    rt = [r.retained_recall.mean for r in res.rows]
    assert all(v is not None for v in rt)
    i = int(np.argmin(rt))
    assert 0 < i < len(rt) - 1 and rt[i] < rt[0] and rt[i] < rt[-1]
    assert res.n_star == res.rows[i].n == 3 and res.crossover_found
    assert res.p_min_n == 1  # the retired v1 figure sits at the first grid point
    pos = [r.n for r in res.rows if r.gain.mean > 0]
    assert (res.first_positive_gain, res.last_positive_gain) == (pos[0], pos[-1])


def test_monotone_retained_recall_has_no_crossover():
    # the same draws on a grid that stops while Rt still falls: lowest at the last grid point
    W, b, X, y = random_case(seed=0)
    res = cooperation(W, b, X, y, R=10, grid=[1, 2, 3], seed=0)
    rt = [r.retained_recall.mean for r in res.rows]
    assert rt[0] > rt[1] > rt[2]
    assert res.n_star is None and not res.crossover_found
    # one-hot items, W = I: node i detects class i alone and in every set (Rt = 1 everywhere);
    # the lowest mean Rt ties at every n → smallest n = 1, an end of the grid → no crossover
    K = 6
    y = torch.arange(K).repeat_interleave(8)
    X = torch.nn.functional.one_hot(y, K).float()
    res = cooperation(torch.eye(K), torch.zeros(K), X, y, R=4, grid=[1, 2, 3, 6], seed=1)
    assert [r.retained_recall.mean for r in res.rows if r.retained_recall.mean is not None] == [1.0] * 4
    assert res.n_star is None and not res.crossover_found


def test_unseen_class_labels_never_count_as_correct():
    W, b, X, y = random_case(seed=3, K=4, N=100, d=8)
    y = y.clone()
    y[::5] = 4  # a class with no row in W (n_classes = 5)
    with pytest.raises(NodeprobeError):
        cooperation(W, b, X, y, R=2, grid=[1, 2])
    res = cooperation(W, b, X, y, R=3, grid=[1, 2, 8], seed=2, n_classes=5)
    assert res.settings["n_classes"] == 5
    for s in res.subsets:
        pred = readout_predictions(W, b, X, list(s.nodes))
        assert int((pred == 4).sum()) == 0
        st = unit_stats(y, pred, 5)
        assert s.acc == st.acc == float((pred == y).double().mean())
        assert s.n_learned == st.n_learned and 4 not in st.learned
    assert all(4 not in lam for lam in res.single_learned)
