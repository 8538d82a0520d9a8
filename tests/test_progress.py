"""Progress reporting is injected: core modules report to ``nodeprobe.progress`` (no Rich), the
front end installs a reporter (the CLI: the Rich one of ``nodeprobe.render.progress``)."""

from __future__ import annotations

import ast
import contextlib
import io
import subprocess
import sys
from pathlib import Path

import pytest
from _tiny_models import save_tiny_bert_mlm, tiny_eval_set, tiny_model

import nodeprobe.progress as progress
from nodeprobe.evaluate import run_eval

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "nodeprobe"
CORE = ["evaluate.py", "progress.py", "hooks.py", "cache", "data", "studies", "train", "analysis", "model"]


class Recorder:
    """A reporter that records what it was asked to show."""

    def __init__(self):
        self.items: list[tuple[str, int | None, int]] = []
        self.bars: list[tuple[str, int, list]] = []

    def iterate(self, items, total, description):
        n = 0
        for x in items:
            n += 1
            yield x
        self.items.append((description, total, n))

    @contextlib.contextmanager
    def training_bar(self, total, description):
        rec = (description, total, [])

        class Bar:
            def advance(self, n=1):
                rec[2].append(("advance", n))

            def update(self, advance=1, **fields):
                rec[2].append(("update", sorted(fields)))

        yield Bar()
        self.bars.append(rec)


def _core_files():
    for name in CORE:
        p = PKG / name
        yield from (sorted(p.rglob("*.py")) if p.is_dir() else [p])


def test_core_modules_do_not_import_rich_or_render():
    """No core module imports Rich or the presentation layer, at the top or inside a function."""
    bad = []
    for f in _core_files():
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            bad += [f"{f.relative_to(REPO)}:{node.lineno} {n}" for n in names
                    if n.split(".")[0] == "rich" or n.startswith("nodeprobe.render") or n.startswith("nodeprobe.cli")]
    assert not bad, bad


def test_importing_the_core_loads_no_presentation():
    """In a fresh interpreter: ``nodeprobe.progress`` needs only the standard library, and the core
    modules load neither ``nodeprobe.render`` nor the CLI (Rich itself may come with TransformerLens)."""
    code = ("import sys; import nodeprobe.progress; "
            "assert 'rich' not in sys.modules and 'torch' not in sys.modules, 'nodeprobe.progress'; "
            "import nodeprobe.evaluate, nodeprobe.cache, nodeprobe.studies.ablation, "
            "nodeprobe.studies.track, nodeprobe.studies.lens, nodeprobe.studies.apt, nodeprobe.studies.blocks, "
            "nodeprobe.train.pretrain, nodeprobe.train.finetune, nodeprobe.data.eval_sets, nodeprobe.data.corpus; "
            "bad = sorted(m for m in sys.modules if m.startswith(('nodeprobe.render', 'nodeprobe.cli'))); "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_silent_by_default_and_injected_reporter_sees_the_loop():
    model, es = tiny_model("cls"), tiny_eval_set("cls", n_batches=3)
    assert progress.current() is progress.SILENT
    rec = Recorder()
    with progress.use_reporter(rec):
        assert progress.current() is rec
        run_eval(model, es, progress=True, description="evaluate")
        run_eval(model, es, progress=False)  # progress=False: no bar at all
    assert progress.current() is progress.SILENT
    assert rec.items == [("evaluate", 3, 3)]


def test_install_is_process_wide_and_scoped_use_wins():
    a, b = Recorder(), Recorder()
    old = progress.install(a)
    try:
        assert progress.current() is a
        with progress.use_reporter(b):
            list(progress.iterate(range(2), 2, "inner"))
        list(progress.iterate(range(1), 1, "outer"))
    finally:
        assert progress.install(old) is a
    assert b.items == [("inner", 2, 2)] and a.items == [("outer", 1, 1)]
    with pytest.raises(TypeError, match="reporter="):
        progress.install(object())


def test_training_reports_a_training_bar(tmp_path, shared_data, monkeypatch):
    from nodeprobe.train.finetune import finetune
    from nodeprobe.train.presets import FinetuneSettings

    d = save_tiny_bert_mlm(tmp_path / "tiny", shared_data / "tokenizer" / "bert-base-uncased-vocab.txt")
    s = FinetuneSettings(epochs=1, batch_size=64, lr=1e-3, n_train=4, n_test=2, dropout=0.0)
    rec = Recorder()
    with progress.use_reporter(rec):
        summary = finetune(tmp_path / "ft", d, task="fewrel", settings=s, data_dir=shared_data, progress=True)
        finetune(tmp_path / "ft2", d, task="fewrel", settings=s, data_dir=shared_data, progress=False)
    assert len(rec.bars) == 1
    desc, total, calls = rec.bars[0]
    assert desc == "finetune fewrel" and total == summary["steps"]
    assert calls[0] == ("advance", 0) and calls[1:] == [("update", ["loss", "tps"])] * total


def test_rich_reporter_draws_on_its_console_and_obeys_the_switch(monkeypatch):
    from rich.console import Console

    from nodeprobe.render.progress import RichReporter

    buf = io.StringIO()
    r = RichReporter(Console(file=buf, force_terminal=True, width=100))
    assert isinstance(r, progress.Reporter)
    monkeypatch.setenv("NODEPROBE_PROGRESS", "1")
    assert list(r.iterate(range(3), 3, "items-bar")) == [0, 1, 2]
    with r.training_bar(2, "train-bar") as bar:
        bar.update(loss=1.5, tps=100.0)
        bar.update(loss=1.25, tps=120.0)
    out = buf.getvalue()
    assert "items-bar" in out and "train-bar" in out and "tok/s" in out and "loss 1.250" in out
    monkeypatch.setenv("NODEPROBE_PROGRESS", "0")
    buf.truncate(0), buf.seek(0)
    assert list(r.iterate(range(3), 3, "quiet")) == [0, 1, 2]
    with r.training_bar(2, "quiet") as bar:
        bar.update(loss=1.0, tps=1.0)
    assert buf.getvalue() == ""
