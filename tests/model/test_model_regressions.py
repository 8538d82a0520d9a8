"""Regressions from the TransformerLens review (issue 12's bug list): stop_at_layer's negative
indices, unknown hook names, load_model's mode, nested attach()."""

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from nodeprobe.errors import NodeprobeError
from nodeprobe.hooks import ablate_head, attach
from nodeprobe.model import HookedBert, load_model

IDS = torch.tensor([[2, 5, 7, 3], [2, 9, 3, 0]])
MASK = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])


def _hf(train: bool = False):
    torch.manual_seed(0)
    hf = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3,
                                                  num_attention_heads=4, intermediate_size=32, num_labels=3))
    return hf.train(train)


def test_stop_at_layer_counts_from_the_end_like_transformer_lens():
    model = HookedBert(_hf())
    _, cache = model.run_with_cache(IDS, MASK)
    for stop, name in ((-1, "blocks.2.hook_resid_pre"), (-3, "blocks.0.hook_resid_pre"), (1, "blocks.1.hook_resid_pre"),
                       (0, "hook_full_embed"), (3, "blocks.2.hook_normalized_resid_post")):
        # (caching every hook runs attention eagerly: equal up to float rounding)
        torch.testing.assert_close(model(IDS, MASK, stop_at_layer=stop), cache[name], rtol=0, atol=1e-6)
    for bad in (4, -4, 1.5, True):
        with pytest.raises(NodeprobeError, match=rf"stop_at_layer={bad}: expected an integer from -3 to 3"):
            model(IDS, MASK, stop_at_layer=bad)


@pytest.mark.parametrize("where", ["hooked", "attached"])
def test_unknown_hook_names_are_one_line_errors(where):
    hf = _hf()

    def run(hooks):
        if where == "hooked":
            return HookedBert(hf).run_with_hooks(IDS, MASK, fwd_hooks=hooks)
        with attach(hf) as hooked:
            return hooked.run_with_hooks(input_ids=IDS, attention_mask=MASK, fwd_hooks=hooks)

    with pytest.raises(NodeprobeError, match=r"^layer=7: the model has blocks 0–2 \(no hook point blocks\.7\.attn\.hook_z\)$"):
        run([ablate_head(7, 0)])
    with pytest.raises(NodeprobeError, match=r"hook='blocks\.0\.attn\.hook_zz': no such hook point; did you mean blocks\.0\.attn\.hook_z"):
        run([("blocks.0.attn.hook_zz", lambda t, hook: t)])
    run([ablate_head(2, 3)])  # a real one still works


def test_load_model_returns_eval_mode_even_for_a_training_model():
    hf = _hf(train=True)
    model = load_model(hf)
    assert not model.training and not hf.training
    a, b = model(IDS, MASK), model(IDS, MASK)
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # dropout off


def test_nested_attach_is_refused_and_the_outer_hooks_survive():
    hf = _hf()
    seen = []
    with attach(hf) as outer:
        with pytest.raises(NodeprobeError, match="already has nodeprobe hooks attached"):
            with attach(hf):
                pass
        outer.run_with_hooks(input_ids=IDS, attention_mask=MASK,
                             fwd_hooks=[("blocks.1.attn.hook_pattern", lambda t, hook: seen.append(t.shape))])
    assert seen == [torch.Size([2, 4, 4, 4])]
    with attach(hf) as again:  # detached cleanly: attaching again works
        again(input_ids=IDS, attention_mask=MASK)


# ---------------------------------------------------------------------- review of the TL-meanings change
def test_per_head_inputs_are_copies_in_place_edits_stay_in_their_head():
    """hook_q_input … were views of the residual: an in-place edit of one head's copy rewrote every
    head and the residual itself (TL's own patching under no_grad then measured nothing)."""
    model = HookedBert(_hf())
    model.set_use_split_qkv_input(True)

    def zero_head0(t, hook):
        t[:, :, 0] = 0  # in place, as TL's layer_head_vector_patch_setter does
        return t

    with torch.no_grad():
        _, clean = model.run_with_cache(IDS, MASK, names_filter=lambda n: n.startswith("blocks.0.") and
                                        n.endswith(("hook_resid_mid", "attn.hook_q", "attn.hook_k")))
        with model.hooks(fwd_hooks=[("blocks.0.hook_q_input", zero_head0)]):
            _, got = model.run_with_cache(IDS, MASK, names_filter=lambda n: n.startswith("blocks.0.") and
                                          n.endswith(("hook_resid_mid", "attn.hook_q", "attn.hook_k")))
    q, q0 = got["blocks.0.attn.hook_q"], clean["blocks.0.attn.hook_q"]
    assert not torch.allclose(q[:, :, 0], q0[:, :, 0])
    torch.testing.assert_close(q[:, :, 1:], q0[:, :, 1:], rtol=0, atol=1e-6)
    torch.testing.assert_close(got["blocks.0.attn.hook_k"], clean["blocks.0.attn.hook_k"], rtol=0, atol=1e-6)
    # the residual path (x + a) only sees the change through the attention output, never x itself
    model.set_use_split_qkv_input(False)


def test_in_place_edit_of_the_position_embedding_works():
    model = HookedBert(_hf())

    def zero_first(t, hook):
        t[:, 0] = 0
        return t

    with torch.no_grad():
        out = model.run_with_hooks(IDS, MASK, fwd_hooks=[("embed.hook_pos_embed", zero_first)])
    assert (out - model(IDS, MASK)).abs().max() > 1e-4


def test_hooked_layer_norm_takes_fp32_statistics_under_bf16():
    torch.manual_seed(0)
    model = HookedBert(_hf()).to(torch.bfloat16)
    ids = IDS[:1]
    with torch.no_grad():
        ref = model(ids)
        noop = model.run_with_hooks(ids, fwd_hooks=[(lambda n: n.endswith("hook_scale"), lambda t, hook: t)])
    # a no-op hook on every LayerNorm scale changes nothing beyond bf16's own rounding of the output
    assert (noop.float() - ref.float()).abs().max() <= 0.02


def test_the_pad_mask_covers_only_right_padding():
    from transformers import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(45)]
    model = HookedBert(_hf(), tokenizer=BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}))
    padded = torch.tensor([[2, 5, 7, 3], [2, 9, 3, 0]])
    torch.testing.assert_close(model(padded), model(padded, torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])))
    inner = torch.tensor([[2, 0, 7, 3]])  # a pad id inside a row is a token, as HF treats it
    torch.testing.assert_close(model(inner), model.hf(input_ids=inner).logits, rtol=0, atol=1e-5)


def test_model_spec_alias_is_gone_the_config_is_built_from_hf():
    import nodeprobe.model as m
    from nodeprobe.model import HookedBertConfig

    assert not hasattr(m, "ModelSpec")
    hf = _hf()
    cfg = HookedBertConfig.from_hf(hf.config, "cls")
    assert (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.n_ctx, cfg.n_classes) == (3, 4, 16, 512, 3)
