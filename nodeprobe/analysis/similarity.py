"""Attention-head similarity analyses: attention to separators, segmentation, context similarity.

Pure functions: tensors (torch or numpy) in, small dataclasses of numbers out; nothing prints or
runs a model (``nodeprobe.studies.heads`` collects the activations, ``nodeprobe.render.heads_view``
renders).  Shapes follow :mod:`nodeprobe.model`: ``patterns[l]`` is ``blocks.{l}.attn.hook_pattern``
``[B, H, Q, K]``; ``vectors[l]`` is ``blocks.{l}.attn.hook_z`` (or ``hook_q``/``hook_k``/``hook_v``)
``[B, P, H, Dh]``; ``input_ids``/``attention_mask`` are ``[B, P]`` (mask 1 = real token).

**Attention to separators** (:func:`separator_attention`).  For block l, head h and every *real*
query position q (attention mask 1, specials included), the separator share is the attention mass
that q puts on real key positions holding [SEP], [CLS] or a sentence-ending punctuation id
(``.``, ``!``, ``?`` — the caller passes the ids).  Shares are averaged over all real queries of
all texts (each query weighs the same).  ``uniform_share`` is the same number for uniform
attention over the real keys (= #separator keys / #real keys, pooled), the level a head with no
preference reaches.  A head is *separator-focused* when its share exceeds ``threshold``
(default 0.3); a block when the mean share over its heads does.

**Segmentation** (:func:`segment_text`).  Average the patterns of the chosen (separator-focused)
heads; the attention a key position *receives* is its mean over the real queries, scaled by the
number of real tokens (uniform attention → 1 everywhere).  Text positions (real, not a special id)
that receive at least ``min_ratio`` (default 3) times the uniform level are *boundaries*; a segment
ends at (and includes) each boundary token, and the last segment ends at the last text token.  A
random-init model attends almost uniformly and yields one segment; a model whose separator heads
look at the sentence-final punctuation splits the text into sentences.

**Context similarity** (:func:`context_similarity`).  Per block, head and text: the scalar products
``S[i, j] = v_i · v_j`` of the head's token vectors (``z`` by default; ``normalize`` → cosine;
with ``keys`` given, ``S[i, j] = q_i · k_j``, not symmetric).  Candidate pairs are the unordered
pairs ``i < j`` (ordered pairs ``i ≠ j`` for q·k) of real positions, specials left out unless
``skip_special=False``.  The **high-similarity pairs** of a head over one text are its top
``⌈(1 − q)·n⌉`` candidates by value (at least one; ties → the earlier pair in row-major order),
i.e. the top q-quantile, **q = 0.99**; the quantile is taken per head and per text and the pairs
of all texts are pooled.  Per head and pooled per block: the token distance ``|i − j|`` (median,
mean, share of long-range pairs ``|i − j| > long_range``, **16**, and a histogram), the share of
pairs inside one sentence (sentence ids from ``ender_ids``: a sentence ends with — and includes —
an ender token), and the share of repeated-token pairs (same token id at i and j).

**Head uniqueness.**  A head's *top token* is the most common token among its high-similarity
pairs (each pair counts each distinct token id at its two ends once; ties → lowest id).  The
uniqueness of a block is the number of distinct top tokens over its heads divided by H (1 = every
head has its own token; 1/H = all heads agree).

Example:
    >>> import torch
    >>> pat = [torch.full((1, 2, 4, 4), 0.25)]            # one block, two uniform heads
    >>> ids = torch.tensor([[1, 5, 6, 2]])                # [CLS] w w [SEP]
    >>> r = separator_attention(pat, ids, sep_id=2, cls_id=1)
    >>> r.share.tolist(), r.uniform_share
    ([[0.5, 0.5]], 0.5)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from nodeprobe.errors import NodeprobeError

#: upper edges (exclusive) of the token-distance histogram bins: 1, 2, 3–4, 5–8, 9–16, …
DISTANCE_EDGES = (1, 2, 3, 5, 9, 17, 33, 65, 129, 257, 513)
VECTOR_SITES = ("z", "q", "k", "v", "qk")  # the per-head vectors compared (METHODS §7); not the cache sites


# ---------------------------------------------------------------------------- input helpers
def _t(a, name: str, ndim: int | tuple[int, ...], dtype=torch.float64) -> torch.Tensor:
    x = a.detach() if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if x.dim() not in ndims:
        raise NodeprobeError(f"{name}: expected {' or '.join(map(str, ndims))} dimensions, got shape {tuple(x.shape)}")
    x = x.cpu()
    if dtype is not None:
        x = x.to(dtype)
        if dtype.is_floating_point and not torch.isfinite(x).all():
            raise NodeprobeError(f"{name}: contains NaN or infinite values")
    return x


def _ids_mask(input_ids, attention_mask) -> tuple[torch.Tensor, torch.Tensor]:
    ids = _t(input_ids, "input_ids", (1, 2), dtype=None)
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise NodeprobeError(f"input_ids: expected integer token ids, got dtype {ids.dtype}")
    ids = ids.long()
    if ids.dim() == 1:
        ids = ids[None]
    if attention_mask is None:
        mask = torch.ones_like(ids, dtype=torch.bool)
    else:
        mask = _t(attention_mask, "attention_mask", (1, 2), dtype=None)
        mask = (mask[None] if mask.dim() == 1 else mask).bool()
        if mask.shape != ids.shape:
            raise NodeprobeError(f"attention_mask has shape {tuple(mask.shape)} but input_ids {tuple(ids.shape)}")
    return ids, mask


def _isin(ids: torch.Tensor, values: Sequence[int]) -> torch.Tensor:
    vals = [int(v) for v in values if v is not None]
    if not vals:
        return torch.zeros_like(ids, dtype=torch.bool)
    return torch.isin(ids, torch.tensor(vals, dtype=ids.dtype))


def _blocks(seq, name: str) -> list:
    if isinstance(seq, (torch.Tensor, np.ndarray)):
        seq = list(seq)
    seq = list(seq)
    if not seq:
        raise NodeprobeError(f"{name}: no blocks given")
    return seq


# ---------------------------------------------------------------------------- separators
@dataclass(frozen=True, eq=False)
class SeparatorAttention:
    """Share of attention on separator tokens per block and head (``[L, H]`` arrays).

    ``share = share_sep + share_cls + share_punct``; ``block_share[l]`` is the mean of
    ``share[l]`` over heads; ``separator_heads``/``separator_blocks`` exceed ``threshold``.
    """

    share: np.ndarray
    share_sep: np.ndarray
    share_cls: np.ndarray
    share_punct: np.ndarray
    block_share: np.ndarray
    uniform_share: float
    threshold: float
    separator_blocks: tuple[int, ...]
    separator_heads: tuple[tuple[int, int], ...]
    n_queries: int
    punct_ids: tuple[int, ...]

    @property
    def n_layers(self) -> int:
        return int(self.share.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.share.shape[1])

    def to_dict(self) -> dict:
        return asdict(self)


def _finish_separators(sep, cls, punct, n_q: int, n_sep_keys: float, threshold: float,
                       punct_ids) -> SeparatorAttention:
    share = sep + cls + punct
    block = share.mean(axis=1)
    return SeparatorAttention(
        share=share, share_sep=sep, share_cls=cls, share_punct=punct, block_share=block,
        uniform_share=float(n_sep_keys / n_q) if n_q else float("nan"),
        threshold=float(threshold),
        separator_blocks=tuple(int(l) for l in np.flatnonzero(block > threshold)),
        separator_heads=tuple((int(l), int(h)) for l, h in zip(*np.nonzero(share > threshold))),
        n_queries=int(n_q), punct_ids=tuple(int(p) for p in punct_ids),
    )


def _check_threshold(threshold: float, name: str = "threshold") -> float:
    if not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):
        raise NodeprobeError(f"{name}={threshold!r}: expected a share in [0, 1]")
    return float(threshold)


def separator_attention(
    patterns,
    input_ids,
    attention_mask=None,
    *,
    sep_id: int,
    cls_id: int,
    punct_ids: Sequence[int] = (),
    threshold: float = 0.3,
) -> SeparatorAttention:
    """Attention share on [SEP], [CLS] and sentence-ending punctuation per block and head.

    Args:
        patterns: one ``[B, H, Q, K]`` attention pattern per block (a list, or a ``[L, B, H, Q, K]``
            tensor); rows are probabilities.
        input_ids, attention_mask: ``[B, P]`` (``P = Q = K``); mask 1 = real token (default all).
        sep_id, cls_id, punct_ids: the separator token ids (punctuation: ``.``, ``!``, ``?``).
        threshold: share above which a head / a block (mean over heads) counts as separator-focused.

    Example:
        >>> import torch
        >>> p = torch.zeros(1, 1, 3, 3); p[..., 2] = 1.0          # everything on [SEP]
        >>> r = separator_attention([p], torch.tensor([[1, 7, 2]]), sep_id=2, cls_id=1, threshold=0.5)
        >>> r.share_sep.tolist(), r.separator_blocks, r.separator_heads
        ([[1.0]], (0,), ((0, 0),))
    """
    threshold = _check_threshold(threshold)
    ids, mask = _ids_mask(input_ids, attention_mask)
    B, P = ids.shape
    blocks = _blocks(patterns, "patterns")
    kinds = {
        "sep": (ids == int(sep_id)) & mask,
        "cls": (ids == int(cls_id)) & mask,
        "punct": _isin(ids, punct_ids) & mask & (ids != int(sep_id)) & (ids != int(cls_id)),
    }
    n_q = int(mask.sum())
    if n_q == 0:
        raise NodeprobeError("separator attention: no real tokens (attention_mask is all 0)")
    qmask = mask.to(torch.float64)  # [B, Q]
    out = {k: [] for k in kinds}
    H = None
    for l, pat in enumerate(blocks):
        A = _t(pat, f"patterns[{l}]", 4)
        if A.shape[0] != B or A.shape[2] != P or A.shape[3] != P:
            raise NodeprobeError(f"patterns[{l}] has shape {tuple(A.shape)}; expected [{B}, H, {P}, {P}]")
        if H is None:
            H = A.shape[1]
        elif A.shape[1] != H:
            raise NodeprobeError(f"patterns[{l}] has {A.shape[1]} heads, block 0 has {H}")
        for k, km in kinds.items():
            on = (A * km[:, None, None, :].to(A.dtype)).sum(-1)  # [B, H, Q]
            out[k].append(((on * qmask[:, None, :]).sum((0, 2)) / n_q).numpy())
    # uniform attention: each of the n_b real queries of text b spreads 1/n_b over its n_b real keys,
    # so the pooled mass on separators is Σ_b (#separator keys of b)
    uniform_mass = float(sum(int(km.sum()) for km in kinds.values()))
    return _finish_separators(*(np.stack(out[k]) for k in ("sep", "cls", "punct")), n_q, uniform_mass,
                              threshold, punct_ids)


def merge_separator_attention(parts: Sequence[SeparatorAttention], threshold: float | None = None) -> SeparatorAttention:
    """Pool the results of several batches (query-weighted), as if computed in one call.

    Example:
        >>> import torch
        >>> a = separator_attention([torch.full((1, 1, 2, 2), 0.5)], torch.tensor([[1, 2]]), sep_id=2, cls_id=1)
        >>> merge_separator_attention([a, a]).share_sep.tolist()
        [[0.5]]
    """
    parts = list(parts)
    if not parts:
        raise NodeprobeError("merge_separator_attention: nothing to merge")
    shapes = {p.share.shape for p in parts}
    if len(shapes) != 1:
        raise NodeprobeError(f"merge_separator_attention: results of different models ({sorted(shapes)})")
    n = sum(p.n_queries for p in parts)
    w = [p.n_queries / n for p in parts]
    mix = lambda attr: sum(wi * getattr(p, attr) for wi, p in zip(w, parts))  # noqa: E731
    uniform_mass = sum(p.uniform_share * p.n_queries for p in parts)
    thr = parts[0].threshold if threshold is None else _check_threshold(threshold)
    return _finish_separators(mix("share_sep"), mix("share_cls"), mix("share_punct"), n, uniform_mass, thr,
                              parts[0].punct_ids)


# ---------------------------------------------------------------------------- segmentation
@dataclass(frozen=True, eq=False)
class Segmentation:
    """Segments of one text; positions index the token sequence (``[CLS]`` = 0).

    ``segments`` are half-open ``(start, end)`` position ranges covering the text tokens (real,
    non-special) from the first to the last; ``boundaries`` are the positions that end a segment
    by the rule (the last segment may end at the text end instead); ``received[p]`` is the
    attention position p receives from the chosen heads, in units of the uniform level.
    """

    boundaries: tuple[int, ...]
    segments: tuple[tuple[int, int], ...]
    received: np.ndarray
    heads: tuple[tuple[int, int], ...]
    min_ratio: float
    n_real: int

    @property
    def n_segments(self) -> int:
        return len(self.segments)

    def to_dict(self) -> dict:
        return asdict(self)


def segment_text(
    patterns,
    input_ids,
    heads: Sequence[tuple[int, int]],
    *,
    attention_mask=None,
    min_ratio: float = 3.0,
    special_ids: Sequence[int] = (),
) -> Segmentation:
    """Split one text at the positions that the chosen heads attend to (see the module docstring).

    Args:
        patterns: per block ``[1, H, Q, K]`` or ``[H, Q, K]`` attention patterns of this text.
        input_ids: ``[P]`` or ``[1, P]``.
        heads: ``(layer, head)`` pairs, e.g. ``SeparatorAttention.separator_heads``.
        min_ratio: a text position is a boundary when it receives at least this multiple of the
            uniform attention level (> 0).
        special_ids: ids never used as boundaries nor counted as text ([CLS], [SEP], [PAD] …).

    Example:
        >>> import torch
        >>> p = torch.zeros(1, 1, 6, 6); p[..., 3] = 1.0           # everyone looks at position 3
        >>> s = segment_text([p], torch.tensor([1, 5, 5, 9, 5, 2]), [(0, 0)], special_ids=(1, 2))
        >>> s.boundaries, s.segments
        ((3,), ((1, 4), (4, 5)))
    """
    if not (isinstance(min_ratio, (int, float)) and min_ratio > 0):
        raise NodeprobeError(f"min_ratio={min_ratio!r}: expected a positive number")
    ids, mask = _ids_mask(input_ids, attention_mask)
    if ids.shape[0] != 1:
        raise NodeprobeError(f"segment_text: one text at a time, got a batch of {ids.shape[0]}")
    ids, mask = ids[0], mask[0]
    P = ids.shape[0]
    blocks = _blocks(patterns, "patterns")
    heads = tuple((int(l), int(h)) for l, h in heads)
    if not heads:
        raise NodeprobeError("segment_text: no heads to segment with (no separator-focused head; "
                             "lower the threshold or name a head)")
    A = torch.zeros(P, P, dtype=torch.float64)
    for l, h in heads:
        if not 0 <= l < len(blocks):
            raise NodeprobeError(f"head ({l}, {h}): the patterns cover blocks 0–{len(blocks) - 1}")
        pat = _t(blocks[l], f"patterns[{l}]", (3, 4))
        if pat.dim() == 4:
            if pat.shape[0] != 1:
                raise NodeprobeError(f"patterns[{l}]: one text at a time, got a batch of {pat.shape[0]}")
            pat = pat[0]
        if pat.shape[1:] != (P, P):
            raise NodeprobeError(f"patterns[{l}] has shape {tuple(pat.shape)}; expected [H, {P}, {P}]")
        if not 0 <= h < pat.shape[0]:
            raise NodeprobeError(f"head ({l}, {h}): block {l} has heads 0–{pat.shape[0] - 1}")
        A += pat[h]
    A /= len(heads)
    n_real = int(mask.sum())
    if n_real == 0:
        raise NodeprobeError("segment_text: the text has no real tokens")
    received = (A[mask].mean(0) * n_real) * mask.to(torch.float64)
    text = mask & ~_isin(ids, special_ids)
    pos = torch.nonzero(text).flatten().tolist()
    is_b = (received >= min_ratio) & text
    boundaries, segments = [], []
    start = None
    for p in pos:
        if start is None:
            start = p
        if bool(is_b[p]):
            boundaries.append(p)
            segments.append((start, p + 1))
            start = None
    if start is not None:
        segments.append((start, pos[-1] + 1))
    return Segmentation(tuple(boundaries), tuple(segments), received.numpy(), heads, float(min_ratio), n_real)


# ---------------------------------------------------------------------------- context similarity
def similarity_matrix(vectors, keys=None, normalize: bool = False) -> np.ndarray:
    """``S[i, j] = v_i · v_j`` (or ``v_i · k_j``) for one head over one text: ``[P, Dh]`` → ``[P, P]``.

    Example:
        >>> similarity_matrix([[1.0, 0.0], [2.0, 1.0]]).tolist()
        [[1.0, 2.0], [2.0, 5.0]]
    """
    v = _t(vectors, "vectors", 2)
    k = v if keys is None else _t(keys, "keys", 2)
    if k.shape != v.shape:
        raise NodeprobeError(f"keys have shape {tuple(k.shape)} but vectors {tuple(v.shape)}")
    if normalize:
        v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        k = k / k.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (v @ k.T).numpy()


@dataclass(frozen=True, eq=False)
class HeadPairs:
    """The high-similarity pairs of one head, pooled over texts (arrays aligned by pair)."""

    layer: int
    head: int
    item: np.ndarray  # text index
    i: np.ndarray
    j: np.ndarray
    value: np.ndarray
    tok_i: np.ndarray
    tok_j: np.ndarray
    same_sentence: np.ndarray  # bool
    n_candidates: int  # candidate pairs considered, all texts

    @property
    def n_pairs(self) -> int:
        return int(self.value.size)

    @property
    def distance(self) -> np.ndarray:
        return np.abs(self.j - self.i)


@dataclass(frozen=True)
class PairStats:
    """Distance / sentence / repetition statistics of a set of pairs (NaN when there are none)."""

    n_pairs: int
    median_distance: float
    mean_distance: float
    long_range_share: float
    same_sentence_share: float
    repeated_share: float
    distance_counts: tuple[int, ...]  # histogram over DISTANCE_EDGES bins (last: ≥ the last edge)


@dataclass(frozen=True)
class HeadSummary:
    layer: int
    head: int
    stats: PairStats
    n_candidates: int
    min_value: float  # weakest kept pair (≈ the head's q-quantile)
    max_value: float
    top_token: int | None
    top_token_pairs: int  # pairs containing the top token


@dataclass(frozen=True)
class BlockSummary:
    layer: int
    stats: PairStats  # all heads' pairs pooled
    top_tokens: tuple[int | None, ...]  # per head
    uniqueness: float  # distinct top tokens / H


@dataclass(frozen=True, eq=False)
class SimilarityResult:
    """Context-similarity summary; ``pairs[l][h]`` holds the raw pairs (left out of JSON)."""

    site: str
    q: float
    long_range: int
    normalize: bool
    skip_special: bool
    n_items: int
    heads: list[list[HeadSummary]]
    blocks: list[BlockSummary]
    pairs: list[list[HeadPairs]] = field(repr=False)

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def n_heads(self) -> int:
        return len(self.heads[0]) if self.heads else 0

    def to_dict(self) -> dict:
        return {
            "site": self.site, "q": self.q, "long_range": self.long_range, "normalize": self.normalize,
            "skip_special": self.skip_special, "n_items": self.n_items,
            "distance_edges": list(DISTANCE_EDGES),
            "heads": [[asdict(h) for h in row] for row in self.heads],
            "blocks": [asdict(b) for b in self.blocks],
        }


def _hist(d: np.ndarray) -> tuple[int, ...]:
    idx = np.searchsorted(np.asarray(DISTANCE_EDGES), d, side="right")  # d in [e_{k-1}, e_k) → k
    return tuple(int(c) for c in np.bincount(idx, minlength=len(DISTANCE_EDGES) + 1)[1:])


def pair_stats(distance, same_sentence, repeated, long_range: int = 16) -> PairStats:
    """Summary of pairs given their token distances and same-sentence / repeated-token flags.

    Example:
        >>> s = pair_stats([1, 3, 20, 40], [True, True, False, False], [False, True, False, False])
        >>> s.median_distance, s.long_range_share, s.same_sentence_share, s.repeated_share
        (11.5, 0.5, 0.5, 0.25)
    """
    d = np.asarray(distance, dtype=np.int64).ravel()
    ss = np.asarray(same_sentence, dtype=bool).ravel()
    rp = np.asarray(repeated, dtype=bool).ravel()
    n = int(d.size)
    if not n:
        nan = float("nan")
        return PairStats(0, nan, nan, nan, nan, nan, _hist(d))
    return PairStats(
        n_pairs=n,
        median_distance=float(np.median(d)),
        mean_distance=float(d.mean()),
        long_range_share=float((d > long_range).mean()),
        same_sentence_share=float(ss.mean()),
        repeated_share=float(rp.mean()),
        distance_counts=_hist(d),
    )


def top_token(tok_i, tok_j) -> tuple[int | None, int]:
    """Most common token among pairs ``(tok_i[n], tok_j[n])`` (each pair counts a token once;
    ties → lowest id) and the number of pairs containing it; ``(None, 0)`` without pairs.

    Example:
        >>> top_token([5, 5, 7], [5, 9, 9])      # pairs (5,5) (5,9) (7,9): 5 and 9 in two pairs each
        (5, 2)
    """
    a = np.asarray(tok_i, dtype=np.int64).ravel()
    b = np.asarray(tok_j, dtype=np.int64).ravel()
    if not a.size:
        return None, 0
    toks = np.concatenate([a, b[b != a]])
    counts = np.bincount(toks)
    t = int(np.argmax(counts))
    return t, int(counts[t])


def head_uniqueness(top_tokens: Sequence[int | None], n_heads: int | None = None) -> float:
    """Distinct top tokens over the heads of a block / H (heads without pairs add no token).

    Example:
        >>> head_uniqueness([5, 5, 7, 9])
        0.75
    """
    H = len(top_tokens) if n_heads is None else n_heads
    if H < 1:
        raise NodeprobeError("head_uniqueness: no heads")
    return len({t for t in top_tokens if t is not None}) / H


def _check_q(q: float) -> float:
    if not (isinstance(q, (int, float)) and 0.0 <= q < 1.0):
        raise NodeprobeError(f"q={q!r}: the quantile must lie in [0, 1)")
    return float(q)


def _n_top(q: float, n: int) -> int:
    if n <= 0:
        return 0
    return min(n, max(1, math.ceil((1.0 - q) * n - 1e-9)))


def _summaries(pairs: list[list[HeadPairs]], long_range: int):
    heads, blocks = [], []
    for row in pairs:
        hrow = []
        for hp in row:
            rep = hp.tok_i == hp.tok_j
            t, tc = top_token(hp.tok_i, hp.tok_j)
            hrow.append(HeadSummary(
                layer=hp.layer, head=hp.head,
                stats=pair_stats(hp.distance, hp.same_sentence, rep, long_range),
                n_candidates=hp.n_candidates,
                min_value=float(hp.value.min()) if hp.n_pairs else float("nan"),
                max_value=float(hp.value.max()) if hp.n_pairs else float("nan"),
                top_token=t, top_token_pairs=tc,
            ))
        heads.append(hrow)
        d = np.concatenate([hp.distance for hp in row])
        ss = np.concatenate([hp.same_sentence for hp in row])
        rp = np.concatenate([hp.tok_i == hp.tok_j for hp in row])
        tops = tuple(h.top_token for h in hrow)
        blocks.append(BlockSummary(layer=row[0].layer, stats=pair_stats(d, ss, rp, long_range),
                                   top_tokens=tops, uniqueness=head_uniqueness(tops)))
    return heads, blocks


def sentence_ids(input_ids, ender_ids: Sequence[int]) -> torch.Tensor:
    """Sentence index of every position: the number of ender tokens strictly before it (an ender
    belongs to the sentence it ends).  ``[B, P]`` → ``[B, P]``.

    Example:
        >>> sentence_ids([[1, 5, 9, 5, 9, 2]], ender_ids=[9]).tolist()
        [[0, 0, 0, 1, 1, 2]]
    """
    ids, _ = _ids_mask(input_ids, None)
    e = _isin(ids, ender_ids).long()
    return torch.cumsum(e, dim=1) - e


def context_similarity(
    vectors,
    input_ids,
    attention_mask=None,
    *,
    keys=None,
    ender_ids: Sequence[int] = (),
    special_ids: Sequence[int] = (),
    q: float = 0.99,
    long_range: int = 16,
    normalize: bool = False,
    skip_special: bool = True,
    site: str = "z",
) -> SimilarityResult:
    """High-similarity token pairs of every head and their distance / sentence / repetition stats.

    Args:
        vectors: one ``[B, P, H, Dh]`` tensor per block (``hook_z`` by default; ``hook_q`` …).
        input_ids, attention_mask: ``[B, P]``.
        keys: optional second set of vectors (``hook_k``) for ``S = q · kᵀ`` (ordered pairs).
        ender_ids: ids that end a sentence (``.``, ``!``, ``?``, [SEP]) for the same-sentence share.
        special_ids: ids left out of the candidate pairs when ``skip_special`` ([CLS], [SEP], [PAD]).
        q: quantile; a head keeps its top ``⌈(1 − q)·n⌉`` of the n candidate pairs of each text.
        long_range: pairs farther apart than this many tokens count as long-range.
        normalize: cosine instead of raw scalar products.
        site: a label stored with the result (``z``, ``q``, ``k``, ``v`` or ``qk``).

    Example:
        >>> import torch
        >>> z = torch.zeros(1, 4, 1, 2)
        >>> z[0, 0, 0] = torch.tensor([1.0, 0.0]); z[0, 3, 0] = torch.tensor([1.0, 0.0])
        >>> r = context_similarity([z], torch.tensor([[5, 6, 7, 5]]), q=0.9)   # top 1 of 6 pairs
        >>> p = r.pairs[0][0]; (int(p.i[0]), int(p.j[0]), float(p.value[0]))
        (0, 3, 1.0)
        >>> r.blocks[0].stats.repeated_share, r.heads[0][0].top_token
        (1.0, 5)
    """
    q = _check_q(q)
    if site not in VECTOR_SITES:
        raise NodeprobeError(f"site={site!r}: expected one of {', '.join(VECTOR_SITES)}")
    if isinstance(long_range, bool) or not isinstance(long_range, (int, np.integer)) or long_range < 0:
        raise NodeprobeError(f"long_range={long_range!r}: expected a non-negative integer")
    ids, mask = _ids_mask(input_ids, attention_mask)
    B, P = ids.shape
    blocks = _blocks(vectors, "vectors")
    kblocks = _blocks(keys, "keys") if keys is not None else None
    if kblocks is not None and len(kblocks) != len(blocks):
        raise NodeprobeError(f"keys cover {len(kblocks)} blocks but vectors {len(blocks)}")
    symmetric = kblocks is None
    valid = mask & ~_isin(ids, special_ids) if skip_special else mask
    sent = sentence_ids(ids, ender_ids)
    cand_base = torch.ones(P, P, dtype=torch.bool)
    cand_base = torch.triu(cand_base, diagonal=1) if symmetric else ~torch.eye(P, dtype=torch.bool)
    cand = valid[:, :, None] & valid[:, None, :] & cand_base  # [B, P, P]
    n_cand = cand.flatten(1).sum(1)  # [B]
    k_top = [_n_top(q, int(n)) for n in n_cand]
    pairs: list[list[HeadPairs]] = []
    H = None
    for l, vec in enumerate(blocks):
        V = _t(vec, f"vectors[{l}]", 4)
        if V.shape[0] != B or V.shape[1] != P:
            raise NodeprobeError(f"vectors[{l}] has shape {tuple(V.shape)}; expected [{B}, {P}, H, Dh]")
        if H is None:
            H = V.shape[2]
        elif V.shape[2] != H:
            raise NodeprobeError(f"vectors[{l}] has {V.shape[2]} heads, block 0 has {H}")
        K = V if symmetric else _t(kblocks[l], f"keys[{l}]", 4)
        if K.shape != V.shape:
            raise NodeprobeError(f"keys[{l}] has shape {tuple(K.shape)} but vectors[{l}] {tuple(V.shape)}")
        if normalize:
            V = V / V.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            K = V if symmetric else K / K.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        acc = [{"item": [], "i": [], "j": [], "value": []} for _ in range(H)]
        for b in range(B):
            k = k_top[b]
            if k == 0:
                continue
            S = torch.einsum("phd,qhd->hpq", V[b], K[b])  # [H, P, P]
            flat_idx = torch.nonzero(cand[b].flatten()).flatten()  # row-major candidate order
            vals = S.flatten(1)[:, flat_idx]  # [H, n]
            order = torch.sort(vals, dim=1, descending=True, stable=True).indices[:, :k]
            for h in range(H):
                sel = flat_idx[order[h]]
                acc[h]["item"].append(np.full(k, b, dtype=np.int64))
                acc[h]["i"].append((sel // P).numpy())
                acc[h]["j"].append((sel % P).numpy())
                acc[h]["value"].append(vals[h, order[h]].numpy())
        row = []
        for h in range(H):
            cat = {key: (np.concatenate(v) if v else np.zeros(0, dtype=np.float64 if key == "value" else np.int64))
                   for key, v in acc[h].items()}
            it, ii, jj = cat["item"], cat["i"], cat["j"]
            idsn, sentn = ids.numpy(), sent.numpy()
            row.append(HeadPairs(
                layer=l, head=h, item=it, i=ii, j=jj, value=cat["value"],
                tok_i=idsn[it, ii], tok_j=idsn[it, jj], same_sentence=sentn[it, ii] == sentn[it, jj],
                n_candidates=int(n_cand.sum()),
            ))
        pairs.append(row)
    heads, bsum = _summaries(pairs, int(long_range))
    return SimilarityResult(site=site, q=q, long_range=int(long_range), normalize=bool(normalize),
                            skip_special=bool(skip_special), n_items=B, heads=heads, blocks=bsum, pairs=pairs)


def merge_similarity(parts: Sequence[SimilarityResult]) -> SimilarityResult:
    """Pool the results of several batches of texts (item indices continue across parts).

    Example:
        >>> import torch
        >>> r = context_similarity([torch.randn(2, 5, 3, 4)], torch.randint(3, 9, (2, 5)))
        >>> m = merge_similarity([r, r])      # 3 heads × 4 texts × 1 pair (top 1% of 10 → 1)
        >>> m.n_items, m.blocks[0].stats.n_pairs
        (4, 12)
    """
    parts = list(parts)
    if not parts:
        raise NodeprobeError("merge_similarity: nothing to merge")
    p0 = parts[0]
    for p in parts[1:]:
        if (p.site, p.q, p.long_range, p.normalize, p.skip_special, p.n_layers, p.n_heads) != (
                p0.site, p0.q, p0.long_range, p0.normalize, p0.skip_special, p0.n_layers, p0.n_heads):
            raise NodeprobeError("merge_similarity: results with different settings or models")
    offsets = np.cumsum([0] + [p.n_items for p in parts[:-1]])
    pairs = []
    for l in range(p0.n_layers):
        row = []
        for h in range(p0.n_heads):
            hs = [p.pairs[l][h] for p in parts]
            cat = lambda a: np.concatenate([getattr(x, a) for x in hs])  # noqa: E731
            row.append(HeadPairs(
                layer=l, head=h, item=np.concatenate([x.item + o for x, o in zip(hs, offsets)]),
                i=cat("i"), j=cat("j"), value=cat("value"), tok_i=cat("tok_i"), tok_j=cat("tok_j"),
                same_sentence=cat("same_sentence"), n_candidates=sum(x.n_candidates for x in hs),
            ))
        pairs.append(row)
    heads, blocks = _summaries(pairs, p0.long_range)
    return SimilarityResult(site=p0.site, q=p0.q, long_range=p0.long_range, normalize=p0.normalize,
                            skip_special=p0.skip_special, n_items=sum(p.n_items for p in parts),
                            heads=heads, blocks=blocks, pairs=pairs)
