"""The physics results table from evaluation directories:

    python -m trackformers.results outputs/evaluate/<run> [more dirs ...] --markdown [--breakdowns]
        [--json rows.json] [--out table.md] [--links-relative-to DIR]

Each directory is what ``python -m trackformers.evaluate`` wrote (``metrics.json``,
``particles.csv``, ``plots/``), optionally with ``latency.json`` (per-event inference latency
and peak memory measured on the device, ``trackformers.inference.latency.measure_latency``).
The evaluated checkpoint (``metrics.json["ckpt"]``) gives the model size and, through the
training run's ``summary.json`` next to it (or the summary stored in an exported checkpoint),
the training time, steps and device.

A row is only made for the table's definition of reconstructable particles: pT > 0.9 GeV and
abs(eta) < 4 (``TABLE_PT_MIN``, ``TABLE_ABS_ETA_MAX``); an evaluation with another definition
is refused, naming the file and the values. Efficiencies and the fake rate carry standard
errors from the spread between events (at least the binomial one;
``trackformers.metrics.ratio_err``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from trackformers.checkpoint import load_checkpoint_file
from trackformers.cli import argument_parser
from trackformers.io_atomic import write_text_atomic
from trackformers.metrics import binomial_err, ratio_err

TABLE_PT_MIN = 0.9  # GeV
TABLE_ABS_ETA_MAX = 4.0
# the project's goals (README): DM efficiency (and fake rate) by pile-up
GOAL_HIGH_PU = {"dm_efficiency": 0.986, "fake_rate": 0.008}  # mu = 200 (HEPTv2, TrackML pixel)
GOAL_LOW_PU = {"dm_efficiency": 0.99}  # mu = 0, 20
HIGH_PU = 100  # mean pile-up from which the mu = 200 goal applies


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def _find_ckpt(metrics_file: Path, value) -> Path:
    if not value:
        raise ValueError(f"{metrics_file}: field 'ckpt' is empty")
    p = Path(value)
    for cand in (p, metrics_file.parent / p):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"{metrics_file}: field 'ckpt' = {value!r} names no existing file")


def training_summary(ckpt: Path, stored: Mapping | None) -> dict:
    """summary.json of the training run that wrote ``ckpt`` (run/checkpoints/x.ckpt), or the
    summary an exported checkpoint carries; {} when neither exists.

    Args:
        ckpt: the evaluated checkpoint.
        stored: the summary the checkpoint carries, if any.
    """
    for d in (ckpt.parent.parent, ckpt.parent):
        f = d / "summary.json"
        if f.is_file():
            return _read_json(f)
    return dict(stored or {})


def model_size(state_dict: Mapping) -> int:
    """Number of model parameters in a checkpoint's state_dict (``model.*`` entries).

    Args:
        state_dict: the checkpoint's state_dict.

    Raises:
        ValueError: no ``model.*`` weights.
    """
    n = sum(int(v.numel()) for k, v in state_dict.items() if k.startswith("model."))
    if n == 0:
        raise ValueError("checkpoint state_dict has no 'model.*' weights")
    return n


def check_definition(metrics_file: Path, reco: Mapping) -> None:
    """Refuse an evaluation whose reconstructable definition is not the table's.

    Args:
        metrics_file: the metrics.json (named in the error).
        reco: its ``reconstructable`` settings.

    Raises:
        ValueError: pt_min or abs_eta_max missing or not the table's.
    """
    pt, eta = reco.get("pt_min"), reco.get("abs_eta_max")
    if (
        pt is None
        or eta is None
        or not (math.isclose(pt, TABLE_PT_MIN) and math.isclose(eta, TABLE_ABS_ETA_MAX))
    ):
        raise ValueError(
            f"{metrics_file}: reconstructable pt_min={pt}, abs_eta_max={eta}; the results table "
            f"is for pt_min={TABLE_PT_MIN}, abs_eta_max={TABLE_ABS_ETA_MAX} (re-run "
            "trackformers.evaluate with reconstructable.pt_min=0.9 reconstructable.abs_eta_max=4)"
        )


def loss_reasons(particles: pd.DataFrame) -> dict:
    """Why reconstructable particles were missed (fractions of all reconstructable ones):
    no candidate track holds any of their hits ("unassigned"), the best candidate holds at
    most half of their hits ("split"), or it holds more but is mostly other hits ("merged").

    Args:
        particles: the evaluation's particles.csv table.

    Returns:
        ``unassigned``, ``split``, ``merged`` -> fraction.
    """
    reco = particles[particles["reconstructable"].astype(bool)]
    miss = reco[~reco["dm"].astype(bool)]
    n = max(len(reco), 1)
    none = miss["best_track"] < 0
    split = ~none & (miss["best_completeness"] <= 0.5)
    merged = ~none & ~split
    return {
        "n_reconstructable": int(len(reco)),
        "missed": len(miss) / n,
        "unassigned": int(none.sum()) / n,
        "split": int(split.sum()) / n,
        "merged": int(merged.sum()) / n,
    }


def hit_count_breakdown(particles: pd.DataFrame, column: str = "nhits") -> list[dict]:
    """DM efficiency by the particle's number of (evaluated) hits: 3, 4, 5, 6, >= 7.

    Args:
        particles: the evaluation's particles.csv table.
        column: the hit-count column.

    Returns:
        One dict per bin: bin, n, rate, err.
    """
    reco = particles[particles["reconstructable"].astype(bool)]
    rows = []
    for lo, hi in ((3, 4), (4, 5), (5, 6), (6, 7), (7, 10**9)):
        sel = reco[(reco[column] >= lo) & (reco[column] < hi)]
        k, n = int(sel["dm"].sum()), len(sel)
        label = f"{lo}" if hi == lo + 1 else f">={lo}"
        rows.append(
            {"bin": label, "n": n, "rate": k / n if n else math.nan, "err": binomial_err(k, n)}
        )
    return rows


def load_row(eval_dir: str | Path) -> dict:
    """One table row (a flat dict) from an evaluation directory; see the module docstring.

    Args:
        eval_dir: a directory written by trackformers.evaluate.

    Raises:
        FileNotFoundError: metrics.json or the evaluated checkpoint is missing.
        KeyError: metrics.json lacks a field the table needs.
        ValueError: invalid JSON, or the reconstructable definition is not the table's.
    """
    eval_dir = Path(eval_dir)
    mfile = eval_dir / "metrics.json"
    m = _read_json(mfile)
    for key in (
        "reconstructable",
        "n_reconstructable",
        "n_dm",
        "n_perfect",
        "n_candidates",
        "n_fake",
        "ckpt",
        "per_event",
    ):
        if key not in m:
            raise KeyError(f"{mfile} lacks field {key!r} (not written by trackformers.evaluate?)")
    check_definition(mfile, m["reconstructable"])
    ckpt = _find_ckpt(mfile, m["ckpt"])
    raw = load_checkpoint_file(ckpt)
    tf = raw.get("trackformers") or {}
    cfg = tf.get("config") or (raw.get("hyper_parameters") or {}).get("config") or {}
    summary = training_summary(ckpt, tf.get("summary"))
    n_reco = m["n_reconstructable"]
    pileups = [e.get("pileup", -1) for e in m["per_event"]]
    features = ((cfg.get("data") or {}).get("features")) or {}
    attention = ((cfg.get("attention") or {}).get("_target_") or "?").rsplit(".", 1)[-1]
    enc = ((cfg.get("model") or {}).get("encoder")) or {}
    export = ckpt.parent / "model_bf16.pt"
    row = {
        "eval_dir": str(eval_dir),
        "experiment": cfg.get("name", "?"),
        "pileup": float(np.mean(pileups)) if pileups else math.nan,
        "detector": "pixel" if features.get("volumes") == "pixel" else "full",
        "n_events": int(m["n_events"]),
        "n_reconstructable": int(n_reco),
        "dm_efficiency": m["dm_efficiency"],
        "dm_efficiency_err": ratio_err(m["per_event"], "n_dm", "n_reconstructable"),
        "perfect_efficiency": m["perfect_efficiency"],
        "perfect_efficiency_err": ratio_err(m["per_event"], "n_perfect", "n_reconstructable"),
        "fake_rate": m["fake_rate"],
        "fake_rate_err": ratio_err(m["per_event"], "n_fake", "n_candidates"),
        "duplicate_rate": m["duplicate_rate"],
        "trackml_score": m["trackml_score"],
        "cluster": m.get("cluster"),
        "model": f"{attention}, d{enc.get('d_model', '?')} L{enc.get('n_layers', '?')}",
        "params": model_size(raw["state_dict"]),
        "ckpt": str(ckpt),
        "ckpt_mb": ckpt.stat().st_size / 2**20,
        "export_mb": export.stat().st_size / 2**20 if export.is_file() else None,
        "train_seconds": summary.get("train_seconds"),
        "train_steps": summary.get("global_step"),
        "train_device": summary.get("device"),
        "plots": {k: m.get("plots", {}).get(k) for k in ("efficiency_vs_pt", "efficiency_vs_eta")},
        "breakdowns": m.get("breakdowns", {}),
    }
    lat_file = eval_dir / "latency.json"
    lat = _read_json(lat_file) if lat_file.is_file() else {}
    row.update(
        {
            "latency_ms": lat.get("median_ms"),
            "peak_gib": lat.get("peak_gib"),
            "latency_device": lat.get("device"),
        }
    )
    pfile = eval_dir / "particles.csv"
    if pfile.is_file():
        particles = pd.read_csv(pfile)
        row["loss_reasons"] = loss_reasons(particles)
        row["breakdowns"] = {**row["breakdowns"], "nhits": hit_count_breakdown(particles)}
    row["goal"] = goal_status(row)
    return row


def goal_status(row: Mapping) -> str:
    """Goal check: "met" or "NOT met (...)" against the project's goal for the row's pile-up.

    Args:
        row: a table row.
    """
    high = row["pileup"] >= HIGH_PU
    goal = GOAL_HIGH_PU if high else GOAL_LOW_PU
    short = []
    if not row["dm_efficiency"] >= goal["dm_efficiency"]:
        short.append(f"DM {100 * row['dm_efficiency']:.1f} % < {100 * goal['dm_efficiency']:.1f} %")
    if "fake_rate" in goal and not row["fake_rate"] <= goal["fake_rate"]:
        short.append(f"fake {100 * row['fake_rate']:.2f} % > {100 * goal['fake_rate']:.1f} %")
    return "met" if not short else "NOT met (" + "; ".join(short) + ")"


def reproduction(table: dict, other: dict, seed: int, n_sigma: float = 3.0) -> str:
    """Whether the evaluation on another seed's events reproduces the table row: DM and
    perfect efficiency and fake rate each within ``n_sigma`` combined standard errors of the
    two rows (``ratio_err``: the event-to-event spread, at least binomial).

    Args:
        table: the table row.
        other: the row of the other seed's events.
        seed: that seed.
        n_sigma: tolerance in combined standard errors.

    Returns:
        A sentence with the verdict and the differences.
    """
    parts, ok = [], True
    for key in ("dm_efficiency", "perfect_efficiency", "fake_rate"):
        a, b = table[key], other[key]
        err = math.hypot(table[f"{key}_err"], other[f"{key}_err"])
        pull = (b - a) / err if err > 0 else (0.0 if a == b else math.inf)
        ok &= abs(pull) <= n_sigma
        parts.append(f"{key} {100 * a:.2f} vs {100 * b:.2f} % ({pull:+.1f} sigma)")
    verdict = "reproduces" if ok else "does NOT reproduce"
    return (
        f"fresh events of seed {seed} ({other['n_events']} events): {verdict} the table "
        f"within {n_sigma:g} sigma: " + "; ".join(parts)
    )


# ---- formatting ------------------------------------------------------------------------------
def _pct(v, err=None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    s = f"{100 * v:.2f}"
    if err is not None and not math.isnan(err):
        s += f" ± {100 * err:.2f}"
    return s


def _num(v, fmt: str) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _link(path, rel_to: Path | None, text: str) -> str:
    if not path:
        return "–"
    target = os.path.relpath(path, rel_to) if rel_to is not None else str(path)
    return f"[{text}]({target})"


COLUMNS = (
    "experiment",
    "µ",
    "events",
    "DM eff %",
    "perfect eff %",
    "fake %",
    "duplicate %",
    "TrackML score",
    "latency ms/event",
    "peak GiB",
    "params",
    "ckpt MB (export MB)",
    "training",
    "device",
    "plots",
    "goal",
)


def markdown_table(rows: Sequence[Mapping], rel_to: Path | None = None) -> str:
    """The results table in markdown, one line per row.

    Args:
        rows: rows of :func:`load_row`.
        rel_to: make plot links relative to this directory.
    """
    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        size = _num(r["ckpt_mb"], ".1f")
        if r.get("export_mb") is not None:
            size += f" ({r['export_mb']:.1f})"
        steps = r.get("train_steps")
        training = (
            f"{_num(r.get('train_seconds'), '.0f')} s, {steps} steps" if steps is not None else "–"
        )
        plots = ", ".join(
            _link(r["plots"].get(k), rel_to, name)
            for k, name in (("efficiency_vs_pt", "eff vs pT"), ("efficiency_vs_eta", "eff vs η"))
        )
        cells = [
            f"{r['experiment']} ({r['model']}, {r['detector']})",
            _num(r["pileup"], ".0f"),
            str(r["n_events"]),
            _pct(r["dm_efficiency"], r["dm_efficiency_err"]),
            _pct(r["perfect_efficiency"], r["perfect_efficiency_err"]),
            _pct(r["fake_rate"], r["fake_rate_err"]),
            _pct(r["duplicate_rate"]),
            _num(r["trackml_score"], ".4f"),
            _num(r.get("latency_ms"), ".2f"),
            _num(r.get("peak_gib"), ".3f"),
            f"{r['params'] / 1e6:.2f} M",
            size,
            training,
            r.get("train_device") or r.get("latency_device") or "–",
            plots,
            r["goal"],
        ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def markdown_breakdowns(row: Mapping) -> str:
    """Where the efficiency is lost: DM efficiency by pT, eta, region, hit count; miss reasons.

    Args:
        row: a row of :func:`load_row` (with its breakdowns).
    """
    lines = [f"DM efficiency of {row['experiment']} (µ = {row['pileup']:.0f}) by bin:", ""]
    for by, title in (
        ("pt", "pT [GeV]"),
        ("eta", "η"),
        ("region", "region"),
        ("nhits", "hits of the particle"),
    ):
        tab = row["breakdowns"].get(by)
        if not tab:
            continue
        recs = tab if isinstance(tab, list) else pd.DataFrame(tab).to_dict("records")
        recs = [t for t in recs if t["n"]]
        lines.append(f"| {title} | " + " | ".join(str(t["bin"]) for t in recs) + " |")
        lines.append("|---|" + "---|" * len(recs))
        lines.append("| DM eff % | " + " | ".join(_pct(t["rate"]) for t in recs) + " |")
        lines.append("| particles | " + " | ".join(str(int(t["n"])) for t in recs) + " |")
        lines.append("")
    why = row.get("loss_reasons")
    if why:
        lines.append(
            f"Missed {100 * why['missed']:.2f} % of {why['n_reconstructable']} reconstructable "
            f"particles: unassigned (no candidate track holds a hit) {100 * why['unassigned']:.2f}"
            f" %, split (best track holds ≤ half of the hits) {100 * why['split']:.2f} %, "
            f"merged (best track mostly other hits) {100 * why['merged']:.2f} %."
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """The command line (see the module docstring).

    Args:
        argv: arguments (None: ``sys.argv[1:]``).

    Returns:
        The rows of the evaluation directories.
    """
    ap = argument_parser("trackformers.results", __doc__)
    ap.add_argument("eval_dirs", nargs="+", help="directories written by trackformers.evaluate")
    ap.add_argument("--markdown", action="store_true", help="print the markdown table")
    ap.add_argument("--breakdowns", action="store_true", help="also where efficiency is lost")
    ap.add_argument("--json", default=None, help="write the rows as JSON here")
    ap.add_argument("--out", default=None, help="write the markdown here")
    ap.add_argument("--links-relative-to", default=None, help="plot links relative to this dir")
    args = ap.parse_args(argv)
    rows = [load_row(d) for d in args.eval_dirs]
    rel = Path(args.links_relative_to).resolve() if args.links_relative_to else None
    text = markdown_table(rows, rel)
    if args.breakdowns:
        text += "\n\n" + "\n\n".join(markdown_breakdowns(r) for r in rows)
    if args.markdown or not args.json:
        print(text)
    if args.out:
        write_text_atomic(args.out, text + "\n")
    if args.json:
        write_text_atomic(args.json, json.dumps(rows, indent=1, default=str))
    return rows


if __name__ == "__main__":
    raise SystemExit("the command is python -m trackformers.results (see --help)")
