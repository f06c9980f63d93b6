"""Benchmark: Predictor latency of a trained checkpoint on real events, per clustering.

Each variant runs ``python -m trackformers.latency CKPT DATA --mode predictor`` in its own
process (so that its reserved memory is its own: CUDA-graph pools, caches), in the order
given, while the time budget lasts (a variant is started only if ``--budget`` seconds minus
the time spent leave room for it). Every result JSON is collected into one file and a table
is printed: total ms (median / p90 over events x repeats), the split model / clustering /
other (stage graphs), peak allocated and reserved GiB, Predictor labels equal to the staged
(eager) path's for the same method, the fraction of replays completed eagerly.

    python benchmarks/latency_real.py .lat/model_bf16.pt .lat/pu200_eval --out $OUT/lat.json \\
        --eps 0.05 --physics --variants plan-c plan-fp16-c win512-fp32 exact --budget 330
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HOODS = {"exact": ["--cluster", "dbscan"], "plan": ["--cluster", "dbscan_plan"]}


def variant_args(name: str, eps: float) -> list[str]:
    """Arguments of ``trackformers.latency`` for a variant named
    ``<hood>[-<precision>][-c][-k<rows>]``: hood ``exact`` (grid DBSCAN), ``plan`` (the
    model's plan neighbourhood) or ``win<W>`` (phi window +-W); precision fp16 (default) |
    bf16 | fp32; ``-c`` compiled blocks; ``-k<rows>`` their feed-forward over that many rows
    at a time. E.g. ``plan-c-k16384``, ``plan-bf16-c``, ``win512-fp32``."""
    hood, *rest = name.split("-")
    if hood in HOODS:
        args = list(HOODS[hood])
        cl = [f"eps={eps}", "min_samples=2"]
    elif hood.startswith("win") and hood[3:].isdigit():
        args = ["--cluster", "dbscan_window"]
        cl = [f"eps={eps}", "min_samples=2", f"window={int(hood[3:])}"]
    else:
        raise ValueError(f"variant {name!r}: hood must be exact, plan or win<W>, got {hood!r}")
    args += ["--set", *cl]
    for part in rest:
        if part in ("bf16", "fp16", "fp32"):
            args += ["--precision", part]
        elif part == "c":
            args.append("--compile")
        elif part.startswith("k") and part[1:].isdigit():
            args += ["--ffn-chunk", part[1:]]
        else:
            raise ValueError(f"variant {name!r}: unknown part {part!r} (bf16|fp16|fp32|c|k<rows>)")
    return args


def _f(v, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def row(name: str, r: dict) -> str:
    st = r.get("stages_median_ms") or {}
    cl = r["cluster"]["params"]
    hood = cl.get("neighbourhood", "-") + (f" {cl['window']}" if "window" in cl else "")
    prec = r.get("precision") or ("bf16" if r.get("amp") else "fp32")
    ph = r.get("physics") or {}
    dm = " | ".join(
        f"{100 * ph[k]['dm_efficiency']:.1f} ± {100 * ph[k]['dm_efficiency_err']:.1f} / "
        f"{100 * ph[k]['fake_rate']:.1f}" if k in ph else "–"
        for k in ("predictor", "staged_fp32")
    )  # fmt: skip
    return (f"| {name} | {r['cluster']['method']} {hood} | {prec}"
            f"{' compiled' if r.get('compile') else ''} | {r['median_ms']:.2f} / {r['p90_ms']:.2f}"
            f" | {_f(st.get('model'), '.2f')} | {_f(st.get('clustering'), '.2f')} | "
            f"{_f(st.get('other'), '.2f')} | {_f(r['peak_gib'], '.3f')} | "
            f"{_f(r['reserved_gib'], '.3f')}"
            f" | {r['same_partition_as_staged']:.2f} | {r['eager_completion_fraction']:.2f} | "
            f"{r['staged_ms_median']:.1f} | {r['n_tracks_mean']:.0f} | {dm} |")  # fmt: skip


def smoke() -> str:
    """Tiled plan kernel on the GPU equals the torch path on the CPU (small window case);
    "" when it does, else the error (the variants then run the per-row kernel)."""
    import numpy as np
    import torch

    from trackformers.attention.synthetic import synthetic_batch
    from trackformers.cluster import cluster_hits

    try:
        b = synthetic_batch([3000, 0, 2000], seed=1)
        pid = b.particle_id.numpy()
        rng = np.random.default_rng(0)
        c = rng.normal(size=(pid.max() + 1, 32))
        c /= np.linalg.norm(c, axis=1, keepdims=True)
        x = torch.from_numpy(c[pid] + rng.normal(size=(len(pid), 32)) * 0.005).float()
        p = {"eps": 0.1, "min_samples": 2, "neighbourhood": "window", "window": 64}
        a = cluster_hits("dbscan_plan", x, b.cu_seqlens, coords=b.coords, **p)
        g = b.to("cuda")
        y = cluster_hits("dbscan_plan", x.cuda(), g.cu_seqlens, coords=g.coords, **p).cpu()
        if not torch.equal(a, y):
            return f"labels differ on {(a != y).float().mean():.4f} of the hits"
        return ""
    except Exception as err:  # reported, and the fallback kernel is used
        return f"{type(err).__name__}: {err}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("ckpt")
    ap.add_argument("data")
    ap.add_argument("--out", required=True)
    ap.add_argument("--variants", nargs="+", default=["exact", "win512", "plan"],
                    help="hood[-precision][-c], e.g. plan-fp16-c")  # fmt: skip
    ap.add_argument("--events", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--budget", type=float, default=330.0, help="seconds for all variants")
    ap.add_argument("--need", type=float, default=45.0, help="seconds one variant needs")
    ap.add_argument("--attention", default="fused")
    ap.add_argument("--rounds", type=int, default=6, help="DBSCAN component rounds in graph")
    ap.add_argument("--eps", type=float, default=0.1, help="DBSCAN radius of every variant")
    ap.add_argument("--physics", action="store_true", help="DM / fake of each variant and of "
                    "the staged fp32 path on the same events")  # fmt: skip
    args = ap.parse_args()
    try:
        variants = {name: variant_args(name, args.eps) for name in args.variants}
    except ValueError as err:
        raise SystemExit(str(err)) from None
    extra = ["--physics"] if args.physics else []
    out = Path(args.out)
    t0 = time.perf_counter()
    results: dict = {"smoke": smoke() or "ok"}
    print(f"smoke (tiled kernel on the GPU = torch on the CPU): {results['smoke'][:2000]}",
          flush=True)  # fmt: skip
    env = dict(os.environ)
    if results["smoke"] != "ok":
        env["TRACKFORMERS_PLAN_KERNEL"] = "rows"
    for name in args.variants:
        left = args.budget - (time.perf_counter() - t0)
        if left < args.need:
            print(f"skip {name}: {left:.0f} s left", flush=True)
            results[name] = "skipped (budget)"
            continue
        js = out.with_name(f"{out.stem}_{name}.json")
        cmd = [sys.executable, "-m", "trackformers.latency", args.ckpt, args.data, "--mode",
               "predictor", "--events", str(args.events), "--repeat", str(args.repeat),
               "--attention", args.attention, "--rounds", str(args.rounds), "--out", str(js),
               *variants[name], *extra]  # fmt: skip
        t1 = time.perf_counter()
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=left, env=env)
        except subprocess.TimeoutExpired:
            results[name] = "timed out"
            continue
        print(f"{name}: rc {res.returncode} in {time.perf_counter() - t1:.0f} s", flush=True)
        if res.returncode != 0 or not js.is_file():
            results[name] = f"failed: {res.stderr[-2500:]}"
            print(results[name], flush=True)
            continue
        results[name] = json.loads(js.read_text())
        js.unlink()
        print(row(name, results[name]), flush=True)
    out.write_text(json.dumps(results, indent=1))
    print("| variant | clustering | precision | total ms (median / p90) | model | clustering | "
          "other | peak GiB | reserved GiB | equal to staged | eager completion | staged ms | "
          "tracks | DM % / fake % | staged fp32 DM % / fake % |")  # fmt: skip
    for name, r in results.items():
        if name == "smoke":
            continue
        if isinstance(r, dict):
            print(row(name, r))
        else:
            print(f"| {name} | {r[:200]} |")


if __name__ == "__main__":
    main()
