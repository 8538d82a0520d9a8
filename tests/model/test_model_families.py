"""Every supported encoder family through ``load_model`` against its Hugging Face model.

Families × kinds (``tests/_families.py``): BERT, RoBERTa, XLM-RoBERTa, ELECTRA (embedding_size ==
hidden_size, and ``electra_proj`` with an embedding projection), DistilBERT, each as masked LM,
sequence classifier (3 labels) and bare encoder — tiny random models with offline tokenizers.

Checked per row: logits parity on a padded batch (from a saved folder and from the in-memory
model; left padding too), the hook meanings against HF (``output_hidden_states`` /
``output_attentions``, the block's own LayerNorms / W_O / MLP modules, the readout vector and
``W_U``), ``stop_at_layer``, a head ablation against a hand-written HF one, ``attach()`` on the
plain HF model, ``cfg`` sizes; and unsupported architectures are one-line errors.
``test_fixture_*`` exercise only Hugging Face (they guard the fixtures, not nodeprobe).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers

from _families import (BATCH_TEXTS, FAMILIES, KINDS, N_LABELS, attn_out_proj, build, encoder_layers, family_batch,
                       hf_class, hf_class_name, hf_output, hf_sizes, make_tokenizer, save_family)
from nodeprobe.errors import NodeprobeError
from nodeprobe.hooks import ablate_head, attach
from nodeprobe.model import load_model

TOL = 1e-5
ROWS = [(f, k) for f in FAMILIES for k in KINDS]
ROW_IDS = [f"{f}-{k}" for f, k in ROWS]
row = pytest.mark.parametrize("family,kind", ROWS, ids=ROW_IDS)


def maxdiff(a, b) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).detach().abs().max())


def np_args(batch: dict):
    """``(input_ids, kwargs)`` for a HookedBert call (token types only where the family has them)."""
    kw = {k: v for k, v in batch.items() if k != "input_ids"}
    return batch["input_ids"], kw


def real(t, mask):
    """The rows of a ``[B, P, ...]`` tensor at real (unpadded) positions: ``[n, ...]``."""
    return t[mask.bool()]


def n_torch_hooks(module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in module.modules())


# ---------------------------------------------------------------------- per-family HF knowledge
def block_modules(family: str, layer):
    """``(ln1, ln2, W_in, W_out)`` modules of one HF block: the attention LayerNorm, the output
    LayerNorm, the MLP's first and second Linear."""
    if family == "distilbert":
        return layer.sa_layer_norm, layer.output_layer_norm, layer.ffn.lin1, layer.ffn.lin2
    return layer.attention.output.LayerNorm, layer.output.LayerNorm, layer.intermediate.dense, layer.output.dense


def hf_readout(hf, family: str, kind: str, last_hidden):
    """``(readout_in, final Linear)`` computed by hand from HF modules: the documented meaning of
    ``readout.hook_in`` (MLM ``[B, P, D']`` after the prediction-head transform; classifier
    ``[B, D]`` the vector entering the last Linear)."""
    h, cls0 = last_hidden, last_hidden[:, 0]
    if kind == "mlm":
        if family == "bert":
            pred = hf.cls.predictions
            return pred.transform(h), pred.decoder
        if family in ("roberta", "xlm_roberta"):  # dense → gelu (fixed, not hidden_act) → layer_norm
            head = hf.lm_head
            return head.layer_norm(F.gelu(head.dense(h))), head.decoder
        if family.startswith("electra"):  # dense D→E → gelu (fixed) → LayerNorm(E); lm head E→V
            g = hf.generator_predictions
            return g.LayerNorm(F.gelu(g.dense(h))), hf.generator_lm_head
        if family == "distilbert":  # vocab_transform → config.activation → vocab_layer_norm → vocab_projector
            return hf.vocab_layer_norm(hf.activation(hf.vocab_transform(h))), hf.vocab_projector
    if kind == "cls":
        if family == "bert":  # pooler: dense → tanh on [CLS]
            return hf.bert.pooler(h), hf.classifier
        if family in ("roberta", "xlm_roberta"):  # classifier.dense → tanh → out_proj
            return torch.tanh(hf.classifier.dense(cls0)), hf.classifier.out_proj
        if family.startswith("electra"):  # classifier.dense → gelu (fixed) → out_proj
            return F.gelu(hf.classifier.dense(cls0)), hf.classifier.out_proj
        if family == "distilbert":  # pre_classifier → ReLU → classifier
            return F.relu(hf.pre_classifier(cls0)), hf.classifier
    raise KeyError((family, kind))


