"""A slice's start or stop written with sizes counts from 0, as Stan's do: only a literal
negative number counts from the end (docs/language.md, "Expressions"). One negative for
every size is a check error; one negative for some sizes is refused when data bind them,
never read from the end by Python's count (``x[K - 2:]`` at K = 1 started at the last
element while the checker typed it ``[N - K + 2]``)."""

from __future__ import annotations

import math

import pytest
import shape_oracle as so

import ppl

NOTE = "an index or a slice's start and stop written with sizes counts from 0"


@pytest.mark.parametrize("body,sizes,message", [
    ("  w1 = x[K - 2:]", {"N": 7, "K": 1, "M": 5},
     "the start of the slice x[K - 2:]: K - 2 = -1 is negative, which torch counts from the "
     "end (sizes from the data)"),
    ("  w1 = x[:-K]", {"N": 7, "K": 2, "M": 5},
     "the stop of the slice x[:-K]: -K = -2 is negative"),
    ("  w1 = C[1:, K - 2:K]", {"N": 7, "K": 1, "M": 5},
     "the start of the slice C[1:, K - 2:K]: K - 2 = -1 is negative"),
])
def test_a_symbolic_end_negative_at_the_data_sizes_is_refused_at_binding(body, sizes, message,
                                                                        float64):
    out = so.outcome(body, sizes)
    assert message in out.get("located", ""), out
    assert NOTE in out["located"] and "the plate reads it" not in out["located"]


@pytest.mark.parametrize("body,want", [
    ("  w1 = x[K - 2:]", (6,)), ("  w1 = x[:-1]", (6,)), ("  w1 = x[-2:]", (2,)),
    ("  w1 = x[:M - K]", (2,)), ("  w1 = C[K - 3:, :K - 3]", (5, 0))])
def test_a_symbolic_end_non_negative_at_the_data_sizes_runs_as_the_checker_says(body, want,
                                                                               float64):
    out = so.outcome(body, {"N": 7, "K": 3, "M": 5})
    assert out.get("checker") == {"w1": want} and out["run"] == {"w1": want}, out


@pytest.mark.parametrize("body,message", [
    ("  w1 = x[-K - 1:]", "the slice x[-K - 1:] starts at -K - 1, which is negative for "
     "every size: only a literal negative number counts from the end"),
    ("  w1 = C[:, :-N - 1]", "the slice C[:, :-N - 1] ends at -N - 1"),
])
def test_a_symbolic_end_negative_for_every_size_is_a_check_error(body, message, float64):
    out = so.outcome(body, {"N": 7, "K": 3, "M": 5})
    assert message in out.get("refused", ""), out


def test_a_start_read_from_the_end_is_not_broadcast_into_a_density(float64):
    import torch
    model = ppl.compile("model T(x: real[N], y: real[N - K + 2]) {\n  mu ~ Normal(0, 1)\n"
                        "  y ~ Normal(x[K - 2:] + mu, 1)\n}\n")
    mu = {"mu": torch.tensor(0.0)}
    # N = 3, K = 1: x[-1:] is one number, which Python's count broadcast over y's 4
    with pytest.raises(ppl.BdlError, match=r"the start of the slice x\[K - 2:\]: K - 2 = -1 "
                       r"is negative"):
        model.log_density(mu, {"x": [5.0, 0.0, 1.0], "y": [0.0] * 4, "K": 1})
    # N = 3, K = 3: x[1:] = [0, 1] against y = [0, 0]: two standard normals, one at 1
    got = model.log_density(mu, {"x": [5.0, 0.0, 1.0], "y": [0.0, 0.0], "K": 3})
    want = -math.log(2 * math.pi) - 0.5 + (-0.5 * math.log(2 * math.pi))
    assert float(got) == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("body,sizes,where,message", [
    ("  w1 = x[-K - 1]", {"N": 7, "K": 1, "M": 5}, "refused",
     "the index x[-K - 1] is -K - 1, which is negative for every size"),
    ("  w1 = v[K]", {"N": 7, "K": 2, "M": 5}, "refused",
     "the index v[K] reads K, past the end of dimension 0 of 'v' of size K"),
    ("  w1 = x[K - M]", {"N": 7, "K": 3, "M": 5}, "located",
     "the index x[K - M]: K - M = -2 is negative, which torch counts from the end"),
    ("  w1 = x[K - 3]", {"N": 7, "K": 1, "M": 5}, "located",
     "the index x[K - 3]: K - 3 = -2 is negative"),
    ("  w1 = x[2 * K]", {"N": 7, "K": 4, "M": 5}, "located",
     "size mismatch between dimension 0 of 'x' and the index x[2 * K]: N = 7 but must be "
     "at least 2 * K + 1 = 9"),
])
def test_an_index_of_sizes_outside_its_dimension_is_refused(body, sizes, where, message,
                                                            float64):
    out = so.outcome(body, sizes)
    assert message in out.get(where, ""), out


@pytest.mark.parametrize("body,sizes", [
    ("  w1 = x[K - 3]", {"N": 7, "K": 4, "M": 5}),
    ("  w1 = where(K > 2, x[K - 3], 0.0)", {"N": 7, "K": 1, "M": 5}),  # masked: runs
    ("  w1 = x[N - K - 1]", {"N": 7, "K": 3, "M": 5}),
])
def test_an_index_of_sizes_inside_its_dimension_runs(body, sizes, float64):
    out = so.outcome(body, sizes)
    assert out.get("checker") == {"w1": ()} and out["run"] == {"w1": ()}, out
