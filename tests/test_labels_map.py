"""The ``labels`` option: summed-out labels drawn per draw from their exact conditional
(``sample``, the default) or set to its most probable joint assignment (``map``, Pyro's
``infer_discrete(temperature=0)``; the Viterbi path of a chain of labels)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import ppl
from ppl.infer.draws import site_draws
from ppl.infer.methods import lookup

# a two-state HMM of four steps, every parameter given: the labels are all there is to
# draw, so each fit's draws are exact (nuts/hmc with no kernel, svi/map with no guide)
HMM = """
model H(y0: real, y1: real, y2: real, y3: real, A: real[2, 2], pi: real[2], mu: real[2],
        s: real) {
  z0 ~ Categorical(pi)
  z1 ~ Categorical(A[z0])
  z2 ~ Categorical(A[z1])
  z3 ~ Categorical(A[z2])
  y0 ~ Normal(mu[z0], s)
  y1 ~ Normal(mu[z1], s)
  y2 ~ Normal(mu[z2], s)
  y3 ~ Normal(mu[z3], s)
}
"""
A = [[0.9, 0.1], [0.1, 0.9]]
PI = [0.5, 0.5]
MU = [0.0, 1.0]
S = 0.5
# y2 = -0.3 alone points at state 0, its neighbours at state 1: state 0 is y2's most
# probable state once its neighbours are summed over (0.60), but every path through it
# pays two switches, so the most probable path stays in state 1 throughout
Y = [0.6, 0.9, -0.3, 1.0]


def _data(y):
    return {"y0": y[0], "y1": y[1], "y2": y[2], "y3": y[3], "A": A, "pi": PI, "mu": MU,
            "s": S}


def _path_posterior(y) -> dict[tuple, float]:
    """p(z | y) of every one of the 2^T paths, by brute force over them."""
    logp = {}
    for z in itertools.product(range(2), repeat=len(y)):
        lp = math.log(PI[z[0]]) + sum(math.log(A[z[t - 1]][z[t]]) for t in range(1, len(y)))
        lp += sum(-0.5 * ((y[t] - MU[z[t]]) / S) ** 2 for t in range(len(y)))
        logp[z] = lp
    top = max(logp.values())
    total = sum(math.exp(v - top) for v in logp.values())
    return {z: math.exp(v - top) / total for z, v in logp.items()}


def _paths(fit) -> list[tuple]:
    z = torch.stack([fit.samples[f"z{t}"] for t in range(4)], -1)
    return [tuple(int(v) for v in row) for row in z]


@pytest.fixture(scope="module")
def hmm():
    return ppl.compile(HMM)


def test_brute_force_viterbi_path_is_not_the_per_step_argmax():
    """The constructed case separates the two answers, so the tests below can fail: the
    most probable path is (1, 1, 1, 1) with p = 0.359, while step 2's marginal argmax is
    state 0 (p(z2 = 0 | y) = 0.602)."""
    post = _path_posterior(Y)
    viterbi = max(post, key=post.get)
    marginal = tuple(int(sum(p for z, p in post.items() if z[t] == 1) > 0.5)
                     for t in range(4))
    assert viterbi == (1, 1, 1, 1) and post[viterbi] == pytest.approx(0.35918, abs=1e-5)
    assert marginal == (1, 1, 0, 1)
    assert 1 - sum(p for z, p in post.items() if z[2] == 1) == pytest.approx(0.60187,
                                                                              abs=1e-5)


@pytest.mark.parametrize("method,opts", [
    ("nuts", {"chains": 2, "samples": 4, "warmup": 0}),
    ("hmc", {"chains": 1, "samples": 3, "warmup": 0}),
    ("svi", {"steps": 1, "samples": 4}),
    ("map", {"steps": 1, "samples": 3}),
])
def test_labels_map_is_the_viterbi_path_under_every_method(hmm, method, opts):
    """labels=map: every draw is the joint argmax of the chain of labels, found by brute
    force over the 16 paths, not the per-step argmax (1, 1, 0, 1)."""
    post = _path_posterior(Y)
    viterbi = max(post, key=post.get)
    fit = hmm.fit(_data(Y), infer=method, labels="map", seed=0, **opts)
    assert fit.options["labels"] == "map"
    paths = _paths(fit)
    assert len(paths) == opts.get("chains", 1) * opts["samples"]
    assert set(paths) == {viterbi}


def test_labels_sample_is_the_default_and_draws_paths_by_their_posterior(hmm):
    """Without the option the labels are still drawn: the paths vary from draw to draw,
    and the Viterbi path comes up at its posterior probability 0.359 (250 draws, 4
    binomial standard errors: 0.12)."""
    fit = hmm.fit(_data(Y), infer="nuts", chains=1, samples=250, warmup=0, seed=0)
    assert fit.options["labels"] == "sample"
    paths = _paths(fit)
    assert len(set(paths)) > 3
    p = _path_posterior(Y)[(1, 1, 1, 1)]
    freq = paths.count((1, 1, 1, 1)) / len(paths)
    assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / len(paths))


MIX = """
model Mix(y: real[N], w: real[2], mu: real[2]) {
  s: real<lower=0> ~ LogNormal(-1, 0.5)
  plate i in N {
    z ~ Categorical(w)
    y ~ Normal(mu[z], s)
  }
}
"""
MIX_Y = [-0.2, 0.5, 0.7, 0.9, 1.3]
W, MIX_MU = [0.8, 0.2], [0.0, 1.0]


def _argmax_labels(s: float, ys=MIX_Y) -> list[int]:
    """Each point's most probable component at scale s, by hand: z = 1 where
    log 0.2 - (y - 1)^2 / (2 s^2) > log 0.8 - y^2 / (2 s^2)."""
    return [int(math.log(W[1]) - (y - MIX_MU[1]) ** 2 / (2 * s * s)
                > math.log(W[0]) - (y - MIX_MU[0]) ** 2 / (2 * s * s)) for y in ys]


def test_mixture_labels_map_at_a_fixed_scale():
    """At s = 0.5 the points' argmax labels by hand: y^2 - (y - 1)^2 = 2y - 1 against
    2 s^2 log 4 = 0.693, so z = 1 for y > 0.847 only: [0, 0, 0, 1, 1] (0.7, nearer 1,
    stays with the heavier component 0); sampled, the point at 0.7 (p(z=1) = 0.31) is
    not always 0."""
    m = ppl.compile(MIX)
    kwargs = m.bind({"y": MIX_Y, "w": W, "mu": MIX_MU})
    post = {"s": torch.full((50,), 0.5)}
    assert _argmax_labels(0.5) == [0, 0, 0, 1, 1]
    torch.manual_seed(0)
    z = site_draws(m.pyro_model, kwargs, posterior=post, sites=["z"], labels="map")["z"]
    assert z.tolist() == [[0, 0, 0, 1, 1]] * 50
    torch.manual_seed(0)
    z = site_draws(m.pyro_model, kwargs, posterior=post, sites=["z"])["z"]
    assert 0 < int(z[:, 2].sum()) < 50


@pytest.mark.parametrize("method,opts", [
    ("nuts", {"chains": 1, "samples": 30, "warmup": 30}),
    ("svi", {"steps": 50, "lr": 0.05, "samples": 30}),
])
def test_mixture_labels_map_per_draw_of_the_scale(method, opts, tmp_path):
    """With s fitted, each draw's labels are the argmax given that draw's s (the point at
    0.7 flips to component 1 for s < 0.38): checked draw by draw against the formula."""
    m = ppl.compile(MIX)
    fit = m.fit({"y": MIX_Y, "w": W, "mu": MIX_MU}, infer=method, labels="map", seed=1,
                **opts)
    s = fit.samples["s"].tolist()
    want = [_argmax_labels(v) for v in s]
    assert fit.samples["z"].tolist() == want
    assert len({tuple(r) for r in want}) > 1  # the draws of s cross a threshold
    # predicting on new data sets the new points' labels the same way, per draw of s
    y_new = [0.75, 1.1, -0.4]
    pred = fit.predict({"y": y_new, "w": W, "mu": MIX_MU}, seed=0)
    assert pred["z"].tolist() == [_argmax_labels(v, y_new) for v in s]
    # and so does a saved run (bdl predict): run.json records the option
    fit.save(tmp_path / "run")
    pred = m.predict_run(tmp_path / "run", {"y": y_new, "w": W, "mu": MIX_MU}, seed=0)
    assert pred["z"].tolist() == [_argmax_labels(v, y_new) for v in s]


def test_labels_option_is_checked_with_the_others(hmm):
    """A value outside the choices is an error with the nearest one suggested; every method
    that sums labels out takes the option, sghmc (which refuses labels) does not."""
    for name in ("nuts", "hmc", "svi", "map"):
        opt = lookup(name).options["labels"]
        assert (opt.default, opt.choices) == ("sample", ("sample", "map"))
    assert "labels" not in lookup("sghmc").options
    with pytest.raises(ppl.BdlError) as e:
        hmm.fit(_data(Y), infer="nuts(labels=mapp)")
    assert "did you mean 'map'?" in e.value.render()


@pytest.mark.parametrize("labels", ["sample", "map"])
def test_a_model_of_labels_alone_predicts_them_given_the_new_data(labels, tmp_path):
    """Every latent a label: the fit keeps no continuous draw, and a prediction on new data
    draws the labels from p(z | y_new) (sigmoid(6 y) for components at -3 and 3, unit
    noise), or sets them to its argmax; it drew them from the prior (mean 0.5)."""
    src = ("model L(y: real[N]) {\n  plate n in N {\n    z ~ Bernoulli(0.5)\n"
           "    y ~ Normal(where(z == 1, 3.0, -3.0), 1)\n  }\n}\n")
    m = ppl.compile(src)
    fit = m.fit({"y": [-3.0, 3.0]}, infer="nuts", samples=250, warmup=10, chains=2,
                labels=labels, seed=0)
    y_new = [0.1, -0.2, 3.0]
    p1 = [1 / (1 + math.exp(-6 * y)) for y in y_new]
    fit.save(tmp_path / "run")
    for pred in (fit.predict({"y": y_new}, seed=0),
                 m.predict_run(tmp_path / "run", {"y": y_new}, seed=0)):
        z = pred["z"].double()
        assert z.shape == (500, 3)
        if labels == "map":
            assert z.tolist() == [[float(p > 0.5) for p in p1]] * 500
        else:
            # 4 binomial standard errors of 500 draws (<= 0.09) are under the distance of
            # each p from the prior's 0.5 (>= 0.15)
            se = [math.sqrt(p * (1 - p) / 500) for p in p1]
            for got, p, e in zip(z.mean(0).tolist(), p1, se, strict=True):
                assert abs(got - p) < 4 * e + 1e-12
