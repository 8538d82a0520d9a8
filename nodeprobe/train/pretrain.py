"""MLM pre-training (METHODS §0): 15% of non-special positions modified (80/10/10), loss on the
modified positions only, decoder logits computed only there, AdamW with a linear schedule.

Outputs under ``out_dir``::

    run.json            settings and their fingerprint (a resume must match it)
    log.jsonl           one line per logging step and per epoch (held-out MLM accuracy)
    checkpoint/         latest resumable state (HF weights + optimizer/scheduler + progress)
    snapshots/step-N/   HF weights at log-spaced steps (0 = random init), for ``nodeprobe track``
    final/              the trained BertForMaskedLM in Hugging Face format, with tokenizer files
    pretrain.json       summary (written last: its presence means the run completed)

Example:
    >>> from nodeprobe.train.pretrain import pretrain                 # doctest: +SKIP
    >>> summary = pretrain("runs/smoke/pretrain", preset="smoke", data_dir="../shared/data")
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from nodeprobe.data.corpus import PretrainData
from nodeprobe.data.eval_sets import mlm_batch, mlm_eval_set
from nodeprobe.errors import NodeprobeError
from nodeprobe.evaluate import run_eval
from nodeprobe.io import atomic_dir, write_text_atomic
from nodeprobe.progress import training_bar
from nodeprobe.train import dist, loop
from nodeprobe.train.precision import autocast, check_precision
from nodeprobe.train.presets import ModelSize, PretrainSettings


# ---------------------------------------------------------------------- settings
@dataclass(frozen=True)
class PretrainRun:
    """Everything that determines a pre-training run's result (fingerprinted for `resume`)."""

    size: ModelSize
    settings: PretrainSettings
    seed: int
    corpus: str  # corpus fingerprint
    vocab_size: int

    def fingerprint(self) -> str:
        return loop.fingerprint(asdict(self))


# ---------------------------------------------------------------------- main entry
def pretrain(
    out_dir: str | Path,
    size: ModelSize,
    settings: PretrainSettings,
    data_dir: str | Path | None = None,
    corpus: str | None = None,
    seed: int = 0,
    device: str = "cpu",
    precision: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    log_every: int = 10,
    checkpoint_seconds: float = 120.0,
    max_steps: int | None = None,
    progress: bool = True,
) -> dict:
    """Pre-train a BERT with MLM; see the module docstring for what is written.

    ``max_steps`` stops early (the schedule still spans the full run) — used by interruption tests.
    Returns the summary dict also written to ``pretrain.json``.  Under ``accelerate launch`` (or
    ``torchrun``) every process runs this with the same arguments: see :mod:`nodeprobe.train.dist`.
    """
    import transformers

    from nodeprobe.model import resolve_device

    transformers.utils.logging.disable_progress_bar()
    precision = precision or settings.precision
    settings = replace(settings, precision=precision)
    check_precision(precision)
    dev = resolve_device(device)
    size.validate()
    runner = dist.start(dev, precision)
    try:
        return _pretrain(runner, Path(out_dir), size, settings, data_dir, corpus, seed, precision, resume, overwrite,
                         log_every, checkpoint_seconds, max_steps, progress)
    finally:
        runner.close()


