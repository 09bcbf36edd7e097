"""Flat(): its log density keeps the gradient; a Flat latent nothing reads is refused."""
import math

import pytest
import torch

import ppl
from ppl.runtime.shapes import Flat

Y = [0.3, 1.1, 2.0, -0.4, 0.9, 1.5]


def test_flat_log_prob_is_zero_on_the_values_graph():
    # before: zeros_like(value), no grad_fn: torch's "does not require grad" under nuts
    v = torch.tensor([0.5, -3.0], requires_grad=True)
    lp = Flat().log_prob(v)
    assert lp.tolist() == [0.0, 0.0]
    (g,) = torch.autograd.grad(lp.sum(), v)
    assert g.tolist() == [0.0, 0.0]


def test_a_flat_prior_with_a_normal_likelihood_fits_its_exact_posterior():
    # beta ~ Flat(), y ~ Normal(beta, 1): beta | y ~ N(mean(y), 1/n)
    from pyro.ops.stats import effective_sample_size

    src = "model F(y: real[N]) {\n  beta ~ Flat()\n  y ~ Normal(beta, 1)\n}\n"
    f = ppl.compile(src, filename="m.bdl").fit({"y": Y}, infer="nuts", samples=300,
                                                  warmup=200, chains=2, seed=0)
    draws = f.samples["beta"]
    n = len(Y)
    mean, sd = sum(Y) / n, 1 / math.sqrt(n)  # 0.9, 0.408
    ess = float(effective_sample_size(draws.reshape(2, 300)))
    assert ess > 100
    assert abs(float(draws.mean()) - mean) < 4 * sd / math.sqrt(ess)
    # the sd's standard error, about sd / sqrt(2 ess) for normal draws
    assert abs(float(draws.std()) - sd) < 4 * sd / math.sqrt(2 * ess)


@pytest.mark.parametrize("src, line", [
    ("model F() {\n  beta ~ Flat()\n}\n", "    beta ~ Flat()"),
    ("model F(y: real[N]) {\n  beta: real[2] ~ Flat()\n  mu ~ Normal(0, 1)\n"
     "  y ~ Normal(mu, 1)\n}\n", "    beta: real[2] ~ Flat()"),
])
def test_a_flat_latent_that_nothing_reads_is_refused_at_its_statement(src, line):
    # alone: torch's "does not require grad"; beside mu: draws of beta at 1e31, silently
    m = ppl.compile(src, filename="m.bdl")
    with pytest.raises(ppl.BdlError) as e:
        m.fit({"y": Y} if "y" in src else {}, infer="nuts", samples=5, warmup=5, chains=1)
    assert str(e.value).splitlines()[:2] == [
        "m.bdl:2:3: error: 'beta' has the improper Flat() prior and no other statement's "
        "density reads it: its posterior is flat over the real line, which nuts cannot "
        "sample (its draws drift without bound)", line]
