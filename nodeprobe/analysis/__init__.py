"""Pure analyses: tensors/arrays in, small dataclasses of numbers out (METHODS §3–§7).

Nothing here prints or loads a model.  One module per job:

* :mod:`~nodeprobe.analysis.confusion`   confusion matrix, learned sets, lift, SNR, symmetry summary
* :mod:`~nodeprobe.analysis.readout`     node-set logits; single-node predictions via the upper envelope
* :mod:`~nodeprobe.analysis.hull`        reachable classes and the convex-hull bound
* :mod:`~nodeprobe.analysis.cooperation` cooperation gain and crossover over random node sets
* :mod:`~nodeprobe.analysis.apt`         accuracy per token, frequency dependence, confusion clusters
"""

from nodeprobe.analysis.apt import (
    APTFrequency,
    APTResult,
    ClusterResult,
    apt_per_token,
    apt_vs_frequency,
    strong_match_clusters,
)
from nodeprobe.analysis.confusion import (
    SymmetrySummary,
    UnitStats,
    argmax_lowest,
    confusion_matrix,
    learned_set,
    snr,
    symmetry_summary,
    unit_stats,
    unit_stats_many,
)
from nodeprobe.analysis.cooperation import DEFAULT_GRID, CooperationResult, CoopRow, cooperation
from nodeprobe.analysis.hull import HullBound, SingleNodeHull, hull_bound, hull_bound_single_nodes, reachable_classes
from nodeprobe.analysis.readout import (
    Envelope,
    dense_node_predictions,
    node_predictions,
    readout_bias,
    readout_logits,
    readout_predictions,
    upper_envelope,
)

__all__ = [
    "APTFrequency",
    "APTResult",
    "ClusterResult",
    "CoopRow",
    "CooperationResult",
    "DEFAULT_GRID",
    "Envelope",
    "HullBound",
    "SingleNodeHull",
    "SymmetrySummary",
    "UnitStats",
    "apt_per_token",
    "apt_vs_frequency",
    "argmax_lowest",
    "confusion_matrix",
    "cooperation",
    "dense_node_predictions",
    "hull_bound",
    "hull_bound_single_nodes",
    "learned_set",
    "node_predictions",
    "reachable_classes",
    "readout_bias",
    "readout_logits",
    "readout_predictions",
    "snr",
    "strong_match_clusters",
    "symmetry_summary",
    "unit_stats",
    "unit_stats_many",
    "upper_envelope",
]
