"""Finite-support latents: summed out in the fit (NUTS, SVI), drawn from their exact
conditional posterior afterwards (ppl.infer.discrete)."""

from __future__ import annotations

import math
import re

import pytest
import torch
from pyro.ops.stats import effective_sample_size

import ppl
from ppl.infer.draws import site_draws

MIX = """
model Mix(y: real[N], y_new: real[M]?) {
  w ~ Dirichlet(ones(2))
  mu: ordered[2] ~ Normal(0, 5)
  plate i in N {
    z ~ Categorical(w)
    y ~ Normal(mu[z], 1)
  }
  plate j in M {
    z_new ~ Categorical(w)
    y_new ~ Normal(mu[z_new], 1)
  }
}
"""

# two clusters far apart (at -4 and +4), 12 points each, and one point at 0
Y = [-4.0 + 0.1 * k for k in range(-6, 6)] + [4.0 + 0.1 * k for k in range(-6, 6)] + [0.0]


def _posterior_z1(y: float, w1: float, mu0: float, mu1: float) -> float:
    """p(z = 1 | y, w, mu) of a two-component unit-variance Gaussian mixture."""
    a = math.log(1 - w1) - 0.5 * (y - mu0) ** 2
    b = math.log(w1) - 0.5 * (y - mu1) ** 2
    return 1.0 / (1.0 + math.exp(a - b))


def test_discrete_draws_follow_the_exact_conditional_posterior():
    """At a fixed (w, mu), the drawn z of each point is Bernoulli(p(z=1 | y, w, mu)) by
    Bayes' rule; 600 draws, tolerance 4 binomial standard errors at that n (0.08 at
    most; at y = -1 and 2 a prior draw, 0.3, is 0.24 and 0.56 off)."""
    m = ppl.compile(MIX)
    y = [-1.0, 0.3, 0.8, 2.0]
    kwargs = m.bind({"y": y, "y_new": [0.0]})
    n = 600
    w1, mu0, mu1 = 0.3, -0.5, 1.0
    post = {"w": torch.tensor([1 - w1, w1]).expand(n, 2),
            "mu": torch.tensor([mu0, mu1]).expand(n, 2)}
    torch.manual_seed(0)
    d = site_draws(m.pyro_model, kwargs, posterior=post, sites=["z"])
    assert d["z"].shape == (n, 4)
    for i, yi in enumerate(y):
        p = _posterior_z1(yi, w1, mu0, mu1)
        freq = float(d["z"][:, i].double().mean())
        assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-9, (i, freq, p)


@pytest.fixture(scope="module")
def mix_nuts():
    """One NUTS fit of MIX, shared by the tests that read it (each paid its own fit). The
    checks on it are exact (labels of far clusters) or at posterior-sd tolerance (mu), so
    50 + 50 draws serve as well as 100 + 100."""
    m = ppl.compile(MIX + "infer nuts(samples=50, warmup=50, chains=1)")
    return m, m.fit({"y": Y, "M": 2}, seed=0)


def test_nuts_sums_out_the_labels_and_draws_them_afterwards(mix_nuts):
    m, fit = mix_nuts
    # the kernel ran on w and mu only; z and z_new are drawn per posterior draw
    assert set(fit.latents) == {"w", "mu"}
    z = fit.samples["z"]
    assert z.shape == (50, len(Y))
    assert float(z[:, :12].float().mean()) == 0.0  # the cluster at -4 is component 0
    assert float(z[:, 12:24].float().mean()) == 1.0
    mu = fit.samples["mu"].mean(0)
    # each cluster's mean is -4.05 / 3.95 with 12 unit-variance points: sd 0.29
    assert abs(float(mu[0]) + 4.05) < 4 * 0.29 and abs(float(mu[1]) - 3.95) < 4 * 0.29
    assert fit.samples["z_new"].shape == (50, 2)
    # predicting on new data redraws the labels of the new points given them
    pred = fit.predict({"y": [-4.0, 4.0, 3.9], "M": 1}, seed=1)
    assert pred["z"].shape == (50, 3)
    assert pred["z"][:, 0].sum() == 0 and pred["z"][:, 1:].float().mean() == 1.0


@pytest.fixture(scope="module")
def mix_svi():
    """One SVI fit of MIX with three left-out y_new, shared by the two tests below (each
    paid its own fit: 600 and 400 steps)."""
    m = ppl.compile(MIX + "infer svi(steps=400, lr=0.05, samples=100)")
    return m.fit({"y": Y, "M": 3}, seed=0)


def test_svi_enumerates_the_labels_with_a_guide_over_the_rest(mix_svi):
    fit = mix_svi
    assert set(fit.latents) == {"w", "mu"}
    assert fit.samples["z"].shape == (100, len(Y))
    assert float(fit.samples["z"][:, :12].float().mean()) == 0.0
    assert float(fit.samples["z"][:, 12:24].float().mean()) == 1.0
    mu = fit.samples["mu"].mean(0)
    assert abs(float(mu[0]) + 4.05) < 4 * 0.29 and abs(float(mu[1]) - 3.95) < 4 * 0.29
    # the point at 0 is between the clusters: its label is uncertain, not 0 or 1
    middle = float(fit.samples["z"][:, 24].float().mean())
    assert 0.1 < middle < 0.9
    # the ELBO rose (the enumerated objective is finite and was optimised)
    assert all(math.isfinite(e) for e in fit.elbo)
    assert sum(fit.elbo[-50:]) / 50 > sum(fit.elbo[:50]) / 50


def test_a_label_is_not_pulled_by_the_free_draw_below_it():
    """With y_new left out, P(z_new = 1 | w) is w_1 exactly: the fresh y_new drawn under
    each enumerated label must not enter the labels' posterior; each y_new then follows
    its own label. A plate of one keeps its dimension. 800 draws, 4 binomial s.e. at
    that n (0.02)."""
    m = ppl.compile(MIX)
    kwargs = m.bind({"y": [0.0], "M": 1})
    n = 800
    post = {"w": torch.tensor([0.98, 0.02]).expand(n, 2),
            "mu": torch.tensor([-4.0, 4.0]).expand(n, 2)}
    torch.manual_seed(0)
    d = site_draws(m.pyro_model, kwargs, posterior=post, sites=["z", "z_new", "y_new"])
    assert d["z_new"].shape == (n, 1) and d["z"].shape == (n, 1)
    p = float(d["z_new"].double().mean())
    assert abs(p - 0.02) < 4 * math.sqrt(0.02 * 0.98 / n)
    agree = ((d["z_new"] == 1) == (d["y_new"] > 0)).double().mean()
    assert float(agree) > 0.99  # |y_new - mu| > 4 has probability 6e-5


def test_labels_in_a_subsampled_plate_cover_every_row():
    """SVI on minibatches of 5: the labels are drawn for all 24 rows, in order. 300 steps
    put mu at -4.0, 3.9 (600 gave -4.0, 3.7); each row's label is then its cluster's
    with probability above 1 - 1e-9, so 30 draws tell them as well as 100."""
    m = ppl.compile("""
model Mix(y: real[N]) {
  w ~ Dirichlet(ones(2))
  mu: ordered[2] ~ Normal(0, 5)
  plate i in N batch 5 {
    z ~ Categorical(w)
    y ~ Normal(mu[z], 1)
  }
}
infer svi(steps=300, lr=0.05, samples=30)
""")
    z = m.fit({"y": Y[:24]}, seed=0).samples["z"]
    assert z.shape == (30, 24)
    assert float(z[:, :12].float().mean()) < 0.05 and float(z[:, 12:].float().mean()) > 0.95


