"""Method option messages: svi's lr rule, a misspelt option value's suggestion."""
import pytest

import ppl

A = "model A(y: real[N]) { mu ~ Normal(0, 1); y ~ Normal(mu, 1) }\n"
LR_RULE = ("must be positive, or 0 with lr_scalars > 0 (then only the one-number parameters "
           "move)")


@pytest.mark.parametrize("method", ["svi", "map"])
@pytest.mark.parametrize("lr", ["-1", "0", "-0.5"])
def test_a_negative_lr_and_lr_0_alone_state_the_same_rule(method, lr):
    # before: -1 "must be at least 0", yet 0 "must be positive (...)"
    m = ppl.compile(A, filename="a.bdl")
    with pytest.raises(ppl.BdlError) as e:
        m.resolve_infer(f"{method}(lr={lr})")
    assert str(e.value) == f"infer: error: option 'lr' of {method}: {LR_RULE}"


def test_a_negative_lr_in_the_file_states_the_rule_at_the_option():
    src = A + "infer A with svi(lr=-1, lr_scalars=0.1)\n"
    with pytest.raises(ppl.BdlError) as e:
        ppl.compile(src, filename="a.bdl")
    assert str(e.value).splitlines()[0] == f"a.bdl:2:18: error: option 'lr' of svi: {LR_RULE}"


def test_lr_0_with_lr_scalars_is_accepted():
    m = ppl.compile(A, filename="a.bdl")
    assert m.resolve_infer("svi(lr=0, lr_scalars=0.1)")[1]["lr"] == 0.0
