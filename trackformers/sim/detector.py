"""Fast detector simulation: particles in, a native-format event out.

:class:`DetectorSim` propagates a particle table (:mod:`trackformers.sim.propagate`), digitises
the crossings (module ids, smearing by pitch/sqrt(12) in the module's local frame, noise hits,
the cells of every hit from :mod:`trackformers.sim.clusters`),
adds the second hit of crossings where neighbouring modules overlap (in phi; along z in the
barrel), computes TrackML
weights and returns the in-memory event ``dict[str, np.ndarray]`` keyed by the schema names.

A particle table is a dict of equal-length arrays: particle_id (uint64), pdg_id, vertex_id,
vx, vy, vz (mm), px, py, pz (GeV), q, mass (GeV).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numba
import numpy as np

from trackformers.data import schema
from trackformers.sim.clusters import event_clusters
from trackformers.sim.geometry import (
    CYLINDER,
    Geometry,
    load_geometry,
    module_ids,
    overlap_side,
    phi_binning,
    z_overlap_side,
)
from trackformers.sim.interactions import transport
from trackformers.sim.noise import NOISE_SPREADS, noise_hits
from trackformers.sim.weights import trackml_weights

PARTICLE_TABLE_KEYS = (
    "particle_id",
    "pdg_id",
    "vertex_id",
    "vx",
    "vy",
    "vz",
    "px",
    "py",
    "pz",
    "q",
    "mass",
)


@dataclass
class DetectorConfig:
    """Settings of the fast simulation (all exposed in conf/simulate.yaml under ``detector``)."""

    geometry: str | None = None  # path of a geometry YAML; None = TrackML
    efficiency: float = 0.99  # probability that a crossing of a sensitive surface leaves a hit
    scattering: bool = True  # Highland multiple scattering at every crossing
    energy_loss: bool = True  # ionisation (and mean bremsstrahlung for electrons)
    smearing: bool = True  # pitch/sqrt(12) in the module frame
    noise_fraction: float = 0.0  # noise hits per particle hit (Poisson), spread by area;
    # EventFactory sets TrackML's rate for physics processes (trackformers.sim.noise)
    noise_spread: str = "area"  # area | module | channel (trackformers.sim.noise)
    p_min: float = 0.2  # GeV: particles below are not simulated (Fatras pMin) or stop
    max_crossings: int = 200  # per particle (loopers)
    max_hits: int = 100  # per particle
    # soft particles and secondaries as in TrackML / ACTS Fatras (sim/propagate.py,
    # sim/interactions.py): path limit in helix turns (ACTS loop protection default 0.5; 0 =
    # off), photon conversions (off: the ACTS Fatras that simulated TrackML had none, see
    # sim/interactions.py), inelastic nuclear interactions (lambda_I / X0 of silicon, scaled
    # per species and momentum as Fatras parametrises it)
    loop_fraction: float = 0.5
    conversions: bool = False
    nuclear_interactions: bool = True
    lambda_over_x0: float = 4.965
    nuclear_per_species: bool = True
    secondary_p_min: float = 0.05  # GeV: lighter secondaries are not listed (below p_min: no hits)
    max_generations: int = 2  # secondaries of secondaries ... up to this generation
    keep_volumes: list[int] | None = None  # e.g. [7, 8, 9]: write pixel hits only (all
    # material is still simulated)
    clusters: bool = True  # cells per hit and their summary (trackformers.sim.clusters)

    def check(self) -> None:
        """Raise ValueError naming the first ``detector.*`` setting out of range."""
        if not 0.0 <= self.efficiency <= 1.0:
            raise ValueError(f"detector.efficiency must be in [0, 1], got {self.efficiency}")
        if self.noise_fraction < 0:
            raise ValueError(f"detector.noise_fraction must be >= 0, got {self.noise_fraction}")
        if self.noise_spread not in NOISE_SPREADS:
            raise ValueError(
                f"detector.noise_spread must be one of {NOISE_SPREADS}, got {self.noise_spread!r}"
            )
        if self.max_crossings < 1 or self.max_hits < 1:
            raise ValueError("detector.max_crossings and detector.max_hits must be >= 1")
        if not self.loop_fraction >= 0:
            raise ValueError(
                f"detector.loop_fraction must be >= 0 (0 = off), got {self.loop_fraction}"
            )
        if not self.lambda_over_x0 > 0 or self.secondary_p_min < 0 or self.max_generations < 0:
            raise ValueError(
                "detector.lambda_over_x0 must be > 0, detector.secondary_p_min and "
                f"detector.max_generations >= 0, got {self.lambda_over_x0}, "
                f"{self.secondary_p_min}, {self.max_generations}"
            )


@numba.njit(cache=True)
def _smear_in_module_frame(pos, surf, gu, gv, sin_c, cos_c, kind, g_pos, g_lo, g_hi):
    """Positions ``pos`` (n, 3) moved by ``gu`` along the module's u axis (-sin, cos, 0) and
    ``gv`` along v (z in the barrel, radial on disks), then put back on the layer: barrel
    hits on their cylinder (the u offset is tangent to it) with z inside the layer, disk hits
    inside the disk's radial range."""
    n = pos.shape[0]
    out = np.empty((n, 3))
    for i in range(n):
        j = surf[i]
        cyl = kind[j] == CYLINDER
        x = pos[i, 0] + (gu[i] * -sin_c[i] + (0.0 if cyl else gv[i] * cos_c[i]))
        y = pos[i, 1] + (gu[i] * cos_c[i] + (0.0 if cyl else gv[i] * sin_c[i]))
        z = pos[i, 2] + (gv[i] if cyl else 0.0)
        r = math.hypot(x, y)
        r_in = g_pos[j] if cyl else min(max(r, g_lo[j]), g_hi[j])
        scale = r_in / max(r, 1e-9)
        out[i, 0] = x * scale
        out[i, 1] = y * scale
        out[i, 2] = min(max(z, g_lo[j]), g_hi[j]) if cyl else z
    return out


