"""What generated Pyro code calls: data binding, shape helpers, functions, kernels, networks.

Generated modules do ``from ppl import runtime as rt``; everything they reference is
re-exported here so the generated source stays short and readable.
"""

from . import kernels, nn
from .coalescent import CoalescentTimes, CoalescentTimesWithRate  # signatures.OWN_CLASSES
from .combinatorial import (  # signatures.LONG_VALUES, and Empirical
    Empirical,
    OneOneMatching,
    OneTwoMatching,
    SpanningTree,
)
from .correlation import (  # signatures.OWN_CLASSES; types.CONSTRAINED_TYPES
    LKJ,
    LKJCholesky,
    LKJCorrCholesky,
    Wishart,
    corr_cholesky,
    corr_matrix,
    cov_matrix,
)
from .data import ArgSpec, IndexCheck, Signature, SizeCheck, bind
from .dependent_support import guide_in_support, sample_in_support
from .functions import (  # the Pyro classes of signatures.TENSOR_PARAMS first
    Delta,
    GroupedNormalNormal,
    MaskedMixture,
    Multinomial,  # signatures.INT_PARAMS
    OrderedLogistic,
    RelaxedBernoulli,
    RelaxedBernoulliStraightThrough,
    RelaxedOneHotCategorical,
    RelaxedOneHotCategoricalStraightThrough,
    TruncatedPolyaGamma,
    ZeroInflatedDistribution,
    ZeroInflatedNegativeBinomial,
    ZeroInflatedPoisson,
    arange,
    as_index,
    batch_size,
    cat,
    clamp,
    cumprod,
    cumsum,
    diag_post_multiply,
    diag_pre_multiply,
    elu,
    eye,
    full,
    full_data,
    gelu,
    log_ccdf,
    log_cdf,
    log_prob,
    log_softmax,
    logsumexp,
    normal_cdf,
    ones,
    outer,
    quad_form_diag,
    real,
    reduce_elements,
    reverse,
    sd,
    softmax,
    softplus,
    sort,
    stack,
    tensor,
    transpose,
    tril,
    variance,
    zeros,
)
from .functions import max_ as max  # noqa: A001
from .functions import mean_ as mean
from .functions import min_ as min  # noqa: A001
from .functions import pow_ as pow  # noqa: A001
from .functions import prod_ as prod
from .functions import sum_ as sum  # noqa: A001
from .hmm import DiscreteHMM, GaussianHMM, LinearHMM  # signatures.SIZE_CHECKED
from .kernels import gram
from .main import main
from .mixtures import (  # signatures.SIZE_CHECKED
    GaussianScaleMixture,
    MixtureOfDiagNormals,
    MixtureOfDiagNormalsSharedCovariance,
    MixtureSameFamily,
    MultivariateNormal,
)
from .nn import network, reset_networks
from .ordered import positive_ordered
from .scan import scan
from .shapes import (
    Flat,
    LabelFree,
    Restricted,
    event,
    label_aligned,
    label_matmul,
    per_element,
    plate_aligned,
    plate_closed,
    plate_spread,
    transformed,
)
from .stable import Stable, StableWithLogProb  # signatures.OWN_CLASSES
from .truncated import Truncated

__all__ = [
    "Delta", "GroupedNormalNormal", "MaskedMixture", "OrderedLogistic", "RelaxedBernoulli",
    "RelaxedBernoulliStraightThrough", "RelaxedOneHotCategorical",
    "RelaxedOneHotCategoricalStraightThrough", "TruncatedPolyaGamma",
    "ZeroInflatedDistribution", "ZeroInflatedNegativeBinomial", "ZeroInflatedPoisson",
    "Multinomial", "Truncated", "OneOneMatching", "OneTwoMatching", "SpanningTree",
    "Empirical", "Stable", "StableWithLogProb", "CoalescentTimes", "CoalescentTimesWithRate",
    "GaussianScaleMixture", "MixtureOfDiagNormals", "MixtureOfDiagNormalsSharedCovariance",
    "MixtureSameFamily", "MultivariateNormal", "positive_ordered", "DiscreteHMM", "GaussianHMM",
    "LinearHMM", "LKJ", "LKJCholesky", "LKJCorrCholesky", "Wishart", "corr_cholesky",
    "corr_matrix", "cov_matrix",
    "ArgSpec", "Flat", "IndexCheck", "LabelFree", "Restricted", "Signature", "SizeCheck",
    "arange", "as_index", "batch_size", "bind",
    "cat", "clamp", "cumprod", "cumsum", "diag_post_multiply", "diag_pre_multiply",
    "full_data", "outer", "pow", "quad_form_diag", "reverse", "sd", "sort", "tril",
    "variance",
    "elu", "event", "eye", "full", "gelu", "gram", "kernels", "log_ccdf", "log_cdf", "log_prob",
    "guide_in_support", "label_aligned", "label_matmul", "transformed", "log_softmax",
    "logsumexp", "main",
    "max", "mean", "min", "network", "nn", "normal_cdf", "ones", "per_element", "plate_aligned",
    "plate_closed", "plate_spread",
    "prod", "real", "reduce_elements",
    "reset_networks", "sample_in_support",
    "scan", "softmax", "softplus", "stack", "sum", "tensor", "transpose", "zeros",
]


def __getattr__(name: str):
    """``rt.<module>``: construct runtimes (``ppl/runtime/<module>.py``) load on first use,
    so a new construct needs no edit here."""
    import importlib

    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
