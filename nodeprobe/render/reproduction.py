"""The reproduction report: the claims of the papers beside the measured figures.

Each claim is a :class:`Claim` row (the paper's statement, the measured figure, a verdict —
reproduced / not reproduced / not run — and the JSON file behind it).  :func:`claims` computes
the rows once from the stages' JSON; they are rendered twice, by :func:`claims_markdown` into
``reports/<preset>/README.md`` (:func:`write_readme`) and by :func:`claims_table` as the Rich table
``nodeprobe reproduce`` prints at the end — so the terminal and the README never disagree, and
neither holds a number that is not in a JSON file of the reports folder.

Example:
    >>> rows = claims({"pretrain": {"heldout_accuracy": 0.25, "tokens": 1000}}, "cpu")
    >>> rows[0].measured, rows[0].verdict
    ('0.250 (1,000 tokens)', 'reproduced')
    >>> claims_markdown(rows[:1])[2]
    '| MLM pre-training learns: held-out masked-token accuracy | BERT-6 on Wikipedia (target for the cpu preset: ≥ 0.20) | 0.250 (1,000 tokens) | **reproduced** | `pretrain.json` |'
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from rich.table import Table
from rich.text import Text

from nodeprobe.render.jsonio import write_atomic


@dataclass(frozen=True)
class Claim:
    """One row of the claims table."""

    claim: str
    paper: str
    measured: str
    verdict: str  # "reproduced" | "not reproduced" | "not run" | "measured" | "not assessed (smoke)"
    source: str  # the JSON file(s) behind it


CLAIM_COLUMNS = ("claim", "measured", "verdict")
"""The columns the printed table shows (the README adds ``paper / target`` and ``data``)."""

_VERDICT_STYLE = {"reproduced": "bold green", "not reproduced": "bold red", "not run": "dim",
                  "measured": "cyan", "partly": "yellow"}


def _md_cell(s: str) -> str:
    """A Markdown table cell: ``|`` escaped (e.g. ``mean |Λ|``), no line breaks."""
    return s.replace("|", "\\|").replace("\n", " ")


def claims_markdown(rows: Sequence[Claim]) -> list[str]:
    """The claims as a Markdown table (header, rule, one line per claim).

    Example:
        >>> print(claims_markdown([Claim("c", "p", "mean |Λ| 1.0", "not run", "x.json")])[2])
        | c | p | mean \\|Λ\\| 1.0 | **not run** | `x.json` |
    """
    lines = ["| claim | paper / target | measured | verdict | data |", "|---|---|---|---|---|"]
    for c in rows:
        lines.append(f"| {_md_cell(c.claim)} | {_md_cell(c.paper)} | {_md_cell(c.measured)} | "
                     f"**{_md_cell(c.verdict)}** | `{_md_cell(c.source)}` |")
    return lines


def claims_table(rows: Sequence[Claim], title: str = "Claims of the papers beside the measured figures") -> Table:
    """The claims as a Rich table (claim · measured · verdict), verdicts coloured.

    Cells are plain :class:`~rich.text.Text` (a ``[`` in a figure is never read as markup).

    Example:
        >>> t = claims_table([Claim("c", "p", "0.5", "reproduced", "x.json")])
        >>> [col.header for col in t.columns], t.row_count
        (['claim', 'measured', 'verdict'], 1)
    """
    t = Table(title=title, title_justify="left", show_lines=True)
    t.add_column("claim", ratio=3)
    t.add_column("measured", ratio=4)
    t.add_column("verdict", no_wrap=True)
    for c in rows:
        style = _VERDICT_STYLE.get(c.verdict, "yellow")
        t.add_row(Text(c.claim), Text(c.measured), Text(c.verdict, style=style))
    return t


def _v(ok: bool | None) -> str:
    return "not run" if ok is None else ("reproduced" if ok else "not reproduced")


def _smoke(rows: list[Claim]) -> list[Claim]:
    """The smoke preset checks the pipeline, not the science: no verdicts."""
    return [c if c.verdict == "not run" else replace(c, verdict="not assessed (smoke)") for c in rows]


def _get(results: dict, *path, default=None):
    cur = results
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return default
        cur = cur[p]
    return cur


def claims(results: dict, preset: str) -> list[Claim]:
    """The claims table from the stages' JSON ``results`` (stage name → JSON), in README order;
    targets are those of the ``cpu`` preset where the issue names numbers.  Stages that did not
    run give ``not run`` rows or none; under ``smoke`` no verdict is assessed.

    Example:
        >>> [c.verdict for c in claims({}, "smoke")]
        ['not run', 'not run', 'not run']
    """
    out: list[Claim] = []
    acc = _get(results, "pretrain", "heldout_accuracy")
    target = 0.20 if preset == "cpu" else None
    out.append(Claim(
        "MLM pre-training learns: held-out masked-token accuracy",
        "BERT-6 on Wikipedia (target for the cpu preset: ≥ 0.20)",
        "—" if acc is None else f"{acc:.3f} ({_get(results, 'pretrain', 'tokens', default=0):,} tokens)",
        _v(None if acc is None else (acc >= target if target else acc > 0)), "pretrain.json"))
    ft = _get(results, "finetune", "test_accuracy")
    sc = _get(results, "finetune_scratch", "test_accuracy")
    out.append(Claim(
        "Pre-training helps fine-tuning on FewRel-16",
        "pre-trained ≫ from scratch (target: ≥ 0.55 and ≥ 5 points above scratch)",
        "—" if ft is None or sc is None else f"{ft:.3f} pre-trained vs {sc:.3f} from scratch ({100 * (ft - sc):+.1f} points)",
        _v(None if ft is None or sc is None else (ft >= 0.55 and ft - sc >= 0.05)), "finetune.json, finetune_scratch.json"))
    ftp = _get(results, "finetune_paper_lr", "test_accuracy")
    scp = _get(results, "finetune_scratch_paper_lr", "test_accuracy")
    if ftp is not None or scp is not None:
        out.append(Claim(
            "Pre-training helps fine-tuning on FewRel-16 — at the papers' fine-tuning lr 5e-5",
            "pre-trained ≫ from scratch (target: ≥ 5 points above scratch)",
            "—" if ftp is None or scp is None else
            f"{ftp:.3f} pre-trained vs {scp:.3f} from scratch ({100 * (ftp - scp):+.1f} points)",
            _v(None if ftp is None or scp is None else ftp - scp >= 0.05),
            "finetune_paper_lr.json, finetune_scratch_paper_lr.json"))
    mini = _get(results, "finetune_minilm", "test_accuracy")
    out.append(Claim(
        "A real pre-trained 6-block encoder (MiniLM-L6) fine-tuned on FewRel-16",
        "target ≥ 0.85",
        "—" if mini is None else f"{mini:.3f}",
        _v(None if mini is None else mini >= 0.85), "finetune_minilm.json"))
    grid = _get(results, "ablate_all", "delta_accuracy")
    if grid:
        flat = [(v, l, h) for l, row in enumerate(grid) for h, v in enumerate(row)]
        worst = min(flat)
        out.append(Claim(
            "Single heads matter unequally (ablating one head of the fine-tuned model)",
            "a few heads carry the task; most can be removed",
            f"largest drop {worst[0]:+.3f} at L{worst[1]}H{worst[2]}; "
            f"{sum(1 for v, _, _ in flat if v > -0.01)}/{len(flat)} heads cost < 1 point",
            "reproduced" if worst[0] < -0.01 else "not reproduced", "ablate_all.json"))
    out += _specialization_claims(results)
    out += _mlm_claims(results)
    out += _fewrel_claims(results)
    out += _training_claims(results)
    return _smoke(out) if preset == "smoke" else out


def _family(results: dict, stage: str) -> dict | None:
    fams = _get(results, stage, "families")
    return fams[-1] if fams else None


SPECIALIZATION_STAGES = [
    ("mlm_node_specialization", "MLM readout nodes", "tokens"),
    ("mlm_head_specialization", "MLM heads (node groups under the block readouts)", "tokens"),
    ("fewrel_node_specialization", "FewRel readout nodes", "labels"),
    ("fewrel_head_specialization", "FewRel heads (node groups under the block readouts)", "labels"),
    ("fewrel_head_network_specialization", "FewRel heads (v1: isolated in the running network)", "labels"),
    ("minilm_node_specialization", "MiniLM FewRel readout nodes", "labels"),
    ("minilm_head_specialization", "MiniLM FewRel heads (node groups)", "labels"),
]
ALONG_STAGES = [
    ("mlm_attn_node_specialization", "MLM MHA (attn) nodes"),
    ("mlm_mlp_node_specialization", "MLM FF (mlp) nodes"),
    ("fewrel_attn_node_specialization", "FewRel MHA (attn) nodes"),
    ("fewrel_mlp_node_specialization", "FewRel FF (mlp) nodes"),
    ("minilm_mlp_node_specialization", "MiniLM FewRel FF (mlp) nodes"),
]


def _block_families(results: dict, stage: str) -> list[dict]:
    return [f for f in (_get(results, stage, "families") or []) if f.get("layer") is not None]


def _series(vals, fmt: str = "{:.2f}") -> str:
    return ", ".join("—" if v is None else fmt.format(v) for v in vals)


def _specialization_claims(results: dict) -> list[Claim]:
    """Single nodes / heads learn a small set of classes, and different ones (symmetry breaking);
    heads as node groups against v1's network isolation; nodes sharpening along the blocks."""
    out = []
    for stage, what, cls in SPECIALIZATION_STAGES:
        f = _family(results, stage)
        if f is None:
            continue
        hist = {int(k): v for k, v in f["size_hist"].items()}
        learners = sum(v for k, v in hist.items() if k >= 1)
        sizes = [k for k, v in hist.items() if k >= 1 for _ in range(v)]
        mean_l = sum(sizes) / len(sizes) if sizes else 0.0
        small = learners > 0 and mean_l <= max(3.0, 0.25 * f["n_classes"]) if cls == "labels" else mean_l <= 20
        per_block = _block_families(results, stage)
        jac = [b["mean_jaccard"] if b["n_pairs"] else None for b in per_block]
        broke = f["mean_jaccard"] is not None and f["mean_jaccard"] < 0.5
        if len(per_block) > 1:  # heads: symmetry breaking is within a block (the papers' per-layer heads)
            broke = all(j is not None and j < 0.5 for j in jac)
        extra = f"; Jaccard per block {_series(jac)}" if len(per_block) > 1 else ""
        out.append(Claim(
            f"{what} each learn a small set of {cls}, different ones (symmetry breaking)",
            f"single units learn few {cls}; low overlap between units",
            f"{learners}/{f['n_units']} units learn ≥ 1 ({mean_l:.2f} on average among them); together they cover "
            f"{f['n_covered']} of {f['n_classes']} {cls}; mean Jaccard overlap {f['mean_jaccard']:.3f}{extra}",
            _v(learners > 0 and small and broke), f"{stage}.json"))
    g, n = _family(results, "fewrel_head_specialization"), _family(results, "fewrel_head_network_specialization")
    if g and n:
        out.append(Claim(
            "Heads as node groups (v2) vs heads isolated in the running network (v1) — FewRel",
            "the papers' head-level symmetry breaking shows only when a head is read through a readout, others silenced",
            f"group: mean |Λ| {g['mean_size']:.2f}, coverage {g['n_covered']}/{g['n_classes']}, Jaccard {g['mean_jaccard']:.3f}; "
            f"network: mean |Λ| {n['mean_size']:.2f}, coverage {n['n_covered']}/{n['n_classes']}, Jaccard {n['mean_jaccard']:.3f}",
            "measured", "fewrel_head_specialization.json, fewrel_head_network_specialization.json"))
    for stage, what in ALONG_STAGES:
        trends = _get(results, stage, "trends") or []
        if not trends:
            continue
        t = trends[0]
        rs, rz = t.get("rho_snr"), t.get("rho_size")
        ok = None if rs is None or rz is None else (rs > 0 and rz < 0)
        out.append(Claim(
            f"{what} sharpen along the blocks",
            "mean SNR rises and mean |Λ| falls toward the output (Spearman ρ against the block)",
            f"mean SNR per block {_series(t['mean_snr'])} (ρ = {_series([rs])}); mean |Λ| per block "
            f"{_series(t['mean_size'])} (ρ = {_series([rz])})",
            _v(ok), f"{stage}.json"))
    return out


def _mlm_claims(results: dict) -> list[Claim]:
    r = results.get("mlm_apt")
    if not r:
        return []
    out = []
    rho, pval = r.get("spearman_rho"), r.get("spearman_p")
    out.append(Claim("APT grows with token frequency", "APT rises with corpus frequency",
                     f"Spearman ρ = {rho:.3f} (p = {pval:.2g}) over {r['n_tokens']} tokens" if rho is not None else "—",
                     _v(None if rho is None else (rho > 0 and (pval or 1) < 0.05)), "mlm_apt.json"))
    blocks = r.get("blocks") or []
    if blocks:
        first, last = blocks[0], blocks[-1]
        seq = ", ".join(f"{b['mean_apt']:.3f}" if b["mean_apt"] is not None else "—" for b in blocks)
        ok = first["mean_apt"] is not None and last["mean_apt"] is not None and last["mean_apt"] > first["mean_apt"]
        out.append(Claim("⟨APT⟩ grows along the blocks (logit lens)", "0.037 at the embeddings → 0.31 at block 6",
                         f"{seq} (embeddings → block {len(blocks) - 1})", _v(ok), "mlm_apt.json"))
        c0, cl = first["n_clusters"], last["n_clusters"]
        big0 = max((len(c) for c in first.get("largest_clusters") or []), default=0)
        bigl = max((len(c) for c in last.get("largest_clusters") or []), default=0)
        out.append(Claim("Token confusion clusters are small and sharpen along the blocks",
                         "small strong-match clusters, sharper in later blocks",
                         f"{c0} clusters (largest {big0} tokens) at the embeddings → {cl} (largest {bigl}) at the last block",
                         _v(bigl <= max(big0, 10)), "mlm_apt.json"))
    return out


def _training_claims(results: dict) -> list[Claim]:
    """Symmetry breaking over training (track) and the head vector-space study."""
    out = []
    t = results.get("mlm_track")
    if t:
        steps = t.get("steps") or []
        base = steps[0] if steps else None
        last = steps[-1] if steps else None
        brk = (t.get("breaking") or {}).get("nodes")
        if base and last:
            out.append(Claim(
                "Symmetry breaks during pre-training (readout nodes)",
                "at random init units learn nothing and overlap; during training they take different tokens",
                f"step 0: mean |Λ| {base['nodes']['mean_size']:.3f}, Jaccard {base['nodes']['mean_jaccard']:.3f}; "
                f"step {last['step']}: mean |Λ| {last['nodes']['mean_size']:.3f}, Jaccard {last['nodes']['mean_jaccard']:.3f}; "
                f"first breaking step: {brk}", _v(brk is not None), "mlm_track.json"))
    for stage, who in [("mlm_heads_study", "pre-trained BERT"), ("minilm_heads_study", "MiniLM-L6")]:
        h = results.get(stage)
        if h:
            sep = h.get("separators") or {}
            blocks = sep.get("block_share") or []
            sim = (h.get("similarity") or {}).get("blocks") or []
            if blocks and sim:
                share = ", ".join(f"{x:.2f}" for x in blocks)
                dist = ", ".join(f"{b['stats']['median_distance']:.0f}" if b["stats"].get("median_distance") is not None
                                 else "—" for b in sim)
                out.append(Claim(
                    f"Heads attend to separators in some blocks; similar-token pairs go from long to short range — {who}",
                    "separator-focused blocks; long-range pairs early, short-range late",
                    f"separator share per block {share}; median pair distance per block {dist}",
                    "measured", f"{stage}.json"))
    return out


def _fewrel_claims(results: dict) -> list[Claim]:
    out = []
    for stage, who in [("fewrel_blocks", "BERT"), ("minilm_blocks", "MiniLM-L6")]:
        rows = _get(results, stage, "rows")
        if rows:
            lens = ", ".join(f"{x['lens_accuracy']:.2f}" for x in rows)
            probe = ", ".join(f"{x['probe_accuracy']:.2f}" for x in rows if x.get("probe_accuracy") is not None)
            ok = rows[-1]["lens_accuracy"] > rows[0]["lens_accuracy"]
            out.append(Claim(f"Fine-tuned accuracy grows along the blocks — {who}", "rises block by block",
                             f"logit lens {lens}; probe {probe}", _v(ok), f"{stage}.json"))
    for stage, who in [("fewrel_cooperation", "BERT"), ("minilm_cooperation", "MiniLM-L6")]:
        r = results.get(stage)
        if r:
            out.append(_cooperation_claim(r, who, f"{stage}.json"))
    for stage, who in [("fewrel_hull_n1", "single nodes, BERT"), ("fewrel_hull_n2", "node pairs, BERT"),
                       ("fewrel_hull_heads", "heads of the last block as node groups, BERT"),
                       ("minilm_hull_n1", "single nodes, MiniLM")]:
        r = results.get(stage)
        if r:
            rows = [x for x in r.get("rows") or [] if x.get("ub_data") is not None]
            viol = sum(1 for x in rows if x["acc"] > x["ub_data"] + 1e-9)
            eff = r.get("mean_efficiency_data")
            out.append(Claim(f"Accuracy is bounded by the convex-hull argument — {who}", "acc ≤ UB(S) for every set",
                             f"{len(rows) - viol}/{len(rows)} sets within the data-range bound; mean acc "
                             f"{r['mean_acc']:.3f} vs mean UB {r.get('mean_ub_data') or 0:.3f} (efficiency "
                             f"{eff if eff is not None else float('nan'):.2f})", _v(bool(rows) and viol == 0), f"{stage}.json"))
    return out


def _cooperation_claim(r: dict, who: str, source: str) -> Claim:
    """METHODS v2 §5: crossover n* (interior minimum of mean retained recall) or "no crossover in
    the grid"; first/last n with mean G > 0; max G measured beside the null model's.  Reproduced
    only when a crossover is found and the measured max G is > 0 and above the null's."""
    rows = r.get("rows") or []
    null_rows = r.get("null_rows") or []
    # a v1 JSON has no crossover_found: its n_star was the retired lowest-mean-P figure, not a crossover
    n_star = r.get("n_star") if r.get("crossover_found") is True else None
    if not (isinstance(n_star, int) and not isinstance(n_star, bool) and rows and rows[0]["n"] < n_star < rows[-1]["n"]):
        n_star = None  # never an end of the grid (n* = 1)
    cross = f"crossover at n* = {n_star} (lowest mean retained recall)" if n_star is not None else "no crossover in the grid"
    g0, g1 = r.get("first_positive_gain"), r.get("last_positive_gain")
    gpos = f"first / last n with mean G > 0: {g0} / {g1}" if g0 is not None else "mean G > 0 at no n"
    best = max(rows, key=lambda x: x["gain"]) if rows else None
    nbest = max(null_rows, key=lambda x: x["gain"]) if null_rows else None
    gm = f"max G = {best['gain']:.2f} at n = {best['n']}" if best else "no rows"
    gm += f" (null model {nbest['gain']:.2f} at n = {nbest['n']})" if nbest else " (no null model)"
    null = r.get("null") or {}
    if null:
        ns = null.get("n_star") if null.get("crossover_found") is True else None
        gm += f"; null model: {'crossover at n* = ' + str(ns) if ns is not None else 'no crossover in the grid'}"
    ok = (n_star is not None and best is not None and best["gain"] > 0 and nbest is not None
          and best["gain"] > nbest["gain"])
    return Claim(f"Groups of nodes cooperate beyond the sum of their parts — {who}",
                 "cooperation gain G > 0 past a crossover n*, above a null model",
                 f"{cross}; {gpos}; {gm}", "reproduced" if ok else "not reproduced", source)


def _stage_table(ctx) -> list[str]:
    lines = ["| stage | seconds |", "|---|---:|"]
    total = 0.0
    for k, v in ctx.timings.items():
        if "." in k:  # e.g. pretrain.tokens_per_s
            continue
        v = max(v, ctx.timings.get(f"{k}.seconds", 0.0))  # training time, also when resumed from a finished run
        lines.append(f"| {k} | {v:.0f} |")
        total += v
    lines.append(f"| **total** | **{total:.0f}** |")
    return lines


def write_readme(ctx, rows: Sequence[Claim] | None = None) -> Path:
    """Render ``README.md`` for a finished (or partly finished) reproduction; ``rows`` are its
    :func:`claims` (computed from ``ctx.results`` when not given).

    Example:
        >>> write_readme(ctx, claims(ctx.results, ctx.preset.name))   # doctest: +SKIP
    """
    p = ctx.preset
    r = ctx.results
    if rows is None:
        rows = claims(r, p.name)
    lines = [
        f"# nodeprobe reproduction — preset `{p.name}`",
        "",
        f"Model: {p.model.n_layers} blocks × {p.model.n_heads} heads, d_model {p.model.d_model}, d_ff {p.model.d_ff}; "
        f"seed {ctx.seed}; device {ctx.device}. Produced by `nodeprobe reproduce --preset {p.name}`; every figure "
        "below comes from a JSON file in this folder.",
        "",
        *(["> The `smoke` preset is a tiny model trained for seconds: it checks that every stage runs, "
           "not what the papers claim. See `reports/cpu/` for the real figures.", ""] if p.name == "smoke" else []),
        "## Claims of the papers beside the measured figures",
        "",
        *claims_markdown(rows),
    ]
    pre = r.get("pretrain") or {}
    if pre:
        curve = ", ".join(f"{c['accuracy']:.3f}" for c in pre.get("heldout_curve", []))
        lines += ["", "## Pre-training", "",
                  f"- corpus: {pre.get('corpus', {}).get('train_sequences', '—')} training sequences, "
                  f"{pre.get('corpus', {}).get('heldout_sequences', '—')} held-out sequences "
                  f"(WikiText-2 + DBpedia abstracts; FewRel never seen)",
                  f"- settings: {pre.get('settings')}",
                  f"- held-out masked-token accuracy per epoch: {curve}",
                  f"- throughput: {ctx.timings.get('pretrain.tokens_per_s', '—')} tokens/s on {pre.get('device', '—')} "
                  f"({pre.get('precision', '—')})"]
    for key, title in [("finetune", "Fine-tuning (pre-trained)"), ("finetune_scratch", "Fine-tuning (from scratch)"),
                       ("finetune_paper_lr", "Fine-tuning (pre-trained) at the papers' lr 5e-5"),
                       ("finetune_scratch_paper_lr", "Fine-tuning (from scratch) at the papers' lr 5e-5"),
                       ("finetune_minilm", "Fine-tuning MiniLM-L6")]:
        f = r.get(key)
        if f:
            curve = ", ".join(f"{c['test_accuracy']:.3f}" for c in f.get("curve", []))
            lines += ["", f"## {title}", "", f"- FewRel-16 test accuracy per epoch: {curve}",
                      f"- settings: {f.get('settings')}"]
    for section in EXTRA_SECTIONS:
        lines += section(ctx)
    pngs = sorted(x.name for x in ctx.reports.glob("*.png"))
    if pngs:
        lines += ["", "## Plots", ""] + [f"![{n}]({n})" for n in pngs]
    lines += ["", "## Wall-clock per stage", "", *_stage_table(ctx), ""]
    return write_atomic(ctx.reports / "README.md", "\n".join(lines))


EXTRA_SECTIONS: list = []
