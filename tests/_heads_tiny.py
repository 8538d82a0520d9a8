"""Tiny BERTs with a tiny WordPiece vocab saved as model directories (for the head-study tests)."""

from __future__ import annotations

import random
import string
from pathlib import Path

import numpy as np
import torch
from transformers import BertConfig, BertForMaskedLM

WORDS = ["the", "cat", "dog", "sat", "on", "mat", "new", "york", "is", "big", "river", "bridge", "of", "and",
         "in", "was", "born", "he", "she", "city"]


def write_vocab(path: Path) -> Path:
    toks = ["[PAD]", "[unused0]", "[unused1]", "[unused2]", "[unused3]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    toks += WORDS + list(string.ascii_lowercase) + list(string.digits) + list(".,-'()\"!?:;@")
    toks += ["##" + c for c in string.ascii_lowercase + string.digits]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(t + "\n" for t in toks), encoding="utf-8")
    return path


def tiny_tokenizer(folder: Path):
    from nodeprobe.data import load_tokenizer

    return load_tokenizer(write_vocab(Path(folder) / "vocab.txt"))


def tiny_config(vocab_size: int, pad_id: int = 0) -> BertConfig:
    return BertConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=32, max_position_embeddings=40, pad_token_id=pad_id,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def save(hf, tok, folder: Path) -> Path:
    hf.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def tiny_mlm_dir(folder: Path, seed: int = 0) -> Path:
    """A random-init BertForMaskedLM + its vocab in ``folder``."""
    tok = tiny_tokenizer(folder)
    torch.manual_seed(seed)
    return save(BertForMaskedLM(tiny_config(tok.vocab_size, tok.pad_id)).eval(), tok, Path(folder))


def pattern_sequence(tok, rng: random.Random) -> list[int]:
    """[CLS] ids 9…28 (position-determined, learnable) + 6 random tokens + [SEP]."""
    return [tok.cls_id] + list(range(9, 29)) + [rng.randrange(40, 60) for _ in range(6)] + [tok.sep_id]


def tiny_run(root: Path, steps=(0, 5, 30), seed: int = 0) -> tuple[Path, object]:
    """A pre-training-like run: ``root/snapshots/step-N`` of a tiny MLM trained on pattern sequences."""
    from nodeprobe.model import HookedBert
    from nodeprobe.data.eval_sets import mlm_batch

    tok = tiny_tokenizer(root / "vocab")
    torch.manual_seed(seed)
    hf = BertForMaskedLM(tiny_config(tok.vocab_size, tok.pad_id))
    model = HookedBert(hf, "mlm")
    opt = torch.optim.Adam(hf.parameters(), lr=1e-2)
    rng, g = random.Random(seed), np.random.default_rng(seed)
    for step in range(max(steps) + 1):
        if step in steps:
            save(hf.eval(), tok, root / "snapshots" / f"step-{step:07d}")
        if step == max(steps):
            break
        hf.train()
        ids, attn, mod, tg = mlm_batch([pattern_sequence(tok, rng) for _ in range(16)], tok, rng=g)
        loss = torch.nn.functional.cross_entropy(model(ids, attn, positions=mod), tg)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return root, tok
