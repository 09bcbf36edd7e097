"""Pyro's mixtures and the multivariate normal with their arguments' sizes checked and
their batch dims lined up, so that a wrong size is an error naming the arguments and
their sizes (located at the argument by ``ppl.locate``), not a bare ``AssertionError``
or torch's reshape error, and a mixture takes its arguments per plate element.

Each function returns Pyro's own class (``pyro.distributions.NAME``). Generated code
calls them as ``rt.NAME`` (``ppl.check.signatures.SIZE_CHECKED``):

* ``MixtureSameFamily``: the mixing distribution's batch dims and the components' (less
  their last, the components dim) broadcast to one batch, each expanded to it. Torch
  keeps only the components' batch, so weights that vary over an outer plate
  (``Categorical(probs=[w, 1 - w])`` of ``w: real[N]`` in nested plates) met torch's
  ``expand`` error when the plates expanded the site.
* ``MixtureOfDiagNormals`` and ``MixtureOfDiagNormalsSharedCovariance``: ``locs`` K x D,
  ``coord_scale`` K x D (shared: D), ``component_logits`` K, and their leading (batch)
  dims broadcast, as Pyro's batch mode takes them.
* ``GaussianScaleMixture``: ``coord_scale`` D, ``component_logits`` and
  ``component_scale`` K (Pyro has no batch form of its parameters), and a log density
  of values in a plate (Pyro's takes one value).
* ``MultivariateNormal``: a D x D matrix for a ``loc`` of D elements.
"""

from __future__ import annotations

import copy
import math

import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from ppl.runtime.dependent_support import support_ends
from ppl.runtime.errors import ArgumentError
from ppl.runtime.functions import tensor


def _shown(shape) -> str:
    return "[" + ", ".join(str(n) for n in shape) + "]"


def _batch(name: str, **parts) -> torch.Size:
    """The broadcast of the batch shapes ``parts`` (argument: shape), or an error naming
    the two that do not broadcast."""
    out, seen = torch.Size(), []
    for arg, shape in parts.items():
        try:
            out = torch.broadcast_shapes(out, shape)
        except RuntimeError:
            have = ", ".join(f"'{a}' {_shown(s)}" for a, s in seen)
            raise ArgumentError(
                f"{name}: the batch dims of '{arg}' {_shown(shape)} do not broadcast with "
                f"those of {have} (the dims left of each argument's own)", arg) from None
        seen.append((arg, shape))
    return out


def MixtureSameFamily(mixture_distribution, component_distribution,  # noqa: N802
                      validate_args=None):
    """``pyro.distributions.MixtureSameFamily`` with both distributions expanded to one
    batch shape: the broadcast of the mixing distribution's batch and the components'
    batch without its last dim (the components)."""
    mix, comp = mixture_distribution, component_distribution
    if not comp.batch_shape:
        raise ArgumentError(
            f"MixtureSameFamily: the component distribution has no components dim (its "
            f"batch shape is [], event {_shown(comp.event_shape)}): give it one value per "
            "component, Normal(mu, sigma) of mu: real[K]", "component_distribution")
    k = comp.batch_shape[-1]
    probs = getattr(mix, "_param", None)
    km = probs.shape[-1] if torch.is_tensor(probs) and probs.dim() else None
    if km is not None and km != k:
        raise ArgumentError(
            f"MixtureSameFamily: the mixing distribution has {km} weights but the component "
            f"distribution has {k} components (its last batch dim): they must be equal",
            "mixture_distribution")
    batch = _batch("MixtureSameFamily", mixture_distribution=mix.batch_shape,
                   component_distribution=comp.batch_shape[:-1])
    if mix.batch_shape != batch:
        mix = mix.expand(batch)
    if comp.batch_shape != batch + (k,):
        comp = comp.expand(batch + (k,))
    return _Mixture(mix, comp, validate_args)


