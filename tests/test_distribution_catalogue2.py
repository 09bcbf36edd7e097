"""Catalogue entries the scipy fuzz of tests/test_distribution_findings.py left out, each
checked through ``m.log_density`` against an independent reference (a closed form,
scipy, or a brute-force sum over every value of the object):

1. ``SpanningTree``, ``OneOneMatching``, ``OneTwoMatching``: their value is an object of
   fixed shape (a tree's V - 1 edges, one partner per source), read as integer indices
   (``rt.SpanningTree``..., ``signatures.LONG_VALUES``, ``signatures.EVENT_RANKS``).
2. ``Empirical`` in a plate, and as a latent.
3. ``Stable`` (S0 coordinates, scipy's ``levy_stable``), ``SineBivariateVonMises``
   (its Bessel series), ``ProjectedNormal`` and ``VonMises3D`` (closed forms on the
   circle and sphere), the ``Relaxed*`` classes (the Concrete densities).
4. ``DiscreteHMM`` and ``GaussianHMM``: brute force over every state path, the joint
   Gaussian of the observations; Pyro's initial state is the one before the first
   observation.
5. Prior draws of some of them against exact moments or frequencies.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.stats as st
from scipy import integrate
from scipy import special as sp
from scipy.special import logsumexp

import ppl
from ppl.syntax.diagnostics import BdlError

pytestmark = pytest.mark.usefixtures("float64")


def _ld(src: str, values: dict, data: dict) -> float:
    return float(ppl.compile(src).log_density(values, data))


# ---- 1. trees and matchings: int values, shapes of the object ----

EDGE_LOGITS = [0.1, 0.5, -0.3]  # V = 3 nodes: edges (0, 1), (0, 2), (1, 2)


def _tree_logp(tree) -> float:
    w = np.array(EDGE_LOGITS)

    def eid(a, b):  # Pyro's order: (v1, v2) with v1 < v2 is v1 + v2 (v2 - 1) / 2
        a, b = min(a, b), max(a, b)
        return a + b * (b - 1) // 2

    trees = [((0, 1), (0, 2)), ((0, 1), (1, 2)), ((0, 2), (1, 2))]
    log_z = logsumexp([sum(w[eid(*e)] for e in t) for t in trees])
    return sum(w[eid(*e)] for e in tree) - log_z


def test_spanning_tree_observed_and_latent():
    want = _tree_logp([(0, 1), (0, 2)])
    assert want == pytest.approx(-0.751250514, abs=1e-9)
    got = _ld("model M(y: int[2, 2]) { y ~ SpanningTree([0.1, 0.5, -0.3]) }",
              {}, {"y": [[0, 1], [0, 2]]})
    assert got == pytest.approx(want, abs=1e-10)
    # as a latent, its logits from a latent
    src = """
    model M() {
      s ~ Normal(0, 1)
      z: int[2, 2] ~ SpanningTree(s * [0.1, 0.5, -0.3])
    }"""
    got = _ld(src, {"s": 1.0, "z": [[0, 1], [1, 2]]}, {})
    assert got == pytest.approx(st.norm.logpdf(1.0) + _tree_logp([(0, 1), (1, 2)]), abs=1e-10)


def test_spanning_tree_draws_each_tree_by_its_probability():
    m = ppl.compile("model M() { z: int[2, 2] ~ SpanningTree([0.1, 0.5, -0.3]) }")
    n = 1500  # each draw a run of the model; 4 s.e. is <= 0.051 here (p = 0.27..0.40)
    z = np.asarray(m.sample_prior({}, num_samples=n, seed=1)["z"])
    assert z.shape == (n, 2, 2)
    keys = [tuple(sorted(tuple(sorted(e)) for e in t)) for t in z.astype(int).tolist()]
    for tree in [((0, 1), (0, 2)), ((0, 1), (1, 2)), ((0, 2), (1, 2))]:
        p = math.exp(_tree_logp(tree))
        freq = sum(k == tree for k in keys) / len(keys)
        assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / len(keys))


def test_spanning_tree_edge_count_is_a_located_error():
    # written: a compile error at the argument (was found when the model ran)
    with pytest.raises(BdlError) as info:
        ppl.compile("model M(y: int[2, 2]) { y ~ SpanningTree([0.1, 0.5]) }")
    assert "edge_logits has 2 elements: it needs one per pair of nodes" in str(info.value)
    assert ":1:42:" in str(info.value)
    # from the data: when the model runs
    m = ppl.compile("model M(e: real[E], E: int) { z ~ SpanningTree(e) }")
    with pytest.raises(BdlError) as info:
        m.sample_prior({"e": [0.1, 0.5], "E": 2}, num_samples=1)
    assert "edge_logits has 2 elements: it needs one per pair of nodes" in str(info.value)
    assert ":1:31:" in str(info.value)


LOGITS = np.array([[0.1, 0.5, -0.3], [0.2, 0.0, 1.0], [-1.0, 0.3, 0.4]])


def test_one_one_matching_against_every_permutation():
    log_z = logsumexp([sum(LOGITS[i, p[i]] for i in range(3))
                       for p in itertools.permutations(range(3))])
    want = LOGITS[0, 2] + LOGITS[1, 0] + LOGITS[2, 1] - log_z
    got = _ld("model M(y: int[3], A: real[3, 3]) { y ~ OneOneMatching(A) }",
              {}, {"y": [2, 0, 1], "A": LOGITS.tolist()})
    assert got == pytest.approx(want, abs=1e-10)
    src = """
    model M(A: real[3, 3]) {
      s ~ Normal(0, 1)
      z: int[3] ~ OneOneMatching(s * A)
    }"""
    got = _ld(src, {"s": 0.5, "z": [1, 2, 0]}, {"A": LOGITS.tolist()})
    log_z = logsumexp([sum(0.5 * LOGITS[i, p[i]] for i in range(3))
                       for p in itertools.permutations(range(3))])
    want = st.norm.logpdf(0.5) + 0.5 * (LOGITS[0, 1] + LOGITS[1, 2] + LOGITS[2, 0]) - log_z
    assert got == pytest.approx(want, abs=1e-10)


def test_one_two_matching_against_every_assignment():
    lg = np.array([[0.1, 0.5], [0.2, 0.0], [-1.0, 0.3], [0.4, 0.9]])
    vals = [v for v in itertools.product(range(2), repeat=4) if v.count(0) == 2]
    log_z = logsumexp([sum(lg[i, v[i]] for i in range(4)) for v in vals])
    want = lg[0, 1] + lg[1, 0] + lg[2, 0] + lg[3, 1] - log_z
    got = _ld("model M(y: int[4], L: real[4, 2]) { y ~ OneTwoMatching(L) }",
              {}, {"y": [1, 0, 0, 1], "L": lg.tolist()})
    assert got == pytest.approx(want, abs=1e-10)


def test_trees_and_matchings_in_a_plate():
    # each element its own tree, its own permutation (the logits are one per draw)
    src = "model M(y: int[N, 2, 2], N: int) { plate i in N { y ~ SpanningTree(" \
        "[0.1, 0.5, -0.3]) } }"
    got = _ld(src, {}, {"y": [[[0, 1], [0, 2]], [[0, 1], [1, 2]]], "N": 2})
    assert got == pytest.approx(_tree_logp([(0, 1), (0, 2)]) + _tree_logp([(0, 1), (1, 2)]),
                                abs=1e-10)
    src = "model M(y: int[N, 3], A: real[3, 3], N: int) { plate i in N { y ~ " \
        "OneOneMatching(A) } }"
    log_z = logsumexp([sum(LOGITS[i, p[i]] for i in range(3))
                       for p in itertools.permutations(range(3))])
    want = LOGITS[0, 0] + LOGITS[1, 1] + LOGITS[2, 2] + LOGITS[0, 2] + LOGITS[1, 0] \
        + LOGITS[2, 1] - 2 * log_z
    got = _ld(src, {}, {"y": [[0, 1, 2], [2, 0, 1]], "A": LOGITS.tolist(), "N": 2})
    assert got == pytest.approx(want, abs=1e-10)


@pytest.mark.parametrize("name, want", [
    ("OneOneMatching", "OneOneMatching: 'logits' is [3, 2], not N x N (one row per source, "
     "one column per destination)"),
    ("OneTwoMatching", "OneTwoMatching: 'logits' is [3, 2], not 2M x M (two sources per "
     "destination)"),
])
def test_matching_logits_of_the_wrong_shape(name, want):
    # from the data: a located error at the argument (was Pyro's bare AssertionError)
    src = f"model M(y: int[3], A: real[K, J], K: int, J: int) {{ y ~ {name}(A) }}"
    with pytest.raises(BdlError) as info:
        ppl.compile(src).log_density({}, {"y": [0, 1, 0], "A": LOGITS[:, :2].tolist()})
    assert want in str(info.value) and ":1:72:" in str(info.value)
    # written: a compile error
    src = "model M(y: int[3]) { y ~ OneOneMatching([[0.1, 0.5], [0.2, 0.0], [-1.0, 0.3]]) }"
    with pytest.raises(BdlError) as info:
        ppl.compile(src)
    # one argument, named once (was "'logits' [3, 2] and 'logits' [3, 2] disagree on N")
    assert "OneOneMatching: 'logits' is [3, 2], not square: N (sources and destinations) " \
        "counts both its rows and its columns" in str(info.value)
    assert ":1:41:" in str(info.value) and "disagree" not in str(info.value)
    # so is a data argument of a declared shape
    src = "model M(y: int[3], A: real[3, 2]) { y ~ OneOneMatching(A) }"
    with pytest.raises(BdlError, match=r":1:56: error: OneOneMatching: 'logits' is \[3, 2\], "
                       "not square"):
        ppl.compile(src)


@pytest.mark.filterwarnings("ignore:Matching is not binary")
@pytest.mark.parametrize("src, data, want", [
    ("model M(y: real[2]) { y ~ ProjectedNormal([1.0, 0.5]) }", {"y": [1.0, 1.0]},
     "'y' is [1, 1]; ProjectedNormal is over unit vectors (norm 1)"),
    ("model M(y: int[3], A: real[3, 3]) { y ~ OneOneMatching(A) }",
     {"y": [0, 0, 1], "A": LOGITS.tolist()},
     "'y' is [0, 0, 1]; OneOneMatching is over permutations of 0..2 (each destination once)"),
    ("model M(y: int[4], L: real[4, 2]) { y ~ OneTwoMatching(L) }",
     {"y": [0, 0, 0, 1], "L": [[0.0, 0.0]] * 4},
     "'y' is [0, 0, 0, 1]; OneTwoMatching is over vectors of 4 destinations in 0..1, each "
     "destination twice"),
    ("model M(y: int[2, 2]) { y ~ SpanningTree([0.1, 0.5, -0.3]) }", {"y": [[0, 1], [0, 1]]},
     "SpanningTree's value [[0, 1], [0, 1]] is not a spanning tree of 3 nodes as Pyro writes "
     "one: 2 edges [a, b] of nodes 0..2, a < b, sorted by b then by a, that join every node"),
    ("model M(leaves: real[3], t: real[2]) { t ~ CoalescentTimes(leaves, 2.0) }",
     {"leaves": [0.0, 0.0, -0.1], "t": [-0.5, -1.2]},
     "'t' is [-0.5, -1.2]; CoalescentTimes is over increasing times, each with at least 2 "
     "lineages to merge (the leaf times later than it less the coalescence times later "
     "than it)"),
])
def test_a_value_outside_the_support_in_words(src, data, want):
    # were the class's repr: "Sphere", torch's slice of a name without its underscore
    # ("neOneMatchingConstraint()"), Pyro's "Edges are not sorted colexicographically"
    with pytest.raises(BdlError) as info:
        ppl.compile(src).log_density({}, data)
    assert f"error: {want}\n" in str(info.value)


def test_an_unworded_support_is_its_class_name():
    from torch.distributions import constraints

    from ppl.locate import support_words

    class EvenInteger(constraints.Constraint):
        def check(self, value):
            return value % 2 == 0

    assert repr(EvenInteger()) == "venInteger()"  # torch's slice
    assert support_words(EvenInteger()) == ("EvenInteger", False)


# ---- 2. Empirical ----

EMP = "Empirical([0.5, 1.0, 2.0], log([0.2, 0.3, 0.5]))"


def test_empirical_observed_in_and_out_of_a_plate():
    assert _ld(f"model M(y: real) {{ y ~ {EMP} }}", {}, {"y": 1.0}) == \
        pytest.approx(math.log(0.3), abs=1e-12)
    src = f"model M(y: real[N], N: int) {{ plate i in N {{ y ~ {EMP} }} }}"
    assert _ld(src, {}, {"y": [1.0, 2.0, 0.7], "N": 3}) == -math.inf
    assert _ld(src, {}, {"y": [1.0, 2.0, 2.0], "N": 3}) == \
        pytest.approx(math.log(0.3) + 2 * math.log(0.5), abs=1e-12)


def test_empirical_latent_and_vector_samples():
    src = f"model M(y: real) {{ z ~ {EMP}; y ~ Normal(z, 1) }}"
    assert _ld(src, {"z": 2.0}, {"y": 1.0}) == \
        pytest.approx(math.log(0.5) + st.norm.logpdf(1.0, 2.0, 1.0), abs=1e-12)
    # samples [3, 2]: each draw a pair; weights unnormalised
    src = """
    model M(y: real[N, 2], N: int) {
      plate i in N { y ~ Empirical([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0]], [0.0, 1.0, 2.0]) }
    }"""
    w = np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum()
    got = _ld(src, {}, {"y": [[1.0, 1.0], [1.0, 0.0]], "N": 2})
    assert got == pytest.approx(math.log(w[1]) + math.log(w[2]), abs=1e-12)


def test_empirical_real_data_is_no_discrete_warning():
    # its values are its samples, real numbers here: was "'y' is real but Empirical is a
    # discrete distribution"
    m = ppl.compile(f"model M(y: real) {{ y ~ {EMP} }}")
    assert m.warnings == []
    assert [w.message for w in ppl.compile("model M(y: real) { y ~ Poisson(2) }").warnings] \
        == ["'y' is real but Poisson is a discrete distribution"]


def test_empirical_latent_of_numbers_is_summed_out_in_a_fit():
    # p(z | y = 1) is w_k N(1; s_k, 1) normalised; was refused as "values are vectors"
    src = f"model M(y: real) {{ z ~ {EMP}; y ~ Normal(z, 1) }}"
    m = ppl.compile(src)
    assert m.warnings == []
    post = np.array([0.2, 0.3, 0.5]) * st.norm.pdf(1.0, [0.5, 1.0, 2.0], 1.0)
    post /= post.sum()  # [0.2263, 0.3847, 0.3889]
    n = 400  # 4 s.e. of a frequency: <= 0.098
    for infer, opts in (("nuts", {"warmup": 20, "chains": 1}), ("svi", {"steps": 5})):
        z = np.asarray(m.fit({"y": 1.0}, infer=infer, seed=1, samples=n, **opts).samples["z"])
        assert z.shape == (n,)
        freq = np.array([(z == v).mean() for v in (0.5, 1.0, 2.0)])
        assert freq.sum() == pytest.approx(1.0)  # no value but the samples
        assert np.all(np.abs(freq - post) < 4 * np.sqrt(post * (1 - post) / n)), (infer, freq)
    # labels=map: the mode, 2.0 (0.3889 against 0.3847 at 1.0)
    assert m.fit({"y": 1.0}, infer="map", seed=0, labels="map").samples["z"].tolist() == [2.0]
    # in a plate beside a continuous latent, the kinds and shapes of a fit's draws
    src = f"""
    model M(y: real[N], N: int) {{
      s ~ HalfNormal(1)
      plate i in N {{ z ~ {EMP}; y ~ Normal(z, s) }}
    }}"""
    fit = ppl.compile(src).fit({"y": [0.4, 2.1, 1.1], "N": 3}, infer="nuts", seed=1,
                               warmup=50, samples=50, chains=1)
    assert fit.samples["z"].shape == (50, 3) and set(np.unique(fit.samples["z"])) <= \
        {0.5, 1.0, 2.0}


def test_empirical_latent_of_vectors_is_refused_by_a_fit_with_its_rewrite():
    src = "model M(y: real[2]) { z ~ Empirical([[0.0, 1.0], [1.0, 0.0]], [0.0, 1.0]); " \
        "y ~ Normal(z, 1) }"
    m = ppl.compile(src)
    (w,) = m.warnings
    assert "'z' is a discrete latent whose values are vectors (Empirical)" in w.message
    assert w.notes == ["draw a row's index and read the row: k ~ Categorical("
                       "logits=log_weights), then samples[k]"]
    with pytest.raises(BdlError, match="values are vectors"):
        m.fit({"y": [0.0, 1.0]}, infer="svi", steps=2, samples=2)
    # its draws are the rows: shape [2]
    z = np.asarray(m.sample_prior({"y": [0.0, 1.0]}, num_samples=5, seed=0)["z"])
    assert z.shape == (5, 2) and np.all(z.sum(1) == 1.0)


def test_grouped_normal_normal_against_the_joint_gaussian():
    # y[n] = mu[g[n]] + N(0, 0.5^2), mu[k] ~ N(0, 1): groups independent Gaussians
    src = """
    model M(y: real[N], g: int[N], N: int) {
      s ~ Gamma(2, 2)
      y ~ GroupedNormalNormal([0.0, 0.0], [1.0, 1.0], s, g)
    }"""
    cov = np.ones((2, 2)) + 0.25 * np.eye(2)
    want = st.gamma(2, scale=0.5).logpdf(0.5) + st.multivariate_normal(
        np.zeros(2), cov).logpdf([0.3, -0.2]) + st.norm(0, math.sqrt(1.25)).logpdf(1.0)
    got = _ld(src, {"s": 0.5}, {"y": [0.3, -0.2, 1.0], "g": [0, 0, 1], "N": 3})
    assert got == pytest.approx(want, abs=1e-10)


# ---- 3. Stable, the directional families, the relaxed ones ----

def _levy(parameterization):
    old = st.levy_stable.parameterization
    st.levy_stable.parameterization = parameterization
    yield st.levy_stable
    st.levy_stable.parameterization = old


@pytest.fixture
def levy_s0():
    yield from _levy("S0")


@pytest.mark.parametrize("alpha, beta", [(1.5, 0.3), (1.9, 0.5), (0.7, -1.0), (2.0, 0.0)])
def test_stable_is_s0_as_scipy(levy_s0, alpha, beta):
    # stability 0.95 to 1.05 is Pyro's interpolation, within 1e-2 (docs)
    src = "model M(y: real[N], N: int) { plate i in N { y ~ " \
        f"Stable({alpha}, {beta}, 1.5, 0.2) }} }}"
    y = [0.7, -2.0]
    want = sum(levy_s0.logpdf(v, alpha, beta, loc=0.2, scale=1.5) for v in y)
    assert _ld(src, {}, {"y": y, "N": 2}) == pytest.approx(want, abs=1e-6)


def test_stable_with_a_latent_stability_and_as_a_latent(levy_s0):
    src = "model M(y: real) { s ~ Uniform(1.1, 1.9); y ~ Stable(s, 0.3, 1.5, 0.2) }"
    want = math.log(1 / 0.8) + levy_s0.logpdf(0.7, 1.5, 0.3, loc=0.2, scale=1.5)
    assert _ld(src, {"s": 1.5}, {"y": 0.7}) == pytest.approx(want, abs=1e-6)
    assert want == pytest.approx(-1.4856996, abs=1e-6)
    got = _ld("model M() { z ~ StableWithLogProb(1.5, 0.3, 1.5, 0.2) }", {"z": 0.7}, {})
    assert got == pytest.approx(want - math.log(1 / 0.8), abs=1e-6)


def test_stable_off_a_half_line_support_is_minus_infinity(levy_s0):
    # skew 1, stability 0.5: S0 support x >= 0.2 - 1.5 tan(pi / 4) = -1.3 (was NaN)
    src = "model M(y: real[N], N: int) { plate i in N { y ~ Stable(0.5, 1.0, 1.5, 0.2) } }"
    assert _ld(src, {}, {"y": [-2.0, 0.7], "N": 2}) == -math.inf
    want = levy_s0.logpdf(0.7, 0.5, 1.0, loc=0.2, scale=1.5)
    assert _ld(src, {}, {"y": [0.7], "N": 1}) == pytest.approx(want, abs=1e-6)
    src = "model M(y: real) { y ~ StableWithLogProb(0.5, -1.0, 1.5, 0.2) }"
    assert _ld(src, {}, {"y": 2.0}) == -math.inf
    assert levy_s0.logpdf(2.0, 0.5, -1.0, loc=0.2, scale=1.5) == -math.inf


@pytest.fixture
def levy_s1():
    yield from _levy("S1")


@pytest.mark.parametrize("alpha, beta, y", [
    (1.5, 0.3, 0.7), (1.9, 0.5, -2.0), (1.2, -0.6, 3.0), (0.7, -1.0, -2.0), (0.5, 1.0, 0.7),
    (1.0, 0.5, 0.7)])
def test_stable_in_s_coordinates_is_scipys_s1(levy_s1, alpha, beta, y):
    # was Pyro's tan of the shifted value: -1.697 at (1.5, 0.3, 0.7), scipy -1.817
    src = f'model M(y: real) {{ y ~ Stable({alpha}, {beta}, 1.5, 0.2, coords="S") }}'
    # scipy's pdf, not its logpdf: only pdf moves loc by (2 / pi) beta scale log(scale)
    # at stability 1 (Nolan's S1; logpdf there is S0's)
    want = math.log(levy_s1.pdf(y, alpha, beta, loc=0.2, scale=1.5))
    assert _ld(src, {}, {"y": y}) == pytest.approx(want, abs=1e-6 if alpha != 1 else 1e-3)


def test_stable_s_coordinates_off_the_half_line_and_as_a_latent(levy_s1):
    # skew 1, stability 0.5: S1 support x >= loc = 0.2 (S0's is x >= -1.3)
    src = 'model M(y: real) { y ~ StableWithLogProb(0.5, 1.0, 1.5, 0.2, coords="S") }'
    assert _ld(src, {}, {"y": 0.1}) == -math.inf
    assert _ld(src.replace(', coords="S"', ""), {}, {"y": 0.1}) > -3
    src = 'model M() { s ~ Uniform(1.1, 1.9); z ~ Stable(s, 0.3, 1.5, 0.2, "S") }'
    want = math.log(1 / 0.8) + math.log(levy_s1.pdf(0.7, 1.5, 0.3, loc=0.2, scale=1.5))
    assert _ld(src, {"s": 1.5, "z": 0.7}, {}) == pytest.approx(want, abs=1e-6)
    # "S0" written is the default
    s0 = _ld(src.replace('"S"', '"S0"'), {"s": 1.5, "z": 0.7}, {})
    assert s0 == _ld(src.replace(', "S"', ""), {"s": 1.5, "z": 0.7}, {})
    assert s0 == pytest.approx(-1.4856996, abs=1e-6)  # scipy's S0, as above


def test_stable_s_draws_against_scipys_s1(levy_s1):
    # S1 = S0 shifted by scale * skew * tan(pi stability / 2): 1.5 * 0.3 tan(0.75 pi)
    # and at stability 1, where S1's loc is moved by (2 / pi) skew scale log(scale), 1.68
    # here (Pyro's draws left it out: P(s <= 1) 0.48, not 0.33); each draw a run of the
    # model, so few
    n = 500
    for law, x in (("1.5, 0.3, 1.5, 0.2", (-1.0, 0.2, 2.0)), ("1.0, 0.8, 3.0, 0.0", (1.0,))):
        src = f'model M() {{ s ~ Stable({law}, coords="S") }}'
        s = np.asarray(ppl.compile(src).sample_prior({}, num_samples=n, seed=7)["s"])
        args = [float(v) for v in law.split(", ")]
        for v in x:
            p = levy_s1.cdf(v, *args[:2], scale=args[2], loc=args[3])
            assert abs((s <= v).mean() - p) < 4 * math.sqrt(p * (1 - p) / n), (law, v)


@pytest.mark.parametrize("arg, got", [('coords="S1"', '"S1"'), ("coords=1", "an int value")])
def test_stable_coords_other_than_s0_or_s_are_compile_errors(arg, got):
    with pytest.raises(BdlError) as info:
        ppl.compile(f"model M(y: real) {{ y ~ Stable(1.5, 0.3, 1.5, 0.2, {arg}) }}")
    assert f"""'coords' of Stable must be one of "S0", "S", written as a string; got {got}""" \
        in str(info.value)


def test_sine_bivariate_von_mises_against_its_series():
    mu, nu, k1, k2, lam = 0.3, -0.5, 2.0, 1.5, 0.7
    m = np.arange(60)
    log_c = math.log(4 * math.pi ** 2 * np.sum(
        sp.comb(2 * m, m) * (lam ** 2 / (4 * k1 * k2)) ** m * sp.iv(m, k1) * sp.iv(m, k2)))

    def ref(phi, psi):
        return (k1 * math.cos(phi - mu) + k2 * math.cos(psi - nu)
                + lam * math.sin(phi - mu) * math.sin(psi - nu) - log_c)

    got = _ld("model M(y: real[2]) { y ~ SineBivariateVonMises(0.3, -0.5, 2.0, 1.5, 0.7) }",
              {}, {"y": [0.4, -0.2]})
    assert got == pytest.approx(ref(0.4, -0.2), abs=1e-10)
    assert got == pytest.approx(-1.5888821707, abs=1e-9)
    src = """
    model M(y: real[N, 2], N: int) {
      a ~ Normal(0, 1)
      plate i in N { y ~ SineBivariateVonMises(a, -0.5, 2.0, 1.5, 0.7) }
    }"""
    y = [[0.4, -0.2], [-2.0, 3.0]]
    want = st.norm.logpdf(0.3) + sum(ref(*v) for v in y)
    assert _ld(src, {"a": 0.3}, {"y": y, "N": 2}) == pytest.approx(want, abs=1e-10)


def test_sine_skewed_and_nan_masked_normals():
    # SineSkewed: base density times 1 + sum_i skew_i sin(x_i - loc_i)
    src = """
    model M(y: real[2]) {
      y ~ SineSkewed(SineBivariateVonMises(0.3, -0.5, 2.0, 1.5, 0.7), [0.2, -0.3])
    }"""
    base = _ld("model M(y: real[2]) { y ~ SineBivariateVonMises(0.3, -0.5, 2.0, 1.5, 0.7) }",
               {}, {"y": [0.4, -0.2]})
    want = base + math.log1p(0.2 * math.sin(0.4 - 0.3) - 0.3 * math.sin(-0.2 + 0.5))
    assert _ld(src, {}, {"y": [0.4, -0.2]}) == pytest.approx(want, abs=1e-12)
    # NaN entries left out: the marginal of the others
    src = "model M(y: real[2]) { y ~ NanMaskedMultivariateNormal([0.0, 1.0], " \
        "[[1.0, 0.3], [0.3, 2.0]]) }"
    assert _ld(src, {}, {"y": [0.3, math.nan]}) == pytest.approx(st.norm.logpdf(0.3), abs=1e-12)
    src = "model M(y: real[3]) { y ~ NanMaskedNormal(0.5, 2.0) }"
    assert _ld(src, {}, {"y": [0.3, math.nan, 1.0]}) == \
        pytest.approx(st.norm(0.5, 2).logpdf([0.3, 1.0]).sum(), abs=1e-12)


def test_projected_normal_and_von_mises_3d_closed_forms():
    # 2-D: the angle's density of x ~ N(c, I) projected onto the circle
    c, u = np.array([1.0, 0.5]), np.array([0.6, 0.8])
    t = u @ c
    want = -c @ c / 2 - math.log(2 * math.pi) + math.log1p(
        t * st.norm.cdf(t) / st.norm.pdf(t))
    got = _ld("model M(y: real[2]) { y ~ ProjectedNormal([1.0, 0.5]) }", {}, {"y": u.tolist()})
    assert got == pytest.approx(want, abs=1e-10)
    # as a latent, its concentration from a latent
    src = "model M() { s ~ Normal(0, 1); z: real[2] ~ ProjectedNormal(s * [1.0, 0.5]) }"
    assert _ld(src, {"s": 1.0, "z": u.tolist()}, {}) == \
        pytest.approx(st.norm.logpdf(1.0) + want, abs=1e-10)
    c3, x = np.array([1.0, 0.5, -0.3]), np.array([0.6, 0.0, 0.8])
    # 3-D: p(x) = int_0^inf r^2 N(r x; c, I) dr on the unit sphere
    want = math.log(integrate.quad(
        lambda r: r * r * st.multivariate_normal(c3, np.eye(3)).pdf(r * x), 0, np.inf,
        epsabs=1e-14)[0])
    got = _ld("model M(y: real[3]) { y ~ ProjectedNormal([1.0, 0.5, -0.3]) }", {},
              {"y": x.tolist()})
    assert got == pytest.approx(want, abs=1e-8)
    k = np.linalg.norm(c3)
    got = _ld("model M(y: real[3]) { y ~ VonMises3D([1.0, 0.5, -0.3]) }", {}, {"y": x.tolist()})
    assert got == pytest.approx(math.log(k / (4 * math.pi * math.sinh(k))) + c3 @ x, abs=1e-10)


@pytest.mark.parametrize("name", ["RelaxedBernoulli", "RelaxedBernoulliStraightThrough"])
def test_relaxed_bernoulli_is_the_binary_concrete(name):
    lam, p = 0.5, 0.3
    a = p / (1 - p)

    def ref(y):
        return math.log(lam * a * y ** (-lam - 1) * (1 - y) ** (-lam - 1)
                        / (a * y ** -lam + (1 - y) ** -lam) ** 2)

    src = f"model M(y: real[N], N: int) {{ plate i in N {{ y ~ {name}(0.5, probs=0.3) }} }}"
    assert _ld(src, {}, {"y": [0.2, 0.9], "N": 2}) == pytest.approx(ref(0.2) + ref(0.9),
                                                                    abs=1e-10)


@pytest.mark.parametrize("name", ["RelaxedOneHotCategorical",
                                  "RelaxedOneHotCategoricalStraightThrough"])
def test_relaxed_one_hot_is_the_concrete(name):
    lam, pi, x = 0.5, np.array([0.2, 0.3, 0.5]), np.array([0.1, 0.6, 0.3])
    n = 3
    want = math.log(math.factorial(n - 1) * lam ** (n - 1) * np.prod(pi * x ** (-lam - 1))
                    / np.sum(pi * x ** -lam) ** n)
    src = f"""
    model M(y: real[3]) {{
      t ~ Gamma(2, 2)
      y ~ {name}(t, probs=[0.2, 0.3, 0.5])
    }}"""
    assert _ld(src, {"t": 0.5}, {"y": x.tolist()}) == \
        pytest.approx(st.gamma(2, scale=0.5).logpdf(0.5) + want, abs=1e-10)


@pytest.mark.parametrize("src, at, want", [
    ("model M(y: real[3]) { y ~ ProjectedNormal([1.0, 0.5]) }", 27,
     "size mismatch between the distribution [2] and 'y' [3]: 2 vs 3"),
    ("model M() { z: real[3] ~ ProjectedNormal([1.0, 0.5]) }", 26,
     "size mismatch between the distribution [2] and 'z' [3]: 2 vs 3"),
    ("model M(y: real[N, 3], N: int, a: real[N]) { plate i in N { "
     "y ~ SineBivariateVonMises(a, -0.5, 2.0, 1.5, 0.7) } }", 65,
     "size mismatch between the distribution [N, 2] and 'y' [N, 3]: 2 vs 3"),
    ("model M(y: real[3]) { y ~ RelaxedOneHotCategorical(0.5, probs=[0.2, 0.8]) }", 27,
     "size mismatch between the distribution [2] and 'y' [3]: 2 vs 3"),
    ("model M(y: int[3, 2]) { y ~ SpanningTree([0.1, 0.5, -0.3]) }", 29,
     "size mismatch between the distribution [2, 2] and 'y' [3, 2]: 2 vs 3"),
    ("model M(y: int[N, 3], e: real[E], N: int, E: int) { y ~ SpanningTree(e) }", 53,
     "'y' is [N, 3] per draw, but a SpanningTree's value is its V - 1 edges, each a pair "
     "of nodes [a, b]: [V - 1, 2]"),
    ("model M(y: real[2]) { y ~ Empirical([[0.0, 1.0, 3.0], [1.0, 1.0, 3.0]], [0.0, 1.0]) }",
     27, "size mismatch between the distribution [3] and 'y' [2]: 3 vs 2"),
])
def test_value_sizes_against_the_arguments_are_compile_errors(src, at, want):
    # were found when the model ran (or, for a latent, drawn at the arguments' size)
    with pytest.raises(BdlError) as info:
        ppl.compile(src)
    assert want in str(info.value) and f":1:{at}:" in str(info.value)


@pytest.mark.parametrize("src, data, want", [
    ("model M(y: real[D], c: real[K], D: int, K: int) { y ~ ProjectedNormal(c) }",
     {"y": [1.0, 0.0, 0.0], "c": [1.0, 2.0], "D": 3, "K": 2},
     "size mismatch between the distribution [K] and 'y' [D]: K = 2 but D = 3"),
    ("model M(y: real[K], p: real[J], J: int, K: int) "
     "{ y ~ RelaxedOneHotCategorical(0.5, probs=p) }",
     {"y": [0.5, 0.3, 0.2], "p": [0.4, 0.6], "J": 2, "K": 3},
     "size mismatch between the distribution [J] and 'y' [K]: J = 2 but K = 3"),
    ("model M(y: int[V, 2], e: real[E], E: int, V: int) { y ~ SpanningTree(e) }",
     {"y": [[0, 1], [0, 2]], "V": 2, "e": [0.1, 0.5, 0.2, 0.1, 0.0, 0.3], "E": 6},
     "size mismatch between SpanningTree's 'edge_logits' [E] and 'y' [V, 2] (a tree of n "
     "nodes: n (n - 1) / 2 logits, n - 1 edges): 2 * E = 12 but V * V + V = 6"),
])
def test_value_sizes_from_the_data_are_located_errors(src, data, want):
    m = ppl.compile(src)
    with pytest.raises(BdlError) as info:
        m.log_density({}, data)
    assert want in str(info.value)


def test_spanning_tree_value_of_a_size_from_the_data():
    src = "model M(y: int[V, 2], e: real[E], E: int, V: int) { y ~ SpanningTree(e) }"
    data = {"y": [[0, 1], [0, 2]], "V": 2, "e": [0.1, 0.5, -0.3], "E": 3}
    assert _ld(src, {}, data) == pytest.approx(_ld(
        "model M(y: int[2, 2]) { y ~ SpanningTree([0.1, 0.5, -0.3]) }", {}, {"y": data["y"]}),
        abs=1e-12)


def test_sine_bivariate_von_mises_weighted_correlation():
    # weighted_correlation w is rho = w sqrt(k1 k2)
    mu, nu, k1, k2 = 0.3, -0.5, 2.0, 1.5
    lam = 0.4 * math.sqrt(k1 * k2)
    m = np.arange(60)
    log_c = math.log(4 * math.pi ** 2 * np.sum(
        sp.comb(2 * m, m) * (lam ** 2 / (4 * k1 * k2)) ** m * sp.iv(m, k1) * sp.iv(m, k2)))
    want = (k1 * math.cos(0.4 - mu) + k2 * math.cos(-0.2 - nu)
            + lam * math.sin(0.4 - mu) * math.sin(-0.2 - nu) - log_c)
    src = "model M(y: real[2]) { y ~ SineBivariateVonMises(0.3, -0.5, 2.0, 1.5, " \
        "weighted_correlation=0.4) }"
    assert _ld(src, {}, {"y": [0.4, -0.2]}) == pytest.approx(want, abs=1e-10)


def test_soft_asymmetric_laplace_is_a_laplace_convolved_with_a_normal():
    # AsymmetricLaplace(0.2, 1.5, 0.7) + Normal(0, softness * scale)
    def al(x, loc=0.2, scale=1.5, k=0.7):
        z = (x - loc) / scale
        return math.exp(-z * k if z >= 0 else z / k) / (scale * (k + 1 / k))

    want = math.log(integrate.quad(lambda e: st.norm(0, 0.75).pdf(e) * al(0.9 - e),
                                   -20, 20, epsabs=1e-15, limit=200)[0])
    got = _ld("model M(y: real) { y ~ SoftAsymmetricLaplace(0.2, 1.5, 0.7, 0.5) }", {},
              {"y": 0.9})
    assert got == pytest.approx(want, abs=1e-9)


def test_log_normal_negative_binomial_is_a_quadrature():
    # NegativeBinomial(5, logits=0.3 + e), e ~ Normal(0, 0.5), e summed out
    def nb(y, r, logit):
        p = 1 / (1 + math.exp(-logit))
        return math.exp(sp.gammaln(y + r) - sp.gammaln(r) - sp.gammaln(y + 1)
                        + r * math.log1p(-p) + y * math.log(p))

    want = math.log(integrate.quad(lambda e: st.norm(0, 0.5).pdf(e) * nb(4, 5.0, 0.3 + e),
                                   -10, 10, epsabs=1e-15)[0])
    src = "model M(y: int) {{ y ~ LogNormalNegativeBinomial(5.0, 0.3, 0.5{}) }}"
    # Pyro's default of 8 Gauss-Hermite points is within 2e-5 here; 32 are exact
    assert _ld(src.format(""), {}, {"y": 4}) == pytest.approx(want, abs=2e-5)
    assert _ld(src.format(", num_quad_points=32"), {}, {"y": 4}) == \
        pytest.approx(want, abs=1e-10)


def test_coalescent_times_by_hand():
    # rate r per pair of lineages, times before the leaves: 2 lineages from 0 to -0.1,
    # 3 to the first coalescence at -0.5, then 2 to the last at -1.2
    src = """
    model M(leaves: real[3]) {
      t: real[2] ~ CoalescentTimes(leaves, 2.0)
    }"""
    r = 2.0
    want = -r * 0.1 - 3 * r * 0.4 + math.log(3 * r) - r * 0.7 + math.log(r)
    got = _ld(src, {"t": [-1.2, -0.5]}, {"leaves": [0.0, 0.0, -0.1]})
    assert got == pytest.approx(want, abs=1e-12)


COALESCENT_WORDS = ("is over increasing times, each with at least 2 lineages to merge (the "
                    "leaf times later than it less the coalescence times later than it)")


@pytest.mark.parametrize("law", ["CoalescentTimes(leaves, 2.0)",
                                 "CoalescentTimesWithRate(leaves, [2.0, 2.0])"])
@pytest.mark.parametrize("t", [[-1.2, 0.5], [0.5, 0.7]])
def test_a_coalescence_with_no_lineage_to_merge_is_a_located_error(law, t):
    # a coalescence later than the leaves: Pyro's support check read index -1 (torch's
    # raw "index -1 is out of bounds" RuntimeError); rt.CoalescentTimes counts lineages
    # (observed: CoalescentTimesWithRate draws nothing, Pyro has no sampler for it)
    name = law.split("(")[0]
    src = f"model M(leaves: real[3], t: real[2]) {{ t ~ {law} }}"
    with pytest.raises(BdlError) as info:
        ppl.compile(src).log_density({}, {"leaves": [0.0, 0.0, -0.1], "t": t})
    assert f"error: 't' is {t}; {name} {COALESCENT_WORDS}\n" in str(info.value)
    assert ":1:40:" in str(info.value)
    # the values it takes keep their density: 2 lineages from 0 to -0.05, where they
    # merge, 2 again from -0.1 to -1.2, rate 2 per pair
    want = -2.0 * 0.05 + math.log(2.0) - 2.0 * 1.1 + math.log(2.0)
    assert _ld(src, {}, {"leaves": [0.0, 0.0, -0.1], "t": [-1.2, -0.05]}) == \
        pytest.approx(want, abs=1e-12)


# ---- 4. hidden Markov models ----

HMM = """
model M(y: real[T], T: int) {
  mu ~ Normal(0, 1)
  y ~ DiscreteHMM(log([0.6, 0.4]), log([[0.9, 0.1], [0.2, 0.8]]), Normal([mu, mu + 1.0], 1.0))
}"""


def _hmm_paths(y, pi, a, logp_obs) -> float:
    """log p(y) of Pyro's HMM: the initial state is drawn one step before y[0]."""
    total = []
    for path in itertools.product(range(len(pi)), repeat=len(y) + 1):
        lp = math.log(pi[path[0]])
        lp += sum(math.log(a[path[t - 1]][path[t]]) for t in range(1, len(y) + 1))
        lp += sum(logp_obs(y[t], path[t + 1]) for t in range(len(y)))
        total.append(lp)
    return float(logsumexp(total))


