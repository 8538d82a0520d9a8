"""Evaluation sets and the one evaluation loop every command uses.

An evaluation set is a sequence of padded batches with the items to score: sentences
(classification: the [CLS] readout) or modified positions (MLM: fixed, deterministic masks that
depend only on the text and the seed, METHODS §0).  :func:`run_eval` runs a model over it with
optional hooks and returns predictions, targets and per-item loss — never holding more than one
batch of activations (hooks that cache use :class:`nodeprobe.hooks.SiteCache`).

The batches are a list (the task's test split, the held-out corpus) or, for an MLM text given as
``text=`` (CLI ``--text-file``), a :class:`StreamedBatches`: re-iterable, re-reading the text on every
pass and never holding more than one buffer of sequences, so that a text larger than RAM can be
evaluated (:func:`stream_eval_set`).  Every consumer only iterates ``batches`` and takes
``len(batches)``.

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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nodeprobe.errors import NodeprobeError


@dataclass
class EvalBatch:
    """One padded batch: ``input_ids``/``attention_mask`` ``[B, P]``; MLM adds ``positions`` (bool
    ``[B, P]``, the modified positions); ``targets`` ``[n]`` are the classes of the scored items."""

    input_ids: Tensor  # Int64[Tensor, "B P"]
    attention_mask: Tensor  # Int64[Tensor, "B P"]
    targets: Tensor  # Int64[Tensor, "n"]
    positions: Tensor | None = None  # Bool[Tensor, "B P"]


def _hash_batch(h, b: EvalBatch) -> None:
    for t in (b.input_ids, b.targets, b.positions):
        if t is not None:  # the shape too: the same bytes in another [B, P] are another set
            h.update(np.asarray(t.shape, dtype=np.int64).tobytes())
            h.update(t.numpy().tobytes())


def _hashed(batches: Iterable[EvalBatch], h) -> Iterator[EvalBatch]:
    """Yield ``batches`` unchanged, feeding each one to the sha256 ``h`` first."""
    for b in batches:
        _hash_batch(h, b)
        yield b


def _fingerprint_batches(batches: Iterable[EvalBatch]) -> str:
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
    the same hash :func:`_fingerprint_batches` gives the materialised list.  A pass that runs to
    the end checks that it saw those same batches (:class:`NodeprobeError` if the source
    changed in between).

    Example:
        >>> import torch
        >>> def make():  # two batches of [B=1, P=3]
        ...     for i in range(2):
        ...         yield EvalBatch(torch.tensor([[2, 5 + i, 3]]), torch.ones(1, 3, dtype=torch.long),
        ...                         torch.tensor([i]))
        >>> sb = StreamedBatches(make)
        >>> len(sb), sb.n_items, sb.max_width, sb.fingerprint == _fingerprint_batches(make())
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

    The CLI calls it (``cli_common.check_text``); :func:`load_eval_set` / :func:`stream_eval_set`
    do not repeat it.  One-line :class:`NodeprobeError` (naming the value and what is allowed) for
    a task other than ``mlm``, a path that does not exist (whatever its suffix: the option takes no
    datasets hub name), a directory without ``*.parquet`` files or an unreadable file.  Bad UTF-8
    is found when the text is read (the counting pass of :func:`stream_eval_set`).

    Example:
        >>> check_text_source("no/such.txt")
        Traceback (most recent call last):
        ...
        nodeprobe.errors.NodeprobeError: --text-file no/such.txt: not found; allowed: a text file (.txt, .raw, .tokens, .jsonl, .parquet) or a parquet directory
    """
    import os

    from nodeprobe.data.text import _detect_format

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
    return _detect_format(p)


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
    (:func:`nodeprobe.train.pretrain.mlm_batch`).  Memory stays flat: at most one buffer of
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
    from nodeprobe.train.pretrain import mlm_batch

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
) -> EvalSet:
    """Build the evaluation set of a task.

    ``fewrel``/``dbpedia``: the test split (or ``split="train"``); with ``limit``, a seeded random
    subset of that many sentences.  ``mlm``: held-out Wikipedia sequences with fixed masks (a
    function of the text and ``seed``); with ``limit``, the first ``limit`` sequences.
    ``corpus``: an already loaded ``PretrainData`` of ``data`` (MLM only; saves loading it twice
    when the caller also needs its corpus counts).
    ``text``: MLM only — evaluate the whole of this text file / parquet directory / hub name
    instead of the held-out split, streamed (:func:`stream_eval_set`; batches length-sorted within
    buffers of ``buffer_batches × batch_size`` sequences; memory stays flat).

    Example:
        >>> es = load_eval_set("mlm", tok, text="big.txt", limit=10_000)   # doctest: +SKIP
        >>> es.streamed, len(es.batches)                                    # doctest: +SKIP
        (True, 157)
    """
    from nodeprobe.data.batching import collate, make_batches
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
    if task == "mlm":
        from nodeprobe.train.pretrain import PretrainData, build_eval_batches

        corp = corpus if corpus is not None else PretrainData.load(data, None, max_len)
        seqs = corp.heldout[:limit] if limit else corp.heldout
        if not seqs:
            raise NodeprobeError("task=mlm: the held-out evaluation set is empty")
        raw = build_eval_batches(seqs, tokenizer, seed, batch_size)
        batches = [EvalBatch(x, a, t, m) for x, a, m, t in raw]
        names = tokenizer.convert_ids_to_tokens(range(tokenizer.vocab_size))
        source = f"mlm:{corp.source}[held-out]"
    else:
        train, test = classification_splits(task, data, tokenizer, n_train=n_train, n_test=n_test, max_len=max_len)
        ds = {"test": test, "train": train}.get(split)
        if ds is None:
            raise NodeprobeError(f"split={split}: expected test or train")
        if limit and limit < len(ds):
            rng = np.random.default_rng(seed)
            ds = ds.subset(sorted(rng.choice(len(ds), size=limit, replace=False).tolist()))
        if len(ds) == 0:
            raise NodeprobeError(f"task={task}: the evaluation set is empty")
        batches = []
        for idx in make_batches(ds.lengths().tolist(), batch_size, shuffle_seed=None):
            b = collate([ds.input_ids[i] for i in idx], pad_id=tokenizer.pad_id)
            y = torch.tensor([ds.labels[i] for i in idx], dtype=torch.long)
            batches.append(EvalBatch(b["input_ids"], b["attention_mask"], y))
        names = list(ds.label_names)
        source = ds.source
    es = EvalSet(task, batches, names, source, seed)
    es.fingerprint = _fingerprint_batches(batches)
    return es


