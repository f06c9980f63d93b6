"""Attention backends on one event: plan build, forward, forward+backward (BENCHMARKS.md).

    python benchmarks/attention.py --json $OUT/attention.json          # GPU, full grid
    python benchmarks/attention.py --sizes 2048 --head-dims 32 --device cpu   # smoke test

    python benchmarks/attention.py --plan-only                          # plan build alone
    python benchmarks/attention.py --profile-plan --backends flex-cluster --sizes 65536 \
        --json $OUT/prof.json                                           # where the plan's time goes

N in {8k, 32k, 65k}, head_dim in {32, 64} with H * head_dim = 256, bf16. Every backend is
timed as the encoder runs it: the plan is built once (timed separately: sorting, groups,
block layout and BlockMask) and q, k, v are already in the plan's order. The event is
moved to the GPU by PackedBatch.to(), as training batches are, so the plan needs no sync.
Plan times: "plan_gpu_ms" = GPU time of the plan in a busy pipeline (the GPU sleeps first,
so the host has queued the whole plan; what the plan adds to a GPU-bound training step, the
number the plan/attention ratios use); "plan_bench_ms" = the plan alone timed exactly like
the attention calls (triton do_bench; host-bound for the plan, whose host work is longer
than its GPU work); "plan_ms" = wall clock from an idle GPU to the plan
on the host (sync before and after, median of 50); "plan_sync_ms" = the same with
cu_seqlens of unknown values (made on the device), which the builder reads back (one sync).
For the block-sparse backends the build is also broken down: the CUDA-graph replay alone
(replay + sync) and the same static program launched without a graph (plans.GRAPHS =
False, the compiled program's kernels).
TFLOP/s counts only attended (query, key) pairs: 4 * pairs * D * H flops forward, 2.5x that
backward.
The Part-2 cluster mask (group_size 256, +-1 group) and a phi window of +-384 hits attend
about the same number of keys per query (~768), so flex, windowed and fused compare
like for like; dense SDPA attends all N^2 pairs.

``--profile-plan``: where each backend's plan build spends its time,
torch.profiler over repeated builds of one synthetic event, GPU kernels and host-side ops
ranked by total time, in three passes: the plan as the backend builds it (static program
replayed as a CUDA graph, then the host part: BlockMask, validation sync), the same program
launched kernel by kernel (``plans.GRAPHS = False``) so that every kernel of the graph is
named, and the host side alone (the call returns before the GPU is done) with its Python
functions ranked by cProfile (own and cumulative µs per build).
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import json
import pstats
import statistics
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from trackformers.attention import available, build, compiled, plans
from trackformers.attention.flex import _FlexBase
from trackformers.attention.plans import attended_pairs, presorted
from trackformers.attention.synthetic import synthetic_batch
from trackformers.bench import environment, sync, wall_ms

GROUP, WINDOW = 256, 384  # ~768 keys per query each; --group-size 384: the issue's ~1.7 %


def backends(device: str) -> dict[str, tuple[str, dict]]:
    impl = {} if device == "cuda" else {"impl": "torch"}
    out = {
        "dense": ("dense", {}),
        "flex-cluster": ("flex", dict(group_size=GROUP, **impl)),
        "windowed": ("windowed", dict(window=WINDOW, **impl)),
    }
    if "fused" in available() and device == "cuda":
        out["fused-cluster"] = ("fused", dict(mask="cluster", group_size=GROUP))
        out["fused-window"] = ("fused", dict(mask="window", window=WINDOW))
    return out


def bench(fn, device: str, reps: int = 20) -> float:
    """Median milliseconds of fn() after warm-up."""
    if device == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=150, return_mode="median"))
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def plan_parts(backend, batch, device: str) -> dict:
    """Plan-build breakdown of a block-sparse backend (see module docstring)."""
    parts = {}
    if device == "cuda" and plans.GRAPHS:
        backend.plan(batch)
        graph = next(reversed(compiled._GRAPHS.values()))  # the one just used
        if graph is not None:
            parts["graph_variant"] = graph.variant
            parts.update({f"replay_gpu_ms_{k}": v for k, v in graph.variant_ms.items()})
            parts["replay_ms"] = wall_ms(graph.graph.replay, device)
    plans.GRAPHS = False
    try:
        parts["nograph_ms"] = wall_ms(lambda: backend.plan(batch), device, reps=20)
    finally:
        plans.GRAPHS = True
    parts["plan_alone_ms"] = wall_ms(lambda: backend._make_plan(batch), device)
    return parts


def plan_times(backend, batch, device: str) -> dict:
    """plan_ms: idle device -> plan on the host (wall, synced both sides); plan_bench_ms:
    the plan timed like the attention calls (do_bench: GPU stream time, which includes host
    launch time when the host is the slower side); plan_sync_ms: wall for the same batch
    with cu_seqlens created on the device, whose values the builder must read back (sync)."""
    unknown = dataclasses.replace(batch, cu_seqlens=batch.cu_seqlens.clone())
    out = dict(
        plan_ms=wall_ms(lambda: backend.plan(batch), device),
        plan_bench_ms=bench(lambda: backend.plan(batch), device),
        plan_sync_ms=wall_ms(lambda: backend.plan(unknown), device),
    )
    if device == "cuda":
        out["plan_gpu_ms"] = busy_gpu_ms(lambda: backend.plan(batch))
    return out


def busy_gpu_ms(fn, reps: int = 30) -> float:
    """Median GPU milliseconds of fn() in a busy pipeline: the GPU first sleeps ~2 ms, so
    the host has queued all of fn's work before the GPU reaches it and the events around
    fn time its kernels alone (what fn adds to a GPU-bound training step, whose host work
    runs ahead of the GPU). fn must not sync."""
    fn()
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        torch.cuda._sleep(4_000_000)  # clock cycles: ~2 ms at ~2 GHz
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def run_one(name, kind, kw, batch, n, d, dtype, device, plan_only=False) -> dict:
    h = 256 // d
    backend = build(kind, **kw)
    plan = backend.plan(batch)
    times = plan_times(backend, batch, device) if name != "dense" else dict(plan_ms=0.0)
    plan_ms = times.get("plan_gpu_ms", times.get("plan_bench_ms", 0.0))  # ratios: GPU time
    parts = plan_parts(backend, batch, device) if isinstance(backend, _FlexBase) else {}
    if plan_only:
        return dict(backend=name, n=n, head_dim=d, **times, **parts)
    pairs = attended_pairs(plan)
    run_plan = presorted(plan)
    q, k, v = (
        torch.randn(n, h, d, device=device, dtype=dtype, requires_grad=True) for _ in range(3)
    )
    grad = torch.randn(n, h, d, device=device, dtype=dtype)

    def fwd():
        with torch.no_grad():
            return backend(q, k, v, run_plan)

    def fwd_bwd():
        q.grad = k.grad = v.grad = None
        backend(q, k, v, run_plan).backward(grad)

    t0 = time.perf_counter()
    fwd_bwd()  # compile / autotune outside the timing
    sync(device)
    first_ms = (time.perf_counter() - t0) * 1e3
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    fwd_ms = bench(fwd, device)
    fb_ms = bench(fwd_bwd, device)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    flops = 4.0 * pairs * d * h
    return dict(
        backend=name,
        n=n,
        head_dim=d,
        heads=h,
        pairs=pairs,
        density=pairs / n**2,
        **times,
        fwd_ms=fwd_ms,
        fwd_bwd_ms=fb_ms,
        first_call_ms=first_ms,
        fwd_tflops=flops / fwd_ms / 1e9,
        fwd_bwd_tflops=3.5 * flops / fb_ms / 1e9,
        plan_over_fwd=plan_ms / fwd_ms,
        plan_over_fwd_bwd=plan_ms / fb_ms,
        plan_over_6_layers=plan_ms / (6 * fb_ms),
        peak_gib=peak,
        **parts,
    )


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
    return {
        "gpu_us_per_build": gpu[:top],
        "host_self_us_per_build": host[:top],
        "gpu_total_us": round(sum(r[1] for r in gpu), 1),
    }


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
    return {
        "host_ms_median": sorted(times)[len(times) // 2],
        "self_us_per_build": [
            (
                f"{Path(k[0]).name}:{k[1]}:{k[2]}",
                round(v[2] / reps * 1e6, 1),
                round(v[3] / reps * 1e6, 1),
            )
            for k, v in rows
        ],
    }


def profile_plans(args) -> list[dict]:
    """``--profile-plan``: the three profiles of each selected backend's plan build (CUDA)."""
    out = []
    for n in args.sizes:
        batch = synthetic_batch([n], seed=0).to("cuda")  # host cu_seqlens known: no sync
        for name, (kind, kw) in backends("cuda").items():
            if args.backends and name not in args.backends:
                continue
            res = {"backend": name, "size": n}
            res["graph"] = profile_plan(build(kind, **kw), batch, args.reps, args.top)
            res["host"] = host_profile(build(kind, **kw), batch, 5 * args.reps, args.top)
            plans.GRAPHS = False
            try:
                res["no_graph"] = profile_plan(build(kind, **kw), batch, args.reps, args.top)
            finally:
                plans.GRAPHS = True
            print(json.dumps(res, indent=1), flush=True)
            out.append(res)
    return out


