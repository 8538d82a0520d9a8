"""The ``nodeprobe`` command line: the Typer app, its commands (one module per group, registered
here by plain imports) and :func:`main`, which turns user errors into one line and exit code 2.

Errors a user can cause print one line (``nodeprobe: error: …``) on stderr and exit with code 2;
nothing is written in that case (outputs are written atomically at the end).  Importing this module
is cheap (Typer, no torch): each command imports the library it needs when it runs.

Example:
    >>> from nodeprobe.cli import main
    >>> main(["ablate", "--layer", "x"])                     # doctest: +SKIP
    nodeprobe: error: Invalid value for '--layer': 'x' is not a valid integer.
    2
"""

from __future__ import annotations

import re
import sys

import typer

from nodeprobe.cli.ablate import ablate
from nodeprobe.cli.heads import segment, similarity, track
from nodeprobe.cli.options import quiet_hf
from nodeprobe.cli.reports import apt, blocks, cache, cooperation, hull, specialization
from nodeprobe.cli.reproduce import reproduce
from nodeprobe.cli.train import finetune, pretrain
from nodeprobe.errors import NodeprobeError

HELP = "Hooked BERT analyses: token/label specialization of heads and nodes, cooperation, hull bounds."
QUICK_START = """\
nodeprobe — hooked BERT analyses. Quick start:

  1. nodeprobe reproduce --preset smoke     the main job: pre-train → fine-tune → every analysis (≈ 1.5 min on 2 CPU cores)
  2. nodeprobe ablate --layer 5 --head 3    then your own question: one head of the fine-tuned model (newest run)
  3. reports/smoke/README.md                where the report went (JSON and PNG beside it; weights in runs/smoke/)

Every command: nodeprobe --help · one command: nodeprobe COMMAND --help"""

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, help=HELP)


@app.callback(invoke_without_command=True)
def _root(ctx: typer.Context, trust_pickle: bool = typer.Option(
        False, "--trust-pickle", help="Allow loading pickled pytorch_model.bin weights (runs code from the file).")):
    """Hooked BERT analyses: token/label specialization of heads and nodes, cooperation, hull bounds."""
    ctx.obj = {"trust_pickle": trust_pickle}
    if ctx.invoked_subcommand is None:  # bare `nodeprobe`: a quick start instead of a usage error
        typer.echo(QUICK_START)


for _command in (pretrain, finetune, ablate, reproduce, cache, specialization, apt, cooperation, hull, blocks,
                 similarity, segment, track):  # the order of `nodeprobe --help`
    app.command()(_command)


def _click_errors():
    """``(UsageError, Abort, Exit)`` classes of click and of the click that newer Typer vendors."""
    import click

    usage, abort, exit_ = [click.exceptions.UsageError], [click.exceptions.Abort], [click.exceptions.Exit]
    try:  # Typer ≥ 0.22 ships its own click copy (typer._click) with its own exception classes
        from typer import exceptions as te
        from typer._click import exceptions as tce

        usage.append(tce.UsageError)
        abort.append(te.Abort)
        exit_.append(te.Exit)
    except ImportError:  # pragma: no cover - older Typer uses click itself
        pass
    return tuple(usage), tuple(abort), tuple(exit_)


def _flags_of(cmd, args: list[str]) -> dict[str, str]:
    """Library parameter name → this command line's flag (``layer`` → ``--layer``, ``json_path`` →
    ``--json``), from the root command's and the invoked subcommand's options."""
    cmds = [cmd]
    sub = getattr(cmd, "commands", {})
    name = next((a for a in args if a in sub), None)
    if name is not None:
        cmds.append(sub[name])
    out: dict[str, str] = {}
    for c in cmds:
        for p in c.params:
            longs = [o for o in getattr(p, "opts", []) if o.startswith("--")]
            if not longs or not p.name:
                continue
            out.setdefault(p.name, longs[0])
            for o in longs:
                out.setdefault(o[2:].replace("-", "_"), o)
    out.setdefault("data_dir", out.get("data", "--data"))
    if "test_dataset" in out:  # nodeprobe.data.user names the second table test_path
        out.setdefault("test_path", out["test_dataset"])
    return out


class _LazyRichReporter:
    """The Rich progress reporter, imported at its first bar (``--help`` and bad options never pay
    for Rich's progress machinery); a :class:`nodeprobe.progress.Reporter`."""

    _real = None

    def _get(self):
        if self._real is None:
            from nodeprobe.render.progress import RichReporter

            self._real = RichReporter()
        return self._real

    def iterate(self, items, total, description):
        return self._get().iterate(items, total, description)

    def training_bar(self, total, description):
        return self._get().training_bar(total, description)


def _install_progress():
    """THE place the CLI installs its progress reporter (core modules never import Rich): Rich bars
    on stderr for every long loop.  Returns the reporter it replaced (``main`` restores it)."""
    import nodeprobe.progress

    return nodeprobe.progress.install(_LazyRichReporter())


def _one_line(text: str) -> str:
    """Line breaks (and the blanks around them) → one space; every other character exactly as
    given (two spaces in a path stay two spaces)."""
    return re.sub(r"[ \t]*[\r\n]+[ \t]*", " ", str(text)).strip()


def _given_value(param, args: list[str]) -> str | None:
    """The value this command line gave ``param`` (``--epochs 1e3`` or ``--epochs=1e3``; the last
    one counts, as in click), or ``None``."""
    opts = [o for o in (getattr(param, "opts", None) or []) + (getattr(param, "secondary_opts", None) or [])]
    found = None
    for i, a in enumerate(args):
        for o in opts:
            if a == o and i + 1 < len(args):
                found = args[i + 1]
            elif a.startswith(o + "="):
                found = a[len(o) + 1:]
    return found


