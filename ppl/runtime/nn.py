"""Networks as values: ``mlp(in, hidden, out, act=tanh)``.

A network is an ``nn.Module`` whose weights are registered with Pyro by ``pyro.module``
in the generated code, so SVI/MAP fit them as point estimates. Instances are cached by
name and configuration so that every call of the model function sees the same module.
"""

from __future__ import annotations

import torch
from torch import nn

_ACTIVATIONS = {
    "tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "softplus": nn.Softplus,
    "elu": nn.ELU, "gelu": nn.GELU,
}


class MLP(nn.Module):
    """x -> Linear -> act -> ... -> Linear, applied over leading batch dimensions."""

    def __init__(self, in_dim, hidden, out_dim, act: str = "tanh"):
        super().__init__()
        hidden = [hidden] if isinstance(hidden, (int, float)) else list(hidden)
        sizes = [int(in_dim), *(int(h) for h in hidden), int(out_dim)]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(_ACTIVATIONS[act]())
        self.net = nn.Sequential(*layers)
        self.in_dim, self.out_dim = sizes[0], sizes[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 0 or x.shape[-1] != self.in_dim:
            raise ValueError(f"network expects {self.in_dim} input features, got shape "
                             f"{tuple(x.shape)}")
        return self.net(x.to(self.net[0].weight.dtype))


_CACHE: dict[tuple, nn.Module] = {}


def network(name: str, cls, *args, **kwargs) -> nn.Module:
    """The cached module ``name`` built as ``cls(*args, **kwargs)`` on the default device."""
    key = (name, cls, tuple(int(a) if isinstance(a, (int, torch.Tensor)) and not isinstance(
        a, list) else tuple(a) if isinstance(a, list) else a for a in args),
        tuple(sorted((k, _small_key(v)) for k, v in kwargs.items())),
        torch.get_default_dtype(),
        str(torch.empty(0).device))
    mod = _CACHE.get(key)
    if mod is None:
        mod = cls(*args, **kwargs)
        _CACHE[key] = mod
    return mod


def _small_key(v):
    """Small tensor arguments (sizes stacked from a list literal) compare by value."""
    if isinstance(v, torch.Tensor) and v.numel() <= 64:
        return ("tensor", tuple(v.shape), tuple(v.flatten().tolist()))
    return v


def reset_networks() -> None:
    """Forget cached modules (a new fit starts from freshly initialised weights)."""
    _CACHE.clear()
