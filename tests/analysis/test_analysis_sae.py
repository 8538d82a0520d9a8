"""SAE latents as units at the readout (``nodeprobe.analysis.sae``).

* a hand-built SAE (cfg.json + sae_weights.safetensors written here, SAELens's layout) on a tiny
  classifier readout whose latents carry known, disjoint label sets: the learned sets of the
  latents equal the designed sets, and equal a numpy-only recomputation (confusion → recall/lift →
  Λ, METHODS §3) from the SAE's and the readout's weights, in zero and mean mode;
* the existing readout reports run on :class:`LatentView` unchanged;
* ``encode``/``decode`` against SAELens's own for every architecture (skipped without ``sae_lens``:
  run in the TL 3.9 environment, ``/work/venv39``);
* bad folders: one-line errors naming the file, architecture, tensor or shape.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as np_load_file
from safetensors.numpy import save_file as np_save_file

from nodeprobe.analysis import node_predictions
from nodeprobe.analysis.sae import (
    READOUT_HOOKS,
    LatentView,
    SAEWeights,
    check_readout_sae,
    latent_readout,
    load_sae,
    sae_fidelity,
)
from nodeprobe.cache.store import CacheReader
from nodeprobe.errors import NodeprobeError

K, D, D_SAE, PER_CLASS = 7, 8, 5, 12
DESIGNED = [(0, 1), (2, 3), (4, 5), (), ()]  # latent i → the labels it carries; 3 fires but reads nothing, 4 is dead


# ---------------------------------------------------------------------- the designed classifier and SAE
def designed():
    """Readout W = [I_7 | 0], b = 0 (class 6 = "other"); decoder rows D_i = e_{2i} + 2 e_{2i+1} (i < 3),
    D_3 = e_7 (the readout ignores it), D_4 = e_6 with a dead encoder; b_dec = −e1 − e3 − e5 + 0.1 e6.
    Isolated latent i (i < 3) at f: class 2i scores f, class 2i+1 scores 2f − 1, class 6 scores 0.1,
    so f ≈ 0.5 → 2i, f ≈ 2 → 2i+1, f ≈ 0 → 6.  Items of class 2i sit at b_dec + 0.5 D_i, of 2i+1 at
    b_dec + 2 D_i, of class 6 at b_dec + D_3 (+ noise 0.01)."""
    W = np.zeros((K, D), np.float32)
    W[np.arange(K), np.arange(K)] = 1.0
    b = np.zeros(K, np.float32)
    W_dec = np.zeros((D_SAE, D), np.float32)
    for i in range(3):
        W_dec[i, 2 * i], W_dec[i, 2 * i + 1] = 1.0, 2.0
    W_dec[3, 7] = 1.0
    W_dec[4, 6] = 1.0
    b_dec = np.zeros(D, np.float32)
    b_dec[[1, 3, 5]] = -1.0
    b_dec[6] = 0.1
    W_enc = (W_dec / (W_dec ** 2).sum(1, keepdims=True)).T.copy()
    W_enc[:, 4] = 0.0
    b_enc = np.array([0, 0, 0, 0, -1], np.float32)
    rng = np.random.default_rng(0)
    X, y = [], []
    for k in range(K):
        if k < 6:
            f, row = (0.5 if k % 2 == 0 else 2.0), W_dec[k // 2]
        else:
            f, row = 1.0, W_dec[3]
        X.append(b_dec + f * row + 0.01 * rng.standard_normal((PER_CLASS, D)))
        y += [k] * PER_CLASS
    return W, b, np.concatenate(X).astype(np.float32), np.array(y), dict(W_enc=W_enc, b_enc=b_enc, W_dec=W_dec, b_dec=b_dec)


def write_sae(folder: Path, weights: dict, architecture="standard", hook="readout.hook_in", dims=None, **cfg_kw) -> Path:
    """An SAE folder as SAELens 6's ``SAE.save_model`` writes it (``dims``: cfg's (d_in, d_sae), default W_enc's)."""
    folder.mkdir(parents=True, exist_ok=True)
    d_in, d_sae = dims or weights["W_enc"].shape
    cfg = {"d_in": int(d_in), "d_sae": int(d_sae), "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
           "normalize_activations": "none", "reshape_activations": "none",
           "metadata": {"sae_lens_version": "6.54.12", "hook_name": hook}, "architecture": architecture, **cfg_kw}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    np_save_file({k: np.ascontiguousarray(v) for k, v in weights.items()}, str(folder / "sae_weights.safetensors"))
    return folder


