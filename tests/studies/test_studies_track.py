"""Order parameters over training: the breaking rule, head isolation, a tiny 3-snapshot run, the CLI."""

from __future__ import annotations

import json
import math
import os
import random

import numpy as np
import pytest
import torch

from nodeprobe.analysis.order_parameters import family_params, head_family_params, symmetry_breaking
from nodeprobe.errors import NodeprobeError


# ------------------------------------------------------------------------------ pure rule
def test_symmetry_breaking_rule():
    steps = [0, 1, 10, 100]
    J = [1.0, 1.0, 0.7, 0.2]
    S = [0.0, 0.5, 0.4, 2.0]
    assert symmetry_breaking(steps, J, S) == 10                     # step 1: J did not fall
    assert symmetry_breaking(steps, J, S, margin_jaccard=0.5) == 100
    assert symmetry_breaking(steps, J, S, margin_size=1.0) == 100
    assert symmetry_breaking(steps, J, S, margin_size=5.0) is None
    # unsorted input, NaN never qualifies
    assert symmetry_breaking([100, 0, 10], [0.2, 1.0, float("nan")], [2.0, 0.0, 0.4]) == 100
    with pytest.raises(NodeprobeError, match="no step 0"):
        symmetry_breaking([1, 2], [1, 1], [0, 0])
    with pytest.raises(NodeprobeError, match="margin"):
        symmetry_breaking(steps, J, S, margin_jaccard=-1)


def test_family_params_empty_pairs():
    sets = [[], [], []]
    assert family_params(sets, K=4).mean_jaccard == 1.0               # symmetric phase: identical units
    assert family_params(sets, K=4, empty_pairs="exclude").mean_jaccard == 0.0
    f = family_params([[0], [1], [1, 2]], K=4)
    assert f.mean_size == pytest.approx(4 / 3) and f.coverage == 0.75 and f.max_size == 2 and f.n_learning == 3
    assert f.mean_jaccard == pytest.approx((0 + 0 + 0.5) / 3)
    allh, per = head_family_params([[[0], [0]], [[], [1]]], K=2)
    assert [p.mean_jaccard for p in per] == [1.0, 0.0] and allh.mean_jaccard == 0.5
    assert allh.n_units == 4 and allh.coverage == 1.0
    with pytest.raises(NodeprobeError, match="empty_pairs="):
        family_params(sets, K=4, empty_pairs="two")


# ------------------------------------------------------------------------------ head isolation
def test_step_predictions_match_isolated_run_eval():
    """The resumed head sweep equals one run_eval per head with isolate_head (METHODS §2, §7)."""
    from _tiny_models import tiny_eval_set, tiny_model

    from nodeprobe.evaluate import run_eval
    from nodeprobe.hooks import SiteCache, isolate_head
    from nodeprobe.studies.track import step_predictions

    for task in ("mlm", "cls"):
        m = tiny_model(task)
        es = tiny_eval_set(task, n_batches=1, B=6)
        sp = step_predictions(m, es, heads=True)
        cache = SiteCache(["readout.hook_in"])
        base = run_eval(m, es, cache=cache)
        assert torch.equal(sp.preds, base.preds)
        torch.testing.assert_close(sp.readout, cache.stack()["readout.hook_in"])
        for layer in range(m.spec.n_layers):
            for head in range(m.spec.n_heads):
                ref = run_eval(m, es, fwd_hooks=[isolate_head(layer, head)]).preds
                assert torch.equal(sp.head_preds[layer, head], ref), (task, layer, head)


# ------------------------------------------------------------------------------ a tiny run
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from _heads_tiny import pattern_sequence, tiny_run

    from nodeprobe.studies.track import mlm_eval_set_from_sequences

    root, tok = tiny_run(tmp_path_factory.mktemp("tinyrun"), steps=(0, 5, 30))
    rng = random.Random(123)
    es = mlm_eval_set_from_sequences([pattern_sequence(tok, rng) for _ in range(80)], tok, seed=0)
    return root, tok, es