def test_a_left_out_y_new_is_drawn_with_its_label(mix_svi):
    """The fit's z_new and y_new come from one pass: each draw's pair agrees."""
    fit = mix_svi
    assert fit.samples["z_new"].shape == (100, 3)
    agree = ((fit.samples["z_new"] == 1) == (fit.samples["y_new"] > 0)).double().mean()
    assert float(agree) > 0.99


def test_saved_runs_redraw_labels_for_new_data_and_sghmc_refuses_them(tmp_path, mix_nuts):
    m, fit = mix_nuts
    fit.save(tmp_path / "run")
    pred = m.predict_run(tmp_path / "run", {"y": [-4.0, 4.0, 3.9], "M": 1}, seed=1)
    assert pred["z"].shape == (50, 3)
    assert pred["z"][:, 0].sum() == 0 and pred["z"][:, 1:].float().mean() == 1.0
    try:
        m.fit({"y": Y, "M": 1}, infer="sghmc", samples=2, warmup=2)
    except ppl.BdlError as e:
        assert "'sghmc' moves continuous latents only, and 'z' is discrete" in str(e)
    else:
        raise AssertionError("sghmc cannot move a discrete latent: a user error")


def test_labels_at_two_minibatch_scales_are_a_user_error_under_svi():
    """TraceEnum_ELBO needs one scale for every enumerated site: a label in a plate
    subsampled 5 of 20 (x4) beside one in a full plate (x1) is refused by name, before any
    step, rather than failing inside Pyro."""
    m = ppl.compile("""
model Mix(y: real[N], v: real[M]) {
  w ~ Dirichlet(ones(2))
  mu: ordered[2] ~ Normal(0, 5)
  plate i in N batch 5 {
    z ~ Categorical(w)
    y ~ Normal(mu[z], 1)
  }
  plate j in M {
    c ~ Categorical(w)
    v ~ Normal(mu[c], 1)
  }
}
infer svi(steps=10)
""")
    with pytest.raises(ppl.BdlError) as e:
        m.fit({"y": Y[:20], "v": [4.0, 3.9]}, seed=0)
    assert "different ones: 'z' (x4), 'c' (x1)" in str(e.value)
    assert ":10:5: error:" in e.value.render() and "c ~ Categorical(w)" in e.value.render()


@pytest.mark.parametrize("source, words", [
    ("""
model Mix(y: real[N]) {
  w ~ Dirichlet(ones(2))
  mu: ordered[2] ~ Normal(0, 5)
  z: int[N] ~ Categorical(w)
  y ~ Normal(mu[z], 1)
}
""", "'z' is a vector of discrete latents, shape [N] outside every plate"),
    ("""
model P(y: real[N]) {
  k ~ Poisson(3)
  plate N {
    y ~ Normal(k, 1)
  }
}
""", "'k' is a latent with unbounded discrete support (Poisson)")])
def test_discrete_latents_no_method_can_sum_out(source, words):
    """A vector of labels outside a plate (one site with K^N values) and an unbounded
    discrete latent: a warning at check, a located error when a fit starts (before any
    step), and a prior simulation still runs."""
    m = ppl.compile(source)
    assert any(words in w.message for w in m.warnings)
    for method in ("nuts", "svi"):
        with pytest.raises(ppl.BdlError, match=re.escape(words)):
            m.fit({"y": [0.5, 1.0, 4.0]}, infer=method)
    draws = m.sample_prior({"N": 3}, num_samples=20, seed=0)
    assert draws["y"].shape == (20, 3)


SWITCH = """
model Switch(y: real[N]) {
  mu ~ Normal(0, 5)
  z ~ Bernoulli(0.5)
  y ~ Normal(mu + 2 * z, 1)
}
"""

CHANGE_POINT = """
model ChangePoint(y: int[T]) {
  e ~ Exponential(0.5)
  l ~ Exponential(0.5)
  s ~ Categorical(ones(T) / T)
  y ~ Poisson(where(arange(T) < s, e, l))
}
"""


def test_a_label_outside_plates_meets_a_whole_vector_observation():
    """A label outside every plate read by a vector observed as a whole (y: real[N], no
    plate): the vector is drawn in a plate over its dim, so the label enumerates left of
    it. Exact at mu = 0 and 0.9: log p(y, mu) with z summed out is log N(mu; 0, 5) +
    logsumexp_z (log 1/2 + sum_n log N(y_n; mu + 2z, 1)). End to end, at mu = 0 the drawn
    z is Bernoulli(sigmoid(1.6)) = 0.83 (the logit is sum_n log N(y_n; mu + 2, 1) -
    log N(y_n; mu, 1)); 800 draws, 4 s.e. at that n (0.053; a prior draw is 0.33 off)."""
    m = ppl.compile(SWITCH)
    y = [1.1, 0.4, 2.3]
    normal = torch.distributions.Normal
    for mu in (0.0, 0.9):
        lik = torch.stack([normal(mu + 2.0 * k, 1.0).log_prob(torch.tensor(y)).sum()
                           for k in (0, 1)]) + math.log(0.5)
        want = float(torch.logsumexp(lik, 0) + normal(0.0, 5.0).log_prob(torch.tensor(mu)))
        got = _summed_out(m, {"y": y}, {"mu": torch.tensor(mu)}, 1)
        assert abs(got - want) < 1e-5, (mu, got, want)
    mu, n = 0.0, 800
    logit = sum(-0.5 * (v - mu - 2) ** 2 + 0.5 * (v - mu) ** 2 for v in y)
    p = 1 / (1 + math.exp(-logit))
    torch.manual_seed(1)
    d = site_draws(m.pyro_model, m.bind({"y": y}),
                   posterior={"mu": torch.full((n,), mu)}, sites=["z"])
    assert d["z"].shape == (n,)
    freq = float(d["z"].double().mean())
    assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-9, (mu, freq, p)
    # a NUTS fit draws z once per draw, in its declared (scalar) shape
    fit = m.fit({"y": y}, infer="nuts", warmup=20, samples=20, chains=1, seed=0)
    assert fit.samples["z"].shape == (20,) and torch.isfinite(fit.samples["mu"]).all()


