"""Elementwise and reduction functions of the language, on the current default device."""

from __future__ import annotations

import inspect
import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F

from ppl.check.signatures import PARAM_DTYPES, TENSOR_PARAMS
from ppl.runtime import tails
from ppl.runtime.errors import ArgumentError
from ppl.runtime.truncated import Truncated


def tensor(x, integer: bool = False) -> torch.Tensor:
    """A number as a tensor of the default dtype, or of int64 with ``integer`` (whole
    numbers from sizes: an index stays one); tensors pass through."""
    if isinstance(x, torch.Tensor):
        return x
    return torch.as_tensor(x, dtype=torch.int64 if integer else torch.get_default_dtype())


def _numbers_as_tensors(name: str):
    """``dist.NAME``, with its ``TENSOR_PARAMS`` arguments made tensors first (a number,
    ``Delta(3.0)``, is one of the default dtype; a tensor passes through): Pyro's class
    reads them as tensors (``v.dim()``, ``temperature.log()``)."""
    cls = getattr(dist, name)
    sig = inspect.signature(cls.__init__)
    params, dtypes = TENSOR_PARAMS[name], PARAM_DTYPES.get(name, {})

    def make(*args, **kwargs):
        bound = sig.bind_partial(None, *args, **kwargs)
        for p in params:
            if bound.arguments.get(p) is not None:
                bound.arguments[p] = tensor(bound.arguments[p])
                if p in dtypes:
                    bound.arguments[p] = bound.arguments[p].to(getattr(torch, dtypes[p]))
        return cls(*bound.args[1:], **bound.kwargs)

    make.__name__ = make.__qualname__ = name
    make.__doc__ = f"pyro.distributions.{name}, its {', '.join(params)} made tensors."
    return make


Delta = _numbers_as_tensors("Delta")
GroupedNormalNormal = _numbers_as_tensors("GroupedNormalNormal")
MaskedMixture = _numbers_as_tensors("MaskedMixture")
OrderedLogistic = _numbers_as_tensors("OrderedLogistic")
RelaxedBernoulli = _numbers_as_tensors("RelaxedBernoulli")
RelaxedBernoulliStraightThrough = _numbers_as_tensors("RelaxedBernoulliStraightThrough")
RelaxedOneHotCategorical = _numbers_as_tensors("RelaxedOneHotCategorical")
RelaxedOneHotCategoricalStraightThrough = _numbers_as_tensors(
    "RelaxedOneHotCategoricalStraightThrough")
TruncatedPolyaGamma = _numbers_as_tensors("TruncatedPolyaGamma")
ZeroInflatedDistribution = _numbers_as_tensors("ZeroInflatedDistribution")
ZeroInflatedNegativeBinomial = _numbers_as_tensors("ZeroInflatedNegativeBinomial")
ZeroInflatedPoisson = _numbers_as_tensors("ZeroInflatedPoisson")


def Multinomial(total_count=1, probs=None, logits=None, validate_args=None):  # noqa: N802
    """``pyro.distributions.Multinomial`` with ``total_count`` a Python int, as Pyro needs
    it: a tensor (``Multinomial(sum(y), theta)``, a size's count) whose values are all one
    number is read as that number (``.item()``; under ``jit=true`` it is read once, when
    the model is traced: it comes from the data, which do not change during a fit).
    Totals that differ between rows (``n: int[G]`` in ``plate G``) are an error naming
    the forms that take one total per row."""
    if torch.is_tensor(total_count):
        counts = total_count.detach().reshape(-1)
        if counts.numel() > 1 and bool((counts != counts[0]).any()):
            shown = ", ".join(f"{int(c)}" for c in counts[:3].tolist())
            raise ArgumentError(
                f"Multinomial takes one total_count for all its rows, but the totals differ "
                f"({shown}{', ...' if counts.numel() > 3 else ''}): for a total per row write "
                "factor(sum(y * log(theta))) over the rows (the multinomial's log "
                "probability less lgamma(n + 1) - sum(lgamma(y + 1)), a constant of the "
                "data), or y ~ DirichletMultinomial(kappa * theta, n) (overdispersed)",
                "total_count")
        total_count = int(counts[0].item()) if counts.numel() else 0
    return dist.Multinomial(total_count, probs, logits, validate_args)


