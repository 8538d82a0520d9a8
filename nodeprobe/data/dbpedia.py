"""DBpedia-14 topic classification from CSV (METHODS §0).

Rows are ``"label","content"`` (the DHIM files shipped in ``shared/data/dbpedia``) or
``label,title,content`` (the original Zhang et al. release; text = ``title + " " + content``),
no header (a first row whose label is literally ``label``/``class`` is skipped). Labels are
``1 … K`` in the order of ``meta.txt`` (lines ``1: Artist`` …; other lines ignored) → mapped to
``0 … K−1`` with those names. Without meta.txt, a ``classes.txt`` (one name per line, the
original release) is used, else the generic names ``class_1 … class_14``, since the two public
releases order the 14 classes differently.

Splits: ``val.csv`` → train and ``test.csv`` → test by default (the full DBpedia train split is
not available offline); ``max_per_class`` keeps the first that many rows of each class (file
order). Text is WordPiece-encoded, truncated to ``max_len − 2`` pieces (keeping the start) and
wrapped in [CLS]/[SEP].

Example:
    >>> train, test = load_dbpedia_splits("../shared/data/dbpedia", tok)  # doctest: +SKIP
    >>> len(train), len(test), train.label_names[0]                        # doctest: +SKIP
    (5000, 5000, 'Artist')
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from nodeprobe.data._io import PathLike, as_path, read_text, short
from nodeprobe.data.labeled import LabeledSet
from nodeprobe.data.tokenizer import Tokenizer
from nodeprobe.errors import NodeprobeError

__all__ = ["read_dbpedia_meta", "read_dbpedia_csv", "load_dbpedia", "load_dbpedia_splits"]

N_CLASSES = 14
_META_LINE = re.compile(r"^\s*(\d+)\s*:\s*(.*?)\s*$")


def read_dbpedia_meta(path: PathLike) -> list[str]:
    """Class names from a ``meta.txt`` (``N: Name`` lines, numbered 1 … K; others ignored).

    Example:
        >>> read_dbpedia_meta("../shared/data/dbpedia/meta.txt")[:3]  # doctest: +SKIP
        ['Artist', 'Company', 'OfficeHolder']
    """
    p = as_path(path, "DBpedia meta file")
    names: list[str] = []
    for lineno, line in enumerate(read_text(p, "DBpedia meta file").split("\n"), 1):
        m = _META_LINE.match(line)
        if not m:
            continue
        num, name = int(m.group(1)), m.group(2)
        if num != len(names) + 1 or not name:
            raise NodeprobeError(
                f"{p}: line {lineno} {short(line, 40)}; allowed: '{len(names) + 1}: <class name>' "
                "(classes numbered 1, 2, … in order)"
            )
        names.append(name)
    if not names:
        raise NodeprobeError(f"{p}: no class lines; allowed: lines like '1: Artist'")
    return names


def _default_names(csv_path: Path, meta: PathLike | None | str) -> list[str]:
    if meta == "auto":
        cand = csv_path.parent / "meta.txt"
        if cand.is_file():
            return read_dbpedia_meta(cand)
        cand = csv_path.parent / "classes.txt"
        if cand.is_file():
            text = read_text(cand, "DBpedia classes file")
            names = [ln.strip() for ln in text.split("\n") if ln.strip()]
            if not names:
                raise NodeprobeError(f"{cand}: no class names; allowed: one name per line")
            return names
        return [f"class_{i}" for i in range(1, N_CLASSES + 1)]
    if meta is None:
        return [f"class_{i}" for i in range(1, N_CLASSES + 1)]
    return read_dbpedia_meta(meta)


def read_dbpedia_csv(path: PathLike, n_classes: int = N_CLASSES) -> list[tuple[int, str]]:
    """Rows of a DBpedia CSV as ``(label0, text)`` with ``label0 = label − 1 ∈ [0, n_classes)``.

    A row with another number of fields, a non-integer or out-of-range label, or broken CSV
    raises :class:`NodeprobeError` naming the file and the line.

    Example:
        >>> read_dbpedia_csv("../shared/data/dbpedia/val.csv")[0][0]  # doctest: +SKIP
        9
    """
    p = as_path(path, "DBpedia CSV")
    text = read_text(p, "DBpedia CSV")
    rows: list[tuple[int, str]] = []
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    first = True  # fields over csv.field_size_limit() are reported as broken CSV
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise NodeprobeError(
                f"{p}: line {reader.line_num}: broken CSV ({e}); allowed: "
                '"label","content" rows'
            ) from e
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if first and row[0].strip().lower() in ("label", "class", "class index"):
            first = False
            continue  # header
        first = False
        if len(row) not in (2, 3):
            raise NodeprobeError(
                f"{p}: line {reader.line_num} has {len(row)} fields; allowed: "
                '"label","content" or label,title,content'
            )
        lab = row[0].strip()
        if not re.fullmatch(r"[+]?\d{1,9}", lab) or not 1 <= int(lab) <= n_classes:
            raise NodeprobeError(
                f"{p}: line {reader.line_num}: label {short(row[0], 30)}; allowed: "
                f"an integer 1–{n_classes}"
            )
        body = row[1] if len(row) == 2 else f"{row[1]} {row[2]}"
        rows.append((int(lab) - 1, body))
    if not rows:
        raise NodeprobeError(f'{p}: no rows; allowed: "label","content" rows')
    return rows


def load_dbpedia(
    path: PathLike,
    tokenizer: Tokenizer,
    *,
    meta: PathLike | None | str = "auto",
    max_per_class: int | None = None,
    max_len: int = 128,
) -> LabeledSet:
    """Load one DBpedia CSV as a :class:`LabeledSet` (labels 0 … K−1).

    Args:
        path: the CSV file.
        tokenizer: a :class:`~nodeprobe.data.Tokenizer`.
        meta: ``"auto"`` (meta.txt, else classes.txt next to the CSV, else generic names),
            a path to a meta.txt, or ``None`` (generic names ``class_1 …``).
        max_per_class: keep only the first that many rows of each class (file order).
        max_len: maximum length including [CLS]/[SEP] (longer texts keep their start).

    Example:
        >>> s = load_dbpedia("../shared/data/dbpedia/test.csv", tok, max_per_class=10)  # doctest: +SKIP
        >>> len(s), s.n_classes                                                         # doctest: +SKIP
        (140, 14)
    """
    p = as_path(path, "DBpedia CSV")
    if max_per_class is not None and (
        not isinstance(max_per_class, int) or isinstance(max_per_class, bool) or max_per_class < 1
    ):
        raise NodeprobeError(f"max_per_class={max_per_class!r}: allowed: an integer ≥ 1 or None")
    if not isinstance(max_len, int) or max_len < 2:
        raise NodeprobeError(f"max_len={max_len!r}: allowed: an integer ≥ 2")
    names = _default_names(p, meta)
    rows = read_dbpedia_csv(p, n_classes=len(names))
    if max_per_class is not None:
        seen = [0] * len(names)
        kept = []
        for lab, text in rows:
            if seen[lab] < max_per_class:
                seen[lab] += 1
                kept.append((lab, text))
        rows = kept
    ids = tokenizer.encode_batch([t for _, t in rows])
    return LabeledSet(
        [tokenizer.with_specials(x, max_len) for x in ids],
        [lab for lab, _ in rows],
        names,
        f"dbpedia:{p}",
        [str(i) for i in range(1, len(names) + 1)],
    )


def load_dbpedia_splits(
    data_dir: PathLike,
    tokenizer: Tokenizer,
    *,
    train_file: str = "val.csv",
    test_file: str = "test.csv",
    max_per_class: int | None = None,
    max_len: int = 128,
) -> tuple[LabeledSet, LabeledSet]:
    """``(train, test)`` from a DBpedia directory: ``val.csv`` → train, ``test.csv`` → test.

    ``data_dir`` may be the ``dbpedia`` folder itself or a data root containing ``dbpedia/``.
    ``max_per_class`` applies to both splits.

    Example:
        >>> train, test = load_dbpedia_splits("../shared/data", tok, max_per_class=50)  # doctest: +SKIP
        >>> train.class_counts().tolist() == [50] * 14                                # doctest: +SKIP
        True
    """
    d = as_path(data_dir, "DBpedia directory")
    if not (d / train_file).exists() and (d / "dbpedia" / train_file).exists():
        d = d / "dbpedia"
    return tuple(  # type: ignore[return-value]
        load_dbpedia(d / f, tokenizer, max_per_class=max_per_class, max_len=max_len)
        for f in (train_file, test_file)
    )
