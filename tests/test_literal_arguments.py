"""Distributions written with literal numbers (``a ~ Delta(3.0)``): Pyro classes that need
tensors get them (``rt.Delta``), and a Delta latent is a fixed value in a fit."""

import warnings

import pytest
import torch

import ppl

# (distribution call, a value every draw must equal, or None); each was a raw Python
# exception (AttributeError/TypeError from Pyro) before, with literal arguments.
CASES = [
    ("Delta(3.0)", 3.0),
    ("Delta(3)", 3.0),
    ("Delta(-2.5)", -2.5),
    ("OrderedLogistic(0.5, [-1.0, 0.0, 1.0])", None),
    ("RelaxedBernoulli(0.5, 0.3)", None),
    ("RelaxedBernoulliStraightThrough(0.5, 0.3)", None),
    ("RelaxedOneHotCategorical(0.5, [0.2, 0.3, 0.5])", None),
    ("RelaxedOneHotCategoricalStraightThrough(0.5, [0.2, 0.3, 0.5])", None),
    ("TruncatedPolyaGamma(0.0)", None),
    ("Normal(0.5, 1.5)", None),
]


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("call,value", CASES)
def test_literal_arguments_prior_and_svi(call, value):
    m = ppl.compile(f"model M() {{\n  a ~ {call}\n}}\n")
    draws = m.sample_prior({}, num_samples=3, seed=0)["a"]
    assert draws.shape[0] == 3 and torch.isfinite(draws).all()
    fit = m.fit({}, infer="svi", steps=2, seed=0)
    if value is not None:
        assert draws.tolist() == [value] * 3
        assert (fit.samples["a"] == value).all()


def test_delta_target_is_runtime_class():
    src = ppl.compile("model M() {\n  a ~ Delta(3.0)\n}\n").source
    assert 'pyro.sample("a", rt.Delta(3.0))' in src


@pytest.mark.parametrize("call", ["OrderedLogistic(0.5, [-1.0, 0.0, 1.0])",
                                  "RelaxedBernoulli(0.5, 0.3)"])
def test_literal_arguments_nuts(call):
    m = ppl.compile(f"model M() {{\n  a ~ {call}\n  b ~ Normal(0, 1)\n}}\n")
    fit = m.fit({}, infer="nuts", samples=5, warmup=5, chains=1, seed=0)
    assert fit.samples["a"].shape[0] == 5


DATA = {"x": [1.0, 2.0, 4.0], "y": [1.5, 2.0, 3.5]}
MODEL = """
model M(x: real[3], y: real[3]) {
  mu ~ Normal(0, 10)
  c ~ Delta(0.5)
  plate i in 3 {
    a ~ Delta(x[i])
    y ~ Normal(mu + a + c, 1.0)
  }
  b: real[2] ~ Delta([1.0, 2.0])
}
"""


@pytest.mark.parametrize("method,kw", [("svi", {"steps": 2}), ("map", {"steps": 2}),
                                       ("nuts", {"samples": 5, "warmup": 5, "chains": 1})])
def test_delta_latents_are_fixed_in_a_fit(method, kw):
    """svi/map diverged at step 1 (the guide moved a Delta off v: -inf), NUTS found no
    initial point; now the Delta sites are deterministic at v in every draw."""
    fit = ppl.compile(MODEL).fit(DATA, infer=method, seed=0, **kw)
    n = fit.samples["mu"].shape[0]
    assert fit.samples["a"].tolist() == [[1.0, 2.0, 4.0]] * n
    assert fit.samples["b"].tolist() == [[1.0, 2.0]] * n
    assert fit.samples["c"].tolist() == [0.5] * n


def test_delta_latent_map_is_least_squares_of_the_rest():
    """The map of mu with a, c fixed: y - a - c = [0, -0.5, -1], prior N(0, 10):
    mu = sum(r) / (3 + 1/100) = -1.5 / 3.01. A deterministic optimisation: 300 steps at
    lr 0.1 end within 1e-6 of it (seeds 0-2), far inside the 1e-3 bound."""
    fit = ppl.compile(MODEL).fit(DATA, infer="map", steps=300, lr=0.1, seed=0)
    assert fit.samples["mu"].item() == pytest.approx(-1.5 / 3.01, abs=1e-3)


