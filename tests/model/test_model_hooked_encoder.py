"""Hook-for-hook parity with TransformerLens's own BERT, ``HookedEncoder`` (TL 3.x only).

One tiny random BERT, every parameter moved away from its init (LayerNorm weights ≠ 1, biases ≠ 0),
is loaded into TL 3.9's ``HookedEncoder`` (the local-folder recipe of ``shared/TL-FACTS.md``) and
into :class:`~nodeprobe.model.HookedBert`.  On a padded batch with token types, every hook point
HookedEncoder's cache holds must be in nodeprobe's cache with the same shape and values (≤ 1e-5,
fp32) — by default and with TL's optional hooks on (``use_attn_result``, ``use_split_qkv_input``,
``use_hook_mlp_in``).  TL 4.x has no HookedEncoder: the module is skipped there.
"""

from __future__ import annotations

import warnings

import pytest
import torch

try:
    from transformer_lens import HookedEncoder
except ImportError:  # TL 4.x ships the TransformerBridge only
    pytest.skip("transformer_lens.HookedEncoder is not importable (TransformerLens 4.x has none; "
                "this parity test needs TL 3.x, e.g. transformer-lens==3.9.0)", allow_module_level=True)

import transformer_lens.loading_from_pretrained as tl_loading
from transformers import BertConfig, BertForMaskedLM, BertForPreTraining

from nodeprobe.model import HookedBert

ATOL = 1e-5
N_LAYERS = 3
# TL's optional hook switches and the hook names (per block) each one adds
OPTIONAL = {
    "use_attn_result": ("attn.hook_result",),
    "use_split_qkv_input": ("hook_q_input", "hook_k_input", "hook_v_input"),
    "use_hook_mlp_in": ("hook_mlp_in",),
}
# Names nodeprobe has and HookedEncoder does not (they must not mean something else there)
NODEPROBE_ONLY = ("readout.hook_in",) + tuple(f"blocks.{l}.hook_attn_in" for l in range(N_LAYERS))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """``(hf_mlm, hooked_encoder, hooked_bert)`` holding the same perturbed weights."""
    cfg = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=N_LAYERS, num_attention_heads=4,
                     intermediate_size=32, max_position_embeddings=64)
    torch.manual_seed(0)
    pt = BertForPreTraining(cfg).eval()
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for p in pt.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    # away from init: no LayerNorm weight at 1, no LayerNorm bias at 0
    for name, p in pt.named_parameters():
        if "LayerNorm.weight" in name:
            assert not torch.isclose(p, torch.ones_like(p)).any(), name
        if "LayerNorm.bias" in name or name.endswith(".bias"):
            assert not (p == 0).any(), name

    mlm = BertForMaskedLM(cfg).eval()
    missing, unexpected = mlm.load_state_dict(pt.state_dict(), strict=False)
    assert not missing and sorted(unexpected) == sorted(
        ["bert.pooler.dense.weight", "bert.pooler.dense.bias", "cls.seq_relationship.weight",
         "cls.seq_relationship.bias"])
    folder = tmp_path_factory.mktemp("tiny_bert")
    mlm.save_pretrained(folder)  # architectures = BertForMaskedLM: the one TL 3.9 converts

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # HookedEncoder's deprecation warning
        tl_cfg = tl_loading.get_pretrained_model_config(str(folder), device="cpu")
        enc = HookedEncoder(tl_cfg, move_to_device=False)
        # the converter reads the pooler and the NSP head: give it the BertForPreTraining
        state = tl_loading.get_pretrained_state_dict(str(folder), tl_cfg, hf_model=pt)
    res = enc.load_state_dict(state, strict=False)
    # strict=False only skips the causal-mask buffers (``attn.mask`` / ``attn.IGNORE``), no weight
    assert not res.unexpected_keys
    assert all(k.endswith((".attn.mask", ".attn.IGNORE")) for k in res.missing_keys), res.missing_keys
    assert {n for n, _ in enc.named_parameters()} <= set(state)
    enc.eval()
    return mlm, enc, HookedBert(mlm.eval())


@pytest.fixture(scope="module")
def batch():
    """A padded batch (item 1 padded after 4 tokens) with two segments in item 0."""
    ids = torch.tensor([[2, 5, 7, 9, 3, 11, 3], [2, 8, 6, 3, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]])
    types = torch.tensor([[0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0, 0]])
    return ids, mask, types


def _set_optional(enc: HookedEncoder, model: HookedBert, on: bool) -> None:
    for switch in OPTIONAL:
        setattr(enc.cfg, switch, on)  # HookedEncoder 3.9 has no set_use_* methods; its components share cfg
        getattr(model, f"set_{switch}")(on)


