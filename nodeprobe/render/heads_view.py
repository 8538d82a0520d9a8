"""Rich views of the head studies (similarity, separators, segments) and of training tracks.

Renderers take result objects and print; they compute nothing beyond formatting.

Example:
    >>> shade(0.0), shade(1.0)
    (' ', '█')
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.console import Group
from rich.table import Table
from rich.text import Text

from nodeprobe.render.tables import console, fmt, kv_table, sparkline

_SHADES = " ░▒▓█"


def shade(a: float) -> str:
    """A shade character for a magnitude ``a`` in [0, 1]."""
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return "?"
    i = int(round(max(0.0, min(1.0, a)) * (len(_SHADES) - 1)))
    return _SHADES[i]


def _pct(v) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.0f}%"


def _short(tok: str | None, width: int = 10) -> str:
    if tok is None:
        return "—"
    return tok if len(tok) <= width else tok[: width - 1] + "…"


def similarity_heatmap(matrix, tokens: Sequence[str], title: str, max_show: int = 48) -> Group:
    """One head's ``[P, P]`` similarity matrix as shaded characters: red where the value is ≥ 0,
    blue below; darker = larger, scaled min–max over the off-diagonal entries shown (the diagonal
    is ``·``)."""
    P = min(len(tokens), max_show)
    vals = [[float(matrix[i][j]) for j in range(P)] for i in range(P)]
    off = [vals[i][j] for i in range(P) for j in range(P) if i != j]
    lo, hi = (min(off), max(off)) if off else (0.0, 1.0)
    span = (hi - lo) or 1.0
    width = 2 if P <= 40 else 1
    lines = [Text(title, style="bold"),
             Text(f"range of the shown values: {lo:.4g} (blank) … {hi:.4g} (█)", style="dim")]
    for i in range(P):
        row = Text(f"{i:>3} {_short(tokens[i], 12):>12} ", style="bold")
        for j in range(P):
            v = vals[i][j]
            if i == j:
                row.append("·" * width, style="dim")
                continue
            row.append(shade((v - lo) / span) * width, style="red" if v >= 0 else "blue")
        lines.append(row)
    if len(tokens) > P:
        lines.append(Text(f"(first {P} of {len(tokens)} tokens; --max-show to see more)", style="dim"))
    return Group(*lines)


def separator_table(sep, title: str = "Attention share on separators ([SEP] + [CLS] + . ! ?)") -> Table:
    """Block × head separator shares, highlighted above the threshold."""
    t = Table(title=title, title_justify="left", min_width=len(title) + 2)
    t.add_column("block\\head", justify="right", style="bold")
    for h in range(sep.n_heads):
        t.add_column(str(h), justify="right")
    t.add_column("mean", justify="right", style="bold")
    for l in range(sep.n_layers):
        cells = []
        for h in range(sep.n_heads):
            v = float(sep.share[l, h])
            style = "bold red" if v > sep.threshold else ("yellow" if v > 2 * sep.uniform_share else "dim")
            cells.append(Text(f"{v:.2f}", style=style))
        b = float(sep.block_share[l])
        t.add_row(str(l), *cells, Text(f"{b:.2f}", style="bold red" if b > sep.threshold else ""))
    t.caption = (f"uniform attention: {sep.uniform_share:.3f}; red: > {sep.threshold:g} (separator-focused); "
                 f"yellow: > 2× uniform; {sep.n_queries:,} queries")
    t.caption_justify = "left"
    t.min_width = max(t.min_width or 0, len(t.caption) + 2)
    return t


def block_summary_table(study) -> Table:
    """Per block: separator share, high-similarity pair statistics and head uniqueness."""
    sim, sep = study.similarity, study.separators
    title = (f"Context similarity per block (site {sim.site}{', cosine' if sim.normalize else ''}; "
             f"top {100 * (1 - sim.q):.3g}% pairs per head and text)")
    t = Table(title=title, title_justify="left", min_width=len(title) + 2)
    for c in ("block", "sep share", "pairs", "median dist", f">{sim.long_range} tok", "same sent", "repeated",
              "uniqueness"):
        t.add_column(c, justify="right")
    for b in sim.blocks:
        st = b.stats
        t.add_row(str(b.layer), f"{float(sep.block_share[b.layer]):.2f}", f"{st.n_pairs:,}",
                  fmt(st.median_distance), _pct(st.long_range_share), _pct(st.same_sentence_share),
                  _pct(st.repeated_share), f"{b.uniqueness:.2f}")
    t.caption = ("sep share: mean over heads; >N tok: long-range pairs; same sent: both ends in one sentence; "
                 "repeated: same token at both ends; uniqueness: distinct top tokens / H")
    t.caption_justify = "left"
    return t


def top_tokens_view(study) -> Group:
    """Each block's top token per head (the most common token among the head's pairs)."""
    names = study.token_names
    lines = [Text("Top token per head (most common token among its high-similarity pairs)", style="bold")]
    for b in study.similarity.blocks:
        line = Text(f"  block {b.layer}: ", style="bold")
        for h, tk in enumerate(b.top_tokens):
            name = names.get(tk, "—") if tk is not None else "—"
            line.append(f"H{h}:", style="dim")
            line.append(_short(name, 12) + " ", style="cyan")
        lines.append(line)
    return Group(*lines)


def render_similarity(study, matrix=None, tokens: Sequence[str] | None = None, layer: int | None = None,
                      head: int | None = None, max_show: int = 48) -> None:
    """Heat map of one head (when given), the separator grid and the per-block summary."""
    if matrix is not None:
        sim = study.similarity
        console.print(similarity_heatmap(matrix, tokens, f"Head L{layer}H{head}: similarity over the text (site {sim.site}; "
                                         "red ≥ 0, blue < 0, darker = larger)", max_show))
        hs = sim.heads[layer][head]
        console.print(kv_table(f"Head L{layer}H{head}", [
            ("high-similarity pairs", hs.stats.n_pairs), ("weakest kept value", hs.min_value),
            ("median distance", hs.stats.median_distance), ("long-range share", hs.stats.long_range_share),
            ("same-sentence share", hs.stats.same_sentence_share), ("repeated-token share", hs.stats.repeated_share),
            ("top token", f"{study.token_names.get(hs.top_token, '—')} ({hs.top_token_pairs} pairs)"),
        ]))
    console.print(separator_table(study.separators))
    blocks = study.separators.separator_blocks
    console.print(f"Separator-focused blocks (mean share > {study.separators.threshold:g}): "
                  f"{', '.join(map(str, blocks)) if blocks else 'none'}")
    console.print(block_summary_table(study))
    console.print(top_tokens_view(study))
    console.print(f"[dim]{study.n_texts} text(s), {study.n_tokens:,} tokens[/]")


def render_segments(reports: Sequence) -> None:
    """Each text's segments, one per line, alternating colours; the boundary token in bold."""
    for k, rep in enumerate(reports):
        seg = rep.segmentation
        heads = ", ".join(f"L{l}H{h}" for l, h in seg.heads[:12])
        if len(seg.heads) > 12:
            heads += f", … ({len(seg.heads)} heads)"
        console.print(kv_table(f"Segments{f' of text {k + 1}' if len(reports) > 1 else ''}", [
            ("heads", f"{heads} ({rep.heads_from})"), ("rule", f"positions receiving ≥ {seg.min_ratio:g}× uniform "
                                                       "attention from these heads end a segment"),
            ("segments", seg.n_segments)]))
        for i, ((s, e), text) in enumerate(zip(seg.segments, rep.segment_texts)):
            style = "cyan" if i % 2 == 0 else "magenta"
            line = Text(f"{i + 1:>3}  ", style="dim")
            line.append(text or "(specials only)", style=style)
            if (e - 1) in seg.boundaries:
                line.append(f"   ⟂ {rep.tokens[e - 1]} ×{float(seg.received[e - 1]):.1f}", style="bold")
            console.print(line)
        text_pos = [p for s, e in seg.segments for p in range(s, e)]
        top = sorted(text_pos, key=lambda p: -float(seg.received[p]))[:5]
        console.print(Text("  most attended text positions (× uniform): " + ", ".join(
            f"{rep.tokens[p]}@{p} {float(seg.received[p]):.2f}" for p in top), style="dim"))


