"""Chain seeds: chain c of a run seeded s is seeded chain_seed(s, c), ``s`` for chain 0 and
a hash of (s, c) (numpy's SeedSequence) for the others, so that runs of nearby seeds share
no chain (with ``s + c``, seeds 0 and 1 shared all but one chain)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ppl
from ppl.infer.methods import SEED_MAX, chain_seed

NORMAL = "model A(y: real[N]) { mu ~ Normal(0, 1); y ~ Normal(mu, 1) }\n"

LINEAR = """
model L(x: real[N], y: real[N]) {
  beta: real[2] ~ Normal(0, 1)
  plate N batch 4 {
    y ~ Normal(beta[0] + beta[1] * x, 0.5)
  }
}
"""


def test_chain_seed_is_the_seed_for_chain_0_and_a_hash_of_seed_and_chain_after():
    assert [chain_seed(s, 0) for s in (0, 1, 7, SEED_MAX)] == [0, 1, 7, SEED_MAX]
    assert chain_seed(5, 3) == int(np.random.SeedSequence(5, spawn_key=(3,))
                                   .generate_state(1)[0])
    seeds = [chain_seed(s, c) for s in range(64) for c in range(8)]
    assert len(set(seeds)) == len(seeds)  # no two (seed, chain) pairs meet
    assert all(0 <= v <= SEED_MAX for v in seeds + [chain_seed(SEED_MAX, 100)])
    assert chain_seed(0, 1) != 1  # seed 0's chain 1 is not seed 1's chain 0 (s + c was)


def _chains(m, method: str, seed: int, **opts) -> list[torch.Tensor]:
    fit = m.fit({"y": [0.3, -0.2, 0.9]}, infer=method, seed=seed, **opts)
    return list(fit.chains["mu"])


@pytest.mark.parametrize("method", ["nuts", "hmc"])
def test_mcmc_chains_of_nearby_seeds_share_nothing(method):
    """Seeds 0 and 1 with 2 chains: no chain of one run is a chain of the other; the same
    seed gives the same bytes; a run's two chains differ; and a one-chain run is chain 0
    of the run with more chains (chain 0 keeps the seed)."""
    m = ppl.compile(NORMAL)
    opts = dict(chains=2, samples=5, warmup=5)
    a, b = _chains(m, method, 0, **opts), _chains(m, method, 1, **opts)
    assert not any(torch.equal(x, y) for x in a for y in b)
    again = _chains(m, method, 0, **opts)
    assert [x.numpy().tobytes() for x in a] == [x.numpy().tobytes() for x in again]
    assert not torch.equal(a[0], a[1]) and not torch.equal(b[0], b[1])
    one = _chains(m, method, 1, chains=1, samples=5, warmup=5)
    assert torch.equal(one[0], b[0])


@pytest.mark.parametrize("vectorize", [True, False])
def test_sghmc_starting_points_of_nearby_seeds_share_nothing(vectorize):
    """sghmc's chains start from prior draws seeded chain_seed(seed, c): with step_size 0
    plain SGHMC stays at its start, so the one kept draw is it. Seeds 0 and 1 share no
    starting point; seed 1's chain 0 is the start of a one-chain run with seed 1; the same
    seed repeats byte for byte."""
    x = torch.linspace(-1, 1, 8)
    m = ppl.compile(LINEAR)
    opts = dict(infer="sghmc", adaptive=False, step_size=0.0, warmup=0, samples=1, thin=1,
                chains=3, dtype="float64", vectorize=vectorize)

    def starts(seed, **kw):
        fit = m.fit({"x": x, "y": 2 * x}, seed=seed, **{**opts, **kw})
        return [tuple(r.tolist()) for r in fit.chains["beta"][:, 0]]

    a, b = starts(0), starts(1)
    assert len(set(a)) == 3 and not set(a) & set(b)
    assert starts(1, chains=1) == b[:1]
    assert starts(0) == a


def test_sghmc_moving_chains_repeat_and_differ():
    """With the dynamics on (batched), the same seed repeats the draws exactly and seeds 0
    and 1 share no chain's draws."""
    x = torch.linspace(-1, 1, 8)
    m = ppl.compile(LINEAR)
    opts = dict(infer="sghmc", warmup=5, samples=3, thin=1, chains=2, step_size=0.02,
                dtype="float64")

    def run(seed):
        return m.fit({"x": x, "y": 2 * x}, seed=seed, **opts).chains["beta"]

    a, b = run(0), run(1)
    assert torch.equal(a, run(0))
    assert not any(torch.equal(a[i], b[j]) for i in range(2) for j in range(2))
