"""Secondaries from interactions in the detector material, in the spirit of ACTS Fatras.

:func:`transport` propagates a particle table generation by generation
(:func:`trackformers.sim.propagate.propagate`); every interaction a particle has in the
material (where it ends) makes the next generation:

- photon conversion (gamma -> e+ e-, probability 1 - exp(-7/9 f(E) x/X0) per crossing, f the
  energy dependence of the pair-production cross section): the electron
  takes the energy fraction x of the photon, x drawn from the complete-screening
  Bethe-Heitler shape 1 - 4/3 x (1 - x); both leptons leave at a polar angle of order m_e / E
  (Gamma(2)-distributed multiples of it) on opposite sides of the photon direction.
- inelastic nuclear interaction of a hadron (probability 1 - exp(-x/lambda), lambda = lambda_I
  scaled per species and momentum as Fatras does), a simple
  parametrised model: the hadron ends, Poisson(NUCLEAR_MULTIPLICITY_OFFSET + 1.2 ln(1 + p/GeV))
  (at least one) charged hadrons leave (soft nuclear fragments included), sharing
  ``NUCLEAR_CHARGED_FRACTION`` of the incoming momentum along its direction (flat Dirichlet
  fractions) with an exponential transverse momentum of mean ``NUCLEAR_MEAN_PT`` each;
  ``NUCLEAR_PROTON_FRACTION`` of them are protons, the others charged pions of random sign (the
  rest of the energy goes to neutrals that are not followed).

Secondaries below ``secondary_p_min`` are neither followed nor listed; those between it and the
propagation's ``p_min`` are listed but not simulated (no hits, as TrackML's soft particles).

Photon conversions are off by default (``detector.conversions``): TrackML was simulated with
ACTS Fatras (arXiv:1904.06778; the ACTS docs say so), whose 2018 material engine did "no EM
physics for neutral particles" (acts-fatras, ``MaterialInteractionEngine``) and whose physics
list had ionisation, bremsstrahlung, scattering and a parametrised nuclear interaction but no
conversion; ACTS added photon conversions to Fatras only in 2021 (acts-project/acts#189,
acts#159 of 2020, PR #597). With them on, a mu = 200 event lists ~2 300 conversion
electrons starting >= 1 mm out and 11 000 more particle hits than TrackML's events can hold
(BENCHMARKS.md, "Soft particles and secondaries against TrackML").
Each secondary keeps its parent's vertex_id, starts at the interaction point, and gets an id of
the next generation (:mod:`trackformers.sim.particle_id`), its parent's id and its process code.
"""

from __future__ import annotations

import numpy as np

from trackformers.sim.geometry import Geometry
from trackformers.sim.particle_id import decode_generation, encode_particle_id
from trackformers.sim.propagate import CONVERSION, NUCLEAR, propagate

PROCESS_GENERATOR = 0  # from the event generator (hard scatter, pile-up, their decays)
PROCESS_CONVERSION = 1  # photon conversion in the material
PROCESS_NUCLEAR = 2  # inelastic nuclear interaction in the material

ELECTRON_MASS = 0.000511
PION_MASS = 0.139570
PROTON_MASS = 0.938272
NUCLEAR_CHARGED_FRACTION = 0.3  # share of the incoming momentum carried by charged products
NUCLEAR_MEAN_PT = 0.2  # GeV: mean transverse momentum of a product to the incoming direction
NUCLEAR_PROTON_FRACTION = 0.3
# charged multiplicity: Poisson(NUCLEAR_MULTIPLICITY_OFFSET + 1.2 ln(1 + p/GeV)), at least 1
NUCLEAR_MULTIPLICITY_OFFSET = 2.0

TABLE_KEYS = ("pdg_id", "vertex_id", "vx", "vy", "vz", "px", "py", "pz", "q", "mass")


