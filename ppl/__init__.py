"""BDL: a probabilistic modelling language for Bayesian deep learning, compiled to Pyro.

    import ppl
    m = ppl.compile(SOURCE)          # or ppl.load("model.bdl")
    fit = m.fit(data, infer="nuts", samples=500, seed=0)
    fit.summary(); fit.samples["theta"]; fit.predict(new_data)
"""

__version__ = "0.1.0"

# In a source checkout, backends/ and grammar/ sit beside ppl/ and are installed as
# ppl.backends and ppl.grammar; extend the package path so that the checkout itself
# (python -m ppl.cli from the repository root) imports them the same way.
import pathlib as _pathlib  # noqa: E402

_root = _pathlib.Path(__file__).resolve().parent.parent
if (_root / "grammar" / "bdl.lark").is_file() and (_root / "backends" / "pyro").is_dir() \
        and not (_pathlib.Path(__file__).parent / "grammar").exists():
    __path__.append(str(_root))  # noqa: F821

from .model import Model, compile, load  # noqa: E402
from .syntax.diagnostics import BdlError  # noqa: E402

__all__ = ["BdlError", "Model", "__version__", "compile", "load"]
