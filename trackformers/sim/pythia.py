"""Pythia8 physics (package ``pythia8mc``): tt, ttH(H->bb), minimum bias, with pile-up.

A :class:`PythiaSource` produces particle tables (see :mod:`trackformers.sim.detector`): the
charged final-state particles (plus photons, neutrons and K0L, which the detector simulation
follows for their interactions in the material) of one hard-scatter interaction (vertex_id 0)
plus a Poisson number of minimum-bias pile-up interactions (vertex_id 1..n), each shifted to its
own vertex drawn from the luminous region (sigma_xy, sigma_z). Decay products of long-lived
particles (K0S, Lambda, ...) start at Pythia's displaced production vertex. Pythia is
initialised once and re-seeded from ``rng`` before every event, so event i depends only on
(seed, i).

With ``library_size > 0`` pile-up is overlaid from a library of minimum-bias events generated
once: each overlay is rotated by a random phi, mirrored in z at random and moved to a fresh
vertex, so a mu = 200 event costs little more than its propagation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import awkward as ak
import numpy as np

from trackformers.sim.beamspot import vertex_widths
from trackformers.sim.detector import concat_particles, empty_particles
from trackformers.sim.particle_id import encode_particle_id

PROCESS_SETTINGS = {
    "ttbar": ["Top:gg2ttbar = on", "Top:qqbar2ttbar = on"],
    "tth": [
        "HiggsSM:gg2Httbar = on",
        "HiggsSM:qqbar2Httbar = on",
        "25:onMode = off",
        "25:onIfAny = 5",
    ],
    "minbias": ["SoftQCD:inelastic = on"],
}
_COMMON = [
    "Next:numberCount = 0",
    "Next:numberShowEvent = 0",
    "Init:showChangedSettings = off",
    "Init:showProcesses = off",
    "Init:showChangedParticleData = off",
    "Print:quiet = on",
    "Random:setSeed = on",
    "Random:seed = 1",
]


@contextlib.contextmanager
def _quiet_stdout():
    """Pythia prints its banner from C++; send fd 1 to /dev/null while it initialises."""
    try:
        fd = os.dup(1)
    except OSError:  # no real stdout (e.g. captured by a notebook kernel)
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(fd, 1)
        os.close(fd)


def pythia_cache_dir() -> Path:
    """Where Pythia initialisation tables are kept ($TRACKFORMERS_CACHE or ~/.cache)."""
    root = os.environ.get("TRACKFORMERS_CACHE") or Path.home() / ".cache" / "trackformers"
    return Path(root) / "pythia"


def _init_pythia(settings: list[str]):
    import pythia8mc

    with _quiet_stdout():
        pythia = pythia8mc.Pythia("", False)
        for s in settings:
            if not pythia.readString(s):
                raise ValueError(f"Pythia rejected the setting {s!r}")
        if not pythia.init():
            raise RuntimeError(f"Pythia failed to initialise with settings {settings}")
    return pythia


def make_pythia(process: str, e_cm: float = 14000.0, extra: list[str] | None = None):
    """An initialised ``pythia8mc.Pythia`` for ``process`` (ttbar | tth | minbias).

    The multiparton-interaction tables (about 10 s for soft QCD) are computed once per settings
    and Pythia version, stored under :func:`pythia_cache_dir`, and always read back from there,
    so every process (and every machine) starts from identical tables.

    Args:
        process: ``ttbar``, ``tth`` or ``minbias``.
        e_cm: centre-of-mass energy in GeV.
        extra: further Pythia settings (``"Key = value"`` strings).

    Returns:
        The initialised generator.
    """
    from importlib.metadata import version

    if process not in PROCESS_SETTINGS:
        raise ValueError(f"unknown Pythia process {process!r}; choose {list(PROCESS_SETTINGS)}")
    settings = [f"Beams:eCM = {float(e_cm)}", *_COMMON, *PROCESS_SETTINGS[process], *(extra or [])]
    key = hashlib.sha256(json.dumps([version("pythia8mc"), settings]).encode()).hexdigest()[:16]
    table = pythia_cache_dir() / f"mpi-{process}-{key}.cmnd"
    if not table.exists():
        table.parent.mkdir(parents=True, exist_ok=True)
        tmp = table.with_name(f"{table.name}.tmp-{os.getpid()}")
        _init_pythia(
            [
                *settings,
                "MultipartonInteractions:reuseInit = 1",
                f"MultipartonInteractions:initFile = {tmp}",
            ]
        )
        os.replace(tmp, table)
    return _init_pythia(
        [
            *settings,
            "MultipartonInteractions:reuseInit = 2",
            f"MultipartonInteractions:initFile = {table}",
        ]
    )


class _Charges:
    """pdg id -> charge, from Pythia's particle data (cached)."""

    def __init__(self, pythia):
        self._pd = pythia.particleData
        self._cache: dict[int, float] = {}

    def __call__(self, pdg: np.ndarray) -> np.ndarray:
        uniq, inv = np.unique(pdg, return_inverse=True)
        for u in uniq.tolist():
            if u not in self._cache:
                self._cache[u] = float(self._pd.charge(u))
        return np.asarray([self._cache[u] for u in uniq.tolist()])[inv]


