"""The checker: names, roles, types, constraints and symbolic sizes of a BDL program.

It walks each model once, in order, and records for every name its :class:`Symbol`
(role, type, shape) and for every expression its :class:`Ty`. Errors are collected, not
raised one at a time, so a file with several mistakes reports them all. Size mismatches
that only data can settle (``N`` vs ``K``) become :class:`DeferredCheck` entries that the
runtime verifies when data binds the sizes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from .. import builtins
from ..infer import methods as infer_methods
from ..syntax import ast
from ..syntax import format as fmt
from ..syntax.diagnostics import BdlError, Diagnostic, Span
from . import signatures, sizes
from .guides import check_guides
from .labels import LabelLayout
from .method_fit import method_mismatch
from .supports import SUPPORT_ARGS as _SUPPORT_ARGS  # arguments that set a support
from .types import (
    BASE_TYPES,
    CONSTRAINED_TYPES,
    SUPPORT_OF_CONSTRAINT,
    TENSOR_KINDS,
    UNKNOWN,
    Symbol,
    Ty,
)

# Distribution parameters that take a distribution, not a tensor.
# arguments that take a distribution: any ``*_dist`` / ``*_distribution`` (an HMM's
# observation_dist, Truncated's base_dist), and these
_DIST_PARAMS = {"base", "component0", "component1"}


@dataclass
class DeferredCheck:
    """Two dimensions that must agree once data fixes the sizes (``at_least``: ``left``
    may also be larger, as a dimension read by a plate's index only up to the plate's size)."""

    left: str
    right: str
    span: Span
    what: str
    at_least: bool = False


@dataclass
class DataIndex:
    """An index read straight from int data (``g`` or ``g[m]``, every value of ``g``, plus
    ``offset``) into a dimension of size ``size`` of ``what``: binding checks the values
    are in [0, size)."""

    name: str
    size: str
    span: Span
    what: str
    offset: int = 0  # g[m] - 1: -1


@dataclass
class SiteInfo:
    """What the code generator needs to know about one statement."""

    role: str
    plates: tuple[str, ...] = ()
    event_dims: tuple | None = None  # per-plate-element shape to make an event of
    constraint: str | None = None    # pyro constraint source text for a restricted latent
    bounds: dict = field(default_factory=dict)
    obs_cast: bool = False           # observe int/bool data with a real-valued density
    obs_align: tuple | None = None   # plate dims of observed data in nested plates
    label_free: bool = False         # a continuous latent reading a label outside plates
    # a latent whose support follows latents or params (Uniform(a, a + 1), real<lower=a>):
    # drawn on the real line and mapped with the current bounds (rt.sample_in_support)
    in_support: bool = False
    # a factor's term in plates: how many of its dims are its own, past its plate dims
    # (Pyro's layout: [I, 1] of a latent of an outer plate has none), summed per element
    factor_own: int | None = None


@dataclass
class PlateInfo:
    name: str
    size: sizes.Dim
    dim: int
    subsample: bool
    subsampled: list[tuple[str, int]] = field(default_factory=list)  # (data name, axis)
    index: str | None = None  # the name of its index (plate i in N)


@dataclass
class InferSpec:
    method: str
    options: dict
    span: Span


@dataclass
class CheckedModel:
    model: ast.Model
    symbols: dict[str, Symbol]
    sizes: list[str]
    types: dict[int, Ty]
    sites: dict[int, SiteInfo]
    plates: dict[int, PlateInfo]
    deferred: list[DeferredCheck]
    infer: InferSpec | None
    warnings: list[Diagnostic]
    # data arguments observed by a ``~`` and never read in an expression: a simulation
    # (``sample_prior``) may leave them out, since the model only ever draws them
    observed_only: frozenset[str] = frozenset()
    # data names read inside nested plates -> the Pyro dims of their plate dimensions
    # (``rt.plate_aligned``): ``g: real[N]`` in plates N (dim -2) and M is ``[N, 1]`` there
    aligned: dict[int, tuple] = field(default_factory=dict)
    # distribution arguments with one value per plate element whose element shape is
    # shorter than the site's: id -> (their own per-element dims, unit dims to insert
    # before those) (``rt.per_element``): ``m`` [N] for ``y`` [N, W] in plate N is [N, 1]
    pads: dict[int, tuple] = field(default_factory=dict)
    # what no inference method can fit but a prior simulation can run (a Poisson latent):
    # warnings at check, errors when a fit starts (Model.resolve_infer)
    fit_errors: list = field(default_factory=list)
    # reads of a value drawn or computed in a plate after every plate around it has
    # closed, where Pyro left unit dims between its plate dims: id -> (the plates' dims,
    # its own per-element dims) (``rt.plate_closed``: [N, 1] -> [N], its declared shape)
    unaligned: dict[int, tuple] = field(default_factory=dict)
    # ``a[j]`` of a value drawn in ``plate j`` (and ``b[j, 1]``): the value already has
    # one element per plate element there, so the plate's indices are dropped: id -> (the
    # number of plate indices dropped, the plate dims kept whole before the rest)
    self_indexed: dict[int, tuple] = field(default_factory=dict)
    # reductions over all elements (``sum(w[i])``, no ``dim``) of a value with one element
    # per plate element: id -> its per-element dims, which alone are reduced
    # (``rt.reduce_elements``), as Stan's sum(w[i]) in the loop is one sum per row
    elem_reduce: dict[int, int] = field(default_factory=dict)
    # values computed outside plates from labels summed out there (laid out [K, 1, ...,
    # own dims]) read where their own dims are plate dims: a distribution argument of a
    # vector drawn in plates (codegen's enumeration plates), a read in a plate of their
    # size: id -> (the plates' Pyro dims, their own dims) (``rt.label_aligned``)
    label_aligned: dict[int, tuple] = field(default_factory=dict)
    # indexing such a value (``w[d]``, ``w[0]``): id -> its own dims, indexed from the
    # right with its other dims broadcast against the indices (Pyro's ``Vindex``)
    label_vindex: dict[int, int] = field(default_factory=dict)
    # a ``dim`` counted from the left (``sum(w, dim=0)``) of such a value (or of stack
    # over per-element values in plates): id of the number -> the value's dims from that
    # left, so it is counted from the right (dim - own) whatever dims lie left of them
    label_dims: dict[int, int] = field(default_factory=dict)
    # a list literal of such values, or of values with one value per plate element inside
    # plates (and stack/cat of one without ``dim``): id -> the dim (from the right) to
    # stack along, left of the values' own dims, right of the label's or the plates'
    # dims ([K, 1, 2, D] for a label's; [w, 1 - w] of w: real[N] in plate N is [N, 2])
    stacks: dict[int, int] = field(default_factory=dict)
    # ``a @ b`` with an operand such a value: id -> the own ranks of a and b, a vector
    # one a one-row (column) matrix so that the label's dims stay batch dims
    # (``rt.label_matmul``)
    label_matmul: dict[int, tuple] = field(default_factory=dict)
    # int data read as an index (see DataIndex)
    data_indices: list[DataIndex] = field(default_factory=list)
    # calls of a built-in function or distribution (by id), which a model name of the same
    # spelling does not shadow unless that name is a network or function (``sd ~ ...``,
    # then ``sd(x)`` is the built-in): lowering calls those, not the model's value
    builtin_calls: frozenset[int] = frozenset()
    # the model's guide block, checked as a model of its own (ppl.check.guides)
    guide: CheckedModel | None = None
    # an index whose plate index (or per-element index) comes before a dim it keeps
    # (``x2[i, :]`` under plates i and j): id -> those dims, counted from the right, which
    # the result holds as its own dims, after the index's plate dims: the row is read
    # whole there, not cut to an inner plate's minibatch (lower.py); an operand whose
    # plate dim meets the other's own dim (``v`` in ``x2[i, :] * v``): id -> True, read
    # whole
    rows_read: dict[int, frozenset | bool] = field(default_factory=dict)
    # such an index into each element's own dims (label_vindex) whose items do not vary
    # along the plates (w[0], w[1:], w[idx] of a global idx): torch's own indexing after
    # the plate dims, w[..., idx] (Vindex would pair idx's dims with the plates')
    plain_index: frozenset[int] = frozenset()
    # an index whose items with one value per plate element follow a slice (A[:, m] in
    # plate m, Stan's col(A, m)): id -> (the dims kept before them, their dims), which
    # lowering moves after them, so the plate dims come first (torch put them last)
    plate_first: dict[int, tuple[int, int]] = field(default_factory=dict)
    # a plate statement (by id) -> the values computed in it that do not vary along its
    # plates (w = u in plate n), with those plates' sizes: copied to each element when
    # the outermost plate closes (rt.plate_spread), so they keep the leading sizes
    spread: dict[int, list] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.model.name

    def ty(self, expr: ast.Expr) -> Ty:
        return self.types.get(id(expr), UNKNOWN)

    def drawn(self) -> dict[str, tuple[int, int, str]]:
        """The latents a ``~`` draws: name -> (line, col of the ``~``'s name, how to
        declare it as a data argument: ``y: real[N]``), for binding to refuse a data key
        that names one (``ppl.runtime.data.bind``)."""
        out = {}
        for name, sym in self.symbols.items():
            if sym.role != "latent" or not isinstance(sym.node, ast.Sample):
                continue
            if sym.node.type is not None:
                decl = fmt.type_text(sym.node.type)
            else:
                own = [d for d in sym.ty.shape or () if d != 1]
                # as a person writes it: real[N - K], not sympy's real[-K + N]
                decl = sym.ty.kind + ("[" + ", ".join(sizes.Dim._of(d).signed() for d in own)
                                      + "]" if own else "")
            out[name] = (sym.span.line, sym.span.col, f"{name}: {decl}")
        return out


@dataclass
class CheckedProgram:
    program: ast.Program
    models: dict[str, CheckedModel]
    warnings: list[Diagnostic]

    def model(self, name: str | None = None) -> CheckedModel:
        if name is None:
            return list(self.models.values())[-1]
        return self.models[name]


def check(program: ast.Program, filename: str = "<string>", source: str | None = None
          ) -> CheckedProgram:
    """Check every model and infer line; raise :class:`BdlError` listing all errors."""
    errors: list[Diagnostic] = []
    warnings: list[Diagnostic] = []
    models: dict[str, CheckedModel] = {}
    if not program.models:
        errors.append(Diagnostic("the file defines no model (expected 'model Name(...) {')",
                                 Span(1, 1)))
    for m in program.models:
        if m.name in models:
            errors.append(Diagnostic(f"model '{m.name}' is defined twice", m.span))
            continue
        checker = _ModelChecker(m)
        checker.run()
        errors.extend(checker.errors)
        warnings.extend(checker.warnings)
        models[m.name] = checker.result()
    infers = _check_infers(program, models, errors, filename)
    for name, spec in infers.items():
        models[name].infer = spec
    check_guides(program, models, errors, warnings)
    if errors:
        errors.sort(key=lambda d: (d.span.line, d.span.col))
        raise BdlError(errors, filename, source)
    return CheckedProgram(program, models, warnings)


# ---- infer directives ---------------------------------------------------------------
def option_value(expr: ast.Expr):
    """The Python value of an option literal, or raise ValueError."""
    if isinstance(expr, ast.Number):
        return expr.value
    if isinstance(expr, ast.Bool):
        return expr.value
    if isinstance(expr, (ast.Name,)):
        return expr.id
    if isinstance(expr, ast.String):
        return expr.value
    if isinstance(expr, ast.Neg) and isinstance(expr.operand, ast.Number):
        return -expr.operand.value
    # structured values, for options of kind "spec" (e.g. np_train's task source):
    # [a, b] is a list, f(a, k=v) is {"call": "f", "args": [a], "kwargs": {"k": v}}
    if isinstance(expr, ast.ListLit):
        return [option_value(e) for e in expr.items]
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name):
        return {"call": expr.func.id, "args": [option_value(a) for a in expr.args],
                "kwargs": {k.name: option_value(k.value) for k in expr.kwargs}}
    raise ValueError("an option value must be a number, true/false, a name, a string, "
                     "a list or a call")


def validate_options(method_name: str, given: list[tuple[str, object, Span]], span: Span
                     ) -> tuple[dict, list[Diagnostic]]:
    """Check options against the method's table; return (values, errors)."""
    errs: list[Diagnostic] = []
    method = infer_methods.lookup(method_name)
    if method is None:
        hint = signatures.suggest(method_name, infer_methods.METHODS)
        notes = [f"did you mean '{hint}'?"] if hint else [
            "known methods: " + ", ".join(sorted(infer_methods.METHODS))]
        return {}, [Diagnostic(f"unknown inference method '{method_name}'", span, notes=notes)]
    values = {}
    for key, value, kspan in given:
        opt = method.options.get(key)
        if opt is None:
            hint = signatures.suggest(key, method.options)
            notes = [f"did you mean '{hint}'?"] if hint else [
                f"{method_name} takes: " + ", ".join(sorted(method.options))]
            errs.append(Diagnostic(f"unknown option '{key}' for {method_name}", kspan,
                                   notes=notes))
            continue
        if key in values:
            errs.append(Diagnostic(f"option '{key}' given twice", kspan))
            continue
        problem = _option_problem(opt, value)
        if problem:
            # a misspelt word among the option's choices, as a construct's (guide=lowrnk)
            notes = _did_you_mean(value, opt.choices) if opt.kind == "symbol" else []
            errs.append(Diagnostic(f"option '{key}' of {method_name}: {problem}", kspan,
                                   notes=notes))
            continue
        values[key] = float(value) if opt.kind is float else value
    return values, errs


def _did_you_mean(word, choices) -> list[str]:
    """The note suggesting the choice nearest to a misspelt ``word`` (none when no choice
    is near, or ``word`` is not a word): a method option's and a construct argument's."""
    hint = signatures.suggest(word, choices) if isinstance(word, str) else None
    return [f"did you mean '{hint}'?"] if hint else []


