"""nodeprobe performance benchmarks (issue "Performance: benchmarks").

    python bench/run.py            # full run (≤ 15 min on 2 cores), writes bench/RESULTS.md
    python bench/run.py --quick    # smaller sizes (≤ 60 s), writes runs/bench/RESULTS-quick.md
    python bench/run.py --only P1,P3 --repeats 5

Every target is measured against a named baseline in the same run: baseline and candidate run
interleaved (B C, C B, …) and the ratio is the median of the per-repeat paired ratios; medians of
the two series are reported too.  Models are random-weight BERTs of the ``cpu`` preset
(6 × 192, 12 heads, V = 30522; paper size 6 × 768 for P4).  Nothing is downloaded
(``HF_HUB_OFFLINE=1``); data come from ``--data`` / ``$NODEPROBE_DATA`` / ``../shared/data``.

One line per target is printed::

    P<k> <name>: ratio=<x> (goal <y>) met|MISSED — details
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import subprocess
import sys
import tempfile
import shutil
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("NODEPROBE_PROGRESS", "0")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from timing import Timings, fmt_s, interleave, load_average, machine, other_load  # noqa: E402

V = 30522
GiB = 2**30
CLS_INIT_RANGE = 0.2

# Sizes and repeats.  Full: ≤ 15 min on 2 idle cores (P4's paper-size forward over 11,200 sentences
# alone takes ~5.5 min); quick: ≤ 60 s, every target on small sizes.
SIZES = {
    "full": dict(fewrel_limit=None, p3_limit=None, mlm_limit=None, p1_repeats=5, p1b_repeats=3,
                 p2_n=20000, p2_dims=(192, 768), p2_cand_nodes=None, p2_dense_nodes=1, p2_repeats=3,
                 p3_per_layer=1, p3_repeats=2, p5_steps=4, p5_repeats=3, p6_repeats=3,
                 p7_limit=32, p7_repeats=2),
    "quick": dict(fewrel_limit=128, p3_limit=16, mlm_limit=24, p1_repeats=2, p1b_repeats=2,
                  p2_n=20000, p2_dims=(192,), p2_cand_nodes=16, p2_dense_nodes=1, p2_repeats=2,
                  p3_per_layer=1, p3_repeats=2, p5_steps=1, p5_repeats=2, p6_repeats=2,
                  p7_limit=None, p7_repeats=0),
}


@dataclass
class Result:
    key: str
    name: str
    ratio: float
    goal: str  # e.g. "≤ 1.10"
    met: bool | None  # None: informational (no goal)
    summary: str  # one line: medians
    baseline: str  # what the baseline is
    sizes: str
    details: list[str] = field(default_factory=list)
    notes: str = ""

    @property
    def verdict(self) -> str:
        return "info" if self.met is None else "met" if self.met else "MISSED"

    def line(self, quick: bool = False) -> str:
        return (f"{self.key} {self.name}: ratio={self.ratio:.3g} (goal {self.goal}) "
                f"{self.verdict} — {self.summary}{' [quick sizes: indicative]' if quick else ''}")


# ---------------------------------------------------------------------------------- context
class Context:
    """Data and models shared by the targets (built lazily, once)."""

    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.size = SIZES["quick" if args.quick else "full"]

    def log(self, msg: str) -> None:
        if self.args.verbose:
            print(msg, file=sys.stderr, flush=True)

    @cached_property
    def data(self) -> Path:
        from nodeprobe.data.tasks import data_root

        return data_root(self.args.data)

    @cached_property
    def vocab_file(self) -> Path:
        return self.data / "tokenizer" / "bert-base-uncased-vocab.txt"

    @cached_property
    def tok(self):
        from nodeprobe.data.tokenizer import load_tokenizer

        return load_tokenizer(self.vocab_file)

    @cached_property
    def _fewrel_full(self):
        from nodeprobe.data.eval_sets import load_eval_set

        return load_eval_set("fewrel", self.tok, self.data, split="test")

    @cached_property
    def _fewrel_sub(self):
        from nodeprobe.data.eval_sets import load_eval_set

        return load_eval_set("fewrel", self.tok, self.data, split="test", limit=128)

    def fewrel(self, limit: int | None):
        """FewRel test (1,120 sentences), or ``limit`` ≤ 128 of a seeded subset of 128 (one load)."""
        if limit is None:
            return self._fewrel_full
        return _cut(self._fewrel_sub, limit)

    @property
    def fewrel_test(self):
        return self.fewrel(self.size["fewrel_limit"])

    @cached_property
    def corpus(self):
        from nodeprobe.data.corpus import PretrainData

        return PretrainData.load(self.data, None, 128)

    @cached_property
    def mlm_eval(self):
        from nodeprobe.data.eval_sets import load_eval_set

        return load_eval_set("mlm", self.tok, self.data, limit=self.size["mlm_limit"], corpus=self.corpus)

    def _hf(self, task: str, size: str = "cpu"):
        import torch
        from transformers import BertForMaskedLM, BertForSequenceClassification

        from nodeprobe.train.presets import get_preset

        torch.manual_seed(0)
        # Classifiers: initializer_range 0.2, so that predictions differ between sentences and move under
        # ablation (at HF's default 0.02 every sentence gets the same class and the exactness checks would
        # be vacuous).  Masked LMs keep the default init: that is what pre-training starts from.
        extra = {} if task == "mlm" else {"initializer_range": CLS_INIT_RANGE}
        cfg = get_preset(size).model.bert_config(V, num_labels=16, **extra)
        cls = BertForMaskedLM if task == "mlm" else BertForSequenceClassification
        return cls(cfg).eval()

    @cached_property
    def cls_model(self):
        from nodeprobe.model import HookedBert

        return HookedBert(self._hf("cls"))

    @cached_property
    def mlm_model(self):
        from nodeprobe.model import HookedBert

        return HookedBert(self._hf("mlm"))


def _cut(es, n: int):
    """The first ``n`` items of a classification eval set, spread over its batches (no reload)."""
    from dataclasses import replace

    from nodeprobe.data.eval_sets import EvalBatch, fingerprint_batches as _fingerprint_batches

    per = -(-n // len(es.batches))
    batches, left = [], n
    for b in es.batches:
        k = min(per, left, b.targets.numel())
        if k <= 0:
            break
        batches.append(EvalBatch(b.input_ids[:k], b.attention_mask[:k], b.targets[:k]))
        left -= k
    out = replace(es, batches=batches)
    out.fingerprint = _fingerprint_batches(batches)
    return out


def _first_batch(es):
    """The eval set cut to its first batch (warm-up runs)."""
    from dataclasses import replace

    return replace(es, batches=es.batches[:1])


def _batches(es, r: int):
    """All batches for a timed repeat, the first one for the warm-up (r = -1)."""
    return es.batches if r >= 0 else es.batches[:1]


def _sizes_cls(es) -> str:
    lens = [int(b.attention_mask.sum(1).max()) for b in es.batches]
    return (f"{es.n_items} sentences in {len(es.batches)} batches of ≤ 64, padded length "
            f"{min(lens)}–{max(lens)}; cpu preset 6 × 192, 12 heads, V {V}, 16 labels, random weights "
            f"(initializer_range {CLS_INIT_RANGE})")


# ---------------------------------------------------------------------------------- P1
def p1(ctx: Context) -> Result:
    import torch

    from nodeprobe.evaluate import run_eval
    from nodeprobe.hooks import SiteCache, z_name

    es, model = ctx.fewrel_test, ctx.cls_model
    hf = model.hf
    names = ["readout.hook_in"] + [z_name(l) for l in range(model.spec.n_layers)]

    def baseline(r):
        with torch.no_grad():
            return [hf(input_ids=b.input_ids, attention_mask=b.attention_mask).logits for b in _batches(es, r)]

    def candidate(r):
        sc = SiteCache(names, positions="cls")
        res = run_eval(model, es if r >= 0 else _first_batch(es), cache=sc)
        return res, sc.stack()

    t, last = interleave(baseline, candidate, ctx.size["p1_repeats"], log=ctx.log)
    hf_logits = torch.cat(last["baseline"])
    res, kept = last["candidate"]
    same = bool(torch.equal(res.preds, hf_logits.argmax(-1)))
    ratio = t.ratio()
    return Result(
        "P1", "cached eval, FewRel test (SiteCache at [CLS]: readout + all z)", ratio, "≤ 1.10",
        ratio <= 1.10 and same,
        f"run_eval + SiteCache {fmt_s(t.cand_median)} vs HF forward {fmt_s(t.base_median)} "
        f"(medians of {len(t.baseline)}; paired ratios {t.spread()[0]:.3f}–{t.spread()[1]:.3f})",
        "plain Hugging Face `BertForSequenceClassification` forward (SDPA) on the same batches, `torch.no_grad()`",
        _sizes_cls(es),
        [f"predictions equal the HF argmax: {same}",
         f"kept: {', '.join(f'{k} {tuple(v.shape)}' for k, v in list(kept.items())[:2])}, …"],
    )


# ---------------------------------------------------------------------------------- P1b
def p1b(ctx: Context) -> Result:
    import torch
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import BertTokenizer

    from nodeprobe.evaluate import run_eval
    from nodeprobe.hooks import SiteCache, z_name

    es, model = ctx.mlm_eval, ctx.mlm_model
    L = model.spec.n_layers
    names = ["readout.hook_in"] + [z_name(l) for l in range(L)]
    bridge = TransformerBridge.boot_transformers(
        "nodeprobe-bench-cpu", hf_model=copy.deepcopy(model.hf), tokenizer=BertTokenizer(vocab=str(ctx.vocab_file)),
        device="cpu")
    bridge.eval()

    def baseline(r):
        preds, z0 = [], None
        with torch.no_grad():
            for b in _batches(es, r):
                logits, cache = bridge.run_with_cache(b.input_ids, attention_mask=b.attention_mask)
                preds.append(logits[b.positions].argmax(-1))
                if z0 is None:
                    z0 = cache[z_name(L - 1)][b.positions].clone()
                del logits, cache
        return torch.cat(preds), z0

    def candidate(r):
        sc = SiteCache(names, positions=None)
        res = run_eval(model, es if r >= 0 else _first_batch(es), cache=sc)
        return res, sc.stack()

    t, last = interleave(baseline, candidate, ctx.size["p1b_repeats"], log=ctx.log)
    bpreds, bz0 = last["baseline"]
    res, kept = last["candidate"]
    n0 = int(es.batches[0].targets.numel())
    zdiff = float((kept[z_name(L - 1)][:n0] - bz0).abs().max())
    same = bool(torch.equal(bpreds, res.preds))
    speed = t.ratio(candidate_over_baseline=False)
    return Result(
        "P1b", "cached eval, MLM held-out (modified positions: readout + all z)", speed, "≥ 1.5 (speed-up)",
        speed >= 1.5 and same,
        f"run_eval + SiteCache {fmt_s(t.cand_median)} vs TransformerBridge.run_with_cache {fmt_s(t.base_median)} "
        f"(medians of {len(t.baseline)}; paired speed-ups {t.spread(False)[0]:.2f}–{t.spread(False)[1]:.2f})",
        "TransformerLens `TransformerBridge.run_with_cache` (default filter: every hook) per batch on a deep copy "
        "of the same HF model, `torch.no_grad()`; predictions read at the modified positions",
        f"{sum(b.input_ids.shape[0] for b in es.batches)} held-out sequences, {es.n_items} modified positions, "
        f"{len(es.batches)} batches; cpu preset BertForMaskedLM",
        [f"predictions equal the bridge's argmax at the modified positions: {same}",
         f"max |Δz| (last block, first batch) vs the bridge cache: {zdiff:.1e}"],
    )


# ---------------------------------------------------------------------------------- P2
def p2(ctx: Context) -> Result:
    import torch

    from nodeprobe.analysis.readout import dense_node_predictions, node_predictions

    N = ctx.size["p2_n"]
    dims = ctx.size["p2_dims"]
    repeats = ctx.size["p2_repeats"]
    ratios, details, all_same = [], [], True
    for d in dims:
        g = torch.Generator().manual_seed(d)
        W = torch.randn(V, d, generator=g) * 0.02  # BERT init scale
        b = torch.randn(V, generator=g) * 0.1
        X = torch.randn(N, d, generator=g)
        cand_nodes = ctx.size["p2_cand_nodes"] or d  # quick: the candidate on the first few nodes only
        n_dense = ctx.size["p2_dense_nodes"]
        dense_runs, cand = [], {}

        def baseline(r, W=W, b=b, X=X, n_dense=n_dense, cand_nodes=cand_nodes):
            if r < 0:  # warm-up: one node, a few items
                return dense_node_predictions(W[:, :1], b, X[:500, :1])
            nodes = [(7 + 61 * (r * n_dense + j)) % cand_nodes for j in range(n_dense)]
            dense_runs.append((nodes, dense_node_predictions(W[:, nodes], b, X[:, nodes])))

        def candidate(r, W=W, b=b, X=X, cand_nodes=cand_nodes):
            k = cand_nodes if r >= 0 else 2  # warm-up: two nodes
            cand["preds"] = node_predictions(W[:, :k], b, X[:, :k])

        t, _ = interleave(baseline, candidate, repeats, log=ctx.log)
        checked = [bool(torch.equal(dense[:, j], cand["preds"][:, i])) for nodes, dense in dense_runs
                   for j, i in enumerate(nodes)]
        per_dense = Timings([x / n_dense for x in t.baseline], [x / cand_nodes for x in t.candidate])
        sp = per_dense.ratio(candidate_over_baseline=False)
        ratios.append(sp)
        same = all(checked) and len(checked) > 0
        all_same &= same
        details.append(f"d = {d}: per node {fmt_s(per_dense.cand_median)} (envelope, all {cand_nodes} nodes) vs "
                       f"{fmt_s(per_dense.base_median)} (dense, {n_dense} node(s) per repeat) → {sp:.0f}×; "
                       f"identical predictions on {len(checked)} checked nodes: {same}")
    if not ctx.quick:  # informational: b = 0 (a random-init decoder), every line through x = 0
        W = torch.randn(V, dims[0], generator=torch.Generator().manual_seed(1)) * 0.02
        X = torch.randn(N, 2, generator=torch.Generator().manual_seed(2))
        b0 = torch.zeros(V)
        t, _ = interleave(lambda r: dense_node_predictions(W[:, :2], b0, X),
                          lambda r: node_predictions(W[:, :2], b0, X), 1, warmup=False)
        details.append(f"b = 0 (all lines through one point, as a random-init decoder; not in the ratio), "
                       f"d = {dims[0]}: per node {fmt_s(t.cand_median / 2)} (envelope) vs "
                       f"{fmt_s(t.base_median / 2)} (dense), {t.base_median / t.cand_median:.0f}×")
    worst = min(ratios)
    return Result(
        "P2", f"every node's predictions at the MLM readout (V {V}, N {N:,}, d {'/'.join(map(str, dims))})",
        worst, "≥ 100 (speed-up per node)", worst >= 100 and all_same,
        "; ".join(f"d={d}: {r:.0f}×" for d, r in zip(dims, ratios)) + " (the smaller is the ratio)",
        "`dense_node_predictions` (chunked dense W x + b and argmax in torch) on a few nodes, time per node",
        f"random W ~ N(0, 0.02²) [{V} × d], b ~ N(0, 0.1²), X ~ N(0, 1) [{N:,} × d]",
        details,
    )


# ---------------------------------------------------------------------------------- P3
def p3(ctx: Context) -> Result:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from nodeprobe.studies.ablation import sweep_heads
    from nodeprobe.hooks import ablate_head

    es, model = ctx.fewrel(ctx.size["p3_limit"]), ctx.cls_model
    L, H = model.spec.n_layers, model.spec.n_heads
    per_layer = ctx.size["p3_per_layer"]  # baseline heads per layer and repeat (extrapolated to all H)
    repeats = ctx.size["p3_repeats"]

    def heads_of(r):
        r = max(r, 0)
        return [(l, (r * per_layer + j + 5 * l) % H) for l in range(L) for j in range(per_layer)]

    @torch.no_grad()
    def baseline(r):
        out = {}
        for l, h in heads_of(r) if r >= 0 else heads_of(0)[:1]:
            correct, loss = 0.0, 0.0
            for b in _batches(es, r):
                logits = model.run_with_hooks(b.input_ids, b.attention_mask, fwd_hooks=[ablate_head(l, h)]).float()
                correct += float((logits.argmax(-1) == b.targets).sum())
                loss += float(F.cross_entropy(logits, b.targets, reduction="sum"))
            out[l, h] = (correct / es.n_items, loss / es.n_items)
        return out

    def candidate(r):
        return sweep_heads(model, es if r >= 0 else _first_batch(es))

    checks = []

    def baseline_checked(r):
        out = baseline(r)
        if r >= 0:
            checks.append(out)
        return out

    t, last = interleave(baseline_checked, candidate, repeats, log=ctx.log)
    rep = last["candidate"]
    scale = (L * H) / (L * per_layer)
    tb = Timings([x * scale for x in t.baseline], t.candidate)
    n_checked, max_dloss, acc_same = 0, 0.0, True
    for out in checks:
        for (l, h), (acc, loss) in out.items():
            n_checked += 1
            acc_same &= rep.accuracy[l][h] == acc
            max_dloss = max(max_dloss, abs(rep.loss[l][h] - loss))
    ratio = tb.ratio()
    same = acc_same and max_dloss <= 1e-5
    return Result(
        "P3", f"all-heads ablation sweep ({L} × {H} heads), FewRel test", ratio, "≤ 0.45", ratio <= 0.45 and same,
        f"sweep_heads {fmt_s(tb.cand_median)} vs {L * H} full forwards {fmt_s(tb.base_median)} "
        f"(medians of {len(tb.baseline)}; paired ratios {tb.spread()[0]:.3f}–{tb.spread()[1]:.3f})",
        f"one full forward per head via `HookedBert.run_with_hooks(fwd_hooks=[ablate_head(l, h)])`; timed on "
        f"{L * per_layer} heads per repeat ({per_layer} per block, different heads each repeat) × {scale:g} "
        "(every head costs the same full forward)",
        _sizes_cls(es),
        [f"metrics vs the baseline on {n_checked} (head, repeat) pairs: accuracy identical {acc_same}, "
         f"max |Δ loss| {max_dloss:.1e}",
         f"baseline accuracy {rep.baseline_accuracy:.4f}, Δaccuracy range "
         f"{float(np.min(rep.delta_accuracy)):+.4f} … {float(np.max(rep.delta_accuracy)):+.4f}"],
    )


def rss_child(ctx: Context, key: str, args: list[str]) -> tuple[dict, dict]:
    """Run ``bench/rss_child.py`` with ``args`` in a fresh process; its JSON line and the trace
    summary: ``n``, ``flat`` (peak at N / peak at N/4), ``peak`` (GiB), ``quarter``, ``met``, ``trace``."""
    cmd = [sys.executable, str(HERE / "rss_child.py"), "--threads", str(ctx.args.threads), *args]
    if ctx.args.data:
        cmd += ["--data", str(ctx.args.data)]
    ctx.log(f"    child: {' '.join(cmd[1:])}")
    out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if out.returncode != 0:
        raise RuntimeError(f"{key} child failed: {out.stderr[-2000:]}")
    run = json.loads(out.stdout.strip().splitlines()[-1])
    n = run["n_items"]
    quarter = next((k, rss) for k, rss in run["trace"] if k >= n / 4)
    flat = run["peak_rss"] / quarter[1]
    peak = run["peak_rss"] / GiB
    pts = run["trace"][:: max(1, len(run["trace"]) // 6)]
    pts = pts if pts[-1][0] == n else pts + [[n, run["peak_rss"]]]
    trace = ", ".join(f"{k:,}: {rss / GiB:.2f}" for k, rss in pts)
    return run, {"n": n, "flat": flat, "peak": peak, "quarter": quarter, "met": peak <= 3.0 and flat <= 1.10,
                 "trace": trace}


# ---------------------------------------------------------------------------------- P4
def p4(ctx: Context) -> Result:
    size = "cpu" if ctx.quick else "paper"
    run, r = rss_child(ctx, "P4", ["--size", size] + (["--test-only", "--limit", "560"] if ctx.quick else []))
    n, flat, peak, quarter, met, trace = r["n"], r["flat"], r["peak"], r["quarter"], r["met"], r["trace"]
    return Result(
        "P4", f"peak RSS caching z (all heads, [CLS]) + readout, FewRel {'test' if ctx.quick else 'train+test'}, "
        f"{size} size", flat, "≤ 3 GiB peak, flat in N (ratio = peak at N / peak at N/4 ≤ 1.10)", met,
        f"peak {peak:.2f} GiB after all {n:,} items vs {quarter[1] / GiB:.2f} GiB after the first {quarter[0]:,}",
        "— (absolute goal); flatness: the same run's peak after the first quarter of the items",
        f"{'paper size 6 × 768, 12 heads, d_ff 3072' if size == 'paper' else 'cpu preset'}, V {V}, random weights, "
        f"{run['params'] / 1e6:.0f} M parameters; `nodeprobe.cache.build_cache(sites=('readout', 'z'))` "
        f"(float32, 8 batches per shard) in a fresh process, {run['threads']} threads; "
        "peak = `VmHWM` of /proc/self/status (`getrusage().ru_maxrss` would carry over the parent's peak "
        "across fork + exec)",
        [f"peak before caching (imports, data, model): {run['peak_rss_before_cache'] / GiB:.2f} GiB; "
         f"cache on disk {run['cache_bytes'] / 2**20:.0f} MiB; {run['seconds']:.0f} s",
         f"peak RSS (GiB) after k items cached: {trace}",
         "batches of train and test in a seeded random order, so every stretch has the same mix of lengths"],
    )


# ---------------------------------------------------------------------------------- P4b
def write_table(path: Path, rows: int, vocab_file: Path, seed: int = 0, n_classes: int = 4) -> None:
    """A seeded labelled Parquet table: ``rows`` sentences of 4–24 words drawn from the vocab's
    whole words, ``label`` one of ``n_classes`` strings."""
    import numpy as np
    from datasets import Dataset

    words = [w for w in vocab_file.read_text().split("\n")[2000:12000] if w.isalpha() and len(w) > 2]
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, 25, size=rows)
    picks = rng.integers(0, len(words), size=int(lengths.sum()))
    ends = np.cumsum(lengths)
    texts = [" ".join(words[i] for i in picks[e - n:e]) for n, e in zip(lengths, ends)]
    labels = [f"class_{int(c)}" for c in rng.integers(0, n_classes, size=rows)]
    Dataset.from_dict({"text": texts, "label": labels}).to_parquet(str(path))


def p4b(ctx: Context) -> Result:
    rows = 20_000 if ctx.quick else 200_000
    tmp = Path(tempfile.mkdtemp(prefix="nodeprobe-bench-p4b-"))
    try:
        table = tmp / "table.parquet"
        from nodeprobe.data.tasks import data_root

        write_table(table, rows, data_root(ctx.args.data) / "tokenizer" / "bert-base-uncased-vocab.txt")
        run, r = rss_child(ctx, "P4b", ["--size", "cpu", "--dataset", str(table)])
        table_mib = table.stat().st_size / 2**20
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n, flat, peak, quarter, met, trace = r["n"], r["flat"], r["peak"], r["quarter"], r["met"], r["trace"]
    return Result(
        "P4b", f"peak RSS caching z + readout of your own table (--dataset, {rows:,}-row Parquet, train + test)",
        flat, "≤ 3 GiB peak, flat in N (ratio = peak at N / peak at N/4 ≤ 1.10)", met,
        f"peak {peak:.2f} GiB after all {n:,} rows vs {quarter[1] / GiB:.2f} GiB after the first {quarter[0]:,}",
        "— (absolute goal); flatness: the same run's peak after the first quarter of the rows",
        f"cpu preset, V {V}, random weights, {run['params'] / 1e6:.1f} M parameters; a seeded {rows:,}-row Parquet "
        f"table ({table_mib:.1f} MiB, 4–24 words per row, 4 string labels) read by `UserData` (the CLI's "
        "`--dataset`; stratified 0.2 test split), both splits cached by "
        "`nodeprobe.cache.build_cache(sites=('readout', 'z'))` in a fresh process, "
        f"{run['threads']} threads; peak = `VmHWM`",
        [f"peak RSS before caching (imports, table, model): {run['peak_rss_before_cache'] / GiB:.2f} GiB; cache on disk "
         f"{run['cache_bytes'] / 2**20:.0f} MiB; {run['seconds']:.0f} s",
         f"peak RSS (GiB) after k rows cached: {trace}"],
    )


# ---------------------------------------------------------------------------------- P5
def p5(ctx: Context) -> Result:
    import torch
    import torch.nn.functional as F
    from transformers import BertForMaskedLM

    from nodeprobe.data.batching import make_batches
    from nodeprobe.data.masking import step_rng
    from nodeprobe.model import HookedBert
    from nodeprobe.train import loop
    from nodeprobe.train.presets import get_preset
    from nodeprobe.data.eval_sets import mlm_batch
    from nodeprobe.precision import autocast as _autocast

    preset = get_preset("cpu")
    st = preset.pretrain
    steps_per_block = ctx.size["p5_steps"]
    repeats = ctx.size["p5_repeats"]
    corp = ctx.corpus
    seqs = corp.train
    order = make_batches([len(s) for s in seqs], st.batch_size, shuffle_seed=0)
    n_batches = steps_per_block * (repeats + 1)
    batches = []
    for i in range(n_batches):
        ids, attn, modified, targets = mlm_batch([seqs[j] for j in order[i]], corp.tokenizer, rng=step_rng(0, i),
                                                 rate=st.mask_rate)
        labels = torch.full_like(ids, -100)
        labels[modified] = targets
        batches.append((ids, attn, modified, targets, labels))

    torch.manual_seed(0)
    hf_a = BertForMaskedLM(preset.model.bert_config(V)).train()
    hf_b = copy.deepcopy(hf_a)
    model = HookedBert(hf_a, "mlm")
    model.train()
    opt_a = loop.make_optimizer(hf_a, st.lr, st.weight_decay, st.betas)
    opt_b = loop.make_optimizer(hf_b, st.lr, st.weight_decay, st.betas)
    dev = torch.device("cpu")

    def autocast():
        return _autocast(dev, st.precision)  # what pretrain uses

    def step_nodeprobe(ids, attn, modified, targets, labels):
        with autocast():
            logits = model(ids, attn, positions=modified)
        loss = F.cross_entropy(logits.float(), targets)
        opt_a.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf_a.parameters(), 1.0)
        opt_a.step()
        return float(loss.detach())

    def step_hf(ids, attn, modified, targets, labels):
        with autocast():
            loss = hf_b(input_ids=ids, attention_mask=attn, labels=labels).loss
        opt_b.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf_b.parameters(), 1.0)
        opt_b.step()
        return float(loss.detach())

    tokens = {}

    def block(fn, r):
        i0 = (r + 1) * steps_per_block
        sel = batches[i0:i0 + steps_per_block]
        tokens[r] = sum(int(b[1].sum()) for b in sel)
        return [fn(*b) for b in sel]

    first = {}

    def baseline(r):
        out = block(step_hf, r)
        first.setdefault("hf", out[0])
        return out

    def candidate(r):
        out = block(step_nodeprobe, r)
        first.setdefault("np", out[0])
        return out

    t, _ = interleave(baseline, candidate, repeats, log=ctx.log)
    tps = Timings([tokens[r] / x for r, x in enumerate(t.baseline)], [tokens[r] / x for r, x in enumerate(t.candidate)])
    ratio = tps.ratio()  # tokens/s candidate over baseline (same blocks of batches)
    same_loss = abs(first["hf"] - first["np"]) < 2e-2
    return Result(
        "P5", "pre-training tokens/s, cpu preset", ratio, "≥ 1.3", ratio >= 1.3,
        f"nodeprobe step {tps.cand_median:,.0f} tokens/s vs HF full-vocabulary loss {tps.base_median:,.0f} tokens/s "
        f"(medians of {len(tps.baseline)} blocks of {steps_per_block} steps)",
        "HF `BertForMaskedLM(input_ids, attention_mask, labels=…)` (its own loss over full-vocabulary logits), "
        "same batches, same bf16 autocast, fused AdamW and clipping",
        f"cpu preset 6 × 192, 12 heads, V {V}; batch {st.batch_size} sequences of ≤ 128 tokens, 15% modified; "
        f"{st.precision} autocast as the preset",
        [f"nodeprobe step = `nodeprobe.train.pretrain`'s: `HookedBert(ids, attn, positions=modified)` (decoder only "
         f"at the modified positions) + cross-entropy; first-step losses {first['np']:.4f} (nodeprobe) vs "
         f"{first['hf']:.4f} (HF), same init: {same_loss}"],
    )


# ---------------------------------------------------------------------------------- P6
def p6(ctx: Context) -> Result:
    from nodeprobe.cache import build_cache, load_cache
    from nodeprobe.studies.cooperation import cooperation_report

    es, model = ctx.fewrel_test, ctx.cls_model
    root = Path(tempfile.mkdtemp(prefix="nodeprobe-bench-p6-"))
    out = root / "cache"
    try:
        def baseline(_r):
            return build_cache(model, es, ("readout",), out)

        def candidate(_r):
            return cooperation_report(load_cache(out), R=20)

        t, last = interleave(baseline, candidate, ctx.size["p6_repeats"], log=ctx.log)
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    rep = last["candidate"]
    ratio = t.ratio()
    return Result(
        "P6", "cooperation, R = 20 over the whole n grid, from a cache (FewRel test)", ratio, "≤ 2", ratio <= 2,
        f"cooperation_report {fmt_s(t.cand_median)} vs build_cache {fmt_s(t.base_median)} "
        f"(medians of {len(t.baseline)})",
        "`nodeprobe.cache.build_cache(sites=('readout',))` of the same model and data (fingerprint, forward, shards)",
        _sizes_cls(es) + f"; grid {rep.grid} (d = {rep.d_model})",
        [f"{len(rep.grid)} grid points × R = 20 node sets; n* = {rep.n_star}"],
    )


# ---------------------------------------------------------------------------------- P7 (optional)
def p7(ctx: Context) -> Result | None:
    """One ``nodeprobe track`` step with heads on a random-init MLM (a step-0 snapshot); no goal given."""
    if ctx.quick:  # every node's V-way envelope alone takes ~10 s at random init (see P7's notes)
        return None
    try:
        from nodeprobe.studies.track import step_predictions, step_record
    except ImportError:
        return None
    import torch

    from nodeprobe.analysis.readout import dense_node_predictions
    from nodeprobe.data.eval_sets import load_eval_set
    from nodeprobe.evaluate import run_eval
    from nodeprobe.hooks import SiteCache, isolate_head

    es = load_eval_set("mlm", ctx.tok, ctx.data, limit=ctx.size["p7_limit"], corpus=ctx.corpus)
    model = ctx.mlm_model
    L, H, d = model.spec.n_layers, model.spec.n_heads, model.spec.d_model
    W, bias = model.readout_weights()
    n_dense = 4
    checks = []
    parts = {"evals": [], "nodes": []}

    def baseline(r):
        """Extrapolated: (clean + 6 isolated heads) × 73/7 evaluations, 4 dense nodes × d/4."""
        sub = es if r >= 0 else _first_batch(es)
        heads = [(l, (3 * max(r, 0) + l) % H) for l in range(L)] if r >= 0 else [(0, 0)]
        t0 = time.perf_counter()
        sc = SiteCache(["readout.hook_in"], positions=None)
        clean = run_eval(model, sub, cache=sc)
        out = {lh: run_eval(model, sub, fwd_hooks=[isolate_head(*lh)]).preds for lh in heads}
        t1 = time.perf_counter()
        X = sc.stack()["readout.hook_in"]
        dense_node_predictions(W[:, :n_dense], bias, X[:, :n_dense])
        t2 = time.perf_counter()
        if r >= 0:
            checks.append(out)
            parts["evals"].append((t1 - t0) * (L * H + 1) / (L + 1))
            parts["nodes"].append((t2 - t1) * d / n_dense)
        return clean

    def candidate(r):
        return step_record(model, es if r >= 0 else _first_batch(es), heads=True)

    t, last = interleave(baseline, candidate, ctx.size["p7_repeats"], warmup=False, log=ctx.log)
    base = [a + b for a, b in zip(parts["evals"], parts["nodes"])]
    tb = Timings(base, t.candidate)
    hp = step_predictions(model, es, heads=True).head_preds  # untimed: for the check
    same = all(torch.equal(hp[l, h], preds) for out in checks for (l, h), preds in out.items())
    ratio = tb.ratio()
    return Result(
        "P7", "one `nodeprobe track` step with heads (MLM, random init = step 0)", ratio,
        "none given (informational)", None if same else False,
        f"track.step_record {fmt_s(tb.cand_median)} vs naive {fmt_s(tb.base_median)} "
        f"(medians of {len(tb.baseline)})",
        "the same results computed naively: one clean `run_eval` + one `run_eval` per isolated head "
        "(`isolate_head(l, h)` hook; timed on 6 heads per repeat, × 73/7) + `dense_node_predictions` for every node "
        "(timed on 4 nodes, × d/4)",
        f"{sum(b.input_ids.shape[0] for b in es.batches)} held-out sequences, {es.n_items} modified positions; "
        "cpu preset BertForMaskedLM, random init (decoder bias 0, as a step-0 snapshot)",
        [f"isolated-head predictions equal run_eval's on {sum(len(o) for o in checks)} (head, repeat) pairs: {same}",
         f"naive parts (medians): evaluations {fmt_s(sorted(parts['evals'])[len(parts['evals']) // 2])}, "
         f"dense nodes {fmt_s(sorted(parts['nodes'])[len(parts['nodes']) // 2])}; "
         f"last step_record's own timer: {last['candidate']['seconds']:.2f} s"],
    )


# ---------------------------------------------------------------------------------- P8
def p8(ctx: Context) -> Result:
    """METHODS v2 §7: a head family of the group kind reads only the cache — ≤ 1.5× the node
    family of the same site (attn of the last block), both under the stored block readout."""
    from nodeprobe.cache import build_cache, load_cache
    from nodeprobe.studies.specialization import specialization_report

    es, model = ctx.fewrel_test, ctx.cls_model
    L = model.spec.n_layers - 1
    root = Path(tempfile.mkdtemp(prefix="nodeprobe-bench-p8-"))
    try:
        cache = build_cache(model, es, ("readout", "z"), root / "cache")
        # the block readout is trained once (on the same items: only the analysis is timed here)
        specialization_report(cache, site="attn", layer=L, train=cache)

        def baseline(_r):
            return specialization_report(load_cache(root / "cache"), site="attn", layer=L, train=cache)

        def candidate(_r):
            return specialization_report(load_cache(root / "cache"), level="head", layer=L, train=cache)

        t, last = interleave(baseline, candidate, ctx.size["p6_repeats"], log=ctx.log)
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    ratio = t.ratio()
    rep = last["candidate"]
    return Result(
        "P8", "head family (group kind, v2) vs node family of the same site, from the cache", ratio, "≤ 1.5",
        ratio <= 1.5,
        f"{len(rep.units)} heads {fmt_s(t.cand_median)} vs {model.spec.n_heads * model.spec.d_head} attn nodes "
        f"{fmt_s(t.base_median)} (medians of {len(t.baseline)})",
        "`specialization_report(site='attn', layer=L)`: every attn node of the block under the same stored block readout",
        _sizes_cls(es) + f"; block {L}",
        ["no forward pass on either side: both read z from the cache and the block readout from derived/"],
    )


TARGETS = {"P1": p1, "P1b": p1b, "P2": p2, "P3": p3, "P4": p4, "P4b": p4b, "P5": p5, "P6": p6, "P7": p7, "P8": p8}


# ---------------------------------------------------------------------------------- threads
def threads_probe(ctx: Context) -> str:
    """Which torch thread count suits this machine: P1's candidate on 128 sentences at 1 and at n threads."""
    import torch

    from nodeprobe.evaluate import run_eval
    from nodeprobe.hooks import SiteCache, z_name

    es, model = ctx.fewrel(128), ctx.cls_model
    names = ["readout.hook_in"] + [z_name(l) for l in range(model.spec.n_layers)]
    n = ctx.args.threads

    def at(k):
        def run(r):
            torch.set_num_threads(k)
            try:
                sc = SiteCache(names, positions="cls")
                run_eval(model, es if r >= 0 else _first_batch(es), cache=sc)
            finally:
                torch.set_num_threads(n)
        return run

    t, _ = interleave(at(1), at(n), 3, log=ctx.log)
    return (f"threads: cached eval of 128 FewRel sentences takes {fmt_s(t.base_median)} at 1 thread, "
            f"{fmt_s(t.cand_median)} at {n} (median of 3, interleaved): the library's default "
            f"(`loop.set_threads`: all {os.cpu_count()} cores) is {'the faster' if t.cand_median < t.base_median else 'not the faster'}")


