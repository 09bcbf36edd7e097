"""rt.Restricted's draws where a bound that follows the latents empties some elements' sets.

``z: real<upper=a>[2] ~ Beta(2, 2)`` at ``a = [-0.5, 0.6]``: element 0's set (0, -0.5) is
empty (its draw a point of density 0, the bounds' midpoint), element 1's is (0, 0.6). Every
element was put at its midpoint as soon as one was empty; element 1 is drawn from Beta(2,
2) truncated to (0, 0.6) again.
"""

import pyro.distributions as dist
import pytest
import torch
from scipy.stats import kstest
from torch.distributions import constraints

from ppl.runtime.shapes import Restricted


def _beta22_cdf(x):
    return 3 * x * x - 2 * x ** 3


def _restricted(base, upper):
    a = torch.tensor(upper, dtype=torch.float64).requires_grad_()  # follows a latent
    return Restricted(base, constraints.less_than(a))


def test_only_the_empty_element_is_at_its_midpoint():
    torch.manual_seed(0)
    r = _restricted(dist.Beta(torch.full((2,), 2.0, dtype=torch.float64),
                              torch.full((2,), 2.0, dtype=torch.float64)), [-0.5, 0.6])
    assert r._empty.tolist() == [True, False]
    z = r.sample((2000,))
    assert z.shape == (2000, 2)
    assert bool((z[:, 0] == -0.25).all())  # (0 + -0.5) / 2, density 0
    assert float(r.log_prob(z)[:, 0].max()) == -float("inf")
    inside = z[:, 1]
    assert bool(((0 < inside) & (inside < 0.6)).all())
    # F(z) / F(0.6) is uniform on (0, 1) for the truncated law (F = Beta(2, 2)'s CDF)
    assert _beta22_cdf(torch.tensor(0.6)) == pytest.approx(0.648)
    assert kstest((_beta22_cdf(inside) / 0.648).numpy(), "uniform").pvalue > 1e-3
    # its mean: E z = int_0^t z 6 z (1 - z) dz / F(t) = (2 t^3 - 1.5 t^4) / F(t)
    mean = (2 * 0.6 ** 3 - 1.5 * 0.6 ** 4) / 0.648
    assert abs(float(inside.mean()) - mean) < 4 * float(inside.std()) / 2000 ** 0.5


def test_a_far_bound_beside_an_empty_element_is_drawn_by_the_inverse_cdf():
    # Uniform(0, 1) below 0.001: rejection keeps 1 draw in 1000, so after 20 rounds the
    # element is drawn by the inverse CDF, uniform on (0, 0.001); the empty element's
    # bounds (0, -0.5) gave that draw nothing to stand on
    torch.manual_seed(1)
    r = _restricted(dist.Uniform(torch.zeros(2, dtype=torch.float64),
                                 torch.ones(2, dtype=torch.float64)), [-0.5, 0.001])
    z = r.sample((500,))
    assert bool((z[:, 0] == -0.25).all())
    assert bool(((0 < z[:, 1]) & (z[:, 1] < 0.001)).all())
    assert kstest((z[:, 1] / 0.001).numpy(), "uniform").pvalue > 1e-3


def test_every_element_empty_is_every_midpoint():
    r = _restricted(dist.Beta(torch.full((2,), 2.0), torch.full((2,), 2.0)), [-0.5, -1.0])
    z = r.sample((3,))
    assert z.tolist() == [[-0.25, -0.5]] * 3
