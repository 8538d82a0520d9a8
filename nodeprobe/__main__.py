"""``python -m nodeprobe …`` (e.g. ``accelerate launch -m nodeprobe pretrain …``): the ``nodeprobe`` command."""

import sys

from nodeprobe.cli import main

if __name__ == "__main__":
    sys.exit(main())