def _show_option(value) -> str:
    """An option value as BDL spells it (true, not Python's True)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, list):
        return "[" + ", ".join(_show_option(v) for v in value) + "]"
    if isinstance(value, dict) and "call" in value:
        parts = [_show_option(a) for a in value.get("args", [])]
        parts += [f"{k}={_show_option(v)}" for k, v in value.get("kwargs", {}).items()]
        return f"{value['call']}({', '.join(parts)})"
    return repr(value)


def _option_problem(opt, value) -> str | None:
    if opt.kind is bool:
        if isinstance(value, bool):
            return None
        return f"expected true or false, got {_show_option(value)}"
    if opt.kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expected an integer, got {_show_option(value)}"
    elif opt.kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expected a number, got {_show_option(value)}"
    elif opt.kind == "symbol":
        if value not in opt.choices:
            return f"expected one of {', '.join(opt.choices)}, got {_show_option(value)}"
        return None
    elif opt.kind == "spec":
        return opt.check(value) if opt.check is not None else None
    return opt.problem(value)


def _check_infers(program, models, errors, filename="<string>") -> dict[str, InferSpec]:
    out: dict[str, InferSpec] = {}
    for inf in program.infers:
        target = inf.model
        if target is None:
            if len(program.models) > 1:
                errors.append(Diagnostic(
                    "this file has several models; name one: 'infer Name with "
                    f"{inf.method}(...)'", inf.span))
                continue
            target = program.models[0].name if program.models else None
        elif target not in models:
            hint = signatures.suggest(target, models)
            errors.append(Diagnostic(f"'infer' names unknown model '{target}'", inf.span,
                                     notes=[f"did you mean '{hint}'?"] if hint else []))
            continue
        if target is None:
            continue
        if target in out:
            errors.append(Diagnostic(f"model '{target}' has more than one infer line",
                                     inf.span))
            continue
        if inf.args:
            errors.append(Diagnostic("infer options are keywords: name=value",
                                     inf.args[0].span))
        given = []
        for kw in inf.options:
            try:
                span = kw.span
                if kw.value.span.end_line == span.line and kw.value.span.end_col:
                    span = Span(span.line, span.col, span.line, kw.value.span.end_col)
                given.append((kw.name, option_value(kw.value), span))
            except ValueError as e:
                errors.append(Diagnostic(str(e), kw.value.span))
        values, errs = validate_options(inf.method, given, inf.span)
        errors.extend(errs)
        method = infer_methods.lookup(inf.method)
        if method is not None:
            errors.extend(method_mismatch(inf.method, models[target].model, inf.span))
            if not errs:  # ranges that depend on several options (lr with lr_scalars, ...)
                merged = {k: o.default for k, o in method.options.items()} | values
                given_spans = {key: kspan for key, _, kspan in given}
                errors.extend(Diagnostic(f"option '{key}' of {inf.method}: {problem}",
                                         given_spans.get(key, inf.span))
                              for key, problem in method.problems(merged))
        spans = {key: kspan for key, _, kspan in reversed(given)}  # the first one kept
        for key in values:
            opt = method.options[key]
            if opt.resolve is not None:
                values[key] = opt.resolve(values[key], filename, spans[key])
        out[target] = InferSpec(inf.method, values, inf.span)
    return out


# ---- models -------------------------------------------------------------------------
class _ModelChecker(LabelLayout):
    def __init__(self, model: ast.Model):
        self.model = model
        self.errors: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []
        self.symbols: dict[str, Symbol] = {}
        self.size_syms: dict[str, sizes.Dim] = {}
        self.types: dict[int, Ty] = {}
        self.sites: dict[int, SiteInfo] = {}
        self.plates_info: dict[int, PlateInfo] = {}
        self.deferred: list[DeferredCheck] = []
        self.data_indices: list[DataIndex] = []  # see CheckedModel.data_indices
        self.plate_stack: list[PlateInfo] = []
        self.observed: set[str] = set()
        self.observed_at: dict[str, Span] = {}  # where each observed name's first '~' is
        self._defining: str | None = None  # the name whose '~' or '=' is being checked
        self.used: set[str] = set()
        self.later: dict[str, Span] = {}
        self._tilde_ok: set[int] = set()  # construct calls that sit on the right of '~'
        self._fn_params: list[list[str]] = []  # parameters of the function literals entered
        # a function literal's parameter given each row of a call's argument (scan's x of
        # xs): name -> (that argument, its names' symbols at the call), for _data_index
        self._param_rows: dict[str, tuple[ast.Expr, dict]] = {}
        self.size_origin: dict[str, ast.Arg] = {}  # the first argument whose shape names a size
        self.optional_reads: dict[str, Span] = {}  # optional data read in an expression
        self.data_reads: set[str] = set()  # data arguments read in an expression
        self.aligned: dict[int, tuple] = {}  # see CheckedModel.aligned
        self.pads: dict[int, tuple] = {}  # see CheckedModel.pads
        # binary ops where a per-element operand met a global one whose dim has the plate's
        # size at the plate's dim (A[0] + u[m] of A: real[K, M] in plate M): id -> (the
        # per-element operand, its pad, the type with the global's dims its own), used where
        # a site has per-element dims for them (_per_element), else paired (as w @ X)
        self._paired: dict[int, tuple] = {}
        self.elem_reduce: dict[int, int] = {}  # see CheckedModel.elem_reduce
        self.label_aligned: dict[int, tuple] = {}  # see CheckedModel.label_aligned
        self.label_vindex: dict[int, int] = {}  # see CheckedModel.label_vindex
        self.label_dims: dict[int, int] = {}  # see CheckedModel.label_dims
        self.stacks: dict[int, int] = {}  # see CheckedModel.stacks
        self.label_matmul: dict[int, tuple] = {}  # see CheckedModel.label_matmul
        # a list literal stacked right of plate dims: id -> the position of its length
        # in its type (the plate dims before it; 0, the default, for other lists)
        self.list_at: dict[int, int] = {}
        # values computed (=) inside plates -> the plate width of their value
        self.det_width: dict[str, int | None] = {}
        self.fit_errors: list[Diagnostic] = []  # see CheckedModel.fit_errors
        self._dist_bound: dict[int, tuple] = {}  # distribution call -> (signature, bound)
        # a site's distribution in a plate: its arguments' size issues, held until the
        # site's per-element padding (_per_element) has put each size on its own dim
        self._site_dist: ast.Expr | None = None
        self._held_issues: dict[int, list] = {}
        self._in_builtin = 0  # how many built-in calls' arguments are being checked
        self._in_where = 0  # how many where(cond, a, b) branches are being checked
        self._own_reads: set[int] = set()  # label values read whole in a built-in's call
        self._indexed_call = 0  # the id of a call whose value is indexed (exp(w)[d])
        # labels drawn outside every plate, and values computed from them there: summed
        # out, they carry an enumeration dim on the left (ppl.infer.discrete)
        self.global_labels: set[str] = set()
        self.unaligned: dict[int, tuple] = {}  # see CheckedModel.unaligned
        self.self_indexed: dict[int, tuple] = {}  # see CheckedModel.self_indexed
        self.plain_index: set[int] = set()  # see CheckedModel.plain_index
        self.plate_first: dict[int, tuple[int, int]] = {}  # see CheckedModel.plate_first
        self.spread: dict[int, list] = {}  # see CheckedModel.spread
        # values drawn or computed inside plates -> the plates around their definition
        self.defined_in: dict[str, tuple] = {}
        # values whose plates have closed -> (plate dims, per-element dims) at run time
        self.closed_layout: dict[str, tuple] = {}
        # latents local to a subsampled plate that has closed -> that plate
        self.batch_local: dict[str, PlateInfo] = {}
        self.plate_uses: dict[str, list] = {}  # plate name -> the plates given that name
        # labels drawn in plates, and values computed from them there; those of plates
        # that have closed -> the plate (summed out, one label would stand for every row)
        self.plate_labels: set[str] = set()
        self.closed_labels: dict[str, PlateInfo] = {}
        self.builtin_calls: set[int] = set()  # see CheckedModel.builtin_calls
        self.rows_read: dict[int, frozenset | bool] = {}  # see CheckedModel.rows_read

    def result(self) -> CheckedModel:
        data = {a.name for a in self.model.args}
        return CheckedModel(self.model, self.symbols, list(self.size_syms), self.types,
                            self.sites, self.plates_info, self.deferred, None, self.warnings,
                            frozenset((self.observed & data) - self.data_reads), self.aligned,
                            self.pads, self.fit_errors, self.unaligned, self.self_indexed,
                            self.elem_reduce, self.label_aligned, self.label_vindex,
                            self.label_dims, self.stacks, self.label_matmul,
                            self.data_indices, frozenset(self.builtin_calls),
                            rows_read=self.rows_read, plain_index=frozenset(self.plain_index),
                            plate_first=self.plate_first, spread=self.spread)

    def err(self, msg: str, span: Span, notes: list[str] | None = None) -> None:
        self.errors.append(Diagnostic(msg, span, "error", notes or []))

    def warn(self, msg: str, span: Span) -> None:
        self.warnings.append(Diagnostic(msg, span, "warning"))

    # ---- signature ----
    def run(self) -> None:
        self._collect_later(self.model.body)
        self._declare_args()
        self._stmts(self.model.body)
        for name, span in self.optional_reads.items():
            # left out, an optional argument is a generated quantity drawn after the fit:
            # nothing in the model may read it (the model would get no value)
            self.err(f"'{name}' is optional data (declared with '?') and may be left out, so "
                     "the model cannot read it", span,
                     [f"observe it only: {name} ~ ...; or drop the '?' if it is always given"])
        for arg in self.model.args:
            if arg.name not in self.used and arg.name not in self.observed:
                if arg.name not in self.size_syms:
                    self.warn(f"data argument '{arg.name}' is never used", arg.span)

    def _collect_later(self, body) -> None:
        for s in body:
            name = getattr(s, "name", None)
            if name is not None and name not in self.later:
                self.later[name] = getattr(s, "name_span", s.span)
            if isinstance(s, ast.Plate):
                self._collect_later(s.body)

    def _declare_args(self) -> None:
        # Sizes first: any bare name in an argument's dimensions.
        for arg in self.model.args:
            for d in arg.type.dims:
                for n in _names_in(d):
                    self.size_syms.setdefault(n, sizes.size_symbol(n))
                    self.size_origin.setdefault(n, arg)
        # A scalar int argument is a size too (bound by its value), so it can shape
        # latents: `model M(y: real[N], G: int) { a: real[G] ~ ... }`; one observed by a
        # '~' (`k ~ Binomial(n, p)`, Stan's `int k; k ~ binomial(n, p)`, Pyro's obs=k) is
        # data, unless a shape names it.
        nodes = list(ast.walk(self.model.body))
        as_dims = {n for t in nodes if isinstance(t, ast.Type) for d in t.dims
                   for n in _names_in(d)} | {n for p in nodes if isinstance(p, ast.Plate)
                                            for n in _names_in(p.size)}
        observed = {s.name for s in nodes if isinstance(s, ast.Sample)} - as_dims
        for arg in self.model.args:
            if arg.type.base == "int" and not arg.type.dims and not arg.optional \
                    and arg.name not in observed:
                self.size_syms.setdefault(arg.name, sizes.size_symbol(arg.name))
        for arg in self.model.args:
            if arg.name in self.symbols:
                self.err(f"argument '{arg.name}' is declared twice", arg.span,
                         [f"first declared at {self.symbols[arg.name].span}"])
                continue
            ty, constraint = self._type(arg.type, allow_constrained=True,
                                        data=not getattr(arg, "optional", False))
            if arg.name in self.size_syms:
                if ty.kind != "int" or ty.shape != ():
                    self.err(f"'{arg.name}' is used as a size, so it must be declared 'int'",
                             arg.type.span)
                self.symbols[arg.name] = Symbol(arg.name, "size", Ty("int", (), dim=self.size_syms[
                    arg.name]), arg.span, node=arg)
                continue
            self.symbols[arg.name] = Symbol(arg.name, "data", ty, arg.span, random=arg.optional,
                                            optional=arg.optional, node=arg,
                                            constraint=constraint)
        for n, sym in self.size_syms.items():
            if n not in self.symbols:
                self.symbols[n] = Symbol(n, "size", Ty("int", (), dim=sym), self.model.span)
        from ..lower import RESERVED  # the generated Python's own names

        for name, sym in self.symbols.items():
            if not self._not_a_literal(name, sym.span):
                continue
            if name in RESERVED and sym.role in ("data", "size"):
                # data keys are the generated function's keyword arguments
                origin = self.size_origin.get(name)
                span = sym.span if sym.node is not None or origin is None else origin.type.span
                self.err(f"'{name}' cannot name a data argument or size: it is reserved in "
                         "the generated Python", span, [f"rename it, e.g. '{name}_'"])

    def _dim(self, expr: ast.Expr, *, declare: bool = False, plate: bool = False
             ) -> sizes.Dim | None:
        """A dimension: an integer, a size name, or +, -, * of them."""
        if isinstance(expr, ast.Number) and isinstance(expr.value, int) and expr.value >= 0:
            if expr.value > _MAX_SIZE:
                self.err(f"the size {expr.value} is more than a tensor dimension can hold "
                         f"({_MAX_SIZE})", expr.span)
                return None
            return sizes.const(expr.value)
        if isinstance(expr, ast.Name):
            sym = self.symbols.get(expr.id)
            if sym is not None and sym.ty.dim is not None:
                self.used.add(expr.id)
                return sym.ty.dim
            if expr.id in self.size_syms:
                return self.size_syms[expr.id]
            if sym is not None:
                self.err(f"'{expr.id}' is not a size (sizes are integers named in the "
                         "model's argument shapes)", expr.span)
                return None
            what = "a plate's size" if plate else "a size"
            self.err(f"unknown size '{expr.id}'", expr.span,
                     ["sizes are bound by the shapes of the model's data arguments",
                      f"{what} that no data shape names is an argument of its own: "
                      f"{expr.id}: int"])
            return None
        if isinstance(expr, ast.BinOp) and expr.op in ("+", "-", "*", "/"):
            a, b = self._dim(expr.left), self._dim(expr.right)
            if a is None or b is None:
                return None
            if expr.op == "/" and b == 0:
                self.err("division by zero in a dimension", expr.span)
                return None
            value = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
                     "/": lambda: a / b}[expr.op]()
            if value.is_number and not (value.is_Integer and value >= 0):
                self.err(f"a dimension must be a whole number of at least 0, but this one is "
                         f"{value}", expr.span)
                return None
            return value
        self.err("a dimension must be an integer, a size name, or arithmetic of them",
                 expr.span)
        return None

    def _type(self, t: ast.Type, allow_constrained: bool,
              data: bool = False, latent: bool = False) -> tuple[Ty, str | None]:
        """The declared type and its constraint; ``latent``: a drawn latent's, whose
        bounds may read latents (``self.random_bound`` then says so)."""
        self.random_bound = False
        dims = [self._dim(d) for d in t.dims]
        shape = None if any(d is None for d in dims) else tuple(dims)
        bounds = {}
        for b in t.bounds:
            if b.name not in ("lower", "upper"):
                hint = signatures.suggest(b.name, ("lower", "upper"))
                self.err(f"unknown bound '{b.name}' (expected lower or upper)", b.span,
                         [f"did you mean '{hint}'?"] if hint else None)
            elif b.name in bounds:
                self.err(f"bound '{b.name}' given twice", b.span)
            else:
                bounds[b.name] = b.value
                bty = self._expr(b.value)
                # Stan 2.27's vector bounds (real<lower=U>[N] with U: real[N]): one bound
                # per element, elementwise in the torch constraint
                vector = bty.kind in ("real", "int") and bty.shape not in ((), None)
                if not vector and (bty.kind not in ("real", "int", "unknown")
                                   or bty.shape not in ((), None)):
                    self.err(f"bound '{b.name}' must be a number", b.value.span)
                elif latent and _is_random(b.value, self.symbols):
                    # mapped with its current value in every evaluation, as Stan does
                    self.random_bound = True
                    if vector:
                        self._vector_bound(b, bty.shape, shape)
                elif vector and not _is_random(b.value, self.symbols):
                    self._vector_bound(b, bty.shape, shape)
                elif _is_random(b.value, self.symbols):
                    # Pyro fixes a support's transform when the site is set up, so a
                    # bound that moves with another latent would give wrong posteriors.
                    self.err(f"bound '{b.name}' must not depend on random quantities; "
                             "write the bounded variable as a transform of an unbounded or "
                             "unit-interval latent instead", b.value.span)
        low, high = (_literal(bounds[k]) if k in bounds else None for k in ("lower", "upper"))
        if low is not None and high is not None and low > high:
            self.err(f"the bounds of this type leave no values: lower ({low:g}) is above "
                     f"upper ({high:g})", bounds["upper"].span)
        elif low is not None and low == high and not data:
            # a bounded draw maps the reals onto (lower, upper): an interval of one point
            # was a "math domain error" when the fit started (data of that one value is
            # legal: x: real<lower=1, upper=1>[N] holds ones)
            self.err(f"a drawn value needs bounds with room between them: lower and upper "
                     f"are both {low:g}, so it could only be {low:g}", bounds["upper"].span,
                     [f"a constant is a value: name = {low:g}"])
        if t.base in BASE_TYPES:
            if t.base == "bool" and bounds:
                self.err("bool takes no bounds", t.span)
            return Ty(t.base, shape), _bounds_constraint(bounds)
        if t.base in CONSTRAINED_TYPES:
            rank, constraint = CONSTRAINED_TYPES[t.base]
            if bounds:
                self.err(f"'{t.base}' takes no bounds", t.span)
            if not t.dims:
                self.err(f"'{t.base}' needs a size: {t.base}[K]", t.span)
                return Ty("real", None), constraint
            if shape is not None and rank == 2:
                shape = shape + (shape[-1],)
            return Ty("real", shape), constraint
        known = list(BASE_TYPES) + list(CONSTRAINED_TYPES)
        stan = _STAN_TYPES.get(t.base)
        hint = signatures.suggest(t.base, known)
        self.err(f"unknown type '{t.base}'", t.span,
                 [f"Stan's {t.base}[...] is written {stan} in BDL"] if stan
                 else [f"did you mean '{hint}'?"] if hint else ["types: " + ", ".join(known)])
        return UNKNOWN, None

    def _vector_bound(self, b, bshape, shape) -> None:
        """A bound of shape ``bshape`` on a value declared ``shape``: it must broadcast to
        ``shape`` (not widen it); a size known only from data is checked at binding. In
        plates ``shape`` includes the plate dims, and the bound is read as any value of
        that shape there (``U: real[N]`` in ``plate N`` is ``U[n]`` per element)."""
        what = f"bound '{b.name}' {sizes.show(bshape)}"
        if shape is None:
            return
        batched = [p for p in self.plate_stack if p.subsample]
        if batched and bshape:
            # the guide's transform takes the support of the first minibatch it sees
            # (Pyro's autoguides build biject_to(support) once): later batches would be
            # fitted against other rows' bounds
            self.err(f"{what} varies along plate {batched[0].name}, which is subsampled "
                     "(batch): a bound per element needs the whole plate", b.value.span,
                     [f"drop `batch` from plate {batched[0].name}, or use one bound for "
                      "every element"])
            return
        if bshape and len(bshape) < len(shape):
            # numpy would line [N] up with the last dim of [N, K] (per column; silently so
            # when N = K); Stan asks for the declared shape
            self.err(f"{what} has fewer dimensions than the declared shape "
                     f"{sizes.show(shape)}: give one bound per element (the declared shape) "
                     "or one number", b.value.span)
            return
        full, issues = sizes.broadcast(bshape, shape)
        if full is not None and len(full) > len(shape):
            self.err(f"{what} has more dimensions than the declared shape "
                     f"{sizes.show(shape)}", b.value.span)
            return
        for m in issues:
            if m.provable:
                self.err(f"{what} does not fit the declared shape {sizes.show(shape)}: "
                         f"{m.left} vs {m.right}", b.value.span)
            else:
                self._defer(m.left, m.right, b.value.span,
                            f"{what} and the declared shape {sizes.show(shape)}")

    # ---- statements ----
    def _not_a_literal(self, name: str, span: Span) -> bool:
        """False, after a located error, for a name that is a boolean literal."""
        if name in ("true", "false"):
            self.err(f"'{name}' is a boolean literal and cannot name a value", span,
                     [f"rename it, e.g. 'is_{name}'"])
            return False
        return True

    def _define(self, name: str, span: Span, notes: list[str] | None = None) -> bool:
        if not self._not_a_literal(name, span):
            return False
        prev = self.symbols.get(name)
        if prev is not None:
            origin = self.size_origin.get(name)
            if prev.role == "size" and prev.node is None and origin is not None:
                note = (f"'{name}' is a size, named in the shape of '{origin.name}' at "
                        f"{origin.span}")
            else:
                note = f"first defined at {prev.span}" if prev.span.line else "it is a size"
            self.err(f"'{name}' is already defined", span, [note, *(notes or [])])
            return False
        return True

    def _stmts(self, body) -> None:
        for s in body:
            if isinstance(s, ast.Sample):
                self._sample(s)
            elif isinstance(s, ast.Assign):
                self._assign(s)
            elif isinstance(s, ast.Param):
                self._param(s)
            elif isinstance(s, ast.Factor):
                ty = self._expr(s.value)
                if ty.kind not in TENSOR_KINDS + ("unknown",):
                    self.err("factor needs a numeric log-density term", s.value.span)
                self.sites[id(s)] = SiteInfo("factor", self._plate_names())
                width = self._plate_width(s.value) if self.plate_stack else None
                if width is not None and ty.shape is not None and width <= len(ty.shape):
                    self.sites[id(s)].factor_own = len(ty.shape) - width
            elif isinstance(s, ast.Plate):
                self._plate(s)
            name = getattr(s, "name", None)
            if self.plate_stack and isinstance(name, str) and name in self.symbols \
                    and name not in self.defined_in:
                self.defined_in[name] = tuple(self.plate_stack)

    def _plate_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.plate_stack)

    def _plate_shape(self) -> tuple:
        """The enclosing plates as Pyro lays them out: one dimension per plate dim, from
        the outermost plate's (``dim=-2`` for a plate with one nested inside) to -1, the
        plates' sizes at their dims and 1 elsewhere (``[N, 1]`` in the body of an outer
        plate, ``[N, M]`` inside both)."""
        return _runtime_form(tuple(p.size for p in self.plate_stack), self.plate_stack)

    def _aligned_plates(self, shape) -> list:
        """The enclosing plates that data of ``shape`` has one value per element of: its
        leading dimensions equal to consecutive plates' sizes, outermost first."""
        out: list = []
        if not shape:
            return out
        # from the plate its first dimension belongs to: g: real[M] under plates N and M
        # is one value per element of M
        start = next((k for k, p in enumerate(self.plate_stack)
                      if sizes.compare(shape[0], p.size) == sizes.Relation.EQUAL), None)
        if start is None:
            return out
        for p, d in zip(self.plate_stack[start:], shape, strict=False):
            if sizes.compare(d, p.size) != sizes.Relation.EQUAL:
                break
            out.append(p)
        return out

    def _plate(self, s: ast.Plate) -> None:
        size = self._dim(s.size, plate=True)
        name = s.index or (s.size.id if isinstance(s.size, ast.Name) else f"plate_{s.span.line}")
        if s.batch is not None:
            bt = self._expr(s.batch)
            if bt.kind != "int" or bt.shape != ():
                self.err("batch needs an integer size", s.batch.span)
        # Plate dims: the innermost plate is -1, so dim = -(1 + nesting depth below).
        info = PlateInfo(name, size if size is not None else sizes.size_symbol(name),
                         -1 - _depth_below(s.body), s.batch is not None)
        earlier = self.plate_uses.setdefault(name, [])
        if earlier:
            # Pyro names a plate's site by the plate: a second block of the same name
            # gets a name of its own ("N_2")
            info.name = f"{name}_{len(earlier) + 1}"
            while info.name in self.plate_uses:
                info.name += "_"
            first = next((p for p in earlier if p.subsample), None)
            if s.batch is not None and first is not None:
                self.err(f"plate {name} is subsampled twice (batch): two blocks over the same "
                         "size would each draw their own minibatch", s.batch.span,
                         [f"put every statement of plate {name} in one block, or give one "
                          "of them no batch"])
        earlier.append(info)
        # The plate's position among its enclosing plates: data dims at that axis subsample.
        axis = len(self.plate_stack)
        self.plates_info[id(s)] = info
        self.plate_stack.append(info)
        if s.batch is not None and size is not None:
            for sym in self.symbols.values():
                if sym.role in ("data", "transformed") and sym.ty.shape is not None:
                    # one value per element of this plate: its dim at the plate's place
                    # among the plates it follows (g: real[M] under plates N and M is
                    # subsampled at dim 0), or at the plate's depth
                    aligned = self._aligned_plates(sym.ty.shape)
                    if info in aligned:
                        info.subsampled.append((sym.name, aligned.index(info)))
                    elif len(sym.ty.shape) > axis and sizes.compare(
                            sym.ty.shape[axis], size) == sizes.Relation.EQUAL:
                        info.subsampled.append((sym.name, axis))
                elif sym.role in ("latent", "deterministic") and not sym.plates \
                        and sym.ty.shape:
                    # a latent or value of the model's whole scope (a GP's f: real[N], a
                    # latent of a closed plate) is read one element per plate element
                    # too, so the minibatch's elements (was Pyro's 'Shape mismatch'); a
                    # value computed from a label, [K, 1.., own dims], is cut along its own
                    # dim, counted from the right (v = x * (b + 3 * z) was not cut)
                    aligned = self._aligned_plates(sym.ty.shape)
                    if info in aligned:
                        info.subsampled.append((sym.name, aligned.index(info) - (
                            len(sym.ty.shape) if sym.name in self.global_labels else 0)))
        defined_index = False
        info.index = s.index
        if s.index is not None and self._define(s.index, s.span):
            self.symbols[s.index] = Symbol(
                s.index, "index", Ty("int", _runtime_form((info.size,), [info])), s.span)
            defined_index = True
        before = set(self.symbols)
        self._stmts(s.body)
        self.plate_stack.pop()
        if defined_index:
            del self.symbols[s.index]
        if not self.plate_stack:
            for name in sorted(set(self.symbols) - before):
                self._close(self.symbols[name], s)

    def _close(self, sym: Symbol, plate: ast.Plate) -> None:
        """``sym``, drawn or computed inside plates that have all closed now, is read from
        here on like a value defined outside the plates with those leading sizes (one
        element per plate element: ``u`` of ``plate I { u ~ ... }`` is ``u[i]`` in a later
        ``plate i in I``). Where nested plates laid it out with unit dims between its
        plate dims ([I, 1] for a latent of an outer plate) its reads drop them
        (``rt.plate_closed``), so it has its declared shape. A latent of a subsampled
        plate holds only the last minibatch's rows: reading it is an error (_name)."""
        plates = self.defined_in.get(sym.name)
        if sym.role not in ("latent", "deterministic", "transformed") or not sym.plates \
                or not plates:
            return
        batch = next((p for p in plates if p.subsample), None)
        if batch is not None:
            self.batch_local[sym.name] = batch
        if sym.name in self.plate_labels:
            self.closed_labels[sym.name] = plates[0]
        shape = sym.ty.shape
        if self.det_width.get(sym.name) == 0 and sym.role != "latent" and batch is None \
                and shape is not None:
            # w = u in plate n does not vary along it: still one value per element after
            # it, as a value that does (w = u + 0 * x), [N] ("Plates")
            self.spread.setdefault(id(plate), []).append(
                (sym.name, tuple(p.size for p in plates), len(shape)))
            self.symbols[sym.name] = replace(sym, plates=(), ty=replace(
                sym.ty, shape=tuple(p.size for p in plates) + tuple(shape)))
            return
        width = -plates[0].dim
        if width > len(plates) and _laid_out(shape, plates):
            keep = {width + p.dim for p in plates}
            self.closed_layout[sym.name] = (tuple(p.dim for p in plates), len(shape) - width)
            shape = tuple(shape[k] for k in sorted(keep)) + tuple(shape[width:])
        self.symbols[sym.name] = replace(sym, plates=(), ty=replace(sym.ty, shape=shape))

    def _tilde_construct(self, s: ast.Sample):
        """The construct on the right of ``~``, when it is one (``f ~ gp_prior(...)``)."""
        if not isinstance(s.dist, ast.Call) or s.dist.func_name is None:
            return None
        if self._calls_value(s.dist.func_name):
            return None
        b = builtins.lookup(s.dist.func_name)
        return b if b is not None and b.tilde else None

    def _construct_sample(self, s: ast.Sample, b) -> None:
        self._tilde_ok.add(id(s.dist))
        ty = self._expr(s.dist)
        existing = self.symbols.get(s.name)
        plates = self._plate_names()
        if b.tilde == "network":
            if existing is None or existing.role != "network":
                what = "not defined" if existing is None else f"{_a(existing.ty.kind)} value"
                self.err(f"{b.name} is a prior on a network's weights, and '{s.name}' is "
                         f"{what}", s.name_span,
                         [f"define the network first: {s.name} = mlp(...)"])
                return
            built = (existing.ty.value or {}).get("builtin")
            made = builtins.lookup(built) if built else None
            if made is not None and made.kind != "network":
                # its weights are not one network's (a monotone_dbm's units): the prior's
                # runtime found no module there (AttributeError 'BoundNet' ...)
                self.err(f"{b.name} is a prior on a network's weights, and '{s.name}' is a "
                         f"{built} value, not a network", s.name_span,
                         [f"a weight prior takes a network made by mlp or cnn: {s.name} = "
                          f"mlp(...), then {s.name} ~ {b.name}(...)"])
                return
            if existing.ty.value and existing.ty.value.get("prior"):
                self.err(f"network '{s.name}' already has a prior", s.name_span)
                return
            net = dict(existing.ty.value or {})
            net["prior"] = b.name
            existing.ty = Ty("network", None, value=net)
            self.sites[id(s)] = SiteInfo("construct", plates)
            return
        if not self._define(s.name, s.name_span):
            return
        context = b.context(s, self.model) if b.context is not None else None
        if isinstance(context, tuple):
            message, argument = context
            at = next((k.value.span for k in s.dist.kwargs if k.name == argument), s.span)
            self.err(message, at)
        if s.type is not None:
            declared, _ = self._type(s.type, allow_constrained=False)
            if declared.kind != "unknown":
                ty = Ty(declared.kind, declared.shape)
        kind = ty.kind if ty.kind in TENSOR_KINDS else "real"
        self.sites[id(s)] = SiteInfo("construct", plates)
        self.symbols[s.name] = Symbol(s.name, "latent", Ty(kind, ty.shape), s.name_span,
                                      random=True, node=s, plates=plates)

    def _sample(self, s: ast.Sample) -> None:
        outer, self._site_dist = self._site_dist, s.dist
        try:
            self._sample_site(s)
        finally:
            self._site_dist = outer
            for issues, span, what in self._held_issues.pop(id(s.dist), ()):
                self._report(issues, span, what)

    def _sample_site(self, s: ast.Sample) -> None:
        construct = self._tilde_construct(s)
        if construct is not None:
            self._construct_sample(s, construct)
            return
        dty = self._defining_expr(s.name, s.dist)
        existing = self.symbols.get(s.name)
        plates = self._plate_names()
        if existing is not None and existing.role == "network":
            self.err(f"'{s.name}' is a network; placing a prior on its weights needs a "
                     "network prior construct", s.span)
            return
        if dty.kind not in ("dist", "unknown"):
            self.err(f"the right of '~' must be a distribution, not {_a(dty.kind)} value",
                     s.dist.span, ["distributions are capitalised: Normal(0, 1)"])
            return
        if existing is not None and existing.role in ("data", "transformed"):
            if s.name in self.observed:
                self.err(f"'{s.name}' is observed twice", s.name_span,
                         [f"first observed at {self.observed_at[s.name]}"])
                return
            self.observed.add(s.name)
            self.observed_at[s.name] = s.name_span
            if s.type is not None:
                self.err(f"'{s.name}' is data; its type is declared in the model signature",
                         s.type.span)
            info = SiteInfo("observed", plates)
            dty = self._per_element(s, existing.ty.shape, dty)
            info.event_dims = self._fit_shape(s, existing.ty.shape, dty)
            if existing.ty.shape is not None and info.event_dims is not None \
                    and _runtime_form(existing.ty.shape, self.plate_stack) != existing.ty.shape:
                info.obs_align = tuple(p.dim for p in self.plate_stack)
            info.obs_cast = existing.ty.kind in ("int", "bool")
            self._label_args(s, dty, info.event_dims, None)
            if dty.discrete and existing.ty.kind == "real" and dty.dist != "Empirical":
                # (an Empirical's values are its samples, numbers of any kind)
                self.warn(f"'{s.name}' is real but {dty.dist} is a discrete distribution",
                          s.name_span)
            self.sites[id(s)] = info
            return
        if existing is not None and existing.role == "deterministic":
            self.err(f"'{s.name}' is computed from latents and cannot be drawn with '~'",
                     s.name_span,
                     [f"give it a density with factor(log_prob({_dist_text(s.dist)}, "
                      f"{s.name})), Stan's target +=; no Jacobian of {s.name}'s map is "
                      "added"])
            return
        if existing is not None and existing.role == "size":
            origin = self.size_origin.get(s.name)
            where = (f"it is named in the shape of '{origin.name}' at {origin.span}"
                     if origin is not None else
                     f"'{s.name}: int' at {existing.span} is a dimension in the model")
            self.err(f"'{s.name}' is a size, so '~' cannot observe it", s.name_span,
                     [where, "a size is fixed by the data; to observe its value too, give it "
                      f"again as another argument ({s.name}_obs: int) and write "
                      f"{s.name}_obs ~ ..."])
            return
        if not self._define(s.name, s.name_span):
            return
        info = SiteInfo("latent", plates)
        constraint = None
        if s.type is not None:
            declared, constraint = self._type(s.type, allow_constrained=True, latent=True)
            info.in_support = self.random_bound
            if declared.kind in ("int", "bool") and dty.kind == "dist" and not dty.discrete \
                    and dty.dist not in _SUPPORT_FROM_ARGUMENTS:
                self.err(f"'{s.name}' is declared {declared.kind} but {dty.dist} is "
                         "continuous", s.type.span)
            if declared.kind == "unknown":
                shape = None
            else:
                shape = declared.shape
                dty = self._per_element(s, shape, dty)
                before = len(self.errors)
                info.event_dims = self._fit_shape(s, shape, dty)
                if info.event_dims is not None:
                    shape = _runtime_form(shape, self.plate_stack)
                elif len(self.errors) > before:
                    shape = None  # its shape is refused: no follow-on errors where it is read
            kind = self._latent_kind(s, dty)
        else:
            shape = self._latent_shape(s, dty)
            kind = self._latent_kind(s, dty)
        if constraint is not None and not _support_matches(constraint, dty):
            info.constraint = constraint
        own = info.event_dims if s.type is not None or shape is None \
            else tuple(shape[len(self.plate_stack):])
        self._label_args(s, dty, own, info.constraint)
        found = self._dist_bound.get(id(s.dist))
        if not dty.discrete and found is not None and any(
                self._reads_label(node) or (self.plate_stack and self.plate_labels & set(
                    ast.names_read(node))) for node, _ in found[1].values()):
            # its value without the label's dims (rt.LabelFree), whether the label was
            # drawn outside plates or in the open ones (x ~ Normal(2 * z, 1) beside z)
            info.label_free = True
        empty = next((d for d in (shape or ())[len(self.plate_stack):]
                      if sizes.compare(d, sizes.const(0)) == sizes.Relation.EQUAL), None)
        if empty is not None:
            # Pyro's fits cannot start on a latent without elements (an initial value's
            # quantile() of an empty tensor); a size from the data is checked at binding
            self.err(f"'{s.name}' has no elements (shape {sizes.show(shape)}): a latent needs "
                     "at least one", s.type.span if s.type is not None else s.name_span,
                     ["drop it, or give it a size of at least 1"])
        if dty.dist == "Truncated" and not dty.discrete:
            self._truncated_latent(s)
        if not dty.discrete and not info.label_free and self._support_follows(s.dist):
            info.in_support = True  # Uniform(a, a + 1): rt.sample_in_support
        if dty.discrete or info.label_free:
            info.in_support = False  # a label's, or bounds that read one: drawn as before
        if dty.discrete:
            self._discrete_latent(s, dty, shape)
            if dty.enumerable and not self.plate_stack:
                self.global_labels.add(s.name)
            elif dty.enumerable:
                self.plate_labels.add(s.name)
        self.sites[id(s)] = info
        self.symbols[s.name] = Symbol(s.name, "latent", Ty(kind, shape), s.name_span,
                                      random=True, node=s, plates=plates)

    def _latent_kind(self, s: ast.Sample, dty: Ty) -> str:
        """int for a discrete latent, real for a continuous one; an Empirical's values
        are its samples, of their kind (real samples: a real latent, not an index)."""
        found = self._dist_bound.get(id(s.dist))
        if dty.dist == "Empirical" and found is not None and "samples" in found[1]:
            return "int" if found[1]["samples"][1].kind in ("int", "bool") else "real"
        return "int" if dty.discrete else "real"

    def _support_follows(self, e: ast.Expr, seen: frozenset = frozenset()) -> bool:
        """Whether the support of the distribution ``e`` follows latents or params, so that
        a latent drawn from it is mapped with the current bounds (rt.sample_in_support):
        an argument that sets it reads one (:data:`_SUPPORT_ARGS`), in the distribution
        itself, a Truncated's base or a mixture's components, or behind a name given such
        a distribution (``d = Uniform(a, a + 1)``, any chain of them). A GeneralizedPareto
        always: its upper end is finite for a negative shape only, which Pyro's fixed map
        (``biject_to``, NaN at an infinite end) cannot follow."""
        if isinstance(e, ast.Name):
            sym = self.symbols.get(e.id)
            return (e.id not in seen and sym is not None and isinstance(sym.node, ast.Assign)
                    and sym.ty.kind == "dist"
                    and self._support_follows(sym.node.value, seen | {e.id}))
        found = self._dist_bound.get(id(e))
        if found is None:
            return False
        sig, bound = found
        if sig.name == "GeneralizedPareto" or any(
                _is_random(bound[k][0], self.symbols)
                for k in _SUPPORT_ARGS.get(sig.name, ()) if k in bound):
            return True
        inner = bound.get("base_dist") or bound.get("component_distribution")
        return inner is not None and self._support_follows(inner[0], seen)

    def _discrete_latent(self, s: ast.Sample, dty: Ty, shape) -> None:
        """A discrete latent is summed out by Pyro's enumeration (ppl.infer.discrete), which
        needs finite support and one value per plate element: a whole vector of labels
        outside a plate is a single site with K^N values, which Pyro cannot enumerate."""
        if not dty.enumerable:
            what = ("a truncated discrete distribution, which Pyro cannot enumerate"
                    if dty.dist == "Truncated" else
                    f"unbounded discrete support ({dty.dist})")
            self._unfittable(f"'{s.name}' is a latent with {what}: it cannot be summed out, "
                             "and NUTS, HMC and SVI move continuous latents only", s.dist.span,
                             ["observe it as data, or marginalise it by hand "
                              "(a finite truncation with Categorical, or a mixture)"])
            return
        if dty.event != 0:
            # Pyro sums it out in the fit, but infer_discrete cannot draw its values after
            # (a raw ValueError 'Invalid tensor shape' from its packing of event dims); an
            # Empirical of numbers (samples [N]) is summed out as a label is
            self._unfittable(f"'{s.name}' is a discrete latent whose values are vectors "
                             f"({dty.dist}): Pyro cannot draw them from the posterior after "
                             "summing them out", s.dist.span,
                             ["draw a row's index and read the row: k ~ Categorical("
                              "logits=log_weights), then samples[k]" if dty.dist == "Empirical"
                              else "draw a label and one-hot it: z ~ Categorical(p), then "
                              "eye(K)[z]"])
            return
        if shape is None or dty.event is None:
            return
        own = shape[len(self._plate_shape()):]
        extra = own[: len(own) - dty.event]
        if not extra:
            return
        where = (f"per element of plate {', '.join(self._plate_names())}"
                 if self.plate_stack else "outside every plate")
        hint = (f"plate i in {sizes.show(extra)[1:-1]} {{ {s.name} ~ ... }}" if len(extra) == 1
                else f"nested plates over {sizes.show(extra)}")
        self._unfittable(f"'{s.name}' is a vector of discrete latents, shape "
                         f"{sizes.show(extra)} {where}: labels are summed out one per plate "
                         "element, not as a whole vector", s.span,
                         [f"draw it in a plate, with what reads it: {hint}"])

    def _unfittable(self, msg: str, span: Span, notes: list[str]) -> None:
        """A statement no inference method can fit but a prior simulation (sample_prior)
        can run: a warning now, an error when a fit starts."""
        self.fit_errors.append(Diagnostic(msg, span, "error", notes))
        self.warnings.append(Diagnostic(msg + "; a fit refuses it, sample_prior runs it",
                                        span, "warning", notes))

    def _latent_shape(self, s: ast.Sample, dty: Ty):
        """Shape of an undeclared latent: the plates broadcast with the batch shape."""
        if dty.shape is None or dty.event is None:
            return None
        pshape = self._plate_shape()
        batch = dty.shape[: len(dty.shape) - dty.event]
        event = dty.shape[len(dty.shape) - dty.event:]
        if len(batch) > len(pshape):
            if pshape:
                self.err(f"inside plate {', '.join(self._plate_names())} the distribution of "
                         f"'{s.name}' has batch shape {sizes.show(batch)}, more dimensions than "
                         f"the plates {sizes.show(pshape)}", s.dist.span,
                         ["declare the shape, the plates' sizes first: "
                          f"{s.name}: real{sizes.show(self._declared(batch[len(pshape):]))} "
                          "~ ..."])
                return None
            return tuple(dty.shape)
        if self._global_on_plate(s, pshape):
            return None
        full, issues = sizes.broadcast(batch, pshape)
        self._report(issues, s.dist.span, f"the distribution of '{s.name}' and the plate")
        return None if full is None else tuple(full) + tuple(event)

    def _declared(self, own) -> tuple:
        """A latent's declared shape inside the enclosing plates: their sizes, then its
        own per-element dims ``own`` (``w: real[T, K]`` in plate t; never the unit dims
        of Pyro's layout)."""
        return tuple(p.size for p in self.plate_stack) + tuple(own)

    def _latent_not_of_plate(self, s: ast.Sample, shape, i: int) -> None:
        """A latent declared in plates whose dim ``i`` is not the plate's size by its
        declaration (``z: real[Z]`` in ``plate N``, even where the data make Z = N)."""
        plate = self.plate_stack[i] if i < len(self.plate_stack) else self.plate_stack[-1]
        kind = fmt.type_text(s.type).split("[")[0]
        own = self._declared(shape[i:])
        declared = f"{kind}{sizes.show(shape)}" if shape else kind
        if i >= len(shape):  # z: real in plate N
            why = f"it has {len(shape)} dimension{'s' if len(shape) != 1 else ''}"
        else:
            why = (f"dimension {i} ({sizes.show((shape[i],))[1:-1]}) is not plate "
                   f"{plate.name}'s size {sizes.show((plate.size,))[1:-1]}")
        rest = f"{sizes.show(shape[i:])[1:-1]} values" if shape[i:] else "one value"
        shared = f"{kind}{sizes.show(shape[i:])}" if shape[i:] else kind
        self.err(f"'{s.name}' is declared {declared} inside plate "
                 f"{', '.join(self._plate_names())}: a latent drawn in a plate has the plates' "
                 f"sizes first, and {why}", s.name_span,
                 [f"for {rest} per element of the plate: {s.name}: "
                  f"{kind}{sizes.show(own)} ~ ...",
                  f"for one {shared} shared by every element: draw it before plate "
                  f"{plate.name}"])

    def _global_on_plate(self, s: ast.Sample, site_batch) -> bool:
        """A distribution argument that is the same for every element of the enclosing
        plates (its plate width is 0: ``x: real[Z]`` read whole in ``plate N``, Z not
        N) but has a dimension that broadcasting would put on a plate's dim: Pyro would
        pair its values with the plate's elements by position, only where Z = N at run
        time, and never with a minibatch (it is not subsampled: torch's 'Shape mismatch
        inside plate'). Reported here, at compile time, whatever the sizes turn out to be:
        a value is read per element by its declared leading size, not by a size that
        happens to be equal. ``site_batch``: the site's batch shape in Pyro's layout
        inside the plates. True when reported."""
        found = self._dist_bound.get(id(s.dist))
        if not self.plate_stack or found is None or site_batch is None:
            return False
        width = len(self._plate_shape())
        plate_at = {width + p.dim: p for p in self.plate_stack}
        sig, bound = found
        needs = dict(sig.arg_constraints)
        for pname, (node, t) in bound.items():
            if t.kind not in TENSOR_KINDS or t.shape is None or self._plate_width(node) != 0 \
                    or self._reads_label(node):
                continue
            rank = signatures.PARAM_RANKS.get(sig.name, {}).get(pname)
            if rank is None:
                rank = _param_rank(needs.get(pname))
            if rank is None or rank > len(t.shape):
                continue
            batch = t.shape[: len(t.shape) - rank]
            off = len(site_batch) - len(batch)
            for j, d in enumerate(batch):
                if not 0 <= off + j < width or d == sizes.ONE:
                    continue
                plate = plate_at.get(off + j)
                if plate is None:
                    # the dim Pyro keeps for a plate nested in the open ones (the site is
                    # [N, 1] in the body of plate N around plate M): Z draws per element
                    self._report_global_on_plate(node, d, self.plate_stack[-1],
                                                 nested=off + j - width)
                    return True
                if sizes.compare(d, plate.size) == sizes.Relation.EQUAL:
                    if not plate.subsample:
                        continue  # w @ X of X: real[D, N] in plate N: [N], per element
                    # of the plate's size, but not at its first dim: not cut to the
                    # minibatch (Pyro's 'Shape mismatch inside plate')
                    self._report_unsubsampled(node, d, plate)
                    return True
                self._report_global_on_plate(node, d, plate)
                return True
        return False

    def _culprit(self, node: ast.Expr, d) -> tuple[str | None, Span, tuple | None]:
        """The value read in ``node`` that brings its dimension ``d`` (the first name whose
        shape has that size), where it is read, and its shape (``node``'s own when none)."""
        culprit = next((n for n in dict.fromkeys(ast.names_read(node))
                        if (sym := self.symbols.get(n)) is not None and sym.ty.shape
                        and any(sizes.compare(x, d) == sizes.Relation.EQUAL
                                for x in sym.ty.shape)), None)
        at = next((n.span for n in ast.walk(node) if isinstance(n, ast.Name)
                   and n.id == culprit), node.span)
        ty = self.symbols[culprit].ty if culprit else self.types.get(id(node))
        return culprit, at, ty.shape if ty is not None else None

    def _kind_of(self, name: str | None) -> str:
        """The element type a suggested declaration of ``name`` keeps (``int`` for an
        index vector: declaring it ``real`` would break its use as an index)."""
        sym = self.symbols.get(name) if name else None
        return sym.ty.kind if sym is not None and sym.ty.kind in ("int", "bool") else "real"

    def _report_unsubsampled(self, node: ast.Expr, d, plate: PlateInfo) -> None:
        """A value whose dimension of the subsampled plate's size is not its first (``X``
        of ``X: real[D, N]`` in ``w @ X``): the plate cuts data to its minibatch along
        their first dimension only, so its N values would meet B elements."""
        culprit, at, shape = self._culprit(node, d)
        what = culprit or fmt.expr(node)
        size = sizes.show((plate.size,))[1:-1]
        text = fmt.expr(node)
        head = f"inside plate {plate.name}, which is subsampled (batch), '{text}' has one " \
            "value per element of the plate"
        drop = f"or drop `batch` from plate {plate.name}"
        sym = self.symbols.get(culprit) if culprit else None
        if sym is not None and sym.role == "param":
            # a guide's param of the plate's size: the plate cuts data and the model's
            # values, not params
            index = plate.index or "i"
            self.err(f"{head}, but '{culprit}' is a param, which the plate does not cut to "
                     f"its minibatch: its {size} values would meet the minibatch's elements", at,
                     [f"index it with the plate's index: {culprit}[{index}]"
                      + ("" if plate.index else f" under plate {index} in {size} batch ..."),
                      drop])
            return
        if shape and sizes.compare(shape[0], plate.size) == sizes.Relation.EQUAL:
            # x[1:] of x: real[N + 1]: of the plate's size, but computed in the plate from
            # a value that is not, so not cut
            self.err(f"{head}, but it is computed in the plate from a value not of the "
                     f"plate's size {size}, which the plate does not cut to its minibatch", at,
                     [f"compute it before the plate (v = {text}), where a value of the "
                      "plate's size is cut to the minibatch", drop])
            return
        self.err(f"inside plate {plate.name}, which is subsampled (batch), '{text}' has one "
                 f"value per element of the plate, but '{what}' (shape {sizes.show(shape)}) "
                 f"does not have the plate's size {size} as its first dimension, so the plate "
                 "does not cut it to its minibatch", at,
                 [f"lay it out with the plate's dimension first ({what}: "
                  f"{self._kind_of(culprit)}[{size}, ...])",
                  f"or compute it before the plate (v = {text}), where a value of the "
                  "plate's size is cut to the minibatch",
                  f"or drop `batch` from plate {plate.name}"])

    def _report_global_on_plate(self, node: ast.Expr, d, plate: PlateInfo,
                                nested: int | None = None) -> None:
        """The located error of :meth:`_global_on_plate`: ``node`` has a dimension ``d``
        where the site has ``plate``'s dim (or, ``nested``, the dim Pyro keeps there for
        a plate nested in ``plate``); it names the value read in ``node`` that brings
        that dimension, with the two ways to write what was meant."""
        culprit, at, shape = self._culprit(node, d)
        what = culprit or fmt.expr(node)
        size = sizes.show((plate.size,))[1:-1]
        have = sizes.show((d,))[1:-1]
        index = plate.index or "i"
        batch = " (nor subsampled with the batch)" if plate.subsample else ""
        notes = [f"if '{what}' has one value per element of plate {plate.name}, give it the "
                 f"plate's size: {what}: "
                 f"{self._kind_of(culprit)}{sizes.show((plate.size,) + tuple(shape[1:]))}"
                 if culprit and self.symbols[culprit].role == "data" else
                 f"if '{what}' has one value per element of plate {plate.name}, give it the "
                 f"plate's size {size} as its first dimension",
                 f"or index it with the plate's index: {what}[{index}] under plate {index} in "
                 f"{size}"]
        self.err(f"inside plate {plate.name}, '{what}' (shape {sizes.show(shape)}) is one value "
                 f"for the whole plate, not one per element: its size {have} is not the "
                 f"plate's size {size}, so it is not read per element{batch}, yet its {have} "
                 + (f"values would meet the plate's {size} elements by position"
                    if nested is None else
                    f"values would fill dim {nested}, which Pyro keeps for the plate nested "
                    f"in plate {plate.name}"), at, notes)

    def _plate_width(self, e) -> int | None:
        """How many leading dimensions of ``e``'s value are plate dims (Pyro's runtime
        form, ``_runtime_form``): 0 for a value that does not vary along an enclosing
        plate, None when that cannot be told (a scalar index into plate data)."""
        if isinstance(e, (ast.Number, ast.Bool)):
            return 0
        if isinstance(e, ast.Name):
            sym = self.symbols.get(e.id)
            if sym is None or id(e) in self._own_reads:
                return 0
            if _sized_like_plates(sym):
                plates = self._aligned_plates(sym.ty.shape)
                return -plates[0].dim if plates else 0
            if sym.role == "index":  # [size] + ones to its plate's dim
                return len(sym.ty.shape) if sym.ty.shape else None
            if sym.plates and e.id in self.det_width:
                # computed in the plates: it varies along those its value read (m = z *
                # ones(D) in plate i is one [D] for every element, not one per element)
                return self.det_width[e.id]
            if sym.plates:
                outer = next((p for p in self.plate_stack if p.name == sym.plates[0]), None)
                return -outer.dim if outer is not None else None
            return 0
        if isinstance(e, ast.Neg):
            return self._plate_width(e.operand)
        if isinstance(e, ast.BinOp):
            a, b = self._plate_width(e.left), self._plate_width(e.right)
            return None if a is None or b is None else max(a, b)
        if isinstance(e, ast.Call) and e.func_name is not None \
                and not self._calls_value(e.func_name) and self._over_plate_dim(e):
            return 0  # sum(xm, dim=0) of data read whole: over its plate dim, as declared
        if isinstance(e, ast.Call) and e.func_name in _DEFAULT_DIMS and len(e.args) == 1 \
                and not e.kwargs and not self._calls_value(e.func_name) \
                and isinstance(e.args[0], ast.Name) and not self._element_width(e.args[0]) \
                and e.args[0].id not in self.global_labels:
            # sum(x), max(z1) of a value read whole (data, a closed plate's value): over
            # all of it, one number for every element (sum(x) + A[0] in plate n with y:
            # real[N, M] was widened as one per element: 'size mismatch', or with N = M
            # each row's own sum(x) + A[0] paired with the elements)
            return 0
        if isinstance(e, ast.Call) and e.func_name is not None \
                and not self._calls_value(e.func_name):
            widths = [self._plate_width(a) for a in e.args] + \
                     [self._plate_width(k.value) for k in e.kwargs]
            return None if any(w is None for w in widths) else max(widths, default=0)
        if isinstance(e, ast.Index):
            items = [self._plate_width(i) for i in e.indices if not isinstance(i, ast.Slice)]
            if any(w is None for w in items):
                return None
            if id(e) in self.label_vindex:  # w[k], w[1:]: the row's plates and k's
                base = self._plate_width(e.value)
                return None if base is None else max(items + [base])
            if any(items):
                return max(items)
            if self._global_index(e):
                return 0  # u[:], xm[1], A[:, 0] of data: the same for every element
            base = self._plate_width(e.value)
            if base == 0:
                return 0
            first = e.indices[0] if e.indices else None
            return base if _whole_slice(first) else None
        if isinstance(e, ast.ListLit):  # stacked per element: the items' plate dims
            widths = [self._plate_width(i) for i in e.items]
            return None if any(w is None for w in widths) else max(widths, default=0)
        return None

    def _global_index(self, e: ast.Index) -> bool:
        """Whether ``e`` reads data (or a value defined outside every plate) whose leading
        size is a plate's by indices that are the same for every element: numbers, global
        values and slices (``xm[1]``, ``u[:]``, ``A[:, 0]``, ``x2[0, 0:2]``). Its value is
        then the same for every element, as Stan's ``xm[1]`` or ``u`` in the loop: only
        the bare name is read per element."""
        if not isinstance(e.value, ast.Name) or id(e) in self.label_vindex:
            return False
        sym = self.symbols.get(e.value.id)
        if sym is None or not _sized_like_plates(sym) or not sym.ty.shape \
                or e.value.id in self.global_labels:
            return False
        for item in e.indices:
            if isinstance(item, ast.Slice):
                if any(b is not None and self._plate_width(b) != 0
                       for b in (item.start, item.stop)):
                    return False
            elif self._plate_width(item) != 0:
                return False
        return True

    def _element_width(self, e) -> int:
        """The plate dims of ``e`` when it is a name of a value drawn or computed in plates
        that are all still open (``w = x2[t]``, ``z`` drawn in ``plate t``), which the
        language reads as each element's own value (Stan's local ``w`` in the loop): a
        reduction, index or ``dim`` of it acts on its per-element dims, right of these.
        0 for any other name (data and values defined outside plates read whole keep their
        own rules) or expression."""
        if not isinstance(e, ast.Name) or not self.plate_stack:
            return 0
        sym = self.symbols.get(e.id)
        plates = self.defined_in.get(e.id)
        if sym is None or not sym.plates or not plates or _sized_like_plates(sym) \
                or sym.role == "index" or any(p not in self.plate_stack for p in plates):
            return 0
        return self._plate_width(e) or 0

    def _plates_meet(self, e: ast.BinOp, a: Ty, b: Ty) -> tuple[Ty, Ty] | None:
        """``a`` and ``b`` made to broadcast per plate element, as Stan's loops read them,
        or None after a located error. A plate dim of one operand that would meet another
        size of the other (``m`` [N] drawn in plate N plus ``mu: real[W]``: broadcasting
        would compare N with W and, were they equal, pair m[k] with mu[k]) is widened
        with unit dims before its own per-element dims (``rt.per_element``: [N, 1] + [W]
        is [N, W], each row m[n] + mu) when the other operand is global or has as many
        plate dims; otherwise it is an error."""
        if a.shape is None or b.shape is None:
            return a, b
        tys = {id(e.left): a, id(e.right): b}
        for node, side in ((e.left, e.right), (e.right, e.left)):
            mine, other = tys[id(node)], tys[id(side)]
            width = self._plate_width(node)
            if not width or width > len(mine.shape):
                continue
            conflict = self._plate_conflict(mine, width, other)
            owidth = self._plate_width(side)
            paired = False
            inner = owidth is not None and 0 < width <= owidth and \
                len(other.shape) - owidth < len(mine.shape) - width
            if conflict is not None and inner:
                # a value of inner plates only (or of the same plates) with more dims of
                # its own (xm[:, m], [M, N] under plates n, m; x2 + m, [N, M, K]) meeting
                # one of more plates with fewer (x[n], c[gid[n]], [N, 1]): the other is
                # widened to meet it below, when the loop comes to it
                continue
            if conflict is None and owidth == 0:
                # a global operand's dims are all its own (v: real[M], xm[1], A[0], u[:]):
                # one landing on the unit dim of a nested plate ([N, 1] in plate N's body)
                # is not an inner plate's; one of the plate's size on the plate's dim is
                # read per element (as w @ X) unless a site has per-element dims for it
                conflict = self._own_on_plate(mine, width, other)
                # (an index written into the data, x[:] or A[0], is never paired: it
                # names the whole vector; nor is a value computed in the plates, w1 =
                # u[:] in plate n read in plate m: each element's own value)
                # (nor one whose dim there is not its first: xm: real[N, M] read whole
                # in plate m is one [N, M] for every element, as Stan's xm in the loop)
                paired = conflict is not None and sizes.compare(
                    conflict[0], sizes.const(1)) != sizes.Relation.EQUAL and \
                    not self._reads_whole(side) and conflict[2] == 0
            # two values of the same plates, the other with more dims of its own (x2[n] /
            # v[gid[n]], [N, 1, K] and [N, 1] under plates n and k): the plate dims meet
            # the plate dims, as they do where the sizes differ
            # (also of more plates around these, where the other's own dims are a whole
            # vector read by an index written into it: (w2 - v) * where(.., x, v[:]) of v
            # per element of plate k and x of plate n around it, [K] and [N, K, K])
            # (and so for anything but the bare name of data meeting an outer plate's row,
            # whose entries it pairs by position, Stan's dot_product(x2[i], v) below:
            # sum(x2[n] - v[k]), x2[n] + k, (w1 - u[m]) of w1 = u + 0 * x[n] in plate n
            # are each element's number widened to meet the row)
            whole = owidth is not None and owidth > width and (
                self._reads_whole(side) or not self._bare_data(node))
            same = conflict is None and (owidth == width or whole) and \
                len(other.shape) - owidth > len(mine.shape) - width
            if same and self._bare_data(node) and not self._bare_only(side) and \
                    self._pairs_whole(node, other, owidth) and \
                    self._plate_conflict(mine, width, other, owidth):
                # the bare name's plate dim would land on the other's own dim of its size
                # (sum(A[j, :] * w) in plate j, A: real[N, N], w: real[N]): w[j] times the
                # row, or Stan's whole w paired with it (A[j, :] @ w), as in nested plates
                self._bare_meets_row(e, node, side, other, owidth)
                return None
            if conflict is None and not same:
                if owidth is not None and self._plate_conflict(mine, width, other, owidth):
                    # its plate dim meets the other's own dim of the same size (v: real[J]
                    # in plate j times the row x2[i, :], [I, 1, J])
                    if self._bare_data(node):
                        self._bare_meets_row(e, node, side, other, owidth)
                        return None
                    self.rows_read[id(node)] = True
                continue
            units = (len(other.shape) - (owidth or 0)) - (len(mine.shape) - width)
            if owidth is not None and (owidth in (0, width) or whole or 0 < owidth < width) \
                    and units > 0:
                widened = Ty(mine.kind, sizes.widened(mine.shape, width, units), dim=mine.dim,
                             value=mine.value)
                if self._plate_conflict(widened, width, other) is None and paired:
                    full = sizes.broadcast(widened.shape, other.shape)[0]
                    # c[:] + (x2[0] - c[k]): the inner pairing decides for the outer one
                    if full is not None and not any(id(n) in self._paired
                                                    for n in ast.walk(node)):
                        self._paired[id(e)] = (node, (len(mine.shape) - width, units),
                                               Ty(mine.kind, full))
                    continue
                if self._plate_conflict(widened, width, other) is None:
                    self.pads[id(node)] = (len(mine.shape) - width, units)
                    tys[id(node)] = widened
                    continue
            size, theirs = conflict[:2]
            self.err(f"inside plate {', '.join(self._plate_names())}, "
                     f"{_quote(node)} has one value per plate element (shape "
                     f"{sizes.show(mine.shape)}) and {_quote(side)} has shape "
                     f"{sizes.show(other.shape)}: '{e.op}' would match the plate's size "
                     f"{size} with {theirs}", e.span,
                     ["draw the per-element values in a nested plate, where each plate "
                      "has its own dim (\"Plates\" in docs/language.md)"])
            return None
        for node, side in ((e.left, e.right), (e.right, e.left)):
            # a global operand inside plates is per-element too: its dims all its own
            owidth = self._plate_width(side)
            if owidth is not None and tys[id(side)].shape is not None:
                elem = len(tys[id(side)].shape) - owidth
                tys[id(node)] = self._label_pad(node, tys[id(node)], elem)
        return tys[id(e.left)], tys[id(e.right)]

    def _bare_meets_row(self, e: ast.BinOp, node: ast.Name, side, other: Ty,
                        owidth: int) -> None:
        """The bare name of data read per element (``v: real[J]`` in plate j, ``v[j]``)
        meeting the entries of an outer plate's row of its size (``x2[i, :] * v``, ``u *
        xm[n]`` under plates n, m): the bare name is one number per element everywhere
        else in the plate (``(v + 0) * x2[i, :]`` is ``v[j]`` times the row), while Stan's
        ``v`` in the loop is the whole vector, paired with the row's entries. Both are
        meant by someone, so it is a located error that spells each."""
        plates = self._aligned_plates(self.symbols[node.id].ty.shape)
        read = f"{node.id}[{', '.join(p.index or 'i' for p in plates)}]"

        def written(name: str) -> str:
            if isinstance(e, ast.Call):  # pow(A[j, :], w): the call with the name so read
                text = fmt.expr(e)
                return re.sub(rf"\b{re.escape(node.id)}\b(?!\s*\[)", lambda _: name, text)
            left, right = (name if x is node else fmt.expr(x) for x in (e.left, e.right))
            return f"{left} {e.op} {right}"

        unnamed = [p for p in plates if not p.index]
        first = [f"each element's number {read} with the whole row: {written(read)}"
                 if not unnamed else
                 f"for each element's number, give plate {unnamed[0].name} an index "
                 f"(plate i in {sizes.show((unnamed[0].size,))[1:-1]}) and read "
                 f"{node.id}[i]"]
        names = self._plate_names()
        self.err(f"inside plate{'s' if len(names) > 1 else ''} {', '.join(names)}, "
                 f"'{node.id}' is read per "
                 f"element ({read}, one number), but it meets '{fmt.expr(side)}', which has "
                 f"{sizes.show(tuple(other.shape[owidth:]))} numbers of its own, and Stan's "
                 f"'{node.id}' in the loop would be the whole vector paired with them: say "
                 "which is meant", e.span,
                 first + [f"{node.id}'s entries paired with the row's, the same for every "
                          f"element: {written(node.id + '[:]')}"])

    def _reads_whole(self, e) -> bool:
        """Whether ``e`` reads a value whose own dims are whole per element: an index
        written into the data (``u[:]``, ``A[0]``) or a value computed in the plates
        (``w1 = u[:]`` in plate n, each element's own even where it does not vary)."""
        for n in ast.walk(e):
            if isinstance(n, ast.Index) and self._global_index(n):
                return True
            if isinstance(n, ast.Name):
                sym = self.symbols.get(n.id)
                if sym is not None and sym.plates and not _sized_like_plates(sym) \
                        and sym.role not in ("index", "data"):
                    return True
        return False

    def _pairs_whole(self, node: ast.Name, other: Ty, owidth: int) -> bool:
        """Whether the whole value of the bare name ``node`` (as declared) fits the own dims
        of ``other`` entry by entry, as Stan's whole value in the loop would pair with them
        (``w: real[N]`` with ``A[j, :]``'s N). Data of more dims (``x2: real[N, K]`` under
        plates n, k meeting row ``x2[n]``'s K) cannot: only ``x2[n, k]`` is meant."""
        declared = tuple(self.symbols[node.id].ty.shape or ())
        own = tuple(other.shape[owidth:])
        return len(declared) <= len(own) and all(
            sizes.compare(a, b) == sizes.Relation.EQUAL
            for a, b in zip(reversed(declared), reversed(own), strict=False))

    def _bare_only(self, e) -> bool:
        """Whether ``e`` reads no index and only bare names of data (``xNN``, ``exp(xNN)``
        in plate n): each name its element's row, as the bare name meeting it is its
        element's number (``x * xNN`` is ``x[n] * xNN[n]``), with no row written out
        whose entries Stan's whole ``x`` would pair with."""
        names = [n for n in ast.walk(e) if isinstance(n, ast.Name)]
        return not any(isinstance(n, ast.Index) for n in ast.walk(e)) and all(
            self._bare_data(n) or not self._plate_width(n) for n in names)

    def _bare_data(self, e) -> bool:
        """Whether ``e`` is the bare name of data (or a global value) read per element."""
        sym = self.symbols.get(e.id) if isinstance(e, ast.Name) else None
        return sym is not None and _sized_like_plates(sym)

    @staticmethod
    def _own_on_plate(mine: Ty, width: int, other: Ty) -> tuple | None:
        """(plate dim's size, other size, that dim of ``other``) where right-aligned
        broadcasting would put a dim of ``other`` (a global value, all its dims its own)
        other than 1 on one of ``mine``'s first ``width`` (plate) dims."""
        start = max(len(mine.shape), len(other.shape)) - len(mine.shape)
        ostart = start + len(mine.shape) - len(other.shape)
        for k in range(width):
            pos = start + k - ostart
            if pos >= 0 and sizes.compare(other.shape[pos], sizes.const(1)) \
                    != sizes.Relation.EQUAL:
                return mine.shape[k], other.shape[pos], pos
        return None

    @staticmethod
    def _plate_conflict(mine: Ty, width: int, other: Ty, owidth=None) -> tuple | None:
        """(plate size, other size) where right-aligned broadcasting would put one of
        ``mine``'s first ``width`` (plate) dims against a different size of ``other``, or
        against one of ``other``'s own dims past its ``owidth`` plate dims (when given)."""
        rank = max(len(mine.shape), len(other.shape))
        start, ostart = rank - len(mine.shape), rank - len(other.shape)
        for k in range(width):
            size, pos = mine.shape[k], start + k
            if pos < ostart or sizes.compare(size, sizes.const(1)) == sizes.Relation.EQUAL:
                continue
            theirs = other.shape[pos - ostart]
            if sizes.compare(theirs, sizes.const(1)) != sizes.Relation.EQUAL and (
                    sizes.compare(theirs, size) != sizes.Relation.EQUAL
                    or (owidth is not None and pos - ostart >= owidth)):
                return size, theirs
        return None

    def _per_element(self, s: ast.Sample, shape, dty: Ty) -> Ty:
        """Stan's reading of ``y ~ Normal(m, s)`` inside ``plate N`` with ``y`` [N, W] and
        ``m`` drawn in the plate ([N]): each row of y is W draws around that row's m. A
        distribution argument with one value per plate element whose own per-element
        shape is shorter than the site's gets unit dims after its plate dims
        (``rt.per_element``: [N] -> [N, 1]), so broadcasting matches plates with plates
        and per-element dims with per-element dims, not the plate's dim with W. Returns
        the distribution's type over the padded arguments."""
        found = self._dist_bound.get(id(s.dist))
        if not self.plate_stack or shape is None or found is None or dty.event is None \
                or len(shape) < len(self.plate_stack):
            return dty
        sig, bound = found
        want = len(shape) - len(self.plate_stack) - dty.event  # per-element batch dims
        if want <= 0:
            return dty
        needs = dict(sig.arg_constraints)
        padded, changed = dict(bound), False
        for pname, (node, t) in bound.items():
            own = _param_rank(needs.get(pname))
            width = self._plate_width(node)
            if own is not None and width == 0 and t.kind in TENSOR_KINDS \
                    and t.shape is not None:
                padded_t = self._label_pad(node, t, want + own)
                if padded_t is not t:
                    padded[pname], changed = (node, padded_t), True
                continue
            if own is None or not width or t.kind not in TENSOR_KINDS or t.shape is None:
                continue
            have = len(t.shape) - width - own
            if have < 0 or have >= want:
                continue
            paired = [self._paired[id(n)] for n in ast.walk(node) if id(n) in self._paired]
            if paired:
                # A[0] + u[m] for y: real[M, M]: A[0] is each row's vector, as in Stan;
                # the per-element operand is widened, not the sum (which paired them)
                for operand, pad, _ in paired:
                    self.pads[id(operand)] = pad
                full = self._paired[id(node)][2] if id(node) in self._paired else \
                    paired[0][2] if len(paired) == 1 else None
                padded[pname] = (node, full if full is not None else Ty(
                    t.kind, sizes.widened(t.shape, width, want - have)))
                changed = True
                continue
            padded[pname] = (node, Ty(t.kind, sizes.widened(t.shape, width, want - have)))
            self.pads[id(node)] = (len(t.shape) - width, want - have)
            changed = True
        if not changed:
            return dty
        # Stan's nested loop: the sizes are compared once each is on its own dim
        # (n * 0.5 + x[:] with softplus(u[m]) under plates m, n: [N, N] with [M, 1, 1])
        self._held_issues.pop(id(s.dist), None)
        return Ty("dist", _dist_shape(sig, padded, self), event=dty.event, dist=dty.dist,
                  discrete=dty.discrete, enumerable=dty.enumerable)

    def _own_dims_fit(self, s: ast.Sample, shape, dty: Ty) -> bool:
        """A distribution argument with more dims of its own per plate element than the
        site has (``A[:, j]``, column j's K numbers, for ``y: real[N, M]`` under plates
        i, j: one number per element): Stan refuses a vector for a real. Right-aligned,
        its ``[M, K]`` met the site's ``[N, M]`` as two plate dims, a size error where K
        differs and, where K = M = N, the column read against the wrong elements
        silently. False after the located error."""
        found = self._dist_bound.get(id(s.dist))
        if not self.plate_stack or found is None or dty.event is None \
                or len(shape) < len(self.plate_stack):
            return True
        sig, bound = found
        want = max(len(shape) - len(self.plate_stack) - dty.event, 0)
        needs = dict(sig.arg_constraints)
        for pname, (node, t) in bound.items():
            rank = signatures.PARAM_RANKS.get(sig.name, {}).get(pname)
            rank = _param_rank(needs.get(pname)) if rank is None else rank
            width = self._plate_width(node)
            if rank is None or not width or t.kind not in TENSOR_KINDS or t.shape is None \
                    or width > len(t.shape) or self._label_read(node) is not None:
                continue
            have = len(t.shape) - width - rank
            if have > want:
                own = sizes.show(tuple(t.shape[width:len(t.shape) - rank]))
                self.err(f"inside plate {', '.join(self._plate_names())}, '{fmt.expr(node)}' "
                         f"has {own} numbers of its own per element, which do not fit "
                         f"'{s.name}' ({'one number' if not want else f'{want} dims'} per "
                         "element)", node.span,
                         [f"declare '{s.name}' with those dims after the plates' sizes, or "
                          "reduce or index the value to the element's own shape"])
                return False
        return True

    def _fit_shape(self, s: ast.Sample, shape, dty: Ty):
        """Check a declared/data shape against the distribution; return event dims."""
        if shape is None:
            return None
        pshape = tuple(p.size for p in self.plate_stack)
        if len(shape) < len(pshape) and s.type is not None and s.name not in self.observed:
            self._latent_not_of_plate(s, shape, len(shape))
            return None
        if len(shape) < len(pshape):
            self.err(f"'{s.name}' has shape {sizes.show(shape)} but sits inside plates "
                     f"{sizes.show(pshape)}", s.name_span)
            return None
        for i, p in enumerate(pshape):
            rel = sizes.compare(shape[i], p)
            if rel != sizes.Relation.EQUAL and s.type is not None and s.name not in self.observed:
                self._latent_not_of_plate(s, shape, i)
                return None
            if rel == sizes.Relation.DIFFERENT:
                self.err(f"'{s.name}' has leading size {shape[i]} but plate "
                         f"{self.plate_stack[i].name} has size {p}", s.name_span)
                return None
            if rel == sizes.Relation.UNKNOWN and self.plate_stack[i].subsample \
                    and s.name in self.observed:
                # its rows are not the plate's by their size, so the minibatch would not
                # select them (rt.batch_size): Pyro's 'not broadcastable' once B < N
                plate = self.plate_stack[i]
                want = shape[:i] + (p,) + shape[i + 1:]
                self.err(f"'{s.name}' has leading size {sizes.show((shape[i],))[1:-1]}, not "
                         f"plate {plate.name}'s size {sizes.show((p,))[1:-1]}, and the plate "
                         "is subsampled (batch): only data whose size is the plate's are cut "
                         "to its minibatch", s.name_span,
                         [f"declare it with the plate's size: {s.name}: "
                          f"{self.symbols[s.name].ty.kind}{sizes.show(want)}"])
                return None
            if rel == sizes.Relation.UNKNOWN:
                self._defer(shape[i], p, s.name_span, f"dimension {i} of '{s.name}' and the plate")
        full_shape = _runtime_form(shape, self.plate_stack)
        event = dty.event or 0
        if self._global_on_plate(s, full_shape[: len(full_shape) - event]) \
                or not self._own_dims_fit(s, shape, dty):
            return None
        if dty.shape is not None:
            full, issues = sizes.broadcast(dty.shape, full_shape)
            if full is not None and len(full) > len(full_shape):
                self.err(f"the distribution has shape {sizes.show(dty.shape)}, which does not "
                         f"fit '{s.name}' of shape {sizes.show(full_shape)}", s.dist.span)
                return None
            self._report(issues, s.dist.span,
                         f"the distribution {sizes.show(dty.shape)} and '{s.name}' "
                         f"{sizes.show(full_shape)}")
        elif dty.dist == "SpanningTree" and not self._spanning_tree_value(
                s, tuple(shape[len(pshape):])):
            return None
        return tuple(shape[len(pshape):])

    def _spanning_tree_value(self, s: ast.Sample, own: tuple) -> bool:
        """A SpanningTree's value, V - 1 edges [a, b] ([V - 1, 2]), against its
        V (V - 1) / 2 edge logits where a size name leaves V open (written sizes are the
        distribution's shape, :func:`_dist_shape`): E edges of the tree need E (E + 1) / 2
        logits. A compile error where provably not, else checked when data bind the sizes.
        False when reported."""
        found = self._dist_bound.get(id(s.dist))
        node, t = found[1].get("edge_logits", (None, None)) if found else (None, None)
        if t is None or t.kind not in TENSOR_KINDS or not t.shape:
            return True
        if len(own) != 2 or sizes.compare(own[1], sizes.const(2)) == sizes.Relation.DIFFERENT:
            self.err(f"'{s.name}' is {sizes.show(own)} per draw, but a SpanningTree's value is "
                     "its V - 1 edges, each a pair of nodes [a, b]: [V - 1, 2]", s.name_span)
            return False
        logits, edges = t.shape[-1], own[0]
        what = (f"SpanningTree's 'edge_logits' {sizes.show(t.shape)} and '{s.name}' "
                f"{sizes.show(own)} (a tree of n nodes: n (n - 1) / 2 logits, n - 1 edges)")
        rel = sizes.compare(2 * logits, edges * (edges + 1))
        if rel == sizes.Relation.DIFFERENT:
            self.err(f"size mismatch between {what}: 2 * {logits} must be "
                     f"{edges * (edges + 1)}", s.dist.span)
            return False
        if rel == sizes.Relation.UNKNOWN:
            self._defer(2 * logits, edges * (edges + 1), s.dist.span, what)
        return True

    def _assign(self, s: ast.Assign) -> None:
        if isinstance(s.value, ast.FunctionLit):
            self._named_function(s)
            return
        ty = self._defining_expr(s.name, s.value)
        prev = self.symbols.get(s.name)
        observe = [f"use '~' to observe it: {s.name} ~ {fmt.expr(s.value)}"] \
            if ty.kind == "dist" and prev is not None and prev.role == "data" else []
        if not self._define(s.name, s.name_span, observe):
            return
        random = _is_random(s.value, self.symbols)
        if ty.kind == "network":
            role = "network"
        elif ty.kind not in TENSOR_KINDS + ("unknown",):
            role = "value"
        else:
            role = "deterministic" if random else "transformed"
        if s.type is not None:
            declared, constraint = self._type(s.type, allow_constrained=True)
            if declared.shape is not None and ty.shape is not None:
                full, issues = sizes.broadcast(ty.shape, declared.shape)
                if full is not None and len(full) > len(declared.shape):
                    self.err(f"'{s.name}' is declared {sizes.show(declared.shape)} but its value "
                             f"has shape {sizes.show(ty.shape)}", s.value.span)
                self._report(issues, s.value.span, f"'{s.name}' and its value")
            if declared.kind != "unknown":
                ty = Ty(declared.kind if ty.kind == "unknown" else ty.kind, declared.shape)
        if self.plate_stack and ty.shape is not None:
            self.det_width[s.name] = self._plate_width(s.value)
        if not self.plate_stack and self._reads_label(s.value):
            self.global_labels.add(s.name)
        if self.plate_stack and any(n in self.plate_labels for n in ast.names_read(s.value)):
            self.plate_labels.add(s.name)
        self.sites[id(s)] = SiteInfo(role, self._plate_names())
        self.symbols[s.name] = Symbol(s.name, role, ty, s.name_span, random=random or role ==
                                      "network", node=s, plates=self._plate_names())

    def _named_function(self, s: ast.Assign) -> None:
        """``b = (x, t) => body``: a name for a function literal, given later where a
        construct takes a function (``drift=b``). The body's names are resolved here, in
        the scope of the definition, with parameters of unknown shape and kind; the
        construct's shapes and kinds are known only where it is used (scan's ``x`` is an
        int over an ``int[T]``, an index), so the body is checked again there
        (:meth:`_function_lit` with ``use=``)."""
        lit = s.value
        if s.type is not None:
            self.err(f"'{s.name}' is a function and takes no declared type", s.type.span,
                     [f"write {s.name} = ({', '.join(lit.params)}) => ..."])
        ty = self._lit_body(lit, None, ("unknown",) * len(lit.params))
        if ty.kind not in TENSOR_KINDS + ("unknown",):
            self.err(f"the body of function '{s.name}' must be numeric, not {_a(ty.kind)} "
                     "value", lit.body.span)
        if not self._define(s.name, s.name_span):
            return
        if not self.plate_stack and self._reads_label(lit.body):
            # a value computed with it (scan(g, 0.0, y)) is a label's value, [K, 1, ...]
            self.global_labels.add(s.name)
        self.sites[id(s)] = SiteInfo("function", self._plate_names())
        # random: a value computed with it (scan(b, ...)) is computed in the model, where
        # b is defined, never hoisted into the transformed data
        self.symbols[s.name] = Symbol(s.name, "function", Ty("function", None), s.name_span,
                                      random=True, node=s, plates=self._plate_names())

    def _param(self, s: ast.Param) -> None:
        init = self._expr(s.init)
        if self.plate_stack:
            self.err("'param' belongs at the top level of the model, not inside a plate",
                     s.span)
        if _is_random(s.init, self.symbols):
            self.err(f"the initial value of param '{s.name}' must not depend on random "
                     "quantities", s.init.span)
        if not self._define(s.name, s.name_span):
            return
        declared, constraint = self._type(s.type, allow_constrained=True)
        if init.kind not in TENSOR_KINDS + ("unknown",):
            self.err("a param's initial value must be numeric", s.init.span)
        elif declared.shape is not None and init.shape is not None:
            full, issues = sizes.broadcast(init.shape, declared.shape)
            if full is not None and len(full) > len(declared.shape):
                self.err(f"the initial value has shape {sizes.show(init.shape)}, larger than "
                         f"'{s.name}' {sizes.show(declared.shape)}", s.init.span)
            self._report(issues, s.init.span, f"the initial value and '{s.name}'")
        self.sites[id(s)] = SiteInfo("param", (), constraint=constraint)
        self.symbols[s.name] = Symbol(s.name, "param", Ty("real", declared.shape), s.name_span,
                                      random=True, node=s, constraint=constraint)

    # ---- shape issues ----
    def _report(self, issues, span: Span, what: str) -> None:
        for m in issues:
            if m.provable:
                self.err(f"size mismatch between {what}: {m.left} vs {m.right}", span)
            else:
                self._defer(m.left, m.right, span, what)

    def _defer(self, a, b, span: Span, what: str, at_least: bool = False) -> None:
        self.deferred.append(DeferredCheck(str(a), str(b), span, what, at_least))

    # ---- expressions ----
    def _expr(self, e: ast.Expr) -> Ty:
        ty = self._expr_inner(e)
        self.types[id(e)] = ty
        return ty

    def _expr_inner(self, e: ast.Expr) -> Ty:
        if isinstance(e, ast.Number):
            if isinstance(e.value, int):
                return Ty("int", (), dim=sizes.const(e.value) if e.value >= 0 else None,
                          value=e.value)
            return Ty("real", (), value=e.value)
        if isinstance(e, ast.Bool):
            return Ty("bool", (), value=e.value)
        if isinstance(e, ast.String):
            return Ty("string", None, value=e.value)
        if isinstance(e, ast.Name):
            return self._name(e)
        if isinstance(e, ast.Neg):
            t = self._expr(e.operand)
            if t.kind not in TENSOR_KINDS + ("unknown",):
                self.err(f"cannot negate {_a(t.kind)} value", e.span)
                return UNKNOWN
            return Ty(t.kind if t.kind != "bool" else "int", t.shape,
                      dim=-t.dim if t.dim is not None else None)
        if isinstance(e, ast.BinOp):
            return self._binop(e)
        if isinstance(e, ast.Call):
            return self._call(e)
        if isinstance(e, ast.Index):
            return self._index(e)
        if isinstance(e, ast.ListLit):
            return self._list(e)
        if isinstance(e, ast.Attr):
            return self._attr(e)
        if isinstance(e, ast.Slice):
            self.err("a slice is only allowed inside [ ]", e.span)
            return UNKNOWN
        if isinstance(e, ast.FunctionLit):
            self.err("a function literal is allowed only as an argument that takes a "
                     "function or as the value of a name", e.span,
                     [f"such as {_function_args()}; or b = (x, t) => ..., then drift=b"])
            return UNKNOWN
        return UNKNOWN

    def _construct_of(self, ty: Ty):
        """The registry entry that built a construct value, if any."""
        if isinstance(ty.value, dict) and ty.value.get("builtin"):
            return builtins.lookup(ty.value["builtin"])
        return None

    def _attr(self, e: ast.Attr) -> Ty:
        base = self._expr(e.value)
        if base.kind == "unknown":
            return UNKNOWN
        b = self._construct_of(base)
        if b is None or e.attr not in b.attrs:
            have = f"; {b.name} values have: {', '.join(sorted(b.attrs))}" if b and b.attrs \
                else ""
            self.err(f"'{e.attr}': no such attribute{have}", e.span)
            return UNKNOWN
        kind = b.attrs[e.attr]
        return Ty(kind, None, event=None) if kind == "dist" else Ty(kind, None)

    def _name(self, e: ast.Name, raw: bool = False) -> Ty:
        sym = self.symbols.get(e.id)
        if sym is not None:
            self.used.add(e.id)
            if sym.role == "data":
                self.data_reads.add(e.id)
            if sym.role == "data" and sym.optional:
                self.optional_reads.setdefault(e.id, e.span)
            if sym.role == "function":  # a function argument takes it in _arg, not here
                self.err(f"'{e.id}' is a function: it can only be given as an argument "
                         "that takes a function", e.span,
                         [f"such as {_function_args()}; it is defined at {sym.span}"])
                return UNKNOWN
            if e.id in self.batch_local:
                batch = self.batch_local[e.id]
                self.err(f"'{e.id}' is drawn in plate {batch.name}, which is subsampled "
                         f"(batch): after the plate it holds only the last minibatch's "
                         "rows, so this read would not see the elements it names", e.span,
                         [f"draw '{e.id}' in a plate without batch, or read it inside "
                          f"plate {batch.name}"])
                return UNKNOWN
            if e.id in self.closed_labels:
                plate = self.closed_labels.pop(e.id)  # reported at its first read
                self._unfittable(f"'{e.id}' is a discrete latent of plate {plate.name} (or "
                                 "computed from one there), and that plate has closed: "
                                 "summed out, its label would be one value shared by every "
                                 "element here, not one per element", e.span,
                                 [f"read it inside plate {plate.name}: put what reads it "
                                  "in the same plate block"])
            if e.id in self.closed_layout:
                self.unaligned[id(e)] = self.closed_layout[e.id]
            if sym.plates and self.plate_stack:
                open_ = {p.name for p in self.plate_stack}
                gone = [n for n in sym.plates if n not in open_]
                if gone and len(gone) < len(sym.plates):
                    # its closed plates' dims sit where the open plates' are laid out:
                    # a[i, j] read in plate i after plate j would meet plate i's
                    # elements (or a later plate's) with J, not be a [J] per element
                    self.err(f"'{e.id}' is drawn in plates {', '.join(sym.plates)}, and "
                             f"plate {', '.join(gone)} has closed while "
                             f"{', '.join(n for n in sym.plates if n in open_)} is still "
                             "open: reading it here is not supported (its closed plate's "
                             "dim would be matched with another)", e.span,
                             [f"read it inside plate {gone[-1]}, or after its plates "
                              f"have closed, in a new block: plate {sym.plates[0]} in "
                              f"... {{ ... sum({e.id}[{sym.plates[0]}]) ... }}"])
                    return UNKNOWN
            if self.plate_stack and not raw and self._in_builtin and sym.ty.shape and (
                    e.id in self.global_labels or _sized_like_plates(sym)):
                # in a built-in that mixes elements (sum, softmax, cumsum) of a value
                # computed from a label outside plates, [K, 1.., own dims], the values read
                # whole keep their own dims, as outside plates (sum(w * x) is one sum per
                # label value); a site moves what the call returns onto its plates
                # (_label_args)
                self._own_reads.add(id(e))
                return sym.ty
            if self.plate_stack and not raw and e.id in self.global_labels and sym.ty.shape:
                plates = self._aligned_plates(sym.ty.shape)
                if plates:  # computed from a label: its own leading dims onto the plates'
                    self.label_aligned[id(e)] = (tuple(p.dim for p in plates),
                                                 len(sym.ty.shape))
                    return Ty(sym.ty.kind, _runtime_form(sym.ty.shape, plates))
            if self.plate_stack and not raw and _sized_like_plates(sym):
                plates = self._aligned_plates(sym.ty.shape)
                form = _runtime_form(sym.ty.shape, plates)
                if form != sym.ty.shape:
                    # one value per element of outer plates: at their Pyro dims
                    self.aligned[id(e)] = tuple(p.dim for p in plates)
                    return Ty(sym.ty.kind, form)
            return sym.ty
        if e.id in self.later:
            self._used_before(e.id, e.span)
            return UNKNOWN
        b = builtins.lookup(e.id)
        if b is not None:
            return Ty("function", None, value=e.id)
        if signatures.lookup(e.id) is not None:
            return Ty("function", None, value=e.id)
        hint = signatures.suggest(e.id, list(self.symbols))
        notes = [f"did you mean '{hint}'?"] if hint else []
        if self._fn_params:
            notes.append(f"in a function literal's body a name is one of its parameters "
                         f"({', '.join(self._fn_params[-1])}) or a name of the model")
        self.err(f"'{e.id}' is not defined", e.span, notes)
        return UNKNOWN

    def _defining_expr(self, name: str, e: ast.Expr) -> Ty:
        """The type of the right side of ``name ~ e`` or ``name = e``, where a read of
        ``name`` itself is a use in its own definition."""
        self._defining = name
        try:
            return self._expr(e)
        finally:
            self._defining = None

    def _used_before(self, name: str, span: Span) -> None:
        if name == self._defining:
            # in a plate, z[t - 1] in z's own '~' or '=' is a loop over the plate's steps
            self.err(f"'{name}' is used in its own definition", span, [
                f"a plate is not a loop: its elements are drawn at once, so {name}[t] cannot "
                f"read {name}[t - 1]; a recursion over steps is scan(f, init, xs) (docs: "
                "Recursions)",
                "a Markov chain of labels is summed out by its forward pass: alpha = "
                "scan((a, r) => logsumexp(a + transpose(logA)) + log_prob(Normal(m, 1), r), "
                "logpi + log_prob(Normal(m, 1), y[0]), y[1:]), then "
                "factor(logsumexp(alpha[-1]))"] if self.plate_stack else None)
        else:
            self.err(f"'{name}' is used before it is defined", span,
                     [f"it is defined at {self.later[name]}"])

    def _dist_value_note(self, e: ast.Expr) -> list[str]:
        """For a name given a distribution with '=' and then used as a number: the '~'
        that was probably meant."""
        sym = self.symbols.get(e.id) if isinstance(e, ast.Name) else None
        if sym is None or sym.ty.kind != "dist" or not isinstance(sym.node, ast.Assign):
            return []
        return [f"'{e.id}' is a distribution ({sym.span}); did you mean "
                f"'{e.id} ~ {fmt.expr(sym.node.value)}'?"]

    def _element_matmul(self, e: ast.Expr, left: ast.Expr, right: ast.Expr, a: Ty,
                        b: Ty) -> Ty | None:
        """``M @ w`` or ``v @ w`` inside plates, ``w`` one vector per element (laid out
        with the plate dims first, ``[T, K]``): each element's product, as Stan's
        ``M * w[t]`` in the loop (torch's matmul read ``[T, K]`` as one matrix: a size
        error, or a silent wrong product where T = K). The operands' own dims meet, their
        plate dims broadcast (``rt.label_matmul``). None where torch's own broadcasting
        already reads each element's product (a per-element left operand, a per-element
        matrix on the right)."""
        wa, wb = self._plate_width(left), self._plate_width(right)
        if not wb or wa is None or a.shape is None or b.shape is None \
                or len(a.shape) < wa or len(b.shape) < wb:
            return None
        own_a, own_b = a.shape[wa:], b.shape[wb:]
        if not own_a or not own_b or (len(own_b) > 1 and not (wa and len(own_a) == 1)):
            return None
        shape, issues = sizes.matmul(own_a, own_b)
        self._report(issues, e.span, f"the operands of '@' {sizes.show(own_a)} and "
                     f"{sizes.show(own_b)} (each element's own)")
        front, issues = sizes.broadcast(a.shape[:wa], b.shape[:wb])
        self._report(issues, e.span, "the plate dims of the operands of '@'")
        if shape is None or front is None:
            return Ty("real", None)
        self.label_matmul[id(e)] = (len(own_a), len(own_b))
        return Ty("real", tuple(front) + tuple(shape))

    def _real_matmul(self, what: str, operands) -> bool:
        """A matrix product of int or bool values (``g @ A`` of int data ``g``): torch's
        matmul takes one floating dtype (long with double is its RuntimeError, long alone
        fails on a GPU), and Stan's matrices are real. False when reported."""
        for node, t in operands:
            if t.kind in ("int", "bool"):
                text = fmt.expr(node)
                text = text if isinstance(node, (ast.Name, ast.Call, ast.Index)) else f"({text})"
                self.err(f"{what} multiplies real matrices and vectors, not {_a(t.kind)} "
                         "value", node.span, [f"make it real first: 1.0 * {text}"])
                return False
        return True

    def _binop(self, e: ast.BinOp) -> Ty:
        a, b = self._expr(e.left), self._expr(e.right)
        if "unknown" in (a.kind, b.kind):
            return UNKNOWN
        if a.kind == "kernel" and b.kind == "kernel" and e.op in "+*":
            return Ty("kernel", None)
        if a.kind == "kernel" or b.kind == "kernel":
            if e.op == "*" and TENSOR_KINDS.count(a.kind if b.kind == "kernel" else b.kind):
                return Ty("kernel", None)
            other = a.kind if a.kind != "kernel" else b.kind
            self.err(f"kernels combine with + and * only, not '{e.op}' with {_a(other)}", e.span)
            return UNKNOWN
        for t, side in ((a, e.left), (b, e.right)):
            if t.kind not in TENSOR_KINDS:
                self.err(f"operator '{e.op}' needs numbers or tensors, not {_a(t.kind)} value",
                         side.span, self._dist_value_note(side))
                return UNKNOWN
        if e.op == "@":
            shape, issues = sizes.matmul(a.shape, b.shape)
            if a.shape == () or b.shape == ():
                self.err("'@' needs tensors with at least one dimension; use '*' for scalars",
                         e.span)
                return UNKNOWN
            if not self._real_matmul("'@'", ((e.left, a), (e.right, b))):
                return UNKNOWN
            per = self._element_matmul(e, e.left, e.right, a, b) if self.plate_stack else None
            if per is not None:
                return per
            self._report(issues, e.span,
                         f"the operands of '@' {sizes.show(a.shape)} and {sizes.show(b.shape)}")
            self._label_matmul(e, a, b)
            return Ty("real", shape)
        if self.plate_stack:
            met = self._plates_meet(e, a, b)
            if met is None:
                return UNKNOWN
            a, b = met
        elif a.shape is not None and b.shape is not None:
            # a label's value meets a vector outside plates: its own dims stay right of
            # the model's plate dims (2 * z + mu is [K, 1, D], not [K, D])
            a = self._label_pad(e.left, a, len(b.shape))
            b = self._label_pad(e.right, b, len(a.shape))
        shape, issues = sizes.broadcast(a.shape, b.shape)
        self._report(issues, e.span,
                     f"the operands of '{e.op}' {sizes.show(a.shape)} and {sizes.show(b.shape)}")
        dim = None
        if a.dim is not None and b.dim is not None and e.op in "+-*":
            dim = {"+": a.dim + b.dim, "-": a.dim - b.dim, "*": a.dim * b.dim}[e.op]
        if e.op in ("<", ">", "<=", ">=", "==", "!="):
            kind = "bool"
        elif e.op in "/^" or "real" in (a.kind, b.kind):
            kind = "real"
        else:
            kind = "int"
        value = None
        if isinstance(a.value, (int, float)) and isinstance(b.value, (int, float)):
            value = None
        return Ty(kind, shape, dim=dim, value=value)

    def _list(self, e: ast.ListLit) -> Ty:
        tys = [self._expr(x) for x in e.items]
        if not tys:
            self.err("an empty list has no shape", e.span)
            return UNKNOWN
        if any(t.kind not in TENSOR_KINDS for t in tys):
            if all(t.kind in TENSOR_KINDS + ("unknown",) for t in tys):
                return UNKNOWN
            return Ty("list", None)
        own = self._element_items(e, tys) if self.plate_stack else None
        if own is not None and own[0] is None:
            return UNKNOWN
        if own is not None:
            tys = own[0]
        shape = tys[0].shape
        for t, x in zip(tys[1:], e.items[1:], strict=False):
            shape, issues = sizes.broadcast(shape, t.shape)
            self._report(issues, x.span, "the items of a list")
        kind = "real" if any(t.kind == "real" for t in tys) else tys[0].kind
        if shape is None:
            return Ty(kind, None)
        at = 0
        if own is not None:
            # per plate element: stacked right of the plate dims, left of the items' own
            at = len(shape) - own[1]
            self.stacks[id(e)] = -own[1] - 1
        elif not self.plate_stack and self._reads_label(e):
            self._label_list(e, tys, shape)
        if at:
            self.list_at[id(e)] = at
        return Ty(kind, tuple(shape[:at]) + (sizes.const(len(tys)),) + tuple(shape[at:]))

    def _element_items(self, e: ast.ListLit, tys: list[Ty]) -> tuple | None:
        """Inside plates, a list whose items vary along the plates (or read a label
        summed out outside them) is each element's own list, as Stan's loop writes
        ``[w[n], 1 - w[n]]'``: its items are stacked right of their plate dims, not along
        a new first dim (which would read ``[w, 1 - w]`` of ``w: real[N]`` as [2, N]).
        Returns (the item types, those with fewer own dims widened with unit dims before
        them as ``rt.per_element`` does, and the items' own rank), None for a list of
        plain global values (stacked along dim 0, the same), or (None, None) after a
        located error."""
        widths = [self._plate_width(x) for x in e.items]
        if any(t.shape is None for t in tys) or not (
                any(widths) or any(self._label_value(x) for x in e.items)):
            return None
        for x, t, w in zip(e.items, tys, widths, strict=True):
            if w is None or w > len(t.shape):
                self.err(f"inside plate {', '.join(self._plate_names())}, this list has "
                         "items with one value per plate element, and whether this item "
                         "is one too cannot be told, so the list cannot be stacked element "
                         "by element", x.span,
                         ["index it with the plate's index (x[i]), or compute it before "
                          "the plate"])
                return None, None
        rank = max(len(t.shape) - w for t, w in zip(tys, widths, strict=True))
        out = []
        for x, t, w in zip(e.items, tys, widths, strict=True):
            units = rank - (len(t.shape) - w)
            if w and units > 0:
                self.pads[id(x)] = (len(t.shape) - w, units)
                t = Ty(t.kind, sizes.widened(t.shape, w, units), dim=t.dim, value=t.value)
            elif not w:
                t = self._label_pad(x, t, rank)
            out.append(t)
        return out, rank

    def _elementwise_pads(self, bound: dict, e: ast.Call) -> dict | None:
        """``where(c, a, b)``, ``clamp(x, lo, hi)`` and ``pow(x, y)`` inside plates meet
        their arguments element by element, as arithmetic does (``m + mu``, ``x ^ y``): an
        argument with one value per plate element and fewer own dims than another gets
        unit dims after its plate dims (``rt.per_element``), so its plate dim meets the
        plate's, not another's own dim (``where(x[n] > 0, x2, 0.5)`` of ``x2: real[N, K]``
        in plate n is row n's; it was torch's "size of tensor a (5) must match", and
        ``pow(x2[n], x)`` too). The bare name of data meeting a row of its size there
        (``pow(A[j, :], w)``) is the located error of two loop readings, as with ``^``;
        None after it."""
        widths = {k: self._plate_width(node) for k, (node, _) in bound.items()}
        if not any(widths.values()) or any(
                w is None or t.shape is None or w > len(t.shape)
                for w, (_, t) in zip(widths.values(), bound.values(), strict=True)):
            return bound
        rank = max(len(t.shape) - widths[k] for k, (_, t) in bound.items())
        out = dict(bound)
        for k, (node, t) in bound.items():
            units = rank - (len(t.shape) - widths[k])
            side = next(((n, o, widths[j]) for j, (n, o) in bound.items()
                         if widths[j] and len(o.shape) - widths[j] == rank), None)
            if widths[k] and units > 0 and side is not None and self._bare_data(node) \
                    and not self._bare_only(side[0]) \
                    and self._pairs_whole(node, side[1], side[2]) \
                    and self._plate_conflict(t, widths[k], side[1]) is None \
                    and self._plate_conflict(t, widths[k], side[1], side[2]):
                # pow(A[j, :], w) in plate j: w[j] per element, or Stan's whole w paired
                self._bare_meets_row(e, node, side[0], side[1], side[2])
                return None
            if widths[k] and units > 0:
                self.pads[id(node)] = (len(t.shape) - widths[k], units)
                out[k] = (node, Ty(t.kind, sizes.widened(t.shape, widths[k], units),
                                   dim=t.dim, value=t.value))
        return out

    def _index(self, e: ast.Index) -> Ty:
        if isinstance(e.value, ast.Name):  # x[i] reads the data as declared
            base = self._name(e.value, raw=True)
            self.types[id(e.value)] = base
            sym = self.symbols.get(e.value.id)
            if sym is not None and _sized_like_plates(sym) and self.plate_stack:
                plates = self._aligned_plates(sym.ty.shape)
                over = [isinstance(i, ast.Slice) for i in e.indices[: len(plates)]]
                # a slice before an index that drops a later plate's dimension (x[:, 0] of
                # x: real[N, M] in plates N and M: [N] at M's dim); x[i, :] is a row
                dropped = any(s and not all(over[k + 1:]) for k, s in enumerate(over))
                if any(over) and (_runtime_form(sym.ty.shape, plates) != sym.ty.shape
                                  or dropped) and not self._global_index(e) \
                        and not self._column_read(e):
                    # a slice keeps the plate's dimension where the data have it, not at
                    # the plate's Pyro dim, which would pair it with an inner plate
                    index = plates[0].index or "i"
                    self.err(f"inside nested plates, '{e.value.id}' has one row per element "
                             f"of plate {plates[0].name}; a slice over that dimension reads "
                             "it at the wrong plate", e.span,
                             [f"index it with the plate's index ({e.value.id}[{index}, ...] "
                              f"under plate {index} in {sizes.show((plates[0].size,))[1:-1]}),"
                              f" or use '{e.value.id}' whole"])
                    return UNKNOWN
        else:
            if isinstance(e.value, ast.Call):  # exp(w)[d]: the call sees w's own dims
                self._indexed_call = id(e.value)
            base = self._expr(e.value)
        item_tys = []
        for item in e.indices:
            if isinstance(item, ast.Slice):
                for part in (item.start, item.stop):
                    if part is not None:
                        t = self._expr(part)
                        if t.kind not in ("int", "unknown") or t.shape not in ((), None):
                            self.err("slice bounds must be integers", part.span)
                item_tys.append(None)
            else:
                t = self._expr(item)
                if t.kind not in ("int", "bool", "unknown"):
                    self.err(f"an index must be an integer, not {_a(t.kind)} value", item.span)
                item_tys.append(t)
        if base.kind == "unknown":
            return UNKNOWN
        if base.kind not in TENSOR_KINDS:
            self.err(f"cannot index {_a(base.kind)} value", e.span)
            return UNKNOWN
        if base.shape is None:
            return Ty(base.kind, None)
        self._label_index(e, base)
        own = self._self_index(e, item_tys)
        if own is not None:
            # a[j] of a value drawn in plate j: its plate dims stay whole, the indices
            # after the plates' read its per-element dims (b[j, 1] is b's column 1)
            drop, width = own
            self.self_indexed[id(e)] = own
            front, base = base.shape[:width], Ty(base.kind, base.shape[width:])
            e = ast.Index(e.value, e.indices[drop:], span=e.span)
            item_tys = item_tys[drop:]
        else:
            front = ()
            # w[k] of w = x2[t] (or a latent) of an outer plate t, k an inner plate's index:
            # entry k of the row, as Stan's local w reads it
            entry = self._row_entry(e, item_tys)
            # w[0], w[1:] of w = x2[t] (or z drawn) in plate t: the element's own entries
            elem = 0 if entry else self._element_index(e, base)
            if elem is None:
                return UNKNOWN
            if not entry and not elem and self._reads_outer_layout(e):
                return UNKNOWN
            width = elem or (self._plate_width(e.value) if (
                not isinstance(e.value, ast.Name) or entry) and self.plate_stack
                and id(e) not in self.label_vindex else 0)
            if width and len(base.shape) > width:
                # mu[c][0] with c drawn in the plate: mu[c] is one row per element, and
                # the index reads the row's own dims, from the right (Vindex(mu[c])[...,
                # 0]), not the plate dims, nor a label's summed-out dims left of them
                self.label_vindex[id(e)] = len(base.shape) - width
                front, base = base.shape[:width], Ty(base.kind, base.shape[width:])
                # an index with one value per plate element (x[i][c], c drawn in the
                # plate) meets the row's plate dims, as Vindex broadcasts them, and picks
                # within each element's row
                along = False
                for k, (item, t) in enumerate(zip(e.indices, item_tys, strict=False)):
                    w = self._plate_width(item) if t is not None and t.shape else 0
                    along = along or w != 0
                    if w and w <= len(t.shape):
                        front = sizes.broadcast(front, t.shape[:w])[0] or front
                        item_tys[k] = Ty(t.kind, t.shape[w:], dim=t.dim, value=t.value)
                if not along:
                    self.plain_index.add(id(e))
        if len(e.indices) > len(base.shape):
            self.err(f"too many indices: the value has {len(base.shape)} "
                     f"dimension{'s' if len(base.shape) != 1 else ''} "
                     f"{sizes.show(base.shape)}", e.span)
            return UNKNOWN
        if not front and self.plate_stack:
            self._rows_read(e, item_tys, len(base.shape))
        out: list = []
        # index tensors broadcast together (NumPy's advanced indexing): x[i, j] with i
        # [N, 1] and j [M] is [N, M], placed where the first of them stands
        advanced, at = None, None
        for i, (item, t) in enumerate(zip(e.indices, item_tys, strict=False)):
            dim = base.shape[i]
            if t is not None:
                if not (t.shape == () and t.dim is not None and not t.dim.is_number):
                    self._data_index(e, item, dim)  # (a size expression: _size_index)
                self._plate_index_size(e, i, item, dim)
                self._plate_index_shift(e, i, item, dim)
            if t is None:
                start = self._static_dim(item.start, sizes.const(0))
                stop = self._static_dim(item.stop, dim)
                if start is None or stop is None:
                    return Ty(base.kind, None)
                out.append(self._slice_fits(e, i, item, start, stop, dim))
            elif t.shape == ():
                if (isinstance(t.value, int) and dim.is_Integer
                        and not (-dim <= t.value < dim)):
                    self.err(f"index {t.value} is out of range for size {dim}", item.span)
                elif t.dim is not None and not t.dim.is_number:
                    self._size_index(e, i, item, t.dim, dim)
            elif t.shape is None:
                return Ty(base.kind, None)
            elif advanced is None:
                advanced, at = tuple(t.shape), len(out)
            else:
                advanced, issues = sizes.broadcast(advanced, t.shape)
                self._report(issues, item.span, "the index tensors")
                if advanced is None:
                    return Ty(base.kind, None)
        if advanced is not None and at and not front and self.plate_stack and any(
                t is not None and t.shape and self._plate_width(item)
                for item, t in zip(e.indices, item_tys, strict=False)):
            # A[:, m] in plate m is column m, one [K] per element (Stan's col(A, m)): its
            # plate dims first, as every value of the plate has them (torch's [K, M] put
            # them last: "Shape mismatch inside plate", or a transposed read)
            self.plate_first[id(e)] = (at, len(advanced))
            at = 0
        if advanced is not None:
            out[at:at] = list(advanced)
        out.extend(base.shape[len(e.indices):])
        return Ty(base.kind, tuple(front) + tuple(out))

    def _column_read(self, e: ast.Index) -> bool:
        """``x2[0:2, k]`` (``xm[:, m]``, ``x2[:, gid[n]]``) of data whose leading size is a
        plate's, in nested plates: slices whose bounds are the same for every element,
        then an index with one value per element, read the declared data as Stan's loop
        does (``x2[1:2, k]``, one vector per element of plate k), laid out with the plate
        dims first as ``A[:, m]`` is (``plate_first``), whatever the data's layout."""
        sliced = False
        for item in e.indices:
            if isinstance(item, ast.Slice):
                sliced = True
                if any(b is not None and self._plate_width(b) != 0
                       for b in (item.start, item.stop)):
                    return False
            elif not sliced or self._plate_width(item) is None:
                return False
        return sliced

    def _slice_fits(self, e: ast.Index, i: int, item: ast.Slice, start, stop, dim):
        """The length of slice ``i`` of ``e`` along ``dim``, its ends in range: a stop past
        the dimension (``u[1:K + 1]`` of ``u: real[M]``) or a start past the stop
        (``u[K:]``) is an error where it is so for every size, else checked when data bind
        the sizes (Stan refuses an out-of-range slice; torch would cut it short, and the
        value would not have the length the checker gives it)."""
        name = fmt.expr(e.value) if isinstance(e.value, ast.Name) else "the value"
        written = fmt.expr(e)
        of = f"dimension {i} of {name!r}" if name != "the value" else f"dimension {i}"
        ends = []
        for which, end in (("starts", start), ("ends", stop)):
            if end.is_number and end < 0:
                end = dim + end  # a literal from the end, as in Python
            elif not end.is_number and not self._signed_end(written, which, end, dim,
                                                            item.span):
                return _slice_length(start, stop, dim)
            ends.append(end)
        lo, hi = ends
        past = dim - hi
        if all(x.is_number for x in (dim, *ends)) and past >= 0:
            return _slice_length(start, stop, dim)  # numbers: x[3:1] is empty, as in Stan
        if sizes.always_negative(past):
            self.err(f"the slice {written} ends at {hi.signed()}, past the end of {of} of "
                     f"size {dim.signed()}", item.span)
            return _slice_length(start, stop, dim)
        if not sizes.never_negative(past):
            self._defer(dim, hi, item.span, f"{of} and the end of the slice {written}",
                        at_least=True)
        length = hi - lo
        if sizes.always_negative(length):
            self.err(f"the slice {written} starts at {lo.signed()}, past its end "
                     f"{hi.signed()}", item.span)
            return sizes.const(0)
        if not sizes.never_negative(length):
            self._defer(hi, lo, item.span, f"the end and the start of the slice {written}",
                        at_least=True)
        return length

    def _size_index(self, e: ast.Index, i: int, item: ast.Expr, idx, dim) -> None:
        """An index written with sizes (``x[K - 3]``, ``v[K]``) counts from 0 and reads
        inside its dimension: negative (read from the end by torch: only a literal negative
        number counts from the end) or past the end for every size is an error, for some
        sizes checked when data bind them. Not in a branch of ``where``, whose condition
        may mask the read (``where(K > 2, x[K - 3], 0.0)``)."""
        if self._in_where:
            return
        written = fmt.expr(e)
        name = fmt.expr(e.value) if isinstance(e.value, ast.Name) else None
        of = f"dimension {i} of {name!r}" if name else f"dimension {i}"
        past = dim - idx - 1
        if sizes.always_negative(idx):
            self.err(f"the index {written} is {idx.signed()}, which is negative for every "
                     "size: only a literal negative number counts from the end", item.span,
                     [f"count from the end with the dimension's size: {(dim + idx).signed()}"])
        elif sizes.always_negative(past):
            self.err(f"the index {written} reads {idx.signed()}, past the end of {of} of "
                     f"size {dim.signed()}", item.span, ["indices are 0-based: the last is "
                                                         f"{(dim - 1).signed()}"])
        else:
            if not sizes.never_negative(idx):
                self._defer(idx.signed(), "0", item.span, f"the index {written}",
                            at_least=True)
            if not sizes.never_negative(past):
                self._defer(dim, idx + 1, item.span, f"{of} and the index {written}",
                            at_least=True)

    def _signed_end(self, written: str, which: str, end, dim, span: Span) -> bool:
        """A slice's start or stop written with sizes counts from 0, never from the end:
        only a literal negative number does (``x[-2:]``). One negative for every size
        (``x[-K - 1:]``) is an error (False), one negative for some (``x[K - 2:]`` at K =
        1, ``x[:-K]``) is checked when data bind the sizes, so that Python's count from
        the end never switches on silently (the checker's length ``M - K + 2`` would not
        be the value's)."""
        if sizes.always_negative(end):
            self.err(f"the slice {written} {which} at {end.signed()}, which is negative for "
                     "every size: only a literal negative number counts from the end",
                     span, [f"count from the end with the dimension's size: "
                            f"{(dim + end).signed()}"])
            return False
        if not sizes.never_negative(end):
            self._defer(end.signed(), "0", span,
                        f"the {'start' if which == 'starts' else 'stop'} of the slice "
                        f"{written}", at_least=True)
        return True

    def _rows_read(self, e: ast.Index, item_tys: list, rank: int) -> None:
        """Record (``rows_read``) the dims ``e`` keeps after an index with one value per
        plate element: ``x2[i, :]`` (or ``x2[i]``) of ``x2: real[I, J]`` under plates i
        and j is row i whole, ``[I, 1, J]``, its J an own dim, not plate j's."""
        first = next((k for k, (item, t) in enumerate(zip(e.indices, item_tys, strict=False))
                      if t is not None and t.shape and self._plate_width(item)), None)
        if first is None:
            if self._global_index(e) and any(_whole_slice(i) for i in e.indices):
                # u[:] (xm[:, 1]) of data whose leading size is a plate's: the explicit
                # ':' reads the whole dim (as u[0:M] does), not cut to a minibatch
                self.rows_read[id(e)] = True
            return
        kept = frozenset(k - rank for k in range(first + 1, rank)
                         if k >= len(e.indices) or isinstance(e.indices[k], ast.Slice))
        if kept:
            self.rows_read[id(e)] = kept

    def _plate_index_size(self, e: ast.Index, i: int, item: ast.Expr, dim) -> None:
        """``a[i]`` with ``i`` the index of ``plate i in N`` and ``a``'s dimension ``i`` of
        another size ``J``: the plate reads a[0], ..., a[N - 1], so J must be at least N
        (checked at binding when both are sizes given by data; a larger J is Stan's
        ``for (n in 1:N) a[n]`` over a longer array, and stays legal)."""
        if not isinstance(item, ast.Name):
            return
        sym = self.symbols.get(item.id)
        plate = next((p for p in self.plate_stack if p.index == item.id), None)
        if sym is None or sym.role != "index" or plate is None:
            return
        if not (getattr(dim, "is_Symbol", False) and getattr(plate.size, "is_Symbol", False)):
            return  # a constant or an expression (K + 1): not a plain size mismatch
        if sizes.compare(dim, plate.size) != sizes.Relation.UNKNOWN:
            return
        name = _source_text(e.value) if isinstance(e.value, ast.Name) else "the value"
        self._defer(dim, plate.size, e.span,
                    f"dimension {i} of {name!r} indexed by '{item.id}' and plate {item.id} in "
                    f"{sizes.show((plate.size,))[1:-1]}" if name != "the value" else
                    f"the dimension indexed by '{item.id}' and its plate", at_least=True)

    def _plate_index_shift(self, e: ast.Index, i: int, item: ast.Expr, dim) -> None:
        """``a[t + e]`` with ``t`` the index of ``plate t in N`` and ``e`` a whole-number
        expression of sizes and literals (``t - 1``, ``t + -1``, ``t - L``, ``t - L - 1``,
        ``t - 2 * L``, ``t + 1 - L``, ``c + t``; ``2 * t - 1``, ``2 * (t - 1)``, ``s`` of
        ``s = t - 1``), sizes whole numbers >= 0. At t = 0 the
        plate reads a[e], which torch reads from the end when e < 0 (a silent wrap: Stan's
        ``for (t in 2:T) ... y[t - 1]`` ported as ``plate t in T`` added a term for y[0]
        given y[T - 1]): an error when e < 0 for every size (``t - 1``, ``t - L - 1``), a
        check at binding when for some (``t - L``, ``t + L - M``: legal at L = 0, M <= L).
        At t = N - 1 it reads a[N - 1 + e] (a[c (N - 1) + e] for ``c * t + e``), so a's
        dimension must be at least N + e: an error when it is less for every size, else
        checked at binding unless proven. In a branch of ``where`` the start is not
        checked: its condition masks the wrapped read (where(t > 0, y[t - 1], 0.0))."""
        found = self._index_shift(item)
        if found is None:
            return
        index, shift, coef = found
        plate = next(p for p in self.plate_stack if p.index == index.id)
        name = _source_text(e.value) if isinstance(e.value, ast.Name) else "the value"

        def at(text: str) -> str:  # the index as written, with this item read as ``text``
            parts = [fmt.expr(x) for x in e.indices]
            parts[i] = text
            return f"{name}[{', '.join(parts)}]"

        written = at(fmt.expr(item))
        size = sizes.Dim._of(plate.size).signed()
        back = (-shift).signed()
        if self._in_where:
            pass  # where(t > 0, y[t - 1], 0.0): torch reads both branches, and the
            # condition masks the wrapped read (past-the-end reads raise: checked below)
        elif sizes.always_negative(shift):
            grouped = back if len((-shift).terms) == 1 else f"({back})"
            ahead = (f"{name}[{':, ' * i}{back}:]" if name != "the value" else "its rest")
            whole = f" ({at((dim + shift).signed())})" if shift.is_number else ""
            stan = (f"for Stan's `for ({index.id} in {1 + int(back)}:{size}) ... "
                    f"{name}[{index.id} - {back}]`, "
                    if shift.is_number and len(e.indices) == 1 else "")
            note = (f"{stan}give the shifted values their own name and plate: `ahead = "
                    f"{ahead}` then `plate {index.id} in {size} - {grouped} {{ "
                    f"{'ahead ~ ' if shift.is_number else ''}... {at(index.id)} ... }}`"
                    if coef == 1 else
                    f"the plate's index starts at 0 (Stan's starts at 1): every element it "
                    f"reads must be in [0, {dim.signed()})")
            self.err(f"{written} at {index.id} = 0 reads {at('-' + grouped)}, which torch "
                     f"counts from the end{whole}", item.span, [note])
            return
        if not self._in_where and not sizes.never_negative(shift):
            # negative for some sizes only: L = 0 in t + L - 1, M > L in t + L - M
            self._defer(shift.signed(), "0", item.span,
                        f"{written} at {index.id} = 0 reads {at(shift.signed())}",
                        at_least=True)
        need = coef * (plate.size - 1) + shift + 1  # N + e for t + e
        gap = dim - need
        if sizes.always_negative(gap):
            ahead = shift.signed()
            self.err(f"{written} reads {at((need - 1).signed())}"
                     f" at {index.id} = {(plate.size - 1).signed()}, past the end "
                     f"of a dimension of size {dim.signed()}", item.span,
                     [f"read the plate over {size} - "
                      f"{ahead if len(shift.terms) == 1 else f'({ahead})'} elements, or "
                      f"index {at(index.id)} in a plate of the shifted values"
                      if coef == 1 else "read the plate over fewer elements"])
        elif not sizes.never_negative(gap):
            self._defer(dim, need, e.span,
                        f"dimension {i} of {name!r} read at {fmt.expr(item)} in plate "
                        f"{index.id} in {size}", at_least=True)

    def _index_shift(self, item: ast.Expr) -> tuple[ast.Name, sizes.Dim, sizes.Dim] | None:
        """``(t, e, c)`` for an index ``item`` that is ``c * t + e`` (its terms added or
        subtracted in any order) with ``t`` the index of an open plate, read once with a
        plus sign and a whole-number coefficient ``c`` >= 1 (a literal or a size: ``2 *
        t``), and ``e`` a whole-number expression of sizes and literals (each other term
        has a size value, ``L``, ``2 * L``, ``1``, ``-1``); a name computed in the plate
        from such an expression (``s = t - 1``, then ``y[s]``) reads as it. None when it is
        ``t`` itself or another expression."""
        terms: list = []

        def local(node) -> ast.Expr | None:
            """The value of ``s = ...`` computed in the open plates, else None."""
            sym = self.symbols.get(node.id)
            value = getattr(sym.node, "value", None) if sym is not None else None
            if not isinstance(sym.node if sym else None, ast.Assign) \
                    or self.defined_in.get(node.id) != tuple(self.plate_stack):
                return None
            return value

        def flatten(node, sign: int, depth: int = 0) -> None:
            if isinstance(node, ast.BinOp) and node.op in ("+", "-"):
                flatten(node.left, sign, depth)
                flatten(node.right, sign if node.op == "+" else -sign, depth)
            elif isinstance(node, ast.Neg):
                flatten(node.operand, -sign, depth)
            elif isinstance(node, ast.Name) and depth < 8 and local(node) is not None:
                flatten(local(node), sign, depth + 1)
            elif scaled(node) is not None:
                c, inner = scaled(node)  # 2 * (t - 1): 2 * t - 2
                flatten(inner, sign * c, depth)
            else:
                terms.append((sign, node))

        def scaled(node) -> tuple[int, ast.Expr] | None:
            """(c, e) for ``c * e`` / ``e * c`` with c an int literal >= 1 and e a sum or a
            difference (``2 * (t - 1)``); None otherwise."""
            if not (isinstance(node, ast.BinOp) and node.op == "*"):
                return None
            for c, inner in ((node.left, node.right), (node.right, node.left)):
                if isinstance(c, ast.Number) and isinstance(c.value, int) and c.value >= 1 \
                        and isinstance(inner, (ast.BinOp, ast.Neg)) \
                        and getattr(inner, "op", "+") in ("+", "-"):
                    return c.value, inner
            return None

        flatten(item, 1)
        found = []  # (sign, index name, coefficient)
        for sign, n in terms:
            index, coef = self._scaled_index(n)
            if index is not None:
                found.append((sign, index, coef, n))
        if len(found) != 1 or found[0][0] < 1 or found[0][2] is None:
            return None
        scale, index, coef, term = found[0]
        coef = coef * scale  # 2 * (t - 1) reads t with coefficient 2
        shift = sizes.const(0)
        for sign, node in terms:
            if node is term:
                continue
            if isinstance(node, ast.Number) and isinstance(node.value, int):
                shift = shift + sign * node.value  # a literal of either sign: t + -1
                continue
            t = self.types.get(id(node))
            if t is None or t.dim is None or t.kind != "int":
                return None
            shift = shift + sign * t.dim
        return (index, shift, coef) if shift != 0 or coef != 1 else None

    def _scaled_index(self, node: ast.Expr) -> tuple[ast.Name | None, sizes.Dim | None]:
        """(t, c) for a term ``t`` or ``c * t`` / ``t * c`` of an open plate's index, ``c``
        an int literal >= 1 or a size expression (its coefficient; None for any other
        factor); (None, None) for a term without the index."""
        def is_index(n) -> bool:
            return isinstance(n, ast.Name) \
                and getattr(self.symbols.get(n.id), "role", "") == "index" \
                and any(p.index == n.id for p in self.plate_stack)

        if is_index(node):
            return node, sizes.const(1)
        if isinstance(node, ast.BinOp) and node.op == "*":
            for t, c in ((node.left, node.right), (node.right, node.left)):
                if is_index(t):
                    if isinstance(c, ast.Number) and isinstance(c.value, int):
                        return t, sizes.const(c.value) if c.value >= 1 else None
                    ty = self.types.get(id(c))
                    ok = ty is not None and ty.dim is not None and ty.kind == "int" \
                        and sizes.never_negative(ty.dim)
                    return t, ty.dim if ok else None
        if any(is_index(n) for n in ast.walk(node)):
            return node, None  # the index in another form: not read here
        return None, None

    def _data_index(self, e: ast.Index, item: ast.Expr, dim) -> None:
        """Record ``item`` as a DataIndex when it reads every value of an int data
        argument (or a size), maybe shifted by a whole number: ``g``, ``g[m]`` by the
        indices of plates of g's sizes and whole slices, ``g[m] - 1`` (Stan's 1-based
        data), ``sort(g)`` and ``reverse(g)`` (the same values), and in a function literal
        a parameter given each row of such data (scan's ``x`` over ``xs=g``); not
        ``g[0]``, nor ``2 * g``."""
        offset, scope, span = 0, None, item.span
        while True:
            if isinstance(item, ast.BinOp) and item.op in ("+", "-"):
                if isinstance(item.right, ast.Number) and isinstance(item.right.value, int):
                    offset += item.right.value if item.op == "+" else -item.right.value
                    item = item.left
                elif item.op == "+" and isinstance(item.left, ast.Number) \
                        and isinstance(item.left.value, int):
                    offset, item = offset + item.left.value, item.right
                else:
                    return
            elif isinstance(item, ast.Call) and item.func_name in ("sort", "reverse") \
                    and item.func_name not in self.symbols and len(item.args) == 1 \
                    and not item.kwargs:
                item = item.args[0]
            elif isinstance(item, ast.Name) and item.id in self._param_rows \
                    and scope is None:
                item, scope = self._param_rows[item.id]  # the data the parameter runs over
                continue  # located at the parameter, in the body
            else:
                break
            if scope is None:
                span = item.span
        whole = item.value if isinstance(item, ast.Index) else item
        if not isinstance(whole, ast.Name):
            return
        if scope is not None:  # names in the call's argument, seen from the call
            sym = scope.get(whole.id)
        elif any(whole.id in params for params in self._fn_params):
            return  # a function's parameter named like data
        else:
            sym = self.symbols.get(whole.id)
        if sym is None or sym.role not in ("data", "size") or sym.ty.kind != "int" \
                or sym.ty.shape is None:
            return
        if isinstance(item, ast.Index):
            if len(item.indices) > len(sym.ty.shape):
                return
            for k, i in enumerate(item.indices):
                if _whole_slice(i):
                    continue
                plate = next((p for p in self.plate_stack if isinstance(i, ast.Name)
                              and p.index == i.id), None)
                if plate is None or sizes.compare(plate.size, sym.ty.shape[k]) != "equal":
                    return
        self.data_indices.append(DataIndex(whole.id, str(dim), span, _source_text(e.value),
                                           offset))

    def _unguard_branches(self, bound: dict, since: int) -> None:
        """Drop the DataIndex records (since ``since``) of indices in a branch of
        ``where(cond, a, b)``: the condition may mask the very values that fall outside,
        ``where(g >= 0, theta[g], 0.0)`` with -1 for "no group", so binding must not
        refuse them (torch reads them from the end, and the mask drops what it read)."""
        spans = {n.span for k in ("a", "b") if k in bound for n in ast.walk(bound[k][0])}
        self.data_indices[since:] = [d for d in self.data_indices[since:]
                                     if d.span not in spans]

    def _open_plate_value(self, e: ast.Index) -> tuple | None:
        """(symbol, plates) of the value ``e`` indexes when it was drawn or computed in
        plates that are all still open and is laid out one element per plate element
        there; None otherwise."""
        if not isinstance(e.value, ast.Name) or not self.plate_stack:
            return None
        sym = self.symbols.get(e.value.id)
        plates = self.defined_in.get(e.value.id)
        if sym is None or not sym.plates or not plates \
                or any(p not in self.plate_stack for p in plates) \
                or not _laid_out(sym.ty.shape, plates):
            return None
        return sym, plates

    def _reads_outer_layout(self, e: ast.Index) -> bool:
        """Refuse (True) an index into the plate dims of a value of an outer plate that
        nested plates lay out with unit dims (``b: real[J, 2]`` drawn in plate J around
        plate K is [J, 1, 2] there, so ``b[:, 1]`` would index the unit dim)."""
        found = self._open_plate_value(e)
        if found is None:
            return False
        sym, plates = found
        if -plates[0].dim <= len(plates):
            return False
        name, p = e.value.id, plates[0]
        index = p.index or "j"
        rest = ", ".join(_source_text(i) for i in e.indices[1:]) if len(e.indices) > 1 else ""
        spelled = f"{name}[{index}{', ' + rest if rest else ''}]"
        where = f"plate {index}" if p.index else f"plate {index} in {p.name}"
        first = e.indices[0] if e.indices else None
        if isinstance(first, ast.Name) and first.id == index:
            # the plate's own element, then an index that is not a plain number (another
            # plate's index): not read through the layout yet
            note = (f"draw '{name}' before the plates and write {spelled} there; inside "
                    f"plate {index} only a number may follow the plate's index "
                    f"({name}[{index}, 1])")
        else:
            note = (f"write {spelled} under {where} (the plate's own element), or draw "
                    f"'{name}' before the plates and index it there")
        self.err(f"inside nested plates, '{name}' (drawn in plate {p.name}, around another "
                 f"plate) is laid out {sizes.show(sym.ty.shape)}, one row per element of "
                 f"plate {p.name} at its own dim: an index or slice over that dimension "
                 "would read the layout, not the declared value", e.span, [note])
        return True

    def _element_index(self, e: ast.Index, base: Ty) -> int | None:
        """The plate dims of ``w`` in ``w[0]``, ``w[-1]``, ``w[1:]`` when ``w`` is each
        element's own value (:meth:`_element_width`) and the indices fit its per-element
        dims: they index those, from the right of the plate dims (``w[..., 0]``), as Stan's
        local ``w[1]`` in the loop (it indexed the plate's dim: row 0 of the minibatch).
        0 when the rule does not apply (more indices than its own dims, as ``b[:, 1]``
        reads the declared ``b: real[J, 2]``); None after a located error: an index into
        one number per element."""
        width = self._element_width(e.value)
        if not width or base.shape is None or len(base.shape) < width:
            return 0
        own = len(base.shape) - width
        if len(e.indices) <= own:
            return width
        first = e.indices[0] if e.indices else None
        if own == 0 and not (isinstance(first, ast.Slice) and first.start is None
                             and first.stop is None):
            name = e.value.id
            self.err(f"inside plate {', '.join(self._plate_names())}, '{name}' is one "
                     f"number per element, so '{fmt.expr(e)}' has nothing to index (it "
                     "would read the plate's elements)", e.span,
                     [f"use '{name}' itself; to read another element, index the value it "
                      "came from before the plate"])
            return None
        return 0

    def _row_entry(self, e: ast.Index, item_tys: list) -> bool:
        """Whether ``e`` indexes the own dims of a value of an outer plate by an index
        with one value per element of the plates inside it (``w[k]`` of ``w = x2[t]`` in
        ``plate t`` under ``plate k in K``; w is ``[T, 1, K]``, each element's row)."""
        found = self._open_plate_value(e)
        if found is None or not e.indices or item_tys[0] is None or not item_tys[0].shape:
            return False
        sym, plates = found
        width = -plates[0].dim
        return width > len(plates) and len(sym.ty.shape) > width \
            and bool(self._plate_width(e.indices[0]))

    def _self_index(self, e: ast.Index, item_tys: list) -> tuple | None:
        """(plate indices to drop, plate dims to keep whole) when ``e`` indexes a value
        drawn or computed in the enclosing plates by those plates' own indices, outermost
        first (``a[j]`` of ``a`` drawn in ``plate j in J``, as Stan's loop writes it): the
        value is already one element per plate element, so ``a[j]`` is ``a`` (``j``,
        the plate's full-range indices, would index a minibatch's rows by the whole
        plate's positions). The indices after them must be numbers or slices."""
        found = self._open_plate_value(e)
        if found is None:
            return None
        sym, plates = found
        drop = len(plates)
        if len(e.indices) < drop:
            return None
        for p, item in zip(plates, e.indices, strict=False):
            isym = self.symbols.get(item.id) if isinstance(item, ast.Name) else None
            if isym is None or isym.role != "index" or p.index != item.id:
                return None
        if any(t is not None and t.shape != () for t in item_tys[drop:]):
            return None
        return drop, -plates[0].dim

    def _static_dim(self, expr, default):
        if expr is None:
            return default
        t = self.types.get(id(expr))
        if t is not None and t.dim is not None:
            return t.dim
        if isinstance(expr, ast.Number) and isinstance(expr.value, int):
            return sizes.const(expr.value)
        return None

    # ---- calls ----
    def _call(self, e: ast.Call) -> Ty:
        name = e.func_name
        if name is None and isinstance(e.func, ast.Attr):
            pyro = self._pyro_spelling(e)
            if pyro is not None:
                return pyro
        if name is None:
            self._expr(e.func)
            self.err("only named functions, distributions and networks can be called",
                     e.func.span)
            return UNKNOWN
        if self._calls_value(name):
            self.used.add(name)
            return self._apply_value(e, self.symbols[name])
        sig = signatures.lookup(name)
        if sig is not None:
            self.builtin_calls.add(id(e))
            return self._dist_call(e, sig)
        b = builtins.lookup(name)
        if b is not None:
            self.builtin_calls.add(id(e))
            return self._builtin_call(e, b)
        for a in e.args:
            self._expr(a)
        for kw in e.kwargs:
            self._expr(kw.value)
        if name in self.later:
            self._used_before(name, e.func.span)
            return UNKNOWN
        kind = "distribution" if name[:1].isupper() else "function"
        if name in _STAN_SPELLINGS:  # a near spelling could be a different function
            self.err(f"unknown {kind} '{name}'", e.func.span, [_STAN_SPELLINGS[name]])
            return UNKNOWN
        pool = list(signatures.table()) if name[:1].isupper() else builtins.names()
        other = builtins.names() if name[:1].isupper() else list(signatures.table())
        same = [c for c in other if c.lower() == name.lower()]
        # stricter than elsewhere: a short function name is near many others (inv ->
        # sin, maximum -> matmul would compile into another model)
        hint = same[0] if same else signatures.suggest(name, pool, cutoff=0.75)
        self.err(f"unknown {kind} '{name}'", e.func.span,
                 [f"did you mean '{hint}'?"] if hint else [])
        return UNKNOWN

    def _pyro_spelling(self, e: ast.Call) -> Ty | None:
        """Pyro's spellings of a distribution, one error each (they were two: no such
        attribute, then only named functions can be called): ``dist.Normal(0, 1)`` and
        ``Normal(mu, 1).to_event(1)`` / ``.expand([3])`` / ``.mask(m)``. None for
        another call of an attribute."""
        func = e.func
        if isinstance(func.value, ast.Name) and func.value.id == "dist" \
                and "dist" not in self.symbols and signatures.lookup(func.attr) is not None:
            for a in e.args:
                self._expr(a)
            for kw in e.kwargs:
                self._expr(kw.value)
            self.err(f"'dist.{func.attr}' is Pyro's spelling: BDL names distributions "
                     "without the 'dist.' prefix", func.span, [f"write {func.attr}(...)"])
            return UNKNOWN
        inner = func.value
        if not (isinstance(inner, ast.Call) and inner.func_name is not None
                and signatures.lookup(inner.func_name) is not None
                and func.attr in _PYRO_METHODS):
            return None
        ty = self._expr(inner)
        for a in e.args:
            self._expr(a)
        self.err(f"'.{func.attr}(...)' is Pyro's; BDL {_PYRO_METHODS[func.attr][0]}",
                 func.span, [_PYRO_METHODS[func.attr][1].format(
                     d=fmt.expr(inner), name=self._defining or "NAME",
                     m=fmt.expr(e.args[0]) if e.args else "mask")])
        # expanded, its shape is not the call's: unknown, so reads of it add no errors
        return UNKNOWN if func.attr.startswith("expand") else ty

    def _calls_value(self, name: str) -> bool:
        """Whether a call of ``name`` calls the model's value of that name: a network or
        function always, another value (a latent ``sd``, data ``exp``) only when no
        built-in function or distribution is so named. As in Stan, a model name does not
        shadow a built-in function: ``exp ~ Normal(0, 1)`` and ``s = exp(mu)`` are both
        fine, in either order."""
        sym = self.symbols.get(name)
        if sym is None:
            return False
        return sym.role in ("network", "function") \
            or (signatures.lookup(name) is None and builtins.lookup(name) is None)

    def _apply_value(self, e: ast.Call, sym: Symbol) -> Ty:
        args = [self._expr(a) for a in e.args]
        for kw in e.kwargs:
            self._expr(kw.value)
        if sym.role == "function":
            self.err(f"'{sym.name}' is a function: it can only be given as an argument that "
                     "takes a function, not called", e.func.span,
                     [f"such as {_function_args()}; it is defined at {sym.span}"])
            return UNKNOWN
        if sym.ty.kind == "unknown" and self.errors:
            return UNKNOWN  # its definition failed and said why (a construct's missing y_dim)
        if sym.role != "network":
            self.err(f"'{sym.name}' is {_a(sym.ty.kind)} value and cannot be called", e.func.span)
            return UNKNOWN
        b = self._construct_of(sym.ty)
        if b is not None and b.call_result is not None:
            if b.call_params:
                self._value_inputs(e, sym, b, args)
            kind = b.call_result
            return Ty(kind, None, event=None) if kind == "dist" else Ty(kind, None)
        if len(args) != 1 or e.kwargs:
            self.err(f"network '{sym.name}' takes one input", e.span)
            return UNKNOWN
        net = sym.ty.value or {}
        x = args[0]
        if x.shape is None or not net:
            return Ty("real", None)
        if net.get("builtin") == "cnn":
            if net.get("in_shape") is None:  # already reported at the cnn(...) call
                return Ty("real", None)
            return self._image_input(e, sym, x, net)
        if len(x.shape) == 0:
            self.err(f"network '{sym.name}' needs an input with a feature dimension", e.span)
            return UNKNOWN
        if net.get("in") is not None:
            rel = sizes.compare(x.shape[-1], net["in"])
            if rel == sizes.Relation.DIFFERENT:
                self.err(f"network '{sym.name}' takes {net['in']} input features but gets "
                         f"{sizes.show(x.shape)}", e.args[0].span)
            elif rel == sizes.Relation.UNKNOWN:
                self._defer(x.shape[-1], net["in"], e.args[0].span,
                            f"the input of network '{sym.name}'")
        if net.get("out") is None:
            return Ty("real", None)
        return Ty("real", tuple(x.shape[:-1]) + (net["out"],))

    def _value_inputs(self, e: ast.Call, sym: Symbol, b, args: list[Ty]) -> None:
        """``g(xc, yc, xt)`` for a value whose builtin declares its inputs
        (``Builtin.call_params``): all of them, by position; an input sized by one of the
        builtin's arguments (``Builtin.call_dims``: xc by x_dim) is [..., points, size]."""
        want = b.call_params
        form = f"{sym.name}({', '.join(want)})"
        if e.kwargs:
            self.err(f"'{sym.name}' takes its inputs by position: {form}", e.kwargs[0].span)
            return
        if len(args) != len(want):
            if len(args) < len(want):
                gone = ", ".join(f"'{p}'" for p in want[len(args):])
                self.err(f"'{sym.name}' ({b.name}) takes {len(want)} inputs, {form}, but gets "
                         f"{len(args)} ({gone} {'is' if len(want) - len(args) == 1 else 'are'} "
                         "missing)", e.span)
            else:
                self.err(f"'{sym.name}' ({b.name}) takes {len(want)} inputs, {form}, but gets "
                         f"{len(args)}", e.args[len(want)].span)
            return
        dims = (sym.ty.value or {}).get("dims", {})
        for node, x, name in zip(e.args, args, want, strict=True):
            arg = b.call_dims.get(name)
            if arg is None or x.shape is None:
                continue
            size = dims.get(arg)
            need = f"[points, {arg}] or [tasks, points, {arg}]" if size is None else \
                f"[points, {size}] or [tasks, points, {size}] ({arg}={size})"
            if len(x.shape) < 2:
                self.err(f"input '{name}' of '{sym.name}' must be {need}, got "
                         f"{sizes.show(x.shape)}", node.span,
                         [f"declare it with a feature dimension, such as real"
                          f"{sizes.show(tuple(x.shape) + (1 if size is None else size,))}"])
                continue
            if size is None:
                continue
            rel = sizes.compare(x.shape[-1], size)
            if rel == sizes.Relation.DIFFERENT:
                self.err(f"input '{name}' of '{sym.name}' must be {need}, got "
                         f"{sizes.show(x.shape)}", node.span)
            elif rel == sizes.Relation.UNKNOWN:
                self._defer(x.shape[-1], size, node.span,
                            f"the last dimension of '{name}' and {arg} of '{sym.name}'")

    def _image_input(self, e: ast.Call, sym: Symbol, x: Ty, net: dict) -> Ty:
        """``f(x)`` for a cnn: x is [..., C, H, W] with (C, H, W) its in_shape; the result
        is [..., out]."""
        want = net["in_shape"]
        if len(x.shape) < 3:
            self.err(f"network '{sym.name}' takes images [..., {sizes.show(want)[1:-1]}] but "
                     f"gets {sizes.show(x.shape)}", e.args[0].span,
                     ["a cnn's input is real[N, C, H, W] (channels, height, width)"])
            return UNKNOWN
        for got, need in zip(x.shape[-3:], want, strict=True):
            rel = sizes.compare(got, need)
            if rel == sizes.Relation.DIFFERENT:
                self.err(f"network '{sym.name}' takes images [..., {sizes.show(want)[1:-1]}] "
                         f"but gets {sizes.show(x.shape)}", e.args[0].span)
                return UNKNOWN
            if rel == sizes.Relation.UNKNOWN:
                self._defer(got, need, e.args[0].span, f"the input of network '{sym.name}'")
        if net.get("out") is None:
            return Ty("real", None)
        return Ty("real", tuple(x.shape[:-3]) + (net["out"],))

    def _bind_args(self, e: ast.Call, params: tuple[str, ...], fname: str, variadic=False,
                   b=None) -> dict[str, tuple[ast.Expr, Ty]] | None:
        bound: dict[str, tuple[ast.Expr, Ty]] = {}
        ok = True
        if len(e.args) > len(params) and not variadic:
            self.err(f"{fname} takes at most {len(params)} positional argument"
                     f"{'s' if len(params) != 1 else ''} ({', '.join(params)}), got "
                     f"{len(e.args)}", e.args[len(params)].span)
            ok = False
        for i, a in enumerate(e.args):
            key = params[i] if i < len(params) else f"#{i}"
            t = self._arg(a, key, b)
            bound[key] = (a, t)
        for kw in e.kwargs:
            t = self._arg(kw.value, kw.name, b)
            if kw.name not in params:
                hint = _ARG_SPELLINGS.get(kw.name) if _ARG_SPELLINGS.get(kw.name) in params \
                    else signatures.suggest(kw.name, params)
                notes = [f"did you mean '{hint}'?"] if hint else (
                    [f"{fname} takes: {', '.join(params)}"] if params else [])
                self.err(f"{fname} has no argument '{kw.name}'", kw.span, notes)
                ok = False
                continue
            if kw.name in bound:
                self.err(f"argument '{kw.name}' of {fname} given twice", kw.span)
                ok = False
                continue
            bound[kw.name] = (kw.value, t)
        return bound if ok else None

    def _arg(self, node: ast.Expr, key: str, b) -> Ty:
        """The type of one call argument; a builtin's function and choice arguments take
        forms that are not expressions elsewhere (a literal ``(x, t) => ...``, a word)."""
        if b is not None and b.name == "cat" and key == "xs" and isinstance(node, ast.ListLit):
            # joined end to end, not stacked: the items' lengths along dim may differ
            ty = Ty("list", None, value=[self._expr(x) for x in node.items])
            self.types[id(node)] = ty
            return ty
        if b is not None and b.kind == "network" and key in b.lists \
                and isinstance(node, ast.ListLit) and not node.items:
            # no hidden layers, mlp(D, [], 1): one affine layer (a list of no sizes)
            ty = Ty("list", None, value=[])
            self.types[id(node)] = ty
            return ty
        if b is not None and key in b.functions and (
                isinstance(node, ast.FunctionLit) or self._function_name(node) is not None):
            if isinstance(node, ast.Name):
                self.used.add(node.id)
            ty = Ty("function", None)  # its body is checked once every argument is bound
            self.types[id(node)] = ty
            return ty
        if b is not None and key in b.choices:
            choices = b.choices[key]
            word = node.id if isinstance(node, ast.Name) else (
                node.value if isinstance(node, ast.String) else None)
            if word in choices:
                ty = Ty("symbol", None, value=word)
                self.types[id(node)] = ty
                return ty
            self.err(f"argument '{key}' of {b.name} must be one of {', '.join(choices)}",
                     node.span, _did_you_mean(word, choices))
            return UNKNOWN
        masked = b is not None and b.name == "where" and key in ("a", "b")
        self._in_where += masked  # a shifted plate index here may be masked (_plate_index_shift)
        try:
            ty = self._expr(node)
        finally:
            self._in_where -= masked
        if b is not None and (key in b.integers or key in b.flags):
            self._check_literal_kind(node, key, b)
        if b is not None and key in b.ranges:
            if ty.kind not in TENSOR_KINDS + ("unknown",) or ty.kind == "bool":
                self.err(f"argument '{key}' of {b.name} must be a number, not "
                         f"{_a(ty.kind)} value", node.span, self._takers(ty.kind, b))
                return UNKNOWN
            self._check_range(node, key, b)
        return ty

    @staticmethod
    def _takers(kind: str, b) -> list[str]:
        """A note naming the builtins of ``b``'s family (same ``tilde``) that take a
        parameter called ``kind`` (a kernel given to gaussian_prior goes to gp_prior)."""
        if not b.tilde:
            return []
        takers = [n for n in builtins.names()
                  if builtins.lookup(n).tilde == b.tilde and kind in builtins.lookup(n).params]
        return [f"{' and '.join(takers)} take{'s' if len(takers) == 1 else ''} {_a(kind)}"] \
            if takers else []

    def _check_literal_kind(self, node: ast.Expr, key: str, b) -> None:
        """A literal for an argument that takes a whole number (``Builtin.integers``) or
        true/false (``Builtin.flags``) must be one; other expressions are checked by
        the construct at run time."""
        number = _literal_number(node)
        if key in b.integers and number is not None and number != int(number):
            self.err(f"argument '{key}' of {b.name} must be a whole number, got {number:g}",
                     node.span)
        if key in b.flags and (number is not None or isinstance(node, ast.String)):
            shown = f'"{node.value}"' if isinstance(node, ast.String) else f"{number:g}"
            self.err(f"argument '{key}' of {b.name} must be true or false, got {shown}",
                     node.span)

    def _check_range(self, node: ast.Expr, key: str, b) -> None:
        """A numeric literal for an argument with a declared range (``Builtin.ranges``)
        must lie in it; other expressions are checked by the construct at run time."""
        value = _literal_number(node)
        if value is None:
            return
        lo, lo_open, hi, hi_open, want = builtins.interval(b.ranges[key])
        if ((lo is None or value > lo or (value == lo and not lo_open))
                and (hi is None or value < hi or (value == hi and not hi_open))):
            return
        self.err(f"argument '{key}' of {b.name} must be {want}, got {value:g}", node.span)

    def _function_name(self, node: ast.Expr) -> Symbol | None:
        """The symbol of a named function literal (``b`` of ``b = (x, t) => ...``)."""
        if isinstance(node, ast.Name):
            sym = self.symbols.get(node.id)
            if sym is not None and sym.role == "function":
                return sym
        return None

    def _lit_body(self, e: ast.FunctionLit, shapes, kinds=None, rows=None) -> Ty:
        """The type of a literal's body with its parameters bound as local tensors (of
        ``shapes``, or of unknown shape; of ``kinds``, real where absent); they shadow
        model names only in the body. ``rows``: parameter position -> the call's argument
        whose rows it is given (``FunctionParam.rows``)."""
        saved = {}
        saved_rows = dict(self._param_rows)
        for i, p in enumerate(e.params):
            node = (rows or {}).get(i)
            if node is None:
                self._param_rows.pop(p, None)
            else:
                self._param_rows[p] = (node, {n.id: self.symbols.get(n.id)
                                              for n in ast.walk(node)
                                              if isinstance(n, ast.Name)})
        spans = e.param_spans if len(e.param_spans) == len(e.params) else [e.span] * len(
            e.params)
        for i, (p, span) in enumerate(zip(e.params, spans, strict=True)):
            saved[p] = (self.symbols.get(p), p in self.used)
            shape = shapes[i] if shapes is not None else None
            kind = kinds[i] if kinds is not None and kinds[i] is not None else "real"
            self.symbols[p] = Symbol(p, "local", Ty(kind, shape), span)
        self._fn_params.append(e.params)
        try:
            return self._expr(e.body)
        finally:
            self._fn_params.pop()
            self._param_rows = saved_rows
            for p, (sym, used) in saved.items():
                if sym is None:
                    del self.symbols[p]
                else:
                    self.symbols[p] = sym
                if not used:
                    self.used.discard(p)

    def _function_lit(self, e: ast.FunctionLit, spec, where: str, positional: list,
                      kwargs: dict, use: ast.Name | None = None, nodes=None) -> None:
        """Check ``(x, t) => body`` given for a function argument: its arity against the
        registered parameters, then the body with the parameters as local real tensors
        of the registered shapes (free names are the model's), and the body's shape.

        ``use``: the literal was named (``b = (x, t) => ...``) and is given here as
        ``drift=b``; the arity error is then located at the use, and a shape error in the
        body (located in the definition) says where the function was used. The body's
        other errors were reported at its definition and are not repeated. ``nodes``: the
        call's arguments by name (the ones ``spec.rows`` names)."""
        want = len(spec.params)
        if len(e.params) != want:
            have = f"'{use.id}' has" if use is not None else "this one has"
            self.err(f"{where} takes a function of {want} parameter{'s' if want != 1 else ''}"
                     f" ({', '.join(spec.params)}), but {have} {len(e.params)}",
                     e.span if use is None else use.span,
                     [] if use is None else [f"'{use.id}' is defined at "
                                             f"{self.symbols[use.id].span}"])
            return
        known = all(t.kind != "unknown" for t in kwargs.values())
        shapes = spec.shapes(positional, kwargs) if spec.shapes and known else None
        kinds = spec.kinds(positional, kwargs) if spec.kinds and known else None
        first = len(self.errors)
        rows = {i: nodes[k] for i, k in spec.rows.items() if k in (nodes or {})}
        ty = self._lit_body(e, shapes, kinds, rows)
        if ty.kind not in TENSOR_KINDS + ("unknown",):
            if use is None:
                self.err(f"the body of {where} must be numeric, not {_a(ty.kind)} value",
                         e.body.span)
            else:
                del self.errors[first:]  # reported at the definition
            return
        out = spec.result(positional, kwargs) if spec.result and known else None
        if out is not None and ty.shape is not None:
            self._lit_shape(e, ty, out, where, use)
        if use is not None:
            seen = {(d.message, d.span) for d in self.errors[:first]}
            new = [d for d in self.errors[first:] if (d.message, d.span) not in seen]
            for d in new:
                d.notes.append(f"in function '{use.id}', given as {where} at {use.span}")
            self.errors[first:] = new

    def _lit_shape(self, e: ast.FunctionLit, ty: Ty, out, where: str,
                   use: ast.Name | None = None) -> None:
        """The body's shape against the registered result shape (a size check deferred to
        data binding says, for a named function, which use it came from)."""
        full, issues = sizes.broadcast(ty.shape, out)
        # the body may have fewer dimensions, or size 1 where the result has more, but
        # broadcasting must not grow the result: [2, 1] or [T] does not fit [1]
        if full is not None and (len(full) > len(out) or any(
                sizes.compare(have, need) == sizes.Relation.DIFFERENT
                for have, need in zip(full, out, strict=True))):
            self.err(f"{where} must give a value of shape {sizes.show(out)}, but this body "
                     f"has shape {sizes.show(ty.shape)}", e.body.span)
            return
        what = f"the body of {where} {sizes.show(ty.shape)} and its result {sizes.show(out)}"
        self._report(issues, e.body.span, what)
        if use is not None:  # the deferred check is located at the body: name the use too
            what = (f"the body of {where} {sizes.show(ty.shape)} (function '{use.id}', "
                    f"given at {use.span}) and its result {sizes.show(out)}")
        for have, need in zip(full or (), out, strict=False):
            if sizes.compare(have, need) == sizes.Relation.UNKNOWN:
                self._defer(have, need, e.body.span, what)

    def _dist_call(self, e: ast.Call, sig) -> Ty:
        positional = sig.params[: len(sig.params) - len(sig.keyword_only)]
        if sig.keyword_only and len(positional) < len(e.args) <= len(sig.params):
            # Pyro takes them by name only: passed by position, a raw TypeError at run time
            n = len(positional)
            self.err(f"{sig.name} takes at most {n} positional argument{'s' if n != 1 else ''}"
                     f" ({', '.join(positional)}), got {len(e.args)}", e.args[n].span,
                     [f"give {', '.join(sig.keyword_only)} by name: "
                      f"{sig.name}({', '.join(positional)}, {sig.keyword_only[0]}=...)"])
            return UNKNOWN
        outer, self._in_builtin = self._in_builtin, 0  # its arguments are a site's
        try:
            bound = self._bind_args(e, sig.params, sig.name)
        finally:
            self._in_builtin = outer
        if bound is None:
            return UNKNOWN
        ok = True
        grouped = {p for g in sig.one_of for p in g}
        missing = [p for p in sig.required if p not in bound and p not in grouped]
        if missing:
            self.err(f"{sig.name} needs argument{'s' if len(missing) > 1 else ''} "
                     f"{', '.join(missing)}", e.span,
                     [f"{sig.name}({', '.join(sig.params)})"])
            ok = False
        for group in sig.one_of:
            given = [p for p in group if p in bound]
            if len(given) != 1:
                got = "neither" if not given else " and ".join(given)
                if len(group) > 2 and not given:
                    got = "none"
                self.err(f"{sig.name} needs exactly one of {', '.join(group)}; got {got}",
                         e.span)
                ok = False
        for pname, (node, t) in bound.items():
            wants_dist = pname in _DIST_PARAMS or pname.endswith(("_dist", "distribution"))
            if wants_dist and t.kind not in ("dist", "unknown"):
                self.err(f"argument '{pname}' of {sig.name} must be a distribution", node.span)
                ok = False
            elif not wants_dist and t.kind in ("dist", "kernel", "network", "function"):
                self.err(f"argument '{pname}' of {sig.name} must be numeric, not a {t.kind} "
                         "value", node.span)
                ok = False
            elif pname in signatures.STRING_PARAMS.get(sig.name, {}):
                words = signatures.STRING_PARAMS[sig.name][pname]
                if not isinstance(node, ast.String) or node.value not in words:
                    said = f'"{node.value}"' if isinstance(node, ast.String) else \
                        f"{_a(t.kind)} value"
                    shown = ", ".join(f'"{w}"' for w in words)
                    self.err(f"'{pname}' of {sig.name} must be one of {shown}, written as a "
                             f"string; got {said}", node.span)
                    ok = False
            elif not wants_dist and t.kind == "string":
                self.err(f"'{pname}' of {sig.name} must be a number, not a string", node.span)
                ok = False
            elif not wants_dist and not self._literal_in_support(sig, pname, node):
                ok = False
        if not ok or not self._param_ranks(sig, bound) or not self._literal_args(sig, bound) \
                or not self._cholesky_as_covariance(sig, bound) \
                or not self._event_sizes(sig, bound):
            return UNKNOWN
        self._unconstrained_args(sig, bound)
        self._dist_bound[id(e)] = (sig, bound)
        if sig.name == "Truncated":
            return self._truncated(e, bound)
        held = None
        if self.plate_stack and e is self._site_dist:
            held = self._held_issues.setdefault(id(e), [])
        return Ty("dist", _dist_shape(sig, bound, self, held), event=_event_rank(sig, bound),
                  dist=sig.name, discrete=sig.discrete, enumerable=sig.enumerable)

    def _truncated(self, e: ast.Call, bound: dict) -> Ty:
        """``Truncated(D, low=, high=)``: at least one bound, and a univariate D whose
        normaliser the runtime can compute (a cdf, or a pmf from 0). Its type is D's,
        broadcast with the bounds'; its support is the interval (ppl/runtime/truncated.py)."""
        node, base = bound["base_dist"]
        if "low" not in bound and "high" not in bound:
            self.err("Truncated needs a bound: low=, high= or both", e.span,
                     ["Stan's normal(mu, s) T[0, ] is Truncated(Normal(mu, s), low=0)"])
            return UNKNOWN
        if base.kind != "dist" or base.dist is None:
            return UNKNOWN
        listed = ["continuous: " + ", ".join(sorted(signatures.TRUNCATE_CDF)),
                  "discrete: " + ", ".join(sorted(signatures.TRUNCATE_PMF))]
        if base.dist == "Truncated":
            self.err("Truncated takes the distribution to truncate, not another Truncated",
                     node.span, ["give both bounds to one: Truncated(D, low=L, high=H)"])
            return UNKNOWN
        if base.dist == "MixtureSameFamily":
            self.err("Truncated does not take a mixture: it renormalises by the cdf (or the "
                     "pmf from 0) of one of the distributions it lists", node.span,
                     listed + ["write the truncated mixture's density with factor(...)"])
            return UNKNOWN
        if base.event != 0:
            self.err(f"Truncated needs a univariate distribution; {base.dist} draws "
                     "vectors or matrices", node.span)
            return UNKNOWN
        if base.dist not in signatures.TRUNCATE_CDF | signatures.TRUNCATE_PMF:
            self.err(f"Truncated needs the cdf of its distribution, and Pyro gives "
                     f"{base.dist} none", node.span, listed)
            return UNKNOWN
        out = base.shape
        for k in ("low", "high"):
            if k in bound and bound[k][1].kind in TENSOR_KINDS and out is not None:
                out, issues = sizes.broadcast(out, bound[k][1].shape)
                self._report(issues, bound[k][0].span, "the arguments of Truncated")
        return Ty("dist", out, event=0, dist="Truncated", discrete=base.discrete)

    def _truncated_latent(self, s: ast.Sample) -> None:
        """A truncated latent is drawn by its base's inverse CDF (reparameterised, exact
        in the tails); a base without one can be truncated where it is observed only."""
        found = self._dist_bound.get(id(s.dist))
        base = found[1]["base_dist"][1].dist if found and "base_dist" in found[1] else None
        batched = [p for p in self.plate_stack if p.subsample]
        for k in ("low", "high") if found and batched else ():
            if k in found[1] and self._plate_width(found[1][k][0]) != 0:
                # as a declared bound (_vector_bound): the autoguide's transform keeps the
                # support of the first minibatch it sees
                self.err(f"bound {k} of '{s.name}' varies along plate {batched[0].name}, "
                         "which is subsampled (batch): a bound per element needs the whole "
                         "plate", found[1][k][0].span,
                         [f"drop `batch` from plate {batched[0].name}, or use one bound for "
                          "every element"])
        if base is not None and base not in signatures.TRUNCATE_ICDF:
            self.err(f"'{s.name}' is a latent, and a truncated {base} cannot be drawn: "
                     f"Pyro gives {base} no inverse CDF", s.dist.span,
                     [f"truncate {base} only where it is observed (data), or draw the latent "
                      "from a base with one: " + ", ".join(sorted(signatures.TRUNCATE_ICDF))])
        if found and s.type is not None:
            self._truncated_meets_declared(s, found[1])

    def _truncated_meets_declared(self, s: ast.Sample, bound: dict) -> None:
        """Literal declared bounds and truncation bounds that leave no value between them
        (``x: real<lower=1> ~ Truncated(Normal(0, 1), high=0)``); bounds from the data are
        checked when the statement runs (rt.Restricted)."""
        declared = {b.name: _literal(b.value) for b in s.type.bounds}
        for mine, k, above in (("lower", "high", True), ("upper", "low", False)):
            d, t = declared.get(mine), _literal(bound[k][0]) if k in bound else None
            if d is None or t is None or (t > d if above else t < d):
                continue
            nums = f"> {d:g} and <= {t:g}" if above else f"< {d:g} and >= {t:g}"
            self.err(f"the declared bound {mine}={d:g} of '{s.name}' and Truncated's "
                     f"{k}={t:g} leave it no value: no number is {nums}", bound[k][0].span,
                     [f"Truncated's interval is the support of '{s.name}' already: drop the "
                      "declared bound, or give bounds that overlap"])

    def _literal_in_support(self, sig, pname: str, node: ast.Expr) -> bool:
        """A number written as a parameter must lie in the parameter's set (a rate > 0, a
        probability in [0, 1]): ``Gamma(a, -1)`` is an error here, not at the fit."""
        value = _literal_number(node)
        bounds = _constraint_bounds(dict(sig.arg_constraints).get(pname))
        if value is None or bounds is None:
            return True
        lo, lo_open, hi, hi_open = bounds
        if infer_methods.in_range(value, lo, hi, lo_open, hi_open):
            return True
        want = (f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
                if lo is not None and hi is not None else
                f"{'>' if lo_open else '>='} {lo:g}" if lo is not None else
                f"{'<' if hi_open else '<='} {hi:g}")
        self.err(f"{pname} of {sig.name} must be {want}, got {value:g}", node.span)
        return False

    def _param_ranks(self, sig, bound: dict) -> bool:
        """A parameter that is a vector or a matrix per draw (a multivariate
        distribution's loc, covariance_matrix, a simplex of probs) given with fewer
        dimensions: Pyro does not broadcast a number there (``MultivariateNormal(0, 1)``
        stopped the fit with AttributeError 'int' object has no attribute 'dim'). False
        when reported."""
        needs = dict(sig.arg_constraints)
        ok = True
        for pname, (node, t) in bound.items():
            rank = signatures.PARAM_RANKS.get(sig.name, {}).get(pname)
            if rank is None:
                rank = _param_rank(needs.get(pname))
            if not rank or t.kind not in TENSOR_KINDS or t.shape is None:
                continue
            width = self._plate_width(node)
            if width is None or len(t.shape) - width >= rank:
                continue
            own = t.shape[width:]
            have = "a number" if not own else f"a vector {sizes.show(own)}"
            want = "a vector" if rank == 1 else "a matrix"
            example = ("eye(K)" if rank == 2 else
                       "ones(K) / K" if needs.get(pname) == "Simplex()" else
                       "ones(K)" if "GreaterThan" in (needs.get(pname) or "") else "zeros(K)")
            per = "a vector (one value per element)" if rank == 1 else "a K x K matrix"
            self.err(f"'{pname}' of {sig.name} must be {want}, not {have}", node.span,
                     [f"{sig.name}'s {pname} is {per} for each draw, and "
                      f"{'a number' if not own else 'a vector'} is not broadcast to one: "
                      f"{pname}={example}" + (" for K elements" if rank == 1 else "")])
            ok = False
        return ok

    def _event_sizes(self, sig, bound: dict) -> bool:
        """Parameters whose sizes count the same thing (a MultivariateNormal's loc D and
        its D x D matrix, a mixture's K components: ``signatures.EVENT_SIZES``) given
        sizes that are provably different (``zeros(3)`` with ``eye(2)``). False when
        reported; sizes that only the data fix are checked when the model runs."""
        node, t = bound.get("edge_logits", (None, None)) if sig.name == "SpanningTree" \
            else (None, None)
        if t is not None and t.kind in TENSOR_KINDS and t.shape and t.shape[-1].is_Integer \
                and _tree_nodes(t.shape[-1]) is None:
            # as rt.SpanningTree says it of a count from the data
            self.err(f"SpanningTree's edge_logits has {t.shape[-1]} elements: it needs one "
                     "per pair of nodes, V (V - 1) / 2 for V nodes (1, 3, 6, 10, ...)",
                     node.span)
            return False
        multiple = signatures.EVENT_MULTIPLES.get(sig.name)
        node, t = bound.get(multiple[0], (None, None)) if multiple else (None, None)
        if t is not None and t.kind in TENSOR_KINDS and t.shape is not None \
                and len(t.shape) >= 2 and sizes.compare(
                    t.shape[multiple[1]], t.shape[multiple[2]] * multiple[3]) \
                == sizes.Relation.DIFFERENT:
            # as rt.OneTwoMatching says it of sizes from the data
            self.err(f"{sig.name}: '{multiple[0]}' is {sizes.show(t.shape)}, not "
                     f"{multiple[4]}", node.span)
            return False
        for what, dims in signatures.EVENT_SIZES.get(sig.name, {}).items():
            seen = []
            for pname, at in dims:
                node, t = bound.get(pname, (None, None))
                if t is None or t.kind not in TENSOR_KINDS or t.shape is None \
                        or len(t.shape) < -at:
                    continue
                d = t.shape[at]
                for other, o_shape, o_d in seen:
                    if sizes.compare(d, o_d) == sizes.Relation.DIFFERENT and other == pname:
                        # one argument's rows and columns (a matching's N x N logits)
                        self.err(f"{sig.name}: '{pname}' is {sizes.show(t.shape)}, not "
                                 f"square: {what} counts both its rows and its columns",
                                 node.span)
                        return False
                    if sizes.compare(d, o_d) == sizes.Relation.DIFFERENT:
                        self.err(f"{sig.name}: '{pname}' {sizes.show(t.shape)} and '{other}' "
                                 f"{sizes.show(o_shape)} disagree on {what}: {d} and {o_d} "
                                 "must be equal", node.span)
                        return False
                seen.append((pname, t.shape, d))
        return True

    def _literal_args(self, sig, bound: dict) -> bool:
        """Literal arguments that no value of the others can make valid, as
        ``Normal(0, 0)`` is: ``Uniform(2.5, 1)`` (an empty interval) and an LKJ ``dim``
        that is not a whole number of at least 2 (``LKJCholesky(0, 2.5)``), which Pyro
        refuses only when the fit starts. False when reported."""
        low, high = (_literal_number(bound[k][0]) if k in bound else None
                     for k in ("low", "high"))
        # a count cut to one point keeps it (Stan's T[L, U] with L == U of an integer)
        point = sig.name == "Truncated" and bound["base_dist"][1].discrete
        if sig.name in ("Uniform", "Truncated") and low is not None and high is not None \
                and (low > high or low == high and not point):
            note = ("Truncated(D, low=L, high=H) keeps the values of D from L to H"
                    if sig.name == "Truncated" else "Uniform(low, high) draws from low to high")
            self.err(f"high of {sig.name} must be {'>=' if point else '>'} low ({low:g}), "
                     f"got {high:g}", bound["high"][0].span, [note])
            return False
        dim = _literal_number(bound["dim"][0]) if sig.name in ("LKJ", "LKJCholesky") \
            and "dim" in bound else None
        if isinstance(dim, float) and dim.is_integer() and dim >= 2:
            # 2.0 is a real: Pyro's LKJ takes an int dim (was "got 2")
            self.err(f"dim of {sig.name} must be a whole number written as an int, got "
                     f"{dim!r}", bound["dim"][0].span, [f"write {int(dim)}"])
            return False
        if dim is not None and (not isinstance(dim, int) or dim < 2):
            self.err(f"dim of {sig.name} must be a whole number >= 2 (the matrices are "
                     f"dim x dim), got {dim!r}", bound["dim"][0].span)
            return False
        return True

    def _cholesky_as_covariance(self, sig, bound: dict) -> bool:
        """A latent drawn from a Cholesky-factor prior (LKJCholesky) given as a covariance
        or precision matrix: the fit would read L as Sigma. False when reported."""
        for pname, (node, _) in bound.items():
            if pname not in ("covariance_matrix", "precision_matrix") \
                    or not isinstance(node, ast.Name):
                continue
            sym = self.symbols.get(node.id)
            if sym is None or not isinstance(sym.node, ast.Sample):
                continue
            prior = self.types.get(id(sym.node.dist))
            psig = signatures.lookup(prior.dist) if prior is not None and prior.dist else None
            if psig is None or psig.support not in _CHOLESKY_SUPPORTS:
                continue
            self.err(f"'{node.id}' is a Cholesky factor (its prior is {psig.name}), not a "
                     f"{pname.replace('_', ' ')}", node.span,
                     [f"did you mean scale_tril={node.id}?"])
            return False
        return True

    def _unconstrained_args(self, sig, bound: dict) -> None:
        """A latent that can be any real number, given as a parameter that must lie in a
        set (a scale, a rate, a probability): the sampler will propose values outside it,
        and the fit fails at the first one. Stan's pedantic mode warns about this; here
        it is an error, since a bare name has no way to be mapped into the set."""
        constraints = dict(sig.arg_constraints)
        for pname, (node, _) in bound.items():
            need = constraints.get(pname)
            if need not in _CONSTRAINT_WORDS or not isinstance(node, ast.Name):
                continue
            sym = self.symbols.get(node.id)
            if sym is None or sym.role != "latent" or not isinstance(sym.node, ast.Sample):
                continue
            declared = sym.node.type
            if declared is not None and declared.base != "real":
                continue  # simplex[K], ordered[K]...: a constrained type of its own
            if declared is not None and any(b.name not in ("lower", "upper")
                                            for b in declared.bounds):
                continue  # a misspelt bound (lowr) is its own error, with a did-you-mean
            words = _CONSTRAINT_WORDS[need]
            bounds = {b.name: _literal(b.value) for b in declared.bounds} \
                if declared is not None else {}
            if any(v is None for v in bounds.values()) or (bounds and words not in (
                    "positive", "non-negative", "in [0, 1]")):
                continue  # a bound given by a name, or a set the bounds cannot imply
            low, high = bounds.get("lower"), bounds.get("upper")
            if low is not None and low >= 0 and (words != "in [0, 1]" or (
                    high is not None and high <= 1)):
                continue
            prior = self.types.get(id(sym.node.dist))
            psig = signatures.lookup(prior.dist) if prior is not None and prior.dist else None
            if psig is None or psig.support not in ("Real()", "IndependentConstraint(Real(), 1)"):
                continue
            dims = sizes.show(sym.ty.shape) if sym.ty.shape else ""
            what = (f"can be any real number (its prior is {psig.name}), but" if not bounds
                    else f"has bounds that do not keep it {words} (its prior is "
                         f"{psig.name}), and")
            self.err(f"'{node.id}' {what} {sig.name}'s {pname} must be {words}", node.span,
                     [f"give '{node.id}' a prior on that set, or declare it bounded: "
                      f"{node.id}: real<lower=0>{dims} ~ {psig.name}(...)"
                      if words in ("positive", "non-negative") else
                      f"give '{node.id}' a prior on that set, or map it there "
                      "(exp, sigmoid, softmax)"])

    def _builtin_call(self, e: ast.Call, b) -> Ty:
        own = self.plate_stack and (b.name not in _POINTWISE or
                                    self._indexed_call == id(e)) and any(
            isinstance(n, ast.Name) and n.id in self.global_labels
            and getattr(self.symbols.get(n.id), "ty", UNKNOWN).shape
            for n in ast.walk(e))
        self._in_builtin += bool(own)  # its arguments read whole keep their own dims (_name)
        recorded = len(self.data_indices)
        try:
            bound = self._bind_args(e, b.params, b.name, b.variadic, b)
        finally:
            self._in_builtin -= bool(own)
        if bound is None:
            return UNKNOWN
        if b.name in ("max", "min") and len(e.args) > 1:
            self._two_value_extreme(e, b.name)
            return UNKNOWN
        x = bound.get("x")
        if b.name == "transpose" and x is not None and x[1].shape is not None \
                and len(x[1].shape) < 2 and not self.plate_stack:
            shown = sizes.show(x[1].shape)
            self.err(f"transpose needs a matrix (two dimensions or more), not "
                     f"{'a number' if not x[1].shape else 'a vector ' + shown}", x[0].span,
                     ["a vector is neither a row nor a column here: v @ A and A @ v read "
                      "it as either, and a @ b of two vectors is their dot product"]
                     if x[1].shape else None)
            return UNKNOWN
        if b.name == "matmul" and "a" in bound and "b" in bound and (
                self.plate_stack or not self._reads_label(e)):
            (left, a), (right, b_ty) = bound["a"], bound["b"]
            if a.shape == () or b_ty.shape == ():
                self.err("matmul needs tensors with at least one dimension; use '*' for "
                         "scalars", e.span)
                return UNKNOWN
            if not self._real_matmul("matmul", ((left, a), (right, b_ty))):
                return UNKNOWN
            per = self._element_matmul(e, left, right, a, b_ty) if self.plate_stack else None
            if per is not None:  # matmul(M, w), as M @ w
                return per
            if a.shape is not None and b_ty.shape is not None and a.shape and b_ty.shape:
                # its shape as a @ b's, so that sum(matmul(w, M)) is one sum per element
                shape, issues = sizes.matmul(a.shape, b_ty.shape)
                self._report(issues, e.span, f"the arguments of matmul {sizes.show(a.shape)} "
                             f"and {sizes.show(b_ty.shape)}")
                return Ty("real", shape)
        matrix = _MATRIX_ARGS.get(b.name)
        if matrix in bound and self.plate_stack and bound[matrix][1].shape is not None:
            node, t = bound[matrix]
            width = self._element_width(node) if isinstance(node, ast.Name) \
                else self._plate_width(node)
            if width and len(t.shape) - width < 2:
                # each element's value is a vector (or a number): laid out [T, K], it would
                # be read as one matrix of the plate's rows (a silent wrong value at T = K)
                self.err(f"inside plate {', '.join(self._plate_names())}, "
                         f"{_quote(node)} is one {'vector' if len(t.shape) > width else 'number'}"
                         f" per element, and {b.name} needs a matrix (two dimensions of its "
                         "own)", node.span,
                         ["a vector is neither a row nor a column here: v @ A and A @ v read "
                          "it as either"] if b.name == "transpose" else None)
                return UNKNOWN
        if b.name in _ROWS_FIRST and self.plate_stack and any(
                self._plate_width(node) for _, (node, _t) in bound.items()):
            # their shape rules read the arguments' own dims; a per-element argument is laid
            # out with the plate's dims first, so the value (and an index into it) would
            # be read at the wrong dims (outer(v[i], w[i])[2, 1] read the plate's)
            self.err(f"inside plate {', '.join(self._plate_names())}, {b.name} of values that "
                     "vary along the plate is not supported", e.span,
                     [f"compute {b.name} before the plate, or write the elements out "
                      "(outer(v[i], w[i])[2, 1] is v[i][2] * w[i][1])"])
            return UNKNOWN
        if b.name == "where":
            self._unguard_branches(bound, recorded)
        self._label_in_call(e, b.name, list(bound.values()))
        if self.plate_stack and b.name in _ELEMENTWISE:
            bound = self._elementwise_pads(bound, e)
            if bound is None:
                return UNKNOWN
        if not self.plate_stack and b.name in _ELEMENTWISE:
            # a label's value meets vectors elementwise: widened as in arithmetic
            rank = max((len(t.shape) for _, t in bound.values() if t.shape is not None),
                       default=0)
            bound = {k: (node, self._label_pad(node, t, rank)) for k, (node, t) in
                     bound.items()}
        self._label_dim(bound)
        positional = [t for k, (_, t) in bound.items() if k.startswith("#") or
                      k in b.params[: len(e.args)]]
        if b.functions and b.kind == "function" and self.plate_stack:
            # scan's steps run along xs's first dim, which in a plate is the plate's dim
            self.err(f"{b.name} is not allowed inside a plate", e.func.span,
                     [f"compute it before the plate, one column per element: "
                      f"{b.name}(f, zeros(N), transpose(x)) is [T + 1, N]"])
            return UNKNOWN
        if b.functions and b.kind == "function":
            for k, (node, _t) in bound.items():
                label = None if k in b.functions else self._label_read(node)
                if label is not None:
                    # summed out, its values lie on dims left of the value's own: the
                    # runtime takes init's dims for the carry's own and runs along xs's
                    # first, so the enumerated values would be read as steps or as carry
                    whose = (f"which {b.name} would run along instead of {k}'s first"
                             if k in b.sequences else
                             f"which {b.name} would take for a dim of the carry")
                    self.err(f"'{k}' of {b.name} reads '{label}', a discrete latent summed "
                             f"out in the fit: its values lie on a dim left of {k}'s own, "
                             f"{whose}", node.span,
                             [f"read '{label}' in the body of f only (scan((c, x) => ... "
                              f"{label} ..., init, xs)), with {k} from data and continuous "
                              "latents"])
                    return UNKNOWN
        for k in b.sequences:
            if k in bound and bound[k][1].shape == () and bound[k][1].kind in TENSOR_KINDS:
                self.err(f"{b.name} runs over the first dimension of '{k}', but '{k}' is a "
                         "single number", bound[k][0].span,
                         [f"give a sequence [T, ...]: y of y: real[T], or "
                          f"[{fmt.expr(bound[k][0])}] for one step"])
                return UNKNOWN
        for k, spec in b.functions.items():
            if k not in bound:
                continue
            node, t = bound[k]
            named = self._function_name(node)
            types = {j: t for j, (_, t) in bound.items()}
            nodes = {j: n for j, (n, _) in bound.items()}
            if isinstance(node, ast.FunctionLit):
                self._function_lit(node, spec, f"'{k}' of {b.name}", positional, types,
                                   nodes=nodes)
            elif named is not None:  # `b = (x, t) => ...`, then `drift=b`
                self._function_lit(named.node.value, spec, f"'{k}' of {b.name}", positional,
                                   types, use=node, nodes=nodes)
            elif t.kind == "function" and isinstance(node, ast.Name):  # `drift=tanh`
                first = spec.params[0] if spec.params else ""
                self.err(f"'{k}' of {b.name} takes a function literal, not the name of a "
                         "built-in function", node.span,
                         [f"write ({', '.join(spec.params)}) => {node.id}({first})"])
        missing = [k for k in b.params[: b.required] if k not in bound]
        if missing and not b.variadic:
            # each required parameter by name: one keyword given must not stand in for another
            self.err(f"{b.name} needs argument{'s' if len(missing) > 1 else ''} "
                     f"{', '.join(missing)}", e.span,
                     [f"{b.name}({', '.join(b.params[: b.required])}, ...) takes "
                      f"{'them' if b.required > 1 else 'it'} first or by name"])
            return UNKNOWN
        if b.kind == "kernel":
            for k, (node, t) in bound.items():
                if t.kind not in TENSOR_KINDS + ("unknown",):
                    self.err(f"kernel argument '{k}' must be numeric", node.span)
            return Ty("kernel", None)
        if b.tilde and id(e) not in self._tilde_ok:
            self.err(f"{b.name} is used on the right of '~': NAME ~ {b.name}(...)", e.func.span)
            return UNKNOWN
        if b.kind == "network":
            return self._network_ty(e, b, bound)
        if b.kind == "construct":
            return self._construct_ty(e, b, bound, positional)
        if b.name in ("stack", "cat"):
            xs = bound.get("xs")
            self._label_join(e, bound)
            if xs is not None and not isinstance(xs[0], ast.ListLit):
                self.err(f"{b.name} takes a list: {b.name}([a, b])", xs[0].span)
            items = [self.types.get(id(i), UNKNOWN) for i in getattr(xs[0], "items", [])] \
                if xs is not None else []
            bad = next(((i, t) for i, t in zip(getattr(xs[0], "items", []), items, strict=True)
                        if t.kind not in TENSOR_KINDS + ("unknown",)), None) \
                if xs is not None else None
            if bad is not None:  # was torch's TypeError when the model ran (not MLP)
                self.err(f"{b.name} joins numbers and tensors, not {_a(bad[1].kind)} value",
                         bad[0].span, ["a network's output is a tensor: f(x)"]
                         if bad[1].kind == "network" else None)
                return UNKNOWN
            kind = "int" if items and all(t.kind == "int" for t in items) else "real"
            kwargs = {k: t for k, (_, t) in bound.items()}
            width = self._elementwise_join(e, b, xs, bound.get("dim")) \
                if xs is not None and self.plate_stack else 0
            if width is None or not self._join_ranks(b, bound):
                return UNKNOWN
            if not width:
                self._join_sizes(e, b, bound)
            if width and b.name == "cat" and "dim" not in bound:
                kwargs["dim"] = Ty("int", (), value=width)  # each element's own first dim
            if width and b.name == "cat":
                # cat([w, v]) of a global v: the same v joins every element's w (rt.cat
                # broadcasts the items' plate dims), so its type has the plates' dims too
                joined = self._cat_items(xs)
                positional = [joined if t is xs[1] else t for t in positional]
                kwargs["xs"] = joined
                self._element_join_sizes(e, joined, kwargs["dim"].value)
            shape = b.shape(positional, kwargs) if b.shape is not None else None
            if b.name == "stack" and xs is not None and xs[1].shape is not None:
                # the list's items with its length inserted at dim (a list is at dim 0,
                # or right of the plate dims when stacked per plate element)
                d, la = bound.get("dim"), self.list_at.get(id(xs[0]), 0)
                own = tuple(xs[1].shape[:la]) + tuple(xs[1].shape[la + 1:])
                at = la if d is None else d[1].value
                if isinstance(at, int) and -len(own) - 1 <= at <= len(own):
                    at %= len(own) + 1
                    shape = own[:at] + tuple(xs[1].shape[la:la + 1]) + own[at:]
            return Ty(kind, shape)
        if b.name == "gram":
            k = bound.get("kernel")
            if k is not None and k[1].kind not in ("kernel", "unknown"):
                self.err("the first argument of gram must be a kernel", k[0].span)
                return UNKNOWN
        else:
            for k, (node, t) in bound.items():
                if k == "dist" and b.name in ("log_prob", "log_cdf", "log_ccdf"):
                    if t.kind not in ("dist", "unknown"):
                        self.err(f"the first argument of {b.name} must be a distribution, "
                                 f"not {_a(t.kind)} value", node.span,
                                 [f"{b.name}(Normal(mu, sigma), y)"])
                        return UNKNOWN
                    continue
                if k in b.functions and b.kind == "function":  # scan's f, checked above
                    if t.kind not in ("function", "unknown"):  # a function's only form
                        params = ", ".join(b.functions[k].params)
                        self.err(f"'{k}' of {b.name} takes a function literal, not "
                                 f"{_a(t.kind)} value", node.span,
                                 [f"write ({params}) => ..."])
                        return UNKNOWN
                    continue
                if t.kind not in TENSOR_KINDS + ("unknown",):
                    which = f"{int(k[1:]) + 1}" if k.startswith("#") else f"'{k}'"
                    self.err(f"argument {which} of {b.name} must be numeric, not "
                             f"{_a(t.kind)} value", node.span)
                    return UNKNOWN
        shift = self._own_dim(b, bound)
        if not self._dim_in_range(b, bound) or not self._outer_vectors(b, bound) \
                or not self._scale_fits(e, b, bound):
            return UNKNOWN
        if shift:  # sum(w, dim=0) of each element's w: the result keeps the plate dims
            moved = replace(bound["dim"][1], value=bound["dim"][1].value + shift)
            positional = [moved if t is bound["dim"][1] else t for t in positional]
            bound = {**bound, "dim": (bound["dim"][0], moved)}
        if "dim" in b.params and not self._dim_on_plate(e, b, bound):
            return UNKNOWN
        if "dim" in b.params and not self._reduces_inner_plate(e, b, bound):
            return UNKNOWN
        if "dim" in b.params:
            bound, positional = self._declared_dim(b, bound, positional)
        if "dim" in b.params and self._dim_moves(b, bound) \
                and ("dim" not in bound or id(bound["dim"][0]) not in self.label_dims):
            # (a dim counted within each element's own dims, _own_dim, reads from the
            # right whatever the layout: sum(sigmoid(xm), dim=0) in plate n's body)
            moved = next((n for k, (node, _) in bound.items() if k != "dim"
                          for n in ast.walk(node) if id(n) in self.aligned), None)
            if moved is not None:
                # nested plates lay an outer plate's value out at its Pyro dim ([N] ->
                # [N, 1]), so a reduction or a softmax over its dims would run over the
                # unit dims or another plate's, not over the value as declared
                self.err(f"inside nested plates, '{moved.id}' is laid out at the plates' "
                         f"dims, so {b.name} over its dims would not read it as declared",
                         e.span,
                         [f"compute it before the plates (a value or transformed data), or "
                          f"read it with the plate's index ({moved.id}[i, ...])"])
                return UNKNOWN
        kwargs = {k: t for k, (_, t) in bound.items()}
        shape = None
        if b.shape is not None and all(t.kind != "unknown" for t in kwargs.values()):
            shape = b.shape(positional, kwargs)
        if shape is None and b.name == "where" and kwargs \
                and all(t.shape is not None for t in kwargs.values()):
            shape = ()  # its arguments broadcast (a label's value is then known [K, 1, T])
            for k, t in kwargs.items():
                before = shape
                shape, issues = sizes.broadcast(shape, t.shape)
                # (in plates the arguments as _elementwise_pads laid them out: each
                # element's own dims meet, its plate dims the plate's: x2[n] and u in
                # plate n are [N, K] and [M], Stan's K = M)
                self._report(issues, bound[k][0].span,
                             f"the arguments of where {sizes.show(before)} and "
                             f"{sizes.show(t.shape)}")
                if shape is None:
                    break
        if b.name == "clamp" and shape is not None and kwargs.keys() & {"min", "max"} \
                and all(t.shape is not None for t in kwargs.values()):
            # tensor bounds broadcast with x as where's arguments do (clamp(z, max=v) is
            # [K]; clamp(v, max=u) of [K] and [M] is checked: torch's size error)
            for k in ("min", "max"):
                if k in kwargs:
                    before = shape
                    shape, issues = sizes.broadcast(shape, kwargs[k].shape)
                    self._report(issues, bound[k][0].span,
                                 f"the arguments of clamp {sizes.show(before)} and "
                                 f"{sizes.show(kwargs[k].shape)}")
                    if shape is None:
                        break
        per_row = self._element_reduction(e, b, bound)
        if per_row is not None:
            shape = per_row
        elif matrix in bound and self.plate_stack and shape == () \
                and bound[matrix][1].shape is not None:
            # logdet(m) of each element's matrix: one per element, as the runtime's batch
            width = self._plate_width(bound[matrix][0])
            shape = tuple(bound[matrix][1].shape[:width]) if width else shape
        kind = b.result
        if kind == "as_first":
            kind = _as_first(positional[0].kind if positional else "real",
                             [t.kind for k, (_, t) in bound.items()
                              if k not in (b.params[:1] + ("dim",))])
        if b.name == "where":
            # torch keeps the branches' kind: two ints (or bools) give int64, th[where(k >=
            # 0, k, 0)] is an index
            branches = {bound[k][1].kind for k in ("a", "b") if k in bound}
            if len([k for k in ("a", "b") if k in bound]) == 2 and branches <= {"int", "bool"}:
                kind = "bool" if branches == {"bool"} else "int"
        return Ty(kind, shape)

    def _two_value_extreme(self, e: ast.Call, name: str) -> None:
        """``max(x, 0.0)``: Stan's fmax (and Python's max) of two values, but a second
        positional argument of a reduction is its dim to torch (``max(x, 0)``): which
        one is meant cannot be told from an int literal, so neither is guessed."""
        x, y = (fmt.expr(a) for a in e.args[:2])
        op, bound = (">", "min") if name == "max" else ("<", "max")
        value = _literal(e.args[1])
        if value is None:
            notes = [f"the elementwise {name}imum of two values (Stan's f{name}): "
                     f"where({x} {op} {y}, {x}, {y})"]
        else:
            notes = [f"the elementwise {name}imum of {x} and a number (Stan's f{name}): "
                     f"clamp({x}, {bound}={float(value)!r})"]
            lit = e.args[1].operand if isinstance(e.args[1], ast.Neg) else e.args[1]
            if isinstance(lit.value, int):  # an int literal may be meant as a dim
                notes.append(f"along a dimension: {name}({x}, dim={y}) (dim is given by name)")
        self.err(f"{name} takes one value: {name}({x}, {y}) would read {y} as a dim "
                 f"(torch) or as a second value (Stan's f{name})", e.args[1].span, notes)

    def _cat_items(self, xs: tuple) -> Ty:
        """The list type of cat's items inside plates with every item given the plates'
        dims its items have together (a global item is each element's, as rt.cat
        broadcasts it)."""
        node, t = xs
        items = list(t.value or ())
        widths = [self._plate_width(i) or 0 for i in node.items]
        if len(items) != len(widths) or any(x.shape is None or len(x.shape) < w
                                            for x, w in zip(items, widths, strict=True)):
            return t
        front: tuple | None = ()
        for x, w in zip(items, widths, strict=True):
            front = sizes.broadcast(front, x.shape[:w])[0] if front is not None else None
        if front is None:
            return t
        return replace(t, value=[replace(x, shape=tuple(front) + tuple(x.shape[w:]))
                                 for x, w in zip(items, widths, strict=True)])

    def _elementwise_join(self, e: ast.Call, b, xs: tuple, dim) -> int | None:
        """stack/cat inside plates of items with one value per plate element join each
        element's values, as a list literal does (:meth:`_element_items`): without
        ``dim`` stack along a new dim right of the plate dims, cat along each element's
        own first dim; a ``dim`` counted from the left is counted from the right in the
        generated code (so dims that enumeration adds on the left stay). A ``dim`` that
        falls among the plate dims would join the plate's elements with each other: a
        located error. Returns the items' plate width (0 when they do not vary along the
        plates), None after an error."""
        node, t = xs
        if not isinstance(node, ast.ListLit):
            return 0
        widths = [self._plate_width(i) for i in node.items]
        if not any(widths) or any(w is None for w in widths):
            return 0  # a list's undecidable items are reported by _element_items
        width = max(widths)
        if b.name == "stack":
            if id(node) not in self.stacks or t.shape is None:
                return 0
            along, total = self.stacks[id(node)], len(t.shape)
        else:
            items = [x for x in t.value or () if x.shape is not None]
            ranks = {len(x.shape) - w for x, w in zip(items, widths, strict=False)}
            if len(items) != len(widths) or len(ranks) != 1 or width > min(
                    len(x.shape) for x in items):
                return 0
            own = ranks.pop()
            if own == 0:
                self.err(f"inside plate {', '.join(self._plate_names())}, cat joins each "
                         "element's own vectors, and its items here are one number per "
                         "element", e.span,
                         ["a list [a, b] stacks per-element numbers (each element's "
                          "[2]); give every item the plate's dims to join vectors"])
                return None
            along, total = -own, width + own
        if dim is None:
            self.stacks[id(e)] = along
            return width
        d = dim[1].value if isinstance(dim[0], ast.Number) else None
        if not isinstance(d, int):
            return width
        if not (d >= width if d >= 0 else -d <= total - width):
            self.err(f"inside plate {', '.join(self._plate_names())}, the items of "
                     f"{b.name} have one value per plate element ({width} plate "
                     f"dim{'s' if width > 1 else ''} first), and dim={d} is a plate dim: "
                     f"it would {b.name} the plate's elements with each other", dim[0].span,
                     [f"leave dim out to {b.name} each element's values, or count it from "
                      "the right within them (dim=-1)"])
            return None
        if d >= 0:
            self.label_dims[id(dim[0])] = total
        return width

    def _element_reduction(self, e: ast.Call, b, bound: dict):
        """``sum(w[i])`` (a reduction without ``dim``) of a value indexed by a plate's
        index reduces each element's own values, as Stan's loop reads it: the result has
        the value's plate dims (recorded in ``elem_reduce`` for ``rt.reduce_elements``).
        The same for a value computed from a label drawn outside every plate (``sum(mu[z])``
        is one sum per label value, not over the summed-out labels). None otherwise:
        ``sum(g)`` of data or of a value defined outside plates is over all of it, as
        documented; ``sum(w)`` of a value drawn or computed in the open plates is one sum
        per element (:meth:`_element_width`)."""
        if b.name not in _DEFAULT_DIMS or "dim" in bound:
            return None
        if self._label_reduction(e, bound):
            return ()
        first = next(iter(bound.values()), None)
        if not self.plate_stack:
            return None
        if first is None or first[1].shape is None or (
                isinstance(first[0], ast.Name) and not self._element_width(first[0])):
            return None
        # an expression of such values (sum(x[i] * w), Stan's dot_product(x[i], w)) is one
        # sum per element too: it varies along the plates (it summed over every row); so
        # is a name of each element's own value (sum(w) of w = x2[t]) and its entries
        if isinstance(first[0], ast.Index) and id(first[0]) not in self.label_vindex and not any(
                isinstance(i, ast.Name) and (getattr(
                    self.symbols.get(i.id), "role", "") == "index" or i.id in
                    self.plate_labels) for i in first[0].indices) \
                and not self._per_element_items(first[0]):  # mu[c], c drawn here
            return None
        width = self._plate_width(first[0])
        if not width or width > len(first[1].shape):
            return None
        self.elem_reduce[id(e)] = len(first[1].shape) - width
        return tuple(first[1].shape[:width])

    def _over_plate_dim(self, e: ast.Call) -> bool:
        """``sum(xm, dim=0)`` (a reduction, ``dim`` given by a number) of data read whole
        whose dim 0 is a plate's (``xm: real[N, M]`` in plate n): it reduces over the whole
        plate dim as declared (``mean(X, 0)[1]``), so the result is the same for every
        element (``[M]``, not one per element: meeting ``y[n]`` it is the plate-sized
        value's located error, not paired by position where N = M)."""
        if e.func_name not in _DEFAULT_DIMS and e.func_name != "logsumexp":
            return False
        x = e.args[0] if e.args else next((k.value for k in e.kwargs if k.name == "x"), None)
        dim = e.args[1] if len(e.args) > 1 else next(
            (k.value for k in e.kwargs if k.name == "dim"), None)
        if not isinstance(x, ast.Name) or not isinstance(dim, ast.Number) \
                or not isinstance(dim.value, int) or dim.value < 0:
            return False
        sym = self.symbols.get(x.id)
        if sym is None or not _sized_like_plates(sym) or x.id in self.global_labels:
            return False
        width = self._plate_width(x)
        return bool(width) and dim.value < width and len(sym.ty.shape or ()) > width

    def _indexed_per_element(self, e) -> bool:
        """Whether ``e`` varies along the plates only through indices per element
        (``v[gid[n]]``, ``2 * xm[n, 0]``) and names of each element's own values: no name
        read whole (``exp(f)``, ``sum(f) * w`` of ``f: real[N]`` read whole are the whole
        value's, then cut, as documented)."""
        inside = {id(n) for i in ast.walk(e) if isinstance(i, ast.Index) for n in ast.walk(i)}
        found = False
        for n in ast.walk(e):
            if isinstance(n, ast.Name) and id(n) not in inside and self._plate_width(n) \
                    and not self._element_width(n):
                return False
            if isinstance(n, ast.Index) and (self._per_element_items(n)
                                             or id(n) in self.label_vindex):
                found = True
        return found or bool(self._element_width(e))

    def _per_element_items(self, e: ast.Index) -> bool:
        """Whether an index item of ``e`` has one value per plate element (``gid[n]`` in
        ``v[gid[n]]``, ``n + 1``, or ``gid`` of ``gid: int[N]`` read whole in plate n, which
        is ``gid[n]`` there): ``e`` is then each element's own value, as Stan's
        ``v[gid[n]]`` in the loop, and a reduction of it reduces that value only."""
        return any(not isinstance(i, ast.Slice) and self._plate_width(i)
                   for i in e.indices)

    def _whole(self, node: ast.Expr, t: Ty) -> bool:
        """Whether ``t`` is the whole shape of a tensor ``node`` as it is at run time:
        outside plates, and not read from a label summed out there (which adds dims)."""
        return not self.plate_stack and t.kind in TENSOR_KINDS and t.shape is not None \
            and self._label_read(node) is None

    def _dim_in_range(self, b, bound: dict) -> bool:
        """A literal ``dim`` outside the first argument's dims (``sum(y, dim=1)`` of a
        vector; a number has dims 0 and -1 as in torch): torch's IndexError when the model
        ran. False when reported."""
        dim, first = bound.get("dim"), bound.get("x")
        d = _literal_number(dim[0]) if dim is not None else None
        if not isinstance(d, int) or first is None or not self._whole(*first):
            return True
        n = max(len(first[1].shape), 1)
        if -n <= d < n:
            return True
        have = "a number" if not first[1].shape else \
            f"{_quote(first[0])} of shape {sizes.show(first[1].shape)}"
        self.err(f"dim={d} is out of range for {have}: {b.name} takes a dim from {-n} to "
                 f"{n - 1}", dim[0].span, ["dims count from 0 on the left, from -1 on the right"])
        return False

    def _join_ranks(self, b, bound: dict) -> bool:
        """``cat([x, y])`` along a dim counted from the left of values with different
        numbers of dims (torch's 'Tensors must have same number of dimensions'). False
        when reported."""
        xs, dim = bound.get("xs"), bound.get("dim")
        d = _literal_number(dim[0]) if dim is not None else 0
        if b.name != "cat" or xs is None or not isinstance(xs[0], ast.ListLit) \
                or not isinstance(d, int) or d < 0:
            return True
        items = [(i, self.types.get(id(i), UNKNOWN)) for i in xs[0].items]
        if not items or not all(self._global_here(i, t) for i, t in items):
            return True
        (first, t0), rank = items[0], len(items[0][1].shape)
        for node, t in items[1:]:
            if len(t.shape) != rank:
                self.err(f"cat joins values with the same number of dimensions, but "
                         f"{_quote(first)} is {sizes.show(t0.shape)} and {_quote(node)} is "
                         f"{sizes.show(t.shape)}", node.span,
                         ["stack([...]) joins values as a new dimension; cat joins them "
                          "along one they all have"])
                return False
        if d >= max(rank, 1):
            self.err(f"dim={d} is out of range for values of shape {sizes.show(t0.shape)}: cat "
                     f"takes a dim from {-max(rank, 1)} to {max(rank, 1) - 1}", dim[0].span,
                     ["dims count from 0 on the left, from -1 on the right"])
            return False
        return True

    def _join_sizes(self, e: ast.Call, b, bound: dict) -> None:
        """``cat([A, C])`` outside plates (or of values that do not vary along the plates
        around it, :meth:`_global_here`): the items' dims other than ``dim`` must be equal
        (from the left, torch.cat's) or broadcast (``dim`` from the right, ``rt.cat``'s),
        a check error where they differ for every size, else checked at binding."""
        xs, dim = bound.get("xs"), bound.get("dim")
        d = _literal_number(dim[0]) if dim is not None else 0
        if b.name != "cat" or xs is None or not isinstance(xs[0], ast.ListLit) \
                or not isinstance(d, int):
            return
        items = [(i, self.types.get(id(i), UNKNOWN)) for i in xs[0].items]
        if not items or not all(self._global_here(i, t) for i, t in items):
            return
        _, issues = builtins.cat_sizes([t.shape for _, t in items], d)
        shown = ", ".join(sizes.show(t.shape) for _, t in items)
        self._report(issues, e.span, f"the items of cat {shown} (dims other than dim={d})")

    def _element_join_sizes(self, e: ast.Call, joined: Ty, d) -> None:
        """``cat([S * x[n], A])`` inside plates: each element's items joined along their
        own ``dim`` (the generated code counts it from the right, ``rt.cat``), their other
        own dims equal as Stan's ``append_row`` needs (``[K, K]`` and ``[K, M]``: K = M), a
        check error where they differ for every size, else checked at binding (was
        torch's "Attempting to broadcast a dimension")."""
        items = list(joined.value or ())
        if not isinstance(d, int) or not items or any(t.shape is None for t in items):
            return
        rank = len(items[0].shape)
        if any(len(t.shape) != rank for t in items) or not -rank <= d < rank:
            return
        _, issues = builtins.cat_sizes([t.shape for t in items], d - rank if d >= 0 else d)
        shown = ", ".join(sizes.show(t.shape) for t in items)
        self._report(issues, e.span, f"the items of cat {shown} (dims other than the one "
                     "joined)")

    def _global_here(self, node: ast.Expr, t: Ty) -> bool:
        """Whether ``t`` is the whole shape of ``node`` at run time: :meth:`_whole`, or
        inside plates a value that does not vary along them (``u`` of ``u: real[M]`` in
        plate n, laid out as declared)."""
        if not self.plate_stack:
            return self._whole(node, t)
        return t.kind in TENSOR_KINDS and t.shape is not None \
            and self._label_read(node) is None and self._plate_width(node) == 0

    def _scale_fits(self, e: ast.Call, b, bound: dict) -> bool:
        """``diag_pre_multiply(v, M)`` (``diag_post_multiply(M, v)``, ``quad_form_diag(M,
        v)``) outside plates, or of values that do not vary along them: Stan's vector and
        matrix, v as long as M's rows (columns; both), a check error where they differ for
        every size, else checked at binding. A matrix in v's place ran to three dims.
        False when reported."""
        dims = builtins.SCALED_DIMS.get(b.name)
        if dims is None or "v" not in bound or "m" not in bound \
                or not all(self._global_here(*bound[k]) for k in ("v", "m")):
            return True  # (in plates, values that vary along them are refused before)
        (vn, v), (mn, m) = bound["v"], bound["m"]
        if len(m.shape) == len(v.shape) + 1 >= 3:
            return True  # a batch of vectors and matrices: torch broadcasts them
        if len(v.shape) != 1 or len(m.shape) != 2:
            bad = vn if len(v.shape) != 1 else mn
            self.err(f"{b.name} takes a vector v and a matrix m (Stan's), not v "
                     f"{sizes.show(v.shape) if v.shape else 'a number'} and m "
                     f"{sizes.show(m.shape) if m.shape else 'a number'}", bad.span,
                     ["diag(v) @ m for a matrix of the diagonal's values"]
                     if len(v.shape) == 2 else None)
            return False
        _, issues = builtins.diag_multiply_sizes(b.name, v.shape, m.shape)
        which = {(-2,): "rows", (-1,): "columns", (-2, -1): "rows and columns"}[dims]
        self._report(issues, e.span, f"the length of v {sizes.show(v.shape)} and the {which} "
                     f"of m {sizes.show(m.shape)} in {b.name}")
        return True

    def _outer_vectors(self, b, bound: dict) -> bool:
        """``outer(a, b)`` of a number: torch's IndexError when the model ran. False when
        reported."""
        if b.name != "outer":
            return True
        for k, (node, t) in bound.items():
            if self._whole(node, t) and not t.shape:
                which = "first" if k == "a" else "second"
                self.err(f"outer takes two vectors, but its {which} argument is a number",
                         node.span,
                         ["the product of numbers is a * b"])
                return False
        return True

    def _own_dim(self, b, bound: dict) -> int:
        """``cumsum(v[i], dim=0)`` inside ``plate i``: v[i] is one row per element, laid
        out with the plate's dim first, so a ``dim`` counted from the left would run along
        the plate (a silent wrong value): it is counted within the row's own dims, from
        the right (``dim - own``, as ``label_dims`` records), for a builtin that keeps its
        argument's shape (cumsum, cumprod, softmax, log_softmax) and for a reduction
        (``sum(x2[t], dim=0)`` is each row's sum), also of a name of each element's own
        value (``w = x2[t]``, :meth:`_element_width`). For a reduction the plate width,
        which the result's type adds to that dim, is returned (0 otherwise)."""
        dim, first = bound.get("dim"), next(iter(bound.values()), None)
        name = first is not None and self._element_width(first[0])
        if not self.plate_stack or dim is None or first is None \
                or not isinstance(dim[0], ast.Number) or first[1].shape is None \
                or (isinstance(first[0], ast.Name) and not name):
            return 0
        d = dim[0].value
        width = self._plate_width(first[0])
        if not isinstance(d, int) or isinstance(d, bool) or d < 0 or not width \
                or width > len(first[1].shape):
            return 0
        own = len(first[1].shape) - width
        if d >= own:
            self.err(f"inside plate {', '.join(self._plate_names())}, each element's value "
                     f"has {own} dim{'s' if own != 1 else ''} of its own, so dim={d} is out "
                     "of range", dim[0].span, ["count it from the right: dim=-1 is the last"])
            return 0
        self.label_dims[id(dim[0])] = own
        return width if b.shape is not builtins.same_as_first else 0

    def _declared_dim(self, b, bound: dict, positional: list) -> tuple[dict, list]:
        """``logsumexp(A, dim=1)`` of data ``A: real[K, M]`` read whole in the body of an
        outer plate k of nested plates: A is laid out ``[K, 1, M]`` there, and a ``dim``
        counted from the left that falls on A's own dims (past its plate dims) is read
        from the right (``dim - rank``, recorded in ``label_dims``), so it is the dim
        declared, as Stan's ``log_sum_exp(A[k])`` (it was the located error of a dim
        that would move with the layout). A reduction along a plate dim (``sum(x2,
        dim=0)`` of ``x2: real[N, K]`` in plate n's body) reads the data as declared, not
        laid out: over its dim N, one ``[K]`` for the whole plate, as Stan's column sums
        of the whole ``x2`` in the loop and as in one plate (it was that located error).
        A function keeping the plate dim (``softmax(x2, dim=0)``) keeps the error."""
        dim, first = bound.get("dim"), next(iter(bound.items()), None)
        if dim is None or first is None or not isinstance(first[1][0], ast.Name) \
                or id(first[1][0]) not in self.aligned:
            return bound, positional
        key, (node, ty) = first
        d = _literal_number(dim[0])
        rank = len(self.symbols[node.id].ty.shape or ())
        if not isinstance(d, int) or isinstance(d, bool) or not 0 <= d < rank:
            return bound, positional
        if d < len(self.aligned[id(node)]):
            if b.shape is builtins.same_as_first or b.name not in _ALONG_PLATE:
                return bound, positional
            declared = self.symbols[node.id].ty
            del self.aligned[id(node)]
            self._own_reads.add(id(node))
            self.types[id(node)] = declared
            return ({**bound, key: (node, declared)},
                    [declared if t is ty else t for t in positional])
        self.label_dims[id(dim[0])] = rank
        moved = replace(dim[1], value=d - rank)
        return ({**bound, "dim": (dim[0], moved)},
                [moved if t is dim[1] else t for t in positional])

    def _dim_on_plate(self, e: ast.Call, b, bound: dict) -> bool:
        """``logsumexp(v[gid[n]])`` (also softmax, cumsum, a reduction with ``dim=-1``) of
        one number per plate element: its dim -1 is the plate's, so it ran along the
        plate's elements (a silent wrong value). A located error: False when reported.
        Data and values defined outside plates read whole keep their reading
        (``logsumexp(g)`` is over all of ``g``)."""
        dim = bound.get("dim")
        d = _literal_number(dim[0]) if dim is not None else _DEFAULT_DIMS.get(b.name, -1)
        first = next(iter(bound.values()), None)
        if not self.plate_stack or not isinstance(d, int) or isinstance(d, bool) or d >= 0 \
                or first is None or first[1].shape is None or first[1].kind == "unknown" \
                or (isinstance(first[0], ast.Name) and not self._element_width(first[0])) \
                or self._label_read(first[0]) is not None:
            return True
        indexed = self._indexed_per_element(first[0])
        bare = [] if indexed or isinstance(first[0], ast.Name) else self._bare_reads(first[0])
        if not indexed and not bare:
            return True
        width = self._plate_width(first[0])
        if not width or width > len(first[1].shape) or -d <= len(first[1].shape) - width:
            return True
        own = len(first[1].shape) - width
        if bare:
            if b.shape is builtins.same_as_first or own:
                return True  # softmax(f), cumsum(exp(f)): the whole value's, then cut
            self._reduces_bare_number(e, b, first[0], bare, d)
            return False
        self.err(f"inside plate {', '.join(self._plate_names())}, '{fmt.expr(first[0])}' has "
                 f"{own} dim{'s' if own != 1 else ''} of its own per element, so {b.name} "
                 f"along dim={d} would run along the plate's elements", e.span,
                 ["a number per element needs no reduction" if own == 0 else
                  f"use a dim of the element's own: -{own} to -1"])
        return False

    def _bare_reads(self, e) -> list:
        """The bare names of data (or of values defined outside every plate) that ``e``
        reads per element, outside any index: ``u`` in ``u - 0.5`` in plate m."""
        inside = {id(n) for i in ast.walk(e) if isinstance(i, ast.Index) for n in ast.walk(i)}
        return [n for n in ast.walk(e) if isinstance(n, ast.Name) and id(n) not in inside
                and self._bare_data(n) and self._plate_width(n)]

    def _reduces_bare_number(self, e: ast.Call, b, arg, bare: list, d: int) -> None:
        """``logsumexp(u - 0.5)`` (or ``sum(2 * u, dim=-1)``) in plate m: ``u - 0.5`` is one
        number per element (``u`` is read as ``u[m]``, as ``sum(u - 0.5)`` reads it), so
        the reduction has nothing of the element's own to run along, while Stan's ``u``
        in the loop is the whole vector. It read the whole vector silently; now a
        located error that spells both readings."""
        names = sorted({n.id for n in bare})
        text = fmt.expr(arg)
        whole = text
        for name in names:
            rank = len(self.symbols[name].ty.shape or ())
            whole = re.sub(rf"\b{re.escape(name)}\b(?!\s*\[)",
                           f"{name}[{', '.join(':' * rank)}]", whole)
        call = fmt.expr(e).replace(text, whole, 1)
        reads = ", ".join(f"'{n}' as {n}[{', '.join(p.index or 'i' for p in plates)}]"
                          for n in names for plates in
                          [self._aligned_plates(self.symbols[n].ty.shape)])
        self.err(f"inside plate {', '.join(self._plate_names())}, '{text}' is one number per "
                 f"element (it reads {reads}), so {b.name} along dim={d} has nothing of "
                 f"the element's own to run along, and Stan's {' and '.join(names)} in the "
                 f"loop would be {'whole values' if len(names) > 1 else 'the whole value'}: "
                 "say which is meant", e.span,
                 [f"each element's own number needs no {b.name} ({b.name} of one number is "
                  f"that number): {text}",
                  f"the whole value's, the same for every element: {call}"])

    def _reduces_inner_plate(self, e: ast.Call, b, bound: dict) -> bool:
        """``sum(A, dim=-1)`` of data ``A: real[K, M]`` read whole under ``plate k in K {
        plate m in M { ... } }``: the reduction is over a plate dim that is not the
        outermost, so the plate dims left of it ([K]) would move right, onto the inner
        plate's dim (Pyro's 'Shape mismatch inside plate', or paired with m by position
        where K = M: a silent wrong value). A located error: False when reported. Over
        the outermost plate dim (``sum(A, dim=0)``) and over the value's own dims, the
        plate dims keep their places."""
        if b.shape is builtins.same_as_first or not self.plate_stack:
            return True
        dim = bound.get("dim")
        d = _literal_number(dim[0]) if dim is not None else _DEFAULT_DIMS.get(b.name, -1)
        first = next(iter(bound.values()), None)
        if not isinstance(d, int) or isinstance(d, bool) or first is None \
                or not isinstance(first[0], ast.Name) or first[1].shape is None \
                or self._element_width(first[0]):
            return True
        sym = self.symbols.get(first[0].id)
        if sym is None or not _sized_like_plates(sym) or first[0].id in self.global_labels \
                or sym.ty.shape != first[1].shape:
            return True  # an outer plate's data laid out at its dim ([N, 1]): _dim_moves
        width, rank = self._plate_width(first[0]), len(first[1].shape)
        at = d + rank if d < 0 else d
        if not width or width < 2 or not 0 < at < width:
            return True
        name, plate = first[0].id, self.plate_stack[len(self.plate_stack) - width + at]
        self.err(f"inside plates {', '.join(self._plate_names())}, '{name}' (shape "
                 f"{sizes.show(first[1].shape)}) has one value per element, and {b.name} "
                 f"over its dim {at} (plate {plate.name}'s) would leave the plates' other "
                 "values at the wrong dims", e.span,
                 [f"compute it before the plates, {name}_r = {fmt.expr(e)}, and read "
                  f"{name}_r inside (one value per element of the plates left)"])
        return False

    def _dim_moves(self, b, bound: dict) -> bool:
        """Whether a builtin's ``dim`` (given, or its default) reaches into the plate dims
        of its first argument, or counts from the left: over all dims (``sum(g)``) or
        within the per-element dims (``dim=-1`` of a per-row vector) reads the same
        whatever the plates' layout."""
        dim = bound.get("dim")
        value = dim[1].value if dim is not None else _DEFAULT_DIMS.get(b.name, -1)
        if value is None:
            return False
        if not isinstance(value, int) or value >= 0:
            return True
        first = next(iter(bound.values()), None)
        if first is None or first[1].shape is None:
            return True
        width = self._plate_width(first[0])
        return width is None or -value > len(first[1].shape) - width

    def _construct_ty(self, e, b, bound, positional) -> Ty:
        """A construct call: its own shape rule, else an unknown shape of its result kind."""
        kwargs = {k: t for k, (_, t) in bound.items()}
        shape = None
        if b.shape is not None and all(t.kind != "unknown" for t in kwargs.values()):
            shape = b.shape(positional, kwargs)
        value = {"builtin": b.name}
        if b.call_dims:
            value["dims"] = {}
            for arg in dict.fromkeys(b.call_dims.values()):
                if arg not in bound:
                    continue
                node, t = bound[arg]
                if t.dim is None and t.kind != "unknown":
                    self.err(f"'{arg}' of {b.name} must be a size (an integer or a size name)",
                             node.span)
                value["dims"][arg] = t.dim
        if b.result == "dist":
            return Ty("dist", shape, event=None, value=value)
        return Ty(b.result, shape, value=value)

    def _network_ty(self, e, b, bound) -> Ty:
        def dim_of(key):
            if key not in bound:
                return None
            node, t = bound[key]
            if t.dim is None:
                self.err(f"'{key}' of {b.name} must be a size (an integer or a size name)",
                         node.span)
            return t.dim
        in_dim, out_dim = dim_of("in_dim"), dim_of("out_dim")
        layers = bound.get("hidden") or bound.get("channels")
        if layers is not None:
            node, t = layers
            what = "hidden layer sizes" if "hidden" in bound else "channel counts"
            items = node.items if isinstance(node, ast.ListLit) else [node]
            for it in items:
                n = _literal_number(it)
                if n is not None and (n < 1 or n != int(n)):
                    # a layer of 0 units makes the network a constant (its last bias)
                    self.err(f"{what} of {b.name} must be positive integers, got {n:g}",
                             it.span)
                elif self.types.get(id(it), UNKNOWN).dim is None:
                    self.err(f"{what} of {b.name} must be integers", it.span)
        value = {"builtin": b.name, "in": in_dim, "out": out_dim}
        if b.name == "cnn":
            value["in_shape"] = self._cnn_in_shape(bound)
            pool = 1
            for key, odd in (("kernel_size", True), ("pool", False)):
                if key in bound:
                    node, t = bound[key]
                    v = t.value if t.kind == "int" else None
                    if not isinstance(v, int) or v < 1 or (odd and v % 2 == 0):
                        self.err(f"'{key}' of cnn must be a positive "
                                 f"{'odd ' if odd else ''}integer literal", node.span)
                    elif key == "pool":
                        pool = v
            self._cnn_pooling_leaves_pixels(value["in_shape"], layers, pool, e)
        return Ty("network", None, value=value)

    def _cnn_pooling_leaves_pixels(self, in_shape, layers, pool, e) -> None:
        """With known H, W: L poolings by ``pool`` must leave at least one pixel."""
        if pool <= 1 or in_shape is None or layers is None:
            return
        node = layers[0]
        n_conv = len(node.items) if isinstance(node, ast.ListLit) else 1
        h, w = in_shape[1:]
        if not (h.is_number and w.is_number):
            return
        if min(int(h), int(w)) < pool ** n_conv:
            self.err(f"cnn: {n_conv} max-poolings by {pool} leave no pixels of "
                     f"{int(h)}x{int(w)} images", node.span,
                     [f"pooling by {pool} after each of {n_conv} convolutions needs H and "
                      f"W of at least {pool ** n_conv}"])

    def _cnn_in_shape(self, bound) -> tuple | None:
        """The (C, H, W) size triple of ``cnn(in_shape=[C, H, W], ...)``."""
        if "in_shape" not in bound:
            return None
        node, _ = bound["in_shape"]
        dims = [self.types.get(id(it), UNKNOWN).dim for it in node.items] \
            if isinstance(node, ast.ListLit) else []
        if len(dims) != 3 or any(d is None for d in dims):
            self.err("'in_shape' of cnn must be a list of three sizes [C, H, W] (channels, "
                     "height, width)", node.span)
            return None
        return tuple(dims)


