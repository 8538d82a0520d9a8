"""Head similarity analyses on hand-built patterns and vectors; the text driver and CLI on a tiny model."""

from __future__ import annotations

import doctest
import json
import math

import numpy as np
import pytest
import torch

from nodeprobe.analysis import similarity as sim
from nodeprobe.analysis.similarity import (
    context_similarity,
    head_uniqueness,
    merge_separator_attention,
    merge_similarity,
    pair_stats,
    segment_text,
    sentence_ids,
    separator_attention,
    similarity_matrix,
    top_token,
)
from nodeprobe.errors import NodeprobeError

PAD, CLS, SEP, DOT, BANG = 0, 1, 2, 20, 21


def test_docstring_examples():
    import nodeprobe.analysis.order_parameters as track_mod
    import nodeprobe.render.heads_view as view_mod

    for mod in (sim, track_mod, view_mod):
        r = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
        assert r.attempted > 0 and r.failed == 0, mod.__name__


# ------------------------------------------------------------------------------ separators
def _sep_case():
    """Two texts (one padded), 2 blocks × 2 heads with known shares."""
    ids = torch.tensor([[CLS, 10, DOT, 11, SEP], [CLS, 10, SEP, PAD, PAD]])
    mask = (ids != PAD).long()
    B, P = ids.shape
    pats = [torch.zeros(B, 2, P, P) for _ in range(2)]
    n = mask.sum(1)
    for b in range(B):
        sep_pos = int((ids[b] == SEP).nonzero()[0, 0])
        pats[0][b, 0, :, sep_pos] = 1.0                     # block 0 head 0: all on [SEP]
        pats[0][b, 1, :, : n[b]] = 1.0 / n[b]               # block 0 head 1: uniform over real keys
        pats[1][b, 0, :, 1] = 1.0                           # block 1 head 0: on a word
        pats[1][b, 1, :, 0] = 0.5                           # block 1 head 1: half [CLS], half a word
        pats[1][b, 1, :, 1] = 0.5
        for p in pats:                                       # padded query rows: garbage that must not count
            p[b, :, n[b]:, :] = 0.0
            p[b, :, n[b]:, 0] = 1.0
    return pats, ids, mask


def test_separator_shares_known():
    pats, ids, mask = _sep_case()
    r = separator_attention(pats, ids, mask, sep_id=SEP, cls_id=CLS, punct_ids=(DOT, BANG), threshold=0.3)
    # 8 real queries: 5 in text 0, 3 in text 1
    assert r.n_queries == 8
    np.testing.assert_allclose(r.share_sep, [[1.0, (5 * 0.2 + 3 / 3) / 8], [0.0, 0.0]])
    np.testing.assert_allclose(r.share_cls, [[0.0, 2 / 8], [0.0, 0.5]])
    np.testing.assert_allclose(r.share_punct, [[0.0, 1 / 8], [0.0, 0.0]])
    np.testing.assert_allclose(r.share, [[1.0, 0.625], [0.0, 0.5]])
    np.testing.assert_allclose(r.block_share, [0.8125, 0.25])
    assert r.uniform_share == pytest.approx(5 / 8)  # 5 separator keys among 8 real (the uniform head's share)
    assert r.separator_heads == ((0, 0), (0, 1), (1, 1))
    assert r.separator_blocks == (0,)
    r2 = separator_attention(pats, ids, mask, sep_id=SEP, cls_id=CLS, punct_ids=(DOT,), threshold=0.7)
    assert r2.separator_heads == ((0, 0),) and r2.separator_blocks == (0,)


def test_separator_merge_equals_joint():
    pats, ids, mask = _sep_case()
    kw = dict(sep_id=SEP, cls_id=CLS, punct_ids=(DOT,))
    joint = separator_attention(pats, ids, mask, **kw)
    parts = [separator_attention([p[b : b + 1, :, : int(mask[b].sum()), : int(mask[b].sum())] for p in pats],
                                 ids[b : b + 1, : int(mask[b].sum())], None, **kw) for b in range(2)]
    merged = merge_separator_attention(parts)
    np.testing.assert_allclose(merged.share, joint.share)
    assert merged.uniform_share == pytest.approx(joint.uniform_share)
    assert merged.separator_heads == joint.separator_heads


def test_separator_bad_input():
    pats, ids, mask = _sep_case()
    with pytest.raises(NodeprobeError, match="expected"):
        separator_attention([pats[0][:, :, :3]], ids, mask, sep_id=SEP, cls_id=CLS)
    with pytest.raises(NodeprobeError, match="threshold"):
        separator_attention(pats, ids, mask, sep_id=SEP, cls_id=CLS, threshold=2.0)
    with pytest.raises(NodeprobeError, match="no real tokens"):
        separator_attention(pats, ids, torch.zeros_like(mask), sep_id=SEP, cls_id=CLS)


