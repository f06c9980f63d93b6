"""Where the per-event inference time goes (companion of benchmarks/latency.py, GPU).

For the EncReg d128 L4 model with the fused cluster plan on a 60 k-hit event: kernel launches
and CUDA time per stage of one eager, sync-free step (torch.profiler), the component rounds
DBSCAN needs on the trained-like points (``pending`` after r rounds), and the DBSCAN time
per implementation and rounds setting.

    python benchmarks/latency_profile.py
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).parent))
from latency import Variant, build_model, padded_oracle  # noqa: E402

from trackformers.attention.synthetic import synthetic_pixel_hits  # noqa: E402
from trackformers.cluster import ClusterConfig, assign_tracks, dbscan  # noqa: E402
from trackformers.cluster import range_dbscan as rd  # noqa: E402
from trackformers.data.batch import PackedBatch  # noqa: E402
from trackformers.inference import forward_batch  # noqa: E402


def cuda_ms(fn, repeat=20, warmup=3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def main() -> None:
    dev = torch.device("cuda")
    xyz, pid = synthetic_pixel_hits(60_000, np.random.default_rng(0))
    coords = torch.from_numpy(xyz).to(dev)
    n = coords.shape[0]
    kw = {"mask": "cluster", "group_size": 128, "sector_size": 4096, "adjacency": 1}
    reg = {"method": "dbscan", "input": "params", "params": {"eps": 0.05, "min_samples": 3}}
    v = Variant("reg d128 L4", 128, 4, 8, "regress", "fused", kw, reg)
    model = build_model(v, dev)
    x = padded_oracle(pid, v, dev, n)["params"]  # (N, 4) trained-like
    cu = torch.tensor([0, n], dtype=torch.int32, device=dev)
    batch = PackedBatch(x=coords / 1000.0, cu_seqlens=cu, max_seqlen=n, coords=coords)
    cfg = ClusterConfig.from_dict(reg)

    def step():
        with record_function("plan"):
            plan = model.encoder.build_plan(batch)
        with record_function("model"):
            forward_batch(model, batch, plan)
        with record_function("clustering"):
            assign_tracks({"params": x}, cu, cfg, plan)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    events = prof.events()
    for s in (e for e in events if e.name in ("plan", "model", "clustering")):
        inside = [
            e for e in events
            if e.device_type.name == "CPU" and e.name == "cudaLaunchKernel"
            and s.time_range.start <= e.time_range.start <= s.time_range.end
        ]  # fmt: skip
        print(f"stage {s.name}: CPU {s.cpu_time_total / 1e3:.2f} ms, ~{len(inside)} launches")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25))
    print("GPU kernels per step:", sum(1 for e in events if e.device_type.name == "CUDA"))

    # component rounds needed on the trained-like points
    for r in range(0, 7):
        st = rd.start_grid(x, cu, 0.05, 3, rounds=r)
        print(f"rounds {r}: pending {bool(st.pending)}")
    ref = dbscan(x, cu, 0.05, 3, impl="torch")
    for impl, kwargs in (("torch", {}), ("triton", {"rounds": 2}), ("triton", {"rounds": 4}),
                         ("triton", {"rounds": 6}), ("triton", {"max_dims": 4})):  # fmt: skip
        got = dbscan(x, cu, 0.05, 3, impl=impl, **kwargs)
        ms = cuda_ms(lambda impl=impl, kwargs=kwargs: dbscan(x, cu, 0.05, 3, impl=impl, **kwargs))
        print(f"dbscan {impl} {kwargs}: {ms:.3f} ms (eager), equal to torch: "
              f"{torch.equal(got, ref)}, clusters {int(got.max()) + 1}")  # fmt: skip


if __name__ == "__main__":
    main()
