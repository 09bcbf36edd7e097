"""The checker's size algebra agrees with sympy on random polynomial dimensions."""

from __future__ import annotations

import random
import subprocess
import sys

import sympy

from ppl.check import sizes


def _random_expr(rng: random.Random, depth: int):
    """The same random expression built as a Dim and as a sympy expression."""
    if depth == 0 or rng.random() < 0.3:
        if rng.random() < 0.5:
            n = rng.randint(0, 5)
            return sizes.const(n), sympy.Integer(n)
        name = rng.choice("NKT")
        return sizes.size_symbol(name), sympy.Symbol(name)
    (a, sa), (b, sb) = _random_expr(rng, depth - 1), _random_expr(rng, depth - 1)
    op = rng.choice("+-*")
    return {"+": (a + b, sa + sb), "-": (a - b, sa - sb), "*": (a * b, sa * sb)}[op]


def test_equality_and_difference_match_sympy():
    rng = random.Random(0)
    for _ in range(400):
        (a, sa), (b, sb) = _random_expr(rng, 3), _random_expr(rng, 3)
        diff = sympy.expand(sa - sb)
        expected = (sizes.Relation.EQUAL if diff == 0 else
                    sizes.Relation.DIFFERENT if diff.is_number else sizes.Relation.UNKNOWN)
        assert sizes.compare(a, b) == expected, (a, b)
        # the printed form is valid Python that evaluates like sympy's expression
        env = {"N": 3, "K": 5, "T": 7}
        assert eval(str(a), {}, env) == sa.subs(env)  # noqa: S307


def test_printing_and_properties():
    K, N = sizes.size_symbol("K"), sizes.size_symbol("N")
    assert str(K + 1) == "K + 1"
    assert str(2 * N - K) == "-K + 2 * N"
    assert str(N * K / 2) == "K * N / 2"
    assert str(N * N + sizes.const(5) / 2) == "N * N + 5 / 2"
    assert str(N / K) == "(N / K)"
    assert (K + 1 - K).is_Integer and int(K + 1 - K) == 1
    assert K.is_Symbol and not (K + 1).is_Symbol and not K.is_number
    assert sizes.compare(N * (K + 1), N * K + N) == sizes.Relation.EQUAL
    assert sizes.compare(N, N + 1) == sizes.Relation.DIFFERENT


def test_bdl_check_imports_neither_sympy_nor_torch():
    code = ("import sys; from ppl.pipeline import front; "
            "front(open('examples/gp_regression.bdl').read()); "
            "print(sorted(m for m in ('sympy', 'torch', 'pyro') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=str(__import__("pathlib").Path(__file__).parents[1]))
    assert out.stdout.strip() == "[]"