def real(x: torch.Tensor) -> torch.Tensor:
    """``x`` as floating point: integer/boolean data observed under a real-valued density
    or given as a real parameter, or read by torch's mean, var and std (floating point
    only; their value is real in Stan too), in the default dtype. Floating-point tensors
    and anything not a tensor (None: optional data left out, so the site is sampled; a
    number) pass through."""
    if not isinstance(x, torch.Tensor) or x.is_floating_point() or x.is_complex():
        return x
    return x.to(torch.get_default_dtype())


def as_index(i):
    """An index computed from a Bernoulli latent, whose values Pyro draws (and
    enumerates) as 0.0 and 1.0: as integers, so ``nu[z]`` indexes."""
    return i.long() if torch.is_tensor(i) and i.is_floating_point() else i


def full(shape, value) -> torch.Tensor:
    """An initial value broadcast to ``shape`` (copied, so params own their storage)."""
    return torch.zeros(tuple(int(s) for s in shape)) + tensor(value)


def stack(xs, dim: int = 0) -> torch.Tensor:
    return torch.stack(torch.broadcast_tensors(*[tensor(x) for x in xs]), dim=dim)


def cat(xs, dim: int = 0) -> torch.Tensor:
    """``xs`` joined along ``dim``. Along a dim counted from the right (each item's own
    dims, as generated for a label's values: ``cat([mu[z], nu])``, ``mu[z]`` [K, 1, D]
    summed out) the items' other dims broadcast first, so ``nu`` [E] meets the label's
    summed-out dims: [K, 1, D + E]; an item of fewer dims is padded with 1s on the left
    (``cat([S, v], dim=-2)`` of [K, K] and [K] is [K + 1, K], Stan's append_row)."""
    xs = [tensor(x) for x in xs]
    if dim >= 0 or len({x.shape[:dim] + x.shape[x.dim() + dim + 1:] for x in xs}) < 2 \
            and len({x.dim() for x in xs}) < 2:
        return torch.cat(xs, dim=dim)
    rank = max(x.dim() for x in xs)
    xs = [x.reshape((1,) * (rank - x.dim()) + tuple(x.shape)) for x in xs]
    at = rank + dim
    rest = torch.broadcast_shapes(*[x.shape[:at] + (1,) + x.shape[at + 1:] for x in xs])
    return torch.cat([x.expand(rest[:at] + x.shape[at:at + 1] + rest[at + 1:]) for x in xs],
                     dim=dim)


def softplus(x):
    return F.softplus(real(tensor(x)))  # of int values too (torch's is float only)


def elu(x):
    return F.elu(real(tensor(x)))  # of int values too (torch's is float only)


def gelu(x):
    return F.gelu(real(tensor(x)))  # of int values too (torch's is float only)


def softmax(x, dim: int = -1):
    return torch.softmax(real(tensor(x)), dim=dim)  # of int values too (arange(N))


def log_softmax(x, dim: int = -1):
    return torch.log_softmax(real(tensor(x)), dim=dim)  # of int values too (arange(N))


def logsumexp(x, dim: int = -1):
    return torch.logsumexp(tensor(x), dim=dim)


def _reduce(fn, x, dim):
    x = tensor(x)
    return fn(x) if dim is None else fn(x, dim=dim)


def cumsum(x, dim=-1):
    """Running sum along ``dim``: out[k] = x[0] + ... + x[k] (Stan's cumulative_sum)."""
    return torch.cumsum(tensor(x), dim=int(dim))


def cumprod(x, dim=-1):
    """Running product along ``dim``: out[k] = x[0] * ... * x[k]."""
    return torch.cumprod(tensor(x), dim=int(dim))


def pow_(x, y):
    """x ^ y elementwise (Stan's pow), x and y broadcast."""
    return torch.pow(tensor(x), tensor(y))


