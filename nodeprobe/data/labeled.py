"""The classification data container shared by the FewRel and DBpedia loaders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from nodeprobe.errors import NodeprobeError

__all__ = ["LabeledSet"]


@dataclass
class LabeledSet:
    """Encoded sentences with integer labels ``0 … K−1``.

    Every ``input_ids[i]`` already starts with [CLS] and ends with [SEP] and is at most the
    ``max_len`` it was built with; pad with :func:`nodeprobe.data.collate`.

    Attributes:
        input_ids: ``list[Int[list, "n_i"]]``, one WordPiece id list per item.
        labels: ``Int[list, "N"]``, label index per item.
        label_names: ``K`` names (FewRel: relation names; DBpedia: meta.txt class names).
        source: where the items came from, e.g. ``"fewrel:/…/val_wiki.json[train]"``.
        label_ids: original label keys per class (FewRel property ids such as ``"P177"``,
            DBpedia ``"1"`` … ``"14"``); empty if not applicable.
        segment_sep: for sentence pairs of a model with token types (BERT, ELECTRA): the separator
            id after whose first occurrence the second segment (token type 1) begins; ``None``:
            every token is type 0 (one text, or RoBERTa-style pairs).

    Example:
        >>> s = LabeledSet([[101, 7592, 102], [101, 102]], [1, 0], ["neg", "pos"], "demo")
        >>> len(s), s.n_classes, s.class_counts().tolist()
        (2, 2, [1, 1])
    """

    input_ids: list[list[int]]
    labels: list[int]
    label_names: list[str]
    source: str
    label_ids: list[str] = field(default_factory=list)
    segment_sep: int | None = None

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.labels):
            raise NodeprobeError(
                f"{self.source}: {len(self.input_ids)} inputs but {len(self.labels)} labels; "
                "allowed: one label per input"
            )
        k = len(self.label_names)
        bad = [y for y in self.labels if not 0 <= y < k]
        if bad:
            raise NodeprobeError(
                f"{self.source}: label {bad[0]} outside 0–{k - 1} ({k} label names)"
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_classes(self) -> int:
        """``K``, the number of label names."""
        return len(self.label_names)

    def class_counts(self) -> np.ndarray:
        """``Int[np.ndarray, "K"]``: items per class (``N_k``)."""
        return np.bincount(np.asarray(self.labels, dtype=np.int64), minlength=self.n_classes)

    def lengths(self) -> np.ndarray:
        """``Int[np.ndarray, "N"]``: token count of each item (with [CLS]/[SEP])."""
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self))

    def subset(self, indices: Sequence[int], source: str | None = None) -> LabeledSet:
        """The items at ``indices`` (same label names).

        Example:
            >>> LabeledSet([[1], [2], [3]], [0, 1, 0], ["a", "b"], "demo").subset([2]).input_ids
            [[3]]
        """
        return replace(self, input_ids=[self.input_ids[i] for i in indices],
                       labels=[self.labels[i] for i in indices], label_names=list(self.label_names),
                       source=source if source is not None else self.source, label_ids=list(self.label_ids))
