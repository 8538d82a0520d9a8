"""Rich views of the report dataclasses (:mod:`nodeprobe.studies`): a one-screen summary first,
detail on request (``top`` rows, one ``unit``).  Views format and print; they compute nothing.

Example:
    >>> render_hull(hull_report(cache, n=1), top=5)     # doctest: +SKIP
"""

from __future__ import annotations

from rich.table import Table

from nodeprobe.render.tables import console, fmt, kv_table, signed, sparkline


def bar(value: float | None, vmax: float, width: int = 20) -> str:
    """A horizontal bar of ``width`` cells for ``value / vmax`` (eighth-cell resolution).

    Example:
        >>> bar(1, 2, 4)
        '██'
    """
    if value is None or not vmax or value != value:
        return ""
    cells = max(0.0, min(1.0, value / vmax)) * width
    full = int(cells)
    part = int(round((cells - full) * 8))
    s = "█" * full + ("" if part == 0 or full >= width else " ▏▎▍▌▋▊▉"[part])
    return s


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def _hist_line(hist: dict) -> str:
    """``{0: 10, 2: 3}`` → sparkline over sizes 0…max plus the counts."""
    if not hist:
        return ""
    top = max(int(k) for k in hist)
    counts = [hist.get(s, hist.get(str(s), 0)) for s in range(top + 1)]
    return f"{sparkline(counts)}  " + " ".join(f"{s}:{c}" for s, c in enumerate(counts) if c)


def _names(names: list[str], limit: int = 6) -> str:
    if not names:
        return "—"
    s = ", ".join(names[:limit])
    return s + (f", … (+{len(names) - limit})" if len(names) > limit else "")


# ---------------------------------------------------------------------- cache
def render_cache(info: dict, built: bool) -> None:
    """Where the cache is and what it holds."""
    rows = [("cache", info["path"]), ("status", "built" if built else "reused (fingerprints match)"),
            ("task", info["task"]), ("items", info["n_items"]), ("sites", ", ".join(info["sites"])),
            ("shards", info["n_shards"]), ("dtype", info["dtype"]), ("size", f"{info['bytes'] / 2**20:.1f} MiB"),
            ("model accuracy", info.get("accuracy")), ("model fingerprint", info["model_fingerprint"]),
            ("eval-set fingerprint", info["eval_fingerprint"])]
    console.print(kv_table("Activation cache", rows))
    t = Table(title="Tensors", title_justify="left")
    t.add_column("key")
    t.add_column("shape", justify="right")
    for k, shape in info["shapes"].items():
        t.add_row(k, " × ".join(str(s) for s in shape))
    console.print(t)


# ---------------------------------------------------------------------- specialization
def _family_table(rep) -> Table:
    t = Table(title="Symmetry breaking per family (METHODS §3)", title_justify="left")
    for c, j in (("family", "left"), ("units", "right"), ("mean |Λ|", "right"), ("|Λ| distribution", "left"),
                 ("coverage", "right"), ("mean Jaccard", "right")):
        t.add_column(c, justify=j)
    for f in rep.families:
        t.add_row(f.name, str(f.n_units), f"{f.mean_size:.2f}", _hist_line(f.size_hist),
                  f"{f.n_covered}/{f.n_classes} ({_pct(f.coverage)})", fmt(f.mean_jaccard) if f.n_pairs else "—")
    return t


def _owners_table(fam, top: int) -> Table:
    t = Table(title=f"Owners per class — {fam.name} (units that learned it; {fam.n_unowned} classes unowned)",
              title_justify="left")
    t.add_column("class")
    t.add_column("owners", justify="right")
    t.add_column("")
    vmax = max((o.n_units for o in fam.owners), default=1)
    for o in fam.owners[:top]:
        t.add_row(o.name, str(o.n_units), bar(o.n_units, vmax))
    return t


