"""Truncated distributions (Stan's ``T[L, U]``): ``Truncated(D, low=L, high=H)``.

The densities are checked against scipy (far tails included), fits against posteriors
computed on a grid, draws against the truncated distribution's exact moments, and the
refusals by their exact located text."""
# ruff: noqa: E501  (the expected text keeps the long lines the user sees)

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy import stats
from test_devices import trace_tensors
from test_diagnostics_checker import _check_errors

import ppl
from ppl.check import signatures
from ppl.infer.run import torch_defaults
from ppl.runtime import Truncated


def _t(x):
    return torch.tensor(x, dtype=torch.float64)


# ---- the density -------------------------------------------------------------------

@pytest.mark.parametrize("mu, s, low, high, x", [
    (0.0, 1.0, 0.0, None, 0.3),
    (1.0, 2.0, -1.0, 3.0, 2.5),
    (0.0, 1.0, 8.0, None, 8.2),     # 8 scales out: 1 - F(8) = 6e-16 rounds to 0 in F
    (0.0, 1.0, 8.0, 9.0, 8.5),      # an interval far above the mean: upper tails subtracted
    (0.0, 1.0, None, -8.0, -8.4),   # far below
    (-2.0, 0.5, -3.0, -2.5, -2.7),
    (3.0, 1.0, -40.0, -38.0, -39.0),  # 42 scales below the mean
])
def test_normal_log_prob_is_scipys_truncnorm(mu, s, low, high, x):
    with torch_defaults("cpu", "float64"):
        d = Truncated(dist.Normal(_t(mu), _t(s)), low=low, high=high)
        got = float(d.log_prob(_t(x)))
    a = -math.inf if low is None else (low - mu) / s
    b = math.inf if high is None else (high - mu) / s
    want = float(stats.truncnorm.logpdf(x, a, b, loc=mu, scale=s))
    assert math.isfinite(got)
    assert got == pytest.approx(want, rel=1e-6, abs=1e-9)


def test_outside_the_interval_is_minus_inf_and_validated_data_is_refused():
    with torch_defaults("cpu", "float64"):
        d = Truncated(dist.Normal(_t(0.0), _t(1.0)), low=-1.0, high=1.0, validate_args=False)
        lp = d.log_prob(_t([-1.5, 0.0, 1.5]))
        assert torch.isinf(lp[0]) and torch.isinf(lp[2]) and lp[0] < 0
        assert float(lp[1]) == pytest.approx(stats.truncnorm.logpdf(0.0, -1, 1))
        with pytest.raises(ValueError, match="within the support"):
            Truncated(dist.Normal(_t(0.0), _t(1.0)), low=0.0).log_prob(_t(-0.5))


def test_the_gradient_in_a_far_tail_is_the_inverse_mills_ratio():
    # d/dmu log p(x | mu, low=8) at mu = 0 is x - phi(8) / (1 - Phi(8))
    with torch_defaults("cpu", "float64"):
        mu = _t(0.0).requires_grad_()
        Truncated(dist.Normal(mu, 1.0), low=8.0).log_prob(_t(8.5)).backward()
    mills = math.exp(stats.norm.logpdf(8.0) - stats.norm.logsf(8.0))
    assert float(mu.grad) == pytest.approx(8.5 - mills, rel=1e-9)


@pytest.mark.parametrize("base, frozen, low, high, x", [
    (lambda: dist.Gamma(_t(2.0), _t(1.0)), stats.gamma(2.0), 1.0, 4.0, 2.0),
    (lambda: dist.LogNormal(_t(0.0), _t(1.0)), stats.lognorm(1.0), 0.5, None, 0.7),
    (lambda: dist.Exponential(_t(2.0)), stats.expon(scale=0.5), None, 1.0, 0.7),
    (lambda: dist.Cauchy(_t(0.0), _t(1.0)), stats.cauchy(), -1.0, 2.0, 1.5),
])
def test_other_continuous_bases_renormalise_by_their_cdf(base, frozen, low, high, x):
    with torch_defaults("cpu", "float64"):
        got = float(Truncated(base(), low=low, high=high).log_prob(_t(x)))
    lo = frozen.cdf(low) if low is not None else 0.0
    hi = frozen.cdf(high) if high is not None else 1.0
    assert got == pytest.approx(frozen.logpdf(x) - math.log(hi - lo), rel=1e-10)


@pytest.mark.parametrize("low, high", [(2, None), (None, 4), (2, 6), (1.5, 6.5)])
def test_poisson_renormalises_by_its_summed_pmf(low, high):
    lo = 0 if low is None else math.ceil(low)
    hi = math.inf if high is None else math.floor(high)
    ks = np.arange(lo, 12)
    ks = ks[ks <= hi]
    with torch_defaults("cpu", "float64"):
        got = Truncated(dist.Poisson(_t(3.0)), low=low, high=high).log_prob(_t(ks)).numpy()
    z = stats.poisson.cdf(hi, 3.0) - stats.poisson.cdf(lo - 1, 3.0)
    np.testing.assert_allclose(got, stats.poisson.logpmf(ks, 3.0) - math.log(z), rtol=1e-12)


# ---- draws --------------------------------------------------------------------------

PREDICT = """\
model P(a: real[M]?, b: real[M]?, c: int[M]?, d: real[M]?) {
  a ~ Truncated(Normal(1, 2), low=0, high=3)
  b ~ Truncated(Gamma(2, 1), low=1, high=4)
  c ~ Truncated(Poisson(3), low=2, high=6)
  d ~ Truncated(Normal(0, 1), low=3)
}
"""


def test_predictive_draws_lie_inside_and_have_the_exact_means():
    n = 4000  # 4 runs of the model, 1000 draws each
    draws = ppl.compile(PREDICT, "p.bdl").sample_prior({"M": 1000}, num_samples=4, seed=0)
    exact = {
        "a": stats.truncnorm(-0.5, 1.0, loc=1.0, scale=2.0),  # inverse CDF
        "d": stats.truncnorm(3.0, math.inf),  # a tail: inverse CDF of log_ndtr
    }
    gamma = stats.gamma(2.0)  # drawn by bisection of its log tail
    b_mean = gamma.expect(lambda t: t, lb=1.0, ub=4.0, conditional=True)
    b_var = gamma.expect(lambda t: (t - b_mean) ** 2, lb=1.0, ub=4.0, conditional=True)
    ks = np.arange(2, 7)
    p = stats.poisson.pmf(ks, 3.0) / stats.poisson.pmf(ks, 3.0).sum()
    c_mean, c_var = (p * ks).sum(), (p * ks**2).sum() - (p * ks).sum() ** 2
    moments = {"a": (exact["a"].mean(), exact["a"].var()), "b": (b_mean, b_var),
               "c": (c_mean, c_var), "d": (exact["d"].mean(), exact["d"].var())}
    bounds = {"a": (0, 3), "b": (1, 4), "c": (2, 6), "d": (3, math.inf)}
    for name, (mean, var) in moments.items():
        x = draws[name].reshape(-1).double()
        lo, hi = bounds[name]
        assert bool(((x >= lo) & (x <= hi)).all()), name
        assert abs(float(x.mean()) - mean) < 4 * math.sqrt(var / n), name
    assert bool((draws["c"] % 1 == 0).all())