# ---------------------------------------------------------------------- fixtures (HF only)
@row
def test_fixture_runs(family, kind):
    """The fixtures themselves: HF runs the padded batch, padding is masked (a padded row equals the
    same row alone), the readout by hand reproduces HF's logits, and the head W_O module is right."""
    hf, tok = build(family, kind)
    assert type(hf).__name__ == hf_class_name(family, kind)
    assert hf.config.vocab_size == len(tok) and hf.config.pad_token_id == tok.pad_token_id
    batch = family_batch(family, tok)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    lengths = mask.sum(1)
    assert len(set(lengths.tolist())) == len(lengths) and (mask == 0).any()
    assert bool((ids[mask == 0] == tok.pad_token_id).all())
    if family in ("roberta", "xlm_roberta"):
        assert tok.pad_token_id == 1 and hf.config.max_position_embeddings > ids.shape[1] + 2
    with torch.no_grad():
        out = hf(**batch, output_hidden_states=True)
        logits = out.logits if kind != "base" else out.last_hidden_state
        expected = {"mlm": (4, ids.shape[1], len(tok)), "cls": (4, N_LABELS),
                    "base": (4, ids.shape[1], hf_sizes(hf.config)["d_model"])}[kind]
        assert tuple(logits.shape) == expected
        assert len(out.hidden_states) == hf_sizes(hf.config)["n_layers"] + 1
        assert float(logits.abs().max()) > 0.1
        n = int(lengths[2])
        alone = {k: v[2:3, :n] for k, v in batch.items()}
        ref = hf_output(hf, alone)
        full = logits[2:3] if kind == "cls" else logits[2:3, :n]
        assert maxdiff(full, ref) <= TOL
        if kind != "base":
            vec, lin = hf_readout(hf, family, kind, out.hidden_states[-1])
            assert maxdiff(lin(vec), logits) <= TOL
        proj = attn_out_proj(encoder_layers(hf)[0])  # the W_O Linear the ablation tests hook
        assert proj.in_features == proj.out_features == hf_sizes(hf.config)["d_model"]
    eager, _ = build(family, kind, attn="eager")
    assert eager.config._attn_implementation == "eager"
    with torch.no_grad():
        att = eager(**batch, output_attentions=True).attentions
    assert len(att) == hf_sizes(hf.config)["n_layers"] and att[0] is not None


@pytest.mark.parametrize("family", FAMILIES)
def test_fixture_saves_and_reloads(tmp_path, family):
    """save_family writes safetensors + a tokenizer that HF's Auto classes read back offline."""
    d = save_family(tmp_path, family, "mlm")
    assert (d / "model.safetensors").is_file() and (d / "config.json").is_file()
    assert not list(d.glob("*.bin"))
    tok = transformers.AutoTokenizer.from_pretrained(d)
    hf = transformers.AutoModelForMaskedLM.from_pretrained(d).eval()
    ref, ref_tok = build(family, "mlm")
    assert type(hf).__name__ == hf_class_name(family, "mlm") and len(tok) == len(ref_tok)
    batch = family_batch(family, tok)
    assert bool((batch["input_ids"] == family_batch(family, ref_tok)["input_ids"]).all())
    with torch.no_grad():
        assert maxdiff(hf_output(hf, batch), hf_output(ref, batch)) <= TOL


# ---------------------------------------------------------------------- parity
@row
def test_load_model_from_saved_dir_matches_hf(tmp_path, family, kind):
    d = save_family(tmp_path, family, kind)
    tok = make_tokenizer(family)
    hf = hf_class(family, kind).from_pretrained(d).eval()
    batch = family_batch(family, tok)
    ids, kw = np_args(batch)
    model = load_model(d, tokenizer=tok)  # the folder's own tokenizer: test_saved_dir_tokenizer_matches_hf
    assert not model.training
    assert type(model.hf).__name__ == hf_class_name(family, kind)
    with torch.no_grad():
        ref = hf_output(hf, batch)
        got = model(ids, **kw)
    assert maxdiff(got, ref) <= TOL


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_dir_tokenizer_matches_hf(tmp_path, family):
    """``load_model(dir)`` picks up the tokenizer ``save_pretrained`` wrote (transformers 5 writes
    tokenizer.json + tokenizer_config.json, no vocab.txt, for every family), and it encodes like HF."""
    d = save_family(tmp_path, family, "cls")
    model = load_model(d)
    assert model.tokenizer is not None
    tok = make_tokenizer(family)
    for text in BATCH_TEXTS:
        want = tok(text)["input_ids"]
        assert model.to_tokens(text)[0].tolist() == want, text