# ---- helpers ------------------------------------------------------------------------
def _as_first(first: str, others: list[str]) -> str:
    """The kind of a builtin whose result is ``"as_first"``: its first argument's (int
    stays int: ``abs(k)``, ``sort(k)``, ``clamp(k, 0, 2)``), real when another value
    argument is real (``clamp(k, 0, 2.5)``); a first of unknown kind (a named function's
    parameter: ``g = (c, i) => c + theta[abs(i)]``) stays unknown, settled at the
    function's use (scan over an int xs)."""
    if first == "unknown":
        return "unknown"
    if first not in TENSOR_KINDS:
        return "real"
    if first in ("int", "bool") and "real" in others:
        return "real"
    return first

def _slice_length(start, stop, dim):
    """Length of ``x[start:stop]`` along a dimension of size ``dim``, as Python counts it."""
    ends = []
    for end in (start, stop):
        if end.is_number and end < 0:
            end = dim + end  # from the end, as in Python
        if end.is_number and dim.is_number:
            end = min(max(end, sizes.const(0)), dim)
        ends.append(end)
    length = ends[1] - ends[0]
    if length.is_number and length < 0:
        return sizes.const(0)
    return length


def _a(kind: str) -> str:
    """``a real``, ``an int``: a kind with its article."""
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


