"""The linear-algebra builtins against numpy: solve (Stan's mdivide_left), logdet, and
the GP posterior mean they give."""

from __future__ import annotations

import math

import numpy as np

import ppl
from ppl.infer.run import torch_defaults

GP = """
model GP(x: real[N], y: real[N], x_new: real[M]) {
  k = rbf(lengthscale=0.7, variance=1.3)
  K = gram(k, x) + 0.2^2 * eye(N)
  y ~ MultivariateNormal(zeros(N), covariance_matrix=K)
  f_new = gram(k, x_new, x) @ solve(K, y)
  half_logdet = 0.5 * logdet(K)
}
"""


def _rbf(a, b, ell=0.7, var=1.3):
    return var * np.exp(-0.5 * (a[:, None] - b[None, :]) ** 2 / ell**2)


def test_gp_posterior_mean_and_logdet_from_solve():
    """f_new = K(x*, x) K^-1 y is the exact GP posterior mean; logdet(K) as numpy's. The
    kernel k, fixed, is read by transformed data: it is built in their function (and
    not left unread in the model's)."""
    x = np.array([-1.0, 0.0, 0.4, 1.5, 2.0])
    y = np.array([0.3, -0.2, 0.1, 0.9, 0.7])
    xn = np.array([-0.5, 1.0])
    # computed from data alone, they are transformed data: m.bind evaluates them
    m = ppl.compile(GP)
    assert m.source.count("k = rt.kernels.RBF(lengthscale=0.7, variance=1.3)") == 1
    with torch_defaults("cpu", "float64"):
        d = m.bind({"x": x, "y": y, "x_new": xn})
    K = _rbf(x, x) + (0.04 + 1e-6) * np.eye(5)  # gram(k, x) adds a 1e-6 jitter
    want = _rbf(xn, x) @ np.linalg.solve(K, y)
    np.testing.assert_allclose(d["f_new"].numpy(), want, rtol=1e-10)
    assert math.isclose(float(d["half_logdet"]), 0.5 * np.linalg.slogdet(K)[1],
                        rel_tol=1e-10)


def test_solve_takes_its_shape_from_the_right_hand_side():
    m = ppl.compile("""
model S(A: real[N, N], b: real[N, K]) {
  x = solve(A, b)
}
""")
    A = np.array([[2.0, 1.0], [1.0, 3.0]])
    b = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert m.checked.symbols["x"].ty.shape is not None
    assert [str(s) for s in m.checked.symbols["x"].ty.shape] == ["N", "K"]
    with torch_defaults("cpu", "float64"):
        x = m.bind({"A": A, "b": b})["x"]
    np.testing.assert_allclose(x.numpy(), np.linalg.inv(A), rtol=1e-12)
