"""One GPU call that produces a physics result row: simulate, compile check, train, export,
evaluate, latency.

    python benchmarks/physics_run.py --out $OUT                       # the GPU run (defaults)
    python benchmarks/physics_run.py --out /tmp/rehearsal --tiny      # CPU rehearsal, minutes

Within ``--budget`` seconds of wall clock:

1. Simulation of the training set (tt̄, ``--pileup``, seed 1) and of fresh evaluation events
   (seed 2) starts in the background on all CPU cores (``python -m trackformers.simulate``).
2. Compile check (GPU, ``compile_check``): the experiment's model and loss on one synthetic
   event of ``--check-hits`` hits, eager and with ``compile_encoder``: loss and per-parameter
   gradients compared under bf16 autocast, and a full training step (forward, backward, AdamW)
   timed both ways. Falls back to the next backend of ``--attention`` if one fails.
3. Training: ``python -m trackformers.train experiment=... compile=true`` (false if the check
   found eager and compiled unequal) with the wall-clock rest of the budget as
   ``trainer.max_time`` and ``trainer.max_steps`` sized from the measured step time (so the
   cosine schedule ends with the budget).
4. The final checkpoint (last.ckpt) is exported (``--export-dtype``, fp32 by default;
   trackformers.export) and the export, the file one shares, is what gets evaluated: the
   clustering is the run's own (validation.cluster: argmax for a classifier, else DBSCAN on the
   embedding or the regressed parameters) with the DBSCAN radius chosen on the run's validation
   split (best DM efficiency at fake rate <= 0.8 %, else best DM - fake); then
   ``python -m trackformers.evaluate`` runs on the fresh events of each ``--eval-seeds`` seed
   (the first makes the table row, each further one is checked to reproduce it within 3 sigma),
   the per-event latency is measured (trackformers.latency) and the rows are collected
   (trackformers.results).
5. $OUT receives at most 8 files: physics_run.log, compile_check.json, metrics.json,
   results.md, rows.json, summary.json, model_<dtype>.pt (or last.ckpt with ``--return-ckpt``),
   plots.tar.gz (plots, breakdowns, CSV logs, latency.json, other seeds' metrics).

Several runs on one machine (one per GPU, benchmarks/physics_multi.sh) each take a ``--tag``:
their work and data folders are suffixed with it. ``--train-seconds`` fixes the training time
(the equal budget of an ablation).

Training longer than one call (the device runs a command for at most 10 minutes): return the
full checkpoint with ``--return-ckpt``, carry it into the next call (an ignored folder of the
repo, e.g. ``.resume/``) and pass ``--resume .resume/last.ckpt`` with the same experiment and
overrides. The same events are simulated again (same seeds, byte-reproducible), training goes on
from the checkpoint's step, optimizer and data position for another budget (``max_steps`` and
``max_time`` extended by this call's share; the cosine schedule is re-stretched over the new
total, a warm restart), then evaluation as above.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import torch

from trackformers.bench import device_name
from trackformers.checkpoint import load_checkpoint, load_checkpoint_file
from trackformers.cli import argument_parser
from trackformers.evaluate import run as evaluate
from trackformers.inference.events import iter_eval_events
from trackformers.inference.latency import measure_latency
from trackformers.paths import REPO_ROOT as REPO
from trackformers.reproduce.compile_check import compile_check
from trackformers.results.export import export_checkpoint
from trackformers.results.table import main as results
from trackformers.results.table import reproduction

T0 = time.monotonic()
LOG: list[str] = []


def say(msg: str) -> None:
    """Print a line stamped with the seconds since start and keep it for the log file.

    Args:
        msg: the message.
    """
    line = f"[{time.monotonic() - T0:6.1f} s] {msg}"
    print(line, flush=True)
    LOG.append(line)


def run_cmd(cmd: list[str], log_file: Path, timeout: float | None = None) -> int:
    """Run a command in the repository, its output appended to a log file.

    Args:
        cmd: the command.
        log_file: file that receives stdout and stderr.
        timeout: seconds before the command is killed (None: no limit).

    Returns:
        The exit status.
    """
    say("$ " + " ".join(cmd))
    with log_file.open("a") as f:
        proc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    say(f"exit {proc.returncode}")
    return proc.returncode


def start_sim(args, n: int, seed: int, out: Path, workers: int, log_file: Path):
    """Start ``python -m trackformers.simulate`` in the background.

    Args:
        args: the command line (process, pile-up, pixel files, vertex).
        n: events to simulate.
        seed: simulation seed.
        out: output directory of the shards.
        workers: simulation processes (one shard each).
        log_file: file that receives the output.

    Returns:
        The running ``subprocess.Popen``.
    """
    per = max(1, -(-n // workers))
    cmd = [
        sys.executable,
        "-m",
        "trackformers.simulate",
        f"process={args.process}",
        f"pileup={args.pileup}",
        f"n_events={n}",
        f"seed={seed}",
        f"workers={workers}",
        f"events_per_shard={per}",
        f"output={out}",
        "progress=false",
    ]
    if args.pixel_files:
        cmd.append("detector.keep_volumes=[7,8,9]")
    if args.vertex:
        cmd.append(f"vertex={args.vertex}")
    say("$ " + " ".join(cmd) + " &")
    return subprocess.Popen(cmd, cwd=REPO, stdout=log_file.open("a"), stderr=subprocess.STDOUT)


# ---- training budget ---------------------------------------------------------------------------
def training_steps(seconds: float, step_s: float, startup: float, fixed: bool) -> int:
    """max_steps that fill ``seconds`` at the measured step time (x 1.3: validations inside
    fit, data stalls). With a fixed training time (``--train-seconds``) the seconds are
    Lightning's max_time, which counts from the training start, so no start-up allowance comes
    off them; otherwise they are wall-clock seconds that the start-up shares.

    Args:
        seconds: the training budget.
        step_s: measured seconds per step.
        startup: start-up allowance in seconds.
        fixed: ``seconds`` is a fixed training time.

    Returns:
        The step count, at least 10.
    """
    usable = seconds if fixed else seconds - startup
    return max(10, int(usable / (1.3 * step_s)))


def resumed_state(ckpt: Path) -> dict:
    """Step, timed training seconds and warm-up steps of a checkpoint to resume from.

    Args:
        ckpt: a full training checkpoint (with optimizer state).

    Raises:
        FileNotFoundError: no file at ``ckpt``.
        ValueError: a weights-only export.
    """
    if not ckpt.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {ckpt}")
    state = load_checkpoint_file(ckpt)
    if "optimizer_states" not in state:
        raise ValueError(
            f"--resume: {ckpt} has no optimizer state (a weights-only export?); "
            "resume from the last.ckpt that --return-ckpt brings back"
        )
    elapsed = 0.0
    for key, cb in state.get("callbacks", {}).items():
        if "Timer" in key:
            elapsed = float(cb.get("time_elapsed", {}).get("train", 0.0))
    cfg, _ = load_checkpoint(ckpt)
    warmup = int(cfg["optim"]["scheduler"]["warmup_steps"])
    return {"step": int(state["global_step"]), "elapsed_s": elapsed, "warmup_steps": warmup}


def _dhms(seconds: float) -> str:
    """Lightning's max_time string DD:HH:MM:SS."""
    s = int(seconds)
    return f"{s // 86400:02d}:{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


