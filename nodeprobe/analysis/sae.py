"""SAE latents as units at the ``readout`` site (docs/methods.md, "SAE latents as units").

An SAE trained on the readout vector x (``readout.hook_in``; an MLM's ``unembed.hook_in`` is the
same tensor) reconstructs it as ``x̂ = W_decᵀ f + b_dec`` from its latents ``f = encode(x)``.
Under the trained readout the logits of the reconstruction are linear in ``f``::

    W x̂ + b = (W W_decᵀ) f + (W b_dec + b) = W_eff f + b_eff

so the latents are exact linear *nodes* with readout ``W_eff = W @ W_dec.T`` ``[K, d_sae]`` and
``b_eff = W @ b_dec + b`` ``[K]``, and activations ``F = encode(X)`` ``[N, d_sae]``.  Every node
analysis (learned sets Λ, coverage, Jaccard, cooperation, hull bounds) applies unchanged.
Isolating latent set S: the other latents are 0 (**zero**; x̂ keeps b_dec, which sits in b_eff)
or their eval-set mean (mean).  The SAE's reconstruction error ``x − x̂`` is dropped: report
:func:`sae_fidelity` (explained variance, readout accuracy on x̂ against x) beside the results.

* :func:`load_sae` reads a folder written by SAELens's ``SAE.save_model`` (``cfg.json`` +
  ``sae_weights.safetensors``) into :class:`SAEWeights` — no ``sae_lens`` import;
* :meth:`SAEWeights.encode` / :meth:`SAEWeights.decode`: SAELens's inference formulas for the
  architectures ``standard``, ``topk``, ``abstopk``, ``jumprelu`` and ``gated``;
* :func:`latent_readout`: ``(W_eff, b_eff)``;
* :func:`check_readout_sae`: ``hook_name`` is the readout site and ``d_in == d_model``;
* :class:`LatentView`: a cache reader whose ``readout`` site holds the latents, so the
  :mod:`nodeprobe.studies` report functions run on them as they are.

Example:
    >>> import torch
    >>> sae = SAEWeights.from_tensors(W_enc=torch.eye(2), b_enc=torch.zeros(2), W_dec=2 * torch.eye(2),
    ...                               b_dec=torch.tensor([0.0, 1.0]), hook_name="readout.hook_in")
    >>> sae.encode(torch.tensor([[3.0, 0.0]])).tolist()        # relu((x − b_dec) W_enc + b_enc)
    [[3.0, 0.0]]
    >>> W_eff, b_eff = latent_readout(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.zeros(2), sae)
    >>> W_eff.tolist(), b_eff.tolist()
    ([[2.0, 0.0], [0.0, 2.0]], [0.0, 1.0])
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from nodeprobe.analysis._arrays import labels
from nodeprobe.analysis.confusion import argmax_lowest
from nodeprobe.errors import NodeprobeError, reason

#: what ``SAE.save_model`` writes (``sae_lens.constants``)
CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
#: the architectures :meth:`SAEWeights.encode` implements (SAELens's registered inference names)
ARCHITECTURES = ("standard", "topk", "abstopk", "jumprelu", "gated")
#: the names of the readout site (nodeprobe hook names; ``unembed.hook_in`` exists for an MLM only)
READOUT_HOOKS = ("readout.hook_in", "unembed.hook_in")
_ENCODE_CELLS = 1 << 22  # (item, latent) cells per encode chunk


# ---------------------------------------------------------------------- the weights
@dataclass(eq=False)
class SAEWeights:
    """An SAE's weights and the settings its encoder needs (SAELens names and layouts).

    Shapes: ``W_enc`` ``[d_in, d_sae]``, ``b_enc`` ``[d_sae]`` (``None`` for gated), ``W_dec``
    ``[d_sae, d_in]``, ``b_dec`` ``[d_in]``; ``threshold`` ``[d_sae]`` (jumprelu); ``b_gate``,
    ``b_mag``, ``r_mag`` ``[d_sae]`` (gated); ``k`` (topk, abstopk).  Floats are float32 (float64
    kept as stored; half precision is widened to float32, where SAELens would compute in half).
    """

    architecture: str
    W_enc: Tensor
    b_enc: Tensor | None
    W_dec: Tensor
    b_dec: Tensor
    apply_b_dec_to_input: bool = True
    k: int | None = None
    rescale_acts_by_decoder_norm: bool = False
    threshold: Tensor | None = None
    b_gate: Tensor | None = None
    b_mag: Tensor | None = None
    r_mag: Tensor | None = None
    hook_name: str | None = None
    path: str | None = None
    cfg: dict = field(default_factory=dict)

    @classmethod
    def from_tensors(cls, *, architecture: str = "standard", **kw) -> "SAEWeights":
        """Build from tensors (checked like :func:`load_sae` checks a folder).

        Example:
            >>> s = SAEWeights.from_tensors(W_enc=torch.zeros(3, 5), b_enc=torch.zeros(5),
            ...                             W_dec=torch.zeros(5, 3), b_dec=torch.zeros(3))
            >>> s.d_in, s.d_sae
            (3, 5)
        """
        sae = cls(architecture=architecture, **kw)
        _check_weights(sae, "sae")
        return sae

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    @property
    def name(self) -> str:
        """How reports name it: the folder, else ``the SAE``."""
        return self.path or "the SAE"

    @property
    def decoder(self) -> Float[Tensor, "d_sae d_in"]:
        """The rows that multiply the latents in :meth:`decode`: ``W_dec``, or ``W_dec / ‖W_dec‖``
        row-wise for a topk/abstopk SAE with ``rescale_acts_by_decoder_norm`` (SAELens divides
        the latents by the decoder norms before ``@ W_dec``; the same linear map)."""
        if self.rescale_acts_by_decoder_norm and self.architecture in ("topk", "abstopk"):
            return self.W_dec / self.W_dec.norm(dim=-1, keepdim=True)
        return self.W_dec

    def fingerprint(self) -> str:
        """16 hex digits of sha256 over the architecture, settings and every weight's bytes."""
        h = hashlib.sha256()
        h.update(json.dumps([self.architecture, self.apply_b_dec_to_input, self.k,
                             self.rescale_acts_by_decoder_norm]).encode())
        for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "b_gate", "b_mag", "r_mag"):
            t = getattr(self, name)
            if t is not None:
                h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        """The SAE's settings for a report's JSON."""
        return {"path": self.path, "architecture": self.architecture, "hook_name": self.hook_name,
                "d_in": self.d_in, "d_sae": self.d_sae, "k": self.k,
                "apply_b_dec_to_input": self.apply_b_dec_to_input,
                "rescale_acts_by_decoder_norm": self.rescale_acts_by_decoder_norm,
                "fingerprint": self.fingerprint()}

    # -- the maps
    def _pre(self, x: Tensor) -> Tensor:
        return x - self.b_dec * self.apply_b_dec_to_input  # SAELens's process_sae_in, same arithmetic

    def _encode_chunk(self, x: Tensor) -> Tensor:
        sae_in = self._pre(x)
        a = self.architecture
        if a == "gated":
            active = (sae_in @ self.W_enc + self.b_gate > 0).to(sae_in.dtype)
            mag = sae_in @ (self.W_enc * self.r_mag.exp()) + self.b_mag
            return active * torch.relu(mag)
        pre = sae_in @ self.W_enc + self.b_enc
        if a == "standard":
            return torch.relu(pre)
        if a == "jumprelu":
            return torch.relu(pre) * (pre > self.threshold).to(pre.dtype)
        if self.rescale_acts_by_decoder_norm:  # topk, abstopk
            pre = pre * self.W_dec.norm(dim=-1)
        out = torch.zeros_like(pre)
        if a == "topk":
            vals, idx = torch.topk(pre, k=self.k, dim=-1, sorted=False)
            return out.scatter_(-1, idx, vals.relu())
        idx = torch.topk(pre.abs(), k=self.k, dim=-1, sorted=False).indices  # abstopk: signed, no relu
        return out.scatter_(-1, idx, pre.gather(-1, idx))

    @torch.no_grad()
    def encode(self, X: Float[Tensor, "N d_in"]) -> Float[Tensor, "N d_sae"]:
        """Latent activations ``F = encode(X)`` (SAELens's inference ``encode``), in the weights'
        dtype, chunked over items.

        standard ``relu(x' W_enc + b_enc)``; jumprelu ``relu(h)·[h > threshold]``; topk the k
        largest of h (× ‖W_dec‖ with ``rescale_acts_by_decoder_norm``) through relu, the rest 0;
        abstopk the k largest |h|, signed; gated ``[x' W_enc + b_gate > 0] · relu(x' (W_enc ⊙
        exp r_mag) + b_mag)`` — with ``x' = x − b_dec`` when ``apply_b_dec_to_input``, else x.
        """
        X = torch.as_tensor(X)
        if X.ndim != 2 or X.shape[1] != self.d_in:
            raise NodeprobeError(f"X has shape {tuple(X.shape)}, the SAE {self.name} reads [N, {self.d_in}]")
        X = X.to(self.W_enc.dtype)
        step = max(1, _ENCODE_CELLS // max(self.d_sae, 1))
        parts = [self._encode_chunk(X[a:a + step]) for a in range(0, X.shape[0], step)]
        return torch.cat(parts) if parts else X.new_zeros((0, self.d_sae))

    @torch.no_grad()
    def decode(self, F: Float[Tensor, "N d_sae"]) -> Float[Tensor, "N d_in"]:
        """``x̂ = F @ decoder + b_dec`` (SAELens's ``decode`` without hooks)."""
        F = torch.as_tensor(F).to(self.W_dec.dtype)
        if self.rescale_acts_by_decoder_norm and self.architecture in ("topk", "abstopk"):
            return (F * (1 / self.W_dec.norm(dim=-1))) @ self.W_dec + self.b_dec
        return F @ self.W_dec + self.b_dec


# ---------------------------------------------------------------------- loading
def _cfg_hook_name(cfg: dict) -> str | None:
    meta = cfg.get("metadata")
    if isinstance(meta, dict) and meta.get("hook_name") is not None:
        return meta["hook_name"]
    return cfg.get("hook_name", cfg.get("hook_point"))


def _architecture(cfg: dict, where: str) -> str:
    """SAELens's architecture name, with its pre-6.0 defaults (``activation_fn`` topk → topk)."""
    arch = cfg.get("architecture")
    if arch is None:  # a pre-6.0 cfg.json
        fn = cfg.get("activation_fn", cfg.get("activation_fn_str", "relu"))
        if fn == "topk":
            arch = "topk"
        elif fn in (None, "relu"):
            arch = "standard"
        else:
            raise NodeprobeError(f"{where}: activation_fn {fn!r} is not supported (relu or topk)")
    if arch not in ARCHITECTURES:
        raise NodeprobeError(f"{where}: architecture {arch!r} is not supported (supported: {', '.join(ARCHITECTURES)})")
    return arch


def read_sae_config(path: str | Path) -> dict:
    """``cfg.json`` of an SAELens folder, checked (the weights are not read).

    One-line errors: not a folder; not an SAELens folder (naming the missing file); unreadable
    JSON; an architecture :meth:`SAEWeights.encode` does not implement; ``d_in``/``d_sae`` not
    positive integers; ``normalize_activations`` other than ``none`` (``layer_norm`` and
    ``constant_norm_rescale`` rescale each item, so x̂ is not linear in f; ``expected_average_only_in``
    and ``covariance_whitening`` SAELens folds into the weights at the end of training);
    ``reshape_activations`` other than ``none`` or ``hook_z`` (an SAE of ``attn.hook_z`` flattened to
    ``n_heads · d_head``, SAELens's order: the ``attn`` site's coordinates).
    """
    p = Path(path)
    where = f"sae={p}"
    if not p.is_dir():
        raise NodeprobeError(f"{where}: no such folder (give an SAELens SAE folder: {CFG_FILE} + {WEIGHTS_FILE})")
    for name in (CFG_FILE, WEIGHTS_FILE):
        if not (p / name).is_file():
            raise NodeprobeError(f"{where}: not an SAELens SAE folder (no {name})")
    try:
        cfg = json.loads((p / CFG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise NodeprobeError(f"{where}: {CFG_FILE} is not readable JSON ({reason(e)})") from None
    if not isinstance(cfg, dict):
        raise NodeprobeError(f"{where}: {CFG_FILE} is not a JSON object")
    cfg = dict(cfg)
    cfg["architecture"] = _architecture(cfg, where)
    for key in ("d_in", "d_sae"):
        v = cfg.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise NodeprobeError(f"{where}: {CFG_FILE} {key} is {v!r}, expected a positive integer")
    norm = cfg.get("normalize_activations", "none")
    if norm is False:
        norm = "none"  # pre-6.0 boolean
    if norm != "none":
        raise NodeprobeError(f"{where}: normalize_activations {norm!r} is not supported (only 'none': latents must "
                             "be linear units of x; fold a fixed normalisation into the weights first)")
    if cfg.get("reshape_activations", "none") not in ("none", "hook_z"):
        raise NodeprobeError(f"{where}: reshape_activations {cfg['reshape_activations']!r} is not supported "
                             "(none, or hook_z for an SAE of blocks.{l}.attn.hook_z at --site attn)")
    if cfg.get("hook_head_index") is not None:
        raise NodeprobeError(f"{where}: hook_head_index {cfg['hook_head_index']!r}: a head SAE, not a readout SAE")
    if cfg["architecture"] in ("topk", "abstopk"):
        k = cfg.get("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= cfg["d_sae"]:
            raise NodeprobeError(f"{where}: k is {k!r}, expected an integer 1–{cfg['d_sae']} (d_sae)")
        cfg["k"] = k
    cfg["hook_name"] = _cfg_hook_name(cfg)
    return cfg


_SHAPES = {"W_enc": ("d_in", "d_sae"), "b_enc": ("d_sae",), "W_dec": ("d_sae", "d_in"), "b_dec": ("d_in",),
           "threshold": ("d_sae",), "b_gate": ("d_sae",), "b_mag": ("d_sae",), "r_mag": ("d_sae",)}
_KEYS = {"standard": ("W_enc", "b_enc", "W_dec", "b_dec"), "topk": ("W_enc", "b_enc", "W_dec", "b_dec"),
         "abstopk": ("W_enc", "b_enc", "W_dec", "b_dec"), "jumprelu": ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"),
         "gated": ("W_enc", "W_dec", "b_dec", "b_gate", "b_mag", "r_mag")}


def _check_weights(sae: SAEWeights, where: str, dims: dict | None = None) -> None:
    """Every tensor of the architecture present, of its shape, floating and finite."""
    if sae.architecture not in _KEYS:
        raise NodeprobeError(f"{where}: architecture {sae.architecture!r} is not supported "
                             f"(supported: {', '.join(ARCHITECTURES)})")
    need = _KEYS[sae.architecture]
    for name in need:
        if getattr(sae, name) is None:
            raise NodeprobeError(f"{where}: no {name} tensor (the {sae.architecture} architecture needs "
                                 f"{', '.join(need)})")
    W_enc = sae.W_enc
    if W_enc.ndim != 2:
        raise NodeprobeError(f"{where}: W_enc has shape {tuple(W_enc.shape)}, expected [d_in, d_sae]")
    dims = dims or {"d_in": int(W_enc.shape[0]), "d_sae": int(W_enc.shape[1])}
    for name in need:
        t = getattr(sae, name)
        want = tuple(dims[s] for s in _SHAPES[name])
        if tuple(t.shape) != want:
            said = " × ".join(f"{s} {dims[s]}" for s in _SHAPES[name])
            raise NodeprobeError(f"{where}: {name} has shape {list(t.shape)}, expected {list(want)} ({said})")
        if not t.is_floating_point() or not torch.isfinite(t).all():
            raise NodeprobeError(f"{where}: {name} is not a finite floating tensor")
    if sae.architecture in ("topk", "abstopk"):
        if isinstance(sae.k, bool) or not isinstance(sae.k, int) or not 1 <= sae.k <= dims["d_sae"]:
            raise NodeprobeError(f"{where}: k is {sae.k!r}, expected an integer 1–{dims['d_sae']} (d_sae)")


def load_sae(path: str | Path) -> SAEWeights:
    """Read an SAELens SAE folder (``cfg.json`` + ``sae_weights.safetensors``, as ``SAE.save_model``
    writes it) into :class:`SAEWeights`, checked: :func:`read_sae_config`'s errors, then a missing,
    unexpected, misshapen or non-finite tensor (one line naming it and the expected shape).

    jumprelu folders of older SAELens versions hold ``log_threshold`` (read as ``exp``); a
    ``scaling_factor``/``finetuning_scaling_factor`` of all ones is ignored (SAELens drops it),
    any other is refused.

    Example:
        >>> sae = load_sae("runs/sae/readout")            # doctest: +SKIP
        >>> sae.architecture, sae.d_in, sae.d_sae         # doctest: +SKIP
        ('topk', 768, 6144)
    """
    from safetensors.torch import load_file

    cfg = read_sae_config(path)
    p = Path(path)
    where = f"sae={p}"
    try:
        sd = load_file(str(p / WEIGHTS_FILE))
    except Exception as e:  # a torn or foreign file: safetensors raises its own error types
        raise NodeprobeError(f"{where}: {WEIGHTS_FILE} is not a readable safetensors file ({reason(e)})") from None
    arch = cfg["architecture"]
    if arch == "jumprelu" and "threshold" not in sd and "log_threshold" in sd:
        sd["threshold"] = torch.exp(sd.pop("log_threshold"))
    for extra in ("scaling_factor", "finetuning_scaling_factor"):
        if extra in sd:
            t = sd.pop(extra)
            if not torch.equal(t, torch.ones_like(t)):
                raise NodeprobeError(f"{where}: a finetuning {extra} is not supported (fold it into W_dec first)")
    unknown = sorted(set(sd) - set(_KEYS[arch]))
    if unknown:
        raise NodeprobeError(f"{where}: unexpected tensor {unknown[0]!r} for the {arch} architecture "
                             f"(expected {', '.join(_KEYS[arch])})")

    def f(t):
        if t is None:
            return None
        return t if t.dtype in (torch.float32, torch.float64) or not t.is_floating_point() else t.float()

    sae = SAEWeights(architecture=arch, W_enc=f(sd.get("W_enc")), b_enc=f(sd.get("b_enc")), W_dec=f(sd.get("W_dec")),
                     b_dec=f(sd.get("b_dec")), apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
                     k=cfg.get("k"), rescale_acts_by_decoder_norm=bool(cfg.get("rescale_acts_by_decoder_norm", False)),
                     threshold=f(sd.get("threshold")), b_gate=f(sd.get("b_gate")), b_mag=f(sd.get("b_mag")),
                     r_mag=f(sd.get("r_mag")), hook_name=cfg["hook_name"], path=str(p), cfg=cfg)
    if sae.W_enc is None:
        raise NodeprobeError(f"{where}: no W_enc tensor (the {arch} architecture needs {', '.join(_KEYS[arch])})")
    _check_weights(sae, where, {"d_in": cfg["d_in"], "d_sae": cfg["d_sae"]})
    return sae


def check_readout_sae(sae: SAEWeights, d_model: int | None = None) -> None:
    """The SAE reads the readout site: its ``hook_name`` is one of :data:`READOUT_HOOKS` and (when
    ``d_model`` is given) ``d_in == d_model``; a one-line error naming the value otherwise.

    Example:
        >>> s = SAEWeights.from_tensors(W_enc=torch.zeros(3, 5), b_enc=torch.zeros(5), W_dec=torch.zeros(5, 3),
        ...                             b_dec=torch.zeros(3), hook_name="blocks.1.hook_resid_post")
        >>> check_readout_sae(s)
        Traceback (most recent call last):
        ...
        nodeprobe.errors.NodeprobeError: sae=the SAE: hook_name 'blocks.1.hook_resid_post' is not the readout site (allowed: readout.hook_in, unembed.hook_in)
    """
    where = f"sae={sae.name}"
    if sae.hook_name not in READOUT_HOOKS:
        said = "no hook_name" if sae.hook_name is None else f"hook_name {sae.hook_name!r}"
        raise NodeprobeError(f"{where}: {said} is not the readout site (allowed: {', '.join(READOUT_HOOKS)})")
    if (sae.cfg or {}).get("reshape_activations", "none") != "none":
        raise NodeprobeError(f"{where}: reshape_activations {sae.cfg['reshape_activations']!r} is for hook_z SAEs "
                             "(--site attn); the readout site needs 'none'")
    if d_model is not None and sae.d_in != d_model:
        raise NodeprobeError(f"{where}: d_in {sae.d_in} does not match the readout's d_model {d_model}")


SAE_SITES = ("readout", "attn", "resid", "mlp")  # where --sae latents are units


def site_hooks(site: str, layer: int | None) -> tuple[str, ...]:
    """The hook names an SAE of ``site`` (block ``layer``) may have been trained on.

    Example:
        >>> site_hooks("resid", 2)
        ('blocks.2.hook_normalized_resid_post', 'blocks.3.hook_resid_pre')
    """
    if site == "readout":
        return READOUT_HOOKS
    if site == "resid":  # the block output is also the next block's input
        return (f"blocks.{layer}.hook_normalized_resid_post", f"blocks.{layer + 1}.hook_resid_pre")
    if site == "mlp":
        return (f"blocks.{layer}.mlp.hook_post",)
    if site == "attn":  # SAELens hook_z SAEs: z flattened to n_heads · d_head (reshape_activations hook_z)
        return (f"blocks.{layer}.attn.hook_z",)
    raise NodeprobeError(f"sae at site={site}: supported at {', '.join(SAE_SITES)}")


def check_site_sae(sae: SAEWeights, site: str = "readout", layer: int | None = None, d: int | None = None) -> None:
    """The SAE reads ``site`` of block ``layer``: its ``hook_name`` is one of :func:`site_hooks` and
    (when ``d`` is given) ``d_in == d``; a one-line error naming the value otherwise.

    Example:
        >>> s = SAEWeights.from_tensors(W_enc=torch.zeros(3, 5), b_enc=torch.zeros(5), W_dec=torch.zeros(5, 3),
        ...                             b_dec=torch.zeros(3), hook_name="blocks.1.mlp.hook_post")
        >>> check_site_sae(s, "mlp", 1, 3)
    """
    if site == "readout":
        check_readout_sae(sae, d)
        return
    where = f"sae={sae.name}"
    allowed = site_hooks(site, layer)
    if sae.hook_name not in allowed:
        said = "no hook_name" if sae.hook_name is None else f"hook_name {sae.hook_name!r}"
        raise NodeprobeError(f"{where}: {said} is not site {site} of block {layer} (allowed: {', '.join(allowed)})")
    reshape = (sae.cfg or {}).get("reshape_activations", "none")
    if (site == "attn") != (reshape == "hook_z"):
        raise NodeprobeError(f"{where}: reshape_activations {reshape!r} does not fit site {site} "
                             "(hook_z SAEs read --site attn; every other site needs 'none')")
    if d is not None and sae.d_in != d:
        raise NodeprobeError(f"{where}: d_in {sae.d_in} does not match site {site}'s {d} nodes")


# ---------------------------------------------------------------------- latents as nodes
@torch.no_grad()
def latent_readout(W: Float[Tensor, "K d_in"], b: Float[Tensor, "K"],
                   sae: SAEWeights) -> tuple[Float[Tensor, "K d_sae"], Float[Tensor, "K"]]:
    """The latents' exact readout: ``W_eff = W @ decoderᵀ`` ``[K, d_sae]``, ``b_eff = W @ b_dec + b``
    ``[K]`` (computed in float64 in blocks of classes, returned in W's dtype), so that
    ``W_eff f + b_eff = W decode(f) + b`` for every f.

    Example:
        >>> sae = SAEWeights.from_tensors(W_enc=torch.ones(1, 2), b_enc=torch.zeros(2),
        ...                               W_dec=torch.tensor([[1.0], [-1.0]]), b_dec=torch.tensor([0.5]))
        >>> [t.tolist() for t in latent_readout(torch.tensor([[2.0]]), torch.tensor([1.0]), sae)]
        [[[2.0, -2.0]], [2.0]]
    """
    W = torch.as_tensor(W)
    b = torch.as_tensor(b)
    if W.ndim != 2 or W.shape[1] != sae.d_in:
        raise NodeprobeError(f"W has shape {tuple(W.shape)}, the SAE {sae.name} has d_in {sae.d_in}")
    if b.shape != (W.shape[0],):
        raise NodeprobeError(f"b has shape {tuple(b.shape)}, expected ({W.shape[0]},) to match W")
    dt = W.dtype if W.is_floating_point() else torch.float32
    D = sae.decoder.double()
    b_dec = sae.b_dec.double()
    step = max(1, (1 << 24) // max(sae.d_sae, 1))
    W_eff = torch.empty((W.shape[0], sae.d_sae), dtype=dt)
    for a in range(0, W.shape[0], step):
        W_eff[a:a + step] = (W[a:a + step].double() @ D.T).to(dt)
    b_eff = (W.double() @ b_dec + b.double()).to(dt)
    return W_eff, b_eff


@dataclass(frozen=True)
class SAEFidelity:
    """How much of the readout the SAE keeps (the part the latent analyses see).

    ``explained_variance`` = 1 − Σ‖x − x̂‖² / Σ‖x − x̄‖²; ``acc_x`` / ``acc_xhat`` the trained
    readout's accuracy on x and on x̂ (argmax, ties → lowest index); ``agreement`` the share of
    items where both argmaxes agree; ``mean_l0`` mean active latents per item; ``n_dead`` latents
    never active on these items.
    """

    n_items: int
    d_sae: int
    explained_variance: float
    acc_x: float
    acc_xhat: float
    agreement: float
    mean_l0: float
    n_dead: int


@torch.no_grad()
def sae_fidelity(W: Float[Tensor, "K d_in"], b: Float[Tensor, "K"], X: Float[Tensor, "N d_in"],
                 y: Int[Tensor, "N"], sae: SAEWeights, F: Float[Tensor, "N d_sae"] | None = None,
                 n_classes: int | None = None) -> SAEFidelity:
    """:class:`SAEFidelity` of ``sae`` on readout vectors X with labels y (``F``: ``encode(X)`` if
    already computed), in float64.

    Example:
        >>> sae = SAEWeights.from_tensors(W_enc=torch.eye(2), b_enc=torch.zeros(2), W_dec=torch.eye(2),
        ...                               b_dec=torch.zeros(2))
        >>> X = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> r = sae_fidelity(torch.eye(2), torch.zeros(2), X, torch.tensor([0, 1]), sae)
        >>> r.explained_variance, r.acc_xhat, r.mean_l0
        (1.0, 1.0, 1.0)
    """
    X = torch.as_tensor(X)
    K = int(torch.as_tensor(W).shape[0])
    yt = torch.from_numpy(labels(y, "y", K if n_classes is None else int(n_classes)))  # labels ≥ K: no row
    if X.ndim != 2 or X.shape[0] != yt.numel():
        raise NodeprobeError(f"X has shape {tuple(X.shape)}, expected one row per label ({yt.numel()})")
    if yt.numel() == 0:
        raise NodeprobeError("no items: y is empty")
    F = sae.encode(X) if F is None else torch.as_tensor(F)
    Xd, Wd, bd = X.double(), torch.as_tensor(W).double(), torch.as_tensor(b).double()
    err = tot = 0.0
    correct_x = correct_h = agree = 0
    mean = Xd.mean(0)
    step = max(1, _ENCODE_CELLS // max(sae.d_sae, K, 1))
    for a in range(0, Xd.shape[0], step):
        x = Xd[a:a + step]
        xh = sae.decode(F[a:a + step]).double()
        err += float(((x - xh) ** 2).sum())
        tot += float(((x - mean) ** 2).sum())
        px = argmax_lowest(x @ Wd.T + bd)
        ph = argmax_lowest(xh @ Wd.T + bd)
        t = yt[a:a + step]
        correct_x += int((px == t).sum())
        correct_h += int((ph == t).sum())
        agree += int((px == ph).sum())
    N = int(yt.numel())
    active = F != 0
    return SAEFidelity(n_items=N, d_sae=sae.d_sae, explained_variance=1.0 - err / tot if tot > 0 else float("nan"),
                       acc_x=correct_x / N, acc_xhat=correct_h / N, agreement=agree / N,
                       mean_l0=float(active.sum(1).double().mean()), n_dead=int((~active.any(0)).sum()))


class LatentView:
    """A cache reader (:class:`nodeprobe.cache.CacheReader`) seen through an SAE: its ``readout``
    site holds the latents ``F = encode(X)`` and its readout is :func:`latent_readout`, so the
    readout report functions (:mod:`nodeprobe.studies` ``specialization_report``,
    ``cooperation_report``, ``hull_report``) run on the latents unchanged.

    ``W`` ``[K, d_sae]``, ``b`` ``[K]``, ``readout()`` ``[N, d_sae]`` (float32), ``means("readout")``
    ``[d_sae]`` (the latents' eval-set means: mean-mode isolation sets the other latents there),
    ``load``/``iter_shards`` of ``readout``, ``d_model`` = d_sae (the number of units at the site);
    ``derived`` results are kept under a name that includes the SAE's fingerprint; everything else
    (targets, class names, fingerprints, manifest, other sites) is the wrapped cache's.
    Computed once, on first use.

    Example:
        >>> view = LatentView(cache, load_sae("runs/sae/readout"))      # doctest: +SKIP
        >>> specialization_report(view).families[0].mean_size           # doctest: +SKIP
    """

    def __init__(self, cache, sae: SAEWeights, *, check_hook: bool = True):
        if check_hook:
            check_readout_sae(sae, int(cache.d_readout))
        elif sae.d_in != int(cache.d_readout):
            raise NodeprobeError(f"sae={sae.name}: d_in {sae.d_in} does not match the readout's width {cache.d_readout}")
        self.cache = cache
        self.sae = sae
        self._F = self._W = self._b = self._mu = None

    def __getattr__(self, name: str) -> Any:  # only for what this class does not define
        if name in ("cache", "sae"):
            raise AttributeError(name)
        return getattr(self.cache, name)

    @property
    def d_model(self) -> int:
        """The number of units at the readout site: d_sae."""
        return self.sae.d_sae

    @property
    def d_sae(self) -> int:
        return self.sae.d_sae

    def _readout(self) -> None:
        self._W, self._b = latent_readout(self.cache.W, self.cache.b, self.sae)

    @property
    def W(self) -> Tensor:
        """``[K, d_sae]`` = ``W @ decoderᵀ``."""
        if self._W is None:
            self._readout()
        return self._W

    @property
    def b(self) -> Tensor:
        """``[K]`` = ``W @ b_dec + b``."""
        if self._b is None:
            self._readout()
        return self._b

    def readout(self) -> Tensor:
        """``[N, d_sae]`` latent activations of the cached readout vectors (float32)."""
        if self._F is None:
            self._F = self.sae.encode(self.cache.readout()).float()
        return self._F

    def load(self, key: str, dtype: torch.dtype | None = torch.float32) -> Tensor:
        if key == "readout":
            F = self.readout()
            return F.to(dtype) if dtype is not None else F
        return self.cache.load(key, dtype)

    def iter_shards(self, keys):
        for d in self.cache.iter_shards(keys):
            if "readout" in d:
                d = {**d, "readout": self.sae.encode(d["readout"].float()).float()}
            yield d

    def means(self, key: str) -> Tensor:
        """``means("readout")``: ``[d_sae]`` eval-set mean of each latent (float64 accumulation)."""
        if key != "readout":
            return self.cache.means(key)
        if self._mu is None:
            F = self.readout()
            if F.shape[0] == 0:
                raise NodeprobeError(f"cache {self.cache.path}: no items")
            self._mu = F.double().mean(0).float()
        return self._mu

    def derived(self, name: str, compute: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
        return self.cache.derived(f"sae-{self.sae.fingerprint()}-{name}", compute)

    def fidelity(self) -> SAEFidelity:
        """:func:`sae_fidelity` on the cached items."""
        return sae_fidelity(self.cache.W, self.cache.b, self.cache.readout(), self.cache.targets(), self.sae,
                            F=self.readout())


__all__ = ["ARCHITECTURES", "CFG_FILE", "LatentView", "READOUT_HOOKS", "SAE_SITES", "check_site_sae", "site_hooks", "SAEFidelity", "SAEWeights", "WEIGHTS_FILE",
           "check_readout_sae", "latent_readout", "load_sae", "read_sae_config", "sae_fidelity"]
