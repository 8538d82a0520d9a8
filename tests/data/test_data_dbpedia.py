"""DBpedia CSV loader: label mapping from meta.txt, splits, caps, malformed files."""

from __future__ import annotations

import pytest

from nodeprobe.data import load_dbpedia, load_dbpedia_splits, read_dbpedia_meta
from nodeprobe.errors import NodeprobeError


def test_shared_splits(shared_data, bert_tok):
    names = read_dbpedia_meta(shared_data / "dbpedia" / "meta.txt")
    assert names[0] == "Artist" and names[13] == "Film" and len(names) == 14
    train = load_dbpedia(shared_data / "dbpedia" / "val.csv", bert_tok)  # the default train split
    assert len(train) == 5000
    assert train.label_names == names and train.label_ids == [str(i) for i in range(1, 15)]
    assert sorted(set(train.labels)) == list(range(14))
    # first row of val.csv: "10","Mfumu'eto is a magazine …" → WrittenWork
    assert train.labels[0] == 9 and train.label_names[9] == "WrittenWork"
    toks = bert_tok.convert_ids_to_tokens(train.input_ids[0][:5])
    assert toks == ["[CLS]", "m", "##fu", "##mu", "'"]
    assert all(x[0] == 101 and x[-1] == 102 and len(x) <= 128 for x in train.input_ids)
    assert max(len(x) for x in train.input_ids) == 128


def test_cap_and_dir_forms(shared_data, bert_tok):
    tr, te = load_dbpedia_splits(shared_data, bert_tok, max_per_class=7, max_len=32)
    assert "val.csv" in tr.source and "test.csv" in te.source
    tr2, _ = load_dbpedia_splits(shared_data / "dbpedia", bert_tok, max_per_class=7, max_len=32)
    assert tr2.input_ids == tr.input_ids
    assert tr.class_counts().tolist() == [7] * 14 == te.class_counts().tolist()
    assert max(len(x) for x in tr.input_ids) == 32


def _write(tmp_path, text, name="data.csv", meta=None):
    f = tmp_path / name
    f.write_text(text, encoding="utf-8")
    if meta is not None:
        (tmp_path / "meta.txt").write_text(meta)
    return f


def test_fallback_names_header_and_three_columns(tmp_path, tiny_tok):
    f = _write(tmp_path, 'label,title,content\n2,The Cat,"a cat, sat"\n\n14,Dog,the dog\n')
    s = load_dbpedia(f, tiny_tok)
    assert s.labels == [1, 13] and s.label_names[0] == "class_1" and s.n_classes == 14
    assert s.input_ids[0] == tiny_tok.with_specials(tiny_tok.encode("The Cat a cat, sat"))
    (tmp_path / "classes.txt").write_text("\n".join(f"C{i}" for i in range(1, 15)) + "\n")
    assert load_dbpedia(f, tiny_tok).label_names[1] == "C2"
    _write(tmp_path, "", name="x", meta="1: A\n2: B\n#train: 3\n")
    g = _write(tmp_path, '"2","the cat"\n"1","a dog"\n', name="two.csv")
    s = load_dbpedia(g, tiny_tok)
    assert s.label_names == ["A", "B"] and s.labels == [1, 0]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('"1","ok"\n"15","too big"\n', "line 2: label '15'; allowed: an integer 1–14"),
        ('"1","ok"\n"x","bad"\n', "line 2: label 'x'"),
        ('"1","ok"\n"3"\n', "line 2 has 1 fields"),
        ('"1","ok","a","b"\n', "line 1 has 4 fields"),
        ('"1","ok"\n"2","unterminated\n', "broken CSV"),
        ('"1","a"b"\n', "line 1: broken CSV"),
        ("", "no rows"),
        ("\n\n", "no rows"),
    ],
)
def test_malformed_csv(tmp_path, tiny_tok, text, fragment):
    f = _write(tmp_path, text)
    with pytest.raises(NodeprobeError) as e:
        load_dbpedia(f, tiny_tok)
    msg = str(e.value)
    assert str(f) in msg and fragment in msg, msg
    assert "\n" not in msg


def test_bad_meta_and_bytes(tmp_path, tiny_tok):
    f = _write(tmp_path, '"1","ok"\n', meta="1: A\n3: C\n")
    with pytest.raises(NodeprobeError, match=r"meta.txt: line 2 '3: C'; allowed: '2: <class name>'"):
        load_dbpedia(f, tiny_tok)
    g = tmp_path / "bin.csv"
    g.write_bytes(b'"1","\xff\xfe"\n')
    with pytest.raises(NodeprobeError, match="bin.csv: DBpedia CSV is not UTF-8"):
        load_dbpedia(g, tiny_tok, meta=None)
    with pytest.raises(NodeprobeError, match="max_per_class=0"):
        load_dbpedia(g, tiny_tok, max_per_class=0)