# ---- choice of the clustering radius on the validation split ---------------------------------
def left(args) -> float:
    """Seconds left of the budget.

    Args:
        args: the command line (``budget``).
    """
    return args.budget - (time.monotonic() - T0)


def run_clustering(cfg: dict) -> dict:
    """The run's own clustering (validation.cluster of its config) without the radius:
    argmax for a classifier, DBSCAN on the embedding or the regressed parameters otherwise.

    Args:
        cfg: the run config.
    """
    val = (cfg.get("validation") or {}).get("cluster") or {}
    method, key = val.get("method", "dbscan"), val.get("output_key", "embedding")
    if method == "argmax":
        return {"method": "argmax", "input": key or "logits", "params": {}}
    if method not in ("dbscan", "dbscan_cpu"):
        raise ValueError(
            f"validation.cluster.method {method!r}: physics_run scans the DBSCAN "
            "radius, so it takes dbscan or argmax runs"
        )
    return {"method": "dbscan", "input": key, "params": {"min_samples": 2}}


def choose_cluster(args, cfg: dict, ckpt: Path, work: Path) -> tuple[dict, list[dict]]:
    """The run's clustering; for DBSCAN the radius with the best DM efficiency at fake rate
    <= 0.8 % on the validation split (else the best DM - fake).

    Args:
        args: the command line (radii, scan events, precision).
        cfg: the run config.
        ckpt: the evaluated checkpoint.
        work: folder of the scan's evaluations.

    Returns:
        The chosen clustering and one row per radius scanned.
    """
    base = run_clustering(cfg)
    if base["method"] == "argmax":
        return base, []
    scan = []
    for eps in sorted(args.eps):  # small radii first: they are the cheap ones
        if scan and left(args) < args.after_scan:
            say(f"eps scan stopped at eps={eps}: {left(args):.0f} s left")
            break
        cluster = {**base, "params": {**base["params"], "eps": eps}}
        m = evaluate(
            {
                "ckpt": str(ckpt),
                "split": "val",
                "max_events": args.eps_events,
                "cluster": cluster,
                "wandb": {"enabled": False},
                "plots": False,
                "precision": args.precision,
                "output_dir": str(work / f"eps_{eps}"),
            }
        )
        scan.append(
            {
                "eps": eps,
                "dm_efficiency": m["dm_efficiency"],
                "fake_rate": m["fake_rate"],
                "trackml_score": m["trackml_score"],
                "n_events": m["n_events"],
            }
        )
        say(f"val eps={eps}: {scan[-1]}")
    ok = [s for s in scan if s["fake_rate"] <= 0.008]
    best = (
        max(ok, key=lambda s: s["dm_efficiency"])
        if ok
        else max(scan, key=lambda s: s["dm_efficiency"] - s["fake_rate"])
    )
    return {**base, "params": {**base["params"], "eps": best["eps"]}}, scan


