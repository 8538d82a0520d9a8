"""End to end, the README's main job as a new user types it: ``nodeprobe reproduce --preset smoke``
(no other option: ``./runs``, ``./reports``, the default data folder) runs, is deterministic,
resumes, keeps the paper's 6 × 12 head grid and ends with the claims table its README holds; then,
in the same folder, the user's first question, the literal ``nodeprobe ablate --layer 5 --head 3``,
takes the newest fitting model and says which.

Slow (two full smoke reproductions in real processes): `.ci/run` runs it once via ``-m "slow or not slow"``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _claims import printed_claims, readme_claims

pytestmark = pytest.mark.slow

# `python -m nodeprobe.cli` needs a cli/__main__.py; the console script's entry point always exists
CLI = [sys.executable, "-c", "import sys; from nodeprobe.cli import main; sys.exit(main())"]


def _nodeprobe(cwd: Path, data: Path, *args: str) -> str:
    """``nodeprobe ARGS`` in a real process in ``cwd`` (created), reading ``data`` as its default
    data folder; its stdout."""
    # a wide console: every table row prints on one line (printed_claims also joins wrapped cells)
    env = dict(os.environ, NODEPROBE_PROGRESS="0", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="2", COLUMNS="1000",
               NODEPROBE_DATA=str(data))
    cwd.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(CLI + list(args), env=env, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def _reproduce(tmp: Path, data: Path, name: str) -> tuple[Path, str]:
    """The README's main job, literally, in the folder ``tmp/name``: its reports folder and stdout."""
    return tmp / name / "reports" / "smoke", _nodeprobe(tmp / name, data, "reproduce", "--preset", "smoke")


def test_reproduce_smoke_is_deterministic(tmp_path, shared_data):
    a, stdout = _reproduce(tmp_path, shared_data, "a")
    readme = (a / "README.md").read_text()
    assert "| claim |" in readme and "pretrain.json" in readme
    for stage in ("pretrain", "finetune", "finetune_scratch", "ablate_all"):
        assert (a / f"{stage}.json").is_file(), stage

    # the paper's head grid: every layer/head of the papers exists in the smoke model
    grid = json.loads((a / "ablate_all.json").read_text())["delta_accuracy"]
    assert len(grid) == 6 and all(len(row) == 12 for row in grid)
    assert "6 blocks × 12 heads" in readme
    fams = json.loads((a / "fewrel_node_specialization.json").read_text())["families"]
    assert sum(v for k, v in fams[-1]["size_hist"].items() if int(k) >= 1) > 0, "no FewRel node learns a label"

    # the job ends with the README's claims table, then where the reports went
    printed, written = printed_claims(stdout), readme_claims(readme)
    assert written and printed == written
    assert stdout.rstrip().splitlines()[-1].startswith("reports written to")

    b, _ = _reproduce(tmp_path, shared_data, "b")
    files_a = sorted(p.name for p in a.glob("*.json") if p.name != "timings.json")
    files_b = sorted(p.name for p in b.glob("*.json") if p.name != "timings.json")
    assert files_a == files_b
    for name in files_a:
        ta = (a / name).read_text().replace(str(tmp_path / "a"), "<tmp>")
        tb = (b / name).read_text().replace(str(tmp_path / "b"), "<tmp>")
        assert ta == tb, f"{name} differs between two runs with the same seed"
    # resumable: a re-run skips finished stages and redoes a missing one, with the same result
    before = (b / "ablate_all.json").read_text()
    (b / "ablate_all.json").unlink()
    _, again = _reproduce(tmp_path, shared_data, "b")
    assert (b / "ablate_all.json").read_text() == before
    assert printed_claims(again) == written  # the resumed job prints the same table

    # then the user's first question, in the same folder: the newest fitting model under ./runs
    out = _nodeprobe(tmp_path / "b", shared_data, "ablate", "--layer", "5", "--head", "3", "--json", "a.json")
    model = os.path.join("runs", "smoke", "finetune", "final")
    said = [l for l in out.splitlines() if l.startswith("nodeprobe: --model")]
    assert len(said) == 1 and f"--model {model} " in said[0], out
    assert "Head L5H3 ablated" in out                                    # the table
    rep = json.loads((tmp_path / "b" / "a.json").read_text())
    assert rep["schema"] == "nodeprobe.ablate/1"
    s, r = rep["settings"], rep["result"]
    assert (s["model"], s["task"], s["layer"], s["head"], s["mode"]) == (model, "fewrel", 5, 3, "zero")
    assert r["n_items"] > 0 and 0.0 <= r["ablated_accuracy"] <= 1.0 and 0.0 <= r["baseline_accuracy"] <= 1.0
    assert all(m["name"] for m in r["movers"])
