"""nodeprobe.cli.app: the quick start, registration by plain imports (module-level command
functions, no closures), ``python -m``, and the default ``--model`` from ``./runs`` (issue 16)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from _tiny_models import tiny_hf
from nodeprobe.cli import app, main

REPO = Path(__file__).resolve().parents[2]
GROUPS = {
    "nodeprobe.cli.train": {"pretrain", "finetune"},
    "nodeprobe.cli.ablate": {"ablate"},
    "nodeprobe.cli.reproduce": {"reproduce"},
    "nodeprobe.cli.reports": {"cache", "specialization", "apt", "cooperation", "hull", "blocks"},
    "nodeprobe.cli.heads": {"similarity", "segment", "track"},
}


def test_bare_nodeprobe_prints_a_quick_start(capsys):
    assert main([]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    steps = ["nodeprobe reproduce --preset smoke", "nodeprobe ablate --layer 5 --head 3", "reports/smoke/README.md"]
    at = [out.find(s) for s in steps]
    assert -1 not in at and at == sorted(at), out  # the main job, then the example, then where the report went


def test_every_command_is_a_module_level_function_of_its_group():
    commands = typer.main.get_command(app).commands
    assert set(commands) == set().union(*GROUPS.values())
    for name, cmd in commands.items():
        fn = cmd.callback
        assert "<locals>" not in fn.__qualname__ and fn.__qualname__ == fn.__name__ == name, name
        assert name in GROUPS[fn.__module__], (name, fn.__module__)


@pytest.mark.parametrize("module", ["nodeprobe", "nodeprobe.cli"])
def test_python_dash_m(module, tmp_path):
    out = subprocess.run([sys.executable, "-m", module, "ablate", "--help"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0 and "--layer" in out.stdout and "--model" in out.stdout, out.stderr


# ---------------------------------------------------------------------- default --model (issue 16)
@pytest.fixture(scope="module")
def runs_root(tmp_path_factory, shared_data):
    """A folder with ./runs as `reproduce --preset smoke` leaves it (tiny random models)."""
    root = tmp_path_factory.mktemp("cwd")
    vocab = shared_data / "tokenizer" / "bert-base-uncased-vocab.txt"
    for stage, hf in (("finetune", tiny_hf("cls", vocab_size=30522, num_labels=16)),
                      ("pretrain", tiny_hf("mlm", vocab_size=30522))):
        d = root / "runs" / "smoke" / stage / "final"
        hf.save_pretrained(d)
        shutil.copy(vocab, d / "vocab.txt")
    return root


def _one_line_saying(out: str, model: str) -> None:
    lines = [l for l in out.splitlines() if l.startswith("nodeprobe: --model")]
    assert len(lines) == 1 and f"--model {model} " in lines[0], out


def test_report_without_model_uses_the_newest_reproduce_run(runs_root, shared_data, monkeypatch, capsys):
    """…and its long loops report to the Rich reporter that ``main`` installs (and removes after)."""
    import nodeprobe.progress
    from nodeprobe.render.progress import RichReporter

    bars = []
    real_iterate = RichReporter.iterate

    def spy(self, items, total, description):
        bars.append(description)
        return real_iterate(self, items, total, description)

    monkeypatch.setattr(RichReporter, "iterate", spy)
    monkeypatch.chdir(runs_root)
    before = nodeprobe.progress.current()
    capsys.readouterr()
    rc = main(["ablate", "--layer", "1", "--head", "2", "--data", str(shared_data), "--limit", "16",
               "--json", "a.json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    ft = os.path.join("runs", "smoke", "finetune", "final")
    _one_line_saying(out, ft)
    assert json.loads(Path("a.json").read_text())["settings"]["model"] == ft
    assert "Head L1H2 ablated" in out
    assert bars and nodeprobe.progress.current() is before
    os.remove("a.json")


@pytest.mark.parametrize("task,stage", [(None, "pretrain"), ("mlm", "pretrain"), ("fewrel", "finetune")])
def test_segment_without_model_takes_the_mlm_unless_a_task_says(task, stage, runs_root, monkeypatch, capsys):
    monkeypatch.chdir(runs_root)
    capsys.readouterr()
    args = ["segment", "--text", "The cat sat. It slept.", "--layer", "0", "--head", "1", "--min-ratio", "1e-6"] + (["--task", task] if task else [])
    rc = main(args)
    out, err = capsys.readouterr()
    assert rc == 0, err
    _one_line_saying(out, os.path.join("runs", "smoke", stage, "final"))


@pytest.mark.parametrize("args,want", [
    (["ablate", "--all"], "no fewrel classifier under ./runs: run `nodeprobe reproduce --preset smoke` first"),
    (["hull", "--n", "1", "--task", "mlm"], "no pre-trained MLM under ./runs"),
    (["similarity", "--text", "a b"], "no pre-trained MLM under ./runs"),
    (["blocks", "--task", "dbpedia"], "no dbpedia classifier under ./runs: `nodeprobe reproduce` trains none"),
])
def test_no_model_and_no_runs_says_how_to_get_one(args, want, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(args + ["--json", "x.json"]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nodeprobe: error: ") and want in lines[0], err
    assert "--model DIR" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_bad_options_are_reported_before_the_default_model_is_looked_up(runs_root, monkeypatch, capsys):
    monkeypatch.chdir(runs_root)
    capsys.readouterr()
    assert main(["ablate", "--all", "--mode", "half"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "--mode half: expected zero or mean" in err


def test_the_command_line_is_checked_before_anything_runs():
    """An option given twice with two values, an empty value, '-', a symlink loop: one line each, from
    the argv alone (``_command_line_problem``); the same value twice, flags, multiple options pass."""
    import typer

    from nodeprobe.cli.app import _command_line_problem, app

    cmd = typer.main.get_command(app)

    def problem(*argv):
        return _command_line_problem(cmd, list(argv))

    assert problem("cache", "--out", "x", "--cache", "y") == "--out/--cache was given 2 times ('x', 'y'): give it once"
    assert problem("cache", "--task", "fewrel", "--task=fewrel") is None
    assert problem("track", "--run", "a", "--run", "b") is None  # a multiple option
    assert problem("ablate", "--all", "--all", "--json", "a.json") is None  # a flag takes no value
    assert problem("ablate", "--json", "") == "--json '': an empty value; give one (or leave --json out)"
    assert problem("ablate", "--json", "-").startswith("--json -: standard input/output is not supported")
    assert problem("ablate", "--help", "--json", "") is None  # --help wins
    assert problem("ablate", "--layer", "-1") is None  # a value that starts with '-' is the option's (click judges it)
