"""Untrusted files: pickled weights and trainer state never run code unless the user trusts them."""

from __future__ import annotations

import json

import pytest
import torch

from _tiny_models import tiny_hf
from nodeprobe.cli import main
from nodeprobe.errors import NodeprobeError


class Evil:
    """Unpickling this writes a marker file (what a malicious checkpoint could do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.fixture
def pickled_model(tmp_path, shared_data):
    """A model dir holding only config.json, vocab.txt and a malicious pytorch_model.bin."""
    d = tmp_path / "evil"
    hf = tiny_hf("cls", vocab_size=30522, num_labels=16)
    hf.save_pretrained(d)
    (d / "model.safetensors").unlink()
    (d / "vocab.txt").write_bytes((shared_data / "tokenizer" / "bert-base-uncased-vocab.txt").read_bytes())
    marker = tmp_path / "MARKER"
    torch.save({"bert.embeddings.word_embeddings.weight": Evil(marker)}, d / "pytorch_model.bin")
    return d, marker


def test_pickled_weights_refused_without_trust(pickled_model, tmp_path, capsys, monkeypatch):
    d, marker = pickled_model
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    rc = main(["ablate", "--all", "--model", str(d), "--limit", "8", "--json", str(tmp_path / "a.json")])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("nodeprobe: error: "), err
    assert "pytorch_model.bin" in lines[0] or "pickle" in lines[0], err
    assert "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "a.json").exists()


def test_pickled_weights_refused_by_load_hf(pickled_model):
    from nodeprobe.model import load_hf

    d, marker = pickled_model
    with pytest.raises(NodeprobeError):
        load_hf(d, "cls")
    assert not marker.exists()


def test_malicious_trainer_state_refused(tmp_path):
    """``torch.load(weights_only=True)`` refuses a trainer_state.pt that would run code."""
    from nodeprobe.train import loop

    hf = tiny_hf("mlm")
    opt = loop.make_optimizer(hf, 1e-3, 0.01)
    sched = loop.linear_schedule(opt, 10, 0.1)
    loop.save_checkpoint(tmp_path, hf, opt, sched, loop.Progress(step=3), "fp")
    marker = tmp_path / "MARKER"
    ck = tmp_path / loop.CKPT
    torch.save({"optimizer": Evil(marker), "scheduler": {}}, ck / "trainer_state.pt")
    with pytest.raises(NodeprobeError, match="checkpoint"):
        loop.load_checkpoint(tmp_path, hf, opt, sched, "fp")
    assert not marker.exists()
    assert json.loads((ck / "state.json").read_text())["step"] == 3  # left as it was


def test_trust_pickle_flag_loads_a_benign_pickle(tmp_path, shared_data, capsys):
    """`nodeprobe --trust-pickle …` is the explicit opt-in: a plain pickled state dict then loads."""
    d = tmp_path / "benign"
    hf = tiny_hf("cls", vocab_size=30522, num_labels=16)
    hf.save_pretrained(d)
    (d / "model.safetensors").unlink()
    torch.save(hf.state_dict(), d / "pytorch_model.bin")
    (d / "vocab.txt").write_bytes((shared_data / "tokenizer" / "bert-base-uncased-vocab.txt").read_bytes())
    args = ["segment", "--model", str(d), "--text", "The cat sat. It slept."]
    assert main(args) == 2  # refused without the flag
    capsys.readouterr()
    assert main(["--trust-pickle", *args]) == 0, capsys.readouterr().err


def test_weights_without_the_head_are_refused_not_filled_at_random(tmp_path):
    """A classifier folder whose safetensors lack ``classifier.*`` (or hold an MLM's weights) loaded
    with a fresh random head — a different one each run — and exit 0; now one line names the tensor."""
    from safetensors.torch import load_file, save_file

    from nodeprobe.model import load_hf

    d = tmp_path / "cls"
    tiny_hf("cls", num_labels=3).save_pretrained(d)
    weights = load_file(str(d / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.startswith("classifier.")}, str(d / "model.safetensors"))
    with pytest.raises(NodeprobeError, match=r"the weights have no classifier\.bias and 1 more, which .*config\.json "
                                             r"needs \(it would start from random values\)"):
        load_hf(d, "cls")
    tiny_hf("mlm").save_pretrained(tmp_path / "mlm")  # an MLM's weights under a classifier's config
    (d / "model.safetensors").write_bytes((tmp_path / "mlm" / "model.safetensors").read_bytes())
    with pytest.raises(NodeprobeError, match=r"the weights have no classifier\.bias"):
        load_hf(d, "cls")
    assert load_hf(tmp_path / "mlm", "mlm") is not None  # the tied decoder is not stored, and not asked for
