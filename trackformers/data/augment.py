"""Training-time data augmentation of whole events: random rotation about the beam (z) axis
and reflection z -> -z. Both are symmetries of the detector and of the physics (uniform Bz,
beam along z), so a rotated or reflected event is another valid event with the same tracks.
A third option crops each training event to a random azimuthal wedge: a pile-up event's
tracks are trained on wedges of a few thousand hits (attention cost grows as n^2 per event)
and the model then runs on whole events; tracks above ~1 GeV bend little in the pixel layers,
so most stay inside a wedge, and a particle cut by its edge is trained on the hits it keeps.

Applied to the raw chunk before features and targets (``NativeEventStream``, training split
only), so every feature and target is computed from the transformed event and stays
consistent: positions and momenta (x, y rotated; z, pz, vz negated), truth positions and
momenta of the hits, and, under reflection, the endcap volume and layer ids (volume 7 <-> 9,
12 <-> 14, 16 <-> 18; TrackML numbers an endcap's disks from -z to +z, so layer
l -> 2 (n_disks + 1) - l). Module ids are not remapped (no feature reads them).

Deterministic: event e of epoch k gets its angle, flip and wedge from
``numpy.random.default_rng([seed, k, event_id])``, whatever the chunking or worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np

from trackformers.data.chunk import EventChunk, segment_ids

# endcap volume -> (volume on the other side of z = 0, disks per side), TrackML geometry
ENDCAP_MIRROR = {7: (9, 7), 9: (7, 7), 12: (14, 6), 14: (12, 6), 16: (18, 6), 18: (16, 6)}
ROTATED_PAIRS = (
    ("hit_x", "hit_y"),
    ("hit_tx", "hit_ty"),
    ("hit_tpx", "hit_tpy"),
    ("part_px", "part_py"),
    ("part_vx", "part_vy"),
)
REFLECTED = ("hit_z", "hit_tz", "hit_tpz", "part_pz", "part_vz")


@dataclass(frozen=True)
class AugmentConfig:
    """data.augment: which symmetries to apply to each training event (each with p = 1/2
    for the reflection, a uniform angle in [-pi, pi) for the rotation), and the width in
    radians of the azimuthal wedge each training event is cropped to (null = whole events)."""

    rotate_phi: bool = False
    reflect_z: bool = False
    crop_phi: float | None = None

    @classmethod
    def from_dict(cls, d: Mapping | None) -> AugmentConfig:
        """The config of ``data.augment`` (None: no augmentation).

        Args:
            d: mapping with keys ``rotate_phi``, ``reflect_z`` and ``crop_phi``.

        Returns:
            The config.

        Raises:
            ValueError: an unknown key, a flag that is not a bool, or a wedge width outside
                (0, 2 pi).
        """
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(
                f"data.augment has unknown key(s) {sorted(unknown)}; known: {sorted(known)}"
            )
        crop = d.pop("crop_phi", None)
        for k, v in d.items():
            if not isinstance(v, bool):
                raise ValueError(f"data.augment.{k} must be true or false, got {v!r}")
        if crop is not None:
            ok = isinstance(crop, (int, float)) and not isinstance(crop, bool)
            if not ok or not 0 < crop < 2 * np.pi:
                raise ValueError(
                    f"data.augment.crop_phi must be a wedge width in radians in (0, 2 pi) or "
                    f"null, got {crop!r}"
                )
            crop = float(crop)
        return cls(**d, crop_phi=crop)

    @property
    def enabled(self) -> bool:
        """True when at least one transform is on."""
        return self.rotate_phi or self.reflect_z or self.crop_phi is not None


def event_transforms(event_ids: np.ndarray, cfg: AugmentConfig, seed: int, epoch: int):
    """(angle (n,) float64 radians, flip (n,) bool, wedge start (n,) float64 radians) of each
    event, deterministic per event.

    Args:
        event_ids: (n,) event ids.
        cfg: which transforms are on.
        seed: run seed.
        epoch: training epoch (a new transform each epoch).

    Returns:
        The angles (0 when rotation is off), the flips (False when reflection is off) and the
        wedge starts in [-pi, pi) (unused without ``crop_phi``).
    """
    n = len(event_ids)
    angle, flip, start = np.zeros(n), np.zeros(n, dtype=bool), np.zeros(n)
    for i, eid in enumerate(np.asarray(event_ids).astype(np.uint64)):
        rng = np.random.default_rng([int(seed) % 2**63, int(epoch), int(eid)])
        a, f = rng.uniform(-np.pi, np.pi), rng.random() < 0.5
        angle[i] = a if cfg.rotate_phi else 0.0
        flip[i] = f if cfg.reflect_z else False
        start[i] = rng.uniform(-np.pi, np.pi)
    return angle, flip, start


def crop_chunk(chunk: EventChunk, start: np.ndarray, width: float) -> EventChunk:
    """The chunk with event i's hits kept where their azimuth lies in
    [start[i], start[i] + width) (modulo 2 pi); events and particles stay.

    Args:
        chunk: the events.
        start: (n,) wedge start of each event in radians.
        width: wedge width in radians.

    Returns:
        The cropped chunk.
    """
    phi = np.arctan2(chunk.hits["hit_y"], chunk.hits["hit_x"]).astype(np.float64)  # (N,)
    offset = np.mod(phi - start[segment_ids(chunk.hit_offsets)], 2 * np.pi)  # (N,)
    return chunk.select_hits(offset < width)


def transform_chunk(chunk: EventChunk, angle: np.ndarray, flip: np.ndarray) -> EventChunk:
    """The chunk with event i rotated by angle[i] about z, then reflected in z if flip[i].

    Args:
        chunk: the events.
        angle: (n,) rotation angle of each event in radians.
        flip: (n,) bool, reflect the event in z.

    Returns:
        A new chunk; positions, momenta and vertices transformed, the rest shared.
    """
    hit_ev = segment_ids(chunk.hit_offsets)  # (N,) event of each hit
    part_ev = segment_ids(chunk.part_offsets) if chunk.part_offsets is not None else None
    hits, parts = dict(chunk.hits), dict(chunk.parts)
    for a, b in ROTATED_PAIRS:
        table, ev = (hits, hit_ev) if a.startswith("hit_") else (parts, part_ev)
        if a not in table or b not in table:
            continue
        c, s = np.cos(angle[ev]), np.sin(angle[ev])  # (rows,)
        x, y = table[a].astype(np.float64), table[b].astype(np.float64)
        table[a] = (c * x - s * y).astype(table[a].dtype)
        table[b] = (s * x + c * y).astype(table[b].dtype)
    for name in REFLECTED:
        table, ev = (hits, hit_ev) if name.startswith("hit_") else (parts, part_ev)
        if name in table:
            table[name] = np.where(flip[ev], -table[name], table[name]).astype(table[name].dtype)
    if flip.any() and "hit_volume_id" in hits:
        vol = hits["hit_volume_id"]
        hit_flip = flip[hit_ev]
        new_vol = vol.copy()
        layer = hits.get("hit_layer_id")
        new_layer = None if layer is None else layer.copy()
        for v, (mirror, n_disks) in ENDCAP_MIRROR.items():
            sel = hit_flip & (vol == v)
            new_vol[sel] = mirror
            if new_layer is not None:
                new_layer[sel] = 2 * (n_disks + 1) - layer[sel]
        hits["hit_volume_id"] = new_vol
        if new_layer is not None:
            hits["hit_layer_id"] = new_layer
    return EventChunk(
        event=chunk.event,
        hit_offsets=chunk.hit_offsets,
        hits=hits,
        part_offsets=chunk.part_offsets,
        parts=parts,
        source=chunk.source,
        hit_part_row=chunk.hit_part_row,
    )


def augment_chunk(chunk: EventChunk, cfg: AugmentConfig, seed: int, epoch: int) -> EventChunk:
    """Every event of the chunk rotated / reflected / cropped as ``cfg`` says (see the
    module doc).

    Args:
        chunk: the events.
        cfg: which transforms are on.
        seed: run seed.
        epoch: training epoch.

    Returns:
        The transformed chunk (``chunk`` itself when no transform is on).
    """
    if not cfg.enabled or chunk.num_events == 0:
        return chunk
    angle, flip, start = event_transforms(chunk.event_ids, cfg, seed, epoch)
    if cfg.rotate_phi or cfg.reflect_z:
        chunk = transform_chunk(chunk, angle, flip)
    return chunk if cfg.crop_phi is None else crop_chunk(chunk, start, cfg.crop_phi)
