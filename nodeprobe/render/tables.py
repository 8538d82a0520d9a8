"""Rich rendering primitives and the training/ablation views.

Renderers take result dataclasses and print; they compute nothing.  Shared pieces:
:func:`sparkline` (a distribution in one line), :func:`heatmap` (a layer × head grid in colour),
:func:`kv_table` (a one-screen settings/summary table).

Example:
    >>> sparkline([0, 1, 4, 9])
    '▁▂▄█'
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console()
_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float]) -> str:
    """One character per value, scaled to the max (``▁`` … ``█``)."""
    vals = [0.0 if (v is None or (isinstance(v, float) and math.isnan(v))) else float(v) for v in values]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    span = hi - lo or 1.0
    return "".join(_BARS[min(len(_BARS) - 1, int((v - lo) / span * (len(_BARS) - 1) + 0.5))] for v in vals)


def kv_table(title: str, rows: Sequence[tuple[str, object]]) -> Table:
    """A two-column key/value table."""
    t = Table(title=title, show_header=False, title_justify="left", box=None, pad_edge=False)
    t.add_column(style="bold cyan")
    t.add_column()
    for k, v in rows:
        t.add_row(k, fmt(v))
    return t


def fmt(v) -> str:
    """Numbers to short strings (4 significant digits), the rest via ``str``."""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        return f"{v:.4g}"
    if v is None:
        return "—"
    return str(v)


def signed(v: float, digits: int = 3) -> Text:
    """A signed number, red when negative and green when positive."""
    style = "red" if v < 0 else ("green" if v > 0 else "dim")
    return Text(f"{v:+.{digits}f}", style=style)


def heatmap(title: str, grid: Sequence[Sequence[float]], row_label: str = "layer", col_label: str = "head",
            digits: int = 3) -> Table:
    """A table coloured by value sign and size (layer × head grids)."""
    t = Table(title=title, title_justify="left")
    t.add_column(f"{row_label}\\{col_label}", justify="right", style="bold")
    n_cols = len(grid[0]) if grid else 0
    for j in range(n_cols):
        t.add_column(str(j), justify="right")
    scale = max((abs(v) for row in grid for v in row), default=1.0) or 1.0
    for i, row in enumerate(grid):
        cells = []
        for v in row:
            a = abs(v) / scale
            color = "red" if v < 0 else "green"
            style = f"bold {color}" if a > 0.5 else (color if a > 0.1 else "dim")
            cells.append(Text(f"{v:+.{digits}f}", style=style))
        t.add_row(str(i), *cells)
    return t


def render_ablation(rep, top: int = 10) -> None:
    """Baseline vs ablated accuracy/loss and the classes that moved most."""
    what = "isolated" if rep.isolate else "ablated"
    console.print(kv_table(
        f"Head L{rep.layer}H{rep.head} {what} ({rep.mode}) on {rep.task}",
        [("items", rep.n_items), ("baseline accuracy", rep.baseline_accuracy),
         (f"{what} accuracy", rep.ablated_accuracy), ("Δ accuracy", f"{rep.delta_accuracy:+.4f}"),
         ("baseline loss", rep.baseline_loss), (f"{what} loss", rep.ablated_loss)],
    ))
    if rep.movers:
        t = Table(title=f"Classes that moved most (top {top})", title_justify="left")
        for c in ("class", "n", "recall before", "recall after", "Δ"):
            t.add_column(c, justify="right" if c != "class" else "left")
        for m in rep.movers[:top]:
            t.add_row(m.name, str(m.n), f"{m.baseline_recall:.3f}", f"{m.ablated_recall:.3f}", signed(m.delta))
        console.print(t)
    else:
        console.print("No class with ≥ 5 items changed its recall.")


def render_sweep(rep) -> None:
    """The layer × head Δaccuracy grid of an all-heads sweep."""
    what = "isolating" if rep.isolate else "ablating"
    console.print(kv_table(f"All-heads sweep on {rep.task} ({rep.mode})",
                           [("items", rep.n_items), ("baseline accuracy", rep.baseline_accuracy)]))
    console.print(heatmap(f"Δ accuracy from {what} each head", rep.delta_accuracy.tolist()))


def render_training(kind: str, summary: dict) -> None:
    """One-screen summary of a pretrain/finetune run."""
    if kind == "pretrain":
        rows = [("model", summary["model"]), ("steps", summary["steps"]), ("tokens", summary["tokens"]),
                ("tokens/s", summary["tokens_per_s"]), ("held-out MLM accuracy", summary["heldout_accuracy"]),
                ("per epoch", sparkline([c["accuracy"] for c in summary.get("heldout_curve", [])]))]
    else:
        rows = [("model", summary["model"]), ("task", summary["task"]), ("from scratch", summary["from_scratch"]),
                ("test accuracy", summary["test_accuracy"]),
                ("per epoch", " ".join(f"{c['test_accuracy']:.3f}" for c in summary.get("curve", [])))]
    console.print(kv_table(f"{kind} finished", rows))
