"""``z ~ fractional_sde(times=t, drift=..., diffusion=..., hurst=H, K=5, kind=2, x0=...)``.

``drift`` and ``diffusion`` take numbers, networks, params or function literals of the
state and time (``drift=(x, t) => -theta * (x - mu)``); ``noise=general|additive`` is the
torchsde noise type; ``control=noise|drift`` what the control network outputs (u, or the
change of X's drift it causes), ``control=affine`` a per-step affine control instead of a
network (exact for linear models), ``control=optimal`` that family at its closed-form
optimum; ``elbo=moments|mc`` the closed-form (Rao-Blackwellised) or Monte Carlo ELBO
(``mc`` by default; ``moments`` is opt-in, and the default under ``control=optimal``).

A latent path driven by (Markov-approximated) fractional Brownian motion, fitted by
path-space variational inference (Daems et al., ICLR 2024; ``../shared/METHODS.md``
section 2). Registration only (no torch here): the runtime is
:mod:`ppl.runtime.fractional_sde` and the maths of the MA-fBM weights :mod:`ppl.runtime.mafbm`.
"""

from __future__ import annotations

from ..builtins import Builtin, FunctionParam, register
from ..check import sizes

PARAMS = ("times", "drift", "diffusion", "hurst", "K", "kind", "x0", "gamma_max", "gamma_min",
          "dt", "dim", "hidden", "n_freq", "data", "data_index", "noise", "control", "elbo")

NOISE = ("general", "additive")
CONTROL = ("noise", "drift", "affine", "optimal")
ELBO = ("mc", "moments")


def _state_dim(kwargs):
    """D, the latent dimension: ``dim`` (1 when absent), or None when not a known size."""
    d = kwargs.get("dim")
    if d is None:
        return sizes.const(1)
    if getattr(d, "dim", None) is not None:
        return d.dim
    if isinstance(getattr(d, "value", None), int):
        return sizes.const(d.value)
    return None


def _path_shape(args, kwargs):
    """[T, dim]: one row per time point, one column per latent dimension."""
    t = kwargs.get("times", args[0] if args else None)
    if t is None or t.shape is None or len(t.shape) != 1:
        return None
    D = _state_dim(kwargs)
    return None if D is None else (t.shape[0], D)


def _field_params(args, kwargs):
    """drift/diffusion literals ``(x, t) => ...``: the state x is real[dim], t a real."""
    D = _state_dim(kwargs)
    return (None if D is None else (D,)), ()


def _field_result(args, kwargs):
    D = _state_dim(kwargs)
    return None if D is None else (D,)


_FIELD = FunctionParam(("state", "time"), _field_params, _field_result)

register(Builtin(
    "fractional_sde", "rt.fractional_sde.fractional_sde", PARAMS, 1,
    kind="construct", result="real", shape=_path_shape, tilde="new",
    functions={"drift": _FIELD, "diffusion": _FIELD},
    choices={"noise": NOISE, "control": CONTROL, "elbo": ELBO},
    ranges={"hurst": "(0, 1)", "K": "[1, inf)", "kind": (1, 2), "gamma_max": "(0, inf)",
            "gamma_min": "(0, inf)", "dt": "(0, inf)", "dim": "[1, inf)", "n_freq": "[0, inf)"},
    methods=("svi", "map"),  # path-space VI: the ELBO of METHODS.md section 2
    lists=("hidden",),  # layer widths of the neural drift
    doc="latent SDE path [T, dim] driven by MA-fBM with Hurst index hurst (learned by "
        "default); path-space VI (METHODS.md section 2)"))