# ------------------------------------------------------------------------------ segmentation
def _seg_case():
    ids = torch.tensor([CLS, 10, 11, DOT, 12, 13, BANG, 14, SEP])
    P = ids.numel()
    seg_head = torch.zeros(P, P)   # each query looks at the next sentence end at or after it
    for qpos in range(P):
        seg_head[qpos, 3 if qpos <= 3 else (6 if qpos <= 6 else 8)] = 1.0
    uniform = torch.full((P, P), 1.0 / P)
    return [torch.stack([seg_head, uniform])[None]], ids


def test_segment_known_boundaries():
    pats, ids = _seg_case()
    s = segment_text(pats, ids, [(0, 0)], min_ratio=3.0, special_ids=(CLS, SEP, PAD))
    # position 3 receives 4 of 9 queries (×9/9 → 4), position 6 receives 3, [SEP] (special) 2
    assert s.received[3] == pytest.approx(4.0) and s.received[6] == pytest.approx(3.0)
    assert s.boundaries == (3, 6)
    assert s.segments == ((1, 4), (4, 7), (7, 8))
    assert s.n_segments == 3 and s.n_real == 9
    s = segment_text(pats, ids, [(0, 0)], min_ratio=3.5, special_ids=(CLS, SEP))
    assert s.boundaries == (3,) and s.segments == ((1, 4), (4, 8))
    # uniform head: nothing stands out → one segment
    s = segment_text(pats, ids, [(0, 1)], special_ids=(CLS, SEP))
    assert s.boundaries == () and s.segments == ((1, 8),)
    # average of both heads: 0.5·4 + 0.5·1 = 2.5 at position 3, 2.0 at position 6
    s = segment_text(pats, ids, [(0, 0), (0, 1)], min_ratio=2.0, special_ids=(CLS, SEP))
    assert s.boundaries == (3, 6)


def test_segment_errors():
    pats, ids = _seg_case()
    with pytest.raises(NodeprobeError, match="no heads"):
        segment_text(pats, ids, [])
    with pytest.raises(NodeprobeError, match="heads 0–1"):
        segment_text(pats, ids, [(0, 5)])
    with pytest.raises(NodeprobeError, match="min_ratio"):
        segment_text(pats, ids, [(0, 0)], min_ratio=0)


# ------------------------------------------------------------------------------ context similarity
def _vec_case():
    """One text, block 0 with two heads and block 1 with two copies of head (0, 0)."""
    ids = torch.tensor([[CLS, 10, 11, DOT, 10, 12, BANG, SEP]])
    e = torch.eye(8)
    h0 = torch.zeros(8, 8)
    h0[1] = h0[4] = math.sqrt(10) * e[0]      # (1, 4) = 10: repeated token 10, distance 3, two sentences
    h0[2] = h0[3] = math.sqrt(5) * e[1]       # (2, 3) = 5: same sentence, distance 1
    h0[5] = h0[6] = 2.0 * e[2]                # (5, 6) = 4: same sentence, distance 1
    h0[0] = h0[7] = 100.0 * e[0]              # [CLS]/[SEP] would dominate if not skipped
    h1 = torch.zeros(8, 8)
    h1[2] = 3.0 * e[3] + 2.0 * e[4]
    h1[5] = 3.0 * e[3]                        # (2, 5) = 9
    h1[4] = 2.0 * e[4]                        # (2, 4) = 4: token 11 in two pairs
    h1[3] = h1[6] = 1.5 * e[5]                # (3, 6) = 2.25
    z0 = torch.stack([h0, h1], dim=1)[None]   # [1, P, H, Dh]
    z1 = torch.stack([h0, h0], dim=1)[None]
    return [z0, z1], ids


KW = dict(ender_ids=(DOT, BANG, SEP), special_ids=(CLS, SEP, PAD))


