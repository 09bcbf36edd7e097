"""The issue 5 benchmark helpers against independent dense computations: the Kalman
likelihood of benchmarks/fsde_hurst.py, the Euler-prior moments of benchmarks/fbm_bridge.py
and the K choice / rows of benchmarks/fbm_sampling.py (METHODS.md s2)."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ppl.runtime import fractional_sde as fs
from ppl.runtime import mafbm


def _dense_euler(tt, w, g, theta, mu, sigma, kind, dt):
    """X at the output times as an affine map of (x0, Y(0), the Euler increments): the
    same recursion written out, so mean and covariance come without any filtering."""
    K = len(g)
    D = K + 1
    M = torch.zeros(D, D, dtype=torch.float64)
    M[0, 0] = -theta
    M[0, 1:] = -sigma * w * g
    M[1:, 1:] = -torch.diag(g)
    c = torch.zeros(D, dtype=torch.float64)
    c[0] = theta * mu
    G = torch.cat([torch.tensor([sigma * float(w.sum())], dtype=torch.float64),
                   torch.ones(K, dtype=torch.float64)])
    # the solver's step points
    pts, cur = [float(tt[0])], float(tt[0])
    for t in tt[1:].tolist():
        while cur < t - 1e-12:
            cur = min(cur + dt, t)
            pts.append(cur)
    n_noise = len(pts) - 1
    # Z = m + B @ [x0, Y0 (K), dW_1..dW_n]
    B = torch.zeros(D, D + n_noise, dtype=torch.float64)
    B[:, :D] = torch.eye(D, dtype=torch.float64)
    m = torch.zeros(D, dtype=torch.float64)
    rows_m, rows_B = [], []
    out = set(round(t, 9) for t in tt.tolist())
    if round(pts[0], 9) in out:
        rows_m.append(m[0].clone())
        rows_B.append(B[0].clone())
    for j in range(n_noise):
        h = pts[j + 1] - pts[j]
        A = torch.eye(D, dtype=torch.float64) + h * M
        m = A @ m + h * c
        B = A @ B
        B[:, D + j] += G * math.sqrt(h)
        if round(pts[j + 1], 9) in out:
            rows_m.append(m[0].clone())
            rows_B.append(B[0].clone())
    var0 = torch.zeros(D + n_noise, dtype=torch.float64)
    var0[0] = 1.0
    var0[D:] = 1.0
    S0 = torch.diag(var0)
    if kind == 1:
        S0[1:D, 1:D] = 1.0 / (g[:, None] + g[None, :])
    Bx = torch.stack(rows_B)
    return torch.stack(rows_m), Bx @ S0 @ Bx.T


@pytest.mark.parametrize("kind,H,gmax", [(2, 0.3, 20.0), (2, 0.8, 20.0), (1, 0.6, 20.0),
                                         (2, 0.3, 80.0), (1, 0.7, 80.0)])
def test_kalman_loglik_equals_the_dense_gaussian_density(kind, H, gmax, bench):
    """With gamma_max = 80 the Euler step is a quarter of the smallest gap, so several
    steps (composed once per distinct sequence of step lengths) lie between observations."""
    fh = bench("fsde_hurst")
    torch.manual_seed(0)
    tt = torch.tensor([0.0, 0.013, 0.05, 0.2, 0.21, 0.5, 1.0], dtype=torch.float64)
    yt = torch.randn(len(tt), dtype=torch.float64)
    g = mafbm.gamma_grid(3, gmax)
    w, _ = mafbm.omega(H, g, 1.0, kind)
    theta, mu, sigma, obs = 1.7, 0.3, 0.8, 0.05
    f64 = dict(dtype=torch.float64)
    dt = fh.grid_dt(tt, gmax)
    assert dt == pytest.approx(0.01 if gmax == 20.0 else 0.0025)
    ll = fh.kalman_loglik(tt, yt, w[None], g, torch.tensor([theta], **f64),
                          torch.tensor([mu], **f64), torch.tensor([sigma], **f64),
                          kind, obs, gmax)
    mean, cov = _dense_euler(tt, w, g, theta, mu, sigma, kind, dt)
    ref = torch.distributions.MultivariateNormal(
        mean, cov + obs ** 2 * torch.eye(len(tt), dtype=torch.float64)).log_prob(yt)
    assert math.isclose(float(ll[0]), float(ref), rel_tol=1e-9, abs_tol=1e-9)


def test_kalman_loglik_of_several_series_is_the_sum_of_single_filters(bench):
    """yt [N, S]: S series share the filter's covariances; the result is the sum of S
    separate filters, for every parameter setting of the batch."""
    fh = bench("fsde_hurst")
    torch.manual_seed(1)
    tt = torch.linspace(0.0, 1.0, 9, dtype=torch.float64)
    ys = torch.randn(9, 3, dtype=torch.float64)
    g = mafbm.gamma_grid(3, 40.0)
    w = torch.stack([mafbm.omega(H, g, 1.0, 2)[0] for H in (0.3, 0.8)])
    par = [torch.tensor(v, dtype=torch.float64) for v in ([1.2, 0.4], [0.1, -0.3], [0.9, 1.4])]
    both = fh.kalman_loglik(tt, ys, w, g, *par, 2, 0.05, 40.0)
    each = sum(fh.kalman_loglik(tt, ys[:, j], w, g, *par, 2, 0.05, 40.0) for j in range(3))
    assert both.shape == (2,)
    assert torch.allclose(both, each, rtol=1e-12, atol=1e-10)
    assert not torch.allclose(both, 3 * fh.kalman_loglik(tt, ys[:, 0], w, g, *par, 2, 0.05,
                                                         40.0))


def test_mle_profile_is_the_maximum_over_the_other_parameters(bench):
    """mle_hurst's profile log-likelihood at each H is the maximum of the Kalman
    likelihood over (theta, mu, sigma): Nelder-Mead from two starts away from the
    profile's own (zero), run separately for each H, does not beat it (by more than
    1e-3 nats); and the profile is that
    likelihood at some parameters, so it cannot exceed the best found by more either.
    (Three starts to xatol 1e-6 / fatol 1e-8 all ended within 1e-6 nats of the profile;
    fatol 1e-6 is still a thousandth of the 1e-3 bound.)"""
    from scipy.optimize import minimize

    fh = bench("fsde_hurst")
    t, y = fh.make_fou(0.7, 24, seed=5, noise=0.05)
    grid = [0.3, 0.6, 0.85]
    prof = []
    fh.mle_hurst(t, y, K=3, grid=grid, profile=prof)
    tt = torch.tensor((t - t[0]) / (t[-1] - t[0]), dtype=torch.float64)
    yt = torch.tensor((y - y.mean()) / y.std(), dtype=torch.float64)
    g = mafbm.gamma_grid(3, 20.0)
    for H, p in zip(grid, prof, strict=True):
        w = mafbm.omega(H, g, 1.0, 2)[0][None]

        def nll(v, w=w):
            th, mu, sg = (torch.tensor([float(x)], dtype=torch.float64) for x in v)
            sp = torch.nn.functional.softplus
            return -float(fh.kalman_loglik(tt, yt, w, g, sp(th + 1.0), mu, sp(sg + 0.5))[0])
        best = min(minimize(nll, x0, method="Nelder-Mead",
                            options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 4000}).fun
                   for x0 in ([2.0, 0.5, -1.0], [-1.0, -0.5, 1.0]))
        assert p >= -best - 1e-3 and p <= -best + 1e-3, (H, p, -best)


def test_bridge_euler_moments_against_the_dense_recursion(bench):
    fb = bench("fbm_bridge")
    t = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
    g = mafbm.gamma_grid(4, 20.0)
    w, _ = mafbm.omega(0.7, g, 1.0, 2)
    var, cross = fb.euler_moments(t, w, g, 0.02)
    # X_n = sum_j w'diag(1 - g dt)^(n-1-j) 1 dW_j with Var dW = dt
    a = 1 - g * 0.02
    N = 50
    coef = torch.zeros(N + 1, N, dtype=torch.float64)
    for n in range(1, N + 1):
        for j in range(n):
            coef[n, j] = (w * a ** (n - 1 - j)).sum()
    C = 0.02 * coef @ coef.T
    idx = torch.arange(0, N + 1, 5)
    assert torch.allclose(var, C.diag()[idx], rtol=1e-10, atol=1e-14)
    assert torch.allclose(cross, C[idx, N], rtol=1e-10, atol=1e-14)
    # and the Gaussian conditioning formula on a 2-point toy: Var(X | X + e) = v s2 / (v + s2)
    m, v = fb.conditional(torch.tensor([2.0]).double(), torch.tensor([2.0]).double(), 1.0, 1.0)
    assert math.isclose(float(v), 2.0 / 3.0) and math.isclose(float(m), 2.0 / 3.0)


def test_fbm_sampling_picks_K_and_reports_rows(bench, tmp_path):
    fsm = bench("fbm_sampling")
    K, eps = fsm.smallest_K(0.7, 1e-2)
    assert K == 3 and eps <= 1e-2
    assert float(mafbm.omega(0.7, mafbm.gamma_grid(K - 1), 1.0, 2)[1]) > 1e-2
    torch.manual_seed(0)
    rows = fsm.main(["--T", "50,100", "--paths", "400", "--repeats", "1",
                     "--json", str(tmp_path / "r.json")])
    for name in ("mafbm", "davies_harte", "cholesky"):
        for T in (50, 100):
            r = rows[f"{name}/T={T}"]
            assert r["var1_rel_err"] < 4 * r["var1_mc_se"] + r["var_bias_max"]
        assert np.isfinite(rows[f"slope/{name}"]["total_s"])
    assert (tmp_path / "r.json").exists()


def test_h_gradients_same_posterior_and_exact_derivative(bench):
    """fsde_hurst.h_gradients: at H0 the drift-form network sigma wbar(H0) u is the same
    posterior as the noise form (equal ELBO on the same draws); with a zero control both
    forms are the prior and their H-gradients coincide; the exact d log p/dH equals a
    central finite difference of the Kalman likelihood."""
    fh = bench("fsde_hurst")
    t, y1 = fh.make_fou(0.7, 12, seed=3, noise=0.01)
    _, y2 = fh.make_fou(0.7, 12, seed=4, noise=0.01)
    y = fh.standardise(np.stack([y1, y2]))
    tt = torch.tensor(t, dtype=torch.float32)
    yt = torch.tensor(y.T, dtype=torch.float32)
    K, gmax, dt, H0, th, mu, sg = 3, 20.0, 1 / 11 / 8, 0.62, 1.5, 0.1, 0.8
    torch.manual_seed(0)
    ctrl = fs.Control(1, K, (8,), n_freq=2, data=True)
    ctrl.set_data(tt, yt[:, :, None].repeat_interleave(2, 1))
    q0 = (yt[0], torch.full((2,), 0.05))
    args = (tt, yt, ctrl, H0, th, mu, sg, *q0, K, 2, gmax, dt, 0.05, 8)
    zero = fh.h_gradients(*args, seed=1)
    assert zero["grad_noise"] == pytest.approx(zero["grad_drift"], rel=1e-5)
    with torch.no_grad():
        ctrl.net[-1].weight.normal_(0, 1.0)
    r = fh.h_gradients(*args, seed=1)
    assert r["elbo_noise"] == pytest.approx(r["elbo_drift"], rel=1e-5)
    assert abs(r["grad_noise"] - r["grad_drift"]) > 1e-3 * abs(r["grad_noise"])
    assert ctrl._obs_y.shape[1] == 4                 # the control's own data restored
    g = mafbm.gamma_grid(K, gmax)
    t64, y64 = tt.double(), yt.double()

    def ll(H):
        w = mafbm.omega(H, g, 1.0, 2)[0][None]
        one = [torch.tensor([v], dtype=torch.float64) for v in (th, mu, sg)]
        return float(sum(fh.kalman_loglik(t64, y64[:, j], w, g, *one, 2, 0.05, gmax, dt)
                         for j in range(2)))
    fd = (ll(H0 + 1e-5) - ll(H0 - 1e-5)) / 2e-5
    assert r["grad_exact"] == pytest.approx(fd, rel=1e-5)
    assert r["loglik"] == pytest.approx(ll(H0), rel=1e-10)


def test_plateau_criterion(bench):
    fh = bench("fsde_hurst")
    rising = [-1000.0 * 0.9 ** k for k in range(20)]       # ~10% per step: no plateau
    assert not fh.plateaued(rising, 5, 0.005)
    flat = [-1000.0 + (1.0 if k % 2 else -1.0) for k in range(20)]
    assert fh.plateaued(flat, 5, 0.005)
    assert not fh.plateaued(flat[:9], 5, 0.005)            # fewer than two windows
    slow = [-1000.0 + 0.5 * k for k in range(10)]          # +2.5 nats per window of 5
    assert fh.plateaued(slow, 5, 0.005) and not fh.plateaued(slow, 5, 0.001)


def test_alternating_schedule_moves_h_only_after_refits(bench):
    """--alternate: H is constant during refits and changes exactly at the H step that
    follows each refit round; the first refit ends by the plateau test or the warm-up
    cap, later ones by the plateau test or refit_max."""
    fh = bench("fsde_hurst")
    t, y1 = fh.make_fou(0.4, 12, seed=3, noise=0.01)
    _, y2 = fh.make_fou(0.4, 12, seed=4, noise=0.01)
    hist, rounds = [], []
    fh.fit_hurst(t, np.stack([y1, y2]), 40, 2, seed=0, K=3, hidden=(8,), lr=1e-2,
                 warmup=0.25, alternate=True, refit_window=3, refit_max=9, h_lr=0.2,
                 history=hist, rounds=rounds)
    assert len(rounds) >= 3
    starts = [r[0] for r in rounds]                          # steps that are H steps
    assert 6 <= rounds[0][2] <= 10                           # two windows .. the cap
    assert all(6 <= r[2] <= 9 for r in rounds[1:])          # two windows .. refit_max
    h = [0.5] + hist
    changed = [k for k in range(len(hist)) if h[k + 1] != h[k]]
    assert changed == starts
    assert all(abs(h[k + 1] - h[k]) > 1e-4 for k in changed)


def test_h_gradients_probe_a_drift_form_control_as_trained(bench):
    """With control_form="drift" the probe's network outputs Delta (as a drift-form fit
    trained it): its ELBO is that of the drift-form posterior, computed here directly on
    the same draws, and differs from reading the same network as u."""
    fh = bench("fsde_hurst")
    t, y1 = fh.make_fou(0.7, 12, seed=3, noise=0.01)
    tt = torch.tensor(t, dtype=torch.float32)
    yt = torch.tensor(fh.standardise(y1[None]).T, dtype=torch.float32)
    K, gmax, dt, H0, th, mu, sg, paths = 3, 20.0, 1 / 11 / 8, 0.3, 1.5, 0.1, 1.7, 8
    torch.manual_seed(0)
    ctrl = fs.Control(1, K, (8,), n_freq=2, data=True)
    with torch.no_grad():
        ctrl.net[-1].weight.normal_(0, 1.0)
    ctrl.set_data(tt, yt[:, :, None].repeat_interleave(paths, 1))
    q0 = (yt[0], torch.full((1,), 0.05))
    args = (tt, yt, ctrl, H0, th, mu, sg, *q0, K, 2, gmax, dt, 0.05, paths)
    r = fh.h_gradients(*args, seed=2, control_form="drift")
    torch.manual_seed(2)
    x0 = torch.distributions.Normal(*q0).sample((paths,)).T.reshape(-1, 1)
    with torch.no_grad():
        xs, kl, _ = fs.simulate(tt, x0, lambda x, s: -th * (x - mu), sg, H0, K=K,
                                control=ctrl, gamma_max=gmax, dt=dt, control_form="drift")
    ll = torch.distributions.Normal(xs[:, :, 0], 0.05).log_prob(yt.expand(-1, paths)).sum(0)
    assert r["elbo_drift"] == pytest.approx(float((ll - kl).mean()), rel=1e-5)
    assert r["elbo_noise"] == pytest.approx(r["elbo_drift"], rel=1e-5)
    as_u = fh.h_gradients(*args, seed=2, control_form="noise")
    assert abs(as_u["elbo_noise"] - r["elbo_noise"]) > 1e-2 * abs(r["elbo_noise"])


def test_affine_fit_maximises_the_exact_likelihood(bench):
    """--control affine: the closed-form ELBO at the fitted (H, theta, mu, sigma) is the
    Kalman log-likelihood there, and it is not below the exact profile's best grid point
    (the fit maximises the same function over continuous H)."""
    fh = bench("fsde_hurst")
    ys = np.stack([fh.make_fou(0.7, 20, seed=s, noise=0.1)[1] for s in (5, 6)])
    t = np.linspace(0, 1, 20)
    info = {}
    H = fh.fit_hurst_affine(t, ys, K=5, obs_sd=0.1, gamma_max=20.0, info=info)
    tt = torch.tensor(t, dtype=torch.float64)
    g = mafbm.gamma_grid(5, 20.0)
    w = mafbm.omega(torch.tensor(H, dtype=torch.float64), g, 1.0, 2)[0][None]
    one = {k: torch.tensor([info[k]], dtype=torch.float64) for k in ("theta", "mu", "sigma")}
    ll = fh.kalman_loglik(tt, torch.tensor(fh.standardise(ys).T), w, g, one["theta"],
                          one["mu"], one["sigma"], 2, 0.1, 20.0)
    assert abs(float(ll) - info["elbo"]) < 1e-6
    prof: list = []
    fh.mle_hurst(t, ys, K=5, obs_sd=0.1, gamma_max=20.0, profile=prof)
    assert info["elbo"] > max(prof) - 1e-3
    # the Monte Carlo ELBO's Adam steps climb the same (flat: 0.4 nats over H in
    # [0.45, 0.54] here) surface: from the start's ELBO to within 1.5 nats of the optimum
    start, mc = {}, {}
    fh.fit_hurst_affine(t, ys, K=5, obs_sd=0.1, gamma_max=20.0, elbo="mc", steps=0, info=start)
    fh.fit_hurst_affine(t, ys, K=5, obs_sd=0.1, gamma_max=20.0, elbo="mc", steps=100,
                        paths=8, lr=0.05, info=mc)
    assert start["elbo"] < info["elbo"] - 10.0
    assert info["elbo"] - 1.5 < mc["elbo"] < info["elbo"] + 1e-6


def test_bridge_affine_optimum_has_the_exact_euler_conditional_variance(bench):
    """fbm_bridge --control affine --elbo closed: on a tiny bridge the closed-form optimum's
    exactly propagated path variance is the Euler prior's Gaussian conditional variance to
    float64 round-off and its ELBO is log p(y); the variance of 20 000 sampled posterior
    paths is within Monte Carlo error of it (4 relative standard errors, max over the
    grid). The prior (a zero control, 0 steps) is far from it on the same rows."""
    fb = bench("fbm_bridge")
    base = ["--n", "10", "--K", "3", "--control", "affine", "--eval-paths", "20000",
            "--png", "", "--log-every", "0"]          # main seeds torch (--seed 0)
    rows = fb.main(base + ["--elbo", "closed"])
    exact = rows["moments_vs_euler"]
    assert exact["max_rel_err"] < 1e-10 and exact["mean_abs_err"] < 1e-12
    assert abs(exact["elbo_gap"]) < 1e-9
    mc = rows["vi_vs_euler"]
    assert mc["max_rel_err"] < 4 * mc["mc_se"]
    # posterior sd <= 0.6 at every t here, so the mean's standard error is <= 0.6 / sqrt(n)
    assert mc["mean_abs_err"] < 4 * 0.6 / math.sqrt(20000)
    prior = fb.main(base + ["--elbo", "mc", "--steps", "0"])
    assert prior["moments_vs_euler"]["max_rel_err"] > 1.0
    assert prior["moments_vs_euler"]["elbo_gap"] > 1.0
    assert prior["vi_vs_euler"]["max_rel_err"] > 10 * prior["vi_vs_euler"]["mc_se"]


@pytest.mark.parametrize("series, groups, want", [(1, 4, []), (2, 4, [1, 1]),
                                                   (5, 2, [3, 2])])
def test_affine_row_groups_never_empty(series, groups, want, bench, monkeypatch):
    """--control affine's h_sd: G = min(--groups, series) groups, none empty (an empty one
    was fitted as H = 0.5 and biased the spread), NaN when G < 2; an empty fit raises."""
    fh = bench("fsde_hurst")
    t = np.linspace(0, 1, 12)
    ys = np.stack([fh.make_fou(0.6, 12, seed=s, noise=0.1)[1] for s in range(series)])
    with pytest.raises(ValueError, match="no series"):
        fh.fit_hurst_affine(t, ys[:0])
    sizes = []

    def fit(t, y, info=None, **kw):   # H = the group's first value: a spread with no fit
        sizes.append(len(y))
        if info is not None:
            info.update(elbo=0.0, gap=0.0)
        return float(y[0, 0])
    monkeypatch.setattr(fh, "fit_hurst_affine", fit)
    args = SimpleNamespace(K=3, obs_sd=0.1, gamma_max=20.0, dt_div=1, elbo="moments",
                           steps=0, paths=1, lr_h=0.05, device="cpu", log_every=0,
                           no_noise_scale=False, groups=groups, mle=False, route="direct")
    row = fh.run_affine_row(t, ys, 0.6, args)
    assert sizes == [series] + want
    if len(want) < 2:
        assert math.isnan(row["h_sd"])
    else:
        firsts = ys[np.cumsum([0] + want[:-1]), 0]
        assert row["h_sd"] == pytest.approx(np.std(firsts, ddof=1) / math.sqrt(len(want)))
