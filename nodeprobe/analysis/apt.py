"""MLM token metrics (METHODS §4): accuracy per token (APT) and token-confusion clusters.

Inputs are the targets (original token ids) and the predictions (argmax token ids) of the
*modified* positions only — one entry per evaluated item.

* ``APT(t)`` = correct predictions of the modified occurrences of t / modified occurrences of t,
  for tokens with at least ``min_count`` (5) modified occurrences.  ``mean_apt`` = ⟨APT⟩, the mean
  over those token types; ``weighted_apt`` = the occurrence-weighted mean over the same tokens
  (= accuracy on their occurrences); ``accuracy`` = accuracy over all items, every token included.
* APT against corpus frequency: tokens with corpus count 0 are left out (no log); bins are
  ``n_bins`` equal-width bins of log10(count) between the smallest and largest count; Spearman ρ
  between APT and count (rank-based, so the same for log-count) over the tokens left in.
* Token confusion clusters: sparse V × V counts; keep rows i whose diagonal is the row maximum
  (ties allowed) and > 0; strong-match tokens of i = ``{j ≠ i : C[i,j] / C[i,i] ≥ threshold}``;
  clusters = connected components (edges undirected) of the strong-match graph with ≥ 2 tokens.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from jaxtyping import Int
from scipy import sparse, stats
from scipy.sparse.csgraph import connected_components
from torch import Tensor

from nodeprobe.analysis._arrays import check_K, labels, to_numpy
from nodeprobe.analysis.confusion import Labels, confusion_matrix
from nodeprobe.errors import NodeprobeError


@dataclass(frozen=True, eq=False)
class APTResult:
    """Per-token APT; arrays aligned with ``tokens`` (sorted ids with ≥ min_count occurrences)."""

    tokens: np.ndarray
    counts: np.ndarray
    correct: np.ndarray
    apt: np.ndarray
    mean_apt: float  # ⟨APT⟩ over token types (NaN if no token qualifies)
    weighted_apt: float  # Σ correct / Σ counts over the same tokens (NaN if none)
    accuracy: float  # over all items
    n_items: int
    min_count: int

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.size)


def _pair(targets, preds) -> tuple[np.ndarray, np.ndarray, int]:
    t = to_numpy(targets)
    hi = int(t.max()) + 1 if t.size else 1
    p = to_numpy(preds)
    if p.size:
        hi = max(hi, int(np.max(p)) + 1)
    tt = labels(t, "targets", max(hi, 1))
    pp = labels(p, "preds", max(hi, 1))
    if tt.shape != pp.shape:
        raise NodeprobeError(f"targets has {tt.size} items but preds has {pp.size}")
    if tt.size == 0:
        raise NodeprobeError("no items: targets is empty")
    return tt, pp, hi


def apt_per_token(
    targets: Labels,
    preds: Labels,
    min_count: int = 5,
) -> APTResult:
    """APT of every token with at least ``min_count`` modified occurrences.

    Example:
        >>> r = apt_per_token([7] * 10 + [9] * 5 + [11] * 4, [7] * 4 + [0] * 6 + [9] * 5 + [11] * 4)
        >>> r.tokens.tolist(), r.apt.tolist(), r.mean_apt, r.weighted_apt, round(r.accuracy, 4)
        ([7, 9], [0.4, 1.0], 0.7, 0.6, 0.6842)
    """
    if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) or min_count < 1:
        raise NodeprobeError(f"min_count={min_count!r}: must be an integer ≥ 1")
    tt, pp, hi = _pair(targets, preds)
    counts = np.bincount(tt, minlength=hi)
    correct = np.bincount(tt[tt == pp], minlength=hi)
    tokens = np.flatnonzero(counts >= min_count)
    c, k = counts[tokens], correct[tokens]
    apt = k / c
    return APTResult(
        tokens=tokens,
        counts=c,
        correct=k,
        apt=apt,
        mean_apt=float(apt.mean()) if apt.size else float("nan"),
        weighted_apt=float(k.sum() / c.sum()) if c.size else float("nan"),
        accuracy=float((tt == pp).mean()),
        n_items=int(tt.size),
        min_count=int(min_count),
    )


@dataclass(frozen=True, eq=False)
class FrequencyBin:
    lo: float  # corpus-count edges of the bin (lo ≤ count < hi; the last bin includes hi)
    hi: float
    n_tokens: int
    mean_apt: float  # NaN for an empty bin


@dataclass(frozen=True, eq=False)
class APTFrequency:
    bins: tuple[FrequencyBin, ...]
    spearman_rho: float
    spearman_p: float
    n_tokens: int  # tokens with APT and corpus count > 0
    n_zero_count: int  # tokens with APT left out because their corpus count is 0


def apt_vs_frequency(
    apt: APTResult,
    corpus_counts: Int[np.ndarray, "V"] | dict[int, int] | Any,
    n_bins: int = 10,
) -> APTFrequency:
    """APT against corpus frequency: mean APT per log10-frequency bin and Spearman ρ.

    ``corpus_counts``: counts indexed by token id (array of length ≥ V) or a dict id → count.

    Example:
        >>> r = apt_per_token([1] * 5 + [2] * 5 + [3] * 5, [1] * 1 + [0] * 4 + [2] * 3 + [0] * 2 + [3] * 5)
        >>> f = apt_vs_frequency(r, {1: 10, 2: 100, 3: 1000}, n_bins=2)
        >>> f.spearman_rho, [(b.n_tokens, round(b.mean_apt, 2)) for b in f.bins]
        (1.0, [(1, 0.2), (2, 0.8)])
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise NodeprobeError(f"n_bins={n_bins!r}: must be a positive integer")
    if isinstance(corpus_counts, dict):
        freq = np.array([corpus_counts.get(int(t), 0) for t in apt.tokens], dtype=np.float64)
    else:
        cc = to_numpy(corpus_counts).astype(np.float64).reshape(-1)
        if apt.tokens.size and apt.tokens.max() >= cc.size:
            raise NodeprobeError(f"corpus_counts has {cc.size} entries but token id {int(apt.tokens.max())} occurs")
        freq = cc[apt.tokens]
    if np.any(freq < 0) or not np.isfinite(freq).all():
        raise NodeprobeError("corpus_counts must be finite and ≥ 0")
    keep = freq > 0
    f, a = freq[keep], apt.apt[keep]
    bins: list[FrequencyBin] = []
    if f.size:
        lf = np.log10(f)
        edges = np.linspace(lf.min(), lf.max(), n_bins + 1)
        which = np.clip(np.searchsorted(edges, lf, side="right") - 1, 0, n_bins - 1)
        for q in range(n_bins):
            sel = which == q
            bins.append(
                FrequencyBin(
                    lo=float(10 ** edges[q]),
                    hi=float(10 ** edges[q + 1]),
                    n_tokens=int(sel.sum()),
                    mean_apt=float(a[sel].mean()) if sel.any() else float("nan"),
                )
            )
    rho, pval = float("nan"), float("nan")
    if f.size >= 2 and np.ptp(f) > 0 and np.ptp(a) > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.spearmanr(f, a)
        rho, pval = float(res.statistic), float(res.pvalue)
    return APTFrequency(tuple(bins), rho, pval, int(f.size), int((~keep).sum()))


