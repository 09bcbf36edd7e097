"""The fractional SDE construct (ppl/runtime/fractional_sde.py): prior/posterior SDE on
torchsde, path KL, stability check, and the language construct end to end."""

import json
import math
import re
from pathlib import Path

import pyro
import pytest
import torch

import ppl
from ppl.runtime import fractional_sde as fs
from ppl.runtime import mafbm

ROOT = Path(__file__).resolve().parent.parent



def test_path_kl_of_a_constant_control_is_half_u_squared_T():
    torch.manual_seed(0)
    D, K, u = 2, 4, torch.tensor([0.7, -1.3])
    ctrl = fs.Control(D, K, hidden=(8,), n_freq=2)
    with torch.no_grad():
        ctrl.net[-1].bias.copy_(u)          # last layer weights are zero: u(Z, t) = u
    t = torch.linspace(0.5, 2.5, 41)
    x0 = torch.zeros(3, D)
    with torch.no_grad():
        _, kl, _ = fs.simulate(t, x0, 0.0, 1.0, 0.6, K=K, dt=0.01, control=ctrl)
    expect = 0.5 * float((u ** 2).sum()) * 2.0
    assert torch.allclose(kl, torch.full((3,), expect), rtol=1e-5)


def test_constant_control_shifts_the_mean_by_the_fbm_drift():
    """With u constant, E[X(t)] = u * sum_k w_k int_0^t e^(-g_k (t-s)) (...) : for b = 0,
    s = 1, E dX = sum w_k (u - g_k E Y_k) dt, E Y_k(t) = u (1 - e^-g_k t) / g_k, so
    E X(t) = u sum_k w_k (1 - e^-g_k t) / g_k."""
    torch.manual_seed(1)
    ctrl = fs.Control(1, 5, hidden=(8,), n_freq=1)
    with torch.no_grad():
        ctrl.net[-1].bias.fill_(0.8)
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    x0 = torch.zeros(4000, 1, dtype=torch.float64)
    ctrl = ctrl.double()
    with torch.no_grad():
        paths, _, _ = fs.simulate(t, x0, 0.0, 1.0, 0.7, K=5, dt=0.001, control=ctrl)
    g = mafbm.gamma_grid(5)
    w, _ = mafbm.omega(0.7, g, 1.0, 2)
    expect = 0.8 * float((w * (1 - torch.exp(-g)) / g).sum())
    sd = float(paths[-1, :, 0].std()) / math.sqrt(4000)
    assert abs(float(paths[-1, :, 0].mean()) - expect) < 4 * sd + 0.01


def test_prior_sde_variance_matches_the_mafbm_covariance():
    """Euler on torchsde vs the exact MA-fBM variance (shared W between X and every Y_k)."""
    torch.manual_seed(2)
    n = 4000
    t = torch.linspace(0, 1, 6, dtype=torch.float64)
    x0 = torch.zeros(n, 1, dtype=torch.float64)
    for kind, H in ((2, 0.7), (1, 0.3)):
        with torch.no_grad():
            paths, kl, eps = fs.simulate(t, x0, 0.0, 1.0, H, K=5, kind=kind, dt=0.002)
        assert float(kl.abs().max()) == 0.0
        g = mafbm.gamma_grid(5)
        w, _ = mafbm.omega(H, g, 1.0, kind)
        v = mafbm.mafbm_cov(t[1:], w, g, kind).diag()
        emp = paths[1:, :, 0].var(1)
        # Monte Carlo error of a variance, plus 3% for the Euler bias of the fast OU modes
        assert bool(((emp - v).abs() < 4 * v * math.sqrt(2 / n) + 0.03 * v).all()), (emp, v)


def test_hurst_one_half_gives_brownian_increments():
    torch.manual_seed(3)
    n = 4000
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    with torch.no_grad():
        paths, _, _ = fs.simulate(t, torch.zeros(n, 1, dtype=torch.float64), 0.0, 1.0, 0.5,
                                  K=5, kind=2, dt=0.002)
    inc = (paths[1:] - paths[:-1])[:, :, 0]            # [10, n]
    v = inc.var(1)
    assert bool(((v - 0.1).abs() < 4 * 0.1 * math.sqrt(2 / n) + 0.003).all()), v
    c = torch.corrcoef(torch.stack([inc[3], inc[4]]))[0, 1]
    assert abs(float(c)) < 4 / math.sqrt(n)


