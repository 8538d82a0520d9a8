"""What TransformerLens's tools call on a model: the protocol, cfg, tokenizer methods, string input,
the mask from the pad token, return_type and loss, incl_bwd caching, residual directions."""

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertTokenizer
from transformer_lens import ActivationCache
from transformer_lens.config import TransformerLensConfig

from nodeprobe.errors import NodeprobeError
from nodeprobe.model import HookedBert, load_model

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat", "dog", "the", "sat", "on", "mat"]


def _tok():
    return BertTokenizer(vocab={t: i for i, t in enumerate(VOCAB)})


def _cfg(**kw):
    return BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=32, max_position_embeddings=16, **kw)


@pytest.fixture(scope="module")
def mlm():
    torch.manual_seed(0)
    return HookedBert(BertForMaskedLM(_cfg()).eval(), tokenizer=_tok())


@pytest.fixture(scope="module")
def cls():
    torch.manual_seed(1)
    return HookedBert(BertForSequenceClassification(_cfg(num_labels=3)).eval(), tokenizer=_tok())


def test_structural_protocol(mlm):
    protocol = pytest.importorskip("transformer_lens.model_protocol", reason="TL 4.x only")
    assert isinstance(mlm, protocol.TransformerLensModelWithWeights)
    assert isinstance(mlm, protocol.TrainableTransformerLensModel)


def test_cfg_is_a_transformer_lens_config(mlm):
    cfg = mlm.cfg
    assert isinstance(cfg, TransformerLensConfig) and cfg is mlm.spec
    assert (cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_model, cfg.d_mlp, cfg.n_ctx, cfg.d_vocab) == (
        2, 4, 4, 16, 32, 16, len(VOCAB))
    assert (cfg.device, cfg.dtype, cfg.act_fn, cfg.normalization_type, cfg.attn_only) == (
        "cpu", torch.float32, "gelu", "LN", False)
    assert cfg.d_vocab_out == len(VOCAB) and cfg.eps == mlm.hf.config.layer_norm_eps


def test_cfg_follows_dtype_and_device_moves():
    m = HookedBert(BertForMaskedLM(_cfg()).eval())
    m.to(torch.float64)
    assert m.cfg.dtype == torch.float64 and m.cfg.device == "cpu"


def test_tokens_round_trip(mlm):
    ids = mlm.to_tokens(["a cat sat", "the dog"])
    assert ids.tolist() == [[2, 5, 6, 9, 3], [2, 8, 7, 3, 0]]
    assert mlm.to_tokens("a cat", prepend_bos=False).tolist() == [[2, 5, 6, 3]]  # [CLS] always there
    assert mlm.to_str_tokens("the mat") == ["[CLS]", "the", "mat", "[SEP]"]
    assert mlm.to_str_tokens(ids)[1] == ["[CLS]", "the", "dog", "[SEP]", "[PAD]"]
    assert mlm.to_string(ids[0]) == "[CLS] a cat sat [SEP]"
    assert mlm.to_single_token("cat") == 6
    with pytest.raises(NodeprobeError, match="'cat sat': is 2 tokens"):
        mlm.to_single_token("cat sat")
    ids, types, mask = mlm.tokenize([("a cat", "sat"), ("dog", "on the mat")])
    assert types.tolist() == [[0, 0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 1, 1]]
    assert mask.tolist() == [[1] * 6 + [0], [1] * 7]


def test_string_input_equals_tokens_with_mask(mlm, cls):
    for m in (mlm, cls):
        ids, types, mask = m.tokenize(["a cat sat on the mat", "dog"])
        ref = m(ids, attention_mask=mask, token_type_ids=types)
        torch.testing.assert_close(m(["a cat sat on the mat", "dog"]), ref, rtol=0, atol=0)
        torch.testing.assert_close(m("dog"), m(ids[1:, :3], attention_mask=mask[1:, :3]), rtol=0, atol=1e-6)


def test_padded_batch_without_mask_masks_the_pad_token(mlm):
    ids, _, mask = mlm.tokenize(["a cat sat on the mat", "dog"])
    assert (ids == 0).any()
    torch.testing.assert_close(mlm(ids), mlm(ids, attention_mask=mask), rtol=0, atol=0)
    # HF itself (and a model without a tokenizer) attends to [PAD] when no mask is given
    bare = HookedBert(mlm.hf)
    torch.testing.assert_close(bare(ids), mlm.hf(input_ids=ids).logits, rtol=0, atol=1e-5)
    assert (bare(ids) - mlm(ids)).abs().max() > 1e-4


def test_without_a_tokenizer_string_input_is_a_one_line_error():
    m = HookedBert(BertForMaskedLM(_cfg()).eval())
    with pytest.raises(NodeprobeError, match="needs a tokenizer"):
        m("a cat")
    with pytest.raises(NodeprobeError, match="tokenizer=int"):
        HookedBert(BertForMaskedLM(_cfg()).eval(), tokenizer=3)


