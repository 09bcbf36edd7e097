"""A start of density 0 is drawn again, as Stan's.

Stan draws a start uniformly in (-2, 2) on the unconstrained scale and retries up to 100
times while the log density is not finite. Here a distribution whose arguments follow the
latents and are invalid at a state (``y ~ Uniform(a, 1.0)`` at a draw ``a = 1.54``) gives
that state density 0 under every method (the prior trace of the fit draws again), and
``map``/``svi`` draw their guide's start again where its first draw has density 0 (``a ~
Normal(0.5, 1); z: real<upper=a> ~ Beta(2, 2)`` at ``a < 0``). Arguments from the data are
still the located error.
"""

import math

import pyro
import pytest
import torch
from pyro.ops.stats import effective_sample_size

import ppl
from ppl.infer.run import INIT_TRIES
from ppl.syntax.diagnostics import BdlError

UNIFORM = """model U(y: real) {
  a ~ Normal(0, 1)
  y ~ Uniform(a, 1.0)
}"""

BETA_UPPER = """model Z() {
  a ~ Normal(0.5, 1)
  z: real<upper=a> ~ Beta(2, 2)
}"""


def _posterior_mean_of_a() -> tuple[float, float]:
    """Mean and sd of p(a | y = 0.5) ∝ phi(a) / (1 - a) on a < 0.5 (Uniform(a, 1)'s
    density at y is 1 / (1 - a) where a <= y), by the midpoint rule on [-12, 0.5]
    (phi(-12) ~ 1e-32): -0.21120 and 0.60074 (scipy's quad agrees to 1e-8)."""
    n = 200_000
    h = 12.5 / n
    a = -12 + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    w = torch.exp(-a * a / 2) / (1 - a)
    m = float((a * w).sum() / w.sum())
    return m, math.sqrt(float((a * a * w).sum() / w.sum()) - m * m)


def test_the_closed_form():
    m, sd = _posterior_mean_of_a()
    assert m == pytest.approx(-0.211195, abs=1e-5)
    assert sd == pytest.approx(0.600745, abs=1e-5)


def test_nuts_fits_an_argument_that_follows_a_latent():
    # seed 0's prior trace drew a = 1.54 (Uniform's low > high): it stopped at once
    fit = ppl.compile(UNIFORM).fit(
        {"y": 0.5}, infer="nuts(samples=300, warmup=150, chains=1, seed=0)")
    a = fit.samples["a"].reshape(-1).double()
    assert bool((a <= 0.5).all())
    m, sd = _posterior_mean_of_a()
    ess = float(effective_sample_size(a.reshape(1, -1, 1), chain_dim=0, sample_dim=1))
    assert ess > 20
    assert abs(float(a.mean()) - m) < 4 * sd / math.sqrt(ess)  # 4 s.e. at the run's ESS


def test_map_and_svi_start_where_an_argument_follows_a_latent():
    m = ppl.compile(UNIFORM)
    # the density phi(a) / (1 - a) rises all the way to a = 0.5: its mode is that bound,
    # where the data leave Uniform(a, 1)'s support. Started (was the prior draw's
    # refusal), map climbs to it and stops with the error that says so.
    with pytest.raises(BdlError, match=r"map: at step \d+ of 200 the guide drew latents "
                       "that put the observed 'y' outside its support"):
        m.fit({"y": 0.5}, infer="map(steps=200, seed=0)")
    # the gradient of log p, -a + 1 / (1 - a), is > 0 below the bound: each Adam step
    # moves a up by lr = 0.01 (a constant sign), so 19 more steps move it by 0.19
    def map_a(steps):
        fit = m.fit({"y": 0.5}, infer=f"map(steps={steps}, seed=0)")
        return float(fit.samples["a"].reshape(-1)[0])

    a1, a20 = map_a(1), map_a(20)
    assert a20 - a1 == pytest.approx(0.19, abs=0.002) and a20 < 0.5
    assert map_a(20) == a20  # the same seed, the same start and fit
    # svi: AutoNormal's loc starts at 0 and climbs by lr a step; its 200 draws' mean is
    # that loc within 4 standard errors (scale ~0.11)
    fit = m.fit({"y": 0.5}, infer="svi(steps=10, seed=0, samples=200)")
    loc = float(pyro.get_param_store()["AutoNormal.locs.a"].detach())
    assert loc == pytest.approx(0.10, abs=0.002)
    a = fit.samples["a"].reshape(-1)
    assert abs(float(a.mean()) - loc) < 4 * float(a.std()) / math.sqrt(200)
    again = m.fit({"y": 0.5}, infer="svi(steps=10, seed=0, samples=200)")
    assert torch.equal(again.samples["a"], fit.samples["a"])


