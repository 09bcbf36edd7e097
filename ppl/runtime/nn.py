"""Networks as values: ``mlp(in, hidden, out, act=tanh)`` and
``cnn(in_shape, channels, out, kernel_size=3, act=relu, pool=1)``.

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
# each activation module's elementwise function, for forward passes that take the weights
# as tensors (network priors, the NIW flat-weight network)
ACT_FUNCTIONS = {
    nn.Tanh: torch.tanh, nn.ReLU: torch.relu, nn.Sigmoid: torch.sigmoid,
    nn.Softplus: nn.functional.softplus, nn.ELU: nn.functional.elu,
    nn.GELU: nn.functional.gelu,
}


def _positive(name: str, sizes: dict) -> None:
    """Layer sizes of a network are at least 1: a hidden layer of 0 units would make the
    network a constant (its output the last bias) without any error."""
    for key, v in sizes.items():
        vs = v if isinstance(v, list) else [v]
        if any(int(x) < 1 for x in vs):
            raise ValueError(f"{name}: {key} must be at least 1, got "
                             f"{vs if isinstance(v, list) else v}")


class MLP(nn.Module):
    """x -> Linear -> act -> ... -> Linear, applied over leading batch dimensions."""

    def __init__(self, in_dim, hidden, out_dim, act: str = "tanh"):
        super().__init__()
        hidden = [hidden] if isinstance(hidden, (int, float)) else list(hidden)
        sizes = [int(in_dim), *(int(h) for h in hidden), int(out_dim)]
        _positive("mlp", {"in_dim": sizes[0], "hidden": sizes[1:-1], "out_dim": sizes[-1]})
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


class CNN(nn.Module):
    """x [..., C, H, W] -> (Conv2d(k, padding k // 2) -> act [-> MaxPool(pool)]) per entry
    of ``channels`` -> flatten -> Linear -> [..., out].

    Odd ``kernel_size`` keeps the spatial size through every convolution; ``pool`` > 1
    max-pools by that factor after each one (floor division of H and W)."""

    def __init__(self, in_shape, channels, out_dim, kernel_size: int = 3, act: str = "relu",
                 pool: int = 1):
        super().__init__()
        channels = [channels] if isinstance(channels, (int, float)) else list(channels)
        c, h, w = (int(v) for v in in_shape)
        self.in_shape, self.out_dim = (c, h, w), int(out_dim)
        _positive("cnn", {"in_shape": [c, h, w], "channels": [int(v) for v in channels],
                          "out_dim": self.out_dim})
        self.kernel_size, self.pool = int(kernel_size), int(pool)
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"cnn kernel_size must be a positive odd integer, got "
                             f"{self.kernel_size}")
        if self.pool < 1:
            raise ValueError(f"cnn pool must be a positive integer, got {self.pool}")
        layers: list[nn.Module] = []
        for c_out in (int(v) for v in channels):
            layers += [nn.Conv2d(c, c_out, self.kernel_size, padding=self.kernel_size // 2),
                       _ACTIVATIONS[act]()]
            if self.pool > 1:
                layers.append(nn.MaxPool2d(self.pool))
                h, w = h // self.pool, w // self.pool
            c = c_out
        if h < 1 or w < 1:
            raise ValueError(f"cnn: pooling by {self.pool} after {len(channels)} convolutions "
                             f"leaves no pixels of a {tuple(in_shape)} input")
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c * h * w, self.out_dim)
        self.channels = [self.in_shape[0], *(int(v) for v in channels)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, self.in_shape)
        lead = x.shape[:-3]
        h = self.features(x.reshape(-1, *self.in_shape).to(self.head.weight.dtype))
        return self.head(h.flatten(1)).reshape(*lead, self.out_dim)


def check_image_input(x: torch.Tensor, in_shape: tuple[int, int, int]) -> None:
    """A clear error unless x is [..., C, H, W] with (C, H, W) == in_shape."""
    if x.dim() < 3 or tuple(x.shape[-3:]) != tuple(in_shape):
        raise ValueError(f"network expects inputs [..., {', '.join(map(str, in_shape))}] "
                         f"(channels, height, width), got shape {tuple(x.shape)}")


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
    if isinstance(v, (list, tuple)):  # sizes given by keyword: cnn(in_shape=[1, 8, 8])
        return tuple(_small_key(a) for a in v)
    return v


def reset_networks() -> None:
    """Forget cached modules (a new fit starts from freshly initialised weights)."""
    _CACHE.clear()