def write_cache(folder: Path, W, b, X, y, n_shards: int = 2) -> CacheReader:
    """A readout cache in nodeprobe's on-disk layout (manifest, shards, readout.safetensors)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({"W": torch.tensor(W), "b": torch.tensor(b)}, str(folder / "readout.safetensors"))
    (folder / "classes.json").write_text(json.dumps([f"relation {k}" for k in range(len(b))]))
    preds = (X @ W.T + b).argmax(1)
    shards = []
    for s, idx in enumerate(np.array_split(np.arange(len(y)), n_shards)):
        name = f"shard-{s:05d}.safetensors"
        save_file({"readout": torch.tensor(X[idx]), "targets": torch.tensor(y[idx]), "preds": torch.tensor(preds[idx]),
                   "loss": torch.zeros(len(idx))}, str(folder / name))
        shards.append({"file": name, "n_items": len(idx)})
    N = len(y)
    manifest = {"format": 2, "model_fingerprint": "0" * 16, "eval_fingerprint": "1" * 16, "task": "fewrel",
                "model_task": "cls", "seed": 0, "source": "synthetic", "sites": ["readout"], "n_classes": len(b),
                "n_layers": 1, "n_heads": 2, "d_model": X.shape[1], "d_head": X.shape[1] // 2, "dtype": "float32",
                "readout_file": "readout.safetensors", "class_names_file": "classes.json", "shards": shards,
                "shapes": {"readout": [N, X.shape[1]], "targets": [N], "preds": [N], "loss": [N]}, "n_items": N,
                "accuracy": float((preds == y).mean())}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return CacheReader(folder, manifest)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    W, b, X, y, weights = designed()
    root = tmp_path_factory.mktemp("sae_case")
    sae_dir = write_sae(root / "sae", weights)
    return dict(W=W, b=b, X=X, y=y, sae_dir=sae_dir, cache=write_cache(root / "cache", W, b, X, y))


# ---------------------------------------------------------------------- the numpy-only recomputation (METHODS §3)
def numpy_learned_sets(sae_dir: Path, W, b, X, y, mode: str, tau_r=0.5, tau_l=2.0, n_min=5) -> list[tuple[int, ...]]:
    """Λ of every latent from the folder's weights and the readout, with numpy alone (standard SAE)."""
    w = np_load_file(str(sae_dir / "sae_weights.safetensors"))
    W, b, X = (np.asarray(a, np.float64) for a in (W, b, X))
    F = np.maximum((X - w["b_dec"]) @ w["W_enc"] + w["b_enc"], 0.0)  # encode
    W_eff = W @ w["W_dec"].T.astype(np.float64)                    # [K, d_sae]
    b_eff = W @ w["b_dec"].astype(np.float64) + b
    mu = F.mean(0)
    N, Kc = len(y), len(b)
    Nk = np.bincount(y, minlength=Kc)
    out = []
    for i in range(F.shape[1]):
        bias = b_eff if mode == "zero" else b_eff + W_eff @ mu - W_eff[:, i] * mu[i]
        pred = np.argmax(F[:, i, None] * W_eff[None, :, i] + bias[None], axis=1)  # first index on ties
        C = np.zeros((Kc, Kc), np.int64)
        np.add.at(C, (y, pred), 1)
        diag, col = np.diag(C), C.sum(0)
        lam = []
        for k in range(Kc):
            if diag[k] == 0:
                continue
            recall, lift = diag[k] / Nk[k], (diag[k] / col[k]) / (Nk[k] / N)
            if recall >= tau_r and lift >= tau_l and diag[k] >= n_min:
                lam.append(k)
        out.append(tuple(lam))
    return out


# ---------------------------------------------------------------------- designed sets
def test_load_sae_reads_the_folder(case):
    sae = load_sae(case["sae_dir"])
    assert (sae.architecture, sae.d_in, sae.d_sae, sae.hook_name) == ("standard", D, D_SAE, "readout.hook_in")
    assert sae.apply_b_dec_to_input and sae.W_enc.dtype == torch.float32
    check_readout_sae(sae, D)
    assert len(sae.fingerprint()) == 16 and sae.describe()["d_sae"] == D_SAE


