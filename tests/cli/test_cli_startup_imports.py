"""The CLI starts light: ``--help`` and bad options never import torch, ``import nodeprobe`` is lazy,
and the CLI modules import nothing heavy at their top.  Not timed — the figures are in
``bench/startup.py``; that the library never imports the CLI (or Typer) is ``tests/test_layout.py``'s."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "transformer_lens")

PROBE = """
import json, sys
from nodeprobe.cli import main
rc = main(json.loads(sys.argv[1]))
print("\\n" + json.dumps({"rc": rc, "heavy": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


def _run(args: list[str], cwd: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], cwd=cwd, capture_output=True, text=True,
                         timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(cwd)})
    assert out.stdout.strip(), out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["err"] = out.stderr
    return res


@pytest.mark.parametrize("args,rc", [
    ([], 0),
    (["--help"], 0),
    (["ablate", "--help"], 0),
    (["specialization", "--help"], 0),
    (["track", "--help"], 0),
    (["ablate", "--layer", "x"], 2),
    (["ablate", "--mode", "half", "--all"], 2),
    (["ablate", "--task", "xyz", "--all"], 2),
    (["ablate", "--layer", "-1", "--head", "0"], 2),
    (["ablate", "--all", "--json", "{tmp}"], 2),                  # --json is a folder
    (["hull", "--model", "/no/such/dir"], 2),
    (["specialization", "--model", "/no/such/dir", "--top", "0"], 2),
    (["similarity", "--text", "a b", "--layer", "1"], 2),           # --layer without --head
    (["finetune", "--model", "/no/such/dir", "--out", "x", "--precision", "fp16"], 2),
    (["pretrain", "--preset", "huge"], 2),
    (["reproduce", "--preset", "nope"], 2),
    (["ablate", "--all"], 2),                                      # no --model, no ./runs
    (["ablate", "--all", "--device", "tpu"], 2),
    (["blocks", "--model", "minilm", "--data", "/no/such/data"], 2),
    (["reproduce", "--data", "/no/such/data"], 2),
    (["track", "--run", "/no/such/run"], 2),
    # the study options (issue 15 audit: these were refused only after torch had loaded)
    (["cooperation", "--model", "minilm", "--grid", "0,2"], 2),
    (["cooperation", "--model", "minilm", "--site", "nope"], 2),
    (["cooperation", "--model", "minilm", "--site", "attn"], 2),          # a block site needs --layer
    (["specialization", "--model", "minilm", "--min-count", "-1"], 2),
    (["specialization", "--model", "minilm", "--level", "nope"], 2),
    (["specialization", "--model", "minilm", "--head-unit", "nope"], 2),
    (["specialization", "--model", "minilm", "--unit", "L1Hx", "--level", "head"], 2),
    (["hull", "--model", "minilm", "--n", "0"], 2),
    (["hull", "--model", "minilm", "--nodes", "3-1"], 2),
    (["hull", "--model", "minilm", "--level", "nope"], 2),
    (["apt", "--model", "minilm", "--min-count", "-1"], 2),
    (["similarity", "--model", "minilm", "--text", "a b", "--site", "nope"], 2),
    (["similarity", "--model", "minilm", "--text", "a b", "--long-range", "-1"], 2),
    (["segment", "--model", "minilm", "--text", "a b", "--max-len", "0"], 2),
    (["pretrain", "--out", "x", "--epochs", str(10**9)], 2),
    (["track", "--run", ".", "--empty-pairs", "ONE"], 2),
    (["cooperation", "--model", "minilm", "--json", "-"], 2),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_help_and_bad_options_do_not_import_torch(args, rc, tmp_path):
    res = _run([a.format(tmp=tmp_path) for a in args], tmp_path)
    assert res["rc"] == rc, res["err"]
    assert res["heavy"] == [], f"{args}: imported {res['heavy']}"
    if rc == 2:
        lines = res["err"].strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("nodeprobe: error: "), res["err"]


def test_the_cli_choices_are_the_librarys():
    """The choices the CLI checks before torch loads, copied from modules that import it."""
    from nodeprobe.analysis.order_parameters import EMPTY_PAIRS
    from nodeprobe.analysis.similarity import VECTOR_SITES
    from nodeprobe.cli import heads

    assert heads.VECTOR_SITES == VECTOR_SITES and heads.EMPTY_PAIRS == EMPTY_PAIRS


def test_import_nodeprobe_is_lazy_and_the_api_still_works(tmp_path):
    code = ("import sys, nodeprobe; assert 'torch' not in sys.modules; "
            "assert set(nodeprobe.__all__) <= set(dir(nodeprobe)); "
            "f = nodeprobe.load_model; import nodeprobe.model as m; assert f is m.load_model; "
            "assert nodeprobe.hooks.ablate_head and nodeprobe.node_predictions and nodeprobe.HookedBert; "
            "from nodeprobe import unit_stats, NodeprobeError; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path)})
    assert out.stdout.strip() == "ok", out.stderr
    import nodeprobe

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        nodeprobe.nope  # noqa: B018


def test_the_cli_modules_import_no_heavy_library_at_top_level():
    """Heavy imports happen inside the command that needs them."""
    heavy_top = {}
    for path in sorted((REPO / "nodeprobe" / "cli").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = set()
        for node in tree.body:
            if isinstance(node, ast.Import):
                top.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                top.add(node.module)
        allowed = {"__future__", "sys", "os", "re", "pathlib", "typing", "dataclasses", "typer", "nodeprobe.errors"}
        heavy = sorted(m for m in top - allowed if not m.startswith("nodeprobe.cli"))
        if heavy:
            heavy_top[path.name] = heavy
    assert heavy_top == {}
