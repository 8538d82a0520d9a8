"""Length-sorted dynamic padding, MLM collation and a streaming batch iterator.

:func:`make_batches` returns index lists. ``sort=True`` groups sequences of similar length
(stable sort by length) so that padding is small. Evaluation (``shuffle_seed=None``) keeps a
stable order: ascending length, ties in input order, batches in that order. Training
(``shuffle_seed`` given; pass e.g. ``seed + epoch``) first permutes the indices with the seed, so
ties (most chunks are exactly ``max_len`` long) form different batches every epoch, then sorts by
length, cuts batches, and shuffles the batch order.

:func:`iter_batches` does the same over an iterable in buffers of ``buffer_batches × batch_size``
sequences, never holding more than one buffer (sets larger than RAM).

Example:
    >>> seqs = [[101, 5, 102], [101, 102], [101, 5, 6, 7, 102], [101, 5, 6, 102]]
    >>> make_batches(seqs, 2)
    [[1, 0], [3, 2]]
    >>> b = collate([seqs[i] for i in [1, 0]], pad_id=0)
    >>> b["input_ids"].tolist(), b["attention_mask"].tolist()
    ([[101, 102, 0], [101, 5, 102]], [[1, 1, 0], [1, 1, 1]])
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from nodeprobe.data.masking import MLMMasker
from nodeprobe.errors import NodeprobeError

if TYPE_CHECKING:
    import torch

__all__ = ["make_batches", "collate", "collate_mlm", "iter_batches"]


def _check_bs(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise NodeprobeError(f"batch_size={batch_size!r}: allowed: an integer ≥ 1")


def make_batches(
    seqs: Sequence[Sequence[int]] | Sequence[int] | np.ndarray,
    batch_size: int,
    shuffle_seed: int | Sequence[int] | None = None,
    sort: bool = True,
) -> list[list[int]]:
    """Index lists of batches (every index exactly once; the last batch may be smaller).

    Args:
        seqs: the sequences, or their lengths (``Int[array, "N"]``).
        batch_size: sequences per batch.
        shuffle_seed: ``None`` → deterministic evaluation order; an int → training order (ties
            permuted and batch order shuffled with that seed).
        sort: group by length (``False``: input order, or a seeded permutation).

    Example:
        >>> make_batches([3, 1, 2, 5], 2)
        [[1, 2], [0, 3]]
        >>> sorted(i for b in make_batches([3, 1, 2, 5], 2, shuffle_seed=0) for i in b)
        [0, 1, 2, 3]
    """
    _check_bs(batch_size)
    lengths = np.fromiter(
        (int(x) if isinstance(x, (int, np.integer)) else len(x) for x in seqs), dtype=np.int64
    )
    n = len(lengths)
    rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
    order = rng.permutation(n) if rng is not None else np.arange(n)
    if sort:
        order = order[np.argsort(lengths[order], kind="stable")]
    batches = [order[i : i + batch_size].tolist() for i in range(0, n, batch_size)]
    if rng is not None and sort:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def segment_ids(input_ids, attention_mask, sep_id: int | None):
    """Token types of padded pairs ``cls a sep b sep``: 1 strictly after the first ``sep_id`` of a
    row, at real tokens (HF's BERT pair layout), else 0; all zeros for ``sep_id=None``.

    Example:
        >>> import torch
        >>> segment_ids(torch.tensor([[2, 5, 3, 6, 3, 0]]), torch.tensor([[1, 1, 1, 1, 1, 0]]), 3).tolist()
        [[0, 0, 0, 1, 1, 0]]
    """
    import torch

    if sep_id is None:
        return torch.zeros_like(input_ids)
    is_sep = (input_ids == sep_id).long()
    after = (torch.cumsum(is_sep, dim=1) - is_sep) > 0
    return (after & attention_mask.bool()).long()


def collate(
    seqs: Sequence[Sequence[int] | np.ndarray],
    pad_id: int,
    *,
    labels: Sequence[int] | None = None,
    max_len: int | None = None,
) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest sequence (right padding).

    Returns ``input_ids``, ``attention_mask`` (1 = real token) and ``token_type_ids`` (zeros),
    each ``Int64[torch.Tensor, "batch pos"]``; plus ``labels`` ``[batch]`` if given.
    ``max_len`` cuts longer sequences (keeping the start).

    Example:
        >>> collate([[101, 7, 102], [101, 102]], pad_id=0, labels=[3, 1])["labels"].tolist()
        [3, 1]
    """
    import torch  # lazily: the loaders and tokenizer work without importing torch

    if len(seqs) == 0:
        raise NodeprobeError("collate: empty batch; allowed: ≥ 1 sequence")
    rows = [np.asarray(s, dtype=np.int64).reshape(-1)[: max_len] for s in seqs]
    width = max(1, max(len(r) for r in rows))
    ids = np.full((len(rows), width), int(pad_id), dtype=np.int64)
    att = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        att[i, : len(r)] = 1
    out = {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(att),
        "token_type_ids": torch.zeros((len(rows), width), dtype=torch.long),
    }
    if labels is not None:
        if len(labels) != len(rows):
            raise NodeprobeError(f"collate: {len(labels)} labels for {len(rows)} sequences; allowed: one each")
        out["labels"] = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    return out


def collate_mlm(
    seqs: Sequence[Sequence[int] | np.ndarray],
    pad_id: int,
    masker: MLMMasker,
    *,
    rng: np.random.Generator | None = None,
    seed: int | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`collate` after MLM masking (training: ``rng``; evaluation: ``seed``).

    Adds ``positions`` ``Int64[torch.Tensor, "m 2"]`` (rows ``(batch_idx, pos)`` of the
    modified positions, in row-major order) and ``targets`` ``Int64[torch.Tensor, "m"]`` (the
    original ids there); ``input_ids`` holds the masked ids.

    Example:
        >>> m = MLMMasker(frozenset({0, 101, 102, 103}), vocab_size=200, mask_id=103)
        >>> b = collate_mlm([[101, 5, 6, 102], [101, 7, 102]], 0, m, seed=0)
        >>> b["positions"].shape[1], b["targets"].shape == b["positions"].shape[:1]
        (2, True)
    """
    import torch

    results = masker.batch(seqs, rng=rng, seed=seed)
    out = collate([r.input_ids for r in results], pad_id)
    pos = [np.stack([np.full(len(r.positions), i), r.positions], axis=1) for i, r in enumerate(results)]
    out["positions"] = torch.from_numpy(np.concatenate(pos).astype(np.int64).reshape(-1, 2))
    out["targets"] = torch.from_numpy(np.concatenate([r.targets for r in results]).astype(np.int64))
    return out


def iter_batches(
    seqs: Iterable[Sequence[int]],
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    sort: bool = True,
    buffer_batches: int = 100,
) -> Iterator[tuple[list[int], list[Sequence[int]]]]:
    """Stream ``(indices, batch)`` from an iterable, holding one buffer of
    ``buffer_batches × batch_size`` sequences at a time; ``indices`` are positions in the
    stream. Within each buffer batches are formed as in :func:`make_batches` (buffer ``j``
    uses seed ``(shuffle_seed, j)``).

    Example:
        >>> gen = ([101] * n + [102] for n in (3, 1, 2, 5))
        >>> [idx for idx, _ in iter_batches(gen, 2, buffer_batches=1)]
        [[1, 0], [2, 3]]
    """
    _check_bs(batch_size)
    if isinstance(buffer_batches, bool) or not isinstance(buffer_batches, int) or buffer_batches < 1:
        raise NodeprobeError(f"buffer_batches={buffer_batches!r}: allowed: an integer ≥ 1")
    cap = batch_size * buffer_batches
    buf: list[Sequence[int]] = []
    start = 0
    j = 0

    def emit() -> Iterator[tuple[list[int], list[Sequence[int]]]]:
        seed = None if shuffle_seed is None else [int(shuffle_seed), j]
        for b in make_batches(buf, batch_size, shuffle_seed=seed, sort=sort):  # type: ignore[arg-type]
            yield [start + i for i in b], [buf[i] for i in b]

    for s in seqs:
        buf.append(s)
        if len(buf) >= cap:
            yield from emit()
            start += len(buf)
            j += 1
            buf = []
    if buf:
        yield from emit()
