"""Run an inference method on a bound model through Pyro: MCMC (NUTS/HMC), SVI, MAP.

Chains run one after another in this process, chain c seeded ``chain_seed(seed, c)``
(``seed`` itself for chain 0, a hash of (seed, c) for the others: ppl.infer.methods), so
runs are reproducible, need no multiprocessing, and runs of nearby seeds share no chain.
Deterministic sites are recomputed from the draws with ``pyro.infer.Predictive``, as Pyro
recommends.
"""

from __future__ import annotations

import contextlib
import math
import re
import sys
import time
import warnings

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import TorchDistribution
from pyro.infer import HMC, MCMC, NUTS, SVI, JitTrace_ELBO, Trace_ELBO, autoguide
from pyro.infer.autoguide.initialization import init_to_sample, init_to_uniform
from pyro.optim import Adam, ExponentialLR
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites

from ..runtime.functions import full_data
from .discrete import enumerable_sites, svi_parts
from .draws import site_draws
from .fit import Fit
from .methods import METHODS, chain_seed

RUNNERS = {}


def runner(name):
    def deco(fn):
        RUNNERS[name] = fn
        return fn
    return deco


@contextlib.contextmanager
def torch_defaults(device: str, dtype: str):
    """Every tensor the model creates (constants included) follows device and dtype."""
    old_dtype = torch.get_default_dtype()
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device cuda was asked for, but CUDA is not available here "
                           "(torch.cuda.is_available() is False)")
    torch.set_default_dtype(getattr(torch, dtype))
    # ``with torch.device(...)`` installs a TorchFunctionMode that intercepts every torch
    # call; on the default (CPU) device it changes nothing but costs ~35% of a small
    # model's NUTS/SVI time, so it is only entered when another device is asked for.
    on_default = dev.type == "cpu" and torch.empty(0).device.type == "cpu"
    try:
        with contextlib.nullcontext() if on_default else torch.device(dev):
            yield
    finally:
        torch.set_default_dtype(old_dtype)


def resolve_options(method: str, options: dict) -> dict:
    """Defaults of the method, overridden by ``options`` (of the right types, checked
    before); a value out of its option's range, or seeds that do not fit with the chains
    (``Method.problems``), is a :class:`BdlError` here, however the options were given
    (file, ``--infer``, keywords, a generated module run on its own)."""
    from ..syntax.diagnostics import BdlError, Diagnostic
    from .methods import lookup

    spec = lookup(method)  # loads the constructs, whose methods (sghmc, meta) register late
    out = {k: o.default for k, o in spec.options.items()}
    out.update(options)
    problems = spec.problems(out)
    if problems:
        raise BdlError([Diagnostic(f"option '{k}' of {method}: {p}") for k, p in problems],
                       "infer")
    return out


def fit(model, kwargs: dict, method: str, opts: dict, *, progress: bool = False,
        sites: dict | None = None, runner=None) -> Fit:
    """Run ``method`` (or ``runner`` in its place) from a fresh param store, networks and
    seed; the Fit records the method, options and wall time."""
    fn = runner or RUNNERS.get(method) or _import_runner(METHODS[method].runner)
    pyro.clear_param_store()
    from ..runtime import reset_networks

    reset_networks()
    pyro.set_rng_seed(opts["seed"])
    t0 = time.perf_counter()
    result = fn(_DeltaFixed()(model), kwargs, opts, progress=progress)
    result.wall_time = time.perf_counter() - t0
    result.method, result.options = method, dict(opts)
    result.sites = sites or {}
    _show_in_support(result)
    return result


def _show_in_support(result: Fit) -> None:
    """A latent drawn by ``rt.sample_in_support`` is ``z`` to the user: its recorded
    value takes the place of the auxiliary ``z$unconstrained`` among the latents, and the
    auxiliary's draws are dropped (predictions condition on ``z`` itself, which the model
    then returns as it is)."""
    from ..runtime.dependent_support import SUFFIX

    aux = [k for k in result.latents if k.endswith(SUFFIX)]
    for k in aux:
        name = k[: -len(SUFFIX)]
        result.latents[result.latents.index(k)] = name
        if name in result.deterministics:
            result.deterministics.remove(name)
        result.chains.pop(k, None)


def _import_runner(path: str):
    """``"ppl.infer.sghmc:run"`` -> the function (runners of constructs load lazily)."""
    import importlib

    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _hidden_sites(model, kwargs, trace=None) -> tuple[list[str], list[str]]:
    """Names of latent and deterministic sites from one prior trace (``trace``, or a new
    one of ``model``)."""
    tr = prune_subsample_sites(trace if trace is not None
                               else pyro.poutine.trace(model).get_trace(**kwargs))
    latents, dets = [], []
    for name, site in tr.nodes.items():
        if site["type"] != "sample":
            continue
        if site["infer"].get("_deterministic"):
            dets.append(name)
        elif not site["is_observed"]:
            latents.append(name)
    return latents, dets


@runner("nuts")
def _nuts(model, kwargs, opts, progress=False):
    if _jit_refused(model, kwargs, opts, "nuts"):
        opts = {**opts, "jit": False}

    def kernel(model, init_strategy=init_to_uniform):
        return NUTS(model, target_accept_prob=opts["target_accept"],
                    max_tree_depth=opts["max_tree_depth"], full_mass=opts["dense_mass"],
                    jit_compile=opts["jit"], ignore_jit_warnings=True,
                    init_strategy=init_strategy)
    return _mcmc(kernel, model, kwargs, opts, progress, "nuts")


@runner("hmc")
def _hmc(model, kwargs, opts, progress=False):
    if _jit_refused(model, kwargs, opts, "hmc"):
        opts = {**opts, "jit": False}

    def kernel(model, init_strategy=init_to_uniform):
        return HMC(model, step_size=opts["step_size"], num_steps=opts["num_steps"],
                   target_accept_prob=opts["target_accept"], full_mass=opts["dense_mass"],
                   jit_compile=opts["jit"], ignore_jit_warnings=True,
                   init_strategy=init_strategy)
    return _mcmc(kernel, model, kwargs, opts, progress, "hmc")


def _without_jacobian(model):
    """A point estimate (``map``, ``svi``'s delta guide) is the mode of the density in the
    constrained space for every latent, Pyro's AutoDelta (Stan's ``optimize`` default):
    a latent whose support follows others is drawn on the real line, and its density
    there then leaves out the log-Jacobian (ppl.runtime.dependent_support)."""
    from ..runtime.dependent_support import without_jacobian

    def point(**kw):
        with without_jacobian():
            return model(**kw)
    return point


def _on_full_data(model):
    """NUTS/HMC need exact gradients: subsampled plates (``batch``) use all their data."""
    from ..runtime import full_data

    def full(**kw):
        with full_data():
            return model(**kw)
    return full


def _family(fn):
    """The distribution under Pyro's wrappers (Independent, Expanded, Masked): the family
    a site was drawn from."""
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn


class _DeltaFixed(Messenger):
    """A latent drawn from ``Delta(v)`` has one value, ``v``: in a fit it is a
    deterministic site at ``v`` (as ``pyro.deterministic`` records one), not a latent for
    the guide or the sampler to move. Moved, its density is -inf off ``v`` (every svi/map
    step diverged) and a model of Delta latents alone gave NUTS nothing to differentiate
    (a raw torch RuntimeError)."""

    def _pyro_sample(self, msg):
        if msg["is_observed"]:
            return
        if isinstance(_family(msg["fn"]), dist.Delta):
            fn = msg["fn"]
            plates = {f.dim for f in msg["cond_indep_stack"] if f.vectorized}
            own = 0  # its batch dims right of every plate's (Delta([1.0, 2.0])) are events
            while own < len(fn.batch_shape) and -(own + 1) not in plates:
                own += 1
            # rsample: v may follow other latents (a ~ Delta(2 * b)), whose gradient
            # must pass through a
            msg["value"] = fn.rsample()
            msg["fn"] = (fn.to_event(own) if own else fn).mask(False)
            msg["is_observed"] = True
            msg["infer"] = {**msg["infer"], "_deterministic": True, "_delta": True}


