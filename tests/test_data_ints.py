"""Integer data and sizes are read as Stan reads them: one number for a size (not a list
of one, not true/false), no booleans in int arrays, and no integer beyond int64 (numpy
would wrap it or make it an object array read as 'ragged')."""
from __future__ import annotations

import pytest

import ppl

SRC = "model M(J: int, y: real[J], c: int[J]) { mu ~ Normal(0, 1); y ~ Normal(mu + c, 1) }"


@pytest.fixture(scope="module")
def m():
    return ppl.compile(SRC)


@pytest.mark.parametrize("data, words", [
    (dict(J=[2], y=[1.0, 2.0], c=[1, 2]), "size 'J' (data key 'J') must be an integer, got [2]"),
    (dict(J=True, y=[1.0], c=[1]), "size 'J' (data key 'J') must be an integer, got True"),
    (dict(J=2, y=[1.0, 2.0], c=[1, True]), "declared int but holds true/false values"),
    (dict(J=2, y=[1.0, 2.0], c=[True, False]), "declared int but holds true/false values"),
    (dict(J=2, y=[1.0, 2.0], c=[1.0, True]), "declared int but holds true/false values"),
    (dict(J=2, y=[1.0, 2.0], c=[1, 2 ** 63]), "integer too large for int64"),
    (dict(J=2, y=[1.0, 2.0], c=[1, 2 ** 64]), "integer too large for int64"),
])
def test_bad_integer_data_is_a_located_error(m, data, words):
    with pytest.raises(ppl.BdlError) as e:
        m.log_density({"mu": 0.0}, data)
    assert words in str(e.value)
    assert ":1:" in str(e.value)


def test_the_ends_of_int64_are_integers(m):
    # -2**63 fits (as a float too); only beyond it is refused
    for c in ([0, -2 ** 63], [0.0, -2.0 ** 63]):
        assert float(m.log_density({"mu": 0.0}, dict(J=2, y=[1.0, 2.0], c=c))) < -1e36


def test_good_integer_data_reads_as_before(m):
    # log N(1 | 1, 1) + log N(2 | 2, 1) with mu = 0 plus log N(0 | 0, 1)
    import math

    want = 3 * -0.5 * math.log(2 * math.pi)
    assert float(m.log_density({"mu": 0.0}, dict(J=2, y=[1.0, 2.0], c=[0, 0]))) == pytest.approx(
        want - 0.5 * (1 + 4), rel=1e-6)
    assert float(m.log_density({"mu": 0.0}, dict(J=2, y=[1.0, 2.0], c=[1, 2]))) == pytest.approx(
        want, rel=1e-6)
