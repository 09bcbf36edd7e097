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
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        m.fit(data, infer="svi", steps=2, device="cuda")
