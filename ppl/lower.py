"""Lowering: a checked model -> a small IR that backends turn into code.

The IR resolves what the AST leaves open: which names are data, sizes, latents or
networks; which distribution or runtime function a call means; which data a subsampled
plate indexes; which dimensions become event dimensions. Backends never look at the AST.
"""

from __future__ import annotations

import keyword
from dataclasses import dataclass, field

from . import builtins
from .check import signatures
from .check.checker import (
    _DEFAULT_DIMS,
    _POINTWISE,
    CheckedModel,
    _literal_number,
    _whole_slice,
)
from .syntax import ast
from .syntax.diagnostics import BdlError, Diagnostic

# Names a model's own names must not take in the generated Python: keywords, the
# module's imports, and the builtins generated code calls.
RESERVED = frozenset(keyword.kwlist) | {"dist", "torch", "pyro", "rt", "constraints", "int",
                                        "min"}


# ---- IR expressions -----------------------------------------------------------------
@dataclass
class Lit:
    value: object
    text: str | None = None  # a number as the source spelt it (``1e6``, not 1000000.0)


@dataclass
class Var:
    name: str


@dataclass
class Sym:
    """A bare word used as a value, e.g. an activation name: emitted as a string."""

    name: str


@dataclass
class Bin:
    op: str
    left: object
    right: object


@dataclass
class Neg:
    operand: object


@dataclass
class Call:
    target: str  # dotted name the backend resolves: dist.Normal, torch.exp, rt.gram, f
    args: list
    kwargs: list[tuple[str, object]]


@dataclass
class Idx:
    value: object
    items: list


@dataclass
class Sl:
    start: object | None
    stop: object | None


@dataclass
class ListE:
    items: list


@dataclass
class Fn:
    """A function literal: ``lambda x, t: body`` in Python."""

    params: list[str]
    body: object


# ---- IR statements --------------------------------------------------------------------
@dataclass
class ArgSpec:
    name: str
    base: str
    dims: list[str]
    optional: bool
    line: int
    col: int
    lower: float | None = None
    upper: float | None = None


@dataclass
class Let:
    name: str
    value: object
    kind: str  # transformed | deterministic | value
    var: str = ""


@dataclass
class SampleOp:
    name: str
    dist: object
    obs: str | None
    event: list | None       # dims to expand and make an event (None: leave as is)
    event_rank: int | None   # the distribution's own event rank when known
    in_plate: bool
    constraint: object | None
    cast_obs: bool = False
    var: str = ""  # the Python variable when it cannot be ``name`` (``lambda`` -> ``lambda_``)
    obs_align: tuple | None = None  # Pyro dims of the observed data's plate dimensions
    # the model has labels that Pyro sums out (ppl.infer.discrete): a vector site outside
    # plates is drawn in plates over its dims, not as one event (see codegen)
    enum_plates: bool = False
    # a continuous latent reading a label summed out outside plates (rt.LabelFree)
    label_free: bool = False
    # a latent label (finite support): summed out in the fit, drawn afterwards
    summed_out: bool = False
    # a guide's draw with a declared type: mapped into the type's set (rt.transformed)
    into: bool = False
    # its support follows latents or params: drawn on the real line and mapped with the
    # current bounds, Stan's rule (rt.sample_in_support)
    in_support: bool = False


@dataclass
class ParamOp:
    name: str
    init: object
    shape: list
    constraint: object | None
    var: str = ""


@dataclass
class NetworkOp:
    name: str
    ctor: Call
    var: str = ""


@dataclass
class ConstructOp:
    """``name ~ construct(...)``: ``name = target("name", [name,] args...)``."""

    name: str
    call: Call
    on_existing: bool  # the construct takes the current value of ``name`` (a network)
    var: str = ""


@dataclass
class Attr:
    value: object
    name: str


@dataclass
class FactorOp:
    name: str
    value: object
    # the trailing dims of a term outside plates, summed into one log-density term as
    # Stan's target += sums a vector (pyro.factor outside plates takes a scalar)
    summed: int = 0
    # in a model whose labels Pyro sums out: the sizes of a term outside plates, drawn in
    # plates of its own (``factor_5.dim0``, ...) as a vector site is (:func:`enum_dims`),
    # so that a label's dims sit left of the term's (summing would mix them up)
    enum_sizes: list | None = None


@dataclass
class PlateOp:
    name: str
    size: object
    subsample: object | None
    dim: int
    index: str | None
    # (data name, local name, axis, whether the data may be None: left out of a
    # simulation or optional, so its ``~`` draws it)
    subsampled: list[tuple[str, str, int, bool]]
    body: list
    align_index: bool = False  # reshape the index to the plate's dim (rt.plate_aligned)


@dataclass
class SizeCheckSpec:
    left: str
    right: str
    line: int
    col: int
    what: str
    at_least: bool = False


@dataclass
class IndexCheckSpec:
    name: str
    size: str
    line: int
    col: int
    what: str
    offset: int


@dataclass
class SourceRef:
    """Where a statement sits in the BDL source, and the spans of its call's arguments
    (by parameter name), so a run-time error can be pointed at what the user wrote."""

    span: object
    args: dict = field(default_factory=dict)


@dataclass
class IRModel:
    name: str
    filename: str
    args: list[ArgSpec]
    sizes: list[str]
    transformed: list[Let]
    body: list
    checks: list[SizeCheckSpec]
    infer: dict | None
    latents: list[str] = field(default_factory=list)
    deterministics: list[str] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    observed: list[str] = field(default_factory=list)
    # id(op) -> SourceRef for every statement op (body and transformed data)
    refs: dict = field(default_factory=dict)
    # names the generated code reads from outside ppl.runtime, each imported by codegen
    # (``Vindex``: an index into a value of a label, read from its own dims)
    imports: set[str] = field(default_factory=set)
    # int data read as an index: binding checks its values are in [0, size)
    index_checks: list[IndexCheckSpec] = field(default_factory=list)
    line: int = 0  # of the ``model`` header in the BDL source
    # the model's guide block (docs/language.md, "Guides"), lowered as a model of its own
    # whose top-level values stay in its body and whose computed values are plain locals
    guide: IRModel | None = None


