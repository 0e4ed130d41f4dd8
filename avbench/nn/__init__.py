"""Reusable layers for strategies (the harness itself never needs them)."""

from avbench.nn.transformer import Attention, Block, Mlp, init_weights, set_fused_attention

__all__ = ["Attention", "Block", "Mlp", "init_weights", "set_fused_attention"]
