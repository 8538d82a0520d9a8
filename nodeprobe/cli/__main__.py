"""``python -m nodeprobe.cli …``: the ``nodeprobe`` command (the tests run it as a subprocess)."""

import sys

from nodeprobe.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
