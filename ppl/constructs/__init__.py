"""Built-in Bayesian deep learning constructs, one module each.

Importing this package imports every construct module; each registers its builtins in
:mod:`ppl.builtins` (and its inference methods in :mod:`ppl.infer.methods`).
"""
