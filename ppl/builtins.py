"""The registry of built-in functions, kernels, networks and constructs.

Each entry is pure metadata (no torch import): the checker reads its signature and shape
rule, and the code generator emits a call to ``target`` -- a name that the generated
module can resolve (``torch.exp``, ``rt.kernels.RBF``...). A construct registers itself
here from its own module in ``ppl/constructs/``; nothing in the parser changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

# A shape rule gets the positional and keyword argument types (objects with ``.kind``,
# ``.shape`` and, for numbers, ``.value``) and returns the result's shape or None.
ShapeRule = Callable[[list, dict], tuple | None]


@dataclass(frozen=True)
class FunctionParam:
    """An argument of a builtin that takes a function literal ``(x, t) => body``.

    ``params`` says what each of the literal's parameters is (``("state", "time")``), for
    the arity check and its message. ``shapes(args, kwargs)`` gives each parameter's shape
    from the call's other arguments, as a shape rule does; ``kinds(args, kwargs)`` each
    parameter's type kind (``"int"`` for scan's ``x`` over an ``int[T]``, so ``theta[x]``
    indexes), real where it is absent or says None; ``result(args, kwargs)`` the shape the
    body's value must broadcast to. Any may return None (unknown). The same argument may
    still take the construct's other forms (a number, a network): a literal is one more
    form, not the only one. ``rows``: parameter position -> the call's argument whose
    rows (first dim) that parameter is given, every one (scan's ``x``: ``{1: "xs"}``), so
    an index with it is checked at binding as one with the argument's int data would be.
    """

    params: tuple[str, ...]
    shapes: Callable[[list, dict], tuple | None] | None = None
    result: ShapeRule | None = None
    kinds: Callable[[list, dict], tuple | None] | None = None
    rows: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Builtin:
    name: str
    target: str
    params: tuple[str, ...] = ()
    required: int = 0
    kind: str = "function"  # function | kernel | network | construct
    result: str = "real"    # type kind of the value: real | int | bool | kernel | network,
    #   or "as_first": the first argument's kind (int stays int: abs, sum, sort, cumsum)
    shape: ShapeRule | None = None
    variadic: bool = False  # zeros(N, D): any number of positional sizes
    doc: str = ""
    extra: dict = field(default_factory=dict)
    # Construct hooks (see docs/language.md, "Adding a construct"):
    # tilde: how ``NAME ~ this(...)`` reads: "network" -- NAME is an existing network and
    #   this is a prior on its weights; "new" -- NAME is a new latent the construct samples.
    #   Generated code: ``NAME = target("NAME", [NAME,] args...)``.
    tilde: str | None = None
    # call_result: kind of ``v(...)`` for a value v built by this entry ("dist" for a
    #   neural process whose call is a predictive distribution); None: a tensor.
    call_result: str | None = None
    # call_params: the inputs of ``v(...)``, in order (``("xc", "yc", "xt")``): the checker
    #   wants each of them, positional, with a located arity error otherwise.
    call_params: tuple[str, ...] = ()
    # call_dims: input of ``v(...)`` -> this entry's argument that sizes the input's last
    #   dimension (``{"xc": "x_dim"}``), checked as a network's input features are.
    call_dims: dict = field(default_factory=dict)
    # attrs: attribute name -> kind of ``v.attr`` ("dist", "real", ...).
    attrs: dict = field(default_factory=dict)
    # functions: argument name -> FunctionParam, for arguments that take a function
    #   literal (``drift=(x, t) => -theta * x``); generated code passes a Python lambda.
    functions: dict = field(default_factory=dict)
    # choices: argument name -> the bare words it takes (``noise=additive``), passed to
    #   the target as strings.
    choices: dict = field(default_factory=dict)
    # ranges: argument name -> the interval a numeric literal given for it must lie in,
    #   checked with a located error: (lo, hi) closed (None: unbounded on that side), or
    #   a string in interval notation, "(0, inf)", "[0, 2)".
    ranges: dict = field(default_factory=dict)
    # missing_as_nan: arguments (``data=y``) or attributes of the value (``m.visible``,
    #   observed) whose data may hold NaN for a missing value: the construct reads them so
    #   (the CLI's NaN note leaves such data out).
    missing_as_nan: tuple[str, ...] = ()
    # integers: arguments that take a whole number (a count, a size, a seed): a literal
    #   with a fraction is a located check error (int(2.5) would run 2 steps silently).
    integers: tuple[str, ...] = ()
    # flags: arguments that take true or false: any other literal ("no", 0) is a located
    #   check error (a non-empty string would read as true).
    flags: tuple[str, ...] = ()
    # sequences: arguments run over along their first dimension (scan's xs): one of shape
    #   [] (a number) is a located check error, not a run-time one.
    sequences: tuple[str, ...] = ()
    # methods: the inference methods a model using this entry can be fitted with (empty:
    #   any), checked at the infer line and for a method given at run time.
    methods: tuple[str, ...] = ()
    # lists: arguments that take a Python list of settings (``hidden=[categorical(64, 4)]``,
    #   layer widths): a list literal there passes as a list, not stacked into a tensor.
    lists: tuple[str, ...] = ()
    # plain: the target takes Python numbers (a settings helper, ``categorical(64, 4)``;
    #   ``rt.clamp``, which keeps an int value int between int bounds), so numeric
    #   literals pass as written instead of as ``rt.tensor(...)`` (of the model's dtype).
    plain: bool = False
    # context: (statement, model AST) -> ContextArg | (message, argument) | None: an
    #   argument the construct takes from the rest of the model, found at compile time (a
    #   fractional SDE's closed form reads its path's one observation statement); a pair is
    #   why it cannot be given, reported by the checker as an error located at that
    #   argument of the call (the one that asked for the context).
    context: Callable | None = None


@dataclass(frozen=True)
class ContextArg:
    """A keyword argument ``name=target(**exprs, **consts)`` that a construct's ``context``
    hook adds to its call: ``exprs`` are model expressions (AST), lowered like any other
    argument; ``consts`` are Python constants, emitted as literals."""

    name: str
    target: str
    exprs: dict = field(default_factory=dict)
    consts: dict = field(default_factory=dict)


def interval(spec) -> tuple:
    """``(lo, lo_open, hi, hi_open, words)`` of a ``Builtin.ranges`` entry: a pair
    ``(lo, hi)`` is the closed interval (None: unbounded), a string such as ``"(0, 2]"``
    or ``"(0, inf)"`` any interval in the usual notation."""
    if not isinstance(spec, str):
        lo, hi = spec
        words = (f"between {lo:g} and {hi:g}" if lo is not None and hi is not None
                 else f"at least {lo:g}" if lo is not None else f"at most {hi:g}")
        return lo, False, hi, False, words
    text = spec.strip()
    if text[:1] not in "([" or text[-1:] not in ")]" or text.count(",") != 1:
        raise ValueError(f"malformed range {spec!r} (expected e.g. \"(0, 2]\")")
    a, z = (t.strip() for t in text[1:-1].split(","))
    lo = None if a in ("-inf", "") else float(a)
    hi = None if z in ("inf", "") else float(z)
    lo_open, hi_open = text[0] == "(", text[-1] == ")"
    words = f"in {text}"
    if hi is None and lo is not None:
        words = (("positive" if lo_open else "non-negative") if lo == 0
                 else f"{'greater than' if lo_open else 'at least'} {lo:g}")
    return lo, lo_open, hi, hi_open, words


REGISTRY: dict[str, Builtin] = {}


def register(b: Builtin) -> Builtin:
    if b.name in REGISTRY:
        raise ValueError(f"builtin {b.name!r} registered twice")
    for spec in b.ranges.values():
        interval(spec)  # a malformed range fails at registration, not in a user's check
    REGISTRY[b.name] = b
    return b


def lookup(name: str) -> Builtin | None:
    _load_constructs()
    return REGISTRY.get(name)


def names() -> list[str]:
    _load_constructs()
    return sorted(REGISTRY)


_loaded = False


def _load_constructs() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from . import constructs  # noqa: F401  (each construct module registers itself)


# ---- shape rules ----------------------------------------------------------------
def same_as_first(args, kwargs):
    return args[0].shape if args else None


def scalar(args, kwargs):
    return ()


def _dim_arg(kwargs, default):
    d = kwargs.get("dim")
    if d is None:
        return default
    return getattr(d, "value", None)


def reduce_rule(args, kwargs):
    """sum/mean/max/min: over everything, or over ``dim`` (dropped)."""
    if not args or args[0].shape is None:
        return None
    dim = _dim_arg(kwargs, "all")
    if dim == "all":
        return ()
    if not isinstance(dim, int):
        return None
    shape = list(args[0].shape)
    if not -len(shape) <= dim < len(shape):
        return None
    del shape[dim]
    return tuple(shape)


def logsumexp_rule(args, kwargs):
    if not args or args[0].shape is None:
        return None
    dim = _dim_arg(kwargs, -1)
    shape = list(args[0].shape)
    if not shape and dim in (-1, 0):
        return ()  # of one number, torch's: the number (logsumexp(0.5) + m is [M])
    if not isinstance(dim, int) or not shape or not -len(shape) <= dim < len(shape):
        return None
    del shape[dim]
    return tuple(shape)


def transpose_rule(args, kwargs):
    if not args or args[0].shape is None or len(args[0].shape) < 2:
        return None
    s = args[0].shape
    return tuple(s[:-2]) + (s[-1], s[-2])


def sizes_rule(args, kwargs):
    """zeros(N, D), ones(N), eye(N): the arguments are the sizes."""
    dims = []
    for a in args:
        if getattr(a, "dim", None) is None:
            return None
        dims.append(a.dim)
    return tuple(dims)


def eye_rule(args, kwargs):
    d = getattr(args[0], "dim", None) if args else None
    return None if d is None else (d, d)


def arange_rule(args, kwargs):
    d = getattr(args[0], "dim", None) if len(args) == 1 else None
    return None if d is None else (d,)


def gram_rule(args, kwargs):
    """gram(k, x[, x2]): an [n, m] covariance matrix."""
    if len(args) < 2 or args[1].shape is None:
        return None
    x = args[1].shape
    x2 = args[2].shape if len(args) > 2 else x
    if x2 is None or not x or not x2:
        return None
    return (x[0], x2[0])


_ELEMENTWISE = {
    "exp": "torch.exp", "log": "torch.log", "log1p": "torch.log1p", "expm1": "torch.expm1",
    "sqrt": "torch.sqrt", "abs": "torch.abs", "sin": "torch.sin", "cos": "torch.cos",
    "tanh": "torch.tanh", "sigmoid": "torch.sigmoid", "softplus": "rt.softplus",
    "relu": "torch.relu", "elu": "rt.elu", "gelu": "rt.gelu", "square": "torch.square",
    "lgamma": "torch.lgamma", "digamma": "torch.digamma",
    "logit": "torch.logit", "erf": "torch.erf", "floor": "torch.floor", "round": "torch.round",
}
# an int argument gives an int value here (so the result can index)
_KEEP_INT = ("abs", "floor", "round", "square", "relu")
for _name, _target in _ELEMENTWISE.items():
    register(Builtin(_name, _target, ("x",), 1, shape=same_as_first,
                     result="as_first" if _name in _KEEP_INT else "real",
                     doc=f"elementwise {_name}"))

register(Builtin("softmax", "rt.softmax", ("x", "dim"), 1, shape=same_as_first,
                 doc="softmax along dim (default -1)"))
register(Builtin("log_softmax", "rt.log_softmax", ("x", "dim"), 1, shape=same_as_first,
                 doc="log-softmax along dim (default -1)"))
register(Builtin("logsumexp", "rt.logsumexp", ("x", "dim"), 1, shape=logsumexp_rule,
                 doc="log-sum-exp along dim (default -1)"))
for _name in ("sum", "mean", "max", "min", "prod"):
    register(Builtin(_name, f"rt.{_name}", ("x", "dim"), 1, shape=reduce_rule,
                     result="real" if _name == "mean" else "as_first",
                     doc=f"{_name} over all elements, or along dim"))
register(Builtin("cumsum", "rt.cumsum", ("x", "dim"), 1, shape=same_as_first, result="as_first",
                 doc="running sum along dim (default -1; Stan's cumulative_sum)"))


# ---- Stan's vector and matrix helpers (ppl/runtime/functions.py) --------------------
def _broadcast(a, b):
    from .check import sizes  # the checker's shapes; no import cycle at call time

    return sizes.broadcast(a, b)[0] if a is not None and b is not None else None


def pow_rule(args, kwargs):
    """pow(x, y): x and y broadcast, as x ^ y."""
    return _broadcast(args[0].shape, args[1].shape) if len(args) == 2 else None


# the dims of M that v's length must match (Stan's): its rows, its columns, both
SCALED_DIMS = {"diag_pre_multiply": (-2,), "diag_post_multiply": (-1,),
               "quad_form_diag": (-2, -1)}


def diag_multiply_sizes(name: str, v, m) -> tuple:
    """(shape, mismatches) of diag_pre_multiply(v, M), diag_post_multiply(M, v) or
    quad_form_diag(M, v) of shapes ``v`` [K] and ``m`` [K, J]: M's shape, v's length
    against M's rows (pre), columns (post) or both (quad_form_diag: a square M). (None,
    []) unless ``v`` is a vector and ``m`` a matrix (``Checker._scale_fits``)."""
    from .check import sizes

    if v is None or m is None or len(v) != 1 or len(m) != 2:
        return None, []
    issues = []
    for d in SCALED_DIMS[name]:
        rel = sizes.compare(v[0], m[d])
        if rel != sizes.Relation.EQUAL:
            issues.append(sizes.Mismatch(v[0], m[d], rel == sizes.Relation.DIFFERENT))
    return tuple(m), issues


def diag_multiply_rule(name: str):
    """The shape rule of diag_pre_multiply(v, M), diag_post_multiply(M, v) or
    quad_form_diag(M, v): M's shape, for a matrix M and a vector v (unknown otherwise)."""
    def rule(args, kwargs):
        if len(args) != 2:
            return None
        v, m = args if name == "diag_pre_multiply" else args[::-1]
        return diag_multiply_sizes(name, v.shape, m.shape)[0]
    return rule


