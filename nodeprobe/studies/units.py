"""Units at any site and block: the linear readout a node, a node set or a head is read through
(METHODS v2 §1–§2).

A :class:`SiteReadout` holds, for one site of one block, everything a unit analysis needs:

* the activations ``X`` ``[N, d]`` of the analysed items at that site,
* the frozen linear map ``logits = W x + b`` (W ``[K', d]``) over ``classes`` (the global class ids
  of W's rows: all K at ``readout``; for a block readout the classes seen in its training items —
  an unseen class has logit −∞, i.e. no row),
* the labels ``y`` in the readout's own class space (``y_local``; items of an unseen class get
  ``K'``, a class no unit can predict) and globally (``y``),
* the readout's held-out accuracy and where its weights are stored.

Sites: ``readout`` (the model's trained final linear map, no block), ``attn`` (block l's
``attn.hook_z`` flattened to ``H·d_head`` coordinates: head h is coordinates ``h·d_head …
(h+1)·d_head − 1``), ``mlp`` (``blocks.{l}.mlp.hook_post``) and ``resid`` (the block output,
``blocks.{l}.hook_normalized_resid_post``).

**Block readouts** (:func:`block_readout`) are trained by :func:`nodeprobe.analysis.probe.fit_linear`
(raw activations; AdamW lr 1e-3, weight decay 1e-4, 30 epochs, batch 256, seeded) on

* classification: the **train split** — a second cache of the same model over the task's training
  items (``train``; FewRel: the 630 items per relation), the analysed items are the whole test split;
* MLM: a seeded half of the evaluation items (``fraction``); the analysed items are the other half.

The weights (``W``, ``b``, ``classes``), the analysed items' indices and the held-out accuracy are
saved under the cache's ``derived/`` as ``block-readout-<site>-L<l>-<key>.safetensors`` (key: a
hash of the settings and the training items' fingerprint), so anyone can recompute any unit with
numpy alone: ``argmax(x[cols] @ W[:, cols].T + b)`` over the rows, mapped through ``classes``.

Example:
    >>> sr = site_readout(cache, "attn", 5, train=train_cache)        # doctest: +SKIP
    >>> sr.X.shape, sr.W.shape, sr.accuracy                           # doctest: +SKIP
    (torch.Size([1120, 192]), torch.Size([16, 192]), 0.69)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from nodeprobe.analysis.probe import FitSettings, fit_linear, split_half
from nodeprobe.errors import NodeprobeError
from nodeprobe.studies._common import check_unit_site

BLOCK_SITES = ("attn", "mlp", "resid")
CACHE_SITE = {"readout": "readout", "attn": "z", "mlp": "mlp", "resid": "resid"}  # the cache site holding each


@dataclass(frozen=True)
class ReadoutSettings:
    """How block readouts are trained (METHODS v2 §2 defaults) and, for MLM, which share of the
    evaluation items trains them."""

    fit: FitSettings = field(default_factory=FitSettings)
    fraction: float = 0.5  # MLM only: the seeded share of the evaluation items that trains

    def check(self) -> None:
        self.fit.check()
        if not (isinstance(self.fraction, (int, float)) and 0.0 < self.fraction < 1.0):
            raise NodeprobeError(f"readout_fraction={self.fraction}: expected a number in (0, 1)")

    def key(self, train_fp: str) -> str:
        blob = json.dumps({"fit": asdict(self.fit), "fraction": self.fraction, "train": train_fp}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


@dataclass
class TrainSource:
    """The training items of a classification block readout: the train split's fingerprint
    (known without running the model) and how to get its cache (built only when a readout is
    not stored yet)."""

    fingerprint: str
    cache: Callable[[], object]


@dataclass(eq=False)
class SiteReadout:
    """One site of one block and its linear readout (see the module docstring)."""

    site: str
    layer: int | None
    X: Float[Tensor, "N d"]
    W: Float[Tensor, "Kp d"]
    b: Float[Tensor, "Kp"]
    classes: Int[Tensor, "Kp"]
    y: Int[Tensor, "N"]  # global class ids
    items: np.ndarray  # indices of the analysed items among the cache's items
    n_classes: int  # K (global)
    accuracy: float  # the readout's accuracy with every node of the site kept (held-out items)
    trained_on: str  # "model" (the model's readout) | "train split" | "half of the evaluation items"
    path: str | None = None  # where the block readout's weights are stored
    n_heads: int | None = None  # attn: heads and their width
    d_head: int | None = None

    @property
    def d(self) -> int:
        return int(self.X.shape[1])

    @property
    def n_rows(self) -> int:
        return int(self.W.shape[0])

    @property
    def y_local(self) -> Int[Tensor, "N"]:
        """Labels in the readout's class space: row index of the class, ``K'`` for an unseen class."""
        lut = torch.full((self.n_classes,), self.n_rows, dtype=torch.long)
        lut[self.classes] = torch.arange(self.n_rows)
        return lut[self.y]

    @property
    def n_local(self) -> int:
        """Classes of :attr:`y_local`: K' rows plus one 'unseen' class when some item has one."""
        return self.n_rows + int(bool((self.y_local == self.n_rows).any()))

    def to_global(self, local: Tensor | np.ndarray) -> Tensor:
        """Row indices → global class ids."""
        return self.classes[torch.as_tensor(np.asarray(local), dtype=torch.long)]

    def node_predictions(self, mode: str = "zero") -> Int[Tensor, "d N"]:
        """Every single node isolated under the readout (zero or mean mode): row indices
        ``[d, N]`` (map through :attr:`classes` for class ids), by the exact upper envelope."""
        from nodeprobe.analysis import node_predictions

        return node_predictions(self.W, self.b, self.X, mode, self.means() if mode == "mean" else None).T.contiguous()

    def means(self) -> Float[Tensor, "d"]:
        """Mean activation of each node over the analysed items (mean-mode isolation)."""
        return self.X.double().mean(0).float()

    def head_columns(self, head: int) -> np.ndarray:
        """The coordinates of head ``head`` at site ``attn``."""
        if self.site != "attn" or self.n_heads is None:
            raise NodeprobeError(f"site={self.site}: heads live at site=attn")
        if not 0 <= head < self.n_heads:
            raise NodeprobeError(f"head={head}: the block has heads 0–{self.n_heads - 1}")
        return np.arange(head * self.d_head, (head + 1) * self.d_head)

    def describe(self) -> dict:
        """The readout's facts for a report's JSON."""
        return {"site": self.site, "layer": self.layer, "d": self.d, "n_rows": self.n_rows,
                "n_items": int(self.y.numel()), "accuracy": self.accuracy, "trained_on": self.trained_on,
                "path": self.path}


