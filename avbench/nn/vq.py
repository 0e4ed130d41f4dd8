"""A shared vector-quantisation codebook with the multi-modal EMA update of Uni-Code (paper 002).

Why a module of its own: the codebook is the unified discrete space of the method, and its update
rule, commitment loss, dead-code reset and code-matching loss are each small, testable arithmetic
that a strategy composes. Everything here is a buffer (no gradient): the codebook moves only by EMA.

MM-EMA (appendix eqs. 1-2). For code ``i`` with ``n_i^a`` audio and ``n_i^b`` video features assigned
in a batch::

    N_i <- g N_i + (1 - g) (n_i^a + n_i^b)
    o_i <- g o_i + (1 - g) [ sum_j (z^a_j + r^b_j) / 2 + sum_j (z^b_j + r^a_j) / 2 ]
    e_i  = o_i / N_i

``r^b_j`` is the partner modality's feature seen from ``z^a_j``: the appendix uses cross-attention of
``z^a_j`` over the clip's ``z^b`` steps (:func:`cross_attention_partner`); the public code uses the
time-aligned partner step and runs one EMA update per modality in sequence
(``ema_update(..., sequential=True)``). With ``epsilon > 0`` the counts get the Laplace smoothing of
the public code (and of the Sonnet VQ-EMA it descends from), ``N <- (N + eps) / (n + M eps) * n`` with
``n = sum N``; with ``epsilon = 0`` a code whose count is still zero keeps its vector.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def squared_distances(z: Tensor, codes: Tensor) -> Tensor:
    """``[N, D] x [M, D] -> [N, M]`` squared L2 distances (clamped at 0 against rounding)."""
    d = (z * z).sum(-1, keepdim=True) + (codes * codes).sum(-1)[None, :] - 2.0 * z @ codes.t()
    return d.clamp_min(0.0)


def cross_attention_partner(query: Tensor, keys: Tensor) -> Tensor:
    """``r = softmax(q k^T / sqrt(D)) k`` per clip: ``[B, T, D], [B, S, D] -> [B, T, D]``.

    The appendix's ``r^b``: each step of one modality attends over all steps of its partner in the
    same clip. The appendix gives no projections, so this attention is parameter-free.
    """
    scale = 1.0 / math.sqrt(query.shape[-1])
    attn = torch.softmax(query @ keys.transpose(-2, -1) * scale, dim=-1)
    return attn @ keys


def straight_through(z: Tensor, codes: Tensor) -> Tensor:
    """Forward value ``codes``, gradient of identity into ``z``."""
    return z + (codes.to(z.dtype) - z).detach()


def commitment_loss(z: Tensor, own_codes: Tensor, partner_codes: Tensor | None, beta: float,
                    partner_ratio: float = 0.5) -> Tensor:
    """Modified commitment loss (paper eq. 8): ``beta ||z - sg[e_own]||^2 + beta*ratio ||z - sg[e_partner]||^2``.

    ``partner_codes`` are the codes the partner modality selected at the same steps. Squared norms are
    element means (``F.mse_loss``), as in the public code.
    """
    loss = beta * F.mse_loss(z, own_codes.detach())
    if partner_codes is not None and partner_ratio != 0:
        loss = loss + beta * partner_ratio * F.mse_loss(z, partner_codes.detach())
    return loss


def code_matching_loss(z_a: Tensor, z_b: Tensor, codes: Tensor) -> Tensor:
    """L_cmcm (Liu et al. 2021, used by the Uni-Code code): InfoNCE over clips on code distributions.

    ``p^m_i = mean_t softmax_j(-||z^m_it - e_j||)``; ``S(i, k) = sum_j p^a_i(j) log p^b_k(j) +
    sum_j p^b_i(j) log p^a_k(j)``; cross-entropy of each row of S against its own clip. Gradients reach
    the features, not the codebook.
    """
    b, t, d = z_a.shape
    codes = codes.detach()

    def dist_probs(z: Tensor) -> Tensor:
        dist = squared_distances(z.reshape(-1, d), codes).clamp_min(1e-12).sqrt()
        return torch.softmax(-dist, dim=-1).reshape(b, t, -1).mean(1)

    p_a, p_b = dist_probs(z_a), dist_probs(z_b)
    s = p_a @ torch.log(p_b + 1e-10).t() + p_b @ torch.log(p_a + 1e-10).t()
    return F.cross_entropy(s, torch.arange(b, device=s.device))


class MMEMACodebook(nn.Module):
    """``num_codes x dim`` codebook shared by all modalities; nearest-code lookup and MM-EMA updates.

    Buffers: ``embedding`` (the codes), ``ema_count`` (N), ``ema_weight`` (o) and ``unused_for``
    (batches since each code was last selected by any modality, for the dead-code reset).
    """

    def __init__(self, num_codes: int, dim: int, decay: float = 0.99, epsilon: float = 1e-5,
                 init_bound: float | None = None, search_dtype: torch.dtype = torch.float64,
                 reset_timing: str = "avbench"):
        super().__init__()
        if reset_timing not in ("avbench", "cmg"):
            raise ValueError(f"unknown reset timing '{reset_timing}' (avbench or cmg)")
        self.num_codes, self.dim = num_codes, dim
        self.reset_timing = reset_timing
        self.search_dtype = search_dtype
        self.decay, self.epsilon = decay, epsilon
        bound = 1.0 / num_codes if init_bound is None else init_bound
        emb = torch.empty(num_codes, dim).uniform_(-bound, bound)
        self.register_buffer("embedding", emb)
        self.register_buffer("ema_count", torch.zeros(num_codes))
        self.register_buffer("ema_weight", emb.clone())
        # "cmg": the public code's counter starts at -1 (main_model_2.py:1014), so a code never selected
        # is one batch younger than under "avbench", which starts at 0.
        start = -1 if reset_timing == "cmg" else 0
        self.register_buffer("unused_for", torch.full((num_codes,), start, dtype=torch.long))

    # --- lookup ---------------------------------------------------------------------------------
    @torch.no_grad()
    def nearest(self, z: Tensor) -> Tensor:
        """Index of the nearest code for every vector of ``z [..., D]`` (squared L2).

        The search runs outside autocast, in ``search_dtype`` (float64 by default, as the public
        code's ``argmin(distances.double())`` on float64 features): under bf16 autocast the
        ``z @ codes^T`` product rounds to 8 mantissa bits, and for codes closer together than that
        rounding the chosen code is noise (measured on synth: a different code than fp32 on 93-99.99%
        of steps for a tight codebook, ~50% for a spread one).
        """
        flat = z.detach().reshape(-1, self.dim)
        with torch.autocast(device_type=flat.device.type, enabled=False):
            d = squared_distances(flat.to(self.search_dtype), self.embedding.to(self.search_dtype))
        return d.argmin(-1).reshape(z.shape[:-1])

    def lookup(self, idx: Tensor) -> Tensor:
        return F.embedding(idx, self.embedding)

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(indices [...], codes [..., D])``; codes carry no gradient (use :func:`straight_through`)."""
        idx = self.nearest(z)
        return idx, self.lookup(idx)

    # --- MM-EMA ---------------------------------------------------------------------------------
    @torch.no_grad()
    def ema_update(self, groups: Sequence[tuple[Tensor, Tensor, Tensor | None]], sequential: bool = False,
                   partner_weight: float = 0.5) -> None:
        """One MM-EMA update from ``groups = [(z [N, D], idx [N], partner [N, D] | None), ...]``.

        Each assigned feature contributes ``(1 - w) z + w partner`` (``w = partner_weight``; the
        appendix's ``(z + r) / 2`` is ``w = 0.5``; ``partner=None`` is the plain VQ-EMA). ``sequential
        = False`` is appendix eq. 2: one update with the counts and sums of all modalities together.
        ``sequential = True`` is the public code: one full EMA update (counts, smoothing, codes) per
        modality, in the order given.
        """
        m = self.num_codes
        counts, sums = [], []
        for z, idx, partner in groups:
            dt = self.embedding.dtype  # float32, or float64 for a double codebook
            z = z.detach().reshape(-1, self.dim).to(dt)
            idx = idx.reshape(-1)
            target = z if partner is None else (1 - partner_weight) * z + partner_weight * partner.detach().reshape(
                -1, self.dim).to(dt)
            counts.append(torch.bincount(idx, minlength=m).to(z.dtype))
            sums.append(torch.zeros(m, self.dim, dtype=z.dtype, device=z.device).index_add_(0, idx, target))
        if sequential:
            for n, s in zip(counts, sums):
                self._ema_step(n, s)
        else:
            self._ema_step(torch.stack(counts).sum(0), torch.stack(sums).sum(0))

    def _ema_step(self, n: Tensor, s: Tensor) -> None:
        g = self.decay
        self.ema_count.mul_(g).add_(n, alpha=1 - g)
        if self.epsilon > 0:
            total = self.ema_count.sum()
            self.ema_count.copy_((self.ema_count + self.epsilon) / (total + self.num_codes * self.epsilon) * total)
        self.ema_weight.mul_(g).add_(s, alpha=1 - g)
        live = self.ema_count > 0
        self.embedding[live] = self.ema_weight[live] / self.ema_count[live, None]

    # --- dead-code reset ------------------------------------------------------------------------
    @torch.no_grad()
    def reset_dead(self, used: Tensor, after: int, active_window: int = 100, noise: float = 1.0 / 1024,
                   generator: torch.Generator | None = None, rescale_ema: bool = True) -> int:
        """Count one batch; re-initialise codes unused by every modality for ``after`` batches.

        Timing (``reset_timing`` at construction): "avbench" resets a code once its counter reaches
        ``after`` (counters start at 0); "cmg" is the public code's rule, counters start at -1 and a
        code is reset once its counter *exceeds* ``after`` (main_model_2.py:1014,1145): a code never
        selected is reset at batch ``after + 2`` instead of ``after``, a code last selected at batch j
        at ``j + after + 1`` instead of ``j + after``. ``rescale_ema=False`` writes only the code
        vector, as the public code does (its next EMA step then recomputes the code from the old sums).

        ``used`` is a ``[M]`` bool mask of codes any modality selected in this batch. A dead code is
        moved onto a random recently used code (unused for fewer than ``active_window`` batches) plus
        uniform noise in ``[-noise, noise]``, as in the public code; unlike it, ``o`` is rescaled with
        the code (``o_i = e_i N_i``) so the next EMA step does not undo the reset. Returns the number
        of codes reset.
        """
        self.unused_for += 1
        self.unused_for[used.to(self.unused_for.device)] = 0
        over = self.unused_for > after if self.reset_timing == "cmg" else self.unused_for >= after
        dead = over.nonzero().flatten()
        if dead.numel() == 0:
            return 0
        active = ((self.unused_for < active_window) & ~over & (self.unused_for >= 0)).nonzero().flatten()
        if active.numel() == 0:
            return 0
        dev = self.embedding.device
        pick = active[torch.randint(active.numel(), (dead.numel(),), generator=generator, device="cpu").to(dev)]
        jitter = (torch.rand(dead.numel(), self.dim, generator=generator) * 2 - 1).to(dev) * noise
        new = self.embedding[pick] + jitter.to(self.embedding.dtype)
        self.embedding[dead] = new
        if rescale_ema:
            self.ema_weight[dead] = new * self.ema_count[dead, None]
        self.unused_for[dead] = 0
        return int(dead.numel())


def perplexity(counts: Tensor) -> float:
    """``exp(entropy)`` of a code-usage histogram (1 = one code, M = uniform over M codes)."""
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts.double() / total
    return float(torch.exp(-(p * torch.log(p + 1e-10)).sum()))
