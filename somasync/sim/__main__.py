"""``python -m somasync.sim``: see :mod:`somasync.sim.cli`."""

import sys

from somasync.sim.cli import main

if __name__ == "__main__":
    sys.exit(main())