def test_hmm_compiles():
    # an HMM's observation_dist is a distribution argument (was 'must be numeric')
    ppl.compile(HMM)


def test_discrete_hmm_against_every_path():
    pi, a = [0.6, 0.4], [[0.9, 0.1], [0.2, 0.8]]
    y = [0.1, 0.5, 1.2]
    want = st.norm.logpdf(0.3) + _hmm_paths(
        y, pi, a, lambda v, s: st.norm.logpdf(v, 0.3 + s, 1.0))
    assert _ld(HMM, {"mu": 0.3}, {"y": y, "T": 3}) == pytest.approx(want, abs=1e-10)
    assert want == pytest.approx(-4.3343134396, abs=1e-9)
    # in a plate (duration given: a homogeneous HMM's event is [1] otherwise), Poisson
    src = """
    model M(y: int[N, T], N: int, T: int) {
      lam: real<lower=0>[2] ~ Gamma(2, 1)
      plate i in N {
        y ~ DiscreteHMM(log([0.5, 0.5]), log([[0.9, 0.1], [0.2, 0.8]]), Poisson(lam),
                        duration=T)
      }
    }"""
    y2 = [[0, 3, 5, 1], [2, 2, 0, 0]]
    want = sum(st.gamma(2).logpdf(v) for v in (1.0, 4.0)) + sum(
        _hmm_paths(row, [0.5, 0.5], a, lambda v, s: st.poisson.logpmf(v, [1.0, 4.0][s]))
        for row in y2)
    got = _ld(src, {"lam": [1.0, 4.0]}, {"y": y2, "N": 2, "T": 4})
    assert got == pytest.approx(want, abs=1e-10)


