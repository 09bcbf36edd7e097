"""A vector bound (Stan 2.27's real<lower=U>[N] with U: real[N]) is one bound per element
(it was refused, and before that said "bound 'lower' must be a number");
tests/test_vector_bounds.py has its draws and errors."""

import pytest
from scipy import stats

import ppl


def test_vector_bounds_compile_elementwise():
    src = ("model C(U: real[N], W: real[N]) {\n  mu ~ Normal(0, 1)\n"
           "  y_cens: real<lower=U>[N] ~ Normal(mu, 1)\n"
           "  z: real<upper=(W * 2)>[N] ~ Normal(mu, 1)\n}\n")
    m = ppl.compile(src)
    assert "constraints.greater_than(U)" in m.source
    assert "constraints.less_than(W * 2)" in m.source
    U, W = [1.0, 2.0], [0.5, 0.0]
    y, z = [1.5, 2.5], [0.2, -1.0]
    want = (stats.norm.logpdf(0.3) + stats.norm.logpdf(y, 0.3).sum()
            + stats.norm.logpdf(z, 0.3).sum())
    got = m.log_density({"mu": 0.3, "y_cens": y, "z": z}, {"U": U, "W": W})
    assert got == pytest.approx(want, rel=1e-6)


def test_a_distribution_bound_is_still_not_a_number():
    with pytest.raises(ppl.BdlError) as err:
        ppl.compile("model C(y: real<lower=(Normal(0, 1))>[N]) {\n  y ~ Normal(0, 1)\n}\n")
    assert err.value.diagnostics[0].message == "bound 'lower' must be a number"


def test_the_shift_rewrite():
    m = ppl.compile("model C(U: real[N]) {\n  mu ~ Normal(0, 1)\n"
                    "  d: real<lower=0>[N] ~ Flat()\n"
                    "  factor(sum(log_prob(Normal(mu, 1), U + d)))\n}\n")
    U, d = [1.0, 2.0], [0.5, 0.1]
    want = stats.norm.logpdf(0.3) + stats.norm.logpdf([1.5, 2.1], 0.3).sum()
    assert m.log_density({"mu": 0.3, "d": d}, {"U": U}) == pytest.approx(want, rel=1e-6)
