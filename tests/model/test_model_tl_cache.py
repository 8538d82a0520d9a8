"""BertActivationCache: each TransformerLens ActivationCache method against a brute-force post-LN computation.

The reference (``Trace``) is taken from the Hugging Face modules themselves (forward hooks on the
embeddings, every LayerNorm, ``attention.output.dense`` and ``output.dense``), not from the hooked
model's cache: a component is carried to a point by applying, LayerNorm after LayerNorm,
``w ⊙ (c − mean c) / s`` with ``s = sqrt(var + eps)`` recomputed from that LayerNorm's HF input.
Tiny random BERTs (3 blocks, every parameter perturbed so LayerNorm weights ≠ 1 and biases ≠ 0),
a padded batch with token types, fp32.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformer_lens
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

from nodeprobe.errors import NodeprobeError
from nodeprobe.model import HookedBert
from nodeprobe.model.tl_cache import BertActivationCache

L, H, D, FF = 3, 4, 16, 32
CLOSE = dict(rtol=1e-5, atol=1e-5)
IDS = torch.tensor([[2, 5, 7, 3, 9, 11], [2, 9, 3, 4, 0, 0], [2, 30, 31, 8, 6, 0]])
MASK = (IDS != 0).long()
TYPES = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 0, 0], [0, 1, 1, 1, 1, 0]])


def _hf(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=40, hidden_size=D, num_hidden_layers=L, num_attention_heads=H, intermediate_size=FF,
                     num_labels=3, max_position_embeddings=16)
    hf = (BertForMaskedLM if kind == "mlm" else BertForSequenceClassification)(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return hf


class Trace:
    """One HF forward with every LayerNorm's input/output and every sublayer's input/output recorded."""

    def __init__(self, hf, ids=IDS, mask=MASK, types=TYPES):
        self.hf, bert = hf, hf.bert
        layers = bert.encoder.layer
        mods = {"tok": bert.embeddings.word_embeddings, "type": bert.embeddings.token_type_embeddings,
                "pos": bert.embeddings.position_embeddings}
        # the stream's LayerNorms in order: embed.ln, then ln1, ln2 of each block
        self.lns = [bert.embeddings.LayerNorm]
        for l, layer in enumerate(layers):
            self.lns += [layer.attention.output.LayerNorm, layer.output.LayerNorm]
            mods[f"attn{l}"], mods[f"mlp{l}"] = layer.attention.output.dense, layer.output.dense
        for k, ln in enumerate(self.lns):
            mods[f"ln{k}"] = ln
        if hasattr(hf, "cls"):
            mods["head_ln"] = hf.cls.predictions.transform.LayerNorm
        if getattr(bert, "pooler", None) is not None:
            mods["pooler"] = bert.pooler
        self.rec, handles = {}, []
        for name, mod in mods.items():
            handles.append(mod.register_forward_hook(
                lambda m, i, o, name=name: self.rec.__setitem__(name, (i[0].detach() if i else None, o.detach()))))
        try:
            with torch.no_grad():
                self.out = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        finally:
            for h in handles:
                h.remove()
        B, P = ids.shape
        self.rec["pos"] = (None, self.rec["pos"][1].expand(B, P, D))
        self.scales = [(self.rec[f"ln{k}"][0].var(-1, unbiased=False, keepdim=True) + ln.eps).sqrt()
                       for k, ln in enumerate(self.lns)]

    def out_of(self, name):
        return self.rec[name][1]

    def frozen(self, c, k):
        """LayerNorm k with its scale frozen at this run's value, without the bias."""
        return (c - c.mean(-1, keepdim=True)) / self.scales[k] * self.lns[k].weight.detach()

    def carry(self, c, start, stop):
        for k in range(start, stop + 1):
            c = self.frozen(c, k)
        return c

    def ln_bias(self, stop):
        b = torch.zeros(D)
        for k in range(stop + 1):
            b = self.frozen(b, k) + self.lns[k].bias.detach()
        return b

    def stream(self, layer, mlp_input=False):
        if mlp_input:
            return self.out_of(f"ln{2 * layer + 1}")
        return self.out.hidden_states[layer]

    def decomposition(self, layer, mlp_input=False):
        """label → carried component of the stream at the point (the documented order)."""
        stop = 2 * layer + int(mlp_input)
        out = {label: self.carry(self.out_of(name), 0, stop)
               for label, name in (("embed", "tok"), ("token_type_embed", "type"), ("pos_embed", "pos"))}
        for l in range(layer + int(mlp_input)):
            out[f"{l}_attn_out"] = self.carry(self.out_of(f"attn{l}"), 2 * l + 1, stop)
            if l < layer:
                out[f"{l}_mlp_out"] = self.carry(self.out_of(f"mlp{l}"), 2 * l + 2, stop)
        out["ln_bias"] = self.ln_bias(stop).expand_as(out["embed"])
        return out

    def head_results(self, l):
        """[H, B, P, D]: ctx_h @ W_O[h] from attention.output.dense's own input and weight."""
        ctx, W = self.rec[f"attn{l}"][0], self.hf.bert.encoder.layer[l].attention.output.dense.weight.detach()
        dh = D // H
        return torch.stack([ctx[..., h * dh:(h + 1) * dh] @ W[:, h * dh:(h + 1) * dh].T for h in range(H)])

    def neuron_results(self, l):
        """[F, B, P, D]: post_n · W_out[n] from output.dense's own input and weight."""
        post, W = self.rec[f"mlp{l}"][0], self.hf.bert.encoder.layer[l].output.dense.weight.detach()
        return post.permute(2, 0, 1)[..., None] * W.T[:, None, None, :]