def _unit_table(rep, top: int) -> Table:
    what = "nodes" if rep.level == "node" else "heads"
    t = Table(title=f"Top {min(top, len(rep.units))} {what} (most learned classes, then accuracy)", title_justify="left")
    for c, j in (("unit", "left"), ("acc", "right"), ("|O|", "right"), ("|Λ|", "right"), ("SNR", "right"),
                 ("learned classes Λ", "left")):
        t.add_column(c, justify=j)
    for q in rep.ranking[:top]:
        u = rep.units[q]
        t.add_row(u.unit, f"{u.acc:.3f}", str(u.n_outputs), str(u.n_learned), fmt(u.snr), _names(u.learned_names))
    return t


def render_unit(u) -> None:
    """One unit: its numbers and every learned class."""
    console.print(kv_table(f"Unit {u.unit}", [("accuracy", u.acc), ("|O| outputs", u.n_outputs),
                                              ("|Λ| learned", u.n_learned), ("SNR", u.snr),
                                              ("mean precision over O", u.mean_precision)]))
    if not u.learned:
        console.print("No learned class (Λ is empty).")
        return
    t = Table(title="Learned classes", title_justify="left")
    for c in ("class", "recall", "precision", "lift", "SNR"):
        t.add_column(c, justify="left" if c == "class" else "right")
    for c in u.learned:
        t.add_row(c.name, f"{c.recall:.3f}", f"{c.precision:.3f}", f"{c.lift:.2f}", fmt(c.snr))
    console.print(t)


