"""A readout report on an SAE's latents and, side by side, on the readout nodes (``--sae``).

:func:`sae_comparison` runs one report function (``specialization``, ``cooperation`` or ``hull``)
twice on the same cache: on :class:`nodeprobe.analysis.sae.LatentView` (the SAE's latents as units,
readout ``W_eff = W W_decᵀ``, ``b_eff = W b_dec + b``) and on the cache itself (the raw readout
nodes), and adds per side the single-unit summary of METHODS §3 (mean |Λ|, coverage, mean Jaccard,
units with Λ ≠ ∅, accuracies) and the SAE's fidelity (explained variance, readout accuracy on x̂
against x: the reconstruction error the latent side drops).

Example:
    >>> cmp = sae_comparison(cache, load_sae("runs/sae/readout"), "specialization")   # doctest: +SKIP
    >>> cmp.summary["sae"].mean_size, cmp.summary["nodes"].mean_size                  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nodeprobe.analysis import node_predictions, symmetry_summary, unit_stats_many
from nodeprobe.analysis.sae import LatentView, SAEFidelity, SAEWeights
from nodeprobe.errors import NodeprobeError
from nodeprobe.hooks import check_mode
from nodeprobe.studies._common import check_thresholds

COMMANDS = ("specialization", "cooperation", "hull")


@dataclass
class UnitSummary:
    """Single units of one side (latents or nodes) at the readout, METHODS §3."""

    units: str  # "SAE latents" | "readout nodes"
    n_units: int
    n_nonempty: int  # units with Λ ≠ ∅
    mean_size: float  # mean |Λ|
    n_covered: int  # |∪ Λ|
    coverage: float  # |∪ Λ| / K
    mean_jaccard: float  # over pairs, both-empty pairs excluded (as the specialization report)
    n_pairs: int
    mean_acc: float  # mean accuracy of a single isolated unit
    max_acc: float
    accuracy: float  # the trained readout with every unit kept: on x̂ (latents) or x (nodes)


@dataclass
class SAEComparison:
    """One report on the latents (``sae``) and on the nodes (``nodes``), with their summaries."""

    command: str
    sae: object  # the report dataclass of ``command`` on the latents
    nodes: object  # the same report on the readout nodes
    summary: dict[str, UnitSummary]  # "sae", "nodes"
    fidelity: SAEFidelity
    sae_info: dict
    mode: str
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The JSON ``result``: ``sae`` and ``nodes`` are the two reports in their own schema."""
        return {"command": self.command, "mode": self.mode, "sae_info": self.sae_info, "fidelity": self.fidelity,
                "summary": self.summary, "sae": self.sae, "nodes": self.nodes}


def _summary(name: str, learned: list, accs: list[float], K: int, accuracy: float) -> UnitSummary:
    s = symmetry_summary(learned, K)
    return UnitSummary(units=name, n_units=s.n_units, n_nonempty=sum(1 for lam in learned if len(lam)),
                       mean_size=s.mean_size, n_covered=s.n_covered, coverage=s.coverage, mean_jaccard=s.mean_jaccard,
                       n_pairs=s.n_pairs, mean_acc=float(np.mean(accs)) if accs else 0.0,
                       max_acc=float(np.max(accs)) if accs else 0.0, accuracy=float(accuracy))


def _single_units(cache, mode: str, th: dict) -> tuple[list, list[float]]:
    """Λ and accuracy of every single unit at the readout of ``cache`` (a reader or a view)."""
    X = cache.readout()
    mu = cache.means("readout") if mode == "mean" else None
    preds = node_predictions(cache.W, cache.b, X, mode, mu).T.contiguous()
    stats = unit_stats_many(cache.targets(), preds, cache.n_classes, **th)
    return [st.learned for st in stats], [st.acc for st in stats]


def _relabel(rep) -> None:
    """Name the latent side's units ``latent i`` and its family ``SAE latents`` (specialization)."""
    for u in rep.units:
        u.unit = u.unit.replace("node ", "latent ", 1)
    for f in rep.families:
        f.name = "SAE latents"


def _report_fn(command: str):
    """The report function of ``command`` (imported when needed)."""
    if command == "specialization":
        from nodeprobe.studies.specialization import specialization_report as fn
    elif command == "cooperation":
        from nodeprobe.studies.cooperation import cooperation_report as fn
    else:
        from nodeprobe.studies.hull import hull_report as fn
    return fn


def _sides(command: str, rep_sae, rep_nodes, single_units, fid, K: int, nodes_name: str) -> dict:
    """The two sides' single-unit summaries: from the specialization reports themselves, or
    (cooperation, hull) from ``single_units()`` = (latent side, node side)."""
    if command == "specialization":
        _relabel(rep_sae)
        sides = {k: ([tuple(c.cls for c in u.learned) for u in r.units], [u.acc for u in r.units])
                 for k, r in (("sae", rep_sae), ("nodes", rep_nodes))}
    else:
        sae_side, node_side = single_units()
        sides = {"sae": sae_side, "nodes": node_side}
    return {"sae": _summary("SAE latents", *sides["sae"], K, fid.acc_xhat),
            "nodes": _summary(nodes_name, *sides["nodes"], K, fid.acc_x)}


