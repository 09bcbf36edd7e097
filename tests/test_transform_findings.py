"""Transform findings of an exact check of NUTS's potential against
``-log p(T(u)) - log|J_T(u)|``), each tested against a hand-computed value:

1. A latent ``MixtureSameFamily`` whose components share one support (real, positive,
   an interval with the same ends) is sampled on it (was 'Cannot transform
   MixtureSameFamilyConstraint constraints' in every method).
2. Components whose supports differ (``Uniform([a, a + 2], [a + 1, a + 3])``): the
   density is the log-sum over the components that hold the value (0 in a gap, not a
   value error), and the latent is mapped onto the hull of the supports.
3. A declared bound that follows a latent and misses the prior's support is density 0
   (NUTS's potential +inf, log_density -inf), never a run-time error; a data bound's is.
4. ``positive_ordered`` is Stan's ``z = cumsum(exp(u))`` (Pyro's ``exp(ordered(u))``
   overflowed), in models and guides.
5. A GeneralizedPareto latent's density on the real line in closed form (``u`` is
   Logistic(0, 1)): finite where ``z`` rounds onto the upper end of a shape below -1.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.mcmc.util import initialize_model
from torch.distributions import biject_to

import ppl
import ppl.infer.run as run_module
import ppl.runtime as rt
from ppl.runtime.dependent_support import unconstrained
from ppl.syntax.diagnostics import BdlError

Y = [0.3, -0.2, 1.1]
LOG2PI = math.log(2 * math.pi)


def _normal_lp(x, mu, s=1.0):
    return -0.5 * ((x - mu) / s) ** 2 - math.log(s) - 0.5 * LOG2PI


def _lik(z):
    return sum(_normal_lp(y, z) for y in Y)


class _Stop(Exception):
    pass


def _potential(m, data, monkeypatch):
    """NUTS's own potential function for ``m`` (the kernel ``fit`` builds)."""
    got = {}

    class FakeMCMC:
        def __init__(self, kernel, **kw):
            got["kernel"] = kernel

        def run(self, **kwargs):
            got["kwargs"] = kwargs
            raise _Stop()

    monkeypatch.setattr(run_module, "MCMC", FakeMCMC)
    with pytest.raises(_Stop):
        m.fit(data, infer="nuts(samples=1, warmup=1, chains=1, seed=0)")
    k = got["kernel"]
    _, pot, _, _ = initialize_model(k.model, model_kwargs=got["kwargs"])
    return lambda **v: float(pot({n: torch.tensor(x, dtype=torch.float64) for n, x in v.items()}))


# ---- 1. components that share one support ----

@pytest.mark.parametrize("comp, support", [
    ("Normal([a, a + 2], 1)", "real"), ("Gamma([2.0, 5.0], [1.0, 2.0])", "positive"),
    ("LogNormal([a, a + 1], 1)", "positive")])
def test_a_mixture_of_one_support_is_a_latent_of_it(comp, support):
    m = ppl.compile(f"""model M(y: real[N]) {{
  a ~ Normal(0, 1)
  z ~ MixtureSameFamily(Categorical(probs=[0.3, 0.7]), {comp})
  y ~ Normal(z, 1)
}}""")
    fit = m.fit({"y": Y}, infer="map(steps=30, seed=0)")
    z = float(fit.samples["z"].reshape(-1)[0])
    assert math.isfinite(z) and (support == "real" or z > 0)
    # the density is torch's mixture density at a value inside every component
    lp = m.log_density({"a": 0.5, "z": 1.25}, {"y": Y})
    if comp.startswith("Normal"):
        want = math.log(0.3 * math.exp(_normal_lp(1.25, 0.5))
                        + 0.7 * math.exp(_normal_lp(1.25, 2.5)))
    elif comp.startswith("Gamma"):
        want = math.log(0.3 * math.exp(dist.Gamma(2.0, 1.0).log_prob(torch.tensor(1.25)).item())
                        + 0.7 * math.exp(dist.Gamma(5.0, 2.0).log_prob(torch.tensor(1.25)).item()))
    else:
        def lnp(mu):
            return _normal_lp(math.log(1.25), mu) - math.log(1.25)
        want = math.log(0.3 * math.exp(lnp(0.5)) + 0.7 * math.exp(lnp(1.5)))
    assert lp == pytest.approx(_normal_lp(0.5, 0.0) + want + _lik(1.25), abs=1e-4)