def test_similarity_known_pairs():
    vecs, ids = _vec_case()
    r = context_similarity(vecs, ids, q=0.8, **KW)   # 6 text positions → 15 pairs → top ⌈0.2·15⌉ = 3
    p = r.pairs[0][0]
    assert list(zip(p.i.tolist(), p.j.tolist())) == [(1, 4), (2, 3), (5, 6)]
    np.testing.assert_allclose(p.value, [10.0, 5.0, 4.0])
    assert p.n_candidates == 15
    h = r.heads[0][0]
    assert h.stats.n_pairs == 3 and h.stats.median_distance == 1.0 and h.stats.mean_distance == pytest.approx(5 / 3)
    assert h.stats.same_sentence_share == pytest.approx(2 / 3)
    assert h.stats.repeated_share == pytest.approx(1 / 3)
    assert h.stats.long_range_share == 0.0
    assert h.top_token == 10 and h.top_token_pairs == 1          # all tokens once: lowest id wins
    assert h.min_value == pytest.approx(4.0)
    p1 = r.pairs[0][1]
    assert list(zip(p1.i.tolist(), p1.j.tolist())) == [(2, 5), (2, 4), (3, 6)]
    assert r.heads[0][1].top_token == 11 and r.heads[0][1].top_token_pairs == 2
    b0 = r.blocks[0]
    assert b0.stats.n_pairs == 6
    assert b0.stats.median_distance == 2.5                        # distances 3 1 1 | 3 2 3
    assert b0.stats.same_sentence_share == pytest.approx(2 / 6)
    assert b0.stats.repeated_share == pytest.approx(1 / 6)
    assert b0.stats.distance_counts[:5] == (2, 1, 3, 0, 0)        # 1 | 2 | 3–4 | 5–8 | 9–16
    assert b0.top_tokens == (10, 11) and b0.uniqueness == 1.0     # every head its own token
    assert r.blocks[1].top_tokens == (10, 10) and r.blocks[1].uniqueness == 0.5
    # long-range threshold is an option
    r2 = context_similarity(vecs, ids, q=0.8, long_range=2, **KW)
    assert r2.heads[0][0].stats.long_range_share == pytest.approx(1 / 3)
    assert r2.blocks[0].stats.long_range_share == pytest.approx(3 / 6)


def test_similarity_quantile_specials_and_cosine():
    vecs, ids = _vec_case()
    r = context_similarity(vecs, ids, **KW)                       # q = 0.99: ⌈0.15⌉ = 1 pair per head
    assert [hs.stats.n_pairs for hs in r.heads[0]] == [1, 1]
    r = context_similarity(vecs, ids, q=0.8, skip_special=False, **KW)   # 28 pairs → 6; (0, 7) = 10⁴ first
    p = r.pairs[0][0]
    assert (int(p.i[0]), int(p.j[0])) == (0, 7) and p.n_pairs == 6
    r = context_similarity(vecs, ids, q=0.8, normalize=True, **KW)
    np.testing.assert_allclose(r.pairs[0][0].value, [1.0, 1.0, 1.0])   # cosine: three identical pairs
    with pytest.raises(NodeprobeError, match="quantile"):
        context_similarity(vecs, ids, q=1.0)
    with pytest.raises(NodeprobeError, match="shape"):
        context_similarity([vecs[0][:, :5]], ids)


def test_similarity_qk_is_ordered():
    ids = torch.tensor([[5, 6, 7]])
    qv = torch.zeros(1, 3, 1, 2)
    kv = torch.zeros(1, 3, 1, 2)
    qv[0, 2, 0] = torch.tensor([1.0, 0.0])
    kv[0, 0, 0] = torch.tensor([1.0, 0.0])   # q_2 · k_0 = 1, but q_0 · k_2 = 0
    r = context_similarity([qv], ids, keys=[kv], q=0.8, site="qk")   # 6 ordered pairs → 2
    p = r.pairs[0][0]
    assert (int(p.i[0]), int(p.j[0])) == (2, 0) and p.n_candidates == 6
    np.testing.assert_allclose(similarity_matrix(qv[0, :, 0], kv[0, :, 0]), [[0, 0, 0], [0, 0, 0], [1, 0, 0]])


def test_similarity_merge_and_padding():
    vecs, ids = _vec_case()
    a = context_similarity(vecs, ids, q=0.8, **KW)
    # the same text padded inside a batch with a second, shorter text
    pad_ids = torch.tensor([[CLS, 10, 11, DOT, 10, 12, BANG, SEP], [CLS, 12, SEP, PAD, PAD, PAD, PAD, PAD]])
    mask = (pad_ids != PAD).long()
    vv = [torch.cat([v, torch.randn_like(v)]) for v in vecs]
    b = context_similarity(vv, pad_ids, mask, q=0.8, **KW)
    assert b.pairs[0][0].item.tolist() == [0, 0, 0]               # text 1 has one text token: no pairs
    assert b.heads[0][0].stats == a.heads[0][0].stats
    m = merge_similarity([a, a])
    assert m.n_items == 2 and m.blocks[0].stats.n_pairs == 12
    assert sorted(set(m.pairs[0][0].item.tolist())) == [0, 1]
    assert m.blocks[0].stats.median_distance == a.blocks[0].stats.median_distance
    d = m.to_dict()
    assert "pairs" not in d and d["blocks"][0]["uniqueness"] == 1.0


