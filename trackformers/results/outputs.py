"""What an evaluation writes into its directory: metrics of every event and of the set,
per-particle and per-track tables, efficiency breakdowns and plots (the files that
``trackformers.results.table`` reads back), and the report printed at the end.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from trackformers import viz
from trackformers.io_atomic import write_csv_atomic
from trackformers.metrics import aggregate, efficiency_breakdowns, evaluate_event, track_table

SCORE_KEYS = (
    "trackml_score",
    "dm_efficiency",
    "perfect_efficiency",
    "lhc_efficiency",
    "fake_rate",
    "duplicate_rate",
)


def write_outputs(
    out_dir: Path,
    stream,
    rec,
    rules,
    state: dict,
    plots: bool = True,
    sources: Mapping | None = None,
) -> dict:
    """Consume (event, labels) pairs: metrics, tables, breakdowns and plots under out_dir.

    Every file is written under a temporary name and renamed (trackformers.io_atomic); an
    event the metrics refuse raises naming its file (from ``sources``: event_id -> file) and id.

    Args:
        out_dir: the evaluation directory.
        stream: (event, labels) pairs (``inference.infer_stream``).
        rec: the reconstructable definition.
        rules: the matching rules.
        state: the stream's state (clustering settings and a sample batch).
        plots: also draw the plots.
        sources: event_id -> file, for errors.

    Returns:
        The metrics.json dict.
    """
    per_event, parts, tracks, first = [], [], [], None
    for ev, lab in stream:
        first = first or (ev, lab)
        try:
            m, p = evaluate_event(ev, lab, rec, rules)
            t = track_table(ev, lab, rules)
        except (ValueError, KeyError) as err:
            eid = int(np.asarray(ev.get("event_id", -1)))
            where = (sources or {}).get(eid, "<unknown file>")
            what = "" if str(err).startswith(f"event {eid}:") else f"event {eid}: "
            raise ValueError(f"{where}: {what}{err}") from err
        t.insert(0, "event_id", m["event_id"])
        per_event.append(m)
        parts.append(p)
        tracks.append(t)
    particles = pd.concat(parts, ignore_index=True)
    track_tab = pd.concat(tracks, ignore_index=True)
    metrics = aggregate(per_event)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"particles": out_dir / "particles.csv", "tracks": out_dir / "tracks.csv"}
    write_csv_atomic(files["particles"], particles)
    write_csv_atomic(files["tracks"], track_tab)
    bd_dir = out_dir / "breakdowns"
    bd_dir.mkdir(exist_ok=True)
    breakdowns = efficiency_breakdowns(particles)
    for name, tab in breakdowns.items():
        write_csv_atomic(bd_dir / f"dm_efficiency_vs_{name}.csv", tab)
    figures = {
        "efficiency_vs_pt": lambda: viz.plot_efficiency(particles, "pt"),
        "efficiency_vs_eta": lambda: viz.plot_efficiency(particles, "eta"),
        "fake_rate_vs_eta": lambda: viz.plot_fake_rate(track_tab),
        "efficiency_by_region": lambda: viz.plot_breakdown_bars(particles, "region"),
        "efficiency_by_pileup": lambda: viz.plot_breakdown_bars(particles, "pileup"),
        "event_display": lambda: viz.event_display(*first),
    }
    batch, plan = state["sample"]
    if not plots:
        figures = {}
    elif batch.particle_id is not None:
        figures["attention"] = lambda: viz.plot_attention(batch.coords, plan, batch.particle_id)
    pl = {
        name: viz.save(make(), out_dir / "plots" / f"{name}.png") for name, make in figures.items()
    }
    return {
        "metrics": metrics,
        "per_event": per_event,
        "files": {k: str(v) for k, v in files.items()},
        "plots": pl,
        "breakdowns": {k: v.to_dict("list") for k, v in breakdowns.items()},
    }


def print_report(result: dict, out_dir: Path, wandb_dir: str | None) -> None:
    """The metrics table and where the outputs went, on the console.

    Args:
        result: the metrics.json dict.
        out_dir: the evaluation directory.
        wandb_dir: the wandb run directory (None: not logged).
    """
    t = Table(title=f"test metrics ({result['metrics']['n_events']} events)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k in SCORE_KEYS:
        v = result["metrics"][k]
        t.add_row(k.replace("_", " "), "nan" if math.isnan(v) else f"{v:.4f}")
    c = Console()
    c.print(t)
    cl = result.get("cluster")
    if cl:
        c.print(
            f"clustering: {cl.get('method')} {cl.get('params')} filter_threshold="
            f"{cl.get('filter_threshold')} (from {cl.get('source')})"
        )
    c.print(f"metrics:   {out_dir / 'metrics.json'}")
    c.print(f"particles: {result['files']['particles']}")
    c.print(f"plots:     {out_dir / 'plots'} ({len(result['plots'])} files)")
    c.print(f"wandb:     {wandb_dir or 'disabled'}")
