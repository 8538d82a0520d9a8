"""METHODS v2: block readouts, nodes at attn/mlp/resid and heads as node groups — against
direct computations, and on a hand-set model whose heads carry known, disjoint label sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as np_load
from transformers import BertConfig, BertForSequenceClassification

from nodeprobe.analysis import unit_stats_many
from nodeprobe.analysis.probe import FitSettings, fit_linear
from nodeprobe.cache import build_cache
from nodeprobe.data.eval_sets import EvalBatch, EvalSet, fingerprint_batches
from nodeprobe.errors import NodeprobeError
from _v2 import FAST, LOW
from nodeprobe.model import HookedBert
from nodeprobe.studies import specialization_report
from nodeprobe.studies._common import resolve_specialization
from nodeprobe.studies.specialization import head_group_predictions
from nodeprobe.studies.units import ReadoutSettings, block_readout, null_readout, site_readout


def test_mlm_block_readout_trains_on_half_and_is_stored(mlm):
    cache = mlm
    sr = block_readout(cache, "mlp", 1, settings=FAST)
    N = cache.n_items
    assert sr.X.shape == (sr.items.size, cache.mlp(1).shape[1]) and 0 < sr.items.size < N
    assert sr.trained_on == "half of the evaluation items"
    # the stored weights are the fit on the other half, recomputable by anyone
    st = np_load(sr.path)
    tr = np.setdiff1d(np.arange(N), st["items"])
    fit = fit_linear(cache.mlp(1)[torch.as_tensor(tr)], cache.targets()[torch.as_tensor(tr)], FAST.fit)
    assert torch.equal(fit.W, torch.from_numpy(st["W"])) and torch.equal(fit.classes, torch.from_numpy(st["classes"]))
    acc = float((fit.predict(sr.X) == sr.y).double().mean())
    assert sr.accuracy == pytest.approx(acc)
    again = block_readout(cache, "mlp", 1, settings=FAST)  # read back, not retrained
    assert torch.equal(again.W, sr.W) and again.accuracy == sr.accuracy


def test_classification_block_readout_needs_the_train_split(cls):
    test, train = cls
    with pytest.raises(NodeprobeError, match="needs the train split"):
        block_readout(test, "attn", 0, settings=FAST)
    sr = block_readout(test, "attn", 0, train=train, settings=FAST)
    assert sr.trained_on == "train split" and sr.items.size == test.n_items
    fit = fit_linear(train.z(0).reshape(train.n_items, -1), train.targets(), FAST.fit)
    assert torch.equal(fit.W, sr.W)


@pytest.mark.parametrize("site", ["attn", "mlp", "resid"])
def test_block_site_nodes_equal_dense_argmax(cls, site):
    test, train = cls
    rep = specialization_report(test, site=site, layer=1, train=train, readout_settings=FAST, **LOW)
    sr = block_readout(test, site, 1, train=train, settings=FAST)
    X, W, b = sr.X.double(), sr.W.double(), sr.b.double()
    dense = torch.stack([torch.argmax(X[:, i, None] * W[None, :, i] + b, 1) for i in range(sr.d)])
    direct = unit_stats_many(sr.y, sr.classes[dense], test.n_classes, **LOW)
    assert [u.acc for u in rep.units] == [s.acc for s in direct]
    assert [tuple(c.cls for c in u.learned) for u in rep.units] == [s.learned for s in direct]
    assert rep.families[0].readout["accuracy"] == sr.accuracy and rep.readouts


def test_head_groups_are_column_blocks_of_the_attn_readout(cls):
    test, train = cls
    rep = specialization_report(test, level="head", layer=0, train=train, readout_settings=FAST, **LOW)
    sr = block_readout(test, "attn", 0, train=train, settings=FAST)
    dh = sr.d_head
    for h in range(sr.n_heads):
        c = slice(h * dh, (h + 1) * dh)
        pred = sr.classes[torch.argmax(sr.X[:, c] @ sr.W[:, c].T + sr.b, 1)]
        st = unit_stats_many(sr.y, pred[None], test.n_classes, **LOW)[0]
        u = rep.units[h]
        assert u.unit == f"L0H{h}" and u.acc == st.acc and tuple(k.cls for k in u.learned) == st.learned
    assert rep.head_unit == "group"


def test_along_the_blocks_has_spearman_trends(mlm):
    cache = mlm
    rep = specialization_report(cache, site="mlp", readout_settings=FAST, **LOW)
    assert [f.layer for f in rep.families] == [0, 1] and len(rep.units) == 2 * cache.mlp(0).shape[1]
    (tr,) = rep.trends
    assert tr.kind == "mlp nodes" and tr.layers == [0, 1] and tr.rho_snr is None  # two blocks: no ρ


def test_snr_null_and_snp_matrix(cls):
    test, train = cls
    rep = specialization_report(test, snp=True, **LOW)
    for u in rep.units:
        assert (u.snr is None) == (u.n_learned == 0)
        M = np.array(u.snp["matrix"])
        assert np.allclose(M.sum(1), 1.0) and np.allclose(np.diag(M), np.array(u.recall)[u.snp["rows"]])


def test_resolve_v2_sites():
    assert resolve_specialization("head", "z", None, 3) == ("attn", [0, 1, 2])
    with pytest.raises(NodeprobeError, match="site=z holds heads"):
        resolve_specialization("node", "z", 0, 3)
    with pytest.raises(NodeprobeError, match="head_unit=x"):
        resolve_specialization("head", None, None, 3, "x")


def test_null_readout_permutes_within_each_class_row(cls):
    test, _ = cls
    sr = site_readout(test)
    a, b = null_readout(sr, 1), null_readout(sr, 1)
    assert torch.equal(a.W, b.W) and not torch.equal(a.W, sr.W)
    assert torch.equal(a.W.sort(1).values, sr.W.sort(1).values)


# ---------------------------------------------------------------- hand-set model with disjoint heads
def _disjoint_heads_model(K: int = 8, H: int = 4):
    """1 block, d_model = K, H heads of d_head = K/H; token c+1 embeds as e_c; uniform attention
    (W_Q = W_K = 0), V = identity: head h's z carries exactly the coordinates of classes
    h·d_head … (h+1)·d_head − 1."""
    cfg = BertConfig(vocab_size=K + 1, hidden_size=K, num_hidden_layers=1, num_attention_heads=H,
                     intermediate_size=4, max_position_embeddings=16, num_labels=K, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, pad_token_id=0)
    hf = BertForSequenceClassification(cfg).eval()
    with torch.no_grad():
        e = hf.bert.embeddings
        e.word_embeddings.weight.zero_()
        e.word_embeddings.weight[1:] = torch.eye(K)
        e.position_embeddings.weight.zero_()
        e.token_type_embeddings.weight.zero_()
        e.LayerNorm.weight.fill_(1.0)
        e.LayerNorm.bias.zero_()
        a = hf.bert.encoder.layer[0].attention.self
        for lin in (a.query, a.key):
            lin.weight.zero_(); lin.bias.zero_()
        a.value.weight.copy_(torch.eye(K)); a.value.bias.zero_()
    return HookedBert(hf)


def _class_set(K: int, n_per: int, seed: int, P: int = 6) -> EvalSet:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(K).repeat(n_per)[torch.randperm(K * n_per, generator=g)]
    batches = []
    for a in range(0, y.numel(), 16):
        yy = y[a : a + 16]
        ids = (yy[:, None] + 1).repeat(1, P)
        ids[:, 0] = 0  # a zero embedding in front ([CLS]-like)
        batches.append(EvalBatch(ids, torch.ones_like(ids), yy))
    es = EvalSet("fewrel", batches, [f"label {k}" for k in range(K)], "synthetic", seed)
    es.fingerprint = fingerprint_batches(batches)
    return es


def test_heads_with_known_disjoint_label_sets_are_found(tmp_path):
    K, H = 8, 4
    model = _disjoint_heads_model(K, H)
    test = build_cache(model, _class_set(K, 10, 1), "readout,z", tmp_path / "test")
    train = build_cache(model, _class_set(K, 40, 2), "readout,z", tmp_path / "train")
    rs = ReadoutSettings(fit=FitSettings(epochs=200, lr=0.05))
    rep = specialization_report(test, level="head", layer=0, train=train, readout_settings=rs)
    dh = K // H
    assert [tuple(c.cls for c in u.learned) for u in rep.units] == [tuple(range(h * dh, (h + 1) * dh)) for h in range(H)]
    fam = rep.families[0]
    assert fam.coverage == 1.0 and fam.mean_jaccard == 0.0
    # the same from the stored readout with numpy alone
    st = np_load(rep.readouts[0]["path"])
    z = test.z(0).reshape(test.n_items, -1).numpy()
    for h in range(H):
        c = slice(h * dh, (h + 1) * dh)
        pred = st["classes"][np.argmax(z[:, c] @ st["W"][:, c].T + st["b"], axis=1)]
        y = test.targets().numpy()
        learned = [k for k in range(K) if (pred[y == k] == k).mean() >= 0.5 and (y[pred == k] == k).mean() * K >= 2]
        assert learned == list(range(h * dh, (h + 1) * dh))
    # v1's network isolation on the same model: other heads ablated, the residual carries the task
    assert head_group_predictions(block_readout(test, "attn", 0, train=train, settings=rs)).shape == (H, test.n_items)


def test_sae_latents_at_a_block_site_are_exact_units(mlm):
    from nodeprobe.analysis.sae import SAEWeights

    cache = mlm
    sr = block_readout(cache, "mlp", 1, settings=FAST)
    g = torch.Generator().manual_seed(0)
    d, m = sr.d, 12
    sae = SAEWeights.from_tensors(W_enc=torch.randn(d, m, generator=g), b_enc=torch.zeros(m),
                                  W_dec=torch.randn(m, d, generator=g), b_dec=torch.randn(d, generator=g),
                                  hook_name="blocks.1.mlp.hook_post")
    lat = site_readout(cache, "mlp", 1, settings=FAST, sae=sae)
    xhat = sae.decode(lat.X).double()
    want = xhat @ sr.W.double().T + sr.b.double()
    got = lat.X.double() @ lat.W.double().T + lat.b.double()
    assert torch.allclose(got, want, atol=1e-4) and torch.equal(lat.classes, sr.classes) and torch.equal(lat.y, sr.y)
    rep = specialization_report(cache, site="mlp", layer=1, sae=sae, readout_settings=FAST, **LOW)
    assert len(rep.units) == m
    bad = SAEWeights.from_tensors(W_enc=torch.zeros(d, 2), b_enc=torch.zeros(2), W_dec=torch.zeros(2, d),
                                  b_dec=torch.zeros(d), hook_name="blocks.0.mlp.hook_post")
    with pytest.raises(NodeprobeError, match="is not site mlp of block 1"):
        site_readout(cache, "mlp", 1, settings=FAST, sae=bad)