def _bounds_constraint(bounds: dict) -> str | None:
    if not bounds:
        return None
    lo, hi = bounds.get("lower"), bounds.get("upper")

    def lit(x):
        return x.value if isinstance(x, ast.Number) else None

    if lo is not None and hi is not None:
        if lit(lo) == 0 and lit(hi) == 1:
            return "constraints.unit_interval"
        return ("interval", lo, hi)
    if lo is not None:
        return "constraints.positive" if lit(lo) == 0 else ("greater_than", lo)
    return ("less_than", hi)


def _support_matches(constraint, dty: Ty) -> bool:
    if not isinstance(constraint, str) or dty.dist is None:
        return False
    sig = signatures.lookup(dty.dist)
    return sig is not None and sig.support in SUPPORT_OF_CONSTRAINT.get(constraint, ())


# Stan functions whose nearest BDL spelling is another function (inv_logit -> logit), with
# what to write instead; a "did you mean" there would compile into a wrong model.
_STAN_SPELLINGS = {
    "inv_logit": "Stan's inv_logit(x) is sigmoid(x) here",
    "log_inv_logit": "Stan's log_inv_logit(x) is -softplus(-x) here",
    "log1m": "Stan's log1m(x) is log1p(-x) here",
    "log1m_exp": "Stan's log1m_exp(x) is log(-expm1(x)) here",
    "log1p_exp": "Stan's log1p_exp(x) is softplus(x) here",
    "Phi": "Stan's Phi(x) is normal_cdf(x) here",
    "inv_cloglog": "Stan's inv_cloglog(x) is 1 - exp(-exp(x)) here",
    "log_sum_exp": "Stan's log_sum_exp(v) is logsumexp(v) here; for two numbers, "
                   "logsumexp(stack([a, b]))",
    "log_mix": "Stan's log_mix(t, a, b) is logsumexp(stack([log(t) + a, log1p(-t) + b])) here",
    "rep_vector": "Stan's rep_vector(x, N) is x * ones(N) here",
    "dot_product": "Stan's dot_product(a, b) is a @ b here",
    "inverse": "there is no matrix inverse: solve(A, b) gives A^-1 b without forming it",
    "lchoose": "Stan's lchoose(n, k) is lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1) "
               "here",
    "cumulative_sum": "Stan's cumulative_sum(x) is cumsum(x) here",
    "inv": "Stan's inv(x) is 1 / x here",
    "inv_sqrt": "Stan's inv_sqrt(x) is 1 / sqrt(x) here",
    "inv_square": "Stan's inv_square(x) is 1 / square(x) here",
    "fabs": "Stan's fabs(x) is abs(x) here",
    "fmax": "Stan's fmax(x, y) is clamp(x, min=y) for a number y, where(x > y, x, y) for a "
            "tensor",
    "fmin": "Stan's fmin(x, y) is clamp(x, max=y) for a number y, where(x < y, x, y) for a "
            "tensor",
    "fdim": "Stan's fdim(x, y) is clamp(x - y, min=0.0) here",
    "maximum": "the largest element is max(x); the elementwise maximum of two values is "
               "where(a > b, a, b) (clamp(a, min=b) for a number b)",
    "minimum": "the smallest element is min(x); the elementwise minimum of two values is "
               "where(a < b, a, b) (clamp(a, max=b) for a number b)",
    "log10": "Stan's log10(x) is log(x) / log(10.0) here",
    "log2": "Stan's log2(x) is log(x) / log(2.0) here",
    "exp2": "Stan's exp2(x) is pow(2.0, x) here",
    "step": "Stan's step(x) is where(x < 0, 0.0, 1.0) here",
    "sort_asc": "Stan's sort_asc(x) is sort(x) here",
    "sort_desc": "Stan's sort_desc(x) is reverse(sort(x)) here",
    "diag_matrix": "Stan's diag_matrix(v) is diag(v) here",
    "rep_matrix": "Stan's rep_matrix(x, N, M) is x * ones(N, M) here",
    "dot_self": "Stan's dot_self(x) is x @ x here",
    "squared_distance": "Stan's squared_distance(a, b) is sum(square(a - b)) here",
    "crossprod": "Stan's crossprod(A) is transpose(A) @ A here",
    "tcrossprod": "Stan's tcrossprod(A) is A @ transpose(A) here",
    "multiply_lower_tri_self_transpose": "Stan's multiply_lower_tri_self_transpose(L) is "
                                         "tril(L) @ transpose(tril(L)) here",
    "quad_form": "Stan's quad_form(A, B) is transpose(B) @ A @ B here",
    "columns_dot_product": "Stan's columns_dot_product(a, b) is sum(a * b, dim=0) here",
    "rows_dot_product": "Stan's rows_dot_product(a, b) is sum(a * b, dim=-1) here",
    "mdivide_left": "Stan's mdivide_left(A, b) is solve(A, b) here",
    "log_determinant": "Stan's log_determinant(A) is logdet(A) here (A positive definite)",
    "Phi_approx": "Stan's Phi_approx(x) is sigmoid(0.07056 * x ^ 3 + 1.5976 * x) here",
    # distributions (docs/language.md, "Coming from Stan")
    "student_t": "Stan's student_t(nu, mu, sigma) is StudentT(nu, mu, sigma) here",
    "inv_gamma": "Stan's inv_gamma(alpha, beta) is InverseGamma(alpha, beta) here",
    "bernoulli_logit": "Stan's bernoulli_logit(eta) is Bernoulli(logits=eta) here",
    "binomial_logit": "Stan's binomial_logit(n, eta) is Binomial(n, logits=eta) here",
    "categorical_logit": "Stan's categorical_logit(eta) is Categorical(logits=eta) here",
    "poisson_log": "Stan's poisson_log(eta) is Poisson(exp(eta)) here",
    "neg_binomial_2": "Stan's neg_binomial_2(mu, phi) is GammaPoisson(phi, phi / mu) here",
    "NegBinomial2": "Stan's neg_binomial_2(mu, phi) is GammaPoisson(phi, phi / mu) here",
    "ordered_logistic": "Stan's ordered_logistic(eta, c) is OrderedLogistic(eta, c) here",
    "multi_normal_cholesky": "Stan's multi_normal_cholesky(mu, L) is "
                             "MultivariateNormal(mu, scale_tril=L) here",
    "lkj_corr_cholesky": "Stan's lkj_corr_cholesky(eta) is LKJCholesky(K, eta) here",
}


