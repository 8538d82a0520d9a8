"""The fast paths timed by ``bench/run.py`` give exactly the baselines' results (small sizes).

* P3: ``sweep_heads`` (clean ``z`` once per block, ``HookedBlock.finish`` per head, last block at the
  readout rows) == one full ``run_with_hooks`` forward per head: argmax identical, losses ≤ 1e-5;
* ``forward(readout_rows=True)`` == the full forward (classifier [CLS]; MLM positions as a mask or
  an index pair; padded batches; a hooked last block runs in full);
* P2: ``node_predictions`` (upper envelope) == ``dense_node_predictions`` exactly;
* P1: ``run_eval`` + ``SiteCache`` keeps exactly the values ``run_with_cache`` holds at the kept
  rows, and the caching hooks leave predictions and losses unchanged (bit for bit).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _tiny_models import H, L, tiny_eval_set, tiny_model
from nodeprobe.studies.ablation import head_means, head_sweep_logits, sweep_heads
from nodeprobe.analysis.readout import dense_node_predictions, node_predictions
from nodeprobe.evaluate import run_eval
from nodeprobe.hooks import SiteCache, ablate_head, isolate_head, z_name
from nodeprobe.model import Rows


def _slow_sweep(model, es, mode="zero", isolate=False, means=None):
    """The baseline: one full forward per head with the ablation hook (run_with_hooks)."""
    factory = isolate_head if isolate else ablate_head
    acc, loss = np.zeros((L, H)), np.zeros((L, H))
    with torch.no_grad():
        for l in range(L):
            for h in range(H):
                hook = factory(l, h, mode, means[l] if mode == "mean" else None)
                for b in es.batches:
                    logits = model.run_with_hooks(b.input_ids, b.attention_mask, positions=b.positions,
                                                  fwd_hooks=[hook]).float()
                    acc[l, h] += float((logits.argmax(-1) == b.targets).sum())
                    loss[l, h] += float(F.cross_entropy(logits, b.targets, reduction="sum"))
    return acc / es.n_items, loss / es.n_items


@pytest.mark.parametrize("task", ["cls", "mlm"])
@pytest.mark.parametrize("mode,isolate", [("zero", False), ("mean", False), ("zero", True), ("mean", True)])
def test_sweep_equals_one_forward_per_head(task, mode, isolate):
    model = tiny_model(task, seed=3)
    es = tiny_eval_set(task, n_batches=2, seed=4)
    means = head_means(model, es) if mode == "mean" else None
    rep = sweep_heads(model, es, mode=mode, isolate=isolate, means=means)
    acc, loss = _slow_sweep(model, es, mode, isolate, means)
    assert np.array_equal(np.asarray(rep.accuracy), acc)
    np.testing.assert_allclose(np.asarray(rep.loss), loss, rtol=0, atol=1e-5)
    base = run_eval(model, es)
    assert rep.baseline_accuracy == base.accuracy
    assert rep.baseline_loss == pytest.approx(base.loss, abs=1e-5)
    assert not np.allclose(np.asarray(rep.loss), base.loss)  # the ablations do something


@pytest.mark.parametrize("task", ["cls", "mlm"])
def test_head_sweep_logits_per_item(task):
    """Stronger than the aggregates: every item's ablated logits, head by head, and the clean ones."""
    model = tiny_model(task, seed=5)
    es = tiny_eval_set(task, n_batches=1, seed=6)
    b = es.batches[0]
    hooks = [[ablate_head(l, h) for h in range(H)] for l in range(L)]
    fills = [[fn for _, fn in row] for row in hooks]
    seen = []
    with torch.no_grad():
        for l, h, got in head_sweep_logits(model, b.input_ids, b.attention_mask, b.positions, fills):
            hook = [] if l is None else [hooks[l][h]]
            ref = model.run_with_hooks(b.input_ids, b.attention_mask, positions=b.positions, fwd_hooks=hook)
            assert got.shape == ref.shape
            assert torch.equal(got.argmax(-1), ref.argmax(-1))
            assert (got - ref).abs().max() <= 1e-5
            seen.append((l, h))
    assert seen == [(l, h) for l in range(L) for h in range(H)] + [(None, None)]


