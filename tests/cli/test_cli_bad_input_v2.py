"""Bad input, issue 15 classes 2, 4 and 7 (and integers such as ``--epochs 1e3``), across commands.

The harness of ``tests/cli/test_cli_bad_input.py``: every row asserts exit code 2, stderr exactly one
line ``nodeprobe: error: …`` holding the expected text, no traceback, and nothing written (the tmp
dir listing is unchanged; the ``--json`` path does not exist).

* class 2, validate before work: ``--out``/``--runs``/``--reports``/``--cache``/``--plot`` that is a
  file or sits under one, a read-only parent (skipped as root: root writes into a 0o555 folder);
* class 4, sizes that cannot fit: refused up front from an estimate (memory vs this machine's RAM, a
  lower-bound time vs 30 days), the message naming the value, the estimate and the limit;
* class 7, paths echoed exactly (two spaces, non-ASCII, ``[bold]``);
* integers written as floats: the value and the option named in one line.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from _bad_input import assert_refused, row_argv
from _small_data import small_data_copy
from _tiny_models import tiny_hf
from nodeprobe.cli import main

VOCAB_SIZE = 30522
BIG = str(10**12)


def _save(hf, out, vocab=None):
    hf.save_pretrained(out)
    if vocab is not None:
        shutil.copy(vocab, out / "vocab.txt")
    return out


@pytest.fixture(scope="module")
def fx(tmp_path_factory, shared_data):
    """Tiny saved models (2 blocks, 4 heads, d_model 16) and a small pre-training corpus, built once."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bad_input_v2")
    vocab = shared_data / "tokenizer" / "bert-base-uncased-vocab.txt"
    cls = _save(tiny_hf("cls", seed=0, vocab_size=VOCAB_SIZE, num_labels=16), root / "cls", vocab)
    mlm = _save(tiny_hf("mlm", seed=0, vocab_size=VOCAB_SIZE), root / "mlm", vocab)
    data = small_data_copy(root / "data", shared_data, dbpedia_rows=None)  # a small pre-training corpus
    return {"cls": cls, "mlm": mlm, "data": data, "shared": shared_data}


TINY = ["--n-layers", "1", "--d-model", "32", "--n-heads", "2", "--d-ff", "32", "--batch-size", "8"]
PT = ["pretrain", "--preset", "smoke", "--data", "{data}", "--out", "{tmp}/run"]
FT = ["finetune", "--model", "{cls}", "--task", "fewrel", "--data", "{shared}", "--out", "{tmp}/ft", "--n-train", "4",
      "--n-test", "2"]
AB = ["ablate", "--model", "{cls}", "--data", "{shared}", "--limit", "16", "--all"]
RP = ["reproduce", "--data", "{data}", "--runs", "{tmp}/runs", "--reports", "{tmp}/reports"]
SIM = ["similarity", "--model", "{mlm}", "--text", "the cat sat on the mat"]
SEG = ["segment", "--model", "{mlm}", "--text", "the cat sat on the mat. the dog ran."]
CA = ["cache", "--model", "{cls}", "--data", "{shared}", "--limit", "16", "--out", "{tmp}/cache"]
SP = ["specialization", "--model", "{cls}", "--data", "{shared}", "--limit", "16"]
CO = ["cooperation", "--model", "{cls}", "--data", "{shared}", "--limit", "16"]
HU = ["hull", "--model", "{cls}", "--data", "{shared}", "--limit", "16"]
APT = ["apt", "--model", "{mlm}", "--task", "mlm", "--data", "{data}", "--limit", "8"]
BL = ["blocks", "--model", "{cls}", "--data", "{shared}", "--limit", "16"]
TR = ["track", "--run", "{cls}", "--task", "fewrel", "--data", "{shared}"]
NEEDS = "needs ≈ "
LIMIT_RAM = "(this machine's RAM)"
WEIRD = "données  x/[bold]é"  # two spaces, non-ASCII, Rich markup


def _setup_file(tmp):
    (tmp / "afile").write_text("x")


def _setup_dir(tmp):
    (tmp / "adir").mkdir()


def _setup_readonly(tmp):
    (tmp / "ro").mkdir()
    os.chmod(tmp / "ro", 0o555)


AS_ROOT = pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                             reason="root writes into a 0o555 folder: a read-only parent cannot be made here")

