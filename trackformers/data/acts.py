"""Import ACTS simulation output (``hits.root`` + ``particles.root``) into native events.

``hits.root`` (RootSimHitWriter, tree ``hits``): one entry per hit, hits of one event
contiguous. ``particles.root`` (RootParticleWriter, tree ``particles``): one entry per event
with vector branches. Branch names changed across ACTS versions; every field below is looked
up through its known aliases, and the particle identity in any of its three forms:

    * ``particle_id`` (uint64 barcode value; older ACTS),
    * ``barcode_vertex_primary`` ... ``barcode_sub_particle`` (uint32 components),
    * ``barcode`` (std::vector<uint32> of the five components; newest ACTS).

Particles give either ``particle_id`` or the components ``vertex_primary`` ... ``sub_particle``
(newest ACTS also has ``particle_hash``). Components are packed into the ACTS barcode layout
(12|12|16|8|16 bits), so hits and particles match whichever forms the two files use. Hit
positions are the true sim-hit positions (ACTS sim hits are not smeared). Weights are computed
with the official TrackML rule.

Every event of the particles file becomes one event, in event-id order: an event whose
particles left no hit is kept as an event without hits (the data pipeline then skips it with
a count, ``empty_events``); hits of an event without a particles entry are an error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import awkward as ak
import numpy as np
import uproot

from trackformers.data.errors import DataError, RepairLog, log
from trackformers.data.schema import unknown_origin
from trackformers.sim.weights import trackml_weights

HIT_ALIASES = {
    "event": ("event_id", "event_nr", "event_number"),
    "x": ("tx", "g_x", "x"),
    "y": ("ty", "g_y", "y"),
    "z": ("tz", "g_z", "z"),
    "px": ("tpx", "px"),
    "py": ("tpy", "py"),
    "pz": ("tpz", "pz"),
    "volume": ("volume_id", "volume"),
    "layer": ("layer_id", "layer"),
    "module": ("sensitive_id", "module_id", "surface_id", "sensitive"),
}
PART_ALIASES = {
    "event": ("event_id", "event_nr", "event_number"),
    "vx": ("vx",),
    "vy": ("vy",),
    "vz": ("vz",),
    "px": ("px",),
    "py": ("py",),
    "pz": ("pz",),
    "q": ("q", "charge"),
    "pdg": ("particle_type", "pdg", "pdg_id"),
    "nhits": ("number_of_hits", "nhits"),
}
HIT_COMPONENTS = (
    "barcode_vertex_primary",
    "barcode_vertex_secondary",
    "barcode_particle",
    "barcode_generation",
    "barcode_sub_particle",
)
PART_COMPONENTS = ("vertex_primary", "vertex_secondary", "particle", "generation", "sub_particle")
BARCODE_BITS = (12, 12, 16, 8, 16)
OPTIONAL = {"nhits", "pdg", "module"}


def pack_barcode(components) -> np.ndarray:
    """uint64 ACTS barcode value from its five components (vp, vs, particle, gen, sub).

    Args:
        components: the five component arrays, in that order.
    """
    out = np.zeros(len(components[0]), dtype=np.uint64)
    for comp, bits in zip(components, BARCODE_BITS, strict=True):
        c = np.asarray(comp).astype(np.uint64)
        if len(c) and c.max() >= (1 << bits):
            raise DataError(f"barcode component value {int(c.max())} exceeds {bits} bits")
        out = (out << np.uint64(bits)) | c
    return out


def _resolve(tree, aliases: dict, source: str) -> dict[str, str]:
    have = set(tree.keys(recursive=False))
    found = {}
    for field, names in aliases.items():
        name = next((n for n in names if n in have), None)
        if name is None and field not in OPTIONAL:
            raise DataError(
                f"{source}: no branch for {field} (tried {list(names)}); "
                f"tree '{tree.name}' has {sorted(have)}"
            )
        if name is not None:
            found[field] = name
    return found


def _hit_id_form(tree, source: str) -> str:
    have = set(tree.keys(recursive=False))
    if all(c in have for c in HIT_COMPONENTS):
        return "components"
    if "barcode" in have:
        jagged = isinstance(tree["barcode"].interpretation, uproot.AsJagged)
        return "barcode_vector" if jagged else "particle_id"  # old ACTS: scalar uint64 barcode
    if "particle_id" in have:
        return "particle_id"
    raise DataError(
        f"{source}: no particle identity branch (particle_id, barcode_* or barcode); "
        f"has {sorted(have)}"
    )


def _open(path, tree_name: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ACTS file not found: {path}")
    try:
        f = uproot.open(path)
        return f[tree_name]
    except KeyError as err:
        raise DataError(f"{path}: no tree '{tree_name}'") from err
    except Exception as err:
        raise DataError(f"{path}: not a readable ROOT file ({type(err).__name__}: {err})") from err


def _event_blocks(event: np.ndarray, source: str) -> dict[int, tuple[int, int]]:
    """{event id: (first entry, stop)} of contiguous hit blocks; error if an event is split."""
    if len(event) == 0:
        return {}
    starts = np.flatnonzero(np.r_[True, event[1:] != event[:-1]])
    stops = np.r_[starts[1:], len(event)]
    ids = event[starts]
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        bad = int(uniq[counts > 1][0])
        raise DataError(f"{source}: hits of event {bad} are not contiguous")
    return {int(e): (int(a), int(b)) for e, a, b in zip(ids, starts, stops, strict=True)}


def _hit_particle_ids(arr, form: str, names) -> np.ndarray:
    if form == "components":
        return pack_barcode([arr[c] for c in HIT_COMPONENTS])
    if form == "barcode_vector":
        bc = arr["barcode"]
        if len(bc) and np.any(ak.to_numpy(ak.num(bc)) != 5):
            raise DataError("barcode vectors must hold 5 components")
        comps = ak.to_numpy(ak.flatten(bc)).reshape(-1, 5) if len(bc) else np.zeros((0, 5))
        return pack_barcode([comps[:, i] for i in range(5)])
    name = "particle_id" if "particle_id" in arr.fields else "barcode"
    return ak.to_numpy(arr[name]).astype(np.uint64)


def _particle_id_branches(tree, source: str) -> list[str]:
    """Branches that carry the particle identity in a particles tree; error naming the file."""
    have = set(tree.keys(recursive=False))
    if all(c in have for c in PART_COMPONENTS):
        return list(PART_COMPONENTS)
    if "particle_id" in have:
        return ["particle_id"]
    partial = [c for c in PART_COMPONENTS if c in have]
    lacking = [c for c in PART_COMPONENTS if c not in have] if partial else ["particle_id"]
    raise DataError(
        f"{source}: tree '{tree.name}' has no branch {', '.join(lacking)} (the particle id is "
        f"either particle_id or all of {list(PART_COMPONENTS)}); it has {sorted(have)}"
    )


def _particle_ids(parts, source: str) -> np.ndarray:
    if all(c in parts.fields for c in PART_COMPONENTS):
        return pack_barcode([ak.to_numpy(parts[c]) for c in PART_COMPONENTS])
    if "particle_id" in parts.fields:
        return ak.to_numpy(parts["particle_id"]).astype(np.uint64)
    raise DataError(
        f"{source}: particles need particle_id or the barcode components {list(PART_COMPONENTS)}"
    )


def iter_acts(
    hits_path, particles_path, repairs: RepairLog, on_error: str = "raise"
) -> Iterator[dict]:
    """Native event dicts, one per event of the particles file (event-id order), empty ones too.

    A file-level problem (a missing branch) stops the import with ``on_error="raise"``; with
    ``"skip"`` every event is skipped and counted (``skipped_events``) and nothing is yielded.

    Args:
        hits_path: ACTS ``hits.root``.
        particles_path: ACTS ``particles.root``.
        repairs: log of counted repairs and skipped events.
        on_error: ``raise`` or ``skip``.

    Yields:
        Native event dicts (schema names and dtypes).
    """
    hsrc, psrc = str(hits_path), str(particles_path)
    htree, ptree = _open(hits_path, "hits"), _open(particles_path, "particles")
    hnames, pnames = _resolve(htree, HIT_ALIASES, hsrc), _resolve(ptree, PART_ALIASES, psrc)
    form = _hit_id_form(htree, hsrc)
    id_branches = {"components": list(HIT_COMPONENTS), "barcode_vector": ["barcode"]}.get(
        form, ["particle_id" if "particle_id" in htree.keys() else "barcode"]
    )
    try:
        pid_branches = _particle_id_branches(ptree, psrc)
    except DataError as err:
        if on_error == "raise":
            raise
        log.error("skipping all events of %s: %s", psrc, err)
        repairs.add(psrc, "skipped_events", ptree.num_entries, note=str(err))
        return
    try:
        hit_events = htree[hnames["event"]].array(library="np").astype(np.int64)
        part_events = ptree[pnames["event"]].array(library="np").astype(np.int64)
    except Exception as err:
        raise DataError(f"{hsrc} / {psrc}: cannot read event ids ({err})") from err
    blocks = _event_blocks(hit_events, hsrc)
    part_entry = {int(e): i for i, e in enumerate(part_events)}
    hit_fields = [hnames[k] for k in ("x", "y", "z", "px", "py", "pz", "volume", "layer")]
    hit_fields += [hnames["module"]] if "module" in hnames else []
    part_fields = [pnames[k] for k in PART_ALIASES if k in pnames and k != "event"]
    if len(part_entry) != len(part_events):
        raise DataError(f"{psrc}: an event id appears in more than one particles entry")
    for event_id in sorted(set(blocks) | set(part_entry)):
        a, b = blocks.get(event_id, (0, 0))  # no hits: an empty event, still an event
        try:
            if event_id not in part_entry:
                raise DataError(f"{psrc}: no particles entry for event {event_id} of {hsrc}")
            i = part_entry[event_id]
            try:
                h = htree.arrays([*hit_fields, *id_branches], entry_start=a, entry_stop=b)
                p = ptree.arrays([*part_fields, *pid_branches], entry_start=i, entry_stop=i + 1)
            except Exception as err:  # uproot raises many types for unreadable baskets
                raise DataError(
                    f"{hsrc} / {psrc}: cannot read event {event_id} ({type(err).__name__}: {err})"
                ) from err
            yield _event(
                event_id, h, p[0], hnames, pnames, form, repairs, hsrc, psrc, trackml_weights
            )
        except DataError as err:
            if on_error == "raise":
                raise
            log.error("skipping ACTS event %d: %s", event_id, err)
            repairs.add(hsrc, "skipped_events", 1, note=str(err))


def _event(event_id, h, p, hnames, pnames, form, repairs, hsrc, psrc, weights_fn) -> dict:
    col = lambda arr, name: ak.to_numpy(arr[name])
    x, y, z = (col(h, hnames[k]).astype(np.float64) for k in ("x", "y", "z"))
    good = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
    if not good.all():
        repairs.add(hsrc, "nonfinite_hits", int((~good).sum()))
    hit_pid = _hit_particle_ids(h, form, hnames)[good]
    part_pid = _particle_ids(p, psrc)
    if len(np.unique(part_pid)) != len(part_pid):
        raise DataError(f"{psrc}: event {event_id} lists a particle id twice")
    pf = {
        k: ak.to_numpy(p[pnames[k]]).astype(np.float64)
        for k in ("vx", "vy", "vz", "px", "py", "pz", "q")
    }
    finite = np.all([np.isfinite(v) for v in pf.values()], axis=0) if len(part_pid) else None
    if finite is not None and not finite.all():
        repairs.add(psrc, "nonfinite_particles", int((~finite).sum()))
        part_pid = part_pid[finite]
        pf = {k: v[finite] for k, v in pf.items()}
    unknown = ~np.isin(hit_pid, part_pid)
    repairs.add(hsrc, "particles_without_row", int(len(np.unique(hit_pid[unknown]))))
    n = int(good.sum())
    f32 = lambda a: np.asarray(a, dtype=np.float32)
    order = np.argsort(part_pid)
    counts = np.bincount(
        np.searchsorted(part_pid[order], hit_pid[~unknown]), minlength=len(part_pid)
    )
    nhits = np.empty(len(part_pid), dtype=np.int32)
    nhits[order] = counts  # hits per particle, counted from this file's hits
    pdg = (
        ak.to_numpy(p[pnames["pdg"]]).astype(np.int32)
        if "pdg" in pnames
        else np.zeros(len(pf["vx"]), np.int32)
    )
    if finite is not None and not finite.all():
        pdg = pdg[finite]
    ev = {
        "event_id": np.uint64(event_id),
        "hit_id": np.arange(1, n + 1, dtype=np.uint64),
        "hit_x": f32(x[good]),
        "hit_y": f32(y[good]),
        "hit_z": f32(z[good]),
        "hit_volume_id": col(h, hnames["volume"])[good].astype(np.int32),
        "hit_layer_id": col(h, hnames["layer"])[good].astype(np.int32),
        "hit_module_id": (
            col(h, hnames["module"])[good].astype(np.int32)
            if "module" in hnames
            else np.zeros(n, np.int32)
        ),
        "hit_particle_id": hit_pid,
        "hit_tx": f32(x[good]),
        "hit_ty": f32(y[good]),
        "hit_tz": f32(z[good]),
        **{f"hit_t{k}": f32(col(h, hnames[k])[good]) for k in ("px", "py", "pz")},
        "part_particle_id": part_pid,
        "part_pdg_id": pdg,
        "part_vertex_id": np.maximum((part_pid >> np.uint64(52)).astype(np.int64) - 1, 0).astype(
            np.int32
        ),
        **{f"part_{k}": f32(pf[k]) for k in ("vx", "vy", "vz", "px", "py", "pz")},
        "part_q": np.rint(pf["q"]).astype(np.int32),
        "part_nhits": nhits,
        **unknown_origin(len(part_pid)),
    }
    ev["pileup"] = np.int32(max(len(np.unique(ev["part_vertex_id"])) - 1, 0))
    ev["hit_weight"] = weights_fn(
        hit_pid, ev["hit_tz"], part_pid, ev["part_vz"], ev["part_px"], ev["part_py"]
    ).astype(np.float32)
    return ev
