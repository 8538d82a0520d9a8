"""Runnable recipe (`python hooks/train_sae.py --tiny --out /tmp/sae`): train a sparse autoencoder with SAELens on one hook point of a BERT, on WikiText-2.

SAELens's training runner takes :class:`nodeprobe.model.HookedBert` as it is
(``LanguageModelSAETrainingRunner(cfg, override_model=model, override_dataset=ds)``: no wrapper);
this recipe feeds it WikiText-2 from the data folder, cut the way nodeprobe pre-trains
(:meth:`nodeprobe.data.Corpus.to_sequences`: windows of ``--context-size`` tokens inside one
article, each ``[CLS] … [SEP]``), as a pre-tokenized dataset (column ``input_ids``).  Whole
articles are held out (:meth:`~nodeprobe.data.Corpus.split_held_out`, the split pre-training uses,
so they are held out from the model's pre-training too); on them it prints

* **explained variance** ``1 − Σ‖x − x̂‖² / Σ‖x − mean(x)‖²`` of the trained SAE, and of the same SAE
  before training (its initialisation) for comparison;
* **L0**, the mean number of active features per token, and the features that never fire there;

and saves the SAE in SAELens's own format to ``--out`` (``cfg.json``, ``sae_weights.safetensors``,
``sparsity.safetensors``, ``runner_cfg.json``).  [CLS]/[SEP]/[PAD] positions are left out of
training and evaluation (``--keep-special`` keeps [CLS]/[SEP]): in a trained BERT they often
carry outlier activations that would dominate the reconstruction loss.

How it trains: SAELens scales the activations to mean norm √d_in while training
(``normalize_activations="expected_average_only_in"``) and folds the factor into the weights at
the end, so the saved SAE reads raw activations.  Before it starts, this recipe sets the decoder
bias ``b_dec`` to the mean activation of (up to) 64 training sequences, so the SAE codes
``x − mean`` from step 1 (BERT's residual stream can be mostly a shared offset: at
``blocks.3.hook_resid_post`` of the ``smoke`` preset's MLM the mean's norm is ≈ 5× the rms spread
around it, and a zero-initialised ``b_dec`` needs many steps to catch up), and it reads ``--l1`` as
the coefficient for activations *centred* and scaled to rms norm √d_in, so that one value fits any
hook (SAELens gets ``l1_coefficient = l1 · spread / mean norm``).

Usage::

    python hooks/train_sae.py --out sae_l3                # newest `nodeprobe reproduce` MLM, blocks.3.hook_resid_post
    python hooks/train_sae.py --model runs/smoke/pretrain/final --hook blocks.5.hook_mlp_out \\
        --d-sae 384 --training-tokens 1000000 --out sae_l5_mlp --json sae_l5_mlp.json
    python hooks/train_sae.py --tiny --out /tmp/sae       # random tiny BERT + vocab: offline, seconds

Loading it back::

    from sae_lens import SAE
    sae = SAE.load_from_disk("sae_l3")                   # sae.cfg.metadata.hook_name: the hook
    _, cache = model.run_with_cache(ids, names_filter=[sae.cfg.metadata.hook_name])
    feats = sae.encode(cache[sae.cfg.metadata.hook_name])     # [B, P, d_sae]

Without ``--model`` the model is the one the nodeprobe CLI picks: the pre-trained masked LM of the
newest ``nodeprobe reproduce`` run under ``--runs`` (``runs/<preset>/pretrain/final``).  Needs
SAELens (``pip install 'nodeprobe[sae]'``, with TransformerLens 3.x); the hook point may be any
per-position one a default forward fires (``[B, P, D]``, ``[B, P, F]`` or ``[B, P, H, Dh]``,
flattened), e.g. ``blocks.{l}.hook_resid_post``, ``blocks.{l}.hook_normalized_resid_post``,
``blocks.{l}.hook_mlp_out``, ``blocks.{l}.attn.hook_z``, ``blocks.{l}.mlp.hook_post``.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import signal
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_HOOK = "blocks.3.hook_resid_post"
SAE_HINT = "needs sae-lens: pip install 'nodeprobe[sae]' (TransformerLens 3.x)"
WIKITEXT = ("wikitext-2/wiki.test.raw", "wikitext-2/wiki.valid.tokens")
# hook points that are not one vector per position, or are a scalar per position
NOT_PER_POSITION = ("attn.hook_attn_scores", "attn.hook_pattern", "hook_scale")

NORMALIZE = "expected_average_only_in"  # SAELens scales activations to mean norm √d_in, folds it in at the end
TINY_WORDS = [f"w{i}" for i in range(90)]
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + TINY_WORDS
TINY_LAYERS = 4  # so that the default hook, blocks.3.hook_resid_post, exists


def save_tiny(directory: Path, seed: int = 0) -> tuple[Path, Path]:
    """A random 4-block BertForMaskedLM (d_model 32) with its vocab, and a text file of random
    "articles" (blank-line separated) over that vocab: ``(model_dir, text_file)``."""
    import random

    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=32, num_hidden_layers=TINY_LAYERS,
                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    model_dir = directory / "tiny_mlm"
    model_dir.mkdir(parents=True, exist_ok=True)
    BertForMaskedLM(cfg).eval().save_pretrained(model_dir)
    (model_dir / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    rng = random.Random(seed)
    articles = [" ".join(rng.choice(TINY_WORDS) for _ in range(rng.randint(30, 120))) for _ in range(120)]
    text = directory / "tiny_articles.txt"
    text.write_text("\n\n".join(articles) + "\n", encoding="utf-8")
    return model_dir, text


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="saved BERT directory (default: the newest `nodeprobe reproduce` MLM)")
    src.add_argument("--tiny", action="store_true", help="a random tiny model and vocab (offline demo, seconds)")
    p.add_argument("--runs", default="runs", help="where `nodeprobe reproduce` wrote its runs (for the default model)")
    p.add_argument("--hook", default=DEFAULT_HOOK, help=f"hook point to train on (default {DEFAULT_HOOK})")
    p.add_argument("--out", required=True, help="folder for the SAE (new, or empty)")
    p.add_argument("--data", help="data folder holding wikitext-2/ (default: nodeprobe's data folder)")
    p.add_argument("--context-size", type=int, default=128, help="tokens per sequence ([CLS] … [SEP])")
    p.add_argument("--d-sae", type=int, default=None, help="SAE features (default 8 × the hook's width)")
    p.add_argument("--k", type=int, default=None, help="train a TopK SAE with k active features (default: L1 SAE)")
    p.add_argument("--l1", type=float, default=None,
                   help="L1 coefficient of the standard SAE, for activations centred and scaled to rms norm √d_in "
                        "(default 5; --tiny 2)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 1e-3; --tiny 1e-2)")
    p.add_argument("--training-tokens", type=int, default=None, help="default 1,000,000 (--tiny 12,800)")
    p.add_argument("--batch-tokens", type=int, default=None, help="tokens per SAE step (default 4096; --tiny 128)")
    p.add_argument("--model-batch", type=int, default=32, help="sequences per model forward")
    p.add_argument("--held-out-every", type=int, default=None,
                   help="hold out an article when its hash is 0 mod this (default 50 as pre-training; --tiny 10)")
    p.add_argument("--keep-special", action="store_true", help="train and evaluate on [CLS]/[SEP] positions too")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results as JSON here")
    a = p.parse_args(argv)
    tiny = a.tiny
    a.l1 = a.l1 if a.l1 is not None else (2.0 if tiny else 5.0)
    a.lr = a.lr if a.lr is not None else (1e-2 if tiny else 1e-3)
    a.training_tokens = a.training_tokens if a.training_tokens is not None else (12_800 if tiny else 1_000_000)
    a.batch_tokens = a.batch_tokens if a.batch_tokens is not None else (128 if tiny else 4096)
    a.held_out_every = a.held_out_every if a.held_out_every is not None else (10 if tiny else 50)
    if tiny and a.context_size == 128:
        a.context_size = 32
    return a


# ---------------------------------------------------------------------- checks (before any work)
def check_out(out: Path) -> None:
    from nodeprobe.errors import NodeprobeError

    if out.exists() and not out.is_dir():
        raise NodeprobeError(f"--out {out}: is a file; give a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        raise NodeprobeError(f"--out {out}: exists and is not empty; give a new or empty folder")


def check_hook(hook: str, n_layers: int, kind: str) -> None:
    """``hook`` must be a per-position hook point a default forward of this model fires."""
    import difflib

    from nodeprobe.errors import NodeprobeError
    from nodeprobe.model.names import OPTIONAL, all_names

    names = all_names(n_layers, kind)
    m = re.match(r"blocks\.(-?\d+)\.", hook)
    if m and not 0 <= int(m.group(1)) < n_layers:
        raise NodeprobeError(f"--hook {hook}: the model has blocks 0–{n_layers - 1}")
    if hook not in names:
        if any(hook.endswith(o) for o in OPTIONAL):
            raise NodeprobeError(f"--hook {hook}: fires only with a cfg switch on; not supported here")
        like = difflib.get_close_matches(hook, names, n=3, cutoff=0.0)
        raise NodeprobeError(f"--hook {hook}: no such hook point; did you mean {' or '.join(like)}?")
    if hook.endswith(NOT_PER_POSITION) or (kind != "mlm" and hook == "readout.hook_in"):
        raise NodeprobeError(f"--hook {hook}: not one vector per token position; an SAE needs e.g. "
                             "blocks.{l}.hook_resid_post, hook_mlp_out, attn.hook_z")


def check_args(args) -> dict:
    """Every check that needs no model weights and no SAELens: one-line errors (exit 2)."""
    from nodeprobe.errors import NodeprobeError

    for flag in ("context_size", "training_tokens", "batch_tokens", "model_batch", "d_sae", "k"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            raise NodeprobeError(f"--{flag.replace('_', '-')} {v}: expected a positive integer")
    if args.held_out_every < 2:
        raise NodeprobeError(f"--held-out-every {args.held_out_every}: expected an integer ≥ 2")
    if args.lr <= 0 or args.l1 < 0:
        raise NodeprobeError(f"--lr {args.lr} / --l1 {args.l1}: expected lr > 0 and l1 ≥ 0")
    if args.context_size < 3:
        raise NodeprobeError(f"--context-size {args.context_size}: expected ≥ 3 ([CLS], a token, [SEP])")
    out = Path(args.out).expanduser()
    check_out(out)
    from nodeprobe.model.loading import resolve_device

    resolve_device(args.device)  # cpu / cuda / cuda:N, and that the GPU exists
    if args.json is not None:
        j = Path(args.json).expanduser()
        if j.is_dir() or not j.parent.is_dir():
            raise NodeprobeError(f"--json {j}: give a file path in an existing folder")
    if args.tiny:
        check_hook(args.hook, TINY_LAYERS, "mlm")
        return {"out": out, "model": None, "texts": None}
    if args.model is None:
        from nodeprobe.runs import latest_model

        found = latest_model("mlm", args.runs)
        if found is None:
            raise NodeprobeError(f"no --model given and no pre-trained MLM under {args.runs}: run "
                                 "`nodeprobe reproduce --preset smoke` first (it trains one), or give --model DIR")
        print(f"--model {found} (the pre-trained MLM of the newest `nodeprobe reproduce` run)")
        model_dir = found
    else:
        model_dir = Path(args.model).expanduser()
        if not model_dir.is_dir():
            raise NodeprobeError(f"--model {model_dir}: no such directory (give a saved Hugging Face BERT folder)")
    cfg_file = model_dir / "config.json"
    if not cfg_file.is_file():
        raise NodeprobeError(f"--model {model_dir}: no config.json there (give a saved Hugging Face BERT folder)")
    try:
        cfg = json.loads(cfg_file.read_text())
        n_layers = int(cfg["num_hidden_layers"])
    except (ValueError, KeyError, TypeError):
        raise NodeprobeError(f"--model {model_dir}: config.json has no num_hidden_layers") from None
    from nodeprobe.model.bert import ARCH_KIND

    kind = ARCH_KIND.get((cfg.get("architectures") or ["BertModel"])[0], "base")
    check_hook(args.hook, n_layers, kind)
    from nodeprobe.data.download import resolve_data_dir

    data = resolve_data_dir(args.data)
    texts = [data / f for f in WIKITEXT]
    missing = [str(t) for t in texts if not t.is_file()]
    if missing:
        raise NodeprobeError(f"--data {data}: no {missing[0]} (WikiText-2; give --data DIR)")
    from nodeprobe.io import check_disjoint

    check_disjoint({"--out": out, "--json": args.json}, {"--model": model_dir, "--data": data})  # never over an input
    return {"out": out, "model": model_dir, "texts": texts}


def check_sae_lens() -> None:
    import importlib.util

    from nodeprobe.errors import NodeprobeError

    if importlib.util.find_spec("sae_lens") is None:
        raise NodeprobeError(SAE_HINT)
    try:
        import sae_lens  # noqa: F401
    except ImportError as e:  # installed, but e.g. against an incompatible TransformerLens
        raise NodeprobeError(f"{SAE_HINT}; importing it failed: {e}") from None


# ---------------------------------------------------------------------- the work
def activations_at(model, hook: str, seqs: list[list[int]], exclude: list[int], batch: int):
    """Activations at ``hook`` of the sequences ``seqs``, ``[N, d_in]``: real tokens only (no [PAD],
    nor the ``exclude`` ids)."""
    import torch

    pad = model.tokenizer.pad_token_id
    dev = next(model.parameters()).device
    rows = []
    with torch.no_grad():
        for i in range(0, len(seqs), batch):
            chunk = seqs[i : i + batch]
            width = max(len(s) for s in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            for j, s in enumerate(chunk):
                ids[j, : len(s)] = torch.tensor(s)
            mask = (ids != pad).long()
            _, cache = model.run_with_cache(ids.to(dev), attention_mask=mask.to(dev), names_filter=[hook])
            act = cache[hook]
            act = act.reshape(*act.shape[:2], -1)  # [B, P, H, Dh] → [B, P, H·Dh], as SAELens does
            keep = mask.bool()
            for t in exclude:
                keep &= ids != t
            rows.append(act[keep.to(act.device)].float().cpu())
    return torch.cat(rows)


def sae_metrics(sae, x, scale: float = 1.0) -> dict:
    """Explained variance, L0, never-firing features and squared error per token of ``sae`` on
    activations ``x`` ``[N, d_in]`` (fed to it as ``x · scale``: an SAE that reads scaled
    activations; the explained variance and L0 do not depend on the scale, the error is unscaled)."""
    import torch

    dev = next(sae.parameters()).device
    with torch.no_grad():
        xs = x.to(dev) * scale
        feats = sae.encode(xs)
        err = (xs - sae.decode(feats)).pow(2).sum(-1)
        ev = 1 - err.sum() / (xs - xs.mean(0)).pow(2).sum()
        active = feats > 0
    return {"explained_variance": float(ev), "l0": float(active.float().sum(-1).mean()),
            "dead_features": int((~active.any(0)).sum()), "mse_per_token": float(err.mean()) / scale**2}


def run(args, paths: dict, tmp: Path) -> dict:
    import datasets
    import torch
    from sae_lens import (LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, LoggingConfig,
                          StandardTrainingSAEConfig, TopKTrainingSAEConfig)

    from nodeprobe.data import Corpus, load_text_corpus
    from nodeprobe.errors import NodeprobeError
    from nodeprobe.model import load_with_tokenizer

    torch.manual_seed(args.seed)
    if args.tiny:
        model_dir, text = save_tiny(tmp, seed=args.seed)
        texts = [text]
    else:
        model_dir, texts = paths["model"], paths["texts"]
    model, tok = load_with_tokenizer(model_dir, task=None, device=args.device)
    model.eval()
    ctx = min(args.context_size, model.spec.max_len)

    corpus = Corpus.concat([load_text_corpus(t, tok) for t in texts])
    train_part, held_part = corpus.split_held_out(every=args.held_out_every)
    # [CLS] … [SEP] windows inside one article, as pre-training cuts them; SAELens wants full rows
    train_seqs = [s for s in train_part.to_sequences(max_len=ctx) if len(s) == ctx]
    held_seqs = held_part.to_sequences(max_len=ctx)
    if not train_seqs or not held_seqs:
        raise NodeprobeError(f"--context-size {ctx}: no full-length training window or no held-out text; "
                             "give a smaller --context-size")
    ds = datasets.Dataset.from_dict({"input_ids": train_seqs}).shuffle(seed=args.seed)

    hf_tok = model.tokenizer
    structural = [hf_tok.cls_token_id, hf_tok.sep_token_id, hf_tok.pad_token_id]
    exclude = [hf_tok.pad_token_id] if args.keep_special else structural
    # the mean, mean norm and spread of the activations, from (up to) 64 training sequences
    sample = activations_at(model, args.hook, train_seqs[:64], exclude, args.model_batch)
    d_in = sample.shape[-1]
    mean = sample.mean(0)
    mean_norm = max(float(sample.norm(dim=-1).mean()), 1e-12)
    spread = max(float((sample - mean).pow(2).sum(-1).mean().sqrt()), 1e-12)  # rms norm of x − mean
    scale = d_in**0.5 / mean_norm  # ≈ the factor SAELens's expected_average_only_in estimates
    d_sae = args.d_sae or 8 * d_in
    if args.k:
        sae_cfg = TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=args.k, normalize_activations=NORMALIZE)
    else:  # --l1 is for activations centred and scaled to rms norm √d_in; SAELens's unit is mean norm √d_in
        l1_saelens = args.l1 * spread / mean_norm
        sae_cfg = StandardTrainingSAEConfig(d_in=d_in, d_sae=d_sae, l1_coefficient=l1_saelens,
                                            normalize_activations=NORMALIZE)
    device = str(next(model.parameters()).device)
    batch_prompts = args.model_batch
    # SAELens's shuffle buffer (n_batches_in_buffer × context activations) must hold ≥ 2 training batches
    n_buffer = max(8, -(-2 * args.batch_tokens // ctx))
    cfg = LanguageModelSAERunnerConfig(
        sae=sae_cfg,
        model_name=f"nodeprobe:{'tiny' if args.tiny else model_dir}", model_class_name="HookedBert",
        hook_name=args.hook, dataset_path="", is_dataset_tokenized=True, streaming=False,
        context_size=ctx, training_tokens=args.training_tokens, train_batch_size_tokens=args.batch_tokens,
        store_batch_size_prompts=batch_prompts, n_batches_in_buffer=n_buffer,
        n_batches_for_norm_estimate=min(50, max(2, -(-32_768 // args.batch_tokens))),  # ≥ 32k tokens, ≤ 50 batches
        exclude_special_tokens=exclude, lr=args.lr, lr_warm_up_steps=0,
        device=device, seed=args.seed, logger=LoggingConfig(log_to_wandb=False),
        checkpoint_path=None, n_checkpoints=0, output_path=str(paths["out"]), verbose=False,
    )
    held = activations_at(model, args.hook, held_seqs, exclude, args.model_batch)

    torch.manual_seed(args.seed)  # SAELens seeds nothing itself: the SAE init and buffer shuffles
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    t0 = time.perf_counter()
    try:
        runner = LanguageModelSAETrainingRunner(cfg, override_model=model, override_dataset=ds)
        with torch.no_grad():  # start the decoder bias at the mean: the SAE then codes x − mean
            runner.sae.b_dec.copy_((mean * scale).to(runner.sae.b_dec))
        untrained = copy.deepcopy(runner.sae)  # reads scaled activations (SAELens folds the scale in at the end)
        sae = runner.run()  # saves to cfg.output_path in SAELens's format
    finally:  # the runner installs SIGINT/SIGTERM handlers of its own and leaves them
        for s, h in handlers.items():
            signal.signal(s, h)
    seconds = time.perf_counter() - t0
    steps = -(-args.training_tokens // args.batch_tokens)
    return {
        "model": "tiny" if args.tiny else str(model_dir), "hook": args.hook, "out": str(paths["out"]),
        "architecture": "topk" if args.k else "standard", "d_in": d_in, "d_sae": d_sae,
        "k": args.k, "l1": None if args.k else args.l1,
        "l1_coefficient_saelens": None if args.k else l1_saelens, "lr": args.lr,
        "activation_mean_norm": mean_norm, "activation_spread": spread,
        "context_size": ctx, "training_tokens": args.training_tokens, "batch_tokens": args.batch_tokens,
        "steps": steps, "train_seconds": round(seconds, 2), "train_sequences": len(train_seqs),
        "held_out_articles": len(held_part), "held_out_tokens": int(held.shape[0]),
        "excluded_token_ids": exclude,
        "held_out": sae_metrics(sae, held), "held_out_untrained": sae_metrics(untrained, held, scale),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    from nodeprobe.errors import NodeprobeError

    flags = {k: "--" + k.replace("_", "-") for k in vars(args)}
    try:
        paths = check_args(args)
        check_sae_lens()
        with tempfile.TemporaryDirectory(prefix="nodeprobe_sae_") as tmp:
            result = run(args, paths, Path(tmp))
    except NodeprobeError as e:
        print(f"error: {e.in_flags(flags)}", file=sys.stderr)
        return e.exit_code
    h, h0 = result["held_out"], result["held_out_untrained"]
    print(f"trained a {result['architecture']} SAE ({result['d_in']} → {result['d_sae']}) on {result['hook']}: "
          f"{result['steps']} steps × {result['batch_tokens']} tokens in {result['train_seconds']:.1f} s")
    print(f"held-out ({result['held_out_tokens']} tokens, {result['held_out_articles']} articles): "
          f"explained variance {h['explained_variance']:.3f} (untrained {h0['explained_variance']:.3f}), "
          f"L0 {h['l0']:.1f} of {result['d_sae']}, {h['dead_features']} features never fire")
    print(f"saved to {result['out']} (load: sae_lens.SAE.load_from_disk)")
    if args.json:
        Path(args.json).expanduser().write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
