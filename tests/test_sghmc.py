"""SGHMC (METHODS.md §1) against exact posteriors of conjugate models written in BDL."""

import math
import warnings

import pytest
import torch
from pyro.ops.stats import effective_sample_size

import ppl

LINEAR = """
model Lin(x: real[N, 2], y: real[N]) {
  beta: real[2] ~ Normal(0, 1)
  plate N BATCH{
    y ~ Normal(x @ beta, 0.5)
  }
  total = beta[0] + beta[1]
}
"""


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(100, 2, generator=g, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -0.5], dtype=torch.float64) + 0.5 * torch.randn(
        100, generator=g, dtype=torch.float64)
    prec = torch.eye(2, dtype=torch.float64) + x.T @ x / 0.25
    cov = torch.linalg.inv(prec)
    return x, y, cov @ (x.T @ y / 0.25), cov.diagonal().sqrt()


def _plain_sghmc_stationary_sd(prec: torch.Tensor, eta: float, alpha: float) -> torch.Tensor:
    """Exact stationary sd of full-batch plain SGHMC on a Gaussian target N(mu, prec^-1):
    with d = w - mu the update v' = (1 - alpha) v - eta prec d + xi, d' = d + v',
    xi ~ N(0, 2 alpha eta I), is the linear recursion s' = A s + (xi, xi); its stationary
    covariance solves Sigma = A Sigma A^T + Q, vec Sigma = (I - A (x) A)^-1 vec Q. It
    differs from the posterior's by the discretisation's O(sqrt(eta)) bias."""
    d = prec.shape[0]
    eye = torch.eye(d, dtype=prec.dtype)
    a = torch.cat([torch.cat([eye - eta * prec, (1 - alpha) * eye], 1),
                   torch.cat([-eta * prec, (1 - alpha) * eye], 1)], 0)
    q = 2 * alpha * eta * torch.ones(2, 2, dtype=prec.dtype).kron(eye)
    vec = torch.linalg.solve(torch.eye(4 * d * d, dtype=prec.dtype) - torch.kron(a, a),
                             q.reshape(-1))
    return vec.reshape(2 * d, 2 * d).diagonal()[:d].sqrt()


def test_plain_sghmc_stationary_sd_formula():
    """The Lyapunov solution against a long simulation of the same recursion (1-D), and
    its continuous-time limit: the posterior sd as eta -> 0."""
    prec = torch.tensor([[400.0]], dtype=torch.float64)
    ref = _plain_sghmc_stationary_sd(prec, 1e-3, 0.1).item()
    g = torch.Generator().manual_seed(0)
    w = torch.zeros(20000, dtype=torch.float64)
    v = torch.zeros_like(w)
    for _ in range(400):
        v = 0.9 * v - 1e-3 * 400 * w + math.sqrt(2e-4) * torch.randn(w.shape, generator=g,
                                                                      dtype=w.dtype)
        w = w + v
    assert w.std().item() == pytest.approx(ref, rel=4 / math.sqrt(2 * 20000))
    assert ref > 1.05 * 0.05  # the bias the Monte Carlo tests below must allow for
    tiny = _plain_sghmc_stationary_sd(prec, 1e-7, 1e-3).item()
    assert tiny == pytest.approx(0.05, rel=2e-3)


def _assert_recovers(fit, mean, sd, target, bias):
    """The fit's summary: means within 4 Monte Carlo standard errors of the exact posterior
    (mean, sd), sds within the MC error of an sd of ``target`` (plus ``bias``), R-hat <
    1.1; the deterministic ``total`` recomputed per draw."""
    s = fit.samples["beta"]
    summ = fit.summary()
    for j in range(2):
        row = summ.rows[f"beta[{j}]"]
        # an antithetic (momentum) chain can report ESS above its draws; the sd of an sd
        # estimate is not smaller than that of independent draws
        ess = min(max(row["ess"], 20.0), float(s.shape[0]))
        assert abs(row["mean"] - mean[j].item()) < 4 * sd[j].item() / math.sqrt(ess)
        assert row["sd"] == pytest.approx(target[j].item(),
                                          rel=4 / math.sqrt(2 * ess) + bias)
        assert row["r_hat"] < 1.1
    # deterministic sites are recomputed per draw (R-hat of predictions across chains)
    # (with the deterministic's own shape: Predictive's plate padding is undone)
    assert fit.samples["total"].shape == s.shape[:1]
    assert torch.allclose(fit.samples["total"], s.sum(-1))
    assert "r_hat" in summ.rows["total"]


