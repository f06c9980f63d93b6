"""Particle ids that carry their vertex and generation, packed in 64 bits like TrackML's.

``vertex_id << 32 | generation << 24 | number``: vertex_id 0 is the hard scatter, 1..N the
pile-up vertices; generation 0 is a generator particle (number = index within its vertex + 1),
generation g > 0 a secondary made in the detector material by a particle of generation g - 1
(number = 1, 2, ... within its vertex and generation). Id 0 is reserved for noise hits. Ids are
uint64 throughout and never pass through float64.
"""

from __future__ import annotations

import numpy as np

VERTEX_SHIFT = np.uint64(32)
GENERATION_SHIFT = np.uint64(24)
MAX_NUMBER = (1 << 24) - 1
MAX_GENERATION = 255


def encode_particle_id(
    vertex_id: np.ndarray, index: np.ndarray, generation: np.ndarray | int = 0
) -> np.ndarray:
    """Particle id from vertex id, 0-based index within (vertex, generation), and generation.

    Args:
        vertex_id: vertex of each particle (0 = hard scatter).
        index: index within (vertex, generation).
        generation: 0 for generator particles, g for g-th generation secondaries.

    Returns:
        uint64 particle ids.
    """
    v = np.asarray(vertex_id, dtype=np.uint64)
    idx = np.asarray(index, dtype=np.int64)
    g = np.asarray(generation, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= MAX_NUMBER):
        raise ValueError(f"particle index must be in [0, {MAX_NUMBER}), got {idx.max()}")
    if g.size and (g.min() < 0 or g.max() > MAX_GENERATION):
        raise ValueError(f"particle generation must be in [0, {MAX_GENERATION}], got {g.max()}")
    i = idx.astype(np.uint64) + np.uint64(1)
    return (v << VERTEX_SHIFT) | (g.astype(np.uint64) << GENERATION_SHIFT) | i


def decode_vertex_id(particle_id: np.ndarray) -> np.ndarray:
    """Vertex id (0 = hard scatter) of encoded particle ids.

    Args:
        particle_id: encoded particle ids.

    Returns:
        The vertex ids.
    """
    return (np.asarray(particle_id, dtype=np.uint64) >> VERTEX_SHIFT).astype(np.int64)


def decode_generation(particle_id: np.ndarray) -> np.ndarray:
    """Generation (0 = generator particle, g > 0 = g-th generation secondary) of encoded ids.

    Args:
        particle_id: encoded particle ids.

    Returns:
        The generations.
    """
    pid = np.asarray(particle_id, dtype=np.uint64)
    return ((pid >> GENERATION_SHIFT) & np.uint64(0xFF)).astype(np.int64)
