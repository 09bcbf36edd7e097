"""A size inside a math function (sqrt(T), log(T * 1.0), lgamma(T + 1)) is a Python
number in generated code; torch functions get it as a tensor (it was a raw TypeError)."""

import math

import pytest
from scipy import stats

import ppl

Y = [0.1, 0.2, 0.7]
T = len(Y)


@pytest.mark.parametrize("scale, value", [
    ("1 / sqrt(T)", 1 / math.sqrt(T)),
    ("log(T)", math.log(T)),
    ("log(T * 1.0)", math.log(T)),
    ("exp(-T)", math.exp(-T)),
    ("lgamma(T + 1)", math.lgamma(T + 1)),
    ("sqrt(K)", math.sqrt(T - 1)),      # K = T - 1, a transformed size
    ("c", math.sqrt(T)),                # c = sqrt(T) in transformed data
    ("sqrt(2 * 3)", math.sqrt(6)),      # numbers only
    ("exp(-n / 2)", math.exp(-5 / 2)),  # an int scalar argument is a size too
    ("exp(-1)", math.exp(-1)),          # a negated literal (torch.exp(-1) before)
])
def test_size_in_math_function(scale, value):
    m = ppl.compile(f"model M(n: int, y: real[T]) {{\n  K = T - 1\n  c = sqrt(T)\n"
                    f"  mu ~ Normal(0, 1)\n  y ~ Normal(mu, {scale})\n}}\n")
    got = m.log_density({"mu": 0.3}, {"n": 5, "y": Y})
    want = stats.norm.logpdf(0.3) + stats.norm.logpdf(Y, 0.3, value).sum()
    assert got == pytest.approx(want, rel=1e-6)