def test_a_point_estimate_starts_again_where_a_latent_bound_empties_a_set():
    # the guide's own start (a at its prior's median 0.5 less 15 draws' noise; z's
    # auxiliary at its median) put a below 0: "the ELBO became infinite at step 1"
    m = ppl.compile(BETA_UPPER)

    def point(infer):
        fit = m.fit({}, infer=infer)
        return float(fit.samples["a"].reshape(-1)[0]), float(fit.samples["z"].reshape(-1)[0])

    a, z = point("map(steps=300, seed=0)")
    # the joint mode: Beta(2, 2)'s at z = 0.5 and a's prior's at 0.5, with z < a: the
    # supremum at a = z = 0.5, which 300 steps of lr 0.01 approach from above a
    # (a: 0.607, z: 0.484 at seed 0); map and svi(guide=delta) are one fit, to the bit,
    # so each one's bounds and repeat hold for the other
    assert 0.48 < z < 0.5 < a < 0.61
    assert point("svi(steps=300, seed=0, guide=delta)") == (a, z)
    # the same seed, the same starts, the same fit (map's repeat: the test above)
    assert point("svi(steps=300, seed=0, guide=delta)") == (a, z)


NEVER_MEETS = """model Z() {
  a ~ Normal(0, 1)
  b = a - 100
  z: real<upper=b> ~ Beta(2, 2)
}"""


def test_the_error_says_which_starts_were_tried():
    m = ppl.compile(NEVER_MEETS)
    with pytest.raises(BdlError) as e:
        m.fit({}, infer="map(steps=5, seed=0)")
    assert "map: the ELBO became infinite at step 1 of 5" in str(e.value)
    assert f"map tried {INIT_TRIES} starts (the guide's own, then points drawn uniformly " \
        "in (-2, 2)" in str(e.value)


def test_a_prior_that_always_refuses_says_what_was_tried():
    m = ppl.compile("""model U(y: real) {
  a ~ Normal(0, 1)
  y ~ Uniform(a + 20, 1.0)
}""")
    with pytest.raises(BdlError) as e:
        m.fit({"y": 0.5}, infer="nuts(samples=5, warmup=5, chains=1, seed=0)")
    assert "Uniform's low is" in str(e.value)
    assert f"run at {INIT_TRIES} draws from the prior" in str(e.value)


@pytest.mark.parametrize("infer", ["map(steps=5, seed=0)",
                                   "nuts(samples=5, warmup=5, chains=1, seed=0)"])
def test_a_data_argument_outside_its_constraint_is_still_the_located_error(infer):
    m = ppl.compile("""model D(y: real, s: real) {
  a ~ Normal(0, 1)
  y ~ Normal(a, s)
}""")
    with pytest.raises(BdlError) as e:
        m.fit({"y": 0.5, "s": -1.0}, infer=infer)
    text = str(e.value)
    assert "3:17: error: Normal's scale is -1; it must be numbers > 0" in text
    assert "draws from the prior" not in text and "starts" not in text