def render_specialization(rep, top: int = 10, unit=None) -> None:
    """Summary, family table, owners per class, top units; ``unit`` (a UnitRow) for detail."""
    blocks = f"block {rep.layers[0]}" if len(rep.layers) == 1 else "every block"
    head_unit = getattr(rep, "head_unit", None)
    if rep.site == "readout":
        where = "readout"
    elif rep.level == "head" and head_unit == "network":
        where = f"z, heads isolated in the running network, {blocks} (v1)"
    elif rep.level == "head":
        where = f"attn, each head the node group of its d_head coordinates under the block readout, {blocks}"
    elif rep.site == "resid" and rep.settings.get("resid_readout") == "lens":
        where = f"{blocks} output (logit lens, v1)"
    else:
        where = f"{rep.site} of {blocks}, under the block readout"
    rows = [("items N", rep.n_items), ("classes K", rep.n_classes), ("model accuracy", rep.baseline_accuracy),
            ("isolation", rep.mode), ("thresholds", f"τ_r={rep.tau_recall:g}  τ_ℓ={rep.tau_lift:g}  n_min={rep.min_count}"),
            ("units", len(rep.units)), ("acc of units", sparkline(sorted(u.acc for u in rep.units)[:: max(1, len(rep.units) // 48)]))]
    for ro in getattr(rep, "readouts", [])[:8]:
        rows.append((f"block readout {ro['site']} L{ro['layer']}",
                     f"held-out accuracy {ro['accuracy']:.3f} (trained on the {ro['trained_on']})"))
    console.print(kv_table(f"Specialization of {rep.level}s at {where} ({rep.task})", rows))
    console.print(_family_table(rep))
    for tr in getattr(rep, "trends", []):
        t = Table(title=f"Along the blocks — {tr.kind} (Spearman ρ against the block index)", title_justify="left")
        for c in ("block", "mean |Λ|", "mean SNR (Λ ≠ ∅)", "coverage", "Jaccard"):
            t.add_column(c, justify="right")
        for q, l in enumerate(tr.layers):
            t.add_row(str(l), fmt(tr.mean_size[q]), fmt(tr.mean_snr[q]), fmt(tr.coverage[q]), fmt(tr.mean_jaccard[q]))
        t.add_row("ρ", fmt(tr.rho_size), fmt(tr.rho_snr), "", "")
        console.print(t)
    console.print(_owners_table(rep.families[-1], top))
    console.print(_unit_table(rep, top))
    if unit is not None:
        render_unit(unit)


# ---------------------------------------------------------------------- blocks
def render_blocks(rep) -> None:
    """Accuracy along blocks: logit lens and probe."""
    console.print(kv_table(f"Accuracy along blocks ({rep.task})",
                           [("items N", rep.n_items), ("model accuracy", rep.baseline_accuracy),
                            ("probe", "off" if rep.probe is None else
                             f"trained on {rep.probe['fraction']:.0%} of the items, seed {rep.probe['seed']}")]))
    t = Table(title_justify="left")
    for c in ("stage", "logit lens", "", "probe"):
        t.add_column(c, justify="left" if c in ("stage", "") else "right")
    for r in rep.rows:
        t.add_row(r.name, f"{r.lens_accuracy:.3f}", bar(r.lens_accuracy, 1.0), fmt(r.probe_accuracy))
    console.print(t)


# ---------------------------------------------------------------------- APT
def render_apt(rep, top: int = 10) -> None:
    """⟨APT⟩ summary, APT by frequency bin, along blocks, clusters, best/worst tokens."""
    console.print(kv_table(
        "Accuracy per token (METHODS §4)",
        [("modified positions N", rep.n_items), ("tokens with ≥ %d occurrences" % rep.min_count, rep.n_tokens),
         ("⟨APT⟩ (mean over tokens)", rep.mean_apt), ("occurrence-weighted APT", rep.weighted_apt),
         ("accuracy (all items)", rep.accuracy),
         ("Spearman ρ (APT vs corpus count)", f"{fmt(rep.spearman_rho)}  (p={fmt(rep.spearman_p)})"),
         ("tokens left out (corpus count 0)", rep.n_zero_count)],
    ))
    t = Table(title="APT by corpus frequency (log10 bins)", title_justify="left")
    for c in ("corpus count", "tokens", "mean APT", ""):
        t.add_column(c, justify="left" if c in ("corpus count", "") else "right")
    vmax = max((b.mean_apt for b in rep.bins if b.mean_apt is not None), default=1.0) or 1.0
    for b in rep.bins:
        t.add_row(f"{b.lo:,.0f} – {b.hi:,.0f}", str(b.n_tokens), fmt(b.mean_apt), bar(b.mean_apt, vmax))
    console.print(t)
    t = Table(title="Along blocks (logit lens" + (", probe" if rep.probe else "") + ")", title_justify="left")
    cols = ["stage", "⟨APT⟩", "accuracy", "ρ"] + (["probe ⟨APT⟩", "probe acc"] if rep.probe else []) + \
        ["clusters", "cluster sizes", "largest cluster"]
    for c in cols:
        t.add_column(c, justify="left" if c in ("stage", "cluster sizes", "largest cluster") else "right")
    for b in rep.blocks:
        row = [b.name, fmt(b.mean_apt), f"{b.accuracy:.3f}", fmt(b.spearman_rho)]
        if rep.probe:
            row += [fmt(b.probe_mean_apt), fmt(b.probe_accuracy)]
        row += [str(b.n_clusters), _hist_line(b.cluster_sizes), _names(b.largest_clusters[0] if b.largest_clusters else [], 8)]
        t.add_row(*row)
    console.print(t)
    for title, idx in (("Best tokens", rep.best), ("Worst tokens", rep.worst)):
        t = Table(title=f"{title} (top {len(idx)})", title_justify="left")
        for c in ("token", "occurrences", "APT", "corpus count"):
            t.add_column(c, justify="left" if c == "token" else "right")
        for q in idx:
            tk = rep.tokens[q]
            t.add_row(tk.token, str(tk.count), f"{tk.apt:.3f}", f"{tk.corpus_count:,}")
        console.print(t)
    if rep.blocks and rep.blocks[-1].largest_clusters:
        t = Table(title=f"Largest strong-match clusters at {rep.blocks[-1].name}", title_justify="left")
        t.add_column("size", justify="right")
        t.add_column("tokens")
        for c in rep.blocks[-1].largest_clusters[:top]:
            t.add_row(str(len(c)), _names(c, 12))
        console.print(t)


# ---------------------------------------------------------------------- cooperation
def _crossover_line(n_star, rows) -> str:
    """METHODS v2 §5 crossover: "n* = X (…)" or "no crossover in the grid (…)" — never n* = 1."""
    if n_star is not None:
        return f"n* = {n_star} (lowest mean retained recall, interior)"
    rt = [(r.retained_recall, r.n) for r in rows or [] if r.retained_recall is not None]
    if not rt:
        return "no crossover in the grid (retained recall undefined: no set's members learned a class)"
    return f"no crossover in the grid (mean retained recall lowest at n = {min(rt)[1]})"


def _opt(v, digits: int = 3) -> str:
    return "—" if v is None or v != v else f"{v:.{digits}f}"


def render_cooperation(rep) -> None:
    """The crossover (v2: lowest mean retained recall, interior), first/last n with G > 0, the null
    model's figures beside, and the per-n table (mean ± std over R node sets)."""
    site = getattr(rep, "site", "readout")
    layer = getattr(rep, "layer", None)
    where = site if layer is None else f"{site}, block {layer}"
    null = getattr(rep, "null", None)
    null_rows = getattr(rep, "null_rows", None)
    p_min = getattr(rep, "p_min_n", None)
    kv = [("items N", rep.n_items), ("classes K", rep.n_classes), (f"nodes d ({where})", getattr(rep, "d", rep.d_model)),
          ("node sets per n", rep.R), ("seed", rep.seed), ("isolation", rep.mode)]
    ro = getattr(rep, "readout", None)
    if ro and site != "readout":
        kv.append(("block readout", f"{ro.get('trained_on')}, accuracy {_opt(ro.get('accuracy'))}"))
    kv += [("crossover", _crossover_line(rep.n_star, rep.rows)),
           ("first / last n with mean G > 0", f"{fmt(rep.first_positive_gain)} / {fmt(getattr(rep, 'last_positive_gain', None))}"),
           ("retired v1 figure: n with lowest mean P", p_min)]
    if null is not None:
        kv += [("null model (columns permuted per class)", _crossover_line(null.get("n_star"), null_rows)),
               ("null: first / last n with mean G > 0",
                f"{fmt(null.get('first_positive_gain'))} / {fmt(null.get('last_positive_gain'))}")]
        if rep.rows and null_rows:
            kv.append(("max mean G: measured / null", f"{max(r.gain for r in rep.rows):+.2f} / "
                                                      f"{max(r.gain for r in null_rows):+.2f}"))
    kv += [("single nodes: |Λ_i| distribution", _hist_line(rep.single_learned_hist)),
           ("classes learned by some single node", f"{rep.n_single_covered}/{rep.n_classes}")]
    console.print(kv_table(f"Cooperation of random node sets at {where} (METHODS v2 §5, {rep.task})", kv))
    t = Table(title_justify="left")
    for c in ("n", "acc", "|O|", "|Λ_S|", "Σ|Λ_i|", "U", "P", "Rt", "Rg", "G", "G∪"):
        t.add_column(c, justify="right")
    for r in rep.rows:
        t.add_row(str(r.n), f"{r.acc:.3f}±{r.acc_std:.3f}", f"{r.n_outputs:.1f}", f"{r.n_learned:.1f}±{r.n_learned_std:.1f}",
                  f"{r.sum:.1f}", f"{r.union:.1f}", f"{r.precision:.3f}", _opt(getattr(r, "retained_recall", None)),
                  f"{r.inv_outputs:.3f}", signed(r.gain, 1), signed(r.union_gain, 1))
    console.print(t)
    if null_rows:
        t = Table(title="Null model: readout columns permuted among nodes per class", title_justify="left")
        for c in ("n", "acc", "|O|", "|Λ_S|", "Σ|Λ_i|", "Rt", "Rg", "G", "G∪"):
            t.add_column(c, justify="right")
        for r in null_rows:
            t.add_row(str(r.n), f"{r.acc:.3f}", f"{r.n_outputs:.1f}", f"{r.n_learned:.1f}", f"{r.sum:.1f}",
                      _opt(r.retained_recall), f"{r.inv_outputs:.3f}", signed(r.gain, 1), signed(r.union_gain, 1))
        console.print(t)
    console.print("Rt = retained recall (mean recall of the classes the members learned alone); "
                  "Rg = 1/|O| (its random-guess reference)", style="dim")
    rts = [r.retained_recall for r in rep.rows if getattr(r, "retained_recall", None) is not None]
    console.print(f"acc along n  {sparkline([r.acc for r in rep.rows])}    "
                  f"Rt along n  {sparkline(rts) if rts else '—'}    "
                  f"G along n  {sparkline([r.gain for r in rep.rows])}"
                  + (f"    G null  {sparkline([r.gain for r in null_rows])}" if null_rows else ""))


# ---------------------------------------------------------------------- hull
def _hull_row_table(rep, idx, title: str) -> Table:
    t = Table(title=title, title_justify="left")
    for c in ("nodes", "acc", "|O|", "|Λ|", "|R| ℝⁿ", "|R| data", "UB ℝⁿ", "UB data", "eff ℝⁿ", "eff data", "gap"):
        t.add_column(c, justify="left" if c == "nodes" else "right")
    for q in idx:
        r = rep.rows[q]
        who = getattr(r, "unit", None) or _names([str(i) for i in r.nodes], 8)
        t.add_row(who, f"{r.acc:.3f}", str(r.n_outputs), str(r.n_learned),
                  fmt(r.n_reachable_unbounded), fmt(r.n_reachable_data), fmt(r.ub_unbounded), fmt(r.ub_data),
                  fmt(r.efficiency_unbounded), fmt(r.efficiency_data), fmt(r.gap_data))
    return t


def render_hull(rep, top: int = 10, unit: int | None = None) -> None:
    """Achieved accuracy against both bounds; the units farthest below their bound."""
    layer = getattr(rep, "layer", None)
    what = {"set": "one node set", "single": "every single node", "random": "random node sets",
            "heads": f"every head of block {layer} (node groups)"}[rep.kind]
    site = getattr(rep, "site", "readout")
    rows = [("site", site if layer is None else f"{site}, block {layer}"), ("items N", rep.n_items),
            ("classes K", rep.n_classes), ("isolation", rep.mode), ("units", len(rep.rows))]
    ro = getattr(rep, "readout", None)
    if ro and site != "readout":
        rows.append(("block readout", f"{ro['n_rows']} classes, held-out accuracy {ro['accuracy']:.3f} "
                                      f"(trained on the {ro['trained_on']})"))
    scope = getattr(rep, "bound_scope", "all classes")
    if scope and scope != "all classes":
        rows.append(("classes tested", f"{scope}: UB over the tested classes, a lower estimate of the bound"))
    rows += [("mean accuracy", rep.mean_acc), ("mean UB (unbounded ℝⁿ)", rep.mean_ub_unbounded),
             ("mean UB (data range)", rep.mean_ub_data), ("mean efficiency acc/UB (ℝⁿ)", rep.mean_efficiency_unbounded),
             ("mean efficiency acc/UB (data)", rep.mean_efficiency_data)]
    console.print(kv_table(f"Convex-hull bound (METHODS §6) — {what} ({rep.task})", rows))
    if rep.kind == "set":
        console.print(_hull_row_table(rep, [0], "The node set"))
        r = rep.rows[0]
        console.print(kv_table("Reachable classes", [
            ("unbounded", "not computed (too many LPs)" if rep.reachable_unbounded is None else _names(rep.reachable_unbounded, 20)),
            ("data range", "not computed (too many LPs)" if rep.reachable_data is None else _names(rep.reachable_data, 20)),
            ("outputs not reachable (exact ties)", _names(rep.outputs_unreached or [], 20)),
            ("bound chain", f"|Λ|={r.n_learned} ≤ |O|={r.n_outputs} ≤ |R|={fmt(r.n_reachable_data)} (data) ≤ {fmt(r.n_reachable_unbounded)} (ℝⁿ)"),
        ]))
        return
    if rep.kind == "single":
        ub = [r.ub_data or 0.0 for r in rep.rows]
        acc = [r.acc for r in rep.rows]
        console.print(f"acc by node  {sparkline(acc[:: max(1, len(acc) // 64)])}\nUB by node   {sparkline(ub[:: max(1, len(ub) // 64)])}")
    if rep.kind == "heads":
        console.print(_hull_row_table(rep, list(range(len(rep.rows))), "Every head (node group of its d_head coordinates)"))
        return
    console.print(_hull_row_table(rep, rep.farthest_below[:top], f"Farthest below their data-range bound (top {min(top, len(rep.rows))})"))
    if unit is not None:
        console.print(_hull_row_table(rep, [unit], f"Unit {rep.rows[unit].nodes}"))