class _InSupport(TorchDistribution):
    """``base`` whose log density is -inf where the value lies outside its support (as
    Stan's is), where torch's formulas, unvalidated, give a finite number."""

    arg_constraints = {}

    def __init__(self, base):
        self.base = base
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    @property
    def support(self):
        return self.base.support

    def expand(self, batch_shape, _instance=None):
        return _InSupport(self.base.expand(batch_shape))

    def sample(self, sample_shape=()):
        return self.base.sample(torch.Size(sample_shape))

    def log_prob(self, value):
        lp = _unvalidated(self.base).log_prob(value)
        inside = self.base.support.check(value)
        while inside.dim() > lp.dim():  # a support over fewer event dims than the site's
            inside = inside.all(-1)
        return torch.where(inside, lp, torch.full_like(lp, -math.inf))


def _unvalidated(fn):
    """``fn`` (and the distributions under its wrappers) without torch's check of the
    value: :class:`_InSupport` gives -inf outside the support where a validated fit (svi,
    map) would raise."""
    import copy

    if not getattr(fn, "_validate_args", False) and not hasattr(fn, "base_dist"):
        return fn
    fn = copy.copy(fn)
    fn._validate_args = False
    if isinstance(getattr(fn, "base_dist", None), torch.distributions.Distribution):
        fn.base_dist = _unvalidated(fn.base_dist)
    return fn


class _RejectOutside(Messenger):
    """The observed sites ``names`` get log density -inf outside their support
    (:class:`_InSupport`): the sampler rejects a proposal that puts their data there."""

    def __init__(self, names):
        super().__init__()
        self.names = frozenset(names)

    def _pyro_sample(self, msg):
        if msg["name"] in self.names and msg["is_observed"]:
            msg["fn"] = _InSupport(msg["fn"])


def _divergences(mcmc: MCMC, public: bool | None = None) -> int:
    """Number of divergent transitions of a one-chain run: from Pyro's public
    ``diagnostics()`` when the run has at least 4 draws (``public`` forces a choice)."""
    if public if public is not None else mcmc.num_samples >= 4:
        div = mcmc.diagnostics().get("divergences", {})
        return sum(len(v) for v in div.values()) if isinstance(div, dict) else 0
    # Pyro's public diagnostics() computes split R-hat, which asserts at least 4 draws; the
    # per-chain divergence lists it reads are kept on the MCMC object.
    return sum(len(d.get("divergences", [])) for d in getattr(mcmc, "_diagnostics", []))


def check_supports(model, kwargs: dict, trace, labelled: set | None = None) -> set[str]:
    """Every observed value in a support that the data alone fix, or Pyro's error naming
    the site (``Error while computing log_prob at site 'y'``, located at its statement by
    ``ppl.locate``), before any method moves. SVI meets the error at its first step
    anyway, but NUTS and HMC run with Pyro's validation off (``MCMC(disable_validation=
    True)``) and sghmc's loop too, so they would fit a negative count, a Multinomial whose
    counts do not sum to n or k > n of a Binomial silently, or fail with no starting point.

    ``trace`` is a prior draw of ``model`` (nuts, hmc and svi start elsewhere: only
    sghmc's is its starting point), so only sites whose support does not depend on the
    latents are checked (:func:`_latent_free_observed`): ``y ~ Uniform(0, th)`` with
    ``y = 8`` is valid data that a draw ``th = 7.7`` would refuse. One validated log
    density of those sites is taken. A model with subsampled plates is traced once more
    over all its rows (random streams restored), so that no row escapes. Returns the
    names of the observed sites checked; ``labelled``, where given, gets those of them
    whose support follows the labels summed out and leaves out their data at some of the
    labels' values (``k ~ Categorical(w); y ~ Uniform(0, b[k])`` at ``y = 0.7``, ``b =
    [0.5, 2.0]``; :func:`_label_supports`): their log density is -inf at those values in
    the fit (:func:`supports_checked`), where a validated one would stop."""
    if _subsampled_plates(trace) is not None:
        from .rng import seeded

        with seeded(0), full_data(), torch.no_grad(), pyro.validation_enabled(True):
            trace = pyro.poutine.trace(model).get_trace(**kwargs)
    checked = _latent_free_observed(model, kwargs, trace)
    found = _label_supports(model, kwargs, trace)
    if labelled is not None:
        labelled.update(name for name in found if name in checked)
    try:
        with pyro.validation_enabled(True):
            trace.compute_log_prob(
                site_filter=lambda name, site: name in checked and name not in found)
        for name, inside in found.items():
            if name in checked and not bool(inside.all()):
                _outside_every_label(trace, name, inside)
    finally:
        for site in trace.nodes.values():  # the runner's trace, left as it was
            site.pop("log_prob", None)
            site.pop("unscaled_log_prob", None)
    return checked


def supports_checked(model, kwargs: dict, trace) -> tuple:
    """:func:`check_supports` at a fit's start: ``(model, checked)``, the model wrapped in
    :class:`_RejectOutside` where data lie outside a support at some of the labels'
    values (density 0 there), and the names of the observed sites checked."""
    labelled: set = set()
    checked = check_supports(model, kwargs, trace, labelled)
    return (_RejectOutside(labelled)(model) if labelled else model), checked


def _label_supports(model, kwargs: dict, trace) -> dict:
    """The observed sites of ``trace`` whose support follows a label (a finite-support
    latent, summed out in the fit) and leaves out its data at some value of the labels,
    each with where its data are inside the support at some value (a mask over the site's
    plate elements). The model is run with its labels enumerated (Pyro's parallel
    enumeration, as the fit sums them out) and its other latents at their values in
    ``trace``; a support follows a label where a tensor it holds (a bound) has an
    enumerated dim. A model that cannot be run so: none (checked at the draw, as
    before)."""
    from .discrete import enumerated, plate_nesting
    from .rng import seeded

    if not enumerable_sites(trace):
        return {}
    nesting = plate_nesting(trace)
    leaves = {name: site["value"].detach()
              for name, site in trace.nodes.items()
              if site["type"] == "sample" and not site["is_observed"]
              and isinstance(site["value"], torch.Tensor)
              and site["value"].is_floating_point()
              and not getattr(site["fn"], "has_enumerate_support", False)}
    run = poutine.enum(enumerated(poutine.condition(model, data=leaves)),
                       first_available_dim=-1 - nesting)
    full = full_data() if _subsampled_plates(trace) is not None else contextlib.nullcontext()
    try:
        with seeded(0), full, torch.no_grad(), pyro.validation_enabled(False):
            tr = pyro.poutine.trace(run).get_trace(**kwargs)
    except Exception:  # noqa: BLE001 - not enumerable so: checked at the draw
        return {}
    out = {}
    for name, site in tr.nodes.items():
        if site["type"] != "sample" or not site["is_observed"] or name not in trace.nodes:
            continue
        fn, value = site["fn"], site["value"]
        try:
            inside = fn.support.check(value)
            inside = torch.broadcast_to(inside, torch.broadcast_shapes(inside.shape,
                                                                       fn.batch_shape))
        except Exception:  # noqa: BLE001 - a support that cannot be checked so (a
            continue  # factor's term, batch shape [..., 0]): checked at the draw
        if inside.dim() <= nesting or not any(
                t.dim() > nesting and t.shape[:t.dim() - nesting].numel() > 1
                for t in _constraint_tensors(fn.support)):
            continue  # no label's dim in its bounds: the same support at every value
        mask = site["mask"]
        if isinstance(mask, torch.Tensor):
            inside = inside | ~mask
        flat = inside.reshape((-1,) + inside.shape[inside.dim() - nesting:])
        some = flat.any(0)
        if bool(flat.all()):
            continue  # inside at every value of the labels: no refusal anywhere
        out[name] = some
    return out


