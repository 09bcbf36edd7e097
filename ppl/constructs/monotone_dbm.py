"""Monotone deep Boltzmann machines: ``monotone_dbm`` and its unit groups (METHODS.md §5).

Registration only (no torch)::

    m = monotone_dbm(visible=categorical(64, 4), hidden=[categorical(64, 4)],
                     label=categorical(1, 10), margin=0.01)
    pixels ~ m.visible      # NaN = missing
    label ~ m.label         # optional: observed trains, absent classifies

``categorical(n, k)`` is ``n`` units of ``k`` states (binary units: ``k = 2``). ``m`` is a
network value (an ``nn.Module`` registered with ``pyro.module``); its attributes
``visible`` and ``label`` are the distributions of the two observed groups under the
mean-field fixed point. Runtime in ``ppl/runtime/monotone_dbm.py``; docs in
``docs/constructs/monotone_dbm.md``.
"""

from __future__ import annotations

from ..builtins import Builtin, register


def _units_shape(args, kwargs):
    return (2,)


register(Builtin("categorical", "rt.monotone_dbm.units", ("n", "k"), 2, result="int",
                 shape=_units_shape, plain=True,
                 doc="a group of n categorical units with k states (monotone_dbm)"))

#: the bare words of monotone_dbm's word options, one table for the checker and the
#: runtime (MonotoneDBM checks the same lists for a model built from Python)
SOLVERS = ("fb", "pr", "mf")
COUPLINGS = ("dense", "conv")
PATTERNS = ("full", "layered")
MASKS = ("random", "patch")
#: options that take a whole number (the checker's ranges take any number; the runtime
#: refuses a fraction, located at the argument: rank=2.5 is not a row count)
INTEGER_OPTIONS = ("rank", "max_iter", "anderson", "kernel", "channels", "seed")

register(Builtin(
    "monotone_dbm", "rt.monotone_dbm.MonotoneDBM",
    ("visible", "hidden", "label", "margin", "rank", "monotone", "solver", "alpha", "tol",
     "max_iter", "anderson", "observed", "mask", "init_scale", "seed",
     "readout", "coupling", "kernel", "channels", "pattern", "label_readout", "layer_ranks",
     "cap", "evidence_gain"),
    1, kind="construct", result="network", attrs={"visible": "dist", "label": "dist"},
    choices={"solver": SOLVERS, "coupling": COUPLINGS, "pattern": PATTERNS, "mask": MASKS},
    ranges={"cap": (1, 2), "rank": "[1, inf)", "margin": "(0, 2)", "alpha": "(0, 1]",
            "tol": "(0, inf)",
            "max_iter": "[1, inf)", "anderson": "[0, inf)", "observed": "[0, 1]",
            "readout": "[0, inf)", "label_readout": "(0, inf)", "kernel": "[1, inf)",
            "channels": "[1, inf)", "evidence_gain": "(0, inf)"},
    integers=INTEGER_OPTIONS, flags=("monotone",),
    methods=("map", "svi"),  # its weights are params: fitted, not sampled
    lists=("hidden", "layer_ranks"),
    missing_as_nan=("visible",),  # pixels ~ m.visible: NaN is a missing pixel
    doc="deep Boltzmann machine with a unique mean-field fixed point (Phi = s(D - A^T A))"))