def outer_rule(args, kwargs):
    """outer(a, b) of two vectors: [len(a), len(b)]."""
    if len(args) != 2 or any(a.shape is None or len(a.shape) != 1 for a in args):
        return None
    return (args[0].shape[0], args[1].shape[0])


def matrix_rule(args, kwargs):
    """tril(M): M's shape, for a matrix (two dims or more)."""
    s = args[0].shape if args else None
    return None if s is None or len(s) < 2 else s


register(Builtin("pow", "rt.pow", ("x", "y"), 2, shape=pow_rule,
                 doc="elementwise power x ^ y (Stan's pow)"))
register(Builtin("diag_pre_multiply", "rt.diag_pre_multiply", ("v", "m"), 2,
                 shape=diag_multiply_rule("diag_pre_multiply"),
                 doc="diag(v) @ m, without forming diag(v) (Stan's diag_pre_multiply)"))
register(Builtin("diag_post_multiply", "rt.diag_post_multiply", ("m", "v"), 2,
                 shape=diag_multiply_rule("diag_post_multiply"),
                 doc="m @ diag(v), without forming diag(v) (Stan's diag_post_multiply)"))
register(Builtin("quad_form_diag", "rt.quad_form_diag", ("m", "v"), 2,
                 shape=diag_multiply_rule("quad_form_diag"),
                 doc="diag(v) @ m @ diag(v) (Stan's quad_form_diag)"))