def test_a_refused_param_start_is_the_located_error_at_once():
    # a param requires grad as a latent's leaf does: it was taken for one that follows the
    # latents (100 prior draws, then a note blaming them); its start is the model's error
    m = ppl.compile("""model P(y: real) {
  mu ~ Normal(0, 1)
  param s: real = -1.0
  y ~ Normal(mu, s)
}""")
    with pytest.raises(BdlError) as e:
        m.fit({"y": 0.5}, infer="map(steps=5, seed=0)")
    text = str(e.value)
    assert "Normal's scale is -1; it must be numbers > 0" in text
    assert "draws from the prior" not in text and "tried" not in text


def test_an_infinite_elbo_from_the_data_is_raised_at_once():
    # y = 1e20 in float32: Normal's log density of it is -inf at every start, no bound
    # follows a latent: the error, without 100 starts and a note that blames them
    m = ppl.compile("""model N(y: real) {
  mu ~ Normal(0, 1)
  y ~ Normal(mu, 1)
}""")
    with pytest.raises(BdlError) as e:
        m.fit({"y": 1e20}, infer="map(steps=5, seed=0)")
    assert "map: the ELBO became infinite at step 1 of 5" in str(e.value)
    assert "tried" not in str(e.value)


def test_a_support_message_keeps_the_notes_of_what_was_tried(monkeypatch):
    # a refusal that renders as a support message ('y' element 1 is -2; Poisson is over
    # ...) dropped the exception's notes (a fit's "tried 100 ..."): kept as the others'
    from ppl.infer import run

    check = run.check_supports

    def noted(*args, **kwargs):  # the fit's data check, which refuses y
        try:
            return check(*args, **kwargs)
        except ValueError as exc:
            exc.add_note("tried 7 things first")
            raise

    monkeypatch.setattr(run, "check_supports", noted)
    m = ppl.compile("""model P(y: int[N]) {
  lam ~ HalfNormal(5)
  y ~ Poisson(lam)
}""", "m.bdl")
    with pytest.raises(BdlError) as e:
        m.fit({"y": [1, -2, 3]}, infer="svi(steps=1, seed=0)")
    text = e.value.render()
    assert text.split("\n")[0] == "m.bdl:3:3: error: 'y' element 1 is -2; Poisson is over " \
        "integers >= 0"
    assert "note: tried 7 things first" in text


def test_site_layout_leaves_every_random_stream_as_it_was():
    # seed 0's first draw is refused (a = 1.54): the redraws reseed torch, numpy and
    # random; only torch's stream was restored after
    import random

    import numpy as np

    from ppl.infer.draws import site_layout

    model = ppl.compile(UNIFORM).pyro_model
    pyro.set_rng_seed(0)
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    assert site_layout(model, {"y": torch.tensor(0.5)}) == {}
    assert torch.equal(torch.get_rng_state(), states[0])
    assert (np.random.get_state()[1] == states[1]).all()
    assert random.getstate() == states[2]


PRIOR_UNIFORM = """model P() {
  a ~ Normal(0.5, 1)
  y ~ Uniform(a, 1.0)
}"""


def test_sample_prior_draws_again_where_the_prior_has_density_0():
    # 31% of N(0.5, 1) lies above 1, where Uniform(a, 1.0) refuses a (seed 0's first draw
    # did: an error): the model's prior is N(0.5, 1) truncated to a < 1, mean
    # 0.5 - r with r = phi(0.5) / Phi(0.5) (-0.00916), variance 1 - 0.5 r - r^2 (0.4861)
    from scipy.stats import norm

    n = 1000
    out = ppl.compile(PRIOR_UNIFORM).sample_prior(num_samples=n, seed=0)
    a, y = out["a"].double(), out["y"].double()
    assert a.shape == (n,) and bool((a < 1).all()) and bool(((a < y) & (y < 1)).all())
    r = norm.pdf(0.5) / norm.cdf(0.5)
    mean, var = 0.5 - r, 1 - 0.5 * r - r * r
    assert mean == pytest.approx(-0.00916, abs=1e-5) and var == pytest.approx(0.4861, abs=1e-4)
    assert abs(float(a.mean()) - mean) < 4 * math.sqrt(var / n)
    assert abs(float(a.var()) - var) < 0.1 * var  # the untruncated prior's is 1
    # y | a ~ Uniform(a, 1): E y = (E a + 1) / 2, Var y = Var a / 4 + E (1 - a)^2 / 12
    var_y = var / 4 + (var + (1 - mean) ** 2) / 12
    assert abs(float(y.mean()) - (mean + 1) / 2) < 4 * math.sqrt(var_y / n)
    again = ppl.compile(PRIOR_UNIFORM).sample_prior(num_samples=50, seed=0)  # the same draws
    assert torch.equal(again["a"], out["a"][:50]) and torch.equal(again["y"], out["y"][:50])


