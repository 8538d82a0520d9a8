"""``nodeprobe pretrain`` and ``nodeprobe finetune``: options → checks → one library call → table, JSON.

Example:
    $ nodeprobe pretrain --preset smoke --json pretrain.json
    $ nodeprobe finetune --model runs/smoke/pretrain/final --out runs/ft --task fewrel
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from nodeprobe.cli.options import (
    with_dataset_options, dataset_settings, resolve_dataset, DataOpt, DeviceOpt, EpochsOpt, JsonOpt, LrOpt, ModelOpt,
    SeedOpt, TaskOpt, TrainBatchOpt, check_choice, check_common, check_io, check_no_contradiction, number,
)
from nodeprobe.errors import NodeprobeError

PRECISIONS = ("fp32", "bf16")


def _report(kind: str, settings: dict, summary: dict, json_path: Optional[Path]) -> None:
    """The main process renders the training table and writes ``--json`` (other ranks stay quiet)."""
    from nodeprobe.render.jsonio import write_report
    from nodeprobe.render.tables import render_training
    from nodeprobe.train.dist import is_main_process

    if not is_main_process():  # another rank of `accelerate launch`: the main process reports
        return
    if "stopped_at" in summary:
        typer.echo(f"stopped at step {summary['stopped_at']} of {summary['total_steps']}; continue with --resume")
        return
    render_training(kind, summary)
    write_report(json_path, kind, settings, summary)


def pretrain(
    preset: str = typer.Option("cpu", "--preset", help="paper | cpu | smoke"),
    out: Path = typer.Option(None, "--out", help="Run directory (default runs/<preset>/pretrain)."),
    data: Optional[Path] = DataOpt,
    corpus: Optional[str] = typer.Option(None, "--corpus", help="Other text: .txt/.raw/.tokens/.jsonl/.parquet or a datasets name."),
    epochs: Optional[int] = EpochsOpt,
    lr: Optional[float] = LrOpt,
    batch_size: Optional[int] = TrainBatchOpt,
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
                                             callback=number("--checkpoint-every-seconds", 0),
                                             help="Checkpoint at least this often (tests use small values)."),
    json_path: Optional[Path] = JsonOpt,
):
    """MLM pre-training of a BERT (15% modified, 80/10/10; decoder only at modified positions).

    Multi-GPU: run the same command under `accelerate launch` (see README)."""
    from nodeprobe.train.presets import custom_size, get_preset

    p = get_preset(preset)
    size = custom_size(p.model, n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_ff=d_ff)
    settings = replace(p.pretrain, **{k: v for k, v in dict(epochs=epochs, lr=lr, batch_size=batch_size).items() if v is not None})
    check_common(json_path=json_path, data=data, device=device, epochs=epochs, batch_size=batch_size,
                 max_steps=max_steps, outputs={"--out": out})
    if corpus is not None and Path(corpus).expanduser().exists():  # a local corpus is an input too
        check_io(json_path=json_path, outputs={"--out": out}, inputs={"--corpus": corpus})
    check_no_contradiction(resume, overwrite)
    from nodeprobe.train.pretrain import pretrain as run

    summary = run(out or Path("runs") / preset / "pretrain", size, settings, data_dir=data, corpus=corpus, seed=seed,
                  device=device, precision=precision, resume=resume, overwrite=overwrite, max_steps=max_steps,
                  checkpoint_seconds=checkpoint_seconds)
    _report("pretrain", {"preset": preset, "seed": seed}, summary, json_path)


@with_dataset_options
def finetune(
    model: str = ModelOpt,
    task: Optional[str] = TaskOpt,
    out: Path = typer.Option(..., "--out", help="Run directory."),
    preset: str = typer.Option("cpu", "--preset", help="Fine-tuning settings of this preset."),
    data: Optional[Path] = DataOpt,
    ds: Optional[dict] = None,  # the --dataset options (with_dataset_options)
    epochs: Optional[int] = EpochsOpt,
    lr: Optional[float] = LrOpt,
    batch_size: Optional[int] = TrainBatchOpt,
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
    """Fine-tune a sequence classifier (the model's family: BERT, RoBERTa, …) on FewRel (630/70 per relation), DBpedia, or your own
    labelled table (--dataset: its train split; test accuracy every epoch on its test split).

    Multi-GPU: run the same command under `accelerate launch` (see README)."""
    from nodeprobe.train.presets import get_preset

    task, user, inputs = resolve_dataset(task, mlm=False, **ds)
    if user is not None:
        for flag, value in (("--n-train", n_train), ("--n-test", n_test)):
            if value is not None:
                raise NodeprobeError(f"{flag} {value}: FewRel items per relation; --dataset trains on its whole "
                                     "train split (--test-fraction, --test-dataset or --test-split set the test one)")
    check_common(task, model, json_path, data=data, device=device, epochs=epochs, batch_size=batch_size,
                 n_train=n_train, n_test=n_test, outputs={"--out": out}, inputs=inputs)
    check_no_contradiction(resume, overwrite)
    check_choice("--precision", precision, PRECISIONS)
    p = get_preset(preset)
    over = dict(epochs=epochs, lr=lr, batch_size=batch_size, n_train=n_train, n_test=n_test, precision=precision)
    settings = replace(p.finetune, **{k: v for k, v in over.items() if v is not None})
    from nodeprobe.train.finetune import finetune as run

    summary = run(out, model, task=task, settings=settings, data_dir=user or data, seed=seed,
                  from_scratch=from_scratch, device=device, resume=resume, overwrite=overwrite)
    _report("finetune", {"task": task, "seed": seed, **dataset_settings(user)}, summary, json_path)