# neutral final-state particles handed to the detector simulation, where they can make charged
# secondaries (photon conversions; nuclear interactions of neutrons and K0L); they leave no hits
TRACKED_NEUTRAL = (22, 130, 2112)


def batch_to_tables(batch, charges: _Charges, eta_max: float, pt_min: float) -> list[dict]:
    """Charged final-state particles and photons, neutrons, K0L of each event, at vertex 0.

    Args:
        batch: one ``pythia8mc`` batch of events.
        charges: pdg id -> charge look-up.
        eta_max: particles with larger abs(eta) are dropped.
        pt_min: particles with lower pT (GeV) are dropped.

    Returns:
        One particle table per event.
    """
    prt = batch.prt
    fs = prt[prt.status > 0]
    counts = ak.to_numpy(ak.num(fs))
    pdg = ak.to_numpy(ak.flatten(fs.id)).astype(np.int64)
    p = fs.p
    px, py, pz = (ak.to_numpy(ak.flatten(getattr(p, k))) for k in ("px", "py", "pz"))
    mass = ak.to_numpy(ak.flatten(fs.m))
    vp = ak.flatten(fs.vProd)
    vx, vy, vz = (ak.to_numpy(ak.fill_none(getattr(vp, k), 0.0)) for k in ("px", "py", "pz"))
    q = charges(pdg)
    pt = np.hypot(px, py)
    eta = np.arcsinh(pz / np.maximum(pt, 1e-12))
    tracked = (q != 0) | np.isin(np.abs(pdg), TRACKED_NEUTRAL)  # neutrals may interact
    keep = tracked & (pt >= pt_min) & (np.abs(eta) <= eta_max)
    cols = {
        "pdg_id": pdg,
        "vx": vx,
        "vy": vy,
        "vz": vz,
        "px": px,
        "py": py,
        "pz": pz,
        "q": q,
        "mass": mass,
    }
    event_of = np.repeat(np.arange(len(counts)), counts)
    tables = []
    for i in range(len(counts)):
        sel = keep & (event_of == i)
        t = {k: v[sel].astype(np.float64) if k != "pdg_id" else v[sel] for k, v in cols.items()}
        t["vertex_id"] = np.zeros(int(sel.sum()), np.int64)
        t["particle_id"] = np.zeros(int(sel.sum()), np.uint64)
        tables.append(t)
    return tables


def place(
    table: dict, vertex_id: int, vertex: np.ndarray, phi: float = 0.0, mirror: bool = False
) -> dict:
    """Copy of ``table`` rotated by ``phi``, optionally mirrored in z, moved to ``vertex``.

    Args:
        table: particle table at vertex 0.
        vertex_id: the vertex id given to the copy.
        vertex: (3,) vertex position in mm.
        phi: rotation about the beam axis in radians.
        mirror: mirror in z.

    Returns:
        The moved copy.
    """
    c, s = np.cos(phi), np.sin(phi)
    zs = -1.0 if mirror else 1.0
    n = len(table["px"])
    return {
        "particle_id": encode_particle_id(np.full(n, vertex_id), np.arange(n)),
        "pdg_id": table["pdg_id"],
        "vertex_id": np.full(n, vertex_id, np.int64),
        "vx": c * table["vx"] - s * table["vy"] + vertex[0],
        "vy": s * table["vx"] + c * table["vy"] + vertex[1],
        "vz": zs * table["vz"] + vertex[2],
        "px": c * table["px"] - s * table["py"],
        "py": s * table["px"] + c * table["py"],
        "pz": zs * table["pz"],
        "q": table["q"],
        "mass": table["mass"],
    }