def test_discrete_hmm_latent_and_its_draws():
    src = """
    model M(T: int) {
      z: real[T] ~ DiscreteHMM(log([0.6, 0.4]), log([[0.9, 0.1], [0.2, 0.8]]),
                               Normal([0.3, 1.3], 1.0), duration=T)
    }"""
    pi, a = [0.6, 0.4], [[0.9, 0.1], [0.2, 0.8]]
    z = [0.1, 0.5, 1.2]
    want = _hmm_paths(z, pi, a, lambda v, s: st.norm.logpdf(v, [0.3, 1.3][s], 1.0))
    m = ppl.compile(src)
    assert float(m.log_density({"z": z}, {"T": 3})) == pytest.approx(want, abs=1e-10)
    n = 1500  # each draw a run of the model; the bound is 4 s.e. of the mean at n
    draws = np.asarray(m.sample_prior({"T": 3}, num_samples=n, seed=2)["z"])
    assert draws.shape == (n, 3)
    # E z_t = 0.3 + P(state_t = 1), the chain started one step before t = 0
    p = np.array(pi)
    for t in range(3):
        p = p @ np.array(a)
        mean = 0.3 + p[1]
        assert abs(draws[:, t].mean() - mean) < 4 * math.sqrt(1.25 / n)


def test_gaussian_hmm_against_the_joint_gaussian():
    src = """
    model M(y: real[T, 1], T: int) {
      a ~ Normal(0.5, 0.1)
      y ~ GaussianHMM(MultivariateNormal([0.0], [[1.0]]), [[a]],
                      MultivariateNormal([0.0], [[0.5]]), [[1.0]],
                      MultivariateNormal([0.0], [[0.2]]))
    }"""
    a, y = 0.7, np.array([0.1, 0.5, 1.2])
    # x_{-1} ~ N(0, 1), x_t = a x_{t-1} + N(0, 0.5), y_t = x_t + N(0, 0.2)
    var = [1.0]
    for _ in range(3):
        var.append(a * a * var[-1] + 0.5)
    cov = np.array([[var[min(s, t) + 1] * a ** abs(s - t) for t in range(3)]
                    for s in range(3)]) + 0.2 * np.eye(3)
    want = st.norm(0.5, 0.1).logpdf(a) + st.multivariate_normal(np.zeros(3), cov).logpdf(y)
    got = _ld(src, {"a": a}, {"y": y[:, None].tolist(), "T": 3})
    assert got == pytest.approx(want, abs=1e-10)
    assert want == pytest.approx(-3.8956238523, abs=1e-9)