register(Builtin("outer", "rt.outer", ("a", "b"), 2, shape=outer_rule, result="as_first",
                 doc="outer product a b' of two vectors: [len(a), len(b)]"))
register(Builtin("tril", "rt.tril", ("m",), 1, shape=matrix_rule, result="as_first",
                 doc="lower triangle of a matrix, zeros above the diagonal"))
for _name, _doc in (("sd", "sample standard deviation (n - 1, Stan's sd)"),
                    ("variance", "sample variance (n - 1, Stan's variance)")):
    register(Builtin(_name, f"rt.{_name}", ("x", "dim"), 1, shape=reduce_rule,
                     doc=f"{_doc} over all elements, or along dim"))
register(Builtin("sort", "rt.sort", ("x",), 1, shape=same_as_first, result="as_first",
                 doc="ascending along the last dim (Stan's sort_asc)"))
register(Builtin("reverse", "rt.reverse", ("x",), 1, shape=same_as_first, result="as_first",
                 doc="reversed along the last dim (Stan's reverse)"))
register(Builtin("cumprod", "rt.cumprod", ("x", "dim"), 1, shape=same_as_first,
                 result="as_first",
                 doc="running product along dim (default -1)"))
register(Builtin("matmul", "torch.matmul", ("a", "b"), 2, doc="matrix product, as @"))
register(Builtin("transpose", "rt.transpose", ("x",), 1, shape=transpose_rule,
                 result="as_first",
                 doc="swap the last two dimensions"))
