"""Model.sample_prior: prior and prior-predictive draws with the declared shapes."""

from __future__ import annotations

import math

import pytest
import torch

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


def test_observed_only_data_may_be_left_out_with_the_size_as_a_key():
    """Data that the model only observes need not be passed to simulate it: N comes from
    a data key. The draws match the prior predictive (y ~ N(0, 2) per point)."""
    m = ppl.compile(SRC)
    assert m.checked.observed_only == {"y"}
    n = 4000
    d = m.sample_prior({"N": 5}, num_samples=n, seed=0)
    assert d["y"].shape == (n, 5)
    y = d["y"][:, 4]
    assert abs(float(y.mean())) < 4 * math.sqrt(2 / n)
    assert abs(float(y.var()) - 2.0) < 4 * 2 * math.sqrt(2 / n)


def test_data_read_in_an_expression_is_still_required_to_simulate():
    """``y`` read by the model (its own mean) cannot be drawn without its value; a size
    bound by nothing left is named."""
    m = ppl.compile("""
model R(y: real[N], z: real[N]) {
  mu ~ Normal(mean(y), 1)
  z ~ Normal(mu, 1)
}
""")
    assert m.checked.observed_only == {"z"}
    d = m.sample_prior({"y": [1.0, 2.0, 3.0]}, num_samples=10, seed=0)
    assert d["z"].shape == (10, 3)
    try:
        m.sample_prior({"z": [0.0, 0.0]}, num_samples=10)
    except ppl.BdlError as e:
        assert "missing data for 'y'" in str(e)
    else:
        raise AssertionError("y is read by the model: leaving it out must be an error")
    try:
        ppl.compile(SRC).sample_prior({}, num_samples=2)
    except ppl.BdlError as e:
        assert "size 'N' is not bound" in str(e)
    else:
        raise AssertionError("no data binds N: an error naming it")


def test_generated_quantities_in_a_subsampled_plate_cover_every_row():
    """Optional data left out of a fit on minibatches is drawn for all N rows (not for a
    random minibatch), and predicting on new data covers all of its rows; its draws are
    y_new ~ N(mu, 1) with mu's fitted posterior."""
    m = ppl.compile("""
model M(y: real[N], y_new: real[N]?) {
  mu ~ Normal(0, 1)
  plate N batch 2 {
    y ~ Normal(mu, 1)
    y_new ~ Normal(mu, 1)
  }
}
infer svi(steps=300, lr=0.05)
""")
    assert "y_new_N = None if y_new is None else y_new.index_select(0, idx_N)" in m.source
    fit = m.fit({"y": [1.0, 2.0, 3.0, 4.0]}, seed=0)
    assert fit.samples["y_new"].shape == (1000, 4)
    pred = fit.predict({"y": [0.0] * 6}, seed=1)
    assert pred["y_new"].shape == (1000, 6)
    # exact posterior N(10/5, 1/5) for mu (prior N(0,1), 4 unit-variance points), so
    # y_new has mean 2 and variance 1.2; SVI with a mean-field guide recovers mu's mean
    y = fit.samples["y_new"][:, 0]
    assert abs(float(y.mean()) - 2.0) < 0.25


@pytest.mark.parametrize("guide", ["normal", "lowrank", "iaf"])
def test_local_latents_of_a_subsampled_plate_under_svi_cover_every_row(guide):
    """The autoguide's plate follows the model's batch size (full under the draws after
    the fit), so theta and a left-out y_new come out for all 20 rows, aligned with y.
    The joint guides (lowrank, iaf) cover mu, with theta's per-row parameters beside them
    (ppl.infer.run._autoguide)."""
    m = ppl.compile("""
model Loc(y: real[N], y_new: real[N]?) {
  mu ~ Normal(0, 5)
  plate i in N batch 5 {
    theta ~ Normal(mu, 1)
    y ~ Normal(theta, 0.1)
    y_new ~ Normal(theta, 0.1)
  }
}
infer svi(steps=600, lr=0.2, lr_decay=0.05, samples=200, guide=GUIDE)
""".replace("GUIDE", guide))
    y = [k / 4 for k in range(20)]
    fit = m.fit({"y": y}, seed=0)
    assert fit.samples["theta"].shape == (200, 20) and fit.samples["y_new"].shape == (200, 20)
    # theta_i's posterior: mean within 0.01 of y_i (shrinkage 0.01 / 1.01), sd 0.1; over
    # seeds 0-2 and the three guides the fitted means were within 0.074 of y
    err = (fit.samples["theta"].mean(0) - torch.tensor(y)).abs().max()
    assert float(err) < 0.3
    # mu's exact posterior, theta summed out: y_i ~ N(mu, 1.01), prior N(0, 25), so
    # precision 1/25 + 20/1.01 and mean (47.5/1.01)/precision = 2.370, sd 0.224; a
    # Gaussian model's mean-field optimum has the exact mean; 0.2 allows the minibatch
    # noise left after the decayed steps and the draws' mean (0.016): over seeds 0-2 and
    # the three guides (600 steps, lr 0.2 decayed to 0.01) within 0.114
    assert abs(float(fit.samples["mu"].mean()) - 2.370) < 0.2
