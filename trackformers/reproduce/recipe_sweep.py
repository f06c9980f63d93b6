"""Learning curves of training-recipe variants: validation DM efficiency and fake rate vs
optimizer steps and wall time, several variants at once.

Each variant is a list of Hydra overrides of ``python -m trackformers.train`` (a YAML file maps
variant name -> overrides; ``base`` overrides apply to all). Variants run as separate training
processes, ``--parallel`` at a time (on one GPU they share it; on a CPU give each
``--threads``). The curve is read from each run's CSV log (``val/dm_efficiency``,
``val/fake_rate`` at every validation), so accuracy per step is device-independent and a GPU
sweep can budget a CPU run.

    python benchmarks/recipe_sweep.py benchmarks/runs/recipe_pu0.yaml --out outputs/sweep \
        --data data/sweep_pu0 --steps 3000 --val-every 250 --parallel 4

Writes ``<out>/curves.json`` (one row per validation of each variant), ``<out>/curves.md``
(the last and best point of each variant), ``<out>/curves.png`` and ``curves_minutes.png``
(DM and fake vs steps and vs training minutes; benchmarks/pu200_run.py plots them against
GPU-minutes).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from trackformers.cli import argument_parser
from trackformers.paths import REPO_ROOT

REPO = REPO_ROOT


def load_variants(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    """``base`` overrides and the variants (name -> overrides) of a sweep file.

    Args:
        path: the YAML file.

    Raises:
        SystemExit: a file that is not a mapping of variants, or holds none.
    """
    spec = yaml.safe_load(path.read_text())
    if not isinstance(spec, dict) or not isinstance(spec.get("variants"), dict):
        raise SystemExit(f"{path}: expected a mapping with 'variants: {{name: [overrides]}}'")
    base = [str(o) for o in spec.get("base") or []]
    variants = {str(k): [str(o) for o in (v or [])] for k, v in spec["variants"].items()}
    if not variants:
        raise SystemExit(f"{path}: no variants")
    return base, variants


def train_command(name: str, overrides: list[str], args, run_dir: Path) -> list[str]:
    """The ``python -m trackformers.train`` command of one variant.

    Args:
        name: variant name (the run's ``name``).
        overrides: its Hydra overrides (a ``trainer.max_steps`` among them wins over
            ``args.steps``: variants of different budgets).
        args: the command line (data, steps, validation interval).
        run_dir: the run's output directory.

    Returns:
        The command as a list.
    """
    own_steps = any(o.split("=", 1)[0] == "trainer.max_steps" for o in overrides)
    return [
        sys.executable,
        "-m",
        "trackformers.train",
        *overrides,
        f"name={name}",
        f"data.path={args.data}",
        *([] if own_steps else [f"trainer.max_steps={args.steps}"]),
        f"trainer.val_check_interval={args.val_every}",
        "trainer.check_val_every_n_epoch=null",
        "callbacks.early_stopping=null",
        "callbacks.rich_progress_bar=null",
        "logger.wandb=null",
        f"hydra.run.dir={run_dir}",
    ]


TIME_COLUMNS = {"train_s": "time/train_s", "device_s": "time/device_s", "val_s": "time/val_s"}


def read_curve(run_dir: Path) -> list[dict]:
    """Validation rows of a run's CSV log: step, DM efficiency, fake rate, TrackML score and,
    when the run logged them (trackformers.resume.TrainClock), the training clock: wall
    seconds, device seconds (x GPUs), validation seconds. One row per step (the last logged:
    a resumed run may have validated a step again).

    Args:
        run_dir: the run's output directory.
    """
    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file():
        return []
    rows: dict[int, dict] = {}
    with path.open() as f:
        for r in csv.DictReader(f):
            if r.get("val/dm_efficiency"):
                row = {
                    "step": int(float(r["step"])),
                    "dm": float(r["val/dm_efficiency"]),
                    "fake": float(r.get("val/fake_rate") or "nan"),
                    "trackml": float(r.get("val/trackml_score") or "nan"),
                }
                row.update({k: float(r[c]) for k, c in TIME_COLUMNS.items() if r.get(c)})
                rows[row["step"]] = row
    return [rows[s] for s in sorted(rows)]


def run_all(args, base: list[str], variants: dict[str, list[str]]) -> dict[str, dict]:
    """Train every variant, ``args.parallel`` at a time, and read their curves.

    Args:
        args: the command line.
        base: overrides of every variant.
        variants: name -> its own overrides.

    Returns:
        name -> overrides, exit status, wall seconds and validation curve.
    """
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1"}
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    pending = list(variants.items())
    running: dict[str, tuple[subprocess.Popen, float, Path]] = {}
    results: dict[str, dict] = {}
    while pending or running:
        while pending and len(running) < args.parallel:
            name, ovr = pending.pop(0)
            run_dir = (out / name).resolve()
            cmd = train_command(name, base + ovr, args, run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "command.txt").write_text(" ".join(cmd[1:]) + "\n")
            log = (run_dir / "train.log").open("w")
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            running[name] = (proc, time.perf_counter(), run_dir)
            print(f"started {name}: {' '.join(base + ovr)}", flush=True)
        time.sleep(2)
        for name, (proc, t0, run_dir) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            wall = time.perf_counter() - t0
            curve = read_curve(run_dir)
            results[name] = {
                "overrides": base + variants[name],
                "rc": proc.returncode,
                "wall_s": wall,
                "curve": curve,
            }
            last = curve[-1] if curve else {}
            print(f"done {name}: rc {proc.returncode}, {wall:.0f} s, last {last}", flush=True)
    return results


def summary_markdown(results: dict[str, dict]) -> str:
    """Markdown table of the last and best validation point of each variant.

    Args:
        results: what :func:`run_all` returns.

    Returns:
        The table.
    """
    lines = [
        "| variant | rc | wall s | steps | DM % (last) | fake % (last) | best DM % (step) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        c = r["curve"]
        if not c:
            lines.append(f"| {name} | {r['rc']} | {r['wall_s']:.0f} | - | - | - | - |")
            continue
        best = max(c, key=lambda p: p["dm"])
        lines.append(
            f"| {name} | {r['rc']} | {r['wall_s']:.0f} | {c[-1]['step']} | "
            f"{100 * c[-1]['dm']:.1f} | {100 * c[-1]['fake']:.1f} | "
            f"{100 * best['dm']:.1f} ({best['step']}) |"
        )
    return "\n".join(lines) + "\n"


AXES = {
    "step": "optimizer steps",
    "minutes": "training minutes (wall clock, validations included)",
    "gpu_min": "GPU-minutes (device seconds / 60)",
}
CLOCK = {"minutes": "train_s", "gpu_min": "device_s"}  # axis -> training-clock column


def plot(results: dict[str, dict], path: Path, x: str = "step") -> None:
    """DM efficiency and fake rate of each variant's validations against ``x``: "step",
    "minutes" or "gpu_min" (the last two from rows that carry the training clock).

    Args:
        results: what ``run_all`` returns.
        path: the PNG.
        x: ``step``, ``minutes`` or ``gpu_min``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name, r in results.items():
        c = [p for p in r["curve"] if x == "step" or CLOCK[x] in p]
        if c:
            xs = [p["step"] if x == "step" else p[CLOCK[x]] / 60 for p in c]
            a.plot(xs, [100 * p["dm"] for p in c], marker=".", label=name)
            b.plot(xs, [100 * p["fake"] for p in c], marker=".", label=name)
    a.set(xlabel=AXES[x], ylabel="val DM efficiency %", ylim=(0, 100))
    b.set(xlabel=AXES[x], ylabel="val fake rate %")
    a.legend(fontsize=7)
    a.grid(alpha=0.3)
    b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    """The command line (see the module docstring).

    Args:
        argv: arguments (None: ``sys.argv[1:]``).

    Returns:
        0 when every variant's training exited cleanly, else 1.
    """
    p = argument_parser("trackformers.reproduce.recipe_sweep", __doc__)
    p.add_argument("variants", type=Path, help="YAML: base: [...], variants: {name: [...]}")
    p.add_argument("--out", required=True, help="folder of the runs and the curves")
    p.add_argument("--data", required=True, help="training dataset (validation split inside)")
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps of each variant")
    p.add_argument("--val-every", type=int, default=250, help="steps between validations")
    p.add_argument("--parallel", type=int, default=1, help="variants trained at a time")
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (0: default)")
    p.add_argument("--only", nargs="*", help="run only these variants")
    p.add_argument(
        "--collect", action="store_true", help="only read the curves of runs already in --out"
    )
    args = p.parse_args(argv)
    base, variants = load_variants(args.variants)
    if args.only:
        unknown = sorted(set(args.only) - set(variants))
        if unknown:
            raise SystemExit(f"unknown variants {unknown}; the file has {sorted(variants)}")
        variants = {k: v for k, v in variants.items() if k in args.only}
    out = Path(args.out)
    if args.collect:
        results = {
            name: {
                "overrides": base + ovr,
                "rc": None,
                "wall_s": float("nan"),
                "curve": read_curve(out / name),
            }
            for name, ovr in variants.items()
        }
    else:
        results = run_all(args, base, variants)
    (out / "curves.json").write_text(json.dumps(results, indent=1))
    md = summary_markdown(results)
    (out / "curves.md").write_text(md)
    plot(results, out / "curves.png")
    plot(results, out / "curves_minutes.png", x="minutes")
    print(md)
    return 0 if all(r["rc"] in (0, None) for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
