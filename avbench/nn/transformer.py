"""Pre-LN Transformer blocks shared by strategies (the UAVM reference block, with a fused fast path).

Matches the reference details in DESIGN.md: pre-LN, qkv without bias, an output projection with a
bias, MLP ratio 4 with GELU, no dropout. ``fused=True`` is the fast path: ``scaled_dot_product_attention``
(flash / memory-efficient kernels on GPUs), except for short sequences on CPU, where PyTorch's CPU flash
kernel is about twice as slow as two batched matmuls over all heads at once (measured fwd + bwd, bf16,
T = 30, head width 256), so those use ``baddbmm`` (scale folded in) + softmax + ``bmm``. Same math, fp
rounding aside. ``fused=False`` is the reference's explicit softmax(QK^T)V, kept for side-by-side
benchmarks. The attention probabilities can be captured for the UAVM attention-difference analysis.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# On CPU, sequences up to this length take the batched-matmul path (see module docstring).
CPU_BMM_MAX_TOKENS = 128


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

    def kernel(self, n: int, device: torch.device | str) -> str:
        """Which implementation a forward over ``n`` tokens on ``device`` runs: sdpa, bmm or reference."""
        if not self.fused:
            return "reference"
        return "bmm" if torch.device(device).type == "cpu" and n <= CPU_BMM_MAX_TOKENS else "sdpa"

    def forward(self, x: Tensor, capture: bool = False) -> Tensor:
        b, n, c = x.shape
        h, hd = self.num_heads, self.head_dim
        qkv = self.qkv(x).reshape(b, n, 3, h, hd)
        kind = "reference" if capture else self.kernel(n, x.device)
        if kind == "bmm":
            # One copy puts q, k, v in [3, b*h, n, hd]; then every head of every clip in two matmuls.
            q, k, v = qkv.permute(2, 0, 3, 1, 4).contiguous().view(3, b * h, n, hd).unbind(0)
            scores = torch.baddbmm(torch.empty(b * h, n, n, dtype=q.dtype, device=q.device), q, k.transpose(1, 2),
                                   beta=0.0, alpha=1.0 / math.sqrt(hd))
            # Softmax in fp32 (as CUDA autocast does): CPU bf16 softmax is ~2x slower fwd + bwd, and rounds more.
            out = torch.bmm(torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype), v).view(b, h, n, hd)
            return self.proj(out.transpose(1, 2).reshape(b, n, c))
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        if kind == "reference":
            attn = (q * (1.0 / math.sqrt(hd))) @ k.transpose(-2, -1)
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