def test_sample_prior_that_always_refuses_says_what_was_tried():
    m = ppl.compile("""model P() {
  a ~ Normal(0, 1)
  y ~ Uniform(a + 20, 1.0)
}""")
    with pytest.raises(BdlError) as e:
        m.sample_prior(num_samples=10, seed=0)
    assert "Uniform's low is" in str(e.value)
    assert f"{INIT_TRIES} prior draws were refused and 0 kept" in str(e.value)


def test_sample_prior_of_a_data_argument_outside_its_constraint_is_the_error_at_once():
    m = ppl.compile("""model D(s: real) {
  a ~ Normal(0, 1)
  y ~ Normal(a, s)
}""")
    with pytest.raises(BdlError) as e:
        m.sample_prior({"s": -1.0}, num_samples=10, seed=0)
    assert "Normal's scale is -1; it must be numbers > 0" in str(e.value)
    assert "refused" not in str(e.value)


def _exact_a_under_beta_upper() -> tuple[float, float]:
    """Mean and sd of a under BETA_UPPER: z integrated out, p(a) ∝ phi(a - 0.5) F(min(a,
    1)) for a > 0, F(t) = 3t^2 - 2t^3 Beta(2, 2)'s CDF (its density unnormalised on z < a,
    as Stan's), by scipy's quad: 1.27846 and 0.62769."""
    from scipy import integrate
    from scipy.stats import norm

    def w(a, k):
        t = min(a, 1.0)
        return a ** k * norm.pdf(a, 0.5, 1) * (3 * t * t - 2 * t ** 3)

    mom = [integrate.quad(w, 0, 1, args=(k,))[0] + integrate.quad(w, 1, math.inf, args=(k,))[0]
           for k in range(3)]
    m = mom[1] / mom[0]
    return m, math.sqrt(mom[2] / mom[0] - m * m)


def test_svi_draws_a_step_again_where_the_guide_drew_density_0():
    # AutoNormal's a is Gaussian, so a step's draw may fall at a < 0, where z's set is
    # empty: the ELBO was -inf there and the fit stopped ("the ELBO became infinite at
    # step 200 of 300" at seed 0). Such a step is drawn again, and so are the fit's draws.
    m, sd = _exact_a_under_beta_upper()
    assert m == pytest.approx(1.27846, abs=1e-5) and sd == pytest.approx(0.62769, abs=1e-5)
    fit = ppl.compile(BETA_UPPER).fit({}, infer="svi(steps=300, seed=0, samples=300)")
    a, z = fit.samples["a"].reshape(-1), fit.samples["z"].reshape(-1)
    assert bool(((0 < z) & (z < a)).all())  # some were at a < 0, with z < 0 or z > a
    # No Gaussian over a has a finite ELBO here (mass at a < 0), and the redrawn step's
    # gradient in a's loc has an infinite mean (log p falls as 2 log a at a -> 0+), so the
    # fit has no exact target: a's loc ended at 1.27 to 1.47 over seeds 0-3 (2000 steps).
    # Its mean is within 0.4 posterior sd of the exact one, and its sd is the mean-field
    # Gaussian's, below the posterior's (0.44 to 0.51 at 2000 steps)
    assert abs(float(a.mean()) - m) < 0.4 * sd
    assert 0.3 < float(a.std()) < sd


