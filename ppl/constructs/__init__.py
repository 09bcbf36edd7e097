"""Built-in Bayesian deep learning constructs, one module each.

Importing this package imports every construct module; each registers its builtins in
:mod:`ppl.builtins` (and its inference methods in :mod:`ppl.infer.methods`).
"""
from . import network_priors  # noqa: F401
from . import neural_process  # noqa: F401
from . import fractional_sde  # noqa: F401
from . import niw_meta  # noqa: F401
