"""The seed range has one reader, methods.seed_problem: bdl --seed and the API's draws."""

import argparse

import pytest

import ppl
from ppl.cli import _seed
from ppl.infer.methods import SEED_MAX, seed_problem
from ppl.model import check_seed

RANGE = "a seed is an integer from 0 to 4294967295"


@pytest.mark.parametrize("seed,why", [(0, None), (SEED_MAX, None), (SEED_MAX + 1, RANGE),
                                      (-1, RANGE), (True, RANGE), (1.0, RANGE),
                                      ("3", RANGE)])
def test_seed_problem(seed, why):
    assert SEED_MAX == 4294967295
    assert seed_problem(seed) == why


def test_cli_and_api_messages():
    assert _seed("4294967295") == SEED_MAX
    with pytest.raises(argparse.ArgumentTypeError) as e:
        _seed("4294967296")
    assert str(e.value) == f"seed 4294967296 is out of range: {RANGE}"
    with pytest.raises(argparse.ArgumentTypeError) as e:
        _seed("x")
    assert str(e.value) == "invalid seed 'x': expected an integer from 0 to 4294967295"
    check_seed(None, "predict")
    with pytest.raises(ppl.BdlError) as e:
        check_seed(-1, "sample_prior")
    assert str(e.value) == f"sample_prior: error: seed=-1 is out of range: {RANGE}"
