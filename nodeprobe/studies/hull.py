"""Convex-hull bound report (METHODS §6) at any unit site (METHODS v2 §1–§2).

The site's linear readout (:func:`nodeprobe.studies.units.site_readout`: the model's readout at
``readout``; a block readout at ``attn``/``mlp``/``resid`` of block ``layer``) is read exactly like
the model's: ``W``, ``b`` over its rows ``classes``, the analysed items' activations ``X`` and
labels in the readout's class space (an item of a class the block readout never saw counts in N
and is never reachable).  Node numbers are coordinates of the site (``0 … d − 1``).

``level="node"``:

* ``nodes=[12, 40]``: one node set (:func:`nodeprobe.analysis.hull_bound`);
* ``n=1``: every single node (:func:`nodeprobe.analysis.hull_bound_single_nodes`, one upper
  envelope per node);
* ``n=k ≥ 2``: ``R`` seeded random node sets of size k, each through ``hull_bound`` (for n ≥ 4
  the bound needs one LP per class; with more than ``max_lp`` LPs it is reported as not computed).

``level="head"`` (``site="attn"``, ``layer`` required): each head h of the block is the node group
of its ``d_head`` coordinates (METHODS v2 §2, group kind), one row per head labelled ``L<l>H<h>``.

**Class sampling.**  For a node set of n ≥ 2 the data-range bound (and for n ≥ 4 the unbounded
one) needs one LP per class.  With many classes (MLM: K' is the vocabulary seen by the readout)
the bound decides reachability only for the classes the set outputs plus a seeded sample of
``class_sample`` other classes (``np.random.default_rng(seed)``, a fresh draw per row); each
tested class still competes with every class.  The UB is then a sum over the tested classes only:
a **lower estimate** of the bound (the true UB is ≥ it; ``acc ≤`` it still holds since the
outputs are always tested).  Rows say which: ``bound_scope`` = ``"all classes"`` or ``"outputs +
sample of N"`` and ``classes_tested``.  Single nodes (n = 1) are exact over all classes.
``class_sample=None`` tests every class.

Both bounds (unbounded ℝⁿ and the data box), UB, achieved accuracy, efficiency acc/UB and the
units farthest below their data-range bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nodeprobe.analysis import hull_bound, hull_bound_single_nodes
from nodeprobe.errors import NodeprobeError
from nodeprobe.hooks import check_mode
from nodeprobe.studies._common import check_hull_args, check_thresholds, check_unit_site
from nodeprobe.studies.units import ReadoutSettings, site_readout

LEVELS = ("node", "head")
ALL_CLASSES = "all classes"


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
    unit: str | None = None  # level=head: "L5H3"
    classes_tested: int | None = None  # readout rows whose reachability was decided
    bound_scope: str = ALL_CLASSES  # "all classes" | "outputs + sample of N" (UB over the tested classes)


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
    site: str = "readout"
    layer: int | None = None
    level: str = "node"
    readout: dict = field(default_factory=dict)  # SiteReadout.describe()
    bound_scope: str = ALL_CLASSES  # "all classes" when every row tested every class
    classes_tested: int | None = None  # the rows' common count (None when they differ)


def _f(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if np.isnan(x) else x


def _mean(vals) -> float | None:
    v = [x for x in vals if x is not None]
    return float(np.mean(v)) if v else None


def _scope(tested, K: int, class_sample: int | None) -> tuple[int, str]:
    if tested is None:
        return K, ALL_CLASSES
    return len(tested), f"outputs + sample of {class_sample}"


def _row(hb, K: int, class_sample: int | None, unit: str | None = None) -> HullRow:
    gap = None if hb.ub_data is None else hb.ub_data - hb.acc
    n_t, scope = _scope(hb.tested, K, class_sample)
    return HullRow(list(hb.nodes), hb.acc, hb.n_outputs, hb.n_learned, hb.n_reachable_unbounded, hb.n_reachable_data,
                   _f(hb.ub_unbounded), _f(hb.ub_data), _f(hb.efficiency_unbounded), _f(hb.efficiency_data), _f(gap),
                   unit=unit, classes_tested=n_t, bound_scope=scope)


def _check_class_sample(class_sample) -> None:
    if class_sample is not None and (isinstance(class_sample, bool) or not isinstance(class_sample, int)
                                     or class_sample < 0):
        raise NodeprobeError(f"class_sample={class_sample!r}: expected a number of classes ≥ 0 (or None: all)")


def hull_report(
    cache,
    *,
    site: str = "readout",
    layer: int | None = None,
    train=None,
    readout_settings: ReadoutSettings | None = None,
    level: str = "node",
    nodes=None,
    n: int | None = None,
    R: int = 20,
    seed: int = 0,
    mode: str = "zero",
    top: int = 10,
    max_lp: int = 2000,
    class_sample: int | None = 64,
    tau_recall: float = 0.5,
    tau_lift: float = 2.0,
    min_count: int = 5,
    device: str = "cpu",
    sae=None,
) -> HullReport:
    """The hull bound at ``site`` (block ``layer``) of one node set (``nodes``), every single node
    (``n=1``), R random sets of size n, or (``level="head"``) every head of the block."""
    check_mode(mode)
    check_thresholds(tau_recall, tau_lift, min_count)
    _check_class_sample(class_sample)
    if level not in LEVELS:
        raise NodeprobeError(f"level={level}: expected one of {', '.join(LEVELS)}")
    check_unit_site(site, layer, getattr(cache, "n_layers", None))
    if level == "head":
        if site != "attn":
            raise NodeprobeError(f"level=head: heads are node groups at site=attn (got site={site})")
        if nodes is not None or n is not None:
            raise NodeprobeError("level=head: every head of the block is a row; `nodes`/`n` apply to level=node")
    else:
        check_hull_args(nodes, n, cache.d_readout if site == "readout" else None, R)  # before any readout is trained
    sr = site_readout(cache, site, layer, train=train, settings=readout_settings or ReadoutSettings(), device=device,
                      sae=sae)
    S = None if level == "head" else check_hull_args(nodes, n, sr.d, R)
    W, b, X, y = sr.W, sr.b, sr.X, sr.y_local
    if y.numel() == 0:
        raise NodeprobeError(f"cache {cache.path}: no items")
    K = sr.n_rows
    mu = sr.means() if mode == "mean" else None
    th = dict(tau_recall=tau_recall, tau_lift=tau_lift, min_count=min_count)
    all_names = cache.class_names
    glob = sr.classes.tolist()

    def names(ks) -> list[str]:
        return [all_names[glob[int(k)]] for k in ks]

    crng = np.random.default_rng(seed)  # the class sample, a fresh draw per node set

    def bound(sub):
        kw = {}
        if class_sample is not None and len(sub) >= 2 and K > class_sample:
            kw = dict(classes=crng.permutation(K), n_other=class_sample)
        return hull_bound(W, b, X, y, sub, mode, mu, max_lp=max_lp, n_classes=sr.n_local, **th, **kw)

    extra = {}
    if level == "head":
        kind = "heads"
        rows = [_row(bound(sr.head_columns(h)), K, class_sample, unit=f"L{layer}H{h}") for h in range(sr.n_heads)]
    elif S is not None:
        kind = "set"
        hb = bound(S)
        rows = [_row(hb, K, class_sample)]
        extra = dict(
            reachable_unbounded=None if hb.reachable_unbounded is None else names(hb.reachable_unbounded),
            reachable_data=None if hb.reachable_data is None else names(hb.reachable_data),
            outputs_unreached=names(sorted(set(hb.outputs_unreached_unbounded) | set(hb.outputs_unreached_data))),
        )
    elif n == 1:
        kind = "single"
        r = hull_bound_single_nodes(W, b, X, y, mode, mu, top=sr.d, n_classes=sr.n_local, **th)
        rows = [HullRow([i], float(r.acc[i]), int(r.n_outputs[i]), int(r.n_learned[i]), int(r.n_reachable_unbounded[i]),
                        int(r.n_reachable_data[i]), _f(r.ub_unbounded[i]), _f(r.ub_data[i]),
                        _f(r.efficiency_unbounded[i]), _f(r.efficiency_data[i]), _f(r.gap_data[i]),
                        classes_tested=K, bound_scope=ALL_CLASSES)
                for i in range(sr.d)]
    else:
        kind = "random"
        rng = np.random.default_rng(seed)
        rows = []
        for _ in range(R):
            sub = np.sort(rng.choice(sr.d, size=n, replace=False))
            rows.append(_row(bound(sub), K, class_sample))
    gaps = [(-(r.gap_data if r.gap_data is not None else -np.inf), q) for q, r in enumerate(rows)]
    farthest = [q for _, q in sorted(gaps)][:top]
    scopes = {r.bound_scope for r in rows}
    counts = {r.classes_tested for r in rows}
    return HullReport(
        task=cache.task, kind=kind, mode=mode, n_items=int(y.numel()), n_classes=cache.n_classes, rows=rows,
        farthest_below=farthest, mean_acc=float(np.mean([r.acc for r in rows])),
        mean_ub_unbounded=_mean(r.ub_unbounded for r in rows), mean_ub_data=_mean(r.ub_data for r in rows),
        mean_efficiency_unbounded=_mean(r.efficiency_unbounded for r in rows),
        mean_efficiency_data=_mean(r.efficiency_data for r in rows),
        settings={"cache": str(cache.path), "site": site, "layer": layer, "level": level, "nodes": S, "n": n,
                  "R": R if kind == "random" else None, "seed": seed, "max_lp": max_lp, "class_sample": class_sample,
                  **th, "model_fingerprint": cache.model_fingerprint, "eval_fingerprint": cache.eval_fingerprint},
        site=site, layer=layer, level=level, readout=sr.describe(),
        bound_scope=ALL_CLASSES if scopes == {ALL_CLASSES} else f"outputs + sample of {class_sample}",
        classes_tested=counts.pop() if len(counts) == 1 else None,
        **extra,
    )
