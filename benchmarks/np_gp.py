"""Neural processes on 1-D GP tasks (METHODS.md section 3; issue 6).

Trains every model of ``--models`` on the same stream of tasks from ``--train-kernel``
(same seed, same number of steps and batch size), then evaluates each on the same
``--eval-tasks`` tasks per evaluation kernel: per-point log-likelihood of the context and
of the targets, log-mean-exp over ``--samples`` draws (latent samples / pseudo-context
sets; one for the CNP), mean and standard error over tasks. Optionally (``--bo-tasks``)
a Bayesian-optimisation loop with expected improvement from each model's predictive on
GP functions of the training kernel, reporting the normalised simple regret.

    python benchmarks/np_gp.py --models cnp,np,anp,mpnp --train-kernel rbf \
        --eval-kernels rbf,matern52,periodic,tnoise --steps 2000 --eval-tasks 200 \
        --json out.json

JSON: ``{"MODEL/KERNEL": {"ctx_ll", "ctx_ll_se", "tgt_ll", "tgt_ll_se"}, "MODEL/bo":
{"regret", "regret_se"}, "MODEL/train": {"seconds", "final_loss"}}``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch

from ppl.runtime import neural_process as npr

FAMILIES = {"cnp": "cnp", "np": "np", "anp": "anp", "mpnp": "mpnp"}


def _pair(text: str) -> tuple[float, float]:
    a, b = (float(v) for v in text.split(","))
    return a, b


def eval_tasks(kernel, n_tasks, args, seed):
    """The evaluation tasks of one kernel: batches of 10 (each with its own context size)."""
    src = npr.GPTasks(kernel, lengthscale=args.lengthscale_range, scale=args.scale_range,
                      period=args.period_range, max_points=args.max_points)
    gen = torch.Generator().manual_seed(seed)
    out, left = [], n_tasks
    while left > 0:
        out.append(src.sample(min(10, left), gen))
        left -= 10
    return out


def evaluate(model, batches, samples, device):
    ctx, tgt = [], []
    for b in batches:
        b = npr.Batch(*(t.to(device) for t in (b.xc, b.yc, b.x, b.y)))
        c, t = npr.evaluate(model, b, samples)
        ctx.append(c.cpu())
        tgt.append(t.cpu())
    ctx, tgt = torch.cat(ctx).double(), torch.cat(tgt).double()
    n = ctx.shape[0]
    return {"ctx_ll": float(ctx.mean()), "ctx_ll_se": float(ctx.std() / math.sqrt(n)),
            "tgt_ll": float(tgt.mean()), "tgt_ll_se": float(tgt.std() / math.sqrt(n))}


@torch.no_grad()
def bayes_opt(model, kernel, n_funcs, iters, samples, args, device, seed=7):
    """Minimise GP draws on a 200-point grid of [-2, 2] starting from 3 random points:
    each step evaluates argmax EI(x) = (1/S) sum_s E[max(0, y_best - y)], y ~ N(mu_s,
    sigma_s^2), of the model conditioned on the points so far. Normalised regret:
    (min found - min f) / (max f - min f), averaged over functions."""
    src = npr.GPTasks(kernel, lengthscale=args.lengthscale_range, scale=args.scale_range,
                      period=args.period_range, noise=0.0)
    gen = torch.Generator().manual_seed(seed)
    grid = torch.linspace(-2, 2, 200).reshape(1, 200, 1)
    regrets = []
    for _ in range(n_funcs):
        f, _ = src.sample_f(grid, gen)
        f = f[0, :, 0]
        idx = torch.randperm(200, generator=gen)[:3].tolist()
        for _ in range(iters):
            xc = grid[:, idx].to(device)
            yc = f[idx].reshape(1, -1, 1).to(device)
            mu, sigma = model.predict(xc, yc, grid.to(device), samples)
            mu, sigma = mu[:, 0, :, 0].cpu().double(), sigma[:, 0, :, 0].cpu().double()
            best = f[idx].min().double()
            z = (best - mu) / sigma
            normal = torch.distributions.Normal(0.0, 1.0)
            ei = ((best - mu) * normal.cdf(z) + sigma * normal.log_prob(z).exp()).mean(0)
            ei[idx] = -1.0
            idx.append(int(ei.argmax()))
        found = f[idx].min()
        regrets.append(float((found - f.min()) / (f.max() - f.min())))
    r = torch.tensor(regrets, dtype=torch.float64)
    return {"regret": float(r.mean()), "regret_se": float(r.std() / math.sqrt(len(r)))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="cnp,np,anp,mpnp")
    p.add_argument("--train-kernel", default="rbf", choices=npr.KERNELS)
    p.add_argument("--eval-kernels", default="rbf,matern52,periodic,tnoise")
    p.add_argument("--lengthscale-range", type=_pair, default=(0.1, 0.6))
    p.add_argument("--scale-range", type=_pair, default=(0.1, 1.0))
    p.add_argument("--period-range", type=_pair, default=(0.1, 0.5))
    p.add_argument("--max-points", type=int, default=50)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--hidden", type=int, default=128, help="width (128 as in METHODS)")
    p.add_argument("--pseudo", type=int, default=16, help="MPNP pseudo-context size M")
    p.add_argument("--train-samples", type=int, default=4, help="K in training")
    p.add_argument("--samples", type=int, default=50, help="draws at evaluation")
    p.add_argument("--eval-tasks", type=int, default=200)
    p.add_argument("--bo-tasks", type=int, default=0, help="GP functions for the BO loop")
    p.add_argument("--bo-iters", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    kernels = [k.strip() for k in args.eval_kernels.split(",") if k.strip()]
    for m in models:
        if m not in FAMILIES:
            p.error(f"unknown model {m!r} (expected some of {', '.join(FAMILIES)})")
    evals = {k: eval_tasks(k, args.eval_tasks, args, 1000 + i) for i, k in enumerate(kernels)}
    rows: dict[str, dict[str, float]] = {}
    for name in models:
        torch.manual_seed(args.seed)
        model = npr.MODELS[FAMILIES[name]](1, 1, hidden=args.hidden, pseudo=args.pseudo,
                                           samples=args.samples).to(device)
        train = npr.GPTasks(args.train_kernel, lengthscale=args.lengthscale_range,
                            scale=args.scale_range, period=args.period_range,
                            max_points=args.max_points)
        t0 = time.perf_counter()
        losses = npr.train(model, train, args.steps, args.batch, lr=args.lr,
                           num_samples=args.train_samples,
                           gen=torch.Generator().manual_seed(args.seed))
        if device.type == "cuda":
            torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        rows[f"{name}/train"] = {"seconds": secs,
                                 "final_loss": sum(losses[-50:]) / len(losses[-50:])}
        print(f"{name}: trained {args.steps} steps in {secs:.1f}s, final loss "
              f"{rows[name + '/train']['final_loss']:.3f}", file=sys.stderr)
        for k in kernels:
            torch.manual_seed(args.seed + 1)
            rows[f"{name}/{k}"] = evaluate(model, evals[k], args.samples, device)
            r = rows[f"{name}/{k}"]
            print(f"  {k:9s} ctx {r['ctx_ll']:7.3f} +- {r['ctx_ll_se']:.3f}   tgt "
                  f"{r['tgt_ll']:7.3f} +- {r['tgt_ll_se']:.3f}", file=sys.stderr)
        if args.bo_tasks:
            torch.manual_seed(args.seed + 2)
            rows[f"{name}/bo"] = bayes_opt(model, args.train_kernel, args.bo_tasks,
                                           args.bo_iters, args.samples, args, device)
            print(f"  BO regret {rows[name + '/bo']['regret']:.4f} +- "
                  f"{rows[name + '/bo']['regret_se']:.4f}", file=sys.stderr)
    print(f"\n{'MODEL/KERNEL':20s} {'ctx_ll':>16s} {'tgt_ll':>16s}")
    for key, r in rows.items():
        if "tgt_ll" in r:
            print(f"{key:20s} {r['ctx_ll']:8.3f} ± {r['ctx_ll_se']:.3f} "
                  f"{r['tgt_ll']:8.3f} ± {r['tgt_ll_se']:.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
