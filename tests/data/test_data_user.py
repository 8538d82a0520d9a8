"""Your own labelled data (nodeprobe.data.user): formats, splits, labels, text pairs, bad input."""

from __future__ import annotations

import csv
import doctest
import json
import os
import pickle

import numpy as np
import pytest

from nodeprobe.data.labeled import LabeledSet
from nodeprobe.data.user import read_table, stratified_test_indices, user_splits
from nodeprobe.errors import NodeprobeError

WORDS = ["the", "cat", "dog", "sat", "on", "mat", "new", "york", "is", "big", "river", "bridge"]


def _rows(sizes=(10, 7, 3), labels=("pos", "neg", "mid")):
    """Rows {text, pair, label} with ``sizes[i]`` rows of ``labels[i]``, classes interleaved."""
    out, left, i, labels = [], list(sizes), 0, labels[: len(sizes)]
    while any(left):
        for c, lab in enumerate(labels):
            if left[c]:
                left[c] -= 1
                text = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(1 + i % 5))
                out.append({"text": text, "pair": WORDS[i % len(WORDS)] + " mat", "label": lab})
                i += 1
    return out


def _columns(rows):
    return {k: [r[k] for r in rows] for k in rows[0]} if rows else {"text": [], "pair": [], "label": []}


def write(rows, path, fmt=None):
    """Write ``rows`` as ``fmt`` (csv, tsv, jsonl, parquet, disk, dict) at ``path``; returns it."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    fmt = fmt or path.suffix.lstrip(".")
    keys = list(rows[0]) if rows else ["text", "pair", "label"]
    if fmt in ("csv", "tsv"):
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, delimiter="," if fmt == "csv" else "\t")
            w.writerow(keys)
            w.writerows([r[k] for k in keys] for r in rows)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "parquet":
        pq.write_table(pa.table(_columns(rows)), path)
    elif fmt == "disk":
        datasets.Dataset.from_dict(_columns(rows)).save_to_disk(str(path))
    else:
        raise ValueError(fmt)
    return path


def same(a: LabeledSet, b: LabeledSet) -> bool:
    return (a.input_ids, a.labels, a.label_names, a.label_ids) == (
        b.input_ids, b.labels, b.label_names, b.label_ids)


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg.strip() == msg
    return msg


# --------------------------------------------------------------------------- formats
def test_all_formats_give_identical_sets(tmp_path, tiny_tok):
    import datasets

    rows = _rows()
    files = [write(rows, tmp_path / f"d.{ext}") for ext in ("csv", "tsv", "jsonl", "parquet")]
    files.append(write(rows, tmp_path / "disk", "disk"))
    ref_train, ref_test = user_splits(files[0], tiny_tok, seed=3)
    assert len(ref_train) + len(ref_test) == len(rows) and len(ref_test) == 4
    assert ref_train.label_names == ["mid", "neg", "pos"] == ref_train.label_ids
    for f in files[1:]:
        tr, te = user_splits(f, tiny_tok, seed=3)
        assert same(tr, ref_train) and same(te, ref_test), f
        assert str(f) in tr.source and tr.source.endswith("[train seed=3]")
    # a DatasetDict folder: split picks the table
    dd = tmp_path / "dd"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict(_columns(rows)),
        "test": datasets.Dataset.from_dict(_columns(rows[:5])),
    }).save_to_disk(str(dd))
    tr, te = user_splits(dd, tiny_tok, split="train", seed=3)
    assert same(tr, ref_train) and same(te, ref_test)
    assert read_table(dd, split="test").num_rows == 5
    # .json holding JSON Lines is read too
    j = tmp_path / "d.json"
    j.write_text((tmp_path / "d.jsonl").read_text())
    assert same(user_splits(j, tiny_tok, seed=3)[1], ref_test)
    arr = tmp_path / "array.json"  # a top-level JSON array of objects as well
    arr.write_text(json.dumps(rows), encoding="utf-8")
    assert same(user_splits(arr, tiny_tok, seed=3)[0], ref_train)


def test_test_path_and_test_split(tmp_path, tiny_tok):
    import datasets

    rows = _rows()
    train_rows, test_rows = rows[:14], rows[14:]
    a = write(train_rows, tmp_path / "train.csv")
    b = write(test_rows, tmp_path / "test.parquet")
    tr, te = user_splits(a, tiny_tok, test_path=b)
    assert len(tr) == 14 and len(te) == len(test_rows)
    assert tr.source == f"user:{a}[train]" and te.source == f"user:{b}[test]"
    assert te.labels == [tr.label_names.index(r["label"]) for r in test_rows]
    assert te.input_ids == [tiny_tok.with_specials(tiny_tok.encode(r["text"]), 128) for r in test_rows]
    dd = tmp_path / "dd"
    datasets.DatasetDict({
        "tr": datasets.Dataset.from_dict(_columns(train_rows)),
        "te": datasets.Dataset.from_dict(_columns(test_rows)),
    }).save_to_disk(str(dd))
    tr2, te2 = user_splits(dd, tiny_tok, split="tr", test_split="te")
    assert same(tr2, tr) and same(te2, te)
    assert te2.source == f"user:{dd}:te[test]"
    # test_path may itself be a DatasetDict folder, its split picked by test_split
    tr3, te3 = user_splits(a, tiny_tok, test_path=dd, test_split="te")
    assert same(tr3, tr) and same(te3, te)


# --------------------------------------------------------------------------- splitting
def test_stratified_share_and_seed_determinism(tmp_path, tiny_tok):
    sizes = (23, 11, 6, 5, 1)
    rows = _rows(sizes, ("a", "b", "c", "d", "e"))
    f = write(rows, tmp_path / "d.jsonl")
    for frac in (0.2, 0.3, 0.5):
        tr, te = user_splits(f, tiny_tok, test_fraction=frac, seed=0)
        assert tr.label_names == ["a", "b", "c", "d", "e"]
        for n_c, n_tr, n_te in zip(sizes, tr.class_counts(), te.class_counts()):
            assert n_tr + n_te == n_c and n_tr >= 1
            assert abs(n_te - frac * n_c) < 1, (frac, n_c, n_te)
        assert len(te) == round(frac * len(rows))
    idx = stratified_test_indices([0] * 10 + [1] * 5, 0.2, seed=0)
    assert len(idx) == 3 and sum(i >= 10 for i in idx) == 1 and idx == sorted(idx)

    def blob(seed):
        return pickle.dumps([(s.input_ids, s.labels, s.label_names) for s in user_splits(f, tiny_tok, seed=seed)])

    assert blob(7) == blob(7)
    assert blob(7) != blob(8)
    # the split is a partition and keeps file order
    tr, te = user_splits(f, tiny_tok, seed=1)
    enc = [tiny_tok.with_specials(tiny_tok.encode(r["text"]), 128) for r in rows]
    y = [tr.label_names.index(r["label"]) for r in rows]
    idx = stratified_test_indices(y, 0.2, 1)
    rest = [i for i in range(len(rows)) if i not in set(idx)]
    assert te.input_ids == [enc[i] for i in idx] and te.labels == [y[i] for i in idx]
    assert tr.input_ids == [enc[i] for i in rest] and tr.labels == [y[i] for i in rest]
    assert stratified_test_indices([0, 1] * 20, 0.25, 5) == stratified_test_indices([0, 1] * 20, 0.25, 5)


# --------------------------------------------------------------------------- labels
def test_string_and_integer_labels(tmp_path, tiny_tok):
    rows = _rows((4, 4, 4), ("10", "2", "b"))
    tr, _ = user_splits(write(rows, tmp_path / "s.jsonl"), tiny_tok, test_fraction=0.25)
    assert tr.label_names == ["10", "2", "b"]  # strings sort by code point
    # integers 0 … K−1 keep their values
    ints = [dict(r, label=i % 3) for i, r in enumerate(_rows((4, 4, 4)))]
    f = write(ints, tmp_path / "i.csv")
    tr, te = user_splits(f, tiny_tok, test_path=f)
    assert tr.label_names == ["0", "1", "2"] == tr.label_ids
    assert tr.labels == [r["label"] for r in ints] == te.labels
    # gaps are closed, order is numeric
    gaps = [dict(r, label=(10, 2, 5)[i % 3]) for i, r in enumerate(_rows((4, 4, 4)))]
    tr, te = user_splits(write(gaps, tmp_path / "g.parquet"), tiny_tok, test_fraction=0.25)
    assert tr.label_names == ["2", "5", "10"] and tr.n_classes == 3
    assert tr.class_counts().tolist() == [3, 3, 3] and te.class_counts().tolist() == [1, 1, 1]
    # digits in a CSV label column are read as integers, so "10" sorts after "9"
    digits = [dict(r, label=(9, 10)[i % 2]) for i, r in enumerate(_rows((3, 3)))]
    tr, _ = user_splits(write(digits, tmp_path / "dg.csv"), tiny_tok, test_fraction=0.4)
    assert tr.label_names == ["9", "10"]


def test_custom_columns_and_encoding(tmp_path, tiny_tok):
    rows = [{"sent": "the cat sat on the mat " * 4, "y": "a"}, {"sent": "big dog", "y": "b"}] * 3
    f = write(rows, tmp_path / "c.jsonl")
    tr, te = user_splits(f, tiny_tok, text_column="sent", label_column="y", max_len=8, test_fraction=0.34)
    for s in (tr, te):
        assert all(x[0] == tiny_tok.cls_id and x[-1] == tiny_tok.sep_id and len(x) <= 8 for x in s.input_ids)
    full = tiny_tok.encode(rows[0]["sent"])
    assert [full[:6]] == [x[1:-1] for x, y in zip(tr.input_ids, tr.labels) if y == 0][:1]


def test_text_pairs(tmp_path, tiny_tok):
    rows = [{"text": "the cat sat on the mat", "pair": "a big dog", "label": "x"},
            {"text": "new york", "pair": "the river is big and the bridge is new", "label": "y"}] * 3
    f = write(rows, tmp_path / "p.parquet")
    tr, te = user_splits(f, tiny_tok, text_pair_column="pair", test_path=f)
    cls, sep = tiny_tok.cls_id, tiny_tok.sep_id
    for r, x in zip(rows, tr.input_ids):
        assert x == [cls, *tiny_tok.encode(r["text"]), sep, *tiny_tok.encode(r["pair"]), sep]
    # longest-first truncation: the longer side loses its end; on a tie the second one
    tr, _ = user_splits(f, tiny_tok, text_pair_column="pair", test_path=f, max_len=9)
    a, b = tiny_tok.encode(rows[0]["text"]), tiny_tok.encode(rows[0]["pair"])  # 6 and 3 pieces
    assert tr.input_ids[0] == [cls, *a[:3], sep, *b[:3], sep]
    a, b = tiny_tok.encode(rows[1]["text"]), tiny_tok.encode(rows[1]["pair"])  # 2 and 9 pieces
    assert tr.input_ids[1] == [cls, *a, sep, *b[:4], sep]
    tr, _ = user_splits(f, tiny_tok, text_pair_column="pair", test_path=f, max_len=4)
    assert tr.input_ids[0] == [cls, tiny_tok.encode(rows[0]["text"])[0], sep, sep]
    assert all(len(x) <= 4 for x in tr.input_ids)


def test_real_bert_vocab(tmp_path, bert_tok):
    rows = [{"text": "Hello world", "label": "greet"}, {"text": "Goodbye world", "label": "bye"}] * 2
    tr, te = user_splits(write(rows, tmp_path / "b.csv"), bert_tok, test_fraction=0.5)
    assert bert_tok.convert_ids_to_tokens(tr.input_ids[0]) == ["[CLS]", "hello", "world", "[SEP]"]
    assert tr.label_names == ["bye", "greet"] and te.class_counts().tolist() == [1, 1]


# --------------------------------------------------------------------------- reading
def test_read_table_datasetdict_and_split_errors(tmp_path):
    import datasets

    dd = tmp_path / "dd"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict(_columns(_rows())),
        "validation": datasets.Dataset.from_dict(_columns(_rows((2, 2, 2)))),
    }).save_to_disk(str(dd))
    with pytest.raises(NodeprobeError) as e:
        read_table(dd)
    assert "splits train, validation" in one_line(e) and "`split`" in str(e.value)
    assert e.value.in_flags({"split": "--split"}).endswith("picked with --split")
    with pytest.raises(NodeprobeError) as e:
        read_table(dd, split="dev")
    assert one_line(e).startswith("split=dev:") and "train, validation" in str(e.value)
    f = write(_rows(), tmp_path / "d.csv")
    with pytest.raises(NodeprobeError) as e:
        read_table(f, split="train")
    assert one_line(e).startswith("split=train:")
    with pytest.raises(NodeprobeError) as e:
        read_table(write(_rows(), tmp_path / "one", "disk"), split="train")
    assert "single Dataset" in one_line(e)
    with pytest.raises(NodeprobeError) as e:
        user_splits(dd, None, split="train", test_split="train")
    assert one_line(e).startswith("test_split=train:")


def test_offline_and_nothing_global(tmp_path):
    import datasets

    env = dict(os.environ)
    offline = datasets.config.HF_HUB_OFFLINE
    ds = read_table(write(_rows(), tmp_path / "d.tsv"))
    assert ds.column_names == ["text", "pair", "label"] and ds.num_rows == 20
    assert dict(os.environ) == env and datasets.config.HF_HUB_OFFLINE == offline
    # no cache files next to the data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.tsv"]


def test_file_names_with_glob_characters_are_read(tmp_path):
    """``datasets`` reads data files as glob patterns: ``a[1].csv`` matched nothing (or another file)."""
    for name in ("a[1].csv", "d.[1].csv", "x*y?.jsonl", "two  spaces é.tsv"):
        ds = read_table(write(_rows(), tmp_path / name))
        assert ds.num_rows == 20 and ds.column_names == ["text", "pair", "label"], name


# --------------------------------------------------------------------------- bad input
def _bad_cases(tmp_path):
    """(name, call, fragments the one-line message must contain)."""
    import datasets

    good = write(_rows(), tmp_path / "good.csv")
    cases = []

    def add(name, call, *frags):
        cases.append((name, call, frags))

    add("missing text column", lambda t: user_splits(good, t, text_column="body"),
        "text_column=body:", "no such column", "columns present: text, pair, label")
    add("missing label column", lambda t: user_splits(good, t, label_column="y"), "label_column=y:", "text, pair, label")
    add("missing pair column", lambda t: user_splits(good, t, text_pair_column="hyp"), "text_pair_column=hyp:")
    t_bad = tmp_path / "nolabel.jsonl"
    t_bad.write_text('{"text": "a", "pair": "b"}\n')
    add("missing column in test", lambda t: user_splits(good, t, test_path=t_bad), "label_column=label:", str(t_bad))
    hdr = tmp_path / "header.csv"
    hdr.write_text("text,label\n")
    add("header only", lambda t: user_splits(hdr, t), str(hdr), "no rows")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    add("empty file", lambda t: user_splits(empty, t), str(empty), "empty")
    d0 = tmp_path / "d0"
    datasets.Dataset.from_dict({"text": [], "label": []},
                               features=datasets.Features({"text": datasets.Value("string"),
                                                           "label": datasets.Value("string")})).save_to_disk(str(d0))
    add("empty Dataset folder", lambda t: user_splits(d0, t), str(d0), "no rows")
    one = write(_rows((5,), ("only",)), tmp_path / "one.jsonl")
    add("one class", lambda t: user_splits(one, t), "label_column=label:", "one class only", "'only'")
    unseen = write(_rows((2, 2), ("pos", "zzz")), tmp_path / "unseen.jsonl")
    add("test label unseen", lambda t: user_splits(good, t, test_path=unseen),
        "label_column=label:", "absent from training", "'zzz'", str(unseen))
    null = tmp_path / "null.jsonl"
    null.write_text('{"text": "a", "label": "x"}\n{"text": null, "label": "y"}\n')
    add("null text", lambda t: user_splits(null, t), "text_column=text:", "row 1", "null")
    num = tmp_path / "num.jsonl"
    num.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n{"text": 7, "label": "y"}\n')
    add("non-string text", lambda t: user_splits(num, t), "row 2", "7")
    nullpair = tmp_path / "nullpair.jsonl"
    nullpair.write_text('{"text": "a", "p": "x", "label": "x"}\n{"text": "b", "p": null, "label": "y"}\n')
    add("null pair", lambda t: user_splits(nullpair, t, text_pair_column="p"), "text_pair_column=p:", "row 1")
    nulllab = tmp_path / "nulllab.jsonl"
    nulllab.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": null}\n')
    add("null label", lambda t: user_splits(nulllab, t), "label_column=label:", "row 1", "null")
    flt = tmp_path / "float.jsonl"
    flt.write_text('{"text": "a", "label": 0.5}\n{"text": "b", "label": 1.5}\n')
    add("float label", lambda t: user_splits(flt, t), "row 0", "0.5", "integer or a string")
    kinds = write([dict(r, label=i % 2) for i, r in enumerate(_rows((4, 4)))], tmp_path / "ints.csv")
    add("label kinds differ", lambda t: user_splits(kinds, t, test_path=unseen), "string labels", "integer ones")
    broken = tmp_path / "broken.csv"
    broken.write_text('text,label\n"a",1\n"unterminated\n')
    add("broken CSV", lambda t: user_splits(broken, t), str(broken), "cannot parse", "CSV")
    dup = tmp_path / "dup.tsv"
    dup.write_text("text\ttext\tlabel\na\tb\tx\nc\td\ty\n")
    add("a column named twice", lambda t: user_splits(dup, t), str(dup), "column 'text' appears twice")
    more = tmp_path / "more.csv"  # every row one field more: read shifted by one column before
    more.write_text("text,label\nsat on the mat,c0,note0\nthe cat,c1,note1\n")
    add("a field more in every row", lambda t: user_splits(more, t), str(more),
        "row 0 (0-based, line 2) has 3 fields, the header 2 (text, label)")
    fewer = tmp_path / "fewer.csv"  # a field fewer: read as a null, and named so (blank lines skipped)
    fewer.write_text('text,label\n"a, quoted",x\n   \n\nno label here\n')
    add("a field fewer in one row", lambda t: user_splits(fewer, t), "label_column=label:", "row 1 (0-based) is null")
    bj = tmp_path / "broken.jsonl"
    bj.write_text('{"text": "a",\n')
    add("broken JSON Lines", lambda t: user_splits(bj, t), str(bj), "cannot parse", "JSON Lines")
    bp = tmp_path / "broken.parquet"
    bp.write_bytes(b"this is not parquet at all")
    add("broken Parquet", lambda t: read_table(bp), str(bp), "cannot parse", "Parquet")
    txt = tmp_path / "data.txt"
    txt.write_text("a\tb\n")
    add("unknown extension", lambda t: read_table(txt), str(txt), "'.txt'", ".csv", ".parquet", "save_to_disk")
    add("missing file", lambda t: user_splits(tmp_path / "nope.csv", t), "nope.csv", "not found", ".jsonl")
    add("missing test file", lambda t: user_splits(good, t, test_path=tmp_path / "gone.tsv"), "gone.tsv", "not found")
    plain = tmp_path / "plain_dir"
    plain.mkdir()
    add("folder not saved by datasets", lambda t: read_table(plain), str(plain), "save_to_disk")
    add("bad test_fraction", lambda t: user_splits(good, t, test_fraction=1.0), "test_fraction=1.0:")
    add("bad max_len", lambda t: user_splits(good, t, text_pair_column="pair", max_len=2), "max_len=2:", "≥ 3")
    tiny = write(_rows((2, 2), ("a", "b")), tmp_path / "tiny.jsonl")
    add("no test rows", lambda t: user_splits(tiny, t, test_fraction=0.1), "test_fraction=0.1:", "no test rows")
    return cases


def test_bad_inputs_each_raise_one_line(tmp_path, tiny_tok):
    cases = _bad_cases(tmp_path)
    assert len(cases) >= 25
    for name, call, frags in cases:
        with pytest.raises(NodeprobeError) as e:
            call(tiny_tok)
        msg = one_line(e)
        for frag in frags:
            assert frag in msg, (name, frag, msg)


def test_flag_wording():
    e = NodeprobeError("text_column=body: x.csv has no such column; columns present: a, b")
    assert e.in_flags({"text_column": "--text-column"}).startswith("--text-column body:")


def test_doctests():
    import nodeprobe.data.user as mod

    assert doctest.testmod(mod, optionflags=doctest.ELLIPSIS).failed == 0


def test_labeledset_shape(tmp_path, tiny_tok):
    tr, te = user_splits(write(_rows(), tmp_path / "d.jsonl"), tiny_tok)
    for s in (tr, te):
        assert isinstance(s, LabeledSet)
        assert all(isinstance(x, list) and all(type(i) is int for i in x) for x in s.input_ids)
        assert all(type(y) is int for y in s.labels)
        assert s.lengths().dtype == np.int64