def test_masked_mixture_reads_bool_data_as_its_mask():
    src = """
    model M(y: real[2], m: bool[2]) {
      a ~ Normal(0, 1)
      y ~ MaskedMixture(m, Normal(a, 1), Normal(3, 1))
    }"""
    want = st.norm.logpdf(0.2) + st.norm(0.2, 1).logpdf(0.5) + st.norm(3, 1).logpdf(2.5)
    got = _ld(src, {"a": 0.2}, {"y": [0.5, 2.5], "m": [False, True]})
    assert got == pytest.approx(want, abs=1e-10)


# ---- 5. prior draws ----

def test_draws_of_the_directional_and_relaxed_families():
    src = """
    model M() {
      u: real[2] ~ ProjectedNormal([1.0, 0.5])
      r ~ RelaxedBernoulli(0.5, probs=0.3)
      e ~ Empirical([0.5, 1.0, 2.0], log([0.2, 0.3, 0.5]))
    }"""
    n = 1500  # each draw a run of the model; every bound is 4 s.e. of a mean at n
    d = ppl.compile(src).sample_prior({}, num_samples=n, seed=3)
    u, r, e = (np.asarray(d[k]) for k in "ure")
    assert u.shape == (n, 2) and r.shape == (n,) and e.shape == (n,)
    assert np.allclose(np.linalg.norm(u, axis=1), 1.0)
    # E cos(theta - 0) of the projected normal, by quadrature of its angle density
    c = np.array([1.0, 0.5])
    th = np.linspace(-math.pi, math.pi, 20001)
    t = np.cos(th) * c[0] + np.sin(th) * c[1]
    dens = np.exp(-c @ c / 2) / (2 * math.pi) * (1 + t * st.norm.cdf(t) / st.norm.pdf(t))
    mean_cos = np.trapezoid(np.cos(th) * dens, th)
    assert abs(u[:, 0].mean() - mean_cos) < 4 * u[:, 0].std() / math.sqrt(n)
    # E r of the binary concrete by quadrature
    ys = np.linspace(1e-9, 1 - 1e-9, 200001)
    a = 0.3 / 0.7
    dens = 0.5 * a * ys ** -1.5 * (1 - ys) ** -1.5 / (a * ys ** -0.5 + (1 - ys) ** -0.5) ** 2
    assert abs(r.mean() - np.trapezoid(ys * dens, ys)) < 4 * r.std() / math.sqrt(n)
    assert abs(e.mean() - 1.4) < 4 * math.sqrt((0.2 * 0.81 + 0.3 * 0.16 + 0.5 * 0.36) / n)


