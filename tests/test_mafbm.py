"""MA-fBM maths (ppl/runtime/mafbm.py) against exact answers: METHODS.md section 2."""

import math

import mpmath as mp
import pytest
import torch

from ppl.runtime import mafbm as m

G5 = m.gamma_grid(5)



def test_gamma_grid_is_geometric_on_the_default_range():
    g = m.gamma_grid(5, 20.0)
    r = 20.0 ** (2 / 4)
    expect = torch.tensor([r ** (k - 3) for k in range(1, 6)], dtype=torch.float64)
    assert torch.allclose(g, expect, rtol=1e-12)
    g2 = m.gamma_grid(4, 20.0, 1e-3)
    assert math.isclose(float(g2[0]), 1e-3) and math.isclose(float(g2[-1]), 20.0)
    ratios = g2[1:] / g2[:-1]
    assert torch.allclose(ratios, ratios[0].expand(3))


# the epsilon table of METHODS.md (T = 1, gamma in [1/20, 20], K = 5)
EPS_II = {0.1: .229, 0.2: .047, 0.3: .008, 0.4: .001, 0.5: 0.0, 0.7: 1e-4}
EPS_I = {0.1: .307, 0.2: .080, 0.3: .017, 0.4: .006, 0.5: .013, 0.6: .037, 0.7: .098,
         0.8: .234, 0.9: .510}


@pytest.mark.parametrize("H,eps", sorted(EPS_II.items()))
def test_epsilon_table_type_II(H, eps):
    _, e = m.omega(H, G5, 1.0, kind=2)
    assert abs(float(e) - eps) < 6e-4


@pytest.mark.parametrize("H,eps", sorted(EPS_I.items()))
def test_epsilon_table_type_I(H, eps):
    _, e = m.omega(H, G5, 1.0, kind=1)
    assert abs(float(e) - eps) < 6e-4


def test_type_I_small_gamma_min_at_large_H():
    _, e = m.omega(0.7, m.gamma_grid(5, 20.0, 1e-3), 1.0, kind=1)
    assert abs(float(e) - 0.012) < 6e-4


def _quad_abc(H, g, T, kind):
    """A, b, c by numerical quadrature of their defining integrals (mpmath, no torch):
    A_ij = int_0^T E[Yi Yj] dt, b_k = int_0^T E[B Y_k] dt, c = int_0^T E[B^2] dt."""
    mp.mp.dps = 15
    H = mp.mpf(H)
    a = H + mp.mpf(0.5)
    T = mp.mpf(T)
    K = len(g)
    A = [[None] * K for _ in range(K)]
    b = []
    for i in range(K):
        gi = mp.mpf(g[i])
        for j in range(K):
            gj = mp.mpf(g[j])
            if kind == 2:   # E[Yi(t) Yj(t)] = int_0^t e^-(gi+gj)(t-s) ds
                f = lambda t, gi=gi, gj=gj: (1 - mp.e ** (-(gi + gj) * t)) / (gi + gj)  # noqa: E731
            else:           # stationary OU: E[(Yi(t)-Yi(0))(Yj(t)-Yj(0))]
                f = lambda t, gi=gi, gj=gj: (2 - mp.e ** (-gi * t) - mp.e ** (-gj * t)) / (gi + gj)  # noqa: E731,E501
            A[i][j] = mp.quad(f, [0, T])
        if kind == 2:   # E[B(t) Y(t)] = Gamma(a)^-1 int_0^t u^(a-1) e^(-g u) du
            inner = lambda t, gi=gi: mp.quad(lambda u: u ** (a - 1) * mp.e ** (-gi * u), [0, t])  # noqa: E731,E501
        else:           # Mandelbrot-van Ness kernel against e^-g(t-s) - e^(g s) 1{s<0}
            def inner(t, gi=gi):
                neg = mp.quad(lambda s: ((t - s) ** (a - 1) - (-s) ** (a - 1))
                              * (mp.e ** (-gi * (t - s)) - mp.e ** (gi * s)), [-mp.inf, 0])
                pos = mp.quad(lambda s: (t - s) ** (a - 1) * mp.e ** (-gi * (t - s)), [0, t])
                return neg + pos
        b.append(mp.quad(inner, [0, T]) / mp.gamma(a))
    if kind == 2:
        c = mp.quad(lambda t: t ** (2 * H) / (2 * H * mp.gamma(a) ** 2), [0, T])
    else:
        vh = 1 / (mp.gamma(2 * H + 1) * mp.sin(mp.pi * H))
        c = mp.quad(lambda t: vh * t ** (2 * H), [0, T])
    to = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    return to([[float(x) for x in r] for r in A]), to([float(x) for x in b]), float(c)


