"""``z ~ fractional_sde(times=t, drift=..., diffusion=..., hurst=H, K=5, kind=2, x0=...)``.

A latent path driven by (Markov-approximated) fractional Brownian motion, fitted by
path-space variational inference (Daems et al., ICLR 2024; ``../shared/METHODS.md``
section 2). Registration only (no torch here): the runtime is
:mod:`ppl.runtime.fractional_sde` and the maths of the MA-fBM weights :mod:`ppl.runtime.mafbm`.
"""

from __future__ import annotations

from ..builtins import Builtin, register
from ..check import sizes

PARAMS = ("times", "drift", "diffusion", "hurst", "K", "kind", "x0", "gamma_max", "gamma_min",
          "dt", "dim", "hidden", "n_freq", "data", "data_index")


def _path_shape(args, kwargs):
    """[T, dim]: one row per time point, one column per latent dimension."""
    t = kwargs.get("times", args[0] if args else None)
    if t is None or t.shape is None or len(t.shape) != 1:
        return None
    d = kwargs.get("dim")
    if d is None:
        D = sizes.const(1)
    else:
        D = d.dim if getattr(d, "dim", None) is not None else None
        if D is None and isinstance(getattr(d, "value", None), int):
            D = sizes.const(d.value)
        if D is None:
            return None
    return (t.shape[0], D)


register(Builtin(
    "fractional_sde", "rt.fractional_sde.fractional_sde", PARAMS, 1,
    kind="construct", result="real", shape=_path_shape, tilde="new",
    doc="latent SDE path [T, dim] driven by MA-fBM with Hurst index hurst (learned by "
        "default); path-space VI (METHODS.md section 2)"))
