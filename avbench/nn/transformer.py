"""Pre-LN Transformer blocks shared by strategies (the UAVM reference block, with a fused fast path).

Matches the reference details in DESIGN.md: pre-LN, qkv without bias, an output projection with a
bias, MLP ratio 4 with GELU, no dropout. ``fused=True`` uses ``scaled_dot_product_attention``;
``fused=False`` is the reference's explicit softmax(QK^T)V, kept for side-by-side benchmarks. The
attention probabilities can be captured for the UAVM attention-difference analysis.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False, fused: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.fused = fused
        self.last_attn: Tensor | None = None

    def forward(self, x: Tensor, capture: bool = False) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if capture or not self.fused:
            attn = (q * (1.0 / math.sqrt(self.head_dim))) @ k.transpose(-2, -1)
            attn = attn.softmax(dim=-1)
            if capture:
                self.last_attn = attn.detach()
            out = attn @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 fused: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, fused=fused)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    @property
    def last_attn(self) -> Tensor | None:
        return self.attn.last_attn

    def forward(self, x: Tensor, capture: bool = False) -> Tensor:
        x = x + self.attn(self.norm1(x), capture=capture)
        return x + self.mlp(self.norm2(x))


def init_weights(module: nn.Module) -> None:
    """timm ViT init as in the UAVM reference: trunc-normal(0.02) Linear weights, zero biases, unit LN."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def set_fused_attention(model: nn.Module, fused: bool) -> None:
    """Switch every avbench Attention in ``model`` between the fused and the reference path."""
    for m in model.modules():
        if isinstance(m, Attention):
            m.fused = fused
