"""A model file's guide block in a fit: which guide svi uses, and the guide function.

``svi`` fits with the model's guide block when it has one and no autoguide is asked for
(``guide=custom`` says so explicitly); ``map`` and the samplers do not use a guide block,
and say so. docs/language.md, "Guides", is the user's account.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings

# the generated guide function (``def NAME_guide``) of the model being fitted
_GUIDE: list = [None]


@contextlib.contextmanager
def using(guide):
    """Fit with ``guide`` (a generated guide function, or None) as svi's guide=custom."""
    saved = _GUIDE[0]
    _GUIDE[0] = guide
    try:
        yield
    finally:
        _GUIDE[0] = saved


def current():
    """The guide function of :func:`using`, or None."""
    return _GUIDE[0]


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # ppl/


def _caller_level() -> int:
    """The ``stacklevel`` of :func:`choose_guide`'s warnings that names the user's line
    (``m.fit(...)``, a generated module's ``rt.main``): the first frame outside the ppl
    package; 3 (the caller of ppl's entry point) when every frame is ppl's (``bdl``)."""
    frame, level = sys._getframe(2), 2  # 0: here, 1: choose_guide
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(
            _PACKAGE + os.sep):
        frame, level = frame.f_back, level + 1
    return level if frame is not None else 3


def choose_guide(method: str, opts: dict, explicit: bool, model: str | None,
                 guide_block: bool) -> dict:
    """``opts`` with svi's guide chosen for a model with or without a guide block:
    ``custom`` where it has one and no guide was asked for (``explicit``). An autoguide
    asked for beside a guide block, or a method that fits no guide, warns that the block
    is not used; ``guide=custom`` without one is an error."""
    from ..syntax.diagnostics import BdlError, Diagnostic

    name = f"model {model}" if model else "the model"
    if method == "svi":
        guide = opts.get("guide")
        if guide_block and not explicit:
            return {**opts, "guide": "custom"}
        if guide == "custom" and not guide_block:
            raise BdlError([Diagnostic(
                f"svi(guide=custom) fits with the model's guide block, and {name} has none",
                notes=[f"write one: guide {model or 'Name'} {{ ... }}, or choose an "
                       "autoguide (guide=normal, delta, lowrank, iaf)"])], "infer")
        if guide_block and guide != "custom":
            warnings.warn(f"svi(guide={guide}) fits an autoguide: the guide block of {name} "
                          "is not used (guide=custom, the default, uses it)",
                          stacklevel=_caller_level())
    elif guide_block:
        what = ("map fits a point estimate (a delta guide)" if method == "map"
                else f"{method} samples the posterior itself")
        warnings.warn(f"{what}: the guide block of {name} is not used (svi uses it)",
                      stacklevel=_caller_level())
    return opts


__all__ = ["choose_guide", "current", "using"]
