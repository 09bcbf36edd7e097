"""Event shapes and constrained priors for generated sample sites."""

from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution, constraints


def event(d, shape) -> TorchDistribution:
    """Make the per-plate-element shape ``shape`` the event of ``d``.

    ``shape`` ends with ``d``'s own event shape; the dimensions before it are expanded
    (broadcasting ``d``'s batch) and reinterpreted as event dimensions, keeping any
    leading batch dimensions (plates) of ``d`` as they are. Outside plates this is
    ``d.expand(shape).to_event(len(shape))`` for a scalar ``d``.
    """
    shape = torch.Size(int(s) for s in shape)
    ev = len(d.event_shape)
    extra = shape[: len(shape) - ev]
    if tuple(shape[len(shape) - ev:]) != tuple(d.event_shape):
        raise ValueError(f"event shape {tuple(d.event_shape)} does not match {tuple(shape)}")
    if not extra:
        return d
    lead = d.batch_shape[: max(len(d.batch_shape) - len(extra), 0)]
    return d.expand(lead + extra).to_event(len(extra))


class Restricted(TorchDistribution):
    """A prior restricted to a constraint set, with the density left unnormalised there.

    This is Stan's semantics for a constrained parameter (``mu: ordered[2] ~ Normal(0, 2)``):
    the log density is ``base.log_prob`` on the support ``constraint``; samplers work on
    the unconstrained scale via ``biject_to(constraint)``. Sampling (prior predictive) draws
    from ``base`` and maps into the set: sorting for ordered vectors (exact for
    exchangeable ``base``), rejection for bounds.
    """

    arg_constraints: dict = {}

    def __init__(self, base, constraint, validate_args=None):
        self.base = base
        self._constraint = constraint
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    @constraints.dependent_property
    def support(self):
        return self._constraint

    def log_prob(self, value):
        return self.base.log_prob(value)

    def expand(self, batch_shape, _instance=None):
        return Restricted(self.base.expand(batch_shape), self._constraint)

    def sample(self, sample_shape=()):
        sample_shape = torch.Size(sample_shape)
        x = self.base.sample(sample_shape)
        c = self._constraint
        if c is constraints.ordered_vector:
            return x.sort(dim=-1).values
        if c is constraints.positive_ordered_vector:
            return x.abs().sort(dim=-1).values
        for _ in range(1000):
            ok = c.check(x)
            if bool(ok.all()):
                return x
            x = torch.where(_broadcast_ok(ok, x), x, self.base.sample(sample_shape))
        raise ValueError(f"could not draw a sample inside {c} by rejection")


def _broadcast_ok(ok, x):
    while ok.dim() < x.dim():
        ok = ok.unsqueeze(-1)
    return ok.expand_as(x)


class Flat(TorchDistribution):
    """The improper uniform prior on the real line (Stan's default for an unbounded
    parameter with no ``~``): log density 0. Declare its shape: ``beta: real[K] ~ Flat()``.

    It has no normalised draws; ``sample`` returns Uniform(-2, 2) values, which is what
    samplers use to initialise (as Stan does), never a prior predictive draw.
    """

    arg_constraints: dict = {}
    support = constraints.real

    def __init__(self, validate_args=None):
        super().__init__(torch.Size(), torch.Size(), validate_args=False)

    def log_prob(self, value):
        return torch.zeros_like(value)

    def sample(self, sample_shape=()):
        shape = torch.Size(sample_shape) + self.batch_shape + self.event_shape
        return torch.rand(shape) * 4 - 2
