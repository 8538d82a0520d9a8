"""Regressions of the bad-input audit (issue 15): an output never overwrites an input, `--overwrite`
deletes only what a run wrote, nothing is written by a command that fails, and the message names the
file that is wrong.  Each runs the real CLI on tiny models of the families (tests/_families.py)."""

from __future__ import annotations

import csv
import hashlib
import json

import pytest

from _bad_input import assert_refused, listing
from _families import save_family, sentences
from nodeprobe.cli import main


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    root = tmp_path_factory.mktemp("io_rules")
    out = {"cls": save_family(root, "bert", "cls"), "mlm": save_family(root, "bert", "mlm"),
           "roberta": save_family(root, "roberta", "cls")}
    for name, k in (("three.csv", 3), ("two.csv", 2)):
        with (root / name).open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows((t, "abc"[i % k]) for i, t in enumerate(sentences(30, seed=2)))
        out[name] = root / name
    return out


def _md5(p):
    return hashlib.md5(p.read_bytes()).hexdigest()


def test_the_default_data_folder_is_an_input(fx, tmp_path, monkeypatch, capsys):
    """Without --data the folder read is $NODEPROBE_DATA (or ../shared/data): no --json inside it."""
    data = tmp_path / "data"
    (data / "wikitext-2").mkdir(parents=True)
    corpus = data / "wikitext-2" / "wiki.valid.tokens"
    corpus.write_text(" = A = \n the cat sat on the mat \n")
    monkeypatch.setenv("NODEPROBE_DATA", str(data))
    before = _md5(corpus)
    assert_refused(["specialization", "--model", str(fx["mlm"]), "--task", "mlm", "--json", str(corpus)],
                   "--json {p}: is inside the input --data {d}", {"p": corpus, "d": data}, tmp_path, capsys)
    assert _md5(corpus) == before


def test_overwrite_deletes_only_what_the_run_wrote(fx, tmp_path, capsys):
    out = tmp_path / "ft"
    args = ["finetune", "--model", str(fx["cls"]), "--dataset", str(fx["three.csv"]), "--out", str(out),
            "--epochs", "1"]
    assert main(args) == 0
    (out / "mynotes.txt").write_text("precious")
    (out / "myfolder").mkdir()
    assert_refused(args + ["--overwrite"], "--out {o}: --overwrite replaces only what a run wrote, and the folder "
                   "also holds myfolder, mynotes.txt; move them away or choose another --out", {"o": out}, tmp_path, capsys)
    (out / "mynotes.txt").unlink()
    (out / "myfolder").rmdir()
    # inside the run's own folders too: a user's file in final/ or checkpoint/ is never deleted
    (out / "final" / "README_mine.md").write_text("mine")
    (out / "checkpoint" / "notes").mkdir()
    assert_refused(args + ["--overwrite"], "--out {o}: --overwrite replaces only what a run wrote, and the folder "
                   "also holds checkpoint/notes/, final/README_mine.md; move them away", {"o": out}, tmp_path, capsys)
    (out / "final" / "README_mine.md").unlink()
    (out / "checkpoint" / "notes").rmdir()
    assert main(args + ["--overwrite"]) == 0 and (out / "final" / "config.json").is_file()


def test_a_folder_that_is_not_a_run_is_named_so(fx, tmp_path, capsys):
    user = tmp_path / "userdir"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    assert_refused(["finetune", "--model", str(fx["cls"]), "--dataset", str(fx["three.csv"]), "--out", str(user)],
                   "--out {u}: holds files that are not a nodeprobe run", {"u": user}, tmp_path, capsys)


def test_finetune_from_a_classifier_of_other_labels_gets_a_new_head(fx, tmp_path):
    out = tmp_path / "ft2"
    assert main(["finetune", "--model", str(fx["cls"]), "--dataset", str(fx["two.csv"]), "--out", str(out),
                 "--epochs", "1"]) == 0
    cfg = json.loads((out / "final" / "config.json").read_text())
    assert len(cfg["id2label"]) == 2
    assert sorted(cfg["id2label"].values()) == ["a", "b"]


