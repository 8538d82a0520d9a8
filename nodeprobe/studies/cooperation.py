"""Cooperation report (METHODS §5) on the cached readout, via :func:`nodeprobe.analysis.cooperation`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from nodeprobe.analysis import DEFAULT_GRID, cooperation
from nodeprobe.errors import NodeprobeError
from nodeprobe.hooks import check_mode
from nodeprobe.studies._common import check_thresholds


@dataclass
class CoopLine:
    """Mean ± std over the R node sets of size n."""

    n: int
    n_subsets: int
    acc: float
    acc_std: float
    n_outputs: float
    n_outputs_std: float
    n_learned: float
    n_learned_std: float
    union: float
    union_std: float
    sum: float
    sum_std: float
    precision: float
    precision_std: float
    inv_outputs: float
    inv_outputs_std: float
    gain: float
    gain_std: float
    union_gain: float
    union_gain_std: float


@dataclass
class CooperationReport:
    task: str
    mode: str
    n_items: int
    n_classes: int
    d_model: int
    R: int
    seed: int
    grid: list[int]
    rows: list[CoopLine]
    n_star: int  # n with the lowest mean P(n)
    first_positive_gain: int | None  # smallest n with mean G(n) > 0
    single_learned_hist: dict[int, int]  # |Λ_{i}| → number of single nodes
    n_single_covered: int  # |∪_i Λ_{i}|
    baseline_accuracy: float
    settings: dict = field(default_factory=dict)


SET_BYTES = 600  # at least, per random node set kept: its draw (tuple, index array) and its result row
SET_SECONDS = 1e-5  # at least, per random node set: one prediction pass over the evaluation items


def check_cooperation_size(R: int, grid: Sequence[int]) -> None:
    """Refuse ``R`` × grid node sets that cannot fit in memory (≥ :data:`SET_BYTES` each) or would
    run for more than :data:`nodeprobe.budget.MAX_SECONDS` (≥ :data:`SET_SECONDS` each), up front.

    Example:
        >>> check_cooperation_size(20, (1, 2, 4))
    """
    if isinstance(R, bool) or not isinstance(R, int) or R < 1:
        return  # cooperation_report's own check says so
    from nodeprobe.budget import check_budget

    sets = R * len(set(grid))
    check_budget("R=", R, need_bytes=sets * SET_BYTES, seconds=sets * SET_SECONDS,
                 how=f"{sets:.3g} node sets = R × {len(set(grid))} grid sizes, ≥ {SET_BYTES} bytes and "
                     f"≥ {SET_SECONDS * 1e6:g} µs each")


def parse_grid(text: str | Sequence[int] | None, R: int | None = None) -> tuple[int, ...]:
    """``"1,2,4"`` → ``(1, 2, 4)``; None → METHODS §5 grid.  With ``R``: also
    :func:`check_cooperation_size` (before anything loads)."""
    if text is None:
        g = tuple(DEFAULT_GRID)
    else:
        parts = text.split(",") if isinstance(text, str) else list(text)
        try:
            g = tuple(int(str(p).strip()) for p in parts if str(p).strip())
        except ValueError:
            raise NodeprobeError(f"grid={text}: expected node counts like 1,2,4,8") from None
        if not g or min(g) < 1:
            raise NodeprobeError(f"grid={text}: expected positive node counts")
    if R is not None:
        check_cooperation_size(R, g)
    return g if text is not None else DEFAULT_GRID


def cooperation_report(
    cache,
    *,
    mode: str = "zero",
    R: int = 20,
    seed: int = 0,
    grid: Sequence[int] = DEFAULT_GRID,
    tau_recall: float = 0.5,
    tau_lift: float = 2.0,
    min_count: int = 5,
) -> CooperationReport:
    """METHODS §5 on the cached readout vectors (``readout`` site): R seeded random node sets per n."""
    check_mode(mode)
    check_thresholds(tau_recall, tau_lift, min_count)
    if isinstance(R, bool) or not isinstance(R, int) or R < 1:
        raise NodeprobeError(f"R={R}: expected a positive number of node sets per n")
    grid = parse_grid(grid, R=R)
    cache.check_site("readout")
    X = cache.readout()
    y = cache.targets()
    if y.numel() == 0:
        raise NodeprobeError(f"cache {cache.path}: no items")
    mu = cache.means("readout") if mode == "mean" else None
    res = cooperation(cache.W, cache.b, X, y, mode, mu, R=R, seed=seed, grid=grid,
                      tau_recall=tau_recall, tau_lift=tau_lift, min_count=min_count)
    rows = []
    for r in res.rows:
        vals = {}
        for q in ("acc", "n_outputs", "n_learned", "union", "sum", "precision", "inv_outputs", "gain", "union_gain"):
            ms = getattr(r, q)
            vals[q], vals[f"{q}_std"] = ms.mean, ms.std
        rows.append(CoopLine(n=r.n, n_subsets=r.n_subsets, **vals))
    hist: dict[int, int] = {}
    for lam in res.single_learned:
        hist[len(lam)] = hist.get(len(lam), 0) + 1
    return CooperationReport(
        task=cache.task, mode=mode, n_items=int(y.numel()), n_classes=cache.n_classes, d_model=cache.d_model,
        R=R, seed=seed, grid=list(res.settings["grid"]), rows=rows, n_star=res.n_star,
        first_positive_gain=res.first_positive_gain, single_learned_hist=dict(sorted(hist.items())),
        n_single_covered=len(set().union(*res.single_learned)) if res.single_learned else 0,
        baseline_accuracy=float(cache.manifest.get("accuracy") or 0.0),
        settings={"cache": str(cache.path), "tau_recall": tau_recall, "tau_lift": tau_lift, "min_count": min_count,
                  "model_fingerprint": cache.model_fingerprint, "eval_fingerprint": cache.eval_fingerprint},
    )

