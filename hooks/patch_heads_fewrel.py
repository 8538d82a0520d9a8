"""Runnable recipe (`python hooks/patch_heads_fewrel.py --tiny`): activation patching of every head's output at every position between a clean and a corrupted FewRel sentence, with TransformerLens's ``patching`` module.

What a TransformerLens user writes, unchanged, on :class:`nodeprobe.model.HookedBert`::

    from transformer_lens import patching
    _, clean_cache = model.run_with_cache(clean_ids)
    grid = patching.get_act_patch_attn_head_out_by_pos(model, corrupted_ids, clean_cache, metric)
    # grid[layer, pos, head]: the metric with the clean blocks.{layer}.attn.hook_z at (pos, head)
    # written into the corrupted run

**The sentences.**  The clean sentence is one FewRel item, encoded as the fine-tuned classifier
saw it in training (``nodeprobe.data.fewrel.encode_relation_item``: ``[CLS] … [unused0] head
[unused1] … [unused2] tail [unused3] … [SEP]``).  By default (``--item``) it is the relation's
item 630 — the first one the 630/70 split holds out of fine-tuning — or item 0 in a file with
fewer items.  The corrupted sentence is the same item with the *head entity* replaced
(``--corrupt``):

* ``swap`` (default): by the head entity of another FewRel item — the first, in file order, of
  another relation whose head entity has the same number of WordPieces (and other pieces);
* ``mask``: every WordPiece of the head entity becomes ``[MASK]``.

Either way only the pieces between ``[unused0]`` and ``[unused1]`` change, so the two sentences
have the same length and line up position by position: TransformerLens's patching passes the
corrupted tokens alone (no attention mask), so clean and corrupted must be one unpadded length.

**The metric.**  ``y`` is the label the model gives the clean sentence; a run's score is the logit
of ``y``, normalized so that the clean run scores 1 and the corrupted run 0::

    metric(logits) = (logits[0, y] − logit_y(corrupted)) / (logit_y(clean) − logit_y(corrupted))

A cell of the grid is the fraction of that logit gap one head's clean output at one position
restores.  In the last block only [CLS] feeds the classifier, so its other positions are 0.

Usage::

    python hooks/patch_heads_fewrel.py                      # the newest `nodeprobe reproduce` classifier
    python hooks/patch_heads_fewrel.py --model runs/smoke/finetune/final --relation P177 --item 640 \\
        --corrupt mask --json grid.json
    python hooks/patch_heads_fewrel.py --tiny                # random tiny classifier, offline, seconds

``--model`` is a saved ``BertForSequenceClassification`` directory (its ``vocab.txt``, else
bert-base-uncased's from the data folder); without it the newest fine-tuned FewRel classifier a
``nodeprobe reproduce`` run left under ``./runs`` (``--runs DIR``).  ``--data`` is the FewRel JSON, a
``fewrel/`` folder or the data root (default ``$NODEPROBE_DATA``, else ``../shared/data``).
``--tiny`` builds a random 2-block × 4-head classifier, a word vocab and a small FewRel-format
file in a temporary directory.  ``--json OUT`` writes the grid (``grid[layer][pos][head]``, axes
``["layer", "pos", "head"]``) with the tokens, ids, label and logits.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

TINY_WORDS = [f"w{i}" for i in range(40)]
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "[unused1]", "[unused2]",
              "[unused3]"] + TINY_WORDS
TINY_RELATIONS = ("P1", "P2", "P3")
TINY_ITEMS = 4  # per relation
HEAD_START, HEAD_END = "[unused0]", "[unused1]"


def tiny_fewrel(path: Path, seed: int = 0) -> Path:
    """Write a FewRel-format file of made-up sentences (``TINY_RELATIONS`` × ``TINY_ITEMS``) over ``TINY_WORDS``."""
    import random

    rng = random.Random(seed)
    data = {}
    for rel in TINY_RELATIONS:
        items = []
        for _ in range(TINY_ITEMS):
            words = [rng.choice(TINY_WORDS) for _ in range(rng.randint(6, 10))]
            h_len = rng.choice((1, 2))
            h0 = rng.randint(0, 2)
            t0 = rng.randint(h0 + h_len + 1, len(words) - 1)
            items.append({"tokens": words, "h": [" ".join(words[h0:h0 + h_len]), "Q0", [list(range(h0, h0 + h_len))]],
                          "t": [words[t0], "Q0", [[t0]]]})
        data[rel] = items
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def tiny_classifier(directory: Path, seed: int = 0) -> Path:
    """Save a random 2-block × 4-head BertForSequenceClassification (one label per tiny relation)
    with its ``vocab.txt`` to ``directory``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=32,
                     initializer_range=0.2, num_labels=len(TINY_RELATIONS),
                     id2label=dict(enumerate(TINY_RELATIONS)),
                     label2id={r: i for i, r in enumerate(TINY_RELATIONS)})
    directory.mkdir(parents=True, exist_ok=True)
    BertForSequenceClassification(cfg).eval().save_pretrained(directory)
    (directory / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    return directory


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="saved BertForSequenceClassification directory (default: the newest "
                                     "`nodeprobe reproduce` FewRel classifier under --runs)")
    src.add_argument("--tiny", action="store_true", help="a random tiny classifier and FewRel file (offline demo)")
    p.add_argument("--runs", default="runs", help="where `nodeprobe reproduce` writes its runs (default: ./runs)")
    p.add_argument("--data", help="FewRel JSON, a fewrel/ folder or the data root (default: ../shared/data)")
    p.add_argument("--relation", help="relation id (default: the file's first)")
    p.add_argument("--item", type=int, help="item index within the relation (default: 630, the first held-out "
                                            "item, or 0 in a smaller file)")
    p.add_argument("--corrupt", choices=["swap", "mask"], default="swap",
                   help="replace the head entity by another item's same-length head entity (swap) or by [MASK]s")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--top", type=int, default=5, help="how many of the largest cells to list")
    p.add_argument("--json", help="write the grid and the inputs as JSON here")
    return p.parse_args(argv)


