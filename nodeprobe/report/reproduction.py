"""The reproduction report: ``reports/<preset>/README.md`` from the stages' JSON.

Each claim of the papers is a :class:`Claim` with the paper's statement, the measured figure and a
verdict (reproduced / not reproduced / not run), computed from the JSON the stages wrote — so the
README never holds a number that is not in a JSON file beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nodeprobe.report.jsonio import write_atomic


@dataclass
class Claim:
    """One row of the claims table."""

    claim: str
    paper: str
    measured: str
    verdict: str  # "reproduced" | "not reproduced" | "not run" | "partly"
    source: str  # the JSON file behind it


def _v(ok: bool | None) -> str:
    return "not run" if ok is None else ("reproduced" if ok else "not reproduced")


def _smoke(rows: list[Claim]) -> list[Claim]:
    """The smoke preset checks the pipeline, not the science: no verdicts."""
    for c in rows:
        if c.verdict != "not run":
            c.verdict = "not assessed (smoke)"
    return rows


def _get(results: dict, *path, default=None):
    cur = results
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return default
        cur = cur[p]
    return cur


def claims(results: dict, preset: str) -> list[Claim]:
    """The claims table (targets of the ``cpu`` preset where the issue names numbers)."""
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
    for extra in EXTRA_CLAIMS:
        out.extend(extra(results, preset))
    return _smoke(out) if preset == "smoke" else out


# Later stages (specialization, APT, cooperation, hull, track, similarity) add their claims here.
EXTRA_CLAIMS: list = []


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


def write_readme(ctx) -> Path:
    """Render ``README.md`` for a finished (or partly finished) reproduction."""
    p = ctx.preset
    r = ctx.results
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
        "| claim | paper / target | measured | verdict | data |",
        "|---|---|---|---|---|",
    ]
    for c in rows:
        lines.append(f"| {c.claim} | {c.paper} | {c.measured} | **{c.verdict}** | `{c.source}` |")
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
