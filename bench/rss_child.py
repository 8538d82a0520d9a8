"""P4 child: cache ``z`` (every head, [CLS]) and ``readout`` of FewRel sentences; trace the peak RSS.

Run by ``bench/run.py`` in a fresh process, so that the peak resident set size (``VmHWM``, see
:func:`peak_rss`) belongs to this caching run alone.  The batches of
train + test are put in a seeded random order (so every stretch of the run has the same mix of
lengths) and the peak is recorded after every shard ``build_cache`` writes, against the number of
items cached so far: "flat in N" compares the peak after the first quarter of the items with the
peak at the end.  Prints one JSON line.

    python bench/rss_child.py --size paper [--test-only] [--limit N] [--data DIR] [--threads 2]
    python bench/rss_child.py --size cpu --dataset big.parquet     # P4b: your own table (train + test)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time


def peak_rss() -> int:
    """Peak resident set size of this process's address space, in bytes.

    ``VmHWM`` of ``/proc/self/status``, not ``getrusage().ru_maxrss``: Linux carries the parent's
    high-water mark over ``fork``/``vfork`` + ``exec`` into ``ru_maxrss`` (the benchmark parent holds
    several models, so the child would report the parent's peak)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", default="paper", choices=["paper", "cpu"])
    p.add_argument("--test-only", action="store_true", help="only the test split (1,120 sentences)")
    p.add_argument("--limit", type=int, default=None, help="a seeded subset of each split (smoke runs)")
    p.add_argument("--data", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dataset", default=None, help="a labelled table (--dataset of the CLI): cache its rows instead")
    args = p.parse_args(argv)

    import torch
    from transformers import BertForSequenceClassification

    import nodeprobe.evaluate as evaluate
    from nodeprobe.cache import build_cache
    from nodeprobe.data.tokenizer import load_tokenizer
    from nodeprobe.data.eval_sets import EvalSet, load_eval_set, fingerprint_batches as _fingerprint_batches
    from nodeprobe.model import HookedBert
    from nodeprobe.data.tasks import data_root
    from nodeprobe.train.presets import get_preset

    torch.set_num_threads(args.threads)
    data = data_root(args.data)
    tok = load_tokenizer(data / "tokenizer" / "bert-base-uncased-vocab.txt")
    splits = ["test"] if args.test_only else ["train", "test"]
    if args.dataset:  # the CLI's --dataset path: UserData, stratified 0.2 test split, train + test cached
        from nodeprobe.data.user import UserData

        task, source = "dataset", UserData(args.dataset)
    else:
        task, source = "fewrel", data
    sets = [load_eval_set(task, tok, source, split=s, limit=args.limit) for s in splits]
    n_classes = sets[0].n_classes
    batches = [b for s in sets for b in s.batches]
    random.Random(0).shuffle(batches)
    es = EvalSet(task, batches, sets[0].class_names, sets[0].source, sets[0].seed)
    es.fingerprint = _fingerprint_batches(es.batches)

    torch.manual_seed(0)
    hf = BertForSequenceClassification(get_preset(args.size).model.bert_config(30522, num_labels=n_classes)).eval()
    model = HookedBert(hf)

    trace: list[tuple[int, int]] = []  # (items cached so far, peak RSS so far)
    run_eval = evaluate.run_eval

    def traced_run_eval(model, eval_set, *a, **kw):  # build_cache evaluates one shard per call
        res = run_eval(model, eval_set, *a, **kw)
        trace.append(((trace[-1][0] if trace else 0) + eval_set.n_items, peak_rss()))
        return res

    evaluate.run_eval = traced_run_eval
    peak_before = peak_rss()
    out = tempfile.mkdtemp(prefix="nodeprobe-bench-p4-")
    try:
        t0 = time.perf_counter()
        reader = build_cache(model, es, ("readout", "z"), out, dtype="float32")
        seconds = time.perf_counter() - t0
        cache_bytes = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)
                          if os.path.isfile(os.path.join(out, f)))
        n_items = reader.n_items
    finally:
        evaluate.run_eval = run_eval
        shutil.rmtree(out, ignore_errors=True)
    print(json.dumps({
        "n_items": n_items, "size": args.size, "threads": args.threads, "seconds": seconds,
        "peak_rss": peak_rss(), "peak_rss_before_cache": peak_before, "trace": trace,
        "cache_bytes": cache_bytes, "params": sum(p.numel() for p in hf.parameters()),
    }))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
