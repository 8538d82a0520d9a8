"""TransformerLens's ``ActivationCache`` for post-LayerNorm BERT.

:class:`BertActivationCache` is a ``transformer_lens.ActivationCache`` (``cache["z", 0]``,
``remove_batch_dim``, ``.to``, ``stack_head_results`` … all work); the methods whose TransformerLens
meaning assumes a pre-LayerNorm residual stream are redefined for BERT (see docs/methods.md).
"""

from __future__ import annotations

from transformer_lens import ActivationCache


class BertActivationCache(ActivationCache):
    """``ActivationCache`` of a :class:`~nodeprobe.model.bert.HookedBert` run."""
