"""The one hook schema: every hook point's name, where it sits, and the module trees that hold them.

Both hooked models are built from it — :class:`~nodeprobe.model.bert.HookedBert` (nodeprobe runs
the computation) and :class:`~nodeprobe.model.attach.AttachedHooks` (PyTorch hooks on a plain
Hugging Face model) — so a hook name means the same tensor in both, and a new hook point is added
here once.  Names follow TransformerLens (``blocks.{l}.attn.hook_z`` …).

Example:
    >>> z(5)
    'blocks.5.attn.hook_z'
    >>> all_names(1)[:3]
    ['hook_embed', 'blocks.0.hook_resid_pre', 'blocks.0.attn.hook_q']
    >>> len(all_names(6)) == len(ROOT) + 6 * (len(BLOCK) + len(ATTN) + len(MLP)) + len(READOUT)
    True
"""

from __future__ import annotations

import re

from torch import nn
from transformer_lens.hook_points import HookPoint

from nodeprobe.errors import NodeprobeError

ROOT = ("hook_embed",)  # [B, P, D] the embedding layer's output
ATTN = ("hook_q", "hook_k", "hook_v", "hook_attn_scores", "hook_pattern", "hook_z")  # blocks.{l}.attn.*
MLP = ("hook_pre", "hook_post")  # blocks.{l}.mlp.*
BLOCK = ("hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post")  # blocks.{l}.*
READOUT = ("hook_in",)  # readout.*: the vector entering the final linear map (METHODS §1)


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
    """Output of block ``layer`` (``[B, P, D]``)."""
    return block(layer, "hook_resid_post")


READOUT_IN = "readout.hook_in"
EMBED = "hook_embed"


def all_names(n_layers: int) -> list[str]:
    """Every hook point name of an ``n_layers``-block model, in forward order."""
    out = list(ROOT)
    for l in range(n_layers):
        out.append(block(l, "hook_resid_pre"))
        out += [attn(l, n) for n in ATTN]
        out += [block(l, n) for n in ("hook_attn_out", "hook_resid_mid")]
        out += [f"blocks.{l}.mlp.{n}" for n in MLP]
        out += [block(l, n) for n in ("hook_mlp_out", "hook_resid_post")]
    return out + [f"readout.{n}" for n in READOUT]


def add_hook_points(module: nn.Module, names: tuple[str, ...]) -> nn.Module:
    """Give ``module`` one :class:`HookPoint` attribute per name; returns ``module``."""
    for n in names:
        setattr(module, n, HookPoint())
    return module


class AttnHookPoints(nn.Module):
    """``attn.hook_q|k|v|attn_scores|pattern|z`` of one block."""

    def __init__(self):
        super().__init__()
        add_hook_points(self, ATTN)


class BlockHookPoints(nn.Module):
    """The hook points of one block: ``hook_resid_pre`` … ``hook_resid_post``, ``attn.*``, ``mlp.*``.

    ``attn`` / ``mlp`` may be given (modules that already hold those hook points, e.g. the hooked
    attention that also computes, or one that also exposes weights)."""

    def __init__(self, attn: nn.Module | None = None, mlp: nn.Module | None = None):
        super().__init__()
        self.attn = attn if attn is not None else AttnHookPoints()
        self.mlp = add_hook_points(mlp if mlp is not None else nn.Module(), MLP)
        add_hook_points(self, BLOCK)


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