# ---------------------------------------------------------------------------------- report
NOTES = {
    "P1": "profiled (torch.profiler, 1 thread): per forward HookedBert and HF run the same kernels — 38 addmm, "
          "6 fused SDPA (flash-attention CPU kernel), 6 GELU, 13 LayerNorm — and the same copies; the differences "
          "are the mask (HF passes an expanded bool [B, 1, P, P] mask, HookedBert an additive [B, 1, 1, P] one) and "
          "the identity hook-point calls.  Nothing to fix in model.py; the SiteCache hooks slice the [CLS] row of 7 "
          "tensors per batch.  The spread of the paired ratios is the machine's noise (both sides run identical "
          "GEMMs).",
    "P1b": "HookedBert decodes only the modified positions (`positions=`), so the V = 30522 decoder runs on ~15 % "
           "of the tokens, and SiteCache keeps only those rows; the bridge computes every hook and full-vocabulary "
           "logits at every position.",
    "P2": "`node_predictions`: per node, the upper envelope of the V lines (O(V log V)) and a binary search per "
          "item (O(N log V)), certified against the dense reference arithmetic.  The b = 0 line shows a slow case "
          "that random b hides: when every line passes through one point (all intercepts equal, e.g. the zero "
          "decoder bias of a random-init MLM, i.e. `nodeprobe track`'s step 0), every candidate lies exactly on "
          "the hull, the Akl–Toussaint prefilter cannot drop any, and `_upper_chain` plus the collinear-run loop "
          "of `_envelope_from_sorted` run in Python over all V lines, twice per node (~45–70 ms per node instead "
          "of ~11).  Still 25× faster than dense at N = 20,000, but slower than dense below N ≈ 500.  Suggested "
          "fix in `nodeprobe/analysis/readout.py` (not changed here): collapse each run of exactly collinear "
          "hull points to its lowest-index point with a vectorised cross-product test before the Python chain "
          "(only that point can win, as a zero-length segment), or special-case equal intercepts (envelope = "
          "min-slope line, the lowest index as a point at the common x, max-slope line).",
    "P3": "`sweep_heads` = `ablation.head_sweep_logits` per batch: blocks below the ablated one are never rerun; "
          "in the ablated block the clean z is computed once (ablating a head's z cannot change that block's "
          "q/k/v/pattern) and only W_O + LayerNorms + MLP are redone per head (`HookedBlock.finish`); blocks above "
          "run in full; the last block runs only at the rows the readout reads (`forward(readout_rows=True)`: "
          "[CLS], or the modified positions of MLM), and those rows attend to every position without projecting "
          "every key and value (`HookedAttention._rows`: scores = (W_K,hᵀ q_h)·x_j, output = W_V,h Σ_j p_hj x_j + "
          "b_V,h).  By measured op time a block is ~40 % attention (q/k/v + SDPA) and ~60 % W_O + MLP, so per "
          "head l < 5 costs 0.6 + (4 − l) blocks + ~0.01, plus the clean pass: ≈ 0.38 of 72 full forwards; the old "
          "resume-at-block-l sweep was 21/36 = 0.58.",
    "P4": "`build_cache` streams shards (8 batches each) to safetensors and keeps only the selected rows per batch; "
          "nothing grows with N (the cached data, 230 MiB here, is never in memory at once: one shard is ~11 MiB).  "
          "What moves the peak is glibc's heap: its dynamic mmap threshold lets freed activation buffers of varying "
          "sizes (batches of different lengths) fragment the heap, so the peak can creep up for a few thousand "
          "items and then plateau.  In a development run of this target (machine under load) the trace was 1.28 "
          "GiB at 512 items, 1.51 at 3,040, 1.70 from 7,104 to 11,200 (ratio 1.13); with `MALLOC_MMAP_THRESHOLD_="
          "131072` (cpu size) the peak was identical from the first shard to the last, but every large "
          "allocation then costs page faults: the cached eval ran 1.5–1.7× slower, so it is not recommended as a "
          "default.  If a flatter peak is wanted, bucketing batch lengths (e.g. padding to a multiple of 8 in "
          "`data.batching.collate`) so that activation sizes repeat might help (untested).",
    "P5": "`nodeprobe.train.pretrain` decodes only the modified positions (`positions=`), under bf16 autocast; "
          "the HF baseline computes full-vocabulary logits at every position and its own loss.",
    "P8": "a head of the group kind is a dense argmax over K rows of its d_head columns (one matmul per head); "
          "the node family runs one upper envelope per node (K lines) and a binary search per item.",
    "P6": "`cooperation` takes single-node predictions from the upper envelope (K = 16 lines per node) and the "
          "n ≥ 2 sets as dense logits over K = 16 classes; reading the cache is a few MiB.",
    "P7": "`track.step_record`: the head sweep is `ablation.head_sweep_logits` with `isolate_head` fills, then "
          "`node_predictions` for every node.  For MLM the V-way decoder at every modified position is needed "
          "once per isolated head (argmax over all V logits), so the sweep alone is ~0.6 of the naive "
          "evaluations; at random init (b = 0) every node's envelope is the slow case of P2 (~8–9 s of the step "
          "for d = 192).",
}
TRIED = {
    # filled for targets that miss their goal: what was tried
}


