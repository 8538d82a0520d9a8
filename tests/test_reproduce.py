"""End to end: ``nodeprobe reproduce --preset smoke`` runs, is deterministic and resumes.

Slow (two full smoke reproductions in real processes): `.ci/run` runs it once via ``-m "slow or not slow"``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _reproduce(tmp: Path, data: Path, name: str) -> Path:
    env = dict(os.environ, NODEPROBE_PROGRESS="0", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="2")
    cmd = [sys.executable, "-m", "nodeprobe.cli", "reproduce", "--preset", "smoke", "--data", str(data),
           "--runs", str(tmp / name / "runs"), "--reports", str(tmp / name / "reports")]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp / name / "reports" / "smoke"


def test_reproduce_smoke_is_deterministic(tmp_path, shared_data):
    a = _reproduce(tmp_path, shared_data, "a")
    readme = (a / "README.md").read_text()
    assert "| claim |" in readme and "pretrain.json" in readme
    for stage in ("pretrain", "finetune", "finetune_scratch", "ablate_all"):
        assert (a / f"{stage}.json").is_file(), stage
    b = _reproduce(tmp_path, shared_data, "b")
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
    _reproduce(tmp_path, shared_data, "b")
    assert (b / "ablate_all.json").read_text() == before
