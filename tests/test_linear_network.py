"""mlp(D, [], 1): no hidden layers is one affine layer (it was the check error 'an empty
list has no shape')."""

import warnings

import pytest
import torch

import ppl

DATA = {"x": [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [2.0, 1.0]], "y": [1.0, 2.0, 2.5, 4.5]}
SRC = """
model M(x: real[N, 2], y: real[N]) {{
  f = mlp(2, [], 1)
  {prior}
  y ~ Normal(f(x)[:, 0], 1.0)
}}
"""
X = torch.tensor(DATA["x"], dtype=torch.float64)
Y = torch.tensor(DATA["y"], dtype=torch.float64)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_empty_hidden_is_one_linear_layer():
    m = ppl.compile(SRC.format(prior=""))
    assert "rt.nn.MLP, 2, [], 1)" in m.source
    net = ppl.runtime.nn.MLP(2, [], 1)
    assert [type(layer).__name__ for layer in net.net] == ["Linear"]


def test_map_of_a_linear_network_is_least_squares():
    """y = 1.75 x0 + 2/3 x1 + 0.25 is the least-squares fit of the 4 points."""
    fit = ppl.compile(SRC.format(prior="")).fit(DATA, infer="map", steps=500, lr=0.05,
                                                seed=0)
    w, b = fit.params["f$$$net.0.weight"], fit.params["f$$$net.0.bias"]
    got = torch.cat([w[0], b]).double()
    ls = torch.linalg.lstsq(torch.cat([X, torch.ones(4, 1, dtype=torch.float64)], 1),
                            Y).solution
    assert ls.tolist() == pytest.approx([1.75, 2 / 3, 0.25], abs=1e-12)
    assert got.tolist() == pytest.approx(ls.tolist(), abs=1e-3)


def test_gaussian_prior_on_a_linear_network_is_ridge():
    """W, b ~ N(0, 2^2), h = W x / sqrt(2) + b: the map is ridge regression on
    [x / sqrt(2), 1] with penalty 1/4, (A^T A + I/4)^-1 A^T y."""
    m = ppl.compile(SRC.format(prior="f ~ gaussian_prior(2.0)"))
    prior = m.sample_prior(DATA, num_samples=3, seed=0)
    assert prior["f.W0"].shape == (3, 1, 2) and prior["f.b0"].shape == (3, 1)
    fit = m.fit(DATA, infer="map", steps=500, lr=0.05, seed=0)
    a = torch.cat([X / 2 ** 0.5, torch.ones(4, 1, dtype=torch.float64)], 1)
    ridge = torch.linalg.solve(a.T @ a + torch.eye(3, dtype=torch.float64) / 4, a.T @ Y)
    got = torch.cat([fit.samples["f.W0"].reshape(-1), fit.samples["f.b0"].reshape(-1)])
    assert got.double().tolist() == pytest.approx(ridge.tolist(), abs=1e-3)
    nuts = m.fit(DATA, infer="nuts", samples=5, warmup=5, chains=1, seed=0)
    assert nuts.samples["f.W0"].shape == (5, 1, 2)
