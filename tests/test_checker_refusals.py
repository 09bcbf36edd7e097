"""Checker refusals found by fuzzing and by porting Pyro models: models that passed ``bdl
check`` and then stopped with a raw Python error, or got a weak message. Each error case
is the exact rendered text (``file:line:col: error: ...`` and every note)."""
# ruff: noqa: E501  (the expected text keeps the long lines the user sees)

import math

import pytest
from test_diagnostics_checker import _check_errors

import ppl
from ppl.pipeline import front

# ---- 1. a model name spelt like a built-in does not shadow the built-in -------------
SHADOW = """\
model M(y: real[N]) {
  mu ~ Normal(0, 1)
  s = exp(mu)
  exp ~ Normal(0, 1)
  sd ~ HalfNormal(1)
  t = exp(sd)
  y ~ Normal(mu, s)
}
"""


def test_a_latent_named_like_a_builtin_leaves_the_builtin_callable():
    # was UnboundLocalError: 'exp' (the call before `exp ~` read the latent)
    model = ppl.compile(SHADOW, "model.bdl")
    fit = model.fit({"y": [1.0, 2.0]}, infer="map(steps=2)")
    s = fit.samples
    assert math.isclose(float(s["s"][0]), math.exp(float(s["mu"][0])), rel_tol=1e-6)
    assert math.isclose(float(s["t"][0]), math.exp(float(s["sd"][0])), rel_tol=1e-6)
    assert set(s) >= {"exp", "sd"}


def test_a_network_named_like_a_builtin_is_called_from_its_definition_on():
    source = """\
model M(x: real[N, 1], y: real[N]) {
  a = exp(x)
  exp = mlp(1, [2], 1)
  y ~ Normal(exp(x)[:, 0] + a[:, 0], 1)
}
"""
    code = ppl.compile(source, "model.bdl").source
    assert "a = torch.exp(x)" in code
    assert "exp(x)[:, 0] + a[:, 0]" in code and "torch.exp(x)[:, 0]" not in code


