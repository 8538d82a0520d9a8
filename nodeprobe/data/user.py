"""Your own labelled data for classification, read with the ``datasets`` library.

:func:`read_table` reads one table: a CSV (``.csv``), TSV (``.tsv``/``.tab``), JSON Lines
(``.jsonl``/``.ndjson``/``.json``, one object per line; a top-level JSON array also works) or
Parquet (``.parquet``/``.pq``) file, or a folder written by ``datasets``'s ``save_to_disk`` (a
``Dataset``, or a ``DatasetDict`` whose ``split`` you pick). Files are read with the packaged
builders only (``load_dataset("csv" | "json" | "parquet", data_files=…)``), so nothing is looked
up on the Hub; they are built in a temporary cache folder and held in memory, so no stale cache
is ever reused and nothing global (environment, ``datasets`` config) is changed.

:func:`user_splits` turns such a table into the ``(train, test)``
:class:`~nodeprobe.data.labeled.LabeledSet` pair that the FewRel and DBpedia loaders produce:

* **Evaluation split**: ``test_path`` (a second table with the same columns), else
  ``test_split`` of the same ``DatasetDict``, else a seeded ``test_fraction`` of the rows,
  **stratified by label**: every class ``c`` with ``n_c`` rows gives ``⌊f·n_c⌋`` or ``⌈f·n_c⌉``
  rows to test (largest remainders first, so the test total is ``round(f·N)``), but always keeps
  at least one row in train; which rows is drawn with ``numpy.random.default_rng(seed)``, so a
  seed always gives the same split. Both splits keep file order.
* **Labels**: one column of integers or of strings (not both, no nulls, no floats or booleans).
  The classes are the distinct labels of the training split, sorted (strings by code point,
  integers numerically) and numbered ``0 … K−1``; ``label_names`` and ``label_ids`` are
  ``str(label)``. Integer labels ``0 … K−1`` therefore keep their values; gaps are closed
  (labels ``{1, 5, 7}`` → indices ``0, 1, 2``, names ``"1", "5", "7"``), so no class is empty.
  A test label the training split lacks is an error.
* **Text**: encoded with nodeprobe's WordPiece :class:`~nodeprobe.data.Tokenizer` and wrapped
  exactly like the built-in loaders: ``[CLS] text [SEP]``, at most ``max_len`` ids, the start
  kept. With ``text_pair_column``: ``[CLS] a [SEP] b [SEP]``, truncated longest-first (the
  longer side loses its last piece until the pair fits; on a tie the second side), as BERT
  tokenizers do. (:class:`LabeledSet` has no segment ids; the middle [SEP] marks the boundary.)

Note that CSV/TSV columns are typed by pandas: a label column of digits is read as integers,
and a text column of digits alone would be numbers (an error: text must be strings).

Every bad input (unknown extension, missing or unparsable file, missing column, no rows, one
class, a null or non-string text cell, a test label unseen in training) raises a one-line
:class:`~nodeprobe.errors.NodeprobeError` naming the path, the parameter and the bad value.

Example:
    >>> tok = load_tokenizer("../shared/data/tokenizer/bert-base-uncased-vocab.txt")    # doctest: +SKIP
    >>> train, test = user_splits("reviews.csv", tok, text_column="review",            # doctest: +SKIP
    ...                           label_column="stars", test_fraction=0.25, seed=1)
    >>> train.label_names, len(train), len(test)                                       # doctest: +SKIP
    (['1', '2', '3', '4', '5'], 750, 250)
    >>> train, test = user_splits("snli_disk", tok, text_column="premise",              # doctest: +SKIP
    ...                           text_pair_column="hypothesis", split="train", test_split="test")
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from nodeprobe.data._io import PathLike, as_path, short
from nodeprobe.data.labeled import LabeledSet
from nodeprobe.errors import NodeprobeError, reason

__all__ = ["read_table", "user_splits", "stratified_test_indices", "TABLE_FORMATS", "UserData", "align_labels",
           "check_table_path", "user_texts"]

#: file extension → (``datasets`` packaged builder, extra builder arguments).
_BUILDERS: dict[str, tuple[str, dict[str, Any]]] = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t"}),
    ".tab": ("csv", {"delimiter": "\t"}),
    ".jsonl": ("json", {}),
    ".ndjson": ("json", {}),
    ".json": ("json", {}),
    ".parquet": ("parquet", {}),
    ".pq": ("parquet", {}),
}
#: what :func:`read_table` accepts, for messages and ``--help`` texts.
TABLE_FORMATS = (
    "a .csv, .tsv/.tab, .jsonl/.ndjson/.json (JSON Lines) or .parquet/.pq file, "
    "or a folder written by datasets' save_to_disk"
)


def _empty_saved(p: Path) -> Path | None:
    """The (split) folder under ``p`` holding a saved Dataset without data files, if any."""
    import json

    for state in [p / "state.json", *sorted(p.glob("*/state.json"))]:
        try:
            if state.is_file() and json.loads(state.read_text(encoding="utf-8")).get("_data_files") == []:
                return state.parent
        except (OSError, ValueError, AttributeError):
            continue
    return None


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    """``datasets`` says nothing of its own while a table is read (its readers log a failure at level
    ERROR, e.g. "Failed to load JSON from file …", before raising; nodeprobe's one line says it), and
    shows no progress bar; its logger level and progress-bar setting are restored afterwards."""
    import datasets
    from datasets.utils import logging as ds_logging

    logger = ds_logging.get_logger()  # the library root logger "datasets"
    level = logger.level
    bars_on = not datasets.are_progress_bars_disabled()
    logger.setLevel(logging.CRITICAL)
    if bars_on:
        with warnings.catch_warnings():  # it warns where HF_DATASETS_DISABLE_PROGRESS_BARS=0 wins
            warnings.simplefilter("ignore")
            datasets.disable_progress_bars()
    try:
        yield
    finally:
        logger.setLevel(level)
        if bars_on:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                datasets.enable_progress_bars()


def _load_disk(p: Path):
    """The ``Dataset`` or ``DatasetDict`` saved in folder ``p``; one line if it is none."""
    import datasets

    try:
        with _quiet_datasets():
            obj = datasets.load_from_disk(str(p))
    except FileNotFoundError as e:
        raise NodeprobeError(
            f"{p}: folder is not a datasets save_to_disk folder ({reason(e, 200)}); "
            f"allowed: {TABLE_FORMATS}"
        ) from e
    except Exception as e:  # noqa: BLE001 — any reader failure is the user's file
        empty = _empty_saved(p)
        if empty is not None:  # datasets cannot load a saved Dataset of 0 rows
            raise NodeprobeError(f"{empty}: dataset has no rows; allowed: a table with ≥ 1 row") from e
        raise NodeprobeError(
            f"{p}: cannot read the save_to_disk folder ({reason(e, 200)}); allowed: {TABLE_FORMATS}"
        ) from e
    return obj


def _read_disk(p: Path, split: str | None, param: str = "split"):
    """Folder ``p``'s Dataset, or its DatasetDict's ``split``; ``param`` is the parameter that gave
    ``split`` (``split`` or ``test_split``), named in the messages."""
    import datasets

    obj = _load_disk(p)
    if isinstance(obj, datasets.DatasetDict):
        names = list(obj)
        if split is None:
            raise NodeprobeError(
                f"{p}: a DatasetDict with splits {', '.join(names) or '(none)'}; "
                f"allowed: one of them picked with `{param}`"
            )
        if split not in obj:
            raise NodeprobeError(
                f"{param}={split}: {p} has no such split; allowed: {', '.join(names) or '(none)'}"
            )
        return obj[split]
    if split is not None:
        raise NodeprobeError(
            f"{param}={split}: {p} is a single Dataset, not a DatasetDict; allowed: no `{param}`"
        )
    return obj


def read_table(path: PathLike, *, split: str | None = None):
    """Read one table as a ``datasets.Dataset`` (offline; see the module docstring).

    Args:
        path: a ``.csv``, ``.tsv``/``.tab``, ``.jsonl``/``.ndjson``/``.json`` or
            ``.parquet``/``.pq`` file, or a ``save_to_disk`` folder.
        split: for a ``DatasetDict`` folder, which split (required there); must be ``None``
            for a file or a single-``Dataset`` folder.

    Returns:
        a ``datasets.Dataset`` (files are held in memory; folders are memory-mapped).

    Raises:
        NodeprobeError: a missing path, an unknown extension, a file the reader cannot parse, a
        file without rows, or a missing/unknown/superfluous ``split`` (one line each).

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "d.csv"
        >>> _ = f.write_text("text,label\\nhi there,pos\\nbad day,neg\\n")
        >>> ds = read_table(f)
        >>> ds.column_names, list(ds["label"])
        (['text', 'label'], ['pos', 'neg'])
    """
    return _read_table(path, split, "split")


def _read_table(path: PathLike, split: str | None, param: str, what: str = "dataset"):
    """:func:`read_table`; ``param`` names the parameter that gave ``split`` (``split``/``test_split``)
    and ``what`` says which table ``path`` is (``dataset``/``test dataset``)."""
    p = as_path(path, what)
    if not p.exists():
        raise NodeprobeError(f"{p}: {what} not found; allowed: {TABLE_FORMATS}")
    if p.is_dir():
        return _read_disk(p, split, param)
    ext = p.suffix.lower()
    if ext not in _BUILDERS:
        raise NodeprobeError(
            f"{p}: unknown dataset extension {ext or '(none)'!r}; allowed: {TABLE_FORMATS}"
        )
    if split is not None:
        raise NodeprobeError(
            f"{param}={split}: {p} is a single file, not a DatasetDict folder; allowed: no `{param}`"
        )
    builder, extra = _BUILDERS[ext]
    try:
        size = p.stat().st_size
    except OSError as e:
        raise NodeprobeError(f"{p}: cannot read the dataset ({e.strerror or e})") from e
    if size == 0:
        raise NodeprobeError(f"{p}: dataset file is empty; allowed: a table with ≥ 1 row")
    if builder == "csv":
        _check_header(p, extra.get("delimiter", ","))
    import datasets

    try:
        # a private cache folder: never reuses a stale build of an edited file, leaves no trace
        with _quiet_datasets(), tempfile.TemporaryDirectory(prefix="nodeprobe-ds-") as cache:
            # `datasets` reads data_files as glob patterns: a name with [ ] * ? is read through a
            # plain-named link, so the file is found whatever its name
            link = Path(cache) / f"table{ext}"
            os.symlink(p.resolve(), link)
            ds = datasets.load_dataset(
                builder,
                data_files=str(link),
                split="train",
                cache_dir=cache,
                keep_in_memory=True,
                **extra,
            )
    except Exception as e:  # noqa: BLE001 — any reader failure is the user's file
        why = reason(e, 200)
        if "corresponds to no data" in why or "No columns to parse" in why:
            raise NodeprobeError(
                f"{p}: dataset has no rows; allowed: a table with ≥ 1 row"
            ) from e
        kind = {"csv": "CSV" if not extra else "TSV", "json": "JSON Lines", "parquet": "Parquet"}[builder]
        raise NodeprobeError(
            f"{p}: cannot parse the file as {kind} ({why}); allowed: {TABLE_FORMATS}"
        ) from e
    return ds


# ----------------------------------------------------------------------------- checks
def _check_header(p: Path, delimiter: str) -> None:
    """A CSV/TSV whose header names a column twice (the reader would rename the second ``text.1``
    and go on with the first), or with a row of more fields than the header (the reader silently
    takes the first column as an index: every column shifts by one), is refused naming the row."""
    import csv

    kind = "TSV" if delimiter == "\t" else "CSV"
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:  # not UTF-8 text: the reader says so
            rows = csv.reader(f, delimiter=delimiter, strict=True)
            header = next(rows, [])
            twice = [c for i, c in enumerate(header) if c in header[:i]]
            if twice:
                raise NodeprobeError(f"{p}: column {twice[0]!r} appears twice in the header; "
                                     "allowed: distinct column names")
            for i, row in enumerate(r for r in rows if r and not (len(r) == 1 and not r[0].strip())):
                if len(row) > len(header):  # fewer fields are read as nulls (each named where it matters)
                    raise NodeprobeError(
                        f"{p}: row {i} (0-based, line {rows.line_num}) has {len(row)} fields, the header "
                        f"{len(header)} ({', '.join(header)}); allowed: at most {len(header)} in every row (quote "
                        f"a field that holds the {kind} delimiter)")
    except (OSError, UnicodeDecodeError, csv.Error):
        return  # the reader says what is wrong


def _check_columns(ds, where: str, columns: dict[str, str | None]) -> None:
    present = list(ds.column_names)
    for param, name in columns.items():
        if name is None:
            continue
        if name not in present:
            raise NodeprobeError(
                f"{param}={name}: {where} has no such column; columns present: "
                f"{', '.join(present) or '(none)'}"
            )


def _is_null(v: Any) -> bool:
    """A missing cell: ``None``, or the NaN pandas reads an empty CSV cell of a number column as."""
    return v is None or (isinstance(v, (float, np.floating)) and math.isnan(v))


def _texts(ds, column: str, param: str, where: str) -> list[str]:
    values = ds[column]
    for i, v in enumerate(values):
        if not isinstance(v, str):
            got = "null" if _is_null(v) else f"{type(v).__name__} {short(v, 40)}"
            raise NodeprobeError(
                f"{param}={column}: {where} row {i} (0-based) is {got}; allowed: a string in every row"
            )
    return list(values)


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _labels(ds, column: str, where: str) -> tuple[list[Any], str]:
    """The label column as a list, and its kind (``"int"`` or ``"str"``)."""
    values = list(ds[column])
    for i, v in enumerate(values):  # nulls first: ints with an empty CSV cell are read as floats + NaN
        if _is_null(v):
            raise NodeprobeError(
                f"label_column={column}: {where} row {i} (0-based) is null; "
                "allowed: an integer or a string label in every row"
            )
    kind = None
    for i, v in enumerate(values):
        if _is_int(v):
            k = "int"
        elif isinstance(v, str):
            k = "str"
        else:
            got = f"{type(v).__name__} {short(v, 40)}"
            raise NodeprobeError(
                f"label_column={column}: {where} row {i} (0-based) is {got}; "
                "allowed: an integer or a string label in every row"
            )
        if kind is None:
            kind = k
        elif k != kind:
            raise NodeprobeError(
                f"label_column={column}: {where} row {i} (0-based) is {short(v, 40)} among "
                f"{'integer' if kind == 'int' else 'string'} labels; allowed: all integers or all strings"
            )
    return [int(v) if kind == "int" else v for v in values], kind or "str"


def _check_args(test_fraction: Any, seed: Any, max_len: Any, pair: bool) -> None:
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, (int, float))
        or not 0 < test_fraction < 1
    ):
        raise NodeprobeError(f"test_fraction={test_fraction!r}: allowed: a number strictly between 0 and 1")
    if not _is_int(seed):
        raise NodeprobeError(f"seed={seed!r}: allowed: an integer")
    least = 3 if pair else 2
    if not _is_int(max_len) or max_len < least:
        raise NodeprobeError(
            f"max_len={max_len!r}: allowed: an integer ≥ {least} (room for [CLS] and "
            f"{'two [SEP]' if pair else '[SEP]'})"
        )


# ----------------------------------------------------------------------------- splitting
def stratified_test_indices(labels: Sequence[int], test_fraction: float, seed: int) -> list[int]:
    """Row indices (ascending) of a seeded, label-stratified test share (see the module docstring).

    Example:
        >>> idx = stratified_test_indices([0] * 10 + [1] * 5, 0.2, seed=0)
        >>> len(idx), sum(i >= 10 for i in idx)
        (3, 1)
    """
    y = np.asarray(labels, dtype=np.int64)
    classes = np.unique(y)
    members = [np.flatnonzero(y == c) for c in classes]
    exact = np.array([test_fraction * len(m) for m in members])
    take = np.floor(exact).astype(np.int64)
    extra = int(round(test_fraction * len(y))) - int(take.sum())
    if extra > 0:  # largest remainders first, ties by class order
        order = sorted(range(len(members)), key=lambda j: (-(exact[j] - take[j]), j))
        for j in order[:extra]:
            take[j] += 1
    rng = np.random.default_rng(seed)
    out: list[int] = []
    for m, k in zip(members, take):
        k = min(int(k), len(m) - 1)  # every class keeps ≥ 1 training row
        perm = rng.permutation(len(m))
        out.extend(int(i) for i in m[perm[:k]])
    return sorted(out)


# ----------------------------------------------------------------------------- encoding
def _segment_sep(tokenizer, pairs) -> int | None:
    """The separator after whose first occurrence a pair's second text has token type 1 (its
    tokenizer's own pair layout: BERT/ELECTRA), or None (one text, or RoBERTa-style pairs)."""
    if pairs is None or not getattr(tokenizer, "pair_types", True):
        return None
    return int(tokenizer.sep_id)


def _encode(tokenizer, texts: list[str], pairs: list[str] | None, max_len: int) -> list[list[int]]:
    a = tokenizer.encode_batch(texts)
    if pairs is None:
        return [tokenizer.with_specials(x, max_len) for x in a]
    b = tokenizer.encode_batch(pairs)
    middle = list(getattr(tokenizer, "pair_separator", [tokenizer.sep_id]))  # RoBERTa: </s></s>
    budget = max_len - 2 - len(middle)
    out = []
    for x, z in zip(a, b):
        la, lb = len(x), len(z)
        while la + lb > budget:  # longest-first; a tie trims the second text
            if la > lb:
                la -= 1
            else:
                lb -= 1
        out.append([tokenizer.cls_id, *x[:la], *middle, *z[:lb], tokenizer.sep_id])
    return out


def _test_split_without_split(p: Path, test_split: str) -> None:
    """``test_split`` of ``p`` without ``split``: one line naming ``test_split`` (always raises)."""
    import datasets

    if p.exists() and not p.is_dir():
        raise NodeprobeError(
            f"test_split={test_split}: {p} is a single file, not a DatasetDict folder; allowed: no `test_split` "
            "(the test rows come from `test_fraction` or `test_path`)"
        )
    obj = _load_disk(p) if p.is_dir() else None
    if isinstance(obj, datasets.DatasetDict):
        names = list(obj)
        unknown = "" if test_split in obj else f" (it has no split {test_split})"
        raise NodeprobeError(
            f"test_split={test_split}: needs `split` too, the training split of the DatasetDict {p}{unknown}; "
            f"allowed: `split` and `test_split`, two different splits of {', '.join(names) or '(none)'}"
        )
    if obj is not None:
        raise NodeprobeError(
            f"test_split={test_split}: {p} is a single Dataset, not a DatasetDict; allowed: no `test_split`"
        )
    raise NodeprobeError(f"test_split={test_split}: needs `split` too (the training split of the DatasetDict {p})")


def _describe(p: Path, split: str | None) -> str:
    return f"{p}" + (f" split {split}" if split is not None else "")


def user_splits(
    path: PathLike,
    tokenizer,
    *,
    text_column: str = "text",
    label_column: str = "label",
    text_pair_column: str | None = None,
    test_path: PathLike | None = None,
    split: str | None = None,
    test_split: str | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_len: int = 128,
) -> tuple[LabeledSet, LabeledSet]:
    """``(train, test)`` :class:`LabeledSet` s from your own labelled table.

    Args:
        path: the training table (see :func:`read_table`).
        tokenizer: a :class:`~nodeprobe.data.Tokenizer` (:func:`~nodeprobe.data.load_tokenizer`).
        text_column: the column with the text (strings in every row).
        label_column: the column with the labels (all integers or all strings).
        text_pair_column: a second text column: items become ``[CLS] a [SEP] b [SEP]``.
        test_path: a second table with the same columns used as the test split.
        split: the split of a ``DatasetDict`` folder ``path`` to train on.
        test_split: the split used as test: of ``test_path`` if that is a ``DatasetDict``
            folder, else of ``path``.
        test_fraction: without ``test_path``/``test_split``, this share of the rows (stratified
            by label, seeded) becomes the test split.
        seed: the seed of that split (same seed → same split).
        max_len: maximum ids per item, [CLS]/[SEP] included.

    Returns:
        ``(train, test)``: labels ``0 … K−1`` over the sorted distinct training labels,
        ``label_names == label_ids ==`` their ``str``; ``source`` ``"user:<path>[train]"`` etc.

    Raises:
        NodeprobeError: one line for every bad input (see the module docstring).

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "d.jsonl"
        >>> _ = f.write_text("".join('{"text": "row %d", "label": "%s"}\\n' % (i, "ab"[i % 2])
        ...                          for i in range(10)))
        >>> tok = load_tokenizer("../shared/data/tokenizer/bert-base-uncased-vocab.txt")  # doctest: +SKIP
        >>> train, test = user_splits(f, tok, test_fraction=0.2)                         # doctest: +SKIP
        >>> train.label_names, len(train), test.class_counts().tolist()                  # doctest: +SKIP
        (['a', 'b'], 8, [1, 1])
    """
    pair = text_pair_column is not None
    _check_args(test_fraction, seed, max_len, pair)
    p = as_path(path, "dataset")
    columns = {"text_column": text_column, "label_column": label_column,
               "text_pair_column": text_pair_column}
    for param, name in columns.items():
        if name is not None and not isinstance(name, str):
            raise NodeprobeError(f"{param}={name!r}: allowed: a column name (string)")
    if text_pair_column is not None and text_pair_column == text_column:
        raise NodeprobeError(
            f"text_pair_column={text_pair_column}: the same column as `text_column`; allowed: another column"
        )

    if test_path is None and test_split is not None and split is None:
        _test_split_without_split(p, test_split)
    train_ds = read_table(p, split=split)
    train_where = _describe(p, split)
    if test_path is not None:
        tp = as_path(test_path, "test dataset")
        test_ds = _read_table(tp, test_split, "test_split", "test dataset")
        test_where, test_src = _describe(tp, test_split), f"user:{tp}" + (f":{test_split}" if test_split else "")
    elif test_split is not None:
        if test_split == split:
            raise NodeprobeError(
                f"test_split={test_split}: the same split as split={split}; allowed: another split"
            )
        test_ds = _read_table(p, test_split, "test_split")
        test_where, test_src = _describe(p, test_split), f"user:{p}:{test_split}"
    else:
        test_ds, test_where, test_src = None, "", ""

    def side(ds, where: str, what: str):
        """One table's checked columns: (texts, pairs or None, raw labels, label kind)."""
        _check_columns(ds, where, columns)
        if ds.num_rows == 0:
            raise NodeprobeError(f"{where}: {what} has no rows; allowed: a table with ≥ 1 row")
        texts = _texts(ds, text_column, "text_column", where)
        pairs = _texts(ds, text_pair_column, "text_pair_column", where) if pair else None
        return (texts, pairs, *_labels(ds, label_column, where))

    texts, pairs, raw, kind = side(train_ds, train_where, "dataset")
    train_src = f"user:{p}" + (f":{split}" if split else "")

    classes = sorted(set(raw))
    if len(classes) < 2:
        raise NodeprobeError(
            f"label_column={label_column}: {train_where} has one class only "
            f"({short(classes[0], 40)}); allowed: ≥ 2 classes"
        )
    if test_ds is None:
        index = {c: i for i, c in enumerate(classes)}
        y = [index[v] for v in raw]
        test_idx = stratified_test_indices(y, float(test_fraction), int(seed))
        if not test_idx:
            if len(classes) == len(y):  # every class keeps its one row in training
                raise NodeprobeError(
                    f"label_column={label_column}: {len(classes)} classes in the {len(y)} rows of {train_where} "
                    "(one row each): every class keeps its rows in training, so no test rows are left; "
                    "allowed: a label column whose classes have ≥ 2 rows each, or `test_path`"
                )
            raise NodeprobeError(
                f"test_fraction={test_fraction}: leaves no test rows of the {len(y)} in {train_where}; "
                "allowed: a larger `test_fraction`, more rows, or `test_path`"
            )
        is_test = np.zeros(len(y), dtype=bool)
        is_test[test_idx] = True
        train_idx = np.flatnonzero(~is_test).tolist()
        ids = _encode(tokenizer, texts, pairs, max_len)
        names = [str(c) for c in classes]
        whole = LabeledSet(ids, y, names, train_src, list(names), _segment_sep(tokenizer, pairs))
        return (
            whole.subset(train_idx, f"{train_src}[train seed={seed}]"),
            whole.subset(test_idx, f"{train_src}[test seed={seed}]"),
        )

    t_texts, t_pairs, t_raw, t_kind = side(test_ds, test_where, "test dataset")
    if t_kind != kind:
        raise NodeprobeError(
            f"label_column={label_column}: {test_where} has {'integer' if t_kind == 'int' else 'string'} "
            f"labels but {train_where} has {'integer' if kind == 'int' else 'string'} ones; "
            "allowed: the same kind in both"
        )
    index = {c: i for i, c in enumerate(classes)}
    unseen = sorted(set(t_raw) - set(index))
    if unseen:
        shown = ", ".join(short(v, 30) for v in unseen[:5]) + (" …" if len(unseen) > 5 else "")
        raise NodeprobeError(
            f"label_column={label_column}: {test_where} has labels absent from training "
            f"{train_where}: {shown}; allowed: labels among {', '.join(short(c, 30) for c in classes[:10])}"
            + (" …" if len(classes) > 10 else "")
        )
    names = [str(c) for c in classes]
    sep = _segment_sep(tokenizer, pairs)
    train = LabeledSet(_encode(tokenizer, texts, pairs, max_len), [index[v] for v in raw],
                       names, f"{train_src}[train]", list(names), sep)
    test = LabeledSet(_encode(tokenizer, t_texts, t_pairs, max_len), [index[v] for v in t_raw],
                      list(names), f"{test_src}[test]", list(names), sep)
    return train, test


# ----------------------------------------------------------------------------- the data object of task "dataset"
def check_table_path(path: PathLike, param: str = "dataset") -> Path:
    """A table path that exists and that :func:`read_table` can read by its kind (a folder, or a file
    with a known extension), checked without reading it; one line otherwise.

    Example:
        >>> check_table_path("no/such.csv")
        Traceback (most recent call last):
        ...
        nodeprobe.errors.NodeprobeError: dataset=no/such.csv: not found; allowed: a .csv, .tsv/.tab, .jsonl/.ndjson/.json (JSON Lines) or .parquet/.pq file, or a folder written by datasets' save_to_disk
    """
    p = as_path(path, param)
    if not p.exists():
        raise NodeprobeError(f"{param}={path}: not found; allowed: {TABLE_FORMATS}")
    if p.is_file() and p.suffix.lower() not in _BUILDERS:
        raise NodeprobeError(
            f"{param}={path}: unknown dataset extension {p.suffix.lower() or '(none)'!r}; allowed: {TABLE_FORMATS}"
        )
    return p


@dataclass(frozen=True)
class UserData:
    """Your own labelled table as the ``data`` of task ``"dataset"`` (CLI ``--dataset`` and its column
    options): the arguments of :func:`user_splits` except the tokenizer, ``seed`` and ``max_len``.

    :meth:`describe` is a stable, JSON-able dict of every field (paths resolved) and
    :meth:`fingerprint` its hash: the evaluation-set fingerprint of this data folds it in (with the
    class names), so another column, split or ``test_fraction`` never reuses a stale activation cache,
    and a fine-tuning run records it in ``run.json`` (another one is another run).

    Example:
        >>> d = UserData("reviews.csv", text_column="review", test_fraction=0.25)
        >>> d.describe()["text_column"], len(d.fingerprint())
        ('review', 16)
        >>> d.fingerprint() != UserData("reviews.csv", text_column="body", test_fraction=0.25).fingerprint()
        True
    """

    path: str | Path
    text_column: str = "text"
    label_column: str = "label"
    text_pair_column: str | None = None
    test_path: str | Path | None = None
    split: str | None = None
    test_split: str | None = None
    test_fraction: float = 0.2
    split_seed: int = 0

    def splits(self, tokenizer, max_len: int = 128) -> tuple[LabeledSet, LabeledSet]:
        """``(train, test)`` :class:`LabeledSet` s (:func:`user_splits`).  The ``test_fraction`` split
        is drawn with ``split_seed``, not a command's ``--seed``: ``finetune --seed 1`` and a report
        with ``--seed 0`` see the same test rows."""
        return user_splits(self.path, tokenizer, text_column=self.text_column, label_column=self.label_column,
                           text_pair_column=self.text_pair_column, test_path=self.test_path, split=self.split,
                           test_split=self.test_split, test_fraction=self.test_fraction, seed=self.split_seed,
                           max_len=max_len)

    def describe(self) -> dict:
        """Every field, paths absolute (``str``), in a fixed order: what identifies this data."""
        def resolved(p):
            return None if p is None else str(Path(str(p)).expanduser().resolve())

        return {"path": resolved(self.path), "text_column": self.text_column, "label_column": self.label_column,
                "text_pair_column": self.text_pair_column, "test_path": resolved(self.test_path),
                "split": self.split, "test_split": self.test_split, "test_fraction": float(self.test_fraction),
                "split_seed": int(self.split_seed)}

    def content_hash(self) -> str:
        """16 hex digits of sha256 over the bytes of the table(s) — every file of a folder, in path
        order — so that a run on an edited table is another run (``finetune --resume`` refuses it)."""
        h = hashlib.sha256()
        for root in (self.path, self.test_path):
            if root is None:
                continue
            p = Path(str(root)).expanduser()
            files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
            for f in files:
                h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
                with open(f, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
        return h.hexdigest()[:16]

    def fingerprint(self) -> str:
        """16 hex digits of sha256 over :meth:`describe`."""
        return hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()[:16]


def user_texts(data: UserData) -> list[str]:
    """The ``text_column`` strings of ``data``'s training table (its ``split``), in file order: the
    masked-LM text of ``--task mlm --dataset`` (labels are not read)."""
    p = as_path(data.path, "dataset")
    ds = read_table(p, split=data.split)
    where = _describe(p, data.split)
    _check_columns(ds, where, {"text_column": data.text_column})
    if ds.num_rows == 0:
        raise NodeprobeError(f"{where}: dataset has no rows; allowed: a table with ≥ 1 row")
    return _texts(ds, data.text_column, "text_column", where)


def _model_names(num_labels: int, id2label: Mapping | None) -> list[str] | None:
    """The model's class names by id, or ``None`` when they are generic (``LABEL_i``, ``i``) or missing."""
    if not id2label:
        return None
    names = []
    for i in range(num_labels):
        v = id2label.get(i, id2label.get(str(i)))
        if v is None:
            return None
        names.append(str(v))
    generic = all(n in (f"LABEL_{i}", str(i)) for i, n in enumerate(names))
    return None if generic else names


def align_labels(ds: LabeledSet, num_labels: int, id2label: Mapping | None, what: str = "dataset") -> LabeledSet:
    """``ds`` with its labels in a classifier's output order, or a one-line error when it cannot be.

    The rule (docs/methods.md, "Your own data"): the data's ``K`` classes must be the model's
    ``num_labels`` (else :class:`NodeprobeError` naming both numbers).  The data's sorted class
    names define its indices ``0 … K−1``; if the model's ``config.id2label`` names are exactly
    those names (in any order) each data label is mapped to the model id of that name, so a
    classifier fine-tuned on this data (by nodeprobe or elsewhere) is scored correctly and the
    classes are named in the model's order; otherwise (generic ``LABEL_0 …`` / integer names, or
    names that differ) the data's order is used as it is: data index ``i`` = model output ``i``.

    Example:
        >>> s = LabeledSet([[1, 2], [1, 3]], [0, 1], ["neg", "pos"], "demo", ["neg", "pos"])
        >>> align_labels(s, 2, {0: "pos", 1: "neg"}).labels
        [1, 0]
        >>> align_labels(s, 2, {0: "LABEL_0", 1: "LABEL_1"}).labels
        [0, 1]
    """
    k = len(ds.label_names)
    if k != int(num_labels):
        raise NodeprobeError(
            f"{what}: the data has {k} classes ({', '.join(short(n, 20) for n in ds.label_names[:6])}"
            f"{' …' if k > 6 else ''}) but the model has num_labels={num_labels}; allowed: a classifier "
            f"with {k} labels (fine-tune one with `nodeprobe finetune --dataset`)"
        )
    names = _model_names(int(num_labels), id2label)
    if names is None or len(set(names)) != k or set(names) != set(ds.label_names) or names == list(ds.label_names):
        return ds
    to_model = {j: names.index(n) for j, n in enumerate(ds.label_names)}
    ids = list(ds.label_ids) if ds.label_ids else list(ds.label_names)
    by_model = {to_model[j]: ids[j] for j in range(k)}
    return replace(ds, labels=[to_model[y] for y in ds.labels], label_names=list(names),
                   label_ids=[by_model[i] for i in range(k)])
