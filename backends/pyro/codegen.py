"""IR -> readable Python source for Pyro.

The output is what a careful person would write by hand: one ``pyro.sample`` per ``~``
with the source's names, ``pyro.plate`` where the source has plates, ``pyro.param`` with
constraints, ``pyro.deterministic`` for derived quantities. The module also holds the
model's data signature (for binding sizes) and its ``infer`` settings, and runs on its
own: ``python model.py DATA.json``.
"""

from __future__ import annotations

import ast
import dataclasses
import pprint
import textwrap

from ppl import __version__
from ppl import lower as ir
from ppl.infer.methods import without_site

INDENT = "    "

# Python precedence, for minimal parentheses.
_PREC = {
    "<": 1, ">": 1, "<=": 1, ">=": 1, "==": 1, "!=": 1,
    "+": 2, "-": 2, "*": 3, "/": 3, "@": 3, "%": 3, "neg": 4, "^": 5,
}
_PYOP = {"^": "**"}
_LONG_LAMBDA = 60  # a lambda body longer than this is parenthesised
# the import of each name the lowering records that generated code reads (IRModel.imports)
_IMPORTS = {"Vindex": "from pyro.ops.indexing import Vindex"}


def _same_number(text: str | None, value) -> bool:
    """Whether ``text`` (the source's spelling) is a Python literal of exactly ``value``."""
    if text is None:
        return False
    try:
        python = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return False
    return type(python) is type(value) and python == value


def expr(e, parent: int = 0) -> str:
    """Python source of an IR expression."""
    if isinstance(e, ir.Lit):
        return e.text if _same_number(e.text, e.value) else repr(e.value)
    if isinstance(e, ir.Var):
        return e.name
    if isinstance(e, ir.Sym):
        return repr(e.name)
    if isinstance(e, ir.Neg):
        inner = expr(e.operand, _PREC["neg"])
        text = f"-{inner}"
        return f"({text})" if parent > _PREC["neg"] else text
    if isinstance(e, ir.Bin):
        p = _PREC[e.op]
        # ** is right-associative; the others left-associative
        lp, rp = (p + 1, p) if e.op == "^" else (p, p + 1)
        text = f"{expr(e.left, lp)} {_PYOP.get(e.op, e.op)} {expr(e.right, rp)}"
        return f"({text})" if parent > p else text
    if isinstance(e, ir.Call):
        parts = [expr(a) for a in e.args] + [f"{k}={expr(v)}" for k, v in e.kwargs]
        return f"{e.target}({', '.join(parts)})"
    if isinstance(e, ir.Idx):
        items = ", ".join(expr(i) for i in e.items)
        return f"{expr(e.value, 9)}[{items}]"
    if isinstance(e, ir.Sl):
        start = expr(e.start) if e.start is not None else ""
        stop = expr(e.stop) if e.stop is not None else ""
        return f"{start}:{stop}"
    if isinstance(e, ir.Attr):
        return f"{expr(e.value, 9)}.{e.name}"
    if isinstance(e, ir.ListE):
        return "[" + ", ".join(expr(i) for i in e.items) + "]"
    if isinstance(e, ir.Fn):
        body = expr(e.body)
        if len(body) > _LONG_LAMBDA:  # brackets give wrap() a place to break the body
            body = f"({body})"
        text = f"lambda {', '.join(e.params)}: {body}" if e.params else f"lambda: {body}"
        return f"({text})" if parent > 0 else text
    raise TypeError(f"cannot emit {type(e).__name__}")


WIDTH = 99  # generated lines stay within ruff's default E501 limit, as written by hand

_PAIRS = {"(": ")", "[": "]", "{": "}"}
_BREAK_OPS = (" + ", " - ", " @ ", " * ", " / ")


def _scan(text: str, every: bool = False):
    """(index, char, depth) of every bracket outside string literals -- or, with
    ``every``, of every character outside them; ``depth`` counts the brackets open
    before the character."""
    depth, quote, i = 0, None, 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c in _PAIRS:
            yield i, c, depth
            depth += 1
        elif c in ")]}":
            depth -= 1
            yield i, c, depth
        elif every:
            yield i, c, depth
        i += 1


