"""The README's hook table, row by row: each nodeprobe hook's tensor and what a TransformerLens
``TransformerBridge`` BERT calls it — checked on the same weights (LayerNorms off their init,
padded batch, token types), and the bridge behaviours the README warns about."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertTokenizer

from _tiny_models import boot_bridge_offline
from nodeprobe.hooks import ablate_head, keep_nodes
from nodeprobe.model import load_model

README = Path(__file__).resolve().parents[1] / "README.md"
TOL = 1e-5
L = 3

# nodeprobe hook → the bridge hook carrying the same tensor (None: the bridge has no such tensor).
# Block hooks are written for block 1 and hold for every block.
SAME = {
    "embed.hook_embed": "embed.hook_out",
    "embed.hook_token_type_embed": "token_type_embed.hook_out",
    "embed.hook_pos_embed": "hook_pos_embed",
    "embed.ln.hook_scale": "embed_ln.hook_scale",
    "embed.ln.hook_normalized": "embed_ln.hook_normalized",
    "hook_full_embed": "hook_embed",
    "blocks.1.hook_resid_pre": "blocks.1.hook_resid_pre",
    "blocks.1.attn.hook_q": "blocks.1.attn.hook_q",
    "blocks.1.attn.hook_k": "blocks.1.attn.hook_k",
    "blocks.1.attn.hook_v": "blocks.1.attn.hook_v",
    "blocks.1.attn.hook_attn_scores": None,  # the bridge's hook_attn_scores holds the pattern
    "blocks.1.attn.hook_pattern": "blocks.1.attn.hook_pattern",
    "blocks.1.attn.hook_z": "blocks.1.attn.hook_z",
    "blocks.1.attn.hook_result": None,
    "blocks.1.hook_attn_out": "blocks.1.attn.o.hook_out",
    "blocks.1.hook_resid_mid": "blocks.1.ln1.hook_in",
    "blocks.1.ln1.hook_scale": "blocks.1.ln1.hook_scale",
    "blocks.1.ln1.hook_normalized": "blocks.1.ln1.hook_normalized",
    "blocks.1.mlp.hook_pre": "blocks.1.mlp.hook_pre",
    "blocks.1.mlp.hook_post": "blocks.1.mlp.hook_post",
    "blocks.1.hook_mlp_out": "blocks.1.hook_mlp_out",
    "blocks.1.hook_resid_post": "blocks.1.hook_resid_mid",
    "blocks.1.ln2.hook_scale": "blocks.1.ln2.hook_scale",
    "blocks.1.ln2.hook_normalized": "blocks.1.ln2.hook_normalized",
    "blocks.1.hook_normalized_resid_post": "blocks.1.hook_resid_post",
    "mlm_head.ln.hook_scale": "ln_final.hook_scale",
    "mlm_head.ln.hook_normalized": "ln_final.hook_normalized",
    "readout.hook_in": "ln_final.hook_out",
    "unembed.hook_in": "unembed.hook_in",
    "unembed.hook_out": "unembed.hook_out",
}
# Names both models have for different tensors (a tool written for one reads the wrong tensor on the other).
CLASH = ["hook_embed", "blocks.1.hook_attn_out", "blocks.1.hook_resid_mid", "blocks.1.hook_resid_post",
         "blocks.1.attn.hook_attn_scores", "blocks.1.hook_mlp_in"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(bridge booted offline from a saved folder, HookedBert on the same perturbed weights)."""
    d = tmp_path_factory.mktemp("bridge_table")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(35)]
    torch.manual_seed(0)
    hf = BertForMaskedLM(BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=L, num_attention_heads=4,
                                    intermediate_size=32, max_position_embeddings=32))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in hf.parameters():  # LayerNorm weights and biases off 1 and 0 too
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizer(vocab=str(d / "vocab.txt"))
    hf.save_pretrained(d)
    tok.save_pretrained(d)
    return boot_bridge_offline(d), load_model(d)


def _batch():
    ids = torch.tensor([[2, 5, 6, 7, 8, 3], [2, 9, 10, 3, 0, 0]])
    types = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 0, 0]])
    return ids, (ids != 0).long(), types


@pytest.fixture(scope="module")
def caches(pair):
    bridge, model = pair
    ids, mask, types = _batch()
    with torch.no_grad():
        bl, bc = bridge.run_with_cache(ids, attention_mask=mask, token_type_ids=types)
        model.set_use_attn_result(True)
        model.set_use_hook_mlp_in(True)
        try:
            nl, nc = model.run_with_cache(ids, attention_mask=mask, token_type_ids=types)
        finally:
            model.set_use_attn_result(False)
            model.set_use_hook_mlp_in(False)
    assert (bl - nl).abs().max() <= TOL
    return bc, nc


