"""Numeric precision of training and evaluation: ``fp32`` or ``bf16`` autocast.

Example:
    >>> import torch
    >>> check_precision("bf16")
    'bf16'
    >>> with autocast(torch.device("cpu"), "fp32"):
    ...     y = torch.ones(2) * 2
"""

from __future__ import annotations

import contextlib

import torch

from nodeprobe.errors import NodeprobeError

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a one-line :class:`NodeprobeError`.

    Example:
        >>> check_precision("fp16")
        Traceback (most recent call last):
        ...
        nodeprobe.errors.NodeprobeError: precision=fp16: expected fp32 or bf16
    """
    if precision not in PRECISIONS:
        raise NodeprobeError(f"precision={precision}: expected fp32 or bf16")
    return precision


def autocast(device: torch.device | str, precision: str):
    """The autocast context of ``precision`` on ``device``: bf16 autocast, or nothing for fp32.

    Example:
        >>> with autocast(torch.device("cpu"), "bf16"):
        ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
        torch.bfloat16
    """
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
