"""One GPU call that produces a physics result row: simulate, compile check, train, export,
evaluate, latency.

    python benchmarks/physics_run.py --out $OUT                       # the GPU run (defaults)
    python benchmarks/physics_run.py --out /tmp/rehearsal --tiny      # CPU rehearsal, minutes

The pipeline is ``trackformers.reproduce.physics_run`` (its docstring says what it does).
"""

import sys

from trackformers.reproduce.physics_run import main

if __name__ == "__main__":
    sys.exit(main())