def check_args(args) -> None:
    """Everything that can be checked before reading data or loading a model (one-line errors)."""
    from nodeprobe.errors import NodeprobeError
    from nodeprobe.model import resolve_device
    from nodeprobe.render.jsonio import check_writable

    if args.item is not None and args.item < 0:
        raise NodeprobeError(f"item={args.item}: expected an item index ≥ 0")
    if args.top < 0:
        raise NodeprobeError(f"top={args.top}: expected a count ≥ 0")
    if args.tiny and args.data is not None:
        raise NodeprobeError("--data with --tiny: --tiny writes its own FewRel file; drop --data (or use --model)")
    if args.model is not None and not Path(args.model).expanduser().is_dir():
        raise NodeprobeError(f"model={args.model}: no such directory (give a saved classifier directory)")
    if args.data is not None and not Path(args.data).expanduser().exists():
        raise NodeprobeError(f"data={args.data}: no such file or folder")
    resolve_device(args.device)
    check_writable(args.json)


def default_model(runs: str) -> Path:
    from nodeprobe.errors import NodeprobeError
    from nodeprobe.runs import latest_model

    found = latest_model("fewrel", runs)
    if found is None:
        raise NodeprobeError(f"no --model given and no FewRel classifier under {runs}/: run "
                             "`nodeprobe reproduce --preset smoke` first, or give --model DIR (or --tiny)")
    print(f"--model {found} (the FewRel classifier of the newest `nodeprobe reproduce` run)")
    return found


def head_span(ent: list) -> tuple[int, int]:
    """First and last word index of an entity's first mention (as the FewRel loader marks it)."""
    first = ent[2][0]
    return min(first), max(first)


def pick_item(data: dict, relation: str | None, item: int | None) -> tuple[str, int]:
    from nodeprobe.errors import NodeprobeError

    rels = list(data)
    relation = rels[0] if relation is None else relation
    if relation not in data:
        shown = ", ".join(rels[:8]) + (" …" if len(rels) > 8 else "")
        raise NodeprobeError(f"relation={relation}: not in the FewRel file (it has {shown})")
    n = len(data[relation])
    if item is None:
        item = 630 if n > 630 else 0
    if item >= n:
        raise NodeprobeError(f"item={item}: relation {relation} has items 0–{n - 1}")
    return relation, item