def _nuts(source, data, **opts):
    return ppl.compile(source, "m.bdl").fit(data, infer="nuts", chains=1, seed=0, **opts)


def _ess(x):
    """One chain's effective sample size (> 50, else its standard error is not trusted)."""
    from pyro.ops.stats import effective_sample_size

    ess = float(effective_sample_size(x.reshape(1, -1)))
    assert ess > 50, ess
    return ess


def test_a_truncated_latent_has_the_exact_mean_and_sd():
    fit = _nuts("model Z() {\n  z ~ Truncated(Normal(1, 1), low=0, high=2)\n}\n", {},
                samples=400, warmup=150)
    z = fit.samples["z"].double()
    exact = stats.truncnorm(-1.0, 1.0, loc=1.0)
    assert bool(((z > 0) & (z < 2)).all())
    # 4 Monte Carlo standard errors at the run's own effective sample size
    assert abs(float(z.mean()) - exact.mean()) < 4 * exact.std() / math.sqrt(_ess(z))
    assert abs(float(z.std()) - exact.std()) < 0.1


def test_nuts_recovers_mu_from_truncated_data_where_the_naive_model_is_biased():
    rng = np.random.default_rng(3)
    y = stats.truncnorm.rvs(-0.5, math.inf, loc=0.5, size=60, random_state=rng)
    source = ("model T(y: real[N]) {\n  mu ~ Normal(0, 3)\n"
              "  y ~ Truncated(Normal(mu, 1), low=0)\n}\n")
    mu = _nuts(source, {"y": y.tolist()}, samples=400, warmup=150).samples["mu"].double()
    # the exact posterior on a grid
    grid = np.linspace(-6.0, 6.0, 24001)
    # log N(y | m, 1) - log P(Y > 0 | m) summed over y, per grid point m
    logp = (stats.norm.logpdf(grid, 0, 3)
            + stats.norm.logpdf(y[None, :] - grid[:, None]).sum(1)
            - len(y) * stats.norm.logsf(-grid))
    w = np.exp(logp - logp.max())
    w /= w.sum()
    mean = (w * grid).sum()
    sd = math.sqrt((w * (grid - mean) ** 2).sum())
    tol = 4 * sd / math.sqrt(_ess(mu))  # 4 standard errors at the run's own ESS
    assert abs(float(mu.mean()) - mean) < tol
    # the untruncated model's posterior mean (conjugate): far from the truncated one
    naive = y.sum() / (len(y) + 1 / 9)
    assert abs(naive - float(mu.mean())) > 5 * tol


# ---- refusals -----------------------------------------------------------------------

@pytest.mark.parametrize("line, expected", [
    ("a ~ Truncated(Gamma(2, 1), low=1)",
     """\
model.bdl:2:7: error: 'a' is a latent, and a truncated Gamma cannot be drawn: Pyro gives Gamma no inverse CDF
    a ~ Truncated(Gamma(2, 1), low=1)
        ^~~~~~~~~~~~~~~~~~~~~~~~~~~~~
  note: truncate Gamma only where it is observed (data), or draw the latent from a base with one: Cauchy, Exponential, GeneralizedPareto, Gumbel, HalfCauchy, HalfNormal, Kumaraswamy, Laplace, LogNormal, Logistic, Normal, Pareto, SoftLaplace, Uniform, Weibull"""),
    ("b ~ Truncated(3.0, low=0)",
     """\
model.bdl:2:17: error: argument 'base_dist' of Truncated must be a distribution
    b ~ Truncated(3.0, low=0)
                  ^~~"""),
    ("d ~ Truncated(Normal(0, 1), low=2, high=1)",
     """\
model.bdl:2:43: error: high of Truncated must be > low (2), got 1
    d ~ Truncated(Normal(0, 1), low=2, high=1)
                                            ^
  note: Truncated(D, low=L, high=H) keeps the values of D from L to H"""),
    ("e ~ Truncated(Normal(0, 1))",
     """\
model.bdl:2:7: error: Truncated needs a bound: low=, high= or both
    e ~ Truncated(Normal(0, 1))
        ^~~~~~~~~~~~~~~~~~~~~~~
  note: Stan's normal(mu, s) T[0, ] is Truncated(Normal(mu, s), low=0)"""),
    ("f ~ Truncated(Normal(0, 1), 0)",
     """\
model.bdl:2:31: error: Truncated takes at most 1 positional argument (base_dist), got 2
    f ~ Truncated(Normal(0, 1), 0)
                                ^
  note: give low, high by name: Truncated(base_dist, low=...)"""),
    ("y ~ Truncated(StudentT(3, 0, 1), low=0)",
     """\
model.bdl:2:17: error: Truncated needs the cdf of its distribution, and Pyro gives StudentT none
    y ~ Truncated(StudentT(3, 0, 1), low=0)
                  ^~~~~~~~~~~~~~~~~
  note: continuous: Cauchy, Chi2, Exponential, Gamma, GeneralizedPareto, Gumbel, HalfCauchy, HalfNormal, InverseGamma, Kumaraswamy, Laplace, LogNormal, Logistic, Normal, Pareto, SoftLaplace, Uniform, Weibull
  note: discrete: BetaBinomial, Binomial, GammaPoisson, Geometric, NegativeBinomial, Poisson"""),
    # the declared set and the truncation interval do not meet (was 'could not draw a
    # sample inside Interval(lower_bound=1.0, upper_bound=0.0) by rejection' at the fit)
    ("x: real<lower=1> ~ Truncated(Normal(0, 1), high=0)",
     """\
model.bdl:2:51: error: the declared bound lower=1 of 'x' and Truncated's high=0 leave it no value: no number is > 1 and <= 0
    x: real<lower=1> ~ Truncated(Normal(0, 1), high=0)
                                                    ^
  note: Truncated's interval is the support of 'x' already: drop the declared bound, or give bounds that overlap"""),
    ("x: real<lower=-1, upper=0.5> ~ Truncated(Normal(0, 1), low=0.5)",
     """\
model.bdl:2:62: error: the declared bound upper=0.5 of 'x' and Truncated's low=0.5 leave it no value: no number is < 0.5 and >= 0.5
    x: real<lower=-1, upper=0.5> ~ Truncated(Normal(0, 1), low=0.5)
                                                               ^~~
  note: Truncated's interval is the support of 'x' already: drop the declared bound, or give bounds that overlap"""),
])
def test_refusals_are_located(line, expected):
    assert _check_errors(f"model M(y: real[N]) {{\n  {line}\n}}\n") == expected


