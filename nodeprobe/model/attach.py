"""Hook points on an unwrapped Hugging Face encoder of any supported family (BERT, RoBERTa,
XLM-R, ELECTRA, DistilBERT: :mod:`nodeprobe.model.families`), added with PyTorch hooks and
removed on exit.

Use it through :func:`nodeprobe.hooks.attach`; the names, shapes and tensors match :class:`HookedBert`
(TransformerLens's BERT meanings: ``hook_resid_mid`` is the input of the attention LayerNorm,
``hook_resid_post`` the input of the output LayerNorm, ``hook_normalized_resid_post`` the block's
output).  The optional hook points TransformerLens gates behind ``cfg`` switches
(``attn.hook_result``, ``hook_attn_in``, ``hook_q|k|v_input``, ``hook_mlp_in``) exist but never fire
here: use :class:`~nodeprobe.model.bert.HookedBert` for them.
Attention scores/patterns are exposed by routing the model's attention through a registered
eager attention function for as long as the hooks are attached (SDPA would hide them).
"""

from __future__ import annotations

import torch
from einops import rearrange
import torch.nn.functional as F
from torch import nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from nodeprobe.errors import NodeprobeError
from nodeprobe.model.families import family_of, get
from nodeprobe.model.names import (ROOT, BlockHookPoints, EmbedHookPoints, MLMHeadHookPoints, ReadoutHookPoints,
                                   UnembedHookPoints, add_hook_points, check_hook_names, has_hooks)

_ATTN_NAME = "nodeprobe_eager"


