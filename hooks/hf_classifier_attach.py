"""Runnable recipe (`python hooks/hf_classifier_attach.py --tiny`): ablate a head of a plain Hugging Face BERT classifier and cache [CLS] activations, via ``attach``.

``nodeprobe.hooks.attach(hf_model)`` wires nodeprobe's hook points (same names and shapes as
:class:`nodeprobe.model.HookedBert`) into an unwrapped ``BertForSequenceClassification`` with
PyTorch hooks for the duration of a ``with`` block, and removes every one of them on exit
(exceptions included), restoring the model's attention implementation.  Use it when the model
must stay a Hugging Face model: a fine-tuning loop, a ``pipeline``, an existing evaluation
script.

This recipe classifies some texts, then, inside ``attach``:

* reruns them with head ``(layer, head)`` ablated (``nodeprobe.hooks.ablate_head``) and reports
  the label flips and the change in the predicted label's probability;
* caches the per-head outputs ``z`` at [CLS] of that block and the pooled readout vector
  ``readout.hook_in`` with :class:`nodeprobe.hooks.SiteCache` (CPU, only the [CLS] rows).

Usage::

    python hooks/hf_classifier_attach.py --model runs/fewrel/finetune/final --layer 4 --head 2 \\
        --text "..." --text "..." --json out.json
    python hooks/hf_classifier_attach.py --tiny --layer 1 --head 3          # random tiny classifier

``--model`` is a saved ``BertForSequenceClassification`` directory with its tokenizer (or pass
``--tokenizer DIR``).  The HF output object is returned unchanged inside ``attach``
(``out.logits``), so calls look exactly like plain Hugging Face code.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

TINY_WORDS = [f"w{i}" for i in range(40)]
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + TINY_WORDS


def tiny_classifier(directory: Path, seed: int = 0):
    """A random 2-block × 4-head BertForSequenceClassification (3 labels) and a tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=32,
                     initializer_range=0.2, num_labels=3,
                     id2label={0: "person", 1: "place", 2: "thing"},
                     label2id={"person": 0, "place": 1, "thing": 2})
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    return BertForSequenceClassification(cfg).eval(), BertTokenizer(vocab=str(directory / "vocab.txt"))


def load(args, tmp: Path):
    from transformers import AutoTokenizer

    from nodeprobe.errors import NodeprobeError
    from nodeprobe.model import load_hf

    if args.tiny:
        return tiny_classifier(tmp)
    model_dir = Path(args.model).expanduser()
    hf = load_hf(model_dir, kind="cls")  # one-line errors for a wrong directory / head
    tok_dir = Path(args.tokenizer).expanduser() if args.tokenizer else model_dir
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    except Exception as e:
        raise NodeprobeError(f"tokenizer {tok_dir}: could not load ({type(e).__name__}); pass --tokenizer") from None
    return hf, tokenizer


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="saved BertForSequenceClassification directory")
    src.add_argument("--tiny", action="store_true", help="a random tiny classifier (offline demo)")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the model directory)")
    p.add_argument("--layer", type=int, default=0)
    p.add_argument("--head", type=int, default=0)
    p.add_argument("--text", action="append", help="input text (repeatable)")
    p.add_argument("--json", help="write the result as JSON here")
    return p.parse_args(argv)


def run(args, tmp: Path) -> dict:
    import torch

    from nodeprobe.hooks import SiteCache, ablate_head, attach
    from nodeprobe.model import HookedBertConfig

    hf, tokenizer = load(args, tmp)
    cfg = hf.config
    spec = HookedBertConfig.from_hf(cfg, "cls")
    spec.check_layer(args.layer)
    spec.check_head(args.head)
    texts = args.text or (
        ["w1 w2 w3 w4 w5", "w7 w8 w9", "w3 w3 w12 w30 w21 w8 w0", "w39 w38"] if args.tiny
        else ["Paris is the capital of France.", "Marie Curie won two Nobel prizes."]
    )
    enc = tokenizer(texts, padding=True, truncation=True, max_length=spec.max_len, return_tensors="pt")
    inputs = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}

    z_name = f"blocks.{args.layer}.attn.hook_z"
    cache = SiteCache([z_name, "readout.hook_in"], positions="cls")
    with torch.no_grad():
        plain = hf(**inputs).logits  # before attach: the model as it is
        with attach(hf) as hooked:
            clean = hooked(**inputs).logits
            ablated = hooked.run_with_hooks(**inputs, fwd_hooks=[ablate_head(args.layer, args.head)]).logits
            hooked.run_with_hooks(**inputs, fwd_hooks=cache.fwd_hooks())
        after = hf(**inputs).logits
    kept = cache.stack()
    hooks_left = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in hf.modules())

    labels = [cfg.id2label.get(i, str(i)) for i in range(cfg.num_labels)]
    p_clean, p_abl = clean.softmax(-1), ablated.softmax(-1)
    pred_clean, pred_abl = p_clean.argmax(-1), p_abl.argmax(-1)
    rows = torch.arange(len(texts))
    return {
        "model": "tiny" if args.tiny else str(args.model),
        "layer": args.layer,
        "head": args.head,
        "texts": texts,
        "clean_labels": [labels[i] for i in pred_clean.tolist()],
        "ablated_labels": [labels[i] for i in pred_abl.tolist()],
        "flips": int((pred_clean != pred_abl).sum()),
        "delta_p_pred": (p_abl[rows, pred_clean] - p_clean[rows, pred_clean]).tolist(),
        "clean_logits": clean.tolist(),
        "ablated_logits": ablated.tolist(),
        "cached": {k: list(v.shape) for k, v in kept.items()},
        "cls_z_norm_per_head": kept[z_name].norm(dim=-1).mean(0).tolist(),
        "readout_norm": kept["readout.hook_in"].norm(dim=-1).tolist(),
        "max_abs_diff_attached_vs_plain": float((clean - plain).abs().max()),
        "max_abs_diff_after_vs_plain": float((after - plain).abs().max()),
        "hooks_left_on_model": hooks_left,
        "attn_implementation_after": cfg._attn_implementation,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    from nodeprobe.errors import NodeprobeError

    try:
        with tempfile.TemporaryDirectory(prefix="nodeprobe_tiny_") as tmp:
            result = run(args, Path(tmp))
    except NodeprobeError as e:
        flags = {k: "--" + k.replace("_", "-") for k in vars(args)}  # parameter names as this script's flags
        print(f"error: {e.in_flags(flags)}", file=sys.stderr)
        return e.exit_code
    print(f"head L{result['layer']}H{result['head']} ablated (zero) on a plain HF classifier under attach():")
    for text, a, b, d in zip(result["texts"], result["clean_labels"], result["ablated_labels"],
                             result["delta_p_pred"]):
        flag = "  FLIP" if a != b else ""
        print(f"  {a:>12} -> {b:<12} Δp={d:+.3f}  {text[:60]}{flag}")
    print(f"  cached at [CLS]: {result['cached']}")
    print(f"  hooks left on the model after the with-block: {result['hooks_left_on_model']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
