"""The fuzz and Pyro-porting audits of round 24 (the checker): models that passed ``bdl
check`` and then stopped with a raw Python error, or got a weak message. Each error case
is the exact rendered text (``file:line:col: error: ...`` and every note)."""
# ruff: noqa: E501  (the expected text keeps the long lines the user sees)

import math

from test_diagnostics_checker import _check_errors  # noqa: F401

import ppl

# ---- 1. a model name spelt like a built-in does not shadow the built-in -------------
SHADOW = """\
model M(y: real[N]) {
  mu ~ Normal(0, 1)
  s = exp(mu)
  exp ~ Normal(0, 1)
  sd ~ HalfNormal(1)
  t = exp(sd)
  y ~ Normal(mu, s)
}
"""


def test_a_latent_named_like_a_builtin_leaves_the_builtin_callable():
    # was UnboundLocalError: 'exp' (the call before `exp ~` read the latent)
    model = ppl.compile(SHADOW, "model.bdl")
    fit = model.fit({"y": [1.0, 2.0]}, infer="map(steps=2)")
    s = fit.samples
    assert math.isclose(float(s["s"][0]), math.exp(float(s["mu"][0])), rel_tol=1e-6)
    assert math.isclose(float(s["t"][0]), math.exp(float(s["sd"][0])), rel_tol=1e-6)
    assert set(s) >= {"exp", "sd"}


def test_a_network_named_like_a_builtin_is_called_from_its_definition_on():
    source = """\
model M(x: real[N, 1], y: real[N]) {
  a = exp(x)
  exp = mlp(1, [2], 1)
  y ~ Normal(exp(x)[:, 0] + a[:, 0], 1)
}
"""
    code = ppl.compile(source, "model.bdl").source
    assert "a = torch.exp(x)" in code
    assert "exp(x)[:, 0] + a[:, 0]" in code and "torch.exp(x)[:, 0]" not in code
