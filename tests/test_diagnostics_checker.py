"""Checker diagnostics for mistakes that used to pass ``bdl check`` or got a weak message
(the stop-22 audit): each case is the exact rendered text, so the first line
(``file:line:col: error: ...``) and every note are pinned, and one mistake is one error."""
# ruff: noqa: E501  (the expected text keeps the long lines the user sees)

import warnings

import pytest

import ppl
from ppl.pipeline import front
from ppl.runtime.data import bind

CASES = [
    pytest.param(
        """\
model M(y: real[N]) {
  k: int ~ Normal(0, 1)
  y ~ Normal(k, 1)
}
""",
        """\
model.bdl:2:6: error: 'k' is declared int but Normal is continuous
    k: int ~ Normal(0, 1)
       ^~~""",
        id="int_latent_continuous",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  mu ~ Normal("0", 1)
  y ~ Normal(mu, 1)
}
""",
        """\
model.bdl:2:15: error: 'loc' of Normal must be a number, not a string
    mu ~ Normal("0", 1)
                ^~~""",
        id="string_argument",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  a ~ Gamma(2, 1)
  y ~ Gamma(a, -1)
}
""",
        """\
model.bdl:3:16: error: rate of Gamma must be > 0, got -1
    y ~ Gamma(a, -1)
                 ^~""",
        id="literal_outside_support_positive",
    ),
    pytest.param(
        """\
model M(y: int[N]) {
  y ~ Bernoulli(1.5)
}
""",
        """\
model.bdl:2:17: error: probs of Bernoulli must be in [0, 1], got 1.5
    y ~ Bernoulli(1.5)
                  ^~~""",
        id="literal_outside_support_interval",
    ),
    pytest.param(
        """\
model M(y: real[N, K], K: int) {
  L ~ LKJCholesky(K, 2)
  y ~ MultivariateNormal(zeros(K), L)
}
""",
        """\
model.bdl:3:36: error: 'L' is a Cholesky factor (its prior is LKJCholesky), not a covariance matrix
    y ~ MultivariateNormal(zeros(K), L)
                                     ^
  note: did you mean scale_tril=L?""",
        id="cholesky_as_covariance",
    ),
    pytest.param(
        """\
model M(y: real[N], x: real[N]) {
  a ~ student_t(3, 0, 1)
  b ~ Normal(0, 1)
  y ~ poisson_log(a + b * x)
}
""",
        """\
model.bdl:2:7: error: unknown function 'student_t'
    a ~ student_t(3, 0, 1)
        ^~~~~~~~~
  note: Stan's student_t(nu, mu, sigma) is StudentT(nu, mu, sigma) here
model.bdl:4:7: error: unknown function 'poisson_log'
    y ~ poisson_log(a + b * x)
        ^~~~~~~~~~~
  note: Stan's poisson_log(eta) is Poisson(exp(eta)) here""",
        id="stan_student_t_poisson_log",
    ),
    pytest.param(
        """\
model M(y: int[N], z: int[N]) {
  mu ~ Gamma(2, 1)
  phi ~ Gamma(2, 1)
  y ~ neg_binomial_2(mu, phi)
  z ~ NegBinomial2(mu, phi)
}
""",
        """\
model.bdl:4:7: error: unknown function 'neg_binomial_2'
    y ~ neg_binomial_2(mu, phi)
        ^~~~~~~~~~~~~~
  note: Stan's neg_binomial_2(mu, phi) is GammaPoisson(phi, phi / mu) here
model.bdl:5:7: error: unknown distribution 'NegBinomial2'
    z ~ NegBinomial2(mu, phi)
        ^~~~~~~~~~~~
  note: Stan's neg_binomial_2(mu, phi) is GammaPoisson(phi, phi / mu) here""",
        id="stan_neg_binomial_2_not_Binomial",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  mu ~ Normal(mu, 1)
  y ~ Normal(mu, 1)
}
""",
        """\