def main(argv=None) -> int:
    """The command line (see the module docstring).

    Args:
        argv: arguments (None: ``sys.argv[1:]``).

    Returns:
        0 when the row was made.
    """
    ap = argument_parser("trackformers.reproduce.physics_run", __doc__)
    ap.add_argument("--out", required=True, help="folder that receives the result files")
    ap.add_argument("--budget", type=float, default=530.0, help="wall seconds for everything")
    ap.add_argument("--experiment", default="ttbar_pu200_pixel", help="training experiment config")
    ap.add_argument(
        "--attention",
        nargs="+",
        default=["fused", "flex"],
        help="backends to try in order (the first whose compile check runs trains)",
    )
    ap.add_argument("--process", default="ttbar", help="simulated process")
    ap.add_argument("--pileup", type=int, default=200, help="mean pile-up of the simulation")
    ap.add_argument(
        "--pixel-files",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="simulate the pixel volumes (7, 8, 9) only",
    )
    ap.add_argument(
        "--vertex",
        default=None,
        choices=("trackml", "hllhc"),
        help="beam spot of the simulation (default: simulate's, TrackML)",
    )
    ap.add_argument("--n-train", type=int, default=600, help="training events (seed 1)")
    ap.add_argument("--n-eval", type=int, default=24, help="fresh events per evaluation seed")
    ap.add_argument(
        "--workers",
        type=int,
        default=max(1, (os.cpu_count() or 2) - 2),
        help="simulation processes of the training set",
    )
    ap.add_argument(
        "--check-hits",
        type=int,
        default=None,
        help="hits of the compile check's event, whose step time sizes max_steps "
        "(default: min(60000, data.max_tokens), about one batch)",
    )
    ap.add_argument(
        "--check-events",
        type=int,
        default=1,
        help="events the check's hits are split into (small events pack "
        "many to a batch: 64 at mu = 0): its step is then a training step",
    )
    ap.add_argument("--check-warmup", type=int, default=2, help="untimed steps of the check")
    ap.add_argument("--check-steps", type=int, default=8, help="timed steps of the check")
    ap.add_argument(
        "--loss-rtol", type=float, default=1e-2, help="eager vs compiled loss: relative tolerance"
    )
    ap.add_argument(
        "--grad-rtol",
        type=float,
        default=5e-2,
        help="eager vs compiled gradients: relative L2 tolerance of the worst parameter",
    )
    ap.add_argument("--reserve", type=float, default=150.0, help="seconds kept for evaluation")
    ap.add_argument("--startup", type=float, default=60.0, help="training start-up allowance")
    ap.add_argument("--after-scan", type=float, default=75.0, help="seconds kept after the scan")
    ap.add_argument(
        "--eps",
        type=float,
        nargs="+",
        default=[0.05, 0.1, 0.15, 0.25],
        help="DBSCAN radii scanned on the validation split",
    )
    ap.add_argument("--eps-events", type=int, default=6, help="validation events of the scan")
    ap.add_argument("--latency-events", type=int, default=8, help="events of the latency")
    ap.add_argument("--model-override", nargs="*", default=[], help="Hydra overrides (model)")
    ap.add_argument("--train-override", nargs="*", default=[], help="extra training overrides")
    ap.add_argument("--tiny", action="store_true", help="CPU rehearsal sizes")
    ap.add_argument(
        "--precision",
        choices=("bf16", "fp16", "fp32"),
        default="fp16",
        help="forward of the eps scan, the evaluation and the latency",
    )
    ap.add_argument("--resume", default=None, help="last.ckpt of an earlier call to go on from")
    ap.add_argument(
        "--return-ckpt",
        action="store_true",
        help="bring back last.ckpt (for --resume) instead of the export",
    )
    ap.add_argument(
        "--tag",
        default="",
        help="suffix of this run's work and data folders, so "
        "that runs on several GPUs of one machine do not collide",
    )
    ap.add_argument(
        "--train-seconds",
        type=float,
        default=None,
        help="fixed training time (equal budget across an ablation); default: what "
        "the budget leaves",
    )
    ap.add_argument(
        "--eval-seeds",
        type=int,
        nargs="+",
        default=[2],
        help="fresh evaluation sets; the first makes the table row, the others "
        "check that it reproduces",
    )
    ap.add_argument(
        "--export-dtype",
        choices=("bf16", "fp16", "fp32"),
        default="fp32",
        help="weights of the shared export, which is what gets evaluated",
    )
    args = ap.parse_args(argv)
    if args.tag and not args.tag.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"--tag must be letters, digits, '_' or '-', got {args.tag!r}")
    if args.check_events < 1:
        raise ValueError(f"--check-events must be >= 1, got {args.check_events}")
    if len(set(args.eval_seeds)) != len(args.eval_seeds) or 1 in args.eval_seeds:
        raise ValueError(
            f"--eval-seeds must be distinct and not the training seed 1: {args.eval_seeds}"
        )
    if args.tiny:
        args.pileup, args.n_train, args.n_eval, args.check_hits = 0, 40, 6, 400
        args.experiment, args.attention = "ttbar_pu0", ["dense"]
        args.check_warmup, args.check_steps, args.eps, args.eps_events = 1, 2, [0.1, 0.25], 3
        args.latency_events, args.reserve, args.startup = 3, 60.0, 20.0
        args.model_override = [
            "model.encoder.d_model=32",
            "model.encoder.n_layers=1",
            "model.encoder.n_heads=4",
            *args.model_override,
        ]
        args.train_override = ["data.num_workers=0", "data.max_tokens=3000", *args.train_override]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = REPO / "outputs" / ("physics_" + args.tag if args.tag else "physics")
    if args.resume and Path(args.resume).resolve().is_relative_to(work.resolve()):
        raise ValueError(
            f"--resume {args.resume} lies in {work}, which this run clears first; "
            "copy it elsewhere (e.g. .resume/)"
        )
    args.resume_state = resumed_state(Path(args.resume)) if args.resume else None  # checked now
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log_file = work / "subprocess.log"
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ["PYTHONUNBUFFERED"] = "1"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    say(
        f"device {device} {device_name(device) if device.type == 'cuda' else ''}, "
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, args {vars(args)}"
    )
    try:
        return _main(args, out, work, log_file, device)
    finally:
        collect(out, work, args.return_ckpt, args.export_dtype)
        (out / "physics_run.log").write_text("\n".join(LOG) + "\n")
        if log_file.is_file():  # the tail of the subprocesses' output
            tail = log_file.read_text()[-60_000:]
            with (out / "physics_run.log").open("a") as f:
                f.write("\n==== subprocess output (tail) ====\n" + tail)


