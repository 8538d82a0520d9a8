"""Runnable recipe (`python hooks/cache_z_safetensors.py --tiny --out z.safetensors`): cache every head's output ``z`` at [CLS] over a text file into one safetensors file.

For an analysis outside nodeprobe (numpy, JAX, R via a safetensors reader…): run a BERT over
many texts in batches, keep only the [CLS] row of ``blocks.{l}.attn.hook_z`` for every block with
:class:`nodeprobe.hooks.SiteCache` (moved to CPU batch by batch, so memory stays at
``N × n_layers × H × Dh`` floats rather than full activations), and write

* ``blocks.{l}.attn.hook_z`` — float32 ``[N, n_heads, d_head]`` for each block ``l``;
* ``readout.hook_in`` — float32 ``[N, d_model]`` with ``--readout`` (the pooled [CLS] vector of a
  classifier, the MLM transform output at [CLS] of a masked LM);
* ``lengths`` — int64 ``[N]``, tokens per text after truncation;

with string metadata (``model``, ``task``, ``n_layers``, ``n_heads``, ``d_head``, ``positions``
= ``cls``, ``n_texts``, ``max_len``).  Row ``i`` is line ``i`` of the text file (blank lines
skipped).  The file is written atomically: to a temporary file in the same directory, then
``os.replace``-d over the target, so a reader never sees a half-written file and a failed run
leaves an existing file untouched.

Usage::

    python hooks/cache_z_safetensors.py --model runs/smoke/pretrain/final --texts eval.txt \\
        --out z_cls.safetensors --batch-size 64
    python hooks/cache_z_safetensors.py --tiny --out /tmp/z.safetensors     # random tiny BERT

Reading it back::

    from safetensors.torch import load_file      # or safetensors.numpy
    z = load_file("z_cls.safetensors")["blocks.3.attn.hook_z"]   # [N, H, Dh]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

TINY_WORDS = [f"w{i}" for i in range(40)]
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + TINY_WORDS


def tiny_model_and_tokenizer(directory: Path, seed: int = 0):
    """A random 2-block × 4-head BertForMaskedLM and a BertTokenizer over a made-up vocab."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=32,
                     initializer_range=0.2)
    (directory / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    return BertForMaskedLM(cfg).eval(), BertTokenizer(vocab=str(directory / "vocab.txt"))


def tiny_texts(n: int, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choice(TINY_WORDS) for _ in range(rng.randint(2, 12))) for _ in range(n)]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="saved BERT directory (masked LM or classifier), or 'minilm'")
    src.add_argument("--tiny", action="store_true", help="a random tiny model (offline demo)")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the model directory)")
    p.add_argument("--texts", help="UTF-8 text file, one text per line (--tiny: default random texts)")
    p.add_argument("--n-texts", type=int, default=37, help="--tiny without --texts: how many random texts")
    p.add_argument("--out", required=True, help="output .safetensors path")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-len", type=int, default=None, help="truncate to this many tokens")
    p.add_argument("--readout", action="store_true", help="also keep readout.hook_in at [CLS]")
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def run(args, tmp: Path) -> dict:
    import torch
    from transformers import AutoTokenizer

    from nodeprobe.errors import NodeprobeError
    from nodeprobe.hooks import SiteCache, z_name
    from nodeprobe.io import save_safetensors_atomic
    from nodeprobe.model import MINILM_ALIASES, load_model, minilm_dir

    if args.batch_size < 1:
        raise NodeprobeError(f"--batch-size {args.batch_size}: expected a positive integer")
    out = Path(args.out).expanduser()
    if out.suffix != ".safetensors":
        raise NodeprobeError(f"--out {out}: expected a .safetensors file name")
    if args.tiny:
        hf, tokenizer = tiny_model_and_tokenizer(tmp)
        model = load_model(hf, device=args.device)
    else:
        model = load_model(args.model, device=args.device)
        src = minilm_dir() if args.model.lower() in MINILM_ALIASES else Path(args.model).expanduser()
        tok_dir = Path(args.tokenizer).expanduser() if args.tokenizer else src
        try:
            tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        except Exception as e:
            raise NodeprobeError(f"tokenizer {tok_dir}: could not load ({type(e).__name__}); pass --tokenizer") from None
    model.eval()

    if args.texts:
        path = Path(args.texts).expanduser()
        if not path.is_file():
            raise NodeprobeError(f"--texts {path}: no such file")
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif args.tiny:
        texts = tiny_texts(args.n_texts)
    else:
        raise NodeprobeError("--texts is required with --model")
    if not texts:
        raise NodeprobeError(f"--texts {args.texts}: no non-empty lines")

    spec = model.spec
    max_len = min(args.max_len or spec.max_len, spec.max_len)
    names = [z_name(l) for l in range(spec.n_layers)] + (["readout.hook_in"] if args.readout else [])
    cache = SiteCache(names, positions="cls", device="cpu", dtype=torch.float32)
    lengths = []
    dev = next(model.hf.parameters()).device
    with torch.no_grad():
        for i in range(0, len(texts), args.batch_size):
            enc = tokenizer(texts[i : i + args.batch_size], padding=True, truncation=True,
                            max_length=max_len, return_tensors="pt")
            inputs = {k: enc[k].to(dev) for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
            model.run_with_hooks(**inputs, fwd_hooks=cache.fwd_hooks())
            lengths.append(enc["attention_mask"].sum(1))
    tensors = {k: v.contiguous() for k, v in cache.stack().items()}
    tensors["lengths"] = torch.cat(lengths).to(torch.int64)
    metadata = {
        "model": "tiny" if args.tiny else str(args.model),
        "kind": spec.kind,
        "n_layers": str(spec.n_layers),
        "n_heads": str(spec.n_heads),
        "d_head": str(spec.d_head),
        "positions": "cls",
        "n_texts": str(len(texts)),
        "max_len": str(max_len),
        "sites": json.dumps(names),
    }
    save_safetensors_atomic(tensors, out, metadata)  # nodeprobe.io: a temp file, then os.replace
    return {"out": str(out), "n_texts": len(texts), "shapes": {k: list(v.shape) for k, v in tensors.items()},
            "metadata": metadata}


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
    print(f"wrote {result['out']}: {result['n_texts']} texts")
    for name, shape in result["shapes"].items():
        print(f"  {name}: {shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