@row
def test_load_model_in_memory_matches_hf(family, kind):
    hf, tok = build(family, kind)
    batch = family_batch(family, tok)
    ids, kw = np_args(batch)
    with torch.no_grad():
        ref = hf_output(hf, batch)
        model = load_model(hf)
        got = model(ids, **kw)
        again = hf_output(hf, batch)
    assert maxdiff(got, ref) <= TOL
    assert maxdiff(again, ref) == 0.0  # wrapping left the HF model as it was


@row
def test_left_padded_batch_matches_hf(family, kind):
    """Left padding: RoBERTa / XLM-R derive position ids from input_ids (pads skipped, real tokens
    from padding_idx + 1), BERT-likes count positions from 0 regardless of padding."""
    hf, tok = build(family, kind)
    batch = family_batch(family, tok, padding_side="left")
    assert (batch["attention_mask"][:, 0] == 0).any()
    ids, kw = np_args(batch)
    with torch.no_grad():
        ref = hf_output(hf, batch)
        got = load_model(hf)(ids, **kw)
    assert maxdiff(got, ref) <= TOL


# ---------------------------------------------------------------------- hook meanings
@row
def test_cache_matches_hf_hidden_states_and_attentions(family, kind):
    hf, tok = build(family, kind, attn="eager")
    batch = family_batch(family, tok)
    ids, kw = np_args(batch)
    mask = batch["attention_mask"]
    n_layers = hf_sizes(hf.config)["n_layers"]
    with torch.no_grad():
        ref = hf(**batch, output_hidden_states=True, output_attentions=True)
        model = load_model(hf)
        out, cache = model.run_with_cache(ids, **kw)
    hs = ref.hidden_states
    # hidden_states[0] is the input of block 0 (for ELECTRA with embedding_size != hidden_size: after
    # electra.embeddings_project)
    assert maxdiff(real(cache["hook_full_embed"], mask), real(hs[0], mask)) <= TOL
    for l in range(n_layers):
        b = f"blocks.{l}"
        assert maxdiff(real(cache[f"{b}.hook_resid_pre"], mask), real(hs[l], mask)) <= TOL, b
        assert maxdiff(real(cache[f"{b}.hook_normalized_resid_post"], mask), real(hs[l + 1], mask)) <= TOL, b
        assert maxdiff(cache[f"{b}.attn.hook_pattern"], ref.attentions[l]) <= TOL, b
    if kind != "base":
        logits = ref.logits
        assert maxdiff(out, logits) <= TOL
        assert maxdiff(cache["readout.hook_in"] @ model.W_U + model.b_U, logits) <= TOL
        W, bias = model.readout_weights()
        assert maxdiff(cache["readout.hook_in"] @ W.T + bias, logits) <= TOL