def _main(args, out: Path, work: Path, log_file: Path, device: torch.device) -> int:
    tag = f"_{args.tag}" if args.tag else ""
    train_data = REPO / "data" / f"physics_pu{args.pileup}{tag}"
    eval_sets = {
        s: REPO / "data" / f"physics_pu{args.pileup}_eval{s}{tag}" for s in args.eval_seeds
    }
    for d in (train_data, *eval_sets.values()):
        shutil.rmtree(d, ignore_errors=True)
    n_eval_workers = max(1, min(4, args.n_eval // 4))
    sims = [start_sim(args, args.n_train, 1, train_data, args.workers, log_file)] + [
        start_sim(args, args.n_eval, s, d, n_eval_workers, log_file) for s, d in eval_sets.items()
    ]

    def wait_sims():
        if all(p.returncode is not None for p in sims):
            return
        for p in sims:
            if p.wait() != 0:
                raise RuntimeError(f"simulation failed (exit {p.returncode}); see the log")
        say(f"simulated {args.n_train} + {len(eval_sets)} x {args.n_eval} events")

    # (a) compile check, while the CPUs simulate; its step timing after the simulation
    check, attention = {"tried": []}, None
    for backend in args.attention:
        try:
            res = compile_check(args, backend, device, wait_sims, say)
            check["tried"].append(res)
            say(f"compile check {backend}: {json.dumps(res)}")
            attention = backend
            break
        except Exception as err:  # noqa: BLE001  (recorded; the next backend is tried)
            check["tried"].append({"attention": backend, "error": f"{type(err).__name__}: {err}"})
            say(f"compile check {backend} failed: {type(err).__name__}: {err}")
    if attention is None:
        raise RuntimeError(f"no attention backend of {args.attention} ran: {check['tried']}")
    result = check["tried"][-1]
    use_compile = bool(result["equal_within_bf16"])
    check.update(attention=attention, train_compile=use_compile)
    (out / "compile_check.json").write_text(json.dumps(check, indent=1))
    if device.type == "cuda":
        torch.cuda.empty_cache()

    wait_sims()  # (b) the events (done already unless every backend failed early)

    # (c) training within the rest of the budget
    step_s = result["compiled_step_s" if use_compile else "eager_step_s"]
    budget = args.budget - (time.monotonic() - T0) - args.reserve
    if args.train_seconds is not None:  # equal budget across the runs of an ablation
        if args.train_seconds > budget:
            say(
                f"WARNING: --train-seconds {args.train_seconds:.0f} exceeds the {budget:.0f} s "
                "the budget leaves; the evaluation may not finish"
            )
        budget = args.train_seconds
    steps = training_steps(budget, step_s, args.startup, fixed=args.train_seconds is not None)
    if args.tiny:
        steps = min(steps, 30)
    val_every = max(5, steps // 2)
    run_dir = work / "train"
    warmup, total, max_time, resume = max(2, min(500, steps // 10)), steps, budget, []
    if args.resume:  # go on from the checkpoint: this call's steps and time come on top
        before = args.resume_state
        say(f"resuming {args.resume}: {json.dumps(before)}")
        warmup, total = before["warmup_steps"], before["step"] + steps
        max_time = before["elapsed_s"] + budget
        resume = [f"ckpt_path={Path(args.resume).resolve()}"]
    overrides = [
        f"experiment={args.experiment}",
        f"attention={attention}",
        f"compile={use_compile}",
        f"data.path={train_data}",
        "logger=csv",
        f"hydra.run.dir={run_dir}",
        f"trainer.max_steps={total}",
        f'+trainer.max_time="{_dhms(max_time)}"',
        f"trainer.val_check_interval={val_every}",
        "+trainer.limit_val_batches=8",
        f"optim.scheduler.warmup_steps={warmup}",
        "callbacks.rich_progress_bar=null",
        "trainer.log_every_n_steps=25",
        *resume,
        *args.model_override,
        *args.train_override,
    ]
    say(f"training: {budget:.0f} s budget, step {step_s:.3f} s -> {steps} steps (to {total})")
    rc = run_cmd(
        [sys.executable, "-m", "trackformers.train", *overrides], log_file, timeout=budget + 120
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    if rc != 0 and not last.is_file():
        raise RuntimeError(f"training failed with exit code {rc}; see the log")
    if rc != 0:  # e.g. after fit, in the summary: the model is there, evaluate it anyway
        say(f"WARNING: training exited with {rc} after writing {last}; evaluating that")
    if (run_dir / "summary.json").is_file():
        say(f"summary: {(run_dir / 'summary.json').read_text()}")
    # the final model (end of the cosine schedule); best.ckpt only knows the validations inside
    # fit, not the final one that trackformers.train runs after it
    ckpt = last

    # the shared export is what the table evaluates: the numbers belong to the file one shares
    export = export_checkpoint(ckpt, dtype=args.export_dtype)
    say(f"export {export} {export.stat().st_size / 2**20:.2f} MiB")
    cfg, _ = load_checkpoint(export)

    # (d) evaluation on fresh events with the radius chosen on the validation split
    cluster, scan = choose_cluster(args, cfg, export, work / "eps")
    (work / "eps_scan.json").write_text(json.dumps({"chosen": cluster, "scan": scan}, indent=1))
    eval_dirs = []
    for i, (seed, data) in enumerate(eval_sets.items()):
        eval_dir = work / ("eval" if i == 0 else f"eval_seed{seed}")
        cmd = [
            sys.executable,
            "-m",
            "trackformers.evaluate",
            f"ckpt={export}",
            f"data={data}",
            f"cluster={cluster['method']}",
            f"cluster.input={cluster['input']}",
            *[f"cluster.params.{k}={v}" for k, v in cluster["params"].items()],
            "wandb.enabled=false",
            f"precision={args.precision}",
            f"plots={i == 0}",
            f"hydra.run.dir={eval_dir}",
        ]
        rc = run_cmd(cmd, log_file, timeout=max(30.0, left(args) - 25))
        if rc != 0:
            raise RuntimeError(f"evaluation on seed {seed} failed with exit code {rc}; see the log")
        eval_dirs.append(eval_dir)

    events = list(
        iter_eval_events(cfg, str(eval_sets[args.eval_seeds[0]]), "all", args.latency_events)
    )
    lat = measure_latency(export, events, device, repeat=2, cluster=cluster, amp=args.precision)
    (eval_dirs[0] / "latency.json").write_text(json.dumps(lat, indent=1))
    say(f"latency: {json.dumps(lat)}")
    rows = results(
        [
            *map(str, eval_dirs),
            "--markdown",
            "--breakdowns",
            "--json",
            str(out / "rows.json"),
            "--out",
            str(out / "results.md"),
            "--links-relative-to",
            str(work),
        ]
    )
    if len(rows) > 1:
        pairs = zip(rows[1:], args.eval_seeds[1:], strict=True)
        lines = [reproduction(rows[0], r, s) for r, s in pairs]
        for line in lines:
            say(line)
        with (out / "results.md").open("a") as f:
            f.write("\n" + "\n".join(f"- {line}" for line in lines) + "\n")

    say(f"done, {left(args):.0f} s of the budget left")
    return 0


def collect(out: Path, work: Path, return_ckpt: bool = False, dtype: str = "fp32") -> None:
    """(e) Whatever exists of the files that come back (also after a failure).

    Args:
        out: folder that receives the files.
        work: the run's work folder.
        return_ckpt: bring back last.ckpt instead of the export.
        dtype: dtype of the export brought back.
    """
    run_dir, eval_dir = work / "train", work / "eval"
    model = "last.ckpt" if return_ckpt else f"model_{dtype}.pt"
    for src, name in (
        (run_dir / "summary.json", "summary.json"),
        (eval_dir / "metrics.json", "metrics.json"),
        (run_dir / "checkpoints" / model, model),
    ):
        if src.is_file():
            shutil.copy(src, out / name)
    with tarfile.open(out / "plots.tar.gz", "w:gz") as tar:
        for src, arc in (
            (eval_dir / "plots", "eval/plots"),
            (eval_dir / "breakdowns", "eval/breakdowns"),
            (eval_dir / "latency.json", "eval/latency.json"),
            (work / "eps_scan.json", "eval/eps_scan.json"),
            (run_dir / "csv", "train/csv"),
            (run_dir / "plots", "train/plots"),
            (run_dir / ".hydra", "train/hydra"),
            *(
                (d / "metrics.json", f"{d.name}/metrics.json")
                for d in sorted(work.glob("eval_seed*"))
            ),
        ):
            if src.exists():
                tar.add(src, arcname=arc)
    say(f"files in {out}: {sorted(p.name for p in out.iterdir())}")


if __name__ == "__main__":
    sys.exit(main())
