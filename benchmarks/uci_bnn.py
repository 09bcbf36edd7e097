"""UCI regression with Bayesian neural networks under four priors, sampled by SGHMC.

Protocol (METHODS.md §1, ../shared/data/README.md): for each split, standardise inputs and
targets with training statistics, place the prior on a one-hidden-layer tanh MLP, sample
the posterior with adaptive SGHMC (minibatches of 32 through the model's plate), predict
the test targets and report, in original units, test RMSE of the predictive mean and the
test log-likelihood of the full predictive mixture (1/S sum_s N(y | f_s(x), sigma_n^2)),
mean ± standard error over splits. Priors: fg (fixed Gaussian), fh (fixed hierarchical),
gpig / gpih (matched to an RBF GP with lengthscale sqrt(2 D), variance 1, measurement
sets of 70% training inputs + 30% uniform in their box). R-hat of the test predictions
across chains is printed too. The models are BDL source;
`f ~ PRIOR` is the only line that changes. Budgets: tiny (CI smoke), small, medium (the
reference's 4 chains x (2000 + 40 draws) thinned by 100 instead of 2000), paper. With fg
and gpig both run, a per-split table says on how many splits GPiG beats FG.

    python benchmarks/uci_bnn.py --data ../shared/data/uci/concrete --splits 1 \\
        --priors fg,fh,gpig,gpih --budget small --json /tmp/uci_bnn.json

Long budgets run split by split (``--first-split K --splits 1 --json sK.json``, seed SEED+K
as in a whole run) and are combined with ``--merge s0.json s1.json ... --json all.json``.
Test log-likelihood is reported twice: ``ll`` of the full predictive mixture and
``ll_moment`` of the moment-matched Gaussian (the reference's score).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from pyro.ops.stats import split_gelman_rubin

import ppl
from ppl.runtime import network_priors as npr

BUDGETS = {
    # hidden units, matching (outer steps, critic steps after the first, first critic
    # steps, function samples), SGHMC (chains, burn-in, thin, kept draws, dropped, eta,
    # friction alpha)
    "tiny": dict(hidden=10, steps=5, critic_steps=2, critic_init=5, fsamples=16,  # CI smoke
                 chains=2, warmup=40, thin=2, samples=6, drop=1, eta=0.05, friction=0.05),
    "small": dict(hidden=50, steps=100, critic_steps=5, critic_init=50, fsamples=128,
                  chains=2, warmup=1000, thin=25, samples=20, drop=4, eta=0.05,
                  friction=0.05),
    # between small and paper (4 chains as the reference, 1/8 of its steps per chain;
    # affordable on 2 shared cores since the chains move in one batched step)
    "medium": dict(hidden=50, steps=100, critic_steps=5, critic_init=50, fsamples=128,
                   chains=4, warmup=2000, thin=100, samples=40, drop=10, eta=0.05,
                   friction=0.05),
    "paper": dict(hidden=100, steps=200, critic_steps=20, critic_init=200, fsamples=128,
                  chains=4, warmup=2000, thin=2000, samples=40, drop=10, eta=0.01,
                  friction=0.01),
}

SOURCE = """
model UCIBNN(x: real[N, D], y: real[N]) {
  f = mlp(D, [HIDDEN], 1, act=tanh)
  f ~ PRIOR
  plate N batch 32 {
    y ~ Normal(f(x)[:, 0], NOISE)
  }
}
"""


def prior_source(name: str, b: dict, seed: int, kernel: str, inputs: str = "x",
                 measure: str = "data", points: int = 100, lr: float = 0.05) -> str:
    """The right-hand side of ``f ~ ...`` for prior ``name`` (fg, fh, gpig, gpih); the GP
    priors match ``kernel`` (BDL source) at measurement sets built from ``inputs``, with
    the budget ``b``'s matching settings."""
    if name == "fg":
        return "gaussian_prior(1)"
    if name == "fh":
        return "hierarchical_prior(1, 1)"
    family = {"gpig": "gaussian", "gpih": "hierarchical"}[name]
    return (f"gp_prior({kernel}, inputs={inputs}, "
            f'family="{family}", steps={b["steps"]}, samples={b["fsamples"]}, '
            f'points={points}, critic_steps={b["critic_steps"]}, '
            f'critic_init_steps={b["critic_init"]}, lr={lr}, measure="{measure}", seed={seed}'
            + "".join(f", {k}={str(b[k]).lower() if isinstance(b[k], bool) else b[k]}"
                      for k in ("critic_lr", "init_scale", "share_samples", "min_shape")
                      if k in b)
            + ")")


