"""FLOPs per clip with ``torch.utils.flop_counter``, plus the CPU attention kernel it misses.

FlopCounterMode counts matmuls, convolutions and the CUDA attention kernels; on CPU,
``scaled_dot_product_attention`` dispatches to ``_scaled_dot_product_flash_attention_for_cpu``, which
it does not know, so attention would silently count zero. The same formulas (two batched matmuls
forward; five backward, the scores being recomputed) are registered for it here.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

aten = torch.ops.aten


def _cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


CUSTOM = {}
if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
    CUSTOM[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa
    CUSTOM[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_sdpa_backward


def counter() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping=CUSTOM)


def count_flops(fn: Callable[[], Any]) -> tuple[int, Any]:
    """(FLOPs of everything ``fn`` runs, including backward passes it triggers, fn's result)."""
    with counter() as c:
        out = fn()
    return int(c.get_total_flops()), out
