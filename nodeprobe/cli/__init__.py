"""The ``nodeprobe`` command line: a thin Typer layer over library calls (the library never imports it).

Modules: :mod:`~nodeprobe.cli.app` (the app, :func:`main`, registration), :mod:`~nodeprobe.cli.options`
(shared options and checks), :mod:`~nodeprobe.cli.train`, :mod:`~nodeprobe.cli.ablate`,
:mod:`~nodeprobe.cli.reports`, :mod:`~nodeprobe.cli.heads`, :mod:`~nodeprobe.cli.reproduce`.

Example:
    >>> from nodeprobe.cli import main
    >>> main(["--help"])                                      # doctest: +SKIP
    0
"""

from nodeprobe.cli.app import app, main

__all__ = ["app", "main"]