model.bdl:2:15: error: 'mu' is used in its own definition
    mu ~ Normal(mu, 1)
                ^~""",
        id="self_reference",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  mu = Normal(0, 1)
  y ~ Normal(mu + 1, 1)
}
""",
        """\
model.bdl:3:14: error: operator '+' needs numbers or tensors, not a dist value
    y ~ Normal(mu + 1, 1)
               ^~
  note: 'mu' is a distribution (2:3); did you mean 'mu ~ Normal(0, 1)'?""",
        id="dist_value_in_arithmetic",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  mu ~ Normal(0, 1)
  y = Normal(mu, 1)
}
""",
        """\
model.bdl:3:3: error: 'y' is already defined
    y = Normal(mu, 1)
    ^
  note: first defined at 1:9
  note: use '~' to observe it: y ~ Normal(mu, 1)""",
        id="assign_dist_to_data",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  mu ~ Normal(mu=0, sd=1)
  y ~ Normal(mu, 1)
}
""",
        """\
model.bdl:2:15: error: Normal has no argument 'mu'
    mu ~ Normal(mu=0, sd=1)
                ^~
  note: did you mean 'loc'?
model.bdl:2:21: error: Normal has no argument 'sd'
    mu ~ Normal(mu=0, sd=1)
                      ^~
  note: did you mean 'scale'?""",
        id="stan_argument_names",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  mu ~ Normal(0, 1)
  y ~ Normal(mu, 1)
  y ~ StudentT(3, mu, 1)
}
""",
        """\
model.bdl:4:3: error: 'y' is observed twice
    y ~ StudentT(3, mu, 1)
    ^
  note: first observed at 3:3""",
        id="observed_twice",
    ),
]


def _check_errors(source: str) -> str:
    """What ``bdl check`` prints for ``source`` saved as model.bdl (it must fail)."""
    try:
        front(source, "model.bdl")
    except ppl.BdlError as e:
        return e.render()
    raise AssertionError("the check passed")


@pytest.mark.parametrize("source, expected", CASES)
def test_check_error(source, expected):
    assert _check_errors(source) == expected


@pytest.mark.parametrize("source", [
    # discrete priors on an int latent, literals inside their sets, scale_tril=L, and a
    # plate index over its own size are all still fine
    "model M(y: real[N]) {\n  k: int ~ Poisson(3)\n  y ~ Normal(k, 1)\n}\n",
    "model M(y: real[N]) {\n  a ~ Gamma(2, 0.5)\n  p ~ Beta(1, 1)\n  y ~ Normal(a, p)\n}\n",
    "model M(y: int[N]) {\n  y ~ Bernoulli(1)\n}\n",
    "model M(y: real[N, K], K: int) {\n  L ~ LKJCholesky(K, 2)\n"
    "  y ~ MultivariateNormal(zeros(K), scale_tril=L)\n}\n",
    "model M(y: real[N], J: int) {\n  a: real[N] ~ Normal(0, 1)\n"
    "  plate i in N { y ~ Normal(a[i], 1) }\n}\n",
])
def test_still_accepted(source):
    checked = front(source, "model.bdl")
    assert checked.model().deferred == []


PLATE_WRONG_SIZE = """\
model M(y: real[N], J: int) {
  a: real[J] ~ Normal(0, 1)
  plate i in N { y ~ Normal(a[i], 1) }
}
"""


def test_plate_index_over_another_size_is_a_deferred_check():
    model = ppl.compile(PLATE_WRONG_SIZE, "model.bdl")
    (chk,) = model.checked.deferred
    assert (chk.left, chk.right, chk.span.line, chk.span.col) == ("J", "N", 3, 29)
    with pytest.raises(ppl.BdlError) as e:
        model.bind({"y": [1.0, 2.0, 3.0], "J": 2})
    assert e.value.render() == """\
