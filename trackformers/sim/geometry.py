"""The tracking detector as data: load a geometry YAML, check it, flatten it into surfaces.

A geometry YAML (see ``trackml_geometry.yaml``) lists barrel volumes (cylindrical layers with
n_phi x n_z modules) and endcap volume pairs (disks at +-z with rings of n_phi modules).
:func:`load_geometry` returns a :class:`Geometry` whose per-surface arrays feed the
vectorised propagation (:mod:`trackformers.sim.propagate`) and digitisation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import yaml

DEFAULT_GEOMETRY = Path(__file__).with_name("trackml_geometry.yaml")
CYLINDER, DISK = 0, 1
DEFAULT_THICKNESS = 0.15  # mm: sensor thickness when a volume does not give one (pixel)


class GeometryError(ValueError):
    """The geometry description is inconsistent."""


@dataclass
class Geometry:
    """Flattened detector: one row per surface (beam pipe, layers, then the world boundary)."""

    name: str
    field_tesla: float
    kind: np.ndarray  # (S,) int8: CYLINDER or DISK
    pos: np.ndarray  # (S,) float64: radius of a cylinder, signed z of a disk
    lo: np.ndarray  # (S,) float64: z_min of a cylinder, r_min of a disk
    hi: np.ndarray  # (S,) float64: z_max of a cylinder, r_max of a disk
    x_over_x0: np.ndarray  # (S,) float64
    sensitive: np.ndarray  # (S,) bool (beam pipe, world boundary: False)
    kill: np.ndarray  # (S,) bool: the world boundary, a particle crossing it stops
    volume_id: np.ndarray  # (S,) int32
    layer_id: np.ndarray  # (S,) int32
    sigma_u: np.ndarray  # (S,) float64, resolution along r*phi
    sigma_v: np.ndarray  # (S,) float64, resolution along z (barrel) / r (disk)
    overlap: np.ndarray  # (S,) float64, fraction of a module's phi width shared with each neighbour
    n_phi: np.ndarray  # (S,) int32 barrel modules in phi (0 for disks)
    n_z: np.ndarray  # (S,) int32 barrel modules in z (0 for disks)
    ring_edges: np.ndarray  # (S, R+1) float64 disk ring radii, padded with +inf
    ring_nphi: np.ndarray  # (S, R) int32 modules per ring, padded with 0
    source: dict = field(default_factory=dict)  # the YAML content, for provenance
    # (S,) float64 sensor thickness (mm) for the cluster model; 0 for passive surfaces
    thickness: np.ndarray | None = None
    field_map: dict | None = None  # {"r": (nr,), "z": (nz,), "bz": (nr, nz)} mm, T; None = uniform
    # (S,) float64: length (mm) along z shared by neighbouring barrel modules; None = 0
    z_overlap: np.ndarray | None = None

    def z_overlaps(self) -> np.ndarray:
        """(S,) z overlap of neighbouring barrel modules in mm (0 where there is none)."""
        return np.zeros(self.n_surfaces) if self.z_overlap is None else self.z_overlap

    def field_map_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(r, z, bz) float64 arrays of the field map; empty arrays for a uniform field."""
        if self.field_map is None:
            return np.zeros(0), np.zeros(0), np.zeros((0, 0))
        return tuple(np.ascontiguousarray(self.field_map[k], np.float64) for k in ("r", "z", "bz"))

    @property
    def n_surfaces(self) -> int:
        """Number of surfaces (layers and disks)."""
        return len(self.kind)

    def area(self) -> np.ndarray:
        """Sensitive area of each surface in mm^2 (0 for passive ones)."""
        cyl = 2 * np.pi * self.pos * (self.hi - self.lo)
        disk = np.pi * (self.hi**2 - self.lo**2)
        return np.where(self.kind == CYLINDER, cyl, disk) * self.sensitive


def _need(d: dict, key: str, where: str):
    if key not in d:
        raise GeometryError(f"{where}: missing field '{key}'")
    return d[key]


def _positive(value, key: str, where: str) -> float:
    v = float(value)
    if not np.isfinite(v) or v <= 0:
        raise GeometryError(f"{where}: '{key}' must be positive, got {value!r}")
    return v


def _material(value, where: str) -> float:
    v = float(value)
    if not (0 <= v < 1):
        raise GeometryError(f"{where}: 'x_over_x0' must be in [0, 1), got {value!r}")
    return v


def _overlap(d: dict, where: str) -> float:
    v = float(d.get("overlap", 0.0))
    if not (0 <= v < 0.5):
        raise GeometryError(f"{where}: 'overlap' must be in [0, 0.5), got {v!r}")
    return v