register(Builtin("stack", "rt.stack", ("xs", "dim"), 1, doc="stack a list along a new dim"))
def cat_sizes(shapes: list, dim: int) -> tuple:
    """(shape, mismatches) of ``cat`` of items of ``shapes`` along ``dim``: their sizes
    along ``dim`` added (N + M). Along a dim counted from the left (torch.cat) the items
    have one rank and equal other dims; from the right (``dim < 0``, ``rt.cat``) their
    other dims broadcast, a shorter item padded with 1s on the left (``cat([S, v],
    dim=-2)`` of [K, K] and [K] is [K + 1, K], Stan's append_row). (None, []) when
    unknown or refused elsewhere (ranks, dim out of range: ``Checker._join_ranks``)."""
    from .check import sizes

    if not shapes or any(s is None for s in shapes):
        return None, []
    issues = []
    if dim >= 0:
        rank = len(shapes[0])
        if any(len(s) != rank for s in shapes) or dim >= rank:
            return None, []
        for s in shapes[1:]:
            for k in range(rank):
                rel = sizes.compare(shapes[0][k], s[k])
                if k != dim and rel != sizes.Relation.EQUAL:
                    issues.append(sizes.Mismatch(shapes[0][k], s[k],
                                                 rel == sizes.Relation.DIFFERENT))
        shape = list(shapes[0])
        shape[dim] = sum((s[dim] for s in shapes[1:]), shape[dim])
        return tuple(shape), issues
    rank = max(len(s) for s in shapes)
    if dim < -rank:
        return None, []
    padded = [(sizes.ONE,) * (rank - len(s)) + tuple(s) for s in shapes]
    at = rank + dim
    rest = padded[0][:at] + (sizes.ONE,) + padded[0][at + 1:]
    for p in padded[1:]:
        rest, more = sizes.broadcast(rest, p[:at] + (sizes.ONE,) + p[at + 1:])
        issues += more
    joined = sum((p[at] for p in padded[1:]), padded[0][at])
    return rest[:at] + (joined,) + rest[at + 1:], issues


