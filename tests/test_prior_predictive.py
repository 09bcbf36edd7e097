"""Model.sample_prior: prior and prior-predictive draws with the declared shapes."""

from __future__ import annotations

import math

import ppl

SRC = """
model M(y: real[N]) {
  mu ~ Normal(0, 1)
  plate N batch 2 {
    y ~ Normal(mu, 1)
  }
}
"""


def test_prior_predictive_simulates_the_observed_site_over_all_its_data():
    m = ppl.compile(SRC)
    n = 4000
    d = m.sample_prior({"y": [10.0, 10.0, 10.0]}, num_samples=n, seed=0)
    assert d["mu"].shape == (n,)
    assert d["y"].shape == (n, 3)  # all N points, not a minibatch of 2; not the data
    y = d["y"][:, 0]
    # y = mu + e: mean 0, variance 2; Monte Carlo s.e. of the mean sqrt(2/n), of the
    # variance about 2 * sqrt(2/n)
    assert abs(float(y.mean())) < 4 * math.sqrt(2 / n)
    assert abs(float(y.var()) - 2.0) < 4 * 2 * math.sqrt(2 / n)
    # y's points share mu: covariance 1 between them
    c = float(((d["y"][:, 0] - y.mean()) * (d["y"][:, 1] - d["y"][:, 1].mean())).mean())
    assert abs(c - 1.0) < 4 * math.sqrt(2 / n) * 2
