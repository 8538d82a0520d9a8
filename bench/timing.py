"""Timing helpers of the benchmarks: interleaved repeats, medians, paired ratios, machine facts."""

from __future__ import annotations

import gc
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Timings:
    """Seconds per repeat of a baseline and a candidate, run interleaved (ABBA order)."""

    baseline: list[float] = field(default_factory=list)
    candidate: list[float] = field(default_factory=list)

    @property
    def base_median(self) -> float:
        return statistics.median(self.baseline)

    @property
    def cand_median(self) -> float:
        return statistics.median(self.candidate)

    def paired_ratios(self, candidate_over_baseline: bool = True) -> list[float]:
        """Per-repeat ratio of the two runs made side by side (drift between repeats cancels)."""
        pairs = zip(self.candidate, self.baseline)
        return [c / b if candidate_over_baseline else b / c for c, b in pairs]

    def ratio(self, candidate_over_baseline: bool = True) -> float:
        """Median of the paired ratios."""
        return statistics.median(self.paired_ratios(candidate_over_baseline))

    def spread(self, candidate_over_baseline: bool = True) -> tuple[float, float]:
        r = self.paired_ratios(candidate_over_baseline)
        return min(r), max(r)


def interleave(baseline: Callable[[int], object], candidate: Callable[[int], object], repeats: int,
               warmup: bool = True, log: Callable[[str], None] | None = None) -> tuple[Timings, dict]:
    """Run ``baseline(r)`` and ``candidate(r)`` ``repeats`` times, alternating which goes first
    (B C, C B, B C, …) so that slow drift of a shared machine hits both alike.

    Returns the timings and the last return value of each (``{"baseline": …, "candidate": …}``).
    A warm-up call of each (repeat index -1) runs first, untimed.
    """
    t = Timings()
    last: dict = {}
    fns = {"baseline": baseline, "candidate": candidate}
    if warmup:
        for name, fn in fns.items():
            last[name] = fn(-1)
    for r in range(repeats):
        order = ("baseline", "candidate") if r % 2 == 0 else ("candidate", "baseline")
        for name in order:
            gc.collect()
            t0 = time.perf_counter()
            last[name] = fns[name](r)
            dt = time.perf_counter() - t0
            (t.baseline if name == "baseline" else t.candidate).append(dt)
        if log:
            log(f"    repeat {r + 1}/{repeats}: baseline {t.baseline[-1]:.3f} s, candidate {t.candidate[-1]:.3f} s")
    return t, last


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def other_load() -> list[str]:
    """Other heavy processes right now (the shared machine's pre-training run and the like)."""
    try:
        out = subprocess.run(["ps", "-eo", "pid,pcpu,args", "--sort=-pcpu"], capture_output=True, text=True,
                             timeout=5).stdout.splitlines()[1:]
    except (OSError, subprocess.SubprocessError):
        return []
    me = os.getpid()
    busy = []
    for line in out:
        parts = line.split(None, 2)
        if len(parts) < 3:
            continue
        pid, pcpu, args = parts
        if int(pid) == me or float(pcpu) < 20:
            continue
        busy.append(f"{float(pcpu):.0f}% {args[:70]}")
    return busy[:5]


def machine() -> dict:
    import torch

    cpu = "unknown"
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and cpu == "unknown":
                    cpu = line.split(":", 1)[1].strip()
                if line.startswith("flags") and not flags:
                    flags = line
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags]
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        mem = f"{kb / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "isa": ", ".join(isa),
        "memory": mem,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"