def cat_rule(args, kwargs):
    """cat([a, b], dim): the items' shape with their sizes along dim added (N + M)."""
    items = getattr(args[0], "value", None) if args else None
    d = kwargs.get("dim", args[1] if len(args) > 1 else None)
    dim = 0 if d is None else getattr(d, "value", None)
    if not isinstance(items, list) or not items or not isinstance(dim, int):
        return None
    return cat_sizes([t.shape for t in items], dim)[0]


register(Builtin("cat", "rt.cat", ("xs", "dim"), 1, shape=cat_rule,
                 doc="concatenate a list along dim"))
register(Builtin("eye", "rt.eye", ("n",), 1, shape=eye_rule, doc="identity matrix"))
register(Builtin("zeros", "rt.zeros", (), 0, shape=sizes_rule, variadic=True,
                 doc="zeros(N, D)"))
register(Builtin("ones", "rt.ones", (), 0, shape=sizes_rule, variadic=True, doc="ones(N, D)"))
register(Builtin("arange", "rt.arange", ("n",), 1, shape=arange_rule, result="int",
                 doc="0, 1, ..., n-1"))
register(Builtin("cholesky", "torch.linalg.cholesky", ("a",), 1, shape=same_as_first,
                 doc="lower Cholesky factor"))
register(Builtin("diag", "torch.diag_embed", ("v",), 1, doc="diagonal matrix from a vector",
                 result="as_first",
                 shape=lambda args, kwargs: (tuple(args[0].shape) + tuple(args[0].shape[-1:])
                                             if args and args[0].shape else None)))
register(Builtin("solve", "torch.linalg.solve", ("a", "b"), 2,
                 shape=lambda args, kwargs: args[1].shape if len(args) > 1 else None,
                 doc="x with a @ x = b (Stan's mdivide_left), without forming a's inverse"))
register(Builtin("logdet", "torch.logdet", ("a",), 1, shape=scalar,
                 doc="log-determinant of a positive-definite matrix"))
register(Builtin("where", "torch.where", ("cond", "a", "b"), 3, doc="elementwise choice"))
register(Builtin("clamp", "rt.clamp", ("x", "min", "max"), 1, shape=same_as_first,
                 result="as_first", plain=True,  # clamp(k, 0, 2) of int k stays int
                 doc="clamp to [min, max]"))
register(Builtin("normal_cdf", "rt.normal_cdf", ("x",), 1, shape=same_as_first,
                 doc="standard normal CDF"))


# ---- recursions: scan(f, init, xs) (ppl/runtime/scan.py; docs "Recursions") --------
def _scan_xs(args, kwargs):
    return kwargs.get("xs", args[2] if len(args) > 2 else None)


def _scan_init(args, kwargs):
    return kwargs.get("init", args[1] if len(args) > 1 else None)


