"""Distribution findings of a fuzz against scipy, each checked
against the scipy or hand-computed value:

1. ``log_density`` reads its inputs only: a site whose parameters or support follow a
   latent is built from the value given, not from a prior draw (which could fall
   outside that support and refuse valid values); so do ``fit.predict`` and
   ``predict_run``, which looked at the model's sites at a prior draw.
2. ``MixtureSameFamily`` in nested plates with weights that vary over the outer plate.
3. ``MixtureOfDiagNormals`` (and the shared-covariance form, ``GaussianScaleMixture``,
   a MixtureSameFamily of MultivariateNormals) in a plate: the components dim is part
   of each draw, not a batch dim to pair with the plate.
4. Arguments whose sizes must agree (MultivariateNormal's loc and matrix, a mixture's K):
   a compile error when the sizes differ as written, a located run-time error naming both
   when only the data fix them (was torch's RuntimeError or a bare AssertionError).
5. ``Truncated`` of a count with ``low == high``: the point mass (density 1).
"""

from __future__ import annotations

import math

import numpy as np
import pyro.distributions as dist
import pytest
import scipy.stats as st
import torch
from scipy.special import logsumexp

import ppl
from ppl.syntax.diagnostics import BdlError

pytestmark = pytest.mark.usefixtures("float64")


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


def test_predict_looks_at_a_saved_draw_not_a_prior_one(tmp_path):
    # predict(seed=0) looked at the sites at the seed-0 prior draw a = 1.54 (> y's high)
    m = ppl.compile(UNIFORM_LOW)
    fit = m.fit({"y": 0.5}, infer="nuts(samples=20, warmup=20, chains=1, seed=1)")
    a = fit.samples["a"].reshape(-1)
    assert bool((a < 0.5).all())
    fit.save(tmp_path / "run")
    for pred in (fit.predict({}, seed=0), m.predict_run(tmp_path / "run", {}, seed=0)):
        y = pred["y"].reshape(-1)
        assert y.shape == a.shape
        assert bool(((y >= a) & (y <= 1.0)).all())  # y_i ~ Uniform(a_i, 1)


# ---- 2. MixtureSameFamily in nested plates, weights of the outer plate ----

Y2 = [[0.1, -0.5, 1.0], [2.0, 0.3, -1.0]]
W2 = [0.2, 0.7]
P2 = [[0.2, 0.8], [0.7, 0.3]]


def _mix_ref(weights) -> float:
    """sum over i, j of log sum_k W[i, k] N(y[i, j]; mu_k, 1), mu = (-1, 1.5)."""
    mu = np.array([-1.0, 1.5])
    return float(sum(logsumexp(np.log(weights[i]) + st.norm.logpdf(Y2[i][j], mu, 1.0))
                     for i in range(2) for j in range(3)))


NESTED_MIX = """
model M(y: real[N, M], {arg}) {{
  plate i in N {{ {draw}plate j in M {{
    y ~ MixtureSameFamily(Categorical(probs={probs}), Normal([-1.0, 1.5], 1.0))
  }} }}
}}
"""


@pytest.mark.parametrize("arg, draw, probs, data", [
    ("w: real[N]", "", "[w, 1 - w]", {"w": W2}),
    ("P: real[N, K]", "", "P", {"P": P2}),
    ("P: real[N, K]", "", "P[i]", {"P": P2}),
])
def test_mixture_weights_of_the_outer_plate(arg, draw, probs, data):
    weights = np.array(P2) if "P" in data else np.stack([W2, 1 - np.array(W2)], 1)
    m = ppl.compile(NESTED_MIX.format(arg=arg, draw=draw, probs=probs))
    got = m.log_density({}, {"y": Y2, **data})
    assert got == pytest.approx(_mix_ref(weights), rel=1e-12)
    if probs == "[w, 1 - w]":
        assert got == pytest.approx(-10.41702, abs=1e-5)


def test_mixture_weights_drawn_in_the_outer_plate():
    src = NESTED_MIX.format(arg="K: int", draw="w ~ Beta(2, 2)\n  ", probs="[w, 1 - w]")
    got = ppl.compile(src).log_density({"w": W2}, {"y": Y2, "K": 2})
    want = _mix_ref(np.stack([W2, 1 - np.array(W2)], 1)) + st.beta(2, 2).logpdf(W2).sum()
    assert got == pytest.approx(want, rel=1e-12)


# ---- 3. mixtures whose parameters carry the components dim, in a plate ----

