"""Stan's vector and matrix helpers as builtins (pow, diag_pre_multiply,
diag_post_multiply, quad_form_diag, outer, tril, sd, variance, sort, reverse, cumprod),
checked against numpy; and the unknown-function notes for Stan and numpy names."""

import numpy as np
import pytest
from scipy import stats

import ppl

X = np.array([0.5, 2.0, -1.0])
A = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 10.0]])


def _value(expr):
    m = ppl.compile(f"model M(x: real[N], A: real[N, N], T: int) {{\n  mu ~ Normal(0, 1)\n"
                    f"  v = {expr}\n  x ~ Normal(mu, 1)\n}}\n")
    shape = m.checked.symbols["v"].ty.shape
    return tuple(str(d) for d in shape), m.bind({"x": X.tolist(), "A": A.tolist(), "T": 3})["v"]


@pytest.mark.parametrize("expr, shape, want", [
    ("pow(x, 2)", ("N",), X ** 2),
    ("pow(2.0, x)", ("N",), 2.0 ** X),
    ("pow(T, 2)", (), 9.0),
    ("diag_pre_multiply(x, A)", ("N", "N"), np.diag(X) @ A),
    ("diag_post_multiply(A, x)", ("N", "N"), A @ np.diag(X)),
    ("quad_form_diag(A, x)", ("N", "N"), np.diag(X) @ A @ np.diag(X)),
    ("outer(x, x)", ("N", "N"), np.outer(X, X)),
    ("tril(A)", ("N", "N"), np.tril(A)),
    ("sd(x)", (), np.std(X, ddof=1)),
    ("variance(A)", (), np.var(A, ddof=1)),
    ("sort(x)", ("N",), np.sort(X)),
    ("reverse(x)", ("N",), X[::-1]),
    ("reverse(sort(x))", ("N",), np.sort(X)[::-1]),
    ("cumprod(x)", ("N",), np.cumprod(X)),
    ("cumprod(A, dim=0)", ("N", "N"), np.cumprod(A, axis=0)),
])
def test_against_numpy(expr, shape, want):
    got_shape, got = _value(expr)
    assert got_shape == shape
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)


def test_scale_tril_of_diag_pre_multiply():
    """The Stan idiom: MultivariateNormal(mu, scale_tril=diag_pre_multiply(tau, L))."""
    m = ppl.compile("model M(y: real[K]) {\n  tau: real<lower=0>[K] ~ HalfNormal(1)\n"
                    "  L ~ LKJCholesky(K, 2.0)\n"
                    "  y ~ MultivariateNormal(zeros(K), scale_tril=diag_pre_multiply(tau, L))\n"
                    "}\n")
    tau, L, y = np.array([0.5, 2.0]), np.array([[1.0, 0.0], [0.6, 0.8]]), np.array([0.3, -1.0])
    chol = np.diag(tau) @ L
    got = m.log_density({"tau": tau.tolist(), "L": L.tolist()}, {"y": y.tolist()})
    # LKJCholesky(2, eta=2): density c * L11^(K - 2 + 2 (eta - 1)) = c * 0.8^2, and for
    # K = 2 the normaliser c is 1 / B(eta, eta) * ... : taken from a second point instead
    lkj = m.log_density({"tau": tau.tolist(), "L": [[1.0, 0.0], [0.0, 1.0]]},
                        {"y": y.tolist()})
    rest = lambda c: stats.multivariate_normal.logpdf(y, np.zeros(2), c @ c.T)  # noqa: E731
    # the two points differ by the LKJ term 2 log 0.8 and the normal's covariance
    assert got - lkj == pytest.approx(2 * np.log(0.8) + rest(chol) - rest(np.diag(tau)),
                                      rel=1e-5)


@pytest.mark.parametrize("name, note", [
    ("inv", "Stan's inv(x) is 1 / x here"),
    ("maximum", "the largest element is max(x); the elementwise maximum of two values is "
                "where(a > b, a, b) (clamp(a, min=b) for a number b)"),
    ("sort_desc", "Stan's sort_desc(x) is reverse(sort(x)) here"),
    ("fmax", "Stan's fmax(x, y) is clamp(x, min=y) for a number y, where(x > y, x, y) for a "
             "tensor"),
    ("lgo", "did you mean 'log'?"),      # the same letters: a slip of two keys
    ("variace", "did you mean 'variance'?"),
])
def test_unknown_function_notes(name, note):
    with pytest.raises(ppl.BdlError) as err:
        ppl.compile(f"model M(x: real[N]) {{\n  v = {name}(x)\n  x ~ Normal(0, 1)\n}}\n")
    (d,) = err.value.diagnostics
    assert (d.message, d.notes) == (f"unknown function '{name}'", [note])


@pytest.mark.parametrize("name", ["exq", "crossprud"])
def test_no_far_guess(name):
    """A ratio under 0.75 proposes nothing (exq -> exp was 0.67, as inv -> sin was)."""
    with pytest.raises(ppl.BdlError) as err:
        ppl.compile(f"model M(x: real[N]) {{\n  v = {name}(x)\n  x ~ Normal(0, 1)\n}}\n")
    assert err.value.diagnostics[0].notes == []


def test_sd_per_row_in_a_plate_and_along_dim():
    """sd(y[i]) in plate i is one sd per row, as Stan's loop reads it (the reduction
    family's rule: rt.reduce_elements), not one over the whole y; dim= as for sum."""
    y = np.array([[1.0, 2.0, 4.0], [0.0, 0.0, 3.0]])
    m = ppl.compile("model M(y: real[N, K], z: real[N]) {\n  mu ~ Normal(0, 1)\n"
                    "  plate i in N {\n    z ~ Normal(mu, sd(y[i]))\n  }\n"
                    "  t = variance(y, dim=1)\n}\n")
    sds = np.std(y, axis=1, ddof=1)
    got = m.log_density({"mu": 0.0}, {"y": y.tolist(), "z": [0.0, 0.0]})
    assert got == pytest.approx(stats.norm.logpdf(0) + stats.norm.logpdf(0, 0, sds).sum(),
                                rel=1e-6)
    t = m.bind({"y": y.tolist(), "z": [0.0, 0.0]})["t"]
    np.testing.assert_allclose(t.numpy(), np.var(y, axis=1, ddof=1), rtol=1e-6)