def _per_component(b) -> bool:
    """Whether a bound is a tensor with the components dim (one end per component)."""
    return torch.is_tensor(b) and b.dim() > 0


class _Mixture(dist.MixtureSameFamily):
    """Pyro's ``MixtureSameFamily`` whose support is its components' (real, positive, an
    interval: torch's own constraint has no map from the real line, 'Cannot transform
    MixtureSameFamilyConstraint constraints' for a latent), and where their ends differ
    (``Uniform([0, 2], [1, 3])``) the hull of theirs, the same kind of set from the lowest
    lower end to the highest upper end, which ``biject_to`` maps onto. Its density at
    ``x`` is the log-sum over the components whose support holds ``x`` (the others give
    it no mass; torch's validation refused a value outside any one component's support):
    where they leave a gap (1.5 above) it is -inf, not a value error. Its name is Pyro's,
    as messages show it."""

    @constraints.dependent_property
    def support(self):
        comp = self.component_distribution
        own = comp.support
        if isinstance(own, constraints.independent) or comp.event_shape:
            lo, hi = support_ends(own)
            if lo is None and hi is None:
                return own  # vectors of reals
            return super().support
        lo, hi = support_ends(own)
        if not (_per_component(lo) or _per_component(hi)):
            return own
        hull = copy.copy(own)
        if _per_component(lo):
            hull.lower_bound = lo.amin(-1)
        if _per_component(hi):
            hull.upper_bound = hi.amax(-1)
        return hull

    def log_prob(self, x):
        if self._validate_args:
            self._validate_sample(x)
        x = self._pad(x)
        comp = self.component_distribution
        before, comp._validate_args = comp._validate_args, False
        try:
            lp = comp.log_prob(x)
        finally:
            comp._validate_args = before
        own = comp.support
        if not comp.event_shape and any(_per_component(b) for b in support_ends(own)):
            inside = own.check(x)
            lp = torch.where(inside, lp, torch.full_like(lp, -torch.inf))
        log_mix = torch.log_softmax(self.mixture_distribution.logits, dim=-1)
        return torch.logsumexp(lp + log_mix, dim=-1)


_Mixture.__name__ = _Mixture.__qualname__ = "MixtureSameFamily"


def _diag_mixture(name: str, locs, coord_scale, component_logits, scale_rank: int):
    locs, coord_scale = tensor(locs), tensor(coord_scale)
    component_logits = tensor(component_logits)
    if locs.dim() < 2:
        raise ArgumentError(f"{name}: 'locs' is {_shown(locs.shape)}, not a K x D matrix "
                            "(one row of D coordinates per component)", "locs")
    k, d = locs.shape[-2:]
    want = (k, d) if scale_rank == 2 else (d,)
    if tuple(coord_scale.shape[-scale_rank:]) != want or coord_scale.dim() < scale_rank:
        raise ArgumentError(
            f"{name}: 'coord_scale' is {_shown(coord_scale.shape)} but 'locs' is "
            f"{_shown(locs.shape)}: coord_scale must be "
            f"{'K x D, as locs' if scale_rank == 2 else 'D, one scale per coordinate'} "
            f"({_shown(want)})", "coord_scale")
    if component_logits.dim() < 1 or component_logits.shape[-1] != k:
        raise ArgumentError(
            f"{name}: 'component_logits' is {_shown(component_logits.shape)} but 'locs' has "
            f"{k} components (rows, {_shown(locs.shape)}): one logit per component",
            "component_logits")
    batch = _batch(name, locs=locs.shape[:-2], coord_scale=coord_scale.shape[:-scale_rank],
                   component_logits=component_logits.shape[:-1])
    if batch:
        locs = locs.expand(batch + locs.shape[-2:])
        coord_scale = coord_scale.expand(batch + coord_scale.shape[-scale_rank:])
        component_logits = component_logits.expand(batch + (k,))
    return getattr(dist, name)(locs, coord_scale, component_logits)


