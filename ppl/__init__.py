"""BDL: a probabilistic modelling language for Bayesian deep learning, compiled to Pyro.

    import ppl
    m = ppl.compile(SOURCE)          # or ppl.load("model.bdl")
    fit = m.fit(data, infer="nuts", samples=500, seed=0)
    fit.summary(); fit.samples["theta"]; fit.predict(new_data)
"""

__version__ = "0.1.0"

from .model import Model, compile, load  # noqa: E402
from .syntax.diagnostics import BdlError  # noqa: E402

__all__ = ["BdlError", "Model", "__version__", "compile", "load"]
