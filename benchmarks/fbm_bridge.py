"""The fBM bridge (issue 5; METHODS.md s2 (c)): path-space VI against the exact posterior.

    python benchmarks/fbm_bridge.py [--H 0.7] [--steps 1500] [--paths 64] [--png OUT]
                                    [--control network|affine] [--elbo closed|mc]
                                    [--device cpu|cuda] [--json OUT]

Prior: X = B_hat^H, the type II MA-fBM (K = 5, gamma in [1/20, 20]) started at X(0) = 0
(drift 0, diffusion 1), on [0, 1]; one observation y = X(1) + N(0, obs_sd^2). The
posterior over paths is fitted as the construct does (``ppl.runtime.fractional_sde``:
the controlled SDE dY_k = (-gamma_k Y_k + u) dt + dW, dX = sum_k w_k (u - gamma_k Y_k) dt
+ wbar dW, with the zero-initialised control network ``Control`` on
[tau, sin/cos features, x, y]), by maximising the ELBO E_Q log p(y | X(1)) -
E_Q 1/2 int u^2 dt with ``--paths`` paths per step. The posterior path variance (from
``--eval-paths`` posterior paths) is compared with the exact Gaussian conditional variance

    Var(X_t | y) = Var X_t - Cov(X_t, X_1)^2 / (Var X_1 + obs_sd^2)

for three priors: ``euler`` (the Euler-discretised MA-fBM the solver integrates, dt as in
the construct: the distribution VI actually targets, so the test of the method), ``mafbm``
(the continuous-time MA-fBM, ``mafbm_cov``) and ``fbm`` (exact type II fBM, ``fbm_cov``;
the differences from ``euler`` are the discretisation and the MA-fBM approximation errors).

``--control affine`` replaces the network by ``AffineControl`` (u_n = a_n^T Z + c_n and a
noise scale r_n per Euler step; docs/constructs/fractional_sde.md, "The affine control"):
the bridge is linear-Gaussian, so that family holds the exact Euler posterior. ``--elbo
closed`` takes its optimum in closed form (``posterior_control``, a backward information
filter, no training); ``--elbo mc`` trains it from zero, as SVI would, by Adam on the same
Monte Carlo ELBO through torchsde (``--steps`` x ``--paths``, ``--lr``). For an affine
control the variance is also propagated exactly (``affine_moments``, the recursion of
``moment_elbo``): row ``moments_vs_euler`` (no sampling error), and ``elbo_gap``, log p(y)
minus the closed-form ELBO of the fitted control (0 at the optimum; nats).

Table rows: ``vi_vs_euler``, ``vi_vs_mafbm``, ``vi_vs_fbm``, ``euler_vs_fbm`` (no VI:
the reference priors against each other); columns ``max_rel_err`` (max over
t in [0.1, 1] of |Var_a(t) - Var_b(t)| / Var_b(t)), ``mean_rel_err``, ``mc_se`` (relative
Monte Carlo standard error of an empirical variance, sqrt(2 / (n - 1))) and ``mean_abs_err``
(max over t of the posterior mean's error, where a reference gives one). The PNG plots the
posterior variance and mean against the references.
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import torch
from fbm_sampling import add_run_args, report, setup_run

from ppl.runtime import fractional_sde as fs
from ppl.runtime import mafbm


def euler_moments(t: torch.Tensor, w: torch.Tensor, g: torch.Tensor, dt: float):
    """Var X_n and Cov(X_n, X_N) of the Euler-discretised prior X_n = w'Y_n,
    Y_(n+1) = (1 - g dt) Y_n + dW_n 1 (one shared increment), Y_0 = 0, on t (a multiple
    of dt apart). float64."""
    K = len(g)
    a = 1.0 - g * dt
    S = torch.zeros(K, K, dtype=torch.float64)
    covs = [S.clone()]
    steps = torch.round(torch.diff(t) / dt).long().tolist()
    for n in steps:
        for _ in range(n):
            S = a[:, None] * S * a[None, :] + dt
        covs.append(S.clone())
    # Cov(Y_N, Y_n) = diag(a)^(N - n) Sigma_n
    pos = [0]
    for n in steps:
        pos.append(pos[-1] + n)
    N = pos[-1]
    var = torch.stack([w @ C @ w for C in covs])
    cross = torch.stack([(a ** (N - p) * w) @ C @ w for p, C in zip(pos, covs, strict=True)])
    return var, cross


def conditional(var: torch.Tensor, cross: torch.Tensor, y: float, obs_sd: float):
    """Mean and variance of X_t given y = X_1 + N(0, obs_sd^2) (prior mean 0)."""
    s = var[-1] + obs_sd ** 2
    return cross * y / s, var - cross ** 2 / s


def affine_moments(ctrl: fs.AffineControl, system: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of X at every Euler point under an affine control, from Z(0) = 0,
    on the prior ``system`` of ``fs._linear_system`` (F, G and the step lengths h): the
    controlled Euler chain Z' = A_n Z + G c_n h_n + sqrt(r_n h_n) G xi, A_n = I + (F + G
    a_n^T) h_n, keeps m' = A_n m + G c_n h_n and P' = A_n P A_n^T + r_n h_n G G^T exactly
    (the recursion of ``fs.moment_elbo``, here read out per step). float64."""
    F, G, h = system["F"], system["G"], system["h"]
    n = len(G)
    m = torch.zeros(n, dtype=torch.float64)
    P = torch.zeros(n, n, dtype=torch.float64)
    a = ctrl.a.detach().cpu().double()[:, 0, 0]
    c = ctrl.c.detach().cpu().double()[:, 0, 0]
    r = ctrl.log_r.detach().cpu().double()[:, 0, 0].exp()
    means, variances = [m[0]], [P[0, 0]]
    for i in range(ctrl.steps):
        A = torch.eye(n, dtype=torch.float64) + (F + G[:, None] * a[i][None, :]) * h[i]
        m = A @ m + G * c[i] * h[i]
        P = A @ P @ A.T + r[i] * h[i] * G[:, None] * G[None, :]
        means.append(m[0])
        variances.append(P[0, 0])
    return torch.stack(means), torch.stack(variances)


