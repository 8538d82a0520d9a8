"""HookedBert: a TransformerLens ``HookedRootModule`` over a Hugging Face BERT-family encoder.

The wrapper owns no weights of its own: it holds the Hugging Face model (``self.hf``) and runs
the same computation as its base model, masked LM or sequence classifier step by step, passing
every intermediate tensor through a :class:`HookPoint` with a TransformerLens-style name.  It
reads the HF model only through its family's module map (:mod:`nodeprobe.model.families`: BERT,
RoBERTa, XLM-RoBERTa, ELECTRA, DistilBERT — all post-LN, so the hook meanings below hold for
each).  Training the wrapper trains the HF model, and ``model.hf.save_pretrained(dir)`` saves it
in Hugging Face format.

Hook points mean what they mean in TransformerLens's own BERT (``HookedEncoder``, TL 3.9); ``B``
batch, ``P`` positions, ``H`` heads, ``D`` d_model, ``Dh`` d_head, ``F`` d_ff, ``K`` readout classes
(vocab size V for MLM, labels for classification), ``n`` selected positions; x = block input,
a = attention output, m = MLP output, LN(v) = w ⊙ (v − mean) / scale + b:

=========================================  ===================  ==========================================
name                                       shape                what
=========================================  ===================  ==========================================
``embed.hook_embed|hook_pos_embed``        ``[B, P, D]``        token / position / token-type embedding
``embed.hook_token_type_embed``
``embed.ln.hook_scale|hook_normalized``    ``[B, P, 1|D]``      their sum's LayerNorm (scale; (v−mean)/scale)
``hook_full_embed``                        ``[B, P, D]``        the embedding layer's output (after LN)
``blocks.{l}.hook_resid_pre``              ``[B, P, D]``        x, the input of block l
``blocks.{l}.attn.hook_q|k|v``             ``[B, P, H, Dh]``    per-head queries / keys / values
``blocks.{l}.attn.hook_attn_scores``       ``[B, H, P, P]``     scaled scores + padding mask, pre-softmax
``blocks.{l}.attn.hook_pattern``           ``[B, H, P, P]``     attention probabilities
``blocks.{l}.attn.hook_z``                 ``[B, P, H, Dh]``    head outputs before W_O (METHODS site ``z``)
``blocks.{l}.attn.hook_result`` *          ``[B, P, H, D]``     per-head z_h W_O[h] (sum + b_O = a)
``blocks.{l}.hook_attn_out``               ``[B, P, D]``        a = W_O z + b_O
``blocks.{l}.hook_resid_mid``              ``[B, P, D]``        x + a (before LN1)
``blocks.{l}.ln1.hook_scale|normalized``   ``[B, P, 1|D]``      LN1 of x + a
``blocks.{l}.mlp.hook_pre|hook_post``      ``[B, P, F]``        MLP pre-activation / after GELU
``blocks.{l}.hook_mlp_out``                ``[B, P, D]``        m
``blocks.{l}.hook_resid_post``             ``[B, P, D]``        LN1(x + a) + m (before LN2)
``blocks.{l}.ln2.hook_scale|normalized``   ``[B, P, 1|D]``      LN2 of it
``blocks.{l}.hook_normalized_resid_post``  ``[B, P, D]``        LN2(LN1(x + a) + m): the output of block l
``mlm_head.ln.hook_scale|normalized``      ``[B, P, 1|D]``      MLM only: the prediction-head LayerNorm
``readout.hook_in``                        MLM ``[B, P, D]``    the vector entering the final linear map
                                           (``[n, D]``),        (METHODS §1 ``readout``): MLM after the
                                           cls ``[B, D]``       prediction-head transform; classifier the
                                                                first token after the head's dense +
                                                                activation (BERT: the pooler's tanh)
``unembed.hook_in|hook_out``               ``[B, P, D|V]``      MLM only: decoder input (= readout.hook_in), logits
=========================================  ===================  ==========================================

\* Optional, as in TransformerLens: ``attn.hook_result`` fires with ``cfg.use_attn_result``,
``hook_q_input|k_input|v_input`` (``[B, P, H, D]``) with ``cfg.use_split_qkv_input``,
``hook_attn_in`` with ``cfg.use_attn_in``, ``hook_mlp_in`` (= x + a) with ``cfg.use_hook_mlp_in``.

Attention runs through PyTorch's fused ``scaled_dot_product_attention`` unless a hook is attached
to ``hook_attn_scores`` or ``hook_pattern`` of that block; then it runs eagerly, so a hook that edits
the pattern always takes effect (never a silent no-op).

``forward(..., readout_rows=True)`` computes the last block only at the rows the readout uses
([CLS] of a classifier; ``positions`` of a masked LM): those rows attend to every position without
projecting every position's keys and values (``HookedAttention._rows``), and ``W_O``, LayerNorms
and the MLP run on those rows only.  The outputs are the same up to float rounding (≤ 1e-5 in the
tests).  A block with a hook attached always runs in full, so hooks see their usual
``[B, P, ...]`` shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from nodeprobe.errors import NodeprobeError
from nodeprobe.model.families import FAMILIES, Family, activation, family_of, get, identity
from nodeprobe.model.weights import AttentionWeights, MLPWeights, ModelWeights
from nodeprobe.model.config import HookedBertConfig
from nodeprobe.model.tl_surface import RETURN_TYPES, TransformerLensSurface
from nodeprobe.model.names import (ROOT, AttnHookPoints, BlockHookPoints, EmbedHookPoints, LNHookPoints, MLMHeadHookPoints,
                                   ReadoutHookPoints, UnembedHookPoints, add_hook_points, check_hook_names, has_hooks)

Kind = Literal["mlm", "cls", "base"]  # the output head: masked LM, classifier, bare encoder


@dataclass(frozen=True, eq=False)
class Rows:
    """Selected ``(batch, position)`` rows of a ``[B, P, ...]`` activation, in a fixed order.

    ``b``, ``p``: ``[n]`` indices (``x[rows.b, rows.p]`` is ``[n, ...]``); ``slot``/``width`` lay the
    rows out per item as ``[B, width]`` (row i at ``[b[i], slot[i]]``), which is how attention
    runs their queries against the keys of their own item.

    Example:
        >>> r = Rows.from_positions(torch.tensor([[False, True, True], [True, False, False]]))
        >>> r.b.tolist(), r.p.tolist(), r.slot.tolist(), r.width
        ([0, 0, 1], [1, 2, 0], [0, 1, 0], 2)
    """

    b: Tensor
    p: Tensor
    slot: Tensor
    width: int

    @classmethod
    def first(cls, batch: int, device: torch.device | str = "cpu") -> "Rows":
        """Position 0 ([CLS]) of every item: what a classifier reads out."""
        b = torch.arange(batch, device=device)
        zero = torch.zeros_like(b)
        return cls(b, zero, zero, 1)

    @classmethod
    def from_positions(cls, positions: Tensor | tuple[Tensor, Tensor]) -> "Rows":
        """From a bool mask ``[B, P]`` (row-major, the order of ``x[mask]``) or an index pair ``(b, p)``."""
        if isinstance(positions, (tuple, list)):
            b, p = (t.reshape(-1).long() for t in positions)
        else:
            b, p = torch.nonzero(positions, as_tuple=True)
        if b.numel() == 0:
            return cls(b, p, b, 0)
        counts = torch.bincount(b)
        order = torch.argsort(b, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.empty_like(b)
        slot[order] = torch.arange(b.numel(), device=b.device) - starts[b[order]]
        return cls(b, p, slot, int(counts.max()))


class HookedLayerNorm(LNHookPoints):
    """A Hugging Face ``LayerNorm`` with TransformerLens's ``hook_scale`` and ``hook_normalized``.

    ``hook_scale`` is ``sqrt(var + eps)`` ``[..., 1]`` and ``hook_normalized`` is ``(x − mean) / scale``
    ``[..., D]`` *before* the weight and bias, as in TransformerLens's ``LayerNorm``.  Without a hook
    on them it runs the fused ``F.layer_norm`` (same numbers up to float rounding).
    """

    def __init__(self, hf_ln: nn.Module):
        super().__init__()
        object.__setattr__(self, "_hf", hf_ln)  # not a submodule: the weights are HookedBert.hf's

    w = property(lambda self: self._hf.weight, doc="``[D]`` weight (TransformerLens's name)")
    b = property(lambda self: self._hf.bias, doc="``[D]`` bias")
    eps = property(lambda self: self._hf.eps, doc="the variance epsilon")

    def forward(self, x: Float[Tensor, "... D"]) -> Float[Tensor, "... D"]:
        ln = self._hf
        if not has_hooks(self.hook_scale, self.hook_normalized):
            return F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)
        dtype = x.dtype
        x = x.float()  # statistics in fp32, as F.layer_norm and TransformerLens's LayerNorm take them
        xc = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((xc.pow(2).mean(-1, keepdim=True) + ln.eps).sqrt())
        return (self.hook_normalized(xc / scale) * ln.weight.float() + ln.bias.float()).to(dtype)


class HookedEmbed(EmbedHookPoints):
    """The embedding layer: ``embed.hook_embed`` (token), ``hook_pos_embed``, ``hook_token_type_embed``
    (each ``[B, P, E]``; no token types in DistilBERT), their sum through ``embed.ln``, dropout, and
    ELECTRA's projection to the hidden size when ``E ≠ D`` — as the family's HF embeddings compute it.

    Position ids are ``0 … P−1`` (BERT, ELECTRA, DistilBERT) or, for RoBERTa/XLM-R, counted from
    ``pad_token_id + 1`` over the non-pad tokens with pads at ``pad_token_id`` (HF's
    ``create_position_ids_from_input_ids``)."""

    def __init__(self, encoder: nn.Module, family: Family, pad_id: int | None):
        super().__init__(HookedLayerNorm(get(encoder, family.embed_ln)))
        g = lambda path: get(encoder, path)  # noqa: E731
        for name, path in (("_word", family.word), ("_pos", family.position), ("_types", family.token_type),
                           ("_project", family.embed_project)):
            object.__setattr__(self, name, g(path))  # not submodules: the weights are HookedBert.hf's
        object.__setattr__(self, "_dropout", g(family.embed_dropout) or identity)
        self.pad_id = pad_id if family.positions_from_pad else None

    def position_ids(self, input_ids: Int[Tensor, "B P"]) -> Int[Tensor, "B P"] | Int[Tensor, "1 P"]:
        """The position ids HF gives ``input_ids`` (``[1, P]`` when they do not depend on the tokens)."""
        P = input_ids.shape[1]
        if self.pad_id is None:
            return torch.arange(P, device=input_ids.device)[None]
        real = input_ids.ne(self.pad_id).int()
        return (torch.cumsum(real, dim=1).type_as(real) * real).long() + self.pad_id

    def forward(self, input_ids: Int[Tensor, "B P"], token_type_ids: Int[Tensor, "B P"] | None = None
                ) -> Float[Tensor, "B P D"]:
        B, P = input_ids.shape
        hooked = has_hooks(self.hook_embed, self.hook_token_type_embed, self.hook_pos_embed)
        hook = (lambda hp, v: hp(v)) if hooked else (lambda hp, v: v)  # noqa: E731
        x = hook(self.hook_embed, self._word(input_ids))
        if self._types is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            x = x + hook(self.hook_token_type_embed, self._types(token_type_ids))
        p = self._pos(self.position_ids(input_ids))  # [1 | B, P, E]
        if hooked:
            p = self.hook_pos_embed(p.expand(B, P, -1).contiguous())  # [B, P, E], editable in place
        out = self._dropout(self.ln(x + p))
        return out if self._project is None else self._project(out)


class HookedAttention(AttnHookPoints, AttentionWeights):
    """Self-attention of one BERT block with per-head hook points (weights stay in the HF layer)."""

    def __init__(self, n_heads: int, d_head: int, cfg: HookedBertConfig | None = None):
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_head
        object.__setattr__(self, "cfg", cfg)

    def _needs_eager(self) -> bool:
        # Any hook on scores/pattern (forward, or backward only, e.g. for gradients of the
        # pattern) needs the eager path: the fused kernel never materialises them.
        return has_hooks(self.hook_pattern, self.hook_attn_scores)

    def forward(self, x: Float[Tensor, "B P D"], mask: Tensor | None,
                rows: Rows | None = None, qkv_input: tuple[Tensor, Tensor, Tensor] | None = None):
        """Head outputs ``z`` ``[B, P, H, Dh]``; with ``rows``, only at those rows ``[n, H, Dh]``
        (the rows attend to every position of their item; no hook points are called).

        ``qkv_input``: per-head inputs ``[B, P, H, D]`` of the queries, keys and values
        (``hook_q_input`` … or ``hook_attn_in``); each head projects its own copy."""
        B, P, _ = x.shape
        H, Dh = self.n_heads, self.d_head
        if rows is not None:
            return self._rows(x, mask, rows)
        if qkv_input is None:
            q, k, v = (lin(x).view(B, P, H, Dh) for lin in (self._q, self._k, self._v))
        else:
            q, k, v = (torch.einsum("bphd,hde->bphe", i, w) + b for i, w, b in
                       zip(qkv_input, (self.W_Q, self.W_K, self.W_V), (self.b_Q, self.b_K, self.b_V)))
        q = self.hook_q(q).transpose(1, 2)
        k = self.hook_k(k).transpose(1, 2)
        v = self.hook_v(v).transpose(1, 2)
        training = self._drop.training
        p_drop = self._drop.p if training else 0.0
        if self._needs_eager():
            scores = torch.matmul(q, k.transpose(2, 3)) * (Dh**-0.5)
            if mask is not None:
                scores = scores + mask
            scores = self.hook_attn_scores(scores)
            pattern = self.hook_pattern(F.softmax(scores, dim=-1))
            pattern = F.dropout(pattern, p=p_drop, training=training)
            z = torch.matmul(pattern, v)
        else:
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p_drop, scale=Dh**-0.5)
        return self.hook_z(z.transpose(1, 2))  # [B, P, H, Dh]

    def _rows(self, x: Tensor, mask: Tensor | None, rows: Rows) -> Tensor:
        """Attention of the selected rows without projecting every position's keys and values.

        Per head h, ``q_h·k_hj = (W_K,hᵀ q_h)·x_j + q_h·b_K,h``; the last term is the same for every
        key j, so it cancels in the softmax; and ``Σ_j p_hj v_hj = W_V,h (Σ_j p_hj x_j) + b_V,h``
        because the weights sum to 1.  Cost per item: O(H·P·D) plus O(D²) per row, instead of the
        O(P·D²) of projecting all keys and values (equal up to float rounding).
        """
        B, P, D = x.shape
        H, Dh = self.n_heads, self.d_head
        n = rows.b.numel()
        q = self._q(x[rows.b, rows.p]).view(n, H, Dh)
        w_k = self._k.weight.view(H, Dh, D)
        w_v = self._v.weight.view(H, Dh, D)
        u = torch.einsum("nhe,hed->nhd", q, w_k) * (Dh**-0.5)  # [n, H, D]: scores of a row = u · x_j
        up = u.new_zeros(B, rows.width, H, D)  # per item (unused slots: 0)
        up[rows.b, rows.slot] = u
        scores = torch.bmm(up.view(B, rows.width * H, D), x.transpose(1, 2))  # [B, width·H, P]
        if mask is not None:
            scores = scores + mask.view(B, 1, P)
        pattern = F.softmax(scores, dim=-1)
        if self._drop.training:
            pattern = F.dropout(pattern, p=self._drop.p, training=True)
        xbar = torch.bmm(pattern, x).view(B, rows.width, H, D)[rows.b, rows.slot]  # [n, H, D]
        return torch.einsum("nhd,hed->nhe", xbar, w_v) + self._v.bias.view(H, Dh)  # [n, H, Dh]


class HookedMLP(nn.Module, MLPWeights):
    """Holds ``mlp.hook_pre`` / ``mlp.hook_post`` and exposes ``W_in b_in W_out b_out``."""


class HookedBlock(BlockHookPoints):
    """One post-LayerNorm BERT block; computation identical to ``transformers.BertLayer``, hook
    points as TransformerLens's ``BertBlock`` (x = input, a = attention output, m = MLP output)::

        hook_resid_pre = x;  hook_attn_out = a = W_O z + b_O;  hook_resid_mid = x + a
        ln1 → y = LN1(x + a);  hook_mlp_out = m = MLP(y);  hook_resid_post = y + m
        ln2 → hook_normalized_resid_post = LN2(y + m)   (the block's output)
    """

    def __init__(self, hf_layer: nn.Module, n_heads: int, d_head: int, cfg: HookedBertConfig | None = None,
                 family: Family | None = None):
        fam = family or FAMILIES["bert"]
        g = lambda path: get(hf_layer, path)  # noqa: E731
        super().__init__(HookedAttention(n_heads, d_head, cfg), HookedMLP(), HookedLayerNorm(g(fam.ln1)),
                         HookedLayerNorm(g(fam.ln2)))
        object.__setattr__(self, "_hf", hf_layer)  # not a submodule: weights are owned by HookedBert.hf
        object.__setattr__(self, "cfg", cfg)
        # the family's modules, by role (weights.py reads them for W_Q …, W_in …)
        for part, name, path in ((self.attn, "_q", fam.q), (self.attn, "_k", fam.k), (self.attn, "_v", fam.v),
                                 (self.attn, "_drop", fam.attn_dropout), (self.attn, "_o", fam.o),
                                 (self.mlp, "_fc_in", fam.fc_in), (self.mlp, "_fc_out", fam.fc_out)):
            object.__setattr__(part, name, g(path))
        object.__setattr__(self, "_o_drop", g(fam.o_dropout) or identity)
        object.__setattr__(self, "_act", activation(hf_layer, fam.act))
        object.__setattr__(self, "_mlp_drop", g(fam.mlp_dropout) or identity)

    def has_hooks(self) -> bool:
        """Whether any hook (forward, pre-forward or backward) is attached to a hook point of this block."""
        return has_hooks(*(m for m in self.modules() if isinstance(m, HookPoint)))

    def forward(self, x: Float[Tensor, "B P D"], mask: Tensor | None, rows: Rows | None = None) -> Tensor:
        """The block's output ``[B, P, D]``; with ``rows`` only at those rows, ``[n, D]``.

        With ``rows`` and no hook on this block, nothing is computed at the other positions (the
        rows still attend to them); with a hook attached the block runs in full (hooks see
        ``[B, P, ...]``) and the rows are selected.
        """
        if rows is not None and not self.has_hooks():
            return self.finish(x[rows.b, rows.p], self.attend(x, mask, rows))
        x = self.hook_resid_pre(x)
        out = self.finish(x, self.attend(x, mask))
        return out if rows is None else out[rows.b, rows.p]

    def attend(self, x: Float[Tensor, "B P D"], mask: Tensor | None, rows: Rows | None = None) -> Tensor:
        """Head outputs ``z`` ``[B, P, H, Dh]`` (``hook_z``) of the block with input ``x``
        (``hook_resid_pre`` is not called); with ``rows``, ``[n, H, Dh]`` at those rows."""
        cfg = self.cfg
        qkv = None
        if rows is None and cfg is not None and (cfg.use_attn_in or cfg.use_split_qkv_input):
            H = self.attn.n_heads
            per_head = lambda: x[:, :, None, :].expand(-1, -1, H, -1).clone()  # noqa: E731  own copies (TL's)
            if cfg.use_split_qkv_input:
                qkv = (self.hook_q_input(per_head()), self.hook_k_input(per_head()), self.hook_v_input(per_head()))
            else:
                attn_in = self.hook_attn_in(per_head())
                qkv = (attn_in, attn_in, attn_in)
        return self.attn(x, mask, rows, qkv)

    def attn_output(self, z: Float[Tensor, "... H Dh"]) -> Float[Tensor, "... D"]:
        """``a = Σ_h z_h W_O[h] + b_O``; with ``cfg.use_attn_result`` through ``attn.hook_result``
        (``[..., H, D]``, per-head terms without ``b_O``) as TransformerLens computes it."""
        dense = self.attn._o
        if self.cfg is not None and self.cfg.use_attn_result and z.dim() == 4:
            result = self.attn.hook_result(torch.einsum("...hd,hdm->...hm", z, self.attn.W_O))
            return result.sum(-2) + dense.bias
        return dense(z.flatten(-2))

    def finish(self, x: Tensor, z: Tensor) -> Tensor:
        """The rest of the block from its input ``x`` and head outputs ``z``: ``W_O``, residual +
        LayerNorm, MLP, residual + LayerNorm.  ``x`` ``[..., D]`` and ``z`` ``[..., H, Dh]`` share
        their leading axes (``[B, P]``, or ``[n]`` rows: every row is computed on its own).

        A head sweep computes ``z`` once per block and calls ``finish`` with each head's ablated
        copy: ablating a head's ``z`` leaves the block's queries, keys, values and pattern as they are.
        """
        attn_out = self.hook_attn_out(self.attn_output(z))
        resid_mid = self.hook_resid_mid(x + self._o_drop(attn_out))
        if self.cfg is not None and self.cfg.use_hook_mlp_in:
            resid_mid = self.hook_mlp_in(resid_mid.clone())
        y = self.ln1(resid_mid)
        pre = self.mlp.hook_pre(self.mlp._fc_in(y))
        post = self.mlp.hook_post(self._act(pre))
        mlp_out = self.hook_mlp_out(self.mlp._fc_out(post))
        resid_post = self.hook_resid_post(y + self._mlp_drop(mlp_out))
        return self.hook_normalized_resid_post(self.ln2(resid_post))


class Readout(ReadoutHookPoints):
    """Holds ``readout.hook_in``: the vector entering the final linear map (METHODS §1)."""


class HookedBert(TransformerLensSurface, HookedRootModule, ModelWeights):
    """A hooked BERT (masked LM, sequence classifier, or bare encoder) with TL-style hook names.

    ``forward`` returns the same numbers as the wrapped Hugging Face model (max |Δ| ≤ 1e-5 in fp32),
    padded batches and token types included.

    Example:
        >>> from transformers import BertConfig, BertForMaskedLM
        >>> hf = BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
        ...                                 num_attention_heads=4, intermediate_size=32))
        >>> model = HookedBert(hf.eval())
        >>> ids = torch.tensor([[2, 5, 7, 3]])
        >>> logits, cache = model.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_z"))
        >>> logits.shape, cache["blocks.1.attn.hook_z"].shape
        (torch.Size([1, 4, 50]), torch.Size([1, 4, 4, 4]))
    """

    def __init__(self, hf_model: nn.Module, kind: Kind | None = None, tokenizer=None):
        super().__init__()
        arch = type(hf_model).__name__
        family = family_of(arch)  # one line naming an unsupported class and the supported ones
        has = family.kind_of(arch)
        kind = kind or has
        if kind not in ("mlm", "cls", "base"):
            raise NodeprobeError(f"kind={kind!r}: expected 'mlm', 'cls' or 'base'")
        if kind != "base" and kind != has:
            raise NodeprobeError(f"kind={kind}: a {arch} has {'no output head' if has == 'base' else f'a {has} head'}")
        self.hf = hf_model
        self.kind = kind
        self.family = family
        self.tokenizer = tokenizer
        # the encoder inside ``hf``: not registered a second time (state_dict lists each weight once);
        # ``bert`` is its historical name (the encoder of any family)
        encoder = family.encoder(hf_model)
        object.__setattr__(self, "encoder", encoder)
        object.__setattr__(self, "bert", encoder)
        param = next(hf_model.parameters())
        self._cfg = HookedBertConfig.from_hf(hf_model.config, kind, device=param.device, dtype=param.dtype,
                                             family=family, hf_model=hf_model)
        add_hook_points(self, ROOT)
        self.embed = HookedEmbed(encoder, family, getattr(hf_model.config, "pad_token_id", None))
        layers = get(encoder, family.layers)
        self.blocks = nn.ModuleList(HookedBlock(l, self.cfg.n_heads, self.cfg.d_head, self.cfg, family) for l in layers)
        object.__setattr__(self, "_head", _HeadParts.of(hf_model, family, kind))
        object.__setattr__(self, "_pooler", get(encoder, family.pooler))
        if kind == "mlm":
            self.mlm_head = MLMHeadHookPoints(HookedLayerNorm(self._head.norm))
            self.unembed = UnembedHookPoints()
        self.readout = Readout()
        self.setup()
        check_hook_names(self)
        self.train(hf_model.training)

    # ------------------------------------------------------------------ properties
    @property
    def config(self):
        """The Hugging Face ``BertConfig``."""
        return self.hf.config

    @property
    def cfg(self) -> HookedBertConfig:
        """The TransformerLens config (a ``transformer_lens.config.TransformerLensConfig``)."""
        return self._cfg

    @property
    def spec(self) -> HookedBertConfig:
        """The sizes of the model: the same object as :attr:`cfg`."""
        return self._cfg

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        param = next(self.hf.parameters(), None)
        if param is not None:  # keep cfg.device / cfg.dtype true after .to(), .cuda(), .half()
            self._cfg.device, self._cfg.dtype = str(param.device), param.dtype
        return out

    def readout_weights(self) -> tuple[Float[Tensor, "K D"], Float[Tensor, " K"]]:
        """``(W, b)`` of the final linear map, so that ``logits = readout_in @ W.T + b`` exactly.

        Example:
            >>> W, b = model.readout_weights()   # doctest: +SKIP
        """
        if self.kind == "base":
            raise NodeprobeError(f"a bare {type(self.hf).__name__} has no readout: load a masked-LM or classifier "
                                 "checkpoint")
        out = self._head.out
        bias = out.bias if out.bias is not None else self._head.bias
        return out.weight.detach(), bias.detach()

    # ------------------------------------------------------------------ forward
    def _check_ids(self, input_ids: Tensor) -> None:
        if input_ids.dtype not in (torch.int64, torch.int32):
            raise NodeprobeError(f"input_ids dtype {input_ids.dtype}: expected integer token ids")
        if input_ids.numel():
            lo, hi = int(input_ids.min()), int(input_ids.max())
            if lo < 0 or hi >= self.spec.d_vocab:
                bad = hi if hi >= self.spec.d_vocab else lo
                raise NodeprobeError(f"token id {bad}: the model's vocab has ids 0–{self.spec.d_vocab - 1}")
        if input_ids.shape[-1] > self.spec.max_len:
            raise NodeprobeError(
                f"sequence length {input_ids.shape[-1]}: the model allows at most {self.spec.max_len}"
            )

    def _check_token_types(self, token_type_ids: Tensor | None) -> None:
        if token_type_ids is None or not token_type_ids.numel():
            return
        if self.embed._types is None:
            if bool(token_type_ids.any()):
                raise NodeprobeError(f"token_type_ids: a {type(self.hf).__name__} has no token types (give zeros or "
                                     "none)")
            return
        n_types = self.embed._types.num_embeddings
        lo, hi = int(token_type_ids.min()), int(token_type_ids.max())
        if lo < 0 or hi >= n_types:
            bad = hi if hi >= n_types else lo
            raise NodeprobeError(f"token type id {bad}: the model has token types 0–{n_types - 1}")

    def extended_mask(self, attention_mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
        """Additive key mask ``[B, 1, 1, P]`` (0 where attended, dtype-min where padded), or None."""
        if attention_mask is None or bool(attention_mask.all()):
            return None
        m = attention_mask[:, None, None, :].to(dtype)
        return (1.0 - m) * torch.finfo(dtype).min

    def forward(
        self,
        input_ids: Int[Tensor, "B P"] | str | list[str] | None = None,
        attention_mask: Int[Tensor, "B P"] | None = None,
        token_type_ids: Int[Tensor, "B P"] | None = None,
        *,
        positions: Tensor | None = None,
        start_at_layer: int | None = None,
        residual: Float[Tensor, "B P D"] | None = None,
        stop_at_layer: int | None = None,
        readout_rows: bool = False,
        return_type: str | None = "logits",
        labels: Tensor | None = None,
        prepend_bos: bool | None = None,
        padding_side: str | None = None,
        one_zero_attention_mask: Int[Tensor, "B P"] | None = None,
        input: Int[Tensor, "B P"] | str | list[str] | None = None,
    ):
        """Run the model.

        Args:
            input_ids: token ids ``[B, P]`` (omit when resuming from ``residual``), or a string
                or list of strings (tokenized with :attr:`tokenizer`; the mask and token types
                come from it).
            attention_mask: 1 for real tokens, 0 for padding ``[B, P]``.  When omitted and the
                model has a tokenizer, the run of pad tokens at the end of each row (BERT's right
                padding, what ``to_tokens`` of a list makes) is masked, like TransformerLens builds
                masks from the pad token for padded batches; a pad id inside a row stays attended.
                Without a tokenizer every position is attended (as Hugging Face does).  Resuming with
                ``start_at_layer`` needs the mask passed explicitly.  ``one_zero_attention_mask`` is
                HookedEncoder's name for it.
            token_type_ids: segment ids ``[B, P]`` (default zeros, as HF).
            return_type: ``"logits"`` (default), ``"loss"`` (cross-entropy against ``labels``),
                ``"both"`` (``(logits, loss)``) or ``None``.
            labels: for the loss: MLM ``[B, P]`` token ids with −100 where no loss is taken (HF's
                convention; ``[n]`` with ``positions``), classifier ``[B]`` label ids.
            prepend_bos, padding_side: accepted for TransformerLens/SAELens callers; [CLS] is
                always there and BERT pads on the right (see :meth:`to_tokens`).
            input: TransformerLens's name for the first argument (ids or text).
            positions: MLM only: a bool mask ``[B, P]`` or a pair of index tensors ``(b, p)``;
                decode only these positions and return ``[n, V]`` (the cheap path for
                training and evaluation: METHODS §0 computes loss only at modified positions).
            start_at_layer, residual: resume at block ``start_at_layer`` from a cached
                ``blocks.{start}.hook_resid_pre`` (used by head sweeps, METHODS §7).
            stop_at_layer: return the residual stream entering this block (``[B, P, D]``), as in
                TransformerLens: exclusive, ``0`` = the embeddings, ``n_layers`` = the last block's
                output, negative counts from the end (``-1`` = entering the last block).
            readout_rows: compute the last block only at the rows the head reads ([CLS] of a
                classifier, ``positions`` of a masked LM; see :meth:`readout_rows_of`): same
                outputs up to float rounding, less work.  No effect with ``stop_at_layer``, for a
                bare encoder, for an MLM without ``positions``, or when the last block has a hook.

        Returns:
            MLM ``[B, P, V]`` (or ``[n, V]`` with ``positions``); classifier ``[B, K]``;
            bare encoder ``[B, P, D]`` (last hidden state); or the residual for ``stop_at_layer``.

        Example:
            >>> logits = model(ids, attention_mask=mask)              # doctest: +SKIP
            >>> resid = model(ids, stop_at_layer=3)                   # doctest: +SKIP
            >>> out = model(start_at_layer=3, residual=resid, attention_mask=mask)  # doctest: +SKIP
        """
        if return_type not in RETURN_TYPES:
            raise NodeprobeError(f"return_type={return_type!r}: expected one of 'logits', 'loss', 'both', None")
        if padding_side not in (None, "right"):
            raise NodeprobeError(f"padding_side={padding_side!r}: BERT pads on the right (allowed: 'right', None)")
        if attention_mask is None:
            attention_mask = one_zero_attention_mask
        if input is not None:
            if input_ids is not None:
                raise NodeprobeError("give the tokens once: input_ids or input (TransformerLens's name), not both")
            input_ids = input
        if isinstance(input_ids, (list, tuple)) and input_ids and all(
                isinstance(r, (list, tuple)) and r and all(isinstance(t, int) for t in r) for r in input_ids):
            input_ids = torch.tensor(input_ids, device=self.cfg.device)  # ids as nested lists
        if isinstance(input_ids, (str, list, tuple)):
            input_ids, types, mask = self.tokenize(input_ids)
            token_type_ids = types if token_type_ids is None else token_type_ids
            attention_mask = mask if attention_mask is None else attention_mask
        elif attention_mask is None and input_ids is not None and self.tokenizer is not None:
            attention_mask = self._trailing_pad_mask(input_ids)
        out = self._run(input_ids, attention_mask, token_type_ids, positions, start_at_layer, residual,
                        stop_at_layer, readout_rows)
        if stop_at_layer is not None or return_type == "logits":
            return out
        if return_type is None:
            return None
        loss = self.loss(out, labels, positions)
        return loss if return_type == "loss" else (out, loss)

    def _trailing_pad_mask(self, input_ids: Tensor) -> Tensor | None:
        """The mask of right padding: 0 on the run of pad tokens at the end of each row, 1 elsewhere
        (a pad id inside a row stays attended); None when no row ends in padding."""
        pad = getattr(self.tokenizer, "pad_token_id", None)
        if pad is None or input_ids.dim() != 2 or not input_ids.shape[1] or not bool((input_ids[:, -1] == pad).any()):
            return None
        real = (input_ids != pad).int()
        return torch.flip(torch.cummax(torch.flip(real, [1]), 1).values, [1]).long()  # 1 up to the last real token

    def loss(self, logits: Tensor, labels: Tensor | None, positions: Tensor | None = None) -> Tensor:
        """Mean cross-entropy of ``logits`` against ``labels`` (−100 ignored), the loss HF computes."""
        if labels is None:
            raise NodeprobeError("return_type='loss' needs labels= (MLM: [B, P] ids with -100 where no "
                                 "loss is taken; classifier: [B] label ids)")
        if self.kind == "base":
            raise NodeprobeError("return_type='loss': a bare encoder has no output head to take a loss of")
        labels = labels.to(logits.device)
        if self.kind == "mlm" and positions is not None and labels.dim() == 2 and logits.dim() == 2:
            labels = labels[positions]
        if labels.shape != logits.shape[:-1]:
            raise NodeprobeError(f"labels shape {tuple(labels.shape)}: expected {tuple(logits.shape[:-1])} "
                                 "(one label per logit row)")
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1).long(),
                               ignore_index=-100)

    def _run(self, input_ids, attention_mask, token_type_ids, positions, start_at_layer, residual,
             stop_at_layer, readout_rows) -> Tensor:
        dtype = next(self.hf.parameters()).dtype
        if start_at_layer is None:
            if input_ids is None:
                raise NodeprobeError("forward needs input_ids (or start_at_layer with a residual)")
            self._check_ids(input_ids)
            self._check_token_types(token_type_ids)
            x = self.hook_full_embed(self.embed(input_ids, token_type_ids))
            start = 0
        else:
            if residual is None:
                raise NodeprobeError("start_at_layer needs the cached residual entering that block")
            self.spec.check_layer(start_at_layer, "start_at_layer")
            x, start = residual, start_at_layer
        mask = self.extended_mask(attention_mask, x.dtype if x.is_floating_point() else dtype)
        stop = self.spec.n_layers if stop_at_layer is None else self._stop_layer(stop_at_layer)
        rows = self.readout_rows_of(x.shape[0], positions, x.device) if readout_rows and stop_at_layer is None else None
        for l in range(start, stop):
            x = self.blocks[l](x, mask, rows if l == stop - 1 else None)
        if stop_at_layer is not None:
            return x
        return self.head(x, positions)

    def _stop_layer(self, stop_at_layer: int) -> int:
        """TransformerLens's ``stop_at_layer``: exclusive, negative counts from the end (−1: all but the
        last block)."""
        L = self.spec.n_layers
        if isinstance(stop_at_layer, bool) or not isinstance(stop_at_layer, int) or not -L <= stop_at_layer <= L:
            raise NodeprobeError(f"stop_at_layer={stop_at_layer}: expected an integer from {-L} to {L} "
                                 f"(the model has {L} blocks; negative counts from the end)")
        return stop_at_layer % L if stop_at_layer < 0 else stop_at_layer

    def readout_rows_of(self, batch: int, positions: Tensor | None = None, device=None) -> Rows | None:
        """The rows of the last hidden state the head reads: [CLS] of every item (classifier), the
        ``positions`` (MLM, in the order of ``x[positions]``), or None (every row is needed)."""
        if self.kind == "cls":
            return Rows.first(batch, device or "cpu")
        if self.kind == "mlm" and positions is not None:
            return Rows.from_positions(positions)
        return None

    def head(self, x: Tensor, positions: Tensor | None = None) -> Tensor:
        """Apply the task head to the last hidden state (the logit lens applies it to any block).

        ``x`` is ``[B, P, D]``, or only the rows the head reads (:meth:`readout_rows_of`): ``[n, D]``
        at ``positions`` (MLM) or ``[B, D]`` at [CLS] (classifier).
        """
        rows_given = x.dim() == 2
        hd = self._head
        if self.kind == "mlm":
            if positions is not None and not rows_given:
                x = x[positions]
            h = self.readout.hook_in(self.mlm_head.ln(hd.act(hd.dense(x))))
            return self.unembed.hook_out(hd.out(self.unembed.hook_in(h)))
        if self.kind == "cls":
            v = self.readout.hook_in(hd.act(hd.dense(hd.drop_in(x if rows_given else x[:, 0]))))
            return hd.out(hd.drop_mid(v))
        if self._pooler is not None:
            self.readout.hook_in(self._pooler(x))
        return x

    def readout_path(self, x: Float[Tensor, "n D"]) -> Float[Tensor, "n K"]:
        """The trained head applied to residual rows ``x`` ``[n, D]`` without hook points (the logit
        lens, METHODS §4): MLM ``dense → act → LayerNorm → decoder``, classifier the head on each row
        as if it were the first token.

        Example:
            >>> logits = model.readout_path(cache["blocks.2.hook_normalized_resid_post"][:, 0])  # doctest: +SKIP
        """
        hd = self._head
        if self.kind == "mlm":
            return hd.out(hd.norm(hd.act(hd.dense(x))))
        if self.kind == "cls":
            return hd.out(hd.drop_mid(hd.act(hd.dense(hd.drop_in(x)))))
        raise NodeprobeError(f"a bare {type(self.hf).__name__} has no readout path: load a masked-LM or classifier "
                             "checkpoint")


@dataclass(frozen=True)
class _HeadParts:
    """The modules of an output head, resolved from its family's :class:`~nodeprobe.model.families.Head`."""

    dense: nn.Module | None = None
    act: object = None
    out: nn.Module | None = None
    norm: nn.Module | None = None
    drop_in: object = identity
    drop_mid: object = identity
    bias: Tensor | None = None

    @classmethod
    def of(cls, hf_model: nn.Module, family: Family, kind: str) -> "_HeadParts":
        if kind == "base":
            return cls()
        h = family.mlm if kind == "mlm" else family.cls
        g = lambda path: get(hf_model, path)  # noqa: E731
        return cls(dense=g(h.dense), act=activation(hf_model, h.act), out=g(h.out), norm=g(h.norm),
                   drop_in=g(h.drop_in) or identity, drop_mid=g(h.drop_mid) or identity,
                   bias=g(h.bias))
