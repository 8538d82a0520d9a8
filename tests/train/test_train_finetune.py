"""`finetune` runs in the precision its settings name (the `cpu` preset's bf16 autocast), and an
explicit ``precision=`` overrides it.  Regression: the CLI and `reproduce` once passed only the
settings, and fine-tuning silently ran in fp32 while the report said bf16."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from _tiny_models import save_tiny_bert_mlm

from nodeprobe.errors import NodeprobeError
from nodeprobe.train.finetune import finetune
from nodeprobe.train.presets import FinetuneSettings


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, shared_data):
    return save_tiny_bert_mlm(tmp_path_factory.mktemp("tiny_mlm"), shared_data / "tokenizer" / "bert-base-uncased-vocab.txt")


def _run(out, model, data, precision_setting, precision=None):
    s = FinetuneSettings(epochs=1, batch_size=16, lr=1e-3, n_train=8, n_test=4, dropout=0.0,
                         precision=precision_setting)
    return finetune(out, model, task="fewrel", settings=s, data_dir=data, seed=0, precision=precision,
                    progress=False)


def _weights(run):
    return load_file(str(run / "final" / "model.safetensors"))


def test_settings_precision_is_used_and_overridable(tmp_path, tiny_model, shared_data, monkeypatch):
    monkeypatch.setenv("NODEPROBE_PROGRESS", "0")
    _run(tmp_path / "fp32", tiny_model, shared_data, "fp32")
    _run(tmp_path / "bf16", tiny_model, shared_data, "bf16")
    _run(tmp_path / "override", tiny_model, shared_data, "bf16", precision="fp32")
    for name, want in (("fp32", "fp32"), ("bf16", "bf16"), ("override", "fp32")):
        run = json.loads((tmp_path / name / "run.json").read_text())["run"]
        summary = json.loads((tmp_path / name / "finetune.json").read_text())
        assert run["precision"] == run["settings"]["precision"] == summary["settings"]["precision"] == want, name
    fp32, bf16, override = (_weights(tmp_path / n) for n in ("fp32", "bf16", "override"))
    # bf16 autocast changes the arithmetic, so the trained weights differ; the override is fp32 exactly
    assert any(not torch.equal(fp32[k], bf16[k]) for k in fp32)
    assert all(torch.equal(fp32[k], override[k]) for k in fp32)


def test_bad_precision_is_refused(tmp_path, tiny_model, shared_data):
    with pytest.raises(NodeprobeError, match="precision=fp16: expected fp32 or bf16"):
        _run(tmp_path / "x", tiny_model, shared_data, "fp32", precision="fp16")
    assert not (tmp_path / "x").exists()