def _literal(e: ast.Expr) -> float | None:
    """The number a literal (or a negated literal) bound stands for; None otherwise."""
    if isinstance(e, ast.Number):
        return float(e.value)
    if isinstance(e, ast.Neg) and isinstance(e.operand, ast.Number):
        return -float(e.operand.value)
    return None


# the largest size a torch tensor's dimension can take (an int64)
_MAX_SIZE = 2**63 - 1
# Pyro's methods of a distribution -> (what BDL does instead, the fix), for one located
# error where ``Normal(mu, 1).to_event(1)`` was two
_PYRO_METHODS = {
    "to_event": ("infers a distribution's event dims from the shapes of the value and "
                 "its parameters", "drop it: ~ {d}"),
    "independent": ("infers a distribution's event dims from the shapes of the value and "
                    "its parameters", "drop it: ~ {d}"),
    "expand": ("takes a latent's shape from its declaration or its parameters",
               "declare the shape instead: {name}: real[K] ~ {d}"),
    "expand_by": ("takes a latent's shape from its declaration or its parameters",
                  "declare the shape instead: {name}: real[K] ~ {d}"),
    "mask": ("has no masks", "write the masked density as a factor: factor(sum(where({m}, "
             "log_prob({d}, {name}), 0.0)))"),
}
# builtins whose tensor arguments broadcast against each other element by element
_ELEMENTWISE = ("where", "clamp", "pow")
# distributions whose support is their arguments' (a mixture of Poissons, Delta(3.0)):
# discrete or not by what they are given, so an int declaration is not refused
_SUPPORT_FROM_ARGUMENTS = ("MixtureSameFamily", "Delta")
# builtins whose dim defaults to every dim (None); the others default to the last (-1)
# builtins whose shape rule reads their arguments as matrices/vectors of their own
# builtins whose argument is a matrix (each element's own, inside plates)
_MATRIX_ARGS = {"transpose": "x", "tril": "m", "cholesky": "a", "logdet": "a", "solve": "a"}
_ROWS_FIRST = frozenset({"outer", "diag_pre_multiply", "diag_post_multiply", "quad_form_diag"})
# reductions whose dim= may run along a plate dim of data read whole (_declared_dim)
_ALONG_PLATE = frozenset({"sum", "mean", "max", "min", "prod", "logsumexp", "sd", "variance"})
_DEFAULT_DIMS = {"sum": None, "mean": None, "max": None, "min": None, "prod": None,
                 "sd": None, "variance": None}