def test_gamma_truncated_data_and_declared_bounds_check():
    front_ok = ("model M(y: real[N]) {\n  r ~ Exponential(1)\n"
                "  y ~ Truncated(Gamma(2, r), low=1)\n"
                "  z: real<lower=0> ~ Truncated(Normal(0, 1), low=0)\n}\n")
    ppl.compile(front_ok, "model.bdl")  # no error


@pytest.mark.parametrize("args, line, data, expected", [
    # data outside the interval: a data error at the statement
    ("y: real[N]", "y ~ Truncated(Normal(mu, 1), low=0)", '{"y": [0.5, -1.25, 2.0]}',
     "m.bdl:3:3: error: 'y' element 1 is -1.25; Truncated is over numbers >= 0"),
    # an empty interval in the data
    ("y: real[N], L: real[N], H: real[N]", "y ~ Truncated(Normal(mu, 1), low=L, high=H)",
     '{"y": [1.0, 0.5], "L": [1.0, 0.0], "H": [1.0, 2.0]}',
     "m.bdl:3:3: error: Truncated Normal keeps no value at element 0: [1, 1] (the bounds) is "
     "a single point, which has no mass"),
    # a declared set that the data's interval does not meet (was 'could not draw a sample
    # inside Interval(lower_bound=1.0, upper_bound=0.0) by rejection')
    ("H: real[N]", "x: real<lower=1>[N] ~ Truncated(Normal(mu, 1), high=H)",
     '{"H": [2.0, 0.5, 3.0]}',
     "m.bdl:3:3: error: the declared set of this latent at element 1, numbers > 1, and "
     "Truncated Normal's support, numbers < 0.5, have no value in common: declare bounds "
     "that meet the support, or change the distribution's"),
])
def test_the_run_stops_at_the_statement_for_values_the_data_give(tmp_path, bdl_here, args,
                                                                 line, data, expected):
    path = tmp_path / "m.bdl"
    path.write_text(f"model M({args}) {{\n  mu ~ Normal(0, 1)\n  {line}\n}}\n"
                    "infer svi(steps=2)\n")
    (tmp_path / "m.data.json").write_text(data)
    r = bdl_here("run", str(path))
    assert r.returncode == 1, r.stderr
    assert expected in r.stderr


def test_the_generated_source_reads_as_pyro():
    src = ppl.compile("model M(y: real[N]) {\n  mu ~ Normal(0, 1)\n"
                      "  y ~ Truncated(Normal(mu, 1), low=0, high=5)\n}\n", "m.bdl").source
    assert "rt.Truncated(dist.Normal(mu, 1), low=0, high=5)" in src


# ---- the checker's tables against Pyro -----------------------------------------------

_EXAMPLES = {
    "Cauchy": (0.0, 1.0), "Chi2": (3.0,), "Exponential": (1.0,), "Gamma": (2.0, 1.0),
    "GeneralizedPareto": (0.0, 1.0, 0.2), "Gumbel": (0.0, 1.0), "HalfCauchy": (1.0,),
    "HalfNormal": (1.0,), "InverseGamma": (2.0, 1.0), "Kumaraswamy": (2.0, 3.0),
    "Laplace": (0.0, 1.0), "LogNormal": (0.0, 1.0), "Logistic": (0.0, 1.0),
    "Normal": (0.0, 1.0), "Pareto": (1.0, 2.0), "SoftLaplace": (0.0, 1.0),
    "Uniform": (0.0, 2.0), "Weibull": (1.0, 2.0),
}


@pytest.mark.parametrize("name", sorted(signatures.TRUNCATE_CDF))
def test_the_closed_form_inverse_tails_are_the_ones_listed(name):
    # rsample picks the closed-form inverse by _INVERTIBLE without calling it: the list
    # and _inverse_tail's branches must name the same bases
    from ppl.runtime.truncated import _INVERTIBLE, _inverse_tail

    with torch_defaults("cpu", "float64"):
        base = getattr(dist, name)(*map(_t, _EXAMPLES[name]))
        inverts = _inverse_tail(base, _t(-1.0), True) is not None
    assert inverts == isinstance(base, _INVERTIBLE)


@pytest.mark.parametrize("name", sorted(signatures.TRUNCATE_CDF))
def test_the_tables_say_which_bases_pyro_gives_a_cdf_and_an_icdf(name):
    pyro.set_rng_seed(0)
    with torch_defaults("cpu", "float64"):
        base = getattr(dist, name)(*map(_t, _EXAMPLES[name]))
        if name in signatures.TRUNCATE_ICDF:
            lo, hi = base.icdf(_t(0.25)), base.icdf(_t(0.75))
        else:
            lo, hi = base.mean * 0.5, base.mean * 1.5
        # the table's absent icdf is Pyro's too
        if name not in signatures.TRUNCATE_ICDF:
            with pytest.raises(NotImplementedError):
                base.icdf(_t(0.5))
        d = Truncated(base, low=lo, high=hi)
        assert d.has_rsample == (name in signatures.TRUNCATE_ICDF)
        x = d.sample((200,))
        assert bool(((x >= lo) & (x <= hi)).all())
        assert math.isfinite(float(d.log_prob(x).sum()))


# ---- devices ------------------------------------------------------------------------

