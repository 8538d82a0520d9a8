"""Pre-training text: WikiText article split, <unk> and @-@ handling, formats, corpus, sequences."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from nodeprobe.data import (
    Corpus,
    iter_articles,
    load_pretraining_corpus,
    load_text_corpus,
    stream_sequences,
)
from nodeprobe.errors import NodeprobeError

WIKITEXT = """ 
 = Alpha = 
 
 The cat sat @-@ on the mat <unk> . 
 = = Sub head = = 
 
 = = = Deeper = = = 
 He was born in 3 @.@ 5 , 1 @,@ 000 . 
 
 = Beta = 
 
 A dog . 
 = Empty = 
 
"""


def test_wikitext_tokens_synthetic(tmp_path, tiny_tok):
    f = tmp_path / "wiki.test.tokens"
    f.write_text(WIKITEXT)
    arts = list(iter_articles(f))
    assert [t for t, _ in arts] == ["Alpha", "Beta"]  # "Empty" has no text; sub-headings don't split
    assert arts[0][1] == "The cat sat-on the mat [UNK] .\nSub head\nDeeper\nHe was born in 3.5 , 1,000 ."
    c = load_text_corpus(f, tiny_tok)
    assert len(c) == 2 and c.titles == ["Alpha", "Beta"]
    assert c.articles[0].tolist() == tiny_tok.encode(arts[0][1])
    assert int((c.articles[0] == tiny_tok.unk_id).sum()) == 1
    assert c.articles[1].tolist() == tiny_tok.encode("A dog .")


def test_wikitext_raw_keeps_unk_text(tmp_path, bert_tok):
    f = tmp_path / "wiki.x.raw"
    f.write_text(WIKITEXT.replace("\n", "\r\n"))
    (title, text), _ = list(iter_articles(f))
    assert title == "Alpha" and "<unk>" in text and "@" not in text
    c = load_text_corpus(f, bert_tok)
    assert bert_tok.unk_id not in c.articles[0].tolist()


def test_real_wikitext(shared_data, bert_tok, pretrain_corpus):
    # the pre-training corpus starts with wiki.test.raw (62 articles) then wiki.valid.tokens (60)
    c = pretrain_corpus
    assert c.titles[:2] == ["Robert Boulter", "Du Fu"]
    assert c.titles[62] == "Homarus gammarus" and c.titles[64] == "M-82 ( Michigan highway )"
    assert c.titles[121] != "" and c.titles[122] == ""  # DBpedia abstracts have no title
    valid = np.concatenate(c.articles[62:122])
    path = shared_data / "wikitext-2" / "wiki.valid.tokens"
    lines = path.read_text(encoding="utf-8").split("\n")
    body = [ln for ln in lines if not re.match(r"^ = [^=].* = $", ln)]
    n_unk = sum(ln.count("<unk>") for ln in body)
    got = int((valid == bert_tok.unk_id).sum())
    assert n_unk <= got <= n_unk + 50, (n_unk, got)
    raw = np.concatenate(c.articles[:62])
    assert int((raw == bert_tok.unk_id).sum()) < 50  # the raw file has no <unk>
    at = bert_tok.vocab["@"]
    assert int((valid == at).sum()) < 5  # the " @-@ ", " @,@ ", " @.@ " were detokenised
    assert sum(ln.count(" @-@ ") for ln in lines) > 1000


def test_pretraining_corpus(pretrain_load, bert_tok):
    c, _ = pretrain_load
    assert len(c) == 62 + 60 + 10000
    assert 1_000_000 < c.n_tokens < 1_300_000
    assert "fewrel" not in c.source.lower()
    counts = c.token_counts()
    assert counts.shape == (30522,) and int(counts.sum()) == c.n_tokens
    assert counts[[0, 101, 102, 103]].tolist() == [0, 0, 0, 0]  # no specials in article text
    assert int(counts[bert_tok.vocab["the"]]) == int(counts.max())


def test_sequences(pretrain_corpus):
    c = pretrain_corpus
    seqs = c.to_sequences(max_len=128)
    assert all(s[0] == 101 and s[-1] == 102 and 3 <= len(s) <= 128 for s in seqs)
    assert sum(len(s) - 2 for s in seqs) == c.n_tokens
    assert len(seqs) == sum(-(-len(a) // 126) for a in c.articles)  # windows never cross articles
    trunc = c.to_sequences(max_len=128, mode="truncate")
    assert len(trunc) == len(c) and [x[1:-1] for x in trunc[:3]] == [a[:126].tolist() for a in c.articles[:3]]
    with pytest.raises(NodeprobeError, match="mode='window'"):
        c.to_sequences(mode="window")
    with pytest.raises(NodeprobeError, match="max_len=2"):
        c.to_sequences(max_len=2)


def test_held_out_split(pretrain_corpus):
    c = pretrain_corpus
    tr, ho = c.split_held_out()
    assert len(tr) + len(ho) == len(c)
    assert 0.01 * len(c) < len(ho) < 0.04 * len(c)
    tr2, ho2 = c.split_held_out()
    assert [a.tolist() for a in ho2.articles] == [a.tolist() for a in ho.articles]
    held = {a.tobytes() for a in ho.articles}
    assert not held & {a.tobytes() for a in tr.articles}
    # membership depends on the article alone: a sub-corpus holds out the same articles
    sub = c.subset(range(0, len(c), 3))
    _, ho_sub = sub.split_held_out()
    assert {a.tobytes() for a in ho_sub.articles} == {a.tobytes() for a in sub.articles} & held
    tiny = Corpus([np.array([5, 6], np.int32), np.array([7], np.int32)], ["", ""], 1, 2, 10, "t")
    a, b = tiny.split_held_out()
    assert len(a) == 1 and len(b) == 1


def test_other_formats(tmp_path, tiny_tok):
    txt = tmp_path / "a.txt"
    txt.write_text("The cat sat.\nOn the mat.\n\n\nA dog.\n")
    assert [t for _, t in iter_articles(txt)] == ["The cat sat.\nOn the mat.", "A dog."]
    jl = tmp_path / "a.jsonl"
    jl.write_text(json.dumps({"title": "T", "text": "the cat"}) + "\n\n" + json.dumps({"text": "a dog"}) + "\n")
    c = load_text_corpus(jl, tiny_tok)
    assert c.titles == ["T", ""] and c.articles[1].tolist() == tiny_tok.encode("a dog")
    jl.write_text(json.dumps({"text": "ok"}) + "\n{broken\n")
    with pytest.raises(NodeprobeError, match=r"a.jsonl: line 2 is not valid JSON"):
        load_text_corpus(jl, tiny_tok)
    jl.write_text(json.dumps({"body": "ok"}) + "\n")
    with pytest.raises(NodeprobeError, match=r"a.jsonl: line 1 .*allowed: a JSON object with a string 'text'"):
        load_text_corpus(jl, tiny_tok)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pqf = tmp_path / "shard.parquet"
    pq.write_table(pa.table({"title": ["X", "Y"], "text": ["the cat sat", "a dog"]}), pqf)
    c = load_text_corpus(pqf, tiny_tok)
    assert c.titles == ["X", "Y"] and c.articles[0].tolist() == tiny_tok.encode("the cat sat")
    assert len(load_text_corpus(tmp_path, tiny_tok, format="parquet")) == 2  # a directory of shards
    with pytest.raises(NodeprobeError, match="no column 'body'"):
        load_text_corpus(pqf, tiny_tok, text_field="body")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(NodeprobeError, match="bad.parquet: cannot read parquet"):
        load_text_corpus(tmp_path / "bad.parquet", tiny_tok)
    assert len(load_text_corpus(txt, tiny_tok, max_articles=1)) == 1


def test_stream_matches_corpus(tmp_path, tiny_tok):
    f = tmp_path / "w.tokens"
    f.write_text(WIKITEXT * 3)
    c = load_text_corpus(f, tiny_tok)
    for mode in ("chunk", "truncate"):
        assert list(stream_sequences(f, tiny_tok, max_len=8, mode=mode)) == c.to_sequences(8, mode)


def test_hub_code_path(monkeypatch, tiny_tok):
    import sys
    import types

    datasets = types.ModuleType("datasets")  # a stand-in: no network, no heavy import
    monkeypatch.setitem(sys.modules, "datasets", datasets)
    calls = {}

    def fake(name, config, split, streaming):
        calls.update(name=name, config=config, split=split, streaming=streaming)
        return iter([{"title": "A", "text": "the cat"}, {"title": "B", "text": ""}, {"text": "a dog"}])

    datasets.load_dataset = fake
    c = load_text_corpus("wikimedia/wikipedia", tiny_tok, config="20231101.en", max_articles=5)
    assert calls == dict(name="wikimedia/wikipedia", config="20231101.en", split="train", streaming=True)
    assert c.titles == ["A", ""] and len(c) == 2

    def offline(*a, **k):
        raise ConnectionError("no network")

    datasets.load_dataset = offline
    with pytest.raises(NodeprobeError, match="wikimedia/wikipedia .*cannot stream .*ConnectionError"):
        load_text_corpus("wikimedia/wikipedia", tiny_tok, config="20231101.en")


def test_missing_and_empty(tmp_path, tiny_tok):
    with pytest.raises(NodeprobeError, match="missing.txt: text source not found"):
        load_text_corpus(tmp_path / "missing.txt", tiny_tok)
    e = tmp_path / "e.txt"
    e.write_text("\n \n")
    with pytest.raises(NodeprobeError, match="no text found"):
        load_text_corpus(e, tiny_tok)
    with pytest.raises(NodeprobeError, match="format='xml'"):
        load_text_corpus(e, tiny_tok, format="xml")
    with pytest.raises(NodeprobeError, match="include="):
        load_pretraining_corpus(tmp_path, tiny_tok, include=("fewrel",))
