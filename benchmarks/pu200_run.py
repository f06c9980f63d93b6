"""Thin entry point of ``trackformers.reproduce.pu200_run``."""

import sys

from trackformers.reproduce.pu200_run import main

if __name__ == "__main__":
    sys.exit(main())
