"""Benchmark: CPU time of the TrackML score and of all event metrics for a 100 k-hit event.

Goal: score of 100 k hits <= 50 ms on the CPU. The event mimics mu = 200 pixel+strip
statistics: 10 k particles with 1–20 hits, 10 % noise hits, a prediction that keeps 90 % of
hits on their particle and scatters the rest. Prints a markdown row for BENCHMARKS.md.

    python benchmarks/metrics.py [--hits 100000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time

import numpy as np
import pandas as pd

from trackformers.metrics import evaluate_event, score_event, trackml_score


def make_event(n_hits: int, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    n_part = n_hits // 10
    nh = rng.integers(1, 21, n_part)
    nh = np.maximum((nh * (0.9 * n_hits / nh.sum())).astype(int), 1)
    pid = np.repeat(np.arange(1, n_part + 1), nh)
    pid = np.r_[pid, np.zeros(n_hits - len(pid), int)][:n_hits]
    w = np.where(pid > 0, rng.random(n_hits), 0.0)
    phi, eta, pt = (
        rng.uniform(-np.pi, np.pi, n_part),
        rng.uniform(-4, 4, n_part),
        rng.exponential(1.0, n_part),
    )
    event = {
        "event_id": np.uint64(0),
        "pileup": np.int32(200),
        "hit_id": np.arange(1, n_hits + 1, dtype=np.uint64),
        "hit_particle_id": pid.astype(np.uint64),
        "hit_weight": w / w.sum(),
        "hit_volume_id": rng.choice([7, 8, 9, 13], n_hits).astype(np.int32),
        "part_particle_id": np.arange(1, n_part + 1, dtype=np.uint64),
        "part_px": pt * np.cos(phi),
        "part_py": pt * np.sin(phi),
        "part_pz": pt * np.sinh(eta),
    }
    track_id = np.where(rng.random(n_hits) < 0.9, pid, rng.integers(0, n_part, n_hits))
    return event, track_id.astype(np.int64)


def timeit(fn, repeat: int) -> float:
    fn()  # warm-up
    t = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(t))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hits", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    event, tid = make_event(args.hits, np.random.default_rng(0))
    pid, w = event["hit_particle_id"].astype(np.int64), event["hit_weight"]
    truth = pd.DataFrame({"hit_id": event["hit_id"], "particle_id": pid, "weight": w})
    sub = pd.DataFrame({"hit_id": event["hit_id"], "track_id": tid}).sample(frac=1, random_state=0)
    rows = {
        "trackml_score (arrays)": timeit(lambda: trackml_score(tid, pid, w), args.repeat),
        "score_event (DataFrames)": timeit(lambda: score_event(truth, sub), args.repeat),
        "evaluate_event (all metrics + table)": timeit(
            lambda: evaluate_event(event, tid), args.repeat
        ),
    }
    cpu = platform.processor() or platform.machine()
    print(f"score = {trackml_score(tid, pid, w):.4f}, {args.hits} hits, median of {args.repeat}")
    print("| function | hits | median ms | device | versions | date | command |")
    print("|---|---|---|---|---|---|---|")
    for name, ms in rows.items():
        cmd = "`OMP_NUM_THREADS=1 python benchmarks/metrics.py`"
        print(
            f"| {name} | {args.hits} | {ms:.1f} | CPU {cpu} | numpy {np.__version__}, "
            f"pandas {pd.__version__} | {datetime.date.today()} | {cmd} |"
        )


if __name__ == "__main__":
    main()
