"""The hooked model: :class:`HookedBert` (``bert``), one module map per encoder family (``families``),
loading (``loading``), hooks on plain HF models (``attach``).

Example:
    >>> from nodeprobe.model import load_model                 # doctest: +SKIP
    >>> model = load_model("runs/smoke/finetune/final")        # doctest: +SKIP
"""

from nodeprobe.model.bert import HookedAttention, HookedBert, HookedBlock, Kind, Readout, Rows
from nodeprobe.model.families import ARCH_KIND, FAMILIES, Family, family_of
from nodeprobe.model.config import HookedBertConfig
from nodeprobe.model.loading import (
    MINILM_ALIASES,
    hf_class,
    kind_for_task,
    load_hf,
    load_model,
    load_with_tokenizer,
    minilm_dir,
    resolve_device,
)

__all__ = [
    "ARCH_KIND", "FAMILIES", "Family", "family_of", "HookedAttention", "HookedBert", "HookedBlock", "Kind", "MINILM_ALIASES", "HookedBertConfig", "Readout",
    "Rows", "hf_class", "kind_for_task", "load_hf", "load_model", "load_with_tokenizer", "minilm_dir", "resolve_device",
]