def _caches(models, batch, optional: bool):
    mlm, enc, model = models
    ids, mask, types = batch
    _set_optional(enc, model, optional)
    try:
        with torch.no_grad():
            tl_logits, tl_cache = enc.run_with_cache(ids, token_type_ids=types, one_zero_attention_mask=mask)
            np_logits, np_cache = model.run_with_cache(ids, token_type_ids=types, one_zero_attention_mask=mask)
            hf_logits = mlm(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    finally:
        _set_optional(enc, model, False)
    return hf_logits, tl_logits, dict(tl_cache.items()), np_logits, dict(np_cache.items())


def _compare(tl_cache: dict, np_cache: dict, mask: torch.Tensor) -> dict[str, float]:
    """Max |Δ| per hook name of ``tl_cache``; asserts names, shapes and values."""
    missing = sorted(set(tl_cache) - set(np_cache))
    assert not missing, f"HookedEncoder hooks nodeprobe lacks: {missing}"
    keep = mask.bool()[:, None, None, :]  # [B, 1, 1, P] unmasked key positions
    diffs = {}
    for name, t in tl_cache.items():
        n = np_cache[name]
        assert n.shape == t.shape, f"{name}: nodeprobe {tuple(n.shape)} vs HookedEncoder {tuple(t.shape)}"
        assert n.dtype == t.dtype == torch.float32, name
        if name.endswith("attn.hook_attn_scores"):
            masked = ~keep.expand_as(t)
            assert torch.isneginf(t[masked]).all(), f"{name}: HookedEncoder stores -inf at masked keys"
            assert (n[masked] <= torch.finfo(n.dtype).min / 2).all(), f"{name}: nodeprobe masks with dtype-min"
            assert torch.isfinite(t[~masked]).all()
            d = (n[~masked] - t[~masked]).abs().max().item()
        else:
            d = (n - t).abs().max().item()
        diffs[name] = d
    bad = {k: v for k, v in diffs.items() if not v <= ATOL}
    assert not bad, f"hooks that differ by more than {ATOL}: {bad}"
    return diffs


def test_weights_fully_loaded(models, batch):
    """HookedEncoder's logits equal HF's BertForMaskedLM's: every real weight made it through strict=False."""
    hf_logits, tl_logits, _, np_logits, _ = _caches(models, batch, optional=False)
    assert (tl_logits - hf_logits).abs().max().item() <= ATOL
    assert (np_logits - hf_logits).abs().max().item() <= ATOL


def test_every_default_hook_matches(models, batch):
    _, _, tl_cache, _, np_cache = _caches(models, batch, optional=False)
    diffs = _compare(tl_cache, np_cache, batch[1])
    # 6 embedding hooks + 18 per block + mlm_head.ln (2) + unembed (2)
    assert len(diffs) == 6 + 18 * N_LAYERS + 4 == 64
    # nodeprobe's only extra default hook is the readout input (= unembed.hook_in for an MLM)
    assert set(np_cache) - set(tl_cache) == {"readout.hook_in"}
    assert torch.equal(np_cache["readout.hook_in"], np_cache["unembed.hook_in"])


def test_every_optional_hook_matches(models, batch):
    hf_logits, tl_logits, tl_cache, np_logits, np_cache = _caches(models, batch, optional=True)
    assert (tl_logits - hf_logits).abs().max().item() <= ATOL
    assert (np_logits - hf_logits).abs().max().item() <= ATOL
    diffs = _compare(tl_cache, np_cache, batch[1])
    extra = {f"blocks.{l}.{h}" for l in range(N_LAYERS) for hs in OPTIONAL.values() for h in hs}
    assert extra <= set(diffs), sorted(extra - set(diffs))
    assert len(diffs) == 64 + len(extra) == 79
    assert set(np_cache) - set(tl_cache) == {"readout.hook_in"}


def test_patterns_equal_everywhere(models, batch):
    _, _, tl_cache, _, np_cache = _caches(models, batch, optional=False)
    for l in range(N_LAYERS):
        name = f"blocks.{l}.attn.hook_pattern"
        assert (np_cache[name] - tl_cache[name]).abs().max().item() <= ATOL
        masked = ~batch[1].bool()[:, None, None, :].expand_as(tl_cache[name])
        assert (tl_cache[name][masked] == 0).all() and (np_cache[name][masked] == 0).all()


def test_shared_hook_names_mean_the_same(models, batch):
    """Every hook point both models define fires in both caches (so it was compared), except
    HookedEncoder's NSP/pooler ones, which nodeprobe does not define; nodeprobe's extra names are
    not HookedEncoder names."""
    _, enc, model = models
    _, _, tl_cache, _, np_cache = _caches(models, batch, optional=True)
    shared = set(enc.hook_dict) & set(model.hook_dict)
    assert shared == set(tl_cache), sorted(shared ^ set(tl_cache))
    assert set(enc.hook_dict) - set(model.hook_dict) == {"pooler.hook_pooler_out", "nsp_head.hook_nsp_out"}
    for name in NODEPROBE_ONLY:
        assert name in model.hook_dict
        assert name not in enc.hook_dict, f"{name} is a HookedEncoder hook point with another meaning"
