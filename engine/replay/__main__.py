"""`python -m engine.replay <log> <command> ...`"""

from __future__ import annotations

import sys

from engine.cli.forensics import main

if __name__ == "__main__":
    sys.exit(main())
