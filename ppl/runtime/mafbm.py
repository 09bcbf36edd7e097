"""Markov approximation of fractional Brownian motion (MA-fBM), and exact fBM for reference.

The maths is ``../shared/METHODS.md`` section 2 (Daems, Opper, Crevecoeur, Birdal, ICLR 2024):

* K Ornstein-Uhlenbeck processes driven by one Brownian motion,
  ``dY_k = -gamma_k Y_k dt + dW``, on a geometric grid of ``gamma``;
* type II (Riemann-Liouville) ``B(t) ~ sum_k omega_k Y_k(t)`` with ``Y(0) = 0``;
  type I (Mandelbrot-van Ness) ``B(t) ~ sum_k omega_k (Y_k(t) - Y_k(0))`` with stationary
  ``Y(0) ~ N(0, Sigma)``, ``Sigma_ij = 1 / (gamma_i + gamma_j)``;
* the weights minimise ``int_0^T E(B - B_hat)^2 dt = w'Aw - 2b'w + c``: ``A w = b``, solved
  in float64 (A is ill-conditioned), with relative error ``eps = 1 - b'w / c``.

``b`` needs the regularised incomplete gamma functions ``P(a, z)`` and ``e^z Q(a, z)`` at
``a = H + 1/2, H + 3/2``. ``torch.special.gammainc`` has no gradient in ``a``, so
:func:`gammainc_p` and :func:`gammaincc_scaled` are autograd functions with an explicit
backward: ``dP/da`` from the power series ``P = sum_n z^(a+n) e^-z / Gamma(a+n+1)`` when
``z < a + 1`` and from Legendre's continued fraction of ``Q`` otherwise (the same split as
Numerical Recipes' ``gammp``); ``e^z Q`` for ``z >= a + 1`` is evaluated by the continued
fraction directly, so it never overflows. ``d omega / dH`` then follows by autograd through
``torch.linalg.solve``.
"""

from __future__ import annotations

import math

import torch

_SERIES_TERMS = 60   # z < a + 1 <= 3.5 here: z^n / n! < 1e-20 by n = 60
_CF_TERMS = 300      # at most; the loop stops once every element has converged
_TINY = 1e-300


