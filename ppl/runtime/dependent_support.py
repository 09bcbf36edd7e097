"""Latents whose support follows other latents: Stan's transform, made per evaluation.

``z ~ Uniform(a, a + 1)`` with ``a`` a latent: Pyro's samplers and autoguides build each
latent's map from the real line, ``biject_to(site.fn.support)``, once, from the initial
trace, so every later value of ``a`` would be read through the first one's bounds (a
silent wrong posterior: ``a``'s mean near 1.5 where it is 0). Stan maps such a parameter
with its *current* bounds and adds the log-Jacobian to the target; so does
:func:`sample_in_support`. The sampled site is an auxiliary ``z$unconstrained`` on the
real line (:func:`unconstrained`), and ``z`` is recorded as its image under the current
map; ``ppl.infer.run.fit`` shows ``z`` as the latent and hides the auxiliary site.

Two modes change that for one evaluation: :func:`without_jacobian` (a point estimate's
density, in the constrained space, as for every other bounded latent) and
:func:`as_plain_sites` (``z`` an ordinary site, for ``Model.log_density`` at a given ``z``).
"""

from __future__ import annotations

from contextlib import contextmanager

import pyro
import torch
from pyro.distributions import GeneralizedPareto, Independent, TransformedDistribution, constraints
from torch.distributions import biject_to
from torch.distributions.transforms import IndependentTransform, Transform

# a name no BDL program can write: ``z``'s draw on the real line
SUFFIX = "$unconstrained"
# the current mode: "jacobian" (the default), "no_jacobian" or "plain"
_MODE = ["jacobian"]


@contextmanager
def _mode(mode: str):
    before, _MODE[0] = _MODE[0], mode
    try:
        yield
    finally:
        _MODE[0] = before


def without_jacobian():
    """Within it the real-line site's density leaves out the log-Jacobian: a point
    estimate (``map``, ``svi``'s delta guide) is then the mode of the density in the
    constrained space, as for every other bounded latent (Pyro's AutoDelta; Stan's
    ``optimize`` default, ``jacobian=false``)."""
    return _mode("no_jacobian")


def as_plain_sites():
    """Within it ``name`` is drawn as an ordinary site, ``pyro.sample(name, fn)``, so it
    can be conditioned on a value in its support (``Model.log_density``)."""
    return _mode("plain")


class _Between(Transform):
    """The real line onto ``(lo, hi)`` element by element, where an end may be infinite
    (GeneralizedPareto's upper end is ``inf`` for a shape >= 0, finite below 0, and
    ``biject_to`` of such an interval is NaN): ``lo + (hi - lo) sigmoid(u)`` where both
    ends are finite, ``lo + exp(u)`` or ``hi - exp(u)`` where one is, ``u`` where none
    is (Stan's maps). Each branch reads only its own elements, so its gradient is finite."""

    domain = constraints.real
    codomain = constraints.real
    bijective = True
    sign = +1

    def __init__(self, lo, hi, cache_size=0):
        super().__init__(cache_size=cache_size)
        lo, hi = torch.broadcast_tensors(torch.as_tensor(lo), torch.as_tensor(hi))
        self.lo, self.hi = lo, hi
        fin_lo, fin_hi = torch.isfinite(lo), torch.isfinite(hi)
        self._both, self._lo_only = fin_lo & fin_hi, fin_lo & ~fin_hi
        self._hi_only = fin_hi & ~fin_lo
        self._lo0 = torch.where(fin_lo, lo, torch.zeros_like(lo))
        self._hi0 = torch.where(fin_hi, hi, torch.ones_like(hi))

    def with_cache(self, cache_size=1):
        return self if self._cache_size == cache_size else _Between(self.lo, self.hi,
                                                                   cache_size)

    def _call(self, u):
        both, lo_only, hi_only = self._both, self._lo_only, self._hi_only
        zero = torch.zeros_like(u)
        width = torch.where(both, self._hi0 - self._lo0, torch.ones_like(self._lo0))
        z_both = self._lo0 + width * torch.sigmoid(torch.where(both, u, zero))
        up = torch.exp(torch.where(lo_only, u, zero))
        down = torch.exp(torch.where(hi_only, u, zero))
        return torch.where(both, z_both, torch.where(
            lo_only, self._lo0 + up, torch.where(hi_only, self._hi0 - down, u)))

    def _inverse(self, z):
        both, lo_only, hi_only = self._both, self._lo_only, self._hi_only
        width = torch.where(both, self._hi0 - self._lo0, torch.ones_like(self._lo0))
        half = torch.full_like(z, 0.5)
        p = torch.where(both, (z - self._lo0) / width, half)
        above = torch.where(lo_only, z - self._lo0, torch.ones_like(z))
        below = torch.where(hi_only, self._hi0 - z, torch.ones_like(z))
        return torch.where(both, torch.logit(p), torch.where(
            lo_only, torch.log(above), torch.where(hi_only, torch.log(below), z)))

    def log_abs_det_jacobian(self, u, z):
        both = self._both
        width = torch.where(both, self._hi0 - self._lo0, torch.ones_like(self._lo0))
        ub = torch.where(both, u, torch.zeros_like(u))
        on_both = torch.log(width) + torch.nn.functional.logsigmoid(ub) \
            + torch.nn.functional.logsigmoid(-ub)
        one_end = self._lo_only | self._hi_only
        return torch.where(both, on_both, torch.where(one_end, u, torch.zeros_like(u)))


