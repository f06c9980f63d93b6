"""Fused SupCon kernels (trackformers.kernels.supcon) against float64 and tiled references.

Interpreter checks (TRITON_INTERPRET=1 on CPU) run in ONE child process, this file run as a
script (tests/interp_child.py: triton reads the variable at import); each test asserts one
part of its JSON report. Small tiles (16 x 16, 32 x 16) make the 60-hit event use every key
loop (before the row tile, diagonal, whole blocks after, partial tail). GPU checks (bf16 and
fp32 at N = 4096, no N^2 memory at N = 65536) are marked gpu.
"""

from __future__ import annotations

import os

import pytest
from interp_child import Checks, ok, run_child

LENGTHS = [37, 1, 60, 0, 23, 2, 45]  # ragged, empty and single-hit events included
TAU = 0.1


def _event_batch(torch, lengths, dim=32, n_particles=6, noise_frac=0.2, seed=0, device="cpu"):
    """(emb float64, labels, cu_seqlens int32, signal): ~noise_frac noise hits, single-hit
    particles (labels 1000+), ids repeated across events, a signal flag per (event, id)."""
    g = torch.Generator().manual_seed(seed)
    n = sum(lengths)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    labels = torch.randint(1, n_particles + 1, (n,), generator=g)
    single = torch.rand(n, generator=g) < 0.1
    labels[single] = 1000 + torch.arange(int(single.sum()))  # particles with one hit
    labels[torch.rand(n, generator=g) < noise_frac] = 0
    emb = torch.randn(n, dim, generator=g, dtype=torch.float64)
    seq = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    flag = torch.rand(len(lengths), n_particles + 1, generator=g) < 0.5
    signal = flag[seq, labels.clamp(max=n_particles)] & (labels != 0)
    return tuple(t.to(device) for t in (emb, labels, cu, signal))


def _batch(torch, emb, labels, cu, signal):
    from trackformers.data.batch import PackedBatch

    return PackedBatch(
        x=emb.float(),
        cu_seqlens=cu,
        max_seqlen=int(cu.diff().max()),
        coords=torch.zeros(emb.shape[0], 3, device=emb.device),
        particle_id=labels,
        targets={"signal": signal},
    )


def _rel(a, b) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _module_loss(torch, emb, batch, dtype=None, **opts):
    """SupConLoss(**opts) value and gradient w.r.t. the raw (N, D) embedding."""
    from trackformers.losses import SupConLoss

    e = emb.to(dtype or emb.dtype).clone().requires_grad_(True)
    value = SupConLoss(TAU, **opts)({"embedding": e}, batch)
    value.backward()
    return value.detach(), e.grad


def _naive_loss(torch, emb, labels, cu, signal, noise, anchors):
    """float64 (N x N per event) reference through the normalisation."""
    import torch.nn.functional as F

    from trackformers.losses import supcon_naive

    e = emb.double().clone().requires_grad_(True)
    valid = labels != 0 if noise == "ignore" else torch.ones_like(labels, dtype=torch.bool)
    mask = signal if anchors == "signal" else None
    value = supcon_naive(F.normalize(e, dim=-1), labels, valid, cu, TAU, anchor_mask=mask)
    value.backward()
    return value.detach(), e.grad


def _row_reference(torch, emb, labels, valid, cu):
    """float64 per-row lse, possum, npos of the module docstring, (n, n) per event."""
    lse, possum, npos = [], [], []
    for s, e in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
        x, y, v = emb[s:e], labels[s:e], valid[s:e]
        dots = x @ x.T  # (n, n)
        cand = v[:, None] & v[None, :] & ~torch.eye(e - s, dtype=torch.bool)
        pos = cand & (y[:, None] == y[None, :]) & (y[:, None] != 0)
        lse.append(torch.logsumexp((dots / TAU).masked_fill(~cand, float("-inf")), 1))
        possum.append(torch.where(pos, dots, 0.0).sum(1))
        npos.append(pos.sum(1).to(emb.dtype))
    return torch.cat(lse), torch.cat(possum), torch.cat(npos)


def _set_tiles(block_m, block_n):
    from trackformers.kernels import supcon

    supcon.BLOCK_M, supcon.BLOCK_N = block_m, block_n


