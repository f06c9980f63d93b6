"""How far one track's hits spread in the per-hit input angles, barrel vs endcap (CPU, no model).

For each reconstructable particle (pT > --pt-min, |eta| < 4, >= 3 hits): the range along its
hits of the hit's pseudorapidity seen from the origin, eta_hit = asinh(z / r) (an input feature
of the ttbar experiments, and the ray the cluster plan projects along), and of its azimuth phi;
medians and 90 % quantiles over particles, for barrel and endcap particles (majority of hits in
the barrel volumes of trackformers.data.schema), with the median |z| of the production vertex.
A particle produced at z0 != 0 crosses the barrel layers (r = 32...172 mm) at hit-etas that
differ by up to ~asinh(z0 / 32 mm) - asinh(z0 / 172 mm); on the endcap disks (|z| > 600 mm)
the same z0 barely moves them. Whatever joins a barrel track must undo the vertex position.

    python benchmarks/track_spread.py data/ttbar_pu200_eval --events 2
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import uproot

from trackformers.cli import argument_parser
from trackformers.data.schema import BARREL_VOLUMES


def spread(event: dict, pt_min: float = 0.9, abs_eta_max: float = 4.0) -> dict:
    """{region: {particles, eta_range_median, eta_range_p90, phi_range_median, vz_abs_median}}.

    Args:
        event: a native event dict.
        pt_min: particles above this pT in GeV.
        abs_eta_max: particles below this abs(eta).
    """
    x, y, z = (np.asarray(event[f"hit_{c}"], dtype=np.float64) for c in "xyz")
    pid, vol = np.asarray(event["hit_particle_id"]), np.asarray(event["hit_volume_id"])
    r = np.hypot(x, y)
    eta_hit, phi_hit = np.arcsinh(z / np.maximum(r, 1e-9)), np.arctan2(y, x)
    px, py, pz = (np.asarray(event[f"part_p{c}"], dtype=np.float64) for c in "xyz")
    pt = np.hypot(px, py)
    eta = np.arcsinh(pz / np.maximum(pt, 1e-12))
    index = {int(p): i for i, p in enumerate(event["part_particle_id"])}
    order = np.argsort(pid, kind="stable")
    ids, first, counts = np.unique(pid[order], return_index=True, return_counts=True)
    rows = {"barrel": [], "endcap": []}
    for p, s, n in zip(ids, first, counts, strict=True):
        i = index.get(int(p))
        if p == 0 or i is None or n < 3 or pt[i] <= pt_min or abs(eta[i]) >= abs_eta_max:
            continue
        hits = order[s : s + n]
        region = "barrel" if np.isin(vol[hits], BARREL_VOLUMES).mean() > 0.5 else "endcap"
        dphi = np.angle(np.exp(1j * (phi_hit[hits] - phi_hit[hits][0])))  # unwrapped at +-pi
        rows[region].append((np.ptp(eta_hit[hits]), np.ptp(dphi), abs(event["part_vz"][i])))
    out = {}
    for region, v in rows.items():
        if not v:
            continue
        a = np.array(v)
        out[region] = {
            "particles": len(v),
            "eta_range_median": float(np.median(a[:, 0])),
            "eta_range_p90": float(np.percentile(a[:, 0], 90)),
            "phi_range_median": float(np.median(a[:, 1])),
            "vz_abs_median": float(np.median(a[:, 2])),
        }
    return out


def read_events(data: str, n: int) -> list[dict]:
    """The first ``n`` events of a native .root file or of a folder of them.

    Args:
        data: a file or a folder of .root files.
        n: number of events.

    Raises:
        FileNotFoundError: nothing to read at ``data``.
    """
    if not Path(data).exists():
        raise FileNotFoundError(f"{data} does not exist")
    files = sorted(glob.glob(str(Path(data) / "*.root"))) if Path(data).is_dir() else [data]
    if not files:
        raise FileNotFoundError(f"no .root files in {data}")
    events = []
    for f in files:
        arrays = uproot.open(f)["events"].arrays(entry_stop=n - len(events), library="np")
        keys = list(arrays)
        events += [{k: arrays[k][e] for k in keys} for e in range(len(arrays[keys[0]]))]
        if len(events) >= n:
            break
    return events


def main(argv=None) -> list[dict]:
    """The command line (see the module docstring); returns the spread of every event.

    Args:
        argv: arguments (None: ``sys.argv[1:]``).
    """
    ap = argument_parser("trackformers.reproduce.track_spread", __doc__)
    ap.add_argument("data", help="a folder of native .root files or one file")
    ap.add_argument("--events", type=int, default=2, help="the first events of data")
    ap.add_argument("--pt-min", type=float, default=0.9, help="particles above this pT [GeV]")
    args = ap.parse_args(argv)
    out = []
    for ev in read_events(args.data, args.events):
        res = spread(ev, args.pt_min)
        out.append(res)
        for region, s in res.items():
            print(
                f"event {int(ev['event_id'])} {region}: {s['particles']} particles, hit-eta "
                f"range median {s['eta_range_median']:.3f} (p90 {s['eta_range_p90']:.3f}), "
                f"phi range median {s['phi_range_median']:.4f}, median |vz| "
                f"{s['vz_abs_median']:.1f} mm"
            )
    return out


if __name__ == "__main__":
    main()