def test_gamma_gaussian_hmm_against_quadrature_over_its_scale():
    src = """
    model M(y: real[T, 1], T: int) {
      y ~ GammaGaussianHMM(Gamma(2.0, 2.0), MultivariateNormal([0.0], [[1.0]]), [[0.7]],
                           MultivariateNormal([0.0], [[0.5]]), [[1.0]],
                           MultivariateNormal([0.0], [[0.2]]))
    }"""
    a, y = 0.7, np.array([0.1, 0.5, 1.2])

    def cov(s):  # every covariance divided by the Gamma scale s, the initial one too
        var = [1.0 / s]
        for _ in range(3):
            var.append(a * a * var[-1] + 0.5 / s)
        return np.array([[var[min(i, j) + 1] * a ** abs(i - j) for j in range(3)]
                         for i in range(3)]) + 0.2 / s * np.eye(3)

    want = math.log(integrate.quad(
        lambda s: st.gamma(2, scale=0.5).pdf(s)
        * st.multivariate_normal(np.zeros(3), cov(s)).pdf(y), 0, np.inf, epsabs=1e-14)[0])
    got = _ld(src, {}, {"y": y[:, None].tolist(), "T": 3})
    assert got == pytest.approx(want, abs=1e-8)


def test_gaussian_mrf_is_its_joint_over_the_hidden_path_less_the_path_alone():
    # log int init(x_-1) prod_t trans(x_t-1, x_t) obs(x_t, y_t) dx less the same with
    # obs(x_t, .) integrated out, the path x_-1..x_2 in information form
    src = """
    model M(y: real[T, 1], T: int) {
      y ~ GaussianMRF(MultivariateNormal([0.0], [[1.0]]),
                      MultivariateNormal([0.0, 0.0], [[1.0, 0.5], [0.5, 1.0]]),
                      MultivariateNormal([0.0, 0.0], [[1.0, 0.3], [0.3, 1.0]]))
    }"""
    y = [0.1, 0.5, 1.2]
    s_t, s_o = np.array([[1, 0.5], [0.5, 1]]), np.array([[1, 0.3], [0.3, 1]])

    def log_integral(observed):
        prec, h, c = np.zeros((4, 4)), np.zeros(4), -0.5 * math.log(2 * math.pi)
        prec[0, 0] += 1.0
        for t in range(3):
            prec[t:t + 2, t:t + 2] += np.linalg.inv(s_t)
            c -= 0.5 * math.log(np.linalg.det(2 * math.pi * s_t))
            if observed:
                p_o = np.linalg.inv(s_o)
                prec[t + 1, t + 1] += p_o[0, 0]
                h[t + 1] -= p_o[0, 1] * y[t]
                c -= 0.5 * p_o[1, 1] * y[t] ** 2 + 0.5 * math.log(np.linalg.det(2 * math.pi * s_o))
            else:
                prec[t + 1, t + 1] += 1 / s_o[0, 0]
                c -= 0.5 * math.log(2 * math.pi * s_o[0, 0])
        return c + 0.5 * h @ np.linalg.solve(prec, h) + 2 * math.log(2 * math.pi) \
            - 0.5 * math.log(np.linalg.det(prec))

    want = log_integral(True) - log_integral(False)
    got = _ld(src, {}, {"y": [[v] for v in y], "T": 3})
    assert got == pytest.approx(want, abs=1e-10)


