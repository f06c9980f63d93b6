"""The native ROOT event format (DESIGN.md): one TTree ``events``, one entry per event.

Everything that writes or reads native files takes branch names and dtypes from here.
"""

from __future__ import annotations

import numpy as np

TREE_NAME = "events"
METADATA_KEY = "metadata"  # TObjString holding provenance JSON

# per-event scalars
EVENT_BRANCHES: dict[str, np.dtype] = {
    "event_id": np.dtype(np.uint64),
    "pileup": np.dtype(np.int32),
}

# jagged per-hit branches (counter branch "nhit")
HIT_BRANCHES: dict[str, np.dtype] = {
    "hit_id": np.dtype(np.uint64),
    "hit_x": np.dtype(np.float32),
    "hit_y": np.dtype(np.float32),
    "hit_z": np.dtype(np.float32),
    "hit_volume_id": np.dtype(np.int32),
    "hit_layer_id": np.dtype(np.int32),
    "hit_module_id": np.dtype(np.int32),
    "hit_particle_id": np.dtype(np.uint64),  # 0 = noise
    "hit_weight": np.dtype(np.float32),  # TrackML scoring weight
    "hit_tx": np.dtype(np.float32),
    "hit_ty": np.dtype(np.float32),
    "hit_tz": np.dtype(np.float32),
    "hit_tpx": np.dtype(np.float32),
    "hit_tpy": np.dtype(np.float32),
    "hit_tpz": np.dtype(np.float32),
}

# jagged per-particle branches (counter branch "npart")
PARTICLE_BRANCHES: dict[str, np.dtype] = {
    "part_particle_id": np.dtype(np.uint64),
    "part_pdg_id": np.dtype(np.int32),
    "part_vertex_id": np.dtype(np.int32),  # 0 = hard scatter
    "part_vx": np.dtype(np.float32),
    "part_vy": np.dtype(np.float32),
    "part_vz": np.dtype(np.float32),
    "part_px": np.dtype(np.float32),
    "part_py": np.dtype(np.float32),
    "part_pz": np.dtype(np.float32),
    "part_q": np.dtype(np.int32),
    "part_nhits": np.dtype(np.int32),
    "part_parent_id": np.dtype(np.uint64),  # particle that made this secondary; 0 = none
    "part_process": np.dtype(np.int32),  # PROCESS_* below
}

# part_process codes: how a particle was made
PROCESS_UNKNOWN = -1  # imported data that does not say (TrackML CSV, ACTS ROOT)
PROCESS_GENERATOR = 0  # event generator: hard scatter, pile-up, decays in flight
PROCESS_CONVERSION = 1  # photon conversion in the detector material
PROCESS_NUCLEAR = 2  # inelastic nuclear interaction in the detector material

# Optional per-hit cluster summary (counter "nhit"), computed from the hit's cells by
# trackformers.sim.clusters.cluster_summary (simulation and TrackML import alike). A file holds
# all of them or none; features that use them (trackformers.data.features) require them.
CLUSTER_BRANCHES: dict[str, np.dtype] = {
    "hit_ncells": np.dtype(np.int32),  # cells above threshold (0: the hit has no cells)
    "hit_charge": np.dtype(np.float32),  # sum of the cell values (deposited energy, MeV)
    "hit_size_u": np.dtype(np.int32),  # extent along ch0 (module u, r*phi), in cells
    "hit_size_v": np.dtype(np.int32),  # extent along ch1 (module v: z barrel, r disk), cells
    "hit_leta": np.dtype(np.float32),  # local pseudorapidity of (l_u, l_v, thickness)
    "hit_lphi": np.dtype(np.float32),  # local azimuth atan2(l_v, l_u), in [0, pi/2]
}

# Optional cells of every hit, flattened per event (counter "ncell"), as TrackML's cells file:
# sorted by hit id, then ch0, ch1 (simulation); the TrackML import keeps the file's order.
CELL_BRANCHES: dict[str, np.dtype] = {
    "cell_hit_id": np.dtype(np.uint64),  # hit_id of the hit the cell belongs to
    "cell_ch0": np.dtype(np.int32),  # channel along the module's u axis (0-based)
    "cell_ch1": np.dtype(np.int32),  # channel along the module's v axis (0-based)
    "cell_value": np.dtype(np.float32),  # deposited energy (MeV)
}

HIT_COUNTER = "nhit"
PARTICLE_COUNTER = "npart"
CELL_COUNTER = "ncell"
ALL_BRANCHES = {**EVENT_BRANCHES, **HIT_BRANCHES, **PARTICLE_BRANCHES}
OPTIONAL_BRANCHES = {**CLUSTER_BRANCHES, **CELL_BRANCHES}
KNOWN_BRANCHES = {**ALL_BRANCHES, **OPTIONAL_BRANCHES}

# Pixel detector volumes of the TrackML geometry (barrel 8, endcaps 7 / 9).
PIXEL_VOLUMES = (7, 8, 9)
BARREL_VOLUMES = (8, 13, 17)


def unknown_origin(n: int) -> dict[str, np.ndarray]:
    """part_parent_id / part_process of ``n`` imported particles whose origin is not known.

    Args:
        n: number of particles.
    """
    return {
        "part_parent_id": np.zeros(n, PARTICLE_BRANCHES["part_parent_id"]),
        "part_process": np.full(n, PROCESS_UNKNOWN, PARTICLE_BRANCHES["part_process"]),
    }
