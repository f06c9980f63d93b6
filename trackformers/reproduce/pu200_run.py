"""The µ = 200 GPU training run in calls of a few minutes: simulate once, train for this call's
budget on N GPUs (DDP), resume in the next call, and record the learning curve in GPU-minutes.

    python benchmarks/pu200_run.py --out $OUT --devices 4 --budget 300     # one device call
    python benchmarks/pu200_run.py --out /tmp/dry --dry                       # CPU rehearsal

One call:

1. Events: tt̄ with µ = 200 pile-up, pixel hits only, ``--n-train`` of seed 1 (training and
   validation split) and ``--n-eval`` fresh ones of seed 2, simulated on all cores
   (``python -m trackformers.simulate``; physics_run.start_sim). A data directory that holds
   a completed set (``.complete`` marker) is used as it is, so a warm machine simulates once.
2. Resume: the run directory's ``checkpoints/last.ckpt`` when the machine still has it, else
   the one of the previous call carried into ``--state`` (with its ``metrics.csv``); none:
   a fresh run.
3. Training: ``python -m trackformers.train experiment=ttbar_pu200_pixel`` with the recipe
   (hit filter ``model=contrastive_filter loss=contrastive_filter``, signal anchors, ``topk``
   hard negatives), ``trainer=ddp trainer.devices=N`` for N > 1, ``max_time`` = the
   checkpoint's training time + ``--budget``, ``max_steps`` = ``--max-steps`` (the length of
   the cosine schedule over all calls). The checkpoint is written inside the last step
   (trackformers.resume.LastCheckpoint), so the next call goes on with the next batch.
4. Evaluation of last.ckpt on the seed-2 events (``python -m trackformers.evaluate``, the
   clustering tuned at the end of fit).
5. ``--out`` receives: ``state/last.ckpt`` and ``state/metrics.csv`` (carry them as
   ``--state`` into the next call), ``curve.json`` / ``curve.csv`` / ``curve.png`` (validation
   DM efficiency and fake rate against steps, wall seconds and GPU-minutes, all calls so far),
   ``eval_metrics.json``, ``summary.json`` and ``pu200_run.log``.

``--dry`` is the CPU rehearsal of the same path: 8 + 2 events, a tiny model, windowed
attention, two CPU processes under DDP (gloo), a 30 s budget.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from trackformers.checkpoint import load_checkpoint_file
from trackformers.cli import argument_parser
from trackformers.paths import REPO_ROOT
from trackformers.reproduce.physics_run import LOG, _dhms, resumed_state, say, start_sim
from trackformers.reproduce.recipe_sweep import TIME_COLUMNS, plot, read_curve

REPO = REPO_ROOT
RECIPE = [
    "experiment=ttbar_pu200_pixel",
    "model=contrastive_filter",
    "loss=contrastive_filter",
    "loss.terms.contrastive.anchors=signal",
    "loss.terms.contrastive.negatives=topk",
]
DRY = {  # the CPU rehearsal (--dry)
    "n_train": 8,
    "n_eval": 2,
    "val_events": 2,
    "budget": 30.0,
    "devices": 2,
    "accelerator": "cpu",
    "val_every": 3,
    "max_steps": 1000,
    "workers": 2,
    "override": [
        "attention=windowed",
        "model.encoder.d_model=32",
        "model.encoder.n_heads=4",
        "model.encoder.n_layers=1",
        "data.num_workers=0",
        "optim.scheduler.warmup_steps=2",
        # an untrained embedding is crowded: DBSCAN at the run's eps (0.1) is near-quadratic,
        # minutes per event on a CPU
        "validation.cluster.params.eps=0.003",
        "callbacks.tune_clustering.eps=[0.003]",
        "callbacks.tune_clustering.filter_threshold=[null]",
    ],
}
# the end-of-fit clustering tuning on µ = 200 events: a few events, a small grid (each point
# clusters every event again; the default grid of 48 points would take minutes)
TUNING = [
    "callbacks.tune_clustering.max_events=8",
    "callbacks.tune_clustering.eps=[0.05,0.1,0.15,0.2]",
    "callbacks.tune_clustering.min_samples=[2]",
    "callbacks.tune_clustering.filter_threshold=[null,0.5]",
]


def simulate(args, data: dict[str, tuple[Path, int, int]], log_file: Path) -> None:
    """Simulate the sets of ``data`` (name -> (directory, events, seed)) that are not complete,
    all at once on ``args.workers`` cores.

    Args:
        args: the command line (``workers``, process settings).
        data: name -> (directory, events, seed).
        log_file: file that receives the simulation output.
    """
    todo = {k: v for k, v in data.items() if not (v[0] / ".complete").is_file()}
    for name, (path, n, seed) in data.items():
        if name not in todo:
            say(f"{name}: {n} events of seed {seed} already in {path}")
    total = sum(n for _, n, _ in todo.values())
    procs = []
    for path, n, seed in todo.values():
        shutil.rmtree(path, ignore_errors=True)  # an incomplete set is made anew
        workers = max(1, round(args.workers * n / total))
        procs.append((start_sim(args, n, seed, path, workers, log_file), path, n))
    t0 = time.monotonic()
    for proc, path, n in procs:
        if proc.wait() != 0:
            raise RuntimeError(f"simulation of {path} failed (exit {proc.returncode}); see the log")
        (path / ".complete").write_text(f"{n}\n")
    if procs:
        say(f"simulated {total} events in {time.monotonic() - t0:.0f} s")


def find_resume(run_dir: Path, state: Path) -> Path | None:
    """The checkpoint to go on from: the run directory's, else the carried one (copied into the
    run directory together with its metrics.csv, where the CSV logger appends).

    Args:
        run_dir: the training run directory.
        state: folder of the carried last.ckpt and metrics.csv.
    """
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        return last
    if (state / "last.ckpt").is_file():
        last.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(state / "last.ckpt", last)
        if (state / "metrics.csv").is_file():
            (run_dir / "csv").mkdir(parents=True, exist_ok=True)
            shutil.copy(state / "metrics.csv", run_dir / "csv" / "metrics.csv")
        return last
    return None


def train_overrides(args, train_data: Path, run_dir: Path, max_time: float, resume: bool):
    """The trackformers.train command line of this call.

    Args:
        args: the command line.
        train_data: the training set.
        run_dir: the training run directory.
        max_time: Lightning's max_time in seconds.
        resume: resume from the run directory's last.ckpt.

    Returns:
        The Hydra overrides.
    """
    ddp = ["trainer=ddp", f"trainer.devices={args.devices}"] if args.devices > 1 else []
    return [
        *RECIPE,
        f"data.path={train_data}",
        f"data.val_fraction={args.val_events / args.n_train}",
        "data.test_fraction=0.0",
        f"hydra.run.dir={run_dir}",
        "logger=csv",
        *ddp,
        f"trainer.accelerator={args.accelerator}",
        f"trainer.max_steps={args.max_steps}",
        f'+trainer.max_time="{_dhms(max_time)}"',
        f"trainer.val_check_interval={args.val_every}",
        "trainer.check_val_every_n_epoch=null",
        "callbacks.early_stopping=null",
        "callbacks.rich_progress_bar=null",
        "trainer.log_every_n_steps=10",
        *TUNING,
        *(["ckpt_path=last"] if resume else []),
        *args.override,
    ]


def run_group(cmd: list[str], log_file: Path, timeout: float) -> int:
    """Run ``cmd`` in its own process group, output appended to ``log_file``; on timeout the
    whole group goes (the DDP ranks that Lightning started too), with SIGABRT first, on which
    Python's faulthandler writes where each process was to the log. Returns the exit status.

    Args:
        cmd: the command.
        log_file: file that receives the output.
        timeout: seconds before the group is killed.
    """
    say("$ " + " ".join(cmd))
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    with log_file.open("a") as f:
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            say(f"timeout after {timeout:.0f} s: stopping process group {proc.pid}")
            os.killpg(proc.pid, signal.SIGABRT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            rc = proc.returncode
    say(f"exit {rc}")
    return rc


def write_curve(run_dir: Path, out: Path) -> list[dict]:
    """curve.json, curve.csv and curve.png (DM and fake vs GPU-minutes) of all validations.

    Args:
        run_dir: the training run directory.
        out: folder that receives the files.

    Returns:
        The curve rows.
    """
    curve = read_curve(run_dir)
    (out / "curve.json").write_text(json.dumps(curve, indent=1))
    cols = ["step", *TIME_COLUMNS, "dm", "fake", "trackml"]
    with (out / "curve.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(curve)
    if curve:
        plot({"pu200": {"curve": curve}}, out / "curve.png", x="gpu_min")
    return curve


def main(argv=None) -> int:
    """The command line (see the module docstring).

    Args:
        argv: arguments (None: ``sys.argv[1:]``).

    Returns:
        The exit status of the call.
    """
    ap = argument_parser("trackformers.reproduce.pu200_run", __doc__)
    ap.add_argument("--out", required=True, help="folder that receives the result files")
    ap.add_argument("--devices", type=int, default=1, help="GPUs (DDP when > 1)")
    ap.add_argument("--accelerator", default="auto", help="trainer.accelerator (gpu, cpu)")
    ap.add_argument("--budget", type=float, default=300.0, help="training seconds of this call")
    ap.add_argument("--max-steps", type=int, default=10000, help="cosine schedule, all calls")
    ap.add_argument("--val-every", type=int, default=500, help="steps between validations")
    ap.add_argument("--n-train", type=int, default=1000, help="events of seed 1 (with val)")
    ap.add_argument("--val-events", type=int, default=32, help="about this many validate")
    ap.add_argument("--n-eval", type=int, default=48, help="fresh events of seed 2")
    ap.add_argument(
        "--after-train",
        type=float,
        default=240.0,
        help="seconds allowed to the training command beyond --budget (start-up, "
        "end-of-fit tuning and validation), and to the evaluation",
    )
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="simulation")
    ap.add_argument(
        "--state",
        default=str(REPO / ".resume" / "pu200"),
        help="last.ckpt + metrics.csv of the previous call",
    )
    ap.add_argument("--work", default=None, help="run and evaluation folders (outputs/pu200)")
    ap.add_argument("--override", nargs="*", default=[], help="extra trackformers.train overrides")
    ap.add_argument("--dry", action="store_true", help="CPU rehearsal (see the docstring)")
    args = ap.parse_args(argv)
    if args.dry:
        for key, value in DRY.items():
            setattr(args, key, value if key != "override" else value + args.override)
    args.process, args.pileup, args.pixel_files, args.vertex = "ttbar", 200, True, None
    tag = "pu200_dry" if args.dry else "pu200"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else REPO / "outputs" / tag
    work.mkdir(parents=True, exist_ok=True)
    log_file = work / "subprocess.log"
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ["PYTHONUNBUFFERED"] = "1"
    say(f"{os.cpu_count()} CPUs, args {vars(args)}")
    try:
        return run(args, tag, out, work, log_file)
    finally:
        (out / "pu200_run.log").write_text("\n".join(LOG) + "\n")
        if log_file.is_file():
            with (out / "pu200_run.log").open("a") as f:
                f.write("\n==== subprocess output (tail) ====\n" + log_file.read_text()[-60_000:])


def run(args, tag: str, out: Path, work: Path, log_file: Path) -> int:
    """One call: simulate what is missing, train on from the saved state, evaluate.

    Args:
        args: the command line.
        tag: name of the data and work folders (``pu200`` or ``pu200_dry``).
        out: folder that receives the result files.
        work: folder of the training run and the evaluation.
        log_file: file that receives the subprocesses' output.

    Returns:
        The exit status.
    """
    train_data = REPO / "data" / f"{tag}_seed1_n{args.n_train}"
    eval_data = REPO / "data" / f"{tag}_seed2_n{args.n_eval}"
    simulate(
        args,
        {"train": (train_data, args.n_train, 1), "eval": (eval_data, args.n_eval, 2)},
        log_file,
    )

    run_dir = work / "train"
    resume = find_resume(run_dir, Path(args.state))
    before = resumed_state(resume) if resume else {"step": 0, "elapsed_s": 0.0}
    say(f"resuming {resume}: {json.dumps(before)}" if resume else "fresh run")
    if before["step"] >= args.max_steps:
        say(f"the schedule is done ({before['step']} >= --max-steps {args.max_steps})")
    else:
        cmd = [
            sys.executable,
            "-m",
            "trackformers.train",
            *train_overrides(
                args, train_data, run_dir, before["elapsed_s"] + args.budget, resume is not None
            ),
        ]
        # start-up, the end-of-fit clustering tuning and the final validation come on top
        rc = run_group(cmd, log_file, timeout=args.budget + args.after_train)
        if rc != 0:
            raise RuntimeError(f"training failed with exit code {rc}; see the log")
    last = run_dir / "checkpoints" / "last.ckpt"
    state = out / "state"
    state.mkdir(exist_ok=True)
    shutil.copy(last, state / "last.ckpt")
    shutil.copy(run_dir / "csv" / "metrics.csv", state / "metrics.csv")
    after = resumed_state(last)
    clock = load_checkpoint_file(last).get("callbacks", {}).get("TrainClock", {})
    say(
        f"trained to step {after['step']}: {json.dumps(clock)} (trackformers.resume.TrainClock; "
        f"max_time has counted {after['elapsed_s']:.0f} s)"
    )

    eval_dir = work / "eval"
    cmd = [
        sys.executable,
        "-m",
        "trackformers.evaluate",
        f"ckpt={last}",
        f"data={eval_data}",
        "wandb.enabled=false",
        "plots=false",
        f"hydra.run.dir={eval_dir}",
    ]
    if run_group(cmd, log_file, timeout=args.after_train) != 0:
        raise RuntimeError("evaluation failed; see the log")
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    shutil.copy(eval_dir / "metrics.json", out / "eval_metrics.json")
    curve = write_curve(run_dir, out)
    summary = {
        "step": after["step"],
        **clock,
        "timer_s": after["elapsed_s"],
        "devices": args.devices,
        "validations": len(curve),
        "last_validation": curve[-1] if curve else None,
        "eval": {
            k: metrics.get(k)
            for k in (
                "dm_efficiency",
                "fake_rate",
                "perfect_efficiency",
                "trackml_score",
                "n_events",
            )
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    say(f"summary: {json.dumps(summary)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
