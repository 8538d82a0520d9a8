"""The one evaluation loop (``nodeprobe.evaluate.run_eval``).

* on tiny random BERTs it equals a hand-written Hugging Face forward (accuracy exactly, loss to
  float precision), for a classifier and for MLM, in fp32 and under bf16 autocast;
* it restores the model's train/eval mode;
* pre-training's recorded held-out metrics and fine-tuning's recorded per-epoch and final test
  metrics are exactly ``run_eval`` on the same set with the saved model.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from _small_data import small_data_copy
from _tiny_models import save_tiny_bert_mlm, tiny_eval_set, tiny_hf

from nodeprobe.data.eval_sets import labeled_eval_set, mlm_eval_set
from nodeprobe.errors import NodeprobeError
from nodeprobe.evaluate import EvalResult, run_eval
from nodeprobe.model import HookedBert


def _hand_written(hf, es, precision="fp32"):
    """Accuracy and mean loss from the HF model's own forward (no hooks, no nodeprobe code)."""
    correct = n = 0
    loss_sum = 0.0
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else torch.autocast("cpu", enabled=False)
    with torch.no_grad():
        for b in es.batches:
            with ctx:
                logits = hf(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
            logits = logits.float()
            if b.positions is not None:
                logits = logits[b.positions]  # row-major, as the targets
            else:
                logits = logits.reshape(len(b.targets), -1)
            correct += int((logits.argmax(-1) == b.targets).sum())
            loss_sum += float(F.cross_entropy(logits, b.targets, reduction="sum"))
            n += int(b.targets.numel())
    return correct / n, loss_sum / n, n


@pytest.mark.parametrize("task", ["cls", "mlm"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_run_eval_equals_hand_written_forward(task, precision):
    hf = tiny_hf(task, seed=2)
    es = tiny_eval_set(task, n_batches=3, seed=5)
    res = run_eval(HookedBert(hf), es, precision=precision)
    acc, loss, n = _hand_written(hf, es, precision)
    assert res.n == n == es.n_items
    assert res.preds.shape == res.targets.shape == res.losses.shape == (n,)
    tol = 1e-5 if precision == "fp32" else 5e-2
    assert res.loss == pytest.approx(loss, abs=tol)
    if precision == "fp32":
        assert res.accuracy == acc
    assert res.accuracy == int((res.preds == res.targets).sum()) / n  # an exact ratio, not a float32 mean
    assert res.loss == pytest.approx(float(res.losses.double().mean()), abs=1e-6)


def test_bf16_autocast_applies():
    hf = tiny_hf("cls", seed=2)
    es = tiny_eval_set("cls", n_batches=2, seed=5)
    model = HookedBert(hf)
    assert not torch.equal(run_eval(model, es, precision="bf16").losses, run_eval(model, es).losses)
    with pytest.raises(NodeprobeError, match="precision=fp16"):
        run_eval(model, es, precision="fp16")


def test_run_eval_restores_train_mode():
    hf = tiny_hf("mlm", seed=1)
    model = HookedBert(hf)
    es = tiny_eval_set("mlm", n_batches=1)
    model.train()
    run_eval(model, es)
    assert model.training and hf.training
    model.eval()
    run_eval(model, es)
    assert not model.training


def test_eval_result_ratios():
    r = EvalResult(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 2]), torch.tensor([1.0, 2.0, 4.0]))
    assert r.n == 3 and r.accuracy == 2 / 3 and r.loss == 7 / 3
    empty = EvalResult(torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), torch.empty(0))
    assert empty.n == 0 and empty.accuracy == 0.0 and empty.loss == 0.0


# ---------------------------------------------------------------------- training calls the one loop
@pytest.fixture(scope="module")
def small_data(tmp_path_factory, shared_data):
    return small_data_copy(tmp_path_factory.mktemp("ev_data"), shared_data, dbpedia_rows=20, wiki_test_bytes=60_000)


def test_pretrain_heldout_metrics_are_run_eval(tmp_path, small_data, monkeypatch):
    from nodeprobe.data.corpus import PretrainData
    from nodeprobe.model import load_model
    from nodeprobe.train.presets import ModelSize, PretrainSettings
    from nodeprobe.train.pretrain import pretrain

    monkeypatch.setenv("NODEPROBE_PROGRESS", "0")
    size = ModelSize(n_layers=1, d_model=32, n_heads=2, d_ff=32, dropout=0.1)
    settings = PretrainSettings(epochs=1, batch_size=8, lr=2e-3, max_sequences=32)
    summary = pretrain(tmp_path / "pre", size, settings, data_dir=small_data, seed=3, progress=False)
    corp = PretrainData.load(small_data, None, size.max_len, settings.heldout_every)
    es = mlm_eval_set(corp.heldout, corp.tokenizer, seed=3)
    res = run_eval(load_model(tmp_path / "pre" / "final", kind="mlm"), es)
    assert summary["heldout_n"] == res.n == es.n_items > 0
    assert summary["heldout_accuracy"] == res.accuracy
    assert summary["heldout_loss"] == res.loss
    log = [json.loads(l) for l in (tmp_path / "pre" / "log.jsonl").read_text().splitlines()]
    last = [r for r in log if "heldout_accuracy" in r][-1]
    assert (last["heldout_accuracy"], last["heldout_loss"], last["heldout_n"]) == (res.accuracy, res.loss, res.n)


@pytest.fixture(scope="module")
def tiny_mlm_dir(tmp_path_factory, shared_data):
    return save_tiny_bert_mlm(tmp_path_factory.mktemp("tiny_mlm_ev"), shared_data / "tokenizer" / "bert-base-uncased-vocab.txt")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_finetune_test_metrics_are_run_eval(tmp_path, tiny_mlm_dir, shared_data, monkeypatch, precision):
    from nodeprobe.data.tasks import classification_splits
    from nodeprobe.data.tokenizer import load_tokenizer
    from nodeprobe.model import load_model
    from nodeprobe.train.finetune import finetune
    from nodeprobe.train.presets import FinetuneSettings

    monkeypatch.setenv("NODEPROBE_PROGRESS", "0")
    s = FinetuneSettings(epochs=1, batch_size=16, lr=1e-3, n_train=8, n_test=4, dropout=0.0, precision=precision)
    summary = finetune(tmp_path / "ft", tiny_mlm_dir, task="fewrel", settings=s, data_dir=shared_data, seed=0,
                       progress=False)
    tok = load_tokenizer(tiny_mlm_dir)
    _, test = classification_splits("fewrel", shared_data, tok, n_train=8, n_test=4, max_len=128)
    es = labeled_eval_set(test, "fewrel", pad_id=tok.pad_id)
    res = run_eval(load_model(tmp_path / "ft" / "final", kind="cls"), es, precision=precision)
    assert summary["n_test"] == res.n == len(test)
    assert summary["test_accuracy"] == res.accuracy
    assert summary["test_loss"] == res.loss
    log = [json.loads(l) for l in (tmp_path / "ft" / "log.jsonl").read_text().splitlines()]
    assert (log[-1]["test_accuracy"], log[-1]["test_loss"]) == (res.accuracy, res.loss)