def diag_pre_multiply(v, m):
    """diag(v) @ m (Stan's diag_pre_multiply): row i of m times v[i]."""
    return tensor(v).unsqueeze(-1) * tensor(m)


def diag_post_multiply(m, v):
    """m @ diag(v) (Stan's diag_post_multiply): column j of m times v[j]."""
    return tensor(m) * tensor(v).unsqueeze(-2)


def quad_form_diag(m, v):
    """diag(v) @ m @ diag(v) (Stan's quad_form_diag): m[i, j] v[i] v[j]."""
    v = tensor(v)
    return tensor(m) * v.unsqueeze(-1) * v.unsqueeze(-2)


def outer(a, b):
    """a b' of two vectors: out[i, j] = a[i] b[j]."""
    return tensor(a).unsqueeze(-1) * tensor(b).unsqueeze(-2)


def tril(m):
    """The lower triangle of a matrix (the diagonal kept), zeros above."""
    return torch.tril(tensor(m))


def variance(x, dim=None):
    """Sample variance of all elements, or along ``dim``, with n - 1 (Stan's variance);
    of one element, 0 (as Stan's, where n - 1 = 0 would give torch's NaN); of integers,
    real (torch's var takes floating point only)."""
    x = real(tensor(x))
    n = x.numel() if dim is None else x.shape[int(dim)]
    one = {"correction": 0 if n == 1 else 1}  # of one element: (x - x)^2 / 1 = 0
    return torch.var(x, **one) if dim is None else torch.var(x, dim=int(dim), **one)


def sd(x, dim=None):
    """Sample standard deviation of all elements, or along ``dim``, with n - 1 (Stan's
    sd); of one element, 0 (Stan's), with gradient 0 (a square root at 0 would give
    an infinite one, NaN in the chain rule)."""
    v = variance(x, dim)
    n = tensor(x).numel() if dim is None else tensor(x).shape[int(dim)]
    return v if n == 1 else v.sqrt()


def sort(x):
    """Ascending along the last dim (Stan's sort_asc); differentiable in the values."""
    return torch.sort(tensor(x), dim=-1).values


def reverse(x):
    """Reversed along the last dim (Stan's reverse)."""
    return torch.flip(tensor(x), dims=(-1,))


def sum_(x, dim=None):
    return _reduce(torch.sum, x, dim)


def mean_(x, dim=None):
    return _reduce(torch.mean, real(tensor(x)), dim)


def prod_(x, dim=None):
    return _reduce(torch.prod, x, dim)


def max_(x, dim=None):
    x = tensor(x)
    return x.max() if dim is None else x.max(dim=dim).values


def min_(x, dim=None):
    x = tensor(x)
    return x.min() if dim is None else x.min(dim=dim).values


def reduce_elements(x, how: str, dims: int):
    """``how`` ("sum", "mean", "max", "min", "prod", "sd", "variance") over the last
    ``dims`` dims of ``x`` only: ``sum(w[i])`` in ``plate i`` is one sum per plate element
    (Stan's sum(w[i]) in its loop), its plate dims (and any dims left of them) kept.
    ``dims`` = 0: each element is one number already."""
    x = tensor(x)
    if dims == 0:  # sd, variance of one number: 0 (rt.sd), with gradient 0
        return variance(x.unsqueeze(-1), dim=-1) if how in ("sd", "variance") else x
    flat = x.reshape(tuple(x.shape[: x.dim() - dims]) + (-1,))
    if how in ("max", "min"):
        return getattr(flat, how)(dim=-1).values
    if how in ("sd", "variance"):  # of one element, 0 as Stan's (rt.sd, rt.variance)
        return sd(flat, dim=-1) if how == "sd" else variance(flat, dim=-1)
    return getattr(torch, how)(real(flat) if how == "mean" else flat, dim=-1)


def transpose(x):
    return tensor(x).transpose(-1, -2)


def eye(n) -> torch.Tensor:
    return torch.eye(int(n))


def zeros(*shape) -> torch.Tensor:
    return torch.zeros(tuple(int(s) for s in shape))