def _expm1_over(x):
    """``expm1(x) / x``, 1 at 0 (its series near 0, where the quotient loses digits)."""
    small = x.abs() < 1e-6
    xs = torch.where(small, torch.ones_like(x), x)
    return torch.where(small, 1 + x / 2, torch.expm1(xs) / xs)


def _log1p_over(x):
    """``log1p(x) / x``, 1 at 0."""
    small = x.abs() < 1e-6
    xs = torch.where(small, torch.ones_like(x), x)
    return torch.where(small, 1 - x / 2, torch.log1p(xs) / xs)


def gp_quantile(loc, scale, xi, s):
    """The GeneralizedPareto(loc, scale, xi) value whose log survival is ``-s``:
    ``loc + scale expm1(xi s) / xi``, ``loc + scale s`` at ``xi = 0``, smooth in ``xi``
    (:class:`_ParetoQuantile`'s map, and a ``Truncated`` draw's inverse tail)."""
    return loc + scale * s * _expm1_over(xi * s)


class _ParetoQuantile(Transform):
    """The real line onto a GeneralizedPareto's support ``(loc, loc - scale/xi)`` (to
    ``inf`` for a shape ``xi >= 0``) by its quantile function at ``p = sigmoid(u)``:
    ``loc + scale expm1(xi s) / xi``, ``s = softplus(u) = -log(1 - p)``. Unlike a map from
    the support's ends, which jumps where ``xi`` crosses 0 (a finite upper end becomes
    none), it is smooth in ``xi`` as in ``u``, so a latent shape mixes; with the
    Jacobian, ``u`` is Logistic(0, 1) under the prior whatever the parameters."""

    domain = constraints.real
    codomain = constraints.real
    bijective = True
    sign = +1

    def __init__(self, loc, scale, xi, cache_size=0):
        super().__init__(cache_size=cache_size)
        self.loc, self.scale, self.xi = loc, scale, xi

    def with_cache(self, cache_size=1):
        return self if self._cache_size == cache_size else _ParetoQuantile(
            self.loc, self.scale, self.xi, cache_size)

    def _call(self, u):
        return gp_quantile(self.loc, self.scale, self.xi, torch.nn.functional.softplus(u))

    def _inverse(self, z):
        y = (z - self.loc) / self.scale
        s = y * _log1p_over(self.xi * y)
        return s + torch.log(-torch.expm1(-s))  # softplus^-1

    def log_abs_det_jacobian(self, u, z):
        s = torch.nn.functional.softplus(u)
        return torch.log(self.scale) + self.xi * s + torch.nn.functional.logsigmoid(u)


def _fn_transform(fn) -> Transform:
    """The map from the real line onto ``fn``'s support: :class:`_ParetoQuantile` for a
    GeneralizedPareto (also of independent dims), else :func:`support_transform`."""
    found = _pareto(fn)
    if found is not None:
        base, dims = found
        t = _ParetoQuantile(base.loc, base.scale, base.concentration)
        return IndependentTransform(t, dims) if dims else t
    return support_transform(fn.support)


def support_transform(support) -> Transform:
    """The map from the real line onto ``support`` at its current bounds: ``biject_to``,
    except for an interval with an infinite end (:class:`_Between`) and a mixture's
    support (``MixtureSameFamily`` of univariate components), mapped onto the hull of its
    components' supports, from the lowest lower end to the highest upper end (where the
    components leave a gap the density is zero there)."""
    if isinstance(support, constraints.independent):
        inner = support_transform(support.base_constraint)
        return IndependentTransform(inner, support.reinterpreted_batch_ndims)
    if type(support).__name__ == "MixtureSameFamilyConstraint":
        inner = support.base_constraint
        lo, hi = support_ends(inner)
        if inner is constraints.real or (lo is None and hi is None):
            return biject_to(inner)
        neg, pos = torch.tensor(-torch.inf), torch.tensor(torch.inf)
        lo = neg if lo is None else torch.as_tensor(lo).amin(-1)
        hi = pos if hi is None else torch.as_tensor(hi).amax(-1)
        return _Between(lo, hi)
    lo, hi = support_ends(support)
    if lo is not None and hi is not None and not (
            bool(torch.isfinite(torch.as_tensor(lo)).all())
            and bool(torch.isfinite(torch.as_tensor(hi)).all())):
        return _Between(lo, hi)
    return biject_to(support)


def base_constraint(support):
    """``support`` without its independent wrappers (what holds its elements' ends)."""
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support