# ---- error cases: the exact text -----------------------------------------------------
CASES = [
    pytest.param(  # 2. was AttributeError: 'int' object has no attribute 'dim'
        """\
model M(y: real[N]) {
  y ~ MultivariateNormal(0, 1)
}
""",
        """\
model.bdl:2:26: error: 'loc' of MultivariateNormal must be a vector, not a number
    y ~ MultivariateNormal(0, 1)
                           ^
  note: MultivariateNormal's loc is a vector (one value per element) for each draw, and a number is not broadcast to one: loc=zeros(K) for K elements
model.bdl:2:29: error: 'covariance_matrix' of MultivariateNormal must be a matrix, not a number
    y ~ MultivariateNormal(0, 1)
                              ^
  note: MultivariateNormal's covariance_matrix is a K x K matrix for each draw, and a number is not broadcast to one: covariance_matrix=eye(K)""",
        id="mvn_of_numbers",
    ),
    pytest.param(
        """\
model M(y: real[N], K: int) {
  a ~ Wishart(3, 1)
  L ~ MultivariateNormal(zeros(K), scale_tril=zeros(K))
  p ~ Dirichlet(1)
  y ~ Normal(0, 1)
}
""",
        """\
model.bdl:2:18: error: 'covariance_matrix' of Wishart must be a matrix, not a number
    a ~ Wishart(3, 1)
                   ^
  note: Wishart's covariance_matrix is a K x K matrix for each draw, and a number is not broadcast to one: covariance_matrix=eye(K)
model.bdl:3:47: error: 'scale_tril' of MultivariateNormal must be a matrix, not a vector [K]
    L ~ MultivariateNormal(zeros(K), scale_tril=zeros(K))
                                                ^~~~~~~~
  note: MultivariateNormal's scale_tril is a K x K matrix for each draw, and a vector is not broadcast to one: scale_tril=eye(K)
model.bdl:4:17: error: 'concentration' of Dirichlet must be a vector, not a number
    p ~ Dirichlet(1)
                  ^
  note: Dirichlet's concentration is a vector (one value per element) for each draw, and a number is not broadcast to one: concentration=ones(K) for K elements""",
        id="matrix_and_vector_parameters",
    ),
    pytest.param(
        """\
model M(y: int[N, K], z: int[N]) {
  y ~ Multinomial(10, 0.5)
  plate i in N { z ~ Categorical(y[i, 0]) }
}
""",
        """\
model.bdl:2:23: error: 'probs' of Multinomial must be a vector, not a number
    y ~ Multinomial(10, 0.5)
                        ^~~
  note: Multinomial's probs is a vector (one value per element) for each draw, and a number is not broadcast to one: probs=ones(K) / K for K elements
model.bdl:3:34: error: 'probs' of Categorical must be a vector, not a number
    plate i in N { z ~ Categorical(y[i, 0]) }
                                   ^~~~~~~
  note: Categorical's probs is a vector (one value per element) for each draw, and a number is not broadcast to one: probs=ones(K) / K for K elements""",
        id="simplex_of_a_number_in_a_plate",
    ),
    pytest.param(  # 3. Pyro refused these only when the fit started
        """\
model M(y: real[N]) {
  u ~ Uniform(2.5, 1)
  L ~ LKJCholesky(0, 2.5)
  phi: real<lower=1, upper=1> ~ Uniform(-1, 1)
  y ~ Normal(phi + u, 1)
}
""",
        """\
model.bdl:2:20: error: high of Uniform must be > low (2.5), got 1
    u ~ Uniform(2.5, 1)
                     ^
  note: Uniform(low, high) draws from low to high
model.bdl:3:19: error: dim of LKJCholesky must be a whole number >= 2 (the matrices are dim x dim), got 0
    L ~ LKJCholesky(0, 2.5)
                    ^
model.bdl:4:28: error: a drawn value needs bounds with room between them: lower and upper are both 1, so it could only be 1
    phi: real<lower=1, upper=1> ~ Uniform(-1, 1)
                             ^
  note: a constant is a value: name = 1""",
        id="literal_arguments_and_bounds",
    ),
    pytest.param(  # 9. was "quantile() input tensor must be non-empty", unlocated
        """\
model M(x: real[N]) {
  z: real[0] ~ Normal(0, 1)
  w ~ Normal(x[:0], 1)
}
""",
        """\
model.bdl:2:6: error: 'z' has no elements (shape [0]): a latent needs at least one
    z: real[0] ~ Normal(0, 1)
       ^~~~~~~
  note: drop it, or give it a size of at least 1
model.bdl:3:3: error: 'w' has no elements (shape [0]): a latent needs at least one
    w ~ Normal(x[:0], 1)
    ^
  note: drop it, or give it a size of at least 1""",
        id="zero_size_latent",
    ),
    pytest.param(  # 4. were torch's IndexError / RuntimeError when the model ran
        """\
model M(y: real[N], x: real[N, K]) {
  a = sum(y, dim=1)
  b = cat([x, y])
  c = outer(2.0, 3.0)
  d = cat([x, x], dim=2)
  e: real[99999999999999999999] ~ Normal(0, 1)
  y ~ Normal(a + b[0, 0] + c[0, 0] + d[0, 0], 1)
}
""",
        """\
model.bdl:2:18: error: dim=1 is out of range for 'y' of shape [N]: sum takes a dim from -1 to 0
    a = sum(y, dim=1)
                   ^
  note: dims count from 0 on the left, from -1 on the right
model.bdl:3:15: error: cat joins values with the same number of dimensions, but 'x' is [N, K] and 'y' is [N]
    b = cat([x, y])
                ^
  note: stack([...]) joins values as a new dimension; cat joins them along one they all have
model.bdl:4:13: error: outer takes two vectors, but its first argument is a number
    c = outer(2.0, 3.0)
              ^~~
  note: the product of numbers is a * b
model.bdl:5:23: error: dim=2 is out of range for values of shape [N, K]: cat takes a dim from -2 to 1
    d = cat([x, x], dim=2)
                        ^
  note: dims count from 0 on the left, from -1 on the right
model.bdl:6:11: error: the size 99999999999999999999 is more than a tensor dimension can hold (9223372036854775807)
    e: real[99999999999999999999] ~ Normal(0, 1)
            ^~~~~~~~~~~~~~~~~~~~""",
        id="builtin_shapes_and_a_size_too_large",
    ),
    pytest.param(  # 8. were TypeError (must be real number, not MLP) / AttributeError
        """\
model M(x: real[N, 1], y: real[N], pixels: real[N, 4]) {
  f = mlp(1, [4], 1)
  z = cat([f, 2.0])
  m = monotone_dbm(visible=categorical(4, 3), hidden=[categorical(4, 3)])
  m ~ niw_meta(n0=1, gamma0=1e6, sgld_steps=1)
  pixels ~ m.visible
  y ~ Normal(f(x)[:, 0], 1)
}
""",
        """\
model.bdl:3:12: error: cat joins numbers and tensors, not a network value
    z = cat([f, 2.0])
             ^
  note: a network's output is a tensor: f(x)
model.bdl:5:3: error: niw_meta is a prior on a network's weights, and 'm' is a monotone_dbm value, not a network
    m ~ niw_meta(n0=1, gamma0=1e6, sgld_steps=1)
    ^
  note: a weight prior takes a network made by mlp or cnn: m = mlp(...), then m ~ niw_meta(...)""",
        id="wrong_kind_for_a_tensor_or_a_network",
    ),
    pytest.param(  # 5. was "'k' is already defined; first defined at 1:9"
        """\
model B(y: real[k], k: int) {
  k ~ Poisson(3)
  y ~ Normal(0, 1)
}
""",
        """\
model.bdl:2:3: error: 'k' is a size, so '~' cannot observe it
    k ~ Poisson(3)
    ^
  note: it is named in the shape of 'y' at 1:9
  note: a size is fixed by the data; to observe its value too, give it again as another argument (k_obs: int) and write k_obs ~ ...""",
        id="a_size_observed",
    ),
    pytest.param(  # 6. were two errors each (no such attribute / 'dist' is not defined,
        # then "only named functions, distributions and networks can be called")
        """\
model M(y: real[N], w: real[N], m: bool[N]) {
  mu ~ dist.Normal(0, 1)
  y ~ Normal(mu, 1).to_event(1)
  a ~ Normal(0, 1).expand([3])
  b = a[2]
  w ~ Normal(mu, 1).mask(m)
}
""",
        """\
model.bdl:2:8: error: 'dist.Normal' is Pyro's spelling: BDL names distributions without the 'dist.' prefix
    mu ~ dist.Normal(0, 1)
         ^~~~~~~~~~~
  note: write Normal(...)
model.bdl:3:7: error: '.to_event(...)' is Pyro's; BDL infers a distribution's event dims from the shapes of the value and its parameters
    y ~ Normal(mu, 1).to_event(1)
        ^~~~~~~~~~~~~~~~~~~~~~
  note: drop it: ~ Normal(mu, 1)
model.bdl:4:7: error: '.expand(...)' is Pyro's; BDL takes a latent's shape from its declaration or its parameters
    a ~ Normal(0, 1).expand([3])
        ^~~~~~~~~~~~~~~~~~~
  note: declare the shape instead: a: real[K] ~ Normal(0, 1)
model.bdl:6:7: error: '.mask(...)' is Pyro's; BDL has no masks
    w ~ Normal(mu, 1).mask(m)
        ^~~~~~~~~~~~~~~~~~
  note: write the masked density as a factor: factor(sum(where(m, log_prob(Normal(mu, 1), w), 0.0)))""",
        id="pyro_spellings",
    ),
    pytest.param(  # 7. the note points to scan's forward pass
        """\
model H(y: real[T]) {
  A: real[2, 2] ~ Dirichlet(ones(2))
  plate t in T {
    z ~ Categorical(A[z[t - 1]])
  }
  y ~ Normal(0, 1)
}
""",
        """\
model.bdl:4:23: error: 'z' is used in its own definition
      z ~ Categorical(A[z[t - 1]])
                        ^
  note: a plate is not a loop: its elements are drawn at once, so z[t] cannot read z[t - 1]; a recursion over steps is scan(f, init, xs) (docs: Recursions)
  note: a Markov chain of labels is summed out by its forward pass: alpha = scan((a, r) => logsumexp(a + transpose(logA)) + log_prob(Normal(m, 1), r), logpi + log_prob(Normal(m, 1), y[0]), y[1:]), then factor(logsumexp(alpha[-1]))""",
        id="markov_chain_in_a_plate",
    ),
]


