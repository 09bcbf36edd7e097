"""``--backend pyro-compiled`` (``jit=True``) gives the eager path's numbers (issue 9).

NUTS with a JIT-compiled potential against the eager potential, from the same seed on the
same device, draws the same chain up to floating-point reassociation. SVI with
``JitTrace_ELBO`` does not replay the eager random stream (tracing runs the model, which
draws), so there the fitted posteriors are compared: their means must agree within half a
posterior sd and their sds within 10% of it. With 2000 draws per fit the Monte Carlo error
of the difference of two means is sd * sqrt(2 / 2000) = 0.032 sd, and of two sds
sd / sqrt(2000) = 0.022 sd, so the 10% bound is 4.5 of those (4000 draws, 6.3, cost
twice the drawing time); what separates two such fits is SVI's own noise at the final iterate,
measured at up to a quarter sd between eager runs from different seeds, and 0.06 sd
between eager and compiled runs from the same seed. A compiled ELBO that dropped or
mis-scaled a term would move the means by far more. Runs on the CPU everywhere and on
CUDA where it exists.
"""

import json
from pathlib import Path

import torch

import ppl

ROOT = Path(__file__).resolve().parent.parent


def _linreg():
    path = ROOT / "examples" / "linear_regression.bdl"
    return ppl.load(path), json.loads(path.with_name("linear_regression.data.json").read_text())


def test_compiled_svi_matches_eager_on_device(device):
    m, data = _linreg()
    eager, jit = (m.fit(data, infer="svi", steps=500, samples=2000, seed=3, device=device,
                        dtype="float64", jit=flag) for flag in (False, True))
    for k in ("alpha", "beta", "sigma"):
        a, b = eager.samples[k], jit.samples[k]
        assert b.device.type == device
        sd = a.std(0)
        assert torch.all((a.mean(0) - b.mean(0)).abs() < 0.5 * sd), k
        assert torch.all((a.std(0) - b.std(0)).abs() < 0.1 * sd), k


def test_compiled_nuts_matches_eager_on_device(device):
    m, data = _linreg()
    fits = [m.fit(data, infer="nuts", samples=30, warmup=30, chains=1, seed=5, device=device,
                  dtype="float64", jit=jit) for jit in (False, True)]
    for k in ("alpha", "beta", "sigma"):
        a, b = fits[0].samples[k], fits[1].samples[k]
        assert b.device.type == device
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-8), (k, (a - b).abs().max())
