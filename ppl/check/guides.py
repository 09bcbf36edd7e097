"""Checking ``guide Name { ... }`` blocks: hand-written variational guides for svi.

A guide block is written in the model's statement syntax. It is checked as a model of
its own (:func:`guide_model`: the model's data arguments, the guide's body), so every
rule of a model body holds in it, and then against its model (:func:`check_guides`):

* it draws every continuous latent of the model exactly once, and nothing else (not
  data, not a value the model computes, not a label that svi sums out);
* each draw has the model site's shape and plates, and a distribution whose support is
  the model's (a ``Normal`` guide for a ``Beta`` latent would put mass where the model
  has none), compared where the source decides both (:func:`_support`: an interval from
  literal bounds and arguments, or a class such as ordered vectors); a declared type on
  a guide's ``~`` maps a draw on the real line into its set (``rt.transformed``);
* in a model whose labels svi sums out, a vector latent outside plates is drawn per
  element (ppl.lower.enum_dims), and so must the guide's draw of it be;
* its own names (``param``, ``=``) differ from the model's, its plate indices included;
  its plates are the model's (name, size, batch, Pyro dim).

docs/language.md, "Guides", is the user's account of these rules.
"""

from __future__ import annotations

from ..syntax import ast
from ..syntax.diagnostics import Diagnostic
from . import signatures, sizes, supports

# the suffix of a guide's generated function (``def Coin_guide(...)``) and checked model
SUFFIX = "_guide"

_INF = supports.INF
_INTERVALS = supports.INTERVALS
# a support class in words (Stan's), and the guide distributions that have it ("": none)
_SUPPORT_WORDS = {
    "real": ("the real line", "Normal(loc, scale), StudentT(df, loc, scale)"),
    "positive": ("the positive reals", "LogNormal(loc, scale), Gamma(shape, rate)"),
    "unit": ("the interval (0, 1)", "Beta(a, b)"),
    "simplex": ("the simplex", "Dirichlet(concentration)"),
    "corr_cholesky": ("Cholesky factors of correlation matrices", "LKJCholesky(K, eta)"),
    "positive_definite": ("positive definite matrices", "Wishart(df, covariance_matrix=S)"),
    "corr_matrix": ("correlation matrices", "LKJ(K, eta)"),
    "ordered": ("ordered vectors", ""),
    "positive_ordered": ("positive ordered vectors", ""),
    "unit_vector": ("unit vectors", ""),
    "cholesky_factor_cov": ("Cholesky factors of covariance matrices", ""),
    # a discrete guide's (never within a continuous latent's: ppl.check.supports.within)
    "IntegerGreaterThan(lower_bound=0)": ("the integers >= 0", ""),
    "Integer": ("the integers", ""),
    "Boolean()": ("0 and 1", ""),
    "OneHot()": ("one-hot vectors", ""),
}
# the declared types a guide's '~' may carry: its draw, on the real line, is mapped into
# the type's set by Pyro's biject_to (a TransformedDistribution; ppl.runtime.transformed)
_MAPPABLE = {"ordered", "positive_ordered", "positive", "unit", "bounds"}


def guide_model(guide: ast.Guide, cm) -> ast.Model:
    """The guide as a model to check: the model's data arguments, then the model's
    transformed data (top-level values of the data alone, which Pyro passes the guide as
    it passes the model), then the guide's body. ``given`` holds the ids of those
    transformed statements: the guide function takes them as arguments, and lowering
    does not compute them again."""
    known = {a.name for a in cm.model.args} | set(cm.sizes)
    given = []
    for s in cm.model.body:
        if isinstance(s, ast.Assign) and getattr(cm.sites.get(id(s)), "role", "") \
                == "transformed" and set(ast.names_read(s.value)) <= known:
            given.append(s)
            known.add(s.name)
    out = ast.Model(guide.name + SUFFIX, list(cm.model.args), given + guide.body,
                    span=guide.span)
    out.end_line = getattr(guide, "end_line", None)
    out.given = frozenset(id(s) for s in given)
    return out


