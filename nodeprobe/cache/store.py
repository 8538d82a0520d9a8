"""Activation caches: the meeting point of the slow part (the model) and the fast part (analysis).

:func:`build_cache` runs the model once over an evaluation set with :class:`~nodeprobe.hooks.SiteCache`
hooks (through :func:`~nodeprobe.evaluate.run_eval`, the one evaluation loop) and streams the chosen
sites of the evaluated items — [CLS] for classification, the modified positions for MLM — to
safetensors shards, a few batches per shard, so that at most one shard is ever in memory:

=============  =========================================  ===========================================
site           tensors in every shard (n items)           hook
=============  =========================================  ===========================================
``readout``    ``readout``  ``[n, d_model]``              ``readout.hook_in`` (METHODS §1)
``z``          ``z.{l}``    ``[n, n_heads, d_head]``      ``blocks.{l}.attn.hook_z`` for every block l
``resid``      ``resid.{b}`` ``[n, d_model]``, b = 0…L   b = 0: ``hook_full_embed``; b = l+1:
                                                          ``blocks.{l}.hook_normalized_resid_post``
``mlp``        ``mlp.{l}``  ``[n, d_mlp]``                ``blocks.{l}.mlp.hook_post`` (the FF sub-block's
                                                          nodes, after the activation) for every block l
(always)       ``targets``, ``preds`` (int64), ``loss``   true class, the model's argmax, per-item loss
=============  =========================================  ===========================================

Beside the shards: ``readout.safetensors`` (the final linear map ``W`` ``[K, d]`` and ``b`` ``[K]``),
``classes.json`` (the class names: relation names or the vocab), ``derived/`` (results computed
from the cache and the model, e.g. head-isolation predictions, reused by later reports), and
``manifest.json``, written **last** through an atomic rename.  A directory without a manifest is
an interrupted build (``kill -9``): it is treated as absent and rebuilt.  A damaged cache (a
truncated shard, a manifest missing a key) is refused with one line naming the file and what is
wrong, and rebuilt only on request (``rebuild``).  One process writes a cache folder at a time
(:func:`nodeprobe.locks.hold`); a second one refuses.  The manifest holds the model
fingerprint (:func:`model_fingerprint`), the eval-set fingerprint (``EvalSet.fingerprint``), task,
seed, sites, shapes and dtype; :func:`load_cache` refuses a cache whose fingerprints do not match
the model or data it is used with.

Example:
    >>> cache = get_or_build_cache(model, eval_set, sites=("readout", "resid"))   # doctest: +SKIP
    >>> X = cache.readout()          # [N, d] float tensor                           # doctest: +SKIP
    >>> W, b = cache.W, cache.b                                                    # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from itertools import islice
from pathlib import Path

import torch
from torch import Tensor

from nodeprobe.errors import NodeprobeError
from nodeprobe.io import save_safetensors_atomic, write_text_atomic
from nodeprobe.locks import LOCK_NAME, check_not_written, hold

SITES = ("readout", "z", "resid", "mlp")
FORMAT_VERSION = 2  # 2: the eval-set fingerprint also hashes tensor shapes (a format-1 cache is refused: rebuild)
MANIFEST = "manifest.json"
DEFAULT_ROOT = Path("runs") / "cache"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# ---------------------------------------------------------------------- fingerprints
def model_fingerprint(model) -> str:
    """A cheap fingerprint of a model's weights (16 hex digits).

    For every tensor of the Hugging Face ``state_dict`` (sorted by name): its name, dtype and
    shape, about 1024 strided samples, and the float64 sum and sum of absolute values of all its
    elements (so changing any single weight changes the fingerprint, at the cost of one pass over
    the weights, ~0.2 s for BERT-base on a CPU).

    Example:
        >>> from transformers import BertConfig, BertForMaskedLM
        >>> hf = BertForMaskedLM(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1,
        ...                                 num_attention_heads=2, intermediate_size=8))
        >>> len(model_fingerprint(hf))
        16
    """
    hf = getattr(model, "hf", model)
    h = hashlib.sha256()
    h.update(type(hf).__name__.encode())
    with torch.no_grad():
        for name, t in sorted(hf.state_dict().items()):
            flat = t.detach().reshape(-1)
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
            if flat.numel() == 0:
                continue
            step = max(1, flat.numel() // 1024)
            d = flat.double() if flat.is_floating_point() else flat.to(torch.float64)
            samples = d[::step].cpu().numpy().tobytes()
            h.update(samples)
            h.update(repr((float(d.sum()), float(d.abs().sum()))).encode())
    return h.hexdigest()[:16]


def default_cache_dir(model_fp: str, eval_fp: str, root: str | Path = DEFAULT_ROOT) -> Path:
    """``runs/cache/<model-fp>-<data-fp>/`` (relative to the working directory by default)."""
    return Path(root) / f"{model_fp}-{eval_fp}"


def parse_sites(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"readout,z"`` → ``("readout", "z")`` in canonical order; a one-line error otherwise.

    Example:
        >>> parse_sites("resid,readout")
        ('readout', 'resid')
    """
    parts = [p.strip() for p in (text.split(",") if isinstance(text, str) else text)]
    parts = [p for p in parts if p]
    bad = [p for p in parts if p not in SITES]
    if bad or not parts:
        raise NodeprobeError(f"sites={','.join(parts) if parts else repr(text)}: expected a comma list of "
                             f"{', '.join(SITES)}")
    return tuple(s for s in SITES if s in parts)


