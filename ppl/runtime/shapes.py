"""Event shapes and constrained priors for generated sample sites."""

from __future__ import annotations

import math

import torch
from pyro.distributions import (
    GaussianMRF,
    TorchDistribution,
    TransformedDistribution,
    constraints,
)
from pyro.distributions.transforms import CholeskyTransform
from torch.distributions import biject_to
from torch.distributions.transforms import ComposeTransform, Transform

from .dependent_support import base_constraint, support_ends


def event(d, shape) -> TorchDistribution:
    """Make the per-plate-element shape ``shape`` the event of ``d``.

    ``shape`` ends with ``d``'s own event shape; the dimensions before it are expanded
    (broadcasting ``d``'s batch) and reinterpreted as event dimensions, keeping any
    leading batch dimensions (plates) of ``d`` as they are. Outside plates this is
    ``d.expand(shape).to_event(len(shape))`` for a scalar ``d``.
    """
    shape = torch.Size(int(s) for s in shape)
    ev = len(d.event_shape)
    if ev and (hasattr(d, "duration") or isinstance(d, GaussianMRF)):  # Pyro's HMMs
        from .hmm import steps_fit, with_duration

        # a homogeneous HMM takes the value's length; a time-varying one must have it
        d = with_duration(d, shape[len(shape) - ev])
        steps_fit(d, shape[len(shape) - ev])
    extra = shape[: len(shape) - ev]
    if tuple(shape[len(shape) - ev:]) != tuple(d.event_shape):
        raise ValueError(f"event shape {tuple(d.event_shape)} does not match {tuple(shape)}")
    if not extra:
        return d
    lead = d.batch_shape[: max(len(d.batch_shape) - len(extra), 0)]
    return d.expand(lead + extra).to_event(len(extra))


def plate_aligned(x, dims):
    """``x``, whose leading ``len(dims)`` dimensions are one per enclosing plate, with
    those dimensions moved to the plates' Pyro dims ``dims`` (negative, from the right of
    the plate part) and size 1 at the dims between them; its other dimensions follow.

    In ``pyro.plate("N", N, dim=-2)`` around ``pyro.plate("M", M, dim=-1)``, data ``g`` of
    shape [N] must be [N, 1] to vary along N (``dims=(-2,)``), as a latent drawn in the
    outer plate is; the plate's index ``n`` is reshaped the same way, so ``a[n]`` is
    [N, 1] and ``a[n] + b[m]`` is [N, M].
    """
    if x is None:
        return None
    x = torch.as_tensor(x)
    return x.reshape(_plate_shape(tuple(x.shape), dims))


def _plate_shape(shape: tuple, dims) -> tuple:
    """The shape :func:`plate_aligned` gives a value of ``shape``."""
    width = -min(dims)
    out = [1] * width
    for j, d in enumerate(dims):
        out[width + d] = shape[j]
    return tuple(out) + tuple(shape[len(dims):])


def label_aligned(x, dims, tail: int):
    """``x``, a value computed outside plates from a label summed out there, with its
    leading own dims at the plates' Pyro ``dims`` (its own dims are its last ``tail``).

    Summed out, a label drawn outside plates is [K, 1, ..., 1]: its enumeration dim left
    of the model's plate dims, then one unit dim per plate. A value computed from it
    keeps that layout, with its own dims right of the unit dims (``mu[z]`` is [K, 1, D],
    ``2 * z * ones(D)`` too), as Pyro lays out a value drawn in no plate. Where its own
    dims are read as plate dims (a vector observed whole, drawn in one plate per dim;
    ``w`` read in ``plate D``) as many unit dims as those plates span are dropped from
    the left of its own dims, and its own dims are placed at ``dims`` as
    :func:`plate_aligned` places data: [K, 1, D] -> [K, D] at ``dims=(-1,)``. A value
    without the unit dims (its label a plain number) only has its own dims placed."""
    x = torch.as_tensor(x)
    if not dims:
        return x
    width = -min(dims)
    cut = x.dim() - tail
    lead = list(x.shape[:cut])
    while width and lead and lead[-1] == 1:
        lead.pop()
        width -= 1
    # shapes only: a scratch tensor would be made on the default device (CUDA in a fit)
    return x.reshape(tuple(lead) + _plate_shape(tuple(x.shape[cut:]), dims))


