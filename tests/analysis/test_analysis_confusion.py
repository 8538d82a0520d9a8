"""Confusion metrics on hand-built confusion matrices (expected numbers worked out by hand)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from nodeprobe.analysis.confusion import (
    argmax_lowest,
    confusion_matrix,
    learned_set,
    snr,
    symmetry_summary,
    unit_stats,
    unit_stats_many,
)
from nodeprobe.errors import NodeprobeError

# Hand-built confusion, K = 5, N = 40 (rows: true class, columns: predicted class)
#   row 0: [8, 2, 0, 0, 0]  N_0 = 10
#   row 1: [0, 5, 3, 2, 0]  N_1 = 10
#   row 2: [0, 0, 8, 0, 0]  N_2 = 8
#   row 3: [0, 3, 5, 0, 0]  N_3 = 8
#   row 4: [0, 0, 0, 0, 4]  N_4 = 4
# column sums: 8, 10, 16, 2, 4
C_HAND = np.array(
    [
        [8, 2, 0, 0, 0],
        [0, 5, 3, 2, 0],
        [0, 0, 8, 0, 0],
        [0, 3, 5, 0, 0],
        [0, 0, 0, 0, 4],
    ]
)


def labels_from_confusion(C: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    yt, yp = [], []
    for k in range(C.shape[0]):
        for j in range(C.shape[1]):
            yt += [k] * int(C[k, j])
            yp += [j] * int(C[k, j])
    perm = np.random.default_rng(seed).permutation(len(yt))
    return np.array(yt)[perm], np.array(yp)[perm]


def test_hand_confusion_learned_set_lift_snr():
    yt, yp = labels_from_confusion(C_HAND)
    s = unit_stats(yt, yp, K=5)
    # class 0: recall 8/10 = .8, precision 8/8 = 1, lift 1 / (10/40) = 4          -> learned
    # class 1: recall 5/10 = .5 (= τ_r), precision 5/10, lift .5 / (10/40) = 2 (= τ_ℓ) -> learned
    # class 2: recall 8/8, precision 8/16, lift .5 / (8/40) = 2.5                   -> learned
    # class 3: C[3,3] = 0                                                           -> not learned
    # class 4: recall 1, lift 10, but C[4,4] = 4 < n_min = 5                        -> not learned
    assert s.learned == (0, 1, 2)
    assert s.recall.tolist() == [0.8, 0.5, 1.0]
    assert s.precision.tolist() == [1.0, 0.5, 0.5]
    assert s.lift.tolist() == [4.0, 2.0, 2.5]
    # SNR per class: 8/2 = 4;  5/3;  row 2 has no errors -> ∞ capped at N_2 = 8
    assert s.snr_per_class.tolist() == pytest.approx([4.0, 5 / 3, 8.0])
    assert s.snr == pytest.approx((4 + 5 / 3 + 8) / 3)  # = 41/9
    assert s.acc == 25 / 40
    assert s.outputs.tolist() == [0, 1, 2, 3, 4]
    # P = mean precision over outputs: (1 + .5 + .5 + 0/2 + 4/4) / 5
    assert s.mean_precision == pytest.approx(0.6)
    assert s.n_items == 40 and s.n_outputs == 5 and s.n_learned == 3


def test_hand_confusion_thresholds_move_the_set():
    yt, yp = labels_from_confusion(C_HAND)
    assert learned_set(yt, yp, 5, tau_recall=0.51) == (0, 2)  # class 1 sits exactly at recall .5
    assert learned_set(yt, yp, 5, tau_lift=2.01) == (0, 2)  # ... and exactly at lift 2
    assert learned_set(yt, yp, 5, min_count=4) == (0, 1, 2, 4)  # class 4 has C[4,4] = 4
    assert snr(yt, yp, 5, min_count=4) == pytest.approx((4 + 5 / 3 + 8 + 4) / 4)  # row 4: cap N_4 = 4


def test_confusion_matrix_dense_and_sparse_agree():
    yt, yp = labels_from_confusion(C_HAND)
    assert (confusion_matrix(yt, yp, 5) == C_HAND).all()
    sp = confusion_matrix(torch.from_numpy(yt), torch.from_numpy(yp), 5, dense=False)
    assert (sp.toarray() == C_HAND).all()


def test_constant_output_learns_nothing():
    yt, _ = labels_from_confusion(C_HAND)
    for j in range(5):
        s = unit_stats(yt, np.full(yt.size, j), K=5)
        assert s.learned == () and s.snr == 0.0
        assert s.outputs.tolist() == [j]
        # the one output has lift exactly 1: precision N_j/N over base rate N_j/N
        assert s.mean_precision == pytest.approx(np.mean(yt == j))


def test_many_equals_one_by_one_and_torch_numpy_inputs():
    rng = np.random.default_rng(1)
    K, N, U = 16, 400, 30
    yt = rng.integers(0, K, N)
    Y = np.where(rng.random((U, N)) < rng.random((U, 1)), yt[None, :], rng.integers(0, K, (U, N)))
    many = unit_stats_many(torch.from_numpy(yt), torch.from_numpy(Y), K)
    for u in range(U):
        one = unit_stats(yt, Y[u], K)
        assert many[u].learned == one.learned
        assert many[u].acc == one.acc and many[u].snr == one.snr
        assert np.array_equal(many[u].outputs, one.outputs)
        assert np.array_equal(many[u].lift, one.lift)


def _brute_stats(yt, yp, K):
    """Dict-based reference for the big-K case (no arrays of size K²)."""
    N = len(yt)
    cnt = Counter(zip(yt.tolist(), yp.tolist()))
    Nk, col = Counter(yt.tolist()), Counter(yp.tolist())
    learned, snrs = [], []
    for k in sorted(Nk):
        d = cnt.get((k, k), 0)
        if d >= 5 and d / Nk[k] >= 0.5 and (d / col[k]) / (Nk[k] / N) >= 2:
            learned.append(k)
            off = [v for (a, j), v in cnt.items() if a == k and j != k]
            snrs.append(d / max(off) if off else Nk[k])
    return tuple(learned), (float(np.mean(snrs)) if snrs else 0.0)


def test_large_vocab_without_dense_matrix():
    rng = np.random.default_rng(2)
    K, N, U = 30522, 6000, 5
    yt = rng.choice(rng.integers(0, K, 300), N)  # 300 frequent tokens
    Y = np.where(rng.random((U, N)) < 0.6, yt[None, :], rng.choice(yt, (U, N)))
    for u, st in enumerate(unit_stats_many(yt, Y, K)):
        learned, s = _brute_stats(yt, Y[u], K)
        assert st.learned == learned and st.snr == pytest.approx(s)
    sp = confusion_matrix(yt, Y[0], K)  # K > 2048: sparse by default
    assert sp.shape == (K, K) and sp.nnz < 10 * 300 * 300 and sp.sum() == N


def test_argmax_lowest_ties_torch_and_numpy():
    x = torch.tensor([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [-np.inf, -np.inf, -5.0, -5.0]])
    assert argmax_lowest(x).tolist() == [1, 0, 2]
    assert argmax_lowest(x.numpy()).tolist() == [1, 0, 2]
    assert argmax_lowest(x.T, dim=0).tolist() == [1, 0, 2]
    # torch.argmax on CPU also returns the first maximal index (documented; verified here)
    big = torch.zeros(3, 30522)
    big[:, [7, 100, 30000]] = 1.0
    assert torch.argmax(big, dim=1).tolist() == [7, 7, 7] == argmax_lowest(big).tolist()
    with pytest.raises(NodeprobeError):
        argmax_lowest(torch.tensor([[0.0, float("nan")]]))


def test_symmetry_summary_hand():
    s = symmetry_summary([[0, 1], [1, 2], [], []], K=4)
    assert s.size_hist == {0: 2, 2: 2} and s.mean_size == 1.0
    assert s.coverage == 0.75 and s.n_covered == 3
    assert s.owners == {0: 1, 1: 2, 2: 1}
    # pairs: J({0,1},{1,2}) = 1/3; four pairs with one empty set = 0; the (∅, ∅) pair is excluded
    assert s.n_pairs == 5 and s.mean_jaccard == pytest.approx((1 / 3) / 5)
    one = symmetry_summary([[0, 1], [1, 2], [], []], K=4, empty_pairs="one")
    assert one.n_pairs == 6 and one.mean_jaccard == pytest.approx((1 / 3 + 1) / 6)
    none = symmetry_summary([[], [], []], K=4)
    assert none.n_pairs == 0 and none.mean_jaccard == 0.0 and none.coverage == 0.0
    assert symmetry_summary([[], []], K=4, no_pairs_value=float("nan")).mean_jaccard != 0.0
    assert symmetry_summary([[3]], K=4).n_pairs == 0


def test_user_errors():
    with pytest.raises(NodeprobeError, match="class ids must lie"):
        unit_stats([0, 1, 5], [0, 1, 1], K=3)
    with pytest.raises(NodeprobeError, match="integer"):
        unit_stats(np.array([0.0, 1.0]), np.array([0, 1]), K=2)
    with pytest.raises(NodeprobeError, match="items"):
        unit_stats([0, 1], [0, 1, 1], K=2)
    with pytest.raises(NodeprobeError, match="tau_recall"):
        unit_stats([0, 1], [0, 1], K=2, tau_recall=2.0)
    with pytest.raises(NodeprobeError, match="K="):
        unit_stats([0], [0], K=0)
    with pytest.raises(NodeprobeError, match="empty_pairs"):
        symmetry_summary([[0]], K=2, empty_pairs="maybe")
