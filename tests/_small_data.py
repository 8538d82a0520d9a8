"""A small copy of the shared data folder for tests that train (a few MLM batches, a little DBpedia)."""

from __future__ import annotations

import shutil
from pathlib import Path


def small_data_copy(dest: Path, shared_data: Path, *, dbpedia_rows: int | None, wiki_test_bytes: int = 30_000,
                    wiki_valid_bytes: int = 15_000) -> Path:
    """Copy the tokenizer, the first ``dbpedia_rows`` lines of each DBpedia CSV (``None``: no DBpedia
    folder) and the first bytes of the two WikiText files from ``shared_data`` into ``dest``;
    returns ``dest``."""
    for sub in ("wikitext-2", "tokenizer") + (() if dbpedia_rows is None else ("dbpedia",)):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    for name in ("test.csv", "val.csv") if dbpedia_rows is not None else ():
        lines = (shared_data / "dbpedia" / name).read_text(encoding="utf-8").splitlines(keepends=True)
        (dest / "dbpedia" / name).write_text("".join(lines[:dbpedia_rows]), encoding="utf-8")
    shutil.copy(shared_data / "tokenizer" / "bert-base-uncased-vocab.txt", dest / "tokenizer")
    for name, n in (("wiki.test.raw", wiki_test_bytes), ("wiki.valid.tokens", wiki_valid_bytes)):
        (dest / "wikitext-2" / name).write_bytes((shared_data / "wikitext-2" / name).read_bytes()[:n])
    return dest
