"""APT and strong-match clusters on hand-made confusions (METHODS §4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nodeprobe.analysis.apt import apt_per_token, apt_vs_frequency, strong_match_clusters
from nodeprobe.errors import NodeprobeError


def from_counts(counts: dict[tuple[int, int], int]) -> tuple[np.ndarray, np.ndarray]:
    t, p = [], []
    for (i, j), n in counts.items():
        t += [i] * n
        p += [j] * n
    perm = np.random.default_rng(0).permutation(len(t))
    return np.array(t)[perm], np.array(p)[perm]


def test_apt_hand():
    # token 7: 10 occurrences, 4 right; token 9: 5 of 5; token 11: 4 occurrences (< 5, left out)
    t, p = from_counts({(7, 7): 4, (7, 3): 6, (9, 9): 5, (11, 11): 3, (11, 7): 1})
    r = apt_per_token(torch.from_numpy(t), torch.from_numpy(p))
    assert r.tokens.tolist() == [7, 9] and r.counts.tolist() == [10, 5] and r.correct.tolist() == [4, 5]
    assert r.apt.tolist() == [0.4, 1.0]
    assert r.mean_apt == pytest.approx(0.7)  # mean over types
    assert r.weighted_apt == pytest.approx(9 / 15)  # occurrence-weighted over the same tokens
    assert r.accuracy == pytest.approx(12 / 19)  # all items, token 11 included
    assert apt_per_token(t, p, min_count=3).tokens.tolist() == [7, 9, 11]
    assert apt_per_token(t, p, min_count=50).n_tokens == 0


def test_apt_vs_frequency_monotone():
    # APT rises with corpus frequency -> Spearman ρ = 1
    counts = {}
    for tok, right in [(1, 1), (2, 2), (3, 3), (4, 5)]:
        counts[(tok, tok)] = right
        if right < 5:
            counts[(tok, 0)] = 5 - right
    t, p = from_counts(counts)
    r = apt_per_token(t, p)
    corpus = np.zeros(10, dtype=np.int64)
    corpus[[1, 2, 3, 4]] = [10, 100, 1000, 10000]
    f = apt_vs_frequency(r, corpus, n_bins=3)
    assert f.spearman_rho == pytest.approx(1.0) and f.n_tokens == 4 and f.n_zero_count == 0
    # log10 counts 1..4, three equal bins [1, 2), [2, 3), [3, 4]
    assert [b.n_tokens for b in f.bins] == [1, 1, 2]
    assert [b.mean_apt for b in f.bins] == pytest.approx([0.2, 0.4, 0.8])
    assert f.bins[0].lo == pytest.approx(10) and f.bins[-1].hi == pytest.approx(10000)
    g = apt_vs_frequency(r, {1: 10, 2: 0, 3: 1000, 4: 10000})
    assert g.n_tokens == 3 and g.n_zero_count == 1


def test_strong_match_clusters_hand():
    t, p = from_counts(
        {
            (1, 1): 10, (1, 2): 6, (1, 3): 4,  # 6/10 ≥ .5 -> 1~2; 4/10 no
            (2, 2): 5, (2, 4): 5,  # tie with the diagonal: kept, ratio 1 -> 2~4
            (5, 5): 2, (5, 6): 3,  # diagonal not the row maximum: row dropped
            (6, 0): 4,  # diagonal 0: row dropped
            (7, 7): 4, (7, 8): 2,  # exactly .5 -> 7~8
            (9, 9): 3,  # kept, no strong match
        }
    )
    r = strong_match_clusters(t, p, V=12)
    assert r.n_rows_kept == 4  # rows 1, 2, 7, 9
    assert r.edges.tolist() == [[1, 2], [2, 4], [7, 8]]
    assert r.ratios.tolist() == [0.6, 1.0, 0.5]
    assert r.clusters == ((1, 2, 4), (7, 8))
    assert r.size_hist == {2: 1, 3: 1}
    strict = strong_match_clusters(t, p, V=12, threshold=0.9)
    assert strict.clusters == ((2, 4),)


def test_big_vocab_sparse():
    V = 30522
    t, p = from_counts({(30000, 30000): 5, (30000, 29999): 5, (5, 5): 9})
    r = strong_match_clusters(t, p, V=V)
    assert r.clusters == ((29999, 30000),)


def test_user_errors():
    with pytest.raises(NodeprobeError, match="items"):
        apt_per_token([1, 2], [1])
    with pytest.raises(NodeprobeError, match="min_count"):
        apt_per_token([1], [1], min_count=0)
    with pytest.raises(NodeprobeError, match="threshold"):
        strong_match_clusters([1], [1], V=3, threshold=0)
    with pytest.raises(NodeprobeError, match="class ids"):
        strong_match_clusters([1, 5], [1, 1], V=3)
    r = apt_per_token([3] * 5, [3] * 5)
    with pytest.raises(NodeprobeError, match="corpus_counts"):
        apt_vs_frequency(r, np.ones(2))
