"""nodeprobe.io: a write appears whole or not at all, and leaves no temporary file behind."""

import os

import pytest
import torch
from safetensors.torch import load_file

import nodeprobe.io as nio


def _names(d):
    return sorted(p.name for p in d.iterdir())


def test_writes_and_creates_parents(tmp_path):
    assert nio.write_text_atomic(tmp_path / "a" / "b.txt", "é\n").read_bytes() == "é\n".encode()
    t = {"w": torch.arange(6.0).view(2, 3).t()}  # not contiguous: saved all the same
    nio.save_safetensors_atomic(t, tmp_path / "t.safetensors", {"k": "v"})
    torch.testing.assert_close(load_file(tmp_path / "t.safetensors")["w"], t["w"])


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    target.write_text("old")

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(nio.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        nio.write_text_atomic(target, "new")
    assert target.read_text() == "old" and _names(tmp_path) == ["x.json"]


def test_atomic_dir_replaces_only_on_success(tmp_path):
    final = tmp_path / "run"
    with nio.atomic_dir(final) as tmp:
        (tmp / "w").write_text("1")
    assert _names(final) == ["w"]
    with pytest.raises(RuntimeError):
        with nio.atomic_dir(final) as tmp:
            (tmp / "w").write_text("2")
            raise RuntimeError("interrupted")
    assert (final / "w").read_text() == "1" and _names(tmp_path) == ["run"]
    with nio.atomic_dir(final) as tmp:
        (tmp / "v").write_text("3")
    assert _names(final) == ["v"] and _names(tmp_path) == ["run"]
    assert not any(n.startswith(".") for n in os.listdir(tmp_path))


def test_docstring_examples():
    import doctest

    failures, tried = doctest.testmod(nio)
    assert tried >= 4 and failures == 0


def test_check_disjoint_relations(tmp_path):
    from nodeprobe.errors import NodeprobeError

    m = tmp_path / "model"
    for out, how in ((m, "is"), (m / "x.json", "is inside"), (tmp_path, "contains")):
        with pytest.raises(NodeprobeError, match=f"out={out}: {how} the input model={m}"):
            nio.check_disjoint({"out": out}, {"model": m})
    nio.check_disjoint({"out": tmp_path / "model2"}, {"model": m})  # a common prefix is not containment
    nio.check_disjoint({"out": None}, {"model": m})
    nio.check_disjoint({"--plot": tmp_path}, {"model": m}, adds_files=("--plot",))
