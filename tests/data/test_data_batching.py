"""Batching: length sorting, seeded shuffling, padding, streaming without materialising."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nodeprobe.data import collate, iter_batches, make_batches
from nodeprobe.errors import NodeprobeError


def make_seqs(n=103, seed=0):
    rng = np.random.default_rng(seed)
    return [[101, *rng.integers(1000, 2000, size=int(k)).tolist(), 102] for k in rng.integers(0, 60, size=n)]


def test_eval_batches_sorted_and_stable():
    seqs = make_seqs()
    batches = make_batches(seqs, 8)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(seqs)))
    lens = [len(seqs[i]) for i in flat]
    assert lens == sorted(lens)
    assert [len(b) for b in batches] == [8] * 12 + [7]
    assert make_batches(seqs, 8) == batches
    # ties keep input order
    for b in batches:
        for i, j in zip(b, b[1:]):
            assert len(seqs[i]) < len(seqs[j]) or i < j
    assert make_batches(seqs, 8, sort=False)[0] == list(range(8))
    assert make_batches(np.array([len(s) for s in seqs]), 8) == batches  # lengths work too


def test_training_batches_seeded():
    seqs = [[101] + [5] * 126 + [102]] * 40 + make_seqs(40)
    a = make_batches(seqs, 8, shuffle_seed=1)
    assert a == make_batches(seqs, 8, shuffle_seed=1)
    b = make_batches(seqs, 8, shuffle_seed=2)
    assert a != b
    assert sorted(i for x in a for i in x) == list(range(80))
    # still length-grouped within each batch: spread far below the global spread
    spread = [np.ptp([len(seqs[i]) for i in x]) for x in a]
    assert np.mean(spread) < 0.3 * np.ptp([len(s) for s in seqs])
    # ties of full-length chunks form different batches per seed
    full = {frozenset(x) for x in a if all(len(seqs[i]) == 128 for i in x)}
    full_b = {frozenset(x) for x in b if all(len(seqs[i]) == 128 for i in x)}
    assert full != full_b


def test_collate_pads():
    seqs = [[101, 7, 8, 102], [101, 102], np.array([101, 9, 102])]
    out = collate(seqs, pad_id=0, labels=[2, 0, 1])
    assert set(out) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert all(v.dtype == torch.long for v in out.values())
    assert out["input_ids"].tolist() == [[101, 7, 8, 102], [101, 102, 0, 0], [101, 9, 102, 0]]
    assert out["attention_mask"].sum(1).tolist() == [4, 2, 3]
    assert out["token_type_ids"].abs().sum() == 0 and out["labels"].tolist() == [2, 0, 1]
    assert collate(seqs, pad_id=7, max_len=3)["input_ids"].tolist() == [[101, 7, 8], [101, 102, 7], [101, 9, 102]]
    with pytest.raises(NodeprobeError, match="empty batch"):
        collate([], 0)
    with pytest.raises(NodeprobeError, match="2 labels for 3 sequences"):
        collate(seqs, 0, labels=[1, 2])
    with pytest.raises(NodeprobeError, match="batch_size=0"):
        make_batches(seqs, 0)


def test_streaming_is_lazy_and_complete():
    seqs = make_seqs(250)
    pulled = []

    def gen():
        for i, s in enumerate(seqs):
            pulled.append(i)
            yield s

    it = iter_batches(gen(), 4, buffer_batches=5)
    idx, batch = next(it)
    assert len(pulled) == 20  # one buffer only
    assert [seqs[i] for i in idx] == batch
    rest = list(it)
    all_idx = idx + [i for x, _ in rest for i in x]
    assert sorted(all_idx) == list(range(250))
    # deterministic, and seeded shuffling differs between seeds
    e1 = [x for x, _ in iter_batches(iter(seqs), 4, buffer_batches=5)]
    assert e1 == [x for x, _ in iter_batches(iter(seqs), 4, buffer_batches=5)]
    s1 = [x for x, _ in iter_batches(iter(seqs), 4, shuffle_seed=0, buffer_batches=5)]
    s2 = [x for x, _ in iter_batches(iter(seqs), 4, shuffle_seed=1, buffer_batches=5)]
    assert s1 != s2 and sorted(map(tuple, s1)) != sorted(map(tuple, e1))
    with pytest.raises(NodeprobeError, match="buffer_batches"):
        next(iter_batches(iter(seqs), 4, buffer_batches=0))
