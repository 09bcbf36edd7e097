"""'unknown size' on a latent's declared shape gives the same 'J: int' note as on a
plate's size."""

import pytest

import ppl


@pytest.mark.parametrize("body, col, what", [
    ("  a: real[J] ~ Normal(0, 1)\n", 11, "a size"),
    ("  plate J {\n    a ~ Normal(0, 1)\n  }\n", 9, "a plate's size"),
])
def test_unknown_size_note(body, col, what):
    with pytest.raises(ppl.BdlError) as err:
        ppl.compile(f"model M(y: real[N]) {{\n{body}  y ~ Normal(0, 1)\n}}\n")
    (d,) = err.value.diagnostics
    assert (d.message, d.span.line, d.span.col) == ("unknown size 'J'", 2, col)
    assert d.notes == ["sizes are bound by the shapes of the model's data arguments",
                       f"{what} that no data shape names is an argument of its own: J: int"]


def test_the_note_s_fix():
    m = ppl.compile("model M(J: int, y: real[N]) {\n  a: real[J] ~ Normal(0, 1)\n"
                    "  y ~ Normal(sum(a), 1)\n}\n")
    assert m.log_density({"a": [0.0, 0.0]}, {"J": 2, "y": [0.0]}) == pytest.approx(
        -1.5 * 1.8378770664093453, rel=1e-6)  # 3 standard normal densities at 0
