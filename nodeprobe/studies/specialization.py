"""Token/label specialization of single nodes and heads (METHODS v2 §2–§3), from a cache.

Every unit is read through a frozen linear readout, every other node silenced (the papers'
single-nodal performance, SNP):

* ``level="node", site="readout"``: node i of the readout vector under the model's own final map;
  predictions from :func:`nodeprobe.analysis.node_predictions` (exact upper envelope, no O(N·K)
  pass per node).
* ``level="node", site="attn"|"mlp"|"resid", layer=l``: node i of that site of block l under the
  block readout (:mod:`nodeprobe.studies.units`), the same envelope fast path.  Without ``layer``:
  every block ("along the blocks", with the Spearman ρ of mean SNR and mean |Λ| against l).
  ``resid_readout="lens"`` is v1's ``resid`` (the node isolated, then the rest of the trained
  readout path: :func:`nodeprobe.studies.lens.resid_node_predictions`).
* ``level="head"``: ``head_unit="group"`` (default) — head (l, h) is the node group of its
  ``d_head`` coordinates at site ``attn`` of block l under that block's readout (a cache read, no
  forward pass); ``head_unit="network"`` (v1) — head (l, h) isolated in the running network, every
  other head of block l ablated (:func:`nodeprobe.studies.lens.head_isolation_predictions`).

Per unit: accuracy, |O|, |Λ| with the learned class names, SNR (None when Λ is empty), mean
precision, the recall of every class (the SNP matrix's diagonal, for the label × unit plot) and,
with ``snp=True``, the SNP matrix ``C[k, j] / N_k``; per family of units (all readout nodes; the
nodes of one site and block; the heads of one block): :func:`nodeprobe.analysis.symmetry_summary`
plus the mean SNR over units with Λ ≠ ∅.  All metrics come from
:func:`nodeprobe.analysis.unit_stats_many`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from nodeprobe.analysis import node_predictions, symmetry_summary, unit_stats_many
from nodeprobe.errors import NodeprobeError
from nodeprobe.hooks import check_mode
from nodeprobe.studies._common import check_cache_matches, check_thresholds, parse_unit, resolve_specialization
from nodeprobe.studies.units import ReadoutSettings, SiteReadout, block_readout, latent_site_readout

TREND_KINDS = ("heads", "attn nodes", "mlp nodes", "resid nodes")  # the family kinds that run along the blocks
RECALL_MAX_CLASSES = 256  # per-unit recall vectors (label × unit plots) only up to this many classes


@dataclass
class ClassStat:
    """One learned class of a unit."""

    cls: int
    name: str
    recall: float
    precision: float
    lift: float
    snr: float


@dataclass
class UnitRow:
    """One unit (a node, or a head) and its METHODS §3 numbers."""

    unit: str  # "node 12", "L3 node 12" or "L3H5"
    index: tuple[int, ...]  # (i,), (layer, i) or (layer, head)
    acc: float
    n_outputs: int
    n_learned: int
    snr: float | None  # None when Λ is empty (METHODS §3: undefined)
    mean_precision: float
    learned: list[ClassStat] = field(default_factory=list)
    recall: list[float] | None = None  # r_u(k) for every class k (K ≤ RECALL_MAX_CLASSES)
    snp: dict | None = None  # with snp=True: {"rows": classes, "cols": classes, "matrix": C[k, j] / N_k}

    @property
    def learned_names(self) -> list[str]:
        return [c.name for c in self.learned]


@dataclass
class ClassOwners:
    cls: int
    name: str
    n_units: int


@dataclass
class FamilySummary:
    """Symmetry-breaking summary over a family of units (METHODS §3)."""

    name: str
    n_units: int
    n_classes: int
    size_hist: dict[int, int]  # |Λ| → number of units
    mean_size: float
    n_covered: int
    coverage: float
    mean_jaccard: float
    n_pairs: int
    owners: list[ClassOwners]  # classes learned by ≥ 1 unit, most owners first
    n_unowned: int
    mean_snr: float | None = None  # over units with Λ ≠ ∅ (None when there is none)
    layer: int | None = None
    kind: str = ""  # "readout nodes" | "attn nodes" | "mlp nodes" | "resid nodes" | "heads"
    readout: dict | None = None  # the block readout the family was read through (SiteReadout.describe)


@dataclass
class Trend:
    """One family kind along the blocks (METHODS v2 §3): per-block series and Spearman ρ against l."""

    kind: str
    layers: list[int]
    mean_size: list[float]
    mean_snr: list[float | None]
    coverage: list[float]
    mean_jaccard: list[float]
    rho_snr: float | None
    p_snr: float | None
    rho_size: float | None
    p_size: float | None


@dataclass
class SpecializationReport:
    """Per-unit specialization and the symmetry summary of each family."""

    task: str
    level: str
    site: str
    layers: list[int]
    mode: str
    tau_recall: float
    tau_lift: float
    min_count: int
    n_items: int
    n_classes: int
    baseline_accuracy: float
    units: list[UnitRow]
    ranking: list[int]  # positions in ``units``: most learned classes first, then accuracy
    families: list[FamilySummary]
    settings: dict = field(default_factory=dict)
    head_unit: str | None = None  # level=head: group (v2) | network (v1)
    trends: list[Trend] = field(default_factory=list)  # several blocks: along the blocks
    readouts: list[dict] = field(default_factory=list)  # block readouts used (SiteReadout.describe)
    class_names: list[str] | None = None  # all K names when K ≤ RECALL_MAX_CLASSES (label × unit plots)

    def find_unit(self, spec: str) -> UnitRow:
        """A unit by name: ``12`` / ``node 12`` (nodes), ``L3H5`` / ``3.5`` / ``3,5`` (heads)."""
        for u in self.units:
            if u.unit.lower().replace(" ", "") == str(spec).lower().replace(" ", ""):
                return u
        key = parse_unit(self.level, spec)
        for u in self.units:
            if u.index == key:
                return u
        raise NodeprobeError(f"unit={spec}: no such {self.level} in this report ({self.units[0].unit}…{self.units[-1].unit})")

    def to_dict(self) -> dict:
        from dataclasses import asdict

        d = asdict(self)
        for u, uu in zip(d["units"], self.units):
            u["learned_names"] = uu.learned_names
        return d


def _family(name: str, stats, names: list[str], K: int, *, kind: str = "", layer: int | None = None,
            readout: dict | None = None) -> FamilySummary:
    s = symmetry_summary([st.learned for st in stats], K)
    owners = sorted(s.owners.items(), key=lambda kv: (-kv[1], kv[0]))
    snrs = [st.snr for st in stats if st.n_learned > 0]
    return FamilySummary(
        name=name, n_units=s.n_units, n_classes=K, size_hist=dict(s.size_hist), mean_size=s.mean_size,
        n_covered=s.n_covered, coverage=s.coverage, mean_jaccard=s.mean_jaccard, n_pairs=s.n_pairs,
        owners=[ClassOwners(int(k), names[k], int(c)) for k, c in owners], n_unowned=K - s.n_covered,
        mean_snr=float(np.mean(snrs)) if snrs else None, layer=layer, kind=kind, readout=readout,
    )


def _trends(families: list[FamilySummary]) -> list[Trend]:
    """Per family kind with ≥ 2 blocks: the series along the blocks and Spearman ρ against l."""
    from scipy.stats import spearmanr

    out = []
    kinds = [k for k in TREND_KINDS if any(f.kind == k and f.layer is not None for f in families)]
    for kind in kinds:
        fams = sorted((f for f in families if f.kind == kind and f.layer is not None), key=lambda f: f.layer)
        if len(fams) < 2:
            continue
        L = [f.layer for f in fams]

        def rho(vals):
            pairs = [(l, v) for l, v in zip(L, vals) if v is not None]
            if len(pairs) < 3 or len({v for _, v in pairs}) < 2:
                return None, None
            r = spearmanr([l for l, _ in pairs], [v for _, v in pairs])
            return float(r.statistic), float(r.pvalue)

        r_snr, p_snr = rho([f.mean_snr for f in fams])
        r_size, p_size = rho([f.mean_size for f in fams])
        out.append(Trend(kind, L, [f.mean_size for f in fams], [f.mean_snr for f in fams],
                         [f.coverage for f in fams], [f.mean_jaccard for f in fams], r_snr, p_snr, r_size, p_size))
    return out


def _snp_matrix(yt: torch.Tensor, p: torch.Tensor, Nk: torch.Tensor, learned) -> dict:
    """One unit's SNP matrix ``C[k, j] / N_k``: rows and columns the classes present (K ≤
    RECALL_MAX_CLASSES), else rows = its learned classes and columns = its outputs."""
    K = int(Nk.numel())
    present = torch.nonzero(Nk > 0).flatten()
    small = K <= RECALL_MAX_CLASSES
    rws = present if small else torch.as_tensor(sorted(learned), dtype=torch.long)
    cols = present if small else torch.unique(p)
    ri = torch.full((K,), -1, dtype=torch.long)
    ri[rws] = torch.arange(len(rws))
    ci = torch.full((K,), -1, dtype=torch.long)
    ci[cols] = torch.arange(len(cols))
    keep = (ri[yt] >= 0) & (ci[p] >= 0)
    C = torch.zeros(len(rws), len(cols), dtype=torch.float64)
    C.index_put_((ri[yt[keep]], ci[p[keep]]), torch.ones(int(keep.sum()), dtype=torch.float64), accumulate=True)
    C /= Nk[rws].clamp(min=1)[:, None]
    return {"rows": [int(v) for v in rws], "cols": [int(v) for v in cols],
            "matrix": [[round(float(v), 6) for v in r] for r in C]}


def _rows(stats, labels: list[str], indices: list[tuple[int, ...]], names: list[str], y=None, preds=None,
          snp: bool = False) -> list[UnitRow]:
    """One UnitRow per unit; with ``y``/``preds`` ([units, N], global ids) the per-class recall
    (K ≤ RECALL_MAX_CLASSES) and, with ``snp``, the SNP matrix."""
    K = len(names)
    Nk = recall = None
    if y is not None:
        yt = torch.as_tensor(y).long()
        Nk = torch.bincount(yt, minlength=K).double()
        if K <= RECALL_MAX_CLASSES:  # every unit's per-class hits in one bincount over (unit, class)
            P = torch.as_tensor(preds).long()
            U = P.shape[0]
            cell = (torch.arange(U)[:, None] * K + yt[None, :])[P == yt[None, :]]
            hits = torch.bincount(cell, minlength=U * K).view(U, K).double()
            recall = torch.where(Nk > 0, hits / Nk.clamp(min=1), torch.zeros_like(hits))
    rows = []
    for q, (st, lab, ix) in enumerate(zip(stats, labels, indices)):
        learned = [ClassStat(int(k), names[k], float(r), float(p), float(l), float(s))
                   for k, r, p, l, s in zip(st.learned, st.recall, st.precision, st.lift, st.snr_per_class)]
        row = UnitRow(lab, ix, st.acc, st.n_outputs, st.n_learned, st.snr if st.n_learned else None,
                      st.mean_precision, learned)
        if recall is not None:
            row.recall = recall[q].tolist()
        if Nk is not None and snp:
            row.snp = _snp_matrix(yt, torch.as_tensor(preds[q]).long(), Nk, st.learned)
        rows.append(row)
    return rows


def head_group_predictions(sr: SiteReadout, mode: str = "zero") -> torch.Tensor:
    """``[H, N]`` global-class predictions of every head of block ``sr.layer`` as the node group of
    its ``d_head`` attn coordinates under the block readout (METHODS v2 §2, ``--head-unit group``):
    ``argmax(W[:, cols(h)] z_h + b')``, ties → lowest row, mapped through ``sr.classes``.

    Example:
        >>> preds = head_group_predictions(block_readout(cache, "attn", 5, train=tr))   # doctest: +SKIP
    """
    from nodeprobe.analysis.readout import prepare_readout, set_predictions

    r = prepare_readout(sr.W, sr.b, sr.X, mode, sr.means() if mode == "mean" else None)
    out = np.stack([set_predictions(r, sr.head_columns(h)) for h in range(sr.n_heads)])
    return sr.classes[torch.from_numpy(out)]


def specialization_report(
    cache,
    *,
    level: str = "node",
    site: str | None = None,
    layer: int | None = None,
    head_unit: str = "group",
    resid_readout: str = "block",
    mode: str = "zero",
    tau_recall: float = 0.5,
    tau_lift: float = 2.0,
    min_count: int = 5,
    snp: bool = False,
    model=None,
    eval_set=None,
    train=None,
    readout_settings: ReadoutSettings | None = None,
    device: str = "cpu",
    sae=None,
    progress: bool = False,
) -> SpecializationReport:
    """Specialization of every node (``level="node"``) or head (``level="head"``) — see the module doc.

    Args:
        cache: a :class:`nodeprobe.cache.CacheReader` holding the site (``readout``; ``z`` for
            ``attn`` and heads; ``mlp``; ``resid``).
        layer: one block of a block site or of the heads (default: every block).
        head_unit: ``group`` (v2, a cache read) or ``network`` (v1, forward passes: needs ``model``
            and ``eval_set`` unless ``derived/`` holds them).
        resid_readout: ``block`` (v2, the block readout) or ``lens`` (v1: the rest of the trained
            readout path; needs ``model``).
        train: classification block readouts train on the train split: its cache
            (a :class:`~nodeprobe.cache.CacheReader`) or a :class:`~nodeprobe.studies.units.TrainSource`.
        snp: also keep each unit's SNP matrix ``C[k, j] / N_k``.
        sae: at a block site (nodes), an SAE of that site: its latents are the units
            (:func:`~nodeprobe.studies.units.latent_site_readout`).

    Example:
        >>> rep = specialization_report(cache, level="head", layer=5, train=train_cache)   # doctest: +SKIP
        >>> [u.learned_names for u in rep.units][:2]                                        # doctest: +SKIP
    """
    check_mode(mode)
    check_thresholds(tau_recall, tau_lift, min_count)
    if resid_readout not in ("block", "lens"):
        raise NodeprobeError(f"resid_readout={resid_readout}: expected block or lens")
    site, layers = resolve_specialization(level, site, layer, cache.n_layers, head_unit)
    if sae is not None and (level != "node" or site == "readout" or len(layers) != 1 or resid_readout == "lens"):
        raise NodeprobeError("sae: here for the nodes of one block site (site=resid|mlp with layer); at the readout "
                             "wrap the cache in nodeprobe.analysis.sae.LatentView")
    check_cache_matches(cache, eval_set)
    rs = readout_settings or ReadoutSettings()
    y = cache.targets()
    K = cache.n_classes
    names = cache.class_names
    if y.numel() == 0:
        raise NodeprobeError(f"cache {cache.path}: no items")
    th = dict(tau_recall=tau_recall, tau_lift=tau_lift, min_count=min_count)
    families: list[FamilySummary] = []
    units: list[UnitRow] = []
    readouts: list[dict] = []
    n_items = int(y.numel())
    many = len(layers) > 1
    from nodeprobe.progress import iterate

    if level == "node" and site == "readout":
        cache.check_site("readout")
        X = cache.readout()
        mu = cache.means("readout") if mode == "mean" else None
        preds = node_predictions(cache.W, cache.b, X, mode, mu).T.contiguous()
        stats = unit_stats_many(y, preds, K, **th)
        units = _rows(stats, [f"node {i}" for i in range(len(stats))], [(i,) for i in range(len(stats))], names,
                      y, preds, snp)
        families.append(_family("readout nodes", stats, names, K, kind="readout nodes"))
    elif level == "node" and site == "resid" and resid_readout == "lens":
        cache.check_site("resid")
        for l in layers:
            def compute(l=l):
                from nodeprobe.studies.lens import resid_node_predictions

                if model is None:
                    raise NodeprobeError("site=resid with the lens readout needs the model (the readout path after block l)")
                X = cache.resid(l + 1)
                mu = cache.means(f"resid.{l + 1}") if mode == "mean" else None
                return {"preds": resid_node_predictions(model, X, mode, mu, progress=progress).T.contiguous()}

            preds = cache.derived(f"resid-nodes-{mode}-L{l}", compute)["preds"]
            stats = unit_stats_many(y, preds, K, **th)
            lab = [f"L{l} node {i}" if many else f"node {i}" for i in range(len(stats))]
            ix = [(l, i) if many else (i,) for i in range(len(stats))]
            units.extend(_rows(stats, lab, ix, names, y, preds, snp))
            families.append(_family(f"resid nodes of block {l} (lens)", stats, names, K, kind="resid nodes", layer=l))
    elif level == "node":
        for l in iterate(layers, len(layers), f"{site} nodes", enabled=progress and many):
            sr = block_readout(cache, site, l, train=train, settings=rs, device=device)
            if sae is not None:
                sr = latent_site_readout(sr, sae)
            readouts.append(sr.describe())
            preds = sr.classes[sr.node_predictions(mode)]
            stats = unit_stats_many(sr.y, preds, K, **th)
            n_items = int(sr.y.numel())
            lab = [f"L{l} node {i}" if many else f"node {i}" for i in range(len(stats))]
            ix = [(l, i) if many else (i,) for i in range(len(stats))]
            units.extend(_rows(stats, lab, ix, names, sr.y, preds, snp))
            families.append(_family(f"{site} nodes of block {l}", stats, names, K, kind=f"{site} nodes", layer=l,
                                    readout=sr.describe()))
    else:
        if head_unit == "network":
            per_layer = _head_predictions(cache, model, eval_set, layers, mode, progress)
            ys = {l: y for l in layers}
            descr: dict = {}
        else:
            per_layer, ys, descr = {}, {}, {}
            for l in iterate(layers, len(layers), "heads", enabled=progress and many):
                sr = block_readout(cache, "attn", l, train=train, settings=rs, device=device)
                readouts.append(sr.describe())
                per_layer[l], ys[l], descr[l] = head_group_predictions(sr, mode), sr.y, sr.describe()
                n_items = int(sr.y.numel())
        all_stats = []
        for l in layers:
            stats = unit_stats_many(ys[l], per_layer[l], K, **th)
            all_stats.extend(stats)
            H = len(stats)
            units.extend(_rows(stats, [f"L{l}H{h}" for h in range(H)], [(l, h) for h in range(H)], names,
                               ys[l], per_layer[l], snp))
            families.append(_family(f"heads of block {l}", stats, names, K, kind="heads", layer=l,
                                    readout=descr.get(l)))
        if many:
            families.append(_family("all heads", all_stats, names, K, kind="all heads"))
    ranking = sorted(range(len(units)), key=lambda q: (-units[q].n_learned, -units[q].acc, q))
    return SpecializationReport(
        task=cache.task, level=level, site=site, layers=layers, mode=mode, tau_recall=float(tau_recall),
        tau_lift=float(tau_lift), min_count=int(min_count), n_items=n_items, n_classes=K,
        baseline_accuracy=float(cache.manifest.get("accuracy") or (cache.preds() == y).double().mean()),
        units=units, ranking=ranking, families=families,
        settings={"cache": str(cache.path), "model_fingerprint": cache.model_fingerprint,
                  "eval_fingerprint": cache.eval_fingerprint, "source": cache.manifest["source"],
                  "seed": cache.manifest["seed"], "head_unit": head_unit if level == "head" else None,
                  "resid_readout": resid_readout if site == "resid" else None,
                  "block_readout": None if not readouts else {"fit": vars(rs.fit), "fraction": rs.fraction}},
        head_unit=head_unit if level == "head" else None, trends=_trends(families), readouts=readouts,
        class_names=list(names) if K <= RECALL_MAX_CLASSES else None,
    )


def _head_predictions(cache, model, eval_set, layers, mode, progress) -> dict[int, torch.Tensor]:
    """``{l: [H, N]}`` head-isolation predictions, from ``derived/`` or computed (all missing
    layers in one pass) and saved there."""
    from safetensors.torch import load_file

    out: dict[int, torch.Tensor] = {}
    missing = []
    for l in layers:
        p = cache.path / "derived" / f"heads-isolate-{mode}-L{l}.safetensors"
        if p.is_file():
            try:
                out[l] = load_file(str(p))["preds"]
                continue
            except Exception:
                pass
        missing.append(l)
    if missing:
        if model is None or eval_set is None:
            raise NodeprobeError("level=head needs the model and the evaluation set (forward passes with heads isolated)")
        from nodeprobe.studies.lens import head_isolation_predictions

        got = head_isolation_predictions(model, eval_set, missing, mode, progress=progress)
        for l, t in got.items():
            if t.shape[1] != cache.n_items:  # pragma: no cover - guarded by the fingerprint
                raise AssertionError("head predictions do not line up with the cache")
            out[l] = cache.derived(f"heads-isolate-{mode}-L{l}", lambda t=t: {"preds": t.contiguous()})["preds"]
    return {l: out[l] for l in layers}

