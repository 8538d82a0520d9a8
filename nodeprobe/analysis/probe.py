"""Seeded multinomial logistic regression: the one linear-readout trainer of nodeprobe.

Two users: the *probe* of ``blocks``/``apt`` (standardised features, Adam, scored on held-out
items) and the *block readouts* of METHODS v2 §2 (raw activations, AdamW lr 1e-3, weight decay
1e-4, 30 epochs, batch 256), the frozen linear map under which every node and head of a site
``attn``/``mlp``/``resid`` of block l is a unit exactly as at ``readout``.

The outputs are the classes present in the training labels (``classes``, sorted): a class never
seen in training has logit −∞ (METHODS §2), i.e. no row.

Determinism: the weights are initialised under ``torch.manual_seed(seed)`` inside a forked RNG
(the caller's RNG is untouched), the batch order of every epoch comes from
``torch.Generator().manual_seed(seed)``; the same inputs and settings give the same bytes.

Example:
    >>> import torch
    >>> X = torch.tensor([[0.0, 1.0], [1.0, 0.0]] * 8); y = torch.tensor([3, 7] * 8)
    >>> fit = fit_linear(X, y, FitSettings(epochs=50, lr=0.1))
    >>> fit.classes.tolist(), fit.predict(X)[:2].tolist()
    ([3, 7], [3, 7])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from nodeprobe.analysis.confusion import argmax_lowest
from nodeprobe.errors import NodeprobeError

_CHUNK_CELLS = 1 << 24  # logits per prediction chunk


@dataclass(frozen=True)
class FitSettings:
    """How :func:`fit_linear` trains (defaults: the block readouts of METHODS v2 §2)."""

    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 256
    weight_decay: float = 1e-4
    seed: int = 0
    optimizer: str = "adamw"  # adamw | adam (the v1 probe)
    standardize: bool = False  # raw activations: zeroing a node means what it means at readout

    def check(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise NodeprobeError(f"epochs={self.epochs}: expected a positive integer")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < float("inf")):
            raise NodeprobeError(f"lr={self.lr}: expected a positive finite number")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise NodeprobeError(f"batch_size={self.batch_size}: expected a positive integer")
        if not (isinstance(self.weight_decay, (int, float)) and 0 <= self.weight_decay < float("inf")):
            raise NodeprobeError(f"weight_decay={self.weight_decay}: expected a finite number ≥ 0")
        if self.optimizer not in ("adamw", "adam"):
            raise NodeprobeError(f"optimizer={self.optimizer!r}: expected adamw or adam")


@dataclass(frozen=True)
class LinearFit:
    """A trained readout ``logits = W x + b`` over ``classes`` (W ``[K', d]`` in the raw input
    coordinates, b ``[K']``, classes ``[K']`` int64, sorted), and the standardisation used while
    training (``mu``/``sd``; None when raw)."""

    W: Tensor
    b: Tensor
    classes: Tensor
    mu: Tensor | None = None
    sd: Tensor | None = None

    def predict(self, X: Float[Tensor, "N d"]) -> Int[Tensor, "N"]:
        """Class ids (of ``classes``) of the argmax, ties → lowest, chunked over items."""
        Xf = X.float()
        if self.mu is not None:
            Xf = (Xf - self.mu) / self.sd
        out = []
        step = max(1, _CHUNK_CELLS // max(1, int(self.classes.numel())))
        for a in range(0, Xf.shape[0], step):
            out.append(argmax_lowest(Xf[a : a + step] @ self.W.T + self.b).cpu())
        pred = torch.cat(out) if out else torch.empty(0, dtype=torch.long)
        return self.classes[pred]


def fit_linear(X: Float[Tensor, "N d"], y: Int[Tensor, "N"], settings: FitSettings = FitSettings(),
               device: str | torch.device = "cpu") -> LinearFit:
    """Train a seeded multinomial logistic regression on ``(X, y)`` (see the module docstring).

    With ``settings.standardize`` the returned ``W``/``b`` act on standardised inputs and
    :meth:`LinearFit.predict` standardises; otherwise they act on ``X`` itself.
    """
    settings.check()
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise NodeprobeError(f"X {tuple(X.shape)} and y {tuple(y.shape)}: expected [N, d] and [N]")
    if X.shape[0] == 0:
        raise NodeprobeError("a linear readout needs at least one training item")
    classes, yc = torch.unique(y.long(), return_inverse=True)
    Xtr = X.float()
    mu = sd = None
    if settings.standardize:
        mu = Xtr.mean(0)
        sd = Xtr.std(0, unbiased=False).clamp(min=1e-6)
        Xtr = (Xtr - mu) / sd
    Xtr = Xtr.to(device)
    yc = yc.to(device)
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):  # every generator manual_seed touches is restored after
        torch.manual_seed(settings.seed)
        lin = torch.nn.Linear(X.shape[1], int(classes.numel())).to(device)
    opt_cls = torch.optim.AdamW if settings.optimizer == "adamw" else torch.optim.Adam
    opt = opt_cls(lin.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    g = torch.Generator().manual_seed(settings.seed)
    n = Xtr.shape[0]
    with torch.enable_grad():
        for _ in range(settings.epochs):
            order = torch.randperm(n, generator=g).to(device)
            for a in range(0, n, settings.batch_size):
                idx = order[a : a + settings.batch_size]
                loss = F.cross_entropy(lin(Xtr[idx]), yc[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    W = lin.weight.detach().cpu().contiguous()
    b = lin.bias.detach().cpu().contiguous()
    return LinearFit(W, b, classes.cpu(), mu, sd)


def split_half(n_items: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded ``(train_idx, test_idx)`` of ``n_items`` (``fraction`` train), each sorted, both non-empty.

    Example:
        >>> tr, te = split_half(10, 0.5, 0); len(tr), len(te), sorted(set(tr) | set(te)) == list(range(10))
        (5, 5, True)
    """
    if n_items < 2:
        raise NodeprobeError(f"a held-out split needs at least 2 items, got {n_items}")
    perm = np.random.default_rng(seed).permutation(n_items)
    k = min(n_items - 1, max(1, int(round(fraction * n_items))))
    return np.sort(perm[:k]), np.sort(perm[k:])
