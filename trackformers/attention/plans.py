"""Attention plan builders: full, cluster (Part-2 geometric neighbourhoods), window (phi order).

Every builder runs on the batch's device, is O(N) apart from sorting and never forms an
N x N object. The mask definitions are those of :mod:`trackformers.attention.base`; in the
plan's sorted order every mask row is a union of at most two contiguous key ranges, which
:func:`row_ranges` returns and the block-sparse backends (flex, windowed, fused) consume.

Cluster plan (TrackFormers Part 2, arXiv 2509.26411): each hit is projected along the ray
from the origin onto the barrel cylinder r = R (coordinates R*phi, z) or, when that ray
leaves the cylinder beyond |z| = Z, onto the endcap plane z = +-Z (coordinates x, y). The
surface is unrolled to (phi, s) with s = z on the cylinder and s = +-(Z + R - r_plane) on
the planes (continuous at the rims). Lightweight clustering by iterative windowing:
hits of an event are cut into ``n_sectors`` phi sectors of equal hit count, each sector into
s-windows of about ``group_size`` hits; windows of consecutive sectors run in opposite s
directions (snake order) so neighbouring group ids are also geometric neighbours.

Sorting: every sort is ONE stable radix sort of an integer key (segment, value quantised
on a power-of-two range): phi and s to 2^-24 of their range (about float32 precision) for
the window order and the s order, phi to 2^-12 (2 mrad) for the cut into sectors, which
needs ranks only (hits closer in phi than that keep input order at a sector edge). A
single event's keys fit int16 (sector cut: 2 radix passes) and int32 (4 passes).

Static, sync-free build (what makes a plan cheap on a GPU). :func:`plan_tensors` is one
tensor program with shapes fixed by (P, L) alone: ``coords`` (P, 3) padded to P >= N rows
(``bucket_length``) and ``cu_stage`` (L,) int64 = cu_seqlens followed by N repeated
(``stage_length``: L >= B + 2, a power of two). Pad rows form one trailing pseudo-event and
sort after every real hit, so ``perm[:N]`` is the plan's permutation; ``group_ptr`` comes
padded to (P + 1,) with N (``num_groups`` on the device), key ranges as (P,) vectors with
pad rows attending only themselves. No host sync, no data-dependent shape, no atomics on hot
addresses. The projection runs eagerly (compiled float code rounds differently), so CPU
and GPU plans are identical bit for bit; sort keys (exact power-of-two scales) and the
integer steps are compiled on CUDA. On CUDA
:func:`build_plan` captures the program (with the block layout for flex/windowed) as a CUDA
graph per (kind, P, L, parameters), keeping the faster of a compiled and an all-eager
capture, and replays it; the outputs are cloned, so plans never alias. No sync when the
host knows cu_seqlens (CPU tensors, or device tensors made by ``PackedBatch.to``, see
``data.batch.host_cu_seqlens``): they are validated before the program and the exact number
of groups follows from the event sizes (``cluster_group_count``). Otherwise one sync is
left, at the end: the host validates cu_seqlens as the program saw them and reads the
number of groups. Bad cu_seqlens are clamped inside the program (every index stays in
range) and rejected with a clear ValueError.

Capturable entry point (whole-inference CUDA graphs): call ``cluster_plan(batch, ...,
sync=False)`` / ``window_plan(batch, w, sync=False)`` (or ``backend.plan(batch)`` of flex,
windowed and fused, which go sync-free by themselves while the current stream is capturing)
inside your capture, after one ordinary warm-up call outside it (it compiles the steps).
That path runs the program directly on padded copies of the inputs (P = the bucketed
length), never syncs, leaves ``group_ptr`` padded to (P + 1,) with N
(``plan.extra["num_groups"]`` is a (1,) device tensor; row_ranges, the flex/windowed layout
and the fused kernels accept the padding; code that needs G exactly, e.g.
cluster.local_dbscan, must use ``group_ptr[:num_groups + 1]``), and checks cu_seqlens with a
device-side assertion (``torch._assert_async``) instead of a Python exception. N, B and
max_seqlen stay host ints (a capture is per shape anyway).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from trackformers.attention import compiled
from trackformers.attention.base import AttentionPlan
from trackformers.attention.compiled import on_device
from trackformers.data.batch import host_cu_seqlens

BARREL_RADIUS_MM = 91.0
ENDCAP_Z_MM = 920.0
GRAPHS = True  # replay the static plan build as CUDA graphs on CUDA (False: run it eagerly)


@functools.lru_cache(maxsize=4096)  # called once per plan: keep the host path short
def bucket_length(n: int, block: int, steps_per_octave: int = 8) -> int:
    """Smallest length >= n on the ladder {k * 2^e / steps_per_octave}, a multiple of block.

    Args:
        n: rows.
        block: the result is a multiple of it.
        steps_per_octave: ladder steps per doubling (more: less padding, more shapes).

    Returns:
        The bucketed length.
    """
    n = max(int(n), 1)
    step = max(block, 2 ** max(0, math.floor(math.log2(n)) - int(math.log2(steps_per_octave))))
    step = math.ceil(step / block) * block
    return math.ceil(n / step) * step


def stage_length(num_events: int) -> int:
    """Length L of cu_stage for B events: a power of two >= B + 2 (few shapes, one spare).

    Args:
        num_events: events of the batch (B).

    Returns:
        L.
    """
    return max(4, 1 << (int(num_events) + 1).bit_length())


def _event_index(cu_seqlens: Tensor, n: int) -> Tensor:
    """(n,) int64 event index of every packed row."""
    lengths = cu_seqlens.diff().long()  # (B,)
    events = torch.arange(lengths.numel(), device=lengths.device)
    return torch.repeat_interleave(events, lengths, output_size=n)  # no device sync


def _check_shapes(batch) -> None:
    """Checks that need no device values (never syncs)."""
    n = batch.x.shape[0]
    cu = batch.cu_seqlens
    if cu.ndim != 1 or cu.numel() < 2:
        raise ValueError(f"PackedBatch.cu_seqlens must be 1-D with >= 2 entries, got {cu.shape}")
    if batch.coords is None or batch.coords.shape != (n, 3):
        shape = None if batch.coords is None else tuple(batch.coords.shape)
        raise ValueError(f"PackedBatch.coords must have shape ({n}, 3), got {shape}")


def _check_values(cu: list[int], n: int, max_seqlen: int) -> None:
    """Clear errors for bad cu_seqlens values (host list)."""
    if cu[0] != 0 or cu[-1] != n:
        raise ValueError(
            f"PackedBatch.cu_seqlens must run from 0 to total_hits={n}, got {cu[:8]}..."
        )
    lengths = [b - a for a, b in zip(cu[:-1], cu[1:], strict=True)]
    if min(lengths) < 0:
        e = lengths.index(min(lengths))
        raise ValueError(
            f"PackedBatch.cu_seqlens must be non-decreasing, got {cu[e : e + 2]} at event {e}"
        )
    if max(lengths) > max_seqlen:
        raise ValueError(f"PackedBatch.max_seqlen={max_seqlen} < longest event ({max(lengths)})")


def _check_batch(batch) -> None:
    """Clear errors for inconsistent batches (one device sync when cu_seqlens is on a GPU
    and its values are not known on the host, see host_cu_seqlens)."""
    _check_shapes(batch)
    cu = host_cu_seqlens(batch.cu_seqlens)
    cu = batch.cu_seqlens.tolist() if cu is None else cu
    _check_values(cu, batch.x.shape[0], batch.max_seqlen)


SORT_VALUE_BITS = 24  # sort keys resolve 2^-24 of a value's range (about float32 precision)
SECTOR_PHI_BITS = 12  # the cluster plan's sector cut needs phi ranks to 2 mrad only


@on_device
def _sort_key(
    segment: Tensor,
    value: Tensor,
    bound: float,
    scale: float,
    levels: int,
    dtype: torch.dtype,
    num_segments: int,
    keep: Tensor | None = None,
):
    """segment * levels + floor((value + bound) * scale) clamped to [0, levels) as
    ``dtype``, scale = levels / (2 bound); NaN and inf count as -bound. bound and scale are
    powers of two, so every constant is exact in float32 and float64 alike (Triton types
    float literals as float32): CPU, eager and compiled builders give the same keys bit for
    bit. keep (N,) bool: sort by value where set, by -value elsewhere (the snake order)."""
    value = value if keep is None else torch.where(keep, value, -value)
    v = torch.nan_to_num(value.double(), nan=-bound, posinf=-bound, neginf=-bound)  # (N,)
    q = ((v + bound) * scale).floor().clamp(0, levels - 1).long()  # (N,)
    return (segment.long().clamp(0, num_segments - 1) * levels + q).to(dtype)


def _sort_within(
    segment: Tensor,
    value: Tensor,
    bound: float,
    num_segments: int,
    keep: Tensor | None = None,
    bits: int = SORT_VALUE_BITS,
) -> Tensor:
    """Permutation sorting by integer segment in [0, num_segments), then by value in
    [-bound, bound] quantised to 2^bits steps of [-2^k, 2^k] (2^k >= bound; with 24 bits
    4.8e-7 rad in phi, 0.12 um in s, about float32 precision; values in one step keep input
    order), in ONE stable radix sort of the narrowest integer key that holds segment and
    value (int16: 2 radix passes, int32: 4, int64: 8; the same order whichever)."""
    total = max(1, (int(num_segments) - 1).bit_length()) + bits
    dtype = torch.int16 if total <= 15 else torch.int32 if total <= 31 else torch.int64
    pow2 = 2.0 ** math.ceil(math.log2(bound))
    levels = 1 << bits
    key = _sort_key(
        segment, value, pow2, levels / (2 * pow2), levels, dtype, int(num_segments), keep
    )
    return torch.sort(key, stable=True).indices


def surface_coordinates(
    coords: Tensor, radius: float = BARREL_RADIUS_MM, endcap_z: float = ENDCAP_Z_MM
) -> tuple[Tensor, Tensor]:
    """Project hits along the ray from the origin onto the cylinder/endcap surface.

    Returns (phi, s), both (N,): phi = azimuth, s = unrolled longitudinal coordinate
    (z on the cylinder in [-Z, Z], +-(Z + R - r_plane) on the planes).

    Args:
        coords: (N, 3) hit positions in mm.
        radius: barrel cylinder radius R in mm.
        endcap_z: endcap plane position Z in mm.
    """
    x, y, z = coords[:, 0], coords[:, 1], coords[:, 2]
    r = torch.hypot(x, y).clamp_min(1e-6)  # (N,)
    phi = torch.atan2(y, x)  # (N,)
    z_cyl = z * (radius / r)  # (N,) z where the ray crosses r = R
    r_plane = (r * (endcap_z / z.abs().clamp_min(1e-6))).clamp_max(radius)  # (N,)
    s_cap = torch.sign(z) * (endcap_z + radius - r_plane)  # (N,)
    s = torch.where(z_cyl.abs() <= endcap_z, z_cyl, s_cap)  # (N,)
    return phi, s


def _ranges(kind, cu, seq, rows, group_id=None, group_ptr=None, adjacency=0, window=0):
    """(lo, hi) of shape (P, R) int64 in sorted order (see row_ranges), from event boundaries
    cu (E+1,), event index seq (P,) and rows = arange(P)."""
    start, end = cu[seq], cu[seq + 1]  # (P,), (P,)
    if kind == "full":
        return start[:, None], end[:, None]
    if kind == "cluster":
        gid, ptr = group_id.long(), group_ptr.long()
        g_first, g_last = gid[start], gid[(end - 1).clamp_min(start)]  # (P,) event's groups
        lo = ptr[torch.maximum(gid - adjacency, g_first)]
        hi = ptr[torch.minimum(gid + adjacency, g_last) + 1]
        return lo[:, None], hi[:, None]
    w = window
    full = (end - start) <= 2 * w + 1  # (P,)
    lo_main = torch.where(full, start, torch.maximum(rows - w, start))
    hi_main = torch.where(full, end, torch.minimum(rows + w + 1, end))
    left_over = torch.where(full, 0, (start - (rows - w)).clamp_min(0))  # wraps to the end
    right_over = torch.where(full, 0, (rows + w + 1 - end).clamp_min(0))  # wraps to start
    wraps_left = left_over > 0  # at most one side wraps when the event is not full
    lo_wrap = torch.where(wraps_left, end - left_over, start)
    hi_wrap = torch.where(wraps_left, end, start + right_over)
    return torch.stack([lo_main, lo_wrap], 1), torch.stack([hi_main, hi_wrap], 1)  # (P, 2)


@on_device
def _events(cu_stage: Tensor, p: int) -> tuple[Tensor, Tensor, Tensor]:
    """Event boundaries cu_ext (L+1,) int64 (pads = one last event), event index seq (P,),
    n_real (1,). Clamped into [0, N] and made non-decreasing: identity on valid input,
    every later index in range otherwise."""
    cu = torch.minimum(cu_stage.clamp(0, p), cu_stage[-1:].clamp(0, p))  # (L,)
    cu = torch.cummax(cu, 0).values
    cu_ext = torch.cat([cu, torch.full((1,), p, dtype=cu.dtype, device=cu.device)])  # (L+1,)
    rows = torch.arange(p, device=cu.device)  # (P,)
    seq = (torch.searchsorted(cu_ext, rows, right=True) - 1).clamp(0, cu.numel() - 1)
    return cu_ext, seq, cu[-1:]


@on_device
def _sectors(cu: Tensor, seq: Tensor, p1: Tensor, sector_size: int, max_sec: int):
    """phi sectors of equal hit count per event, from the phi order p1 (integers only):
    segment key seq * max_sec + sector (P,) and sector parity (P,) bool."""
    rows = torch.arange(p1.numel(), device=p1.device)
    seq1 = seq[p1]  # (P,)
    rank = rows - cu[seq1]  # (P,) rank by phi within event
    n_ev = cu[seq1 + 1] - cu[seq1]  # (P,)
    n_sec = torch.clamp(torch.div(n_ev + sector_size // 2, sector_size, rounding_mode="floor"), 1)
    sector = torch.empty_like(rows)
    sector[p1] = (rank * n_sec // n_ev.clamp_min(1)).clamp_max(max_sec - 1)  # (P,) pads too
    return seq * max_sec + sector, sector % 2 == 0


@on_device
def _groups(perm: Tensor, segment: Tensor, n_real: Tensor, group_size: int, num_keys: int):
    """Windows of ~group_size hits inside each segment of the sorted rows (integers only):
    group_id (P,) int32, group_ptr (P+1,) int32 padded with N, num_groups (1,) int64.

    Segments are contiguous runs of the sorted key seg (non-decreasing, < num_keys), so
    every step is a binary search or a scan over the num_keys possible keys, then a gather
    per row: no scan over all rows (1-D cummax/cumsum of 65 k rows run in one thread block),
    no per-row binary search and no atomics.
    """
    p = perm.numel()
    rows = torch.arange(p, device=perm.device)
    seg = segment[perm].clamp(0, num_keys - 1)  # (P,) sorted segment key of every row
    keys = torch.arange(num_keys, device=perm.device)  # (K,) every possible segment key
    key_start = torch.searchsorted(seg, keys)  # (K,) first row of each key
    key_len = torch.searchsorted(seg, keys, right=True) - key_start  # (K,) 0 if absent
    seg_start, seg_len = key_start[seg], key_len[seg]  # (P,) the row's segment
    n_groups = (seg_len + group_size - 1) // group_size  # (P,) groups in this segment
    local = (rows - seg_start) * n_groups // seg_len  # (P,) balanced windows, 0..n_groups-1
    key_groups = (key_len + group_size - 1) // group_size  # (K,) 0 for absent keys
    before = torch.cumsum(key_groups, 0) - key_groups  # (K,) groups of all earlier segments
    gid = before[seg] + local  # (P,) globally non-decreasing
    num_groups = torch.where(n_real > 0, gid[(n_real - 1).clamp_min(0)] + 1, 0)  # (1,)
    # group g starts at the first real row with gid >= g; N for g >= num_groups
    real_gid = torch.where(rows < n_real, gid, p + 1)  # (P,)
    ptr = torch.searchsorted(real_gid, torch.arange(p + 1, device=perm.device))  # (P+1,)
    return gid.int(), ptr.int(), num_groups


@on_device
def _finish(
    kind,
    cu_ext,
    seq,
    n_real,
    cu_stage,
    num_groups,
    perm,
    group_id,
    group_ptr,
    adjacency: int,
    window: int,
) -> dict[str, Tensor]:
    """inv_perm, key ranges (R, P) int32 with pad rows [i, i+1) and info (integers only)."""
    p = seq.numel()
    rows = torch.arange(p, device=seq.device)
    out: dict[str, Tensor] = {}
    if perm is not None:
        inv = torch.empty_like(perm)
        inv[perm] = rows
        out.update(perm=perm, inv_perm=inv)
    lo, hi = _ranges(kind, cu_ext, seq, rows, group_id, group_ptr, adjacency, window)  # (P, R)
    pad = rows >= n_real  # (P,)
    for r in range(lo.shape[1]):
        out[f"lo{r}"] = torch.where(pad, rows, lo[:, r]).int()  # (P,)
        out[f"hi{r}"] = torch.where(pad, rows + (1 if r == 0 else 0), hi[:, r]).int()
    out["info"] = torch.cat([cu_stage, num_groups])  # (L+1,)
    return out


def plan_tensors(
    kind: str,
    coords: Tensor,
    cu_stage: Tensor,
    max_sec: int = 2,
    group_size: int = 1,
    sector_size: int = 1,
    adjacency: int = 0,
    window: int = 0,
    radius: float = BARREL_RADIUS_MM,
    endcap_z: float = ENDCAP_Z_MM,
) -> dict[str, Tensor]:
    """The whole plan of one kind as a static-shaped, sync-free tensor program.

    coords (P, 3) with pad rows after the N real ones (any values); cu_stage (L,) int64:
    cu_seqlens then N repeated (L >= B + 2). Returns (sorted order, pads last):
    perm, inv_perm (P,) int64 (cluster, window); group_id (P,) int32, group_ptr (P+1,) int32
    padded with N, num_groups (1,) int64 (cluster); lo0, hi0 (, lo1, hi1) (P,) int32 key
    ranges (see row_ranges) with pad rows [i, i+1); info (L+1,) int64 = the cu_stage the
    program saw, then num_groups. max_sec must exceed every event's sector count
    (max_seqlen // sector_size + 2). Floating-point steps (projection, sort keys) run eagerly
    so that every result is bit-identical to the eager builders; the integer steps are
    compiled on CUDA (``compiled.on_device``).

    Args:
        kind: ``cluster``, ``window`` or ``full``.
        coords: (P, 3) hit positions, pad rows last.
        cu_stage: (L,) int64 event boundaries, then N repeated.
        max_sec: bound on the phi sectors of any event (cluster).
        group_size: hits per group (cluster).
        sector_size: hits per phi sector (cluster).
        adjacency: groups attended on each side (cluster).
        window: +-window sorted positions (window).
        radius: barrel radius of the projection in mm.
        endcap_z: endcap position of the projection in mm.

    Returns:
        The tensors listed above, by name.
    """
    if kind not in ("full", "cluster", "window"):
        raise ValueError(f"unknown plan kind {kind!r}; expected full, cluster or window")
    cu_ext, seq, n_real = _events(cu_stage, coords.shape[0])  # (L+1,), (P,), (1,)
    perm = gid = ptr = None
    num_groups = torch.zeros_like(n_real)
    if kind == "cluster":
        phi, s = surface_coordinates(coords.float(), radius, endcap_z)  # (P,), (P,) eager
        n_ev = cu_stage.numel()  # event indices seq < L
        p1 = _sort_within(seq, phi, math.pi, n_ev, bits=SECTOR_PHI_BITS)  # (P,) phi ranks
        segment, even = _sectors(cu_ext, seq, p1, sector_size, max_sec)  # (P,), (P,)
        s_lim = endcap_z + radius
        num_keys = n_ev * max_sec  # segment keys (sectors of the pad event clamped too)
        # snake order in s inside each sector, then windows of ~group_size hits
        perm = _sort_within(segment, s, s_lim, num_keys, keep=even)  # (P,)
        gid, ptr, num_groups = _groups(perm, segment, n_real, group_size, num_keys)
    elif kind == "window":
        phi = torch.atan2(coords[:, 1], coords[:, 0])  # (P,)
        perm = _sort_within(seq, phi, math.pi, cu_stage.numel())  # (P,)
    out = _finish(
        kind, cu_ext, seq, n_real, cu_stage, num_groups, perm, gid, ptr, adjacency, window
    )
    if kind == "cluster":
        out.update(group_id=gid, group_ptr=ptr, num_groups=num_groups)
    return out


def _stage(batch, p: int) -> tuple[Tensor, Tensor]:
    """coords padded to (P, 3) float32 and cu_stage (L,) int64 (capturable, no sync)."""
    coords = batch.coords.float()
    n, cu = coords.shape[0], batch.cu_seqlens.long()
    stage = torch.cat([cu, cu.new_full((stage_length(cu.numel() - 1) - cu.numel(),), n)])
    return F.pad(coords, (0, 0, 0, p - n)), stage


def _statics(kind: str, batch, params: dict) -> dict:
    """Keyword arguments of plan_tensors that are plain numbers (part of the graph key)."""
    if kind == "cluster":
        ss = params["sector_size"]
        return dict(
            max_sec=batch.max_seqlen // ss + 2,
            group_size=params["group_size"],
            sector_size=ss,
            adjacency=params["adjacency"],
            radius=params["radius"],
            endcap_z=params["endcap_z"],
        )
    if kind == "window":
        return dict(window=params["window"])
    return {}


ROW_KEYS = ("perm", "inv_perm", "group_id")  # outputs of which the plan keeps the N real rows


def _cut(t: dict, n: int) -> dict:
    return {k: v[:n] if k in ROW_KEYS else v for k, v in t.items()}


def build_plan(
    kind: str,
    batch,
    params: dict,
    p: int | None = None,
    fn=None,
    fn_kwargs=None,
    sync: bool | None = None,
    before_sync=None,
) -> tuple[AttentionPlan, dict[str, Tensor]]:
    """Plan of ``kind`` and every tensor of the static program, rows padded to ``p``.

    fn(kind, coords, cu_stage, **statics, **fn_kwargs) -> dict (default plan_tensors; the
    block-sparse backends add their layout). On CUDA with GRAPHS and sync it is replayed as a
    CUDA graph; sync=None means "sync unless the current stream is capturing".
    before_sync(plan, tensors) runs before the final sync (host work that overlaps the GPU).

    Args:
        kind: ``cluster``, ``window`` or ``full``.
        batch: the PackedBatch (coords, cu_seqlens, max_seqlen).
        params: the plan's parameters (group_size, sector_size, adjacency, window, ...).
        p: padded row count (None: the batch's hits).
        fn: the static program (None: :func:`plan_tensors`).
        fn_kwargs: extra keyword arguments of ``fn``.
        sync: read the group count on the host (None: unless capturing).
        before_sync: host work run before that sync.

    Returns:
        The plan and the program's tensors.
    """
    _check_shapes(batch)
    coords, cu = batch.coords, batch.cu_seqlens
    n, b = coords.shape[0], cu.numel() - 1
    p = max(n, 1) if p is None else int(p)
    if p < n:
        raise ValueError(f"padded length {p} < total_hits {n}")
    dev = coords.device
    capturing = dev.type == "cuda" and compiled.stream_capturing()
    sync = (not capturing) if sync is None else bool(sync)
    host_cu = host_cu_seqlens(cu) if sync else None  # known on the host: no sync needed
    if host_cu is not None:
        _check_values(host_cu, n, batch.max_seqlen)  # clear errors before any GPU work
    fn = fn or plan_tensors
    kw = {**_statics(kind, batch, params), **(fn_kwargs or {})}
    if sync and GRAPHS and dev.type in compiled.GRAPH_DEVICES and not capturing:
        graph = compiled.captured(
            (
                getattr(fn, "__qualname__", repr(fn)),
                kind,
                dev.index,
                p,
                stage_length(b),
                tuple(sorted(kw.items())),
            ),
            lambda: (
                torch.zeros(p, 3, device=dev),
                torch.zeros(stage_length(b), dtype=torch.long, device=dev),
            ),
            lambda c, s: fn(kind, c, s, **kw),
        )
        if graph is not None:
            c_buf, s_buf = graph.inputs
            c_buf[:n].copy_(coords)
            s_buf[: b + 1].copy_(cu)
            s_buf[b + 1 :].fill_(n)
            t = graph.run(n, ROW_KEYS)
        else:  # capture failed (warned once): same program, eagerly
            t = _cut(fn(kind, *_stage(batch, p), **kw), n)
    else:
        t = _cut(fn(kind, *_stage(batch, p), **kw), n)
    plan = AttentionPlan(
        kind=kind,
        cu_seqlens=cu,
        max_seqlen=batch.max_seqlen,
        perm=t.get("perm"),
        inv_perm=t.get("inv_perm"),
        group_id=t.get("group_id"),
        group_ptr=t.get("group_ptr"),
        adjacency=int(params.get("adjacency", 1)),
        window=params.get("window"),
        extra={"n_rows": n, **{k: params[k] for k in ("group_size", "sector_size") if k in params}},
    )
    if kind == "cluster":
        plan.extra["num_groups"] = t["num_groups"]
    if before_sync is not None:
        before_sync(plan, t)
    if host_cu is not None:  # validated above; the exact group count follows from the sizes
        if kind == "cluster":
            g = cluster_group_count(host_cu, params["group_size"], params["sector_size"])
            plan.group_ptr = plan.group_ptr[: g + 1]
    elif sync:
        info = t["info"].tolist()  # the one sync: validate, exact number of groups
        _check_values(info[: b + 1], n, batch.max_seqlen)
        if kind == "cluster":
            plan.group_ptr = plan.group_ptr[: info[-1] + 1]
    else:
        d = cu.diff()
        ok = (cu[0] == 0) & (cu[-1] == n) & (d.min() >= 0) & (d.max() <= batch.max_seqlen)
        torch._assert_async(ok, "PackedBatch.cu_seqlens inconsistent with total_hits/max_seqlen")
    return plan, t


def cluster_group_count(cu_seqlens: list[int], group_size: int, sector_size: int) -> int:
    """Number of groups of a cluster plan, from the event sizes alone (host ints, no sync):
    an event of n hits has max(1, round(n / sector_size)) phi sectors, sector k holding the
    phi ranks r with r * n_sec // n == k, each cut into ceil(size / group_size) windows.

    Args:
        cu_seqlens: event boundaries as host ints.
        group_size: hits per group.
        sector_size: hits per phi sector.

    Returns:
        The number of groups of the batch.
    """
    return _group_count(tuple(cu_seqlens), int(group_size), int(sector_size))


@functools.lru_cache(maxsize=4096)
def _group_count(cu_seqlens: tuple, group_size: int, sector_size: int) -> int:
    total = 0
    for a, b in zip(cu_seqlens[:-1], cu_seqlens[1:], strict=True):
        n = b - a
        if n <= 0:
            continue
        n_sec = max(1, (n + sector_size // 2) // sector_size)
        edges = [-(-k * n // n_sec) for k in range(n_sec + 1)]  # first rank of each sector
        total += sum(-(-(e1 - e0) // group_size) for e0, e1 in zip(edges, edges[1:], strict=False))
    return total


def full_plan(batch) -> AttentionPlan:
    """Every hit attends every hit of its own event; input order kept (perm None).

    Args:
        batch: the PackedBatch.

    Returns:
        The full plan.
    """
    _check_batch(batch)
    return AttentionPlan(
        kind="full",
        cu_seqlens=batch.cu_seqlens,
        max_seqlen=batch.max_seqlen,
        extra={"n_rows": batch.x.shape[0]},
    )


def window_plan(batch, window: int, sync: bool | None = None) -> AttentionPlan:
    """Hits sorted by phi within each event; +-window sorted positions with wrap-around.

    Args:
        batch: the PackedBatch (coords used for phi).
        window: +-window sorted positions.
        sync: sync at the end of the build (None: unless a graph is being captured).

    Returns:
        The window plan.
    """
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    return build_plan("window", batch, dict(window=int(window)), p=_plan_rows(batch), sync=sync)[0]


def cluster_plan(
    batch,
    group_size: int = 128,
    sector_size: int = 4096,
    adjacency: int = 1,
    radius: float = BARREL_RADIUS_MM,
    endcap_z: float = ENDCAP_Z_MM,
    sync: bool | None = None,
) -> AttentionPlan:
    """Part-2 geometric groups (see module docstring); a hit attends groups within +-adjacency.

    Args:
        batch: the PackedBatch (coords used for the projection).
        group_size: hits per group.
        sector_size: hits per phi sector.
        adjacency: groups attended on each side.
        radius: barrel radius of the projection in mm.
        endcap_z: endcap position of the projection in mm.
        sync: read the group count on the host (None: unless a graph is being captured).

    Returns:
        The cluster plan.
    """
    if group_size < 1 or sector_size < 1 or adjacency < 0:
        raise ValueError(
            f"cluster_plan needs group_size>=1, sector_size>=1, adjacency>=0; got "
            f"{group_size}, {sector_size}, {adjacency}"
        )
    params = dict(
        group_size=group_size,
        sector_size=sector_size,
        adjacency=int(adjacency),
        radius=float(radius),
        endcap_z=float(endcap_z),
    )
    return build_plan("cluster", batch, params, p=_plan_rows(batch), sync=sync)[0]


def _plan_rows(batch) -> int:
    """Padded rows of a plan without layout: bucketed on CUDA (graph reuse), exact on CPU."""
    n = batch.coords.shape[0] if batch.coords is not None else batch.x.shape[0]
    return bucket_length(n, 128) if batch.x.device.type == "cuda" else max(n, 1)


def presorted(plan: AttentionPlan) -> AttentionPlan:
    """The same plan for tensors already in the plan's sorted order (perm = identity).

    Args:
        plan: a plan.

    Returns:
        A copy with ``perm`` and ``inv_perm`` None.
    """
    return dataclasses.replace(plan, perm=None, inv_perm=None, extra=plan.extra)


def row_ranges(plan: AttentionPlan) -> tuple[Tensor, Tensor]:
    """Allowed keys of every sorted row as <= 2 disjoint half-open ranges of sorted rows.

    Returns lo, hi of shape (N, R), int64, R = 1 (full, cluster) or 2 (window: main range
    clipped to the event, then the wrap-around part, empty when there is none);
    row i attends key j iff lo[i, r] <= j < hi[i, r] for some r. Empty ranges have lo == hi.

    Args:
        plan: any plan.
    """
    n = plan.extra.get("n_rows")
    n = int(plan.cu_seqlens[-1]) if n is None else n
    if plan.kind not in ("full", "cluster", "window"):
        raise ValueError(f"unknown plan kind {plan.kind!r}; expected full, cluster or window")
    return _row_ranges(
        plan.kind,
        plan.cu_seqlens,
        n,
        plan.group_id,
        plan.group_ptr,
        plan.adjacency,
        plan.window or 0,
    )


@on_device
def _row_ranges(kind, cu_seqlens, n: int, group_id, group_ptr, adjacency: int, window: int):
    seq = _event_index(cu_seqlens, n)  # (N,)
    rows = torch.arange(n, device=seq.device)
    return _ranges(kind, cu_seqlens.long(), seq, rows, group_id, group_ptr, adjacency, window)


def dense_mask_reference(plan: AttentionPlan) -> Tensor:
    """(N, N) bool mask in sorted order straight from the definitions in base.py.

    O(N^2): a reference for tests and small N only, never used by the backends.

    Args:
        plan: any plan.

    Returns:
        The mask; True where row i attends key j.
    """
    cu = plan.cu_seqlens.long()
    n = int(cu[-1])
    seq = _event_index(plan.cu_seqlens, n)  # (N,)
    same = seq[:, None] == seq[None, :]  # (N, N)
    if plan.kind == "full":
        return same
    if plan.kind == "cluster":
        gid = plan.group_id.long()
        return same & ((gid[:, None] - gid[None, :]).abs() <= plan.adjacency)
    if plan.kind == "window":
        pos = torch.arange(n, device=cu.device) - cu[seq]  # (N,) position inside event
        size = (cu[seq + 1] - cu[seq])[:, None]  # (N, 1)
        d = (pos[:, None] - pos[None, :]).abs()  # (N, N)
        circ = torch.minimum(d, size - d)
        return same & ((circ <= plan.window) | (size <= 2 * plan.window + 1))
    raise ValueError(f"unknown plan kind {plan.kind!r}")


def attended_pairs(plan: AttentionPlan) -> int:
    """Number of (query, key) pairs the plan allows, in O(N) (for FLOP counts).

    Args:
        plan: any plan.

    Returns:
        The pair count (a host sync).
    """
    lo, hi = row_ranges(plan)
    return int((hi - lo).clamp_min(0).sum())


def expected_density(n: int, group_size: int, adjacency: int) -> float:
    """Approximate fraction of an n-hit event's pairs attended by a cluster plan.

    Args:
        n: hits of the event.
        group_size: hits per group.
        adjacency: groups attended on each side.

    Returns:
        The attended fraction of the n^2 pairs, at most 1.
    """
    return min(1.0, (2 * adjacency + 1) * group_size / max(n, 1)) if n else 0.0


__all__ = [
    "full_plan",
    "cluster_plan",
    "window_plan",
    "presorted",
    "row_ranges",
    "dense_mask_reference",
    "attended_pairs",
    "surface_coordinates",
    "plan_tensors",
    "build_plan",
    "bucket_length",
    "stage_length",
    "expected_density",
    "BARREL_RADIUS_MM",
    "ENDCAP_Z_MM",
]