def test_a_shared_support_is_the_components_own():
    mix = dist.Categorical(probs=torch.tensor([0.3, 0.7]))
    d = rt.MixtureSameFamily(mix, dist.Uniform(torch.tensor([0.0, 0.0]),
                                               torch.tensor([2.0, 2.0])))
    s = d.support
    assert float(s.lower_bound) == 0.0 and float(s.upper_bound) == 2.0
    assert float(biject_to(s)(torch.tensor(0.0))) == pytest.approx(1.0)
    assert rt.MixtureSameFamily(mix, dist.Gamma(torch.tensor([2.0, 5.0]), 1.0)).support \
        is dist.Gamma(2.0, 1.0).support


def test_the_potential_of_a_mixture_of_normals_is_exact(monkeypatch, float64):
    m = ppl.compile("""model M(y: real[N]) {
  a ~ Normal(0, 1)
  z ~ MixtureSameFamily(Categorical(probs=[0.3, 0.7]), Normal([a, a + 2], 1))
  y ~ Normal(z, 1)
}""")
    pot = _potential(m, {"y": Y}, monkeypatch)
    a, z = 0.4, -0.7
    mix = math.log(0.3 * math.exp(_normal_lp(z, a)) + 0.7 * math.exp(_normal_lp(z, a + 2)))
    assert pot(a=a, z=z) == pytest.approx(-(_normal_lp(a, 0) + mix + _lik(z)), abs=1e-9)


# ---- 2. components whose supports differ ----

MIX_U = """model M(y: real[N]) {
  a ~ Normal(0, 1)
  z ~ MixtureSameFamily(Categorical(probs=[0.3, 0.7]), Uniform([a, a + 2], [a + 1, a + 3]))
  y ~ Normal(z, 1)
}"""


@pytest.mark.parametrize("z, want", [(0.5, math.log(0.3)), (2.5, math.log(0.7)),
                                     (1.5, -math.inf)])
def test_a_mixture_of_uniforms_is_the_union_of_their_densities(z, want):
    m = ppl.compile(MIX_U)
    lp = m.log_density({"a": 0.0, "z": z}, {"y": Y})
    assert lp == pytest.approx(_normal_lp(0.0, 0) + want + _lik(z), abs=1e-4)
    m2 = ppl.compile("""model M(y: real[N]) {
  z ~ MixtureSameFamily(Categorical(probs=[0.3, 0.7]), Uniform([0., 2.], [1., 3.]))
  y ~ Normal(z, 1)
}""")
    assert m2.log_density({"z": z}, {"y": Y}) == pytest.approx(want + _lik(z), abs=1e-4)
    with pytest.raises(BdlError, match=r"'z' is 3.5; MixtureSameFamily is over numbers in "
                                       r"\[0, 3\]"):
        m2.log_density({"z": 3.5}, {"y": Y})  # outside the hull


def test_overlapping_components_add_their_mass():
    d = rt.MixtureSameFamily(dist.Categorical(probs=torch.tensor([0.3, 0.7])),
                             dist.Uniform(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0])),
                             validate_args=True)
    got = d.log_prob(torch.tensor([0.5, 1.5, 2.5]))
    want = [math.log(0.3 / 2), math.log(0.3 / 2 + 0.7 / 2), math.log(0.7 / 2)]
    assert got.tolist() == pytest.approx(want, abs=1e-6)
    with pyro.validation_enabled(True), pytest.raises(ValueError):
        d.log_prob(torch.tensor(3.5))  # outside the hull: still refused


def test_a_latent_of_differing_supports_is_mapped_onto_the_hull(monkeypatch, float64):
    pot = _potential(ppl.compile(MIX_U), {"y": Y}, monkeypatch)
    a = 0.25
    for u, want in ((-2.0, math.log(0.3)), (1.5, math.log(0.7)), (0.0, None)):
        z = a + 3 / (1 + math.exp(-u))
        log_j = math.log(3) - math.log1p(math.exp(-u)) - math.log1p(math.exp(u))
        got = pot(**{"a": a, "z$unconstrained": u})
        if want is None:  # z = a + 1.5, in the gap
            assert got == math.inf
        else:
            assert got == pytest.approx(-(_normal_lp(a, 0) + want + log_j + _lik(z)),
                                        abs=1e-9)


@pytest.mark.parametrize("infer", ["map(steps=20, seed=0)", "svi(steps=20, seed=0)",
                                   "nuts(samples=20, warmup=20, chains=1, seed=0)"])
def test_overlapping_uniform_components_fit(infer):
    m = ppl.compile("""model M(y: real[N]) {
  a ~ Normal(0, 1)
  z ~ MixtureSameFamily(Categorical(probs=[0.3, 0.7]), Uniform([a, a + 0.5], [a + 1, a + 2]))
  y ~ Normal(z, 1)
}""")
    fit = m.fit({"y": Y}, infer=infer)
    a, z = fit.samples["a"].reshape(-1), fit.samples["z"].reshape(-1)
    assert bool(((z >= a) & (z <= a + 2)).all())


