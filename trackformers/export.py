"""Shareable checkpoint: model weights only, in bf16 (or fp16), plus the run config and summary.

    python -m trackformers.export outputs/<run>/checkpoints/best.ckpt [--out F] [--dtype fp16]

Entry point of ``trackformers.results.export`` (the export and its layout are described there).
"""

from trackformers.results.export import main

if __name__ == "__main__":
    main()
