"""Evaluation sets and the one evaluation loop every command uses.

An evaluation set is a list of padded batches with the items to score: sentences
(classification: the [CLS] readout) or modified positions (MLM: fixed, deterministic masks that
depend only on the text and the seed, METHODS §0).  :func:`run_eval` runs a model over it with
optional hooks and returns predictions, targets and per-item loss — never holding more than one
batch of activations (hooks that cache use :class:`nodeprobe.hooks.SiteCache`).

Example:
    >>> es = load_eval_set("fewrel", tokenizer, data="../shared/data")     # doctest: +SKIP
    >>> res = run_eval(model, es)                                         # doctest: +SKIP
    >>> res.accuracy                                                      # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from nodeprobe.errors import NodeprobeError


@dataclass
class EvalBatch:
    """One padded batch: ``input_ids``/``attention_mask`` ``[B, P]``; MLM adds ``positions`` (bool
    ``[B, P]``, the modified positions); ``targets`` ``[n]`` are the classes of the scored items."""

    input_ids: Tensor
    attention_mask: Tensor
    targets: Tensor
    positions: Tensor | None = None


@dataclass
class EvalSet:
    """Batches plus what a report needs to name things."""

    task: str
    batches: list[EvalBatch]
    class_names: list[str]  # label names, or the vocab for MLM
    source: str
    seed: int
    fingerprint: str = ""

    @property
    def n_items(self) -> int:
        return sum(int(b.targets.numel()) for b in self.batches)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def targets(self) -> Tensor:
        return torch.cat([b.targets for b in self.batches]) if self.batches else torch.empty(0, dtype=torch.long)


def _fingerprint_batches(batches: list[EvalBatch]) -> str:
    import hashlib

    h = hashlib.sha256()
    for b in batches:
        h.update(b.input_ids.numpy().tobytes())
        h.update(b.targets.numpy().tobytes())
        if b.positions is not None:
            h.update(b.positions.numpy().tobytes())
    return h.hexdigest()[:16]


def load_eval_set(
    task: str,
    tokenizer,
    data: str | Path | None = None,
    *,
    split: str = "test",
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    max_len: int = 128,
    n_train: int = 630,
    n_test: int = 70,
    corpus=None,
) -> EvalSet:
    """Build the evaluation set of a task.

    ``fewrel``/``dbpedia``: the test split (or ``split="train"``); with ``limit``, a seeded random
    subset of that many sentences.  ``mlm``: held-out Wikipedia sequences with fixed masks (a
    function of the text and ``seed``); with ``limit``, the first ``limit`` sequences.
    ``corpus``: an already loaded ``PretrainData`` of ``data`` (MLM only; saves loading it twice
    when the caller also needs its corpus counts).
    """
    from nodeprobe.data.batching import collate, make_batches
    from nodeprobe.tasks import check_task, classification_splits

    check_task(task)
    if limit is not None and limit < 1:
        raise NodeprobeError(f"--limit {limit}: expected a positive number of items")
    if task == "mlm":
        from nodeprobe.train.pretrain import PretrainData, build_eval_batches

        corp = corpus if corpus is not None else PretrainData.load(data, None, max_len)
        seqs = corp.heldout[:limit] if limit else corp.heldout
        if not seqs:
            raise NodeprobeError("--task mlm: the held-out evaluation set is empty")
        raw = build_eval_batches(seqs, tokenizer, seed, batch_size)
        batches = [EvalBatch(x, a, t, m) for x, a, m, t in raw]
        names = tokenizer.convert_ids_to_tokens(range(tokenizer.vocab_size))
        source = f"mlm:{corp.source}[held-out]"
    else:
        train, test = classification_splits(task, data, tokenizer, n_train=n_train, n_test=n_test, max_len=max_len)
        ds = {"test": test, "train": train}.get(split)
        if ds is None:
            raise NodeprobeError(f"--split {split}: expected test or train")
        if limit and limit < len(ds):
            rng = np.random.default_rng(seed)
            ds = ds.subset(sorted(rng.choice(len(ds), size=limit, replace=False).tolist()))
        if len(ds) == 0:
            raise NodeprobeError(f"--task {task}: the evaluation set is empty")
        batches = []
        for idx in make_batches(ds.lengths().tolist(), batch_size, shuffle_seed=None):
            b = collate([ds.input_ids[i] for i in idx], pad_id=tokenizer.pad_id)
            y = torch.tensor([ds.labels[i] for i in idx], dtype=torch.long)
            batches.append(EvalBatch(b["input_ids"], b["attention_mask"], y))
        names = list(ds.label_names)
        source = ds.source
    es = EvalSet(task, batches, names, source, seed)
    es.fingerprint = _fingerprint_batches(batches)
    return es


@dataclass
class EvalResult:
    """Predictions (argmax, ties → lowest index), targets and per-item loss, all ``[N]`` on CPU."""

    preds: Tensor
    targets: Tensor
    losses: Tensor
    extra: dict = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return float((self.preds == self.targets).float().mean()) if self.targets.numel() else 0.0

    @property
    def loss(self) -> float:
        return float(self.losses.mean()) if self.losses.numel() else 0.0


@torch.no_grad()
def run_eval(model, eval_set: EvalSet, fwd_hooks=(), cache=None, device=None, progress: bool = False,
             description: str = "evaluate") -> EvalResult:
    """Run ``model`` (a HookedBert) over ``eval_set`` with optional hooks and a :class:`SiteCache`.

    Example:
        >>> base = run_eval(model, es)                                             # doctest: +SKIP
        >>> abl = run_eval(model, es, fwd_hooks=[ablate_head(5, 3)])               # doctest: +SKIP
    """
    from nodeprobe.report.progress import track_items

    device = device or next(model.parameters()).device
    model.eval()
    if eval_set.task != "mlm" and model.task != "cls":
        raise NodeprobeError(f"--task {eval_set.task} needs a fine-tuned classifier; this model is a {model.task} model")
    if eval_set.task == "mlm" and model.task != "mlm":
        raise NodeprobeError(f"--task mlm needs a masked-LM checkpoint; this model is a {model.task} model")
    K = eval_set.n_classes
    if model.spec.n_classes != K:
        raise NodeprobeError(
            f"the model has {model.spec.n_classes} output classes but the {eval_set.task} data has {K}"
        )
    preds, losses = [], []
    hooks = list(fwd_hooks) + (cache.fwd_hooks() if cache is not None else [])
    with model.hooks(fwd_hooks=hooks):
        for b in track_items(eval_set.batches, len(eval_set.batches), description, enabled=progress):
            if cache is not None and b.positions is not None:
                cache.set_positions(*torch.nonzero(b.positions, as_tuple=True))
            pos = b.positions.to(device) if b.positions is not None else None
            logits = model(b.input_ids.to(device), b.attention_mask.to(device), positions=pos).float()
            t = b.targets.to(device)
            preds.append(logits.argmax(-1).cpu())
            losses.append(F.cross_entropy(logits, t, reduction="none").cpu())
    return EvalResult(torch.cat(preds), eval_set.targets(), torch.cat(losses))
