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

import bisect
import math

import numpy as np
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
    m = min(t, s), d = |t - s| (and m^2H / 2H on the diagonal). METHODS.md section 2."""
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
    g2 = math.gamma(H + 0.5) ** 2
    # one scipy ufunc call over the upper triangle (a Python double loop took minutes at
    # T = 2000); the matrix is symmetric
    iu, ju = np.triu_indices(len(tn), 1)
    m = np.minimum(tn[iu], tn[ju])
    d = np.abs(tn[iu] - tn[ju])
    tie = d == 0  # repeated time points: Cov = Var(m)
    dd = np.where(tie, 1.0, d)
    off = dd ** al * m ** (al + 1) / (al + 1) * hyp2f1(-al, al + 1, al + 2, -m / dd) / g2
    off = np.where(tie, m ** (2 * H) / (2 * H) / g2, off)
    C = np.empty((len(tn), len(tn)))
    C[iu, ju] = off
    C[ju, iu] = off
    np.fill_diagonal(C, tn ** (2 * H) / (2 * H) / g2)
    return torch.as_tensor(C, dtype=torch.float64, device=times.device)


def fbm_var(times: torch.Tensor, H, kind: int = 2) -> torch.Tensor:
    """Var B(t) of exact fBM: t^2H / (2H Gamma(H+1/2)^2) (type II), V_H t^2H (type I)."""
    t = times.to(torch.float64)
    H = float(H)
    if kind == 2:
        return t ** (2 * H) / (2 * H * math.gamma(H + 0.5) ** 2)
    if kind == 1:
        return float(v_h(H)) * t ** (2 * H)
    raise ValueError(f"kind must be 1 or 2, got {kind}")


def mafbm_var(times: torch.Tensor, w: torch.Tensor, gamma: torch.Tensor,
              kind: int = 2) -> torch.Tensor:
    """Exact variance of the MA-fBM B_hat(t) = w'Y(t) (the diagonal of :func:`mafbm_cov`
    in O(T K^2) memory instead of O(T^2 K^2))."""
    t = times.to(torch.float64)[:, None, None]
    g = gamma.to(torch.float64)
    C = _cov_ou(g[:, None], g[None, :], t, t, kind)
    return torch.einsum("i,tij,j->t", w.to(torch.float64), C, w.to(torch.float64))


# ---- sampling ---------------------------------------------------------------------
def _dh_sqrt_eigenvalues(n: int, H: float, h: float, dtype, device) -> torch.Tensor:
    """sqrt(lambda / 2n) of the circulant embedding of the type I fGn autocovariance
    r(k) = V_H h^2H / 2 (|k+1|^2H - 2|k|^2H + |k-1|^2H), lags 0..n then n-1..1."""
    k = torch.arange(n + 1, dtype=torch.float64, device=device)
    r = 0.5 * float(v_h(H)) * h ** (2 * H) * (
        (k + 1) ** (2 * H) - 2 * k ** (2 * H) + (k - 1).abs() ** (2 * H))
    c = torch.cat([r, r[1:n].flip(0)])
    lam = torch.fft.fft(c).real
    # fGn's circulant embedding is non-negative definite for every H in (0, 1) (Craigmile
    # 2003); what is left below zero is round-off
    if float(lam.min()) < -1e-10 * float(lam.abs().max()):
        raise RuntimeError(f"Davies-Harte: negative circulant eigenvalue {float(lam.min()):.3g}")
    return (lam.clamp(min=0) / (2 * n)).sqrt().to(dtype)


def _dh_paths(sq: torch.Tensor, z: torch.Tensor, n: int) -> torch.Tensor:
    """fBM paths from complex standard noise z [P, 2n] (real and imaginary parts
    independent N(0, 1)): the real and imaginary parts of FFT(sq * z)[:n] are two
    independent fGn sequences; their cumulative sums are the paths, [2P, n]."""
    x = torch.fft.fft(sq * z)[:, :n]
    return torch.cat([x.real, x.imag]).cumsum(-1)


def sample_fbm_davies_harte(n: int, H, n_paths: int, T: float = 1.0, generator=None,
                            dtype=torch.float64, device=None) -> torch.Tensor:
    """Exact type I (Mandelbrot-van Ness, stationary increments) fBM at t_k = k T / n,
    k = 1..n, by circulant embedding of fractional Gaussian noise (Davies & Harte 1987;
    Dietrich & Newsam 1997): with c the first row of the 2n x 2n circulant that embeds
    the Toeplitz covariance of the increments and lambda = FFT(c) >= 0, the first n entries
    of FFT(sqrt(lambda / 2n) (Z1 + i Z2)) have real and imaginary parts that are two
    independent draws of the increments, exactly. O(n log n) per pair of paths, against
    O(n^3) + O(n^2) per path for Cholesky. Type II (Riemann-Liouville) fBM has
    non-stationary increments, so no circulant embedding applies: its exact reference is
    :func:`sample_fbm_cholesky`. Var B(t) = V_H t^2H as in :func:`fbm_cov` (METHODS.md s2).
    Returns [n_paths, n] in ``dtype``."""
    n, H = int(n), float(H)
    if not 0 < H < 1:
        raise ValueError(f"H must be in (0, 1), got {H}")
    sq = _dh_sqrt_eigenvalues(n, H, float(T) / n, torch.float64, device)
    m = (n_paths + 1) // 2
    zr = torch.randn(m, 2 * n, dtype=torch.float64, device=device, generator=generator)
    zi = torch.randn(m, 2 * n, dtype=torch.float64, device=device, generator=generator)
    return _dh_paths(sq, torch.complex(zr, zi), n)[:n_paths].to(dtype)


def sample_fbm_cholesky(times: torch.Tensor, H, n_paths: int, kind: int = 2,
                        generator=None) -> torch.Tensor:
    """Exact fBM paths at ``times`` (> 0) by the Cholesky factor of :func:`fbm_cov`:
    O(T^3) once, O(T^2) per path. Returns [n_paths, T] float64."""
    C = fbm_cov(times, H, kind)
    L = torch.linalg.cholesky(C + 1e-12 * torch.eye(len(C), dtype=C.dtype, device=C.device))
    e = torch.randn(n_paths, len(C), dtype=C.dtype, device=C.device, generator=generator)
    return e @ L.T


# gamma * (time span of a scan block): the weights stay below e^span; float32 has 7
# digits, so its blocks are shorter
_SCAN_SPAN = {torch.float64: 10.0, torch.float32: 2.0}
_CHUNK = 1 << 22      # paths x times x K elements per chunk of the sampler


def _ou_scan(xi: torch.Tensor, y0: torch.Tensor, t: torch.Tensor, t_start: float,
             g: torch.Tensor) -> torch.Tensor:
    """Y(t_n) = e^(-g (t_n - t_start)) y0 + sum_(j<=n) e^(-g (t_n - t_j)) xi_j for all n,
    without a loop over time: within a block, Y = e^(-g (t - r)) (carry + cumsum(e^(g (t_j
    - r)) xi_j)) with r the block's reference time. Blocks span at most _SCAN_SPAN / g_max
    in time so the weights e^(g (t_j - r)) stay below e^10 in float64 (no overflow, no
    cancellation beyond 1e-11 relative), e^2 in float32. xi [P, T, K], y0 [P, K], t [T]
    -> [P, T, K], in xi's dtype."""
    span = _SCAN_SPAN.get(xi.dtype, 2.0)
    g, t = g.to(xi.dtype), t.to(xi.dtype)
    gmax = float(g.max())
    out = torch.empty_like(xi)
    carry, ref, s, n = y0, t_start, 0, len(t)
    tl = t.tolist()
    while s < n:
        e = max(s + 1, bisect.bisect_right(tl, ref + span / gmax, s, n))
        dtb = t[s:e, None] - ref                                     # [b, 1]
        if gmax * float(dtb[-1]) <= span:
            acc = (xi[:, s:e] * torch.exp(g * dtb)).cumsum(1)
            out[:, s:e] = torch.exp(-g * dtb) * (carry[:, None] + acc)
        else:   # one step longer than a block: the plain transition
            out[:, s] = torch.exp(-g * dtb[0]) * carry + xi[:, s]
            e = s + 1
        carry, ref, s = out[:, e - 1], tl[e - 1], e
    return out


