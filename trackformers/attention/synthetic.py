"""Synthetic pixel-detector batches for attention tests and benchmarks (no physics claims).

Charged tracks leave the beamline from vertices with z ~ N(0, 50 mm), helices in Bz = 2 T
(R[mm] = 1667.8 pT[GeV]), and are intersected with the TrackML pixel barrel layers
(r = 32, 72, 116, 172 mm, |z| <= 491) and endcap disks (|z| = 600..1500 mm, r 31-176).
Enough geometry for the cluster plan to see realistic hit densities; the real simulation
lives in trackformers.sim.
"""

from __future__ import annotations

import numpy as np
import torch

from trackformers.data.batch import PackedBatch

BARREL_R = np.array([32.0, 72.0, 116.0, 172.0])
DISK_Z = np.array([600.0, 700.0, 820.0, 960.0, 1100.0, 1300.0, 1500.0])


def synthetic_pixel_hits(n_hits: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Return coords (n_hits, 3) float32 in mm and particle ids (n_hits,) int64 (>= 1).

    Args:
        n_hits: hits to make (particles crossing pixel barrel layers and disks).
        rng: random generator.
    """
    if n_hits < 0:
        raise ValueError(f"n_hits must be >= 0, got {n_hits}")
    coords, pids, total, pid = [np.zeros((0, 3))], [np.zeros(0, np.int64)], 0, 0
    while total < n_hits:
        m = 4096
        pt = 0.3 + rng.exponential(0.7, m)  # GeV
        eta = rng.uniform(-3.5, 3.5, m)
        phi0 = rng.uniform(-np.pi, np.pi, m)
        q = rng.choice([-1.0, 1.0], m)
        z0 = rng.normal(0.0, 50.0, m)
        radius = 1667.8 * pt  # mm
        cot = np.sinh(eta)
        # barrel crossings: transverse path to radius r is s = 2 R asin(r / 2R)
        rr = BARREL_R[None, :]  # (1, 4)
        s_b = 2 * radius[:, None] * np.arcsin(np.clip(rr / (2 * radius[:, None]), 0, 1))
        z_b = z0[:, None] + s_b * cot[:, None]
        ok_b = np.abs(z_b) <= 491.0
        phi_b = phi0[:, None] - q[:, None] * s_b / (2 * radius[:, None])
        # endcap crossings
        zz = np.sign(cot)[:, None] * DISK_Z[None, :]  # (m, 7)
        s_d = (zz - z0[:, None]) / np.where(cot == 0, 1e-9, cot)[:, None]
        r_d = 2 * radius[:, None] * np.abs(np.sin(s_d / (2 * radius[:, None])))
        ok_d = (s_d > 0) & (r_d >= 31.0) & (r_d <= 176.0) & (s_d < np.pi * radius[:, None])
        phi_d = phi0[:, None] - q[:, None] * s_d / (2 * radius[:, None])
        for r_, z_, p_, ok in (
            (np.broadcast_to(rr, s_b.shape), z_b, phi_b, ok_b),
            (r_d, zz, phi_d, ok_d),
        ):
            idx = np.nonzero(ok)
            rv, zv, pv = r_[idx], z_[idx], p_[idx]
            coords.append(np.stack([rv * np.cos(pv), rv * np.sin(pv), zv], 1))
            pids.append(pid + 1 + idx[0])
            total += len(idx[0])
        pid += m
    xyz = np.concatenate(coords)[:n_hits].astype(np.float32)
    order = rng.permutation(n_hits)  # hits arrive unordered
    return xyz[order], np.concatenate(pids)[:n_hits].astype(np.int64)[order]


def synthetic_batch(
    sizes: list[int],
    num_features: int = 3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    num_params: int = 0,
    num_classes: int = 0,
) -> PackedBatch:
    """Packed batch of len(sizes) synthetic events; x = coords scaled, padded with noise.

    ``num_params`` / ``num_classes`` > 0 add the training targets of the regression and
    classification heads, drawn per particle (every hit of a particle carries the same):
    targets["params"] (N, num_params) float32, targets["class"] (N,) int64 and
    targets["valid"] (N,) bool (all True).

    Args:
        sizes: hits of each event.
        num_features: input features per hit.
        seed: random seed.
        device: device of the tensors.
        num_params: regression targets per hit (0: none).
        num_classes: classes of the classification target (0: none).

    Returns:
        The batch (coords, particle ids and targets included).
    """
    if not sizes:
        raise ValueError("synthetic_batch needs at least one event size")
    rng = np.random.default_rng(seed)
    xyz, pid = zip(*(synthetic_pixel_hits(n, rng) for n in sizes), strict=True)
    coords = torch.from_numpy(np.concatenate(xyz))  # (N, 3)
    n = coords.shape[0]
    extra = torch.from_numpy(rng.standard_normal((n, max(0, num_features - 3))).astype("f4"))
    x = torch.cat([coords / 1000.0, extra], 1)[:, :num_features]  # (N, F)
    cu = torch.tensor(np.concatenate([[0], np.cumsum(sizes)]), dtype=torch.int32)
    particle_id = torch.from_numpy(np.concatenate(pid))  # (N,)
    targets = {}
    if num_params > 0 or num_classes > 0:
        _, inverse = torch.unique(particle_id, return_inverse=True)  # (N,) particle index
        n_part = int(inverse.max()) + 1 if n else 0
        if num_params > 0:
            per = torch.from_numpy(rng.standard_normal((n_part, num_params)).astype("f4"))
            targets["params"] = per[inverse]  # (N, num_params)
        if num_classes > 0:
            targets["class"] = torch.from_numpy(rng.integers(0, num_classes, n_part))[inverse]
        targets["valid"] = torch.ones(n, dtype=torch.bool)
    batch = PackedBatch(
        x=x,
        cu_seqlens=cu,
        max_seqlen=max(sizes),
        coords=coords,
        particle_id=particle_id,
        targets=targets,
    )
    return batch.to(device)