@pytest.mark.parametrize("kind,H,T,K", [(2, 0.3, 1.0, 3), (2, 0.8, 2.0, 3), (1, 0.7, 1.5, 1)])
def test_abc_and_omega_against_quadrature(kind, H, T, K):
    g = m.gamma_grid(K, 10.0)
    A, b, c = m.abc(H, g, T, kind)
    Aq, bq, cq = _quad_abc(H, g.tolist(), T, kind)
    assert torch.allclose(A, Aq, rtol=1e-10, atol=1e-12)
    assert torch.allclose(b, bq, rtol=1e-9, atol=1e-12)
    assert math.isclose(float(c), cq, rel_tol=1e-10)
    w, eps = m.omega(H, g, T, kind)
    wq = torch.linalg.solve(Aq, bq)
    assert torch.allclose(w, wq, rtol=1e-7, atol=1e-9)
    assert math.isclose(float(eps), 1 - float(bq @ wq) / cq, abs_tol=1e-9)


@pytest.mark.parametrize("a,z", [(0.8, 0.3), (1.2, 1.9), (1.7, 4.0), (2.2, 20.0), (0.6, 60.0)])
def test_incomplete_gamma_values(a, z):
    mp.mp.dps = 30
    P = float(mp.gammainc(a, 0, z, regularized=True))
    sQ = float(mp.e ** z * mp.gammainc(a, z, mp.inf, regularized=True))
    at, zt = torch.tensor(a, dtype=torch.float64), torch.tensor(z, dtype=torch.float64)
    assert math.isclose(float(m.gammainc_p(at, zt)), P, rel_tol=1e-12)
    assert math.isclose(float(m.gammaincc_scaled(at, zt)), sQ, rel_tol=1e-11)


def test_scaled_upper_gamma_does_not_overflow():
    # e^z Q(a, z) ~ z^(a-1) / Gamma(a) for large z; exp(800) alone overflows float64
    v = m.gammaincc_scaled(torch.tensor(1.3, dtype=torch.float64),
                           torch.tensor(800.0, dtype=torch.float64))
    mp.mp.dps = 30
    ref = float(mp.e ** 800 * mp.gammainc(1.3, 800, mp.inf, regularized=True))
    assert math.isclose(float(v), ref, rel_tol=1e-11)


