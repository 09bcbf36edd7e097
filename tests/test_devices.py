"""Device placement: every tensor of a fitted model's trace lives on the asked-for device."""

from __future__ import annotations

import json
from pathlib import Path

import pyro
import pytest
import torch

import ppl
from ppl.infer.run import torch_defaults

ROOT = Path(__file__).resolve().parent.parent
CHEAP = ["eight_schools", "linear_regression", "logistic_regression", "mlp_regression",
         "gp_regression", "minibatch_logistic", "mixture", "varying_intercepts"]


def trace_tensors(trace):
    """(name, tensor) for every site value of ``trace`` and every tensor its distribution
    holds (priors' constants included)."""
    for site in trace.nodes.values():
        if site["type"] not in ("sample", "param"):
            continue
        if isinstance(site["value"], torch.Tensor):
            yield site["name"], site["value"]
        fn = site.get("fn")
        base = getattr(fn, "base_dist", fn)
        for attr, v in vars(base).items() if base is not None else ():
            if isinstance(v, torch.Tensor):
                yield f"{site['name']}.{attr}", v


@pytest.mark.parametrize("name", CHEAP)
def test_fitted_trace_lives_on_the_device(name, device):
    path = ROOT / "examples" / f"{name}.bdl"
    if not path.exists():
        pytest.skip(f"example {name} not present")
    m = ppl.load(path)
    data = json.loads(path.with_name(f"{name}.data.json").read_text())
    fit = m.fit(data, infer="svi", steps=20, samples=10, device=device, seed=0)
    assert all(v.device.type == device for v in fit.samples.values())
    with torch_defaults(device, "float32"):
        kwargs = m.bind(data)
        tr = pyro.poutine.trace(m.pyro_model).get_trace(**kwargs)
    wrong = [(n, str(v.device)) for n, v in trace_tensors(tr) if v.device.type != device]
    assert wrong == []
    assert torch.isfinite(tr.log_prob_sum())


def test_cuda_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    m = ppl.load(ROOT / "examples" / "eight_schools.bdl")
    data = json.loads((ROOT / "examples" / "eight_schools.data.json").read_text())
    with pytest.raises(ppl.BdlError) as e:  # refused with the options, before binding
        m.fit(data, infer="svi", steps=2, device="cuda")
    assert str(e.value) == (
        "infer: error: device=cuda was asked for, but CUDA is not available here "
        "(torch.cuda.is_available() is False)\n"
        "  note: use device=cpu (the default), or a torch built with CUDA on a machine "
        "with a GPU")


NESTED_PLATES = """
model DevicePlates(g: real[N], x: real[N, M], y: real[N, M], c: real[N]) {
  b ~ Normal(0, 1)
  s ~ HalfNormal(1)
  q ~ HalfNormal(1)
  a: real[N] ~ Normal(0, 1)
  e: real[N] ~ Normal(0, 1)
  w = cumsum(q * e)
  factor(log_cdf(Normal(0, q), -lgamma(3.0)))
  plate i in N {
    m ~ Normal(b * g + w, 1)
    c ~ Normal(m, 1)
    plate j in M batch 2 {
      y ~ Normal(a[i] + m + b * x[i, j], s)
    }
  }
}
"""


def test_nested_plates_and_builtins_live_on_the_device(device):
    """Nested plates (outer index, per-element data and a latent of the outer plate read
    in a subsampled inner plate) and the cumsum / lgamma / log_cdf builtins: the fit and
    the trace stay on the device (their index and alignment tensors are made there)."""
    m = ppl.compile(NESTED_PLATES + "infer svi(steps=10, samples=5)\n")
    gen = torch.Generator().manual_seed(0)
    data = {"g": torch.randn(4, generator=gen), "x": torch.randn(4, 3, generator=gen),
            "y": torch.randn(4, 3, generator=gen), "c": torch.randn(4, generator=gen)}
    fit = m.fit(data, device=device, seed=0)
    assert all(v.device.type == device for v in fit.samples.values())
    assert fit.samples["m"].shape[0] == 5
    with torch_defaults(device, "float32"):
        tr = pyro.poutine.trace(m.pyro_model).get_trace(**m.bind(data))
    wrong = [(n, str(v.device)) for n, v in trace_tensors(tr) if v.device.type != device]
    assert wrong == []
    assert torch.isfinite(tr.log_prob_sum())


LABELS = """
model DeviceLabels(y: int[T], w: real[I, J], v: real[I]) {
  e ~ Exponential(0.5)
  l ~ Exponential(0.5)
  s ~ Categorical(ones(T) / T)
  y ~ Poisson(where(arange(T) < s, e, l))
  b ~ Normal(0, 1)
  plate i in I {
    z ~ Bernoulli(0.5)
    v ~ Normal(b * sum(w[i]) + 2 * z, 1)
  }
}
"""


def test_summed_out_labels_live_on_the_device(device):
    """A label outside plates meeting a whole-vector observation (drawn in plates), labels
    in a plate, and sum(w[i]) per row: the fit (labels summed out, then drawn) stays on
    the device, and the drawn change point is the data's."""
    m = ppl.compile(LABELS + "infer nuts(warmup=30, samples=30, chains=1)\n")
    gen = torch.Generator().manual_seed(0)
    data = {"y": [6, 5, 7, 6, 0, 1, 0, 1], "w": torch.randn(3, 2, generator=gen),
            "v": torch.randn(3, generator=gen)}
    fit = m.fit(data, device=device, seed=0)
    assert all(v.device.type == device for v in fit.samples.values())
    assert fit.samples["z"].shape == (30, 3)
    assert float((fit.samples["s"] == 4).double().mean()) > 0.5


SUPPORTS = """
model DeviceSupports(y: real[N], c: int[N], g: int[N]) {
  s ~ Uniform(0, 5)
  lam ~ Exponential(1)
  a: real[2] ~ Normal(0, 1)
  y ~ Pareto(s, 3)
  c ~ Poisson(lam * exp(a[g]))
}
"""


def test_fit_time_checks_run_on_the_device(device):
    """The fit-time checks where the data live: a support the data alone fix (Poisson
    counts) and an index bound are located errors, not device errors; a support that
    follows a latent (Pareto's scale) keeps every NUTS draw inside it (y >= s, so
    s <= min(y) = 1.2); the posterior predictive stays on the device."""
    m = ppl.compile(SUPPORTS, "ds.bdl")
    data = {"y": [1.2, 2.0, 4.0], "c": [1, 0, 3], "g": [0, 1, 1]}
    opts = {"infer": "nuts", "warmup": 30, "samples": 30, "chains": 1, "device": device,
            "seed": 0}
    fit = m.fit(data, **opts)
    assert all(v.device.type == device for v in fit.samples.values())
    assert float(fit.samples["s"].max()) <= 1.2
    pred = fit.predict({"g": [1, 0, 0, 1]}, seed=0)  # y and c left out: drawn
    assert pred["c"].shape == (30, 4) and pred["y"].shape == (30, 4)
    assert bool((pred["y"] >= fit.samples["s"][:, None]).all())
    assert all(v.device.type == device for v in pred.values())
    with pytest.raises(ppl.BdlError, match=r"ds.bdl:7:3: error: 'c' element 1 is -1; "
                       r"Poisson is over integers >= 0"):
        m.fit({**data, "c": [1, -1, 3]}, **opts)
    with pytest.raises(ppl.BdlError, match=r"data 'g' indexes a dimension of 'a' of size 2 "
                       r"but g\[1\] is 2"):
        m.fit({**data, "g": [0, 2, 1]}, **opts)
