"""CLUB: a contrastive upper bound on mutual information (Cheng et al. 2020), sampled version.

Uni-Code's DCID minimises I(semantic; specific) with it: a variational Gaussian q(y|x) is fitted by
maximum likelihood (the "first forward", several estimator steps on detached inputs with its own
optimizer), then the bound ``E[log q(y_i|x_i)] - E[log q(y_perm(i)|x_i)]`` is added to the model's
loss (the "second forward"). Kept apart from any strategy because the estimator, its likelihood and
its bound are each testable on their own.

Shapes: ``x [..., Dx]`` and ``y [..., Dy]`` with matching leading dims. Negatives are drawn by one
random permutation of the first (batch) dimension, so for ``[B, T, D]`` inputs a step is contrasted
with another clip's feature at the same step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _mlp(x_dim: int, hidden: int, out_dim: int, depth: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    width = x_dim
    for _ in range(depth - 1):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    return layers


class CLUBSample(nn.Module):
    """q(y|x) = N(mu(x), exp(logvar(x))), mu and logvar from ``depth``-layer MLPs (tanh on logvar).

    The public Uni-Code code uses 4 Linear layers of width 128 for both heads.
    """

    def __init__(self, x_dim: int, y_dim: int, hidden: int = 128, depth: int = 4):
        super().__init__()
        self.p_mu = nn.Sequential(*_mlp(x_dim, hidden, y_dim, depth))
        self.p_logvar = nn.Sequential(*_mlp(x_dim, hidden, y_dim, depth), nn.Tanh())

    def mu_logvar(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.p_mu(x), self.p_logvar(x)

    def log_likelihood(self, x: Tensor, y: Tensor) -> Tensor:
        """Mean over samples of log q(y|x), without the constant ``-D/2 log 2 pi``."""
        mu, logvar = self.mu_logvar(x)
        return ((-(mu - y) ** 2 / logvar.exp() - logvar).sum(-1) / 2).mean()

    def learning_loss(self, x: Tensor, y: Tensor) -> Tensor:
        return -self.log_likelihood(x, y)

    def mi_estimate(self, x: Tensor, y: Tensor, perm: Tensor | None = None, form: str = "per_step") -> Tensor:
        """The sampled CLUB bound: mean of log q(y_i|x_i) - log q(y_perm(i)|x_i) (the logvar terms cancel).

        ``form="per_step"`` (Cheng et al.): every sample ``[..., D]`` is a Gaussian with its own
        variance, the bound is averaged over all leading dims. ``form="cmg"`` (Uni-Code's
        ``CLUBSample_group.mi_est``, for ``[B, T, D]``): squared errors are averaged over T first and
        divided by ``exp(mean_T logvar)``, summed over D, averaged over B, halved. The two differ
        whenever the log-variance varies over T (measured 2.866 vs 1.728 on the same heads, issue 22).
        """
        mu, logvar = self.mu_logvar(x)
        if perm is None:
            perm = torch.randperm(y.shape[0], device=y.device)
        if form == "cmg":
            if y.dim() != 3:
                raise ValueError("the cmg CLUB form needs [B, T, D] inputs")
            inv_var = (-logvar.mean(1)).exp()  # [B, D]
            positive = -((mu - y) ** 2).mean(1) * inv_var
            negative = -((mu - y[perm]) ** 2).mean(1) * inv_var
            return (positive.sum(-1) - negative.sum(-1)).mean() / 2
        if form != "per_step":
            raise ValueError(f"unknown CLUB form '{form}' (per_step or cmg)")
        inv_var = (-logvar).exp()
        positive = -((mu - y) ** 2 * inv_var).sum(-1) / 2
        negative = -((mu - y[perm]) ** 2 * inv_var).sum(-1) / 2
        return (positive - negative).mean()


def fit_estimator(net: CLUBSample, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor,
                  steps: int) -> list[Tensor]:
    """``steps`` maximum-likelihood updates of ``net`` on detached ``(x, y)``; returns the log-likelihoods.

    Runs in the net's dtype (float32, or float64 for a double net) with autocast off and gradients on, whatever the caller's context, and touches
    only ``net``'s parameters (the caller's graph is not involved: the inputs are detached).
    """
    params: list[nn.Parameter] = list(net.parameters())
    dtype = params[0].dtype if params else torch.float32  # float32, or float64 when the net is double
    x = x.detach().to(dtype)
    y = y.detach().to(dtype)
    saved = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    out: list[Tensor] = []
    try:
        with torch.enable_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            for _ in range(steps):
                optimizer.zero_grad(set_to_none=True)
                ll = net.log_likelihood(x, y)
                (-ll).backward()
                optimizer.step()
                out.append(ll.detach())
    finally:
        optimizer.zero_grad(set_to_none=True)
        for p, r in zip(params, saved):
            p.requires_grad_(r)
    return out
