"""Evaluation sets by task name: ``mlm`` (held-out Wikipedia, fixed masks), ``fewrel``, ``dbpedia``,
``dataset`` (your own labelled table: ``data`` is a :class:`~nodeprobe.data.user.UserData`).

One place maps a ``--task`` and ``--data`` (or ``--dataset``) to the items every command evaluates,
so that ``ablate``, ``cache``, ``finetune`` and the reports all see the same split.

Example:
    >>> train, test = classification_splits("fewrel", "../shared/data", tok)   # doctest: +SKIP
    >>> len(train), len(test)                                                   # doctest: +SKIP
    (10080, 1120)
"""

from __future__ import annotations

from pathlib import Path

from nodeprobe.errors import NodeprobeError

TASKS = ("mlm", "fewrel", "dbpedia", "dataset")
#: the classification tasks (a ``cls`` head); ``mlm`` is the only other one
CLASSIFICATION_TASKS = ("fewrel", "dbpedia", "dataset")


def check_task(task: str) -> str:
    """Validate ``--task``."""
    if task not in TASKS:
        raise NodeprobeError(f"task={task}: expected one of {', '.join(TASKS)}")
    return task


def data_root(data: str | Path | None) -> Path:
    """The data folder: ``--data``, else ``$NODEPROBE_DATA``, else ``../shared/data`` beside the repo."""
    from nodeprobe.data.download import resolve_data_dir

    return Path(resolve_data_dir(data))


def fewrel_file(data: str | Path | None) -> Path:
    """The FewRel JSON: ``--data`` may be the file itself, a ``fewrel/`` folder or the data root."""
    p = Path(data) if data is not None else data_root(None)
    if p.is_file():
        return p
    for cand in (p / "val_wiki.json", p / "fewrel" / "val_wiki.json"):
        if cand.is_file():
            return cand
    raise NodeprobeError(f"data={p}: no FewRel file (expected fewrel/val_wiki.json or a FewRel JSON file)")


def user_data(data):
    """``data`` of task ``dataset`` as a :class:`~nodeprobe.data.user.UserData` (a path alone: the
    default columns)."""
    from nodeprobe.data.user import UserData

    if isinstance(data, UserData):
        return data
    if data is None:
        raise NodeprobeError("task=dataset: needs `dataset` (your own table: a UserData or a path)")
    return UserData(data)


def classification_splits(task: str, data, tokenizer, n_train: int = 630,
                          n_test: int = 70, max_len: int = 128, markers: bool = True,
                          max_per_class: int | None = None):
    """``(train, test)`` LabeledSets for ``fewrel`` (``n_train``/``n_test`` per relation), ``dbpedia``
    (val.csv → train, test.csv → test, optionally capped at ``max_per_class``) or ``dataset``
    (``data`` a :class:`~nodeprobe.data.user.UserData`: :meth:`~nodeprobe.data.user.UserData.splits`,
    its test share drawn with its own ``split_seed``)."""
    check_task(task)
    if task == "dataset":
        return user_data(data).splits(tokenizer, max_len=max_len)
    if task == "fewrel":
        from nodeprobe.data.fewrel import load_fewrel

        return load_fewrel(fewrel_file(data), tokenizer, n_train=n_train, n_test=n_test,
                           markers=markers, max_len=max_len)
    if task == "dbpedia":
        from nodeprobe.data.dbpedia import load_dbpedia_splits

        root = Path(data) if data is not None else data_root(None)
        return load_dbpedia_splits(root, tokenizer, max_len=max_len, max_per_class=max_per_class)
    raise NodeprobeError("task=mlm has no classification split")