def main() -> None:
    global GROUP, WINDOW
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8192, 32768, 65536])
    ap.add_argument("--head-dims", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--backends", nargs="*", default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plan-only", action="store_true", help="time the plan build alone")
    ap.add_argument("--group-size", type=int, default=GROUP, help="cluster groups (flex, fused)")
    ap.add_argument("--window", type=int, default=WINDOW, help="phi window (windowed, fused)")
    ap.add_argument(
        "--profile-plan", action="store_true", help="profile the plan build of --backends (CUDA)"
    )
    ap.add_argument("--reps", type=int, default=20, help="--profile-plan: builds per profile")
    ap.add_argument("--top", type=int, default=25, help="--profile-plan: rows per ranking")
    args = ap.parse_args()
    GROUP, WINDOW = args.group_size, args.window
    if args.profile_plan:
        rows = profile_plans(args)
        if args.json:
            meta = {**environment("cuda"), "group_size": GROUP, "window": WINDOW}
            args.json.write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
        return
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    rows = []
    for n in args.sizes:
        batch = synthetic_batch([n], seed=n).to(args.device)  # as a DataLoader batch arrives
        for d in args.head_dims[:1] if args.plan_only else args.head_dims:
            for name, (kind, kw) in backends(args.device).items():
                if args.backends and name not in args.backends:
                    continue
                try:
                    row = run_one(name, kind, kw, batch, n, d, dtype, args.device, args.plan_only)
                except Exception as err:  # report and continue with the other backends
                    row = dict(backend=name, n=n, head_dim=d, error=f"{type(err).__name__}: {err}")
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.device == "cuda":
                    torch.cuda.empty_cache()
    env = environment(args.device)
    meta = dict(
        device=env["device"],
        torch=env["torch"],
        triton=env["triton"] or "-",
        dtype=str(dtype),
        group_size=GROUP,
        window=WINDOW,
        date=env["date"],
        commit=env["commit"],
    )
    if args.json:
        args.json.write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    print_table(meta, rows)


