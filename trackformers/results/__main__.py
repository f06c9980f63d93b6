"""``python -m trackformers.results <eval dirs> [--markdown] ...``: the results table
(``trackformers.results.table``)."""

from trackformers.results.table import main

if __name__ == "__main__":
    main()
