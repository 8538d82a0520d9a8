"""The claims rows are computed once and rendered twice: the README's Markdown table and the Rich
table ``nodeprobe reproduce`` prints last — same claims, same figures, same verdicts."""

from __future__ import annotations

import io

from rich.console import Console

from nodeprobe.render.reproduction import Claim, claims, claims_markdown, claims_table
from _claims import printed_claims, readme_claims

RESULTS = {
    "pretrain": {"heldout_accuracy": 0.251, "tokens": 12345},
    "finetune": {"test_accuracy": 0.61},
    "finetune_scratch": {"test_accuracy": 0.40},
    "ablate_all": {"delta_accuracy": [[-0.05, 0.0], [0.0, -0.001]]},
    "mlm_track": {"steps": [{"step": 0, "nodes": {"mean_size": 0.0, "mean_jaccard": 1.0}},
                            {"step": 40, "nodes": {"mean_size": 1.5, "mean_jaccard": 0.2}}],
                  "breaking": {"nodes": 10}},
}


def _printed(rows, width=1000) -> str:
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None).print(claims_table(rows))
    return buf.getvalue()


def test_markdown_and_rich_rows_agree():
    rows = claims(RESULTS, "cpu")
    assert [c.verdict for c in rows[:2]] == ["reproduced", "reproduced"]
    md = "\n".join(claims_markdown(rows))
    want = [(c.claim, c.measured, c.verdict) for c in rows]
    assert readme_claims(md) == want
    assert printed_claims(_printed(rows)) == want
    # a narrow terminal wraps cells over lines; the rows are still the same
    assert printed_claims(_printed(rows, width=100)) == [tuple(" ".join(x.split()) for x in r) for r in want]


def test_markdown_escapes_pipes():
    track = [c for c in claims(RESULTS, "cpu") if c.source == "mlm_track.json"]
    assert track and "mean |Λ|" in track[0].measured
    line = claims_markdown(track)[2]
    assert "mean \\|Λ\\|" in line and line.count(" | ") == 4  # five cells, none split by |Λ|


def test_smoke_verdicts_are_not_assessed_and_markup_is_literal():
    rows = claims(RESULTS, "smoke")
    assert {c.verdict for c in rows} <= {"not assessed (smoke)", "not run"}
    out = _printed([Claim("[bold]x[/]", "p", "[0, 1]", "reproduced", "x.json")])
    assert "[bold]x[/]" in out and "[0, 1]" in out
