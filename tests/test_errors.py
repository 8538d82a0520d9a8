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