def readout_table() -> dict[str, str]:
    """README rows ``| `nodeprobe hook` | shape | tensor | bridge |`` → the bridge cell."""
    text = README.read_text()
    start = text.index("<!-- hook-table -->")
    rows = {}
    for line in text[start:].splitlines()[1:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        names = re.findall(r"`([^`]+)`", cells[0])
        if names and cells[0] != "hook":
            for n in names:
                rows[n.replace("{l}", "1")] = cells[-1]
    return rows


def test_readme_table_lists_every_hook_and_its_bridge_name(pair):
    _, model = pair
    rows = readout_table()
    block1 = {n for n in model.hook_dict if not re.match(r"blocks\.[02]\.", n)}
    assert set(rows) == block1, set(rows) ^ block1
    for ours, theirs in SAME.items():
        cell = rows[ours]
        if theirs is None:
            assert cell.startswith("—"), (ours, cell)
        else:
            assert f"`{theirs.replace('blocks.1.', 'blocks.{l}.')}`" in cell, (ours, cell)


@pytest.mark.parametrize("ours", [k for k, v in SAME.items() if v is not None])
def test_bridge_hook_carries_the_same_tensor(caches, ours):
    bc, nc = caches
    theirs = SAME[ours]
    assert bc[theirs].shape == nc[ours].shape
    assert (bc[theirs] - nc[ours]).abs().max() <= TOL


@pytest.mark.parametrize("name", CLASH)
def test_names_that_mean_another_tensor_on_the_bridge(caches, name):
    bc, nc = caches
    ours = name if name in nc else "hook_full_embed"  # nodeprobe has no root hook_embed
    if name == "hook_embed":
        assert "hook_embed" not in nc and "embed.hook_embed" in nc  # TL's HookedEncoder name for the token embedding
        assert (bc["hook_embed"] - nc["embed.hook_embed"]).abs().max() > 1e-3
        return
    assert bc[name].shape == nc[ours].shape
    assert (bc[name] - nc[ours]).abs().max() > 1e-3, name
    if name.endswith("hook_attn_scores"):  # the bridge's scores are the softmaxed pattern
        assert (bc[name] - nc["blocks.1.attn.hook_pattern"]).abs().max() <= TOL


def test_no_bridge_tensor_for_scores_and_head_results(caches):
    bc, nc = caches
    for ours in ("blocks.1.attn.hook_attn_scores", "blocks.1.attn.hook_result"):
        t = nc[ours]
        assert not any(v.shape == t.shape and (v - t).abs().max() <= TOL for v in bc.values()), ours


@pytest.mark.parametrize("hook", ["blocks.1.attn.hook_pattern", "blocks.1.attn.hook_attn_scores"])
def test_bridge_discards_pattern_and_score_edits(pair, hook):
    bridge, model = pair
    ids, mask, _ = _batch()
    flat = lambda t, hook: torch.full_like(t, 1.0 / t.shape[-1])  # noqa: E731  uniform attention
    with torch.no_grad():
        clean = bridge(ids, attention_mask=mask)
        edited = bridge.run_with_hooks(ids, attention_mask=mask, fwd_hooks=[(hook, flat)])
        ours = model.run_with_hooks(ids, attention_mask=mask, fwd_hooks=[(hook, flat)])
    assert (edited - clean).abs().max() == 0.0  # silently discarded by the bridge
    assert (ours - clean).abs().max() > 1e-3  # takes effect on HookedBert


def test_bridge_ignores_stop_at_layer_for_bert(pair):
    bridge, model = pair
    ids, mask, _ = _batch()
    with torch.no_grad():
        out = bridge(ids, attention_mask=mask, stop_at_layer=1)
        resid = model(ids, attention_mask=mask, stop_at_layer=1)
    assert out.shape[-1] == 40  # logits, not the residual entering block 1
    assert resid.shape[-1] == 16


def test_head_and_node_hooks_carry_over(pair):
    bridge, model = pair
    ids, mask, types = _batch()
    with torch.no_grad():
        for hooks, bridge_hooks in (([ablate_head(1, 2)], [ablate_head(1, 2)]),
                                    ([keep_nodes([1, 4, 9])], [("ln_final.hook_out", keep_nodes([1, 4, 9])[1])])):
            got = bridge.run_with_hooks(ids, attention_mask=mask, token_type_ids=types, fwd_hooks=bridge_hooks)
            ref = model.run_with_hooks(ids, attention_mask=mask, token_type_ids=types, fwd_hooks=hooks)
            assert (got - ref).abs().max() <= TOL
