"""Validation plot of simulated events against expectations.

:func:`validation_summary` computes the numbers; :func:`validation_plot` draws a 2 x 2 PNG:
hits per particle (pT > 0.9 GeV and all) against the expected ~10-12, hits per volume
against an ideal-detector expectation (same particles, efficiency 1, no material effects, no
overlaps) and the TrackML totals scaled to the event's pile-up, the r-z map of hits on the layer
surfaces, and the residual pulls (hit - truth) / sigma in the module frame (expected: unit
Gaussians).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from trackformers.sim.detector import DetectorConfig, DetectorSim
from trackformers.sim.geometry import CYLINDER, Geometry, load_geometry, module_ids
from trackformers.sim.particle_table import DEFAULT_MASS, MASSES

PIXEL = (7, 8, 9)
# TrackML per-event totals at mu = 200 (DESIGN.md), scaled by (pile-up + 1) / 201
TRACKML_MU200 = {"hits": (100_000, 120_000), "pixel hits": (55_000, 75_000)}


def _surfaces(geo: Geometry, ev: dict) -> np.ndarray:
    lookup = {
        (int(v), int(lay)): i
        for i, (v, lay) in enumerate(zip(geo.volume_id, geo.layer_id, strict=True))
    }
    return np.asarray(
        [
            lookup[(int(v), int(lay))]
            for v, lay in zip(ev["hit_volume_id"], ev["hit_layer_id"], strict=True)
        ],
        dtype=np.int64,
    )


def _module_phi(geo: Geometry, s, tx, ty, tz, module) -> np.ndarray:
    """Centre phi of each hit's own module: the module under the true position or, for the
    second hit of a crossing where modules overlap, its phi neighbour (a neighbour along z has
    the same centre phi)."""
    cand = [module_ids(geo, s, tx, ty, tz, shift) for shift in (0, 1, -1)]
    match = [m == module for m, _ in cand]
    return np.select(match, [phi for _, phi in cand], default=cand[0][1])


def _ideal_counts(geo: Geometry, ev: dict) -> np.ndarray:
    """Hits per volume id from the same particles through an ideal detector."""
    particles = {
        "particle_id": ev["part_particle_id"],
        "pdg_id": ev["part_pdg_id"],
        "vertex_id": ev["part_vertex_id"],
        **{k: ev[f"part_{k}"].astype(np.float64) for k in ("vx", "vy", "vz", "px", "py", "pz")},
        "q": ev["part_q"].astype(np.float64),
        "mass": np.asarray([MASSES.get(abs(int(p)), DEFAULT_MASS) for p in ev["part_pdg_id"]]),
    }
    no_overlap = {"overlap": np.zeros_like(geo.overlap), "z_overlap": None}
    ideal_geo = Geometry(**{**geo.__dict__, **no_overlap})
    cfg = DetectorConfig(efficiency=1.0, scattering=False, energy_loss=False, smearing=False)
    out = DetectorSim(cfg, ideal_geo).simulate(particles, event_id=0, pileup=0, seed=0)
    return np.bincount(out["hit_volume_id"], minlength=geo.volume_id.max() + 1)


def validation_summary(events: list[dict], geometry: Geometry | None = None) -> dict:
    """Per-event means and the arrays the plot shows.

    Args:
        events: simulated event dicts.
        geometry: their geometry (None: the TrackML one).
    """
    geo = geometry or load_geometry()
    n_vol = int(geo.volume_id.max()) + 1
    per_vol, ideal_vol, hpp_all, hpp_hi, pulls_u, pulls_v, rz = [], [], [], [], [], [], []
    pull_vol = []
    for ev in events:
        true = ev["hit_particle_id"] > 0
        per_vol.append(np.bincount(ev["hit_volume_id"][true], minlength=n_vol))
        ideal_vol.append(_ideal_counts(geo, ev))
        pt = np.hypot(ev["part_px"], ev["part_py"])
        hpp_all.append(ev["part_nhits"][ev["part_nhits"] > 0])
        hpp_hi.append(ev["part_nhits"][(pt > 0.9) & (ev["part_nhits"] > 0)])
        s = _surfaces(geo, ev)
        x, y, z = (ev[f"hit_{c}"].astype(np.float64) for c in "xyz")
        tx, ty, tz = (ev[f"hit_t{c}"].astype(np.float64) for c in "xyz")
        phi_c = _module_phi(geo, s, tx, ty, tz, ev["hit_module_id"])
        du = -np.sin(phi_c) * (x - tx) + np.cos(phi_c) * (y - ty)
        cyl = geo.kind[s] == CYLINDER
        dv = np.where(cyl, z - tz, np.cos(phi_c) * (x - tx) + np.sin(phi_c) * (y - ty))
        pulls_u.append((du / geo.sigma_u[s])[true])
        pulls_v.append((dv / geo.sigma_v[s])[true])
        pull_vol.append(ev["hit_volume_id"][true])
        rz.append(np.stack([z, np.hypot(x, y)]))
    pileup = float(np.mean([ev["pileup"] for ev in events]))
    scale = (pileup + 1) / 201
    hi = np.concatenate(hpp_hi) if hpp_hi else np.zeros(0)
    return {
        "n_events": len(events),
        "pileup": pileup,
        "particles": float(np.mean([len(ev["part_particle_id"]) for ev in events])),
        "hits": float(np.mean([len(ev["hit_id"]) for ev in events])),
        "pixel hits": float(np.mean([np.isin(ev["hit_volume_id"], PIXEL).sum() for ev in events])),
        "hits per particle (pT > 0.9)": float(hi.mean()) if len(hi) else float("nan"),
        "pull std u": float(np.std(np.concatenate(pulls_u))),
        "pull std v": float(np.std(np.concatenate(pulls_v))),
        "expected (TrackML, scaled)": {
            k: (lo * scale, up * scale) for k, (lo, up) in TRACKML_MU200.items()
        },
        "_per_volume": np.mean(per_vol, axis=0),
        "_ideal_per_volume": np.mean(ideal_vol, axis=0),
        "_hpp_all": np.concatenate(hpp_all),
        "_hpp_hi": hi,
        "_pulls_u": np.concatenate(pulls_u),
        "_pulls_v": np.concatenate(pulls_v),
        "_pull_volume": np.concatenate(pull_vol),
        "_rz": np.concatenate(rz, axis=1),
    }


def validation_plot(
    events: list[dict], path: str | os.PathLike, geometry: Geometry | None = None
) -> dict:
    """Write the validation PNG to ``path``; return :func:`validation_summary` (public keys).

    Args:
        events: simulated event dicts.
        path: PNG to write.
        geometry: their geometry (None: the TrackML one).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = validation_summary(events, geometry)
    fig, ax = plt.subplots(2, 2, figsize=(12, 9))
    top = int(max(s["_hpp_all"].max(initial=1), 25))
    bins = np.arange(0.5, top + 1.5)
    ax[0, 0].hist(s["_hpp_all"], bins=bins, histtype="step", density=True, label="all particles")
    ax[0, 0].hist(
        s["_hpp_hi"],
        bins=bins,
        histtype="step",
        density=True,
        lw=2,
        label=f"pT > 0.9 GeV (mean {s['hits per particle (pT > 0.9)']:.1f})",
    )
    ax[0, 0].axvspan(10, 12, color="g", alpha=0.2, label="expected 10-12 (pT > 0.9)")
    ax[0, 0].set(xlabel="hits per particle", ylabel="fraction", xlim=(0, min(top, 40)))
    ax[0, 0].legend()
    vols = np.flatnonzero(s["_ideal_per_volume"] + s["_per_volume"])
    xs = np.arange(len(vols))
    ax[0, 1].bar(xs, s["_per_volume"][vols], label="simulated")
    ax[0, 1].plot(
        xs,
        s["_ideal_per_volume"][vols],
        "k_",
        ms=20,
        mew=2,
        label="ideal detector (same particles)",
    )
    ax[0, 1].set_xticks(xs, [str(v) for v in vols])
    exp = s["expected (TrackML, scaled)"]
    ax[0, 1].set(
        xlabel="volume id",
        ylabel="true hits per event",
        title=(
            f"mu={s['pileup']:.0f}: {s['hits']:.0f} hits (TrackML {exp['hits'][0]:.0f}"
            f"-{exp['hits'][1]:.0f})\npixel {s['pixel hits']:.0f} "
            f"(TrackML {exp['pixel hits'][0]:.0f}-{exp['pixel hits'][1]:.0f})"
        ),
    )
    ax[0, 1].legend()
    z, r = s["_rz"]
    ax[1, 0].scatter(z, r, s=0.2, alpha=0.3)
    ax[1, 0].set(xlabel="z [mm]", ylabel="r [mm]", title="hits on the layer surfaces")
    grid = np.linspace(-5, 5, 101)
    gauss = np.exp(-(grid**2) / 2) / np.sqrt(2 * np.pi)
    for key, lab in (("_pulls_u", "u (r phi)"), ("_pulls_v", "v (z or r)")):
        ax[1, 1].hist(
            np.clip(s[key], -5, 5),
            bins=grid,
            density=True,
            histtype="step",
            label=f"{lab}: std {np.std(s[key]):.2f}",
        )
    ax[1, 1].plot(grid, gauss, "k--", label="unit Gaussian (expected)")
    ax[1, 1].set(
        xlabel="(hit - truth) / (pitch / sqrt 12)",
        ylabel="density",
        title="resolution in the module frame",
    )
    ax[1, 1].legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return {k: v for k, v in s.items() if not k.startswith("_")}
