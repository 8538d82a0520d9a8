"""Bad input of ``--dataset`` (your own table) across the commands that take ``--task``.

The harness of ``tests/cli/test_cli_bad_input.py``: every row asserts exit code 2, stderr exactly one
line ``nodeprobe: error: …`` holding the expected text, no traceback, and nothing written.  The
tables are written by each row's setup into the test's tmp dir (the listing is taken after it).
"""

from __future__ import annotations

import json
import shutil

import pytest

from _bad_input import assert_refused, row_argv
from _tiny_models import tiny_hf

VOCAB_SIZE = 30522
P = pytest.param


@pytest.fixture(scope="module")
def fx(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("bad_dataset")
    vocab = shared_data / "tokenizer" / "bert-base-uncased-vocab.txt"
    out = {}
    for name, k in (("cls3", 3), ("cls16", 16)):
        tiny_hf("cls", seed=0, vocab_size=VOCAB_SIZE, num_labels=k).save_pretrained(root / name)
        shutil.copy(vocab, root / name / "vocab.txt")
        out[name] = root / name
    return out


def _csv(text: str):
    return lambda tmp: (tmp / "d.csv").write_text(text, encoding="utf-8")


GOOD = "text,label\n" + "".join(f"row number {i},{'abc'[i % 3]}\n" for i in range(12))


def _good(tmp):
    _csv(GOOD)(tmp)


def _unseen_test(tmp):
    _good(tmp)
    (tmp / "t.csv").write_text("text,label\nsome text,a\nother text,zzz\n", encoding="utf-8")


def _jsonl(rows):
    return lambda tmp: (tmp / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _garbage_parquet(tmp):
    (tmp / "d.parquet").write_bytes(b"this is not parquet at all\n" * 4)


def _xlsx(tmp):
    (tmp / "d.xlsx").write_bytes(b"PK\x03\x04")


def _disk_dict(tmp):
    import datasets

    cols = {"text": [f"row {i}" for i in range(6)], "label": ["a", "b"] * 3}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(cols),
                          "test": datasets.Dataset.from_dict(cols)}).save_to_disk(str(tmp / "disk"))


ROWS_NULL = [{"text": "fine", "label": "a"}, {"text": None, "label": "b"}, {"text": "ok", "label": "a"}]
ROWS_INT = [{"text": "fine", "label": "a"}, {"text": 5, "label": "b"}, {"text": "ok", "label": "b"}]

AB = ["ablate", "--all", "--model", "{cls3}", "--dataset", "{tmp}/d.csv"]
SP = ["specialization", "--model", "{cls3}", "--dataset", "{tmp}/d.csv"]
CO = ["cooperation", "--model", "{cls3}", "--dataset", "{tmp}/d.csv"]
HU = ["hull", "--n", "1", "--model", "{cls3}", "--dataset", "{tmp}/d.csv"]
FT = ["finetune", "--model", "{cls3}", "--out", "{tmp}/ft", "--dataset", "{tmp}/d.csv"]

