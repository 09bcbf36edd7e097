"""Gaussian-process covariance kernels as values: ``rbf(lengthscale=1, variance=1)``.

Stationary kernels are functions of the scaled distance r = |x - x'| / lengthscale:
RBF v·exp(-r²/2); Matérn-1/2 v·exp(-r); Matérn-3/2 v·(1+√3r)·exp(-√3r);
Matérn-5/2 v·(1+√5r+5r²/3)·exp(-√5r); periodic v·exp(-2 sin²(π|x-x'|/p)/ℓ²).
Kernels add and multiply (``k1 + k2``, ``k1 * k2``, ``2 * k``). Inputs are [n] or [n, d].
"""

from __future__ import annotations

import math

import torch


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    return torch.as_tensor(x, dtype=torch.get_default_dtype())


def _matrix(x: torch.Tensor) -> torch.Tensor:
    x = _as_tensor(x)
    return x.unsqueeze(-1) if x.dim() == 1 else x


class Kernel:
    def __call__(self, x, x2=None) -> torch.Tensor:
        x = _matrix(x)
        x2 = x if x2 is None else _matrix(x2)
        return self.forward(x, x2)

    def forward(self, x, x2):
        raise NotImplementedError

    def __add__(self, other):
        return Sum(self, other)

    def __radd__(self, other):
        return Sum(other, self)

    def __mul__(self, other):
        return Product(self, other)

    __rmul__ = __mul__


class Sum(Kernel):
    def __init__(self, a, b):
        self.a, self.b = a, b

    def forward(self, x, x2):
        return _apply(self.a, x, x2) + _apply(self.b, x, x2)


class Product(Kernel):
    def __init__(self, a, b):
        self.a, self.b = a, b

    def forward(self, x, x2):
        return _apply(self.a, x, x2) * _apply(self.b, x, x2)


def _apply(k, x, x2):
    return k.forward(x, x2) if isinstance(k, Kernel) else _as_tensor(k)


class Stationary(Kernel):
    def __init__(self, lengthscale=1.0, variance=1.0):
        self.lengthscale = _as_tensor(lengthscale)
        self.variance = _as_tensor(variance)

    def scaled_dist(self, x, x2):
        d = (x.unsqueeze(-2) - x2.unsqueeze(-3)) / self.lengthscale
        # sqrt of a clamped square keeps gradients finite at r = 0
        return (d.pow(2).sum(-1)).clamp_min(1e-30).sqrt()


class RBF(Stationary):
    def forward(self, x, x2):
        d = (x.unsqueeze(-2) - x2.unsqueeze(-3)) / self.lengthscale
        return self.variance * torch.exp(-0.5 * d.pow(2).sum(-1))


class Matern12(Stationary):
    def forward(self, x, x2):
        return self.variance * torch.exp(-self.scaled_dist(x, x2))


class Matern32(Stationary):
    def forward(self, x, x2):
        r = math.sqrt(3.0) * self.scaled_dist(x, x2)
        return self.variance * (1 + r) * torch.exp(-r)


class Matern52(Stationary):
    def forward(self, x, x2):
        r = math.sqrt(5.0) * self.scaled_dist(x, x2)
        return self.variance * (1 + r + r.pow(2) / 3) * torch.exp(-r)


class Periodic(Kernel):
    def __init__(self, lengthscale=1.0, period=1.0, variance=1.0):
        self.lengthscale = _as_tensor(lengthscale)
        self.period = _as_tensor(period)
        self.variance = _as_tensor(variance)

    def forward(self, x, x2):
        d = (x.unsqueeze(-2) - x2.unsqueeze(-3)).abs().sum(-1)
        s = torch.sin(math.pi * d / self.period)
        return self.variance * torch.exp(-2 * s.pow(2) / self.lengthscale.pow(2))


class Linear(Kernel):
    def __init__(self, variance=1.0):
        self.variance = _as_tensor(variance)

    def forward(self, x, x2):
        return self.variance * x @ x2.transpose(-1, -2)


class White(Kernel):
    def __init__(self, variance=1.0):
        self.variance = _as_tensor(variance)

    def forward(self, x, x2):
        if x.shape == x2.shape and torch.equal(x, x2):
            return self.variance * torch.eye(x.shape[-2], dtype=x.dtype, device=x.device)
        return torch.zeros(x.shape[-2], x2.shape[-2], dtype=x.dtype, device=x.device)


def gram(kernel: Kernel, x, x2=None, jitter: float = 1e-6) -> torch.Tensor:
    """K[i, j] = k(x_i, x2_j); for k(x, x) a jitter is added to the diagonal."""
    k = kernel(x, x2)
    if x2 is None and jitter:
        k = k + jitter * torch.eye(k.shape[-1], dtype=k.dtype, device=k.device)
    return k