@pytest.mark.parametrize("vectorize", [True, False])
def test_sghmc_recovers_conjugate_gaussian_posterior(vectorize):
    """Batched chains (one vmapped step) and sequential chains of full-batch plain SGHMC
    both reach its exact stationary law (the preconditioned minibatch chain against the
    exact posterior: test_batched_chain_has_the_law_of_a_sequential_chain)."""
    x, y, mean, sd = _data()
    m = ppl.compile(LINEAR.replace("BATCH", ""))
    fit = m.fit({"x": x, "y": y}, infer="sghmc", adaptive=False, step_size=1e-3,
                friction=0.1, warmup=300, samples=250, thin=4, chains=2,
                dtype="float64", seed=0, vectorize=vectorize)
    assert fit.samples["beta"].shape == (500, 2)
    # full-batch plain SGHMC: its own exact stationary sd (the discretisation inflates
    # the posterior's by ~7% at this step), so only Monte Carlo error is allowed
    prec = torch.eye(2, dtype=torch.float64) + x.T @ x / 0.25
    _assert_recovers(fit, mean, sd, _plain_sghmc_stationary_sd(prec, 1e-3, 0.1), 0.0)


@pytest.mark.parametrize("chains", [1, 3])
def test_sghmc_gibbs_step_samples_hierarchical_variance(chains):
    """With an uninformative likelihood the posterior of a layer variance is its prior
    IG(a, b): Gibbs (v | W) alternating with SGHMC (W | v) must reproduce E[1/v] = a/b and
    E[log v] = log b - digamma(a). (A layer of 3 weights keeps the chain mixing fast; the
    conditional itself is checked exactly by the next test.)"""
    src = """
model H(x: real[N, 1], y: real[N]) {
  f = mlp(1, [3], 1, act=tanh)
  f ~ hierarchical_prior(4, 3)
  y ~ Normal(f(x)[:, 0], 1000)
}
"""
    x = torch.linspace(-1, 1, 5).unsqueeze(-1)
    # 300 draws in all, split over the chains (worst error 0.44 of its bound at seeds 0-3
    # with 3 chains of 100)
    fit = ppl.compile(src).fit({"x": x, "y": torch.zeros(5)}, infer="sghmc", adaptive=False,
                               step_size=0.01, friction=0.3, gibbs_every=2, warmup=50,
                               samples=300 // chains, thin=2, chains=chains,
                               dtype="float64", seed=0)
    v = fit.samples["f.vW0"]
    assert v.shape == (300,)
    a, b = 4.0, 3.0
    inv = 1 / v
    ess = float(effective_sample_size(inv.reshape(chains, -1, 1), 0, 1)[0]) * 0.8  # a margin
    # marginally 1/v ~ Gamma(a, b): mean a/b, sd sqrt(a)/b; log v: mean log b - digamma(a)
    assert abs(inv.mean().item() - a / b) < 4 * math.sqrt(a) / b / math.sqrt(ess)
    assert abs(v.log().mean().item() - (math.log(b) - torch.digamma(torch.tensor(a)).item())) \
        < 4 * math.sqrt(torch.polygamma(1, torch.tensor(a)).item() / ess)


def test_sghmc_rejects_bad_options():
    m = ppl.compile(LINEAR.replace("BATCH", ""))
    x, y, _, _ = _data()
    with pytest.raises(ValueError, match="drop"):
        m.fit({"x": x, "y": y}, infer="sghmc", samples=5, drop=5, warmup=1)