def test_a_redrawn_step_moves_nothing_until_a_draw_has_density(monkeypatch):
    # _step with an ELBO that is infinite at the guide's first 3 draws: no parameter is
    # moved at those, the 4th is the step; at 100 infinite draws in a row, the error
    from ppl.infer import run

    class Svi:
        model = guide = None

        def __init__(self, losses):
            self.losses, self.moved = list(losses), 0

        def loss_and_grads(self, *args, **kwargs):
            return self.losses.pop(0)

        def optim(self, params):
            self.moved += 1

    class Zero:
        traces: list = []

        def density_zero(self, loss):
            return True

    opts = {"steps": 10, "lr": 0.01}
    svi = Svi([math.inf] * 3 + [2.5])
    assert run._step(svi, {}, 4, opts, "svi", densities=Zero(), redraw=True) == 2.5
    assert svi.moved == 1 and not svi.losses
    svi = Svi([math.inf] * (INIT_TRIES + 1))
    with pytest.raises(BdlError) as e:
        run._step(svi, {}, 4, opts, "svi", densities=Zero(), redraw=True)
    assert svi.moved == 0 and len(svi.losses) == 1
    assert "svi: the ELBO became infinite at step 5 of 10" in str(e.value)
    assert f"drawn again {INIT_TRIES} times at this step" in str(e.value)
    # the first step is not drawn again here (the fit starts the guide again), nor a delta
    for step, redraw in ((0, True), (4, False)):
        svi = Svi([math.inf, 1.0])
        with pytest.raises(BdlError) as e:
            run._step(svi, {}, step, opts, "svi", densities=Zero(), redraw=redraw)
        assert e.value.density_zero and svi.moved == 0 and svi.losses == [1.0]


BOUND_AND_DATA = """model Y(y: real) {
  a ~ Normal(0.5, 1)
  z: real<upper=a> ~ Beta(2, 2)
  y ~ Normal(z, 1)
}"""


@pytest.mark.parametrize("infer", ["map(steps=5, seed=0, dtype=float32)",
                                   "svi(steps=5, seed=0, dtype=float32)"])
def test_an_infinite_elbo_from_the_data_is_raised_at_once_beside_a_following_bound(infer):
    # y = 1e20 in float32: y's Normal log density is -inf at every start. z's declared
    # bound follows a, which made any infinite ELBO a start of density 0: 100 starts,
    # then a note blaming them. The site that is -inf is the observed y: the error at once
    method = infer.split("(")[0]
    with pytest.raises(BdlError) as e:
        ppl.compile(BOUND_AND_DATA).fit({"y": 1e20}, infer=infer)
    assert f"{method}: the ELBO became infinite at step 1 of 5" in str(e.value)
    assert "tried" not in str(e.value)
    # the same model at a start of density 0 (its bound's set empty) still starts again
    fit = ppl.compile(BOUND_AND_DATA).fit({"y": 0.5}, infer="map(steps=50, seed=0)")
    assert 0 < float(fit.samples["z"].reshape(-1)[0]) < float(fit.samples["a"].reshape(-1)[0])


def test_guide_draws_that_always_have_density_0_are_the_located_error():
    # site_draws(in_support=True) after a fit: a guide that puts a below 0 empties z's
    # set at every draw; the 100th was kept at density 0 (z = -0.5, outside [0, a]) unsaid
    import pyro.distributions as dist

    from ppl import locate
    from ppl.infer.draws import site_draws

    m = ppl.compile(BETA_UPPER)

    def guide():
        pyro.sample("a", dist.Normal(-3.0, 0.1))

    pyro.set_rng_seed(0)
    with pytest.raises(BdlError) as e, locate.located(m._pseudo):
        site_draws(m.pyro_model, {}, guide=guide, num_samples=5, in_support=True)
    said = str(e.value)
    assert ":3:3: error: the guide's draws put the latent 'z' where the model has " \
        "density 0" in said
    assert f"at draw 1 of 5, {INIT_TRIES} draws of the guide in a row were refused" in said

    # a guide with mass where the model has density: each of its draws kept, inside z's set
    def inside():
        pyro.sample("a", dist.Normal(0.6, 0.01))

    out = site_draws(m.pyro_model, {}, guide=inside, num_samples=50, in_support=True)
    a, z = out["a"], out["z"]
    assert a.shape == z.shape == (50,) and bool(((0 < z) & (z < a)).all())


