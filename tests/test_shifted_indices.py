"""A plate index shifted by an integer expression of sizes and literals, ``y[t + e]`` in
``plate t in T`` (ppl/check/checker.py, ``_plate_index_shift``; docs/language.md,
"Expressions"): where ``e`` can be negative for some sizes, t = 0 reads ``y[e]``, which
torch counts from the end (a located error); otherwise ``y``'s dimension must be at least
``T + e`` (an error when it is less for every size, else checked when data bind the
sizes). The size algebra's sign tests (ppl/check/sizes.py) against hand answers."""

from __future__ import annotations

import math

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
    ("y[t - 2 * L - 1]", "y[t - 2 * L - 1] at t = 0 reads y[-(2 * L + 1)], which torch counts "
     "from the end",
     "`ahead = y[2 * L + 1:]` then `plate t in T - (2 * L + 1) { ... y[t] ... }`"),
    ("y[t - L * M - 1]", "y[t - L * M - 1] at t = 0 reads y[-(L * M + 1)], which torch counts "
     "from the end", "`ahead = y[L * M + 1:]`"),
    # the form kept from before: t - c (with Stan's loop and y[T - c])
    ("y[t - 2]", "y[t - 2] at t = 0 reads y[-2], which torch counts from the end (y[T - 2])",
     "for Stan's `for (t in 3:T) ... y[t - 2]`, give the shifted values their own name and "
     "plate: `ahead = y[2:]` then `plate t in T - 2 { ahead ~ ... y[t] ... }`"),
    # a negative literal is a constant of the shift as 1 is (read y[-1] unchecked in 3a431b9)
    ("y[t + -1]", "y[t + -1] at t = 0 reads y[-1], which torch counts from the end (y[T - 1])",
     "`ahead = y[1:]` then `plate t in T - 1 { ahead ~ ... y[t] ... }`"),
    ("y[t + (-1)]", "y[t + -1] at t = 0 reads y[-1], which torch counts from the end (y[T - 1])",
     "`ahead = y[1:]`"),
    ("y[-1 + t]", "y[-1 + t] at t = 0 reads y[-1], which torch counts from the end (y[T - 1])",
     "`ahead = y[1:]`"),
    ("y[t + L - L - 2]", "y[t + L - L - 2] at t = 0 reads y[-2], which torch counts from the "
     "end (y[T - 2])", "`ahead = y[2:]`"),
])
def test_a_shift_negative_for_every_size_is_a_located_error(read, first, note):
    text = _first_error(read)
    assert text.split("\n")[0] == f"m.bdl:4:23: error: {first}"
    assert note in text


def test_the_wrap_error_names_the_index_as_written_and_slices_its_dimension():
    src = ("model M(x: real[2, T], y: real[T]) {\n  mu ~ Normal(0, 1)\n  plate t in T {\n"
           "    y ~ Normal(mu * x[0, t - 1], 1)\n  }\n}\n")
    with pytest.raises(ppl.BdlError) as e:
        ppl.compile(src, "m.bdl")
    text = str(e.value)
    assert text.split("\n")[0] == ("m.bdl:4:26: error: x[0, t - 1] at t = 0 reads x[0, -1], "
                                   "which torch counts from the end (x[0, T - 1])")
    assert ("give the shifted values their own name and plate: `ahead = x[:, 1:]` then "
            "`plate t in T - 1 { ahead ~ ... x[0, t] ... }`") in text
    src = src.replace("x: real[2, T]", "x: real[T, 2]").replace("x[0, t - 1]", "x[t + 1, 0]")
    with pytest.raises(ppl.BdlError) as e:
        ppl.compile(src, "m.bdl")
    assert str(e.value).split("\n")[0] == (
        "m.bdl:4:23: error: x[t + 1, 0] reads x[T, 0] at t = T - 1, past the end of a "
        "dimension of size T")


def _logp(read: str, y, z, L: int, M: int, loc) -> None:
    """The model's log density at mu = 0.5 against Normal(0.5 * loc, 1) by hand."""
    m = ppl.compile(_src(read), "m.bdl")
    want = float(torch.distributions.Normal(0.5 * torch.as_tensor(loc), 1).log_prob(
        torch.as_tensor(y)).sum() + torch.distributions.Normal(0.0, 1).log_prob(
        torch.tensor(0.5)))
    got = m.log_density({"mu": 0.5}, {"y": y, "z": z, "L": L, "M": M})
    assert float(got) == pytest.approx(want, abs=1e-5), read


Y = [1.0, 2.0, 3.0]