def hit_order(vol: np.ndarray, lay: np.ndarray, module: np.ndarray) -> np.ndarray:
    """Permutation sorting hits by (volume, layer, module), stable: np.lexsort((module, lay,
    vol)) as one argsort of a packed int64 key (TrackML's hit order).

    Args:
        vol: (n,) volume ids.
        lay: (n,) layer ids.
        module: (n,) module ids.

    Returns:
        (n,) int64 permutation.
    """
    vol, lay, module = (np.asarray(a, np.int64) for a in (vol, lay, module))
    if len(vol) and (
        vol.min() < 0
        or vol.max() >= 2**23
        or lay.min() < 0
        or lay.max() >= 2**8
        or module.min() < 0
        or module.max() >= 2**32
    ):
        raise ValueError(
            f"hit ids outside the sort key's range: volume {vol.min()}..{vol.max()}, "
            f"layer {lay.min()}..{lay.max()}, module {module.min()}..{module.max()}"
        )
    return np.argsort((vol << 40) | (lay << 32) | module, kind="stable")


def empty_particles() -> dict[str, np.ndarray]:
    """A particle table without particles (every key of ``PARTICLE_TABLE_KEYS``)."""
    return {
        k: np.zeros(0, np.uint64 if k == "particle_id" else np.float64) for k in PARTICLE_TABLE_KEYS
    }


def concat_particles(tables: list[dict]) -> dict[str, np.ndarray]:
    """Concatenate particle tables.

    Args:
        tables: particle tables with the keys of ``PARTICLE_TABLE_KEYS``.

    Returns:
        One table (empty when ``tables`` is).
    """
    if not tables:
        return empty_particles()
    return {k: np.concatenate([t[k] for t in tables]) for k in PARTICLE_TABLE_KEYS}


