"""HookedBert against the Hugging Face BERT it wraps (tiny random configs, fp32, offline).

Parity (MLM / classifier / bare encoder, padded batches, token types, SDPA and eager paths),
the ``positions=`` and ``stop_at_layer`` / ``start_at_layer`` paths, the documented hook names
and shapes, writes at every hook point, pattern edits, and the one-line input errors.
"""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel

from nodeprobe.errors import NodeprobeError
from nodeprobe.model import HookedBert

TOL = 1e-5
SMALL = dict(vocab_size=37, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=24, max_position_embeddings=12, num_labels=3)
WIDE = dict(vocab_size=50, hidden_size=48, num_hidden_layers=6, num_attention_heads=12,
            intermediate_size=64, max_position_embeddings=16, num_labels=5)
CLASSES = {"mlm": BertForMaskedLM, "cls": BertForSequenceClassification, "base": BertModel}


def make_hf(task: str, sizes: dict, seed: int = 0, attn: str | None = None):
    """A random BERT; initializer_range 0.2 so that heads, positions and tokens matter."""
    torch.manual_seed(seed)
    cfg = BertConfig(initializer_range=0.2, type_vocab_size=2, **sizes)
    hf = CLASSES[task](cfg).eval()
    if attn is not None:
        hf.config._attn_implementation = attn
    return hf


