"""Pyro's stable laws, with log density -inf off the support of a totally skewed law.

A stable law with stability below 1 and skew 1 (or -1) lives on a half-line: in Nolan's
S0 coordinates (Pyro's default) the standardised value ``(x - loc) / scale`` is at
least ``-tan(pi * stability / 2)`` (at most its negative for skew -1); in the S
coordinates at least (at most) 0. Pyro's numerical integral gives NaN there, not the
-inf of a value the law cannot take, and a NaN density reads as a failed computation to
``m.log_density`` and the samplers. Generated code calls ``rt.Stable`` and
``rt.StableWithLogProb`` (``signatures.OWN_CLASSES``), Pyro's own classes.

``coords="S"`` is Nolan's S1 (scipy's ``levy_stable`` with ``parameterization = "S1"``):
a standard S1 variable is a standard S0 one plus ``skew * tan(pi * stability / 2)``
(stability not 1), and at stability 1 ``loc`` is moved by ``(2 / pi) * skew * scale *
log(scale)``. Pyro's density there took ``tan`` of the whole shifted value
(``tan(z - skew * pi * stability / 2)``, not a density: -1.697 where scipy's is -1.817)
and its draws left out the shift at stability 1; both are redone here through S0.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch


def _off_support(d, value):
    z = (value - d.loc) / d.scale
    a, b = d.stability, d.skew
    end = 0.0 if d.coords == "S" else -b * torch.tan(math.pi * a / 2)
    return (a < 1) & (b.abs() == 1) & (b * (z - end) < 0)


def _s1_shift(d):
    """S1's location less S0's, in units of ``scale``: the standardised S1 value less
    this is a standard S0 one (Nolan's two parametrisations; scipy's levy_stable)."""
    a, b = d.stability, d.skew
    return torch.where(a == 1, 2 / math.pi * b * d.scale.log(),
                       b * torch.tan(math.pi * a / 2))


class _Coords:
    def log_prob(self, value):
        if self.coords == "S":
            z = (value - self.loc) / self.scale - _s1_shift(self)
            lp = dist.Stable(self.stability, self.skew, coords="S0").log_prob(z) \
                - self.scale.log()
        else:
            lp = super().log_prob(value)
        return torch.where(_off_support(self, value), -torch.inf, lp)

    def rsample(self, sample_shape=()):
        if self.coords != "S":
            return super().rsample(sample_shape)
        z = dist.Stable(self.stability, self.skew, coords="S0").expand(
            self.batch_shape).rsample(sample_shape)
        return self.loc + self.scale * (z + _s1_shift(self))


class Stable(_Coords, dist.Stable):
    pass


class StableWithLogProb(_Coords, dist.StableWithLogProb):
    pass