def case_loss_modes(torch):
    """Both noise and both anchor modes through SupConLoss(kernel="triton"), fp32, against
    the float64 N x N reference and the tiled loss, at three tile shapes."""
    emb, labels, cu, signal = _event_batch(torch, LENGTHS)
    batch = _batch(torch, emb, labels, cu, signal)
    out = {}
    for tiles in ((16, 16), (32, 16), (64, 32)):  # the last: the GPU default
        _set_tiles(*tiles)
        for noise in ("negative", "ignore"):
            for anchors in ("all", "signal"):
                opts = dict(noise=noise, anchors=anchors)
                got, g_got = _module_loss(torch, emb, batch, torch.float32, kernel="triton", **opts)
                tiled, g_tiled = _module_loss(torch, emb, batch, torch.float32, **opts)
                ref, g_ref = _naive_loss(torch, emb, labels, cu, signal, noise, anchors)
                out[f"{tiles[0]}x{tiles[1]} {noise} {anchors}"] = {
                    "loss_vs_f64": _rel(got, ref),
                    "grad_vs_f64": _rel(g_got, g_ref),
                    "loss_vs_tiled": _rel(got, tiled),
                    "grad_vs_tiled": _rel(g_got, g_tiled),
                    "loss": float(got),
                    "grad_norm": float(g_got.norm()),
                    "finite": bool(torch.isfinite(g_got).all()),
                }
    return out


def case_row_stats(torch):
    """Per-row statistics (poisoned output: every row written) and the general backward
    (arbitrary weights on lse and possum) against float64 autograd, valid mask or none."""
    from trackformers.kernels.supcon import SupConRowStats, supcon_forward

    _set_tiles(16, 16)
    emb, labels, cu, _ = _event_batch(torch, LENGTHS, seed=1)
    x = torch.nn.functional.normalize(emb, dim=-1)
    out = {}
    for name, valid in (("all_valid", None), ("noise_invalid", labels != 0)):
        v = torch.ones_like(labels, dtype=torch.bool) if valid is None else valid
        v8 = None if valid is None else valid.to(torch.int8)
        poison = torch.full((3, x.shape[0]), float("nan"))
        stats = supcon_forward(x.float(), labels, v8, cu, 60, TAU, out=poison)
        x64 = x.clone().requires_grad_(True)
        lse, possum, npos = _row_reference(torch, x64, labels, v, cu)
        empty = torch.isinf(lse)  # rows without candidates: lse = -inf exactly
        w1, w2 = torch.randn(2, x.shape[0], dtype=torch.float64)
        w1 = torch.where(empty, 0.0, w1)
        (torch.where(empty, 0.0, lse) * w1 + possum * w2).sum().backward()
        xf = x.float().clone().requires_grad_(True)
        k_lse, k_pos, k_npos = SupConRowStats.apply(xf, labels, v8, cu, 60, TAU, "auto")
        (torch.where(empty, 0.0, k_lse) * w1.float() + k_pos * w2.float()).sum().backward()
        fin = ~empty
        out[name] = {
            "lse": _rel(stats[0][fin], lse[fin]),
            "possum": _rel(stats[1], possum),
            "npos_equal": bool(torch.equal(stats[2].double(), npos)),
            "empty_rows_equal": bool(torch.equal(torch.isneginf(stats[0]), empty)),
            "n_empty": int(empty.sum()),
            "grad": _rel(xf.grad, x64.grad),
            "grad_finite": bool(torch.isfinite(xf.grad).all()),
        }
    return out


def case_dims_and_fp16(torch):
    """Embedding dims 16 / 24 (padded) / 64 in fp32 and fp16 inputs at D = 32."""
    _set_tiles(16, 16)
    out = {}
    for dim, dtype in (
        (16, torch.float32),
        (24, torch.float32),
        (64, torch.float32),
        (32, torch.float16),
    ):
        emb, labels, cu, signal = _event_batch(torch, [37, 1, 40], dim=dim, seed=dim)
        valid = labels != 0
        x64 = torch.nn.functional.normalize(emb, dim=-1).to(dtype).double().requires_grad_(True)
        from trackformers.kernels.supcon import supcon_loss

        from trackformers.losses import supcon_naive

        ref = supcon_naive(x64, labels, valid, cu, TAU)
        ref.backward()
        xk = x64.detach().to(dtype).requires_grad_(True)
        got = supcon_loss(xk, labels, cu, TAU, valid=valid)
        got.backward()
        out[f"d{dim}_{str(dtype).split('.')[-1]}"] = {
            "loss": _rel(got, ref),
            "grad": _rel(xk.grad, x64.grad),
            "grad_dtype": str(xk.grad.dtype),
        }
    return out


