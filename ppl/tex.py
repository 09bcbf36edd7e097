"""``bdl tex``: a model as LaTeX mathematics, printed by sympy.

Each statement becomes one line of an ``aligned`` block: ``x \\sim \\mathrm{Normal}(\\mu,
\\sigma)`` for ``~``, ``v = ...`` for deterministic and transformed definitions, the
constraint of a restricted latent as a set membership, ``p(\\cdot) \\propto \\exp(...)`` for
``factor``, and plates as a product index ``n = 1..N``.
"""

from __future__ import annotations

import sympy

from .syntax import ast


def _symbol(name: str) -> sympy.Symbol:
    """sympy prints ``theta_raw`` as ``\\theta_{raw}``; Greek names become letters."""
    return sympy.Symbol(name)


def _escaped(name: str) -> str:
    """A name set upright as text: LaTeX reads ``_`` there as a subscript."""
    return name.replace("_", r"\_")


def to_sympy(e: ast.Expr):
    """AST expression -> sympy expression (calls become undefined functions)."""
    if isinstance(e, ast.Number):
        return sympy.Integer(e.value) if isinstance(e.value, int) else sympy.Float(e.value, 4)
    if isinstance(e, ast.Bool):
        return sympy.true if e.value else sympy.false
    if isinstance(e, ast.String):
        return sympy.Symbol(f"\\text{{{e.value}}}")
    if isinstance(e, ast.Name):
        return _symbol(e.id)
    if isinstance(e, ast.Neg):
        return -to_sympy(e.operand)
    if isinstance(e, ast.BinOp):
        a, b = to_sympy(e.left), to_sympy(e.right)
        ops = {
            "+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b,
            "^": lambda: a**b, "@": lambda: _matmul(a, b),
            "<": lambda: sympy.StrictLessThan(a, b), ">": lambda: sympy.StrictGreaterThan(a, b),
            "<=": lambda: sympy.LessThan(a, b), ">=": lambda: sympy.GreaterThan(a, b),
            "==": lambda: sympy.Eq(a, b), "!=": lambda: sympy.Ne(a, b),
            "%": lambda: sympy.Mod(a, b),
        }
        return ops[e.op]()
    if isinstance(e, ast.Call):
        name = e.func_name or "f"
        known = {"exp": sympy.exp, "log": sympy.log, "sqrt": sympy.sqrt, "abs": sympy.Abs,
                 "sin": sympy.sin, "cos": sympy.cos, "tanh": sympy.tanh}
        args = [to_sympy(a) for a in e.args]
        if name in known and len(args) == 1 and not e.kwargs:
            return known[name](args[0])
        # unevaluated: Eq(lengthscale, lengthscale) would print as True
        args += [sympy.Eq(sympy.Symbol(rf"\text{{{_escaped(k.name)}}}"), to_sympy(k.value),
                          evaluate=False) for k in e.kwargs]
        fname = (f"\\mathrm{{{_escaped(name)}}}" if name[:1].isupper()
                 else f"\\operatorname{{{_escaped(name)}}}")
        return sympy.Function(fname)(*args)
    if isinstance(e, ast.Index):
        base = to_sympy(e.value)
        idx = [sympy.Symbol(":") if isinstance(i, ast.Slice) else to_sympy(i) for i in e.indices]
        return sympy.Indexed(sympy.IndexedBase(str(base)), *idx)
    if isinstance(e, ast.ListLit):
        return sympy.Matrix([to_sympy(i) for i in e.items]).T
    if isinstance(e, ast.Attr):
        return sympy.Symbol(f"{to_sympy(e.value)}.{e.attr}")
    if isinstance(e, ast.FunctionLit):  # (x, t) => body prints as (x, t) \mapsto body
        return sympy.Lambda(tuple(_symbol(p) for p in e.params), to_sympy(e.body))
    raise TypeError(type(e).__name__)


def _matmul(a, b) -> sympy.Symbol:
    """``a @ b`` as juxtaposition ``a b`` in the written order (sympy would reorder a
    commutative product, and its matrix expressions refuse sums with scalars)."""
    def side(v):
        text = sympy.latex(v)
        return rf"\left({text}\right)" if isinstance(v, (sympy.Add, sympy.Mul)) else text
    return sympy.Symbol(f"{side(a)} {side(b)}")


def _tex(e) -> str:
    return sympy.latex(to_sympy(e) if isinstance(e, ast.Expr) else e)


def _lines(body, plates: list[str]) -> list[str]:
    out = []
    suffix = (r" \quad " + ", ".join(plates)) if plates else ""
    for s in body:
        if isinstance(s, ast.Sample):
            dom = ""
            if s.type is not None and s.type.base != "real":
                dom = rf" \in \mathrm{{{s.type.base}}}"
            out.append(rf"{sympy.latex(_symbol(s.name))} &\sim {_tex(s.dist)}{dom}{suffix}")
        elif isinstance(s, ast.Assign):
            out.append(rf"{sympy.latex(_symbol(s.name))} &= {_tex(s.value)}{suffix}")
        elif isinstance(s, ast.Param):
            out.append(rf"{sympy.latex(_symbol(s.name))} &\ \text{{(parameter, initial "
                       rf"{_tex(s.init)})}}")
        elif isinstance(s, ast.Factor):
            out.append(rf"p(\cdot) &\propto \exp\left({_tex(s.value)}\right){suffix}")
        elif isinstance(s, ast.Plate):
            index = s.index or "n"
            out += _lines(s.body, plates + [rf"{index} = 1, \dots, {_tex(s.size)}"])
    return out


def model_tex(m: ast.Model) -> str:
    lines = _lines(m.body, [])
    return ("% " + m.name + "\n\\begin{aligned}\n" + " \\\\\n".join(lines)
            + "\n\\end{aligned}\n")
