"""What TransformerLens's tools call on a model, for :class:`~nodeprobe.model.bert.HookedBert`.

TransformerLens 4.3 types its interpretability utilities (``patching``, ``ActivationCache``,
``head_detector``) against the structural protocol
``transformer_lens.model_protocol.TransformerLensModelWithWeights``: ``cfg``, ``run_with_cache``,
``run_with_hooks``, ``to_tokens``, ``blocks``, ``ln_final``, ``accumulated_bias``,
``to_single_token``, ``tokens_to_residual_directions``.  SAELens (TL 3.x) also calls
``to_tokens(text, truncate=, move_to_device=, prepend_bos=)`` and reads ``model.tokenizer``.
This mixin supplies them with BERT's meanings:

* **Tokens.** ``to_tokens`` returns ``[B, P]`` ids with [CLS] … [SEP] and right padding, as the
  tokenizer builds them; ``prepend_bos`` is accepted for TL compatibility and ignored — [CLS] is
  always there (BERT was trained with it), so ``prepend_bos=False`` does not remove it.
  :meth:`tokenize` also returns the token types and the attention mask (``HookedEncoder.to_tokens``'s triple).
* **Residual directions.** ``tokens_to_residual_directions(t)`` is ``W_U[:, t]`` (MLM) or the
  classifier row of label ``t`` (classifier): the direction in the space of ``readout.hook_in``
  (= ``unembed.hook_in``) whose dot product is the logit minus ``b_U``.
* **ln_final** is the LayerNorm at the end of the MLM prediction-head transform (``mlm_head.ln``),
  the last LayerNorm before the unembedding; a classifier or bare encoder has none (``None``).
* **accumulated_bias(layer)** is TransformerLens's literal sum of ``b_O`` and ``b_out`` of the
  blocks before ``layer``.  In a post-LayerNorm model those biases do not add up in the residual
  stream (each LayerNorm rescales them); :class:`~nodeprobe.model.tl_cache.BertActivationCache`
  carries them through the LayerNorms for its decompositions.

Example:
    >>> model.to_str_tokens("a cat")                       # doctest: +SKIP
    ['[CLS]', 'a', 'cat', '[SEP]']
    >>> logits, cache = model.run_with_cache(["a cat", "dogs"])   # doctest: +SKIP
    >>> cache.stack_head_results(layer=-1).shape           # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from nodeprobe.errors import NodeprobeError

RETURN_TYPES = ("logits", "loss", "both", None)


def as_hf_tokenizer(tokenizer):
    """An HF tokenizer for ``tokenizer``: HF ones pass through; a nodeprobe
    :class:`~nodeprobe.data.tokenizer.Tokenizer` becomes ``transformers.BertTokenizer`` over the same
    vocab (same ids); a :class:`~nodeprobe.data.hf_tokenizer.HFTokenizer` gives the tokenizer it wraps."""
    if tokenizer is None or callable(getattr(tokenizer, "batch_decode", None)):
        return tokenizer
    if getattr(tokenizer, "hf", None) is not None:  # nodeprobe's HFTokenizer: the HF tokenizer it wraps
        return tokenizer.hf
    vocab = getattr(tokenizer, "vocab", None)
    if isinstance(vocab, dict) and hasattr(tokenizer, "cls_id"):
        from transformers import BertTokenizer

        return BertTokenizer(vocab=dict(vocab), do_lower_case=getattr(tokenizer, "lowercase", True))
    raise NodeprobeError(f"tokenizer={type(tokenizer).__name__}: expected a Hugging Face tokenizer or a "
                         "nodeprobe Tokenizer")


class TransformerLensSurface:
    """Mixin for :class:`~nodeprobe.model.bert.HookedBert`: the tokenizer methods, residual
    directions and the ``ActivationCache``-returning ``run_with_cache`` TransformerLens's tools use."""

    # ------------------------------------------------------------------ tokenizer
    @property
    def tokenizer(self):
        """The Hugging Face tokenizer (``None`` without one); a nodeprobe ``Tokenizer`` given to the
        model becomes a ``transformers.BertTokenizer`` on first use."""
        src = self.__dict__.get("_tokenizer_src")
        if src is not None and self.__dict__.get("_tokenizer_hf") is None:
            self.__dict__["_tokenizer_hf"] = as_hf_tokenizer(src)
        return self.__dict__.get("_tokenizer_hf")

    @tokenizer.setter
    def tokenizer(self, tok) -> None:
        if tok is not None and not callable(getattr(tok, "batch_decode", None)) and not hasattr(tok, "cls_id"):
            raise NodeprobeError(f"tokenizer={type(tok).__name__}: expected a Hugging Face tokenizer or a "
                                 "nodeprobe Tokenizer")
        self.__dict__["_tokenizer_src"] = tok
        self.__dict__["_tokenizer_hf"] = None

    def _need_tokenizer(self, what: str):
        if self.tokenizer is None:
            raise NodeprobeError(f"{what} needs a tokenizer: load the model from a folder with vocab.txt, "
                                 "or pass load_model(hf_model, tokenizer=tok)")
        return self.tokenizer

    def tokenize(self, input: str | Sequence[str], truncate: bool = True, move_to_device: bool = True
                 ) -> tuple[Int[Tensor, "B P"], Int[Tensor, "B P"], Int[Tensor, "B P"]]:
        """``(input_ids, token_type_ids, attention_mask)`` of a string or a list of strings (right
        padding; a pair ``(text_a, text_b)`` per item gives token types 0/1), as ``HookedEncoder.to_tokens``."""
        tok = self._need_tokenizer("tokenize")
        if isinstance(input, str):
            input = [input]
        if not isinstance(input, (list, tuple)) or not input:
            raise NodeprobeError(f"input={input!r}: expected a string or a non-empty list of strings")
        if all(isinstance(t, (list, tuple)) and len(t) == 2 for t in input):
            enc = tok([a for a, _ in input], [b for _, b in input], padding=True, truncation=truncate,
                      max_length=self.cfg.n_ctx if truncate else None, return_tensors="pt")
        elif all(isinstance(t, str) for t in input):
            enc = tok(list(input), padding=True, truncation=truncate,
                      max_length=self.cfg.n_ctx if truncate else None, return_tensors="pt")
        else:
            raise NodeprobeError("input: expected strings, or (text_a, text_b) pairs")
        ids = enc["input_ids"]
        types = enc.get("token_type_ids", torch.zeros_like(ids))
        mask = enc.get("attention_mask", torch.ones_like(ids))
        if move_to_device:
            dev = self.cfg.device
            ids, types, mask = ids.to(dev), types.to(dev), mask.to(dev)
        return ids, types, mask

    def to_tokens(self, input: str | Sequence[str], prepend_bos: bool | None = None,
                  padding_side: str | None = None, move_to_device: bool = True, truncate: bool = True
                  ) -> Int[Tensor, "B P"]:
        """Token ids ``[B, P]`` of a string or list of strings, as TransformerLens's ``to_tokens``.

        ``prepend_bos`` is accepted and ignored ([CLS] is always there); ``padding_side`` may be
        ``"right"`` (BERT's; ``None`` means it).

        Example:
            >>> model.to_tokens(["a cat", "dogs"])      # doctest: +SKIP
            tensor([[  2,   5,   6,   3], [  2,   7,   3,   0]])
        """
        if padding_side not in (None, "right"):
            raise NodeprobeError(f"padding_side={padding_side!r}: BERT pads on the right (allowed: 'right', None)")
        return self.tokenize(input, truncate=truncate, move_to_device=move_to_device)[0]

    def to_str_tokens(self, input: str | Tensor | Sequence[int], prepend_bos: bool | None = None) -> list:
        """The tokens as strings: of one string (``['[CLS]', 'a', 'cat', '[SEP]']``), of a 1-D id
        tensor or list, or a list of lists for a ``[B, P]`` tensor."""
        tok = self._need_tokenizer("to_str_tokens")
        if isinstance(input, str):
            ids = self.to_tokens(input, move_to_device=False)[0]
            return tok.convert_ids_to_tokens(ids.tolist())
        if isinstance(input, (list, tuple)) and input and all(isinstance(t, str) for t in input):
            return [self.to_str_tokens(t) for t in input]  # one list per string, as TransformerLens
        if isinstance(input, Tensor):
            if input.dim() == 2:
                return [tok.convert_ids_to_tokens(r.tolist()) for r in input]
            input = input.reshape(-1).tolist()
        return tok.convert_ids_to_tokens(list(input))

    def to_string(self, tokens: Tensor | Sequence[int]) -> str | list[str]:
        """Decode ids to text (``[B, P]`` → a list of strings), special tokens kept."""
        tok = self._need_tokenizer("to_string")
        if isinstance(tokens, Tensor) and tokens.dim() == 2:
            return [tok.decode(r.tolist()) for r in tokens]
        ids = tokens.reshape(-1).tolist() if isinstance(tokens, Tensor) else list(tokens)
        return tok.decode(ids)

    def to_single_token(self, string: str) -> int:
        """The id of ``string`` when it is exactly one token (no [CLS]/[SEP])."""
        tok = self._need_tokenizer("to_single_token")
        ids = tok(string, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise NodeprobeError(f"string={string!r}: is {len(ids)} tokens, expected exactly one")
        unk = getattr(tok, "unk_token_id", None)
        if unk is not None and ids[0] == unk and string != getattr(tok, "unk_token", None):
            raise NodeprobeError(f"string={string!r}: not in the vocabulary (it tokenizes to the unknown token)")
        return int(ids[0])

    # ------------------------------------------------------------------ readout directions
    def tokens_to_residual_directions(self, tokens: str | int | Tensor) -> Float[Tensor, "... D"]:
        """Readout directions of tokens (MLM) or labels (classifier): ``W_U[:, t]`` ``[..., D]``.

        ``readout.hook_in · direction + b_U[t]`` is the logit of ``t``.
        """
        if isinstance(tokens, str):
            tokens = self.to_single_token(tokens)
        W, _ = self.readout_weights()  # [K, D]
        t = torch.as_tensor(tokens, device=W.device)
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= W.shape[0]):
            raise NodeprobeError(f"tokens: ids must be in 0–{W.shape[0] - 1} (the readout has {W.shape[0]} classes)")
        return W[t]

    @property
    def ln_final(self):
        """The last LayerNorm before the unembedding (MLM: ``mlm_head.ln``), else ``None``."""
        return getattr(getattr(self, "mlm_head", None), "ln", None)

    def accumulated_bias(self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True
                         ) -> Float[Tensor, " D"]:
        """TransformerLens's sum of the attention (``b_O``) and MLP (``b_out``) output biases of the
        blocks before ``layer`` (and ``b_O`` of ``layer`` with ``mlp_input``).  Literal: in a
        post-LayerNorm model the residual stream does not add them up (see the module docstring)."""
        L = self.cfg.n_layers
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= L:
            raise NodeprobeError(f"layer={layer}: expected 0–{L}")
        if mlp_input and layer == L:
            raise NodeprobeError(f"layer={layer}: mlp_input needs a block (0–{L - 1})")
        total = torch.zeros(self.cfg.d_model, device=self.blocks[0].attn.b_O.device,
                            dtype=self.blocks[0].attn.b_O.dtype)
        for l in range(layer):
            total = total + self.blocks[l].attn.b_O
            if include_mlp_biases:
                total = total + self.blocks[l].mlp.b_out
        if mlp_input:
            total = total + self.blocks[layer].attn.b_O
        return total.detach()

    # ------------------------------------------------------------------ switches (TL's names)
    def set_use_attn_result(self, use_attn_result: bool) -> None:
        """Fire ``attn.hook_result`` (per-head outputs after ``W_O``, ``[B, P, H, D]``)."""
        self.cfg.use_attn_result = bool(use_attn_result)

    def set_use_split_qkv_input(self, use_split_qkv_input: bool) -> None:
        """Fire ``hook_q_input`` / ``hook_k_input`` / ``hook_v_input`` (``[B, P, H, D]``)."""
        self.cfg.use_split_qkv_input = bool(use_split_qkv_input)

    def set_use_attn_in(self, use_attn_in: bool) -> None:
        """Fire ``hook_attn_in`` (the attention input, one copy per head, ``[B, P, H, D]``)."""
        self.cfg.use_attn_in = bool(use_attn_in)

    def set_use_hook_mlp_in(self, use_hook_mlp_in: bool) -> None:
        """Fire ``hook_mlp_in`` (= ``hook_resid_mid``, the input of LN1 before the MLP)."""
        self.cfg.use_hook_mlp_in = bool(use_hook_mlp_in)

    # ------------------------------------------------------------------ caching
    def run_with_cache(self, *model_args, return_cache_object: bool = True, remove_batch_dim: bool = False,
                       **kwargs):
        """``(output, cache)`` with ``cache`` a ``transformer_lens.ActivationCache``
        (:class:`~nodeprobe.model.tl_cache.BertActivationCache`: its decompositions know post-LN BERT).

        Everything ``HookedRootModule.run_with_cache`` takes (``names_filter``, ``device``,
        ``incl_bwd`` — with ``return_type="loss"`` and ``labels`` —, ``reset_hooks_end``) and every
        forward argument.  ``return_cache_object=False`` gives the plain dict.
        """
        out, cache_dict = super().run_with_cache(*model_args, remove_batch_dim=remove_batch_dim, **kwargs)
        if not return_cache_object:
            return out, cache_dict
        from nodeprobe.model.tl_cache import BertActivationCache

        return out, BertActivationCache(cache_dict, self, has_batch_dim=not remove_batch_dim)
