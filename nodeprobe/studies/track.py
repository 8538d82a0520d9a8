"""Order parameters over training: evaluate every snapshot of a run on one fixed evaluation set.

At each step (a ``snapshots/step-N/`` directory of a pre-training run, or a model directory) the
model is run once over the evaluation set and we record

* ``accuracy``/``loss``, and for MLM ⟨APT⟩ (METHODS §4, tokens with ≥ 5 modified occurrences);
* **readout nodes**: every single node's predictions at ``readout`` (METHODS §2 isolation, zero or
  mean fill, exact via the upper envelope: :func:`~nodeprobe.analysis.readout.node_predictions`),
  their learned sets (:func:`~nodeprobe.analysis.confusion.unit_stats_many`, τ_r = 0.5, τ_ℓ = 2,
  n_min = 5) and the family order parameters (:mod:`nodeprobe.analysis.order_parameters`);
* **heads** (optional): every head *isolated* at the ``z`` site (all other heads of its block
  ablated, METHODS §2), the rest of the network unchanged; the sweep
  (:func:`nodeprobe.studies.ablation.head_sweep_logits`) never reruns the blocks below nor the attention
  of the hooked block (METHODS §7).  Same learned-set order parameters, heads of a block as one
  family.

The random-init baseline is step 0 (pre-training writes ``snapshots/step-0000000``).  A list of
model directories without a step 0 (e.g. a fine-tuning run) gets a seeded random-init model of the
same architecture as step 0 unless ``random_init=False`` (then the earliest step is the baseline and
no breaking step is computed).  The breaking rule is :func:`~nodeprobe.analysis.order_parameters.symmetry_breaking`.

**Resumable.**  With ``out_dir``, each step's raw results (learned sets, accuracies) are written
atomically to ``out_dir/steps/step-NNNNNNN.json`` as soon as the step is done, keyed by the
evaluation set, the model files and the settings that change them; a re-run reuses every step
whose key matches and computes only the rest.  Summaries (Jaccard convention, margins) are
recomputed from the stored sets, so changing those never reruns a model.

Example:
    >>> es = track_eval_set("mlm", tok, "../shared/data", max_items=2000, run_dir="runs/cpu/pretrain")  # doctest: +SKIP
    >>> rep = track(["runs/cpu/pretrain"], es, out_dir="runs/cpu/pretrain/track-mlm")  # doctest: +SKIP
    >>> rep.breaking, [s.nodes.mean_jaccard for s in rep.steps]                          # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nodeprobe.analysis.order_parameters import FamilyParams, family_params, head_family_params, symmetry_breaking
from nodeprobe.data.eval_sets import batch_types
from nodeprobe.errors import NodeprobeError, reason
from nodeprobe.hooks import check_mode
from nodeprobe.data.eval_sets import EvalSet, load_eval_set, mlm_batch, mlm_eval_set

RECORD_VERSION = 1  # of the per-step records in <out_dir>/steps/ (their JSON field "version")
_STEP_RE = re.compile(r"(?:step|epoch|checkpoint)[-_]?(\d+)$")


# ---------------------------------------------------------------------------- checkpoints
@dataclass(frozen=True)
class Checkpoint:
    """One point of the track: ``path`` None means a seeded random init of ``config_from``."""

    step: int
    path: Path | None
    label: str
    config_from: Path | None = None
    seed: int = 0


def _is_model_dir(p: Path) -> bool:
    return (p / "config.json").is_file()


def _dir_step(p: Path) -> int | None:
    st = p / "state.json"
    if st.is_file():
        try:
            return int(json.loads(st.read_text())["step"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    m = _STEP_RE.search(p.name)
    if m:
        return int(m.group(1))
    if p.name == "final":
        for f in ("pretrain.json", "finetune.json"):
            try:
                return int(json.loads((p.parent / f).read_text())["steps"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return None


def find_checkpoints(sources: str | os.PathLike | Sequence[str | os.PathLike], *, random_init: bool = True,
                     seed: int = 0) -> list[Checkpoint]:
    """Checkpoints of ``sources``, sorted by step.

    Each source is a run directory with ``snapshots/step-N/`` (all of them), a run directory
    without snapshots (its ``final/``, e.g. a fine-tuning run), or a model directory whose step is
    read from its ``state.json`` (a training ``checkpoint/``), its name (``step-120``,
    ``epoch-3``) or, for ``final/``, the run's ``pretrain.json``/``finetune.json``.
    Without a step 0, ``random_init`` adds a seeded random init of the first checkpoint's
    architecture at step 0.

    A model folder under ``snapshots/`` named ``step-…`` but not ``step-<integer>`` (``step-best``,
    ``step-10-copy``) is an error naming it rather than skipped: it was put there as a snapshot, and
    a silently missing step would shift the breaking step.  Other folders there (no ``step-`` prefix,
    no ``config.json``, nodeprobe's own ``.step-….tmp`` folders) are not snapshots and are ignored.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    out: list[Checkpoint] = []
    for src in sources:
        p = Path(src).expanduser()
        snaps = sorted(q for q in (p / "snapshots").glob("step-*") if q.is_dir() and _is_model_dir(q)) \
            if (p / "snapshots").is_dir() else []
        for q in snaps:  # a model folder named step-… must say its step (step-best, step-10-copy: refused)
            if not re.fullmatch(r"step-\d+", q.name):
                raise NodeprobeError(f"run={p}: snapshot folder {q}: name is not step-<integer> (e.g. step-0000120); "
                                     "rename it to its training step or move it out of snapshots/")
        if snaps:
            for q in snaps:
                out.append(Checkpoint(int(q.name.split("-")[1]), q, q.name))
        elif _is_model_dir(p) or (p.is_dir() and _is_model_dir(p / "final")):
            if not _is_model_dir(p):  # a run without snapshots (fine-tuning): its final model
                p = p / "final"
            s = _dir_step(p)
            if s is None:
                raise NodeprobeError(f"run={p}: cannot tell the training step of this model directory "
                                     "(no state.json, no step-N name, no run summary)")
            out.append(Checkpoint(s, p, f"{p.parent.name}/{p.name}"))
        elif p.is_dir():
            raise NodeprobeError(f"run={p}: neither a run directory with snapshots/step-N nor a model directory")
        else:
            raise NodeprobeError(f"run={p}: no such directory")
    steps = [c.step for c in out]
    dup = sorted({s for s in steps if steps.count(s) > 1})
    if dup:
        raise NodeprobeError(f"`run`: two checkpoints at step {dup[0]}; give each step once")
    out.sort(key=lambda c: c.step)
    if random_init and out and out[0].step != 0:
        out.insert(0, Checkpoint(0, None, f"random init (seed {seed})", config_from=out[0].path, seed=seed))
    return out


def load_checkpoint_model(ck: Checkpoint, kind: str, device: str = "cpu"):
    """The :class:`~nodeprobe.model.HookedBert` of a checkpoint (``kind``: ``mlm`` or ``cls``)."""
    from nodeprobe.model import hf_class, load_model

    if ck.path is not None:
        return load_model(ck.path, kind=kind, device=device)
    import transformers

    try:
        cfg = transformers.AutoConfig.from_pretrained(ck.config_from)
    except Exception as e:
        raise NodeprobeError(f"run={ck.config_from}: unreadable config.json ({reason(e)})") from None
    from nodeprobe.model.families import family_of_type

    fam = family_of_type(cfg.model_type, f"run={ck.config_from}")
    torch.manual_seed(ck.seed)
    hf = hf_class(kind, fam.name)(cfg).eval()
    return load_model(hf, kind=kind, device=device)


def _weights_identity(ck: Checkpoint) -> dict:
    if ck.path is None:
        cfg = json.loads((Path(ck.config_from) / "config.json").read_text())
        cfg.pop("architectures", None)
        return {"random_init": ck.seed, "config": {k: cfg[k] for k in sorted(cfg) if not k.startswith("_")}}
    files = sorted(Path(ck.path).glob("*.safetensors")) or sorted(Path(ck.path).glob("pytorch_model*.bin"))
    return {"path": str(Path(ck.path).resolve()),
            "files": [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]}


# ---------------------------------------------------------------------------- evaluation sets
def _count_items(seq, tokenizer, seed: int) -> int:
    return int(mlm_batch([seq], tokenizer, seed=seed)[3].numel())


def mlm_eval_set_from_sequences(sequences, tokenizer, *, seed: int = 0, batch_size: int = 64,
                                max_items: int | None = None, source: str = "sequences") -> EvalSet:
    """An MLM evaluation set with fixed masks (a function of each sequence and ``seed``).

    With ``max_items``: whole sequences in their given order while the number of modified
    positions stays ≤ ``max_items`` (at least one sequence).
    """
    seqs = [list(map(int, s)) for s in sequences if len(s)]
    if max_items is not None:
        if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
            raise NodeprobeError(f"max_items={max_items}: expected a positive integer")
        keep, n = [], 0
        for s in seqs:
            c = _count_items(s, tokenizer, seed)
            if keep and n + c > max_items:
                break
            keep.append(s)
            n += c
        seqs = keep
    if not seqs:
        raise NodeprobeError(f"task=mlm: no evaluation sequences in {source}")
    es = mlm_eval_set(seqs, tokenizer, seed=seed, batch_size=batch_size, source=source)
    if es.n_items == 0:
        raise NodeprobeError(f"task=mlm: the sequences of {source} have no maskable tokens")
    return es


def track_eval_set(task: str, tokenizer, data=None, *, text_file=None, max_items: int | None = None,
                   seed: int = 0, batch_size: int = 64, max_len: int = 128, run_dir=None) -> EvalSet:
    """The fixed evaluation set of a track.

    ``mlm``: the held-out sequences of the pre-training corpus under ``data`` (held out every
    ``heldout_every`` setting of the run's ``run.json`` when ``run_dir`` has one, else the default),
    or every ``[CLS] … [SEP]`` chunk of ``text_file``, tokenised with ``tokenizer``; ``max_items``
    caps the modified positions (whole sequences).  ``fewrel``/``dbpedia``: the test split,
    ``max_items`` = a seeded random subset of sentences (:func:`nodeprobe.data.eval_sets.load_eval_set`).
    """
    from nodeprobe.data.tasks import check_task

    check_task(task)
    if task != "mlm":
        if text_file is not None:
            raise NodeprobeError(f"`text_file` builds an MLM evaluation set; task={task} reads `data`")
        if max_items is not None and (isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1):
            raise NodeprobeError(f"max_items={max_items}: expected a positive integer")
        return load_eval_set(task, tokenizer, data, limit=max_items, seed=seed, batch_size=batch_size,
                             max_len=max_len)
    if text_file is not None:
        from nodeprobe.data.text import load_text_corpus

        corp = load_text_corpus(text_file, tokenizer)
        return mlm_eval_set_from_sequences(corp.to_sequences(max_len), tokenizer, seed=seed, batch_size=batch_size,
                                           max_items=max_items, source=f"mlm:{corp.source}")
    from nodeprobe.data.corpus import PretrainData
    from nodeprobe.train.presets import PretrainSettings

    every = PretrainSettings.heldout_every
    if run_dir is not None and (Path(run_dir) / "run.json").is_file():
        try:
            every = int(json.loads((Path(run_dir) / "run.json").read_text())["run"]["settings"]["heldout_every"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    corp = PretrainData.load(data, None, max_len, every, tokenizer=tokenizer)
    if corp.tokenizer.vocab_size != tokenizer.vocab_size:
        raise NodeprobeError(f"`data`: the corpus vocab has {corp.tokenizer.vocab_size} tokens but the model's "
                             f"{tokenizer.vocab_size}; use `text_file` with text for this model")
    return mlm_eval_set_from_sequences(corp.heldout, tokenizer, seed=seed, batch_size=batch_size,
                                       max_items=max_items, source=f"mlm:{corp.source}[held-out 1/{every}]")


# ---------------------------------------------------------------------------- one step
@dataclass
class StepPredictions:
    """Everything one pass over the evaluation set gives (CPU tensors)."""

    preds: torch.Tensor  # [N]
    losses: torch.Tensor  # [N]
    readout: torch.Tensor  # [N, d_model]
    head_preds: torch.Tensor | None  # [L, H, N] predictions with each head isolated
    targets: torch.Tensor  # [N], collected in the same pass


@torch.no_grad()
def step_predictions(model, eval_set: EvalSet, *, heads: bool = True, mode: str = "zero",
                     means: dict | None = None, progress: bool = False) -> StepPredictions:
    """Clean predictions, the readout vectors, and (``heads``) the predictions of every head isolated.

    The head sweep is :func:`nodeprobe.studies.ablation.head_sweep_logits`: the clean ``z`` of each block
    once, each isolated head's block finished from it, the blocks above resumed from there
    (METHODS §7); predictions equal ``run_eval(model, es, fwd_hooks=[isolate_head(l, h, …)])``.
    """
    from nodeprobe.evaluate import check_model
    from nodeprobe.hooks import isolate_head
    from nodeprobe.progress import iterate
    from nodeprobe.studies.ablation import head_sweep_logits

    check_model(model, eval_set)
    check_mode(mode)
    L, H = model.spec.n_layers, model.spec.n_heads
    if heads and mode == "mean" and means is None:
        from nodeprobe.studies.ablation import head_means

        means = head_means(model, eval_set)
    fills = [[isolate_head(l, h, mode, means[l] if mode == "mean" else None)[1] for h in range(H)]
             for l in range(L)] if heads else [[] for _ in range(L)]
    dev = next(model.parameters()).device
    model.eval()
    preds, losses, readout, hp, targets = [], [], [], [], []
    grabbed: list[torch.Tensor] = []

    def grab(x, hook=None):
        grabbed.append(x)

    for b in iterate(eval_set.batches, len(eval_set.batches), "step", enabled=progress):
        ids, attn = b.input_ids.to(dev), b.attention_mask.to(dev)
        pos = b.positions.to(dev) if b.positions is not None else None
        per = torch.empty(L, H, int(b.targets.numel()), dtype=torch.long) if heads else None
        with model.hooks(fwd_hooks=[("readout.hook_in", grab)]):
            for l, h, logits in head_sweep_logits(model, ids, attn, pos, fills, batch_types(b, model, dev)):
                if l is not None:
                    per[l, h] = logits.float().argmax(-1).cpu()
                    grabbed.clear()
        logits = logits.float()  # the clean model's, yielded last
        t = b.targets.to(dev)
        targets.append(b.targets)
        preds.append(logits.argmax(-1).cpu())
        losses.append(F.cross_entropy(logits, t, reduction="none").cpu())
        readout.append(grabbed[-1].detach().float().cpu())
        grabbed.clear()
        if heads:
            hp.append(per)
    return StepPredictions(torch.cat(preds), torch.cat(losses), torch.cat(readout),
                           torch.cat(hp, dim=2) if heads else None, torch.cat(targets))


def step_record(model, eval_set: EvalSet, *, heads: bool = True, mode: str = "zero", tau_recall: float = 0.5,
                tau_lift: float = 2.0, min_count: int = 5, progress: bool = False) -> dict:
    """The raw results of one step that :func:`track` keeps in ``out_dir/steps/``: scalars, node and head learned sets.

    Example:
        >>> rec = step_record(model, eval_set, heads=False)        # doctest: +SKIP
        >>> rec["accuracy"], len(rec["node_sets"])                 # (0.12, d_model)  # doctest: +SKIP
    """
    from nodeprobe.analysis.apt import apt_per_token
    from nodeprobe.analysis.confusion import unit_stats_many
    from nodeprobe.analysis.readout import node_predictions

    t0 = time.time()
    sp = step_predictions(model, eval_set, heads=heads, mode=mode, progress=progress)
    y = sp.targets
    K = eval_set.n_classes
    W, bias = model.readout_weights()
    X = sp.readout
    node_preds = node_predictions(W.float().cpu(), bias.float().cpu(), X, mode=mode,
                                  means=X.mean(0) if mode == "mean" else None)
    node_stats = unit_stats_many(y, node_preds.T.contiguous(), K, tau_recall, tau_lift, min_count)
    rec = {
        "n_items": int(y.numel()),
        "accuracy": float((sp.preds == y).float().mean()),
        "loss": float(sp.losses.mean()),
        "node_sets": [list(s.learned) for s in node_stats],
        "node_accuracy_mean": float(np.mean([s.acc for s in node_stats])),
        "head_sets": None,
        "head_accuracy": None,
        "mean_apt": None,
        "weighted_apt": None,
        "n_apt_tokens": None,
    }
    if eval_set.task == "mlm":
        a = apt_per_token(y, sp.preds, min_count=min_count)
        rec.update(mean_apt=a.mean_apt, weighted_apt=a.weighted_apt, n_apt_tokens=a.n_tokens)
    if heads:
        L, H, N = sp.head_preds.shape
        hs = unit_stats_many(y, sp.head_preds.reshape(L * H, N), K, tau_recall, tau_lift, min_count)
        rec["head_sets"] = [[list(hs[l * H + h].learned) for h in range(H)] for l in range(L)]
        rec["head_accuracy"] = [[hs[l * H + h].acc for h in range(H)] for l in range(L)]
    rec["seconds"] = round(time.time() - t0, 3)
    return rec


# ---------------------------------------------------------------------------- report
@dataclass
class StepResult:
    """Order parameters at one step (``heads``/``head_blocks`` None when heads were skipped)."""

    step: int
    label: str
    path: str | None
    accuracy: float
    loss: float
    mean_apt: float | None
    weighted_apt: float | None
    nodes: FamilyParams
    heads: FamilyParams | None
    head_blocks: list[FamilyParams] | None
    head_accuracy: list[list[float]] | None
    reused: bool
    seconds: float


@dataclass
class TrackReport:
    """Order parameters per step, the step-0 baseline and the symmetry-breaking steps."""

    task: str
    n_items: int
    n_classes: int
    steps: list[StepResult]
    baseline: StepResult
    baseline_is_init: bool
    breaking: dict[str, int | None]  # family → first step satisfying the rule (None: not yet)
    rule: str
    settings: dict = field(default_factory=dict)

    @property
    def reused_steps(self) -> list[int]:
        return [s.step for s in self.steps if s.reused]

    @property
    def computed_steps(self) -> list[int]:
        return [s.step for s in self.steps if not s.reused]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["reused_steps"] = self.reused_steps
        d["computed_steps"] = self.computed_steps
        return d


RULE = ("first step s > 0 with mean_jaccard(s) < mean_jaccard(0) − {mj:g} and mean |Λ| per unit(s) > "
        "mean |Λ|(0) + {ms:g}, per family (nodes; heads with the per-block Jaccard averaged over blocks); "
        "pairs of two empty learned sets count as overlap {ep}")


def _record_key(ck: Checkpoint, eval_set: EvalSet, task: str, mode: str, tau_recall, tau_lift, min_count) -> str:
    """What a step's record depends on: the evaluation set, the weight files and the settings."""
    from nodeprobe.train.loop import fingerprint

    return fingerprint({"v": RECORD_VERSION, "task": task, "eval": eval_set.fingerprint, "n_items": eval_set.n_items,
                        "mode": mode, "tau_recall": tau_recall, "tau_lift": tau_lift, "min_count": min_count,
                        "weights": _weights_identity(ck)})


def _read_record(path: Path, key: str, heads: bool) -> dict | None:
    """The stored record at ``path`` if it matches ``key`` (and holds head sets when ``heads``), else None."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if rec.get("key") != key or (heads and rec.get("head_sets") is None):
        return None
    return rec


def _write_record(path: Path, rec: dict) -> None:
    """Write one step's record atomically (a temporary file, then a rename)."""
    from nodeprobe.io import write_text_atomic

    try:
        write_text_atomic(path, json.dumps(rec, sort_keys=True, allow_nan=True) + "\n")
    except OSError as e:
        raise NodeprobeError(f"out={path.parent.parent}: cannot write the per-step results ({e.strerror})") from None


def _result(ck: Checkpoint, rec: dict, K: int, heads: bool, empty_pairs: str, reused: bool) -> StepResult:
    nodes = family_params(rec["node_sets"], K, empty_pairs)
    hf, hb = (None, None)
    if heads and rec.get("head_sets") is not None:
        hf, hb = head_family_params(rec["head_sets"], K, empty_pairs)

    mlm = rec.get("n_apt_tokens") is not None

    def num(v):
        return float("nan") if v is None else float(v)

    return StepResult(step=ck.step, label=ck.label, path=str(ck.path) if ck.path else None,
                      accuracy=rec["accuracy"], loss=rec["loss"],
                      mean_apt=num(rec["mean_apt"]) if mlm else None,
                      weighted_apt=num(rec["weighted_apt"]) if mlm else None,
                      nodes=nodes, heads=hf, head_blocks=hb,
                      head_accuracy=rec["head_accuracy"] if heads else None,
                      reused=reused, seconds=float(rec.get("seconds", 0.0)))


def _check_track_args(mode: str, empty_pairs: str, margin_jaccard, margin_size) -> None:
    """Refuse a bad fill ``mode``, ``empty_pairs`` convention or negative margin before any model runs."""
    from nodeprobe.analysis.order_parameters import check_empty_pairs

    check_empty_pairs(empty_pairs)
    check_mode(mode)
    for name, m in (("margin_jaccard", margin_jaccard), ("margin_size", margin_size)):
        if not (isinstance(m, (int, float)) and m >= 0):
            raise NodeprobeError(f"{name}={m}: expected a number ≥ 0")


def _checkpoints_of(runs, random_init: bool, seed: int) -> list[Checkpoint]:
    """``runs`` as checkpoints sorted by step (found with :func:`find_checkpoints` unless given)."""
    if isinstance(runs, (str, os.PathLike)) or (runs and not isinstance(list(runs)[0], Checkpoint)):
        cks = find_checkpoints(runs, random_init=random_init, seed=seed)
    else:
        cks = sorted(runs, key=lambda c: c.step)
    if not cks:
        raise NodeprobeError("`run`: no checkpoints found")
    return cks


def _step_record_of(ck: Checkpoint, eval_set: EvalSet, records: Path | None, *, task: str, heads: bool,
                    mode: str, tau_recall, tau_lift, min_count, device: str) -> tuple[dict, bool]:
    """One step's record and whether it was reused: read from ``records`` when its key matches,
    else computed (and written there when ``records`` is given)."""
    key = _record_key(ck, eval_set, task, mode, tau_recall, tau_lift, min_count)
    path = records / f"step-{ck.step:07d}.json" if records is not None else None
    rec = _read_record(path, key, heads) if path is not None and path.is_file() else None
    reused = rec is not None
    if rec is None:
        model = load_checkpoint_model(ck, task, device)
        rec = step_record(model, eval_set, heads=heads, mode=mode, tau_recall=tau_recall, tau_lift=tau_lift,
                          min_count=min_count)
        del model
        rec.update(key=key, step=ck.step, label=ck.label, path=str(ck.path) if ck.path else None,
                   version=RECORD_VERSION)
        if path is not None:
            _write_record(path, rec)
    if rec["n_items"] != eval_set.n_items:
        raise NodeprobeError(f"step {ck.step}: the stored results cover {rec['n_items']} items, the evaluation set "
                             f"{eval_set.n_items}; remove {path}")
    return rec, reused


def _breaking_steps(results: list[StepResult], heads: bool, margin_jaccard, margin_size) -> dict[str, int | None]:
    """The symmetry-breaking step of each family (None: not yet, or no random-init baseline)."""
    breaking: dict[str, int | None] = {"nodes": None, "heads": None}
    if results[0].step != 0:
        return breaking
    steps = [r.step for r in results]
    for family in ("nodes", "heads") if heads else ("nodes",):
        params = [getattr(r, family) for r in results]
        breaking[family] = symmetry_breaking(steps, [p.mean_jaccard for p in params], [p.mean_size for p in params],
                                             margin_jaccard=margin_jaccard, margin_size=margin_size)
    return breaking


def _weight_shapes(path: Path) -> dict | None:
    """``{tensor name: shape}`` of a saved model's safetensors files (headers only, via
    :func:`nodeprobe.model.loading.safetensors_shapes`), or None (a pickled model: not compared)."""
    from nodeprobe.model.loading import safetensors_shapes

    files = sorted(path.glob("*.safetensors"))
    if not files:
        return None
    # a tied decoder may be stored or not: not part of the comparison
    return {k: s for f in files for k, s in safetensors_shapes(f).items() if "decoder" not in k}


def track(
    runs: str | os.PathLike | Sequence[str | os.PathLike] | Sequence[Checkpoint],
    eval_set: EvalSet,
    *,
    out_dir: str | os.PathLike | None = None,
    heads: bool = True,
    mode: str = "zero",
    tau_recall: float = 0.5,
    tau_lift: float = 2.0,
    min_count: int = 5,
    empty_pairs: str = "one",
    margin_jaccard: float = 0.0,
    margin_size: float = 0.0,
    random_init: bool = True,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
) -> TrackReport:
    """Order parameters at every checkpoint of ``runs`` on ``eval_set``; see the module docstring.

    Args:
        runs: run directories (``snapshots/step-N``) and/or model directories, or
            :class:`Checkpoint` objects (:func:`find_checkpoints`).
        eval_set: the fixed evaluation set (:func:`track_eval_set`); its task picks the head
            (``mlm`` → masked LM, else classifier).
        out_dir: folder of the per-step results (``steps/step-NNNNNNN.json``, reused by a re-run);
            None → nothing is kept.
        heads: also isolate every head (L·H extra resumed passes per batch; the slow part).
        mode: ``zero`` or ``mean`` fill for isolated nodes and heads (METHODS §2).
        tau_recall, tau_lift, min_count: learned-set thresholds (METHODS §3) and APT's min count.
        empty_pairs: Jaccard of two empty learned sets (``one``: identical; see analysis.order_parameters).
        margin_jaccard, margin_size: margins of the symmetry-breaking rule.
        random_init: add a seeded random init as step 0 when the runs have no step 0.

    Returns:
        :class:`TrackReport` — ``steps`` (one :class:`StepResult` per step: ``accuracy``, ``loss``,
        ``mean_apt``, ``nodes``/``heads`` :class:`FamilyParams` with ``mean_size``, ``coverage``,
        ``mean_jaccard``; ``head_blocks`` per block; ``reused``), ``baseline`` (the step-0 result),
        ``breaking`` (``{"nodes": step | None, "heads": step | None}``), ``rule`` and ``settings``.

    Example:
        >>> rep = track(["runs/cpu/pretrain"], es, out_dir="runs/cpu/pretrain/track-mlm", heads=False)  # doctest: +SKIP
        >>> rep.computed_steps, rep.breaking["nodes"]            # a re-run: rep.reused_steps   # doctest: +SKIP
    """
    from nodeprobe.progress import iterate

    _check_track_args(mode, empty_pairs, margin_jaccard, margin_size)
    cks = _checkpoints_of(runs, random_init, seed)
    task = "mlm" if eval_set.task == "mlm" else "cls"
    from nodeprobe.model.loading import check_model_dir

    first = None  # (path, {tensor: shape}) of the first snapshot: every other must have its architecture
    for ck in cks:  # every snapshot's config and weight headers first: a damaged one before any step is written
        if ck.path is not None and Path(ck.path).is_dir():
            check_model_dir(ck.path, kind=task)
            shapes = _weight_shapes(Path(ck.path))
            if first is None:
                first = (ck.path, shapes)
            elif shapes is not None and first[1] is not None and shapes != first[1]:
                name = next((k for k in sorted(set(shapes) | set(first[1])) if shapes.get(k) != first[1].get(k)))
                a, b = (list(s[name]) if name in s else "absent" for s in (shapes, first[1]))
                raise NodeprobeError(f"snapshot {ck.path}: another architecture than {first[0]} (tensor {name}: "
                                     f"{a} vs {b}); track compares the snapshots of one model, node by node")
    records = Path(out_dir) / "steps" if out_dir is not None else None
    K = eval_set.n_classes
    results = []
    for ck in iterate(cks, len(cks), "track", enabled=progress):
        rec, reused = _step_record_of(ck, eval_set, records, task=task, heads=heads, mode=mode, tau_recall=tau_recall,
                                      tau_lift=tau_lift, min_count=min_count, device=device)
        results.append(_result(ck, rec, K, heads, empty_pairs, reused))
    settings = {"task": eval_set.task, "source": eval_set.source, "eval_fingerprint": eval_set.fingerprint,
                "seed": eval_set.seed, "mode": mode, "heads": heads, "tau_recall": tau_recall, "tau_lift": tau_lift,
                "min_count": min_count, "empty_pairs": empty_pairs, "margin_jaccard": margin_jaccard,
                "margin_size": margin_size, "random_init": random_init,
                "out_dir": str(out_dir) if out_dir is not None else None}
    rule = RULE.format(mj=margin_jaccard, ms=margin_size,
                       ep={"one": 1, "zero": 0}.get(empty_pairs, "undefined (left out)"))
    return TrackReport(task=eval_set.task, n_items=eval_set.n_items, n_classes=K, steps=results, baseline=results[0],
                       baseline_is_init=results[0].step == 0,
                       breaking=_breaking_steps(results, heads, margin_jaccard, margin_size), rule=rule,
                       settings=settings)
