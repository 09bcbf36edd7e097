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
    gamma = stats.gamma(2.0)  # drawn by rejection
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


def test_a_truncated_latent_has_the_exact_mean_and_sd():
    fit = _nuts("model Z() {\n  z ~ Truncated(Normal(1, 1), low=0, high=2)\n}\n", {},
                samples=1000, warmup=300)
    z = fit.samples["z"].double()
    exact = stats.truncnorm(-1.0, 1.0, loc=1.0)
    assert bool(((z > 0) & (z < 2)).all())
    # MC error with an effective sample size of 250 (the run's is about 390)
    assert abs(float(z.mean()) - exact.mean()) < 4 * exact.std() / math.sqrt(250)
    assert abs(float(z.std()) - exact.std()) < 0.1


def test_nuts_recovers_mu_from_truncated_data_where_the_naive_model_is_biased():
    rng = np.random.default_rng(3)
    y = stats.truncnorm.rvs(-0.5, math.inf, loc=0.5, size=60, random_state=rng)
    source = ("model T(y: real[N]) {\n  mu ~ Normal(0, 3)\n"
              "  y ~ Truncated(Normal(mu, 1), low=0)\n}\n")
    mu = _nuts(source, {"y": y.tolist()}, samples=800, warmup=300).samples["mu"].double()
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
    tol = 4 * sd / math.sqrt(200)
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
])
def test_refusals_are_located(line, expected):
    assert _check_errors(f"model M(y: real[N]) {{\n  {line}\n}}\n") == expected


def test_gamma_truncated_data_and_declared_bounds_check():
    front_ok = ("model M(y: real[N]) {\n  r ~ Exponential(1)\n"
                "  y ~ Truncated(Gamma(2, r), low=1)\n"
                "  z: real<lower=0> ~ Truncated(Normal(0, 1), low=0)\n}\n")
    ppl.compile(front_ok, "model.bdl")  # no error


def test_data_outside_the_interval_is_a_located_data_error(tmp_path, bdl_here):
    path = tmp_path / "m.bdl"
    path.write_text("model M(y: real[N]) {\n  mu ~ Normal(0, 1)\n"
                    "  y ~ Truncated(Normal(mu, 1), low=0)\n}\ninfer svi(steps=2)\n")
    (tmp_path / "m.data.json").write_text('{"y": [0.5, -1.25, 2.0]}')
    r = bdl_here("run", str(path))
    assert r.returncode == 1, r.stderr
    assert "m.bdl:3:3: error: 'y' element 1 is -1.25; Truncated is over numbers >= 0" \
        in r.stderr


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
