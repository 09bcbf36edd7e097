"""``Truncated(D, low=L, high=H)``: Stan's ``T[L, H]``, a univariate distribution
renormalised to the interval [L, H] (either bound optional).

The log density is ``D.log_prob(x) - log(F(H) - F(L))`` inside the interval and -inf
outside; the support is the interval (intersected with D's own), so samplers move a
truncated latent on the unconstrained scale through ``biject_to(support)``.

- The normaliser is computed in log space from D's two tails, log F (below) and log S
  (above): a difference of upper-tail masses when the interval lies above D's median, of
  lower-tail masses otherwise, so an interval far out in a tail keeps its precision. The
  tails are :mod:`.tails`' (the ``log_cdf``/``log_ccdf`` builtins read the same): closed
  forms for every continuous base Truncated takes (``signatures.TRUNCATE_CDF``), and
  Poisson and Geometric exactly; the other discrete bases (Binomial, BetaBinomial,
  NegativeBinomial, GammaPoisson) sum their pmf in log space over the interval, cut 50
  standard deviations above the larger of its lower bound and the mean.
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
from pyro.distributions import Logistic, SoftLaplace, TorchDistribution, constraints

from .dependent_support import gp_quantile
from .tails import (
    LOG_HALF,
    continuous_tails,
    discrete_tails,
    has_discrete_tails,
    log1mexp,
    support_bounds,
)

D = torch.distributions
_BISECTIONS = 200
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


# the bases _inverse_tail inverts in closed form, one per branch there
_INVERTIBLE = (D.Exponential, D.Laplace, Logistic, D.Gumbel, D.Weibull, D.Cauchy,
               D.HalfCauchy, D.Pareto, D.Kumaraswamy, D.Uniform, D.GeneralizedPareto,
               SoftLaplace)


def _inverse_tail(d, lt, upper):
    """x with log S(x) = lt (``upper``) or log F(x) = lt, in closed form for the bases
    that have one (reparameterised); None for the others."""
    lt = torch.clamp(lt, max=0.0)
    if isinstance(d, D.Exponential):
        return -(lt if upper else log1mexp(lt)) / d.rate
    if isinstance(d, D.Laplace):
        near = lt < LOG_HALF  # beyond the median on the target's side
        z = torch.where(near, LOG_HALF - lt, math.log(2.0) + log1mexp(lt))
        return d.loc + d.scale * (z if upper else -z)
    if isinstance(d, Logistic):
        z = log1mexp(lt) - lt
        return d.loc + d.scale * (z if upper else -z)
    if isinstance(d, D.Gumbel):
        if not upper:
            return d.loc - d.scale * torch.log(-lt)
        # -log F = -log(1 - S): log of it is log S + S / 2 where F rounds to 1
        far = lt < -30
        log_t = torch.where(far, lt + torch.exp(lt) / 2,
                            torch.log(-log1mexp(torch.where(far, -1.0, lt))))
        return d.loc - d.scale * log_t
    if isinstance(d, D.Weibull):
        neg_log_s = -(lt if upper else log1mexp(lt))
        return d.scale * torch.pow(neg_log_s, 1 / d.concentration)
    if isinstance(d, D.Cauchy):
        z = 1 / torch.tan(math.pi * torch.exp(lt))
        return d.loc + d.scale * (z if upper else -z)
    if isinstance(d, D.HalfCauchy):
        p = torch.exp(lt)
        return d.scale * (1 / torch.tan(math.pi / 2 * p) if upper
                          else torch.tan(math.pi / 2 * p))
    if isinstance(d, D.Pareto):
        return d.scale * torch.exp(-(lt if upper else log1mexp(lt)) / d.alpha)
    if isinstance(d, D.Kumaraswamy):  # S = (1 - x^a)^b
        log_s = lt if upper else log1mexp(lt)
        return torch.pow(-torch.expm1(log_s / d.concentration0), 1 / d.concentration1)
    if isinstance(d, D.Uniform):
        w = (d.high - d.low) * torch.exp(lt)
        return d.high - w if upper else d.low + w
    if isinstance(d, D.GeneralizedPareto):  # S = (1 + xi z)^(-1/xi), e^-z at xi = 0
        return gp_quantile(d.loc, d.scale, d.concentration, -(lt if upper else log1mexp(lt)))
    if isinstance(d, SoftLaplace):  # S = 2/pi atan(e^-z), F = 2/pi atan(e^z)
        z = _log_tan(math.log(math.pi / 2) + lt)
        return d.loc + d.scale * (-z if upper else z)
    return None


def _log_tan(log_t):
    """log tan(e^log_t) for t in (0, pi/2], exact where e^log_t underflows."""
    far = log_t < -20.0  # log tan t = log t + t^2 / 3 + O(t^4)
    near = torch.log(torch.tan(torch.exp(torch.where(far, -20.0, log_t))))
    return torch.where(far, log_t + torch.exp(2 * log_t) / 3, near)


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
        s_lo, s_hi = support_bounds(base_dist)
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
        if self.discrete and not has_discrete_tails(self._raw):
            return self._log_mass_grid()
        return self._normalizer(*self._end_tails())

    def _end_tails(self):
        """The base's tails at the ends that cut it (:meth:`_tail_pair`, None at an end
        that cuts nothing): the normaliser's, which :meth:`log_tails` reads too."""
        lo, hi = self._lo, self._hi
        if self.discrete:
            lo, hi = self._bounds
            lo = None if self._lo is None else lo
            hi = None if self._hi is None else hi
        return self._tail_pair(lo, hi)

    def _normalizer(self, at_lo, at_hi):
        """log P(low <= X <= high) from :meth:`_end_tails`."""
        if at_lo is None and at_hi is None:
            return self._zeros()
        return _between(at_lo, at_hi).expand(self.batch_shape)

    def _tail_pair(self, lo, hi):
        """(log P(X < lo), log P(X >= lo), log P(X <= hi), log P(X > hi)); None for an
        absent bound."""
        tails = discrete_tails if self.discrete else continuous_tails
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
        """P(X <= value) of the truncated distribution."""
        return torch.exp(self.log_tails(value)[0])

    def log_tails(self, value):
        """(log P(X <= value), log P(X > value)) of the truncated distribution, each a
        difference of the base's tails in log space less the normaliser (what
        ``log_cdf``/``log_ccdf`` of a Truncated read: log1p(-cdf) lost the upper one)."""
        x = torch.as_tensor(value, dtype=torch.get_default_dtype())
        lo, hi = self._bounds
        if self.discrete:
            x = x.floor()
        below = (x < lo) if lo is not None else torch.zeros_like(x, dtype=torch.bool)
        above = (x >= hi) if hi is not None else torch.zeros_like(x, dtype=torch.bool)
        # outside, the nearest bound: the tail on the value's side is then the whole
        # interval (finite, with finite gradients; the other is masked to -inf)
        mid = x if lo is None else torch.where(below, lo, x)
        mid = mid if hi is None else torch.where(above, hi, mid)
        if self.discrete and not has_discrete_tails(self._raw):
            k, ok = self._grid()
            lead = k.shape[:1] + (1,) * (mid.dim() - len(self.batch_shape))
            k, ok = k.reshape(lead + k.shape[1:]), ok.reshape(lead + ok.shape[1:])
            under = torch.logsumexp(self._log_pmf(k, ok & (k <= mid)), 0)
            over = torch.logsumexp(self._log_pmf(k, ok & (k > mid)), 0)
            z = self._log_mass_grid()
        else:
            tails = discrete_tails if self.discrete else continuous_tails
            at_lo, at_hi = self._end_tails()  # the normaliser's, computed once
            at_mid = tails(self._raw, mid)  # for counts P(X > mid) = P(X >= mid + 1)
            under, over = _between(at_lo, at_mid), _between(at_mid, at_hi)
            z = self._normalizer(at_lo, at_hi)
        zero, ninf = torch.zeros(()), torch.full((), -torch.inf)
        f = torch.where(below, ninf, torch.where(above, zero, (under - z).clamp(max=0.0)))
        s = torch.where(below, zero, torch.where(above, ninf, (over - z).clamp(max=0.0)))
        return f, s

    # -- draws ---------------------------------------------------------------------------

    def rsample(self, sample_shape=()):
        if not self.has_rsample:
            raise NotImplementedError(f"{type(self.base).__name__} has no icdf: a truncated "
                                      "draw of it is not reparameterised")
        shape = self._extended_shape(sample_shape)
        lo, hi = self._lo, self._hi
        if lo is None and hi is None and self._raw.has_rsample:
            return self._raw.rsample(sample_shape)  # the bounds cut nothing off the base
        normal = _as_normal(self.base, *self._bounds)
        if normal is not None:
            from .shapes import _normal_between

            n, n_lo, n_hi, back = normal
            u = torch.rand(shape, dtype=torch.float64, device=_device(self.base))
            x = _normal_between(n, None if n_lo is None else n_lo.double(),
                                None if n_hi is None else n_hi.double(), u)
            return self._clamp(back(x.to(torch.get_default_dtype())))
        u = torch.rand(shape, dtype=torch.get_default_dtype(), device=_device(self.base))
        if isinstance(self._raw, _INVERTIBLE):
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
        upper = f_lo > LOG_HALF
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
            log_f, log_s = continuous_tails(d, x_at(t))
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
    upper = f_lo > LOG_HALF
    # an end with no mass beyond it on the side read (a tail of -inf) makes the other end's
    # tail -inf too: -inf - (-inf) is NaN, and the interval's mass is then 0 (-inf + finite)
    gap_s = torch.where(upper & ~torch.isneginf(s_lo), s_hi - s_lo, -1.0)
    gap_f = torch.where(~upper & ~torch.isneginf(f_hi), f_lo - f_hi, -1.0)
    via_s = s_lo + log1mexp(gap_s.clamp(max=0.0))
    via_f = f_hi + log1mexp(gap_f.clamp(max=0.0))
    return torch.where(upper, via_s, via_f)


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
        lo, hi = support_bounds(d)
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
