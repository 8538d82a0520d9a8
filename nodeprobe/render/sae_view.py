"""Rich view of :class:`nodeprobe.studies.sae.SAEComparison` (``--sae``): the report on the SAE's
latents (through the command's own view), then the latents and the readout nodes side by side
and the SAE's fidelity.  Formats and prints; computes nothing.

Example:
    >>> render_sae_comparison(sae_comparison(cache, sae, "specialization"), top=5)   # doctest: +SKIP
"""

from __future__ import annotations

from rich.table import Table

from nodeprobe.render.tables import console, fmt, kv_table
from nodeprobe.render.views import render_cooperation, render_hull, render_specialization


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def _side_rows(cmp) -> list[tuple[str, str, str]]:
    a, b = cmp.summary["sae"], cmp.summary["nodes"]
    rows = [
        ("units", fmt(a.n_units), fmt(b.n_units)),
        ("units with Λ ≠ ∅", fmt(a.n_nonempty), fmt(b.n_nonempty)),
        ("mean |Λ|", f"{a.mean_size:.3f}", f"{b.mean_size:.3f}"),
        ("coverage |∪Λ|/K", f"{a.n_covered} ({_pct(a.coverage)})", f"{b.n_covered} ({_pct(b.coverage)})"),
        ("mean Jaccard", fmt(a.mean_jaccard) if a.n_pairs else "—", fmt(b.mean_jaccard) if b.n_pairs else "—"),
        ("single-unit acc (mean / max)", f"{a.mean_acc:.3f} / {a.max_acc:.3f}", f"{b.mean_acc:.3f} / {b.max_acc:.3f}"),
        ("readout accuracy, all units", f"{a.accuracy:.3f} (on x̂)", f"{b.accuracy:.3f} (on x)"),
    ]
    s, n = cmp.sae, cmp.nodes
    if cmp.command == "cooperation":
        rows += [("crossover n* (v2: interior minimum of mean Rt)",
                  fmt(s.n_star) if s.n_star is not None else "none in the grid",
                  fmt(n.n_star) if n.n_star is not None else "none in the grid"),
                 ("lowest mean P at n (v1, retired)", fmt(s.p_min_n), fmt(n.p_min_n)),
                 ("first n with mean G > 0", fmt(s.first_positive_gain), fmt(n.first_positive_gain))]
    elif cmp.command == "hull":
        rows += [("mean accuracy (hull units)", fmt(s.mean_acc), fmt(n.mean_acc)),
                 ("mean UB (data range)", fmt(s.mean_ub_data), fmt(n.mean_ub_data)),
                 ("mean efficiency acc/UB (data)", fmt(s.mean_efficiency_data), fmt(n.mean_efficiency_data))]
    return rows


def render_sae_comparison(cmp, top: int = 10, unit=None) -> None:
    """The latent report (its command's view), the side-by-side table and the SAE's fidelity.

    ``unit``: as the command's view takes it (a UnitRow of the latent report, or a hull row index).
    """
    info = cmp.sae_info
    k = f", k {info['k']}" if info.get("k") is not None else ""
    console.print(f"[bold]SAE latents as units[/bold] — {info['path']} ({info['architecture']}{k}, "
                  f"d_sae {info['d_sae']}, hook {info['hook_name']}); the tables below are on the latents, "
                  "the readout nodes side by side at the end.")
    if cmp.command == "specialization":
        render_specialization(cmp.sae, top, unit)
    elif cmp.command == "cooperation":
        render_cooperation(cmp.sae)
    else:
        render_hull(cmp.sae, top, unit)
    t = Table(title=f"SAE latents vs readout nodes (single units, isolation {cmp.mode})", title_justify="left")
    t.add_column("")
    t.add_column("SAE latents", justify="right")
    t.add_column("readout nodes", justify="right")
    for row in _side_rows(cmp):
        t.add_row(*row)
    console.print(t)
    f = cmp.fidelity
    console.print(kv_table("SAE fidelity (what the latent side keeps of x)", [
        ("explained variance of x", f.explained_variance), ("readout accuracy on x", f.acc_x),
        ("readout accuracy on x̂", f.acc_xhat), ("argmax agreement x̂ vs x", f.agreement),
        ("mean L0 (active latents per item)", f.mean_l0), ("dead latents (never active here)", f.n_dead),
        ("dropped", "the reconstruction error x − x̂ (the latents' logits are W x̂ + b)"),
    ]))
