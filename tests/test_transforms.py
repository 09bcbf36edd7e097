"""Correlation and covariance latents far out on the unconstrained scale
(ppl/runtime/correlation.py): NUTS's potential against ``-log p(T(u)) - log|J_T(u)|``
computed by hand, entry by entry, with ``log(1 - tanh(u)^2) = -2 log cosh(u)``.

1. ``LKJCholesky``'s map is Stan's CPC in logs: torch's log-Jacobian cancels (7.5e-6 off
   at K = 4, |u| ~ 20; -inf at 40), the potential is exact to rounding out to |u| = 800.
2. ``LKJ`` and ``Wishart`` latents whose ``L Lᵀ`` rounding leaves not positive definite
   have potential +inf (density 0), where torch's composed map raised a Cholesky error
   (Pyro's NUTS: a NaN potential, a divergence); their potentials are unchanged nearer in.
3. A guide's ``ordered`` draw far out rounds to equal entries: its density is read off the
   draw on the real line (exact), and svi started there runs (was a validation error).
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch
from conftest import default_dtype
from pyro.distributions.transforms import CholeskyTransform, CorrMatrixCholeskyTransform
from test_transform_findings import _potential as nuts_potential
from torch.distributions.transforms import ComposeTransform, CorrCholeskyTransform

import ppl
from ppl.runtime.correlation import CorrCholeskyCPC, CorrMatrixCPC, CovMatrixVec
from ppl.runtime.shapes import LowerCholeskyVec

Y = 0.3
LY = -0.5 * Y * Y - 0.5 * math.log(2 * math.pi)


def _potential(src, monkeypatch):
    """NUTS's own potential function for ``src``, evaluated in float64 as a fit's
    (literals such as ``eye(3)`` included)."""
    pot = nuts_potential(ppl.compile(src), {"y": Y}, monkeypatch)

    def at(**v):
        with default_dtype(torch.float64):
            return pot(**v)
    return at


def _u(n, s):
    return [s * (-1) ** i * (i + 1) / n for i in range(n)]


def _cpc_by_hand(u, k):
    """Stan's CPC: log|J| and log L_ii, one entry at a time (torch's row order)."""
    logj, log_diag, it = 0.0, [0.0], iter(u)
    for i in range(1, k):
        acc = 0.0  # sum_{c<j} log(1 - z_ic^2)
        for _ in range(i):
            w = -2 * math.log(math.cosh(next(it)))
            logj += w + acc / 2
            acc += w
        log_diag.append(acc / 2)
    return logj, log_diag


def _lkj_norm(k, eta):
    """Pyro's normaliser: its density at the identity (every log L_ii is 0 there)."""
    return float(dist.LKJCholesky(k, torch.tensor(eta, dtype=torch.float64))
                 .log_prob(torch.eye(k, dtype=torch.float64)))


@pytest.mark.parametrize("s", [1.0, 5.0, 10.0, 20.0, 40.0])
def test_cpc_log_jacobian_is_exact_far_out(s):
    k = 4
    u = torch.tensor(_u(6, s), dtype=torch.float64)
    want, log_diag = _cpc_by_hand(u.tolist(), k)
    t = CorrCholeskyCPC()
    chol = t(u)
    assert float(t.log_abs_det_jacobian(u, chol)) == pytest.approx(want, abs=1e-12)
    assert chol.diagonal().log().tolist() == pytest.approx(log_diag, abs=1e-12)
    assert float((chol * chol).sum(-1).sub(1).abs().max()) < 1e-15
    if s <= 5:  # nearer in it is torch's map (whose log-Jacobian is then 4e-12 off)
        old = CorrCholeskyTransform()
        assert torch.allclose(chol, old(u), rtol=0, atol=1e-12)
        assert float(old.log_abs_det_jacobian(u, old(u))) == pytest.approx(want, abs=1e-10)
        assert torch.allclose(t.inv(chol), u, rtol=0, atol=1e-12)


