"""Pyro's coalescent laws, with a support check that answers for every value.

Pyro's ``CoalescentTimesConstraint`` builds the whole phylogeny to count the lineages,
and a coalescence with no lineage before it (a time later than every leaf, or than the
leaves left unmerged) reads its binomial at index -1: torch's raw "index -1 is out of
bounds" RuntimeError, from the support check itself, instead of the value refused.
Generated code calls ``rt.CoalescentTimes`` and ``rt.CoalescentTimesWithRate``
(``signatures.OWN_CLASSES``): Pyro's classes, whose support counts the lineages alone, so
such a value is torch's support error, which ``ppl.locate.support_message`` words.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from pyro.distributions.coalescent import CoalescentTimesConstraint
from pyro.distributions.util import broadcast_shape
from torch.distributions import constraints


class _CoalescentTimesConstraint(CoalescentTimesConstraint):
    """Pyro's constraint (``ppl.locate.support_words`` words it by that name): the times
    increase, and each coalescence has a lineage left after it, the leaves later than it
    less the coalescences later than it (Pyro's order of the events, latest first)."""

    def check(self, value):
        leaf_times = self.leaf_times
        n = leaf_times.size(-1)
        batch = broadcast_shape(leaf_times.shape[:-1], value.shape[:-1])
        times = torch.cat([value.expand(batch + (n - 1,)),
                           leaf_times.to(value.dtype).expand(batch + (n,))], dim=-1)
        signs = torch.linspace(1.5 - n, n - 0.5, 2 * n - 1).sign()  # coalescences -1
        _, index = times.sort(dim=-1, descending=True)
        valid = (signs[index].cumsum(-1) > 0).all(dim=-1)
        if self.ordered:
            valid = valid & (value[..., :-1] <= value[..., 1:]).all(dim=-1)
        return valid


class CoalescentTimes(dist.CoalescentTimes):
    @constraints.dependent_property
    def support(self):
        return _CoalescentTimesConstraint(self.leaf_times)


class CoalescentTimesWithRate(dist.CoalescentTimesWithRate):
    @constraints.dependent_property
    def support(self):
        return _CoalescentTimesConstraint(self.leaf_times)