def case_no_anchor(torch):
    """All hits noise: loss 0 with the graph kept, zero gradient, nothing non-finite."""
    from trackformers.kernels.supcon import supcon_loss

    _set_tiles(16, 16)
    x = torch.nn.functional.normalize(torch.randn(30, 32), dim=-1).requires_grad_(True)
    cu = torch.tensor([0, 12, 30], dtype=torch.int32)
    loss = supcon_loss(x, torch.zeros(30, dtype=torch.long), cu, TAU)
    loss.backward()
    return {
        "loss": float(loss),
        "grad_abs": float(x.grad.abs().sum()),
        "finite": bool(torch.isfinite(x.grad).all()),
    }


CASES = {
    "loss_modes": case_loss_modes,
    "row_stats": case_row_stats,
    "dims_and_fp16": case_dims_and_fp16,
    "no_anchor": case_no_anchor,
}


def _worker() -> None:
    assert os.environ.get("TRITON_INTERPRET") == "1"
    import json

    import torch

    torch.set_num_threads(1)
    checks = Checks()
    for name, fn in CASES.items():
        torch.manual_seed(0)
        checks(name, lambda fn=fn: fn(torch))
    print(json.dumps(checks.report))


@pytest.fixture(scope="module")
def interp():
    return run_child(__file__)


def test_interpreter_does_not_leak():
    assert os.environ.get("TRITON_INTERPRET", "0") != "1"


def test_loss_and_grad_match_references_all_modes(interp):
    res = ok(interp["loss_modes"])
    assert len(res) == 12  # 3 tile shapes x 2 noise modes x 2 anchor modes
    for name, r in res.items():
        assert r["finite"] and r["grad_norm"] > 0 and r["loss"] > 0, (name, r)
        for key in ("loss_vs_f64", "grad_vs_f64", "loss_vs_tiled", "grad_vs_tiled"):
            assert r[key] < 1e-5, (name, key, r[key])
    by_mode: dict[str, list[float]] = {}
    for name, r in res.items():
        by_mode.setdefault(name.split(" ", 1)[1], []).append(r["loss"])
    for mode, values in by_mode.items():  # tile shapes agree
        assert max(values) - min(values) < 1e-6 * max(values), (mode, values)
    firsts = sorted(v[0] for v in by_mode.values())  # the modes really change the loss
    gaps = [b - a for a, b in zip(firsts[:-1], firsts[1:], strict=True)]
    assert len(firsts) == 4 and min(gaps) > 1e-3, by_mode


def test_row_statistics_and_general_backward(interp):
    res = ok(interp["row_stats"])
    for name, r in res.items():
        assert r["npos_equal"] and r["empty_rows_equal"] and r["grad_finite"], (name, r)
        assert r["n_empty"] >= 1, (name, "the single-hit event has a row without candidates")
        for key in ("lse", "possum", "grad"):
            assert r[key] < 1e-5, (name, key, r[key])


def test_embedding_dims_and_fp16(interp):
    res = ok(interp["dims_and_fp16"])
    assert set(res) == {"d16_float32", "d24_float32", "d64_float32", "d32_float16"}
    for name, r in res.items():
        tol = 3e-3 if "float16" in name else 1e-5
        assert r["loss"] < tol and r["grad"] < tol, (name, r)
    assert res["d32_float16"]["grad_dtype"] == "torch.float16"


def test_no_anchor_gives_zero_loss_and_gradient(interp):
    assert ok(interp["no_anchor"]) == {"loss": 0.0, "grad_abs": 0.0, "finite": True}


def test_bad_kernel_options_are_rejected():
    from trackformers.losses import SupConLoss

    with pytest.raises(ValueError, match="kernel='fused'"):
        SupConLoss(kernel="fused")
    with pytest.raises(ValueError, match="negatives='window'"):
        SupConLoss(kernel="triton", negatives="window")
    assert SupConLoss(kernel="triton").kernel == "triton"


def test_triton_kernel_refuses_cpu_without_interpreter():
    import torch
    from trackformers.kernels.supcon import supcon_loss

    from trackformers.losses import SupConLoss

    emb, labels, cu, signal = _event_batch(torch, [10, 5])
    with pytest.raises(RuntimeError, match="kernel='triton' needs CUDA"):
        SupConLoss(kernel="triton")(
            {"embedding": emb.float()}, _batch(torch, emb, labels, cu, signal)
        )
    with pytest.raises(RuntimeError, match="runs on CUDA"):
        supcon_loss(emb.float(), labels, cu, TAU)


def test_dense_labels_keep_equality_and_noise():
    """64-bit particle ids (> 2^31, repeated, unsorted) -> int32 with the same equal pairs."""
    import torch
    from trackformers.kernels.supcon import dense_labels

    big = 10**18
    labels = torch.tensor([big + 5, 0, 7, big + 5, 3 * 2**31, 7, 0, big, 3 * 2**31])
    dense = dense_labels(labels)
    assert dense.dtype == torch.int32
    assert torch.equal(dense == 0, labels == 0)
    assert torch.equal(dense[:, None] == dense[None, :], labels[:, None] == labels[None, :])
    assert torch.equal(dense_labels(torch.tensor([4, 9, 4])), torch.tensor([1, 2, 1]).int())


