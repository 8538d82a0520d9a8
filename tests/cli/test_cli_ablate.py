"""`nodeprobe ablate` end to end on a small saved classifier with the shared FewRel data.

The CLI's numbers are checked against an independent computation: the same model run through
`run_eval` with a hand-written hook that zeroes the head's slice of `attention.output.dense`'s input.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from _tiny_models import tiny_hf

from nodeprobe.cli import main
from nodeprobe.data.tokenizer import load_tokenizer
from nodeprobe.data.eval_sets import load_eval_set
from nodeprobe.evaluate import run_eval
from nodeprobe.model import HookedBert

LIMIT = 64


@pytest.fixture(scope="module")
def saved(tmp_path_factory, shared_data):
    d = tmp_path_factory.mktemp("abl") / "model"
    hf = tiny_hf("cls", vocab_size=30522, num_labels=16)
    hf.save_pretrained(d)
    (d / "vocab.txt").write_bytes((shared_data / "tokenizer" / "bert-base-uncased-vocab.txt").read_bytes())
    return d, hf


def _reference(hf, shared_data, layer: int, head: int) -> tuple[float, float]:
    """Accuracy without and with head (layer, head) zeroed by a plain torch pre-hook on the HF module."""
    tok = load_tokenizer(shared_data / "tokenizer" / "bert-base-uncased-vocab.txt")
    es = load_eval_set("fewrel", tok, shared_data, limit=LIMIT, seed=0, max_len=min(128, hf.config.max_position_embeddings))
    model = HookedBert(hf)
    base = run_eval(model, es).accuracy
    dense = hf.bert.encoder.layer[layer].attention.output.dense
    d_head = hf.config.hidden_size // hf.config.num_attention_heads

    def zero_slice(module, args):
        x = args[0].clone()
        x[..., head * d_head:(head + 1) * d_head] = 0
        return (x,)

    h = dense.register_forward_pre_hook(zero_slice)
    try:
        abl = run_eval(model, es).accuracy
    finally:
        h.remove()
    return base, abl


def test_ablate_one_head_matches_hand_written_reference(saved, shared_data, tmp_path, capsys):
    d, hf = saved
    out = tmp_path / "abl.json"
    rc = main(["ablate", "--model", str(d), "--layer", "1", "--head", "2", "--data", str(shared_data),
               "--limit", str(LIMIT), "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    rep = json.loads(out.read_text())
    assert rep["schema"] == "nodeprobe.ablate/1"
    res = rep["result"]
    base, abl = _reference(hf, shared_data, 1, 2)
    assert res["n_items"] == LIMIT
    assert res["baseline_accuracy"] == pytest.approx(base, abs=1e-6)
    assert res["ablated_accuracy"] == pytest.approx(abl, abs=1e-6)
    assert "Head L1H2 ablated" in capsys.readouterr().out
    for m in res["movers"]:  # relation names, recall changes consistent with Δ
        assert isinstance(m["name"], str) and m["name"]
        assert m["delta"] == pytest.approx(m["ablated_recall"] - m["baseline_recall"], abs=1e-6)


def test_ablate_all_grid_and_plot(saved, shared_data, tmp_path, capsys):
    d, hf = saved
    out, plots = tmp_path / "all.json", tmp_path / "plots"
    rc = main(["ablate", "--all", "--model", str(d), "--data", str(shared_data), "--limit", str(LIMIT),
               "--json", str(out), "--plot", str(plots)])
    assert rc == 0, capsys.readouterr().err
    res = json.loads(out.read_text())["result"]
    grid = np.asarray(res["delta_accuracy"])
    assert grid.shape == (2, 4)
    base, abl = _reference(hf, shared_data, 0, 3)  # one cell against the independent computation
    assert res["baseline_accuracy"] == pytest.approx(base, abs=1e-6)
    assert grid[0, 3] == pytest.approx(abl - base, abs=1e-6)
    assert (plots / "ablate_all.png").stat().st_size > 1000


def test_ablate_is_deterministic(saved, shared_data, tmp_path, capsys):
    d, _ = saved
    texts = []
    for name in ("a.json", "b.json"):
        assert main(["ablate", "--model", str(d), "--layer", "0", "--head", "1", "--mode", "mean", "--isolate",
                     "--data", str(shared_data), "--limit", str(LIMIT), "--json", str(tmp_path / name)]) == 0
        texts.append((tmp_path / name).read_text())
    assert texts[0] == texts[1]