def test_keyword_only_arguments_given_by_position_are_a_check_error():
    """ZeroInflatedPoisson(rate, *, gate): by position it was Pyro's raw TypeError."""
    with pytest.raises(ppl.BdlError) as e:
        ppl.compile("model M() {\n  a ~ ZeroInflatedPoisson(3.0, 0.2)\n}\n", filename="m.bdl")
    assert e.value.render() == """\
m.bdl:2:32: error: ZeroInflatedPoisson takes at most 1 positional argument (rate), got 2
    a ~ ZeroInflatedPoisson(3.0, 0.2)
                                 ^~~
  note: give gate, gate_logits by name: ZeroInflatedPoisson(rate, gate=...)"""


def test_zero_inflated_gate_literal_is_a_tensor():
    """ZeroInflatedPoisson(3.0, gate=0.5): Pyro read gate.shape of the float."""
    m = ppl.compile("model M() {\n  a ~ ZeroInflatedPoisson(3.0, gate=1.0)\n"
                    "  b ~ ZeroInflatedNegativeBinomial(5.0, probs=0.3, gate_logits=0.0)\n}\n")
    assert "rt.ZeroInflatedPoisson(3.0, gate=1.0)" in m.source
    draws = m.sample_prior({}, num_samples=4, seed=0)
    assert draws["a"].tolist() == [0.0] * 4 and (draws["b"] >= 0).all()


def test_an_exception_without_words_is_named():
    """Pyro's bare NotImplementedError (VonMises3D has no sampler) was 'error: ' alone."""
    m = ppl.compile("model M() {\n  a ~ VonMises3D([1.0, 0.5, 0.2])\n}\n", filename="m.bdl")
    with pytest.raises(ppl.BdlError) as e:
        m.sample_prior({}, num_samples=3, seed=0)
    assert e.value.render().splitlines()[0] == (
        "m.bdl:2:3: error: VonMises3D.rsample is not implemented in Pyro")


def test_a_one_hot_latent_is_refused_when_a_fit_starts():
    """OneHotCategorical as a latent: the fit summed it out and Pyro's infer_discrete
    then failed on its event dim (a raw ValueError); the prior still runs."""
    m = ppl.compile("model M() {\n  a ~ OneHotCategorical([0.2, 0.3, 0.5])\n}\n",
                    filename="m.bdl")
    assert m.sample_prior({}, num_samples=2, seed=0)["a"].sum(-1).tolist() == [1.0, 1.0]
    with pytest.raises(ppl.BdlError) as e:
        m.fit({}, infer="svi", steps=2, seed=0)
    assert e.value.render().splitlines()[0] == (
        "m.bdl:2:7: error: 'a' is a discrete latent whose values are vectors "
        "(OneHotCategorical): Pyro cannot draw them from the posterior after summing them out")


def test_a_delta_of_a_latent_passes_the_gradient_to_it():
    # a ~ Delta(2 * b): the fit records a at 2 * b, and the likelihood's gradient reaches
    # b through it (with fn.sample() it was cut: map left b at 0, svi at its prior)
    m = ppl.compile("model D(y: real[N]) {\n  b ~ Normal(0, 10)\n  a ~ Delta(2.0 * b)\n"
                    "  plate N {\n    y ~ Normal(a, 1)\n  }\n}\n", "d.bdl")
    f = m.fit({"y": [5.8, 6.1, 6.0, 5.9, 6.2]}, infer="map", steps=500, lr=0.05, seed=0)
    b = float(f.samples["b"][0])
    assert abs(b - 60 / 20.01) < 1e-3  # argmax: 2 sum(y) / (4 N + 1 / 100)
    assert abs(float(f.samples["a"][0]) - 2 * b) < 1e-6
