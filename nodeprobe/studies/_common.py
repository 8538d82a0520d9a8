"""Shared validation of the report functions' arguments (private).

Numpy and the standard library only (no torch): the CLI checks every study option with these
before torch is imported, and the report functions check the same arguments again."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from nodeprobe.errors import NodeprobeError

UNIT_SITES = ("readout", "attn", "mlp", "resid")
HEAD_UNITS = ("group", "network")


def check_thresholds(tau_recall: float, tau_lift: float, min_count: int) -> None:
    """The METHODS §3 thresholds as CLI errors (before any work)."""
    if not (isinstance(tau_recall, (int, float)) and 0.0 <= tau_recall <= 1.0):
        raise NodeprobeError(f"tau_recall={tau_recall}: expected a number in [0, 1]")
    if not (isinstance(tau_lift, (int, float)) and tau_lift >= 0.0 and math.isfinite(tau_lift)):
        raise NodeprobeError(f"tau_lift={tau_lift}: expected a finite number ≥ 0")
    if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) or min_count < 1:
        raise NodeprobeError(f"min_count={min_count}: expected an integer ≥ 1")




def check_cache_matches(cache, eval_set) -> None:
    if eval_set is not None and eval_set.fingerprint != cache.eval_fingerprint:
        raise NodeprobeError(
            f"cache {cache.path} was built from other data (eval-set fingerprint {cache.eval_fingerprint}≠"
            f"{eval_set.fingerprint}); rebuild with `rebuild` or another `cache`"
        )


def parse_nodes(text: str | Sequence[int], d: int | None = None, flag: str = "nodes") -> list[int]:
    """``"12,40"`` → ``[12, 40]`` (ranges ``3-7`` allowed); one-line errors for bad/empty/repeated.

    Example:
        >>> parse_nodes("12,40,3-5")
        [12, 40, 3, 4, 5]
    """
    if isinstance(text, str):
        out: list[int] = []
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                if "-" in part[1:]:
                    a, b = part.split("-", 1) if not part.startswith("-") else (part, "")
                    lo, hi = int(a), int(b)
                    if hi < lo:
                        raise ValueError
                    out.extend(range(lo, hi + 1))
                else:
                    out.append(int(part))
            except ValueError:
                raise NodeprobeError(f"{flag}={text}: expected node numbers like 12,40 or 3-7") from None
    else:
        out = [int(v) for v in text]
    if not out:
        raise NodeprobeError(f"{flag}={text!r}: the node set is empty")
    if len(set(out)) != len(out):
        raise NodeprobeError(f"{flag}={text}: a node is repeated")
    if d is not None:
        bad = [i for i in out if not 0 <= i < d]
        if bad:
            raise NodeprobeError(f"{flag}={bad[0]}: the readout has nodes 0–{d - 1}")
    return out


def check_unit_site(site: str, layer: int | None, n_layers: int | None = None) -> None:
    """``--site``/``--layer`` of a unit analysis: readout takes no layer, the block sites need one."""
    if site not in UNIT_SITES:
        raise NodeprobeError(f"site={site}: expected one of {', '.join(UNIT_SITES)}")
    if site == "readout":
        if layer is not None:
            raise NodeprobeError("`layer` applies to the block sites (attn, mlp, resid), not to site=readout")
        return
    if layer is None:
        blocks = f"0–{n_layers - 1}" if n_layers is not None else "number"
        raise NodeprobeError(f"site={site} needs `layer` (a block {blocks})")
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0 or (n_layers is not None and layer >= n_layers):
        top = f"0–{n_layers - 1}" if n_layers is not None else "≥ 0"
        raise NodeprobeError(f"layer={layer}: the model has blocks {top}")


def resolve_specialization(level: str, site: str | None, layer: int | None,
                           n_layers: int | None, head_unit: str = "group") -> tuple[str, list[int]]:
    """Validate ``--level/--site/--layer/--head-unit``; return ``(site, layers)`` (the blocks studied).

    Sites: nodes at ``readout`` (no layer) or ``attn``/``mlp``/``resid`` (one block, default every
    block); heads at ``attn`` (``z`` is accepted as its v1 name).  With ``n_layers=None`` only the
    combination is checked (before a model is loaded).

    Example:
        >>> resolve_specialization("head", None, 2, 4), resolve_specialization("node", "mlp", None, 3)
        (('attn', [2]), ('mlp', [0, 1, 2]))
    """
    if level not in ("node", "head"):
        raise NodeprobeError(f"level={level}: expected node or head")
    if head_unit not in HEAD_UNITS:
        raise NodeprobeError(f"head_unit={head_unit}: expected group or network")
    if site is None:
        site = "readout" if level == "node" else "attn"
    allowed = ("readout", "attn", "mlp", "resid", "z")
    if site not in allowed:
        raise NodeprobeError(f"site={site}: expected readout, attn, mlp or resid")
    if level == "head":
        if site not in ("attn", "z"):
            raise NodeprobeError(f"level=head lives at site=attn (a head is a group of its attn nodes), not site={site}")
        site = "attn"
    elif site == "z":
        raise NodeprobeError("site=z holds heads: use level=head, or site=attn for its nodes")
    if layer is not None and n_layers is not None and not (isinstance(layer, int) and 0 <= layer < n_layers):
        raise NodeprobeError(f"layer={layer}: the model has blocks 0–{n_layers - 1}")
    if site == "readout":
        if layer is not None:
            raise NodeprobeError("`layer` applies to the block sites (attn, mlp, resid) and to heads, not to site=readout")
        return site, []
    if layer is not None:
        return site, [layer]
    return site, list(range(n_layers)) if n_layers is not None else []


def parse_unit(level: str, spec: str, n_layers: int | None = None, n_heads: int | None = None,
               d_model: int | None = None) -> tuple[int, ...]:
    """``--unit``: ``12`` / ``node 12`` → ``(12,)``; ``L3 node 12`` (a node of block 3, when every
    block is studied) → ``(3, 12)``; ``L3H5`` / ``3.5`` / ``3,5`` → ``(3, 5)``; range-checked when the
    sizes are given (``d_model``: the width of the site).

    Example:
        >>> parse_unit("head", "L1H3"), parse_unit("node", "7")
        ((1, 3), (7,))
    """
    s = str(spec).strip().lower().replace("node", " ").strip()
    try:
        if level == "node" and s.startswith("l"):  # "L3 node 12" / "L3N12": node 12 of block 3
            a, b = s[1:].replace("n", " ").split()
            key: tuple[int, ...] = (int(a), int(b))
            if n_layers is not None and not 0 <= key[0] < n_layers:
                raise NodeprobeError(f"unit={spec}: the model has blocks 0–{n_layers - 1}")
            return key
        if level == "node":
            key = (int(s),)
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


SET_BYTES = 600  # at least, per random node set kept: its draw (tuple, index array) and its result row
SET_SECONDS = 1e-5  # at least, per random node set: one prediction pass over the evaluation items


def check_cooperation_size(R: int, grid: Sequence[int]) -> None:
    """Refuse ``R`` × grid node sets that cannot fit in memory (≥ :data:`SET_BYTES` each) or would
    run for more than :data:`nodeprobe.budget.MAX_SECONDS` (≥ :data:`SET_SECONDS` each), up front.

    Example:
        >>> check_cooperation_size(20, (1, 2, 4))
    """
    if isinstance(R, bool) or not isinstance(R, int) or R < 1:
        return  # cooperation_report's own check says so
    from nodeprobe.budget import check_budget

    sets = R * len(set(grid))
    check_budget("R=", R, need_bytes=sets * SET_BYTES, seconds=sets * SET_SECONDS,
                 how=f"{sets:.3g} node sets = R × {len(set(grid))} grid sizes, ≥ {SET_BYTES} bytes and "
                     f"≥ {SET_SECONDS * 1e6:g} µs each")


def parse_grid(text: str | Sequence[int] | None, R: int | None = None) -> tuple[int, ...]:
    """``"1,2,4"`` → ``(1, 2, 4)``; None → METHODS §5 grid.  With ``R``: also
    :func:`check_cooperation_size` (before anything loads)."""
    if text is None:
        from nodeprobe.analysis.cooperation import DEFAULT_GRID  # the one place that imports torch: last

        g = tuple(DEFAULT_GRID)
    else:
        parts = text.split(",") if isinstance(text, str) else list(text)
        try:
            g = tuple(int(str(p).strip()) for p in parts if str(p).strip())
        except ValueError:
            raise NodeprobeError(f"grid={text}: expected node counts like 1,2,4,8") from None
        if not g or min(g) < 1:
            raise NodeprobeError(f"grid={text}: expected positive node counts")
    if R is not None:
        check_cooperation_size(R, g)
    return g


ROW_BYTES = 600  # at least, per random node set: its HullRow
BOUND_SECONDS = 1e-3  # at least, per random node set: one hull bound (LPs over the classes)


def check_hull_args(nodes, n, d: int | None, R: int = 20) -> list[int] | None:
    """Validate ``--nodes``/``--n``/``--R`` (against d_model when given); returns parsed nodes."""
    if (nodes is None) == (n is None):
        raise NodeprobeError("give either nodes=12,40 (one node set) or n=1 (every single node) / n=k (random sets)")
    if isinstance(R, bool) or not isinstance(R, int) or R < 1:
        raise NodeprobeError(f"R={R}: expected a positive number of node sets")
    if nodes is None and n is not None and n != 1:  # R random sets: refused up front when they cannot fit
        from nodeprobe.budget import check_budget

        check_budget("R=", R, need_bytes=R * ROW_BYTES, seconds=R * BOUND_SECONDS,
                     how=f"R hull bounds, ≥ {ROW_BYTES} bytes and ≥ {BOUND_SECONDS * 1e3:g} ms each")
    if nodes is not None:
        return parse_nodes(nodes, d)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1 or (d is not None and n > d):
        raise NodeprobeError(f"n={n}: expected a node count 1–{d if d is not None else 'd_model'}")
    return None
