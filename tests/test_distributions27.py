"""Distribution-oracle findings of stop 27 (helper DO's fuzz against scipy), each checked
against the scipy or hand-computed value:

1. ``log_density`` reads its inputs only: a site whose parameters or support follow a
   latent is built from the value given, not from a prior draw (which could fall
   outside that support and refuse valid values).
"""

from __future__ import annotations

import math

import pytest
import scipy.stats as st
import torch

import ppl
from ppl.syntax.diagnostics import BdlError


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _errors(source: str) -> list[str]:
    with pytest.raises(BdlError) as info:
        ppl.compile(source)
    return [d.message for d in info.value.diagnostics]


# ---- 1. log_density at the values given, never at a prior draw ----

UNIFORM_LOW = """
model M(y: real) {
  a ~ Normal(0, 1)
  y ~ Uniform(a, 1.0)
}
"""

TRUNC_PARETO = """
model M(y: real) {
  s ~ Gamma(2, 2)
  y ~ Truncated(Pareto(s, 3.0), high=1.5)
}
"""

TRUNC_GPD = """
model M(y: real) {
  q_loc ~ Normal(0, 1)
  q_scale ~ Gamma(2, 2)
  e_c ~ Normal(0, 1)
  y ~ Truncated(GeneralizedPareto(q_loc, q_scale, exp(e_c)), low=0.236, high=1.391)
}
"""


def test_support_from_a_latent_reads_the_value_given():
    # the seed-0 prior draw of a is 1.54 > 1: Uniform(1.54, 1.0) was refused
    want = st.norm.logpdf(0.2) + st.uniform(0.2, 0.8).logpdf(0.5)
    assert ppl.compile(UNIFORM_LOW).log_density({"a": 0.2}, {"y": 0.5}) == \
        pytest.approx(want, rel=1e-12)
    assert want == pytest.approx(-0.71579, abs=1e-5)


def test_truncated_support_from_a_latent_reads_the_value_given():
    # Pareto(scale=s, alpha=3) cut at 1.5, at s = 0.5; the draw s = 2.28 left [2.28, 1.5]
    s, y = 0.5, 1.0
    pareto = st.pareto(3.0, scale=s)
    want = st.gamma(2, scale=0.5).logpdf(s) + pareto.logpdf(y) - pareto.logcdf(1.5)
    got = ppl.compile(TRUNC_PARETO).log_density({"s": s}, {"y": y})
    assert got == pytest.approx(want, rel=1e-12)
    assert want == pytest.approx(-1.24994, abs=1e-5)


def test_truncated_generalized_pareto_at_the_values_given():
    lat = {"q_loc": 0.101, "q_scale": 0.815, "e_c": -1.194}
    c = math.exp(lat["e_c"])
    g = st.genpareto(c, loc=lat["q_loc"], scale=lat["q_scale"])
    want = (st.norm.logpdf(lat["q_loc"]) + st.gamma(2, scale=0.5).logpdf(lat["q_scale"])
            + st.norm.logpdf(lat["e_c"]) + g.logpdf(0.588)
            - math.log(g.cdf(1.391) - g.cdf(0.236)))
    got = ppl.compile(TRUNC_GPD).log_density(lat, {"y": 0.588})
    assert got == pytest.approx(want, rel=1e-10)


def test_values_given_still_checked():
    m = ppl.compile(UNIFORM_LOW)
    with pytest.raises(BdlError, match="missing value for latent 'a'"):
        m.log_density({}, {"y": 0.5})
    with pytest.raises(BdlError, match="'a' does not fit the latent, \\[\\]"):
        m.log_density({"a": [0.1, 0.2]}, {"y": 0.5})
