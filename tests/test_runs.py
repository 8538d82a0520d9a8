"""nodeprobe.runs: the newest ``reproduce`` model under runs/ that fits a task, on fake run folders."""

from __future__ import annotations

import os

import pytest

from nodeprobe.errors import NodeprobeError
from nodeprobe.runs import latest_model, reproduce_models, stage_of


def _model(root, preset, stage, mtime, config=True):
    d = root / preset / stage / "final"
    d.mkdir(parents=True)
    if config:
        (d / "config.json").write_text("{}")
    os.utime(d, (mtime, mtime))
    return d


def test_newest_fitting_model_per_task(tmp_path):
    runs = tmp_path / "runs"
    old_ft = _model(runs, "cpu", "finetune", 1000)
    new_ft = _model(runs, "smoke", "finetune", 2000)
    mlm = _model(runs, "cpu", "pretrain", 1500)
    _model(runs, "smoke", "pretrain", 3000, config=False)          # unfinished: no config.json
    _model(runs, "smoke", "finetune_minilm", 4000)                  # MiniLM: not the default classifier
    assert latest_model("fewrel", runs) == new_ft
    assert reproduce_models("fewrel", runs) == [new_ft, old_ft]
    assert latest_model("mlm", runs) == mlm
    assert latest_model(None, runs) == mlm                           # no task: the pre-trained MLM
    assert latest_model("dbpedia", runs) is None                     # reproduce trains no DBpedia classifier


def test_no_runs_folder_and_ties(tmp_path):
    assert latest_model("fewrel", tmp_path / "missing") is None
    runs = tmp_path / "runs"
    a = _model(runs, "a", "finetune", 5000)
    b = _model(runs, "b", "finetune", 5000)
    assert latest_model("fewrel", runs) == max(a, b, key=str)       # a tie is broken by the path: stable
    assert latest_model("fewrel", str(runs)) == max(a, b, key=str)  # str paths too


def test_bad_task_names_the_parameter():
    with pytest.raises(NodeprobeError, match=r"^task=xyz: expected one of mlm, fewrel, dbpedia, dataset$"):
        stage_of("xyz")
    assert [stage_of(t) for t in ("mlm", "fewrel", "dbpedia", "dataset", None)] == ["pretrain", "finetune", None, None,
                                                                               "pretrain"]