def test_truncated_sites_live_on_the_device(device):
    m = ppl.compile("model D(y: real[N]) {\n  mu ~ Normal(0, 1)\n"
                    "  z ~ Truncated(Normal(1, 1), low=0, high=2)\n"
                    "  y ~ Truncated(Normal(mu + z, 1), low=0)\n}\n", "d.bdl")
    data = {"y": [0.5, 1.5, 2.5]}
    fit = m.fit(data, infer="svi", steps=5, samples=20, device=device, seed=0)
    assert all(v.device.type == device for v in fit.samples.values())
    assert bool(((fit.samples["z"] >= 0) & (fit.samples["z"] <= 2)).all())
    with torch_defaults(device, "float32"):
        tr = pyro.poutine.trace(m.pyro_model).get_trace(**m.bind(data))
    assert [(n, str(v.device)) for n, v in trace_tensors(tr) if v.device.type != device] == []
    assert math.isfinite(float(tr.log_prob_sum()))
    draws = ppl.compile(PREDICT, "p.bdl").sample_prior({"M": 2}, num_samples=50, seed=0,
                                                        device=device)
    assert all(v.device.type == device for v in draws.values())


# ---- far tails, huge bounds and exact draws (review of stop 25) -----------------------

def _poisson_log_sf(lo, lam):
    """log P(X >= lo) for X ~ Poisson(lam), summed in log space (scipy's logsf is inf or
    -inf from about 1e-300 down)."""
    from scipy.special import logsumexp
    return logsumexp(stats.poisson.logpmf(np.arange(lo, lo + 2000), lam))


@pytest.mark.parametrize("low", [30, 100, 250, 400])   # P(X >= 400) = 1e-700
def test_poisson_with_only_a_lower_bound_keeps_its_far_tail(low):
    with torch_defaults("cpu", "float64"):
        lam = _t(3.0).requires_grad_()
        lp = Truncated(dist.Poisson(lam), low=low).log_prob(_t(low + 1.0))
        lp.backward()
    lp = lp.detach()
    want = stats.poisson.logpmf(low + 1, 3.0) - _poisson_log_sf(low, 3.0)
    assert float(lp) == pytest.approx(want, rel=1e-10)
    # d/dlam: (k / lam - 1) - d/dlam log P(X >= L), by a central difference of the sums
    h = 1e-5
    dz = (_poisson_log_sf(low, 3.0 + h) - _poisson_log_sf(low, 3.0 - h)) / (2 * h)
    assert float(lam.grad) == pytest.approx((low + 1) / 3.0 - 1 - dz, rel=1e-6)


def test_poisson_far_below_its_mean_and_huge_or_infinite_upper_bounds():
    with torch_defaults("cpu", "float64"):
        below = float(Truncated(dist.Poisson(_t(1000.0)), high=100).log_prob(_t(90.0)))
        unbounded = Truncated(dist.Poisson(_t(3.0)), low=2).log_prob(_t([2.0, 4.0, 9.0]))
        for high in (1e300, math.inf, [1e9, math.inf, 1e300]):
            d = Truncated(dist.Poisson(_t(3.0)), low=2, high=high)
            assert torch.equal(d.log_prob(_t([2.0, 4.0, 9.0])), unbounded)
    assert below == pytest.approx(stats.poisson.logpmf(90, 1000) -
                                  stats.poisson.logcdf(100, 1000), rel=1e-10)


@pytest.mark.parametrize("base, frozen", [
    (lambda: dist.Binomial(_t(10.0), _t(0.4)), stats.binom(10, 0.4)),
    (lambda: dist.NegativeBinomial(_t(3.0), _t(0.4)), stats.nbinom(3, 0.6)),
    (lambda: dist.Geometric(_t(0.3)), stats.geom(0.3, loc=-1)),
])
@pytest.mark.parametrize("low, high", [(3, 1e300), (3, math.inf), (3, 1e9), (None, 5)])
def test_discrete_bases_take_huge_upper_bounds_without_a_grid_to_them(base, frozen, low, high):
    with torch_defaults("cpu", "float64"):
        got = float(Truncated(base(), low=low, high=high).log_prob(_t(4.0)))
    lo = -1 if low is None else low - 1
    z = frozen.cdf(min(high, 1e6)) - frozen.cdf(lo)
    assert got == pytest.approx(frozen.logpmf(4) - math.log(z), rel=1e-12)


def test_truncated_poisson_data_with_only_a_lower_bound_has_the_exact_posterior():
    # d1 of the review: was a raw torch error (log 0 in the normaliser) at the first step
    y = np.array([31, 35, 40, 30, 33])
    source = ("model P(y: int[N]) {\n  lam ~ Exponential(0.05)\n"
              "  y ~ Truncated(Poisson(lam), low=30)\n}\n")
    lam = _nuts(source, {"y": y.tolist()}, samples=300, warmup=150).samples["lam"].double()
    grid = np.linspace(0.01, 80.0, 40000)
    logp = (stats.expon.logpdf(grid, scale=20.0)
            + stats.poisson.logpmf(y[None, :], grid[:, None]).sum(1)
            - len(y) * np.log(stats.poisson.sf(29, grid)))
    w = np.exp(logp - logp.max())
    w /= w.sum()
    mean = (w * grid).sum()
    sd = math.sqrt((w * (grid - mean) ** 2).sum())
    assert mean == pytest.approx(28.2, abs=0.05)
    assert abs(float(lam.mean()) - mean) < 4 * sd / math.sqrt(_ess(lam))  # 4 s.e.