# ---- 6. HMM arguments whose sizes do not fit, a chain drawn without its length ----

@pytest.mark.parametrize("args, data, at, want", [
    ("log([0.6, 0.4]), log([[0.9, 0.1], [0.2, 0.8]]), Normal(m, 1.0)",
     {"m": [0.3, 1.3, 2.0]}, 122, "DiscreteHMM: 'observation_dist' has batch shape [3] but "
     "'initial_logits' has 2 states: its last batch dim must be one per state (2)"),
    ("log([0.6, 0.4]), P, Normal([0.3, 1.3], 1.0)",
     {"P": [[0.0, -1.0, -2.0], [-1.0, 0.0, -2.0]]}, 91,
     "DiscreteHMM: 'transition_logits' is [2, 3] but 'initial_logits' has 2 states: it must "
     "end in 2 x 2 (from, to)"),
])
def test_discrete_hmm_sizes_are_located_errors(args, data, at, want):
    # were torch's 'The size of tensor a (2) must match the size of tensor b (3)'
    src = "model M(y: real[T], T: int, P: real[K, J], m: real[S]) " \
        f"{{ y ~ DiscreteHMM({args}) }}"
    full = {"y": [0.1, 0.5, 1.2], "T": 3, "P": [[0.0, -1.0], [-1.0, 0.0]], "m": [0.3, 1.3]}
    with pytest.raises(BdlError) as info:
        ppl.compile(src).log_density({}, full | data)
    assert want in str(info.value) and f":1:{at}:" in str(info.value)