def test_stan_change_point_model_draws_the_change_point_exactly():
    """Stan User's Guide, change point: s ~ uniform over 1..T, y ~ Poisson(e before s,
    l after), written on the whole vector. At fixed (e, l) the drawn s follows
    p(s | e, l, y) prop. to prod_t Poisson(y_t; t < s ? e : l), exactly: 1000 draws, 4
    s.e. per value at that n (0.043 at most; p(s = 4) = 0.87, a prior draw 1/8). The
    summed-out density is exact too: log Exp(e) + log Exp(l) + logsumexp_s (log 1/T +
    sum_t log Poisson(y_t; t < s ? e : l))."""
    m = ppl.compile(CHANGE_POINT)
    y = [4, 5, 3, 6, 1, 0, 2, 1]
    e, l, n = 4.5, 1.0, 1000
    logp = torch.tensor([sum(torch.distributions.Poisson(e if t < s else l)
                             .log_prob(torch.tensor(float(v))) for t, v in enumerate(y))
                         for s in range(len(y))], dtype=torch.float64)
    want = torch.softmax(logp, 0)
    expo = torch.distributions.Exponential(0.5)
    exact = float(torch.logsumexp(logp + math.log(1 / len(y)), 0)
                  + expo.log_prob(torch.tensor(e)) + expo.log_prob(torch.tensor(l)))
    got = _summed_out(m, {"y": y}, {"e": torch.tensor(e), "l": torch.tensor(l)}, 1)
    assert abs(got - exact) < 1e-4, (got, exact)
    torch.manual_seed(2)
    d = site_draws(m.pyro_model, m.bind({"y": y}),
                   posterior={"e": torch.full((n,), e), "l": torch.full((n,), l)},
                   sites=["s"])
    freq = torch.bincount(d["s"].long(), minlength=len(y)).double() / n
    se = (want * (1 - want) / n).sqrt()
    assert ((freq - want).abs() <= 4 * se + 1e-9).all(), (freq, want)
    assert int(want.argmax()) == 4  # the rate drops after the fourth point


GLOBAL_LABEL_IN_PLATE = """
model G(x: real[N, D], y: real[N, D]) {
  mu ~ Normal(0, 1)
  z ~ Bernoulli(0.5)
  plate i in N {
    y ~ Normal(ARG)
  }
}
"""


@pytest.mark.parametrize("arg, shift, scale", [
    ("x[i] + 2 * z + mu, 1", 2.0, 1.0),     # arithmetic with a per-element value
    ("x[i] + mu, 1 + z", 0.0, 2.0),         # a distribution argument of its own
])
def test_a_label_outside_plates_meets_per_element_values_inside_one(arg, shift, scale):
    """z drawn outside every plate, y [N, D] in plate N with D values per element: the
    summed-out z ([2, 1]) is widened to [2, 1, 1] where it meets x[i] ([N, D]) or the
    site's per-element dims, so its values are not matched with N. N = 2 = the label's
    size, where the unwidened broadcast ran silently with z drawn from its prior. At
    mu = 0 the summed-out density is exact, log N(0; 0, 1) + logsumexp_z (log 1/2 +
    log N(y; x + z shift, scale^z)), and the drawn z is Bernoulli(sigmoid(log N(y; x +
    shift, scale) - log N(y; x, 1))): 400 draws, 4 s.e. at that n (p = 0.9994, 0.95)."""
    m = ppl.compile(GLOBAL_LABEL_IN_PLATE.replace("ARG", arg))
    x = torch.tensor([[0.2, -0.1], [0.0, 0.3]])
    y = torch.tensor([[2.0, 1.7], [2.5, 1.9]])
    lp1 = torch.distributions.Normal(x + shift, scale).log_prob(y).sum()
    lp0 = torch.distributions.Normal(x, 1.0).log_prob(y).sum()
    exact = float(torch.logsumexp(torch.stack([lp0, lp1]) + math.log(0.5), 0)
                  + torch.distributions.Normal(0.0, 1.0).log_prob(torch.tensor(0.0)))
    got = _summed_out(m, {"x": x, "y": y}, {"mu": torch.tensor(0.0)}, 1)
    assert abs(got - exact) < 1e-5, (got, exact)
    p, n = float(torch.sigmoid(lp1 - lp0)), 400
    torch.manual_seed(3)
    d = site_draws(m.pyro_model, m.bind({"x": x, "y": y}),
                   posterior={"mu": torch.zeros(n)}, sites=["z"])
    freq = float(d["z"].double().mean())
    assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-9, (freq, p)
    assert not 0.3 < p < 0.7  # the data tell z apart: a prior draw would fail


def test_a_label_outside_plates_in_a_call_with_per_element_values_is_refused():
    src = GLOBAL_LABEL_IN_PLATE.replace("ARG", "where(x[i] > 0, 2 * z, mu), 1")
    with pytest.raises(ppl.BdlError, match=r"where\(\) meets 'z', a discrete latent drawn "
                                           r"outside every plate"):
        ppl.compile(src)


def test_nuts_on_labels_alone_gives_exact_posterior_draws():
    """Every latent a label: once they are summed out NUTS has nothing to move, so the
    fit's draws are exact posterior draws, p(z_n = 1 | y_n) = 0.3 N(y_n; 2, 1) /
    (0.3 N(y_n; 2, 1) + 0.7 N(y_n; 0, 1)) = [0.07, 0.83, 0.3, 0.02]; 2 chains x 300
    draws, 4 s.e. at that n (0.075 at most; a prior draw is 0.23 off at y = 0.1, 0.53 at
    y = 2.2) (it crashed)."""
    m = ppl.compile("""
model LabelsOnly(y: real[N]) {
  plate i in N {
    z ~ Bernoulli(0.3)
    y ~ Normal(2 * z, 1)
  }
}
""")
    y = torch.tensor([0.1, 2.2, 1.0, -0.5])
    fit = m.fit({"y": y}, infer="nuts", chains=2, warmup=10, samples=300, seed=0)
    assert fit.samples["z"].shape == (600, 4)
    a = 0.3 * torch.exp(-0.5 * (y - 2) ** 2)
    want = a / (a + 0.7 * torch.exp(-0.5 * y ** 2))
    got = fit.samples["z"].double().mean(0)
    se = (want * (1 - want) / 600).sqrt()
    assert ((got - want).abs() <= 4 * se + 1e-9).all(), (got, want)


def test_log_density_takes_labels_as_plain_numbers():
    """A Bernoulli label given as a Python number (a float site) and a Categorical one
    (a long site): log_density casts each to its site's dtype (it cast both to long)."""
    m = ppl.compile("""
model L(y: real[N]) {
  mu ~ Normal(0, 1)
  z ~ Bernoulli(0.3)
  c ~ Categorical(ones(3) / 3)
  plate i in N {
    y ~ Normal(mu + 2 * z + c, 1)
  }
}
""")
    y = torch.tensor([1.5, 2.5], dtype=torch.float64)
    got = m.log_density({"mu": 0.5, "z": 1, "c": 2}, {"y": y})
    want = (-0.5 * 0.25 - 0.5 * math.log(2 * math.pi) + math.log(0.3) + math.log(1 / 3)
            + float(torch.distributions.Normal(4.5, 1.0).log_prob(y).sum()))
    assert abs(got - want) < 1e-5


LABEL_VECTOR_IN_PLATE = """
model M(y: real[N, D], v: real[2, D]) {
  b ~ Normal(0, 1)
  z ~ Categorical(ones(2) / 2)
  w = VALUE
  plate i in N {
    y ~ Normal(w + b, 1)
  }
}
"""