# builtins that map each element on its own: a value's layout does not change them
_POINTWISE = frozenset(n for n in builtins.names() if (builtins.lookup(n).doc or "")
                     .startswith("elementwise")) | {*_ELEMENTWISE, "normal_cdf"}


def _dist_text(e: ast.Expr) -> str:
    """A distribution call as a short hint: 'Normal(...)'."""
    return f"{e.func_name}(...)" if isinstance(e, ast.Call) and e.func_name else "D"


def _source_text(e: ast.Expr) -> str:
    """A short index as written (a number, a name, ':'), or '...'."""
    if isinstance(e, ast.Number):
        return str(e.value)
    if isinstance(e, ast.Name):
        return e.id
    if _whole_slice(e):
        return ":"
    return "..."


def _quote(e: ast.Expr) -> str:
    """A short name for an operand in a message: 'm' for a name, else 'this operand'."""
    return f"'{e.id}'" if isinstance(e, ast.Name) else "one operand"


def _param_rank(constraint: str | None) -> int | None:
    """Dimensions a distribution parameter has per batch element, from its constraint's
    text: 0 for a number (a loc, a scale, a probability), 1 for a vector (a simplex, an
    event of a vector distribution), 2 for a matrix; None when unknown."""
    if constraint is None or constraint.startswith("Dependent"):
        return None
    if constraint.startswith("IndependentConstraint("):
        return int(constraint.rsplit(",", 1)[1].strip(" )"))
    if constraint in ("Simplex()", "OrderedVector()"):
        return 1
    if constraint in ("PositiveDefinite()", "LowerCholesky()", "LowerTriangular()",
                      "CorrCholesky()"):
        return 2
    if constraint.startswith(("Real", "GreaterThan", "Interval", "HalfOpenInterval",
                              "IntegerGreaterThan", "IntegerInterval", "Integer", "Boolean",
                              "LessThan", "Positive", "Nonnegative")):
        return 0
    return None