def support_ends(support):
    """(lower, upper) of a support's elements, numbers or tensors as its constraint holds
    them, None where it has no such end (the real line, a simplex): the one reader of a
    support's ends (``tails.support_bounds``, ``ppl.infer.custom_guide``)."""
    support = base_constraint(support)
    return getattr(support, "lower_bound", None), getattr(support, "upper_bound", None)


class _NoJacobian(TransformedDistribution):
    """:func:`unconstrained` without the log-Jacobian: ``log_prob(u) = fn.log_prob(t(u))``."""

    def log_prob(self, value):
        return self.base_dist.log_prob(self.transforms[0].inv(value))


def _pareto(fn):
    """(the GeneralizedPareto, its independent dims) where ``fn`` is one, else None."""
    base, dims = fn, 0
    while isinstance(base, Independent):
        base, dims = base.base_dist, dims + base.reinterpreted_batch_ndims
    return (base, dims) if type(base) is GeneralizedPareto else None


class _ParetoLine(TransformedDistribution):
    """``unconstrained(fn)`` of a GeneralizedPareto ``fn`` in closed form: at ``z =
    t(u)`` (:class:`_ParetoQuantile`, survival ``exp(-s)``, ``s = softplus(u)``) ``1 +
    xi y = exp(xi s)``, so ``log p(z) = -log(scale) - (1 + xi) s`` and, with ``log|t'(u)|
    = log(scale) + xi s + logsigmoid(u)``, ``u`` is Logistic(0, 1): ``logsigmoid(u) -
    s``. Read through ``z``, a shape ``xi < -1`` (density +inf at the upper end) gave
    -inf or NaN where ``z`` rounds onto that end (``xi = -1.5``, ``u = 25``)."""

    def _terms(self, u, base):
        return torch.nn.functional.logsigmoid(u) - torch.nn.functional.softplus(u)

    def log_prob(self, value):
        base, dims = _pareto(self.base_dist)
        lp = self._terms(value, base)
        return lp.flatten(-dims).sum(-1) if dims else lp


class _ParetoLineNoJacobian(_ParetoLine):
    """:class:`_ParetoLine` without the log-Jacobian: ``log p(t(u))``."""

    def _terms(self, u, base):
        s = torch.nn.functional.softplus(u)
        return -torch.log(base.scale) - (1 + base.concentration) * s


def unconstrained(fn, jacobian: bool = True) -> TransformedDistribution:
    """``fn`` seen on the real line through ``t``, the map onto its support at its current
    parameters (``biject_to(fn.support)`` but at an infinite end, :func:`_fn_transform`): Pyro's
    ``TransformedDistribution`` of ``fn`` by ``t^-1``, so ``log_prob(u) = fn.log_prob(t(u))
    + log|det J_t(u)|`` and ``sample() = t^-1(fn.sample())`` (prior draws of ``t(u)`` are
    exact draws of ``fn``). Its value ``u`` is unvalidated, as ``fn``'s own bounds follow
    other latents. ``jacobian=False``: the density leaves out ``log|det J_t(u)|``."""
    if _pareto(fn) is not None:  # its closed form, finite where z rounds onto an end
        cls = _ParetoLine if jacobian else _ParetoLineNoJacobian
    else:
        cls = TransformedDistribution if jacobian else _NoJacobian
    return cls(fn, _fn_transform(fn).inv, validate_args=False)


def _real_line_draw(name: str, fn, jacobian: bool = True):
    """``name$unconstrained ~ unconstrained(fn)``, mapped back into ``fn``'s support."""
    d = unconstrained(fn, jacobian)
    return d.transforms[0].inv(pyro.sample(name + SUFFIX, d))


def sample_in_support(name: str, fn):
    """``pyro.sample(name, fn)`` for a ``fn`` whose support follows other latents: draws
    ``name$unconstrained ~ unconstrained(fn)`` and records ``name`` as its image in
    ``fn``'s support at the current bounds (a deterministic site). Under
    :func:`as_plain_sites` it is ``pyro.sample(name, fn)``. A declared set that meets
    none of ``fn``'s support at these bounds (``rt.Restricted``) is density 0 here, not
    an error: a state a sampler rejects."""
    _follows(fn)
    if _MODE[0] == "plain":
        return pyro.sample(name, fn)
    return pyro.deterministic(name, _real_line_draw(name, fn, _MODE[0] != "no_jacobian"),
                              event_dim=len(fn.event_shape))


def guide_in_support(name: str, fn):
    """A guide's draw of a latent that its model draws by :func:`sample_in_support`: the
    same auxiliary site, ``name$unconstrained ~ unconstrained(fn)`` (the law of
    ``t^-1(z)`` for ``z ~ fn``, ``t`` the map onto ``fn``'s own support), returning ``z``."""
    return _real_line_draw(name, _follows(fn))


def _follows(fn):
    """Marks ``fn`` (an ``rt.Restricted``) as one whose bounds follow latents."""
    if hasattr(fn, "follows"):
        fn.follows = True
    return fn


__all__ = ["SUFFIX", "as_plain_sites", "base_constraint", "gp_quantile", "guide_in_support",
           "sample_in_support", "support_ends", "support_transform", "unconstrained",
           "without_jacobian"]
