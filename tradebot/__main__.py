"""``python -m tradebot``: the admin command, as the ``tradebot`` script."""

import sys

from tradebot.cli import main

if __name__ == "__main__":
    sys.exit(main())