def test_torchs_cpc_log_jacobian_was_off_far_out():
    """What the map replaces: torch's reads log|J| off 1 - cumsum(L_ij^2) (1e-5 off at
    |u| = 10 already)."""
    u = torch.tensor(_u(6, 10.0), dtype=torch.float64)
    old = CorrCholeskyTransform()
    want, _ = _cpc_by_hand(u.tolist(), 4)
    assert abs(float(old.log_abs_det_jacobian(u, old(u))) - want) > 1e-6
    u = torch.tensor(_u(6, 40.0), dtype=torch.float64)
    assert float(old.log_abs_det_jacobian(u, old(u))) == -math.inf


@pytest.mark.parametrize("eta", [1.0, 2.0, 0.5])
@pytest.mark.parametrize("s", [1.0, 20.0, 40.0, 100.0])
def test_lkj_cholesky_potential_is_exact_far_out(eta, s, monkeypatch):
    k = 4
    pot = _potential(f"model M(y: real) {{\n  L ~ LKJCholesky({k}, {eta})\n"
                     "  y ~ Normal(0, 1)\n}\n", monkeypatch)
    u = _u(6, s)
    logj, log_diag = _cpc_by_hand(u, k)
    # LKJCholesky's density: prod_{i>=1} L_ii^(K - i - 1 + 2 (eta - 1))
    lp = sum((k - i - 1 + 2 * (eta - 1)) * log_diag[i] for i in range(1, k))
    want = -(lp + _lkj_norm(k, eta) + logj + LY)
    assert pot(L=u) == pytest.approx(want, rel=1e-12, abs=1e-9)


@pytest.mark.parametrize("eta, want", [(1.0, "exact"), (2.0, math.inf), (0.5, math.inf)])
def test_lkj_cholesky_diagonal_rounded_to_zero(eta, want, monkeypatch):
    """At |u| ~ 800 the last row's L_ii underflows to 0: its power is 2 (eta - 1), so
    L_ii^0 = 1 (torch's 0 * log 0 was NaN), and other powers have density 0 (for eta <
    1 not +inf, which made the potential -inf)."""
    k = 3
    pot = _potential(f"model M(y: real) {{\n  L ~ LKJCholesky({k}, {eta})\n"
                     "  y ~ Normal(0, 1)\n}\n", monkeypatch)
    u = [1.0, 400.0, -400.0]
    logj, log_diag = _cpc_by_hand(u, k)
    got = pot(L=u)
    if want == "exact":
        assert got == pytest.approx(-(log_diag[1] + _lkj_norm(k, eta) + logj + LY), rel=1e-12)
    else:
        assert got == want


def test_a_declared_cholesky_factor_corr_has_the_cpc_map(monkeypatch):
    pot = _potential("model M(y: real) {\n  L: cholesky_factor_corr[3] ~ LKJCholesky(3, 2.0)"
                     "\n  y ~ Normal(0, 1)\n}\n", monkeypatch)
    u = _u(3, 40.0)
    logj, log_diag = _cpc_by_hand(u, 3)
    lp = 3 * log_diag[1] + 2 * log_diag[2]
    assert pot(L=u) == pytest.approx(-(lp + _lkj_norm(3, 2.0) + logj + LY), rel=1e-12)


@pytest.mark.parametrize("s", [0.5, 3.0])
def test_lkj_potential_nearer_in_is_the_composed_maps(s, monkeypatch):
    pot = _potential("model M(y: real) {\n  R ~ LKJ(3, 2.0)\n  y ~ Normal(0, 1)\n}\n",
                     monkeypatch)
    u = torch.tensor(_u(3, s), dtype=torch.float64)
    old = ComposeTransform([CorrCholeskyTransform(), CorrMatrixCholeskyTransform().inv])
    m = old(u)
    want = -(float(dist.LKJ(3, torch.tensor(2.0, dtype=torch.float64)).log_prob(m))
             + float(old.log_abs_det_jacobian(u, m)) + LY)
    assert pot(R=u.tolist()) == pytest.approx(want, rel=1e-12)
    assert torch.allclose(CorrMatrixCPC()(u), m, rtol=0, atol=1e-12)