def lower(cm: CheckedModel, filename: str = "<string>") -> IRModel:
    ir = _Lowerer(cm, filename).run()
    if cm.guide is not None:
        ir.guide = _Lowerer(cm.guide, filename, guide=True).run()
        _align_guide(ir)
    return ir


def enum_dims(op: SampleOp) -> list:
    """The dims of a vector site outside plates to draw in plates (none: draw it as one
    event). In a model whose labels Pyro sums out, a label enumerated at dim -1 - P
    (P the plate nesting) meets the per-element values of a vector made one event by
    ``.to_event``, whose dims are counted left of the batch (``mu + 2 * z`` is [2, 1]
    against [N]); in plates they are batch dims and the label broadcasts over them."""
    if not op.enum_plates or op.in_plate or not op.event or op.event_rank is None \
            or op.constraint is not None:
        return []
    return op.event[: len(op.event) - op.event_rank]


def _walk_ops(body):
    for op in body:
        yield op
        if isinstance(op, PlateOp):
            yield from _walk_ops(op.body)


def _align_guide(ir: IRModel) -> None:
    """A guide draws each latent as its model does: in the model's ``name.dimK`` plates
    where the model draws it so (:func:`enum_dims`), as one event where it does not (Pyro
    requires a site's event dims to agree; the checker refuses a guide distribution whose
    event rank would make them differ, ppl.check.guides); a draw with a declared type is
    mapped into its set. A latent the model draws on the real line (``in_support``) is
    drawn there by the guide too, through its own distribution's support."""
    drawn = [op for op in _walk_ops(ir.body) if isinstance(op, SampleOp)]
    plated = {op.name for op in drawn if enum_dims(op)}
    real_line = {op.name for op in drawn if op.in_support}
    for op in _walk_ops(ir.guide.body):
        if isinstance(op, SampleOp):
            op.enum_plates = op.name in plated
            op.into = op.constraint is not None
            op.in_support = op.name in real_line


