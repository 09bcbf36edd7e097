"""Both tails of a univariate distribution in log space, (log P(X <= x), log P(X > x)):
the one implementation that the ``log_cdf``/``log_ccdf`` builtins (:mod:`.functions`) and
``Truncated``'s normaliser and draws (:mod:`.truncated`) read.

``log(cdf)`` and ``log1p(-cdf)`` lose a tail once its mass falls below the cdf's round-off
(about 1e-16: ``log1p(-cdf)`` of a Normal at 9 is -inf); the closed forms here keep both
tails far out:

- continuous (:func:`closed_tails`): Normal, LogNormal, HalfNormal (``log_ndtr``),
  Exponential, Uniform, Laplace, SoftLaplace, Logistic, Gumbel, Weibull, Cauchy,
  HalfCauchy, Pareto, GeneralizedPareto, Kumaraswamy, Gamma/Chi2 and InverseGamma (the
  regularised incomplete gamma, then its asymptotic series where that underflows below
  1e-308, with a gradient in the shape);
- discrete (:func:`discrete_tails`): Poisson (the incomplete gamma, then its series) and
  Geometric, exactly.

A value outside the support has the tails of the nearest end of it (0 and -inf).
"""

from __future__ import annotations

import math

import torch

from .dependent_support import support_ends

D = torch.distributions
LOG_HALF = -math.log(2.0)
_SERIES = 1000  # terms of a gamma tail series past gammainc's underflow
_ATAN_SERIES = -20.0  # below this, log atan(e^w) = w + log1p(-e^2w / 3) (next term e^4w)


