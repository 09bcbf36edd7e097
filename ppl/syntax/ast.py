"""The BDL abstract syntax tree. Every node carries the :class:`Span` it came from."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields

from .diagnostics import NO_SPAN, Span


@dataclass
class Node:
    span: Span = field(default=NO_SPAN, kw_only=True, compare=False, repr=False)


# ---- expressions ---------------------------------------------------------------
@dataclass
class Expr(Node):
    pass


@dataclass
class Number(Expr):
    value: float | int
    text: str


@dataclass
class String(Expr):
    value: str


@dataclass
class Bool(Expr):
    value: bool


@dataclass
class Name(Expr):
    id: str


@dataclass
class BinOp(Expr):
    op: str
    left: Expr
    right: Expr


@dataclass
class Neg(Expr):
    operand: Expr


@dataclass
class Keyword(Node):
    name: str
    value: Expr


@dataclass
class Call(Expr):
    func: Expr
    args: list[Expr]
    kwargs: list[Keyword]

    @property
    def func_name(self) -> str | None:
        return self.func.id if isinstance(self.func, Name) else None


@dataclass
class Slice(Expr):
    start: Expr | None
    stop: Expr | None


@dataclass
class Index(Expr):
    value: Expr
    indices: list[Expr]


@dataclass
class Attr(Expr):
    value: Expr
    attr: str


@dataclass
class ListLit(Expr):
    items: list[Expr]


@dataclass
class FunctionLit(Expr):
    """``(x, t) => body``: a function literal. ``params`` are local names of the body;
    every other name in it refers to the model's names (docs/language.md, "Function
    literals")."""

    params: list[str]
    body: Expr
    param_spans: list[Span] = field(default_factory=list, compare=False, repr=False)


# ---- types ---------------------------------------------------------------------
@dataclass
class Bound(Node):
    name: str
    value: Expr


@dataclass
class Type(Node):
    """``real<lower=0>[N, D]``: a base name, optional bounds, optional dimensions."""

    base: str
    bounds: list[Bound]
    dims: list[Expr]


# ---- statements ----------------------------------------------------------------
@dataclass
class Stmt(Node):
    pass


@dataclass
class Sample(Stmt):
    name: str
    type: Type | None
    dist: Expr
    name_span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass
class Assign(Stmt):
    name: str
    type: Type | None
    value: Expr
    name_span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass
class Param(Stmt):
    name: str
    type: Type
    init: Expr
    name_span: Span = field(default=NO_SPAN, compare=False, repr=False)


@dataclass
class Factor(Stmt):
    value: Expr


@dataclass
class Plate(Stmt):
    index: str | None
    size: Expr
    batch: Expr | None
    body: list[Stmt]


# ---- top level -----------------------------------------------------------------
@dataclass
class Arg(Node):
    name: str
    type: Type
    optional: bool


@dataclass
class Model(Node):
    name: str
    args: list[Arg]
    body: list[Stmt]


@dataclass
class Guide(Node):
    """``guide Name { ... }``: a variational guide of model ``name``, written in the
    model's statement syntax (docs/language.md, "Guides")."""

    name: str
    body: list[Stmt]


@dataclass
class Infer(Node):
    model: str | None
    method: str
    args: list[Expr]
    options: list[Keyword]


@dataclass
class Program(Node):
    models: list[Model]
    infers: list[Infer]
    comments: list[tuple[int, int, str]] = field(default_factory=list, compare=False)
    guides: list[Guide] = field(default_factory=list)


def walk(node) -> Iterator[Node]:
    """Every node under ``node`` (a node or a list of them), itself first, depth first."""
    if isinstance(node, list):
        for item in node:
            yield from walk(item)
    elif isinstance(node, Node):
        yield node
        for f in fields(node):
            value = getattr(node, f.name)
            if isinstance(value, (Node, list)):
                yield from walk(value)


def names_read(node) -> list[str]:
    """The names an expression (or statements) reads as values: every ``Name`` under it
    but the function of a call (``exp`` in ``exp(x)``)."""
    nodes = list(walk(node))
    called = {id(n.func) for n in nodes if isinstance(n, Call)}
    return [n.id for n in nodes if isinstance(n, Name) and id(n) not in called]
