"""Thin entry point of ``trackformers.reproduce.recipe_sweep``."""

import sys

from trackformers.reproduce.recipe_sweep import main

if __name__ == "__main__":
    sys.exit(main())