def check_guides(program: ast.Program, models: dict, errors: list[Diagnostic],
                 warnings: list[Diagnostic]) -> None:
    """Check every guide block of ``program`` against its model (``models``: name ->
    CheckedModel), appending to ``errors`` and ``warnings``; a guide that checks is
    set as its model's ``guide`` (a CheckedModel whose name ends in :data:`SUFFIX`)."""
    from .checker import _ModelChecker

    seen: dict[str, ast.Guide] = {}
    for g in program.guides:
        cm = models.get(g.name)
        if cm is None:
            hint = signatures.suggest(g.name, models)
            notes = [f"did you mean '{hint}'?"] if hint else [
                "the file's models: " + ", ".join(models)]
            errors.append(Diagnostic(f"guide names unknown model '{g.name}'", g.span,
                                     notes=notes))
            continue
        if g.name in seen:
            errors.append(Diagnostic(f"model '{g.name}' has more than one guide", g.span,
                                     notes=[f"its first guide is at {seen[g.name].span}"]))
            continue
        seen[g.name] = g
        if g.name + SUFFIX in models:
            errors.append(Diagnostic(
                f"the guide of '{g.name}' is generated as the function '{g.name}{SUFFIX}', "
                "which is also a model's name", g.span,
                notes=[f"rename the model '{g.name}{SUFFIX}'"]))
            continue
        own: list[Diagnostic] = []
        _names_against_model(g, cm, own)
        checker = _ModelChecker(guide_model(g, cm))
        checker.run()
        last = getattr(g, "end_line", None) or 10**9
        inside = [d for d in checker.errors if g.span.line <= d.span.line <= last]
        for d in inside:  # a model name the guide cannot see: say why
            name = d.message.split("'")[1] if d.message.endswith("' is not defined") else ""
            sym = cm.symbols.get(name)
            node = sym.node if sym is not None else None
            dty = cm.ty(node.dist) if isinstance(node, ast.Sample) and \
                sym.role == "latent" else None
            if dty is not None and dty.enumerable:
                d.message = (f"a guide cannot read '{name}': it is a label of model "
                             f"{g.name}{_where(sym)} that svi sums out, with no value in "
                             "the guide")
                d.notes[:] = ["the guide's draws cannot depend on a label summed out: "
                              "write them without it (the fit sums the label out of the "
                              "model, given the guide's draws)"]
            elif dty is not None and dty.dist == "Delta":
                d.message = (f"a guide cannot read '{name}': model {g.name} fixes it by "
                             f"its Delta{_where(sym)}, and a guide neither draws nor reads "
                             "it")
                d.notes[:] = [f"compute its value in the guide under a name of its own "
                              f"('{name}_q = ...', from the latents the guide has drawn)"]
            elif sym is not None and sym.role == "latent":
                d.notes.append(f"a guide reads a latent of model {g.name} after drawing it "
                               f"itself: {name} ~ ... before this line")
            elif sym is not None:
                d.notes.append(f"a guide sees model {g.name}'s data arguments, sizes and "
                               f"transformed data, not its {_role_words(sym.role)} "
                               f"'{name}'{_where(sym)}")
        own.extend(inside)
        warnings.extend(d for d in checker.warnings if g.span.line <= d.span.line <= last)
        gm = checker.result()
        if not inside:
            _against_model(g, gm, cm, own)
        errors.extend(own)
        if not own:
            cm.guide = gm
    for name, cm in models.items():
        spec = cm.infer
        if spec is not None and spec.method == "svi" and spec.options.get("guide") == "custom" \
                and name not in seen:
            inf = next((i for i in program.infers if i.span == spec.span), None)
            at = next((k.span for k in (inf.options if inf is not None else ())
                       if k.name == "guide"), spec.span)
            errors.append(Diagnostic(
                f"svi(guide=custom) fits with the model's guide block, and model '{name}' has "
                "none", at,
                notes=[f"write one: guide {name} {{ ... }}, or choose an autoguide "
                       "(guide=normal, delta, lowrank, iaf)"]))


def _model_latents(cm) -> dict[str, ast.Sample]:
    """The model's latents a guide draws: continuous latents of its ``~`` statements."""
    out = {}
    for s in ast.walk(cm.model.body):
        info = cm.sites.get(id(s)) if isinstance(s, ast.Sample) else None
        if info is not None and info.role == "latent" and not cm.ty(s.dist).discrete \
                and cm.ty(s.dist).dist != "Delta":
            out[s.name] = s
    return out


def _where(sym) -> str:
    return f" at {sym.span}" if sym.span.line > 0 else ""