def test_small_helpers():
    assert sentence_ids([[CLS, 10, DOT, 11, BANG, SEP]], (DOT, BANG, SEP)).tolist() == [[0, 0, 0, 1, 1, 2]]
    assert top_token([], []) == (None, 0)
    assert top_token([3, 4, 4], [3, 5, 6]) == (4, 2)
    assert head_uniqueness([1, 2, None, 2]) == 0.5
    s = pair_stats([], [], [])
    assert s.n_pairs == 0 and math.isnan(s.median_distance)
    s = pair_stats([17, 16], [True, False], [False, False])
    assert s.long_range_share == 0.5 and s.distance_counts[5] == 1 and s.distance_counts[4] == 1


# ------------------------------------------------------------------------------ driver + CLI
@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from _heads_tiny import tiny_mlm_dir

    return tiny_mlm_dir(tmp_path_factory.mktemp("tiny_mlm"))


TEXT = "the cat sat on the mat. the dog was born in new york! he is big."


def test_study_heads_on_a_model(tiny_dir):
    from nodeprobe.data import load_tokenizer
    from nodeprobe.studies.heads import head_matrix, segment, study_heads
    from nodeprobe.model import load_model

    m, tok = load_model(tiny_dir), load_tokenizer(tiny_dir)
    texts = [TEXT, "she is big. the city is new?", "the river"]
    one = study_heads(m, tok, texts, batch_size=1, q=0.9)
    three = study_heads(m, tok, texts, batch_size=3, q=0.9)   # padding must not change the shares
    np.testing.assert_allclose(one.separators.share, three.separators.share, atol=1e-5)
    assert one.separators.share.shape == (2, 4) and one.n_texts == 3
    assert one.similarity.n_items == 3
    assert [b.stats.n_pairs for b in one.similarity.blocks] == [b.stats.n_pairs for b in three.similarity.blocks]
    assert tok.token_to_id(".") in one.separators.punct_ids
    for b in one.similarity.blocks:
        assert 0 < b.uniqueness <= 1
        assert all(t is None or t in one.token_names for t in b.top_tokens)
    M, toks = head_matrix(m, tok, TEXT, 1, 2)
    assert M.shape == (len(toks), len(toks)) and toks[0] == "[CLS]"
    np.testing.assert_allclose(M, M.T, rtol=1e-5)
    rep = segment(m, tok, TEXT, heads=[(0, 1)], min_ratio=1e-6)   # every text token is a boundary
    assert rep.segmentation.n_segments == len(toks) - 2
    assert rep.segment_texts[0] == "the"
    with pytest.raises(NodeprobeError, match="no separator-focused head"):
        segment(m, tok, TEXT, threshold=0.99)


def _cli(args):
    from nodeprobe.cli import main

    return main(args)


def test_cli_similarity_segment(tiny_dir, tmp_path, capsys):
    out = tmp_path / "sim.json"
    assert _cli(["similarity", "--model", str(tiny_dir), "--text", TEXT, "--layer", "1", "--head", "0",
                 "--q", "0.9", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Head L1H0" in text and "Attention share on separators" in text and "uniqueness" in text
    d = json.loads(out.read_text())
    assert d["schema"] == "nodeprobe.similarity/1"
    assert len(d["result"]["similarity"]["blocks"]) == 2
    assert len(d["result"]["matrix"]["values"]) == len(d["result"]["matrix"]["tokens"])
    f = tmp_path / "t.txt"
    f.write_text(TEXT + "\n\nshe is big.\n")
    seg = tmp_path / "seg.json"
    assert _cli(["segment", "--model", str(tiny_dir), "--text-file", str(f), "--layer", "0", "--head", "1",
                 "--min-ratio", "1.2", "--json", str(seg)]) == 0
    assert "Segments of text 2" in capsys.readouterr().out
    assert len(json.loads(seg.read_text())["result"]["texts"]) == 2
    # user errors: one line, exit 2
    for args in (["similarity", "--model", str(tiny_dir)],
                 ["similarity", "--model", str(tiny_dir), "--text", TEXT, "--layer", "7", "--head", "0"],
                 ["similarity", "--model", str(tiny_dir), "--text", TEXT, "--layer", "0"],
                 ["similarity", "--model", str(tiny_dir), "--text", TEXT, "--site", "x"],
                 ["segment", "--model", str(tiny_dir), "--text", TEXT, "--threshold", "0.99"],
                 ["segment", "--model", str(tmp_path / "none"), "--text", TEXT]):
        assert _cli(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("nodeprobe: error:") and err.count("\n") == 1, err
