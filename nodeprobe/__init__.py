"""nodeprobe: hooked BERT for node- and head-level specialization analyses.

Data flow: load → hook → cache → analyse → report.

Example:
    >>> import nodeprobe                                                   # doctest: +SKIP
    >>> model = nodeprobe.load_model("runs/cpu/finetune/final")            # doctest: +SKIP
    >>> logits = model.run_with_hooks(ids, fwd_hooks=[nodeprobe.hooks.ablate_head(5, 3)])  # doctest: +SKIP
    >>> W, b = model.readout_weights()                                     # doctest: +SKIP
    >>> preds = nodeprobe.node_predictions(W, b, X)   # [N, d]: every single node's predictions  # doctest: +SKIP
"""

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
from nodeprobe.errors import NodeprobeError
from nodeprobe.model import HookedBert, load_model

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
    "node_predictions",
    "reachable_classes",
    "strong_match_clusters",
    "symmetry_summary",
    "unit_stats",
    "unit_stats_many",
]
__version__ = "0.1.0"
