"""``Truncated(D, low=L, high=H)``: Stan's ``T[L, H]``, a univariate distribution
renormalised to the interval [L, H] (either bound optional).

The log density is ``D.log_prob(x) - log(F(H) - F(L))`` inside the interval and -inf
outside; the support is the interval (intersected with D's own), so samplers move a
truncated latent on the unconstrained scale through ``biject_to(support)``.

- The normaliser is computed in log space from D's two tails, log F (below) and log S
  (above): a difference of upper-tail masses when the interval lies above D's median, of
  lower-tail masses otherwise, so an interval far out in a tail keeps its precision.
  Closed forms of both tails (:func:`_tails`): Normal, LogNormal, HalfNormal (``log_ndtr``),
  Exponential, Laplace, Logistic, Gumbel, Weibull, Cauchy, HalfCauchy, Pareto, Kumaraswamy,
  Gamma/Chi2 and InverseGamma (the regularised incomplete gamma, with its asymptotic series
  where that underflows); Poisson (incomplete gamma, with the tail series past underflow)
  and Geometric exactly. The other continuous bases use ``log(cdf)``, exact until the
  tail mass falls below the cdf's round-off (about 1e-16); the other discrete bases
  (Binomial, BetaBinomial, NegativeBinomial, GammaPoisson) sum their pmf in log space over
  the interval, cut 50 standard deviations above the larger of its lower bound and the mean.
- Draws: a continuous latent with a closed-form inverse tail is drawn by inverting it
  (reparameterised, exact far in a tail); the other bases with an icdf through it; a base
  without one (Gamma, Chi2, InverseGamma) by bisecting its log tail (exact, not
  reparameterised). Discrete draws: the inverse CDF upward from the lower bound.
"""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import torch
from pyro.distributions import TorchDistribution, constraints

from .functions import _tails as _ndtr_tails

D = torch.distributions
_LOG_HALF = -math.log(2.0)
_BISECTIONS = 200
_SERIES = 1000  # terms of a Poisson tail series past gammainc's underflow
_GRID_SDS = 50.0  # a pmf summed this many sds above max(low, mean): the rest is < e^-40


def _device(d) -> torch.device | None:
    """The device of the first tensor ``d`` (or a distribution it wraps) holds."""
    for v in vars(d).values():
        if isinstance(v, torch.Tensor):
            return v.device
        if isinstance(v, torch.distributions.Distribution):
            found = _device(v)
            if found is not None:
                return found
    return None


def _unvalidated(d):
    """A copy of ``d`` (and the distributions it wraps) that does not validate values:
    its cdf and log_prob are read at the support's own bound (LogNormal's 0) and at
    out-of-range points that a mask then discards."""
    d = copy.copy(d)
    d._validate_args = False
    for k, v in vars(d).items():
        if isinstance(v, torch.distributions.Distribution):
            setattr(d, k, _unvalidated(v))
    return d


def _support_bounds(d):
    """(lower, upper) of ``d``'s support as numbers or tensors, None where unbounded."""
    s = d.support
    while isinstance(s, constraints.independent):
        s = s.base_constraint
    return getattr(s, "lower_bound", None), getattr(s, "upper_bound", None)


def _log1mexp(a):
    """log(1 - exp(a)) for a <= 0, accurate at both ends."""
    return torch.where(a > _LOG_HALF, torch.log(-torch.expm1(a)),
                       torch.log1p(-torch.exp(a)))


def _safe_log(p):
    """log p, -inf at 0, with a finite gradient where p > 0 (no NaN through a where)."""
    pos = p > 0
    return torch.where(pos, torch.log(torch.where(pos, p, 1.0)), -torch.inf)


