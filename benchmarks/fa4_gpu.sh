#!/usr/bin/env bash
# Issue 21 in ONE device call (~7 min): FA4 (flash-attn-4 kernels compiled ahead of time by
# benchmarks/fa4_build.py) on an H100/H200, its GPU tests, then the benchmark beside Triton,
# FlexAttention and SDPA. Carry data_local/fa4 (see its README); run from the repo root:
#   bash benchmarks/fa4_gpu.sh        (writes to $OUT)
set -u -o pipefail
OUT=${OUT:-/tmp/fa4_out}
mkdir -p "$OUT"
B=data_local/fa4
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled PYTHONPATH=/tmp/fa4site:$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/env.txt"
timeout 90 python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/fa4site \
    "$B"/wheels/*.whl || { echo "wheel install failed"; exit 3; }
mkdir -p /tmp/fa4k
for f in cu13 cu12; do timeout 60 tar -C /tmp/fa4k -xJf "$B/kernels_$f.tar.xz" || exit 4; done
# The first toolkit flavour whose kernels give Triton's answer (fwd and grads) is used.
picked=""
for f in cu13 cu12; do
  export TRACKFORMERS_FA4_KERNELS=/tmp/fa4k/$f
  if timeout 150 python3 - <<'PY' 2>&1 | tee -a "$OUT/fa4_smoke.log"; then picked=$f; break; fi
import torch
from trackformers.attention.plans import presorted, window_plan
from trackformers.attention.synthetic import synthetic_batch
from trackformers.kernels import fa4, ops
plan = presorted(window_plan(synthetic_batch([1500, 700], device="cuda"), 100))
x = torch.randn(2200, 4, 64, device="cuda", dtype=torch.bfloat16)
runner, why = fa4.choose(x.device, x.dtype, 64, 2200)
print("runner:", why)
a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
oa, ob = fa4.fa4_attention(a, a, a, plan, runner), ops.fused_attention(b, b, b, plan)
oa.float().square().sum().backward(); ob.float().square().sum().backward()
e = [float((u.float() - w.float()).norm() / w.float().norm()) for u, w in ((oa, ob), (a.grad, b.grad))]
print("smoke rel err out, grad:", e)
assert e[0] < 1e-2 and e[1] < 2e-2
PY
done
echo "FA4 kernels: ${picked:-none}" | tee -a "$OUT/env.txt"
[ -n "$picked" ] || unset TRACKFORMERS_FA4_KERNELS
timeout 210 python3 -m pytest -q -x -p no:cacheprovider tests/test_fa4_gpu.py 2>&1 \
    | tee "$OUT/fa4_tests.log"
timeout 270 python3 benchmarks/kernels.py --fa4 --out "$OUT" --budget-s 200 2>&1 \
    | tee "$OUT/fa4_bench.log"
