"""The PNG figures of each report, shared by the CLI (``--plot DIR``) and ``reproduce``.

Each function takes a report dataclass, a folder, a label for titles and a file-name prefix, and
returns the paths written (empty without matplotlib).

Example:
    >>> cooperation(rep, Path("plots"), "fewrel")          # doctest: +SKIP
    [PosixPath('plots/cooperation_precision.png'), PosixPath('plots/cooperation_gain.png'), PosixPath('plots/cooperation_retained.png')]
"""

from __future__ import annotations

from pathlib import Path

from nodeprobe.render.plots import plot_bars, plot_curves, plot_scatter


def _kept(*paths) -> list[Path]:
    return [p for p in paths if p is not None]


def specialization(rep, d: Path, label: str, prefix: str = "specialization") -> list[Path]:
    """|Λ| histogram and owners per class of the last unit family."""
    fam = rep.families[-1]
    sizes = list(range(max(fam.size_hist, default=0) + 1))
    out = [plot_bars([str(s) for s in sizes], [fam.size_hist.get(s, 0) for s in sizes], d / f"{prefix}_lambda_hist.png",
                     f"|Λ| of {fam.name} ({label})", "units")]
    own = fam.owners[:40]
    if own:
        out.append(plot_bars([o.name[:18] for o in own], [o.n_units for o in own], d / f"{prefix}_owners.png",
                             f"Units that learned each class — {fam.name} ({label})", "units"))
    out.append(_snp_plot(rep, d, label, prefix))
    out.append(_along_plot(rep, d, label, prefix))
    return _kept(*out)


def _along_plot(rep, d: Path, label: str, prefix: str):
    """Along the blocks (METHODS v2 §3): mean SNR (units with Λ ≠ ∅) and mean |Λ| per block, ρ in the legend."""
    trends = getattr(rep, "trends", None) or []
    if not trends:
        return None
    series = {}
    for t in trends:
        nan = float("nan")
        rs = "—" if t.rho_snr is None else f"{t.rho_snr:.2f}"
        rz = "—" if t.rho_size is None else f"{t.rho_size:.2f}"
        series[f"{t.kind}: mean SNR (ρ = {rs})"] = (t.layers, [nan if v is None else v for v in t.mean_snr])
        series[f"{t.kind}: mean |Λ| × 10 (ρ = {rz})"] = (t.layers, [10 * v for v in t.mean_size])
    return plot_curves(series, d / f"{prefix}_along_blocks.png", f"Along the blocks — {label}", "block", "value")


SNP_MAX_UNITS = 256  # label × unit plots: the last block's units when a report has more


def _snp_plot(rep, d: Path, label: str, prefix: str):
    """The label × unit recall matrix (the SNP diagonal), units sorted by their best label."""
    units = [u for u in rep.units if getattr(u, "recall", None) is not None]
    names = getattr(rep, "class_names", None)
    if not units or not names:
        return None
    if len(units) > SNP_MAX_UNITS and rep.layers:
        last = rep.layers[-1]
        units = [u for u in units if len(u.index) == 2 and u.index[0] == last] or units
    units = units[:SNP_MAX_UNITS]
    from nodeprobe.render.plots import plot_label_unit

    K = len(units[0].recall)
    best = [max(range(K), key=lambda k: (u.recall[k], -k)) for u in units]
    order = sorted(range(len(units)), key=lambda q: (best[q], -units[q].recall[best[q]], q))
    matrix = [[units[q].recall[k] for q in order] for k in range(K)]
    return plot_label_unit(matrix, names, [units[q].unit for q in order], d / f"{prefix}_snp.png",
                           f"Recall of each label by each unit (SNP diagonal) — {label}")