def _split_top(text: str, seps) -> list[str]:
    """Split at separators that sit outside brackets and strings (and outside a lambda's
    parameter list: ``lambda x, t: ...`` is one item)."""
    parts, start, in_lambda = [], 0, False
    for i, c, depth in _scan(text, every=True):
        if depth != 0 or c in _PAIRS or c in ")]}":
            continue
        if text.startswith("lambda ", i) and (i == 0 or not _is_word(text[i - 1])):
            in_lambda = True
        elif in_lambda:
            in_lambda = c != ":"
            continue
        for sep in seps:
            if text.startswith(sep, i) and i > start:
                parts.append(text[start:i].strip())
                start = i + (1 if sep == "," else 0)
                break
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def _is_word(c: str) -> bool:
    return c.isalnum() or c == "_"


def wrap(line: str, width: int = WIDTH) -> list[str]:
    """Break a long line of generated code inside its widest bracket pair, one argument
    per line (recursively), or before top-level operators; short lines pass unchanged."""
    if len(line) <= width:
        return [line]
    indent = line[: len(line) - len(line.lstrip())]
    body = line[len(indent):]
    opens, best = [], None
    for i, c, depth in _scan(body):
        if c in _PAIRS and depth == 0:
            opens.append(i)
        elif c in ")]}" and depth == 0 and opens:
            start = opens.pop()
            if best is None or i - start > best[1] - best[0]:
                best = (start, i)
    if best is None or best[1] - best[0] < 2:
        return [line]
    start, end = best
    head, inner, tail = body[: start + 1], body[start + 1: end], body[end:]
    inner_indent = indent + INDENT
    items = _split_top(inner, (",",))
    if len(items) == 1:
        terms = _split_top(inner, _BREAK_OPS)
        if len(terms) > 1:
            out = [indent + head]
            first, rest = terms[0], terms[1:]
            out += wrap(inner_indent + first, width)
            out += [ln for t in rest for ln in wrap(inner_indent + t, width)]
            return out + [indent + tail]
    out = [indent + head]
    for item in items:
        # a trailing comma only after several items: "(x,)" would make a tuple
        out += wrap(inner_indent + item + ("," if len(items) > 1 else ""), width)
    return out + [indent + tail]


def _dims(dims) -> str:
    return "[" + ", ".join(expr(d) for d in dims) + "]"


def _dist(op: ir.SampleOp) -> str:
    d = expr(op.dist, 9)
    if op.event:
        if op.in_plate or op.event_rank is None or _timed(op.dist):
            d = f"rt.event({d}, {_dims(op.event)})"
        else:
            batch = op.event[: len(op.event) - op.event_rank]
            if batch:
                d = f"{d}.expand({_dims(batch)}).to_event({len(batch)})"
    if op.constraint is not None:
        d = f"rt.{'transformed' if op.into else 'Restricted'}({d}, {expr(op.constraint)})"
    return f"rt.LabelFree({d})" if op.label_free else d


def _timed(d) -> bool:
    """``d`` is a hidden Markov model (``signatures.TIMED``): ``rt.event`` gives a
    homogeneous chain the declared length."""
    from ppl.check.signatures import TIMED

    return isinstance(d, ir.Call) and d.target.rsplit(".", 1)[-1] in TIMED


def _sampler(op: ir.SampleOp, guide: bool) -> str:
    """``pyro.sample``, or for a latent whose support follows latents
    ``rt.sample_in_support`` (drawn on the real line, mapped with the current bounds; in
    a guide ``rt.guide_in_support``, the same site on the real line)."""
    if not op.in_support:
        return "pyro.sample"
    return "rt.guide_in_support" if guide else "rt.sample_in_support"


def _enum_plates(op: ir.SampleOp) -> list:
    """The dims of a vector site outside plates to draw in plates (ppl.lower.enum_dims)."""
    return ir.enum_dims(op)


def _var(op) -> str:
    """The Python variable a statement assigns (its name unless that is reserved)."""
    return getattr(op, "var", "") or op.name