EMPTY_BELOW = """model M() {
  a ~ Normal(0, 1)
  z: real<upper=a> ~ Beta(2, 2)
}"""


def test_sample_prior_draws_again_where_a_declared_set_is_empty():
    # Beta's (0, 1) meets z's (-inf, a) in nothing at a <= 0 (half of a's draws): z's
    # draw was the set's midpoint a / 2, at density 0, and kept. The model's prior is
    # N(0, 1) restricted to a > 0 times Beta(2, 2) on (0, min(a, 1)), unnormalised in z as
    # Stan's: a | a > 0 is half-normal (mean sqrt(2 / pi), variance 1 - 2 / pi), z | a is
    # Beta(2, 2) truncated to (0, t), t = min(a, 1): F(z) / F(t) is uniform, F(x) = 3x^2 -
    # 2x^3, and E[z | a] = t (2 - 1.5 t) / (3 - 2 t)
    from scipy.stats import halfnorm, kstest

    n = 200
    out = ppl.compile(EMPTY_BELOW).sample_prior(num_samples=n, seed=0)
    a, z = out["a"].double(), out["z"].double()
    assert a.shape == z.shape == (n,)
    assert bool((a > 0).all()) and bool(((0 < z) & (z < torch.clamp(a, max=1.0))).all())
    mean, var = math.sqrt(2 / math.pi), 1 - 2 / math.pi
    assert abs(float(a.mean()) - mean) < 4 * math.sqrt(var / n)
    assert kstest(a.numpy(), halfnorm.cdf).pvalue > 1e-3
    t = torch.clamp(a, max=1.0)

    def cdf(x):
        return 3 * x * x - 2 * x ** 3

    assert kstest((cdf(z) / cdf(t)).numpy(), "uniform").pvalue > 1e-3
    resid = z - t * (2 - 1.5 * t) / (3 - 2 * t)
    assert abs(float(resid.mean())) < 4 * float(resid.std()) / math.sqrt(n)
    again = ppl.compile(EMPTY_BELOW).sample_prior(num_samples=20, seed=0)  # the same draws
    assert torch.equal(again["a"], out["a"][:20]) and torch.equal(again["z"], out["z"][:20])


def test_sample_prior_whose_declared_set_is_always_empty_is_the_located_error():
    # z's set (-inf, a - 100) never meets Beta's (0, 1): each draw was kept at density 0
    # (z = (a - 100) / 2, outside Beta's support) without a word
    m = ppl.compile(NEVER_MEETS)
    with pytest.raises(BdlError) as e:
        m.sample_prior(num_samples=10, seed=0)
    said = str(e.value)
    assert ":4:3: error: the declared set of this latent, numbers < -98.4" in said
    assert "and Beta's support, numbers in [0, 1], have no value in common" in said
    assert f"{INIT_TRIES} prior draws were refused and 0 kept" in said


LABELLED = """model L(y: real) {
  a ~ Normal(0, 1)
  z: real<upper=a> ~ Beta(2, 2)
  k ~ Bernoulli(0.5)
  y ~ Normal(k, 1)
}"""


def _beta22_cdf(x):
    return 3 * x * x - 2 * x ** 3


def _labelled_draws(guide, n: int) -> dict:
    """site_draws of LABELLED at y = 0.7 from ``guide``, checked for density 0 (k summed
    out in the fit, drawn from p(k | the draw, y) after it)."""
    from ppl import locate
    from ppl.infer.draws import site_draws

    m = ppl.compile(LABELLED)
    pyro.set_rng_seed(0)
    with locate.located(m._pseudo):
        return site_draws(m.pyro_model, {"y": torch.tensor(0.7)}, guide=guide,
                          num_samples=n, in_support=True)


