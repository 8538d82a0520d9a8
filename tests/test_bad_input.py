"""Bad input, issue 15's classes × all thirteen commands, generated from one description per command.

The other bad-input tables (``tests/cli/test_cli_bad_input*.py``, ``tests/cli/test_cli_io_rules.py``)
hold hand-picked rows; this one makes sure no command is left out of a class.  For every command,
from a valid command line (``COMMANDS``):

* class 1, data loss: ``--json`` (``--reports`` for reproduce) inside an input — the model's
  ``config.json``, the data folder, a ``--dataset`` table;
* class 2, validate before work: ``--json`` under a file / naming a folder / given twice / empty,
  ``--plot`` at the ``--json`` path;
* class 3, numbers: NaN, ±inf or a negative value in a float option, a negative and a huge seed;
* class 4, sizes: one absurd size per command (``tests/cli/test_cli_bad_input_v2.py`` has every
  size option);
* class 5, devices: ``--device mps``, ``xpu``, ``cuda:7`` (none exists here), ``meta``;
* class 6, malformed artefacts: ``config.json`` with ``"hidden_size": "forty-eight"``, ``num_labels: 0``,
  an unknown ``hidden_act`` or a dropout of 5, a truncated ``model.safetensors``;
* class 7, a missing input whose path has two spaces, non-ASCII and Rich markup, echoed exactly.

Every row: exit 2, one ``nodeprobe: error: …`` line holding the expected text, no traceback, nothing
written anywhere under the test folder nor in the fixture models and data (``_bad_input.listing``
compares paths, sizes and modification times).
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from _bad_input import assert_refused, listing, row_argv
from _small_data import small_data_copy
from _tiny_models import tiny_hf

VOCAB_SIZE = 30522
WEIRD = "données  x/[bold]é"  # two spaces, non-ASCII, Rich markup


@pytest.fixture(scope="module")
def fx(tmp_path_factory, shared_data):
    """Tiny saved models (2 blocks, 4 heads, d_model 16), broken copies, a small corpus, built once."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bad_input_matrix")
    vocab = shared_data / "tokenizer" / "bert-base-uncased-vocab.txt"

    def save(hf, name):  # named as a training snapshot, so that `track --run` takes it too
        d = root / name / "step-3"
        hf.save_pretrained(d)
        shutil.copy(vocab, d / "vocab.txt")
        return d

    cls = save(tiny_hf("cls", seed=0, vocab_size=VOCAB_SIZE, num_labels=16), "cls")
    mlm = save(tiny_hf("mlm", seed=0, vocab_size=VOCAB_SIZE), "mlm")

    def broken(src, name, edit=None, truncate=False):
        d = root / name / "step-3"
        shutil.copytree(src, d)
        if edit is not None:
            cfg = json.loads((d / "config.json").read_text())
            cfg.update(edit)
            (d / "config.json").write_text(json.dumps(cfg))
        if truncate:
            w = (d / "model.safetensors").read_bytes()
            (d / "model.safetensors").write_bytes(w[: len(w) // 3])
        return d

    paths = {
        "cls": cls, "mlm": mlm, "shared": shared_data,
        "cls_types": broken(cls, "cls_types", {"hidden_size": "forty-eight"}),
        "mlm_types": broken(mlm, "mlm_types", {"hidden_size": "forty-eight"}),
        "cls_zero": broken(cls, "cls_zero", {"num_labels": 0, "id2label": {}, "label2id": {}}),  # not for finetune
        "cls_trunc": broken(cls, "cls_trunc", truncate=True),
        "cls_layer": broken(cls, "cls_layer", {"hidden_act": "nonexistent_act"}),
        "mlm_layer": broken(mlm, "mlm_layer", {"hidden_dropout_prob": 5.0}),
        "mlm_trunc": broken(mlm, "mlm_trunc", truncate=True),
    }
    data = small_data_copy(root / "data", shared_data, dbpedia_rows=None)  # a small pre-training corpus
    paths["data"] = data
    table = root / "table.csv"  # a labelled table of one's own
    table.write_text("text,label\n" + "".join(f"item number {i} is here,{'ab'[i % 2]}\n" for i in range(20)))
    paths["table"] = table
    return paths


# One description per command: a valid command line, its model (or run) option and which fixture
# model it takes, and one float option with the bad values it is given.
#   name: (argv, model flag, model kind, float option, seed?)
COMMANDS = {
    "pretrain": (["pretrain", "--preset", "smoke", "--data", "{data}", "--out", "{tmp}/run", "--n-layers", "1",
                  "--d-model", "32", "--n-heads", "2", "--d-ff", "32", "--batch-size", "8"], None, None, "--lr", True),
    "finetune": (["finetune", "--model", "{cls}", "--task", "fewrel", "--data", "{shared}", "--out", "{tmp}/ft"],
                 "--model", "cls", "--lr", True),
    "ablate": (["ablate", "--model", "{cls}", "--data", "{shared}", "--limit", "16", "--all"], "--model", "cls",
               None, True),
    "reproduce": (["reproduce", "--data", "{data}", "--runs", "{tmp}/runs", "--reports", "{tmp}/reports"], None,
                  None, None, True),
    "cache": (["cache", "--model", "{cls}", "--data", "{shared}", "--limit", "16", "--out", "{tmp}/cache"],
              "--model", "cls", None, True),
    "specialization": (["specialization", "--model", "{cls}", "--data", "{shared}", "--limit", "16"], "--model",
                       "cls", "--tau-recall", True),
    "apt": (["apt", "--model", "{mlm}", "--task", "mlm", "--data", "{data}", "--limit", "8"], "--model", "mlm",
            "--cluster-threshold", True),
    "cooperation": (["cooperation", "--model", "{cls}", "--data", "{shared}", "--limit", "16"], "--model", "cls",
                    "--tau-lift", True),
    "hull": (["hull", "--model", "{cls}", "--data", "{shared}", "--limit", "16", "--n", "1"], "--model", "cls",
             "--tau-recall", True),
    "blocks": (["blocks", "--model", "{cls}", "--data", "{shared}", "--limit", "16"], "--model", "cls",
               "--probe-fraction", True),
    "similarity": (["similarity", "--model", "{mlm}", "--text", "the cat sat on the mat"], "--model", "mlm",
                   "--threshold", False),
    "segment": (["segment", "--model", "{mlm}", "--text", "the cat sat on the mat. the dog ran."], "--model",
                "mlm", "--min-ratio", False),
    "track": (["track", "--run", "{cls}", "--task", "fewrel", "--data", "{shared}"], "--run", "cls",
              "--margin-jaccard", True),
}
BIG = str(10**12)
NEEDS = "needs ≈ "  # a memory estimate beyond this machine's RAM
TAKES = "would take at least"  # a time estimate beyond the 30-day limit
# class 4, one absurd size per command (reproduce has none: its presets fix every size)
SIZES = {
    "pretrain": ("--d-ff", BIG, NEEDS), "finetune": ("--epochs", str(10**9), "expected at most 100,000"),
    "ablate": ("--batch-size", BIG, NEEDS), "cache": ("--shard-batches", BIG, NEEDS),
    "specialization": ("--batch-size", BIG, NEEDS), "apt": ("--bins", BIG, NEEDS), "cooperation": ("--R", BIG, NEEDS),
    "hull": ("--R", BIG, NEEDS), "blocks": ("--probe-epochs", str(10**9), "expected at most 100,000"),
    "similarity": ("--max-texts", BIG, TAKES), "segment": ("--max-texts", BIG, TAKES),
    "track": ("--batch-size", BIG, NEEDS),
}
CLASSIFIER = {"ablate", "cache", "specialization", "cooperation", "hull", "blocks"}  # --model: a classifier (finetune replaces the head)
PLOTS = {"ablate", "specialization", "apt", "cooperation", "hull", "blocks", "similarity", "track"}  # have --plot
DATASET = {"ablate", "cache", "specialization", "cooperation", "hull", "blocks", "finetune"}
P = pytest.param


def _with(argv: list[str], opt: str, value: str) -> list[str]:
    """``argv`` with ``opt`` set to ``value`` (replaced where given, else appended)."""
    out = list(argv)
    if opt in out:
        out[out.index(opt) + 1] = value
        return out
    return out + [opt, value]


def _without(argv: list[str], opt: str) -> list[str]:
    out = list(argv)
    if opt in out:
        i = out.index(opt)
        del out[i:i + 2]
    return out


def _setup_file(tmp):
    (tmp / "afile").write_text("x")


def _setup_dir(tmp):
    (tmp / "adir").mkdir()


def _setup_loop(tmp):
    os.symlink(tmp / "loop", tmp / "loop")  # a link to itself


LONG = "a" * 300 + ".json"  # longer than any file system's 255-byte name


def _rows():
    rows = []
    for name, (argv, model_opt, kind, float_opt, seeded) in COMMANDS.items():
        json_opt = "--reports" if name == "reproduce" else "--json"
        # ------------------------------------------------------------ class 1: an output inside an input
        if model_opt is not None:
            rows.append(P(argv + ["--json", f"{{{kind}}}/config.json"], f"--json {{{kind}}}/config.json: is inside "
                          f"the input {model_opt} {{{kind}}}", None, id=f"{name}-json-is-the-models-config"))
        if name == "pretrain":
            rows.append(P(argv + ["--json", "{data}/wikitext-2/p.json"], "--json {data}/wikitext-2/p.json: is inside "
                          "the input --data {data}", None, id="pretrain-json-inside-the-data"))
            rows.append(P(_with(argv, "--out", "{data}/run"), "--out {data}/run: is inside the input --data {data}",
                          None, id="pretrain-out-inside-the-data"))
        if name == "reproduce":
            rows.append(P(_with(argv, "--reports", "{data}/r"), "--reports {data}/r: is inside the input --data {data}",
                          None, id="reproduce-reports-inside-the-data"))
            rows.append(P(_with(argv, "--runs", "{data}"), "--runs {data}: ", None, id="reproduce-runs-is-the-data"))
        if name in DATASET:
            ds = _without(_without(argv, "--data"), "--task") + ["--dataset", "{table}"]
            rows.append(P(ds + ["--json", "{table}"], "--json {table}: is the input --dataset {table}", None,
                          id=f"{name}-json-is-the-dataset"))
        if name in ("similarity", "segment"):
            rows.append(P(_without(argv, "--text") + ["--text-file", "{table}", "--json", "{table}"],
                          "--json {table}: is the input --text-file {table}", None, id=f"{name}-json-is-the-text-file"))
        # ------------------------------------------------------------ class 2: an output that cannot be written
        rows.append(P(_with(argv, json_opt, "{tmp}/afile/o.json"), f"{json_opt} {{tmp}}/afile/o.json: {{tmp}}/afile is a "
                      "file", _setup_file, id=f"{name}-{json_opt[2:]}-under-a-file"))
        if name != "reproduce":
            rows.append(P(argv + ["--json", "{tmp}/adir"], "--json {tmp}/adir: is a directory", _setup_dir,
                          id=f"{name}-json-is-a-directory"))
        rows.append(P(argv + [json_opt, "{tmp}/a", json_opt, "{tmp}/b"], f"{json_opt} was given ", None,
                      id=f"{name}-{json_opt[2:]}-given-twice"))
        rows.append(P(argv + [json_opt, ""], f"{json_opt} '': an empty value", None,
                      id=f"{name}-{json_opt[2:]}-empty"))
        if name in PLOTS:  # the JSON file and the PNG folder at one path: one would replace the other
            rows.append(P(argv + ["--json", "{tmp}/x", "--plot", "{tmp}/x"], "--plot {tmp}/x: is (or sits inside) "
                          "the --json path {tmp}/x", None, id=f"{name}-plot-is-the-json"))
        # ------------------------------------------------------------ class 3: numbers
        if float_opt is not None:
            for bad in ("nan", "inf", "-inf", "-0.5"):
                rows.append(P(_with(argv, float_opt, bad), f"{float_opt} {bad}", None,
                              id=f"{name}-{float_opt[2:]}-{bad}"))
        if seeded:
            rows.append(P(argv + ["--seed", "-1"], "--seed -1", None, id=f"{name}-seed-negative"))
            rows.append(P(argv + ["--seed", str(2**70)], f"--seed {2**70}", None, id=f"{name}-seed-2e21"))
            rows.append(P(argv + ["--seed", "2e23"], "'--seed': '2e23'", None, id=f"{name}-seed-float"))
        # ------------------------------------------------------------ class 4: sizes that cannot fit
        if name in SIZES:
            opt, value, why = SIZES[name]
            bad = _with(argv, opt, value) if name != "hull" else _with(_with(argv, "--n", "3"), opt, value)
            rows.append(P(bad, f"{opt} {value}: {why}", None, id=f"{name}-{opt[2:]}-absurd"))
        # ------------------------------------------------------------ class 5: devices torch cannot use here
        devices = ["mps", "xpu", "meta"] + ([] if torch.cuda.device_count() > 7 else ["cuda:7"])
        for dev in devices:
            rows.append(P(argv + ["--device", dev], f"--device {dev}", None, id=f"{name}-device-{dev}"))
        # ------------------------------------------------------------ class 6: malformed artefacts
        if model_opt is not None:
            rows.append(P(_with(argv, model_opt, f"{{{kind}_types}}"), "hidden_size", None,
                          id=f"{name}-config-wrong-types"))
            rows.append(P(_with(argv, model_opt, f"{{{kind}_trunc}}"), "model.safetensors", None,
                          id=f"{name}-truncated-safetensors"))
            said = 'hidden_act="nonexistent_act"; expected an activation' if kind == "cls" else \
                "hidden_dropout_prob=5.0; expected a probability in [0, 1]"
            rows.append(P(_with(argv, model_opt, f"{{{kind}_layer}}"), said, None, id=f"{name}-config-bad-layer-setting"))
            if name in CLASSIFIER:
                rows.append(P(_with(argv, model_opt, "{cls_zero}"), "num_labels", None, id=f"{name}-num-labels-0"))
        # ------------------------------------------------------------ class 7: paths the system cannot look up
        rows.append(P(_with(argv, json_opt, "{tmp}/loop/o.json"), f"{json_opt} {{tmp}}/loop/o.json: a symbolic link "
                      "loop", _setup_loop, id=f"{name}-{json_opt[2:]}-in-a-symlink-loop"))
        rows.append(P(_with(argv, json_opt, "{tmp}/" + LONG), f"{json_opt} {{tmp}}/{LONG}: a file name or the path is "
                      "too long", None, id=f"{name}-{json_opt[2:]}-name-too-long"))
        # ------------------------------------------------------------ class 7: paths echoed exactly
        if model_opt is not None:
            rows.append(P(_with(argv, model_opt, "{tmp}/" + WEIRD), f"{model_opt} {{tmp}}/{WEIRD}: ", None,
                          id=f"{name}-{model_opt[2:]}-weird-path"))
        else:
            rows.append(P(_with(argv, "--data", "{tmp}/" + WEIRD), f"{{tmp}}/{WEIRD}", None,
                          id=f"{name}-data-weird-path"))
    return rows


CASES = _rows()


def test_every_command_and_class_has_rows():
    """The table spans the thirteen commands (a command added to the CLI must be described here)."""
    import typer

    from nodeprobe.cli.app import app

    assert set(typer.main.get_command(app).commands) == set(COMMANDS) == set(SIZES) | {"reproduce"}
    per_command = {name: sum(c.id.startswith(name + "-") for c in CASES) for name in COMMANDS}
    assert min(per_command.values()) >= 8, per_command


@pytest.mark.parametrize("args,msg,setup", CASES)
def test_bad_input(args, msg, setup, fx, tmp_path, capsys, monkeypatch):
    argv, subs = row_argv(args, setup, fx, tmp_path, monkeypatch, dedupe=False)  # rows set options with _with
    fixtures = fx["cls"].parent.parent
    before = listing(fixtures)
    assert_refused(argv, msg, subs, tmp_path, capsys)
    assert listing(fixtures) == before, "a fixture model or the data was written"
