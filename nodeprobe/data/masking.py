"""MLM masking (METHODS §0, §4).

Of the ``n`` non-special positions of a sequence, exactly ``k = max(1, ⌊rate·n + ½⌋)`` (round
half up; 0 if ``n = 0``) are *modified*, chosen uniformly without replacement. Each modified
position independently becomes [MASK] with probability 0.8, a uniformly random non-special token
with probability 0.1 (it may equal the original, as in BERT), and stays unchanged with
probability 0.1. Loss and APT are computed on the modified positions only; ``targets`` are the
original ids there.

Training draws from a ``numpy.random.Generator`` per step (:func:`step_rng`). Evaluation masks
are a function of (token ids, seed) only (:func:`eval_mask`): the generator is seeded from a
blake2b hash of the ids' bytes and the seed — never Python's salted ``hash()`` — so the same text
gets the same mask in every process, order and batch composition.

Example:
    >>> import numpy as np
    >>> ids = [101, 7, 8, 9, 10, 11, 12, 13, 102]
    >>> masked, pos, tgt = eval_mask(ids, 0, special_ids={0, 100, 101, 102, 103},
    ...                              vocab_size=200, mask_id=103)
    >>> len(pos), bool(np.all(np.asarray(ids)[pos] == tgt))
    (1, True)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from nodeprobe.errors import NodeprobeError

__all__ = [
    "MaskResult",
    "MLMMasker",
    "mlm_mask",
    "eval_mask",
    "eval_rng",
    "step_rng",
    "n_to_modify",
    "P_MASK",
    "P_RANDOM",
]

P_MASK = 0.8
P_RANDOM = 0.1  # the remaining 0.1 stay unchanged


class MaskResult(NamedTuple):
    """``(input_ids, positions, targets)`` of one masked sequence.

    input_ids: ``Int[np.ndarray, "n"]`` after masking; positions: ``Int[np.ndarray, "m"]``
    (sorted) modified positions; targets: ``Int[np.ndarray, "m"]`` original ids there.
    """

    input_ids: np.ndarray
    positions: np.ndarray
    targets: np.ndarray


def n_to_modify(n: int, rate: float = 0.15) -> int:
    """``max(1, ⌊rate·n + ½⌋)`` for ``n > 0`` non-special positions, else 0.

    Example:
        >>> [n_to_modify(n) for n in (0, 1, 3, 10, 126)]
        [0, 1, 1, 2, 19]
    """
    if n <= 0:
        return 0
    return min(n, max(1, int(np.floor(rate * n + 0.5))))


def _check(special_ids: Iterable[int], vocab_size: int, rate: float, mask_id: int) -> np.ndarray:
    if not (isinstance(rate, (int, float)) and 0.0 < rate <= 1.0):
        raise NodeprobeError(f"rate={rate!r}: allowed: a number in (0, 1]")
    specials = np.unique(np.fromiter((int(s) for s in special_ids), dtype=np.int64))
    specials = specials[(specials >= 0) & (specials < vocab_size)]
    if vocab_size - len(specials) < 1:
        raise NodeprobeError(
            f"vocab_size={vocab_size}: no non-special token left to draw; allowed: > {len(specials)}"
        )
    if not 0 <= int(mask_id) < vocab_size:
        raise NodeprobeError(f"mask_id={mask_id}: outside the vocab (allowed 0–{vocab_size - 1})")
    return specials


def _random_non_special(rng: np.random.Generator, specials: np.ndarray, vocab_size: int, size: int) -> np.ndarray:
    """Uniform draws from ``[0, vocab_size) \\ specials`` (``specials`` sorted, unique, in range)."""
    r = rng.integers(0, vocab_size - len(specials), size=size, dtype=np.int64)
    # map rank r among non-specials to the id: skip every special ≤ the result
    return r + np.searchsorted(specials - np.arange(len(specials)), r, side="right")


def mlm_mask(
    input_ids: Sequence[int] | np.ndarray,
    special_ids: Iterable[int],
    vocab_size: int,
    rng: np.random.Generator,
    rate: float = 0.15,
    *,
    mask_id: int,
) -> MaskResult:
    """Mask one sequence: modify exactly ``max(1, round(rate·n))`` of its ``n`` non-special
    positions (80 % → ``mask_id``, 10 % → random non-special token, 10 % unchanged).

    Args:
        input_ids: ``Int[array, "seq"]``, one sequence (with its [CLS]/[SEP]/[PAD]).
        special_ids: ids never modified and never drawn as random replacements.
        vocab_size: ``V``; random replacements are drawn from ``[0, V) \\ special_ids``.
        rng: ``numpy.random.Generator`` (e.g. :func:`step_rng`).
        rate: fraction of non-special positions to modify.
        mask_id: the [MASK] id (set explicitly; 103 for bert-base-uncased).

    Returns:
        :class:`MaskResult` ``(masked_ids [seq], positions [m], targets [m])``.

    Example:
        >>> import numpy as np
        >>> r = mlm_mask([101, 5, 6, 7, 102], {0, 101, 102, 103}, 200, np.random.default_rng(0),
        ...              mask_id=103)
        >>> r.positions.shape, int(r.targets[0]) in (5, 6, 7)
        ((1,), True)
    """
    specials = _check(special_ids, vocab_size, rate, mask_id)
    ids = np.asarray(input_ids, dtype=np.int64).reshape(-1)
    candidates = np.flatnonzero(~np.isin(ids, specials))
    k = n_to_modify(len(candidates), rate)
    positions = np.sort(rng.choice(candidates, size=k, replace=False)) if k else candidates[:0]
    u = rng.random(k)
    random_tok = _random_non_special(rng, specials, vocab_size, k)
    masked = ids.copy()
    targets = ids[positions].copy()
    new = np.where(u < P_MASK, int(mask_id), np.where(u < P_MASK + P_RANDOM, random_tok, targets))
    masked[positions] = new
    return MaskResult(masked, positions.astype(np.int64), targets)


def eval_rng(input_ids: Sequence[int] | np.ndarray, seed: int) -> np.random.Generator:
    """The generator for (ids, seed): seeded from blake2b(ids as int64 LE bytes ‖ seed).

    Example:
        >>> int(eval_rng([1, 2, 3], 0).integers(1 << 30)) == int(eval_rng([1, 2, 3], 0).integers(1 << 30))
        True
    """
    h = hashlib.blake2b(digest_size=16, person=b"nodeprobe-mask")
    h.update(np.ascontiguousarray(np.asarray(input_ids, dtype="<i8").reshape(-1)).tobytes())
    h.update(b"|seed=" + str(int(seed)).encode())
    return np.random.default_rng(int.from_bytes(h.digest(), "little"))


def eval_mask(
    input_ids: Sequence[int] | np.ndarray,
    seed: int,
    *,
    special_ids: Iterable[int],
    vocab_size: int,
    mask_id: int,
    rate: float = 0.15,
) -> MaskResult:
    """Deterministic evaluation mask: a function of (``input_ids``, ``seed``) only.

    Same rules as :func:`mlm_mask` with the generator :func:`eval_rng` ``(input_ids, seed)``.

    Example:
        >>> kw = dict(special_ids={0, 101, 102, 103}, vocab_size=200, mask_id=103)
        >>> a = eval_mask(list(range(104, 150)), 1, **kw)
        >>> b = eval_mask(list(range(104, 150)), 1, **kw)
        >>> bool((a.input_ids == b.input_ids).all() and (a.positions == b.positions).all())
        True
    """
    return mlm_mask(
        input_ids, special_ids, vocab_size, eval_rng(input_ids, seed), rate, mask_id=mask_id
    )


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The training generator for optimisation step ``step`` of a run seeded ``seed``
    (independent streams via ``SeedSequence([seed, step])``; resumable at any step).

    Example:
        >>> step_rng(0, 5).random() == step_rng(0, 5).random() != step_rng(0, 6).random()
        True
    """
    return np.random.default_rng([int(seed), int(step)])


