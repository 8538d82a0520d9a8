"""Bad ``--dataset`` input found by the bad-input audit, refused through the real CLI.

The harness of ``tests/cli/test_cli_bad_input_dataset.py`` (exit 2, stderr exactly one line
``nodeprobe: error: …`` holding the expected text, no traceback, nothing written), plus: the message
says the CLI's flags (``--test-split``, ``--test-fraction`` …), never the library's parameter names,
and the ``datasets`` library logs nothing of its own while a table is read.
"""

from __future__ import annotations

import json
import logging
import re
import shutil

import pytest

from _bad_input import assert_refused, row_argv
from _tiny_models import tiny_hf
from test_cli_bad_input_dataset import VOCAB_SIZE, _disk_dict

P = pytest.param
#: parameter names of :func:`nodeprobe.data.user.user_splits` that the CLI says as flags
LIBRARY_NAMES = ("test_fraction", "test_split", "split", "text_column", "label_column",
                 "text_pair_column", "dataset", "test_path")


@pytest.fixture(scope="module")
def models(tmp_path_factory, shared_data):
    """``cls3``: a tiny 3-label BERT classifier with bert-base-uncased's vocab (as in the dataset harness)."""
    root = tmp_path_factory.mktemp("audit_models")
    tiny_hf("cls", seed=0, vocab_size=VOCAB_SIZE, num_labels=3).save_pretrained(root / "cls3")
    shutil.copy(shared_data / "tokenizer" / "bert-base-uncased-vocab.txt", root / "cls3" / "vocab.txt")
    return {"cls3": root / "cls3"}


def _write(name: str, text: str):
    return lambda tmp: (tmp / name).write_text(text, encoding="utf-8")


def _bad_jsonl(tmp):
    (tmp / "bad.jsonl").write_text('{"text": "fine", "label": "a"}\nthis is { not json\n{"text": 1,\n',
                                   encoding="utf-8")


def _bin_csv(tmp):
    (tmp / "bin.csv").write_bytes(bytes(range(256)) * 64)


UNIQUE = "text,label\n" + "".join(f"sentence number {i},{'ab'[i % 2]}\n" for i in range(30))
NULL_LABEL = "text,label\nrow zero,0\nrow one,1\nrow two,0\nrow three,\nrow four,1\nrow five,0\n"
FOUR = "text,label\nrow zero,a\nrow one,a\nrow two,b\nrow three,b\n"
PAIR = "text,other,label\n" + "".join(f"row {i},more {i},{'abc'[i % 3]}\n" for i in range(12))

AB = ["ablate", "--all", "--model", "{cls3}"]
FT = ["finetune", "--model", "{cls3}", "--out", "{tmp}/ft"]
DISK = ["--dataset", "{tmp}/disk"]

CASES = [
    # 1. the datasets library's own log line ("Failed to load JSON from file …") is not printed
    P(AB + ["--dataset", "{tmp}/bad.jsonl"], "{tmp}/bad.jsonl: cannot parse the file as JSON Lines", _bad_jsonl,
      id="bad-jsonl-one-line"),
    P(AB + ["--dataset", "{tmp}/bin.csv"], "{tmp}/bin.csv: cannot parse the file as CSV", _bin_csv,
      id="binary-csv-one-line"),
    # 2. an unknown --test-split (with --split) names --test-split and lists the splits
    P(AB + DISK + ["--split", "train", "--test-split", "nope"],
      "--test-split nope: {tmp}/disk has no such split; allowed: train, test", _disk_dict,
      id="unknown-test-split"),
    P(FT + DISK + ["--split", "train", "--test-split", "nope"], "--test-split nope: {tmp}/disk has no such split",
      _disk_dict, id="finetune-unknown-test-split"),
    # 3. --test-split without --split names --test-split (and asks for --split)
    P(AB + DISK + ["--test-split", "nope"], "--test-split nope: needs --split", _disk_dict,
      id="test-split-without-split"),
    P(AB + DISK + ["--test-split", "test"], "--test-split test: needs --split", _disk_dict,
      id="valid-test-split-without-split"),
    P(AB + ["--dataset", "{tmp}/d.csv", "--test-split", "test"], "--test-split test: {tmp}/d.csv is a single file",
      _write("d.csv", PAIR), id="test-split-of-a-file"),
    # 4. no test rows: the flags, not test_fraction / test_path
    P(AB + ["--dataset", "{tmp}/d.csv", "--test-fraction", "0.1"],
      "--test-fraction 0.1: leaves no test rows of the 4 in {tmp}/d.csv; allowed: a larger --test-fraction",
      _write("d.csv", FOUR), id="test-fraction-leaves-no-rows"),
    P(AB + ["--dataset", "{tmp}/d.csv", "--split", "train"], "--split train: {tmp}/d.csv is a single file, not a "
      "DatasetDict folder; allowed: no --split", _write("d.csv", FOUR), id="split-of-a-file"),
    # 5. a label column of unique values: the label column is to blame, with its class count
    P(AB + ["--dataset", "{tmp}/d.csv", "--label-column", "text"],
      "--label-column text: 30 classes in the 30 rows of {tmp}/d.csv", _write("d.csv", UNIQUE),
      id="label-column-all-unique"),
    # 6. an empty label cell (pandas reads the column as floats with NaN) is a null in its row
    P(AB + ["--dataset", "{tmp}/d.csv"], "--label-column label: {tmp}/d.csv row 3 (0-based) is null",
      _write("d.csv", NULL_LABEL), id="label-empty-cell"),
    # 8. the pair column is the text column
    P(AB + ["--dataset", "{tmp}/d.csv", "--text-pair-column", "text"],
      "--text-pair-column text: the same column as --text-column; allowed: another column", _write("d.csv", PAIR),
      id="pair-column-is-text-column"),
    P(FT + ["--dataset", "{tmp}/d.csv", "--text-column", "other", "--text-pair-column", "other"],
      "--text-pair-column other: the same column as --text-column", _write("d.csv", PAIR),
      id="finetune-pair-column-is-text-column"),
]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def _no_library_names(line: str) -> None:
    """No library parameter name is left in the line (as ``name=`` or a bare word outside paths)."""
    words = re.findall(r"(?<![\w/.-])([a-z_]+)(?![\w/.-])", line)
    assert not [w for w in words if w in LIBRARY_NAMES and "_" in w], line
    assert not re.search(r"(?<![\w/.-])(?:%s)=" % "|".join(LIBRARY_NAMES), line), line


