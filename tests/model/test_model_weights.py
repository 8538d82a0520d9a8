"""TransformerLens-shaped weights: each view reproduces the hooked activations by TL's formulas."""

import pytest
import torch
from einops import einsum
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

from nodeprobe.model import HookedBert

IDS = torch.tensor([[2, 5, 7, 3, 9], [2, 9, 3, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])


def _model(kind):
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=40, hidden_size=12, num_hidden_layers=2, num_attention_heads=3, intermediate_size=20,
                     num_labels=4, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    hf = (BertForMaskedLM if kind == "mlm" else BertForSequenceClassification)(cfg).eval()
    for p in hf.parameters():  # biases not at their zero init
        p.data.add_(0.05 * torch.randn_like(p))
    return HookedBert(hf)


@pytest.mark.parametrize("kind", ["mlm", "cls"])
def test_weights_reproduce_the_hooked_activations(kind):
    m = _model(kind)
    _, c = m.run_with_cache(IDS, MASK)
    close = dict(rtol=1e-5, atol=1e-5)
    for l, blk in enumerate(m.blocks):
        x = c[f"blocks.{l}.hook_resid_pre"]
        for w, b, hook in (("W_Q", "b_Q", "hook_q"), ("W_K", "b_K", "hook_k"), ("W_V", "b_V", "hook_v")):
            want = einsum(x, getattr(blk.attn, w), "b p d, h d e -> b p h e") + getattr(blk.attn, b)
            torch.testing.assert_close(want, c[f"blocks.{l}.attn.{hook}"], **close)
        z = c[f"blocks.{l}.attn.hook_z"]
        attn_out = einsum(z, blk.attn.W_O, "b p h e, h e d -> b p d") + blk.attn.b_O
        torch.testing.assert_close(attn_out, c[f"blocks.{l}.hook_attn_out"], **close)
        y = c[f"blocks.{l}.ln1.hook_normalized"] * blk.ln1.w + blk.ln1.b
        pre = y @ blk.mlp.W_in + blk.mlp.b_in
        torch.testing.assert_close(pre, c[f"blocks.{l}.mlp.hook_pre"], **close)
        out = c[f"blocks.{l}.mlp.hook_post"] @ blk.mlp.W_out + blk.mlp.b_out
        torch.testing.assert_close(out, c[f"blocks.{l}.hook_mlp_out"], **close)
    # stacked over blocks, the same tensors
    torch.testing.assert_close(m.W_Q[1], m.blocks[1].attn.W_Q, rtol=0, atol=0)
    assert m.W_Q.shape == (2, 3, 12, 4) and m.W_O.shape == (2, 3, 4, 12) and m.b_O.shape == (2, 12)
    assert m.W_in.shape == (2, 12, 20) and m.W_out.shape == (2, 20, 12)
    # embeddings and readout
    emb = m.bert.embeddings
    raw = m.W_E[IDS] + m.W_pos[: IDS.shape[1]] + m.W_token_type[torch.zeros_like(IDS)]
    torch.testing.assert_close(emb.LayerNorm(raw), c["hook_full_embed"], **close)
    logits = m(IDS, MASK)
    torch.testing.assert_close(c["readout.hook_in"] @ m.W_U + m.b_U, logits, **close)


def test_views_share_the_hf_parameters():
    m = _model("cls")
    q = m.hf.bert.encoder.layer[0].attention.self.query
    with torch.no_grad():
        q.weight[5, 7] = 3.25  # row 5 = head 1 (d_head 4), column 4 of that head; input dim 7
    assert m.blocks[0].attn.W_Q[1, 7, 1] == 3.25


def test_qk_and_ov_factored_matrices():
    m = _model("mlm")
    qk, ov = m.QK, m.OV
    assert qk.shape == (2, 3, 12, 12) and ov.shape == (2, 3, 12, 12)
    torch.testing.assert_close(qk.AB, m.W_Q @ m.W_K.transpose(-2, -1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ov.AB, m.W_V @ m.W_O, rtol=1e-5, atol=1e-6)