def _z_overlap(d: dict, where: str, n_z: int, half_z: float) -> float:
    v = float(d.get("z_overlap", 0.0))
    if not (0 <= v < 2 * half_z / n_z):
        raise GeometryError(
            f"{where}: 'z_overlap' must be in [0, module length {2 * half_z / n_z:g} mm), got {v!r}"
        )
    return v


def _check_overlaps(rows: list[dict]) -> None:
    cyl = [r for r in rows if r["kind"] == CYLINDER and r["sensitive"]]
    disks = [r for r in rows if r["kind"] == DISK]
    for d in disks:
        for c in cyl:
            if c["lo"] <= d["pos"] <= c["hi"] and d["lo"] <= c["pos"] <= d["hi"]:
                raise GeometryError(
                    f"inconsistent geometry: disk volume {d['volume_id']} layer {d['layer_id']} "
                    f"(z={d['pos']}, r {d['lo']}-{d['hi']}) intersects barrel volume "
                    f"{c['volume_id']} layer {c['layer_id']} (r={c['pos']}, abs(z)<={c['hi']})"
                )
    radii = sorted((c["pos"], c["volume_id"], c["layer_id"]) for c in cyl)
    for a, b in zip(radii, radii[1:], strict=False):
        if a[0] == b[0]:
            raise GeometryError(
                f"inconsistent geometry: barrel layers {a[1:]} and {b[1:]} share radius {a[0]}"
            )


def _passive_surface() -> dict:
    """Surface fields of a non-sensitive surface (beam pipe, world boundary): no modules, no ids."""
    return dict(
        sensitive=False,
        volume_id=0,
        layer_id=0,
        su=0.0,
        sv=0.0,
        n_phi=0,
        n_z=0,
        rings=[],
        ring_nphi=[],
    )


