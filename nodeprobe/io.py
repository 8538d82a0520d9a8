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

_ST_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I16": 2, "U16": 2,
                   "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "C64": 8, "I64": 8, "U64": 8, "F64": 8}
_ST_MAX_HEADER = 100_000_000  # the safetensors library's own limit on the JSON header


def safetensors_header(path: str | os.PathLike) -> tuple[dict | None, str | None]:
    """``(header, None)`` of a whole ``.safetensors`` file, or ``(None, what is wrong)`` — checked
    against the file's size without reading past the header: truncated, an implausible or non-JSON
    header, tensors whose byte ranges or sizes do not add up.  The one check of every safetensors
    file nodeprobe reads (model weights, cache shards); the caller words the error.

    Example:
        >>> safetensors_header("/no/such.safetensors")[1]
        'unreadable (No such file or directory)'
    """
    import json

    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return None, f"truncated: {size} bytes, less than the 8-byte header length a safetensors file starts with"
            n = int.from_bytes(head, "little")
            if n > _ST_MAX_HEADER:
                return None, f"not a safetensors file (header length {n} bytes is implausible)"
            if 8 + n > size:
                return None, f"truncated: header says {n} bytes, file has {size - 8} after the 8-byte length"
            raw = f.read(n)
    except OSError as e:
        return None, f"unreadable ({e.strerror or type(e).__name__})"
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        return None, f"corrupt safetensors header (not JSON: {' '.join(str(e).split())[:80]})"
    if not isinstance(header, dict):
        return None, "corrupt safetensors header (expected a JSON object)"
    data_len, end = size - 8 - n, 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        ok = (isinstance(info, dict) and isinstance(info.get("dtype"), str) and isinstance(info.get("shape"), list)
              and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in info["shape"])
              and isinstance(info.get("data_offsets"), list) and len(info["data_offsets"]) == 2
              and all(isinstance(x, int) and not isinstance(x, bool) for x in info["data_offsets"])
              and 0 <= info["data_offsets"][0] <= info["data_offsets"][1])
        if not ok:
            return None, f"corrupt safetensors header (tensor {name!r}: expected dtype, shape and data_offsets [begin, end])"
        b, e = info["data_offsets"]
        if e > data_len:
            return None, f"truncated: tensor {name} ends at byte {e} of the data, the file holds {data_len}"
        need = _ST_DTYPE_BYTES.get(info["dtype"])
        if need is not None:
            for x in info["shape"]:
                need *= x
            if e - b != need:
                return None, (f"corrupt: tensor {name} {info['dtype']}{list(info['shape'])} needs {need} bytes, "
                              f"the header gives it {e - b}")
        end = max(end, e)
    if end != data_len:
        return None, f"corrupt: the tensors cover {end} bytes of data, the file holds {data_len}"
    return header, None