@row
def test_block_and_readout_hooks_mean_the_hf_modules(family, kind):
    """TransformerLens's post-LN meanings, checked against each family's own HF modules:
    attn_out = W_O z + b_O, resid_mid = x + a, mlp.hook_pre = W_in LN1(x + a), mlp_out = W_out
    mlp.hook_post, resid_post = LN1(x + a) + m, normalized_resid_post = LN2(resid_post);
    readout.hook_in = the vector the HF head feeds its last Linear; W_U / b_U that Linear."""
    hf, tok = build(family, kind)
    batch = family_batch(family, tok)
    ids, kw = np_args(batch)
    with torch.no_grad():
        model = load_model(hf)
        out, cache = model.run_with_cache(ids, **kw)
        for l, layer in enumerate(encoder_layers(hf)):
            b = f"blocks.{l}"
            ln1, ln2, w_in, w_out = block_modules(family, layer)
            z = cache[f"{b}.attn.hook_z"]
            assert z.shape[2:] == (model.cfg.n_heads, model.cfg.d_head)
            assert maxdiff(attn_out_proj(layer)(z.flatten(2)), cache[f"{b}.hook_attn_out"]) <= TOL, b
            x_a = cache[f"{b}.hook_resid_pre"] + cache[f"{b}.hook_attn_out"]
            assert maxdiff(cache[f"{b}.hook_resid_mid"], x_a) <= TOL, b
            y = ln1(x_a)
            assert maxdiff(cache[f"{b}.mlp.hook_pre"], w_in(y)) <= TOL, b
            assert maxdiff(cache[f"{b}.hook_mlp_out"], w_out(cache[f"{b}.mlp.hook_post"])) <= TOL, b
            assert maxdiff(cache[f"{b}.hook_resid_post"], y + cache[f"{b}.hook_mlp_out"]) <= TOL, b
            assert maxdiff(ln2(cache[f"{b}.hook_resid_post"]), cache[f"{b}.hook_normalized_resid_post"]) <= TOL, b
        if kind != "base":
            last = cache[f"blocks.{len(encoder_layers(hf)) - 1}.hook_normalized_resid_post"]
            vec, lin = hf_readout(hf, family, kind, last)
            assert maxdiff(cache["readout.hook_in"], vec) <= TOL
            assert maxdiff(model.W_U, lin.weight.T) == 0.0
            assert maxdiff(model.b_U, lin.bias) == 0.0
            assert maxdiff(out, lin(vec)) <= TOL


@row
def test_stop_at_layer_equals_hidden_states(family, kind):
    hf, tok = build(family, kind)
    batch = family_batch(family, tok)
    ids, kw = np_args(batch)
    mask = batch["attention_mask"]
    with torch.no_grad():
        hs = hf(**batch, output_hidden_states=True).hidden_states
        model = load_model(hf)
        for k in range(len(hs)):
            got = model(ids, stop_at_layer=k, **kw)
            assert maxdiff(real(got, mask), real(hs[k], mask)) <= TOL, k


@row
def test_head_ablation_equals_hand_written_hf(family, kind):
    """Zeroing head (1, 1)'s z == a forward pre-hook on HF's W_O Linear zeroing that head's slice."""
    hf, tok = build(family, kind)
    batch = family_batch(family, tok)
    ids, kw = np_args(batch)
    layer, head = 1, 1
    d_head = hf_sizes(hf.config)["d_head"]

    def zero_head(module, args):
        (z,) = args
        z = z.clone()
        z[..., head * d_head:(head + 1) * d_head] = 0
        return (z,)

    with torch.no_grad():
        clean = hf_output(hf, batch)
        handle = attn_out_proj(encoder_layers(hf)[layer]).register_forward_pre_hook(zero_head)
        try:
            ref = hf_output(hf, batch)
        finally:
            handle.remove()
        model = load_model(hf)
        got = model.run_with_hooks(ids, fwd_hooks=[ablate_head(layer, head)], **kw)
        after = model(ids, **kw)
    assert maxdiff(ref, clean) > 1e-4  # the fixture's head matters
    assert maxdiff(got, ref) <= TOL
    assert maxdiff(after, clean) <= TOL  # the hook is gone


@row
def test_attach_on_plain_hf_equals_hooked_model(family, kind):
    hf, tok = build(family, kind)
    batch = family_batch(family, tok)
    ids, kw = np_args(batch)
    impl = hf.config._attn_implementation
    names = lambda n: n.endswith(("attn.hook_z", "hook_resid_post")) and "normalized" not in n  # noqa: E731
    with torch.no_grad():
        ref_out, ref = load_model(hf).run_with_cache(ids, names_filter=names, **kw)
        assert n_torch_hooks(hf) == 0
        with attach(hf) as hooked:
            out, cache = hooked.run_with_cache(names_filter=names, **batch)
        after = hf_output(hf, batch)
    n_layers = hf_sizes(hf.config)["n_layers"]
    expected = {f"blocks.{l}.{s}" for l in range(n_layers) for s in ("attn.hook_z", "hook_resid_post")}
    assert expected <= set(cache) and expected <= set(ref)
    for name in sorted(expected):
        assert maxdiff(cache[name], ref[name]) <= TOL, name
    got = out.logits if kind != "base" else out.last_hidden_state
    assert maxdiff(got, ref_out) <= TOL
    assert maxdiff(after, ref_out) <= TOL
    assert n_torch_hooks(hf) == 0 and hf.config._attn_implementation == impl


