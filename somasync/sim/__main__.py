"""``python -m somasync.sim``: see :mod:`somasync.cli.sim`."""

import sys

from somasync.cli.sim import main

if __name__ == "__main__":
    sys.exit(main())