# Each statement's code follows a marker naming its BDL line and column and showing the
# line; a module run on its own reads the markers to locate its run-time errors
# (ppl.locate.register_markers), as `bdl run` does with the source map.
MARKER = "# bdl:"
LABEL_NOTE = ("a label: summed out in the fit (Pyro's parallel enumeration), then drawn "
              "from its exact conditional (ppl.infer.discrete)")


class _Emitter:
    def __init__(self, refs: dict | None = None, source: str | None = None):
        self.lines: list[str] = []
        self.refs = refs or {}
        # (first line, last line, SourceRef), 0-based lines of ``self.lines``
        self.spans: list[tuple[int, int, object]] = []
        self.source = source.split("\n") if source is not None else None
        self.carried: set[int] = set()  # BDL lines whose comments are already in the code
        self.read: set[str] | None = None  # the variables the model function reads
        self.guide = False  # emitting a guide function (docs/language.md, "Guides")

    def line(self, depth: int, text: str) -> None:
        self.lines.extend(wrap(INDENT * depth + text))

    def comment(self, depth: int, text: str) -> None:
        """A comment line, wrapped at word boundaries within the line width: ``text`` as
        written when it is a comment already (``## a heading``), else ``# text``."""
        lead = "#" * (len(text) - len(text.lstrip("#"))) if text.startswith("#") else "#"
        text = text[len(lead):].strip() if text.startswith("#") else text
        indent = INDENT * depth + lead + " "
        # at least 40 characters of text a line after a long lead (a rule of 94 '#')
        width = max(WIDTH - len(indent), 40)
        for part in textwrap.wrap(text, width, break_long_words=False) or [""]:
            self.lines.append((indent + part).rstrip())

    def bdl_comments(self, depth: int, line: int) -> None:
        """The user's comment lines directly above BDL line ``line``, as written."""
        if self.source is None:
            return
        k = line - 2  # 0-based index of the line above
        above = []
        while k >= 0 and self.source[k].lstrip().startswith("#") and k + 1 not in self.carried:
            above.append(k)
            k -= 1
        for k in reversed(above):
            self.carried.add(k + 1)
            self.comment(depth, self.source[k].strip())

    def marker(self, depth: int, span) -> None:
        """``# bdl:LINE:COL  <the statement's first BDL line>``, cut to the line width."""
        self.bdl_comments(depth, span.line)
        head = f"{INDENT * depth}{MARKER}{span.line}:{span.col}"
        if self.source is not None and 0 < span.line <= len(self.source):
            shown = self.source[span.line - 1].strip()
            head += "  " + (shown if len(head) + 2 + len(shown) <= WIDTH
                            else shown[: WIDTH - len(head) - 6] + " ...")
        self.lines.append(head)

    def text(self) -> str:
        return "\n".join(self.lines)

    def dim_plates(self, name: str, sizes: list, depth: int) -> None:
        """One plate per dim of a vector site (``NAME.dim0``, ...: no model name has a
        dot), the last at dim -1."""
        for k, size in enumerate(sizes):
            self.line(depth + k, f'with pyro.plate("{name}.dim{k}", {expr(size)}, '
                                 f"dim={k - len(sizes)}):")

    def _in_plates(self, op: ir.SampleOp, depth: int) -> None:
        """``op`` in one plate per dim of :func:`_enum_plates` (named ``y.dim0``, ...: no
        model name has a dot), with the site's distribution broadcast by the plates."""
        dims = _enum_plates(op)
        self.dim_plates(op.name, dims, depth)
        d = expr(op.dist, 9)
        d = f"rt.LabelFree({d})" if op.label_free else d
        inner = depth + len(dims)
        if op.obs is not None:
            obs = f"rt.real({op.obs})" if op.cast_obs else op.obs
            self.line(inner, f'pyro.sample("{op.name}", {d}, obs={obs})')
        else:
            keep = "" if self.guide and _var(op) not in (self.read or ()) \
                else f"{_var(op)} = "
            self.line(inner, f'{keep}{_sampler(op, self.guide)}("{op.name}", {d})')

    def stmts(self, body, depth: int) -> None:
        if not body:
            self.line(depth, "pass")
        for op in body:
            self.stmt(op, depth)

    def stmt(self, op, depth: int) -> None:
        ref = self.refs.get(id(op))
        if ref is not None:
            self.marker(depth, ref.span)
        if isinstance(op, ir.SampleOp) and op.summed_out:
            self.comment(depth, LABEL_NOTE)
        first = len(self.lines)
        self._stmt(op, depth)
        if ref is not None:
            self.spans.append((first, len(self.lines) - 1, ref))

    def _stmt(self, op, depth: int) -> None:
        if isinstance(op, ir.SampleOp) and _enum_plates(op):
            self._in_plates(op, depth)
        elif isinstance(op, ir.SampleOp):
            if op.obs is not None:
                obs = op.obs
                if op.obs_align is not None:  # data of outer plates, at their Pyro dims
                    obs = f"rt.plate_aligned({obs}, {op.obs_align!r})"
                obs = f"rt.real({obs})" if op.cast_obs else obs
                self.line(depth, f'pyro.sample("{op.name}", {_dist(op)}, obs={obs})')
            else:
                # a guide's draw nothing in it reads is made, not kept (ruff F841)
                keep = "" if self.guide and _var(op) not in (self.read or ()) \
                    else f"{_var(op)} = "
                self.line(depth, f'{keep}{_sampler(op, self.guide)}("{op.name}", {_dist(op)})')
        elif isinstance(op, ir.Let):
            if op.kind == "deterministic":
                # a value nothing reads is recorded, not kept (ruff F841)
                keep = f"{_var(op)} = " if self.read is None or _var(op) in self.read else ""
                self.line(depth, f'{keep}pyro.deterministic("{op.name}", {expr(op.value)})')
            else:
                self.line(depth, f"{_var(op)} = {expr(op.value)}")
        elif isinstance(op, ir.ParamOp):
            init = expr(op.init)
            init = f"rt.full({_dims(op.shape)}, {init})" if op.shape else f"rt.tensor({init})"
            extra = f", constraint={expr(op.constraint)}" if op.constraint is not None else ""
            self.line(depth, f'{_var(op)} = pyro.param("{op.name}", lambda: {init}{extra})')
        elif isinstance(op, ir.NetworkOp):
            c = op.ctor
            args = ", ".join([expr(a) for a in c.args] + [f"{k}={expr(v)}" for k, v in c.kwargs])
            self.line(depth, f'{_var(op)} = pyro.module("{op.name}", rt.network("{op.name}", '
                             f"{c.target}, {args}), update_module_params=True)")
        elif isinstance(op, ir.ConstructOp):
            c = op.call
            parts = [f'"{op.name}"'] + ([_var(op)] if op.on_existing else [])
            parts += [expr(a) for a in c.args] + [f"{k}={expr(v)}" for k, v in c.kwargs]
            self.line(depth, f"{_var(op)} = {c.target}({', '.join(parts)})")
        elif isinstance(op, ir.FactorOp):
            value = expr(op.value) if not op.summed else expr(op.value, 9) + (
                ".sum(-1)" if op.summed == 1 else f".sum({tuple(range(-op.summed, 0))})")
            self.dim_plates(op.name, op.enum_sizes or [], depth)
            self.line(depth + len(op.enum_sizes or ()), f'pyro.factor("{op.name}", {value})')
        elif isinstance(op, ir.PlateOp):
            extra = ""
            if op.subsample is not None:
                # a batch larger than the plate is the whole plate (pyro.plate would fail)
                extra = f", subsample_size=rt.batch_size({expr(op.subsample)}, {expr(op.size)})"
            alias = f" as {op.index}" if op.index else ""
            self.line(depth, f'with pyro.plate("{op.name}", {expr(op.size)}, dim={op.dim}'
                             f"{extra}){alias}:")
            for data, local, axis, may_be_none in op.subsampled:
                take = f"{data}.index_select({axis}, {op.index})"
                self.line(depth + 1, f"{local} = None if {data} is None else {take}"
                          if may_be_none else f"{local} = {take}")
            if op.align_index:  # the index varies along this plate's dim, as its values do
                self.line(depth + 1, f"{op.index} = rt.plate_aligned({op.index}, ({op.dim},))")
            self.stmts(op.body, depth + 1)
        else:
            raise TypeError(f"cannot emit {type(op).__name__}")


