"""The docstring examples of the analysis modules run and print what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["confusion", "readout", "hull", "cooperation", "apt"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    mod = importlib.import_module(f"nodeprobe.analysis.{name}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