def _perpendicular_basis(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors (n, 3) perpendicular to the unit vectors u (n, 3) and to each other."""
    helper = np.where(np.abs(u[:, 2:3]) < 0.9, [[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]])  # (n, 3)
    e1 = np.cross(u, helper)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    return e1, np.cross(u, e1)


def _turn(u: np.ndarray, theta: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """Unit vectors (n, 3) at polar angle theta and azimuth psi around the unit vectors u."""
    e1, e2 = _perpendicular_basis(u)
    st = np.sin(theta)[:, None]
    return np.cos(theta)[:, None] * u + st * (np.cos(psi)[:, None] * e1 + np.sin(psi)[:, None] * e2)


def _bethe_heitler_fraction(n: int, rng: np.random.Generator) -> np.ndarray:
    """n energy fractions x in (0, 1) with density proportional to 1 - 4/3 x (1 - x)."""
    out = np.empty(n)
    todo = np.arange(n)
    while len(todo):
        x = rng.random(len(todo))
        ok = rng.random(len(todo)) < 1.0 - 4.0 / 3.0 * x * (1.0 - x)
        out[todo[ok]] = x[ok]
        todo = todo[~ok]
    return out


def conversion_products(mom: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """e- and e+ of photons of momenta ``mom`` (n, 3): rows 2k (e-) and 2k + 1 (e+) of photon k.

    Returns ``parent`` (photon index), momenta ``p`` (2n, 3), ``pdg``, ``q``, ``mass``.

    Args:
        mom: (n, 3) photon momenta in GeV.
        rng: random generator.
    """
    n = len(mom)
    e_gamma = np.linalg.norm(mom, axis=1)  # (n,)
    u = mom / np.maximum(e_gamma, 1e-12)[:, None]
    x = _bethe_heitler_fraction(n, rng)
    e_min = 1.0001 * ELECTRON_MASS
    e_minus = np.clip(x * e_gamma, e_min, np.maximum(e_gamma - e_min, e_min))
    energies = np.stack([e_minus, np.maximum(e_gamma - e_minus, e_min)], axis=1).ravel()  # (2n,)
    p_abs = np.sqrt(energies**2 - ELECTRON_MASS**2)
    theta = np.minimum(ELECTRON_MASS / energies * rng.gamma(2.0, 1.0, 2 * n), np.pi / 2)
    psi = np.repeat(rng.uniform(-np.pi, np.pi, n), 2) + np.tile([0.0, np.pi], n)
    p = _turn(np.repeat(u, 2, axis=0), theta, psi) * p_abs[:, None]  # (2n, 3)
    return {
        "parent": np.repeat(np.arange(n), 2),
        "p": p,
        "pdg": np.tile([11, -11], n).astype(np.int64),
        "q": np.tile([-1.0, 1.0], n),
        "mass": np.full(2 * n, ELECTRON_MASS),
    }


def nuclear_products(mom: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Charged products of inelastic nuclear interactions of hadrons of momenta ``mom`` (n, 3).

    Returns ``parent`` (index into mom), momenta ``p`` (m, 3), ``pdg``, ``q``, ``mass``.

    Args:
        mom: (n, 3) hadron momenta in GeV.
        rng: random generator.
    """
    n = len(mom)
    p_in = np.linalg.norm(mom, axis=1)  # (n,)
    u = mom / np.maximum(p_in, 1e-12)[:, None]
    mult = np.maximum(
        rng.poisson(NUCLEAR_MULTIPLICITY_OFFSET + 1.2 * np.log1p(p_in)), 1
    )  # (n,) charged products
    parent = np.repeat(np.arange(n), mult)  # (m,)
    m = len(parent)
    # flat Dirichlet fractions per interaction: normalised exponentials
    w = rng.exponential(1.0, m)
    frac = w / np.bincount(parent, weights=w, minlength=n)[parent]
    p_long = NUCLEAR_CHARGED_FRACTION * p_in[parent] * frac
    p_perp = rng.exponential(NUCLEAR_MEAN_PT, m)
    e1, e2 = _perpendicular_basis(u[parent])
    psi = rng.uniform(-np.pi, np.pi, m)
    p = p_long[:, None] * u[parent] + p_perp[:, None] * (
        np.cos(psi)[:, None] * e1 + np.sin(psi)[:, None] * e2
    )  # (m, 3)
    proton = rng.random(m) < NUCLEAR_PROTON_FRACTION
    sign = np.where(proton | (rng.random(m) < 0.5), 1, -1)
    return {
        "parent": parent,
        "p": p,
        "pdg": np.where(proton, 2212, 211) * sign,
        "q": sign.astype(np.float64),
        "mass": np.where(proton, PROTON_MASS, PION_MASS),
    }


def _rank_within(keys: np.ndarray) -> np.ndarray:
    """0-based rank of every element among the elements with the same key, in input order."""
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    first = np.searchsorted(sk, sk, side="left")
    rank = np.empty(len(keys), np.int64)
    rank[order] = np.arange(len(keys)) - first
    return rank


def secondaries(
    table: dict, cross: dict, rng: np.random.Generator, p_min: float
) -> dict[str, np.ndarray]:
    """Particle table of the secondaries made by the interactions in ``cross``.

    Args:
        table: the particle table that was propagated (with ``particle_id``).
        cross: the result of :func:`propagate` for it.
        rng: random numbers.
        p_min: GeV; lighter secondaries are dropped.

    Returns:
        A particle table (keys of ``table`` plus ``parent_id`` and ``process``).
    """
    parts = []
    for kind, make, process in (
        (CONVERSION, conversion_products, PROCESS_CONVERSION),
        (NUCLEAR, nuclear_products, PROCESS_NUCLEAR),
    ):
        sel = cross["int_kind"] == kind
        if sel.any():
            prod = make(cross["int_mom"][sel], rng)
            src = cross["int_particle"][sel][prod["parent"]]  # index into table
            prod["source"] = src
            prod["pos"] = cross["int_pos"][sel][prod["parent"]]
            prod["process"] = np.full(len(src), process, np.int32)
            parts.append(prod)
    if not parts:
        return {}
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    keep = np.linalg.norm(cat["p"], axis=1) >= p_min
    cat = {k: v[keep] for k, v in cat.items()}
    src = cat["source"]
    parent_id = np.asarray(table["particle_id"], np.uint64)[src]
    vertex_id = np.asarray(table["vertex_id"], np.int64)[src]
    generation = decode_generation(parent_id) + 1
    key = vertex_id * 256 + generation
    return {
        "particle_id": encode_particle_id(vertex_id, _rank_within(key), generation),
        "pdg_id": cat["pdg"],
        "vertex_id": vertex_id,
        "vx": cat["pos"][:, 0],
        "vy": cat["pos"][:, 1],
        "vz": cat["pos"][:, 2],
        "px": cat["p"][:, 0],
        "py": cat["p"][:, 1],
        "pz": cat["p"][:, 2],
        "q": cat["q"],
        "mass": cat["mass"],
        "parent_id": parent_id,
        "process": cat["process"],
    }


def transport(
    geo: Geometry,
    particles: dict,
    *,
    seed: int,
    max_generations: int = 2,
    secondary_p_min: float = 0.05,
    keep_neutral: bool = False,
    **propagate_kwargs,
) -> tuple[dict, dict]:
    """Propagate ``particles`` and, generation by generation, the secondaries they make.

    Args:
        geo: the detector geometry.
        particles: particle table (see :mod:`trackformers.sim.detector`); ``parent_id`` and
            ``process`` are taken from it when present, else 0 (generator particles).
        seed: random seed (same seed, same result).
        max_generations: secondaries of at most this generation are made (0: none).
        secondary_p_min: GeV; lighter secondaries are neither followed nor listed (those
            below the ``p_min`` of ``propagate_kwargs`` are listed but leave no hits).
        keep_neutral: list neutral particles (photons, neutral hadrons) in the returned table;
            by default only charged ones are listed, as in TrackML's particles files.
        **propagate_kwargs: settings of :func:`propagate` (efficiency, loop_fraction, ...).

    Returns:
        (crossings, table): the crossings as :func:`propagate` returns them (without the
        interactions), ``particle`` indexing the returned table; the table holds the listed
        input particles followed by their secondaries, with ``parent_id`` (uint64, 0 for
        generator particles) and ``process`` (int32, PROCESS_*).
    """
    n = len(particles["particle_id"])
    table = {k: np.asarray(particles[k]) for k in ("particle_id", *TABLE_KEYS)}
    table["parent_id"] = np.asarray(particles.get("parent_id", np.zeros(n)), np.uint64)
    table["process"] = np.asarray(particles.get("process", np.zeros(n)), np.int32)
    rng = np.random.default_rng([int(seed) % 2**63, 11])
    tables, crossings, offset = [], [], 0
    for gen in range(max_generations + 1):
        last = gen == max_generations
        kw = dict(propagate_kwargs)
        if last:
            kw.update(conversions=False, nuclear=False)
        vertex = np.stack([table["vx"], table["vy"], table["vz"]], axis=1)  # (n, 3)
        momentum = np.stack([table["px"], table["py"], table["pz"]], axis=1)  # (n, 3)
        cross = propagate(
            geo,
            vertex,
            momentum,
            table["q"],
            table["mass"],
            table["pdg_id"],
            seed=int(rng.integers(2**32)),
            **kw,
        )
        cross["particle"] = cross["particle"] + offset
        tables.append(table)
        crossings.append(cross)
        if last or len(cross["int_kind"]) == 0:
            break
        offset += len(table["particle_id"])
        table = secondaries(table, cross, rng, secondary_p_min)
        if not table or len(table["particle_id"]) == 0:
            break
    full = {k: np.concatenate([t[k] for t in tables]) for k in tables[0]}
    if len(tables) > 1 and len(np.unique(full["particle_id"])) != len(full["particle_id"]):
        raise ValueError(
            "secondary particle ids collide with input particle ids: the input ids must follow "
            "trackformers.sim.particle_id (vertex << 32 | generation << 24 | number); "
            "turn detector.conversions and detector.nuclear_interactions off to re-simulate them"
        )
    hits = {
        k: np.concatenate([c[k] for c in crossings]) for k in ("particle", "surface", "pos", "mom")
    }
    if not keep_neutral:
        listed = np.asarray(full["q"]) != 0
        new_index = np.cumsum(listed) - 1
        full = {k: v[listed] for k, v in full.items()}
        hits["particle"] = new_index[hits["particle"]]  # only charged particles leave hits
    return hits, full
