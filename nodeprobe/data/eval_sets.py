"""Evaluation sets: fixed batches with the items to score, and the MLM evaluation masks.

An evaluation set (:class:`EvalSet`) is a sequence of padded batches (:class:`EvalBatch`) with the
items to score: sentences (classification: the [CLS] readout) or modified positions (MLM: fixed,
deterministic masks that depend only on the text and the seed, METHODS §0).
:func:`nodeprobe.evaluate.run_eval` — the one evaluation loop — runs a model over it.

The batches are a list (the task's test split, the held-out corpus) or, for an MLM text given as
``text=`` (CLI ``--text-file``), a :class:`StreamedBatches`: re-iterable, re-reading the text on every
pass and never holding more than one buffer of sequences, so that a text larger than RAM can be
evaluated (:func:`stream_eval_set`).  Every consumer only iterates ``batches`` and takes
``len(batches)``.

Builders: :func:`load_eval_set` (a task's test split or held-out corpus, or a streamed text),
:func:`labeled_eval_set` (any :class:`nodeprobe.data.labeled.LabeledSet`, e.g. fine-tuning's test
split), :func:`mlm_eval_set` (token sequences with fixed masks, e.g. pre-training's held-out
set).  :func:`mlm_batch` pads and masks one MLM batch (training: a random generator; evaluation:
fixed masks); :func:`build_eval_batches` gives the fixed-mask batches of a list of sequences.

Example:
    >>> es = load_eval_set("fewrel", tokenizer, data="../shared/data")     # doctest: +SKIP
    >>> res = run_eval(model, es)                                         # doctest: +SKIP
    >>> res.accuracy                                                      # doctest: +SKIP
    >>> big = load_eval_set("mlm", tokenizer, text="wiki.txt")            # doctest: +SKIP
    >>> len(big.batches), big.n_items, run_eval(model, big).loss          # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from nodeprobe.errors import NodeprobeError

__all__ = ["EvalBatch", "batch_types", "EvalSet", "StreamedBatches", "TEXT_FILE_ALLOWED", "build_eval_batches", "check_text_source",
           "fingerprint_batches", "labeled_eval_set", "load_eval_set", "mlm_batch", "mlm_eval_set",
           "stream_eval_set"]


def mlm_batch(seqs, tokenizer, *, rng=None, seed=None, rate: float = 0.15):
    """Pad and mask a batch of token sequences (training: ``rng``; evaluation: fixed masks from ``seed``).

    ``rate`` of the non-special positions are modified (80/10/10, METHODS §0).  Returns
    ``(corrupted_ids, attention_mask, modified, targets)``: ``Int64[Tensor, "B P"]`` ×2,
    ``modified`` ``Bool[Tensor, "B P"]`` whose row-major order matches ``targets``
    ``Int64[Tensor, "n"]`` (the original ids there).

    Example:
        >>> ids, attn, modified, targets = mlm_batch([[101, 7592, 2088, 102]], tok, seed=0)  # doctest: +SKIP
        >>> ids.shape, int(modified.sum()) == targets.numel()                              # doctest: +SKIP
        (torch.Size([1, 4]), True)
    """
    from nodeprobe.data.batching import collate_mlm
    from nodeprobe.data.masking import MLMMasker

    b = collate_mlm(seqs, tokenizer.pad_id, MLMMasker.from_tokenizer(tokenizer, rate), rng=rng, seed=seed)
    modified = torch.zeros_like(b["input_ids"], dtype=torch.bool)
    modified[b["positions"][:, 0], b["positions"][:, 1]] = True
    order = b["positions"][:, 0] * b["input_ids"].shape[1] + b["positions"][:, 1]
    targets = b["targets"][torch.argsort(order)]  # row-major, as x[modified]
    return b["input_ids"], b["attention_mask"], modified, targets


def build_eval_batches(sequences, tokenizer, seed: int, batch_size: int = 64):
    """Deterministic evaluation batches of ``sequences``, length-sorted in batches of ``batch_size``:
    each sequence's mask is a function of its ids and ``seed`` (:func:`mlm_batch`).

    Returns a list of ``(ids, attention_mask, modified, targets)`` tuples (shapes as :func:`mlm_batch`).

    Example:
        >>> raw = build_eval_batches(heldout_sequences, tok, seed=0)        # doctest: +SKIP
        >>> ids, attn, modified, targets = raw[0]                           # doctest: +SKIP
    """
    from nodeprobe.data.batching import make_batches

    return [mlm_batch([sequences[i] for i in idx], tokenizer, seed=seed)
            for idx in make_batches([len(s) for s in sequences], batch_size, shuffle_seed=None)]


@dataclass
class EvalBatch:
    """One padded batch: ``input_ids``/``attention_mask`` ``[B, P]``; MLM adds ``positions`` (bool
    ``[B, P]``, the modified positions); ``targets`` ``[n]`` are the classes of the scored items."""

    input_ids: Tensor  # Int64[Tensor, "B P"]
    attention_mask: Tensor  # Int64[Tensor, "B P"]
    targets: Tensor  # Int64[Tensor, "n"]
    positions: Tensor | None = None  # Bool[Tensor, "B P"]
    token_type_ids: Tensor | None = None  # Int64[Tensor, "B P"]: sentence pairs of BERT/ELECTRA (None: zeros)


def batch_types(b, model, device=None) -> Tensor | None:
    """A batch's token types on ``device`` for ``model``: None when every token is type 0 or the
    model has no token types (DistilBERT, like its Hugging Face class, reads none)."""
    t = getattr(b, "token_type_ids", None)
    if t is None or getattr(model.cfg, "n_types", 2) < 2:
        return None
    return t.to(device) if device is not None else t


def _hash_batch(h, b: EvalBatch) -> None:
    for t in (b.input_ids, b.targets, b.positions, b.token_type_ids):
        if t is not None:  # the shape too: the same bytes in another [B, P] are another set
            h.update(np.asarray(t.shape, dtype=np.int64).tobytes())
            h.update(t.numpy().tobytes())


def _hashed(batches: Iterable[EvalBatch], h) -> Iterator[EvalBatch]:
    """Yield ``batches`` unchanged, feeding each one to the sha256 ``h`` first."""
    for b in batches:
        _hash_batch(h, b)
        yield b


def fingerprint_batches(batches: Iterable[EvalBatch]) -> str:
    """The 16-hex-digit sha256 of the batches' ids, targets and positions (with their shapes):
    what identifies an evaluation set (``EvalSet.fingerprint``; activation caches are keyed by it).

    Example:
        >>> b = EvalBatch(torch.tensor([[2, 5, 3]]), torch.ones(1, 3, dtype=torch.long), torch.tensor([1]))
        >>> len(fingerprint_batches([b])), fingerprint_batches([b]) == fingerprint_batches([b])
        (16, True)
    """
    h = hashlib.sha256()
    for _ in _hashed(batches, h):
        pass
    return h.hexdigest()[:16]


class StreamedBatches:
    """Evaluation batches built lazily, re-iterable: a set larger than RAM.

    ``make()`` returns a fresh iterator of :class:`EvalBatch` (e.g. one that re-reads a text
    file); every ``iter()`` calls it again, so only the batch in use (and whatever buffer
    ``make`` keeps) is in memory.  One counting pass at construction gives ``len()``,
    ``n_items`` (scored items), ``max_width`` (the widest batch, ``P``) and ``fingerprint`` —
    the same hash :func:`fingerprint_batches` gives the materialised list.  A pass that runs to
    the end checks that it saw those same batches (:class:`NodeprobeError` if the source
    changed in between).

    Example:
        >>> import torch
        >>> def make():  # two batches of [B=1, P=3]
        ...     for i in range(2):
        ...         yield EvalBatch(torch.tensor([[2, 5 + i, 3]]), torch.ones(1, 3, dtype=torch.long),
        ...                         torch.tensor([i]))
        >>> sb = StreamedBatches(make)
        >>> len(sb), sb.n_items, sb.max_width, sb.fingerprint == fingerprint_batches(make())
        (2, 2, 3, True)
        >>> [b.targets.tolist() for b in sb] == [b.targets.tolist() for b in sb]
        True
    """

    def __init__(self, make: Callable[[], Iterable[EvalBatch]], what: str = "the evaluation source"):
        self._make = make
        self.what = what
        h = hashlib.sha256()
        n = items = width = 0
        for b in _hashed(make(), h):
            n += 1
            items += int(b.targets.numel())
            width = max(width, int(b.input_ids.shape[1]))
        self._len, self.n_items, self.max_width = n, items, width
        self.fingerprint = h.hexdigest()[:16]

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[EvalBatch]:
        h = hashlib.sha256()
        n = 0
        for b in _hashed(self._make(), h):
            n += 1
            yield b
        if n != self._len or h.hexdigest()[:16] != self.fingerprint:
            raise NodeprobeError(
                f"{self.what}: changed while being evaluated ({n} batches now, {self._len} when counted); "
                "keep the text unchanged during a run"
            )

    def __repr__(self) -> str:
        return f"StreamedBatches({self._len} batches, {self.n_items} items, fingerprint {self.fingerprint})"


@dataclass
class EvalSet:
    """Batches plus what a report needs to name things.

    ``batches`` is a ``list[EvalBatch]`` or a re-iterable :class:`StreamedBatches`; consumers
    only iterate it and take ``len()``.
    """

    task: str
    batches: list[EvalBatch] | StreamedBatches
    class_names: list[str]  # label names, or the vocab for MLM
    source: str
    seed: int
    fingerprint: str = ""

    @property
    def n_items(self) -> int:
        known = getattr(self.batches, "n_items", None)
        if known is not None:
            return int(known)
        return sum(int(b.targets.numel()) for b in self.batches)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def streamed(self) -> bool:
        """True when the batches are re-read from the source on every pass."""
        return isinstance(self.batches, StreamedBatches)

    def targets(self) -> Tensor:
        """``Int64[Tensor, "N"]``: the targets of all items (a full pass over a streamed set)."""
        parts = [b.targets for b in self.batches]
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)


TEXT_FILE_ALLOWED = "a text file (.txt, .raw, .tokens, .jsonl, .parquet) or a parquet directory"


def check_text_source(text, task: str = "mlm") -> str:
    """Validate a ``--text-file`` source once, before anything is loaded; returns its format.

    The CLI calls it (``nodeprobe.cli.options.check_text``); :func:`load_eval_set` / :func:`stream_eval_set`
    do not repeat it.  One-line :class:`NodeprobeError` (naming the value and what is allowed) for
    a task other than ``mlm``, a path that does not exist (whatever its suffix: the option takes no
    datasets hub name), a directory without ``*.parquet`` files or an unreadable file.  Bad UTF-8
    is found when the text is read (the counting pass of :func:`stream_eval_set`).

    Example:
        >>> check_text_source("no/such.txt")
        Traceback (most recent call last):
        ...
        nodeprobe.errors.NodeprobeError: text_file=no/such.txt: not found; allowed: a text file (.txt, .raw, .tokens, .jsonl, .parquet) or a parquet directory
    """
    import os

    from nodeprobe.data.text import detect_format

    allowed = TEXT_FILE_ALLOWED
    if task != "mlm":
        raise NodeprobeError(f"text_file={text}: evaluates masked-LM text; allowed only with task=mlm "
                             f"(got task={task})")
    if not isinstance(text, (str, os.PathLike)) or not str(text).strip():
        raise NodeprobeError(f"text_file={text!r}: expected a file path; allowed: {allowed}")
    p = Path(text).expanduser()
    if p.is_dir():
        if not any(p.glob("*.parquet")):
            raise NodeprobeError(f"text_file={text}: is a directory without *.parquet files; allowed: {allowed}")
    elif p.exists():
        try:
            with open(p, "rb"):
                pass
        except OSError as e:
            raise NodeprobeError(f"text_file={text}: cannot read it ({e.strerror or e}); allowed: {allowed}") from None
    else:
        raise NodeprobeError(f"text_file={text}: not found; allowed: {allowed}")
    return detect_format(p)


def stream_eval_set(
    text,
    tokenizer,
    *,
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    max_len: int = 128,
    buffer_batches: int = 100,
    **source_kwargs,
) -> EvalSet:
    """A streamed MLM evaluation set over *all* of ``text`` (a file, parquet directory or hub
    name: :func:`nodeprobe.data.text.stream_sequences`), with fixed masks (a function of each
    sequence and ``seed``).

    Each pass re-reads the text: ``[CLS] … [SEP]`` chunks of ≤ ``max_len`` tokens (the first
    ``limit`` of them) → length-sorted batches within buffers of ``buffer_batches × batch_size``
    sequences (:func:`nodeprobe.data.batching.iter_batches`) → masked batches
    (:func:`mlm_batch`).  Memory stays flat: at most one buffer of
    sequences and one batch, whatever the size of the text.  One counting pass gives
    ``len(es.batches)``, ``es.n_items`` and ``es.fingerprint`` (the hash of exactly the batches
    a pass yields, as for a materialised set).  Batch ``i`` holds ``input_ids``/``attention_mask``
    ``Int64[Tensor, "B P"]``, ``positions`` ``Bool[Tensor, "B P"]`` and ``targets``
    ``Int64[Tensor, "n_i"]``.  ``source_kwargs`` go to
    :func:`nodeprobe.data.text.iter_articles` (``format``, ``text_field``, ``config``, …).

    Example:
        >>> es = stream_eval_set("big.txt", tok, batch_size=32)     # doctest: +SKIP
        >>> len(es.batches), es.n_items                               # doctest: +SKIP
        (31250, 2400000)
        >>> res = run_eval(model, es)                                 # doctest: +SKIP
    """
    from nodeprobe.data.batching import iter_batches
    from nodeprobe.data.text import stream_sequences

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise NodeprobeError(f"limit={limit}: expected a positive number of items")

    def make() -> Iterator[EvalBatch]:
        seqs = stream_sequences(text, tokenizer, max_len=max_len, **source_kwargs)
        if limit is not None:
            seqs = itertools.islice(seqs, limit)
        for _, group in iter_batches(seqs, batch_size, sort=True, buffer_batches=buffer_batches):
            x, a, m, t = mlm_batch(group, tokenizer, seed=seed)
            yield EvalBatch(x, a, t, m)

    batches = StreamedBatches(make, what=f"text_file={text}")
    if len(batches) == 0:
        raise NodeprobeError(f"text_file={text}: no text in it; allowed: a source with ≥ 1 non-empty article")
    if batches.n_items == 0:
        raise NodeprobeError(f"text_file={text}: its sequences have no maskable tokens")
    names = tokenizer.convert_ids_to_tokens(range(tokenizer.vocab_size))
    lim = f"[:{limit}]" if limit is not None else ""
    es = EvalSet("mlm", batches, names, f"mlm:text:{text}{lim}[streamed]", seed)
    es.fingerprint = batches.fingerprint
    return es


def load_eval_set(
    task: str,
    tokenizer,
    data: str | Path | None = None,
    *,
    split: str = "test",
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    max_len: int = 128,
    n_train: int = 630,
    n_test: int = 70,
    corpus=None,
    text=None,
    buffer_batches: int = 100,
    labels_of=None,
) -> EvalSet:
    """Build the evaluation set of a task.

    ``fewrel``/``dbpedia``: the test split (or ``split="train"``); with ``limit``, a seeded random
    subset of that many sentences.  ``mlm``: held-out Wikipedia sequences with fixed masks (a
    function of the text and ``seed``); with ``limit``, the first ``limit`` sequences.
    ``corpus``: an already loaded :class:`nodeprobe.data.corpus.PretrainData` of ``data`` (MLM only; saves loading it twice
    when the caller also needs its corpus counts).
    ``text``: MLM only — evaluate the whole of this text file / parquet directory / hub name
    instead of the held-out split, streamed (:func:`stream_eval_set`; batches length-sorted within
    buffers of ``buffer_batches × batch_size`` sequences; memory stays flat).
    ``dataset``: your own table, ``data`` a :class:`nodeprobe.data.user.UserData` (its test split, or
    ``split="train"``; ``limit`` as for ``fewrel``).  ``labels_of``: the classifier's HF config
    (``num_labels``, ``id2label``) the set is scored by — its labels are then checked against and
    put in that model's order (:func:`nodeprobe.data.user.align_labels`).  ``mlm`` with a
    ``UserData`` ``data``: the MLM text is its ``text_column`` (each row an article, chunked into
    ``[CLS] … [SEP]`` sequences of ≤ ``max_len`` tokens; ``limit``: the first ``limit`` sequences).
    The fingerprint of a ``UserData`` set also hashes :meth:`~nodeprobe.data.user.UserData.fingerprint`
    and the class names.

    Example:
        >>> es = load_eval_set("mlm", tok, text="big.txt", limit=10_000)   # doctest: +SKIP
        >>> es.streamed, len(es.batches)                                    # doctest: +SKIP
        (True, 157)
    """
    from nodeprobe.data.tasks import check_task, classification_splits

    check_task(task)
    if limit is not None and limit < 1:
        raise NodeprobeError(f"limit={limit}: expected a positive number of items")
    if text is not None:  # the source itself was checked by the CLI (check_text_source), once
        if task != "mlm":
            raise NodeprobeError(f"text_file={text}: evaluates masked-LM text; allowed only with task=mlm "
                                 f"(got task={task})")
        return stream_eval_set(text, tokenizer, limit=limit, seed=seed, batch_size=batch_size, max_len=max_len,
                               buffer_batches=buffer_batches)
    from nodeprobe.data.user import UserData

    user = data if isinstance(data, UserData) else None
    if user is not None and task not in ("mlm", "dataset"):
        raise NodeprobeError(f"dataset={user.path}: your own table is task=dataset (or task=mlm: its text column); "
                             f"got task={task}")
    if task == "mlm" and user is not None:
        return _user_mlm_eval_set(user, tokenizer, limit=limit, seed=seed, batch_size=batch_size, max_len=max_len)
    if task == "mlm":
        from nodeprobe.data.corpus import PretrainData

        corp = corpus if corpus is not None else PretrainData.load(data, None, max_len, tokenizer=tokenizer)
        seqs = corp.heldout[:limit] if limit else corp.heldout
        if not seqs:
            raise NodeprobeError("task=mlm: the held-out evaluation set is empty")
        return mlm_eval_set(seqs, tokenizer, seed=seed, batch_size=batch_size, source=f"mlm:{corp.source}[held-out]")
    if split not in ("test", "train"):
        raise NodeprobeError(f"split={split}: expected test or train")
    if task == "dataset":
        from nodeprobe.data.tasks import user_data

        user = user_data(data)
    train, test = classification_splits(task, data, tokenizer, n_train=n_train, n_test=n_test, max_len=max_len)
    ds = {"test": test, "train": train}[split]
    if user is not None and labels_of is not None:
        from nodeprobe.data.user import align_labels

        ds = align_labels(ds, labels_of.num_labels, getattr(labels_of, "id2label", None),
                          what=f"dataset={user.path}")
    if limit and limit < len(ds):
        rng = np.random.default_rng(seed)
        ds = ds.subset(sorted(rng.choice(len(ds), size=limit, replace=False).tolist()))
    if len(ds) == 0:
        raise NodeprobeError(f"task={task}: the evaluation set is empty")
    es = labeled_eval_set(ds, task, pad_id=tokenizer.pad_id, seed=seed, batch_size=batch_size)
    if user is not None:
        es.fingerprint = _with_data(es.fingerprint, user, es.class_names)
    return es


def _with_data(fingerprint: str, user, class_names) -> str:
    """An evaluation set's batch fingerprint with its :class:`~nodeprobe.data.user.UserData` folded in."""
    blob = json.dumps([fingerprint, user.fingerprint(), list(class_names)], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _user_mlm_eval_set(user, tokenizer, *, limit, seed, batch_size, max_len) -> EvalSet:
    """``--task mlm --dataset``: the ``text_column`` of ``user`` as MLM text (:func:`mlm_eval_set`)."""
    from nodeprobe.data.text import article_sequences
    from nodeprobe.data.user import user_texts

    seqs = []
    for ids in tokenizer.encode_batch(user_texts(user)):
        if ids:
            seqs.extend(article_sequences(ids, tokenizer.cls_id, tokenizer.sep_id, max_len=max_len))
        if limit is not None and len(seqs) >= limit:
            break
    seqs = seqs[:limit] if limit else seqs
    if not seqs:
        raise NodeprobeError(f"text_column={user.text_column}: {user.path} has no text in it; "
                             "allowed: a column with ≥ 1 non-empty text")
    es = mlm_eval_set(seqs, tokenizer, seed=seed, batch_size=batch_size,
                      source=f"mlm:user:{user.path}:{user.text_column}" + (f"[:{limit}]" if limit else ""))
    if es.n_items == 0:
        raise NodeprobeError(f"text_column={user.text_column}: {user.path}: its sequences have no maskable tokens")
    es.fingerprint = _with_data(es.fingerprint, user, [])
    return es


def mlm_eval_set(sequences, tokenizer, *, seed: int = 0, batch_size: int = 64, source: str = "sequences") -> EvalSet:
    """An MLM evaluation set of token ``sequences`` (``[CLS] … [SEP]`` id lists) with fixed masks
    (a function of each sequence and ``seed``: :func:`build_eval_batches`); the items are the
    modified positions, the classes the vocabulary.

    Batch ``i``: ``input_ids``/``attention_mask`` ``Int64[Tensor, "B P"]``, ``positions``
    ``Bool[Tensor, "B P"]``, ``targets`` ``Int64[Tensor, "n_i"]``.  Pre-training evaluates its
    held-out sequences with it.

    Example:
        >>> es = mlm_eval_set(corpus.heldout, tok, seed=0, source="mlm:wiki[held-out]")  # doctest: +SKIP
        >>> es.n_classes == tok.vocab_size, es.n_items                                   # doctest: +SKIP
        (True, 5526)
    """
    raw = build_eval_batches(sequences, tokenizer, seed, batch_size)
    batches = [EvalBatch(x, a, t, m) for x, a, m, t in raw]
    names = tokenizer.convert_ids_to_tokens(range(tokenizer.vocab_size))
    es = EvalSet("mlm", batches, names, source, seed)
    es.fingerprint = fingerprint_batches(batches)
    return es


def labeled_eval_set(dataset, task: str, *, pad_id: int = 0, seed: int = 0, batch_size: int = 64) -> EvalSet:
    """A classification evaluation set of a :class:`nodeprobe.data.labeled.LabeledSet` (every
    sentence, length-sorted batches of ``batch_size``, padded with ``pad_id``); ``seed`` is only
    recorded.  Fine-tuning evaluates its test split with it.

    Batch ``i``: ``input_ids``/``attention_mask`` ``Int64[Tensor, "B P"]``, ``targets``
    ``Int64[Tensor, "B"]`` (the labels).

    Example:
        >>> train, test = classification_splits("fewrel", data, tok)      # doctest: +SKIP
        >>> es = labeled_eval_set(test, "fewrel", pad_id=tok.pad_id)       # doctest: +SKIP
        >>> es.n_items == len(test), es.class_names == test.label_names    # doctest: +SKIP
        (True, True)
    """
    from nodeprobe.data.batching import collate, make_batches, segment_ids

    batches = []
    sep = getattr(dataset, "segment_sep", None)
    for idx in make_batches(dataset.lengths().tolist(), batch_size, shuffle_seed=None):
        b = collate([dataset.input_ids[i] for i in idx], pad_id=pad_id)
        y = torch.tensor([dataset.labels[i] for i in idx], dtype=torch.long)
        types = None if sep is None else segment_ids(b["input_ids"], b["attention_mask"], sep)
        batches.append(EvalBatch(b["input_ids"], b["attention_mask"], y, token_type_ids=types))
    es = EvalSet(task, batches, list(dataset.label_names), dataset.source, seed)
    es.fingerprint = fingerprint_batches(batches)
    return es