def _gamma_tails(a, y):
    """(log P(G <= y), log P(G > y)) for G ~ Gamma(a, 1): the regularised incomplete
    gamma, and past its underflow (below 1e-308) the series
    y^(a-1) e^-y / Gamma(a) * sum_n (a-1)...(a-n) / y^n (upper tail: asymptotic, cut at
    its smallest term; exact for a whole a) and
    y^a e^-y / Gamma(a+1) * sum_n y^n / ((a+1)...(a+n)) (lower tail)."""
    y = torch.clamp(y, min=0.0)
    lo, up = _safe_log(_inc_gamma(a, y, False)), _safe_log(_inc_gamma(a, y, True))
    if bool(torch.isinf(up).any()) and bool((y > 0).any()):
        ys = torch.where(y > 0, y, 1.0)
        n = torch.arange(1, _SERIES + 1, dtype=y.dtype, device=y.device)
        n = n.reshape((-1,) + (1,) * y.dim())
        # cut where the terms stop falling (exact for a whole a: they reach 0 at n = a)
        ratio = torch.where((a - n).abs() < ys, (a - n) / ys, 0.0)
        terms = torch.cat([torch.ones_like(ratio[:1]), torch.cumprod(ratio, 0)]).sum(0)
        tail = ((a - 1) * torch.log(ys) - ys - torch.lgamma(a)
                + _safe_log(terms.clamp(min=0.0)))
        up = torch.where(torch.isinf(up) & (y > 0), tail, up)
    if bool(torch.isinf(lo).any()) and bool((y > 0).any()):
        ys = torch.where(y > 0, y, 1.0)
        n = torch.arange(1, _SERIES + 1, dtype=y.dtype, device=y.device)
        n = n.reshape((-1,) + (1,) * y.dim())
        terms = torch.cumsum(torch.log(ys) - torch.log(a + n), 0)
        series = torch.logsumexp(torch.cat([torch.zeros_like(terms[:1]), terms]), 0)
        tail = a * torch.log(ys) - ys - torch.lgamma(a + 1) + series
        lo = torch.where(torch.isinf(lo) & (y > 0), tail, lo)
    return lo, up


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
    a, y = torch.broadcast_tensors(torch.as_tensor(a, dtype=y.dtype, device=y.device), y)
    if a.requires_grad:
        return _IncGamma.apply(a, y, upper)
    return (torch.special.gammaincc if upper else torch.special.gammainc)(a, y)


def _tails(d, x):
    """(log P(X <= x), log P(X > x)) of a continuous base in a closed form that keeps
    both tails; None for a base without one (its cdf is used)."""
    found = _ndtr_tails(d, x)
    if found is not None:
        return found
    if isinstance(d, D.Laplace):
        z = (x - d.loc) / d.scale
        small = _LOG_HALF - z.abs()  # the tail on z's side
        big = torch.log1p(-0.5 * torch.exp(-z.abs()))
        return torch.where(z < 0, small, big), torch.where(z < 0, big, small)
    if isinstance(d, _logistic()):
        z = (x - d.loc) / d.scale
        return torch.nn.functional.logsigmoid(z), torch.nn.functional.logsigmoid(-z)
    if isinstance(d, D.Gumbel):
        z = (x - d.loc) / d.scale
        e = -torch.exp(-z)  # log F; log S = log(1 - e^e), -z - e^-z / 2 where e^-z underflows
        return e, torch.where(z > 30, -z + e / 2, _log1mexp(e))
    if isinstance(d, D.Weibull):
        s = -torch.pow(torch.clamp(x, min=0.0) / d.scale, d.concentration)  # log S
        return _log1mexp(s), s
    if isinstance(d, D.Cauchy):
        z = (x - d.loc) / d.scale
        return (torch.log(torch.atan2(torch.ones_like(z), -z) / math.pi),
                torch.log(torch.atan2(torch.ones_like(z), z) / math.pi))
    if isinstance(d, D.HalfCauchy):
        z = torch.clamp(x / d.scale, min=0.0)
        return (_safe_log(2 / math.pi * torch.atan(z)),
                torch.log(2 / math.pi * torch.atan2(torch.ones_like(z), z)))
    if isinstance(d, D.Pareto):
        s = d.alpha * (torch.log(d.scale) - torch.log(torch.maximum(x, d.scale)))
        return _log1mexp(s), s
    if isinstance(d, D.Kumaraswamy):
        c = d.concentration1
        s = d.concentration0 * torch.log1p(-torch.pow(torch.clamp(x, 0.0, 1.0), c))
        return _log1mexp(s), s
    if isinstance(d, D.InverseGamma):  # P(X <= x) = P(G >= rate / x)
        lo, up = _gamma_tails(d.concentration, d.rate / torch.clamp(x, min=0.0))
        return up, lo
    if isinstance(d, D.Gamma):  # Chi2 too
        return _gamma_tails(d.concentration, d.rate * x)
    return None