def MixtureOfDiagNormals(locs, coord_scale, component_logits):  # noqa: N802
    """``pyro.distributions.MixtureOfDiagNormals``, sizes checked, batch dims broadcast."""
    return _diag_mixture("MixtureOfDiagNormals", locs, coord_scale, component_logits, 2)


def MixtureOfDiagNormalsSharedCovariance(locs, coord_scale, component_logits):  # noqa: N802
    """``pyro.distributions.MixtureOfDiagNormalsSharedCovariance``, sizes checked."""
    return _diag_mixture("MixtureOfDiagNormalsSharedCovariance", locs, coord_scale,
                         component_logits, 1)


class _GaussianScaleMixture(dist.GaussianScaleMixture):
    """Pyro's class with a log density of any number of values ``[..., D]`` (Pyro's
    takes one ``[D]`` only, an AssertionError in a plate or for a batch of draws): the
    same formula, summed over the last dim; its support is declared (vectors of reals,
    which Pyro leaves undeclared), so that a latent of it can be fitted."""

    support = constraints.independent(constraints.real, 1)

    def log_prob(self, value):
        eps_sqr = torch.pow(value / self.coord_scale, 2.0).sum(-1, keepdim=True)  # [..., 1]
        terms = (self.component_scale.log() * -self.dim + self.categorical.logits
                 - 0.5 * eps_sqr / torch.pow(self.component_scale, 2.0))
        return (torch.logsumexp(terms, dim=-1)
                - 0.5 * math.log(2.0 * math.pi) * float(self.dim)
                - self.coord_scale.log().sum())


def GaussianScaleMixture(coord_scale, component_logits, component_scale):  # noqa: N802
    """``pyro.distributions.GaussianScaleMixture``, its vectors' sizes checked, with a
    log density of a batch of values (:class:`_GaussianScaleMixture`)."""
    coord_scale, component_logits = tensor(coord_scale), tensor(component_logits)
    component_scale = tensor(component_scale)
    for arg, v, what in (("coord_scale", coord_scale, "D, one scale per coordinate"),
                         ("component_logits", component_logits, "K, one per component"),
                         ("component_scale", component_scale, "K, one per component")):
        if v.dim() != 1:
            raise ArgumentError(
                f"GaussianScaleMixture: '{arg}' is {_shown(v.shape)}, not a vector of {what} "
                "(Pyro's GaussianScaleMixture has no batch form: one mixture per site)", arg)
    if component_scale.shape != component_logits.shape:
        raise ArgumentError(
            f"GaussianScaleMixture: 'component_scale' is {_shown(component_scale.shape)} but "
            f"'component_logits' is {_shown(component_logits.shape)}: one scale and one "
            "logit per component", "component_scale")
    return _GaussianScaleMixture(coord_scale, component_logits, component_scale)


def MultivariateNormal(loc, covariance_matrix=None, precision_matrix=None,  # noqa: N802
                       scale_tril=None, validate_args=None):
    """``pyro.distributions.MultivariateNormal``, its matrix D x D for a ``loc`` of D."""
    loc = tensor(loc)
    for arg, m in (("covariance_matrix", covariance_matrix),
                   ("precision_matrix", precision_matrix), ("scale_tril", scale_tril)):
        if m is None or not torch.is_tensor(m) or loc.dim() < 1 or m.dim() < 2:
            continue
        d = loc.shape[-1]
        if tuple(m.shape[-2:]) != (d, d):
            raise ArgumentError(
                f"MultivariateNormal: 'loc' has {d} elements but '{arg}' is "
                f"{' x '.join(str(n) for n in m.shape[-2:])}: a normal of {d} coordinates "
                f"takes a {d} x {d} {arg.split('_')[0]} matrix", arg)
    return dist.MultivariateNormal(loc, covariance_matrix, precision_matrix, scale_tril,
                                   validate_args)
