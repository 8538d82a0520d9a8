"""The CLI end to end on every non-BERT encoder family (RoBERTa, XLM-R, ELECTRA with its embedding
projection, DistilBERT): fine-tune the family's MLM on a little ``--dataset`` table, then every
report on the fine-tuned classifier, the MLM reports on the MLM, and a RoBERTa sentence-pair table.

Every accuracy is checked against a plain Hugging Face evaluation: ``AutoModelFor…`` /
``AutoTokenizer`` of the saved folder, one row at a time, argmax against the labels mapped through
the model's ``label2id`` (MLM: HF's own logits on the very masked batches the command scores).

The models are ``tests/_families.py``'s tiny random ones; the texts are made of their tokenizers'
training words, and the three classes have their own keywords, so fine-tuning learns something and
the accuracy is not one constant prediction's share.
"""

from __future__ import annotations

import csv
import json

import pytest

from _cli import run_json as run
import torch

from _families import save_family
from nodeprobe.cli import main

FAMILIES = ["roberta", "xlm_roberta", "electra_proj", "distilbert"]
HF_CLASS = {"roberta": "Roberta", "xlm_roberta": "XLMRoberta", "electra_proj": "Electra", "distilbert": "DistilBert"}
MODEL_TYPE = {"roberta": "roberta", "xlm_roberta": "xlm-roberta", "electra_proj": "electra",
              "distilbert": "distilbert", "bert": "bert"}

# three classes, each with its own keywords; filler words shared (all in the fixture tokenizers' vocab)
KEYWORDS = {"animal": ["cat", "dog", "king", "queen", "child"],
            "weather": ["sun", "moon", "rain", "snow", "wind"],
            "place": ["road", "house", "city", "river", "hill"]}
FILLER = ["the", "a", "big", "small", "red", "old", "new", "on", "near", "with"]
NAMES = sorted(KEYWORDS)  # the label order fine-tuning gives the data's names


def rows(n: int, offset: int = 0, weights=(1, 1, 1)) -> list[dict]:
    """``n`` rows {text, label, pair}: 3–6 words with one or two of the label's keywords; classes
    in the proportions ``weights``."""
    cycle = [name for name, w in zip(KEYWORDS, weights) for _ in range(w)]
    out = []
    for i in range(offset, offset + n):
        label = cycle[i % len(cycle)]
        kw = KEYWORDS[label]
        words = [FILLER[(7 * i + j) % len(FILLER)] for j in range(2 + i % 3)]
        words.insert(i % len(words), kw[i % len(kw)])
        if i % 2:
            words.append(kw[(i + 2) % len(kw)])
        pair = " ".join([FILLER[(3 * i) % len(FILLER)], kw[(i + 1) % len(kw)]])
        out.append({"text": " ".join(words), "label": label, "pair": pair})
    return out


TRAIN = rows(40)
TEST = rows(14, offset=200, weights=(3, 2, 1))  # unbalanced: a constant prediction is not the accuracy


