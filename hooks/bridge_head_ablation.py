"""Runnable recipe (`python hooks/bridge_head_ablation.py --tiny`): ablate one attention head of a BERT masked LM inside a TransformerLens ``TransformerBridge``.

nodeprobe's hook functions are plain TransformerLens hooks ``fn(tensor, hook)``, so they run on a
``TransformerBridge`` as they do on :class:`nodeprobe.model.HookedBert`.  This recipe boots a bridge
from a *local* model directory (no hub access), ablates head ``(layer, head)`` with
``nodeprobe.hooks.ablate_head`` (or keeps only that head with ``--isolate``), reports how much the
MLM predictions move (KL(clean ‖ ablated) per real token, top-1 changes), and checks that
HookedBert on the same weights gives the same ablated logits.

Usage::

    python hooks/bridge_head_ablation.py --model runs/smoke/pretrain/final --layer 3 --head 7 \\
        --text "the cat sat on the [MASK] ." --json out.json
    python hooks/bridge_head_ablation.py --tiny --layer 1 --head 0           # random tiny BERT

``--model`` is a saved ``BertForMaskedLM`` directory (``save_pretrained``) holding its tokenizer
too (or give ``--tokenizer DIR``).  ``--tiny`` builds a random 2-block model and a word-piece vocab
in a temporary directory and boots from there, so it runs anywhere, offline.

Building a bridge offline (TransformerLens 4.3)::

    os.environ["HF_HUB_OFFLINE"] = "1"
    bridge = TransformerBridge.boot_transformers("path/to/saved_dir", device="cpu")
    # or, from memory (the bridge rewires hf_model's submodules in place: copy it first if
    # you also want a HookedBert on it):
    bridge = TransformerBridge.boot_transformers("any-name", hf_model=hf, tokenizer=tok, device="cpu")

Both force eager attention on the HF model.  Bridge hook names that matter here (the full
table, row by row tested, is in the README and tests/test_bridge_table.py):

=====================================  ===========================================  ====================
bridge                                 nodeprobe (HookedBert / attach)              shape
=====================================  ===========================================  ====================
``blocks.{l}.attn.hook_z``             ``blocks.{l}.attn.hook_z``                   ``[B, P, H, Dh]``
``blocks.{l}.attn.hook_q|k|v``         same                                         ``[B, P, H, Dh]``
``blocks.{l}.attn.hook_pattern``       same                                         ``[B, H, P, P]``
``blocks.{l}.hook_resid_pre``, ``mlp.hook_pre|post``, ``hook_mlp_out``: same
``hook_embed``                         ``hook_full_embed``                          ``[B, P, D]``
``blocks.{l}.attn.o.hook_out``         ``blocks.{l}.hook_attn_out``                 ``[B, P, D]``
``blocks.{l}.hook_resid_mid``          ``blocks.{l}.hook_resid_post``               ``[B, P, D]``
``blocks.{l}.hook_resid_post``         ``blocks.{l}.hook_normalized_resid_post``    ``[B, P, D]``
``ln_final.hook_out``                  ``readout.hook_in`` (MLM)                    ``[B, P, D]``
=====================================  ===========================================  ====================

Caveats: nodeprobe's hook names mean what they mean in TransformerLens's own BERT
(``HookedEncoder``); the bridge's ``blocks.{l}.hook_attn_out`` is the *post-LayerNorm* attention
sub-layer output LN1(x + a), its ``hook_resid_mid`` is LN1(x + a) + m, and its ``hook_attn_scores``
carries softmaxed weights for BERT — use ``hook_pattern``; pattern edits are discarded by it.
``hook_z`` is an alias of ``blocks.{l}.attn.o.hook_in``; hook functions receive
the canonical HookPoint, so ``hook.name`` reads ``...attn.o.hook_in`` (``SiteCache`` binds names
itself and is unaffected).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

TINY_WORDS = [f"w{i}" for i in range(40)]
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + TINY_WORDS


@contextlib.contextmanager
def hub_offline():
    """Set HF_HUB_OFFLINE=1 for the block (and restore the caller's value after)."""
    saved = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved


def save_tiny_mlm(directory: Path, seed: int = 0) -> Path:
    """Save a random 2-block × 4-head BertForMaskedLM and a BertTokenizer to ``directory``."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=32,
                     initializer_range=0.2)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    BertForMaskedLM(cfg).eval().save_pretrained(directory)
    BertTokenizer(vocab=str(directory / "vocab.txt")).save_pretrained(directory)
    return directory


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="saved BertForMaskedLM directory")
    src.add_argument("--tiny", action="store_true", help="a random tiny model (offline demo)")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the model directory)")
    p.add_argument("--layer", type=int, default=0)
    p.add_argument("--head", type=int, default=0)
    p.add_argument("--isolate", action="store_true", help="keep only this head of the block")
    p.add_argument("--mode", choices=["zero", "mean"], default="zero",
                   help="mean: fill with the head's mean z over the given texts' real tokens")
    p.add_argument("--text", action="append", help="input text (repeatable); [MASK] allowed")
    p.add_argument("--json", help="write the result as JSON here")
    return p.parse_args(argv)


def run(args, model_dir: Path) -> dict:
    import torch
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    from nodeprobe.errors import NodeprobeError
    from nodeprobe.hooks import ablate_head, isolate_head
    from nodeprobe.model import load_model

    model = load_model(model_dir, kind="mlm")  # HookedBert: checks the directory, one-line errors
    model.spec.check_layer(args.layer)
    model.spec.check_head(args.head)
    tok_dir = Path(args.tokenizer) if args.tokenizer else model_dir
    if not any((tok_dir / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        raise NodeprobeError(f"tokenizer {tok_dir}: no tokenizer files (save one there or pass --tokenizer)")
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    with hub_offline():
        bridge = TransformerBridge.boot_transformers(str(model_dir), tokenizer=tokenizer, device="cpu")
    bridge.eval()

    texts = args.text or (
        ["w1 w2 [MASK] w4 w5", "w7 [MASK] w9", "w3 w3 w12 w30 [MASK] w8 w0"] if args.tiny
        else ["The capital of France is [MASK].", "She poured the [MASK] into a glass."]
    )
    enc = tokenizer(texts, padding=True, truncation=True, max_length=model.spec.max_len, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    kw = dict(attention_mask=mask, token_type_ids=enc.get("token_type_ids"))

    means = None
    if args.mode == "mean":
        with torch.no_grad():
            _, cache = bridge.run_with_cache(ids, names_filter=f"blocks.{args.layer}.attn.hook_z", **kw)
        z = cache[f"blocks.{args.layer}.attn.hook_z"]  # [B, P, H, Dh]
        m = mask[:, :, None, None].to(z.dtype)
        means = (z * m).sum((0, 1)) / m.sum((0, 1))  # [H, Dh]
    factory = isolate_head if args.isolate else ablate_head
    hook = factory(args.layer, args.head, mode=args.mode, means=means)

    with torch.no_grad():
        clean = bridge(ids, **kw)
        ablated = bridge.run_with_hooks(ids, fwd_hooks=[hook], **kw)
        reference = model.run_with_hooks(ids, fwd_hooks=[hook], **kw)

    real = mask.bool()
    logp, logq = clean.log_softmax(-1), ablated.log_softmax(-1)
    kl = (logp.exp() * (logp - logq)).sum(-1)[real]
    focus = (ids == tokenizer.mask_token_id) if tokenizer.mask_token_id is not None else real
    if not focus.any():
        focus = real
    top_clean, top_abl = clean.argmax(-1)[focus], ablated.argmax(-1)[focus]
    return {
        "model": "tiny" if args.tiny else str(model_dir),
        "layer": args.layer,
        "head": args.head,
        "ablation": "isolate" if args.isolate else "ablate",
        "mode": args.mode,
        "n_texts": len(texts),
        "hook": hook[0],
        "hook_z_shape": [int(s) for s in (ids.shape[0], ids.shape[1], model.spec.n_heads, model.spec.d_head)],
        "mean_kl": float(kl.mean()),
        "max_abs_dlogit": float((ablated - clean).abs().max()),
        "top1_changed": int((top_clean != top_abl).sum()),
        "top1_positions": int(focus.sum()),
        "clean_top1": tokenizer.convert_ids_to_tokens(top_clean.tolist()),
        "ablated_top1": tokenizer.convert_ids_to_tokens(top_abl.tolist()),
        "max_abs_diff_vs_hookedbert": float((ablated - reference).abs().max()),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    from nodeprobe.errors import NodeprobeError

    try:
        with tempfile.TemporaryDirectory(prefix="nodeprobe_tiny_") as tmp:
            model_dir = save_tiny_mlm(Path(tmp) / "model") if args.tiny else Path(args.model).expanduser()
            result = run(args, model_dir)
    except NodeprobeError as e:
        flags = {k: "--" + k.replace("_", "-") for k in vars(args)}  # parameter names as this script's flags
        print(f"error: {e.in_flags(flags)}", file=sys.stderr)
        return e.exit_code
    what = "isolated" if args.isolate else "ablated"
    print(f"head L{result['layer']}H{result['head']} {what} ({result['mode']}) at {result['hook']}")
    print(f"  mean KL(clean || ablated) per token: {result['mean_kl']:.4g}")
    print(f"  top-1 changed at {result['top1_changed']}/{result['top1_positions']} positions: "
          f"{result['clean_top1']} -> {result['ablated_top1']}")
    print(f"  bridge vs HookedBert, max |Δ logit|: {result['max_abs_diff_vs_hookedbert']:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