def test_hmm_sizes_written_are_compile_errors():
    src = """
    model M(y: real[T], T: int) {
      y ~ DiscreteHMM(log([0.6, 0.4]), log([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]]),
                      Normal([0.3, 1.3], 1.0))
    }"""
    with pytest.raises(BdlError) as info:
        ppl.compile(src)
    assert "DiscreteHMM: 'transition_logits' [2, 3] and 'initial_logits' [2] disagree on " \
        "S (states): 3 and 2 must be equal" in str(info.value)


def test_gaussian_hmm_sizes_are_located_errors():
    # was Pyro's bare AssertionError
    src = """
    model M(y: real[T, 1], T: int, A: real[K, J]) {
      y ~ GaussianHMM(MultivariateNormal([0.0], [[1.0]]), A,
                      MultivariateNormal([0.0], [[0.5]]), [[1.0]],
                      MultivariateNormal([0.0], [[0.2]]))
    }"""
    with pytest.raises(BdlError) as info:
        ppl.compile(src).log_density({}, {"y": [[0.1], [0.5], [1.2]], "T": 3,
                                          "A": [[0.7, 0.0]]})
    assert "GaussianHMM: 'transition_matrix' is [1, 2] but 'observation_matrix' [1, 1] has " \
        "1 hidden and 1 observed coordinates: it must be [1, 1]" in str(info.value)
    assert ":3:59:" in str(info.value)


