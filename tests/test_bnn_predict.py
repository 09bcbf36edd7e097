"""Predictions from a sampled BNN condition on its weight sites (`f.W0`, `f.b0`, ...), both
in `bdl predict` (saved draws) and in `fit.predict` (in process); METHODS.md §1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import ppl
from ppl.infer.predict import posterior_predictive
from ppl.runtime import network_priors as npr

BNN = """\
model B(x: real[N, 1], y: real[N], x_new: real[M, 1], y_new: real[M]?) {
  f = mlp(1, [6], 1, act=tanh)
  f ~ hierarchical_prior(2, 1)
  plate N batch 10 {
    y ~ Normal(f(x)[:, 0], 0.1)
  }
  mu_new = f(x_new)[:, 0]
  y_new ~ Normal(mu_new, 0.1)
}

infer sghmc(samples=8, warmup=40, thin=3, chains=2, step_size=0.05, gibbs_every=10)
"""
# a short burn-in: every check below conditions on the draws the fit kept, whatever they
# are (they need not have converged)
X_NEW = [[-1.5], [-0.2], [0.7], [1.9]]


def _data() -> dict:
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(30, 1))
    y = np.sin(2 * x[:, 0]) + 0.1 * rng.normal(size=30)
    return {"x": x.tolist(), "y": y.tolist(), "x_new": [[0.0]]}


def _net_at(x_new, weights: dict) -> torch.Tensor:
    """f(x_new) for every saved draw, from the weight sites alone: [draws, M]."""
    layers = [(torch.as_tensor(weights[f"f.W{i}"]).reshape(-1, *weights[f"f.W{i}"].shape[2:]),
               torch.as_tensor(weights[f"f.b{i}"]).reshape(-1, *weights[f"f.b{i}"].shape[2:]))
              for i in range(2)]
    x = torch.tensor(x_new, dtype=layers[0][0].dtype)
    return npr.forward(x, layers, torch.tanh)[..., 0]


def test_bdl_predict_conditions_on_network_weights(tmp_path: Path, bdl_here):
    """``bdl run`` then ``bdl predict`` (through ppl.cli.main in this process: a subprocess
    each would add seconds of imports and test nothing more here)."""
    import pyro

    from ppl.runtime import reset_networks

    src = tmp_path / "bnn.bdl"
    src.write_text(BNN)
    data = _data()
    (tmp_path / "bnn.data.json").write_text(json.dumps(data))
    (tmp_path / "new.json").write_text(json.dumps({**data, "x_new": X_NEW}))
    run = tmp_path / "run"
    r = bdl_here("run", src, "--out", run, "-q")
    assert r.returncode == 0, r.stderr
    pyro.clear_param_store()  # predict reads the run's files only, as a new process would
    reset_networks()
    r = bdl_here("predict", src, "--posterior", run, "--data", tmp_path / "new.json")
    assert r.returncode == 0, r.stderr
    with np.load(run / "samples.npz") as z:
        saved = {k: z[k] for k in z.files}
    with np.load(run / "predictive.npz") as z:
        pred = {k: z[k] for k in z.files}
    assert {"f.W0", "f.b0", "f.W1", "f.b1", "f.vW0"} <= set(saved)
    # the weights are given, not predicted
    assert not any(k.startswith("f.") for k in pred)
    assert pred["mu_new"].shape == (16, 4)
    # mu_new is a function of the saved weights only: equal to the network evaluated at
    # the new inputs with each saved draw (prior draws of the weights would differ by O(1))
    want = _net_at(X_NEW, saved).numpy()
    np.testing.assert_allclose(pred["mu_new"], want, rtol=1e-5, atol=1e-5)
    # y_new | weights ~ N(mu_new, 0.1^2): standardised residuals are N(0, 1)
    z = (pred["y_new"] - want) / 0.1
    assert abs(z.mean()) < 4 / np.sqrt(z.size) and abs(z.std() - 1) < 0.3


def test_fit_predict_and_saved_draws_predictive_agree():
    data = {k: torch.tensor(v, dtype=torch.float32) for k, v in _data().items()}
    new = {**data, "x_new": torch.tensor(X_NEW, dtype=torch.float32)}
    m = ppl.compile(BNN)
    fit = m.fit(data, seed=1)
    ours = fit.predict(new)["mu_new"]
    want = _net_at(X_NEW, fit.chains)
    assert ours.shape == want.shape == (16, 4)
    assert torch.allclose(ours.float(), want.float(), atol=1e-5)
    # the saved-draws path (what `bdl predict` runs) on the same draws gives the same values
    saved = posterior_predictive(m, fit.chains, new, fit.params, dtype="float32")
    assert torch.allclose(saved["mu_new"].float(), want.float(), atol=1e-5)
    assert saved["y_new"].shape == (16, 4)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BDL_CACHE_DIR", str(tmp_path / "cache"))
