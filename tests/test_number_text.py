"""Numbers in words have one spelling, methods.number_text (option ranges and the
located run-time errors of ppl.locate both read it)."""

import pytest
import torch

from ppl import locate
from ppl.infer import methods


@pytest.mark.parametrize("x,text", [(1, "1"), (1.0, "1"), (0.5, "0.5"),
                                    (4294967295.0, "4294967295"), (1e-3, "0.001"),
                                    (float("inf"), "inf"), ([1.0, 2.5], "[1, 2.5]"),
                                    (torch.tensor([[0.0, -1.5]]), "[[0, -1.5]]")])
def test_number_text(x, text):
    assert methods.number_text(x) == text


def test_one_function():
    assert locate.number_text is methods.number_text
    assert not hasattr(locate, "_num") and not hasattr(methods, "_num")
    opt = methods.Option(0.8, float, low=0.0, high=1.0, low_open=True, high_open=True)
    assert opt.range_words() == "in (0, 1)"
    assert methods.Option(0, int, low=0, high=4294967295.0).range_words() == \
        "in [0, 4294967295]"