def apt(rep, d: Path, prefix: str = "apt") -> list[Path]:
    """APT vs frequency (scatter + binned means), ⟨APT⟩ and clusters along blocks."""
    import numpy as np

    toks = [t for t in rep.tokens if t.corpus_count > 0]
    centers = [float(np.sqrt(b.lo * b.hi)) for b in rep.bins if b.mean_apt is not None]
    means = [b.mean_apt for b in rep.bins if b.mean_apt is not None]
    rho = rep.spearman_rho if rep.spearman_rho is not None else float("nan")
    out = [plot_scatter([t.corpus_count for t in toks], [t.apt for t in toks], d / f"{prefix}_vs_frequency.png",
                        f"APT vs corpus frequency (ρ = {rho:.2f})", "corpus count", "APT", logx=True,
                        line=(centers, means), line_label="binned mean")]
    x = [b.stage for b in rep.blocks]
    series = {"logit lens ⟨APT⟩": (x, [b.mean_apt if b.mean_apt is not None else float("nan") for b in rep.blocks])}
    if rep.probe:
        series["probe ⟨APT⟩"] = (x, [b.probe_mean_apt if b.probe_mean_apt is not None else float("nan")
                                     for b in rep.blocks])
    out.append(plot_curves(series, d / f"{prefix}_along_blocks.png", "⟨APT⟩ along blocks (0 = embeddings)",
                           "stage", "⟨APT⟩"))
    out.append(plot_curves({"clusters": (x, [b.n_clusters for b in rep.blocks])}, d / f"{prefix}_clusters_along_blocks.png",
                           "Strong-match clusters along blocks", "stage", "clusters"))
    return _kept(*out)


def cooperation(rep, d: Path, label: str, prefix: str = "cooperation") -> list[Path]:
    """Accuracy, mean precision P and Rg = 1/|O| against n (``<prefix>_precision.png``); gains G
    and G∪ against n, measured and null model (``<prefix>_gain.png``); retained recall Rt against
    its random-guess reference Rg, measured and null, with the crossover n* (``<prefix>_retained.png``)."""
    nan = float("nan")
    n = [r.n for r in rep.rows]
    null_rows = getattr(rep, "null_rows", None) or []
    nn = [r.n for r in null_rows]
    val = lambda v: nan if v is None else v  # noqa: E731
    star = rep.n_star
    cross = f"n* = {star}" if star is not None else "no crossover in the grid"
    a = plot_curves({"accuracy": (n, [r.acc for r in rep.rows]), "P (mean precision)": (n, [r.precision for r in rep.rows]),
                     "Rg = 1/|O| (random guess)": (n, [r.inv_outputs for r in rep.rows])},
                    d / f"{prefix}_precision.png",
                    f"Random node sets ({label}); v1 min P at n = {getattr(rep, 'p_min_n', '—')}", "nodes n", "",
                    logx=True, errors={"accuracy": [r.acc_std for r in rep.rows],
                                       "P (mean precision)": [r.precision_std for r in rep.rows]})
    gain = {"G = |Λ_S| − Σ|Λ_i|": (n, [r.gain for r in rep.rows]),
            "G∪ = |Λ_S| − |∪Λ_i|": (n, [r.union_gain for r in rep.rows]),
            "|Λ_S|": (n, [r.n_learned for r in rep.rows])}
    errs = {"G = |Λ_S| − Σ|Λ_i|": [r.gain_std for r in rep.rows],
            "G∪ = |Λ_S| − |∪Λ_i|": [r.union_gain_std for r in rep.rows],
            "|Λ_S|": [r.n_learned_std for r in rep.rows]}
    if null_rows:
        gain["G, null model"] = (nn, [r.gain for r in null_rows])
        gain["G∪, null model"] = (nn, [r.union_gain for r in null_rows])
        errs["G, null model"] = [r.gain_std for r in null_rows]
    b = plot_curves(gain, d / f"{prefix}_gain.png", f"Cooperation gain ({label}): measured vs null", "nodes n",
                    "classes", logx=True, errors=errs)
    ret = {"Rt (retained recall)": (n, [val(getattr(r, "retained_recall", None)) for r in rep.rows]),
           "Rg = 1/|O| (random guess)": (n, [r.inv_outputs for r in rep.rows])}
    if null_rows:
        ret["Rt, null model"] = (nn, [val(r.retained_recall) for r in null_rows])
        ret["Rg, null model"] = (nn, [r.inv_outputs for r in null_rows])
    c = plot_curves(ret, d / f"{prefix}_retained.png", f"Retained recall ({label}): {cross}", "nodes n", "recall",
                    logx=True)
    return _kept(a, b, c)