def geometry_from_dict(spec: dict) -> Geometry:
    """Check a geometry description (the YAML content) and flatten it into surfaces.

    Args:
        spec: the parsed YAML.

    Returns:
        The geometry.

    Raises:
        GeometryError: a missing or inconsistent field, named.
    """
    rows: list[dict] = []
    bp = _need(spec, "beam_pipe", "geometry")
    rows.append(
        dict(
            kind=CYLINDER,
            pos=_positive(_need(bp, "r", "beam_pipe"), "r", "beam_pipe"),
            lo=-_positive(_need(bp, "half_z", "beam_pipe"), "half_z", "beam_pipe"),
            hi=float(bp["half_z"]),
            x0=_material(_need(bp, "x_over_x0", "beam_pipe"), "beam_pipe"),
            **_passive_surface(),
        )
    )
    seen_volumes: set[int] = set()

    def claim(vid, where):
        vid = int(vid)
        if vid in seen_volumes or vid <= 0:
            raise GeometryError(f"{where}: volume_id {vid} is duplicated or not positive")
        seen_volumes.add(vid)
        return vid

    for b in _need(spec, "barrels", "geometry"):
        where = f"barrel '{b.get('name', '?')}'"
        vid = claim(_need(b, "volume_id", where), where)
        hz = _positive(_need(b, "half_z", where), "half_z", where)
        su = _positive(_need(b, "pitch_u", where), "pitch_u", where) / np.sqrt(12)
        sv = _positive(_need(b, "pitch_v", where), "pitch_v", where) / np.sqrt(12)
        x0 = _material(_need(b, "x_over_x0", where), where)
        thick = _positive(b.get("thickness", DEFAULT_THICKNESS), "thickness", where)
        last_r = 0.0
        for i, lay in enumerate(_need(b, "layers", where)):
            lw = f"{where} layer {i}"
            r = _positive(_need(lay, "r", lw), "r", lw)
            if r <= last_r or r <= rows[0]["pos"]:
                raise GeometryError(f"{lw}: radius {r} must exceed the previous layer/beam pipe")
            last_r = r
            n_phi, n_z = int(_need(lay, "n_phi", lw)), int(_need(lay, "n_z", lw))
            if n_phi < 1 or n_z < 1:
                raise GeometryError(f"{lw}: n_phi and n_z must be >= 1, got {n_phi}, {n_z}")
            ov = _overlap(lay if "overlap" in lay else b, lw)  # per layer, else the volume's
            z_ov = _z_overlap(b, where, n_z, hz)
            rows.append(
                dict(
                    kind=CYLINDER,
                    pos=r,
                    lo=-hz,
                    hi=hz,
                    x0=x0,
                    sensitive=True,
                    volume_id=vid,
                    layer_id=2 * (i + 1),
                    su=su,
                    overlap=ov,
                    z_overlap=z_ov,
                    sv=sv,
                    thickness=thick,
                    n_phi=n_phi,
                    n_z=n_z,
                    rings=[],
                    ring_nphi=[],
                )
            )
    for e in spec.get("endcaps", []):
        where = f"endcap '{e.get('name', '?')}'"
        vids = _need(e, "volume_ids", where)
        if len(vids) != 2:
            raise GeometryError(f"{where}: volume_ids must be [negative-z id, positive-z id]")
        vneg, vpos = claim(vids[0], where), claim(vids[1], where)
        su = _positive(_need(e, "pitch_u", where), "pitch_u", where) / np.sqrt(12)
        sv = _positive(_need(e, "pitch_v", where), "pitch_v", where) / np.sqrt(12)
        x0 = _material(_need(e, "x_over_x0", where), where)
        ov = _overlap(e, where)
        thick = _positive(e.get("thickness", DEFAULT_THICKNESS), "thickness", where)
        zs = [_positive(z, "z", where) for z in _need(e, "z", where)]
        if any(b <= a for a, b in zip(zs, zs[1:], strict=False)):
            raise GeometryError(f"{where}: disk z positions must increase, got {zs}")
        rings = _need(e, "rings", where)
        if not rings:
            raise GeometryError(f"{where}: needs at least one ring")
        edges = [_positive(_need(rings[0], "r_min", where), "r_min", where)]
        nphi = []
        for j, ring in enumerate(rings):
            rw = f"{where} ring {j}"
            rmin = float(_need(ring, "r_min", rw))
            rmax = _positive(_need(ring, "r_max", rw), "r_max", rw)
            if abs(rmin - edges[-1]) > 1e-9 or rmax <= rmin:
                raise GeometryError(
                    f"{rw}: rings must be contiguous with r_min < r_max, got "
                    f"r_min={rmin} (previous edge {edges[-1]}), r_max={rmax}"
                )
            n = int(_need(ring, "n_phi", rw))
            if n < 1:
                raise GeometryError(f"{rw}: n_phi must be >= 1, got {n}")
            edges.append(rmax)
            nphi.append(n)
        nd = len(zs)
        for sign, vid in ((-1, vneg), (1, vpos)):
            for i, z in enumerate(zs):
                # TrackML numbering runs from -z to +z within each endcap volume
                layer = 2 * (nd - i) if sign < 0 else 2 * (i + 1)
                rows.append(
                    dict(
                        kind=DISK,
                        pos=sign * z,
                        lo=edges[0],
                        hi=edges[-1],
                        x0=x0,
                        sensitive=True,
                        volume_id=vid,
                        layer_id=layer,
                        su=su,
                        overlap=ov,
                        sv=sv,
                        thickness=thick,
                        n_phi=0,
                        n_z=0,
                        rings=edges,
                        ring_nphi=nphi,
                    )
                )
    _check_overlaps(rows)
    world = _need(spec, "world", "geometry")
    wr = _positive(_need(world, "r", "world"), "r", "world")
    wz = _positive(_need(world, "half_z", "world"), "half_z", "world")
    for r in rows:
        r_out = r["pos"] if r["kind"] == CYLINDER else r["hi"]
        z_out = r["hi"] if r["kind"] == CYLINDER else abs(r["pos"])
        if r_out >= wr or z_out >= wz:
            raise GeometryError(
                f"inconsistent geometry: volume {r['volume_id']} layer "
                f"{r['layer_id']} reaches outside the world (r < {wr}, abs(z) < {wz})"
            )
    for r in rows:
        r["kill"] = False
    boundary = dict(x0=0.0, kill=True, **_passive_surface())
    rows.append(dict(kind=CYLINDER, pos=wr, lo=-wz, hi=wz, **boundary))
    rows.extend(dict(kind=DISK, pos=sgn * wz, lo=0.0, hi=wr, **boundary) for sgn in (-1, 1))
    n_ring = max(len(r["ring_nphi"]) for r in rows)
    edges = np.full((len(rows), n_ring + 1), np.inf)
    ring_nphi = np.zeros((len(rows), n_ring), np.int32)
    for i, r in enumerate(rows):
        edges[i, : len(r["rings"])] = r["rings"]
        ring_nphi[i, : len(r["ring_nphi"])] = r["ring_nphi"]

    def col(key, dtype):
        return np.asarray([r.get(key, 0) for r in rows], dtype=dtype)

    field_t = float(spec.get("field_tesla", 2.0))
    if not np.isfinite(field_t):
        raise GeometryError(f"geometry: field_tesla must be finite, got {field_t}")
    return Geometry(
        name=str(spec.get("name", "custom")),
        field_tesla=field_t,
        kind=col("kind", np.int8),
        pos=col("pos", np.float64),
        lo=col("lo", np.float64),
        hi=col("hi", np.float64),
        x_over_x0=col("x0", np.float64),
        sensitive=col("sensitive", bool),
        kill=col("kill", bool),
        volume_id=col("volume_id", np.int32),
        layer_id=col("layer_id", np.int32),
        sigma_u=col("su", np.float64),
        sigma_v=col("sv", np.float64),
        overlap=col("overlap", np.float64),
        n_phi=col("n_phi", np.int32),
        n_z=col("n_z", np.int32),
        ring_edges=edges,
        ring_nphi=ring_nphi,
        source=spec,
        thickness=col("thickness", np.float64),
        z_overlap=col("z_overlap", np.float64),
    )