def bridge_data(t: torch.Tensor, y: float) -> torch.Tensor:
    """The observations on the output grid: y at the last time, NaN (missing) elsewhere."""
    ys = torch.full((len(t),), float("nan"), dtype=torch.float64)
    ys[-1] = y
    return ys


def fit_affine(t, y, obs_sd, H, K, dt, elbo, steps, paths, lr, seed, dev,
               log_every=0) -> fs.AffineControl:
    """The affine control of the bridge posterior: ``elbo="closed"``, the optimum in closed
    form (``fs.posterior_control``; q(x0) is unused, X(0) = 0 is fixed); ``elbo="mc"``,
    trained from zero by Adam (cosine decay to a tenth) on the Monte Carlo ELBO
    E_Q log N(y; X(1), obs_sd^2) - E_Q int 1/2 u^2 dt (with the noise scale's KL), ``paths``
    paths per step through torchsde."""
    if elbo == "closed":
        prior = torch.distributions.Normal(torch.zeros((), dtype=torch.float64),
                                           torch.ones((), dtype=torch.float64))
        ctrl, _, _, _ = fs.posterior_control(t.cpu(), bridge_data(t, y), obs_sd, 0.0, 1.0, H,
                                             prior, K=K, dt=dt)
        return ctrl.to(device=dev)
    if elbo != "mc":
        raise ValueError(f"elbo must be 'closed' or 'mc', got {elbo!r}")
    torch.manual_seed(seed)
    ctrl = fs.AffineControl(fs.euler_steps(t.cpu(), dt), 1, K).to(device=dev, dtype=t.dtype)
    return train(ctrl, t, y, obs_sd, H, K, dt, steps, paths, lr, log_every)


def train(ctrl, t, y, obs_sd, H, K, dt, steps, paths, lr, log_every=0):
    """Adam (cosine decay to a tenth) on the Monte Carlo ELBO of the bridge,
    E_Q log N(y; X(1), obs_sd^2) - E_Q path KL, ``paths`` posterior paths per step."""
    opt = torch.optim.Adam(ctrl.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr / 10)
    x0 = torch.zeros(paths, 1, device=t.device, dtype=t.dtype)
    yt = torch.tensor(y, device=t.device, dtype=t.dtype)
    for step in range(steps):
        xs, kl, _ = fs.simulate(t, x0, 0.0, 1.0, H, K=K, kind=2, dt=dt, control=ctrl)
        elbo = (torch.distributions.Normal(xs[-1, :, 0], obs_sd).log_prob(yt) - kl).mean()
        opt.zero_grad()
        (-elbo).backward()
        opt.step()
        sched.step()
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"  step {step:5d}  elbo {elbo.item():8.3f}  kl {kl.mean().item():7.3f}",
                  flush=True)
    return ctrl


