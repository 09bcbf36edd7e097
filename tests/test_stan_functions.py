"""Stan's vector and matrix helpers as builtins (pow, diag_pre_multiply,
diag_post_multiply, quad_form_diag, outer, tril, sd, variance, sort, reverse, cumprod),
checked against numpy; and the unknown-function notes for Stan and numpy names."""

import numpy as np
import pytest
import torch
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


def test_sd_and_variance_of_one_element_are_zero_as_in_stan():
    """Stan's sd and variance of a size-1 container return 0 (stan/math sd.hpp and
    variance.hpp: ``if (x.size() == 1) return 0``); n - 1 = 0 gave torch's NaN. Of int
    data they are real (torch's var refused a Long), and so is mean."""
    import torch

    from ppl import runtime as rt

    w = torch.tensor([5.0], requires_grad=True)
    s = rt.sd(w)
    s.backward()
    assert s.item() == 0.0 and w.grad.tolist() == [0.0]  # no sqrt'(0): no NaN gradient
    assert rt.variance(torch.tensor([[2.0], [7.0]]), dim=1).tolist() == [0.0, 0.0]
    assert rt.sd(torch.tensor([[2.0], [7.0]]), dim=0).item() == pytest.approx(5 / 2 ** 0.5)
    assert rt.reduce_elements(torch.tensor([[2.0], [7.0]]), "sd", 1).tolist() == [0.0, 0.0]
    assert rt.reduce_elements(torch.tensor([[1, 2], [3, 7]]), "mean", 1).tolist() == [1.5, 5.0]
    assert rt.variance(torch.tensor([1, 2, 6])).item() == pytest.approx(7.0)  # int data
    # in a model: sd(w) of w: real[1] is 0, one per row of y: real[N, 1] in a plate too,
    # sd(k) and mean(k) of k: int[3] = [2, 0, 1] are 1 and 1
    m = ppl.compile("model M(w: real[1], k: int[3], y: real[N, 1], z: real[N]) {\n"
                    "  mu ~ Normal(sd(w) + variance(w), 1)\n"
                    "  plate i in N {\n    z ~ Normal(mu + sd(y[i]) + sd(k) + mean(k), 1)\n  }\n"
                    "}\n")
    got = m.log_density({"mu": 0.5}, {"w": [5.0], "k": [2, 0, 1], "y": [[1.0], [4.0]],
                                      "z": [0.3, -0.2]})
    want = stats.norm.logpdf(0.5) + stats.norm.logpdf([0.3, -0.2], 2.5).sum()
    assert got == pytest.approx(want, rel=1e-6)


def test_sort_and_reverse_of_int_data_are_int_and_index():
    # typed real, th[sort(k)[0]] was "an index must be an integer, not a real value"
    m = ppl.compile("model M(k: int[3], th: real[3]) {\n  a = sort(k)\n  b = reverse(k)\n"
                    "  mu ~ Normal(th[a[0]] + th[b[0]] + th[reverse(sort(k))[0]], 1)\n}\n")
    assert m.checked.symbols["a"].ty.kind == "int" and m.checked.symbols["b"].ty.kind == "int"
    bound = m.bind({"k": [2, 0, 1], "th": [10.0, 20.0, 30.0]})
    assert bound["a"].tolist() == [0, 1, 2] and bound["b"].tolist() == [1, 0, 2]
    got = m.log_density({"mu": 0.5}, {"k": [2, 0, 1], "th": [10.0, 20.0, 30.0]})
    assert got == pytest.approx(stats.norm.logpdf(0.5, 10.0 + 20.0 + 30.0), rel=1e-6)
    # of real values they stay real
    x = ppl.compile("model M(x: real[3]) {\n  a = sort(x)\n  x ~ Normal(0, 1)\n}\n")
    assert x.checked.symbols["a"].ty.kind == "real"


def test_cumsum_and_cumprod_of_int_data_are_int_and_index():
    # typed real, th[cumsum(k)[1]] was "an index must be an integer, not a real value"
    m = ppl.compile("model M(k: int[3], th: real[4]) {\n  a = cumsum(k)\n  b = cumprod(k)\n"
                    "  mu ~ Normal(th[a[1]] + th[b[2]], 1)\n}\n")
    assert m.checked.symbols["a"].ty.kind == "int" and m.checked.symbols["b"].ty.kind == "int"
    data = {"k": [1, 2, 1], "th": [10.0, 20.0, 30.0, 40.0]}
    bound = m.bind(data)
    assert bound["a"].tolist() == [1, 3, 4] and bound["b"].tolist() == [1, 2, 2]
    got = m.log_density({"mu": 0.5}, data)
    assert got == pytest.approx(stats.norm.logpdf(0.5, 40.0 + 30.0), rel=1e-6)
    # mean of int data is real; of real values the running sums stay real
    r = ppl.compile("model M(k: int[3], x: real[3]) {\n  a = mean(k)\n  c = cumsum(x)\n"
                    "  x ~ Normal(a, 1)\n}\n")
    assert r.checked.symbols["a"].ty.kind == "real" and r.checked.symbols["c"].ty.kind == "real"


