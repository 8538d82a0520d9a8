"""The runnable docstring examples of nodeprobe.data (those not marked +SKIP) stay correct."""

import doctest
import importlib

import pytest

MODULES = ["batching", "dbpedia", "download", "fewrel", "labeled", "masking", "text", "tokenizer"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    mod = importlib.import_module(f"nodeprobe.data.{name}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
