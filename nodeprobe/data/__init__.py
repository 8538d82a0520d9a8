"""Data: WordPiece tokenizer, FewRel / DBpedia / Wikipedia-text loaders, your own labelled tables
(:class:`UserData`, :mod:`nodeprobe.data.user`), MLM masking, batching
and downloads; the MLM corpus (:mod:`nodeprobe.data.corpus`) and the evaluation sets with their fixed
MLM masks (:mod:`nodeprobe.data.eval_sets`, imported from there). See each module's docstring for the
exact conventions.

Example:
    >>> from nodeprobe.data import load_tokenizer, load_fewrel, resolve_data_dir  # doctest: +SKIP
    >>> d = resolve_data_dir()                                                  # doctest: +SKIP
    >>> tok = load_tokenizer(d / "tokenizer" / "bert-base-uncased-vocab.txt")   # doctest: +SKIP
    >>> train, test = load_fewrel(d / "fewrel" / "val_wiki.json", tok)          # doctest: +SKIP
"""

from nodeprobe.data.batching import collate, collate_mlm, iter_batches, make_batches
from nodeprobe.data.dbpedia import (
    load_dbpedia,
    load_dbpedia_splits,
    read_dbpedia_csv,
    read_dbpedia_meta,
)
from nodeprobe.data.download import (
    KNOWN_SOURCES,
    Source,
    download_dir,
    ensure_file,
    fetch,
    resolve_data_dir,
)
from nodeprobe.data.fewrel import encode_relation_item, load_fewrel, read_fewrel, read_pid2name
from nodeprobe.data.labeled import LabeledSet
from nodeprobe.data.masking import (
    MaskResult,
    MLMMasker,
    eval_mask,
    eval_rng,
    mlm_mask,
    n_to_modify,
    step_rng,
)
from nodeprobe.data.text import (
    Corpus,
    article_sequences,
    iter_articles,
    load_pretraining_corpus,
    load_text_corpus,
    stream_sequences,
)
from nodeprobe.data.user import UserData, read_table, user_splits
from nodeprobe.data.tokenizer import MARKER_TOKENS, SPECIAL_TOKENS, Tokenizer, load_tokenizer

__all__ = [
    "Corpus",
    "KNOWN_SOURCES",
    "LabeledSet",
    "MARKER_TOKENS",
    "MLMMasker",
    "MaskResult",
    "SPECIAL_TOKENS",
    "Source",
    "Tokenizer",
    "UserData",
    "article_sequences",
    "collate",
    "collate_mlm",
    "download_dir",
    "encode_relation_item",
    "ensure_file",
    "eval_mask",
    "eval_rng",
    "fetch",
    "iter_articles",
    "iter_batches",
    "load_dbpedia",
    "load_dbpedia_splits",
    "load_fewrel",
    "load_pretraining_corpus",
    "load_text_corpus",
    "load_tokenizer",
    "make_batches",
    "mlm_mask",
    "n_to_modify",
    "read_dbpedia_csv",
    "read_dbpedia_meta",
    "read_fewrel",
    "read_pid2name",
    "read_table",
    "resolve_data_dir",
    "step_rng",
    "stream_sequences",
    "user_splits",
]
