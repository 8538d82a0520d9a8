"""The run skeleton both commands share (nodeprobe/train/loop.py): run folder, step loop, finish.

A toy linear classifier stands in for BERT: stopping after some steps (``max_steps``), then
going on from that in-memory state, must take exactly the steps of one
uninterrupted run, and ``after_step`` must see every step once with the right epoch flags.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from nodeprobe.errors import NodeprobeError
from nodeprobe.train import dist, loop

N, BATCH, EPOCHS = 10, 4, 2  # 3 batches an epoch, 6 steps


def _training(out: Path) -> loop.Training:
    torch.manual_seed(0)
    hf = nn.Linear(3, 2)
    opt = loop.make_optimizer(hf, 1e-2, 0.0)
    sched = loop.linear_schedule(opt, 3 * EPOCHS, 0.1)
    return loop.Training(out, "fp", hf, hf, hf, opt, sched, loop.Progress(), [1] * N, BATCH, 7, 3, 3 * EPOCHS)


def _batch(t: loop.Training):
    x = torch.randn(N, 3, generator=torch.Generator().manual_seed(1))
    y = torch.arange(N) % 2

    def batch(idx, step):
        def forward(rows):
            assert rows is None
            return t.train_model(x[idx]), y[idx]

        return len(idx), len(idx), len(idx), forward

    return batch


def _run(t: loop.Training, max_steps=None) -> list[loop.Step]:
    seen = []
    loop.run_steps(dist.Plain(torch.device("cpu")), t, "toy", False, max_steps, _batch(t), seen.append)
    return seen


def test_run_steps_resumes_where_it_stopped(tmp_path):
    whole = _training(tmp_path / "a")
    steps = _run(whole)
    assert [s.end_of_epoch for s in steps] == [False, False, True] * EPOCHS
    assert [s.epoch for s in steps] == [0, 0, 0, 1, 1, 1]
    assert (whole.prog.step, whole.prog.epoch, whole.prog.tokens) == (6, 2, N * EPOCHS)

    part = _training(tmp_path / "b")
    first = _run(part, max_steps=4)
    assert part.prog.step == 4 and [s.epoch for s in first] == [0, 0, 0, 1]
    rest = _run(part)
    assert [s.loss for s in first + rest] == [s.loss for s in steps]
    assert torch.equal(part.hf.weight, whole.hf.weight) and torch.equal(part.hf.bias, whole.hf.bias)


def test_run_steps_check_sees_the_loss_before_the_update(tmp_path):
    t = _training(tmp_path)
    before = t.hf.weight.detach().clone()

    def check(step, loss):
        raise NodeprobeError(f"step {step}")

    with pytest.raises(NodeprobeError, match="step 0"):
        loop.run_steps(dist.Plain(torch.device("cpu")), t, "toy", False, None, _batch(t), lambda s: None, check)
    assert torch.equal(t.hf.weight, before) and t.prog.step == 0


def test_open_run_dir_writes_run_json_or_returns_the_finished_summary(tmp_path):
    runner, out = dist.Plain(torch.device("cpu")), tmp_path / "run"
    assert loop.open_run_dir(runner, out, "fp", False, False, {"fingerprint": "fp"}, "x.json") is None
    assert json.loads((out / "run.json").read_text()) == {"fingerprint": "fp"}
    with pytest.raises(NodeprobeError, match="out=.*`resume`"):
        loop.open_run_dir(runner, out, "fp", False, False, {"fingerprint": "fp"}, "x.json")
    (out / "x.json").write_text('{"done": 1}')
    assert loop.open_run_dir(runner, out, "fp", True, False, {"fingerprint": "fp"}, "x.json") == {"done": 1}


def _saved_checkpoint(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from _tiny_models import tiny_hf

    hf = tiny_hf("mlm")
    opt = loop.make_optimizer(hf, 1e-3, 0.01)
    sched = loop.linear_schedule(opt, 10, 0.1)
    loop.save_checkpoint(tmp_path, hf, opt, sched, loop.Progress(step=3, epoch=1, tokens=40, seconds=1.5), "fp")
    return hf, opt, sched, tmp_path / loop.CKPT


def _edit_state(ck, **kw):
    state = json.loads((ck / "state.json").read_text())
    state.update(kw)
    (ck / "state.json").write_text(json.dumps(state))


@pytest.mark.parametrize("damage,said", [
    (lambda ck: (ck / "trainer_state.pt").unlink(), "trainer_state.pt is missing"),
    (lambda ck: (ck / "model.safetensors").unlink(), "model.safetensors is missing"),
    (lambda ck: (ck / "model.safetensors").write_bytes((ck / "model.safetensors").read_bytes()[:100]),
     "model.safetensors is unreadable"),
    (lambda ck: (ck / "state.json").write_text("[1, 2]"), "state.json is not a checkpoint record"),
    (lambda ck: (ck / "state.json").write_text("{"), "state.json is unreadable"),
    (lambda ck: _edit_state(ck, step="three"), "state.json has step='three'; expected an integer ≥ 0"),
    (lambda ck: _edit_state(ck, seconds=-1), "state.json has seconds=-1; expected a number ≥ 0"),
    (lambda ck: _edit_state(ck, run="other"), "made with other settings (run other ≠ fp)"),
    (lambda ck: torch.save({"optimizer": 1}, ck / "trainer_state.pt"), "holds no optimizer and scheduler state"),
    (lambda ck: (ck / "trainer_state.pt").write_bytes(__import__("pickle").dumps({"a": 1}, protocol=4)),
     "trainer_state.pt is unreadable (UnpicklingError"),  # a bare pickle: torch warns about its protocol (silenced)
    (lambda ck: torch.save({"optimizer": {"state": {}, "param_groups": []}, "scheduler": {}}, ck / "trainer_state.pt"),
     "trainer_state.pt does not fit the optimizer"),
], ids=["no-trainer-state", "no-weights", "truncated-weights", "state-not-a-dict", "state-not-json", "step-a-string",
        "seconds-negative", "other-run", "trainer-state-not-a-state", "bare-pickle", "optimizer-state-of-another-model"])
def test_a_damaged_checkpoint_is_one_line_naming_the_file(tmp_path, damage, said):
    """Every file a resume reads is checked (``read_checkpoint``, also before the run folder's lock is
    taken): one line naming the checkpoint and what is wrong, never a traceback from deep inside."""
    hf, opt, sched, ck = _saved_checkpoint(tmp_path)
    assert loop.load_checkpoint(tmp_path, hf, opt, sched, "fp") == loop.Progress(step=3, epoch=1, tokens=40, seconds=1.5)
    damage(ck)
    with pytest.raises(NodeprobeError) as e, warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        loop.load_checkpoint(tmp_path, hf, opt, sched, "fp")
    assert not seen, [str(w.message) for w in seen]  # the one line is all the user sees
    assert str(e.value).startswith(f"checkpoint {ck}: ") and said in str(e.value) and "\n" not in str(e.value)
    if "fit the optimizer" not in said:  # the rest is found before a model or optimizer exists
        (tmp_path / "run.json").write_text(json.dumps({"fingerprint": "fp"}))
        with pytest.raises(NodeprobeError) as e:
            loop.check_out_dir(tmp_path, "fp", resume=True, overwrite=False)
        assert str(e.value).startswith(f"checkpoint {ck}: ") and said in str(e.value)


def test_overwrite_never_deletes_a_users_file_inside_a_runs_folders(tmp_path):
    """``overwrite`` clears a run folder only when everything in it, down into snapshots/step-N/,
    checkpoint/, final/ and track-*/steps/, is what a run writes; otherwise it names the rest."""
    out = tmp_path / "run"
    for rel in ("run.json", "log.jsonl", "checkpoint/trainer_state.pt", "checkpoint/state.json",
                "snapshots/step-0000001/model.safetensors", "snapshots/step-0000001/vocab.txt",
                "snapshots/.step-0000002.tmp1/config.json", "final/config.json", "final/sentencepiece.bpe.model",
                "final/specialization.png", "track-mlm/steps/step-0000001.json", "track-mlm/track.json"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text("{}" if rel == "run.json" else "x")
    (out / "run.json").write_text(json.dumps({"fingerprint": "fp"}))
    assert loop.check_out_dir(out, "fp", resume=False, overwrite=True) is True
    for rel in ("snapshots/step-0000001/notes.txt", "snapshots/mine.txt", "track-mlm/steps/summary.md",
                "track-mlm/plots/a.png", "final/sub/x"):  # folders of one's own, and other kinds of file
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text("mine")
    with pytest.raises(NodeprobeError) as e:
        loop.check_out_dir(out, "fp", resume=False, overwrite=True)
    assert ("holds final/sub/, snapshots/mine.txt, snapshots/step-0000001/notes.txt, track-mlm/plots/, "
            "track-mlm/steps/summary.md;") in str(e.value)
