"""Where ``nodeprobe reproduce`` left its models: the newest one under ``runs/`` that fits a task.

``reproduce --preset P`` writes ``runs/P/pretrain/final`` (the pre-trained masked LM),
``runs/P/finetune/final`` (the FewRel classifier) and ``runs/P/finetune_minilm/final``; a model
folder counts once its ``config.json`` is there (folders are written atomically).  Newest = the
latest modification time of the ``final/`` folder (ties: the path, so the answer is stable).

Example:
    >>> latest_model("fewrel", "no/such/runs") is None
    True
    >>> stage_of("mlm"), stage_of(None), stage_of("fewrel"), stage_of("dbpedia")
    ('pretrain', 'pretrain', 'finetune', None)
"""

from __future__ import annotations

import os
from pathlib import Path

from nodeprobe.errors import NodeprobeError

#: the reproduce stage whose model fits a task (``None``: whatever head, the pre-trained MLM)
STAGE_OF_TASK = {None: "pretrain", "mlm": "pretrain", "fewrel": "finetune", "dbpedia": None, "dataset": None}


def stage_of(task: str | None) -> str | None:
    """The ``reproduce`` stage (run folder name) whose model fits ``task``; ``None`` if reproduce
    trains none (``dbpedia``, ``dataset``: your own table).

    Example:
        >>> stage_of("fewrel")
        'finetune'
    """
    if task not in STAGE_OF_TASK:
        allowed = ", ".join(t for t in STAGE_OF_TASK if t is not None)
        raise NodeprobeError(f"task={task}: expected one of {allowed}")
    return STAGE_OF_TASK[task]


def reproduce_models(task: str | None, runs_dir: str | os.PathLike = "runs") -> list[Path]:
    """Every finished ``runs_dir/<preset>/<stage>/final`` that fits ``task``, newest first.

    Example:
        >>> reproduce_models("mlm", "no/such/runs")
        []
    """
    stage = stage_of(task)
    root = Path(runs_dir)
    if stage is None or not root.is_dir():
        return []
    found = [d for d in root.glob(f"*/{stage}/final") if (d / "config.json").is_file()]
    return sorted(found, key=lambda d: (d.stat().st_mtime, str(d)), reverse=True)


def latest_model(task: str | None, runs_dir: str | os.PathLike = "runs") -> Path | None:
    """The newest ``reproduce`` model under ``runs_dir`` that fits ``task`` (``mlm`` or ``None`` →
    the pre-trained MLM, ``fewrel`` → the fine-tuned classifier), or ``None`` when there is none.

    Example:
        >>> latest_model("fewrel")                      # doctest: +SKIP
        PosixPath('runs/smoke/finetune/final')
    """
    models = reproduce_models(task, runs_dir)
    return models[0] if models else None