@pytest.mark.parametrize("base, log_pdf, log_sf", [
    (lambda: dist.Laplace(_t(0.0), _t(1.0)), lambda x: -math.log(2.0) - x,
     lambda x: -math.log(2.0) - x),
    (lambda: dist.Gumbel(_t(0.0), _t(1.0)), lambda x: -x - math.exp(-x),
     lambda x: -x - math.exp(-x) / 2),  # log(1 - exp(-e^-x)), e^-x below 1e-17
    (lambda: dist.Weibull(_t(1.0), _t(2.0)), lambda x: math.log(2 * x) - x * x,
     lambda x: -x * x),
    (lambda: dist.Logistic(_t(0.0), _t(1.0)), lambda x: -x - 2 * math.log1p(math.exp(-x)),
     lambda x: -x - math.log1p(math.exp(-x))),
    (lambda: dist.Cauchy(_t(0.0), _t(1.0)), lambda x: -math.log(math.pi * (1 + x * x)),
     lambda x: math.log(math.atan(1 / x) / math.pi)),
    (lambda: dist.Exponential(_t(1.0)), lambda x: -x, lambda x: -x),
    # log S = log(2/pi atan(e^-x)) = log(2/pi) - x - e^-2x / 3 + ... (log(cdf): -inf at 40)
    (lambda: dist.SoftLaplace(_t(0.0), _t(1.0)),
     lambda x: math.log(2 / math.pi) - x - math.log1p(math.exp(-2 * x)),
     lambda x: math.log(2 / math.pi) - x + math.log1p(-math.exp(-2 * x) / 3)),
    # S = (1 + x / 5)^-5: 9e-12 at 800, where log(cdf) kept 5 digits
    (lambda: dist.GeneralizedPareto(_t(0.0), _t(1.0), _t(0.2)),
     lambda x: -6 * math.log1p(0.2 * x), lambda x: -5 * math.log1p(0.2 * x)),
])
@pytest.mark.parametrize("low", [40.0, 800.0])
def test_far_upper_tails_of_other_bases_are_exact(base, log_pdf, log_sf, low):
    x = low + 0.5
    with torch_defaults("cpu", "float64"):
        d = Truncated(base(), low=low)
        got = float(d.log_prob(_t(x)))
        both = float(Truncated(base(), low=low, high=low + 1.0).log_prob(_t(x)))
        draws = d.sample((4000,))
    assert got == pytest.approx(log_pdf(x) - log_sf(low), rel=1e-9)
    assert math.isfinite(both) and both >= got
    assert bool((draws > low).all()) and bool(torch.isfinite(draws).all())
    assert len(set(draws.tolist())) == 4000  # not collapsed onto the bound


def test_gamma_far_tail_against_mpmath():
    import mpmath
    for a, low in [(2.0, 40.0), (2.0, 800.0), (3.5, 900.0)]:
        with torch_defaults("cpu", "float64"):
            got = float(Truncated(dist.Gamma(_t(a), _t(1.0)), low=low).log_prob(_t(low + 1)))
        # log pdf(x) - log S(low) = (a - 1) log x - x - log Gamma(a, low) (upper, unscaled)
        x = mpmath.mpf(low + 1)
        want = float((a - 1) * mpmath.log(x) - x - mpmath.log(mpmath.gammainc(a, low)))
        assert got == pytest.approx(want, rel=1e-9), (a, low)


def test_draws_by_bisection_and_inverse_cdf_have_the_exact_means():
    pyro.set_rng_seed(1)
    n = 5000  # independent draws: the bound below is 4 sd / sqrt(n)
    with torch_defaults("cpu", "float64"):
        cases = [
            # q4 of the review: 0.19% of the mass in [1, 4], rejection gave up
            (Truncated(dist.Gamma(_t(2.0), _t(6.0)), low=1.0, high=4.0),
             stats.gamma(2.0, scale=1 / 6.0), 1.0, 4.0),
            (Truncated(dist.Gamma(_t(2.0), _t(1.0)), low=30.0), stats.gamma(2.0), 30.0, math.inf),
            (Truncated(dist.InverseGamma(_t(3.0), _t(1.0)), low=0.01, high=0.1),
             stats.invgamma(3.0), 0.01, 0.1),
            (Truncated(dist.Weibull(_t(1.0), _t(2.0)), low=2.0), stats.weibull_min(2.0), 2.0,
             math.inf),
        ]
        draws = [d.sample((n,)) for d, *_ in cases]
    for x, (_, frozen, lo, hi) in zip(draws, cases, strict=True):
        mean = frozen.expect(lambda v: v, lb=lo, ub=hi, conditional=True)
        second = frozen.expect(lambda v: v * v, lb=lo, ub=hi, conditional=True)
        sd = math.sqrt(second - mean * mean)
        assert bool(((x >= lo) & (x <= hi)).all())
        assert abs(float(x.mean()) - mean) < 4 * sd / math.sqrt(n), frozen.dist.name


def test_discrete_draws_start_at_the_lower_bound():
    pyro.set_rng_seed(2)
    n = 20000
    with torch_defaults("cpu", "float64"):
        # zero-truncated Poisson with a tiny rate (pr.bdl at x = -3): was 'could not draw'
        tiny = Truncated(dist.Poisson(_t(1e-4)), low=1).sample((n,))
        zt = Truncated(dist.Poisson(_t(0.5)), low=1).sample((n,))
        far = Truncated(dist.Poisson(_t(3.0)), low=30).sample((n,))
        geo = Truncated(dist.Geometric(_t(0.3)), low=5, high=9).sample((n,))
    assert float(tiny.min()) == 1.0 and float(tiny.mean()) == pytest.approx(1.0, abs=1e-3)
    exact = 0.5 / (1 - math.exp(-0.5))
    assert abs(float(zt.mean()) - exact) < 4 * math.sqrt(0.6 / n)
    ks = np.arange(30, 200)
    p = np.exp(stats.poisson.logpmf(ks, 3.0) - _poisson_log_sf(30, 3.0))
    assert abs(float(far.mean()) - (p * ks).sum()) < 4 * math.sqrt(1.2 / n)
    ks = np.arange(5, 10)
    p = stats.geom.pmf(ks + 1, 0.3) / stats.geom.pmf(ks + 1, 0.3).sum()
    assert abs(float(geo.mean()) - (p * ks).sum()) < 4 * math.sqrt(2.0 / n)


def test_expand_keeps_number_bounds_so_a_batch_plate_fits():
    with torch_defaults("cpu", "float64"):
        d = Truncated(dist.Normal(_t(0.0), _t(1.0)), low=0.0).expand((3,))
        assert d.batch_shape == (3,) and d.low.shape == ()
        y = torch.distributions.biject_to(d.support)(_t([-1.0, 0.0, 1.0, 2.0, 3.0]))
        assert bool((y > 0).all())
    source = ("model P(y: real[N]) {\n  mu ~ Normal(0, 3)\n  plate n in N batch 2 {\n"
              "    z ~ Truncated(Normal(mu, 1), low=0)\n    y ~ Normal(z, 0.5)\n  }\n}\n")
    m = ppl.compile(source, "b1.bdl")
    for guide in ("normal", "delta"):  # b1 of the review: both stopped with a size error
        fit = m.fit({"y": [0.5, 1.2, 0.1, 2.3]}, infer=f"svi(guide={guide}, steps=30)",
                    seed=0, samples=20)
        assert fit.samples["z"].shape[-1] == 4 and bool((fit.samples["z"] >= 0).all())


