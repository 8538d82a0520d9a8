"""The one hook schema: both hooked models carry exactly its names; each weight is listed once."""

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

from nodeprobe.hooks import attach
from nodeprobe.model import HookedBert
from nodeprobe.model.names import all_names, resid_post, z


def _cfg(**kw):
    return BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=3, num_attention_heads=4,
                      intermediate_size=24, **kw)


def test_hooked_and_attached_models_have_the_schema_names():
    for kind, hf in (("mlm", BertForMaskedLM(_cfg()).eval()),
                     ("cls", BertForSequenceClassification(_cfg(num_labels=3)).eval())):
        assert sorted(HookedBert(hf).hook_dict) == sorted(all_names(3, kind, optional=True))
        with attach(hf) as hooked:
            assert sorted(hooked.hook_dict) == sorted(all_names(3, kind, optional=True))


@pytest.mark.parametrize("kind", ["mlm", "cls"])
@pytest.mark.parametrize("optional", [False, True])
def test_every_schema_hook_fires_in_forward_order(kind, optional):
    hf = (BertForMaskedLM(_cfg()) if kind == "mlm" else BertForSequenceClassification(_cfg(num_labels=3))).eval()
    model = HookedBert(hf)
    if optional:  # the hook points TransformerLens gates behind cfg switches
        model.cfg.use_attn_result = model.cfg.use_split_qkv_input = model.cfg.use_hook_mlp_in = True
    seen = []
    hooks = [(n, lambda t, hook: seen.append(hook.name)) for n in model.hook_dict]
    ids, mask = torch.tensor([[2, 5, 7, 3], [2, 9, 3, 0]]), torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    with model.hooks(fwd_hooks=hooks):
        out = model(ids, mask)
    expected = [n for n in all_names(3, kind, optional=optional) if not n.endswith("hook_attn_in")]
    assert seen == expected  # scores/pattern too: a hook on them takes the eager path
    assert z(2) in seen and resid_post(0) in seen
    # the optional points change nothing when nothing edits them
    model.cfg.use_attn_result = model.cfg.use_split_qkv_input = model.cfg.use_hook_mlp_in = False
    torch.testing.assert_close(model(ids, mask), out, rtol=0, atol=1e-5)


def test_attn_in_fires_alone_and_feeds_q_k_v():
    model = HookedBert(BertForSequenceClassification(_cfg(num_labels=3)).eval())
    ids = torch.tensor([[2, 5, 7, 3]])
    ref = model(ids)
    model.cfg.use_attn_in = True
    seen = []
    with model.hooks(fwd_hooks=[(lambda n: n.endswith(("hook_attn_in", "_input")), lambda t, hook: seen.append(
            (hook.name, tuple(t.shape))))]):
        torch.testing.assert_close(model(ids), ref, rtol=0, atol=1e-5)
    assert seen == [(f"blocks.{l}.hook_attn_in", (1, 4, 4, 16)) for l in range(3)]
    # zeroing head 1's copy of the input changes head 1's queries only
    def zero_head(t, hook):
        t = t.clone()
        t[:, :, 1] = 0
        return t
    _, clean = model.run_with_cache(ids, names_filter=lambda n: n == "blocks.0.attn.hook_q")
    with model.hooks(fwd_hooks=[("blocks.0.hook_attn_in", zero_head)]):
        _, cache = model.run_with_cache(ids, names_filter=lambda n: n == "blocks.0.attn.hook_q")
    q, q0 = cache["blocks.0.attn.hook_q"], clean["blocks.0.attn.hook_q"]
    assert torch.equal(q[:, :, [0, 2, 3]], q0[:, :, [0, 2, 3]]) and not torch.allclose(q[:, :, 1], q0[:, :, 1])


def test_state_dict_lists_each_weight_once_and_round_trips():
    hf = BertForSequenceClassification(_cfg(num_labels=3)).eval()
    model = HookedBert(hf)
    sd = model.state_dict()
    assert len(sd) == len(hf.state_dict())
    assert all(k.startswith("hf.") for k in sd)
    other = HookedBert(BertForSequenceClassification(_cfg(num_labels=3)).eval())
    ids = torch.tensor([[2, 5, 7, 3]])
    assert not torch.allclose(other(ids), model(ids))
    other.load_state_dict(sd)
    torch.testing.assert_close(other(ids), model(ids), rtol=0, atol=0)
