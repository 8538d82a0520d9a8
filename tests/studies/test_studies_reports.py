"""nodeprobe.studies on tiny random BERTs, cross-checked against direct computations:
dense argmax per node + unit_stats, hand-masked vectors through the HF head modules, run_eval
with isolate_head hooks, and the analysis functions called on the cached tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _tiny_models import tiny_eval_set, tiny_model
from nodeprobe.analysis import (
    apt_per_token,
    cooperation,
    hull_bound,
    hull_bound_single_nodes,
    strong_match_clusters,
    symmetry_summary,
    unit_stats,
)
from nodeprobe.cache import build_cache
from nodeprobe.errors import NodeprobeError
from nodeprobe.evaluate import run_eval
from nodeprobe.hooks import isolate_head
from nodeprobe.studies import (
    ProbeSettings,
    apt_report,
    blocks_report,
    cooperation_report,
    hull_report,
    specialization_report,
)
from nodeprobe.studies._common import check_hull_args, parse_nodes, parse_unit, resolve_specialization
from nodeprobe.studies.lens import lens_predictions, probe_predictions, probe_split

LOW = dict(tau_recall=0.2, tau_lift=1.0, min_count=2)  # thresholds low enough that random units learn classes



@pytest.fixture(scope="module")
def cls_case(tmp_path_factory):
    model, es = tiny_model("cls", seed=3), tiny_eval_set("cls", n_batches=6, B=16)
    return model, es, build_cache(model, es, "readout,resid", tmp_path_factory.mktemp("cls"), shard_batches=4)


@pytest.fixture(scope="module")
def mlm_case(tmp_path_factory):
    model, es = tiny_model("mlm", seed=4), tiny_eval_set("mlm", n_batches=4, B=8)
    return model, es, build_cache(model, es, "readout,resid", tmp_path_factory.mktemp("mlm"), shard_batches=2)


def _check_units(rep, direct, K):
    assert len(rep.units) == len(direct)
    for u, st in zip(rep.units, direct):
        assert u.acc == pytest.approx(st.acc, abs=0)
        assert u.n_outputs == st.n_outputs and tuple(c.cls for c in u.learned) == st.learned
        assert (u.snr is None if not st.learned else u.snr == pytest.approx(st.snr))  # v2: undefined → None
        assert u.mean_precision == pytest.approx(st.mean_precision)
    sym = symmetry_summary([st.learned for st in direct], K)
    fam = rep.families[-1]
    assert fam.size_hist == sym.size_hist and fam.coverage == sym.coverage
    assert fam.mean_jaccard == pytest.approx(sym.mean_jaccard) and {o.cls: o.n_units for o in fam.owners} == sym.owners


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_readout_nodes_vs_dense_argmax(cls_case, mode):
    model, es, cache = cls_case
    rep = specialization_report(cache, mode=mode, **LOW)
    X, y, W, b = cache.readout(), cache.targets(), cache.W, cache.b
    K = cache.n_classes
    if mode == "zero":
        bias = [b] * X.shape[1]
    else:
        mu = cache.means("readout")
        base = b + W @ mu
        bias = [base - W[:, i] * mu[i] for i in range(X.shape[1])]
    direct = [unit_stats(y, torch.argmax(X[:, i, None] * W[None, :, i] + bias[i], -1), K, **LOW)
              for i in range(X.shape[1])]
    assert sum(st.n_learned for st in direct) > 0  # the check is not vacuous
    _check_units(rep, direct, K)
    assert rep.n_items == es.n_items and rep.baseline_accuracy == pytest.approx(float((cache.preds() == y).double().mean()))
    top = rep.units[rep.ranking[0]]
    assert top.n_learned == max(u.n_learned for u in rep.units)
    assert [c.name for c in top.learned] == [es.class_names[c.cls] for c in top.learned]
    assert rep.find_unit("node 3") is rep.units[3] and rep.find_unit("3") is rep.units[3]


@pytest.mark.parametrize("task", ["cls", "mlm"])
def test_resid_nodes_vs_masked_vectors_through_hf_head(task, cls_case, mlm_case):
    model, es, cache = cls_case if task == "cls" else mlm_case
    hf = model.hf
    layer = 0
    rep = specialization_report(cache, site="resid", layer=layer, resid_readout="lens", model=model, **LOW)
    X, y = cache.resid(layer + 1), cache.targets()
    direct = []
    with torch.no_grad():
        for i in range(X.shape[1]):
            masked = torch.zeros_like(X)
            masked[:, i] = X[:, i]
            logits = hf.classifier(hf.bert.pooler(masked[:, None, :])) if task == "cls" else hf.cls(masked)
            direct.append(unit_stats(y, logits.argmax(-1), cache.n_classes, **LOW))
    _check_units(rep, direct, cache.n_classes)
    again = specialization_report(cache, site="resid", layer=layer, resid_readout="lens", model=None, **LOW)  # from derived/
    assert [u.acc for u in again.units] == [u.acc for u in rep.units]


def test_heads_vs_run_eval_with_isolate_hooks(cls_case):
    model, es, cache = cls_case
    rep = specialization_report(cache, level="head", head_unit="network", model=model, eval_set=es, **LOW)
    H, L = model.spec.n_heads, model.spec.n_layers
    assert [u.index for u in rep.units] == [(l, h) for l in range(L) for h in range(H)]
    assert [f.name for f in rep.families] == ["heads of block 0", "heads of block 1", "all heads"]
    y = es.targets()
    for (l, h) in [(0, 1), (1, 3)]:
        preds = run_eval(model, es, fwd_hooks=[isolate_head(l, h)]).preds
        st = unit_stats(y, preds, cache.n_classes, **LOW)
        u = rep.find_unit(f"L{l}H{h}")
        assert u.acc == st.acc and tuple(c.cls for c in u.learned) == st.learned
    one = specialization_report(cache, level="head", layer=1, head_unit="network", model=None, eval_set=None, **LOW)  # derived/
    assert [u.acc for u in one.units] == [u.acc for u in rep.units if u.index[0] == 1]


def test_head_mean_mode_runs(cls_case):
    model, es, cache = cls_case
    rep = specialization_report(cache, level="head", layer=0, mode="mean", head_unit="network", model=model, eval_set=es)
    from nodeprobe.studies.ablation import head_means

    means = head_means(model, es, [0])
    preds = run_eval(model, es, fwd_hooks=[isolate_head(0, 2, "mean", means[0])]).preds
    assert rep.find_unit("0.2").acc == unit_stats(es.targets(), preds, cache.n_classes).acc


@pytest.mark.parametrize("task", ["cls", "mlm"])
def test_lens_at_last_block_is_the_model(task, cls_case, mlm_case):
    model, es, cache = cls_case if task == "cls" else mlm_case
    assert torch.equal(lens_predictions(model, cache.resid(model.spec.n_layers)), cache.preds())
    rep = blocks_report(cache, model, probe=ProbeSettings(epochs=3))
    assert [r.name for r in rep.rows] == ["embeddings", "block 0", "block 1"]
    assert rep.rows[-1].lens_accuracy == pytest.approx(rep.baseline_accuracy)
    assert all(r.probe_accuracy is not None and r.n_probe_test == cache.n_items - round(cache.n_items / 2) for r in rep.rows)


def test_probe_learns_a_separable_problem_and_is_seeded():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (200,), generator=g)
    X = torch.nn.functional.one_hot(y, 8).float() * 3 + 0.1 * torch.randn(200, 8, generator=g)
    ps = ProbeSettings(epochs=20, seed=1)
    tr, te = probe_split(200, ps)
    assert len(set(tr) & set(te)) == 0 and len(tr) + len(te) == 200
    p1 = probe_predictions(X, y, tr, te, ps)
    p2 = probe_predictions(X, y, tr, te, ps)
    assert torch.equal(p1, p2) and (p1 == y[te]).float().mean() > 0.95


def test_cooperation_report_is_the_analysis(cls_case):
    _, _, cache = cls_case
    rep = cooperation_report(cache, R=3, seed=5, grid=[1, 2, 4, 16], **LOW)
    res = cooperation(cache.W, cache.b, cache.readout(), cache.targets(), R=3, seed=5, grid=[1, 2, 4, 16], **LOW)
    assert [r.n for r in rep.rows] == [1, 2, 4, 16] and rep.n_star == res.n_star
    for a, b in zip(rep.rows, res.rows):
        assert (a.acc, a.gain, a.gain_std, a.precision) == (b.acc.mean, b.gain.mean, b.gain.std, b.precision.mean)
    assert sum(rep.single_learned_hist.values()) == cache.d_model


def test_hull_report_is_the_analysis(cls_case):
    _, _, cache = cls_case
    X, y, W, b = cache.readout(), cache.targets(), cache.W, cache.b
    rep = hull_report(cache, n=1, top=4)
    ref = hull_bound_single_nodes(W, b, X, y)
    assert [r.acc for r in rep.rows] == ref.acc.tolist()
    assert [r.ub_data for r in rep.rows] == pytest.approx(ref.ub_data.tolist())
    assert [r.n_reachable_unbounded for r in rep.rows] == ref.n_reachable_unbounded.tolist()
    assert rep.farthest_below == list(ref.farthest_below[:4])
    one = hull_report(cache, nodes="2,5")
    hb = hull_bound(W, b, X, y, [2, 5])
    r = one.rows[0]
    assert (r.acc, r.ub_unbounded, r.ub_data, r.n_reachable_data) == (hb.acc, hb.ub_unbounded, hb.ub_data, hb.n_reachable_data)
    assert one.reachable_data == [cache.class_names[k] for k in hb.reachable_data]
    rnd = hull_report(cache, n=3, R=4, seed=2)
    assert len(rnd.rows) == 4 and all(len(r.nodes) == 3 and r.acc <= r.ub_data + 1e-12 for r in rnd.rows)


def test_apt_report(mlm_case):
    model, es, cache = mlm_case
    counts = np.arange(cache.n_classes) * 10
    rep = apt_report(cache, model, counts, min_count=1, n_bins=4, probe=ProbeSettings(epochs=2), top=3)
    y, p = cache.targets(), cache.preds()
    ref = apt_per_token(y, p, 1)
    assert rep.mean_apt == pytest.approx(ref.mean_apt) and rep.n_tokens == ref.n_tokens
    assert [t.id for t in rep.tokens] == ref.tokens.tolist()
    assert all(t.corpus_count == 10 * t.id for t in rep.tokens)
    assert len(rep.bins) == 4 and sum(b.n_tokens for b in rep.bins) == rep.n_tokens - rep.n_zero_count
    assert [b.stage for b in rep.blocks] == [0, 1, 2]
    last = rep.blocks[-1]
    assert last.accuracy == pytest.approx(rep.accuracy) and last.mean_apt == pytest.approx(ref.mean_apt)
    assert last.n_clusters == len(strong_match_clusters(y, p, cache.n_classes).clusters)
    assert len(rep.best) == 3 and rep.tokens[rep.best[0]].apt == max(t.apt for t in rep.tokens)


def test_report_bad_inputs(cls_case):
    model, es, cache = cls_case
    with pytest.raises(NodeprobeError, match="level="):
        resolve_specialization("neuron", None, None, 2)
    assert resolve_specialization("node", "resid", None, 2) == ("resid", [0, 1])  # v2: every block
    with pytest.raises(NodeprobeError, match="layer=2: the model has blocks 0–1"):
        resolve_specialization("node", "resid", 2, 2)
    with pytest.raises(NodeprobeError, match="level=head lives at site=attn"):
        resolve_specialization("head", "readout", None, 2)
    with pytest.raises(NodeprobeError, match="site=z holds heads"):
        resolve_specialization("node", "z", None, 2)
    with pytest.raises(NodeprobeError, match="`layer` applies"):
        resolve_specialization("node", "readout", 1, 2)
    with pytest.raises(NodeprobeError, match="tau_recall="):
        specialization_report(cache, tau_recall=1.5)
    with pytest.raises(NodeprobeError, match="min_count="):
        specialization_report(cache, min_count=0)
    with pytest.raises(NodeprobeError, match="mode="):
        specialization_report(cache, mode="median")
    fresh = build_cache(model, es, "readout", cache.path.parent / "fresh")
    with pytest.raises(NodeprobeError, match="needs the model"):
        specialization_report(fresh, level="head", head_unit="network")
    with pytest.raises(NodeprobeError, match="no 'z' site"):
        specialization_report(fresh, level="head")
    with pytest.raises(NodeprobeError, match="empty"):
        parse_nodes(" , ")
    with pytest.raises(NodeprobeError, match="repeated"):
        parse_nodes("1,1")
    with pytest.raises(NodeprobeError, match="nodes 0–15"):
        parse_nodes("3,16", 16)
    with pytest.raises(NodeprobeError, match="either nodes="):
        check_hull_args(None, None, 16)
    with pytest.raises(NodeprobeError, match="n=17"):
        hull_report(cache, n=17)
    with pytest.raises(NodeprobeError, match="unit="):
        parse_unit("head", "L9H0", 2, 4)
    with pytest.raises(NodeprobeError, match="APT is defined"):
        apt_report(cache, model, np.ones(100))
    with pytest.raises(NodeprobeError, match="R="):
        cooperation_report(cache, R=0)