@pytest.mark.parametrize("value, w1", [
    ("v[z]", [3.0, 2.0]),
    ("z * ones(D) * 3.0", [3.0, 3.0]),  # arithmetic: z widened to [2, 1, 1], w [2, 1, D]
    ("where(v[1] > 2.5, 2 * z, z)", [2.0, 1.0]),
    ("[3.0 * z, 2.0 * z]", [3.0, 2.0]),  # a list: stacked right of z's dims, [2, 1, 2]
    ("stack([v[z][1], 2.0 * z], dim=0)", [2.0, 2.0]),
    ("cat([v[z][0:1], 2.0 * z * ones(1)])", [3.0, 2.0]),
])
def test_a_vector_computed_from_a_label_outside_plates_is_read_inside_one(value, w1):
    """w computed outside plates from z keeps one layout, [2, 1, D] summed out (z's
    enumeration dim, the plate's unit dim, w's own dim), whether it indexes (v[z]),
    meets a vector in arithmetic or where() (z * ones(D) was [2, D], its label dim met
    plate i's, and was refused) or is a list, stack or cat of z's values (stacked along
    w's own dim, not dim 0), so read in plate i it is one [D] for every row. With
    N = D = 2 = K, at b = 0 the drawn z follows softmax_k sum log N(y; w(k), 1), w(0) =
    0; its summed-out density is exact (_assert_label_posterior)."""
    m = ppl.compile(LABEL_VECTOR_IN_PLATE.replace("VALUE", value))
    y = torch.tensor([[3.0, 3.1], [2.9, 3.0]])
    v = torch.tensor([[0.0, 0.0], [3.0, 2.0]])
    w = torch.tensor([[0.0, 0.0], w1])
    lp = torch.distributions.Normal(w[:, None, :], 1.0).log_prob(y).sum((-1, -2))
    _assert_label_posterior(m, {"y": y, "v": v}, lp, seed=5)


@pytest.mark.parametrize("d", [2, 3])
def test_a_label_outside_plates_indexes_a_matrix_for_a_whole_vector(d):
    """Template matching: y: real[D] ~ Normal(mu[z] + b, 1), z a label outside plates,
    mu: real[2, D]. y is drawn in a plate over D, and the argument mu[z] + b ([2, 1, D])
    has its own dim moved onto that plate's (rt.label_aligned: [2, D]; unmoved it was a
    shape error). At b = 0 the drawn z follows softmax_k sum_d log N(y_d; mu[k, d], 1);
    D = 2 = K too; the summed-out density is exact (_assert_label_posterior)."""
    m = ppl.compile("""
model T(y: real[D], mu: real[2, D]) {
  b ~ Normal(0, 1)
  z ~ Categorical(ones(2) / 2)
  y ~ Normal(mu[z] + b, 1)
}
""")
    mu = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.5, 1.0]])[:, :d]
    y = torch.tensor([0.9, 0.2, 0.4])[:d]
    lp = torch.distributions.Normal(mu, 1.0).log_prob(y).sum(-1)
    p = float(torch.softmax(lp, 0)[1])
    _assert_label_posterior(m, {"y": y, "mu": mu}, lp, seed=7)
    assert not 0.45 < p < 0.55  # the data tell the labels apart


def test_a_label_outside_plates_indexes_a_matrix_for_a_latent_vector():
    """The same for a latent vector (w: real[D] ~ Normal(mu[z], 1), drawn in a plate
    over D): given w the drawn z follows softmax_k sum_d log N(w_d; mu[k, d], 1), and the
    density with z summed out adds log N(y; w + b, 1), free of z."""
    m = ppl.compile("""
model W(y: real[D], mu: real[2, D]) {
  b ~ Normal(0, 1)
  z ~ Categorical(ones(2) / 2)
  w: real[D] ~ Normal(mu[z], 1)
  y ~ Normal(w + b, 1)
}
""")
    mu = torch.tensor([[0.0, 0.0], [1.0, 0.5]])
    w = torch.tensor([0.9, 0.2])
    lp = torch.distributions.Normal(mu, 1.0).log_prob(w).sum(-1)
    free = float(torch.distributions.Normal(w, 1.0).log_prob(torch.zeros(2)).sum())
    _assert_label_posterior(m, {"y": torch.zeros(2), "mu": mu}, lp, seed=8, fixed={"w": w},
                            free=free)


def _assert_label_posterior(m, data: dict, lp: torch.Tensor, seed: int, n: int = 300,
                            fixed: dict | None = None, free: float = 0.0) -> None:
    """z has a uniform prior over its len(lp) values; at b = 0 (and ``fixed`` values):
    the density with z summed out is exactly log N(b; 0, 1) + ``free`` (the terms free of
    z) + logsumexp_k (log 1/K + lp[k]), and, end to end, the drawn z is 1 with probability
    p = softmax(lp)[1]: n draws, 4 binomial s.e. at that n (0.115 at most at n = 300).
    The exact density is the check of the label's layout; the draws check that the
    drawing pass (infer_discrete) runs on it and follows it."""
    exact = float(torch.logsumexp(lp + math.log(1 / len(lp)), 0)) + free \
        + float(torch.distributions.Normal(0.0, 1.0).log_prob(torch.tensor(0.0)))
    given = {"b": torch.tensor(0.0), **(fixed or {})}
    got = _summed_out(m, data, given, 1)
    assert abs(got - exact) < 1e-5, (got, exact)
    p = float(torch.softmax(lp, 0)[1])
    torch.manual_seed(seed)
    post = {"b": torch.zeros(n), **{k: v.expand(n, *v.shape) for k, v in
                                    (fixed or {}).items()}}
    draws = site_draws(m.pyro_model, m.bind(data), posterior=post, sites=["z"])
    freq = float(draws["z"].double().mean())
    assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-9, (freq, p)


def test_a_vector_built_in_a_plate_from_a_label_outside_it():
    """plate i in N { m = z * ones(D) * 3; y ~ Normal(m + b, 1) }: m does not vary along
    the plate (one [D] for every element), so it is not padded as a per-element value
    (it was [2, 1, D, 1]: a shape error); N = D = 2 = K. At b = 0 the drawn z follows
    sigmoid(sum log N(y; 3, 1) - sum log N(y; 0, 1)); the summed-out density is exact."""
    m = ppl.compile("""
model M(y: real[N, D]) {
  b ~ Normal(0, 1)
  z ~ Bernoulli(0.5)
  plate i in N {
    m = z * ones(D) * 3.0
    y ~ Normal(m + b, 1)
  }
}
""")
    y = torch.tensor([[1.6, 1.2], [1.5, 1.4]])
    lp1 = torch.distributions.Normal(3.0, 1.0).log_prob(y).sum()
    lp0 = torch.distributions.Normal(0.0, 1.0).log_prob(y).sum()
    p = float(torch.sigmoid(lp1 - lp0))
    assert not 0.45 < p < 0.55
    _assert_label_posterior(m, {"y": y}, torch.stack([lp0, lp1]), seed=9)


TEMPLATES = """
model T(y: real[D], mu: real[3, D]ARGS) {
  b ~ Normal(0, 1)
  z ~ Categorical(ones(3) / 3)
  w = VALUE
  OBSERVE
  EXTRA
}
"""
MU3 = torch.tensor([[0.0, 0.0, 0.0], [1.0, -0.5, 1.0], [-1.0, 0.5, -1.0]])
Y3 = torch.tensor([0.5, -0.6, 0.9])
# a model with two nested plates elsewhere: the labels enumerate at dim -3, not -2
NESTED = ("plate i in N { plate j in M { x ~ Normal(b, 1) } }", ", x: real[N, M]")
X23 = torch.tensor([[0.3, -0.2, 0.1], [0.0, 0.4, -0.1]])


