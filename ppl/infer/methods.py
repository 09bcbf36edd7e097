"""Inference methods and their options: the table the checker validates ``infer`` against.

Pure metadata (no torch import). The runner for each method lives in ``ppl.infer.run``.
An option's default also fixes its type (int, float, bool, or a symbol from ``choices``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Option:
    default: object
    kind: type | str  # int | float | bool | "symbol" | "number_or_none" | "spec"
    choices: tuple[str, ...] = ()
    low: float | None = None
    doc: str = ""
    # kind "spec": a name or a call such as gp_tasks(kernel=rbf, lengthscale=[0.1, 0.6])
    # (see ppl.check.checker.option_value); check(value) returns a problem or None
    check: Callable[[object], str | None] | None = None
    # kind "spec": resolve(value, filename, span) -> the value to keep, called by the
    # checker for an option written in a model file (not for --infer or Python overrides),
    # e.g. to anchor a file path to the model file's folder and remember where it was
    # written, for a located error when the fit starts. What it adds about the compile
    # site goes under the key SITE of the value's dict: the compiled model keeps it,
    # generated source and `bdl info` do not (see without_site)
    resolve: Callable[[object, str, object], object] | None = None


SITE = "site"


def without_site(options: dict | None) -> dict | None:
    """``options`` without the compile-site data that ``Option.resolve`` hooks record
    (absolute paths, model-file positions), so generated Pyro source and ``bdl info`` do
    not depend on the folder the model was compiled in."""
    if options is None:
        return None
    return {k: ({a: b for a, b in v.items() if a != SITE} if isinstance(v, dict) else v)
            for k, v in options.items()}


@dataclass(frozen=True)
class Method:
    name: str
    options: dict[str, Option] = field(default_factory=dict)
    doc: str = ""
    # "module:function" of the runner, imported on first use (constructs add methods
    # without touching ppl/infer/run.py); None for the built-in runners of run.py.
    runner: str | None = None
    # needs: builtins of which a model fitted by this method must use at least one
    #   (``meta`` needs ``niw_meta``); empty: none.
    needs: tuple[str, ...] = ()


METHODS: dict[str, Method] = {}

_COMMON = {
    "seed": Option(0, int, doc="random seed (torch, numpy, python)"),
    "device": Option("cpu", "symbol", ("cpu", "cuda"), doc="where tensors live"),
    "dtype": Option("float64", "symbol", ("float32", "float64"), doc="floating point type"),
}

_MCMC = {
    "samples": Option(1000, int, low=1, doc="draws kept per chain"),
    "warmup": Option(1000, int, low=0, doc="adaptation draws per chain (discarded)"),
    "chains": Option(4, int, low=1, doc="independent chains, run one after another"),
    "target_accept": Option(0.8, float, low=0.0, doc="step-size adaptation target"),
    "dense_mass": Option(False, bool, doc="dense (True) or diagonal mass matrix"),
    "jit": Option(False, bool, doc="JIT-compile the potential (faster for long runs)"),
}


def register(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"inference method {method.name!r} registered twice")
    METHODS[method.name] = method
    return method


register(Method("nuts", {**_MCMC, "max_tree_depth": Option(10, int, low=1), **_COMMON},
                doc="No-U-Turn sampler (pyro.infer.NUTS)"))
register(Method("hmc", {**_MCMC, "step_size": Option(0.1, float, low=0.0),
                        "num_steps": Option(10, int, low=1), **_COMMON},
                doc="Hamiltonian Monte Carlo with a fixed number of leapfrog steps"))
_SVI = {
    "steps": Option(2000, int, low=1, doc="optimisation steps"),
    "lr": Option(0.01, float, low=0.0, doc="Adam learning rate"),
    "particles": Option(1, int, low=1, doc="ELBO particles per step"),
    "lr_decay": Option(1.0, float, low=0.0,
                       doc="learning rate at the last step, as a fraction of lr (decayed "
                           "exponentially; 1: constant). Below 1 it damps the step-to-step "
                           "noise of the final guide parameters"),
    "lr_scalars": Option(0.0, float, low=0.0,
                         doc="Adam learning rate of every one-number parameter (a param, a "
                             "construct's learned scalar such as a Hurst index, the guide's "
                             "loc and scale of a scalar latent); 0: lr"),
    "samples": Option(1000, int, low=1, doc="posterior draws taken from the fitted guide"),
    "jit": Option(False, bool, doc="JIT-compile the ELBO (JitTrace_ELBO)"),
}
register(Method("svi", {**_SVI, "guide": Option("normal", "symbol",
                                                ("normal", "delta", "lowrank", "iaf")),
                        "rank": Option(0, int, low=0, doc="lowrank guide rank (0: auto)"),
                        **_COMMON, "dtype": Option("float32", "symbol",
                                                   ("float32", "float64"))},
                doc="stochastic variational inference with an autoguide"))
register(Method("map", {**_SVI, "samples": Option(1, int, low=1), **_COMMON,
                        "dtype": Option("float32", "symbol", ("float32", "float64"))},
                doc="maximum a posteriori (SVI with a delta guide)"))


def lookup(name: str) -> Method | None:
    from .. import builtins

    builtins._load_constructs()  # constructs may add methods (sghmc, meta)
    return METHODS.get(name)