def site_hooks(site: str, n_layers: int) -> list[str]:
    """Hook names of a site (see the module table)."""
    from nodeprobe.hooks import z_name

    if site == "readout":
        return ["readout.hook_in"]
    if site == "z":
        return [z_name(l) for l in range(n_layers)]
    if site == "resid":
        return ["hook_full_embed"] + [f"blocks.{l}.hook_normalized_resid_post" for l in range(n_layers)]
    if site == "mlp":
        return [f"blocks.{l}.mlp.hook_post" for l in range(n_layers)]
    raise NodeprobeError(f"site {site!r}: expected one of {', '.join(SITES)}")


def _key_of_hook(name: str) -> str:
    if name == "readout.hook_in":
        return "readout"
    if name == "hook_full_embed":
        return "resid.0"
    parts = name.split(".")
    if name.endswith("attn.hook_z"):
        return f"z.{parts[1]}"
    if name.endswith("hook_normalized_resid_post"):
        return f"resid.{int(parts[1]) + 1}"
    if name.endswith("mlp.hook_post"):
        return f"mlp.{parts[1]}"
    raise AssertionError(name)


# ---------------------------------------------------------------------- build
def _is_cache_file(p: Path) -> bool:
    n = p.name
    return (n in (MANIFEST, "readout.safetensors", "classes.json", "derived", LOCK_NAME, f"{LOCK_NAME}.takeover")
            or (n.startswith("shard-") and n.endswith(".safetensors")) or (n.startswith(".") and ".tmp" in n))


def _check_ours(out: Path) -> None:
    """Refuse a directory holding anything but a cache's files (a build never deletes files it did
    not write); checked before the folder's lock is taken, so a refused folder is left untouched."""
    foreign = sorted(p.name for p in out.iterdir() if not _is_cache_file(p)) if out.is_dir() else []
    if foreign:
        raise NodeprobeError(f"cache={out}: not a nodeprobe cache (it holds {foreign[0]}…); "
                             "give a new or empty directory")


def _clear(out: Path) -> None:
    """Remove a previous cache's files (manifest first: an interruption leaves 'absent');
    :func:`_check_ours` first."""
    _check_ours(out)
    (out / MANIFEST).unlink(missing_ok=True)
    for p in list(out.glob("shard-*.safetensors")) + [out / "readout.safetensors", out / "classes.json"]:
        p.unlink(missing_ok=True)
    for p in out.glob(".*.tmp*"):
        p.unlink(missing_ok=True)
    if (out / "derived").is_dir():
        shutil.rmtree(out / "derived")


def _write_json_atomic(obj, path: Path) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def _chunks(items, k: int):
    """Consecutive lists of ``k`` items (the last one shorter) from any iterable, lazily."""
    it = iter(items)
    while True:
        group = list(islice(it, k))
        if not group:
            return
        yield group