def _summed_out(m, data: dict, fixed: dict, nesting: int) -> float:
    """log p(data, fixed) with the labels summed out exactly (Pyro's TraceEnum_ELBO with
    an empty guide: every latent but the labels is fixed)."""
    from pyro import poutine
    from pyro.infer import TraceEnum_ELBO

    from ppl.infer.discrete import enumerated

    model = enumerated(poutine.condition(m.pyro_model, data=fixed))
    return -TraceEnum_ELBO(max_plate_nesting=nesting).loss(model, lambda **kw: None,
                                                             **m.bind(data))


VALUES = [("mu[z]", 1.0, 0.0), ("mu[z] + b", 1.0, 1.0), ("2 * mu[z]", 2.0, 0.0)]
OBSERVES = ["y ~ Normal(w, 1)",                      # the whole vector, outside plates
            "plate d in D { y ~ Normal(w[d], 1) }",  # element by element
            "plate D { y ~ Normal(w, 1) }"]          # w read whole in its plate


@pytest.mark.parametrize("value, scale, shift, observe, extra", [
    *[(*v, o, ("", "")) for v in VALUES for o in OBSERVES],
    *[(*VALUES[1], o, NESTED) for o in OBSERVES]])
def test_a_value_computed_from_a_label_outside_plates_is_observed(value, scale, shift,
                                                                    observe, extra):
    """Stan's style, w = mu[z] (+ b, 2 *) in 'transformed parameters', then y ~ Normal(w,
    1): w keeps z's summed-out layout [3, 1, D] (Pyro's, the label's dims left of the
    plates'), and a read of it as plate dims moves its dims onto them (rt.label_aligned
    -> [3, D]; w[d] is Vindex(w)[..., d]). It was a shape error from Pyro's enumeration.
    At b = 0.4: log p(y, b) with z summed out is log N(b; 0, 1) + logsumexp_k (log 1/3 +
    sum_d log N(y_d; w_k, 1)), w_k = scale * mu[k] + shift * b, and the drawn z follows
    its softmax (200 draws, 4 s.e. per label at that n and one draw: 0.14 at most, and a
    prior draw is 0.28 off or more in each case); with nested plates elsewhere (z at dim
    -3) the same plus log N(x; b, 1)."""
    body, args = extra
    m = ppl.compile(TEMPLATES.replace("VALUE", value).replace("OBSERVE", observe)
                    .replace("EXTRA", body).replace("ARGS", args))
    b, data = 0.4, {"y": Y3, "mu": MU3, **({"x": X23} if body else {})}
    w = scale * MU3 + shift * b
    lik = torch.distributions.Normal(w, 1.0).log_prob(Y3).sum(-1) + math.log(1 / 3)
    want = float(torch.logsumexp(lik, 0)) + float(torch.distributions.Normal(0.0, 1.0)
                                                   .log_prob(torch.tensor(b)))
    if body:
        want += float(torch.distributions.Normal(b, 1.0).log_prob(X23).sum())
    got = _summed_out(m, data, {"b": torch.tensor(b)}, 2 if body else 1)
    assert abs(got - want) < 1e-4, (got, want)
    n, p = 200, torch.softmax(lik, 0).double()
    torch.manual_seed(11)
    z = site_draws(m.pyro_model, m.bind(data), posterior={"b": torch.full((n,), b)},
                   sites=["z"])["z"]
    freq = torch.bincount(z.flatten().long(), minlength=3).double() / n
    # plus one draw: where n p is below 1 (p = 3e-4 for 2 * mu[z]) the normal bound is
    # below one count, and a single draw of that label would exceed it
    assert ((freq - p).abs() <= 4 * (p * (1 - p) / n).sqrt() + 1 / n).all(), (freq, p)
    assert float((p - 1 / 3).abs().max()) > 0.1  # a prior draw would fail


@pytest.mark.parametrize("method, options, tol", [
    ("nuts", {"warmup": 100, "samples": 300, "chains": 1}, 0.1),
    ("svi", {"steps": 300, "lr": 0.05, "samples": 300}, 0.1)])
def test_a_value_computed_from_a_label_is_fitted(method, options, tol):
    """w = mu[z] + b, y ~ Normal(w, 1), fitted with b and z unknown: z's posterior is
    exact by hand, y - mu[k] ~ MVN(0, I + 11') with b integrated out, so p(z = k | y) is
    the softmax of those log densities ([0.35, 0.61, 0.04]). The draws of w are
    mu[z] + b of the same draw, in w's declared shape [D]."""
    m = ppl.compile(TEMPLATES.replace("VALUE", "mu[z] + b").replace("OBSERVE", "y ~ Normal(w, 1)")
                    .replace("EXTRA", "").replace("ARGS", ""))
    fit = m.fit({"y": Y3, "mu": MU3}, infer=method, seed=0, **options)
    cov = torch.eye(3) + torch.ones(3, 3)
    lp = torch.stack([torch.distributions.MultivariateNormal(torch.zeros(3), cov)
                      .log_prob(Y3 - MU3[k]) for k in range(3)])
    want = torch.softmax(lp, 0)
    z, b, w = fit.samples["z"].long(), fit.samples["b"], fit.samples["w"]
    assert z.shape == (300,) and w.shape == (300, 3)
    assert torch.allclose(w, MU3[z] + b[:, None], atol=1e-5)
    freq = torch.bincount(z, minlength=3).float() / 300
    assert float((freq - want).abs().max()) < tol, (freq, want)


@pytest.mark.parametrize("site, nested", [
    ("plate d in D { y ~ Normal(mu[z] + b, 1) }", False),
    ("plate d in D { y ~ Normal(mu[z] + b, 1) }", True),
    ("plate D { y ~ Normal(2 * mu[z] + b - mu[z], 1) }", True)])
def test_a_label_expression_with_a_plate_dim_is_moved_onto_the_plate(site, nested):
    """mu[z] + b, shape [D], written directly in plate d of size D: as a plain [D] value
    broadcasts against the plate, its dim is moved onto the plate's (rt.label_aligned;
    it was [3, 1, D], a shape error). Exact: log N(b; 0, 1) + logsumexp_k (log 1/3 +
    sum_d log N(y_d; mu[k, d] + b, 1)) at b = 0.4 (+ log N(x; b, 1) with nested plates
    elsewhere, z then at dim -3)."""
    body, args = NESTED if nested else ("", "")
    m = ppl.compile(TEMPLATES.replace("w = VALUE", "").replace("OBSERVE", site)
                    .replace("EXTRA", body).replace("ARGS", args))
    b, data = 0.4, {"y": Y3, "mu": MU3, **({"x": X23} if nested else {})}
    lik = torch.distributions.Normal(MU3 + b, 1.0).log_prob(Y3).sum(-1) + math.log(1 / 3)
    want = float(torch.logsumexp(lik, 0) + torch.distributions.Normal(0.0, 1.0)
                 .log_prob(torch.tensor(b)))
    if nested:
        want += float(torch.distributions.Normal(b, 1.0).log_prob(X23).sum())
    got = _summed_out(m, data, {"b": torch.tensor(b)}, 2 if nested else 1)
    assert abs(got - want) < 1e-4, (got, want)


