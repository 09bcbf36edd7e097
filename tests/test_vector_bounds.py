"""Vector bounds (Stan 2.27's y_cens: real<lower=U>[N] with U: real[N]): one bound per
element, on latents (the censored-regression imputation idiom), params and data."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

import ppl

CENSORED = ("model C(U: real[N], mu: real) {\n"
            "  y_cens: real<lower=U>[N] ~ Normal(mu, 1)\n}\n")
U = [-1.0, 2.0, 6.0]  # 6.0 is 5.5 sds above mu: rejection alone cannot draw it
MU = 0.5


def _truncated(lower, mu):
    """Mean and sd of Normal(mu, 1) truncated below at ``lower``."""
    a = np.asarray(lower) - mu
    h = stats.norm.pdf(a) / stats.norm.sf(a)
    return mu + h, np.sqrt(1 + a * h - h * h)


def test_the_constraint_is_elementwise_and_the_density_untruncated():
    m = ppl.compile(CENSORED)
    assert "constraints.greater_than(U)" in m.source
    y = [0.3, 2.5, 6.1]
    want = stats.norm.logpdf(y, MU).sum()  # no truncation term, as in Stan
    assert m.log_density({"y_cens": y}, {"U": U, "mu": MU}) == pytest.approx(want, rel=1e-6)


def test_nuts_draws_keep_each_bound_and_give_the_truncated_mean():
    # the bound is 4 s.e. at each element's own ESS, so a short run keeps its meaning
    fit = ppl.compile(CENSORED).fit({"U": U, "mu": MU}, infer="nuts", samples=300,
                                    warmup=150, chains=1, seed=1)
    y = fit.samples["y_cens"]
    assert y.shape == (300, 3)
    assert bool((y >= torch.tensor(U, dtype=y.dtype)).all())
    mean, sd = _truncated(U, MU)  # 0.6388, 2.4387, 6.1714
    summary = fit.summary()
    for i in range(3):
        row = summary[f"y_cens[{i}]"]
        assert row["ess"] > 50, i
        assert abs(row["mean"] - mean[i]) < 4 * sd[i] / math.sqrt(row["ess"]), i


def test_prior_draws_are_the_truncated_normal_per_element():
    # rejection, then the inverse CDF for the elements it misses (U[2] far in the tail)
    n = 1000  # independent draws: 4 s.e. is 4 sd / sqrt(n)
    y = ppl.compile(CENSORED).sample_prior({"U": U, "mu": MU}, num_samples=n,
                                           seed=0)["y_cens"]
    assert bool((y > torch.tensor(U, dtype=y.dtype)).all())
    mean, sd = _truncated(U, MU)
    assert np.all(np.abs(y.mean(0).numpy() - mean) < 4 * sd / math.sqrt(n))


def test_svi_and_map_stay_inside_each_bound():
    m = ppl.compile(CENSORED)
    data = {"U": U, "mu": MU}
    y = m.fit(data, infer="svi", steps=300, samples=200, seed=1).samples["y_cens"]
    assert bool((y >= torch.tensor(U, dtype=y.dtype)).all())
    y = m.fit(data, infer="map", steps=1000, seed=1).samples["y_cens"][0]
    # the mode: mu where the bound is below it, the bound itself (approached) above it
    assert y[0].item() == pytest.approx(MU, abs=1e-2)
    assert 2.0 < y[1].item() < 2.2 and 6.0 < y[2].item() < 6.2


def test_in_plates_the_bound_is_read_per_element():
    m = ppl.compile("model C(U: real[J, K], mu: real) {\n  plate J {\n    plate K {\n"
                    "      z: real<lower=U>[J, K] ~ Normal(mu, 1)\n    }\n  }\n}\n")
    bound = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 9.0]])
    z = bound + 0.25
    want = stats.norm.logpdf(z.numpy(), MU).sum()
    assert m.log_density({"z": z}, {"U": bound, "mu": MU}) == pytest.approx(want, rel=1e-6)
    draws = m.sample_prior({"U": bound, "mu": MU}, num_samples=50, seed=0)["z"]
    assert draws.shape == (50, 2, 3)
    assert bool((draws > bound).all())


def test_a_param_takes_a_vector_bound():
    m = ppl.compile("model C(U: real[N], y: real[N]) {\n"
                    "  param m: real<upper=U>[N] = U - 1\n  y ~ Normal(m, 1)\n}\n")
    fit = m.fit({"U": [0.0, 5.0], "y": [3.0, 3.0]}, infer="map", steps=600, seed=0)
    got = fit.params["m"]
    # the maximum: y where it is below the bound, the bound (approached) where it is not
    assert -0.15 < got[0].item() < 0.0
    assert got[1].item() == pytest.approx(3.0, abs=1e-2)


def _error(src, data=None):
    with pytest.raises(ppl.BdlError) as err:
        m = ppl.compile(src)
        m.bind(data)
    return err.value.diagnostics


def test_data_violating_its_vector_bound_names_the_element():
    src = "model C(U: real[N], y: real<lower=U>[N]) {\n  y ~ Normal(0, 1)\n}\n"
    (d,) = _error(src, {"U": [0.0, 1.0, 2.0], "y": [0.5, 1.5, 1.9]})
    assert d.message == ("data 'y' must be >= U (declared lower=U) but element 2 is 1.9 and "
                         "U[2] is 2")
    assert (d.span.line, d.span.col) == (1, 21)
    ppl.compile(src).bind({"U": [0.0, 1.0, 2.0], "y": [0.0, 1.5, 2.9]})  # on the bound: ok
    # a bound of unit dims broadcasts: U[1, M] along the rows of y[N, M]
    src = "model C(U: real[1, M], y: real<upper=U>[N, M]) {\n  y ~ Normal(0, 1)\n}\n"
    (d,) = _error(src, {"U": [[0.0, 1.0]], "y": [[-1.0, 0.5], [-1.0, 2.0]]})
    assert d.message.startswith("data 'y' must be <= U (declared upper=U) but element 3 is 2")


def test_a_scalar_bound_named_by_data_is_checked_too():
    src = "model C(lo: real, y: real<lower=lo, upper=5>[N]) {\n  y ~ Normal(0, 1)\n}\n"
    (d,) = _error(src, {"lo": 1.0, "y": [1.5, 0.5]})
    assert d.message == ("data 'y' must be >= lo (declared lower=lo) but element 1 is 0.5 "
                         "and lo is 1")
    # int data against a real bound compares as reals (0 < 0.5), and a size names a bound
    src = "model C(U: real[N], k: int<lower=U>[N]) {\n  k ~ Poisson(3)\n}\n"
    (d,) = _error(src, {"U": [0.5, 1.0], "k": [0, 2]})
    assert d.message == ("data 'k' must be >= U (declared lower=U) but element 0 is 0 and "
                         "U[0] is 0.5")
    src = ("model C(K: int, y: real[K], k: int<upper=K>[N]) {\n  k ~ Poisson(3)\n"
           "  y ~ Normal(0, 1)\n}\n")
    (d,) = _error(src, {"y": [0.5, 1.0], "k": [0, 3]})
    assert d.message == "data 'k' must be <= K (declared upper=K) but element 1 is 3 and K is 2"


def test_shape_mismatch_refused():
    (d,) = _error("model C(U: real[3]) {\n  z: real<lower=U>[4] ~ Normal(0, 1)\n}\n")
    assert d.message == "bound 'lower' [3] does not fit the declared shape [4]: 3 vs 4"
    assert (d.span.line, d.span.col) == (2, 17)
    (d,) = _error("model C(U: real[N, 2]) {\n  z: real<upper=U>[N] ~ Normal(0, 1)\n}\n")
    assert d.message == "bound 'upper' [N, 2] has more dimensions than the declared shape [N]"
    # sizes known only from the data: checked when they bind, naming both shapes
    (d,) = _error("model C(U: real[M], y: real<lower=U>[N]) {\n  y ~ Normal(0, 1)\n}\n",
                  {"U": [0.0, 1.0], "y": [0.5, 1.5, 1.9]})
    assert d.message == ("size mismatch between bound 'lower' [M] and the declared shape [N]: "
                         "M = 2 but N = 3 (sizes from the data)")
    assert (d.span.line, d.span.col) == (1, 35)


def test_a_random_vector_bound_maps_with_the_current_bound():
    # a latent's bound that reads a latent is Stan's: mapped with its current value
    # (rt.sample_in_support, tests/test_dependent_support.py); a param's is still refused
    m = ppl.compile("model C(U: real[N]) {\n  mu ~ Normal(0, 1)\n"
                    "  z: real<lower=(mu + U)>[N] ~ Normal(mu, 1)\n}\n")
    assert "z = rt.sample_in_support(" in m.source
    U = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64)
    d = m.sample_prior({"U": U.tolist()}, num_samples=200, seed=0)
    assert d["z"].shape == (200, 3) and bool((d["z"] > d["mu"][:, None] + U).all())
    (d,) = _error("model C() {\n  mu ~ Normal(0, 1)\n  param p: real<lower=mu> = 1.0\n}\n")
    assert d.message.startswith("bound 'lower' must not depend on random quantities")


@pytest.mark.parametrize("U", [8.0, 10.0, 30.0, -8.5])
def test_prior_draws_far_in_a_normal_tail_are_exact(U):
    # torch's Normal.icdf (erfinv of 2p - 1) collapsed every draw to one point from about
    # 7.5 scales out (and ndtr rounds Phi(-10) to 0): the tail is now drawn as a mirror
    # image with log_ndtr / ndtri; compared with scipy's truncnorm by a KS test
    from torch.distributions import constraints as C

    from ppl.runtime.shapes import Restricted

    torch.manual_seed(0)
    c = C.greater_than(torch.tensor([U])) if U > 0 else C.less_than(torch.tensor([U]))
    x = Restricted(torch.distributions.Normal(torch.zeros(1), 1.0), c).sample((4000,))
    x = x[:, 0].double().numpy()
    law = stats.truncnorm(U, np.inf) if U > 0 else stats.truncnorm(-np.inf, U)
    assert len(np.unique(x)) > 3500
    assert stats.kstest(x, law.cdf).pvalue > 1e-3


@pytest.mark.parametrize("decl, mean", [("real<lower=-1> ~ Exponential(1)", 1.0),
                                        ("real<lower=-1, upper=3> ~ Beta(2, 2)", 0.5)])
def test_a_bound_looser_than_the_prior_s_support_keeps_the_prior(decl, mean):
    # s: real<lower=-1> ~ Exponential(1): the sampler mapped onto (-1, inf) and torch's
    # unvalidated density was finite below 0 (NUTS: mean 0.025, 62% of draws negative);
    # the declared set is narrowed to the prior's support
    from pyro.ops.stats import effective_sample_size

    m = ppl.compile(f"model E() {{\n  s: {decl}\n}}\n", "e.bdl")
    # 4 s.e. at the run's own ESS; the old bug put 62% of the draws below 0
    x = m.fit({}, infer="nuts", warmup=150, samples=300, chains=1, seed=0).samples["s"]
    sd = float(x.std())
    ess = float(effective_sample_size(x.reshape(1, -1)))
    assert ess > 50
    assert float(x.min()) >= 0.0
    assert abs(float(x.mean()) - mean) < 4 * sd / math.sqrt(ess)


def test_a_bound_per_element_of_a_subsampled_plate_is_refused():
    # the autoguide's transform kept the first minibatch's bounds (biject_to built once):
    # later rows were fitted against other rows' bounds
    with pytest.raises(ppl.BdlError, match=r"bound 'lower' \[N\] varies along plate i, which "
                       r"is subsampled \(batch\): a bound per element needs the whole plate"):
        ppl.compile("model C(U: real[N], mu: real) {\n  plate i in N batch 2 {\n"
                    "    z: real<lower=U>[N] ~ Normal(mu, 1)\n  }\n}\n", "c.bdl")
    ppl.compile("model C(U: real[N], mu: real) {\n  plate i in N batch 2 {\n"
                "    z: real<lower=0>[N] ~ Normal(mu, 1)\n  }\n}\n", "c.bdl")


def test_a_bound_of_fewer_dims_than_the_value_is_refused():
    # U: real[N] on z: real[N, K] lined up with K (per column), silently when N = K
    with pytest.raises(ppl.BdlError, match=r"bound 'lower' \[N\] has fewer dimensions than "
                       r"the declared shape \[N, K\]"):
        ppl.compile("model C(U: real[N], K: int) {\n  z: real<lower=U>[N, K] ~ Normal(0, 1)\n}\n",
                    "c.bdl")
