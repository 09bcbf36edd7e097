"""Device placement for every construct: its example fitted at a tiny budget on `device`.

Runs on CPU everywhere and also on CUDA where it exists (the ``device`` fixture). After the
fit, every draw the fit keeps, every Pyro parameter and every tensor of a fresh trace of the
model (values and distribution arguments, constants of priors included) must live on the
requested device: nothing silently falls back to the CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyro
import pytest
import torch
from test_devices import trace_tensors

import ppl
from ppl.infer.run import torch_defaults

ROOT = Path(__file__).resolve().parent.parent

# example -> the infer options that shrink its budget to a few seconds
CONSTRUCT_EXAMPLES = {
    "bnn_regression": {"samples": 2, "warmup": 4, "thin": 1, "chains": 1},
    "bnn_cnn_digits": {"samples": 2, "warmup": 4, "thin": 1, "chains": 1},
    "fou": {"steps": 2, "samples": 2},
    "np_gp": {"steps": 2, "batch": 2},
    "fewshot_sine": {"steps": 2, "batch": 2, "test_episodes": 2, "samples": 2},
    "mdbm_digits": {"steps": 2},
}


def _example(name: str) -> Path:
    path = ROOT / "examples" / f"{name}.bdl"
    assert path.exists(), f"construct example {path.name} is missing"
    return path


@pytest.mark.parametrize("name", sorted(CONSTRUCT_EXAMPLES))
def test_construct_fit_lives_on_the_device(name, device, tmp_path, monkeypatch):
    monkeypatch.setenv("BDL_CACHE_DIR", str(tmp_path))
    path = _example(name)
    m = ppl.load(path)
    data = json.loads(path.with_name(f"{name}.data.json").read_text())
    if name == "np_gp":
        # the targets given: left out, the fit draws 1000 posterior-predictive runs of the
        # network (90% of this test's time); its 1000 predictive draws of yt are still
        # kept, and checked below, on the device
        data["yt"] = [[0.0]] * len(data["xt"])
    fit = m.fit(data, device=device, seed=0, **CONSTRUCT_EXAMPLES[name])

    wrong = [(k, str(v.device)) for k, v in fit.samples.items()
             if isinstance(v, torch.Tensor) and v.device.type != device]
    wrong += [(k, str(v.device)) for k, v in pyro.get_param_store().items()
              if v.device.type != device]
    assert wrong == []

    _, opts = m.resolve_infer(device=device)
    with torch_defaults(device, opts["dtype"]):
        kwargs = m.bind(data)
        tr = pyro.poutine.trace(m.pyro_model).get_trace(**kwargs)
        logp = tr.log_prob_sum()
    wrong = [(n, str(v.device)) for n, v in trace_tensors(tr) if v.device.type != device]
    assert wrong == []
    assert torch.isfinite(logp)
