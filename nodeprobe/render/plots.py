"""PNG plots (matplotlib, from the ``plot`` extra). Without matplotlib, say so once and go on.

Example:
    >>> plot_curves({"acc": ([1, 2], [0.1, 0.2])}, "/tmp/x.png", "demo")   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

_warned = False


def _plt():
    global _warned
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        return plt
    except ImportError:
        if not _warned:
            from nodeprobe.render.tables import console

            console.print("[yellow]matplotlib is not installed (pip install 'nodeprobe[plot]'): skipping plots[/]")
            _warned = True
        return None


def _save(fig, path: str | Path) -> Path:
    import io

    import matplotlib.pyplot as plt

    from nodeprobe.io import write_bytes_atomic

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    path = write_bytes_atomic(path, buf.getvalue())
    plt.close(fig)
    return path



def _label_axes(ax, title: str, xlabel: str, ylabel: str, logx: bool) -> None:
    """Title, axis labels, an optional log x axis and a light grid."""
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)

def plot_head_grid(grid, path: str | Path, title: str, cbar: str = "Δ accuracy") -> Path | None:
    """A layer × head heat map (diverging colours centred on 0)."""
    plt = _plt()
    if plt is None:
        return None
    import numpy as np

    g = np.asarray(grid, dtype=float)
    v = float(np.nanmax(np.abs(g))) or 1.0
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * g.shape[1], 1.0 + 0.45 * g.shape[0]))
    im = ax.imshow(g, cmap="RdBu", vmin=-v, vmax=v)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(g.shape[1]))
    ax.set_yticks(range(g.shape[0]))
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label=cbar, shrink=0.8)
    return _save(fig, path)


def plot_curves(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, title: str,
                xlabel: str = "", ylabel: str = "", logx: bool = False, errors: dict | None = None) -> Path | None:
    """Several named curves ``{name: (x, y)}`` (optional ``errors`` ``{name: yerr}``) on one axis."""
    plt = _plt()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (x, y) in series.items():
        if errors and name in errors:
            ax.errorbar(x, y, yerr=errors[name], label=name, marker="o", ms=3, capsize=2)
        else:
            ax.plot(x, y, label=name, marker="o", ms=3)
    _label_axes(ax, title, xlabel, ylabel, logx)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_bars(labels: Sequence[str], values: Sequence[float], path: str | Path, title: str, ylabel: str = "") -> Path | None:
    """A bar chart (histograms of |Λ|, accuracy per block…)."""
    plt = _plt()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(max(4, 0.35 * len(labels) + 1), 3.5))
    ax.bar(range(len(values)), values, color="#4C72B0")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=45 if max(map(len, labels), default=0) > 3 else 0, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _save(fig, path)


def plot_scatter(x: Sequence[float], y: Sequence[float], path: str | Path, title: str, xlabel: str = "",
                 ylabel: str = "", logx: bool = False, line: tuple[Sequence[float], Sequence[float]] | None = None,
                 line_label: str = "", diagonal: bool = False) -> Path | None:
    """A scatter of points, optionally with a line over it (e.g. binned means) and the y = x diagonal."""
    plt = _plt()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(x, y, s=6, alpha=0.4, color="#4C72B0", linewidths=0)
    if line is not None:
        ax.plot(line[0], line[1], color="#C44E52", marker="o", ms=4, label=line_label or None)
        if line_label:
            ax.legend(fontsize=8)
    if diagonal:
        lo = min(min(x, default=0), min(y, default=0))
        hi = max(max(x, default=1), max(y, default=1))
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
    _label_axes(ax, title, xlabel, ylabel, logx)
    return _save(fig, path)


def plot_matrix(matrix, labels: Sequence[str], path: str | Path, title: str, cbar: str = "similarity") -> Path | None:
    """A square ``[P, P]`` matrix (e.g. one head's token similarity) with token labels on both axes."""
    plt = _plt()
    if plt is None:
        return None
    import numpy as np

    m = np.asarray(matrix, dtype=float)
    off = m[~np.eye(m.shape[0], dtype=bool)] if m.shape[0] > 1 else m.ravel()
    v = float(np.nanmax(np.abs(off))) if off.size else 1.0
    n = m.shape[0]
    size = min(14.0, 2.0 + 0.22 * n)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    im = ax.imshow(m, cmap="RdBu_r", vmin=-(v or 1.0), vmax=v or 1.0)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    fs = 8 if n <= 48 else 5
    ax.set_xticklabels(list(labels)[:n], rotation=90, fontsize=fs)
    ax.set_yticklabels(list(labels)[:n], fontsize=fs)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label=cbar, shrink=0.8)
    return _save(fig, path)


def plot_label_unit(matrix, row_labels: Sequence[str], col_labels: Sequence[str], path: str | Path, title: str,
                    cbar: str = "recall r_u(k)") -> Path | None:
    """A label × unit matrix (e.g. the SNP diagonal: recall of each class by each unit), values in [0, 1]."""
    plt = _plt()
    if plt is None:
        return None
    import numpy as np

    m = np.asarray(matrix, dtype=float)
    K, U = m.shape
    fig, ax = plt.subplots(figsize=(min(18.0, 2.5 + 0.16 * U), min(12.0, 1.5 + 0.22 * K)))
    im = ax.imshow(m, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(K))
    ax.set_yticklabels([str(s)[:22] for s in row_labels], fontsize=7 if K <= 40 else 5)
    step = max(1, U // 48)
    ax.set_xticks(range(0, U, step))
    ax.set_xticklabels([str(col_labels[q]) for q in range(0, U, step)], rotation=90, fontsize=6)
    ax.set_xlabel("unit (sorted by its best label)")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label=cbar, shrink=0.8)
    return _save(fig, path)