def _names_against_model(g: ast.Guide, cm, out: list[Diagnostic]) -> None:
    """What each statement of the guide names, against the model's names: a ``~`` of
    anything but a continuous latent, a name of the guide's own that the model has."""
    model = g.name
    constructs = [s for s in ast.walk(cm.model.body) if isinstance(s, ast.Sample)
                  and getattr(cm.sites.get(id(s)), "role", "") == "construct"]
    if constructs:
        c = constructs[0]
        out.append(Diagnostic(
            f"model '{model}' uses the construct {c.dist.func_name} ('{c.name}' at "
            f"{c.name_span}): a guide block cannot stand for a construct's latents",
            g.span, notes=["fit this model with an autoguide: svi(guide=normal), or "
                           "lowrank, iaf, delta"]))
        return
    latents = _model_latents(cm)
    indices = {p.index: p for p in ast.walk(cm.model.body)
               if isinstance(p, ast.Plate) and p.index}
    drawn: dict[str, ast.Sample] = {}
    for s in ast.walk(g.body):
        if isinstance(s, ast.Factor):
            out.append(Diagnostic("a guide has no factor: it is a distribution to draw the "
                                  "latents from, not a density term", s.span,
                                  notes=["a density term belongs in the model"]))
            continue
        if not isinstance(s, (ast.Sample, ast.Param, ast.Assign)):
            continue
        sym = cm.symbols.get(s.name)
        if not isinstance(s, ast.Sample):
            if sym is None and s.name in indices:  # a Pyro site of the model's plate
                what = "param" if isinstance(s, ast.Param) else "value"
                out.append(Diagnostic(
                    f"the guide's {what} '{s.name}' has the name of model {model}'s plate "
                    f"index '{s.name}' (plate at {indices[s.name].span})", s.name_span,
                    notes=["a guide's own names must differ from the model's (a plate's "
                           "index names its Pyro plate, a site guide and model share): "
                           f"rename it (e.g. '{s.name}_q')"]))
            elif sym is not None:
                what = "param" if isinstance(s, ast.Param) else "value"
                out.append(Diagnostic(
                    f"the guide's {what} '{s.name}' has the name of model {model}'s "
                    f"{_role_words(sym.role)} '{s.name}'{_where(sym)}", s.name_span,
                    notes=["a guide's own names must differ from the model's: rename it "
                           f"(e.g. '{s.name}_q')"]))
            continue
        if s.name in drawn:
            out.append(Diagnostic(f"'{s.name}' is drawn twice in the guide", s.name_span,
                                  notes=[f"first drawn at {drawn[s.name].name_span}"]))
            continue
        drawn[s.name] = s
        if s.name in latents:
            continue
        if sym is None:
            hint = signatures.suggest(s.name, latents)
            notes = [f"did you mean '{hint}'?"] if hint else [
                f"model {model}'s latents: " + (", ".join(latents) or "(none)")]
            out.append(Diagnostic(f"'{s.name}' is not a latent of model '{model}'",
                                  s.name_span, notes=notes))
        elif sym.role == "latent" and isinstance(sym.node, ast.Sample):
            dty = cm.ty(sym.node.dist)
            if dty.dist == "Delta":
                why = "is fixed by its Delta: it is not fitted"
            elif dty.enumerable:
                why = ("is a discrete latent that svi sums out exactly (Pyro's "
                       "enumeration): leave it out of the guide")
            else:
                why = "is a discrete latent, which svi cannot fit"
            out.append(Diagnostic(f"'{s.name}'{_where(sym)} {why}", s.name_span,
                                  notes=["a guide draws the model's continuous latents"]))
        else:
            out.append(Diagnostic(
                f"'{s.name}' is {_a_role(sym.role)} of model '{model}'{_where(sym)}, not "
                "a latent: a guide draws only the model's latents", s.name_span,
                notes=[f"model {model}'s latents: " + (", ".join(latents) or "(none)")]))
    missing = [k for k in latents if k not in drawn]
    if missing:
        shown = ", ".join(f"'{k}'" for k in missing)
        plural = "s" if len(missing) > 1 else ""
        out.append(Diagnostic(
            f"guide {model} does not draw the model's latent{plural} {shown}", g.span,
            notes=["a guide draws every continuous latent of its model exactly once: add "
                   + "; ".join(f"{k} ~ ..." for k in missing)]))


