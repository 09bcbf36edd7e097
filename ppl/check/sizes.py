"""Symbolic tensor shapes for the checker.

A shape is a tuple of :class:`Dim` (``(N, D)``, ``(K + 1,)``) or ``None`` when it is not
known at compile time. Broadcasting and matrix products are checked dimension by
dimension: two dimensions that are provably different (``3`` vs ``4``, ``N`` vs ``N + 1``)
are a compile-time error; two that are different symbols (``N`` vs ``K``) become a
*deferred* equality that is checked when data binds the sizes (there sympy solves
composite dimensions such as ``K + 1``, see ``ppl.runtime.data``).

Dimensions are polynomials in the size names with rational coefficients, so equality is
decided exactly by comparing canonical forms. This small algebra stands in for sympy in
the checker because ``import sympy`` alone costs ~0.3 s, three times the budget of
``bdl check`` (see benchmarks/RESULTS.md); ``bdl tex`` and binding still use sympy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

Shape = tuple  # tuple[Dim, ...]


class Dim:
    """A size expression: {monomial (sorted tuple of names): coefficient}."""

    __slots__ = ("terms",)

    def __init__(self, terms: dict):
        self.terms = {k: Fraction(v) for k, v in terms.items() if v != 0}

    # ---- construction / coercion ----
    @staticmethod
    def _of(x) -> Dim:
        if isinstance(x, Dim):
            return x
        if isinstance(x, (int, Fraction)) and not isinstance(x, bool):
            return Dim({(): x})
        return NotImplemented

    # ---- properties used by the checker (named as in sympy) ----
    @property
    def is_number(self) -> bool:
        return all(k == () for k in self.terms)

    @property
    def value(self) -> Fraction:
        return self.terms.get((), Fraction(0))

    @property
    def is_Integer(self) -> bool:  # noqa: N802
        return self.is_number and self.value.denominator == 1

    @property
    def is_Symbol(self) -> bool:  # noqa: N802
        return len(self.terms) == 1 and all(len(k) == 1 and v == 1
                                            for k, v in self.terms.items())

    @property
    def free_symbols(self) -> set[str]:
        return {n for k in self.terms for n in k}

    # ---- arithmetic ----
    def __add__(self, other):
        o = Dim._of(other)
        if o is NotImplemented:
            return o
        out = dict(self.terms)
        for k, v in o.terms.items():
            out[k] = out.get(k, 0) + v
        return Dim(out)

    __radd__ = __add__

    def __neg__(self):
        return Dim({k: -v for k, v in self.terms.items()})

    def __sub__(self, other):
        o = Dim._of(other)
        return o if o is NotImplemented else self + (-o)

    def __rsub__(self, other):
        o = Dim._of(other)
        return o if o is NotImplemented else o + (-self)

    def __mul__(self, other):
        o = Dim._of(other)
        if o is NotImplemented:
            return o
        out: dict = {}
        for k1, v1 in self.terms.items():
            for k2, v2 in o.terms.items():
                k = tuple(sorted(k1 + k2))
                out[k] = out.get(k, 0) + v1 * v2
        return Dim(out)

    __rmul__ = __mul__

    def __truediv__(self, other):
        o = Dim._of(other)
        if o is NotImplemented:
            return o
        if o.is_number:
            if o.value == 0:
                raise ZeroDivisionError("division by zero in a dimension")
            return Dim({k: v / o.value for k, v in self.terms.items()})
        # a quotient of sizes is kept as one opaque size name, e.g. "(N / K)"
        return Dim({(f"({self} / {o})",): 1})

    # ---- comparison ----
    def __eq__(self, other):
        o = Dim._of(other)
        return False if o is NotImplemented else self.terms == o.terms

    def __hash__(self):
        return hash(frozenset(self.terms.items()))

    def _number(self) -> Fraction:
        if not self.is_number:
            raise TypeError(f"cannot order the symbolic size {self}")
        return self.value

    def __lt__(self, other):
        return self._number() < Dim._of(other)._number()

    def __le__(self, other):
        return self._number() <= Dim._of(other)._number()

    def __gt__(self, other):
        return self._number() > Dim._of(other)._number()

    def __ge__(self, other):
        return self._number() >= Dim._of(other)._number()

    def __int__(self):
        return int(self._number())

    def __index__(self):
        if not self.is_Integer:
            raise TypeError(f"{self} is not an integer")
        return int(self.value)

    # ---- printing: "K + 1", "2 * N", "N * T", "N / 2" (also valid Python over the sizes,
    # spaced as the language reference writes sizes) ----
    def __str__(self) -> str:
        if not self.terms:
            return "0"
        parts = []
        for k in sorted(self.terms, key=self._order):
            v = self.terms[k]
            mono = " * ".join(k)
            if not k:
                text = str(abs(v.numerator)) if v.denominator == 1 else \
                    f"{abs(v.numerator)} / {v.denominator}"
            elif abs(v) == 1:
                text = mono
            elif v.denominator == 1:
                text = f"{abs(v.numerator)} * {mono}"
            elif abs(v.numerator) == 1:
                text = f"{mono} / {v.denominator}"
            else:
                text = f"{abs(v.numerator)} * {mono} / {v.denominator}"
            sign = "-" if v < 0 else "+"
            parts.append((sign, text))
        first_sign, first = parts[0]
        out = ("-" if first_sign == "-" else "") + first
        for sign, text in parts[1:]:
            out += f" {sign} {text}"
        return out

    __repr__ = __str__

    @staticmethod
    def _order(m: tuple) -> tuple:
        """Products first, then sizes by name, the constant last."""
        return (-len(m), m)

    def signed(self) -> str:
        """As ``str``, with the added terms before the subtracted ones, as a person writes
        a size expression: ``M - L`` (``str``: ``-L + M``), ``T + L - 1``."""
        pos = Dim({k: v for k, v in self.terms.items() if v > 0})
        neg = Dim({k: -v for k, v in self.terms.items() if v < 0})
        if not pos.terms:
            return str(self)
        return str(pos) + "".join(f" - {Dim({k: v})}" for k, v in sorted(
            neg.terms.items(), key=lambda kv: self._order(kv[0])))


ONE = Dim({(): 1})


def shown(expr) -> str:
    """A sympy size expression (binding's, ``ppl.runtime.data``) printed as the checker
    prints a :class:`Dim`, a person's way: ``N * N + 1`` (sympy: ``N**2 + 1``), ``N / 2``,
    ``5 / 2``; one that is no polynomial in the sizes with its operators spaced."""
    poly = expr.as_poly() if expr.free_symbols else None
    if expr.is_Rational:
        return str(Dim({(): Fraction(int(expr.p), int(expr.q))}))
    if poly is None or not all(g.is_Symbol for g in poly.gens):
        return re.sub(r"\s*(\*\*|\*|/)\s*",
                      lambda m: m.group(1) if m.group(1) == "**" else f" {m.group(1)} ",
                      str(expr))
    terms: dict = {}
    for monom, coeff in poly.terms():
        key = tuple(sorted(str(g) for g, n in zip(poly.gens, monom, strict=True)
                           for _ in range(n)))
        terms[key] = Fraction(int(coeff.p), int(coeff.q))
    d = Dim(terms)
    return str(d) if not str(d).startswith("-") else d.signed()


def size_symbol(name: str) -> Dim:
    """A size name (a whole number >= 0 bound by data)."""
    return Dim({(name,): 1})


def const(n: int) -> Dim:
    return Dim({(): n})


def show(shape: Shape | None) -> str:
    if shape is None:
        return "[?]"
    return "[" + ", ".join(str(d) for d in shape) + "]"


class Relation:
    EQUAL, DIFFERENT, UNKNOWN = "equal", "different", "unknown"


def compare(a: Dim, b: Dim) -> str:
    """Are two dimensions equal, provably different, or unknown until data binds them?"""
    diff = a - b
    if diff == 0:
        return Relation.EQUAL
    if diff.is_number:
        return Relation.DIFFERENT
    return Relation.UNKNOWN


def _at(d: Dim, at: dict) -> Fraction:
    """``d`` with each size ``n`` set to ``at[n]``."""
    total = Fraction(0)
    for k, v in d.terms.items():
        for n in k:
            v *= at[n]
        total += v
    return total


_MOST_POINTS = 10_000  # whole numbers tried for one size before a sign is left unproven


def _one_size_values(d: Dim) -> list[Fraction] | None:
    """The values of ``d``, a polynomial in one size, at every admissible size below the
    point past which its leading term decides its sign (Cauchy's bound on the roots:
    ``1 + max |a_i / a_n|``), then its value there and beyond (one more point); None when
    those points are too many to list."""
    (name,) = d.free_symbols
    coef = {len(k): v for k, v in d.terms.items()}
    lead = coef[max(coef)]
    bound = 1 + max(abs(v / lead) for v in coef.values())
    if bound > _MOST_POINTS:
        return None
    return [_at(d, {name: x}) for x in range(int(bound) + 2)]


def always_negative(d: Dim) -> bool:
    """Whether ``d`` < 0 is proven for every admissible size (sizes are whole numbers
    >= 0): with no size raising it (no positive coefficient but the constant's) its
    largest value is at sizes 0 (``-L - 1``, ``-2*L*M - 1``; not ``-L``, 0 at L = 0); a
    polynomial in one size is decided exactly (below Cauchy's bound every whole number
    is tried, beyond it the leading term sets the sign). Other products of sizes with
    both signs are not decided here (False: checked when data bind the sizes)."""
    if all(v <= 0 for k, v in d.terms.items() if k):
        return d.value < 0
    if len(d.free_symbols) == 1:
        values = _one_size_values(d)
        return values is not None and all(v < 0 for v in values)
    return False


def never_negative(d: Dim) -> bool:
    """Whether ``d`` >= 0 is proven for every admissible size (whole numbers >= 0): with
    no size lowering it its least value is at sizes 0 (``L*M + L``, ``L - 0``); a
    polynomial in one size is decided exactly (``L^2 - L`` is never negative, ``10 - L``
    is at L = 11). Otherwise False: ``L*M - L`` is -1 at M = 0, ``L - M`` at L = 0 and
    M = 1; an expression of both signs in several sizes is left to binding, never judged
    from a few sampled sizes."""
    if all(v >= 0 for k, v in d.terms.items() if k):
        return d.value >= 0
    if len(d.free_symbols) == 1:
        values = _one_size_values(d)
        return values is not None and all(v >= 0 for v in values)
    return False


@dataclass
class Mismatch:
    """A pair of dimensions that must agree; ``provable`` when they never can."""

    left: Dim
    right: Dim
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


def widened(shape, width: int, units: int) -> tuple:
    """``shape`` with ``units`` dims of size 1 after its first ``width`` (plate) dims: the
    checker's side of ``rt.per_element``."""
    return tuple(shape[:width]) + (const(1),) * units + tuple(shape[width:])
