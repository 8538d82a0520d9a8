"""FewRel loader: split, label names, markers, truncation, malformed files."""

from __future__ import annotations

import json

import pytest

from nodeprobe.data import encode_relation_item, load_fewrel, read_fewrel
from nodeprobe.errors import NodeprobeError

M0, M1, M2, M3 = 1, 2, 3, 4  # [unused0..3] in bert-base-uncased


def test_val_wiki_split(fewrel_val, shared_data):
    train, test = fewrel_val
    assert train.n_classes == test.n_classes == 16
    assert train.class_counts().tolist() == [630] * 16
    assert test.class_counts().tolist() == [70] * 16
    assert train.label_ids[0] == "P177" and train.label_names[0] == "crosses"
    pid2name = json.loads((shared_data / "fewrel" / "pid2name.json").read_text())
    assert train.label_names == [pid2name[p][0] for p in train.label_ids]
    assert train.label_names == test.label_names
    assert "val_wiki.json[train]" in train.source and "[test]" in test.source
    # file order: relation blocks of 630 (train) / 70 (test)
    assert train.labels[:630] == [0] * 630 and train.labels[630] == 1
    assert max(max(len(x) for x in s.input_ids) for s in (train, test)) <= 128


def test_hand_checked_item(fewrel_val, bert_tok):
    # P177 item 0: "... a new four - lane Mississippi River bridge to replace the deteriorating
    # Cape Girardeau Bridge ." head = cape girardeau bridge (26-28), tail = mississippi river (19-20)
    train, _ = fewrel_val
    toks = bert_tok.convert_ids_to_tokens(train.input_ids[0])
    assert toks[0] == "[CLS]" and toks[-1] == "[SEP]"
    i2, i3 = toks.index("[unused2]"), toks.index("[unused3]")
    assert toks[i2 + 1 : i3] == ["mississippi", "river"]
    i0, i1 = toks.index("[unused0]"), toks.index("[unused1]")
    assert toks[i0 + 1 : i1] == ["cape", "gi", "##rard", "##eau", "bridge"]
    assert toks[i3 + 1] == "bridge" and toks[i1 + 1] == "."
    assert sum(t.startswith("[unused") for t in toks) == 4


def test_test_split_is_items_630_to_699(shared_data, bert_tok, fewrel_val):
    _, test = fewrel_val
    raw = read_fewrel(shared_data / "fewrel" / "val_wiki.json")
    item = raw["P364"][630]  # 2nd relation, first test item
    ppw = bert_tok.encode_words_batch([item["tokens"]])[0]
    h, t = item["h"][2][0], item["t"][2][0]
    expect = encode_relation_item(
        ppw, (min(h), max(h)), (min(t), max(t)), cls_id=101, sep_id=102, marker_ids=(1, 2, 3, 4)
    )
    assert test.input_ids[70] == expect and test.labels[70] == 1


def test_markers_off_and_options(shared_data, bert_tok, fewrel_val):
    path = shared_data / "fewrel" / "val_wiki.json"
    tr, te = load_fewrel(path, bert_tok, markers=False, n_train=5, n_test=2, pid2name=None)
    assert len(tr) == 80 and len(te) == 32
    assert tr.label_names == tr.label_ids  # no pid2name → ids
    assert not any(i in (M0, M1, M2, M3) for x in tr.input_ids for i in x)
    with_markers = fewrel_val[0]
    assert [len(x) + 4 for x in tr.input_ids[:5]] == [len(x) for x in with_markers.input_ids[:5]]


def test_val_nyt_needs_smaller_split(shared_data, bert_tok):
    path = shared_data / "fewrel" / "val_nyt.json"
    with pytest.raises(NodeprobeError, match="has 100 items"):
        load_fewrel(path, bert_tok)
    tr, te = load_fewrel(path, bert_tok, n_train=70, n_test=30, max_len=48)
    assert tr.n_classes == 25 and len(tr) == 25 * 70 and len(te) == 25 * 30
    assert all(len(x) <= 48 for x in tr.input_ids + te.input_ids)
    # truncation keeps the markers whenever the entities fit in the window
    n_trunc = 0
    for x in tr.input_ids + te.input_ids:
        if len(x) == 48:
            n_trunc += 1
        assert all(m in x for m in (M0, M1, M2, M3)) or len(x) == 48
    assert n_trunc > 0
    kept = sum(all(m in x for m in (M0, M1, M2, M3)) for x in tr.input_ids + te.input_ids)
    assert kept >= 0.9 * (len(tr) + len(te))  # plain head truncation would keep fewer