def _pretrain(runner, out_dir: Path, size, settings, data_dir, corpus, seed, precision, resume, overwrite, log_every,
              checkpoint_seconds, max_steps, progress) -> dict:
    """The body of :func:`pretrain` in one process (``runner``: :mod:`nodeprobe.train.dist`)."""
    from transformers import BertForMaskedLM

    from nodeprobe.data.batching import make_batches
    from nodeprobe.data.masking import step_rng
    from nodeprobe.model import HookedBert

    dev = runner.device
    corp = PretrainData.load(data_dir, corpus, size.max_len, settings.heldout_every)
    tok = corp.tokenizer
    train_seqs = corp.train
    if settings.max_sequences:
        train_seqs = train_seqs[: settings.max_sequences]
    heldout = corp.heldout
    if not train_seqs:
        raise NodeprobeError(f"corpus {corp.source}: no training sequences")
    run = PretrainRun(size=size, settings=settings, seed=seed, corpus=corp.fingerprint,
                      vocab_size=tok.vocab_size)
    run_fp = run.fingerprint()

    def start_out_dir():  # the main process only: the others wait for it
        loop.prepare_out_dir(out_dir, run_fp, resume, overwrite)
        if (out_dir / "pretrain.json").is_file() and resume:
            return json.loads((out_dir / "pretrain.json").read_text())
        write_text_atomic(out_dir / "run.json", json.dumps(
            {"fingerprint": run_fp, "run": asdict(run), "corpus_source": corp.source}, indent=2, default=str))
        return None

    done = runner.on_main(start_out_dir)
    if done is not None:
        return done

    torch.manual_seed(seed)
    config = size.bert_config(tok.vocab_size)
    hf = BertForMaskedLM(config)
    hf.to(dev)
    model = HookedBert(hf, "mlm")
    model.train()
    batches_per_epoch = len(make_batches([len(s) for s in train_seqs], settings.batch_size, shuffle_seed=0))
    total_steps = batches_per_epoch * settings.epochs
    opt = loop.make_optimizer(hf, settings.lr, settings.weight_decay, settings.betas)
    sched = loop.linear_schedule(opt, total_steps, settings.warmup)
    prog = loop.load_checkpoint(out_dir, hf, opt, sched, run_fp) if resume else None
    prog = prog or loop.Progress()
    # under Accelerate a second view of the same weights trains (prepare() wraps it, and with bf16
    # patches its forward); `model` stays plain for the held-out evaluation, as in one process
    train_model, opt = runner.prepare(HookedBert(hf, "mlm"), opt) if runner.accelerated else (model, opt)
    main = runner.is_main
    log_path = out_dir / "log.jsonl"
    if main:
        loop.truncate_log(log_path, prog.step)
    snapshots = set(loop.log_spaced_steps(total_steps))
    snapshots.add(0)
    # held-out MLM accuracy/loss, in fp32 whatever the training precision (as it always was)
    heldout_set = mlm_eval_set(heldout, tok, seed=seed, source=f"mlm:{corp.source}[held-out]")
    if prog.step == 0 and main:
        _snapshot(out_dir, hf, tok, 0)

    t_last_ckpt = time.time()

    def main_work(step_loss: float, tps: float, epoch: int, end_of_epoch: bool, now: float) -> None:
        """The main process's writes after a step: log line, snapshot, held-out evaluation, checkpoint."""
        nonlocal t_last_ckpt
        if prog.step % log_every == 0 or prog.step == total_steps:
            loop.append_jsonl(log_path, {"step": prog.step, "epoch": epoch, "loss": round(step_loss, 5),
                                         "lr": sched.get_last_lr()[0], "tokens": prog.tokens,
                                         "tokens_per_s": round(tps, 1)})
        if prog.step in snapshots:
            _snapshot(out_dir, hf, tok, prog.step)
        if end_of_epoch:
            ev = run_eval(model, heldout_set, device=dev)
            loop.append_jsonl(log_path, {"step": prog.step, "epoch": epoch + 1, "heldout_accuracy": ev.accuracy,
                                         "heldout_loss": ev.loss, "heldout_n": ev.n})
        if end_of_epoch or now - t_last_ckpt > checkpoint_seconds:
            loop.save_checkpoint(out_dir, hf, opt, sched, prog, run_fp)
            t_last_ckpt = time.time()

    t0 = time.time() - prog.seconds
    stop_at = total_steps if max_steps is None else min(total_steps, max_steps)
    with training_bar(total_steps, "pretrain", enabled=progress and main) as bar:
        bar.advance(prog.step)
        while prog.step < stop_at:
            epoch = prog.step // batches_per_epoch
            order = make_batches([len(s) for s in train_seqs], settings.batch_size,
                                 shuffle_seed=loop.step_seed(seed, epoch, "order"))
            for bi in range(prog.step - epoch * batches_per_epoch, batches_per_epoch):
                if prog.step >= stop_at:
                    break
                ids, attn, modified, targets = mlm_batch([train_seqs[i] for i in order[bi]], tok,
                                                         rng=step_rng(seed, prog.step), rate=settings.mask_rate)
                torch.manual_seed(loop.step_seed(seed, prog.step, runner.salt("dropout")))
                def forward(rows, ids=ids, attn=attn, modified=modified, targets=targets):
                    if rows is not None:  # this process's rows; `targets` are in row-major order
                        targets = targets[torch.isin(modified.nonzero()[:, 0], rows)]
                        ids, attn, modified = ids[rows], attn[rows], modified[rows]
                    with autocast(dev, precision):
                        return train_model(ids.to(dev), attn.to(dev), positions=modified.to(dev)), targets.to(dev)

                loss, shown = dist.step_loss(runner, ids.shape[0], int(targets.numel()), forward)
                if not torch.isfinite(shown):
                    raise NodeprobeError(f"pre-training diverged at step {prog.step} (loss {float(shown.detach())}); lower `lr`")
                opt.zero_grad(set_to_none=True)
                runner.backward(loss)
                runner.clip(hf.parameters(), 1.0)
                opt.step()
                sched.step()
                prog.step += 1
                prog.tokens += int(attn.sum())
                now = time.time()
                prog.seconds = now - t0
                tps = prog.tokens / max(prog.seconds, 1e-9)
                bar.update(loss=float(shown.detach()), tps=tps)
                end_of_epoch = prog.step % batches_per_epoch == 0
                if end_of_epoch:
                    prog.epoch = epoch + 1
                step_loss = float(shown.detach())
                if runner.world == 1:
                    main_work(step_loss, tps, epoch, end_of_epoch, now)
                elif (prog.step % log_every == 0 or prog.step == total_steps or prog.step in snapshots
                      or end_of_epoch):  # the same steps on every rank; the main's errors reach them all
                    runner.on_main(lambda: main_work(step_loss, tps, epoch, end_of_epoch, now))
    if prog.step < total_steps:  # stopped early on purpose (max_steps)
        if main:
            loop.save_checkpoint(out_dir, hf, opt, sched, prog, run_fp)
        runner.barrier()
        return {"stopped_at": prog.step, "total_steps": total_steps}
    return runner.on_main(lambda: _finish(runner, out_dir, model, hf, tok, heldout_set, dev, log_path, run_fp, size,
                                          settings, seed, precision, corp, train_seqs, heldout, prog))


