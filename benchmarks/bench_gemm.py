"""The ceiling on what bf16 can buy a training step: the Linear layers of one paper-size UAVM block
(width 1024, MLP 4096, T 30 x batch 144 = 4320 rows), forward + backward, under bf16 autocast and in
fp32.

These four layers are ~85% of a bf16 training step (torch.profiler, mm + addmm), so the ratio of
their fp32 to bf16 times bounds the speed-up of the whole step over an fp32 run of the same model,
whatever is fused around them. On the development CPU (2 cores, AMX) that ratio was 1.8-2.4 per
layer (1.9 for the four together): the square-matmul ratio at 1024 (3-4x) does not carry over to
these shapes' forward and backward products. Compare ``extra_info['gflops_per_s']`` across the two
precisions.
"""

from __future__ import annotations

import pytest
import torch

ROWS = 4320  # batch 144 x T 30
SHAPES = {"qkv": (1024, 3072), "proj": (1024, 1024), "fc1": (1024, 4096), "fc2": (4096, 1024)}


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
@pytest.mark.parametrize("layer", list(SHAPES))
def test_linear_fwd_bwd(benchmark, device, layer, precision):
    from avbench.bench.timing import synchronize
    from avbench.hardware import resolve_precision

    if precision == "bf16" and resolve_precision("auto", device)[0] != "bf16":
        pytest.skip(f"bf16 is not the fast path here: {resolve_precision('auto', device)[1]}")
    k, n = SHAPES[layer]
    torch.manual_seed(0)
    lin = torch.nn.Linear(k, n).to(device)
    x = torch.randn(ROWS, k, device=device, requires_grad=True)
    grad = torch.ones(ROWS, n, device=device)

    def step():
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            y = lin(x)
        y.backward(grad.to(y.dtype))
        synchronize(device)

    benchmark.pedantic(step, rounds=5, warmup_rounds=1)
    flops = 6 * ROWS * k * n  # forward, input gradient, weight gradient
    benchmark.extra_info.update({"rows": ROWS, "in": k, "out": n, "precision": precision,
                                 "gflops_per_s": flops / benchmark.stats.stats.min / 1e9})