def _signature(m: ir.IRModel) -> str:
    args = []
    for a in m.args:
        extra = ""
        if a.optional:
            extra += ", optional=True"
        if a.lower is not None:
            extra += f", lower={a.lower!r}"
        if a.upper is not None:
            extra += f", upper={a.upper!r}"
        args.append(f"        rt.ArgSpec({a.name!r}, {a.base!r}, {a.dims!r}, line={a.line}, "
                    f"col={a.col}{extra}),")
    checks = [f"        rt.SizeCheck({c.left!r}, {c.right!r}, line={c.line}, col={c.col}, "
              f"what={c.what!r}{', at_least=True' if c.at_least else ''})," for c in m.checks]
    index_checks = [f"        rt.IndexCheck({c.name!r}, {c.size!r}, line={c.line}, "
                    f"col={c.col}, what={c.what!r}"
                    f"{f', offset={c.offset}' if c.offset else ''})," for c in m.index_checks]
    out = [f"{m.name.upper()}_SIGNATURE = rt.Signature(",
           f"    name={m.name!r},",
           f"    source={m.filename!r},",
           "    args=[", *args, "    ],",
           f"    sizes={m.sizes!r},"]
    if checks:
        out += ["    checks=[", *checks, "    ],"]
    if index_checks:
        out += ["    index_checks=[", *index_checks, "    ],"]
    out.append(")")
    return "\n".join(out)