@pytest.mark.parametrize("s", [20.0, 40.0, 100.0, 800.0])
def test_lkj_potential_is_inf_where_l_lt_is_not_positive_definite(s, monkeypatch):
    """L Lᵀ of a far-out factor is not positive definite to rounding: torch's composed
    map recomputed L by a Cholesky for its log-Jacobian (an error: NaN in NUTS)."""
    pot = _potential("model M(y: real) {\n  R ~ LKJ(3, 2.0)\n  y ~ Normal(0, 1)\n}\n",
                     monkeypatch)
    assert pot(R=_u(3, s)) == math.inf


@pytest.mark.parametrize("s", [0.5, 3.0])
def test_wishart_potential_nearer_in_is_the_composed_maps(s, monkeypatch):
    pot = _potential("model M(y: real) {\n  S ~ Wishart(4.0, covariance_matrix=eye(3))\n"
                     "  y ~ Normal(0, 1)\n}\n", monkeypatch)
    u = torch.tensor(_u(6, s), dtype=torch.float64)
    old = ComposeTransform([LowerCholeskyVec(), CholeskyTransform().inv])
    m = old(u)
    wishart = dist.Wishart(torch.tensor(4.0, dtype=torch.float64),
                           covariance_matrix=torch.eye(3, dtype=torch.float64))
    want = -(float(wishart.log_prob(m)) + float(old.log_abs_det_jacobian(u, m)) + LY)
    assert pot(S=u.tolist()) == pytest.approx(want, rel=1e-12)
    # the map's own log-Jacobian, read off u: 3 log 2 + sum_i (K - i + 1) u_ii
    diag = [u[0], u[2], u[5]]
    by_hand = 3 * math.log(2) + 4 * diag[0] + 3 * diag[1] + 2 * diag[2]
    assert float(CovMatrixVec().log_abs_det_jacobian(u, m)) == pytest.approx(float(by_hand),
                                                                             abs=1e-12)


@pytest.mark.parametrize("d", [-20.0, -40.0, -400.0])
def test_wishart_potential_is_inf_where_l_lt_is_not_positive_definite(d, monkeypatch):
    """L = [[1, 0, 0], [1, e^d, 0], [0, 0, 1]]: L Lᵀ's first two rows are equal to
    rounding (torch's composed map: a Cholesky error for its log-Jacobian)."""
    pot = _potential("model M(y: real) {\n  S ~ Wishart(4.0, covariance_matrix=eye(3))\n"
                     "  y ~ Normal(0, 1)\n}\n", monkeypatch)
    u = [0.0, 1.0, d, 0.0, 0.0, 0.0]
    with pytest.raises(RuntimeError, match="positive-definite"):
        old = ComposeTransform([LowerCholeskyVec(), CholeskyTransform().inv])
        old.inv.log_abs_det_jacobian(old(torch.tensor(u, dtype=torch.float64)), None)
    assert pot(S=u) == math.inf


@pytest.mark.parametrize("s", [1.0, 40.0])
def test_a_declared_type_on_flat_has_the_cpc_map(s, monkeypatch):
    """``L: cholesky_factor_corr[3] ~ Flat()`` (Stan's uniform over the factors): the
    potential is -log|J| and the data's term, by the CPC map in logs."""
    pot = _potential("model M(y: real) {\n  L: cholesky_factor_corr[3] ~ Flat()\n"
                     "  y ~ Normal(0, 1)\n}\n", monkeypatch)
    u = _u(3, s)
    logj, _ = _cpc_by_hand(u, 3)
    assert pot(L=u) == pytest.approx(-(logj + LY), rel=1e-12)


def test_a_declared_corr_matrix_on_lkj_is_lkjs_own_map(monkeypatch):
    """``R: corr_matrix[3] ~ LKJ(3, 2.0)`` is LKJ's support (no restriction; it was
    restricted to torch's corr_matrix, whose composed map raised at |u| = 20)."""
    pot = _potential("model M(y: real) {\n  R: corr_matrix[3] ~ LKJ(3, 2.0)\n"
                     "  y ~ Normal(0, 1)\n}\n", monkeypatch)
    assert pot(R=_u(3, 20.0)) == math.inf
    u = _u(3, 1.0)
    logj, log_diag = _cpc_by_hand(u, 3)
    # LKJ's density of R = L Lᵀ: det(R)^(eta - 1) = prod L_ii^2; the map u -> R adds
    # prod L_ii^(K - 1 - i) to the CPC's Jacobian; Pyro's normaliser
    lp = 2 * (log_diag[1] + log_diag[2]) + _lkj_norm(3, 2.0)
    want = -(lp + logj + 2 * log_diag[0] + 1 * log_diag[1] + LY)
    assert pot(R=u) == pytest.approx(want, rel=1e-12)