def _storage_dtype(dtype: str | torch.dtype) -> tuple[torch.dtype, str]:
    """``dtype`` (a name or a torch dtype) → ``(torch dtype, name)``, or a one-line error."""
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise NodeprobeError(f"dtype={dtype}: expected one of {', '.join(DTYPES)}")
        return DTYPES[dtype], dtype
    name = {v: k for k, v in DTYPES.items()}.get(dtype)
    if name is None:
        raise NodeprobeError(f"dtype {dtype}: expected one of {', '.join(DTYPES)}")
    return dtype, name


def _check_build(eval_set, shard_batches) -> None:
    """Refuse a bad ``shard_batches`` or an empty evaluation set before anything is written."""
    if not isinstance(shard_batches, int) or shard_batches < 1:
        raise NodeprobeError(f"shard_batches={shard_batches!r}: expected a positive integer")
    if len(eval_set.batches) == 0:
        raise NodeprobeError("the evaluation set is empty: nothing to cache")


def _cache_path(cache_dir, mfp: str, eval_fp: str, root: str | Path = DEFAULT_ROOT) -> Path:
    """``cache_dir`` or the default folder of this model and data; a file there is refused."""
    out = Path(cache_dir) if cache_dir is not None else default_cache_dir(mfp, eval_fp, root)
    if out.exists() and not out.is_dir():
        raise NodeprobeError(f"cache={out}: is a file; give a directory")
    return out


