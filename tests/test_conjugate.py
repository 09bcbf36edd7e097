"""Posterior correctness on conjugate models whose posterior is known in closed form.

Each model is written in BDL and fitted with NUTS and with SVI (mean-field normal guide).

NUTS is compared with the exact posterior. The tolerances are Monte Carlo errors: the
posterior mean must be within ``Z`` standard errors ``sd / sqrt(ESS)`` (ESS as reported by
the fit), and the posterior sd within ``Z`` standard errors of an sd estimate,
``sd * sqrt(kurtosis - 1) / (2 sqrt(ESS_sq))``, where ESS_sq is the effective sample size
of the squared deviations (computed here with the same estimator the summary uses) and
the kurtosis is the exact one of the posterior. ESS is clipped to the number of draws, so
that an antithetic chain (ESS > draws) does not tighten the tolerance, and must be at
least ``MIN_ESS`` for the check to mean anything.

SVI is compared with the best member of its own family, not with the exact posterior:
AutoNormal fits an independent normal per coordinate on the *unconstrained* scale, so
- normal-normal: the family contains the posterior; the optimum is exact.
- linear regression: the KL(q||p)-optimal mean-field normal of a Gaussian posterior has
  the exact means but sds 1/sqrt(diag(precision)), below the marginal sds when the
  coefficients are correlated. The data make them clearly correlated, and the test checks
  that SVI reports the too-small mean-field sds, not the exact ones.
- beta-binomial / gamma-Poisson: q is logit-normal / log-normal. The optimum is computed
  here by quadrature; its mean is exactly the posterior mean (the stationarity condition
  of the location gives E_q[sigmoid(z)] = a / (a + b), resp. E_q[exp(z)] = a / b), but its
  sd is not the posterior sd (for the skewed posteriors below it is off by a few per
  cent). SVI is held to that optimum; the check against the exact posterior is therefore
  looser by exactly that, documented, approximation error.
On top of the Monte Carlo error of the guide draws, SVI's answer carries optimiser noise:
it is the last iterate of stochastic gradient steps (with Adam, its spread scales like
sqrt(lr * sd) on the unconstrained scale). The learning rate is therefore decayed to 2 %
of its start (``lr_decay``); with that, over seeds 1-8 the distance to the optimum was at
most 0.14 sd on means (the correlated regression, in units of its mean-field sd; 0.09 sd
elsewhere) and 5.5 % on sds, about half of what a constant lr of 0.01 leaves. The
allowance is 0.15 sd and 5 % on top of the Monte Carlo term of the 2000 guide draws.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pyro.ops.stats import effective_sample_size

import ppl

Z = 4.0
MIN_ESS = 100
# 500 draws: the NUTS tolerances above are Z standard errors at the fit's own ESS, so
# they widen by sqrt(1000 / 500) from the earlier 1000 draws by construction, and ESS
# stays well above MIN_ESS on these one- and two-parameter posteriors
NUTS = dict(infer="nuts", samples=500, warmup=300, chains=1, seed=1)
SVI = dict(infer="svi", steps=1500, lr=0.05, lr_decay=0.02, samples=2000, seed=1)
# the one-parameter posteriors settle in 800 steps: at seeds 1-4 their worst error was
# under half of the tolerances below (mean and sd, Monte Carlo term plus allowance)
SVI_STEPS = {"normal_normal": 800, "beta_binomial": 800, "gamma_poisson": 800}
SVI_MEAN_ALLOWANCE = 0.15   # optimiser noise, in posterior sds
SVI_SD_ALLOWANCE = 0.05     # optimiser noise, relative


# ---- the models ------------------------------------------------------------------

NORMAL_NORMAL = """
model NormalNormal(y: real[N], sigma: real<lower=0>, m0: real, s0: real<lower=0>) {
  mu ~ Normal(m0, s0)
  y ~ Normal(mu, sigma)
}
"""

BETA_BINOMIAL = """
model BetaBinomial(k: int[G], n: int[G], a: real<lower=0>, b: real<lower=0>) {
  p ~ Beta(a, b)
  k ~ Binomial(total_count=n, probs=p)
}
"""

GAMMA_POISSON = """
model GammaPoisson(y: int[N], a: real<lower=0>, b: real<lower=0>) {
  lam ~ Gamma(a, b)
  y ~ Poisson(lam)
}
"""

LINEAR_REGRESSION = """
model LinReg(y: real[N], X: real[N, D], sigma: real<lower=0>, tau: real<lower=0>) {
  beta: real[D] ~ Normal(0, tau)
  y ~ Normal(X @ beta, sigma)
}
"""


# ---- exact posteriors: {element name: (mean, sd, kurtosis)} -------------------------

def normal_normal_case():
    rng = np.random.default_rng(11)
    y = rng.normal(1.5, 2.0, size=20)
    data = dict(y=y, sigma=2.0, m0=0.0, s0=3.0)
    prec = 1 / 3.0**2 + len(y) / 2.0**2
    mean = (y.sum() / 2.0**2) / prec
    exact = {"mu": (mean, prec**-0.5, 3.0)}
    return data, exact, exact   # the normal family holds the posterior


def beta_binomial_case():
    k, n = [1, 0, 2], [10, 8, 12]
    data = dict(k=k, n=n, a=2.0, b=2.0)
    a, b = 2.0 + sum(k), 2.0 + sum(n) - sum(k)            # Beta(5, 29): skewed
    mean = a / (a + b)
    var = a * b / ((a + b) ** 2 * (a + b + 1))
    excess = 6 * ((a - b) ** 2 * (a + b + 1) - a * b * (a + b + 2)) / (
        a * b * (a + b + 2) * (a + b + 3))
    exact = {"p": (mean, math.sqrt(var), 3 + excess)}

    def elbo(z):  # log density of z = logit(p), Jacobian included, up to a constant
        return a * torch.nn.functional.logsigmoid(z) + b * torch.nn.functional.logsigmoid(-z)

    best = {"p": _meanfield_1d(elbo, torch.sigmoid, math.log(a / b), 0.3)}
    return data, exact, best


def gamma_poisson_case():
    y = [0, 1, 0, 2, 1]
    data = dict(y=y, a=2.0, b=1.0)
    a, b = 2.0 + sum(y), 1.0 + len(y)                      # Gamma(6, 6): skewed
    exact = {"lam": (a / b, math.sqrt(a) / b, 3 + 6 / a)}

    def elbo(z):  # z = log(lam)
        return a * z - b * torch.exp(z)

    best = {"lam": _meanfield_1d(elbo, torch.exp, math.log(a / b), 0.4)}
    return data, exact, best


def linear_regression_case():
    rng = np.random.default_rng(12)
    n = 30
    x = rng.normal(1.5, 1.0, size=n)                       # not centred: correlated coefs
    X = np.column_stack([np.ones(n), x])
    sigma, tau = 0.5, 2.0
    y = X @ np.array([1.0, -2.0]) + rng.normal(0.0, sigma, size=n)
    data = dict(y=y, X=X, sigma=sigma, tau=tau)
    precision = X.T @ X / sigma**2 + np.eye(2) / tau**2
    cov = np.linalg.inv(precision)
    mean = cov @ X.T @ y / sigma**2
    exact = {f"beta[{i}]": (mean[i], math.sqrt(cov[i, i]), 3.0) for i in range(2)}
    best = {f"beta[{i}]": (mean[i], 1 / math.sqrt(precision[i, i]), 3.0) for i in range(2)}
    return data, exact, best


def _meanfield_1d(log_density, to_constrained, loc0, scale0):
    """The KL(q||p)-optimal q = Normal(m, s) on the unconstrained scale, by Gauss-Hermite
    quadrature and L-BFGS; returns the (mean, sd, kurtosis) of to_constrained(z), z ~ q."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    x = torch.tensor(nodes, dtype=torch.float64)
    w = torch.tensor(weights / weights.sum(), dtype=torch.float64)
    m = torch.tensor(loc0, dtype=torch.float64, requires_grad=True)
    log_s = torch.tensor(math.log(scale0), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([m, log_s], max_iter=500, tolerance_grad=1e-12,
                            tolerance_change=1e-15, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -((w * log_density(m + log_s.exp() * x)).sum() + log_s)  # -ELBO
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        v = to_constrained(m + log_s.exp() * x)
        mean = (w * v).sum()
        var = (w * (v - mean) ** 2).sum()
        kurt = (w * (v - mean) ** 4).sum() / var**2
    return float(mean), float(var.sqrt()), float(kurt)


CASES = {
    "normal_normal": (NORMAL_NORMAL, normal_normal_case),
    "beta_binomial": (BETA_BINOMIAL, beta_binomial_case),
    "gamma_poisson": (GAMMA_POISSON, gamma_poisson_case),
    "linear_regression": (LINEAR_REGRESSION, linear_regression_case),
}


# ---- checks ------------------------------------------------------------------------

def _element(fit, name: str) -> torch.Tensor:
    """[chains, draws] of one element, ``beta[1]`` or ``mu``."""
    site, _, rest = name.partition("[")
    x = fit.chains[site].to(torch.float64)
    if rest:
        x = x[(..., *(int(i) for i in rest.rstrip("]").split(",")))]
    return x


def _ess(x: torch.Tensor) -> float:
    return float(effective_sample_size(x.unsqueeze(-1), chain_dim=0, sample_dim=1)[0])


def check_mcmc(fit, exact):
    s = fit.summary()
    for name, (mean, sd, kurt) in exact.items():
        draws = _element(fit, name)
        n = draws.numel()
        ess = min(s[name]["ess"], n)
        ess_sq = min(_ess((draws - mean) ** 2), n)
        assert ess >= MIN_ESS and ess_sq >= MIN_ESS, (name, ess, ess_sq)
        tol_mean = Z * sd / math.sqrt(ess)
        tol_sd = Z * sd * math.sqrt(kurt - 1) / (2 * math.sqrt(ess_sq))
        assert abs(s[name]["mean"] - mean) < tol_mean, (name, s[name]["mean"], mean, tol_mean)
        assert abs(s[name]["sd"] - sd) < tol_sd, (name, s[name]["sd"], sd, tol_sd)
        assert s[name]["r_hat"] < 1.05 or math.isnan(s[name]["r_hat"])


def check_svi(fit, best):
    s = fit.summary()
    n = fit.num_draws
    for name, (mean, sd, kurt) in best.items():
        tol_mean = (Z / math.sqrt(n) + SVI_MEAN_ALLOWANCE) * sd
        tol_sd = (Z * math.sqrt((kurt - 1) / (4 * n)) + SVI_SD_ALLOWANCE) * sd
        assert abs(s[name]["mean"] - mean) < tol_mean, (name, s[name]["mean"], mean, tol_mean)
        assert abs(s[name]["sd"] - sd) < tol_sd, (name, s[name]["sd"], sd, tol_sd)


# ---- tests ---------------------------------------------------------------------------

@pytest.mark.parametrize("case", list(CASES))
def test_nuts_matches_exact_posterior(case):
    src, make = CASES[case]
    data, exact, _ = make()
    fit = ppl.compile(src).fit(data, **NUTS)
    assert fit.divergences == 0
    check_mcmc(fit, exact)


@pytest.mark.parametrize("case", list(CASES))
def test_svi_matches_best_meanfield_normal(case):
    src, make = CASES[case]
    data, exact, best = make()
    fit = ppl.compile(src).fit(data, **{**SVI, "steps": SVI_STEPS.get(case, SVI["steps"])})
    check_svi(fit, best)
    if case == "linear_regression":
        # mean-field on correlated coefficients: sds well below the exact ones, so the
        # check above is not passing by accident
        s = fit.summary()
        for name, (_, sd, _) in exact.items():
            assert s[name]["sd"] < 0.8 * sd, (name, s[name]["sd"], sd)


def test_meanfield_optimum_is_what_the_svi_tests_expect():
    """The documented approximation gaps between the mean-field optimum and the exact
    posterior: exact means everywhere, sd off by a few per cent on the skewed beta/gamma
    posteriors and far too small on correlated regression coefficients."""
    for case in ("beta_binomial", "gamma_poisson"):
        _, exact, best = CASES[case][1]()
        (name, (mean, sd, _)), = exact.items()
        assert best[name][0] == pytest.approx(mean, rel=1e-6)
        assert 0.005 < abs(best[name][1] / sd - 1) < 0.1, (case, best[name][1], sd)
    _, exact, best = linear_regression_case()
    for name in exact:
        assert best[name][0] == exact[name][0]
        assert best[name][1] < 0.7 * exact[name][1]


def test_fits_are_deterministic_given_the_seed():
    data, _, _ = normal_normal_case()
    m = ppl.compile(NORMAL_NORMAL)
    a = m.fit(data, infer="nuts", samples=30, warmup=30, chains=1, seed=5)
    b = m.fit(data, infer="nuts", samples=30, warmup=30, chains=1, seed=5)
    assert torch.equal(a.samples["mu"], b.samples["mu"])
    c = m.fit(data, infer="svi", steps=50, samples=20, seed=5)
    d = m.fit(data, infer="svi", steps=50, samples=20, seed=5)
    assert torch.equal(c.samples["mu"], d.samples["mu"])