CASES = [
    # the table's content (read after the checks, before anything is written)
    P(AB + ["--text-column", "body"], "--text-column body: {tmp}/d.csv has no such column; columns present: text, "
      "label", _good, id="ablate-missing-column"),
    P(FT + ["--label-column", "stars"], "--label-column stars: {tmp}/d.csv has no such column; columns present: "
      "text, label", _good, id="finetune-missing-column"),
    P(SP, "{tmp}/d.csv: dataset has no rows", _csv("text,label\n"), id="specialization-empty-dataset"),
    P(HU, "{tmp}/d.csv: dataset file is empty", _csv(""), id="hull-zero-byte-dataset"),
    P(CO, "--label-column label: {tmp}/d.csv has one class only ('a'); allowed: ≥ 2 classes",
      _csv("text,label\nx y,a\nz w,a\nq r,a\n"), id="cooperation-one-class"),
    P(FT, "--label-column label: {tmp}/d.csv has one class only", _csv("text,label\nx y,a\nz w,a\n"),
      id="finetune-one-class"),
    P(AB + ["--test-dataset", "{tmp}/t.csv"], "has labels absent from training {tmp}/d.csv: 'zzz'", _unseen_test,
      id="ablate-test-label-unseen"),
    P(FT + ["--test-dataset", "{tmp}/t.csv"], "labels absent from training", _unseen_test,
      id="finetune-test-label-unseen"),
    P(["ablate", "--all", "--model", "{cls3}", "--dataset", "{tmp}/d.jsonl"],
      "--text-column text: {tmp}/d.jsonl row 1 (0-based) is null; allowed: a string in every row",
      _jsonl(ROWS_NULL), id="ablate-null-text"),
    P(["hull", "--n", "1", "--model", "{cls3}", "--dataset", "{tmp}/d.jsonl"],
      "--text-column text: {tmp}/d.jsonl row 1 (0-based) is int 5", _jsonl(ROWS_INT), id="hull-non-string-text"),
    P(["specialization", "--model", "{cls3}", "--dataset", "{tmp}/d.parquet"],
      "{tmp}/d.parquet: cannot parse the file as Parquet", _garbage_parquet, id="specialization-unparsable-parquet"),
    P(["ablate", "--all", "--model", "{cls3}", "--dataset", "{tmp}/disk"], "a DatasetDict with splits train, test; "
      "allowed: one of them picked with --split", _disk_dict, id="ablate-datasetdict-without-split"),
    P(["ablate", "--all", "--model", "{cls3}", "--dataset", "{tmp}/disk", "--split", "dev"],
      "--split dev: {tmp}/disk has no such split; allowed: train, test", _disk_dict, id="ablate-unknown-split"),
    # the checks before anything loads
    P(["ablate", "--all", "--model", "{cls3}", "--dataset", "{tmp}/d.xlsx"],
      "--dataset {tmp}/d.xlsx: unknown dataset extension '.xlsx'; allowed: a .csv", _xlsx,
      id="ablate-unknown-extension"),
    P(FT[:-1] + ["{tmp}/none.csv"], "--dataset {tmp}/none.csv: not found; allowed: a .csv", None,
      id="finetune-dataset-missing"),
    P(AB + ["--test-dataset", "{tmp}/none.jsonl"], "--test-dataset {tmp}/none.jsonl: not found", _good,
      id="ablate-test-dataset-missing"),
    P(["ablate", "--all", "--model", "{cls3}", "--text-column", "body"],
      "--text-column body: needs --dataset (your own table)", None, id="ablate-text-column-without-dataset"),
    P(["finetune", "--model", "{cls3}", "--out", "{tmp}/ft", "--test-fraction", "0.3"],
      "--test-fraction 0.3: needs --dataset", None, id="finetune-test-fraction-without-dataset"),
    P(["cache", "--model", "{cls3}", "--split", "train"], "--split train: needs --dataset", None,
      id="cache-split-without-dataset"),
    P(AB + ["--task", "fewrel"], "--task fewrel with --dataset {tmp}/d.csv: --task fewrel reads its own data",
      _good, id="ablate-task-fewrel-with-dataset"),
    P(HU + ["--task", "dbpedia"], "--task dbpedia with --dataset", _good, id="hull-task-dbpedia-with-dataset"),
    P(FT + ["--task", "mlm"], "--task mlm with --dataset", _good, id="finetune-task-mlm-with-dataset"),
    P(["ablate", "--all", "--model", "{cls3}", "--task", "dataset"], "--task dataset: needs --dataset PATH",
      None, id="ablate-task-dataset-without-dataset"),
    P(AB + ["--test-fraction", "1"], "--test-fraction 1: expected a finite number in (0, 1)", _good,
      id="ablate-test-fraction-1"),
    P(SP + ["--test-fraction", "nan"], "--test-fraction nan: expected a finite number in (0, 1)", _good,
      id="specialization-test-fraction-nan"),
    P(FT + ["--n-train", "4"], "--n-train 4: FewRel items per relation", _good, id="finetune-n-train-with-dataset"),
    P(["cache", "--model", "{cls3}", "--task", "mlm", "--dataset", "{tmp}/d.csv", "--label-column", "y"],
      "--label-column: --task mlm reads only the --text-column", _good, id="cache-mlm-dataset-label-column"),
    P(["cache", "--model", "{cls3}", "--task", "mlm", "--dataset", "{tmp}/d.csv", "--text-file", "{tmp}/d.csv"],
      "give one of them", _good, id="cache-dataset-with-text-file"),
    # inputs are never outputs
    P(["ablate", "--all", "--model", "{cls3}", "--dataset", "{tmp}/disk", "--split", "train", "--json",
       "{tmp}/disk/a.json"], "--json {tmp}/disk/a.json: is inside the input --dataset {tmp}/disk", _disk_dict,
      id="ablate-json-inside-dataset"),
    P(["specialization", "--model", "{cls3}", "--dataset", "{tmp}/disk", "--split", "train", "--cache",
       "{tmp}/disk/c"], "--cache {tmp}/disk/c: is inside the input --dataset", _disk_dict,
      id="specialization-cache-inside-dataset"),
    P(["finetune", "--model", "{cls3}", "--out", "{tmp}/disk", "--dataset", "{tmp}/disk", "--split", "train"],
      "--out {tmp}/disk: is the input --dataset", _disk_dict, id="finetune-out-is-the-dataset"),
    P(AB + ["--test-dataset", "{tmp}/t.csv", "--json", "{tmp}/t.csv"], "--json {tmp}/t.csv: is the input "
      "--test-dataset", _unseen_test, id="ablate-json-is-the-test-dataset"),
    # a classifier of another label count
    P(["ablate", "--all", "--model", "{cls16}", "--dataset", "{tmp}/d.csv"],
      "--dataset {tmp}/d.csv: the data has 3 classes ('a', 'b', 'c') but the model has num_labels=16", _good,
      id="ablate-num-labels-differ"),
    P(["hull", "--n", "1", "--model", "{cls16}", "--dataset", "{tmp}/d.csv"], "the data has 3 classes ('a', 'b', 'c') but "
      "the model has num_labels=16", _good, id="hull-num-labels-differ"),
    P(["cooperation", "--model", "{cls16}", "--dataset", "{tmp}/d.csv"], "but the model has num_labels=16", _good,
      id="cooperation-num-labels-differ"),
]


@pytest.mark.parametrize("args,msg,setup", CASES)
def test_bad_dataset_input(args, msg, setup, fx, tmp_path, capsys, monkeypatch):
    argv, subs = row_argv(args, setup, fx, tmp_path, monkeypatch)
    assert_refused(argv, msg, subs, tmp_path, capsys)
