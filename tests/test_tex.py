"""``bdl tex`` (ppl/tex.py): every bundled example renders, in the written order, with
keyword arguments kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from ppl.syntax.parser import parse
from ppl.tex import model_tex

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.bdl"))


def _tex(source: str) -> str:
    return model_tex(parse(source, "m.bdl").models[-1])


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_renders(path):
    tex = model_tex(parse(path.read_text(), str(path)).models[-1])
    assert tex.count(r"\begin{aligned}") == 1 and "True" not in tex and "False" not in tex


def test_matmul_keeps_order_beside_scalars():
    tex = _tex("model M(x: real[N, K], y: real[N]) {\n  b: real[K] ~ Normal(0, 1)\n"
               "  y ~ Normal(1 + (x + x) @ b, 1)\n}\n")
    assert r"\left(2 x\right) b + 1" in tex or r"1 + \left(2 x\right) b" in tex


def test_keyword_arguments_are_kept_and_names_escaped():
    tex = _tex("model M(x: real[N, 1], y: real[N]) {\n  l ~ LogNormal(0, 1)\n"
               "  y ~ MultivariateNormal(zeros(N),\n"
               "    covariance_matrix=gram(rbf(lengthscale=l), x))\n}\n")
    assert r"\text{lengthscale} = l" in tex
    assert r"\text{covariance\_matrix} = " in tex
    tex = _tex("model M(y: real[N]) {\n  t ~ Beta(2, 2)\n"
               "  y ~ MixtureSameFamily(Categorical(probs=[t, 1 - t]), Normal(0, 1))\n}\n")
    assert r"\text{probs} = \left[\begin{matrix}t & 1 - t\end{matrix}\right]" in tex