@pytest.fixture(scope="module")
def mlm():
    hf = _hf("mlm")
    model = HookedBert(hf)
    with torch.no_grad():
        logits, cache = model.run_with_cache(IDS, attention_mask=MASK, token_type_ids=TYPES)
    return model, cache, Trace(hf), logits


@pytest.fixture(scope="module")
def cls():
    hf = _hf("cls", seed=1)
    model = HookedBert(hf)
    with torch.no_grad():
        logits, cache = model.run_with_cache(IDS, attention_mask=MASK, token_type_ids=TYPES)
    return model, cache, Trace(hf), logits


POINTS = [(l, False) for l in range(L + 1)] + [(l, True) for l in range(L)]


def test_cache_is_transformer_lens_activation_cache_and_indexes_like_it(mlm):
    model, cache, ref, logits = mlm
    assert isinstance(cache, transformer_lens.ActivationCache) and isinstance(cache, BertActivationCache)
    torch.testing.assert_close(logits, ref.out.logits, **CLOSE)
    z = ref.rec["attn0"][0].view(*IDS.shape, H, D // H)
    torch.testing.assert_close(cache["z", 0], z, **CLOSE)
    for l in range(L + 1):
        key = ("resid_pre", l) if l < L else f"blocks.{L - 1}.hook_normalized_resid_post"
        torch.testing.assert_close(cache[key], ref.out.hidden_states[l], **CLOSE)
    torch.testing.assert_close(cache["resid_pre", -1], ref.out.hidden_states[L - 1], **CLOSE)
    assert cache.has_embed and cache.has_pos_embed
    moved = cache.to("cpu")
    assert isinstance(moved, BertActivationCache)
    # batch slicing keeps the class and the meanings
    part = cache.apply_slice_to_batch_dim([0, 2])
    assert isinstance(part, BertActivationCache) and part.has_batch_dim
    torch.testing.assert_close(part.decompose_resid(2), cache.decompose_resid(2)[:, [0, 2]], **CLOSE)
    one = cache.apply_slice_to_batch_dim(1)
    assert isinstance(one, BertActivationCache) and not one.has_batch_dim
    torch.testing.assert_close(one.decompose_resid(2, mlp_input=True).sum(0), ref.stream(2, True)[1], **CLOSE)


def test_remove_batch_dim_keeps_the_post_ln_meanings():
    hf = _hf("mlm")
    model = HookedBert(hf)
    ids, types = IDS[:1], TYPES[:1]
    with torch.no_grad():
        _, cache = model.run_with_cache(ids, token_type_ids=types)
        ref = Trace(hf, ids, torch.ones_like(ids), types)
    cache = cache.remove_batch_dim()
    assert isinstance(cache, BertActivationCache) and not cache.has_batch_dim
    assert cache["z", 1].shape == (ids.shape[1], H, D // H)
    for layer, mlp_input in POINTS:
        parts = cache.decompose_resid(layer, mlp_input=mlp_input)
        torch.testing.assert_close(parts.sum(0), ref.stream(layer, mlp_input)[0], **CLOSE)
    heads = cache.stack_head_results(2, apply_ln=True)
    want = torch.cat([ref.carry(ref.head_results(l), 2 * l + 1, 4) for l in range(2)])[:, 0]
    torch.testing.assert_close(heads, want, **CLOSE)
    stack = ref.rec["head_ln"][0][0] * torch.eye(D)[:, None]  # [D, P, D]
    lin = cache.apply_ln_to_stack(stack, layer=-1, has_batch_dim=False)
    torch.testing.assert_close(lin.sum(0) + model.mlm_head.ln.b, ref.out_of("head_ln")[0], **CLOSE)


@pytest.mark.parametrize("layer,mlp_input", [p for p in POINTS if p[0] < L])  # layer L: the next test
def test_apply_ln_to_stack_is_the_linear_part_of_the_layernorm_feeding_that_input(mlm, layer, mlp_input):
    model, cache, ref, _ = mlm
    k = 2 * layer + int(mlp_input)  # embed.ln / ln2 of layer-1 (attention input), ln1 of layer (MLP input)
    v = ref.rec[f"ln{k}"][0]
    g = torch.Generator().manual_seed(k)
    parts = torch.randn(3, *v.shape, generator=g)
    stack = torch.cat([parts, (v - parts.sum(0))[None]])  # sums to the LayerNorm's input
    out = cache.apply_ln_to_stack(stack, layer, mlp_input=mlp_input)
    torch.testing.assert_close(out, ref.frozen(stack, k), **CLOSE)
    torch.testing.assert_close(out.sum(0) + ref.lns[k].bias, ref.out_of(f"ln{k}"), **CLOSE)
    # slices: the stack comes pos-sliced; the batch slice is applied here
    sl = cache.apply_ln_to_stack(stack[:, :, 1:4], layer, mlp_input=mlp_input, pos_slice=(1, 4), batch_slice=[0, 2])
    torch.testing.assert_close(sl, ref.frozen(stack, k)[:, [0, 2], 1:4], **CLOSE)
    at = cache.apply_ln_to_stack(stack[:, :, 2], layer, mlp_input=mlp_input, pos_slice=2, batch_slice=1)
    torch.testing.assert_close(at, ref.frozen(stack, k)[:, 1, 2], **CLOSE)
    # recompute_ln: each component through the whole LayerNorm with its own statistics
    torch.testing.assert_close(cache.apply_ln_to_stack(stack, layer, mlp_input=mlp_input, recompute_ln=True),
                               ref.lns[k](stack), **CLOSE)


def test_apply_ln_to_stack_at_the_end_is_mlm_head_ln_and_nothing_for_a_classifier(mlm, cls):
    model, cache, ref, _ = mlm
    v_in, v_out = ref.rec["head_ln"]
    ln = ref.hf.cls.predictions.transform.LayerNorm
    scale = (v_in.var(-1, unbiased=False, keepdim=True) + ln.eps).sqrt()
    stack = v_in * torch.eye(D)[:, None, None]  # its D coordinates as components
    for layer in (None, -1, L):
        out = cache.apply_ln_to_stack(stack, layer)
        torch.testing.assert_close(out, (stack - stack.mean(-1, keepdim=True)) / scale * ln.weight, **CLOSE)
        torch.testing.assert_close(out.sum(0) + ln.bias, v_out, **CLOSE)
    torch.testing.assert_close(cache.apply_ln_to_stack(stack, recompute_ln=True), ln(stack), **CLOSE)
    cmodel, ccache, cref, _ = cls
    st = torch.randn(5, 3, 6, D)
    torch.testing.assert_close(ccache.apply_ln_to_stack(st, -1), st, rtol=0, atol=0)
    torch.testing.assert_close(ccache.apply_ln_to_stack(st, -1, batch_slice=[1]), st[:, [1]], rtol=0, atol=0)


@pytest.mark.parametrize("layer,mlp_input", POINTS)
def test_decompose_resid_components_are_carried_and_sum_to_the_stream(mlm, layer, mlp_input):
    model, cache, ref, _ = mlm
    parts, labels = cache.decompose_resid(layer, mlp_input=mlp_input, return_labels=True)
    want = ref.decomposition(layer, mlp_input)
    assert labels == list(want)
    torch.testing.assert_close(parts, torch.stack(list(want.values())), **CLOSE)
    torch.testing.assert_close(parts.sum(0), ref.stream(layer, mlp_input), **CLOSE)
    # pos_slice as TransformerLens: applied to the positions of every component
    torch.testing.assert_close(cache.decompose_resid(layer, mlp_input=mlp_input, pos_slice=[0, 3]), parts[:, :, [0, 3]],
                               **CLOSE)
    torch.testing.assert_close(cache.decompose_resid(layer, mlp_input=mlp_input, pos_slice=4), parts[:, :, 4], **CLOSE)


def test_decompose_resid_modes_select_subsets(mlm):
    model, cache, ref, _ = mlm
    full, labels = cache.decompose_resid(2, mlp_input=True, return_labels=True)
    by = dict(zip(labels, full))
    for mode, incl_embeds in (("attn", True), ("mlp", True), ("all", False), ("attn", False), ("mlp", False)):
        parts, lab = cache.decompose_resid(2, mlp_input=True, mode=mode, incl_embeds=incl_embeds, return_labels=True)
        keep = [n for n in labels if (incl_embeds or not (n.endswith("embed") or n == "ln_bias"))
                and not (mode == "attn" and "mlp" in n) and not (mode == "mlp" and "attn" in n)]
        assert lab == keep
        torch.testing.assert_close(parts, torch.stack([by[n] for n in keep]), **CLOSE)
    assert cache.decompose_resid(0, mode="attn", incl_embeds=False).shape == (0, *IDS.shape, D)


def test_accumulated_resid_is_the_stream_at_each_point(mlm):
    model, cache, ref, _ = mlm
    stack, labels = cache.accumulated_resid(return_labels=True, incl_mid=True)
    want = {}
    for l in range(L):
        want[f"{l}_pre"] = ref.stream(l)
        want[f"{l}_mid"] = ref.stream(l, True)
    want["final_post"] = ref.out.hidden_states[L]
    assert labels == list(want)
    torch.testing.assert_close(stack, torch.stack(list(want.values())), **CLOSE)
    part, lab = cache.accumulated_resid(1, mlp_input=True, pos_slice=(0, 2), return_labels=True)
    assert lab == ["0_pre", "1_pre", "1_mid"]
    torch.testing.assert_close(part, torch.stack([want[n][:, 0:2] for n in lab]), **CLOSE)
    assert cache.accumulated_resid(2, return_labels=True)[1] == ["0_pre", "1_pre", "2_pre"]


def test_refusals_are_one_line_nodeprobe_errors(mlm):
    model, cache, ref, _ = mlm
    calls = {
        "apply_ln=True": [lambda: cache.accumulated_resid(apply_ln=True), lambda: cache.decompose_resid(apply_ln=True),
                          lambda: cache.get_full_resid_decomposition(apply_ln=True)],
        "layer=9": [lambda: cache.decompose_resid(9), lambda: cache.apply_ln_to_stack(torch.zeros(1, 3, 6, D), 9),
                    lambda: cache.stack_head_results(9), lambda: cache.get_full_resid_decomposition(9)],
        "layer=-2": [lambda: cache.accumulated_resid(-2), lambda: cache.stack_neuron_results(-2)],
        "mlp_input=True": [lambda: cache.decompose_resid(L, mlp_input=True),
                           lambda: cache.apply_ln_to_stack(torch.zeros(1, 3, 6, D), -1, mlp_input=True)],
        "mode=": [lambda: cache.decompose_resid(mode="heads")],
        "logit_lens": [lambda: cache.logit_lens()],
    }
    for needle, fns in calls.items():
        for fn in fns:
            with pytest.raises(NodeprobeError) as e:
                fn()
            assert needle in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(NodeprobeError, match=r"layer=9: expected 0–3 or -1"):
        cache.decompose_resid(9)
    assert "nodeprobe.studies.lens" in str(pytest.raises(NodeprobeError, cache.accumulated_resid, apply_ln=True).value)


def test_head_results_raw_sum_to_attn_out_minus_b_O(mlm):
    model, cache, ref, _ = mlm
    heads, labels = cache.stack_head_results(return_labels=True)
    assert labels == [f"L{l}H{h}" for l in range(L) for h in range(H)] and heads.shape == (L * H, *IDS.shape, D)
    for l in range(L):
        torch.testing.assert_close(heads[l * H:(l + 1) * H], ref.head_results(l), **CLOSE)
        torch.testing.assert_close(heads[l * H:(l + 1) * H].sum(0) + model.blocks[l].attn.b_O.detach(),
                                   ref.out_of(f"attn{l}"), **CLOSE)
    # compute_head_results (TransformerLens's own) fills the same hook_result
    fresh = BertActivationCache({k: v for k, v in cache.items() if "hook_result" not in k}, model)
    fresh.compute_head_results()
    torch.testing.assert_close(fresh["result", 1, "attn"], ref.head_results(1).permute(1, 2, 0, 3), **CLOSE)
    # with cfg.use_attn_result the model caches attn.hook_result itself: same stack
    model.set_use_attn_result(True)
    try:
        with torch.no_grad():
            _, c2 = model.run_with_cache(IDS, attention_mask=MASK, token_type_ids=TYPES)
    finally:
        model.set_use_attn_result(False)
    assert "blocks.0.attn.hook_result" in c2.cache_dict
    torch.testing.assert_close(c2.stack_head_results(apply_ln=True), cache.stack_head_results(apply_ln=True), **CLOSE)


@pytest.mark.parametrize("layer", range(L + 1))
def test_head_results_carried_complete_decompose_resid(mlm, layer):
    model, cache, ref, _ = mlm
    stop = 2 * layer
    heads, labels = cache.stack_head_results(layer, apply_ln=True, incl_remainder=True, return_labels=True)
    assert len(labels) == layer * H + 1 and labels[-1] == "remainder"
    comps = cache.decompose_resid(layer, return_labels=True)
    by = dict(zip(comps[1], comps[0]))
    for l in range(layer):
        carried = ref.carry(ref.head_results(l), 2 * l + 1, stop)
        torch.testing.assert_close(heads[l * H:(l + 1) * H], carried, **CLOSE)
        b_O = ref.carry(model.blocks[l].attn.b_O.detach(), 2 * l + 1, stop)
        torch.testing.assert_close(carried.sum(0) + b_O, by[f"{l}_attn_out"], **CLOSE)
    torch.testing.assert_close(heads.sum(0), ref.stream(layer), **CLOSE)
    rest = sum(v for n, v in by.items() if not n.endswith("attn_out"))
    b_Os = sum((ref.carry(model.blocks[l].attn.b_O.detach(), 2 * l + 1, stop) for l in range(layer)), torch.zeros(D))
    torch.testing.assert_close(heads[:-1].sum(0) + b_Os + rest, ref.stream(layer), **CLOSE)
    torch.testing.assert_close(cache.stack_head_results(layer, apply_ln=True, pos_slice=(1, 3)), heads[:-1, :, 1:3],
                               **CLOSE)


def test_neuron_results_raw_and_carried(mlm):
    model, cache, ref, _ = mlm
    for l in range(L):
        got = cache.get_neuron_results(l)  # [B, P, F, D]
        torch.testing.assert_close(got, ref.neuron_results(l).permute(1, 2, 0, 3), **CLOSE)
        torch.testing.assert_close(got.sum(-2) + model.blocks[l].mlp.b_out.detach(), ref.out_of(f"mlp{l}"), **CLOSE)
    torch.testing.assert_close(cache.get_neuron_results(1, neuron_slice=[3, 7], pos_slice=2),
                               ref.neuron_results(1)[[3, 7], :, 2].permute(1, 0, 2), **CLOSE)
    raw, labels = cache.stack_neuron_results(2, return_labels=True)
    assert labels == [f"L{l}N{n}" for l in range(2) for n in range(FF)]
    torch.testing.assert_close(raw, torch.cat([ref.neuron_results(l) for l in range(2)]), **CLOSE)
    proj = torch.randn(D, 2, generator=torch.Generator().manual_seed(3))
    for layer, mlp_input in ((1, False), (2, True), (L, False)):
        stop = 2 * layer + int(mlp_input)
        st = cache.stack_neuron_results(layer, apply_ln=True, mlp_input=mlp_input, incl_remainder=True)
        want = torch.cat([ref.carry(ref.neuron_results(l), 2 * l + 2, stop) for l in range(layer)])
        torch.testing.assert_close(st[:-1], want, **CLOSE)
        torch.testing.assert_close(st.sum(0), ref.stream(layer, mlp_input), **CLOSE)
        b_outs = sum(ref.carry(model.blocks[l].mlp.b_out.detach(), 2 * l + 2, stop) for l in range(layer))
        comps = cache.decompose_resid(layer, mlp_input=mlp_input, mode="mlp", incl_embeds=False)
        torch.testing.assert_close(want.sum(0) + b_outs, comps.sum(0), **CLOSE)
        # a projection is folded in; neuron and position slices as TransformerLens
        pr = cache.stack_neuron_results(layer, apply_ln=True, mlp_input=mlp_input, project_output_onto=proj,
                                        neuron_slice=[1, 5], pos_slice=(0, 4))
        idx = [l * FF + n for l in range(layer) for n in (1, 5)]
        torch.testing.assert_close(pr, want[idx][:, :, 0:4] @ proj, **CLOSE)
        one = cache.stack_neuron_results(layer, apply_ln=True, mlp_input=mlp_input, project_output_onto=proj[:, 0],
                                         neuron_slice=4)
        torch.testing.assert_close(one, want[[l * FF + 4 for l in range(layer)]] @ proj[:, 0], **CLOSE)
    assert cache.stack_neuron_results(0).shape == (0, *IDS.shape, D)


@pytest.mark.parametrize("layer,mlp_input", POINTS)
def test_full_resid_decomposition_sums_to_the_stream(mlm, layer, mlp_input):
    model, cache, ref, _ = mlm
    stop = 2 * layer + int(mlp_input)
    full, labels = cache.get_full_resid_decomposition(layer, mlp_input=mlp_input, return_labels=True)
    n_heads = (layer + int(mlp_input)) * H
    assert len(labels) == n_heads + layer * FF + 4
    assert labels[-4:] == ["embed", "token_type_embed", "pos_embed", "bias"]
    heads = [ref.carry(ref.head_results(l), 2 * l + 1, stop) for l in range(layer + int(mlp_input))]
    neurons = [ref.carry(ref.neuron_results(l), 2 * l + 2, stop) for l in range(layer)]
    want = torch.cat(heads + neurons) if heads else torch.zeros(0, *IDS.shape, D)
    torch.testing.assert_close(full[:-4], want, **CLOSE)
    dec = ref.decomposition(layer, mlp_input)
    torch.testing.assert_close(full[-4:-1], torch.stack([dec["embed"], dec["token_type_embed"], dec["pos_embed"]]),
                               **CLOSE)
    torch.testing.assert_close(full.sum(0), ref.stream(layer, mlp_input), **CLOSE)
    short, slabels = cache.get_full_resid_decomposition(layer, mlp_input=mlp_input, expand_neurons=False,
                                                        return_labels=True)
    assert slabels[n_heads:n_heads + layer] == [f"{l}_mlp_out" for l in range(layer)]
    torch.testing.assert_close(short[n_heads:n_heads + layer], torch.stack([dec[f"{l}_mlp_out"] for l in range(layer)])
                               if layer else short[:0], **CLOSE)
    torch.testing.assert_close(short.sum(0), ref.stream(layer, mlp_input), **CLOSE)
    proj = torch.randn(D, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(cache.get_full_resid_decomposition(layer, mlp_input=mlp_input, project_output_onto=proj,
                                                                  pos_slice=[1, 2]),
                               full[:, :, [1, 2]] @ proj, **CLOSE)


def test_logit_attrs_of_the_mlm_head_ln_input_give_the_logits(mlm):
    model, cache, ref, logits = mlm
    v = ref.rec["head_ln"][0]  # the input of mlm_head.ln: gelu(dense(x_L)), from the HF head
    torch.testing.assert_close(v, F.gelu(ref.hf.cls.predictions.transform.dense(ref.out.hidden_states[L])), **CLOSE)
    stack = v * torch.eye(D)[:, None, None]  # [D, B, P, D]: one component per coordinate
    g = torch.Generator().manual_seed(7)
    tokens, wrong = torch.randint(0, 40, IDS.shape, generator=g), torch.randint(0, 40, IDS.shape, generator=g)
    b_ln, W_U, b_U = model.mlm_head.ln.b.detach(), model.W_U.detach(), model.b_U.detach()
    attrs = cache.logit_attrs(stack, tokens)
    assert attrs.shape == (D, *IDS.shape)
    want = logits.gather(-1, tokens[..., None])[..., 0]
    torch.testing.assert_close(attrs.sum(0) + W_U.T[tokens] @ b_ln + b_U[tokens], want, **CLOSE)
    diff = cache.logit_attrs(stack, tokens, incorrect_tokens=wrong)
    want_diff = want - logits.gather(-1, wrong[..., None])[..., 0]
    torch.testing.assert_close(diff.sum(0) + (W_U.T[tokens] - W_U.T[wrong]) @ b_ln + b_U[tokens] - b_U[wrong],
                               want_diff, rtol=1e-5, atol=2e-5)
    # sliced: the stack comes pos-sliced; batch_slice is applied to it
    part = cache.logit_attrs(stack[:, :, 1:4], tokens[[0, 2]][:, 1:4], pos_slice=(1, 4), batch_slice=[0, 2])
    torch.testing.assert_close(part, attrs[:, [0, 2], 1:4], **CLOSE)


def test_logit_attrs_of_the_pooled_cls_give_the_classifier_logits(cls):
    model, cache, ref, logits = cls
    pooled = ref.out_of("pooler")  # [B, D]: tanh(dense(x_L[CLS])), from the HF pooler
    torch.testing.assert_close(cache["readout.hook_in"], pooled, **CLOSE)
    stack = pooled * torch.eye(D)[:, None]  # [D, B, D]
    labels = torch.tensor([0, 2, 1])
    attrs = cache.logit_attrs(stack, labels)
    assert attrs.shape == (D, IDS.shape[0])
    want = logits.gather(-1, labels[:, None])[:, 0]
    torch.testing.assert_close(attrs.sum(0) + model.b_U.detach()[labels], want, **CLOSE)
    # and the classifier's stream decompositions are as exact as the MLM's
    torch.testing.assert_close(cache.decompose_resid().sum(0), ref.out.hidden_states[L], **CLOSE)
    torch.testing.assert_close(cache.get_full_resid_decomposition(1, mlp_input=True).sum(0), ref.stream(1, True),
                               **CLOSE)
