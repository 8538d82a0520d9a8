"""``python -m nodeprobe …`` (e.g. ``accelerate launch -m nodeprobe pretrain …``): the ``nodeprobe`` command.

Starts as fast as the command itself: ``nodeprobe/__init__`` imports the library lazily."""

import sys

from nodeprobe.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
