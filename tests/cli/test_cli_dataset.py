"""``--dataset``: your own labelled table through the CLI (task ``dataset``), in every format.

Every report's accuracy is checked against a plain Hugging Face evaluation of the same test rows:
the rows tokenised by ``transformers``' own ``BertTokenizer``, run one at a time through the saved
``BertForSequenceClassification``, argmax against the labels (their index among the sorted names, or
the model's ``label2id`` when its ``id2label`` names are the data's).
"""

from __future__ import annotations

import json
import shutil

import pytest

from _cli import run_json as run
import torch

from _tiny_models import tiny_hf
from nodeprobe.cli import main

VOCAB_SIZE = 30522
WORDS = ["the", "cat", "dog", "sat", "on", "mat", "new", "york", "is", "big", "river", "bridge"]
LABELS = ("pos", "neg", "mid")


def rows(n: int, offset: int = 0) -> list[dict]:
    """``n`` rows {review, stars}; classes interleaved, texts of 1–5 words."""
    out = []
    for i in range(offset, offset + n):
        out.append({"review": " ".join(WORDS[(3 * i + j) % len(WORDS)] for j in range(1 + i % 5)),
                    "stars": LABELS[i % 3]})
    return out


def write(rs: list[dict], path, fmt: str):
    """``rs`` as csv / jsonl / parquet at ``path``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if fmt == "csv":
        import csv

        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["review", "stars"])
            w.writerows([r["review"], r["stars"]] for r in rs)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rs), encoding="utf-8")
    elif fmt == "parquet":
        pq.write_table(pa.table({k: [r[k] for r in rs] for k in ("review", "stars")}), path)
    else:
        raise ValueError(fmt)
    return path


TRAIN, TEST = rows(24), rows(9, offset=100)
FORMATS = ("csv", "jsonl", "parquet", "disk")


@pytest.fixture(scope="module")
def fx(tmp_path_factory, shared_data):
    """A tiny 3-label classifier (generic LABEL_i names), the same weights with id2label = the data's
    names in another order, and the train/test tables in every format."""
    import datasets

    root = tmp_path_factory.mktemp("user_data")
    vocab = shared_data / "tokenizer" / "bert-base-uncased-vocab.txt"
    out = {"vocab": vocab}
    hf = tiny_hf("cls", seed=3, vocab_size=VOCAB_SIZE, num_labels=3)
    for name, id2label in (("cls", None), ("named", {0: "pos", 1: "mid", 2: "neg"})):
        if id2label is not None:
            hf.config.id2label = id2label
            hf.config.label2id = {v: k for k, v in id2label.items()}
        hf.save_pretrained(root / name)
        shutil.copy(vocab, root / name / "vocab.txt")
        out[name] = root / name
    for fmt in ("csv", "jsonl", "parquet"):
        out[fmt] = ["--dataset", str(write(TRAIN, root / f"train.{fmt}", fmt)),
                    "--test-dataset", str(write(TEST, root / f"test.{fmt}", fmt))]
    cols = lambda rs: {k: [r[k] for r in rs] for k in ("review", "stars")}  # noqa: E731
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(cols(TRAIN)),
                          "test": datasets.Dataset.from_dict(cols(TEST))}).save_to_disk(str(root / "disk"))
    out["disk"] = ["--dataset", str(root / "disk"), "--split", "train", "--test-split", "test"]
    return out


def hf_accuracy(model_dir, vocab, test_rows) -> float:
    """Accuracy of the saved classifier on ``test_rows``, by transformers alone."""
    from transformers import BertForSequenceClassification, BertTokenizer

    hf = BertForSequenceClassification.from_pretrained(model_dir).eval()
    tok = BertTokenizer(str(vocab), do_lower_case=True)
    names = [hf.config.id2label[i] for i in range(hf.config.num_labels)]
    index = ({n: i for i, n in enumerate(names)} if sorted(names) == sorted(LABELS)
             else {n: i for i, n in enumerate(sorted(LABELS))})
    right = 0
    with torch.no_grad():
        for r in test_rows:
            enc = tok(r["review"], truncation=True, max_length=min(128, hf.config.max_position_embeddings),
                      return_tensors="pt")
            right += int(hf(**enc).logits.argmax(-1).item() == index[r["stars"]])
    return right / len(test_rows)




COLUMNS = ["--text-column", "review", "--label-column", "stars"]
REPORTS = {
    "ablate": (["ablate", "--all"], lambda r: r["baseline_accuracy"]),
    "specialization": (["specialization", "--top", "2"], lambda r: r["baseline_accuracy"]),
    "cooperation": (["cooperation", "--R", "2", "--grid", "1,2", "--no-null"], lambda r: r["baseline_accuracy"]),
    "hull": (["hull", "--n", "1", "--top", "2"], lambda r: r["readout"]["accuracy"]),
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_reports_match_a_plain_hf_evaluation(fx, fmt, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    want = hf_accuracy(fx["cls"], fx["vocab"], TEST)
    for name, (cmd, accuracy) in REPORTS.items():
        extra = [] if name == "ablate" else ["--cache", str(tmp_path / "cache")]
        rep = run(cmd + ["--model", str(fx["cls"])] + fx[fmt] + COLUMNS + extra, capsys, tmp_path / f"{name}.json")
        assert rep["settings"]["task"] == "dataset"
        assert rep["settings"]["dataset"]["text_column"] == "review"
        assert rep["result"]["n_items"] == len(TEST), name
        assert accuracy(rep["result"]) == pytest.approx(want, abs=1e-6), name


@pytest.mark.parametrize("fmt", FORMATS)
def test_finetune_on_the_table_then_evaluate_it(fx, fmt, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "ft"
    rep = run(["finetune", "--model", str(fx["cls"]), "--out", str(out), "--preset", "smoke", "--epochs", "2",
               "--batch-size", "8", "--lr", "1e-3"] + fx[fmt] + COLUMNS, capsys, tmp_path / "ft.json")
    cfg = json.loads((out / "final" / "config.json").read_text())
    assert cfg["id2label"] == {"0": "mid", "1": "neg", "2": "pos"}
    s = rep["result"]
    assert s["task"] == "dataset" and s["label_names"] == ["mid", "neg", "pos"] and s["n_test"] == len(TEST)
    assert s["n_train"] == len(TRAIN) and len(s["curve"]) == 2
    want = hf_accuracy(out / "final", fx["vocab"], TEST)
    assert s["test_accuracy"] == pytest.approx(want, abs=1e-6)
    assert s["curve"][-1]["test_accuracy"] == pytest.approx(want, abs=1e-6)
    run_json = json.loads((out / "run.json").read_text())["run"]
    assert run_json["data"]["text_column"] == "review" and run_json["label_names"] == ["mid", "neg", "pos"]
    # the fine-tuned model, evaluated by a report on the same table: the same accuracy
    ab = run(["ablate", "--all", "--model", str(out / "final")] + fx[fmt] + COLUMNS, capsys, tmp_path / "a.json")
    assert ab["result"]["baseline_accuracy"] == pytest.approx(want, abs=1e-6)
    # --resume of the finished run returns its summary; another column setting is another run
    assert main(["finetune", "--model", str(fx["cls"]), "--out", str(out), "--preset", "smoke", "--epochs", "2",
                 "--batch-size", "8", "--lr", "1e-3", "--resume"] + fx[fmt] + COLUMNS) == 0
    capsys.readouterr()
    rc = main(["finetune", "--model", str(fx["cls"]), "--out", str(out), "--preset", "smoke", "--epochs", "2",
               "--batch-size", "8", "--lr", "1e-3", "--resume"] + fx[fmt] + COLUMNS[:2] + ["--label-column", "stars",
                                                                                            "--seed", "1"])
    assert rc == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_model_label_names_map_data_labels_by_name(fx, tmp_path, capsys, monkeypatch):
    """id2label = the data's names in another order: each data label is scored as the model id of
    its name (the HF reference does the same through label2id)."""
    monkeypatch.chdir(tmp_path)
    want = hf_accuracy(fx["named"], fx["vocab"], TEST)
    rep = run(["ablate", "--all", "--model", str(fx["named"])] + fx["csv"] + COLUMNS, capsys, tmp_path / "a.json")
    assert rep["result"]["baseline_accuracy"] == pytest.approx(want, abs=1e-6)
    from nodeprobe.data.user import align_labels
    from nodeprobe.data.labeled import LabeledSet

    s = LabeledSet([[1], [2], [3]], [0, 1, 2], ["mid", "neg", "pos"], "demo", ["mid", "neg", "pos"])
    moved = align_labels(s, 3, {0: "pos", 1: "mid", 2: "neg"})
    assert moved.labels == [1, 2, 0] and moved.label_names == ["pos", "mid", "neg"]
    assert align_labels(s, 3, {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}).labels == [0, 1, 2]
    assert align_labels(s, 3, {0: "a", 1: "b", 2: "c"}).labels == [0, 1, 2]  # other names: the data's order


def test_test_fraction_split_and_cache_keys(fx, tmp_path, capsys, monkeypatch):
    """Without a test table: the seeded stratified share; changing the fraction or a column never
    reuses the cache of another (the eval fingerprint differs)."""
    from nodeprobe.data.user import stratified_test_indices

    monkeypatch.chdir(tmp_path)
    train = fx["csv"][1]
    cache = ["--cache", str(tmp_path / "c")]
    fps = []
    for frac in ("0.25", "0.5"):
        argv = ["hull", "--n", "1", "--model", str(fx["cls"]), "--dataset", train, "--test-fraction", frac] + COLUMNS
        if frac == "0.5":  # the cache of 0.25 is not this data's: refused in one line, never reused
            capsys.readouterr()
            assert main(argv + cache) == 2
            assert "was built from other data" in capsys.readouterr().err
        rep = run(argv + (cache if frac == "0.25" else []), capsys, tmp_path / "h.json")
        y = [sorted(LABELS).index(r["stars"]) for r in TRAIN]
        idx = stratified_test_indices(y, float(frac), 0)
        assert rep["result"]["n_items"] == len(idx)
        assert rep["result"]["readout"]["accuracy"] == pytest.approx(
            hf_accuracy(fx["cls"], fx["vocab"], [TRAIN[i] for i in idx]), abs=1e-6)
        fps.append(rep["settings"]["eval_fingerprint"])
    assert fps[0] != fps[1]
    from nodeprobe.data.user import UserData

    a = UserData(train, text_column="review", label_column="stars")
    assert a.fingerprint() == UserData(train, text_column="review", label_column="stars").fingerprint()
    assert a.fingerprint() != UserData(train, text_column="review", label_column="stars", test_fraction=0.3).fingerprint()


def test_mlm_text_column(fx, tmp_path, capsys, monkeypatch, shared_data):
    """``--task mlm --dataset`` evaluates the text column as masked-LM text (= mlm_eval_set of its rows)."""
    from _tiny_models import save_tiny_bert_mlm
    from nodeprobe.data.eval_sets import mlm_eval_set
    from nodeprobe.data.text import article_sequences
    from nodeprobe.data.tokenizer import load_tokenizer
    from nodeprobe.evaluate import run_eval
    from nodeprobe.model import load_model

    monkeypatch.chdir(tmp_path)
    mlm = save_tiny_bert_mlm(tmp_path / "mlm", fx["vocab"])
    rep = run(["ablate", "--all", "--model", str(mlm), "--task", "mlm", "--dataset", fx["csv"][1], "--text-column",
               "review"], capsys, tmp_path / "a.json")
    tok = load_tokenizer(fx["vocab"])
    seqs = [s for r in TRAIN for s in article_sequences(tok.encode_batch([r["review"]])[0], tok.cls_id, tok.sep_id)]
    es = mlm_eval_set(seqs, tok)
    ref = run_eval(load_model(str(mlm), kind="mlm"), es)
    assert rep["settings"]["task"] == "mlm" and rep["settings"]["source"].startswith("mlm:user:")
    assert rep["result"]["baseline_accuracy"] == pytest.approx(ref.accuracy, abs=1e-6)
    assert rep["result"]["baseline_loss"] == pytest.approx(ref.loss, abs=1e-4)