def test_a_per_element_bound_of_a_latent_in_a_batch_plate_is_refused():
    assert _check_errors(
        "model P(y: real[N], L: real[N]) {\n  plate n in N batch 2 {\n"
        "    z ~ Truncated(Normal(0, 1), low=L[n])\n    y ~ Normal(z, 0.5)\n  }\n}\n") == """\
model.bdl:3:37: error: bound low of 'z' varies along plate n, which is subsampled (batch): a bound per element needs the whole plate
      z ~ Truncated(Normal(0, 1), low=L[n])
                                      ^~~~
  note: drop `batch` from plate n, or use one bound for every element"""


# ---- messages and degenerate intervals -------------------------------------------------

@pytest.mark.parametrize("line, expected", [
    ("y ~ Truncated(Truncated(Normal(0, 1), low=0), high=3)", """\
model.bdl:2:17: error: Truncated takes the distribution to truncate, not another Truncated
    y ~ Truncated(Truncated(Normal(0, 1), low=0), high=3)
                  ^~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
  note: give both bounds to one: Truncated(D, low=L, high=H)"""),
    ("y ~ Truncated(MixtureSameFamily(Categorical(ones(2) / 2), Normal(zeros(2), ones(2))), low=0)", """\
model.bdl:2:17: error: Truncated does not take a mixture: it renormalises by the cdf (or the pmf from 0) of one of the distributions it lists
    y ~ Truncated(MixtureSameFamily(Categorical(ones(2) / 2), Normal(zeros(2), ones(2))), low=0)
                  ^~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
  note: continuous: Cauchy, Chi2, Exponential, Gamma, GeneralizedPareto, Gumbel, HalfCauchy, HalfNormal, InverseGamma, Kumaraswamy, Laplace, LogNormal, Logistic, Normal, Pareto, SoftLaplace, Uniform, Weibull
  note: discrete: BetaBinomial, Binomial, GammaPoisson, Geometric, NegativeBinomial, Poisson
  note: write the truncated mixture's density with factor(...)"""),
])
def test_a_truncated_or_mixture_base_is_refused_for_its_real_reason(line, expected):
    assert _check_errors(f"model M(y: real[N]) {{\n  {line}\n}}\n") == expected


def test_stan_truncation_hint_and_discrete_latent_warning_say_bdl_names():
    with pytest.raises(ppl.BdlError) as e:
        ppl.compile("model M(y: real[N]) {\n  y ~ lognormal(0, 1) T[, 3]\n}\n", "m.bdl")
    assert "did you mean Truncated(LogNormal(0, 1), high=3)?" in str(e.value)
    m = ppl.compile("model M(y: real[N]) {\n  k ~ Truncated(Poisson(3), low=1, high=5)\n"
                    "  y ~ Normal(k, 1)\n}\n", "m.bdl")
    assert [w.message for w in m.warnings] == [
        "'k' is a latent with a truncated discrete distribution, which Pyro cannot "
        "enumerate: it cannot be summed out, and NUTS, HMC and SVI move continuous latents "
        "only; a fit refuses it, sample_prior runs it"]


def test_the_cdf_of_a_truncated_distribution_for_log_cdf():
    from ppl.runtime.functions import log_ccdf, log_cdf
    with torch_defaults("cpu", "float64"):
        normal = Truncated(dist.Normal(_t(0.0), _t(1.0)), low=-1.0, high=2.0)
        got = normal.cdf(_t([-2.0, 0.0, 1.5, 3.0])).numpy()
        pois = Truncated(dist.Poisson(_t(3.0)), low=2).cdf(_t([1.0, 2.0, 4.5])).numpy()
        nb = Truncated(dist.NegativeBinomial(_t(3.0), _t(0.4)), low=2, high=8)
        nb_cdf = nb.cdf(_t([1.0, 4.0, 10.0])).numpy()
        expo = Truncated(dist.Exponential(_t(1.0)), high=3.0)
        lc, lcc = float(log_cdf(expo, _t(1.0))), float(log_ccdf(expo, _t(1.0)))
    np.testing.assert_allclose(got, stats.truncnorm(-1, 2).cdf([-2, 0, 1.5, 3]), rtol=1e-12)
    sf1 = stats.poisson.sf(1, 3)
    np.testing.assert_allclose(pois, [0, stats.poisson.pmf(2, 3) / sf1,
                                      (stats.poisson.cdf(4, 3) - stats.poisson.cdf(1, 3)) / sf1],
                               rtol=1e-12, atol=1e-300)
    f = stats.nbinom(3, 0.6).cdf
    np.testing.assert_allclose(nb_cdf, [0, (f(4) - f(1)) / (f(8) - f(1)), 1], rtol=1e-12)
    assert lc == pytest.approx(math.log((1 - math.exp(-1)) / (1 - math.exp(-3))), rel=1e-12)
    assert lcc == pytest.approx(math.log((math.exp(-1) - math.exp(-3)) / (1 - math.exp(-3))),
                                rel=1e-12)


def test_bounds_that_cut_nothing_off_draw_the_base():
    # low at or below the base's support truncates nothing: the draw is the base's (it was
    # a TypeError in the inverse-tail draw, which had no tail at either end)
    pyro.set_rng_seed(0)
    n = 20000
    with torch_defaults("cpu", "float64"):
        uni = Truncated(dist.Uniform(_t(2.0), _t(3.0)), low=0.0).rsample((n,))
        expo = Truncated(dist.Exponential(_t(2.0)), low=-1.0).sample((n,))
    assert bool(((uni >= 2) & (uni <= 3)).all()) and bool((expo >= 0).all())
    assert abs(float(uni.mean()) - 2.5) < 4 * math.sqrt(1 / 12 / n)
    assert abs(float(expo.mean()) - 0.5) < 4 * 0.5 / math.sqrt(n)