def _outside_every_label(trace, name: str, inside) -> None:
    """Raises the located error of the observed ``name`` of ``trace``, whose data are
    outside its support at every value of the labels where ``inside`` is False: torch's
    check of the support at the labels ``trace`` drew, of those elements only (the
    others, inside at another value of the labels, are shown the draw's support at a
    value inside it), with a note that no value of the labels holds them."""
    site = trace.nodes[name]
    value = site["value"]
    shown = value
    try:
        batch = value.dim() - site["fn"].event_dim
        some = inside.reshape(inside.shape[max(0, inside.dim() - batch):]) \
            if inside.dim() > batch else inside
        some = some.reshape(some.shape + (1,) * (value.dim() - some.dim()))
        with torch.no_grad():
            shown = torch.where(some, site["fn"].sample().to(value.dtype), value)
    except Exception:  # noqa: BLE001 - shown as it is, at the draw's labels
        shown = value
    names = enumerable_sites(trace)
    labels = ("label " if len(names) == 1 else "labels ") + ", ".join(f"'{k}'" for k in names)
    them = "it" if len(names) == 1 else "them"
    site["value"] = shown
    try:
        with pyro.validation_enabled(True):
            trace.compute_log_prob(site_filter=lambda n, s: n == name)
    except ValueError as exc:
        exc.add_note(f"its support follows the {labels} (summed out), and no value of "
                     f"{them} holds these data; shown at a draw of {them} from the prior")
        raise
    finally:
        site["value"] = value
    raise ValueError(f"Error while computing log_prob at site '{name}': its data are "
                     f"outside its support at every value of the {labels}")


def _latent_free_observed(model, kwargs: dict, trace) -> set[str]:
    """The observed sites of ``trace`` whose support does not depend on a latent.

    The criterion: ``model`` is traced again with every floating-point latent conditioned
    on its value in ``trace`` as a leaf tensor with ``requires_grad=True`` (its random
    streams restored), and a site is latent-free when no tensor held by its support
    constraint (bounds such as Uniform's ``high``, Binomial's ``total_count``, through
    ``independent``/expanded wrappers) requires grad. A bound computed from a latent by
    differentiable operations is caught; one that reaches the bound only through an
    integer latent or a non-differentiable step (a comparison, ``.long()``) is not, and
    is checked at the draw in ``trace``, as before. If the model cannot be traced so, only
    the sites whose support holds no tensor at all (``nonnegative``, integers >= 0) are
    checked."""
    observed = [name for name, site in trace.nodes.items()
                if site["type"] == "sample" and site["is_observed"]]
    leaves = {name: site["value"].detach().clone().requires_grad_()
              for name, site in trace.nodes.items()
              if site["type"] == "sample" and not site["is_observed"]
              and isinstance(site["value"], torch.Tensor)
              and site["value"].is_floating_point()}
    from .rng import seeded

    try:
        with seeded(0), torch.enable_grad():
            marked = pyro.poutine.trace(
                pyro.poutine.condition(model, data=leaves)).get_trace(**kwargs)
        sites = {name: marked.nodes[name] for name in observed}
        holds = _holds_grad
    except Exception:  # a model that reads a latent as a number (numpy, .item())
        sites = {name: trace.nodes[name] for name in observed}
        holds = _holds_tensor
    out = set()
    for name, site in sites.items():
        try:
            support = site["fn"].support
        except NotImplementedError:
            support = None
        if not holds(support):
            out.add(name)
    return out


def _constraint_tensors(obj, depth: int = 0):
    """The tensors a support constraint holds (its bounds, its base constraint's)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            yield from _constraint_tensors(x, depth + 1)
    elif depth < 8 and hasattr(obj, "__dict__") and not callable(obj):
        for x in vars(obj).values():
            yield from _constraint_tensors(x, depth + 1)


def _holds_grad(support) -> bool:
    return any(t.requires_grad or t.grad_fn is not None for t in _constraint_tensors(support))


def _holds_tensor(support) -> bool:
    return next(_constraint_tensors(support), None) is not None


# methods that draw the latent sites (a model with none has nothing for them to do)
SAMPLERS = ("nuts", "hmc", "sghmc")


def nothing_to_sample(method: str, trace=None):
    """The user error of a sampler run on a model whose unknowns are all ``param``s or
    construct-learned values (a monotone DBM, a fractional SDE): nothing has a posterior.
    Where the model's latents are all Delta draws (fixed values, :class:`_DeltaFixed`, in
    ``trace``, the model's traced under it), the error says so instead."""
    from ..syntax.diagnostics import BdlError, Diagnostic

    fixed = [] if trace is None else [name for name, site in trace.nodes.items()
                                      if site["type"] == "sample"
                                      and site["infer"].get("_delta")]
    if fixed:
        names = ", ".join(repr(n) for n in fixed)
        notes = [f"{'its value is' if len(fixed) == 1 else 'their values are'} the Delta's "
                 "in every draw: m.sample_prior(data) gives "
                 f"{'it' if len(fixed) == 1 else 'them'} with draws of the data, and a fit "
                 "by svi(...) or map(...) records them"]
        if any(site["type"] == "param" for site in trace.nodes.values()):
            notes.append("fit the model's params with infer map(...) or svi(...)")
        return BdlError([Diagnostic(
            f"'{method}' samples latent sites, and this model has none to move: every "
            f"latent ({names}) is fixed by Delta, so there is nothing to sample",
            notes=notes)], "infer")
    return BdlError([Diagnostic(
        f"'{method}' samples latent sites, and this model has none: its unknowns are "
        "params and construct-learned values",
        notes=["fit them with infer map(...) or svi(...)"])], "infer")


