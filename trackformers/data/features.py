"""Hit features, hit selections and per-hit track-parameter targets, vectorised over a chunk.

Hit features (name -> default scale; every value is multiplied by its scale):
    x, y (1/1000 mm), z (1/3000 mm), r (1/1000 mm), phi (1/pi), sin_phi, cos_phi, eta (1/4),
    theta (1/pi), volume_id, layer_id (1), proj_u, proj_v (1/1000 mm), proj_region (1):
    the Part-2 projection (trackformers.data.projections) — barrel cylinder R = 91 mm gives
    (u, v) = (R phi, z), region 0; endcap planes z = +-920 mm give (x, y), region +-1.
Cluster-shape features (need the cluster branches hit_ncells ... of schema.CLUSTER_BRANCHES,
written by the simulation and the TrackML import with cells; trackformers.sim.clusters):
    ncells (1/10: cells of the hit, typically 1-20), charge (10/MeV: summed cell values, a
    MIP crossing 150 um deposits ~0.04 MeV), size_u, size_v (1/10: extent in cells along the
    module's u = r*phi and v = z / r axes), leta (1/4: local pseudorapidity
    asinh(thickness / hypot(l_u, l_v)), l = size * pitch; 0-5), lphi (2/pi: atan2(l_v, l_u)
    in [0, pi/2] -> [0, 1]). A cluster long along z (small leta, lphi near pi/2 in the barrel)
    means a steep track, whatever its vertex.
Targets (per hit, copied from its particle; NaN and ``valid`` False for noise, hits without
truth and particles below ``target_pt_min``):
    eta, theta, sin_phi, cos_phi (momentum direction at production), q_over_pt (1/GeV),
    d0, z0 (mm, helix perigee w.r.t. the z axis in Bz), pt (GeV), phi.
    ``signal`` (N,) bool when ``signal`` is set: the hit's particle is reconstructable
    (trackformers.data.signal).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from trackformers.data.binning import joint_class
from trackformers.data.chunk import EventChunk
from trackformers.data.fastpath import PARAM_COLUMNS, gather_targets, track_parameters
from trackformers.data.projections import project_part2
from trackformers.data.schema import PIXEL_VOLUMES
from trackformers.data.signal import SignalConfig, signal_hits
from trackformers.data.validate import cached_particle_row

log = logging.getLogger("trackformers.data")

B_FIELD_T = 2.0
MM_PER_GEV_PER_T = 1000.0 / 0.299792458  # R[mm] = pT[GeV] * this / B[T]  (1667.8 at 2 T)

HIT_FEATURE_SCALES = {
    "x": 1e-3,
    "y": 1e-3,
    "z": 1 / 3000,
    "r": 1e-3,
    "phi": 1 / np.pi,
    "sin_phi": 1.0,
    "cos_phi": 1.0,
    "eta": 0.25,
    "theta": 1 / np.pi,
    "volume_id": 1.0,
    "layer_id": 1.0,
    "proj_u": 1e-3,
    "proj_v": 1e-3,
    "proj_region": 1.0,
    "ncells": 0.1,
    "charge": 10.0,
    "size_u": 0.1,
    "size_v": 0.1,
    "leta": 0.25,
    "lphi": 2 / np.pi,
}
# features read from a native branch of the same name with the prefix hit_
CLUSTER_FEATURES = ("ncells", "charge", "size_u", "size_v", "leta", "lphi")
TARGET_NAMES = ("eta", "theta", "phi", "sin_phi", "cos_phi", "q_over_pt", "d0", "z0", "pt")
DEFAULT_TARGETS = ("eta", "sin_phi", "cos_phi", "q_over_pt", "d0", "z0")


@dataclass
class FeatureConfig:
    """What goes into a batch: input features, hit selection and targets."""

    features: tuple[str, ...] = ("x", "y", "z")
    scales: dict[str, float] = field(default_factory=dict)  # overrides of HIT_FEATURE_SCALES
    volumes: tuple[int, ...] | str | None = None  # keep these volume ids; "pixel"; None = all
    drop_noise: bool = False  # drop hits with particle id 0
    targets: tuple[str, ...] = ()  # subset of TARGET_NAMES, stacked in targets["params"]
    target_pt_min: float = 0.0  # GeV: hits of softer particles get targets["valid"] False
    bz: float = B_FIELD_T  # tesla, for d0/z0
    vertex_z: float = 0.0  # mm, origin of the Part-2 projection
    class_bins: dict[str, Sequence[float]] | None = None  # param -> bin edges (binning.py)
    signal: SignalConfig | dict | None = None  # targets["signal"] cuts; None = no such target

    def __post_init__(self):
        self.signal = SignalConfig.from_value(self.signal)
        self.features = tuple(self.features)
        self.targets = tuple(self.targets)
        for f in self.features:
            if f not in HIT_FEATURE_SCALES:
                raise ValueError(f"unknown hit feature {f!r}; known: {sorted(HIT_FEATURE_SCALES)}")
        for t in self.targets:
            if t not in TARGET_NAMES:
                raise ValueError(f"unknown target {t!r}; known: {TARGET_NAMES}")
        unknown = set(self.scales) - set(HIT_FEATURE_SCALES)
        if unknown:
            raise ValueError(f"scales for unknown features {sorted(unknown)}")
        if isinstance(self.volumes, str):
            if self.volumes != "pixel":
                raise ValueError(f"volumes must be a list of ids, 'pixel' or null: {self.volumes}")
            self.volumes = PIXEL_VOLUMES
        elif self.volumes is not None:
            self.volumes = tuple(int(v) for v in self.volumes)
        if self.class_bins is not None:
            self.class_bins = {
                k: np.asarray(v, dtype=np.float64) for k, v in self.class_bins.items()
            }
            for k in self.class_bins:
                if k not in TARGET_NAMES:
                    raise ValueError(f"class_bins for unknown parameter {k!r}")

    @classmethod
    def from_dict(cls, d: dict | None) -> FeatureConfig:
        """The config of ``data.features`` (None: the defaults); lists become tuples.

        Args:
            d: the mapping from the data config.

        Returns:
            The validated config.
        """
        d = dict(d or {})
        for key in ("features", "targets"):
            if key in d and d[key] is not None:
                d[key] = tuple(d[key])
        if isinstance(d.get("volumes"), (list, tuple)):
            d["volumes"] = tuple(d["volumes"])
        if d.get("scales") is not None:
            d["scales"] = dict(d["scales"])
        return cls(**d)

    @property
    def num_features(self) -> int:
        """Number of input features per hit."""
        return len(self.features)

    @property
    def needs_particles(self) -> bool:
        """True when targets, classes or signal labels need the particle table."""
        return bool(self.targets) or self.class_bins is not None or self.signal is not None

    def hit_fields(self) -> tuple[str, ...]:
        """Native hit branches these features read."""
        fields = ["hit_id", "hit_x", "hit_y", "hit_z", "hit_particle_id", "hit_weight"]
        fields.append("hit_volume_id")
        if "layer_id" in self.features:
            fields.append("hit_layer_id")
        fields += [f"hit_{f}" for f in self.features if f in CLUSTER_FEATURES]
        return tuple(fields)


def select_hits(chunk: EventChunk, cfg: FeatureConfig) -> EventChunk:
    """Apply the volume and noise selections; drop (and log the count of) emptied events.

    Args:
        chunk: validated events.
        cfg: the feature configuration (volumes, noise).

    Returns:
        The selected chunk.
    """
    keep = None
    if cfg.volumes is not None:
        keep = np.isin(chunk.hits["hit_volume_id"], np.asarray(cfg.volumes, dtype=np.int32))
    if cfg.drop_noise:
        signal = chunk.hits["hit_particle_id"] != 0
        keep = signal if keep is None else keep & signal
    if keep is None:
        return chunk
    chunk = chunk.select_hits(keep)
    empty = chunk.hit_counts == 0
    if empty.any():
        log.info(
            "%s: %d events without hits after the selection dropped", chunk.source, empty.sum()
        )
        chunk = chunk.select_events(~empty)
    return chunk


def hit_features(hits: dict[str, np.ndarray], cfg: FeatureConfig) -> np.ndarray:
    """(total_hits, F) float32 scaled features in the order of ``cfg.features``.

    Args:
        hits: hit branches of a chunk.
        cfg: the feature configuration.
    """
    x, y, z = hits["hit_x"], hits["hit_y"], hits["hit_z"]
    n = len(x)
    out = np.empty((n, len(cfg.features)), dtype=np.float32)
    cache: dict[str, np.ndarray] = {}

    def get(name: str) -> np.ndarray:
        if name in cache:
            return cache[name]
        if name in ("x", "y", "z"):
            v = {"x": x, "y": y, "z": z}[name]
        elif name == "r":
            v = np.hypot(x, y)
        elif name == "phi":
            v = np.arctan2(y, x)
        elif name == "sin_phi":
            v = y / np.maximum(get("r"), 1e-12)
        elif name == "cos_phi":
            v = x / np.maximum(get("r"), 1e-12)
        elif name == "eta":
            v = np.arcsinh(z / np.maximum(get("r"), 1e-12))
        elif name == "theta":
            v = np.arctan2(get("r"), z)
        elif name in ("volume_id", "layer_id") or name in CLUSTER_FEATURES:
            v = hits[f"hit_{name}"]
        else:  # projection features
            u, w, region = project_part2(x, y, z, vertex_z=cfg.vertex_z)
            cache.update(proj_u=u, proj_v=w, proj_region=region.astype(np.float32))
            return cache[name]
        cache[name] = v
        return v

    for j, name in enumerate(cfg.features):
        v = get(name)
        scale = np.float32(cfg.scales.get(name, HIT_FEATURE_SCALES[name]))
        if scale != 1.0 and v.dtype == np.float32:  # one strided pass: scale while storing
            np.multiply(v, scale, out=out[:, j])
        else:
            out[:, j] = v
            if scale != 1.0:
                out[:, j] *= scale
    return out


def particle_parameters(parts: dict[str, np.ndarray], bz: float = B_FIELD_T) -> dict:
    """Track parameters per particle (float64 arrays): see the module docstring.

    One compiled pass per particle (trackformers.data.fastpath); :func:`perigee` is the
    numpy statement of the same d0/z0 formulas.

    Args:
        parts: particle branches (``part_*``).
        bz: solenoid field in T.

    Returns:
        parameter name -> (npart,) float64.
    """
    table = particle_table(parts, bz)  # (npart, 9)
    return {name: table[:, j] for j, name in enumerate(PARAM_COLUMNS)}


def particle_table(
    parts: dict[str, np.ndarray], bz: float = B_FIELD_T, columns: Sequence[str] = PARAM_COLUMNS
) -> np.ndarray:
    """(npart, 9) float64 track parameters, columns in fastpath.PARAM_COLUMNS order; only
    ``columns`` (and the cheap pt, sin/cos phi, q/pt) are guaranteed to be computed.

    Args:
        parts: particle branches (``part_*``).
        bz: solenoid field in T.
        columns: the parameters wanted.
    """
    keys = ("part_px", "part_py", "part_pz", "part_vx", "part_vy", "part_vz", "part_q")
    return track_parameters(*(parts[k] for k in keys), bz, MM_PER_GEV_PER_T, tuple(columns))


def perigee(vx, vy, vz, ux, uy, cot_theta, q, pt, bz):
    """Signed d0 and z0 of the helix through (vx, vy, vz) with direction (ux, uy) at production.

    d0 = (u x P)_z at the point P of closest transverse approach to the z axis, u the
    momentum direction there (ATLAS sign convention); z0 the helix z at P. Neutral or
    straight tracks (q = 0 or bz = 0) use the straight line.

    Args:
        vx: production vertex x in mm.
        vy: vertex y.
        vz: vertex z.
        ux: transverse direction x (unit).
        uy: transverse direction y.
        cot_theta: pz / pt.
        q: charge.
        pt: transverse momentum in GeV.
        bz: solenoid field in T.

    Returns:
        (d0, z0) in mm.
    """
    curved = (q != 0) & (bz != 0)
    radius = np.where(curved, pt * MM_PER_GEV_PER_T / max(abs(bz), 1e-12), np.inf)
    s = np.sign(q * bz)  # +1: clockwise seen from +z
    # straight line: P = V - (V.u) u
    along = vx * ux + vy * uy
    d0 = ux * vy - uy * vx
    z0 = vz - along * cot_theta
    if curved.any():
        r = radius[curved]
        sc = s[curved]
        vxc, vyc, uxc, uyc = vx[curved], vy[curved], ux[curved], uy[curved]
        # centre of the circle: V + r * s * (uy, -ux)
        cx, cy = vxc + r * sc * uyc, vyc - r * sc * uxc
        dc = np.maximum(np.hypot(cx, cy), 1e-12)
        px_, py_ = cx - r * cx / dc, cy - r * cy / dc  # closest point of the circle to the axis
        nx, ny = (cx - px_) / r, (cy - py_) / r  # unit vector P -> centre = s * (uy, -ux) at P
        tx, ty = -sc * ny, sc * nx  # direction of motion at P
        d0c = tx * py_ - ty * px_
        # signed transverse arc length from V to P along the motion
        a_v = np.arctan2(vyc - cy, vxc - cx)
        a_p = np.arctan2(py_ - cy, px_ - cx)
        dphi = np.angle(np.exp(1j * (a_p - a_v)))  # wrapped to (-pi, pi]
        arc = -sc * dphi * r  # clockwise motion for s = +1
        d0[curved] = d0c
        z0[curved] = vz[curved] + arc * cot_theta[curved]
    return d0, z0


def hit_targets(chunk: EventChunk, cfg: FeatureConfig) -> dict[str, np.ndarray]:
    """Per-hit targets: ``params`` (N, P) float32 in cfg.targets order, ``valid`` (N,) bool,
    ``pt`` (N,) float32, ``class`` (N,) int64 (-1 invalid) when cfg.class_bins is set, and
    ``signal`` (N,) bool when cfg.signal is set.

    Args:
        chunk: selected events with their particles.
        cfg: the feature configuration.
    """
    if chunk.part_offsets is None or "part_particle_id" not in chunk.parts:
        raise ValueError(f"{chunk.source}: targets need the particle branches (part_*)")
    row = cached_particle_row(chunk)  # (N,) -1 for noise / no truth
    needed = (*cfg.targets, *(cfg.class_bins or ()), *(("eta",) if cfg.signal else ()))
    table = particle_table(chunk.parts, cfg.bz, needed)  # (npart, 9) float64
    cols = [PARAM_COLUMNS.index(n) for n in cfg.targets]
    mat = table[:, cols].astype(np.float32)  # (npart, P)
    params, valid, pt = gather_targets(row, mat, table[:, 0], cfg.target_pt_min)
    out: dict[str, np.ndarray] = {"valid": valid, "pt": pt}
    if cfg.targets:
        out["params"] = params  # (N, P), NaN where not valid
    if cfg.signal is not None:
        eta = table[:, PARAM_COLUMNS.index("eta")]  # (npart,)
        out["signal"] = signal_hits(row, table[:, 0], eta, cfg.signal)  # (N,) bool
    if cfg.class_bins is not None:
        safe = np.where(row >= 0, row, 0)  # (N,) gather index, masked below
        names = {n: PARAM_COLUMNS.index(n) for n in cfg.class_bins}
        part_cls = joint_class({k: table[:, j] for k, j in names.items()}, cfg.class_bins)
        cls = part_cls[safe]
        cls[~valid] = -1
        out["class"] = cls.astype(np.int64, copy=False)
    return out
