"""One training step of a 6-layer d=256 encoder on a mu=200 pixel-size event, per backend.

    python benchmarks/model_step.py --json $OUT/model_step.json        # GPU
    python benchmarks/model_step.py --hits 3000 --device cpu           # smoke test

Step = plan build + forward + backward + AdamW update, bf16 autocast on GPU, one event of
~60k synthetic pixel hits (trackformers.attention.synthetic), EncReg head, MSE loss; or
(``--loss supcon-tiled`` / ``supcon-triton``) the contrastive head with the exact all-hits
SupCon loss, torch tiles or the fused Triton kernels (kernels/supcon.py):

    python benchmarks/model_step.py --loss supcon-triton --d-model 128 --backends flex-cluster
Reported: median step time over the timed steps (after warm-up steps that compile),
and the peak GPU memory of a step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from trackformers.attention import available, build
from trackformers.attention.synthetic import synthetic_batch
from trackformers.bench import environment
from trackformers.losses import SupConLoss
from trackformers.models import ContrastiveHead, Encoder, RegressorHead, TrackFormer

CONFIGS = {
    "dense": ("dense", {}),
    "flex-cluster": ("flex", dict(group_size=256)),
    "windowed": ("windowed", dict(window=384)),
    "fused-cluster": ("fused", dict(mask="cluster", group_size=256)),
}


def step_fn(model, opt, batch, target, device, loss_fn=None):
    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            out = model(batch)
        if loss_fn is None:
            loss = torch.nn.functional.mse_loss(out["params"].float(), target)
        else:
            loss = loss_fn(out, batch)
        loss.backward()
        opt.step()
        return loss

    return step


def run(name, kind, kw, batch, device, warmup, steps, loss="mse", d_model=256) -> dict:
    if device != "cuda" and kind != "dense":
        kw = dict(kw, impl="torch")
    torch.manual_seed(0)
    enc = Encoder(
        batch.x.shape[1], d_model=d_model, n_heads=8, n_layers=6, attention=build(kind, **kw)
    )
    if loss == "mse":
        model, loss_fn = TrackFormer(enc, RegressorHead(d_model, 4)), None
    else:
        model = TrackFormer(enc, ContrastiveHead(d_model, 32))
        loss_fn = SupConLoss(temperature=0.05, kernel=loss.removeprefix("supcon-"))
    model = model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    target = torch.randn(batch.num_hits, 4, device=device)
    step = step_fn(model, opt, batch, target, device, loss_fn)
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    warm_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        value = step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return dict(
        backend=name,
        loss=loss,
        d_model=d_model,
        hits=batch.num_hits,
        step_ms=statistics.median(times),
        step_ms_min=min(times),
        peak_gib=peak,
        warmup_s=warm_s,
        loss_value=float(value),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hits", type=int, default=60000)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--backends", nargs="*", default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--loss", default="mse", choices=["mse", "supcon-tiled", "supcon-triton"])
    ap.add_argument("--d-model", type=int, default=256)
    args = ap.parse_args()
    batch = synthetic_batch([args.hits], num_features=3, seed=200, device=args.device)
    rows = []
    for name, (kind, kw) in CONFIGS.items():
        if (args.backends and name not in args.backends) or kind not in available():
            continue
        if kind == "fused" and args.device != "cuda":
            continue
        try:
            row = run(
                name, kind, kw, batch, args.device, args.warmup, args.steps, args.loss, args.d_model
            )
        except Exception as err:  # report and continue with the other backends
            row = dict(backend=name, hits=batch.num_hits, error=f"{type(err).__name__}: {err}")
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.device == "cuda":
            torch.cuda.empty_cache()
    meta = dict(
        **environment(args.device),
        hits=batch.num_hits,
    )
    if args.json:
        args.json.write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    print(f"\n{meta}\n| backend | hits | step ms (median) | peak GiB | warm-up s |")
    print("|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['backend']} | {r['hits']} | error: {r['error'][:100]} | | |")
        else:
            print(
                f"| {r['backend']} | {r['hits']} | {r['step_ms']:.1f} | {r['peak_gib']:.2f} "
                f"| {r['warmup_s']:.1f} |"
            )


if __name__ == "__main__":
    main()
