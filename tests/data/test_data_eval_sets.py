"""Streamed evaluation sets: a text larger than RAM is evaluated streamed, never loaded whole.

* the line reader (:func:`nodeprobe.data._io.iter_lines`) is exactly ``read_text(...).split("\\n")``
  and the text readers no longer read a file whole;
* a streamed MLM set (``load_eval_set("mlm", tok, text=…)``) gives the same items and results as
  the materialised set of the same sequences, re-streams identically on every pass, and every
  consumer (``run_eval``, ``build_cache``, head means/sweeps, head isolation, ``step_record``) works
  on it;
* ``--text-file`` end to end, and its bad input;
* a text without article breaks is cut into ≤ ``MAX_ARTICLE_CHARS`` articles (bounded memory);
* under a capped address space (``RLIMIT_AS``) a text whose word list and whose materialised
  evaluation set both raise ``MemoryError`` is still evaluated and cached streamed
  (``tests/_streaming_capped.py`` in a fresh process), and so is a text with no blank line.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import random
import shutil
import string
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _tiny_models import tiny_hf
from nodeprobe.data._io import iter_lines, read_text
from nodeprobe.data.masking import n_to_modify
from nodeprobe.data.text import iter_articles, stream_sequences
from nodeprobe.data.tokenizer import load_tokenizer
from nodeprobe.errors import NodeprobeError
from nodeprobe.data.eval_sets import check_text_source, fingerprint_batches, load_eval_set
from nodeprobe.evaluate import run_eval
from nodeprobe.model import HookedBert
from nodeprobe.studies.track import mlm_eval_set_from_sequences

MAX_LEN = 32  # the tiny models have 64 positions
HERE = Path(__file__).resolve().parent.parent  # tests/
REPO = HERE.parent


@pytest.fixture(scope="module")
def tok(shared_data):
    return load_tokenizer(shared_data / "tokenizer" / "bert-base-uncased-vocab.txt")


@pytest.fixture(scope="module")
def model():
    return HookedBert(tiny_hf("mlm", seed=0, vocab_size=30522))


@pytest.fixture(scope="module")
def small_text(tmp_path_factory, shared_data) -> Path:
    """~14 KB of WikiText paragraphs as a blank-line-separated .txt (≈ 130 sequences of ≤ 32)."""
    p = tmp_path_factory.mktemp("stream") / "small.txt"
    raw = (shared_data / "wikitext-2" / "wiki.test.raw").read_text(encoding="utf-8")[:14_000]
    p.write_text(raw, encoding="utf-8")
    return p


def _sets(tok, path, **kw):
    kw = {"seed": 3, "batch_size": 8, "max_len": MAX_LEN, **kw}
    seqs = list(stream_sequences(path, tok, max_len=kw["max_len"]))
    mat = mlm_eval_set_from_sequences(seqs, tok, seed=kw["seed"], batch_size=kw["batch_size"])
    return seqs, mat, load_eval_set("mlm", tok, text=path, **kw)


def _same_batches(xs, ys) -> bool:
    xs, ys = list(xs), list(ys)
    return len(xs) == len(ys) and all(
        torch.equal(a.input_ids, b.input_ids) and torch.equal(a.attention_mask, b.attention_mask)
        and torch.equal(a.targets, b.targets) and torch.equal(a.positions, b.positions) for a, b in zip(xs, ys))


# ---------------------------------------------------------------------- the line reader
LINE_CASES = [b"", b"\n", b"a", b"a\n", b"a\r\nb", b"a\rb\r", b"a\r\r\nb", b"\r\n\r\n", b"\xef\xbb\xbfa\nb",
              b"\xef\xbb\xbf", b"x\xc3\xa9y\ncaf\xe2\x82\xac\r\n", b"\xf0\x9f\x98\x80\r", b"ab\n\ncd\n\n\nef",
              b"ok\nbad \xff here", b"\xef\xbb\xbfok\xe2\x82", b"a\n\xc3", b"\xe2\x28\xa1"]


@pytest.mark.parametrize("data", LINE_CASES, ids=[repr(d)[2:-1] or "empty" for d in LINE_CASES])
def test_iter_lines_is_read_text_split(data, tmp_path):
    p = tmp_path / "f.txt"
    p.write_bytes(data)

    def outcome(fn):
        try:
            return fn()
        except NodeprobeError as e:
            return f"error: {e}"

    want = outcome(lambda: read_text(p, "text file").split("\n"))
    for chunk in (1, 2, 3, 5, 1 << 16):  # chunk boundaries inside CRLF, BOM and multi-byte chars
        assert outcome(lambda: list(iter_lines(p, "text file", chunk))) == want, chunk


def test_iter_lines_errors(tmp_path):
    with pytest.raises(NodeprobeError, match="not found"):
        next(iter_lines(tmp_path / "none.txt", "text file"))
    with pytest.raises(NodeprobeError, match="is a directory"):
        next(iter_lines(tmp_path, "text file"))


def test_readers_stream(tmp_path):
    """The first article comes before the reader reaches the bad bytes at the end (read whole,
    nothing would be yielded); the error is still the one-line one."""
    for name, head in (("a.txt", "first article\n\nsecond\n"), ("a.raw", " = T = \n first line\n = U = \n x\n"),
                       ("a.jsonl", '{"text": "first article"}\n{"text": "second"}\n')):
        p = tmp_path / name
        p.write_bytes(head.encode() + b"x" * 200_000 + b"\n\n\xff\xfe\n")
        it = iter_articles(p)
        assert "first" in next(it)[1]
        with pytest.raises(NodeprobeError, match="not UTF-8"):
            list(it)


# ---------------------------------------------------------------------- streamed = materialised
def test_streamed_matches_materialised(tok, model, small_text):
    seqs, mat, st = _sets(tok, small_text, buffer_batches=2)  # buffers of 16 sequences: other batches
    assert st.streamed and not mat.streamed and len(seqs) > 64
    assert st.n_items == mat.n_items == sum(int(b.targets.numel()) for b in st.batches)
    assert len(st.batches) == len(mat.batches) == -(-len(seqs) // 8)
    assert st.source.startswith("mlm:text:") and st.class_names == mat.class_names

    a, b = run_eval(model, st), run_eval(model, mat)
    assert a.targets.numel() == b.targets.numel() == mat.n_items
    pairs = lambda r: collections.Counter(zip(r.targets.tolist(), r.preds.tolist()))  # noqa: E731
    assert pairs(a) == pairs(b)
    assert torch.allclose(a.losses.sort().values, b.losses.sort().values, rtol=1e-4, atol=1e-5)
    assert a.accuracy == pytest.approx(b.accuracy) and a.loss == pytest.approx(b.loss, rel=1e-5)

    # two passes are identical, and the fingerprint is the hash of exactly those batches
    assert _same_batches(st.batches, st.batches)
    assert fingerprint_batches(st.batches) == st.fingerprint
    assert st.batches.max_width == max(x.input_ids.shape[1] for x in mat.batches)

    # a buffer holding the whole text gives the very batches (and fingerprint) of the materialised set
    _, _, whole = _sets(tok, small_text, buffer_batches=1000)
    assert whole.fingerprint == mat.fingerprint and _same_batches(whole.batches, mat.batches)

    # limit = the first N sequences
    lim = load_eval_set("mlm", tok, text=small_text, seed=3, batch_size=8, max_len=MAX_LEN, limit=20)
    ref = mlm_eval_set_from_sequences(seqs[:20], tok, seed=3, batch_size=8)
    assert lim.fingerprint == ref.fingerprint and lim.n_items == ref.n_items and len(lim.batches) == 3


def test_consumers_accept_a_streamed_set(tok, model, small_text, tmp_path):
    """Every consumer gives on the streamed set what it gives on the same batches as a list."""
    from nodeprobe.studies.ablation import head_means, sweep_heads
    from nodeprobe.cache import build_cache
    from nodeprobe.studies.lens import head_isolation_predictions
    from nodeprobe.studies.track import step_record

    st = load_eval_set("mlm", tok, text=small_text, seed=3, batch_size=8, max_len=MAX_LEN, limit=40)
    mat = mlm_eval_set_from_sequences(list(itertools.islice(stream_sequences(small_text, tok, max_len=MAX_LEN), 40)),
                                      tok, seed=3, batch_size=8)
    assert st.fingerprint == mat.fingerprint and st.n_items == mat.n_items

    r1 = build_cache(model, st, "readout,z", tmp_path / "c1", shard_batches=2)
    r2 = build_cache(model, mat, "readout,z", tmp_path / "c2", shard_batches=2)
    assert r1.n_items == r2.n_items == st.n_items and len(r1.manifest["shards"]) == -(-len(st.batches) // 2)
    assert r1.eval_fingerprint == r2.eval_fingerprint == st.fingerprint
    for key in ("targets", "preds", "readout", "z.1"):
        assert torch.equal(r1.load(key), r2.load(key)), key

    m1, m2 = head_means(model, st), head_means(model, mat)
    assert m1.keys() == m2.keys() and all(torch.equal(m1[l], m2[l]) for l in m1)
    s1, s2 = sweep_heads(model, st, mode="mean"), sweep_heads(model, mat, mode="mean")
    assert s1.accuracy == s2.accuracy and s1.n_items == s2.n_items
    h1, h2 = head_isolation_predictions(model, st, [0, 1]), head_isolation_predictions(model, mat, [0, 1])
    assert all(torch.equal(h1[l], h2[l]) for l in (0, 1))
    rec1, rec2 = step_record(model, st, min_count=1), step_record(model, mat, min_count=1)
    rec1.pop("seconds"), rec2.pop("seconds")
    assert rec1 == rec2


def test_streamed_set_rereads_and_checks_the_source(tok, small_text, tmp_path):
    p = tmp_path / "t.txt"
    shutil.copy(small_text, p)
    es = load_eval_set("mlm", tok, text=p, batch_size=8, max_len=MAX_LEN)
    n = len(es.batches)
    with open(p, "a", encoding="utf-8") as f:
        f.write("\n\nan article added after the counting pass\n")
    with pytest.raises(NodeprobeError, match="changed while being evaluated"):
        for _ in es.batches:
            pass
    assert len(es.batches) == n


def test_streamed_bad_input(tok, tmp_path):
    ok = tmp_path / "ok.txt"
    ok.write_text("some text\n")
    with pytest.raises(NodeprobeError, match=r"text_file=.*ok\.txt.*task=mlm"):
        load_eval_set("fewrel", tok, text=ok)
    with pytest.raises(NodeprobeError, match=r"text_file=.*ok\.txt.*task=mlm"):
        check_text_source(ok, "fewrel")
    assert check_text_source(ok) == "txt"
    # the CLI's one check: a path that does not exist is "not found", whatever it looks like
    allowed = "allowed: a text file (.txt, .raw, .tokens, .jsonl, .parquet) or a parquet directory"
    for missing in (tmp_path / "none.txt", "data/notes.md", "corpus/mytext", "wikimedia/wikipedia"):
        with pytest.raises(NodeprobeError) as e:
            check_text_source(missing)
        assert str(e.value) == f"text_file={missing}: not found; {allowed}"
    (tmp_path / "adir").mkdir()
    with pytest.raises(NodeprobeError, match="adir: is a directory"):
        check_text_source(tmp_path / "adir")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"caf\xe9 au lait\n")
    with pytest.raises(NodeprobeError, match=r"latin1\.txt: text file is not UTF-8 text \(bad byte at offset 3\)"):
        load_eval_set("mlm", tok, text=bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(NodeprobeError, match="no text"):
        load_eval_set("mlm", tok, text=empty)


@pytest.mark.parametrize("name", ["flat.txt", "flat.raw"])
def test_text_without_breaks_is_cut(name, tmp_path, monkeypatch):
    """A file with no blank line (.txt) / no heading (.raw) is cut into articles of about
    ``MAX_ARTICLE_CHARS`` at line boundaries instead of one article as large as the file; a file
    under the cap gives the one article it always did."""
    import nodeprobe.data.text as text_mod

    p = tmp_path / name
    lines = [f"line {i} " + "word " * (i % 7) for i in range(400)]
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    whole = [t for _, t in iter_articles(p)]
    assert len(whole) == 1 and whole[0].split("\n") == [x.strip() for x in lines]
    monkeypatch.setattr(text_mod, "MAX_ARTICLE_CHARS", 1000)
    parts = [t for _, t in iter_articles(p)]
    assert len(parts) > 5 and "\n".join(parts) == whole[0]
    assert all(len(t) + 1 >= 1000 and len(t) < 1000 + 60 for t in parts[:-1])  # cut at the first line past it


# ---------------------------------------------------------------------- CLI
def test_cli_text(tok, small_text, tmp_path, capsys, monkeypatch, shared_data):
    from nodeprobe.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mdir = tmp_path / "mlm"
    tiny_hf("mlm", seed=0, vocab_size=30522).save_pretrained(mdir)
    shutil.copy(shared_data / "tokenizer" / "bert-base-uncased-vocab.txt", mdir / "vocab.txt")
    capsys.readouterr()
    rc = main(["cache", "--model", str(mdir), "--task", "mlm", "--text-file", str(small_text), "--sites", "readout",
               "--out", str(tmp_path / "c"), "--json", str(tmp_path / "c.json")])
    err = capsys.readouterr().err
    assert rc == 0, err
    d = json.loads((tmp_path / "c.json").read_text())
    want = load_eval_set("mlm", tok, text=small_text, max_len=64)
    assert d["settings"]["text_file"] == str(small_text) and "text" not in d["settings"]
    assert d["result"]["n_items"] == want.n_items and d["result"]["eval_fingerprint"] == want.fingerprint
    assert d["result"]["source"].endswith("[streamed]")

    rc = main(["blocks", "--model", str(mdir), "--task", "mlm", "--text-file", str(small_text), "--no-probe",
               "--cache", str(tmp_path / "c"), "--json", str(tmp_path / "b.json")])
    err = capsys.readouterr().err
    assert rc == 0, err
    b = json.loads((tmp_path / "b.json").read_text())
    assert b["result"]["n_items"] == want.n_items and b["settings"]["text_file"] == str(small_text)


# ---------------------------------------------------------------------- larger than the memory left
N_ARTICLES = 6400  # × 126 words ≈ 2.4 MB: its word list needs ~50 MB, its materialised set ~50 MB
HEADROOM_MIB = 24  # the streamed run needs < 12 MiB more than the warmed-up process
WORDS_PER_ARTICLE = 126  # one sequence of max_len 128 per article


FLAT_ARTICLES = 1600  # lines of 126 words, one after the other: ~0.6 MB with no blank line
FLAT_ARTICLE_CHARS = 3 * 380  # the cut used under the cap: ~3 lines per article


def _write_articles(path: Path, words: list[str], n: int, seed: int, sep: str = "\n\n") -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            f.write(" ".join(rng.choices(words, k=WORDS_PER_ARTICLE)) + sep)


@pytest.mark.skipif(not sys.platform.startswith("linux") or not os.path.exists("/proc/self/status"),
                    reason="RLIMIT_AS and /proc/self/status VmSize are Linux-only")
def test_text_larger_than_memory_left_is_streamed(tmp_path):
    """Under ``RLIMIT_AS`` = VmSize + 24 MiB, ``open(p).read().split()`` and the materialising
    loader (``track_eval_set(text_file=p)``) both raise ``MemoryError``, while the streamed set over
    the same text is evaluated and cached completely.

    A vocab of 600 ids (two-letter words at ids 300–599, so that ids are not CPython's cached small
    ints) keeps the logits cheap; ~20 s of CPU.
    """
    import resource

    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    if hard != resource.RLIM_INFINITY and hard < (8 << 30):
        pytest.skip("the address space is already capped")
    words = ["".join(p) for p in itertools.product(string.ascii_lowercase, repeat=2)][:300]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"[unused{i}]" for i in range(295)] + words
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    _write_articles(tmp_path / "small.txt", words, 200, seed=1)
    _write_articles(tmp_path / "big.txt", words, N_ARTICLES, seed=0)
    _write_articles(tmp_path / "flat.txt", words, FLAT_ARTICLES, seed=2, sep="\n")  # no blank line at all
    cfg = {"vocab": str(tmp_path / "vocab.txt"), "small": str(tmp_path / "small.txt"), "big": str(tmp_path / "big.txt"),
           "out": str(tmp_path), "max_len": WORDS_PER_ARTICLE + 2, "batch_size": 16, "buffer_batches": 4,
           "headroom_mib": HEADROOM_MIB,
           "flat": str(tmp_path / "flat.txt"), "flat_article_chars": FLAT_ARTICLE_CHARS}
    env = dict(os.environ, PYTHONPATH=str(REPO), MALLOC_ARENA_MAX="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")  # freed blocks go back to the OS
    proc = subprocess.run([sys.executable, str(HERE / "_streaming_capped.py"), json.dumps(cfg)], env=env,
                          capture_output=True, text=True, timeout=3000)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
    out = json.loads(lines[-1][len("RESULT "):])
    n_items = N_ARTICLES * n_to_modify(WORDS_PER_ARTICLE)
    did_not_fit = ("MemoryError", "SIGABRT")  # a native library may abort on the failed allocation first
    assert out["words"] in did_not_fit, out  # the text does not fit as a word list …
    assert out["materialised"] in did_not_fit, out  # … nor as a materialised evaluation set
    assert out["streamed"] == "ok", out  # streamed, it is evaluated and cached completely
    assert out["is_streamed"] and out["n_batches"] == N_ARTICLES // 16
    assert out["n_items"] == out["eval_items"] == out["eval_preds"] == out["eval_losses"] == n_items
    assert out["cache_items"] == n_items and out["cache_shards"] == -(-(N_ARTICLES // 16) // 8)
    # no blank line: as one article it does not fit; cut at MAX_ARTICLE_CHARS it is streamed
    assert out["flat_whole"] in did_not_fit, out
    assert out["flat_streamed"] == "ok", out
    assert out["flat_items"] == out["flat_eval_items"] > FLAT_ARTICLES * n_to_modify(WORDS_PER_ARTICLE) * 0.9