Y3 = [[0.3, -0.2], [1.0, 2.0], [0.0, 0.0]]
L3 = [[0.0, 1.0], [2.0, -1.0]]
S3 = [[1.0, 0.5], [0.7, 2.0]]
C3 = [0.2, -0.3]


def _diag_mix_ref(y, locs, scales, logits) -> float:
    """log sum_k softmax(logits)_k prod_d N(y_d; locs[k, d], scales[k, d])."""
    logw = np.array(logits) - logsumexp(logits)
    return float(logsumexp(logw + st.norm.logpdf(y, locs, scales).sum(-1)))


def test_mixture_of_diag_normals_in_a_plate():
    src = """
model M(y: real[T, D], L: real[K, D], S: real[K, D], c: real[K]) {
  plate t in T { y ~ MixtureOfDiagNormals(L, S, c) }
}
"""
    got = ppl.compile(src).log_density({}, {"y": Y3, "L": L3, "S": S3, "c": C3})
    want = sum(_diag_mix_ref(y, L3, S3, C3) for y in Y3)
    assert got == pytest.approx(want, rel=1e-12)
    assert want == pytest.approx(-11.8104, abs=1e-4)


def test_mixture_of_diag_normals_per_element_arguments():
    # each element's own logits (c[t]) or its own locs (L: real[T, K, D])
    c = [C3, [0.0, 1.0], [1.0, -1.0]]
    src = """
model M(y: real[T, D], L: real[K, D], S: real[K, D], c: real[T, K]) {
  plate t in T { y ~ MixtureOfDiagNormals(L, S, c[t]) }
}
"""
    got = ppl.compile(src).log_density({}, {"y": Y3, "L": L3, "S": S3, "c": c})
    want = sum(_diag_mix_ref(y, L3, S3, ct) for y, ct in zip(Y3, c, strict=True))
    assert got == pytest.approx(want, rel=1e-12)
    locs = [L3, L3, [[1.0, 1.0], [0.0, 0.0]]]
    src = """
model M(y: real[T, D], L: real[T, K, D], S: real[K, D], c: real[K]) {
  plate t in T { y ~ MixtureOfDiagNormals(L, S, c) }
}
"""
    got = ppl.compile(src).log_density({}, {"y": Y3, "L": locs, "S": S3, "c": C3})
    want = sum(_diag_mix_ref(y, lt, S3, C3) for y, lt in zip(Y3, locs, strict=True))
    assert got == pytest.approx(want, rel=1e-12)


def test_shared_covariance_and_mvn_components_in_a_plate():
    s = [1.0, 0.5]
    src = """
model M(y: real[T, D], L: real[K, D], s: real[D], c: real[K]) {
  plate t in T { y ~ MixtureOfDiagNormalsSharedCovariance(L, s, c) }
}
"""
    got = ppl.compile(src).log_density({}, {"y": Y3, "L": L3, "s": s, "c": C3})
    assert got == pytest.approx(sum(_diag_mix_ref(y, L3, [s, s], C3) for y in Y3), rel=1e-12)
    src = """
model M(y: real[T, D], L: real[K, D], c: real[K]) {
  plate t in T { y ~ MixtureSameFamily(Categorical(logits=c), MultivariateNormal(L, eye(D))) }
}
"""
    got = ppl.compile(src).log_density({}, {"y": Y3, "L": L3, "c": C3})
    ones = [[1.0, 1.0], [1.0, 1.0]]
    assert got == pytest.approx(sum(_diag_mix_ref(y, L3, ones, C3) for y in Y3), rel=1e-12)


def test_gaussian_scale_mixture_in_a_plate():
    # p(y) = sum_k pi_k N(y; 0, diag((a * s_k)^2)) for each row
    a, logits, scale = [1.0, 0.5], C3, [1.0, 3.0]
    src = """
model M(y: real[T, D], a: real[D], l: real[K], s: real[K]) {
  plate t in T { y ~ GaussianScaleMixture(a, l, s) }
}
"""
    got = ppl.compile(src).log_density({}, {"y": Y3, "a": a, "l": logits, "s": scale})
    sd = np.outer(scale, a)
    assert got == pytest.approx(sum(_diag_mix_ref(y, np.zeros((2, 2)), sd, logits)
                                    for y in Y3), rel=1e-12)
    # Pyro's own class, one value at a time, agrees
    g = dist.GaussianScaleMixture(torch.tensor(a), torch.tensor(logits), torch.tensor(scale))
    assert got == pytest.approx(sum(float(g.log_prob(torch.tensor(y))) for y in Y3),
                                rel=1e-12)


# ---- 4. sizes that must agree ----

