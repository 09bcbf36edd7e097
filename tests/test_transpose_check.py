"""transpose of a vector (or a number) is a located check error; it passed check and
failed at run time with torch's 'Dimension out of range'."""

import pytest
import torch

import ppl

SRC = ("model M(x: real[N], A: real[N, 2]) {{\n  mu ~ Normal(0, 1)\n  v = {}\n"
       "  x ~ Normal(mu, 1)\n}}\n")


@pytest.mark.parametrize("expr, message, notes", [
    ("transpose(x)", "transpose needs a matrix (two dimensions or more), not a vector [N]",
     ["a vector is neither a row nor a column here: v @ A and A @ v read it as either, "
      "and a @ b of two vectors is their dot product"]),
    ("transpose(mu)", "transpose needs a matrix (two dimensions or more), not a number", []),
])
def test_transpose_of_a_vector(expr, message, notes):
    with pytest.raises(ppl.BdlError) as err:
        ppl.compile(SRC.format(expr))
    (d,) = err.value.diagnostics
    assert (d.message, d.notes, d.span.line, d.span.col) == (message, notes, 3, 17)


def test_transpose_of_a_matrix():
    m = ppl.compile(SRC.format("transpose(A)"))
    a = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    got = m.bind({"x": [0.0, 1.0, 2.0], "A": a})["v"]
    assert torch.equal(got, torch.tensor(a).T)