def log1mexp(a):
    """log(1 - exp(a)) for a <= 0, accurate at both ends."""
    return torch.where(a > LOG_HALF, torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


def safe_log(p):
    """log p, -inf at 0, with a finite gradient where p > 0 (no NaN through a where)."""
    pos = p > 0
    return torch.where(pos, torch.log(torch.where(pos, p, 1.0)), -torch.inf)


def support_bounds(d):
    """(lower, upper) of ``d``'s support as numbers or tensors, None where unbounded."""
    return support_ends(d.support)


def _into_support(d, x):
    """``x`` clamped to ``d``'s support (a bound at infinity left out)."""
    lo, hi = support_bounds(d)
    if lo is not None:
        x = torch.maximum(x, torch.as_tensor(lo, dtype=x.dtype, device=x.device))
    if hi is not None:
        x = torch.minimum(x, torch.as_tensor(hi, dtype=x.dtype, device=x.device))
    return x


def _log_atan_exp(w):
    """log atan(e^w), exact where e^w underflows (the SoftLaplace tail)."""
    far = w < _ATAN_SERIES
    near = torch.log(torch.atan(torch.exp(torch.where(far, _ATAN_SERIES, w))))
    return torch.where(far, w + torch.log1p(-torch.exp(2 * w) / 3), near)


def _soft_laplace_tail(w):
    """log(2/pi atan(e^w)): SoftLaplace's log F at w = z, log S at w = -z (at most 0,
    which round-off of log(2/pi) + log(pi/2) passed by 3e-8 in float32)."""
    return torch.clamp(math.log(2 / math.pi) + _log_atan_exp(w), max=0.0)


def closed_tails(d, x):
    """(log P(X <= x), log P(X > x)) of a continuous ``d`` in a closed form that keeps
    both tails; None for a distribution without one (its cdf is then used)."""
    if not isinstance(d, _CLOSED):
        return None
    x = _into_support(d, x)
    if isinstance(d, (D.Normal, D.LogNormal)):
        z = ((torch.log(x) if isinstance(d, D.LogNormal) else x) - d.loc) / d.scale
        return torch.special.log_ndtr(z), torch.special.log_ndtr(-z)
    if isinstance(d, D.HalfNormal):  # P(X > x) = 2 (1 - Phi(x / s)), x >= 0
        s = math.log(2.0) + torch.special.log_ndtr(-x / d.scale)
        return log1mexp(s), s
    if isinstance(d, D.Exponential):
        s = -d.rate * x
        return log1mexp(s), s
    if isinstance(d, D.Uniform):  # F = (x - low) / w, S = (high - x) / w exactly
        log_w = torch.log(d.high - d.low)
        return safe_log(x - d.low) - log_w, safe_log(d.high - x) - log_w
    if isinstance(d, D.Laplace):
        z = (x - d.loc) / d.scale
        small = LOG_HALF - z.abs()  # the tail on z's side
        big = torch.log1p(-0.5 * torch.exp(-z.abs()))
        return torch.where(z < 0, small, big), torch.where(z < 0, big, small)
    if isinstance(d, _pyro("SoftLaplace")):  # F = 2/pi atan(e^z), S = 2/pi atan(e^-z)
        z = (x - d.loc) / d.scale
        return _soft_laplace_tail(z), _soft_laplace_tail(-z)
    if isinstance(d, _pyro("Logistic")):
        z = (x - d.loc) / d.scale
        return torch.nn.functional.logsigmoid(z), torch.nn.functional.logsigmoid(-z)
    if isinstance(d, D.Gumbel):
        z = (x - d.loc) / d.scale
        e = -torch.exp(-z)  # log F; log S = log(1 - e^e), -z - e^-z / 2 where e^-z underflows
        return e, torch.where(z > 30, -z + e / 2, log1mexp(e))
    if isinstance(d, D.Weibull):
        s = -torch.pow(x / d.scale, d.concentration)
        return log1mexp(s), s
    if isinstance(d, D.Cauchy):
        z = (x - d.loc) / d.scale
        return (torch.log(torch.atan2(torch.ones_like(z), -z) / math.pi),
                torch.log(torch.atan2(torch.ones_like(z), z) / math.pi))
    if isinstance(d, D.HalfCauchy):
        z = x / d.scale
        return (safe_log(2 / math.pi * torch.atan(z)),
                torch.log(2 / math.pi * torch.atan2(torch.ones_like(z), z)))
    if isinstance(d, D.Pareto):
        s = d.alpha * (torch.log(d.scale) - torch.log(x))
        return log1mexp(s), s
    if isinstance(d, D.GeneralizedPareto):  # S = (1 + xi z)^(-1/xi), e^-z at xi = 0
        s = d.log_survival_function(x)
        return log1mexp(s), s
    if isinstance(d, D.Kumaraswamy):
        s = d.concentration0 * torch.log1p(-torch.pow(x, d.concentration1))
        return log1mexp(s), s
    if isinstance(d, D.InverseGamma):  # P(X <= x) = P(G >= rate / x)
        lo, up = _gamma_tails(d.concentration, d.rate / x)
        return up, lo
    return _gamma_tails(d.concentration, d.rate * x)  # Gamma, Chi2


def _pyro(name: str):
    import pyro.distributions as dist
    return getattr(dist, name)


_CLOSED = (D.Normal, D.LogNormal, D.HalfNormal, D.Exponential, D.Uniform, D.Laplace,
           _pyro("SoftLaplace"), _pyro("Logistic"), D.Gumbel, D.Weibull, D.Cauchy,
           D.HalfCauchy, D.Pareto, D.GeneralizedPareto, D.Kumaraswamy, D.InverseGamma,
           D.Gamma)


def continuous_tails(d, x):
    """(log F(x), log S(x)) of a continuous ``d``: :func:`closed_tails`, else from its cdf
    (exact until a tail falls to the cdf's round-off)."""
    found = closed_tails(d, x)
    if found is not None:
        return found
    c = d.cdf(x)
    return safe_log(c), safe_log(1 - c)


def has_discrete_tails(d) -> bool:
    return isinstance(d, (D.Poisson, D.Geometric))


def discrete_tails(d, k):
    """(log P(X <= k), log P(X > k)) at integers k for Poisson (incomplete gamma, and the
    tail series where it underflows) and Geometric (exactly)."""
    if isinstance(d, D.Geometric):
        log_q = torch.log1p(-d.probs)
        s = torch.where(k >= 0, (torch.clamp(k, min=0.0) + 1) * log_q, 0.0)
        return torch.where(k >= 0, log1mexp(s), -torch.inf), s
    kk = torch.clamp(k, min=0.0)
    # P(X <= k) = Q(k + 1, lam), P(X > k) = P(k + 1, lam)
    s, f = _gamma_tails(kk + 1, d.rate)
    return torch.where(k >= 0, f, -torch.inf), torch.where(k >= 0, s, 0.0)


def _gamma_tails(a, y):
    """(log P(G <= y), log P(G > y)) for G ~ Gamma(a, 1): the regularised incomplete
    gamma, and past its underflow (below 1e-308) the series
    y^(a-1) e^-y / Gamma(a) * sum_n (a-1)...(a-n) / y^n (upper tail: asymptotic, cut at
    its smallest term; exact for a whole a) and
    y^a e^-y / Gamma(a+1) * sum_n y^n / ((a+1)...(a+n)) (lower tail)."""
    a, y = torch.broadcast_tensors(torch.as_tensor(a, dtype=y.dtype, device=y.device),
                                   torch.clamp(y, min=0.0))
    lo, up = safe_log(_inc_gamma(a, y, False)), safe_log(_inc_gamma(a, y, True))
    if bool(torch.isinf(up).any()) and bool((y > 0).any()):
        ys, n = _series_setup(y)
        # cut where the terms stop falling (exact for a whole a: they reach 0 at n = a)
        ratio = torch.where((a - n).abs() < ys, (a - n) / ys, 0.0)
        terms = torch.cat([torch.ones_like(ratio[:1]), torch.cumprod(ratio, 0)]).sum(0)
        tail = ((a - 1) * torch.log(ys) - ys - torch.lgamma(a)
                + safe_log(terms.clamp(min=0.0)))
        up = torch.where(torch.isinf(up) & (y > 0), tail, up)
    if bool(torch.isinf(lo).any()) and bool((y > 0).any()):
        ys, n = _series_setup(y)
        terms = torch.cumsum(torch.log(ys) - torch.log(a + n), 0)
        series = torch.logsumexp(torch.cat([torch.zeros_like(terms[:1]), terms]), 0)
        tail = a * torch.log(ys) - ys - torch.lgamma(a + 1) + series
        lo = torch.where(torch.isinf(lo) & (y > 0), tail, lo)
    return lo, up


def _series_setup(y):
    """For :func:`_gamma_tails`' series: ``y`` with 1 where it is 0 (its log finite), and
    the term numbers 1.._SERIES along a new leading dimension."""
    n = torch.arange(1, _SERIES + 1, dtype=y.dtype, device=y.device)
    return torch.where(y > 0, y, 1.0), n.reshape((-1,) + (1,) * y.dim())


class _IncGamma(torch.autograd.Function):
    """The regularised incomplete gamma P(a, y) (or Q), with a gradient in ``a`` too:
    torch has none ('the derivative for igammac: input is not implemented'), which
    stopped NUTS on ``Truncated(Gamma(a, 1), low=1)`` with a latent ``a``. d/da by a
    central difference (relative step 1e-6 in float64, 1e-3 in float32), d/dy exactly."""

    @staticmethod
    def forward(ctx, a, y, upper):
        ctx.upper = upper
        ctx.save_for_backward(a, y)
        return (torch.special.gammaincc if upper else torch.special.gammainc)(a, y)

    @staticmethod
    def backward(ctx, g):
        a, y = ctx.saved_tensors
        f = torch.special.gammaincc if ctx.upper else torch.special.gammainc
        ga = gy = None
        if ctx.needs_input_grad[0]:
            rel = 1e-6 if a.dtype == torch.float64 else 1e-3
            h = torch.minimum(rel * torch.clamp(a, min=1.0), a / 2)
            ga = (g * (f(a + h, y) - f(a - h, y)) / (2 * h)).sum_to_size(a.shape)
        if ctx.needs_input_grad[1]:
            ys = torch.where(y > 0, y, 1.0)
            dens = torch.where(y > 0, torch.exp((a - 1) * torch.log(ys) - ys - torch.lgamma(a)),
                               0.0)
            gy = (g * (-dens if ctx.upper else dens)).sum_to_size(y.shape)
        return ga, gy, None


def _inc_gamma(a, y, upper):
    if a.requires_grad:
        return _IncGamma.apply(a, y, upper)
    return (torch.special.gammaincc if upper else torch.special.gammainc)(a, y)