def _mcmc(make_kernel, model, kwargs, opts, progress, method: str) -> Fit:
    """Run ``opts['chains']`` chains one after another, a fresh kernel each.

    The kernel runs with Pyro's validation off, where torch's log densities stay finite
    outside a support: the observed sites whose support follows a latent (``y ~ Pareto(s,
    3)`` needs ``s <= y``; those :func:`check_supports` did not check) get log density
    -inf there (:class:`_RejectOutside`), so that a proposal leaving it is rejected, as
    Stan's sampler does. Other sites, and models with none such, are run as they are.
    Under ``hmc`` they are run as they are too: its fixed-length trajectories keep leaving
    such a support, every proposal is rejected, and Pyro's step-size adaptation then shrinks
    the step until a trajectory takes 10^5+ leapfrog steps (a hang); NUTS's trees stop at
    the boundary (docs/language.md, "fit-time support check").

    Pyro starts each chain from values drawn uniformly in (-2, 2) on the unconstrained
    scale; with such sites none may put the data inside the support (``th ~
    Exponential(0.1)``, ``y ~ Uniform(0, th)``, ``y = 8``: ``th`` in (e^-2, e^2)), and the
    chain then starts from draws from the prior instead (:func:`_run_chain`)."""
    tr = _prior_trace(model, kwargs, opts["seed"])
    model, checked = supports_checked(model, kwargs, tr)
    bound = [name for name, site in tr.nodes.items() if site["type"] == "sample"
             and site["is_observed"] and name not in checked]
    reject = bound and method == "nuts"
    if bound and not reject:
        warnings.warn(f"{method} does not reject proposals outside the support of "
                      f"{', '.join(repr(b) for b in bound)}, which follows a latent: its draws "
                      "may leave it (use nuts)", stacklevel=2)
    kernel_model = _on_full_data(_RejectOutside(bound)(model) if reject else model)
    latents, dets = _hidden_sites(model, kwargs, tr)
    if not latents:
        raise nothing_to_sample(method, tr)
    unread = _unread_flat(model, kwargs, tr)
    if unread:
        from ..locate import SiteError

        raise SiteError(
            f"'{unread[0]}' has the improper Flat() prior and no other statement's density "
            f"reads it: its posterior is flat over the real line, which {method} cannot "
            "sample (its draws drift without bound)", unread[0],
            ["give it a proper prior (Normal(0, 10)), or drop it if nothing needs it"])
    if set(latents) <= set(enumerable_sites(tr)):
        return _exact_labels(model, kwargs, opts, latents, dets)
    per_chain = []
    diverging = []
    for c in range(opts["chains"]):
        if progress:
            print(f"chain {c + 1}/{opts['chains']}", file=sys.stderr)
        mcmc = _run_chain(make_kernel, kernel_model, kwargs, opts,
                          chain_seed(opts["seed"], c), progress, bound)
        per_chain.append({k: v.detach() for k, v in mcmc.get_samples().items()})
        diverging.append(_divergences(mcmc))
    chains = {k: torch.stack([pc[k] for pc in per_chain]) for k in per_chain[0]}
    # finite-support latents were summed out by the kernel: drawn per draw from their
    # exact conditional posterior (ppl.infer.discrete), or set to its joint mode
    # (labels=map), as the deterministic sites are
    summed = [k for k in latents if k not in chains]
    drawn = dets + summed
    if drawn:
        flat = {k: v.flatten(0, 1) for k, v in chains.items()}
        with full_data():  # every row of a subsampled plate, as the kernel saw them
            pred = site_draws(model, kwargs, posterior=flat, sites=drawn,
                              labels=opts.get("labels", "sample"))
        n_chains, n_draws = opts["chains"], opts["samples"]
        for k in drawn:
            v = pred[k].detach()
            chains[k] = v.reshape((n_chains, n_draws) + v.shape[1:])
    # a summed-out site is redrawn, not conditioned on, when predicting on new data
    f = Fit(model, kwargs, chains=chains, latents=[k for k in latents if k not in summed],
            deterministics=drawn)
    f.discrete = summed
    f.divergences = sum(diverging)
    return f


def _unread_flat(model, kwargs, trace) -> list[str]:
    """The latents of ``trace`` drawn from ``Flat()`` that no other site's log density
    reads (no autograd path from the rest of the log joint to their values): their
    posterior is the improper flat prior itself. Nothing else held the gradient of a model
    of such latents alone, and NUTS failed with torch's "does not require grad"; beside
    other latents their draws drifted to 1e31."""
    from ..runtime.shapes import Flat

    flat = [name for name, site in trace.nodes.items() if site["type"] == "sample"
            and not site["is_observed"] and isinstance(_family(site["fn"]), Flat)]
    if not flat:
        return []
    values = {n: trace.nodes[n]["value"].detach().clone().requires_grad_() for n in flat}
    tr = poutine.trace(poutine.condition(model, data=values)).get_trace(**kwargs)
    terms = [site["fn"].log_prob(site["value"]).sum() for name, site in tr.nodes.items()
             if site["type"] == "sample" and name not in values]
    total = sum(terms, torch.zeros(()))
    if not total.requires_grad:
        return flat
    grads = torch.autograd.grad(total, list(values.values()), allow_unused=True)
    return [n for n, g in zip(flat, grads, strict=True) if g is None]


NO_INIT = "cannot find valid initial params"

# how many starts a fit tries where a start has density 0 (Stan's 100 initialisations)
INIT_TRIES = 100


class _LatentsAsLeaves(Messenger):
    """Every floating-point latent's value becomes a leaf tensor that requires grad, so
    that a distribution's argument computed from a latent is seen to follow it. A
    ``param``'s value is detached: it requires grad too, and an argument from it
    (``param s: real = -1.0; y ~ Normal(mu, s)``) is the model's error, not density 0."""

    def _pyro_post_param(self, msg):
        if isinstance(msg["value"], torch.Tensor):
            msg["value"] = msg["value"].detach()

    def _pyro_post_sample(self, msg):
        v = msg["value"]
        if not msg["is_observed"] and isinstance(v, torch.Tensor) and v.is_floating_point():
            msg["value"] = v.detach().requires_grad_()


def _follows_latents(exc: BaseException) -> bool:
    """Whether ``exc`` is a distribution refusing an argument that follows a latent (or,
    in an SVI step, a param: :class:`_LatentsAsLeaves` detaches params): in torch's
    ``Distribution.__init__`` frame that refused it (ppl.locate's ``_parameter_failure``),
    the argument's value or its constraint's bounds require grad (``Uniform(a, 1.0)`` at
    a draw ``a = 1.54``; ``Uniform(0.0, a)`` at ``a < 0``). That state has density 0, as
    in Stan; the refusal of an argument from the data (``Normal(a, s)`` with ``s = -1``)
    is the model's error."""
    from ..locate import _parameter_failure

    if not isinstance(exc, ValueError):
        return False
    while exc is not None:
        loc = _parameter_failure(exc, written=False)
        if loc is not None and ((isinstance(loc["value"], torch.Tensor)
                                 and loc["value"].requires_grad)
                                or _holds_grad(loc["constraint"])):
            return True
        exc = exc.__cause__
    return False


def _refused_as_leaves(model, kwargs: dict) -> bool:
    """Whether ``model``, run with its latents as leaves that require grad (the random
    streams where the refused run's were), is refused an argument that follows them."""
    try:
        with pyro.validation_enabled(True), torch.enable_grad():
            pyro.poutine.trace(_LatentsAsLeaves()(model)).get_trace(**kwargs)
    except ValueError as marked:
        return _follows_latents(marked)
    return False


def _prior_trace(model, kwargs: dict, seed: int):
    """A validated prior trace of ``model`` (the fit's structure and its data checks).

    A draw at which a distribution refuses an argument that follows the latents (``a ~
    Normal(0, 1); y ~ Uniform(a, 1.0)`` at ``a = 1.54``) has density 0, not an error: the
    model is traced again from other draws (seeded from ``seed``, up to
    :data:`INIT_TRIES`). A refusal of data arguments is raised at once (the same draw
    traced with the latents as leaves that require grad shows which it is)."""
    first = None
    for k in range(INIT_TRIES):
        if k:
            pyro.set_rng_seed(chain_seed(seed, k))
        state = pyro.util.get_rng_state()
        try:
            with pyro.validation_enabled(True):
                return pyro.poutine.trace(model).get_trace(**kwargs)
        except ValueError as exc:
            # each draw's refusal is checked: another kind of error at a later draw is
            # the model's own, raised at once
            pyro.util.set_rng_state(state)
            if not _refused_as_leaves(model, kwargs):
                raise
            first = first or exc
    first.add_note(f"the model was run at {INIT_TRIES} draws from the prior (seeded by the "
                   "run's seed): at each a distribution refused an argument that follows "
                   "the latents, a state of density 0")
    raise first


