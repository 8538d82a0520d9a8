"""Model-side computations the reports need beyond the cache: the logit lens, single-node
isolation in the residual stream, head isolation, and seeded linear probes.

**Logit lens** (METHODS §2 "along blocks"): the trained readout path applied to a cached residual
vector ``r`` (``hook_full_embed`` or ``blocks.{l}.hook_normalized_resid_post`` at the evaluated position):
MLM → ``decoder(transform(r))`` (dense, GELU, LayerNorm, then the decoder); classification →
``classifier(tanh(pooler.dense(r)))`` on the [CLS] vector.  At the last block this is exactly the
model's own output.

**Single node i of block l** (``--site resid``): every other coordinate of the block output is
set to 0 (zero) or to its eval-set mean (mean), then the rest of the readout path runs.  The path
is not linear (GELU/LayerNorm, or tanh), so there is no envelope shortcut: the masked vectors of a
chunk of nodes are built as one ``[nodes·N, d]`` batch and pushed through the path at once
(:func:`resid_node_predictions`).  Cost: N·d rows through the path, i.e. O(N·d·(d² + d·K)) —
small for classification (K = 16), heavy for MLM at paper scale (use ``--limit`` or a GPU).

**Head (l, h) isolated** (METHODS §2): every other head of block l has its ``z`` zeroed (or set to
its per-position eval-set mean) and the rest of the network runs.  Attention mixes positions, so
the resume point is the *full* residual entering block l, which the cache (evaluated positions
only) does not hold; :func:`head_isolation_predictions` therefore runs, per batch, the embeddings
once, evaluates all heads of block l by resuming at ``blocks.{l}.hook_resid_pre`` with
``HookedBert.forward(start_at_layer=l, residual=…)``, then moves the clean residual one block up
(METHODS §7: blocks below the hooked one never rerun).  Results are saved in the cache's
``derived/`` folder and reused.

**Probe**: a fresh linear readout (seeded init, Adam, standardised features) trained on a seeded
part of the evaluation set and scored on the rest; its outputs are the classes present in the
training part (for MLM that keeps the probe small; a class never seen in training cannot be
learned anyway).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from nodeprobe.analysis.confusion import argmax_lowest
from nodeprobe.data.eval_sets import batch_types
from nodeprobe.errors import NodeprobeError
from nodeprobe.hooks import check_mode

_CHUNK_CELLS = 1 << 24  # floats per chunk of logits / hidden activations


def _device(model) -> torch.device:
    return next(model.parameters()).device


def lens_path(model) -> Callable[[Tensor], Tensor]:
    """``r [n, d] → logits [n, K]``: the trained readout path after the residual stream."""
    if model.kind not in ("mlm", "cls"):
        raise NodeprobeError(f"a bare {type(model.hf).__name__} has no readout path: load a masked-LM or classifier "
                             "checkpoint")
    return model.readout_path


def _rows_per_chunk(model, width: int) -> int:
    wide = max(width, model.spec.n_classes, model.spec.d_mlp if model.kind == "mlm" else 0, 1)
    return max(1, _CHUNK_CELLS // wide)


@torch.no_grad()
def lens_predictions(model, X: Tensor) -> Tensor:
    """Argmax (ties → lowest index) of the logit lens on ``X`` ``[N, d]``; ``[N]`` int64 on CPU."""
    path = lens_path(model)
    dev = _device(model)
    dt = next(model.parameters()).dtype
    step = _rows_per_chunk(model, X.shape[1])
    out = [argmax_lowest(path(X[a : a + step].to(dev, dt)).float()).cpu() for a in range(0, X.shape[0], step)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


@torch.no_grad()
def resid_node_predictions(model, X: Tensor, mode: str = "zero", means: Tensor | None = None,
                           nodes: Sequence[int] | None = None, progress: bool = False) -> Tensor:
    """Predictions of single nodes of a residual vector through the logit lens, ``[N, n_nodes]``.

    Node i keeps ``X[:, i]``; every other coordinate is 0 (zero) or ``means`` (mean).
    """
    from nodeprobe.progress import iterate

    check_mode(mode)
    N, d = X.shape
    if mode == "mean" and means is None:
        raise NodeprobeError("mode mean needs the eval-set means of the residual")
    node_list = list(range(d)) if nodes is None else [int(i) for i in nodes]
    path = lens_path(model)
    dev = _device(model)
    dt = next(model.parameters()).dtype
    base = torch.zeros(d, dtype=dt, device=dev) if mode == "zero" else means.to(dev, dt)
    Xd = X.to(dev, dt)
    rows = _rows_per_chunk(model, d)
    out = torch.empty((N, len(node_list)), dtype=torch.long)
    if rows >= N:  # whole columns: c nodes × N items per chunk
        c = max(1, rows // N)
        chunks = [(j, j + c, 0, N) for j in range(0, len(node_list), c)]
    else:  # one node, part of the items per chunk
        chunks = [(j, j + 1, a, min(N, a + rows)) for j in range(len(node_list)) for a in range(0, N, rows)]
    for j0, j1, a, e in iterate(chunks, len(chunks), "node isolation", enabled=progress):
        idx = node_list[j0:j1]
        n = e - a
        inp = base.expand(len(idx), n, d).clone()
        for q, i in enumerate(idx):
            inp[q, :, i] = Xd[a:e, i]
        pred = argmax_lowest(path(inp.reshape(-1, d)).float()).reshape(len(idx), n).cpu()
        out[a:e, j0 : j0 + len(idx)] = pred.T
    return out


@torch.no_grad()
def head_isolation_predictions(model, eval_set, layers: Sequence[int], mode: str = "zero",
                               means: dict[int, Tensor] | None = None, progress: bool = False) -> dict[int, Tensor]:
    """``{l: [n_heads, N]}``: predictions with head (l, h) isolated (METHODS §2), every h.

    Per batch the embeddings run once; block l's heads resume from the in-memory residual
    entering block l (``start_at_layer``), which then moves one block up.
    """
    from nodeprobe.hooks import isolate_head
    from nodeprobe.progress import iterate

    layers = sorted(set(int(l) for l in layers))
    for l in layers:
        model.spec.check_layer(l)
    check_mode(mode)
    if mode == "mean" and means is None:
        from nodeprobe.studies.ablation import head_means

        means = head_means(model, eval_set, layers)
    H = model.spec.n_heads
    dev = _device(model)
    model.eval()
    parts: dict[int, list[Tensor]] = {l: [] for l in layers}
    top = layers[-1]
    for b in iterate(eval_set.batches, len(eval_set.batches), "head isolation", enabled=progress):
        ids, attn = b.input_ids.to(dev), b.attention_mask.to(dev)
        pos = b.positions.to(dev) if b.positions is not None else None
        x = model.embed(ids, batch_types(b, model, dev))
        mask = model.extended_mask(attn, x.dtype)
        for l in range(top + 1):
            if l in parts:
                rows = []
                for h in range(H):
                    hook = isolate_head(l, h, mode, means[l] if mode == "mean" else None)
                    with model.hooks(fwd_hooks=[hook]):
                        logits = model(start_at_layer=l, residual=x, attention_mask=attn, positions=pos)
                    rows.append(argmax_lowest(logits.float()).cpu())
                parts[l].append(torch.stack(rows))
            if l < top:
                x = model.blocks[l](x, mask)
    return {l: torch.cat(v, dim=1) for l, v in parts.items()}


# ---------------------------------------------------------------------- probes
@dataclass(frozen=True)
class ProbeSettings:
    """A seeded linear probe: ``fraction`` of the items train it, the rest score it."""

    fraction: float = 0.5
    epochs: int = 30
    lr: float = 1e-2
    batch_size: int = 256
    weight_decay: float = 0.0
    seed: int = 0

    def check(self) -> None:
        if not 0.0 < self.fraction < 1.0:
            raise NodeprobeError(f"probe_fraction={self.fraction}: expected a number in (0, 1)")
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise NodeprobeError(f"probe_epochs={self.epochs}: expected a positive integer")
        if not self.lr > 0:
            raise NodeprobeError(f"probe lr {self.lr}: expected a positive number")


def probe_split(n_items: int, settings: ProbeSettings) -> tuple[np.ndarray, np.ndarray]:
    """Seeded ``(train_idx, test_idx)``, each sorted; both non-empty."""
    from nodeprobe.analysis.probe import split_half

    settings.check()
    if n_items < 2:
        raise NodeprobeError(f"a probe needs at least 2 items, the cache has {n_items}")
    return split_half(n_items, settings.fraction, settings.seed)


def probe_predictions(X: Tensor, y: Tensor, train_idx: np.ndarray, test_idx: np.ndarray,
                      settings: ProbeSettings, device: str | torch.device = "cpu") -> Tensor:
    """Train a fresh linear readout on ``X[train_idx]`` and predict ``X[test_idx]`` (class ids of y)
    (:func:`nodeprobe.analysis.probe.fit_linear`: standardised features, Adam)."""
    from nodeprobe.analysis.probe import FitSettings, fit_linear

    settings.check()
    fs = FitSettings(epochs=settings.epochs, lr=settings.lr, batch_size=settings.batch_size,
                     weight_decay=settings.weight_decay, seed=settings.seed, optimizer="adam", standardize=True)
    fit = fit_linear(X[torch.as_tensor(train_idx)], y[torch.as_tensor(train_idx)], fs, device)
    return fit.predict(X[torch.as_tensor(test_idx)])