def load(folder: Path, split: int):
    data = np.loadtxt(folder / "data.txt")
    feats = np.loadtxt(folder / "index_features.txt", dtype=int).reshape(-1)
    target = int(np.loadtxt(folder / "index_target.txt", dtype=int))
    tr = np.loadtxt(folder / f"index_train_{split}.txt", dtype=int)
    te = np.loadtxt(folder / f"index_test_{split}.txt", dtype=int)
    return data[tr][:, feats], data[tr, target], data[te][:, feats], data[te, target]


def run_split(folder: Path, split: int, prior: str, b: dict, noise_var: float, seed: int,
              step_size: float = 0.01, device: str = "cpu"):
    xtr, ytr, xte, yte = load(folder, split)
    xm, xs = xtr.mean(0), xtr.std(0)
    xs[xs == 0] = 1.0
    ym, ys = ytr.mean(), ytr.std()
    x = torch.tensor((xtr - xm) / xs, dtype=torch.float32)
    y = torch.tensor((ytr - ym) / ys, dtype=torch.float32)
    xt = torch.tensor((xte - xm) / xs, dtype=torch.float32, device=device)
    dim = x.shape[1]
    src = (SOURCE.replace("HIDDEN", str(b["hidden"]))
           .replace("PRIOR", prior_source(prior, b, seed,
                                          f"rbf(lengthscale={math.sqrt(2 * dim):.6g}, "
                                          "variance=1)"))
           .replace("NOISE", f"{math.sqrt(noise_var):.6g}"))
    model = ppl.compile(src)
    npr._MEMO.clear()
    fit = model.fit({"x": x, "y": y}, infer="sghmc", chains=b["chains"], warmup=b["warmup"],
                    thin=b["thin"], samples=b["samples"], drop=b["drop"], step_size=step_size,
                    friction=b["friction"], adaptive=True, seed=seed, dtype="float32",
                    device=device)
    fit_s = sum(r.get("fit_s", 0.0) for r in npr._MEMO.values())
    sample_s = fit.wall_time - fit_s
    n_layers = 2
    weights = [(fit.chains[f"f.W{i}"], fit.chains[f"f.b{i}"]) for i in range(n_layers)]
    with torch.no_grad():
        f = npr.forward(xt, weights, torch.tanh)[..., 0]  # [chains, draws, Ntest]
    rhat = split_gelman_rubin(f, chain_dim=0, sample_dim=1)
    f = f.reshape(-1, f.shape[-1]).double().cpu() * ys + ym
    yt = torch.tensor(yte, dtype=torch.float64)
    var_n = noise_var * ys ** 2
    return dict(**predictive_metrics(f, yt, var_n), fit_s=fit_s, sample_s=sample_s,
                rhat_max=float(rhat.max()), rhat_mean=float(rhat.mean()))