@dataclass
class EvalResult:
    """Predictions (argmax, ties → lowest index), targets and per-item loss, all ``[N]`` on CPU."""

    preds: Tensor  # Int64[Tensor, "N"]
    targets: Tensor  # Int64[Tensor, "N"]
    losses: Tensor  # Float32[Tensor, "N"]
    extra: dict = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return float((self.preds == self.targets).float().mean()) if self.targets.numel() else 0.0

    @property
    def loss(self) -> float:
        return float(self.losses.mean()) if self.losses.numel() else 0.0


@torch.no_grad()
def run_eval(model, eval_set: EvalSet, fwd_hooks=(), cache=None, device=None, progress: bool = False,
             description: str = "evaluate") -> EvalResult:
    """Run ``model`` (a HookedBert) over ``eval_set`` with optional hooks and a :class:`SiteCache`.

    Example:
        >>> base = run_eval(model, es)                                             # doctest: +SKIP
        >>> abl = run_eval(model, es, fwd_hooks=[ablate_head(5, 3)])               # doctest: +SKIP
    """
    from nodeprobe.render.progress import track_items

    device = device or next(model.parameters()).device
    model.eval()
    if eval_set.task != "mlm" and model.kind != "cls":
        raise NodeprobeError(f"task={eval_set.task} needs a fine-tuned classifier; this model is a {model.kind} model")
    if eval_set.task == "mlm" and model.kind != "mlm":
        raise NodeprobeError(f"task=mlm needs a masked-LM checkpoint; this model is a {model.kind} model")
    K = eval_set.n_classes
    if model.spec.n_classes != K:
        raise NodeprobeError(
            f"the model has {model.spec.n_classes} output classes but the {eval_set.task} data has {K}"
        )
    preds, losses, targets = [], [], []
    hooks = list(fwd_hooks) + (cache.fwd_hooks() if cache is not None else [])
    with model.hooks(fwd_hooks=hooks):
        for b in track_items(eval_set.batches, len(eval_set.batches), description, enabled=progress):
            targets.append(b.targets)  # collected in this one pass (a streamed set is not re-read)
            if cache is not None and b.positions is not None:
                cache.set_positions(*torch.nonzero(b.positions, as_tuple=True))
            pos = b.positions.to(device) if b.positions is not None else None
            logits = model(b.input_ids.to(device), b.attention_mask.to(device), positions=pos).float()
            t = b.targets.to(device)
            preds.append(logits.argmax(-1).cpu())
            losses.append(F.cross_entropy(logits, t, reduction="none").cpu())
    return EvalResult(torch.cat(preds), torch.cat(targets), torch.cat(losses))
