"""Where a backend's plan build spends its time (issue 5 point 4): torch.profiler over repeated
builds of one synthetic event, GPU kernels and host-side ops ranked by total time.

    python benchmarks/plan_profile.py --backend flex-cluster --size 65536 --json $OUT/prof.json

Three passes: the plan as the backend builds it (static program replayed as a CUDA graph, then
the host part: BlockMask, validation sync), and the same program launched kernel by kernel
(``plans.GRAPHS = False``) so that every kernel of the graph is named. Wall ms per build
(idle GPU -> plan on the host) is printed for both. The third pass times the host side
alone (the call returns before the GPU is done) and ranks its Python functions (cProfile:
own and cumulative µs per build).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from attention import backends, wall_ms
from torch.profiler import ProfilerActivity, profile

from trackformers.attention import build, plans
from trackformers.attention.synthetic import synthetic_batch


def ranked(prof, reps: int, top: int) -> dict[str, list]:
    """Top ``top`` GPU kernels and host ops by total time, in µs per build."""
    gpu, host = [], []
    for e in prof.key_averages():
        dev_us = getattr(e, "device_time_total", None)
        if dev_us is None:
            dev_us = getattr(e, "cuda_time_total", 0.0)
        if dev_us and e.self_cpu_time_total == 0:  # a kernel / memcpy on the device
            gpu.append((e.key[:90], round(dev_us / reps, 2), e.count // reps))
        elif e.self_cpu_time_total:
            host.append((e.key[:90], round(e.self_cpu_time_total / reps, 2), e.count // reps))
    gpu.sort(key=lambda r: -r[1])
    host.sort(key=lambda r: -r[1])
    return {"gpu_us_per_build": gpu[:top], "host_self_us_per_build": host[:top],
            "gpu_total_us": round(sum(r[1] for r in gpu), 1)}  # fmt: skip


def profile_plan(backend, batch, reps: int, top: int) -> dict:
    backend.plan(batch)  # warm-up: compiles, captures the graph
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            backend.plan(batch)
        torch.cuda.synchronize()
    return {"wall_ms": wall_ms(lambda: backend.plan(batch), "cuda"), **ranked(prof, reps, top)}


def host_profile(backend, batch, reps: int, top: int) -> dict:
    """Host side of the plan (the GPU idle before each call, no sync inside the plan):
    median wall ms of the call itself, and cProfile's functions ranked by own time."""
    import cProfile
    import pstats
    import time

    backend.plan(batch)
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        backend.plan(batch)
        times.append((time.perf_counter() - t) * 1e3)
    torch.cuda.synchronize()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(reps):
        backend.plan(batch)
    prof.disable()
    torch.cuda.synchronize()
    stats = pstats.Stats(prof).stats  # (file, line, fn) -> (calls, ncalls, tottime, cumtime, _)
    rows = sorted(stats.items(), key=lambda kv: -kv[1][2])[:top]
    return {"host_ms_median": sorted(times)[len(times) // 2],
            "self_us_per_build": [(f"{Path(k[0]).name}:{k[1]}:{k[2]}", round(v[2] / reps * 1e6, 1),
                                   round(v[3] / reps * 1e6, 1)) for k, v in rows]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backend", default="flex-cluster")
    ap.add_argument("--size", type=int, default=65536)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    kind, kw = backends("cuda")[args.backend]
    batch = synthetic_batch([args.size], seed=0).to("cuda")  # host cu_seqlens known: no sync
    res = {"backend": args.backend, "size": args.size, "device": torch.cuda.get_device_name(),
           "torch": torch.__version__}  # fmt: skip
    res["graph"] = profile_plan(build(kind, **kw), batch, args.reps, args.top)
    res["host"] = host_profile(build(kind, **kw), batch, 5 * args.reps, args.top)
    plans.GRAPHS = False
    try:
        res["no_graph"] = profile_plan(build(kind, **kw), batch, args.reps, args.top)
    finally:
        plans.GRAPHS = True
    text = json.dumps(res, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