class PriorDraws:
    """Draws of ``model`` from its prior, one validated trace each (``sample_prior``,
    ``site_draws`` without a posterior or a guide).

    The model's normalised prior is the prior restricted to the states where it is
    defined: a draw at which a distribution refuses an argument that follows the latents
    (``a ~ Normal(0.5, 1); y ~ Uniform(a, 1.0)`` at ``a = 1.54``) has density 0 and is
    drawn again, as :func:`_prior_trace` does, so the draws kept are exact draws of that
    restricted prior (rejection sampling). The redraws continue the caller's stream, which
    the run's seed set: draw ``i`` of a seed is the same every time, and no two draws share
    a stream (reseeding each refusal as :func:`_prior_trace` does would repeat them). A
    refusal of a data argument is raised at once; so are the refusals once they outnumber
    the draws kept by :data:`INIT_TRIES` to 1 (:data:`INIT_TRIES` refusals in a row
    before the first draw is kept, as Stan's initialisation; a prior that keeps about one
    draw in 100 or fewer): the first one, with a note of the draws tried.

    A latent whose declared set follows the latents and meets none of its distribution's
    support at a draw (``a ~ Normal(0, 1); z: real<upper=a> ~ Beta(2, 2)`` at ``a <= 0``:
    ``rt.Restricted``'s empty set, whose draw is a point of density 0) makes such a draw
    too (:func:`_empty_set`), drawn again the same way."""

    def __init__(self):
        self.kept = self.refused = 0
        self.first = None

    def trace(self, model, kwargs: dict):
        while True:
            state = pyro.util.get_rng_state()
            try:
                with pyro.validation_enabled(True):
                    tr = pyro.poutine.trace(model).get_trace(**kwargs)
            except ValueError as exc:
                after = pyro.util.get_rng_state()
                pyro.util.set_rng_state(state)  # the refused draw, with its latents as leaves
                if not _refused_as_leaves(model, kwargs):
                    raise
                pyro.util.set_rng_state(after)
                self._refuse(exc)
                continue
            empty = _empty_set(tr)
            if empty is not None:
                self._refuse(empty)
                continue
            self.kept += 1
            return tr

    def _refuse(self, exc: BaseException) -> None:
        """Counts a refused draw (``exc``, its error); raises the first one, with a note,
        once the refusals outnumber the draws kept by :data:`INIT_TRIES` to 1."""
        self.first = self.first or exc
        self.refused += 1
        if self.refused < INIT_TRIES * (self.kept + 1):
            return
        self.first.add_note(
            f"{self.refused} prior draws were refused and {self.kept} kept: at each refused "
            "one a distribution refused an argument that follows the latents, or a latent's "
            "declared set that follows them met none of its distribution's support, a state "
            "of density 0, drawn again")
        raise self.first from None


def _restricted_of(fn):
    """The ``rt.Restricted`` under ``fn``'s wrappers (its view on the real line,
    Independent, expanded, masked), else None."""
    from ..runtime.shapes import Restricted

    for _ in range(16):
        if isinstance(fn, Restricted):
            return fn
        fn = getattr(fn, "base_dist", None)
    return None


def _empty_set(trace):
    """The located error of the first latent site of ``trace`` whose declared set, with
    bounds that follow the latents, meets none of its distribution's support at this
    draw (``rt.Restricted``'s empty elements, where its log density is -inf: its draw
    there is a point of density 0, not a draw of the prior), else None."""
    from ..locate import SiteError
    from ..runtime.dependent_support import SUFFIX

    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site["mask"] is False:
            continue
        r = _restricted_of(site["fn"])
        if r is None or r._empty is None or not bool(r._empty.any()):
            continue
        lp = site["fn"].log_prob(site["value"])
        if isinstance(site["mask"], torch.Tensor):
            lp = torch.where(site["mask"], lp, torch.zeros_like(lp))
        if bool(torch.isfinite(lp).all()):
            continue
        latent = name[:-len(SUFFIX)] if name.endswith(SUFFIX) else name
        return SiteError(r._no_common or f"the declared set of the latent '{latent}' and "
                         "its distribution's support have no value in common", latent)
    return None


def _run_chain(make_kernel, model, kwargs, opts, seed: int, progress: bool, bound: list):
    """One chain of ``make_kernel(model)``, seeded with ``seed``, run to the end.

    Where an observed site's support follows a latent (``bound``) and Pyro finds no valid
    start among its uniform initial values, the chain starts from draws from the prior
    (``init_to_sample``, 100 tries), reseeded so the run is reproducible; if those fail too
    the error says which supports follow a latent (ppl.locate's note names the cause)."""
    def chain(init_strategy):
        pyro.set_rng_seed(seed)
        mcmc = MCMC(make_kernel(model, init_strategy), num_samples=opts["samples"],
                    warmup_steps=opts["warmup"], num_chains=1, disable_progbar=not progress)
        mcmc.run(**kwargs)
        return mcmc

    try:
        return chain(init_to_uniform)
    except ValueError as exc:
        if not bound or NO_INIT not in str(exc):
            raise
    try:
        return chain(init_to_sample)
    except ValueError as exc:
        if NO_INIT not in str(exc):
            raise
        names = ", ".join(repr(b) for b in bound)
        raise ValueError(f"Model specification seems incorrect - {NO_INIT}: neither Pyro's "
                         f"uniform initial values nor 100 draws from the prior put the data "
                         f"inside the support of {names}, which follows a latent") from None


def _exact_labels(model, kwargs, opts, latents, dets) -> Fit:
    """NUTS/HMC on a model whose every latent is a label: nothing continuous is left for
    the kernel to move once they are summed out, and their posterior is exact, so each
    chain's draws are exact posterior draws (``infer_discrete``, ppl.infer.discrete), as
    the labels of any other fit are (with ``labels=map`` every draw is their joint mode)."""
    n_chains, n_draws = opts["chains"], opts["samples"]
    with full_data():
        pred = site_draws(model, kwargs, guide=_nothing, num_samples=n_chains * n_draws,
                          sites=latents + dets, labels=opts.get("labels", "sample"))
    chains = {k: v.detach().reshape((n_chains, n_draws) + v.shape[1:])
              for k, v in pred.items()}
    f = Fit(model, kwargs, chains=chains, latents=[], deterministics=latents + dets)
    f.discrete = list(latents)
    f.divergences = 0
    return f


def _nothing(**kwargs) -> None:
    """A guide with no sites: the model's labels are all there is to draw."""


_GUIDES = {
    "normal": autoguide.AutoNormal,
    "delta": autoguide.AutoDelta,
    "lowrank": autoguide.AutoLowRankMultivariateNormal,
    "iaf": autoguide.AutoIAFNormal,
}


def _lr_per_param(lr: float, lr_scalars: float):
    """Adam's arguments: ``lr``, or ``lr_scalars`` (when > 0) for one-number parameters.

    Adam moves every parameter by about its learning rate per step whatever its scale, so
    a structural scalar (a learned Hurst index, a noise scale, the guide's loc of a scalar
    latent) trained beside network weights crawls at the weights' rate; Pyro's per-parameter
    optimiser arguments let it have its own.
    """
    if not lr_scalars:
        return {"lr": lr}

    from pyro.params.param_store import normalize_param_name

    def args(name: str) -> dict:
        # Pyro passes the normalised name ("net.tau" for the store's "net$$$tau")
        store = pyro.get_param_store()
        scalar = any(normalize_param_name(k) == name and v.numel() == 1
                     for k, v in store.items())
        return {"lr": lr_scalars if scalar else lr}

    return args


