"""Running a CLI command in a test: exit 0 and its ``--json`` report."""

from __future__ import annotations

import json

from nodeprobe.cli import main


def run_json(argv, capsys, json_path) -> dict:
    """``main(argv + ["--json", json_path])`` must exit 0 (stderr shown otherwise); the report."""
    capsys.readouterr()
    rc = main(argv + ["--json", str(json_path)])
    err = capsys.readouterr().err
    assert rc == 0, err
    return json.loads(json_path.read_text())
