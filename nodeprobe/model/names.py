"""The one hook schema: every hook point's name, where it sits, and the module trees that hold them.

Both hooked models are built from it — :class:`~nodeprobe.model.bert.HookedBert` (nodeprobe runs
the computation) and :class:`~nodeprobe.model.attach.AttachedHooks` (PyTorch hooks on a plain
Hugging Face model) — so a hook name means the same tensor in both, and a new hook point is added
here once.  Names follow TransformerLens and mean what they mean in its own BERT, ``HookedEncoder`` (TL 3.9):
residual *sums* before each LayerNorm (``hook_resid_mid`` = x + a, ``hook_resid_post`` =
LN1(x + a) + m), the LayerNorm outputs at ``ln1``/``ln2`` and ``hook_normalized_resid_post``.

Example:
    >>> z(5)
    'blocks.5.attn.hook_z'
    >>> all_names(1)[5:8]
    ['hook_full_embed', 'blocks.0.hook_resid_pre', 'blocks.0.attn.hook_q']
    >>> len(all_names(6, "cls", optional=True)) == 5 + 1 + 6 * (len(BLOCK) + len(ATTN) + len(MLP) + 4) + 1
    True
"""

from __future__ import annotations

import re

from torch import nn
from transformer_lens.hook_points import HookPoint

from nodeprobe.errors import NodeprobeError

ROOT = ("hook_full_embed",)  # [B, P, D] the embedding layer's output (after its LayerNorm)
EMBED = ("hook_embed", "hook_token_type_embed", "hook_pos_embed")  # embed.*: the three parts (HF order), [B, P, D]
LN = ("hook_scale", "hook_normalized")  # <ln>.*: [.., 1] std; [.., D] (x - mean) / scale, before w, b
ATTN = ("hook_q", "hook_k", "hook_v", "hook_attn_scores", "hook_pattern", "hook_z", "hook_result")  # blocks.{l}.attn.*
MLP = ("hook_pre", "hook_post")  # blocks.{l}.mlp.*
BLOCK = ("hook_resid_pre", "hook_attn_in", "hook_q_input", "hook_k_input", "hook_v_input", "hook_attn_out",
         "hook_resid_mid", "hook_mlp_in", "hook_mlp_out", "hook_resid_post", "hook_normalized_resid_post")  # blocks.{l}.*
UNEMBED = ("hook_in", "hook_out")  # unembed.*: MLM only, the decoder's input and the logits
READOUT = ("hook_in",)  # readout.*: the vector entering the final linear map (METHODS §1)

# Hook points that fire only when their ``cfg`` switch is on, as in TransformerLens
# (they cost a [B, P, H, D] tensor each).
OPTIONAL = {
    "hook_attn_in": "use_attn_in",
    "hook_q_input": "use_split_qkv_input",
    "hook_k_input": "use_split_qkv_input",
    "hook_v_input": "use_split_qkv_input",
    "hook_mlp_in": "use_hook_mlp_in",
    "attn.hook_result": "use_attn_result",
}

# Names whose meaning changed when nodeprobe took TransformerLens's BERT (HookedEncoder) meanings.
RENAMED = {
    "hook_embed": "hook_full_embed (the LayerNorm'd sum; embed.hook_embed is the token embedding alone)",
}


def block(layer: int, name: str) -> str:
    """``blocks.{layer}.{name}``, e.g. ``block(2, "hook_resid_post")``."""
    return f"blocks.{layer}.{name}"


def attn(layer: int, name: str) -> str:
    """``blocks.{layer}.attn.{name}``, e.g. ``attn(2, "hook_pattern")``."""
    return f"blocks.{layer}.attn.{name}"


def z(layer: int) -> str:
    """Head outputs before ``W_O`` of block ``layer`` (``[B, P, H, Dh]``, METHODS site ``z``)."""
    return attn(layer, "hook_z")


def resid_post(layer: int) -> str:
    """Output of block ``layer`` after its last LayerNorm (``[B, P, D]``; TL: ``hook_normalized_resid_post``)."""
    return block(layer, "hook_normalized_resid_post")


READOUT_IN = "readout.hook_in"
FULL_EMBED = "hook_full_embed"


def all_names(n_layers: int, kind: str = "mlm", optional: bool = False) -> list[str]:
    """Every hook point name of an ``n_layers``-block model with output head ``kind``, in forward
    order; with ``optional=False`` only those a default forward fires (not :data:`OPTIONAL`)."""
    keep = (lambda n: True) if optional else (lambda n: n not in OPTIONAL)
    out = [f"embed.{n}" for n in EMBED] + [f"embed.ln.{n}" for n in LN] + list(ROOT)
    for l in range(n_layers):
        out += [block(l, n) for n in ("hook_resid_pre", "hook_attn_in", "hook_q_input", "hook_k_input",
                                      "hook_v_input") if keep(n)]
        out += [attn(l, n) for n in ATTN if keep(f"attn.{n}")]
        out += [block(l, n) for n in ("hook_attn_out", "hook_resid_mid", "hook_mlp_in") if keep(n)]
        out += [block(l, f"ln1.{n}") for n in LN]
        out += [f"blocks.{l}.mlp.{n}" for n in MLP]
        out += [block(l, n) for n in ("hook_mlp_out", "hook_resid_post")]
        out += [block(l, f"ln2.{n}") for n in LN] + [block(l, "hook_normalized_resid_post")]
    if kind == "mlm":
        return out + [f"mlm_head.ln.{n}" for n in LN] + [READOUT_IN] + [f"unembed.{n}" for n in UNEMBED]
    return out + [READOUT_IN]


