"""``--sae DIR`` on ``specialization``, ``cooperation`` and ``hull``: end to end on a tiny saved
classifier and FewRel (the JSON holds the latent report and the node report side by side; the node
side equals the report without ``--sae``), and bad input (exit 2, one line, nothing written)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from _tiny_models import tiny_hf
from nodeprobe.cli import main

LIMIT = ["--limit", "48"]
D_MODEL, D_SAE = 16, 32  # _tiny_models: hidden size 16
REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("fewrel_once")  # tests/cli/conftest.py


def write_sae(folder: Path, d_in=D_MODEL, d_sae=D_SAE, architecture="standard", hook="readout.hook_in", seed=0,
              **cfg_kw) -> Path:
    """A random SAE in SAELens 6's on-disk layout (cfg.json + sae_weights.safetensors)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    W_dec = rng.standard_normal((d_sae, d_in)).astype(np.float32)
    W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)
    weights = {"W_enc": W_dec.T.copy(), "b_enc": np.full(d_sae, -0.1, np.float32), "W_dec": W_dec,
               "b_dec": np.zeros(d_in, np.float32)}
    if architecture == "jumprelu":
        weights["threshold"] = np.full(d_sae, 0.05, np.float32)
    cfg = {"d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
           "normalize_activations": "none", "reshape_activations": "none", "architecture": architecture,
           "metadata": {"sae_lens_version": "6.54.12", "hook_name": hook}, **cfg_kw}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file(weights, str(folder / "sae_weights.safetensors"))
    return folder


