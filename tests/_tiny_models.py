"""Tiny random BERTs and synthetic evaluation sets for the cache/report tests (no data needed)."""

from __future__ import annotations

import torch
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

from nodeprobe.data.eval_sets import EvalBatch, EvalSet, fingerprint_batches
from nodeprobe.model import HookedBert

V, D, L, H, K = 60, 16, 2, 4, 5


def tiny_config(vocab_size: int = V, num_labels: int = K, **kw) -> BertConfig:
    return BertConfig(vocab_size=vocab_size, hidden_size=D, num_hidden_layers=L, num_attention_heads=H,
                      intermediate_size=32, max_position_embeddings=64, num_labels=num_labels,
                      initializer_range=0.5, **kw)


def tiny_hf(task: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    cls = BertForMaskedLM if task == "mlm" else BertForSequenceClassification
    return cls(tiny_config(**kw)).eval()


def tiny_model(task: str, seed: int = 0, **kw) -> HookedBert:
    return HookedBert(tiny_hf(task, seed, **kw))


def tiny_eval_set(task: str, n_batches: int = 3, B: int = 8, P: int = 10, seed: int = 1, n_classes: int | None = None) -> EvalSet:
    """Random padded batches; MLM: ~30% of the real positions modified, targets random tokens."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    Kc = n_classes or (V if task == "mlm" else K)
    for _ in range(n_batches):
        ids = torch.randint(5, V, (B, P), generator=g)
        ids[:, 0] = 2
        lengths = torch.randint(3, P + 1, (B,), generator=g)
        lengths[0] = P
        attn = (torch.arange(P)[None] < lengths[:, None]).long()
        ids = ids.masked_fill(attn == 0, 0)
        if task == "mlm":
            pos = (torch.rand(B, P, generator=g) < 0.3) & attn.bool()
            pos[:, 0] = False
            pos[torch.arange(B), lengths - 1] = True
            t = torch.randint(5, V, (int(pos.sum()),), generator=g)
            batches.append(EvalBatch(ids, attn, t, pos))
        else:
            batches.append(EvalBatch(ids, attn, torch.randint(0, Kc, (B,), generator=g)))
    names = [f"tok{i}" for i in range(V)] if task == "mlm" else [f"relation {k}" for k in range(Kc)]
    es = EvalSet("mlm" if task == "mlm" else "fewrel", batches, names, "synthetic", seed)
    es.fingerprint = fingerprint_batches(batches)
    return es


def save_tiny_bert_mlm(d, vocab_file):
    """Save a tiny random ``BertForMaskedLM`` (the real 30522-token vocab, 1 block × 2 heads, width 32)
    with ``vocab_file`` as its tokenizer into ``d``; returns ``d`` (a model fine-tuning can start from)."""
    import shutil

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=128)
    BertForMaskedLM(cfg).save_pretrained(d)
    shutil.copy(vocab_file, d / "vocab.txt")
    return d


def boot_bridge_offline(folder):
    """A TransformerLens ``TransformerBridge`` booted from a saved folder with the hub off (the
    caller's ``HF_HUB_OFFLINE`` restored), in eval mode."""
    import os

    from transformer_lens.model_bridge import TransformerBridge

    saved = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        bridge = TransformerBridge.boot_transformers(str(folder), device="cpu")
    finally:
        if saved is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved
    return bridge.eval()