def make_batch(sizes: dict, B: int = 4, P: int = 9, seed: int = 1):
    """Token ids, a padded attention mask (row 0 full, others shorter), random token types."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, sizes["vocab_size"], (B, P), generator=g)
    lengths = [P] + torch.randint(2, P, (B - 1,), generator=g).tolist()
    mask = (torch.arange(P)[None] < torch.tensor(lengths)[:, None]).long()
    ids = ids.masked_fill(mask == 0, 0)  # [PAD]
    types = torch.randint(0, 2, (B, P), generator=g) * mask
    return ids, mask, types


def hf_out(hf, ids, mask, types, **kw):
    out = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, **kw)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def maxdiff(a, b) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).detach().abs().max())



@pytest.fixture(scope="module")
def models():
    """task → (hf, HookedBert) on the 6-block × 12-head config."""
    out = {}
    for task in CLASSES:
        hf = make_hf(task, WIDE, seed=3)
        out[task] = (hf, HookedBert(hf))
    return out


# ---------------------------------------------------------------------- parity
@pytest.mark.parametrize("task", list(CLASSES))
@pytest.mark.parametrize("sizes", [SMALL, WIDE], ids=["2x4", "6x12"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_forward_matches_hf(task, sizes, attn):
    hf = make_hf(task, sizes, seed=7, attn=attn)
    model = HookedBert(hf)
    ids, mask, types = make_batch(sizes)
    with torch.no_grad():
        ref = hf_out(hf, ids, mask, types)
        got = model(ids, attention_mask=mask, token_type_ids=types)
        assert maxdiff(got, ref) <= TOL
        # no mask / no token types: HF defaults (all attended, type 0)
        ref0 = hf_out(hf, ids, None, None)
        assert maxdiff(model(ids), ref0) <= TOL
    assert ref.abs().max() > 0.1  # not a degenerate all-zero comparison
    expected = {"mlm": (4, 9, sizes["vocab_size"]), "cls": (4, sizes["num_labels"]),
                "base": (4, 9, sizes["hidden_size"])}[task]
    assert tuple(got.shape) == expected


def test_padding_is_masked(models):
    """A padded row gives the same output as the same row run alone, unpadded."""
    hf, model = models["cls"]
    ids, mask, types = make_batch(WIDE)
    n = int(mask[2].sum())
    with torch.no_grad():
        full = model(ids, attention_mask=mask, token_type_ids=types)
        alone = model(ids[2:3, :n], token_type_ids=types[2:3, :n])
    assert maxdiff(full[2:3], alone) <= TOL


@pytest.mark.parametrize("task", ["mlm", "cls"])
def test_eager_path_equals_sdpa_path(models, task):
    """A (read-only) pattern hook switches the block to eager attention; the numbers stay put."""
    hf, model = models[task]
    ids, mask, types = make_batch(WIDE)
    calls = []

    def watch(t, hook):
        calls.append(hook.name)

    with torch.no_grad():
        sdpa = model(ids, attention_mask=mask, token_type_ids=types)
        eager = model.run_with_hooks(ids, attention_mask=mask, token_type_ids=types,
                                     fwd_hooks=[(lambda n: n.endswith("hook_pattern"), watch)])
        ref = hf_out(hf, ids, mask, types)
    assert len(calls) == WIDE["num_hidden_layers"]
    assert maxdiff(eager, sdpa) <= TOL
    assert maxdiff(eager, ref) <= TOL
    assert not any(b.attn._needs_eager() for b in model.blocks)  # back on the fused path


def test_backward_only_pattern_hook_fires(models):
    """A gradient hook alone on hook_pattern must not be skipped by the fused kernel."""
    _, model = models["cls"]
    ids, mask, types = make_batch(WIDE)
    grads = {}

    def save_grad(g, hook):
        grads[hook.name] = g.detach()

    with model.hooks(bwd_hooks=[("blocks.2.attn.hook_pattern", save_grad)]):
        out = model(ids, attention_mask=mask, token_type_ids=types)
        out[:, 0].sum().backward()
    model.hf.zero_grad(set_to_none=True)
    assert grads["blocks.2.attn.hook_pattern"].shape == (4, 12, 9, 9)
    assert grads["blocks.2.attn.hook_pattern"].abs().sum() > 0


# ---------------------------------------------------------------------- positions / layers
def test_positions_equal_full_logits_indexed(models):
    _, model = models["mlm"]
    ids, mask, types = make_batch(WIDE)
    sel = torch.zeros_like(mask, dtype=torch.bool)
    sel[0, [1, 4]] = True
    sel[2, 1] = True
    sel[3, 0] = True
    with torch.no_grad():
        full = model(ids, attention_mask=mask, token_type_ids=types)
        by_mask = model(ids, attention_mask=mask, token_type_ids=types, positions=sel)
        b, p = sel.nonzero(as_tuple=True)
        by_index = model(ids, attention_mask=mask, token_type_ids=types, positions=(b, p))
    assert by_mask.shape == (4, WIDE["vocab_size"])
    assert maxdiff(by_mask, full[sel]) <= TOL
    assert maxdiff(by_index, full[b, p]) <= TOL


@pytest.mark.parametrize("task", list(CLASSES))
def test_stop_and_start_at_layer_reproduce_forward(models, task):
    hf, model = models[task]
    ids, mask, types = make_batch(WIDE)
    n = WIDE["num_hidden_layers"]
    with torch.no_grad():
        full = model(ids, attention_mask=mask, token_type_ids=types)
        _, cache = model.run_with_cache(ids, attention_mask=mask, token_type_ids=types,
                                        names_filter=lambda k: "resid" in k)
        for layer in range(n):
            resid = model(ids, attention_mask=mask, token_type_ids=types, stop_at_layer=layer)
            assert maxdiff(resid, cache[f"blocks.{layer}.hook_resid_pre"]) == 0.0
            out = model(start_at_layer=layer, residual=resid, attention_mask=mask)
            assert maxdiff(out, full) <= TOL
        last = model(ids, attention_mask=mask, token_type_ids=types, stop_at_layer=n)
        assert maxdiff(last, cache[f"blocks.{n - 1}.hook_normalized_resid_post"]) == 0.0
        hidden = hf(input_ids=ids, attention_mask=mask, token_type_ids=types,
                    output_hidden_states=True).hidden_states
        for layer in range(n):
            assert maxdiff(cache[f"blocks.{layer}.hook_resid_pre"], hidden[layer]) <= TOL
        assert maxdiff(last, hidden[n]) <= TOL


# ---------------------------------------------------------------------- hook names and shapes
def documented_shapes(task, B, P, n=None, sizes=WIDE):
    D, H = sizes["hidden_size"], sizes["num_attention_heads"]
    Dh, F = D // H, sizes["intermediate_size"]
    shapes = {"embed.hook_embed": (B, P, D), "embed.hook_pos_embed": (B, P, D),
              "embed.hook_token_type_embed": (B, P, D), "embed.ln.hook_scale": (B, P, 1),
              "embed.ln.hook_normalized": (B, P, D), "hook_full_embed": (B, P, D)}
    for l in range(sizes["num_hidden_layers"]):
        b = f"blocks.{l}"
        shapes.update({
            f"{b}.ln1.hook_scale": (B, P, 1), f"{b}.ln1.hook_normalized": (B, P, D),
            f"{b}.ln2.hook_scale": (B, P, 1), f"{b}.ln2.hook_normalized": (B, P, D),
            f"{b}.hook_normalized_resid_post": (B, P, D),
            f"{b}.hook_resid_pre": (B, P, D),
            f"{b}.attn.hook_q": (B, P, H, Dh), f"{b}.attn.hook_k": (B, P, H, Dh),
            f"{b}.attn.hook_v": (B, P, H, Dh),
            f"{b}.attn.hook_attn_scores": (B, H, P, P), f"{b}.attn.hook_pattern": (B, H, P, P),
            f"{b}.attn.hook_z": (B, P, H, Dh), f"{b}.hook_attn_out": (B, P, D),
            f"{b}.hook_resid_mid": (B, P, D), f"{b}.mlp.hook_pre": (B, P, F),
            f"{b}.mlp.hook_post": (B, P, F), f"{b}.hook_mlp_out": (B, P, D),
            f"{b}.hook_resid_post": (B, P, D),
        })
    shapes["readout.hook_in"] = {"mlm": (B, P, D) if n is None else (n, D), "cls": (B, D), "base": (B, D)}[task]
    if task == "mlm":
        rows = (B, P) if n is None else (n,)
        shapes.update({"mlm_head.ln.hook_scale": (*rows, 1), "mlm_head.ln.hook_normalized": (*rows, D),
                       "unembed.hook_in": (*rows, D), "unembed.hook_out": (*rows, sizes["vocab_size"])})
    return shapes


@pytest.mark.parametrize("task", list(CLASSES))
def test_run_with_cache_names_and_shapes(models, task):
    hf, model = models[task]
    ids, mask, types = make_batch(WIDE)
    with torch.no_grad():
        out, cache = model.run_with_cache(ids, attention_mask=mask, token_type_ids=types)
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
    expected = documented_shapes(task, 4, 9)
    optional = {n for n in model.hook_dict if n.rsplit(".", 1)[-1] in
                ("hook_result", "hook_attn_in", "hook_q_input", "hook_k_input", "hook_v_input", "hook_mlp_in")}
    assert set(cache) == set(expected) == set(model.hook_dict) - optional
    for name, shape in expected.items():
        assert tuple(cache[name].shape) == shape, name
    # values, not just shapes
    assert maxdiff(cache["hook_full_embed"], ref.hidden_states[0]) <= TOL
    for l in range(WIDE["num_hidden_layers"]):  # TransformerLens's BERT meanings (HookedEncoder)
        b = f"blocks.{l}"
        assert maxdiff(cache[f"{b}.hook_resid_mid"], cache[f"{b}.hook_resid_pre"] + cache[f"{b}.hook_attn_out"]) <= TOL
        ln1 = hf.base_model.encoder.layer[l].attention.output.LayerNorm
        y = ln1(cache[f"{b}.hook_resid_mid"])
        assert maxdiff(cache[f"{b}.ln1.hook_normalized"] * ln1.weight + ln1.bias, y) <= TOL
        assert maxdiff(cache[f"{b}.hook_resid_post"], y + cache[f"{b}.hook_mlp_out"]) <= TOL
        assert maxdiff(cache[f"{b}.hook_normalized_resid_post"], ref.hidden_states[l + 1]) <= TOL
        r = cache[f"{b}.hook_resid_post"]
        assert maxdiff(cache[f"{b}.ln2.hook_scale"], (r.var(-1, unbiased=False, keepdim=True) + 1e-12).sqrt()) <= TOL
    emb = hf.base_model.embeddings
    parts = cache["embed.hook_embed"] + cache["embed.hook_pos_embed"] + cache["embed.hook_token_type_embed"]
    assert maxdiff(emb.LayerNorm(parts), cache["hook_full_embed"]) <= TOL
    assert maxdiff(cache["embed.hook_embed"], emb.word_embeddings(ids)) == 0.0
    W_O = hf.base_model.encoder.layer[1].attention.output.dense  # base_model: the BertModel
    z = cache["blocks.1.attn.hook_z"]
    assert maxdiff(W_O(z.flatten(2)), cache["blocks.1.hook_attn_out"]) <= TOL
    pat = cache["blocks.1.attn.hook_pattern"]
    assert maxdiff(pat.sum(-1), torch.ones(4, 12, 9)) <= TOL
    assert float(pat.masked_select((mask == 0)[:, None, None, :].expand_as(pat)).abs().max()) == 0.0
    v = cache["blocks.1.attn.hook_v"]
    assert maxdiff(torch.einsum("bhqk,bkhd->bqhd", pat, v), z) <= TOL
    if task != "base":
        W, b = model.readout_weights()
        assert maxdiff(cache["readout.hook_in"] @ W.T + b, out) <= TOL


def test_run_with_cache_mlm_positions_readout(models):
    _, model = models["mlm"]
    ids, mask, types = make_batch(WIDE)
    sel = mask.bool() & (torch.arange(9) % 3 == 1)
    with torch.no_grad():
        out, cache = model.run_with_cache(ids, attention_mask=mask, token_type_ids=types, positions=sel)
    n = int(sel.sum())
    for name, shape in documented_shapes("mlm", 4, 9, n=n).items():
        assert tuple(cache[name].shape) == shape, name
    W, b = model.readout_weights()
    assert maxdiff(cache["readout.hook_in"] @ W.T + b, out) <= TOL


def test_pattern_matches_hf_attentions(models):
    hf, model = models["mlm"]
    ids, mask, types = make_batch(WIDE)
    saved = hf.config._attn_implementation
    hf.config._attn_implementation = "eager"  # HF returns attention weights only when eager
    try:
        with torch.no_grad():
            ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, output_attentions=True)
            _, cache = model.run_with_cache(ids, attention_mask=mask, token_type_ids=types,
                                            names_filter=lambda k: k.endswith("hook_pattern"))
    finally:
        hf.config._attn_implementation = saved
    for l, att in enumerate(ref.attentions):
        assert maxdiff(cache[f"blocks.{l}.attn.hook_pattern"], att) <= TOL


# ---------------------------------------------------------------------- writes take effect
WRITE_SITES = [
    "embed.hook_embed", "embed.hook_pos_embed", "embed.hook_token_type_embed", "embed.ln.hook_scale",
    "embed.ln.hook_normalized", "hook_full_embed", "blocks.{l}.hook_resid_pre", "blocks.{l}.ln1.hook_scale",
    "blocks.{l}.ln1.hook_normalized", "blocks.{l}.ln2.hook_scale", "blocks.{l}.ln2.hook_normalized",
    "blocks.{l}.hook_normalized_resid_post", "blocks.{l}.attn.hook_q", "blocks.{l}.attn.hook_k",
    "blocks.{l}.attn.hook_v", "blocks.{l}.attn.hook_attn_scores", "blocks.{l}.attn.hook_pattern",
    "blocks.{l}.attn.hook_z", "blocks.{l}.hook_attn_out", "blocks.{l}.hook_resid_mid",
    "blocks.{l}.mlp.hook_pre", "blocks.{l}.mlp.hook_post", "blocks.{l}.hook_mlp_out",
    "blocks.{l}.hook_resid_post", "readout.hook_in",
]


def add_noise(t, hook):
    g = torch.Generator().manual_seed(5)
    return t + 0.5 * torch.randn(t.shape, generator=g)


@pytest.mark.parametrize("task", ["mlm", "cls"])
@pytest.mark.parametrize("site", WRITE_SITES)
def test_write_at_every_hook_point_changes_output(models, task, site):
    _, model = models[task]
    ids, mask, types = make_batch(WIDE)
    name = site.format(l=4)
    with torch.no_grad():
        clean = model(ids, attention_mask=mask, token_type_ids=types)
        hooked = model.run_with_hooks(ids, attention_mask=mask, token_type_ids=types,
                                      fwd_hooks=[(name, add_noise)])
        again = model(ids, attention_mask=mask, token_type_ids=types)
    assert maxdiff(hooked, clean) > 1e-3, f"writing to {name} was a no-op"
    assert maxdiff(again, clean) == 0.0  # and the hook is gone afterwards


def test_resid_write_equals_resume_from_edited_residual(models):
    _, model = models["mlm"]
    ids, mask, types = make_batch(WIDE)
    with torch.no_grad():
        resid = model(ids, attention_mask=mask, token_type_ids=types, stop_at_layer=3)
        edited = add_noise(resid, None)
        via_hook = model.run_with_hooks(ids, attention_mask=mask, token_type_ids=types,
                                        fwd_hooks=[("blocks.3.hook_resid_pre", add_noise)])
        via_resume = model(start_at_layer=3, residual=edited, attention_mask=mask)
    assert maxdiff(via_hook, via_resume) <= TOL


def test_pattern_edit_takes_effect(models):
    """Replace layer 2's pattern by uniform attention over the real tokens: z becomes mean(v)."""
    _, model = models["cls"]
    ids, mask, types = make_batch(WIDE)
    keep = mask[:, None, None, :].float()

    def uniform(pattern, hook):
        return (keep / keep.sum(-1, keepdim=True)).expand_as(pattern)

    cache = {}

    def save(t, hook):
        cache[hook.name] = t.detach()

    with torch.no_grad():
        clean = model(ids, attention_mask=mask, token_type_ids=types)
        out = model.run_with_hooks(ids, attention_mask=mask, token_type_ids=types, fwd_hooks=[
            ("blocks.2.attn.hook_pattern", uniform),
            ("blocks.2.attn.hook_v", save), ("blocks.2.attn.hook_z", save),
        ])
    v, z = cache["blocks.2.attn.hook_v"], cache["blocks.2.attn.hook_z"]
    m = mask[:, :, None, None].float()
    mean_v = (v * m).sum(1, keepdim=True) / m.sum(1, keepdim=True)  # [B, 1, H, Dh]
    assert maxdiff(z, mean_v.expand_as(z)) <= TOL
    assert maxdiff(out, clean) > 1e-3