P = pytest.param
CASES = [
    # ---------------------------------------------------------------- class 2: outputs checked before any work
    P(PT + TINY + ["--out", "{tmp}/afile"], "--out {tmp}/afile: is a file; give a folder", _setup_file,
      id="pretrain-out-is-a-file"),
    P(PT + TINY + ["--out", "{tmp}/afile/run"], "--out {tmp}/afile/run: {tmp}/afile is a file, not a folder",
      _setup_file, id="pretrain-out-under-a-file"),
    P(FT + ["--out", "{tmp}/afile"], "--out {tmp}/afile: is a file", _setup_file, id="finetune-out-is-a-file"),
    P(FT + ["--json", "{tmp}/afile/ft.json"], "--json {tmp}/afile/ft.json: {tmp}/afile is a file", _setup_file,
      id="finetune-json-under-a-file"),
    P(["reproduce", "--data", "{data}", "--runs", "{tmp}/afile", "--reports", "{tmp}/reports"],
      "--runs {tmp}/afile: is a file; give a folder", _setup_file, id="reproduce-runs-is-a-file"),
    P(["reproduce", "--data", "{data}", "--runs", "{tmp}/runs", "--reports", "{tmp}/afile"],
      "--reports {tmp}/afile: is a file; give a folder", _setup_file, id="reproduce-reports-is-a-file"),
    P(["reproduce", "--data", "{data}", "--runs", "{tmp}/runs", "--reports", "{tmp}/afile/r"],
      "--reports {tmp}/afile/r: {tmp}/afile is a file, not a folder", _setup_file, id="reproduce-reports-under-a-file"),
    P(CA[:-1] + ["{tmp}/afile"], "--out {tmp}/afile: is a file; give a folder", _setup_file, id="cache-out-is-a-file"),
    P(CA[:-2] + ["--cache", "{tmp}/afile/c"], "--out {tmp}/afile/c: {tmp}/afile is a file", _setup_file,
      id="cache-cache-alias-under-a-file"),
    P(SP + ["--cache", "{tmp}/afile"], "--cache {tmp}/afile: is a file; give a folder", _setup_file,
      id="specialization-cache-is-a-file"),
    P(CO + ["--cache", "{tmp}/afile/c"], "--cache {tmp}/afile/c: {tmp}/afile is a file", _setup_file,
      id="cooperation-cache-under-a-file"),
    P(HU + ["--n", "1", "--plot", "{tmp}/afile"], "--plot {tmp}/afile: is a file; give a folder", _setup_file,
      id="hull-plot-is-a-file"),
    P(APT + ["--plot", "{tmp}/afile"], "--plot {tmp}/afile: is a file", _setup_file, id="apt-plot-is-a-file"),
    P(BL + ["--json", "{tmp}/afile/b.json"], "--json {tmp}/afile/b.json: {tmp}/afile is a file", _setup_file,
      id="blocks-json-under-a-file"),
    P(BL + ["--cache", "{tmp}/afile"], "--cache {tmp}/afile: is a file", _setup_file, id="blocks-cache-is-a-file"),
    P(TR + ["--out", "{tmp}/afile"], "--out {tmp}/afile: is a file; give a folder", _setup_file,
      id="track-out-is-a-file"),
    P(TR + ["--plot", "{tmp}/afile"], "--plot {tmp}/afile: is a file", _setup_file, id="track-plot-is-a-file"),
    P(SIM + ["--plot", "{tmp}/afile"], "--plot {tmp}/afile: is a file", _setup_file, id="similarity-plot-is-a-file"),
    P(SEG + ["--json", "{tmp}/adir"], "--json {tmp}/adir: is a directory", _setup_dir, id="segment-json-is-a-directory"),
    P(AB + ["--plot", "{tmp}/afile"], "--plot {tmp}/afile: is a file", _setup_file, id="ablate-plot-is-a-file"),
    P(PT + TINY + ["--out", "{tmp}/ro/run"], "--out {tmp}/ro/run: {tmp}/ro is not writable", _setup_readonly,
      id="pretrain-out-in-read-only-folder", marks=AS_ROOT),
    P(AB + ["--json", "{tmp}/ro/a.json"], "--json {tmp}/ro/a.json: {tmp}/ro is not writable", _setup_readonly,
      id="ablate-json-in-read-only-folder", marks=AS_ROOT),
    P(RP[:-1] + ["{tmp}/ro/reports"], "--reports {tmp}/ro/reports: {tmp}/ro is not writable", _setup_readonly,
      id="reproduce-reports-in-read-only-folder", marks=AS_ROOT),
    P(SP + ["--plot", "{tmp}/ro/p"], "--plot {tmp}/ro/p: {tmp}/ro is not writable", _setup_readonly,
      id="specialization-plot-in-read-only-folder", marks=AS_ROOT),
    # ---------------------------------------------------------------- class 4: sizes refused from an estimate
    P(PT + ["--d-model", "2000000", "--n-heads", "16"], "--d-model 2000000: " + NEEDS, None,
      id="pretrain-d-model-2e6"),
    P(PT + ["--d-ff", BIG], f"--d-ff {BIG}: " + NEEDS, None, id="pretrain-d-ff-1e12"),
    P(PT + ["--n-layers", str(10**9)], f"--n-layers {10**9}: " + NEEDS, None, id="pretrain-n-layers-1e9"),
    P(PT + TINY + ["--epochs", BIG], f"--epochs {BIG}: expected at most", None, id="pretrain-epochs-1e12"),
    P(PT + TINY + ["--max-steps", BIG], f"--max-steps {BIG}: expected at most", None, id="pretrain-max-steps-1e12"),
    P(FT + ["--epochs", BIG], f"--epochs {BIG}: expected at most", None, id="finetune-epochs-1e12"),
    # a billion epochs fits the 30-day time estimate (≥ 1 ms each) but no study needs it: capped
    P(FT + ["--epochs", str(10**9), "--n-train", "2"], f"--epochs {10**9}: expected at most 100,000", None,
      id="finetune-epochs-1e9"),
    P(BL + ["--probe-epochs", str(10**9)], f"--probe-epochs {10**9}: expected at most 100,000", None,
      id="blocks-probe-epochs-1e9"),
    P(PT + TINY + ["--max-steps", str(10**8)], f"--max-steps {10**8}: expected at most 10,000,000", None,
      id="pretrain-max-steps-1e8"),
    P(RP[:-1] + ["{tmp}/runs"], "--reports {tmp}/runs: is the output --runs {tmp}/runs; outputs must not overlap",
      None, id="reproduce-reports-is-the-runs"),
    P(RP[:-1] + ["{tmp}/runs/reports"], "--reports {tmp}/runs/reports: is inside the output --runs {tmp}/runs",
      None, id="reproduce-reports-inside-the-runs"),
    P(CO + ["--grid", "17,500"], "--grid 17,500: node counts above the 16 nodes at --site readout; allowed 1–16",
      None, id="cooperation-grid-above-the-width"),
    P(CO + ["--R", BIG], f"--R {BIG}: " + NEEDS, None, id="cooperation-R-1e12"),
    P(CO + ["--R", str(10**11), "--grid", "1,2"], f"--R {10**11}: " + NEEDS, None, id="cooperation-R-1e11-grid"),
    P(HU + ["--n", "3", "--R", BIG], f"--R {BIG}: " + NEEDS, None, id="hull-R-1e12"),
    P(APT + ["--bins", BIG], f"--bins {BIG}: " + NEEDS, None, id="apt-bins-1e12"),
    P(APT + ["--probe", "--probe-epochs", BIG], f"--probe-epochs {BIG}: expected at most", None,
      id="apt-probe-epochs-1e12"),
    P(BL + ["--probe-epochs", BIG], f"--probe-epochs {BIG}: expected at most", None, id="blocks-probe-epochs-1e12"),
    P(SP + ["--batch-size", BIG], f"--batch-size {BIG}: " + NEEDS, None, id="specialization-batch-size-1e12"),
    P(AB + ["--batch-size", BIG], f"--batch-size {BIG}: " + NEEDS, None, id="ablate-batch-size-1e12"),
    P(CA + ["--shard-batches", BIG], f"--shard-batches {BIG}: " + NEEDS, None, id="cache-shard-batches-1e12"),
    P(SIM + ["--max-texts", BIG], f"--max-texts {BIG}: would take at least", None, id="similarity-max-texts-1e12"),
    P(CO + ["--R", BIG, "--json", "{tmp}/c.json"], "limit", None, id="cooperation-R-names-the-limit"),
    P(PT + ["--d-model", "2000000", "--n-heads", "16"], LIMIT_RAM, None, id="pretrain-d-model-names-the-limit"),
    # ---------------------------------------------------------------- class 7: paths echoed exactly
    P(AB + ["--json", "{tmp}/afile/" + WEIRD + ".json"], "--json {tmp}/afile/" + WEIRD + ".json: ", _setup_file,
      id="ablate-json-weird-path"),
    P(PT + TINY + ["--out", "{tmp}/afile/" + WEIRD], "--out {tmp}/afile/" + WEIRD + ": ", _setup_file,
      id="pretrain-out-weird-path"),
    P(FT + ["--model", "{tmp}/" + WEIRD], "--model {tmp}/" + WEIRD + ": no such directory", None,
      id="finetune-model-weird-path"),
    P(["specialization", "--model", "{cls}", "--text-file", "{tmp}/" + WEIRD + ".txt", "--task", "mlm"],
      WEIRD + ".txt", None, id="specialization-text-file-weird-path"),
    P(PT + ["--epochs", "1  [bold]é"], "'--epochs': '1  [bold]é'", None, id="pretrain-epochs-weird-value-usage"),
    P(AB + ["--plot", "{tmp}/afile/[bold]é"], "--plot {tmp}/afile/[bold]é: ", _setup_file,
      id="ablate-plot-markup-non-ascii-path"),
    P(SIM + ["--json", "{tmp}/afile/[red]ü.json"], "--json {tmp}/afile/[red]ü.json: ", _setup_file,
      id="similarity-json-markup-non-ascii-path"),
    # ---------------------------------------------------------------- integers written as floats: value and option
    P(PT + ["--epochs", "1e3"], "Invalid value for '--epochs': '1e3'", None, id="pretrain-epochs-1e3"),
    P(PT + ["--epochs=1e3"], "Invalid value for '--epochs': '1e3'", None, id="pretrain-epochs-equals-1e3"),
    P(FT + ["--n-train", "2.5"], "'--n-train': '2.5'", None, id="finetune-n-train-2.5"),
    P(CO + ["--R", "1e12"], "'--R': '1e12'", None, id="cooperation-R-1e12-float"),
    P(HU + ["--n", "1e0"], "'--n': '1e0'", None, id="hull-n-1e0"),
    P(APT + ["--bins", "1e1"], "'--bins': '1e1'", None, id="apt-bins-1e1"),
    P(CA + ["--shard-batches", "8.5"], "'--shard-batches': '8.5'", None, id="cache-shard-batches-8.5"),
    P(AB + ["--limit", "1e3"], "'--limit': '1e3'", None, id="ablate-limit-1e3"),
    P(SIM + ["--max-texts", "1e3"], "'--max-texts': '1e3'", None, id="similarity-max-texts-1e3"),
    P(SEG + ["--max-len", "1e2"], "'--max-len': '1e2'", None, id="segment-max-len-1e2"),
    P(TR + ["--max-items", "1e3"], "'--max-items': '1e3'", None, id="track-max-items-1e3"),
    P(RP + ["--seed", "1e3"], "'--seed': '1e3'", None, id="reproduce-seed-1e3"),
    P(SP + ["--min-count", "5.5"], "'--min-count': '5.5'", None, id="specialization-min-count-5.5"),
    P(BL + ["--probe-epochs", "3e1"], "'--probe-epochs': '3e1'", None, id="blocks-probe-epochs-3e1"),
]