def test_guide_draws_with_labels_summed_out_are_drawn_again_where_density_0():
    # the guide's draws of a were taken as they came where labels are summed out (a <= 0
    # in 31% of N(0.1, 0.2): z's set empty, z at its midpoint a / 2, density 0). Kept,
    # they are the guide's law restricted to where the model has density: a ~ N(0.1, 0.2)
    # truncated to a > 0, z | a Beta(2, 2) on (0, min(a, 1)) (z is not in the guide: its
    # prior given a), and k independent of both: p(k = 1 | y = 0.7) = phi(0.3) / (phi(0.7)
    # + phi(0.3)) = 0.54983
    import pyro.distributions as dist
    from scipy.stats import kstest, norm, truncnorm

    def guide(**kwargs):
        pyro.sample("a", dist.Normal(0.1, 0.2))

    n = 60  # each draw runs infer_discrete: ~30 ms
    out = _labelled_draws(guide, n)
    a, z, k = out["a"].double(), out["z"].double(), out["k"].double()
    assert a.shape == z.shape == k.shape == (n,)
    t = torch.clamp(a, max=1.0)
    assert bool((a > 0).all()) and bool(((0 < z) & (z < t)).all())
    law = truncnorm(-0.5, math.inf, loc=0.1, scale=0.2)
    assert law.mean() == pytest.approx(0.1 + 0.2 * norm.pdf(0.5) / norm.cdf(0.5), abs=1e-12)
    assert abs(float(a.mean()) - law.mean()) < 4 * law.std() / math.sqrt(n)
    assert kstest(a.numpy(), law.cdf).pvalue > 1e-3
    assert kstest((_beta22_cdf(z) / _beta22_cdf(t)).numpy(), "uniform").pvalue > 1e-3
    p1 = norm.pdf(0.3) / (norm.pdf(0.7) + norm.pdf(0.3))
    assert p1 == pytest.approx(0.54983, abs=1e-5)
    assert abs(float(k.mean()) - p1) < 4 * math.sqrt(p1 * (1 - p1) / n)


def test_guide_draws_with_labels_that_always_have_density_0_are_the_located_error(
        monkeypatch):
    # as without labels: the located error at z (the last draw was kept at density 0,
    # unsaid). The redraws are bounded at 10 here: each runs infer_discrete
    import pyro.distributions as dist

    from ppl.infer import run

    monkeypatch.setattr(run, "INIT_TRIES", 10)

    def outside(**kwargs):
        pyro.sample("a", dist.Normal(-3.0, 0.1))

    with pytest.raises(BdlError) as e:
        _labelled_draws(outside, 5)
    said = str(e.value)
    assert ":3:3: error: the guide's draws put the latent 'z' where the model has " \
        "density 0" in said
    assert "at draw 1 of 5, 10 draws of the guide in a row were refused" in said


def test_svi_with_labels_summed_out_draws_a_later_step_again(monkeypatch):
    # TraceEnum_ELBO's steps: a's guide starts at the prior's median 0, so half its draws
    # put a <= 0 (z's set empty, the ELBO -inf); seed 0's second step drew such a state
    # twice and was drawn again, not stopped; the fit's draws each have density
    from ppl.infer import run

    losses = []
    step = run._svi_step

    def kept(svi, kwargs):
        losses.append(step(svi, kwargs))
        return losses[-1]

    monkeypatch.setattr(run, "_svi_step", kept)
    fit = ppl.compile(LABELLED).fit({"y": 0.7}, infer="svi(steps=20, seed=0, samples=50, "
                                    "lr=0.05)")
    assert math.isfinite(losses[0]) and losses[1:3] == [math.inf, math.inf]
    assert len(losses) == 22 and all(math.isfinite(x) for x in losses[3:])
    a, z = fit.samples["a"].reshape(-1), fit.samples["z"].reshape(-1)
    assert a.shape == (50,) and bool(((0 < z) & (z < a)).all())
    assert set(fit.samples["k"].reshape(-1).tolist()) <= {0, 1}