def test_config_default_and_override():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(
        os.path.join(os.path.dirname(__file__), "..", "conf", "loss", "contrastive.yaml")
    )
    assert instantiate(cfg).terms["contrastive"].kernel == "tiled"
    cfg.terms.contrastive.kernel = "triton"
    assert instantiate(cfg).terms["contrastive"].kernel == "triton"


# ---------------------------------------------------------------------------------------- GPU


def _gpu_case(torch, dtype, noise, precision="auto"):
    """N = 4096 in 3 events (~7 hits per particle, 10 % noise): kernel vs float64 N x N."""
    import torch.nn.functional as F
    from trackformers.kernels.supcon import supcon_loss

    from trackformers.losses import supcon_naive

    emb, labels, cu, signal = _event_batch(
        torch, [2500, 1, 1595], n_particles=400, noise_frac=0.1, seed=5, device="cuda"
    )
    valid = labels != 0 if noise == "ignore" else torch.ones_like(labels, dtype=torch.bool)
    x = F.normalize(emb, dim=-1).to(dtype)
    x64 = x.double().requires_grad_(True)
    ref = supcon_naive(x64, labels, valid, cu, TAU)
    ref.backward()
    xk = x.clone().requires_grad_(True)
    got = supcon_loss(
        xk, labels, cu, TAU, valid=valid if noise == "ignore" else None, precision=precision
    )
    got.backward()
    assert torch.isfinite(xk.grad).all()
    return _rel(got, ref), _rel(xk.grad, x64.grad)


@pytest.mark.gpu
@pytest.mark.parametrize("noise", ["negative", "ignore"])
@pytest.mark.parametrize("dtype_name,tol", [("float32", 1e-4), ("bfloat16", 1e-2)])
def test_gpu_matches_float64_reference(dtype_name, tol, noise):
    import torch

    loss_err, grad_err = _gpu_case(torch, getattr(torch, dtype_name), noise)
    assert loss_err < tol and grad_err < tol, (loss_err, grad_err)


@pytest.mark.gpu
def test_gpu_tf32_precision_flag():
    """precision="tf32" (fp32 inputs, 10-bit products) stays within TF32's error; "ieee"
    (plain fp32 FMAs) within fp32's."""
    import torch

    assert max(_gpu_case(torch, torch.float32, "negative", "tf32")) < 3e-2
    assert max(_gpu_case(torch, torch.float32, "negative", "ieee")) < 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("anchors", ["all", "signal"])
def test_gpu_loss_module_triton_equals_tiled(anchors):
    import torch

    emb, labels, cu, signal = _event_batch(
        torch, [3000, 1, 1200], n_particles=500, noise_frac=0.1, seed=6, device="cuda"
    )
    batch = _batch(torch, emb, labels, cu, signal)
    opts = dict(noise="ignore", anchors=anchors)
    got, g_got = _module_loss(torch, emb, batch, torch.float32, kernel="triton", **opts)
    ref, g_ref = _module_loss(torch, emb, batch, torch.float32, **opts)
    assert _rel(got, ref) < 1e-4 and _rel(g_got, g_ref) < 1e-4, (_rel(got, ref), _rel(g_got, g_ref))


@pytest.mark.gpu
@pytest.mark.parametrize("events", [1, 4])
def test_gpu_65k_hits_no_n2_memory(events):
    """N = 65536, D = 32, bf16: forward + backward peak memory far below one N x N fp32
    matrix (16 GiB), every gradient row written and finite."""
    import torch
    from trackformers.kernels.supcon import supcon_loss

    n = 65536
    lengths = [n // events] * events
    emb, labels, cu, _ = _event_batch(
        torch, lengths, n_particles=n // (7 * events), noise_frac=0.1, seed=7, device="cuda"
    )
    x = torch.nn.functional.normalize(emb.float(), dim=-1).bfloat16().requires_grad_(True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    loss = supcon_loss(x, labels, cu, TAU, max_seqlen=max(lengths))
    loss.backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.1f} MiB"  # vs N^2 * 4 B = 16384 MiB
    assert torch.isfinite(loss) and float(loss) > 0
    assert torch.isfinite(x.grad).all() and (x.grad.abs().sum(1) > 0).float().mean() > 0.5


if __name__ == "__main__":
    _worker()
