"""Interruption of real ``nodeprobe pretrain`` subprocesses (slow): kill -9 and SIGINT mid-run, then
``--resume`` ends with the same weights as an uninterrupted run; partial output is never complete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _small_data import small_data_copy

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TINY = ["--n-layers", "1", "--d-model", "32", "--n-heads", "2", "--d-ff", "32", "--epochs", "1", "--batch-size", "8"]


@pytest.fixture(scope="module")
def data(tmp_path_factory, shared_data):
    return small_data_copy(tmp_path_factory.mktemp("pt_data"), shared_data, dbpedia_rows=20, wiki_test_bytes=200_000)


def _cmd(out, data, *extra):
    return [sys.executable, "-m", "nodeprobe.cli", "pretrain", "--preset", "smoke", "--out", str(out), "--data",
            str(data), *TINY, "--checkpoint-every-seconds", "0", *extra]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(REPO)}


def _run(cmd, timeout=120):
    return subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)


def _start_and_wait_checkpoint(cmd, out, timeout=90):
    p = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (out / "checkpoint" / "state.json").is_file():
        if p.poll() is not None:
            pytest.fail(f"run ended before its first checkpoint: {p.stderr.read()[-2000:]}")
        if time.time() - t0 > timeout:
            p.kill()
            pytest.fail("no checkpoint in time")
        time.sleep(0.05)
    return p


def _weights(out):
    from safetensors.torch import load_file

    return load_file(str(out / "final" / "model.safetensors"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("ref") / "run"
    r = _run(_cmd(out, data))
    assert r.returncode == 0, r.stderr[-2000:]
    return _weights(out)


def _assert_same(a, b):
    import torch

    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_kill_9_then_resume_equals_uninterrupted(tmp_path, data, reference):
    out = tmp_path / "run"
    p = _start_and_wait_checkpoint(_cmd(out, data), out)
    p.send_signal(signal.SIGKILL)
    p.wait(30)
    # nothing partial taken as complete
    assert not (out / "pretrain.json").exists() or (out / "final" / "model.safetensors").is_file()
    if not (out / "pretrain.json").exists():
        assert not (out / "final").exists()
    r = _run(_cmd(out, data, "--resume"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "pretrain.json").is_file()
    _assert_same(_weights(out), reference)


def test_sigint_exit_130_one_line_then_resume(tmp_path, data, reference):
    out = tmp_path / "run"
    p = _start_and_wait_checkpoint(_cmd(out, data), out)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode != 0, f"the run ignored SIGINT: {err[-1500:]}"
    assert p.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    last = [l for l in err.strip().splitlines() if l.strip()][-1]
    assert last.startswith("nodeprobe: interrupted") and "--resume" in last, err[-2000:]
    assert not (out / "pretrain.json").exists()
    r = _run(_cmd(out, data, "--resume"))
    assert r.returncode == 0, r.stderr[-2000:]
    _assert_same(_weights(out), reference)
