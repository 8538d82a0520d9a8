"""FewRel-format relation classification (METHODS §0).

A FewRel file is a JSON object ``{relation_id: [item, …]}`` where each item is
``{"tokens": [word, …], "h": [name, qid, [[word_idx, …], …]], "t": [name, qid, [[…], …]]}``
(``h`` = head entity, ``t`` = tail entity; each has one or more mention spans).

Split (deterministic, no shuffling): for every relation, in file order, the **first
``n_train`` (630) items → train, the next ``n_test`` (70) → test**; a relation with fewer than
``n_train + n_test`` items is an error. Labels are relation indices in file order; names come
from ``pid2name.json`` (``{pid: [name, description]}``), falling back to the id.

Input text: the words with the entities wrapped in markers that already exist in the vocab
(``[unused0] head [unused1]``, ``[unused2] tail [unused3]``; ``markers=False`` leaves them
out), encoded word by word to WordPiece (markers are single ids), then ``[CLS] … [SEP]``.
Only the **first mention span** of each entity is marked (as in the FewRel reference encoder);
a span is taken from its smallest to its largest word index.

Truncation to ``max_len`` (default 128) keeps the entities inside when possible: the body
(everything between [CLS] and [SEP]) keeps ``max_len − 2`` pieces; pieces are dropped from the
end first, and only if the last entity piece/marker would be cut is the window shifted right
just far enough to end on it. If the two entities together span more than ``max_len − 2``
pieces, the window starts at the first entity (its markers kept; the later ones may be lost).

Example:
    >>> tok = load_tokenizer("../shared/data/tokenizer/bert-base-uncased-vocab.txt")  # doctest: +SKIP
    >>> train, test = load_fewrel("../shared/data/fewrel/val_wiki.json", tok)        # doctest: +SKIP
    >>> len(train), len(test), train.n_classes                                      # doctest: +SKIP
    (10080, 1120, 16)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nodeprobe.data._io import PathLike, as_path, read_bytes, short
from nodeprobe.data.labeled import LabeledSet
from nodeprobe.data.tokenizer import MARKER_TOKENS, Tokenizer
from nodeprobe.errors import NodeprobeError

__all__ = ["read_fewrel", "read_pid2name", "load_fewrel", "encode_relation_item"]

Span = tuple[int, int]  # first and last word index (inclusive)


def _load_json(path: Path, what: str, allowed: str) -> Any:
    data = read_bytes(path, what)
    if not data.strip():
        raise NodeprobeError(f"{path}: {what} is empty; allowed: {allowed}")
    try:
        return json.loads(data)
    except UnicodeDecodeError as e:
        raise NodeprobeError(f"{path}: {what} is not UTF-8 ({e.reason}); allowed: {allowed} in UTF-8") from e
    except json.JSONDecodeError as e:
        raise NodeprobeError(
            f"{path}: {what} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
            f"allowed: {allowed}"
        ) from e
    except (ValueError, RecursionError) as e:
        raise NodeprobeError(
            f"{path}: {what} is not valid JSON ({type(e).__name__}); allowed: {allowed}"
        ) from e


_FEWREL_SHAPE = 'a JSON object {relation_id: [{"tokens", "h", "t"}, …]}'
_PID2NAME_SHAPE = "a JSON object {pid: [name, description]}"


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_item(path: Path, rel: str, idx: int, item: Any) -> None:
    where = f"{path}: relation {rel!r} item {idx}"
    if not isinstance(item, dict):
        raise NodeprobeError(
            f"{where} is {type(item).__name__} {short(item, 40)}; allowed: an object with "
            "'tokens', 'h', 't'"
        )
    for key in ("tokens", "h", "t"):
        if key not in item:
            raise NodeprobeError(f"{where} lacks key {key!r}; allowed: an object with 'tokens', 'h', 't'")
    tokens = item["tokens"]
    if not isinstance(tokens, list) or not tokens or not all(isinstance(w, str) for w in tokens):
        raise NodeprobeError(
            f"{where}: 'tokens' is {short(tokens, 40)}; allowed: a non-empty list of strings"
        )
    n = len(tokens)
    for key in ("h", "t"):
        ent = item[key]
        if not isinstance(ent, list) or len(ent) < 3 or not isinstance(ent[2], list) or not ent[2]:
            raise NodeprobeError(
                f"{where}: {key!r} is {short(ent, 40)}; allowed: [name, id, [[word index, …], …]]"
            )
        for span in ent[2]:
            if not isinstance(span, list) or not span or not all(_is_int(i) for i in span):
                raise NodeprobeError(
                    f"{where}: {key!r} span {short(span, 40)}; allowed: a non-empty list of word indices"
                )
            for i in span:
                if not 0 <= i < n:
                    raise NodeprobeError(
                        f"{where}: {key!r} word index {i} out of range for {n} tokens "
                        f"(allowed 0–{n - 1})"
                    )


def read_fewrel(path: PathLike) -> dict[str, list[dict]]:
    """Read and validate a FewRel-format JSON file; returns ``{relation_id: [item, …]}``.

    Bad JSON, a non-object top level, no relations, a missing key, or a word index out of range
    raises :class:`NodeprobeError` naming the file and the item (relation id + index).

    Example:
        >>> rels = read_fewrel("../shared/data/fewrel/val_wiki.json")  # doctest: +SKIP
        >>> len(rels), len(rels["P177"])                              # doctest: +SKIP
        (16, 700)
    """
    p = as_path(path, "FewRel file")
    data = _load_json(p, "FewRel file", _FEWREL_SHAPE)
    if not isinstance(data, dict):
        raise NodeprobeError(
            f"{p}: FewRel top level is {type(data).__name__}; allowed: an object "
            "{relation_id: [items]}"
        )
    if not data:
        raise NodeprobeError(f"{p}: FewRel file has no relations; allowed: ≥ 1 relation")
    for rel, items in data.items():
        if not isinstance(items, list):
            raise NodeprobeError(
                f"{p}: relation {rel!r} is {type(items).__name__}; allowed: a list of items"
            )
        for idx, item in enumerate(items):
            _check_item(p, rel, idx, item)
    return data


def read_pid2name(path: PathLike) -> dict[str, str]:
    """Relation id → name from a FewRel ``pid2name.json`` (``{pid: [name, description]}``).

    Example:
        >>> read_pid2name("../shared/data/fewrel/pid2name.json")["P177"]  # doctest: +SKIP
        'crosses'
    """
    p = as_path(path, "pid2name file")
    data = _load_json(p, "pid2name file", _PID2NAME_SHAPE)
    if not isinstance(data, dict):
        raise NodeprobeError(
            f"{p}: pid2name top level is {type(data).__name__}; allowed: an object {{pid: [name, description]}}"
        )
    out: dict[str, str] = {}
    for pid, value in data.items():
        if isinstance(value, str):
            out[pid] = value
        elif isinstance(value, list) and value and isinstance(value[0], str):
            out[pid] = value[0]
        else:
            raise NodeprobeError(
                f"{p}: pid2name entry {pid!r} is {short(value, 40)}; allowed: [name, description]"
            )
    return out


def _span(ent: list) -> Span:
    first = ent[2][0]
    return min(first), max(first)


def encode_relation_item(
    pieces_per_word: Sequence[Sequence[int]],
    head: Span,
    tail: Span,
    *,
    cls_id: int,
    sep_id: int,
    marker_ids: Sequence[int] | None,
    max_len: int = 128,
) -> list[int]:
    """Assemble ``[CLS] … [SEP]`` from per-word pieces, with optional entity markers.

    ``marker_ids`` = (head start, head end, tail start, tail end) or ``None`` for no markers.
    Truncation keeps the entities inside when possible (see the module docstring).
    Returns ``Int[list, "n"]`` with ``n ≤ max_len``.

    Example:
        >>> encode_relation_item([[7], [8, 9], [10]], (1, 1), (2, 2), cls_id=101, sep_id=102,
        ...                      marker_ids=(1, 2, 3, 4))
        [101, 7, 1, 8, 9, 2, 3, 10, 4, 102]
        >>> encode_relation_item([[7], [8, 9], [10]], (1, 1), (2, 2), cls_id=101, sep_id=102,
        ...                      marker_ids=(1, 2, 3, 4), max_len=9)  # word 0 dropped
        [101, 1, 8, 9, 2, 3, 10, 4, 102]
    """
    if max_len < 2:
        raise NodeprobeError(f"max_len={max_len}: must be ≥ 2 (room for [CLS] and [SEP])")
    (hs, he), (ts, te) = head, tail
    body: list[int] = []
    ent_pos: list[int] = []  # body positions of markers / entity pieces
    for w, pcs in enumerate(pieces_per_word):
        if marker_ids is not None:
            if w == hs:
                ent_pos.append(len(body))
                body.append(marker_ids[0])
            if w == ts:
                ent_pos.append(len(body))
                body.append(marker_ids[2])
        if hs <= w <= he or ts <= w <= te:
            ent_pos.extend(range(len(body), len(body) + len(pcs)))
        body.extend(pcs)
        if marker_ids is not None:
            if w == te:
                ent_pos.append(len(body))
                body.append(marker_ids[3])
            if w == he:
                ent_pos.append(len(body))
                body.append(marker_ids[1])
    budget = max_len - 2
    if len(body) > budget:
        start = 0
        if ent_pos:
            lo, hi = min(ent_pos), max(ent_pos)
            start = max(0, hi + 1 - budget) if hi - lo + 1 <= budget else lo
        body = body[start : start + budget]
    return [cls_id, *body, sep_id]


def _check_counts(n_train: Any, n_test: Any) -> None:
    for name, v in (("n_train", n_train), ("n_test", n_test)):
        if not _is_int(v) or v < 0:
            raise NodeprobeError(f"{name}={v!r}: allowed: an integer ≥ 0")
    if n_train + n_test < 1:
        raise NodeprobeError("n_train=0, n_test=0: allowed: at least one item per relation")


def load_fewrel(
    path: PathLike,
    tokenizer: Tokenizer,
    *,
    pid2name: PathLike | None | str = "auto",
    n_train: int = 630,
    n_test: int = 70,
    markers: bool = True,
    max_len: int = 128,
) -> tuple[LabeledSet, LabeledSet]:
    """Load a FewRel-format file as ``(train, test)`` :class:`LabeledSet` s.

    Args:
        path: FewRel JSON (``val_wiki.json``: 16 relations × 700; ``train_wiki.json``: 64).
        tokenizer: a :class:`~nodeprobe.data.Tokenizer`; markers need ``[unused0…3]`` in it.
        pid2name: ``"auto"`` (``pid2name.json`` next to ``path`` if present), a path, or
            ``None`` (names = relation ids). Ids missing from the file keep the id as name.
        n_train, n_test: items per relation: the first ``n_train`` (file order) → train, the
            next ``n_test`` → test. A relation with fewer items is an error.
        markers: wrap head/tail in ``[unused0] … [unused1]`` / ``[unused2] … [unused3]``.
        max_len: maximum sequence length including [CLS]/[SEP].

    Returns:
        ``(train, test)``; labels are relation indices in file order
        (``label_ids`` = relation ids, ``label_names`` = relation names).

    Example:
        >>> train, test = load_fewrel("../shared/data/fewrel/val_wiki.json", tok)  # doctest: +SKIP
        >>> train.label_names[:2], train.class_counts()[:2].tolist()              # doctest: +SKIP
        (['crosses', 'original language of film or TV show'], [630, 630])
    """
    _check_counts(n_train, n_test)
    if not _is_int(max_len) or max_len < 2:
        raise NodeprobeError(f"max_len={max_len!r}: allowed: an integer ≥ 2")
    p = as_path(path, "FewRel file")
    marker_ids = None
    if markers:
        marker_ids = tokenizer.marker_ids
        if marker_ids is None:
            raise NodeprobeError(
                f"{tokenizer.vocab_path}: vocab lacks the entity markers {', '.join(MARKER_TOKENS)}; "
                "allowed: a WordPiece vocab with them (BERT's), or your own table with `dataset` "
                "(library: markers=False)"
            )
    data = read_fewrel(p)
    names: dict[str, str] = {}
    if pid2name == "auto":
        cand = p.parent / "pid2name.json"
        if cand.is_file():
            names = read_pid2name(cand)
    elif pid2name is not None:
        names = read_pid2name(pid2name)

    need = n_train + n_test
    rel_ids = list(data)
    chosen: list[tuple[int, dict, bool]] = []  # (label, item, is_train)
    for label, rel in enumerate(rel_ids):
        items = data[rel]
        if len(items) < need:
            raise NodeprobeError(
                f"{p}: relation {rel!r} has {len(items)} items; n_train + n_test = {need} needed "
                "(allowed: n_train + n_test ≤ the smallest relation)"
            )
        chosen.extend((label, it, True) for it in items[:n_train])
        chosen.extend((label, it, False) for it in items[n_train:need])

    pieces = tokenizer.encode_words_batch([it["tokens"] for _, it, _ in chosen])
    sets: dict[bool, tuple[list[list[int]], list[int]]] = {True: ([], []), False: ([], [])}
    for (label, it, is_train), ppw in zip(chosen, pieces):
        ids = encode_relation_item(
            ppw,
            _span(it["h"]),
            _span(it["t"]),
            cls_id=tokenizer.cls_id,
            sep_id=tokenizer.sep_id,
            marker_ids=marker_ids,
            max_len=max_len,
        )
        sets[is_train][0].append(ids)
        sets[is_train][1].append(label)
    label_names = [names.get(r, r) for r in rel_ids]
    return tuple(  # type: ignore[return-value]
        LabeledSet(
            sets[flag][0],
            sets[flag][1],
            list(label_names),
            f"fewrel:{p}[{part}]",
            list(rel_ids),
        )
        for flag, part in ((True, "train"), (False, "test"))
    )
