"""TransformerLens-shaped views of a Hugging Face BERT's weights (``W_Q``, ``W_O``, ``W_in``, ``W_E`` …).

HF ``nn.Linear`` stores ``weight`` as ``[out, in]`` and computes ``x @ weight.T + bias``;
TransformerLens stores per-head matrices that multiply from the right.  These properties are views
(no copy) of the HF parameters in TL's layout, so that

* ``hook_q = resid_pre @ W_Q + b_Q`` per head (``W_Q`` ``[H, D, Dh]``, ``b_Q`` ``[H, Dh]``; BERT's
  attention reads the block input itself: LayerNorm comes *after* each sublayer),
* ``hook_attn_out = Σ_h z_h @ W_O[h] + b_O`` (``W_O`` ``[H, Dh, D]``),
* ``mlp.hook_pre = x @ W_in + b_in``, ``hook_mlp_out = mlp.hook_post @ W_out + b_out``,
* ``W_E`` ``[V, D]`` token embeddings, ``W_pos`` ``[n_ctx, D]``, ``W_U`` ``[D, K]`` / ``b_U`` the
  readout (``logits = readout.hook_in @ W_U + b_U``), ``QK`` / ``OV`` TransformerLens
  ``FactoredMatrix``-es ``[L, H, D, D]``.

Example:
    >>> import torch
    >>> from transformers import BertConfig, BertForMaskedLM
    >>> from nodeprobe.model import HookedBert
    >>> m = HookedBert(BertForMaskedLM(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=2,
    ...                                            num_attention_heads=2, intermediate_size=16)).eval())
    >>> m.W_Q.shape, m.blocks[1].attn.W_O.shape, m.W_in.shape, m.W_U.shape
    (torch.Size([2, 2, 8, 4]), torch.Size([2, 4, 8]), torch.Size([2, 8, 16]), torch.Size([8, 30]))
"""

from __future__ import annotations

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn


class AttentionWeights:
    """``W_Q W_K W_V W_O`` and biases of one block, from its family's q/k/v/out ``nn.Linear`` s
    (``self._q``, ``_k``, ``_v``, ``_o``: set by the block from its family's module map)."""

    _q: nn.Linear
    _k: nn.Linear
    _v: nn.Linear
    _o: nn.Linear
    n_heads: int

    def _heads(self, linear: nn.Linear, bias: bool = False) -> Tensor:
        """A q/k/v projection per head: weight ``[H, D, Dh]`` (right-multiplying) or bias ``[H, Dh]``."""
        if bias:
            return rearrange(linear.bias, "(h dh) -> h dh", h=self.n_heads)
        return rearrange(linear.weight, "(h dh) d -> h d dh", h=self.n_heads)

    W_Q = property(lambda self: self._heads(self._q), doc="``[H, D, Dh]``")
    W_K = property(lambda self: self._heads(self._k), doc="``[H, D, Dh]``")
    W_V = property(lambda self: self._heads(self._v), doc="``[H, D, Dh]``")
    b_Q = property(lambda self: self._heads(self._q, bias=True), doc="``[H, Dh]``")
    b_K = property(lambda self: self._heads(self._k, bias=True), doc="``[H, Dh]``")
    b_V = property(lambda self: self._heads(self._v, bias=True), doc="``[H, Dh]``")

    @property
    def W_O(self) -> Float[Tensor, "H Dh D"]:
        return rearrange(self._o.weight, "d (h dh) -> h dh d", h=self.n_heads)

    @property
    def b_O(self) -> Float[Tensor, "D"]:
        return self._o.bias


class MLPWeights:
    """``W_in b_in W_out b_out`` of one block, from its family's MLP ``nn.Linear`` s (``self._fc_in``, ``_fc_out``)."""

    _fc_in: nn.Linear
    _fc_out: nn.Linear

    @property
    def W_in(self) -> Float[Tensor, "D F"]:
        return self._fc_in.weight.T

    @property
    def b_in(self) -> Float[Tensor, "F"]:
        return self._fc_in.bias

    @property
    def W_out(self) -> Float[Tensor, "F D"]:
        return self._fc_out.weight.T

    @property
    def b_out(self) -> Float[Tensor, "D"]:
        return self._fc_out.bias


def _stack(part: str, name: str, doc: str):
    """A per-block weight (``blocks[l].<part>.<name>``) stacked over the blocks."""

    def get(self) -> Tensor:
        return torch.stack([getattr(getattr(b, part), name) for b in self.blocks])

    get.__doc__ = doc
    return property(get)


class ModelWeights:
    """Model-level weights in TransformerLens's layout (stacked over blocks: leading ``[L]``)."""

    W_Q = _stack("attn", "W_Q", "``[L, H, D, Dh]``")
    W_K = _stack("attn", "W_K", "``[L, H, D, Dh]``")
    W_V = _stack("attn", "W_V", "``[L, H, D, Dh]``")
    W_O = _stack("attn", "W_O", "``[L, H, Dh, D]``")
    b_Q = _stack("attn", "b_Q", "``[L, H, Dh]``")
    b_K = _stack("attn", "b_K", "``[L, H, Dh]``")
    b_V = _stack("attn", "b_V", "``[L, H, Dh]``")
    b_O = _stack("attn", "b_O", "``[L, D]``")
    W_in = _stack("mlp", "W_in", "``[L, D, F]``")
    b_in = _stack("mlp", "b_in", "``[L, F]``")
    W_out = _stack("mlp", "W_out", "``[L, F, D]``")
    b_out = _stack("mlp", "b_out", "``[L, D]``")

    @property
    def W_E(self) -> Float[Tensor, "V D"]:
        """Token embeddings (``[V, E]``: ELECTRA's embedding width E may differ from D)."""
        return self.embed._word.weight

    @property
    def W_pos(self) -> Float[Tensor, "n_ctx D"]:
        """Position embeddings."""
        return self.embed._pos.weight

    @property
    def W_token_type(self) -> Float[Tensor, "n_types D"]:
        """Token-type (segment) embeddings (DistilBERT has none: an error)."""
        if self.embed._types is None:
            from nodeprobe.errors import NodeprobeError

            raise NodeprobeError(f"W_token_type: a {type(self.hf).__name__} has no token-type embeddings")
        return self.embed._types.weight

    @property
    def W_U(self) -> Float[Tensor, "D K"]:
        """The readout's final linear map: ``logits = readout.hook_in @ W_U + b_U``."""
        return self.readout_weights()[0].T

    @property
    def b_U(self) -> Float[Tensor, "K"]:
        return self.readout_weights()[1]

    @property
    def QK(self):
        """``FactoredMatrix(W_Q, W_Kᵀ)`` ``[L, H, D, D]``: query-side residual × key-side residual."""
        from transformer_lens import FactoredMatrix

        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    @property
    def OV(self):
        """``FactoredMatrix(W_V, W_O)`` ``[L, H, D, D]``: what a head writes per unit of attended input."""
        from transformer_lens import FactoredMatrix

        return FactoredMatrix(self.W_V, self.W_O)
