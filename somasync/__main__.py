"""``python -m somasync <command>``: see :mod:`somasync.cli`."""

import sys

from somasync.cli import main

if __name__ == "__main__":
    sys.exit(main())
