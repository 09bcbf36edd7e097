"""Leftovers of tests/test_distribution_catalogue2.py, each against an exact reference:

1. ``IndependentHMM``: D chains of one observed coordinate each, the value ``[T, D]``:
   its density is the sum over the chains of each chain's sum over its state paths (a
   ``DiscreteHMM`` base), or of each chain's joint Gaussian (a ``GaussianHMM`` base).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats as st
from test_distribution_catalogue2 import _hmm_paths, _ld

import ppl
from ppl.syntax.diagnostics import BdlError

pytestmark = pytest.mark.usefixtures("float64")


# ---- 1. IndependentHMM ----

PIS = [[0.6, 0.4], [0.5, 0.5]]
AS = [[[0.9, 0.1], [0.2, 0.8]], [[0.7, 0.3], [0.4, 0.6]]]
MUS = [[0.3, 1.3], [0.0, 2.0]]
Y = [[0.1, 0.2], [0.5, 0.3], [1.2, -0.4]]
# D = 2 chains of S = 2 states: the chains' dim first, then Pyro's time dim (1: a
# homogeneous chain), then the states; each chain observes a MultivariateNormal of 1
# coordinate (a chain's draw is [T, 1])
IHMM = ("IndependentHMM(DiscreteHMM(log([[0.6, 0.4], [0.5, 0.5]]), "
        "log([[[[0.9, 0.1], [0.2, 0.8]]], [[[0.7, 0.3], [0.4, 0.6]]]]), "
        "MultivariateNormal([[[[{m}], [{m} + 1.0]]], [[[0.0], [2.0]]]], [[1.0]]){dur}))")


def _chains(y, mu0=0.3) -> float:
    mus = [[mu0, mu0 + 1.0], MUS[1]]
    return sum(_hmm_paths([row[d] for row in y], PIS[d], AS[d],
                          lambda v, s, d=d: st.norm.logpdf(v, mus[d][s], 1.0))
               for d in range(2))


def test_independent_hmm_is_the_sum_of_its_chains():
    src = f"model M(y: real[T, 2], T: int) {{ m ~ Normal(0, 1)\n y ~ " \
        f"{IHMM.format(m='m', dur='')} }}"
    want = st.norm.logpdf(0.3) + _chains(Y)
    assert want == pytest.approx(-8.3562113823, abs=1e-9)
    assert _ld(src, {"m": 0.3}, {"y": Y, "T": 3}) == pytest.approx(want, abs=1e-10)
    # in a plate, its length given
    src = f"model M(y: real[N, T, 2], N: int, T: int) {{ plate i in N {{ y ~ " \
        f"{IHMM.format(m='0.3', dur=', duration=T')} }} }}"
    y2 = [Y, [[1.0, -1.0], [0.0, 0.5], [2.0, 2.5]]]
    got = _ld(src, {}, {"y": y2, "N": 2, "T": 3})
    assert got == pytest.approx(_chains(y2[0]) + _chains(y2[1]), abs=1e-10)


def test_independent_gaussian_hmm_is_its_chains_joint_gaussians():
    # chain d: x_-1 ~ N(0, 1), x_t = a_d x_t-1 + N(0, 0.5), y_t = x_t + N(0, 0.2)
    src = """
    model M(y: real[T, 2], T: int) {
      y ~ IndependentHMM(GaussianHMM(MultivariateNormal([[0.0], [0.0]], [[1.0]]),
                                     [[[[0.7]]], [[[0.5]]]],
                                     MultivariateNormal([[[0.0]], [[0.0]]], [[0.5]]),
                                     [[[[1.0]]], [[[1.0]]]],
                                     MultivariateNormal([[[0.0]], [[0.0]]], [[0.2]])))
    }"""
    want = 0.0
    for d, a in enumerate([0.7, 0.5]):
        var = [1.0]
        for _ in range(3):
            var.append(a * a * var[-1] + 0.5)
        cov = np.array([[var[min(s, t) + 1] * a ** abs(s - t) for t in range(3)]
                        for s in range(3)]) + 0.2 * np.eye(3)
        want += st.multivariate_normal(np.zeros(3), cov).logpdf([row[d] for row in Y])
    assert _ld(src, {}, {"y": Y, "T": 3}) == pytest.approx(want, abs=1e-10)


def test_independent_hmm_latent_and_its_draws():
    # was "DiscreteHMM.rsample is not implemented in Pyro": Pyro's IndependentHMM drew
    # through its base's rsample, which a DiscreteHMM has not
    src = f"model M(T: int) {{ z: real[T, 2] ~ {IHMM.format(m='0.3', dur=', duration=T')} }}"
    m = ppl.compile(src)
    assert float(m.log_density({"z": Y}, {"T": 3})) == pytest.approx(_chains(Y), abs=1e-10)
    n = 4000
    z = np.asarray(m.sample_prior({"T": 3}, num_samples=n, seed=2)["z"])
    assert z.shape == (n, 3, 2)
    # E z_t of chain d: its state's mean, the chain started one step before t = 0
    for d in range(2):
        p = np.array(PIS[d])
        for t in range(3):
            p = p @ np.array(AS[d])
            mean = p @ np.array([[0.3, 1.3], MUS[1]][d])
            assert abs(z[:, t, d].mean() - mean) < 4 * z[:, t, d].std() / math.sqrt(n)


@pytest.mark.parametrize("base, at, want", [
    # a chain of numbers: each chain's draw is [T], not [T, 1]
    ("DiscreteHMM(log([[0.6, 0.4], [0.5, 0.5]]), log([[[[0.9, 0.1], [0.2, 0.8]]], "
     "[[[0.7, 0.3], [0.4, 0.6]]]]), Normal([[[0.3, 1.3]], [[0.0, 2.0]]], 1.0))", 53,
     "IndependentHMM: 'base_dist' draws [T] per chain; each chain must draw [T, 1]"),
    # one chain: no batch dim to count the chains
    ("DiscreteHMM(log([0.6, 0.4]), log([[0.9, 0.1], [0.2, 0.8]]), "
     "MultivariateNormal([[0.3], [1.3]], [[1.0]]))", 53,
     "IndependentHMM: 'base_dist' has no batch dims: its last batch dim must count the "
     "independent chains (D)"),
    # the chains' transitions without a time dim: [2, 1, 1] is read as 2 time steps
    ("GaussianHMM(MultivariateNormal([[0.0], [0.0]], [[1.0]]), [[[0.7]], [[0.5]]], "
     "MultivariateNormal([[0.0], [0.0]], [[0.5]]), [[[1.0]], [[1.0]]], "
     "MultivariateNormal([[0.0], [0.0]], [[0.2]]))", 34,
     "IndependentHMM: the value has 3 time steps but its chains' parameters have 2"),
])
def test_independent_hmm_bases_that_do_not_fit_in_words(base, at, want):
    # were Pyro's bare AssertionError, and torch's "The right-most size of value must
    # match event_shape: torch.Size([2, 3, 1]) vs (2, 1)"
    src = f"model M(y: real[T, 2], T: int) {{ y ~ IndependentHMM({base}) }}"
    with pytest.raises(BdlError) as info:
        ppl.compile(src).log_density({}, {"y": Y, "T": 3})
    assert want in str(info.value) and f":1:{at}:" in str(info.value)



# ---- 2. Empirical draws in the fit's dtype ----

@pytest.mark.parametrize("infer", ["svi(steps=3, samples=20)",
                                   "nuts(warmup=5, samples=10, chains=1)"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_empirical_draws_are_the_fits_dtype_and_its_samples(infer, dtype):
    # an Empirical latent's draws are in the fit's dtype, as every latent's are (svi's
    # default float32, nuts' float64: docs "dtype and device"), its samples (data here,
    # given as float64) converted to it like all real data: each draw is one of them
    src = "model M(y: real, s: real[3]) { e ~ Empirical(s, log([0.2, 0.3, 0.5]))\n" \
        " mu ~ Normal(0, 1)\n y ~ Normal(mu + e, 1) }"
    s = np.array([0.1, 0.2, 0.3])
    fit = ppl.compile(src).fit({"y": 1.0, "s": s}, infer=infer.replace(")", f", dtype={dtype})"),
                               seed=0)
    e, mu = fit.samples["e"], fit.samples["mu"]
    assert str(e.dtype) == str(mu.dtype) == f"torch.{dtype}"
    assert set(np.unique(e.numpy())) <= set(s.astype(dtype))


# ---- 4. OneTwoMatching's literal logits of the wrong shape ----

@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="needs the ppl/check/checker.py hunk of helper DI4's report "
                   "(signatures.EVENT_MULTIPLES read by _event_sizes), then drop this mark")
def test_one_two_matching_logits_written_of_the_wrong_shape_is_a_compile_error():
    # was found only when the model ran (rt.OneTwoMatching's words, at the statement)
    src = "model M(y: int[3]) { y ~ OneTwoMatching([[0.1, 0.5], [0.2, 0.0], [-1.0, 0.3]]) }"
    try:
        ppl.compile(src)
    except BdlError as e:
        text = str(e)
    else:
        text = ""
    assert ":1:41: error: OneTwoMatching: 'logits' is [3, 2], not 2M x M (two sources " \
        "per destination)" in text
    # 2M x M written, or of sizes the data fix, compiles
    ppl.compile("model M(y: int[4]) { y ~ OneTwoMatching([[0.1, 0.5], [0.2, 0.0], "
                "[-1.0, 0.3], [0.4, 0.9]]) }")
    ppl.compile("model M(y: int[N], L: real[N, K], N: int, K: int) { y ~ OneTwoMatching(L) }")
    # so is data of a declared shape
    with pytest.raises(BdlError, match=r":1:56: error: OneTwoMatching: 'logits' is \[6, 2\], "
                       r"not 2M x M"):
        ppl.compile("model M(y: int[6], L: real[6, 2]) { y ~ OneTwoMatching(L) }")
