"""The cache and the specialization reports: ``cache``, ``specialization``, ``apt``, ``cooperation``,
``hull``, ``blocks``.

Every command: checks its options (cheap ones first, before torch is imported; one-line error, exit
2, nothing written) → loads the model and the evaluation set → reuses the matching activation cache
or builds one (:func:`nodeprobe.cache.get_or_build_cache`; ``--cache DIR``, default
``runs/cache/<model-fp>-<data-fp>/``; ``--rebuild``) → calls one report function of
:mod:`nodeprobe.studies` → renders it (:mod:`nodeprobe.render.views`) → writes ``--json`` and
``--plot`` PNGs (:func:`_finish`).  The shared steps: :func:`nodeprobe.cli.options.check_common`,
:func:`~nodeprobe.cli.options.load_report_inputs`, :func:`_finish`.  JSON schemas: ``docs/json.md``.

Example:
    $ nodeprobe cache --model runs/cpu/finetune/final
    $ nodeprobe hull --n 1 --json hull.json          # the newest `reproduce` classifier under ./runs
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from nodeprobe.cli.options import (
    SplitOpt, TextColumnOpt, with_dataset_options, dataset_settings, resolve_dataset, PROBE_HELP, BatchOpt, CacheOpt,
    DataOpt, DeviceOpt, EvalSeedOpt, LimitOpt, MinCountOpt, ModeOpt, PlotOpt, ProbeEpochsOpt, RebuildOpt,
    ReportJsonOpt, ReportModelOpt, SAEOpt, TaskOpt, TauLOpt, TauROpt, ReadoutEpochsOpt, TextOpt, TopOpt,
    UnitLayerOpt, UnitSiteOpt, check_choice, check_common, check_sae, check_task, load_for_task, load_report_inputs,
    number, readout_settings, resolve_model, trust_pickle, unit_sites,
)
from nodeprobe.errors import NodeprobeError


# ---------------------------------------------------------------------- shared steps
def _probe(fraction: float, epochs: int, seed: int):
    """The seeded linear probe of ``--probe-fraction``/``--probe-epochs`` (checked)."""
    from nodeprobe.studies.lens import ProbeSettings

    ps = ProbeSettings(fraction=fraction, epochs=epochs, seed=seed)
    ps.check()
    return ps


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


def _finish(kind: str, rep, reader, json_path: Optional[Path], plot: Optional[Path] = None, figure=None,
            text=None, **settings) -> None:
    """Write ``--json`` (``settings`` as :func:`_settings`) and, with ``--plot``, the report's PNGs
    (``figure(rep, folder, *args)`` of :mod:`nodeprobe.render.figures`, ``figure = (name, *args)``)."""
    from nodeprobe.render.jsonio import write_report

    write_report(json_path, kind, _settings(reader, text=text, **settings), rep)
    if plot is not None and figure is not None:
        from nodeprobe.render import figures

        name, *args = figure
        getattr(figures, name)(rep, Path(plot), *args)


def _load_sae(sae: Optional[Path], site: Optional[str] = None, layer: Optional[int] = None):
    """``--sae DIR`` (already :func:`~nodeprobe.cli.options.check_sae`-checked): the weights, read and
    checked (shapes, architecture, ``hook_name`` = the hook of ``--site``/``--layer``) before the
    model loads."""
    if sae is None:
        return None
    if site not in (None, "readout") and layer is None:
        raise NodeprobeError(f"--sae at --site {site} needs --layer (the block the SAE was trained on)")
    from nodeprobe.analysis.sae import check_site_sae, load_sae

    weights = load_sae(sae)
    check_site_sae(weights, site or "readout", layer)
    return weights


def _check_sae_fits(sae_w, m, unit: Optional[int] = None, site: Optional[str] = None, layer=None) -> None:
    """With the model loaded: the SAE reads this site (``d_in`` = its width) and ``--unit`` is one
    of its latents."""
    from nodeprobe.analysis.sae import check_site_sae

    check_site_sae(sae_w, site or "readout", layer, _site_width(m, site or "readout"))
    if unit is not None and not 0 <= unit < sae_w.d_sae:
        raise NodeprobeError(f"--unit {unit}: the SAE has latents 0–{sae_w.d_sae - 1}")


def _report(kind: str, build, reader, kw: dict, render, detail, json_path: Optional[Path], plot: Optional[Path],
            figure, sae_w=None, sae: Optional[Path] = None, text=None, **settings) -> None:
    """Build ``kind``'s report ``build(reader, **kw)``, show it (``render(rep, *detail(rep))``) and write
    ``--json`` / ``--plot`` (:func:`_finish`).  With ``--sae`` (``sae_w``) the same report runs on the
    SAE's latents and on the nodes side by side (:func:`nodeprobe.studies.sae.sae_comparison`): shown
    by ``render_sae_comparison(cmp, *detail(cmp.sae))``, the JSON holding both sides, the PNGs the
    latents'.  A callable setting is read off the report shown (e.g. ``grid=lambda r: list(r.grid)``)."""
    if sae_w is None:
        shown = rep = build(reader, **kw)
        render(rep, *detail(rep))
    else:
        from nodeprobe.render.sae_view import render_sae_comparison
        from nodeprobe.studies.sae import sae_comparison

        rep = sae_comparison(reader, sae_w, kind, **kw)
        shown = rep.sae
        render_sae_comparison(rep, *detail(shown))
        figure = (*figure[:-1], f"{figure[-1]}, SAE latents")
        settings["sae"] = sae
    settings = {k: (v(shown) if callable(v) else v) for k, v in settings.items()}
    _finish(kind, rep, reader, json_path, text=text, **settings)
    if plot is not None:
        from nodeprobe.render import figures

        name, *args = figure
        getattr(figures, name)(shown, Path(plot), *args)