def _prepare_dir(out: Path) -> None:
    """Create ``out`` and remove a previous cache's files there."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        _clear(out)
    except OSError as e:
        raise NodeprobeError(f"cache={out}: cannot write there ({e.strerror})") from None


def _write_readout(model, eval_set, out: Path) -> None:
    """``readout.safetensors`` (the final linear map, float32) and ``classes.json`` (class names)."""
    W, b = model.readout_weights()
    save_safetensors_atomic({"W": W.detach().float().cpu(), "b": b.detach().float().cpu()}, out / "readout.safetensors")
    write_text_atomic(out / "classes.json", json.dumps(list(eval_set.class_names), ensure_ascii=False))


def _shard_tensors(res, kept: dict[str, Tensor], hooks: Sequence[str]) -> dict[str, Tensor]:
    """The tensors of one shard: every hooked site plus ``targets``, ``preds`` and ``loss``."""
    tensors = {_key_of_hook(h): kept[h] for h in hooks}
    tensors["targets"] = res.targets.long()
    tensors["preds"] = res.preds.long()
    tensors["loss"] = res.losses.float()
    n = int(res.targets.numel())
    for k, v in tensors.items():
        if v.shape[0] != n:  # pragma: no cover - an internal invariant
            raise AssertionError(f"cache key {k}: {v.shape[0]} rows for {n} items")
    return tensors


def _write_shards(model, eval_set, hooks: list[str], dt: torch.dtype, out: Path, shard_batches: int,
                  progress: bool) -> dict:
    """Evaluate ``eval_set`` ``shard_batches`` batches at a time, writing each group as one shard.

    Returns the manifest's ``shards``, ``shapes``, ``n_items`` and ``accuracy`` entries.
    """
    from nodeprobe.evaluate import run_eval
    from nodeprobe.hooks import SiteCache
    from nodeprobe.progress import iterate

    sc = SiteCache(hooks, positions="cls" if eval_set.task != "mlm" else None, device="cpu", dtype=dt)
    shards: list[dict] = []
    shapes: dict[str, list[int]] = {}
    n_total = n_correct = 0
    n_groups = -(-len(eval_set.batches) // shard_batches)
    groups = _chunks(eval_set.batches, shard_batches)  # one pass; a streamed set is read once
    for gi, group in enumerate(iterate(groups, n_groups, "cache", enabled=progress)):
        res = run_eval(model, replace(eval_set, batches=group), cache=sc)
        tensors = _shard_tensors(res, sc.stack(clear=True), hooks)
        n = int(res.targets.numel())
        shapes.update({k: [n_total + n, *v.shape[1:]] for k, v in tensors.items()})
        name = f"shard-{gi:05d}.safetensors"
        save_safetensors_atomic(tensors, out / name)
        shards.append({"file": name, "n_items": n})
        n_total += n
        n_correct += int((res.preds == res.targets).sum())
        del tensors, res
    return {"shards": shards, "shapes": shapes, "n_items": n_total, "accuracy": n_correct / max(n_total, 1)}


def _manifest(model, eval_set, site_list: Sequence[str], mfp: str, dt_name: str, written: dict) -> dict:
    """The ``manifest.json`` of a cache (``written``: what :func:`_write_shards` returned)."""
    spec = model.spec
    return {
        "format": FORMAT_VERSION,
        "model_fingerprint": mfp,
        "eval_fingerprint": eval_set.fingerprint,
        "task": eval_set.task,
        "model_task": model.kind,
        "seed": eval_set.seed,
        "source": eval_set.source,
        "sites": list(site_list),
        "hooks": {s: site_hooks(s, spec.n_layers) for s in site_list},
        "positions": "cls" if eval_set.task != "mlm" else "modified",
        "n_classes": eval_set.n_classes,
        "n_layers": spec.n_layers,
        "n_heads": spec.n_heads,
        "d_model": spec.d_model,
        "d_readout": spec.d_readout,
        "d_head": spec.d_head,
        "dtype": dt_name,
        "readout_file": "readout.safetensors",
        "class_names_file": "classes.json",
        **written,
    }


@torch.no_grad()
def build_cache(
    model,
    eval_set,
    sites: Sequence[str] | str = SITES,
    out_dir: str | Path | None = None,
    *,
    shard_batches: int = 8,
    dtype: str | torch.dtype = "float32",
    progress: bool = False,
    model_fp: str | None = None,
) -> "CacheReader":
    """Run ``model`` once over ``eval_set`` and write the chosen ``sites`` to ``out_dir``.

    Args:
        sites: any of ``readout``, ``z``, ``resid`` (a list or a comma string).
        out_dir: the cache directory (default ``runs/cache/<model-fp>-<data-fp>/``); a previous
            cache there is replaced (its manifest is removed first).
        shard_batches: evaluation batches per shard; a shard is written to disk and dropped
            before the next one is computed.
        dtype: storage dtype of the activations (``float32`` default, ``float16``, ``bfloat16``).

    Returns:
        A :class:`CacheReader` of the new cache.

    Example:
        >>> reader = build_cache(model, eval_set, "readout,z", "runs/cache/mine")   # doctest: +SKIP
        >>> reader.built, reader.z(0).shape                # (True, [N, n_heads, d_head])  # doctest: +SKIP
    """
    site_list = parse_sites(sites)
    dt, dt_name = _storage_dtype(dtype)
    _check_build(eval_set, shard_batches)
    from nodeprobe.evaluate import check_model

    check_model(model, eval_set)  # before anything is written: a mismatch leaves no partial cache
    mfp = model_fp or model_fingerprint(model)
    out = _cache_path(out_dir, mfp, eval_set.fingerprint)
    _check_ours(out)
    with hold(out, "cache"):  # one writer per cache folder; a second one refuses
        _prepare_dir(out)
        _write_readout(model, eval_set, out)
        hooks = [h for s in site_list for h in site_hooks(s, model.spec.n_layers)]
        written = _write_shards(model, eval_set, hooks, dt, out, shard_batches, progress)
        manifest = _manifest(model, eval_set, site_list, mfp, dt_name, written)
        _write_json_atomic(manifest, out / MANIFEST)  # last: its presence marks a complete cache
    reader = CacheReader(out, manifest)
    reader.built = True
    return reader


# ---------------------------------------------------------------------- read
class CacheReader:
    """A lazy reader of a cache directory: nothing is loaded until asked for.

    ``iter_shards(keys)`` streams shard by shard; ``load(key)`` (and the shortcuts ``readout()``,
    ``resid(b)``, ``z(l)``, ``targets()``, ``preds()``) concatenates one key over all shards.
    """

    def __init__(self, path: str | Path, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest
        self._W = self._b = self._names = None
        self.built = False  # True when this call built the cache (False: reused)

    # -- metadata
    @property
    def n_items(self) -> int:
        return int(self.manifest["n_items"])

    @property
    def task(self) -> str:
        return self.manifest["task"]

    @property
    def sites(self) -> tuple[str, ...]:
        return tuple(self.manifest["sites"])

    @property
    def n_layers(self) -> int:
        return int(self.manifest["n_layers"])

    @property
    def n_heads(self) -> int:
        return int(self.manifest["n_heads"])

    @property
    def d_model(self) -> int:
        return int(self.manifest["d_model"])

    @property
    def d_readout(self) -> int:
        """Width of the readout vectors (``d_model``, except an ELECTRA masked LM: its embedding width)."""
        return int(self.manifest.get("d_readout", self.manifest["d_model"]))

    @property
    def n_classes(self) -> int:
        return int(self.manifest["n_classes"])

    @property
    def model_fingerprint(self) -> str:
        return self.manifest["model_fingerprint"]

    @property
    def eval_fingerprint(self) -> str:
        return self.manifest["eval_fingerprint"]

    @property
    def class_names(self) -> list[str]:
        if self._names is None:
            self._names = json.loads((self.path / self.manifest["class_names_file"]).read_text(encoding="utf-8"))
        return self._names

    def _readout_file(self):
        from safetensors.torch import load_file

        d = load_file(str(self.path / self.manifest["readout_file"]))
        self._W, self._b = d["W"], d["b"]

    @property
    def W(self) -> Tensor:
        """``[K, d_model]`` weight of the final linear map (float32)."""
        if self._W is None:
            self._readout_file()
        return self._W

    @property
    def b(self) -> Tensor:
        """``[K]`` bias of the final linear map (float32)."""
        if self._b is None:
            self._readout_file()
        return self._b

    def describe(self) -> dict:
        """Summary for reports: path, sizes, sites, fingerprints."""
        size = sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file() and _is_payload(p))
        m = self.manifest
        return {"path": str(self.path), "n_items": self.n_items, "n_shards": len(m["shards"]), "sites": list(self.sites),
                "task": self.task, "seed": m["seed"], "source": m["source"], "dtype": m["dtype"],
                "model_fingerprint": self.model_fingerprint, "eval_fingerprint": self.eval_fingerprint,
                "shapes": m["shapes"], "bytes": size, "accuracy": m.get("accuracy")}

    # -- tensors
    def check_site(self, site: str) -> None:
        if site not in self.sites:
            raise NodeprobeError(
                f"cache {self.path} has no '{site}' site (it has {', '.join(self.sites)}); "
                f"rebuild with --rebuild or nodeprobe cache --sites {','.join(sorted(set(self.sites) | {site}))}"
            )

    def _site_of(self, key: str) -> str | None:
        head = key.split(".")[0]
        return head if head in SITES else None

    def iter_shards(self, keys: Sequence[str]) -> Iterator[dict[str, Tensor]]:
        """Yield ``{key: tensor}`` for each shard in item order (one shard in memory at a time)."""
        from safetensors import safe_open

        for k in keys:
            s = self._site_of(k)
            if s is not None:
                self.check_site(s)
            if k not in self.manifest["shapes"]:
                raise NodeprobeError(f"cache {self.path}: no tensor {k!r}")
        for sh in self.manifest["shards"]:
            with safe_open(str(self.path / sh["file"]), framework="pt") as f:
                yield {k: f.get_tensor(k) for k in keys}

    def load(self, key: str, dtype: torch.dtype | None = torch.float32) -> Tensor:
        """One key over all shards, ``[N, ...]`` (floats converted to ``dtype``)."""
        parts = [d[key] for d in self.iter_shards([key])]
        t = torch.cat(parts) if parts else torch.empty(0)
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        return t

    def readout(self) -> Tensor:
        """``[N, d_model]`` readout vectors (METHODS §1 ``readout``)."""
        return self.load("readout")

    def resid(self, stage: int) -> Tensor:
        """``[N, d_model]`` residual stream after stage ``b``: 0 = embeddings, b = output of block b−1."""
        if not (isinstance(stage, int) and 0 <= stage <= self.n_layers):
            raise NodeprobeError(f"stage {stage}: expected 0 (embeddings) … {self.n_layers} (last block)")
        return self.load(f"resid.{stage}")

    def z(self, layer: int) -> Tensor:
        """``[N, n_heads, d_head]`` head outputs of block ``layer``."""
        if not (isinstance(layer, int) and 0 <= layer < self.n_layers):
            raise NodeprobeError(f"layer={layer}: the model has blocks 0–{self.n_layers - 1}")
        return self.load(f"z.{layer}")

    def mlp(self, layer: int) -> Tensor:
        """``[N, d_mlp]`` feed-forward nodes of block ``layer`` (``blocks.{l}.mlp.hook_post``)."""
        if not (isinstance(layer, int) and 0 <= layer < self.n_layers):
            raise NodeprobeError(f"layer={layer}: the model has blocks 0–{self.n_layers - 1}")
        return self.load(f"mlp.{layer}")

    def targets(self) -> Tensor:
        return self.load("targets", None)

    def preds(self) -> Tensor:
        """The model's own predictions (argmax of the full readout)."""
        return self.load("preds", None)

    def means(self, key: str) -> Tensor:
        """Eval-set mean of a cached key (float64 accumulation), e.g. ``readout`` → ``[d]``."""
        total, n = None, 0
        for d in self.iter_shards([key]):
            t = d[key].double()
            s = t.sum(0)
            total = s if total is None else total + s
            n += t.shape[0]
        if not n:
            raise NodeprobeError(f"cache {self.path}: no items")
        return (total / n).float()

    # -- derived results
    def derived(self, name: str, compute: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
        """Results computed from this cache (and its model), saved under ``derived/`` and reused.

        ``name`` must encode every setting the result depends on (e.g. ``heads-zero-L3``)."""
        from safetensors.torch import load_file

        path = self.path / "derived" / f"{name}.safetensors"
        if path.is_file():
            try:
                return load_file(str(path))
            except Exception:  # a torn file from another process: recompute
                pass
        out = compute()
        try:
            path.parent.mkdir(exist_ok=True)
            save_safetensors_atomic(out, path)
        except OSError:
            pass  # a read-only cache still serves; the result is just not kept
        return out


def load_cache(path: str | Path, model=None, eval_set=None, *, model_fp: str | None = None) -> CacheReader:
    """Open the cache in ``path``; with ``model``/``eval_set`` refuse one built from other weights/data.

    A directory without ``manifest.json`` (missing, or an interrupted build) is an error here;
    :func:`get_or_build_cache` treats it as absent and rebuilds.  A cache whose lock a live other
    process holds (a build or ``--rebuild`` in progress) is refused in one line.
    """
    p = Path(path)
    check_not_written(p, "cache")  # a cache another process is (re)building is not read half-written
    mf = p / MANIFEST
    if not mf.is_file():
        raise NodeprobeError(f"cache {p}: no manifest.json (not a cache, or an interrupted build); rebuild it")
    manifest = _read_manifest(mf)
    if manifest["format"] != FORMAT_VERSION:
        raise NodeprobeError(f"cache {p}: format {manifest['format']}, this nodeprobe reads {FORMAT_VERSION}; rebuild with `rebuild`")
    if model is not None or model_fp is not None:
        fp = model_fp or model_fingerprint(model)
        if fp != manifest["model_fingerprint"]:
            raise NodeprobeError(
                f"cache {p} was built from another model (fingerprint {manifest['model_fingerprint']}≠{fp}); "
                "rebuild with `rebuild` or another `cache`"
            )
    if eval_set is not None and eval_set.fingerprint != manifest["eval_fingerprint"]:
        raise NodeprobeError(
            f"cache {p} was built from other data (eval-set fingerprint {manifest['eval_fingerprint']}≠"
            f"{eval_set.fingerprint}: another `task`/`data`/`limit`/`seed`); rebuild with `rebuild` or another `cache`"
        )
    missing = [s["file"] for s in manifest["shards"] if not (p / s["file"]).is_file()]
    if missing or not (p / manifest["readout_file"]).is_file():
        gone = (missing or [manifest["readout_file"]])[0]
        what = "is not a file" if (p / gone).exists() else "is missing"
        raise NodeprobeError(f"cache {p} is incomplete ({gone} {what}); "
                             "rebuild with `rebuild`")
    _check_files(p, manifest)
    return CacheReader(p, manifest)


#: what a manifest must hold (and of which type) for :class:`CacheReader` to read the cache
_MANIFEST_KEYS = {"format": int, "model_fingerprint": str, "eval_fingerprint": str, "task": str, "sites": list,
                  "n_classes": int, "n_layers": int, "n_heads": int, "d_model": int, "dtype": str,
                  "readout_file": str, "class_names_file": str, "shards": list, "shapes": dict, "n_items": int}


def _damaged(file: Path, what: str) -> NodeprobeError:
    return NodeprobeError(f"cache file {file} is damaged ({what}); rebuild it with `rebuild`")


def _read_manifest(mf: Path) -> dict:
    """``manifest.json``, or a one-line error naming it and what is wrong with it."""
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise _damaged(mf, "unreadable manifest: not UTF-8 text") from None
    except ValueError as e:
        raise _damaged(mf, f"unreadable manifest: not valid JSON: {e.msg} at line {e.lineno}") from None
    except OSError as e:
        raise NodeprobeError(f"cache file {mf}: cannot read it ({e.strerror})") from None
    if not isinstance(manifest, dict):
        raise _damaged(mf, "unreadable manifest: not a JSON object")
    if "format" in manifest and manifest["format"] != FORMAT_VERSION:
        return manifest  # another format: load_cache says so (its keys may differ)
    for key, typ in _MANIFEST_KEYS.items():
        if key not in manifest:
            raise _damaged(mf, f"unreadable manifest: no {key!r} key")
        if not isinstance(manifest[key], typ) or (typ is int and isinstance(manifest[key], bool)):
            raise _damaged(mf, f"unreadable manifest: {key!r} is not a {typ.__name__}")
    for key in ("n_items", "n_classes", "n_layers", "n_heads", "d_model"):
        if manifest[key] < 1:
            raise _damaged(mf, f"unreadable manifest: {key}={manifest[key]}; expected a positive integer")
    for key in ("readout_file", "class_names_file"):
        if not _plain_name(manifest[key]):
            raise _damaged(mf, f"unreadable manifest: {key}={manifest[key]!r} is not a file name inside the cache")
    for i, sh in enumerate(manifest["shards"]):
        if not (isinstance(sh, dict) and isinstance(sh.get("file"), str) and isinstance(sh.get("n_items"), int)
                and not isinstance(sh.get("n_items"), bool) and sh["n_items"] >= 0):
            raise _damaged(mf, f"unreadable manifest: shard entry {i} is not {{file, n_items ≥ 0}}")
        if not _plain_name(sh["file"]):  # never a path out of the cache folder (../…, /etc/…)
            raise _damaged(mf, f"unreadable manifest: shard entry {i} file={sh['file']!r} is not a file name "
                               "inside the cache")
    total = sum(sh["n_items"] for sh in manifest["shards"])
    if total != manifest["n_items"]:
        raise _damaged(mf, f"unreadable manifest: its shards hold {total} items, n_items says {manifest['n_items']}")
    return manifest


def _plain_name(name: str) -> bool:
    """A bare file name (no folder part, not ``.``/``..``): what a manifest may point to."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name


def _safetensors_keys(path: Path) -> dict:
    """The header of a whole safetensors file (:func:`nodeprobe.io.safetensors_header`), else the
    one-line damaged-file error."""
    from nodeprobe.io import safetensors_header

    header, problem = safetensors_header(path)
    if problem is not None:
        raise _damaged(path, problem)
    return header


def _check_files(p: Path, manifest: dict) -> None:
    """Every shard and the readout file whole and holding the tensors the manifest names."""
    keys = set(manifest["shapes"])
    for sh in manifest["shards"]:
        header = _safetensors_keys(p / sh["file"])
        lost = sorted(keys - set(header))
        if lost:
            raise _damaged(p / sh["file"], f"no tensor {lost[0]!r}, which {MANIFEST} lists")
    header = _safetensors_keys(p / manifest["readout_file"])
    if not {"W", "b"} <= set(header):
        raise _damaged(p / manifest["readout_file"], "no W or b tensor")
    names = p / manifest["class_names_file"]
    try:
        listed = json.loads(names.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NodeprobeError(f"cache {p} is incomplete ({manifest['class_names_file']} is missing); "
                             "rebuild with `rebuild`") from None
    except (OSError, ValueError):
        listed = None
    if not (isinstance(listed, list) and all(isinstance(n, str) for n in listed)):
        raise _damaged(names, "not a JSON list of class names")
    shape = header["W"].get("shape") if isinstance(header["W"], dict) else None
    if isinstance(shape, list) and shape and len(listed) != shape[0]:
        raise _damaged(names, f"{len(listed)} class names for a readout of {shape[0]} classes")
    if len(listed) != manifest["n_classes"]:
        raise _damaged(p / MANIFEST, f"n_classes={manifest['n_classes']}, but {names.name} names {len(listed)} classes")


def _is_payload(p: Path) -> bool:
    """A cache's own file (not a lock or another process's temporary file)."""
    return not p.name.startswith(".")


def cache_is_current(path: str | Path, model=None, eval_set=None, *, model_fp: str | None = None) -> bool:
    """Whether ``path`` holds a complete cache of this format built from ``model`` and ``eval_set``.

    For owners of a cache folder (``reproduce`` keeps one per model under ``runs/<preset>/cache/``)
    that should rebuild rather than refuse a stale one.

    Example:
        >>> cache_is_current("no/such/cache")
        False
    """
    try:
        load_cache(path, model, eval_set, model_fp=model_fp)
    except NodeprobeError:
        return False
    return True


def get_or_build_cache(
    model,
    eval_set,
    sites: Sequence[str] | str = ("readout",),
    cache_dir: str | Path | None = None,
    *,
    rebuild: bool = False,
    root: str | Path = DEFAULT_ROOT,
    progress: bool = False,
    shard_batches: int = 8,
    dtype: str = "float32",
) -> CacheReader:
    """Reuse the matching cache that holds ``sites``, or build one.

    The cache lives in ``cache_dir`` or ``<root>/<model-fp>-<data-fp>/``.  A cache there built from
    another model or data is refused (:class:`NodeprobeError`) unless ``rebuild``; one that lacks
    some of ``sites`` is rebuilt with the union of its sites and ``sites``; a directory without a
    manifest is rebuilt.

    Example:
        >>> reader = get_or_build_cache(model, eval_set, "readout,resid")   # doctest: +SKIP
        >>> reader.built                      # False when a matching cache was reused   # doctest: +SKIP
    """
    want = parse_sites(sites)
    mfp = model_fingerprint(model)
    out = _cache_path(cache_dir, mfp, eval_set.fingerprint, root)
    if not rebuild and (out / MANIFEST).is_file():  # a complete cache: read it without the lock
        reader = load_cache(out, eval_set=eval_set, model_fp=mfp)
        if all(s in reader.sites for s in want):
            return reader
    _check_ours(out)
    with hold(out, "cache"):  # decide and build under the lock: a second writer refuses
        if not rebuild and (out / MANIFEST).is_file():
            reader = load_cache(out, eval_set=eval_set, model_fp=mfp)
            if all(s in reader.sites for s in want):
                return reader
            want = parse_sites(sorted(set(want) | set(reader.sites)))
        return build_cache(model, eval_set, want, out, progress=progress, shard_batches=shard_batches,
                           dtype=dtype, model_fp=mfp)


def site_means(cache: CacheReader, site: str, layer: int | None = None) -> Tensor:
    """Eval-set means of a cached site for mean-mode isolation at the evaluated positions.

    ``readout`` → ``[d]``; ``resid`` with ``layer`` l → ``[d]`` of ``blocks.{l}.hook_normalized_resid_post``
    (``layer=-1``: ``hook_full_embed``); ``z`` with ``layer`` → ``[n_heads, d_head]``.  Head ablation in
    mean mode uses per-position means over *all* positions (METHODS §2), which a cache of the
    evaluated positions does not hold: use :func:`nodeprobe.studies.ablation.head_means` for that.
    """
    if site == "readout":
        return cache.means("readout")
    if site == "resid":
        if layer is None:
            raise NodeprobeError("site resid needs a layer")
        return cache.means(f"resid.{layer + 1}")
    if site == "z":
        if layer is None:
            raise NodeprobeError("site z needs a layer")
        return cache.means(f"z.{layer}")
    raise NodeprobeError(f"site {site!r}: expected one of {', '.join(SITES)}")
