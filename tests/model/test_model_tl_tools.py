"""TransformerLens's own tools on HookedBert, unchanged, checked against hand-written patches.

* ``transformer_lens.patching``: ``get_act_patch_resid_pre`` and
  ``get_act_patch_attn_head_out_by_pos`` (which patches ``blocks.{l}.attn.hook_z``) return, cell
  for cell, what a hand-written ``run_with_hooks`` patch of that (layer, pos[, head]) gives
  (masked LM and classifier; TL calls only ``model.run_with_hooks(tokens, fwd_hooks=[...])``,
  ``model.cfg`` and, in TL 4.3, the eval-mode check).
* Attribution patching (the first-order estimate ``(a_clean − a_corrupt) · ∂metric/∂a`` with the
  gradient of the corrupted run, taken with backward hooks): exact at ``readout.hook_in`` for a
  metric linear in the logits; ranks heads and head → head edges like real activation / path
  patching when the corruption is small.  TL's own gradient cache for it
  (``tools.analysis.attribution_patching.cache_activation_and_gradient``) gives the same numbers;
  TL's ``attribution_patch`` itself is not used: its node graph names the Bridge's root
  ``hook_embed`` (HookedBert has ``embed.hook_embed`` and ``hook_full_embed``) and its edge graph
  assumes a pre-LayerNorm residual sum, which post-LayerNorm BERT is not.

Every test is deterministic (seeded weights and inputs) and the file runs in a few seconds.
"""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr
from transformer_lens import patching
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

from nodeprobe.model import HookedBert

TOL = 1e-5
SIZES = dict(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32)
L, H, D = 2, 4, 16
B, P = 2, 7
A, Bt = 7, 8  # MLM metric: logit of token A minus token Bt at position P - 2


def tiny_model(kind: str = "cls", seed: int = 0, scale: float = 0.3) -> HookedBert:
    """A random 2-block × 4-head BERT whose weights are perturbed (seeded) so that every head,
    position and token matters (BERT's default init, std 0.02, makes a nearly constant function)."""
    torch.manual_seed(seed)
    if kind == "cls":
        hf = BertForSequenceClassification(BertConfig(num_labels=3, **SIZES))
    else:
        hf = BertForMaskedLM(BertConfig(**SIZES))
    g = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return HookedBert(hf.eval())