class _Lowerer:
    def __init__(self, cm: CheckedModel, filename: str, guide: bool = False):
        self.cm = cm
        self.filename = filename
        self.guide = guide
        self.rename: dict[str, str] = {}
        # plate index variables in scope, and for each subsampled local the name it
        # subsamples, the plate index and the axis: x[i] in `plate i in N batch B` is the
        # original x indexed by the subsample indices i (not the subsample indexed again)
        self.indices: set[str] = set()
        self.sub_origin: dict[str, tuple[str, str, int]] = {}
        # where the expression being lowered reads its values across elements: None, read
        # element by element (a cut value lines up with its plate's minibatch); True, read
        # as a whole (sum(f), sort(f), the argument of a matrix product); or the dims,
        # counted from the right, that it reads across (mean(X, 0), (f + x)[1:3]) -- there
        # a value cut along one of them is read uncut, with its full-range positions
        self.across: None | bool | frozenset = None
        # (plate index, dim from the right) of each value read uncut, for a function that
        # keeps its argument's shape (cumsum(x)) to cut its result in turn
        self.read_uncut: list[tuple[str, int]] = []
        self.used: set[str] = set()  # names the lowered code reads
        # names the model's body computes (not the transformed data): a value of the data
        # alone that reads one (w2 = w[1] of w computed in a plate) is computed there too
        self.in_body: set[str] = set()
        self.locals: dict[str, str] = {}  # function literal parameters -> Python names
        self.taken = set(cm.symbols) | set(RESERVED)
        self.ir = IRModel(cm.name, filename, [], list(cm.sizes), [], [], [], None,
                          line=cm.model.span.line)
        self.enumerates = any(
            isinstance(s, ast.Sample) and getattr(cm.sites.get(id(s)), "role", "") == "latent"
            and cm.ty(s.dist).enumerable for s in ast.walk(cm.model.body))
        # latents drawn from Bernoulli: 0.0 / 1.0, made integers where they index, and
        # values assigned from them (u = z, then nu[u])
        self.bernoulli = {
            s.name for s in ast.walk(cm.model.body)
            if isinstance(s, ast.Sample) and getattr(cm.sites.get(id(s)), "role", "") == "latent"
            and cm.ty(s.dist).dist == "Bernoulli"}
        for s in ast.walk(cm.model.body):  # in order: a name is assigned before it is read
            if isinstance(s, ast.Assign) and any(n in self.bernoulli
                                                 for n in ast.names_read(s.value)):
                self.bernoulli.add(s.name)
        bad = []
        for name, sym in cm.symbols.items():
            if name not in RESERVED:
                continue
            if sym.role in ("data", "size"):
                # data keys are the generated function's keyword arguments
                bad.append(Diagnostic(
                    f"'{name}' cannot name a data argument or size: it is reserved in the "
                    "generated Python", sym.span, notes=[f"rename it, e.g. '{name}_'"]))
            else:
                self.rename[name] = self._fresh(name + "_")
        if bad:
            raise BdlError(bad, filename)

    def _var(self, name: str) -> str:
        """The Python variable of a model name ('' when it is the name itself)."""
        v = self.rename.get(name, name)
        return "" if v == name else v

    def run(self) -> IRModel:
        for a in self.cm.model.args:
            self.ir.args.append(self._arg(a))
        self.ir.body = self._stmts(self.cm.model.body, top=not self.guide)
        self.ir.checks = [SizeCheckSpec(d.left, d.right, d.span.line, d.span.col, d.what,
                                        d.at_least)
                          for d in self.cm.deferred]
        self.ir.index_checks = [IndexCheckSpec(d.name, d.size, d.span.line, d.span.col, d.what,
                                               d.offset) for d in self.cm.data_indices]
        if self.cm.infer is not None:
            self.ir.infer = {"method": self.cm.infer.method, **self.cm.infer.options}
        return self.ir

    def _arg(self, a: ast.Arg) -> ArgSpec:
        sym = self.cm.symbols[a.name]
        dims = [_dim_text(d) for d in a.type.dims]
        if dims and sym.ty.shape is not None and len(sym.ty.shape) == len(dims) + 1:
            dims.append(dims[-1])  # cov_matrix[K] and the other matrix types hold [K, K]
        lower = upper = None
        for b in a.type.bounds:
            value = None
            if isinstance(b.value, ast.Number):
                value = b.value.value
            elif isinstance(b.value, ast.Name) and getattr(
                    self.cm.symbols.get(b.value.id), "role", None) in ("data", "size"):
                value = b.value.id  # another argument's name: binding compares elementwise
            if value is not None:
                if b.name == "lower":
                    lower = value
                else:
                    upper = value
        base = a.type.base if a.type.base in ("real", "int", "bool") else "real"
        return ArgSpec(a.name, base if sym.role != "size" else "int", dims, a.optional,
                       a.span.line, a.span.col, lower, upper)

    def _fresh(self, base: str) -> str:
        name = base
        while name in self.taken:
            name += "_"
        self.taken.add(name)
        return name

    # ---- statements ----
    def _stmts(self, body, top: bool = False) -> list:
        out = []
        for s in body:
            before = len(out), len(self.ir.transformed)
            self._stmt(s, out, top)
            ref = _source_ref(s, self.cm.symbols)
            for op in out[before[0]:] + self.ir.transformed[before[1]:]:
                self.ir.refs[id(op)] = ref
        return out

    def _stmt(self, s, out: list, top: bool) -> None:
        """Lower one statement, appending its op to ``out`` (or to the transformed data)."""
        if id(s) in getattr(self.cm.model, "given", ()):
            return  # the model's transformed data, a guide's arguments (ppl.check.guides)
        info = self.cm.sites.get(id(s))
        if isinstance(s, ast.Sample) and info.role == "construct":
            out.append(self._construct(s))
        elif isinstance(s, ast.Sample):
            out.append(self._sample(s, info))
            if info.role == "latent":
                self.ir.latents.append(s.name)
            else:
                self.ir.observed.append(s.name)
        elif isinstance(s, ast.Assign):
            value = self._expr(s.value)
            if info.role == "network":
                out.append(NetworkOp(s.name, value, self._var(s.name)))
            elif info.role == "transformed" and top \
                    and not self.in_body.intersection(ast.names_read(s.value)):
                self.ir.transformed.append(Let(s.name, value, "transformed",
                                               self._var(s.name)))
            else:
                # a guide records no sites but its draws: its computed values are locals
                kind = "value" if self.guide and info.role == "deterministic" else info.role
                let = Let(s.name, value, kind, self._var(s.name))
                out.append(let)
                if info.role == "deterministic":
                    self.ir.deterministics.append(s.name)
                elif info.role == "value" and top and not self.cm.symbols[s.name].random:
                    # a kernel of fixed settings may be read by transformed data, which
                    # are computed in their own function before the model runs
                    self.ir.transformed.append(let)
                if not self.ir.transformed or self.ir.transformed[-1] is not let:
                    self.in_body.add(s.name)
        elif isinstance(s, ast.Param):
            sym = self.cm.symbols[s.name]
            shape = [_dim_code(d) for d in (sym.ty.shape or ())]
            out.append(ParamOp(s.name, self._expr(s.init), shape,
                               self._constraint(info.constraint), self._var(s.name)))
            self.ir.params.append(s.name)
        elif isinstance(s, ast.Factor):
            # its dims past the plates' (its leading dims of the plates' sizes, in order)
            # are summed: log_prob(Normal(mu, 1), Y) of Y: real[N, K] in plate N is one
            # term per element, Pyro's factor shape [N] (was 'invalid log_prob shape')
            shape = self.cm.ty(s.value).shape or ()
            sizes = {p.name: p.size for p in self.cm.plates.values()}
            lead = 0
            for plate in self.cm.sites[id(s)].plates:
                if lead < len(shape) and shape[lead] == sizes.get(plate):
                    lead += 1
            own = self.cm.sites[id(s)].factor_own
            if own is not None:  # Pyro's layout: a of an outer plate is [I, 1], none own
                lead = len(shape) - own
            op = FactorOp(f"factor_{s.span.line}", self._expr(s.value), len(shape) - lead)
            if self.enumerates and op.summed and not self.cm.sites[id(s)].plates:
                op.enum_sizes, op.summed = [_dim_code(d) for d in shape], 0
            out.append(op)
        elif isinstance(s, ast.Plate):
            out.append(self._plate(s))
            for name, dims, tail in self.cm.spread.get(id(s), ()):
                # w = u in plate n, read after it: one copy per element (Checked.spread)
                var = self._var(name)
                out.append(Let(name, Call("rt.plate_spread", [
                    Var(var or name), ListE([_dim_code(d) for d in dims]), Lit(tail)], []),
                    "value", var))

    def _plate(self, s: ast.Plate) -> PlateOp:
        info = self.cm.plates[id(s)]
        saved = dict(self.rename)
        saved_indices = set(self.indices)
        size = self._expr(s.size)
        batch = self._expr(s.batch) if s.batch is not None else None
        index = s.index
        if index is not None and index in RESERVED:
            self.rename[index] = self._fresh(index + "_")
            index = self.rename[index]
        if info.subsample and index is None:
            index = self._fresh(f"idx_{info.name}")
        subsampled = []
        for data, axis in info.subsampled:
            local = self._fresh(f"{data}_{info.name}")
            origin = self.rename.get(data, data)
            subsampled.append((origin, local, self._laid_out_axis(s, data, axis),
                               data in self.cm.observed_only))
            self.rename[data] = local
            # the declared axis: reads compare it with their own dims (w1[2, n] reads w1
            # uncut along its N, dim 1 of [K, N], wherever the cut was in the layout)
            self.sub_origin[local] = (origin, s.index or index, axis)
        if s.index is not None:
            self.indices.add(s.index)
        body = self._stmts(s.body)
        subsampled = [t for t in subsampled if t[1] in self.used]  # no unused locals
        self.used.update(t[0] for t in subsampled)  # an outer plate's subsample, read here
        self.rename = saved
        self.indices = saved_indices
        return PlateOp(info.name, size, batch, info.dim, index, subsampled, body,
                       align_index=s.index is not None and info.dim != -1)

    def _laid_out_axis(self, s: ast.Plate, data: str, axis: int) -> int:
        """The dim of ``data``'s value that batch plate ``s`` cuts at ``axis`` of its
        declared shape. A value of closed nested plates is still laid out with their unit
        dims ([K, 1, N] for w of plate k at dim -2, its own N): its reads put it back
        (``rt.plate_closed``, ``CheckedModel.unaligned``), but the cut comes first, so
        its axis skips those unit dims (w's N is dim 2, not the unit dim 1: torch's
        'INDICES element is out of DATA bounds')."""
        layout = next((self.cm.unaligned[id(n)] for n in ast.walk(s)
                       if isinstance(n, ast.Name) and n.id == data
                       and id(n) in self.cm.unaligned), None)
        shape = self.cm.symbols[data].ty.shape if data in self.cm.symbols else None
        if layout is None or shape is None:
            return axis
        dims, tail = layout
        width = -min(dims)
        kept = sorted(width + d for d in dims)  # the plates' dims among the laid-out width
        rank = len(shape)
        axis = axis + rank if axis < 0 else axis
        lead = rank - tail - len(kept)
        if axis < lead:
            return axis
        if axis < lead + len(kept):
            return lead + kept[axis - lead]
        return axis + width - len(kept)

    def _construct(self, s: ast.Sample) -> ConstructOp:
        b = builtins.lookup(s.dist.func_name)
        call = self._call(s.dist)
        context = b.context(s, self.cm.model) if b.context is not None else None
        if isinstance(context, builtins.ContextArg):
            fields = [(k, self._expr(e)) for k, e in context.exprs.items()]
            fields += [(k, Lit(v)) for k, v in context.consts.items()]
            call.kwargs.append((context.name, Call(context.target, [], fields)))
        if b.tilde == "new":
            self.ir.latents.append(s.name)
        return ConstructOp(s.name, call, b.tilde == "network", self._var(s.name))

    def _sample(self, s: ast.Sample, info) -> SampleOp:
        d = self._expr(s.dist)
        dty = self.cm.ty(s.dist)
        event = None
        if info.event_dims is not None and len(info.event_dims) > 0:
            event = [_dim_code(x) for x in info.event_dims]
        elif info.role == "latent" and not info.plates and dty.shape is not None \
                and dty.event is not None and len(dty.shape) > dty.event:
            # an undeclared latent outside plates: its whole batch is one event
            event = [_dim_code(x) for x in dty.shape]
        obs = self.rename.get(s.name, s.name) if info.role == "observed" else None
        if obs is not None:
            self.used.add(obs)
        return SampleOp(s.name, d, obs, event, dty.event, bool(info.plates),
                        self._constraint(info.constraint), info.obs_cast, self._var(s.name),
                        info.obs_align, self.enumerates, info.label_free,
                        info.role == "latent" and bool(dty.enumerable),
                        in_support=info.in_support)

    def _constraint(self, c):
        if c is None:
            return None
        if isinstance(c, str):
            return Var(c)
        kind, *bounds = c
        return Call(f"constraints.{kind}", [self._expr(b) for b in bounds], [])

    # ---- expressions ----
    def _expr(self, e: ast.Expr):
        if self.cm.rows_read.get(id(e)) is True and self.across is not True:
            return self._within(True, e)  # v of x2[i, :] * v: pairs with the row's own dim
        pad = self.cm.pads.get(id(e))
        saved = self.across
        if pad is not None and isinstance(saved, frozenset):
            # dims read across, from the right of the widened value: its own dims stay,
            # the unit dims inserted are none of its, the plate dims left of them move
            # by their number (x in logsumexp(A[0:2, 0] / (1.5 + tanh(x)), dim=0) in plate
            # n batch 2 is [N, 1]: its dim -1 is no dim of x, which stays cut)
            tail, units = pad
            self.across = frozenset(d if d >= -tail else d + units for d in saved
                                    if not -tail - units <= d < -tail)
        recorded = len(self.read_uncut)
        try:
            out = self._expr_inner(e)
        finally:
            self.across = saved
        if pad is not None:
            # the dims of values read uncut, from the right of the widened value: the
            # plate dims left of the unit dims move by their number (x in cumsum(x *
            # A[0:2, 0], dim=-2) in plate n batch 2, [N] widened to [N, 1]: its plate dim
            # -1 is the widened value's -2, where cumsum's result is cut again)
            tail, units = pad
            self.read_uncut[recorded:] = [(index, d if d >= -tail else d - units)
                                          for index, d in self.read_uncut[recorded:]]
        moved = self.cm.label_aligned.get(id(e))
        if moved is not None:  # computed from a label: its own dims onto plate dims
            out = Call("rt.label_aligned", [out, Lit(moved[0]), Lit(moved[1])], [])
        if pad is not None:  # one value per plate element, widened to the site's elements
            return Call("rt.per_element", [out, Lit(pad[0]), Lit(pad[1])], [])
        return out

    def _index_item(self, i: ast.Expr):
        """An index; one that reads a Bernoulli latent (drawn as 0.0 / 1.0), or a where of ints,
        as integers."""
        out = self._expr(i)
        if isinstance(i, ast.Call) and i.func_name == "where" and self.cm.ty(i).kind == "int":
            # th[where(k >= 0, k, 0)]: its literal is a tensor of the default dtype, which
            # torch.where promotes the int branch to
            return Call("rt.as_index", [out], [])
        if isinstance(i, ast.Slice) or not any(n in self.bernoulli for n in ast.names_read(i)):
            return out
        return Call("rt.as_index", [out], [])

    def _expr_inner(self, e: ast.Expr):
        if isinstance(e, ast.Number) and id(e) in self.cm.label_dims:
            return Lit(e.value - self.cm.label_dims[id(e)])  # dim=0 of w = mu[z]: from the right
        if isinstance(e, ast.Number):
            return Lit(e.value, e.text)
        if isinstance(e, ast.Bool):
            return Lit(e.value)
        if isinstance(e, ast.String):
            return Lit(e.value)
        if isinstance(e, ast.Name):
            if e.id in self.locals:
                return Var(self.locals[e.id])
            if e.id in self.cm.symbols or e.id in self.indices:
                name, recut = self._uncut(self.rename.get(e.id, e.id), self.across,
                                          len(self.cm.ty(e).shape or ()))
                self.used.add(name)
                var = Var(name)
                if id(e) in self.cm.unaligned:  # a value of plates that have closed
                    dims, tail = self.cm.unaligned[id(e)]
                    var = Call("rt.plate_closed", [var, Lit(dims), Lit(tail)], [])
                var = self._recut(var, recut)
                if id(e) in self.cm.aligned:  # data of outer plates, at their Pyro dims
                    return Call("rt.plate_aligned", [var, Lit(self.cm.aligned[id(e)])], [])
                return var
            return Sym(e.id)
        if isinstance(e, ast.Neg):
            return Neg(self._expr(e.operand))
        if isinstance(e, ast.BinOp) and id(e) in self.cm.label_matmul:  # A @ mu[z]
            return Call("rt.label_matmul", [self._expr(e.left), self._expr(e.right),
                                            *map(Lit, self.cm.label_matmul[id(e)])], [])
        if isinstance(e, ast.BinOp) and e.op == "@":
            # X @ w reads across X's last dim (its rows are its own) and all of w
            left = frozenset({-1}) if len(self.cm.ty(e.left).shape or ()) > 1 else True
            return Bin(e.op, self._within(self._join(self.across, left), e.left),
                       self._within(True, e.right))
        if isinstance(e, ast.BinOp):
            return Bin(e.op, self._expr(e.left), self._expr(e.right))
        if isinstance(e, ast.Index):
            # an index along a subsampled plate's dim holds full-range positions (the
            # plate's index, perm[n], n - 1, 0): it reads the value before any plate cut it
            # to its minibatch (x[i, j] under plates i and j batch reads x itself)
            # (a slice with bounds too: f[1:3] is two of f, not of its minibatch); an index
            # into an expression ((f + x)[i], sort(f)[i]) reads its values uncut alike
            rank = len(self.cm.ty(e.value).shape or ())
            # the dims of the indexed value that the result keeps (a slice's), and the dims
            # read across: the result's (as the value's), and those an index picks from
            # (w[d] of a value of the plate's elements indexes its own, last dims)
            first = max(0, rank - self.cm.label_vindex[id(e)]) \
                if id(e) in self.cm.label_vindex else 0
            at = {first + k: item for k, item in enumerate(e.indices)}
            kept = [k for k in range(rank) if k not in at or isinstance(at[k], ast.Slice)]
            across = self.across
            if across is not None and across is not True:
                across = frozenset(kept[len(kept) + d] - rank for d in across
                                   if -len(kept) <= d < 0)
            # a row read by a plate's index (x2[i, :] under plates i and j) is read whole
            # along the dims it keeps: they are the result's own dims, not an inner plate's
            rows = self.cm.rows_read.get(id(e))
            rows = rows if isinstance(rows, frozenset) else frozenset()
            across = self._join(across, frozenset(
                k - rank for k, item in at.items() if not _whole_slice(item)) | rows)
            whole = frozenset()  # dims the result keeps whole, the same for every element
            if self._whole_index(e):
                across, whole = True, frozenset(range(-rank, 0))
            elif isinstance(e.value, ast.Name) and id(e) not in self.cm.label_vindex \
                    and id(e) not in self.cm.self_indexed:
                # an explicit ':' reads the whole dim, as 0:M does (xm[:, m] under plates
                # N batch 2 and m is column m, N numbers: it read the minibatch's 2)
                across = self._join(across, frozenset(
                    k - rank for k, item in at.items() if _whole_slice(item)))
                # (a slice's dims, ':' or with bounds, are each element's own: read whole)
                whole = frozenset(k - rank for k, item in at.items()
                                  if isinstance(item, ast.Slice))
            outer, self.read_uncut = self.read_uncut, []
            local = self.rename.get(e.value.id) if isinstance(e.value, ast.Name) else None
            origin, recut = self._uncut(local, across, rank) if local is not None \
                else (local, [])
            if origin != local:
                self.used.add(origin)
                value = Var(origin)
                if id(e.value) in self.cm.unaligned:  # z[k] of a latent of closed plates
                    dims, tail = self.cm.unaligned[id(e.value)]
                    value = Call("rt.plate_closed", [value, Lit(dims), Lit(tail)], [])
                value = self._recut(value, recut)
            else:
                value = self._within(across, e.value)
            # a value read uncut along a dim the result keeps: that dim of the result
            # (not one read whole, each element's own: softmax(xNM[:, m]) under plates n
            # batch 2 and m is the whole column's, cut by n, torch's IndexError)
            self.read_uncut = outer + [(index, kept.index(d + rank) - len(kept))
                                       for index, d in self.read_uncut
                                       if d + rank in kept and d not in rows | whole]
            if id(e) in self.cm.self_indexed:
                # a[j] of a value drawn in plate j: a is one element per plate element
                drop, width = self.cm.self_indexed[id(e)]
                rest = [self._expr(i) for i in e.indices[drop:]]
                return Idx(value, [Sl(None, None)] * width + rest) if rest else value
            items = [self._index_item(i) for i in e.indices]
            if id(e) in self.cm.label_vindex:  # w[d] of w = mu[z]: from w's own dims
                rest = self.cm.label_vindex[id(e)] - len(items)
                if id(e) in self.cm.plain_index:
                    # w[0], w[1:], w[idx] of each element's w: torch's indexing, its dims
                    return Idx(value, [Var("...")] + items + [Sl(None, None)] * rest)
                self.ir.imports.add("Vindex")
                return Idx(Call("Vindex", [value], []),
                           [Var("...")] + items + [Sl(None, None)] * rest)
            if id(e) in self.cm.plate_first:  # A[:, m] in plate m: [M, K], not torch's [K, M]
                kept, dims = self.cm.plate_first[id(e)]
                return Call("torch.movedim", [Idx(value, items), Lit(tuple(range(kept))),
                                              Lit(tuple(range(dims, dims + kept)))], [])
            return Idx(value, items)
        if isinstance(e, ast.Slice):
            return Sl(self._expr(e.start) if e.start is not None else None,
                      self._expr(e.stop) if e.stop is not None else None)
        if isinstance(e, ast.Attr):
            return Attr(self._expr(e.value), e.attr)
        if isinstance(e, ast.ListLit):
            # a list literal stacks its items into one tensor (along a new first dim);
            # where a Python list is wanted (stack/cat, network sizes) _call unwraps it
            items = ListE([self._expr(i) for i in e.items])
            if id(e) in self.cm.stacks:  # a label's or per-element values: own dims last
                return Call("rt.stack", [items], [("dim", Lit(self.cm.stacks[id(e)]))])
            return Call("rt.stack", [items], [])
        if isinstance(e, ast.Call):
            return self._call(e)
        if isinstance(e, ast.FunctionLit):
            return self._function(e)
        raise NotImplementedError(type(e).__name__)

    def _function(self, e: ast.FunctionLit) -> Fn:
        """Parameters are locals of the body; one named like the module's imports or a
        Python keyword gets a trailing underscore, as model names do."""
        saved = dict(self.locals)
        params = []
        for p in e.params:
            py = p
            # a keyword, an import, or a generated name the body may read (``lambda_``)
            if p in RESERVED or (p in self.taken and p not in self.cm.symbols):
                py = p + "_"
                while py in self.taken or py in e.params:
                    py += "_"
            self.locals[p] = py
            params.append(py)
        body = self._expr(e.body)
        self.locals = saved
        return Fn(params, body)

    def _whole_index(self, e: ast.Index) -> bool:
        """Whether ``e`` indexes a name by items that are each one number, the same for
        every element (``x2[0]``, ``w1[0]`` of a closed plate's value, ``x2[0, 0:2]``): it
        names the whole value (docs "Only the bare name is read per element"), so the dims
        it keeps are read whole, never cut to a batch plate's minibatch. (``x2[0]`` of
        ``x2: real[K, N]`` under plates m and n batch 2 summed the minibatch's 2 entries
        of row 0, each scaled by N / B: on average B / N of the full density.) An item with
        one value per element (``n``, ``gid[n]``) has the plates' dims in its type."""
        if not isinstance(e.value, ast.Name) or id(e) in self.cm.label_vindex \
                or id(e) in self.cm.self_indexed or id(e) in self.cm.plate_first:
            return False
        for item in e.indices:
            bounds = (item.start, item.stop) if isinstance(item, ast.Slice) else (item,)
            if any(b is not None and self.cm.ty(b).shape != () for b in bounds):
                return False
        return True

    def _uncut(self, local: str, across, rank: int) -> tuple[str, list]:
        """The name to read for ``local``: the value before the plates that cut it to their
        minibatch along a dim read ``across`` (:attr:`across`), else ``local`` itself; and
        the cuts of plates inside those, along dims not read across, that the value read
        lost and :meth:`_recut` makes again (sum(xNM, dim=0) under plates n batch 2 and m
        batch 1 is over all N rows of the minibatch's column, paired with m: it read xNM
        before both cuts, [M] against m's 1, Pyro's 'Shape mismatch inside plate')."""
        out = cut = local
        skipped, recut = [], []
        while across is not None and cut in self.sub_origin:
            cut, index, axis = self.sub_origin[cut]
            axis = axis - rank if axis >= 0 else axis  # a label's value's: from the right
            if across is True or axis in across:
                out = cut
                self.read_uncut.append((index, axis))
                recut, skipped = recut + skipped, []
            else:
                skipped.append((index, axis))
        return out, recut

    @staticmethod
    def _recut(value, recut: list):
        """``value`` cut again to the minibatch of each plate in ``recut`` (index, dim from
        the right); the index flat, as a nested plate's is laid out at its dim."""
        for index, axis in recut:
            value = Call("torch.index_select", [value, Lit(axis),
                                                Call("torch.flatten", [Var(index)], [])], [])
        return value

    @staticmethod
    def _join(a, b):
        if a is True or b is True:
            return True
        if not b:
            return a
        return b if a is None else a | b

    def _within(self, across, e: ast.Expr):
        """``e`` lowered reading its values ``across`` (:attr:`across`)."""
        saved, self.across = self.across, across
        try:
            return self._expr(e)
        finally:
            self.across = saved

    def _reads_across(self, e: ast.Call, name: str, arg: ast.Expr, key: str):
        """Where a call's argument is read across elements (:attr:`across`): nowhere for a
        function of each element, a distribution's parameters and log_prob's value; along
        ``dim`` (given, or the last by default) for softmax, cumsum, sort, ...; everywhere
        for a reduction over all elements, a matrix function and a model's function."""
        if name in _POINTWISE or signatures.lookup(name) is not None or key == "dim" \
                or name in ("log_prob", "log_cdf", "log_ccdf", "stack", "cat") \
                or id(e) in self.cm.elem_reduce:
            return frozenset()
        rank = len(self.cm.ty(arg).shape or ())
        if name in _ALONG_DIM and key == "x" and rank:
            dim = next((k.value for k in e.kwargs if k.name == "dim"), None)
            if dim is None and len(e.args) > 1:
                dim = e.args[1]
            if dim is None and name not in _ALL_DIMS:
                return frozenset({-1})
            d = _literal_number(dim)
            if d is not None and id(dim) in self.cm.label_dims:
                # counted on each element's own dims (logsumexp(xm - u[:], dim=0) in plate
                # n is over xm[n]'s M): the dim lowered, from the right; read as the
                # declared dim 0, xm was read uncut against the minibatch's other values
                return frozenset({int(d) - self.cm.label_dims[id(dim)]})
            if d is not None:
                return frozenset({int(d) - rank if d >= 0 else int(d)})
        if name == "matmul" and key == "a" and rank > 1:
            return frozenset({-1})  # the rows of X in X @ w are X's own
        return True

    def _call(self, e: ast.Call) -> Call:
        name = e.func_name
        if id(e) in self.cm.elem_reduce:  # sum(w[i]) in plate i: one sum per element
            x = e.args[0] if e.args else next(k.value for k in e.kwargs if k.name == "x")
            return Call("rt.reduce_elements", [self._expr(x), Lit(name),
                                               Lit(self.cm.elem_reduce[id(e)])], [])
        if id(e) in self.cm.label_matmul:  # matmul(M, w) of each element's w in plates
            given = dict(zip(("a", "b"), e.args, strict=False)) | {k.name: k.value
                                                                   for k in e.kwargs}
            a, b = given["a"], given["b"]
            return Call("rt.label_matmul", [self._expr(a), self._expr(b),
                                            *map(Lit, self.cm.label_matmul[id(e)])], [])
        # a model name spelt like a built-in does not shadow it (the checker's resolution)
        value = name in self.cm.symbols and id(e) not in self.cm.builtin_calls
        b = builtins.lookup(name) if not value else None
        params = b.params if b is not None else ()
        outer, self.read_uncut = self.read_uncut, []
        args = [self._call_arg(a, params[i] if i < len(params) else "", b, e)
                for i, a in enumerate(e.args)]
        kwargs = [(k.name, self._call_arg(k.value, k.name, b, e)) for k in e.kwargs]
        inner, self.read_uncut = self.read_uncut, outer
        out = self._call_rest(e, name, value, b, args, kwargs)
        if b is None or b.kind != "function" or name in _POINTWISE \
                or signatures.lookup(name) is not None:
            self.read_uncut += inner  # the result has the dims of its arguments
        elif b.name in _SAME_SHAPE and self.across is not True:
            # cumsum(x) read element by element in the plate: the whole value's running
            # sum, cut to the minibatch as x itself would be
            for index, dim in dict.fromkeys(inner):
                if self.across and dim in self.across:
                    self.read_uncut.append((index, dim))
                else:
                    out = Call("torch.index_select", [out, Lit(dim), Var(index)], [])
        return out

    def _call_rest(self, e: ast.Call, name: str, value: bool, b, args, kwargs) -> Call:
        params = b.params if b is not None else ()
        if value:
            self.used.add(self.rename.get(name, name))
            return Call(self.rename.get(name, name), args, kwargs)
        sig = signatures.lookup(name)
        if sig is not None:
            # int data (or an int built from it: sum(k), k[0]) as a real parameter:
            # torch samples and scores real densities in floating point only
            whole = signatures.INT_PARAMS.get(name, ())
            args = [self._as_real(a, x) if sig.params[i:i + 1] and sig.params[i] not in whole
                    else a for i, (a, x) in enumerate(zip(args, e.args, strict=False))]
            kwargs = [(k, self._as_real(v, x.value) if k not in whole else v)
                      for (k, v), x in zip(kwargs, e.kwargs, strict=False)]
            return Call(signatures.target(name), args, kwargs)
        if b.kind == "network" or b.plain:
            args = [_unstack(a) for a in args]
            kwargs = [(k, _unstack(v)) for k, v in kwargs]
            return Call(b.target, args, kwargs)
        if b.name in ("stack", "cat") and e.args and isinstance(e.args[0], ast.ListLit):
            if id(e) in self.cm.stacks:  # a label's or per-element values: own dims last
                kwargs = [*kwargs, ("dim", Lit(self.cm.stacks[id(e)]))]
            return Call(b.target, [ListE([self._expr(i) for i in e.args[0].items]),
                                   *args[1:]], kwargs)
        if b.lists:
            args = [_unstack(a) if i < len(params) and params[i] in b.lists else a
                    for i, a in enumerate(args)]
            kwargs = [(k, _unstack(v) if k in b.lists else v) for k, v in kwargs]
        # a dim given by position (sum(x, 0)) stays a Python int, as dim=0 does
        args = [a if params[i:i + 1] == ("dim",) else _tensorise(a) for i, a in enumerate(args)]
        if b.target.startswith("torch."):
            # a size in a math function (sqrt(T), log(T * 1.0), lgamma(N + 1)) is a Python
            # number in generated code, which torch functions refuse: a tensor of the
            # model's dtype (and device), as a literal is
            args = [self._size_tensor(a, x) if self._of_sizes(x) else a
                    for a, x in zip(args, e.args, strict=False)]
            kwargs = [(k, self._size_tensor(v, x.value) if self._of_sizes(x.value) else v)
                      for (k, v), x in zip(kwargs, e.kwargs, strict=False)]
        if b.name == "where":
            # a condition of numbers and sizes only (0.9 > 0.5, N > 2, true, or transformed
            # data of them) is a Python bool in generated code, which torch.where refuses
            args = [self._bool_tensor(a, x) if i == 0 else a for i, (a, x) in
                    enumerate(zip(args, e.args, strict=False))]
            kwargs = [(k, self._bool_tensor(v, x.value) if k == "cond" else v)
                      for (k, v), x in zip(kwargs, e.kwargs, strict=False)]
        return Call(b.target, args, kwargs)

    def _bool_tensor(self, out, e: ast.Expr):
        """``torch.as_tensor(out)`` where ``e`` reads no tensor (data, a latent, a param, a
        plate index): it may be a Python bool."""
        tensors = ("data", "latent", "deterministic", "param", "index")
        if any(getattr(self.cm.symbols.get(n), "role", None) in tensors
               for n in ast.names_read(e)):
            return out
        return Call("torch.as_tensor", [out], [])

    def _as_real(self, out, e: ast.Expr):
        """``rt.real(out)`` where the checker typed ``e`` int or bool and it is a tensor
        (data, or computed from data); sizes and literals stay as they are."""
        if self.cm.ty(e).kind not in ("int", "bool") or isinstance(e, ast.Number) \
                or self._of_sizes(e):
            return out
        return Call("rt.real", [out], [])

    def _size_tensor(self, out, e: ast.Expr):
        """``rt.tensor(out)``; whole numbers (``abs(K - T)``, read as an index) stay whole:
        torch's math functions promote an integer tensor themselves (sqrt(4) is 2.0)."""
        whole = self.cm.ty(e).kind == "int"
        return Call("rt.tensor", [out], [("integer", Lit(True))] if whole else [])

    def _of_sizes(self, e: ast.Expr, seen: frozenset = frozenset()) -> bool:
        """Whether ``e`` is arithmetic on sizes and numbers only (``T``, ``T * 1.0``,
        ``-N``, ``K`` of ``K = T - 1``): a Python number in generated code, not a tensor.
        A bare literal is not counted (:func:`_tensorise` has made it a tensor)."""
        return not isinstance(e, ast.Number) and self._sized(e, seen)

    def _sized(self, e: ast.Expr, seen: frozenset) -> bool:
        if isinstance(e, ast.Number):
            return True
        if isinstance(e, ast.Neg):
            return self._sized(e.operand, seen)
        if isinstance(e, ast.BinOp):
            return e.op in ("+", "-", "*", "/", "^") and self._sized(e.left, seen) \
                and self._sized(e.right, seen)
        if isinstance(e, ast.Name) and e.id not in self.locals and e.id not in seen:
            sym = self.cm.symbols.get(e.id)
            if sym is None:
                return False
            if sym.role == "size":
                return True
            return sym.role == "transformed" and isinstance(sym.node, ast.Assign) \
                and self._sized(sym.node.value, seen | {e.id})
        return False


    def _call_arg(self, e: ast.Expr, key: str, b, call: ast.Call | None = None):
        """A call argument; a word at a builtin's choice argument is a string, even when
        the model has a name like it (the checker reads it the same way)."""
        if b is not None and key in b.choices and isinstance(e, ast.Name):
            return Sym(e.id)
        if call is None or b is None or b.kind != "function" or self.across is True:
            return self._expr(e)
        return self._within(self._join(self.across, self._reads_across(call, b.name, e, key)),
                            e)