def test_encode_relation_item_truncation():
    ppw = [[10], [11], [12, 13], [14], [15], [16], [17]]
    kw = dict(cls_id=101, sep_id=102, marker_ids=(1, 2, 3, 4))
    full = encode_relation_item(ppw, (2, 2), (4, 4), max_len=128, **kw)
    assert full == [101, 10, 11, 1, 12, 13, 2, 14, 3, 15, 4, 16, 17, 102]
    # drop from the end first
    assert encode_relation_item(ppw, (2, 2), (4, 4), max_len=12, **kw) == full[:11] + [102]
    # shift right just enough to keep the last marker
    assert encode_relation_item(ppw, (2, 2), (4, 4), max_len=11, **kw) == [101, 11, 1, 12, 13, 2, 14, 3, 15, 4, 102]
    assert encode_relation_item(ppw, (2, 2), (4, 4), max_len=10, **kw) == [101, 1, 12, 13, 2, 14, 3, 15, 4, 102]
    # entities wider than the window: start at the first marker, later ones may be lost
    assert encode_relation_item(ppw, (2, 2), (4, 4), max_len=9, **kw) == [101, 1, 12, 13, 2, 14, 3, 15, 102]
    # tail before head, overlapping first word, nested entity
    nested = encode_relation_item([[10], [11], [12]], (0, 2), (1, 1), max_len=128, **kw)
    assert nested == [101, 1, 10, 3, 11, 4, 12, 2, 102]
    nomark = encode_relation_item(ppw, (2, 2), (4, 4), cls_id=101, sep_id=102, marker_ids=None, max_len=6)
    assert nomark == [101, 12, 13, 14, 15, 102]


@pytest.fixture
def write_json(tmp_path):
    def write(obj, name="bad.json"):
        f = tmp_path / name
        f.write_text(obj if isinstance(obj, str) else json.dumps(obj))
        return f

    return write


GOOD = {"tokens": ["a", "cat", "sat"], "h": ["cat", "Q1", [[1]]], "t": ["a", "Q2", [[0]]]}


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("{not json", "not valid JSON"),
        ("", "empty"),
        ([1, 2], "top level is list"),
        ({}, "no relations"),
        ({"P1": {"x": 1}}, "relation 'P1' is dict"),
        ({"P1": [GOOD, {"tokens": ["a"], "h": GOOD["h"]}]}, "relation 'P1' item 1 lacks key 't'"),
        ({"P1": [GOOD, dict(GOOD, h=["cat", "Q1", [[7]]])]}, "relation 'P1' item 1: 'h' word index 7 out of range"),
        ({"P1": [dict(GOOD, t=["a", "Q2", [[-1]]])]}, "relation 'P1' item 0: 't' word index -1"),
        ({"P1": [dict(GOOD, t=["a", "Q2", []])]}, "relation 'P1' item 0: 't'"),
        ({"P1": [dict(GOOD, h=["cat", "Q1", [[True]]])]}, "relation 'P1' item 0: 'h' span"),
        ({"P1": [dict(GOOD, tokens=[])]}, "relation 'P1' item 0: 'tokens'"),
        ({"P1": [GOOD, GOOD, "text"]}, "relation 'P1' item 2 is str"),
    ],
)
def test_malformed_fewrel(write_json, tiny_tok, content, fragment):
    f = write_json(content)
    with pytest.raises(NodeprobeError) as e:
        load_fewrel(f, tiny_tok, n_train=1, n_test=0)
    msg = str(e.value)
    assert str(f) in msg and fragment in msg, msg
    assert "\n" not in msg


def test_malformed_pid2name(write_json, tiny_tok):
    f = write_json({"P1": [GOOD, GOOD]})
    p = write_json({"P1": 5}, "pid2name.json")
    with pytest.raises(NodeprobeError, match=r"pid2name.json: pid2name entry 'P1'"):
        load_fewrel(f, tiny_tok, n_train=1, n_test=1)
    p.write_text(json.dumps({"P1": ["cat relation", "desc"]}))
    tr, te = load_fewrel(f, tiny_tok, n_train=1, n_test=1)
    assert tr.label_names == ["cat relation"] and len(te) == 1
    with pytest.raises(NodeprobeError, match="missing.json: pid2name file not found"):
        load_fewrel(f, tiny_tok, n_train=1, n_test=1, pid2name=p.parent / "missing.json")


def test_bad_options(write_json, tiny_tok, tmp_path):
    f = write_json({"P1": [GOOD]})
    for kw in (dict(n_train=-1), dict(n_train=0, n_test=0), dict(n_test=1.5), dict(max_len=1)):
        with pytest.raises(NodeprobeError):
            load_fewrel(f, tiny_tok, **{"n_train": 1, "n_test": 0, **kw})
    with pytest.raises(NodeprobeError, match="not found"):
        load_fewrel(tmp_path / "nope.json", tiny_tok)
    g = write_json({"P1": [GOOD] * 3, "P2": [GOOD] * 2}, "small.json")
    with pytest.raises(NodeprobeError, match=r"small.json: relation 'P2' has 2 items; n_train \+ n_test = 3 needed"):
        load_fewrel(g, tiny_tok, n_train=2, n_test=1)
