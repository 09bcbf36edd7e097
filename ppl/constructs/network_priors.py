"""Network priors (Tran et al. 2022; METHODS.md §1) and the ``sghmc`` inference method.

``f ~ gaussian_prior(1)``, ``f ~ hierarchical_prior(1, 1)``, ``f ~ gp_prior(k, inputs=x)``
and ``f ~ scale_mixture_prior(a, b)`` turn every weight of the network ``f`` into a latent
(Pyro sample sites named ``f.W0``, ``f.b0``, ...); the network then computes
h <- act(W h / sqrt(n_in) + b). Registration only: no torch import here.
"""

from __future__ import annotations

from ..builtins import Builtin, register
from ..infer.methods import _COMMON, Method, Option
from ..infer.methods import register as register_method

_RT = "rt.network_priors"

# gp_prior's words (bare or quoted: family=hierarchical, measure="grid"), one list for the
# checker and the runtime
FAMILIES = ("gaussian", "hierarchical")
MEASURES = ("data", "grid")

register(Builtin(
    "gaussian_prior", f"{_RT}.gaussian_prior", ("scale",), 0, kind="construct",
    result="network", tilde="network", ranges={"scale": "(0, inf)"},
    doc="fixed Gaussian prior (FG): every weight and bias ~ N(0, scale^2), scale 1 by default"))
register(Builtin(
    "hierarchical_prior", f"{_RT}.hierarchical_prior", ("a", "b"), 0, kind="construct",
    result="network", tilde="network", ranges={"a": "(0, inf)", "b": "(0, inf)"},
    doc="fixed hierarchical prior (FH): per layer v ~ IG(a, b) for W and for b, "
        "W | v ~ N(0, v); a = b = 1 by default"))
register(Builtin(
    "gp_prior", f"{_RT}.gp_prior",
    ("kernel", "inputs", "family", "steps", "samples", "points", "critic_steps",
     "critic_init_steps", "lr", "measure", "seed", "cache", "critic_lr", "init_scale",
     "share_samples", "min_shape"), 2,
    kind="construct", result="network", tilde="network",
    choices={"family": FAMILIES, "measure": MEASURES},
    ranges={"steps": "[0, inf)", "samples": "[1, inf)", "points": "[1, inf)",
            "critic_steps": "[0, inf)", "critic_init_steps": "[0, inf)", "lr": "(0, inf)",
            "critic_lr": "(0, inf)", "init_scale": "(0, inf)", "min_shape": "[0, 2)"},
    doc="GP-induced prior (GPiG, or GPiH with family=\"hierarchical\"): the per-layer "
        "prior hyperparameters are fitted so that the network's function distribution "
        "matches GP(0, kernel) in Wasserstein-1 distance at measurement sets built from "
        "inputs"))
register(Builtin(
    "scale_mixture_prior", f"{_RT}.scale_mixture_prior", ("a", "b", "scale"), 0,
    kind="construct", result="network", tilde="network",
    ranges={"a": "(0, inf)", "b": "(0, inf)", "scale": "(0, inf)"},
    doc="last-layer scale mixture: hidden layers N(0, scale^2); the output layer's "
        "variance s ~ IG(a, b), W_L | s ~ N(0, s) (a Student-t process in the wide limit)"))

register_method(Method(
    "sghmc",
    {
        "samples": Option(50, int, low=1, doc="draws kept per chain"),
        "warmup": Option(2000, int, low=0, doc="burn-in steps per chain (discarded)"),
        "thin": Option(20, int, low=1, doc="steps between kept draws"),
        "chains": Option(4, int, low=1,
                         doc="independent chains; chain c starts from the prior draw "
                             "seeded chain_seed(seed, c) (seed for chain 0)"),
        "vectorize": Option(True, bool,
                            doc="move all chains in one batched step (torch.func.vmap over "
                                "the chains' potentials) instead of one after another"),
        "step_size": Option(0.01, float, low=0.0,
                            doc="eta: the learning rate (plain) or its square root "
                                "(adaptive, where eta enters squared)"),
        "friction": Option(0.05, float, low=0.0, high=1.0, low_open=True,
                           doc="alpha: momentum decay per step"),
        "adaptive": Option(True, bool,
                           doc="Springenberg et al. preconditioning, adapted during burn-in"),
        "gibbs_every": Option(50, int, low=1,
                              doc="steps between Gibbs updates of hierarchical variances"),
        "drop": Option(0, int, low=0, doc="kept draws dropped at the start of each chain"),
        **_COMMON,
        "dtype": Option("float32", "symbol", ("float32", "float64")),
    },
    doc="stochastic-gradient Hamiltonian Monte Carlo (Chen et al. 2014; adaptive: "
        "Springenberg et al. 2016); minibatches come from the model's `plate N batch B`",
    runner="ppl.infer.sghmc:run"))