def _names(node) -> set[str]:
    """The variables an IR expression reads."""
    if isinstance(node, ir.Var):
        return {node.name}
    if isinstance(node, (list, tuple)):
        return set().union(*(_names(x) for x in node))
    if isinstance(node, ir.PlateOp):  # a value the plate cuts to its minibatch is read
        return {t[0] for t in node.subsampled} | set().union(
            *(_names(getattr(node, f.name)) for f in dataclasses.fields(node)))
    if dataclasses.is_dataclass(node):
        return set().union(*(_names(getattr(node, f.name)) for f in dataclasses.fields(node)))
    return set()


def _reads(lets, var: str) -> bool:
    return any(var in _names(t.value) for t in lets)


def model_function(m: ir.IRModel, source: str | None = None) -> str:
    """The Pyro model function and its transformed-data helper; with the BDL ``source``,
    each statement's marker shows its line and the user's comments are carried over."""
    return _model_function(m, source).text()


def _params(m: ir.IRModel) -> list[str]:
    """The model function's keyword arguments: sizes, data, transformed data."""
    params = list(m.sizes) + [a.name for a in m.args if a.name not in m.sizes]
    return params + [_var(t) for t in m.transformed if t.kind == "transformed"]


def guide_function(m: ir.IRModel, source: str | None = None) -> str:
    """The Pyro guide function of a model with a guide block (``def NAME_guide``)."""
    return _guide_function(m, source).text()


def _guide_function(m: ir.IRModel, source: str | None = None) -> _Emitter:
    """``def NAME_guide(...)``: the guide block's statements, taking the model's keyword
    arguments (Pyro calls a guide with the model's), its values computed in its body."""
    g = m.guide
    e = _Emitter(g.refs, source)
    e.bdl_comments(0, g.line)
    e.line(0, f"def {g.name}({_keyword_only(_params(m))}):")
    e.line(1, f'"""The guide of {m.name}, as its guide block writes it (svi\'s guide=custom)."""')
    body = _drop_unread_values(g.body)
    e.read = _names(body)
    e.guide = True
    e.stmts(body, 1)
    return e


def _model_function(m: ir.IRModel, source: str | None = None) -> _Emitter:
    e = _Emitter(m.refs, source)
    e.bdl_comments(0, m.line)  # what the file says about the model, above its function
    params = _params(m)
    # the transformed data, and before them the fixed values (kernels) they may read
    returned = [t for t in m.transformed if t.kind == "transformed"]
    if returned:
        data_params = list(m.sizes) + [a.name for a in m.args if a.name not in m.sizes]
        e.line(0, f"def {m.name}_transformed_data({_keyword_only(data_params)}):")
        e.line(1, '"""Transformed data: computed once from the data, before inference."""')
        for t in m.transformed[:m.transformed.index(returned[-1]) + 1]:
            if t.kind == "transformed" or _reads(returned, _var(t)):
                e.stmt(t, 1)
        e.line(1, "return {" + ", ".join(f'"{_var(t)}": {_var(t)}' for t in returned) + "}")
        e.line(0, "")
        e.line(0, "")
    e.line(0, f"def {m.name}({_keyword_only(params)}):")
    body = _drop_unread_values(m.body)
    e.read = _names(body)
    e.stmts(body, 1)
    return e


