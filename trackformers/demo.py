"""`make demo`: simulate tt-bar events, train a small model, evaluate on fresh events.

A thin driver over the three Hydra entry points, each run as its own process exactly as a
user would run it, so the demo exercises the real command lines:

    python -m trackformers.simulate process=ttbar pileup=0 detector.keep_volumes=[7,8,9] ...
    python -m trackformers.train experiment=demo
    python -m trackformers.evaluate ckpt=<last checkpoint> data=<fresh events of another seed>

The events are tt-bar without pile-up, pixel detector only (TrackML geometry and beam spot);
the training set uses seed 1, the evaluation set seed 2 (events the model never saw).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from trackformers.cli import argument_parser


def _run(step: str, args: list[str], console: Console) -> None:
    cmd = [sys.executable, "-m", f"trackformers.{step}", *args]
    console.rule(f"[bold]{step}[/bold]")
    console.print(" ".join(cmd[1:]), style="dim")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise SystemExit(f"demo: `{' '.join(cmd[1:])}` failed with exit code {proc.returncode}")
    console.print(f"{step} took {time.perf_counter() - t0:.0f} s", style="dim")


METRICS = [  # key, label, what it means
    (
        "dm_efficiency",
        "DM efficiency",
        "reconstructable particles (pT > 0.9 GeV, |eta| < 4, >= 3 pixel hits) with a track holding "
        "> 50 % of their hits and made > 50 % of them",
    ),
    ("fake_rate", "fake rate", "tracks (>= 3 hits) whose hits are not > 50 % of one particle"),
    (
        "perfect_efficiency",
        "perfect-match efficiency",
        "reconstructable particles whose track is exactly their hits",
    ),
    ("trackml_score", "TrackML score", "weighted share of hits correctly assigned (Kaggle metric)"),
    ("duplicate_rate", "duplicate rate", "share of matched tracks beyond the first per particle"),
]


def _metrics_table(metrics: dict, n_events: int | None) -> Table:
    title = "trackformers demo — fresh tt-bar events (seed 2)"
    if n_events:
        title += f", {n_events} events"
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("meaning", style="dim")
    for key, label, meaning in METRICS:
        if key in metrics:
            table.add_row(label, f"{metrics[key]:.4f}", meaning)
    return table


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring).

    Args:
        argv: arguments (None: ``sys.argv[1:]``).

    Returns:
        0 when every step succeeded.
    """
    parser = argument_parser("trackformers.demo", __doc__)
    parser.add_argument("--out", default="outputs/demo", help="run directory of the demo")
    parser.add_argument(
        "--data", default="data/demo", help="dataset directory (simulated if absent)"
    )
    parser.add_argument("--events", type=int, default=400, help="training events to simulate")
    parser.add_argument("--eval-events", type=int, default=50, help="evaluation events (seed 2)")
    parser.add_argument("--experiment", default="demo", help="training experiment config")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for training")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    data = Path(args.data).resolve()
    console = Console()

    # simulate skips shards that are already complete: a second demo goes straight to training
    sim = [
        "process=ttbar",
        "pileup=0",
        "detector.keep_volumes=[7,8,9]",
        "workers=2",
        "progress=false",
    ]
    _run("simulate", [*sim, f"n_events={args.events}", "seed=1", f"output={data}"], console)
    eval_data = data.with_name(data.name + "_eval")
    _run(
        "simulate", [*sim, f"n_events={args.eval_events}", "seed=2", f"output={eval_data}"], console
    )
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
    _run("evaluate", [f"ckpt={ckpt}", f"data={eval_data}", f"hydra.run.dir={eval_dir}"], console)

    metrics_file = eval_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    console.rule("[bold]result[/bold]")
    console.print(_metrics_table(metrics, metrics.get("n_events")))
    wandb_dirs = sorted((train_dir / "wandb").glob("offline-run-*"))
    plots = sorted(eval_dir.glob("plots/*.png"))
    console.print(f"plots:       {eval_dir / 'plots'} ({len(plots)} files)")
    console.print(f"checkpoint:  {ckpt}")
    console.print(f"wandb run:   {wandb_dirs[-1] if wandb_dirs else train_dir / 'wandb'} (offline)")
    console.print(f"metrics:     {metrics_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