def scan_rule(args, kwargs):
    """[T + 1, ...init]: the carries, init first, for xs of [T, ...]."""
    xs, init = _scan_xs(args, kwargs), _scan_init(args, kwargs)
    if xs is None or init is None or xs.shape is None or not xs.shape or init.shape is None:
        return None
    return (xs.shape[0] + 1,) + tuple(init.shape)


def _scan_params(args, kwargs):
    """(carry, x): the carry has init's shape, x one row of xs."""
    xs, init = _scan_xs(args, kwargs), _scan_init(args, kwargs)
    return (None if init is None else init.shape,
            None if xs is None or xs.shape is None or not xs.shape else tuple(xs.shape[1:]))


def _scan_carry(args, kwargs):
    """The body's value broadcasts to the carry, init's shape (the carry never grows)."""
    return _scan_params(args, kwargs)[0]


def _scan_kinds(args, kwargs):
    """(carry, x): the carry is real (a number init is made xs's float or the default
    dtype), x has the kind of xs's rows: an int xs gives int x, an index in the body."""
    xs = _scan_xs(args, kwargs)
    return ("real", xs.kind if xs is not None and xs.kind in ("int", "bool") else "real")


register(Builtin("scan", "rt.scan", ("f", "init", "xs"), 3, shape=scan_rule,
                 functions={"f": FunctionParam(("carry", "x"), _scan_params, _scan_carry,
                                              _scan_kinds, rows={1: "xs"})},
                 sequences=("xs",),
                 doc="the recursion out[0] = init, out[t + 1] = f(out[t], xs[t]): "
                     "[T + 1, ...init] for xs of [T, ...]"))


def log_prob_rule(args, kwargs):
    """log_prob(d, x): one number per batch element, d's batch broadcast with x's."""
    d = kwargs.get("dist", args[0] if args else None)
    x = kwargs.get("value", args[1] if len(args) > 1 else None)
    if d is None or x is None or d.shape is None or x.shape is None or d.event is None:
        return None
    batch = tuple(d.shape[: len(d.shape) - d.event])
    xb = tuple(x.shape[: max(len(x.shape) - d.event, 0)])
    return batch if len(batch) >= len(xb) and not xb or batch == xb else (
        xb if not batch else None)


for _name, _doc in (("log_prob", "log density of value under dist (Stan's _lpdf, _lpmf)"),
                    ("log_cdf", "log P(X <= value) under dist (Stan's _lcdf)"),
                    ("log_ccdf", "log P(X > value) under dist (Stan's _lccdf)")):
    register(Builtin(_name, f"rt.{_name}", ("dist", "value"), 2, shape=log_prob_rule,
                     doc=_doc))

# ---- Gaussian-process kernels (values; sums and products are kernels too) --------
for _name, _cls, _params in (
    ("rbf", "RBF", ("lengthscale", "variance")),
    ("matern12", "Matern12", ("lengthscale", "variance")),
    ("matern32", "Matern32", ("lengthscale", "variance")),
    ("matern52", "Matern52", ("lengthscale", "variance")),
    ("periodic", "Periodic", ("lengthscale", "period", "variance")),
    ("linear", "Linear", ("variance",)),
    ("white", "White", ("variance",)),
):
    register(Builtin(_name, f"rt.kernels.{_cls}", _params, 0, kind="kernel", result="kernel",
                     doc=f"{_name} kernel"))
register(Builtin("gram", "rt.gram", ("kernel", "x", "x2", "jitter"), 2, shape=gram_rule,
                 doc="covariance matrix k(x, x2) (+ jitter on the diagonal when square)"))

# ---- networks ---------------------------------------------------------------------
# the words act= takes, the activations of ppl.runtime.nn (a word choice: act=tanhh is
# one located error with a did-you-mean)
ACTIVATIONS = ("tanh", "relu", "sigmoid", "softplus", "elu", "gelu")
register(Builtin("mlp", "rt.nn.MLP", ("in_dim", "hidden", "out_dim", "act"), 3,
                 kind="network", result="network", choices={"act": ACTIVATIONS},
                 lists=("hidden",),  # [] is legal: no hidden layer, one Linear
                 doc="fully connected network; weights are point estimates (pyro.module)"))
register(Builtin("cnn", "rt.nn.CNN",
                 ("in_shape", "channels", "out_dim", "kernel_size", "act", "pool"), 3,
                 kind="network", result="network", choices={"act": ACTIVATIONS},
                 doc="small convolutional network on images [..., C, H, W]: conv -> act "
                     "(-> max-pool) per channel count, then flatten -> linear; weights are "
                     "point estimates (pyro.module)"))
