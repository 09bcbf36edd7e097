"""``positive_ordered``: Stan's map from the real line, ``z = cumsum(exp(u))``.

Pyro maps its ``positive_ordered_vector`` by ``exp(ordered(u))``, ``z_k = exp(u_0 +
sum_{j <= k} exp(u_j))``: the increments are exponentiated twice, so ``z`` overflows to
inf at moderate ``u`` (``u = [0, 6.6]`` in float32) and the potential is NaN. Stan maps
``z_k = sum_{j <= k} exp(u_j)`` (log-Jacobian ``sum u``). BDL's declared type
``positive_ordered`` is the set :data:`positive_ordered`, a constraint of BDL's own (a
subclass of Pyro's, with the same check and name) that ``biject_to`` and
``transform_to`` map by :class:`CumsumExp`, so Pyro's registry for its own
``positive_ordered_vector`` is left as it is for other users. Models and guides read
the same map (a guide's ``positive_ordered[K]`` draw is ``rt.transformed``'s
``biject_to`` of it).
"""

from __future__ import annotations

import torch
from pyro.distributions import constraints
from torch.distributions import biject_to, transform_to
from torch.distributions.transforms import Transform

_PyroPositiveOrdered = type(constraints.positive_ordered_vector)


class _PositiveOrderedVector(_PyroPositiveOrdered):
    """Positive increasing vectors (Pyro's check), mapped by :class:`CumsumExp`; one
    vector is one value (event dim 1, which Pyro's class leaves at 0)."""

    event_dim = 1


positive_ordered = _PositiveOrderedVector()


class CumsumExp(Transform):
    """The real vectors onto positive increasing ones: ``z = cumsum(exp(u))``, inverse
    ``u = log(diff(z))`` (``z_0`` for the first), ``log|det J| = sum(u)`` (J is
    triangular with diagonal ``exp(u_k)``)."""

    domain = constraints.real_vector
    codomain = positive_ordered
    bijective = True
    sign = +1

    def __eq__(self, other):
        return isinstance(other, CumsumExp)

    def __hash__(self):
        return hash(CumsumExp)

    def _call(self, u):
        return torch.cumsum(torch.exp(u), dim=-1)

    def _inverse(self, z):
        steps = torch.cat([z[..., :1], z[..., 1:] - z[..., :-1]], dim=-1)
        return torch.log(steps)

    def log_abs_det_jacobian(self, u, z):
        return u.sum(-1)


@biject_to.register(_PositiveOrderedVector)
@transform_to.register(_PositiveOrderedVector)
def _cumsum_exp(constraint):
    return CumsumExp()


__all__ = ["CumsumExp", "positive_ordered"]