@pytest.mark.parametrize("args,msg,setup", CASES)
def test_bad_input(args, msg, setup, fx, tmp_path, capsys, monkeypatch):
    argv, subs = row_argv(args, setup, fx, tmp_path, monkeypatch)
    json_path = argv[argv.index("--json") + 1] if "--json" in argv else None

    def run(argv):
        try:
            return main(argv)
        finally:  # a read-only folder made by the row's setup is writable again (tmp cleanup)
            if (tmp_path / "ro").is_dir():
                os.chmod(tmp_path / "ro", 0o755)

    assert_refused(argv, msg, subs, tmp_path, capsys, run=run)
    if json_path is not None and not os.path.isdir(json_path):
        assert not os.path.exists(json_path)


def test_budget_messages_name_value_estimate_and_limit():
    """The estimate helpers, without a command: a fitting size passes, an absurd one names all three."""
    from nodeprobe.budget import MAX_SECONDS, check_budget, human_bytes, human_seconds, ram_bytes
    from nodeprobe.errors import NodeprobeError

    assert human_bytes(1.5e12) == "1.5 TB" and human_seconds(3600) == "1 h"
    check_budget("--bins", 10, need_bytes=1000, seconds=1.0)
    with pytest.raises(NodeprobeError, match=r"^--bins 7: needs ≈ .* of memory \(x\); limit .* \(this machine's RAM\)$"):
        check_budget("--bins", 7, need_bytes=(ram_bytes() or 0) * 2 + 1, how="x")
    with pytest.raises(NodeprobeError, match=r"^R=7: would take at least"):
        check_budget("R=", 7, seconds=MAX_SECONDS * 2)


def test_library_sizes_are_refused_too():
    """The study checks hold without the CLI (hull's R, cooperation's R × grid, a model size)."""
    from nodeprobe.errors import NodeprobeError
    from nodeprobe.studies._common import check_cooperation_size, check_hull_args, parse_grid
    from nodeprobe.train.presets import custom_size, get_preset

    check_cooperation_size(20, (1, 2, 4))
    assert parse_grid("1,2", R=20) == (1, 2)
    with pytest.raises(NodeprobeError, match=f"^R={10**12}: needs"):
        parse_grid(None, R=10**12)
    check_hull_args(None, 3, None, 20)
    with pytest.raises(NodeprobeError, match=f"^R={10**12}: needs"):
        check_hull_args(None, 3, None, 10**12)
    check_hull_args(None, 1, None, 10**12)  # n = 1: every single node, R unused
    assert custom_size(get_preset("paper").model).d_model == 768
    with pytest.raises(NodeprobeError, match="^--d-model 2000000: needs"):
        custom_size(get_preset("cpu").model, d_model=2000000, n_heads=16)