def test_a_label_matrix_in_a_plate_meets_the_plate_and_the_elements():
    """M[z] of shape [N, D] in plate i in N with y: real[N, D]: its first dim is the
    plate's, its second each element's (as M[0] would broadcast); exact log density at
    the summed-out z: logsumexp_k (log 1/2 + sum log N(y; M[k], 1))."""
    m = ppl.compile("""
model P(y: real[N, D], M: real[2, N, D]) {
  z ~ Categorical(ones(2) / 2)
  plate i in N { y ~ Normal(M[z], 1) }
}
""")
    big = torch.tensor([[[0.0, 0.5, 1.0], [1.0, 0.0, -1.0]], [[2.0, 1.0, 0.0], [0.5, 0.5, 0.5]]])
    y = torch.tensor([[0.1, 0.6, 0.8], [0.9, 0.2, -0.7]])
    lik = torch.distributions.Normal(big, 1.0).log_prob(y).sum((-1, -2)) + math.log(0.5)
    got = _summed_out(m, {"y": y, "M": big}, {}, 1)
    assert abs(got - float(torch.logsumexp(lik, 0))) < 1e-4


@pytest.mark.parametrize("arg, reduce", [
    ("sum(w, dim=1)", lambda x: x.sum(-1)),    # dim counted from the left: w's own dims
    ("mean(mu[z], dim=0)", lambda x: x.mean(-2)),
    ("sum(w, dim=-1) + 0 * sum(w)", lambda x: x.sum(-1))])
def test_a_reduction_of_a_label_value_runs_over_its_own_dims(arg, reduce):
    """w = mu[z] is [3, 1, 2, 4] summed out: sum(w, dim=1) is over w's dim 1 (dim=-1
    generated), not over a dim the label's layout put there, and sum(w) without dim
    over w's own dims only (rt.reduce_elements); exact log density with z summed out."""
    big = torch.arange(24.0).reshape(3, 2, 4) / 10
    shape = "[4]" if "dim=0" in arg else "[2]"
    m = ppl.compile(f"""
model R(y: real{shape}, mu: real[3, 2, 4]) {{
  z ~ Categorical(ones(3) / 3)
  w = mu[z]
  y ~ Normal({arg}, 1)
}}
""")
    y = torch.linspace(0.2, 1.0, int(shape[1]))
    lik = torch.distributions.Normal(reduce(big), 1.0).log_prob(y).sum(-1) + math.log(1 / 3)
    got = _summed_out(m, {"y": y, "mu": big}, {}, 1)
    assert abs(got - float(torch.logsumexp(lik, 0))) < 1e-4, got


C3 = torch.tensor([0, 2, 1])


@pytest.mark.parametrize("body", [
    "plate i in N { c ~ Categorical(logits=mu[z]) }",
    "plate i in N { c ~ Categorical(softmax(mu[z])) }",
    "p = softmax(mu[z])\n  plate i in N { c ~ Categorical(p) }",
    "c ~ Categorical(logits=mu[z])"])                 # the whole vector, outside plates
def test_a_label_value_as_a_vector_parameter_keeps_its_event_dim(body):
    """logits = mu[z] is [3, 1, 3] summed out: its last dim is each draw's categories,
    not plate i's (it was moved onto the plate: summed out -2.604 here, exact -3.896).
    Exact: logsumexp_k (log 1/3 + sum_i log softmax(mu[k])[c_i])."""
    m = ppl.compile(f"model T(c: int[N], mu: real[3, 3]) {{\n  z ~ Categorical(ones(3) / 3)\n"
                    f"  {body}\n}}")
    lik = torch.log_softmax(MU3 + torch.tensor([0.0, 0.3, -0.2]), -1)[:, C3].sum(-1)
    want = float(torch.logsumexp(lik + math.log(1 / 3), 0))
    got = _summed_out(m, {"c": C3, "mu": MU3 + torch.tensor([0.0, 0.3, -0.2])}, {}, 1)
    assert abs(got - want) < 1e-6, (got, want)
    assert abs(want + 3.2958) > 0.05  # not the prior's log(1/3^3): the labels matter


def test_a_label_value_as_cutpoints_keeps_its_event_dim():
    """OrderedLogistic(eta[i], cut[z]) in plate i of 2: cut[z]'s 2 cutpoints are one
    draw's, not plate i's (a shape error at N = 2). Exact by hand as above."""
    import pyro.distributions as pd
    m = ppl.compile("model T(c: int[N], eta: real[N], cut: real[3, 2]) {\n"
                    "  z ~ Categorical(ones(3) / 3)\n"
                    "  plate i in N { c ~ OrderedLogistic(eta[i], cut[z]) }\n}")
    cut = torch.tensor([[-1.0, 1.0], [0.0, 2.0], [-2.0, -0.5]])
    eta, c = torch.tensor([0.3, -0.2]), torch.tensor([0, 2])
    lik = torch.stack([pd.OrderedLogistic(eta, cut[k]).log_prob(c).sum() for k in range(3)])
    want = float(torch.logsumexp(lik + math.log(1 / 3), 0))
    got = _summed_out(m, {"c": c, "eta": eta, "cut": cut}, {}, 1)
    assert abs(got - want) < 1e-6, (got, want)


XD = torch.tensor([0.3, -1.0, 2.0])


@pytest.mark.parametrize("observe, value", [
    ("plate d in D { y ~ Normal(w[d] - sum(w) / 3, 1) }", lambda w: w - w.mean(-1, True)),
    ("plate d in D { y ~ Normal(w[d] - mean(w), 1) }", lambda w: w - w.mean(-1, True)),
    ("plate D { y ~ Normal(w - sum(w) / 3, 1) }", lambda w: w - w.mean(-1, True)),
    ("plate d in D { y ~ Normal(softmax(w)[d], 1) }", lambda w: w.softmax(-1)),
    ("plate d in D { y ~ Normal(exp(w)[d], 1) }", lambda w: w.exp()),
    ("plate D { y ~ Normal(w + sum(w * x), 1) }", lambda w: w + (w * XD).sum(-1, True)),
    ("plate j in J { plate d in D { y ~ Normal(w[d] + sum(w * x), 1) } }",
     lambda w: w + (w * XD).sum(-1, True))])
def test_a_label_value_read_whole_in_a_call_inside_a_plate_keeps_its_own_dims(observe, value):
    """w = mu[z] read whole in a built-in (sum, mean, softmax, or indexed after the call)
    inside a plate of its size: the call runs over w's own dims, [3, 1, D], not over the
    plate-aligned [3, D] (sum(w) then also summed the label values: -3.645 vs exact
    -3.541 for the first). Exact: logsumexp_k (log 1/3 + sum log N(y; value(mu[k]), 1))."""
    nested = "plate j" in observe
    m = ppl.compile(f"model T(y: real[{'J, ' if nested else ''}D], mu: real[3, D], "
                    f"x: real[D]) {{\n  z ~ Categorical(ones(3) / 3)\n  w = mu[z]\n"
                    f"  {observe}\n}}")
    y = torch.stack([Y3, Y3.flip(0)]) if nested else Y3
    lik = torch.distributions.Normal(value(MU3)[:, None, :] if nested else value(MU3), 1.0) \
        .log_prob(y).flatten(1).sum(-1) + math.log(1 / 3)
    got = _summed_out(m, {"y": y, "mu": MU3, "x": XD}, {}, 2 if nested else 1)
    assert abs(got - float(torch.logsumexp(lik, 0))) < 1e-6, got


