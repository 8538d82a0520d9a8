"""APT report (METHODS §4): accuracy per token against corpus frequency, ⟨APT⟩ and strong-match
clusters along blocks — from an MLM cache (sites ``readout`` and ``resid``).

* Final layer: the model's own predictions (cached ``preds``); APT per token
  (:func:`nodeprobe.analysis.apt_per_token`), binned against log10 corpus frequency with Spearman ρ
  (:func:`nodeprobe.analysis.apt_vs_frequency`).
* Along blocks, stage b = 0 … L: logit-lens predictions on the cached residual (at b = L they equal
  the model's predictions); optionally a seeded linear probe trained on part of the held-out items
  and scored on the rest (its ⟨APT⟩ is over the probe's test items).
* Strong-match clusters of the token confusion at every stage
  (:func:`nodeprobe.analysis.strong_match_clusters`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from nodeprobe.analysis import apt_per_token, apt_vs_frequency, strong_match_clusters
from nodeprobe.errors import NodeprobeError
from nodeprobe.studies.blocks import stage_lens_predictions, stage_name, stage_probe_predictions
from nodeprobe.studies.lens import ProbeSettings


@dataclass
class TokenAPT:
    id: int
    token: str
    count: int  # modified occurrences in the evaluation set
    correct: int
    apt: float
    corpus_count: int


@dataclass
class FreqBin:
    lo: float
    hi: float
    n_tokens: int
    mean_apt: float | None


@dataclass
class BlockAPT:
    """⟨APT⟩, accuracy and confusion clusters at one stage."""

    stage: int
    name: str
    mean_apt: float | None
    weighted_apt: float | None
    accuracy: float
    n_tokens: int
    spearman_rho: float | None
    probe_mean_apt: float | None
    probe_accuracy: float | None
    n_clusters: int
    cluster_sizes: dict[int, int]  # size → number of clusters
    largest_clusters: list[list[str]]


@dataclass
class APTReport:
    task: str
    n_items: int
    n_classes: int
    min_count: int
    accuracy: float
    mean_apt: float | None
    weighted_apt: float | None
    n_tokens: int
    spearman_rho: float | None
    spearman_p: float | None
    n_zero_count: int
    bins: list[FreqBin]
    tokens: list[TokenAPT]  # every token with ≥ min_count modified occurrences, by id
    best: list[int]  # positions in ``tokens``: highest APT (then most occurrences) first
    worst: list[int]  # lowest APT (then most occurrences) first
    blocks: list[BlockAPT]
    probe: dict | None
    settings: dict = field(default_factory=dict)


def _nan(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else float(x)


def apt_report(
    cache,
    model,
    corpus_counts,
    *,
    min_count: int = 5,
    n_bins: int = 10,
    probe: ProbeSettings | None = None,
    cluster_threshold: float = 0.5,
    top: int = 10,
    device="cpu",
    progress: bool = False,
) -> APTReport:
    """The APT report of an MLM cache; ``corpus_counts[t]`` = count of token t in the pre-training
    corpus (``PretrainData.load(data).counts``)."""
    from nodeprobe.progress import iterate

    if cache.task != "mlm":
        raise NodeprobeError(f"APT is defined for masked-LM predictions (task=mlm); this cache is task={cache.task}")
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise NodeprobeError(f"min_count={min_count}: expected an integer ≥ 1")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise NodeprobeError(f"bins={n_bins}: expected a positive integer")
    if not 0.0 < cluster_threshold <= 1.0:
        raise NodeprobeError(f"cluster_threshold={cluster_threshold}: expected a number in (0, 1]")
    cache.check_site("resid")
    names = cache.class_names
    V = cache.n_classes
    y = cache.targets()
    if y.numel() == 0:
        raise NodeprobeError(f"cache {cache.path}: no items")
    counts = np.asarray(corpus_counts).reshape(-1)
    if counts.size < V:
        raise NodeprobeError(f"corpus counts cover {counts.size} token ids, the vocab has {V}")
    final = apt_per_token(y, cache.preds(), min_count)
    freq = apt_vs_frequency(final, counts, n_bins)
    tokens = [TokenAPT(int(t), names[int(t)], int(c), int(k), float(a), int(counts[int(t)]))
              for t, c, k, a in zip(final.tokens, final.counts, final.correct, final.apt)]
    q = np.arange(len(tokens))
    best = sorted(q.tolist(), key=lambda i: (-tokens[i].apt, -tokens[i].count, tokens[i].id))[:top]
    worst = sorted(q.tolist(), key=lambda i: (tokens[i].apt, -tokens[i].count, tokens[i].id))[:top]

    blocks = []
    for s in iterate(range(cache.n_layers + 1), cache.n_layers + 1, "APT along blocks", enabled=progress):
        lp = stage_lens_predictions(cache, model, s)
        r = apt_per_token(y, lp, min_count)
        fr = apt_vs_frequency(r, counts, n_bins)
        pm = pa = None
        if probe is not None:
            te, pp = stage_probe_predictions(cache, s, probe, device)
            yt = y[torch.as_tensor(te)]
            pr = apt_per_token(yt, pp, min_count)
            pm, pa = _nan(pr.mean_apt), float(pr.accuracy)
        cl = strong_match_clusters(y, lp, V, cluster_threshold)
        blocks.append(BlockAPT(
            stage=s, name=stage_name(s), mean_apt=_nan(r.mean_apt), weighted_apt=_nan(r.weighted_apt),
            accuracy=float(r.accuracy), n_tokens=r.n_tokens, spearman_rho=_nan(fr.spearman_rho),
            probe_mean_apt=pm, probe_accuracy=pa, n_clusters=len(cl.clusters), cluster_sizes=dict(cl.size_hist),
            largest_clusters=[[names[t] for t in c] for c in cl.clusters[:top]],
        ))
    return APTReport(
        task=cache.task, n_items=int(y.numel()), n_classes=V, min_count=int(min_count),
        accuracy=float(final.accuracy), mean_apt=_nan(final.mean_apt), weighted_apt=_nan(final.weighted_apt),
        n_tokens=final.n_tokens, spearman_rho=_nan(freq.spearman_rho), spearman_p=_nan(freq.spearman_p),
        n_zero_count=freq.n_zero_count,
        bins=[FreqBin(b.lo, b.hi, b.n_tokens, _nan(b.mean_apt)) for b in freq.bins],
        tokens=tokens, best=best, worst=worst, blocks=blocks,
        probe=asdict(probe) if probe is not None else None,
        settings={"cache": str(cache.path), "model_fingerprint": cache.model_fingerprint,
                  "eval_fingerprint": cache.eval_fingerprint, "source": cache.manifest["source"],
                  "seed": cache.manifest["seed"], "n_bins": n_bins, "cluster_threshold": cluster_threshold},
    )