# builtins that read their argument x across one dim (dim=, else the last), or across all
# of its elements where no dim is given (_ALL_DIMS: the checker's, whose dim defaults to
# every dim); _POINTWISE, the ones that map each element on its own, is the checker's too
_ALL_DIMS = frozenset(_DEFAULT_DIMS)
_SAME_SHAPE = frozenset({"cumsum", "cumprod", "softmax", "log_softmax", "sort", "reverse"})
_ALONG_DIM = _ALL_DIMS | _SAME_SHAPE | {"logsumexp"}


def _unstack(x):
    """The Python list of a list literal (``rt.stack([...])`` -> ``[...]``)."""
    if isinstance(x, Call) and x.target == "rt.stack" and len(x.args) == 1 and not x.kwargs \
            and isinstance(x.args[0], ListE):
        return x.args[0]
    return x


def _tensorise(x):
    """torch functions need tensors; literal numbers become rt.tensor(...)."""
    if isinstance(x, Lit) and isinstance(x.value, (int, float)) and not isinstance(x.value, bool):
        return Call("rt.tensor", [x], [])
    return x


def _dim_text(d: ast.Expr) -> str:
    if isinstance(d, ast.Number):
        return str(d.value)
    if isinstance(d, ast.Name):
        return d.id
    if isinstance(d, ast.BinOp):
        return f"({_dim_text(d.left)} {d.op} {_dim_text(d.right)})"
    return "?"


