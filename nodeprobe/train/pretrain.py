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
    >>> from nodeprobe.train.presets import get_preset
    >>> p = get_preset("smoke")
    >>> summary = pretrain("runs/smoke/pretrain", p.model, p.pretrain, data_dir="../shared/data")  # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from nodeprobe.data.corpus import PretrainData
from nodeprobe.data.eval_sets import mlm_batch, mlm_eval_set
from nodeprobe.errors import NodeprobeError
from nodeprobe.evaluate import run_eval
from nodeprobe.train import dist, loop
from nodeprobe.precision import autocast, check_precision
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
    corp, train_seqs = _load_corpus(data_dir, corpus, size, settings)
    tok = corp.tokenizer
    run = PretrainRun(size=size, settings=settings, seed=seed, corpus=corp.fingerprint, vocab_size=tok.vocab_size)
    run_fp = run.fingerprint()
    record = {"fingerprint": run_fp, "run": asdict(run), "corpus_source": corp.source}
    done = loop.open_run_dir(runner, out_dir, run_fp, resume, overwrite, record, "pretrain.json")
    if done is not None:
        return done
    t = _start(runner, out_dir, run_fp, size, settings, tok, train_seqs, seed, resume)
    snapshots = set(loop.log_spaced_steps(t.total))
    snapshots.add(0)
    # held-out MLM accuracy/loss, in fp32 whatever the training precision (as it always was)
    heldout_set = mlm_eval_set(corp.heldout, tok, seed=seed, source=f"mlm:{corp.source}[held-out]")
    if t.prog.step == 0 and runner.is_main:
        _snapshot(out_dir, t.hf, tok, 0)
    work = _MainWork(t, tok, heldout_set, runner.device, snapshots, log_every, checkpoint_seconds)
    loop.run_steps(runner, t, "pretrain", progress, max_steps,
                   _mlm_batches(t, train_seqs, tok, settings.mask_rate, runner.device, precision),
                   lambda s: _after_step(runner, work, s), check=_check_finite)
    return loop.finish(runner, t, lambda: _finish(runner, t, tok, heldout_set, size, settings, seed, precision, corp,
                                                  train_seqs))


def _load_corpus(data_dir, corpus, size: ModelSize, settings: PretrainSettings):
    """The corpus and its training sequences (capped by ``settings.max_sequences``)."""
    corp = PretrainData.load(data_dir, corpus, size.max_len, settings.heldout_every)
    train_seqs = corp.train
    if settings.max_sequences:
        train_seqs = train_seqs[: settings.max_sequences]
    if not train_seqs:
        raise NodeprobeError(f"corpus {corp.source}: no training sequences")
    return corp, train_seqs


def _start(runner, out_dir: Path, run_fp: str, size: ModelSize, settings: PretrainSettings, tok, train_seqs, seed: int,
           resume: bool) -> loop.Training:
    """A freshly initialised (seeded) BertForMaskedLM, its optimizer, schedule and checkpoint state."""
    from transformers import BertForMaskedLM

    from nodeprobe.model import HookedBert

    torch.manual_seed(seed)
    hf = BertForMaskedLM(size.bert_config(tok.vocab_size))
    hf.to(runner.device)
    model = HookedBert(hf, "mlm")
    model.train()
    return loop.start_training(runner, out_dir, run_fp, hf, model, "mlm", [len(s) for s in train_seqs], settings, seed,
                               resume, betas=settings.betas)


def _mlm_batches(t: loop.Training, train_seqs, tok, rate: float, dev, precision: str):
    """``batch(indices, step)`` for :func:`nodeprobe.train.loop.run_steps`: the step's MLM masks
    (seeded by the step), the decoder run only at the modified positions."""
    from nodeprobe.data.masking import step_rng

    def batch(idx, step: int):
        ids, attn, modified, targets = mlm_batch([train_seqs[i] for i in idx], tok, rng=step_rng(t.seed, step),
                                                 rate=rate)

        def forward(rows):
            i, a, m, y = ids, attn, modified, targets
            if rows is not None:  # this process's rows; `targets` are in row-major order
                y = y[torch.isin(m.nonzero()[:, 0], rows)]
                i, a, m = i[rows], a[rows], m[rows]
            with autocast(dev, precision):
                return t.train_model(i.to(dev), a.to(dev), positions=m.to(dev)), y.to(dev)

        return ids.shape[0], int(targets.numel()), int(attn.sum()), forward

    return batch


