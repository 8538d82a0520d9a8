"""The ``nodeprobe`` command line: one Typer command per job, no logic of its own.

Errors a user can cause print one line (``nodeprobe: error: …``) on stderr and exit with code 2;
nothing is written in that case (outputs are written atomically at the end).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from nodeprobe.errors import NodeprobeError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Hooked BERT analyses: token/label specialization of heads and nodes, cooperation, hull bounds.",
)

from nodeprobe.cli.options import (  # noqa: E402  (shared by every command module)
    DataOpt, DeviceOpt, JsonOpt, ModelOpt, SeedOpt, TaskOpt, check_positive, load_for_task, quiet_hf,
)


@app.callback()
def _root(ctx: typer.Context, trust_pickle: bool = typer.Option(
        False, "--trust-pickle", help="Allow loading pickled pytorch_model.bin weights (runs code from the file).")):
    """Hooked BERT analyses: token/label specialization of heads and nodes, cooperation, hull bounds."""
    ctx.obj = {"trust_pickle": trust_pickle}


# ---------------------------------------------------------------------- training
@app.command()
def pretrain(
    preset: str = typer.Option("cpu", "--preset", help="paper | cpu | smoke"),
    out: Path = typer.Option(None, "--out", help="Run directory (default runs/<preset>/pretrain)."),
    data: Optional[Path] = DataOpt,
    corpus: Optional[str] = typer.Option(None, "--corpus", help="Other text: .txt/.raw/.tokens/.jsonl/.parquet or a datasets name."),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    lr: Optional[float] = typer.Option(None, "--lr"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    n_layers: Optional[int] = typer.Option(None, "--n-layers"),
    d_model: Optional[int] = typer.Option(None, "--d-model"),
    n_heads: Optional[int] = typer.Option(None, "--n-heads"),
    d_ff: Optional[int] = typer.Option(None, "--d-ff"),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32 | bf16 (default: the preset's)"),
    seed: int = SeedOpt,
    device: str = DeviceOpt,
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run in --out."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after this many steps (resumable)."),
    checkpoint_seconds: float = typer.Option(120.0, "--checkpoint-every-seconds", hidden=True,
                                             help="Checkpoint at least this often (tests use small values)."),
    json_path: Optional[Path] = JsonOpt,
):
    """MLM pre-training of a BERT (15% modified, 80/10/10; decoder only at modified positions).

    Multi-GPU: run the same command under `accelerate launch` (see README)."""
    from nodeprobe.render.jsonio import check_writable, write_report
    from nodeprobe.render.tables import render_training
    from nodeprobe.train.dist import is_main_process
    from nodeprobe.train.presets import custom_size, get_preset
    from nodeprobe.train.pretrain import pretrain as run

    p = get_preset(preset)
    size = custom_size(p.model, n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_ff=d_ff)
    settings = replace(p.pretrain, **{k: v for k, v in dict(epochs=epochs, lr=lr, batch_size=batch_size).items() if v is not None})
    check_positive(epochs=epochs, batch_size=batch_size, max_steps=max_steps)
    if resume and overwrite:
        raise NodeprobeError("--resume and --overwrite contradict each other: give one of them")
    if lr is not None and not lr > 0:
        raise NodeprobeError(f"--lr {lr}: expected a positive learning rate")
    check_writable(json_path)
    summary = run(out or Path("runs") / preset / "pretrain", size, settings, data_dir=data, corpus=corpus, seed=seed,
                  device=device, precision=precision, resume=resume, overwrite=overwrite, max_steps=max_steps,
                  checkpoint_seconds=checkpoint_seconds)
    if not is_main_process():  # another rank of `accelerate launch`: the main process reports
        return
    if "stopped_at" in summary:
        typer.echo(f"stopped at step {summary['stopped_at']} of {summary['total_steps']}; continue with --resume")
        return
    render_training("pretrain", summary)
    write_report(json_path, "pretrain", {"preset": preset, "seed": seed}, summary)


@app.command()
def finetune(
    model: str = ModelOpt,
    task: str = TaskOpt,
    out: Path = typer.Option(..., "--out", help="Run directory."),
    preset: str = typer.Option("cpu", "--preset", help="Fine-tuning settings of this preset."),
    data: Optional[Path] = DataOpt,
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    lr: Optional[float] = typer.Option(None, "--lr"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    n_train: Optional[int] = typer.Option(None, "--n-train", help="FewRel train items per relation (630)."),
    n_test: Optional[int] = typer.Option(None, "--n-test", help="FewRel test items per relation (70)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32 | bf16"),
    from_scratch: bool = typer.Option(False, "--from-scratch", help="Same architecture, random init."),
    seed: int = SeedOpt,
    device: str = DeviceOpt,
    resume: bool = typer.Option(False, "--resume"),
    overwrite: bool = typer.Option(False, "--overwrite"),
    json_path: Optional[Path] = JsonOpt,
):
    """Fine-tune BertForSequenceClassification on FewRel (630/70 per relation) or DBpedia.

    Multi-GPU: run the same command under `accelerate launch` (see README)."""
    from nodeprobe.render.jsonio import check_writable, write_report
    from nodeprobe.render.tables import render_training
    from nodeprobe.train.dist import is_main_process
    from nodeprobe.train.finetune import finetune as run
    from nodeprobe.train.presets import get_preset

    check_positive(epochs=epochs, batch_size=batch_size, n_train=n_train, n_test=n_test)
    if resume and overwrite:
        raise NodeprobeError("--resume and --overwrite contradict each other: give one of them")
    if precision is not None and precision not in ("fp32", "bf16"):
        raise NodeprobeError(f"--precision {precision}: expected fp32 or bf16")
    p = get_preset(preset)
    over = dict(epochs=epochs, lr=lr, batch_size=batch_size, n_train=n_train, n_test=n_test, precision=precision)
    settings = replace(p.finetune, **{k: v for k, v in over.items() if v is not None})
    check_writable(json_path)
    summary = run(out, model, task=task, settings=settings, data_dir=data, seed=seed, from_scratch=from_scratch,
                  device=device, resume=resume, overwrite=overwrite)
    if not is_main_process():
        return
    render_training("finetune", summary)
    write_report(json_path, "finetune", {"task": task, "seed": seed}, summary)


# ---------------------------------------------------------------------- ablation
@app.command()
def ablate(
    model: str = ModelOpt,
    layer: Optional[int] = typer.Option(None, "--layer", help="Block of the head (0-based)."),
    head: Optional[int] = typer.Option(None, "--head", help="Head within the block (0-based)."),
    all_heads: bool = typer.Option(False, "--all", help="Every head of every block: a layer × head Δaccuracy grid."),
    task: str = TaskOpt,
    data: Optional[Path] = DataOpt,
    mode: str = typer.Option("zero", "--mode", help="zero | mean (eval-set mean of z per position)"),
    isolate: bool = typer.Option(False, "--isolate", help="Ablate every other head of the block instead."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate at most this many sentences/sequences."),
    top: int = typer.Option(10, "--top", help="Movers to show."),
    batch_size: int = typer.Option(64, "--batch-size"),
    seed: int = SeedOpt,
    device: str = DeviceOpt,
    json_path: Optional[Path] = JsonOpt,
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write PNG plots into this folder (needs matplotlib)."),
):
    """Ablate (or isolate) one attention head, or all of them, and report what changes."""
    from nodeprobe.studies.ablation import ablate as run_one
    from nodeprobe.studies.ablation import sweep_heads
    from nodeprobe.evaluate import load_eval_set
    from nodeprobe.render.jsonio import check_writable, write_report
    from nodeprobe.render.tables import render_ablation, render_sweep

    if mode not in ("zero", "mean"):
        raise NodeprobeError(f"--mode {mode}: expected zero or mean")
    check_positive(limit=limit, top=top, batch_size=batch_size)
    if not all_heads and (layer is None or head is None):
        raise NodeprobeError("give --layer and --head, or --all")
    if all_heads and (layer is not None or head is not None):
        raise NodeprobeError("--all sweeps every head: drop --layer/--head")
    check_writable(json_path)
    m, tok = load_for_task(model, task, device)
    if not all_heads:
        m.spec.check_layer(layer)
        m.spec.check_head(head)
    es = load_eval_set(task, tok, data, limit=limit, seed=seed, batch_size=batch_size, max_len=min(128, m.spec.max_len))
    settings = {"model": str(model), "task": task, "mode": mode, "isolate": isolate, "limit": limit, "seed": seed,
                "source": es.source, "eval_fingerprint": es.fingerprint}
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


# ---------------------------------------------------------------------- reproduce
@app.command()
def reproduce(
    preset: str = typer.Option("smoke", "--preset", help="smoke (≤ 3 min) | cpu (≤ 75 min on 2 cores) | paper"),
    runs: Path = typer.Option(Path("runs"), "--runs", help="Where weights and caches go (runs/<preset>/…)."),
    reports: Path = typer.Option(Path("reports"), "--reports", help="Where reports go (reports/<preset>/…)."),
    data: Optional[Path] = DataOpt,
    seed: int = SeedOpt,
    device: str = DeviceOpt,
    minilm: bool = typer.Option(True, "--minilm/--no-minilm", help="Also fine-tune MiniLM-L6 (if installed)."),
):
    """Pre-train → fine-tune → every analysis → reports/<preset>/ (README.md, JSON, PNG). Resumable."""
    from nodeprobe.pipeline import reproduce as run

    run(preset, runs_dir=runs, reports_dir=reports, data_dir=data, seed=seed, device=device, minilm=minilm)


def _register_extensions() -> None:
    """Commands defined next to their analyses (reports, caches, head studies)."""
    import importlib

    for mod in ("nodeprobe.cli.reports", "nodeprobe.cli.heads"):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name == mod:
                continue
            raise
        m.register(app)


_register_extensions()


def _click_errors():
    """``(UsageError, Abort, Exit)`` classes of click and of the click that newer Typer vendors."""
    import click

    usage, abort, exit_ = [click.exceptions.UsageError], [click.exceptions.Abort], [click.exceptions.Exit]
    try:  # Typer ≥ 0.22 ships its own click copy (typer._click) with its own exception classes
        from typer import exceptions as te
        from typer._click import exceptions as tce

        usage.append(tce.UsageError)
        abort.append(te.Abort)
        exit_.append(te.Exit)
    except ImportError:  # pragma: no cover - older Typer uses click itself
        pass
    return tuple(usage), tuple(abort), tuple(exit_)


def _flags_of(cmd, args: list[str]) -> dict[str, str]:
    """Library parameter name → this command line's flag (``layer`` → ``--layer``, ``json_path`` →
    ``--json``), from the root command's and the invoked subcommand's options."""
    import click

    cmds = [cmd]
    sub = getattr(cmd, "commands", {})
    name = next((a for a in args if a in sub), None)
    if name is not None:
        cmds.append(sub[name])
    out: dict[str, str] = {}
    for c in cmds:
        for p in c.params:
            longs = [o for o in getattr(p, "opts", []) if o.startswith("--")]
            if not longs or not p.name:
                continue
            out.setdefault(p.name, longs[0])
            for o in longs:
                out.setdefault(o[2:].replace("-", "_"), o)
    out.setdefault("data_dir", out.get("data", "--data"))
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning user errors into one line and exit code 2."""
    usage_error, abort, exit_ = _click_errors()
    quiet_hf()
    args = sys.argv[1:] if argv is None else argv
    cmd = typer.main.get_command(app)
    try:
        rv = cmd.main(args=args, prog_name="nodeprobe", standalone_mode=False)
        if rv == 130 and type(rv) is int:  # Typer turns Ctrl-C into Exit(130) and returns that code
            raise KeyboardInterrupt
    except NodeprobeError as e:
        print(f"nodeprobe: error: {e.in_flags(_flags_of(cmd, args))}", file=sys.stderr)
        return 2
    except usage_error as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `nodeprobe`: the help, as --help
            print(e.format_message() if hasattr(e, "format_message") else str(e), file=sys.stderr)
            return 2
        print(f"nodeprobe: error: {' '.join(e.format_message().split())}", file=sys.stderr)
        return 2
    except abort:
        print("nodeprobe: interrupted; resume with the same command and --resume", file=sys.stderr)
        return 130
    except exit_ as e:
        return getattr(e, "exit_code", 0)
    except KeyboardInterrupt:
        print("nodeprobe: interrupted; resume with the same command and --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