def _dim_code(d):
    """A size expression (``ppl.check.sizes.Dim``) as IR over the size variables."""
    if d.is_Integer:
        return Lit(int(d))
    if d.is_Symbol:
        return Var(str(d))
    return Call("int", [Var(str(d))], [])


def _source_ref(s, symbols: dict) -> SourceRef:
    """The statement's span and, when its value is a call, each argument's span by the
    parameter it binds (keywords by name, positionals by the builtin's parameter order,
    or, for a call of a construct's value, ``g(xc, yc, xt)``, by its ``call_params``)."""
    call = getattr(s, "dist", None) or getattr(s, "value", None)
    args: dict = {}
    if isinstance(call, ast.Call):
        sym = symbols.get(call.func_name) if call.func_name else None
        if sym is not None and sym.role == "network":  # else the built-in (sd(x), sd ~ ...)
            built = sym.ty.value.get("builtin") if isinstance(sym.ty.value, dict) else None
            b = builtins.lookup(built) if built else None
            params = b.call_params if b is not None else ()
        else:
            b = builtins.lookup(call.func_name) if call.func_name else None
            d = signatures.lookup(call.func_name) if b is None and call.func_name else None
            params = b.params if b is not None else d.params if d is not None else ()
        for i, a in enumerate(call.args):
            if i < len(params):
                args[params[i]] = a.span
        for kw in call.kwargs:
            args[kw.name] = kw.value.span
    return SourceRef(s.span, args)
