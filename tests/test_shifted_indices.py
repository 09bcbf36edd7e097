"""A plate index shifted by an integer expression of sizes and literals, ``y[t + e]`` in
``plate t in T`` (ppl/check/checker.py, ``_plate_index_shift``; docs/language.md,
"Expressions"): where ``e`` can be negative for some sizes, t = 0 reads ``y[e]``, which
torch counts from the end (a located error); otherwise ``y``'s dimension must be at least
``T + e`` (an error when it is less for every size, else checked when data bind the
sizes). The size algebra's sign tests (ppl/check/sizes.py) against hand answers."""

from __future__ import annotations

import pytest
import torch

import ppl
from ppl.check import sizes

ARGS = "y: real[T], z: real[T + L], L: int, M: int"


def _src(read: str) -> str:
    return (f"model M({ARGS}) {{\n  mu ~ Normal(0, 1)\n  plate t in T {{\n"
            f"    y ~ Normal(mu * {read}, 1)\n  }}\n}}\n")


def _first_error(read: str) -> str:
    with pytest.raises(ppl.BdlError) as e:
        ppl.compile(_src(read), "m.bdl")
    return str(e.value)


@pytest.mark.parametrize("read, first, note", [
    ("y[t - L - 1]", "y[t - L - 1] at t = 0 reads y[-(L + 1)], which torch counts from the end",
     "`ahead = y[L + 1:]` then `plate t in T - (L + 1) { ... y[t] ... }`"),
    ("y[t - 2 * L]", "y[t - 2 * L] at t = 0 reads y[-2*L], which torch counts from the end",
     "`ahead = y[2*L:]` then `plate t in T - 2*L { ... y[t] ... }`"),
    ("y[t + 1 - L]", "y[t + 1 - L] at t = 0 reads y[-(L - 1)], which torch counts from the "
     "end where L - 1 > 0", "`ahead = y[L - 1:]` then `plate t in T - (L - 1) { ... y[t] ... }`"),
    ("y[t - (L - 1)]", "y[t - (L - 1)] at t = 0 reads y[-(L - 1)], which torch counts from "
     "the end where L - 1 > 0", "then `plate t in T - (L - 1) {"),
    ("y[t + L - M]", "y[t + L - M] at t = 0 reads y[-(M - L)], which torch counts from the end"
     " where M - L > 0", "`ahead = y[M - L:]`"),
    ("y[-L + t]", "y[-L + t] at t = 0 reads y[-L], which torch counts from the end",
     "`ahead = y[L:]` then `plate t in T - L { ... y[t] ... }`"),
    # the forms kept from before: t - c (with Stan's loop and y[T - c]) and t - L
    ("y[t - 2]", "y[t - 2] at t = 0 reads y[-2], which torch counts from the end (y[T - 2])",
     "for Stan's `for (t in 3:T) ... y[t - 2]`, give the shifted values their own name and "
     "plate: `ahead = y[2:]` then `plate t in T - 2 { ahead ~ ... y[t] ... }`"),
    ("y[t - L]", "y[t - L] at t = 0 reads y[-L], which torch counts from the end",
     "`ahead = y[L:]` then `plate t in T - L { ... y[t] ... }`"),
])
def test_a_shift_that_can_be_negative_is_a_located_error(read, first, note):
    text = _first_error(read)
    assert text.split("\n")[0] == f"m.bdl:4:23: error: {first}"
    assert note in text


@pytest.mark.parametrize("read, first, note", [
    ("y[t + L]", "y[t + L] reads y[L + T - 1] at t = T - 1, past the end of a dimension of "
     "size T", "read the plate over T - L elements"),
    ("z[t + L + 1]", "z[t + L + 1] reads z[L + T] at t = T - 1, past the end of a dimension "
     "of size L + T", "read the plate over T - (L + 1) elements"),
    ("y[t + 2 - 1]", "y[t + 2 - 1] reads y[T] at t = T - 1, past the end of a dimension of "
     "size T", "read the plate over T - 1 elements"),
])
def test_a_positive_shift_past_the_end_for_every_size_is_a_located_error(read, first, note):
    text = _first_error(read)
    assert text.split("\n")[0] == f"m.bdl:4:23: error: {first}"
    assert note in text


def test_shifts_that_fit_read_the_right_elements():
    # z[t + L] over z: real[T + L] reads z[L], ..., z[T + L - 1]: the last T values; and
    # y[t + L - L], y[L + t - L] are y[t]
    y = torch.tensor([0.5, -1.0, 2.0])
    z = torch.tensor([9.0, 1.0, 2.0, 3.0])  # L = 1: z[1:] = [1, 2, 3]
    data = {"y": y, "z": z, "L": 1, "M": 2}
    for read, loc in (("z[t + L]", z[1:]), ("y[t + L - L]", y), ("y[L + t - L]", y),
                      ("z[t + 2 * L - L]", z[1:])):
        m = ppl.compile(_src(read), "m.bdl")
        want = float(torch.distributions.Normal(0.5 * loc, 1).log_prob(y).sum()
                     + torch.distributions.Normal(0.0, 1).log_prob(torch.tensor(0.5)))
        assert float(m.log_density({"mu": 0.5}, data)) == pytest.approx(want, abs=1e-5), read


def test_a_shift_that_may_run_past_the_end_is_checked_when_data_bind_the_sizes():
    m = ppl.compile(_src("z[t + M]"), "m.bdl")
    assert m.bind({"y": [0.0] * 3, "z": [0.0] * 5, "L": 2, "M": 1})["M"] == 1  # M <= L
    with pytest.raises(ppl.BdlError, match=r"m.bdl:4:21: error: size mismatch between "
                       r"dimension 0 of 'z' read at t \+ M in plate t in T: L \+ T = 4 but "
                       r"must be at least M \+ T = 5"):
        m.bind({"y": [0.0] * 3, "z": [0.0] * 4, "L": 1, "M": 2})
    # L*M - L is never negative (L(M - 1)), so no wrap; past the end where L(M - 1) > 0
    m = ppl.compile(_src("y[t + L * M - L]"), "m.bdl")
    m.bind({"y": [0.0] * 3, "z": [0.0] * 4, "L": 1, "M": 1})
    with pytest.raises(ppl.BdlError, match=r"T = 3 but must be at least L\*M - L \+ T = 4"):
        m.bind({"y": [0.0] * 3, "z": [0.0] * 4, "L": 1, "M": 2})


def test_the_sign_of_a_size_expression_over_positive_sizes():
    L, M = sizes.size_symbol("L"), sizes.size_symbol("M")
    cases = [  # (expression, negative for every size, negative for some sizes)
        (-L, True, True), (-L - 1, True, True), (-2 * L, True, True),
        (1 - L, False, True),           # 0 at L = 1, -1 at L = 2
        (L - M, False, True), (L * M - L, False, False), (L * M - 2 * L, False, True),
        (L - 1, False, False), (sizes.const(-1), True, True), (sizes.const(2), False, False),
        (1 - L * M, False, True),       # 0 at L = M = 1
        (-L * M, True, True),
    ]
    for d, always, some in cases:
        assert (sizes.always_negative(d), sizes.can_be_negative(d)) == (always, some), d
    assert (M - L).signed() == "M - L" and str(M - L) == "-L + M"
    assert (-L - 1).signed() == "-L - 1" and (L + 3).signed() == "L + 3"
