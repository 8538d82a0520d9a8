"""Data parallelism for ``pretrain`` and ``finetune`` under ``accelerate launch`` (or ``torchrun``).

The same command runs in every process.  Each process builds the same deterministic global batch
of a step (same order, same MLM masks) and trains on its rows ``rank, rank + N, rank + 2N, …``; the
per-process losses are scaled so that the averaged (all-reduced) gradient is the gradient of the
single-process loss on the whole batch.  The model and optimizer go through
``accelerate.Accelerator.prepare`` (DistributedDataParallel when ``N > 1``); the learning-rate
schedule does not (Accelerate would step it ``N`` times per step: ours counts global steps).
Only the main process writes (run.json, logs, checkpoints, snapshots, the final model, the
summary); the others wait for it and receive its result.

When the Accelerate path is taken (:func:`use_accelerate`):

* ``NODEPROBE_ACCELERATE=1`` forces it, ``NODEPROBE_ACCELERATE=0`` turns it off (one process only);
* otherwise it is taken when the environment comes from ``accelerate launch`` (which always sets
  ``ACCELERATE_MIXED_PRECISION``) or from any launcher of several processes (``WORLD_SIZE`` > 1,
  e.g. ``torchrun``).

Accelerate is optional (``pip install 'nodeprobe[multi-gpu]'``) and imported only on that path.
With one process the Accelerate path computes exactly what the plain loop computes.

Example:
    >>> use_accelerate({"WORLD_SIZE": "1"}), use_accelerate({"ACCELERATE_MIXED_PRECISION": "no"})
    (False, True)
"""

from __future__ import annotations

import atexit
import os

import torch

from nodeprobe.errors import NodeprobeError

ENV_FLAG = "NODEPROBE_ACCELERATE"
INSTALL_HINT = "pip install 'nodeprobe[multi-gpu]' (or pip install accelerate)"


