"""Cooperation report (METHODS v2 §5) at a unit site, via :func:`nodeprobe.analysis.cooperation`.

The node sets are drawn at ``site`` (``readout``: the model's readout over the cached readout
vectors; ``attn``/``mlp``/``resid`` of block ``layer``: its block readout,
:func:`nodeprobe.studies.units.site_readout`).  With ``null=True`` the same curves (same R, seed
and grid, so the same node sets) are measured on the null model
(:func:`~nodeprobe.studies.units.null_readout`: the readout's columns permuted among the nodes
independently per class) and reported beside (``null_rows``, ``null``).

Class ids inside the analysis are the readout's rows (plus one 'unseen' class for items of a class a
block readout never saw); the report keeps only counts of classes, which do not depend on ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from nodeprobe.analysis import DEFAULT_GRID, cooperation
from nodeprobe.errors import NodeprobeError
from nodeprobe.hooks import check_mode
from nodeprobe.studies._common import check_thresholds, parse_grid
from nodeprobe.studies.units import ReadoutSettings, null_readout, site_readout

LINE_QUANTITIES = ("acc", "n_outputs", "n_learned", "union", "sum", "precision", "inv_outputs", "gain", "union_gain",
                   "retained_recall", "learned_per_node")


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
    retained_recall: float | None  # Rt(n) over the sets with U(S) ≠ ∅ (None: no such set)
    retained_recall_std: float | None
    n_no_union: int  # sets with U(S) = ∅, left out of retained_recall
    learned_per_node: float  # |Λ_S| / n
    learned_per_node_std: float


@dataclass
class CooperationReport:
    task: str
    mode: str
    n_items: int
    n_classes: int
    d_model: int  # = d, the nodes at the site (kept for the readout site's compatibility)
    R: int
    seed: int
    grid: list[int]
    rows: list[CoopLine]
    n_star: int | None  # interior grid point with the lowest mean Rt(n); None: no crossover in the grid
    first_positive_gain: int | None  # smallest n with mean G(n) > 0
    single_learned_hist: dict[int, int]  # |Λ_{i}| → number of single nodes
    n_single_covered: int  # |∪_i Λ_{i}|
    baseline_accuracy: float
    site: str
    layer: int | None
    readout: dict  # SiteReadout.describe()
    d: int  # nodes at the site
    crossover_found: bool
    p_min_n: int  # retired v1 crossover: n with the lowest mean P(n)
    last_positive_gain: int | None  # largest n with mean G(n) > 0
    null_rows: list[CoopLine] | None  # the same curves on the null model (None: null=False)
    null: dict | None  # n_star, crossover_found, first/last_positive_gain, p_min_n of the null model
    settings: dict = field(default_factory=dict)


def _lines(res) -> list[CoopLine]:
    rows = []
    for r in res.rows:
        vals = {}
        for q in LINE_QUANTITIES:
            ms = getattr(r, q)
            vals[q], vals[f"{q}_std"] = ms.mean, ms.std
        rows.append(CoopLine(n=r.n, n_subsets=r.n_subsets, n_no_union=r.n_no_union, **vals))
    return rows


def _summary(res) -> dict:
    return {"n_star": res.n_star, "crossover_found": res.crossover_found, "p_min_n": res.p_min_n,
            "first_positive_gain": res.first_positive_gain, "last_positive_gain": res.last_positive_gain}


def cooperation_report(
    cache,
    *,
    site: str = "readout",
    layer: int | None = None,
    train=None,
    readout_settings: ReadoutSettings | None = None,
    null: bool = True,
    mode: str = "zero",
    R: int = 20,
    seed: int = 0,
    grid: Sequence[int] = DEFAULT_GRID,
    tau_recall: float = 0.5,
    tau_lift: float = 2.0,
    min_count: int = 5,
    device: str = "cpu",
    sae=None,
) -> CooperationReport:
    """METHODS v2 §5 at ``site`` (block ``layer``): R seeded random node sets per n, measured and
    (``null=True``) on the null model.

    ``train``: the train split of a classification task (a ``TrainSource`` or a train-split cache),
    needed by the block sites; ``readout_settings``: how block readouts are trained (default
    :class:`~nodeprobe.studies.units.ReadoutSettings`); ``device``: where they are trained.
    The grid is capped at d, the number of nodes at the site.
    """
    check_mode(mode)
    check_thresholds(tau_recall, tau_lift, min_count)
    if isinstance(R, bool) or not isinstance(R, int) or R < 1:
        raise NodeprobeError(f"R={R}: expected a positive number of node sets per n")
    if not isinstance(null, bool):
        raise NodeprobeError(f"null={null!r}: expected true or false")
    grid = parse_grid(grid, R=R)
    sr = site_readout(cache, site, layer, train=train, sae=sae,
                      settings=readout_settings if readout_settings is not None else ReadoutSettings(), device=device)
    if sr.y.numel() == 0:
        raise NodeprobeError(f"cache {cache.path}: no items")
    kw = dict(R=R, seed=seed, grid=grid, tau_recall=tau_recall, tau_lift=tau_lift, min_count=min_count,
              n_classes=sr.n_local)
    mu = sr.means() if mode == "mean" else None
    res = cooperation(sr.W, sr.b, sr.X, sr.y_local, mode, mu, **kw)
    nres = cooperation((nr := null_readout(sr, seed)).W, nr.b, nr.X, nr.y_local, mode, mu, **kw) if null else None
    hist: dict[int, int] = {}
    for lam in res.single_learned:
        hist[len(lam)] = hist.get(len(lam), 0) + 1
    return CooperationReport(
        task=cache.task, mode=mode, n_items=int(sr.y.numel()), n_classes=cache.n_classes, d_model=sr.d,
        R=R, seed=seed, grid=list(res.settings["grid"]), rows=_lines(res), n_star=res.n_star,
        first_positive_gain=res.first_positive_gain, single_learned_hist=dict(sorted(hist.items())),
        n_single_covered=len(set().union(*res.single_learned)) if res.single_learned else 0,
        baseline_accuracy=float(cache.manifest.get("accuracy") or 0.0),
        site=site, layer=layer, readout=sr.describe(), d=sr.d, crossover_found=res.crossover_found,
        p_min_n=res.p_min_n, last_positive_gain=res.last_positive_gain,
        null_rows=_lines(nres) if nres is not None else None, null=_summary(nres) if nres is not None else None,
        settings={"cache": str(cache.path), "site": site, "layer": layer, "null": null,
                  "tau_recall": tau_recall, "tau_lift": tau_lift, "min_count": min_count,
                  "null_model": "readout columns permuted among nodes per class (seed = seed)" if null else None,
                  "model_fingerprint": cache.model_fingerprint, "eval_fingerprint": cache.eval_fingerprint},
    )
