"""Wall time of the README's main job: ``nodeprobe reproduce --preset smoke`` from a warm install.

    python bench/main_job.py                     # data from --data / $NODEPROBE_DATA / ../shared/data
    python bench/main_job.py --preset smoke --target 120 --json runs/bench/main_job.json

Runs the reproduction in a fresh temporary folder (new ``runs/`` and ``reports/``, so nothing is
resumed) as a real process, and prints the total wall time, the CPU time of the process and the
per-stage seconds of ``reports/<preset>/timings.json`` against the target (120 s on 2 cores).
CPU seconds ÷ threads is a rough check when other jobs share the machine (wall time then grows,
CPU time hardly does).  Exits 1 when the job fails or misses the target.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 120.0


def default_data() -> Path:
    env = os.environ.get("NODEPROBE_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def run_main_job(preset: str, data: Path, threads: int = 2, keep: Path | None = None) -> dict:
    """Run ``nodeprobe reproduce --preset <preset>`` in a fresh folder; wall/CPU seconds, stages."""
    tmp = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="nodeprobe-main-job-"))
    tmp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(threads), NODEPROBE_PROGRESS="0")
    cmd = [sys.executable, "-c", "import sys; from nodeprobe.cli import main; sys.exit(main())",
           "reproduce", "--preset", preset, "--data", str(data),
           "--runs", str(tmp / "runs"), "--reports", str(tmp / "reports")]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    timings = tmp / "reports" / preset / "timings.json"
    stages = json.loads(timings.read_text())["stages"] if timings.is_file() else {}
    return {"preset": preset, "returncode": out.returncode, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "threads": threads, "stages": stages, "folder": str(tmp), "stdout": out.stdout, "stderr": out.stderr}


def stage_seconds(stages: dict) -> list[tuple[str, float]]:
    """(stage, seconds) per stage, largest first; training stages count their training time."""
    rows = [(k, max(v, stages.get(f"{k}.seconds", 0.0))) for k, v in stages.items() if "." not in k]
    return sorted(rows, key=lambda kv: (-kv[1], kv[0]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--target", type=float, default=TARGET_S, help="seconds (default 120)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None, help="run in this folder (kept) instead of a temp one")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = ap.parse_args(argv)
    data = a.data or default_data()
    res = run_main_job(a.preset, data, a.threads, a.keep)
    if res["returncode"] != 0:
        print(res["stderr"][-3000:], file=sys.stderr)
        print(f"main job FAILED (exit {res['returncode']}) after {res['wall_s']:.1f} s")
        return 1
    ok = res["wall_s"] <= a.target
    print(f"nodeprobe reproduce --preset {a.preset}: {res['wall_s']:.1f} s wall "
          f"(target ≤ {a.target:.0f} s: {'met' if ok else 'MISSED'}); CPU {res['cpu_s']:.1f} s "
          f"= {res['cpu_s'] / a.threads:.1f} s per thread of {a.threads}")
    rows = stage_seconds(res["stages"])
    total = sum(v for _, v in rows)
    print(f"{'stage':<30} {'seconds':>8} {'share':>6}")
    for k, v in rows:
        print(f"{k:<30} {v:8.1f} {100 * v / total if total else 0:5.0f}%")
    print(f"{'stages total':<30} {total:8.1f}   (start-up, loading and the README: {res['wall_s'] - total:.1f} s)")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({k: v for k, v in res.items() if k not in ("stdout", "stderr")}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