@pytest.mark.parametrize("source, expected", CASES)
def test_check_error(source, expected):
    assert _check_errors(source) == expected


@pytest.mark.parametrize("source", [
    # the right ranks, in and out of plates, still check
    "model M(y: real[N, K], mu: real[N, K]) {\n"
    "  plate i in N { y ~ MultivariateNormal(mu[i], eye(K)) }\n}\n",
    "model M(y: real[N, K], K: int) {\n  L ~ LKJCholesky(K, 2)\n  W ~ Wishart(K + 1, eye(K))\n"
    "  y ~ MultivariateNormal(zeros(K), scale_tril=L)\n}\n",
    "model M(y: int[N], K: int) {\n  p ~ Dirichlet(ones(K))\n  y ~ Categorical(p)\n}\n",
    "model M(y: real[N], x: real[N, K]) {\n  a = sum(x, dim=-2) + sum(y, 0) + sum(2.0, dim=-1)\n"
    "  b = cat([x, x], dim=1) + outer(y, y)[:, :K]\n  y ~ Normal(sum(a) + sum(b), 1)\n}\n",
    # the forward pass the Markov-chain note gives
    "model H(y: real[T]) {\n  A: real[2, 2] ~ Dirichlet(ones(2))\n  m: real[2] ~ Normal(0, 5)\n"
    "  logA = log(A)\n  logpi = log(ones(2) / 2)\n  alpha = scan((a, r) => logsumexp(a + "
    "transpose(logA)) + log_prob(Normal(m, 1), r), logpi + log_prob(Normal(m, 1), y[0]), "
    "y[1:])\n  factor(logsumexp(alpha[-1]))\n}\n",
    "model M(y: real[N]) {\n  u ~ Uniform(-1, 1)\n  L ~ LKJ(2, 1)\n"
    "  phi: real<lower=-2, upper=-1.5> ~ Uniform(-2, -1.5)\n  y ~ Normal(phi + u, 1)\n}\n",
])
def test_still_accepted(source):
    front(source, "model.bdl")


