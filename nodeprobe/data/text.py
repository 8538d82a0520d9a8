"""Wikipedia-style text for MLM pre-training (METHODS §0, §4).

Sources (``format=None`` picks by name):

=================  =========================================================================
``wikitext-raw``   ``*.raw`` (WikiText raw). Articles start at top-level headings
                   `` = Title = ``; sub-headings `` = = Sub = = `` stay as text lines.
``wikitext-tokens`` ``*.tokens`` (WikiText tokenised): as raw, plus ``<unk>`` → [UNK] id.
``txt``            any other text file: blank-line-separated blocks are articles.
``jsonl``          ``*.jsonl``: one JSON object per line with a string ``text`` (``title``
                   optional).
``parquet``        ``*.parquet`` (or a directory of them) with a ``text`` column (pyarrow).
``hub``            a ``datasets`` hub name such as ``wikimedia/wikipedia`` with
                   ``config="20231101.en"`` (streams; needs network; not tested offline).
=================  =========================================================================

In both WikiText formats and ``txt``, an article reaching ``MAX_ARTICLE_CHARS`` (1 MiB of
characters) is cut there, at a line boundary, so that memory stays bounded on a file without
headings / blank lines (files with smaller articles are read as before).

WikiText's ``@-@``, ``@,@``, ``@.@`` are detokenised (``3 @.@ 1`` → ``3.1``) in both WikiText
formats. Text is WordPiece-encoded with ``encode_batch`` (no specials), one id array per article.

Sequences (:meth:`Corpus.to_sequences`): ``mode="chunk"`` (default; the local corpus is only
~1.2 M tokens) cuts every article into consecutive windows of ``max_len − 2`` tokens, each
wrapped in [CLS]/[SEP] (windows never cross articles); ``mode="truncate"`` keeps one sequence per
article, its first ``max_len − 2`` tokens (the papers' setting).

Held-out split (:meth:`Corpus.split_held_out`): an article is held out when the blake2b hash of
its token ids is ≡ 0 mod ``every`` (default 50, i.e. ~2 %), so membership depends on the article
alone (stable under adding sources, identical duplicates go the same way) and whole articles are
held out (no window of a held-out article is trained on). If that selects nothing from ≥ 2
articles, the article with the smallest hash is held out.

Example:
    >>> corpus = load_pretraining_corpus("../shared/data")              # doctest: +SKIP
    >>> train, held = corpus.split_held_out()                            # doctest: +SKIP
    >>> seqs = train.to_sequences(max_len=128)                           # doctest: +SKIP
    >>> corpus.n_tokens, corpus.token_counts().shape                     # doctest: +SKIP
    (1200000, (30522,))
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nodeprobe.data._io import PathLike, as_path, iter_lines, short
from nodeprobe.data.tokenizer import Tokenizer, load_tokenizer
from nodeprobe.errors import NodeprobeError

__all__ = [
    "Corpus",
    "FORMATS",
    "detect_format",
    "iter_articles",
    "load_text_corpus",
    "load_pretraining_corpus",
    "stream_sequences",
    "article_sequences",
]

FORMATS = ("wikitext-raw", "wikitext-tokens", "txt", "jsonl", "parquet", "hub")
MODES = ("chunk", "truncate")

_TOP_HEADING = re.compile(r"^=\s+(?!=)(.*?)(?<!=)\s+=$")
_ANY_HEADING = re.compile(r"^(?:=\s+)+(.*?)(?:\s+=)+$")
_WT_GLUE = re.compile(r" @([-,.])@ ")
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# --------------------------------------------------------------------------- readers
def _detok_wikitext(line: str, tokenized: bool) -> str:
    line = _WT_GLUE.sub(r"\1", line)
    if tokenized:
        line = line.replace("<unk>", "[UNK]")
    return line


# An article is flushed once it holds this many characters (at a line boundary), so that a file
# without article breaks (a .txt with no blank line, a .raw without `` = Title = `` headings) still
# streams in bounded memory instead of becoming one article as large as the file.
MAX_ARTICLE_CHARS = 1 << 20


def _iter_wikitext(path: Path, tokenized: bool) -> Iterator[tuple[str, str]]:
    """``(title, text)`` per top-level `` = Title = `` section.

    Documented choice: an article is cut into consecutive pieces (same title) once its text reaches
    :data:`MAX_ARTICLE_CHARS` (1 MiB of characters, counted with the joining newlines), at a line
    boundary, so that memory stays bounded on a file without headings; files whose articles are
    all smaller give exactly the articles they always did.  (A single line is never split.)
    """
    title, lines, size = "", [], 0
    for raw in iter_lines(path, "WikiText file"):
        s = raw.strip()
        if not s:
            continue
        m = _TOP_HEADING.match(s)
        if m:
            if lines:
                yield title, "\n".join(lines)
            title, lines, size = _detok_wikitext(m.group(1), False).strip(), [], 0
            continue
        sub = _ANY_HEADING.match(s)
        if sub:
            s = sub.group(1)
        lines.append(_detok_wikitext(" " + s + " ", tokenized).strip())
        size += len(lines[-1]) + 1
        if size >= MAX_ARTICLE_CHARS:
            yield title, "\n".join(lines)
            lines, size = [], 0
    if lines:
        yield title, "\n".join(lines)


def _iter_txt(path: Path) -> Iterator[tuple[str, str]]:
    """``("", text)`` per blank-line-separated block.

    Documented choice: a block is cut into consecutive articles once it reaches
    :data:`MAX_ARTICLE_CHARS` (1 MiB of characters, counted with the joining newlines), at a line
    boundary, so that a file with no blank line streams in bounded memory instead of becoming one
    article as large as the file; files whose blocks are all smaller give exactly the articles
    they always did.  (A single line is never split.)
    """
    block: list[str] = []
    size = 0
    for line in iter_lines(path, "text file"):
        if line.strip():
            block.append(line.strip())
            size += len(block[-1]) + 1
            if size >= MAX_ARTICLE_CHARS:
                yield "", "\n".join(block)
                block, size = [], 0
        elif block:
            yield "", "\n".join(block)
            block, size = [], 0
    if block:
        yield "", "\n".join(block)


def _iter_jsonl(path: Path, text_field: str) -> Iterator[tuple[str, str]]:
    for lineno, line in enumerate(iter_lines(path, "JSONL file"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as e:
            raise NodeprobeError(
                f"{path}: line {lineno} is not valid JSON ({type(e).__name__}); allowed: one "
                f"JSON object with a string {text_field!r} per line"
            ) from e
        if not isinstance(obj, dict) or not isinstance(obj.get(text_field), str):
            raise NodeprobeError(
                f"{path}: line {lineno} is {short(obj, 40)}; allowed: a JSON object with a string "
                f"{text_field!r}"
            )
        title = obj.get("title")
        yield (title if isinstance(title, str) else ""), obj[text_field]


def _iter_parquet(path: Path, text_field: str) -> Iterator[tuple[str, str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - pyarrow ships with datasets
        raise NodeprobeError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from e
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise NodeprobeError(f"{path}: directory has no *.parquet files; allowed: a text file or a parquet directory")
    for f in files:
        try:
            pf = pq.ParquetFile(f)
            names = pf.schema_arrow.names
            if text_field not in names:
                raise NodeprobeError(
                    f"{f}: parquet has no column {text_field!r}; allowed: one of its columns "
                    f"({', '.join(names)[:120]}) as text_field"
                )
            cols = [text_field] + (["title"] if "title" in names else [])
            for batch in pf.iter_batches(columns=cols, batch_size=1024):
                texts = batch.column(text_field).to_pylist()
                titles = batch.column("title").to_pylist() if "title" in cols else [""] * len(texts)
                for ti, te in zip(titles, texts):
                    if isinstance(te, str):
                        yield (ti if isinstance(ti, str) else ""), te
        except NodeprobeError:
            raise
        except Exception as e:  # pyarrow raises ArrowInvalid/OSError for broken files
            raise NodeprobeError(f"{f}: cannot read parquet ({type(e).__name__}: {e})") from e


def _iter_hub(name: str, config: str | None, split: str, text_field: str) -> Iterator[tuple[str, str]]:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover
        raise NodeprobeError(f"{name}: loading a hub dataset needs `datasets`") from e
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=True)
        for row in ds:
            text = row.get(text_field)
            if isinstance(text, str):
                title = row.get("title")
                yield (title if isinstance(title, str) else ""), text
    except NodeprobeError:
        raise
    except Exception as e:  # network, unknown name/config, …
        raise NodeprobeError(
            f"{name} (config {config!r}, split {split!r}): cannot stream from the datasets hub "
            f"({type(e).__name__}: {short(str(e), 120)}); needs network access and a valid name"
        ) from e


def detect_format(source: PathLike) -> str:
    """The format of a text source: ``txt``, ``wikitext-raw``, ``wikitext-tokens``, ``jsonl``,
    ``parquet`` (a file or a directory of them) or ``hub`` (a datasets hub name); one-line
    :class:`NodeprobeError` for a missing path or a directory without parquet files.

    Example:
        >>> detect_format("wikimedia/wikipedia")
        'hub'
    """
    p = Path(source).expanduser()
    name = p.name.lower()
    if p.is_dir():
        if any(p.glob("*.parquet")):
            return "parquet"
        raise NodeprobeError(f"{p}: directory without *.parquet files; allowed: a text file or a parquet directory")
    if not p.exists():
        looks_like_file = p.suffix.lower() in (".txt", ".raw", ".tokens", ".jsonl", ".parquet", ".json", ".csv")
        if isinstance(source, str) and _HUB_NAME.match(source) and not looks_like_file:
            return "hub"
        raise NodeprobeError(
            f"{p}: text source not found; allowed: a file ({', '.join(FORMATS[:-1])}) or a hub "
            "name like wikimedia/wikipedia"
        )
    if name.endswith(".raw"):
        return "wikitext-raw"
    if name.endswith(".tokens"):
        return "wikitext-tokens"
    if name.endswith(".jsonl"):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    return "txt"


def iter_articles(
    source: PathLike,
    *,
    format: str | None = None,
    text_field: str = "text",
    config: str | None = None,
    split: str = "train",
    max_articles: int | None = None,
) -> Iterator[tuple[str, str]]:
    """Stream ``(title, text)`` articles from a text source without loading it all.

    Args:
        source: a file / parquet directory, or a hub name (``format="hub"`` or auto when no
            such path exists), e.g. ``"wikimedia/wikipedia"`` with ``config="20231101.en"``.
        format: one of :data:`FORMATS` or ``None`` (by file name).
        text_field: field/column holding the text (jsonl, parquet, hub).
        max_articles: stop after that many non-empty articles.

    Example:
        >>> next(iter_articles("../shared/data/wikitext-2/wiki.test.raw"))[0]  # doctest: +SKIP
        'Robert Boulter'
    """
    fmt = format or detect_format(source)
    if fmt not in FORMATS:
        raise NodeprobeError(f"format={fmt!r}: allowed: {', '.join(FORMATS)}")
    if fmt == "hub":
        it = _iter_hub(str(source), config, split, text_field)
    else:
        p = as_path(source, "text source")
        if fmt in ("wikitext-raw", "wikitext-tokens"):
            it = _iter_wikitext(p, fmt == "wikitext-tokens")
        elif fmt == "txt":
            it = _iter_txt(p)
        elif fmt == "jsonl":
            it = _iter_jsonl(p, text_field)
        else:
            it = _iter_parquet(p, text_field)
    n = 0
    for title, text in it:
        if max_articles is not None and n >= max_articles:
            return
        if text.strip():
            n += 1
            yield title, text


# --------------------------------------------------------------------------- corpus
def _stable_hash(ids: np.ndarray) -> int:
    return int.from_bytes(
        hashlib.blake2b(np.ascontiguousarray(ids, dtype="<i4").tobytes(), digest_size=8).digest(),
        "little",
    )


def article_sequences(
    ids: Sequence[int] | np.ndarray,
    cls_id: int,
    sep_id: int,
    max_len: int = 128,
    mode: str = "chunk",
    min_tokens: int = 1,
) -> list[list[int]]:
    """Sequences of one article: ``chunk`` windows of ``max_len − 2`` tokens or one
    ``truncate`` d sequence, each ``[CLS] … [SEP]``; windows shorter than ``min_tokens`` dropped.

    Example:
        >>> article_sequences([5, 6, 7, 8, 9], 101, 102, max_len=4)
        [[101, 5, 6, 102], [101, 7, 8, 102], [101, 9, 102]]
        >>> article_sequences([5, 6, 7, 8, 9], 101, 102, max_len=4, mode="truncate")
        [[101, 5, 6, 102]]
    """
    if mode not in MODES:
        raise NodeprobeError(f"mode={mode!r}: allowed: {', '.join(MODES)}")
    if not isinstance(max_len, (int, np.integer)) or max_len < 3:
        raise NodeprobeError(f"max_len={max_len!r}: allowed: an integer ≥ 3")
    w = int(max_len) - 2
    a = np.asarray(ids)
    starts = range(0, len(a), w) if mode == "chunk" else range(0, min(len(a), 1))
    out = []
    for s in starts:
        chunk = a[s : s + w]
        if len(chunk) >= max(1, min_tokens):
            out.append([cls_id, *chunk.tolist(), sep_id])
    return out


@dataclass
class Corpus:
    """Tokenised articles for MLM pre-training.

    Attributes:
        articles: ``list[Int[np.ndarray, "n_i"]]`` (int32), WordPiece ids per article, no
            specials, empty articles dropped.
        titles: one title per article (``""`` if the source has none).
        cls_id, sep_id, vocab_size: from the tokenizer used.
        source: description of where the text came from.

    Example:
        >>> c = Corpus([np.array([5, 6, 7], dtype=np.int32)], ["t"], 101, 102, 200, "demo")
        >>> c.n_tokens, c.to_sequences(max_len=4), int(c.token_counts()[6])
        (3, [[101, 5, 6, 102], [101, 7, 102]], 1)
    """

    articles: list[np.ndarray]
    titles: list[str]
    cls_id: int
    sep_id: int
    vocab_size: int
    source: str
    _counts: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.articles)

    @property
    def n_tokens(self) -> int:
        """Total number of WordPiece tokens (no specials)."""
        return int(sum(len(a) for a in self.articles))

    def token_counts(self) -> np.ndarray:
        """``Int[np.ndarray, "V"]``: corpus frequency of every token id (for APT vs frequency).

        Example:
            >>> Corpus([np.array([1, 1, 2], np.int32)], [""], 8, 9, 10, "demo").token_counts().tolist()
            [0, 2, 1, 0, 0, 0, 0, 0, 0, 0]
        """
        if self._counts is None:
            flat = np.concatenate(self.articles) if self.articles else np.zeros(0, np.int32)
            self._counts = np.bincount(flat, minlength=self.vocab_size).astype(np.int64)
        return self._counts

    def to_sequences(
        self, max_len: int = 128, mode: str = "chunk", min_tokens: int = 1
    ) -> list[list[int]]:
        """``[CLS] … [SEP]`` sequences (≤ ``max_len``) from every article, in article order.

        ``mode="chunk"`` (default): consecutive windows of ``max_len − 2`` tokens (the last one
        shorter; dropped if under ``min_tokens``). ``mode="truncate"``: one per article.

        Example:
            >>> c = Corpus([np.arange(5, 10, dtype=np.int32)], [""], 1, 2, 10, "demo")
            >>> c.to_sequences(max_len=5, mode="truncate")
            [[1, 5, 6, 7, 2]]
        """
        out: list[list[int]] = []
        for a in self.articles:
            out.extend(article_sequences(a, self.cls_id, self.sep_id, max_len, mode, min_tokens))
        if not out and self.articles:
            raise NodeprobeError(
                f"{self.source}: no sequence has ≥ {min_tokens} tokens; allowed: min_tokens ≤ "
                "the longest article"
            )
        return out

    def subset(self, indices: Iterable[int], source: str | None = None) -> Corpus:
        """The articles at ``indices`` (token counts recomputed from them).

        Example:
            >>> c = Corpus([np.array([5], np.int32), np.array([6, 7], np.int32)], ["a", "b"], 1, 2, 9, "d")
            >>> c.subset([1]).titles, c.subset([1]).n_tokens
            (['b'], 2)
        """
        idx = list(indices)
        return Corpus(
            [self.articles[i] for i in idx],
            [self.titles[i] for i in idx],
            self.cls_id,
            self.sep_id,
            self.vocab_size,
            source if source is not None else self.source,
        )

    def split_held_out(self, every: int = 50) -> tuple[Corpus, Corpus]:
        """``(train, held_out)``: an article is held out iff blake2b(ids) ≡ 0 (mod ``every``).

        Example:
            >>> arts = [np.array([i, i + 1], np.int32) for i in range(200)]
            >>> tr, ho = Corpus(arts, [""] * 200, 1, 2, 300, "demo").split_held_out()
            >>> len(tr) + len(ho), 0 < len(ho) < 20
            (200, True)
        """
        if not isinstance(every, int) or every < 2:
            raise NodeprobeError(f"every={every!r}: allowed: an integer ≥ 2")
        hashes = [_stable_hash(a) for a in self.articles]
        held = {i for i, h in enumerate(hashes) if h % every == 0}
        if not held and len(hashes) >= 2:
            held = {int(np.argmin(np.array(hashes, dtype=np.uint64)))}
        if len(held) == len(hashes) and len(hashes) >= 2:
            held.discard(int(np.argmax(np.array(hashes, dtype=np.uint64))))
        train_idx = [i for i in range(len(self)) if i not in held]
        return (
            self.subset(train_idx, f"{self.source}[train]"),
            self.subset(sorted(held), f"{self.source}[held-out]"),
        )

    @staticmethod
    def concat(corpora: Sequence[Corpus]) -> Corpus:
        """One corpus from several built with the same tokenizer (sources joined by ``+``).

        Example:
            >>> a = Corpus([np.array([5], np.int32)], ["a"], 1, 2, 9, "x")
            >>> c = Corpus.concat([a, a])
            >>> len(c), c.source
            (2, 'x+x')
        """
        if not corpora:
            raise NodeprobeError("Corpus.concat: no corpora given; allowed: ≥ 1")
        first = corpora[0]
        for c in corpora[1:]:
            if (c.cls_id, c.sep_id, c.vocab_size) != (first.cls_id, first.sep_id, first.vocab_size):
                raise NodeprobeError(
                    f"{c.source}: built with another vocab than {first.source}; allowed: one tokenizer"
                )
        return Corpus(
            [a for c in corpora for a in c.articles],
            [t for c in corpora for t in c.titles],
            first.cls_id,
            first.sep_id,
            first.vocab_size,
            "+".join(c.source for c in corpora),
        )


def _encode_articles(
    pairs: Iterable[tuple[str, str]], tokenizer: Tokenizer, batch: int = 512
) -> Iterator[tuple[str, np.ndarray]]:
    buf: list[tuple[str, str]] = []

    def flush() -> Iterator[tuple[str, np.ndarray]]:
        ids = tokenizer.encode_batch([t for _, t in buf])
        for (title, _), x in zip(buf, ids):
            if x:
                yield title, np.asarray(x, dtype=np.int32)
        buf.clear()

    chars = 0
    for pair in pairs:
        buf.append(pair)
        chars += len(pair[1])
        if len(buf) >= batch or chars >= MAX_ARTICLE_CHARS:  # ≤ ~1 MiB of text tokenised at a time
            yield from flush()
            chars = 0
    if buf:
        yield from flush()


def _corpus_from_pairs(pairs: Iterable[tuple[str, str]], tokenizer: Tokenizer, source: str) -> Corpus:
    titles, arts = [], []
    for title, ids in _encode_articles(pairs, tokenizer):
        titles.append(title)
        arts.append(ids)
    if not arts:
        raise NodeprobeError(f"{source}: no text found; allowed: a source with ≥ 1 non-empty article")
    return Corpus(arts, titles, tokenizer.cls_id, tokenizer.sep_id, tokenizer.vocab_size, source)


def load_text_corpus(
    source: PathLike,
    tokenizer: Tokenizer,
    *,
    format: str | None = None,
    text_field: str = "text",
    config: str | None = None,
    split: str = "train",
    max_articles: int | None = None,
) -> Corpus:
    """Tokenise a text source (see :func:`iter_articles`) into a :class:`Corpus`.

    Example:
        >>> c = load_text_corpus("../shared/data/wikitext-2/wiki.valid.tokens", tok)  # doctest: +SKIP
        >>> len(c), c.titles[0]                                                       # doctest: +SKIP
        (60, 'Homarus gammarus')
    """
    pairs = iter_articles(
        source, format=format, text_field=text_field, config=config, split=split,
        max_articles=max_articles,
    )
    return _corpus_from_pairs(pairs, tokenizer, f"text:{source}")


def stream_sequences(
    source: PathLike,
    tokenizer: Tokenizer,
    *,
    max_len: int = 128,
    mode: str = "chunk",
    min_tokens: int = 1,
    **kwargs,
) -> Iterator[list[int]]:
    """Lazily yield ``[CLS] … [SEP]`` sequences from a source too large to hold in memory
    (tokenises 512 articles at a time). ``kwargs`` go to :func:`iter_articles`.

    Example:
        >>> seqs = stream_sequences("wikimedia/wikipedia", tok, config="20231101.en",
        ...                         mode="truncate", max_articles=40_000)       # doctest: +SKIP
        >>> batches = iter_batches(seqs, 32)                                    # doctest: +SKIP
    """
    for _, ids in _encode_articles(iter_articles(source, **kwargs), tokenizer):
        yield from article_sequences(ids, tokenizer.cls_id, tokenizer.sep_id, max_len, mode, min_tokens)


def load_pretraining_corpus(
    data_dir: PathLike | None = None,
    tokenizer: Tokenizer | None = None,
    *,
    include: Sequence[str] = ("wikitext", "dbpedia"),
) -> Corpus:
    """The local pre-training corpus (~1.2 M tokens): WikiText-2 ``wiki.test.raw`` +
    ``wiki.valid.tokens`` and the DBpedia abstracts (``test.csv`` + ``val.csv`` content, one
    article each). FewRel is never included (it is the evaluation set).

    ``data_dir`` defaults to :func:`nodeprobe.data.resolve_data_dir`; ``tokenizer`` defaults to
    ``<data_dir>/tokenizer/bert-base-uncased-vocab.txt``.

    Example:
        >>> corpus = load_pretraining_corpus()  # doctest: +SKIP
        >>> len(corpus) > 10_000                # doctest: +SKIP
        True
    """
    from nodeprobe.data.dbpedia import read_dbpedia_csv
    from nodeprobe.data.download import resolve_data_dir

    d = resolve_data_dir(data_dir)
    bad = [x for x in include if x not in ("wikitext", "dbpedia")]
    if bad or not include:
        raise NodeprobeError(f"include={list(include)!r}: allowed: a non-empty subset of wikitext, dbpedia")
    if tokenizer is None:
        tokenizer = load_tokenizer(d / "tokenizer" / "bert-base-uncased-vocab.txt")
    parts = []
    if "wikitext" in include:
        for name in ("wiki.test.raw", "wiki.valid.tokens"):
            parts.append(load_text_corpus(d / "wikitext-2" / name, tokenizer))
    if "dbpedia" in include:
        for name in ("test.csv", "val.csv"):
            f = d / "dbpedia" / name
            rows = read_dbpedia_csv(f)
            parts.append(_corpus_from_pairs((("", t) for _, t in rows), tokenizer, f"dbpedia:{f}"))
    return Corpus.concat(parts)