def label_matmul(a, b, left: int, right: int):
    """``a @ b`` where an operand is a value computed from a label summed out outside
    plates ([K, 1, ..., own dims]); ``left`` and ``right`` are the operands' own ranks.
    A vector operand is made a one-row (``a``) or one-column (``b``) matrix and the dim
    dropped after, so its leading dims stay batch dims: ``A @ mu[z]`` with ``A`` [E, D]
    and ``mu[z]`` [K, 1, D] is [K, 1, E] (torch's matmul would read [K, 1, D] as K
    matrices of one row)."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    out = (a.unsqueeze(-2) if left == 1 else a) @ (b.unsqueeze(-1) if right == 1 else b)
    out = out.squeeze(-2) if left == 1 else out  # the row's dim first: it is left of the
    return out.squeeze(-1) if right == 1 else out  # column's (two vectors: [..., 1, 1])


def per_element(x, tail: int, units: int):
    """``x`` with ``units`` dims of size 1 inserted before its last ``tail`` dims (its
    own per-element dims), that is after its plate dims: a value with one number per
    plate element, [N], becomes [N, 1], so it broadcasts against a site's per-element
    dims [N, W] row by row (Stan's ``y[n] ~ normal(m[n], s)``), not along W. Counted
    from the right, so dims that enumeration adds on the left stay where they are."""
    x = torch.as_tensor(x)
    cut = x.dim() - tail
    return x.reshape(tuple(x.shape[:cut]) + (1,) * units + tuple(x.shape[cut:]))


def _unit_dims(dims) -> tuple[int, list[int]]:
    """(width, units) of plates at Pyro ``dims``: the plate part is ``width`` dims wide,
    and ``units`` are the positions in it (from its left) of the unit dims that lie
    between the plates' own dims (plates N at -2 and K at -4: width 4, units [1, 3])."""
    width = -min(dims)
    keep = {width + d for d in dims}
    return width, [k for k in range(width) if k not in keep]


def _drop(x, positions):
    return x.reshape([n for k, n in enumerate(x.shape) if k not in set(positions)])


def plate_unaligned(x, dims, lead: int = 1):
    """The inverse of :func:`plate_aligned` for a value with ``lead`` leading dims of its
    own (draws): the unit dims that ``plate_aligned`` inserted between plate dims are
    dropped, so a simulated ``g: real[N]`` comes back [draws, N], not [draws, N, 1]."""
    _, units = _unit_dims(dims)
    return _drop(x, [lead + k for k in units])


def plate_spread(x, sizes, tail: int):
    """A value computed in plates of ``sizes`` that does not vary along them (``w = u``
    in plate N), read after they have closed: one copy per element, the plates' sizes
    before its own ``tail`` dims ([N] of a number), as a value that varies has them."""
    x = torch.as_tensor(x)
    cut = x.dim() - tail
    sizes = tuple(int(n) for n in sizes)
    return per_element(x, tail, len(sizes)).expand(x.shape[:cut] + sizes + x.shape[cut:])


def plate_closed(x, dims, tail: int):
    """A value drawn or computed inside plates at ``dims`` (the plates' Pyro dims), read
    after every one of them has closed: the unit dims that nested plates put between its
    plate dims are dropped, so it has its declared shape (``m`` of plate N in plates N
    and M is [N, 1] in the plates, [N] after them). Its own ``tail`` per-element dims are
    counted from the right, so dims that enumeration adds on the left stay."""
    width, units = _unit_dims(dims)
    lead = x.dim() - tail - width
    return _drop(x, [lead + k for k in units])


def declared(values: dict, layout: dict, lead: int) -> dict:
    """Draws ``values[name]`` (``lead`` leading dims: [draws] or [chains, draws]) of the
    sites of ``layout`` (name -> plate dims, ``ppl.infer.draws.plate_layout``) in their
    declared shape: ``m ~ Normal(0, 1)`` in plate N of plates N and M is [N] per draw,
    not Pyro's [N, 1] (:func:`plate_unaligned`). A value without those unit dims (a
    deterministic site computed from globals only, a value already declared) is left
    as it is."""
    out = dict(values)
    for name, dims in layout.items():
        x = out.get(name)
        if x is None:
            continue
        width, units = _unit_dims(dims)
        if x.dim() >= lead + width and all(x.shape[lead + k] == 1 for k in units):
            out[name] = _drop(x, [lead + k for k in units])
    return out


def site_shaped(x, shape, lead: int = 0):
    """``x`` (``lead`` leading dims, then a site's value) reshaped to the site's Pyro
    ``shape`` when it is the same numbers laid out without the unit dims that nested
    plates give a site of an outer plate (``[N]`` for ``[N, 1]``, or the other way):
    inserting or removing dims of size 1 keeps the order of the elements. Anything else
    is returned as it is, for the model to report."""
    own = tuple(x.shape[lead:])
    shape = tuple(shape)
    if own == shape or [n for n in own if n != 1] != [n for n in shape if n != 1]:
        return x
    return x.reshape(tuple(x.shape[:lead]) + shape)


class LabelFree(TorchDistribution):
    """The distribution of a continuous latent that reads a label summed out outside
    plates (``x ~ Normal(2.0 * z, 1)``): its value has the site's own shape, while its
    density keeps the label's enumeration dims, so the fit sums ``p(z) p(x | z)`` over z.

    Enumerated, ``base`` has the label's dims left of the plate dims ([2] for a
    Bernoulli ``z`` at dim -1); a sample of it would carry them too, and NUTS or an
    autoguide would take ``x`` for a vector with one copy per label value. Here the batch
    shape is ``base``'s right ``keep`` dims (the enclosing plates' width, read from
    Pyro's stack when not given), :meth:`sample` draws at the first label value (only
    an initial value: x is conditioned on in the fit), and :meth:`log_prob` is
    ``base``'s, which broadcasts over the label's dims."""

    arg_constraints: dict = {}

    def __init__(self, base, keep: int | None = None, validate_args=None):
        if keep is None:
            from pyro.poutine.indep_messenger import IndepMessenger
            from pyro.poutine.runtime import _PYRO_STACK
            keep = max((-m.dim for m in _PYRO_STACK
                        if isinstance(m, IndepMessenger) and m.dim is not None), default=0)
        self.base, self.keep = base, min(keep, len(base.batch_shape))
        batch = base.batch_shape[len(base.batch_shape) - self.keep:]
        super().__init__(batch, base.event_shape, validate_args=False)

    @constraints.dependent_property
    def support(self):
        return self.base.support

    @property
    def has_rsample(self):
        return self.base.has_rsample

    def log_prob(self, value):
        return self.base.log_prob(value)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        lead = self.base.batch_shape[: len(self.base.batch_shape) - self.keep]
        return LabelFree(self.base.expand(lead + batch_shape), len(batch_shape))

    def _first(self, x, sample_shape):
        extra = len(self.base.batch_shape) - self.keep
        return x[(slice(None),) * len(sample_shape) + (0,) * extra] if extra else x

    def sample(self, sample_shape=()):
        sample_shape = torch.Size(sample_shape)
        return self._first(self.base.sample(sample_shape), sample_shape)

    def rsample(self, sample_shape=()):
        sample_shape = torch.Size(sample_shape)
        return self._first(self.base.rsample(sample_shape), sample_shape)


def transformed(base, constraint):
    """A guide's draw with a declared type (``mu: ordered[2] ~ Normal(m, s)`` in a guide
    block): ``base``, on the real line, mapped into the set ``constraint`` by Pyro's
    ``biject_to`` (ordered: cumulative exp increments; lower bound: exp and shift; an
    interval: sigmoid and scale), with the map's Jacobian in the density."""
    return _Into(base, constraint)


class _Into(TransformedDistribution):
    """:func:`transformed`'s distribution, whose support is the set it maps into: Pyro's
    reads the last transform's codomain, the real line for the shift and scale of a bound
    (a guide's ``z: real<lower=a, upper=a + 1>`` was then mapped to the real line as if
    unbounded by ``rt.guide_in_support``, and its model read another value)."""

    def __init__(self, base, constraint, validate_args=None):
        self._into = constraint
        # cached: the density of a draw of its own reads the draw on the real line, not
        # the inverse of its rounded image (an ordered draw at u = [40, -40] is [40, 40]
        # in float64, [20, 20] at u = [20, -20] in float32: log 0 increments, and
        # Pyro's validation refused it as not increasing)
        super().__init__(base, biject_to(constraint).with_cache(1),
                         validate_args=validate_args)

    @constraints.dependent_property
    def support(self):
        return self._into

    def log_prob(self, value):
        own = self.transforms[-1]._cached_x_y[1] is value
        if not (own and self._validate_args):
            return super().log_prob(value)
        self._validate_args = False  # its own draw: in the set up to rounding
        try:
            return super().log_prob(value)
        finally:
            self._validate_args = True

    def expand(self, batch_shape, _instance=None):
        return _Into(self.base_dist.expand(batch_shape), self._into)


class Restricted(TorchDistribution):
    """A prior restricted to a constraint set, with the density left unnormalised there.

    This is Stan's semantics for a constrained parameter (``mu: ordered[2] ~ Normal(0, 2)``):
    the log density is ``base.log_prob`` on the support ``constraint``; samplers work on
    the unconstrained scale via ``biject_to(constraint)``. Sampling (prior predictive) draws
    from ``base`` and maps into the set: sorting for ordered vectors (exact for
    exchangeable ``base``), rejection for bounds.
    """

    arg_constraints: dict = {}

    def __init__(self, base, constraint, validate_args=None):
        self.base = base
        # read once: a support that follows latents (Uniform(0, a)) holds this evaluation's
        # values, and each evaluation of the model builds its own Restricted
        self._base_support = base.support
        self._constraint = _within(constraint, self._base_support)
        # the elements where the declared set meets none of the support, and why (a data
        # bound's error, raised at the first draw or density unless rt.sample_in_support
        # says the bounds follow latents: then those states have density 0, as in Stan)
        self._empty, self._no_common, self.follows = None, None, False
        if self._constraint is not constraint:
            self._empty, self._no_common = _check_meets(constraint, base, self._constraint)
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    def _refuse(self):
        if self._no_common is not None and not self.follows:
            raise ValueError(self._no_common)

    @constraints.dependent_property
    def support(self):
        return self._constraint

    def log_prob(self, value):
        """``base.log_prob`` inside the base's own support, -inf outside it: a declared set
        wider than that support (``s: real<lower=-1> ~ Exponential(1)``) lets a sampler
        propose values the prior excludes, where torch's unvalidated formula is finite
        (NUTS fitted s < 0 in 62% of draws); Stan rejects them the same way."""
        self._refuse()
        if self._empty is not None:  # bounds that follow latents met no value: density 0
            # there, the base's density read at a point of its support (not at the value,
            # outside it: torch's validation error, or NaN)
            lp = self.base.log_prob(torch.where(self._empty, _inside(self._base_support),
                                                value))
            empty = self._empty
            while empty.dim() > lp.dim():
                empty = empty.any(-1)
            return torch.where(empty, torch.full_like(lp, -torch.inf), lp)
        lp = self.base.log_prob(value)
        support = self._base_support
        if support is constraints.real or support is constraints.real_vector \
                or isinstance(support, torch.distributions.constraints._Dependent):
            return lp
        inside = support.check(value)
        return torch.where(inside, lp, torch.full_like(lp, -torch.inf)) \
            if inside.shape == lp.shape else lp

    def expand(self, batch_shape, _instance=None):
        out = Restricted(self.base.expand(batch_shape), self._constraint)
        out._empty, out._no_common, out.follows = self._empty, self._no_common, self.follows
        return out

    def sample(self, sample_shape=()):
        sample_shape = torch.Size(sample_shape)
        self._refuse()
        x = self.base.sample(sample_shape)
        c = self._constraint
        if self._empty is not None:  # no value to draw where the set is empty: a point of
            # the bounds' span there, at density 0, which a fit's initialisation rejects
            # and draws again; the other elements drawn from their sets, as below
            lo, hi = support_ends(c)
            mid = ((lo + hi) / 2 + torch.zeros_like(x)).detach()
            if bool(self._empty.all()):
                return mid
            # the empty elements drawn from the base's whole support (then replaced)
            s_lo, s_hi = support_ends(base_constraint(self._base_support))
            s_lo = s_hi - 1 if s_lo is None else s_lo
            s_hi = s_lo + 1 if s_hi is None else s_hi
            like = {"dtype": x.dtype, "device": x.device}
            lo, hi, s_lo, s_hi = (torch.as_tensor(b, **like).detach()
                                  for b in (lo, hi, s_lo, s_hi))
            c = constraints.interval(torch.where(self._empty, s_lo, lo),
                                     torch.where(self._empty, s_hi, hi))
            return torch.where(self._empty, mid, self._draw(x, sample_shape, c))
        return self._draw(x, sample_shape, c)

    def _draw(self, x, sample_shape, c):
        """``x``, the base's draws, brought into the set ``c``: sorted for ordered vectors,
        mapped for sets rejection cannot hit, else drawn again where outside (then by the
        inverse CDF)."""
        if c is constraints.ordered_vector:
            return x.sort(dim=-1).values
        if isinstance(c, type(constraints.positive_ordered_vector)):
            return x.abs().sort(dim=-1).values
        if not bool(c.check(x).all()):
            mapped = _into_set(c, x)
            if mapped is not None:  # a set rejection cannot hit: a point of it, not exact
                return mapped
        for tries in range(1000):
            ok = c.check(x)
            if bool(ok.all()):
                return x
            if tries == 20:
                # a bound far in the base's tail (a censored value's own bound U[i]): the
                # elements rejection missed, by the inverse CDF (still exact: the elements
                # are independent)
                inside = _bounded_draw(self.base, c, sample_shape)
                if inside is not None:
                    return torch.where(_broadcast_ok(ok, x), x, inside.to(x.dtype))
            x = torch.where(_broadcast_ok(ok, x), x, self.base.sample(sample_shape))
        raise ValueError(f"could not draw a sample inside {c} by rejection")


def _inside(support):
    """A point of an interval support (its middle, or 1 inside its one end)."""
    lo, hi = support_ends(support)
    if lo is not None and hi is not None:
        return (torch.as_tensor(lo) + hi) / 2
    return torch.as_tensor(0.0 if lo is None and hi is None else
                           lo + 1 if lo is not None else hi - 1)


def _within(c, support):
    """The bounds of ``c`` narrowed to the base's own support when both are intervals
    (``real<lower=-1>`` of an Exponential is ``lower=0``): the sampler's transform then
    maps onto the set where the prior has mass, instead of proposing values it excludes.
    ``c`` itself when the support narrows nothing."""
    tc = torch.distributions.constraints
    support = base_constraint(support)
    bounded = (tc._GreaterThan, tc._GreaterThanEq, tc._LessThan, tc._Interval,
               tc._HalfOpenInterval)
    if not isinstance(c, bounded) or not isinstance(support, bounded):
        return c

    def ends(x):
        return [None if v is None else torch.as_tensor(v, dtype=torch.get_default_dtype())
                for v in support_ends(x)]

    (lo, hi), (s_lo, s_hi) = ends(c), ends(support)
    narrower = False
    if s_lo is not None and (lo is None or bool((s_lo > lo).any())):
        lo, narrower = s_lo if lo is None else torch.maximum(lo, s_lo), True
    if s_hi is not None and (hi is None or bool((s_hi < hi).any())):
        hi, narrower = s_hi if hi is None else torch.minimum(hi, s_hi), True
    if not narrower:
        return c
    if lo is not None and hi is not None:
        return tc.interval(lo, hi)
    return tc.greater_than(lo) if lo is not None else tc.less_than(hi)


def _check_meets(declared, base, met):
    """A declared set that holds none of the base's support (``x: real<lower=1> ~
    Truncated(Normal(0, 1), high=H)`` with data H = 0) is refused here, naming both sets,
    not at 'could not draw a sample inside Interval(lower_bound=1.0, upper_bound=0.0)'.
    Bounds that follow a latent a sampler moves (they require grad) are not refused: a
    proposal there is rejected by its density. Returns (the empty elements, the message),
    (None, None) where the sets meet, for :class:`Restricted` to raise."""
    from ..locate import support_words

    lo, hi = support_ends(met)
    if lo is None or hi is None:
        return None, None
    lo, hi = (torch.as_tensor(b, dtype=torch.get_default_dtype()) for b in (lo, hi))
    empty = (lo >= hi).detach()
    if not bool(empty.any()):
        return None, None
    if lo.requires_grad or hi.requires_grad:
        return empty, None
    at = tuple(int(i) for i in empty.nonzero()[0])
    where = f" at element {at[0] if len(at) == 1 else list(at)}" if at else ""
    inner = base
    while isinstance(inner, torch.distributions.Independent):
        inner = inner.base_dist
    name = type(inner).__name__
    if hasattr(inner, "base") and name == "Truncated":
        name = f"Truncated {type(inner.base).__name__}"
    shape = empty.shape
    mine = support_words(declared, at, shape)[0]
    theirs = support_words(base.support, at, shape)[0]
    return empty, (f"the declared set of this latent{where}, {mine}, and {name}'s support, "
                   f"{theirs}, have no value in common: declare bounds that meet the "
                   "support, or change the distribution's")


def _bounded_draw(base, c, sample_shape):
    """Draws of ``base``, a univariate distribution (made an event or not), truncated to
    the bounds of ``c`` (greater_than, less_than, interval; one bound per element or one
    for all) by its inverse CDF; None for other sets or a base without cdf/icdf. A Normal
    is exact at any distance (:func:`_normal_between`); for another base, where its CDF
    rounds to 0 or 1 even in float64, the draw is a point just inside the bound, not
    exact."""
    tc = torch.distributions.constraints
    if not isinstance(c, (tc._GreaterThan, tc._LessThan, tc._Interval)):
        return None
    d = base
    while isinstance(d, torch.distributions.Independent):
        d = d.base_dist
    if d.event_shape:
        return None
    shape = torch.Size(sample_shape) + d.batch_shape
    lo, hi = support_ends(c)
    try:
        # in float64, so that a bound 5 to 8 scales out still has a CDF short of 1
        dtype, device = torch.float64, d.mean.device
        lo = None if lo is None else torch.as_tensor(lo, dtype=dtype, device=device)
        hi = None if hi is None else torch.as_tensor(hi, dtype=dtype, device=device)
        u = torch.rand(shape, dtype=dtype, device=device)
        if isinstance(d, torch.distributions.Normal):
            x = _normal_between(d, lo, hi, u)
        else:
            x = _icdf_between(d, lo, hi, u)
    except (NotImplementedError, ValueError, RuntimeError):
        return None
    if lo is not None and hi is not None:
        point = (lo + hi) / 2
    elif lo is not None:
        point = lo + 1e-3 * (1 + lo.abs())
    else:
        point = hi - 1e-3 * (1 + hi.abs())
    ok = c.check(x) & torch.isfinite(x)
    return torch.where(ok, x, point.expand(shape))


def _icdf_between(d, lo, hi, u):
    """``d`` truncated to [lo, hi] at the uniforms ``u``: by its inverse CDF on [cdf(lo),
    cdf(hi)]; with a CDF and no inverse (Gamma), by bisection on the CDF; with neither
    (Beta, StudentT), by the inverse CDF of the density's midpoint quadrature over
    [lo, hi] (1024 cells an element: exact up to the quadrature's error, O(1 / 1024^2) of
    the set's width for a smooth density). Both ways need both ends; with one,
    NotImplementedError, and the caller keeps to rejection."""
    try:
        f_lo = d.cdf(lo.expand(d.batch_shape)) if lo is not None else 0.0
        f_hi = d.cdf(hi.expand(d.batch_shape)) if hi is not None else 1.0
        return d.icdf(f_lo + u * (f_hi - f_lo))
    except NotImplementedError:
        if lo is None or hi is None:
            raise
    lo, hi, u = torch.broadcast_tensors(lo, hi, u)
    try:
        f_lo, f_hi = d.cdf(lo), d.cdf(hi)
    except NotImplementedError:
        return _quadrature_between(d, lo, hi, u)
    target, a, b = f_lo + u * (f_hi - f_lo), lo, hi
    for _ in range(64):  # the CDF does not decrease: halve [a, b] around the target
        mid = (a + b) / 2
        below = d.cdf(mid) < target
        a, b = torch.where(below, mid, a), torch.where(below, b, mid)
    return (a + b) / 2


def _quadrature_between(d, lo, hi, u):
    """Draws of ``d`` on [lo, hi] (each broadcast to the draws' shape) by the inverse CDF
    of its density at the midpoints of equal cells (the ends, where a Beta's density may
    be infinite, are never read); a density that is 0 or not finite in every cell is
    read as uniform."""
    cells = max(64, min(1024, 2 ** 22 // max(1, u.numel())))
    t = (torch.arange(cells, dtype=u.dtype, device=u.device) + 0.5) / cells
    t = t.reshape((cells,) + (1,) * u.dim())
    lp = d.log_prob(lo + t * (hi - lo)).to(u.dtype)
    lp = torch.where(torch.isnan(lp), torch.full_like(lp, -torch.inf), lp)
    top = lp.max(0).values
    w = (lp - torch.where(torch.isfinite(top), top, torch.zeros_like(top))).exp()
    bad = ~torch.isfinite(top) | ~torch.isfinite(w).all(0)
    w = torch.where(bad, torch.ones_like(w), w)
    cum = w.cumsum(0)
    target = u * cum[-1]
    k = (cum < target).sum(0).clamp(max=cells - 1)
    before = (cum - w).gather(0, k.unsqueeze(0)).squeeze(0)
    own = w.gather(0, k.unsqueeze(0)).squeeze(0)
    frac = torch.where(own > 0, (target - before) / own, torch.zeros_like(own)).clamp(0, 1)
    return lo + (k + frac) / cells * (hi - lo)


def _normal_between(d, lo, hi, u):
    """Normal(loc, scale) truncated to [lo, hi] by its inverse CDF, exact far in a tail:
    a range above the mean is drawn as the mirror image of one below it, where
    exp(log_ndtr) and ndtri keep their precision (Phi(-10) = 7.6e-24 in float64; torch's
    ndtr rounds it to 0, and erfinv of 2p - 1, its icdf, collapsed every draw to one point
    from about 7.5 scales out)."""
    from torch.special import log_ndtr, ndtri

    loc, scale = d.loc.to(u.dtype), d.scale.to(u.dtype)
    a = (lo - loc) / scale if lo is not None else torch.full_like(loc, -torch.inf)
    b = (hi - loc) / scale if hi is not None else torch.full_like(loc, torch.inf)
    a, b = torch.broadcast_tensors(a, b)
    upper = a > 0  # the range lies above the mean: draw -z from [-b, -a]
    lo_z, hi_z = torch.where(upper, -b, a), torch.where(upper, -a, b)
    p_lo, p_hi = log_ndtr(lo_z).exp(), log_ndtr(hi_z).exp()
    z = ndtri(p_lo + u * (p_hi - p_lo))
    return loc + scale * torch.where(upper, -z, z)


def _into_set(c, x):
    """Map a base draw into a set that rejection cannot hit (a sphere, triangular or
    positive-definite matrices, a simplex); None for sets rejection handles."""
    if c is constraints.sphere:
        return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    if c is constraints.lower_cholesky:
        tril = x.tril(-1)
        return tril + torch.diag_embed(x.diagonal(dim1=-2, dim2=-1).abs().clamp_min(1e-3))
    if isinstance(c, type(constraints.positive_definite)):  # rt.cov_matrix too
        k = x.shape[-1]
        return x @ x.transpose(-1, -2) / k + torch.eye(k, dtype=x.dtype, device=x.device)
    if isinstance(c, (type(constraints.corr_cholesky), type(constraints.corr_matrix))):
        rows, cols = torch.tril_indices(x.shape[-1], x.shape[-1], -1, device=x.device)
        return biject_to(c)(x[..., rows, cols])
    if c is constraints.simplex:
        a = x.abs() + 1e-6
        return a / a.sum(-1, keepdim=True)
    return None


class LowerCholeskyVec(Transform):
    """R^(K(K+1)/2) -> lower-triangular matrices with a positive diagonal, as Stan
    parametrises ``cholesky_factor_cov``: fill the lower triangle row by row, exp the
    diagonal; log |J| is the sum of the unconstrained diagonal entries."""

    domain = constraints.real_vector
    codomain = constraints.lower_cholesky
    bijective = True

    def __eq__(self, other):
        return isinstance(other, LowerCholeskyVec)

    @staticmethod
    def _k(n: int) -> int:
        return int(round((math.sqrt(8 * n + 1) - 1) / 2))

    @staticmethod
    def _idx(k: int, device):
        rows, cols = torch.tril_indices(k, k, device=device)
        return rows, cols, rows == cols

    def _call(self, x):
        k = self._k(x.shape[-1])
        rows, cols, diag = self._idx(k, x.device)
        vals = torch.where(diag, x.exp(), x)
        out = x.new_zeros(x.shape[:-1] + (k, k))
        out[..., rows, cols] = vals
        return out

    def _inverse(self, y):
        k = y.shape[-1]
        rows, cols, diag = self._idx(k, y.device)
        vals = y[..., rows, cols]
        return torch.where(diag, vals.clamp_min(1e-30).log(), vals)

    def log_abs_det_jacobian(self, x, y):
        k = self._k(x.shape[-1])
        _, _, diag = self._idx(k, x.device)
        return (x * diag).sum(-1)

    def forward_shape(self, shape):
        k = self._k(shape[-1])
        return torch.Size(shape[:-1]) + (k, k)

    def inverse_shape(self, shape):
        k = shape[-1]
        return torch.Size(shape[:-2]) + (k * (k + 1) // 2,)


class SphereVec(Transform):
    """R^K -> the unit sphere, x / |x|, with Stan's ``unit_vector`` device: the log
    Jacobian term is -|x|^2 / 2, so the radius has a proper distribution and the
    direction has the model's density."""

    domain = constraints.real_vector
    codomain = constraints.sphere
    bijective = True

    def __eq__(self, other):
        return isinstance(other, SphereVec)

    def _call(self, x):
        return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def _inverse(self, y):
        return y

    def log_abs_det_jacobian(self, x, y):
        return -0.5 * x.pow(2).sum(-1)


# torch registers no bijection onto these sets, so samplers and autoguides could not
# handle a latent of type cholesky_factor_cov, cov_matrix or unit_vector (or a Wishart)
biject_to.register(constraints.lower_cholesky)(lambda c: LowerCholeskyVec())
biject_to.register(constraints.positive_definite)(
    lambda c: ComposeTransform([LowerCholeskyVec(), CholeskyTransform().inv]))
biject_to.register(constraints.sphere)(lambda c: SphereVec())


def _broadcast_ok(ok, x):
    while ok.dim() < x.dim():
        ok = ok.unsqueeze(-1)
    return ok.expand_as(x)


class Flat(TorchDistribution):
    """The improper uniform prior on the real line (Stan's default for an unbounded
    parameter with no ``~``): log density 0. Declare its shape: ``beta: real[K] ~ Flat()``.

    It has no normalised draws; ``sample`` returns Uniform(-2, 2) values, which is what
    samplers use to initialise (as Stan does), never a prior predictive draw.
    """

    arg_constraints: dict = {}
    support = constraints.real

    def __init__(self, validate_args=None):
        super().__init__(torch.Size(), torch.Size(), validate_args=False)

    def log_prob(self, value):
        # 0, kept on value's graph (gradient 0): a NUTS potential of Flat sites alone had
        # no grad_fn (torch's "does not require grad"); zeros_like drops the graph
        return torch.where(torch.isfinite(value), value * 0, -torch.inf)

    def sample(self, sample_shape=()):
        shape = torch.Size(sample_shape) + self.batch_shape + self.event_shape
        return torch.rand(shape) * 4 - 2