def test_empty_or_one_point_intervals_are_refused_and_infinite_bounds_truncate_nothing():
    with torch_defaults("cpu", "float64"):
        cases = [(dist.Exponential(_t(1.0)), {"high": -1.0}),
                 (dist.Normal(_t([0.0, 1.0]), _t(1.0)), {"low": _t([1.0, 0.0]),
                                                         "high": _t([2.0, 0.0])}),
                 (dist.Poisson(_t(3.0)), {"low": 2.2, "high": 2.8}),
                 (dist.Normal(_t(0.0), _t(1.0)), {"low": math.inf}),
                 (dist.Normal(_t(0.0), _t(1.0)), {"high": _t([0.0, math.nan])})]
        said = []
        for base, bounds in cases:
            with pytest.raises(ValueError) as e:
                Truncated(base, **bounds)
            said.append(str(e.value))
        free = Truncated(dist.Normal(_t(0.5), _t(1.0)), low=-math.inf)
        lp = float(free.log_prob(_t(0.3)))
        pois = Truncated(dist.Poisson(_t(3.0)), high=math.inf).log_prob(_t(4.0))
    assert said == [
        "Truncated Exponential keeps no value: [0, -1] (the bounds met with Exponential's "
        "support) is empty",
        "Truncated Normal keeps no value at element 1: [0, 0] (the bounds) is a single "
        "point, which has no mass",
        "Truncated Poisson keeps no value: [3, 2] (the integers within the bounds) is empty",
        "Truncated Normal's low is inf: nothing lies beyond it",
        "Truncated Normal's high is nan at element 1: a bound must be a number"]
    assert lp == pytest.approx(stats.norm.logpdf(0.3, 0.5), rel=1e-12)
    assert float(pois) == pytest.approx(stats.poisson.logpmf(4, 3.0), rel=1e-12)


def test_a_param_bound_that_svi_moves_past_the_data_blames_the_param():
    # f2 of the review: was 'the guide drew latents that put the observed y outside'
    m = ppl.compile("model P(y: real[N]) {\n  param L: real = 0\n  mu ~ Normal(0, 1)\n"
                    "  y ~ Truncated(Normal(mu, 1), low=L)\n}\n", "f2.bdl")
    with pytest.raises(ppl.BdlError) as e:
        m.fit({"y": [0.5, 1.2, 0.1, 2.3]}, infer="svi(steps=200)", seed=0)
    first, note = e.value.render().splitlines()[:2]
    assert first.startswith("infer: error: svi: at step ")
    assert first.endswith("the fit moved a param that bounds the observed 'y' past one of "
                          "its values: its support follows the param")
    assert note.startswith("  note: the data are not at fault")


def test_poisson_with_a_huge_rate_100_sds_out():
    from scipy.special import logsumexp
    pyro.set_rng_seed(3)
    with torch_defaults("cpu", "float64"):
        d = Truncated(dist.Poisson(_t([3.0, 1e6])), low=_t([30.0, 1.1e6]))
        lp = d.log_prob(_t([31.0, 1.1e6 + 5]))
        x = d.sample((1000,))  # a [K, S, B] comparison would be 2e9 booleans
    ks = np.arange(1.1e6, 1.1e6 + 3000)
    logz = logsumexp(stats.poisson.logpmf(ks, 1e6))
    assert float(lp[1]) == pytest.approx(stats.poisson.logpmf(1.1e6 + 5, 1e6) - logz, rel=1e-9)
    p = np.exp(stats.poisson.logpmf(ks, 1e6) - logz)
    mean, sd = (p * ks).sum(), math.sqrt((p * ks**2).sum() - (p * ks).sum() ** 2)
    assert bool((x[:, 1] >= 1.1e6).all()) and bool((x[:, 0] >= 30).all())
    assert abs(float(x[:, 1].mean()) - mean) < 4 * sd / math.sqrt(1000)


@pytest.mark.parametrize("low, high", [(1.0, None), (1.0, 4.0), (None, 0.5), (40.0, None)])
def test_a_truncated_gamma_has_gradients_in_its_shape(low, high):
    # torch's incomplete gamma has no derivative in its shape: NUTS with a latent shape
    # stopped with 'the derivative for igammac: input is not implemented'
    x = (low or 0.2) * 1.05

    def exact(a, r):
        fr = stats.gamma(a, scale=1 / r)
        if high is None:
            return fr.logpdf(x) - fr.logsf(low)
        return fr.logpdf(x) - math.log(fr.cdf(high) - (fr.cdf(low) if low else 0.0))

    with torch_defaults("cpu", "float64"):
        a, r = _t(2.5).requires_grad_(), _t(1.3).requires_grad_()
        Truncated(dist.Gamma(a, r), low=low, high=high).log_prob(_t(x)).backward()
    h = 1e-6
    assert float(a.grad) == pytest.approx((exact(2.5 + h, 1.3) - exact(2.5 - h, 1.3)) / (2 * h),
                                          rel=1e-6)
    assert float(r.grad) == pytest.approx((exact(2.5, 1.3 + h) - exact(2.5, 1.3 - h)) / (2 * h),
                                          rel=1e-6)


@pytest.mark.parametrize("a, b, eps", [(0.1, 2.3, 1e-9), (0.3, 0.7, 1e-12), (-1.0, 2.0, 1e-12)])
def test_uniform_renormalises_by_its_exact_tails(a, b, eps):
    # S(L) = (b - L) / (b - a) exactly: log(F(b) - F(L)) was off by up to 4e-6 relative
    low = b - eps
    with torch_defaults("cpu", "float64"):
        d = Truncated(dist.Uniform(_t(a), _t(b)), low=low)
        got = float(d.log_prob(_t(b - eps / 2)))
        pyro.set_rng_seed(0)
        x = d.sample((4000,))
        below = Truncated(dist.Uniform(_t(a), _t(b)), high=a + eps).log_prob(_t(a + eps / 2))
    assert got == pytest.approx(-math.log(b - low), rel=1e-13)
    assert float(below) == pytest.approx(-math.log(a + eps - a), rel=1e-13)
    assert bool(((x >= low) & (x <= b)).all())
    # uniform on [low, b]: mean at the middle, within 4 standard errors
    assert abs(float(x.mean()) - (low + b) / 2) < 4 * (b - low) / math.sqrt(12 * 4000)


# ---- one set of tails: the log_cdf / log_ccdf builtins read Truncated's (stop 26) -------

def _mp(f):
    """A float from an mpmath expression, at 40 digits."""
    import mpmath
    with mpmath.workdps(40):
        return float(f(mpmath))


