"""Crashes the plate fuzz found, each checked against the density written out
by hand (numpy/scipy): a value of the data alone computed from a plate's value after the
plate (it was hoisted into the transformed data, before the plate ran: NameError), a
``where`` whose condition is a Python bool (torch's "got (bool, Tensor, Tensor)"),
``where``/``clamp`` of a per-element number and a vector (torch's "size of tensor a
must match"), ``A[:, m]`` in plate m (column m, laid out [K, M]: "Shape mismatch inside
plate", or a transposed read where K = M), and a value that does not vary along its
plate (``w = u`` in plate n), which lost the plate's size after it.

N = 3, K = 5 and M = 4 differ, so a read along the wrong dim shows.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats as st

import ppl

RNG = np.random.default_rng(26)
N, K, M = 3, 5, 4
X = RNG.normal(size=N)
X2 = RNG.normal(size=(N, K))
V = RNG.normal(size=K)
U = RNG.normal(size=M)
A = RNG.normal(size=(K, M))
XM = RNG.normal(size=(N, M))
YM = RNG.normal(size=M)
YMK = RNG.normal(size=(M, K))
YNK = RNG.normal(size=(N, K))
DATA = {"x": X, "x2": X2, "v": V, "u": U, "A": A, "xm": XM, "yM": YM, "yMK": YMK,
        "yNK": YNK}
HEAD = ("model F(x: real[N], x2: real[N, K], v: real[K], u: real[M], A: real[K, M], "
        "xm: real[N, M], yM: real[M], yMK: real[M, K], yNK: real[N, K]) {\n")


def _ld(body: str, latents: dict | None = None) -> float:
    return ppl.compile(HEAD + body + "\n}\n").log_density(latents or {}, DATA)


def _normal(y, loc, scale=1.0) -> float:
    return float(st.norm.logpdf(np.asarray(y), np.asarray(loc), scale).sum())


# -- 1. a top-level value of the data alone that reads a plate's value ----------------

def test_a_value_read_from_a_plates_value_is_computed_after_the_plate():
    """w2 = w[1] reads only data, so it was hoisted into the transformed data, which ran
    before the plate that computes w: NameError: name 'w' is not defined."""
    m = ppl.compile(HEAD + "  plate n in N { w = exp(x) }\n  w2 = w[1]\n"
                    "  w3 = 2 * w2\n  yM ~ Normal(w3, 1)\n}\n")
    assert "w2 = w[1]" in m.source.split("def F(")[1]  # in the model, after the plate
    assert abs(m.log_density({}, DATA) - _normal(YM, 2 * np.exp(X[1]))) < 1e-4


def test_a_value_of_the_data_alone_outside_plates_is_still_transformed_data():
    m = ppl.compile(HEAD + "  s = 2 * v[0]\n  plate n in N { w = exp(x) }\n"
                    "  yM ~ Normal(s + w[1], 1)\n}\n")
    assert "s = 2 * v[0]" in m.source.split("def F(")[0]  # hoisted, as before
    assert abs(m.log_density({}, DATA) - _normal(YM, 2 * V[0] + np.exp(X[1]))) < 1e-4


# -- 2. where with a condition of numbers ---------------------------------------------

@pytest.mark.parametrize("cond, pick", [
    ("0.9 > 0.5", True), ("0.3 > 0.5", False), ("true", True), ("K > 9", False),
    ("b", True)])
def test_where_takes_a_condition_of_numbers_and_sizes(cond, pick):
    """torch.where(0.9 > 0.5, v, v) was TypeError: got (bool, Tensor, Tensor)."""
    body = f"  b = 2 > 1\n  w = where({cond}, v[0:4], 2 * v[0:4])\n  yM ~ Normal(w, 1)"
    want = _normal(YM, V[:4] if pick else 2 * V[:4])
    assert abs(_ld(body) - want) < 1e-4


def test_where_of_numbers_in_a_plate():
    body = "  plate m in M { yM ~ Normal(where(0.9 > 0.5, 1.5, u) + where(K > M, u, 0.0), 1) }"
    assert abs(_ld(body) - _normal(YM, 1.5 + U)) < 1e-4


# -- where / clamp of a per-element number and a vector --------------------------------

def test_where_of_a_per_element_condition_and_a_per_element_row():
    """where(x[n] > 0, x2, -x2) in plate n is row n's choice (Stan's loop); x[n] [N] met
    x2 [N, K]: 'The size of tensor a (3) must match the size of tensor b (5)'."""
    body = "  plate n in N { yNK ~ Normal(where(x[n] > 0.1, x2, v) + clamp(x[n], max=0.2), 1) }"
    loc = np.where(X[:, None] > 0.1, X2, V[None, :]) + np.minimum(X, 0.2)[:, None]
    assert abs(_ld(body) - _normal(YNK, loc)) < 1e-4


def test_where_in_nested_plates_with_a_latent_of_the_outer_plate():
    src = ("model F(x: real[N], x2: real[N, K], y5: real[K, N, K]) {\n"
           "  plate k in K {\n    z: real[K] ~ Normal(0.5, 1)\n"
           "    plate n in N { y5 ~ Normal(where(x[n] > z, x2[n, :], 0.44), 0.5) }\n  }\n}\n")
    z = RNG.normal(size=K)
    y5 = RNG.normal(size=(K, N, K))
    want = _normal(z, 0.5)
    for k in range(K):
        for n in range(N):
            want += _normal(y5[k, n], np.where(X[n] > z[k], X2[n], 0.44), 0.5)
    got = ppl.compile(src).log_density({"z": z}, {"x": X, "x2": X2, "y5": y5})
    assert abs(got - want) < 1e-4


# -- 3. A[:, m] in plate m: column m, one [K] per element ------------------------------

@pytest.mark.parametrize("expr, per_m", [
    ("min(A[:, m])", lambda c: c.min()),
    ("sum(A[:, m])", lambda c: c.sum()),
    ("sum(A[:, m], dim=0)", lambda c: c.sum()),
    ("A[:, m][0]", lambda c: c[0]),
    ("A[0:2, m][1]", lambda c: c[1]),
    ("A[:, m] @ v", lambda c: c @ V),
    ("sum(A[:, m] * v) + mean(A[:, m] + v[0])", lambda c: c @ V + (c + V[0]).mean()),
])
@pytest.mark.parametrize("nested", [False, True])
def test_a_column_read_by_the_plates_index_is_each_elements_vector(expr, per_m, nested):
    """factor(min(A[:, m])) was "Shape mismatch inside plate('m') ... 4 vs 5": torch's
    A[:, m] is [K, M], the plate's dim last."""
    inner = " plate n in N { }" if nested else ""
    got = _ld(f"  plate m in M {{ factor({expr});{inner} }}")
    assert abs(got - sum(per_m(A[:, j]) for j in range(M))) < 1e-4


