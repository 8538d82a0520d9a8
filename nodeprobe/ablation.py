"""Head ablation and isolation reports (METHODS §2), single heads and all-heads sweeps.

The sweep never reruns blocks below the hooked block (METHODS §7): for each batch it runs the
embeddings once, then for each block ``l`` evaluates every head's ablation by resuming at
``blocks.{l}.hook_resid_pre`` (``HookedBert.forward(start_at_layer=l, residual=…)``) and moves the
clean residual one block up.  Results are identical to one full forward per head.

Example:
    >>> rep = ablate(model, eval_set, layer=5, head=3)              # doctest: +SKIP
    >>> rep.baseline_accuracy, rep.ablated_accuracy                 # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nodeprobe.errors import NodeprobeError
from nodeprobe.evaluate import EvalResult, EvalSet, run_eval
from nodeprobe.hooks import ablate_head, isolate_head, z_name


@torch.no_grad()
def head_means(model, eval_set: EvalSet, layers: list[int] | None = None) -> dict[int, Tensor]:
    """Eval-set mean of ``z`` per position, ``{layer: [pos, head, d_head]}`` (mean-mode ablation).

    Padding positions do not count; positions no item reaches get the mean over all positions.
    """
    layers = list(range(model.spec.n_layers)) if layers is None else layers
    P = max(b.input_ids.shape[1] for b in eval_set.batches)
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
            model(b.input_ids.to(dev), b.attention_mask.to(dev),
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
def sweep_heads(model, eval_set: EvalSet, mode: str = "zero", isolate: bool = False,
                means: dict[int, Tensor] | None = None, progress: bool = False) -> SweepReport:
    """Every head of every block ablated (or isolated) in turn; resumes from cached residuals.

    Example:
        >>> rep = sweep_heads(model, eval_set)        # doctest: +SKIP
        >>> rep.delta_accuracy.shape                   # doctest: +SKIP
        (6, 12)
    """
    from nodeprobe.report.progress import track_items

    L, H = model.spec.n_layers, model.spec.n_heads
    if mode == "mean" and means is None:
        means = head_means(model, eval_set)
    dev = next(model.parameters()).device
    model.eval()
    correct = np.zeros((L, H))
    loss = np.zeros((L, H))
    base_correct, base_loss = 0.0, 0.0
    for b in track_items(eval_set.batches, len(eval_set.batches), "head sweep", enabled=progress):
        ids, attn = b.input_ids.to(dev), b.attention_mask.to(dev)
        pos = b.positions.to(dev) if b.positions is not None else None
        t = b.targets.to(dev)
        x = model.embed(ids)
        mask = model.extended_mask(attn, x.dtype)
        for l in range(L):
            for h in range(H):
                fn = (isolate_head if isolate else ablate_head)(l, h, mode, means[l] if mode == "mean" else None)
                with model.hooks(fwd_hooks=[fn]):
                    logits = model(start_at_layer=l, residual=x, attention_mask=attn, positions=pos).float()
                correct[l, h] += float((logits.argmax(-1) == t).sum())
                loss[l, h] += float(F.cross_entropy(logits, t, reduction="sum"))
            x = model.blocks[l](x, mask)
        logits = model.head(x, pos).float()
        base_correct += float((logits.argmax(-1) == t).sum())
        base_loss += float(F.cross_entropy(logits, t, reduction="sum"))
    N = eval_set.n_items
    return SweepReport(
        task=eval_set.task, mode=mode, isolate=isolate, n_items=N,
        baseline_accuracy=base_correct / N, baseline_loss=base_loss / N,
        accuracy=(correct / N).tolist(), loss=(loss / N).tolist(),
        settings={"source": eval_set.source, "seed": eval_set.seed, "eval_fingerprint": eval_set.fingerprint},
    )