def test_gibbs_conditional_is_the_conjugate_inverse_gamma():
    """v | W ~ IG(a + n/2, b + ||W||^2 / 2): E[1/v | W] = (a + n/2) / (b + ||W||^2 / 2)."""
    from torch.distributions import biject_to, constraints

    from ppl.infer.sghmc import _gibbs_update

    torch.manual_seed(0)
    w = torch.randn(4, 3, dtype=torch.float64)
    b_vec = torch.randn(4, dtype=torch.float64)
    a, b = torch.tensor(2.0, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    real = biject_to(constraints.real)
    specs = {"v": {"alpha": a, "beta": b, "targets": ["W", "c"]}}
    u = {"W": w, "c": b_vec}
    inv = []
    for _ in range(2000):
        held = {"v": torch.tensor(1.0, dtype=torch.float64)}
        _gibbs_update(specs, held, u, {"W": real, "c": real})
        inv.append(1 / held["v"])
    inv = torch.stack(inv)
    shape = a + 16 / 2
    rate = b + (w.pow(2).sum() + b_vec.pow(2).sum()) / 2
    # 1/v ~ Gamma(shape, rate): mean shape/rate, sd sqrt(shape)/rate
    assert abs(inv.mean() - shape / rate) < 4 * shape.sqrt() / rate / math.sqrt(2000)
    assert inv.std().item() == pytest.approx((shape.sqrt() / rate).item(), rel=0.08)


def _fit_lin(batch="batch 25 ", **opts):
    x, y, mean, sd = _data()
    m = ppl.compile(LINEAR.replace("BATCH", batch))
    base = dict(infer="sghmc", adaptive=True, step_size=0.02, friction=0.1, dtype="float64",
                seed=3)
    return m.fit({"x": x, "y": y}, **{**base, **opts}), mean, sd


def test_batched_chains_start_where_the_sequential_chains_start():
    """Seed convention: chain c starts from the prior draw seeded chain_seed(seed, c) in
    both modes.
    With eta = 0 plain SGHMC does not move, so the one kept draw is the starting point."""
    opts = dict(adaptive=False, step_size=0.0, warmup=0, samples=1, thin=1, chains=4)
    batched, _, _ = _fit_lin(vectorize=True, **opts)
    seq, _, _ = _fit_lin(vectorize=False, **opts)
    b, s = batched.chains["beta"][:, 0], seq.chains["beta"][:, 0]
    assert b.shape == (4, 2)
    assert torch.equal(b, s)
    assert len({tuple(r.tolist()) for r in b}) == 4  # four different starting points


def test_vmapped_step_equals_the_looped_step():
    """The vmapped potential and gradient are those of the per-chain loop: with the same
    seed (noise, minibatches and Gibbs draws are drawn outside the potential) the two
    batched runs give the same draws, Gibbs-sampled variances included."""
    from ppl.infer import sghmc

    src = """
model H(x: real[N, 1], y: real[N]) {
  f = mlp(1, [4], 1, act=tanh)
  f ~ hierarchical_prior(2, 1)
  plate N batch 8 {
    y ~ Normal(f(x)[:, 0], 0.3)
  }
}
"""
    x = torch.linspace(-2, 2, 30).unsqueeze(-1)
    m = ppl.compile(src)
    opts = dict(infer="sghmc", chains=3, warmup=40, samples=5, thin=3, step_size=0.05,
                gibbs_every=7, dtype="float64", seed=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vm = m.fit({"x": x, "y": torch.sin(x[:, 0])}, **opts)
    # the vmapped path must really run: a silent fall-back to the loop would make this
    # comparison the loop against itself
    assert not [w for w in caught if "vmapped" in str(w.message)]
    try:
        sghmc.VMAP_CHAINS = False
        lp = m.fit({"x": x, "y": torch.sin(x[:, 0])}, **opts)
    finally:
        sghmc.VMAP_CHAINS = True
    assert set(vm.chains) == set(lp.chains) and "f.vW0" in vm.chains
    for k in vm.chains:
        assert vm.chains[k].shape[:2] == (3, 5)
        assert torch.allclose(vm.chains[k], lp.chains[k], rtol=1e-9, atol=1e-10), k


def test_batched_chain_has_the_law_of_a_sequential_chain():
    """Chain c of a batched run against chain c of the sequential run (same start, other
    noise): the per-chain stationary means agree within their Monte Carlo errors, and both
    agree with the exact posterior; each run's summary recovers the exact posterior (the
    preconditioned minibatch chain: its sd within MC error plus a 5% discretisation
    bias)."""
    opts = dict(warmup=300, samples=300, thin=3, chains=3, step_size=0.04)
    batched, mean, sd = _fit_lin(vectorize=True, **opts)
    seq, _, _ = _fit_lin(vectorize=False, **opts)
    for fit in (batched, seq):
        _assert_recovers(fit, mean, sd, sd, 0.05)
    for c in range(3):
        b, s = batched.chains["beta"][c], seq.chains["beta"][c]
        for j in range(2):
            ess_b = max(float(effective_sample_size(b[None, :, j:j + 1], 0, 1)[0]), 10.0)
            ess_s = max(float(effective_sample_size(s[None, :, j:j + 1], 0, 1)[0]), 10.0)
            se = sd[j].item() * math.sqrt(1 / ess_b + 1 / ess_s)
            assert abs(b[:, j].mean() - s[:, j].mean()).item() < 4 * se
            assert abs(b[:, j].mean() - mean[j]).item() < 4 * sd[j].item() / math.sqrt(ess_b)
    # pooled spread of the batched chains against the exact posterior sd
    pooled = batched.samples["beta"]
    ess = max(float(effective_sample_size(batched.chains["beta"][..., :1], 0, 1)[0]), 20.0)
    assert pooled[:, 0].std().item() == pytest.approx(sd[0].item(),
                                                      rel=4 / math.sqrt(2 * ess) + 0.05)


def test_minibatches_are_per_chain_subsets_without_replacement():
    from ppl.infer.sghmc import _draw_minibatches

    torch.manual_seed(0)
    counts = torch.zeros(3, 20)
    for _ in range(2000):
        idx = _draw_minibatches({"N": (20, 5)}, 3, "cpu")["N"]
        assert idx.shape == (3, 5)
        assert all(len(set(r.tolist())) == 5 for r in idx)  # no repeats within a chain
        counts.scatter_add_(1, idx, torch.ones(3, 5))
    # each index is in a chain's batch with probability B/N = 1/4: 500 of 2000, sd ~19.4
    assert (counts - 500).abs().max().item() < 4.5 * math.sqrt(2000 * 0.25 * 0.75)


def test_dynamics_stream_is_not_a_starting_draw_stream():
    """The dynamics are seeded apart from every chain's starting draw (chain_seed(s, c),
    of this seed and the neighbouring ones) and from the neighbouring seeds' dynamics; a
    one-chain batched run is sequential chain 0."""
    from ppl.infer.methods import chain_seed
    from ppl.infer.sghmc import dynamics_seed

    seeds = {dynamics_seed(s, c) for s in range(16) for c in range(8)}
    starts = {chain_seed(s, c) for s in range(16) for c in range(8)}
    assert len(seeds) == 128 and len(starts) == 128 and not seeds & starts
    opts = dict(warmup=5, samples=3, thin=1, chains=1, step_size=0.02)
    one_b, _, _ = _fit_lin(vectorize=True, **opts)
    one_s, _, _ = _fit_lin(vectorize=False, **opts)
    assert torch.equal(one_b.chains["beta"], one_s.chains["beta"])


def test_sghmc_refuses_a_latent_local_to_a_subsampled_plate():
    """SGHMC's chains hold each latent at its full shape; a latent drawn in a subsampled
    plate exists for the minibatch's rows only, so it is a user error, not draws of the
    batch size (which predict and generated quantities then failed on)."""
    m = ppl.compile("""
model S(y: real[N]) {
  plate i in N batch 2 {
    m ~ Normal(0, 1)
    y ~ Normal(m, 1)
  }
}
""")
    with pytest.raises(ppl.BdlError, match="'m' is local to the subsampled plate 'i'") as e:
        m.fit({"y": [0.1, 0.5, -0.3, 1.0, 0.2]}, infer="sghmc", samples=2, warmup=2)
    assert ":4:5: error:" in e.value.render()  # at the latent's statement