def test_mvn_sizes_differ_as_written():
    msgs = _errors("model M(y: real[3]) {\n  y ~ MultivariateNormal(zeros(3), eye(2))\n}")
    assert msgs == ["MultivariateNormal: 'covariance_matrix' [2, 2] and 'loc' [3] disagree "
                    "on D (coordinates): 2 and 3 must be equal"]


@pytest.mark.parametrize("src, want", [
    ("model M(y: real[2]) {\n  y ~ GaussianScaleMixture([1.0, 2.0], [0.2, -0.3], "
     "[1.0, 3.0, 2.0])\n}",
     "GaussianScaleMixture: 'component_scale' [3] and 'component_logits' [2] disagree on "
     "K (components): 3 and 2 must be equal"),
    ("model M(y: real[2]) {\n  y ~ MixtureOfDiagNormals([[0.0, 1.0], [2.0, -1.0]], "
     "[[1.0, 1.0], [1.0, 1.0]], [0.2, 0.1, 0.0])\n}",
     "MixtureOfDiagNormals: 'component_logits' [3] and 'locs' [2, 2] disagree on "
     "K (components): 3 and 2 must be equal"),
    ("model M(y: real[T, 2], L: real[K, 2], S: real[K, 3], c: real[K]) {\n  plate t in T "
     "{ y ~ MixtureOfDiagNormals(L, S, c) }\n}",
     "MixtureOfDiagNormals: 'coord_scale' [K, 3] and 'locs' [K, 2] disagree on "
     "D (coordinates): 3 and 2 must be equal"),
])
def test_mixture_sizes_differ_as_written(src, want):
    assert _errors(src) == [want]


@pytest.mark.parametrize("src, data, at, want", [
    ("model M(y: real[K], m: real[K], S: real[J, J]) {\n  y ~ MultivariateNormal(m, S)\n}",
     {"y": [0.0, 1.0, 2.0], "m": [0.0, 0.0, 0.0], "S": [[1.0, 0.0], [0.0, 1.0]]}, (2, 29),
     "MultivariateNormal: 'loc' has 3 elements but 'covariance_matrix' is 2 x 2"),
    ("model M(y: real[D], a: real[D], l: real[K], s: real[J]) {\n"
     "  y ~ GaussianScaleMixture(a, l, s)\n}",
     {"y": [0.0, 1.0], "a": [1.0, 2.0], "l": [0.2, -0.3], "s": [1.0, 2.0, 3.0]}, (2, 34),
     "GaussianScaleMixture: 'component_scale' is [3] but 'component_logits' is [2]"),
    ("model M(y: real[D], L: real[K, D], S: real[K, D], c: real[J]) {\n"
     "  y ~ MixtureOfDiagNormals(L, S, c)\n}",
     {"y": [0.0, 1.0], "L": L3, "S": S3, "c": [0.2, 0.1, 0.0]}, (2, 34),
     "MixtureOfDiagNormals: 'component_logits' is [3] but 'locs' has 2 components"),
])
def test_sizes_from_the_data_stop_the_run_at_the_argument(src, data, at, want):
    m = ppl.compile(src)  # K and J cannot be compared before the data bind them
    with pytest.raises(BdlError) as info:
        m.log_density({}, data)
    d = info.value.diagnostics[0]
    assert d.message.startswith(want)
    assert (d.span.line, d.span.col) == at


# ---- 5. Truncated count with low == high ----

def test_truncated_count_at_one_point():
    m = ppl.compile("model M(y: int) {\n  y ~ Truncated(Geometric(0.3), low=7, high=7)\n}")
    assert m.log_density({}, {"y": 7}) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(BdlError, match="'y' is 6; Truncated is over integers from 7 to 7"):
        m.log_density({}, {"y": 6})
    assert m.sample_prior({}, num_samples=4)["y"].tolist() == [7, 7, 7, 7]
    p = ppl.compile("model M(y: int[N]) {\n  r ~ Gamma(2, 1)\n"
                    "  y ~ Truncated(Poisson(r), low=2, high=2)\n}")
    assert p.log_density({"r": 1.5}, {"y": [2, 2]}) == \
        pytest.approx(st.gamma(2).logpdf(1.5), rel=1e-12)


def test_truncated_empty_or_continuous_point_still_refused():
    assert _errors("model M(y: int) {\n  y ~ Truncated(Geometric(0.3), low=7, high=6)\n}") \
        == ["high of Truncated must be >= low (7), got 6"]
    assert _errors("model M(y: real) {\n  y ~ Truncated(Normal(0, 1), low=1, high=1)\n}") \
        == ["high of Truncated must be > low (1), got 1"]
