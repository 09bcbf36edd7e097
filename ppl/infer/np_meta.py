"""``infer np_train(...)``: meta-train the neural processes of a model over a task source.

The model is run once on its data to build its networks; every ``cnp``/``np``/``anp``/
``martingale_np``/``martingale_anp`` network in it is then trained on batches of tasks
(1-D GP tasks or an ``.npz`` task file) with Adam and cosine decay, minimising its
per-point training loss (METHODS.md section 3; docs/constructs/neural_process.md). The
weights stay registered
with Pyro (``pyro.module``), so they land in ``Fit.params`` and in a run folder's
``params.pt``, and ``bdl predict`` conditions the trained network on new context.
The fit keeps 1000 draws (the number ``Fit.predict`` makes) of each site whose
distribution is a neural-process predictive, as deterministic draws [1, 1000, ...].
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pyro
import torch

from ..constructs.neural_process import GP_TASK_ARGS
from ..runtime import neural_process as npr
from ..runtime.nn import _CACHE
from ..syntax.diagnostics import BdlError, Diagnostic, Span
from .fit import Fit
from .methods import SITE

PREDICTIVE_DRAWS = 1000


def task_source(spec, x_dim: int, y_dim: int, name: str = "the network"):
    """The task source an ``np_train(tasks=...)`` value names (checked already by
    ``ppl.constructs.neural_process.task_source_problem``): a kernel name, a
    ``gp_tasks(...)`` or ``task_file(...)`` call (as :func:`ppl.check.checker.option_value`
    gives it), or a task source object (``npr.GPTasks``/``npr.FileTasks``) from Python."""
    if hasattr(spec, "sample"):
        return spec
    if isinstance(spec, str):
        spec = {"call": "gp_tasks", "args": [], "kwargs": {"kernel": spec}}
    if spec["call"] == "task_file":
        written = (spec["args"] or [spec["kwargs"].get("path")])[0]
        site = spec.get(SITE, {})
        path = site.get("file", written)
        if not Path(path).is_file():
            where = ("a path in a model file is relative to the model file's folder"
                     if "file" in site else "relative to the current directory")
            _task_source_error(spec, f"np_train: task_file: no file {written!r} (looked for "
                                   f"{str(Path(path).absolute())!r}; {where})")
        try:
            src = npr.FileTasks(path)
        except npr.TaskFileError as e:
            _task_source_error(spec, f"np_train: {e}")
        got = (src.arrays["xc"].shape[-1], src.arrays["yc"].shape[-1])
        if got != (x_dim, y_dim):
            _task_source_error(spec, f"np_train: {path} has x_dim, y_dim = {got}, {name} "
                                   f"expects {(x_dim, y_dim)}")
        return src
    if (x_dim, y_dim) != (1, 1):
        _task_source_error(spec, f"np_train: GP tasks are 1-D (x_dim=1, y_dim=1) but {name} "
                               f"has x_dim={x_dim}, y_dim={y_dim}",
                         ["train it on tasks of its dimensions: tasks=task_file(\"PATH.npz\")"])
    args = {k: v[0] for k, v in GP_TASK_ARGS.items()}
    args.update(spec["kwargs"])
    return npr.GPTasks(args["kernel"], lengthscale=tuple(args["lengthscale"]),
                       scale=tuple(args["scale"]), period=tuple(args["period"]),
                       noise=args["noise"], tnoise_scale=args["tnoise_scale"],
                       max_points=args["max_points"])


def _task_source_error(spec, message: str, notes: list[str] | None = None):
    """Raise ``message`` as a user error (:class:`BdlError`): at the ``tasks=task_file(...)``
    option of the model file, with its line and column, as the checker's errors; without
    a location for a task source from ``--infer``, Python or the default."""
    at = spec.get(SITE, {}).get("at") if isinstance(spec, dict) else None
    if at is None:
        raise BdlError([Diagnostic(message, notes=notes or [])], "infer")
    filename, line, col = at
    try:
        source = Path(filename).read_text() if not filename.startswith("<") else None
    except OSError:
        source = None
    raise BdlError([Diagnostic(message, Span(line, col), notes=notes or [])], filename, source)


def neural_processes() -> dict[str, npr.NeuralProcess]:
    """The neural-process networks built by the last model run, by site name."""
    return {key[0]: mod for key, mod in _CACHE.items() if isinstance(mod, npr.NeuralProcess)}


def run(model, kwargs, opts, progress=False) -> Fit:
    from .run import _diverged

    with torch.no_grad():
        pyro.poutine.trace(model).get_trace(**kwargs)  # builds (and registers) the networks
    nets = neural_processes()
    if not nets:
        raise ValueError("np_train: the model has no neural process network (cnp, np, anp, "
                         "martingale_np, martingale_anp)")
    gen = torch.Generator().manual_seed(int(opts["seed"]))
    losses: dict[str, list[float]] = {}
    evals: dict[str, dict[str, float]] = {}
    every = max(1, opts["steps"] // 20)
    for name, net in nets.items():
        tasks = task_source(opts["tasks"], net.x_dim, net.y_dim, f"network '{name}'")

        done = [0]  # the steps taken

        def report(step, loss, name=name, done=done):
            done[0] = step + 1
            if not math.isfinite(loss):
                raise _diverged("np_train", step, opts, f"the loss of network '{name}' "
                                f"became {'NaN' if math.isnan(loss) else 'infinite'}")
            if progress and (step % every == 0 or step == opts["steps"] - 1):
                print(f"{name}: step {step + 1}/{opts['steps']}  loss {loss:.4g}",
                      file=sys.stderr)

        try:
            losses[name] = npr.train(net, tasks, opts["steps"], opts["batch"], lr=opts["lr"],
                                     num_samples=opts["train_samples"], gen=gen,
                                     callback=report)
        except npr.GPTaskError as e:  # the task source's arguments: at the tasks= option
            _task_source_error(opts["tasks"], f"np_train: {e}")
        except ValueError as e:  # a distribution refusing the NaN that a step made
            if all(bool(torch.isfinite(p).all()) for p in net.parameters()):
                raise
            raise _diverged("np_train", done[0], opts, f"the weights of network '{name}' "
                            "became NaN or infinite") from e
        if not all(bool(torch.isfinite(p).all()) for p in net.parameters()):
            raise _diverged("np_train", opts["steps"] - 1, opts, f"the weights of network "
                            f"'{name}' became NaN or infinite")
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
