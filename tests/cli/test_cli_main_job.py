"""The README's main job, then the user's first question, in one folder (slow):
``nodeprobe reproduce --preset smoke`` and then the literal line ``nodeprobe ablate --layer 5 --head 3``."""

from __future__ import annotations

import json
import os

import pytest

from nodeprobe.cli import main

pytestmark = pytest.mark.slow


def test_reproduce_smoke_then_ablate_layer_5_head_3(shared_data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NODEPROBE_DATA", str(shared_data))
    monkeypatch.setenv("NODEPROBE_PROGRESS", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["reproduce", "--preset", "smoke", "--data", str(shared_data)]) == 0, capsys.readouterr().err
    assert (tmp_path / "reports" / "smoke" / "README.md").is_file()
    capsys.readouterr()

    rc = main(["ablate", "--layer", "5", "--head", "3", "--json", "a.json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    model = os.path.join("runs", "smoke", "finetune", "final")
    said = [l for l in out.splitlines() if l.startswith("nodeprobe: --model")]
    assert len(said) == 1 and f"--model {model} " in said[0], out
    assert "Head L5H3 ablated" in out                                    # the table
    rep = json.loads((tmp_path / "a.json").read_text())
    assert rep["schema"] == "nodeprobe.ablate/1"
    s, r = rep["settings"], rep["result"]
    assert (s["model"], s["task"], s["layer"], s["head"], s["mode"]) == (model, "fewrel", 5, 3, "zero")
    assert r["n_items"] > 0 and 0.0 <= r["ablated_accuracy"] <= 1.0 and 0.0 <= r["baseline_accuracy"] <= 1.0
    assert all(m["name"] for m in r["movers"])
