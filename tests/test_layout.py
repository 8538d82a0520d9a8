"""The house rules, read from the code's own imports (every import, the lazy ones inside functions too):

* no import cycle between nodeprobe's modules;
* the library never imports the CLI (nor Typer): only ``nodeprobe.cli`` (and ``python -m nodeprobe``) does;
* the core (model, hooks, data, evaluate, cache, analysis, studies, train) never imports presentation
  (``nodeprobe.render``, Rich): progress is injected through ``nodeprobe.progress``; only the
  orchestration (``nodeprobe.pipeline``) and the CLI draw.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "nodeprobe"


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = p.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path) -> set[str]:
    """Every module name ``path`` imports (absolute names; ``from a import b`` gives ``a.b`` and ``a``)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _graph() -> dict[str, set[str]]:
    g = {}
    for m, p in MODULES.items():
        g[m] = {t for t in (_resolve(i) for i in _imports(p) if i.startswith("nodeprobe")) if t and t != m}
    return g


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        work = [(v, iter(sorted(g[v])))]
        index[v] = low[v] = counter[0]; counter[0] += 1; stack.append(v); on.add(v)
        while work:
            node, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]; counter[0] += 1; stack.append(w); on.add(w)
                    work.append((w, iter(sorted(g[w]))))
                    break
                if w in on:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop(); on.discard(w); comp.append(w)
                        if w == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    assert _cycles(_graph()) == []


def _outside(prefixes: tuple[str, ...]):
    return [(m, p) for m, p in MODULES.items() if not any(m == x or m.startswith(x + ".") for x in prefixes)]


def test_only_the_cli_imports_typer_or_the_cli():
    bad = [(m, i) for m, p in _outside(("nodeprobe.cli", "nodeprobe.__main__")) for i in _imports(p)
           if i.split(".")[0] in ("typer", "click") or i == "nodeprobe.cli" or i.startswith("nodeprobe.cli.")]
    assert bad == []


CORE = ("nodeprobe.model", "nodeprobe.hooks", "nodeprobe.data", "nodeprobe.evaluate", "nodeprobe.cache",
        "nodeprobe.analysis", "nodeprobe.studies", "nodeprobe.train", "nodeprobe.io", "nodeprobe.locks", "nodeprobe.errors",
        "nodeprobe.progress")


@pytest.mark.parametrize("core", CORE)
def test_core_does_not_import_presentation(core):
    mods = [(m, p) for m, p in MODULES.items() if m == core or m.startswith(core + ".")]
    bad = [(m, i) for m, p in mods for i in _imports(p)
           if i.split(".")[0] == "rich" or i == "nodeprobe.render" or i.startswith("nodeprobe.render.")
           or i == "nodeprobe.pipeline"]
    assert bad == []


#: the floors of docs/architecture.md, top (0) to bottom: a module imports only from floors below its own
FLOORS = {
    "cli": 0, "__main__": 0,
    "pipeline": 1, "runs": 1,
    "render": 2,
    "studies": 3,
    "train": 4,
    "cache": 5,
    "evaluate": 6,
    "hooks": 7,
    "model": 8,
    "data": 9,
    "analysis": 10,
    "errors": 11, "io": 11, "locks": 11, "budget": 11, "progress": 11, "precision": 11, "data_home": 11,
}


def _floor(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # the package root (lazy public API) sits above them all


def test_every_module_has_a_floor():
    assert {f for m in MODULES if (f := _floor(m)) is not None} <= set(FLOORS)


def test_floors_only_import_downward():
    up = [(m, t) for m, targets in _graph().items() for t in targets
          if _floor(m) is not None and _floor(t) is not None and _floor(m) != _floor(t)
          and FLOORS[_floor(t)] < FLOORS[_floor(m)]]  # same rank: side by side (cycles are caught above)
    assert up == []
