"""Distribution signatures, read from the table generated off ``pyro.distributions``.

No torch import here: ``bdl check`` stays linter-fast. See ``gen_signatures.py``.
"""

from __future__ import annotations

import difflib
import functools
import json
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class DistSig:
    name: str
    params: tuple[str, ...]
    required: tuple[str, ...]
    one_of: tuple[tuple[str, ...], ...]
    support: str | None
    event_rank: int | None
    discrete: bool
    enumerable: bool = False  # finite support Pyro can sum out (``has_enumerate_support``)
    # (parameter, its constraint as text), for the parameters whose constraint is fixed
    arg_constraints: tuple[tuple[str, str], ...] = ()
    # the last params, which Pyro takes by name only (ZeroInflatedPoisson(rate, *, gate))
    keyword_only: tuple[str, ...] = ()


# Distributions the language adds to Pyro's, with the runtime class generated code uses.
BDL_DISTRIBUTIONS = {
    "Flat": (DistSig("Flat", (), (), (), "Real()", 0, False), "rt.Flat"),
    # Stan's T[L, U]: a univariate base renormalised to [low, high] (ppl/runtime/truncated.py)
    "Truncated": (DistSig("Truncated", ("base_dist", "low", "high"), ("base_dist",), (),
                          None, 0, False, keyword_only=("low", "high")), "rt.Truncated"),
}


# The bases ``Truncated`` takes, by how it normalises and draws them; the checker reads
# these, tests/test_truncated.py checks them against Pyro. A continuous base needs a cdf
# (the normaliser F(high) - F(low)); a latent also its icdf (reparameterised draws; the
# others are drawn by bisecting their log tail, for predictive draws of data only). A
# discrete base with support from 0 is normalised by its incomplete gamma (Poisson), in
# closed form (Geometric) or by summing its pmf.
TRUNCATE_ICDF = frozenset({
    "Cauchy", "Exponential", "GeneralizedPareto", "Gumbel", "HalfCauchy", "HalfNormal",
    "Kumaraswamy", "Laplace", "LogNormal", "Logistic", "Normal", "Pareto", "SoftLaplace",
    "Uniform", "Weibull",
})
TRUNCATE_CDF = TRUNCATE_ICDF | {"Chi2", "Gamma", "InverseGamma"}
TRUNCATE_PMF = frozenset({"BetaBinomial", "Binomial", "GammaPoisson", "Geometric",
                          "NegativeBinomial", "Poisson"})


# Pyro classes whose parameters here must be tensors (``Delta(v)`` reads ``v.dim()``):
# a Python number there (``a ~ Delta(3.0)``, a literal or a size) stopped the model with a
# raw AttributeError. Generated code calls ``rt.NAME``, which makes those arguments
# tensors of the default dtype and returns Pyro's own class (ppl/runtime/functions.py).
TENSOR_PARAMS = {
    "Delta": ("v",),
    "GroupedNormalNormal": ("prior_loc", "prior_scale", "obs_scale", "group_idx"),
    "MaskedMixture": ("mask",),
    "OrderedLogistic": ("predictor", "cutpoints"),
    "RelaxedBernoulli": ("temperature",),
    "RelaxedBernoulliStraightThrough": ("temperature",),
    "RelaxedOneHotCategorical": ("temperature",),
    "RelaxedOneHotCategoricalStraightThrough": ("temperature",),
    "TruncatedPolyaGamma": ("prototype",),
    "ZeroInflatedDistribution": ("gate", "gate_logits"),
    "ZeroInflatedNegativeBinomial": ("gate", "gate_logits"),
    "ZeroInflatedPoisson": ("gate", "gate_logits"),
}


# Of those, the arguments Pyro reads as indices or as a mask, made tensors of this dtype:
# int and bool data reach a distribution as floats (``rt.real``), which Pyro refused
# ("group_idx must be a 1-dimensional tensor of indices", "Expected mask to be a
# BoolTensor").
PARAM_DTYPES = {"GroupedNormalNormal": {"group_idx": "int64"}, "MaskedMixture": {"mask": "bool"}}


# Parameters that take one of a few words, written as a string literal: a stable law's
# coordinates, Nolan's S0 (Pyro's default; continuous in the stability) or S (the
# characteristic function's own, whose location jumps at stability 1). Any other
# string for a distribution's parameter is refused (it must be a number).
STRING_PARAMS = {name: {"coords": ("S0", "S")} for name in ("Stable", "StableWithLogProb")}