@dataclass(frozen=True, eq=False)
class ClusterResult:
    """Strong-match graph of the token confusion and its clusters.

    ``edges``: [E, 2] (i, j) strong matches (i's row kept, j ≠ i), ``ratios``: C[i,j]/C[i,i].
    ``clusters``: components with ≥ 2 tokens, largest first (ties → smallest token id), each a
    sorted tuple.  ``size_hist[s]``: number of clusters with s tokens.
    """

    n_rows_kept: int
    edges: np.ndarray
    ratios: np.ndarray
    clusters: tuple[tuple[int, ...], ...]
    size_hist: dict[int, int]
    threshold: float


def strong_match_clusters(
    targets: Labels,
    preds: Labels,
    V: int,
    threshold: float = 0.5,
) -> ClusterResult:
    """Clusters of tokens the model confuses strongly (METHODS §4), from a sparse V × V confusion.

    Example:
        >>> t = [1] * 3 + [2] * 2 + [5] * 3
        >>> p = [1, 1, 2] + [2, 1] + [5, 6, 6]   # 1→2 at 1/2, 2→1 at 1/1, row 5: diagonal not max
        >>> r = strong_match_clusters(t, p, V=8)
        >>> r.n_rows_kept, r.edges.tolist(), r.clusters, r.size_hist
        (2, [[1, 2], [2, 1]], ((1, 2),), {2: 1})
    """
    V = check_K(V)
    if not (0.0 < threshold <= 1.0):
        raise NodeprobeError(f"threshold={threshold}: must lie in (0, 1]")
    C = confusion_matrix(targets, preds, V, dense=False).tocsr()
    diag = C.diagonal()
    rm = C.max(axis=1)
    rowmax = (rm.toarray() if sparse.issparse(rm) else np.asarray(rm)).reshape(-1)
    kept = (diag > 0) & (diag >= rowmax)
    coo = C.tocoo()
    r, c, v = coo.row, coo.col, coo.data
    sel = kept[r] & (r != c)
    r, c, v = r[sel], c[sel], v[sel]
    ratio = v / diag[r]
    strong = ratio >= threshold
    r, c, ratio = r[strong], c[strong], ratio[strong]
    order = np.lexsort((c, r))
    edges = np.column_stack([r[order], c[order]]).astype(np.int64).reshape(-1, 2)
    ratio = ratio[order]
    clusters: list[tuple[int, ...]] = []
    if edges.shape[0]:
        nodes = np.unique(edges)
        loc = np.searchsorted(nodes, edges)
        G = sparse.csr_array(
            (np.ones(edges.shape[0]), (loc[:, 0], loc[:, 1])), shape=(nodes.size, nodes.size)
        )
        _, lab = connected_components(G, directed=True, connection="weak")
        for q in range(lab.max() + 1):
            members = nodes[lab == q]
            if members.size >= 2:
                clusters.append(tuple(int(t) for t in members))
    clusters.sort(key=lambda cl: (-len(cl), cl[0]))
    return ClusterResult(
        n_rows_kept=int(kept.sum()),
        edges=edges,
        ratios=ratio,
        clusters=tuple(clusters),
        size_hist=dict(sorted(Counter(len(cl) for cl in clusters).items())),
        threshold=float(threshold),
    )
