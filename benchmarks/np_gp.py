"""Neural processes on 1-D GP tasks (METHODS.md section 3; issue 6).

Trains every model of ``--models`` on the same stream of tasks from ``--train-kernel``
(same seed, same number of steps and batch size), then evaluates each on the same
``--eval-tasks`` tasks per evaluation kernel: per-point log-likelihood of the context and
of the targets, log-mean-exp over ``--samples`` draws (latent samples / pseudo-context
sets; one for the CNP), mean and standard error over tasks. Optionally (``--bo-tasks``)
a Bayesian-optimisation loop with expected improvement from each model's predictive on
GP functions of the training kernel, reporting the normalised simple regret. With
``--plots DIR``, one PNG per evaluation kernel (``np_KERNEL.png``): the same three tasks
(10 context points) for every model, with the task's function and the predictive mean
and +-2 sd of each model. ``--device cuda`` trains and evaluates on the GPU (an error
when CUDA is not available); the task streams are drawn on the CPU from seeded
generators, so both devices see the same tasks. ``--reference`` adds two rows per
kernel that are not neural processes: ``bayes`` (the GP Bayes predictive under the
training prior, hyperparameters averaged on a grid: what a neural process trained to
convergence approximates) and ``bayes_noise`` (the same with the noise sd inferred per
task), see :func:`gp_reference`. ``--save DIR`` keeps each trained model (``MODEL.pt``);
``--load LABEL=PATH,...`` evaluates saved models (from ``--save``, any run with the same
evaluation flags) on the same tasks as rows ``LABEL/KERNEL`` without training them, and
``--paired-against LABEL,...`` adds every other row's paired difference to each of those
models, so that models trained in separate runs (one process per model) are compared
task by task.

    python benchmarks/np_gp.py --models cnp,np,anp,mpnp,ampnp --train-kernel rbf \
        --eval-kernels rbf,matern52,periodic,tnoise --lengthscale-range 0.1,0.6 \
        --steps 2000 --eval-tasks 200 --plots figs --json out.json

Models: cnp, np, anp, mpnp (``martingale_np``), ampnp (``martingale_anp``, the
attentive MPNP) and ampnp_pa (the attentive MPNP whose attention also reads the
pseudo-context; Python only).

JSON: ``{"MODEL/KERNEL": {"ctx_ll", "ctx_ll_se", "tgt_ll", "tgt_ll_se"} (plus, for models
other than cnp, the paired differences ``ctx_vs_cnp``, ``tgt_vs_cnp`` and their s.e.;
mpnp also ``*_vs_np`` and ampnp/ampnp_pa ``*_vs_anp`` when those models ran),
"MODEL/bo": {"regret", "regret_se"} (normalised simple regret of the EI loop, mean and
s.e. over functions), "MODEL/train": {"seconds", "final_loss"}}``; a loaded model's
rows are named by its label and have no ``train`` row, and ``--paired-against B`` adds
``ctx_vs_B``, ``tgt_vs_B`` and their s.e. to every other model's rows.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
import time

import torch

from ppl.runtime import neural_process as npr

FAMILIES = {"cnp": "cnp", "np": "np", "anp": "anp", "mpnp": "mpnp", "ampnp": "ampnp",
            "ampnp_pa": "ampnp_pa"}
# paired differences each model row gets, when the base was run too: every model against
# the CNP, and each martingale model against its latent-variable peer
PAIRED_BASES = {"cnp": ("np", "anp", "mpnp", "ampnp", "ampnp_pa", "bayes", "bayes_noise"),
                "np": ("mpnp",),
                "anp": ("ampnp", "ampnp_pa")}


def _pair(text: str) -> tuple[float, float]:
    a, b = (float(v) for v in text.split(","))
    return a, b


def _loads(text: str) -> dict[str, str]:
    """``LABEL=PATH,LABEL=PATH`` -> {label: path} (labels unique, both parts non-empty)."""
    out: dict[str, str] = {}
    for item in (t.strip() for t in text.split(",") if t.strip()):
        label, sep, path = item.partition("=")
        label, path = label.strip(), path.strip()
        if not sep or not label or not path or "/" in label:
            raise argparse.ArgumentTypeError(
                f"--load: expected LABEL=PATH (a label without '/'), got {item!r}")
        if label in out:
            raise argparse.ArgumentTypeError(f"--load: label {label!r} given twice")
        out[label] = path
    return out


def _widths(text: str) -> tuple[float, ...]:
    """``1,1.41,2`` -> (1.0, 1.41, 2.0): positive widths of the ladder."""
    out = tuple(float(v) for v in text.split(",") if v.strip())
    if not out or min(out) <= 0:
        raise argparse.ArgumentTypeError(f"--width-ladder: positive widths, got {text!r}")
    return out


def eval_tasks(kernel, n_tasks, args, seed):
    """The evaluation tasks of one kernel: batches of 10 (each with its own context size)."""
    src = npr.GPTasks(kernel, lengthscale=args.lengthscale_range, scale=args.scale_range,
                      period=args.period_range, noise=args.noise,
                      tnoise_scale=args.tnoise_scale, max_points=args.max_points)
    gen = torch.Generator().manual_seed(seed)
    out, left = [], n_tasks
    while left > 0:
        out.append(src.sample(min(10, left), gen))
        left -= 10
    return out


def evaluate(model, batches, samples, device):
    """Per-task context and target log-likelihoods of one model on the evaluation
    batches: (row of means and standard errors over tasks, per-task (ctx, tgt)). The row
    also holds where the predictive's spread at the targets comes from: ``mean_spread``,
    the sd over the S draws of the component means mu_s(x), and ``sigma``, the mean of
    the components' sd sigma_s(x) (averaged over target points and tasks; fresh draws,
    taken after the log-likelihoods so that those do not depend on them)."""
    ctx, tgt = [], []
    for b in batches:
        b = npr.Batch(*(t.to(device) for t in (b.xc, b.yc, b.x, b.y)))
        c, t = npr.evaluate(model, b, samples)
        ctx.append(c.cpu())
        tgt.append(t.cpu())
    ctx, tgt = torch.cat(ctx).double(), torch.cat(tgt).double()
    spread, sigma = [], []
    with torch.no_grad():
        for b in batches:
            mu, sd, log_w = model.predict_mixture(b.xc.to(device), b.yc.to(device),
                                                  b.xt.to(device), samples)
            spread.append(mu.std(0, unbiased=False).mean((-1, -2)).cpu().double())
            if log_w is not None:
                # the width ladder: the components' sd weighted as in the predictive
                sd = log_w.exp()[..., None, None] * sd * mu.shape[0]
            sigma.append(sd.mean((0, -1, -2)).cpu().double())
    return {**_summary(ctx, tgt), "mean_spread": float(torch.cat(spread).mean()),
            "sigma": float(torch.cat(sigma).mean())}, (ctx, tgt)


def _summary(ctx: torch.Tensor, tgt: torch.Tensor) -> dict[str, float]:
    """Mean and standard error over tasks of the per-task context and target ll."""
    n = ctx.shape[0]
    return {"ctx_ll": float(ctx.mean()), "ctx_ll_se": float(ctx.std() / math.sqrt(n)),
            "tgt_ll": float(tgt.mean()), "tgt_ll_se": float(tgt.std() / math.sqrt(n))}


def _midpoints(lo_hi, n):
    lo, hi = lo_hi
    return lo + (hi - lo) * (torch.arange(n, dtype=torch.float64) + 0.5) / n


# noise sds of the reference whose noise level is inferred per task (--reference)
NOISE_GRID = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8)


@torch.no_grad()
def gp_reference(batches, prior_kernel, args, grid=16, noises=None):
    """The Bayes predictive of a GP prior on the evaluation tasks: the per-point
    log-likelihood of the tasks' points under

        p(y_i | D_c) = sum_h w_h N(y_i; m_h(x_i), v_h(x_i) + sigma_h^2),
        w_h prop. to p(y_c | x_c, h),

    the GP posterior predictive averaged over a ``grid``-point midpoint grid of each
    hyperparameter's uniform range (lengthscale, scale, and period for ``periodic``),
    with Gaussian noise sd ``--noise`` or, with ``noises``, sigma_h on that grid too
    (uniform prior: the noise level inferred per task). With the training kernel and
    noise it is what a neural process trained to convergence on the training tasks
    approximates (its predictive's per-point marginals), so under mismatch it shows what
    fitting the training tasks better buys (METHODS.md section 3). ``prior_kernel`` is
    rbf, matern52 or periodic (the Student-t likelihood has no closed form).
    Returns the same row and per-task tensors as :func:`evaluate`."""
    if prior_kernel == "tnoise":
        raise ValueError("gp_reference: the t-noise prior has no closed-form predictive")
    kind = prior_kernel
    f64 = torch.float64
    ls, sc = _midpoints(args.lengthscale_range, grid), _midpoints(args.scale_range, grid)
    per = (_midpoints(args.period_range, grid) if kind == "periodic"
           else torch.ones(1, dtype=f64))
    nz = torch.tensor(noises if noises else (args.noise,), dtype=f64)
    ls, sc, per, nz = (t.reshape(-1) for t in torch.meshgrid(ls, sc, per, nz, indexing="ij"))
    noise2 = nz ** 2 + 1e-5                # the sampler adds 1e-5 jitter to the noise
    ctx, tgt = [], []
    for b in batches:
        c = b.num_ctx
        for x, y in zip(b.x.double(), b.y.double(), strict=True):
            H = ls.shape[0]
            k = npr.kernel_matrix(kind, x.expand(H, -1, -1), ls, sc, per)    # [H, N, N]
            kcc = k[:, :c, :c] + torch.diag_embed(noise2[:, None].expand(H, c))
            L = torch.linalg.cholesky(kcc)
            yc = y[:c].expand(H, -1, -1)
            alpha = torch.cholesky_solve(yc, L)                              # [H, C, 1]
            log_ml = (-0.5 * (yc * alpha).sum((-1, -2))
                      - torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1))
            log_w = torch.log_softmax(log_ml, 0)                             # [H]
            kxc = k[:, :, :c]                                                 # [H, N, C]
            mean = (kxc @ alpha)[..., 0]
            v = torch.linalg.solve_triangular(L, kxc.transpose(-1, -2), upper=False)
            var = (torch.diagonal(k, dim1=-2, dim2=-1) - (v ** 2).sum(-2)).clamp_min(0) \
                + noise2[:, None]
            ll = torch.distributions.Normal(mean, var.sqrt()).log_prob(y[:, 0])  # [H, N]
            ll = torch.logsumexp(log_w[:, None] + ll, 0)
            ctx.append(ll[:c].mean())
            tgt.append(ll[c:].mean())
    ctx, tgt = torch.stack(ctx), torch.stack(tgt)
    return _summary(ctx, tgt), (ctx, tgt)


def paired(rows, per_task, models, kernels, base="cnp", against=None):
    """Differences to ``base`` on the same tasks (paired): for every model of ``against``
    (default: every other model) and kernel, ``ctx_vs_BASE``/``tgt_vs_BASE`` = mean over
    tasks of (model - base) and their standard errors, added to the MODEL/KERNEL rows."""
    for name in models:
        if name == base or base not in models or (against and name not in against):
            continue
        for k in kernels:
            for i, col in enumerate(("ctx", "tgt")):
                d = per_task[name, k][i] - per_task[base, k][i]
                rows[f"{name}/{k}"][f"{col}_vs_{base}"] = float(d.mean())
                rows[f"{name}/{k}"][f"{col}_vs_{base}_se"] = float(d.std() / math.sqrt(len(d)))


def plot_tasks(kernel, n_tasks, n_ctx, args, seed):
    """Tasks for the figures: ``n_ctx`` context points and the function on a 200-point
    grid of [-2, 2], drawn jointly from the kernel's GP (per-task hyperparameters as in
    training); the context gets the source's noise, the grid is the function itself
    (plus the 0.02 Gaussian noise sd of ``sample_f``, invisible at this scale)."""
    src = npr.GPTasks(kernel, lengthscale=args.lengthscale_range, scale=args.scale_range,
                      period=args.period_range, noise=args.noise,
                      tnoise_scale=args.tnoise_scale)
    gen = torch.Generator().manual_seed(seed)
    grid = torch.linspace(-2, 2, 200).reshape(1, 200, 1).expand(n_tasks, 200, 1)
    xc = -2 + 4 * torch.rand(n_tasks, n_ctx, 1, generator=gen)
    y, _ = src.sample_f(torch.cat([xc, grid], 1), gen)
    yc = src.heavy_noise(y[:, :n_ctx], gen)
    return xc, yc, grid, y[:, n_ctx:]


@torch.no_grad()
def mixture_moments(model, xc, yc, xt, samples):
    """Mean and sd of the model's predictive at xt: for a mixture over S draws with
    weights w_s (1/S without the width ladder), m = sum_s w_s mu_s and
    v = sum_s w_s (sigma_s^2 + mu_s^2) - m^2."""
    mu, sigma, log_w = model.predict_mixture(xc, yc, xt, samples)
    w = (torch.full(mu.shape[:2], 1.0 / mu.shape[0], dtype=mu.dtype, device=mu.device)
         if log_w is None else log_w.exp())[..., None, None]
    m = (w * mu).sum(0)
    v = (w * (sigma ** 2 + mu ** 2)).sum(0) - m ** 2
    return m, v.clamp_min(0).sqrt()


def write_plots(out_dir, trained, kernels, args, device, n_tasks=3, n_ctx=10):
    """One PNG per evaluation kernel: rows are tasks, columns models (the same tasks for
    every model): context points, the task's function, predictive mean and +-2 sd."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i, k in enumerate(kernels):
        xc, yc, grid, f = plot_tasks(k, n_tasks, n_ctx, args, 5000 + i)
        fig, axes = plt.subplots(n_tasks, len(trained), squeeze=False, sharex=True,
                                 figsize=(3.2 * len(trained), 2.4 * n_tasks))
        for j, (name, model) in enumerate(trained.items()):
            torch.manual_seed(args.seed + 3)
            m, sd = mixture_moments(model, xc.to(device), yc.to(device), grid.to(device),
                                    args.samples)
            m, sd = m.cpu(), sd.cpu()
            for t in range(n_tasks):
                ax, g = axes[t, j], grid[t, :, 0]
                ax.plot(g, f[t, :, 0], color="0.3", lw=1, ls="--", label="function")
                ax.plot(g, m[t, :, 0], color="C0", lw=1.5, label="predictive mean")
                ax.fill_between(g, m[t, :, 0] - 2 * sd[t, :, 0], m[t, :, 0] + 2 * sd[t, :, 0],
                                color="C0", alpha=0.25, label="±2 sd")
                ax.scatter(xc[t, :, 0], yc[t, :, 0], s=12, color="k", zorder=3,
                           label="context")
                if t == 0:
                    ax.set_title(f"{name} ({k})")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", ncol=4, fontsize=8)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.1 / n_tasks))
        path = os.path.join(out_dir, f"np_{k}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def expected_improvement(mu: torch.Tensor, sigma: torch.Tensor,
                         best: torch.Tensor | float) -> torch.Tensor:
    """Expected improvement below ``best`` (minimisation) of the equal-weight mixture
    (1/S) sum_s N(mu_s, sigma_s^2), draws on the leading dimension of ``mu``/``sigma``:

        EI = E[max(0, best - y)] = (1/S) sum_s [(best - mu_s) Phi(z_s) + sigma_s phi(z_s)],
        z_s = (best - mu_s) / sigma_s.

    EI is linear in the predictive density, so the average of the components' closed
    forms is the exact EI of the mixture (no moment matching); S = 1 is the Gaussian
    closed form (CNP). METHODS.md section 3 (Bayesian optimisation on GP functions)."""
    normal = torch.distributions.Normal(torch.zeros((), dtype=mu.dtype, device=mu.device),
                                        torch.ones((), dtype=mu.dtype, device=mu.device))
    gap = best - mu
    z = gap / sigma
    return (gap * normal.cdf(z) + sigma * normal.log_prob(z).exp()).mean(0)


