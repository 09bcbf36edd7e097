"""The supports of distribution families: the one table the checker and guide checks read.

A family's support is its signature's (``distributions.json``, generated off Pyro: a
text such as ``GreaterThan(lower_bound=0.0)``), or follows its arguments
(:data:`FROM_ARGUMENTS`: ``Uniform(low, high)``), or is none the source can name
(:data:`NO_SUPPORT`, each with why). tests/test_custom_guide.py checks that every family
of the signature table is in exactly one of the three.

A support as a key (:func:`key`): an interval ``(lo, hi)`` of the elements (the real
line, the positive reals and (0, 1) included; boundaries aside, they hold no mass), a
class name (``ordered``, ``simplex``), or the text itself where it is neither (integers:
a discrete support is never within a continuous one). :func:`within` says whether one
support lies inside another.
"""

from __future__ import annotations

import re

INF = float("inf")

# a support as the signature table or a declared type spells it -> its class; the real
# line, the positive reals and (0, 1) are intervals (:data:`INTERVALS`)
CLASSES = {
    "Real()": "real",
    "IndependentConstraint(Real(), 1)": "real",
    "IndependentConstraint(Real(), 2)": "real",
    "constraints.positive": "positive",
    "constraints.unit_interval": "unit",
    "Simplex()": "simplex",
    "constraints.simplex": "simplex",
    "CorrCholesky()": "corr_cholesky",
    "constraints.corr_cholesky": "corr_cholesky",
    "PositiveDefinite()": "positive_definite",
    "constraints.positive_definite": "positive_definite",
    "CorrMatrix()": "corr_matrix",
    "constraints.corr_matrix": "corr_matrix",
    "rt.corr_cholesky": "corr_cholesky",
    "rt.corr_matrix": "corr_matrix",
    "rt.cov_matrix": "positive_definite",
    "constraints.ordered_vector": "ordered",
    "constraints.positive_ordered_vector": "positive_ordered",
    "rt.positive_ordered": "positive_ordered",
    "Sphere": "unit_vector",
    "constraints.sphere": "unit_vector",
    "constraints.lower_cholesky": "cholesky_factor_cov",
}
INTERVALS = {"real": (-INF, INF), "positive": (0.0, INF), "unit": (0.0, 1.0)}

# the classes that lie inside another class (a positive ordered vector is ordered, a
# correlation matrix positive definite, the Cholesky factor of one a Cholesky factor of
# a covariance), and the interval every element of a class lies in (a simplex's in
# (0, 1); a correlation matrix's diagonal is 1 exactly, so only the real line)
_INSIDE = {"positive_ordered": "ordered", "corr_matrix": "positive_definite",
           "corr_cholesky": "cholesky_factor_cov"}
_ELEMENTS = {"ordered": "real", "positive_ordered": "positive", "simplex": "unit",
             "corr_cholesky": "real", "cholesky_factor_cov": "real", "corr_matrix": "real",
             "positive_definite": "real", "unit_vector": "real"}

# families whose support follows their arguments: those arguments. A latent whose support
# reads latents or params through them is drawn on the real line and mapped with the
# current bounds (rt.sample_in_support; ppl.check.checker)
SUPPORT_ARGS = {"Uniform": ("low", "high"), "Pareto": ("scale",),
                "Truncated": ("low", "high"), "AffineBeta": ("loc", "scale")}
# ... and those whose support is compared only where literal arguments decide it:
# GeneralizedPareto's upper bound exists only where its concentration is negative, which
# biject_to cannot follow
FROM_ARGUMENTS = {**SUPPORT_ARGS, "GeneralizedPareto": ("loc", "scale", "concentration")}

# families with no support here, and why
NO_SUPPORT = {
    **dict.fromkeys(("BetaBinomial", "Binomial", "Categorical", "DirichletMultinomial",
                     "Multinomial", "OneOneMatching", "OneTwoMatching", "OrderedLogistic"),
                    "discrete, with a range its arguments set"),
    "Delta": "its value: a fixed latent, never drawn by a guide",
    "MixtureSameFamily": "its components'",
    "ZeroInflatedDistribution": "its base's, with 0",
    "TransformedDistribution": "its transforms' codomain",
    "ImproperUniform": "its support argument",
    "CoalescentTimes": "follows the leaf times",
    "CoalescentTimesWithRate": "follows the leaf times",
    "GaussianScaleMixture": "the real line, which Pyro does not declare",
    **dict.fromkeys(("DiscreteHMM", "GaussianMRF", "IndependentHMM", "LinearHMM",
                     "MaskedMixture"), "its component distributions'"),
}

_BOUND = re.compile(r"^(Interval|HalfOpenInterval|GreaterThan|GreaterThanEq|LessThan)\("
                    r"(?:lower_bound=([^,)]+))?(?:, )?(?:upper_bound=([^,)]+))?\)$")


def key(text: str | None):
    """A support as a key: ``(lo, hi)``, a class name, the text itself, or None."""
    if text is None:
        return None
    c = CLASSES.get(text, text)
    if c in INTERVALS:
        return INTERVALS[c]
    m = _BOUND.match(c)
    if m is None:
        return c
    lo = float(m.group(2)) if m.group(2) is not None else -INF
    hi = float(m.group(3)) if m.group(3) is not None else INF
    return (lo, hi)


MISSING = object()  # an argument not given (Truncated without high=)


def from_arguments(family: str, value, base=None):
    """The support of ``family`` (in :data:`FROM_ARGUMENTS`) from its arguments as a key,
    or None where one that sets it is not known: ``value(name)`` is the argument's number,
    None when it is not a number of the source, :data:`MISSING` when not given. ``base``:
    Truncated's base distribution's support key."""
    args = {n: value(n) for n in FROM_ARGUMENTS.get(family, ())}
    if family == "Truncated":
        if not isinstance(base, tuple):
            return None
        lo, hi = base
        low, high = args["low"], args["high"]
        if low is None or high is None:
            return None
        return (lo if low is MISSING else max(lo, low), hi if high is MISSING else min(hi, high))
    if any(v is None or v is MISSING for v in args.values()):
        return None
    if family == "Uniform":
        return (args["low"], args["high"])
    if family == "Pareto":
        return (args["scale"], INF)
    if family == "AffineBeta":
        return (args["loc"], args["loc"] + args["scale"])
    if family == "GeneralizedPareto":
        c = args["concentration"]
        return (args["loc"], INF if c >= 0 else args["loc"] - args["scale"] / c)
    return None


def within(inner, outer) -> bool:
    """Does support ``inner`` lie inside ``outer`` (keys of :func:`key`)? Intervals by
    their bounds, a class inside itself, the class it lies in, or an interval that holds
    its elements; a discrete support (integers) inside nothing but itself."""
    if inner == outer:
        return True
    if isinstance(inner, tuple):
        return isinstance(outer, tuple) and outer[0] <= inner[0] and inner[1] <= outer[1]
    if inner not in _ELEMENTS:
        return False
    if isinstance(outer, tuple):
        return within(INTERVALS[_ELEMENTS[inner]], outer)
    return inner in _INSIDE and within(_INSIDE[inner], outer)


__all__ = ["CLASSES", "FROM_ARGUMENTS", "INF", "INTERVALS", "MISSING", "NO_SUPPORT",
           "SUPPORT_ARGS", "from_arguments", "key", "within"]
