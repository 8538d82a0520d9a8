"""nodeprobe.locks: one writer per output folder; a dead process's lock is taken over.

The unit tests drive :func:`nodeprobe.locks.hold` directly; the real-process tests run
``python -m nodeprobe.cli cache`` in subprocesses: killed with SIGKILL mid-build then rerun (same
JSON and bytes as an uninterrupted run, the dead process's lock taken over), and two identical
commands on one ``--out`` (one refuses with the "in use" line, the other builds a cache that loads).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nodeprobe import locks
from nodeprobe.errors import NodeprobeError
from nodeprobe.locks import LOCK_NAME, hold


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _plant(folder: Path, pid: int, host: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    lock.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "since": "2026-01-01 00:00:00"}))
    return lock


def test_hold_creates_and_removes_the_lock_also_on_an_exception(tmp_path):
    d = tmp_path / "out"
    with hold(d, "out") as lock:
        info = json.loads((d / LOCK_NAME).read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["since"]
        assert lock.lockfile == d / LOCK_NAME
        (d / "result").write_text("x")
    assert sorted(p.name for p in d.iterdir()) == ["result"]
    with pytest.raises(RuntimeError):
        with hold(d, "out"):
            raise RuntimeError("boom")
    assert not (d / LOCK_NAME).exists()


def test_a_folder_made_for_the_lock_is_removed_when_nothing_was_written(tmp_path):
    with hold(tmp_path / "a" / "b", "out"):
        pass
    assert not (tmp_path / "a" / "b").exists()


def test_reentrant_within_a_process(tmp_path):
    with hold(tmp_path, "cache"):
        with hold(tmp_path, "cache"):
            pass
        assert (tmp_path / LOCK_NAME).is_file()  # still held by the outer block
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_live_lock_is_refused_in_one_line(tmp_path):
    lock = _plant(tmp_path / "run", os.getppid())
    with pytest.raises(NodeprobeError) as e:
        with hold(tmp_path / "run", "out"):
            pass
    msg = str(e.value)
    assert msg == (f"out={tmp_path / 'run'}: in use by another nodeprobe process (pid {os.getppid()}, since "
                   f"2026-01-01 00:00:00); wait for it or remove {lock} if it is gone")
    assert lock.is_file()  # not ours to remove


def test_a_lock_of_another_host_is_refused(tmp_path):
    _plant(tmp_path, _dead_pid(), host="elsewhere.example")
    with pytest.raises(NodeprobeError, match=r"in use by another nodeprobe process \(pid \d+ on elsewhere\.example"):
        with hold(tmp_path, "cache"):
            pass


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    lock = _plant(tmp_path, _dead_pid())
    with hold(tmp_path, "cache"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_an_unreadable_lock_counts_as_live_only_while_young(tmp_path):
    lock = tmp_path / LOCK_NAME
    lock.write_text("")
    with pytest.raises(NodeprobeError, match="in use"):
        with hold(tmp_path, "cache"):
            pass
    old = time.time() - 3600
    os.utime(lock, (old, old))
    with hold(tmp_path, "cache"):
        pass
    assert not lock.exists()


def test_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NodeprobeError, match="out=.*: is a file; give a folder"):
        locks.acquire(tmp_path / "f", "out")


def test_a_training_run_holds_its_folder_until_the_runner_closes(tmp_path):
    from nodeprobe.train import dist, loop

    runner, out = dist.Plain(torch.device("cpu")), tmp_path / "run"
    assert loop.open_run_dir(runner, out, "fp", False, False, {"fingerprint": "fp"}, "x.json") is None
    info = json.loads((out / LOCK_NAME).read_text())
    assert info["pid"] == os.getpid()
    runner.close()
    assert not (out / LOCK_NAME).exists()
    # another live process holds the folder: refused, nothing written or removed
    _plant(out, os.getppid())
    for resume in (True, False):  # not "pass resume": the run is in progress
        with pytest.raises(NodeprobeError, match=r"out=.*: being written by another nodeprobe process \(pid \d+"):
            loop.open_run_dir(dist.Plain(torch.device("cpu")), out, "fp", resume, False, {"fingerprint": "fp"}, "x.json")
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME, "run.json"]
    # its owner died: the next run takes over (and `overwrite` keeps the lock it holds)
    _plant(out, _dead_pid())
    runner = dist.Plain(torch.device("cpu"))
    assert loop.open_run_dir(runner, out, "fp", False, True, {"fingerprint": "fp"}, "x.json") is None
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    runner.close()
    assert sorted(p.name for p in out.iterdir()) == ["run.json"]


# ---------------------------------------------------------------------- real processes
N_ITEMS = 100  # one sentence a batch, one batch a shard: 100 shards, a build long enough to interrupt


@pytest.fixture(scope="module")
def tiny_cls(tmp_path_factory, shared_data):
    import shutil

    sys.path.insert(0, str(Path(__file__).parent))
    from _tiny_models import tiny_hf

    root = tmp_path_factory.mktemp("locks_model")
    hf = tiny_hf("cls", seed=0, vocab_size=30522, num_labels=16)
    hf.save_pretrained(root / "cls")
    shutil.copy(shared_data / "tokenizer" / "bert-base-uncased-vocab.txt", root / "cls" / "vocab.txt")
    return root / "cls"


def _cache_cmd(model: Path, shared: Path, out: str = "c", json_path: str = "c.json") -> list[str]:
    return [sys.executable, "-m", "nodeprobe.cli", "cache", "--model", str(model), "--data", str(shared),
            "--limit", str(N_ITEMS), "--batch-size", "1", "--shard-batches", "1", "--sites", "readout,z",
            "--device", "cpu", "--out", out, "--json", json_path]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", NO_COLOR="1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    return env


def _run(cmd, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)


def _wait_for(pred, proc, what: str, limit: float = 120.0) -> None:
    t0 = time.time()
    while not pred():
        if proc.poll() is not None:
            raise AssertionError(f"the command ended (rc {proc.returncode}) before {what}: "
                                 f"{proc.stderr.read() if proc.stderr else ''}")
        if time.time() - t0 > limit:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def _report(path: Path) -> dict:
    return json.loads(path.read_text())


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


@pytest.mark.slow
def test_kill_9_mid_build_then_rerun_equals_an_uninterrupted_run(tiny_cls, shared_data, tmp_path):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    ref.mkdir(), cut.mkdir()
    r = _run(_cache_cmd(tiny_cls, shared_data), ref)
    assert r.returncode == 0, r.stderr

    p = subprocess.Popen(_cache_cmd(tiny_cls, shared_data), cwd=cut, env=_env(), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (cut / "c" / "shard-00001.safetensors").exists(), p, "the first shards")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL
    assert not (cut / "c" / "manifest.json").exists() and not (cut / "c.json").exists()
    assert json.loads((cut / "c" / LOCK_NAME).read_text())["pid"] == p.pid  # left behind by the dead process

    r2 = _run(_cache_cmd(tiny_cls, shared_data), cut)  # takes the dead process's lock over, rebuilds
    assert r2.returncode == 0, r2.stderr
    assert _report(cut / "c.json") == _report(ref / "c.json")
    assert _files(cut / "c") == _files(ref / "c")  # byte for byte; no lock, no temporary file left
    assert not (cut / "c" / LOCK_NAME).exists()


@pytest.mark.slow
def test_two_identical_commands_on_one_out_one_refuses(tiny_cls, shared_data, tmp_path):
    from nodeprobe.cache import load_cache

    first = subprocess.Popen(_cache_cmd(tiny_cls, shared_data, json_path="a.json"), cwd=tmp_path, env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (tmp_path / "c" / "shard-00000.safetensors").exists(), first, "the first build's shards")
        os.kill(first.pid, signal.SIGSTOP)  # the first one is mid-build (and stays so while the second runs)
        second = _run(_cache_cmd(tiny_cls, shared_data, json_path="b.json"), tmp_path)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nodeprobe: error: ")
    assert f"in use by another nodeprobe process (pid {first.pid}, since " in lines[0]
    assert f"remove {Path('c') / LOCK_NAME} if it is gone" in lines[0]
    assert not (tmp_path / "b.json").exists()
    reader = load_cache(tmp_path / "c")
    assert reader.n_items == N_ITEMS and reader.z(0).shape[0] == N_ITEMS
    assert not (tmp_path / "c" / LOCK_NAME).exists()
