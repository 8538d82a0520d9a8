"""The one hook schema: both hooked models carry exactly its names; each weight is listed once."""

import torch
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

from nodeprobe.hooks import attach
from nodeprobe.model import HookedBert
from nodeprobe.model.names import all_names, resid_post, z


def _cfg(**kw):
    return BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=3, num_attention_heads=4,
                      intermediate_size=24, **kw)


def test_hooked_and_attached_models_have_the_schema_names():
    for hf in (BertForMaskedLM(_cfg()).eval(), BertForSequenceClassification(_cfg(num_labels=3)).eval()):
        assert sorted(HookedBert(hf).hook_dict) == sorted(all_names(3))
        with attach(hf) as hooked:
            assert sorted(hooked.hook_dict) == sorted(all_names(3))


def test_every_schema_hook_fires_in_forward_order():
    hf = BertForSequenceClassification(_cfg(num_labels=3)).eval()
    model = HookedBert(hf)
    seen = []
    hooks = [(n, lambda t, hook: seen.append(hook.name)) for n in all_names(3)]
    with model.hooks(fwd_hooks=hooks):
        model(torch.tensor([[2, 5, 7, 3], [2, 9, 3, 0]]), torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]))
    assert seen == [n for n in all_names(3)]  # scores/pattern too: a hook on them takes the eager path
    assert z(2) in seen and resid_post(0) in seen


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