@pytest.mark.parametrize("read, L, M, first", [
    # negative only for some sizes (sizes are whole numbers >= 0): refused when data bind
    # the sizes that make it so, with their values; legal sizes run
    ("y[t - L]", 1, 0, "y[t - L] at t = 0 reads y[-L]: -L = -1"),
    ("y[t - 2 * L]", 1, 0, "y[t - 2 * L] at t = 0 reads y[-2 * L]: -2 * L = -2"),
    ("y[-L + t]", 2, 0, "y[-L + t] at t = 0 reads y[-L]: -L = -2"),
    ("y[t + 1 - L]", 2, 0, "y[t + 1 - L] at t = 0 reads y[1 - L]: 1 - L = -1"),
    ("y[t - (L - 1)]", 3, 0, "y[t - (L - 1)] at t = 0 reads y[1 - L]: 1 - L = -2"),
    ("y[t + L - M]", 1, 2, "y[t + L - M] at t = 0 reads y[L - M]: L - M = -1"),
    ("z[t + L - 1]", 0, 0, "z[t + L - 1] at t = 0 reads z[L - 1]: L - 1 = -1"),
    # 10 L - L M is negative only from M = 11 (3a431b9 tried sizes 1 to 4: no check)
    ("y[t + 10 * L - L * M]", 1, 11, "y[t + 10 * L - L * M] at t = 0 reads y[10 * L - L * M]: "
     "10 * L - L * M = -1"),
    ("y[t + L * M - L]", 1, 0, "y[t + L * M - L] at t = 0 reads y[L * M - L]: L * M - L = -1"),
])
def test_a_shift_negative_for_some_sizes_is_checked_when_data_bind_them(read, L, M, first):
    m = ppl.compile(_src(read), "m.bdl")
    with pytest.raises(ppl.BdlError) as e:
        m.bind({"y": Y, "z": [0.0] * (3 + L), "L": L, "M": M})
    lines = str(e.value).split("\n")
    assert lines[0] == (f"m.bdl:4:23: error: {first} is negative, which torch counts from "
                        "the end (sizes from the data)")
    assert f"  note: L is {L} from data key 'L'" in lines
    assert "the plate reads it at its first index, 0: give the shifted values their own " \
        "name and plate, or sizes that keep it >= 0" in lines[-1]


def test_sizes_that_keep_a_shift_nonnegative_run():
    z = [9.0, 8.0, 1.0, 2.0, 3.0]
    _logp("y[t - L]", Y, z[:3], 0, 0, Y)                  # L = 0: y[t]
    _logp("y[t + 1 - L]", Y, z[:4], 1, 0, Y)              # L = 1: y[t]
    _logp("y[t + L - M]", Y, z[:4], 1, 1, Y)              # L = M
    _logp("z[t + L - 1]", Y, z[1:], 1, 0, z[1:4])         # z[t] of [8, 1, 2, 3]
    # z[t + L - M] of z: real[T + L], w: real[M] at L = 2, M = 1: z[t + 1] = [8, 1, 2]
    # (refused by 3a431b9 as 'where M - L > 0')
    src = _src("z[t + L - M]").replace(ARGS, "y: real[T], z: real[T + L], w: real[M], L: int")
    m = ppl.compile(src, "m.bdl")
    got = m.log_density({"mu": 0.5}, {"y": Y, "z": [9.0, 8.0, 1.0, 2.0, 3.0], "w": [0.0],
                                      "L": 2})
    # -(1 - 4)^2/2 - (2 - 0.5)^2/2 - (3 - 1)^2/2 - 0.5^2/2 - 4 log(2 pi)/2
    want = -(9 + 2.25 + 4 + 0.25) / 2 - 2 * math.log(2 * math.pi)
    assert float(got) == pytest.approx(want, abs=1e-5)
    assert want == pytest.approx(-11.4257541, abs=1e-7)


