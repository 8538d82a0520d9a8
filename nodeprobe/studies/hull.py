"""Convex-hull bound report (METHODS §6) on the cached readout.

* ``nodes=[12, 40]``: one node set (:func:`nodeprobe.analysis.hull_bound`);
* ``n=1``: every single node (:func:`nodeprobe.analysis.hull_bound_single_nodes`, one upper
  envelope per node);
* ``n=k ≥ 2``: ``R`` seeded random node sets of size k, each through ``hull_bound`` (for n ≥ 4
  the bound needs one LP per class; with more than ``max_lp`` LPs it is reported as not computed).

Both bounds (unbounded ℝⁿ and the data box), UB, achieved accuracy, efficiency acc/UB and the
units farthest below their data-range bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nodeprobe.analysis import hull_bound, hull_bound_single_nodes
from nodeprobe.errors import NodeprobeError
from nodeprobe.hooks import check_mode
from nodeprobe.studies._common import check_thresholds, parse_nodes


@dataclass
class HullRow:
    nodes: list[int]
    acc: float
    n_outputs: int
    n_learned: int
    n_reachable_unbounded: int | None
    n_reachable_data: int | None
    ub_unbounded: float | None
    ub_data: float | None
    efficiency_unbounded: float | None
    efficiency_data: float | None
    gap_data: float | None  # ub_data − acc


@dataclass
class HullReport:
    task: str
    kind: str  # "set" | "single" | "random"
    mode: str
    n_items: int
    n_classes: int
    rows: list[HullRow]
    farthest_below: list[int]  # positions in ``rows``: largest gap_data first
    mean_acc: float
    mean_ub_unbounded: float | None
    mean_ub_data: float | None
    mean_efficiency_unbounded: float | None
    mean_efficiency_data: float | None
    # one node set only: the classes themselves
    reachable_unbounded: list[str] | None = None
    reachable_data: list[str] | None = None
    outputs_unreached: list[str] | None = None
    settings: dict = field(default_factory=dict)


def _f(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if np.isnan(x) else x


def _mean(vals) -> float | None:
    v = [x for x in vals if x is not None]
    return float(np.mean(v)) if v else None


def _row(hb) -> HullRow:
    gap = None if hb.ub_data is None else hb.ub_data - hb.acc
    return HullRow(list(hb.nodes), hb.acc, hb.n_outputs, hb.n_learned, hb.n_reachable_unbounded, hb.n_reachable_data,
                   _f(hb.ub_unbounded), _f(hb.ub_data), _f(hb.efficiency_unbounded), _f(hb.efficiency_data), _f(gap))


ROW_BYTES = 600  # at least, per random node set: its HullRow
BOUND_SECONDS = 1e-3  # at least, per random node set: one hull bound (LPs over the classes)


def check_hull_args(nodes, n, d: int | None, R: int = 20) -> list[int] | None:
    """Validate ``--nodes``/``--n``/``--R`` (against d_model when given); returns parsed nodes."""
    if (nodes is None) == (n is None):
        raise NodeprobeError("give either nodes=12,40 (one node set) or n=1 (every single node) / n=k (random sets)")
    if isinstance(R, bool) or not isinstance(R, int) or R < 1:
        raise NodeprobeError(f"R={R}: expected a positive number of node sets")
    if nodes is None and n is not None and n != 1:  # R random sets: refused up front when they cannot fit
        from nodeprobe.budget import check_budget

        check_budget("R=", R, need_bytes=R * ROW_BYTES, seconds=R * BOUND_SECONDS,
                     how=f"R hull bounds, ≥ {ROW_BYTES} bytes and ≥ {BOUND_SECONDS * 1e3:g} ms each")
    if nodes is not None:
        return parse_nodes(nodes, d)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1 or (d is not None and n > d):
        raise NodeprobeError(f"n={n}: expected a node count 1–{d if d is not None else 'd_model'}")
    return None


def hull_report(
    cache,
    *,
    nodes=None,
    n: int | None = None,
    R: int = 20,
    seed: int = 0,
    mode: str = "zero",
    top: int = 10,
    max_lp: int = 2000,
    tau_recall: float = 0.5,
    tau_lift: float = 2.0,
    min_count: int = 5,
) -> HullReport:
    """The hull bound of one node set (``nodes``), every single node (``n=1``) or R random sets of size n."""
    check_mode(mode)
    check_thresholds(tau_recall, tau_lift, min_count)
    cache.check_site("readout")
    S = check_hull_args(nodes, n, cache.d_model, R)
    X = cache.readout()
    y = cache.targets()
    if y.numel() == 0:
        raise NodeprobeError(f"cache {cache.path}: no items")
    W, b = cache.W, cache.b
    mu = cache.means("readout") if mode == "mean" else None
    th = dict(tau_recall=tau_recall, tau_lift=tau_lift, min_count=min_count)
    names = cache.class_names
    extra = {}
    if S is not None:
        kind = "set"
        hb = hull_bound(W, b, X, y, S, mode, mu, max_lp=max_lp, **th)
        rows = [_row(hb)]
        extra = dict(
            reachable_unbounded=None if hb.reachable_unbounded is None else [names[k] for k in hb.reachable_unbounded],
            reachable_data=None if hb.reachable_data is None else [names[k] for k in hb.reachable_data],
            outputs_unreached=[names[k] for k in sorted(set(hb.outputs_unreached_unbounded) | set(hb.outputs_unreached_data))],
        )
    elif n == 1:
        kind = "single"
        r = hull_bound_single_nodes(W, b, X, y, mode, mu, top=cache.d_model, **th)
        rows = [HullRow([i], float(r.acc[i]), int(r.n_outputs[i]), int(r.n_learned[i]), int(r.n_reachable_unbounded[i]),
                        int(r.n_reachable_data[i]), _f(r.ub_unbounded[i]), _f(r.ub_data[i]),
                        _f(r.efficiency_unbounded[i]), _f(r.efficiency_data[i]), _f(r.gap_data[i]))
                for i in range(cache.d_model)]
    else:
        kind = "random"
        rng = np.random.default_rng(seed)
        rows = []
        for _ in range(R):
            sub = np.sort(rng.choice(cache.d_model, size=n, replace=False))
            rows.append(_row(hull_bound(W, b, X, y, sub, mode, mu, max_lp=max_lp, **th)))
    gaps = [(-(r.gap_data if r.gap_data is not None else -np.inf), q) for q, r in enumerate(rows)]
    farthest = [q for _, q in sorted(gaps)][:top]
    return HullReport(
        task=cache.task, kind=kind, mode=mode, n_items=int(y.numel()), n_classes=cache.n_classes, rows=rows,
        farthest_below=farthest, mean_acc=float(np.mean([r.acc for r in rows])),
        mean_ub_unbounded=_mean(r.ub_unbounded for r in rows), mean_ub_data=_mean(r.ub_data for r in rows),
        mean_efficiency_unbounded=_mean(r.efficiency_unbounded for r in rows),
        mean_efficiency_data=_mean(r.efficiency_data for r in rows),
        settings={"cache": str(cache.path), "nodes": S, "n": n, "R": R if kind == "random" else None, "seed": seed,
                  "max_lp": max_lp, **th, "model_fingerprint": cache.model_fingerprint,
                  "eval_fingerprint": cache.eval_fingerprint},
        **extra,
    )