def _world_size(env) -> int:
    try:
        return int(env.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        return 1


def use_accelerate(env=None) -> bool:
    """Whether this process should train through ``accelerate.Accelerator`` (see the module doc)."""
    env = os.environ if env is None else env
    flag = env.get(ENV_FLAG, "").strip().lower()
    world = _world_size(env)
    if flag in ("0", "false", "no", "off"):
        if world > 1:
            raise NodeprobeError(f"{ENV_FLAG}={flag} with WORLD_SIZE={world}: several processes need the "
                                 "Accelerate path (unset it)")
        return False
    if flag in ("1", "true", "yes", "on"):
        return True
    if flag:
        raise NodeprobeError(f"{ENV_FLAG}={flag}: expected 0 or 1")
    return "ACCELERATE_MIXED_PRECISION" in env or world > 1


def is_main_process() -> bool:
    """True except in the non-zero ranks of a multi-process launch (they print and write nothing);
    a stray ``RANK`` in a plain single-process run does not count."""
    try:
        if not use_accelerate():
            return True
    except NodeprobeError:  # a contradictory launch environment: start() reports it
        return True
    try:
        return int(os.environ.get("RANK", "0") or 0) == 0
    except ValueError:
        return True


def start(device: torch.device, precision: str):
    """The runner of this process: :class:`Plain`, or :class:`Accelerated` under a launcher."""
    if not use_accelerate():
        return Plain(device)
    import importlib.util

    if importlib.util.find_spec("accelerate") is None:
        env = os.environ
        why = (f"{ENV_FLAG}=1" if env.get(ENV_FLAG, "").strip() else
               f"WORLD_SIZE={_world_size(env)}" if _world_size(env) > 1 else "ACCELERATE_MIXED_PRECISION is set")
        raise NodeprobeError(f"launched for Accelerate ({why}) but accelerate is not installed: {INSTALL_HINT}")
    return Accelerated(device, precision)


def shard_rows(n: int, rank: int, world: int) -> tuple[list[int], float]:
    """Rows ``rank::world`` of a batch of ``n`` and their loss weight.

    A process left without a row (``n < world``) runs row 0 with weight 0: it still joins the
    gradient all-reduce but adds nothing to it.

    Example:
        >>> shard_rows(5, 1, 2), shard_rows(1, 1, 2)
        (([1, 3], 1.0), ([0], 0.0))
    """
    rows = list(range(rank, n, world))
    return (rows, 1.0) if rows else ([0], 0.0)


def step_loss(runner, n_rows: int, n_items: int, forward):
    """This process's loss for one training step, and the global mean loss (logs, divergence check).

    ``forward(rows)`` runs the model on those rows of the step's batch (``None``: all of them) and
    returns ``(logits [n, K], targets [n])`` of their scored items.  One process: the mean
    cross-entropy, exactly as a plain loop computes it.  Several: rows ``rank::world``
    (:func:`shard_rows`), the summed loss scaled by ``world / n_items`` so that the averaged
    gradient is the gradient of the whole batch's mean.
    """
    import torch.nn.functional as F

    if runner.world == 1:
        logits, targets = forward(None)
        loss = F.cross_entropy(logits.float(), targets)
        return loss, loss
    rows, weight = shard_rows(n_rows, runner.rank, runner.world)
    logits, targets = forward(torch.tensor(rows))
    loss = F.cross_entropy(logits.float(), targets, reduction="sum") * (weight * runner.world / max(n_items, 1))
    return loss, runner.mean(loss.detach())


class Plain:
    """One process, no Accelerate: the operations of the original single-process loop."""

    world, rank, is_main, accelerated = 1, 0, True, False

    def __init__(self, device: torch.device):
        self.device = device

    def salt(self, name: str) -> str:
        return name

    def prepare(self, model, optimizer):
        return model, optimizer

    def backward(self, loss) -> None:
        loss.backward()

    def clip(self, parameters, max_norm: float) -> None:
        torch.nn.utils.clip_grad_norm_(parameters, max_norm)

    def mean(self, t):
        return t

    def on_main(self, fn):
        return fn()

    def barrier(self) -> None:
        pass

    def close(self) -> None:
        pass


class Accelerated(Plain):
    """One process of an Accelerate launch (``world`` processes in all)."""

    accelerated = True

    def __init__(self, device: torch.device, precision: str):
        from accelerate import Accelerator

        try:
            self.acc = Accelerator(cpu=device.type == "cpu", mixed_precision="bf16" if precision == "bf16" else "no")
        except (ValueError, RuntimeError) as e:
            raise NodeprobeError(f"accelerate: {' '.join(str(e).split())}") from None
        self.device = self.acc.device
        self.world = self.acc.num_processes
        self.rank = self.acc.process_index
        self.is_main = self.acc.is_main_process
        if self.world > 1:
            atexit.register(_destroy_process_group)

    def salt(self, name: str) -> str:
        """Per-process randomness (dropout) differs between ranks; rank 0 draws as a single process."""
        return name if self.rank == 0 else f"{name}:{self.rank}"

    def prepare(self, model, optimizer):
        return self.acc.prepare(model, optimizer)

    def backward(self, loss) -> None:
        self.acc.backward(loss)

    def clip(self, parameters, max_norm: float) -> None:
        self.acc.clip_grad_norm_(parameters, max_norm)

    def mean(self, t):
        return t if self.world == 1 else self.acc.reduce(t, reduction="mean")

    def on_main(self, fn):
        """Run ``fn`` on the main process only; every process returns its result or raises its error."""
        if self.world == 1:
            return fn()
        from accelerate.utils import broadcast_object_list

        box, err = [None], None
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except NodeprobeError as e:
                box[0], err = ("error", e.message), e
            except BaseException as e:
                box[0], err = ("error", f"the main process failed ({type(e).__name__}); see its output"), e
        broadcast_object_list(box, from_process=0)
        if err is not None:
            raise err
        kind, value = box[0]
        if kind == "error":
            raise NodeprobeError(value)
        return value

    def barrier(self) -> None:
        self.acc.wait_for_everyone()

    def close(self) -> None:
        """Forget the Accelerator's settings (a later run in this process may use another precision);
        the process group, if any, stays up until exit."""
        try:
            from accelerate.state import AcceleratorState

            AcceleratorState._reset_state(reset_partial_state=False)
        except Exception:  # pragma: no cover - a private API of Accelerate
            pass


def _destroy_process_group() -> None:
    """At exit: wait for every rank, then tear the group down together (a rank that leaves while a
    peer still uses the group can make gloo abort the process: "terminate called without an
    active exception")."""
    try:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
    except Exception:  # pragma: no cover - best effort at exit
        pass
