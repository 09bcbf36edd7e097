"""Whether an inference method can fit a model, from what the model uses.

A construct may work with some methods only (``Builtin.methods``: a fractional SDE is
fitted by its ELBO, so by ``svi``/``map``), and a method may need a construct
(``Method.needs``: ``meta`` meta-trains a ``niw_meta`` prior). Both are declared where the
construct and the method register; this module only compares them, for the checker (at
the infer line) and for a method chosen at run time (``bdl run --infer``, ``m.fit``).
"""

from __future__ import annotations

from ..syntax import ast
from ..syntax.diagnostics import Diagnostic, Span


def builtins_used(model: ast.Model) -> dict[str, Span]:
    """Names of the builtins a model calls, each with its first call's span."""
    out: dict[str, Span] = {}
    for node in ast.walk(model.body):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            out.setdefault(node.func.id, node.span)
    return out


def method_mismatch(method: str, model: ast.Model, span: Span) -> list[Diagnostic]:
    """Diagnostics for a method that cannot fit this model (none when it can)."""
    from .. import builtins
    from ..infer import methods

    spec = methods.lookup(method)
    if spec is None:
        return []
    used = builtins_used(model)
    out = []
    for name, where in used.items():
        b = builtins.lookup(name)
        if b is not None and b.methods and method not in b.methods:
            ok = ", ".join(b.methods)
            out.append(Diagnostic(
                f"{name} cannot be fitted by '{method}'", where,
                notes=[f"{name} works with: {ok} (infer {b.methods[0]}(...))"]))
    if spec.needs and not any(n in used for n in spec.needs):
        out.append(Diagnostic(
            f"infer {method} needs a model that uses "
            f"{'one of ' if len(spec.needs) > 1 else ''}{', '.join(spec.needs)}", span,
            notes=[f"{method}: {spec.doc}"] if spec.doc else []))
    return out
