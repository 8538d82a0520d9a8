"""Single-node predictions via the upper envelope equal the dense argmax, bit for bit."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeprobe.analysis.readout import (
    _node_predictions_impl,
    dense_node_predictions,
    node_predictions,
    readout_bias,
    readout_logits,
    readout_predictions,
    upper_envelope,
)
from nodeprobe.errors import NodeprobeError


def reference(W, b, X, mode, mu=None):
    """The definition, written independently: per node, X[:, i, None] * W[None, :, i] + b',
    argmax with ties to the lowest index (min over the indices attaining the max)."""
    N, d = X.shape
    out = torch.empty(N, d, dtype=torch.long)
    K = W.shape[0]
    for i in range(d):
        bp = b if mode == "zero" else b + W @ mu - W[:, i] * mu[i]
        v = X[:, i, None] * W[None, :, i] + bp
        m = v.max(dim=1, keepdim=True).values
        out[:, i] = torch.where(v == m, torch.arange(K), K).min(dim=1).values
    return out


def random_case(K, N, d, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(K, d, generator=g, dtype=dtype)
    b = torch.randn(K, generator=g, dtype=dtype) * 0.5
    X = torch.randn(N, d, generator=g, dtype=dtype) * 2
    return W, b, X, X.mean(0)


def integer_case(K, N, d, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randint(-2, 3, (K, d), generator=g).to(dtype)
    b = torch.randint(-3, 4, (K,), generator=g).to(dtype)
    X = torch.randint(-3, 4, (N, d), generator=g).to(dtype)
    mu = torch.randint(-2, 3, (d,), generator=g).to(dtype)
    return W, b, X, mu


@pytest.mark.parametrize("mode", ["zero", "mean"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_float_K16(mode, dtype):
    W, b, X, mu = random_case(16, 500, 24, dtype)
    got = node_predictions(W, b, X, mode, mu)
    assert got.dtype == torch.int64 and got.shape == (500, 24)
    assert torch.equal(got, reference(W, b, X, mode, mu))


@pytest.mark.parametrize("mode", ["zero", "mean"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tie_heavy_integers_K16(mode, dtype):
    W, b, X, mu = integer_case(16, 300, 12, dtype)
    ref = reference(W, b, X, mode, mu)
    assert torch.equal(node_predictions(W, b, X, mode, mu), ref)
    # the envelope + neighbour re-check alone is already exact on integer ties
    preds, _ = _node_predictions_impl(W, b, X, mode, mu, certify=False)
    assert torch.equal(torch.from_numpy(preds), ref)


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_big_vocab_K30522(mode):
    W, b, X, mu = random_case(30522, 40, 3, seed=1)
    W = W * 0.05
    assert torch.equal(node_predictions(W, b, X, mode, mu), reference(W, b, X, mode, mu))
    Wi, bi, Xi, mui = integer_case(30522, 40, 3, torch.float64, seed=2)
    assert torch.equal(node_predictions(Wi, bi, Xi, mode, mui), reference(Wi, bi, Xi, mode, mui))


def test_numpy_inputs_and_dense_baseline_agree():
    W, b, X, mu = random_case(16, 200, 10, seed=3)
    ref = reference(W, b, X, "mean", mu)
    assert torch.equal(node_predictions(W.numpy(), b.numpy(), X.numpy(), "mean", mu.numpy()), ref)
    assert torch.equal(dense_node_predictions(W, b, X, "mean", mu, chunk_cells=1000), ref)
    assert torch.equal(dense_node_predictions(W, b, X), reference(W, b, X, "zero"))


def test_random_float_needs_no_dense_fallback():
    W, b, X, mu = random_case(16, 1000, 16, seed=4)
    _, n_dense = _node_predictions_impl(W, b, X, "zero", None)
    assert n_dense == 0


small_ints = st.integers(-3, 3)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 7).flatmap(
        lambda K: st.tuples(
            st.lists(st.tuples(small_ints, small_ints), min_size=K, max_size=K),
            st.lists(st.integers(-4, 4), min_size=1, max_size=12),
        )
    ),
    st.sampled_from([torch.float32, torch.float64]),
)
def test_hypothesis_ties_match_dense(case, dtype):
    lines, xs = case
    W = torch.tensor([[s] for s, _ in lines], dtype=dtype)
    b = torch.tensor([c for _, c in lines], dtype=dtype)
    X = torch.tensor([[x] for x in xs], dtype=dtype)
    ref = reference(W, b, X, "zero")
    assert torch.equal(node_predictions(W, b, X), ref)
    preds, _ = _node_predictions_impl(W, b, X, "zero", None, certify=False)
    assert torch.equal(torch.from_numpy(preds), ref)


# ------------------------------------------------------------------ upper envelope, exactly


def exact_winner(lines, x: Fraction) -> int:
    vals = [Fraction(s) * x + Fraction(c) for s, c in lines]
    m = max(vals)
    return vals.index(m)  # first = lowest index


def brute_envelope(lines, interval=None):
    """(all winners, strict winners) by exact enumeration of every pairwise crossing."""
    crit = set()
    for a in range(len(lines)):
        for q in range(a + 1, len(lines)):
            (sa, ca), (sb, cb) = lines[a], lines[q]
            if sa != sb:
                crit.add(Fraction(cb - ca, sa - sb))
    if interval is not None:
        lo, hi = (Fraction(v) for v in interval)
        crit = {x for x in crit if lo <= x <= hi} | {lo, hi}
    pts = sorted(crit) or [Fraction(0)]
    if interval is None:
        mids = [pts[0] - 1, pts[-1] + 1] + [(u + v) / 2 for u, v in zip(pts, pts[1:])]
    elif pts[0] == pts[-1]:
        mids = [pts[0]]
    else:
        mids = [(u + v) / 2 for u, v in zip(pts, pts[1:])]
    strict = {exact_winner(lines, x) for x in mids}
    return {exact_winner(lines, x) for x in pts} | strict, strict


@settings(max_examples=120, deadline=None)
@given(
    st.lists(st.tuples(small_ints, small_ints), min_size=1, max_size=8),
    st.one_of(st.none(), st.tuples(st.integers(-4, 4), st.integers(0, 4))),
)
def test_envelope_matches_exact_enumeration(lines, iv):
    interval = None if iv is None else (iv[0], iv[0] + iv[1])
    env = upper_envelope([float(s) for s, _ in lines], [float(c) for _, c in lines], interval)
    all_w, strict_w = brute_envelope(lines, interval)
    assert set(env.lines.tolist()) == all_w
    assert set(env.reachable) == strict_w
    # lines run left to right (increasing slope) and meet at the breakpoints
    slopes = [lines[k][0] for k in env.lines]
    assert slopes == sorted(slopes)
    for t, x in enumerate(env.breakpoints):
        (sa, ca), (sb, cb) = lines[env.lines[t]], lines[env.lines[t + 1]]
        assert sa * x + ca == pytest.approx(sb * x + cb)


def test_envelope_hand_cases():
    # three lines through (0, 0); the middle one has the lowest index -> a point segment at x = 0
    env = upper_envelope([0.0, -1.0, 1.0], [0.0, 0.0, 0.0])
    assert env.lines.tolist() == [1, 0, 2]
    assert env.strict.tolist() == [True, False, True]
    assert env.reachable == (1, 2)
    # equal slopes: the higher intercept wins; identical lines: the lowest index wins
    env = upper_envelope([1.0, 1.0, 1.0, -1.0], [0.0, 2.0, 2.0, 0.0])
    assert env.lines.tolist() == [3, 1] and env.breakpoints.tolist() == [-1.0]
    # the interval end decides by the tie rule: at x = -1 lines 3 and 1 tie, 1 wins
    assert upper_envelope([1.0, 1.0, 1.0, -1.0], [0.0, 2.0, 2.0, 0.0], (-1.0, 3.0)).lines.tolist() == [1]
    assert upper_envelope([1.0, -1.0], [0.0, 2.0], (1.0, 1.0)).reachable == (0,)  # tie at x=1 -> 0


def test_readout_logits_and_predictions():
    W, b, X, mu = random_case(16, 300, 20, seed=5)
    S = [3, 7, 11]
    rest = [i for i in range(20) if i not in S]
    lz = readout_logits(W, b, X, S)
    assert torch.allclose(lz, X[:, S] @ W[:, S].T + b, atol=1e-5)
    lm = readout_logits(W, b, X, S, "mean", mu)
    assert torch.allclose(lm, X[:, S] @ W[:, S].T + b + W[:, rest] @ mu[rest], atol=1e-4)
    assert torch.allclose(readout_bias(W, b, S, "mean", mu), b + W[:, rest] @ mu[rest], atol=1e-5)
    p = readout_predictions(W, b, X, S, "mean", mu, chunk_cells=16 * 7)
    assert torch.equal(p, torch.from_numpy(np.argmax(lm.numpy(), axis=1)))
    # the node set {i} reproduces the single-node predictions exactly
    single = node_predictions(W, b, X, "mean", mu)
    for i in (0, 5):
        assert torch.equal(readout_predictions(W, b, X, [i], "mean", mu), single[:, i])


def test_user_errors():
    W, b, X, mu = random_case(4, 5, 3)
    with pytest.raises(NodeprobeError, match="mode"):
        node_predictions(W, b, X, "median")
    with pytest.raises(NodeprobeError, match="means"):
        node_predictions(W, b, X, "mean")
    with pytest.raises(NodeprobeError, match="columns"):
        node_predictions(W, b, X[:, :2])
    with pytest.raises(NodeprobeError, match="NaN"):
        node_predictions(W, b, X * float("nan"))
    with pytest.raises(NodeprobeError, match="nodes"):
        readout_logits(W, b, X, [0, 3])
    with pytest.raises(NodeprobeError, match="repeated"):
        readout_logits(W, b, X, [1, 1])
    with pytest.raises(NodeprobeError, match="interval"):
        upper_envelope([1.0], [0.0], (2.0, 1.0))
