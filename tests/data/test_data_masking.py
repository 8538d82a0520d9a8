"""MLM masking: exact counts, 80/10/10 proportions, specials untouched, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from nodeprobe.data import MLMMasker, collate_mlm, eval_mask, mlm_mask, n_to_modify, step_rng
from nodeprobe.errors import NodeprobeError

SPECIAL = frozenset({0, 100, 101, 102, 103})
V = 30522
KW = dict(special_ids=SPECIAL, vocab_size=V, mask_id=103)


def seq(rng, n, pad=0):
    body = rng.integers(1000, V, size=n).tolist()
    return [101, *body, 102] + [0] * pad


def test_exact_counts_and_specials():
    rng = np.random.default_rng(0)
    for n in [1, 2, 3, 6, 7, 10, 20, 50, 126]:
        ids = seq(rng, n, pad=3)
        ids[1 + n // 2] = 100  # an [UNK] inside is special too
        non_special = [i for i, t in enumerate(ids) if t not in SPECIAL]
        r = mlm_mask(ids, SPECIAL, V, rng, mask_id=103)
        k = max(1, int(np.floor(0.15 * len(non_special) + 0.5))) if non_special else 0
        assert len(r.positions) == k == n_to_modify(len(non_special))
        assert set(r.positions.tolist()) <= set(non_special)
        assert r.positions.tolist() == sorted(r.positions.tolist())
        assert r.targets.tolist() == [ids[p] for p in r.positions]
        untouched = np.setdiff1d(np.arange(len(ids)), r.positions)
        assert (r.input_ids[untouched] == np.asarray(ids)[untouched]).all()
    empty = mlm_mask([101, 102, 0], SPECIAL, V, rng, mask_id=103)
    assert len(empty.positions) == 0 and empty.input_ids.tolist() == [101, 102, 0]
    assert [n_to_modify(n) for n in (0, 1, 6, 7, 10, 100, 126)] == [0, 1, 1, 1, 2, 15, 19]


def test_80_10_10_proportions():
    rng = np.random.default_rng(1)
    kinds = {"mask": 0, "random": 0, "same": 0}
    for _ in range(600):
        ids = seq(rng, 126)
        r = mlm_mask(ids, SPECIAL, V, rng, mask_id=103)
        new = r.input_ids[r.positions]
        kinds["mask"] += int((new == 103).sum())
        kinds["same"] += int((new == r.targets).sum())
        kinds["random"] += int(((new != 103) & (new != r.targets)).sum())
        assert not np.isin(new[new != 103], list(SPECIAL)).any()
    total = sum(kinds.values())
    assert total == 600 * 19
    assert abs(kinds["mask"] / total - 0.8) < 0.015
    assert abs(kinds["random"] / total - 0.1) < 0.01
    assert abs(kinds["same"] / total - 0.1) < 0.01


def test_random_replacements_never_special():
    # a small vocab with many specials stresses the rank → id mapping
    specials = {0, 1, 2, 5, 9}
    rng = np.random.default_rng(2)
    seen = set()
    for _ in range(300):
        ids = [0] + rng.choice([3, 4, 6, 7, 8], size=20).tolist() + [1]
        r = mlm_mask(ids, specials, 10, rng, rate=0.5, mask_id=2)
        new = r.input_ids[r.positions]
        seen |= set(new.tolist())
        assert all(t not in specials or t == 2 for t in new.tolist())
    assert seen == {2, 3, 4, 6, 7, 8}  # mask + every non-special id reachable


def test_eval_mask_deterministic():
    rng = np.random.default_rng(3)
    ids = seq(rng, 100)
    a, b = eval_mask(ids, 7, **KW), eval_mask(list(ids), 7, **KW)
    assert (a.input_ids == b.input_ids).all() and (a.positions == b.positions).all()
    assert (eval_mask(np.asarray(ids), 7, **KW).input_ids == a.input_ids).all()
    c = eval_mask(ids, 8, **KW)
    assert not (c.positions.tolist() == a.positions.tolist() and (c.input_ids == a.input_ids).all())
    # a function of the text: changing one token changes the mask (with overwhelming probability)
    other = ids.copy()
    other[5] += 1
    d = eval_mask(other, 7, **KW)
    assert d.positions.tolist() != a.positions.tolist() or (d.input_ids[a.positions] != a.input_ids[a.positions]).any()
    # independent of batch composition and order
    m = MLMMasker(SPECIAL, V, 103)
    seqs = [seq(rng, n) for n in (10, 40, 126)]
    b1 = m.batch(seqs, seed=7)
    b2 = m.batch([seqs[2], seq(rng, 5), seqs[0]], seed=7)
    assert (b1[0].input_ids == b2[2].input_ids).all() and (b1[2].positions == b2[0].positions).all()


def test_eval_mask_known_value():
    # pins the hash → generator → mask chain (a silent change would break stored eval sets)
    r = eval_mask([101, *range(2000, 2020), 102], 0, **KW)
    assert r.positions.tolist() == [8, 13, 19]
    assert r.input_ids[r.positions].tolist() == [103, 29962, 103]


def test_training_rng_and_batch_helpers():
    m = MLMMasker.from_tokenizer(type("T", (), dict(special_ids=SPECIAL, vocab_size=V, mask_id=103))())
    seqs = [[101, *range(2000, 2000 + n), 102] for n in (5, 30, 60)]
    b1 = collate_mlm(seqs, 0, m, rng=step_rng(0, 3))
    b2 = collate_mlm(seqs, 0, m, rng=step_rng(0, 3))
    b3 = collate_mlm(seqs, 0, m, rng=step_rng(0, 4))
    assert b1["input_ids"].equal(b2["input_ids"]) and not b1["positions"].equal(b3["positions"])
    pos, tgt = b1["positions"], b1["targets"]
    k = sum(n_to_modify(n) for n in (5, 30, 60))
    assert k == 1 + 5 + 9 and pos.shape == (k, 2) and tgt.shape == (k,)
    orig = collate(seqs)
    assert orig[pos[:, 0], pos[:, 1]].tolist() == tgt.tolist()
    # positions outside the modified set are unchanged, padding untouched
    changed = (b1["input_ids"] != orig).nonzero().tolist()
    assert {tuple(x) for x in changed} <= {tuple(x) for x in pos.tolist()}
    with pytest.raises(NodeprobeError, match="exactly one of rng"):
        m.batch(seqs)


def collate(seqs):
    from nodeprobe.data import collate as c

    return c(seqs, 0)["input_ids"]


@pytest.mark.parametrize("kw", [dict(rate=0.0), dict(rate=1.5), dict(mask_id=V), dict(vocab_size=3)])
def test_bad_settings(kw):
    args = dict(special_ids={0, 1, 2}, vocab_size=V, mask_id=103, rate=0.15) | kw
    with pytest.raises(NodeprobeError):
        MLMMasker(frozenset(args["special_ids"]), args["vocab_size"], args["mask_id"], args["rate"])
