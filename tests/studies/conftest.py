"""Shared caches of the METHODS v2 study tests: a tiny MLM (block readouts train on half its
items) and a tiny classifier with its train split (block readouts train there), every site cached."""

from __future__ import annotations

import pytest

from _tiny_models import tiny_eval_set, tiny_model
from _v2 import SITES
from nodeprobe.cache import build_cache


@pytest.fixture(scope="session")
def mlm(tmp_path_factory):
    """A cache of every site of a tiny random MLM."""
    model, es = tiny_model("mlm", seed=4), tiny_eval_set("mlm", n_batches=4, B=8)
    return build_cache(model, es, ",".join(SITES), tmp_path_factory.mktemp("mlm"), shard_batches=2)


@pytest.fixture(scope="session")
def cls(tmp_path_factory):
    """``(test cache, train cache)`` of a tiny random classifier."""
    model = tiny_model("cls", seed=3)
    test, train = tiny_eval_set("cls", n_batches=3, B=16, seed=1), tiny_eval_set("cls", n_batches=6, B=16, seed=2)
    d = tmp_path_factory.mktemp("cls")
    return build_cache(model, test, ",".join(SITES), d / "test"), build_cache(model, train, ",".join(SITES), d / "train")