BERN_X = "model A(y: real) {\n  z ~ Bernoulli(0.3)\n  x ~ Normal(2.0 * z, 1)\n  y ~ Normal(x, 1)\n}"


@pytest.mark.parametrize("body", ["w: real[D] ~ Normal(mu[z], 1)",
                                  "v = mu[z]\n  w: real[D] ~ Normal(v, 1)"])
def test_a_continuous_latent_reading_a_label_has_its_own_shape_and_density(body):
    """w ~ Normal(mu[z], 1) with z summed out: w's value is [D] (rt.LabelFree drops the
    label's dim from its draws; NUTS took it for [3, 3] before) while its density keeps
    it, so log p(w, y) = logsumexp_k (log 1/3 + log N(w; mu[k], 1)) + log N(y; w, 1)."""
    m = ppl.compile(f"model A(y: real[D], mu: real[3, D]) {{\n  z ~ Categorical(ones(3) / 3)\n"
                    f"  {body}\n  y ~ Normal(w, 1)\n}}")
    w = torch.tensor([0.9, -0.4, 1.1])
    normal = torch.distributions.Normal
    want = float(torch.logsumexp(normal(MU3, 1.0).log_prob(w).sum(-1) + math.log(1 / 3), 0)
                 + normal(w, 1.0).log_prob(Y3).sum())
    got = _summed_out(m, {"y": Y3, "mu": MU3}, {"w": w}, 1)
    assert abs(got - want) < 1e-6, (got, want)
    fit = m.fit({"y": Y3, "mu": MU3}, infer="nuts", seed=0, warmup=20, samples=30, chains=1)
    assert fit.samples["w"].shape == (30, 3) and fit.samples["z"].shape == (30,)


def test_a_continuous_latent_below_a_label_has_the_exact_posterior():
    """z ~ Bernoulli(0.3), x ~ Normal(2z, 1), y ~ Normal(x, 1) at y = 2.5: p(x | y) is a
    two-component Gaussian mixture, weights p(z | y) ~ 0.3^z N(y; 2z, sqrt 2) ->
    [0.342, 0.658], components N((2z + y) / 2, 1/2): E[x] = 1.908, Var[x] = 0.725 (also
    the best Gaussian guide's, by quadrature: 1.91, 0.72). NUTS gave x one copy per
    label value ([draws, 2]) before rt.LabelFree. Tolerances: 4 Monte Carlo s.e. at the
    draws' effective sizes (400 draws: ESS 87 for x, 165 for z here): sd(x) / sqrt(ESS)
    for the mean (0.36), Var[x] sqrt(2 / ESS) for the variance (0.44), sqrt(p (1 - p) /
    ESS) for z's frequency (0.15); ESS above 50 keeps the mean's under 0.48 and z's
    under 0.27, so a label drawn from its prior (0.36 off) or ignored by x (E[x] 1.25,
    0.66 off) still fails."""
    m = ppl.compile(BERN_X)
    n = 400
    fit = m.fit({"y": 2.5}, infer="nuts", seed=1, warmup=200, samples=n, chains=1)
    x, z = fit.samples["x"], fit.samples["z"].double()
    assert x.shape == (n,) and z.shape == (n,)
    ess_x, ess_z = (float(effective_sample_size(v[None].double(), chain_dim=0, sample_dim=1))
                    for v in (x, z))
    assert ess_x > 50 and ess_z > 50, (ess_x, ess_z)
    assert abs(float(x.mean()) - 1.908) < 4 * math.sqrt(0.725 / ess_x), float(x.mean())
    assert abs(float(x.var()) - 0.725) < 4 * 0.725 * math.sqrt(2 / ess_x), float(x.var())
    assert abs(float(z.mean()) - 0.658) < 4 * math.sqrt(0.658 * 0.342 / ess_z), \
        float(z.mean())