def test_return_types_and_loss(mlm, cls):
    ids, _, mask = mlm.tokenize(["a cat sat", "the dog"])
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 1] = 6, 8
    logits = mlm(ids, attention_mask=mask)
    want = F.cross_entropy(logits.reshape(-1, len(VOCAB)), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(mlm(ids, attention_mask=mask, return_type="loss", labels=labels), want)
    hf_loss = mlm.hf(input_ids=ids, attention_mask=mask, labels=labels).loss
    torch.testing.assert_close(want, hf_loss, rtol=1e-5, atol=1e-6)
    out, loss = mlm(ids, attention_mask=mask, return_type="both", labels=labels)
    torch.testing.assert_close(out, logits)
    torch.testing.assert_close(loss, want)
    assert mlm(ids, return_type=None) is None
    y = torch.tensor([2, 0])
    torch.testing.assert_close(cls(ids, attention_mask=mask, return_type="loss", labels=y),
                               cls.hf(input_ids=ids, attention_mask=mask, labels=y).loss, rtol=1e-5, atol=1e-6)
    with pytest.raises(NodeprobeError, match="return_type='probs': expected one of"):
        mlm(ids, return_type="probs")
    with pytest.raises(NodeprobeError, match="needs labels="):
        mlm(ids, return_type="loss")
    with pytest.raises(NodeprobeError, match=r"labels shape \(2,\): expected \(2, 5\)"):
        mlm(ids, return_type="loss", labels=y)
    with pytest.raises(NodeprobeError, match="padding_side='left'"):
        mlm(ids, padding_side="left")


def test_run_with_cache_is_an_activation_cache_with_gradients(mlm):
    ids, _, mask = mlm.tokenize(["a cat sat", "the dog"])
    labels = torch.full_like(ids, -100)
    labels[0, 2] = 6
    loss, cache = mlm.run_with_cache(ids, attention_mask=mask, return_type="loss", labels=labels, incl_bwd=True,
                                     names_filter=lambda n: n.endswith(("hook_z", "unembed.hook_out")))
    assert isinstance(cache, ActivationCache)
    assert torch.equal(cache["z", 1], cache["blocks.1.attn.hook_z"])
    # the cached gradient of the logits is d loss / d logits, by hand
    logits = cache["unembed.hook_out"].detach().requires_grad_(True)
    F.cross_entropy(logits.reshape(-1, len(VOCAB)), labels.reshape(-1), ignore_index=-100).backward()
    torch.testing.assert_close(cache["unembed.hook_out_grad"], logits.grad, rtol=1e-5, atol=1e-7)
    assert cache["blocks.0.attn.hook_z_grad"].shape == cache["blocks.0.attn.hook_z"].shape
    _, plain = mlm.run_with_cache(ids, return_cache_object=False, names_filter="blocks.0.attn.hook_z")
    assert type(plain) is dict


def test_residual_directions_give_the_logits(mlm, cls):
    for m in (mlm, cls):
        ids, _, mask = m.tokenize(["a cat sat", "the dog"])
        logits, cache = m.run_with_cache(ids, attention_mask=mask, names_filter="readout.hook_in")
        r = cache["readout.hook_in"]
        t = torch.tensor([1, 2])
        d = m.tokens_to_residual_directions(t)  # [2, D]
        _, b = m.readout_weights()
        if m.kind == "mlm":
            torch.testing.assert_close((r[:, 1] * d).sum(-1) + b[t], logits[:, 1, t].diagonal(), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(m.tokens_to_residual_directions("cat"), m.W_U[:, 6])
        else:
            torch.testing.assert_close((r * d).sum(-1) + b[t], logits[torch.arange(2), t], rtol=1e-5, atol=1e-5)
    with pytest.raises(NodeprobeError, match="ids must be in 0–2"):
        cls.tokens_to_residual_directions(3)
    assert mlm.ln_final is mlm.mlm_head.ln and cls.ln_final is None


def test_accumulated_bias_is_tls_literal_sum(mlm):
    want = mlm.blocks[0].attn.b_O + mlm.blocks[0].mlp.b_out + mlm.blocks[1].attn.b_O
    torch.testing.assert_close(mlm.accumulated_bias(1, mlp_input=True), want.detach())
    torch.testing.assert_close(mlm.accumulated_bias(0), torch.zeros(16))
    with pytest.raises(NodeprobeError, match="layer=3: expected 0–2"):
        mlm.accumulated_bias(3)


def test_load_model_brings_the_folders_tokenizer(tmp_path):
    torch.manual_seed(2)
    hf = BertForMaskedLM(_cfg())
    hf.save_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    m = load_model(tmp_path)
    assert m.to_str_tokens("the cat") == ["[CLS]", "the", "cat", "[SEP]"]
    assert load_model(hf, tokenizer=_tok()).to_tokens("a").tolist() == [[2, 5, 3]]
    assert load_model(hf).tokenizer is None


def test_tl_call_styles(mlm):
    ids = mlm.to_tokens(["a cat", "the dog"])
    torch.testing.assert_close(mlm(input=ids), mlm(ids), rtol=0, atol=0)
    torch.testing.assert_close(mlm(ids.tolist()), mlm(ids), rtol=0, atol=0)  # nested lists of ids
    assert mlm.to_str_tokens(["a cat", "dog"]) == [["[CLS]", "a", "cat", "[SEP]"], ["[CLS]", "dog", "[SEP]"]]
    with pytest.raises(NodeprobeError, match="'zebra': not in the vocabulary"):
        mlm.to_single_token("zebra")
    with pytest.raises(NodeprobeError, match="give the tokens once"):
        mlm(ids, input=ids)


def test_a_folder_whose_vocab_does_not_fit_loads_without_a_tokenizer(tmp_path):
    torch.manual_seed(3)
    BertForMaskedLM(_cfg()).save_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB + ["extra"]) + "\n")  # 13 tokens, 12 embeddings
    assert load_model(tmp_path).tokenizer is None
