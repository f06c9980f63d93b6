"""`make demo`: simulate a small dataset if absent → train a small model → evaluate → print metrics.

A thin driver over the three Hydra entry points, each run as its own process exactly as a
user would run it, so the demo exercises the real command lines:

    python -m trackformers.simulate <demo dataset>
    python -m trackformers.train experiment=demo
    python -m trackformers.evaluate ckpt=<last checkpoint>
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table


def _run(step: str, args: list[str], console: Console) -> None:
    cmd = [sys.executable, "-m", f"trackformers.{step}", *args]
    console.rule(f"[bold]{step}[/bold]")
    console.print(" ".join(cmd[1:]), style="dim")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise SystemExit(f"demo: `{' '.join(cmd[1:])}` failed with exit code {proc.returncode}")
    console.print(f"{step} took {time.perf_counter() - t0:.0f} s", style="dim")


def _metrics_table(metrics: dict) -> Table:
    table = Table(title="trackformers demo — test events")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label in [
        ("trackml_score", "TrackML score"),
        ("dm_efficiency", "DM efficiency"),
        ("perfect_efficiency", "perfect-match efficiency"),
        ("fake_rate", "fake rate"),
        ("duplicate_rate", "duplicate rate"),
    ]:
        if key in metrics:
            table.add_row(label, f"{metrics[key]:.4f}")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/demo", help="run directory of the demo")
    parser.add_argument(
        "--data", default="data/demo", help="dataset directory (simulated if absent)"
    )
    parser.add_argument("--events", type=int, default=240, help="events to simulate")
    parser.add_argument("--experiment", default="demo", help="training experiment config")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for training")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    data = Path(args.data).resolve()
    console = Console()

    # simulate skips shards that are already complete: a second demo goes straight to training
    _run("simulate", ["process=gun", f"n_events={args.events}", f"output={data}"], console)
    train_dir = out / "train"
    train_args = [
        f"experiment={args.experiment}",
        f"data.path={data}",
        f"hydra.run.dir={train_dir}",
    ]
    _run("train", [*train_args, *args.overrides], console)
    ckpt = train_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise SystemExit(f"demo: training finished but wrote no checkpoint at {ckpt}")
    eval_dir = out / "eval"
    _run("evaluate", [f"ckpt={ckpt}", f"hydra.run.dir={eval_dir}"], console)

    metrics_file = eval_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    console.rule("[bold]result[/bold]")
    console.print(_metrics_table(metrics))
    wandb_dirs = sorted((train_dir / "wandb").glob("offline-run-*"))
    plots = sorted(eval_dir.glob("plots/*.png"))
    console.print(f"plots:       {eval_dir / 'plots'} ({len(plots)} files)")
    console.print(f"checkpoint:  {ckpt}")
    console.print(f"wandb run:   {wandb_dirs[-1] if wandb_dirs else train_dir / 'wandb'} (offline)")
    console.print(f"metrics:     {metrics_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