def _subsampled_plates(trace):
    """``create_plates`` for an autoguide of a model with subsampled plates: each plate
    subsampled as the model's ``rt.batch_size`` says now, so that under
    :func:`full_data` (the draws after the fit) the guide covers every row too, where
    Pyro's default guide plate keeps the minibatch size it saw first."""
    frames = {f.name: f for site in trace.nodes.values() if site["type"] == "sample"
              for f in site["cond_indep_stack"]
              if f.full_size is not None and f.full_size > f.size}
    if not frames:
        return None
    from ..runtime.functions import batch_size

    def create_plates(*args, **kwargs):
        return [pyro.plate(f.name, f.full_size, dim=f.dim,
                           subsample_size=batch_size(f.size, f.full_size))
                for f in frames.values()]

    return create_plates


def _autoguide(model, trace, guide_name: str, opts: dict, latents: list[str],
               hidden: list[str], init_loc_fn=None):
    """The autoguide ``guide_name`` over the ``latents`` (of ``trace``) other than
    ``hidden`` (labels summed out by the ELBO).

    With subsampled plates, AutoNormal/AutoDelta get per-plate parameters that follow the
    minibatch (:func:`_subsampled_plates`). The joint guides (``lowrank``, ``iaf``) are one
    distribution over a flat vector of every latent, which a minibatch cannot index, so
    there, as a Pyro user would compose it, the joint guide covers the global latents and
    an AutoNormal with per-plate parameters the latents local to a subsampled plate
    (correlations between the two groups are not modelled)."""
    kwargs = {"rank": opts["rank"]} if guide_name == "lowrank" and opts.get("rank") else {}
    start = {} if init_loc_fn is None else {"init_loc_fn": init_loc_fn}  # a start again
    kwargs.update(start)
    shown = poutine.block(model, hide=hidden) if hidden else model
    plates = _subsampled_plates(trace)
    if plates is None:
        return _GUIDES[guide_name](shown, **kwargs)
    if guide_name in ("normal", "delta"):
        return _GUIDES[guide_name](shown, create_plates=plates, **kwargs)
    local = [name for name, site in trace.nodes.items()
             if site["type"] == "sample" and not site["is_observed"] and name not in hidden
             and not site["infer"].get("_deterministic")
             and any(f.full_size is not None and f.full_size > f.size
                     for f in site["cond_indep_stack"])]
    if not local:
        return _GUIDES[guide_name](shown, **kwargs)
    guide = autoguide.AutoGuideList(shown, create_plates=plates)
    if any(k not in local and k not in hidden for k in latents):
        guide.append(_GUIDES[guide_name](poutine.block(model, hide=hidden + local), **kwargs))
    guide.append(autoguide.AutoNormal(poutine.block(model, expose=local), **start))
    return guide