def test_a_latent_sized_zero_by_the_data_is_refused_at_binding():
    source = """\
model M(y: real[N], K: int) {
  z: real[K] ~ Normal(0, 1)
  y ~ Normal(sum(z), 1)
}
"""
    model = ppl.compile(source, "model.bdl")
    with pytest.raises(ppl.BdlError) as e:
        model.fit({"y": [1.0, 2.0], "K": 0}, infer="map(steps=1)")
    assert e.value.render() == """\
model.bdl:2:3: error: latent 'z' has no elements: real[K] with K = 0 (sizes from the data)
    z: real[K] ~ Normal(0, 1)
    ^
  note: K is 0 from data key 'K'
  note: a latent needs at least one element: give the size a value of at least 1, or leave the latent out"""
    assert model.bind({"y": [1.0, 2.0], "K": 1}, drawn=model.checked.drawn())["K"] == 1


@pytest.mark.parametrize("value, said", [(1e309, "must be an integer, got inf"),
                                         (2.5, "must be an integer, got 2.5"),
                                         (1e20, "is 100000000000000000000, more than a "
                                                  "tensor dimension can hold "
                                                  "(9223372036854775807)")])
def test_a_size_data_key_that_is_no_size_names_the_key(value, said):
    # 1e309 was OverflowError (exit 3); the errors had no line (model.bdl: error: ...)
    model = ppl.compile("model M(y: real[J]) {\n  y ~ Normal(0, 1)\n}\n", "model.bdl")
    with pytest.raises(ppl.BdlError) as e:
        model.bind({"J": value, "y": [1.0, 2.0]})
    assert e.value.render() == f"""\
model.bdl:1:9: error: size 'J' (data key 'J') {said}
  model M(y: real[J]) {{
          ^"""


def test_a_scalar_int_argument_observed_by_a_tilde_is_data():
    # Stan's int k; k ~ binomial(n, p): was "'k' is already defined" (k was a size)
    source = "model B(n: int, k: int) {\n  p ~ Beta(1, 1)\n  k ~ Binomial(n, p)\n}\n"
    model = ppl.compile(source, "model.bdl")
    assert model.checked.symbols["k"].role == "data"
    assert model.checked.sizes == ["n"]
    # log C(10, 7) + 7 log 0.3 + 3 log 0.7, the Beta(1, 1) prior's log density being 0
    want = math.log(math.comb(10, 7)) + 7 * math.log(0.3) + 3 * math.log(0.7)
    assert math.isclose(model.log_density({"p": 0.3}, {"n": 10, "k": 7}), want, rel_tol=1e-6)