def hull(rep, d: Path, label: str, prefix: str = "hull") -> list[Path]:
    """Achieved accuracy against the data-range bound (one bar chart for a single node set)."""
    if rep.kind == "set":
        r = rep.rows[0]
        return _kept(plot_bars(["acc", "UB data", "UB ℝⁿ"], [r.acc, r.ub_data or 0.0, r.ub_unbounded or 0.0],
                               d / f"{prefix}_set.png", f"Node set ({label}): achieved vs bound", "accuracy"))
    rows = [r for r in rep.rows if r.ub_data is not None]
    what = "single nodes" if rep.kind == "single" else "random node sets"
    return _kept(plot_scatter([r.ub_data for r in rows], [r.acc for r in rows], d / f"{prefix}_{rep.kind}.png",
                              f"Achieved accuracy vs data-range bound ({what}, {label})", "UB (data range)", "accuracy",
                              diagonal=True))


def blocks(rep, d: Path, label: str, prefix: str = "blocks") -> list[Path]:
    """Accuracy along blocks (logit lens and probe)."""
    x = [r.stage for r in rep.rows]
    series = {"logit lens": (x, [r.lens_accuracy for r in rep.rows])}
    if rep.probe:
        series["probe"] = (x, [r.probe_accuracy for r in rep.rows])
    return _kept(plot_curves(series, d / f"{prefix}_accuracy.png", f"Accuracy along blocks ({label}; 0 = embeddings)",
                             "stage", "accuracy"))


def track(rep, d: Path, prefix: str = "track") -> list[Path]:
    """Accuracy/⟨APT⟩ and the order parameters (mean |Λ|, Jaccard overlap, coverage) over training."""
    x = [st.step + 1 for st in rep.steps]
    fams = [("nodes", [st.nodes for st in rep.steps])]
    if rep.steps[0].heads is not None:
        fams.append(("heads", [st.heads for st in rep.steps]))
    perf = {"accuracy": (x, [st.accuracy for st in rep.steps])}
    if rep.task == "mlm":
        perf["⟨APT⟩"] = (x, [st.mean_apt for st in rep.steps])
    out = [plot_curves(perf, d / f"{prefix}_accuracy.png", f"accuracy over training ({rep.task})", "step + 1", "",
                       logx=True)]
    for attr, label in (("mean_size", "mean |Λ| per unit"), ("mean_jaccard", "mean Jaccard overlap"),
                        ("coverage", "coverage |∪Λ| / K")):
        out.append(plot_curves({f: (x, [getattr(p, attr) for p in ps]) for f, ps in fams}, d / f"{prefix}_{attr}.png",
                               f"{label} over training", "step + 1", label, logx=True))
    return _kept(*out)


def head_study(study, d: Path, prefix: str = "") -> list[Path]:
    """Separator attention share per head and head uniqueness per block."""
    from nodeprobe.render.plots import plot_head_grid

    pre = f"{prefix}_" if prefix else ""
    a = plot_head_grid(study.separators.share, d / f"{pre}separator_share.png", "attention share on separators",
                       cbar="share")
    b = plot_bars([str(b.layer) for b in study.similarity.blocks], [b.uniqueness for b in study.similarity.blocks],
                  d / f"{pre}head_uniqueness.png", "head uniqueness per block (distinct top tokens / H)", "uniqueness")
    return _kept(a, b)
