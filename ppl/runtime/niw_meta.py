"""NIW hierarchical meta-learning (Kim & Hospedales, ICLR 2024; METHODS.md §4).

Model: global phi = (mu, Sigma) ~ NIW; per episode theta_i | phi ~ N(mu, Sigma), theta_i the
whole network (all weights flattened into one vector of length d); the episode's data
D_i | theta_i from the likelihood written in the model.

Variational family, diagonal: q(phi) is a product over the d coordinates of 1-D NIWs
(a Normal-Gamma): lambda_j ~ Wishart_1(n0, gamma0_j) = Gamma(n0/2, rate 1/(2 gamma0_j)),
mu_j | lambda_j ~ N(m0_j, 1/(l0 lambda_j)). q_i(theta) = N(m_i, diag v_i).

This module holds the maths (closed forms, SGLD), the network as a function of a flat
weight vector, the ``niw_meta`` site function the generated code calls, and the episode
sources (sine/line regression, N-way K-shot digits and Gaussian classes, .npz files).
The meta-training loop and the baselines live in :mod:`ppl.infer.meta_eval` and
:mod:`ppl.infer.meta_trainers`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
from torch.func import functional_call

from ..constructs.niw_meta import PRECISIONS  # one list for the checker and the runtime
from .errors import ArgumentError

LOG2 = math.log(2.0)


# ---- closed forms ------------------------------------------------------------------
def expected_kl(m, v, m0, gamma0, n0, l0):
    """g_i = E_q(phi) KL(N(m, diag v) || N(mu, Sigma)), diagonal NIW (METHODS.md §4).

    Per coordinate (the d = 1 case of the dense formula, summed over coordinates):
    2 g = n0 gamma0 v + n0 gamma0 (m - m0)^2 + 1/l0 - log v - log gamma0 - psi(n0/2)
    - log 2 - 1. Broadcasts over leading dimensions; sums the last one.
    """
    n0 = torch.as_tensor(n0, dtype=m.dtype, device=m.device)
    l0 = torch.as_tensor(l0, dtype=m.dtype, device=m.device)
    d = m.shape[-1]
    two_g = (n0 * (gamma0 * v).sum(-1) + n0 * (gamma0 * (m - m0) ** 2).sum(-1) + d / l0
             - torch.log(v).sum(-1) - torch.log(gamma0).sum(-1)
             - d * (torch.digamma(n0 / 2) + LOG2 + 1.0))
    return 0.5 * two_g


def expected_kl_dense(m, V, m0, V0, n0, l0):
    """The dense formula of METHODS.md §4 (q(phi) = NIW(m0, l0, V0, n0), Lambda ~
    Wishart(n0, V0)): 2 g = n0 tr(V0 V) + n0 (m - m0)^T V0 (m - m0) + d/l0 - log|V|
    - log|V0| - sum_j psi((n0 - j + 1)/2) - d log 2 - d. Used to check the diagonal form."""
    d = m.shape[-1]
    n0 = torch.as_tensor(n0, dtype=m.dtype, device=m.device)
    j = torch.arange(1, d + 1, dtype=m.dtype, device=m.device)
    diff = m - m0
    two_g = (n0 * torch.trace(V0 @ V) + n0 * diff @ V0 @ diff + d / l0
             - torch.logdet(V) - torch.logdet(V0)
             - torch.digamma((n0 - j + 1) / 2).sum() - d * LOG2 - d)
    return 0.5 * two_g


def kl_niw(m0, gamma0, n0, l0, mp, gp, np_, lp):
    """KL(q(phi) || p(phi)) for diagonal NIWs (Normal-Gamma per coordinate), summed.

    KL = KL(Gamma(a, b) || Gamma(ap, bp)) + E_lambda KL(N(m0, 1/(l0 l)) || N(mp, 1/(lp l)))
    with a = n0/2, b = 1/(2 gamma0) (rates), E[lambda] = n0 gamma0:
    KL_Gamma = (a - ap) psi(a) - lgamma(a) + lgamma(ap) + ap (log b - log bp) + a (bp - b)/b;
    the Normal part = (lp/l0 + lp n0 gamma0 (m0 - mp)^2 - 1 - log(lp/l0)) / 2.
    """
    t = m0
    n0, l0, np_, lp = (torch.as_tensor(x, dtype=t.dtype, device=t.device)
                       for x in (n0, l0, np_, lp))
    gp = torch.as_tensor(gp, dtype=t.dtype, device=t.device)
    a, ap = n0 / 2, np_ / 2
    log_b, log_bp = -torch.log(2 * gamma0), -torch.log(2 * gp)
    kl_gamma = ((a - ap) * torch.digamma(a) - torch.lgamma(a) + torch.lgamma(ap)
                + ap * (log_b - log_bp) + a * (torch.exp(log_bp - log_b) - 1))
    kl_normal = 0.5 * (lp / l0 + lp * n0 * gamma0 * (m0 - mp) ** 2 - 1 - torch.log(lp / l0))
    return (kl_gamma + kl_normal).sum(-1)


def kl_niw_logs(m0, log_gamma0, n0, l0, mp, gp: float, np_: float, lp: float):
    """:func:`kl_niw` for meta-training's step: from log gamma0, with the hyperprior's
    scalars (gp, np_, lp floats) folded into host constants -- the same sum in about half
    the tensor operations (tested equal). With a = n0/2, ap = np_/2, summed over the d
    coordinates: KL = sum_j [gamma0_j (a/gp + lp n0 (m0_j - mp_j)^2 / 2) - ap log gamma0_j]
    + d [(a - ap) psi(a) - lgamma(a) - a + lp/(2 l0) + log(l0)/2]
    + d [lgamma(ap) + ap log gp - 1/2 - log(lp)/2] (METHODS.md §4)."""
    d = m0.shape[-1]
    ap = 0.5 * np_
    a = 0.5 * n0
    per = log_gamma0.exp() * (a / gp + (0.5 * lp) * n0 * (m0 - mp) ** 2) - ap * log_gamma0
    scal = (a - ap) * torch.digamma(a) - torch.lgamma(a) - a + 0.5 * lp / l0 + 0.5 * l0.log()
    const = math.lgamma(ap) + ap * math.log(gp) - 0.5 - 0.5 * math.log(lp)
    return per.sum(-1) + d * (scal + const)


def local_posterior(mbar, A, m0, gamma0, n0):
    """The one-time local update: the minimiser of f_i + g_i when -log p(D_i | theta) is
    the quadratic (theta - mbar)^T A (theta - mbar)/2 (diagonal A):
    precision gamma_i* = A + n0 gamma0, m_i* = (A mbar + n0 gamma0 m0) / gamma_i*.
    Returns (m_i*, v_i* = 1/gamma_i*)."""
    prior_prec = n0 * gamma0
    prec = A + prior_prec
    return (A * mbar + prior_prec * m0) / prec, 1.0 / prec


def local_posterior_kl(mbar, A, m0, log_gamma0, n0, l0):
    """The local posterior and its expected KL in one pass, for the meta-training loop:
    (m_i*, sd_i*, g_i) with m_i*, v_i* = sd_i*^2 from :func:`local_posterior` and
    g_i = :func:`expected_kl` (m_i*, v_i*, m0, gamma0, n0, l0), gamma0 = exp(log_gamma0).
    Same maths, fewer tensor operations (METHODS.md §4): with the precision
    gamma_i* = A + n0 gamma0 and m_i* - m0 = A (mbar - m0) / gamma_i*,
    2 g_i = sum_j [n0 gamma0 (1/gamma_i* + (m_i* - m0)^2) + log gamma_i* - log gamma0]
    + d (1/l0 - psi(n0/2) - log 2 - 1). mbar, A may carry leading (episode) dimensions:
    a batch of episodes is one evaluation, g_i per episode."""
    n0 = torch.as_tensor(n0, dtype=m0.dtype, device=m0.device)
    l0 = torch.as_tensor(l0, dtype=m0.dtype, device=m0.device)
    prior_prec = n0 * log_gamma0.exp()
    prec = A + prior_prec
    shift = A * (mbar - m0) / prec
    per_coord = prior_prec * (prec.reciprocal() + shift ** 2) + prec.log() - log_gamma0
    d = m0.shape[-1]
    two_g = per_coord.sum(-1) + d * (l0.reciprocal() - torch.digamma(n0 / 2) - (LOG2 + 1.0))
    return m0 + shift, prec.rsqrt(), 0.5 * two_g


def lowrank_posterior_kl(theta_bar, grad, U, m0, log_gamma0, n0, l0, xi=None, eps=None):
    """The closed form of METHODS.md §4 with a dense, low-rank A_i = U^T U (U [r, d], the
    Fisher factor of the support NLL at the chain mean theta_bar; r = support points for
    a Gaussian likelihood) and the quadratic's centre at the Newton point,
    A_i mbar_i = A_i theta_bar - grad (grad = grad U(theta_bar)); the prior precision
    P = n0 gamma0 stays diagonal. By Woodbury, with K = I_r + U P^-1 U^T:
    V_i* = (A_i + P)^-1 = P^-1 - P^-1 U^T K^-1 U P^-1,
    m_i* = m0 + V_i* (A_i (theta_bar - m0) - grad),
    2 g_i = sum_j P_j ([V_i*]_jj + (m_i* - m0)_j^2) - log|V_i*| - sum_j log gamma0_j
    + d (1/l0 - psi(n0/2) - log 2 - 1), log|V_i*| = -sum_j log P_j - log|K| (the expected
    KL of the diagonal q(phi), :func:`expected_kl`, with a dense V_i*): O(d r^2), no d x d
    matrix. With ``xi`` [..., d] and ``eps`` [..., r] standard normal, also a draw
    theta = m_i* + z - P^-1 U^T K^-1 (U z + eps), z = P^-1/2 xi (Matheron's rule: the
    posterior draw of a linear-Gaussian model, covariance exactly V_i*).
    Leading (episode) dimensions broadcast. Returns (m_i*, diag V_i*, g_i, theta or None).
    """
    n0 = torch.as_tensor(n0, dtype=m0.dtype, device=m0.device)
    l0 = torch.as_tensor(l0, dtype=m0.dtype, device=m0.device)
    prior_prec, pinv, chol, z, shift, var, g = _lowrank_core(theta_bar, grad, U, m0,
                                                             log_gamma0, n0, l0)
    m = m0 + shift
    theta = None if xi is None else _matheron(m, U, pinv, chol, xi, eps)
    return m, var, g, theta


def _lowrank_core(theta_bar, grad, U, m0, log_gamma0, n0, l0):
    """The shared body of :func:`lowrank_posterior_kl` and :class:`_LowRankKLDraw`:
    (P, P^-1, L, L^-1 U P^-1, m_i* - m0, diag V_i*, g_i)."""
    prior_prec = n0 * log_gamma0.exp()
    pinv = prior_prec.reciprocal()
    ut = U.transpose(-1, -2)
    up = U * pinv                                                   # U P^-1 [..., r, d]
    eye = torch.eye(U.shape[-2], dtype=U.dtype, device=U.device)
    chol = torch.linalg.cholesky(eye + up @ ut)                     # K = L L^T
    b = (ut @ (U @ (theta_bar - m0)[..., None]))[..., 0] - grad
    pb = pinv * b
    shift = pb - pinv * (ut @ torch.cholesky_solve(U @ pb[..., None], chol))[..., 0]
    # L^-1 U P^-1 as a product with the r x r inverse of L: one pass over the [r, d]
    # block, where a triangular solve with d right-hand sides copies it to the solver's
    # layout first; K >= I, so L's singular values are >= 1 and its inverse is tame
    z = _tri_inverse(chol) @ up
    var = (pinv - _row_square_sum(z)).clamp_min(torch.finfo(m0.dtype).tiny)
    logdet_v = -prior_prec.log().sum(-1) - 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    d = m0.shape[-1]
    two_g = ((prior_prec * (var + shift ** 2)).sum(-1) - logdet_v - log_gamma0.sum(-1)
             + d * (l0.reciprocal() - torch.digamma(n0 / 2) - (LOG2 + 1.0)))
    return prior_prec, pinv, chol, z, shift, var, 0.5 * two_g


def _row_square_sum(z: torch.Tensor) -> torch.Tensor:
    """sum_r z_rj^2 of z [..., r, d] -> [..., d], accumulated row by row: no [r, d]
    temporary, and a reduction over the strided row axis (``(z ** 2).sum(-2)``, or
    ``vector_norm``, 4x and 100x slower on a [4, 5, 132k] block) avoided."""
    acc = z[..., 0, :] * z[..., 0, :]
    for i in range(1, z.shape[-2]):
        acc.addcmul_(z[..., i, :], z[..., i, :])
    return acc


def _tri_inverse(chol: torch.Tensor) -> torch.Tensor:
    """L^-1 of lower-triangular r x r factors [..., r, r] (small r: the Fisher factor's rows)."""
    eye = torch.eye(chol.shape[-1], dtype=chol.dtype, device=chol.device)
    return torch.linalg.solve_triangular(chol, eye.expand_as(chol), upper=False)


def _matheron(m, U, pinv, chol, xi, eps):
    """theta = m + z - P^-1 U^T K^-1 (U z + eps), z = P^-1/2 xi (:func:`lowrank_posterior_kl`)."""
    zs = pinv.sqrt() * xi
    t = (U @ zs[..., None])[..., 0] + eps
    return m + zs - pinv * (U.transpose(-1, -2) @ torch.cholesky_solve(t[..., None], chol))[..., 0]


def _woodbury_apply(x, U, pinv, chol):
    """V x for V = (U^T U + P)^-1 by Woodbury, x [..., k, d] (k right-hand sides per
    row): P^-1 x - P^-1 U^T K^-1 U P^-1 x, K = L L^T = I + U P^-1 U^T."""
    px = pinv[..., None, :] * x
    corr = torch.cholesky_solve(U @ px.transpose(-1, -2), chol)           # [..., r, k]
    return px - pinv[..., None, :] * (U.transpose(-1, -2) @ corr).transpose(-1, -2)


class _LowRankKLDraw(torch.autograd.Function):
    """(g_i, theta_i) of :func:`lowrank_posterior_kl` with its analytic backward in
    (m0, log gamma0, n0, l0); theta_bar, grad, U, xi, eps are constants (the chain's
    output and the draws' noise). With P = n0 gamma0, V = (A + P)^-1, A = U^T U,
    shift = V (A (theta_bar - m0) - grad), W = U V = K^-1 U P^-1, and Matheron's draw
    written theta - m0 = V (A (theta_bar - m0) - grad + P^1/2 xi - U^T eps):
    d theta/d m0 = V P, d theta/d P_j = V e_j (xi_j / (2 P_j^1/2) - (theta - m0)_j);
    d g/d m0 = -A V (P shift), 2 d g/d P_j = var_j + shift_j^2 + sum_r W_rj^2
    - 2 shift_j (V P shift)_j (from dV/dP_j = -V e_j e_j^T V and
    diag(V P V) = diag V - diag(V A V)); 2 d g/d log gamma0_j adds -1, and
    2 d g/d n0 = sum_j gamma0_j (2 d g/d P_j) - d psi'(n0/2)/2, 2 d g/d l0 = -d/l0^2.
    The variance floor (clamp at the smallest normal number, against cancellation) is
    taken as inactive in the backward: the exact V_jj it stands for is positive. Every
    product with V is one Woodbury solve, both right-hand sides of the backward in one.
    Leading (episode) dimensions of the constants broadcast against m0, log gamma0 [d]
    and n0, l0 (0-dim); their gradients sum over them. METHODS.md §4."""

    @staticmethod
    def forward(ctx, m0, log_gamma0, n0, l0, theta_bar, grad, U, xi, eps):
        prior_prec, pinv, chol, z, shift, var, g = _lowrank_core(theta_bar, grad, U, m0,
                                                                 log_gamma0, n0, l0)
        theta = _matheron(m0 + shift, U, pinv, chol, xi, eps)
        ctx.save_for_backward(prior_prec, pinv, U, chol, z, shift, var, theta - m0, xi, n0,
                              l0)
        return g, theta

    @staticmethod
    def backward(ctx, dg, dtheta):
        prior_prec, pinv, U, chol, z, shift, var, tm, xi, n0, l0 = ctx.saved_tensors
        d = prior_prec.shape[-1]
        vx = _woodbury_apply(torch.stack((dtheta, prior_prec * shift), -2), U, pinv, chol)
        vw, vps = vx[..., 0, :], vx[..., 1, :]
        w = _tri_inverse(chol).transpose(-1, -2) @ z                # K^-1 U P^-1
        dg_ = dg[..., None]
        dp = (vw * (0.5 * xi * pinv.sqrt() - tm)
              + 0.5 * dg_ * (var + shift ** 2 + _row_square_sum(w) - 2 * shift * vps))
        avps = (U.transpose(-1, -2) @ (U @ vps[..., None]))[..., 0]
        lead = tuple(range(shift.dim() - 1))
        g_m0 = (prior_prec * vw - dg_ * avps).sum(lead)
        pdp = (prior_prec * dp).sum(lead)
        dg_all = dg.sum()
        g_lg = pdp - 0.5 * dg_all
        g_n0 = pdp.sum() / n0 - 0.25 * d * dg_all * torch.polygamma(1, n0 / 2)
        g_l0 = -0.5 * d * dg_all / l0 ** 2
        return g_m0, g_lg, g_n0, g_l0, None, None, None, None, None


def lowrank_kl_draw(theta_bar, grad, U, m0, log_gamma0, n0, l0, xi, eps):
    """(g_i, theta_i) of :func:`lowrank_posterior_kl` with draws (same values), for the
    meta-training loss: one autograd node with the analytic backward of the closed
    form in the globals (:class:`_LowRankKLDraw`) instead of the graph of its ~40
    tensor operations. The chain's outputs theta_bar, grad, U and the noise xi, eps
    must be constants (no gradient); m0, log_gamma0 [d], n0, l0 (0-dim) may be."""
    if any(t.requires_grad for t in (theta_bar, grad, U, xi, eps)):
        raise ValueError("lowrank_kl_draw: the chain's outputs and the noise are constants "
                         "(detach them)")
    n0, l0 = (torch.as_tensor(x, dtype=m0.dtype, device=m0.device) for x in (n0, l0))
    return _LowRankKLDraw.apply(m0, log_gamma0, n0, l0, theta_bar, grad, U, xi, eps)


def randn_like(t, generator=None, shape=None):
    """Standard normal draws with t's dtype and device; a generator on another device
    (a CPU generator for CUDA tensors) draws there and the result is moved."""
    shape = t.shape if shape is None else shape
    dev = t.device if generator is None else generator.device
    return torch.randn(shape, dtype=t.dtype, device=dev, generator=generator).to(t.device)


def _grad(potential, theta: torch.Tensor, create_graph: bool = False):
    th = theta.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(potential(th), th, create_graph=create_graph)
    return th, g


def top_curvature(potential, theta: torch.Tensor, iters: int = 1,
                  fd_step: float | None = None, ritz: bool = True) -> tuple[float, torch.Tensor]:
    """(L, grad U(theta)): L estimates the largest |eigenvalue| of the Hessian H of U at
    theta by ``iters`` power iterations v <- H v / ||H v|| started from v = grad U(theta)
    (gradients of a network loss lie mostly in its stiffest directions), L = ||H v|| for
    the last unit v -- a lower bound on the spectral radius that more iterations tighten.

    ``fd_step`` = None: exact Hessian-vector products, double backward through one
    gradient graph. ``fd_step`` = delta: each H v is the finite difference
    (grad U(theta + h v) - grad U(theta)) / h, h = delta max(||theta||, 1), one plain
    gradient instead of a double backward (which costs about 2.3 gradients on the 2x32
    MLP); exact on a quadratic, and with delta = 1e-3 in float32 (difference accurate to
    ~1e-4) equal to the exact estimate to 3 digits at a meta-trained sine/line m0
    (benchmarks/RESULTS.md, Issue 7). Where h crosses a ReLU kink the difference sees it,
    and the estimate can be larger or smaller than the exact one (0.64x to 4.8x, measured
    once on 3 of 10 episodes at a 2x32 net's initial weights);
    like any power-iteration estimate it is not an upper bound on the curvature. A probe
    whose gradient is not finite is retried 8x closer.
    A zero or non-finite Hessian or gradient gives L = 0 (METHODS.md §4; the stable SGLD
    step of :func:`sgld`).

    ``ritz`` (default): L is instead the Rayleigh-Ritz estimate from the same products,
    the square root of the largest eigenvalue of H^2 on the span of the unit vectors
    v_0 .. v_{iters-1} the iteration applied H to (:func:`ritz_radius`; H v_i is known
    for each, so (H^2)'s projection is the Gram matrix of the H v_i, no extra gradient).
    It is at least the power estimate ||H v|| of any v in the span -- the last iterate's
    included -- and, for an exact H, still at most the spectral radius; with 2 products
    it is as close as 3 power iterations' estimate (benchmarks/RESULTS.md, Issue 7,
    stop 25). ``ritz=False``: the power estimate ||H v_{iters-1}||."""
    if fd_step is None:
        th, g = _grad(potential, theta, create_graph=True)
    else:
        th, g = _grad(potential, theta)
    gd = g.detach()
    gnorm = float(gd.norm())
    if not (math.isfinite(gnorm) and gnorm > 0.0):
        return 0.0, gd
    u, L = gd / gnorm, 0.0
    h = None if fd_step is None else fd_step * max(float(theta.detach().norm()), 1.0)
    probed, products = [], []
    for i in range(iters):
        if h is None:
            if not g.requires_grad:  # U linear in theta: no curvature
                return 0.0, gd
            with torch.enable_grad():
                (hv,) = torch.autograd.grad(g, th, grad_outputs=u,
                                            retain_graph=i < iters - 1, allow_unused=True)
            if hv is None:
                return 0.0, gd
            hv = hv.detach()
            L = float(hv.norm())
        else:
            for _ in range(10):
                probe = _grad(potential, torch.add(theta.detach(), u, alpha=h))[1]
                hv = (probe - gd).div_(h)
                L = float(hv.norm())
                if math.isfinite(L):
                    break
                h /= 8.0
        if not (math.isfinite(L) and L > 0.0):
            return 0.0, gd
        probed.append(u)
        products.append(hv)
        if i < iters - 1:
            u = hv / L
    if ritz and len(probed) > 1:
        L = max(L, float(ritz_radius(torch.stack(probed), torch.stack(products))))
    return L, gd


def ritz_radius(V: torch.Tensor, HV: torch.Tensor, rcond: float = 1e-4) -> torch.Tensor:
    """The Rayleigh-Ritz estimate of the spectral radius of a symmetric H from k probed
    vectors V [..., k, d] and their products HV = H V [..., k, d] (leading dimensions:
    independent rows): sqrt of the largest eigenvalue of H^2 projected on span(V), the
    largest mu of (HV HV^T) c = mu (V V^T) c -- both Gram matrices known without another
    product. It is at least ||H v|| / ||v|| for every v in the span (so at least the
    power iteration's estimate from the same products) and, for an exact H, at most the
    spectral radius. The k x k problem is solved in float64; directions of the span with
    a Gram eigenvalue below ``rcond`` times the largest (nearly parallel probes, whose
    difference would amplify finite-difference noise in HV) are dropped. A row with a
    zero span gives 0."""
    V64, HV64 = V.double(), HV.double()
    G = V64 @ V64.transpose(-1, -2)
    M = HV64 @ HV64.transpose(-1, -2)
    ev, Q = torch.linalg.eigh(G)
    top = ev[..., -1:]
    keep = (ev > rcond * top) & (top > 0)
    scale = torch.where(keep, ev.clamp_min(1e-300).rsqrt(), torch.zeros_like(ev))
    W = Q * scale[..., None, :]
    mu = torch.linalg.eigvalsh(W.transpose(-1, -2) @ M @ W)[..., -1]
    return mu.clamp_min(0.0).sqrt().to(V.dtype)


class _RunningMoments:
    """Running mean and second moment of the iterates x_t = theta_t - theta_0 (and, to
    detrend, of t and the co-moment of (t, x_t)): Welford's updates, in place on three
    d-vectors (or [B, d] rows), so memory does not grow with the steps. ``keep`` is one
    update shared by every row (scalar n, t); ``keep_rows`` a per-row one (rows with
    mask 0 unchanged), which turns n, mean(t), m2(t) into [B] tensors from then on."""

    def __init__(self, like: torch.Tensor, detrend: bool):
        self.mx, self.m2x = torch.zeros_like(like), torch.zeros_like(like)
        self.ctx = torch.zeros_like(like) if detrend else None
        self.mt, self.m2t, self.n = 0.0, 0.0, 0
        self.rows = False

    def keep(self, t, x: torch.Tensor) -> None:
        if self.rows:
            return self.keep_rows(t, x, torch.ones_like(self.mt))
        self.n += 1
        dt = t - self.mt
        self.mt += dt / self.n
        self.m2t += dt * (t - self.mt)
        dx = x - self.mx
        self.mx.add_(dx, alpha=1.0 / self.n)
        resid = x - self.mx
        self.m2x.addcmul_(dx, resid)
        if self.ctx is not None:
            self.ctx.add_(resid, alpha=dt)

    def keep_rows(self, t, x: torch.Tensor, w: torch.Tensor) -> None:
        if not self.rows:
            self.n, self.mt, self.m2t = (x.new_full(x.shape[:1], float(v))
                                         for v in (self.n, self.mt, self.m2t))
            self.rows = True
        self.n = self.n + w
        dt = t - self.mt
        inv = w / self.n.clamp_min(1.0)
        self.mt = self.mt + dt * inv
        self.m2t = self.m2t + w * dt * (t - self.mt)
        dx = x - self.mx
        self.mx.add_(dx * inv[:, None])
        resid = x - self.mx
        self.m2x.add_(w[:, None] * dx * resid)
        if self.ctx is not None:
            self.ctx.add_((w * dt)[:, None] * resid)


def sgld(potential, theta0, steps, lr, temp=1.0, a_min=1e-4, a_max=1e3, burn=1,
         detrend=False, generator=None, power_iters=0, step_scale=1.0, info=None,
         curvature=None, power_ritz=True):
    """Stochastic-gradient Langevin dynamics on U = potential(theta), warm-started at
    theta0: theta_t = theta_{t-1} - lr grad U(theta_{t-1}) + sqrt(2 lr temp) xi_t,
    xi_t ~ N(0, I), t = 1..steps.

    Returns (mbar, A, mean, var): the mean of the kept iterates theta_t, t >= ``burn``
    (burn = 1 drops only the warm start theta_0, which is not a draw; a fraction
    0 < burn < 1 means t >= ceil(burn * steps): 0.5 treats the first half of the chain,
    the drift from the warm start, as burn-in),
    their variance, and A = temp/var clipped to [a_min, a_max] (METHODS.md §4): Langevin at
    temperature temp samples exp(-U/temp), whose covariance is temp times that of the
    Gaussian approximation N(mbar, A^-1) of exp(-U) the closed form needs.

    ``detrend`` (off by default, as in the reference): a chain of a few steps from theta_0
    has not reached equilibrium, and its systematic drift towards the mode is not
    posterior spread -- counted as variance, it makes A smallest where the support data
    pull hardest. With ``detrend`` the variance is the residual variance of each
    coordinate about its least-squares line in t (n - 2 degrees of freedom); at 3 steps
    that leaves one degree of freedom, too noisy to help (benchmarks/RESULTS.md, Issue 7).
    Too few kept iterates for a variance (1, or 2 when detrending) give A = a_max. A step
    that is not finite ends the chain (the iterates so far are kept). The
    iterates are constants summarised on the fly (Welford, in place), so memory does not
    grow with ``steps``.

    Stable step (``power_iters`` > 0): the unadjusted Langevin step is stable only if
    lr L < 2, L the largest curvature of U (on a quadratic, the stiff coordinate's
    deviation from the mode is multiplied by 1 - lr L per step; past 2 it grows
    geometrically, and a network's curvature grows with its weights, so the chain
    overflows). The step used is then lr_i = min(lr, step_scale / L_i), L_i the top
    curvature at theta0 by ``power_iters`` power iterations with finite-difference
    Hessian-vector products (:func:`top_curvature`, ``fd_step=1e-3``: one extra gradient
    each; the gradient at theta0 is the chain's first; ``power_ritz`` (default): the
    Rayleigh-Ritz estimate from those products); step_scale = 1 is the Newton step in the
    stiffest direction and keeps the stationary variance of a quadratic within a factor
    1/(1 - lr_i h/2) <= 2 of tau/h in every direction h. ``info`` (a dict), when given,
    receives ``lr`` (the step used), ``curvature`` (L_i, nan when not estimated) and
    ``steps`` (iterates taken before any non-finite step). METHODS.md §4; the divergence it
    prevents is in benchmarks/RESULTS.md, Issue 7.

    ``curvature`` = (L, grad U(theta0)), when given, replaces the power iteration (which
    is then not run, whatever ``power_iters``): the caller already has both, e.g. the top
    eigenvalue of the Gauss-Newton Gram matrix and the gradient from the same Jacobian
    (:meth:`ppl.infer.meta_trainers.NIW.chain`, ``sgld_precision="gauss_newton"``).
    """
    theta0 = theta0.detach()
    theta = theta0.clone()
    grad0, curv = None, float("nan")
    if curvature is not None and steps > 0:
        curv, grad0 = float(curvature[0]), curvature[1].detach()
    elif power_iters > 0 and steps > 0:
        curv, grad0 = top_curvature(potential, theta, power_iters, fd_step=1e-3,
                                    ritz=power_ritz)
    if curv > 0.0 and math.isfinite(curv):
        lr = min(lr, step_scale / curv)
    noise_sd = math.sqrt(2.0 * lr * max(temp, 0.0))
    mom = _RunningMoments(theta, detrend)
    keep = mom.keep

    if 0.0 < burn < 1.0:
        burn = max(1, math.ceil(burn * steps))
    burn = min(burn, steps)  # with no steps the warm start is all there is
    if burn <= 0:
        keep(0, torch.zeros_like(theta))
    taken = 0
    for t in range(1, steps + 1):
        grad = grad0 if (t == 1 and grad0 is not None) else _grad(potential, theta)[1]
        step = torch.add(theta, grad.detach(), alpha=-lr)
        if noise_sd > 0.0:
            step.add_(randn_like(theta, generator), alpha=noise_sd)
        if not bool(torch.isfinite(step).all()):
            break  # diverged (lr past 2/curvature somewhere): keep the finite iterates
        theta = step
        taken = t
        if t >= burn:
            keep(t, theta - theta0)
    if info is not None:
        info.update(lr=lr, curvature=curv, steps=taken)
    if mom.n == 0:  # diverged before the first kept iterate: the last finite one
        keep(0, theta - theta0)
    mean = theta0 + mom.mx
    dof = mom.n - 2 if detrend else mom.n - 1
    if dof < 1:
        var = torch.zeros_like(mean)
        A = torch.full_like(mean, a_max)
    else:
        rss = (mom.m2x - mom.ctx ** 2 / mom.m2t).clamp_min(0.0) if detrend else mom.m2x
        var = rss / dof
        A = (max(temp, 0.0) / var.clamp_min(1e-30)).clamp(a_min, a_max)
    return mean, A, mean, var


# ---- the same chains for a batch of episodes at once -----------------------------------
def _grad_rows(potential, theta: torch.Tensor):
    """grad of each row's potential: potential(theta [B, d]) -> [B], row b depending on
    theta[b] only, so the gradient of the sum is the B gradients in one backward."""
    th = theta.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(potential(th).sum(), th)
    return g


def top_curvature_rows(potential, theta: torch.Tensor, iters: int = 1,
                       fd_step: float = 1e-3, ritz: bool = True
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`top_curvature` (finite-difference Hessian-vector products) for B
    independent potentials at once: ``potential`` maps theta [B, d] to the B values,
    row b depending on theta[b] only. Returns (L [B], grad [B, d]); every row follows
    the single-row rules: its own probe length h_b = fd_step max(||theta_b||, 1), shrunk
    8x (up to 10 times, kept for the later iterations) while its probe gradient is not
    finite, and L_b = 0 for a zero or non-finite gradient or Hessian-vector product.

    While every row's gradient and probes are finite and non-zero (the usual case) the
    iteration runs without the per-row masks, the same arithmetic on every row: about
    half the [B, d] operations, which on a wide network are most of the cap's cost
    beyond its gradients. At the first zero or non-finite value the masked iteration
    takes over from the start (the probes are deterministic: the same values).
    ``ritz`` (default) as in :func:`top_curvature`: each row's L is the Rayleigh-Ritz
    estimate on its probed vectors (:func:`ritz_radius`), at least the power estimate."""
    gd = _grad_rows(potential, theta)
    gnorm = gd.norm(dim=-1)
    h = fd_step * theta.detach().norm(dim=-1).clamp_min(1.0)
    if bool((torch.isfinite(gnorm) & (gnorm > 0)).all()):
        u, L, fine = gd / gnorm[:, None], torch.zeros_like(gnorm), True
        probed, products = [], []
        for i in range(iters):
            probe = _grad_rows(potential, theta.detach() + h[:, None] * u)
            hv = (probe - gd) / h[:, None]
            L = hv.norm(dim=-1)
            if not bool((torch.isfinite(L) & (L > 0)).all()):
                fine = False
                break
            probed.append(u)
            products.append(hv)
            if i < iters - 1:
                u = hv / L[:, None]
        if fine:
            if ritz and iters > 1:
                L = torch.maximum(L, ritz_radius(torch.stack(probed, 1),
                                                 torch.stack(products, 1)))
            return L, gd
    return _top_curvature_rows_masked(potential, theta, iters, gd, gnorm, h, ritz)


def _top_curvature_rows_masked(potential, theta, iters, gd, gnorm, h, ritz=True):
    """:func:`top_curvature_rows` with every row's zero / non-finite rules applied
    (masks), from its gradient ``gd``, the norms ``gnorm`` and probe lengths ``h``
    (the Rayleigh-Ritz estimate, ``ritz``, on the rows alive at the end)."""
    alive = torch.isfinite(gnorm) & (gnorm > 0)
    safe = torch.where(alive, gnorm, torch.ones_like(gnorm))
    u = torch.where(alive[:, None], gd / safe[:, None], torch.zeros_like(gd))
    L = torch.zeros_like(gnorm)
    probed, products = [], []
    for i in range(iters):
        hv = torch.zeros_like(gd)
        todo = alive.clone()
        for _ in range(10):
            probe = _grad_rows(potential, theta.detach() + h[:, None] * u)
            trial = (probe - gd) / h[:, None]
            norm = trial.norm(dim=-1)
            hv = torch.where(todo[:, None], trial, hv)
            L = torch.where(todo, norm, L)
            bad = todo & ~torch.isfinite(norm)
            if not bool(bad.any()):
                break
            h = torch.where(bad, h / 8.0, h)
            todo = bad
        alive = alive & torch.isfinite(L) & (L > 0)
        L = torch.where(alive, L, torch.zeros_like(L))
        # a dead row's vectors are zeros (its L is 0 whatever the Ritz estimate)
        probed.append(torch.where(alive[:, None], u, torch.zeros_like(u)))
        products.append(torch.where(alive[:, None], hv, torch.zeros_like(hv)))
        if i < iters - 1:
            safe = torch.where(alive, L, torch.ones_like(L))
            u = torch.where(alive[:, None], hv / safe[:, None], torch.zeros_like(hv))
    if ritz and iters > 1:
        est = ritz_radius(torch.stack(probed, 1), torch.stack(products, 1))
        L = torch.where(alive, torch.maximum(L, est), L)
    return L, gd


def sgld_rows(potential, theta0: torch.Tensor, steps: int, lr: torch.Tensor,
              temp: float = 1.0, a_min: float = 1e-4, a_max: float = 1e3, burn=1,
              detrend: bool = False, noise: torch.Tensor | None = None,
              grad0: torch.Tensor | None = None):
    """:func:`sgld` for B independent chains at once: ``potential`` maps theta [B, d] to
    the B potentials (row b depending on theta[b] only), ``lr`` [B] the per-chain steps
    (already capped by the caller), ``noise`` [steps, B, d] the standard normal draws of
    the steps, step-major (step t's B draws one contiguous block; None when temp = 0),
    ``grad0`` [B, d] the gradient at theta0 when the caller has it. Same updates and
    summaries row by row -- Welford's running moments, burn-in, detrending,
    A = temp/var clipped to [a_min, a_max], a_max below two kept iterates -- and a chain
    whose step is not finite stops there (its later iterates are not taken; the others
    go on). Returns (mbar, A, mean, var, taken) with taken [B] the iterates each chain
    took."""
    theta0 = theta0.detach()
    theta = theta0.clone()
    bsz = theta.shape[0]
    if noise is not None and tuple(noise.shape) != (steps, bsz, theta.shape[-1]):
        # step-major: [B, steps, d] with B = steps would silently mix the episodes' draws
        raise ValueError(f"noise must be [steps, B, d] = [{steps}, {bsz}, {theta.shape[-1]}], "
                         f"got {list(noise.shape)}")
    noise_sd = (2.0 * lr * max(temp, 0.0)).sqrt()
    # while every chain is alive the rows share t and the count n: the running moments
    # are then :func:`sgld`'s own updates; after a row's first non-finite step, per row
    mom = _RunningMoments(theta, detrend)
    keep = mom.keep

    if 0.0 < burn < 1.0:
        burn = max(1, math.ceil(burn * steps))
    burn = min(burn, steps)
    if burn <= 0:
        keep(0, torch.zeros_like(theta))
    active = None          # None: every chain alive
    taken_all, taken = 0, None
    for t in range(1, steps + 1):
        grad = grad0 if (t == 1 and grad0 is not None) else _grad_rows(potential, theta)
        step = torch.addcmul(theta, lr[:, None], grad.detach(), value=-1.0)
        if noise is not None:
            step.addcmul_(noise_sd[:, None], noise[t - 1])
        if active is None and bool(torch.isfinite(step).all()):
            theta = step
            taken_all = t
            if t >= burn:
                keep(t, theta - theta0)
            continue
        if active is None:
            active = torch.ones(bsz, dtype=torch.bool, device=theta.device)
            taken = torch.full((bsz,), taken_all, dtype=torch.long, device=theta.device)
        active = active & torch.isfinite(step).all(-1)
        if not bool(active.any()):
            break
        theta = torch.where(active[:, None], step, theta)
        taken = torch.where(active, t, taken)
        if t >= burn:
            mom.keep_rows(t, theta - theta0, active.to(theta.dtype))
    if taken is None:
        taken = torch.full((bsz,), taken_all, dtype=torch.long, device=theta.device)
    # a chain that diverged before its first kept iterate: its last finite one
    if not mom.rows and mom.n == 0:
        keep(0, theta - theta0)
    elif mom.rows and bool((mom.n == 0).any()):
        mom.keep_rows(0, theta - theta0, (mom.n == 0).to(theta.dtype))
    mean = theta0 + mom.mx
    if not (mom.rows or detrend):
        # every row kept the same n iterates: one branch for all, no per-row masks
        # (the values of the general case below)
        if mom.n < 2:
            return mean, torch.full_like(mean, a_max), mean, torch.zeros_like(mean), taken
        var = mom.m2x / float(mom.n - 1)
        return (mean, (max(temp, 0.0) / var.clamp_min(1e-30)).clamp(a_min, a_max), mean,
                var, taken)
    n = mom.n if mom.rows else lr.new_full((bsz,), float(mom.n))
    dof = n - 2 if detrend else n - 1
    if detrend:
        m2t = mom.m2t if mom.rows else lr.new_full((bsz,), float(mom.m2t))
        rss = (mom.m2x - mom.ctx ** 2 / m2t.clamp_min(1e-300)[:, None]).clamp_min(0.0)
    else:
        rss = mom.m2x
    few = dof < 1
    var = torch.where(few[:, None], torch.zeros_like(mean), rss / dof.clamp_min(1.0)[:, None])
    A = (max(temp, 0.0) / var.clamp_min(1e-30)).clamp(a_min, a_max)
    A = torch.where(few[:, None], torch.full_like(A, a_max), A)
    return mean, A, mean, var, taken


# ---- a network as a function of its flat weight vector ---------------------------------
def _linear_plan(net: torch.nn.Module):
    """For a chain of ``nn.Linear`` layers and elementwise activations (``mlp(...)``, an
    ``nn.Sequential``): the layers as (weight index, bias index, weight shape) or an
    activation function, in order; None for any other network."""
    from .nn import ACT_FUNCTIONS, MLP

    seq = net.net if isinstance(net, MLP) else net
    if not isinstance(seq, torch.nn.Sequential):
        return None
    index = {id(p): i for i, p in enumerate(net.parameters())}
    plan = []
    for mod in seq:
        if type(mod) is torch.nn.Linear:
            plan.append((index[id(mod.weight)],
                         None if mod.bias is None else index[id(mod.bias)],
                         tuple(mod.weight.shape)))
        elif type(mod) in ACT_FUNCTIONS:
            plan.append(ACT_FUNCTIONS[type(mod)])
        elif not any(True for _ in mod.parameters()) and not any(True for _ in mod.buffers()):
            plan.append(mod.forward)  # another parameter-free activation (Softplus, GELU..)
        else:
            return None
    return plan


def _affine(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """h W^T + b: ``F.linear`` for one weight matrix [out, in]; for a batch of them
    [B, out, in] (with h [B, n, in], b [B, out]) one batched product per episode."""
    if weight.dim() == 2:
        return torch.nn.functional.linear(h, weight, bias)
    if bias is None:
        return torch.bmm(h, weight.transpose(-1, -2))
    return torch.baddbmm(bias[:, None, :], h, weight.transpose(-1, -2))


def _act_derivative(act, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """act'(z) elementwise at h = act(z), for :meth:`FlatNet.jacobian`: closed forms from
    the output for ReLU, tanh and sigmoid, autograd on the elementwise function otherwise
    (only for the elementwise functions of ``ACT_FUNCTIONS``)."""
    if act is torch.relu:
        return (h > 0).to(h.dtype)
    if act is torch.tanh:
        return 1 - h ** 2
    if act is torch.sigmoid:
        return h * (1 - h)
    zz = z.detach().requires_grad_(True)
    with torch.enable_grad():
        (d,) = torch.autograd.grad(act(zz).sum(), zz)
    return d


class FlatNet:
    """``net`` applied with the weights taken from a vector theta of length d; a batch of
    thetas [S, d] maps over S.

    A chain of Linear layers and activations (every ``mlp(...)``) is applied directly with
    ``F.linear`` on views of theta: ``torch.func.functional_call`` swaps the module's
    parameters on every call, which costs ~5x the forward pass of a small MLP and is paid on
    every SGLD / MAML inner gradient. Other networks (``cnn(...)``) use functional_call."""

    def __init__(self, net: torch.nn.Module):
        self.net = net
        self.names = [n for n, _ in net.named_parameters()]
        self.shapes = [p.shape for _, p in net.named_parameters()]
        self.numels = [p.numel() for _, p in net.named_parameters()]
        self.d = sum(self.numels)
        self.plan = _linear_plan(net)
        self.in_dim = getattr(net, "in_dim", None)
        self.offsets = [0]
        for n in self.numels:
            self.offsets.append(self.offsets[-1] + n)
        # jacobian's reverse pass multiplies by act'(z) elementwise: only for activations
        # known to act elementwise (not Softmax, LayerNorm, Dropout, ... that the forward
        # plan accepts as parameter-free modules)
        from .nn import ACT_FUNCTIONS

        elementwise = set(ACT_FUNCTIONS.values())
        self.reversible = self.plan is not None and all(
            isinstance(op, tuple) or op in elementwise for op in self.plan)


    def vector(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.net.parameters()])

    def params(self, theta: torch.Tensor) -> dict:
        return {n: t.view(s) for n, s, t in zip(self.names, self.shapes,
                                                 theta.split(self.numels), strict=True)}

    def _check_input(self, x: torch.Tensor) -> None:
        if self.in_dim is not None and (x.dim() == 0 or x.shape[-1] != self.in_dim):
            raise ValueError(f"network expects {self.in_dim} input features, got shape "
                             f"{tuple(x.shape)}")

    def _forward(self, theta: torch.Tensor, h: torch.Tensor, bshape: tuple = (),
                 saved: list | None = None) -> torch.Tensor:
        """The Linear/activation chain (``plan``) on inputs h under weights theta [d], or,
        with ``bshape`` (B,), theta [B, d] on h [B, n, in] (episode b's points under its
        own weights). ``saved`` collects what :meth:`jacobian`'s reverse pass needs:
        (input, weight, w, b) per Linear and act'(z) per activation."""
        parts = theta.split(self.numels, -1)
        h = h.to(theta.dtype)
        for op in self.plan:
            if isinstance(op, tuple):
                w, b, shape = op
                weight = parts[w].view(bshape + shape)
                if saved is not None:
                    saved.append((h, weight, w, b))
                h = _affine(h, weight, None if b is None else parts[b])
            else:
                z, h = h, op(h)
                if saved is not None:
                    saved.append(_act_derivative(op, z, h))
        return h

    def _direct(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self._forward(theta, x)

    def _check_batch(self, theta: torch.Tensor, x: torch.Tensor, who: str) -> None:
        if theta.dim() != 2 or x.dim() < 2 or x.shape[0] != theta.shape[0]:
            raise ValueError(f"FlatNet.{who}: weights [B, d] and inputs [B, ..., in], got "
                             f"{tuple(theta.shape)} and {tuple(x.shape)}")

    def jacobian(self, theta: torch.Tensor, x: torch.Tensor):
        """(J, f(theta, x)) with J = d f(theta, x) / d theta, shape x.shape[:-1] + (out, d),
        for one weight vector theta [d] and a chain of Linear layers and elementwise
        activations; None for other networks and for a theta with draws [S, d] (the
        caller falls back to autograd). :meth:`jacobian_batched` is the meta-batch's
        version (B episodes, each with its own inputs).

        One forward pass and one reverse pass vectorised over the points and the outputs
        instead of a batched backward through autograd's graph (which costs ~1.5x a
        gradient on the 2x32 MLP; this ~1x): with h_0 = x, z_l = W_l h_{l-1} + b_l and
        h_l = act(z_l), the sensitivities delta_L = I (out x out, per point),
        delta_{l-1} = (delta_l W_l) * act'(z_{l-1}), give dF/dW_l = delta_l h_{l-1}^T and
        dF/db_l = delta_l, F the network output (backpropagation with one row per output
        and point). act' is exact: ReLU 1[z > 0] (autograd's convention at 0), tanh
        1 - h^2, sigmoid h (1 - h), the other activations of ``ACT_FUNCTIONS`` by
        autograd on their elementwise function; a network with any other parameter-free
        module (Softmax, LayerNorm, Dropout: not elementwise) gives None."""
        if not self.reversible or theta.dim() != 1:
            return None
        self._check_input(x)
        return self._reverse(theta, x, ())

    def jacobian_batched(self, theta: torch.Tensor, x: torch.Tensor, scale: float = 1.0):
        """:meth:`jacobian` of a meta-batch: theta [B, d] with x [B, ..., in], episode b's
        points under episode b's weights (as :meth:`batched`) -> (scale J [B, ..., out, d],
        f [B, ..., out]); None for a network :meth:`jacobian` cannot reverse. ``scale``
        multiplies the Jacobian inside the reverse pass (a Fisher factor J/sigma without
        another pass over the [B, n out, d] result)."""
        self._check_batch(theta, x, "jacobian_batched")
        if not self.reversible:
            return None
        self._check_input(x)
        return self._reverse(theta, x, tuple(theta.shape[:1]), scale)

    def _reverse(self, theta: torch.Tensor, x: torch.Tensor, bshape: tuple,
                 scale: float = 1.0):
        """The forward and reverse passes of :meth:`jacobian` (``bshape`` () for one theta
        [d], (B,) for a meta-batch's [B, d]); delta_L = scale I."""
        theta = theta.detach()
        d = theta.shape[-1]
        offsets = self.offsets
        saved = []
        h = self._forward(theta, x.reshape(bshape + (-1, x.shape[-1])), bshape, saved)
        n, out = h.shape[-2:]
        # every weight is a weight or bias of one of the plan's Linear layers (any other
        # module with parameters makes the plan None), so the loop below writes every
        # column: no zero fill, a pass over the whole [n out, d] block of a wide network
        jac = theta.new_empty(bshape + (n, out, d))
        delta = torch.eye(out, dtype=theta.dtype, device=theta.device).mul_(scale).expand(
            bshape + (n, out, out))
        for i, item in enumerate(reversed(saved)):
            if not isinstance(item, tuple):
                delta = delta * item[..., :, None, :]
                continue
            hin, weight, w, b = item
            jac[..., offsets[w]:offsets[w + 1]] = (
                delta[..., :, None] * hin[..., :, None, None, :]).reshape(bshape + (n, out, -1))
            if b is not None:
                jac[..., offsets[b]:offsets[b + 1]] = delta
            if i == len(saved) - 1:
                break  # the input layer: the sensitivity to x is not needed
            # episode b's sensitivities times its own weight matrix: one [n out, .] block
            # per episode (a broadcast over the points would copy the weight n times)
            lead = delta.shape[:-1]
            delta = (delta.reshape(lead[:1] + (-1, delta.shape[-1])) @ weight).reshape(
                lead + (weight.shape[-1],)) if bshape else delta @ weight
        lead = tuple(x.shape[:-1])
        return jac.reshape(lead + (out, d)), h.reshape(lead + (out,))

    def batched(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Episode b's inputs under episode b's weights: theta [B, d], x [B, ..., in] ->
        [B, ..., out] (a meta-batch's support or query sets in one pass: one batched
        matrix product per layer, ``torch.baddbmm``, for a Linear/activation chain).
        Other networks (``cnn(...)``) are evaluated episode by episode and stacked:
        the same values, without the batching's saving."""
        self._check_batch(theta, x, "batched")
        if self.plan is None:
            return torch.stack([self(t, xi) for t, xi in zip(theta, x, strict=True)])
        self._check_input(x)
        h = self._forward(theta, x.reshape(theta.shape[0], -1, x.shape[-1]), (theta.shape[0],))
        return h.reshape(tuple(x.shape[:-1]) + (h.shape[-1],))

    def __call__(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if theta.dim() > 1:
            return torch.stack([self(t, x) for t in theta])
        if self.plan is not None:
            return self._direct(theta, x)
        return functional_call(self.net, self.params(theta), (x,))


class BoundNet:
    """The network with its weights fixed at one draw theta: what ``f`` is in the model
    after ``f ~ niw_meta(...)``."""

    def __init__(self, flat: FlatNet, theta: torch.Tensor):
        self.flat, self.theta = flat, theta

    def __call__(self, x):
        return self.flat(self.theta, x)


# ---- the prototype likelihood as a language function -----------------------------------
def prototype_logits(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor,
                     ways: int | None = None) -> torch.Tensor:
    """``prototype_logits(f(xs), ys, f(xq))``: ProtoNet's class scores (Snell et al. 2017),
    the episode likelihood METHODS.md §4 names for few-shot classification.

    Prototypes are the mean support embeddings of each class,
    p_c = sum_{k: y_k = c} e_k / #{k: y_k = c}, and the logit of query point q for class c
    is -||e_q - p_c||^2, so ``Categorical(logits=...)`` is softmax over negative squared
    distances. support [..., S, E], labels int [S] (0..ways-1), query [..., Q, E] ->
    [..., Q, ways]; ``ways`` defaults to max(labels) + 1. Leading dimensions (draws of the
    weights) broadcast; labels [B, S] with support [B, S, E] give each of B episodes its
    own prototypes.
    """
    k = int(labels.max()) + 1 if ways is None else int(ways)
    onehot = torch.nn.functional.one_hot(labels.long(), k).to(support.dtype)  # [..., S, K]
    counts = onehot.sum(-2).clamp_min(1.0)
    protos = (onehot.transpose(-1, -2) @ support) / counts[..., None]       # [..., K, E]
    diff = query[..., :, None, :] - protos[..., None, :, :]
    return -(diff ** 2).sum(-1)


# ---- the site the generated code calls -------------------------------------------------
@dataclass
class SiteConfig:
    name: str
    flat: FlatNet
    options: dict
    # learned global parameters after meta-training: m0, gamma0 (vectors), n0, l0 (floats)
    state: dict = field(default_factory=dict)


SITES: dict[str, SiteConfig] = {}

def prior(name: str, net: torch.nn.Module, n0=1.0, gamma0=1e6, l0=1.0, sgld_steps=3,
          sgld_lr=1e-3, sgld_temp=1.0, a_max=1e3, sgld_burn=0.5, sgld_power_iters=2,
          sgld_precision="auto", query_draws=1, query_mix="point", samples=2):
    """``f ~ niw_meta(...)``: the weights of ``f`` become one latent vector theta (site
    ``name``), theta ~ N(m0, diag 1/(n0 gamma0)) -- the episode prior at the mean of the
    global NIW (E[Lambda] = n0 gamma0); m0 starts at the network's initial weights.
    The ``meta`` inference method replaces this by the learned q(phi) and the one-time
    local posterior (see :mod:`ppl.infer.meta`; ``sgld_precision`` "variance", "fisher",
    "newton" or "gauss_newton" picks how the chain gives (mbar_i, A_i):
    :class:`ppl.infer.meta_trainers.NIW`; "auto", the default, picks "gauss_newton" for a
    Normal support likelihood and "variance" otherwise:
    :func:`ppl.infer.meta_trainers.auto_precision`; ``query_draws``, ``query_mix``: the
    meta-training query term, :meth:`ppl.infer.meta_trainers.NIW.query_term`)."""
    if sgld_precision not in PRECISIONS:
        raise ValueError(f"niw_meta: sgld_precision must be one of {', '.join(PRECISIONS)}, "
                         f"not {sgld_precision!r}")
    counts = {"sgld_steps": sgld_steps, "sgld_power_iters": sgld_power_iters,
              "query_draws": query_draws, "samples": samples}
    if float(sgld_burn) >= 1:  # a count of iterates (below 1: a fraction of the chain)
        counts["sgld_burn"] = sgld_burn
    for key, v in counts.items():
        v = v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or v != int(v):
            # int(2.5) would run a 2-step chain without a word
            raise ArgumentError(f"niw_meta: {key} must be a whole number, got {v}",
                                argument=key)
    opts = {"n0": float(n0), "gamma0": float(gamma0), "l0": float(l0),
            "sgld_steps": int(sgld_steps), "sgld_lr": float(sgld_lr),
            "sgld_temp": float(sgld_temp), "a_max": float(a_max),
            "sgld_burn": float(sgld_burn), "sgld_power_iters": int(sgld_power_iters),
            "sgld_precision": str(sgld_precision), "query_draws": int(query_draws),
            "query_mix": str(query_mix), "samples": int(samples)}
    cfg = SITES.get(name)
    if cfg is None or cfg.flat.net is not net:
        cfg = SiteConfig(name, FlatNet(net), opts)
        SITES[name] = cfg
    cfg.options = opts
    if cfg.state:
        m0, prec = cfg.state["m0"], cfg.state["n0"] * cfg.state["gamma0"]
    else:
        m0 = cfg.flat.vector()
        prec = torch.full_like(m0, opts["n0"] * opts["gamma0"])
    theta = pyro.sample(name, dist.Normal(m0, prec.rsqrt()).to_event(1))
    return BoundNet(cfg.flat, theta)


# ---- episode sources -------------------------------------------------------------------
class Episodes:
    """A source of episodes: ``sample(n, split, generator)`` -> dict of tensors
    xs [n, S, D], ys [n, S(, 1)], xq, yq. ``kind`` is "regression" or "classification"."""

    kind = "regression"
    ways = 0

    def sample(self, n, split="train", generator=None) -> dict:  # pragma: no cover
        raise NotImplementedError


class SineLine(Episodes):
    """METHODS.md §4: with probability 1/2 y = A sin(x + phi), A ~ U(0.1, 5),
    phi ~ U(0, pi), else y = a x + b, a, b ~ U(-3, 3); noise N(0, 0.3^2); x on a 50-point
    grid over [-5, 5]; ``shots`` support points, the rest are queries."""

    def __init__(self, shots=5, points=50, noise=0.3):
        self.shots, self.points, self.noise = shots, points, noise

    def sample(self, n, split="train", generator=None):
        dt = torch.get_default_dtype()

        def u(lo, hi, *shape):
            return lo + (hi - lo) * torch.rand(*shape, generator=generator, dtype=dt,
                                               device=cpu)

        cpu = "cpu"  # sources make CPU tensors (seeded by CPU generators); callers move them
        x = torch.linspace(-5, 5, self.points, dtype=dt, device=cpu).expand(n, -1)
        is_sine = torch.rand(n, 1, generator=generator, dtype=dt, device=cpu) < 0.5
        amp, phase = u(0.1, 5.0, n, 1), u(0.0, math.pi, n, 1)
        a, b = u(-3.0, 3.0, n, 1), u(-3.0, 3.0, n, 1)
        f = torch.where(is_sine, amp * torch.sin(x + phase), a * x + b)
        y = f + self.noise * torch.randn(n, self.points, generator=generator, dtype=dt,
                                         device=cpu)
        perm = torch.argsort(torch.rand(n, self.points, generator=generator, device=cpu), dim=1)
        xs_, ys_ = x.gather(1, perm), y.gather(1, perm)
        k = self.shots
        return {"xs": xs_[:, :k, None], "ys": ys_[:, :k], "xq": xs_[:, k:, None],
                "yq": ys_[:, k:]}


class Classes(Episodes):
    """N-way K-shot classification from a labelled pool: each episode picks ``ways``
    classes of the split (meta-train and meta-test classes are disjoint), ``shots``
    support and ``queries`` query points per class; labels are 0..ways-1 in episode
    order.

    A meta-validation split "val", held out of meta-train: ``val_classes`` > 0 moves the
    last that many meta-train classes to it (novel classes, as at meta-test; at least
    ``ways`` must remain on each side); else ``val_fraction`` > 0 takes a fixed random
    part of every meta-train class's points (that fraction, at least shots + queries,
    leaving at least shots + queries; ``val_seed`` fixes it) out of the "train" pool --
    the only choice when meta-train has fewer than 2 ``ways`` classes (8x8 digits: 5),
    and an easier task than meta-test (seen classes). The meta-test classes are never
    touched, so stopping points and learning rates chosen on "val" leave the meta-test
    estimate unbiased."""

    kind = "classification"

    def __init__(self, x, y, train_classes, test_classes, ways=5, shots=1, queries=15,
                 val_fraction=0.0, val_seed=0, val_classes=0):
        self.x, self.y = x.cpu(), y.cpu()
        self.split_classes = {"train": list(train_classes), "test": list(test_classes)}
        self.ways, self.shots, self.queries = ways, shots, queries
        self.by_class = {int(c): torch.nonzero(self.y == c).flatten()
                         for c in torch.unique(self.y)}
        self.pools = {"train": self.by_class, "val": self.by_class, "test": self.by_class}
        if val_classes > 0:
            train = self.split_classes["train"]
            if len(train) - val_classes < ways or val_classes < ways:
                raise ValueError(f"{len(train)} meta-train classes cannot give {val_classes} "
                                 f"validation classes with {ways} ways on each side")
            self.split_classes["train"] = train[: len(train) - val_classes]
            self.split_classes["val"] = train[len(train) - val_classes:]
        elif val_fraction > 0:
            need = shots + queries
            g = torch.Generator().manual_seed(val_seed)
            train, val = dict(self.by_class), {}
            for c in self.split_classes["train"]:
                idx = self.by_class[int(c)]
                n_val = max(math.ceil(val_fraction * len(idx)), need)
                if len(idx) - n_val < need:
                    raise ValueError(f"class {c} has {len(idx)} points: too few for a "
                                     f"validation part of {n_val} and {need} per episode")
                perm = idx[torch.randperm(len(idx), generator=g, device="cpu")]
                val[int(c)], train[int(c)] = perm[:n_val].sort()[0], perm[n_val:].sort()[0]
            self.pools = {"train": train, "val": val, "test": self.by_class}
            self.split_classes["val"] = list(train_classes)

    def sample(self, n, split="train", generator=None):
        if split not in self.split_classes:
            raise ValueError(f"no {split!r} split (a validation split needs val_fraction > 0)")
        classes = self.split_classes[split]
        pool = self.pools[split]
        if len(classes) < self.ways:
            raise ValueError(f"{split} split has {len(classes)} classes, fewer than "
                             f"ways={self.ways}")
        out = {k: [] for k in ("xs", "ys", "xq", "yq")}
        k, q = self.shots, self.queries
        for _ in range(n):
            pick = torch.randperm(len(classes), generator=generator, device="cpu")[: self.ways]
            xs, xq = [], []
            for c in pick.tolist():
                idx = pool[int(classes[c])]
                sel = idx[torch.randperm(len(idx), generator=generator, device="cpu")[: k + q]]
                xs.append(self.x[sel[:k]])
                xq.append(self.x[sel[k:]])
            out["xs"].append(torch.cat(xs))
            out["xq"].append(torch.cat(xq))
            out["ys"].append(torch.arange(self.ways, device="cpu").repeat_interleave(k))
            out["yq"].append(torch.arange(self.ways, device="cpu").repeat_interleave(q))
        return {key: torch.stack(v) for key, v in out.items()}


def digits(ways=5, shots=1, queries=15, test_classes=(5, 6, 7, 8, 9), val_fraction=0.0,
           val_classes=0, rotations=1):
    """sklearn's 8x8 digits (1797 images, shipped with scikit-learn): pixels / 16;
    digits 0-4 for meta-training and 5-9 for meta-testing by default (``val_fraction``,
    ``val_classes``: :class:`Classes`).

    ``rotations`` = R > 1 (at most 4) makes every meta-train digit at each of the first R
    quarter turns (0, 90, 180, 270 degrees; ``torch.rot90`` of the 8x8 image, exact) its
    own class, as Omniglot meta-training does (Santoro et al. 2016; Vinyals et al.
    2016): class 10 j + d is digit d turned j quarter turns anticlockwise (class d, j = 0,
    the digit itself), and the meta-train classes are ordered digit by digit, each digit's
    R rotations together. The meta-test classes stay the unrotated digits (the same
    classes, pools and episodes as ``rotations=1``). ``val_classes`` still counts classes
    and must be a multiple of R: it holds out the last ``val_classes / R`` meta-train
    digits at all their rotations, so no validation class is a rotation of a trained
    digit."""
    from sklearn.datasets import load_digits

    if not 1 <= rotations <= 4:
        raise ValueError(f"rotations must be 1 to 4 (quarter turns), got {rotations}")
    if val_classes % rotations:
        raise ValueError(f"val_classes={val_classes} is not a whole number of digits at "
                         f"{rotations} rotations each (a multiple of {rotations}): a "
                         "validation class would be a rotation of a trained digit")
    d = load_digits()
    x = torch.as_tensor(d.data, dtype=torch.get_default_dtype()) / 16.0
    y = torch.as_tensor(d.target)
    base = [c for c in range(10) if c not in test_classes]
    xs, ys = [x], [y]
    keep = torch.isin(y, torch.tensor(base))
    img = x[keep].reshape(-1, 8, 8)
    for j in range(1, rotations):
        xs.append(torch.rot90(img, j, dims=(1, 2)).reshape(-1, 64))
        ys.append(y[keep] + 10 * j)
    train = [c + 10 * j for c in base for j in range(rotations)]
    return Classes(torch.cat(xs), torch.cat(ys), train, list(test_classes), ways, shots,
                   queries, val_fraction, val_classes=val_classes)


def gaussian_classes(ways=5, shots=1, queries=15, dim=16, classes=40, per_class=60,
                     spread=1.0, seed=0, val_fraction=0.0, val_classes=0):
    """Synthetic Gaussian classes: class means ~ N(0, I_dim) (fixed by ``seed``), points
    mean + spread * N(0, I); the first half of the classes for meta-training, the rest
    for meta-testing (``val_fraction``: :class:`Classes`)."""
    g = torch.Generator().manual_seed(seed)
    dt = torch.get_default_dtype()
    means = torch.randn(classes, dim, generator=g, dtype=dt, device="cpu")
    x = means.repeat_interleave(per_class, 0) + spread * torch.randn(
        classes * per_class, dim, generator=g, dtype=dt, device="cpu")
    y = torch.arange(classes, device="cpu").repeat_interleave(per_class)
    half = classes // 2
    return Classes(x, y, range(half), range(half, classes), ways, shots, queries,
                   val_fraction, val_classes=val_classes)


class NpzEpisodes(Episodes):
    """Episodes from a file: arrays train_xs, train_ys, train_xq, train_yq, test_xs, ...
    each [episodes, points, dim] (ys may be [episodes, points]); integer ys mean
    classification. ``sample`` draws episodes with replacement. ``val_fraction`` > 0:
    the last ceil(fraction x episodes) train episodes are held out of "train" as the
    meta-validation split "val"."""

    def __init__(self, path, val_fraction=0.0):
        import numpy as np

        z = np.load(path)
        need = [f"{s}_{k}" for s in ("train", "test") for k in ("xs", "ys", "xq", "yq")]
        missing = [k for k in need if k not in z.files]
        if missing:
            raise ValueError(f"{path}: missing arrays {', '.join(missing)}")
        dt = torch.get_default_dtype()
        self.data = {}
        classify = np.issubdtype(z["train_ys"].dtype, np.integer)
        self.kind = "classification" if classify else "regression"
        for s in ("train", "test"):
            part = {}
            for k in ("xs", "ys", "xq", "yq"):
                a = torch.as_tensor(z[f"{s}_{k}"], device="cpu")
                if k in ("ys", "yq"):
                    if a.dim() == 3 and a.shape[-1] == 1:
                        a = a[..., 0]
                    a = a.long() if classify else a.to(dt)
                else:
                    a = a.to(dt)
                part[k] = a
            self.data[s] = part
        if classify:
            self.ways = int(self.data["train"]["ys"].max()) + 1
        if val_fraction > 0:
            n = self.data["train"]["xs"].shape[0]
            n_val = math.ceil(val_fraction * n)
            if not 0 < n_val < n:
                raise ValueError(f"{path}: {n} train episodes leave none for a validation "
                                 f"fraction {val_fraction}")
            tr = self.data["train"]
            self.data["train"] = {k: v[: n - n_val] for k, v in tr.items()}
            self.data["val"] = {k: v[n - n_val:] for k, v in tr.items()}

    def sample(self, n, split="train", generator=None):
        if split not in self.data:
            raise ValueError(f"{split!r} split: none (a validation split needs "
                             "val_fraction > 0)")
        part = self.data[split]
        idx = torch.randint(part["xs"].shape[0], (n,), generator=generator, device="cpu")
        return {k: v[idx] for k, v in part.items()}


def source(spec: str, shots=5, ways=5, queries=15, val_fraction=0.0,
           val_classes=0, rotations=1) -> Episodes:
    """``sine_line`` | ``digits`` | ``gauss`` | a path ending in ``.npz``.
    ``val_classes`` / ``val_fraction`` > 0 hold a meta-validation split "val" out of
    meta-train (classes: :class:`Classes`; .npz: the last train episodes); sine/line
    episodes are i.i.d. draws of a continuous family, so its "val" episodes are simply
    other draws (the caller's generator). ``rotations`` > 1: digits only (:func:`digits`)."""
    if rotations != 1 and spec != "digits":
        raise ValueError(f"rotations={rotations}: only the digits source has images to "
                         f"rotate, not {spec!r}")
    if spec.endswith(".npz"):
        return NpzEpisodes(spec, val_fraction)
    if spec == "sine_line":
        return SineLine(shots=shots)
    if spec == "digits":
        return digits(ways, shots, queries, val_fraction=val_fraction,
                      val_classes=val_classes, rotations=rotations)
    if spec == "gauss":
        return gaussian_classes(ways, shots, queries, val_fraction=val_fraction,
                                val_classes=val_classes)
    raise ValueError(f"unknown episode source {spec!r} (sine_line, digits, gauss or a .npz)")
