"""Where the repository's parts live, relative to the package: the Hydra configs (``conf/``)
and the repository root (datasets under ``data/``, runs under ``outputs/``)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"
