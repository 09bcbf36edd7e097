"""A support error in a file of several models is located in, and suggests the declaration
of, the model that ran (locate read the first model's site and re-parsed the file for the
first model's argument)."""

import pytest

import ppl

TWO = ("model A(y: real[K, 2]) {\n  y ~ Normal(0, 1)\n}\n"
       "model B(y: real[N]) {\n  lam ~ Gamma(2, 1)\n  y ~ Poisson(lam)\n}\n")


def test_support_error_of_the_second_model_is_its_own():
    m = ppl.compile(TWO, filename="m.bdl")
    with pytest.raises(ppl.BdlError) as e:
        m.fit({"y": [2.0, 1.5, 3.0]}, infer="svi", steps=1)
    assert e.value.render() == """\
m.bdl:6:3: error: 'y' element 1 is 1.5; Poisson is over integers >= 0; declare y: int[N]
    y ~ Poisson(lam)
    ^~~~~~~~~~~~~~~~"""


def test_support_error_of_the_first_model_named():
    src = ("model A(y: real[N]) {\n  lam ~ Gamma(2, 1)\n  y ~ Poisson(lam)\n}\n"
           "model B(y: real[K, 2]) {\n  y ~ Poisson(3.0)\n}\n")
    m = ppl.compile(src, filename="m.bdl", model="A")
    with pytest.raises(ppl.BdlError) as e:
        m.fit({"y": [2.0, 1.5]}, infer="svi", steps=1)
    assert e.value.render().splitlines()[0] == (
        "m.bdl:3:3: error: 'y' element 1 is 1.5; Poisson is over integers >= 0; "
        "declare y: int[N]")
