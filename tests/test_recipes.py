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


@pytest.mark.parametrize("name", ["bridge_head_ablation", "hf_classifier_attach", "cache_z_safetensors",
                                  "patch_heads_fewrel"])
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


# ---------------------------------------------------------------------- (d) head × position patching, FewRel
def _patched_metric(model, r, layer, pos, head):
    """Hand-written patch of one cell: the clean z of (layer, pos, head) into the corrupted run,
    scored as the recipe documents (clean = 1, corrupted = 0)."""
    clean, corrupted = torch.tensor([r["ids_clean"]]), torch.tensor([r["ids_corrupted"]])
    name = f"blocks.{layer}.attn.hook_z"
    with torch.no_grad():
        _, cache = model.run_with_cache(clean, names_filter=name)

        def write(z, hook):
            z = z.clone()
            z[:, pos, head] = cache[name][:, pos, head]
            return z

        logit = float(model.run_with_hooks(corrupted, fwd_hooks=[(name, write)])[0, r["label"]])
    return (logit - r["logit_corrupted"]) / (r["logit_clean"] - r["logit_corrupted"])


def test_patch_heads_fewrel_tiny_grid_matches_hand_patch(tmp_path, capsys):
    from nodeprobe.model import load_model

    mod = load_recipe("patch_heads_fewrel")
    out = tmp_path / "grid.json"
    assert mod.main(["--tiny", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "layer 1" in printed and "[unused0]" in printed and "clean = 100, corrupted = 0" in printed
    r = json.loads(out.read_text())
    P = len(r["ids_clean"])
    grid = torch.tensor(r["grid"])
    assert r["axes"] == ["layer", "pos", "head"] and grid.shape == (2, P, 4)
    assert len(r["ids_corrupted"]) == P and len(r["tokens_clean"]) == P
    diff = [i for i, (a, b) in enumerate(zip(r["ids_clean"], r["ids_corrupted"])) if a != b]
    assert diff and set(diff) <= set(r["changed_positions"])
    lo, hi = r["tokens_clean"].index("[unused0]"), r["tokens_clean"].index("[unused1]")
    assert r["changed_positions"] == list(range(lo + 1, hi))  # only the head entity changes

    model = load_model(mod.tiny_classifier(tmp_path / "same_tiny"))  # the recipe's tiny model (seeded)
    with torch.no_grad():
        clean_logits = model(torch.tensor([r["ids_clean"]]))
        corrupted_logits = model(torch.tensor([r["ids_corrupted"]]))
    assert r["label"] == int(clean_logits[0].argmax())
    assert abs(float(clean_logits[0, r["label"]]) - r["logit_clean"]) <= TOL
    assert abs(float(corrupted_logits[0, r["label"]]) - r["logit_corrupted"]) <= TOL
    top = divmod(int(grid.abs().flatten().argmax()), P * 4)
    cells = [(top[0], *divmod(top[1], 4)), (0, r["changed_positions"][0], 2), (0, P - 1, 1)]
    for layer, pos, head in cells:
        ref = _patched_metric(model, r, layer, pos, head)
        assert abs(float(grid[layer, pos, head]) - ref) <= TOL, (layer, pos, head)
    assert grid.abs().max() > 0.05
    assert grid[1, 1:].abs().max() == 0  # last block: only [CLS] reaches the classifier


def test_patch_heads_fewrel_on_a_fewrel_val_item(shared_data, tmp_path):
    """The real data path: val_wiki.json, bert-base-uncased WordPieces with the entity markers, a
    same-length head entity swapped in from another relation (random classifier on that vocab)."""
    from transformers import BertConfig, BertForSequenceClassification

    mod = load_recipe("patch_heads_fewrel")
    torch.manual_seed(0)
    model_dir = tmp_path / "clf"  # no vocab.txt: the recipe takes bert-base-uncased's from the data folder
    BertForSequenceClassification(BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                                             intermediate_size=32, max_position_embeddings=128, num_labels=16,
                                             initializer_range=0.2)).eval().save_pretrained(model_dir)
    out = tmp_path / "grid.json"
    rc = mod.main(["--model", str(model_dir), "--data", str(shared_data), "--relation", "P177", "--json", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert (r["relation"], r["item"], r["corrupt"], r["gold_label"]) == ("P177", 630, "swap", 0)
    assert r["swap_source"]["relation"] != "P177"
    toks, bad = r["tokens_clean"], r["tokens_corrupted"]
    assert toks[0] == "[CLS]" and toks[-1] == "[SEP]" and len(bad) == len(toks)
    assert all(m in toks for m in ("[unused0]", "[unused1]", "[unused2]", "[unused3]"))
    lo, hi = toks.index("[unused0]"), toks.index("[unused1]")
    assert [i for i, (a, b) in enumerate(zip(toks, bad)) if a != b] == list(range(lo + 1, hi))
    assert torch.tensor(r["grid"]).shape == (2, len(toks), 4)


def test_patch_heads_fewrel_errors(tmp_path, capsys):
    mod = load_recipe("patch_heads_fewrel")
    assert mod.main(["--tiny", "--item", "99"]) == 2
    assert "--item 99: relation P1 has items 0–3" in capsys.readouterr().err
    assert mod.main(["--tiny", "--relation", "P9"]) == 2
    assert "--relation P9: not in the FewRel file" in capsys.readouterr().err
    assert mod.main(["--tiny", "--json", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert mod.main(["--model", str(tmp_path / "nope"), "--json", str(tmp_path / "g.json")]) == 2
    assert "--model " in capsys.readouterr().err
    assert mod.main(["--runs", str(tmp_path / "no_runs")]) == 2
    assert "no --model given" in capsys.readouterr().err
    assert not (tmp_path / "g.json").exists()


# ---------------------------------------------------------------------- (e) SAELens SAE on a hook point
def _has_sae_lens() -> bool:
    return importlib.util.find_spec("sae_lens") is not None


def test_train_sae_is_a_documented_script():
    src = (RECIPES / "train_sae.py").read_text()
    mod = load_recipe("train_sae")  # imports without sae-lens (it is imported inside main)
    assert mod.__doc__ and "Usage" in mod.__doc__
    assert callable(mod.main)
    assert 'if __name__ == "__main__":' in src


@pytest.mark.skipif(not _has_sae_lens(), reason="needs sae-lens (with TransformerLens 3.x)")
@pytest.mark.filterwarnings("ignore::UserWarning")  # SAELens: epochs over a small dataset
def test_train_sae_tiny_saves_an_sae_that_loads_back(tmp_path, capsys, monkeypatch):
    from sae_lens import SAE

    from nodeprobe.data import load_text_corpus
    from nodeprobe.model import load_with_tokenizer

    monkeypatch.setenv("WANDB_MODE", "disabled")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)  # a relative default path of SAELens would land here
    mod = load_recipe("train_sae")
    out, js = tmp_path / "sae", tmp_path / "sae.json"
    assert mod.main(["--tiny", "--out", str(out), "--json", str(js)]) == 0
    printed = capsys.readouterr().out
    assert "explained variance" in printed and "L0" in printed and "saved to" in printed
    r = json.loads(js.read_text())
    ev, ev0 = r["held_out"]["explained_variance"], r["held_out_untrained"]["explained_variance"]
    assert ev > 0.5 and ev > ev0 + 0.3, (ev, ev0)
    assert 0 < r["held_out"]["l0"] < r["d_sae"] / 4
    assert (r["hook"], r["d_in"], r["d_sae"], r["steps"]) == ("blocks.3.hook_resid_post", 32, 256, 100)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "sae", "sae.json"]
    assert not any(work.iterdir())
    assert {"cfg.json", "sae_weights.safetensors"} <= {p.name for p in out.iterdir()}

    # the folder loads back with SAELens and gives the printed numbers on the same held-out text
    sae = SAE.load_from_disk(out)
    assert (sae.cfg.metadata.hook_name, sae.cfg.d_in, sae.cfg.d_sae) == ("blocks.3.hook_resid_post", 32, 256)
    model_dir, text = mod.save_tiny(tmp_path / "again", seed=0)  # the same random model and text
    model, tok = load_with_tokenizer(model_dir)
    held = load_text_corpus(text, tok).split_held_out(every=10)[1].to_sequences(max_len=32)
    x = mod.activations_at(model, "blocks.3.hook_resid_post", held, r["excluded_token_ids"], 32)
    assert x.shape[0] == r["held_out_tokens"]
    assert abs(mod.sae_metrics(sae, x)["explained_variance"] - ev) < 1e-4


def test_train_sae_errors(tmp_path, capsys, monkeypatch):
    """Bad options fail before any work, one line, exit 2 — with or without sae-lens installed."""
    mod = load_recipe("train_sae")
    out = tmp_path / "sae"

    def err(argv) -> str:
        assert mod.main(argv) == 2
        return capsys.readouterr().err

    assert "--hook blocks.9.hook_resid_post: the model has blocks 0–3" in err(
        ["--tiny", "--hook", "blocks.9.hook_resid_post", "--out", str(out)])
    assert "no such hook point; did you mean blocks.1.hook_resid_post" in err(
        ["--tiny", "--hook", "blocks.1.hook_resid_pots", "--out", str(out)])
    assert "not one vector per token position" in err(
        ["--tiny", "--hook", "blocks.1.attn.hook_pattern", "--out", str(out)])
    full = tmp_path / "full"
    full.mkdir()
    (full / "x.txt").write_text("x")
    assert "exists and is not empty" in err(["--tiny", "--out", str(full)])
    assert "--training-tokens 0: expected a positive integer" in err(
        ["--tiny", "--out", str(out), "--training-tokens", "0"])
    assert "no such directory" in err(["--model", str(tmp_path / "nope"), "--out", str(out)])
    assert "no --model given" in err(["--runs", str(tmp_path / "no_runs"), "--out", str(out)])

    real_find_spec = importlib.util.find_spec  # sae-lens missing: the install hint
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "sae_lens" else real_find_spec(name, *a))
    assert "needs sae-lens: pip install 'nodeprobe[sae]' (TransformerLens 3.x)" in err(["--tiny", "--out", str(out)])
    assert not out.exists()