# ---------------------------------------------------------------------- config
@row
def test_cfg_sizes_match_hf_config(family, kind):
    hf, _ = build(family, kind)
    want = hf_sizes(hf.config)
    cfg = load_model(hf).cfg
    got = dict(n_layers=cfg.n_layers, n_heads=cfg.n_heads, d_head=cfg.d_head, d_mlp=cfg.d_mlp,
               d_vocab=cfg.d_vocab, d_model=cfg.d_model)
    assert got == want
    ln1 = block_modules(family, encoder_layers(hf)[0])[0]  # DistilBERT: eps 1e-12 hard-coded, not in its config
    assert cfg.eps == pytest.approx(ln1.eps, rel=1e-6)


# ---------------------------------------------------------------------- unsupported architectures
def _gpt2():
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2,
                                                                n_positions=32))


def _deberta_v2():
    return transformers.DebertaV2ForMaskedLM(transformers.DebertaV2Config(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=32))


def _modernbert():
    return transformers.ModernBertForMaskedLM(transformers.ModernBertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1,
        sep_token_id=2))


UNSUPPORTED = {"GPT2LMHeadModel": _gpt2, "DebertaV2ForMaskedLM": _deberta_v2, "ModernBertForMaskedLM": _modernbert}
KNOWN = ("supported", "roberta", "electra", "distilbert")


def _check_refusal(err: NodeprobeError, cls_name: str):
    msg = str(err)
    assert "\n" not in msg
    assert cls_name in msg, msg
    assert any(word in msg.lower() for word in KNOWN), msg


@pytest.mark.parametrize("cls_name", list(UNSUPPORTED))
def test_unsupported_architecture_dir_is_one_line_error(tmp_path, cls_name):
    torch.manual_seed(0)
    hf = UNSUPPORTED[cls_name]().eval()
    assert type(hf).__name__ == cls_name
    d = tmp_path / "model"  # a neutral folder name: the class must come from config.json, not the path
    hf.save_pretrained(d)
    assert cls_name not in str(d)
    with pytest.raises(NodeprobeError) as info:
        load_model(d)
    _check_refusal(info.value, cls_name)


@pytest.mark.parametrize("cls_name", list(UNSUPPORTED))
def test_unsupported_architecture_in_memory_is_one_line_error(cls_name):
    torch.manual_seed(0)
    hf = UNSUPPORTED[cls_name]().eval()
    with pytest.raises(NodeprobeError) as info:
        load_model(hf)
    _check_refusal(info.value, cls_name)


@row
def test_resid_decompositions_sum_to_the_stream(family, kind):
    """TransformerLens's decompositions on every family: DistilBERT without a token-type component,
    ELECTRA's E-wide embeddings carried through its projection to d_model; the parts sum to the stream."""
    hf, tok = build(family, kind)
    m = load_model(hf, tokenizer=tok)
    b = family_batch(family, tok)
    _, cache = m.run_with_cache(b["input_ids"], attention_mask=b["attention_mask"],
                                token_type_ids=b.get("token_type_ids"))
    for layer in range(m.cfg.n_layers + 1):
        ref = (cache[f"blocks.{layer}.hook_resid_pre"] if layer < m.cfg.n_layers
               else cache[f"blocks.{layer - 1}.hook_normalized_resid_post"])
        parts, labels = cache.decompose_resid(layer=layer, return_labels=True)
        assert ("token_type_embed" in labels) == (family != "distilbert")
        assert maxdiff(parts.sum(0), ref) <= 1e-5
        full = cache.get_full_resid_decomposition(layer=layer, expand_neurons=layer > 0)
        assert maxdiff(full.sum(0), ref) <= 1e-5


def test_a_hub_id_loads_its_own_family(monkeypatch):
    """A hub id (faked: no network here) loads the class its config names, not BERT's."""
    from nodeprobe.model import load_hf

    hf, _ = build("roberta", "mlm")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", classmethod(lambda cls, src, **kw: hf.config))
    monkeypatch.setattr(transformers.RobertaForMaskedLM, "from_pretrained", classmethod(lambda cls, src, **kw: hf))
    assert load_hf("org/tiny-roberta", kind="mlm") is hf