def _svi_fit(model, kwargs, opts, guide_name, progress, method: str) -> Fit:
    if guide_name == "delta":  # a point estimate: the mode in the constrained space
        model = _without_jacobian(model)
    if _jit_refused(model, kwargs, opts, method):
        opts = {**opts, "jit": False}
    trace = _prior_trace(model, kwargs, opts["seed"])
    model, checked = supports_checked(model, kwargs, trace)
    follows = {name: _bound_by_param(site)  # supports that follow latents (or params)
               for name, site in trace.nodes.items()
               if site["type"] == "sample" and site["is_observed"] and name not in checked}
    latents, dets = _hidden_sites(model, kwargs, trace)
    discrete = enumerable_sites(trace)
    fit_model, elbo = model, None
    if discrete:
        # summed out exactly (TraceEnum_ELBO); drawn from their posterior with the rest
        fit_model, elbo = svi_parts(model, trace, bool(opts.get("jit")), opts["particles"])
    auto = False  # an autoguide, whose start is drawn again where it has density 0
    if len(discrete) == len(latents):
        guide = _empty_guide
    elif guide_name == "custom":
        from .custom_guide import check_guide_supports, current

        guide = current()  # the model file's guide block (ppl.infer.custom_guide)
        if guide is None:
            from ..syntax.diagnostics import BdlError, Diagnostic

            raise BdlError([Diagnostic("svi(guide=custom) fits with the model's guide block, "
                                       "and none was given to this fit")], "infer")
        check_guide_supports(model, guide, kwargs)  # where data or latents set them
    else:
        auto = True
        guide = _autoguide(model, trace, guide_name, opts, latents, discrete)
    decay = opts.get("lr_decay", 1.0)
    lr_args = _lr_per_param(opts["lr"], opts.get("lr_scalars", 0.0))

    def optimiser():
        if decay == 1.0:
            return Adam(lr_args)
        # exponential schedule reaching lr * decay at the last step
        gamma = decay ** (1.0 / max(1, opts["steps"] - 1))
        return ExponentialLR({"optimizer": torch.optim.Adam,
                              "optim_args": lr_args, "gamma": gamma})

    optim = optimiser()
    if elbo is None:
        elbo = _elbo(opts)
    # each step's model traces, to tell a draw of density 0 from the data's
    densities = _Densities(model, kwargs)
    redraw = guide_name != "delta" and guide is not _empty_guide  # draws at random
    svi = SVI(fit_model, guide, optim, loss=densities.keep(elbo, bool(opts.get("jit"))))
    losses = []
    from tqdm.auto import tqdm  # pyro's own dependency; MCMC's progress bar too

    bar = tqdm(total=opts["steps"], desc=guide_name, disable=not progress, file=sys.stderr,
               mininterval=0.5)
    every = max(1, opts["steps"] // 100)
    from ..syntax.diagnostics import BdlError

    step, tries, first = 0, 1, None
    while step < opts["steps"]:
        try:
            loss = _step(svi, kwargs, step, opts, method, follows, densities, redraw)
        except (ValueError, BdlError) as e:
            if discrete and "share a common poutine.scale" in str(e):
                raise _label_scale_error(discrete[0]) from None
            if step or not auto or not _zero_start(e):
                raise
            first = first or e
            if tries == INIT_TRIES:
                raise _tried(first, method) from None
            # a start of density 0 (an argument or a set that follows the latents refused
            # at the guide's first draw): drawn again, as Stan does, seeded from the seed
            pyro.clear_param_store()
            from ..runtime import reset_networks

            reset_networks()
            pyro.set_rng_seed(chain_seed(opts["seed"], tries))
            tries += 1
            if discrete:
                fit_model, elbo = svi_parts(model, trace, bool(opts.get("jit")),
                                            opts["particles"])
            else:
                elbo = _elbo(opts)
            guide = _autoguide(model, trace, guide_name, opts, latents, discrete,
                               init_to_uniform)
            optim = optimiser()
            svi = SVI(fit_model, guide, optim, loss=densities.keep(elbo, bool(opts.get("jit"))))
            continue
        if decay != 1.0:
            optim.step()
        losses.append(loss)
        if step % every == 0 or step == opts["steps"] - 1:
            bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
            bar.update(step + 1 - bar.n)
        step += 1
    bar.close()
    n = opts["samples"]
    try:
        if not _finite_params():  # the last step's update: no loss of its own says so
            raise ValueError("non-finite parameters")
        with torch.no_grad(), full_data():  # every row of a subsampled plate
            pred = site_draws(model, kwargs, guide=guide, num_samples=n,
                              sites=latents + dets, labels=opts.get("labels", "sample"),
                              in_support=redraw and densities.follow())
    except ValueError as e:
        if _usable_params() and not _in_guide(e):
            raise
        raise _diverged(method, opts["steps"] - 1, opts, _GUIDE_BROKE) from e
    chains = {k: v.detach().unsqueeze(0) for k, v in pred.items()}
    # summed out in the fit and drawn from their conditional: redrawn for new data
    f = Fit(model, kwargs, chains=chains, latents=[k for k in latents if k not in discrete],
            deterministics=dets + [k for k in latents if k in discrete])
    f.discrete = [k for k in latents if k in discrete]
    f.guide = guide
    f.elbo = [-x for x in losses]
    return f


class _Densities:
    """The model traces of an SVI step's ELBO (:meth:`keep`), so that a step whose ELBO
    is not finite can say where it came from (:meth:`density_zero`). ``traces`` is
    emptied before each step; a JIT-compiled step runs no Python and keeps none."""

    def __init__(self, model, kwargs: dict):
        self.traces: list = []
        self._model, self._kwargs, self._follow = model, kwargs, None

    def keep(self, elbo, jit: bool = False):
        """``elbo``, keeping each particle's model trace (its sites' log densities are
        already computed there): no cost to a step. A JIT-compiled ELBO is left as it is:
        its traces are of the compiling runs, not of the draws of the loss it gives."""
        if jit:
            return elbo
        get = elbo._get_trace

        def kept(*args, **kwargs):
            model_trace, guide_trace = get(*args, **kwargs)
            self.traces.append(model_trace)
            return model_trace, guide_trace

        elbo._get_trace = kept
        return elbo

    def follow(self) -> bool:
        """Whether a latent's declared bound follows the latents (computed once)."""
        if self._follow is None:
            self._follow = _bounds_follow_latents(self._model, self._kwargs)
        return self._follow

    def density_zero(self, loss: float) -> bool:
        """Whether the step's non-finite ELBO comes from a guide's draw of density 0: the
        log density is not finite only at latent sites whose distribution follows the
        latents (holds a tensor that requires grad: a declared bound ``z: real<upper=a>``
        whose set is empty at ``a < 0``). Not finite at an observed site (``y = 1e20`` in
        float32, whose Normal log density is -inf at every draw), or at a latent whose
        distribution is the data's alone, it is not: no draw mends it. Nothing kept (a
        JIT-compiled step; a fit compiles only where no latent's declared bound follows
        the latents, :func:`_jit_refused`, or where that cannot be told): an infinite
        ELBO where a latent's declared bound follows the latents
        (:func:`_bounds_follow_latents`)."""
        if not self.traces:
            return math.isinf(loss) and self.follow()
        bad = [site for tr in self.traces for site in tr.nodes.values()
               if site["type"] == "sample" and "log_prob" in site
               and not bool(torch.isfinite(site["log_prob"]).all())]
        return bool(bad) and all(not site["is_observed"] and any(
            t.requires_grad for t in _transform_tensors(site["fn"])) for site in bad)


def _svi_step(svi, kwargs: dict) -> float:
    """``svi.step``, except that a step whose loss is not finite moves no parameter (its
    gradient is NaN or infinite): the caller redraws it or stops."""
    from pyro.infer.util import torch_item, zero_grads

    with poutine.trace(param_only=True) as capture:
        loss = torch_item(svi.loss_and_grads(svi.model, svi.guide, **kwargs))
    params = {site["value"].unconstrained() for site in capture.trace.nodes.values()}
    if math.isfinite(loss):
        svi.optim(params)
    zero_grads(params)
    return loss


def _elbo(opts: dict):
    return JitTrace_ELBO(num_particles=opts["particles"], ignore_jit_warnings=True) \
        if opts.get("jit") else Trace_ELBO(num_particles=opts["particles"])


def _zero_start(exc: BaseException) -> bool:
    """Whether the first step's error ``exc`` says the guide's start has density 0: a
    draw that leaves a support that follows the latents (:func:`_left_support`), a
    distribution refusing an argument that follows them, or a non-finite ELBO that comes
    from latents whose declared bound follows the latents (``z: real<upper=a> ~ Beta(2,
    2)`` at ``a < 0``: :meth:`_Densities.density_zero`). Any other error (an infinite
    ELBO from the data, ``y = 1e20`` in float32, even where such a bound is declared) is
    raised at once: no start mends it."""
    return bool(getattr(exc, "zero_start", False) or getattr(exc, "density_zero", False)
                or _follows_latents(exc))


def _bounds_follow_latents(model, kwargs: dict) -> bool:
    """Whether a latent's declared bound follows the latents (:func:`_following_bounds`).
    A model that cannot be traced so: True."""
    names = _following_bounds(model, kwargs)
    return names is None or bool(names)


def _following_bounds(model, kwargs: dict, declared: bool = False) -> list[str] | None:
    """The latents whose declared bound follows the latents: their transform to the
    unconstrained scale holds a tensor that requires grad when the latents are leaves
    that do (:class:`_LatentsAsLeaves`); ``z``, not its draw on the real line. A support
    that follows them counts too (``z ~ Uniform(a, a + 1)``), unless ``declared``: then
    only latents with a declared set (``rt.Restricted``). None for a model that cannot be
    traced so."""
    from ..runtime.dependent_support import SUFFIX
    from .rng import seeded

    try:
        with seeded(0), torch.enable_grad(), pyro.validation_enabled(False):
            tr = pyro.poutine.trace(_LatentsAsLeaves()(model)).get_trace(**kwargs)
    except Exception:  # noqa: BLE001 - cannot tell: a start may have density 0
        return None
    return [name[:-len(SUFFIX)] if name.endswith(SUFFIX) else name
            for name, site in tr.nodes.items()
            if site["type"] == "sample" and not site["is_observed"]
            and any(t.requires_grad for t in _transform_tensors(site["fn"]))
            and not (declared and _restricted_of(site["fn"]) is None)]


def _jit_refused(model, kwargs: dict, opts: dict, method: str) -> bool:
    """Whether ``jit=true`` is set aside for this fit: a latent's declared bound follows
    the latents (``z: real<upper=a> ~ Beta(2, 2)``). ``torch.jit.trace`` records one
    path through the model's Python, at the first step's draw, and such a bound takes
    branches by its values at each draw (whether its set is empty, so the density is 0;
    whether it narrows to the distribution's support, ``min(a, 1)`` here): compiled, the
    ELBO (svi, map) or the potential (nuts, hmc) at other draws is wrong (finite where
    the model has density 0, or the reverse, or another number). The fit then runs
    uncompiled, the same fit as ``jit=false``, with a warning that names the latent. A
    support that follows the latents with no declared set (``z ~ Uniform(a, a + 1)``)
    maps by the same formula at every draw: compiled."""
    if not opts.get("jit"):
        return False
    names = _following_bounds(model, kwargs, declared=True)
    if not names:
        return False
    what = "potential" if method in SAMPLERS else "ELBO"
    warnings.warn(
        f"{method}: jit=true is not used: the declared bound of the latent '{names[0]}' "
        f"follows the latents, and a JIT-compiled {what} keeps the branches the bound took "
        "at its first draw (an empty set, density 0; a set narrowed to the "
        f"distribution's support), which are wrong at other draws; the {what} runs "
        "uncompiled, the same fit as jit=false", stacklevel=2)
    return True


def _transform_tensors(obj, depth: int = 0, inside: bool = False):
    """The tensors held by the transforms of a distribution (through its wrappers)."""
    from torch.distributions import Distribution, Transform

    if isinstance(obj, torch.Tensor):
        if inside:
            yield obj
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            yield from _transform_tensors(x, depth + 1, inside)
    elif depth < 8 and isinstance(obj, (Distribution, Transform)):
        for x in vars(obj).values():
            yield from _transform_tensors(x, depth + 1, inside or isinstance(obj, Transform))


def _tried(exc: BaseException, method: str) -> BaseException:
    """``exc``, the first start's error, with a note of the starts that were tried."""
    from ..syntax.diagnostics import BdlError

    note = (f"{method} tried {INIT_TRIES} starts (the guide's own, then points drawn "
            "uniformly in (-2, 2) on the unconstrained scale, as Stan's, seeded by the "
            "run's seed): at each the guide's first draw had density 0")
    if isinstance(exc, BdlError):
        exc.diagnostics[0].notes.append(note)
        exc.args = (exc.render(),)
    else:
        exc.add_note(note)
    return exc


def _label_scale_error(label: str):
    """Pyro's TraceEnum_ELBO sums a label out against the sites that read it in one
    contraction, which needs them all at one likelihood scale; a label outside a
    subsampled plate read by sites inside it (scale N/B) breaks that (Pyro's "Expected
    all enumerated sample sites to share a common poutine.scale")."""
    from ..locate import SiteError

    return SiteError(
        f"svi and map sum the discrete latent '{label}' out together with the sites that "
        "read it, which needs one minibatch scale for all of them; here sites in a "
        "subsampled plate (scaled by N / batch) read a label drawn outside it (scale 1)",
        label, ["draw the label inside that plate (one per element), or drop `batch` "
                "from the plate; nuts works on the full data"])


def _step(svi, kwargs: dict, step: int, opts: dict, method: str,
          follows: dict[str, bool] | None = None, densities: _Densities | None = None,
          redraw: bool = False) -> float:
    """One SVI step's loss; a non-finite ELBO or guide is the user error
    :func:`_diverged` (Pyro's own NaN warnings, which would only come before it, are
    kept quiet), and a support error at an observed site of ``follows`` (a support that
    follows the latents, or a param where its value is True) is :func:`_left_support`.

    A step whose ELBO is not finite moves no parameter. Where it comes from the guide's
    draw having density 0 (``densities``, :meth:`_Densities.density_zero`) and the guide
    draws at random (``redraw``: not a delta), a step after the first is drawn again, up
    to :data:`INIT_TRIES` times, as Stan's ADVI drops such draws from its ELBO estimate;
    the first step's start is drawn again by the caller. The error says whether the
    ELBO's draw had density 0 (``density_zero``)."""
    follows = follows or {}
    for _ in range(INIT_TRIES):
        if densities is not None:
            densities.traces.clear()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Encountered NaN")
            try:
                loss = _svi_step(svi, kwargs)
            except ValueError as e:  # a guide built from parameters the last step made NaN
                site = re.search(r"at site '([^']+)'", str(e))
                if site and site.group(1) in follows:
                    raise _left_support(method, step, opts, site.group(1),
                                        follows[site.group(1)]) from e
                # the first step builds the guide from its initial parameters, running the
                # model inside the autoguide: no step has moved them, so an error then is
                # the model's own (a scale mu - 50 < 0), located as such, never divergence
                if step == 0 or (_usable_params() and not _in_guide(e)):
                    raise
                raise _diverged(method, step, opts, _GUIDE_BROKE) from e
        if math.isfinite(loss):
            return loss
        zero = densities is not None and densities.density_zero(loss)
        if not (zero and redraw and step):
            break
    err = _diverged(method, step, opts,
                    f"the ELBO became {'NaN' if math.isnan(loss) else 'infinite'}")
    err.density_zero = zero  # at the first step: a start of density 0
    if zero and redraw and step:
        err.diagnostics[0].notes.append(
            f"the guide's draw was drawn again {INIT_TRIES} times at this step: at each "
            "the model had density 0 there (a latent's declared bound that follows the "
            "latents left it no value); the guide puts its mass where the model has none")
        err.args = (err.render(),)
    raise err


def _bound_by_param(site) -> bool:
    """Whether the support of a traced site has a bound computed from a ``param`` (a
    tensor that requires grad; the prior trace's latent draws do not)."""
    from ..runtime.tails import support_bounds

    return any(isinstance(b, torch.Tensor) and b.requires_grad
               for b in support_bounds(site["fn"]))


def _left_support(method: str, step: int, opts: dict, site: str, by_param: bool = False):
    """The user error of an SVI/MAP step whose guide drew latents that put the observed
    ``site`` outside a support that follows them (``y ~ Uniform(0, th)`` with ``th`` drawn
    below a data value): the data were checked valid at the start; the guide is at fault.
    Where a ``param`` is the bound (``Truncated(Normal(mu, 1), low=L)``), the fit moved it."""
    from ..syntax.diagnostics import BdlError, Diagnostic

    if by_param:
        err = BdlError([Diagnostic(
            f"{method}: at step {step + 1} of {opts['steps']} the fit moved a param that "
            f"bounds the observed '{site}' past one of its values: its support follows the "
            "param",
            notes=["the data are not at fault: a param as a bound is moved by the gradient "
                   "like any other, across the data; give it a declared bound that keeps "
                   "every data value inside (param L: real<upper=...>), or make the bound "
                   "data"])], "infer")
        err.not_a_bug = True
        return err
    err = BdlError([Diagnostic(
        f"{method}: at step {step + 1} of {opts['steps']} the guide drew latents that put "
        f"the observed '{site}' outside its support, which follows them",
        notes=["the data are not at fault: a guide over the whole real line crosses the "
               "bound; sample with nuts, or declare the latent's bounds so that every "
               "value it may take keeps the data inside"])], "infer")
    err.zero_start = True  # a start of density 0 where it is the first step
    err.not_a_bug = True  # the CLI saves no traceback
    return err


def _finite_params() -> bool:
    return all(bool(torch.isfinite(v).all()) for v in pyro.get_param_store().values())


# what an SVI step left of the guide when it cannot be built or drawn from any more
_GUIDE_BROKE = "the guide's parameters became NaN, infinite or too large to draw from"
# a parameter this large was thrown there by a step far too long (Adam moves each by
# about lr per step: lr=0.01 for 2000 steps moves one by at most ~20); its draws
# (exp(-1e12) = 0 for a scale, a variance) are what the model then refuses
_HUGE = 1e6


def _usable_params() -> bool:
    """Whether every parameter is finite and below :data:`_HUGE` in size: a model that
    refuses a draw of a guide that is not is the optimisation's failure."""
    return all(bool((v.detach().abs() < _HUGE).all())
               for v in pyro.get_param_store().values())


def _in_guide(exc: BaseException) -> bool:
    """Whether ``exc`` (a distribution refusing its parameters) was raised while an
    autoguide built its distributions: a scale that a huge step drove to 0, finite
    parameters notwithstanding (``lr=1e12``), is the optimisation's failure, not bdl's."""
    while exc is not None:
        tb = exc.__traceback__
        while tb is not None:
            if "autoguide" in tb.tb_frame.f_code.co_filename:
                return True
            tb = tb.tb_next
        exc = exc.__cause__
    return False


def _diverged(method: str, step: int, opts: dict, what: str):
    """The user error of an SVI/MAP run whose ELBO or guide went non-finite: the learning
    rate is too large for the model (Adam's first steps move every parameter by about lr)."""
    from ..syntax.diagnostics import BdlError, Diagnostic

    lr = opts["lr"]
    err = BdlError([Diagnostic(
        f"{method}: {what} at step {step + 1} of {opts['steps']}: the optimisation "
        f"diverged with lr={lr:g}",
        notes=[f"lower lr (e.g. infer {method}(lr={lr / 10:g}))"
               + (", and lr_scalars" if opts.get("lr_scalars") else "")])], "infer")
    err.not_a_bug = True  # the CLI saves no traceback
    return err


def _empty_guide(*args, **kwargs):
    return None


@runner("svi")
def _svi(model, kwargs, opts, progress=False):
    return _svi_fit(model, kwargs, opts, opts["guide"], progress, "svi")


@runner("map")
def _map(model, kwargs, opts, progress=False):
    return _svi_fit(model, kwargs, opts, "delta", progress, "map")