def test_track_table_baseline_and_breaking(run, tmp_path):
    from nodeprobe.studies.track import track

    root, tok, es = run
    rep = track(root, es, out_dir=tmp_path / "tr")
    assert [s.step for s in rep.steps] == [0, 5, 30]
    assert rep.baseline.step == 0 and rep.baseline_is_init
    assert rep.n_items == es.n_items and rep.n_classes == tok.vocab_size
    b = rep.baseline
    # random init: no unit learns a class → the symmetric phase, J = 1 (two empty sets are identical)
    assert b.nodes.mean_size == 0 and b.nodes.mean_jaccard == 1.0 and b.heads.mean_jaccard == 1.0
    last = rep.steps[-1]
    assert last.accuracy > 0.5 > b.accuracy and last.mean_apt > b.mean_apt
    assert last.nodes.mean_size > 0 and last.nodes.coverage > 0 and last.nodes.mean_jaccard < 1.0
    assert last.nodes.n_units == 16 and last.heads.n_units == 8 and len(last.head_blocks) == 2
    assert np.asarray(last.head_accuracy).shape == (2, 4)
    # the breaking step is the first one that satisfies the rule, recomputed from the table
    nb = rep.breaking["nodes"]
    assert nb in (5, 30)
    first = next(s.step for s in rep.steps[1:]
                 if s.nodes.mean_jaccard < b.nodes.mean_jaccard and s.nodes.mean_size > b.nodes.mean_size)
    assert nb == first
    assert rep.computed_steps == [0, 5, 30] and rep.reused_steps == []
    d = rep.to_dict()
    assert d["breaking"]["nodes"] == nb and d["baseline"]["step"] == 0 and "rule" in d
    # a margin larger than any change: no breaking step
    rep2 = track(root, es, out_dir=tmp_path / "tr", margin_size=100.0)
    assert rep2.breaking == {"nodes": None, "heads": None}


def test_track_resumes_from_the_per_step_results(run, tmp_path, monkeypatch):
    import nodeprobe.studies.track as tr

    root, tok, es = run
    out = tmp_path / "tr"
    first = tr.track(root, es, out_dir=out, heads=False)
    assert sorted(p.name for p in (out / "steps").iterdir()) == [f"step-{s:07d}.json" for s in (0, 5, 30)]
    calls = []
    real = tr.load_checkpoint_model
    monkeypatch.setattr(tr, "load_checkpoint_model", lambda *a, **k: calls.append(a[0].step) or real(*a, **k))
    again = tr.track(root, es, out_dir=out, heads=False, empty_pairs="exclude")
    assert calls == [] and again.reused_steps == [0, 5, 30]            # nothing recomputed
    assert again.steps[0].nodes.mean_jaccard == 0.0                    # summaries recomputed from stored sets
    assert [s.accuracy for s in again.steps] == [s.accuracy for s in first.steps]
    # heads now wanted: the stored steps have none → recompute all; afterwards all reused again
    with_heads = tr.track(root, es, out_dir=out, heads=True)
    assert calls == [0, 5, 30] and with_heads.reused_steps == []
    assert tr.track(root, es, out_dir=out, heads=False).reused_steps == [0, 5, 30]
    # new weights at one step (re-saved snapshot): only that step is recomputed
    w = root / "snapshots" / "step-0000005" / "model.safetensors"
    os.utime(w, ns=(w.stat().st_atime_ns, w.stat().st_mtime_ns + 10**9))
    calls.clear()
    rep = tr.track(root, es, out_dir=out)
    assert calls == [5] and rep.reused_steps == [0, 30]
    # another evaluation set: everything is recomputed
    calls.clear()
    es2 = tr.mlm_eval_set_from_sequences([s for b in es.batches for s in b.input_ids.tolist()][:10], tok, seed=1)
    tr.track(root, es2, out_dir=out, heads=False)
    assert calls == [0, 5, 30]


