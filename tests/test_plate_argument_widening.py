"""Plate densities found by the oracle fuzz (Stan's loop meaning), each against
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


# ---- (b) a whole vector plus the element's number, reduced along its own dim ----

def test_logsumexp_of_the_whole_vector_plus_the_elements_number():
    """(u[:] + u) / c in plate m is the vector u + u[m] for every m (u[:] whole, u the
    element's), so logsumexp(..., dim=-1) is each element's own: Stan's
    log_sum_exp((u + u[m]) / c)."""
    u, y = _t(3, seed=3), _t(3, seed=4)
    src = ("model F(u: real[M], c: real, y: real[M]) {\n  plate m in M {\n"
           "    y ~ Normal(logsumexp((u[:] + u) / c, dim=-1), 1)\n  }\n}")
    got = float(ppl.compile(src).log_density({}, {"u": u, "c": 1.7, "y": y}))
    want = sum(_normal(y[m], torch.logsumexp((u + u[m]) / 1.7, -1)) for m in range(3))
    assert abs(got - want) < 1e-4


# ---- (c) a reduction over an inner plate's dim of data read whole ----

KM = """model F(A: real[K, M], y: real[K, M]) {
  plate k in K {
    plate m in M {
      y ~ Normal(READ, 1)
    }
  }
}"""


def test_a_reduction_over_an_inner_plates_dim_is_a_located_error():
    """sum(A, dim=-1) of A: real[K, M] read whole under plates k, m put its [K] on plate
    m's dim: Pyro's 'Shape mismatch inside plate', or with K = M loc[k, m] = sum(A[m])
    (a silent wrong density). Refused at compile time, naming plate m."""
    with pytest.raises(ppl.BdlError, match=r"sum over its dim 1 \(plate m's\)") as err:
        ppl.compile(KM.replace("READ", "sum(A, dim=-1)"))
    assert ":4:18:" in str(err.value) and "A_r = sum(A, dim=-1)" in str(err.value)


def test_the_reductions_that_keep_the_plate_dims_in_place():
    """Over the outermost plate dim, sum(A, dim=0) is one [M] for every k (column sums,
    paired with m); computed before the plates, A_r = sum(A, dim=-1) is row k's sum."""
    a, y = _t(3, 4, seed=5), _t(3, 4, seed=6)
    got = float(ppl.compile(KM.replace("READ", "sum(A, dim=0)")).log_density(
        {}, {"A": a, "y": y}))
    assert abs(got - _normal(y, a.sum(0).expand(3, 4))) < 1e-4
    src = KM.replace("  plate k", "  A_r = sum(A, dim=-1)\n  plate k").replace("READ", "A_r")
    got = float(ppl.compile(src).log_density({}, {"A": a, "y": y}))
    assert abs(got - _normal(y, a.sum(1)[:, None].expand(3, 4))) < 1e-4


# ---- a number of an inner plate meets a whole vector in an expression of both plates ----

def test_an_inner_plates_number_meets_a_whole_vector_among_outer_plate_values():
    """(w2 - v) * where(v[1] > v[k], x, v[:]) under plates n, k (fuzz seed 1844): v is
    v[k], x is x[n] and v[:] the whole vector, so each (n, k) has its own K numbers,
    Stan's (w2 - v[k]) * (v[1] > v[k] ? x[n] : v). (w2 - v) met v[:]'s K by position
    (it was widened only against values of the same plates): a silently wrong density."""
    x, v, u, y = _t(4, seed=7), _t(3, seed=8), _t(5, seed=9), _t(4, 3, 3, seed=10)
    src = ("model F(x: real[N], v: real[K], u: real[M], y6: real[N, K, K]) {\n"
           "  w2 = u[0:2][1]\n  plate n in N {\n    plate k in K {\n"
           "      y6 ~ Normal((w2 - v) * where(v[1] > v[k], x, v[:]), 1.0)\n    }\n  }\n}")
    got = float(ppl.compile(src).log_density({}, {"x": x, "v": v, "u": u, "y6": y}))
    want = sum(_normal(y[n, k], (u[1] - v[k]) * torch.where(v[1] > v[k], x[n], v))
               for n in range(4) for k in range(3))
    assert abs(got - want) < 1e-4