class DetectorSim:
    """Simulate the detector response to particle tables."""

    def __init__(self, config: DetectorConfig | None = None, geometry: Geometry | None = None):
        self.config = config or DetectorConfig()
        self.config.check()
        self.geometry = geometry or load_geometry(self.config.geometry)
        if self.config.keep_volumes is not None:
            known = set(self.geometry.volume_id[self.geometry.sensitive].tolist())
            unknown = sorted(set(self.config.keep_volumes) - known)
            if unknown:
                raise ValueError(
                    f"detector.keep_volumes has unknown volume id(s) {unknown}; "
                    f"the geometry has {sorted(known)}"
                )

    def provenance(self) -> dict:
        """Detector settings and geometry source, stored with the simulated files."""
        return {"detector": asdict(self.config), "geometry": self.geometry.source}

    def _noise(self, n_true: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Noise hits (:mod:`trackformers.sim.noise`): surface indices and positions."""
        cfg = self.config
        return noise_hits(self.geometry, n_true, cfg.noise_fraction, rng, cfg.noise_spread)

    def _smear(
        self, surf: np.ndarray, pos: np.ndarray, phi_c: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Gaussian smearing along the module axes u (r*phi at the module centre) and v."""
        geo = self.geometry
        gu = rng.standard_normal(len(surf)) * geo.sigma_u[surf]
        gv = rng.standard_normal(len(surf)) * geo.sigma_v[surf]
        return _smear_in_module_frame(
            np.ascontiguousarray(pos, np.float64),
            np.asarray(surf, np.int64),
            gu,
            gv,
            np.sin(phi_c),
            np.cos(phi_c),
            geo.kind,
            geo.pos,
            geo.lo,
            geo.hi,
        )

    def simulate(self, particles: dict, *, event_id: int, pileup: int, seed: int) -> dict:
        """Propagate and digitise ``particles``; return a schema event dict.

        Args:
            particles: particle table (``PARTICLE_TABLE_KEYS``).
            event_id: the event's id.
            pileup: pile-up vertices of the event.
            seed: random seed of the detector response.

        Returns:
            The event dict, hits in TrackML order.
        """
        cfg, geo = self.config, self.geometry
        rng = np.random.default_rng([seed, 7])
        cross, particles = transport(
            geo,
            particles,
            seed=int(rng.integers(2**32)),
            max_generations=cfg.max_generations,
            secondary_p_min=cfg.secondary_p_min,
            efficiency=cfg.efficiency,
            scattering=cfg.scattering,
            energy_loss=cfg.energy_loss,
            p_min=cfg.p_min,
            max_crossings=cfg.max_crossings,
            max_hits=cfg.max_hits,
            loop_fraction=cfg.loop_fraction,
            conversions=cfg.conversions,
            nuclear=cfg.nuclear_interactions,
            lambda_over_x0=cfg.lambda_over_x0,
            nuclear_per_species=cfg.nuclear_per_species,
        )  # particles: the listed (charged) input particles and their secondaries
        n = len(particles["particle_id"])
        # crossings in the band where neighbouring modules overlap in phi, or along z in the
        # barrel, leave a second hit on the neighbour
        c_surf, c_pos, c_part = cross["surface"], cross["pos"], cross["particle"]
        cx, cy, cz = c_pos[:, 0], c_pos[:, 1], c_pos[:, 2]
        bins = phi_binning(geo, c_surf, cx, cy, cz)
        side = overlap_side(geo, c_surf, cx, cy, cz, binning=bins)
        dup = np.flatnonzero((side != 0) & (rng.random(len(side)) < cfg.efficiency))
        shift_phi, shift_z = side[dup], np.zeros(len(dup), np.int64)
        if np.any(geo.z_overlaps() > 0):
            side_z = z_overlap_side(geo, c_surf, cz)
            dup_z = np.flatnonzero((side_z != 0) & (rng.random(len(side_z)) < cfg.efficiency))
            dup = np.concatenate([dup, dup_z])
            shift_phi = np.concatenate([shift_phi, np.zeros(len(dup_z), np.int64)])
            shift_z = np.concatenate([shift_z, side_z[dup_z]])
        mod_c, phi_c_c = module_ids(geo, c_surf, cx, cy, cz, binning=bins)
        p = c_pos[dup]
        mod_d, phi_c_d = module_ids(
            geo,
            c_surf[dup],
            cx[dup],
            cy[dup],
            cz[dup],
            shift_phi,
            binning=bins.take(dup),
            shift_z=shift_z,
        )
        part_idx = np.concatenate([c_part, c_part[dup]])  # (n_true,)
        n_true = len(part_idx)
        noise_surf, noise_pos = self._noise(n_true, rng)
        mod_n, phi_c_n = module_ids(geo, noise_surf, *noise_pos.T)
        surf = np.concatenate([c_surf, c_surf[dup], noise_surf])
        tpos = np.concatenate([c_pos, p, noise_pos])  # (nhit, 3) true positions
        tmom = np.concatenate([cross["mom"], cross["mom"][dup], np.zeros_like(noise_pos)])
        pid = np.concatenate(
            [
                np.asarray(particles["particle_id"], np.uint64)[part_idx],
                np.zeros(len(noise_surf), np.uint64),
            ]
        )
        module = np.concatenate([mod_c, mod_d, mod_n])
        phi_c = np.concatenate([phi_c_c, phi_c_d, phi_c_n])
        pos = self._smear(surf, tpos, phi_c, rng) if cfg.smearing else tpos
        vol, lay = geo.volume_id[surf], geo.layer_id[surf]
        if cfg.keep_volumes is not None:
            keep = np.isin(vol, cfg.keep_volumes)
            part_idx = part_idx[keep[:n_true]]
            surf, pos, tpos, tmom, pid = surf[keep], pos[keep], tpos[keep], tmom[keep], pid[keep]
            phi_c = phi_c[keep]
            vol, lay, module = vol[keep], lay[keep], module[keep]
        # TrackML order: hits sorted by volume, layer, module (stable); hit ids 1..nhit
        order = hit_order(vol, lay, module)
        pid, vol, lay, module, surf, phi_c = (
            a[order] for a in (pid, vol, lay, module, surf, phi_c)
        )
        pos, tpos, tmom = (np.take(a, order, axis=0) for a in (pos, tpos, tmom))  # (nh, 3)
        hit_part = np.concatenate([part_idx, np.full(len(pid) - len(part_idx), -1)])[order]
        nhits = np.bincount(part_idx, minlength=n)
        weight = trackml_weights(
            pid,
            tpos[:, 2],
            particles["particle_id"],
            particles["vz"],
            particles["px"],
            particles["py"],
            hit_particle_index=hit_part,
        )
        nh = len(pid)
        ev = {
            "event_id": np.uint64(event_id),
            "pileup": np.int32(pileup),
            "hit_id": np.arange(1, nh + 1, dtype=np.uint64),
            "hit_x": pos[:, 0],
            "hit_y": pos[:, 1],
            "hit_z": pos[:, 2],
            "hit_volume_id": vol,
            "hit_layer_id": lay,
            "hit_module_id": module,
            "hit_particle_id": pid,
            "hit_weight": weight,
            "hit_tx": tpos[:, 0],
            "hit_ty": tpos[:, 1],
            "hit_tz": tpos[:, 2],
            "hit_tpx": tmom[:, 0],
            "hit_tpy": tmom[:, 1],
            "hit_tpz": tmom[:, 2],
            "part_particle_id": particles["particle_id"],
            "part_pdg_id": particles["pdg_id"],
            "part_vertex_id": particles["vertex_id"],
            "part_vx": particles["vx"],
            "part_vy": particles["vy"],
            "part_vz": particles["vz"],
            "part_px": particles["px"],
            "part_py": particles["py"],
            "part_pz": particles["pz"],
            "part_q": particles["q"],
            "part_nhits": nhits,
            "part_parent_id": particles["parent_id"],
            "part_process": particles["process"],
        }
        if cfg.clusters:
            ev.update(
                event_clusters(
                    geo,
                    surf,
                    tpos,
                    tmom,
                    module,
                    phi_c,
                    pid == 0,
                    ev["hit_id"],
                    seed=int(rng.integers(2**32)),
                )
            )
        return {
            k: (np.asarray(v, dtype=schema.KNOWN_BRANCHES[k]) if k in schema.KNOWN_BRANCHES else v)
            for k, v in ev.items()
        }