def _logistic():
    from pyro.distributions import Logistic
    return Logistic


def _log_tails(d, x):
    """(log F(x), log S(x)) of a continuous base: :func:`_tails`, else from its cdf."""
    found = _tails(d, x)
    if found is not None:
        return found
    c = d.cdf(x)
    return _safe_log(c), _safe_log(1 - c)


def _inverse_tail(d, lt, upper):
    """x with log S(x) = lt (``upper``) or log F(x) = lt, in closed form for the bases
    that have one (reparameterised); None for the others."""
    lt = torch.clamp(lt, max=0.0)
    if isinstance(d, D.Exponential):
        return -(lt if upper else _log1mexp(lt)) / d.rate
    if isinstance(d, D.Laplace):
        near = lt < _LOG_HALF  # beyond the median on the target's side
        z = torch.where(near, _LOG_HALF - lt, math.log(2.0) + _log1mexp(lt))
        return d.loc + d.scale * (z if upper else -z)
    if isinstance(d, _logistic()):
        z = _log1mexp(lt) - lt
        return d.loc + d.scale * (z if upper else -z)
    if isinstance(d, D.Gumbel):
        if not upper:
            return d.loc - d.scale * torch.log(-lt)
        # -log F = -log(1 - S): log of it is log S + S / 2 where F rounds to 1
        far = lt < -30
        log_t = torch.where(far, lt + torch.exp(lt) / 2,
                            torch.log(-_log1mexp(torch.where(far, -1.0, lt))))
        return d.loc - d.scale * log_t
    if isinstance(d, D.Weibull):
        neg_log_s = -(lt if upper else _log1mexp(lt))
        return d.scale * torch.pow(neg_log_s, 1 / d.concentration)
    if isinstance(d, D.Cauchy):
        z = 1 / torch.tan(math.pi * torch.exp(lt))
        return d.loc + d.scale * (z if upper else -z)
    if isinstance(d, D.HalfCauchy):
        p = torch.exp(lt)
        return d.scale * (1 / torch.tan(math.pi / 2 * p) if upper
                          else torch.tan(math.pi / 2 * p))
    if isinstance(d, D.Pareto):
        return d.scale * torch.exp(-(lt if upper else _log1mexp(lt)) / d.alpha)
    if isinstance(d, D.Kumaraswamy):  # S = (1 - x^a)^b
        log_s = lt if upper else _log1mexp(lt)
        return torch.pow(-torch.expm1(log_s / d.concentration0), 1 / d.concentration1)
    return None


