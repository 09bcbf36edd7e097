"""The shape of a factor's term: the dims past its plates are summed into one term per
plate element (Stan's target += of a vector), under every method."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal

import ppl

Y = [[1.0, 2.0], [3.0, 4.0]]


def _normal(x, loc) -> float:
    return float(Normal(torch.as_tensor(loc, dtype=torch.float64), 1.0).log_prob(
        torch.as_tensor(x, dtype=torch.float64)).sum())


@pytest.mark.parametrize("body", [
    "plate i in N {\n    factor(log_prob(Normal(mu, 1), Y))\n  }",
    "plate i in N {\n    factor(log_prob(Normal(mu, 1), Y[i]))\n  }",
    "plate i in N {\n    plate j in K {\n      factor(log_prob(Normal(mu, 1), Y))\n    }\n  }",
])
def test_a_per_element_vector_factor_in_a_plate_is_summed_past_the_plate_dims(body):
    """log N(Y | mu, 1) of Y: real[N, K] in plate N is one term per row (svi and map
    stopped with Pyro's 'invalid log_prob shape Expected [2], actual [2, 2]'): the density
    is log N(mu | 0, 1) + sum log N(Y | mu, 1) (-15.2197 at mu = 0.5, nuts's), and the
    MAP is sum(Y) / (N K + 1) = 2."""
    m = ppl.compile(f"model M(Y: real[N, K]) {{\n  mu ~ Normal(0, 1)\n  {body}\n}}\n")
    want = _normal(0.5, 0.0) + _normal(Y, 0.5)
    assert want == pytest.approx(-15.2197, abs=1e-4)
    assert m.log_density({"mu": torch.tensor(0.5)}, {"Y": Y}) == pytest.approx(want, abs=1e-4)
    fit = m.fit({"Y": Y}, infer="map(steps=300, lr=0.05)", samples=10, seed=0)
    assert float(fit.samples["mu"].double().mean()) == pytest.approx(2.0, abs=0.02)


def test_a_factor_term_of_no_plates_size_adds_its_sum_once_per_element():
    """w: real[K] in plate N: log N(w | mu, 1) summed, N times (Stan's target += in the
    loop over n): -7.2197 at mu = 0.5 for w = (1, 2), N = 2."""
    m = ppl.compile("model M(Y: real[N, K], w: real[K]) {\n  mu ~ Normal(0, 1)\n"
                    "  plate i in N { factor(log_prob(Normal(mu, 1), w)) }\n}\n")
    want = _normal(0.5, 0.0) + 2 * _normal([1.0, 2.0], 0.5)
    got = m.log_density({"mu": torch.tensor(0.5)}, {"Y": Y, "w": [1.0, 2.0]})
    assert got == pytest.approx(want, abs=1e-4) and want == pytest.approx(-7.2197, abs=1e-4)
    fit = m.fit({"Y": Y, "w": [1.0, 2.0]}, infer="map(steps=300, lr=0.05)", samples=10, seed=0)
    assert float(fit.samples["mu"].double().mean()) == pytest.approx(6 / 5, abs=0.02)


def _label_mode(y: torch.Tensor) -> float:
    """The mode of mu's density with z ~ Bernoulli(0.3) summed out: log N(mu | 0, 1) +
    log(0.7 prod N(y | 0, 1) + 0.3 prod N(y | mu, 1)), on a grid of step 1e-4."""
    g = torch.linspace(-1, 4, 50001, dtype=torch.float64)
    dims = tuple(range(1, y.dim() + 1))
    off = torch.log(torch.tensor(0.7)) + Normal(0.0, 1.0).log_prob(y).sum()
    on = torch.log(torch.tensor(0.3)) + Normal(g.view(-1, *[1] * y.dim()), 1.0).log_prob(
        y).sum(dims)
    dens = Normal(0.0, 1.0).log_prob(g) + torch.logaddexp(off + 0 * g, on)
    return float(g[dens.argmax()])


@pytest.mark.parametrize("decl, y", [("y: real[N]", [1.0, 2.0, 3.0]),
                                     ("y: real[N, K]", [[1.0, 2.0], [0.5, 1.5]])])
def test_a_vector_factor_beside_a_summed_out_label_is_laid_out_as_a_vector_site(decl, y):
    """factor(log_prob(Normal(mu * z, 1), y)) with a label z: the term sits in plates of
    its own (factor_4.dim0, ...) as y ~ Normal(mu * z, 1) does, the label's dim left of
    them (svi and nuts stopped with torch's broadcasting errors); the MAP of mu is the mode
    of the density with z summed out, and the log density with z = 1 is the sum of terms."""
    m = ppl.compile(f"model M({decl}) {{\n  z ~ Bernoulli(0.3)\n  mu ~ Normal(0, 1)\n"
                    "  factor(log_prob(Normal(mu * z, 1), y))\n}\n")
    assert 'with pyro.plate("factor_4.dim0", N, dim=' in m.source
    yt = torch.tensor(y, dtype=torch.float64)
    fit = m.fit({"y": y}, infer="map(steps=500, lr=0.05)", samples=10, seed=0)
    assert float(fit.samples["mu"].double().mean()) == pytest.approx(_label_mode(yt), abs=2e-3)
    got = m.log_density({"mu": torch.tensor(0.5), "z": torch.tensor(1.0)}, {"y": y})
    want = _normal(0.5, 0.0) + float(torch.log(torch.tensor(0.3))) + _normal(yt, 0.5)
    assert got == pytest.approx(want, abs=1e-4)
    fit = m.fit({"y": y}, infer="nuts(samples=10, warmup=10, chains=1)", seed=0)
    assert fit.samples["mu"].numel() == 10 and torch.isfinite(fit.samples["mu"]).all()
