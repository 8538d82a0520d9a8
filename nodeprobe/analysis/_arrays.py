"""Input coercion shared by the analysis modules (private).

Every public analysis function accepts torch tensors or numpy arrays.  These helpers turn them into
numpy arrays of a known dtype and shape, raising :class:`NodeprobeError` with a one-line message for
anything a user can get wrong (shape, dtype, range, non-finite values).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from nodeprobe.errors import NodeprobeError


def to_numpy(a: Any) -> np.ndarray:
    """A torch tensor (any device) or array-like as a numpy array (no copy when possible)."""
    if isinstance(a, torch.Tensor):
        a = a.detach()
        if a.dtype == torch.bfloat16 or a.dtype == torch.float16:
            a = a.float()
        return a.cpu().numpy()
    return np.asarray(a)


def labels(a: Any, name: str, K: int, ndim: int = 1) -> np.ndarray:
    """Integer class ids in ``[0, K)`` as an int64 array with ``ndim`` dimensions."""
    arr = to_numpy(a)
    if arr.ndim != ndim:
        raise NodeprobeError(f"{name}: expected a {ndim}-d array of class ids, got shape {tuple(arr.shape)}")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise NodeprobeError(f"{name}: expected integer class ids, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= K):
        raise NodeprobeError(f"{name}: class ids must lie in [0, {K}), got range [{arr.min()}, {arr.max()}]")
    return arr


def check_K(K: Any) -> int:
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
        raise NodeprobeError(f"K={K!r}: the number of classes must be a positive integer")
    return int(K)


def float_array(a: Any, name: str, ndim: int, dtype: np.dtype | None = None) -> np.ndarray:
    """A finite floating array with ``ndim`` dims (integer input is converted to float32)."""
    arr = to_numpy(a)
    if arr.ndim != ndim:
        raise NodeprobeError(f"{name}: expected {ndim} dimensions, got shape {tuple(arr.shape)}")
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    elif arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise NodeprobeError(f"{name}: contains NaN or infinite values")
    return arr


def ref_dtype(*arrays: Any) -> np.dtype:
    """The dtype of the dense reference arithmetic: float64 if any input is float64, else float32."""
    for a in arrays:
        if a is None:
            continue
        if isinstance(a, torch.Tensor):
            if a.dtype == torch.float64:
                return np.dtype(np.float64)
        elif np.asarray(a).dtype == np.float64:
            return np.dtype(np.float64)
    return np.dtype(np.float32)