def test_find_checkpoints_model_dirs(run, tmp_path):
    from nodeprobe.studies.track import find_checkpoints, load_checkpoint_model, track

    root, tok, es = run
    snaps = root / "snapshots"
    final = tmp_path / "pre" / "final"
    final.parent.mkdir()
    os.symlink(snaps / "step-0000030", final)
    (final.parent / "pretrain.json").write_text(json.dumps({"steps": 30}))
    cks = find_checkpoints([snaps / "step-0000005", final])
    assert [c.step for c in cks] == [0, 5, 30] and cks[0].path is None and "random init" in cks[0].label
    assert [c.step for c in find_checkpoints([final], random_init=False)] == [30]
    assert [c.step for c in find_checkpoints([final.parent])] == [0, 30]      # a run dir without snapshots
    m0 = load_checkpoint_model(cks[0], "mlm")
    m0b = load_checkpoint_model(cks[0], "mlm")
    assert torch.equal(m0.hf.bert.embeddings.word_embeddings.weight, m0b.hf.bert.embeddings.word_embeddings.weight)
    rep = track([snaps / "step-0000005", final], es, heads=False, random_init=False)
    assert rep.baseline.step == 5 and not rep.baseline_is_init and rep.breaking == {"nodes": None, "heads": None}
    with pytest.raises(NodeprobeError, match="two checkpoints at step 30"):
        find_checkpoints([snaps / "step-0000030", final])
    (tmp_path / "odd").mkdir()
    with pytest.raises(NodeprobeError, match="neither a run directory"):
        find_checkpoints([tmp_path / "odd"])
    nostep = tmp_path / "model"
    os.symlink(snaps / "step-0000030", nostep)
    with pytest.raises(NodeprobeError, match="training step"):
        find_checkpoints([nostep])


def test_mlm_eval_set_max_items(run):
    from nodeprobe.studies.track import mlm_eval_set_from_sequences

    _, tok, es = run
    seqs = [s[: int(m.sum())] for b in es.batches for s, m in zip(b.input_ids.tolist(), b.attention_mask)]
    capped = mlm_eval_set_from_sequences(seqs, tok, seed=0, max_items=20)
    assert 0 < capped.n_items <= 20
    assert mlm_eval_set_from_sequences(seqs, tok, seed=0, max_items=1).n_items >= 1   # at least one sequence
    with pytest.raises(NodeprobeError, match="max_items="):
        mlm_eval_set_from_sequences(seqs, tok, max_items=0)


