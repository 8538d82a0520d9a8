"""Bad input across the training, ablation, reproduction, head-study and cache commands.

One row per case (``tests/cli/test_cli_reports.py`` covers the report commands' own options).  Every
row asserts: exit code 2, stderr is exactly one line ``nodeprobe: error: …`` naming the bad value,
no traceback, and nothing written (the tmp dir listing is unchanged; the ``--json`` path does not
exist).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from _bad_input import assert_refused, last_wins, listing, row_argv
from _small_data import small_data_copy
from _tiny_models import tiny_hf
from nodeprobe.cli import main

VOCAB_SIZE = 30522


def _save(hf, out, vocab=None):
    hf.save_pretrained(out)
    if vocab is not None:
        shutil.copy(vocab, out / "vocab.txt")
    return out


@pytest.fixture(scope="module")
def fx(tmp_path_factory, shared_data):
    """Tiny saved models (2 blocks, 4 heads, d_model 16) and broken variants, built once."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bad_input")
    vocab = shared_data / "tokenizer" / "bert-base-uncased-vocab.txt"
    cls = _save(tiny_hf("cls", seed=0, vocab_size=VOCAB_SIZE, num_labels=16), root / "cls", vocab)
    mlm = _save(tiny_hf("mlm", seed=0, vocab_size=VOCAB_SIZE), root / "mlm", vocab)

    nocfg = root / "nocfg"
    shutil.copytree(cls, nocfg)
    (nocfg / "config.json").unlink()

    gpt2 = root / "gpt2"
    shutil.copytree(cls, gpt2)
    cfg = json.loads((gpt2 / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (gpt2 / "config.json").write_text(json.dumps(cfg))

    trunc = root / "trunc"
    shutil.copytree(cls, trunc)
    w = (trunc / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(w[: len(w) // 2])

    emptyvocab = root / "emptyvocab"
    shutil.copytree(cls, emptyvocab)
    (emptyvocab / "vocab.txt").write_text("")

    badvocab = root / "badvocab"  # 60 embeddings, the 30522-token vocab
    _save(tiny_hf("cls", seed=0, num_labels=16), badvocab, vocab)

    fewrel = json.loads((shared_data / "fewrel" / "val_wiki.json").read_text())
    rel = next(iter(fewrel))
    small = {r: items[:20] for r, items in list(fewrel.items())[:4]}
    item = dict(small[rel][3])
    item["h"] = [item["h"][0], item["h"][1], [[len(item["tokens"]) + 7]]]
    small[rel][3] = item
    badfewrel = root / "badfewrel.json"
    badfewrel.write_text(json.dumps(small))

    data = small_data_copy(root / "data", shared_data, dbpedia_rows=20)  # a small pre-training corpus
    return {"cls": cls, "mlm": mlm, "nocfg": nocfg, "gpt2": gpt2, "trunc": trunc, "emptyvocab": emptyvocab,
            "badvocab": badvocab, "badfewrel": badfewrel, "data": data, "shared": shared_data}


TINY = ["--n-layers", "1", "--d-model", "32", "--n-heads", "2", "--d-ff", "32", "--batch-size", "8"]
PT = ["pretrain", "--preset", "smoke", "--data", "{data}", "--out", "{tmp}/run"]
FT = ["finetune", "--model", "{cls}", "--task", "fewrel", "--data", "{shared}", "--out", "{tmp}/ft", "--n-train", "4",
      "--n-test", "2"]
AB = ["ablate", "--model", "{cls}", "--data", "{shared}", "--limit", "16"]
SIM = ["similarity", "--model", "{mlm}", "--text", "the cat sat on the mat"]
SEG = ["segment", "--model", "{mlm}", "--text", "the cat sat on the mat. the dog ran."]
CA = ["cache", "--model", "{cls}", "--data", "{shared}", "--limit", "16", "--out", "{tmp}/cache"]
CAT = ["cache", "--model", "{mlm}", "--task", "mlm", "--out", "{tmp}/cache", "--json", "{tmp}/c.json"]


def _setup_other_run(tmp):
    """An --out folder holding a run made with other sizes (its run.json fingerprint differs)."""
    d = tmp / "run"
    (d / "checkpoint").mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"fingerprint": "0123456789abcdef", "run": {"size": {"n_layers": 4}}}))
    (d / "checkpoint" / "state.json").write_text(json.dumps({"step": 3, "epoch": 0, "tokens": 1, "seconds": 1.0,
                                                             "run": "0123456789abcdef"}))


def _setup_file(tmp):
    (tmp / "afile").write_text("x")


def _setup_dir(tmp):
    (tmp / "adir").mkdir()


def _setup_latin1(tmp):
    (tmp / "latin1.txt").write_bytes(b"caf\xe9 au lait\n\nan article\n")


P = pytest.param
CASES = [
    # ---------------------------------------------------------------- pretrain
    P(PT + ["--preset", "huge"], "--preset huge", None, id="pretrain-unknown-preset"),
    P(PT + ["--d-model", "32", "--n-heads", "3"], "--n-heads 3", None, id="pretrain-heads-not-dividing-d-model"),
    P(PT + ["--epochs", "0"], "--epochs 0", None, id="pretrain-epochs-0"),
    P(PT + ["--batch-size", "-4"], "--batch-size -4", None, id="pretrain-negative-batch-size"),
    P(PT + ["--max-steps", "0"], "--max-steps 0", None, id="pretrain-max-steps-0"),
    P(PT + ["--lr", "-0.1"], "--lr -0.1", None, id="pretrain-negative-lr"),
    P(PT + ["--precision", "fp8"], "--precision fp8", None, id="pretrain-precision-fp8"),
    P(PT + ["--n-layers", "0"], "--n-layers 0", None, id="pretrain-n-layers-0"),
    P(PT + ["--epochs", "two"], "'--epochs'", None, id="pretrain-epochs-not-int-usage"),
    P(PT + ["--bogus"], "--bogus", None, id="pretrain-unknown-option-usage"),
    P(PT + ["--device", "cuda"] if not torch.cuda.is_available() else PT + ["--device", "cuda:99"], "--device cuda",
      None, id="pretrain-device-cuda-no-gpu"),
    P(PT + ["--device", "tpu"], "--device tpu", None, id="pretrain-device-tpu"),
    P(PT + TINY + ["--json", "{tmp}/adir"], "adir", _setup_dir, id="pretrain-json-is-directory"),
    P(PT + TINY + ["--json", "{tmp}/afile/out.json"], "afile", _setup_file, id="pretrain-json-under-a-file"),
    P(PT + TINY + ["--resume"], "--out", _setup_other_run, id="pretrain-resume-other-architecture"),
    P(PT + TINY, "--out", _setup_other_run, id="pretrain-out-holds-run-no-resume"),
    P(PT + TINY + ["--resume", "--overwrite"], "--resume", _setup_other_run, id="pretrain-resume-with-overwrite"),
    P(["pretrain", "--preset", "smoke", "--data", "{tmp}/nodata", "--out", "{tmp}/run"] + TINY, "nodata", None,
      id="pretrain-data-missing"),
    # ---------------------------------------------------------------- finetune
    P(FT + ["--task", "xyz"], "--task xyz", None, id="finetune-task-xyz"),
    P(FT + ["--task", "mlm"], "--task mlm", None, id="finetune-task-mlm"),
    P(FT + ["--epochs", "0"], "--epochs 0", None, id="finetune-epochs-0"),
    P(FT + ["--preset", "nope"], "--preset nope", None, id="finetune-unknown-preset"),
    P(FT + ["--precision", "fp16"], "--precision fp16", None, id="finetune-precision-fp16"),
    P(FT + ["--model", "{tmp}/missing"], "missing", None, id="finetune-model-missing"),
    P(FT + ["--model", "{nocfg}"], "config.json", None, id="finetune-model-without-config"),
    P(FT + ["--model", "{gpt2}"], "gpt2", None, id="finetune-model-type-gpt2"),
    P(FT + ["--model", "{trunc}"], "trunc", None, id="finetune-truncated-safetensors"),
    P(FT + ["--model", "{emptyvocab}"], "vocab", None, id="finetune-empty-vocab"),
    P(FT + ["--data", "{badfewrel}"], "word index", None, id="finetune-fewrel-bad-entity-index"),
    P(FT + ["--device", "cuda:7"], "--device cuda:7", None, id="finetune-device-missing-gpu"),
    P(FT + ["--resume", "--overwrite"], "--resume", None, id="finetune-resume-with-overwrite"),
    # ---------------------------------------------------------------- ablate
    P(AB + ["--layer", "9", "--head", "0"], "blocks 0–1", None, id="ablate-layer-9-of-2"),
    P(AB + ["--layer", "0", "--head", "12"], "--head 12", None, id="ablate-head-12-of-4"),
    P(AB + ["--layer", "-1", "--head", "0"], "--layer -1", None, id="ablate-negative-layer"),
    P(AB + ["--all", "--limit", "-5"], "--limit -5", None, id="ablate-negative-limit"),
    P(AB + ["--all", "--mode", "half"], "--mode half", None, id="ablate-mode-half"),
    P(AB + ["--all", "--layer", "0"], "--all", None, id="ablate-all-with-layer"),
    P(AB + ["--layer", "0"], "--head", None, id="ablate-layer-without-head"),
    P(AB + ["--layer", "one", "--head", "0"], "'--layer'", None, id="ablate-layer-not-int-usage"),
    P(AB + ["--all", "--task", "xyz"], "--task xyz", None, id="ablate-task-xyz"),
    P(AB + ["--all", "--json", "{tmp}/adir"], "adir", _setup_dir, id="ablate-json-is-directory"),
    P(AB + ["--all", "--model", "{badvocab}"], "embeddings", None, id="ablate-vocab-not-matching-embeddings"),
    P(AB + ["--all", "--model", "{gpt2}"], "gpt2", None, id="ablate-model-type-gpt2"),
    P(AB + ["--all", "--model", "{trunc}"], "trunc", None, id="ablate-truncated-safetensors"),
    P(AB + ["--all", "--data", "{badfewrel}"], "word index", None, id="ablate-fewrel-bad-entity-index"),
    P(["ablate", "--all"], "--model", None, id="ablate-missing-model-usage"),
    # ---------------------------------------------------------------- reproduce
    P(["reproduce", "--preset", "nope", "--runs", "{tmp}/runs", "--reports", "{tmp}/reports"], "--preset nope", None,
      id="reproduce-unknown-preset"),
    P(["reproduce", "--device", "cuda:9", "--runs", "{tmp}/runs", "--reports", "{tmp}/reports"], "--device cuda:9",
      None, id="reproduce-device-missing-gpu"),
    P(["reproduce", "--data", "{tmp}/nodata", "--runs", "{tmp}/runs", "--reports", "{tmp}/reports"], "nodata", None,
      id="reproduce-data-missing"),
    # ---------------------------------------------------------------- similarity / segment / track
    P(SIM + ["--layer", "9", "--head", "0"], "blocks 0–1", None, id="similarity-layer-9-of-2"),
    P(SIM + ["--layer", "0", "--head", "12"], "--head 12", None, id="similarity-head-12"),
    P(SIM + ["--layer", "0"], "--head", None, id="similarity-layer-without-head"),
    P(["similarity", "--model", "{mlm}", "--text", "  "], "--text", None, id="similarity-empty-text"),
    P(["similarity", "--model", "{mlm}", "--text-file", "{tmp}/none.txt"], "none.txt", None,
      id="similarity-text-file-missing"),
    P(SIM + ["--max-texts", "0"], "--max-texts 0", None, id="similarity-max-texts-0"),
    P(SIM + ["--model", "{nocfg}"], "config.json", None, id="similarity-model-without-config"),
    P(SEG + ["--max-texts", "0"], "--max-texts 0", None, id="segment-max-texts-0"),
    P(SEG + ["--layer", "5", "--head", "0"], "blocks 0–1", None, id="segment-layer-5-of-2"),
    P(["track", "--run", "{tmp}/norun"], "norun", None, id="track-run-missing"),
    # ---------------------------------------------------------------- cache
    P(CA + ["--dtype", "int8"], "--dtype int8", None, id="cache-dtype-int8"),
    P(CA + ["--shard-batches", "0"], "--shard-batches 0", None, id="cache-shard-batches-0"),
    P(CA + ["--task", "xyz"], "--task xyz", None, id="cache-task-xyz"),
    P(CA + ["--batch-size", "big"], "'--batch-size'", None, id="cache-batch-size-not-int-usage"),
    P(CA + ["--model", "{emptyvocab}"], "vocab", None, id="cache-empty-vocab"),
    P(CA + ["--json", "{tmp}/afile/c.json"], "afile", _setup_file, id="cache-json-under-a-file"),
    P(CA + ["--text-file", "{tmp}/afile"], "--task mlm", _setup_file, id="cache-text-file-with-task-fewrel"),
    P(CAT + ["--text-file", "{tmp}/none.txt"], "none.txt: not found", None, id="cache-text-file-missing"),
    P(CAT + ["--text-file", "data/notes.md"], "--text-file data/notes.md: not found; allowed: a text file "
      "(.txt, .raw, .tokens, .jsonl, .parquet) or a parquet directory", None, id="cache-text-file-missing-md"),
    P(CAT + ["--text-file", "corpus/mytext"], "--text-file corpus/mytext: not found; allowed: a text file",
      None, id="cache-text-file-missing-no-suffix"),
    P(["apt", "--model", "{mlm}", "--task", "mlm", "--text-file", "wikimedia/wikipedia"],
      "--text-file wikimedia/wikipedia: not found", None, id="apt-text-file-hub-name"),
    P(CAT + ["--text-file", "{tmp}/adir"], "adir: is a directory", _setup_dir, id="cache-text-file-is-directory"),
    P(CAT + ["--text-file", "{tmp}/latin1.txt"], "latin1.txt: text file is not UTF-8", _setup_latin1,
      id="cache-text-file-not-utf8"),
    # a --plot folder under a file: named once, as the folder given (not an internal probe file)
    P(AB + ["--layer", "1", "--head", "1", "--plot", "{tmp}/afile/sub"], "nodeprobe: error: --plot {tmp}/afile/sub: ",
      _setup_file, id="ablate-plot-under-a-file"),
    P(["specialization", "--model", "{mlm}", "--task", "mlm", "--plot", "{tmp}/afile/sub"], "--plot {tmp}/afile/sub: ",
      _setup_file, id="specialization-plot-under-a-file"),
    # --seed: one validator on every command (numpy refuses negative seeds and ones ≥ 2^32: a traceback before)
    P(PT + ["--seed", "-1"], "--seed -1: expected an integer from 0 to 4294967295", None, id="pretrain-seed-negative"),
    P(FT + ["--seed", str(2**40)], f"--seed {2**40}: expected an integer from 0", None, id="finetune-seed-too-large"),
    P(AB + ["--layer", "1", "--head", "1", "--seed", "-7"], "--seed -7:", None, id="ablate-seed-negative"),
    P(["specialization", "--model", "{cls}", "--seed", str(2**32)], f"--seed {2**32}:", None,
      id="specialization-seed-2-to-the-32"),
    P(["track", "--run", "{tmp}/norun", "--seed", "-1"], "--seed -1:", None, id="track-seed-negative"),
    P(["reproduce", "--seed", "-2", "--runs", "{tmp}/runs", "--reports", "{tmp}/reports"], "--seed -2:", None,
      id="reproduce-seed-negative"),
    # an output never overwrites an input (issue 15, class 1): is, contains or sits inside it
    P(AB + ["--all", "--json", "{cls}/config.json"], "--json {cls}/config.json: is inside the input --model {cls}",
      None, id="ablate-json-is-the-models-config"),
    P(["hull", "--model", "{cls}", "--data", "{shared}", "--json", "{cls}/config.json"],
      "--json {cls}/config.json: is inside the input --model", None, id="hull-json-is-the-models-config"),
    P(["specialization", "--model", "{cls}", "--data", "{shared}", "--cache", "{cls}/cache"],
      "--cache {cls}/cache: is inside the input --model", None, id="specialization-cache-inside-model"),
    P(["specialization", "--model", "{cls}", "--data", "{shared}", "--cache", "{tmp}/c", "--json", "{tmp}/c/s.json"],
      "--json {tmp}/c/s.json: is inside the output --cache {tmp}/c", None, id="specialization-json-inside-its-cache"),
    P(["cache", "--model", "{cls}", "--data", "{shared}", "--limit", "16", "--out", "{cls}"],
      "--out {cls}: is the input --model {cls}", None, id="cache-out-is-the-model"),
    P(PT + TINY + ["--out", "{data}"], "--out {data}: is the input --data", None, id="pretrain-out-is-the-data"),
    P(["pretrain", "--preset", "smoke", "--data", "{data}", "--out", "{data}/run"] + TINY,
      "--out {data}/run: is inside the input --data", None, id="pretrain-out-inside-the-data"),
    P(FT + ["--json", "{shared}/x.json"], "--json {shared}/x.json: is inside the input --data", None,
      id="finetune-json-inside-the-data"),
    P(["reproduce", "--data", "{data}", "--runs", "{data}/runs", "--reports", "{tmp}/reports"],
      "--runs {data}/runs: is inside the input --data", None, id="reproduce-runs-inside-the-data"),
    P(SIM + ["--model", "{mlm}", "--json", "{mlm}/sim.json"], "--json {mlm}/sim.json: is inside the input --model",
      None, id="similarity-json-inside-model"),
    P(["track", "--run", "{cls}", "--json", "{cls}/t.json"], "--json {cls}/t.json: is inside the input --run {cls}",
      None, id="track-json-inside-a-run"),
    # numbers: finite and in range, one validator per kind (issue 15, class 3)
    P(PT + ["--lr", "nan"], "--lr nan: expected a finite number in (0, 10]", None, id="pretrain-lr-nan"),
    P(PT + ["--lr", "inf"], "--lr inf: expected a finite number", None, id="pretrain-lr-inf"),
    P(FT + ["--lr", "1e6"], "--lr 1e+06: expected a finite number in (0, 10]", None, id="finetune-lr-absurd"),
    P(["specialization", "--model", "{cls}", "--tau-recall", "nan"], "--tau-recall nan: expected a finite number in [0, 1]",
      None, id="specialization-tau-recall-nan"),
    P(["cooperation", "--model", "{cls}", "--tau-lift", "-inf"], "--tau-lift -inf:", None, id="cooperation-tau-lift-minus-inf"),
    P(SIM + ["--q", "1.5"], "--q 1.5: expected a finite number in (0, 1)", None, id="similarity-q-above-1"),
    P(SIM + ["--threshold", "nan"], "--threshold nan:", None, id="similarity-threshold-nan"),
    P(SEG + ["--min-ratio", "0"], "--min-ratio 0: expected a finite number in (0, ∞)", None, id="segment-min-ratio-0"),
    P(["track", "--run", "{cls}", "--margin-jaccard", "-1"], "--margin-jaccard -1:", None, id="track-margin-negative"),
    P(["apt", "--model", "{mlm}", "--task", "mlm", "--probe-fraction", "1"], "--probe-fraction 1: expected a finite "
      "number in (0, 1)", None, id="apt-probe-fraction-1"),
    # devices this torch cannot use (issue 15, class 5): named with the ones available
    P(PT + TINY + ["--device", "mps"], "--device mps: not available here (available: cpu", None, id="pretrain-device-mps"),
    P(AB + ["--all", "--device", "mps"], "--device mps: not available here", None, id="ablate-device-mps"),
    P(["specialization", "--model", "{cls}", "--data", "{shared}", "--device", "xpu"], "--device xpu: expected cpu, cuda",
      None, id="specialization-device-xpu"),
    # a name=value inside a value (a Hive-style parquet folder) is not taken for a parameter
    P(CAT + ["--text-file", "{tmp}/seed=1/part"], "--text-file {tmp}/seed=1/part: not found", None,
      id="cache-text-file-with-key-value-folder"),
]


@pytest.mark.parametrize("args,msg,setup", CASES)
def test_bad_input(args, msg, setup, fx, tmp_path, capsys, monkeypatch):
    argv, subs = row_argv(args, setup, fx, tmp_path, monkeypatch)
    json_path = argv[argv.index("--json") + 1] if "--json" in argv else None
    json_before = open(json_path, "rb").read() if json_path is not None and os.path.isfile(json_path) else None
    assert_refused(argv, msg, subs, tmp_path, capsys)
    if json_before is not None:  # an input given as --json: untouched
        assert open(json_path, "rb").read() == json_before
    elif json_path is not None and not os.path.isdir(json_path):
        assert not os.path.exists(json_path)


# ---------------------------------------------------------------------- the two data-loss regressions
def _model_copy(fx, tmp_path):
    m = tmp_path / "m"
    shutil.copytree(fx["cls"], m)
    return m, listing(m), (m / "config.json").read_bytes()


@pytest.mark.parametrize("out", ["{m}", "{tmp}"])
def test_finetune_overwrite_never_deletes_the_model_it_reads(fx, tmp_path, capsys, monkeypatch, out):
    """``finetune --model X --out X --overwrite`` deleted X before reading it (issue 15)."""
    monkeypatch.chdir(tmp_path)
    m, files, _ = _model_copy(fx, tmp_path)
    argv = ["finetune", "--model", str(m), "--task", "fewrel", "--data", str(fx["shared"]), "--n-train", "4",
            "--n-test", "2", "--overwrite", "--out", out.format(m=m, tmp=tmp_path)]
    assert main(argv) == 2
    assert "an output never overwrites an input" in capsys.readouterr().err
    assert listing(m) == files


def test_report_json_never_overwrites_the_models_config(fx, tmp_path, capsys, monkeypatch):
    """``hull … --json MODEL_DIR/config.json`` overwrote the model's config (issue 15)."""
    monkeypatch.chdir(tmp_path)
    m, files, config = _model_copy(fx, tmp_path)
    for cmd in ("hull", "specialization", "cooperation", "ablate"):
        extra = ["--all"] if cmd == "ablate" else []
        assert main([cmd, "--model", str(m), "--data", str(fx["shared"]), "--json", str(m / "config.json")] + extra) == 2
        assert (m / "config.json").read_bytes() == config and listing(m) == files
    assert "is inside the input --model" in capsys.readouterr().err


def test_overwrite_clears_only_a_folder_nodeprobe_wrote(fx, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("years of work")
    argv = PT + TINY + ["--overwrite"]
    argv = [a.format(data=fx["data"], tmp=tmp_path) for a in argv]
    argv[argv.index("--out") + 1] = str(other)
    assert main(argv) == 2
    assert "not a nodeprobe run" in capsys.readouterr().err
    assert (other / "thesis.tex").read_text() == "years of work"


def test_legitimate_layouts_are_not_refused(tmp_path, monkeypatch):
    """The overlap rule has no false positives: a --plot folder may hold the model (it only adds PNGs),
    a --json next to the model, an --out beside it, relative spellings of unrelated paths."""
    from nodeprobe.cli.options import check_io

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "cpu" / "finetune" / "final").mkdir(parents=True)
    model = "runs/cpu/finetune/final"
    check_io(model, tmp_path / "report.json", tmp_path)  # --plot . holds runs/
    check_io(model, tmp_path / "runs" / "cpu" / "report.json", tmp_path / "runs" / "plots")
    check_io(model, None, None, outputs={"--out": tmp_path / "runs" / "cpu" / "finetune2"})
    check_io(model, None, None, outputs={"--cache": "runs/cache/abc"})
    check_io(model, tmp_path / "reports" / "x.json", tmp_path / "reports")  # --json inside --plot
    check_io("minilm", Path("minilm.json"))  # a model name, not a folder


def test_overlap_sees_through_symlinks_and_dot_dot(tmp_path, monkeypatch):
    from nodeprobe.cli.options import check_io
    from nodeprobe.errors import NodeprobeError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "m")
    for json_path, out in (("link/config.json", None), ("x/../m/config.json", None), (None, "."), (None, "link")):
        with pytest.raises(NodeprobeError, match="the input --model m"):
            check_io("m", Path(json_path) if json_path else None, None,
                     outputs={"--out": Path(out)} if out else None)


# ---------------------------------------------------------------------- malformed artefacts (issue 15, class 6)
def _setup_track_step_name(tmp):
    """A pre-training run whose snapshots/ holds a model folder named step-best (no step number)."""
    for name in ("step-0000000", "step-best"):
        (tmp / "run" / "snapshots" / name).mkdir(parents=True)
        (tmp / "run" / "snapshots" / name / "config.json").write_text("{}")


CASES += [
    P(["track", "--run", "{tmp}/run"], "snapshot folder {tmp}/run/snapshots/step-best: name is not step-<integer>",
      _setup_track_step_name, id="track-snapshot-name-not-a-step"),
]


class _Evil:
    """Unpickling this writes a marker file (what a malicious pickle could do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _variant(src, dst, edit_config=None, edit=None):
    shutil.copytree(src, dst)
    if edit_config is not None:
        cfg = json.loads((dst / "config.json").read_text())
        edit_config(cfg)
        (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    if edit is not None:
        edit(dst)
    return dst


@pytest.fixture(scope="module")
def mfx(fx, tmp_path_factory):
    """Malformed variants of ``fx``'s tiny models: config.json of the wrong types, safetensors cut
    or corrupt, a tensor of the wrong shape, pickles that would run code (``MARKER`` if they do)."""
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("malformed")
    cls, mlm = fx["cls"], fx["mlm"]
    marker = root / "MARKER"

    def setk(**kw):
        return lambda cfg: cfg.update(kw)

    def cut(n):
        return lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:n])

    def garbage_header(d):
        body = b"{this is not json}"
        (d / "model.safetensors").write_bytes(len(body).to_bytes(8, "little") + body)

    def wrong_shape(d):
        w = load_file(str(d / "model.safetensors"))
        w["bert.encoder.layer.0.intermediate.dense.weight"] = torch.zeros(48, 16)
        save_file(w, str(d / "model.safetensors"), metadata={"format": "pt"})

    def bad_json(d):
        (d / "config.json").write_text('{\n  "model_type": "bert",\n  "hidden_size": 16,,\n}\n')

    def only_evil_pickle(d):
        (d / "model.safetensors").unlink()
        torch.save({"bert.embeddings.word_embeddings.weight": _Evil(marker)}, d / "pytorch_model.bin")

    def evil_pickle_beside(d):
        torch.save({"bert.embeddings.word_embeddings.weight": _Evil(marker)}, d / "pytorch_model.bin")

    out = {
        "cfg_words": _variant(cls, root / "cfg_words", setk(hidden_size="forty-eight")),
        "cfg_nolayers": _variant(cls, root / "cfg_nolayers", lambda c: c.pop("num_hidden_layers")),
        "cfg_bool": _variant(mlm, root / "cfg_bool", setk(vocab_size=True)),
        "cfg_labels0": _variant(cls, root / "cfg_labels0", setk(num_labels=0)),
        "cfg_heads": _variant(cls, root / "cfg_heads", setk(num_attention_heads=3)),
        "cfg_json": _variant(cls, root / "cfg_json", edit=bad_json),
        "st_stub": _variant(cls, root / "st_stub", edit=cut(5)),
        "st_header": _variant(cls, root / "st_header", edit=cut(100)),
        "st_garbage": _variant(mlm, root / "st_garbage", edit=garbage_header),
        "st_shape": _variant(cls, root / "st_shape", edit=wrong_shape),
        "evil": _variant(cls, root / "evil", edit=only_evil_pickle),
        "evil_mlm": _variant(mlm, root / "evil_mlm", edit=only_evil_pickle),
        "evil_beside": _variant(mlm, root / "evil_beside", edit=evil_pickle_beside),
    }
    out["evil_run"] = root / "evil_run"  # a pre-training run whose one snapshot is that pickle
    shutil.copytree(out["evil_mlm"], out["evil_run"] / "snapshots" / "step-0000000")
    st_sizes = {k: (out[k] / "model.safetensors").stat().st_size for k in ("st_header",)}
    out["st_header_len"] = int.from_bytes((cls / "model.safetensors").read_bytes()[:8], "little")
    out["st_header_have"] = st_sizes["st_header"] - 8
    out["marker"] = marker
    return out


MALFORMED = [
    # config.json: wrong types, missing sizes, inconsistent sizes, not JSON — file, key, value, what is allowed
    P(AB + ["--all", "--model", "{cfg_words}"],
      '{cfg_words}/config.json: hidden_size="forty-eight"; expected a positive integer', id="ablate-config-hidden-size-words"),
    P(SIM + ["--model", "{cfg_bool}"], "{cfg_bool}/config.json: vocab_size=true; expected a positive integer",
      id="similarity-config-vocab-size-bool"),
    P(CA + ["--model", "{cfg_nolayers}"], "{cfg_nolayers}/config.json: no 'num_hidden_layers'; expected a positive integer",
      id="cache-config-missing-num-hidden-layers"),
    P(AB + ["--all", "--model", "{cfg_labels0}"],
      "{cfg_labels0}/config.json: num_labels=0; expected an integer ≥ 1 for a classifier", id="ablate-config-num-labels-0"),
    P(["specialization", "--model", "{cfg_heads}", "--data", "{shared}"],
      "{cfg_heads}/config.json: hidden_size=16 is not a multiple of num_attention_heads=3", id="specialization-config-heads"),
    P(AB + ["--all", "--model", "{cfg_json}"], "{cfg_json}/config.json: not valid JSON (line 3, column",
      id="ablate-config-not-json"),
    # safetensors: cut short, a corrupt header, a tensor the config does not give that shape
    P(AB + ["--all", "--model", "{st_stub}"], "{st_stub}/model.safetensors: truncated: 5 bytes, less than the 8-byte",
      id="ablate-safetensors-5-bytes"),
    P(CA + ["--model", "{st_header}"],
      "{st_header}/model.safetensors: truncated: header says {st_header_len} bytes, file has {st_header_have}",
      id="cache-safetensors-truncated-header"),
    P(AB + ["--all", "--model", "{trunc}"], "{trunc}/model.safetensors: truncated: tensor ", id="ablate-safetensors-cut-in-half"),
    P(SEG + ["--model", "{st_garbage}"], "{st_garbage}/model.safetensors: corrupt safetensors header (not JSON",
      id="segment-safetensors-header-not-json"),
    P(AB + ["--all", "--model", "{st_shape}"],
      "{st_shape}/model.safetensors: tensor bert.encoder.layer.0.intermediate.dense.weight has shape [48, 16], "
      "but {st_shape}/config.json gives [32, 16]", id="ablate-safetensors-wrong-shape"),
    # a pickle that would run code: never opened without --trust-pickle
    P(AB + ["--all", "--model", "{evil}"], "weights only as pickle (pytorch_model.bin)", id="ablate-evil-pickle"),
    P(CA + ["--model", "{evil}"], "--trust-pickle", id="cache-evil-pickle"),
    P(SEG + ["--model", "{evil_mlm}"], "pytorch_model.bin", id="segment-evil-pickle"),
    P(["track", "--run", "{evil_run}", "--data", "{shared}"], "pytorch_model.bin", id="track-evil-pickle"),
]


@pytest.mark.parametrize("args,msg", MALFORMED)
def test_malformed_artefact(args, msg, fx, mfx, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    subs = {k: str(v) for k, v in {**fx, **mfx}.items()}
    subs["tmp"] = str(tmp_path)
    argv = last_wins([a.format(**subs) for a in args])
    assert_refused(argv, msg, subs, tmp_path, capsys)
    assert not mfx["marker"].exists()


def test_pickle_beside_safetensors_is_never_opened(mfx, tmp_path, capsys, monkeypatch):
    """A model folder with model.safetensors and a malicious pytorch_model.bin: the safetensors load,
    the pickle is not touched (with or without --trust-pickle)."""
    monkeypatch.chdir(tmp_path)
    for pre in ([], ["--trust-pickle"]):
        rc = main(pre + ["segment", "--model", str(mfx["evil_beside"]), "--text", "the cat sat. the dog ran."])
        assert rc == 0, capsys.readouterr().err
        assert not mfx["marker"].exists()


def test_resume_with_a_malicious_trainer_state_runs_nothing(fx, tmp_path, capsys, monkeypatch):
    """``pretrain --resume`` over a checkpoint whose trainer_state.pt is a pickle that would run code:
    ``torch.load(weights_only=True)`` refuses it — exit 2, one line naming the checkpoint, no marker."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    argv = [a.format(data=fx["data"], tmp=tmp_path) for a in PT + TINY + ["--max-steps", "1"]]
    assert main(argv) == 0, capsys.readouterr().err
    ck = run / "checkpoint"
    assert (ck / "trainer_state.pt").is_file()
    marker = tmp_path.parent / f"{tmp_path.name}-MARKER"
    torch.save({"optimizer": _Evil(marker), "scheduler": {}}, ck / "trainer_state.pt")
    line = assert_refused(argv + ["--resume"], "checkpoint {ck}: trainer_state.pt is unreadable (UnpicklingError", {"ck": ck}, tmp_path, capsys)
    assert "Traceback" not in line
    assert not marker.exists()
