"""What a model must give and may read: a construct's required parameters are checked by
name (a keyword given for another parameter used to stand in for a missing one, and the
model then failed as an internal TypeError), and optional data, which may be left out,
cannot be read by the model."""

import pytest

import ppl
from ppl.pipeline import front


@pytest.mark.parametrize("call, message", [
    ("gp_prior(inputs=x)", "gp_prior needs argument kernel"),
    ("fractional_sde(drift=(x, s) => -x)", "fractional_sde needs argument times"),
    ("martingale_np(x_dim=1)", "martingale_np needs argument y_dim"),
])
def test_a_keyword_does_not_stand_in_for_a_missing_required_argument(call, message):
    head = call.split("(")[0]
    if head == "martingale_np":
        source = f"model M(x: real[N, 1]) {{\n  g = {call}\n}}\n"
    elif head == "fractional_sde":
        source = f"model M(x: real[N]) {{\n  f ~ {call}\n}}\n"
    else:
        source = f"model M(x: real[N, 1]) {{\n  f ~ {call}\n}}\n"
        source = source.replace("{\n", "{\n  f = mlp(1, [8], 1)\n", 1)
    with pytest.raises(ppl.BdlError) as e:
        front(source, "model.bdl")
    text = e.value.render()
    line = 3 if head == "gp_prior" else 2
    assert f"model.bdl:{line}:7: error: {message}" in text
    assert "first or by name" in text


@pytest.mark.parametrize("call", ["gp_prior(rbf(), x)", "gp_prior(inputs=x, kernel=rbf())"])
def test_required_arguments_given_by_position_or_name_pass(call):
    front(f"model M(x: real[N, 1]) {{\n  f = mlp(1, [8], 1)\n  f ~ {call}\n}}\n",
          "model.bdl")


def test_optional_data_cannot_be_read_by_the_model():
    source = ("model M(y: real[N], z: real[N]?) {\n  mu ~ Normal(0, 1)\n  z ~ Normal(mu, 1)\n"
              "  y ~ Normal(mu + z, 1)\n}\n")
    with pytest.raises(ppl.BdlError) as e:
        front(source, "model.bdl")
    assert e.value.render().startswith(
        "model.bdl:4:19: error: 'z' is optional data (declared with '?') and may be left out, "
        "so the model cannot read it")