# Pyro classes whose parameter here must be a Python int: Multinomial's total_count, one
# count for all rows. A tensor there (``y ~ Multinomial(sum(y), theta)``) was Pyro's
# misleading "inhomogeneous total_count is not supported"; ``rt.Multinomial`` reads a
# tensor with one value as that int, and refuses totals that differ between rows.
INT_PARAMS = {"Multinomial": ("total_count",)}


# Pyro classes whose value indexes their parameters (a tree's edges, a matching's
# partners), which torch wants integral: int data reach a distribution as floats
# (``rt.real``), so ``rt.NAME`` (ppl/runtime/combinatorial.py) reads the value as integers.
# Empirical is there too: Pyro's scores a value of its own shape only (not in a plate);
# the stable laws, whose log density off a half-line support was NaN
# (ppl/runtime/stable.py); LinearHMM, which has no density (ppl/runtime/hmm.py); the LKJ
# laws and Wishart, mapped by Stan's CPC in logs, never NaN far out (runtime/correlation.py);
# the coalescent laws, whose support check raised torch's raw "index -1" RuntimeError at a
# coalescence with no lineage before it (runtime/coalescent.py).
LONG_VALUES = frozenset({"OneOneMatching", "OneTwoMatching", "SpanningTree"})
OWN_CLASSES = LONG_VALUES | {"Empirical", "Stable", "StableWithLogProb", "LinearHMM", "LKJ",
                             "LKJCholesky", "LKJCorrCholesky", "Wishart", "CoalescentTimes",
                             "CoalescentTimesWithRate"}


# Event ranks the generated table gets wrong, read off the class's support: Pyro gives
# SpanningTree the support of one edge's node (rank 0), but a draw is the tree's V - 1
# edges, [V - 1, 2]; a matching's support is not fixed in the class (None), a draw is one
# partner per source, [N]; an Empirical's event is its samples' shape less the weights'
# (unknown here, left to the runtime: rank 0 read its N samples as a batch).
# GroupedNormalNormal scores its whole vector of observations as one (the groups' means
# summed out), its arguments sized by groups [G] and observations [N]: rank 0 broadcast
# them against each other.
EVENT_RANKS = {"SpanningTree": 2, "OneOneMatching": 1, "OneTwoMatching": 1, "Empirical": None,
               "GroupedNormalNormal": 1}


# Pyro classes whose arguments' sizes the runtime checks first, and whose batch dims it
# lines up (a mixture's weights varying over an outer plate): ``rt.NAME`` in
# ppl/runtime/mixtures.py returns Pyro's own class, or names the arguments whose sizes
# do not fit where Pyro raised a bare AssertionError or torch's reshape error.
SIZE_CHECKED = frozenset({"GaussianScaleMixture", "MixtureOfDiagNormals",
                          "MixtureOfDiagNormalsSharedCovariance", "MixtureSameFamily",
                          "MultivariateNormal",
                          "DiscreteHMM", "GaussianHMM", "IndependentHMM"})  # runtime/hmm.py

# Hidden Markov models, whose length a homogeneous chain takes from its value: a site of
# one with a declared length goes through ``rt.event`` (``ppl.runtime.hmm.with_duration``)
# in or out of plates, so a latent ``z: real[T] ~ DiscreteHMM(...)`` needs no duration=T.
TIMED = frozenset({"DiscreteHMM", "GammaGaussianHMM", "GaussianHMM", "IndependentHMM",
                   "LinearHMM"})

# Runtime classes generated code reaches through their module (ppl/runtime/__init__.py
# does not name them): IndependentHMM, which draws through its base's ``sample``.
RUNTIME_PATHS = {"IndependentHMM": "rt.hmm.IndependentHMM"}


# Dimensions per draw of the parameters whose constraint the table lacks (Pyro gives
# Wishart's none): a matrix, checked as the constrained ones are (checker._param_ranks).
# The mixtures' parameters carry the components dim in their event (locs K x D, logits K),
# which their constraints (Real(), a number) do not say: read as batch dims, a plate
# would pair the K components with its elements.
PARAM_RANKS = {
    "Wishart": {"covariance_matrix": 2, "precision_matrix": 2, "scale_tril": 2},
    "MixtureOfDiagNormals": {"locs": 2, "coord_scale": 2, "component_logits": 1},
    "MixtureOfDiagNormalsSharedCovariance": {"locs": 2, "coord_scale": 1,
                                             "component_logits": 1},
    "GaussianScaleMixture": {"coord_scale": 1, "component_logits": 1, "component_scale": 1},
    # a tree's V (V - 1) / 2 edge logits, a matching's sources x destinations
    "SpanningTree": {"edge_logits": 1},
    "OneOneMatching": {"logits": 2},
    "OneTwoMatching": {"logits": 2},
}