def test_linear_hmm_draws_and_says_it_has_no_density():
    src = """
    model M(T: int) {
      z: real[T, 1] ~ LinearHMM(MultivariateNormal([0.0], [[1.0]]), [[0.7]],
                                MultivariateNormal([0.0], [[0.5]]), [[1.0]],
                                MultivariateNormal([0.0], [[0.2]]), duration=T)
    }"""
    m = ppl.compile(src)
    assert np.asarray(m.sample_prior({"T": 3}, num_samples=4, seed=0)["z"]).shape == (4, 3, 1)
    with pytest.raises(BdlError) as info:  # was Pyro's NotImplementedError, unlocated
        m.log_density({"z": [[0.1], [0.5], [1.2]]}, {"T": 3})
    assert "LinearHMM has no log density in Pyro, only draws" in str(info.value)
    assert ":3:7:" in str(info.value)


def test_a_chain_drawn_without_its_length_says_so():
    # was Pyro's bare AssertionError; with a declared type (z: real[T]) the chain takes
    # its length from it (tests/test_distribution_leftovers.py)
    src = """
    model M(T: int) {
      z ~ DiscreteHMM(log([0.6, 0.4]), log([[0.9, 0.1], [0.2, 0.8]]),
                      Normal([0.3, 1.3], 1.0))
    }"""
    with pytest.raises(BdlError) as info:
        ppl.compile(src).sample_prior({"T": 3}, num_samples=2, seed=0)
    assert "DiscreteHMM is drawn here (a latent, or data left out) and needs the " \
        "sequence's length: give duration=T" in str(info.value)


def test_draws_of_stable_and_of_a_gaussian_hmm(levy_s0):
    src = """
    model M(T: int) {
      s ~ Stable(1.5, 0.3, 1.5, 0.2)
      y: real[T, 1] ~ GaussianHMM(MultivariateNormal([0.0], [[1.0]]), [[0.7]],
                                  MultivariateNormal([0.0], [[0.5]]), [[1.0]],
                                  MultivariateNormal([0.0], [[0.2]]), duration=T)
    }"""
    n = 500  # each draw a run of the model; 4 s.e. of a cdf <= 0.09, of a variance 0.25 of it
    d = ppl.compile(src).sample_prior({"T": 3}, num_samples=n, seed=5)
    s, y = np.asarray(d["s"]), np.asarray(d["y"])
    assert s.shape == (n,) and y.shape == (n, 3, 1)
    # the stable draws' distribution function at three points
    for x in (-1.0, 0.2, 2.0):
        p = levy_s0.cdf(x, 1.5, 0.3, loc=0.2, scale=1.5)
        assert abs((s <= x).mean() - p) < 4 * math.sqrt(p * (1 - p) / n)
    # Var y_t of the chain started one step before t = 0: 0.7^2 var + 0.5, plus 0.2
    var = 1.0
    for t in range(3):
        var = 0.49 * var + 0.5
        want = var + 0.2
        assert abs(y[:, t, 0].var() - want) < 4 * want * math.sqrt(2 / n)



# ---- 7. a declared set too small for rejection: drawn by the inverse CDF ----

def _truncated_mean(pdf, lo, hi) -> float:
    return integrate.quad(lambda x: x * pdf(x), lo, hi)[0] / integrate.quad(pdf, lo, hi)[0]


@pytest.mark.parametrize("law, lo, hi, pdf", [
    # Beta has neither cdf nor icdf in torch: the density's quadrature
    ("Beta(2, 2)", 0.0, 0.002, lambda x: st.beta.pdf(x, 2, 2)),
    # Gamma has a cdf, no icdf: bisection (P[30, 30.01] ~ 4e-13)
    ("Gamma(2, 1)", 30.0, 30.01, lambda x: st.gamma.pdf(x, 2)),
])
def test_a_tiny_set_is_drawn_inside_with_its_truncated_mean(law, lo, hi, pdf):
    # was 'could not draw a sample inside Interval(0.0, 0.002) by rejection'
    src = f"model M(lo: real, hi: real) {{ z: real<lower=lo, upper=hi> ~ {law} }}"
    n = 500  # each draw a bisection or quadrature: seconds; the bound is 4 s.e. at n
    z = np.asarray(ppl.compile(src).sample_prior({"lo": lo, "hi": hi}, n, seed=3)["z"])
    assert z.shape == (n,) and ((z >= lo) & (z <= hi)).all()
    want = _truncated_mean(pdf, lo, hi)
    sd = math.sqrt(integrate.quad(lambda x: (x - want) ** 2 * pdf(x), lo, hi)[0]
                   / integrate.quad(pdf, lo, hi)[0])
    assert abs(z.mean() - want) < 4 * sd / math.sqrt(n)
    assert sd > 0.2 * (hi - lo)  # spread over the set, not one point of it


def test_a_bound_that_follows_a_latent_draws_inside_it():
    # the finding: a ~ Normal(0.5, 1) put a's at 0.002, where Beta(2, 2) below it stopped
    # sample_prior; given a in (0, 1), z / a has density 6 t (1 - a t) / (3 - 2 a) on [0, 1]
    src = "model M(N: int) { a ~ Normal(0.5, 1)\n z: real<upper=a> ~ Beta(2, 2) }"
    n = 800  # P(0 < a < 1) = 0.383: 306 of them expected, sd 14
    d = ppl.compile(src).sample_prior({"N": 3}, n, seed=3)
    a, z = np.asarray(d["a"]), np.asarray(d["z"])
    inside = (a > 0) & (a < 1)
    assert inside.sum() > 0.25 * n and ((z[inside] >= 0) & (z[inside] <= a[inside])).all()
    t, ai = z[inside] / a[inside], a[inside]
    # E[t | a] = (2 - 1.5 a) / (3 - 2 a)
    resid = t - (2 - 1.5 * ai) / (3 - 2 * ai)
    assert abs(resid.mean()) < 4 * resid.std() / math.sqrt(len(t))
