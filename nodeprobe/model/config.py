"""The hooked model's configuration: a TransformerLens config filled from the Hugging Face one.

:class:`HookedBertConfig` *is* a ``transformer_lens.config.TransformerLensConfig`` (TL 3.9 and
4.3 both ship it), so TransformerLens's tools read ``model.cfg`` as they read their own models'
(``n_layers``, ``n_heads``, ``d_head``, ``device``, ``normalization_type``, ``attn_only`` …).
nodeprobe adds the output head (``kind``, ``n_classes``), the token-type count, and the switches
for the optional hook points TransformerLens gates the same way (``use_attn_result``,
``use_split_qkv_input``, ``use_attn_in``, ``use_hook_mlp_in``).

Example:
    >>> from transformers import BertConfig
    >>> cfg = HookedBertConfig.from_hf(BertConfig(hidden_size=16, num_attention_heads=4,
    ...                                           num_hidden_layers=2, intermediate_size=32), "mlm")
    >>> cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_vocab_out, cfg.normalization_type
    (2, 4, 4, 30522, 'LN')
    >>> cfg.check_layer(5)
    Traceback (most recent call last):
    ...
    nodeprobe.errors.NodeprobeError: layer=5: the model has blocks 0–1
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from transformer_lens.config import TransformerLensConfig

from nodeprobe.errors import NodeprobeError

# HF activation names → TransformerLens's ``act_fn`` names
_ACT = {"gelu": "gelu", "gelu_new": "gelu_new", "gelu_fast": "gelu_fast", "relu": "relu", "silu": "silu",
        "gelu_pytorch_tanh": "gelu_pytorch_tanh"}


@dataclass
class HookedBertConfig(TransformerLensConfig):
    """TransformerLens's config of a post-LayerNorm BERT encoder, plus nodeprobe's head fields.

    ``kind``: the output head (``mlm`` | ``cls`` | ``base``); ``n_classes``: readout classes K
    (vocab size for MLM, labels for a classifier, 0 for a bare encoder); ``n_types``: token types
    (0: DistilBERT has none); ``family``: the encoder family (:mod:`nodeprobe.model.families`);
    ``d_readout``: the width of ``readout.hook_in`` (``d_model``, except an ELECTRA masked LM whose
    head maps to its embedding width).  ``n_ctx`` is the longest usable sequence (RoBERTa's position
    table holds ``pad_token_id + 1`` more rows).
    """

    kind: str = "mlm"
    n_classes: int = 0
    n_types: int = 2
    d_vocab_out: int = -1
    use_attn_in: bool = False
    use_hook_mlp_in: bool = False
    original_architecture: Optional[str] = None
    model_name: str = "bert"
    attention_dir: str = "bidirectional"
    family: str = "bert"
    d_readout: int = -1

    @classmethod
    def from_hf(cls, hf_config, kind: str, device: str | torch.device | None = "cpu",
                dtype: torch.dtype = torch.float32, family=None, hf_model=None) -> "HookedBertConfig":
        """Fill the config from a Hugging Face config of ``family`` (default BERT; ``kind`` names the
        output head; ``hf_model``, when given, supplies ELECTRA's MLM readout width)."""
        from nodeprobe.model.families import FAMILIES

        fam = family or FAMILIES["bert"]
        size = {k: getattr(hf_config, v) for k, v in fam.size_keys.items()}
        if size["d_model"] % size["n_heads"]:
            raise NodeprobeError(f"hidden size {size['d_model']} does not divide into {size['n_heads']} heads")
        n_classes = {"mlm": size["d_vocab"], "cls": getattr(hf_config, "num_labels", 0), "base": 0}[kind]
        act = getattr(hf_config, fam.act_key, "gelu")
        n_ctx = fam.max_len(hf_config)  # RoBERTa: positions from pad_id + 1, so pad_id + 1 fewer usable ones
        d_readout = size["d_model"]
        if kind == "mlm" and hf_model is not None:
            from nodeprobe.model.families import get

            d_readout = int(get(hf_model, fam.mlm.out).weight.shape[1])  # ELECTRA: embedding_size
        return cls(
            d_model=size["d_model"],
            d_head=size["d_model"] // size["n_heads"],
            n_layers=size["n_layers"],
            n_ctx=n_ctx,
            n_heads=size["n_heads"],
            d_mlp=size["d_mlp"],
            d_vocab=size["d_vocab"],
            d_vocab_out=n_classes if kind != "base" else -1,
            device=str(device) if device is not None else "cpu",
            eps=float(getattr(hf_config, "layer_norm_eps", 1e-12)),
            act_fn=_ACT.get(act, str(act)) if isinstance(act, str) else "custom",
            normalization_type="LN",
            default_prepend_bos=True,  # [CLS] is always there (see HookedBert.to_tokens)
            dtype=dtype,
            kind=kind,
            n_classes=n_classes,
            n_types=getattr(hf_config, "type_vocab_size", 2) if fam.token_type else 0,
            original_architecture=(getattr(hf_config, "architectures", None) or [None])[0],
            model_name=getattr(hf_config, "_name_or_path", "") or fam.name,
            family=fam.name,
            d_readout=d_readout,
        )

    @property
    def max_len(self) -> int:
        """Longest sequence the position embeddings allow (= ``n_ctx``)."""
        return self.n_ctx

    def check_layer(self, layer: int, what: str = "layer") -> None:
        """Raise a one-line error unless ``0 <= layer < n_layers``."""
        if isinstance(layer, bool) or not (isinstance(layer, int) and 0 <= layer < self.n_layers):
            raise NodeprobeError(f"{what}={layer}: the model has blocks 0–{self.n_layers - 1}")

    def check_head(self, head: int, what: str = "head") -> None:
        """Raise a one-line error unless ``0 <= head < n_heads``."""
        if isinstance(head, bool) or not (isinstance(head, int) and 0 <= head < self.n_heads):
            raise NodeprobeError(f"{what}={head}: the model has heads 0–{self.n_heads - 1}")

    def __repr__(self) -> str:
        return "HookedBertConfig(" + ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items()) + ")"
