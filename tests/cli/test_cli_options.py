"""nodeprobe.cli.options: the checks that run before anything heavy, and the default --model."""

from __future__ import annotations

import os

import pytest

from nodeprobe.cli import options
from nodeprobe.errors import NodeprobeError


def test_task_names_are_the_library_s():
    from nodeprobe.data.tasks import TASKS

    assert options.TASKS == TASKS
    options.check_task(None)
    for t in TASKS:
        options.check_task(t)
    with pytest.raises(NodeprobeError, match=r"^--task xyz: expected one of mlm, fewrel, dbpedia, dataset$"):
        options.check_task("xyz")


@pytest.mark.parametrize("call,msg", [
    (lambda: options.check_choice("--mode", "half", options.MODES), "--mode half: expected zero or mean"),
    (lambda: options.check_choice("--dtype", "int8", ("float32", "float16", "bfloat16")),
     "--dtype int8: expected one of float32, float16, bfloat16"),
    (lambda: options.check_positive(shard_batches=0), "--shard-batches 0: expected a positive integer"),
    (lambda: options.check_positive(top=True), "--top True: expected a positive integer"),
    (lambda: options.check_index(head=-2), "--head -2: expected an index ≥ 0"),
    (lambda: options.check_no_contradiction(True, True), "--resume and --overwrite contradict each other"),
    (lambda: options.check_model_path("./nope"), "--model ./nope: no such directory"),
    (lambda: options.check_model_path("a/b/c"), "--model a/b/c: no such directory"),
])
def test_one_line_naming_the_value(call, msg):
    with pytest.raises(NodeprobeError) as e:
        call()
    assert str(e.value).startswith(msg) and "\n" not in str(e.value)


def test_names_and_existing_paths_pass(tmp_path):
    for ok in ("minilm", "org/name", str(tmp_path), None):  # names go to the loader, which knows them
        options.check_model_path(ok)
    options.check_choice("--mode", None, options.MODES)
    options.check_positive(limit=None, top=3)
    options.check_index(layer=0, head=None)


def test_output_paths(tmp_path):
    (tmp_path / "afile").write_text("x")
    options.check_outputs(None, None)
    options.check_outputs(tmp_path / "new" / "a.json", tmp_path / "plots")
    with pytest.raises(NodeprobeError, match="is a directory"):
        options.check_outputs(tmp_path, None)
    with pytest.raises(NodeprobeError, match=r"--plot .*afile: is a file; give a folder"):
        options.check_outputs(None, tmp_path / "afile")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # checking writes nothing


def test_resolve_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert options.resolve_model("minilm", "fewrel") == "minilm"
    with pytest.raises(NodeprobeError, match="no fewrel classifier under ./runs: run `nodeprobe reproduce --preset "
                                             "smoke` first .*, or give --model DIR"):
        options.resolve_model(None, "fewrel")
    final = tmp_path / "runs" / "smoke" / "finetune" / "final"
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")
    capsys.readouterr()
    got = options.resolve_model(None, "fewrel")
    assert got == os.path.join("runs", "smoke", "finetune", "final")
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith(f"nodeprobe: --model {got} (the fewrel classifier")