def test_cli_track(run, tmp_path, capsys):
    from nodeprobe.cli import main

    root, tok, _ = run
    text = tmp_path / "eval.txt"
    words = tok.convert_ids_to_tokens(range(9, 29))
    text.write_text("\n\n".join(" ".join(words) for _ in range(30)) + "\n")
    js = tmp_path / "track.json"
    args = ["track", "--run", str(root), "--text-file", str(text), "--max-items", "200", "--json", str(js)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Order parameters over training" in out and "symmetry breaks (nodes)" in out and "Trends" in out
    d = json.loads(js.read_text())
    assert d["schema"] == "nodeprobe.track/1"
    assert [s["step"] for s in d["result"]["steps"]] == [0, 5, 30]
    assert d["result"]["baseline"]["step"] == 0 and d["result"]["computed_steps"] == [0, 5, 30]
    assert (root / "track-mlm" / "steps" / "step-0000030.json").is_file()     # default --out in the run
    assert main(args) == 0
    assert json.loads(js.read_text())["result"]["reused_steps"] == [0, 5, 30]
    capsys.readouterr()
    for bad in (["track", "--run", str(tmp_path / "missing"), "--text-file", str(text)],
                ["track", "--run", str(root), "--text-file", str(text), "--max-items", "0"],
                ["track", "--run", str(root), "--text-file", str(text), "--mode", "half"],
                ["track", "--run", str(root), "--task", "fewrel", "--text-file", str(text)],
                ["track", "--run", str(root), "--text-file", str(text), "--empty-pairs", "x"]):
        assert main(bad) == 2, bad
        err = capsys.readouterr().err
        assert err.startswith("nodeprobe: error:") and err.count("\n") == 1, err
    assert not math.isnan(d["result"]["steps"][-1]["accuracy"])


def test_cli_track_fewrel_finetune_run(shared_data, tmp_path, capsys):
    """A fine-tuning run (final/ only) on FewRel: a seeded random init is added as step 0."""
    from transformers import BertForSequenceClassification

    from _heads_tiny import tiny_config
    from nodeprobe.cli import main
    from nodeprobe.data import load_tokenizer

    tok = load_tokenizer(shared_data / "tokenizer" / "bert-base-uncased-vocab.txt")
    cfg = tiny_config(tok.vocab_size, tok.pad_id)
    cfg.num_labels = 16
    cfg.max_position_embeddings = 128
    torch.manual_seed(0)
    run_dir = tmp_path / "ft"
    BertForSequenceClassification(cfg).save_pretrained(run_dir / "final")
    tok.save_pretrained(run_dir / "final")
    (run_dir / "finetune.json").write_text(json.dumps({"steps": 7}))
    js = tmp_path / "t.json"
    assert main(["track", "--run", str(run_dir), "--task", "fewrel", "--data", str(shared_data),
                 "--max-items", "48", "--json", str(js)]) == 0
    d = json.loads(js.read_text())["result"]
    assert [s["step"] for s in d["steps"]] == [0, 7] and d["n_items"] == 48 and d["n_classes"] == 16
    assert d["steps"][0]["label"].startswith("random init") and d["steps"][0]["mean_apt"] is None
    assert (run_dir / "track-fewrel" / "steps" / "step-0000007.json").is_file()
    assert "⟨APT⟩" not in capsys.readouterr().out


def test_cli_track_dataset_roberta_run(tmp_path, capsys):
    """`track --dataset` on a RoBERTa fine-tuning run (final/ only): a seeded random init is step 0,
    and the final step's accuracy is a plain Hugging Face evaluation of the same test table."""
    import csv

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from _families import save_family, sentences
    from nodeprobe.cli import main

    run_dir = tmp_path / "ft"
    final = save_family(run_dir, "roberta", "cls", name="final")
    (run_dir / "finetune.json").write_text(json.dumps({"steps": 7}))
    texts = sentences(40, seed=3)
    for name, rows in (("train.csv", texts[:28]), ("test.csv", texts[28:])):
        with (tmp_path / name).open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows((t, "abc"[i % 3]) for i, t in enumerate(rows))
    js = tmp_path / "t.json"
    assert main(["track", "--run", str(run_dir), "--dataset", str(tmp_path / "train.csv"), "--test-dataset",
                 str(tmp_path / "test.csv"), "--no-heads", "--json", str(js)]) == 0
    d = json.loads(js.read_text())["result"]
    assert [s["step"] for s in d["steps"]] == [0, 7] and d["n_items"] == 12 and d["n_classes"] == 3
    assert d["steps"][0]["label"].startswith("random init")

    tok = AutoTokenizer.from_pretrained(final)
    hf = AutoModelForSequenceClassification.from_pretrained(final, attn_implementation="eager").eval()
    enc = tok(texts[28:], padding=True, return_tensors="pt")
    with torch.no_grad():
        pred = hf(**enc).logits.argmax(-1)
    y = torch.tensor([i % 3 for i in range(12)])  # the model's labels 0 1 2 are the data's a b c (id2label generic)
    assert d["steps"][1]["accuracy"] == pytest.approx(int((pred == y).sum()) / 12, abs=1e-6)
    assert (run_dir / "track-dataset" / "steps" / "step-0000007.json").is_file()
    capsys.readouterr()


def test_snapshots_of_another_architecture_are_refused_before_any_step(run, tmp_path):
    """A run folder mixing model sizes (a snapshot copied in from elsewhere) is one line naming the
    snapshot and a tensor whose shape differs, before any per-step result is written (it crashed
    inside the model on an out-of-range position before)."""
    import shutil

    from transformers import BertForMaskedLM

    from _heads_tiny import save, tiny_config
    from nodeprobe.studies.track import track

    root, tok, es = run
    mixed = tmp_path / "mixed" / "snapshots"
    shutil.copytree(root / "snapshots" / "step-0000005", mixed / "step-0000005")
    cfg = tiny_config(tok.vocab_size, tok.pad_id)
    cfg.hidden_size, cfg.intermediate_size, cfg.max_position_embeddings = 8, 16, 12
    save(BertForMaskedLM(cfg).eval(), tok, mixed / "step-0000030")
    with pytest.raises(NodeprobeError, match=r"snapshot .*step-0000030: another architecture than .*step-0000005 "
                                             r"\(tensor .*: \[.*\] vs \[.*\]\); track compares"):
        track([mixed.parent], es, heads=False, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
