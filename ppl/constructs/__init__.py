"""Built-in Bayesian deep learning constructs, one module each.

Importing this package imports every construct module; each registers its builtins in
:mod:`ppl.builtins` (and its inference methods in :mod:`ppl.infer.methods`).
"""
from . import (
    fractional_sde,  # noqa: F401
    monotone_dbm,  # noqa: F401
    network_priors,  # noqa: F401
    neural_process,  # noqa: F401
    niw_meta,  # noqa: F401
)
