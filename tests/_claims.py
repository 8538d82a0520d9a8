"""Parsers of the claims table: the Rich table ``nodeprobe reproduce`` prints and the Markdown
table of ``reports/<preset>/README.md`` (both to (claim, measured, verdict) rows)."""

from __future__ import annotations

import re


def _norm(s: str) -> str:
    return " ".join(s.split())


def printed_claims(stdout: str) -> list[tuple[str, ...]]:
    """(claim, measured, verdict) rows of the last Rich table printed (cells wrapped over several
    lines are joined)."""
    lines = stdout.splitlines()
    start = max(i for i, l in enumerate(lines) if l.lstrip().startswith("┃"))  # the header row
    rows, cur = [], None
    for line in lines[start + 1:]:
        s = line.strip()
        if s.startswith("│"):
            cells = [c.strip() for c in s.strip("│").split("│")]
            cur = cells if cur is None else [a + " " + b for a, b in zip(cur, cells)]
        elif cur is not None:  # a rule between rows, or the bottom of the table
            rows.append(tuple(_norm(c) for c in cur))
            cur = None
        if s.startswith("└"):
            break
    return rows


def readme_claims(readme: str) -> list[tuple[str, ...]]:
    """(claim, measured, verdict) rows of the Markdown claims table (``\\|`` unescaped)."""
    lines = readme.splitlines()
    i = lines.index("| claim | paper / target | measured | verdict | data |")
    rows = []
    for line in lines[i + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows.append((_norm(cells[0]), _norm(cells[2]), _norm(cells[3].strip("*"))))
    return rows
