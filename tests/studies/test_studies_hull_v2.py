"""METHODS v2 §6 at any site: the hull report on block readouts (MLM: trained on half of the
items), heads as node groups, and the class-sample path against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from nodeprobe.analysis import hull_bound, hull_bound_single_nodes
from nodeprobe.errors import NodeprobeError
from _v2 import FAST, LOW
from nodeprobe.studies.hull import hull_report
from nodeprobe.studies.units import site_readout


def _brute_ub(sr, reach, outputs):
    y = sr.y_local.numpy()
    Nk = np.bincount(y, minlength=sr.n_local)
    return Nk[sorted(set(reach) | set(outputs))].sum() / y.size


@pytest.mark.parametrize("site", ["mlp", "attn", "resid"])
@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_single_nodes_at_block_sites_are_the_analysis(mlm, site, mode):
    rep = hull_report(mlm, site=site, layer=1, n=1, mode=mode, readout_settings=FAST, **LOW)
    sr = site_readout(mlm, site, 1, settings=FAST)
    assert sr.trained_on == "half of the evaluation items" and sr.n_rows < mlm.n_classes  # a strict subset
    mu = sr.means() if mode == "mean" else None
    ref = hull_bound_single_nodes(sr.W, sr.b, sr.X, sr.y_local, mode, mu, n_classes=sr.n_local, **LOW)
    assert len(rep.rows) == sr.d and rep.n_items == sr.items.size < mlm.n_items
    assert [r.acc for r in rep.rows] == ref.acc.tolist()
    assert [r.ub_data for r in rep.rows] == pytest.approx(ref.ub_data.tolist())
    assert all(r.acc <= r.ub_data + 1e-12 and r.ub_data <= r.ub_unbounded + 1e-12 for r in rep.rows)
    assert all(r.bound_scope == "all classes" and r.classes_tested == sr.n_rows for r in rep.rows)
    assert (rep.site, rep.layer, rep.level) == (site, 1, "node") and rep.readout == sr.describe()
    # the accuracy is in the readout's class space: a direct argmax over the rows, mapped back
    X, W, b = sr.X.double(), sr.W.double(), sr.b.double()
    if mode == "mean":
        base = b + W @ sr.means().double()
    for i in (0, sr.d - 1):
        bias = b if mode == "zero" else base - W[:, i] * sr.means().double()[i]
        pred = sr.classes[(X[:, i, None] * W[None, :, i] + bias).argmax(1)]
        assert rep.rows[i].acc == pytest.approx(float((pred == sr.y).double().mean()))


@pytest.mark.parametrize("site", ["mlp", "attn", "resid"])
def test_random_sets_bound_the_accuracy(mlm, site):
    rep = hull_report(mlm, site=site, layer=0, n=4, R=3, seed=1, readout_settings=FAST, class_sample=None, **LOW)
    assert len(rep.rows) == 3 and rep.bound_scope == "all classes"
    for r in rep.rows:
        assert r.ub_data is not None and r.acc <= r.ub_data + 1e-12 and r.ub_data <= r.ub_unbounded + 1e-12


def test_node_set_names_map_through_the_readout_classes(mlm):
    sr = site_readout(mlm, "mlp", 1, settings=FAST)
    rep = hull_report(mlm, site="mlp", layer=1, nodes="0,3,5", readout_settings=FAST, class_sample=None, **LOW)
    hb = hull_bound(sr.W, sr.b, sr.X, sr.y_local, [0, 3, 5], n_classes=sr.n_local, **LOW)
    g = sr.classes.tolist()
    assert g != list(range(len(g)))  # local rows ≠ global ids: the mapping matters
    assert rep.reachable_data == [mlm.class_names[g[k]] for k in hb.reachable_data]
    assert rep.reachable_unbounded == [mlm.class_names[g[k]] for k in hb.reachable_unbounded]
    r = rep.rows[0]
    assert (r.acc, r.ub_data, r.ub_unbounded) == (hb.acc, hb.ub_data, hb.ub_unbounded)
    assert r.ub_data == pytest.approx(_brute_ub(sr, hb.reachable_data, np.unique(
        (sr.X[:, [0, 3, 5]].double() @ sr.W[:, [0, 3, 5]].double().T + sr.b.double()).argmax(1).numpy())))


def test_heads_are_node_groups_of_their_columns(mlm):
    rep = hull_report(mlm, site="attn", layer=1, level="head", readout_settings=FAST, class_sample=None, **LOW)
    sr = site_readout(mlm, "attn", 1, settings=FAST)
    assert rep.kind == "heads" and len(rep.rows) == sr.n_heads
    for h, r in enumerate(rep.rows):
        cols = sr.head_columns(h)
        hb = hull_bound(sr.W, sr.b, sr.X, sr.y_local, cols, n_classes=sr.n_local, **LOW)
        assert r.unit == f"L1H{h}" and r.nodes == cols.tolist() and len(cols) == sr.d_head >= 4
        assert (r.acc, r.ub_unbounded, r.ub_data, r.n_reachable_data) == (
            hb.acc, hb.ub_unbounded, hb.ub_data, hb.n_reachable_data)
        assert r.acc <= r.ub_data + 1e-12


def test_class_sample_equals_brute_force_on_the_sampled_classes(mlm):
    sr = site_readout(mlm, "attn", 1, settings=FAST)
    K, cs, seed = sr.n_rows, 3, 7
    rep = hull_report(mlm, site="attn", layer=1, level="head", readout_settings=FAST, class_sample=cs, seed=seed, **LOW)
    assert rep.bound_scope == f"outputs + sample of {cs}"
    crng = np.random.default_rng(seed)
    for h, r in enumerate(rep.rows):
        cols = sr.head_columns(h)
        full = hull_bound(sr.W, sr.b, sr.X, sr.y_local, cols, n_classes=sr.n_local, **LOW)  # every class by LP
        Xs = sr.X[:, cols].double() @ sr.W[:, cols].double().T + sr.b.double()
        out = set(np.unique(Xs.argmax(1).numpy()).tolist())
        perm = crng.permutation(K)
        tested = out | set([int(k) for k in perm if int(k) not in out][:cs])
        assert r.classes_tested == len(tested) < K and r.bound_scope == f"outputs + sample of {cs}"
        for reach, ub, n_r in ((full.reachable_data, r.ub_data, r.n_reachable_data),
                               (full.reachable_unbounded, r.ub_unbounded, r.n_reachable_unbounded)):
            sub = [k for k in reach if k in tested]
            assert n_r == len(sub)
            assert ub == pytest.approx(_brute_ub(sr, sub, out))
        assert r.acc <= r.ub_data + 1e-12 and r.ub_data <= full.ub_data + 1e-12  # a lower estimate of the bound


def test_classification_block_site_and_heads(cls):
    test, train = cls
    with pytest.raises(NodeprobeError, match="needs the train split"):
        hull_report(test, site="attn", layer=0, level="head", readout_settings=FAST)
    rep = hull_report(test, site="attn", layer=0, level="head", train=train, readout_settings=FAST, **LOW)
    sr = site_readout(test, "attn", 0, train=train, settings=FAST)
    assert rep.bound_scope == "all classes" and rep.classes_tested == sr.n_rows  # K = 5 < class_sample
    assert rep.readout["trained_on"] == "train split" and rep.n_items == test.n_items
    assert all(r.acc <= r.ub_data + 1e-12 for r in rep.rows)
    one = hull_report(test, site="resid", layer=1, nodes=[1, 2], train=train, readout_settings=FAST, **LOW)
    srr = site_readout(test, "resid", 1, train=train, settings=FAST)
    hb = hull_bound(srr.W, srr.b, srr.X, srr.y_local, [1, 2], n_classes=srr.n_local, **LOW)
    assert one.reachable_data == [test.class_names[int(srr.classes[k])] for k in hb.reachable_data]


def test_readout_site_unchanged(mlm):
    rep = hull_report(mlm, n=1, **LOW)
    ref = hull_bound_single_nodes(mlm.W, mlm.b, mlm.readout(), mlm.targets(), **LOW)
    assert [r.acc for r in rep.rows] == ref.acc.tolist() and rep.site == "readout" and rep.layer is None
    assert rep.readout["trained_on"] == "model"


def test_user_errors(mlm):
    with pytest.raises(NodeprobeError, match="site=attn"):
        hull_report(mlm, site="mlp", layer=0, level="head")
    with pytest.raises(NodeprobeError, match="level=head"):
        hull_report(mlm, site="attn", layer=0, level="head", n=1)
    with pytest.raises(NodeprobeError, match="needs `layer`"):
        hull_report(mlm, site="mlp", n=1)
    with pytest.raises(NodeprobeError, match="level="):
        hull_report(mlm, site="attn", layer=0, level="block")
    with pytest.raises(NodeprobeError, match="class_sample"):
        hull_report(mlm, site="attn", layer=0, level="head", class_sample=-1)
    with pytest.raises(NodeprobeError, match="nodes"):
        hull_report(mlm, site="mlp", layer=0, nodes="0,99", readout_settings=FAST)