def test_incomplete_gamma_gradients_against_finite_differences():
    a = torch.tensor([0.7, 1.2, 1.6, 2.1, 0.9], dtype=torch.float64, requires_grad=True)
    z = torch.tensor([0.2, 1.5, 3.0, 14.0, 45.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m.gammainc_p, (a, z), eps=1e-6, atol=1e-8, rtol=1e-6)
    assert torch.autograd.gradcheck(m.gammaincc_scaled, (a, z), eps=1e-6, atol=1e-8,
                                    rtol=1e-6)


def test_dP_da_against_mpmath_derivative():
    mp.mp.dps = 30
    for a, z in [(0.9, 0.5), (1.4, 6.0), (2.0, 25.0)]:
        at = torch.tensor(a, dtype=torch.float64, requires_grad=True)
        p = m.gammainc_p(at, torch.tensor(z, dtype=torch.float64))
        (g,) = torch.autograd.grad(p, at)
        ref = float(mp.diff(lambda s, z=z: mp.gammainc(s, 0, z, regularized=True), a))
        assert math.isclose(float(g), ref, rel_tol=1e-8, abs_tol=1e-14)


@pytest.mark.parametrize("kind", [1, 2])
def test_domega_dH_against_finite_differences(kind):
    g = m.gamma_grid(5)
    for H0 in (0.3, 0.75):
        H = torch.tensor(H0, dtype=torch.float64, requires_grad=True)
        w, eps = m.omega(H, g, 1.0, kind)
        J = torch.stack([torch.autograd.grad(w[k], H, retain_graph=True)[0] for k in range(5)])
        (de,) = torch.autograd.grad(eps, H)
        h = 1e-5
        wp, ep = m.omega(H0 + h, g, 1.0, kind)
        wm, em = m.omega(H0 - h, g, 1.0, kind)
        fd = (wp - wm) / (2 * h)
        assert torch.allclose(J, fd, rtol=1e-5, atol=1e-6 * float(fd.abs().max()))
        assert math.isclose(float(de), float((ep - em) / (2 * h)), rel_tol=1e-4, abs_tol=1e-8)


def test_type_II_fbm_covariance_formula_against_quadrature():
    mp.mp.dps = 15
    H = 0.3
    t = torch.tensor([0.4, 1.0], dtype=torch.float64)
    C = m.fbm_cov(t, H, kind=2)
    a = H - 0.5
    ref = mp.quad(lambda u: (1.0 - u) ** a * (0.4 - u) ** a, [0, 0.4]) / mp.gamma(H + 0.5) ** 2
    assert math.isclose(float(C[0, 1]), float(ref), rel_tol=1e-8)
    assert math.isclose(float(C[1, 1]), 1 / (2 * H * math.gamma(H + 0.5) ** 2), rel_tol=1e-12)


def test_type_II_fbm_covariance_with_repeated_times_is_the_variance():
    # equal time points off the diagonal: Cov(B(t), B(t)) = Var B(t), not 0/0
    t = torch.tensor([0.2, 0.5, 0.5, 1.0], dtype=torch.float64)
    C = m.fbm_cov(t, 0.3, kind=2)
    assert torch.isfinite(C).all()
    assert math.isclose(float(C[1, 2]), float(C[1, 1]), rel_tol=1e-12)
    ref = m.fbm_cov(t[[0, 1, 3]], 0.3, kind=2)
    assert torch.allclose(C[[0, 2, 3]][:, [0, 2, 3]], ref, rtol=1e-12)


@pytest.mark.parametrize("kind,H", [(2, 0.3), (2, 0.7), (1, 0.3)])
def test_mafbm_covariance_approaches_exact_fbm_as_K_grows(kind, H):
    t = torch.linspace(0.05, 1.0, 20, dtype=torch.float64)
    exact = m.fbm_cov(t, H, kind)
    errs = []
    for K in (2, 4, 8, 16):
        g = m.gamma_grid(K, 1e3 if K > 8 else 20.0, 1e-3 if K > 8 else None)
        w, _ = m.omega(H, g, 1.0, kind)
        errs.append(float((m.mafbm_cov(t, w, g, kind) - exact).norm() / exact.norm()))
    assert all(e2 < e1 for e1, e2 in zip(errs, errs[1:], strict=False)), errs
    assert errs[-1] < 0.02, errs


def test_hurst_one_half_type_II_is_brownian_motion():
    t = torch.linspace(0.05, 1.0, 20, dtype=torch.float64)
    w, eps = m.omega(0.5, G5, 1.0, kind=2)
    assert abs(float(eps)) < 1e-10
    C = m.mafbm_cov(t, w, G5, kind=2)
    assert torch.allclose(C, torch.minimum(t[:, None], t[None, :]), atol=1e-5)
    assert torch.allclose(m.fbm_cov(t, 0.5, 1), torch.minimum(t[:, None], t[None, :]))


def test_mafbm_sampler_variance_within_monte_carlo_error():
    torch.manual_seed(0)
    n = 20000
    t = torch.linspace(0.02, 1.0, 50, dtype=torch.float64)
    for kind, H in ((2, 0.7), (1, 0.3)):
        x = m.sample_mafbm(t, H, n, K=5, kind=kind)
        g = m.gamma_grid(5)
        w, _ = m.omega(H, g, 1.0, kind)
        v = float(m.mafbm_cov(t[-1:], w, g, kind))
        sd = v * math.sqrt(2 / n)
        assert abs(float(x[:, -1].var()) - v) < 4 * sd
    # type II, H = .7: eps = 1e-4, so the closed-form fBM variance is hit as well
    x = m.sample_mafbm(t, 0.7, n, K=5, kind=2)
    v_exact = 1 / (2 * 0.7 * math.gamma(1.2) ** 2)
    assert abs(float(x[:, -1].var()) - v_exact) < 4 * v_exact * math.sqrt(2 / n) + 0.01


def test_cholesky_fbm_sampler_covariance():
    torch.manual_seed(1)
    n = 20000
    t = torch.tensor([0.25, 0.5, 1.0], dtype=torch.float64)
    for kind in (1, 2):
        x = m.sample_fbm_cholesky(t, 0.7, n, kind)
        C = torch.cov(x.T)
        ref = m.fbm_cov(t, 0.7, kind)
        sd = (ref.diag()[:, None] * ref.diag()[None, :] + ref ** 2).sqrt() / math.sqrt(n)
        assert bool(((C - ref).abs() < 4 * sd).all())


# ---- exact and MA-fBM sampling ----------------------------------------------------
@pytest.mark.parametrize("H", [0.2, 0.5, 0.7, 0.9])
def test_davies_harte_implied_covariance_is_exact(H):
    # the sampler is linear in its Gaussian noise, so pushing every basis vector through
    # it gives its exact covariance: it must equal the type I fBM covariance
    n = 12
    sq = m._dh_sqrt_eigenvalues(n, H, 1.0 / n, torch.float64, None)
    eye = torch.eye(2 * n, dtype=torch.float64)
    z = torch.cat([torch.complex(eye, 0 * eye), torch.complex(0 * eye, eye)])   # [4n, 2n]
    x = m._dh_paths(sq, z, n)                                # rows: real parts, imag parts
    re, im = x[:4 * n], x[4 * n:]
    ref = m.fbm_cov(torch.arange(1, n + 1, dtype=torch.float64) / n, H, kind=1)
    assert torch.allclose(re.T @ re, ref, rtol=1e-10, atol=1e-12)
    assert torch.allclose(im.T @ im, ref, rtol=1e-10, atol=1e-12)
    assert float((re.T @ im).abs().max()) < 1e-12          # the two draws are independent


def test_davies_harte_against_exact_covariance_and_cholesky():
    g = torch.Generator().manual_seed(3)
    n, N, H = 64, 20000, 0.7
    t = torch.arange(1, n + 1, dtype=torch.float64) / n
    dh = m.sample_fbm_davies_harte(n, H, N, generator=g)
    ch = m.sample_fbm_cholesky(t, H, N, kind=1, generator=g)
    assert dh.shape == (N, n)
    ref = m.fbm_cov(t, H, kind=1)
    idx = torch.tensor([0, 15, 40, 63])
    sd = ((ref.diag()[:, None] * ref.diag()[None, :] + ref ** 2) / N).sqrt()
    for x in (dh, ch):
        C = torch.cov(x[:, idx].T)
        assert bool(((C - ref[idx][:, idx]).abs() < 4 * sd[idx][:, idx]).all())
    # lag-1 correlation of two increments: 2^(2H-1) - 1 for both samplers; the product of
    # two unit normals with correlation rho has variance 1 + rho^2
    rho = 2 ** (2 * H - 1) - 1
    v = float(m.v_h(H)) * (1 / n) ** (2 * H)
    se = math.sqrt((1 + rho ** 2) / N)
    est = [float((x[:, 31] - x[:, 30]).mul(x[:, 32] - x[:, 31]).mean()) / v for x in (dh, ch)]
    assert abs(est[0] - rho) < 4 * se and abs(est[1] - rho) < 4 * se
    assert abs(est[0] - est[1]) < 4 * se * math.sqrt(2)


def test_ou_scan_matches_the_step_by_step_recursion():
    g = m.gamma_grid(4, 50.0)
    torch.manual_seed(0)
    t = torch.cat([torch.tensor([0.05]), 0.05 + torch.rand(300).cumsum(0) / 100,
                   torch.tensor([4.0, 4.01, 4.3])]).double()   # one step longer than a block
    xi = torch.randn(3, len(t), 4, dtype=torch.float64)
    y0 = torch.randn(3, 4, dtype=torch.float64)
    got = m._ou_scan(xi, y0, t, 0.0, g)
    y, prev, ref = y0, 0.0, []
    for k in range(len(t)):
        y = torch.exp(-g * (float(t[k]) - prev)) * y + xi[:, k]
        prev = float(t[k])
        ref.append(y)
    assert torch.allclose(got, torch.stack(ref, 1), rtol=1e-10, atol=1e-12)
    # float32 uses shorter blocks, so it stays within its own round-off
    got32 = m._ou_scan(xi.float(), y0.float(), t, 0.0, g)
    assert got32.dtype == torch.float32
    assert torch.allclose(got32.double(), got, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind,H", [(2, 0.7), (1, 0.3)])
def test_mafbm_sampler_covariance_on_an_uneven_grid(kind, H):
    torch.manual_seed(2)
    N = 20000
    t = torch.tensor([0.0, 0.01, 0.07, 0.3, 0.31, 0.8, 1.0], dtype=torch.float64)
    x = m.sample_mafbm(t, H, N, K=5, kind=kind)
    g = m.gamma_grid(5)
    w, _ = m.omega(H, g, 1.0, kind)
    ref = m.mafbm_cov(t, w, g, kind)
    assert torch.allclose(m.mafbm_var(t, w, g, kind), ref.diag(), rtol=1e-12, atol=1e-15)
    assert float(x[:, 0].abs().max()) == 0.0                    # B_hat(0) = 0
    C = torch.cov(x[:, 1:].T)
    r = ref[1:, 1:]
    sd = ((r.diag()[:, None] * r.diag()[None, :] + r ** 2) / N).sqrt()
    assert bool(((C - r).abs() < 4 * sd).all())


def test_fbm_var_is_the_covariance_diagonal():
    t = torch.tensor([0.1, 0.5, 1.0, 2.0], dtype=torch.float64)
    for kind in (1, 2):
        assert torch.allclose(m.fbm_var(t, 0.3, kind), m.fbm_cov(t, 0.3, kind).diag(),
                              rtol=1e-12)
