"""Per-event inference latency and peak memory of a trained checkpoint on real events:

    python -m trackformers.latency CKPT DATA --out outputs/evaluate/<run>/latency.json
        [--events 10] [--repeat 2] [--device cuda] [--attention fused] [--mode predictor]
        [--cluster dbscan_window --set eps=0.1 window=512] [--precision fp16] [--compile]
        [--physics]

``--mode staged`` (default) times each stage of the eager path, ``--mode predictor`` the
``Predictor`` (CUDA graphs on a GPU); the clustering is the checkpoint's own unless
``--cluster`` (conf/cluster/<name>.yaml with ``--set`` overrides) or ``--cluster-json`` gives
one. What is measured and the JSON's keys: ``trackformers.inference.latency``.
``variant_args`` names a set of these arguments (``benchmarks/latency.py real`` runs several).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import yaml

from trackformers.checkpoint import load_checkpoint
from trackformers.cli import argument_parser
from trackformers.inference.events import iter_eval_events
from trackformers.inference.latency import measure_latency, measure_predictor_latency
from trackformers.io_atomic import write_text_atomic
from trackformers.paths import CONF_DIR

HOODS = {"exact": ["--cluster", "dbscan"], "plan": ["--cluster", "dbscan_plan"]}


def variant_args(name: str, eps: float) -> list[str]:
    """Arguments of ``trackformers.latency`` for a variant named
    ``<hood>[-<precision>][-c][-k<rows>]``: hood ``exact`` (grid DBSCAN), ``plan`` (the
    model's plan neighbourhood) or ``win<W>`` (phi window +-W); precision fp16 (default) |
    bf16 | fp32; ``-c`` compiled blocks; ``-k<rows>`` their feed-forward over that many rows
    at a time. E.g. ``plan-c-k16384``, ``plan-bf16-c``, ``win512-fp32``.

    Args:
        name: the variant name.
        eps: DBSCAN radius of the variant's clustering.

    Returns:
        The command-line arguments.
    """
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


def cluster_choice(
    name: str | None, overrides: Sequence[str] = (), as_json: str | None = None
) -> dict | None:
    """Cluster settings from conf/cluster/<name>.yaml with ``key=value`` param overrides, or
    from a JSON string; None = the checkpoint's validation clustering.

    Args:
        name: conf/cluster name (None: the checkpoint's).
        overrides: ``key=value`` params (YAML values).
        as_json: JSON of the full settings (instead of ``name``).
    """
    if name is not None and as_json is not None:
        raise ValueError("give --cluster or --cluster-json, not both")
    if as_json is not None:
        return json.loads(as_json)
    if name is None:
        if overrides:
            raise ValueError("--set needs --cluster")
        return None
    path = CONF_DIR / "cluster" / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in (CONF_DIR / "cluster").glob("*.yaml"))
        raise ValueError(f"no cluster config {path}; choose one of {names}")
    cfg = yaml.safe_load(path.read_text())
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes key=value, got {item!r}")
        cfg.setdefault("params", {})[key] = yaml.safe_load(value)
    return cfg


def main(argv=None) -> dict:
    """The command line (see the module docstring); returns the JSON written.

    Args:
        argv: arguments (None: ``sys.argv[1:]``).
    """
    ap = argument_parser("trackformers.latency", __doc__)
    ap.add_argument("ckpt", help="checkpoint or export written by trackformers.train / export")
    ap.add_argument("data", help="files / directory / glob of events (all are used)")
    ap.add_argument("--out", required=True, help="latency.json to write")
    ap.add_argument("--events", type=int, default=10, help="events timed (the first of data)")
    ap.add_argument("--repeat", type=int, default=2, help="timed passes over the events")
    ap.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda when present)")
    ap.add_argument(
        "--attention", default=None, help="swap the attention backend (the mask is kept)"
    )
    ap.add_argument("--cluster-json", default=None, help='e.g. {"method": "dbscan", ...}')
    ap.add_argument(
        "--mode",
        choices=("staged", "predictor"),
        default="staged",
        help="staged: each stage of the eager path; predictor: the Predictor (CUDA graphs)",
    )
    ap.add_argument("--compile", action="store_true", help="predictor: compiled blocks")
    ap.add_argument(
        "--cluster",
        default=None,
        help="conf/cluster/<name>.yaml (e.g. dbscan, dbscan_plan, dbscan_window)",
    )
    ap.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="cluster params overrides, e.g. eps=0.1 window=512 (YAML values)",
    )
    ap.add_argument(
        "--ffn-chunk",
        type=int,
        default=8192,
        help="predictor --compile: feed-forward rows at a time (0: all)",
    )
    ap.add_argument(
        "--precision",
        choices=("bf16", "fp16", "fp32"),
        default="fp16",
        help="forward precision on CUDA (bf16 / fp16 autocast, fp32)",
    )
    ap.add_argument(
        "--physics",
        action="store_true",
        help="predictor: also DM efficiency / fake rate of its tracks and of the "
        "staged float32 path on the same events",
    )
    ap.add_argument("--no-split", action="store_true", help="predictor: skip the stage split")
    ap.add_argument("--rounds", type=int, default=4, help="predictor: DBSCAN rounds in graph")
    ap.add_argument(
        "--no-prepare", action="store_true", help="predictor: capture buckets as events come"
    )
    args = ap.parse_args(argv)
    cfg, _ = load_checkpoint(args.ckpt)
    events = list(iter_eval_events(cfg, args.data, "all", args.events))
    cluster = cluster_choice(args.cluster, args.set, args.cluster_json)
    if args.mode == "predictor":
        res = measure_predictor_latency(
            args.ckpt,
            events,
            args.device,
            args.repeat,
            args.attention,
            cluster,
            args.compile,
            args.precision,
            not args.no_split,
            args.rounds,
            args.physics,
            not args.no_prepare,
            args.ffn_chunk,
        )
    else:
        res = measure_latency(
            args.ckpt, events, args.device, args.repeat, args.attention, cluster, args.precision
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
