"""Reusable hook functions, TransformerLens signature ``fn(tensor, hook)``.

Every factory returns a ``(hook_name, fn)`` pair for ``run_with_hooks(fwd_hooks=[...])`` or
``model.hooks(fwd_hooks=[...])``.  They work on :class:`nodeprobe.HookedBert`, on a plain Hugging
Face BERT under :func:`attach`, and on a TransformerLens ``TransformerBridge`` BERT (whose
``blocks.{l}.attn.hook_z`` also carries ``[batch, pos, head, d_head]``; its readout vector is
``ln_final.hook_out``, so use ``("ln_final.hook_out", keep_nodes(S)[1])`` there — see
``hooks/bridge_head_ablation.py`` for the name mapping).  Head hooks refuse a head-merged
``[batch, pos, head*d_head]`` tensor rather than misreading its axes.

Example:
    >>> from nodeprobe.hooks import ablate_head, keep_nodes
    >>> logits = model.run_with_hooks(ids, fwd_hooks=[ablate_head(5, 3)])      # doctest: +SKIP
    >>> logits = model.run_with_hooks(ids, fwd_hooks=[keep_nodes([12, 40])])   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from nodeprobe.errors import NodeprobeError
from nodeprobe.model import names

Mode = Literal["zero", "mean"]
HookPair = tuple[str, Callable]


MODES = ("zero", "mean")


def check_mode(mode: str) -> None:
    """What silenced units are set to: ``zero`` or ``mean`` (METHODS §2); a one-line error otherwise."""
    if mode not in MODES:
        raise NodeprobeError(f"mode={mode}: expected zero or mean")


def _check_mode(mode: str, means) -> None:
    check_mode(mode)
    if mode == "mean" and means is None:
        raise NodeprobeError("mode=mean needs the eval-set means (nodeprobe.studies.ablation.head_means for heads, the readout mean for nodes)")


def z_name(layer: int) -> str:
    """Hook name of the head outputs of block ``layer``: ``blocks.{layer}.attn.hook_z``."""
    return names.z(layer)


def _check_z(z: Tensor, head: int) -> int:
    """Check ``z`` is ``[batch, pos, head, d_head]`` and ``head`` is one of its heads; return n_heads.

    A head-merged ``[batch, pos, head*d_head]`` tensor is refused: indexing its last-but-one axis
    would silently ablate one *position* instead of one head.
    """
    if z.dim() != 4:
        raise NodeprobeError(
            f"head hook got a tensor of shape {tuple(z.shape)}: expected [batch, pos, head, d_head] "
            "(hook it at blocks.{l}.attn.hook_z)"
        )
    n_heads = z.shape[2]
    if not 0 <= head < n_heads:
        raise NodeprobeError(f"head={head}: the model has heads 0–{n_heads - 1}")
    return n_heads


def _head_fill(z: Tensor, heads: Tensor | list[int] | slice, mode: Mode, means: Tensor | None) -> Tensor:
    """Return ``z`` with the given heads set to 0 or to their mean (per position when ``means`` has one)."""
    z = z.clone()
    if mode == "zero":
        z[:, :, heads] = 0.0
        return z
    m = means.to(z.device, z.dtype)
    if m.dim() == 3:  # [pos, head, d_head]: per-position means (METHODS §2 default for mean mode)
        if m.shape[0] < z.shape[1]:
            raise NodeprobeError(
                f"per-position means cover {m.shape[0]} positions, the batch has {z.shape[1]}"
            )
        z[:, :, heads] = m[: z.shape[1], heads]
    else:  # [head, d_head]
        z[:, :, heads] = m[heads]
    return z


def ablate_head(
    layer: int, head: int, mode: Mode = "zero", means: Float[Tensor, "... head d_head"] | None = None
) -> HookPair:
    """Ablate head ``(layer, head)``: its ``z`` → 0 (zero) or its eval-set mean (mean). METHODS §2.

    Args:
        means: ``[pos, head, d_head]`` per-position means (METHODS default for mean mode) or
            ``[head, d_head]``.

    Example:
        >>> name, fn = ablate_head(5, 3)
        >>> name
        'blocks.5.attn.hook_z'
    """
    _check_mode(mode, means)

    def fn(z: Float[Tensor, "batch pos head d_head"], hook=None) -> Tensor:
        _check_z(z, head)
        return _head_fill(z, [head], mode, means)

    fn.__name__ = f"ablate_head_L{layer}H{head}_{mode}"
    return z_name(layer), fn


def isolate_head(
    layer: int, head: int, mode: Mode = "zero", means: Float[Tensor, "... head d_head"] | None = None
) -> HookPair:
    """Isolate head ``(layer, head)``: ablate every *other* head of block ``layer``. METHODS §2.

    Example:
        >>> isolate_head(0, 1)[0]
        'blocks.0.attn.hook_z'
    """
    _check_mode(mode, means)

    def fn(z: Float[Tensor, "batch pos head d_head"], hook=None) -> Tensor:
        n_heads = _check_z(z, head)
        others = [h for h in range(n_heads) if h != head]
        return _head_fill(z, others, mode, means)

    fn.__name__ = f"isolate_head_L{layer}H{head}_{mode}"
    return z_name(layer), fn


def keep_nodes(
    nodes: Sequence[int], mode: Mode = "zero", means: Float[Tensor, " d_model"] | None = None
) -> HookPair:
    """Keep only node set S at ``readout.hook_in``: ``x_j := 0`` (zero) or ``μ_j`` (mean) for j ∉ S.

    Example:
        >>> keep_nodes([12, 40])[0]
        'readout.hook_in'
    """
    _check_mode(mode, means)
    nodes = list(nodes)

    def fn(x: Float[Tensor, "... d_model"], hook=None) -> Tensor:
        d = x.shape[-1]
        bad = [n for n in nodes if not 0 <= n < d]
        if bad:
            raise NodeprobeError(f"nodes={bad[0]}: the readout has nodes 0–{d - 1}")
        keep = torch.zeros(d, dtype=torch.bool, device=x.device)
        keep[nodes] = True
        fill = torch.zeros((), dtype=x.dtype, device=x.device) if mode == "zero" else means.to(x.device, x.dtype)
        return torch.where(keep, x, fill)

    fn.__name__ = f"keep_nodes_{len(nodes)}_{mode}"
    return "readout.hook_in", fn


# ---------------------------------------------------------------------- streaming cache
class SiteCache:
    """Caching hooks that keep chosen sites at chosen positions and move them to CPU as they go.

    Unlike ``run_with_cache`` (which holds every full ``[batch, pos, ...]`` tensor), this keeps, per
    batch, only the rows you select — [CLS] (``positions="cls"``) or given ``(batch_idx, pos_idx)``
    pairs (the modified positions of MLM) — and appends them, detached, on ``device`` (CPU by
    default, as nnsight does).  Tensors without a position axis (``readout.hook_in`` of a
    classifier, ``[batch, d]``; or MLM readout already restricted to positions, ``[n, d]``) are kept
    whole.

    Example:
        >>> cache = SiteCache(["blocks.5.attn.hook_z", "readout.hook_in"], positions="cls")
        >>> for batch in batches:                                  # doctest: +SKIP
        ...     model.run_with_hooks(**batch, fwd_hooks=cache.fwd_hooks())
        >>> z = cache.stack()["blocks.5.attn.hook_z"]              # [N, head, d_head]  # doctest: +SKIP
    """

    def __init__(self, names: Sequence[str], positions: Literal["cls", "all"] | None = "cls", device="cpu", dtype=None):
        if positions not in ("cls", "all", None):
            raise NodeprobeError(f"SiteCache positions {positions!r}: expected 'cls', 'all' or None")
        self.names = list(names)
        self.device = torch.device(device)
        self.dtype = dtype
        self.mode = positions
        self.index: tuple[Tensor, Tensor] | None = None
        self.store: dict[str, list[Tensor]] = {n: [] for n in self.names}

    def set_positions(self, batch_idx: Tensor, pos_idx: Tensor) -> None:
        """Select the ``(batch, pos)`` rows to keep in the next forward (e.g. MLM modified positions)."""
        self.mode = None
        self.index = (batch_idx, pos_idx)

    def _select(self, name: str, t: Tensor) -> Tensor:
        # [B, P, ...] has a position axis; [B, D] (classifier readout) and [n, D] (MLM readout
        # decoded at chosen positions only) do not.  A full MLM readout [B, P, D] does.
        per_position = t.dim() >= 3
        if self.mode is None and self.index is None:
            raise NodeprobeError("SiteCache: call set_positions(batch_idx, pos_idx) before the forward")
        if name.endswith(("hook_pattern", "hook_attn_scores")):
            # [B, H, Q, K]: keep the query rows of the chosen positions → [n, H, K]
            if self.mode == "cls":
                return t[:, :, 0]
            if self.mode == "all":
                return t
            b, p = self.index
            return t[b, :, p]
        if not per_position:
            return t
        if self.mode == "cls":
            return t[:, 0]
        if self.mode == "all":
            return t
        b, p = self.index
        return t[b, p]

    def _hook(self, t: Tensor, hook=None, *, name: str) -> None:
        kept = self._select(name, t.detach())
        # A blocking copy: a non_blocking GPU→CPU copy may still be in flight when the caller
        # reads the stored tensor (it lands in pinned memory asynchronously).
        kept = kept.to(self.device, self.dtype or kept.dtype)
        if kept.untyped_storage().data_ptr() == t.untyped_storage().data_ptr():
            kept = kept.clone()  # a view would keep the whole [batch, pos, ...] activation alive
        self.store[name].append(kept)

    def fwd_hooks(self) -> list[HookPair]:
        """The ``(name, fn)`` pairs to pass to ``run_with_hooks``.

        Each function is bound to the name it was requested under, so it also works on hook
        aliases (a ``TransformerBridge`` calls ``blocks.{l}.attn.hook_z`` hooks with the
        canonical hook point ``blocks.{l}.attn.o.hook_in``).
        """
        return [(n, functools.partial(self._hook, name=n)) for n in self.names]

    def stack(self, clear: bool = True) -> dict[str, Tensor]:
        """Concatenate what was kept along the item axis; ``clear`` empties the store."""
        out = {n: torch.cat(v) if v else torch.empty(0) for n, v in self.store.items()}
        if clear:
            self.store = {n: [] for n in self.names}
        return out


# ---------------------------------------------------------------------- attach to plain HF
@contextlib.contextmanager
def attach(hf_model: nn.Module) -> Iterator["object"]:
    """Give a plain Hugging Face BERT the nodeprobe hook points for the duration of a ``with``.

    Inside the block, the yielded object is a ``HookedRootModule`` whose forward calls the HF model
    (with its usual keyword arguments) and whose hook points carry the same names and shapes as
    :class:`HookedBert`, with TransformerLens's BERT meanings (``embed.*``, ``hook_full_embed``,
    ``blocks.{l}.hook_resid_pre``, ``attn.hook_q|k|v|attn_scores|pattern|z``, ``hook_attn_out``,
    ``hook_resid_mid``, ``ln1.*``, ``mlp.hook_pre|post``, ``hook_mlp_out``, ``hook_resid_post``,
    ``ln2.*``, ``hook_normalized_resid_post``, ``mlm_head.ln.*``, ``unembed.*``,
    ``readout.hook_in``; see :mod:`nodeprobe.model.names`); attention runs through an eager
    kernel while attached, so scores and patterns are always exposed.  Every PyTorch hook it put
    on the HF modules is removed on exit, exceptions included, and ``config._attn_implementation``
    is restored.

    Example:
        >>> with attach(hf_classifier) as hooked:                               # doctest: +SKIP
        ...     out = hooked.run_with_hooks(input_ids=ids, fwd_hooks=[ablate_head(1, 0)])
        >>> out.logits                                                          # doctest: +SKIP
    """
    from nodeprobe.model.attach import AttachedHooks

    hooked = AttachedHooks(hf_model)
    try:
        yield hooked
    finally:
        hooked.detach()