class Truncated(TorchDistribution):
    """``base_dist`` restricted to [low, high] and renormalised there (see the module)."""

    arg_constraints: dict = {}

    def __init__(self, base_dist, *, low=None, high=None, validate_args=None):
        if low is None and high is None:
            raise ValueError("Truncated needs a bound: low=, high= or both")
        if base_dist.event_shape:
            raise ValueError("Truncated needs a univariate distribution, not one with "
                             f"events of shape {tuple(base_dist.event_shape)}")
        dtype = torch.get_default_dtype()
        device = _device(base_dist)

        def as_bound(x):
            return None if x is None else torch.as_tensor(x, dtype=dtype, device=device)

        low, high = as_bound(low), as_bound(high)
        _check_bounds(base_dist, low, high)
        # an infinite bound (data's -Infinity, 1e400) truncates nothing on its side
        if low is not None and bool((low == -math.inf).all()):
            low = None
        if high is not None and bool((high == math.inf).all()):
            high = None
        shapes = [base_dist.batch_shape] + [b.shape for b in (low, high) if b is not None]
        batch_shape = torch.broadcast_shapes(*shapes)
        if base_dist.batch_shape != batch_shape:
            base_dist = base_dist.expand(batch_shape)
        self.base, self.low, self.high = base_dist, low, high
        self._raw = _unvalidated(base_dist)
        self.discrete = bool(base_dist.support.is_discrete)
        s_lo, s_hi = _support_bounds(base_dist)
        # a bound at or beyond the base's own support truncates nothing there
        self._lo = None if low is None or (s_lo is not None and bool((low <= s_lo).all())) \
            else low
        self._hi = None if high is None or (s_hi is not None and bool((high >= s_hi).all())) \
            else high
        lo = low if s_lo is None else (as_bound(s_lo) if low is None
                                       else torch.maximum(low, as_bound(s_lo)))
        hi = high if s_hi is None else (as_bound(s_hi) if high is None
                                        else torch.minimum(high, as_bound(s_hi)))
        if self.discrete:  # the integers in [lo, hi]
            lo = lo.ceil()
            hi = None if hi is None or not bool(torch.isfinite(hi).any()) else hi.floor()
        self._bounds = lo, hi
        _check_interval(base_dist, lo, hi, self.discrete, s_lo is None and s_hi is None)
        self.has_rsample = not self.discrete and _has(self._raw, "icdf")
        super().__init__(batch_shape, torch.Size(), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        lo, hi = self._bounds
        if self.discrete:
            if hi is None:
                return torch.distributions.constraints._IntegerGreaterThan(lo)
            # the bases it takes have support from 0, so a lower bound is always known
            return constraints.integer_interval(lo, hi)
        if lo is not None and hi is not None:
            return constraints.interval(lo, hi)
        if lo is None and hi is None:  # infinite bounds on a base over the whole line
            return self.base.support
        return constraints.greater_than_eq(lo) if lo is not None else constraints.less_than(hi)

    def expand(self, batch_shape, _instance=None):
        # the bounds stay as given (a number stays a number): the support, and so an
        # autoguide's transform, keeps the size the model declared, not a minibatch's
        return Truncated(self.base.expand(torch.Size(batch_shape)), low=self.low,
                         high=self.high, validate_args=self._validate_args)

    # -- the normaliser ------------------------------------------------------------------

    def log_normalizer(self):
        """log P(low <= X <= high) under the base, one per batch element."""
        if self.discrete and not _closed_discrete(self._raw):
            return self._log_mass_grid()
        lo, hi = self._lo, self._hi
        if self.discrete:
            lo, hi = self._bounds
            lo = None if self._lo is None else lo
            hi = None if self._hi is None else hi
        if lo is None and hi is None:
            return self._zeros()
        return _between(*self._tail_pair(lo, hi)).expand(self.batch_shape)

    def _tail_pair(self, lo, hi):
        """(log P(X < lo), log P(X >= lo), log P(X <= hi), log P(X > hi)); None for an
        absent bound."""
        tails = _discrete_tails if self.discrete else _log_tails
        step = 1.0 if self.discrete else 0.0  # P(X < k) = P(X <= k - 1) for integers
        at_lo = None if lo is None else tails(self._raw, lo - step)
        at_hi = None if hi is None else tails(self._raw, hi)
        return at_lo, at_hi

    def _zeros(self):
        return torch.zeros(self.batch_shape, dtype=torch.get_default_dtype(),
                           device=_device(self.base))

    def _grid_top(self):
        """The largest integer the pmf sums reach: the upper bound, capped at 50 sds above
        max(lower bound, mean) (what lies beyond is below e^-40 of the interval's mass)."""
        lo, hi = self._bounds
        d = self._raw
        cap = torch.maximum(lo, d.mean) + _GRID_SDS * d.variance.sqrt() + 100.0
        top = cap if hi is None else torch.minimum(hi, cap)
        return int(float(top.max()))

    def _grid(self):
        """The integers min(lower bound)..top along a new leading dimension, and the mask
        of those inside each element's interval."""
        lo, hi = self._bounds
        first = int(float(lo.min()))
        k = torch.arange(first, max(self._grid_top(), first) + 1,
                         dtype=torch.get_default_dtype(), device=_device(self.base))
        k = k.reshape((-1,) + (1,) * len(self.batch_shape))
        inside = (k >= lo) if hi is None else (k >= lo) & (k <= hi)
        return k, inside

    def _log_pmf(self, k, inside):
        return torch.where(inside, self._raw.log_prob(torch.where(inside, k, self._bounds[0])),
                           -torch.inf)

    def _log_mass_grid(self):
        k, inside = self._grid()
        return torch.logsumexp(self._log_pmf(k, inside), 0).expand(self.batch_shape)

    # -- density -------------------------------------------------------------------------

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        value = torch.as_tensor(value, dtype=torch.get_default_dtype())
        inside = self.support.check(value)
        lo, hi = self._bounds
        safe = lo if lo is not None else hi
        x = value if safe is None else torch.where(inside, value, safe)
        lp = self._raw.log_prob(x) - self.log_normalizer()
        return torch.where(inside, lp, -torch.inf)

    def cdf(self, value):
        """P(X <= value) of the truncated distribution (``log_cdf(Truncated(...), x)``)."""
        x = torch.as_tensor(value, dtype=torch.get_default_dtype())
        lo, hi = self._bounds
        if self.discrete:
            x = x.floor()
        below = (x < lo) if lo is not None else torch.zeros_like(x, dtype=torch.bool)
        above = (x >= hi) if hi is not None else torch.zeros_like(x, dtype=torch.bool)
        inside = ~(below | above)
        mid = torch.where(inside, x, lo if lo is not None else hi)
        if self.discrete and not _closed_discrete(self._raw):
            k, ok = self._grid()
            k = k.reshape(k.shape[:1] + (1,) * (mid.dim() - len(self.batch_shape))
                          + k.shape[1:])
            ok = ok.reshape(k.shape[:1] + (1,) * (mid.dim() - len(self.batch_shape))
                            + ok.shape[1:])
            lp = self._log_pmf(k, ok & (k <= mid))
            part = torch.logsumexp(lp, 0)
        else:
            tails = _discrete_tails if self.discrete else _log_tails
            lo_side = None if self._lo is None and not self.discrete else \
                (None if lo is None else tails(self._raw, lo - (1.0 if self.discrete else 0.0)))
            part = _between(lo_side, tails(self._raw, mid))
        p = torch.exp(part - self.log_normalizer()).clamp(0.0, 1.0)
        return torch.where(below, 0.0, torch.where(above, 1.0, p))

    # -- draws ---------------------------------------------------------------------------

    def rsample(self, sample_shape=()):
        if not self.has_rsample:
            raise NotImplementedError(f"{type(self.base).__name__} has no icdf: a truncated "
                                      "draw of it is not reparameterised")
        shape = self._extended_shape(sample_shape)
        lo, hi = self._lo, self._hi
        normal = _as_normal(self.base, *self._bounds)
        if normal is not None:
            from .shapes import _normal_between

            n, n_lo, n_hi, back = normal
            u = torch.rand(shape, dtype=torch.float64, device=_device(self.base))
            x = _normal_between(n, None if n_lo is None else n_lo.double(),
                                None if n_hi is None else n_hi.double(), u)
            return self._clamp(back(x.to(torch.get_default_dtype())))
        u = torch.rand(shape, dtype=torch.get_default_dtype(), device=_device(self.base))
        if _inverse_tail(self._raw, torch.zeros(()), True) is not None:
            upper, lt = self._target(u)
            x = torch.where(upper, _inverse_tail(self._raw, lt, True),
                            _inverse_tail(self._raw, lt, False))
            return self._clamp(x)
        d = self._raw
        p_lo = d.cdf(lo) if lo is not None else torch.zeros(())
        p_hi = d.cdf(hi) if hi is not None else torch.ones(())
        return self._clamp(d.icdf(p_lo + u * (p_hi - p_lo)))

    def _target(self, u):
        """For uniform ``u``: whether the interval lies above the median, and the log tail
        the draw has there: log S(x) = log(S(L) - u (S(L) - S(H))) above the median,
        log F(x) = log(F(L) + u (F(H) - F(L))) below it."""
        (f_lo, s_lo), (f_hi, s_hi) = _fill(*self._tail_pair(self._lo, self._hi))
        upper = f_lo > _LOG_HALF
        gap_s = torch.where(upper, (s_hi - s_lo).clamp(max=0.0), -1.0)
        gap_f = torch.where(upper, -1.0, (f_lo - f_hi).clamp(max=0.0))
        in_s = s_lo + torch.log1p(u * torch.expm1(gap_s))
        r = torch.exp(gap_f)
        in_f = f_hi + torch.log(r + u * (1 - r))
        return upper, torch.where(upper, in_s, in_f)

    def _clamp(self, x):
        """Round-off can put an inverse-CDF draw a hair outside the interval."""
        lo, hi = self._bounds
        if lo is not None:
            x = torch.maximum(x, lo)
        if hi is not None:
            x = torch.minimum(x, hi)
        return x

    def sample(self, sample_shape=()):
        with torch.no_grad():
            if self.has_rsample:
                return self.rsample(sample_shape)
            if self.discrete:
                return self._discrete_icdf(sample_shape)
            return self._bisect(sample_shape)

    def _discrete_icdf(self, sample_shape):
        """An exact draw: the first k from the lower bound whose cumulative mass reaches u
        times the interval's (Geometric in closed form: memoryless)."""
        shape = self._extended_shape(sample_shape)
        lo, hi = self._bounds
        dev = _device(self.base)
        if isinstance(self._raw, D.Geometric):
            log_q = torch.log1p(-self._raw.probs)  # log P(X >= k) = k log q
            span = None if hi is None else (hi - lo + 1) * log_q
            u = torch.rand(shape, dtype=torch.get_default_dtype(), device=dev)
            lt = torch.log1p(-u) if span is None else torch.log1p(u * torch.expm1(span))
            return self._clamp(lo + torch.floor(lt / log_q))
        k, inside = self._grid()
        lp = self._log_pmf(k, inside)
        cum = torch.exp(lp - lp.max(0).values).cumsum(0)  # [K, *batch]
        u = torch.rand(shape, dtype=cum.dtype, device=cum.device) * cum[-1]
        # searched per batch element ([B, K] against [B, S]), not a [K, S, B] comparison
        cum_b = cum.reshape(cum.shape[0], -1).T.contiguous()
        u_b = u.reshape(torch.Size(sample_shape).numel(), -1).T.contiguous()
        idx = torch.searchsorted(cum_b, u_b).clamp(max=cum.shape[0] - 1)
        idx = idx.T.reshape(shape)
        return self._clamp(k.reshape(-1)[0] + idx.to(torch.get_default_dtype()))

    def _bisect(self, sample_shape):
        """An exact draw for a base without an icdf: bisection of its log tail at the
        target :meth:`_target` gives, on t in (0, 1) mapped onto the interval (an
        unbounded side through t / (1 - t) scales)."""
        shape = self._extended_shape(sample_shape)
        d, (lo, hi) = self._raw, self._bounds
        u = torch.rand(shape, dtype=torch.get_default_dtype(), device=_device(self.base))
        upper, lt = self._target(u)
        try:
            c = d.stddev.expand(self.batch_shape)
            c = torch.where(torch.isfinite(c) & (c > 0), c, 1.0)
        except NotImplementedError:
            c = torch.ones(self.batch_shape, dtype=u.dtype, device=u.device)

        def x_at(t):
            if lo is not None and hi is not None:
                return lo + (hi - lo) * t
            if lo is not None:
                return lo + c * t / (1 - t)
            if hi is not None:
                return hi - c * (1 - t) / t
            return c * torch.logit(t)

        a, b = torch.zeros_like(u), torch.ones_like(u)
        for _ in range(_BISECTIONS):
            t = (a + b) / 2
            log_f, log_s = _log_tails(d, x_at(t))
            # below the target: log F too small, or log S too large
            low_side = torch.where(upper, log_s > lt, log_f < lt)
            a, b = torch.where(low_side, t, a), torch.where(low_side, b, t)
        return self._clamp(x_at((a + b) / 2))


def _fill(at_lo, at_hi):
    """The tail pairs with an absent bound as the whole line: (log F, log S) below the
    support is (-inf, 0), above it (0, -inf)."""
    ref = at_lo[0] if at_lo is not None else at_hi[0]
    zero, ninf = torch.zeros_like(ref), torch.full_like(ref, -torch.inf)
    return (at_lo if at_lo is not None else (ninf, zero),
            at_hi if at_hi is not None else (zero, ninf))


def _between(at_lo, at_hi):
    """log P(lo <= X <= hi) from the tails at both ends, as the difference of upper tails
    where the interval lies above the median, else of lower tails."""
    if at_lo is None:
        return at_hi[0]
    if at_hi is None:
        return at_lo[1]
    (f_lo, s_lo), (f_hi, s_hi) = at_lo, at_hi
    upper = f_lo > _LOG_HALF
    via_s = s_lo + _log1mexp(torch.where(upper, (s_hi - s_lo).clamp(max=0.0), -1.0))
    via_f = f_hi + _log1mexp(torch.where(upper, -1.0, (f_lo - f_hi).clamp(max=0.0)))
    return torch.where(upper, via_s, via_f)


def _closed_discrete(d) -> bool:
    return isinstance(d, (D.Poisson, D.Geometric))


def _discrete_tails(d, k):
    """(log P(X <= k), log P(X > k)) at integers k for Poisson (incomplete gamma, and the
    tail series sum_j of pmf ratios where it underflows) and Geometric (exactly)."""
    if isinstance(d, D.Geometric):
        log_q = torch.log1p(-d.probs)
        s = torch.where(k >= 0, (torch.clamp(k, min=0.0) + 1) * log_q, 0.0)
        return torch.where(k >= 0, _log1mexp(s), -torch.inf), s
    lam = d.rate
    kk = torch.clamp(k, min=0.0)
    f, s = _gamma_tails(kk + 1, lam)  # P(X <= k) = Q(k + 1, lam), P(X > k) = P(k + 1, lam)
    f, s = s, f
    return torch.where(k >= 0, f, -torch.inf), torch.where(k >= 0, s, 0.0)


def _as_normal(d, lo, hi):
    """(a Normal, its bounds, the map back) for the bases drawn as a truncated Normal:
    Normal; LogNormal (its log); HalfNormal (a Normal at 0 cut at its support's 0)."""
    if isinstance(d, D.Normal):
        return d, lo, hi, lambda x: x
    if isinstance(d, D.LogNormal):
        n = SimpleNamespace(loc=d.loc, scale=d.scale)
        return (n, None if lo is None else torch.log(lo), None if hi is None else torch.log(hi),
                torch.exp)
    if isinstance(d, D.HalfNormal):
        n = SimpleNamespace(loc=torch.zeros_like(d.scale), scale=d.scale)
        return n, lo, hi, lambda x: x
    return None


def _check_bounds(base, low, high):
    """A NaN bound, or one infinite on the wrong side (``low=Infinity``), leaves nothing
    to keep: refused here, not at 'cannot find valid initial params'."""
    for key, b, bad in (("low", low, math.inf), ("high", high, -math.inf)):
        if b is None or b.requires_grad:
            continue
        wrong = torch.isnan(b) | (b == bad)
        if bool(wrong.any()):
            at = wrong.reshape(-1).nonzero()[0]
            v = float(b.reshape(-1)[at])
            where = "" if b.numel() == 1 else f" at element {int(at)}"
            raise ValueError(f"Truncated {type(base).__name__}'s {key} is {v:g}{where}: "
                             + ("a bound must be a number" if math.isnan(v) else
                                "nothing lies beyond it"))


def _check_interval(base, lo, hi, discrete, as_given):
    """An interval with no mass (empty after meeting the base's support, or one point of
    a continuous base) is refused here, not at 'cannot find valid initial params'."""
    if lo is None or hi is None or lo.requires_grad or hi.requires_grad:
        return
    empty = (lo > hi) if discrete else (lo >= hi)
    if bool(empty.any()):
        at = empty.reshape(-1).nonzero()[0]
        a, b = (float(x.expand(empty.shape).reshape(-1)[at]) for x in (lo, hi))
        name = type(base).__name__
        what = ("the integers within the bounds" if discrete else "the bounds" if as_given
                else f"the bounds met with {name}'s support")
        where = "" if empty.dim() == 0 or empty.numel() == 1 else f" at element {int(at)}"
        raise ValueError(f"Truncated {name} keeps no value{where}: [{a:g}, {b:g}] ({what}) "
                         + ("is empty" if a > b else "is a single point, which has no mass"))


_HAS: dict = {}


def _has(d, method: str) -> bool:
    """Whether ``d``'s class implements ``method`` (cdf, icdf), tried at a point of its
    support once per class."""
    key = (type(d), method)
    if key not in _HAS:
        _HAS[key] = _try(d, method)
    return _HAS[key]


def _try(d, method: str) -> bool:
    try:
        lo, hi = _support_bounds(d)
        x = torch.as_tensor(0.5 if method == "icdf" else
                            (lo + 1.0 if lo is not None else 0.0) if hi is None else
                            (lo + hi) / 2 if lo is not None else hi - 1.0,
                            dtype=torch.get_default_dtype())
        getattr(d, method)(x)
    except NotImplementedError:
        return False
    except (ValueError, RuntimeError, TypeError):
        return True  # implemented; this point or shape did not suit it
    return True
