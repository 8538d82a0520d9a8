"""Helper of ``tests/data/test_data_eval_sets.py``: evaluate a text under a capped address space.

Run as ``python tests/_streaming_capped.py '<json settings>'`` in a fresh process (the test sets
``MALLOC_ARENA_MAX=1 OMP_NUM_THREADS=1``).  It builds a tiny random masked LM for the given vocab,
warms the whole pipeline up on a small text (so that every lazily loaded library and thread is
mapped), then caps the address space at the current ``VmSize`` + ``headroom_mib`` and

1. (controls) reads the big text whole the naive way (``open(p).read().split()``) and the old
   materialising way (``track_eval_set(text_file=…)``: a tokenised corpus, its sequences and every
   batch in lists): both must fail to fit — ``MemoryError``, or a native library aborting on the
   failed allocation (SIGABRT), which counts as "did not fit" too;
2. evaluates the same text streamed (``load_eval_set("mlm", tok, text=p)`` → ``run_eval``) and
   writes an activation cache of it (``build_cache``): both must succeed;
3. with ``cfg["flat"]``: a text with no blank line at all.  Read as one article (the cut at
   ``MAX_ARTICLE_CHARS`` disabled) it does not fit (control); with the cut (``MAX_ARTICLE_CHARS``
   set to ``cfg["flat_article_chars"]`` so that a piece fits the small headroom: the default 1 MiB
   piece costs ~150 MB to tokenise) it is evaluated streamed.

It prints one JSON line with what happened; the test asserts on it.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import time


def vm_size() -> int:
    """Bytes of address space mapped now (``VmSize`` of ``/proc/self/status``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def attempt(fn):
    """``"ok"``, ``"MemoryError"`` or the other exception's one-line description."""
    try:
        fn()
        return "ok"
    except MemoryError:
        return "MemoryError"
    except Exception as e:  # noqa: BLE001 - reported to the test, which fails on it
        return f"{type(e).__name__}: {str(e)[:200]}"
    finally:
        gc.collect()


def in_child(fn) -> str:
    """:func:`attempt` in a forked child (same address space, same cap), so that whatever the
    attempt leaves behind (a grown heap, fragmented arenas) cannot shrink the parent's headroom."""
    import os

    import signal

    codes = {"ok": 0, "MemoryError": 3}
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        r = attempt(fn)
        os._exit(codes.get(r, 4))
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        if os.WTERMSIG(status) == signal.SIGABRT:  # a native allocator gave up: did not fit either
            return "SIGABRT"
        return f"killed by signal {os.WTERMSIG(status)}"
    return {0: "ok", 3: "MemoryError"}.get(os.WEXITSTATUS(status), f"other error (exit {os.WEXITSTATUS(status)})")


def main(cfg: dict) -> dict:
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from nodeprobe.cache import build_cache
    from nodeprobe.data.tokenizer import load_tokenizer
    from nodeprobe.data.eval_sets import load_eval_set
    from nodeprobe.evaluate import run_eval
    from nodeprobe.model import HookedBert
    from nodeprobe.studies.track import track_eval_set

    torch.set_num_threads(1)
    t0 = time.process_time()
    tok = load_tokenizer(cfg["vocab"])
    torch.manual_seed(0)
    hf = BertForMaskedLM(BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=32,
                                    max_position_embeddings=cfg["max_len"]))
    model = HookedBert(hf.eval())
    kw = dict(batch_size=cfg["batch_size"], max_len=cfg["max_len"], buffer_batches=cfg["buffer_batches"])

    # warm-up: the same code paths and shapes on a small text
    small = load_eval_set("mlm", tok, text=cfg["small"], **kw)
    run_eval(model, small)
    build_cache(model, small, "readout", cfg["out"] + "/warm")
    attempt(lambda: track_eval_set("mlm", tok, text_file=cfg["small"], batch_size=kw["batch_size"],
                                   max_len=kw["max_len"]))
    del small
    gc.collect()

    vm0 = vm_size()
    cap = vm0 + (cfg["headroom_mib"] << 20)
    resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
    out = {"vm_before_mib": vm0 / 2**20, "cap_mib": cap / 2**20, "warmup_cpu_s": time.process_time() - t0}

    if not cfg.get("controls", True):
        out["words"] = out["materialised"] = "skipped"
    else:
        out["words"] = in_child(lambda: open(cfg["big"], encoding="utf-8").read().split())
        out["materialised"] = in_child(lambda: track_eval_set("mlm", tok, text_file=cfg["big"],
                                                              batch_size=kw["batch_size"], max_len=kw["max_len"]))
    t = time.process_time()
    holder = {}

    def streamed():
        es = load_eval_set("mlm", tok, text=cfg["big"], **kw)
        holder.update(n_items=es.n_items, n_batches=len(es.batches), is_streamed=es.streamed)
        res = run_eval(model, es)
        holder.update(eval_items=int(res.targets.numel()), eval_preds=int(res.preds.numel()),
                      eval_losses=int(res.losses.numel()))
        del res
        gc.collect()
        reader = build_cache(model, es, "readout", cfg["out"] + "/cache")
        holder.update(cache_items=reader.n_items, cache_shards=len(reader.manifest["shards"]))

    out["streamed"] = attempt(streamed)
    out.update(holder)
    out["streamed_cpu_s"] = time.process_time() - t

    if cfg.get("flat"):
        import nodeprobe.data.text as text_mod

        def flat(chars):
            def run():
                text_mod.MAX_ARTICLE_CHARS = chars
                es = load_eval_set("mlm", tok, text=cfg["flat"], **kw)
                res = run_eval(model, es)
                holder.update(flat_items=es.n_items, flat_eval_items=int(res.targets.numel()))
            return run

        t = time.process_time()
        if cfg.get("controls", True):
            out["flat_whole"] = in_child(flat(1 << 62))  # one article as large as the file
        out["flat_streamed"] = attempt(flat(cfg["flat_article_chars"]))
        out.update(holder)
        out["flat_cpu_s"] = time.process_time() - t
    out["vm_after_mib"] = vm_size() / 2**20
    return out


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(json.loads(sys.argv[1]))), flush=True)
    sys.stdout.flush()
