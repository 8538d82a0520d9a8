"""End to end: ``nodeprobe reproduce --preset smoke`` runs, is deterministic, resumes, keeps the
paper's 6 × 12 head grid and ends with the claims table its README holds.

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


def _reproduce(tmp: Path, data: Path, name: str) -> tuple[Path, str]:
    # a wide console: every table row prints on one line (printed_claims also joins wrapped cells)
    env = dict(os.environ, NODEPROBE_PROGRESS="0", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="2", COLUMNS="1000")
    cmd = CLI + ["reproduce", "--preset", "smoke", "--data", str(data),
                 "--runs", str(tmp / name / "runs"), "--reports", str(tmp / name / "reports")]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp / name / "reports" / "smoke", out.stdout


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