def fit(t, y, obs_sd, H, K, dt, steps, paths, lr, hidden, seed, dev, log_every=0):
    """The network control (``fs.Control``, zero-initialised), trained by :func:`train`."""
    torch.manual_seed(seed)
    ctrl = fs.Control(1, K, hidden, n_freq=6).to(dev)
    return train(ctrl, t, y, obs_sd, H, K, dt, steps, paths, lr, log_every)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--H", type=float, default=0.7)
    ap.add_argument("--K", type=int, default=5)
    ap.add_argument("--y", type=float, default=1.0, help="the observed endpoint value")
    ap.add_argument("--obs-sd", type=float, default=0.1)
    ap.add_argument("--n", type=int, default=100, help="time steps on [0, 1]")
    ap.add_argument("--steps", type=int, default=1500, help="optimiser steps (size knob)")
    ap.add_argument("--paths", type=int, default=64, help="paths per step")
    ap.add_argument("--eval-paths", type=int, default=4000)
    ap.add_argument("--lr", type=float, default=None,
                    help="Adam learning rate (default 3e-3 network, 0.3 affine)")
    ap.add_argument("--control", default="network", choices=["network", "affine"])
    ap.add_argument("--elbo", default="mc", choices=["closed", "mc"],
                    help="affine control: the closed-form optimum or Adam on the MC ELBO")
    ap.add_argument("--hidden", default="64,64")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=250)
    ap.add_argument("--png", default="fbm_bridge.png")
    add_run_args(ap)
    args = ap.parse_args(argv)
    dev = setup_run(ap, args)
    affine = args.control == "affine"
    tc = torch.linspace(0.0, 1.0, args.n + 1, dtype=torch.float64)
    H, K = args.H, args.K
    if affine:
        # the affine control has one set of coefficients per Euler step, so the solve runs
        # in float64 on a dt that divides the grid exactly (dt <= 0.25 / gamma_max): float32
        # times, or default_dt's round-off gap, add a sliver step at the end
        t = tc.to(dev)
        dt = 1.0 / (args.n * math.ceil(4 * 20.0 / args.n))
        hurst = torch.tensor(H, dtype=torch.float64)
    else:
        t = tc.to(device=dev, dtype=torch.get_default_dtype())
        dt = fs.default_dt(t, 20.0)
        hurst = H
    g = mafbm.gamma_grid(K)
    w, eps = mafbm.omega(H, g, 1.0, 2)
    lr = args.lr if args.lr is not None else (0.3 if affine else 3e-3)
    how = (f"{args.control} control, closed-form optimum" if affine and args.elbo == "closed"
           else f"{args.control} control, {args.steps} steps x {args.paths} paths, lr {lr}")
    print(f"H = {H}, K = {K} (eps {float(eps):.1e}), dt = {dt:.4g}, obs_sd = {args.obs_sd}, "
          f"y = {args.y}, {how}, device {dev}", flush=True)

    torch.manual_seed(args.seed)   # the closed form draws nothing before the eval paths
    t0 = time.perf_counter()
    if affine:
        ctrl = fit_affine(t, args.y, args.obs_sd, hurst, K, dt, args.elbo, args.steps, args.paths,
                          lr, args.seed, dev, args.log_every)
    else:
        hidden = tuple(int(h) for h in args.hidden.split(","))
        ctrl = fit(t, args.y, args.obs_sd, H, K, dt, args.steps, args.paths, lr, hidden,
                   args.seed, dev, args.log_every)
    fit_s = time.perf_counter() - t0
    with torch.no_grad():
        xs = []
        for _ in range(math.ceil(args.eval_paths / 1000)):
            x, _, _ = fs.simulate(t, torch.zeros(1000, 1, device=dev, dtype=t.dtype), 0.0, 1.0,
                                  hurst, K=K, kind=2, dt=dt, control=ctrl)
            xs.append(x[:, :, 0].double().cpu())
        xs = torch.cat(xs, 1)[:, :args.eval_paths]
    n_eval = xs.shape[1]
    vi_mean, vi_var = xs.mean(1), xs.var(1)

    prior_var, prior_cross = euler_moments(tc, w, g, dt)
    refs = {"euler": conditional(prior_var, prior_cross, args.y, args.obs_sd)}
    C_fbm = torch.zeros(len(tc), len(tc), dtype=torch.float64)   # B(0) = 0
    C_fbm[1:, 1:] = mafbm.fbm_cov(tc[1:], H, 2)
    for name, C in (("mafbm", mafbm.mafbm_cov(tc, w, g, 2)), ("fbm", C_fbm)):
        refs[name] = conditional(C.diag(), C[:, -1], args.y, args.obs_sd)
    keep = tc >= 0.1 - 1e-9
    se = math.sqrt(2.0 / (n_eval - 1))

    def compare(mean_a, var_a, mean_b, var_b, mc):
        rel = ((var_a - var_b).abs() / var_b)[keep]
        return {"max_rel_err": float(rel.max()), "mean_rel_err": float(rel.mean()),
                "mc_se": mc, "mean_abs_err": float((mean_a - mean_b).abs().max())}

    rows = {f"vi_vs_{k}": compare(vi_mean, vi_var, *refs[k], se) for k in refs}
    rows["euler_vs_fbm"] = compare(*refs["euler"], *refs["fbm"], 0.0)
    rows["vi_vs_euler"]["fit_s"] = fit_s
    if affine:
        system = fs._linear_system(tc, bridge_data(tc, args.y), 0.0, 1.0, hurst, K, 2, 20.0,
                                   None, dt, torch.float64, "cpu", "fbm_bridge")
        mm, mv = affine_moments(ctrl, system)
        # each output time's Euler point (the solver's own lookup, round-off tolerant)
        at = torch.tensor(sorted(system["obs_at"], key=system["obs_at"].get))
        rows["moments_vs_euler"] = compare(mm[at], mv[at], *refs["euler"], 0.0)
        tiny = torch.tensor(1e-9, dtype=torch.float64)
        zero = torch.zeros((), dtype=torch.float64)
        # X(0) = 0 is fixed: q(x0) = p(x0) = N(0, tiny^2) adds no KL and no variance
        out = fs.moment_elbo(tc, bridge_data(t, args.y), args.obs_sd, 0.0, 1.0, hurst,
                             copy.deepcopy(ctrl).to(device="cpu", dtype=torch.float64), zero,
                             tiny, torch.distributions.Normal(zero, tiny), K=K, dt=dt)
        logp = torch.distributions.Normal(0.0, (prior_var[-1] + args.obs_sd ** 2).sqrt()
                                          ).log_prob(torch.tensor(args.y, dtype=torch.float64))
        rows["moments_vs_euler"]["elbo_gap"] = float(logp - out["elbo"][0].detach())

    cols = ["max_rel_err", "mean_rel_err", "mc_se", "mean_abs_err"]
    report(rows, cols + (["elbo_gap"] if affine else []), args.json)
    print(f"fit {fit_s:.1f} s", flush=True)

    if args.png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
        ax[0].plot(tc, vi_var, "k-", lw=2, label=f"VI posterior ({n_eval} paths, "
                   f"{args.control})")
        ax[0].fill_between(tc, vi_var * (1 - 2 * se), vi_var * (1 + 2 * se), color="0.8")
        for k, style in (("euler", "r--"), ("mafbm", "b:"), ("fbm", "g-.")):
            ax[0].plot(tc, refs[k][1], style, label=f"exact, {k} prior")
        ax[0].set(xlabel="t", ylabel="Var(X_t | y)", title=f"fBM bridge, H = {H}")
        ax[0].legend(fontsize=8)
        ax[1].plot(tc, xs[:, :20], color="0.7", lw=0.5)
        ax[1].plot(tc, vi_mean, "k-", lw=2, label="VI mean")
        ax[1].plot(tc, refs["euler"][0], "r--", label="exact mean (euler prior)")
        ax[1].plot([1.0], [args.y], "ro", label="observation")
        ax[1].set(xlabel="t", ylabel="X_t", title="posterior paths")
        ax[1].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.png, dpi=120)
        print(f"wrote {args.png}")
    return rows


if __name__ == "__main__":
    main()
