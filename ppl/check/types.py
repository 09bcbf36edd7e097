"""Types of BDL values as the checker sees them."""

from __future__ import annotations

from dataclasses import dataclass

from ..syntax import ast
from ..syntax.diagnostics import Span

TENSOR_KINDS = ("real", "int", "bool")


@dataclass(frozen=True)
class Ty:
    """A value's kind and, for tensors and distributions, its symbolic shape.

    ``kind`` is one of real, int, bool (tensors), dist, kernel, network, string, symbol
    (a bare word such as ``tanh`` or ``normal`` used as an option), function, unknown.
    ``shape`` is a tuple of size expressions (``sizes.Dim``) or None (unknown). For a
    distribution the shape is batch + event shape and ``event`` is its event rank. ``dim``
    is set when the value is a size expression usable as a dimension; ``value`` for
    literal numbers.
    """

    kind: str
    shape: tuple | None = ()
    event: int | None = 0
    dim: object | None = None  # a ppl.check.sizes.Dim
    value: object = None
    dist: str | None = None
    discrete: bool = False
    enumerable: bool = False

    @property
    def is_tensor(self) -> bool:
        return self.kind in TENSOR_KINDS


UNKNOWN = Ty("unknown", None)


@dataclass
class Symbol:
    """A name defined in a model: its role, type and where it was defined.

    Roles: data, size, transformed (computed from data only), latent, deterministic,
    param, network, value (kernels, distributions and other non-tensor locals), index
    (a plate's index variable), local (a function literal's parameter, inside its body).
    """

    name: str
    role: str
    ty: Ty
    span: Span
    random: bool = False
    optional: bool = False
    node: ast.Node | None = None
    constraint: tuple | None = None
    plates: tuple[str, ...] = ()


# Stan-style constrained types: name -> (trailing event dims from one size, pyro constraint)
CONSTRAINED_TYPES = {
    "ordered": (1, "constraints.ordered_vector"),
    "positive_ordered": (1, "rt.positive_ordered"),  # Stan's map (ppl/runtime/ordered.py)
    "simplex": (1, "constraints.simplex"),
    "unit_vector": (1, "constraints.sphere"),
    "cholesky_factor_corr": (2, "rt.corr_cholesky"),  # Stan's CPC (runtime/correlation.py)
    "cholesky_factor_cov": (2, "constraints.lower_cholesky"),
    "corr_matrix": (2, "rt.corr_matrix"),
    "cov_matrix": (2, "rt.cov_matrix"),
}
BASE_TYPES = ("real", "int", "bool")

# Distribution supports (as printed in the signature table) that already equal a
# constraint, so no restriction is needed.
SUPPORT_OF_CONSTRAINT = {
    "constraints.positive": ("GreaterThan(lower_bound=0.0)", "GreaterThanEq(lower_bound=0.0)"),
    "constraints.simplex": ("Simplex()",),
    "rt.corr_cholesky": ("CorrCholesky()",),
    "rt.corr_matrix": ("CorrMatrix()",),
    "rt.cov_matrix": ("PositiveDefinite()",),
    "constraints.unit_interval": ("Interval(lower_bound=0.0, upper_bound=1.0)",),
}