def add_hook_points(module: nn.Module, names: tuple[str, ...]) -> nn.Module:
    """Give ``module`` one :class:`HookPoint` attribute per name; returns ``module``."""
    for n in names:
        setattr(module, n, HookPoint())
    return module


def has_hooks(*points: HookPoint) -> bool:
    """Whether any hook (forward, pre-forward or backward) is attached to one of ``points``."""
    return any(hp._forward_hooks or hp._forward_pre_hooks or hp._backward_hooks for hp in points)


class LNHookPoints(nn.Module):
    """``hook_scale`` / ``hook_normalized`` of one LayerNorm."""

    def __init__(self):
        super().__init__()
        add_hook_points(self, LN)


class EmbedHookPoints(nn.Module):
    """``embed.hook_embed|pos_embed|token_type_embed`` and ``embed.ln.*``."""

    def __init__(self, ln: nn.Module | None = None):
        super().__init__()
        add_hook_points(self, EMBED)
        self.ln = ln if ln is not None else LNHookPoints()


class AttnHookPoints(nn.Module):
    """``attn.hook_q|k|v|attn_scores|pattern|z|result`` of one block."""

    def __init__(self):
        super().__init__()
        add_hook_points(self, ATTN)


class BlockHookPoints(nn.Module):
    """The hook points of one block: ``hook_resid_pre`` … ``hook_normalized_resid_post``, ``attn.*``,
    ``mlp.*``, ``ln1.*``, ``ln2.*``.

    ``attn`` / ``mlp`` / ``ln1`` / ``ln2`` may be given (modules that already hold those hook
    points, e.g. the hooked attention that also computes, or one that also exposes weights)."""

    def __init__(self, attn: nn.Module | None = None, mlp: nn.Module | None = None,
                 ln1: nn.Module | None = None, ln2: nn.Module | None = None):
        super().__init__()
        self.attn = attn if attn is not None else AttnHookPoints()
        self.mlp = add_hook_points(mlp if mlp is not None else nn.Module(), MLP)
        self.ln1 = ln1 if ln1 is not None else LNHookPoints()
        self.ln2 = ln2 if ln2 is not None else LNHookPoints()
        add_hook_points(self, BLOCK)


class MLMHeadHookPoints(nn.Module):
    """``mlm_head.ln.*``: the LayerNorm at the end of BERT's prediction-head transform."""

    def __init__(self, ln: nn.Module | None = None):
        super().__init__()
        self.ln = ln if ln is not None else LNHookPoints()


class UnembedHookPoints(nn.Module):
    """``unembed.hook_in`` / ``unembed.hook_out`` (MLM decoder input and logits)."""

    def __init__(self):
        super().__init__()
        add_hook_points(self, UNEMBED)


class ReadoutHookPoints(nn.Module):
    """``readout.hook_in``."""

    def __init__(self):
        super().__init__()
        add_hook_points(self, READOUT)


class HookNameDict(dict):
    """TransformerLens's name → hook point table, where an unknown name is a :class:`NodeprobeError`
    naming it and what exists (TL itself raises a bare ``KeyError``).

    Example:
        >>> d = HookNameDict({"hook_embed": 0, "blocks.0.attn.hook_z": 1, "blocks.1.attn.hook_z": 2})
        >>> d["blocks.7.attn.hook_z"]
        Traceback (most recent call last):
        ...
        nodeprobe.errors.NodeprobeError: layer=7: the model has blocks 0–1 (no hook point blocks.7.attn.hook_z)
    """

    def __missing__(self, name):
        blocks = sorted({int(m.group(1)) for k in self if (m := re.match(r"blocks\.(\d+)\.", k))})
        hit = re.match(r"blocks\.(-?\d+)\.", str(name))
        if hit and blocks and int(hit.group(1)) not in blocks:
            raise NodeprobeError(f"layer={hit.group(1)}: the model has blocks {blocks[0]}–{blocks[-1]} "
                                 f"(no hook point {name})")
        if name in RENAMED:
            raise NodeprobeError(f"hook={name!r}: no such hook point; TransformerLens's BERT calls it {RENAMED[name]}")
        import difflib

        points = [k for k in self if "hook_" in k.rsplit(".", 1)[-1]]
        like = difflib.get_close_matches(str(name), points, n=3, cutoff=0.0)
        raise NodeprobeError(f"hook={name!r}: no such hook point; did you mean {' or '.join(like)}? "
                             f"(all of them: model.hook_dict)")


def check_hook_names(root) -> None:
    """Make ``root``'s TransformerLens name tables (``mod_dict``, ``hook_dict``; filled by ``setup()``)
    refuse unknown names with one line instead of a ``KeyError``."""
    root.mod_dict = HookNameDict(root.mod_dict)
    root.hook_dict = HookNameDict(root.hook_dict)