# ---- 3. a declared bound that follows a latent and misses the support ----

BETA_UPPER = """model M(y: real[N]) {
  a ~ Normal(0.5, 1)
  z: real<upper=a> ~ Beta(2, 2)
  y ~ Normal(z, 1)
}"""


def test_an_empty_set_from_a_latent_bound_is_density_zero(monkeypatch, float64):
    m = ppl.compile(BETA_UPPER)
    pot = _potential(m, {"y": Y}, monkeypatch)
    assert pot(**{"a": -0.5, "z$unconstrained": 0.0}) == math.inf
    # a = 0.6: z = 0.6 sigmoid(u) in (0, 0.6), Beta(2, 2)'s density 6 z (1 - z)
    a, u = 0.6, 0.3
    z = a / (1 + math.exp(-u))
    log_j = math.log(a) - math.log1p(math.exp(-u)) - math.log1p(math.exp(u))
    want = _normal_lp(a, 0.5) + math.log(6 * z * (1 - z)) + log_j + _lik(z)
    assert pot(**{"a": a, "z$unconstrained": u}) == pytest.approx(-want, abs=1e-9)
    assert m.log_density({"a": -0.5, "z": 0.25}, {"y": Y}) == -math.inf
    assert m.log_density({"a": 0.5, "z": 0.25}, {"y": Y}) == pytest.approx(
        _normal_lp(0.5, 0.5) + math.log(6 * 0.25 * 0.75) + _lik(0.25), abs=1e-4)


@pytest.mark.parametrize("seed", [0, 1])
def test_nuts_starts_where_a_latent_bound_meets_the_support(seed):
    # a's prior puts 31% below 0, where z's set is empty: the start draws again
    fit = ppl.compile(BETA_UPPER).fit(
        {"y": Y}, infer=f"nuts(samples=20, warmup=20, chains=1, seed={seed})")
    a, z = fit.samples["a"].reshape(-1), fit.samples["z"].reshape(-1)
    assert bool(((z > 0) & (z < 1) & (z < a)).all())


def test_a_lower_bound_above_the_support_is_density_zero():
    m = ppl.compile("""model M(y: real[N]) {
  a ~ Normal(0, 1)
  z: real<lower=a> ~ Uniform(-1, 1)
  y ~ Normal(z, 1)
}""")
    assert m.log_density({"a": 1.5, "z": 0.5}, {"y": Y}) == -math.inf
    assert m.log_density({"a": 0.0, "z": 0.5}, {"y": Y}) == pytest.approx(
        _normal_lp(0.0, 0) + math.log(0.5) + _lik(0.5), abs=1e-4)


def test_a_data_bound_that_misses_the_support_is_still_an_error():
    m = ppl.compile("""model M(y: real[N], H: real) {
  z: real<upper=H> ~ Beta(2, 2)
  y ~ Normal(z, 1)
}""")
    with pytest.raises(Exception, match="have no value in common"):
        m.fit({"y": Y, "H": -0.5}, infer="map(steps=2, seed=0)")


# ---- 4. positive_ordered: Stan's map z = cumsum(exp(u)) ----

def test_positive_ordered_is_stans_cumsum_of_exp(monkeypatch, float64):
    m = ppl.compile("""model M(y: real[N]) {
  mu: positive_ordered[3] ~ Normal(0, 2)
  y ~ Normal(mu, 1)
}""")
    assert "rt.positive_ordered" in m.source
    pot = _potential(m, {"y": Y}, monkeypatch)
    u = [0.0, 6.6, 0.5]  # Pyro's exp(ordered(u)) is exp(1 + e^6.6) there: inf, NaN potential
    z = [1.0, 1.0 + math.exp(6.6), 1.0 + math.exp(6.6) + math.exp(0.5)]
    want = sum(_normal_lp(zk, 0, 2) + _normal_lp(y, zk)
               for zk, y in zip(z, Y, strict=True)) + sum(u)
    assert pot(mu=u) == pytest.approx(-want, rel=1e-12)
    # Pyro's own constraint keeps Pyro's map for other users
    assert not isinstance(biject_to(dist.constraints.positive_ordered_vector),
                          type(biject_to(rt.positive_ordered)))


