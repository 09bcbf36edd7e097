"""Symbolic tensor shapes with sympy.

A shape is a tuple of sympy expressions (``(N, D)``, ``(K + 1,)``) or ``None`` when it is
not known at compile time. Broadcasting and matrix products are checked dimension by
dimension: two dimensions that are provably different (``3`` vs ``4``, ``N`` vs ``N + 1``)
are a compile-time error; two that are different symbols (``N`` vs ``K``) become a
*deferred* equality that is checked when data binds the sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy

Shape = tuple  # tuple[sympy.Expr, ...]

ONE = sympy.Integer(1)


def size_symbol(name: str) -> sympy.Symbol:
    """Size names are positive integers, so sympy can simplify ``N - N + 1`` etc."""
    return sympy.Symbol(name, integer=True, positive=True)


def const(n: int) -> sympy.Integer:
    return sympy.Integer(n)


def show(shape: Shape | None) -> str:
    if shape is None:
        return "[?]"
    return "[" + ", ".join(str(d) for d in shape) + "]"


class Relation:
    EQUAL, DIFFERENT, UNKNOWN = "equal", "different", "unknown"


def compare(a: sympy.Expr, b: sympy.Expr) -> str:
    """Are two dimensions equal, provably different, or unknown until data binds them?"""
    # dims are polynomials in the sizes: expanding decides equality (simplify is ~100x
    # slower); a quotient that does not cancel is simplified as a last resort
    diff = sympy.expand(a - b)
    if diff != 0 and not diff.is_number and diff.has(sympy.Pow):
        diff = sympy.simplify(diff)
    if diff == 0:
        return Relation.EQUAL
    if diff.is_number:
        return Relation.DIFFERENT
    return Relation.UNKNOWN


@dataclass
class Mismatch:
    """A pair of dimensions that must agree; ``provable`` when they never can."""

    left: sympy.Expr
    right: sympy.Expr
    provable: bool


def broadcast(a: Shape | None, b: Shape | None) -> tuple[Shape | None, list[Mismatch]]:
    """PyTorch broadcasting of two symbolic shapes (right-aligned)."""
    if a is None or b is None:
        return None, []
    out, issues = [], []
    n = max(len(a), len(b))
    pa = (ONE,) * (n - len(a)) + tuple(a)
    pb = (ONE,) * (n - len(b)) + tuple(b)
    for x, y in zip(pa, pb, strict=False):
        if x == ONE:
            out.append(y)
        elif y == ONE:
            out.append(x)
        else:
            rel = compare(x, y)
            if rel != Relation.EQUAL:
                issues.append(Mismatch(x, y, rel == Relation.DIFFERENT))
            out.append(x)
    return tuple(out), issues


def matmul(a: Shape | None, b: Shape | None) -> tuple[Shape | None, list[Mismatch]]:
    """Shape of ``a @ b`` as in ``torch.matmul``; the contracted dimensions must agree."""
    if a is None or b is None:
        return None, []
    if len(a) == 0 or len(b) == 0:
        return None, [Mismatch(const(0), const(1), True)]
    inner_a = a[-1]
    inner_b = b[0] if len(b) == 1 else b[-2]
    issues = []
    rel = compare(inner_a, inner_b)
    if rel != Relation.EQUAL:
        issues.append(Mismatch(inner_a, inner_b, rel == Relation.DIFFERENT))
    if len(a) == 1 and len(b) == 1:
        return (), issues
    if len(a) == 1:
        return tuple(b[:-2]) + (b[-1],), issues
    if len(b) == 1:
        return tuple(a[:-1]), issues
    batch, more = broadcast(tuple(a[:-2]), tuple(b[:-2]))
    return tuple(batch) + (a[-2], b[-1]), issues + more


def parse_dim(text: str, names: dict[str, sympy.Symbol] | None = None) -> sympy.Expr:
    """Inverse of ``str(dim)``, used by the runtime when it binds sizes."""
    return sympy.sympify(text, locals=names or {})
