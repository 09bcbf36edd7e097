"""max/min with a second positional argument (Stan's fmax/fmin, torch's dim) is a located
check error naming the forms that say which is meant; a dim given by position to the
other reductions (sum(x, 0)) works as dim=0 does (it was a tensor, a TypeError)."""

import pytest
import torch

import ppl

X = [0.5, 2.0, -1.0]


def _src(expr):
    return (f"model M(x: real[N]) {{\n  mu ~ Normal(0, 1)\n  v = {expr}\n"
            "  x ~ Normal(mu + 0 * v, 1)\n}\n")


def _value(expr):
    return ppl.compile(_src(expr)).bind({"x": X})["v"]


@pytest.mark.parametrize("expr, message, notes", [
    ("max(x, 0.0)", "max takes one value: max(x, 0.0) would read 0.0 as a dim (torch) or "
     "as a second value (Stan's fmax)",
     ["the elementwise maximum of x and a number (Stan's fmax): clamp(x, min=0.0)"]),
    ("min(x, 1)", "min takes one value: min(x, 1) would read 1 as a dim (torch) or as a "
     "second value (Stan's fmin)",
     ["the elementwise minimum of x and a number (Stan's fmin): clamp(x, max=1.0)",
      "along a dimension: min(x, dim=1) (dim is given by name)"]),
    ("max(x, mu)", "max takes one value: max(x, mu) would read mu as a dim (torch) or as a "
     "second value (Stan's fmax)",
     ["the elementwise maximum of two values (Stan's fmax): where(x > mu, x, mu)"]),
])
def test_two_values_refused(expr, message, notes):
    with pytest.raises(ppl.BdlError) as err:
        ppl.compile(_src(expr))
    (d,) = err.value.diagnostics
    assert d.message == message
    assert d.notes == notes
    assert (d.span.line, d.span.col) == (3, 14)


def test_the_workarounds():
    assert _value("clamp(x, min=0.0)").tolist() == [0.5, 2.0, 0.0]
    assert _value("where(x < 1.0, x, 1.0)").tolist() == [0.5, 1.0, -1.0]
    assert _value("max(x, dim=0)").item() == 2.0


@pytest.mark.parametrize("expr, want", [
    ("sum(x, 0)", 1.5), ("mean(x, 0)", 0.5), ("prod(x, 0)", -1.0),
    ("logsumexp(x, 0)", torch.logsumexp(torch.tensor(X), 0).item()),
    ("cumsum(x, 0)", [0.5, 2.5, 1.5]),
    ("softmax(x, 0)", torch.softmax(torch.tensor(X), 0).tolist()),
])
def test_dim_by_position(expr, want):
    assert _value(expr).tolist() == pytest.approx(want, rel=1e-6)
