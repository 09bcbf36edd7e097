"""A model whose only latents are Delta draws: the samplers say what is true."""
import pytest

import ppl

SRC = "model D(y: real[N]) {\n  a ~ Delta(3.0)\n  b ~ Delta(a + 1)\n  y ~ Normal(a, 1)\n}\n"


@pytest.mark.parametrize("method", ["nuts", "hmc", "sghmc"])
def test_delta_latents_alone_are_fixed_values_not_params(method):
    # before: "its unknowns are params and construct-learned values", fit by map/svi
    m = ppl.compile(SRC, filename="m.bdl")
    with pytest.raises(ppl.BdlError) as e:
        m.fit({"y": [1.0, 2.0]}, infer=method, samples=5, warmup=5, chains=1)
    assert str(e.value).splitlines() == [
        f"infer: error: '{method}' samples latent sites, and this model has none to move: "
        "every latent ('a', 'b') is fixed by Delta, so there is nothing to sample",
        "  note: their values are the Delta's in every draw: m.sample_prior(data) gives them "
        "with draws of the data, and a fit by svi(...) or map(...) records them"]
    prior = m.sample_prior({"N": 2}, num_samples=3, seed=0)
    assert prior["a"].tolist() == [3.0] * 3 and prior["b"].tolist() == [4.0] * 3


def test_a_param_beside_a_delta_latent_is_named_too():
    src = ("model P(y: real[N]) {\n  param s: real<lower=0> = 1.0\n  a ~ Delta(3.0)\n"
           "  y ~ Normal(a, s)\n}\n")
    m = ppl.compile(src, filename="m.bdl")
    with pytest.raises(ppl.BdlError) as e:
        m.fit({"y": [1.0, 2.0]}, infer="nuts", samples=5, warmup=5, chains=1)
    lines = str(e.value).splitlines()
    assert lines[0].endswith("every latent ('a') is fixed by Delta, so there is nothing to "
                             "sample")
    assert lines[1].startswith("  note: its value is the Delta's in every draw")
    assert lines[2] == "  note: fit the model's params with infer map(...) or svi(...)"