@pytest.fixture(scope="module")
def fx(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("sae_cli")
    vocab = shared_data / "tokenizer" / "bert-base-uncased-vocab.txt"
    cls = root / "cls"
    tiny_hf("cls", seed=0, vocab_size=30522, num_labels=16).save_pretrained(cls)
    shutil.copy(vocab, cls / "vocab.txt")
    saes = root / "saes"
    out = {"cls": cls, "shared": shared_data, "root": root,
           "good": write_sae(saes / "good"), "topk": write_sae(saes / "topk", architecture="topk", k=4, seed=1),
           "din8": write_sae(saes / "din8", d_in=8), "resid": write_sae(saes / "resid", hook="blocks.1.hook_normalized_resid_post"),
           "zsae": write_sae(saes / "zsae", hook="blocks.1.attn.hook_z"),
           "zflat": write_sae(saes / "zflat", hook="blocks.1.attn.hook_z", reshape_activations="hook_z"),
           "transcoder": write_sae(saes / "transcoder", architecture="transcoder"), "empty": saes / "empty",
           "cfgonly": saes / "cfgonly", "nosuch": saes / "nosuch", "afile": saes / "afile"}
    out["empty"].mkdir()
    out["cfgonly"].mkdir()
    (out["cfgonly"] / "cfg.json").write_text("{}")
    out["afile"].write_text("x")
    return out


def run(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def load(path):
    d = json.loads(Path(path).read_text())
    assert set(d) == {"schema", "settings", "result"}
    return d


SIDES = {"command", "mode", "sae_info", "fidelity", "summary", "sae", "nodes"}


def test_specialization_sae_end_to_end(fx, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ["--model", fx["cls"], "--data", fx["shared"], *LIMIT, "--cache", tmp_path / "c"]
    rc, out, err = run(capsys, "specialization", *common, "--json", tmp_path / "plain.json")
    assert rc == 0, err
    plain = load(tmp_path / "plain.json")
    assert "sae" not in plain["settings"] and "sae" not in plain["result"]

    rc, out, err = run(capsys, "specialization", *common, "--sae", fx["good"], "--json", tmp_path / "sae.json",
                       "--plot", tmp_path / "p", "--unit", "20")
    assert rc == 0, err
    d = load(tmp_path / "sae.json")
    assert d["schema"] == "nodeprobe.specialization/1" and d["settings"]["sae"] == str(fx["good"])
    r = d["result"]
    assert set(r) == SIDES and r["command"] == "specialization"
    assert len(r["sae"]["units"]) == D_SAE and len(r["nodes"]["units"]) == D_MODEL
    assert r["sae"]["units"][0]["unit"] == "latent 0" and r["sae"]["families"][0]["name"] == "SAE latents"
    assert r["nodes"] == plain["result"]  # the node side is the report without --sae
    s, n = r["summary"]["sae"], r["summary"]["nodes"]
    assert s["n_units"] == D_SAE and n["n_units"] == D_MODEL
    for side, rep in ((s, r["sae"]), (n, r["nodes"])):
        fam = rep["families"][0]
        assert side["mean_size"] == fam["mean_size"] and side["coverage"] == fam["coverage"]
        assert side["n_nonempty"] == sum(1 for u in rep["units"] if u["n_learned"])
    f = r["fidelity"]
    assert f["n_items"] == 48 and f["acc_x"] == n["accuracy"] and f["acc_xhat"] == s["accuracy"]
    assert r["sae_info"]["d_sae"] == D_SAE and r["sae_info"]["hook_name"] == "readout.hook_in"
    assert "SAE latents vs readout nodes" in out and "Unit latent 20" in out and "explained variance" in out
    assert (tmp_path / "p" / "specialization_lambda_hist.png").is_file()

    rc, out, err = run(capsys, "specialization", *common, "--sae", fx["topk"], "--mode", "mean", "--json", tmp_path / "m.json")
    assert rc == 0, err
    m = load(tmp_path / "m.json")["result"]
    assert m["mode"] == "mean" and m["sae_info"]["architecture"] == "topk" and m["fidelity"]["mean_l0"] <= 4


def test_cooperation_and_hull_sae(fx, tmp_path, capsys):
    common = ["--model", fx["cls"], "--data", fx["shared"], *LIMIT, "--cache", tmp_path / "c", "--sae", fx["good"]]
    rc, out, err = run(capsys, "cooperation", *common, "--R", "2", "--grid", "1,2,24", "--json", tmp_path / "co.json")
    assert rc == 0, err
    co = load(tmp_path / "co.json")["result"]
    assert set(co) == SIDES and co["sae"]["d_model"] == D_SAE and co["nodes"]["d_model"] == D_MODEL
    assert [x["n"] for x in co["sae"]["rows"]] == [1, 2, 24] and [x["n"] for x in co["nodes"]["rows"]] == [1, 2, 16]
    assert co["summary"]["sae"]["n_covered"] == co["sae"]["n_single_covered"]
    assert co["summary"]["nodes"]["n_covered"] == co["nodes"]["n_single_covered"]
    assert "crossover n*" in out

    rc, out, err = run(capsys, "hull", *common, "--n", "1", "--unit", "30", "--json", tmp_path / "h.json")
    assert rc == 0, err
    h = load(tmp_path / "h.json")["result"]
    assert len(h["sae"]["rows"]) == D_SAE and len(h["nodes"]["rows"]) == D_MODEL
    assert all(x["acc"] <= x["ub_data"] + 1e-9 for x in h["sae"]["rows"])
    assert [x["n_learned"] for x in h["sae"]["rows"]].count(0) == D_SAE - h["summary"]["sae"]["n_nonempty"]

    rc, out, err = run(capsys, "hull", *common, "--nodes", "3,7", "--json", tmp_path / "h2.json")
    assert rc == 0, err
    h2 = load(tmp_path / "h2.json")["result"]
    assert h2["sae"]["rows"][0]["nodes"] == [3, 7] == h2["nodes"]["rows"][0]["nodes"]


SITE_ONLY = "--sae: its latents are nodes (--level node) at --site readout, attn, resid or mlp"
BAD = [
    (["specialization", "--sae", "{din8}"], "--sae {din8}: d_in 8 does not match the readout's d_model 16"),
    (["cooperation", "--sae", "{din8}"], "--sae {din8}: d_in 8 does not match the readout's d_model 16"),
    (["hull", "--n", "1", "--sae", "{din8}"], "--sae {din8}: d_in 8 does not match"),
    (["specialization", "--sae", "{resid}"], "--sae {resid}: hook_name 'blocks.1.hook_normalized_resid_post' is not "
                                             "the readout site (allowed: readout.hook_in, unembed.hook_in)"),
    (["specialization", "--sae", "{empty}"], "--sae {empty}: not an SAELens SAE folder (no cfg.json)"),
    (["hull", "--n", "1", "--sae", "{cfgonly}"], "--sae {cfgonly}: not an SAELens SAE folder (no sae_weights.safetensors)"),
    (["specialization", "--sae", "{nosuch}"], "--sae {nosuch}: no such folder"),
    (["specialization", "--sae", "{afile}"], "--sae {afile}: is a file"),
    (["cooperation", "--sae", "{transcoder}"], "architecture 'transcoder' is not supported (supported: standard, topk"),
    (["specialization", "--sae", "{good}", "--site", "resid", "--layer", "0"],
     "--sae {good}: hook_name 'readout.hook_in' is not site resid of block 0 (allowed: blocks.0.hook_normalized_resid_post, blocks.1.hook_resid_pre)"),
    (["specialization", "--sae", "{resid}", "--site", "resid"], "--sae at --site resid needs --layer"),
    (["cooperation", "--sae", "{resid}", "--site", "mlp", "--layer", "1"], "is not site mlp of block 1"),
    (["specialization", "--sae", "{good}", "--site", "attn", "--layer", "0"], "is not site attn of block 0 (allowed: blocks.0.attn.hook_z)"),
    (["specialization", "--sae", "{zsae}", "--site", "attn", "--layer", "1"], "--sae {zsae}: reshape_activations 'none' does not fit site attn"),
    (["specialization", "--sae", "{good}", "--level", "head"], SITE_ONLY),
    (["specialization", "--sae", "{good}", "--unit", "32"], "--unit 32: the SAE has latents 0–31"),
    (["hull", "--sae", "{good}", "--n", "20"], "--n 20: expected a node count 1–16"),
    (["hull", "--sae", "{good}", "--nodes", "3,20"], "--nodes 20"),
    (["hull", "--sae", "{good}", "--n", "1", "--unit", "32"], "--unit 32: the SAE has latents 0–31"),
]


@pytest.mark.parametrize("args,msg", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_sae_bad_input_one_line_exit_2_nothing_written(args, msg, fx, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = {k: str(v) for k, v in fx.items()}
    args = [a.format(**names) for a in args]
    msg = msg.format(**names)
    before = sorted(p.name for p in (fx["root"] / "saes").rglob("*"))
    rc, out, err = run(capsys, args[0], "--model", fx["cls"], "--data", fx["shared"], *LIMIT, *args[1:],
                       "--json", tmp_path / "out.json", "--plot", tmp_path / "plots")
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nodeprobe: error: ") and msg in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no JSON, no plots, no cache
    assert sorted(p.name for p in (fx["root"] / "saes").rglob("*")) == before


def test_json_inside_the_sae_folder_refused(fx, tmp_path, capsys):
    rc, out, err = run(capsys, "specialization", "--model", fx["cls"], "--sae", fx["good"], "--json",
                       fx["good"] / "out.json")
    assert rc == 2 and f"--json {fx['good'] / 'out.json'}: is inside the input --sae {fx['good']}" in err
    assert not (fx["good"] / "out.json").exists()


@pytest.mark.parametrize("args", [["specialization", "--sae", "{tmp}/nope"],
                                  ["specialization", "--sae", "{tmp}", "--site", "resid", "--layer", "0"],
                                  ["hull", "--n", "1", "--sae", "{tmp}"]])
def test_bad_sae_fails_before_torch(args, tmp_path):
    probe = ("import json, sys\nfrom nodeprobe.cli import main\nrc = main(json.loads(sys.argv[1]))\n"
             "print('\\n' + json.dumps({'rc': rc, 'torch': 'torch' in sys.modules}))\n")
    res = subprocess.run([sys.executable, "-c", probe, json.dumps([a.format(tmp=tmp_path) for a in args])],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path)})
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got == {"rc": 2, "torch": False}, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "--sae" in res.stderr


def test_sae_at_a_block_site(fx, tmp_path, capsys):
    """An SAE of blocks.1.hook_normalized_resid_post: its latents under the resid block readout of
    block 1, beside that site's nodes (METHODS v2 §2: logits = W_s (W_decᵀ f + b_dec) + b_s)."""
    common = ["--model", fx["cls"], "--data", fx["shared"], *LIMIT, "--cache", tmp_path / "c", "--sae", fx["resid"],
              "--site", "resid", "--layer", "1", "--readout-epochs", "3"]
    rc, out, err = run(capsys, "specialization", *common, "--json", tmp_path / "s.json")
    assert rc == 0, err
    r = load(tmp_path / "s.json")["result"]
    assert set(r) == SIDES and len(r["sae"]["units"]) == D_SAE and len(r["nodes"]["units"]) == D_MODEL
    assert r["sae"]["site"] == "resid" and r["nodes"]["readouts"][0]["trained_on"] == "train split"
    assert r["fidelity"]["acc_x"] == pytest.approx(r["nodes"]["readouts"][0]["accuracy"])
    rc, out, err = run(capsys, "cooperation", *common, "--R", "2", "--grid", "1,2,8", "--json", tmp_path / "co.json")
    assert rc == 0, err
    co = load(tmp_path / "co.json")["result"]
    assert co["sae"]["d"] == D_SAE and co["nodes"]["d"] == D_MODEL and co["sae"]["null_rows"]
    rc, out, err = run(capsys, "hull", *common, "--n", "1", "--json", tmp_path / "h.json")
    assert rc == 0, err
    h = load(tmp_path / "h.json")["result"]
    assert all(x["acc"] <= x["ub_data"] + 1e-9 for x in h["sae"]["rows"]) and len(h["sae"]["rows"]) == D_SAE


def test_sae_at_attn_from_a_hook_z_sae(fx, tmp_path, capsys):
    """A SAELens hook_z SAE (z flattened to n_heads · d_head) reads the attn site's coordinates."""
    common = ["--model", fx["cls"], "--data", fx["shared"], *LIMIT, "--cache", tmp_path / "c", "--sae", fx["zflat"],
              "--site", "attn", "--layer", "1", "--readout-epochs", "3"]
    rc, out, err = run(capsys, "specialization", *common, "--json", tmp_path / "s.json")
    assert rc == 0, err
    r = load(tmp_path / "s.json")["result"]
    assert r["sae"]["site"] == "attn" and len(r["sae"]["units"]) == D_SAE and len(r["nodes"]["units"]) == D_MODEL
    rc, out, err = run(capsys, "specialization", "--model", fx["cls"], "--data", fx["shared"], *LIMIT, "--cache",
                       tmp_path / "c", "--sae", fx["zflat"], "--json", tmp_path / "x.json")
    assert rc == 2 and "is not the readout site" in err