def corrupt_pair(data: dict, relation: str, item: int, tokenizer, how: str, max_len: int) -> dict:
    """Clean and corrupted ids (same length) of FewRel ``data[relation][item]``: see the module docstring."""
    from nodeprobe.data.fewrel import encode_relation_item
    from nodeprobe.errors import NodeprobeError

    if tokenizer.marker_ids is None:
        raise NodeprobeError(f"model: its vocab lacks the entity markers {HEAD_START} … [unused3] that the "
                             "FewRel classifier reads")
    it = data[relation][item]
    clean = encode_relation_item(tokenizer.encode_words_batch([it["tokens"]])[0], head_span(it["h"]),
                                 head_span(it["t"]), cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id,
                                 marker_ids=tokenizer.marker_ids, max_len=max_len)
    start, end = tokenizer.marker_ids[0], tokenizer.marker_ids[1]
    if start not in clean or end not in clean:
        raise NodeprobeError(f"item={item}: the head entity of {relation} item {item} does not fit in "
                             f"{max_len} tokens; choose another --item")
    lo, hi = clean.index(start) + 1, clean.index(end)
    piece = clean[lo:hi]
    source = None
    if how == "mask":
        new = [tokenizer.mask_id] * len(piece)
    else:
        new = None
        for rel, items in data.items():
            if rel == relation:
                continue
            for j, other in enumerate(items):
                hs, he = head_span(other["h"])
                cand = [p for w in tokenizer.encode_words_batch([other["tokens"][hs:he + 1]])[0] for p in w]
                if len(cand) == len(piece) and cand != piece:
                    new, source = cand, {"relation": rel, "item": j, "head": other["h"][0]}
                    break
            if new is not None:
                break
        if new is None:
            raise NodeprobeError(f"corrupt=swap: no other relation's head entity has {len(piece)} WordPieces; "
                                 "use --corrupt mask or another --item")
    corrupted = clean[:lo] + new + clean[hi:]
    gold = list(data).index(relation)
    return {"clean": clean, "corrupted": corrupted, "changed": list(range(lo, hi)), "swap_source": source,
            "gold_label": gold, "head": it["h"][0]}


def patch_heads(model, clean_ids, corrupted_ids):
    """``(grid [L, P, H], label, logit_clean, logit_corrupted)`` with TransformerLens's patching."""
    import torch
    from transformer_lens import patching

    from nodeprobe.errors import NodeprobeError

    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean_ids, names_filter=lambda n: n.endswith("attn.hook_z"))
        label = int(clean_logits[0].argmax())
        hi = float(clean_logits[0, label])
        lo = float(model(corrupted_ids)[0, label])
        if abs(hi - lo) < 1e-6:
            raise NodeprobeError("the corruption leaves the clean label's logit as it is (nothing to patch); "
                                 "use another --corrupt or --item")

        def metric(logits):  # clean = 1, corrupted = 0
            return (logits[0, label] - lo) / (hi - lo)

        grid = patching.get_act_patch_attn_head_out_by_pos(model, corrupted_ids, clean_cache, metric)
    return grid.cpu(), label, hi, lo


def run(args, tmp: Path) -> dict:
    import torch

    from nodeprobe.data.fewrel import read_fewrel
    from nodeprobe.data.tasks import fewrel_file
    from nodeprobe.model import load_with_tokenizer

    check_args(args)
    if args.tiny:
        model_dir = tiny_classifier(tmp / "model")
        data_file = tiny_fewrel(tmp / "fewrel.json")
    else:
        model_dir = Path(args.model).expanduser() if args.model else default_model(args.runs)
        data_file = fewrel_file(Path(args.data).expanduser() if args.data else None)
    data = read_fewrel(data_file)
    relation, item = pick_item(data, args.relation, args.item)
    model, tokenizer = load_with_tokenizer(model_dir, task="fewrel", device=args.device)
    pair = corrupt_pair(data, relation, item, tokenizer, args.corrupt, min(128, model.spec.max_len))
    dev = next(model.hf.parameters()).device
    clean_ids = torch.tensor([pair["clean"]], device=dev)
    corrupted_ids = torch.tensor([pair["corrupted"]], device=dev)
    grid, label, hi, lo = patch_heads(model, clean_ids, corrupted_ids)
    names = model.config.id2label or {}
    gold = pair["gold_label"] if pair["gold_label"] < model.spec.n_classes else None  # labels: relations in file order
    return {
        "model": "tiny" if args.tiny else str(model_dir),
        "data": "tiny" if args.tiny else str(data_file),
        "relation": relation,
        "item": item,
        "head_entity": pair["head"],
        "corrupt": args.corrupt,
        "swap_source": pair["swap_source"],
        "label": label,
        "label_name": str(names.get(label, label)),
        "gold_label": gold,
        "gold_name": None if gold is None else str(names.get(gold, gold)),
        "tokens_clean": tokenizer.convert_ids_to_tokens(pair["clean"]),
        "tokens_corrupted": tokenizer.convert_ids_to_tokens(pair["corrupted"]),
        "ids_clean": pair["clean"],
        "ids_corrupted": pair["corrupted"],
        "changed_positions": pair["changed"],
        "logit_clean": hi,
        "logit_corrupted": lo,
        "hook": "blocks.{layer}.attn.hook_z",
        "metric": "(logit_y - logit_y(corrupted)) / (logit_y(clean) - logit_y(corrupted)), y = the clean prediction",
        "axes": ["layer", "pos", "head"],
        "grid": grid.tolist(),
    }


