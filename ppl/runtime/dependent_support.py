"""Latents whose support follows other latents: Stan's transform, made per evaluation.

``z ~ Uniform(a, a + 1)`` with ``a`` a latent: Pyro's samplers and autoguides build each
latent's map from the real line, ``biject_to(site.fn.support)``, once, from the initial
trace, so every later value of ``a`` would be read through the first one's bounds (a
silent wrong posterior: ``a``'s mean near 1.5 where it is 0). Stan maps such a parameter
with its *current* bounds and adds the log-Jacobian to the target; so does
:func:`sample_in_support`. The sampled site is an auxiliary ``z$unconstrained`` on the
real line (:class:`Unconstrained`), and ``z`` is recorded as its image under the current
map; ``ppl.infer.run.fit`` shows ``z`` as the latent and hides the auxiliary site.
"""

from __future__ import annotations

import pyro
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution
from torch.distributions import biject_to

# a name no BDL program can write: ``z``'s draw on the real line
SUFFIX = "$unconstrained"


class Unconstrained(TorchDistribution):
    """``fn`` seen on the real line through ``t = biject_to(fn.support)``:
    ``log_prob(u) = fn.log_prob(t(u)) + log|det J_t(u)|``; ``sample() = t^-1(fn.sample())``,
    so prior draws of ``t(u)`` are exact draws of ``fn``."""

    arg_constraints: dict = {}

    def __init__(self, fn, validate_args=None):
        self.fn = fn
        self.transform = biject_to(fn.support)
        super().__init__(fn.batch_shape, fn.event_shape, validate_args=False)

    @property
    def support(self):
        rank = len(self.event_shape)
        return constraints.independent(constraints.real, rank) if rank else constraints.real

    @property
    def has_rsample(self):
        return self.fn.has_rsample

    def expand(self, batch_shape, _instance=None):
        return Unconstrained(self.fn.expand(batch_shape))

    def rsample(self, sample_shape=()):
        return self.transform.inv(self.fn.rsample(sample_shape))

    def sample(self, sample_shape=()):
        return self.transform.inv(self.fn.sample(sample_shape)).detach()

    def log_prob(self, value):
        z = self.transform(value)
        lp = self.fn.log_prob(z)
        jac = self.transform.log_abs_det_jacobian(value, z)
        extra = jac.dim() - lp.dim()  # an elementwise map of an event: summed over it
        return lp + (jac.sum(tuple(range(-extra, 0))) if extra > 0 else jac)


def sample_in_support(name: str, fn):
    """``pyro.sample(name, fn)`` for a ``fn`` whose support follows other latents: draws
    ``name$unconstrained ~ Unconstrained(fn)`` and records ``name`` as its image in
    ``fn``'s support at the current bounds (a deterministic site)."""
    u = pyro.sample(name + SUFFIX, Unconstrained(fn))
    return pyro.deterministic(name, biject_to(fn.support)(u), event_dim=len(fn.event_shape))


def guide_in_support(name: str, fn):
    """A guide's draw of a latent that its model draws by :func:`sample_in_support`: the
    same auxiliary site, ``name$unconstrained ~ Unconstrained(fn)`` (the law of
    ``t^-1(z)`` for ``z ~ fn``, ``t`` the map onto ``fn``'s own support), returning ``z``."""
    u = pyro.sample(name + SUFFIX, Unconstrained(fn))
    return biject_to(fn.support)(u)


__all__ = ["SUFFIX", "Unconstrained", "guide_in_support", "sample_in_support"]
