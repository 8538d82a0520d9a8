"""TransformerLens's ``ActivationCache`` for post-LayerNorm BERT.

:class:`BertActivationCache` is a ``transformer_lens.ActivationCache`` (``cache["z", 0]``,
``remove_batch_dim``, ``.to``, ``compute_head_results``, ``stack_activation`` … work as in
TransformerLens); the methods whose TransformerLens meaning assumes a pre-LayerNorm residual
stream are redefined for BERT (docs/methods.md, "ActivationCache on post-LayerNorm BERT").

**The stream and its LayerNorms.**  Every LayerNorm of BERT sits *on* the residual stream::

    x_0 = LN_E(tok + type + pos)            (embed.ln → hook_full_embed = blocks.0.hook_resid_pre)
    y_l = LN1_l(x_l + a_l)                   (the MLP input of block l)
    x_{l+1} = LN2_l(y_l + m_l)               (hook_normalized_resid_post of l = hook_resid_pre of l+1)

With its cached scale ``s`` (``*.hook_scale``) a LayerNorm is affine: ``LN(v) = T(v) + b`` with
``T(c) = w ⊙ (c − mean c) / s`` linear, so ``LN(Σ c_i) = Σ T(c_i) + b`` exactly.  A component
entering the stream (an embedding, an attention or MLP output, a head's or neuron's result) is
*carried* to a later point by applying ``T`` of every LayerNorm in between; the LayerNorm biases,
carried the same way, make one more component (``ln_bias``).  The carried components sum to the
stream at that point exactly (up to float rounding).

"Point" ``layer`` means the input of block ``layer`` (``blocks.{layer}.hook_resid_pre``;
``layer = n_layers``, ``-1`` or ``None``: the last block's output, ``hook_normalized_resid_post``),
and with ``mlp_input=True`` the MLP input ``y`` of block ``layer``.

Example:
    >>> logits, cache = model.run_with_cache(ids, attention_mask=mask)        # doctest: +SKIP
    >>> parts, labels = cache.decompose_resid(layer=2, return_labels=True)   # doctest: +SKIP
    >>> torch.allclose(parts.sum(0), cache["resid_pre", 2], atol=1e-5)       # doctest: +SKIP
    True
"""

from __future__ import annotations

from typing import Literal, Optional, Union

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import ActivationCache
from transformer_lens.utilities import Slice, SliceInput

from nodeprobe.errors import NodeprobeError

_LENS = "nodeprobe.studies.lens (lens_predictions / lens_path: the trained readout path applied to each point)"
_NO_APPLY_LN = ("apply_ln=True: on post-LayerNorm BERT the components already pass through every LayerNorm up "
                "to this point and sum to the stream itself; use apply_ln=False")

Stack = Float[Tensor, "component *batch_and_pos d_model"]
Points = Float[Tensor, "point *batch_and_pos d_model"]
Tokens = Union[str, int, Int[Tensor, ""], Int[Tensor, " batch"], Int[Tensor, "batch pos"]]


def _as_slice(s: Union[Slice, SliceInput]) -> Slice:
    return s if isinstance(s, Slice) else Slice(s)


def _neuron_slice(s: Union[Slice, SliceInput]) -> Slice:
    """A neuron slice that never collapses the neuron axis (an int ``n`` means ``[n]``)."""
    s = _as_slice(s)
    return Slice([s.slice]) if s.mode == "int" else s


def _project_2d(p: Optional[Tensor]) -> tuple[Optional[Tensor], bool]:
    if p is None:
        return None, False
    return (p[:, None], True) if p.ndim == 1 else (p, False)


