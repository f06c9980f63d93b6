"""One table from several physics runs (the results rows and the ablation).

    python benchmarks/physics_table.py docs/results/<runs>/* [--out table.md]

The table is made by ``trackformers.reproduce.physics_table``.
"""

from trackformers.reproduce.physics_table import main

if __name__ == "__main__":
    main()