@pytest.mark.parametrize("src, data", [(BETA_UPPER, {}), (LABELLED, {"y": 0.7})])
def test_jit_is_set_aside_where_a_declared_bound_follows_the_latents(src, data):
    # torch.jit.trace records one path through the model at the first step's draw:
    # compiled near a = 0.5, z's set (0, min(a, 1)) was read as (0, a) ever after, so at a
    # guide loc of 3 the compiled ELBO was inf where the model's is 7.66 (such draws were
    # redrawn as density 0: 300 steps at seed 0 gave a's draws mean 1.06, sd 0.33;
    # uncompiled 1.29, 0.48, and the exact posterior's are 1.28, 0.63).
    # The fit runs uncompiled, with a warning: the same fit as jit=false, to the bit
    # (JitTraceEnum_ELBO where the label is summed out, likewise)
    m = ppl.compile(src)
    infer = "svi(steps=20, seed=0, samples=10{})"
    with pytest.warns(UserWarning, match="svi: jit=true is not used: the declared bound "
                      "of the latent 'z' follows the latents"):
        compiled = m.fit(data, infer=infer.format(", jit=true"))
    plain = m.fit(data, infer=infer.format(""))
    assert compiled.elbo == plain.elbo and len(plain.elbo) == 20
    for k in plain.samples:
        assert torch.equal(compiled.samples[k], plain.samples[k])


def test_jit_still_compiles_where_no_declared_bound_follows_the_latents():
    # data bounds, and a support that follows a latent with no declared set (its map onto
    # (a, a + 1) is one formula at every draw): no warning, compiled
    import warnings

    from pyro.infer import JitTrace_ELBO

    from ppl.infer import run

    for src, data, follow in [("""model N(y: real) {
  mu ~ Normal(0, 1)
  s: real<lower=0> ~ HalfNormal(1)
  y ~ Normal(mu, s)
}""", {"y": 0.5}, []), ("""model U(y: real[N]) {
  a ~ Normal(0, 1)
  z ~ Uniform(a, a + 1)
  y ~ Normal(z, 0.1)
}""", {"y": [0.2, 0.9, 0.5]}, ["z"])]:
        m = ppl.compile(src)
        kwargs = m.bind(data)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert not run._jit_refused(m.pyro_model, kwargs, {"jit": True}, "svi")
        assert run._following_bounds(m.pyro_model, kwargs) == follow
        assert run._following_bounds(m.pyro_model, kwargs, declared=True) == []
    assert isinstance(run._elbo({"jit": True, "particles": 1}), JitTrace_ELBO)


@pytest.mark.parametrize("method", ["nuts", "hmc"])
@pytest.mark.parametrize("src, data", [(BETA_UPPER, {}), (LABELLED, {"y": 0.7})])
def test_a_sampler_sets_jit_aside_where_a_declared_bound_follows_the_latents(method, src,
                                                                            data):
    # NUTS's potential is traced as svi's ELBO is, with the same fixed branches: traced at
    # (a, z_unconstrained) = (0.3, 0), BETA_UPPER's compiled potential read z's set (0,
    # min(a, 1)) as (0, a) ever after: 2.28198 at (1.5, 0) where the model's is 2.39977,
    # inf at (2, 1) and (3, 2) where it is 3.50523 and 6.75989 (equal below a = 1). Such
    # a fit runs uncompiled, with a warning: the same draws as jit=false, to the bit
    m = ppl.compile(src)
    infer = f"{method}(samples=10, warmup=10, chains=1, seed=0{{}})"
    with pytest.warns(UserWarning, match=f"{method}: jit=true is not used: the declared "
                      "bound of the latent 'z' follows the latents, and a JIT-compiled "
                      "potential keeps"):
        compiled = m.fit(data, infer=infer.format(", jit=true"))
    plain = m.fit(data, infer=infer.format(""))
    assert compiled.divergences == plain.divergences
    assert set(compiled.samples) == set(plain.samples)
    for k in plain.samples:
        assert torch.equal(compiled.samples[k], plain.samples[k])