class BertActivationCache(ActivationCache):
    """``ActivationCache`` of a :class:`~nodeprobe.model.bert.HookedBert` run, with post-LN meanings.

    The decompositions (:meth:`decompose_resid`, :meth:`stack_head_results` with ``apply_ln``,
    :meth:`stack_neuron_results` with ``apply_ln``, :meth:`get_full_resid_decomposition`) carry each
    component through the LayerNorms with their cached scales, so that they sum exactly to the
    stream; :meth:`apply_ln_to_stack` applies the linear part of one LayerNorm.  See the module
    docstring for "point", "carry" and ``ln_bias``.
    """

    def __init__(self, cache_dict: dict[str, Tensor], model, has_batch_dim: bool = True):
        super().__init__(cache_dict, model, has_batch_dim=has_batch_dim)
        # TransformerLens looks for "hook_embed" / "hook_pos_embed"; BERT's are under embed.*
        self.has_embed = "embed.hook_embed" in self.cache_dict
        self.has_pos_embed = "embed.hook_pos_embed" in self.cache_dict

    # ================================================================== helpers
    @property
    def _n_layers(self) -> int:
        return self.model.cfg.n_layers

    def _get(self, key: str) -> Tensor:
        if key not in self.cache_dict:
            raise NodeprobeError(f"cache has no {key}: run run_with_cache without a names_filter that leaves it out")
        return self.cache_dict[key]

    def _layer(self, layer: Optional[int], mlp_input: bool = False, what: str = "layer") -> int:
        """``None``/``-1`` → ``n_layers``; anything outside ``0 … n_layers`` is a one-line error."""
        L = self._n_layers
        if layer is None or (isinstance(layer, int) and not isinstance(layer, bool) and layer == -1):
            layer = L
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= L:
            raise NodeprobeError(f"{what}={layer}: expected 0–{L} or -1 (None and -1 mean {L}, after the last block)")
        if mlp_input and layer == L:
            raise NodeprobeError(f"{what}={layer} with mlp_input=True: MLP inputs exist for blocks 0–{L - 1}")
        return layer

    @staticmethod
    def _point(layer: int, mlp_input: bool) -> int:
        """Index of the LayerNorm whose output is the point: 0 embed.ln, 2l+1 ln1 of l, 2l+2 ln2 of l."""
        return 2 * layer + int(mlp_input)

    def _ln(self, k: int) -> tuple[torch.nn.Module, str]:
        """LayerNorm ``k`` of the stream's chain (see :meth:`_point`) and its hook-name prefix."""
        if k == 0:
            return self.model.embed.ln, "embed.ln"
        l, r = divmod(k - 1, 2)
        block = self.model.blocks[l]
        return (block.ln1, f"blocks.{l}.ln1") if r == 0 else (block.ln2, f"blocks.{l}.ln2")

    def _scale(self, prefix: str, pos_slice: Slice, batch_slice: Optional[Slice] = None) -> Tensor:
        """The cached ``{prefix}.hook_scale`` ``[*batch, pos, 1]`` with the slices applied."""
        s = pos_slice.apply(self._get(f"{prefix}.hook_scale"), dim=-2)
        if batch_slice is not None and self.has_batch_dim:
            s = batch_slice.apply(s, dim=0)
        return s

    @staticmethod
    def _linear(v: Tensor, ln: torch.nn.Module, scale: Tensor | None = None) -> Tensor:
        """``T(v) = w ⊙ (v − mean v) / scale`` (no bias); without ``scale`` the scale-free part."""
        v = (v - v.mean(-1, keepdim=True)) * ln.w.to(v.device)
        return v if scale is None else v / scale.to(v.device)

    def _embed_hooks(self) -> list[tuple[str, str]]:
        """The embedding components ``(label, hook)``: token, token type (a model that has them), position."""
        types = getattr(self.model.embed, "_types", True) is not None
        return [("embed", "embed.hook_embed")] + ([("token_type_embed", "embed.hook_token_type_embed")] if types
                                                   else []) + [("pos_embed", "embed.hook_pos_embed")]

    def _project(self, v: Tensor, k: int) -> Tensor:
        """After LayerNorm 0, ELECTRA's embedding projection ``E → D`` (its linear part); else ``v``."""
        proj = getattr(self.model.embed, "_project", None) if k == 0 else None
        return v if proj is None else v @ proj.weight.detach().to(v.device).T

    def _carry(self, v: Tensor, start: int, stop: int, pos_slice: Slice) -> Tensor:
        """``v`` (``[..., *batch_and_pos, D]`` or ``[D]``) through LayerNorms ``start … stop`` (cached scales)."""
        for k in range(start, stop + 1):
            ln, prefix = self._ln(k)
            v = self._project(self._linear(v, ln, self._scale(prefix, pos_slice)), k)
        return v

    def _unscaled(self, v: Tensor, start: int, stop: int) -> Tensor:
        """The scale-free part of :meth:`_carry` (centre, multiply by w), which does not depend on the position."""
        for k in range(start, stop + 1):
            v = self._project(self._linear(v, self._ln(k)[0]), k)
        return v

    def _scale_product(self, start: int, stop: int, pos_slice: Slice) -> Tensor | float:
        """``Π_k s_k`` over LayerNorms ``start … stop`` (1 if none), so that carry = unscaled / product."""
        out: Tensor | float = 1.0
        for k in range(start, stop + 1):
            s = self._scale(self._ln(k)[1], pos_slice)
            out = out * s.to(torch.promote_types(s.dtype, torch.float32))
        return out

    def _stream(self, layer: int, mlp_input: bool, pos_slice: Slice) -> Float[Tensor, "*batch_and_pos d_model"]:
        """The residual stream at a point (see the module docstring), pos-sliced."""
        if mlp_input:
            ln = self.model.blocks[layer].ln1
            n = self._get(f"blocks.{layer}.ln1.hook_normalized")
            v = n * ln.w.detach().to(n.device) + ln.b.detach().to(n.device)
        elif layer == self._n_layers:
            v = self._get(f"blocks.{layer - 1}.hook_normalized_resid_post")
        else:
            v = self._get(f"blocks.{layer}.hook_resid_pre")
        return pos_slice.apply(v, dim=-2)

    def _ln_bias(self, stop: int, pos_slice: Slice, like: Tensor) -> Tensor:
        """Every LayerNorm bias ``b_k`` (k ≤ stop) carried through LayerNorms ``k+1 … stop``, shaped as ``like``."""
        total = torch.zeros_like(like)
        for k in range(stop + 1):
            b = self._ln(k)[0].b.to(like.device)
            proj = getattr(self.model.embed, "_project", None) if k == 0 else None
            if proj is not None:  # ELECTRA: the embedding LayerNorm's bias, projected, and the projection's bias
                b = self._project(b, 0) + proj.bias.detach().to(like.device)
            total = total + self._carry(b, k + 1, stop, pos_slice)
        return total

    def _empty(self, pos_slice: Slice, last: Optional[int] = None) -> Tensor:
        ref = pos_slice.apply(self._get("hook_full_embed"), dim=-2)
        shape = (*ref.shape[:-1], ref.shape[-1] if last is None else last)
        return ref.new_zeros(0, *shape)

    def _head_result(self, layer: int) -> Float[Tensor, "*batch pos head d_model"]:
        """``attn.hook_result`` of block ``layer`` (cached, or z·W_O computed and stored as TransformerLens does)."""
        key = f"blocks.{layer}.attn.hook_result"
        want = 4 if self.has_batch_dim else 3
        got = self.cache_dict.get(key)
        if not (isinstance(got, Tensor) and got.ndim == want and got.shape[-2] == self.model.cfg.n_heads):
            z = self._get(f"blocks.{layer}.attn.hook_z")
            W_O = self.model.blocks[layer].attn.W_O.to(z.device)
            self.cache_dict[key] = got = torch.einsum("...hd,hdm->...hm", z, W_O)
        return got

    def _heads(self, n_blocks: int, stop: int | None, pos_slice: Slice) -> tuple[Tensor, list[str]]:
        """Head results of blocks ``< n_blocks`` ``[n_blocks·H, ..., D]``, carried to LayerNorm ``stop``
        (raw with ``stop=None``)."""
        parts, labels = [], []
        for l in range(n_blocks):
            r = einops.rearrange(pos_slice.apply(self._head_result(l), dim=-3), "... h d -> h ... d")
            parts.append(r if stop is None else self._carry(r, 2 * l + 1, stop, pos_slice))
            labels += [f"L{l}H{h}" for h in range(self.model.cfg.n_heads)]
        return (torch.cat(parts, 0) if parts else self._empty(pos_slice)), labels

    def _neuron_block(self, l: int, stop: int | None, pos_slice: Slice, neuron_slice: Slice,
                      project: Optional[Tensor]) -> Float[Tensor, "*batch_and_pos neuron d_out"]:
        """Neuron results of block ``l`` ``[..., n, D|O]``: ``post_n · W_out[n]``, carried to LayerNorm
        ``stop`` (raw with ``stop=None``), projected onto ``project`` ``[D, O]`` if given.

        Carrying is linear and the scales are per position, so a neuron's carried result is
        ``post_n / Π s · U(W_out[n])`` with ``U`` the scale-free part (centre, multiply by each w):
        no ``[..., n, D]`` intermediate beyond the output itself."""
        post = neuron_slice.apply(pos_slice.apply(self._get(f"blocks.{l}.mlp.hook_post"), dim=-2), dim=-1)
        rows = neuron_slice.apply(self.model.blocks[l].mlp.W_out, dim=0).to(post.device)  # [n, D] ([D] for an int)
        if stop is not None:
            rows = self._unscaled(rows, 2 * l + 2, stop)
            scale = self._scale_product(2 * l + 2, stop, pos_slice)
            post = (post / scale).to(post.dtype)  # (neuron_slice is never an int here: see _neurons)
        if project is not None:
            rows = rows @ project.to(rows.device)
        return post[..., None] * rows

    def _neurons(self, n_blocks: int, stop: int | None, pos_slice: Slice, neuron_slice: Slice,
                 project: Optional[Tensor]) -> tuple[Tensor, list[str]]:
        """:meth:`_neuron_block` of blocks ``< n_blocks``, stacked ``[n_blocks·n, ..., D|O]``; labels ``L{l}N{n}``."""
        idx = neuron_slice.apply(torch.arange(self.model.cfg.d_mlp), dim=0).tolist()
        parts = [einops.rearrange(self._neuron_block(l, stop, pos_slice, neuron_slice, project), "... n d -> n ... d")
                 for l in range(n_blocks)]
        labels = [f"L{l}N{n}" for l in range(n_blocks) for n in idx]
        if parts:
            return torch.cat(parts, 0), labels
        return self._empty(pos_slice, None if project is None else project.shape[-1]), labels

    # ================================================================== TransformerLens API
    def apply_slice_to_batch_dim(self, batch_slice: Union[Slice, SliceInput]) -> "BertActivationCache":
        """TransformerLens's batch slice, returning a :class:`BertActivationCache` (TL returns its base class)."""
        out = super().apply_slice_to_batch_dim(batch_slice)
        return BertActivationCache(out.cache_dict, self.model, has_batch_dim=out.has_batch_dim)

    def apply_ln_to_stack(
        self,
        residual_stack: Stack,
        layer: Optional[int] = None,
        mlp_input: bool = False,
        pos_slice: Union[Slice, SliceInput] = None,
        batch_slice: Union[Slice, SliceInput] = None,
        has_batch_dim: bool = True,
        recompute_ln: bool = False,
    ) -> Float[Tensor, "component *batch_and_pos_out d_model"]:
        """Apply one LayerNorm's linear part ``T(c) = w ⊙ (c − mean c) / s`` (cached scale, no bias)
        to each component of a stack ``[component, *batch_and_pos, D]``.

        The LayerNorm is the one whose *output* is the input of block ``layer``'s attention
        (``mlp_input=False``: ``ln2`` of block ``layer − 1``, ``embed.ln`` for ``layer = 0``) or of its
        MLP (``mlp_input=True``: ``ln1`` of block ``layer``); ``layer = n_layers``, ``-1`` or ``None``:
        the last LayerNorm before the unembedding, ``mlm_head.ln`` of a masked LM — the stack is then
        components of *its* input (``gelu(dense(x_L))``), not of the residual stream.  A classifier
        or bare encoder has no LayerNorm there: the stack comes back unchanged (batch-sliced).

        So if the stack sums to that LayerNorm's input, the result plus the LayerNorm's bias ``b``
        sums to its output exactly.

        Args:
            residual_stack: ``[component, *batch_and_pos, D]``; its batch/pos axes are those of the
                cache after ``pos_slice`` (already applied to the stack) and ``batch_slice`` (applied
                here to axis 1 when ``has_batch_dim``).
            layer: ``0 … n_layers``, or ``-1``/``None`` for ``n_layers``.
            mlp_input: the LayerNorm before block ``layer``'s MLP (``layer < n_layers``).
            pos_slice, batch_slice: TransformerLens ``Slice`` inputs, applied to the cached scale.
            has_batch_dim: whether the stack has a batch axis (axis 1).
            recompute_ln: normalise each component with its own statistics through the whole
                LayerNorm, weight and bias included (TransformerLens's logit-lens meaning), instead
                of the cached scale.

        Returns:
            ``[component, *batch_and_pos_out, D]``.
        """
        pos_slice, batch_slice = _as_slice(pos_slice), _as_slice(batch_slice)
        layer = self._layer(layer, mlp_input)
        if has_batch_dim:
            residual_stack = batch_slice.apply(residual_stack, dim=1)
        if layer == self._n_layers:
            ln = getattr(self.model, "ln_final", None)
            if ln is None:
                return residual_stack
            prefix = "mlm_head.ln"
        else:
            ln, prefix = self._ln(self._point(layer, mlp_input))
        if recompute_ln:
            return F.layer_norm(residual_stack, ln.w.shape, ln.w.to(residual_stack.device),
                                ln.b.to(residual_stack.device), ln.eps)
        return self._linear(residual_stack, ln, self._scale(prefix, pos_slice, batch_slice))

    def accumulated_resid(
        self,
        layer: Optional[int] = None,
        incl_mid: bool = False,
        apply_ln: bool = False,
        pos_slice: Union[Slice, SliceInput] = None,
        mlp_input: bool = False,
        return_labels: bool = False,
    ) -> Union[Points, tuple[Points, list[str]]]:
        """The residual stream at each point up to ``layer``: ``[point, *batch_and_pos, D]``.

        ``{l}_pre`` = ``blocks.{l}.hook_resid_pre`` for ``l ≤ layer`` (``l < n_layers``);
        ``{l}_mid`` = the MLP input ``y_l = LN1_l(x_l + a_l)`` (``ln1.hook_normalized · w + b``; not
        TransformerLens's pre-LayerNorm ``hook_resid_mid``) for ``l < layer`` with ``incl_mid`` and for
        ``l = layer`` with ``mlp_input``; ``final_post`` = the last block's
        ``hook_normalized_resid_post`` when ``layer = n_layers`` (``-1``/``None``).

        ``apply_ln=True`` is refused: BERT reads its stream through more than one LayerNorm (MLM:
        dense → GELU → LayerNorm; classifier: the tanh pooler); the logit lens is
        ``nodeprobe.studies.lens``.
        """
        if apply_ln:
            raise NodeprobeError(f"apply_ln=True: BERT's readout is not one LayerNorm away from the stream; "
                                 f"use apply_ln=False and the logit lens of {_LENS}")
        pos_slice = _as_slice(pos_slice)
        layer = self._layer(layer, mlp_input)
        L = self._n_layers
        parts, labels = [], []
        for l in range(layer + 1):
            if l == L:
                parts.append(self._stream(L, False, pos_slice))
                labels.append("final_post")
                continue
            parts.append(self._stream(l, False, pos_slice))
            labels.append(f"{l}_pre")
            if (incl_mid and l < layer) or (mlp_input and l == layer):
                parts.append(self._stream(l, True, pos_slice))
                labels.append(f"{l}_mid")
        out = torch.stack(parts, 0)
        return (out, labels) if return_labels else out

    def logit_lens(self, **kwargs):
        """Refused: TransformerLens's logit lens reads ``ln_final → W_U``, but BERT's MLM head is
        dense → GELU → LayerNorm → decoder (classifier: tanh pooler); use ``nodeprobe.studies.lens``."""
        raise NodeprobeError(f"logit_lens: BERT's readout is not ln_final → W_U; use {_LENS}")

    def logit_attrs(
        self,
        residual_stack: Stack,
        tokens: Tokens,
        incorrect_tokens: Optional[Tokens] = None,
        pos_slice: Union[Slice, SliceInput] = None,
        batch_slice: Union[Slice, SliceInput] = None,
        has_batch_dim: bool = True,
    ) -> Float[Tensor, "component *batch_and_pos_out"]:
        """TransformerLens's logit attributions ``[component, *batch_and_pos]``:
        ``apply_ln_to_stack(stack, layer=-1) · tokens_to_residual_directions(tokens)`` (minus the
        ``incorrect_tokens`` directions).

        Post-LN meaning: for a masked LM the stack must be components of the *input of*
        ``mlm_head.ln`` (``gelu(dense(x_L))``); then ``Σ attrs + mlm_head.ln.b · W_U[:, t] + b_U[t]`` is
        the logit of ``t`` exactly.  For a classifier the stack is components of ``readout.hook_in``
        (the pooled [CLS]) and ``Σ attrs + b_U[t]`` is the logit.  A decomposition of the residual
        stream (:meth:`decompose_resid`) is *not* such a stack: the head's dense/GELU (or tanh
        pooler) lies in between and is not linear.
        """
        return super().logit_attrs(residual_stack, tokens, incorrect_tokens=incorrect_tokens, pos_slice=pos_slice,
                                   batch_slice=batch_slice, has_batch_dim=has_batch_dim)

    def decompose_resid(
        self,
        layer: Optional[int] = None,
        mlp_input: bool = False,
        mode: Literal["all", "mlp", "attn"] = "all",
        apply_ln: bool = False,
        pos_slice: Union[Slice, SliceInput] = None,
        incl_embeds: bool = True,
        return_labels: bool = False,
    ) -> Union[Stack, tuple[Stack, list[str]]]:
        """The stream at a point as components that sum to it exactly: ``[component, *batch_and_pos, D]``.

        The point is ``blocks.{layer}.hook_resid_pre`` (``layer = n_layers``/``-1``/``None``: the last
        block's ``hook_normalized_resid_post``), or with ``mlp_input`` the MLP input ``y`` of block
        ``layer``.  Components, in order: ``embed``, ``token_type_embed``, ``pos_embed``, then
        ``{l}_attn_out`` and ``{l}_mlp_out`` of each earlier block (and ``{layer}_attn_out`` with
        ``mlp_input``), then ``ln_bias``; each is carried through every LayerNorm between where it
        enters and the point with the cached scales (``ln_bias``: every LayerNorm's bias, carried
        through the later ones).

        ``mode="attn"``/``"mlp"`` keeps only those sublayer outputs; ``incl_embeds=False`` drops the
        three embeddings and ``ln_bias``: then the stack no longer sums to the stream.
        ``apply_ln=True`` is refused (the components are already past every LayerNorm up to the point).
        """
        if apply_ln:
            raise NodeprobeError(_NO_APPLY_LN)
        if mode not in ("all", "mlp", "attn"):
            raise NodeprobeError(f"mode={mode!r}: expected 'all', 'attn' or 'mlp'")
        pos_slice = _as_slice(pos_slice)
        layer = self._layer(layer, mlp_input)
        stop = self._point(layer, mlp_input)
        entries: list[tuple[str, str, int]] = []  # (label, hook, LayerNorm it enters first)
        if incl_embeds:
            entries += [(lab, hook, 0) for lab, hook in self._embed_hooks()]
        for l in range(layer + int(mlp_input)):
            if mode != "mlp":
                entries.append((f"{l}_attn_out", f"blocks.{l}.hook_attn_out", 2 * l + 1))
            if mode != "attn" and l < layer:
                entries.append((f"{l}_mlp_out", f"blocks.{l}.hook_mlp_out", 2 * l + 2))
        parts = [self._carry(pos_slice.apply(self._get(h), dim=-2), k, stop, pos_slice) for _, h, k in entries]
        labels = [lab for lab, _, _ in entries]
        if incl_embeds:
            parts.append(self._ln_bias(stop, pos_slice, self._stream(layer, mlp_input, pos_slice)))
            labels.append("ln_bias")
        out = torch.stack(parts, 0) if parts else self._empty(pos_slice)
        return (out, labels) if return_labels else out

    def stack_head_results(
        self,
        layer: int = -1,
        return_labels: bool = False,
        incl_remainder: bool = False,
        pos_slice: Union[Slice, SliceInput] = None,
        apply_ln: bool = False,
    ) -> Union[Stack, tuple[Stack, list[str]]]:
        """Per-head results of the blocks before ``layer``: ``[layer·H (+1), *batch_and_pos, D]``, labels ``L{l}H{h}``.

        ``apply_ln=False``: TransformerLens's raw results ``z_h W_O[h]`` (per block they sum to
        ``hook_attn_out − b_O``).  ``apply_ln=True``: each head's result carried through every
        LayerNorm up to the input of block ``layer`` (``n_layers``/``-1``/``None``: the last block's
        output), as :meth:`decompose_resid` carries ``{l}_attn_out`` — the heads of block l plus
        ``b_O`` carried the same way sum to its ``{l}_attn_out`` component.
        ``incl_remainder``: one more component, the stream at that point minus the stack's sum
        (with raw results that sum holds but mixes the scales of different points).
        """
        pos_slice = _as_slice(pos_slice)
        layer = self._layer(layer)
        out, labels = self._heads(layer, self._point(layer, False) if apply_ln else None, pos_slice)
        if incl_remainder:
            rest = self._stream(layer, False, pos_slice) - out.sum(0)
            out, labels = torch.cat([out, rest[None]], 0), labels + ["remainder"]
        return (out, labels) if return_labels else out

    def get_neuron_results(
        self,
        layer: int,
        neuron_slice: Union[Slice, SliceInput] = None,
        pos_slice: Union[Slice, SliceInput] = None,
        project_output_onto: Optional[Float[Tensor, "d_model *n_out"]] = None,
    ) -> Float[Tensor, "*batch_and_pos neuron d_out"]:
        """TransformerLens's raw neuron results of block ``layer``: ``mlp.hook_post[..., n] · W_out[n]``
        ``[*batch_and_pos, neuron, D]`` (they sum over neurons to ``hook_mlp_out − b_out``); with
        ``project_output_onto`` ``[D]``/``[D, O]`` the last axis is projected (squeezed for ``[D]``)."""
        L = self._n_layers
        if isinstance(layer, int) and not isinstance(layer, bool) and -L <= layer < 0:
            layer += L
        self.model.cfg.check_layer(layer)
        project, squeeze = _project_2d(project_output_onto)
        out = self._neuron_block(layer, None, _as_slice(pos_slice), _as_slice(neuron_slice), project)
        return out.squeeze(-1) if squeeze else out

    def stack_neuron_results(
        self,
        layer: int,
        pos_slice: Union[Slice, SliceInput] = None,
        neuron_slice: Union[Slice, SliceInput] = None,
        return_labels: bool = False,
        incl_remainder: bool = False,
        apply_ln: bool = False,
        project_output_onto: Optional[Float[Tensor, "d_model *n_out"]] = None,
        mlp_input: bool = False,
    ) -> Union[Tensor, tuple[Tensor, list[str]]]:
        """Per-neuron results of the blocks before ``layer``: ``[layer·n (+1), *batch_and_pos, D|O]``, ``L{l}N{n}``.

        ``apply_ln=False``: raw ``post_n · W_out[n]`` (TransformerLens's).  ``apply_ln=True``: each
        carried through every LayerNorm up to the input of block ``layer`` (with ``mlp_input``: the
        MLP input of block ``layer``, i.e. through its ``ln1`` too); the neurons stacked are those of
        blocks ``< layer`` either way.  ``incl_remainder``: the stream at that point minus the stack's
        sum.  ``project_output_onto`` ``[D]``/``[D, O]``: project the last axis (folded into ``W_out``,
        so no ``[..., neuron, D]`` intermediate; squeezed for ``[D]``).
        """
        pos_slice = _as_slice(pos_slice)
        layer = self._layer(layer, mlp_input)
        project, squeeze = _project_2d(project_output_onto)
        stop = self._point(layer, mlp_input) if apply_ln else None
        out, labels = self._neurons(layer, stop, pos_slice, _neuron_slice(neuron_slice), project)
        if incl_remainder:
            rest = self._stream(layer, mlp_input, pos_slice)
            if project is not None:
                rest = rest @ project.to(rest.device)
            out, labels = torch.cat([out, (rest - out.sum(0))[None]], 0), labels + ["remainder"]
        if squeeze:
            out = out.squeeze(-1)
        return (out, labels) if return_labels else out

    def get_full_resid_decomposition(
        self,
        layer: Optional[int] = None,
        mlp_input: bool = False,
        expand_neurons: bool = True,
        apply_ln: bool = False,
        pos_slice: Union[Slice, SliceInput] = None,
        return_labels: bool = False,
        project_output_onto: Optional[Float[Tensor, "d_model *n_out"]] = None,
    ) -> Union[Tensor, tuple[Tensor, list[str]]]:
        """The stream at a point (as :meth:`decompose_resid`) split into every head and neuron:
        ``[component, *batch_and_pos, D|O]``, summing to the stream exactly.

        Components, in order: each head result ``L{l}H{h}`` of blocks ``< layer`` (and of block
        ``layer`` with ``mlp_input``); each neuron result ``L{l}N{n}`` of blocks ``< layer``
        (``expand_neurons=False``: ``{l}_mlp_out`` instead, ``b_out`` included); ``embed``,
        ``token_type_embed``, ``pos_embed``; ``bias`` = the carried ``b_O`` (and ``b_out`` when
        expanded) of those blocks plus every carried LayerNorm bias.  Every component is carried
        through the LayerNorms up to the point with the cached scales.  ``project_output_onto``
        ``[D]``/``[D, O]`` projects the last axis.  ``apply_ln=True`` is refused, as in
        :meth:`decompose_resid`.
        """
        if apply_ln:
            raise NodeprobeError(_NO_APPLY_LN)
        pos_slice = _as_slice(pos_slice)
        layer = self._layer(layer, mlp_input)
        stop = self._point(layer, mlp_input)
        project, squeeze = _project_2d(project_output_onto)

        def proj(t: Tensor) -> Tensor:
            return t if project is None else t @ project.to(t.device)

        n_attn = layer + int(mlp_input)
        heads, labels = self._heads(n_attn, stop, pos_slice)
        parts = [proj(heads)]
        stream = self._stream(layer, mlp_input, pos_slice)
        bias = self._ln_bias(stop, pos_slice, stream)
        for l in range(n_attn):
            bias = bias + self._carry(self.model.blocks[l].attn.b_O.to(stream.device), 2 * l + 1, stop, pos_slice)
        if expand_neurons:
            neurons, nl = self._neurons(layer, stop, pos_slice, Slice(None), project)
            parts.append(neurons)
            labels += nl
            for l in range(layer):
                bias = bias + self._carry(self.model.blocks[l].mlp.b_out.to(stream.device), 2 * l + 2, stop, pos_slice)
        else:
            for l in range(layer):
                parts.append(proj(self._carry(pos_slice.apply(self._get(f"blocks.{l}.hook_mlp_out"), dim=-2),
                                              2 * l + 2, stop, pos_slice))[None])
                labels.append(f"{l}_mlp_out")
        for lab, hook in self._embed_hooks():
            parts.append(proj(self._carry(pos_slice.apply(self._get(hook), dim=-2), 0, stop, pos_slice))[None])
            labels.append(lab)
        parts.append(proj(bias)[None])
        labels.append("bias")
        out = torch.cat(parts, 0)
        if squeeze:
            out = out.squeeze(-1)
        return (out, labels) if return_labels else out