# ---- 3. an ordered guide draw far out ----

@pytest.mark.parametrize("dtype, far", [(torch.float64, 40.0), (torch.float32, 20.0)])
def test_an_ordered_guide_draw_far_out_has_its_exact_density(dtype, far):
    """``mu: ordered[3] ~ Normal(m, 1)`` in a guide at m = [far, -far, -far]: the draw
    ``x0 + cumsum(exp(x[1:]))`` rounds to equal entries, whose inverse had log 0
    increments (and Pyro's validation refused it). Its density is read off the draw on
    the real line: Normal's at x less the map's log-Jacobian sum(x[1:])."""
    from pyro.distributions import constraints

    import ppl.runtime as rt

    loc = torch.tensor([far, -far, -far], dtype=dtype)
    base = dist.Normal(loc, torch.ones(3, dtype=dtype)).to_event(1)
    torch.manual_seed(0)
    x = base.rsample()
    torch.manual_seed(0)
    guide = rt.transformed(base, constraints.ordered_vector)
    z = guide.rsample()
    assert z[0] == z[1] == z[2]  # the increments are below z's rounding
    want = float(base.log_prob(x)) - float(x[1:].sum())
    assert float(guide.log_prob(z)) == pytest.approx(want, rel=1e-6 if far == 20.0 else 1e-12)


def test_svi_with_an_ordered_guide_started_far_out_runs():
    """Started at m = [40, -40, -40] (equal entries in every draw), svi steps from there:
    the ELBO's gradient in m[0] keeps one sign, so Adam moves it lr = 0.05 a step (it
    was "'mu' is [40.0057, 40.0057, 40.0057]; _Into is over vectors whose entries
    increase" at the first step)."""
    m = ppl.compile("""
model M(y: real[N]) {
  mu: ordered[3] ~ Normal(0, 30)
  y ~ Normal(sum(mu), 1)
}
guide M {
  param m: real[3] = [40.0, -40.0, -40.0]
  param s: real<lower=0>[3] = 0.01
  mu: ordered[3] ~ Normal(m, s)
}
""")
    fit = m.fit({"y": [0.3, 1.9]}, infer="svi", steps=20, lr=0.05, seed=0)
    assert float(fit.params["m"][0]) == pytest.approx(40.0 - 20 * 0.05, abs=0.02)


def test_lkj_observed_density_and_support_error():
    """rt.LKJ's density at an observed 2 x 2 correlation matrix is the Beta form
    (1 - r^2)^(eta - 1) / (2^(2 eta - 1) B(eta, eta)); a value outside the set is the
    located support error in words (torch's check, as before)."""
    m = ppl.compile("model M(R: real[2, 2]) {\n  R ~ LKJ(2, 2.0)\n}\n")
    got = m.log_density({}, {"R": [[1.0, 0.3], [0.3, 1.0]]})
    assert got == pytest.approx(math.log(0.91 * 6 / 8), rel=1e-6)
    with pytest.raises(ppl.BdlError, match="LKJ is over correlation matrices"):
        m.log_density({}, {"R": [[1.0, 0.3], [0.2, 1.0]]})
    m = ppl.compile("model M(L: real[3, 3]) {\n  L ~ LKJCholesky(3, 2.0)\n}\n")
    with pytest.raises(ppl.BdlError, match="LKJCholesky is over Cholesky factors of "
                                           "correlation matrices"):
        m.log_density({}, {"L": [[1.0, 0, 0], [0.5, 0.5, 0], [0, 0, 1]]})


INDEFINITE = [[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]]  # eigenvalues -0.8, 1.9, 1.9


