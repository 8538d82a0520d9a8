"""Accuracy along blocks (METHODS §2 "along blocks"): logit lens and seeded linear probes on the
cached residual stream at every stage b = 0 … L (0 = embeddings, b = output of block b−1).

Lens and probe predictions are saved in the cache's ``derived/`` folder and reused (the APT
report reads the same ones).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from nodeprobe.errors import NodeprobeError
from nodeprobe.studies.lens import ProbeSettings, lens_predictions, probe_predictions, probe_split


def stage_name(stage: int) -> str:
    """``0`` → ``embeddings``; ``b`` → ``block b−1``."""
    return "embeddings" if stage == 0 else f"block {stage - 1}"


def stage_lens_predictions(cache, model, stage: int) -> torch.Tensor:
    """``[N]`` logit-lens predictions at a stage (cached under ``derived/lens-S{b}``)."""
    cache.check_site("resid")

    def compute():
        if model is None:
            raise NodeprobeError("the logit lens needs the model (its readout path)")
        return {"preds": lens_predictions(model, cache.resid(stage))}

    return cache.derived(f"lens-S{stage}", compute)["preds"]


def _probe_key(p: ProbeSettings) -> str:
    return hashlib.sha256(json.dumps(asdict(p), sort_keys=True).encode()).hexdigest()[:10]


def stage_probe_predictions(cache, stage: int, probe: ProbeSettings, device="cpu") -> tuple[np.ndarray, torch.Tensor]:
    """``(test_idx, preds)`` of a seeded linear probe trained on the stage's residual."""
    cache.check_site("resid")
    tr, te = probe_split(cache.n_items, probe)

    def compute():
        y = cache.targets()
        return {"preds": probe_predictions(cache.resid(stage), y, tr, te, probe, device)}

    return te, cache.derived(f"probe-S{stage}-{_probe_key(probe)}", compute)["preds"]


@dataclass
class BlockRow:
    stage: int
    name: str
    lens_accuracy: float
    probe_accuracy: float | None
    n_probe_test: int


@dataclass
class BlocksReport:
    """Accuracy of the logit lens (all items) and of a probe (its held-out part) at every stage."""

    task: str
    n_items: int
    n_classes: int
    baseline_accuracy: float
    rows: list[BlockRow]
    probe: dict | None
    settings: dict = field(default_factory=dict)


def blocks_report(cache, model, *, probe: ProbeSettings | None = None, device="cpu",
                  progress: bool = False) -> BlocksReport:
    """Classification (or MLM) accuracy along blocks: logit lens, and a probe when ``probe`` is given."""
    from nodeprobe.progress import iterate

    cache.check_site("resid")
    y = cache.targets()
    if y.numel() == 0:
        raise NodeprobeError(f"cache {cache.path}: no items")
    rows = []
    for s in iterate(range(cache.n_layers + 1), cache.n_layers + 1, "blocks", enabled=progress):
        lp = stage_lens_predictions(cache, model, s)
        pa, nt = None, 0
        if probe is not None:
            te, pp = stage_probe_predictions(cache, s, probe, device)
            pa, nt = float((pp == y[torch.as_tensor(te)]).double().mean()), int(te.size)
        rows.append(BlockRow(s, stage_name(s), float((lp == y).double().mean()), pa, nt))
    return BlocksReport(
        task=cache.task, n_items=int(y.numel()), n_classes=cache.n_classes,
        baseline_accuracy=float(cache.manifest.get("accuracy") or 0.0), rows=rows,
        probe=asdict(probe) if probe is not None else None,
        settings={"cache": str(cache.path), "model_fingerprint": cache.model_fingerprint,
                  "eval_fingerprint": cache.eval_fingerprint, "source": cache.manifest["source"]},
    )