def load_field_map(path: str | os.PathLike) -> dict:
    """Read an (r, z) map of Bz from an .npz with arrays r (nr,), z (nz,), bz (nr, nz).

    Args:
        path: the .npz file.

    Returns:
        ``r``, ``z`` and ``bz`` float64 arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"field map {path} does not exist")
    with np.load(path) as f:
        missing = [k for k in ("r", "z", "bz") if k not in f]
        if missing:
            raise GeometryError(f"field map {path}: missing array(s) {missing}")
        fm = {k: np.asarray(f[k], np.float64) for k in ("r", "z", "bz")}
    nr, nz = len(fm["r"]), len(fm["z"])
    if nr < 2 or nz < 2 or fm["bz"].shape != (nr, nz):
        raise GeometryError(
            f"field map {path}: need r (nr>=2,), z (nz>=2,), bz (nr, nz); got "
            f"{fm['r'].shape}, {fm['z'].shape}, {fm['bz'].shape}"
        )
    if np.any(np.diff(fm["r"]) <= 0) or np.any(np.diff(fm["z"]) <= 0):
        raise GeometryError(f"field map {path}: r and z must increase strictly")
    if not np.all(np.isfinite(fm["bz"])):
        raise GeometryError(f"field map {path}: bz has non-finite values")
    return fm


def load_geometry(path: str | os.PathLike | None = None) -> Geometry:
    """Load and check a geometry YAML (default: the TrackML detector).

    Args:
        path: YAML file (None: the packaged TrackML geometry).

    Returns:
        The geometry.
    """
    path = Path(path) if path else DEFAULT_GEOMETRY
    if not path.is_file():
        raise FileNotFoundError(f"geometry file {path} does not exist")
    with open(path) as f:
        spec = yaml.safe_load(f)
    if not isinstance(spec, dict):
        raise GeometryError(f"{path}: expected a mapping at top level")
    try:
        geo = geometry_from_dict(spec)
    except GeometryError as err:
        raise GeometryError(f"{path}: {err}") from None
    if spec.get("field_map"):
        fm = Path(spec["field_map"])
        geo.field_map = load_field_map(fm if fm.is_absolute() else path.parent / fm)
    return geo


class PhiBinning(NamedTuple):
    """Where points fall in the module grid of their surfaces (:func:`phi_binning`), per point."""

    n: np.ndarray  # (n,) modules in phi of the point's barrel layer or disk ring
    iphi: np.ndarray  # (n,) phi bin of the point
    frac: np.ndarray  # (n,) position inside the bin [0, 1)
    offset: np.ndarray  # (n,) module-id offset of the point's z row or ring

    def take(self, index: np.ndarray) -> PhiBinning:
        """The binning of the points ``index``.

        Args:
            index: indices or mask of the points kept.
        """
        return PhiBinning(*(a[index] for a in self))


def phi_binning(geo: Geometry, surface, x, y, z) -> PhiBinning:
    """Module grid position of points (x, y, z) on surfaces ``surface``; shared by
    :func:`module_ids` and :func:`overlap_side` so a caller needing both bins once.

    Args:
        geo: the detector geometry.
        surface: (n,) surface index of each point.
        x: (n,) positions in mm.
        y: (n,)
        z: (n,)

    Returns:
        The points' binning.
    """
    phi = np.arctan2(y, x)  # (n,)
    is_disk = geo.kind[surface] == DISK
    # barrel: (z bin, phi bin)
    n_phi_b = np.maximum(geo.n_phi[surface], 1)
    n_z = np.maximum(geo.n_z[surface], 1)
    zfrac = (z - geo.lo[surface]) / (geo.hi[surface] - geo.lo[surface])
    iz = np.clip((zfrac * n_z).astype(np.int64), 0, n_z - 1)
    # disk: ring (count of inner ring edges at or below r), then phi bin
    r = np.hypot(x, y)
    n_ring = geo.ring_nphi.shape[1]
    ring = np.zeros(len(r), np.int64)
    for k in range(1, n_ring):  # edges[k] is the outer edge of ring k - 1; barrel rows: inf
        ring += r >= geo.ring_edges[surface, k]
    ring_offset = np.cumsum(geo.ring_nphi, axis=1) - geo.ring_nphi  # (S, R)
    nphi_r = np.maximum(geo.ring_nphi[surface, ring], 1)
    offset_d = ring_offset[surface, ring]
    n = np.where(is_disk, nphi_r, n_phi_b)
    pos = (phi + np.pi) / (2 * np.pi) * n
    iphi = np.clip(pos.astype(np.int64), 0, n - 1)
    offset = np.where(is_disk, offset_d, iz * n_phi_b)
    return PhiBinning(n, iphi, pos - iphi, offset)


def module_ids(
    geo: Geometry,
    surface: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    shift: np.ndarray | int = 0,
    binning: PhiBinning | None = None,
    shift_z: np.ndarray | int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Module id (1-based, TrackML-like) and module centre phi of points on given surfaces.

    ``shift`` selects the phi-neighbour (+1 / -1) instead of the module under the point, and
    ``shift_z`` the neighbour along z of a barrel module (+1 / -1, its module row; 0 on disks);
    ``binning``: the points' :func:`phi_binning` when already known.

    Args:
        geo: the detector geometry.
        surface: (n,) surface index of each point.
        x: (n,) positions in mm.
        y: (n,)
        z: (n,)
        shift: phi-neighbour offset, per point or for all.
        binning: precomputed binning of the points.
        shift_z: z-neighbour offset (barrel), per point or for all.

    Returns:
        (n,) int64 module ids and (n,) float64 module centre phi.
    """
    n, iphi, _, offset = binning if binning is not None else phi_binning(geo, surface, x, y, z)
    iphi = (iphi + shift) % n
    if not np.all(np.asarray(shift_z) == 0):
        offset = offset + shift_z * np.where(geo.kind[surface] == DISK, 0, n)
    module = (offset + iphi + 1).astype(np.int32)
    phi_centre = -np.pi + (iphi + 0.5) * 2 * np.pi / n
    return module, phi_centre


