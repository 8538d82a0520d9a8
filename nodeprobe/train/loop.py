"""What pre-training and fine-tuning share: optimizer, schedule, per-step seeding, checkpoints.

Checkpoints are written atomically (a temporary directory, then ``os.replace``; the pointer file
``checkpoint/state.json`` is written last), hold model, optimizer, scheduler and progress, and
contain only tensors and plain numbers: they load with ``torch.load(weights_only=True)``, so no
pickled code ever runs.  Randomness inside a step (masks, dropout) is seeded from
``(seed, step)``, which makes a resumed run continue exactly as an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from nodeprobe.errors import NodeprobeError, reason
from nodeprobe.io import atomic_dir, write_text_atomic

CKPT = "checkpoint"


def step_seed(seed: int, step: int, salt: str = "") -> int:
    """A stable 63-bit seed for ``(seed, step, salt)`` (independent of Python's hash randomisation).

    Example:
        >>> step_seed(0, 1) == step_seed(0, 1) != step_seed(0, 2)
        True
    """
    h = hashlib.blake2b(f"{seed}:{step}:{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW with no weight decay on biases and LayerNorm weights (as BERT)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused AdamW: one kernel for all parameters (3x faster than the per-tensor loop on CPU)
    fused = all(p.dtype in (torch.float32, torch.float16, torch.bfloat16) for p in decay + no_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=1e-6, fused=fused)


def linear_schedule(optimizer, total_steps: int, warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup × total_steps`` steps, then linear decay to 0 (METHODS §0)."""
    warm = max(1, int(round(warmup * total_steps)))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def log_spaced_steps(total: int, per_decade: int = 4) -> list[int]:
    """Steps 1, ~1.8, ~3.2, 5.6, 10, … up to ``total`` (distinct ints; ``total`` included).

    Example:
        >>> log_spaced_steps(100, per_decade=2)
        [1, 3, 10, 32, 100]
    """
    out, k = set(), 0
    while True:
        s = int(round(10 ** (k / per_decade)))
        if s > total:
            break
        out.add(s)
        k += 1
    out.add(total)
    return sorted(out)


@dataclass
class Progress:
    """Where a run stands: the global step and the epoch it is in."""

    step: int = 0
    epoch: int = 0
    tokens: int = 0
    seconds: float = 0.0


def fingerprint(obj) -> str:
    """Short sha256 of a JSON-able object (run settings, configs)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_checkpoint(out_dir: Path, hf_model, optimizer, scheduler, progress: Progress, run_fp: str) -> None:
    """Save the resumable state atomically under ``out_dir/checkpoint``."""
    with atomic_dir(Path(out_dir) / CKPT) as tmp:
        hf_model.save_pretrained(tmp, safe_serialization=True)
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
            tmp / "trainer_state.pt",
        )
        state = {"step": progress.step, "epoch": progress.epoch, "tokens": progress.tokens,
                 "seconds": progress.seconds, "run": run_fp, "time": time.time()}
        (tmp / "state.json").write_text(json.dumps(state))


PROGRESS_KEYS = {"step": int, "epoch": int, "tokens": int, "seconds": (int, float)}  # state.json's counters, ≥ 0


def read_checkpoint(out_dir: Path, run_fp: str) -> tuple[dict, dict] | None:
    """The checkpoint a resume reads, every file checked: ``state.json`` (JSON holding this run's
    fingerprint and its progress counters), ``model.safetensors`` (its header against its size) and
    ``trainer_state.pt`` (read with ``weights_only=True``: a pickle that would run code is refused;
    it must hold the optimizer and scheduler states).  Returns ``(state, trainer_state)``, or None
    when there is no checkpoint (no ``state.json``); anything else wrong is one line naming the file.

    Example:
        >>> read_checkpoint(Path("/no/such/run"), "fp") is None
        True
    """
    from nodeprobe.io import safetensors_header

    ck = Path(out_dir) / CKPT
    if not (ck / "state.json").is_file():
        return None
    key = _files_key(ck)
    if _READ.get(ck) is not None and _READ[ck][0] == key:
        return _READ[ck][1]
    try:
        state = json.loads((ck / "state.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise NodeprobeError(f"checkpoint {ck}: state.json is unreadable; remove it or use `overwrite`") from None
    if not isinstance(state, dict):
        raise NodeprobeError(f"checkpoint {ck}: state.json is not a checkpoint record; use `overwrite`")
    if state.get("run") != run_fp:
        raise NodeprobeError(
            f"checkpoint {ck}: made with other settings (run {state.get('run')} ≠ {run_fp}); "
            "use the same options, another `out`, or `overwrite`"
        )
    bad = next((k for k, kind in PROGRESS_KEYS.items() if isinstance(state.get(k), bool)
                or not isinstance(state.get(k), kind) or not state[k] >= 0), None)
    if bad is not None:
        what = "an integer" if PROGRESS_KEYS[bad] is int else "a number"
        raise NodeprobeError(f"checkpoint {ck}: state.json has {bad}={state.get(bad)!r}; expected {what} ≥ 0 "
                             "(use `overwrite`)")
    for name in ("model.safetensors", "trainer_state.pt"):
        if not (ck / name).is_file():
            raise NodeprobeError(f"checkpoint {ck}: {name} is missing; use `overwrite`")
    why = safetensors_header(ck / "model.safetensors")[1]
    if why is not None:
        raise NodeprobeError(f"checkpoint {ck}: model.safetensors is unreadable ({why}); use `overwrite`")
    try:
        with warnings.catch_warnings():  # torch warns (two lines) about a pickle protocol before refusing it
            warnings.simplefilter("ignore")
            tr = torch.load(ck / "trainer_state.pt", weights_only=True, map_location="cpu")
    except Exception as e:
        raise NodeprobeError(f"checkpoint {ck}: trainer_state.pt is unreadable ({reason(e)}); use `overwrite`") from None
    if not (isinstance(tr, dict) and isinstance(tr.get("optimizer"), dict) and isinstance(tr.get("scheduler"), dict)):
        raise NodeprobeError(f"checkpoint {ck}: trainer_state.pt holds no optimizer and scheduler state; "
                             "use `overwrite`")
    _READ.clear()  # one checkpoint kept: the one a resume is about to load
    _READ[ck] = (key, (state, tr))
    return state, tr


#: the last checkpoint :func:`read_checkpoint` checked, with its files' (size, mtime) — the check
#: before a run folder's lock and the load after it read ``trainer_state.pt`` once
_READ: dict[Path, tuple] = {}


def _files_key(ck: Path) -> tuple:
    out = []
    for name in ("state.json", "model.safetensors", "trainer_state.pt"):
        try:
            st = (ck / name).stat()
            out.append((st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


def load_checkpoint(out_dir: Path, hf_model, optimizer, scheduler, run_fp: str) -> Progress | None:
    """Restore the state saved by :func:`save_checkpoint` (checked by :func:`read_checkpoint`); None
    if there is none.  A checkpoint of another configuration (different run fingerprint) is refused.
    """
    read = read_checkpoint(out_dir, run_fp)
    _READ.clear()  # loaded now: not kept
    if read is None:
        return None
    state, tr = read
    ck = Path(out_dir) / CKPT
    from safetensors.torch import load_file

    try:
        weights = load_file(str(ck / "model.safetensors"))
        missing, unexpected = hf_model.load_state_dict(weights, strict=False)
    except Exception as e:
        raise NodeprobeError(f"checkpoint {ck}: model.safetensors does not fit the model ({reason(e)}); "
                             "use `overwrite`") from None
    real_missing = [m for m in missing if "decoder" not in m]  # tied decoder weights are not stored
    if real_missing or unexpected:
        raise NodeprobeError(f"checkpoint {ck}: does not match the model ({(real_missing or unexpected)[0]})")
    if hasattr(hf_model, "tie_weights"):
        hf_model.tie_weights()
    try:
        optimizer.load_state_dict(tr["optimizer"])
        scheduler.load_state_dict(tr["scheduler"])
    except Exception as e:
        raise NodeprobeError(f"checkpoint {ck}: trainer_state.pt does not fit the optimizer ({reason(e)}); "
                             "use `overwrite`") from None
    return Progress(step=state["step"], epoch=state["epoch"], tokens=state["tokens"], seconds=state["seconds"])


def _run_fingerprint(marker: Path) -> str | None:
    """The run fingerprint in ``marker`` (a folder's ``run.json``, the record nodeprobe writes for a
    run), or None when it is missing, unreadable or not such a record."""
    try:
        fp = json.loads(marker.read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None
    return fp if isinstance(fp, str) else None


#: what a training run writes in its folder (``--overwrite`` removes these and nothing else);
#: ``track-*`` are ``nodeprobe track``'s default outputs, ``.*.tmp*`` interrupted atomic writes
RUN_ENTRIES = frozenset({"run.json", "log.jsonl", CKPT, "final", "snapshots", "finetune.json", "pretrain.json"})


#: the files a run writes inside its model folders (checkpoint/, final/, snapshots/step-N/): Hugging
#: Face's save_pretrained of the model and tokenizer, and the trainer state
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "model-*-of-*.safetensors",
               "model.safetensors.index.json", "trainer_state.pt", "state.json", "vocab.txt", "vocab.json",
               "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "added_tokens.json", "chat_template.*", "*.model",  # sentencepiece (XLM-R, ALBERT)
               "*.png")  # a report's --plot may go into a model folder


def _ours(name: str) -> bool:
    return name in RUN_ENTRIES or name.startswith("track-") or _temporary(name)


def _temporary(name: str) -> bool:
    return name.startswith(".") and ".tmp" in name  # an interrupted atomic write


def _foreign_inside(entry: Path) -> list[str]:
    """What, inside a run's own folder ``entry``, the run did not write (paths relative to it): model
    folders hold :data:`MODEL_FILES`, ``snapshots/`` holds ``step-N`` model folders, ``track-*``
    holds ``steps/step-N.json``."""
    from fnmatch import fnmatch

    def model_folder(d: Path, allowed=MODEL_FILES) -> list[str]:
        return [q.name + ("/" if q.is_dir() else "") for q in sorted(d.iterdir())
                if not _temporary(q.name) and (q.is_dir() or not any(fnmatch(q.name, a) for a in allowed))]

    if entry.is_symlink() or not entry.is_dir():
        return []
    if entry.name in (CKPT, "final"):
        return model_folder(entry)
    out = []
    if entry.name == "snapshots":
        for q in sorted(entry.iterdir()):
            if _temporary(q.name):
                continue
            if q.is_dir() and not q.is_symlink() and fnmatch(q.name, "step-*"):
                out += [f"{q.name}/{r}" for r in model_folder(q)]
            else:
                out.append(q.name)
    elif entry.name.startswith("track-"):  # its steps, and reports kept beside them (JSON, PNG)
        out += [r for r in model_folder(entry, ("*.json", "*.png")) if r != "steps/"]
        if (entry / "steps").is_dir() and not (entry / "steps").is_symlink():
            out += [f"steps/{r}" for r in model_folder(entry / "steps", ("step-*.json",))]
    return out


def check_out_dir(out_dir: Path, run_fp: str, resume: bool, overwrite: bool, files: bool = True) -> bool:
    """Every refusal of :func:`prepare_out_dir`, touching nothing (run before the folder's lock is
    taken, so a refused command leaves no trace in it) — with ``files``, also the checkpoint a
    ``resume`` will read (:func:`read_checkpoint`); returns whether ``overwrite`` has a previous
    run's entries to clear."""
    out_dir = Path(out_dir)
    marker = out_dir / "run.json"
    if overwrite and out_dir.is_symlink():
        raise NodeprobeError(f"out={out_dir}: is a symbolic link; `overwrite` replaces only a real run folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise NodeprobeError(f"out={out_dir}: is a file; give a folder")
    from nodeprobe.locks import LOCK_NAME, check_not_written

    check_not_written(out_dir, "out")  # a run in progress: say so, not "holds another run"
    if out_dir.is_dir() and not os.access(out_dir, os.W_OK):
        raise NodeprobeError(f"out={out_dir}: not writable")
    if not (out_dir.exists() and any(p.name != LOCK_NAME for p in out_dir.iterdir())):  # our own lock aside
        return False
    fp = _run_fingerprint(marker)
    if fp is None:  # never touch, resume into or delete what nodeprobe did not write
        raise NodeprobeError(f"out={out_dir}: holds files that are not a nodeprobe run (no run.json with a "
                             "fingerprint); choose an empty or new `out`")
    if overwrite:
        foreign = sorted(p.name for p in out_dir.iterdir() if p.name != LOCK_NAME and not _ours(p.name))
        foreign += [f"{p.name}/{q}" for p in sorted(out_dir.iterdir()) if _ours(p.name) for q in _foreign_inside(p)]
        if foreign:  # a run folder, but with files of someone else's in it: never deleted
            shown = ", ".join(foreign[:5]) + (" …" if len(foreign) > 5 else "")
            raise NodeprobeError(f"out={out_dir}: `overwrite` replaces only what a run wrote, and the folder also "
                                 f"holds {shown}; move them away or choose another `out`")
        return True
    if not resume:
        raise NodeprobeError(
            f"out={out_dir}: holds another run; pass `resume` to continue it or `overwrite` to replace it"
        )
    if fp != run_fp:
        raise NodeprobeError(f"out={out_dir}: holds a run with other settings; use the same options or `overwrite`")
    if files:
        read_checkpoint(out_dir, run_fp)
    return False


def prepare_out_dir(out_dir: Path, run_fp: str, resume: bool, overwrite: bool) -> None:
    """Refuse an output directory that holds another run unless ``--resume`` or ``--overwrite``
    (:func:`check_out_dir`), clear a run that ``overwrite`` replaces, and create the folder."""
    out_dir = Path(out_dir)
    from nodeprobe.locks import LOCK_NAME

    if check_out_dir(out_dir, run_fp, resume, overwrite, files=False):  # the files: checked before the lock
        for p in out_dir.iterdir():  # what the run wrote; not the lock this run holds
            if p.name == LOCK_NAME:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NodeprobeError(f"out={out_dir}: cannot create it ({e.strerror})") from None
    if not os.access(out_dir, os.W_OK):
        raise NodeprobeError(f"out={out_dir}: not writable")


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line (flushed) to a log file."""
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()


def set_threads(n: int | None = None) -> None:
    """Use all cores for intra-op parallelism (2 here) and one inter-op thread."""
    n = n or os.cpu_count() or 1
    torch.set_num_threads(n)


def truncate_log(path: Path, step: int) -> None:
    """Drop the lines of the JSONL log ``path`` past ``step`` (the checkpoint a run resumes from:
    they will be produced again) and any torn line; nothing if there is no log yet.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "log.jsonl"
        >>> _ = p.write_text('{"step": 1}\\n{"step": 2}\\n{"ste')
        >>> truncate_log(p, 1); p.read_text()
        '{"step": 1}\\n'
    """
    path = Path(path)
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a torn last line from a kill -9
    write_text_atomic(path, "".join(l + "\n" for l in keep))


# ---------------------------------------------------------------------- a run, start to finish
def open_run_dir(runner, out_dir: Path, run_fp: str, resume: bool, overwrite: bool, record: dict,
                 summary_name: str) -> dict | None:
    """Prepare ``out_dir`` on the main process (the others wait for it; ``runner``:
    :mod:`nodeprobe.train.dist`): refuse another run's folder (:func:`prepare_out_dir`), return the
    summary ``summary_name`` of a completed run when resuming it, else write ``run.json``
    (``record``) and return None.

    The main process first takes ``out_dir``'s lock (:func:`nodeprobe.locks.acquire`: a second run
    writing the same folder refuses) and holds it for the run: it is released by ``runner.close()``
    (which :func:`~nodeprobe.train.pretrain.pretrain` and ``finetune`` call in a ``finally``), at
    the latest when the process exits, and at once when this refuses the folder or the run is done."""
    from nodeprobe.locks import acquire

    def start() -> dict | None:
        finished = resume and (out_dir / summary_name).is_file()  # its checkpoint is not read again
        check_out_dir(out_dir, run_fp, resume, overwrite, files=not finished)  # refusals first: no lock file appears in a refused folder
        lock = acquire(out_dir, "out")
        try:
            prepare_out_dir(out_dir, run_fp, resume, overwrite)
            done = out_dir / summary_name
            if resume and done.is_file():
                lock.release()
                return json.loads(done.read_text())
            text = json.dumps(record, indent=2, default=str)
            marker = out_dir / "run.json"
            if not (marker.is_file() and marker.read_text() == text):  # a resume leaves an equal one as it is
                write_text_atomic(marker, text)
        except BaseException:
            lock.release()
            raise
        close = runner.close

        def close_and_release() -> None:
            try:
                close()
            finally:
                lock.release()

        runner.close = close_and_release
        return None

    return runner.on_main(start)


@dataclass
class Training:
    """A run's training state, as :func:`start_training` builds it.

    ``model`` is the plain view of ``hf`` that evaluates; ``train_model`` the one that trains (under
    Accelerate a second view that ``prepare()`` wraps and, with bf16, patches; else ``model``).
    """

    out_dir: Path
    run_fp: str
    hf: nn.Module
    model: nn.Module
    train_model: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    prog: Progress
    lengths: list[int]  # of the training examples, for the per-epoch batch order
    batch_size: int
    seed: int
    n_batches: int  # per epoch
    total: int  # steps of the whole run

    @property
    def log_path(self) -> Path:
        return self.out_dir / "log.jsonl"

    def checkpoint(self) -> None:
        """:func:`save_checkpoint` of this run's state."""
        save_checkpoint(self.out_dir, self.hf, self.opt, self.sched, self.prog, self.run_fp)


def start_training(runner, out_dir: Path, run_fp: str, hf, model, kind: str, lengths: list[int], settings,
                   seed: int, resume: bool, betas=(0.9, 0.999)) -> Training:
    """Optimizer and schedule over ``settings.epochs`` epochs of ``lengths`` (the examples' lengths)
    in batches of ``settings.batch_size``, the state of the checkpoint when ``resume``, the view
    that trains (see :class:`Training`) and, on the main process, the log cut back to that state."""
    from nodeprobe.data.batching import make_batches
    from nodeprobe.model import HookedBert

    n_batches = len(make_batches(lengths, settings.batch_size, shuffle_seed=0))
    total = n_batches * settings.epochs
    opt = make_optimizer(hf, settings.lr, settings.weight_decay, betas)
    sched = linear_schedule(opt, total, settings.warmup)
    prog = (load_checkpoint(out_dir, hf, opt, sched, run_fp) if resume else None) or Progress()
    train_model, opt = runner.prepare(HookedBert(hf, kind), opt) if runner.accelerated else (model, opt)
    t = Training(out_dir, run_fp, hf, model, train_model, opt, sched, prog, lengths, settings.batch_size, seed,
                 n_batches, total)
    if runner.is_main:
        truncate_log(t.log_path, prog.step)
    return t


@dataclass(frozen=True)
class Step:
    """What :func:`run_steps` tells ``after_step`` of the step just taken (``t.prog`` is past it)."""

    loss: float  # the global mean loss of the step
    tps: float  # tokens per second so far
    epoch: int  # the epoch the step belongs to (0-based)
    end_of_epoch: bool
    now: float  # time.time() after the step


def run_steps(runner, t: Training, desc: str, progress: bool, max_steps: int | None, batch, after_step,
              check=None) -> None:
    """Train ``t`` up to its last step (or ``max_steps``), from where its progress stands.

    Each epoch has its own batch order (seeded by the epoch); ``batch(indices, step)`` returns
    ``(n_rows, n_items, n_tokens, forward)`` of a step's batch (``forward`` as
    :func:`nodeprobe.train.dist.step_loss` takes it); dropout is seeded by the step;
    ``check(step, loss)``, if given, sees the global loss before the update; ``after_step(Step)``
    runs on every process after each step (a command's main-only writes go through ``runner.on_main``).
    """
    from nodeprobe.data.batching import make_batches
    from nodeprobe.progress import training_bar

    prog = t.prog
    t0 = time.time() - prog.seconds
    stop_at = t.total if max_steps is None else min(t.total, max_steps)
    with training_bar(t.total, desc, enabled=progress and runner.is_main) as bar:
        bar.advance(prog.step)
        while prog.step < stop_at:
            epoch = prog.step // t.n_batches
            order = make_batches(t.lengths, t.batch_size, shuffle_seed=step_seed(t.seed, epoch, "order"))
            for bi in range(prog.step - epoch * t.n_batches, t.n_batches):
                if prog.step >= stop_at:
                    break
                n_rows, n_items, n_tokens, forward = batch(order[bi], prog.step)
                torch.manual_seed(step_seed(t.seed, prog.step, runner.salt("dropout")))
                shown = _update(runner, t, n_rows, n_items, forward, check)
                prog.step += 1
                prog.tokens += n_tokens
                now = time.time()
                prog.seconds = now - t0
                tps = prog.tokens / max(prog.seconds, 1e-9)
                bar.update(loss=float(shown.detach()), tps=tps)
                end_of_epoch = prog.step % t.n_batches == 0
                if end_of_epoch:
                    prog.epoch = epoch + 1
                after_step(Step(float(shown.detach()), tps, epoch, end_of_epoch, now))


def _update(runner, t: Training, n_rows: int, n_items: int, forward, check):
    """One optimizer step on the loss of ``forward``; returns the global mean loss."""
    from nodeprobe.train import dist

    loss, shown = dist.step_loss(runner, n_rows, n_items, forward)
    if check is not None:
        check(t.prog.step, shown)
    t.opt.zero_grad(set_to_none=True)
    runner.backward(loss)
    runner.clip(t.hf.parameters(), 1.0)
    t.opt.step()
    t.sched.step()
    return shown


def finish(runner, t: Training, summarize) -> dict:
    """After :func:`run_steps`: a run stopped early (``max_steps``) saves its checkpoint and returns
    where it stopped; a complete one returns ``summarize()``, run on the main process."""
    if t.prog.step < t.total:  # stopped early on purpose (max_steps)
        if runner.is_main:
            t.checkpoint()
        runner.barrier()
        return {"stopped_at": t.prog.step, "total_steps": t.total}
    return runner.on_main(summarize)


def save_model(path: Path, hf_model, tokenizer) -> None:
    """The model (safetensors) and its tokenizer files, in Hugging Face format, atomically at ``path``."""
    with atomic_dir(path) as tmp:
        hf_model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


def log_records(path: Path, key: str) -> list[dict]:
    """The lines of the JSONL log ``path`` that hold ``key``."""
    return [json.loads(l) for l in Path(path).read_text().splitlines() if key in l]


def write_summary(runner, path: Path, summary: dict) -> dict:
    """Write a run's summary (with its number of processes under Accelerate) and return it."""
    if runner.accelerated:
        summary["processes"] = runner.world
    write_text_atomic(path, json.dumps(summary, indent=2))
    return summary
