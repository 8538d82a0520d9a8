"""Fuzz the loaders: any input either loads or raises NodeprobeError — never another exception."""

from __future__ import annotations

import csv
import os
import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodeprobe.data import load_dbpedia, load_fewrel, load_text_corpus, read_fewrel
from nodeprobe.errors import NodeprobeError

FUZZ = settings(
    max_examples=int(os.environ.get("NODEPROBE_FUZZ_EXAMPLES", "60")),
    deadline=None,
    database=None,  # write nothing into the repository
    suppress_health_check=[HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 40) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=4), kids, max_size=4),
    max_leaves=15,
)
word = st.text(max_size=8)


@st.composite
def fewrel_item(draw):
    """A valid FewRel item, sometimes with one mutation (dropped key, junk value, bad index)."""
    n = draw(st.integers(1, 8))
    tokens = draw(st.lists(word, min_size=n, max_size=n))

    def entity():
        lo = draw(st.integers(0, n - 1))
        hi = draw(st.integers(lo, n - 1))
        extra = draw(st.lists(st.lists(st.integers(0, n - 1), min_size=1, max_size=2), max_size=1))
        return [draw(word), "Q1", [list(range(lo, hi + 1)), *extra]]

    item = {"tokens": tokens, "h": entity(), "t": entity()}
    if draw(st.sampled_from(range(8))) == 7:  # ~1 item in 8 is broken
        key = draw(st.sampled_from(["tokens", "h", "t"]))
        how = draw(st.sampled_from(["drop", "junk", "index"]))
        if how == "drop":
            del item[key]
        elif how == "junk" or key == "tokens":
            item[key] = draw(json_values)
        else:
            item[key][2][0][0] = draw(st.one_of(st.integers(-3, 12), st.booleans(), st.none(), st.text(max_size=2)))
    return item


@st.composite
def fewrel_like(draw):
    """Mostly well-formed FewRel files (relations of 2–3 items), sometimes a junk relation."""
    rels = draw(st.lists(st.text(max_size=4), min_size=1, max_size=3, unique=True))
    out = {}
    for r in rels:
        junk = draw(st.sampled_from(range(10))) == 9
        out[r] = draw(json_values) if junk else draw(st.lists(fewrel_item(), min_size=2, max_size=3))
    return out


def to_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # lone surrogates → invalid UTF-8, also fuzzed


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def loads_or_nodeprobe_error(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except NodeprobeError as e:
        assert "\n" not in str(e)
        return None


@FUZZ
@given(obj=st.one_of(fewrel_like(), json_values), markers=st.booleans())
def test_fuzz_fewrel_structures(fuzz_dir, tiny_tok, obj, markers):
    f = fuzz_dir / "fewrel.json"
    f.write_text(json.dumps(obj))
    out = loads_or_nodeprobe_error(load_fewrel, f, tiny_tok, n_train=1, n_test=1, markers=markers, max_len=8, pid2name=None)
    if out is not None:
        tr, te = out
        assert len(tr) == len(te) == len(obj)
        assert all(x[0] == tiny_tok.cls_id and x[-1] == tiny_tok.sep_id and len(x) <= 8 for x in tr.input_ids)
    else:
        with pytest.raises(NodeprobeError):  # the same file fails the same way
            load_fewrel(f, tiny_tok, n_train=1, n_test=1, markers=markers, max_len=8, pid2name=None)


@FUZZ
@given(data=st.binary(max_size=300))
def test_fuzz_fewrel_bytes(fuzz_dir, tiny_tok, data):
    f = fuzz_dir / "fewrel.bin.json"
    f.write_bytes(data)
    loads_or_nodeprobe_error(read_fewrel, f)
    loads_or_nodeprobe_error(load_fewrel, f, tiny_tok, n_train=1, n_test=0)


csv_alphabet = st.sampled_from(list('"\',\n\r\t 0123456789abc-+') + ["\x00", "é", "\u2028"])
@st.composite
def csv_row(draw):
    """Mostly a valid ("label", "content") row; sometimes a bad label or field count."""
    kind = draw(st.sampled_from(range(10)))
    label = str(draw(st.integers(1, 14))) if kind < 8 else draw(st.one_of(st.integers(-2, 16).map(str), st.text(max_size=3)))
    row = [label, draw(st.text(max_size=20))]
    if kind == 9:
        row += draw(st.lists(st.text(max_size=3), max_size=3))
    return row


csv_rows = st.lists(csv_row(), max_size=6)


def rows_to_csv(rows) -> str:
    buf = io.StringIO()
    csv.writer(buf, quoting=csv.QUOTE_ALL).writerows(rows)
    return buf.getvalue()


@FUZZ
@given(text=st.one_of(st.text(csv_alphabet, max_size=120), csv_rows.map(rows_to_csv), st.text(max_size=80)))
def test_fuzz_dbpedia_csv(fuzz_dir, tiny_tok, text):
    f = fuzz_dir / "db.csv"
    f.write_bytes(to_bytes(text))
    s = loads_or_nodeprobe_error(load_dbpedia, f, tiny_tok, meta=None, max_len=16)
    if s is not None:
        assert len(s) >= 1 and all(0 <= y < 14 for y in s.labels)
        assert all(len(x) <= 16 for x in s.input_ids)


@FUZZ
@given(
    text=st.one_of(st.text(max_size=200), st.text(st.sampled_from(list(" =@-,.<unk>\n\r{}\":text")), max_size=120)),
    suffix=st.sampled_from([".txt", ".raw", ".tokens", ".jsonl", ".parquet"]),
)
def test_fuzz_text_loader(fuzz_dir, tiny_tok, text, suffix):
    f = fuzz_dir / f"wiki.fuzz{suffix}"
    f.write_bytes(to_bytes(text))
    c = loads_or_nodeprobe_error(load_text_corpus, f, tiny_tok)
    if c is not None:
        assert len(c) >= 1 and c.n_tokens >= 1
        seqs = c.to_sequences(max_len=8)
        assert all(len(x) <= 8 for x in seqs)


@FUZZ
@given(
    ids=st.lists(st.integers(0, 49), max_size=40),
    specials=st.sets(st.integers(0, 49), max_size=10),
    rate=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**32),
)
def test_fuzz_mask_invariants(ids, specials, rate, seed):
    import numpy as np

    from nodeprobe.data import eval_mask, n_to_modify

    specials = specials | {3}
    r = eval_mask(ids, seed, special_ids=specials, vocab_size=50, mask_id=3, rate=rate)
    free = [i for i, t in enumerate(ids) if t not in specials]
    assert r.positions.tolist() == sorted(set(r.positions.tolist()))
    assert set(r.positions.tolist()) <= set(free)
    assert len(r.positions) == n_to_modify(len(free), rate)
    new = r.input_ids[r.positions] if len(ids) else np.zeros(0, int)
    assert all(t == 3 or t not in specials for t in new.tolist())
    keep = [i for i in range(len(ids)) if i not in set(r.positions.tolist())]
    assert [int(r.input_ids[i]) for i in keep] == [ids[i] for i in keep]
