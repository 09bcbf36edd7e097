"""Plate densities of stop 27 found by the oracle fuzz (Stan's loop meaning), each against
the sum written out by hand: a distribution's arguments are compared for size after each
has been widened to the site's per-element shape, so an inner plate's vector and an outer
plate's number meet as in Stan's nested loop.
"""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal

import ppl


def _t(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def _normal(x, loc, scale=1.0) -> float:
    return float(Normal(torch.as_tensor(loc, dtype=torch.float64),
                        torch.as_tensor(scale, dtype=torch.float64)).log_prob(
        torch.as_tensor(x, dtype=torch.float64)).sum())


SP = torch.nn.functional.softplus

# fuzz seed 1649: plates m (outer, M = 3) and n (inner, N = 4), y3[m, n] a vector of N
NESTED = """model F(x: real[N], u: real[M], y3: real[M, N, N]) {
  plate m in M {
    plate n in N {
      y3 ~ Normal(n * 0.5 + x[:], softplus(u[m]) + 0.5)
    }
  }
}"""


def test_sizes_of_arguments_are_compared_after_the_per_element_widening():
    """n * 0.5 + x[:] is each (m, n)'s [N] vector, softplus(u[m]) + 0.5 each row m's
    number: Stan's y3[m, n] ~ normal(n * 0.5 + x, softplus(u[m]) + 0.5). The checker
    compared [N] with [M, 1] before widening, a run-time 'N = 4 but M = 3' refusal."""
    x, u, y = _t(4), _t(3, seed=1), _t(3, 4, 4, seed=2)
    got = float(ppl.compile(NESTED).log_density({}, {"x": x, "u": u, "y3": y}))
    want = sum(_normal(y[m, n], n * 0.5 + x, SP(u[m]) + 0.5)
               for m in range(3) for n in range(4))
    assert abs(got - want) < 1e-4


def test_sizes_that_differ_after_widening_are_still_refused():
    """x[:] ([N]) and s ([K], no plate's size) are each one vector for every element: N
    against K is still a size check, refused where they differ."""
    src = NESTED.replace("u: real[M]", "u: real[M], s: real[K]").replace(
        "n * 0.5 + x[:]", "x[:]").replace("softplus(u[m])", "softplus(s)")
    m = ppl.compile(src)
    data = {"x": _t(4), "u": _t(3), "s": _t(2), "y3": _t(3, 4, 4)}
    with pytest.raises(ppl.BdlError, match="N = 4 but K = 2"):
        m.log_density({}, data)