class PythiaSource:
    """Hard scatter (``process``) + Poisson(mu) minimum-bias pile-up, as particle tables."""

    def __init__(
        self,
        process: str,
        pileup: dict | None = None,
        seed: int = 0,
        e_cm: float = 14000.0,
        eta_max: float = 4.2,
        pt_min: float = 0.15,
        settings: list[str] | None = None,
    ):
        if process not in PROCESS_SETTINGS:
            raise ValueError(f"unknown Pythia process {process!r}; choose {list(PROCESS_SETTINGS)}")
        pileup = dict(pileup or {})
        self.process, self.e_cm = process, float(e_cm)
        self.mu = float(pileup.get("mu", 0.0))
        if not self.mu >= 0:
            raise ValueError(f"pileup mu must be >= 0, got {self.mu}")
        self.sigma_xy, self.sigma_z = vertex_widths(
            {k: pileup[k] for k in ("sigma_xy", "sigma_z") if k in pileup}
        )
        self.library_size = int(pileup.get("library_size", 0))
        self.eta_max, self.pt_min = float(eta_max), float(pt_min)
        self.settings = list(settings or [])
        self.seed = int(seed)
        self._hard = self._mb = None
        self._library: list[dict] | None = None

    def provenance(self) -> dict:
        """Process, pile-up and Pythia settings and version, stored with the simulated files."""
        from importlib.metadata import version

        import pythia8mc  # noqa: F401  (version below)

        return {
            "pythia": {
                "process": self.process,
                "e_cm": self.e_cm,
                "mu": self.mu,
                "sigma_xy": self.sigma_xy,
                "sigma_z": self.sigma_z,
                "library_size": self.library_size,
                "eta_max": self.eta_max,
                "pt_min": self.pt_min,
                "settings": self.settings,
                "process_settings": PROCESS_SETTINGS[self.process],
                "pythia8mc_version": version("pythia8mc"),
            }
        }

    def _pythia(self, which: str):
        if which == "hard" and self._hard is None:
            self._hard = make_pythia(self.process, self.e_cm, self.settings)
            self._charges = _Charges(self._hard)
        if which == "minbias" and self._mb is None:
            self._mb = (
                self._hard
                if self.process == "minbias" and self._hard is not None
                else make_pythia("minbias", self.e_cm, self.settings)
            )
            self._charges = getattr(self, "_charges", None) or _Charges(self._mb)
        return self._hard if which == "hard" else self._mb

    def _generate(self, which: str, n: int, seed: int) -> list[dict]:
        if n == 0:
            return []
        pythia = self._pythia(which)
        pythia.rndm.init(int(seed % 900_000_000) + 1)
        batch = pythia.nextBatch(n, "skip")
        return batch_to_tables(batch, self._charges, self.eta_max, self.pt_min)

    def library(self) -> list[dict]:
        """The minimum-bias overlay library (generated on first use, same for every worker)."""
        if self._library is None:
            self._library = self._generate(
                "minbias",
                self.library_size,
                int(np.random.SeedSequence([self.seed, 99]).generate_state(1)[0]),
            )
        return self._library

    def _vertex(self, rng: np.random.Generator) -> np.ndarray:
        return rng.normal(0.0, [self.sigma_xy, self.sigma_xy, self.sigma_z])

    def event(self, rng: np.random.Generator, index: int = 0) -> tuple[dict, int]:
        """Particles of one event: the hard process and Poisson(mu) pile-up vertices.

        Args:
            rng: random generator of the event (vertex positions, pile-up count and picks).
            index: event index.

        Returns:
            The particle table and the number of pile-up vertices placed.
        """
        n_pu = int(rng.poisson(self.mu)) if self.mu > 0 else 0
        hard = self._generate("hard", 1, int(rng.integers(2**62)))
        tables = [place(hard[0], 0, self._vertex(rng))] if hard else []
        if n_pu and self.library_size > 0:
            lib = self.library()
            pick = rng.integers(len(lib), size=n_pu)
            phis = rng.uniform(-np.pi, np.pi, n_pu)
            mirror = rng.random(n_pu) < 0.5
            for v in range(n_pu):
                tables.append(place(lib[pick[v]], v + 1, self._vertex(rng), phis[v], mirror[v]))
        elif n_pu:
            # Pythia skips the rare failed event, so count the vertices actually placed
            pu = self._generate("minbias", n_pu, int(rng.integers(2**62)))
            for v, t in enumerate(pu):
                tables.append(place(t, v + 1, self._vertex(rng)))
            n_pu = len(pu)
        return (concat_particles(tables) if tables else empty_particles()), n_pu
