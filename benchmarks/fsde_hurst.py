"""Recovery of the Hurst index by path-space VI of a fractional SDE (issue 5; METHODS.md s2).

    python benchmarks/fsde_hurst.py --synthetic [--n 100] [--steps 600] [--json OUT]
    python benchmarks/fsde_hurst.py --series CSV --column NAME [--steps N] [--json OUT]

``--synthetic`` simulates fractional Ornstein-Uhlenbeck paths dX = -theta X dt + sigma dB^H
(exact type II fBM by Cholesky on a 4x finer grid, Euler for the OU part) for
H in {0.3, 0.5, 0.7, 0.85}, then fits the model

    x0 ~ N(0, 1);  dX = -theta (X - mu) dt + sigma dB_hat^H (MA-fBM, type II, K = 5);
    y_i ~ N(X(t_i), obs_sd)

by maximising the ELBO of METHODS.md section 2 (data log-likelihood - KL(q(x0)||p(x0)) -
E 1/2 int |u|^2 dt) jointly over the control network, theta, mu, sigma and H (sigmoid, start
0.5, held there for the first ``--warmup`` fraction of the steps), with ``--paths``
posterior paths per step (ppl.runtime.fractional_sde.simulate, the same SDE the
``fractional_sde`` construct solves; the control network sees the data features of
``fractional_sde(..., data=y)``, and obs_sd = 0.05 in standardised units). The series is
standardised and time rescaled to [0, 1]. ``h_sd`` is the spread of the learned H over
``--seeds`` independent fits (H is a point estimate in this method, so this is an
optimisation spread, not a posterior sd). Beside it: R/S, DFA-1 and local Whittle
estimates from the increments.
JSON rows ``h=0.30``... or ``series``; columns true_h, learned_h, h_sd, rs_h, dfa_h, whittle_h.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time

import numpy as np
import torch
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
             fine: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """fOU on [0, 1] at n points: exact type II fBM (Cholesky) on a fine grid, Euler."""
    g = torch.Generator().manual_seed(seed)
    m = n * fine
    tf = torch.linspace(1.0 / m, 1.0, m, dtype=torch.float64)
    B = mafbm.sample_fbm_cholesky(tf, H, 1, kind=2, generator=g)[0]
    dB = torch.diff(torch.cat([torch.zeros(1, dtype=torch.float64), B]))
    x = torch.zeros(m + 1, dtype=torch.float64)
    x[0] = torch.randn(1, generator=g, dtype=torch.float64)[0] * 0.5
    h = 1.0 / m
    for k in range(m):
        x[k + 1] = x[k] - theta * x[k] * h + sigma * dB[k]
    idx = np.linspace(0, m, n).round().astype(int)
    return np.linspace(0, 1, n), x.numpy()[idx]


# ---- the fit --------------------------------------------------------------------
def fit_hurst(t: np.ndarray, y: np.ndarray, steps: int, paths: int, seed: int, K: int = 5,
              kind: int = 2, obs_sd: float = 0.05, lr: float = 3e-3, hidden=(64, 64),
              log_every: int = 0, warmup: float = 0.3) -> float:
    """Path-space VI of the fOU model above; returns the learned H. For the first
    ``warmup`` fraction of the steps H stays at 0.5: with an untrained control the
    likelihood of prior-like paths pulls H towards smaller path variance."""
    torch.manual_seed(seed)
    tt = torch.tensor((t - t[0]) / (t[-1] - t[0]), dtype=torch.float32)
    yt = torch.tensor((y - y.mean()) / y.std(), dtype=torch.float32)
    ctrl = fs.Control(1, K, hidden, n_freq=6, data=True)
    ctrl.set_data(tt, yt[:, None])
    raw = {k: torch.zeros((), requires_grad=True) for k in ("h", "theta", "mu", "sigma")}
    x0_loc = torch.tensor(float(yt[0]), requires_grad=True)
    x0_lsd = torch.tensor(math.log(obs_sd), requires_grad=True)
    params = [*ctrl.parameters(), *raw.values(), x0_loc, x0_lsd]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr / 10)
    prior = torch.distributions.Normal(0.0, 1.0)
    for step in range(steps):
        H = torch.sigmoid(raw["h"]).clamp(0.01, 0.99)
        theta = torch.nn.functional.softplus(raw["theta"] + 1.0)
        sigma = torch.nn.functional.softplus(raw["sigma"] + 0.5)
        mu = raw["mu"]
        q0 = torch.distributions.Normal(x0_loc, x0_lsd.exp())
        x0 = q0.rsample((paths, 1))
        def drift(x, s, th=theta, m=mu):
            return -th * (x - m)

        paths_, kl, _ = fs.simulate(tt, x0, drift, sigma, H, K=K, kind=kind, control=ctrl)
        ll = torch.distributions.Normal(paths_[:, :, 0], obs_sd).log_prob(yt[:, None]).sum(0)
        kl0 = torch.distributions.kl_divergence(q0, prior)
        elbo = (ll - kl).mean() - kl0
        opt.zero_grad()
        (-elbo / len(tt)).backward()
        if step < warmup * steps:   # H frozen while the control learns to track the data
            raw["h"].grad = None
        opt.step()
        sched.step()
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"  step {step:4d}  elbo {elbo.item():9.2f}  kl {kl.mean().item():8.2f}  "
                  f"H {H.item():.3f}  theta {theta.item():.2f}  sigma {sigma.item():.2f}",
                  flush=True)
    return float(torch.sigmoid(raw["h"]))


def classical(y: np.ndarray) -> dict:
    x = np.diff(y)
    return {"rs_h": rs_hurst(x), "dfa_h": dfa_hurst(x), "whittle_h": whittle_hurst(x)}


def run_row(t, y, true_h, args) -> dict:
    hs = []
    for s in range(args.seeds):
        t0 = time.perf_counter()
        hs.append(fit_hurst(t, y, args.steps, args.paths, seed=s, lr=args.lr,
                            log_every=args.log_every, warmup=args.warmup))
        print(f"  seed {s}: H = {hs[-1]:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    row = {"true_h": true_h, "learned_h": float(np.mean(hs)),
           "h_sd": float(np.std(hs, ddof=1)) if len(hs) > 1 else float("nan")}
    row.update(classical(y))
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--series", help="CSV file with one column to fit")
    ap.add_argument("--column", help="column of --series")
    ap.add_argument("--hs", default="0.3,0.5,0.7,0.85", help="synthetic Hurst indices")
    ap.add_argument("--n", type=int, default=100, help="points per synthetic series")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--paths", type=int, default=16, help="posterior paths per step")
    ap.add_argument("--seeds", type=int, default=2, help="independent fits per series")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=float, default=0.3, help="fraction of steps with H fixed")
    ap.add_argument("--log-every", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write {row: {column: number}} here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.synthetic and not args.series:
        ap.error("give --synthetic or --series CSV --column NAME")
    out = {}
    if args.synthetic:
        for i, H in enumerate(float(h) for h in args.hs.split(",")):
            t, y = make_fou(H, args.n, seed=100 + i)
            print(f"h={H:.2f}", flush=True)
            out[f"h={H:.2f}"] = run_row(t, y, H, args)
    if args.series:
        with open(args.series) as f:
            rows = list(csv.DictReader(f))
        col = args.column or [k for k in rows[0] if k][-1]
        y = np.array([float(r[col]) for r in rows if r[col] not in ("", "NA")])
        t = np.linspace(0, 1, len(y))
        print(f"series {args.series}:{col} ({len(y)} points)", flush=True)
        out["series"] = run_row(t, y, float("nan"), args)
    cols = ["true_h", "learned_h", "h_sd", "rs_h", "dfa_h", "whittle_h"]
    print("| row | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for k, r in out.items():
        print(f"| {k} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")
    if args.json:  # NaN (no truth, one seed) is written as null: strict JSON
        clean = {k: {c: (None if isinstance(v, float) and math.isnan(v) else v)
                     for c, v in r.items()} for k, r in out.items()}
        with open(args.json, "w") as f:
            json.dump(clean, f, indent=2)
    return out


if __name__ == "__main__":
    main()
