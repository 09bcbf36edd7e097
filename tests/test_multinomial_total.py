"""Multinomial's total_count given as a tensor (sum(y), int data): one total is read as
Pyro's Python int; totals that differ between rows are an error at that argument that
names the forms taking one total per row (it was Pyro's "inhomogeneous total_count")."""

import math

import pytest
from scipy import stats

import ppl

THETA = [0.2, 0.3, 0.5]
ROWS = [[10, 5, 5], [20, 20, 10], [3, 3, 4]]


def test_total_from_sum_of_the_data():
    m = ppl.compile("model M(y: int[K]) {\n  theta: simplex[K] ~ Dirichlet(ones(K))\n"
                    "  y ~ Multinomial(sum(y), theta)\n}\n")
    got = m.log_density({"theta": THETA}, {"y": ROWS[0]})
    want = math.log(2.0) + stats.multinomial.logpmf(ROWS[0], 20, THETA)  # Dirichlet(1,1,1)
    assert got == pytest.approx(want, rel=1e-6)


def test_one_total_for_every_row_in_a_plate():
    m = ppl.compile("model M(y: int[G, K], n: int[G]) {\n"
                    "  theta: simplex[K] ~ Dirichlet(ones(K))\n"
                    "  plate G {\n    y ~ Multinomial(n, theta)\n  }\n}\n")
    rows = [[10, 5, 5], [2, 8, 10]]
    got = m.log_density({"theta": THETA}, {"y": rows, "n": [20, 20]})
    want = math.log(2.0) + sum(stats.multinomial.logpmf(r, 20, THETA) for r in rows)
    assert got == pytest.approx(want, rel=1e-6)


def test_totals_per_row_refused_at_the_argument():
    m = ppl.compile("model M(y: int[G, K], n: int[G]) {\n"
                    "  theta: simplex[K] ~ Dirichlet(ones(K))\n"
                    "  plate G {\n    y ~ Multinomial(n, theta)\n  }\n}\n")
    with pytest.raises(ppl.BdlError) as err:
        m.log_density({"theta": THETA}, {"y": ROWS, "n": [20, 50, 10]})
    (d,) = err.value.diagnostics
    assert d.message.startswith("Multinomial takes one total_count for all its rows, but "
                                "the totals differ (20, 50, 10): for a total per row write "
                                "factor(sum(y * log(theta)))")
    assert "DirichletMultinomial(kappa * theta, n)" in d.message
    assert (d.span.line, d.span.col) == (4, 21)


def test_the_factor_form_for_totals_per_row():
    """factor(sum(y * log(theta))) is the multinomial log probability of every row less
    its coefficient lgamma(n + 1) - sum(lgamma(y + 1)), a constant of the data."""
    m = ppl.compile("model M(y: int[G, K]) {\n  theta: simplex[K] ~ Dirichlet(ones(K))\n"
                    "  factor(sum(y * log(theta)))\n}\n")
    got = m.log_density({"theta": THETA}, {"y": ROWS})
    coef = sum(math.lgamma(sum(r) + 1) - sum(math.lgamma(v + 1) for v in r) for r in ROWS)
    want = math.log(2.0) + sum(stats.multinomial.logpmf(r, sum(r), THETA) for r in ROWS)
    assert got + coef == pytest.approx(want, rel=1e-6)


def test_jit_reads_the_total_once():
    m = ppl.compile("model M(y: int[K]) {\n  theta: simplex[K] ~ Dirichlet(ones(K))\n"
                    "  y ~ Multinomial(sum(y), theta)\n}\n")
    fit = m.fit({"y": [30, 10, 60]}, infer="map", steps=300, lr=0.05, jit=True, seed=0)
    assert fit.samples["theta"][0].tolist() == pytest.approx([0.3, 0.1, 0.6], abs=1e-3)
