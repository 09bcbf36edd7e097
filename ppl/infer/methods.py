"""Inference methods and their options: the table the checker validates ``infer`` against.

Pure metadata (no torch import). The runner for each method lives in ``ppl.infer.run``.
An option's default also fixes its type (int, float, bool, or a symbol from ``choices``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from ..io.data import INT64_RANGE

# the seeds numpy accepts (``pyro.set_rng_seed`` seeds numpy too); every chain's seed
# (:func:`chain_seed`) is one of them whatever the seed and the number of chains
SEED_MAX = 2**32 - 1
# an int option's values are 64-bit integers (torch's and numpy's); a budget beyond that
# is a typo, not a long run


def chain_seed(seed: int, chain: int) -> int:
    """The seed of chain ``chain`` of a run seeded ``seed``: ``seed`` itself for chain 0
    (a one-chain run is the run its seed names, and chain 0 of C chains is it too), and
    for chain c >= 1 a number in 0..SEED_MAX derived from (seed, c) by
    ``numpy.random.SeedSequence(seed, spawn_key=(c,))`` (a hash of both), so that runs of
    seeds s and s + 1 share no chain (with ``seed + c`` they shared all but one) and chains
    of one run start from unrelated streams. Two (seed, c) pairs meet on one seed only by
    the chance of two 32-bit hashes meeting."""
    if chain == 0:
        return int(seed)
    import numpy as np

    return int(np.random.SeedSequence(int(seed), spawn_key=(int(chain),))
               .generate_state(1)[0])


def seed_problem(seed) -> str | None:
    """Why ``seed`` is not a seed numpy takes (an integer, not a bool, in 0..SEED_MAX), or
    None: the one reader of the range for ``bdl --seed`` (``cli._seed``) and the API's
    draws (``model.check_seed``), each of which words its own message around it."""
    import numbers

    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) \
            or not 0 <= seed <= SEED_MAX:
        return f"a seed is an integer from 0 to {SEED_MAX}"
    return None


@dataclass(frozen=True)
class Option:
    default: object
    kind: type | str  # int | float | bool | "symbol" | "number_or_none" | "spec"
    choices: tuple[str, ...] = ()
    # the range of a number (int or float kind): [low, high], an end left out when None,
    # excluded when its *_open flag is set ((0, 1) for target_accept); see problem()
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
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    # the range in words where its ends alone do not state it (svi's lr: 0 only with
    # lr_scalars > 0, a relation the method checks); "" for range_words' own
    words: str = ""

    def problem(self, value) -> str | None:
        """Why ``value`` is outside this option's range (``"must be in (0, 1)"``), or None.
        Only numbers are judged (the type is checked before, by the checker)."""
        if self.kind not in (int, float) or isinstance(value, bool) \
                or not isinstance(value, (int, float)):
            return None
        if not math.isfinite(value):
            return f"must be a finite number, got {value}"
        if self.kind is int and not INT64_RANGE[0] <= value <= INT64_RANGE[1]:
            return f"{value} is beyond a 64-bit integer (at most {INT64_RANGE[1]})"
        if in_range(value, self.low, self.high, self.low_open, self.high_open):
            return None
        return f"must be {self.range_words()}"

    def range_words(self) -> str:
        """The range in words: "at least 1", "positive", "in (0, 1)", "in [0, 4294967295]"."""
        if self.words:
            return self.words
        lo, hi = self.low, self.high
        if hi is None:
            if lo == 0:
                return "positive" if self.low_open else "at least 0"
            return f"{'greater than' if self.low_open else 'at least'} {number_text(lo)}"
        if lo is None:
            return f"{'less than' if self.high_open else 'at most'} {number_text(hi)}"
        return (f"in {'(' if self.low_open else '['}{number_text(lo)}, {number_text(hi)}"
                f"{')' if self.high_open else ']'}")


def in_range(value: float, lo: float | None, hi: float | None, lo_open: bool = False,
             hi_open: bool = False) -> bool:
    """Whether ``value`` lies in the range from ``lo`` to ``hi`` (an end None: unbounded
    there; ``*_open``: that end excluded). An option's range (:meth:`Option.problem`) and
    a distribution parameter's (the checker's literal arguments) are both this."""
    return ((lo is None or value > lo or (value == lo and not lo_open))
            and (hi is None or value < hi or (value == hi and not hi_open)))


def number_text(x) -> str:
    """A number as written: ``1``, ``0.5``, ``4294967295`` (not 4.29497e+09); a list or a
    tensor as ``[1, 2.5]``. The one spelling of numbers in words, for option ranges here
    and for values and bounds in located run-time errors (``ppl.locate``)."""
    if hasattr(x, "tolist"):
        x = x.tolist()
    if isinstance(x, list):
        return "[" + ", ".join(number_text(v) for v in x) + "]"
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return f"{x:g}" if isinstance(x, float) else str(x)


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
    # relations: (options with defaults merged) -> [(option, problem)] of the values that
    #   are wrong together (svi's lr 0 with lr_scalars 0); None: none
    relations: Callable[[dict], list[tuple[str, str]]] | None = None

    def problems(self, values: dict) -> list[tuple[str, str]]:
        """``(option, problem)`` for a method's options with its defaults merged in (what
        a fit runs with): each number against its option's range (:meth:`Option.problem`),
        then the method's ``relations``. Every chain's seed (:func:`chain_seed`) is a seed
        numpy takes, whatever the seed and the chains."""
        out = [(k, p) for k, v in values.items() if k in self.options
               and (p := self.options[k].problem(v)) is not None]
        if self.relations is not None and not out:
            out += self.relations(values)
        return out


METHODS: dict[str, Method] = {}

_COMMON = {
    "seed": Option(0, int, low=0, high=SEED_MAX, doc="random seed (torch, numpy, python)"),
    "device": Option("cpu", "symbol", ("cpu", "cuda"), doc="where tensors live"),
    "dtype": Option("float64", "symbol", ("float32", "float64"), doc="floating point type"),
}

# the methods that sum discrete latents out (ppl.infer.discrete) draw them afterwards,
# per draw of the rest: from their exact conditional (sample), or at its joint mode (map)
LABELS = Option("sample", "symbol", ("sample", "map"),
                doc="summed-out labels per draw: a draw from their exact conditional "
                    "(sample) or its most probable joint assignment (map; Viterbi for a "
                    "chain of labels)")

_MCMC = {
    "samples": Option(1000, int, low=1, doc="draws kept per chain"),
    "warmup": Option(1000, int, low=0, doc="adaptation draws per chain (discarded)"),
    "chains": Option(4, int, low=1, doc="independent chains, run one after another"),
    "target_accept": Option(0.8, float, low=0.0, high=1.0, low_open=True, high_open=True,
                            doc="step-size adaptation target"),
    "dense_mass": Option(False, bool, doc="dense (True) or diagonal mass matrix"),
    "jit": Option(False, bool, doc="JIT-compile the potential (faster for long runs)"),
    "labels": LABELS,
}


def register(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"inference method {method.name!r} registered twice")
    METHODS[method.name] = method
    return method


register(Method("nuts", {**_MCMC, "max_tree_depth": Option(10, int, low=1), **_COMMON},
                doc="No-U-Turn sampler (pyro.infer.NUTS)"))
register(Method("hmc", {**_MCMC, "step_size": Option(0.1, float, low=0.0, low_open=True),
                        "num_steps": Option(10, int, low=1), **_COMMON},
                doc="Hamiltonian Monte Carlo with a fixed number of leapfrog steps"))
# lr's rule, said the same for a negative lr (its range) and for 0 without lr_scalars
_LR_RULE = "positive, or 0 with lr_scalars > 0 (then only the one-number parameters move)"
_SVI = {
    "steps": Option(2000, int, low=1, doc="optimisation steps"),
    "lr": Option(0.01, float, low=0.0, words=_LR_RULE,
                 doc="Adam learning rate (0: only the one-number parameters move, at "
                     "lr_scalars)"),
    "particles": Option(1, int, low=1, doc="ELBO particles per step"),
    "lr_decay": Option(1.0, float, low=0.0, high=1.0, low_open=True,
                       doc="learning rate at the last step, as a fraction of lr (decayed "
                           "exponentially; 1: constant). Below 1 it damps the step-to-step "
                           "noise of the final guide parameters"),
    "lr_scalars": Option(0.0, float, low=0.0,
                         doc="Adam learning rate of every one-number parameter (a param, a "
                             "construct's learned scalar such as a Hurst index, the guide's "
                             "loc and scale of a scalar latent); 0: lr"),
    "samples": Option(1000, int, low=1, doc="posterior draws taken from the fitted guide"),
    "jit": Option(False, bool, doc="JIT-compile the ELBO (JitTrace_ELBO)"),
    "labels": LABELS,
}
def _svi_relations(values: dict) -> list[tuple[str, str]]:
    """lr 0 fits nothing, unless lr_scalars moves the one-number parameters alone."""
    if values.get("lr") == 0 and not values.get("lr_scalars"):
        return [("lr", f"must be {_LR_RULE}")]
    return []


# guide=custom: the model file's guide block (docs/language.md, "Guides"); the default
# where the model has one (ppl.infer.custom_guide.choose_guide)
register(Method("svi", {**_SVI, "guide": Option("normal", "symbol",
                                                ("normal", "delta", "lowrank", "iaf",
                                                 "custom")),
                        "rank": Option(0, int, low=0, doc="lowrank guide rank (0: auto)"),
                        **_COMMON, "dtype": Option("float32", "symbol",
                                                   ("float32", "float64"))},
                doc="stochastic variational inference with an autoguide",
                relations=_svi_relations))
register(Method("map", {**_SVI, "samples": Option(1, int, low=1), **_COMMON,
                        "dtype": Option("float32", "symbol", ("float32", "float64"))},
                doc="maximum a posteriori (SVI with a delta guide)",
                relations=_svi_relations))


def point_estimate(method: str | None, options: dict) -> bool:
    """Whether a fit by ``method`` with ``options`` is a point estimate, every draw a copy
    of one value: ``map``, and ``svi`` with the delta guide."""
    return method == "map" or (method == "svi" and options.get("guide") == "delta")


def lookup(name: str) -> Method | None:
    from .. import builtins

    builtins._load_constructs()  # constructs may add methods (sghmc, meta)
    return METHODS.get(name)