def write_csv(path, rs, columns=("text", "label")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows([r[c] for c in columns] for r in rs)
    return path




OUT_PROJ = {"roberta": "classifier.out_proj", "xlm_roberta": "classifier.out_proj",
            "electra_proj": "classifier.out_proj", "distilbert": "classifier", "bert": "classifier"}  # the last Linear


def hf_classifier_eval(model_dir, test_rows, pair: bool = False) -> dict:
    """The saved classifier on ``test_rows``, by transformers alone: ``accuracy``, ``loss`` (mean
    cross-entropy), per-row ``preds``/``targets``/``losses`` and ``readout`` (the vector entering the
    classifier's last Linear, ``[N, d]``), ``W``/``b`` of that Linear."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    hf = AutoModelForSequenceClassification.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    out = hf.get_submodule(OUT_PROJ[FAMILY_OF_TYPE[hf.config.model_type]])
    seen = []
    handle = out.register_forward_hook(lambda m, args, res: seen.append(args[0].detach()[0]))
    preds, targets, losses = [], [], []
    try:
        with torch.no_grad():
            for r in test_rows:
                enc = tok(r["text"], r["pair"] if pair else None, truncation=True, return_tensors="pt")
                logits = hf(**enc).logits
                y = hf.config.label2id[r["label"]]
                preds.append(int(logits.argmax(-1).item()))
                targets.append(y)
                losses.append(float(torch.nn.functional.cross_entropy(logits, torch.tensor([y]))))
    finally:
        handle.remove()
    right = sum(p == y for p, y in zip(preds, targets))
    return {"accuracy": right / len(test_rows), "loss": sum(losses) / len(losses), "preds": preds,
            "targets": targets, "losses": losses, "readout": torch.stack(seen), "W": out.weight.detach(),
            "b": out.bias.detach()}


FAMILY_OF_TYPE = {v: k for k, v in MODEL_TYPE.items()}


def assert_cache_is_hf(cache_dir, ref: dict):
    """The cache a report built: per item the readout vector, target, prediction and loss of HF's
    evaluation (items matched by their readout vector: the cache's order is length-sorted), and the
    readout map W, b = the classifier's last Linear."""
    from nodeprobe.cache.store import CacheReader

    (manifest,) = list(cache_dir.rglob("manifest.json"))
    c = CacheReader(manifest.parent, json.loads(manifest.read_text()))
    got = c.readout()
    assert got.shape == ref["readout"].shape
    dist = torch.cdist(got, ref["readout"])
    match = dist.argmin(1)
    assert sorted(match.tolist()) == list(range(len(match)))  # one HF row per cached item
    assert float(dist.min(1).values.max()) < 1e-4
    for key in ("targets", "preds"):
        assert c.load(key).tolist() == [ref[key][j] for j in match.tolist()], key
    assert c.load("loss").tolist() == pytest.approx([ref["losses"][j] for j in match.tolist()], abs=1e-4)
    assert torch.allclose(c.W, ref["W"], atol=1e-6) and torch.allclose(c.b, ref["b"], atol=1e-6)


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    root = tmp_path_factory.mktemp("family_tables")
    return {"train": write_csv(root / "train.csv", TRAIN), "test": write_csv(root / "test.csv", TEST),
            "pair_train": write_csv(root / "pair_train.csv", TRAIN, ("text", "pair", "label")),
            "pair_test": write_csv(root / "pair_test.csv", TEST, ("text", "pair", "label"))}


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, tables):
    """``family → (mlm dir, run dir, finetune report)``: each family's MLM fine-tuned on the train
    table (its test table the test split), once per module."""

    done = {}

    def get(family: str):
        if family not in done:
            root = tmp_path_factory.mktemp(f"fam_{family}")
            mlm = save_family(root, family, "mlm")
            out = root / "ft"
            report = root / "ft.json"
            rc = main(["finetune", "--model", str(mlm), "--out", str(out), "--preset", "smoke", "--epochs", "1",
                       "--batch-size", "8", "--lr", "3e-3", "--dataset", str(tables["train"]),
                       "--test-dataset", str(tables["test"]), "--json", str(report)])
            assert rc == 0, family
            done[family] = (mlm, out, json.loads(report.read_text()))
        return done[family]

    return get


REPORTS = {
    "ablate": (["ablate", "--layer", "1", "--head", "0"], lambda r: r["baseline_accuracy"]),
    "specialization": (["specialization", "--top", "2"], lambda r: r["baseline_accuracy"]),
    "cooperation": (["cooperation", "--R", "2", "--grid", "1,2", "--no-null"], lambda r: r["baseline_accuracy"]),
    "hull": (["hull", "--n", "1", "--top", "2"], lambda r: r["readout"]["accuracy"]),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_finetune_then_every_report(family, finetuned, tables, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, out, ft = finetuned(family)
    final = out / "final"
    cfg = json.loads((final / "config.json").read_text())
    assert cfg["model_type"] == MODEL_TYPE[family]
    assert cfg["architectures"] == [HF_CLASS[family] + "ForSequenceClassification"]
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(str(final)).num_labels == len(NAMES)
    assert cfg["id2label"] == {str(i): n for i, n in enumerate(NAMES)}
    s = ft["result"]
    assert s["task"] == "dataset" and s["label_names"] == NAMES
    assert s["n_train"] == len(TRAIN) and s["n_test"] == len(TEST)
    ref = hf_classifier_eval(final, TEST)
    assert s["test_accuracy"] == pytest.approx(ref["accuracy"], abs=1e-6)
    data = ["--dataset", str(tables["train"]), "--test-dataset", str(tables["test"])]
    for name, (cmd, accuracy) in REPORTS.items():
        extra = [] if name == "ablate" else ["--cache", str(tmp_path / name)]
        rep = run(cmd + ["--model", str(final)] + data + extra, capsys, tmp_path / f"{name}.json")
        assert rep["settings"]["task"] == "dataset", name
        assert rep["result"]["n_items"] == len(TEST), name
        assert accuracy(rep["result"]) == pytest.approx(ref["accuracy"], abs=1e-6), (name, ref["preds"])
        if name == "ablate":
            assert rep["result"]["baseline_loss"] == pytest.approx(ref["loss"], abs=1e-4)
        else:
            assert_cache_is_hf(tmp_path / name, ref)


def hf_mlm_reference(mlm_dir, es) -> tuple[float, float]:
    """(accuracy, mean loss) of the saved MLM on the masked positions of ``es``, by transformers alone."""
    from transformers import AutoModelForMaskedLM

    hf = AutoModelForMaskedLM.from_pretrained(str(mlm_dir), attn_implementation="eager").eval()
    right, loss, n = 0, 0.0, 0
    with torch.no_grad():
        for b in es.batches:
            logits = hf(input_ids=b.input_ids, attention_mask=b.attention_mask).logits[b.positions]
            right += int((logits.argmax(-1) == b.targets).sum())
            loss += float(torch.nn.functional.cross_entropy(logits, b.targets, reduction="sum"))
            n += int(b.targets.numel())
    return right / n, loss / n


@pytest.mark.parametrize("family", FAMILIES)
def test_mlm_reports_on_the_text_column(family, finetuned, tables, tmp_path, capsys, monkeypatch):
    """``--task mlm --dataset``: specialization and ablate on the family's MLM; the baseline is HF's
    own MLM on the very batches (masks) nodeprobe builds of the text column."""
    from nodeprobe.data.eval_sets import load_eval_set
    from nodeprobe.data.tokenizer import load_tokenizer
    from nodeprobe.data.user import UserData

    monkeypatch.chdir(tmp_path)
    mlm = finetuned(family)[0]
    data = ["--dataset", str(tables["train"]), "--text-column", "text"]
    spec = run(["specialization", "--model", str(mlm), "--task", "mlm", "--limit", "32"] + data, capsys,
               tmp_path / "s.json")
    ab = run(["ablate", "--model", str(mlm), "--task", "mlm", "--layer", "0", "--head", "1"] + data, capsys,
             tmp_path / "a.json")
    for rep in (spec, ab):
        assert rep["settings"]["task"] == "mlm" and rep["settings"]["source"].startswith("mlm:user:")
        assert rep["result"]["n_items"] > 0 and 0.0 <= rep["result"]["baseline_accuracy"] <= 1.0
    tok = load_tokenizer(mlm)
    assert tok.unk_id not in {i for s in tok.encode_batch([r["text"] for r in TRAIN]) for i in s}
    user = UserData(tables["train"], text_column="text")
    # the CLI's max_len is min(128, the positions the model allows): 62 for RoBERTa / XLM-R, 64 otherwise
    es = load_eval_set("mlm", tok, user, max_len=64 - 2 * (family in ("roberta", "xlm_roberta")))
    acc, loss = hf_mlm_reference(mlm, es)
    assert ab["result"]["n_items"] == es.n_items
    assert ab["result"]["baseline_accuracy"] == pytest.approx(acc, abs=1e-6)
    assert ab["result"]["baseline_loss"] == pytest.approx(loss, abs=1e-4)
    assert ab["result"]["ablated_loss"] != pytest.approx(loss, abs=1e-6)  # the head matters


@pytest.mark.parametrize("family", ["roberta", "bert", "electra_proj", "distilbert"])
def test_pair_column_uses_each_familys_template(family, finetuned, tables, tmp_path, capsys, monkeypatch):
    """``--text-pair-column``: items are the tokenizer's own pair template (RoBERTa ``<s> a </s></s>
    b </s>``, BERT/ELECTRA ``[CLS] a [SEP] b [SEP]`` with token types 0/1, DistilBERT no types), so
    accuracy, loss and the cached readout are HF's on ``tok(a, b)``."""
    from transformers import AutoTokenizer

    from nodeprobe.data.eval_sets import labeled_eval_set
    from nodeprobe.data.tokenizer import load_tokenizer
    from nodeprobe.data.user import UserData

    monkeypatch.chdir(tmp_path)
    final = finetuned(family)[1] / "final"
    hf_tok = AutoTokenizer.from_pretrained(str(final))
    tok = load_tokenizer(final)
    if family == "roberta":
        assert tok.pair_separator == [hf_tok.sep_token_id, hf_tok.sep_token_id]
    user = UserData(tables["pair_train"], text_column="text", label_column="label", text_pair_column="pair",
                    test_path=tables["pair_test"])
    _, test = user.splits(tok, max_len=62)
    encs = [hf_tok(r["text"], r["pair"]) for r in TEST]
    assert [list(x) for x in test.input_ids] == [e["input_ids"] for e in encs]
    es = labeled_eval_set(test, "dataset", pad_id=tok.pad_id)
    by_ids = {tuple(e["input_ids"]): e.get("token_type_ids", [0] * len(e["input_ids"])) for e in encs}
    for b in es.batches if family != "distilbert" else ():  # the token types nodeprobe runs with are HF's
        for ids, mask, types in zip(b.input_ids, b.attention_mask,
                                    b.token_type_ids if b.token_type_ids is not None else torch.zeros_like(b.input_ids)):
            n = int(mask.sum())
            assert types[:n].tolist() == list(by_ids[tuple(ids[:n].tolist())]), family
    if family in ("bert", "electra_proj"):
        assert any(1 in e["token_type_ids"] for e in encs)  # the second text is type 1 there
    ref = hf_classifier_eval(final, TEST, pair=True)
    single = hf_classifier_eval(final, TEST)
    assert ref["loss"] != pytest.approx(single["loss"], abs=1e-4)  # the second text matters
    rep = run(["ablate", "--layer", "0", "--head", "1", "--model", str(final), "--dataset", str(tables["pair_train"]),
               "--test-dataset", str(tables["pair_test"]), "--text-pair-column", "pair"], capsys, tmp_path / "a.json")
    assert rep["result"]["n_items"] == len(TEST)
    assert rep["result"]["baseline_accuracy"] == pytest.approx(ref["accuracy"], abs=1e-6)
    assert rep["result"]["baseline_loss"] == pytest.approx(ref["loss"], abs=1e-4)
    rep = run(["hull", "--n", "1", "--model", str(final), "--dataset", str(tables["pair_train"]), "--test-dataset",
               str(tables["pair_test"]), "--text-pair-column", "pair", "--cache", str(tmp_path / "c")], capsys,
              tmp_path / "h.json")
    assert rep["result"]["readout"]["accuracy"] == pytest.approx(ref["accuracy"], abs=1e-6)
    assert_cache_is_hf(tmp_path / "c", ref)


def test_unsupported_architecture_is_one_line(tmp_path, capsys, monkeypatch):
    """A saved GPT2LMHeadModel: exit 2, one line naming the class and the supported ones."""
    import transformers

    monkeypatch.chdir(tmp_path)
    cfg = transformers.GPT2Config(n_embd=16, n_layer=1, n_head=2, n_positions=32, vocab_size=50)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "gpt2")
    capsys.readouterr()
    rc = main(["ablate", "--model", str(tmp_path / "gpt2"), "--layer", "0", "--head", "0",
               "--dataset", str(write_csv(tmp_path / "d.csv", TRAIN))])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1, err
    assert "GPT2LMHeadModel" in err and "RobertaForSequenceClassification" in err and "BertForMaskedLM" in err