def sample_mafbm(times: torch.Tensor, H, n_paths: int, K: int = 5, kind: int = 2,
                 gamma_max: float = 20.0, gamma_min: float | None = None,
                 generator=None, dtype=torch.float64) -> torch.Tensor:
    """MA-fBM paths at ``times`` (increasing, >= 0; B_hat(0) = 0 at t = 0) by the exact
    Gaussian transition of the K coupled OU processes:
    Y(t+h) = e^(-gamma h) Y(t) + xi, xi ~ N(0, S), S_ij = (1 - e^-(gi+gj)h) / (gi+gj)
    (one shared W, so xi is correlated over k). The linear recursion is summed by
    :func:`_ou_scan` (no loop over time steps), so the cost is O(T K^2) per path and
    linear in T. omega and the noise factors are computed in float64; the noise and the
    scan run in ``dtype``. Returns [n_paths, T] on ``times.device``. METHODS.md s2 (b)."""
    t = times.to(torch.float64)
    dev = t.device
    g = gamma_grid(K, gamma_max, gamma_min, device=dev)
    T_end = float(t[-1]) if float(t[-1]) > 0 else 1.0
    w, _ = omega(H, g, T_end, kind)
    w = w.detach().to(dtype)
    sm = g[:, None] + g[None, :]
    eye = torch.eye(K, dtype=torch.float64, device=dev)
    h = torch.diff(t, prepend=t.new_zeros(1))
    # the noise factor of every step, computed once per distinct step length
    key = torch.round(h / h.max().clamp(min=1e-300) * 1e12)
    uniq, inv = torch.unique(key, return_inverse=True)
    hu = torch.zeros(len(uniq), dtype=torch.float64, device=dev).scatter_(0, inv, h)
    S = -torch.expm1(-sm * hu[:, None, None]) / sm
    L = (torch.linalg.cholesky(S + 1e-14 * eye) * (hu > 0)[:, None, None]).to(dtype)
    L0 = torch.linalg.cholesky(1.0 / sm + 1e-12 * eye).to(dtype)
    chunk = max(1, _CHUNK // max(1, len(t) * K))
    out = []
    for p0 in range(0, n_paths, chunk):
        p = min(chunk, n_paths - p0)
        if kind == 1:
            y0 = torch.randn(p, K, dtype=dtype, device=dev, generator=generator) @ L0.T
        else:
            y0 = torch.zeros(p, K, dtype=dtype, device=dev)
        e = torch.randn(p, len(t), K, dtype=dtype, device=dev, generator=generator)
        if len(uniq) == 1:     # an even grid (the common case): one factor for all steps
            xi = e @ L[0].T if float(hu[0]) > 0 else torch.zeros_like(e)
        else:
            xi = torch.einsum("ptj,tkj->ptk", e, L[inv])
        y = _ou_scan(xi, y0, t, 0.0, g)
        out.append(((y - y0[:, None]) if kind == 1 else y) @ w)
    return torch.cat(out)