def site_activations(cache, site: str, layer: int | None) -> Float[Tensor, "N d"]:
    """``[N, d]`` activations of a unit site at the evaluated positions, from a cache."""
    check_unit_site(site, layer, cache.n_layers)
    cache.check_site(CACHE_SITE[site])
    if site == "readout":
        return cache.readout()
    if site == "attn":
        z = cache.z(layer)
        return z.reshape(z.shape[0], -1)
    if site == "mlp":
        return cache.mlp(layer)
    return cache.resid(layer + 1)


def block_readout(cache, site: str, layer: int, *, train: TrainSource | object | None = None,
                  settings: ReadoutSettings = ReadoutSettings(), device: str = "cpu") -> SiteReadout:
    """The block readout of ``site`` at block ``layer`` (trained once, then read from ``derived/``)."""
    settings.check()
    X = site_activations(cache, site, layer)
    y = cache.targets()
    N = int(y.numel())
    if N == 0:
        raise NodeprobeError(f"cache {cache.path}: no items")
    mlm = cache.task == "mlm"
    if not mlm and train is None:
        raise NodeprobeError(f"site={site} on task {cache.task} needs the train split (train=…): its block readout is "
                             "trained there, never on the test items")
    if mlm:
        train_fp = f"eval-half-{cache.eval_fingerprint}"
    else:
        train_fp = train.fingerprint if isinstance(train, TrainSource) else train.eval_fingerprint
    name = f"block-readout-{site}-L{layer}-{settings.key(train_fp)}"

    def compute() -> dict[str, Tensor]:
        if mlm:
            tr, te = split_half(N, settings.fraction, settings.fit.seed)
            Xtr, ytr = X[torch.as_tensor(tr)], y[torch.as_tensor(tr)]
        else:
            tc = train.cache() if isinstance(train, TrainSource) else train
            if tc.model_fingerprint != cache.model_fingerprint:
                raise NodeprobeError(f"train cache {tc.path} is of another model than {cache.path}")
            Xtr, ytr = site_activations(tc, site, layer), tc.targets()
            te = np.arange(N)
        fit = fit_linear(Xtr, ytr, settings.fit, device)
        Xte, yte = X[torch.as_tensor(te)], y[torch.as_tensor(te)]
        acc = float((fit.predict(Xte) == yte).double().mean()) if te.size else float("nan")
        return {"W": fit.W.float().contiguous(), "b": fit.b.float().contiguous(), "classes": fit.classes.long(),
                "items": torch.as_tensor(te, dtype=torch.long), "accuracy": torch.tensor(acc, dtype=torch.float64),
                "n_train": torch.tensor(int(ytr.numel()))}

    got = cache.derived(name, compute)
    items = got["items"].numpy()
    H = cache.n_heads if site == "attn" else None
    return SiteReadout(
        site=site, layer=layer, X=X[torch.as_tensor(items)], W=got["W"], b=got["b"], classes=got["classes"],
        y=y[torch.as_tensor(items)], items=items, n_classes=cache.n_classes, accuracy=float(got["accuracy"]),
        trained_on="half of the evaluation items" if mlm else "train split",
        path=str(cache.path / "derived" / f"{name}.safetensors"),
        n_heads=H, d_head=(X.shape[1] // H) if H else None,
    )


def latent_site_readout(sr: SiteReadout, sae) -> SiteReadout:
    """An SAE's latents at ``sr``'s site as its units: ``F = encode(X)`` under the exact readout
    ``W_eff = W W_decᵀ``, ``b_eff = W b_dec + b`` (``logits = W x̂ + b`` is linear in f).

    Example:
        >>> lat = latent_site_readout(block_readout(cache, "mlp", 3), load_sae("sae/"))   # doctest: +SKIP
    """
    from nodeprobe.analysis.sae import check_site_sae, latent_readout

    check_site_sae(sae, sr.site, sr.layer, sr.d)
    W, b = latent_readout(sr.W, sr.b, sae)
    F = sae.encode(sr.X).float()
    return replace(sr, X=F, W=W.float(), b=b.float(), n_heads=None, d_head=None,
                   trained_on=f"{sr.trained_on}; SAE latents {sae.name}")


def site_readout(cache, site: str = "readout", layer: int | None = None, *, train=None,
                 settings: ReadoutSettings = ReadoutSettings(), device: str = "cpu", sae=None) -> SiteReadout:
    """The :class:`SiteReadout` of ``site`` (``readout``: the model's own map over all items; a
    block site: :func:`block_readout`); with ``sae`` at a block site, its latents as the units
    (:func:`latent_site_readout`; at ``readout`` use :class:`nodeprobe.analysis.sae.LatentView`)."""
    check_unit_site(site, layer, cache.n_layers)
    if site != "readout":
        sr = block_readout(cache, site, layer, train=train, settings=settings, device=device)
        return sr if sae is None else latent_site_readout(sr, sae)
    if sae is not None:
        raise NodeprobeError("sae at site=readout: wrap the cache in nodeprobe.analysis.sae.LatentView")
    X = site_activations(cache, "readout", None)
    y = cache.targets()
    K = cache.n_classes
    acc = float(cache.manifest.get("accuracy") or (cache.preds() == y).double().mean())
    return SiteReadout(site="readout", layer=None, X=X, W=cache.W, b=cache.b, classes=torch.arange(K), y=y,
                       items=np.arange(int(y.numel())), n_classes=K, accuracy=acc, trained_on="model",
                       path=str(cache.path / "readout.safetensors"))


def null_readout(sr: SiteReadout, seed: int = 0) -> SiteReadout:
    """The null model of METHODS §5: the readout's columns permuted among the nodes independently
    per class (seeded) — the same weights per class, no learned structure across nodes.

    Example:
        >>> import torch
        >>> sr = SiteReadout("readout", None, torch.zeros(2, 3), torch.arange(6.).reshape(2, 3), torch.zeros(2),
        ...                  torch.arange(2), torch.tensor([0, 1]), np.arange(2), 2, 1.0, "model")
        >>> sorted(null_readout(sr).W[1].tolist())
        [3.0, 4.0, 5.0]
    """
    rng = np.random.default_rng(seed)
    W = sr.W.clone()
    for k in range(W.shape[0]):
        W[k] = sr.W[k, torch.as_tensor(rng.permutation(W.shape[1]))]
    return replace(sr, W=W, path=None, trained_on=f"{sr.trained_on}, columns permuted per class (seed {seed})")
