"""nodeprobe: hooked BERT for node- and head-level specialization analyses.

Data flow: load → hook → cache → analyse → report.

The public names are imported on first use (PEP 562), so ``import nodeprobe`` — and with it the
``nodeprobe`` command's start-up — does not import torch or TransformerLens.

Example:
    >>> import nodeprobe                                                   # doctest: +SKIP
    >>> model = nodeprobe.load_model("runs/cpu/finetune/final")            # doctest: +SKIP
    >>> logits = model.run_with_hooks(ids, fwd_hooks=[nodeprobe.hooks.ablate_head(5, 3)])  # doctest: +SKIP
    >>> W, b = model.readout_weights()                                     # doctest: +SKIP
    >>> preds = nodeprobe.node_predictions(W, b, X)   # [N, d]: every single node's predictions  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from nodeprobe.errors import NodeprobeError

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from nodeprobe import hooks
    from nodeprobe.analysis import (
        apt_per_token,
        apt_vs_frequency,
        cooperation,
        hull_bound,
        hull_bound_single_nodes,
        node_predictions,
        reachable_classes,
        strong_match_clusters,
        symmetry_summary,
        unit_stats,
        unit_stats_many,
    )
    from nodeprobe.model import HookedBert, load_model, load_with_tokenizer

#: the subpackages, reachable as attributes (``nodeprobe.analysis.learned_set``) like eager imports made them
SUBMODULES = ("analysis", "cache", "data", "errors", "evaluate", "hooks", "io", "model", "pipeline", "progress",
              "render", "runs", "studies", "train")

#: public name → the module that defines it
_LAZY = {
    **{name: f"nodeprobe.{name}" for name in SUBMODULES},
    "HookedBert": "nodeprobe.model",
    "load_model": "nodeprobe.model",
    "load_with_tokenizer": "nodeprobe.model",
    **{name: "nodeprobe.analysis" for name in (
        "apt_per_token", "apt_vs_frequency", "cooperation", "hull_bound", "hull_bound_single_nodes",
        "node_predictions", "reachable_classes", "strong_match_clusters", "symmetry_summary", "unit_stats",
        "unit_stats_many")},
}

__all__ = [
    "HookedBert",
    "NodeprobeError",
    "apt_per_token",
    "apt_vs_frequency",
    "cooperation",
    "hooks",
    "hull_bound",
    "hull_bound_single_nodes",
    "load_model",
    "load_with_tokenizer",
    "node_predictions",
    "reachable_classes",
    "strong_match_clusters",
    "symmetry_summary",
    "unit_stats",
    "unit_stats_many",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    """``nodeprobe.load_model`` etc.: import the defining module on first access (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nodeprobe' has no attribute {name!r}")
    mod = importlib.import_module(module)
    value = mod if module == f"{__name__}.{name}" else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, *SUBMODULES, "__version__"})
