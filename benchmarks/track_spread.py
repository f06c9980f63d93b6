"""How far one track's hits spread in the per-hit input angles, barrel vs endcap (CPU, no model).

    python benchmarks/track_spread.py data/ttbar_pu200_eval --events 2

The measurement is ``trackformers.reproduce.track_spread``.
"""

from trackformers.reproduce.track_spread import main

if __name__ == "__main__":
    main()