def write_results(path: Path, results: list[Result], meta: dict) -> None:
    lines = [
        "# nodeprobe benchmarks",
        "",
        f"Generated by `python bench/run.py{' --quick' if meta['quick'] else ''}` on {meta['date']} "
        f"({meta['wall']:.0f} s wall).",
        "",
        "## Machine",
        "",
        f"- CPU: {meta['machine']['cpu']}, {meta['machine']['cores']} cores ({meta['machine']['isa']}), "
        f"{meta['machine']['memory']} RAM",
        f"- Python {meta['machine']['python']}, torch {meta['machine']['torch']}, "
        f"{meta['machine']['torch_threads']} torch threads",
        f"- load average at start {meta['load_start']}, at end {meta['load_end']}",
    ]
    if meta["busy_start"] or meta["busy_end"]:
        lines.append("- **shared machine**: other processes were busy while this ran — at start: "
                     + ("; ".join(meta["busy_start"]) or "none") + "; at end: " + ("; ".join(meta["busy_end"]) or "none")
                     + ". Ratios are paired and interleaved, absolute times are inflated.")
    if meta.get("threads_probe"):
        lines.append(f"- {meta['threads_probe']}")
    if meta.get("note"):
        lines.append(f"- {meta['note']}")
    lines += [
        "",
        "Method: baseline and candidate run in the same process, interleaved (B C, C B, …) after one untimed "
        "warm-up each; *ratio* is the median of the per-repeat paired ratios (candidate / baseline time, or "
        "speed-up where the goal says so); the medians of both series are given too.",
        "",
        "## Results",
        "",
        "| target | ratio | goal | met | medians |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        met = {"met": "yes", "MISSED": "**no**", "info": "—"}[r.verdict]
        lines.append(f"| {r.key} {r.name} | {r.ratio:.3g} | {r.goal} | {met} | {r.summary} |")
    lines.append("")
    for r in results:
        lines += [f"### {r.key} {r.name}", "",
                  f"- ratio **{r.ratio:.3g}**, goal {r.goal}: "
                  f"{ {'met': 'met', 'MISSED': '**missed**', 'info': 'informational'}[r.verdict]}",
                  f"- baseline: {r.baseline}",
                  f"- sizes: {r.sizes}"]
        lines += [f"- {d}" for d in r.details]
        if NOTES.get(r.key):
            lines.append(f"- how: {NOTES[r.key]}")
        if r.met is False:
            lines.append(f"- tried: {TRIED.get(r.key, 'see the notes above; no further attempt recorded')}")
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, ≤ 60 s")
    p.add_argument("--only", default=None, help="comma list of targets (P1,P1b,P2,P3,P4,P5,P6)")
    p.add_argument("--data", default=None, help="data folder (default $NODEPROBE_DATA or ../shared/data)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the library's, all cores)")
    p.add_argument("--out", default=None, help="results file (default bench/RESULTS.md; --quick: runs/bench/RESULTS-quick.md)")
    p.add_argument("--note", default=None, help="a line for the Machine section of the results")
    p.add_argument("-v", "--verbose", action="store_true", help="per-repeat timings on stderr")
    p.add_argument("--from-json", default=None,
                   help="rewrite the results file from a previous run's JSON (no measuring)")
    args = p.parse_args(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        out = Path(args.out) if args.out else Path(args.from_json).with_suffix(".md")
        write_results(out, [Result(**r) for r in saved["results"]], saved["meta"])
        print(f"wrote {out}")
        return 0

    import torch

    from nodeprobe.train.loop import set_threads

    set_threads(args.threads)
    args.threads = torch.get_num_threads()
    keys = list(TARGETS) if not args.only else [k.strip() for k in args.only.split(",") if k.strip()]
    bad = [k for k in keys if k not in TARGETS]
    if bad:
        p.error(f"--only {bad[0]}: expected some of {', '.join(TARGETS)}")
    out = Path(args.out) if args.out else (HERE.parent / "runs" / "bench" / "RESULTS-quick.md" if args.quick
                                           else HERE / "RESULTS.md")
    meta = {"quick": args.quick, "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "machine": machine(), "load_start": load_average(), "busy_start": other_load(), "note": args.note}
    t0 = time.time()
    ctx = Context(args)
    if not args.quick and args.threads > 1:
        meta["threads_probe"] = threads_probe(ctx)
        print(meta["threads_probe"], flush=True)
    results = []
    for k in keys:
        t1 = time.time()
        r = TARGETS[k](ctx)
        ctx.log(f"  ({k}: {time.time() - t1:.1f} s)")
        if r is None:
            why = "not in --quick" if args.quick else "nodeprobe.studies.track is not importable"
            print(f"{k}: skipped ({why})", flush=True)
            continue
        print(r.line(args.quick), flush=True)
        results.append(r)
    meta.update(wall=time.time() - t0, load_end=load_average(), busy_end=other_load())
    write_results(out, results, meta)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=1))
    print(f"wrote {out} ({meta['wall']:.0f} s)")
    return 0 if all(r.met is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