def token_pair(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean and corrupted ids ``[B, P]`` ([CLS]=2 … [SEP]=3, no padding), differing at positions 2 and 4."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(5, SIZES["vocab_size"], (B, P), generator=g)
    clean[:, 0], clean[:, -1] = 2, 3
    corrupted = clean.clone()
    for pos in (2, 4):
        corrupted[:, pos] = 5 + (clean[:, pos] - 5 + 1 + torch.randint(0, 30, (B,), generator=g)) % 35
    assert (corrupted != clean).any(0).tolist() == [False, False, True, False, True, False, False]
    return clean, corrupted


def metric_of(kind: str):
    """A metric linear in the logits: mean over the batch of a logit difference
    (classifier: label 0 − label 1; masked LM: token A − token Bt at position P − 2)."""
    if kind == "cls":
        return lambda logits: (logits[:, 0] - logits[:, 1]).mean()
    return lambda logits: (logits[:, P - 2, A] - logits[:, P - 2, Bt]).mean()


# ---------------------------------------------------------------------- transformer_lens.patching
def hand_patch(model, corrupted, hook_name, clean_act, index, metric) -> float:
    """Run ``corrupted`` with the clean activation written at ``index`` of ``hook_name``."""

    def write(act, hook):
        act = act.clone()
        act[index] = clean_act[index]
        return act

    with torch.no_grad():
        return float(metric(model.run_with_hooks(corrupted, fwd_hooks=[(hook_name, write)])))


@pytest.mark.parametrize("kind", ["cls", "mlm"])
def test_tl_get_act_patch_resid_pre_matches_hand_patch(kind):
    model, metric = tiny_model(kind), metric_of(kind)
    clean, corrupted = token_pair()
    with torch.no_grad():
        _, cache = model.run_with_cache(clean)
        grid = patching.get_act_patch_resid_pre(model, corrupted, cache, metric)
        base = float(metric(model(corrupted)))
        clean_metric = float(metric(model(clean)))
    assert grid.shape == (L, P)
    for l in range(L):
        name = f"blocks.{l}.hook_resid_pre"
        for pos in range(P):
            ref = hand_patch(model, corrupted, name, cache[name], (slice(None), pos), metric)
            assert abs(float(grid[l, pos]) - ref) <= TOL, (l, pos)
    # layer 0 at a position whose token is the same: nothing changes; at the two changed ones it does
    same = [0, 1, 3, 5, 6]
    assert (grid[0, same] - base).abs().max() <= TOL
    assert (grid[0, [2, 4]] - base).abs().min() > 1e-3
    assert abs(clean_metric - base) > 1e-2  # the corruption matters


@pytest.mark.parametrize("kind", ["cls", "mlm"])
def test_tl_get_act_patch_attn_head_out_by_pos_matches_hand_patch_of_hook_z(kind):
    model, metric = tiny_model(kind), metric_of(kind)
    clean, corrupted = token_pair()
    with torch.no_grad():
        _, cache = model.run_with_cache(clean)
        grid = patching.get_act_patch_attn_head_out_by_pos(model, corrupted, cache, metric)
    assert grid.shape == (L, P, H)
    for l in range(L):
        name = f"blocks.{l}.attn.hook_z"
        for pos in range(P):
            for h in range(H):
                ref = hand_patch(model, corrupted, name, cache[name], (slice(None), pos, h), metric)
                assert abs(float(grid[l, pos, h]) - ref) <= TOL, (l, pos, h)
    assert float(grid.std()) > 1e-3  # the cells differ: a real grid, not a constant


@pytest.mark.skipif(not hasattr(patching, "PatchingResult"), reason="TL 4.x: reduce= / baseline= / PatchingResult")
def test_tl_per_example_patching_result_matches_hand_patch():
    model = tiny_model("cls")
    clean, corrupted = token_pair()
    per_example = lambda logits: logits[:, 0] - logits[:, 1]  # noqa: E731  [B]
    with torch.no_grad():
        _, cache = model.run_with_cache(clean)
        res = patching.get_act_patch_attn_head_out_by_pos(model, corrupted, cache, per_example,
                                                          reduce="none", baseline=True)
        base = per_example(model(corrupted))
    assert res.values.shape == (L, P, H, B)
    assert (res.baseline - base).abs().max() <= TOL
    name = "blocks.1.attn.hook_z"
    for pos, h in [(0, 0), (0, 3), (2, 1)]:
        for b in range(B):
            one = lambda logits, b=b: per_example(logits)[b]  # noqa: E731
            ref = hand_patch(model, corrupted, name, cache[name], (slice(None), pos, h), one)
            assert abs(float(res.values[1, pos, h, b]) - ref) <= TOL


# ---------------------------------------------------------------------- attribution patching
def acts_and_grads(model, tokens, metric, names, fwd_hooks=()):
    """The TransformerLens idiom: forward hooks cache activations, backward hooks cache
    ``∂metric/∂activation``; returns ``(metric value, acts, grads)``."""
    acts, grads = {}, {}

    def save_act(t, hook):
        acts[hook.name] = t.detach().clone()

    def save_grad(g, hook):
        grads[hook.name] = g.detach().clone()

    keep = lambda n: n in names  # noqa: E731
    with model.hooks(fwd_hooks=[*fwd_hooks, (keep, save_act)], bwd_hooks=[(keep, save_grad)]):
        value = metric(model(tokens))
        value.backward()
    model.zero_grad(set_to_none=True)
    return float(value.detach()), acts, grads


@pytest.mark.parametrize("kind", ["cls", "mlm"])
def test_attribution_patching_at_readout_is_exact_for_a_linear_metric(kind):
    """logits = readout_in @ W.T + b, and the metric is linear in the logits: the first-order
    estimate of patching any part of ``readout.hook_in`` is the patch effect itself — here for a
    large corruption (two different tokens)."""
    model, metric = tiny_model(kind, seed=2), metric_of(kind)
    clean, corrupted = token_pair(seed=3)
    name = "readout.hook_in"
    with torch.no_grad():
        _, cache = model.run_with_cache(clean, names_filter=name)
        clean_metric = float(metric(model(clean)))
    base, acts, grads = acts_and_grads(model, corrupted, metric, {name})
    delta = cache[name] - acts[name]  # cls [B, D]; MLM [B, P, D]
    attribution = (delta * grads[name]).reshape(-1, D).sum(0)  # per readout node
    assert abs(clean_metric - base) > 1e-2
    assert abs(float(attribution.sum()) - (clean_metric - base)) <= TOL  # patching all of it
    for j in range(D):
        effect = hand_patch(model, corrupted, name, cache[name], (..., j), metric) - base
        assert abs(float(attribution[j]) - effect) <= TOL, j


def test_run_with_cache_incl_bwd_gradients_are_the_autograd_ones():
    """``run_with_cache(..., return_type="loss", labels=..., incl_bwd=True)``: the ``*_grad``
    entries are ``∂loss/∂activation`` (the scalar TL's incl_bwd needs is HookedBert's loss)."""
    model = tiny_model("cls", seed=4)
    clean, _ = token_pair()
    labels = torch.tensor([0, 2])
    names = ["blocks.0.attn.hook_z", "blocks.1.attn.hook_z", "blocks.1.hook_resid_pre", "readout.hook_in"]
    loss, cache = model.run_with_cache(clean, return_type="loss", labels=labels, incl_bwd=True,
                                       names_filter=lambda n: n in names)
    model.zero_grad(set_to_none=True)
    live = {}
    with model.hooks(fwd_hooks=[(n, lambda t, hook: live.__setitem__(hook.name, t)) for n in names]):
        ref_loss = model(clean, return_type="loss", labels=labels)
        ref = torch.autograd.grad(ref_loss, [live[n] for n in names])
    assert abs(float(loss.detach()) - float(ref_loss.detach())) <= TOL
    for n, g in zip(names, ref):
        assert cache[n + "_grad"].shape == g.shape
        assert (cache[n + "_grad"] - g).abs().max() <= TOL, n
        assert float(g.abs().max()) > 0


def _tl_attribution_module():
    try:
        from transformer_lens.tools.analysis import attribution_patching
    except ImportError:  # older TL releases have no attribution tools
        return None
    return attribution_patching


@pytest.mark.skipif(_tl_attribution_module() is None, reason="this TL has no tools.analysis.attribution_patching")
def test_tl_cache_activation_and_gradient_matches_backward_hooks():
    """TL's own gradient cache for attribution patching (``tools.analysis``, in TL 3.9 and 4.3) on
    HookedBert, with an explicit ``names_filter``: its default set (and ``attribution_patch``'s
    node graph) names the Bridge's root ``hook_embed``, which HookedBert does not have."""
    ap = _tl_attribution_module()
    model, metric = tiny_model("cls", seed=9), metric_of("cls")
    _, corrupted = token_pair()
    names = {"blocks.0.attn.hook_z", "blocks.1.attn.hook_z", "readout.hook_in"}
    gc = ap.cache_activation_and_gradient(model, corrupted, metric, names_filter=sorted(names))
    base, acts, grads = acts_and_grads(model, corrupted, metric, names)
    assert abs(float(gc.metric) - base) <= TOL
    for n in names:
        assert (gc.activations[n] - acts[n]).abs().max() <= TOL
        assert (gc.gradients[n] - grads[n]).abs().max() <= TOL, n


def embed_noise(eps: float, seed: int = 5):
    """A small corruption: the clean tokens with ``eps`` · fixed noise added to the token embeddings."""
    noise = torch.randn(B, P, D, generator=torch.Generator().manual_seed(seed))
    return ("embed.hook_embed", lambda x, hook: x + eps * noise)


def test_head_attribution_ranks_heads_like_tl_activation_patching():
    """Per head (all positions) and per (layer-0 head, position): attribution scores vs the real
    effects TL's ``get_act_patch_attn_head_out_all_pos`` / ``_by_pos`` measure, with the corrupted
    run = clean tokens + small embedding noise (a hook TL's patches stack on)."""
    model, metric = tiny_model("cls", seed=6), metric_of("cls")
    clean, _ = token_pair()
    corrupt = embed_noise(0.05)
    z = [f"blocks.{l}.attn.hook_z" for l in range(L)]
    with torch.no_grad():
        _, cache = model.run_with_cache(clean, names_filter=lambda n: n in z)
        clean_metric = float(metric(model(clean)))
    base, acts, grads = acts_and_grads(model, clean, metric, set(z), fwd_hooks=[corrupt])
    attr_cells = torch.stack([((cache[n] - acts[n]) * grads[n]).sum((0, 3)) for n in z])  # [L, P, H]

    with torch.no_grad(), model.hooks(fwd_hooks=[corrupt]):  # the corrupted model
        assert abs(float(metric(model(clean))) - base) <= TOL
        per_head = patching.get_act_patch_attn_head_out_all_pos(model, clean, cache, metric) - base  # [L, H]
        per_cell = patching.get_act_patch_attn_head_out_by_pos(model, clean, cache, metric) - base  # [L, P, H]
    assert per_head.shape == (L, H) and per_cell.shape == (L, P, H)
    assert abs(clean_metric - base) > 1e-3
    attr_head = attr_cells.sum(1)
    rho_head = spearmanr(attr_head.flatten(), per_head.flatten()).statistic
    rho_cell = spearmanr(attr_cells[0].flatten(), per_cell[0].flatten()).statistic  # every layer-0 cell matters
    assert rho_head > 0.8, (attr_head, per_head)
    assert rho_cell > 0.8, (attr_cells[0], per_cell[0])
    # first order: close in value too, not just in rank
    assert (attr_head - per_head).abs().max() <= 0.2 * per_head.abs().max()
    # last block: only [CLS] feeds the classifier, so other positions have no effect and no gradient
    assert per_cell[1, 1:].abs().max() <= TOL and attr_cells[1, 1:].abs().max() <= TOL


def test_edge_attribution_head_to_qkv_matches_path_patching():
    """EAP edges from each block-0 head to the query/key/value input of each block-1 head
    (``use_split_qkv_input``: per-head copies ``blocks.1.hook_{q,k,v}_input``).

    Post-LayerNorm BERT's stream is not a sum of head outputs (LN2(LN1(x + a) + m) sits between
    block 0's heads and block 1), so the edge score carries the reader's gradient back to the
    writer through block 0's tail: ``Δz_h · (∂x_1/∂z_h)ᵀ ∂metric/∂in_{h',c}`` — the first-order
    effect of the path patch "head h's clean z reaches only input c of head h'".  Checked:
    (a) a head's edge scores over all its readers (12 q/k/v inputs + the skip connection of
    block 1) sum exactly to its node score; (b) they rank the 48 edges as real path patching does.
    """
    model, metric = tiny_model("cls", seed=7), metric_of("cls")
    model.set_use_split_qkv_input(True)
    clean, _ = token_pair()
    corrupt = embed_noise(0.05, seed=8)
    z0, x1 = "blocks.0.attn.hook_z", "blocks.1.hook_resid_pre"
    inputs = {c: f"blocks.1.hook_{c}_input" for c in "qkv"}
    with torch.no_grad():
        _, cache = model.run_with_cache(clean, names_filter=z0)
    base, acts, grads = acts_and_grads(model, clean, metric, {z0, x1, *inputs.values()}, fwd_hooks=[corrupt])
    delta = cache[z0] - acts[z0]  # [B, P, H, Dh]

    # a corrupted forward that keeps the graph from z0 to x1, to carry reader gradients back
    live = {}
    keep = lambda t, hook: live.__setitem__(hook.name, t)  # noqa: E731
    with model.hooks(fwd_hooks=[corrupt, (z0, keep), (x1, keep)]):
        model(clean)

    def to_writers(g_x1):  # [B, P, D] gradient at x1 → per block-0 head score [H]
        (g_z,) = torch.autograd.grad(live[x1], live[z0], grad_outputs=g_x1, retain_graph=True)
        return (delta * g_z).sum((0, 1, 3))

    eap = {(c, hd): to_writers(grads[inputs[c]][:, :, hd]) for c in "qkv" for hd in range(H)}  # each [H]
    skip = grads[x1] - sum(grads[inputs[c]].sum(2) for c in "qkv")  # the residual branch of block 1
    node = (delta * grads[z0]).sum((0, 1, 3))  # node scores of the block-0 heads (backward hook at z0)
    total = sum(eap.values()) + to_writers(skip)
    assert (total - node).abs().max() <= TOL
    assert float(skip.abs().max()) > 0 and float(node.abs().max()) > 1e-3

    # real path patching: block 1's input with head h's clean z, into one copy only
    x1_patched = {}
    for h in range(H):
        def patch_z(t, hook, h=h):
            t = t.clone()
            t[:, :, h] = cache[z0][:, :, h]
            return t
        with torch.no_grad():
            model.run_with_hooks(clean, fwd_hooks=[corrupt, (z0, patch_z), (x1, keep)])
        x1_patched[h] = live[x1].detach()
    est, real = [], []
    for (c, hd), scores in eap.items():
        for h in range(H):
            def patch_in(t, hook, h=h, hd=hd):
                t = t.clone()
                t[:, :, hd] = x1_patched[h]
                return t
            with torch.no_grad():
                out = model.run_with_hooks(clean, fwd_hooks=[corrupt, (inputs[c], patch_in)])
            real.append(float(metric(out)) - base)
            est.append(float(scores[h]))
    est, real = torch.tensor(est), torch.tensor(real)
    assert real.abs().max() > 1e-3
    rho = spearmanr(est, real).statistic
    assert rho > 0.8, rho
