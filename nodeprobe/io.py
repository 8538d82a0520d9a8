"""Atomic writes: every file and folder nodeprobe writes appears whole or not at all.

A write goes to a hidden temporary sibling (``.NAME.tmpPID``), is flushed to disk and then
``os.replace``-d over the target, so an interrupted run (Ctrl-C, kill -9, a full disk) never leaves
a half-written JSON, shard or checkpoint behind.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> write_text_atomic(d / "a" / "x.json", "{}\\n").read_text()
    '{}\\n'
    >>> with atomic_dir(d / "run") as tmp:
    ...     _ = (tmp / "weights").write_text("w")
    >>> sorted(p.name for p in (d / "run").iterdir())
    ['weights']
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def _tmp_of(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` (parents created) through a flushed temporary file; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_of(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def save_safetensors_atomic(tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Save ``{name: Tensor}`` as a safetensors file atomically (tensors made contiguous); returns ``path``."""
    from safetensors.torch import save

    return write_bytes_atomic(path, save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata))


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``final`` only when the block succeeds."""
    final_p = Path(final)
    tmp = _tmp_of(final_p)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final_p.with_name(f".{final_p.name}.old{os.getpid()}")
    if final_p.exists():
        os.replace(final_p, old)
    os.replace(tmp, final_p)
    shutil.rmtree(old, ignore_errors=True)


def _real(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve(strict=False)


def check_disjoint(outputs: dict[str, str | os.PathLike | None], inputs: dict[str, str | os.PathLike | None],
                   role: str = "input", adds_files: tuple[str, ...] = ()) -> None:
    """Refuse an output that is, contains, or sits inside an input (an output never overwrites an
    input).  Keys name the parameters (``out``, ``--json`` …) as the caller says them; ``None``
    values are skipped; symlinks and ``..`` are resolved first.  ``role="output"`` checks two sets of
    outputs against each other (a report's ``--json`` inside the ``--cache`` it writes).  Outputs
    named in ``adds_files`` (a ``--plot`` folder: it only adds PNGs) may contain an input.

    Example:
        >>> check_disjoint({"json": "run/final/config.json"}, {"model": "run/final"})
        Traceback (most recent call last):
        ...
        nodeprobe.errors.NodeprobeError: json=run/final/config.json: is inside the input model=run/final; an output never overwrites an input (choose another path)
        >>> check_disjoint({"out": "runs/ft"}, {"model": "runs/pt/final"})
        >>> check_disjoint({"--plot": "."}, {"--model": "runs/pt/final"}, adds_files=("--plot",))
        >>> check_disjoint({"--out": "."}, {"--model": "runs/pt/final"})
        Traceback (most recent call last):
        ...
        nodeprobe.errors.NodeprobeError: --out .: contains the input --model runs/pt/final; an output never overwrites an input (choose another path)
    """
    from nodeprobe.errors import NodeprobeError

    ins = [(k, v, _real(v)) for k, v in inputs.items() if v is not None]
    for name, out in outputs.items():
        if out is None:
            continue
        o = _real(out)
        for iname, given, i in ins:
            how = ("is" if o == i else "is inside" if i in o.parents
                   else "contains" if o in i.parents and name not in adds_files else None)
            if how:
                sep = " " if name.startswith("-") else "="
                isep = " " if iname.startswith("-") else "="
                why = ("an output never overwrites an input" if role == "input"
                       else "outputs must not overlap")
                raise NodeprobeError(f"{name}{sep}{out}: {how} the {role} {iname}{isep}{given}; {why} "
                                     "(choose another path)")
