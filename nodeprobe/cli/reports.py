"""CLI commands of the cache and the specialization reports: ``cache``, ``specialization``, ``apt``,
``cooperation``, ``hull``, ``blocks``.

Every command: validates its options (one-line error, exit 2, nothing written) → loads the model
and the evaluation set → reuses the matching activation cache or builds one
(:func:`nodeprobe.cache.get_or_build_cache`; ``--cache DIR``, default
``runs/cache/<model-fp>-<data-fp>/``; ``--rebuild``) → calls one report function of
:mod:`nodeprobe.studies` → renders it (:mod:`nodeprobe.render.views`) → writes ``--json`` and
``--plot`` PNGs.  JSON schemas: ``docs/json.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from nodeprobe.errors import NodeprobeError
from nodeprobe.cli.options import DataOpt, DeviceOpt, ModelOpt, TextOpt, check_positive, check_text
from nodeprobe.render import figures

SeedOpt = typer.Option(0, "--seed", help="Seed of the evaluation masks / subset and of every random choice.")
LimitOpt = typer.Option(None, "--limit", help="Evaluate at most this many sentences (MLM: sequences).")
CacheOpt = typer.Option(None, "--cache", help="Cache directory (default runs/cache/<model-fp>-<data-fp>/).")
RebuildOpt = typer.Option(False, "--rebuild", help="Rebuild the cache even if a matching one exists.")
JsonOpt = typer.Option(None, "--json", help="Also write the numbers as JSON to this path (schema: docs/json.md).")
PlotOpt = typer.Option(None, "--plot", help="Write PNG plots into this folder (needs matplotlib).")
TopOpt = typer.Option(10, "--top", help="Rows to show in the detail tables.")
BatchOpt = typer.Option(64, "--batch-size", help="Evaluation batch size.")
ModeOpt = typer.Option("zero", "--mode", help="zero | mean: what isolated-away units are set to (METHODS §2).")
TauROpt = typer.Option(0.5, "--tau-recall", help="Learned set: recall ≥ τ_r (METHODS §3).")
TauLOpt = typer.Option(2.0, "--tau-lift", help="Learned set: lift ≥ τ_ℓ.")
MinCountOpt = typer.Option(5, "--min-count", help="Learned set: at least this many correct items.")


# ---------------------------------------------------------------------- shared steps
def _check_outputs(json_path: Path | None, plot: Path | None) -> None:
    from nodeprobe.render.jsonio import check_writable

    check_writable(json_path)
    if plot is not None:
        if plot.exists() and not plot.is_dir():
            raise NodeprobeError(f"--plot {plot}: is a file; give a folder")
        check_writable(plot / "x.png", "--plot")


def _check_task(task: str) -> None:
    from nodeprobe.data.tasks import check_task

    check_task(task)


def _load(model: str, task: str, data, limit, seed: int, device: str, batch_size: int, cache: Path | None,
          rebuild: bool, sites, validate=None, corpus=None, loaded=None, text=None):
    """Model, eval set and cache (validated first; the cache is built only when everything is valid).

    ``text``: ``--text-file`` (checked by ``check_text``), a streamed MLM evaluation set over that whole text (instead of ``data``'s
    held-out split)."""
    from nodeprobe.cache import get_or_build_cache
    from nodeprobe.cli.options import load_for_task
    from nodeprobe.evaluate import load_eval_set

    m, tok = loaded if loaded is not None else load_for_task(model, task, device)
    if validate is not None:
        validate(m)
    es = load_eval_set(task, tok, data, limit=limit, seed=seed, batch_size=batch_size,
                       max_len=min(128, m.spec.max_len), corpus=None if text is not None else corpus, text=text)
    reader = get_or_build_cache(m, es, sites, cache, rebuild=rebuild, progress=True)
    return m, es, reader


def _settings(reader, text=None, **kw) -> dict:
    """A report's ``settings``: its options, ``text_file`` only with ``--text-file`` (the reports
    without it keep their keys), then what the cache says (none for ``reader=None``: ``cache``)."""
    out = {k: (str(v) if isinstance(v, Path) else v) for k, v in kw.items()}
    if text is not None:
        out["text_file"] = str(text)
    if reader is not None:
        out.update(cache=str(reader.path), model_fingerprint=reader.model_fingerprint,
                   eval_fingerprint=reader.eval_fingerprint, source=reader.manifest["source"], n_items=reader.n_items)
    return out


def _plots(plot: Path | None, fn) -> None:
    if plot is not None:
        fn(Path(plot))


def register(app: typer.Typer) -> None:
    """Add the commands to the ``nodeprobe`` app (called by :mod:`nodeprobe.cli`)."""

    # ------------------------------------------------------------------ cache
    @app.command("cache")
    def cache_cmd(
        model: str = ModelOpt,
        task: str = typer.Option("fewrel", "--task", help="mlm | fewrel | dbpedia"),
        data: Optional[Path] = DataOpt,
        text: Optional[str] = TextOpt,
        sites: str = typer.Option("readout,z,resid", "--sites", help="Comma list of readout, z, resid."),
        limit: Optional[int] = LimitOpt,
        seed: int = SeedOpt,
        device: str = DeviceOpt,
        out: Optional[Path] = typer.Option(None, "--out", "--cache", help="Cache directory (default runs/cache/<model-fp>-<data-fp>/)."),
        rebuild: bool = RebuildOpt,
        batch_size: int = BatchOpt,
        shard_batches: int = typer.Option(8, "--shard-batches", help="Evaluation batches per shard file."),
        dtype: str = typer.Option("float32", "--dtype", help="float32 | float16 | bfloat16 (storage)."),
        json_path: Optional[Path] = JsonOpt,
    ):
        """Run the model once and cache the chosen sites (readout, z, resid) for every report."""
        from nodeprobe.cache import DTYPES, get_or_build_cache, parse_sites
        from nodeprobe.cli.options import load_for_task
        from nodeprobe.evaluate import load_eval_set
        from nodeprobe.render.jsonio import write_report
        from nodeprobe.render.views import render_cache

        _check_task(task)
        check_text(text, task)
        want = parse_sites(sites)
        check_positive(limit=limit, batch_size=batch_size, shard_batches=shard_batches)
        if dtype not in DTYPES:
            raise NodeprobeError(f"--dtype {dtype}: expected one of {', '.join(DTYPES)}")
        _check_outputs(json_path, None)
        m, tok = load_for_task(model, task, device)
        es = load_eval_set(task, tok, data, limit=limit, seed=seed, batch_size=batch_size, max_len=min(128, m.spec.max_len),
                           text=text)
        reader = get_or_build_cache(m, es, want, out, rebuild=rebuild, progress=True, shard_batches=shard_batches, dtype=dtype)
        info = reader.describe()
        render_cache(info, reader.built)
        cache_settings = _settings(None, text=text, model=model, task=task, sites=list(want), limit=limit, seed=seed)
        write_report(json_path, "cache", cache_settings, {**info, "built": reader.built})

    # ------------------------------------------------------------------ specialization
    @app.command("specialization")
    def specialization_cmd(
        model: str = ModelOpt,
        task: str = typer.Option("fewrel", "--task", help="mlm | fewrel | dbpedia"),
        data: Optional[Path] = DataOpt,
        text: Optional[str] = TextOpt,
        level: str = typer.Option("node", "--level", help="node | head"),
        site: Optional[str] = typer.Option(None, "--site", help="readout | resid | z (default: readout for nodes, z for heads)"),
        layer: Optional[int] = typer.Option(None, "--layer", help="resid: the block whose output is studied; head: one block (default all)."),
        mode: str = ModeOpt,
        tau_recall: float = TauROpt,
        tau_lift: float = TauLOpt,
        min_count: int = MinCountOpt,
        limit: Optional[int] = LimitOpt,
        seed: int = SeedOpt,
        device: str = DeviceOpt,
        cache: Optional[Path] = CacheOpt,
        rebuild: bool = RebuildOpt,
        batch_size: int = BatchOpt,
        top: int = TopOpt,
        unit: Optional[str] = typer.Option(None, "--unit", help="Show one unit in detail: a node (12) or a head (L3H5)."),
        json_path: Optional[Path] = JsonOpt,
        plot: Optional[Path] = PlotOpt,
    ):
        """Per-node or per-head accuracy, outputs, learned classes Λ, SNR, and the symmetry summary."""
        from nodeprobe.render.jsonio import write_report
        from nodeprobe.render.views import render_specialization
        from nodeprobe.studies._common import check_mode, check_thresholds
        from nodeprobe.studies.specialization import parse_unit, resolve_specialization, specialization_report

        _check_task(task)
        check_text(text, task)
        check_mode(mode)
        check_thresholds(tau_recall, tau_lift, min_count)
        check_positive(limit=limit, top=top, batch_size=batch_size)
        the_site, _ = resolve_specialization(level, site, layer, None)  # before loading anything
        if unit is not None:
            parse_unit(level, unit)
        _check_outputs(json_path, plot)

        def validate(m):
            resolve_specialization(level, site, layer, m.spec.n_layers)
            if unit is not None:
                parse_unit(level, unit, m.spec.n_layers, m.spec.n_heads, m.spec.d_model)

        sites = ("readout", "resid") if the_site == "resid" else ("readout",)
        m, es, reader = _load(model, task, data, limit, seed, device, batch_size, cache, rebuild, sites, validate,
                              text=text)
        rep = specialization_report(reader, level=level, site=site, layer=layer, mode=mode, tau_recall=tau_recall,
                                    tau_lift=tau_lift, min_count=min_count, model=m, eval_set=es, progress=True)
        render_specialization(rep, top, rep.find_unit(unit) if unit is not None else None)
        settings = _settings(reader, text=text, model=model, task=task, level=level, site=rep.site, layer=layer, mode=mode,
                             tau_recall=tau_recall, tau_lift=tau_lift, min_count=min_count, limit=limit, seed=seed)
        write_report(json_path, "specialization", settings, rep)

        _plots(plot, lambda d: figures.specialization(rep, d, f"{task}, {mode}"))

    # ------------------------------------------------------------------ APT
    @app.command("apt")
    def apt_cmd(
        model: str = ModelOpt,
        task: str = typer.Option("mlm", "--task", help="mlm (APT is an MLM metric)"),
        data: Optional[Path] = DataOpt,
        text: Optional[str] = TextOpt,
        min_count: int = typer.Option(5, "--min-count", help="Tokens with at least this many modified occurrences."),
        bins: int = typer.Option(10, "--bins", help="log10-frequency bins."),
        probe: bool = typer.Option(False, "--probe/--no-probe", help="Also a seeded linear probe per block."),
        probe_fraction: float = typer.Option(0.5, "--probe-fraction", help="Share of the held-out items that train the probe."),
        probe_epochs: int = typer.Option(30, "--probe-epochs"),
        cluster_threshold: float = typer.Option(0.5, "--cluster-threshold", help="Strong match: C[i,j]/C[i,i] ≥ this."),
        limit: Optional[int] = LimitOpt,
        seed: int = SeedOpt,
        device: str = DeviceOpt,
        cache: Optional[Path] = CacheOpt,
        rebuild: bool = RebuildOpt,
        batch_size: int = BatchOpt,
        top: int = TopOpt,
        json_path: Optional[Path] = JsonOpt,
        plot: Optional[Path] = PlotOpt,
    ):
        """Accuracy per token vs corpus frequency, ⟨APT⟩ and confusion clusters along blocks (MLM)."""
        from nodeprobe.render.jsonio import write_report
        from nodeprobe.render.views import render_apt
        from nodeprobe.studies.apt import apt_report
        from nodeprobe.studies.lens import ProbeSettings

        _check_task(task)
        check_text(text, task)
        if task != "mlm":
            raise NodeprobeError(f"--task {task}: APT is a masked-LM metric; use --task mlm")
        check_positive(min_count=min_count, bins=bins, probe_epochs=probe_epochs, limit=limit, top=top, batch_size=batch_size)
        if not 0.0 < cluster_threshold <= 1.0:
            raise NodeprobeError(f"--cluster-threshold {cluster_threshold}: expected a number in (0, 1]")
        ps = ProbeSettings(fraction=probe_fraction, epochs=probe_epochs, seed=seed)
        ps.check()
        _check_outputs(json_path, plot)
        from nodeprobe.cli.options import load_for_task
        from nodeprobe.train.pretrain import PretrainData

        loaded = load_for_task(model, task, device)  # a bad model fails before the corpus is read
        corpus = PretrainData.load(data, None, min(128, loaded[0].spec.max_len))
        m, es, reader = _load(model, task, data, limit, seed, device, batch_size, cache, rebuild, ("readout", "resid"),
                              corpus=corpus, loaded=loaded, text=text)
        rep = apt_report(reader, m, corpus.counts, min_count=min_count, n_bins=bins, probe=ps if probe else None,
                         cluster_threshold=cluster_threshold, top=top, device=device, progress=True)
        render_apt(rep, top)
        settings = _settings(reader, text=text, model=model, task=task, min_count=min_count, bins=bins, probe=probe,
                             probe_fraction=probe_fraction, probe_epochs=probe_epochs,
                             cluster_threshold=cluster_threshold, limit=limit, seed=seed)
        write_report(json_path, "apt", settings, rep)

        _plots(plot, lambda d: figures.apt(rep, d))

    # ------------------------------------------------------------------ cooperation
    @app.command("cooperation")
    def cooperation_cmd(
        model: str = ModelOpt,
        task: str = typer.Option("fewrel", "--task", help="mlm | fewrel | dbpedia"),
        data: Optional[Path] = DataOpt,
        text: Optional[str] = TextOpt,
        mode: str = ModeOpt,
        R: int = typer.Option(20, "--R", help="Random node sets per n."),
        grid: Optional[str] = typer.Option(None, "--grid", help="Node counts (default METHODS §5: 1,2,3,4,6,…,768)."),
        tau_recall: float = TauROpt,
        tau_lift: float = TauLOpt,
        min_count: int = MinCountOpt,
        limit: Optional[int] = LimitOpt,
        seed: int = SeedOpt,
        device: str = DeviceOpt,
        cache: Optional[Path] = CacheOpt,
        rebuild: bool = RebuildOpt,
        batch_size: int = BatchOpt,
        json_path: Optional[Path] = JsonOpt,
        plot: Optional[Path] = PlotOpt,
    ):
        """Cooperation gain and crossover of random readout node sets (METHODS §5)."""
        from nodeprobe.render.jsonio import write_report
        from nodeprobe.render.views import render_cooperation
        from nodeprobe.studies._common import check_mode, check_thresholds
        from nodeprobe.studies.cooperation import cooperation_report, parse_grid

        _check_task(task)
        check_text(text, task)
        check_mode(mode)
        check_thresholds(tau_recall, tau_lift, min_count)
        check_positive(R=R, limit=limit, batch_size=batch_size)
        g = parse_grid(grid)
        _check_outputs(json_path, plot)
        m, es, reader = _load(model, task, data, limit, seed, device, batch_size, cache, rebuild, ("readout",),
                              text=text)
        rep = cooperation_report(reader, mode=mode, R=R, seed=seed, grid=g, tau_recall=tau_recall, tau_lift=tau_lift,
                                 min_count=min_count)
        render_cooperation(rep)
        settings = _settings(reader, text=text, model=model, task=task, mode=mode, R=R, grid=list(rep.grid), tau_recall=tau_recall,
                             tau_lift=tau_lift, min_count=min_count, limit=limit, seed=seed)
        write_report(json_path, "cooperation", settings, rep)

        _plots(plot, lambda d: figures.cooperation(rep, d, task))

    # ------------------------------------------------------------------ hull
    @app.command("hull")
    def hull_cmd(
        model: str = ModelOpt,
        task: str = typer.Option("fewrel", "--task", help="mlm | fewrel | dbpedia"),
        data: Optional[Path] = DataOpt,
        text: Optional[str] = TextOpt,
        nodes: Optional[str] = typer.Option(None, "--nodes", help="One node set, e.g. 12,40 (ranges 3-7)."),
        n: Optional[int] = typer.Option(None, "--n", help="1: every single node; k ≥ 2: --R random sets of k nodes."),
        R: int = typer.Option(20, "--R", help="Random node sets for --n k ≥ 2."),
        mode: str = ModeOpt,
        max_lp: int = typer.Option(2000, "--max-lp", help="Above this many LPs a bound is reported as not computed."),
        tau_recall: float = TauROpt,
        tau_lift: float = TauLOpt,
        min_count: int = MinCountOpt,
        limit: Optional[int] = LimitOpt,
        seed: int = SeedOpt,
        device: str = DeviceOpt,
        cache: Optional[Path] = CacheOpt,
        rebuild: bool = RebuildOpt,
        batch_size: int = BatchOpt,
        top: int = TopOpt,
        unit: Optional[int] = typer.Option(None, "--unit", help="With --n 1: show this node in detail."),
        json_path: Optional[Path] = JsonOpt,
        plot: Optional[Path] = PlotOpt,
    ):
        """Convex-hull bound (METHODS §6): reachable classes, UB, achieved accuracy and efficiency."""
        from nodeprobe.render.jsonio import write_report
        from nodeprobe.render.views import render_hull
        from nodeprobe.studies._common import check_mode, check_thresholds, parse_nodes
        from nodeprobe.studies.hull import check_hull_args, hull_report

        _check_task(task)
        check_text(text, task)
        check_mode(mode)
        check_thresholds(tau_recall, tau_lift, min_count)
        check_positive(R=R, max_lp=max_lp, limit=limit, top=top, batch_size=batch_size)
        check_hull_args(nodes, n, None, R)
        if unit is not None and n != 1:
            raise NodeprobeError("--unit needs --n 1 (it picks one single node)")
        if nodes is not None:
            parse_nodes(nodes)
        _check_outputs(json_path, plot)

        def validate(m):
            check_hull_args(nodes, n, m.spec.d_model, R)
            if unit is not None and not 0 <= unit < m.spec.d_model:
                raise NodeprobeError(f"--unit {unit}: the readout has nodes 0–{m.spec.d_model - 1}")

        m, es, reader = _load(model, task, data, limit, seed, device, batch_size, cache, rebuild, ("readout",), validate,
                              text=text)
        rep = hull_report(reader, nodes=nodes, n=n, R=R, seed=seed, mode=mode, top=top, max_lp=max_lp,
                          tau_recall=tau_recall, tau_lift=tau_lift, min_count=min_count)
        render_hull(rep, top, unit)
        settings = _settings(reader, text=text, model=model, task=task, nodes=nodes, n=n, R=R, mode=mode, max_lp=max_lp,
                             tau_recall=tau_recall, tau_lift=tau_lift, min_count=min_count, limit=limit, seed=seed)
        write_report(json_path, "hull", settings, rep)

        _plots(plot, lambda d: figures.hull(rep, d, task))

    # ------------------------------------------------------------------ blocks
    @app.command("blocks")
    def blocks_cmd(
        model: str = ModelOpt,
        task: str = typer.Option("fewrel", "--task", help="mlm | fewrel | dbpedia"),
        data: Optional[Path] = DataOpt,
        text: Optional[str] = TextOpt,
        probe: bool = typer.Option(True, "--probe/--no-probe", help="Also a seeded linear probe per block."),
        probe_fraction: float = typer.Option(0.5, "--probe-fraction", help="Share of the items that train the probe."),
        probe_epochs: int = typer.Option(30, "--probe-epochs"),
        limit: Optional[int] = LimitOpt,
        seed: int = SeedOpt,
        device: str = DeviceOpt,
        cache: Optional[Path] = CacheOpt,
        rebuild: bool = RebuildOpt,
        batch_size: int = BatchOpt,
        json_path: Optional[Path] = JsonOpt,
        plot: Optional[Path] = PlotOpt,
    ):
        """Accuracy along blocks (0 = embeddings): logit lens and a seeded linear probe."""
        from nodeprobe.render.jsonio import write_report
        from nodeprobe.render.views import render_blocks
        from nodeprobe.studies.blocks import blocks_report
        from nodeprobe.studies.lens import ProbeSettings

        _check_task(task)
        check_text(text, task)
        check_positive(probe_epochs=probe_epochs, limit=limit, batch_size=batch_size)
        ps = ProbeSettings(fraction=probe_fraction, epochs=probe_epochs, seed=seed)
        ps.check()
        _check_outputs(json_path, plot)
        m, es, reader = _load(model, task, data, limit, seed, device, batch_size, cache, rebuild, ("readout", "resid"),
                              text=text)
        rep = blocks_report(reader, m, probe=ps if probe else None, device=device, progress=True)
        render_blocks(rep)
        settings = _settings(reader, text=text, model=model, task=task, probe=probe, probe_fraction=probe_fraction,
                             probe_epochs=probe_epochs, limit=limit, seed=seed)
        write_report(json_path, "blocks", settings, rep)

        _plots(plot, lambda d: figures.blocks(rep, d, task))
