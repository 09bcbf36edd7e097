"""A vector bound (Stan 2.27's real<lower=U>[N] with U: real[N]) is refused with words
that say so and the two rewrites (it said "bound 'lower' must be a number")."""

import pytest
from scipy import stats

import ppl


def test_vector_bounds_refused():
    src = ("model C(U: real[N], W: real[N]) {\n  mu ~ Normal(0, 1)\n"
           "  y_cens: real<lower=U>[N] ~ Normal(mu, 1)\n"
           "  z: real<upper=(W * 2)>[N] ~ Normal(mu, 1)\n}\n")
    with pytest.raises(ppl.BdlError) as err:
        ppl.compile(src)
    low, up = err.value.diagnostics
    assert low.message == ("bound 'lower' must be a scalar (a vector bound is not supported; "
                           "this one is [N])")
    assert (low.span.line, low.span.col) == (3, 22)
    assert low.notes == [
        "draw the distance from the bound, d: real<lower=0>[N] ~ Flat(), with "
        "factor(sum(log_prob(D, U + d))) for the value's density D (a shift: no Jacobian "
        "term)",
        "for censored data, factor(sum(log_ccdf(D, U))) sums the unobserved values out"]
    assert up.message.startswith("bound 'upper' must be a scalar")
    assert up.notes[1] == ("for censored data, factor(sum(log_cdf(D, W * 2))) sums the "
                           "unobserved values out")


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
