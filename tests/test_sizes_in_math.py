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


def test_a_whole_number_of_sizes_stays_an_index():
    # x[abs(K - T)]: abs of sizes was made a float tensor ("tensors used as indices must be
    # long"); whole numbers from sizes stay int64, and sqrt of one is still a real
    import torch

    m = ppl.compile("model M(y: real[T], x: real[K]) {\n  mu ~ Normal(0, 1)\n"
                    "  y ~ Normal(mu + x[abs(K - T)], 1 / sqrt(T))\n}\n", "m.bdl")
    got = float(m.log_density({"mu": 0.0}, {"y": [1.0, 2.0], "x": [0.5, 0.25, 3.0, 4.0]}))
    want = float(torch.distributions.Normal(3.0, 1 / math.sqrt(2)).log_prob(
        torch.tensor([1.0, 2.0])).sum() + torch.distributions.Normal(0.0, 1).log_prob(
        torch.tensor(0.0)))
    assert abs(got - want) < 1e-5
