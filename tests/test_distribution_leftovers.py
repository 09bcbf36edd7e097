"""Leftovers of tests/test_distribution_catalogue2.py, each against an exact reference:

1. ``IndependentHMM``: D chains of one observed coordinate each, the value ``[T, D]``:
   its density is the sum over the chains of each chain's sum over its state paths (a
   ``DiscreteHMM`` base), or of each chain's joint Gaussian (a ``GaussianHMM`` base).
"""

from __future__ import annotations

import math

import numpy as np
import pyro.distributions as dist
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
    n = 300  # each draw a run of the model
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
     "MultivariateNormal([[0.0], [0.0]], [[0.2]]))", 53,
     "IndependentHMM: the base's 'transition_matrix' is [2, 1, 1]: Pyro reads its leading "
     "2 as 2 time steps shared by the chains, not as the 2 chains; write [2, 1, 1, 1] for "
     "one homogeneous chain each, or [1, 2, 1, 1] for steps that change with time"),
    # a time-varying chain of 3 steps shared by 2 chains: the value's 3 rows are not 2
    ("DiscreteHMM(log([[0.6, 0.4], [0.5, 0.5]]), log([[[1, 1], [1, 1]], [[1, 1], [1, 1]], "
     "[[1, 1], [1, 1]]]), MultivariateNormal([[[[0.3], [1.3]]], [[[0.0], [2.0]]]], "
     "[[1.0]]))", 34,
     "IndependentHMM: the value has 2 time steps but its chains' parameters have 3"),
])
def test_independent_hmm_bases_that_do_not_fit_in_words(base, at, want):
    # were Pyro's bare AssertionError, and torch's "The right-most size of value must
    # match event_shape: torch.Size([2, 3, 1]) vs (2, 1)"
    src = f"model M(y: real[T, 2], T: int) {{ y ~ IndependentHMM({base}) }}"
    y = Y[:2] if "have 3" in want else Y
    with pytest.raises(BdlError) as info:
        ppl.compile(src).log_density({}, {"y": y, "T": len(y)})
    assert want in str(info.value) and f":1:{at}:" in str(info.value)


def test_independent_hmm_chains_transitions_read_as_time_refused_when_t_is_d():
    # D = 2 chains of S = 2 states, T = 2 steps: transitions written [D, S, S] (one per
    # chain) were read by Pyro as 2 time steps shared by both chains, silently: density
    # -4.8373 against the chains' own -4.8072 (with [D, 1, S, S])
    trans = "log([[[0.9, 0.1], [0.2, 0.8]], [[0.7, 0.3], [0.4, 0.6]]])"
    per_chain = "log([[[[0.9, 0.1], [0.2, 0.8]]], [[[0.7, 0.3], [0.4, 0.6]]]])"
    obs = "MultivariateNormal([[[[0.3], [1.3]]], [[[0.0], [2.0]]]], [[1.0]])"
    src = ("model M(y: real[T, 2], T: int) {{ y ~ IndependentHMM(DiscreteHMM("
           "log([[0.6, 0.4], [0.5, 0.5]]), {t}, {o})) }}")
    good = src.format(t=per_chain, o=obs)
    want = _chains(Y[:2])
    assert _ld(good, {}, {"y": Y[:2], "T": 2}) == pytest.approx(want, abs=1e-10)
    with pytest.raises(BdlError) as info:
        ppl.compile(src.format(t=trans, o=obs)).log_density({}, {"y": Y[:2], "T": 2})
    msg = str(info.value)
    assert "'transition_logits' is [2, 2, 2]: Pyro reads its leading 2 as 2 time steps" in msg
    assert "write [2, 1, 2, 2] for one homogeneous chain each" in msg and ":1:53:" in msg



def test_homogeneous_hmm_latent_outside_plates_takes_its_declared_length():
    # was "DiscreteHMM is drawn here ... give duration=T" outside plates (in a plate the
    # declared length already reached it): a homogeneous chain has no length of its own
    src = ("model M(T: int) {\n  z: real[T] ~ DiscreteHMM(log([0.5, 0.5]), "
           "log([[0.9, 0.1], [0.2, 0.8]]), Normal([0.0, 3.0], 1.0))\n}")
    m = ppl.compile(src)
    z = [0.1, 0.2, 3.0, 2.5]
    want = _hmm_paths(z, [0.5, 0.5], [[0.9, 0.1], [0.2, 0.8]],
                      lambda v, s: st.norm.logpdf(v, [0.0, 3.0][s], 1.0))
    assert float(m.log_density({"z": z}, {"T": 4})) == pytest.approx(want, abs=1e-5)
    n = 400
    draws = np.asarray(m.sample_prior({"T": 4}, num_samples=n, seed=1)["z"])
    assert draws.shape == (n, 4)
    p = np.array([0.5, 0.5])
    for t in range(4):  # the chain starts one step before t = 0
        p = p @ np.array([[0.9, 0.1], [0.2, 0.8]])
        mean = p @ np.array([0.0, 3.0])
        assert abs(draws[:, t].mean() - mean) < 4 * draws[:, t].std() / math.sqrt(n)