# ---------------------------------------------------------------------- errors
def test_bad_inputs_raise_nodeprobe_error(models):
    _, model = models["mlm"]
    V, P = WIDE["vocab_size"], WIDE["max_position_embeddings"]
    with pytest.raises(NodeprobeError, match=f"token id {V}"):
        model(torch.tensor([[2, V, 3]]))
    with pytest.raises(NodeprobeError, match="token id -1"):
        model(torch.tensor([[2, -1, 3]]))
    with pytest.raises(NodeprobeError, match=f"sequence length {P + 1}"):
        model(torch.ones(1, P + 1, dtype=torch.long))
    with pytest.raises(NodeprobeError, match="integer token ids"):
        model(torch.ones(1, 3))
    with pytest.raises(NodeprobeError, match="token type id 2"):
        model(torch.ones(1, 3, dtype=torch.long), token_type_ids=torch.tensor([[0, 1, 2]]))
    with pytest.raises(NodeprobeError, match="needs input_ids"):
        model()
    with pytest.raises(NodeprobeError, match="residual"):
        model(start_at_layer=1)
    with pytest.raises(NodeprobeError, match="start_at_layer=6"):
        model(start_at_layer=6, residual=torch.zeros(1, 3, WIDE["hidden_size"]))
    model(torch.ones(1, P, dtype=torch.long))  # exactly max length is fine
    # a bad id inside run_with_hooks / run_with_cache is the same one-line error
    with pytest.raises(NodeprobeError):
        model.run_with_cache(torch.tensor([[V + 5]]))
    with pytest.raises(NodeprobeError, match="bare BertModel has no readout"):
        models["base"][1].readout_weights()


def test_unsupported_model_class():
    from transformers import BertForNextSentencePrediction

    torch.manual_seed(0)
    nsp = BertForNextSentencePrediction(BertConfig(**SMALL))
    with pytest.raises(NodeprobeError, match="model class BertForNextSentencePrediction"):
        HookedBert(nsp)