@pytest.mark.parametrize("src, data, shape", [
    ("model P(y: real[N]) {\n  plate i in N {\n    z ~ Bernoulli(0.5)\n"
     "    x ~ Normal(2.0 * z, 1)\n    y ~ Normal(x, 0.5)\n  }\n}",
     {"y": [0.2, 2.5, 1.0]}, (3,)),
    ("model P(y: real[N, K]) {\n  plate i in N {\n    z ~ Bernoulli(0.5)\n"
     "    plate k in K {\n      x ~ Normal(2.0 * z, 1)\n      y ~ Normal(x, 0.5)\n"
     "    }\n  }\n}", {"y": [[0.2, 2.5, 0.1], [1.0, -0.3, 0.4]]}, (2, 3)),
])
def test_a_continuous_latent_reading_a_label_of_its_plate_has_its_own_shape(src, data, shape):
    """x ~ Normal(2z, 1) beside z drawn in the same (or an outer) plate: x is one number
    per element (NUTS moved one x per label value, [2, N], an improper target whose draws
    drifted to -1760 with r_hat 2.57). Per element, p(z | y) ~ 0.5 N(y; 2z, sqrt 1.25)
    and E[x | y] = sum_z p(z | y) (2z + 4y) / 5 (N(2z, 1) prior, N(x, 0.5) likelihood):
    at y = [0.2, 2.5, 1.0], p(z = 1 | y) = [0.218, 0.917, 0.5], E[x] = [0.247, 2.367, 1.0];
    the fit's means within 4 Monte Carlo s.e. (posterior sd of x <= 0.63, of z <= 0.5;
    ESS asserted above 50). The nested case checks the shapes only (a short fit)."""
    m = ppl.compile(src)
    n = 200 if len(shape) == 1 else 10
    fit = m.fit(data, infer="nuts", seed=1, warmup=n // 2, samples=n, chains=1)
    assert fit.samples["x"].shape == (n, *shape) and fit.samples["z"].shape[0] == n
    if len(shape) > 1:
        return
    x, z = fit.samples["x"], fit.samples["z"].double()
    for v, want, sd in ((x, [0.247, 2.367, 1.0], 0.63), (z, [0.218, 0.917, 0.5], 0.5)):
        for j in range(3):
            ess = float(effective_sample_size(v[None, :, j].double(), chain_dim=0,
                                              sample_dim=1))
            assert ess > 50, ess
            assert abs(float(v[:, j].mean()) - want[j]) < 4 * sd / math.sqrt(ess), (j, v.mean(0))


def test_svi_on_a_continuous_latent_below_a_label_has_the_exact_objective():
    """The same model under SVI, through the objective SVI optimises (svi_parts: the model
    enumerated, TraceEnum_ELBO): a guide that puts x at x0 (a point mass, replayed into
    the model as the guide's draws are) has ELBO log p(x0, y) with z summed out =
    logsumexp_z (log p(z) + log N(x0; 2z, 1)) + log N(y; x0, 1), exactly, at three x0.
    (An end-to-end SVI fit of it was 2000 steps: the optimisation's noise, not Monte
    Carlo error, set how close it came; the MIX tests keep SVI with labels end to end.)
    A short fit draws x and z in their declared shapes."""
    import pyro
    import pyro.distributions as pd
    from pyro import poutine

    from ppl.infer.discrete import svi_parts

    m = ppl.compile(BERN_X)
    kwargs = m.bind({"y": 2.5})
    model, elbo = svi_parts(m.pyro_model, poutine.trace(m.pyro_model).get_trace(**kwargs),
                            jit=False, particles=1)
    normal = torch.distributions.Normal
    for x0 in (-0.5, 1.2, 2.5):
        x = torch.tensor(x0)

        def guide(_x=x, **_kw):
            pyro.sample("x", pd.Delta(_x))

        want = float(torch.logsumexp(torch.stack(
            [math.log(0.7) + normal(0.0, 1.0).log_prob(x),
             math.log(0.3) + normal(2.0, 1.0).log_prob(x)]), 0)
            + normal(x, 1.0).log_prob(torch.tensor(2.5)))
        got = -elbo.loss(model, guide, **kwargs)
        assert abs(got - want) < 1e-5, (x0, got, want)
    fit = m.fit({"y": 2.5}, infer="svi", seed=1, steps=50, lr=0.02, samples=20)
    assert fit.samples["x"].shape == (20,) and fit.samples["z"].shape == (20,)
    assert set(fit.samples["z"].tolist()) <= {0.0, 1.0}


Y4 = torch.tensor([0.5, -0.6, 0.9, 0.2])
X43 = torch.tensor([[0.1, 0.2, 0.3], [1.0, 0.0, -1.0], [0.5, 0.5, 0.5], [2.0, 1.0, 0.0]])


@pytest.mark.parametrize("value, mean", [
    ("mu[c][0]", lambda: MU3[:, 0:1].expand(3, 4)),
    ("mu[c][-1]", lambda: MU3[:, 2:3].expand(3, 4)),
    ("mu[c][2] + x[i][1]", lambda: MU3[:, 2:3] + X43[:, 1]),
    ("sum(mu[c])", lambda: MU3.sum(-1, keepdim=True).expand(3, 4))])
def test_an_index_into_a_row_picked_by_a_label_in_a_plate_reads_the_row(value, mean):
    """mu[c] with c drawn in plate i is one row per element; mu[c][0] reads that row's
    entry 0 (Vindex(mu[c])[..., 0]), sum(mu[c]) sums the row: it read row 0 of the
    plate (mu[c_0], every element; -3.49 summed out vs exact -4.00 at N = 3, a shape
    error at N = 4). Exact: sum_i logsumexp_k (log 1/3 + log N(y_i; mean[k, i], 1)), and
    log_density at c = [1, 2, 0, 1] is sum_i log N(y_i; mean[c_i, i], 1) + 4 log 1/3."""
    m = ppl.compile(f"model T(y: real[N], mu: real[3, 3], x: real[N, 3]) {{\n  plate i in N {{\n"
                    f"    c ~ Categorical(ones(3) / 3)\n    y ~ Normal({value}, 1)\n  }}\n}}")
    means, data = mean(), {"y": Y4, "mu": MU3, "x": X43}
    lik = torch.distributions.Normal(means, 1.0).log_prob(Y4) + math.log(1 / 3)
    got = _summed_out(m, data, {}, 1)
    assert abs(got - float(torch.logsumexp(lik, 0).sum())) < 1e-6, got
    c = [1, 2, 0, 1]
    assert abs(m.log_density({"c": c}, data) - float(lik[c, range(4)].sum())) < 1e-6


def test_a_deterministic_of_a_label_is_redrawn_with_a_left_out_y_new():
    """With y_new left out, z and y_new are drawn again in one pass after the fit
    (add_predictions); w = mu[z] + b is drawn with them, so each draw's w is mu[z] + b of
    that draw's z (it was the fit's pass's: 45 of 100 draws disagreed here, where the
    data leave z uncertain), and y_new ~ Normal(w, 0.01) sits at it."""
    m = ppl.compile("model T(y: real[N], mu: real[3], y_new: real?) {\n  b ~ Normal(0, 1)\n"
                    "  z ~ Categorical(ones(3) / 3)\n  w = mu[z] + b\n"
                    "  plate i in N { y ~ Normal(w, 1) }\n  y_new ~ Normal(w, 0.01)\n}")
    mu = torch.tensor([0.0, 1.0, -1.0])
    fit = m.fit({"y": Y3, "mu": mu}, infer="nuts", seed=0, warmup=50, samples=100, chains=1)
    z, b, w = fit.samples["z"].long(), fit.samples["b"], fit.samples["w"]
    assert len(set(z.tolist())) > 1  # the labels vary, so a mismatch could show
    assert torch.allclose(w, mu[z] + b, atol=1e-5)
    assert float((fit.samples["y_new"] - w).abs().max()) < 0.06  # 6 sd of 0.01


@pytest.mark.parametrize("plate", [False, True])
def test_a_bernoulli_label_indexes(plate):
    """nu[z] with z ~ Bernoulli(0.4): Pyro draws and enumerates z as 0.0 / 1.0, which
    cannot index ('indices must be long' when the fit started); rt.as_index makes the
    index an integer. Exact: logsumexp_z (log p(z) + log N(y; nu[z], 1)), per point."""
    body = "z ~ Bernoulli(0.4)\n  y ~ Normal(nu[z], 1)"
    if plate:
        body = "plate i in N {\n    z ~ Bernoulli(0.4)\n    y ~ Normal(nu[z], 1)\n  }"
    m = ppl.compile(f"model T(y: real{'[N]' if plate else ''}, nu: real[2]) {{\n  {body}\n}}")
    nu, y = torch.tensor([0.0, 1.0]), torch.tensor([0.3, 0.1] if plate else [0.3])
    prior = torch.tensor([math.log(0.6), math.log(0.4)])[:, None]
    want = float(torch.logsumexp(prior + torch.distributions.Normal(nu[:, None], 1.0)
                                 .log_prob(y), 0).sum())
    data = {"y": y if plate else float(y[0]), "nu": nu}
    assert abs(_summed_out(m, data, {}, int(plate)) - want) < 1e-6
    fit = m.fit(data, infer="nuts", seed=0, warmup=5, samples=5, chains=1)
    assert fit.samples["z"].shape == ((5, 2) if plate else (5,))


@pytest.mark.parametrize("method", ["svi", "map"])
def test_a_label_outside_a_subsampled_plate_that_reads_it_is_a_located_error(method):
    """Pyro's TraceEnum_ELBO needs a label and the sites reading it at one minibatch
    scale: a label drawn outside `plate i in N batch 2` and read inside it stopped with
    Pyro's 'Expected all enumerated sample sites to share a common poutine.scale'."""
    from ppl.syntax.diagnostics import BdlError

    m = ppl.compile("""
model Z(x: real[N], y: real[N]) {
  z ~ Bernoulli(0.5)
  b ~ Normal(0, 1)
  plate i in N batch 2 {
    y ~ Normal(x * (b + 3 * z), 1)
  }
}
""")
    data = {"x": [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5], "y": [-2.0, -1.0, 0.0, 1.0, 2.0, 3.0]}
    with pytest.raises(BdlError) as info:
        m.fit(data, infer=method, steps=5, seed=0)
    text = str(info.value)
    assert "3:3: error: svi and map sum the discrete latent 'z' out together with the " \
        "sites that read it, which needs one minibatch scale" in text
    assert "drop `batch`" in text