def test_stability_check_names_the_fix():
    t = torch.linspace(0, 1, 11)
    with pytest.raises(ValueError, match=r"gamma_max \* dt .* not below 0.5.*dt < 0.025"):
        fs.simulate(t, torch.zeros(1, 1), 0.0, 1.0, 0.7, gamma_max=20.0, dt=0.03)


def test_gradients_reach_hurst_control_and_drift():
    torch.manual_seed(4)
    H = torch.tensor(0.6, requires_grad=True)
    ctrl = fs.Control(1, 3, hidden=(8,), n_freq=1)
    drift = ppl.runtime.nn.MLP(1, [4], 1)
    t = torch.linspace(0, 1, 11)
    paths, kl, _ = fs.simulate(t, torch.zeros(8, 1), drift, 0.5, H, K=3, dt=0.02, control=ctrl)
    loss = (paths ** 2).mean() + kl.mean()
    loss.backward()
    assert H.grad is not None and torch.isfinite(H.grad) and float(H.grad) != 0.0
    assert all(p.grad is not None for p in drift.parameters())
    assert ctrl.net[-1].weight.grad is not None and float(ctrl.net[-1].weight.grad.abs().sum()) > 0


def test_construct_compiles_to_a_runtime_call():
    src = """
model M(t: real[T], y: real[T]) {
  z ~ fractional_sde(times=t, drift=0.0, diffusion=1.0, K=3, kind=2, x0=Normal(0, 1))
  y ~ Normal(z[:, 0], 0.1)
}
"""
    m = ppl.compile(src)
    assert re.search(r'z = rt\.fractional_sde\.fractional_sde\(\s*"z",\s*times=t,', m.source)
    assert re.search(r'pyro\.sample\(\s*"y",\s*dist\.Normal\(z\[:, 0\], 0\.1\)', m.source)


def test_network_with_a_prior_is_a_drift():
    # f ~ gaussian_prior(...) makes f a network of sampled weights; as a drift it is a
    # network of the state (not a function literal of (x, t))
    src = """
model M(t: real[T], y: real[T]) {
  f = mlp(1, [8], 1, act=tanh)
  f ~ gaussian_prior(1)
  z ~ fractional_sde(times=t, drift=f, diffusion=0.5, K=3, kind=2, x0=Normal(0, 1))
  y ~ Normal(z[:, 0], 0.1)
}
"""
    m = ppl.compile(src)
    t = torch.linspace(0, 1, 11)
    draws = m.sample_prior({"t": t, "y": torch.zeros(11)}, num_samples=3, seed=0)
    assert draws["z"].shape[-2:] == (11, 1)
    assert torch.isfinite(draws["z"]).all()
    assert draws["f.W0"].shape[-2:] == (8, 1)


def test_fou_example_fits_end_to_end():
    """examples/fou.bdl on its bundled series (standardised fOU, 47 of 60 points observed):
    SVI with the empty guide tracks the observations (the prior mean path misses them by
    an RMS of 0.97), H stays a valid learned parameter and the posterior paths cover the
    whole grid (the gap and the forecast included)."""
    path = ROOT / "examples" / "fou.bdl"
    data = json.loads(path.with_suffix(".data.json").read_text())
    m = ppl.load(str(path))
    fit = m.fit(data, infer="svi", steps=80, lr=0.02, samples=16, seed=0)
    H = pyro.param("z_hurst").item()
    assert 0.0 < H < 1.0 and H != 0.5
    z = fit.samples["z"]
    assert z.shape[-2:] == (len(data["t"]), 1)
    zm = z.reshape(-1, len(data["t"]))[:, data["idx"]].mean(0)
    rms = float((zm - torch.tensor(data["y"])).pow(2).mean().sqrt())
    assert rms < 0.6, rms
    assert sum(fit.elbo[-10:]) > sum(fit.elbo[:10])