@pytest.mark.parametrize("call, value, want", [
    ("log_cdf(Normal(0, 1), x)", -40.0, lambda: stats.norm.logcdf(-40.0)),
    ("log_ccdf(Normal(0, 1), x)", 40.0, lambda: stats.norm.logsf(40.0)),
    ("log_cdf(Gamma(2, 1), x)", 1e-9, lambda: stats.gamma(2.0).logcdf(1e-9)),
    # scipy's logsf is -inf here: Q(2, 800) by mpmath (log1p(-cdf) was -inf)
    ("log_ccdf(Gamma(2, 1), x)", 800.0,
     lambda: _mp(lambda m: m.log(m.gammainc(2, 800, m.inf, regularized=True)))),
    ("log_ccdf(InverseGamma(3, 1), x)", 1e9, lambda: stats.invgamma(3.0).logsf(1e9)),
    ("log_ccdf(Laplace(0, 1), x)", 800.0, lambda: -math.log(2.0) - 800.0),
    ("log_ccdf(Weibull(1, 2), x)", 30.0, lambda: -900.0),
    ("log_cdf(GeneralizedPareto(0, 1, 0.2), x)", 1e-12,
     lambda: stats.genpareto(0.2).logcdf(1e-12)),
    ("log_ccdf(SoftLaplace(0, 1), x)", 800.0, lambda: math.log(2 / math.pi) - 800.0),
    # counts: Pyro gives Poisson and Geometric no cdf (log_cdf of one was an error)
    ("log_cdf(Poisson(1000), c)", 100, lambda: stats.poisson(1000.0).logcdf(100)),
    ("log_ccdf(Poisson(3), c)", 400,  # P(X > 400) = P(401, 3), 1e-682; scipy's is -inf
     lambda: _mp(lambda m: m.log(m.gammainc(401, 0, 3, regularized=True)))),
    ("log_ccdf(Geometric(0.3), c)", 3000, lambda: stats.geom(0.3, loc=-1).logsf(3000)),
    ("log_cdf(Poisson(3), c)", -1, lambda: -math.inf),
    # a Truncated's own tails, in log space (log1p(-cdf) was -inf at 40)
    ("log_ccdf(Truncated(Normal(0, 1), low=0), x)", 40.0,
     lambda: stats.norm.logsf(40.0) + math.log(2.0)),
    ("log_cdf(Truncated(Normal(0, 1), low=-50, high=0), x)", -40.0,
     lambda: stats.norm.logcdf(-40.0) + math.log(2.0)),
    ("log_ccdf(Truncated(Poisson(3), low=2), c)", 400,
     lambda: _mp(lambda m: m.log(m.gammainc(401, 0, 3, regularized=True))
                 - m.log(m.gammainc(2, 0, 3, regularized=True)))),
    ("log_ccdf(Truncated(Binomial(10, 0.4), low=3), c)", 9,  # its pmf summed on a grid
     lambda: stats.binom(10, 0.4).logpmf(10) - stats.binom(10, 0.4).logsf(2)),
    ("log_cdf(Truncated(Binomial(10, 0.4), low=3), c)", 2, lambda: -math.inf),
])
def test_log_cdf_and_log_ccdf_builtins_keep_far_tails(call, value, want):
    # counts as int[M] of one element: an int data value of its own would be a size
    name, data = ("c: int[M]", {"c": [value]}) if ", c)" in call else ("x: real", {"x": value})
    m = ppl.compile(f"model T({name}) {{\n  mu ~ Normal(0, 1)\n  factor({call})\n}}\n",
                    "t.bdl")
    with torch_defaults("cpu", "float64"):
        got = m.log_density({"mu": 0.0}, data) - stats.norm.logpdf(0.0)
    expected = want()
    if math.isinf(expected):
        assert got == expected
    else:
        assert got == pytest.approx(expected, rel=1e-9)


def test_soft_laplace_log_tails_are_at_most_zero_in_float32():
    # log(2/pi) + log atan(e^30) rounded to +3e-8 in float32
    from ppl.runtime.functions import log_ccdf, log_cdf
    with torch_defaults("cpu", "float32"):
        d = dist.SoftLaplace(torch.tensor(0.0), torch.tensor(1.0))
        x = torch.tensor([-30.0, 30.0])
        f, s = log_cdf(d, x), log_ccdf(d, x)
    assert f.tolist()[1] == 0.0 and s.tolist()[0] == 0.0
    assert f.tolist()[0] == pytest.approx(math.log(2 / math.pi) - 30.0, rel=1e-6)


def test_log_tails_of_a_truncated_have_finite_gradients_outside_the_interval():
    # log_cdf above the interval is 0 and log_ccdf below it is 0: their gradient in mu is
    # that of the values inside (was NaN through the masked tail of a one-point interval)
    def exact(mu, x, upper):
        fr = stats.norm(mu, 1.0)
        z = fr.cdf(2.0) - fr.cdf(0.0)
        part = [fr.cdf(2.0) - fr.cdf(max(v, 0.0)) if upper else fr.cdf(min(v, 2.0)) - fr.cdf(0.0)
                for v in x]
        return sum(math.log(p / z) for p in part)

    from ppl.runtime.functions import log_ccdf, log_cdf
    for fn, x, upper in ((log_cdf, [0.5, 1.5, 3.0], False), (log_ccdf, [-1.0, 0.5, 1.5], True)):
        with torch_defaults("cpu", "float64"):
            mu = _t(0.3).requires_grad_()
            got = fn(Truncated(dist.Normal(mu, 1.0), low=0.0, high=2.0), _t(x)).sum()
            got.backward()
        h = 1e-6
        assert float(got.detach()) == pytest.approx(exact(0.3, x, upper), rel=1e-12)
        assert float(mu.grad) == pytest.approx(
            (exact(0.3 + h, x, upper) - exact(0.3 - h, x, upper)) / (2 * h), rel=1e-6)


def test_log_tails_at_a_point_with_no_base_mass_below_is_minus_inf_not_nan():
    """Exponential(1) cut to [-1, 3] at 0: P(X <= 0) = 0 exactly, beside an element whose
    bounds lie inside the support (the batched difference -inf - (-inf) gave NaN)."""
    import math

    import pyro.distributions as dist

    from ppl.runtime.truncated import Truncated

    t = Truncated(dist.Exponential(torch.tensor([1.0, 2.0], dtype=torch.float64)),
                  low=torch.tensor([-1.0, 1.0], dtype=torch.float64),
                  high=torch.tensor([3.0, 5.0], dtype=torch.float64))
    f, s = t.log_tails(torch.tensor(0.0, dtype=torch.float64))
    assert torch.isneginf(f).all() and (s == 0).all()
    f, s = t.log_tails(torch.tensor(2.0, dtype=torch.float64))
    want_f = [math.log((1 - math.exp(-2)) / (1 - math.exp(-3))),
              math.log((math.exp(-2) - math.exp(-4)) / (math.exp(-2) - math.exp(-10)))]
    assert f.tolist() == pytest.approx(want_f, rel=1e-12)
    assert torch.exp(f) + torch.exp(s) == pytest.approx(torch.ones(2, dtype=torch.float64), rel=1e-12)