@torch.no_grad()
def bayes_opt(model, kernel, n_funcs, iters, samples, args, device, seed=7):
    """Minimise GP draws on a 200-point grid of [-2, 2] starting from 3 random points:
    each step evaluates the grid point (not yet evaluated) of largest
    :func:`expected_improvement` of the model's predictive conditioned on the points so
    far. Normalised simple regret: (min found - min f) / (max f - min f), averaged over
    functions (the same functions and starts for every model)."""
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
            ei = expected_improvement(mu, sigma, f[idx].min().double())
            ei[idx] = -1.0
            idx.append(int(ei.argmax()))
        found = f[idx].min()
        regrets.append(float((found - f.min()) / (f.max() - f.min())))
    r = torch.tensor(regrets, dtype=torch.float64)
    return {"regret": float(r.mean()), "regret_se": float(r.std() / math.sqrt(len(r)))}


def _checkpointer(args, name: str, model):
    """Training callback saving ``NAME_sSTEP.pt`` every ``--save-every`` steps (None
    without it)."""
    if not (args.save and args.save_every):
        return None
    import os

    os.makedirs(args.save, exist_ok=True)

    def save(step: int, loss: float) -> None:
        if (step + 1) % args.save_every == 0 and step + 1 < args.steps:
            npr.save_trained(os.path.join(args.save, f"{name}_s{step + 1}.pt"), model,
                             source=" ".join(sys.argv))
            print(f"{name}: step {step + 1}, loss {loss:.3f}", file=sys.stderr, flush=True)

    return save


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="cnp,np,anp,mpnp,ampnp")
    p.add_argument("--train-kernel", default="rbf", choices=npr.KERNELS)
    p.add_argument("--eval-kernels", default="rbf,matern52,periodic,tnoise")
    p.add_argument("--lengthscale-range", type=_pair, default=(0.1, 0.6))
    p.add_argument("--scale-range", type=_pair, default=(0.1, 1.0))
    p.add_argument("--period-range", type=_pair, default=(0.1, 0.5))
    p.add_argument("--noise", type=float, default=0.02, help="Gaussian noise sd")
    p.add_argument("--tnoise-scale", type=float, default=0.15,
                   help="t-noise tasks: Student-t scale ~ U(0, this)")
    p.add_argument("--max-points", type=int, default=50)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--hidden", type=int, default=128, help="width (128 as in METHODS)")
    p.add_argument("--pseudo", type=int, default=0,
                   help="MPNP pseudo-context size M (0: as many as context points)")
    p.add_argument("--train-samples", type=int, default=4, help="K in training")
    p.add_argument("--generator", default="mean", choices=npr.GENERATOR_MODES,
                   help="pseudo-context base of mpnp/ampnp: the context's mean "
                        "representation (default), a soft resampling of the context, "
                        "observations imputed from the amortised predictive, or mixed "
                        "(alternate pseudo sets of the mean and the predictive base)")
    p.add_argument("--mixed-bound", default="joint", choices=("joint", "per_kind"),
                   help="--generator mixed: one bound over all pseudo sets (default) or "
                        "each kind's own bound weighted by its share")
    p.add_argument("--tag-kinds", action="store_true",
                   help="--generator mixed: a learned offset on the predictive-base sets' "
                        "points, so that the decoder can tell the kinds apart")
    p.add_argument("--samples", type=int, default=50, help="draws at evaluation")
    p.add_argument("--eval-tasks", type=int, default=200)
    p.add_argument("--bo-tasks", type=int, default=0, help="GP functions for the BO loop")
    p.add_argument("--bo-iters", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--plots", default=None, metavar="DIR",
                   help="write one PNG per evaluation kernel (np_KERNEL.png) here")
    p.add_argument("--reference", action="store_true",
                   help="add rows bayes/KERNEL (the GP Bayes predictive under the training "
                        "prior) and bayes_noise/KERNEL (the same, noise sd inferred)")
    p.add_argument("--save", default=None, metavar="DIR",
                   help="save each trained model as DIR/MODEL.pt (npr.save_trained)")
    p.add_argument("--save-every", type=int, default=0, metavar="N",
                   help="with --save, also save MODEL_sSTEP.pt every N training steps "
                        "(checkpoints at equal steps across models, for a run that may "
                        "be cut off)")
    p.add_argument("--load", type=_loads, default={}, metavar="LABEL=PATH,...",
                   help="evaluate saved models (npr.load_trained) on the same tasks as "
                        "rows LABEL/KERNEL, without training; labels cnp, np and anp "
                        "are the usual paired bases")
    p.add_argument("--paired-against", default="", metavar="LABEL,...",
                   help="add every other model's paired difference to these models "
                        "(trained or loaded): columns ctx_vs_LABEL, tgt_vs_LABEL")
    p.add_argument("--width-ladder", type=_widths, default=(1.0, 2 ** 0.5, 2.0, 2 ** 1.5, 4.0),
                   metavar="L1,L2,...",
                   help="widths of the task-level width ladder (with --ladder-on)")
    p.add_argument("--ladder-on", default="", metavar="LABEL,...",
                   help="evaluate these models (cnp, mpnp, or labels of --load) with the "
                        "width ladder: the predictive's sd times lambda_j, weighted by the "
                        "context's leave-one-out evidence")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available on this machine")
    if args.reference and args.train_kernel == "tnoise":
        p.error("--reference: the t-noise prior has no closed-form predictive")
    device = torch.device(args.device)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    kernels = [k.strip() for k in args.eval_kernels.split(",") if k.strip()]
    for m in models:
        if m not in FAMILIES:
            p.error(f"unknown model {m!r} (expected some of {', '.join(FAMILIES)})")
    clash = sorted(set(args.load) & (set(models) | {"bayes", "bayes_noise"}))
    if clash:
        p.error(f"--load: label {clash[0]!r} is also a model of this run; pick another")
    bases = [b.strip() for b in args.paired_against.split(",") if b.strip()]
    for b in bases:
        if b not in models and b not in args.load:
            p.error(f"--paired-against: {b!r} is neither a model of --models nor a "
                    "label of --load")
    laddered = {b.strip() for b in args.ladder_on.split(",") if b.strip()}
    for b in sorted(laddered):
        if b not in models and b not in args.load:
            p.error(f"--ladder-on: {b!r} is neither a model of --models nor a label of "
                    "--load")
        # refused here, before any training, not after the family has trained
        if b in models and not npr.MODELS[FAMILIES[b]].has_width_ladder():
            p.error(f"--ladder-on {b}: {FAMILIES[b]} has no mean-pooled amortised "
                    "predictive to score the context with (use cnp or mpnp)")
    evals = {k: eval_tasks(k, args.eval_tasks, args, 1000 + i) for i, k in enumerate(kernels)}
    rows: dict[str, dict[str, float]] = {}
    trained, per_task = {}, {}

    def report(name, model):
        """Evaluation rows (and BO) of one model; the seeds are reset per model and
        kernel, so a model scores the same whether trained here or loaded."""
        trained[name] = model
        if name in laddered:
            model.width_ladder = args.width_ladder
            first = evals[kernels[0]][0]
            try:
                model.width_log_weights(first.xc[:1].to(device), first.yc[:1].to(device))
            except ValueError as e:
                p.error(f"--ladder-on {name}: {e}")
        for k in kernels:
            torch.manual_seed(args.seed + 1)
            rows[f"{name}/{k}"], per_task[name, k] = evaluate(model, evals[k],
                                                              args.samples, device)
            r = rows[f"{name}/{k}"]
            print(f"  {k:9s} ctx {r['ctx_ll']:7.3f} +- {r['ctx_ll_se']:.3f}   tgt "
                  f"{r['tgt_ll']:7.3f} +- {r['tgt_ll_se']:.3f}", file=sys.stderr)
        if args.bo_tasks:
            torch.manual_seed(args.seed + 2)
            rows[f"{name}/bo"] = bayes_opt(model, args.train_kernel, args.bo_tasks,
                                           args.bo_iters, args.samples, args, device)
            print(f"  BO regret {rows[name + '/bo']['regret']:.4f} +- "
                  f"{rows[name + '/bo']['regret_se']:.4f}", file=sys.stderr)

    for label, path in args.load.items():
        try:
            model, _ = npr.load_trained(path, device=device)
        except (OSError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError) as e:
            p.error(f"--load {label}={path}: not a saved neural process ({e})")
        print(f"{label}: loaded {path}", file=sys.stderr)
        report(label, model)
    for name in models:
        torch.manual_seed(args.seed)
        model = npr.MODELS[FAMILIES[name]](1, 1, hidden=args.hidden, pseudo=args.pseudo,
                                           samples=args.samples).to(device)
        if hasattr(model, "gen"):
            model.gen.mode = args.generator
            model.gen.per_kind_bound = args.mixed_bound == "per_kind"
            model.gen.tag_kinds = args.tag_kinds
        train = npr.GPTasks(args.train_kernel, lengthscale=args.lengthscale_range,
                            scale=args.scale_range, period=args.period_range,
                            noise=args.noise, tnoise_scale=args.tnoise_scale,
                            max_points=args.max_points)
        t0 = time.perf_counter()
        losses = npr.train(model, train, args.steps, args.batch, lr=args.lr,
                           num_samples=args.train_samples,
                           gen=torch.Generator().manual_seed(args.seed),
                           callback=_checkpointer(args, name, model))
        if device.type == "cuda":
            torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        if args.save:
            import os

            os.makedirs(args.save, exist_ok=True)
            npr.save_trained(os.path.join(args.save, f"{name}.pt"), model,
                             source=" ".join(sys.argv))
        rows[f"{name}/train"] = {"seconds": secs,
                                 "final_loss": sum(losses[-50:]) / len(losses[-50:])}
        print(f"{name}: trained {args.steps} steps in {secs:.1f}s, final loss "
              f"{rows[name + '/train']['final_loss']:.3f}", file=sys.stderr)
        report(name, model)
    # loaded models take part in every comparison, labelled as given (cnp, np, anp
    # are the usual paired bases)
    models = list(args.load) + models
    if args.reference:
        for name, noises in (("bayes", None), ("bayes_noise", NOISE_GRID)):
            for k in kernels:
                rows[f"{name}/{k}"], per_task[name, k] = gp_reference(
                    evals[k], args.train_kernel, args, noises=noises)
            models.append(name)
    if args.plots:
        for path in write_plots(args.plots, trained, kernels, args, device):
            print(f"wrote {path}", file=sys.stderr)
    for base, against in PAIRED_BASES.items():
        # every model against the CNP, whatever the label it was loaded under
        extra = tuple(args.load) if base == "cnp" else ()
        paired(rows, per_task, models, kernels, base, against + extra)
    for base in bases:
        paired(rows, per_task, models, kernels, base)
    print(f"\n{'MODEL/KERNEL':20s} {'ctx_ll':>16s} {'tgt_ll':>16s} {'tgt - cnp (paired)':>20s}"
          f" {'tgt - np/anp (paired)':>22s}")
    for key, r in rows.items():
        if "tgt_ll" in r:
            vs = [f"{r[c]:+8.3f} ± {r[c + '_se']:.3f}" if c in r else ""
                  for c in ("tgt_vs_cnp", "tgt_vs_np" if "tgt_vs_np" in r else "tgt_vs_anp")]
            print(f"{key:20s} {r['ctx_ll']:8.3f} ± {r['ctx_ll_se']:.3f} "
                  f"{r['tgt_ll']:8.3f} ± {r['tgt_ll_se']:.3f} {vs[0]:>20s} {vs[1]:>22s}")
    for base in bases:
        print(f"\n{'MODEL/KERNEL':20s} {'ctx - ' + base + ' (paired)':>22s} "
              f"{'tgt - ' + base + ' (paired)':>22s}")
        for key, r in rows.items():
            if f"tgt_vs_{base}" in r:
                print(f"{key:20s} {r[f'ctx_vs_{base}']:+12.3f} ± {r[f'ctx_vs_{base}_se']:.3f} "
                      f"{r[f'tgt_vs_{base}']:+12.3f} ± {r[f'tgt_vs_{base}_se']:.3f}")
    bo = [(key, r) for key, r in rows.items() if key.endswith("/bo")]
    if bo:
        print(f"\n{'MODEL':20s} {'BO regret (normalised, mean ± s.e.)':>36s}")
        for key, r in bo:
            print(f"{key[:-3]:20s} {r['regret']:19.4f} ± {r['regret_se']:.4f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
