"""The runnable recipes in ``hooks/``: each ``main(argv)`` on a tiny random model, offline."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import torch

RECIPES = Path(__file__).resolve().parents[1] / "hooks"
TOL = 1e-5



def load_recipe(name: str):
    """Import ``hooks/<name>.py`` by path (``hooks`` is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"nodeprobe_recipe_{name}", RECIPES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", ["bridge_head_ablation", "hf_classifier_attach", "cache_z_safetensors"])
def test_recipe_is_a_documented_script(name):
    src = (RECIPES / f"{name}.py").read_text()
    mod = load_recipe(name)
    assert mod.__doc__ and "Usage" in mod.__doc__
    assert callable(mod.main)
    assert 'if __name__ == "__main__":' in src


# ---------------------------------------------------------------------- (a) bridge head ablation
def test_bridge_head_ablation_tiny(tmp_path, capsys):
    mod = load_recipe("bridge_head_ablation")
    before = os.environ.get("HF_HUB_OFFLINE")
    out = tmp_path / "a.json"
    assert mod.main(["--tiny", "--layer", "1", "--head", "2", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["hook"] == "blocks.1.attn.hook_z"
    assert r["hook_z_shape"][2:] == [4, 8]
    assert r["max_abs_diff_vs_hookedbert"] <= TOL
    assert r["mean_kl"] > 0 and r["max_abs_dlogit"] > 1e-3
    assert r["top1_positions"] == 3  # the three [MASK]s of the default tiny texts
    assert "bridge vs HookedBert" in capsys.readouterr().out
    assert os.environ.get("HF_HUB_OFFLINE") == before  # the recipe restores the caller's setting


def test_bridge_head_ablation_model_dir_isolate_mean(tmp_path):
    mod = load_recipe("bridge_head_ablation")
    before = os.environ.get("HF_HUB_OFFLINE")
    model_dir = mod.save_tiny_mlm(tmp_path / "m", seed=3)
    out = tmp_path / "a.json"
    rc = mod.main(["--model", str(model_dir), "--layer", "0", "--head", "3", "--isolate", "--mode", "mean",
                   "--text", "w1 w2 w3", "--text", "w4 [MASK] w5 w6", "--json", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert (r["ablation"], r["mode"], r["n_texts"]) == ("isolate", "mean", 2)
    assert r["max_abs_diff_vs_hookedbert"] <= TOL
    assert os.environ.get("HF_HUB_OFFLINE") == before


def test_bridge_head_ablation_errors(tmp_path, capsys):
    mod = load_recipe("bridge_head_ablation")
    assert mod.main(["--tiny", "--layer", "2"]) == 2
    assert "--layer 2: the model has blocks 0–1" in capsys.readouterr().err
    assert mod.main(["--model", str(tmp_path / "nope")]) == 2
    assert "no such directory" in capsys.readouterr().err
    model_dir = mod.save_tiny_mlm(tmp_path / "m")
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (model_dir / f).unlink(missing_ok=True)
    assert mod.main(["--model", str(model_dir)]) == 2
    assert "no tokenizer files" in capsys.readouterr().err


# ---------------------------------------------------------------------- (b) HF classifier + attach
def test_hf_classifier_attach_tiny(tmp_path, capsys):
    mod = load_recipe("hf_classifier_attach")
    out = tmp_path / "b.json"
    assert mod.main(["--tiny", "--layer", "1", "--head", "3", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["cached"] == {"blocks.1.attn.hook_z": [4, 4, 8], "readout.hook_in": [4, 32]}
    assert r["hooks_left_on_model"] == 0
    assert r["attn_implementation_after"] == "sdpa"
    assert r["max_abs_diff_attached_vs_plain"] <= TOL
    assert r["max_abs_diff_after_vs_plain"] == 0.0
    clean, abl = torch.tensor(r["clean_logits"]), torch.tensor(r["ablated_logits"])
    assert (clean - abl).abs().max() > 1e-4
    assert set(r["clean_labels"]) <= {"person", "place", "thing"}
    assert "hooks left on the model after the with-block: 0" in capsys.readouterr().out


def test_hf_classifier_attach_model_dir_matches_hooked_bert(tmp_path):
    from nodeprobe.hooks import ablate_head
    from nodeprobe.model import load_model

    mod = load_recipe("hf_classifier_attach")
    hf, tok = mod.tiny_classifier(tmp_path / "src", seed=4)
    model_dir = tmp_path / "clf"
    hf.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    out = tmp_path / "b.json"
    texts = ["w1 w2 w3 w4", "w5 w6"]
    argv = ["--model", str(model_dir), "--layer", "0", "--head", "1", "--json", str(out)]
    assert mod.main(argv + [a for t in texts for a in ("--text", t)]) == 0
    r = json.loads(out.read_text())
    enc = tok(texts, padding=True, return_tensors="pt")
    model = load_model(model_dir)
    with torch.no_grad():
        ref = model.run_with_hooks(enc["input_ids"], attention_mask=enc["attention_mask"],
                                   token_type_ids=enc["token_type_ids"], fwd_hooks=[ablate_head(0, 1)])
    assert (torch.tensor(r["ablated_logits"]) - ref).abs().max() <= TOL


def test_hf_classifier_attach_errors(tmp_path, capsys):
    mod = load_recipe("hf_classifier_attach")
    assert mod.main(["--tiny", "--head", "4"]) == 2
    assert "--head 4: the model has heads 0–3" in capsys.readouterr().err
    mlm_dir = load_recipe("bridge_head_ablation").save_tiny_mlm(tmp_path / "mlm")
    assert mod.main(["--model", str(mlm_dir)]) == 2
    assert "has no classification head" in capsys.readouterr().err


# ---------------------------------------------------------------------- (c) z at [CLS] → safetensors
def test_cache_z_safetensors_tiny_matches_run_with_cache(tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from nodeprobe.model import HookedBert

    mod = load_recipe("cache_z_safetensors")
    out = tmp_path / "sub" / "z.safetensors"
    rc = mod.main(["--tiny", "--out", str(out), "--batch-size", "8", "--n-texts", "21", "--readout"])
    assert rc == 0
    assert "wrote" in capsys.readouterr().out
    got = load_file(out)
    with safe_open(out, "pt") as f:
        meta = f.metadata()
    assert meta["positions"] == "cls" and meta["n_heads"] == "4" and meta["n_texts"] == "21"
    assert set(got) == {"blocks.0.attn.hook_z", "blocks.1.attn.hook_z", "readout.hook_in", "lengths"}
    assert got["blocks.1.attn.hook_z"].shape == (21, 4, 8)
    assert got["readout.hook_in"].shape == (21, 32)
    assert sorted(p.name for p in out.parent.iterdir()) == ["z.safetensors"]  # no temp file left

    # the same numbers as a plain run_with_cache on the same texts, one batch
    hf, tok = mod.tiny_model_and_tokenizer(tmp_path)
    texts = mod.tiny_texts(21)
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        _, cache = HookedBert(hf).run_with_cache(enc["input_ids"], attention_mask=enc["attention_mask"],
                                                 token_type_ids=enc["token_type_ids"])
    for l in range(2):
        ref = cache[f"blocks.{l}.attn.hook_z"][:, 0]
        assert (got[f"blocks.{l}.attn.hook_z"] - ref).abs().max() <= TOL
    assert (got["readout.hook_in"] - cache["readout.hook_in"][:, 0]).abs().max() <= TOL
    assert got["lengths"].tolist() == enc["attention_mask"].sum(1).tolist()


def test_cache_z_safetensors_texts_file_and_atomic_overwrite(tmp_path, monkeypatch, capsys):
    from safetensors.torch import load_file

    mod = load_recipe("cache_z_safetensors")
    texts = tmp_path / "texts.txt"
    texts.write_text("w1 w2 w3\n\nw4 w5\nw6 w7 w8 w9 w10\n", encoding="utf-8")
    out = tmp_path / "z.safetensors"
    out.write_bytes(b"old")
    assert mod.main(["--tiny", "--texts", str(texts), "--out", str(out), "--batch-size", "2"]) == 0
    first = load_file(out)
    assert first["blocks.0.attn.hook_z"].shape == (3, 4, 8)  # blank line skipped
    assert first["lengths"].tolist() == [5, 4, 7]

    # a failure while writing leaves the existing file as it was, and no temp file behind
    good = out.read_bytes()

    import nodeprobe.io

    def broken_fsync(fd):  # the temp file holds the new bytes, then the disk fails
        raise OSError("disk full")

    monkeypatch.setattr(nodeprobe.io.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        mod.main(["--tiny", "--texts", str(texts), "--out", str(out)])
    assert out.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["texts.txt", "z.safetensors"]


def test_cache_z_safetensors_errors(tmp_path, capsys):
    mod = load_recipe("cache_z_safetensors")
    assert mod.main(["--tiny", "--out", str(tmp_path / "z.npy")]) == 2
    assert "expected a .safetensors" in capsys.readouterr().err
    assert mod.main(["--tiny", "--out", str(tmp_path / "z.safetensors"), "--texts", str(tmp_path / "no.txt")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert mod.main(["--tiny", "--out", str(tmp_path / "z.safetensors"), "--batch-size", "0"]) == 2
    assert not (tmp_path / "z.safetensors").exists()
