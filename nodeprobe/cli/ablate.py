"""``nodeprobe ablate``: one head ablated (or isolated), or every head (``--all``), and what changes.

Example:
    $ nodeprobe ablate --layer 5 --head 3            # the newest `reproduce` classifier under ./runs
    $ nodeprobe ablate --model runs/cpu/finetune/final --all --plot plots
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from nodeprobe.cli.options import (
    with_dataset_options, dataset_settings, labels_of, resolve_dataset, DataOpt, DeviceOpt, JsonOpt, PlotOpt,
    ReportModelOpt, SeedOpt, TaskOpt, check_common, check_index, load_for_task, resolve_model, trust_pickle,
)
from nodeprobe.errors import NodeprobeError


def _check_head_choice(layer: Optional[int], head: Optional[int], all_heads: bool) -> None:
    if not all_heads and (layer is None or head is None):
        raise NodeprobeError("give --layer and --head, or --all")
    if all_heads and (layer is not None or head is not None):
        raise NodeprobeError("--all sweeps every head: drop --layer/--head")
    check_index(layer=layer, head=head)


@with_dataset_options
def ablate(
    ctx: typer.Context,
    model: Optional[str] = ReportModelOpt,
    layer: Optional[int] = typer.Option(None, "--layer", help="Block of the head (0-based)."),
    head: Optional[int] = typer.Option(None, "--head", help="Head within the block (0-based)."),
    all_heads: bool = typer.Option(False, "--all", help="Every head of every block: a layer × head Δaccuracy grid."),
    task: Optional[str] = TaskOpt,
    data: Optional[Path] = DataOpt,
    ds: Optional[dict] = None,  # the --dataset options (with_dataset_options)
    mode: str = typer.Option("zero", "--mode", help="zero | mean (eval-set mean of z per position)"),
    isolate: bool = typer.Option(False, "--isolate", help="Ablate every other head of the block instead."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate at most this many sentences/sequences."),
    top: int = typer.Option(10, "--top", help="Movers to show."),
    batch_size: int = typer.Option(64, "--batch-size"),
    seed: int = SeedOpt,
    device: str = DeviceOpt,
    json_path: Optional[Path] = JsonOpt,
    plot: Optional[Path] = PlotOpt,
):
    """Ablate (or isolate) one attention head, or all of them, and report what changes."""
    task, user, inputs = resolve_dataset(task, **ds)
    check_common(task, model, json_path, plot, data=data, device=device, mode=mode, inputs=inputs, limit=limit,
                 top=top, batch_size=batch_size)
    _check_head_choice(layer, head, all_heads)
    model = resolve_model(model, task, io=dict(json_path=json_path, plot=plot, data=data, inputs=inputs))
    from nodeprobe.data.eval_sets import load_eval_set
    from nodeprobe.render.jsonio import write_report
    from nodeprobe.render.tables import render_ablation, render_sweep
    from nodeprobe.studies.ablation import ablate as run_one
    from nodeprobe.studies.ablation import sweep_heads

    m, tok = load_for_task(model, task, device, trust_pickle(ctx))
    if not all_heads:
        m.spec.check_layer(layer)
        m.spec.check_head(head)
    es = load_eval_set(task, tok, user or data, limit=limit, seed=seed, batch_size=batch_size,
                       max_len=min(128, m.spec.max_len), labels_of=labels_of(m, task))
    settings = {"model": str(model), "task": task, "mode": mode, "isolate": isolate, "limit": limit, "seed": seed,
                "source": es.source, "eval_fingerprint": es.fingerprint, **dataset_settings(user)}
    if all_heads:
        rep = sweep_heads(m, es, mode=mode, isolate=isolate, progress=True)
        render_sweep(rep)
        write_report(json_path, "ablate_all", settings, rep)
        if plot:
            from nodeprobe.render.plots import plot_head_grid

            plot_head_grid(rep.delta_accuracy, Path(plot) / "ablate_all.png", f"Δ accuracy ({task}, {mode})")
        return
    rep = run_one(m, es, layer, head, mode=mode, isolate=isolate, top=top, progress=True)
    render_ablation(rep, top)
    write_report(json_path, "ablate", {**settings, "layer": layer, "head": head}, rep)