_ROLES = {"data": "data argument", "size": "size", "transformed": "transformed data",
          "deterministic": "computed value", "value": "computed value", "param": "param",
          "network": "network", "latent": "latent", "function": "function"}


def _role_words(role: str) -> str:
    return _ROLES.get(role, role)


def _a_role(role: str) -> str:
    words = _role_words(role)
    return ("an " if words[0] in "aeiou" else "a ") + words


def _literal(e: ast.Expr | None) -> float | None:
    """The value of a number written in the source (``1``, ``-0.5``, ``2 * 3``), or None."""
    if isinstance(e, ast.Number):
        return float(e.value)
    if isinstance(e, ast.Neg):
        v = _literal(e.operand)
        return None if v is None else -v
    if isinstance(e, ast.BinOp) and e.op in ("+", "-", "*", "/"):
        a, b = _literal(e.left), _literal(e.right)
        if a is None or b is None or (e.op == "/" and b == 0):
            return None
        return {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[e.op]
    return None


def _arg(call: ast.Call, sig, name: str) -> ast.Expr | None:
    """Argument ``name`` of distribution ``call`` (signature ``sig``), by keyword or by
    its position where it may be given so; None where it is not given."""
    for k in call.kwargs:
        if k.name == name:
            return k.value
    position = None if name in sig.keyword_only else sig.params.index(name)
    if position is not None and position < len(call.args):
        return call.args[position]
    return None


def _support(cm, s: ast.Sample, declared: bool = True):
    """The support of site ``s`` of checked model ``cm`` as a key (:func:`supports.key`:
    an interval ``(lo, hi)``, a class name) or None when it is not known from the source
    alone (``Uniform(a, b)`` of data or params). ``declared``: the declared type's set
    where it has one."""
    info = cm.sites.get(id(s))
    c = info.constraint if info is not None and declared else None
    own = _dist_support(cm, s.dist)
    if c is None:
        return own
    if isinstance(c, str):
        key = supports.key(c)
    else:
        kind, *bounds = c
        vals = [_literal(b) for b in bounds]
        key = None if any(v is None for v in vals) else {
            "greater_than": lambda: (vals[0], _INF), "less_than": lambda: (-_INF, vals[0]),
            "interval": lambda: (vals[0], vals[1])}.get(kind, lambda: None)()
    if not isinstance(key, tuple):
        return key
    if own is None:  # a support the data decide (Uniform(a, 5)): the declared set holds it
        return key
    if not isinstance(own, tuple):  # the declared set within a support of another kind
        return None
    return (max(key[0], own[0]), min(key[1], own[1]))  # s: real<lower=0> ~ Uniform(0, 5)


def _dist_support(cm, d: ast.Expr):
    """The support of distribution ``d`` as a key (:func:`_support`): its signature's, or
    from literal arguments where it follows them (``Uniform(0, 1)``, ``Pareto(1, a)``,
    ``Truncated(Normal(m, s), low=1)``; ppl.check.supports)."""
    dty = cm.ty(d)
    sig = signatures.lookup(dty.dist) if dty.dist else None
    if sig is None or not isinstance(d, ast.Call):
        return None
    if sig.support is not None:
        return supports.key(sig.support)
    def value(name):
        e = _arg(d, sig, name)
        return supports.MISSING if e is None else _literal(e)

    base = None
    if dty.dist == "Truncated":
        inner = _arg(d, sig, "base_dist")
        base = _dist_support(cm, inner) if inner is not None else None
    return supports.from_arguments(dty.dist, value, base)


def _param_behind(cm, s: ast.Sample):
    """The model's param that the support of latent ``s`` follows (``u ~ Uniform(0, b)``,
    ``u: real<upper=b>``, through values computed from it, a Truncated's base, a name
    given the distribution), or None. A guide cannot read a model's params."""
    exprs: list[ast.Expr] = []
    info = cm.sites.get(id(s))
    if info is not None and isinstance(info.constraint, tuple):
        exprs.extend(info.constraint[1:])
    todo, seen = [s.dist], set()
    while todo:
        d = todo.pop()
        if isinstance(d, ast.Name) and d.id not in seen:
            seen.add(d.id)
            sym = cm.symbols.get(d.id)
            if sym is not None and isinstance(sym.node, ast.Assign):
                todo.append(sym.node.value)
            continue
        dty = cm.ty(d) if isinstance(d, ast.Call) else None
        sig = signatures.lookup(dty.dist) if dty is not None and dty.dist else None
        if sig is None:
            continue
        for name in supports.FROM_ARGUMENTS.get(sig.name, ()):
            e = _arg(d, sig, name)
            if e is not None:
                exprs.append(e)
        for name in ("base_dist", "component_distribution"):
            if name in sig.params:
                e = _arg(d, sig, name)
                if e is not None:
                    todo.append(e)
    names, seen = [n for e in exprs for n in ast.names_read(e)], set()
    while names:
        n = names.pop()
        sym = cm.symbols.get(n)
        if n in seen or sym is None:
            continue
        seen.add(n)
        if sym.role == "param":
            return sym
        if sym.role != "latent" and isinstance(sym.node, ast.Assign):
            names.extend(ast.names_read(sym.node.value))
    return None


def _num(x: float) -> str:
    return f"{x:g}"


def _support_words(key) -> str:
    """A support key in words: "the positive reals", "numbers >= 1", "ordered vectors"."""
    if isinstance(key, tuple):
        for c, iv in _INTERVALS.items():
            if iv == key:
                return _SUPPORT_WORDS[c][0]
        lo, hi = key
        if hi == _INF:
            return f"numbers >= {_num(lo)}"
        if lo == -_INF:
            return f"numbers <= {_num(hi)}"
        return f"the interval ({_num(lo)}, {_num(hi)})"
    return _SUPPORT_WORDS[key][0] if key in _SUPPORT_WORDS else str(key)


def _declared_type(key, shape) -> str | None:
    """The declared type that maps a real draw onto support ``key`` (``real<lower=1>``),
    with ``shape``; None where a guide cannot map into it."""
    dims = f"[{', '.join(str(d) for d in shape)}]" if shape else ""
    if isinstance(key, tuple):
        lo, hi = key
        bounds = ([f"lower={_num(lo)}"] if lo != -_INF else []) + (
            [f"upper={_num(hi)}"] if hi != _INF else [])
        return f"real<{', '.join(bounds)}>{dims}" if bounds else None
    if key in ("ordered", "positive_ordered"):
        return f"{key}{dims}"
    return None


def _support_notes(name: str, key, shape) -> list[str]:
    """What a guide for a latent on support ``key`` can be."""
    words = _support_words(key)
    known = None
    if isinstance(key, tuple):
        known = next((_SUPPORT_WORDS[c][1] for c, iv in _INTERVALS.items() if iv == key), None)
        if known is None:
            lo, hi = key
            known = "Truncated(Normal(loc, scale)" + (
                f", low={_num(lo)}" if lo != -_INF else "") + (
                f", high={_num(hi)}" if hi != _INF else "") + ")"
    elif key in _SUPPORT_WORDS:
        known = _SUPPORT_WORDS[key][1] or None
    decl = _declared_type(key, shape)
    notes = []
    if known:
        notes.append(f"a guide for a latent on {words}: {known}")
    elif decl is None:
        notes.append(f"no distribution of the library has {words} as its support, and "
                     "neither a guide nor an autoguide can map a draw into them (Pyro has "
                     "no bijection onto them)")
    if decl is not None and key != _INTERVALS["real"]:
        notes.append(("or " if known else "no distribution of the library has that "
                      "support: ") + "map a Normal draw into it with a declared type: "
                     f"{name}: {decl} ~ Normal(loc, scale)")
    return notes


def _mappable(c) -> bool:
    """Can a guide's declared type with constraint ``c`` map a real draw into its set?"""
    if isinstance(c, str):
        return supports.CLASSES.get(c, c) in _MAPPABLE
    return c is not None and c[0] in ("greater_than", "less_than", "interval")


def _text(e: ast.Expr) -> str:
    from ..syntax.format import expr

    return expr(e)


def _symbolic(e: ast.Expr):
    """An integer expression of numbers, names and + - * / as a sympy expression (names
    as symbols), or None."""
    import sympy

    if isinstance(e, ast.Number) and isinstance(e.value, int):
        return sympy.Integer(e.value)
    if isinstance(e, ast.Name):
        return sympy.Symbol(e.id)
    if isinstance(e, ast.BinOp) and e.op in ("+", "-", "*", "/"):
        a, b = _symbolic(e.left), _symbolic(e.right)
        if a is None or b is None:
            return None
        return {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[e.op]
    return None


def _same_expr(a: ast.Expr, b: ast.Expr) -> bool:
    """Do two batch expressions provably have one value (symbolically, else as written)?"""
    sa, sb = _symbolic(a), _symbolic(b)
    if sa is not None and sb is not None:
        return (sa - sb).simplify() == 0
    return _text(a) == _text(b)


def _against_model(g: ast.Guide, gm, cm, out: list[Diagnostic]) -> None:
    """Each guide site against the model's: its plates, shape and support; each guide
    plate against the model's plates of that name."""
    model = g.name
    mplates = {p.name: p for p in cm.plates.values()}
    mnodes = {cm.plates[id(s)].name: s for s in ast.walk(cm.model.body)
              if isinstance(s, ast.Plate) and id(s) in cm.plates}
    for s in ast.walk(g.body):
        if isinstance(s, ast.Plate):
            p = gm.plates.get(id(s))
            if p is None:
                continue
            mp = mplates.get(p.name)
            ms = mnodes.get(p.name)
            if mp is not None and ms is not None and \
                    sizes.compare(mp.size, p.size) != sizes.Relation.EQUAL:
                out.append(Diagnostic(
                    f"plate {p.name} has size {_text(s.size)} in the guide but "
                    f"{_text(ms.size)} in the model (at {ms.span})", s.size.span,
                    notes=["a guide's plate is its model's: write the model's size"]))
                continue
            if mp is not None and ms is not None and mp.subsample and p.subsample and \
                    not _same_expr(ms.batch, s.batch):
                out.append(Diagnostic(
                    f"plate {p.name} has batch {_text(s.batch)} in the guide but "
                    f"{_text(ms.batch)} in the model (at {ms.span})", s.batch.span,
                    notes=["the guide's plate draws the minibatch the model's reads: give "
                           "both the same batch"]))
                continue
            if mp is None:
                out.append(Diagnostic(
                    f"plate {p.name} is not one of model {model}'s plates", s.span,
                    notes=["a guide's plates are its model's: "
                           + (", ".join(mplates) or "(it has none)")]))
            elif mp.subsample != p.subsample:
                out.append(Diagnostic(
                    f"plate {p.name} is subsampled (batch) in "
                    f"{'the model' if mp.subsample else 'the guide'} only", s.span,
                    notes=["the guide's plate draws the minibatch the model's reads: give "
                           "both the same batch, or neither"]))
            elif mp.dim != p.dim:
                out.append(Diagnostic(
                    f"plate {p.name} is at Pyro dim {p.dim} in the guide but {mp.dim} in the "
                    "model", s.span,
                    notes=["nest the guide's plates as the model's are (a plate's dim "
                           "counts the plates nested inside it)"]))
    latents = _model_latents(cm)
    # labels svi sums out: the model draws a vector latent outside plates in plates over
    # its elements, and Pyro requires the guide's site to have the same event dims
    # (ppl.lower.enum_dims)
    enumerates = any(isinstance(s, ast.Sample) and getattr(cm.sites.get(id(s)), "role", "")
                     == "latent" and cm.ty(s.dist).enumerable
                     for s in ast.walk(cm.model.body))
    for s in ast.walk(g.body):
        if not isinstance(s, ast.Sample) or s.name not in latents:
            continue
        info = gm.sites.get(id(s))
        if info is None or info.role != "latent":
            continue
        ms = latents[s.name]
        minfo = cm.sites[id(ms)]
        at = f"(drawn at {ms.name_span})"
        if tuple(minfo.plates) != tuple(info.plates):
            def said(p):
                return f"in plate {', '.join(p)}" if p else "outside plates"
            out.append(Diagnostic(
                f"'{s.name}' is drawn {said(info.plates)} in the guide but "
                f"{said(minfo.plates)} in the model {at}", s.name_span,
                notes=["draw it in the guide in the same plates as in the model"]))
            continue
        gshape, mshape = gm.symbols[s.name].ty.shape, cm.symbols[s.name].ty.shape
        if gshape is not None and mshape is not None and (
                len(gshape) != len(mshape) or any(
                    sizes.compare(a, b) == sizes.Relation.DIFFERENT
                    for a, b in zip(gshape, mshape, strict=True))):
            out.append(Diagnostic(
                f"'{s.name}' has shape {sizes.show(gshape)} in the guide but "
                f"{sizes.show(mshape)} in the model {at}", s.dist.span,
                notes=["a guide draws each latent with the model's shape"]))
            continue
        mrank, grank = cm.ty(ms.dist).event, gm.ty(s.dist).event
        if enumerates and not minfo.plates and minfo.constraint is None and mshape \
                and mrank is not None and grank is not None and mrank < len(mshape) \
                and grank != mrank:
            out.append(Diagnostic(
                f"'{s.name}' is drawn element by element in model {model} {at}, whose "
                "labels svi sums out, but the guide's "
                f"{gm.ty(s.dist).dist or 'distribution'} draws "
                f"{'its elements jointly' if grank > mrank else 'it as one value'}",
                s.dist.span,
                notes=[f"in a model with summed-out labels, a vector latent outside plates "
                       f"is drawn in plates over its elements ({s.name}.dim0, ...): give it "
                       "a guide of the model's kind, one value per element (Normal(loc, "
                       f"scale) with loc of shape {sizes.show(mshape)}), or an autoguide"]))
            continue
        msup = _support(cm, ms)
        gname = gm.ty(s.dist).dist or "distribution"
        if info.constraint is not None:  # a declared type maps a real draw into its set
            base = _support(gm, s, declared=False)
            what = f"the declared type of '{s.name}'"
            if not _mappable(info.constraint):
                out.append(Diagnostic(
                    f"{what} is {_support_words(supports.key(info.constraint))}, which "
                    "a guide cannot map a draw into", s.type.span,
                    notes=_support_notes(s.name, msup, mshape) if msup is not None else []))
                continue
            if base != _INTERVALS["real"]:
                out.append(Diagnostic(
                    f"{what} maps a draw on the real line into its set, but '{s.name}' is "
                    f"drawn from {gname}, whose support is "
                    f"{_support_words(base) if base is not None else 'not the real line'}",
                    s.dist.span,
                    notes=["draw it from Normal(loc, scale) (mapped into the set), or drop "
                           "the declared type and choose a distribution with the latent's "
                           "support"]))
                continue
        param = _param_behind(cm, ms)
        if param is not None:
            out.append(Diagnostic(
                f"'{s.name}' lies on a set that follows model {model}'s param "
                f"'{param.name}' {at[:-1]}, the param at {param.span}), which the guide "
                "cannot read: its draw could not be kept inside the model's support as the "
                f"fit moves '{param.name}'", s.dist.span,
                notes=["fit it with an autoguide (svi(guide=normal)), which maps its draw "
                       "into the current bounds at every step",
                       f"or give '{param.name}' a prior ({param.name} ~ ...) and draw it in "
                       "the guide, which can then bound its draw by it (the model's bounds "
                       "in a declared type: real<lower=..., upper=...> ~ Normal(loc, "
                       "scale))"]))
            continue
        gsup = _support(gm, s)
        if msup is not None and gsup is not None and not supports.within(gsup, msup):
            out.append(support_refusal(s, gname, msup, gsup, at, mshape,
                                       info.constraint is not None))


def support_refusal(s: ast.Sample, gname: str, msup, gsup, at: str, shape, mapped: bool,
                    when: str = "", element: str = "") -> Diagnostic:
    """The error for guide draw ``s`` (from ``gname``, ``mapped`` by a declared type) on
    support ``gsup``, not within its model latent's ``msup`` (support keys,
    ppl.check.supports), drawn ``at`` the model's line, in Stan's words with the
    distributions that fit; ``when`` says which values decided the model's and
    ``element`` which element (the fit's check, ppl.infer.custom_guide)."""
    has = f"guide maps its {gname} draw into" if mapped else f"guide's {gname} has support"
    return Diagnostic(
        f"'{s.name}'{element} lies on {_support_words(msup)} in the model {at}{when}, but "
        f"the {has} {_support_words(gsup)}", s.dist.span,
        notes=_support_notes(s.name, msup, shape)
        + ["a guide must put its mass where the model's density is (its support may be "
           "narrower than the model's, not wider)"])


__all__ = ["SUFFIX", "check_guides", "guide_model", "support_refusal"]
