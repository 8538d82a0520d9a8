"""Start-up time of the ``nodeprobe`` command: ``--help`` and bad options, against ``import typer``.

    python bench/startup.py                   # 15 runs per case
    python bench/startup.py --quick           # 5 runs per case
    python bench/startup.py --json runs/bench/startup.json

Each case runs as a fresh process (the installed ``nodeprobe`` console script beside this Python,
else ``python -m nodeprobe``) in an empty folder; the table gives the median wall time and CPU
time (user + system, which other jobs on the machine disturb less), each as a ratio to
``python -c "import typer"`` measured in the same run, the target (``--help`` ≤ 0.5 s, a bad option
≤ 1 s, on wall time) and the exit code; the header says the machine's load.  Exits 1 when a case
misses its target or exits with an unexpected code.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: (name, arguments of `nodeprobe`, expected exit code, target seconds, extra environment)
CASES = [
    ("nodeprobe --help", ["--help"], 0, 0.5, None),
    ("nodeprobe ablate --help", ["ablate", "--help"], 0, 0.5, None),
    ("nodeprobe specialization --help", ["specialization", "--help"], 0, 0.5, None),
    ("nodeprobe ablate --layer x", ["ablate", "--layer", "x"], 2, 1.0, None),
    ("nodeprobe hull --model /no/such/dir", ["hull", "--model", "/no/such/dir"], 2, 1.0, None),
    # for comparison, no target: the same help without Rich's formatting (Typer's plain click help)
    ("(plain) specialization --help", ["specialization", "--help"], 0, None, {"TYPER_USE_RICH": "0"}),
]


def nodeprobe_command() -> list[str]:
    """The console script installed beside this interpreter, else ``python -m nodeprobe``."""
    script = Path(sys.executable).with_name("nodeprobe")
    if script.is_file():
        return [str(script)]
    found = shutil.which("nodeprobe")
    return [found] if found else [sys.executable, "-m", "nodeprobe"]


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def median_seconds(cmd: list[str], repeats: int, cwd: str, env: dict | None = None) -> tuple[float, float, int]:
    """Median wall time and median CPU time (user + system: less sensitive to other jobs on the
    machine) of ``repeats`` runs of ``cmd`` after one warm-up run, and its exit code."""
    env = {**os.environ, **(env or {})}
    rc = subprocess.run(cmd, cwd=cwd, capture_output=True, env=env).returncode
    wall, cpu = [], []
    for _ in range(repeats):
        c0, t0 = _children_cpu(), time.perf_counter()
        rc = subprocess.run(cmd, cwd=cwd, capture_output=True, env=env).returncode
        wall.append(time.perf_counter() - t0)
        cpu.append(_children_cpu() - c0)
    return statistics.median(wall), statistics.median(cpu), rc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15, help="runs per case (default 15)")
    ap.add_argument("--quick", action="store_true", help="5 runs per case")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    a = ap.parse_args(argv)
    repeats = 5 if a.quick else a.repeats
    np_cmd = nodeprobe_command()
    with tempfile.TemporaryDirectory() as cwd:  # an empty folder: no ./runs, nothing to pick up
        base, base_cpu, _ = median_seconds([sys.executable, "-c", "import typer"], repeats, cwd)
        rows = []
        for name, args, want_rc, target, env in CASES:
            sec, cpu, rc = median_seconds(np_cmd + args, repeats, cwd, env)
            rows.append({"case": name, "median_s": round(sec, 3), "ratio_to_import_typer": round(sec / base, 2),
                         "cpu_s": round(cpu, 3), "cpu_ratio": round(cpu / base_cpu, 2), "target_s": target,
                         "rc": rc, "ok": (target is None or sec <= target) and rc == want_rc})
    load = os.getloadavg()[0]
    print(f"{' '.join(Path(c).name for c in np_cmd)} · {repeats} runs per case · medians · "
          f"{os.cpu_count()} CPUs, load {load:.1f}\n")
    print(f"{'case':<40} {'wall s':>7} {'× typer':>8} {'cpu s':>7} {'× typer':>8} {'target':>7} {'rc':>3}")
    baseline = 'python -c "import typer"'
    print(f"{baseline:<40} {base:>7.3f} {1.0:>8.2f} {base_cpu:>7.3f} {1.0:>8.2f} {'':>7} {'':>3}")
    for r in rows:
        flag = "" if r["ok"] else "  MISSED"
        target = f"{r['target_s']:.1f}s" if r["target_s"] is not None else "-"
        print(f"{r['case']:<40} {r['median_s']:>7.3f} {r['ratio_to_import_typer']:>8.2f} {r['cpu_s']:>7.3f} "
              f"{r['cpu_ratio']:>8.2f} {target:>7} {r['rc']:>3}{flag}")
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"repeats": repeats, "import_typer_s": round(base, 3),
                                      "import_typer_cpu_s": round(base_cpu, 3), "cases": rows,
                                      "cpus": os.cpu_count(), "load": round(load, 2)}, indent=2) + "\n")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