def print_table(meta: dict, rows: list[dict]) -> None:
    print(f"\n{meta}")
    for r in rows:
        if "nograph_ms" in r:
            gpu = ", ".join(f"{k[14:]} {v:.3f}" for k, v in r.items() if k.startswith("replay_gpu"))
            print(
                f"plan parts {r['backend']} N={r['n']}: plan GPU {r.get('plan_gpu_ms', 0):.3f} ms, "
                f"bench {r['plan_bench_ms']:.3f} ms, "
                f"wall {r['plan_ms']:.3f} ms, wall with sync {r['plan_sync_ms']:.3f} ms; graph "
                f"replay+sync {r.get('replay_ms', float('nan')):.3f} ms ({r.get('graph_variant')}"
                f" kept; replay GPU ms: {gpu}); without graph {r['nograph_ms']:.3f} ms; plan "
                f"alone (no layout) {r['plan_alone_ms']:.3f} ms"
            )
    if rows and "fwd_ms" not in rows[0]:
        return
    print(
        "| backend | N | D | density | plan ms (GPU / bench / wall) | fwd ms | fwd+bwd ms "
        "| fwd TFLOP/s | fwd+bwd TFLOP/s | plan / fwd | plan / fwd+bwd "
        "| plan / 6 layers fwd+bwd |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['backend']} | {r['n']} | {r['head_dim']} | error: {r['error'][:80]} |")
            continue
        print(
            f"| {r['backend']} | {r['n']} | {r['head_dim']} | {r['density']:.4f} "
            f"| {r.get('plan_gpu_ms', 0.0):.3f} / {r.get('plan_bench_ms', 0.0):.3f} / "
            f"{r['plan_ms']:.3f} | {r['fwd_ms']:.3f} "
            f"| {r['fwd_bwd_ms']:.3f} "
            f"| {r['fwd_tflops']:.1f} | {r['fwd_bwd_tflops']:.1f} | {r['plan_over_fwd']:.2f} "
            f"| {r['plan_over_fwd_bwd']:.2f} "
            f"| {r['plan_over_6_layers']:.3f} |"
        )


if __name__ == "__main__":
    main()