# Sizes of a distribution's parameters that must be equal, by what they count: groups of
# (parameter, dim from the right). Sizes the checker proves different are a compile
# error (checker._event_sizes); those it cannot compare (K and J of the data) are
# checked by the runtime (ppl/runtime/mixtures.py), which names both.
_MATRIX = ("covariance_matrix", "precision_matrix", "scale_tril")
EVENT_SIZES = {
    "MultivariateNormal": {"D (coordinates)": (("loc", -1),) + tuple(
        (m, d) for m in _MATRIX for d in (-1, -2))},
    "MixtureOfDiagNormals": {
        "K (components)": (("locs", -2), ("coord_scale", -2), ("component_logits", -1)),
        "D (coordinates)": (("locs", -1), ("coord_scale", -1))},
    "MixtureOfDiagNormalsSharedCovariance": {
        "K (components)": (("locs", -2), ("component_logits", -1)),
        "D (coordinates)": (("locs", -1), ("coord_scale", -1))},
    "GaussianScaleMixture": {
        "K (components)": (("component_logits", -1), ("component_scale", -1))},
    "OneOneMatching": {"N (sources and destinations)": (("logits", -2), ("logits", -1))},
    "DiscreteHMM": {"S (states)": (("initial_logits", -1), ("transition_logits", -2),
                                   ("transition_logits", -1))},
    "GaussianHMM": {"H (hidden coordinates)": (("transition_matrix", -2),
                                               ("transition_matrix", -1),
                                               ("observation_matrix", -2))},
}


# One argument's rows a multiple of its columns, which EVENT_SIZES (sizes equal) cannot
# say: (parameter, rows dim, columns dim, how many rows per column, the shape in words).
# A OneTwoMatching's logits are 2M x M (rt.OneTwoMatching says it of sizes the data fix).
EVENT_MULTIPLES = {"OneTwoMatching": ("logits", -2, -1, 2, "2M x M (two sources per "
                                      "destination)")}


def target(name: str) -> str:
    """How generated code spells the distribution ``name``."""
    extra = BDL_DISTRIBUTIONS.get(name)
    if extra:
        return extra[1]
    if name in RUNTIME_PATHS:
        return RUNTIME_PATHS[name]
    return f"rt.{name}" if name in TENSOR_PARAMS or name in INT_PARAMS \
        or name in SIZE_CHECKED or name in OWN_CLASSES else f"dist.{name}"


@functools.lru_cache(maxsize=1)
def table() -> dict[str, DistSig]:
    raw = json.loads(resources.files("ppl.check").joinpath("distributions.json").read_text())
    return {name: sig for name, (sig, _) in BDL_DISTRIBUTIONS.items()} | {
        name: DistSig(
            name, tuple(e["params"]), tuple(e["required"]),
            tuple(tuple(g) for g in e["one_of"]), e["support"],
            EVENT_RANKS.get(name, e["event_rank"]), e["discrete"],
            e["enumerable"], tuple(e["arg_constraints"].items()),
            tuple(e.get("keyword_only", ())),
        )
        for name, e in raw.items()
    }


def lookup(name: str) -> DistSig | None:
    return table().get(name)


def suggest(name: str, candidates, cutoff: float = 0.6) -> str | None:
    """The closest known spelling, for "did you mean" notes: the same word in another
    case, else the closest at ``difflib`` ratio ``cutoff`` or more, else one with the same
    letters in another order (``lgo`` -> ``log``, a slip of two keys)."""
    cands = list(candidates)
    lower = {c.lower(): c for c in cands}
    if name.lower() in lower and lower[name.lower()] != name:
        return lower[name.lower()]
    close = difflib.get_close_matches(name, cands, n=1, cutoff=cutoff)
    if close:
        return close[0]
    swapped = [c for c in cands if sorted(c.lower()) == sorted(name.lower())]
    return swapped[0] if swapped else None
