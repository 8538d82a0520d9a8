"""Machine-readable report output: atomic JSON writes with a schema tag.

Every report command writes ``--json PATH`` through :func:`write_report`: the payload is wrapped as
``{"schema": "nodeprobe.<kind>/1", "settings": {...}, "result": {...}}``, floats are rounded to 6
significant digits, keys are sorted and no timestamps are included — so the same command with
the same seed writes byte-identical files.

Example:
    >>> import tempfile, json, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "r.json"
    >>> _ = write_report(p, "ablate", {"layer": 1}, {"delta": 0.1234567891})
    >>> json.loads(p.read_text())["result"]["delta"]
    0.123457
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np

from nodeprobe.errors import NodeprobeError


def to_jsonable(x):
    """Dataclasses, numpy and torch values → plain JSON types (floats rounded to 6 significant digits)."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        if hasattr(x, "to_dict"):
            return to_jsonable(x.to_dict())
        return to_jsonable(dataclasses.asdict(x))
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset)):
        seq = sorted(x) if isinstance(x, (set, frozenset)) else x
        return [to_jsonable(v) for v in seq]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        f = float(x)
        if math.isnan(f):
            return None
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return float(f"{f:.6g}")
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if hasattr(x, "detach") and hasattr(x, "tolist"):  # torch tensor
        return to_jsonable(x.detach().cpu().tolist())
    if isinstance(x, Path):
        return str(x)
    return x


def dumps(obj) -> str:
    """Deterministic JSON text (sorted keys, 2-space indent, trailing newline)."""
    return json.dumps(to_jsonable(obj), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace`` (nothing half-written)."""
    from nodeprobe.io import write_text_atomic

    path = Path(path)
    try:
        write_text_atomic(path, text)
    except OSError as e:
        raise NodeprobeError(f"json={path}: cannot write there ({e.strerror})") from None
    return path


def write_report(path: str | Path | None, kind: str, settings: dict, result) -> Path | None:
    """Write one report's JSON (``None`` path: nothing)."""
    if path is None:
        return None
    return write_atomic(path, dumps({"schema": f"nodeprobe.{kind}/1", "settings": settings, "result": result}))


def check_writable(path: str | Path | None, flag: str = "json", shown: str | Path | None = None) -> None:
    """Fail early (before any long computation) if ``path`` cannot be written; the error names the
    parameter ``flag`` and ``shown`` (default ``path``: e.g. the folder a file would go into)."""
    if path is None:
        return
    p = Path(path)
    said = Path(shown) if shown is not None else p
    parent = p.parent if str(p.parent) else Path(".")
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if p.is_dir():
        raise NodeprobeError(f"{flag}={said}: is a directory; give a file path")
    if p.exists() and not p.is_file():  # /dev/null, a pipe: the atomic rename would replace the device itself
        raise NodeprobeError(f"{flag}={said}: is not a regular file (a device, pipe or socket); give a file path")
    if not probe.is_dir():
        raise NodeprobeError(f"{flag}={said}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK):
        raise NodeprobeError(f"{flag}={said}: {probe} is not writable")