@pytest.mark.parametrize("args,msg,setup", CASES)
def test_audit_bad_dataset_input(args, msg, setup, models, tmp_path, capsys, monkeypatch):
    argv, subs = row_argv(args, setup, models, tmp_path, monkeypatch)
    records = _Records()
    logger = logging.getLogger("datasets")
    level = logger.level
    logger.addHandler(records)
    try:
        line = assert_refused(argv, msg, subs, tmp_path, capsys)
    finally:
        logger.removeHandler(records)
    assert [r.getMessage() for r in records.records] == []  # nothing of datasets' own reaches its handlers
    assert logger.level == level  # the verbosity is restored
    _no_library_names(line)


def test_audit_fewrel_vocab_without_markers(tmp_path, capsys, monkeypatch, shared_data):
    """7. a FewRel model whose vocab lacks [unused0…3]: the way out is a vocab with them or --dataset."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = tmp_path / "m"
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tiny_hf("cls", seed=0, vocab_size=len(words), num_labels=16).save_pretrained(model)
    (model / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    line = assert_refused(["ablate", "--all", "--model", str(model), "--data", str(shared_data)],
                          "vocab lacks the entity markers", {}, tmp_path, capsys)
    assert "allowed: a WordPiece vocab with them (BERT's), or your own table with --dataset" in line, line
    assert line.endswith("(library: markers=False)"), line  # the library's way, said as the library's


def test_library_messages_say_parameters(tmp_path):
    """The library keeps its own words: ``test_split=…``, `` `split` ``, ``markers=False``."""
    from nodeprobe.data.user import user_splits
    from nodeprobe.errors import NodeprobeError

    _disk_dict(tmp_path)
    with pytest.raises(NodeprobeError, match=r"^test_split=nope: .* has no such split; allowed: train, test$"):
        user_splits(tmp_path / "disk", None, split="train", test_split="nope")
    with pytest.raises(NodeprobeError, match=r"^test_split=nope: needs `split`"):
        user_splits(tmp_path / "disk", None, test_split="nope")
    (tmp_path / "d.csv").write_text(PAIR, encoding="utf-8")
    with pytest.raises(NodeprobeError, match=r"^text_pair_column=text: the same column as `text_column`"):
        user_splits(tmp_path / "d.csv", None, text_pair_column="text")


def test_datasets_verbosity_restored(tmp_path):
    """read_table silences ``datasets`` only while it reads: its level and progress bars come back."""
    import datasets

    from nodeprobe.data.user import read_table
    from nodeprobe.errors import NodeprobeError

    _bad_jsonl(tmp_path)
    logger = logging.getLogger("datasets")
    before = logger.level, datasets.are_progress_bars_disabled()
    with pytest.raises(NodeprobeError):
        read_table(tmp_path / "bad.jsonl")
    (tmp_path / "ok.jsonl").write_text("".join(json.dumps({"text": "x", "label": i}) + "\n" for i in range(3)))
    assert read_table(tmp_path / "ok.jsonl").num_rows == 3
    assert (logger.level, datasets.are_progress_bars_disabled()) == before


def test_audit_no_test_rows_names_test_dataset(models, tmp_path, capsys, monkeypatch):
    """4. "or `test_path`" must come out as --test-dataset on the CLI."""
    monkeypatch.chdir(tmp_path)
    _write("d.csv", FOUR)(tmp_path)
    line = assert_refused(AB[:-1] + [str(models["cls3"]), "--dataset", str(tmp_path / "d.csv"), "--test-fraction", "0.1"],
                          "--test-fraction 0.1: leaves no test rows", {}, tmp_path, capsys)
    assert "--test-dataset" in line and "test_path" not in line, line