model.bdl:3:29: error: size mismatch between dimension 0 of 'a' indexed by 'i' and plate i in N: J = 2 but must be at least N = 3 (sizes from the data)
    plate i in N { y ~ Normal(a[i], 1) }
                              ^
  note: J is 2 from data key 'J'
  note: N is 3 from 'y' (dimension 0)"""
    kwargs = model.bind({"y": [1.0, 2.0], "J": 2})  # equal sizes bind
    assert (kwargs["N"], kwargs["J"]) == (2, 2)
    # a longer a is read a[0..N-1], as Stan's for (n in 1:N) a[n]: it binds and fits
    fit = model.fit({"y": [1.0, 2.0], "J": 3}, infer="nuts(samples=5, warmup=5, chains=1)")
    assert fit.samples["a"].shape == (5, 3)


def test_plate_wrong_size_cli_exit_status(tmp_path, bdl_here):
    (tmp_path / "m.bdl").write_text(PLATE_WRONG_SIZE)
    (tmp_path / "d.json").write_text('{"y": [1.0, 2.0, 3.0], "J": 2}')
    out = bdl_here("run", str(tmp_path / "m.bdl"), "--data", str(tmp_path / "d.json"))
    assert out.returncode == 1
    assert [ln for ln in out.stderr.splitlines() if ": error: " in ln] == [
        f"{tmp_path / 'm.bdl'}:3:29: error: size mismatch between dimension 0 of 'a' indexed "
        "by 'i' and plate i in N: J = 2 but must be at least N = 3 (sizes from the data)"]


LATENT_AS_DATA = """\
model M(x: real[N]) {
  mu ~ Normal(0, 5)
  y ~ Normal(mu + x, 1)
}
"""


def test_data_key_naming_a_latent_is_an_error_when_fitting():
    model = ppl.compile(LATENT_AS_DATA, "model.bdl")
    drawn = model.checked.drawn()
    assert drawn == {"mu": (2, 3, "mu: real"), "y": (3, 3, "y: real[N]")}
    data = {"x": [1.0, 2.0, 3.0], "y": [1.0, 2.0, 3.0]}
    with pytest.raises(ppl.BdlError) as e:
        bind(model.signature, data, source_text=LATENT_AS_DATA, drawn=drawn)
    assert e.value.render() == """\
model.bdl:3:3: error: 'y' is given as data but the model draws it
    y ~ Normal(mu + x, 1)
    ^
  note: declare 'y: real[N]' as an argument of model M to observe it"""
    # without ``drawn`` (predict, sample_prior) the key is unused, as before
    with pytest.warns(UserWarning, match=r"data keys not used by model M: y \(ignored\)"):
        kwargs = bind(model.signature, data, source_text=LATENT_AS_DATA)
    assert kwargs["N"] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bind(model.signature, {"x": [1.0]}, drawn=drawn)  # no latent given: no warning


def test_check_cli_exit_status(tmp_path, bdl_here):
    (tmp_path / "m.bdl").write_text(CASES[0].values[0])
    out = bdl_here("check", str(tmp_path / "m.bdl"))
    assert out.returncode == 1
    assert out.stderr.splitlines()[0] == (
        f"{tmp_path / 'm.bdl'}:2:6: error: 'k' is declared int but Normal is continuous")


def test_a_misspelt_bound_suggests_the_bound():
    with pytest.raises(ppl.BdlError) as e:
        ppl.compile("model M(y: real) {\n  s: real<lowr=0> ~ HalfNormal(1)\n  y ~ Normal(0, s)\n}\n",
                    "m.bdl")
    assert e.value.render().splitlines()[:4] == [
        "m.bdl:2:11: error: unknown bound 'lowr' (expected lower or upper)",
        "    s: real<lowr=0> ~ HalfNormal(1)",
        "            ^~~~",
        "  note: did you mean 'lower'?"]
    with pytest.raises(ppl.BdlError) as e:  # no knock-on "bounds do not keep it positive"
        ppl.compile("model M(y: real) {\n  s: real<lowr=0> ~ Normal(0, 1)\n"
                    "  y ~ Normal(0, s)\n}\n", "m.bdl")
    assert len(e.value.diagnostics) == 1


def test_an_int_latent_of_a_mixture_of_counts_or_a_delta_is_accepted():
    m = ppl.compile("model M() {\n  k: int ~ MixtureSameFamily(Categorical(probs=[0.5, 0.5]), "
                    "Poisson([1.0, 5.0]))\n}\n", "m.bdl")
    k = m.sample_prior({}, num_samples=200, seed=0)["k"]
    assert k.shape[0] == 200 and bool((k == k.round()).all())
    ppl.compile("model D(v: real) {\n  k: int ~ Delta(v)\n}\n", "d.bdl")  # no check error
