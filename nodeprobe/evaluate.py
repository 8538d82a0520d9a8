"""The one evaluation loop: every command, pre-training's held-out evaluation and fine-tuning's
test evaluation call :func:`run_eval`.

:func:`run_eval` runs a model over an evaluation set (:class:`nodeprobe.data.eval_sets.EvalSet`:
sentences for classification, fixed-mask modified positions for MLM) with optional hooks and an
optional :class:`nodeprobe.hooks.SiteCache`, under fp32 or bf16 autocast, and returns predictions,
targets and per-item losses (:class:`EvalResult`) — never holding more than one batch of
activations.  Evaluation sets themselves are built in :mod:`nodeprobe.data.eval_sets`.

Example:
    >>> from nodeprobe.data.eval_sets import load_eval_set                # doctest: +SKIP
    >>> es = load_eval_set("fewrel", tokenizer, data="../shared/data")     # doctest: +SKIP
    >>> res = run_eval(model, es)                                         # doctest: +SKIP
    >>> res.accuracy, res.loss, res.n                                     # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from nodeprobe.data.eval_sets import EvalSet, batch_types
from nodeprobe.errors import NodeprobeError
from nodeprobe.progress import iterate
from nodeprobe.precision import autocast, check_precision

__all__ = ["EvalResult", "check_model", "run_eval"]


@dataclass
class EvalResult:
    """Predictions (argmax, ties → lowest index), targets and per-item losses, all ``[N]`` on CPU.

    ``loss_sum`` is the summed loss, accumulated batch by batch in float64 (each batch's
    float32 sum); ``loss`` = ``loss_sum / n`` and ``accuracy`` = ``correct / n`` are exact
    ratios (0.0 for an empty set).  Without ``loss_sum`` it is the float64 sum of ``losses``.

    Example:
        >>> r = EvalResult(torch.tensor([1, 0, 2]), torch.tensor([1, 1, 2]), torch.tensor([0.5, 2.0, 0.5]))
        >>> r.n, round(r.accuracy, 4), r.loss
        (3, 0.6667, 1.0)
    """

    preds: Tensor  # Int64[Tensor, "N"]
    targets: Tensor  # Int64[Tensor, "N"]
    losses: Tensor  # Float32[Tensor, "N"]
    extra: dict = field(default_factory=dict)
    loss_sum: float | None = None

    def __post_init__(self):
        if self.loss_sum is None:
            self.loss_sum = float(self.losses.double().sum())

    @property
    def n(self) -> int:
        """The number of scored items."""
        return int(self.targets.numel())

    @property
    def accuracy(self) -> float:
        return int((self.preds == self.targets).sum()) / self.n if self.n else 0.0

    @property
    def loss(self) -> float:
        return self.loss_sum / self.n if self.n else 0.0


def check_model(model, eval_set: EvalSet) -> None:
    """Refuse a model that cannot score ``eval_set``: a classifier for MLM (or the reverse), or
    another number of output classes (one-line :class:`NodeprobeError`).

    Example:
        >>> check_model(mlm_model, load_eval_set("fewrel", tok))       # doctest: +SKIP
        Traceback (most recent call last):
        nodeprobe.errors.NodeprobeError: task=fewrel needs a fine-tuned classifier; this model is a mlm model
    """
    if eval_set.task != "mlm" and model.kind != "cls":
        raise NodeprobeError(f"task={eval_set.task} needs a fine-tuned classifier; this model is a {model.kind} model")
    if eval_set.task == "mlm" and model.kind != "mlm":
        raise NodeprobeError(f"task=mlm needs a masked-LM checkpoint; this model is a {model.kind} model")
    K = eval_set.n_classes
    if model.spec.n_classes != K:
        raise NodeprobeError(
            f"the model has {model.spec.n_classes} output classes but the {eval_set.task} data has {K}; allowed: "
            f"a classifier with {K} labels (`nodeprobe finetune` makes one)"
        )


@torch.no_grad()
def run_eval(model, eval_set: EvalSet, fwd_hooks=(), cache=None, device=None, precision: str = "fp32",
             progress: bool = False, description: str = "evaluate") -> EvalResult:
    """Run ``model`` (a HookedBert) over ``eval_set`` with optional hooks and a :class:`SiteCache`.

    Args:
        model: a :class:`nodeprobe.model.HookedBert` of the set's kind (``cls`` for fewrel/dbpedia,
            ``mlm`` for mlm) with ``eval_set.n_classes`` outputs.  It runs in eval mode; its
            train/eval mode is restored afterwards.
        eval_set: batches of ``input_ids``/``attention_mask`` ``[B, P]`` (MLM: ``positions``
            ``[B, P]``) and ``targets`` ``[n_i]``; iterated once (a streamed set is read once).
        fwd_hooks: ``(hook_name, fn)`` pairs, active for the whole pass.
        cache: a :class:`nodeprobe.hooks.SiteCache` filled batch by batch.
        device: where to run (default: the model's device).
        precision: ``fp32``, or ``bf16`` (autocast; logits and losses are computed in float32).
        progress: show a bar (the installed :mod:`nodeprobe.progress` reporter).

    Returns:
        :class:`EvalResult` with ``preds``/``targets``/``losses`` ``[N]`` (N = ``eval_set.n_items``).

    Example:
        >>> base = run_eval(model, es)                                             # doctest: +SKIP
        >>> abl = run_eval(model, es, fwd_hooks=[ablate_head(5, 3)])               # doctest: +SKIP
        >>> base.accuracy - abl.accuracy, base.n == es.n_items                     # doctest: +SKIP
    """
    check_precision(precision)
    check_model(model, eval_set)
    device = device or next(model.parameters()).device
    device = torch.device(device)
    preds, losses, targets = [], [], []
    loss_sum = 0.0
    hooks = list(fwd_hooks) + (cache.fwd_hooks() if cache is not None else [])
    was = model.training
    model.eval()
    try:
        with model.hooks(fwd_hooks=hooks):
            for b in iterate(eval_set.batches, len(eval_set.batches), description, enabled=progress):
                targets.append(b.targets)  # collected in this one pass (a streamed set is not re-read)
                if cache is not None and b.positions is not None:
                    cache.set_positions(*torch.nonzero(b.positions, as_tuple=True))
                pos = b.positions.to(device) if b.positions is not None else None
                with autocast(device, precision):
                    logits = model(b.input_ids.to(device), b.attention_mask.to(device), batch_types(b, model, device),
                                   positions=pos)
                logits = logits.float()
                t = b.targets.to(device)
                logp = logits.log_softmax(-1)  # = F.cross_entropy, shared by the per-item and the summed loss
                preds.append(logits.argmax(-1).cpu())
                losses.append(F.nll_loss(logp, t, reduction="none").cpu())
                loss_sum += float(F.nll_loss(logp, t, reduction="sum"))
    finally:
        model.train(was)
    if not targets:
        empty = torch.empty(0, dtype=torch.long)
        return EvalResult(empty, empty, torch.empty(0), loss_sum=0.0)
    return EvalResult(torch.cat(preds), torch.cat(targets), torch.cat(losses), loss_sum=loss_sum)
