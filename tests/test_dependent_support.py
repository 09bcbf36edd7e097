"""Latents whose support follows other latents (``z ~ Uniform(a, a + 1)``): drawn on the
real line and mapped with the current bounds, Stan's rule (ppl/runtime/dependent_support.py).

Pyro's samplers fix a latent's map from the real line once, from the initial trace: with
the old code ``a``'s posterior mean was 1.51 where it is 0. The fits are checked against
exact answers (closed form or 1-D quadrature), the log density against the hand-written
one at a fixed point."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pytest
import torch
from pyro.ops.stats import effective_sample_size
from scipy import integrate, stats
from torch.distributions import biject_to

import ppl
from ppl.infer.run import torch_defaults
from ppl.runtime.dependent_support import SUFFIX, unconstrained

U1 = """model U() {
  a ~ Normal(0, 1)
  z ~ Uniform(a, a + 1)
}
"""


def _nuts(source, **opts):
    opts = {"samples": 400, "warmup": 150, "chains": 1, "seed": 0, **opts}
    return ppl.compile(source, "m.bdl").fit({}, infer="nuts", **opts)


def _se(x):
    """The Monte Carlo standard error of the mean of one chain's draws ``x``, from their
    effective sample size (which must be large enough to trust: > 50)."""
    x = torch.as_tensor(np.asarray(x, dtype=np.float64))
    ess = float(effective_sample_size(x.reshape(1, -1)))
    assert ess > 50, ess
    return float(x.std()) / math.sqrt(ess)


def _exact(x, mean, sd):
    """One chain's draws ``x`` have the exact ``mean`` and ``sd``: each within 4 Monte Carlo
    standard errors (the sd's from the ESS of the squared deviations, se(var) / 2 sd)."""
    x = np.asarray(x, dtype=np.float64)
    assert abs(x.mean() - mean) < 4 * _se(x), (x.mean(), mean)
    assert abs(x.std() - sd) < 4 * _se((x - mean) ** 2) / (2 * sd), (x.std(), sd)


def test_uniform_following_a_latent_under_nuts_is_exact():
    fit = _nuts(U1)
    a, z = fit.samples["a"].numpy(), fit.samples["z"].numpy()
    assert set(fit.samples) == {"a", "z"}  # the auxiliary site is not shown
    assert fit.latents == ["a", "z"] and "z" not in fit.deterministics
    # a ~ N(0, 1) exactly (the Uniform is normalised); z - a ~ U(0, 1)
    _exact(a, 0, 1)
    w = z - a
    assert ((w > 0) & (w < 1)).all()
    _exact(w, 0.5, 1 / math.sqrt(12))


def test_the_generated_code_maps_with_the_current_bounds():
    src = ppl.compile(U1, "m.bdl").source
    assert 'z = rt.sample_in_support("z", dist.Uniform(a, a + 1))' in src
    assert 'a = pyro.sample("a", dist.Normal(0, 1))' in src


def test_a_support_that_follows_only_data_is_unchanged():
    src = ppl.compile("model D(lo: real) {\n  z ~ Uniform(lo, lo + 1)\n"
                      "  w ~ Pareto(2, lo)\n}\n", "m.bdl").source
    assert 'z = pyro.sample("z", dist.Uniform(lo, lo + 1))' in src
    assert "sample_in_support" not in src
    # Pareto's alpha does not set its support: a latent there changes nothing
    src = ppl.compile("model P() {\n  al ~ Exponential(1)\n  w ~ Pareto(2, al)\n}\n",
                      "m.bdl").source
    assert 'w = pyro.sample("w", dist.Pareto(2, al))' in src


def test_truncated_following_a_latent_matches_quadrature():
    # p(a, z) = phi(a) phi(z) / (1 - Phi(a)) on z > a: a ~ N(0, 1), and
    # E[z] = E[phi(a) / (1 - Phi(a))] (the inverse Mills ratio), by quadrature
    fit = _nuts("model T() {\n  a ~ Normal(0, 1)\n"
                "  z ~ Truncated(Normal(0, 1), low=a)\n}\n")
    a, z = fit.samples["a"].numpy(), fit.samples["z"].numpy()
    mills = lambda x: np.exp(stats.norm.logpdf(x) - stats.norm.logsf(x))  # noqa: E731
    ez = integrate.quad(lambda x: stats.norm.pdf(x) * mills(x), -12, 12)[0]
    assert ez == pytest.approx(0.90320, abs=1e-4)
    assert (z > a).all()
    _exact(a, 0, 1)
    assert abs(z.mean() - ez) < 4 * _se(z)


def test_declared_bound_following_a_latent_matches_quadrature():
    # Stan's declared bound leaves the density unnormalised: p(a, z) ∝ phi(a) N(z; 0, 5)
    # on z > a, so a's marginal is ∝ phi(a) (1 - Phi(a / 5)), not N(0, 1)
    fit = _nuts("model B() {\n  a ~ Normal(0, 1)\n  z: real<lower=a> ~ Normal(0, 5)\n}\n")
    a, z = fit.samples["a"].numpy(), fit.samples["z"].numpy()
    dens = lambda x: stats.norm.pdf(x) * stats.norm.sf(x / 5)  # noqa: E731
    norm = integrate.quad(dens, -np.inf, np.inf)[0]
    ea = integrate.quad(lambda x: x * dens(x), -np.inf, np.inf)[0] / norm
    # closed form: E[a Phi(-a / 5)] / (1 / 2) = -2 (1 / 5) / sqrt(2 pi (1 + 1 / 25))
    assert ea == pytest.approx(-0.4 / math.sqrt(2 * math.pi * 1.04), abs=1e-8)
    assert (z > a).all()
    assert abs(a.mean() - ea) < 4 * _se(a)


@pytest.fixture(scope="module")
def svi_u1():
    """One AutoNormal fit of U1, shared by the two tests that read it. The step size decays
    (0.05 to 0.001 over 800 steps): at a constant 0.02 for 1500 steps the final iterate
    wandered, a's mean 0.19 at seed 1 against the 0.1 bound; decayed, seeds 0-3 end within
    0.028 of a's mean 0, 0.072 of its sd 1 and 0.086 of logit(z - a)'s mean 0."""
    return ppl.compile(U1, "m.bdl").fit({}, infer="svi", steps=800, lr=0.05, lr_decay=0.02,
                                        samples=2000, seed=0)


def test_svi_autonormal_recovers_the_exact_marginal(svi_u1):
    # on the real line the posterior factorises: a ~ N(0, 1), logit(z - a) ~ Logistic(0, 1)
    fit = svi_u1
    a, z = fit.samples["a"].numpy(), fit.samples["z"].numpy()
    assert set(fit.samples) == {"a", "z"}
    assert abs(a.mean()) < 0.1 and abs(a.std() - 1) < 0.15
    assert ((z - a > 0) & (z - a < 1)).all()


def test_in_a_plate_and_predictions_reproduce_the_posterior_draws():
    src = ("model P(y: real[N]) {\n  a ~ Normal(0, 1)\n  plate i in N {\n"
           "    z ~ Uniform(a, a + 1)\n    y ~ Normal(z, 0.1)\n  }\n}\n")
    m = ppl.compile(src, "m.bdl")
    assert 'z = rt.sample_in_support("z", dist.Uniform(a, a + 1))' in m.source
    # a structural check (bounds, shapes, predictions): the fewest draws that run the path
    fit = m.fit({"y": [0.2, 0.9, 0.5]}, infer="nuts", samples=20, warmup=20, chains=1,
                seed=0)
    a, z = fit.samples["a"], fit.samples["z"]
    assert z.shape == (20, 3)
    assert bool(((z > a[:, None]) & (z < a[:, None] + 1)).all())
    pred = fit.predict(None, sites=["z"])
    assert torch.equal(pred["z"], z)  # conditioned on z itself, not redrawn


def test_prior_draws_are_exact():
    n = 1000
    draws = ppl.compile(U1, "m.bdl").sample_prior({}, num_samples=n, seed=0)
    assert set(draws) == {"a", "z"}  # not z's draw on the real line
    w = (draws["z"] - draws["a"]).numpy()
    assert ((w > 0) & (w < 1)).all()
    # 4 standard errors of n independent draws: U(0, 1)'s mean sd / sqrt(n) (0.037), its
    # sd's sqrt((1/80 - 1/144) / (4/12 n)) (0.016); N(0, 1)'s mean 1 / sqrt(n) (0.13)
    assert abs(w.mean() - 0.5) < 4 / math.sqrt(12 * n)
    assert abs(w.std() - 1 / math.sqrt(12)) < 4 * math.sqrt((1 / 80 - 1 / 144) * 3 / n)
    assert abs(draws["a"].numpy().mean()) < 4 / math.sqrt(n)


def test_log_density_is_the_hand_written_one_with_the_jacobian():
    m = ppl.compile(U1, "m.bdl")
    with torch_defaults("cpu", "float64"):
        a, u = torch.tensor(0.3), torch.tensor(-0.7)
        model = pyro.poutine.condition(m.pyro_model, {"a": a, "z" + SUFFIX: u})
        tr = pyro.poutine.trace(model).get_trace()
        got = float(tr.log_prob_sum())
        z = float(tr.nodes["z"]["value"])
    s = 1 / (1 + math.exp(0.7))  # sigmoid(u)
    assert z == pytest.approx(0.3 + s, abs=1e-12)
    # log N(a; 0, 1) + log U(z; a, a + 1) + log |dz/du| = log s (1 - s)
    want = stats.norm.logpdf(0.3) + 0.0 + math.log(s * (1 - s))
    assert got == pytest.approx(want, abs=1e-10)


def test_unconstrained_density_and_draws():
    with torch_defaults("cpu", "float64"):
        fn = pyro.distributions.Pareto(torch.tensor(2.0), torch.tensor(3.0))
        d = unconstrained(fn)
        u = torch.tensor([-1.0, 0.0, 2.0])
        # z = 2 + exp(u): log p(z) + u
        z = 2 + torch.exp(u)
        want = fn.log_prob(z) + u
        assert torch.allclose(d.log_prob(u), want)
        assert d.support is pyro.distributions.constraints.real
        pyro.set_rng_seed(0)
        zs = biject_to(fn.support)(d.sample((20000,)))
        # Pareto(2, 3): mean 3, all above 2
        assert bool((zs >= 2).all()) and float(zs.mean()) == pytest.approx(3.0, abs=0.05)


def test_a_custom_guide_draws_the_same_site_on_the_real_line():
    # the guide is the exact posterior (no data): log p - log q is 0 at every draw, which
    # holds only if model and guide meet at z's site on the real line with their Jacobians
    m = ppl.compile(U1 + "guide U {\n  param m: real = 0.0\n  a ~ Normal(m, 1)\n"
                         "  z ~ Uniform(a, a + 1)\n}\n", "m.bdl")
    assert 'rt.guide_in_support("z", dist.Uniform(a, a + 1))' in m.source
    with torch_defaults("cpu", "float64"):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        for _ in range(5):
            g = pyro.poutine.trace(m.pyro_guide).get_trace()
            tr = pyro.poutine.trace(pyro.poutine.replay(m.pyro_model, trace=g)).get_trace()
            assert set(g.stochastic_nodes) == {"a", "z" + SUFFIX}
            gap = float((tr.log_prob_sum() - g.log_prob_sum()).detach())
            assert gap == pytest.approx(0, abs=1e-12)
            w = float((tr.nodes["z"]["value"] - tr.nodes["a"]["value"]).detach())
            assert 0 < w < 1


# ---- stop 26: a distribution behind a name, GeneralizedPareto, map, log_density ----

THROUGH = """model M() {
  a ~ Normal(0, 1)
  d = Uniform(a, a + 1)
  z ~ d
}
"""


def test_a_distribution_behind_a_name_is_mapped_with_the_current_bounds():
    # the old code drew z with pyro.sample: 803 divergences and a wrong a under bdl run
    m = ppl.compile(THROUGH, "m.bdl")
    assert 'z = rt.sample_in_support("z", d)' in m.source
    fit = _nuts(THROUGH)
    a, z = fit.samples["a"].numpy(), fit.samples["z"].numpy()
    assert set(fit.samples) == {"a", "z"} and fit.latents == ["a", "z"]
    _exact(a, 0, 1)  # exactly N(0, 1)
    w = z - a  # exactly U(0, 1)
    assert ((w > 0) & (w < 1)).all()
    _exact(w, 0.5, 1 / math.sqrt(12))


@pytest.mark.parametrize("body, site", [
    # a chain of names, in a plate and across its edge
    ("  d = Uniform(a, a + 1)\n  e = d\n  plate i in N {\n    f = e\n    z ~ f\n"
     "    y ~ Normal(z, 1)\n  }\n", 'rt.sample_in_support("z", f)'),
    # a Truncated of such a value (its support meets the base's)
    ("  d = Uniform(a - 1, a + 1)\n  z ~ Truncated(d, low=0)\n",
     'rt.sample_in_support("z", rt.Truncated(d, low=0))'),
    # a mixture whose components' support follows a
    ("  c = Truncated(Normal([0.0, 2.0], 1), low=a)\n"
     "  z ~ MixtureSameFamily(Categorical(probs=[0.5, 0.5]), c)\n",
     "rt.sample_in_support("),
    # a latent loc of a GeneralizedPareto; and one with every argument data
    ("  z ~ GeneralizedPareto(a, 1, -0.5)\n",
     'rt.sample_in_support("z", dist.GeneralizedPareto(a, 1, -0.5))'),
    ("  z ~ GeneralizedPareto(0, 1, 0.1)\n",
     'rt.sample_in_support("z", dist.GeneralizedPareto(0, 1, 0.1))'),
])
def test_detection_follows_the_value(body, site):
    src = "model M(y: real[N]) {\n  a ~ Normal(0, 1)\n" + body + "}\n"
    out = ppl.compile(src, "m.bdl").source
    assert site in out and 'pyro.sample("z"' not in out


def test_a_name_whose_support_reads_data_only_is_unchanged():
    src = ppl.compile("model M(lo: real) {\n  a ~ Normal(0, 1)\n  d = Uniform(lo, lo + 1)\n"
                      "  e = Normal(a, 1)\n  z ~ d\n  w ~ e\n}\n", "m.bdl").source
    assert 'z = pyro.sample("z", d)' in src and 'w = pyro.sample("w", e)' in src


def test_truncated_of_a_value_that_follows_a_latent_is_exact():
    # a ~ U(0, 0.9), so a - 1 < 0 < a + 1: z | a ~ U(0, a + 1) exactly, a's marginal U(0, 0.9)
    fit = _nuts("model M() {\n  a ~ Uniform(0, 0.9)\n  d = Uniform(a - 1, a + 1)\n  e = d\n"
                "  z ~ Truncated(e, low=0)\n}\n")
    a, z = fit.samples["a"].numpy(), fit.samples["z"].numpy()
    w = z / (a + 1)
    assert ((w > 0) & (w < 1)).all()
    _exact(a, 0.45, 0.9 / math.sqrt(12))
    _exact(w, 0.5, 1 / math.sqrt(12))


def test_a_mixture_whose_support_follows_a_latent_matches_quadrature():
    # both components are normalised on z > a: a ~ N(0, 1), and E[z | a] is the mean of
    # 0 + mills(a) and 2 + mills(a - 2), the truncated normals' means
    fit = _nuts("model M() {\n  a ~ Normal(0, 1)\n"
                "  z ~ MixtureSameFamily(Categorical(probs=[0.5, 0.5]), "
                "Truncated(Normal([0.0, 2.0], 1), low=a))\n}\n")
    a, z = fit.samples["a"].numpy(), fit.samples["z"].numpy()
    mills = lambda x: np.exp(stats.norm.logpdf(x) - stats.norm.logsf(x))  # noqa: E731
    ez = integrate.quad(lambda x: stats.norm.pdf(x) * 0.5 * (mills(x) + 2 + mills(x - 2)),
                        -12, 12)[0]
    assert ez == pytest.approx(1.52303, abs=1e-4)
    assert (z > a).all()
    _exact(a, 0, 1)
    assert abs(z.mean() - ez) < 4 * _se(z)


def test_generalized_pareto_with_a_latent_loc_is_exact():
    # was "cannot find valid initial params"; z - a ~ GP(0, 1, -1/2) on (0, 2): mean
    # 1 / (1 - xi) = 2/3, sd 1 / ((1 - xi) sqrt(1 - 2 xi)) = sqrt(2) / 3
    fit = _nuts("model M() {\n  a ~ Normal(0, 1)\n  z ~ GeneralizedPareto(a, 1, -0.5)\n}\n")
    a, w = fit.samples["a"].numpy(), (fit.samples["z"] - fit.samples["a"]).numpy()
    assert ((w > 0) & (w < 2)).all()
    _exact(a, 0, 1)
    _exact(w, 2 / 3, math.sqrt(2) / 3)


def test_generalized_pareto_with_a_latent_shape_is_exact():
    # the shape crosses 0 (an upper end, then none): xi ~ N(0, 0.2) exactly, and z's cdf
    # at its draw, 1 - (1 + xi z)^(-1/xi), is U(0, 1)
    fit = _nuts("model M() {\n  xi ~ Normal(0, 0.2)\n  z ~ GeneralizedPareto(0, 1, xi)\n}\n")
    xi, z = fit.samples["xi"].numpy(), fit.samples["z"].numpy()
    assert (z > 0).all() and (z[xi < 0] < -1 / xi[xi < 0]).all()
    _exact(xi, 0, 0.2)
    p = 1 - (1 + xi * z) ** (-1 / xi)
    _exact(p, 0.5, 1 / math.sqrt(12))


def test_generalized_pareto_real_line_density_is_logistic():
    # z = loc + scale expm1(xi s) / xi, s = softplus(u): p(z) |dz/du| = sigmoid'(u) for
    # every shape, on either side of 0 and at 0
    with torch_defaults("cpu", "float64"):
        u = torch.tensor([-3.0, 0.0, 4.0])
        want = torch.nn.functional.logsigmoid(u) + torch.nn.functional.logsigmoid(-u)
        for xi in (-0.3, -1e-9, 0.0, 0.2):
            fn = pyro.distributions.GeneralizedPareto(torch.tensor(0.5), torch.tensor(2.0),
                                                      torch.tensor(xi))
            d = unconstrained(fn)
            t = d.transforms[0].inv
            assert torch.allclose(d.log_prob(u), want, atol=1e-10)
            assert torch.allclose(t.inv(t(u)), u, atol=1e-9)
            z = t(u)
            assert bool((z > 0.5).all())
            if xi < 0:
                assert bool((z < 0.5 - 2.0 / xi).all())
        # at xi = 0 it is the exponential's quantile: loc + scale softplus(u)
        fn = pyro.distributions.GeneralizedPareto(torch.tensor(0.5), torch.tensor(2.0),
                                                  torch.tensor(0.0))
        z = unconstrained(fn).transforms[0].inv(u)
        assert torch.allclose(z, 0.5 + 2.0 * torch.nn.functional.softplus(u))


MODE = "model T() {\n  a ~ Normal(0, 1)\n  z ~ Truncated(Normal(2, 1), low=a)\n}\n"


@pytest.mark.parametrize("method, opts", [("map", {}), ("svi", {"guide": "delta"})])
def test_map_is_the_mode_in_the_constrained_space(method, opts):
    # log p(a, z) = log phi(a) + log phi(z - 2) - log(1 - Phi(a - 2)) on z > a: at the
    # mode z = 2, and a solves a = mills(a - 2), the no-Jacobian mode of every other
    # bounded latent (with the log-Jacobian log(z - a) it was a = -0.343, z = 2.369)
    mills = lambda x: np.exp(stats.norm.logpdf(x) - stats.norm.logsf(x))  # noqa: E731
    from scipy import optimize

    a_star = optimize.brentq(lambda x: mills(x - 2) - x, -1, 1)
    assert a_star == pytest.approx(0.062743, abs=1e-5)
    fit = ppl.compile(MODE, "m.bdl").fit({}, infer=method, steps=400, lr=0.05, seed=0,
                                         dtype="float64", **opts)
    assert float(fit.samples["a"].flatten()[0]) == pytest.approx(a_star, abs=1e-3)
    assert float(fit.samples["z"].flatten()[0]) == pytest.approx(2.0, abs=1e-3)


def test_svi_keeps_the_jacobian(svi_u1):
    # on the real line logit(z - a) ~ Logistic(0, 1) (sd pi / sqrt(3) = 1.81): the guide
    # fits it (mean 0 up to SVI's noise); without the Jacobian its density there is flat,
    # the guide's scale grows without end and the ELBO is infinite by step 793
    w = (svi_u1.samples["z"] - svi_u1.samples["a"]).numpy()
    lw = np.log(w) - np.log1p(-w)
    assert abs(lw.mean()) < 0.4 and 1.3 < lw.std() < 2.0


def test_log_density_takes_the_latent_in_its_support():
    m = ppl.compile(U1, "m.bdl")
    got = m.log_density({"a": 0.3, "z": 0.9}, {})
    # log N(a; 0, 1) + log U(z; a, a + 1): no Jacobian, as for every other latent
    assert got == pytest.approx(stats.norm.logpdf(0.3) + 0.0, abs=1e-6)
    # the same as an ordinary bounded latent's, Uniform(0.3, 1.3) with data bounds
    plain = ppl.compile("model V(lo: real) {\n  a ~ Normal(0, 1)\n"
                        "  z ~ Uniform(lo, lo + 1)\n}\n", "m.bdl")
    assert got == plain.log_density({"a": 0.3, "z": 0.9}, {"lo": 0.3})
    t = ppl.compile(MODE, "m.bdl").log_density({"a": 0.5, "z": 1.7}, {})
    want = stats.norm.logpdf(0.5) + stats.norm.logpdf(1.7 - 2) - stats.norm.logsf(0.5 - 2)
    assert t == pytest.approx(want, abs=1e-5)
    with pytest.raises(ppl.BdlError, match=r"'z\$unconstrained' is the hidden draw of 'z' on "
                       r"the real line: pass 'z' itself"):
        m.log_density({"a": 0.3, "z" + SUFFIX: 0.9}, {})