def test_sort_and_reverse_of_int_data_as_an_index_are_checked_when_data_bind():
    # th[sort(k)] reads exactly k's values: k = [-1, 0] read th[-1] silently (sum 0.4)
    for read, col in (("sort(k)", 27), ("reverse(k)", 30), ("sort(k) - 1", 27),
                      ("reverse(sort(k))", 35)):  # at k
        m = ppl.compile("model M(k: int[N], K: int) {\n  th: real[K] ~ Normal(0, 1)\n"
                        f"  mu ~ Normal(sum(th[{read}]), 1)\n}}\n", "m.bdl")
        with pytest.raises(ppl.BdlError) as e:
            m.bind({"k": [-1, 0] if "- 1" not in read else [0, 1], "K": 3})
        assert str(e.value).split("\n")[0] == (
            f"m.bdl:3:{col}: error: data 'k'{' - 1' if '- 1' in read else ''} indexes a "
            "dimension of 'th' of size K = 3 but k[0]"
            f"{' - 1' if '- 1' in read else ''} is -1: an index must be in [0, 3)"), read
    m = ppl.compile("model M(k: int[N], K: int) {\n  th: real[K] ~ Normal(0, 1)\n"
                    "  mu ~ Normal(sum(th[sort(k)]), 1)\n}\n", "m.bdl")
    th = [0.1, 0.2, 0.3]
    got = m.log_density({"th": th, "mu": 0.5}, {"k": [2, 0], "K": 3})
    want = stats.norm.logpdf(th).sum() + stats.norm.logpdf(0.5, 0.4)
    assert got == pytest.approx(want, rel=1e-6)


def test_clamp_of_int_values_between_int_bounds_is_an_int_that_indexes():
    # typed int but rt.tensor(0) of the model's dtype made it real: "tensors used as
    # indices must be long" at run time
    src = ("model M(k: int[N], K: int) {\n  th: real[K] ~ Normal(0, 1)\n"
           "  mu ~ Normal(sum(th[clamp(k, 0, 2)]) + sum(th[clamp(k, min=0, max=K - 1)]), 1)\n"
           "}\n")
    m = ppl.compile(src, "m.bdl")
    th = [0.1, 0.2, 0.3]
    got = m.log_density({"th": th, "mu": 0.5}, {"k": [-1, 5, 1], "K": 3})
    # clamp([-1, 5, 1]) = [0, 2, 1]: 0.6 twice
    assert got == pytest.approx(stats.norm.logpdf(th).sum() + stats.norm.logpdf(0.5, 1.2),
                                rel=1e-6)
    # a real bound makes it real (an index then refused at check), as torch promotes
    with pytest.raises(ppl.BdlError, match=r"an index must be an integer, not a real value"):
        ppl.compile(src.replace("clamp(k, 0, 2)", "clamp(k, 0, 2.5)"), "m.bdl")
    r = ppl.compile("model M(k: int[N], x: real[N]) {\n  a = clamp(k, 0, 2.5)\n"
                    "  b = clamp(k, 0, 2)\n  c = clamp(x, min=0)\n  x ~ Normal(a + b + c, 1)\n}\n")
    assert [r.checked.symbols[v].ty.kind for v in "abc"] == ["real", "int", "real"]
    bound = r.bind({"k": [-1, 5], "x": [-0.5, 0.5]})
    assert bound["a"].tolist() == [0.0, 2.5] and bound["a"].is_floating_point()
    assert bound["b"].tolist() == [0, 2] and bound["b"].dtype == torch.int64
    assert bound["c"].tolist() == [0.0, 0.5] and bound["c"].is_floating_point()


def test_int_data_as_a_real_parameter_samples_and_scores_in_floating_point():
    # dist.Normal(k, 1) of int64 k: torch's "normal_kernel_cpu not implemented for 'Long'"
    m = ppl.compile("model M(k: int[3], N: int) {\n  a ~ Normal(sum(k), 1)\n"
                    "  b: real[3] ~ Normal(k, 1)\n  c ~ Normal(N, 1)\n}\n")
    assert "rt.real(k)" in m.source and "Normal(N, 1)" in m.source
    data = {"k": [1, 2, 3], "N": 2}
    draws = m.sample_prior(data, num_samples=4000, seed=0)
    assert draws["a"].is_floating_point() and draws["b"].is_floating_point()
    # prior means 6, (1, 2, 3), 2 within 4 Monte Carlo standard errors (sd 1)
    assert abs(draws["a"].mean().item() - 6.0) < 4 / 4000 ** 0.5
    assert (draws["b"].mean(0) - torch.tensor([1.0, 2.0, 3.0])).abs().max() < 4 / 4000 ** 0.5
    got = m.log_density({"a": 5.0, "b": [1.0, 2.0, 4.0], "c": 2.0}, data)
    want = stats.norm.logpdf(5.0, 6.0) + stats.norm.logpdf([1.0, 2.0, 4.0], [1, 2, 3]).sum() \
        + stats.norm.logpdf(2.0, 2.0)
    assert got == pytest.approx(want, rel=1e-6)
