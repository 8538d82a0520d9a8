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
    assert res.first_positive_gain == 2
    assert res.n_star == 1  # mean P: 0.75 at n=1, 1.0 at n=2
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
    assert a.rows == c.rows and a.subsets == c.subsets and a.n_star == c.n_star
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
    assert res.n_star == min(res.rows, key=lambda r: (r.precision.mean, r.n)).n


def test_user_errors():
    W, b, X, y = pair_case()
    with pytest.raises(NodeprobeError, match="R="):
        cooperation(W, b, X, y, R=0)
    with pytest.raises(NodeprobeError, match="grid"):
        cooperation(W, b, X, y, grid=[0, 1])
    with pytest.raises(NodeprobeError, match="items"):
        cooperation(W, b, X, y[:5])
