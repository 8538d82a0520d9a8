"""``nodeprobe reproduce``: pre-train → fine-tune → every analysis → ``reports/<preset>/``.

Example:
    $ nodeprobe reproduce --preset smoke             # then: nodeprobe ablate --layer 5 --head 3
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from nodeprobe.cli.options import DataOpt, DeviceOpt, SeedOpt, check_common


def reproduce(
    preset: str = typer.Option("smoke", "--preset", help="smoke (≈ 1.5 min, 6 × 12 heads) | cpu (≤ 75 min on 2 cores) | paper"),
    runs: Path = typer.Option(Path("runs"), "--runs", help="Where weights and caches go (runs/<preset>/…)."),
    reports: Path = typer.Option(Path("reports"), "--reports", help="Where reports go (reports/<preset>/…)."),
    data: Optional[Path] = DataOpt,
    seed: int = SeedOpt,
    device: str = DeviceOpt,
    minilm: bool = typer.Option(True, "--minilm/--no-minilm", help="Also fine-tune MiniLM-L6 (if installed)."),
):
    """Pre-train → fine-tune → every analysis → reports/<preset>/ (README.md, JSON, PNG). Resumable."""
    from nodeprobe.train.presets import get_preset

    get_preset(preset)  # an unknown preset, a bad device or data path fail before anything heavy is imported
    check_common(data=data, device=device, outputs={"--runs": runs, "--reports": reports})
    from nodeprobe.io import check_disjoint

    check_disjoint({"--reports": reports}, {"--runs": runs}, role="output")  # weights and reports: two folders
    from nodeprobe.pipeline import reproduce as run

    run(preset, runs_dir=runs, reports_dir=reports, data_dir=data, seed=seed, device=device, minilm=minilm)
