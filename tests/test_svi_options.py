"""SVI/MAP options that shape the optimiser."""

from __future__ import annotations

import pyro
import torch

import ppl

SRC = """
model M(y: real[N]) {
  param s: real = 0.0
  param w: real[3] = zeros(3)
  y ~ Normal(s + sum(w), 1)
}
"""


def _fit(**opts):
    m = ppl.compile(SRC)
    m.fit({"y": [5.0, 5.0]}, infer="map", steps=1, seed=0, **opts)
    store = pyro.get_param_store()
    return float(store["s"].detach()), store["w"].detach().clone()


def test_lr_scalars_moves_only_one_number_parameters_at_their_rate():
    # Adam's first step moves each parameter by exactly its lr (the gradient's sign), so
    # with lr 0 only the scalar moves, by lr_scalars
    s, w = _fit(lr=0.0, lr_scalars=0.1)
    assert abs(s - 0.1) < 1e-6
    assert torch.equal(w, torch.zeros(3))
    s, w = _fit(lr=0.01)
    assert abs(s - 0.01) < 1e-6
    assert torch.allclose(w, torch.full((3,), 0.01), atol=1e-6)


def test_lr_scalars_reaches_one_number_parameters_inside_modules():
    from ppl.infer.run import _lr_per_param

    pyro.clear_param_store()
    net = torch.nn.Linear(3, 1)
    pyro.module("net", net)
    pyro.param("h", torch.tensor(0.5))
    args = _lr_per_param(0.001, 0.1)
    assert args("h") == {"lr": 0.1}
    assert args("net.bias") == {"lr": 0.1}  # the store's "net$$$bias", one element
    assert args("net.weight") == {"lr": 0.001}
