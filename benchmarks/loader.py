"""Data-loading throughput and memory: compressed native ROOT file -> packed CPU tensors.

    python benchmarks/loader.py [--events 100] [--hits 60000] [--particles 10000] [--out DIR]

    python benchmarks/loader.py --codecs-from data/ttbar_pu200_pixel/shard_00000.root

Writes pixel-sized events (mu = 200 pixel-only scale: 60 k hits, 10 k particles; positions on
the pixel barrel layers, random truth) with the project's writer in three codecs (LZ4 level 1 =
the writer default, ZSTD-1, ZLIB-1 = uproot's default), then times one loader process (= one
DataLoader worker) streaming every file into PackedBatches through NativeEventStream, for input
features only and with the six track-parameter targets (5 passes per run: rates of the median
pass by CPU time, and of the first pass); then the same through the preprocessed memory-mapped
cache (trackformers.data.cache). The numba kernels are loaded before the clock starts
(``fastpath.warm_up``, once per worker; its time is printed as "start-up"). Peak memory is
measured in a fresh subprocess per run, for a file and for one 4x larger at the same chunk
budget, and for single events of 200 k hits. Prints a markdown table (the rows of
BENCHMARKS.md, "Data loading").

``--codecs-from FILE`` instead rewrites the events of a simulated file (realistic content, e.g.
``python -m trackformers.simulate process=ttbar pileup=200 'detector.keep_volumes=[7,8,9]'``)
in every codec and prints size per event and the loader rate with targets for each.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FEATURES = ("x", "y", "z", "r", "phi", "eta")
TARGETS = ("eta", "sin_phi", "cos_phi", "q_over_pt", "d0", "z0")
PASSES = 5  # passes over the file per measurement; rates of the median pass (and the first)


def pixel_event(rng, event_id, n_hits, n_parts):
    """Schema-complete event at pixel mu=200 scale (random content, realistic sizes/dtypes)."""
    f32 = lambda a: np.asarray(a, dtype=np.float32)
    r = rng.choice([32.0, 72.0, 116.0, 172.0], n_hits)
    phi = rng.uniform(-np.pi, np.pi, n_hits)
    ev = {
        "event_id": np.uint64(event_id),
        "pileup": np.int32(200),
        "hit_id": np.arange(1, n_hits + 1, dtype=np.uint64),
        "hit_x": f32(r * np.cos(phi)),
        "hit_y": f32(r * np.sin(phi)),
        "hit_z": f32(rng.uniform(-491, 491, n_hits)),
        "hit_volume_id": np.full(n_hits, 8, np.int32),
        "hit_layer_id": (2 * rng.integers(1, 5, n_hits)).astype(np.int32),
        "hit_module_id": rng.integers(0, 2000, n_hits).astype(np.int32),
        "hit_particle_id": rng.integers(0, n_parts + 1, n_hits).astype(np.uint64),
        "hit_weight": f32(rng.random(n_hits) / n_hits),
        "part_particle_id": np.arange(1, n_parts + 1, dtype=np.uint64),
        "part_pdg_id": np.full(n_parts, 211, np.int32),
        "part_vertex_id": rng.integers(0, 200, n_parts).astype(np.int32),
        "part_q": rng.choice([-1, 1], n_parts).astype(np.int32),
        "part_nhits": np.full(n_parts, 6, np.int32),
        "part_parent_id": np.zeros(n_parts, np.uint64),
        "part_process": np.zeros(n_parts, np.int32),
    }
    for k in ("tx", "ty", "tz", "tpx", "tpy", "tpz"):
        ev[f"hit_{k}"] = f32(rng.normal(0, 100, n_hits))
    for k in ("vx", "vy", "vz", "px", "py", "pz"):
        ev[f"part_{k}"] = f32(rng.normal(0, 1, n_parts))
    return ev


def write_file(path, n_events, n_hits, n_parts, codec, seed=0):
    from trackformers.sim.writer import write_events

    if Path(path).is_file():  # reuse a scratch file from an earlier run with --out
        return Path(path)
    comp = {"zlib1": "zlib:1", "lz4": "lz4:1", "zstd1": "zstd:1"}[codec]
    rng = np.random.default_rng(seed)
    events = (pixel_event(rng, i, n_hits, n_parts) for i in range(n_events))
    write_events(path, events, {"benchmark": "loader"}, basket_events=10, compression=comp)
    return path


def _status_mib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def _reset_peak_rss() -> float:
    """Reset the peak-RSS mark (Linux clear_refs 5) and return the current RSS in MiB.

    ru_maxrss is not used: it survives fork+exec and would report the parent's peak."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mib("VmRSS")


