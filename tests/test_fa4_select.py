"""Which implementation the ``fused`` backend picks (CPU): Triton unless FA4 can run.

FA4 runs only on sm90 CUDA devices, bf16/fp16, head_dim 32/64/128, N > 128, with
``flash_attn.cute`` importable or ``$TRACKFORMERS_FA4_KERNELS`` naming prebuilt kernels;
every other call goes to Triton and the backend says why.
"""

from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture
def fa4(monkeypatch):
    from trackformers.kernels import fa4

    monkeypatch.delenv(fa4.ENV_KERNELS, raising=False)
    fa4.jit_importable.cache_clear()
    fa4._runner.cache_clear()
    yield fa4
    fa4._runner.cache_clear()  # (jit_importable: restored by monkeypatch afterwards)


def _hopper(monkeypatch, fa4, cap=(9, 0), jit=False):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: cap)
    monkeypatch.setattr(fa4, "jit_importable", lambda: jit)


def test_cpu_tensors_go_to_triton(fa4):
    from trackformers.attention import build

    fused = build("fused", mask="window", window=8)
    runner, why = fused.select(torch.randn(300, 2, 32))
    assert runner is None and "CUDA" in why


def test_hopper_without_fa4_picks_triton_and_says_why(fa4, monkeypatch):
    _hopper(monkeypatch, fa4)
    cuda = torch.device("cuda")
    runner, why = fa4.choose(cuda, torch.bfloat16, 64, 4096)
    assert runner is None and "flash_attn.cute not installed" in why and fa4.ENV_KERNELS in why


@pytest.mark.parametrize(
    "cap, dtype, d, n, reason",
    [
        ((8, 0), torch.bfloat16, 64, 4096, "sm80"),
        ((10, 0), torch.bfloat16, 64, 4096, "sm100"),
        ((9, 0), torch.float32, 64, 4096, "bf16/fp16"),
        ((9, 0), torch.bfloat16, 16, 4096, "head_dim"),
        ((9, 0), torch.bfloat16, 64, 128, "more than 128 rows"),
    ],
)
def test_calls_fa4_cannot_run(fa4, monkeypatch, cap, dtype, d, n, reason):
    _hopper(monkeypatch, fa4, cap=cap, jit=True)
    runner, why = fa4.choose(torch.device("cuda"), dtype, d, n)
    assert runner is None and reason in why


def test_impl_option(fa4, monkeypatch):
    from trackformers.attention import build

    with pytest.raises(ValueError, match="impl must be one of"):
        build("fused", impl="cutlass")
    q = torch.randn(300, 2, 32)
    assert build("fused", impl="triton").select(q) == (None, "impl='triton'")
    with pytest.raises(RuntimeError, match="impl='fa4' unavailable: FA4 needs a CUDA device"):
        build("fused", impl="fa4").select(q)


def test_prebuilt_folder_errors(fa4, monkeypatch, tmp_path):
    _hopper(monkeypatch, fa4)
    monkeypatch.setenv(fa4.ENV_KERNELS, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        fa4.choose(torch.device("cuda"), torch.bfloat16, 64, 4096)
    (tmp_path / "manifest.json").write_text(json.dumps({"flash_attn_4": "4.0.0b1"}))
    fa4._runner.cache_clear()
    with pytest.raises(ValueError, match="kernels of flash-attn-4 4.0.0b1"):
        fa4.choose(torch.device("cuda"), torch.bfloat16, 64, 4096)


def test_heads_broadcast_with_stride_zero():
    """FA4's compiled kernels take head-shared block lists with head stride 0, also at H = 1."""
    from trackformers.kernels.fa4 import _broadcast_heads

    t = torch.arange(12, dtype=torch.int32).view(1, 1, 3, 4)
    for h in (1, 5):
        b = _broadcast_heads(t, h)
        assert b.shape == (1, h, 3, 4) and b.stride() == (12, 0, 4, 1)
        assert torch.equal(b[0, h - 1], t[0, 0])
