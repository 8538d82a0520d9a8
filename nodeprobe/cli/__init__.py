"""The ``nodeprobe`` command line: a thin Typer layer over library calls (the library never imports it)."""

from nodeprobe.cli.app import app, main

__all__ = ["app", "main"]