def test_a_where_of_two_ints_is_an_int_index():
    # th[where(k >= 0, k, 0)] was "an index must be an integer": torch gives int64
    source = ("model M(y: real[N], k: int[N]) {\n  th: real[3] ~ Normal(0, 1)\n"
              "  plate n in N {\n    y ~ Normal(th[where(k[n] >= 0, k[n], 0)], 1)\n  }\n}\n")
    model = ppl.compile(source, "model.bdl")
    th, y = [0.1, 0.2, 0.3], [1.0, 2.0, 3.0]
    # k = [2, -1, 1] reads th[2], th[0], th[1]
    normal = lambda x, m: -0.5 * (x - m) ** 2 - 0.5 * math.log(2 * math.pi)  # noqa: E731
    want = sum(normal(t, 0.0) for t in th) + sum(
        normal(v, th[i]) for v, i in zip(y, [2, 0, 1], strict=True))
    got = model.log_density({"th": th}, {"y": y, "k": [2, -1, 1]})
    assert math.isclose(float(got), want, rel_tol=1e-6)
    # a real branch keeps it real: still refused as an index
    with pytest.raises(ppl.BdlError) as e:
        ppl.compile(source.replace("k[n], 0)", "k[n], 0.0)"), "model.bdl")
    assert "an index must be an integer" in str(e.value)


def test_data_bounds_of_one_value_are_legal_and_empty_ones_are_not():
    # x: real<lower=1, upper=1>[N] as data was "the bounds of this type leave no values"
    source = ("model M(x: real<lower=1, upper=1>[N], y: real[N]) {\n  mu ~ Normal(0, 1)\n"
              "  y ~ Normal(mu * x, 1)\n}\n")
    model = ppl.compile(source, "model.bdl")
    normal = lambda v, m: -0.5 * (v - m) ** 2 - 0.5 * math.log(2 * math.pi)  # noqa: E731
    want = normal(0.5, 0.0) + normal(1.0, 0.5) + normal(2.0, 0.5)
    got = model.log_density({"mu": 0.5}, {"x": [1.0, 1.0], "y": [1.0, 2.0]})
    assert math.isclose(float(got), want, rel_tol=1e-6)
    with pytest.raises(ppl.BdlError) as e:
        ppl.compile(source.replace("lower=1", "lower=2"), "model.bdl")
    assert e.value.render().split("\n")[0] == (
        "model.bdl:1:32: error: the bounds of this type leave no values: lower (2) is above "
        "upper (1)")


def test_an_lkj_dim_written_as_a_real_says_so():
    # LKJCholesky(2.0, 1) said "must be a whole number >= 2 ..., got 2"
    with pytest.raises(ppl.BdlError) as e:
        ppl.compile("model M() {\n  L ~ LKJCholesky(2.0, 1)\n}\n", "model.bdl")
    assert e.value.render() == """\
model.bdl:2:19: error: dim of LKJCholesky must be a whole number written as an int, got 2.0
    L ~ LKJCholesky(2.0, 1)
                    ^~~
  note: write 2"""


def test_a_latent_of_no_elements_from_the_data_prints_its_size_as_written():
    # was "latent 'z' has no elements: real[-K + N] with -K + N = 0"
    model = ppl.compile("model M(K: int, y: real[N]) {\n  z ~ Normal(zeros(N - K), 1)\n"
                        "  y ~ Normal(sum(z), 1)\n}\n", "model.bdl")
    assert model.checked.drawn()["z"] == (2, 3, "z: real[N - K]")
    with pytest.raises(ppl.BdlError) as e:
        model.fit({"K": 2, "y": [1.0, 2.0]}, infer="map(steps=2)")
    assert e.value.render().split("\n")[0] == (
        "model.bdl:2:3: error: latent 'z' has no elements: real[N - K] with N - K = 0 "
        "(sizes from the data)")
