"""The bad-input harness shared by tests/cli/test_cli_bad_input*.py: a command is refused cleanly."""

from __future__ import annotations

import os

from nodeprobe.cli import main


def listing(root) -> list[tuple[str, int, int]]:
    """Every path under ``root`` with its size (−1 for a folder) and modification time (ns), and
    ``root``'s own time, sorted: "nothing written" is equality — a file rewritten with the same size,
    or a lock file created and removed again in a folder, changes a time."""
    out = [(".", -1, os.stat(root).st_mtime_ns)]
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out.append((os.path.relpath(p, root), st.st_size if name in files else -1, st.st_mtime_ns))
    return sorted(out)


def assert_refused(argv, msg: str, subs: dict, tmp_path, capsys, run=None) -> str:
    """``main(argv)``: exit 2, stderr one line ``nodeprobe: error: …`` holding ``msg.format(**subs)``,
    no traceback, nothing written under ``tmp_path``; returns the line.  ``run(argv)`` replaces
    ``main`` (e.g. to restore a folder's mode afterwards)."""
    before = listing(tmp_path)
    capsys.readouterr()
    rc = (run or main)(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2, (rc, err)
    assert "Traceback" not in err and "Traceback" not in out
    assert len(lines) == 1 and lines[0].startswith("nodeprobe: error: "), err
    assert msg.format(**subs) in lines[0], err
    assert listing(tmp_path) == before
    return lines[0]


def row_argv(args, setup, paths: dict, tmp_path, monkeypatch, dedupe: bool = True) -> tuple[list[str], dict]:
    """A table row's command line: run from ``tmp_path`` offline, its ``setup`` done, ``{name}`` in
    ``args`` filled from ``paths`` (fixture paths) and ``{tmp}``, and (``dedupe``) :func:`last_wins`
    applied; returns ``(argv, subs)``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if setup is not None:
        setup(tmp_path)
    subs = {k: str(v) for k, v in paths.items()}
    subs["tmp"] = str(tmp_path)
    argv = [a.format(**subs) for a in args]
    return (last_wins(argv) if dedupe else argv), subs


def last_wins(argv: list[str]) -> list[str]:
    """A row written as ``BASE + ["--opt", bad]`` overrides BASE's ``--opt`` (nodeprobe refuses an
    option given twice): earlier ``--opt value`` pairs of a repeated option are dropped."""
    pairs = [i for i in range(len(argv) - 1) if argv[i].startswith("--") and not argv[i + 1].startswith("--")]
    last = {argv[i]: i for i in pairs}
    drop = {j for i in pairs if last[argv[i]] != i for j in (i, i + 1)}
    return [a for j, a in enumerate(argv) if j not in drop]