def test_a_column_read_by_the_plates_index_as_a_distributions_mean():
    """yMK ~ Normal(A[:, m], 1) was a size error ([K, M] and [M, K]); with K = M it would
    have read A transposed."""
    assert abs(_ld("  plate m in M { yMK ~ Normal(A[:, m], 1) }") - _normal(YMK, A.T)) < 1e-4
    sq = {"A": A[:4], "yMK": YMK[:, :4]}
    m = ppl.compile("model F(A: real[K, M], yMK: real[M, K]) {\n"
                    "  plate m in M { yMK ~ Normal(A[:, m], 1) }\n}\n")
    assert abs(m.log_density({}, sq) - _normal(YMK[:, :4], A[:4].T)) < 1e-4


# -- 4. a value that does not vary along its plate keeps the plate's size ---------------

def test_a_value_that_does_not_vary_along_its_plate_keeps_its_size_after_it():
    """w = u[0] in plate n is one value per element, as w = u[0] + 0 * x: w[1] after
    the plate was 'too many indices: the value has 0 dimensions', sum(w) was u[0]."""
    assert abs(_ld("  plate n in N { w = u[0] }\n  yM ~ Normal(w[1], 1)")
               - _normal(YM, U[0])) < 1e-4
    assert abs(_ld("  plate n in N { w = u[0] }\n  factor(sum(w))") - N * U[0]) < 1e-4
    assert abs(_ld("  plate n in N { w = u[0] + 0 * x }\n  factor(sum(w))") - N * U[0]) < 1e-4


def test_a_vector_that_does_not_vary_along_its_plates_is_copied_to_each_element():
    assert abs(_ld("  plate n in N { w = v }\n  factor(sum(w) + w[2, 1])")
               - (N * V.sum() + V[1])) < 1e-4
    # read per element in a later plate over N: w[n] is v
    assert abs(_ld("  plate n in N { w = v }\n  plate n in N { yNK ~ Normal(w, 1) }")
               - _normal(YNK, np.broadcast_to(V, (N, K)))) < 1e-4
    # nested plates: [N, M]
    assert abs(_ld("  plate n in N { plate m in M { w = v[0] } }\n"
                   "  factor(sum(w) + w[2, 3])") - (N * M + 1) * V[0]) < 1e-4


def test_a_latent_value_that_does_not_vary_along_its_plate_keeps_its_size():
    body = "  a ~ Normal(0, 1)\n  plate n in N { w = 2 * a }\n  yM ~ Normal(sum(w), 1)"
    assert abs(_ld(body, {"a": 0.3}) - (_normal(0.3, 0) + _normal(YM, N * 0.6))) < 1e-4