def percent(v: float) -> str:
    """A cell as a whole percentage of the clean–corrupted gap (``-0`` shown as ``0``)."""
    s = f"{100 * v:.0f}"
    return "0" if s == "-0" else s


def render(result: dict, top: int) -> None:
    """Print the sentences, the label and one table per layer (rows: positions, columns: heads)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    say = lambda text: console.print(Text(text), soft_wrap=True)  # noqa: E731  (no markup: tokens hold [...])
    grid = result["grid"]
    L, P, H = len(grid), len(grid[0]), len(grid[0][0])
    toks, changed = result["tokens_clean"], set(result["changed_positions"])
    swap = result["swap_source"]
    how = (f"head entity -> that of {swap['relation']} item {swap['item']} ({swap['head']!r})" if swap
           else "head entity -> [MASK]")
    say(f"clean     ({result['relation']} item {result['item']}): {' '.join(toks)}")
    say(f"corrupted ({how}): {' '.join(result['tokens_corrupted'])}")
    gold = result["gold_label"]
    said_gold = f"; gold label {gold} ({result['gold_name']})" if gold is not None else ""
    say(f"clean prediction: label {result['label']} ({result['label_name']}), logit {result['logit_clean']:.4g} "
        f"clean, {result['logit_corrupted']:.4g} corrupted{said_gold}")
    say("cell = % of that logit gap restored by the clean blocks.{layer}.attn.hook_z of one head at one "
        "position (clean = 100, corrupted = 0); * = a replaced position")
    scale = max((abs(v) for layer in grid for row in layer for v in row), default=1.0) or 1.0
    for l in range(L):
        t = Table(title=f"layer {l}", title_justify="left", box=None, pad_edge=False)
        t.add_column("pos", justify="right")
        t.add_column("token")
        for h in range(H):
            t.add_column(f"H{h}", justify="right")
        for pos in range(P):
            cells = []
            for v in grid[l][pos]:
                a = abs(v) / scale
                style = (("bold " if a > 0.5 else "") + ("red" if v < 0 else "green")) if a > 0.1 else "dim"
                cells.append(Text(percent(v), style=style))
            t.add_row(str(pos), Text(("*" if pos in changed else "") + toks[pos]), *cells)
        console.print(t)
    if top:
        flat = sorted(((abs(grid[l][p][h]), l, p, h) for l in range(L) for p in range(P) for h in range(H)),
                      reverse=True)
        say("largest: " + ", ".join(f"L{l}H{h} pos {p} {toks[p]} {100 * grid[l][p][h]:+.1f}%"
                                    for _, l, p, h in flat[:top]))


def main(argv=None) -> int:
    args = parse_args(argv)
    from nodeprobe.errors import NodeprobeError

    import torch

    threads = torch.get_num_threads()
    if args.tiny:
        torch.set_num_threads(1)  # a tiny model gains nothing from threads, and loses much on a busy machine
    try:
        with tempfile.TemporaryDirectory(prefix="nodeprobe_tiny_") as tmp:
            result = run(args, Path(tmp))
    except NodeprobeError as e:
        flags = {k: "--" + k.replace("_", "-") for k in vars(args)}  # parameter names as this script's flags
        print(f"error: {e.in_flags(flags)}", file=sys.stderr)
        return e.exit_code
    finally:
        torch.set_num_threads(threads)
    render(result, args.top)
    if args.json:
        from nodeprobe.io import write_text_atomic

        write_text_atomic(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