def test_a_guides_positive_ordered_draw_follows_the_same_map(float64):
    m = ppl.compile("""model M(y: real[N]) {
  mu: positive_ordered[2] ~ Normal(0, 2)
  y ~ Normal(mu[1], 1)
}
guide M {
  param m: real[2] = 0
  mu: positive_ordered[2] ~ Normal(m, 1)
}""")
    assert "constraints.positive_ordered_vector" not in m.source
    q = rt.transformed(dist.Normal(torch.tensor([0.2, -0.3]), 1.0).to_event(1),
                       rt.positive_ordered)
    z = torch.tensor([0.5, 2.0])
    u = [math.log(0.5), math.log(1.5)]  # log of the increments
    want = _normal_lp(u[0], 0.2) + _normal_lp(u[1], -0.3) - sum(u)
    assert float(q.log_prob(z)) == pytest.approx(want, abs=1e-12)
    fit = m.fit({"y": Y}, infer="svi(steps=20, seed=0)")
    mu = fit.samples["mu"].reshape(-1, 2)
    assert bool(((mu[:, 0] > 0) & (mu[:, 1] > mu[:, 0])).all())


# ---- 5. GeneralizedPareto with a shape below -1: z rounds onto the upper end ----

@pytest.mark.parametrize("xi, u", [(-1.5, 25.0), (-1.01, 37.0), (-0.5, 3.0), (0.3, -2.0)])
def test_a_pareto_latent_is_logistic_on_the_real_line(monkeypatch, float64, xi, u):
    m = ppl.compile(f"""model M(y: real[N]) {{
  z ~ GeneralizedPareto(0, 1, {xi})
  y ~ Normal(z, 1)
}}""")
    pot = _potential(m, {"y": Y}, monkeypatch)
    s = math.log1p(math.exp(u))
    z = math.expm1(xi * s) / xi
    # u is Logistic(0, 1): log p(z) + log|t'(u)| = logsigmoid(u) - softplus(u)
    want = -math.log1p(math.exp(-u)) - s + _lik(z)
    got = pot(**{"z$unconstrained": u})
    assert got == pytest.approx(-want, abs=1e-9)
    if (xi, u) == (-1.5, 25.0):
        assert got == pytest.approx(28.2935, abs=1e-4)  # was -inf (1.01, 37: NaN)


def test_a_pareto_point_estimate_reads_its_density_in_closed_form(float64):
    # map's density leaves the Jacobian out: log p(t(u)) = -log(scale) - (1 + xi) s,
    # exact where z rounds onto the end (1 + xi y = exp(xi s) = 3e-17 below)
    fn = dist.GeneralizedPareto(torch.tensor(0.0), torch.tensor(2.0), torch.tensor(-23.4))
    d = unconstrained(fn, jacobian=False)
    u = torch.tensor(1.4)
    s = math.log1p(math.exp(1.4))
    assert float(d.log_prob(u)) == pytest.approx(-math.log(2.0) + 22.4 * s, abs=1e-9)
    # a vector of them (Independent) sums its elements
    fv = fn.expand([2]).to_event(1)
    uv = torch.tensor([1.4, -0.5])
    want = sum(-math.log1p(math.exp(-x)) - math.log1p(math.exp(x)) for x in (1.4, -0.5))
    assert float(unconstrained(fv).log_prob(uv)) == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("declared, value, words", [
    ("c: ordered[3] ~ Normal(0, 2)", [2.0, 1.0, 3.0], "(vectors whose entries increase)"),
    ("c: positive_ordered[3] ~ Normal(0, 2)", [2.0, 1.0, 3.0],
     "(vectors of numbers > 0 whose entries increase)"),
    ("c: real<lower=0> ~ Normal(0, 2)", -1.0, "(numbers > 0)"),
    ("c: real<lower=0, upper=1>[2] ~ Normal(0, 2)", [0.5, 1.5], "(numbers in [0, 1])"),
])
def test_log_density_refuses_a_value_outside_its_declared_set(declared, value, words):
    """A declared set is not validated by torch (rt.Restricted), so log_density gave a
    finite number at c = [2, 1, 3] for an ordered c (-22.63) or -1 for a positive one;
    inside the set it is the density as before: N(c; 0, 2) summed plus N(0.5; sum c, 1)."""
    m = ppl.compile(f"model M(y: real) {{ {declared}; y ~ Normal(sum(c), 1) }}")
    with pytest.raises(ppl.BdlError) as e:
        m.log_density({"c": value}, {"y": 0.5})
    assert "outside its declared set " + words in str(e.value)
    good = [1.0, 2.0, 3.0] if "ordered" in declared else (1.0 if "[2]" not in declared
                                                           else [0.5, 0.25])
    c = torch.as_tensor(good, dtype=torch.float64)
    want = float(torch.distributions.Normal(0.0, 2.0).log_prob(c).sum()
                 + torch.distributions.Normal(c.sum(), 1.0).log_prob(torch.tensor(0.5)))
    assert float(m.log_density({"c": good}, {"y": 0.5})) == pytest.approx(want, rel=1e-6)
