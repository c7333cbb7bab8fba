"""``python -m ftcore``: the command-line interface (see :mod:`ftcore.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
