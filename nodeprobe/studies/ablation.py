"""Head ablation and isolation reports (METHODS §2), single heads and all-heads sweeps.

The sweep never reruns blocks below the hooked block (METHODS §7), nor the part of the hooked
block that the ablation cannot change: for each batch it runs the embeddings once, then for each
block ``l`` computes the clean head outputs ``z`` once (ablating a head's ``z`` leaves the block's
queries, keys, values and pattern unchanged), and for every head finishes block ``l`` from the
ablated ``z`` (``HookedBlock.finish``: ``W_O``, LayerNorms, MLP), resumes above it
(``HookedBert.forward(start_at_layer=l + 1, residual=…)``) and runs the last block only at the
rows the readout reads (``readout_rows=True``: [CLS], or the modified positions of MLM; those rows
attend to every position without projecting all keys and values).  Then it moves the clean
residual one block up.  Predictions equal one full forward per head (argmax identical) and losses
agree to float rounding (≤ 1e-5); ``tests/test_fast_paths.py`` checks it and ``bench/run.py``
(P3) times it against that baseline.

Example:
    >>> rep = ablate(model, eval_set, layer=5, head=3)              # doctest: +SKIP
    >>> rep.baseline_accuracy, rep.ablated_accuracy                 # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nodeprobe.data.eval_sets import EvalSet, batch_types
from nodeprobe.evaluate import EvalResult, run_eval
from nodeprobe.hooks import ablate_head, isolate_head, z_name


@torch.no_grad()
def head_means(model, eval_set: EvalSet, layers: list[int] | None = None) -> dict[int, Tensor]:
    """Eval-set mean of ``z`` per position, ``{layer: [pos, head, d_head]}`` (mean-mode ablation).

    Padding positions do not count; positions no item reaches get the mean over all positions.
    """
    layers = list(range(model.spec.n_layers)) if layers is None else layers
    P = getattr(eval_set.batches, "max_width", None) or max(b.input_ids.shape[1] for b in eval_set.batches)
    H, Dh = model.spec.n_heads, model.spec.d_head
    sums = {l: torch.zeros(P, H, Dh, dtype=torch.float64) for l in layers}
    counts = torch.zeros(P, dtype=torch.float64)
    dev = next(model.parameters()).device
    state = {}

    def grab(z, hook):
        layer = int(hook.name.split(".")[1])
        m = state["mask"]
        sums[layer][: z.shape[1]] += (z.double().cpu() * m[:, :, None, None]).sum(0)

    model.eval()
    with model.hooks(fwd_hooks=[(z_name(l), grab) for l in layers]):
        for b in eval_set.batches:
            state["mask"] = b.attention_mask.double()
            counts[: b.input_ids.shape[1]] += b.attention_mask.double().sum(0)
            model(b.input_ids.to(dev), b.attention_mask.to(dev), batch_types(b, model, dev),
                  positions=b.positions.to(dev) if b.positions is not None else None)
    out = {}
    for l in layers:
        total = sums[l].sum(0) / counts.sum().clamp(min=1)
        mean = sums[l] / counts.clamp(min=1)[:, None, None]
        mean[counts == 0] = total
        out[l] = mean.float()
    return out


@dataclass
class Mover:
    """A class whose recall moved most under the ablation."""

    cls: int
    name: str
    n: int
    baseline_recall: float
    ablated_recall: float

    @property
    def delta(self) -> float:
        return self.ablated_recall - self.baseline_recall


@dataclass
class AblationReport:
    """Baseline vs ablated accuracy/loss and the per-class movers of one head."""

    task: str
    layer: int
    head: int
    mode: str
    isolate: bool
    n_items: int
    baseline_accuracy: float
    ablated_accuracy: float
    baseline_loss: float
    ablated_loss: float
    movers: list[Mover] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    @property
    def delta_accuracy(self) -> float:
        return self.ablated_accuracy - self.baseline_accuracy

    def to_dict(self) -> dict:
        d = asdict(self)
        d["delta_accuracy"] = self.delta_accuracy
        for m, mm in zip(d["movers"], self.movers):
            m["delta"] = mm.delta
        return d


def movers(base: EvalResult, abl: EvalResult, names: list[str], top: int = 10, min_count: int = 5) -> list[Mover]:
    """Classes with at least ``min_count`` items whose recall changed most (largest |Δ| first)."""
    t = base.targets.numpy()
    K = len(names)
    n = np.bincount(t, minlength=K)
    hit_b = np.bincount(t[base.preds.numpy() == t], minlength=K)
    hit_a = np.bincount(t[abl.preds.numpy() == t], minlength=K)
    ok = np.flatnonzero(n >= min_count)
    rb, ra = hit_b[ok] / n[ok], hit_a[ok] / n[ok]
    order = np.lexsort((ok, -np.abs(ra - rb)))  # stable: ties → lower class id
    out = []
    for i in order[:top]:
        if ra[i] == rb[i]:
            break
        k = int(ok[i])
        out.append(Mover(k, names[k], int(n[k]), float(rb[i]), float(ra[i])))
    return out


def ablate(model, eval_set: EvalSet, layer: int, head: int, mode: str = "zero", isolate: bool = False,
           top: int = 10, means: dict[int, Tensor] | None = None, baseline: EvalResult | None = None,
           progress: bool = False) -> AblationReport:
    """Ablate (or isolate) one head and compare with the unablated model (METHODS §2)."""
    model.spec.check_layer(layer)
    model.spec.check_head(head)
    if mode == "mean" and means is None:
        means = head_means(model, eval_set, [layer])
    m = means[layer] if mode == "mean" else None
    hook = (isolate_head if isolate else ablate_head)(layer, head, mode, m)
    base = baseline or run_eval(model, eval_set, progress=progress, description="baseline")
    abl = run_eval(model, eval_set, fwd_hooks=[hook], progress=progress, description=f"ablate L{layer}H{head}")
    return AblationReport(
        task=eval_set.task, layer=layer, head=head, mode=mode, isolate=isolate, n_items=eval_set.n_items,
        baseline_accuracy=base.accuracy, ablated_accuracy=abl.accuracy,
        baseline_loss=base.loss, ablated_loss=abl.loss,
        movers=movers(base, abl, eval_set.class_names, top),
        settings={"source": eval_set.source, "seed": eval_set.seed, "eval_fingerprint": eval_set.fingerprint},
    )


@dataclass
class SweepReport:
    """Δaccuracy (and Δloss) of every head, ``[n_layers, n_heads]``."""

    task: str
    mode: str
    isolate: bool
    n_items: int
    baseline_accuracy: float
    baseline_loss: float
    accuracy: list[list[float]]
    loss: list[list[float]]
    settings: dict = field(default_factory=dict)

    @property
    def delta_accuracy(self) -> np.ndarray:
        return np.asarray(self.accuracy) - self.baseline_accuracy

    def to_dict(self) -> dict:
        d = asdict(self)
        d["delta_accuracy"] = self.delta_accuracy.tolist()
        return d


@torch.no_grad()
def head_sweep_logits(model, input_ids: Tensor, attention_mask: Tensor, positions: Tensor | None,
                      fills, token_type_ids: Tensor | None = None) -> Iterator[tuple[int | None, int | None, Tensor]]:
    """Logits of one batch with each head's ``z`` replaced in turn, without rerunning what cannot change.

    ``fills[l][h]`` maps the clean ``z`` of block l, ``[B, P, H, Dh]``, to its ablated copy (the
    function of an :func:`~nodeprobe.hooks.ablate_head` / :func:`~nodeprobe.hooks.isolate_head`
    hook pair).  Yields ``(l, h, logits)`` for every head, block by block, then
    ``(None, None, logits)`` of the clean model.  Logits are what ``forward`` returns (``[n, V]``
    at ``positions`` for MLM, ``[B, K]`` for a classifier) and equal those of a full forward with
    the hook (see the module docstring for how they are computed).

    Example:
        >>> fills = [[ablate_head(l, h)[1] for h in range(12)] for l in range(6)]    # doctest: +SKIP
        >>> for l, h, logits in head_sweep_logits(model, ids, attn, None, fills): ...  # doctest: +SKIP
    """
    L = model.spec.n_layers
    x = model.embed(input_ids, token_type_ids)
    mask = model.extended_mask(attention_mask, x.dtype)
    rows = model.readout_rows_of(input_ids.shape[0], positions, input_ids.device)
    for l in range(L):
        block = model.blocks[l]
        z = block.attend(x, mask).contiguous()  # clean head outputs of block l, [B, P, H, Dh]
        x_rows = x[rows.b, rows.p] if rows is not None and l == L - 1 else None
        for h, fill in enumerate(fills[l]):
            z_abl = fill(z)  # on the full [B, P, H, Dh], exactly as the hook sees it
            if l < L - 1:
                logits = model(start_at_layer=l + 1, residual=block.finish(x, z_abl), attention_mask=attention_mask,
                               positions=positions, readout_rows=True)
            elif x_rows is not None:  # the last block: only the rows the readout reads
                logits = model.head(block.finish(x_rows, z_abl[rows.b, rows.p]), positions)
            else:
                logits = model.head(block.finish(x, z_abl), positions)
            yield l, h, logits
        x = block.finish(x, z)
    yield None, None, model.head(x, positions)


@torch.no_grad()
def sweep_heads(model, eval_set: EvalSet, mode: str = "zero", isolate: bool = False,
                means: dict[int, Tensor] | None = None, progress: bool = False) -> SweepReport:
    """Every head of every block ablated (or isolated) in turn (:func:`head_sweep_logits` per batch).

    Example:
        >>> rep = sweep_heads(model, eval_set)        # doctest: +SKIP
        >>> rep.delta_accuracy.shape                   # doctest: +SKIP
        (6, 12)
    """
    from nodeprobe.progress import iterate

    L, H = model.spec.n_layers, model.spec.n_heads
    if mode == "mean" and means is None:
        means = head_means(model, eval_set)
    dev = next(model.parameters()).device
    model.eval()
    correct = np.zeros((L, H))
    loss = np.zeros((L, H))
    base_correct, base_loss = 0.0, 0.0
    factory = isolate_head if isolate else ablate_head
    fills = [[factory(l, h, mode, means[l] if mode == "mean" else None)[1] for h in range(H)] for l in range(L)]
    for b in iterate(eval_set.batches, len(eval_set.batches), "head sweep", enabled=progress):
        pos = b.positions.to(dev) if b.positions is not None else None
        t = b.targets.to(dev)
        for l, h, logits in head_sweep_logits(model, b.input_ids.to(dev), b.attention_mask.to(dev), pos, fills,
                                              batch_types(b, model, dev)):
            logits = logits.float()
            if l is None:  # the clean model
                base_correct += float((logits.argmax(-1) == t).sum())
                base_loss += float(F.cross_entropy(logits, t, reduction="sum"))
            else:
                correct[l, h] += float((logits.argmax(-1) == t).sum())
                loss[l, h] += float(F.cross_entropy(logits, t, reduction="sum"))
    N = eval_set.n_items
    return SweepReport(
        task=eval_set.task, mode=mode, isolate=isolate, n_items=N,
        baseline_accuracy=base_correct / N, baseline_loss=base_loss / N,
        accuracy=(correct / N).tolist(), loss=(loss / N).tolist(),
        settings={"source": eval_set.source, "seed": eval_set.seed, "eval_fingerprint": eval_set.fingerprint},
    )