def _hooked_eager_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Eager attention (as HF's) that passes scores and pattern through nodeprobe hook points."""
    hooks = getattr(module, "_nodeprobe_attn", None)
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # True = attend (the mask HF builds for custom kernels)
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    if hooks is not None:
        scores = hooks.hook_attn_scores(scores)
    pattern = F.softmax(scores, dim=-1)
    if hooks is not None:
        pattern = hooks.hook_pattern(pattern)
    pattern = F.dropout(pattern, p=dropout, training=module.training)
    out = torch.matmul(pattern, value).transpose(1, 2).contiguous()
    return out, pattern


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    if _ATTN_NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(_ATTN_NAME, _hooked_eager_attention)
        AttentionMaskInterface.register(_ATTN_NAME, eager_mask)  # the additive mask eager uses


def _split_heads(hp: HookPoint, n_heads: int):
    """Forward hook for a Linear producing ``[B, P, H*Dh]``: expose it as ``[B, P, H, Dh]``."""

    def fn(module, inputs, out):
        return rearrange(hp(rearrange(out, "b p (h d) -> b p h d", h=n_heads)), "b p h d -> b p (h d)")

    return fn


def _split_heads_pre(hp: HookPoint, n_heads: int):
    """Forward pre-hook on ``attention.output.dense``: its input is z, ``[B, P, H*Dh]``."""

    def fn(module, args):
        (x,) = args
        return (rearrange(hp(rearrange(x, "b p (h d) -> b p h d", h=n_heads)), "b p h d -> b p (h d)"),)

    return fn


def _out(hp: HookPoint):
    def fn(module, inputs, out):
        if isinstance(out, tuple):
            return (hp(out[0]), *out[1:])
        return hp(out)

    return fn


def _in(hp: HookPoint):
    """Forward pre-hook: pass the module's (first) input through ``hp``."""

    def fn(module, args):
        return (hp(args[0]), *args[1:])

    return fn


def _layer_norm(points: nn.Module):
    """Forward hook on an ``nn.LayerNorm``: with a hook on ``points.hook_scale|hook_normalized``,
    recompute the output through them (TransformerLens's LayerNorm), else leave it."""

    def fn(module, args, out):
        if not has_hooks(points.hook_scale, points.hook_normalized):
            return out
        x = args[0]
        xc = x - x.mean(-1, keepdim=True)
        scale = points.hook_scale((xc.pow(2).mean(-1, keepdim=True) + module.eps).sqrt())
        return points.hook_normalized(xc / scale) * module.weight + module.bias

    return fn


def _embed_parts(points: nn.Module):
    """Forward hooks on the token, token-type and position embeddings (position ones broadcast
    ``[1, P, D]`` in HF: expanded to the batch, ``[B, P, D]``, as in TransformerLens)."""
    shape = {}

    def word(module, args, out):
        shape["bp"] = out.shape[:2]  # called first in every family
        return points.hook_embed(out)

    def token_type(module, args, out):
        return points.hook_token_type_embed(out)

    def position(module, args, out):
        bp = shape.get("bp")
        return points.hook_pos_embed(out.expand(*bp, -1) if bp is not None and out.shape[0] == 1 else out)

    return word, token_type, position


def _pre(hp: HookPoint):
    def fn(module, args, kwargs):
        if args:
            return (hp(args[0]), *args[1:]), kwargs
        key = "hidden_states"
        kwargs[key] = hp(kwargs[key])
        return args, kwargs

    return fn


class AttachedHooks(HookedRootModule):
    """A ``HookedRootModule`` whose hook points are wired into a plain HF BERT by PyTorch hooks."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        object.__setattr__(self, "_hf", hf_model)
        arch = type(hf_model).__name__
        fam = family_of(arch)
        object.__setattr__(self, "_family", fam)
        enc = fam.encoder(hf_model)
        layers = get(enc, fam.layers)
        cfg = hf_model.config
        H = cfg.num_attention_heads
        if any(hasattr(get(layer, fam.attn_module), "_nodeprobe_attn") for layer in layers):
            raise NodeprobeError(f"hf_model: this {arch} already has nodeprobe hooks attached (a nested attach() "
                                 "on the same model would lose the outer hooks); use the outer hooked object")
        add_hook_points(self, ROOT)
        self.embed = EmbedHookPoints()
        self.blocks = nn.ModuleList(BlockHookPoints() for _ in layers)
        kind = fam.kind_of(arch)
        if kind == "mlm":
            self.mlm_head = MLMHeadHookPoints()
            self.unembed = UnembedHookPoints()
        self.readout = ReadoutHookPoints()
        self._handles: list = []
        self._swapped = False
        self._saved_attn = None
        try:
            reg = self._handles.append
            g = lambda root, path: get(root, path)  # noqa: E731
            word, token_type, position = _embed_parts(self.embed)
            reg(g(enc, fam.word).register_forward_hook(word))
            if fam.token_type is not None:
                reg(g(enc, fam.token_type).register_forward_hook(token_type))
            reg(g(enc, fam.position).register_forward_hook(position))
            reg(g(enc, fam.embed_ln).register_forward_hook(_layer_norm(self.embed.ln)))
            project = g(enc, fam.embed_project)
            embeddings = g(enc, fam.embed_ln.rsplit(".", 1)[0])
            reg((project or embeddings).register_forward_hook(_out(self.hook_full_embed)))
            for layer, blk in zip(layers, self.blocks):
                at = lambda path: g(layer, path)  # noqa: E731
                reg(layer.register_forward_pre_hook(_pre(blk.hook_resid_pre), with_kwargs=True))
                reg(at(fam.q).register_forward_hook(_split_heads(blk.attn.hook_q, H)))
                reg(at(fam.k).register_forward_hook(_split_heads(blk.attn.hook_k, H)))
                reg(at(fam.v).register_forward_hook(_split_heads(blk.attn.hook_v, H)))
                reg(at(fam.o).register_forward_pre_hook(_split_heads_pre(blk.attn.hook_z, H)))
                reg(at(fam.o).register_forward_hook(_out(blk.hook_attn_out)))
                reg(at(fam.ln1).register_forward_pre_hook(_in(blk.hook_resid_mid)))
                reg(at(fam.ln1).register_forward_hook(_layer_norm(blk.ln1)))
                reg(at(fam.fc_in).register_forward_hook(_out(blk.mlp.hook_pre)))
                reg(at(fam.mlp_post).register_forward_hook(_out(blk.mlp.hook_post)))
                reg(at(fam.fc_out).register_forward_hook(_out(blk.hook_mlp_out)))
                reg(at(fam.ln2).register_forward_pre_hook(_in(blk.hook_resid_post)))
                reg(at(fam.ln2).register_forward_hook(_layer_norm(blk.ln2)))
                reg(layer.register_forward_hook(_out(blk.hook_normalized_resid_post)))
                at(fam.attn_module)._nodeprobe_attn = blk.attn
            if kind == "mlm":
                head = fam.mlm
                reg(g(hf_model, head.norm).register_forward_hook(_layer_norm(self.mlm_head.ln)))
                reg(g(hf_model, head.out).register_forward_pre_hook(_in(self.readout.hook_in)))
                reg(g(hf_model, head.out).register_forward_pre_hook(_in(self.unembed.hook_in)))
                reg(g(hf_model, head.out).register_forward_hook(_out(self.unembed.hook_out)))
            elif kind == "cls":  # the vector entering the final linear map (dropout: identity in eval mode)
                reg(g(hf_model, fam.cls.out).register_forward_pre_hook(_in(self.readout.hook_in)))
            elif g(enc, fam.pooler) is not None:
                reg(g(enc, fam.pooler).register_forward_hook(_out(self.readout.hook_in)))
            _register_attention()
            self._saved_attn = cfg._attn_implementation
            cfg._attn_implementation = _ATTN_NAME
            self._swapped = True
        except BaseException:
            self.detach()
            raise
        self.setup()
        check_hook_names(self)

    def forward(self, *args, **kwargs):
        """Call the wrapped HF model with its usual arguments."""
        return self._hf(*args, **kwargs)

    def detach(self) -> None:
        """Remove every PyTorch hook this object added and restore the attention implementation."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        fam = self._family
        for layer in get(fam.encoder(self._hf), fam.layers):
            attn = get(layer, fam.attn_module)
            if hasattr(attn, "_nodeprobe_attn"):
                del attn._nodeprobe_attn
        if self._swapped:  # restore even when the saved value is None
            self._hf.config._attn_implementation = self._saved_attn
            self._swapped = False
            self._saved_attn = None
        self.reset_hooks(including_permanent=True)
