"""Shareable checkpoint: model weights only, in bf16 (or fp16), plus the run config and summary.

    python -m trackformers.export outputs/<run>/checkpoints/best.ckpt [--out F] [--dtype fp16]

The export keeps the layout ``trackformers.evaluate`` reads (``state_dict`` with ``model.*``
keys and ``trackformers.config``), so ``python -m trackformers.evaluate ckpt=model_bf16.pt``
works on it directly; the optimizer state, loss buffers and callbacks' state are dropped. The
training run's ``summary.json`` (training time, steps, device) travels inside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from trackformers.checkpoint import load_checkpoint
from trackformers.cli import argument_parser
from trackformers.results.table import training_summary

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def export_checkpoint(ckpt: str | Path, out: str | Path | None = None, dtype: str = "bf16") -> Path:
    """Write the weights-only export of ``ckpt``; default path ``<ckpt dir>/model_bf16.pt``.

    Args:
        ckpt: checkpoint written by trackformers.train.
        out: output file (None: ``model_<dtype>.pt`` beside ckpt).
        dtype: ``bf16``, ``fp16`` or ``fp32``.

    Returns:
        The path written.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    ckpt = Path(ckpt)
    cfg, state = load_checkpoint(ckpt)
    weights = {
        k.replace("._orig_mod", ""): (v.to(DTYPES[dtype]) if v.is_floating_point() else v)
        for k, v in state.items()
        if k.startswith("model.")
    }
    if not weights:
        raise ValueError(f"checkpoint {ckpt} has no 'model.*' weights")
    out = Path(out) if out is not None else ckpt.parent / f"model_{dtype}.pt"
    payload = {
        "state_dict": weights,
        "trackformers": {
            "config": cfg,
            "summary": json.loads(json.dumps(training_summary(ckpt, None), default=str)),
            "source": str(ckpt),
            "dtype": dtype,
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(out)
    return out


def main(argv=None) -> Path:
    """The command line (see the module docstring).

    Args:
        argv: arguments (None: ``sys.argv[1:]``).

    Returns:
        The path of the export.
    """
    ap = argument_parser("trackformers.export", __doc__)
    ap.add_argument("ckpt", help="a checkpoint written by trackformers.train")
    ap.add_argument(
        "--out", default=None, help="file to write (default: model_<dtype>.pt beside ckpt)"
    )
    ap.add_argument("--dtype", default="bf16", choices=sorted(DTYPES), help="weights' dtype")
    args = ap.parse_args(argv)
    out = export_checkpoint(args.ckpt, args.out, args.dtype)
    print(f"{out} ({out.stat().st_size / 2**20:.2f} MiB)")
    return out


if __name__ == "__main__":
    raise SystemExit("the command is python -m trackformers.export (see --help)")