def test_a_time_varying_chain_of_other_steps_than_the_value_says_both():
    # was torch's "event shape (3,) does not match (2,)" in a plate (and under the declared
    # type outside plates), here the chain's own words
    src = ("model M(y: real[T], T: int) {\n  y ~ DiscreteHMM(log([0.5, 0.5]), log([[[0.9, "
           "0.1], [0.2, 0.8]], [[0.9, 0.1], [0.2, 0.8]], [[0.9, 0.1], [0.2, 0.8]]]), "
           "Normal([0.0, 3.0], 1.0))\n}")
    with pytest.raises(BdlError) as info:
        ppl.compile(src).log_density({}, {"y": [0.1, 0.2], "T": 2})
    assert "<string>:2:3: error: DiscreteHMM: the value has 2 time steps but its " \
        "parameters have 3" in str(info.value)


def test_a_homogeneous_gaussian_mrf_in_a_plate_is_the_sum_of_its_rows():
    # was "event shape (1, 1) does not match (3, 1)": in a plate the value's declared [T, 1]
    # met the MRF's homogeneous event; outside plates its density (checked against the
    # path integral in test_distribution_catalogue2) read the value's length
    mrf = ("GaussianMRF(MultivariateNormal([0.0], [[1.0]]), MultivariateNormal([0.0, 0.0], "
           "[[1.0, 0.5], [0.5, 1.0]]), MultivariateNormal([0.0, 0.0], [[1.0, 0.3], "
           "[0.3, 1.0]]))")
    plated = f"model M(y: real[N, T, 1], N: int, T: int) {{ plate i in N {{ y ~ {mrf} }} }}"
    one = f"model M(y: real[T, 1], T: int) {{ y ~ {mrf} }}"
    y = [[[0.1], [0.5], [1.2]], [[0.0], [0.2], [0.3]]]
    rows = [_ld(one, {}, {"y": row, "T": 3}) for row in y]
    assert sum(rows) == pytest.approx(-6.2912629, abs=1e-6)
    assert _ld(plated, {}, {"y": y, "N": 2, "T": 3}) == pytest.approx(sum(rows), abs=1e-9)


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


# ---- 5. a homogeneous HMM in a plate without duration=T ----

POISSON_HMM = """
model M(y: int[N, T], N: int, T: int) {
  lam: real<lower=0>[2] ~ Gamma(2, 1)
  plate i in N {
    y ~ DiscreteHMM(log([0.5, 0.5]), log([[0.9, 0.1], [0.2, 0.8]]), Poisson(lam))
  }
}"""
Y2 = [[0, 3, 5, 1], [2, 2, 0, 0]]


def _poisson_chains(rows) -> float:
    return sum(st.gamma(2).logpdf(v) for v in (1.0, 4.0)) + sum(
        _hmm_paths(row, [0.5, 0.5], AS[0], lambda v, s: st.poisson.logpmf(v, [1.0, 4.0][s]))
        for row in rows)


def test_with_duration_is_the_chain_of_that_length():
    import torch

    from ppl.runtime.hmm import DiscreteHMM, IndependentHMM, with_duration
    lam = torch.tensor([1.0, 4.0])
    d = DiscreteHMM(torch.tensor(PIS[0]).log(), torch.tensor(AS[0]).log(),
                    dist.Poisson(lam))
    assert d.duration is None and d.event_shape == (1,)
    d4 = with_duration(d, 4)
    assert d4.duration == 4 and d4.event_shape == (4,) and d.event_shape == (1,)
    want = _hmm_paths(Y2[0], PIS[0], AS[0], lambda v, s: st.poisson.logpmf(v, [1.0, 4.0][s]))
    assert float(d4.log_prob(torch.tensor(Y2[0], dtype=torch.float64))) == \
        pytest.approx(want, abs=1e-10)
    assert d4.sample((3,)).shape == (3, 4) and d4.expand([2]).event_shape == (4,)
    assert with_duration(d4, 4) is d4 and with_duration(d, 1) is d
    # an IndependentHMM's base gets the length too
    base = DiscreteHMM(torch.tensor(PIS).log(), torch.tensor(AS).log().unsqueeze(-3),
                       dist.MultivariateNormal(torch.tensor(MUS).reshape(2, 1, 2, 1),
                                               torch.eye(1)))
    ind = with_duration(IndependentHMM(base), 3)
    assert ind.event_shape == (3, 2) and ind.base_dist.duration == 3
    assert ind.sample((5,)).shape == (5, 3, 2)
    assert float(ind.log_prob(torch.tensor(Y))) == pytest.approx(_chains(Y), abs=1e-10)


def test_a_homogeneous_hmm_in_a_plate_takes_the_values_length():
    # was "event shape (1,) does not match (4,)" at the statement: duration=T had to be
    # spelled out (tests/test_distribution_catalogue2.py gives it)
    got = _ld(POISSON_HMM, {"lam": [1.0, 4.0]}, {"y": Y2, "N": 2, "T": 4})
    assert got == pytest.approx(_poisson_chains(Y2), abs=1e-10)
    # optional data left out are drawn, T long
    src = POISSON_HMM.replace("M(y: int[N, T], N: int, T: int)",
                              "M(N: int, T: int, y: int[N, T]?)")
    d = ppl.compile(src).sample_prior({"N": 2, "T": 4}, num_samples=3, seed=0)
    assert tuple(d["y"].shape) == (3, 2, 4)