def overlap_side(
    geo: Geometry,
    surface: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    binning: PhiBinning | None = None,
) -> np.ndarray:
    """-1 / +1 where a point lies in the band shared with the previous / next module in phi,
    else 0. ``binning``: as in :func:`module_ids`.

    A module shares ``overlap`` of its width w with each neighbour, and modules sit one phi bin
    p = w (1 - overlap) apart, so each band is overlap / (1 - overlap) / 2 of a bin wide on
    either side of a bin edge: a fraction overlap / (1 - overlap) = (w - p) / p of the
    crossings falls on two modules.

    Args:
        geo: the detector geometry.
        surface: (n,) surface index of each point.
        x: (n,) positions in mm.
        y: (n,)
        z: (n,)
        binning: precomputed binning of the points.

    Returns:
        (n,) int side.
    """
    frac = (binning if binning is not None else phi_binning(geo, surface, x, y, z)).frac
    ov = geo.overlap[surface]
    half = ov / (1.0 - ov) / 2
    return np.where(frac < half, -1, np.where(frac > 1 - half, 1, 0))


def z_overlap_side(geo: Geometry, surface: np.ndarray, z: np.ndarray) -> np.ndarray:
    """-1 / +1 where a point on a barrel layer lies within ``z_overlap`` / 2 of the edge it
    shares with the previous / next module along z (neighbouring modules overlap by
    ``z_overlap``, the end rows only on their inner side), else 0; 0 on disks.

    Args:
        geo: the detector geometry.
        surface: (n,) surface index of each point.
        z: (n,) z positions in mm.

    Returns:
        (n,) int side.
    """
    z_ov = geo.z_overlaps()[surface]
    barrel = (geo.kind[surface] == CYLINDER) & (z_ov > 0)
    n_z = np.maximum(geo.n_z[surface], 1)
    row = (z - geo.lo[surface]) / (geo.hi[surface] - geo.lo[surface]) * n_z  # (n,) in rows
    iz = np.clip(row.astype(np.int64), 0, n_z - 1)
    half = z_ov / 2 / ((geo.hi[surface] - geo.lo[surface]) / n_z)  # in rows
    frac = row - iz
    side = np.where(
        (frac < half) & (iz > 0), -1, np.where((frac > 1 - half) & (iz < n_z - 1), 1, 0)
    )
    return np.where(barrel, side, 0)