# other libraries' argument names (Stan's, scipy's) for the parameters Pyro names so
_ARG_SPELLINGS = {"mu": "loc", "sigma": "scale", "sd": "scale", "lambda": "rate",
                  "nu": "df", "theta": "probs", "p": "probs"}

# supports of the priors whose draws are Cholesky factors, not covariance matrices
_CHOLESKY_SUPPORTS = ("CorrCholesky()", "LowerCholesky()")


def _constraint_bounds(constraint: str | None) -> tuple | None:
    """``(lo, lo_open, hi, hi_open)`` of a scalar parameter's constraint as the signature
    table writes it (``GreaterThan(lower_bound=0.0)``, ``Interval(...)``); None for any
    other set (Real, a simplex, a matrix)."""
    if constraint is None:
        return None
    m = re.fullmatch(r"IndependentConstraint\((.*), \d+\)", constraint)
    if m:
        constraint = m.group(1)
    m = re.fullmatch(r"(\w+)\((.*)\)", constraint)
    if m is None:
        return None
    args = dict(re.findall(r"(\w+)=([-\d.e]+)", m.group(2)))
    lo = float(args["lower_bound"]) if "lower_bound" in args else None
    hi = float(args["upper_bound"]) if "upper_bound" in args else None
    return {"GreaterThan": (lo, True, None, False),
            "GreaterThanEq": (lo, False, None, False),
            "LessThan": (None, False, hi, True),
            "Interval": (lo, False, hi, False),
            "HalfOpenInterval": (lo, False, hi, True)}.get(m.group(1))


