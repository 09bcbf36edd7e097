"""The ``meta`` inference method's runner: ``infer meta(...)`` meta-trains the single
``f ~ niw_meta(...)`` of a BDL model with NIW hierarchical Bayes and the one-time episodic
update (Kim & Hospedales, ICLR 2024; METHODS.md §4), scores it on meta-test episodes, then
adapts to the support set of the data given. This module checks the model, its data, the
episode source and the validation options against one another (user errors, located at
the option where it was written) and runs the harness, whose parts are:

* :mod:`ppl.infer.meta_trainers` -- NIW and the baselines MAML (first/second order) and
  ProtoNet (``Plain``) in the same harness, their optimiser and the meta-batch helpers;
* :mod:`ppl.infer.meta_tasks` -- the episode likelihoods: a regression network, the
  prototype classifier, and a BDL model (``ModelTask``, the one this runner uses);
* :mod:`ppl.infer.meta_fisher` -- Fisher factors, Jacobians and Gram eigenvalues (the
  curvature of NIW's local update and of its SGLD step cap);
* :mod:`ppl.infer.meta_eval` -- ``meta_train`` (with meta-validation checkpoints) and
  ``evaluate`` (query error, NLL, ECE and their intervals), the per-episode memory meter.

Each imports only those above it in the order fisher, tasks, trainers, eval, this runner.

A *task* gives the episode likelihood as a function of the flat weight vector theta:
``task.loss(theta, ep, part)`` is -log p(D | theta) summed over the support
(``part="support"``) or query (``part="query"``) points of one episode, and
``task.metrics(thetas, ep)`` the query scores of a batch of draws (and, for NIW's
``sgld_precision`` other than "variance", ``task.fisher_factor(theta, ep, part)``: U with
U^T U the Fisher information of that summed NLL). Trainers hold the
global parameters and give ``episode_loss(task, ep)`` (what meta-training minimises) and
``draws(task, ep)`` (test-time adaptation on the support set, then draws).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ..constructs.niw_meta import META_OPTIONS
from ..runtime import niw_meta as rtn
from ..runtime.dependent_support import support_ends
from .meta_eval import evaluate, meta_train
from .meta_tasks import ModelTask
from .meta_trainers import NIW, split
from .methods import number_text


def _user_error(message: str, notes: list[str] | None = None):
    """A user error of the ``meta`` runner (exit status 1 from the CLI, not an internal
    error): the model, its data or the episode source do not fit together."""
    from ..syntax.diagnostics import BdlError, Diagnostic

    return BdlError([Diagnostic(message, notes=notes or [])], "infer")


def _check_model(kwargs):
    for k in ("xs", "ys", "xq", "yq"):
        if k not in kwargs:
            raise _user_error(f"infer meta needs a model whose data declares xs, ys (support "
                              f"set) and xq, yq (query set); this model has no '{k}'",
                              ["e.g. model M(xs: real[S, 1], ys: real[S], xq: real[Q, 1], "
                               "yq: real[Q])"])
        if kwargs[k] is None:
            raise _user_error("infer meta needs the model's data arguments xs, ys (support) "
                              f"and xq, yq (query); '{k}' is missing from the data")


#: the arrays an episodes ``.npz`` file holds (:class:`ppl.runtime.niw_meta.NpzEpisodes`)
EPISODE_ARRAYS = tuple(f"{s}_{k}" for s in ("train", "test") for k in ("xs", "ys", "xq", "yq"))


def _episodes_error(episodes, message: str, notes: list[str] | None = None):
    """``message`` as a user error at the ``episodes=`` option of the model file when it
    was written there (:class:`ppl.constructs.niw_meta.EpisodesFile`), else unlocated."""
    from .methods import SITE
    from .np_meta import _task_source_error

    at = getattr(episodes, "at", None)
    _task_source_error({SITE: {"at": at}} if at else {}, message, notes)


def episodes_path(episodes) -> str:
    """The file an ``episodes`` option reads (a built-in source name is returned as it
    is): a ``.npz`` path written in a model file is relative to the model file's folder
    (as ``np_train``'s ``task_file``; no fall-back to the working directory), one given
    from Python or ``--infer`` to the working directory. A missing file, or one that is
    not an ``.npz`` of the episode arrays (:data:`EPISODE_ARRAYS`), is a user error naming
    the file and what it lacks."""
    import numpy as np

    if not episodes.endswith(".npz"):
        return episodes
    anchored = getattr(episodes, "file", None)
    path = anchored or str(episodes)
    if not Path(path).is_file():
        where = ("a path in a model file is relative to the model file's folder"
                 if anchored else "relative to the current directory")
        _episodes_error(episodes, f"option 'episodes' of meta: no file {str(episodes)!r} "
                                  f"(looked for {str(Path(path).absolute())!r}; {where})")
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        why = "it holds pickled Python objects" if "pickle" in str(e) else str(e)
        _episodes_error(episodes, f"option 'episodes' of meta: {path} is not an episodes "
                                  f"file (an .npz of numeric arrays): {why}")
    files = list(getattr(z, "files", []))
    try:
        missing = [k for k in EPISODE_ARRAYS if k not in files]
        if missing:
            _episodes_error(episodes, f"option 'episodes' of meta: {path} lacks arrays "
                                      f"{', '.join(missing)}",
                            [f"an episodes file holds {', '.join(EPISODE_ARRAYS)}, each "
                             f"[episodes, points, ...] (it has {', '.join(files) or 'none'})"])
        for k in EPISODE_ARRAYS:
            try:
                kind = z[k].dtype.kind
            except ValueError:  # an object array, refused without allow_pickle
                kind = "O"
            if kind not in "biuf":
                _episodes_error(episodes, f"option 'episodes' of meta: array {k} of {path} "
                                          "must be numeric"
                                          + (" (it holds pickled Python objects)"
                                             if kind == "O" else ""))
    finally:
        if hasattr(z, "close"):
            z.close()
    return path


def _misfit(episodes, k: str, message: str, notes: list[str]):
    """Raise episodes that do not fit the model's data ``k`` as a located user error: at
    the ``episodes=`` option where the model file wrote it, else at the statement that
    observes the set ``k`` belongs to (``ys ~ ...`` for xs and ys, ``yq ~ ...`` for xq
    and yq; ``ppl.locate`` finds it by the site's name)."""
    from ..locate import SiteError

    if getattr(episodes, "at", None):
        _episodes_error(episodes, message, notes)
    raise SiteError(message, "ys" if k in ("xs", "ys") else "yq", notes)


def _size_mismatch(episodes, k: str, probe: dict, kwargs: dict) -> tuple[str, list[str]]:
    """(message, notes) for episodes whose support or query set has another number of
    points than the data's (``k``: the first array that differs). sine_line episodes
    split 50 points: the data's support size (xs) sets the shots, the rest are queries."""
    s_ep, q_ep = probe["xs"].shape[1], probe["xq"].shape[1]
    s_data, q_data = kwargs["xs"].shape[0], kwargs["xq"].shape[0]
    if episodes == "sine_line" and k in ("xq", "yq"):
        total = s_ep + q_ep
        return (f"sine_line episodes have {total} points, split into the support set and "
                f"the query set: the data's support size (xs: {s_data} points) leaves "
                f"{q_ep} query points, but the data's {k} has {q_data}",
                [f"the support and query sets of the data add up to {total}: with xs of "
                 f"{s_data} points, xq and yq have {total - s_data}; with xq of {q_data}, "
                 f"xs and ys have {total - q_data}"])
    if k in ("xs", "ys"):
        return (f"the support size differs: episodes '{episodes}' have {s_ep} support "
                f"points, the data's {k} has {kwargs[k].shape[0]}",
                ["give the model's support set (xs, ys) the episodes' size"])
    return (f"the query size differs: episodes '{episodes}' have {q_ep} query points, "
            f"the data's {k} has {q_data}",
            ["give the model's query set (xq, yq) the episodes' size"])


#: the seed of infer meta's validation episodes is this plus the fit's seed (the same
#: offset as benchmarks/fewshot.py's validation episodes)
VAL_EPISODE_SEED = 20_000


def _check_validation(opts) -> int:
    """The number of validation episodes; a user error for a validation option given
    without ``val_episodes`` (it would be silently ignored), ``val_classes`` with a
    source that has no classes, or ``rotations`` other than 1 to 4 or for a source other
    than digits."""
    n_val = opts["val_episodes"]
    if not n_val:
        for key in ("val_every", "select", "val_classes", "val_fraction"):
            if opts[key] != META_OPTIONS[key].default:  # the table's default: not given
                raise _user_error(f"option '{key}' of meta needs val_episodes > 0 (the "
                                  "meta-validation episodes it applies to)")
    elif opts["val_classes"] and opts["episodes"] not in ("digits", "gauss"):
        raise _user_error(f"option 'val_classes' of meta: episodes '{opts['episodes']}' have "
                          "no classes to hold out",
                          ["use val_fraction (.npz: the last train episodes; sine_line: "
                           "validation episodes are other draws and need neither)"])
    if opts["rotations"] != 1 and opts["episodes"] != "digits":
        raise _user_error(f"option 'rotations' of meta: episodes '{opts['episodes']}' have no "
                          "images to rotate (rotated classes are for episodes=\"digits\")")
    if opts["rotations"] > 4:
        raise _user_error(f"option 'rotations' of meta: at most 4 quarter turns, got "
                          f"{opts['rotations']}")
    return n_val


#: what an episode likelihood must be for meta-training, in words (the note of its errors)
LIKELIHOODS = ("infer meta trains the weights through the log density of ys and yq, so "
               "each must be a distribution with a density whose support does not depend "
               "on the weights and holds every episode value: Normal, StudentT, Cauchy or "
               "Laplace for regression episodes, Categorical for classification")


def _check_likelihood(model, kwargs: dict, name: str, theta, episode: dict, episodes):
    """The sites ``ys`` and ``yq`` of one trace of ``model`` on the first training
    ``episode`` with the weights ``name`` at ``theta``: each must be an observed sample
    site whose support holds the episode's values and does not follow the weights, and
    whose log density depends on the weights. Else a :class:`~ppl.locate.SiteError` at the
    site's statement (was a torch error from deep in meta-training: exit 3)."""
    import pyro

    from ..locate import SiteError, support_words

    th = theta.detach().clone().requires_grad_(True)
    kw = {**kwargs, **episode}
    with torch.enable_grad():
        tr = pyro.poutine.trace(pyro.poutine.condition(model, data={name: th})).get_trace(**kw)
    for site in ("ys", "yq"):
        node = tr.nodes.get(site)
        if node is None or node["type"] != "sample" or not node["is_observed"]:
            raise _user_error(f"infer meta needs the model to observe '{site}' (a statement "
                              f"{site} ~ ...), its episode likelihood", [LIKELIHOODS])
        fn = ModelTask._pointwise(node["fn"])
        family = type(fn).__name__
        support = fn.support
        while hasattr(support, "base_constraint"):  # independent, a mixture's: its elements'
            support = support.base_constraint
        if any(isinstance(b, torch.Tensor) and b.requires_grad for b in support_ends(support)):
            raise SiteError(f"infer meta: the support of {family} for '{site}' follows the "
                            "weights, so an episode value may fall outside it", site,
                            [LIKELIHOODS])
        value = node["value"]
        with torch.no_grad():
            inside = support.check(value)
        if not bool(inside.all()):
            bad = (~inside).nonzero()
            at = tuple(bad[0].tolist()) if inside.dim() else ()
            words = support_words(support, at, inside.shape)[0]
            raise SiteError(f"episodes '{episodes}' give {site} = "
                            f"{number_text(value[at].detach())} (point {at[0] if at else 0} "
                            f"of the first training episode), outside {family}'s support "
                            f"({words})", site, [LIKELIHOODS])
        with torch.enable_grad():
            lp = fn.log_prob(value)
        if not lp.requires_grad:
            raise SiteError(f"infer meta: the log density of {family} for '{site}' does not "
                            "depend on the weights (nothing to meta-train)", site,
                            [LIKELIHOODS])


def run(model, kwargs, opts, progress=False):
    """The ``meta`` runner: meta-train the single ``f ~ niw_meta(...)`` of the model on
    episodes from ``opts['episodes']``, evaluate on meta-test episodes, then adapt to the
    support set of the data given (xs, ys) and return ``samples`` draws of the weights
    from q*. ``fit.meta`` holds the learned globals, the loss history and the meta-test
    metrics. With ``val_episodes`` > 0 the checkpoint with the lowest validation score
    (``select``) on that many fixed episodes of the source's held-out "val" split (never
    "test") is kept, as in :func:`ppl.infer.meta_eval.meta_train`; ``fit.meta`` then adds
    ``best_step``, ``val_err``, ``val_nll`` (at the kept checkpoint), ``val_curve`` and
    ``select``."""
    import pyro

    from ..constructs.niw_meta import episodes_problem
    from .fit import Fit

    _check_model(kwargs)
    problem = episodes_problem(opts["episodes"])
    if problem:
        raise _user_error(f"option 'episodes' of meta: {problem}")
    rtn.SITES.clear()
    tr = pyro.poutine.trace(model).get_trace(**kwargs)
    names = [n for n in tr.nodes if n in rtn.SITES]
    if len(names) != 1:
        raise _user_error("infer meta needs exactly one 'f ~ niw_meta(...)' in the model, "
                          f"found {len(names)}")
    name = names[0]
    cfg = rtn.SITES[name]
    o = cfg.options
    ys = kwargs["ys"]
    classify = not torch.is_floating_point(ys)
    ways = int(ys.max()) + 1 if classify else 0
    shots = ys.shape[0] // ways if classify else ys.shape[0]
    queries = kwargs["yq"].shape[0] // ways if classify else kwargs["yq"].shape[0]
    where = episodes_path(opts["episodes"])
    n_val = _check_validation(opts)
    try:
        src = rtn.source(where, shots=shots, ways=max(ways, 1), queries=queries,
                         val_fraction=opts["val_fraction"] if n_val else 0.0,
                         val_classes=opts["val_classes"] if n_val else 0,
                         rotations=opts["rotations"])
    except ValueError as e:
        if not n_val:
            raise
        # the split the options ask for does not fit the source (too few classes,
        # points or episodes): the options' error, not an internal one
        which = "val_classes" if opts["val_classes"] else "val_fraction"
        raise _user_error(f"option '{which}' of meta: {e}") from None
    probe = src.sample(1, "train")
    if probe["ys"].is_floating_point() != (not classify):
        want, got = (("classification", "integer labels") if classify
                     else ("regression", "real ys"))
        _misfit(
            opts["episodes"], "ys",
            f"episodes '{opts['episodes']}' are {src.kind} episodes, but the model's data "
            f"is {want} ({got})",
            [("classification episodes (digits, gauss) need integer labels ys: int[S], "
              "yq: int[Q] and a Categorical likelihood") if src.kind == "classification"
             else ("regression episodes (sine_line) need real ys: real[S], yq: real[Q]; "
                   "for classification use episodes=\"digits\" or \"gauss\"")])
    for k in ("xs", "ys", "xq", "yq"):
        got, want = tuple(probe[k].shape[1:]), tuple(kwargs[k].shape)
        if got[1:] == want[1:] and got[:1] != want[:1]:
            _misfit(opts["episodes"], k, *_size_mismatch(opts["episodes"], k, probe, kwargs))
        if got != want:
            _misfit(opts["episodes"], k,
                    f"episodes '{opts['episodes']}' give {k} of shape "
                    f"{tuple(probe[k].shape[1:])}, the model's data has "
                    f"{tuple(kwargs[k].shape)}",
                    ["declare the model's data with the episodes' shapes (sine_line: xs "
                     "real[S, 1]; digits: xs real[S, 64]; a .npz file: its arrays' shapes "
                     "after the episode axis)"])
    device = kwargs["xs"].device

    def to_dev(b):
        return {k: v.to(device) for k, v in b.items()}

    class _Src:
        kind = src.kind

        def sample(self, n, split_="train", generator=None):
            return to_dev(src.sample(n, split_, generator))

    _check_likelihood(model, kwargs, name, cfg.flat.vector().to(device),
                      to_dev({k: v[0] for k, v in probe.items()}), opts["episodes"])
    task = ModelTask(model, kwargs, name, src.kind)
    # N of the hyperprior's KL / N: the meta-training episodes unless the user sets it
    kl_episodes = opts["kl_episodes"] or opts["steps"] * opts["batch"]
    trainer = NIW(cfg.flat.vector().to(device), n0=o["n0"], gamma0=o["gamma0"], l0=o["l0"],
                  sgld_steps=o["sgld_steps"], sgld_lr=o["sgld_lr"], sgld_temp=o["sgld_temp"],
                  a_max=o["a_max"], sgld_burn=o["sgld_burn"],
                  sgld_power_iters=o["sgld_power_iters"],
                  sgld_precision=o["sgld_precision"], variant=opts["variant"],
                  lr=opts["lr"],
                  lr_hyper=opts["lr_hyper"], kl_episodes=kl_episodes,
                  test_samples=opts["test_samples"], query_draws=o["query_draws"],
                  query_mix=o["query_mix"])
    val = None
    if n_val:
        # fixed episodes of the held-out "val" split (never "test"), drawn by their own
        # generator so that they neither replay nor shift the training stream
        val = split(_Src().sample(n_val, "val",
                                  torch.Generator().manual_seed(VAL_EPISODE_SEED
                                                                + opts["seed"])))
    info = meta_train(trainer, task, _Src(), steps=opts["steps"], batch=opts["batch"],
                      progress=progress, measure_memory=False, val=val,
                      val_every=opts["val_every"] or max(1, opts["steps"] // 10),
                      select=opts["select"])
    if n_val:
        info.update(select=opts["select"], val_episodes=n_val)
        if progress:
            print(f"meta-validation ({n_val} episodes, by {opts['select']}): kept step "
                  f"{info['best_step']}/{opts['steps']}, val err {info['val_err']:.4g}, "
                  f"val nll {info['val_nll']:.4g}", file=sys.stderr)
    test = split(_Src().sample(opts["test_episodes"], "test"))
    info["test"] = evaluate(trainer, task, test)
    m0, gamma0, n0, l0 = (x.detach() for x in trainer.globals())
    cfg.state = {"m0": m0, "gamma0": gamma0, "n0": float(n0), "l0": float(l0)}
    data_ep = {k: kwargs[k] for k in ("xs", "ys", "xq", "yq")}
    draws = trainer.draws(task, data_ep, n=opts["samples"])
    fit = Fit(model, kwargs, chains={name: draws[None]}, latents=[name], deterministics=[])
    info.update(m0=m0, gamma0=gamma0, n0=float(n0), l0=float(l0),
                sgld_precision=trainer.precision, kl_episodes=float(kl_episodes))
    fit.meta = info
    return fit