def ones(*shape) -> torch.Tensor:
    return torch.ones(tuple(int(s) for s in shape))


def arange(n) -> torch.Tensor:
    return torch.arange(int(n))


def clamp(x, min=None, max=None):  # noqa: A002
    """``torch.clamp`` to [min, max]. Numbers come as written (the builtin is ``plain``):
    a whole number beside an int ``x`` is an int, so ``clamp(k, 0, 2)`` stays an int that
    indexes (``th[clamp(k, 0, 2)]``; ``rt.tensor(0)`` of the model's dtype made it real);
    a real bound (``clamp(k, 0, 2.5)``) makes the result real, as torch promotes. A list
    literal comes as a list: its items are stacked, as a list literal is elsewhere."""
    if isinstance(x, (list, tuple)):
        x = stack([tensor(i, integer=isinstance(i, int) and not isinstance(i, bool))
                   for i in x])
    x = tensor(x, integer=isinstance(x, int) and not isinstance(x, bool))

    def bound(b):
        if b is None or isinstance(b, torch.Tensor):
            return b
        whole = isinstance(b, int) and not x.is_floating_point()
        return torch.as_tensor(b, dtype=x.dtype if whole else torch.get_default_dtype(),
                               device=x.device)

    return torch.clamp(x, min=bound(min), max=bound(max))


def normal_cdf(x):
    """Phi(x) = (1 + erf(x / sqrt 2)) / 2."""
    return 0.5 * (1 + torch.erf(tensor(x) / math.sqrt(2.0)))


def log_prob(d, value):
    """log p(value) under the distribution ``d`` (Stan's ``*_lpdf``/``*_lpmf``), one number
    per batch element of ``d`` and ``value``: what ``y ~ d`` adds, for ``factor``."""
    return d.log_prob(torch.as_tensor(value, dtype=torch.get_default_dtype()))


def _tails(d, value):
    """(log P(X <= value), log P(X > value)) from :mod:`.tails` (the ones ``Truncated``
    reads), which keep the tails that the plain ``log(cdf)``, ``log1p(-cdf)`` lose
    (underflow to -inf): closed forms for the continuous distributions Truncated takes,
    Poisson and Geometric at ``floor(value)``, a Truncated's own; None for the others."""
    x = torch.as_tensor(value, dtype=torch.get_default_dtype())
    if isinstance(d, Truncated):
        return d.log_tails(x)
    if tails.has_discrete_tails(d):
        return tails.discrete_tails(d, torch.floor(x))
    return tails.closed_tails(d, x)


def _cdf(d, value):
    x = torch.as_tensor(value, dtype=torch.get_default_dtype())
    try:
        return d.cdf(x)
    except NotImplementedError:
        raise ValueError(f"{type(d).__name__} has no cdf in Pyro; log_cdf and log_ccdf need "
                         "one (write the sum of log_prob over the support instead)") from None


def log_cdf(d, value):
    """log P(X <= value) (Stan's ``*_lcdf``): the tails of :func:`_tails`, otherwise log
    of ``d.cdf``."""
    tails = _tails(d, value)
    return tails[0] if tails is not None else torch.log(_cdf(d, value))


def log_ccdf(d, value):
    """log P(X > value) (Stan's ``*_lccdf``, right censoring): closed-form tails as
    :func:`log_cdf`, otherwise log1p(-cdf)."""
    tails = _tails(d, value)
    return tails[1] if tails is not None else torch.log1p(-_cdf(d, value))


_FULL_DATA = [False]


def batch_size(batch, n) -> int:
    """The subsample size of ``plate N batch B``: min(B, N), or N when samplers that need
    the whole data set (NUTS/HMC) run the model inside :func:`full_data`."""
    n = int(n)
    return n if _FULL_DATA[0] else min(int(batch), n)


class full_data:
    """Context in which subsampled plates use all their data (exact-gradient samplers)."""

    def __enter__(self):
        self._old = _FULL_DATA[0]
        _FULL_DATA[0] = True
        return self

    def __exit__(self, *exc):
        _FULL_DATA[0] = self._old
        return False
