"""Correlation and covariance matrices: Stan's CPC map computed in the log domain, and
the LKJ and Wishart densities without NaN far out on the unconstrained scale.

torch's ``CorrCholeskyTransform`` clamps ``tanh(u)`` at ``1 - eps`` (so far out the map
is no longer the one whose Jacobian it reports) and reads its log-Jacobian off
``1 - cumsum(L_ij^2)``, which cancels: at ``K = 4`` and ``|u| ~ 20`` it is 7.5e-6 off,
at ``|u| ~ 40`` it is ``-inf`` (NaN potentials where it is negative). :class:`CorrCholeskyCPC`
is Stan's construction with every factor kept as a logarithm: ``z = tanh(u)``,
``log(1 - z^2) = log 4 - 2|u| - 2 softplus(-2|u|)``, and for row ``i``
``L_ij = z_ij prod_{k<j} sqrt(1 - z_ik^2)``, ``L_ii = prod_{k<i} sqrt(1 - z_ik^2)``, so
``log|J| = sum_{i>j} [log(1 - z_ij^2) + 1/2 sum_{k<j} log(1 - z_ik^2)]``.

BDL's sets :data:`corr_cholesky` and :data:`corr_matrix` are constraints of its own
(subclasses of torch's, the same checks and names) that ``biject_to`` and
``transform_to`` map by it, as :mod:`ppl.runtime.ordered` does for ``positive_ordered``:
torch's registry for its own ``corr_cholesky`` is left as it is. :class:`LKJCholesky`,
:class:`LKJ` and :class:`Wishart` are Pyro's classes on those sets whose densities are
never NaN: ``L_ii^0`` is 1 where ``L_ii`` underflowed to 0 (torch: ``0 * log 0``), and a
matrix that rounding left not positive definite (``L Lᵀ`` of a far-out factor) has
density 0 (torch: an error from its Cholesky, which Pyro's NUTS counts as a divergence
with a NaN potential), as does one with an infinite entry.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.transforms import CorrMatrixCholeskyTransform
from torch.distributions import TransformedDistribution, biject_to, transform_to
from torch.distributions.transforms import Transform
from torch.distributions.utils import tril_matrix_to_vec, vec_to_tril_matrix
from torch.nn.functional import softplus

from .shapes import LowerCholeskyVec

_LOG4 = math.log(4.0)


class _CorrCholeskySet(type(constraints.corr_cholesky)):
    """Lower Cholesky factors of correlation matrices (torch's check), mapped by
    :class:`CorrCholeskyCPC`."""


class _CorrMatrixSet(type(constraints.corr_matrix)):
    """Correlation matrices (Pyro's check), mapped by :class:`CorrCholeskyCPC` then
    ``L Lᵀ``."""


class _CovMatrixSet(type(constraints.positive_definite)):
    """Positive definite matrices (torch's check), mapped by :class:`CovMatrixVec`."""


_CorrCholeskySet.__name__ = _CorrCholeskySet.__qualname__ = "_CorrCholesky"
_CorrMatrixSet.__name__ = _CorrMatrixSet.__qualname__ = "_CorrMatrix"
_CovMatrixSet.__name__ = _CovMatrixSet.__qualname__ = "_PositiveDefinite"
corr_cholesky = _CorrCholeskySet()
corr_matrix = _CorrMatrixSet()
cov_matrix = _CovMatrixSet()


def _order(n: int) -> int:
    k = round((0.25 + 2 * n) ** 0.5 + 0.5)
    if k * (k - 1) // 2 != n:
        raise ValueError(f"{n} is not the number of entries below a diagonal")
    return k


class _Stateless(Transform):
    """A map with no parameters: equal to every other of its class."""

    def __eq__(self, other):
        return type(other) is type(self)

    def __hash__(self):
        return hash(type(self))


class CorrCholeskyCPC(_Stateless):
    """The ``K(K-1)/2`` real numbers onto Cholesky factors of ``K x K`` correlation
    matrices, entries read row by row below the diagonal (torch's order), by Stan's
    canonical partial correlations with the logarithms of ``1 - z^2`` computed from ``u``
    (exact to rounding at any ``u``; torch's loses them to cancellation)."""

    domain = constraints.real_vector
    codomain = corr_cholesky
    bijective = True

    @staticmethod
    def _logs(u):
        """``tanh(u)`` and ``log(1 - tanh(u)^2)`` as lower-triangular matrices, and the
        exclusive row sums of the latter (``sum_{k<j} log(1 - z_ik^2)`` at ``[i, j]``)."""
        a = u.abs()
        z = vec_to_tril_matrix(torch.tanh(u), diag=-1)
        w = vec_to_tril_matrix(_LOG4 - 2 * a - 2 * softplus(-2 * a), diag=-1)
        before = torch.cumsum(w, dim=-1) - w
        return z, w, before

    def _call(self, u):
        z, _, before = self._logs(u)
        eye = torch.eye(z.shape[-1], dtype=z.dtype, device=z.device)
        return (z + eye) * torch.exp(0.5 * before).tril()

    def _inverse(self, y):
        # the squared entries left in a row from column j on (its norm is 1): sum_{k>=j}
        # y_ik^2, summed from the diagonal (no cancellation against 1)
        rest = torch.flip(torch.cumsum(torch.flip(y * y, [-1]), dim=-1), [-1])
        t = tril_matrix_to_vec(y, diag=-1) / tril_matrix_to_vec(rest, diag=-1).sqrt()
        t = t.clamp(-1.0, 1.0)
        return 0.5 * (torch.log1p(t) - torch.log1p(-t))

    def log_abs_det_jacobian(self, u, y):
        _, w, before = self._logs(u)
        return tril_matrix_to_vec(w + 0.5 * before, diag=-1).sum(-1)

    def forward_shape(self, shape):
        k = _order(shape[-1])
        return torch.Size(shape[:-1]) + (k, k)

    def inverse_shape(self, shape):
        k = shape[-1]
        return torch.Size(shape[:-2]) + (k * (k - 1) // 2,)


class _GramOfFactor(_Stateless):
    """``L Lᵀ`` of the factor that :attr:`factor` maps ``u`` to, as one map whose
    log-Jacobian subclasses read off ``u``: torch's composition recomputes ``L`` from
    ``L Lᵀ`` for it, a Cholesky error (NaN in Pyro's potential) where rounding left
    ``L Lᵀ`` not positive definite (``|u| ~ 20``)."""

    domain = constraints.real_vector
    bijective = True
    factor: type

    def _call(self, u):
        chol = self.factor()(u)
        return chol @ chol.transpose(-1, -2)

    def _inverse(self, y):
        return self.factor()._inverse(torch.linalg.cholesky(y))

    def forward_shape(self, shape):
        return self.factor().forward_shape(shape)

    def inverse_shape(self, shape):
        return self.factor().inverse_shape(shape)


class CorrMatrixCPC(_GramOfFactor):
    """:class:`CorrCholeskyCPC` then ``L Lᵀ``; ``log L_ii`` in the log-Jacobian is the
    CPC's sum of logs."""

    codomain = corr_matrix
    factor = CorrCholeskyCPC

    def log_abs_det_jacobian(self, u, y):
        _, _, before = CorrCholeskyCPC._logs(u)
        k = before.shape[-1]
        # L -> L Lᵀ on the entries below the diagonal: prod_i L_ii^(K - 1 - i)
        power = torch.arange(k - 1, -1, -1, dtype=u.dtype, device=u.device)
        log_diag = 0.5 * before.diagonal(dim1=-2, dim2=-1)
        return CorrCholeskyCPC().log_abs_det_jacobian(u, None) + (power * log_diag).sum(-1)


class CovMatrixVec(_GramOfFactor):
    """The ``K(K+1)/2`` real numbers onto positive definite matrices, Stan's
    ``cov_matrix``: a Cholesky factor filled row by row with ``exp`` on its diagonal
    (``shapes.LowerCholeskyVec``), then ``L Lᵀ``; log-Jacobian
    ``K log 2 + sum_i (K - i + 1) u_ii`` (``i`` from 0)."""

    codomain = cov_matrix
    factor = LowerCholeskyVec

    def log_abs_det_jacobian(self, u, y):
        k = self.forward_shape(u.shape)[-1]
        rows, cols = torch.tril_indices(k, k, device=u.device)
        power = torch.where(rows == cols, k + 1 - rows, 0).to(u.dtype)
        return k * math.log(2.0) + (power * u).sum(-1)


@biject_to.register(_CorrCholeskySet)
@transform_to.register(_CorrCholeskySet)
def _cpc(constraint):
    return CorrCholeskyCPC()


@biject_to.register(_CorrMatrixSet)
@transform_to.register(_CorrMatrixSet)
def _cpc_matrix(constraint):
    return CorrMatrixCPC()


@biject_to.register(_CovMatrixSet)
@transform_to.register(_CovMatrixSet)
def _cov_vec(constraint):
    return CovMatrixVec()


def _factor(value):
    """The lower Cholesky factor of ``value`` where it has one (identity elsewhere), and
    where: finite and positive definite to rounding."""
    finite = torch.isfinite(value).flatten(-2).all(-1)
    eye = torch.eye(value.shape[-1], dtype=value.dtype, device=value.device)
    safe = torch.where(finite[..., None, None], value, eye)
    chol, info = torch.linalg.cholesky_ex(safe)
    ok = finite & (info == 0)
    return torch.where(ok[..., None, None], chol, eye), ok


def _symmetric(value):
    finite = torch.isfinite(value)
    gap = (value - value.transpose(-1, -2)).abs()
    return torch.where(finite, gap, torch.zeros_like(gap)).flatten(-2).max(-1).values \
        <= 1e-6 * value.abs().nan_to_num(posinf=1.0).flatten(-2).amax(-1).clamp_min(1.0)


def _not_indefinite(value):
    """False where ``value`` has an eigenvalue below ``-sqrt(eps)`` times its largest in
    magnitude: a matrix that is not positive definite by more than rounding (data outside
    the set, the located support error), where ``L Lᵀ`` of a far-out factor is off by
    ``~ eps`` (density 0, :func:`_factor`). Non-finite values pass (density 0)."""
    v = value.detach()
    finite = torch.isfinite(v).flatten(-2).all(-1)
    eye = torch.eye(v.shape[-1], dtype=v.dtype, device=v.device)
    safe = torch.where(finite[..., None, None], v, eye)
    eig = torch.linalg.eigvalsh((safe + safe.transpose(-1, -2)) / 2)
    tol = math.sqrt(torch.finfo(v.dtype).eps) * eig.abs().amax(-1)
    return ~finite | (eig[..., 0] >= -tol)


def _validate_sample(self, value, valid):
    """torch's support check with ``valid`` computed by the caller (the set's closure, or
    its checks less positive definiteness, which rounding decides): raised from a function
    of torch's name with its locals, which ``ppl.locate`` puts in words."""
    support = self.support
    if not bool(valid.all()):
        raise ValueError(f"Expected value argument ({type(value).__name__} of shape "
                         f"{tuple(value.shape)}) to be within the support ({support!r}) of "
                         f"the distribution {self!r}, but found invalid values:\n{value}")


class LKJCholesky(dist.LKJCholesky):
    """Pyro's ``LKJCholesky`` on :data:`corr_cholesky`; ``log_prob`` reads ``L_ii^0`` as 1
    where ``L_ii`` is 0 (torch: ``0 * log 0``, NaN), and a zero ``L_ii`` with another
    power as density 0."""

    support = corr_cholesky

    def log_prob(self, value):
        if self._validate_args:  # a diagonal rounded to 0 is in the set's closure
            tri = (value - value.tril()).abs().flatten(-2).amax(-1) == 0
            diag = value.diagonal(dim1=-2, dim2=-1)
            norm = torch.linalg.norm(value.detach(), dim=-1)
            tol = torch.finfo(value.dtype).eps * value.size(-1) * 10
            _validate_sample(self, value, tri & (diag >= 0).all(-1)
                             & ((norm - 1).abs() <= tol).all(-1))
        diag = value.diagonal(dim1=-2, dim2=-1)[..., 1:]
        eta = self.concentration.to(value.dtype)  # a literal's float32: the value's dtype
        order = torch.arange(2, self.dim + 1, device=value.device, dtype=value.dtype)
        order = 2 * (eta - 1).unsqueeze(-1) + self.dim - order
        # a diagonal rounded to 0 (|u| past ~370 in float64, ~50 in float32): L_ii^0 is 1,
        # any other power density 0 (not +inf, for a power below 0)
        zero = torch.where(order == 0, 0.0, -torch.inf).to(value.dtype)
        terms = torch.where(diag == 0, zero, order * diag.log())
        # torch's normaliser (Lewandowski et al. 2009, p. 1999)
        dm1 = self.dim - 1
        alpha = eta + 0.5 * dm1
        norm = 0.5 * dm1 * math.log(math.pi) + torch.mvlgamma(alpha - 0.5, dm1) \
            - torch.lgamma(alpha) * dm1
        return terms.sum(-1) - norm

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(LKJCholesky, _instance)
        return super().expand(batch_shape, _instance=new)


class LKJCorrCholesky(LKJCholesky):
    """Pyro's deprecated spelling ``LKJCorrCholesky(d, eta)`` of :class:`LKJCholesky`."""

    def __init__(self, d, eta, validate_args=None):
        super().__init__(d, concentration=eta, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(LKJCorrCholesky, _instance)
        return super().expand(batch_shape, _instance=new)


class LKJ(dist.LKJ):
    """Pyro's ``LKJ`` on :data:`corr_matrix`, scored through :class:`LKJCholesky`; a matrix
    that is not positive definite to rounding has density 0."""

    support = corr_matrix

    def __init__(self, dim, concentration=1.0, validate_args=None):
        super().__init__(dim, concentration, validate_args=validate_args)
        self.base_dist = LKJCholesky(dim, concentration, validate_args=validate_args)

    def log_prob(self, value):
        if self._validate_args:  # symmetric, unit diagonal, definite but for rounding
            diag = value.diagonal(dim1=-2, dim2=-1)
            _validate_sample(self, value, _symmetric(value) & _not_indefinite(value)
                             & ((diag - 1).abs() < 1e-6).all(-1))
        chol, ok = _factor(value)
        lp = self.base_dist.log_prob(chol) \
            + CorrMatrixCholeskyTransform().log_abs_det_jacobian(value, chol)
        return torch.where(ok, lp, torch.full_like(lp, -torch.inf))

    def expand(self, batch_shape, _instance=None):
        # Pyro's LKJ.expand calls LKJCholesky's (a TypeError): the transformed
        # distribution's, then the attributes LKJ adds
        new = TransformedDistribution.expand(self, batch_shape,
                                             _instance=self._get_checked_instance(LKJ, _instance))
        new.dim, new.concentration = self.dim, self.concentration.expand(batch_shape)
        return new


class Wishart(dist.Wishart):
    """Pyro's ``Wishart`` on :data:`cov_matrix`; a value that is not positive definite to
    rounding (``L Lᵀ`` of a far-out factor) or has an infinite entry has density 0 (torch:
    its validation error, or a finite density from ``slogdet``'s absolute value, or NaN)."""

    support = cov_matrix

    def log_prob(self, value):
        if self._validate_args:
            _validate_sample(self, value, _symmetric(value) & _not_indefinite(value))
        _, ok = _factor(value)
        eye = torch.eye(value.shape[-1], dtype=value.dtype, device=value.device)
        validate, self._validate_args = self._validate_args, False
        try:
            lp = super().log_prob(torch.where(ok[..., None, None], value, eye))
        finally:
            self._validate_args = validate
        return torch.where(ok, lp, torch.full_like(lp, -torch.inf))

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Wishart, _instance)
        return super().expand(batch_shape, _instance=new)


__all__ = ["LKJ", "CorrCholeskyCPC", "CorrMatrixCPC", "CovMatrixVec", "LKJCholesky",
           "LKJCorrCholesky", "Wishart", "corr_cholesky", "corr_matrix", "cov_matrix"]
