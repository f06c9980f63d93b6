"""Particle ids that carry their vertex: ``vertex_id << 32 | (index within vertex + 1)``.

vertex_id 0 is the hard scatter, 1..N the pile-up vertices; id 0 is reserved for noise hits.
"""

from __future__ import annotations

import numpy as np

VERTEX_SHIFT = np.uint64(32)


def encode_particle_id(vertex_id: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Particle id from vertex id and the particle's 0-based index within its vertex."""
    v = np.asarray(vertex_id, dtype=np.uint64)
    i = np.asarray(index, dtype=np.uint64) + np.uint64(1)
    return (v << VERTEX_SHIFT) | i


def decode_vertex_id(particle_id: np.ndarray) -> np.ndarray:
    """Vertex id (0 = hard scatter) of encoded particle ids."""
    return (np.asarray(particle_id, dtype=np.uint64) >> VERTEX_SHIFT).astype(np.int64)