def _keyword_only(params: list[str]) -> str:
    """A parameter list of keyword-only arguments; empty for a model without data
    (``def A(*)`` is a Python syntax error)."""
    return ", ".join(["*"] + params) if params else ""


def _drop_unread_values(body: list) -> list:
    """``body`` without the top-level fixed values (kernels) nothing in it reads, such as
    one only transformed data read (it is built in their function)."""
    while True:
        read = _names(body)
        keep = [op for op in body if not (isinstance(op, ir.Let) and op.kind == "value"
                                          and _var(op) not in read)]
        if len(keep) == len(body):
            return body
        body = keep


def _imports(code: str) -> list[tuple[str, bool]]:
    """The module's imports, each with whether ``code`` (its code lines, not comments)
    reads it."""
    return [("import pyro", "pyro." in code),
            ("import pyro.distributions as dist", "dist." in code),
            ("import torch", "torch." in code),
            ("from pyro.distributions import constraints", "constraints." in code)]


def generate(models: list[ir.IRModel], source_name: str, source: str | None = None) -> str:
    """A complete, standalone Python module for the given models (``source``: the BDL
    text, shown beside each statement's marker)."""
    return generate_mapped(models, source_name, source)[0]


def generate_mapped(models: list[ir.IRModel], source_name: str,
                    source: str | None = None) -> tuple[str, list]:
    """The module of :func:`generate` and its source map: ``(first, last, SourceRef)``
    per emitted statement, 1-based lines of the module, so that an error raised while a
    generated line runs can be reported at the BDL statement it came from."""
    head = [
        f'"""Pyro program generated by bdl {__version__} from {source_name}.',
        "",
        "Run it on its own (with ppl installed): python THIS_FILE.py DATA.json, with",
        "--infer 'svi(steps=200)' and --seed S as bdl run takes them; the *_INFER dict below",
        "holds the model file's settings.",
        '"""',
        "",
    ]
    functions = [_model_function(m, source) for m in models]
    guides = [_guide_function(m, source) if m.guide is not None else None for m in models]
    code = "\n".join(ln for e in functions + guides if e is not None  # code, not comments
                     for ln in e.lines if not ln.lstrip().startswith("#")) \
        + "".join(map(_signature, models))
    head += [imp for imp, used in _imports(code) if used]
    head += [_IMPORTS[name] for name in sorted(set().union(*(m.imports for m in models)))]
    head += ["", "from ppl import runtime as rt", ""]
    body: list[str] = []
    source_map = []
    for m, e, g in zip(models, functions, guides, strict=True):
        body += ["", _signature(m)]
        name = f"{m.name.upper()}_INFER = "
        infer = (pprint.pformat(without_site(m.infer), width=WIDTH - len(name),
                                sort_dicts=False) if m.infer else "None")
        body += [name + infer.replace("\n", "\n" + " " * len(name)), "", ""]
        for f in (e, g):
            if f is None:
                continue
            if f is g:
                body += [""]
            offset = sum(x.count("\n") + 1 for x in head + body) + 1  # first line, 1-based
            source_map += [(offset + a, offset + b, ref) for a, b, ref in f.spans]
            body += [f.text(), ""]
    last = models[-1]
    tail = [
        "",
        'if __name__ == "__main__":',
        f"    rt.main({last.name}, {last.name.upper()}_SIGNATURE, {last.name.upper()}_INFER"
        + (f", transformed={last.name}_transformed_data"
           if any(t.kind == "transformed" for t in last.transformed) else "")
        + (f", guide={last.guide.name}" if last.guide is not None else "") + ")",
        "",
    ]
    return "\n".join(head + body + tail), source_map