def _num(v):
    return float("nan") if v is None else v


def render_track(rep) -> None:
    """Order parameters per step, their sparklines, the baseline and the symmetry-breaking steps."""
    from rich import box

    heads = rep.steps[0].heads is not None
    mlm = rep.task == "mlm"
    t = Table(title=f"Order parameters over training ({rep.task}, {rep.n_items:,} items, K = {rep.n_classes:,})",
              title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    cols = ["step", "acc"] + (["⟨APT⟩"] if mlm else []) + ["n|Λ|", "n cov", "n J"]
    if heads:
        cols += ["h|Λ|", "h cov", "h J"]
    for c in cols:
        t.add_column(c, justify="right", no_wrap=True)
    series: dict[str, list[float]] = {c: [] for c in cols[1:]}
    breaks = {st for st in rep.breaking.values() if st is not None}
    for s in rep.steps:
        vals = [s.accuracy] + ([_num(s.mean_apt)] if mlm else [])
        vals += [s.nodes.mean_size, s.nodes.coverage, s.nodes.mean_jaccard]
        if heads:
            vals += [s.heads.mean_size, s.heads.coverage, s.heads.mean_jaccard]
        for c, v in zip(cols[1:], vals):
            series[c].append(v)
        label = f"{s.step}{'*' if s.reused else ''}{'◆' if s.step in breaks else ''}"
        t.add_row(label, *[fmt(float(v)) for v in vals], style="bold" if s.step in breaks else None)
    console.print(t)
    console.print(Text("n = readout nodes, h = heads (isolated); |Λ| mean learned-set size per unit; cov |∪Λ|/K; "
                       "J mean Jaccard overlap; ◆ symmetry breaks; * reused from the stored per-step results", style="dim"))
    lines = [Text("Trends over the steps", style="bold")]
    for c in cols[1:]:
        v = series[c]
        line = Text(f"  {c:>6}  ", style="bold")
        line.append(sparkline(v), style="cyan")
        line.append(f"  {fmt(float(v[0]))} → {fmt(float(v[-1]))}", style="dim")
        lines.append(line)
    console.print(Group(*lines))
    b = rep.baseline
    rows = [("baseline", f"step {b.step}" + (" (random init)" if rep.baseline_is_init else
                                              " (no step 0: earliest checkpoint; no breaking step)")),
            ("baseline nodes |Λ| / J", f"{fmt(b.nodes.mean_size)} / {fmt(b.nodes.mean_jaccard)}")]
    if heads:
        rows.append(("baseline heads |Λ| / J", f"{fmt(b.heads.mean_size)} / {fmt(b.heads.mean_jaccard)}"))
    for fam, st in rep.breaking.items():
        if fam == "heads" and not heads:
            continue
        rows.append((f"symmetry breaks ({fam})", "not within these steps" if st is None else f"step {st}"))
    rows.append(("rule", rep.rule))
    rows.append(("steps computed / reused", f"{len(rep.computed_steps)} / {len(rep.reused_steps)}"))
    console.print(kv_table("Symmetry breaking", rows))