def sae_comparison(cache, sae: SAEWeights, command: str, *, mode: str = "zero", tau_recall: float = 0.5,
                   tau_lift: float = 2.0, min_count: int = 5, **kw) -> SAEComparison:
    """Run ``command``'s report on the SAE latents and on the readout nodes of ``cache``.

    Args:
        cache: a :class:`nodeprobe.cache.CacheReader` with the ``readout`` site.
        sae: :func:`nodeprobe.analysis.sae.load_sae`'s weights; its ``hook_name`` must be the readout
            site and ``d_in`` the cache's d_model (:func:`~nodeprobe.analysis.sae.check_readout_sae`).
        command: ``specialization`` (node level, site readout), ``cooperation`` or ``hull``.
        kw: the report function's other arguments, the same for both sides (``R``, ``seed``,
            ``grid``; ``nodes``/``n``, ``top``, ``max_lp``); with ``nodes`` the set must exist on
            both sides.
    """
    if command not in COMMANDS:
        raise NodeprobeError(f"command={command}: expected one of {', '.join(COMMANDS)}")
    check_mode(mode)
    check_thresholds(tau_recall, tau_lift, min_count)
    site = kw.get("site") or "readout"
    if command == "specialization" and kw.get("level", "node") != "node":
        raise NodeprobeError("`sae`: its latents are nodes (level=node)")
    if site != "readout":
        return _block_comparison(cache, sae, command, site, mode, dict(tau_recall=tau_recall, tau_lift=tau_lift,
                                                                       min_count=min_count), kw)
    cache.check_site("readout")
    view = LatentView(cache, sae)
    th = dict(tau_recall=tau_recall, tau_lift=tau_lift, min_count=min_count)
    fn = _report_fn(command)
    rep_sae = fn(view, mode=mode, **th, **kw)
    rep_nodes = fn(cache, mode=mode, **th, **kw)
    fid = view.fidelity()
    summary = _sides(command, rep_sae, rep_nodes, lambda: (_single_units(view, mode, th), _single_units(cache, mode, th)),
                     fid, cache.n_classes, "readout nodes")
    return SAEComparison(command=command, sae=rep_sae, nodes=rep_nodes, summary=summary, fidelity=fid,
                         sae_info=sae.describe(), mode=mode,
                         settings={"cache": str(cache.path), "model_fingerprint": cache.model_fingerprint,
                                   "eval_fingerprint": cache.eval_fingerprint})


def _site_units(sr, mode: str, th: dict) -> tuple[list, list[float]]:
    """Λ and accuracy of every single unit of a :class:`~nodeprobe.studies.units.SiteReadout`."""
    stats = unit_stats_many(sr.y_local, sr.node_predictions(mode), sr.n_local, **th)
    return [st.learned for st in stats], [st.acc for st in stats]


def _block_comparison(cache, sae: SAEWeights, command: str, site: str, mode: str, th: dict, kw: dict) -> SAEComparison:
    """:func:`sae_comparison` at a block site (``resid``/``mlp`` of ``layer``): both sides under the
    site's block readout (METHODS v2 §2), the latents through ``W_s (W_decᵀ f + b_dec) + b_s``."""
    from nodeprobe.analysis.sae import check_site_sae, sae_fidelity
    from nodeprobe.studies.units import ReadoutSettings, latent_site_readout, site_readout

    layer = kw.get("layer")
    sr = site_readout(cache, site, layer, train=kw.get("train"), settings=kw.get("readout_settings") or ReadoutSettings(),
                      device=kw.get("device", "cpu"))
    check_site_sae(sae, site, layer, sr.d)
    lat = latent_site_readout(sr, sae)
    fn = _report_fn(command)
    rep_sae = fn(cache, mode=mode, sae=sae, **th, **kw)
    rep_nodes = fn(cache, mode=mode, **th, **kw)
    fid = sae_fidelity(sr.W, sr.b, sr.X, sr.y_local, sae, F=lat.X, n_classes=sr.n_local)
    summary = _sides(command, rep_sae, rep_nodes, lambda: (_site_units(lat, mode, th), _site_units(sr, mode, th)),
                     fid, cache.n_classes, f"{site} nodes of block {layer}")
    return SAEComparison(command=command, sae=rep_sae, nodes=rep_nodes, summary=summary, fidelity=fid,
                         sae_info=sae.describe(), mode=mode,
                         settings={"cache": str(cache.path), "model_fingerprint": cache.model_fingerprint,
                                   "eval_fingerprint": cache.eval_fingerprint, "site": site, "layer": layer,
                                   "block_readout": sr.describe()})