def _site_width(m, site: str) -> int:
    """Nodes at a unit site: d_mlp at mlp, n_heads · d_head at attn, d_model at readout/resid."""
    if site == "mlp":
        return int(m.spec.d_mlp)
    if site == "attn":
        return int(m.spec.n_heads * m.spec.d_head)
    return int(m.spec.d_model if site == "resid" else m.spec.d_readout)


# ---------------------------------------------------------------------- cache
@with_dataset_options
def cache(
    ctx: typer.Context,
    model: Optional[str] = ReportModelOpt,
    task: Optional[str] = TaskOpt,
    data: Optional[Path] = DataOpt,
    ds: Optional[dict] = None,  # the --dataset options (with_dataset_options)
    text: Optional[str] = TextOpt,
    sites: str = typer.Option("readout,z,resid", "--sites", help="Comma list of readout, z, resid, mlp."),
    limit: Optional[int] = LimitOpt,
    seed: int = EvalSeedOpt,
    device: str = DeviceOpt,
    out: Optional[Path] = typer.Option(None, "--out", "--cache", help="Cache directory (default runs/cache/<model-fp>-<data-fp>/)."),
    rebuild: bool = RebuildOpt,
    batch_size: int = BatchOpt,
    shard_batches: int = typer.Option(8, "--shard-batches", help="Evaluation batches per shard file."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | float16 | bfloat16 (storage)."),
    json_path: Optional[Path] = ReportJsonOpt,
):
    """Run the model once and cache the chosen sites (readout, z, resid, mlp) for every report."""
    check_choice("--dtype", dtype, ("float32", "float16", "bfloat16"))
    task, user, inputs = resolve_dataset(task, text=text, **ds)
    io = dict(inputs=inputs, json_path=json_path, data=data, text=text, outputs={"--out": out})
    check_common(task, model, json_path, inputs=inputs, data=data, device=device, text=text, limit=limit, batch_size=batch_size,
                 shard_batches=shard_batches, outputs=io["outputs"])
    from nodeprobe.cache import parse_sites
    from nodeprobe.render.views import render_cache

    want = parse_sites(sites)
    model = resolve_model(model, task, io=io)
    _, _, reader = load_report_inputs(model, task, user or data, limit, seed, device, batch_size, out, rebuild, want,
                                      trust_pickle(ctx), text=text, shard_batches=shard_batches, dtype=dtype)
    info = reader.describe()
    render_cache(info, reader.built)
    _finish("cache", {**info, "built": reader.built}, None, json_path, text=text, **dataset_settings(user), model=model, task=task,
            sites=list(want), limit=limit, seed=seed)


# ---------------------------------------------------------------------- specialization
@with_dataset_options
def specialization(
    ctx: typer.Context,
    model: Optional[str] = ReportModelOpt,
    task: Optional[str] = TaskOpt,
    data: Optional[Path] = DataOpt,
    ds: Optional[dict] = None,  # the --dataset options (with_dataset_options)
    text: Optional[str] = TextOpt,
    level: str = typer.Option("node", "--level", help="node | head"),
    site: Optional[str] = typer.Option(None, "--site", help="readout | attn | mlp | resid (default: readout for nodes, attn for heads; METHODS v2 §1)."),
    layer: Optional[int] = typer.Option(None, "--layer", help="The block of a block site or of the heads (default: every block, 'along the blocks')."),
    head_unit: str = typer.Option("group", "--head-unit", help="group: a head is the node group of its attn coordinates under the block readout (v2) | network: isolated in the running network (v1)."),
    resid_readout: str = typer.Option("block", "--resid-readout", help="block: resid nodes under the block readout (v2) | lens: through the rest of the trained readout path (v1)."),
    snp: bool = typer.Option(False, "--snp/--no-snp", help="Write each unit's SNP matrix C[k, j] / N_k into --json."),
    readout_epochs: int = ReadoutEpochsOpt,
    mode: str = ModeOpt,
    tau_recall: float = TauROpt,
    tau_lift: float = TauLOpt,
    min_count: int = MinCountOpt,
    limit: Optional[int] = LimitOpt,
    seed: int = EvalSeedOpt,
    device: str = DeviceOpt,
    cache: Optional[Path] = CacheOpt,
    rebuild: bool = RebuildOpt,
    batch_size: int = BatchOpt,
    top: int = TopOpt,
    unit: Optional[str] = typer.Option(None, "--unit", help="Show one unit in detail: a node (12) or a head (L3H5)."),
    sae: Optional[Path] = SAEOpt,
    json_path: Optional[Path] = ReportJsonOpt,
    plot: Optional[Path] = PlotOpt,
):
    """Per-node or per-head accuracy, outputs, learned classes Λ, SNR, and the symmetry summary."""
    task, user, inputs = resolve_dataset(task, text=text, **ds)
    io = dict(inputs=inputs, json_path=json_path, plot=plot, data=data, text=text, outputs={"--cache": cache})
    check_sae(sae, level=level, site=site)
    check_common(task, model, json_path, plot, outputs=io["outputs"], inputs={"--sae": sae, **inputs}, data=data, device=device, mode=mode, text=text,
                 learned=(tau_recall, tau_lift, min_count), limit=limit, top=top, batch_size=batch_size)
    from nodeprobe.studies._common import HEAD_UNITS, parse_unit, resolve_specialization  # no torch yet

    check_choice("--head-unit", head_unit, HEAD_UNITS)
    check_choice("--resid-readout", resid_readout, ("block", "lens"))
    the_site, _ = resolve_specialization(level, site, layer, None, head_unit)  # before loading anything
    if unit is not None:
        parse_unit(level, unit)
    from nodeprobe.render.views import render_specialization
    from nodeprobe.studies.specialization import specialization_report

    sae_w = _load_sae(sae, the_site, layer)

    def validate(m):
        resolve_specialization(level, site, layer, m.spec.n_layers, head_unit)
        if sae_w is not None:
            _check_sae_fits(sae_w, m, parse_unit(level, unit)[0] if unit is not None else None, the_site, layer)
        elif unit is not None:
            key = parse_unit(level, unit, m.spec.n_layers, m.spec.n_heads, _site_width(m, the_site))
            if level == "node" and the_site != "readout" and layer is None and len(key) == 1:
                raise NodeprobeError(f"--unit {unit}: every block is studied; name the node as L<block> node <i> "
                                     "(e.g. 'L1 node 3') or give --layer")

    model = resolve_model(model, task, io=io)
    sites = unit_sites(the_site, level, head_unit)
    block = (level == "head" and head_unit == "group") or (the_site != "readout" and not (
        the_site == "resid" and resid_readout == "lens"))
    m, es, reader, train = load_report_inputs(model, task, user or data, limit, seed, device, batch_size, cache, rebuild, sites,
                                              trust_pickle(ctx), validate, text=text,
                                              train_sites=tuple(s for s in sites if s != "readout") if block else ())
    th = dict(tau_recall=tau_recall, tau_lift=tau_lift, min_count=min_count)
    kw = dict(mode=mode, **th, model=m, eval_set=es, progress=True, level=level, site=site, layer=layer,
              head_unit=head_unit, resid_readout=resid_readout, snp=snp, train=train,
              readout_settings=readout_settings(readout_epochs, seed), device=device)
    _report("specialization", specialization_report, reader, kw, render_specialization,
            lambda r: (top, r.find_unit(unit) if unit is not None else None), json_path, plot,
            ("specialization", f"{task}, {mode}"), sae_w, sae, text=text, **dataset_settings(user), model=model, task=task, level=level,
            site=lambda r: r.site, layer=layer, head_unit=head_unit if level == "head" else None,
            resid_readout=resid_readout if the_site == "resid" else None,
            readout_epochs=readout_epochs if block else None, mode=mode, **th, limit=limit, seed=seed)


# ---------------------------------------------------------------------- APT
def apt(
    ctx: typer.Context,
    model: Optional[str] = ReportModelOpt,
    task: str = typer.Option("mlm", "--task", help="mlm (APT is an MLM metric)"),
    data: Optional[Path] = DataOpt,
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Your own table (.csv, .tsv, .jsonl, .parquet or a save_to_disk folder): evaluate the MLM text of its --text-column (frequencies stay the corpus's)."),
    text_column: Optional[str] = TextColumnOpt,
    split: Optional[str] = SplitOpt,
    text: Optional[str] = TextOpt,
    min_count: int = typer.Option(5, "--min-count", help="Tokens with at least this many modified occurrences."),
    bins: int = typer.Option(10, "--bins", help="log10-frequency bins."),
    probe: bool = typer.Option(False, "--probe/--no-probe", help=PROBE_HELP),
    probe_fraction: float = typer.Option(0.5, "--probe-fraction", callback=number("--probe-fraction", 0, 1, lo_open=True, hi_open=True), help="Share of the held-out items that train the probe."),
    probe_epochs: int = ProbeEpochsOpt,
    cluster_threshold: float = typer.Option(0.5, "--cluster-threshold", callback=number("--cluster-threshold", 0, 1, lo_open=True), help="Strong match: C[i,j]/C[i,i] ≥ this."),
    limit: Optional[int] = LimitOpt,
    seed: int = EvalSeedOpt,
    device: str = DeviceOpt,
    cache: Optional[Path] = CacheOpt,
    rebuild: bool = RebuildOpt,
    batch_size: int = BatchOpt,
    top: int = TopOpt,
    json_path: Optional[Path] = ReportJsonOpt,
    plot: Optional[Path] = PlotOpt,
):
    """Accuracy per token vs corpus frequency, ⟨APT⟩ and confusion clusters along blocks (MLM)."""
    check_task(task)
    if task != "mlm":
        raise NodeprobeError(f"--task {task}: APT is a masked-LM metric; use --task mlm")
    task, user, inputs = resolve_dataset(task, text=text, **dict(dataset=dataset, text_column=text_column, split=split))
    io = dict(inputs=inputs, json_path=json_path, plot=plot, data=data, text=text, outputs={"--cache": cache})
    check_common(task, model, json_path, plot, inputs=inputs, outputs=io["outputs"], data=data, device=device, text=text, min_count=min_count, bins=bins,
                 probe_epochs=probe_epochs, limit=limit, top=top, batch_size=batch_size)
    ps = _probe(probe_fraction, probe_epochs, seed)
    from nodeprobe.render.views import render_apt
    from nodeprobe.studies.apt import apt_report
    from nodeprobe.data.corpus import PretrainData

    trust = trust_pickle(ctx)
    model = resolve_model(model, task, io=io)
    loaded = load_for_task(model, task, device, trust)  # a bad model fails before the corpus is read
    corpus = PretrainData.load(data, None, min(128, loaded[0].spec.max_len), tokenizer=loaded[1])
    m, es, reader = load_report_inputs(model, task, user or data, limit, seed, device, batch_size, cache, rebuild,
                                       ("readout", "resid"), trust, corpus=corpus, loaded=loaded, text=text)
    rep = apt_report(reader, m, corpus.counts, min_count=min_count, n_bins=bins, probe=ps if probe else None,
                     cluster_threshold=cluster_threshold, top=top, device=device, progress=True)
    render_apt(rep, top)
    _finish("apt", rep, reader, json_path, plot, ("apt",), text=text, **dataset_settings(user), model=model, task=task, min_count=min_count,
            bins=bins, probe=probe, probe_fraction=probe_fraction, probe_epochs=probe_epochs,
            cluster_threshold=cluster_threshold, limit=limit, seed=seed)


# ---------------------------------------------------------------------- cooperation
@with_dataset_options
def cooperation(
    ctx: typer.Context,
    model: Optional[str] = ReportModelOpt,
    task: Optional[str] = TaskOpt,
    data: Optional[Path] = DataOpt,
    ds: Optional[dict] = None,  # the --dataset options (with_dataset_options)
    text: Optional[str] = TextOpt,
    site: str = UnitSiteOpt,
    layer: Optional[int] = UnitLayerOpt,
    null: bool = typer.Option(True, "--null/--no-null", help="Also run the null model: the readout's columns permuted among the nodes per class, seeded (METHODS §5)."),
    readout_epochs: int = ReadoutEpochsOpt,
    mode: str = ModeOpt,
    R: int = typer.Option(20, "--R", help="Random node sets per n."),
    grid: Optional[str] = typer.Option(None, "--grid", help="Node counts (default METHODS §5: 1,2,3,4,6,…,768)."),
    tau_recall: float = TauROpt,
    tau_lift: float = TauLOpt,
    min_count: int = MinCountOpt,
    limit: Optional[int] = LimitOpt,
    seed: int = EvalSeedOpt,
    device: str = DeviceOpt,
    cache: Optional[Path] = CacheOpt,
    rebuild: bool = RebuildOpt,
    batch_size: int = BatchOpt,
    sae: Optional[Path] = SAEOpt,
    json_path: Optional[Path] = ReportJsonOpt,
    plot: Optional[Path] = PlotOpt,
):
    """Cooperation gain and crossover of random readout node sets (METHODS §5)."""
    task, user, inputs = resolve_dataset(task, text=text, **ds)
    io = dict(inputs=inputs, json_path=json_path, plot=plot, data=data, text=text, outputs={"--cache": cache})
    check_sae(sae)
    check_common(task, model, json_path, plot, outputs=io["outputs"], inputs={"--sae": sae, **inputs}, data=data, device=device, mode=mode, text=text,
                 learned=(tau_recall, tau_lift, min_count), R=R, limit=limit, batch_size=batch_size)
    from nodeprobe.studies._common import check_unit_site, parse_grid  # no torch yet

    check_unit_site(site, layer)
    check_sae(sae, site=site)
    g = parse_grid(grid, R=R)  # last: the default grid lives with the analysis (torch)
    from nodeprobe.render.views import render_cooperation
    from nodeprobe.studies.cooperation import cooperation_report

    sae_w = _load_sae(sae, site, layer)

    def validate(m):
        check_unit_site(site, layer, m.spec.n_layers)
        if sae_w is not None:
            _check_sae_fits(sae_w, m, None, site, layer)
        # the default grid is capped at the width (METHODS §5), a typed one only where it fits one side
        # (with --sae: nodes and latents are studied on one grid, each side capped at its own width)
        width = _site_width(m, site) if sae_w is None else max(_site_width(m, site), sae_w.d_sae)
        if grid is not None and max(g) > width:
            units = "nodes" if sae_w is None else "nodes or SAE latents"
            raise NodeprobeError(f"--grid {grid}: node counts above the {width} {units} at --site {site}; "
                                 f"allowed 1–{width}")

    model = resolve_model(model, task, io=io)
    sites = unit_sites(site)
    m, es, reader, train = load_report_inputs(model, task, user or data, limit, seed, device, batch_size, cache, rebuild,
                                              sites, trust_pickle(ctx), validate, text=text,
                                              train_sites=tuple(s for s in sites if s != "readout"))
    th = dict(tau_recall=tau_recall, tau_lift=tau_lift, min_count=min_count)
    kw = dict(mode=mode, R=R, seed=seed, grid=g, **th, site=site, layer=layer, null=null, train=train,
              readout_settings=readout_settings(readout_epochs, seed), device=device)
    _report("cooperation", cooperation_report, reader, kw,
            render_cooperation, lambda r: (), json_path, plot, ("cooperation", task), sae_w, sae, text=text, **dataset_settings(user),
            model=model, task=task, site=site, layer=layer, null=null, mode=mode, R=R,
            grid=lambda r: list(r.grid), readout_epochs=readout_epochs if site != "readout" else None, **th,
            limit=limit, seed=seed)


# ---------------------------------------------------------------------- hull
@with_dataset_options
def hull(
    ctx: typer.Context,
    model: Optional[str] = ReportModelOpt,
    task: Optional[str] = TaskOpt,
    data: Optional[Path] = DataOpt,
    ds: Optional[dict] = None,  # the --dataset options (with_dataset_options)
    text: Optional[str] = TextOpt,
    site: str = UnitSiteOpt,
    layer: Optional[int] = UnitLayerOpt,
    level: str = typer.Option("node", "--level", help="node: --nodes / --n sets of nodes | head: every head of --layer as the node group of its attn coordinates (--site attn)."),
    class_sample: int = typer.Option(64, "--class-sample", min=0, max=10**6, help="Sets of n ≥ 2 with more classes than this: bound their outputs plus a seeded sample of this many others (MLM); 0: every class."),
    readout_epochs: int = ReadoutEpochsOpt,
    nodes: Optional[str] = typer.Option(None, "--nodes", help="One node set, e.g. 12,40 (ranges 3-7)."),
    n: Optional[int] = typer.Option(None, "--n", help="1: every single node; k ≥ 2: --R random sets of k nodes."),
    R: int = typer.Option(20, "--R", help="Random node sets for --n k ≥ 2."),
    mode: str = ModeOpt,
    max_lp: int = typer.Option(2000, "--max-lp", help="Above this many LPs a bound is reported as not computed."),
    tau_recall: float = TauROpt,
    tau_lift: float = TauLOpt,
    min_count: int = MinCountOpt,
    limit: Optional[int] = LimitOpt,
    seed: int = EvalSeedOpt,
    device: str = DeviceOpt,
    cache: Optional[Path] = CacheOpt,
    rebuild: bool = RebuildOpt,
    batch_size: int = BatchOpt,
    top: int = TopOpt,
    unit: Optional[int] = typer.Option(None, "--unit", help="With --n 1: show this node in detail."),
    sae: Optional[Path] = SAEOpt,
    json_path: Optional[Path] = ReportJsonOpt,
    plot: Optional[Path] = PlotOpt,
):
    """Convex-hull bound (METHODS §6): reachable classes, UB, achieved accuracy and efficiency."""
    if unit is not None and n != 1:
        raise NodeprobeError("--unit needs --n 1 (it picks one single node)")
    task, user, inputs = resolve_dataset(task, text=text, **ds)
    io = dict(inputs=inputs, json_path=json_path, plot=plot, data=data, text=text, outputs={"--cache": cache})
    check_sae(sae)
    check_common(task, model, json_path, plot, outputs=io["outputs"], inputs={"--sae": sae, **inputs}, data=data, device=device, mode=mode, text=text,
                 learned=(tau_recall, tau_lift, min_count), R=R, max_lp=max_lp, limit=limit, top=top,
                 batch_size=batch_size)
    from nodeprobe.studies._common import check_hull_args, check_unit_site, parse_nodes  # no torch yet

    check_choice("--level", level, ("node", "head"))
    if level == "head":
        site = "attn" if site == "readout" else site
        if site != "attn":
            raise NodeprobeError(f"--level head lives at --site attn, not --site {site}")
        if nodes is not None or n is not None:
            raise NodeprobeError("--level head bounds every head of --layer: leave out --nodes / --n")
        if layer is None:
            raise NodeprobeError("--level head needs --layer (the block whose heads are bounded)")
    else:
        check_hull_args(nodes, n, None, R)
    check_unit_site(site, layer)
    check_sae(sae, level=level, site=site)
    if nodes is not None:
        parse_nodes(nodes)
    from nodeprobe.render.views import render_hull
    from nodeprobe.studies.hull import hull_report

    sae_w = _load_sae(sae, site, layer)

    def validate(m):
        check_unit_site(site, layer, m.spec.n_layers)
        if level == "head":
            return
        if sae_w is None:
            check_hull_args(nodes, n, _site_width(m, site), R)
            width = _site_width(m, site)
            if unit is not None and not 0 <= unit < width:
                raise NodeprobeError(f"--unit {unit}: --site {site} has nodes 0–{width - 1}")
            return
        _check_sae_fits(sae_w, m, unit, site, layer)
        check_hull_args(nodes, n, min(_site_width(m, site), sae_w.d_sae), R)  # the same set on both sides

    model = resolve_model(model, task, io=io)
    sites = unit_sites(site)
    m, es, reader, train = load_report_inputs(model, task, user or data, limit, seed, device, batch_size, cache, rebuild,
                                              sites, trust_pickle(ctx), validate, text=text,
                                              train_sites=tuple(s for s in sites if s != "readout"))
    th = dict(tau_recall=tau_recall, tau_lift=tau_lift, min_count=min_count)
    kw = dict(nodes=nodes, n=n, R=R, seed=seed, mode=mode, top=top, max_lp=max_lp, **th, site=site, layer=layer,
              level=level, class_sample=class_sample or None, train=train,
              readout_settings=readout_settings(readout_epochs, seed), device=device)
    _report("hull", hull_report, reader, kw,
            render_hull, lambda r: (top, unit), json_path, plot, ("hull", task), sae_w, sae, text=text, **dataset_settings(user), model=model,
            task=task, site=site, layer=layer, level=level, nodes=nodes, n=n, R=R, mode=mode, max_lp=max_lp,
            class_sample=class_sample, readout_epochs=readout_epochs if site != "readout" else None, **th,
            limit=limit, seed=seed)


# ---------------------------------------------------------------------- blocks
@with_dataset_options
def blocks(
    ctx: typer.Context,
    model: Optional[str] = ReportModelOpt,
    task: Optional[str] = TaskOpt,
    data: Optional[Path] = DataOpt,
    ds: Optional[dict] = None,  # the --dataset options (with_dataset_options)
    text: Optional[str] = TextOpt,
    probe: bool = typer.Option(True, "--probe/--no-probe", help=PROBE_HELP),
    probe_fraction: float = typer.Option(0.5, "--probe-fraction", callback=number("--probe-fraction", 0, 1, lo_open=True, hi_open=True), help="Share of the items that train the probe."),
    probe_epochs: int = ProbeEpochsOpt,
    limit: Optional[int] = LimitOpt,
    seed: int = EvalSeedOpt,
    device: str = DeviceOpt,
    cache: Optional[Path] = CacheOpt,
    rebuild: bool = RebuildOpt,
    batch_size: int = BatchOpt,
    json_path: Optional[Path] = ReportJsonOpt,
    plot: Optional[Path] = PlotOpt,
):
    """Accuracy along blocks (0 = embeddings): logit lens and a seeded linear probe."""
    task, user, inputs = resolve_dataset(task, text=text, **ds)
    io = dict(inputs=inputs, json_path=json_path, plot=plot, data=data, text=text, outputs={"--cache": cache})
    check_common(task, model, json_path, plot, inputs=inputs, outputs=io["outputs"], data=data, device=device, text=text, probe_epochs=probe_epochs,
                 limit=limit, batch_size=batch_size)
    ps = _probe(probe_fraction, probe_epochs, seed)
    from nodeprobe.render.views import render_blocks
    from nodeprobe.studies.blocks import blocks_report

    model = resolve_model(model, task, io=io)
    m, es, reader = load_report_inputs(model, task, user or data, limit, seed, device, batch_size, cache, rebuild,
                                       ("readout", "resid"), trust_pickle(ctx), text=text)
    rep = blocks_report(reader, m, probe=ps if probe else None, device=device, progress=True)
    render_blocks(rep)
    _finish("blocks", rep, reader, json_path, plot, ("blocks", task), text=text, **dataset_settings(user), model=model, task=task, probe=probe,
            probe_fraction=probe_fraction, probe_epochs=probe_epochs, limit=limit, seed=seed)
