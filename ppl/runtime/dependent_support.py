"""Latents whose support follows other latents: Stan's transform, made per evaluation.

``z ~ Uniform(a, a + 1)`` with ``a`` a latent: Pyro's samplers and autoguides build each
latent's map from the real line, ``biject_to(site.fn.support)``, once, from the initial
trace, so every later value of ``a`` would be read through the first one's bounds (a
silent wrong posterior: ``a``'s mean near 1.5 where it is 0). Stan maps such a parameter
with its *current* bounds and adds the log-Jacobian to the target; so does
:func:`sample_in_support`. The sampled site is an auxiliary ``z$unconstrained`` on the
real line (:func:`unconstrained`), and ``z`` is recorded as its image under the current
map; ``ppl.infer.run.fit`` shows ``z`` as the latent and hides the auxiliary site.
"""

from __future__ import annotations

import pyro
from pyro.distributions import TransformedDistribution
from torch.distributions import biject_to

# a name no BDL program can write: ``z``'s draw on the real line
SUFFIX = "$unconstrained"


def unconstrained(fn) -> TransformedDistribution:
    """``fn`` seen on the real line through ``t = biject_to(fn.support)``: Pyro's
    ``TransformedDistribution`` of ``fn`` by ``t^-1``, so ``log_prob(u) = fn.log_prob(t(u))
    + log|det J_t(u)|`` and ``sample() = t^-1(fn.sample())`` (prior draws of ``t(u)`` are
    exact draws of ``fn``). Its value ``u`` is unvalidated, as ``fn``'s own bounds follow
    other latents."""
    return TransformedDistribution(fn, biject_to(fn.support).inv, validate_args=False)


def _real_line_draw(name: str, fn):
    """``name$unconstrained ~ unconstrained(fn)``, mapped back into ``fn``'s support."""
    d = unconstrained(fn)
    return d.transforms[0].inv(pyro.sample(name + SUFFIX, d))


def sample_in_support(name: str, fn):
    """``pyro.sample(name, fn)`` for a ``fn`` whose support follows other latents: draws
    ``name$unconstrained ~ unconstrained(fn)`` and records ``name`` as its image in
    ``fn``'s support at the current bounds (a deterministic site)."""
    return pyro.deterministic(name, _real_line_draw(name, fn),
                              event_dim=len(fn.event_shape))


def guide_in_support(name: str, fn):
    """A guide's draw of a latent that its model draws by :func:`sample_in_support`: the
    same auxiliary site, ``name$unconstrained ~ unconstrained(fn)`` (the law of
    ``t^-1(z)`` for ``z ~ fn``, ``t`` the map onto ``fn``'s own support), returning ``z``."""
    return _real_line_draw(name, fn)


__all__ = ["SUFFIX", "guide_in_support", "sample_in_support", "unconstrained"]