#: the options that name a file or folder (checked by :func:`_path_problem` before anything runs)
PATH_FLAGS = frozenset({"--model", "--data", "--dataset", "--test-dataset", "--text-file", "--cache", "--json",
                        "--plot", "--out", "--runs", "--reports", "--run", "--sae"})


def _path_problem(opt: str, value: str) -> str | None:
    """A path the system cannot even look up — a symlink loop, a name or path too long — or ``-``
    (which many tools read as standard output: here it would be a file named ``-``), as one line (a
    path that does not exist is the command's to judge: an output may be new)."""
    import errno
    import os

    if value == "-":
        return f"{opt} -: standard input/output is not supported; give a file or folder path (./- for a file named -)"
    try:
        os.stat(os.path.expanduser(value))
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"{opt} {value}: a symbolic link loop; give a path that resolves"
        if e.errno == errno.ENAMETOOLONG:
            return (f"{opt} {value}: a file name or the path is too long for this system "
                    f"(at most {os.pathconf('/', 'PC_NAME_MAX')} bytes a name)")
    except ValueError:  # an embedded NUL byte
        return f"{opt} {value!r}: not a valid path (a NUL byte)"
    return None


def _command_line_problem(cmd, args: list[str]) -> str | None:
    """What is wrong with the option values as typed, as one line, or ``None``: a value option given
    twice (``--dataset a.csv --dataset b.csv``: click lets the last one win silently; a user who
    typed two values meant something the command cannot do), an empty value (``--json ""``:
    the empty path is the current folder, so it would be read or written as ``.``), or a path that
    cannot be looked up (:func:`_path_problem`)."""
    sub = getattr(cmd, "commands", {})
    name = next((a for a in args if a in sub), None)
    if name is None or "--help" in args:
        return None
    c = sub[name]
    takes: dict[str, object] = {}  # option string → its parameter, for options that take a value
    for p in c.params:
        for o in (getattr(p, "opts", None) or []) + (getattr(p, "secondary_opts", None) or []):
            if o.startswith("-"):
                takes[o] = p
    seen: dict[str, list[tuple[str, str]]] = {}
    rest = args[args.index(name) + 1:]
    i = 0
    while i < len(rest):
        a = rest[i]
        if a == "--":
            break
        opt, value, step = a, None, 1
        if a.startswith("--") and "=" in a:
            opt, value = a.split("=", 1)
        p = takes.get(opt)
        if p is None or getattr(p, "is_flag", False) or getattr(p, "count", False):
            i += 1
            continue
        if value is None:
            if i + 1 >= len(rest):
                break  # click names the missing value itself
            value, step = rest[i + 1], 2
        if not value.strip():
            return f"{opt} {value!r}: an empty value; give one (or leave {opt} out)"
        if opt in PATH_FLAGS and (why := _path_problem(opt, value)) is not None:
            return why
        if not getattr(p, "multiple", False) and (getattr(p, "nargs", 1) == 1):
            seen.setdefault(p.name, []).append((opt, value))
        i += step
    for uses in seen.values():
        if len({v for _, v in uses}) > 1:  # the same value twice (--task fewrel --task=fewrel) is no contradiction
            spelled = "/".join(dict.fromkeys(o for o, _ in uses))  # --out/--cache: two names of one option
            given = ", ".join(f"'{v}'" for _, v in uses)
            return f"{spelled} was given {len(uses)} times ({given}): give it once"
    return None


def _usage_line(e, args: list[str]) -> str:
    """A click usage error as one line; a bad value (``--epochs 1e3``) is named with its option."""
    msg = _one_line(e.format_message())
    param = getattr(e, "param", None)
    value = _given_value(param, args) if param is not None else None
    if value is not None and f"'{value}'" not in msg:
        msg = msg.replace(":", f": '{value}':", 1) if msg.startswith("Invalid value for") else f"{msg} (got '{value}')"
    return msg


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning user errors into one line and exit code 2.

    Example:
        >>> main(["--help"])                                  # doctest: +SKIP
        0
    """
    import nodeprobe.progress

    usage_error, abort, exit_ = _click_errors()
    quiet_hf()
    args = sys.argv[1:] if argv is None else argv
    cmd = typer.main.get_command(app)
    problem = _command_line_problem(cmd, args)
    if problem is not None:
        print(f"nodeprobe: error: {problem}", file=sys.stderr)
        return 2
    previous = _install_progress()
    try:
        rv = cmd.main(args=args, prog_name="nodeprobe", standalone_mode=False)
        if rv == 130 and type(rv) is int:  # Typer turns Ctrl-C into Exit(130) and returns that code
            raise KeyboardInterrupt
    except NodeprobeError as e:
        print(f"nodeprobe: error: {e.in_flags(_flags_of(cmd, args))}", file=sys.stderr)
        return 2
    except usage_error as e:
        print(f"nodeprobe: error: {_usage_line(e, args)}", file=sys.stderr)
        return 2
    except abort:
        print("nodeprobe: interrupted; resume with the same command and --resume", file=sys.stderr)
        return 130
    except exit_ as e:
        return getattr(e, "exit_code", 0)
    except KeyboardInterrupt:
        print("nodeprobe: interrupted; resume with the same command and --resume", file=sys.stderr)
        return 130
    finally:
        nodeprobe.progress.install(previous)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
