"""``Truncated(D, low=L, high=H)``: Stan's ``T[L, H]``, a univariate distribution
renormalised to the interval [L, H] (either bound optional).

The log density is ``D.log_prob(x) - log(F(H) - F(L))`` inside the interval and -inf
outside; the support is the interval (intersected with D's own), so samplers move a
truncated latent on the unconstrained scale through ``biject_to(support)``.

- Continuous D: the normaliser comes from D's cdf, in log space through
  :func:`ppl.runtime.functions.log_cdf` / ``log_ccdf`` (``log_ndtr`` for a Normal, finite far in
  a tail), as a difference of upper-tail masses when the interval lies above D's median.
  Draws are by the inverse CDF, reparameterised (exact in a Normal's far tails); a base
  without icdf (Gamma) is drawn by rejection, which is exact but not reparameterised.
- Discrete D (Poisson, Binomial, ...; support from 0): the normaliser is the pmf summed
  over the interval, or 1 minus its sum below L when there is no upper bound. Draws are
  by the inverse CDF over a finite interval, by rejection otherwise.
"""

from __future__ import annotations

import copy
import math

import torch
from pyro.distributions import TorchDistribution, constraints

from .functions import log_ccdf, log_cdf

_REJECTION_ROUNDS = 1000


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
    return torch.where(a > -math.log(2.0), torch.log(-torch.expm1(a)),
                       torch.log1p(-torch.exp(a)))


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
        self._bounds = lo, hi
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
        return constraints.greater_than_eq(lo) if lo is not None else constraints.less_than(hi)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)

        def grow(b):
            return None if b is None else b.expand(batch_shape)

        return Truncated(self.base.expand(batch_shape), low=grow(self.low),
                         high=grow(self.high), validate_args=self._validate_args)

    # -- the normaliser ------------------------------------------------------------------

    def log_normalizer(self):
        """log P(low <= X <= high) under the base, one per batch element."""
        return self._log_mass_discrete() if self.discrete else self._log_mass_continuous()

    def _log_mass_continuous(self):
        d, lo, hi = self._raw, self._lo, self._hi
        if lo is None and hi is None:
            return self._zeros()
        if lo is None:
            return log_cdf(d, hi).expand(self.batch_shape)
        if hi is None:
            return log_ccdf(d, lo).expand(self.batch_shape)
        f_lo, s_lo, f_hi, s_hi = log_cdf(d, lo), log_ccdf(d, lo), log_cdf(d, hi), log_ccdf(d, hi)
        # above the median, F(L) and F(H) both round towards 1: subtract the upper tails
        upper = f_lo > -math.log(2.0)
        via_s = s_lo + _log1mexp(torch.where(upper, (s_hi - s_lo).clamp(max=0.0), -1.0))
        via_f = f_hi + _log1mexp(torch.where(upper, -1.0, (f_lo - f_hi).clamp(max=0.0)))
        return torch.where(upper, via_s, via_f).expand(self.batch_shape)

    def _zeros(self):
        return torch.zeros(self.batch_shape, dtype=torch.get_default_dtype(),
                           device=_device(self.base))

    def _grid(self, top):
        """The integers 0..top along a new leading dimension, against the batch shape."""
        k = torch.arange(int(top) + 1, dtype=torch.get_default_dtype(),
                         device=_device(self.base))
        return k.reshape((-1,) + (1,) * len(self.batch_shape))

    def _pmf(self, k):
        """The base's pmf at the integers ``k`` (0 where outside its support)."""
        ok = self._raw.support.check(k)
        return torch.where(ok, self._raw.log_prob(torch.where(ok, k, 0.0)).exp(), 0.0)

    def _log_mass_discrete(self):
        lo, hi = self._lo, self._hi
        if lo is None and hi is None:
            return self._zeros()
        lo_ = lo.ceil() if lo is not None else None
        if hi is None:  # P(X >= L) = 1 - P(X < L)
            k = self._grid(max(float(lo_.max()) - 1, 0))
            below = (self._pmf(k) * (k < lo_)).sum(0)
            return torch.log1p(-below.clamp(max=1.0)).expand(self.batch_shape)
        k = self._grid(max(float(hi.max()), 0))
        inside = (k <= hi) if lo_ is None else (k >= lo_) & (k <= hi)
        return torch.log((self._pmf(k) * inside).sum(0)).expand(self.batch_shape)

    # -- density -------------------------------------------------------------------------

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        value = torch.as_tensor(value, dtype=torch.get_default_dtype())
        inside = self.support.check(value)
        lo, hi = self._bounds
        safe = lo if lo is not None else hi
        x = torch.where(inside, value, safe)
        lp = self._raw.log_prob(x) - self.log_normalizer()
        return torch.where(inside, lp, -torch.inf)

    # -- draws ---------------------------------------------------------------------------

    def rsample(self, sample_shape=()):
        if not self.has_rsample:
            raise NotImplementedError(f"{type(self.base).__name__} has no icdf: a truncated "
                                      "draw of it is not reparameterised")
        shape = self._extended_shape(sample_shape)
        lo, hi = self._lo, self._hi
        if isinstance(self.base, torch.distributions.Normal):
            from .shapes import _normal_between

            u = torch.rand(shape, dtype=torch.float64, device=self.base.loc.device)
            x = _normal_between(self.base, None if lo is None else lo.double(),
                                None if hi is None else hi.double(), u)
            x = x.to(torch.get_default_dtype())
        else:
            d = self._raw
            u = torch.rand(shape, dtype=torch.get_default_dtype(),
                           device=_device(self.base))
            p_lo = d.cdf(lo) if lo is not None else torch.zeros(())
            p_hi = d.cdf(hi) if hi is not None else torch.ones(())
            x = d.icdf(p_lo + u * (p_hi - p_lo))
        return self._clamp(x)

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
            if self.discrete and self._hi is not None:
                return self._discrete_icdf(sample_shape)
            return self._rejection(sample_shape)

    def _discrete_icdf(self, sample_shape):
        """An exact draw over the finite interval: the first k whose cumulative mass from
        the lower bound reaches u times the total."""
        shape = self._extended_shape(sample_shape)
        k = self._grid(max(float(self._hi.max()), 0))
        inside = k <= self._hi if self._lo is None else (k >= self._lo.ceil()) & (k <= self._hi)
        cum = (self._pmf(k) * inside).cumsum(0)
        u = torch.rand(shape, dtype=cum.dtype, device=cum.device) * cum[-1]
        below = (cum.reshape(cum.shape[:1] + (1,) * len(sample_shape) + cum.shape[1:])
                 < u.unsqueeze(0))
        return below.sum(0).to(torch.get_default_dtype())

    def _rejection(self, sample_shape):
        """Base draws, redrawn where they fall outside the interval: exact; refused where
        the interval's mass is too small for rejection to finish."""
        shape = self._extended_shape(sample_shape)
        x = self.base.sample(sample_shape)
        for _ in range(_REJECTION_ROUNDS):
            ok = self.support.check(x)
            if bool(ok.all()):
                return x
            x = torch.where(ok, x, self.base.sample(sample_shape))
        mass = float(self.log_normalizer().exp().min())
        raise ValueError(f"could not draw {type(self.base).__name__} truncated to its interval "
                         f"by rejection ({_REJECTION_ROUNDS} rounds; the interval holds "
                         f"{mass:.2g} of its mass, shape {tuple(shape)})")


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