def _finish(runner, out_dir, model, hf, tok, heldout_set, dev, log_path, run_fp, size, settings, seed, precision, corp,
            train_seqs, heldout, prog) -> dict:
    """Held-out evaluation, ``final/`` and ``pretrain.json`` (the main process only)."""
    ev = run_eval(model, heldout_set, device=dev)
    final = out_dir / "final"
    with atomic_dir(final) as tmp:
        hf.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    curve = [json.loads(l) for l in log_path.read_text().splitlines() if "heldout_accuracy" in l]
    summary = {
        "model": str(final),
        "fingerprint": run_fp,
        "size": asdict(size),
        "settings": asdict(settings),
        "seed": seed,
        "device": str(dev),
        "precision": precision,
        "corpus": {"source": corp.source, "fingerprint": corp.fingerprint, "train_sequences": len(train_seqs),
                   "heldout_sequences": len(heldout), "train_tokens": int(sum(len(s) for s in train_seqs))},
        "steps": prog.step,
        "tokens": prog.tokens,
        "seconds": round(prog.seconds, 1),
        "tokens_per_s": round(prog.tokens / max(prog.seconds, 1e-9), 1),
        "heldout_accuracy": ev.accuracy,
        "heldout_loss": ev.loss,
        "heldout_n": ev.n,
        "heldout_curve": [{"epoch": c["epoch"], "accuracy": c["heldout_accuracy"]} for c in curve],
        "snapshots": sorted(int(p.name.split("-")[1]) for p in (out_dir / "snapshots").glob("step-*")),
    }
    if runner.accelerated:
        summary["processes"] = runner.world
    write_text_atomic(out_dir / "pretrain.json", json.dumps(summary, indent=2))
    return summary


def _snapshot(out_dir: Path, hf, tok, step: int) -> None:
    with atomic_dir(out_dir / "snapshots" / f"step-{step:07d}") as tmp:
        hf.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)

