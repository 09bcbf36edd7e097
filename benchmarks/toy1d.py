"""The reference 1-D toy of Tran et al. (METHODS.md §1): GP data with a gap, FG vs GP-matched
priors on a tanh MLP, posteriors by adaptive SGHMC.

Data: 64 inputs uniform on [-10, -4] ∪ [4, 10] (a gap of 40% of [-10, 10]), targets a draw
of GP(0, RBF(ℓ = 1.8, σ² = 1.6)) plus N(0, 0.1) noise; inputs and targets are standardised
with their own statistics. Each prior is a BDL program compiled with ``ppl.compile`` in
which only the line ``f ~ PRIOR`` changes; the GP-matched priors (GPiG, GPiH) are fitted to
GP(0, RBF(ℓ = 0.6, σ² = 1)) on a grid over [-6, 6] (standardised x, the reference's), and
the posterior is sampled with fixed noise variance 0.1 (the reference's). Reported per
prior: training RMSE of the predictive mean and RMSE against the true function inside the
gap (original units), the W1 distance of the prior's functions to the GP's at the
measurement grid by a fresh critic, matching and sampling time, and R-hat of predictions.
The W1 curve during matching (the warm-started critic's estimate per outer step), prior
bands (GP, FG, GP-matched) and posterior bands are saved as PNGs under ``--out``.

    python benchmarks/toy1d.py --size small --out /tmp/toy1d --json /tmp/toy1d.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from pyro.ops.stats import split_gelman_rubin

import ppl
from ppl.runtime import network_priors as npr
from ppl.runtime.kernels import RBF

sys.path.insert(0, str(Path(__file__).resolve().parent))
from uci_bnn import prior_source  # noqa: E402  (the same `f ~ PRIOR` lines as the UCI runs)

SIZES = {
    # network, matching (grid points, function samples, outer steps, critic steps after the
    # first, critic steps at the first, RMSprop lr), SGHMC (chains, burn-in, thin, kept, dropped)
    "tiny": dict(hidden=[20], points=40, fsamples=64, steps=30, critic_steps=5,
                 critic_init=50, lr=0.1, chains=2, warmup=200, thin=10, samples=10, drop=2),
    "small": dict(hidden=[50, 50, 50], points=100, fsamples=128, steps=300, critic_steps=10,
                  critic_init=200, lr=0.1, chains=2, warmup=1500, thin=50, samples=30, drop=5),
    # the reference's matching (METHODS §1: 200-point grid, 512 samples, 800 outer steps,
    # RMSprop lr 0.01, psi starting at its raw rho = 1, i.e. sigma = softplus(1)) with the
    # warm critic (1000 steps at the first outer step, then 5 on that step's own network
    # draws) in place of 1000 fresh critic steps per outer step; the reference's SGHMC
    "paper": dict(hidden=[50, 50, 50], points=200, fsamples=512, steps=800, critic_steps=5,
                  critic_init=1000, lr=0.01, init_scale=npr.REFERENCE_INIT_SCALE,
                  share_samples=True, chains=4, warmup=2000, thin=200, samples=40, drop=10),
}
DATA_KERNEL = dict(lengthscale=1.8, variance=1.6)
PRIOR_KERNEL = dict(lengthscale=0.6, variance=1.0)
NOISE_VAR = 0.1

SOURCE = """
model Toy1D(x: real[N, 1], y: real[N], x_meas: real[M, 1], x_new: real[K, 1]) {
  f = mlp(1, HIDDEN, 1, act=tanh)
  f ~ PRIOR
  plate N batch 32 {
    y ~ Normal(f(x)[:, 0], NOISE)
  }
  mu_train = f(x)[:, 0]
  mu_new = f(x_new)[:, 0]
}
"""


def make_data(seed: int, n: int = 64) -> dict:
    """64 noisy draws of a GP on [-10, 10] with a 40% gap ([-4, 4]), and the true function
    on a dense grid (float64, CPU)."""
    g = torch.Generator().manual_seed(seed)
    side = torch.rand(n, generator=g, dtype=torch.float64) * 6 + 4
    sign = torch.where(torch.arange(n) % 2 == 0, -1.0, 1.0).double()
    x = torch.sort(side * sign).values
    grid = torch.linspace(-12, 12, 241, dtype=torch.float64)
    both = torch.cat([x, grid])
    k = RBF(**DATA_KERNEL)(both.unsqueeze(-1))
    chol = torch.linalg.cholesky(k + 1e-8 * torch.eye(len(both), dtype=torch.float64))
    f = chol @ torch.randn(len(both), generator=g, dtype=torch.float64)
    y = f[:n] + math.sqrt(NOISE_VAR) * torch.randn(n, generator=g, dtype=torch.float64)
    return {"x": x, "y": y, "f": f[:n], "grid": grid, "f_grid": f[n:]}


def fresh_w1(psi: dict, family: str, sizes: list[int], xm: torch.Tensor, steps: int,
             seed: int, bag: int = 4096, eval_n: int = 2000, min_shape: float = 0.0) -> float:
    """W1(GP, prior) at the measurement grid xm by a critic trained from scratch
    (``npr.estimate_w1``, 256 samples a step, Adagrad lr 0.02).

    The prior's functions are drawn once, ``bag`` for training (minibatches resampled from
    it) and ``eval_n`` held out for the estimate: at 200 points and a 3x50 net one draw of
    the network costs far more than a critic step. GP draws are fresh at every step."""
    g = torch.Generator(device=xm.device).manual_seed(seed)
    kernel = RBF(**PRIOR_KERNEL)
    draw_gp = npr.gp_sampler(kernel, xm)
    with torch.no_grad():
        draws = torch.cat([
            npr.forward(xm, npr.prior_weights(psi, family, sizes, 512, g, min_shape),
                        torch.tanh)[..., 0]
            for _ in range(math.ceil((bag + eval_n) / 512))])
    train, held = draws[:bag], draws[bag:bag + eval_n]

    def p(n):
        return train[torch.randint(bag, (n,), generator=g, device=xm.device)]
    return npr.estimate_w1(p, lambda n: draw_gp(n, g), xm.shape[0], steps=steps, n=256,
                           lr=0.02, seed=seed, eval_n=eval_n, dtype=xm.dtype,
                           device=xm.device, eval_p=lambda n: held[:n])


def run_prior(name: str, s: dict, data: dict, device: str, seed: int, eta: float,
              sample: bool = True) -> dict:
    """Compile the toy's BDL program with prior ``name``; fit it by SGHMC (matching the GP
    first for gpig/gpih), or with ``sample=False`` only draw from its prior (which runs
    the matching through the same program)."""
    src = (SOURCE.replace("HIDDEN", str(s["hidden"]))
           .replace("PRIOR", prior_source(
               name, s, seed, f"rbf(lengthscale={PRIOR_KERNEL['lengthscale']}, "
               f"variance={PRIOR_KERNEL['variance']})", inputs="x_meas", measure="grid",
               points=s["points"], lr=s["lr"]))
           .replace("NOISE", f"{math.sqrt(NOISE_VAR):.6g}"))
    model = ppl.compile(src)
    npr._MEMO.clear()
    fit = None
    if sample:
        fit = model.fit(data, infer="sghmc", chains=s["chains"], warmup=s["warmup"],
                        thin=s["thin"], samples=s["samples"], drop=s["drop"], step_size=eta,
                        friction=0.05, adaptive=True, seed=seed, dtype="float32",
                        device=device)
    prior = model.sample_prior(data, num_samples=200, seed=seed, dtype="float32",
                               device=device)["mu_new"]
    matched = list(npr._MEMO.values())
    fit_s = sum(r.get("fit_s", 0.0) for r in matched)
    out = {"fit": fit, "prior_mu": prior.reshape(prior.shape[0], -1).cpu().double(),
           "fit_s": fit_s, "sample_s": fit.wall_time - fit_s if fit else float("nan")}
    if matched:
        out["w1_trace"] = matched[0]["w1"]
        out["psi"] = matched[0]["psi"]
        out["psi_trace"] = matched[0]["psi_trace"]
        out["skipped"] = matched[0]["skipped"]
    return out


def _bands(ax, xs, draws: torch.Tensor, color, label, noise=0.0, n_lines=0):
    """Mean and ±2 s.d. of function draws [S, K] (plus ``noise`` variance), and a few draws."""
    draws = draws.detach().double().cpu()
    mu, sd = draws.mean(0).numpy(), (draws.var(0) + noise).sqrt().numpy()
    ax.fill_between(xs, mu - 2 * sd, mu + 2 * sd, color=color, alpha=0.25,
                    label=f"{label} ±2 s.d.")
    ax.plot(xs, mu, color=color, lw=1.5)
    for d in draws[:n_lines].numpy():
        ax.plot(xs, d, color=color, lw=0.6, alpha=0.6)


def plots(out: Path, res: dict, data: dict, std: dict, xs_new: torch.Tensor,
          gp_draws: torch.Tensor, w1_fresh: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    colors = {"gp": "tab:green", "fg": "tab:blue", "gpig": "tab:red", "gpih": "tab:purple"}
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, r in res.items():
        if "w1_trace" in r:
            ax.plot(r["w1_trace"], color=colors[name], lw=0.8, alpha=0.6,
                    label=f"{name}: warm-started critic (the fit's own estimate)")
            steps, vals = zip(*r["w1_curve"], strict=True)
            ax.plot(steps, vals, "o-", color=colors[name],
                    label=f"{name}: fresh critic at psi after k steps")
    ax.axhline(w1_fresh["fg"], color=colors["fg"], ls="--", label="fg prior: fresh critic")
    ax.set_xlabel("outer step")
    ax.set_ylabel("W1 estimate")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "w1_curve.png", dpi=120)
    plt.close(fig)

    xs = xs_new.numpy()
    panels = [("gp", gp_draws)] + [(n, r["prior_mu"]) for n, r in res.items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3), sharey=True)
    for ax, (name, draws) in zip(axes, panels, strict=True):
        _bands(ax, xs, draws, colors[name], name, n_lines=5)
        ax.set_title(f"prior: {name}")
        ax.set_xlabel("x (standardised)")
    fig.tight_layout()
    fig.savefig(out / "prior_bands.png", dpi=120)
    plt.close(fig)

    if any(r["fit"] is None for r in res.values()):  # --match-only: no posterior
        return
    xr = xs * std["xs"] + std["xm"]
    fig, axes = plt.subplots(1, len(res), figsize=(4 * len(res), 3.2), sharey=True)
    for ax, (name, r) in zip(np.atleast_1d(axes), res.items(), strict=True):
        draws = r["fit"].samples["mu_new"].cpu().double() * std["ys"] + std["ym"]
        _bands(ax, xr, draws, colors[name], name, noise=NOISE_VAR * std["ys"] ** 2)
        ax.plot(data["grid"], data["f_grid"], color="k", lw=0.8, label="true f")
        ax.scatter(data["x"], data["y"], s=6, color="k")
        ax.set_title(f"posterior: {name}")
        ax.set_xlabel("x")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "posterior_bands.png", dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--priors", default="fg,gpig", help="comma list of fg, gpig, gpih")
    ap.add_argument("--step-size", type=float, default=0.05, help="SGHMC eta (adaptive)")
    ap.add_argument("--w1-steps", type=int, default=300,
                    help="training steps of the fresh critic that measures W1 after fitting")
    ap.add_argument("--curve-points", type=int, default=6,
                    help="fresh-critic W1 measurements along the matching (plus the ends)")
    ap.add_argument("--gpih-min-shape", type=float, default=0.0,
                    help="GPiH's IG shape floor: alpha = floor + softplus(raw) (0: the "
                         "reference's family)")
    ap.add_argument("--match-only", action="store_true",
                    help="fit the GP-matched priors and measure W1, without SGHMC")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--out", default=None, help="folder for the PNGs (none: no plots)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("toy1d: --device cuda was asked for, but CUDA is not available here")
    torch.set_num_threads(a.threads)
    if "BDL_CACHE_DIR" not in os.environ:
        os.environ["BDL_CACHE_DIR"] = tempfile.mkdtemp(prefix="toy1d_")
    s = SIZES[a.size]
    raw = make_data(a.seed)
    std = {"xm": float(raw["x"].mean()), "xs": float(raw["x"].std()),
           "ym": float(raw["y"].mean()), "ys": float(raw["y"].std())}
    xs_new = (torch.linspace(-12, 12, 121, dtype=torch.float64) - std["xm"]) / std["xs"]
    x_meas = torch.linspace(-6, 6, s["points"], dtype=torch.float64)
    data = {"x": ((raw["x"] - std["xm"]) / std["xs"]).unsqueeze(-1),
            "y": (raw["y"] - std["ym"]) / std["ys"],
            "x_meas": x_meas.unsqueeze(-1), "x_new": xs_new.unsqueeze(-1)}
    sizes = [1] + s["hidden"] + [1]
    xm_dev = x_meas.to(device=a.device, dtype=torch.float32).unsqueeze(-1)
    print(f"toy1d: size {a.size}, priors {a.priors}, device {a.device}, "
          f"{torch.get_num_threads()} torch thread(s)", file=sys.stderr)
    res, rows, w1 = {}, {}, {}
    psi_fg = npr._init_psi(len(sizes) - 1, "gaussian", torch.float32, a.device)
    t0 = time.perf_counter()
    w1["fg"] = fresh_w1(psi_fg, "gaussian", sizes, xm_dev, a.w1_steps, a.seed + 100)
    w1_s = time.perf_counter() - t0
    # true function inside the gap, for the gap RMSE
    in_gap = raw["grid"].abs() < 4
    gap_x = ((raw["grid"][in_gap] - std["xm"]) / std["xs"]).unsqueeze(-1)
    for name in a.priors.split(","):
        s_prior = dict(s, min_shape=a.gpih_min_shape) if name == "gpih" and a.gpih_min_shape \
            else s
        r = run_prior(name, s_prior, data, a.device, a.seed, a.step_size,
                      sample=not a.match_only)
        res[name] = r
        row = {}
        fit = r["fit"]
        if fit is not None:
            mu_tr = fit.samples["mu_train"].double().mean(0).cpu() * std["ys"] + std["ym"]
            row["train_rmse"] = float((mu_tr - raw["y"]).pow(2).mean().sqrt())
            n_layers = len(sizes) - 1
            weights = [(fit.samples[f"f.W{i}"], fit.samples[f"f.b{i}"])
                       for i in range(n_layers)]
            with torch.no_grad():
                f_gap = npr.forward(gap_x.to(device=a.device, dtype=torch.float32), weights,
                                    torch.tanh)[..., 0].double().cpu() * std["ys"] + std["ym"]
            row["gap_rmse"] = float((f_gap.mean(0) - raw["f_grid"][in_gap]).pow(2).mean().sqrt())
        if name != "fg":
            family = "gaussian" if name == "gpig" else "hierarchical"
            floor = s_prior.get("min_shape", 0.0)

            def w1_at(psi, family=family, floor=floor):
                return fresh_w1(psi, family, sizes, xm_dev, a.w1_steps, a.seed + 100,
                                min_shape=floor)
            w1[name] = w1_at(r["psi"])
            # W1 along the way: psi after k outer steps, measured by the same fresh critic
            n_steps = len(r["w1_trace"])
            # geometric spacing: most of the fall happens in the first tens of steps
            at = sorted({round(n_steps ** (j / a.curve_points)) for j in range(1, a.curve_points)}
                        - {0, n_steps})
            start = s.get("init_scale", 1.0) == 1.0 and family == "gaussian"
            r["w1_curve"] = [(0, w1["fg"] if start else w1_at(
                {k: v[0] for k, v in r["psi_trace"].items()}))]
            r["w1_curve"] += [(k, w1_at({n: v[k] for n, v in r["psi_trace"].items()}))
                              for k in at] + [(n_steps, w1[name])]
        row.update(w1=w1[name], w1_drop=w1["fg"] / w1[name], fit_s=r["fit_s"],
                   sample_s=r["sample_s"])
        if fit is not None:
            rhat = split_gelman_rubin(fit.chains["mu_train"], chain_dim=0, sample_dim=1)
            row["rhat_max"] = float(rhat.max())
        if "w1_trace" in r:
            tr = r["w1_trace"]
            row["skipped_steps"] = r["skipped"]
            # the fall from the fit's own starting prior (the reference's ratio; equal to
            # w1_drop when the fit starts at FG)
            row["w1_start"] = r["w1_curve"][0][1]
            row["w1_drop_start"] = row["w1_start"] / w1[name]
            row.update(w1_trace_first=tr[0], w1_trace_last=float(np.nanmean(tr[-10:])),
                       s_per_outer_step=r["fit_s"] / len(tr),
                       **{f"w1_at_{k}": v for k, v in r["w1_curve"]})
        rows[name] = row
        print(f"{name}: {json.dumps(row)}", file=sys.stderr, flush=True)
        if a.json:  # after every prior, so a long run that stops early keeps what it has
            Path(a.json).write_text(json.dumps(rows, indent=2))
    cols = ["train_rmse", "gap_rmse", "w1", "w1_drop", "fit_s", "sample_s", "rhat_max"]
    print("| prior | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.3f}" if c in row else "-" for c in cols)
              + " |")
    for name, row in rows.items():
        if "w1_trace_first" in row:
            print(f"{name}: W1 trace (warm critic) first {row['w1_trace_first']:.2f}, last-10 "
                  f"mean {row['w1_trace_last']:.2f}; fresh critic FG {w1['fg']:.2f} -> "
                  f"{row['w1']:.2f} ({row['w1_drop']:.2f}x), from the fit's start "
                  f"{row['w1_start']:.2f} ({row['w1_drop_start']:.2f}x); "
                  f"{row['s_per_outer_step']:.3f} s per outer step; fresh-critic W1 along "
                  f"the fit: " + ", ".join(f"{k}: {v:.2f}" for k, v in res[name]["w1_curve"]))
    print(f"(fresh-critic W1 of FG took {w1_s:.1f} s)", file=sys.stderr)
    if a.out:
        kernel = RBF(**PRIOR_KERNEL)
        g = torch.Generator().manual_seed(a.seed)
        gp_draws = npr.gp_sampler(kernel, xs_new.unsqueeze(-1))(200, g)
        plots(Path(a.out), res, raw, std, xs_new, gp_draws, w1)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