# ---- incomplete gamma functions with a gradient in a ---------------------------------
def _p_series(a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """P(a, z) = sum_n exp((a+n) log z - z - lgamma(a+n+1)); differentiable in a and z."""
    n = torch.arange(_SERIES_TERMS, dtype=a.dtype, device=a.device)
    an = a.unsqueeze(-1) + n
    lz = torch.log(z).unsqueeze(-1)
    terms = torch.exp(an * lz - z.unsqueeze(-1) - torch.lgamma(an + 1))
    return terms.sum(-1)


def _log_scaled_q_cf(a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log(e^z Q(a, z)) by the modified Lentz continued fraction (valid for z >= a + 1).

    Gamma(a, z) = e^-z z^a / (z+1-a - 1(1-a)/(z+3-a - 2(2-a)/(z+5-a - ...))).
    Differentiable in a and z (fixed number of terms).
    """
    b = z + 1.0 - a
    if b.numel() == 0:
        return b
    c = torch.full_like(b, 1.0 / _TINY)
    d = 1.0 / b
    h = d
    for i in range(1, _CF_TERMS + 1):
        an = -i * (i - a)
        b = b + 2.0
        d = an * d + b
        d = torch.where(d.abs() < _TINY, torch.full_like(d, _TINY), d)
        c = b + an / c
        c = torch.where(c.abs() < _TINY, torch.full_like(c, _TINY), c)
        d = 1.0 / d
        delta = d * c
        h = h * delta
        if i % 8 == 0 and float((delta.detach() - 1).abs().max()) < 1e-16:
            break
    return a * torch.log(z) - torch.lgamma(a) + torch.log(h)


def _dp_da(a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """dP(a, z)/da elementwise (a, z broadcast, z > 0)."""
    a, z = torch.broadcast_tensors(a, z)
    out = torch.empty_like(a)
    small = z < a + 1
    if small.any():
        a_s, z_s = a[small], z[small]
        n = torch.arange(_SERIES_TERMS, dtype=a.dtype, device=a.device)
        an = a_s.unsqueeze(-1) + n
        lz = torch.log(z_s).unsqueeze(-1)
        terms = torch.exp(an * lz - z_s.unsqueeze(-1) - torch.lgamma(an + 1))
        out[small] = (terms * (lz - torch.digamma(an + 1))).sum(-1)
    big = ~small
    if big.any():
        with torch.enable_grad():
            a_b = a[big].detach().requires_grad_(True)
            z_b = z[big].detach()
            q = torch.exp(_log_scaled_q_cf(a_b, z_b) - z_b)
            (g,) = torch.autograd.grad(q.sum(), a_b)
        out[big] = -g
    return out


def _sum_to(g: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Undo broadcasting for a gradient."""
    while g.dim() > len(shape):
        g = g.sum(0)
    for i, s in enumerate(shape):
        if s == 1 and g.shape[i] != 1:
            g = g.sum(i, keepdim=True)
    return g


class _GammaIncP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, z):
        ctx.save_for_backward(a, z)
        return torch.special.gammainc(a, z)

    @staticmethod
    def backward(ctx, grad):
        a, z = ctx.saved_tensors
        ga = gz = None
        if ctx.needs_input_grad[0]:
            ga = _sum_to(grad * _dp_da(a, z), a.shape)
        if ctx.needs_input_grad[1]:
            dens = torch.exp((a - 1) * torch.log(z) - z - torch.lgamma(a))
            gz = _sum_to(grad * dens, z.shape)
        return ga, gz


class _GammaIncCScaled(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, z):
        a_, z_ = torch.broadcast_tensors(a, z)
        out = torch.empty_like(a_)
        small = z_ < a_ + 1
        out[small] = torch.exp(z_[small]) * torch.special.gammaincc(a_[small], z_[small])
        big = ~small
        out[big] = torch.exp(_log_scaled_q_cf(a_[big], z_[big]))
        ctx.save_for_backward(a, z, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        a, z, out = ctx.saved_tensors
        ga = gz = None
        if ctx.needs_input_grad[0]:
            a_, z_ = torch.broadcast_tensors(a, z)
            d = torch.empty_like(out)
            small = z_ < a_ + 1
            d[small] = -torch.exp(z_[small]) * _dp_da(a_[small], z_[small])
            big = ~small
            if big.any():
                with torch.enable_grad():
                    a_b = a_[big].detach().requires_grad_(True)
                    s = torch.exp(_log_scaled_q_cf(a_b, z_[big].detach()))
                    (g,) = torch.autograd.grad(s.sum(), a_b)
                d[big] = g
            ga = _sum_to(grad * d, a.shape)
        if ctx.needs_input_grad[1]:
            # d/dz e^z Q(a, z) = e^z Q(a, z) - z^(a-1) / Gamma(a)
            dz = out - torch.exp((a - 1) * torch.log(z) - torch.lgamma(a))
            gz = _sum_to(grad * dz, z.shape)
        return ga, gz


def gammainc_p(a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Regularised lower incomplete gamma P(a, z), differentiable in both a and z (z > 0)."""
    a, z = torch.as_tensor(a), torch.as_tensor(z)
    a, z = torch.broadcast_tensors(a.to(z.dtype) if a.dtype != z.dtype else a, z)
    return _GammaIncP.apply(a, z)


def gammaincc_scaled(a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """e^z Q(a, z) (Q the regularised upper incomplete gamma), overflow-free and
    differentiable in a and z (z > 0)."""
    a, z = torch.as_tensor(a), torch.as_tensor(z)
    a, z = torch.broadcast_tensors(a.to(z.dtype) if a.dtype != z.dtype else a, z)
    return _GammaIncCScaled.apply(a, z)


# ---- the gamma grid and optimal weights -------------------------------------------
def gamma_grid(K: int, gamma_max: float = 20.0, gamma_min: float | None = None, *,
               dtype=torch.float64, device=None) -> torch.Tensor:
    """Geometric grid gamma_k = r^(k-n), n = (K+1)/2, r = gamma_max^(2/(K-1)) (so
    gamma in [1/gamma_max, gamma_max]); with ``gamma_min`` given, geometric on
    [gamma_min, gamma_max]. METHODS.md section 2."""
    K = int(K)
    if K < 1:
        raise ValueError(f"K must be at least 1, got {K}")
    lo = 1.0 / gamma_max if gamma_min is None else float(gamma_min)
    if not 0 < lo <= gamma_max:
        raise ValueError(f"need 0 < gamma_min <= gamma_max, got {lo}, {gamma_max}")
    if K == 1:
        return torch.tensor([math.sqrt(lo * gamma_max)], dtype=dtype, device=device)
    return torch.logspace(math.log10(lo), math.log10(gamma_max), K, dtype=dtype,
                          device=device)


def v_h(H):
    """V_H = 1 / (Gamma(2H+1) sin(pi H)): Var B(t) = V_H t^(2H) for type I."""
    H = torch.as_tensor(H, dtype=torch.float64)
    return 1.0 / (torch.exp(torch.lgamma(2 * H + 1)) * torch.sin(math.pi * H))


def abc(H, gamma: torch.Tensor, T: float = 1.0, kind: int = 2):
    """A, b, c of the quadratic ``int_0^T E(B - sum w_k Y_k)^2 dt = w'Aw - 2b'w + c``
    (METHODS.md section 2, closed forms for type I and II). Float64; differentiable in H."""
    g = gamma.to(torch.float64)
    H = torch.as_tensor(H, dtype=torch.float64, device=g.device)
    T = float(T)
    a = H + 0.5
    gi, gj = g.unsqueeze(-1), g.unsqueeze(-2)
    s = gi + gj
    if kind == 2:
        A = (T - (1 - torch.exp(-s * T)) / s) / s
        b = (T * g ** (-a) * gammainc_p(a, g * T)
             - a * g ** (-(a + 1)) * gammainc_p(a + 1, g * T))
        c = T ** (2 * H + 1) / (2 * H * (2 * H + 1) * torch.exp(2 * torch.lgamma(a)))
    elif kind == 1:
        ei = (1 - torch.exp(-g * T)) / g
        A = (2 * T - ei.unsqueeze(-1) - ei.unsqueeze(-2)) / s
        b = (2 * T * g ** (-a) - T ** a / (g * torch.exp(torch.lgamma(a + 1)))
             + (torch.exp(-g * T) - gammaincc_scaled(a, g * T)) * g ** (-(a + 1)))
        c = v_h(H) * T ** (2 * H + 1) / (2 * H + 1)
    else:
        raise ValueError(f"kind must be 1 or 2, got {kind}")
    return A, b, c


def omega(H, gamma: torch.Tensor, T: float = 1.0, kind: int = 2):
    """Optimal weights ``omega`` (solve A omega = b in float64) and the relative error
    ``eps = 1 - b'omega / c``. Differentiable in H (see the module docstring)."""
    A, b, c = abc(H, gamma, T, kind)
    w = torch.linalg.solve(A, b)
    eps = 1 - (b * w).sum() / c
    return w, eps


# ---- covariances ------------------------------------------------------------------
def _cov_ou(gi, gj, t, s, kind):
    """E[Yi(t) Yj(s)] (type II, Y(0)=0) or E[(Yi(t)-Yi(0))(Yj(s)-Yj(0))] (type I)."""
    sm = gi + gj
    if kind == 2:
        m = torch.minimum(t, s)
        return torch.exp(-gi * (t - m) - gj * (s - m)) * (-torch.expm1(-sm * m)) / sm

    def c(tau):  # stationary E[Yi(tau) Yj(0)]
        return torch.where(tau >= 0, torch.exp(-gi * tau.clamp(min=0)),
                           torch.exp(gj * tau.clamp(max=0))) / sm
    z = torch.zeros_like(t)
    return c(t - s) - c(t) - c(-s) + c(z)


def mafbm_cov(times: torch.Tensor, w: torch.Tensor, gamma: torch.Tensor,
              kind: int = 2) -> torch.Tensor:
    """Exact covariance matrix of the MA-fBM B_hat at ``times`` (float64)."""
    t = times.to(torch.float64)
    tt, ss = t[:, None, None, None], t[None, :, None, None]
    gi, gj = gamma[None, None, :, None], gamma[None, None, None, :]
    C = _cov_ou(gi, gj, tt, ss, kind)
    return torch.einsum("i,tsij,j->ts", w, C, w)


def fbm_cov(times: torch.Tensor, H, kind: int = 2) -> torch.Tensor:
    """Exact covariance of fBM at ``times`` (> 0). Type I: V_H/2 (t^2H + s^2H - |t-s|^2H).
    Type II (Riemann-Liouville): Gamma(H+1/2)^-2 int_0^min (t-u)^(H-1/2) (s-u)^(H-1/2) du
    = Gamma(H+1/2)^-2 d^al m^(al+1) / (al+1) 2F1(-al, al+1; al+2; -m/d), al = H - 1/2,
    m = min(t, s), d = |t - s| (and m^2H / 2H on the diagonal)."""
    t = times.to(torch.float64)
    H = float(H)
    if kind == 1:
        tt, ss = t[:, None], t[None, :]
        return 0.5 * float(v_h(H)) * (tt ** (2 * H) + ss ** (2 * H) - (tt - ss).abs() ** (2 * H))
    if kind != 2:
        raise ValueError(f"kind must be 1 or 2, got {kind}")
    from scipy.special import hyp2f1

    tn = t.cpu().numpy()
    al = H - 0.5
    n = len(tn)
    import numpy as np

    C = np.empty((n, n))
    g2 = math.gamma(H + 0.5) ** 2
    for i in range(n):
        for j in range(n):
            m, d = min(tn[i], tn[j]), abs(tn[i] - tn[j])
            if d == 0:
                C[i, j] = m ** (2 * H) / (2 * H) / g2
            else:
                C[i, j] = d ** al * m ** (al + 1) / (al + 1) * hyp2f1(-al, al + 1, al + 2,
                                                                      -m / d) / g2
    return torch.as_tensor(C, dtype=torch.float64, device=times.device)


# ---- sampling ---------------------------------------------------------------------
def sample_fbm_cholesky(times: torch.Tensor, H, n_paths: int, kind: int = 2,
                        generator=None) -> torch.Tensor:
    """Exact fBM paths at ``times`` (> 0) by the Cholesky factor of :func:`fbm_cov`:
    O(T^3) once, O(T^2) per path. Returns [n_paths, T] float64."""
    C = fbm_cov(times, H, kind)
    L = torch.linalg.cholesky(C + 1e-12 * torch.eye(len(C), dtype=C.dtype, device=C.device))
    e = torch.randn(n_paths, len(C), dtype=C.dtype, device=C.device, generator=generator)
    return e @ L.T


def sample_mafbm(times: torch.Tensor, H, n_paths: int, K: int = 5, kind: int = 2,
                 gamma_max: float = 20.0, gamma_min: float | None = None,
                 generator=None) -> torch.Tensor:
    """MA-fBM paths at ``times`` (increasing, >= 0; B_hat(0) = 0 at t = 0) by the exact
    Gaussian transition of the K coupled OU processes:
    Y(t+h) = e^(-gamma h) Y(t) + xi, xi ~ N(0, S), S_ij = (1 - e^-(gi+gj)h) / (gi+gj)
    (one shared W, so xi is correlated over k). O(T K^2) per path. Returns [n_paths, T]."""
    t = times.to(torch.float64)
    dev = t.device
    g = gamma_grid(K, gamma_max, gamma_min, device=dev)
    T_end = float(t[-1]) if float(t[-1]) > 0 else 1.0
    w, _ = omega(H, g, T_end, kind)
    w = w.detach()
    sm = g[:, None] + g[None, :]
    eye = torch.eye(K, dtype=torch.float64, device=dev)
    if kind == 1:
        L0 = torch.linalg.cholesky(1.0 / sm + 1e-12 * eye)
        y = torch.randn(n_paths, K, dtype=torch.float64, device=dev, generator=generator) @ L0.T
    else:
        y = torch.zeros(n_paths, K, dtype=torch.float64, device=dev)
    y0 = y.clone()
    prev = torch.tensor(0.0, dtype=torch.float64, device=dev)
    out = []
    chol = {}
    for k in range(len(t)):
        h = float(t[k] - prev)
        if h > 0:
            key = round(h, 15)
            if key not in chol:
                S = -torch.expm1(-sm * h) / sm
                chol[key] = (torch.exp(-g * h), torch.linalg.cholesky(S + 1e-14 * eye))
            decay, L = chol[key]
            e = torch.randn(n_paths, K, dtype=torch.float64, device=dev, generator=generator)
            y = y * decay + e @ L.T
        prev = t[k]
        out.append((y - y0) @ w if kind == 1 else y @ w)
    return torch.stack(out, -1)
