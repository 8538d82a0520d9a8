"""Head-study commands: ``similarity``, ``segment`` and ``track``.

Each command checks its options, calls :mod:`nodeprobe.studies.heads` / :mod:`nodeprobe.studies.track`,
renders with :mod:`nodeprobe.render.heads_view`, and writes JSON through ``write_report`` and PNGs
through :mod:`nodeprobe.render.figures`.  Bad input raises :class:`NodeprobeError` (one line, exit 2).

Example:
    $ nodeprobe similarity --text "The cat sat. It slept." --layer 1 --head 0
    $ nodeprobe track --run runs/cpu/pretrain --plot plots
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from nodeprobe.cli.options import (
    with_dataset_options, resolve_dataset, DataOpt, DeviceOpt, HeadsModelOpt, HeadsTaskOpt, JsonOpt, MaxLenOpt,
    PlotOpt, TrackSeedOpt, check_choice, check_common, check_index, check_io, check_paths, check_positive, load_for_task, number,
    resolve_model, trust_pickle,
)
from nodeprobe.errors import NodeprobeError, reason

MAX_TEXTS = 64
# the per-head vectors ``--site`` compares: nodeprobe.analysis.similarity.VECTOR_SITES (it imports torch;
# tests/cli/test_cli_startup_imports.py checks the two agree)
VECTOR_SITES = ("z", "q", "k", "v", "qk")
EMPTY_PAIRS = ("one", "exclude", "zero")  # track --empty-pairs: nodeprobe.analysis.order_parameters.EMPTY_PAIRS


def _texts(text: Optional[str], text_file: Optional[Path], max_texts: int, user=None) -> list[str]:
    """``--text``, the paragraphs (blank-line separated) of ``--text-file``, or the first ``max_texts``
    rows of the ``--text-column`` of ``--dataset`` (``user``)."""
    if user is not None:
        if text is not None or text_file is not None:
            raise NodeprobeError("give --text, --text-file or --dataset (one of them)")
        from nodeprobe.data.user import user_texts

        texts = [t for t in user_texts(user) if t.strip()][:max_texts]
        if not texts:
            raise NodeprobeError(f"--text-column {user.text_column}: --dataset {user.path} has no text in it")
        return texts
    if (text is None) == (text_file is None):
        raise NodeprobeError("give --text, --text-file or --dataset (one of them)")
    if text is not None:
        if not text.strip():
            raise NodeprobeError("--text is empty")
        return [text]
    p = Path(text_file)
    if not p.is_file():
        raise NodeprobeError(f"--text-file {p}: " + ("is a folder; give a text file (paragraphs separated by blank lines)"
                                                     if p.is_dir() else "no such file"))
    try:
        raw = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise NodeprobeError(f"--text-file {p}: unreadable ({reason(e)}); allowed: a UTF-8 text file") from None
    paras, cur = [], []
    for line in raw.splitlines():
        if line.strip():
            cur.append(line.strip())
        elif cur:
            paras.append(" ".join(cur))
            cur = []
    if cur:
        paras.append(" ".join(cur))
    if not paras:
        raise NodeprobeError(f"--text-file {p}: no text in it")
    return paras[:max_texts]


def _study_inputs(ctx: typer.Context, model: Optional[str], task: Optional[str], device: str, layer, head,
                  text, text_file, max_texts: int, json_path: Optional[Path], plot: Optional[Path] = None,
                  ds: Optional[dict] = None, max_len: Optional[int] = None):
    """``(model name, HookedBert, tokenizer, texts, task)`` of ``similarity``/``segment``: options checked
    (cheap ones first), the model loaded (``--task``: that head; none: whatever head the checkpoint
    has; ``--dataset``: a classifier, or ``--task mlm`` a masked LM, on the texts of its
    ``--text-column``), ``--layer``/``--head`` checked against it."""
    task, user, inputs = resolve_dataset(task, default=None, **(ds or {}))
    check_common(task, model, json_path, plot, device=device, max_texts=max_texts)
    if max_len is not None and max_len < 2:  # the upper end is the model's: checked once it is loaded
        raise NodeprobeError(f"--max-len {max_len}: expected at least 2 tokens ([CLS] and [SEP])")
    if (layer is None) != (head is None):
        raise NodeprobeError("give --layer and --head together")
    check_index(layer=layer, head=head)
    check_io(model, json_path, plot, text=text_file, inputs=inputs)
    texts = _texts(text, text_file, max_texts, user)
    model = resolve_model(model, task, io=dict(json_path=json_path, plot=plot, text=text_file, inputs=inputs))
    m, tok = load_for_task(model, task, device, trust_pickle(ctx))
    if layer is not None:
        m.spec.check_layer(layer)
        m.spec.check_head(head)
    return model, m, tok, texts, task


@with_dataset_options
def similarity(
    ctx: typer.Context,
    model: Optional[str] = HeadsModelOpt,
    text: Optional[str] = typer.Option(None, "--text", help="The text to analyse."),
    text_file: Optional[Path] = typer.Option(None, "--text-file", help="Texts, one per paragraph (blank-line separated)."),
    layer: Optional[int] = typer.Option(None, "--layer", help="Block of the head to show as a heat map."),
    head: Optional[int] = typer.Option(None, "--head", help="Head within the block."),
    task: Optional[str] = HeadsTaskOpt,
    ds: Optional[dict] = None,  # the --dataset options (with_dataset_options)
    site: str = typer.Option("z", "--site", help="Vectors compared: z | q | k | v | qk (q_i·k_j)."),
    q: float = typer.Option(0.99, "--q", callback=number("--q", 0, 1, lo_open=True, hi_open=True), help="High-similarity pairs: the top (1−q) of a head's pairs per text."),
    long_range: int = typer.Option(16, "--long-range", min=0, help="Pairs farther apart than this are long-range."),
    normalize: bool = typer.Option(False, "--normalize", help="Cosine instead of raw scalar products."),
    threshold: float = typer.Option(0.3, "--threshold", callback=number("--threshold", 0, 1), help="Separator-focused: separator share above this."),
    max_texts: int = typer.Option(MAX_TEXTS, "--max-texts", help="At most this many paragraphs of --text-file."),
    max_show: int = typer.Option(48, "--max-show", help="Tokens shown in the heat map."),
    max_len: Optional[int] = MaxLenOpt,
    device: str = DeviceOpt,
    json_path: Optional[Path] = JsonOpt,
    plot: Optional[Path] = PlotOpt,
):
    """Attention to separators and context similarity of every head (heat map of one head with --layer/--head)."""
    check_positive(max_show=max_show)
    check_choice("--site", site, VECTOR_SITES)
    model, m, tok, texts, task = _study_inputs(ctx, model, task, device, layer, head, text, text_file, max_texts,
                                               json_path, plot, ds=ds, max_len=max_len)
    from nodeprobe.render import figures
    from nodeprobe.render.heads_view import render_similarity
    from nodeprobe.render.jsonio import write_report
    from nodeprobe.studies.heads import head_matrix, study_heads

    study = study_heads(m, tok, texts, site=site, q=q, long_range=long_range, normalize=normalize,
                        threshold=threshold, max_len=max_len)
    matrix = tokens = None
    if layer is not None:
        matrix, tokens = head_matrix(m, tok, texts[0], layer, head, site=site, normalize=normalize, max_len=max_len)
    render_similarity(study, matrix, tokens, layer, head, max_show)
    settings = {"model": str(model), "task": task, "layer": layer, "head": head, "n_texts": len(texts),
                "max_len": max_len, **study.settings}
    result = study.to_dict()
    if matrix is not None:
        result["matrix"] = {"layer": layer, "head": head, "tokens": tokens, "values": matrix}
    write_report(json_path, "similarity", settings, result)
    if plot:
        figures.head_study(study, Path(plot))
        if matrix is not None:
            from nodeprobe.render.plots import plot_matrix

            plot_matrix(matrix, tokens, Path(plot) / f"similarity_L{layer}H{head}.png",
                        f"head L{layer}H{head} similarity ({site})")


@with_dataset_options
def segment(
    ctx: typer.Context,
    model: Optional[str] = HeadsModelOpt,
    text: Optional[str] = typer.Option(None, "--text", help="The text to segment."),
    text_file: Optional[Path] = typer.Option(None, "--text-file", help="Texts, one per paragraph."),
    layer: Optional[int] = typer.Option(None, "--layer", help="Segment with this head instead of the separator-focused ones."),
    head: Optional[int] = typer.Option(None, "--head"),
    task: Optional[str] = HeadsTaskOpt,
    ds: Optional[dict] = None,  # the --dataset options (with_dataset_options)
    threshold: float = typer.Option(0.3, "--threshold", callback=number("--threshold", 0, 1), help="Separator-focused heads: share above this."),
    min_ratio: float = typer.Option(3.0, "--min-ratio", callback=number("--min-ratio", 0, lo_open=True), help="Boundary: receives ≥ this × the uniform attention."),
    max_texts: int = typer.Option(8, "--max-texts", help="At most this many paragraphs of --text-file."),
    max_len: Optional[int] = MaxLenOpt,
    device: str = DeviceOpt,
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the segments as JSON to this path."),
):
    """Split a text into segments at the positions its separator-focused heads attend to."""
    model, m, tok, texts, task = _study_inputs(ctx, model, task, device, layer, head, text, text_file, max_texts,
                                               json_path, ds=ds, max_len=max_len)
    from nodeprobe.render.heads_view import render_segments
    from nodeprobe.render.jsonio import write_report
    from nodeprobe.studies.heads import segment as run

    heads = [(layer, head)] if layer is not None else None
    reps = [run(m, tok, t, heads=heads, threshold=threshold, min_ratio=min_ratio, max_len=max_len) for t in texts]
    render_segments(reps)
    write_report(json_path, "segment", {"model": str(model), "task": task, "threshold": threshold,
                                        "min_ratio": min_ratio, "layer": layer, "head": head},
                 {"texts": [r.to_dict() for r in reps]})


def _run_models(run: Path) -> list[Path]:
    """The input folders of ``track --run``: the model folder itself, or a run's snapshots / final
    model / checkpoint (the rest of a run folder may take outputs, e.g. the default ``track-<task>``)."""
    r = Path(run)
    models = [r] if (r / "config.json").is_file() else [r / n for n in ("snapshots", "final", "checkpoint")]
    return [m for m in models if m.exists()]


def _check_track_out(out: Path | None, run: Path) -> None:
    """``track --out``: never a model folder given as ``--run`` or inside one, never the run folder
    itself or inside its snapshots / final model / checkpoint (a subfolder such as the default
    ``<run>/track-<task>`` is fine)."""
    if out is None:
        return
    from nodeprobe.io import check_disjoint

    r = Path(run)
    for m in _run_models(r):
        check_disjoint({"--out": out}, {"--run": m})
    if not (r / "config.json").is_file() and Path(out).expanduser().resolve() == r.expanduser().resolve():
        raise NodeprobeError(f"--out {out}: is the input --run {run}; give a folder for the results, e.g. "
                             f"{r / 'track'}")


@with_dataset_options
def track(
    run: List[Path] = typer.Option(..., "--run", help="A pre-training run (snapshots/step-N) or model directories; repeatable."),
    task: Optional[str] = typer.Option(None, "--task", help="mlm | fewrel | dbpedia | dataset (default: mlm; dataset with --dataset)"),
    data: Optional[Path] = DataOpt,
    ds: Optional[dict] = None,  # the --dataset options (with_dataset_options)
    text_file: Optional[Path] = typer.Option(None, "--text-file", help="MLM: evaluate on this text instead of the held-out corpus."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder of the per-step results (default <first run>/track-<task>)."),
    max_items: Optional[int] = typer.Option(None, "--max-items", help="Evaluate at most this many items (masked positions / sentences)."),
    heads: bool = typer.Option(True, "--heads/--no-heads", help="Also isolate every head (the slow part)."),
    mode: str = typer.Option("zero", "--mode", help="zero | mean fill for isolated nodes and heads."),
    margin_jaccard: float = typer.Option(0.0, "--margin-jaccard", callback=number("--margin-jaccard", 0, 1), help="Breaking: Jaccard must fall by more than this."),
    margin_size: float = typer.Option(0.0, "--margin-size", callback=number("--margin-size", 0), help="Breaking: mean |Λ| must rise by more than this."),
    empty_pairs: str = typer.Option("one", "--empty-pairs", help="Jaccard of two empty learned sets: one | exclude | zero."),
    random_init: bool = typer.Option(True, "--random-init/--no-random-init", help="Add a seeded random init as step 0 if missing."),
    batch_size: int = typer.Option(64, "--batch-size"),
    seed: int = TrackSeedOpt,
    device: str = DeviceOpt,
    json_path: Optional[Path] = JsonOpt,
    plot: Optional[Path] = PlotOpt,
):
    """Order parameters (accuracy, ⟨APT⟩, |Λ|, coverage, Jaccard of nodes and heads) at every snapshot; resumable."""
    task, user, inputs = resolve_dataset(task, default="mlm", text=text_file, **ds)
    if user is not None and task == "mlm" and max_items is not None:
        raise NodeprobeError(f"--max-items {max_items}: with --task mlm --dataset every sequence of its "
                             "--text-column is evaluated; leave it out (or cut the table)")
    check_choice("--empty-pairs", empty_pairs, EMPTY_PAIRS)
    check_common(task, None, json_path, plot, data=data, device=device, max_items=max_items,
                 batch_size=batch_size, outputs={"--out": out}, inputs=inputs)
    check_paths("--run", *run)
    check_paths("--text-file", text_file)
    check_io(None, json_path, plot, data, text=text_file, inputs=inputs)
    for r in run:  # the snapshots are inputs; the outputs may sit inside a run folder (the default --out does)
        for m in _run_models(r):
            check_io(None, json_path, plot, data, text=text_file, inputs={"--run": m})
        _check_track_out(out, r)
    from nodeprobe.data.tasks import data_root
    from nodeprobe.data.tokenizer import load_tokenizer
    from nodeprobe.render import figures
    from nodeprobe.render.heads_view import render_track
    from nodeprobe.render.jsonio import write_report
    from nodeprobe.studies.track import find_checkpoints, track as run_track, track_eval_set

    cks = find_checkpoints(run, random_init=random_init, seed=seed)
    first = next((c.path for c in cks if c.path is not None), None)
    from nodeprobe.model.loading import has_tokenizer

    tok = load_tokenizer(first if has_tokenizer(first) else data_root(data) / "tokenizer" / "bert-base-uncased-vocab.txt")
    run_dir = run[0] if (run[0] / "snapshots").is_dir() else None
    if user is not None:  # your own table: its test split (in the first snapshot's label order), or its text column
        from transformers import AutoConfig

        from nodeprobe.data.eval_sets import load_eval_set
        from nodeprobe.model.loading import config_family, read_config

        cfg = AutoConfig.from_pretrained(first)
        max_len = min(128, config_family(read_config(first), first / "config.json").max_len(cfg))
        es = load_eval_set(task, tok, user, limit=max_items, seed=seed, batch_size=batch_size, max_len=max_len,
                           labels_of=cfg if task == "dataset" else None)
    else:
        es = track_eval_set(task, tok, data, text_file=text_file, max_items=max_items, seed=seed,
                            batch_size=batch_size, run_dir=run_dir)
    out_dir = out or (run_dir or first.parent) / f"track-{task}"
    rep = run_track(cks, es, out_dir=out_dir, heads=heads, mode=mode, empty_pairs=empty_pairs,
                    margin_jaccard=margin_jaccard, margin_size=margin_size, random_init=random_init,
                    seed=seed, device=device, progress=True)
    render_track(rep)
    write_report(json_path, "track", {"runs": [str(r) for r in run], "max_items": max_items, **rep.settings}, rep)
    if plot:
        figures.track(rep, Path(plot))
