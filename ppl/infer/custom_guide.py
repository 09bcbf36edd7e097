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


def check_guide_supports(model, guide, kwargs: dict) -> None:
    """Before the fit's first step: each draw of the guide block against the model's site,
    where the data, params or latents set a support the checker could not compare
    (``p ~ Uniform(lo, 1)`` with data ``lo``; ppl.check.guides compares the rest). One
    guide draw and the model replayed on it, both at the fit's first values (the RNG state
    is restored after). A guide's interval must lie within the model's; for a latent drawn
    on the real line (its support follows latents: ``rt.guide_in_support``) it must be the
    model's, as the model maps the guide's draw with its own bounds. A located
    :class:`BdlError` at the guide's draw otherwise; nothing where the traces fail (the
    first step then says why) or the supports are not intervals."""
    import pyro
    from pyro import poutine

    from ..runtime.dependent_support import SUFFIX

    state = pyro.util.get_rng_state()
    try:
        gtr = poutine.trace(guide).get_trace(**kwargs)
        mtr = poutine.trace(poutine.replay(model, trace=gtr)).get_trace(**kwargs)
    except Exception:  # noqa: BLE001 - the first step reports it, located
        return
    finally:
        pyro.util.set_rng_state(state)
    for name, g in gtr.nodes.items():
        m = mtr.nodes.get(name)
        if g["type"] != "sample" or g["is_observed"] or m is None or m["type"] != "sample":
            continue
        real_line = name.endswith(SUFFIX)
        gfn, mfn = g["fn"], m["fn"]
        if real_line:  # rt.unconstrained(fn): fn's own support
            gfn, mfn = getattr(gfn, "base_dist", gfn), getattr(mfn, "base_dist", mfn)
        try:
            gsup, msup = gfn.support, mfn.support
        except (AttributeError, NotImplementedError):  # a plate's _subsample site
            continue
        bad = _outside(_ends(gsup), _ends(msup), real_line)
        if bad is not None:
            raise _refusal(guide, name.removesuffix(SUFFIX), *bad, real_line)


def _ends(c):
    """A support's (lower, upper) bounds as tensors, or None where it is not an interval."""
    import torch
    from torch.distributions import constraints

    from ..runtime.dependent_support import base_constraint, support_ends

    if not isinstance(base_constraint(c), (
            type(constraints.real), constraints.greater_than, constraints.greater_than_eq,
            constraints.less_than, constraints.interval, constraints.half_open_interval)):
        return None
    inf = torch.tensor(float("inf"))
    lo, hi = support_ends(c)
    return (-inf if lo is None else torch.as_tensor(lo),
            inf if hi is None else torch.as_tensor(hi))


def _outside(g, m, equal: bool):
    """The first element where interval ``g`` is not within ``m`` (``equal``: is not
    ``m``), as ((model lo, hi), (guide lo, hi), index or None), or None."""
    import torch

    if g is None or m is None:
        return None
    try:
        glo, ghi, mlo, mhi = (t.detach().double() for t in torch.broadcast_tensors(*g, *m))
    except RuntimeError:
        return None
    if equal:
        bad = ~(torch.isclose(glo, mlo) & torch.isclose(ghi, mhi))
    else:
        bad = (glo < mlo - 1e-6 * (1 + mlo.abs())) | (ghi > mhi + 1e-6 * (1 + mhi.abs()))
    if not bool(bad.any()):
        return None
    at = tuple(bad.nonzero()[0].tolist())
    index = [i for i, n in zip(at, bad.shape, strict=True) if n > 1]  # less plates' 1s
    m_lo, m_hi, g_lo, g_hi = (float(t[at]) for t in (mlo, mhi, glo, ghi))
    return (m_lo, m_hi), (g_lo, g_hi), index or None


def _refusal(guide, name: str, msup, gsup, index, real_line: bool):
    """The located error of :func:`check_guide_supports`, at the guide's draw of ``name``."""
    from .. import locate
    from ..check.guides import support_refusal
    from ..syntax import ast
    from ..syntax.diagnostics import BdlError, Diagnostic
    from ..syntax.parser import parse

    entry = locate._MODULES.get(guide.__code__.co_filename)  # its BDL file (ppl.locate)
    filename, text, model = (entry[0], entry[1], entry[3]) if entry else ("<string>", None,
                                                                         None)
    program = None
    if text is not None:
        try:
            program = parse(text)
        except Exception:  # noqa: BLE001 - a module whose BDL file changed since
            program = None
    mname = getattr(model, "name", None)
    g = next((s for gb in (program.guides if program else ()) if gb.name == mname
              for s in ast.walk(gb.body) if isinstance(s, ast.Sample) and s.name == name),
             None)
    ms = next((s for mb in (program.models if program else ()) if mb.name == mname
               for s in ast.walk(mb.body) if isinstance(s, ast.Sample) and s.name == name),
              None)
    at = f"(drawn at {ms.name_span})" if ms is not None else "(drawn in the model)"
    element = "" if index is None else " element " + ", ".join(map(str, index))
    when = " at the fit's first values" if real_line else " with this fit's data"
    if g is None:
        return BdlError([Diagnostic(f"'{name}'{element} lies on {msup} in the model{when}, "
                                    f"but the guide's draw on {gsup}")], filename, text)
    gname = (g.dist.func_name if isinstance(g.dist, ast.Call) else None) or "distribution"
    mapped = g.type is not None and (bool(g.type.bounds) or g.type.base != "real")
    d = support_refusal(g, gname, msup, gsup, at, None, mapped, when, element)
    if real_line:
        d.notes[:-1] = [
            "its support follows latents: the model draws it on the real line and maps the "
            "guide's draw there with its own bounds, so the guide's support must be the "
            "model's, not only within it: draw it from the model's distribution, or from "
            f"Normal(loc, scale) with those bounds declared ({name}: real<lower=..., "
            "upper=...> ~ Normal(loc, scale))"]
    err = BdlError([d], filename, text)
    err.not_a_bug = True
    return err


__all__ = ["check_guide_supports", "choose_guide", "current", "using"]
