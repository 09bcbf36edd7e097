"""``infer np_train(...)``: meta-train the neural processes of a model over a task source.

The model is run once on its data to build its networks; every ``cnp``/``np``/``anp``/
``martingale_np`` network in it is then trained on batches of tasks (1-D GP tasks or an
``.npz`` task file) with Adam and cosine decay, minimising its per-point training loss
(METHODS.md section 3; docs/constructs/neural_process.md). The weights stay registered
with Pyro (``pyro.module``), so they land in ``Fit.params`` and in a run folder's
``params.pt``, and ``bdl predict`` conditions the trained network on new context.
The fit keeps 1000 draws (the number ``Fit.predict`` makes) of each site whose
distribution is a neural-process predictive, as deterministic draws [1, 1000, ...].
"""

from __future__ import annotations

import sys

import pyro
import torch

from ..runtime import neural_process as npr
from ..runtime.nn import _CACHE
from .fit import Fit

PREDICTIVE_DRAWS = 1000


def task_source(opts: dict, x_dim: int, y_dim: int):
    """The task source named by the options (``tasks=rbf|matern52|periodic|tnoise|file``)."""
    if opts["tasks"] == "file":
        if not opts["task_file"]:
            raise ValueError("np_train: tasks=file needs task_file=\"PATH.npz\"")
        src = npr.FileTasks(opts["task_file"])
        got = (src.arrays["xc"].shape[-1], src.arrays["yc"].shape[-1])
        if got != (x_dim, y_dim):
            raise ValueError(f"np_train: {opts['task_file']} has x_dim, y_dim = {got}, the "
                             f"network expects {(x_dim, y_dim)}")
        return src
    if (x_dim, y_dim) != (1, 1):
        raise ValueError(f"np_train: GP tasks are 1-D (x_dim=1, y_dim=1); the network has "
                         f"x_dim={x_dim}, y_dim={y_dim}: use tasks=file")
    return npr.GPTasks(opts["tasks"], lengthscale=(opts["lengthscale_lo"], opts["lengthscale_hi"]),
                       scale=(opts["scale_lo"], opts["scale_hi"]),
                       period=(opts["period_lo"], opts["period_hi"]), noise=opts["noise"],
                       tnoise_scale=opts["tnoise_scale"], max_points=opts["max_points"])


def neural_processes() -> dict[str, npr.NeuralProcess]:
    """The neural-process networks built by the last model run, by site name."""
    return {key[0]: mod for key, mod in _CACHE.items() if isinstance(mod, npr.NeuralProcess)}


def run(model, kwargs, opts, progress=False) -> Fit:
    with torch.no_grad():
        pyro.poutine.trace(model).get_trace(**kwargs)  # builds (and registers) the networks
    nets = neural_processes()
    if not nets:
        raise ValueError("np_train: the model has no neural process network (cnp, np, anp, "
                         "martingale_np)")
    gen = torch.Generator().manual_seed(int(opts["seed"]))
    losses: dict[str, list[float]] = {}
    evals: dict[str, dict[str, float]] = {}
    every = max(1, opts["steps"] // 20)
    for name, net in nets.items():
        tasks = task_source(opts, net.x_dim, net.y_dim)

        def report(step, loss, name=name):
            if progress and (step % every == 0 or step == opts["steps"] - 1):
                print(f"{name}: step {step + 1}/{opts['steps']}  loss {loss:.4g}",
                      file=sys.stderr)

        losses[name] = npr.train(net, tasks, opts["steps"], opts["batch"], lr=opts["lr"],
                                 num_samples=opts["train_samples"], gen=gen, callback=report)
        held_out = tasks.sample(64, gen, device=next(net.parameters()).device,
                                dtype=next(net.parameters()).dtype)
        ctx, tgt = npr.evaluate(net, held_out)
        evals[name] = {"ctx_ll": float(ctx.mean()), "tgt_ll": float(tgt.mean())}
        if progress:
            print(f"{name}: 64 fresh tasks: context ll {evals[name]['ctx_ll']:.3f}, target "
                  f"ll {evals[name]['tgt_ll']:.3f} per point", file=sys.stderr)
    with torch.no_grad():
        tr = pyro.poutine.trace(model).get_trace(**kwargs)
        chains = {}
        for name, site in tr.nodes.items():
            if site["type"] == "sample" and getattr(site["fn"], "_bdl_np", False):
                chains[name] = site["fn"].sample((PREDICTIVE_DRAWS,)).unsqueeze(0)
    f = Fit(model, kwargs, chains=chains, latents=[], deterministics=list(chains))
    f.train_loss = losses
    f.np_eval = evals
    return f