def test_track_out_never_inside_a_model_or_equal_to_the_run(fx, tmp_path, capsys):
    run = tmp_path / "ft"
    assert main(["finetune", "--model", str(fx["cls"]), "--dataset", str(fx["three.csv"]), "--out", str(run),
                 "--epochs", "1"]) == 0
    final = run / "final"
    for argv, msg in (
            (["--run", str(final), "--out", str(final / "track")], "--out {o}: is inside the input --run {r}"),
            (["--run", str(run), "--out", str(run)], "--out {o}: contains the input --run {r}"),
            (["--run", str(run), "--json", str(final / "t.json")], "--json {o}: is inside the input --run {r}")):
        o = argv[3]
        assert_refused(["track", *argv, "--dataset", str(fx["three.csv"]), "--no-heads"], msg,
                       {"o": o, "r": final}, tmp_path, capsys)
    # --json follows --out: beside the models in the run folder is fine (the default --out is there too)
    assert main(["track", "--run", str(run), "--json", str(run / "t.json"), "--dataset", str(fx["three.csv"]),
                 "--no-heads"]) == 0
    assert json.loads((run / "t.json").read_text())["result"]["computed_steps"] == [0, 1]


def test_test_fraction_with_a_test_table_contradicts(fx, tmp_path, capsys):
    assert_refused(["specialization", "--model", str(fx["cls"]), "--dataset", str(fx["three.csv"]),
                    "--test-dataset", str(fx["three.csv"]), "--test-fraction", "0.5"],
                   "--test-fraction 0.5 with --test-dataset", {}, tmp_path, capsys)


def test_a_class_count_mismatch_leaves_no_partial_cache(fx, tmp_path, capsys):
    """A 3-label classifier on 2-class data is refused before any cache file is written."""
    cache = tmp_path / "c"
    assert_refused(["specialization", "--model", str(fx["cls"]), "--dataset", str(fx["two.csv"]), "--cache",
                    str(cache)], "2", {}, tmp_path, capsys)
    assert not cache.exists()


def test_a_bad_config_is_named_not_its_tokenizer(fx, tmp_path, capsys):
    bad = tmp_path / "hs"
    bad.mkdir()
    for p in fx["roberta"].iterdir():
        (bad / p.name).write_bytes(p.read_bytes())
    cfg = json.loads((bad / "config.json").read_text())
    cfg["hidden_size"] = "big"
    (bad / "config.json").write_text(json.dumps(cfg))
    assert_refused(["specialization", "--model", str(bad), "--dataset", str(fx["three.csv"])],
                   '{c}: hidden_size="big"; expected a positive integer', {"c": bad / "config.json"}, tmp_path,
                   capsys)


def test_a_text_file_that_is_not_utf8_says_what_is_allowed(fx, tmp_path, capsys):
    f = tmp_path / "rnd.txt"
    f.write_bytes(bytes(range(128, 256)) * 4)
    assert_refused(["similarity", "--model", str(fx["cls"]), "--text-file", str(f)],
                   "--text-file {f}: unreadable (UnicodeDecodeError", {"f": f}, tmp_path, capsys)
    assert [(p, size) for p, size, _ in listing(tmp_path)] == [(".", -1), ("rnd.txt", 512)]


def test_resume_on_an_edited_table_is_another_run(fx, tmp_path, capsys):
    table = tmp_path / "t.csv"
    table.write_bytes(fx["three.csv"].read_bytes())
    out = tmp_path / "ft"
    args = ["finetune", "--model", str(fx["cls"]), "--dataset", str(table), "--out", str(out), "--epochs", "1"]
    assert main(args) == 0
    assert main(args + ["--resume"]) == 0  # the same table: the finished run is reused
    with table.open("a") as f:
        f.write("one more row of text,a\n")
    assert_refused(args + ["--resume"], "--out {o}: holds a run with other settings", {"o": out}, tmp_path, capsys)
