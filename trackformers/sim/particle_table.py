"""Re-simulate existing truth: particle tables from TrackML ``particles.csv`` files.

Required columns: particle_id, vx, vy, vz, px, py, pz, q; optional: nhits (ignored, recomputed),
particle_type (pdg id; sets the mass), vertex_id. ``path`` is one CSV file (one event) or a
directory whose ``*particles.csv`` files are events in sorted order. All files are checked when
the source is built: a missing column or a NaN raises an error naming file, column and row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

REQUIRED_COLUMNS = ("particle_id", "vx", "vy", "vz", "px", "py", "pz", "q")
MASSES = {
    11: 0.000511,
    13: 0.105658,
    211: 0.139570,
    321: 0.493677,
    2212: 0.938272,
    3112: 1.197449,
    3222: 1.18937,
    3312: 1.32171,
    3334: 1.67245,
}
DEFAULT_MASS = MASSES[211]  # charged pion when the species is unknown


class ParticleTableError(ValueError):
    """A particle table is missing columns or holds invalid values."""


def read_particles_csv(path: str | Path) -> dict[str, np.ndarray]:
    """Read and check one TrackML particles.csv; return a particle table (see detector.py).

    Args:
        path: the CSV file.

    Returns:
        The particle table.

    Raises:
        ParticleTableError: an unreadable file, a missing column or a bad value, named.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ParticleTableError(f"{path}: cannot read particle table: {err}") from err
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ParticleTableError(
            f"{path}: missing column(s) {missing}; required {list(REQUIRED_COLUMNS)}"
        )
    cols = [c for c in (*REQUIRED_COLUMNS, "particle_type", "vertex_id") if c in df.columns]
    for c in cols:
        values = pd.to_numeric(df[c], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=np.float64))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ParticleTableError(
                f"{path}: column '{c}' has an invalid value {str(df[c].iloc[row])!r} "
                f"at data row {row} (line {row + 2})"
            )
        df[c] = values
    if (df["particle_id"] <= 0).any():
        row = int(np.flatnonzero((df["particle_id"] <= 0).to_numpy())[0])
        raise ParticleTableError(
            f"{path}: column 'particle_id' must be > 0 (0 means noise), "
            f"row {row} has {df['particle_id'].iloc[row]}"
        )
    if df["particle_id"].duplicated().any():
        row = int(np.flatnonzero(df["particle_id"].duplicated().to_numpy())[0])
        raise ParticleTableError(
            f"{path}: duplicated particle_id {df['particle_id'].iloc[row]} at row {row}"
        )
    n = len(df)
    pdg = (
        df["particle_type"].to_numpy(np.int64)
        if "particle_type" in df.columns
        else np.zeros(n, np.int64)
    )
    mass = np.asarray([MASSES.get(abs(int(p)), DEFAULT_MASS) for p in pdg], np.float64)
    vid = df["vertex_id"].to_numpy(np.int64) if "vertex_id" in df.columns else np.zeros(n, np.int64)
    table = {k: df[k].to_numpy(np.float64) for k in ("vx", "vy", "vz", "px", "py", "pz", "q")}
    table.update(
        particle_id=df["particle_id"].to_numpy(np.uint64), pdg_id=pdg, vertex_id=vid, mass=mass
    )
    return table


class ParticleTableSource:
    """Events from particles.csv files, event i = i-th file (sorted)."""

    def __init__(self, path: str | None = None, **unused):
        if unused:
            raise ValueError(f"process 'particles' got unknown setting(s) {sorted(unused)}")
        if not path:
            raise ValueError("process 'particles' needs process.path (a particles.csv or a dir)")
        p = Path(path)
        if p.is_dir():
            self.files = sorted(p.glob("*particles.csv"))
        elif p.is_file():
            self.files = [p]
        else:
            raise FileNotFoundError(f"particle table {p} does not exist")
        if not self.files:
            raise FileNotFoundError(f"no *particles.csv file in {p}")
        self.tables = [read_particles_csv(f) for f in self.files]  # checked before any work
        self.path = p

    @property
    def n_available(self) -> int:
        """Number of events the tables hold."""
        return len(self.files)

    def provenance(self) -> dict:
        """Path and files of the tables, stored with the simulated files."""
        return {"particles": {"path": str(self.path), "files": [f.name for f in self.files]}}

    def event(self, rng: np.random.Generator, index: int) -> tuple[dict, int]:
        """Particles of event ``index`` as read from its table.

        Args:
            rng: unused (the table is the event).
            index: event index, one table per event.

        Returns:
            A copy of the table and its pile-up vertex count.

        Raises:
            IndexError: the tables hold fewer events.
        """
        if index >= len(self.tables):
            raise IndexError(f"event {index} requested but {self.path} holds {len(self.tables)}")
        t = self.tables[index]
        return {k: v.copy() for k, v in t.items()}, int(len(np.unique(t["vertex_id"])) - 1)
