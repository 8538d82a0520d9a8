"""HFTokenizer: a saved fast tokenizer of any family behind nodeprobe's tokenizer interface."""

from __future__ import annotations

import json

import pytest
import torch

from _families import build, make_tokenizer, save_family, sentences
from nodeprobe.data.hf_tokenizer import HFTokenizer
from nodeprobe.data.tokenizer import MARKER_TOKENS, load_tokenizer


def test_saved_padding_and_truncation_do_not_leak_into_the_ids(tmp_path):
    d = save_family(tmp_path, "roberta", "cls")
    tj = json.loads((d / "tokenizer.json").read_text())
    tj["truncation"] = {"direction": "Right", "max_length": 4, "strategy": "LongestFirst", "stride": 0}
    tj["padding"] = {"strategy": {"Fixed": 8}, "direction": "Right", "pad_to_multiple_of": None, "pad_id": 1,
                     "pad_type_id": 0, "pad_token": "<pad>"}
    (d / "tokenizer.json").write_text(json.dumps(tj))
    tok = load_tokenizer(d)
    assert isinstance(tok, HFTokenizer)
    texts = sentences(3, seed=5)
    hf = make_tokenizer("roberta")
    assert tok.encode_batch(texts) == [hf(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert len(tok.encode(texts[0])) > 4


def test_a_wordpiece_vocab_saved_as_tokenizer_json_keeps_the_fewrel_markers(tmp_path):
    hf, tok = build("bert", "cls")
    d = tmp_path / "bert"
    hf.save_pretrained(d)
    tok.add_tokens(list(MARKER_TOKENS), special_tokens=True)
    tok.save_pretrained(d)
    (d / "vocab.txt").unlink(missing_ok=True)  # transformers 5 writes tokenizer.json only
    t = load_tokenizer(d)
    assert isinstance(t, HFTokenizer)
    assert t.marker_ids == tuple(t.token_to_id(m) for m in MARKER_TOKENS) and None not in t.marker_ids


def test_electra_for_pretraining_in_memory_is_its_encoder():
    from transformers import ElectraForPreTraining

    from nodeprobe.model import load_model

    base, tok = build("electra_proj", "base")
    torch.manual_seed(0)
    hf = ElectraForPreTraining(base.config).eval()
    m = load_model(hf)
    ids = torch.tensor([[tok.cls_token_id, 7, 9, 11, tok.sep_token_id]])
    with torch.no_grad():
        ref = hf.electra(input_ids=ids).last_hidden_state
        assert m.kind == "base"
        assert (m(ids) - ref).abs().max() <= 1e-5