def test_latent_readout_is_the_readout_of_the_reconstruction(case):
    sae = load_sae(case["sae_dir"])
    W, b = torch.tensor(case["W"]), torch.tensor(case["b"])
    W_eff, b_eff = latent_readout(W, b, sae)
    assert W_eff.shape == (K, D_SAE) and b_eff.shape == (K,)
    F = torch.rand(20, D_SAE, dtype=torch.float64)
    want = sae.decode(F).double() @ W.double().T + b.double()
    torch.testing.assert_close(F @ W_eff.double().T + b_eff.double(), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_learned_sets_per_latent_match_design_and_numpy(case, mode):
    from nodeprobe.studies.specialization import specialization_report

    view = LatentView(case["cache"], load_sae(case["sae_dir"]))
    rep = specialization_report(view, mode=mode)
    got = [tuple(c.cls for c in u.learned) for u in rep.units]
    assert len(got) == D_SAE
    assert got == numpy_learned_sets(case["sae_dir"], case["W"], case["b"], case["X"], case["y"], mode)
    if mode == "zero":
        assert got == DESIGNED
        assert rep.families[0].coverage == pytest.approx(6 / 7) and rep.families[0].mean_jaccard == 0.0


def test_a_latent_alone_is_the_readout_of_its_own_reconstruction(case):
    """Zero mode: latent i's isolated prediction = argmax W (b_dec + f_i d_i) + b — the SAE's own decode."""
    sae = load_sae(case["sae_dir"])
    view = LatentView(case["cache"], sae)
    F = view.readout()
    preds = node_predictions(view.W, view.b, F)
    W, b = torch.tensor(case["W"]).double(), torch.tensor(case["b"]).double()
    for i in range(D_SAE):
        only = torch.zeros_like(F)
        only[:, i] = F[:, i]
        direct = (sae.decode(only).double() @ W.T + b).argmax(1)
        assert torch.equal(preds[:, i], direct), i


def test_view_delegates_and_means(case):
    cache, sae = case["cache"], load_sae(case["sae_dir"])
    view = LatentView(cache, sae)
    assert view.d_model == D_SAE and view.n_classes == K and view.task == "fewrel" and view.n_items == len(case["y"])
    assert torch.equal(view.targets(), cache.targets()) and view.class_names == cache.class_names
    F = view.readout()
    torch.testing.assert_close(F, sae.encode(torch.tensor(case["X"])))
    torch.testing.assert_close(view.means("readout"), F.double().mean(0).float())
    torch.testing.assert_close(torch.cat([d["readout"] for d in view.iter_shards(["readout"])]), F)
    assert torch.equal(view.load("readout"), F) and view.means("readout").shape == (D_SAE,)
    assert F[:, 4].abs().max() == 0  # the dead latent


def test_fidelity_of_the_designed_sae(case):
    view = LatentView(case["cache"], load_sae(case["sae_dir"]))
    f = view.fidelity()
    assert f.acc_x == 1.0 and f.acc_xhat == 1.0 and f.agreement == 1.0 and f.n_dead == 1
    assert 0.99 < f.explained_variance <= 1.0 and f.n_items == K * PER_CLASS
    X = torch.tensor(case["X"], dtype=torch.float64)
    Xh = view.sae.decode(view.readout()).double()
    ev = 1 - ((X - Xh) ** 2).sum() / ((X - X.mean(0)) ** 2).sum()
    assert f.explained_variance == pytest.approx(float(ev), rel=1e-6)


def test_reports_run_on_latents(case):
    from nodeprobe.studies import cooperation_report, hull_report
    from nodeprobe.studies.sae import sae_comparison

    view = LatentView(case["cache"], load_sae(case["sae_dir"]))
    co = cooperation_report(view, R=3, grid=(1, 2, 5))
    assert co.d_model == D_SAE and [r.n for r in co.rows] == [1, 2, 5] and co.n_single_covered == 6
    h = hull_report(view, n=1)
    assert len(h.rows) == D_SAE and [r.n_learned for r in h.rows] == [len(s) for s in DESIGNED]
    assert all(r.acc <= r.ub_data + 1e-9 for r in h.rows)
    cmp = sae_comparison(case["cache"], load_sae(case["sae_dir"]), "specialization")
    s, n = cmp.summary["sae"], cmp.summary["nodes"]
    assert (s.n_units, s.n_nonempty, s.n_covered, s.mean_size) == (D_SAE, 3, 6, 6 / D_SAE)
    assert n.n_units == D and s.accuracy == 1.0 and cmp.sae.units[0].unit == "latent 0"
    assert cmp.sae.families[0].name == "SAE latents" and cmp.nodes.families[0].name == "readout nodes"
    for command, kw in (("cooperation", dict(R=2, grid=(1, 2))), ("hull", dict(nodes="0,2"))):
        c = sae_comparison(case["cache"], load_sae(case["sae_dir"]), command, **kw)
        assert c.summary["sae"].n_covered == 6 and c.summary["nodes"].n_units == D


# ---------------------------------------------------------------------- bad input
def _base(tmp_path, **changes):
    w = designed()[4]
    w.update(changes.pop("weights", {}))
    for k in changes.pop("drop", ()):
        w.pop(k)
    return write_sae(tmp_path / "s", w, dims=(D, D_SAE), **changes)


def _spoil(folder: Path, name: str, text: str | None) -> Path:
    """Remove (``None``) or overwrite one file of an SAE folder."""
    if text is None:
        (folder / name).unlink()
    else:
        (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize("make,msg", [
    (lambda t: t / "none", "no such folder"),
    (lambda t: (t / "empty").mkdir() or t / "empty", "not an SAELens SAE folder (no cfg.json)"),
    (lambda t: _spoil(_base(t), "sae_weights.safetensors", None), "no sae_weights.safetensors"),
    (lambda t: _spoil(_base(t), "cfg.json", "{oops"), "cfg.json is not readable JSON"),
    (lambda t: _spoil(_base(t), "sae_weights.safetensors", "not safetensors"), "is not a readable safetensors file"),
    (lambda t: _base(t, architecture="transcoder"), "architecture 'transcoder' is not supported (supported: standard"),
    (lambda t: _base(t, architecture="topk"), "k is None"),
    (lambda t: _base(t, normalize_activations="layer_norm"), "normalize_activations 'layer_norm' is not supported"),
    (lambda t: _base(t, weights={"W_enc": np.zeros((D_SAE, D), np.float32)}), "W_enc has shape [5, 8], expected [8, 5]"),
    (lambda t: _base(t, weights={"W_dec": np.zeros((D_SAE, D + 1), np.float32)}), "W_dec has shape [5, 9], expected [5, 8]"),
    (lambda t: _base(t, weights={"b_dec": np.zeros(3, np.float32)}), "b_dec has shape [3], expected [8] (d_in 8)"),
    (lambda t: _base(t, drop=("b_enc",)), "no b_enc tensor"),
    (lambda t: _base(t, weights={"extra": np.zeros(2, np.float32)}), "unexpected tensor 'extra'"),
    (lambda t: _base(t, weights={"b_enc": np.full(D_SAE, np.nan, np.float32)}), "b_enc is not a finite"),
    (lambda t: _base(t, architecture="jumprelu"), "no threshold tensor"),
], ids=["missing", "empty", "no-weights", "bad-json", "bad-weights", "transcoder", "topk-no-k", "layer-norm", "W_enc-T",
        "W_dec-shape", "b_dec-shape", "no-b_enc", "extra-key", "nan", "jumprelu-no-threshold"])
def test_load_sae_bad_input_one_line(tmp_path, make, msg):
    path = make(tmp_path)
    with pytest.raises(NodeprobeError) as e:
        load_sae(path)
    assert msg in str(e.value) and "\n" not in str(e.value) and str(e.value).startswith(f"sae={path}")


def test_check_readout_sae(case, tmp_path):
    sae = load_sae(write_sae(tmp_path / "resid", designed()[4], hook="blocks.1.hook_normalized_resid_post"))
    with pytest.raises(NodeprobeError, match=r"hook_name 'blocks.1.hook_normalized_resid_post' is not the readout "
                                             r"site \(allowed: readout.hook_in, unembed.hook_in\)"):
        check_readout_sae(sae)
    with pytest.raises(NodeprobeError, match="no hook_name is not the readout site"):
        check_readout_sae(load_sae(write_sae(tmp_path / "nohook", designed()[4], hook=None)))
    ok = load_sae(case["sae_dir"])
    with pytest.raises(NodeprobeError, match="d_in 8 does not match the readout's d_model 16"):
        check_readout_sae(ok, 16)
    with pytest.raises(NodeprobeError, match="not the readout site"):
        LatentView(case["cache"], sae)


def test_readout_hook_names_are_nodeprobe_names():
    from nodeprobe.model.names import READOUT_IN

    assert READOUT_HOOKS[0] == READOUT_IN
    from _tiny_models import tiny_model

    hooks = set(tiny_model("mlm").hook_dict)
    assert set(READOUT_HOOKS) <= hooks and READOUT_IN in set(tiny_model("cls").hook_dict)


def test_pre_6_cfg_and_log_threshold(tmp_path):
    w = designed()[4]
    folder = write_sae(tmp_path / "old", w)
    cfg = json.loads((folder / "cfg.json").read_text())
    for k in ("architecture", "metadata"):
        cfg.pop(k)
    cfg["hook_point"] = "readout.hook_in"
    cfg["activation_fn_str"] = "relu"
    (folder / "cfg.json").write_text(json.dumps(cfg))
    sae = load_sae(folder)
    assert sae.architecture == "standard" and sae.hook_name == "readout.hook_in"
    jr = write_sae(tmp_path / "jr", {**w, "log_threshold": np.log(np.full(D_SAE, 0.3, np.float32))}, architecture="jumprelu")
    torch.testing.assert_close(load_sae(jr).threshold, torch.full((D_SAE,), 0.3))


def test_sae_fidelity_and_encode_shape_errors(case):
    sae = load_sae(case["sae_dir"])
    with pytest.raises(NodeprobeError, match=r"reads \[N, 8\]"):
        sae.encode(torch.zeros(3, 4))
    with pytest.raises(NodeprobeError, match="d_in 8"):
        latent_readout(torch.zeros(K, 4), torch.zeros(K), sae)
    with pytest.raises(NodeprobeError, match="one row per label"):
        sae_fidelity(torch.tensor(case["W"]), torch.tensor(case["b"]), torch.zeros(3, D), torch.zeros(4, dtype=torch.long), sae)


# ---------------------------------------------------------------------- against SAELens (TL 3.9 environment)
SAELENS_CASES = [
    ("standard", {}), ("standard", {"apply_b_dec_to_input": False}),
    ("topk", {"k": 4}), ("topk", {"k": 5, "rescale_acts_by_decoder_norm": True}),
    ("abstopk", {"k": 3}), ("jumprelu", {}), ("jumprelu", {"apply_b_dec_to_input": False}), ("gated", {}),
]


@pytest.mark.parametrize("arch,kw", SAELENS_CASES, ids=[f"{a}-{'-'.join(f'{k}={v}' for k, v in kw.items())}"
                                                        for a, kw in SAELENS_CASES])
def test_encode_matches_saelens(arch, kw, tmp_path):
    sae_lens = pytest.importorskip("sae_lens", exc_type=ImportError)
    from sae_lens.saes.sae import SAEMetadata

    classes = {"standard": ("StandardSAE", "StandardSAEConfig"), "topk": ("TopKSAE", "TopKSAEConfig"),
               "abstopk": ("AbsTopKSAE", "AbsTopKSAEConfig"), "jumprelu": ("JumpReLUSAE", "JumpReLUSAEConfig"),
               "gated": ("GatedSAE", "GatedSAEConfig")}[arch]
    sae_cls, cfg_cls = (getattr(sae_lens, c) for c in classes)
    d_in, d_sae = 12, 24
    cfg = cfg_cls(d_in=d_in, d_sae=d_sae, metadata=SAEMetadata(hook_name="readout.hook_in"), **kw)
    theirs = sae_cls(cfg)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if name in ("threshold", "r_mag") else 1.0))
            if name == "threshold":
                p.abs_()
    theirs.save_model(tmp_path / "sae")
    ours = load_sae(tmp_path / "sae")
    assert (ours.architecture, ours.d_in, ours.d_sae, ours.hook_name) == (arch, d_in, d_sae, "readout.hook_in")
    X = torch.randn(64, d_in, generator=g) * 2
    with torch.no_grad():
        F_theirs = theirs.encode(X)
        Xh_theirs = theirs.decode(F_theirs)
    F_ours = ours.encode(X)
    assert (F_theirs != 0).sum() > 0
    assert torch.equal(F_ours, F_theirs), (F_ours - F_theirs).abs().max()
    torch.testing.assert_close(ours.decode(F_ours), Xh_theirs, rtol=1e-5, atol=1e-5)
    W, b = torch.randn(5, d_in, generator=g), torch.randn(5, generator=g)
    W_eff, b_eff = latent_readout(W, b, ours)
    torch.testing.assert_close(F_theirs @ W_eff.T + b_eff, Xh_theirs @ W.T + b, rtol=1e-4, atol=1e-4)


def test_docstring_examples():
    import doctest

    import nodeprobe.analysis.sae as mod

    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
