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


PREDICTIVE = """
model P(y: real[N], y_new: real?) {
  mu ~ Normal(0, 10)
  y ~ Normal(mu, 1)
  y_new ~ Normal(mu, 1)
}
"""


def test_map_summary_shows_the_estimate_and_samples_give_plug_in_predictive_draws():
    m = ppl.compile(PREDICTIVE)
    data = {"y": [1.0, 2.0, 3.0, 4.0]}
    one = m.fit(data, infer="map", steps=400, lr=0.05, seed=0)
    table = str(one.summary())
    assert table.split("\n")[0].split() == ["value"]
    # MAP of mu under N(0, 10^2) with four unit-variance points: sum(y) / (4 + 1/100)
    assert abs(one.summary()["mu"]["mean"] - 10.0 / 4.01) < 1e-2
    many = m.fit(data, infer="map", steps=400, lr=0.05, seed=0, samples=4000)
    s = many.summary()
    assert s["mu"]["sd"] == 0.0  # every draw is the estimate
    # y_new | mu ~ N(mu, 1): 4000 draws, sd's Monte Carlo error ~ 1/sqrt(2 * 4000) = 0.011
    assert abs(s["y_new"]["sd"] - 1.0) < 0.05
    assert abs(s["y_new"]["mean"] - 10.0 / 4.01) < 4 * 1.0 / 4000 ** 0.5 + 1e-2
    assert "r_hat" in str(s).split("\n")[0]