@pytest.mark.parametrize("dist_text, words", [
    ("LKJ(3, eta)", "LKJ is over correlation matrices (symmetric positive-definite, unit "
                    "diagonal)"),
    ("Wishart(4.0, eye(3))", "Wishart is over symmetric positive-definite matrices"),
])
def test_indefinite_data_are_the_located_support_error(dist_text, words):
    """Observed data that are not positive definite by more than rounding (an eigenvalue
    of -0.8) are outside the set: the located error, in fit and log_density alike, not
    density 0 (which map read as 'the ELBO became infinite ... lower lr')."""
    m = ppl.compile(f"model M(S: real[3, 3]) {{\n  eta ~ Gamma(2, 1)\n  S ~ {dist_text}\n}}\n")
    with pytest.raises(ppl.BdlError, match=r"'S' is \[\[1, 0.9, -0.9\]") as err:
        m.log_density({"eta": 1.0}, {"S": INDEFINITE})
    assert words in str(err.value) and "3:3" in str(err.value)
    with pytest.raises(ppl.BdlError, match=words.replace("(", r"\(").replace(")", r"\)")):
        m.fit({"S": INDEFINITE}, "map(steps=2)")


# ---- 4. cholesky_factor_cov's exp diagonal, and cov_matrix's L Lᵀ, past overflow ----

COV_SRC = {
    "flat": "model M(y: real) {\n  L: cholesky_factor_cov[2] ~ Flat()\n  y ~ Normal(0, 1)\n}\n",
    "mvn": "model M(y: real[2]) {\n  L: cholesky_factor_cov[2] ~ Flat()\n"
           "  y ~ MultivariateNormal([0.0, 0.0], scale_tril=L)\n}\n",
    "cov": "model M(y: real) {\n  S: cov_matrix[2] ~ Flat()\n  y ~ Normal(0, 1)\n}\n",
}


def _cov_potential(kind, monkeypatch):
    data = {"y": [Y, Y] if kind == "mvn" else Y}
    pot = nuts_potential(ppl.compile(COV_SRC[kind]), data, monkeypatch)
    name = "S" if kind == "cov" else "L"

    def at(u):
        with default_dtype(torch.float64):
            return pot(**{name: u})
    return at


def _cov_by_hand(kind, u) -> float:
    """-log p(u): L = [[e^u0, 0], [u1, e^u2]] (Stan's order), a Flat prior on L (or on
    S = L Lᵀ) and the data's term by hand."""
    if kind == "flat":  # log|J| = u0 + u2
        return -(u[0] + u[2] + LY)
    if kind == "cov":  # log|J| = K log 2 + (K + 1) u0 + K u2, K = 2
        return -(2 * math.log(2) + 3 * u[0] + 2 * u[2] + LY)
    # y ~ N(0, L Lᵀ): z = L⁻¹ y by forward substitution
    z0 = Y * math.exp(-u[0])
    z1 = (Y - u[1] * z0) * math.exp(-u[2])
    return -(u[0] + u[2] - math.log(2 * math.pi) - u[0] - u[2] - 0.5 * (z0 * z0 + z1 * z1))


@pytest.mark.parametrize("kind, u0", [("flat", 1.0), ("flat", 700.0), ("mvn", 1.0),
                                      ("mvn", 300.0), ("mvn", 700.0), ("cov", 1.0),
                                      ("cov", 300.0)])
def test_cholesky_factor_cov_potential_is_exact_while_finite(kind, u0, monkeypatch):
    u = [u0, 0.5, 0.2]
    assert _cov_potential(kind, monkeypatch)(u) == \
        pytest.approx(_cov_by_hand(kind, u), rel=1e-12)


@pytest.mark.filterwarnings("ignore:Encountered NaN")
@pytest.mark.parametrize("kind, u0", [("flat", 710.0), ("flat", 800.0), ("mvn", 710.0),
                                      ("cov", 400.0)])
def test_cholesky_factor_cov_past_overflow_is_density_zero(kind, u0, monkeypatch):
    """exp(u0) is inf past u0 ~ 709.78 (L L^T's e^(2 u0) past ~354.9): the point's value
    is not a number, its density 0 (potential +inf, as LKJ's and Wishart's far out); it
    was NaN (Flat's inf * 0), which NUTS counts as a divergence."""
    assert _cov_potential(kind, monkeypatch)([u0, 0.5, 0.2]) == math.inf