def _check_finite(step: int, loss) -> None:
    if not torch.isfinite(loss):
        raise NodeprobeError(f"pre-training diverged at step {step} (loss {float(loss.detach())}); lower `lr`")


def _after_step(runner, work: "_MainWork", s: loop.Step) -> None:
    """The main process's writes after a step; with several processes, at the same steps on every
    rank (the main's errors reach them all)."""
    if runner.world == 1:
        work(s)
    elif work.due(s):
        runner.on_main(lambda: work(s))


class _MainWork:
    """The main process's writes after a step: log line, snapshot, held-out evaluation, checkpoint."""

    def __init__(self, t: loop.Training, tok, heldout_set, dev, snapshots: set[int], log_every: int,
                 checkpoint_seconds: float):
        self.t, self.tok, self.heldout_set, self.dev, self.snapshots = t, tok, heldout_set, dev, snapshots
        self.log_every, self.checkpoint_seconds = log_every, checkpoint_seconds
        self.t_last_ckpt = time.time()

    def _log_step(self, step: int) -> bool:
        return step % self.log_every == 0 or step == self.t.total

    def due(self, s: loop.Step) -> bool:
        """Whether this step has anything to write, time-based checkpoints aside."""
        step = self.t.prog.step
        return self._log_step(step) or step in self.snapshots or s.end_of_epoch

    def __call__(self, s: loop.Step) -> None:
        t, prog = self.t, self.t.prog
        if self._log_step(prog.step):
            loop.append_jsonl(t.log_path, {"step": prog.step, "epoch": s.epoch, "loss": round(s.loss, 5),
                                           "lr": t.sched.get_last_lr()[0], "tokens": prog.tokens,
                                           "tokens_per_s": round(s.tps, 1)})
        if prog.step in self.snapshots:
            _snapshot(t.out_dir, t.hf, self.tok, prog.step)
        if s.end_of_epoch:
            ev = run_eval(t.model, self.heldout_set, device=self.dev)
            loop.append_jsonl(t.log_path, {"step": prog.step, "epoch": s.epoch + 1, "heldout_accuracy": ev.accuracy,
                                           "heldout_loss": ev.loss, "heldout_n": ev.n})
        if s.end_of_epoch or s.now - self.t_last_ckpt > self.checkpoint_seconds:
            t.checkpoint()
            self.t_last_ckpt = time.time()


def _finish(runner, t: loop.Training, tok, heldout_set, size, settings, seed, precision, corp, train_seqs) -> dict:
    """Held-out evaluation, ``final/`` and ``pretrain.json`` (the main process only)."""
    dev, prog = runner.device, t.prog
    ev = run_eval(t.model, heldout_set, device=dev)
    final = t.out_dir / "final"
    loop.save_model(final, t.hf, tok)
    curve = loop.log_records(t.log_path, "heldout_accuracy")
    summary = {
        "model": str(final),
        "fingerprint": t.run_fp,
        "size": asdict(size),
        "settings": asdict(settings),
        "seed": seed,
        "device": str(dev),
        "precision": precision,
        "corpus": {"source": corp.source, "fingerprint": corp.fingerprint, "train_sequences": len(train_seqs),
                   "heldout_sequences": len(corp.heldout), "train_tokens": int(sum(len(s) for s in train_seqs))},
        "steps": prog.step,
        "tokens": prog.tokens,
        "seconds": round(prog.seconds, 1),
        "tokens_per_s": round(prog.tokens / max(prog.seconds, 1e-9), 1),
        "heldout_accuracy": ev.accuracy,
        "heldout_loss": ev.loss,
        "heldout_n": ev.n,
        "heldout_curve": [{"epoch": c["epoch"], "accuracy": c["heldout_accuracy"]} for c in curve],
        "snapshots": sorted(int(p.name.split("-")[1]) for p in (t.out_dir / "snapshots").glob("step-*")),
    }
    return loop.write_summary(runner, t.out_dir / "pretrain.json", summary)


def _snapshot(out_dir: Path, hf, tok, step: int) -> None:
    """``snapshots/step-N/``: the weights at ``step`` (for ``nodeprobe track``)."""
    loop.save_model(out_dir / "snapshots" / f"step-{step:07d}", hf, tok)
