"""Token/label specialization of single nodes and heads (METHODS §2–§3), from a cache.

* ``level="node", site="readout"``: node i of the readout vector isolated (others → 0 or their
  eval-set mean); predictions from :func:`nodeprobe.analysis.node_predictions` (exact upper
  envelope, no O(N·K) pass per node).
* ``level="node", site="resid", layer=l``: node i of ``blocks.{l}.hook_normalized_resid_post`` (the block output) isolated,
  then the rest of the trained readout path (logit lens;
  :func:`nodeprobe.studies.lens.resid_node_predictions`).
* ``level="head"`` (site ``z``): head (l, h) isolated — every other head of block l ablated, the
  rest of the network runs (:func:`nodeprobe.studies.lens.head_isolation_predictions`).

Per unit: accuracy, |O|, |Λ| with the learned class names, SNR, mean precision; per family of
units (all readout nodes; all heads of one block): :func:`nodeprobe.analysis.symmetry_summary`.
All metrics come from :func:`nodeprobe.analysis.unit_stats_many`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from nodeprobe.analysis import node_predictions, symmetry_summary, unit_stats_many
from nodeprobe.errors import NodeprobeError
from nodeprobe.hooks import check_mode
from nodeprobe.studies._common import check_cache_matches, check_thresholds


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

    unit: str  # "node 12" or "L3H5"
    index: tuple[int, ...]  # (i,) or (layer, head)
    acc: float
    n_outputs: int
    n_learned: int
    snr: float
    mean_precision: float
    learned: list[ClassStat] = field(default_factory=list)

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

    def find_unit(self, spec: str) -> UnitRow:
        """A unit by name: ``12`` / ``node 12`` (nodes), ``L3H5`` / ``3.5`` / ``3,5`` (heads)."""
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


def parse_unit(level: str, spec: str, n_layers: int | None = None, n_heads: int | None = None,
               d_model: int | None = None) -> tuple[int, ...]:
    """``--unit``: ``12`` / ``node 12`` → ``(12,)``; ``L3H5`` / ``3.5`` / ``3,5`` → ``(3, 5)``; range-checked
    when the sizes are given.

    Example:
        >>> parse_unit("head", "L1H3"), parse_unit("node", "7")
        ((1, 3), (7,))
    """
    s = str(spec).strip().lower().replace("node", "").strip()
    try:
        if level == "node":
            key: tuple[int, ...] = (int(s),)
        else:
            if s.startswith("l") and "h" in s:
                a, b = s[1:].split("h", 1)
            else:
                a, b = s.replace(",", ".").split(".", 1)
            key = (int(a), int(b))
    except ValueError:
        want = "a node number like 12" if level == "node" else "a head like L3H5 or 3.5"
        raise NodeprobeError(f"unit={spec}: expected {want}") from None
    if level == "node" and d_model is not None and not 0 <= key[0] < d_model:
        raise NodeprobeError(f"unit={spec}: the model has nodes 0–{d_model - 1}")
    if level == "head" and n_layers is not None and not 0 <= key[0] < n_layers:
        raise NodeprobeError(f"unit={spec}: the model has blocks 0–{n_layers - 1}")
    if level == "head" and n_heads is not None and not 0 <= key[1] < n_heads:
        raise NodeprobeError(f"unit={spec}: the model has heads 0–{n_heads - 1}")
    return key


def resolve_specialization(level: str, site: str | None, layer: int | None,
                           n_layers: int | None) -> tuple[str, list[int]]:
    """Validate ``--level/--site/--layer``; return ``(site, layers)`` (layers: the blocks studied).

    With ``n_layers=None`` only the level/site combination is checked (before a model is loaded).
    """
    if level not in ("node", "head"):
        raise NodeprobeError(f"level={level}: expected node or head")
    if site is None:
        site = "readout" if level == "node" else "z"
    if site not in ("readout", "resid", "z"):
        raise NodeprobeError(f"site={site}: expected readout, resid or z")
    if level == "head" and site != "z":
        raise NodeprobeError(f"level=head lives at site=z (head outputs), not site={site}")
    if level == "node" and site == "z":
        raise NodeprobeError("site=z holds heads: use level=head (nodes live at site=readout or resid)")
    if layer is not None and n_layers is not None and not (isinstance(layer, int) and 0 <= layer < n_layers):
        raise NodeprobeError(f"layer={layer}: the model has blocks 0–{n_layers - 1}")
    if site == "readout":
        if layer is not None:
            raise NodeprobeError("`layer` applies to site=resid or level=head, not to site=readout")
        return site, []
    if site == "resid":
        if layer is None:
            blocks = f"0–{n_layers - 1}" if n_layers is not None else "number"
            raise NodeprobeError(f"site=resid needs `layer` (a block {blocks})")
        return site, [layer]
    if layer is not None:
        return site, [layer]
    return site, list(range(n_layers)) if n_layers is not None else []


def _family(name: str, stats, names: list[str], K: int) -> FamilySummary:
    s = symmetry_summary([st.learned for st in stats], K)
    owners = sorted(s.owners.items(), key=lambda kv: (-kv[1], kv[0]))
    return FamilySummary(
        name=name, n_units=s.n_units, n_classes=K, size_hist=dict(s.size_hist), mean_size=s.mean_size,
        n_covered=s.n_covered, coverage=s.coverage, mean_jaccard=s.mean_jaccard, n_pairs=s.n_pairs,
        owners=[ClassOwners(int(k), names[k], int(c)) for k, c in owners], n_unowned=K - s.n_covered,
    )


def _rows(stats, labels: list[str], indices: list[tuple[int, ...]], names: list[str]) -> list[UnitRow]:
    rows = []
    for st, lab, ix in zip(stats, labels, indices):
        learned = [ClassStat(int(k), names[k], float(r), float(p), float(l), float(s))
                   for k, r, p, l, s in zip(st.learned, st.recall, st.precision, st.lift, st.snr_per_class)]
        rows.append(UnitRow(lab, ix, st.acc, st.n_outputs, st.n_learned, st.snr, st.mean_precision, learned))
    return rows


def specialization_report(
    cache,
    *,
    level: str = "node",
    site: str | None = None,
    layer: int | None = None,
    mode: str = "zero",
    tau_recall: float = 0.5,
    tau_lift: float = 2.0,
    min_count: int = 5,
    model=None,
    eval_set=None,
    progress: bool = False,
) -> SpecializationReport:
    """Specialization of every node (``level="node"``) or head (``level="head"``) — see the module doc.

    Args:
        cache: a :class:`nodeprobe.cache.CacheReader` (``readout`` site for the readout; ``resid`` for
            ``site="resid"``).
        model: the cached model (:class:`~nodeprobe.HookedBert`); needed for ``site="resid"`` (the
            readout path) and ``level="head"`` (forward passes), unless the cache's ``derived/``
            already holds those predictions.
        eval_set: the cached evaluation set; needed for ``level="head"`` (same condition).
        layer: ``site="resid"``: the block whose output is studied (required); ``level="head"``:
            one block (default: every block).
    """
    check_mode(mode)
    check_thresholds(tau_recall, tau_lift, min_count)
    site, layers = resolve_specialization(level, site, layer, cache.n_layers)
    check_cache_matches(cache, eval_set)
    y = cache.targets()
    K = cache.n_classes
    names = cache.class_names
    if y.numel() == 0:
        raise NodeprobeError(f"cache {cache.path}: no items")
    th = dict(tau_recall=tau_recall, tau_lift=tau_lift, min_count=min_count)
    families: list[FamilySummary] = []
    if level == "node":
        if site == "readout":
            cache.check_site("readout")
            X = cache.readout()
            mu = cache.means("readout") if mode == "mean" else None
            preds = node_predictions(cache.W, cache.b, X, mode, mu).T.contiguous()
            fam_name = "readout nodes"
        else:
            cache.check_site("resid")
            l = layers[0]
            def compute():
                from nodeprobe.studies.lens import resid_node_predictions

                if model is None:
                    raise NodeprobeError("site=resid needs the model (the readout path after block l)")
                X = cache.resid(l + 1)
                mu = cache.means(f"resid.{l + 1}") if mode == "mean" else None
                return {"preds": resid_node_predictions(model, X, mode, mu, progress=progress).T.contiguous()}

            preds = cache.derived(f"resid-nodes-{mode}-L{l}", compute)["preds"]
            fam_name = f"nodes of block {l}"
        stats = unit_stats_many(y, preds, K, **th)
        units = _rows(stats, [f"node {i}" for i in range(len(stats))], [(i,) for i in range(len(stats))], names)
        families.append(_family(fam_name, stats, names, K))
    else:
        per_layer = _head_predictions(cache, model, eval_set, layers, mode, progress)
        units = []
        all_stats = []
        for l in layers:
            stats = unit_stats_many(y, per_layer[l], K, **th)
            all_stats.extend(stats)
            H = len(stats)
            units.extend(_rows(stats, [f"L{l}H{h}" for h in range(H)], [(l, h) for h in range(H)], names))
            families.append(_family(f"heads of block {l}", stats, names, K))
        if len(layers) > 1:
            families.append(_family("all heads", all_stats, names, K))
    ranking = sorted(range(len(units)), key=lambda q: (-units[q].n_learned, -units[q].acc, q))
    return SpecializationReport(
        task=cache.task, level=level, site=site, layers=layers, mode=mode, tau_recall=float(tau_recall),
        tau_lift=float(tau_lift), min_count=int(min_count), n_items=int(y.numel()), n_classes=K,
        baseline_accuracy=float(cache.manifest.get("accuracy") or (cache.preds() == y).double().mean()),
        units=units, ranking=ranking, families=families,
        settings={"cache": str(cache.path), "model_fingerprint": cache.model_fingerprint,
                  "eval_fingerprint": cache.eval_fingerprint, "source": cache.manifest["source"],
                  "seed": cache.manifest["seed"]},
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