@dataclass(frozen=True)
class MLMMasker:
    """The masking settings of one model/vocab, bundled.

    Example:
        >>> m = MLMMasker(frozenset({0, 100, 101, 102, 103}), vocab_size=30522, mask_id=103)
        >>> out = m.batch([[101, 2000, 2001, 102], [101, 2002, 102]], seed=0)
        >>> [len(r.positions) for r in out]
        [1, 1]
    """

    special_ids: frozenset[int]
    vocab_size: int
    mask_id: int
    rate: float = 0.15

    def __post_init__(self) -> None:
        _check(self.special_ids, self.vocab_size, self.rate, self.mask_id)

    @classmethod
    def from_tokenizer(cls, tokenizer, rate: float = 0.15) -> MLMMasker:
        """Settings from a :class:`~nodeprobe.data.Tokenizer` (its five special ids).

        Example:
            >>> MLMMasker.from_tokenizer(tok).mask_id  # doctest: +SKIP
            103
        """
        return cls(frozenset(tokenizer.special_ids), tokenizer.vocab_size, tokenizer.mask_id, rate)

    def __call__(self, input_ids: Sequence[int] | np.ndarray, rng: np.random.Generator) -> MaskResult:
        """Training mask of one sequence with ``rng``."""
        return mlm_mask(input_ids, self.special_ids, self.vocab_size, rng, self.rate, mask_id=self.mask_id)

    def eval(self, input_ids: Sequence[int] | np.ndarray, seed: int) -> MaskResult:
        """Deterministic evaluation mask (:func:`eval_mask`)."""
        return eval_mask(
            input_ids, seed, special_ids=self.special_ids, vocab_size=self.vocab_size,
            mask_id=self.mask_id, rate=self.rate,
        )

    def batch(
        self,
        seqs: Sequence[Sequence[int]],
        *,
        rng: np.random.Generator | None = None,
        seed: int | None = None,
    ) -> list[MaskResult]:
        """Mask every sequence: training with ``rng`` (one generator for the step, consumed
        in order) or evaluation with ``seed`` (each sequence by :func:`eval_mask`)."""
        if (rng is None) == (seed is None):
            raise NodeprobeError("MLMMasker.batch: give exactly one of rng= (training) or seed= (evaluation)")
        if rng is not None:
            return [self(s, rng) for s in seqs]
        return [self.eval(s, seed) for s in seqs]  # type: ignore[arg-type]
