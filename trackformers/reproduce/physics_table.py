"""One table from several physics runs (the results rows and the ablation).

    python benchmarks/physics_table.py docs/results/<runs>/* [--out table.md]

Each run folder is what benchmarks/physics_run.py brought back (and docs/results keeps):
``rows.json`` (trackformers.results rows: the table row first, then the other seeds' rows),
``metrics.json`` and ``eval_seed*/metrics.json`` (per-event counts), ``compile_check.json``
(the measured step time) and ``train_config.yaml`` (the training's Hydra config). The
errors are recomputed from the per-event counts (``trackformers.metrics.ratio_err``: the event
spread, at least binomial), so every row carries the same error estimate whatever wrote it.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from trackformers.cli import argument_parser
from trackformers.metrics import ratio_err
from trackformers.results.table import goal_status, reproduction

HEADS = {
    "ContrastiveHead": "contrastive",
    "ClassifierHead": "EncCla (argmax)",
    "RegressorHead": "EncReg (DBSCAN on params)",
    "JointHead": "joint (argmax)",
}
COUNTS = {
    "dm_efficiency": ("n_dm", "n_reconstructable"),
    "perfect_efficiency": ("n_perfect", "n_reconstructable"),
    "fake_rate": ("n_fake", "n_candidates"),
}


def _json(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (not a physics_run folder?)")
    return json.loads(path.read_text())


def _with_errors(row: dict, metrics: dict) -> dict:
    row = dict(row)
    for key, (k, n) in COUNTS.items():
        row[f"{key}_err"] = ratio_err(metrics["per_event"], k, n)
    return row


def run_row(folder: Path) -> dict:
    """The table row of one run folder, plus training, head and reproduction columns.

    Args:
        folder: a physics_run output folder.
    """
    rows = _json(folder / "rows.json")
    if not rows:
        raise ValueError(f"{folder / 'rows.json'} holds no row")
    row = _with_errors(rows[0], _json(folder / "metrics.json"))
    others = sorted(folder.glob("eval_seed*/metrics.json"))
    if len(others) != len(rows) - 1:
        raise ValueError(
            f"{folder}: {len(rows) - 1} further rows but {len(others)} eval_seed*/metrics.json"
        )
    row["reproduction"] = [
        reproduction(row, _with_errors(r, _json(f)), int(f.parent.name.removeprefix("eval_seed")))
        for r, f in zip(rows[1:], others, strict=True)
    ]
    check = _json(folder / "compile_check.json")
    tried = check["tried"][-1]
    row["step_ms"] = 1e3 * tried["compiled_step_s" if check["train_compile"] else "eager_step_s"]
    cfg = yaml.safe_load((folder / "train_config.yaml").read_text())  # the training's config
    head = cfg["model"]["head"]["_target_"].rsplit(".", 1)[-1]
    row["head"] = HEADS.get(head, head)
    row["run"] = folder.name
    row["goal"] = goal_status(row)
    return row


def _pm(row: dict, key: str) -> str:
    return f"{100 * row[key]:.1f} ± {100 * row[f'{key}_err']:.1f}"


def markdown(rows: list[dict]) -> str:
    """The markdown table of physics_run rows, one line per run.

    Args:
        rows: rows of :func:`run_row`.

    Returns:
        The table.
    """
    head = (
        "| run | µ | head | attention | events | DM eff % | perfect % | fake % | dup % | "
        "TrackML | training | step ms | latency ms | peak GiB | seed-3 check |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        repro = (
            "; ".join(
                ("ok" if "reproduces" in s and "NOT" not in s else "FAILS")
                for s in r["reproduction"]
            )
            or "–"
        )
        lat = f"{r['latency_ms']:.1f}" if r.get("latency_ms") is not None else "–"
        peak = f"{r['peak_gib']:.2f}" if r.get("peak_gib") is not None else "–"
        lines.append(
            f"| {r['run']} | {r['pileup']:.0f} | {r['head']} | {r['model']} | {r['n_events']} | "
            f"{_pm(r, 'dm_efficiency')} | {_pm(r, 'perfect_efficiency')} | "
            f"{_pm(r, 'fake_rate')} | {100 * r['duplicate_rate']:.1f} | "
            f"{r['trackml_score']:.3f} | {r['train_seconds']:.0f} s, {r['train_steps']} steps | "
            f"{r['step_ms']:.0f} | {lat} | {peak} | {repro} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    """The command line (see the module docstring).

    Args:
        argv: arguments (None: ``sys.argv[1:]``).

    Returns:
        The row of each run folder.
    """
    ap = argument_parser("trackformers.reproduce.physics_table", __doc__)
    ap.add_argument("folders", nargs="+", help="physics_run folders (rows.json, metrics.json...)")
    ap.add_argument("--out", default=None, help="write the markdown here")
    args = ap.parse_args(argv)
    rows = [run_row(Path(f)) for f in args.folders]
    text = markdown(rows)
    for r in rows:
        text += "".join(f"\n- {r['run']}: {line}" for line in r["reproduction"])
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return rows


if __name__ == "__main__":
    main()