@pytest.mark.parametrize("task", ["cls", "mlm"])
def test_readout_rows_equal_full_forward(task):
    model = tiny_model(task, seed=7)
    es = tiny_eval_set(task, n_batches=2, seed=8)
    with torch.no_grad():
        for b in es.batches:
            full = model(b.input_ids, b.attention_mask, positions=b.positions)
            fast = model(b.input_ids, b.attention_mask, positions=b.positions, readout_rows=True)
            assert fast.shape == full.shape
            assert (fast - full).abs().max() <= 1e-5
            assert torch.equal(fast.argmax(-1), full.argmax(-1))
            if task == "mlm":  # positions as an index pair, in a non row-major order
                bi, pi = torch.nonzero(b.positions, as_tuple=True)
                perm = torch.randperm(bi.numel(), generator=torch.Generator().manual_seed(0))
                pair = (bi[perm], pi[perm])
                ref = model(b.input_ids, b.attention_mask, positions=pair)
                got = model(b.input_ids, b.attention_mask, positions=pair, readout_rows=True)
                assert torch.allclose(ref, full[perm], atol=1e-6)
                assert (got - ref).abs().max() <= 1e-5
            # a hook on the last block: that block runs in full, the hook sees [B, P, H, Dh]
            seen = []
            hook = (z_name(L - 1), lambda z, hook: seen.append(z.shape))
            hooked = model.run_with_hooks(b.input_ids, b.attention_mask, positions=b.positions,
                                          readout_rows=True, fwd_hooks=[hook])
            assert seen == [(*b.input_ids.shape, H, model.spec.d_head)]
            assert torch.equal(hooked, full)


def test_rows_layout():
    r = Rows.from_positions((torch.tensor([1, 0, 1, 1]), torch.tensor([4, 2, 0, 3])))
    assert r.slot.tolist() == [0, 0, 1, 2] and r.width == 3
    r = Rows.first(3)
    assert r.b.tolist() == [0, 1, 2] and r.p.tolist() == [0, 0, 0] and r.width == 1


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_node_predictions_equal_dense(mode):
    g = torch.Generator().manual_seed(11)
    K, d, N = 300, 6, 2000
    W, b, X = torch.randn(K, d, generator=g), torch.randn(K, generator=g), torch.randn(N, d, generator=g)
    X[:50] = torch.round(X[:50] * 2) / 2  # repeated and small-denominator values (near ties)
    W[:20] = torch.round(W[:20])
    means = X.mean(0) if mode == "mean" else None
    assert torch.equal(node_predictions(W, b, X, mode, means), dense_node_predictions(W, b, X, mode, means))


@pytest.mark.parametrize("task", ["cls", "mlm"])
def test_site_cache_equals_run_with_cache_and_leaves_outputs_unchanged(task):
    model = tiny_model(task, seed=9)
    es = tiny_eval_set(task, n_batches=2, seed=10)
    names = ["readout.hook_in"] + [z_name(l) for l in range(L)]
    sc = SiteCache(names, positions="cls" if task == "cls" else None)
    cached = run_eval(model, es, cache=sc)
    kept = sc.stack()
    plain = run_eval(model, es)
    assert torch.equal(cached.preds, plain.preds)
    assert torch.equal(cached.losses, plain.losses)
    ref = {n: [] for n in names}
    with torch.no_grad():
        for b in es.batches:
            _, c = model.run_with_cache(b.input_ids, b.attention_mask, positions=b.positions, names_filter=names)
            for n in names:
                t = c[n]
                if n.endswith("hook_z"):
                    t = t[:, 0] if task == "cls" else t[b.positions]
                ref[n].append(t)
    for n in names:
        assert torch.equal(kept[n], torch.cat(ref[n])), n
        assert kept[n].shape[0] == es.n_items
