"""Pyro's stable laws, with log density -inf off the support of a totally skewed law.

A stable law with stability below 1 and skew 1 (or -1) lives on a half-line: in Nolan's
S0 coordinates (Pyro's default) the standardised value ``(x - loc) / scale`` is at
least ``-tan(pi * stability / 2)`` (at most its negative for skew -1); in the S
coordinates at least (at most) 0. Pyro's numerical integral gives NaN there, not the
-inf of a value the law cannot take, and a NaN density reads as a failed computation to
``m.log_density`` and the samplers. Generated code calls ``rt.Stable`` and
``rt.StableWithLogProb`` (``signatures.OWN_CLASSES``), Pyro's own classes.
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


class Stable(dist.Stable):
    def log_prob(self, value):
        lp = super().log_prob(value)
        return torch.where(_off_support(self, value), -torch.inf, lp)


class StableWithLogProb(dist.StableWithLogProb):
    def log_prob(self, value):
        lp = super().log_prob(value)
        return torch.where(_off_support(self, value), -torch.inf, lp)
