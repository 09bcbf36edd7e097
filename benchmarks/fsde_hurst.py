"""Recovery of the Hurst index by path-space VI of a fractional SDE (issue 5; METHODS.md s2).

    python benchmarks/fsde_hurst.py --synthetic [--n 100] [--steps 300] [--mle] [--json OUT]
    python benchmarks/fsde_hurst.py --series CSV --column NAME [--steps N] [--json OUT]

``--synthetic`` simulates fractional Ornstein-Uhlenbeck paths dX = -theta X dt + sigma dB^H
(exact type II fBM by Cholesky on a 4x finer grid, Euler for the OU part) for
H in {0.3, 0.5, 0.7, 0.85}, then fits the model

    x0 ~ N(0, 1);  dX = -theta (X - mu) dt + sigma dB_hat^H (MA-fBM, type II, ``--K``);
    y_i ~ N(X(t_i), obs_sd)

by maximising the ELBO of METHODS.md section 2 (data log-likelihood - KL(q(x0)||p(x0)) -
E 1/2 int |u|^2 dt) jointly over the control network, theta, mu, sigma and H (sigmoid, start
0.5, held there for the first ``--warmup`` fraction of the steps), with ``--paths``
posterior paths per step (ppl.runtime.fractional_sde.simulate, the same SDE the
``fractional_sde`` construct solves; the control network sees the data features of
``fractional_sde(..., data=y)``, and obs_sd = 0.05 in standardised units). The series is
standardised and time rescaled to [0, 1]. Adam has three learning rates: ``--lr`` for the
control network, ``--lr * --out-gain`` for its zero-started last layer (the control must
reach gains of order 1 / (sigma wbar dt) to track the data), and ``--lr-h`` for the
model's scalars (H's logit, theta, mu, sigma). ``h_sd`` is the spread of the learned H over
``--seeds`` independent fits (H is a point estimate in this method, so this is an
optimisation spread, not a posterior sd). Beside it: R/S, DFA-1 and local Whittle
estimates from the increments, and with ``--mle`` the profile maximum-likelihood H of the
same MA-fBM model computed exactly by a Kalman filter (``mle_h``, with a Laplace sd
``mle_sd``): the value an optimal control would give, i.e. what the data can tell.
JSON rows ``h=0.30``... or ``series``; columns true_h, learned_h, h_sd, rs_h, dfa_h, whittle_h
(and mle_h, mle_sd).

A protocol in which the data determine H (the exact-likelihood H within ~0.03 of the
truth for 0.3, 0.5, 0.7; benchmarks/RESULTS.md, issue 5) needs more points and an MA-fBM
resolved below the sampling gap, and observation noise that the model's obs_sd matches:

    python benchmarks/fsde_hurst.py --synthetic --n 400 --noise 0.01 --obs-sd 0.01 \
        --gamma-max 320 --K 7 --mle

(the Euler step is then a quarter of the gap: 1600 steps per path). Cheaper, with an
exact-likelihood H of 0.309 / 0.527 / 0.664 / 0.925: four 100-point series per H sharing
(H, theta, mu, sigma), batched as paths (693 Euler steps per path):

    python benchmarks/fsde_hurst.py --synthetic --n 100 --series-per-h 4 --paths 4 \
        --gamma-max 160 --K 7 --noise 0.01 --obs-sd 0.01 --control drift

``--control affine`` (the protocol on which every target is met: sixteen 100-point series
per H; benchmarks/RESULTS.md, issue 5) replaces the network by the per-step affine control
with a noise scale, which holds this linear model's exact posterior; its optimum is
computed in closed form at every evaluation and (H, theta, mu, sigma) are fitted on the
closed-form ELBO by L-BFGS (``--elbo moments``) or on the Monte Carlo ELBO by Adam
(``--elbo mc``; :func:`fit_hurst_affine`):

    python benchmarks/fsde_hurst.py --synthetic --control affine --n 100 --series-per-h 16 \
        --gamma-max 160 --K 7 --noise 0.01 --obs-sd 0.01 --groups 4 --mle

``--route language`` fits the same model through the language instead: a ``.bdl`` model
(:data:`LANGUAGE_MODEL_LOCAL`, or :data:`LANGUAGE_MODEL` with ``--lang-scale sigma``)
compiled by ``ppl.compile`` and fitted by its ``infer svi`` (:func:`fit_hurst_language`),
with ``control=optimal`` (``--lang-control``) and ``elbo=moments`` or ``mc`` (``--elbo``):

    python benchmarks/fsde_hurst.py --synthetic --route language --n 100 --series-per-h 16 \
        --gamma-max 160 --K 7 --noise 0.01 --obs-sd 0.01 --groups 1 --steps 200 \
        --lr-h 0.08 --lr-decay 0.1 --mle

``--control drift`` makes the control network output the change of X's drift
(u = Delta / (sigma wbar(H))); ``--probe-at S1,S2`` compares both control forms'
dELBO/dH with the exact d log p/dH during the fit (:func:`h_gradients`). ``--alternate``
replaces the joint steps by the envelope-theorem schedule (refit everything but H to an
ELBO plateau, then step H alone; :func:`fit_hurst`), ``--probe-rounds`` probing at the
end of chosen refits.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time

import numpy as np
import torch
from fbm_sampling import add_run_args, setup_run
from scipy.optimize import minimize_scalar

from ppl.runtime import fractional_sde as fs
from ppl.runtime import mafbm


# ---- classical estimators (on the increments of the series) ---------------------
def rs_hurst(x: np.ndarray) -> float:
    """Rescaled range: E[R/S](n) ~ n^H over dyadic window sizes."""
    n = len(x)
    sizes = np.unique(np.floor(np.logspace(np.log10(8), np.log10(n // 2), 8)).astype(int))
    rs = []
    for s in sizes:
        vals = []
        for k in range(n // s):
            c = x[k * s:(k + 1) * s]
            z = np.cumsum(c - c.mean())
            sd = c.std()
            if sd > 0:
                vals.append((z.max() - z.min()) / sd)
        rs.append(np.mean(vals))
    return float(np.polyfit(np.log(sizes), np.log(rs), 1)[0])


def dfa_hurst(x: np.ndarray) -> float:
    """DFA-1: profile Y = cumsum(x - mean), linear detrending in windows, F(n) ~ n^H."""
    y = np.cumsum(x - x.mean())
    n = len(y)
    sizes = np.unique(np.floor(np.logspace(np.log10(6), np.log10(n // 3), 8)).astype(int))
    F = []
    for s in sizes:
        res = []
        for k in range(n // s):
            seg = y[k * s:(k + 1) * s]
            tt = np.arange(s)
            p = np.polyfit(tt, seg, 1)
            res.append(np.mean((seg - np.polyval(p, tt)) ** 2))
        F.append(np.sqrt(np.mean(res)))
    return float(np.polyfit(np.log(sizes), np.log(F), 1)[0])


def whittle_hurst(x: np.ndarray) -> float:
    """Local Whittle (Robinson 1995) on m = n^0.65 Fourier frequencies: spectral density
    ~ lambda^(1 - 2H) near 0, d = H - 1/2 minimises log mean(lambda^2d I) - 2d mean log."""
    n = len(x)
    m = max(4, int(n ** 0.65))
    lam = 2 * np.pi * np.arange(1, m + 1) / n
    I = np.abs(np.fft.fft(x - x.mean())[1:m + 1]) ** 2 / (2 * np.pi * n)  # noqa: E741

    def R(d):
        return np.log(np.mean(lam ** (2 * d) * I)) - 2 * d * np.mean(np.log(lam))

    d = minimize_scalar(R, bounds=(-0.49, 0.49), method="bounded").x
    return float(d + 0.5)


# ---- data ---------------------------------------------------------------------
def make_fou(H: float, n: int, theta: float = 2.0, sigma: float = 1.0, seed: int = 0,
             fine: int = 4, truth: str = "fbm", K: int = 5, gamma_max: float = 20.0,
             noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """fOU on [0, 1] at n points, Euler on a ``fine`` times finer grid, driven by exact
    type II fBM (``truth="fbm"``: Cholesky) or by the model's own noise, the type II MA-fBM
    with ``K`` OU processes on [1/gamma_max, gamma_max] (``truth="mafbm"``: exact OU
    transitions, :func:`ppl.runtime.mafbm.sample_mafbm`), for which the fitted model is
    well specified. ``noise``: observation noise added at the n points, as a fraction of
    the path's sd there (the fitted model's obs_sd is in the same standardised units)."""
    g = torch.Generator().manual_seed(seed)
    m = n * fine
    tf = torch.linspace(1.0 / m, 1.0, m, dtype=torch.float64)
    if truth == "fbm":
        B = mafbm.sample_fbm_cholesky(tf, H, 1, kind=2, generator=g)[0]
    elif truth == "mafbm":
        B = mafbm.sample_mafbm(tf, H, 1, K=K, kind=2, gamma_max=gamma_max, generator=g)[0]
    else:
        raise ValueError(f"truth must be 'fbm' or 'mafbm', got {truth!r}")
    dB = torch.diff(torch.cat([torch.zeros(1, dtype=torch.float64), B]))
    x = torch.zeros(m + 1, dtype=torch.float64)
    x[0] = torch.randn(1, generator=g, dtype=torch.float64)[0] * 0.5
    h = 1.0 / m
    for k in range(m):
        x[k + 1] = x[k] - theta * x[k] * h + sigma * dB[k]
    idx = np.linspace(0, m, n).round().astype(int)
    y = x[idx]
    if noise > 0:
        y = y + noise * y.std() * torch.randn(n, generator=g, dtype=torch.float64)
    return np.linspace(0, 1, n), y.numpy()


# ---- the exact likelihood of the same model (what the ELBO is a bound of) ----------
def grid_dt(tt: torch.Tensor, gamma_max: float) -> float:
    """The Euler step of the benchmark: the smallest gap of the grid divided into the
    fewest equal steps with gamma_max * dt <= 0.25, so that every observation time of a
    uniform grid is a step point (torchsde's fixed-step loop then lands on it)."""
    gap = float((tt[1:] - tt[:-1]).min())
    return gap / math.ceil(gap * gamma_max / 0.25 - 1e-9)


def kalman_loglik(tt: torch.Tensor, yt: torch.Tensor, w: torch.Tensor, g: torch.Tensor,
                  theta: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor,
                  kind: int = 2, obs_sd: float = 0.05, gamma_max: float = 20.0,
                  dt: float | None = None) -> torch.Tensor:
    """log p(y | H, theta, mu, sigma) of the fOU model with MA-fBM noise, exactly, for a
    batch of B parameter settings (w [B, K] = omega(H) per setting; theta, mu, sigma [B]),
    summed over the series of ``yt`` ([N], or [N, S]: S independent series at the times
    ``tt`` sharing the parameters, each with its own x0; the filter's covariances do not
    depend on the data, so they are computed once for all S):
    a Kalman filter over the Euler-discretised augmented state Z = (X, Y_1..Y_K) that the
    SDE solver integrates (linear-Gaussian: Z' = (I + dt M) Z + dt c + G dW with
    G = (sigma wbar, 1, .., 1); METHODS.md s2, prior SDE), x0 ~ N(0, 1), Y(0) = 0 (type II)
    or ~ N(0, Sigma) (type I). With an optimal control the ELBO of the fit equals this, so
    its maximiser over H is the value path-space VI can reach on these data at best.
    The Euler steps between two observations are composed once per distinct sequence of
    step lengths (A = prod_j (I + h_j M), c and the noise covariance Q accumulated alike),
    so the cost is linear in the number of observations, not of Euler steps."""
    dt = grid_dt(tt, gamma_max) if dt is None else dt
    B, K = w.shape
    D = K + 1
    f64 = dict(dtype=torch.float64)
    top = torch.cat([-theta.reshape(B, 1, 1), -(sigma[:, None] * w * g).reshape(B, 1, K)], 2)
    low = torch.cat([torch.zeros(B, K, 1, **f64), -torch.diag(g).expand(B, K, K)], 2)
    M = torch.cat([top, low], 1)
    c = torch.cat([(theta * mu).reshape(B, 1), torch.zeros(B, K, **f64)], 1)
    G = torch.cat([(sigma * w.sum(1)).reshape(B, 1), torch.ones(B, K, **f64)], 1)
    GG = G[:, :, None] * G[:, None, :]
    ys = yt.reshape(len(tt), -1)                                     # [N, S]
    m = torch.zeros(B, ys.shape[1], D, **f64)
    P0 = torch.zeros(D, D, **f64)
    P0[0, 0] = 1.0
    if kind == 1:
        P0[1:, 1:] = 1.0 / (g[:, None] + g[None, :])
    P = P0.expand(B, D, D)
    eye = torch.eye(D, **f64)
    ll = torch.zeros(B, ys.shape[1], **f64)
    cur = float(tt[0])
    moves: dict[tuple, tuple] = {}
    for i in range(len(tt)):
        hs = []
        while cur < float(tt[i]) - 1e-12:     # the solver's Euler steps up to t_i
            hs.append(min(dt, float(tt[i]) - cur))
            cur += hs[-1]
        if hs:
            key = tuple(round(h / dt, 9) for h in hs)
            if key not in moves:
                At, ct = eye.expand(B, D, D), torch.zeros(B, D, **f64)
                Qt = torch.zeros(B, D, D, **f64)
                for h in hs:
                    A = eye + h * M
                    At, ct = A @ At, (A @ ct[..., None])[..., 0] + h * c
                    Qt = A @ Qt @ A.transpose(1, 2) + h * GG
                moves[key] = (At, ct, Qt)
            At, ct, Qt = moves[key]
            m = (At[:, None] @ m[..., None])[..., 0] + ct[:, None]
            P = At @ P @ At.transpose(1, 2) + Qt
        s = P[:, 0, 0] + obs_sd ** 2                                   # [B]
        r = ys[i] - m[..., 0]                                          # [B, S]
        ll = ll - 0.5 * (math.log(2 * math.pi) + torch.log(s)[:, None] + r ** 2 / s[:, None])
        k = P[:, :, 0] / s[:, None]
        m = m + k[:, None] * r[..., None]
        P = P - k[:, :, None] * P[:, None, 0, :]
    return ll.sum(1)


def standardise(y: np.ndarray) -> np.ndarray:
    """(y - mean) / sd over every value: one affine map for all series of a row, so that
    series sharing theta, mu and sigma still share them after it."""
    return (y - y.mean()) / y.std()


def mle_hurst(t: np.ndarray, y: np.ndarray, K: int = 5, kind: int = 2,
              obs_sd: float = 0.05, grid=None, iters: int = 100,
              gamma_max: float = 20.0, profile: list | None = None) -> tuple[float, float]:
    """Profile maximum likelihood of H under :func:`kalman_loglik`: theta, mu, sigma
    maximised at each H of a grid (L-BFGS with a strong-Wolfe line search on the sum over
    the grid, whose terms are independent), the peak refined by a parabola. ``y`` is one
    series [N] or M independent series [M, N] at the times ``t`` that share (H, theta, mu,
    sigma), each with its own x0: the log-likelihood is the sum of the M filters'.
    Returns the MLE of H and a Laplace sd from the profile's curvature; ``profile`` (a
    list) receives the profile log-likelihood at each grid point. (300 Adam steps at
    lr 0.05, used before, left the profile up to 10 nats short of its maximum, enough to
    move the MLE by 0.1-0.15.)"""
    tt = torch.tensor((t - t[0]) / (t[-1] - t[0]), dtype=torch.float64)
    yt = torch.tensor(standardise(np.atleast_2d(y)), dtype=torch.float64)
    grid = np.arange(0.05, 0.96, 0.05) if grid is None else np.asarray(grid)
    g = mafbm.gamma_grid(K, gamma_max)
    w = torch.stack([mafbm.omega(float(H), g, float(tt[-1]), kind)[0] for H in grid])
    raw = torch.zeros(len(grid), 3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([raw], lr=1.0, max_iter=iters, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-9)

    def loglik():
        th = torch.nn.functional.softplus(raw[:, 0] + 1.0)
        sg = torch.nn.functional.softplus(raw[:, 2] + 0.5)
        return kalman_loglik(tt, yt.T, w, g, th, raw[:, 1], sg, kind, obs_sd, gamma_max)

    def closure():
        opt.zero_grad()
        loss = -loglik().sum()
        loss.backward()
        return loss
    opt.step(closure)
    with torch.no_grad():
        prof = loglik().numpy()
    if profile is not None:
        profile.extend(prof.tolist())
    i = int(np.clip(np.argmax(prof), 1, len(grid) - 2))
    a, b, _ = np.polyfit(grid[i - 1:i + 2], prof[i - 1:i + 2], 2)
    if a >= 0:
        return float(grid[np.argmax(prof)]), float("nan")
    return float(np.clip(-b / (2 * a), grid[0], grid[-1])), float(1 / math.sqrt(-2 * a))


# ---- the fit --------------------------------------------------------------------
class _Scaled(torch.nn.Module):
    """A control network times a fixed factor: with gain = sigma * wbar(H0), the
    drift-form network gain * u of a noise-form control u, or the noise-form network
    Delta / gain of a drift-form one (held constant, so that moving H moves u in the drift
    form and the steering of X in the noise form)."""

    def __init__(self, ctrl: fs.Control, factor: float):
        super().__init__()
        self.ctrl, self.factor = ctrl, factor

    def forward(self, tau, x, y):
        return self.factor * self.ctrl(tau, x, y)


def h_gradients(tt: torch.Tensor, yt: torch.Tensor, ctrl: fs.Control, H0: float,
                theta: float, mu: float, sigma: float, q0_loc: torch.Tensor,
                q0_sd: torch.Tensor, K: int, kind: int, gamma_max: float, dt: float,
                obs_sd: float, paths: int, seed: int, groups: int = 4,
                control_form: str = "noise") -> dict:
    """d ELBO / dH at fixed control weights in both control forms, against the exact
    d log p(y | H, theta, mu, sigma) / dH (:func:`kalman_loglik`, autograd through
    omega(H)). ``ctrl`` is a network of the form ``control_form`` (what the fit trained:
    u, or Delta); the other form's network is it scaled by sigma wbar(H0) or its inverse,
    so the two forms are the same posterior at H0 and the ELBOs agree there; their partial
    derivatives in H differ because each holds different coordinates fixed. By the
    envelope theorem both equal the exact derivative at the optimal control; the gap is
    the bias that the H update follows at a suboptimal one. Mean and Monte Carlo se over
    ``groups`` groups of the ``paths`` paths per series (same x0 draws and Brownian
    motion for both forms)."""
    M = yt.shape[1]
    g = mafbm.gamma_grid(K, gamma_max)
    Hx = torch.tensor(H0, dtype=torch.float64, requires_grad=True)
    w = mafbm.omega(Hx, g, 1.0, kind)[0][None]     # the exact likelihood's, and the gain's
    gain = sigma * float(w.detach().sum())
    nets = ({"noise": ctrl, "drift": _Scaled(ctrl, gain)} if control_form == "noise"
            else {"noise": _Scaled(ctrl, 1.0 / gain), "drift": ctrl})
    y_paths = yt.repeat_interleave(paths, 1)
    saved = ctrl._obs_tau, ctrl._obs_y
    ctrl.set_data(tt, y_paths[:, :, None])          # the probe's batch has its own size
    out = {}
    for form, net in nets.items():
        torch.manual_seed(seed)
        H = torch.tensor(H0, dtype=yt.dtype, device=yt.device, requires_grad=True)
        x0 = torch.distributions.Normal(q0_loc, q0_sd).sample((paths,)).T.reshape(-1, 1)
        xs, kl, _ = fs.simulate(tt, x0, lambda x, s: -theta * (x - mu), sigma, H, K=K,
                                kind=kind, control=net, gamma_max=gamma_max, dt=dt,
                                control_form=form)
        ll = torch.distributions.Normal(xs[:, :, 0], obs_sd).log_prob(y_paths).sum(0)
        per = (ll - kl).reshape(M, groups, paths // groups).mean(2).sum(0)   # [groups]
        gs = torch.stack([torch.autograd.grad(per[r], H, retain_graph=r < groups - 1)[0]
                          for r in range(groups)]).double()
        out[f"elbo_{form}"] = float(per.detach().mean())
        out[f"grad_{form}"] = float(gs.mean())
        out[f"grad_{form}_se"] = float(gs.std() / math.sqrt(groups))
    ctrl.set_data(*saved)
    t64, y64 = tt.double().cpu(), yt.double().cpu()
    one = {k: torch.tensor([v], dtype=torch.float64)
           for k, v in (("theta", theta), ("mu", mu), ("sigma", sigma))}
    ll = kalman_loglik(t64, y64, w, g, one["theta"], one["mu"], one["sigma"], kind, obs_sd,
                       gamma_max, dt)
    out["loglik"] = float(ll.detach())
    out["grad_exact"] = float(torch.autograd.grad(ll.sum(), Hx)[0])
    return out


def plateaued(trace: list, window: int, tol: float) -> bool:
    """The ELBO's plateau: over at least two windows of ``window`` steps, the last
    window's mean exceeds the one before by less than ``tol`` times its absolute value
    (a relative criterion: the ELBO ranges over 1e6 .. 1e2 nats in a fit)."""
    if len(trace) < 2 * window:
        return False
    last, prev = np.mean(trace[-window:]), np.mean(trace[-2 * window:-window])
    return bool(last - prev < tol * abs(last))


def fit_hurst(t: np.ndarray, y: np.ndarray, steps: int, paths: int, seed: int, K: int = 5,
              kind: int = 2, obs_sd: float = 0.05, lr: float = 3e-3, hidden=(64, 64),
              log_every: int = 0, warmup: float = 0.3, lr_h: float | None = None,
              device: str = "cpu", history: list | None = None,
              gamma_max: float = 20.0, out_gain: float = 1.0,
              control_form: str = "noise", probe_at: tuple = (), probe_paths: int = 64,
              probes: dict | None = None, alternate: bool = False, refit_window: int = 10,
              refit_tol: float = 0.005, refit_max: int = 80, h_steps: int = 1,
              probe_rounds: tuple = (), rounds: list | None = None,
              h_lr: float | None = None) -> float:
    """Path-space VI of the fOU model above; returns the learned H. ``y``: one series [N]
    or M independent series [M, N] observed at ``t`` that share (H, theta, mu, sigma),
    each with its own q(x0); the batch holds ``paths`` posterior paths per series and the
    one control network sees each path's own series in its data features. For the first
    ``warmup`` fraction of the steps H stays at 0.5: with an untrained control the
    likelihood of prior-like paths pulls H towards smaller path variance. ``lr_h`` is
    the Adam learning rate of H's logit (default ``lr``): Adam moves a parameter by about
    its learning rate per step whatever the gradient's size, so with the network's
    lr = 3e-3 the logit can travel only ~0.6 (H by ~0.15) in 300 steps of cosine decay.
    ``control_form``: the control network outputs u (``"noise"``) or the change of X's
    drift (``"drift"``, u = Delta / (sigma wbar(H))). ``history`` (a list) receives H
    after every step. ``probe_at``: steps (counted before the step's update; ``steps``
    itself after the last one) at which :func:`h_gradients` compares the ELBO's
    H-gradient in both forms with the exact one (``probe_paths`` paths per series; the
    results go to ``probes[step]``).

    ``alternate``: the envelope-theorem schedule instead of joint steps. d/dH max_q
    ELBO(q, H) is dELBO/dH at the q that is optimal for H (the coordinates of q then do
    not matter), so the fit alternates: refit the control, q(x0), theta, mu and sigma
    with H frozen until the ELBO plateaus, then ``h_steps`` Adam steps on H alone (all
    other parameters frozen), then refit from that warm start, and so on. Plateau: the
    mean ELBO of the last ``refit_window`` steps exceeds that of the window before by
    less than ``refit_tol`` times its size (at least two windows per refit; at most
    ``refit_max`` steps, the first refit at most the ``warmup`` fraction of ``steps``).
    ``probe_rounds``: refit rounds (1 = the first) at whose end, before the H step,
    :func:`h_gradients` probes the gradients (into ``probes[step]``, with the round).
    ``rounds`` (a list) receives (step, round, refit steps, H, mean ELBO of the last
    window) at the end of every refit. ``h_lr``: the learning rate of those H steps
    (default ``lr_h``), with the same cosine decay."""
    torch.manual_seed(seed)
    dev = torch.device(device)
    dt = grid_dt(torch.tensor((t - t[0]) / (t[-1] - t[0]), dtype=torch.float64), gamma_max)
    tt = torch.tensor((t - t[0]) / (t[-1] - t[0]), dtype=torch.float32, device=dev)
    yt = torch.tensor(standardise(np.atleast_2d(y)).T, dtype=torch.float32, device=dev)
    M = yt.shape[1]                                              # yt: [N, M]
    y_paths = yt.repeat_interleave(paths, 1)                     # [N, M * paths], series-major
    ctrl = fs.Control(1, K, hidden, n_freq=6, data=True).to(dev)
    ctrl.set_data(tt, yt if M == 1 else y_paths[:, :, None])
    raw = {k: torch.zeros((), requires_grad=True, device=dev)
           for k in ("h", "theta", "mu", "sigma")}
    x0_loc = yt[0].clone().requires_grad_(True)
    x0_lsd = torch.full((M,), math.log(obs_sd), device=dev, requires_grad=True)
    last = list(ctrl.net[-1].parameters())
    body = [p for p in ctrl.parameters() if all(p is not q for q in last)]
    lr_s = lr if lr_h is None else lr_h
    scalars = [p for k, p in raw.items() if not (alternate and k == "h")]
    opt = torch.optim.Adam([{"params": [*body, x0_loc, x0_lsd], "lr": lr},
                            {"params": last, "lr": lr * out_gain},
                            {"params": scalars, "lr": lr_s}])

    def decay(k):   # cosine decay of every group to a tenth of its own rate
        return 0.1 + 0.45 * (1 + math.cos(math.pi * min(k, steps) / steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, decay)
    # --alternate: H's own Adam without momentum (beta1 = 0), since its few steps are
    # taken at different refitted controls; the step is the gradient over its running
    # rms, so it shrinks as dELBO/dH does near the optimum
    lr_hs = lr_s if h_lr is None else h_lr
    opt_h = torch.optim.Adam([raw["h"]], lr=lr_hs, betas=(0.0, 0.99)) if alternate else None
    prior = torch.distributions.Normal(torch.zeros((), device=dev), torch.ones((), device=dev))

    def refit_done(trace, n, n_round, steps):
        cap = warmup * steps if n_round == 0 else refit_max
        return n >= cap or plateaued(trace, refit_window, refit_tol)

    def constrained():
        """(H, theta, mu, sigma) from the unconstrained parameters."""
        return (torch.sigmoid(raw["h"]).clamp(0.01, 0.99),
                torch.nn.functional.softplus(raw["theta"] + 1.0), raw["mu"],
                torch.nn.functional.softplus(raw["sigma"] + 0.5))

    def probe(step, extra=None):
        with torch.no_grad():
            h0, th, m, sg = (float(v) for v in constrained())
        r = h_gradients(tt, yt, ctrl, h0, th, m, sg, x0_loc.detach(),
                        x0_lsd.detach().exp(), K, kind, gamma_max, dt, obs_sd,
                        probe_paths, seed=10_000 + step, control_form=control_form)
        print(f"  probe at step {step}: H {h0:.3f}  ELBO {r['elbo_noise']:.1f} "
              f"(loglik {r['loglik']:.1f})  dELBO/dH noise {r['grad_noise']:.1f} "
              f"+- {r['grad_noise_se']:.1f}  drift {r['grad_drift']:.1f} "
              f"+- {r['grad_drift_se']:.1f}  exact {r['grad_exact']:.1f}", flush=True)
        if probes is not None:
            probes[step] = {**r, **(extra or {})}

    phase, in_phase, trace, n_round = "refit", 0, [], 0
    for step in range(steps):
        if step in probe_at:
            probe(step)
        if alternate and phase == "refit" and refit_done(trace, in_phase, n_round, steps):
            n_round += 1
            W = refit_window
            if rounds is not None:
                rounds.append((step, n_round, in_phase, float(torch.sigmoid(raw["h"].detach())),
                               float(np.mean(trace[-W:]))))
            if log_every:
                print(f"  round {n_round}: refit {in_phase} steps to step {step}, H "
                      f"{float(torch.sigmoid(raw['h'].detach())):.3f}, ELBO "
                      f"{np.mean(trace[-W:]):.1f}", flush=True)
            if n_round in probe_rounds:
                probe(step, {"round": n_round})
            phase, in_phase, trace = "h", 0, []
        H, theta, mu, sigma = constrained()
        q0 = torch.distributions.Normal(x0_loc, x0_lsd.exp())
        x0 = q0.rsample((paths,)).T.reshape(M * paths, 1)

        def drift(x, s, th=theta, m=mu):
            return -th * (x - m)

        paths_, kl, _ = fs.simulate(tt, x0, drift, sigma, H, K=K, kind=kind, control=ctrl,
                                    gamma_max=gamma_max, dt=dt, control_form=control_form)
        ll = torch.distributions.Normal(paths_[:, :, 0], obs_sd).log_prob(y_paths).sum(0)
        kl0 = torch.distributions.kl_divergence(q0, prior).sum()
        elbo = (ll - kl).reshape(M, paths).mean(1).sum() - kl0
        opt.zero_grad()
        raw["h"].grad = None
        (-elbo / yt.numel()).backward()
        if alternate and phase == "h":      # H alone, at the refitted control
            opt_h.param_groups[0]["lr"] = lr_hs * decay(step)
            opt_h.step()
        else:
            if step < warmup * steps:       # H frozen while the control learns the data
                raw["h"].grad = None
            opt.step()                      # (without H under --alternate)
        sched.step()
        if alternate:
            in_phase += 1
            trace.append(float(elbo.detach()))
            if phase == "h" and in_phase >= h_steps:
                phase, in_phase, trace = "refit", 0, []
        if history is not None:
            history.append(float(torch.sigmoid(raw["h"].detach())))
        if log_every and (step % log_every == 0 or step == steps - 1):
            rms = float((paths_[:, :, 0].detach() - y_paths).pow(2).mean().sqrt())
            print(f"  step {step:4d}  elbo {elbo.item():9.2f}  kl {kl.mean().item():8.2f}  "
                  f"H {H.item():.3f}  theta {theta.item():.2f}  sigma {sigma.item():.2f}  "
                  f"rms {rms:.3f}", flush=True)
    if steps in probe_at:
        probe(steps)
    return float(torch.sigmoid(raw["h"].detach()))


def fit_hurst_affine(t: np.ndarray, y: np.ndarray, K: int = 5, obs_sd: float = 0.05,
                     gamma_max: float = 20.0, dt_div: int = 1, elbo: str = "moments",
                     steps: int = 200, paths: int = 16, lr: float = 0.05, seed: int = 0,
                     iters: int = 100, device: str = "cpu", log_every: int = 0,
                     noise_scale: bool = True, info: dict | None = None) -> float:
    """Path-space VI of the fOU model with the affine control family; returns the learned H.

    For this model (linear drift, constant sigma, type II, Gaussian observations) the
    control family u_n = a_n^T Z + c_n holds the exact posterior, with the noise scale
    exactly on the Euler grid (without it, up to the Euler gap; docs/constructs/
    fractional_sde.md, "The affine control"), and its optimum, with
    q(x0), is available in closed form (:func:`ppl.runtime.fractional_sde.posterior_control`).
    So the ELBO is maximised over (control, q(x0)) exactly at every evaluation, and over
    (H, theta, mu, sigma) by gradient: by the envelope theorem the partial derivative of the
    ELBO at the optimal control is the derivative of max_q ELBO. ``elbo="moments"``: the
    closed-form ELBO (:func:`~ppl.runtime.fractional_sde.moment_elbo`), maximised by L-BFGS
    (strong Wolfe, ``iters`` evaluations); ``elbo="mc"``: the Monte Carlo ELBO of
    ``paths`` torchsde posterior paths per series under the same control, ``steps`` Adam
    steps at ``lr`` (cosine decay to a tenth) on the four scalars (H frozen for the first
    10%). ``dt_div``: the VI's
    Euler step is the protocol's :func:`grid_dt` divided by this. ``noise_scale``: the
    family also scales each step's noise (``AffineControl.log_r``), so it holds the Euler
    chain's exact posterior and the optimal ELBO is log p; without it (the Girsanov family)
    the optimum is log p minus the Euler gap sum 1/2 (h pi - 1 - log h pi), which shrinks
    with dt. ``info`` receives the final ELBO, that gap and the scalars."""
    y = np.atleast_2d(y)
    if y.shape[0] == 0 or y.size == 0:
        # an empty group would give a flat ELBO and L-BFGS would return the start, H = 0.5
        raise ValueError("fit_hurst_affine: no series to fit")
    dev = torch.device(device)
    f64 = dict(dtype=torch.float64, device=dev)
    tt = torch.tensor((t - t[0]) / (t[-1] - t[0]), **f64)
    yt = torch.tensor(standardise(y).T, **f64)                     # [N, S]
    S = yt.shape[1]
    dt = grid_dt(tt.cpu(), gamma_max) / dt_div
    prior = torch.distributions.Normal(torch.zeros((), **f64), torch.ones((), **f64))
    raw = torch.zeros(4, requires_grad=True, **f64)                  # H logit, theta, mu, sigma

    def scalars(r):
        return (torch.sigmoid(r[0]).clamp(0.01, 0.99), torch.nn.functional.softplus(r[1] + 1.0),
                r[2], torch.nn.functional.softplus(r[3] + 0.5))

    def optimum(r):
        """The control and q(x0) that maximise the ELBO at the scalars r (closed form)."""
        H, th, mu, sg = (v.detach() for v in scalars(r))
        return fs.posterior_control(tt, yt, obs_sd, fs.LinearDrift.fou(th, mu), sg, H, prior,
                                    K=K, gamma_max=gamma_max, dt=dt, device=dev,
                                    noise_scale=noise_scale)

    def moments(r):
        ctrl, loc, sd, gap = optimum(r)
        H, th, mu, sg = scalars(r)
        out = fs.moment_elbo(tt, yt, obs_sd, fs.LinearDrift.fou(th, mu), sg, H, ctrl, loc, sd,
                             prior, K=K, gamma_max=gamma_max, dt=dt)
        return out["elbo"].sum(), gap.sum()

    torch.manual_seed(seed)
    if elbo == "moments":
        opt = torch.optim.LBFGS([raw], lr=1.0, max_iter=iters, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-7, tolerance_change=1e-10)

        def closure():
            opt.zero_grad()
            loss = -moments(raw)[0]
            loss.backward()
            return loss
        opt.step(closure)
    elif elbo == "mc":
        opt = torch.optim.Adam([raw], lr=lr)
        # cosine decay to a tenth, as in fit_hurst: the noisy steps settle on the ridge
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda k: 0.1 + 0.45 * (1 + math.cos(math.pi * min(k, steps) / max(steps, 1))))
        ys = yt.repeat_interleave(paths, 1)                          # series-major paths
        for step in range(steps):
            ctrl, loc, sd, _ = optimum(raw)
            H, th, mu, sg = scalars(raw)
            x0 = (loc + sd * torch.randn(paths, S, **f64)).T.reshape(S * paths, 1)
            xs, kl, _ = fs.simulate(tt, x0, fs.LinearDrift.fou(th, mu), sg, H, K=K,
                                    control=ctrl, gamma_max=gamma_max, dt=dt)
            ll = torch.distributions.Normal(xs[:, :, 0], obs_sd).log_prob(ys).sum(0)
            q0 = torch.distributions.Normal(loc, sd)
            e = (ll - kl).reshape(S, paths).mean(1).sum() - \
                torch.distributions.kl_divergence(q0, prior).sum()
            opt.zero_grad()
            (-e / yt.numel()).backward()
            if step < 0.1 * steps:
                raw.grad[0] = 0.0
            opt.step()
            sched.step()
            if log_every and step % log_every == 0:
                print(f"  step {step:4d}  elbo {float(e.detach()):9.2f}  H "
                      f"{float(scalars(raw.detach())[0]):.3f}", flush=True)
    else:
        raise ValueError(f"elbo must be 'moments' or 'mc', got {elbo!r}")
    with torch.no_grad():
        e, gap = moments(raw)
        H, th, mu, sg = (float(v) for v in scalars(raw))
    if info is not None:
        info.update(elbo=float(e), gap=float(gap), theta=th, mu=mu, sigma=sg)
    return H


LANGUAGE_MODEL = """
model FOU(t: real[T], y: real[T, S]) {{
  param theta: real<lower=0> = {theta0}
  param mu: real = 0.0
  param sigma: real<lower=0> = {sigma0}
  z ~ fractional_sde(times=t, drift=(x, s) => -theta * (x - mu), diffusion=sigma, K={K},
                     kind=2, gamma_max={gamma_max}, dim=S, x0=Normal(0, 1), control={control},
                     elbo={elbo})
  y ~ Normal(z, {obs_sd})
}}
infer svi(steps={steps}, lr={lr}, lr_scalars={lr_h}, lr_decay={lr_decay},
          particles={particles}, samples=1, dtype=float64, device={device})
"""

# the same model with sigma written through s = sigma gap^H, the noise's sd over one
# sampling gap (gap: the grid's smallest), and H a param: the same likelihood in other
# coordinates, in which the fine-scale ridge log sigma + H log gap = const is an axis
LANGUAGE_MODEL_LOCAL = """
model FOU(t: real[T], y: real[T, S], gap: real) {{
  param H: real<lower=0, upper=1> = 0.5
  param theta: real<lower=0> = {theta0}
  param mu: real = 0.0
  param s: real<lower=0> = {s0}
  sigma = s * exp(-H * log(gap))
  z ~ fractional_sde(times=t, drift=(x, u) => -theta * (x - mu), diffusion=sigma, hurst=H,
                     K={K}, kind=2, gamma_max={gamma_max}, dim=S, x0=Normal(0, 1),
                     control={control}, elbo={elbo})
  y ~ Normal(z, {obs_sd})
}}
infer svi(steps={steps}, lr={lr}, lr_scalars={lr_h}, lr_decay={lr_decay},
          particles={particles}, samples=1, dtype=float64, device={device})
"""


def fit_hurst_language(t: np.ndarray, y: np.ndarray, K: int = 5, obs_sd: float = 0.05,
                       gamma_max: float = 20.0, control: str = "optimal",
                       elbo: str = "moments", steps: int = 200, lr: float = 0.05,
                       lr_h: float = 0.04, lr_decay: float = 0.1, particles: int = 1,
                       theta0: float = 1.0, sigma0: float = 1.0, scale: str = "local",
                       seed: int = 0, device: str = "cpu", info: dict | None = None) -> float:
    """The fOU model of :func:`fit_hurst_affine` written in BDL (:data:`LANGUAGE_MODEL`:
    the S series are the path's S independent dimensions, which share theta, mu, sigma
    and H), compiled by ``ppl.compile`` and fitted by its ``infer svi``; returns the
    learned H (``pyro.param("z_hurst")``).

    ``control=optimal``: the affine control and q(x0) are set to the ELBO's closed-form
    maximiser at the current parameters on every model call; ``affine``: its coefficients
    are trained by svi's Adam at ``lr``. ``elbo=moments``: svi's objective is the
    closed-form ELBO (:func:`ppl.runtime.fractional_sde.moment_elbo`, zero variance);
    ``mc``: the Monte Carlo ELBO of one torchsde path per series per particle. Adam on the
    scalars (H's logit, theta, mu, sigma) at ``lr_h``, decayed exponentially to
    ``lr_decay`` times it at the last step, from H = 0.5, mu = 0 and the params' initial
    values ``theta0``, ``sigma0``. ``scale="local"``: the model of
    :data:`LANGUAGE_MODEL_LOCAL` (sigma written through the noise's sd over one sampling
    gap, ``s = sigma gap^H``, started at ``sigma0 gap^0.5``; the same likelihood, other
    coordinates for Adam). The Euler step is the construct's closed-form
    default, the grid's gap divided as :func:`grid_dt` does. ``info`` receives the last
    ELBO, the scalars and the wall time."""
    import pyro

    import ppl
    y = np.atleast_2d(y)
    if y.size == 0:
        raise ValueError("fit_hurst_language: no series to fit")
    tt = (t - t[0]) / (t[-1] - t[0])
    gap = float(np.diff(tt).min())
    kw = dict(K=K, gamma_max=gamma_max, control=control, elbo=elbo, obs_sd=obs_sd,
              steps=steps, lr=lr, lr_h=lr_h, lr_decay=lr_decay, particles=particles,
              device=device, theta0=theta0, sigma0=sigma0, s0=sigma0 * gap ** 0.5)
    data = {"t": tt, "y": standardise(y).T}
    if scale == "local":
        src, data["gap"] = LANGUAGE_MODEL_LOCAL.format(**kw), gap
    elif scale == "sigma":
        src = LANGUAGE_MODEL.format(**kw)
    else:
        raise ValueError(f"scale must be 'sigma' or 'local', got {scale!r}")
    t0 = time.perf_counter()
    fit = ppl.compile(src, "fsde_hurst.bdl").fit(data, seed=seed)
    with torch.no_grad():
        if scale == "local":
            H = float(pyro.param("H"))
            sg = float(pyro.param("s")) * gap ** -H
        else:
            H, sg = float(pyro.param("z_hurst")), float(pyro.param("sigma"))
        th, mu = float(pyro.param("theta")), float(pyro.param("mu"))
    if info is not None:
        info.update(elbo=float(np.mean(fit.elbo[-10:])), theta=th, mu=mu, sigma=sg,
                    wall_s=time.perf_counter() - t0)
    return H


def classical(y: np.ndarray) -> dict:
    """R/S, DFA and local Whittle on the increments; for M series [M, N], the mean of the
    M estimates."""
    xs = np.diff(np.atleast_2d(y), axis=1)
    return {k: float(np.mean([f(x) for x in xs]))
            for k, f in (("rs_h", rs_hurst), ("dfa_h", dfa_hurst), ("whittle_h", whittle_hurst))}


def add_mle(row: dict, t, y, args) -> None:
    """The exact-likelihood H and its Laplace sd (:func:`mle_hurst`) into the row."""
    t0 = time.perf_counter()
    row["mle_h"], row["mle_sd"] = mle_hurst(t, y, K=args.K, gamma_max=args.gamma_max,
                                            obs_sd=args.obs_sd)
    print(f"  exact-likelihood H = {row['mle_h']:.3f} +- {row['mle_sd']:.3f} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)


def run_affine_row(t, y, true_h, args) -> dict:
    """--control affine: learned H on all series of the row; h_sd the sd of the H learned
    on each of G = min(``--groups``, series) disjoint groups of the series, over sqrt(G)
    (a standard error from the data's spread, with G - 1 degrees of freedom: the
    closed-form fit has no optimisation noise); NaN when G < 2."""
    ys = np.atleast_2d(y)
    if args.route == "language":
        fit = fit_hurst_language
        kw = dict(K=args.K, obs_sd=args.obs_sd, gamma_max=args.gamma_max,
                  control=args.lang_control, elbo=args.elbo, steps=args.steps, lr=args.lr,
                  lr_h=args.lr_h, lr_decay=args.lr_decay, particles=args.particles,
                  theta0=args.init_theta, sigma0=args.init_sigma, scale=args.lang_scale,
                  device=args.device)
    else:
        fit = fit_hurst_affine
        kw = dict(K=args.K, obs_sd=args.obs_sd, gamma_max=args.gamma_max, dt_div=args.dt_div,
                  elbo=args.elbo, steps=args.steps, paths=args.paths, lr=args.lr_h,
                  device=args.device, log_every=args.log_every,
                  noise_scale=not args.no_noise_scale)
    t0, info = time.perf_counter(), {}
    row = {"true_h": true_h, "learned_h": fit(t, ys, info=info, **kw)}
    gap = f"Euler gap of the r = 1 family {info['gap']:.1f} " if "gap" in info else ""
    scal = "".join(f"{k} {info[k]:.2f}, " for k in ("theta", "sigma") if k in info)
    print(f"  all {len(ys)} series: H = {row['learned_h']:.3f}, ELBO {info['elbo']:.1f}, "
          f"{scal}{gap}({time.perf_counter() - t0:.0f} s)", flush=True)
    row.update(elbo=info["elbo"], wall_s=time.perf_counter() - t0)
    # more groups than series would leave some empty: G = min(groups, series), G >= 2
    G = min(args.groups, len(ys))
    groups = np.array_split(np.arange(len(ys)), G) if G > 1 else []
    hs = [fit(t, ys[g], **kw) for g in groups]
    row["h_sd"] = (float(np.std(hs, ddof=1) / math.sqrt(len(hs))) if len(hs) > 1
                   else float("nan"))
    if hs:
        print("  groups: " + ", ".join(f"{h:.3f}" for h in hs), flush=True)
    row.update(classical(ys))
    if args.mle:
        add_mle(row, t, ys, args)
    return row


def run_row(t, y, true_h, args, probes: dict | None = None) -> dict:
    if args.control == "affine" or args.route == "language":
        return run_affine_row(t, y, true_h, args)
    hs = []
    probe_at = tuple(int(k) for k in args.probe_at.split(",")) if args.probe_at else ()
    probe_rounds = (tuple(int(k) for k in args.probe_rounds.split(","))
                    if args.probe_rounds else ())
    rounds: list = []
    for s in range(args.seeds):
        t0 = time.perf_counter()
        hs.append(fit_hurst(t, y, args.steps, args.paths, seed=s, lr=args.lr, K=args.K,
                            obs_sd=args.obs_sd,
                            log_every=args.log_every, warmup=args.warmup, lr_h=args.lr_h,
                            out_gain=args.out_gain, device=args.device,
                            gamma_max=args.gamma_max, control_form=args.control,
                            probe_at=probe_at, probe_paths=args.probe_paths,
                            probes=probes if s == 0 else None, alternate=args.alternate,
                            refit_window=args.refit_window, refit_tol=args.refit_tol,
                            refit_max=args.refit_max, h_steps=args.h_steps,
                            probe_rounds=probe_rounds, rounds=rounds if s == 0 else None,
                            h_lr=args.h_lr))
        print(f"  seed {s}: H = {hs[-1]:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    row = {"true_h": true_h, "learned_h": float(np.mean(hs)),
           "h_sd": float(np.std(hs, ddof=1)) if len(hs) > 1 else float("nan")}
    row.update(classical(y))
    if args.alternate:   # refit rounds of the first seed (each followed by an H step)
        row["rounds"] = float(len(rounds))
    if args.mle:
        add_mle(row, t, y, args)
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--series", help="CSV file with one column to fit")
    ap.add_argument("--column", help="column of --series")
    ap.add_argument("--hs", default="0.3,0.5,0.7,0.85", help="synthetic Hurst indices")
    ap.add_argument("--n", type=int, default=100, help="points per synthetic series")
    ap.add_argument("--series-seed", type=int,
                    help="seed of the first synthetic series (default 100; the i-th of --hs "
                         "gets seed + i)")
    ap.add_argument("--steps", type=int, default=300, help="optimiser steps (size knob)")
    ap.add_argument("--paths", type=int, default=32, help="posterior paths per step")
    ap.add_argument("--seeds", type=int, default=1, help="independent fits per series")
    ap.add_argument("--lr", type=float, default=3e-3, help="control network (Adam)")
    ap.add_argument("--out-gain", type=float, default=1.0,
                    help="learning-rate factor of the control's (zero-started) last layer")
    ap.add_argument("--lr-h", type=float, default=0.05,
                    help="the model's scalars: logit of H, theta, mu, sigma")
    ap.add_argument("--warmup", type=float, default=0.3, help="fraction of steps with H fixed")
    ap.add_argument("--gamma-max", type=float, default=20.0,
                    help="the MA-fBM's fastest rate (the Euler step is the grid's gap "
                         "divided so that gamma_max * dt <= 0.25)")
    ap.add_argument("--K", type=int, default=5, help="OU processes of the MA-fBM")
    ap.add_argument("--obs-sd", type=float, default=0.05,
                    help="the model's observation sd (units of the standardised series)")
    ap.add_argument("--noise", type=float, default=0.0,
                    help="observation noise added to the synthetic series (same units)")
    ap.add_argument("--truth", choices=("fbm", "mafbm"), default="fbm",
                    help="noise of the synthetic series: exact type II fBM, or the model's "
                         "own MA-fBM (K, gamma_max as fitted: a well-specified check)")
    ap.add_argument("--mle", action="store_true",
                    help="also the exact-likelihood (Kalman) MLE of H under the same model")
    ap.add_argument("--series-per-h", type=int, default=1,
                    help="independent synthetic series per H, sharing (H, theta, mu, sigma) "
                         "in the fit and the exact likelihood (the j-th of row i has seed "
                         "series-seed + i + 100 j); they are batched as paths")
    ap.add_argument("--control", choices=(*fs.CONTROL_FORMS, "affine"), default="noise",
                    help="what the control network outputs: u (noise) or the change of X's "
                         "drift (drift; u = Delta / (sigma wbar(H))); or affine: the "
                         "per-step affine control, optimal in closed form (fit_hurst_affine)")
    ap.add_argument("--elbo", choices=("moments", "mc"), default="moments",
                    help="--control affine: the closed-form ELBO (L-BFGS) or the Monte Carlo "
                         "one (--paths paths per series, --steps Adam steps at --lr-h)")
    ap.add_argument("--route", choices=("direct", "language"), default="direct",
                    help="--control affine: fit by the runtime API (fit_hurst_affine), or "
                         "through the language: a .bdl model compiled by ppl.compile and "
                         "fitted by its svi (fit_hurst_language; --elbo, --steps, --lr-h, "
                         "--lr-decay, --lang-control, --particles)")
    ap.add_argument("--lang-control", choices=("optimal", "affine"), default="optimal",
                    help="--route language: the construct's control (optimal: set to the "
                         "closed-form optimum at every call; affine: trained by Adam at --lr)")
    ap.add_argument("--lr-decay", type=float, default=0.1,
                    help="--route language: svi's lr_decay (the rate at the last step over "
                         "the first)")
    ap.add_argument("--init-theta", type=float, default=1.0,
                    help="--route language: the model's initial theta")
    ap.add_argument("--init-sigma", type=float, default=1.0,
                    help="--route language: the model's initial sigma")
    ap.add_argument("--lang-scale", choices=("sigma", "local"), default="local",
                    help="--route language: the diffusion's coordinates (sigma; or local: "
                         "s = sigma gap^H, the noise's sd over one sampling gap, H a param)")
    ap.add_argument("--particles", type=int, default=1,
                    help="--route language: svi's particles (paths per series per step "
                         "with --elbo mc)")
    ap.add_argument("--dt-div", type=int, default=1,
                    help="--control affine: the VI's Euler step is the grid's divided by this")
    ap.add_argument("--no-noise-scale", action="store_true",
                    help="--control affine: the Girsanov family (no per-step noise scale)")
    ap.add_argument("--groups", type=int, default=4,
                    help="--control affine: disjoint groups of the series fitted alone, for "
                         "h_sd; G = min(groups, series) groups give a (G-1)-dof spread "
                         "(h_sd NaN when G < 2)")
    ap.add_argument("--probe-at", default="",
                    help="steps (comma-separated) at which to compare dELBO/dH of both "
                         "control forms with the exact d log p/dH (rows '<row>/probe@N')")
    ap.add_argument("--probe-paths", type=int, default=64,
                    help="posterior paths per series for each --probe-at gradient")
    ap.add_argument("--alternate", action="store_true",
                    help="envelope-theorem schedule: refit everything but H until the ELBO "
                         "plateaus, then --h-steps steps on H alone, and repeat (the first "
                         "refit at most --warmup of the steps)")
    ap.add_argument("--refit-window", type=int, default=10,
                    help="--alternate: steps per window of the plateau test")
    ap.add_argument("--refit-tol", type=float, default=0.005,
                    help="--alternate: plateau when the last window's mean ELBO gains less "
                         "than this fraction of its size over the window before")
    ap.add_argument("--refit-max", type=int, default=80,
                    help="--alternate: most steps of a refit after the first")
    ap.add_argument("--h-steps", type=int, default=1,
                    help="--alternate: Adam steps on H alone after each refit")
    ap.add_argument("--h-lr", type=float,
                    help="--alternate: learning rate of the H steps (default --lr-h)")
    ap.add_argument("--probe-rounds", default="",
                    help="--alternate: refit rounds (comma-separated, 1 = the first) at "
                         "whose end the --probe-at gradients are measured")
    ap.add_argument("--log-every", type=int, default=0)
    add_run_args(ap)
    args = ap.parse_args(argv)
    setup_run(ap, args)
    if not args.synthetic and not args.series:
        ap.error("give --synthetic or --series CSV --column NAME")
    out = {}
    if args.synthetic:
        for i, H in enumerate(float(h) for h in args.hs.split(",")):
            base = (100 if args.series_seed is None else args.series_seed) + i
            ser = [make_fou(H, args.n, seed=base + 100 * j, truth=args.truth, K=args.K,
                            gamma_max=args.gamma_max, noise=args.noise)
                   for j in range(args.series_per_h)]
            t = ser[0][0]
            y = ser[0][1] if len(ser) == 1 else np.stack([s[1] for s in ser])
            print(f"h={H:.2f}", flush=True)
            probes: dict = {}
            out[f"h={H:.2f}"] = run_row(t, y, H, args, probes)
            out.update({f"h={H:.2f}/probe@{k}": v for k, v in probes.items()})
    if args.series:
        with open(args.series) as f:
            rows = list(csv.DictReader(f))
        col = args.column or [k for k in rows[0] if k][-1]
        y = np.array([float(r[col]) for r in rows if r[col] not in ("", "NA")])
        t = np.linspace(0, 1, len(y))
        print(f"series {args.series}:{col} ({len(y)} points)", flush=True)
        out["series"] = run_row(t, y, float("nan"), args)
    cols = ["true_h", "learned_h", "h_sd", "rs_h", "dfa_h", "whittle_h"]
    if args.mle:
        cols += ["mle_h", "mle_sd"]
    if args.alternate:
        cols += ["rounds"]
    print("| row | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for k, r in out.items():
        if "/probe@" not in k:
            print(f"| {k} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")
    if args.json:  # NaN (no truth, one seed) is written as null: strict JSON
        clean = {k: {c: (None if isinstance(v, float) and math.isnan(v) else v)
                     for c, v in r.items()} for k, r in out.items()}
        with open(args.json, "w") as f:
            json.dump(clean, f, indent=2)
    return out


if __name__ == "__main__":
    main()