def measure(kind, path, targets, chunk_mb, max_tokens):
    """One loader pass in this process: hits/s and peak RSS (MiB)."""
    from trackformers.data.cache import CachedEventStream
    from trackformers.data.dataset import NativeEventStream
    from trackformers.data.features import FeatureConfig

    t0 = time.perf_counter()
    try:
        from trackformers.data.fastpath import warm_up

        warm_up()  # numba start-up, once per worker process
    except ImportError:  # a checkout from before the compiled path (for before/after numbers)
        pass
    startup = time.perf_counter() - t0
    cfg = FeatureConfig(features=FEATURES, targets=TARGETS if targets else ())
    if kind == "native":
        ds = NativeEventStream(
            [path], cfg, max_tokens, shuffle=True, seed=0, chunk_bytes=chunk_mb * 2**20
        )
        ds.plan()
    else:
        ds = CachedEventStream(path, max_tokens, shuffle=True, seed=0)
    base = _reset_peak_rss()  # after imports: measure what the loader itself adds
    passes = []
    for _ in range(PASSES):  # the first pass may also read the file from disk
        t0, c0 = time.perf_counter(), time.process_time()
        hits = batches = 0
        for b in ds:
            hits += b.num_hits
            batches += 1
        passes.append((time.perf_counter() - t0, time.process_time() - c0))
    dt, cpu = sorted(passes, key=lambda p: p[1])[len(passes) // 2]  # median pass by CPU time
    rss = _status_mib("VmHWM")
    return {
        "hits": hits,
        "batches": batches,
        "seconds": dt,
        "mhits_per_s": hits / dt / 1e6,
        "cpu_seconds": cpu,
        "mhits_per_cpu_s": hits / cpu / 1e6,
        "first_pass_mhits_per_cpu_s": hits / passes[0][1] / 1e6,
        "peak_rss_mib": rss,
        "loader_rss_mib": rss - base,
        "startup_s": startup,
    }


def run_sub(*args) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", *map(str, args)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100)
    ap.add_argument("--hits", type=int, default=60_000)
    ap.add_argument("--particles", type=int, default=10_000)
    ap.add_argument("--chunk-mb", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=120_000)
    ap.add_argument("--out", default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--codecs-from", type=Path, default=None, help="simulated native file")
    ap.add_argument("--measure", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        kind, path, targets, chunk_mb, max_tokens = args.measure
        print(json.dumps(measure(kind, path, targets == "1", int(chunk_mb), int(max_tokens))))
        return

    import torch

    from trackformers.data.cache import build_cache
    from trackformers.data.features import FeatureConfig

    scratch = Path(args.out or tempfile.mkdtemp(prefix="tf-loader-"))
    scratch.mkdir(parents=True, exist_ok=True)
    if args.codecs_from is not None:
        codecs_from(args.codecs_from, scratch, args.chunk_mb, args.max_tokens)
        return
    rows = []
    head = (
        f"{platform.processor() or platform.machine()}, {torch.__version__}, "
        f"{args.events} events x {args.hits} hits, chunk {args.chunk_mb} MiB"
    )
    print(f"# {head}", file=sys.stderr)
    files = {}
    for codec in ("lz4", "zstd1", "zlib1"):
        t0 = time.perf_counter()
        files[codec] = write_file(
            scratch / f"events_{codec}.root", args.events, args.hits, args.particles, codec
        )
        size = files[codec].stat().st_size / 2**20
        print(f"wrote {codec}: {size:.0f} MiB in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        for targets in (0, 1):
            r = run_sub("native", files[codec], targets, args.chunk_mb, args.max_tokens)
            rows.append((f"native ROOT {codec} ({size:.0f} MiB)", targets, r))
            print(rows[-1], file=sys.stderr)
    for targets in (0, 1):
        cfg = FeatureConfig(features=FEATURES, targets=TARGETS if targets else ())
        t0 = time.perf_counter()
        cache = build_cache([files["lz4"]], cfg, scratch / "cache", args.chunk_mb * 2**20)
        build = time.perf_counter() - t0
        r = run_sub("cache", cache, targets, args.chunk_mb, args.max_tokens)
        rows.append((f"memory-mapped cache (built in {build:.1f} s)", targets, r))
        print(rows[-1], file=sys.stderr)
    # memory bound: a 4x larger file at the same chunk budget, and 200 k-hit events
    big = write_file(
        scratch / "events_x4.root", 4 * args.events, args.hits, args.particles, "lz4", seed=1
    )
    r = run_sub("native", big, 1, args.chunk_mb, args.max_tokens)
    rows.append((f"native ROOT lz4, 4x file ({big.stat().st_size / 2**20:.0f} MiB)", 1, r))
    small_chunk = max(args.chunk_mb // 4, 1)
    for f, label in ((files["lz4"], "1x"), (big, "4x")):
        r = run_sub("native", f, 1, small_chunk, args.max_tokens)
        rows.append((f"native ROOT lz4, {label} file, chunk {small_chunk} MiB", 1, r))
    huge = write_file(scratch / "events_200k.root", 10, 200_000, 30_000, "lz4", seed=2)
    r = run_sub("native", huge, 1, args.chunk_mb, args.max_tokens)
    rows.append(("native ROOT lz4, 10 events x 200 k hits", 1, r))
    print_rows(rows)


def print_rows(rows) -> None:
    print(
        "| source | targets | hits | M hits/s wall | M hits/CPU-s (first pass) "
        "| loader MiB (peak RSS) |"
    )
    print("|---|---|---|---|---|---|")
    for name, targets, r in rows:
        print(
            f"| {name} | {'6 params' if targets else 'none'} | {r['hits']:,} | "
            f"{r['mhits_per_s']:.2f} | {r['mhits_per_cpu_s']:.2f} "
            f"({r.get('first_pass_mhits_per_cpu_s', float('nan')):.2f}) | "
            f"{r['loader_rss_mib']:.0f} ({r['peak_rss_mib']:.0f}) |"
        )
    print(f"numba start-up per worker (not in the rates): {rows[0][2]['startup_s']:.2f} s")


def codecs_from(source: Path, scratch: Path, chunk_mb: int, max_tokens: int) -> None:
    """Rewrite the events of a simulated file in each codec: size, read and loader rates."""
    from trackformers.data.reader import read_events
    from trackformers.sim.writer import read_metadata, write_events

    events = read_events(source, validate=False)
    meta = read_metadata(source)
    n_hits = sum(len(e["hit_id"]) for e in events)
    rows = []
    for codec in ("lz4:1", "zstd:1", "zstd:5", "zlib:1", "lzma:1"):
        path = scratch / f"sim_{codec.replace(':', '')}.root"
        write_events(path, events, meta, compression=codec, basket_events=2)
        size = path.stat().st_size
        per = f"{size / len(events) / 1e6:.2f} MB/event"
        for targets in (0, 1):
            r = run_sub("native", path, targets, chunk_mb, max_tokens)
            rows.append(
                (f"{codec} ({per}, {len(events)} x {n_hits // len(events)} hits)", targets, r)
            )
            print(rows[-1], file=sys.stderr)
    print_rows(rows)


if __name__ == "__main__":
    main()