def test_a_lag_of_size_zero_is_refused_when_data_bind_it():
    # ahead = y[L:] then y[t + L - 1] in plate t in T - L: at L = 0 it read y[-1]
    src = ("model M(y: real[T], L: int) {\n  a ~ Normal(0, 1)\n  ahead = y[L:]\n"
           "  plate t in T - L {\n    ahead ~ Normal(a * y[t + L - 1], 1)\n  }\n}\n")
    m = ppl.compile(src, "m.bdl")
    with pytest.raises(ppl.BdlError, match=r"^m.bdl:5:26: error: y\[t \+ L - 1\] at t = 0 "
                       r"reads y\[L - 1\]: L - 1 = -1 is negative"):
        m.bind({"y": Y, "L": 0})
    # L = 1: ahead = [2, 3] given 0.5 * [1, 2]
    got = m.log_density({"a": 0.5}, {"y": Y, "L": 1})
    want = -(1.5 ** 2 + 2 ** 2 + 0.5 ** 2) / 2 - 1.5 * math.log(2 * math.pi)
    assert float(got) == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize("read, first, note", [
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
    # L*L - L = L(L - 1) is never negative, so no wrap check; past the end where L > 1
    m = ppl.compile(_src("y[t + L * L - L]"), "m.bdl")
    m.bind({"y": [0.0] * 3, "z": [0.0] * 3, "L": 0, "M": 1})
    m.bind({"y": [0.0] * 3, "z": [0.0] * 4, "L": 1, "M": 1})
    with pytest.raises(ppl.BdlError, match=r"T = 3 but must be at least L \* L - L \+ T = 5"):
        m.bind({"y": [0.0] * 3, "z": [0.0] * 5, "L": 2, "M": 1})
    # y[t + L] of y: real[T] runs past the end for every L > 0, but L = 0 reads y[t]
    m = ppl.compile(_src("y[t + L]"), "m.bdl")
    m.bind({"y": [0.0] * 3, "z": [0.0] * 3, "L": 0, "M": 1})
    with pytest.raises(ppl.BdlError, match=r"m.bdl:4:21: error: size mismatch between "
                       r"dimension 0 of 'y' read at t \+ L in plate t in T: T = 3 but must be "
                       r"at least L \+ T = 4"):
        m.bind({"y": [0.0] * 3, "z": [0.0] * 4, "L": 1, "M": 1})


def test_the_sign_of_a_size_expression_over_sizes_of_zero_and_up():
    L, M = sizes.size_symbol("L"), sizes.size_symbol("M")
    cases = [  # (expression, negative for every size, never negative): proven, exact
        (-L, False, False),             # 0 at L = 0
        (-L - 1, True, False), (-2 * L - 1, True, False),
        (1 - L, False, False),          # 1 at L = 0, -1 at L = 2
        (L - M, False, False), (L * M - L, False, False),  # -1 at L = 1, M = 0
        (L - 1, False, False),          # -1 at L = 0
        (sizes.const(-1), True, False), (sizes.const(2), False, True),
        (L * M + L, False, True), (-L * M - 1, True, False), (sizes.const(0), False, True),
        # one size: decided exactly over every whole number (Cauchy's bound on the roots)
        (L * L - L, False, True),       # L(L - 1): 0 at L = 0, 1
        (L * L - 3 * L + 2, False, True),  # (L - 1)(L - 2): < 0 only between 1 and 2
        (L * L - 3 * L + 3, False, True),
        (10 * L - L * L, False, False),  # -11 at L = 11
        (L * L - 21 * L + 110, False, True),  # (L - 10)(L - 11): same, at 10 and 11
        (-L * L + L - 1, True, False),  # -1 at 0 and 1, then lower
        (1000 - L, False, False),       # -1 at L = 1001
        # several sizes of both signs are not judged from sampled sizes: checked at binding
        (10 * L - L * M, False, False),
        (L * L * M * M - L * M, False, False),  # L M (L M - 1) >= 0, left unproven
    ]
    for d, always, never in cases:
        assert (sizes.always_negative(d), sizes.never_negative(d)) == (always, never), d
    assert (M - L).signed() == "M - L" and str(M - L) == "-L + M"
    assert (-L - 1).signed() == "-L - 1" and (L + 3).signed() == "L + 3"


@pytest.mark.parametrize("body, first, note", [
    # a name computed in the plate reads as its value (was y[-1] unchecked)
    ("    s = t - 1\n    y ~ Normal(mu * y[s], 1)\n",
     "5:23: error: y[s] at t = 0 reads y[-1], which torch counts from the end (y[T - 1])",
     "`ahead = y[1:]` then `plate t in T - 1 { ahead ~ ... y[t] ... }`"),
    ("    s = t - L\n    u = s - 1\n    y ~ Normal(mu * y[u], 1)\n",
     "6:23: error: y[u] at t = 0 reads y[-(L + 1)], which torch counts from the end",
     "`ahead = y[L + 1:]`"),
    # a coefficient on the index: Stan's 1-based y[2*t - 1] (was y[-1] unchecked)
    ("    y ~ Normal(mu * y[2 * t - 1], 1)\n",
     "4:23: error: y[2 * t - 1] at t = 0 reads y[-1], which torch counts from the end "
     "(y[T - 1])", "the plate's index starts at 0 (Stan's starts at 1): every element it "
     "reads must be in [0, T)"),
    # a coefficient on a sum: 2 * (t - 1) is 2 * t - 2 (was y[-2] unchecked)
    ("    y ~ Normal(mu * y[2 * (t - 1)], 1)\n",
     "4:23: error: y[2 * (t - 1)] at t = 0 reads y[-2], which torch counts from the end "
     "(y[T - 2])", "every element it reads must be in [0, T)"),
    ("    y ~ Normal(mu * z[(t + 1) * 2], 1)\n",
     "4:23: error: z[(t + 1) * 2] reads z[2 * T] at t = T - 1, past the end of a dimension of "
     "size 2 * T", "read the plate over fewer elements"),
    ("    y ~ Normal(mu * z[2 * t + 2], 1)\n",
     "4:23: error: z[2 * t + 2] reads z[2 * T] at t = T - 1, past the end of a dimension of "
     "size 2 * T", "read the plate over fewer elements"),
])
def test_a_plate_local_or_a_scaled_index_is_checked_as_a_shift(body, first, note):
    src = (f"model M(y: real[T], z: real[2 * T], L: int) {{\n  mu ~ Normal(0, 1)\n"
           f"  plate t in T {{\n{body}  }}\n}}\n")
    with pytest.raises(ppl.BdlError) as e:
        ppl.compile(src, "m.bdl")
    assert str(e.value).split("\n")[0] == f"m.bdl:{first}"
    assert note in str(e.value)


def test_a_scaled_index_reads_every_other_element_and_is_checked_at_binding():
    src = ("model M(y: real[T], z: real[W], L: int) {\n  mu ~ Normal(0, 1)\n  plate t in T {\n"
           "    y ~ Normal(mu * z[2 * t] + z[L * t + 1], 1)\n  }\n}\n")
    m = ppl.compile(src, "m.bdl")
    y, z = [1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    # L = 2: 0.5 * [0, 2, 4] + [1, 3, 5] = [1, 4, 7]
    want = float(torch.distributions.Normal(torch.tensor([1.0, 4.0, 7.0]), 1).log_prob(
        torch.tensor(y)).sum() + torch.distributions.Normal(0.0, 1).log_prob(
        torch.tensor(0.5)))
    got = m.log_density({"mu": 0.5}, {"y": y, "z": z, "L": 2})
    assert float(got) == pytest.approx(want, abs=1e-5)
    # z[2 * t] fits W = 5 (2*T - 1 = 5); z[L * t + 1] reads z[5] at t = 2
    with pytest.raises(ppl.BdlError) as e:
        m.bind({"y": y, "z": z[:5], "L": 2})
    assert str(e.value).split("\n")[0] == (
        "m.bdl:4:32: error: size mismatch between dimension 0 of 'z' read at L * t + 1 in "
        "plate t in T: W = 5 but must be at least L * T - L + 2 = 6 (sizes from the data)")


@pytest.mark.parametrize("args, body, data, loc", [
    # Stan's `t == 1 ? 0 : y[t - 1]`: the condition masks the wrapped read at t = 0
    ("y: real[T]", "    y ~ Normal(where(t > 0, mu * y[t - 1], 0.0), 1)\n",
     {"y": [1.0, 2.0, 3.0]}, [0.0, 0.5, 1.0]),
    ("y: real[T]", "    s = t - 1\n    y ~ Normal(where(t > 0, mu * y[s], 0.0), 1)\n",
     {"y": [1.0, 2.0, 3.0]}, [0.0, 0.5, 1.0]),
    # a lag from the data, checked at binding outside a where (L = 2 reads y[-2], y[-1])
    ("y: real[T], L: int", "    y ~ Normal(where(t >= L, mu * y[t - L], 0.0), 1)\n",
     {"y": [1.0, 2.0, 3.0], "L": 2}, [0.0, 0.0, 0.5]),
    ("y: real[T], z: real[M]", "    y ~ Normal(where(t > 0, mu * z[2 * t - 1], 0.0), 1)\n",
     {"y": [1.0, 2.0, 3.0], "z": [4.0, 6.0, 8.0, 10.0]}, [0.0, 3.0, 5.0]),
])
def test_a_shift_in_a_where_branch_is_masked_by_its_condition(args, body, data, loc):
    src = (f"model M({args}) {{\n  mu ~ Normal(0, 1)\n  plate t in T {{\n{body}  }}\n}}\n")
    m = ppl.compile(src, "m.bdl")
    want = float(torch.distributions.Normal(torch.tensor(loc), 1).log_prob(
        torch.tensor(data["y"])).sum() + torch.distributions.Normal(0.0, 1).log_prob(
        torch.tensor(0.5)))
    assert float(m.log_density({"mu": 0.5}, data)) == pytest.approx(want, abs=1e-5)


def test_a_read_past_the_end_in_a_where_branch_is_still_refused():
    src = ("model M(y: real[T]) {\n  mu ~ Normal(0, 1)\n  plate t in T {\n"
           "    y ~ Normal(where(t > 0, mu * y[t + 1], 0.0), 1)\n  }\n}\n")
    with pytest.raises(ppl.BdlError) as e:
        ppl.compile(src, "m.bdl")
    assert str(e.value).split("\n")[0] == (
        "m.bdl:4:36: error: y[t + 1] reads y[T] at t = T - 1, past the end of a dimension "
        "of size T")