def _literal_number(node) -> float | None:
    """The value of a numeric literal, negated ones included (``-2.5``); None for any
    other expression."""
    if isinstance(node, ast.Number):
        return node.value
    if isinstance(node, ast.Neg) and isinstance(node.operand, ast.Number):
        return -node.operand.value
    return None


def _whole_slice(item: ast.Expr | None) -> bool:
    """An index item that keeps a dim as it is (``:``)."""
    return isinstance(item, ast.Slice) and item.start is None and item.stop is None


def _sized_like_plates(sym: Symbol) -> bool:
    """Whether a value is read one element per plate by its leading sizes: data,
    transformed data, and latents or deterministics defined outside every plate (a GP's
    ``f: real[N]`` read in ``plate N``). Values defined inside plates carry their plates,
    transformed ones too: ``s = x[t]`` of an outer ``plate t`` is laid out there already
    (``[T, 1]``), one value per row of an inner plate."""
    return sym.role == "data" or (
        sym.role in ("latent", "deterministic", "transformed") and not sym.plates)


def _laid_out(shape, plates) -> bool:
    """Whether ``shape`` is one value per element of ``plates`` (the plates around a
    value's definition, outermost first) in Pyro's layout there: each plate's size at its
    dim, 1 at the dims between them (``[N, 1]`` for plate N around plate M)."""
    if shape is None or not plates:
        return False
    width = -plates[0].dim
    sized = {width + p.dim: p.size for p in plates}
    return len(shape) >= width and all(
        sizes.compare(shape[k], sized.get(k, sizes.const(1))) == sizes.Relation.EQUAL
        for k in range(width))


def _runtime_form(shape, plates) -> tuple | None:
    """``shape``, whose leading dimensions are one per plate of ``plates`` (enclosing
    plates, outermost first), as Pyro lays it out inside them: each plate's size at its
    dim (counted from the right of the plate part), 1 at the dims of plates it does not
    vary along, then its per-element dimensions. ``[N]`` in plates N (dim -2) and M
    (dim -1) is ``[N, 1]``; in a single plate (dim -1) nothing changes."""
    if shape is None or not plates:
        return shape
    width = -plates[0].dim
    out = [sizes.const(1)] * width
    for p, d in zip(plates, shape, strict=False):
        out[width + p.dim] = d
    return tuple(out) + tuple(shape[len(plates):])


# how a distribution parameter's constraint reads in a message (Pyro's text -> words)
_CONSTRAINT_WORDS = {
    "GreaterThan(lower_bound=0.0)": "positive",
    "IndependentConstraint(GreaterThan(lower_bound=0.0), 1)": "positive",
    "GreaterThanEq(lower_bound=0.0)": "non-negative",
    "GreaterThanEq(lower_bound=0)": "non-negative",
    "Interval(lower_bound=0.0, upper_bound=1.0)": "in [0, 1]",
    "Simplex()": "a simplex (non-negative, summing to 1)",
    "PositiveDefinite()": "positive definite",
    "LowerCholesky()": "a lower Cholesky factor",
}


def _names_in(e: ast.Expr) -> list[str]:
    if isinstance(e, ast.Name):
        return [e.id]
    if isinstance(e, ast.BinOp):
        return _names_in(e.left) + _names_in(e.right)
    return []


def _depth_below(body) -> int:
    depth = 0
    for s in body:
        if isinstance(s, ast.Plate):
            depth = max(depth, 1 + _depth_below(s.body))
    return depth


def _walk_names(e: ast.Expr):
    if isinstance(e, ast.Name):
        yield e.id
    elif isinstance(e, ast.Call):
        if not isinstance(e.func, ast.Name):
            yield from _walk_names(e.func)
        else:
            yield e.func.id
        for a in e.args:
            yield from _walk_names(a)
        for k in e.kwargs:
            yield from _walk_names(k.value)
    elif isinstance(e, ast.BinOp):
        yield from _walk_names(e.left)
        yield from _walk_names(e.right)
    elif isinstance(e, (ast.Neg,)):
        yield from _walk_names(e.operand)
    elif isinstance(e, ast.Index):
        yield from _walk_names(e.value)
        for i in e.indices:
            yield from _walk_names(i)
    elif isinstance(e, ast.Slice):
        for p in (e.start, e.stop):
            if p is not None:
                yield from _walk_names(p)
    elif isinstance(e, ast.ListLit):
        for i in e.items:
            yield from _walk_names(i)
    elif isinstance(e, ast.Attr):
        yield from _walk_names(e.value)
    elif isinstance(e, ast.FunctionLit):
        yield from (n for n in _walk_names(e.body) if n not in e.params)


def _function_args() -> str:
    """The arguments that take function literals, from the registry: 'drift= of ...'."""
    by_builtin = {}
    for name in builtins.names():
        b = builtins.lookup(name)
        if b.functions:
            by_builtin[name] = ", ".join(f"{k}=" for k in b.functions)
    return "; ".join(f"{ks} of {n}" for n, ks in by_builtin.items()) or "none"


def _is_random(e: ast.Expr, symbols: dict[str, Symbol]) -> bool:
    return any(symbols[n].random for n in _walk_names(e) if n in symbols)


def _dist_shape(sig, bound, checker, held: list | None = None) -> tuple | None:
    """Batch + event shape of a distribution from its arguments' shapes; the arguments'
    size issues go to ``held`` where given (reported later), else are reported."""
    shapes = {k: t.shape for k, (_, t) in bound.items()}
    if sig.name in ("MultivariateNormal", "MultivariateStudentT", "LowRankMultivariateNormal"):
        return shapes.get("loc")
    if sig.name in ("Dirichlet",):
        return shapes.get("concentration")
    if sig.name in ("Categorical", "OrderedLogistic"):
        key = "probs" if "probs" in shapes else ("logits" if "logits" in shapes else "cutpoints")
        s = shapes.get(key)
        if sig.name == "OrderedLogistic":
            return shapes.get("predictor")
        return None if s is None or not s else tuple(s[:-1])
    if sig.name in ("OneHotCategorical", "Multinomial"):
        return shapes.get("probs", shapes.get("logits"))
    if sig.name in ("LKJCholesky", "LKJ"):
        node, t = bound.get("dim", (None, UNKNOWN))
        return None if t.dim is None else (t.dim, t.dim)
    if sig.name == "MixtureSameFamily":
        comp = bound.get("component_distribution")
        if comp is None or comp[1].shape is None or comp[1].event is None:
            return None
        s, ev = comp[1].shape, comp[1].event
        batch = s[: len(s) - ev]
        return None if not batch else tuple(batch[:-1]) + tuple(s[len(s) - ev:])
    # a value [D] of concentration [D]; a simplex [K] of probs [K] (the temperature one
    # number per draw); V - 1 edges [a, b] from V (V - 1) / 2 logits, V read off written
    # sizes (a size V's: checker._spanning_tree_value); a sample row of samples [N, ...]
    if sig.name == "ProjectedNormal":
        return shapes.get("concentration")
    if sig.name.startswith("RelaxedOneHotCategorical"):
        return shapes.get("probs", shapes.get("logits"))
    if sig.name == "SpanningTree":
        e = shapes.get("edge_logits")
        v = _tree_nodes(e[-1]) if e and e[-1].is_Integer else None
        return None if v is None else (sizes.const(v - 1), sizes.const(2))
    if sig.name == "Empirical":
        rank = _event_rank(sig, bound)
        s = shapes.get("samples")
        return None if rank is None else tuple(s[: len(s) - rank - 1] + s[len(s) - rank:])
    if sig.event_rank != 0 and sig.name != "SineBivariateVonMises":
        return None
    out: tuple | None = ()
    for k, (_, t) in bound.items():
        if t.kind not in TENSOR_KINDS:
            continue
        out, issues = sizes.broadcast(out, t.shape)
        if held is not None:
            held.append((issues, bound[k][0].span, f"the arguments of {sig.name}"))
        else:
            checker._report(issues, bound[k][0].span, f"the arguments of {sig.name}")
    if sig.name == "SineBivariateVonMises" and out is not None:
        return out + (sizes.const(2),)  # a pair of angles (phi, psi) per draw
    return out


def _tree_nodes(edges) -> int | None:
    """V of a tree on V nodes with ``edges`` = V (V - 1) / 2 pairs, None when no V has."""
    v = round((1 + (1 + 8 * int(edges.value)) ** 0.5) / 2)
    return v if v >= 2 and v * (v - 1) // 2 == edges.value else None


def _event_rank(sig, bound) -> int | None:
    """The table's event rank; an Empirical's is its samples' dims past its weights'
    (samples [N] of weights [N]: numbers; [N, D]: vectors), None when either is unknown."""
    if sig.name != "Empirical":
        return sig.event_rank
    s, w = (bound[k][1].shape if k in bound else None for k in ("samples", "log_weights"))
    return None if s is None or w is None or len(s) < len(w) else len(s) - len(w)


# Stan's container types, and how BDL writes them
_STAN_TYPES = {"vector": "real[N]", "row_vector": "real[N]", "matrix": "real[N, K]",
               "array": "real[N] (or int[N])"}
