"""Simulate a dataset: ``python -m trackformers.simulate process=gun n_events=200 output=data/x``.

Events are written as shards ``shard_00000.root`` ... of ``events_per_shard`` events each. A
shard is a pure function of (settings, seed, shard index): shards already present with the same
settings are skipped, so an interrupted run is completed by re-running the same command, and
the same seed gives byte-identical files. Shards run in ``workers`` parallel processes; on a
cluster, run disjoint ``shards=[i,j,...]`` subsets as array jobs.

On resume an existing shard counts as done only when every one of its events reads back; a
truncated or damaged shard is simulated again (logged with the reason). Ctrl-C and ``kill``
(SIGTERM) both remove the hidden temporary directory of the shard being written.

The settings live in :mod:`trackformers.sim.settings`, one shard in
:mod:`trackformers.sim.shards`, the parallel writing of a dataset in
:mod:`trackformers.sim.dataset`.
"""

from __future__ import annotations

import os
from pathlib import Path

from trackformers.config_checks import check_simulate_config
from trackformers.paths import CONF_DIR
from trackformers.signals import sigterm_unwinds
from trackformers.sim.dataset import write_dataset
from trackformers.sim.settings import plain_settings, register_simulate_groups


def run(cfg) -> list[Path]:
    """Simulate the dataset described by ``cfg`` (a dict or DictConfig); return shard paths.

    The config is checked before any file is touched; ``kill`` (SIGTERM) cleans up the
    temporary shard as Ctrl-C does.

    Args:
        cfg: the simulate config.
    """
    with sigterm_unwinds():
        check_simulate_config(cfg)  # before any file is touched
        return write_dataset(plain_settings(cfg))


def main() -> None:
    """``python -m trackformers.simulate key=value ...`` (Hydra, conf/simulate.yaml)."""
    import hydra

    register_simulate_groups()

    @hydra.main(config_path=str(CONF_DIR), config_name="simulate", version_base="1.3")
    def _main(cfg) -> None:
        paths = run(cfg)
        print(f"{len(paths)} shard(s) in {Path(cfg.output).resolve()}")

    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    _main()


if __name__ == "__main__":
    main()
