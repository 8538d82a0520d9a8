"""The MLM corpus: training and held-out token sequences of the pre-training text.

Pre-training trains on ``train`` and evaluates ``heldout`` (with fixed masks:
:func:`nodeprobe.data.eval_sets.mlm_eval_set`); the held-out set is also the default MLM
evaluation set of every command, and ``counts`` are the corpus frequencies APT needs.

Example:
    >>> from nodeprobe.data.corpus import PretrainData                   # doctest: +SKIP
    >>> corp = PretrainData.load("../shared/data")                      # doctest: +SKIP
    >>> corp.source, len(corp.heldout)                                  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from nodeprobe.errors import NodeprobeError

__all__ = ["PretrainData"]

HELDOUT_EVERY = 20  # an article is held out iff its stable hash ≡ 0 (mod 20): ~5 %
_CORPORA: dict = {}

def _is_default(tokenizer, data_dir) -> bool:
    """Whether ``tokenizer`` is an uncased WordPiece over bert-base-uncased's vocab (the corpus's default)."""
    from nodeprobe.data.tokenizer import Tokenizer, load_tokenizer

    if not isinstance(tokenizer, Tokenizer) or not tokenizer.lowercase or tokenizer.vocab_size != 30522:
        return False
    from pathlib import Path

    path = Path(data_dir) / "tokenizer" / "bert-base-uncased-vocab.txt"
    if str(path) not in _DEFAULT_VOCAB:
        try:
            _DEFAULT_VOCAB[str(path)] = load_tokenizer(path).vocab
        except NodeprobeError:
            _DEFAULT_VOCAB[str(path)] = None
    return tokenizer.vocab == _DEFAULT_VOCAB[str(path)]


_DEFAULT_VOCAB: dict = {}



@dataclass
class PretrainData:
    """Training and held-out ``[CLS] … [SEP]`` sequences of the MLM corpus (pre-training, the
    held-out MLM evaluation set, APT's corpus counts, similarity texts).

    ``train``/``heldout``: lists of token-id sequences (≤ ``max_len``); ``counts``
    ``Int64[ndarray, "V"]``: corpus frequency per token id in the training articles;
    ``fingerprint``: sha256 of all articles' ids.

    Example:
        >>> corp = PretrainData.load("../shared/data")                  # doctest: +SKIP
        >>> len(corp.train), len(corp.heldout), corp.counts.shape        # doctest: +SKIP
        (2100, 110, (30522,))
    """

    tokenizer: object
    train: list
    heldout: list
    source: str
    fingerprint: str
    counts: np.ndarray  # corpus frequency per token id (training articles)

    @classmethod
    def load(cls, data_dir=None, corpus: str | None = None, max_len: int = 128,
             heldout_every: int | None = None, tokenizer=None) -> PretrainData:
        """The local Wikipedia corpus (``data_dir``) or any text source given as ``corpus``; an
        article is held out iff its stable hash ≡ 0 (mod ``heldout_every``; default: the
        pre-training setting ``PretrainSettings.heldout_every``, :data:`HELDOUT_EVERY`).
        ``tokenizer``: the model's own (a RoBERTa BPE, …); default bert-base-uncased's vocab.

        Loaded once per process and argument set (tokenising ~1 M tokens takes seconds).
        """
        from nodeprobe.data.download import resolve_data_dir

        if heldout_every is None:
            heldout_every = HELDOUT_EVERY
        if tokenizer is not None and _is_default(tokenizer, resolve_data_dir(data_dir)):
            tokenizer = None  # bert-base-uncased's own vocab: the same ids, one tokenised corpus
        tok_key = None if tokenizer is None else (type(tokenizer).__name__, str(getattr(tokenizer, "vocab_path", "")),
                                                  tokenizer.vocab_size)
        key = (str(resolve_data_dir(data_dir)), corpus, max_len, heldout_every, tok_key)
        if key not in _CORPORA:
            _CORPORA[key] = cls._load(data_dir, corpus, max_len, heldout_every, tokenizer)
        return _CORPORA[key]

    @classmethod
    def _load(cls, data_dir, corpus, max_len, heldout_every, tokenizer=None):
        from nodeprobe.data.download import resolve_data_dir
        from nodeprobe.data.text import load_pretraining_corpus, load_text_corpus
        from nodeprobe.data.tokenizer import load_tokenizer

        d = resolve_data_dir(data_dir)
        tok = tokenizer if tokenizer is not None else load_tokenizer(d / "tokenizer" / "bert-base-uncased-vocab.txt")
        if corpus:
            c = load_text_corpus(corpus, tok)
        else:
            c = load_pretraining_corpus(d, tok)
        if len(c) < 2:
            raise NodeprobeError(f"corpus {c.source}: fewer than 2 articles; need text to train and hold out")
        train_c, held_c = c.split_held_out(heldout_every)
        h = hashlib.sha256()
        for a in c.articles:
            h.update(a.tobytes())
        return cls(tok, train_c.to_sequences(max_len), held_c.to_sequences(max_len), c.source,
                   h.hexdigest()[:16], train_c.token_counts())
