"""Fixtures for the nodeprobe.data tests: the real bert-base-uncased tokenizer (needs
shared data) and a tiny WordPiece vocab that needs nothing."""

from __future__ import annotations

import string
from pathlib import Path

import pytest

from nodeprobe.data import load_tokenizer

TINY_WORDS = [
    "the", "cat", "dog", "sat", "on", "mat", "new", "york", "is", "big", "river",
    "bridge", "of", "and", "in", "was", "born", "he", "she", "city",
]


def write_tiny_vocab(path: Path) -> Path:
    """A 100-odd-token BERT-style vocab: specials, markers, words, letters and ## letters."""
    toks = ["[PAD]", "[unused0]", "[unused1]", "[unused2]", "[unused3]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    toks += TINY_WORDS
    toks += list(string.ascii_lowercase) + list(string.digits) + list(".,-'()\"!?:;@")
    toks += ["##" + c for c in string.ascii_lowercase + string.digits]
    path.write_text("".join(t + "\n" for t in toks), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_vocab(tmp_path_factory) -> Path:
    return write_tiny_vocab(tmp_path_factory.mktemp("tinyvocab") / "vocab.txt")


@pytest.fixture(scope="session")
def tiny_tok(tiny_vocab):
    return load_tokenizer(tiny_vocab)


@pytest.fixture(scope="session")
def bert_vocab(shared_data) -> Path:
    return shared_data / "tokenizer" / "bert-base-uncased-vocab.txt"


@pytest.fixture(scope="session")
def bert_tok(bert_vocab):
    return load_tokenizer(bert_vocab)


@pytest.fixture(scope="session")
def fewrel_val(shared_data, bert_tok):
    """(train, test) of FewRel val_wiki with the defaults (loaded once per session)."""
    from nodeprobe.data import load_fewrel

    return load_fewrel(shared_data / "fewrel" / "val_wiki.json", bert_tok)


@pytest.fixture(scope="session")
def pretrain_load(shared_data, bert_tok):
    """(corpus, seconds to build it): wiki.test.raw + wiki.valid.tokens + DBpedia abstracts."""
    import time

    from nodeprobe.data import load_pretraining_corpus

    t0 = time.perf_counter()
    corpus = load_pretraining_corpus(shared_data, bert_tok)
    return corpus, time.perf_counter() - t0


@pytest.fixture(scope="session")
def pretrain_corpus(pretrain_load):
    return pretrain_load[0]
