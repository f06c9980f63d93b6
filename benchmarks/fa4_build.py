"""Compile the FA4 kernels of the fused attention ahead of time, on a CPU machine.

flash-attn-4 compiles through nvidia-cutlass-dsl, whose compiler library is ~190 MB: too
big to travel to the GPU machine (64 MiB per call). CuTe DSL compiles for sm90 without a GPU
(FakeTensorMode, FLASH_ATTENTION_ARCH / CUTE_DSL_ARCH / FLASH_ATTENTION_NUM_SMS) and
exports each compiled function as an object file; linked into a shared library, it loads
through TVM-FFI next to ``libcute_dsl_runtime.so`` (what FA4's own persistent cache does).
This script runs ``kernels.fa4.JitRunner`` (forward and backward, the ranges mask_mod) under
FakeTensorMode for every (dtype, head_dim), exports the four compiled functions of each
(forward; backward preprocess, main, postprocess), links them with ``cc -shared`` and writes
``manifest.json`` for ``kernels.fa4.PrebuiltRunner``.

    # a venv with flash-attn-4==4.0.0b40 and its dependencies (see data_local/fa4/README)
    PYTHONPATH=$PWD python benchmarks/fa4_build.py --out data_local/fa4/kernels
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("FLASH_ATTENTION_ARCH", "sm_90")
os.environ.setdefault("CUTE_DSL_ARCH", "sm_90a")
os.environ.setdefault("FLASH_ATTENTION_NUM_SMS", "132")


def _caches(interface) -> dict:
    return {
        "fwd": interface._flash_attn_fwd.compile_cache,
        "bwd_pre": interface._bwd_preprocess.compile_cache,
        "bwd": interface._flash_attn_bwd.compile_cache,
        "bwd_post": interface._bwd_postprocess_convert.compile_cache,
    }


def build(out: Path, dtypes, head_dims, n: int, h: int) -> dict:
    import cutlass
    import torch
    from cutlass.base_dsl.version_info import CUDA_VERSION
    from flash_attn.cute import interface
    from flash_attn.cute.config import BwdConfig, FwdConfig
    from torch._subclasses.fake_tensor import FakeTensorMode
    from trackformers.kernels.fa4 import FA4_VERSION, JitRunner, dtype_name
    from trackformers.kernels.fa4_meta import FA4_BLOCK, FA4Layout

    out.mkdir(parents=True, exist_ok=True)
    runner = JitRunner()
    caches = _caches(interface)
    manifest = {
        "flash_attn_4": FA4_VERSION,
        "cutlass_dsl": cutlass.__version__,
        "cuda_toolkit": f"{CUDA_VERSION.major}.{CUDA_VERSION.minor}",
        "arch": os.environ["CUTE_DSL_ARCH"],
        "variants": {},
    }
    m = -(-n // FA4_BLOCK)
    for dtype in dtypes:
        for d in head_dims:
            tag = f"{dtype_name(dtype)}_d{d}"
            before = {k: set(c.cache) for k, c in caches.items()}
            t0 = time.time()
            with FakeTensorMode():
                q, k, v, do = (
                    torch.empty(1, n, h, d, dtype=dtype, device="cuda") for _ in range(4)
                )
                i32 = dict(dtype=torch.int32, device="cuda")
                lay = FA4Layout(
                    n,
                    FA4_BLOCK,
                    FA4_BLOCK,
                    torch.empty(1, 1, m, **i32),
                    torch.empty(1, 1, m, 24, **i32),
                    torch.empty(1, 1, m, **i32),
                    torch.empty(1, 1, m, 24, **i32),
                    torch.empty(m * FA4_BLOCK, 4, **i32),
                )
                o, lse = runner.forward(q, k, v, lay, d**-0.5)
                runner.backward(q, k, v, o, do, lse, lay, d**-0.5)
            entry = {"compile_s": round(time.time() - t0, 1)}
            for kind, cache in caches.items():
                new = [key for key in cache.cache if key not in before[kind]]
                if len(new) != 1:
                    raise RuntimeError(f"{tag}: expected one new {kind} kernel, got {len(new)}")
                key = new[0]
                name = f"{kind}_{tag}"
                obj = out / f"{name}.o"
                cache.cache[key].export_to_c(object_file_path=str(obj), function_name="func")
                subprocess.run(
                    ["cc", "-shared", "-o", str(out / f"{name}.so"), str(obj)], check=True
                )
                obj.unlink()
                entry[kind] = name
                for part in key if isinstance(key, tuple) else ():
                    if isinstance(part, FwdConfig) and kind == "fwd":
                        if part.num_splits != 1:
                            raise RuntimeError(f"{tag}: forward config with splits: {part}")
                        entry["fwd_config"] = repr(part)
                    if isinstance(part, BwdConfig) and kind == "bwd":
                        entry["bwd_config"] = repr(part)
                        entry["bwd_tile_m"], entry["bwd_tile_n"] = part.tile_m, part.tile_n
                        entry["hdim_multiple_of"] = 64 if part.dKV_swapAB else 32
            if entry.get("bwd_tile_n") != FA4_BLOCK or FA4_BLOCK % entry["bwd_tile_m"]:
                raise RuntimeError(
                    f"{tag}: backward tiles {entry.get('bwd_config')} do not fit "
                    f"the {FA4_BLOCK}-row block lists"
                )
            manifest["variants"][tag] = entry
            print(tag, json.dumps(entry), flush=True)
    rt = _runtime_library()
    shutil.copy(rt, out / "libcute_dsl_runtime.so")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def _runtime_library() -> str:
    import cutlass.cute as cute

    libs = [
        p
        for p in cute.runtime.find_runtime_libraries(enable_tvm_ffi=False)
        if p.endswith("libcute_dsl_runtime.so")
    ]
    if not libs:
        raise RuntimeError("libcute_dsl_runtime.so not found in the cutlass install")
    return libs[0]


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--dtypes", nargs="+", default=["bf16", "fp16"])
    p.add_argument("--head-dims", nargs="+", type=int, default=[32, 64, 128])
    p.add_argument("--rows", type=int, default=8192, help="fake N (kernels take any N > 128)")
    p.add_argument("--heads", type=int, default=8)
    a = p.parse_args(argv)
    dt = {"bf16": torch.bfloat16, "fp16": torch.float16}
    build(a.out, [dt[x] for x in a.dtypes], a.head_dims, a.rows, a.heads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