def predictive_metrics(f: torch.Tensor, y: torch.Tensor, var_n: float) -> dict:
    """Test metrics of S function draws ``f`` [S, N] against targets ``y`` [N], both in
    original units, with observation-noise variance ``var_n`` (original units).

    rmse: of the predictive mean mu = mean_s f_s. ll: mean over test points of the full
    mixture's log density, log (1/S) sum_s N(y | f_s, var_n) (log-mean-exp over draws).
    ll_moment: that of the moment-matched Gaussian N(y | mu, var_s f_s + var_n), the
    test log-likelihood the reference reports (its code scores N(y | mu, var) per point;
    METHODS.md §1, "Predictions"). Neither bounds the other in general; both are kept."""
    mu = f.mean(0)
    var = f.var(0) + var_n
    rmse = (mu - y).pow(2).mean().sqrt().item()
    ll_mix = (torch.logsumexp(-0.5 * (y - f).pow(2) / var_n, 0) - math.log(f.shape[0])
              - 0.5 * math.log(2 * math.pi * var_n)).mean().item()
    ll_mm = (-0.5 * (y - mu).pow(2) / var - 0.5 * torch.log(2 * math.pi * var)).mean().item()
    return dict(rmse=rmse, ll=ll_mix, ll_moment=ll_mm)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="a dataset folder in the UCI layout (not with --merge)")
    ap.add_argument("--splits", type=int, default=1, help="how many splits to run")
    ap.add_argument("--first-split", type=int, default=0,
                    help="run splits FIRST .. FIRST+SPLITS-1 (seed SEED+k for split k, so a "
                         "run resumed split by split repeats a whole run's numbers)")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="instead of running: merge the per-split columns of earlier --json "
                         "outputs (disjoint splits) into one table, and --json it")
    ap.add_argument("--priors", default="fg,fh,gpig,gpih")
    ap.add_argument("--budget", choices=sorted(BUDGETS), default="small")
    ap.add_argument("--noise-var", type=float, default=0.1,
                    help="fixed noise variance on standardised y (reference: 0.1)")
    ap.add_argument("--hidden", type=int, default=None,
                    help="hidden units (default: the budget's; the reference's UCI net has 100)")
    ap.add_argument("--friction", type=float, default=None,
                    help="SGHMC alpha (default: the budget's, 0.05; paper 0.01 as in the "
                         "reference)")
    ap.add_argument("--step-size", type=float, default=None,
                    help="SGHMC eta (default: the budget's, 0.05 small, 0.01 paper as in the "
                         "reference; it enters squared)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--cache", default=None,
                    help="cache folder for fitted priors (default: a fresh temporary one, "
                         "so fit_s is measured)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="where data, weights, prior parameters, the critic and the SGHMC "
                         "state live")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if a.merge:
        rows = merge_rows([json.loads(Path(j).read_text()) for j in a.merge])
        _report(rows)
        if a.json:
            Path(a.json).write_text(json.dumps(rows, indent=2))
        return rows
    if not a.data:
        ap.error("--data is required (unless --merge)")
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("uci_bnn: --device cuda was asked for, but CUDA is not available here")
    if a.threads:
        torch.set_num_threads(a.threads)
    os.environ["BDL_CACHE_DIR"] = a.cache or tempfile.mkdtemp(prefix="uci_bnn_")
    folder, b = Path(a.data), dict(BUDGETS[a.budget])
    if a.friction is not None:
        b["friction"] = a.friction
    if a.hidden:
        b["hidden"] = a.hidden
    splits = range(a.first_split, a.first_split + a.splits)
    print(f"{folder.name}: budget {a.budget} (hidden {b['hidden']}, friction {b['friction']}), "
          f"splits {splits.start}..{splits.stop - 1}, device {a.device}, "
          f"{torch.get_num_threads()} torch threads", file=sys.stderr)
    eta = a.step_size if a.step_size is not None else b["eta"]
    # the run's settings, kept in every row so that --merge only combines like runs
    settings = {"cfg_seed": float(a.seed), "cfg_noise_var": float(a.noise_var),
                **{f"cfg_{k}": float(v) for k, v in b.items()}, "cfg_eta": float(eta)}
    rows = {}
    for prior in a.priors.split(","):
        per_split = {k: run_split(folder, k, prior, b, a.noise_var, a.seed + k, eta, a.device)
                     for k in splits}
        rows[prior] = {**aggregate(per_split), **settings}
        _print_row(prior, rows[prior])
    if "fg" in rows and "gpig" in rows:
        print(_wins(rows), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return rows


COLUMNS = ("rmse", "ll", "ll_moment", "fit_s", "sample_s", "rhat_max", "rhat_mean")
SCORES = ("rmse", "ll", "ll_moment", "rhat_max", "rhat_mean")  # not the wall times


def aggregate(per_split: dict[int, dict]) -> dict:
    """A JSON row from per-split results {split: {column: value}}: each column's mean over
    the splits, the standard error s.d./sqrt(K) of rmse, ll and ll_moment (None for one
    split), and every column per split as ``{column}_split{k}`` (k the split's index in the
    dataset), from which :func:`merge_rows` rebuilds the row."""
    row = {}
    for col in COLUMNS:
        v = np.array([r[col] for r in per_split.values()])
        row[col] = float(v.mean())
        if col in ("rmse", "ll", "ll_moment"):
            row[f"{col}_se"] = (float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1
                                else None)
    for k in sorted(per_split):
        for col in COLUMNS:
            row[f"{col}_split{k}"] = per_split[k][col]
    return row


def per_split_of(row: dict) -> dict[int, dict]:
    """The per-split results {split: {column: value}} stored in a JSON row. Rows written
    before every column was kept per split stored only rmse, ll and rhat_max per split; for
    a one-split row the other columns are its means, which are that split's values."""
    out: dict[int, dict] = {}
    for key, val in row.items():
        col, sep, k = key.rpartition("_split")
        if sep and col in COLUMNS and k.isdigit():
            out.setdefault(int(k), {})[col] = val
    if len(out) == 1:
        (only,) = out.values()
        for col in COLUMNS:
            if col in row:
                only.setdefault(col, row[col])
    for k, res in out.items():
        if set(res) != set(COLUMNS):
            raise ValueError(f"split {k} lacks the per-split columns "
                             f"{sorted(set(COLUMNS) - set(res))}")
    return out


def merge_rows(runs: list[dict]) -> dict:
    """Merge the JSON outputs of runs over disjoint splits (``--first-split``) into the rows
    one run over all their splits would have written. Runs with different settings (the
    ``cfg_*`` columns: budget, seed, noise, step size) are an error; so is a split present
    in two runs with different scores (the same split run again may differ only in its
    wall times)."""
    merged: dict[str, dict[int, dict]] = {}
    settings: dict[str, float] = {}
    for run in runs:
        for prior, row in run.items():
            cfg = {k: v for k, v in row.items() if k.startswith("cfg_")}
            if cfg:   # rows written before the settings were kept carry none
                if settings and cfg != settings:
                    diff = sorted(k for k in set(cfg) | set(settings)
                                  if cfg.get(k) != settings.get(k))
                    raise ValueError(f"runs with different settings ({', '.join(diff)}) "
                                     "cannot be merged")
                settings = cfg
            have = merged.setdefault(prior, {})
            for k, res in per_split_of(row).items():
                if k in have and any(have[k][c] != res[c] for c in SCORES):
                    raise ValueError(f"split {k} of {prior} appears in two runs with "
                                     "different results")
                have[k] = res
    return {prior: {**aggregate(ps), **settings} for prior, ps in merged.items()}


def _print_row(prior: str, row: dict) -> None:
    se = {c: "-" if row[f"{c}_se"] is None else f"{row[f'{c}_se']:.3f}"
          for c in ("rmse", "ll", "ll_moment")}
    print(f"{prior:5s} rmse {row['rmse']:.3f} ± {se['rmse']}  "
          f"ll {row['ll']:.3f} ± {se['ll']}  ll_moment {row['ll_moment']:.3f} ± "
          f"{se['ll_moment']}  fit {row['fit_s']:.1f}s  "
          f"sample {row['sample_s']:.1f}s  R-hat(pred) max {row['rhat_max']:.3f}",
          flush=True)


def _report(rows: dict) -> None:
    for prior, row in rows.items():
        _print_row(prior, row)
    if "fg" in rows and "gpig" in rows:
        print(_wins(rows), flush=True)


def _wins(rows: dict) -> str:
    """Per split, GPiG against FG: lower RMSE and higher test log-likelihood (mixture and
    moment-matched), over the splits both rows hold."""
    g, f = per_split_of(rows["gpig"]), per_split_of(rows["fg"])
    ks = sorted(set(g) & set(f))
    lines = ["split | fg rmse | gpig rmse | fg ll | gpig ll | fg ll_mm | gpig ll_mm | "
             "R-hat max fg / gpig"]
    wins = {"rmse": 0, "ll": 0, "ll_moment": 0}
    for k in ks:
        wins["rmse"] += g[k]["rmse"] < f[k]["rmse"]
        wins["ll"] += g[k]["ll"] > f[k]["ll"]
        wins["ll_moment"] += g[k]["ll_moment"] > f[k]["ll_moment"]
        lines.append(f"{k} | {f[k]['rmse']:.3f} | {g[k]['rmse']:.3f} | "
                     f"{f[k]['ll']:.3f} | {g[k]['ll']:.3f} | "
                     f"{f[k]['ll_moment']:.3f} | {g[k]['ll_moment']:.3f} | "
                     f"{f[k]['rhat_max']:.2f} / {g[k]['rhat_max']:.2f}")
    lines.append(f"GPiG beats FG on RMSE in {wins['rmse']}/{len(ks)} splits, "
                 f"on log-likelihood in {wins['ll']}/{len(ks)} (mixture), "
                 f"{wins['ll_moment']}/{len(ks)} (moment-matched)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
