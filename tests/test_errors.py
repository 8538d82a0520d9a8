"""NodeprobeError: one line; in_flags says library parameter names as a front end's flags."""

import pytest

from nodeprobe.errors import NodeprobeError, in_flags

FLAGS = {"layer": "--layer", "head": "--head", "seed": "--seed", "text": "--text-file", "trust_pickle": "--trust-pickle"}


def test_message_is_one_line():
    assert NodeprobeError("a\n  b\tc\r\n").message == "a b\tc"
    assert NodeprobeError("--json my  dir/é.json: not found").message == "--json my  dir/é.json: not found"


@pytest.mark.parametrize("msg,said", [
    ("layer=9: the model has blocks 0–5", "--layer 9: the model has blocks 0–5"),
    ("give `layer` and `head` together", "give --layer and --head together"),
    ("text=runs/x.txt: not found (got layer=3)", "--text-file runs/x.txt: not found (got --layer 3)"),
    # a name=value inside a value is part of the value (Hive-style parquet folders, file names)
    ("text=data/seed=1/part: not found", "--text-file data/seed=1/part: not found"),
    ("text=a-seed=1.txt: not found", "--text-file a-seed=1.txt: not found"),
    # Python keywords in advice stay Python; unknown names stay as written
    ("load_model(..., trust_pickle=True)", "load_model(..., trust_pickle=True)"),
    ("depth=3: too deep; see `depth`", "depth=3: too deep; see `depth`"),
])
def test_in_flags(msg, said):
    assert in_flags(msg, FLAGS) == said
    assert NodeprobeError(msg).in_flags(FLAGS) == said


def test_reason_names_the_innermost_cause_in_one_short_line(tmp_path):
    from nodeprobe.errors import reason

    try:
        try:
            open(tmp_path / "missing.json")
        except OSError as inner:
            raise RuntimeError("could not load\nthe checkpoint") from inner
    except RuntimeError as e:
        assert reason(e) == "FileNotFoundError: No such file or directory"
    assert reason(ValueError("x" * 500), limit=40) == "ValueError: " + "x" * 27 + "…"
    assert reason(KeyError()) == "KeyError"


def test_a_truncated_checkpoint_is_reported_with_its_reason(tmp_path):
    """Issue 15 class 6: `unreadable (SafetensorError: …)`, not the exception type alone."""
    from _families import save_family
    from nodeprobe.errors import NodeprobeError
    from nodeprobe.train.finetune import _check_weights

    d = save_family(tmp_path, "distilbert", "mlm")
    st = d / "model.safetensors"
    st.write_bytes(st.read_bytes()[:-100])
    with pytest.raises(NodeprobeError) as e:
        _check_weights(d, str(d))
    msg = str(e.value)
    assert msg.startswith(f"model={d}: unreadable model.safetensors (") and ":" in msg.split("(", 1)[1], msg
