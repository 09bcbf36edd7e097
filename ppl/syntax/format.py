"""``bdl fmt``: the canonical layout of a BDL file, comments kept.

Two-space indentation, one statement a line, single spaces around binary operators
(none around ``^``), parentheses only where the grammar needs them, ``name=value``
keywords, one blank line between top-level items. Comments stay where they were written
(own-line comments before the next statement, end-of-line comments after the statement,
header or ``}`` whose line they end). The output parses to the same AST (``fmt`` checks
it, and refuses rather than return another program), and formatting is idempotent:
``fmt(fmt(x)) == fmt(x)``.
"""

from __future__ import annotations

from . import ast
from .diagnostics import BdlError, Diagnostic, Span
from .parser import parse

INDENT = "  "
LINE_LIMIT = 88

# The grammar's expression levels, lowest to highest (grammar/bdl.lark): what a node is,
# and what each operand position takes. An operand below what its position takes is
# parenthesised; nothing else is.
_EXPR, _COMPARE, _ARITH, _TERM, _UNARY, _POWER, _POSTFIX = range(7)
_LEVEL = {
    "<": _COMPARE, ">": _COMPARE, "<=": _COMPARE, ">=": _COMPARE, "==": _COMPARE,
    "!=": _COMPARE, "+": _ARITH, "-": _ARITH, "*": _TERM, "/": _TERM, "@": _TERM, "%": _TERM,
    "^": _POWER,
}
# (left, right) operand levels of each kind of binary operator: comparisons do not chain
# (both sides arith), + - * / are left-associative, ^ is right-associative and takes a
# postfix base and a unary exponent (x^-y, -x^2 == -(x^2))
_OPERANDS = {
    _COMPARE: (_ARITH, _ARITH), _ARITH: (_ARITH, _TERM), _TERM: (_TERM, _UNARY),
    _POWER: (_POSTFIX, _UNARY),
}
# how a string's characters are written between its quotes (the escapes of
# docs/language.md, "Lexical structure"; the parser reads them back)
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _level(e: ast.Expr) -> int:
    if isinstance(e, ast.FunctionLit):
        return _EXPR
    if isinstance(e, ast.BinOp):
        return _LEVEL[e.op]
    if isinstance(e, ast.Neg) or (isinstance(e, ast.Number) and e.text.startswith("-")):
        return _UNARY  # a negative literal is unary minus on a number
    return _POSTFIX


def string_text(value: str) -> str:
    """A string literal that reads back as ``value``."""
    return '"' + "".join(_ESCAPES.get(c, c) for c in value) + '"'


def expr(e: ast.Expr, need: int = _EXPR) -> str:
    """``e`` as BDL source, parenthesised when it is below the level ``need``."""
    text = _expr_text(e)
    return f"({text})" if _level(e) < need else text


def _expr_text(e: ast.Expr) -> str:
    if isinstance(e, ast.Number):
        return e.text
    if isinstance(e, ast.String):
        return string_text(e.value)
    if isinstance(e, ast.Bool):
        return "true" if e.value else "false"
    if isinstance(e, ast.Name):
        return e.id
    if isinstance(e, ast.Neg):
        return "-" + expr(e.operand, _UNARY)
    if isinstance(e, ast.BinOp):
        left, right = _OPERANDS[_LEVEL[e.op]]
        if e.op == "^":
            return f"{expr(e.left, left)}^{expr(e.right, right)}"
        return f"{expr(e.left, left)} {e.op} {expr(e.right, right)}"
    if isinstance(e, ast.Call):
        parts = [expr(a) for a in e.args] + [f"{k.name}={expr(k.value)}" for k in e.kwargs]
        return f"{expr(e.func, _POSTFIX)}({', '.join(parts)})"
    if isinstance(e, ast.Index):
        return f"{expr(e.value, _POSTFIX)}[{', '.join(expr(i) for i in e.indices)}]"
    if isinstance(e, ast.Slice):
        start = expr(e.start) if e.start is not None else ""
        stop = expr(e.stop) if e.stop is not None else ""
        return f"{start}:{stop}"
    if isinstance(e, ast.Attr):
        # a number's attribute keeps its parentheses: `2.T` would read as `2.` then `T`
        value = f"({e.value.text})" if isinstance(e.value, ast.Number) else \
            expr(e.value, _POSTFIX)
        return f"{value}.{e.attr}"
    if isinstance(e, ast.ListLit):
        return "[" + ", ".join(expr(i) for i in e.items) + "]"
    if isinstance(e, ast.FunctionLit):
        return f"({', '.join(e.params)}) => {expr(e.body)}"
    raise TypeError(type(e).__name__)


def type_text(t: ast.Type) -> str:
    out = t.base
    if t.bounds:
        out += "<" + ", ".join(f"{b.name}={_bound(b.value)}" for b in t.bounds) + ">"
    if t.dims:
        out += "[" + ", ".join(expr(d) for d in t.dims) + "]"
    return out


def _bound(v: ast.Expr) -> str:
    # a bound takes a name, a number with at most one sign, or a parenthesised expression
    if isinstance(v, ast.Name) or (isinstance(v, ast.Number) and not v.text.startswith("--")):
        return expr(v)
    return f"({expr(v)})"


def _wrapped(head: str, call: ast.Call, depth: int) -> list[str]:
    """``head f(`` / one argument a line / ``)``: the layout of a call too long for a line."""
    parts = [expr(a) for a in call.args] + [f"{k.name}={expr(k.value)}" for k in call.kwargs]
    lines = [INDENT * depth + f"{head}{expr(call.func, _POSTFIX)}("]
    lines += [INDENT * (depth + 1) + f"{part}," for part in parts]
    lines.append(INDENT * depth + ")")
    return lines


def stmt_lines(s: ast.Stmt, depth: int) -> list[str]:
    """One line, or a wrapped call when the line would pass LINE_LIMIT."""
    text = INDENT * depth + stmt_text(s)
    value = getattr(s, "dist", None) or getattr(s, "value", None) or getattr(s, "init", None)
    if len(text) <= LINE_LIMIT or not isinstance(value, ast.Call):
        return [text]
    head = stmt_text(s)[: -len(expr(value))]
    return _wrapped(head, value, depth)


def stmt_text(s: ast.Stmt) -> str:
    if isinstance(s, ast.Sample):
        t = f": {type_text(s.type)}" if s.type is not None else ""
        return f"{s.name}{t} ~ {expr(s.dist)}"
    if isinstance(s, ast.Assign):
        t = f": {type_text(s.type)}" if s.type is not None else ""
        return f"{s.name}{t} = {expr(s.value)}"
    if isinstance(s, ast.Param):
        return f"param {s.name}: {type_text(s.type)} = {expr(s.init)}"
    if isinstance(s, ast.Factor):
        return f"factor {expr(s.value)}"
    raise TypeError(type(s).__name__)


class _Source:
    """Where a header's ``{`` and an infer line's closing ``)`` are in the source text
    (the AST does not keep them), found outside strings and comments."""

    def __init__(self, text: str | None):
        self.rows = text.split("\n") if text is not None else None

    def _chars(self, line: int, col: int):
        """(line, char) of the code from 1-based (line, col) on."""
        for i in range(line - 1, len(self.rows)):
            row, j, quoted = self.rows[i], (col - 1 if i == line - 1 else 0), False
            while j < len(row):
                c = row[j]
                if quoted:
                    quoted = c != '"'
                    j += 1 if c != "\\" else 2
                    continue
                if c == "#":
                    break
                quoted = c == '"'
                if not quoted:
                    yield i + 1, c
                j += 1

    def brace(self, span) -> int:
        """The line of the first ``{`` from ``span`` on: a model, guide or plate header's."""
        if self.rows is not None:
            for line, c in self._chars(span.line, span.col):
                if c == "{":
                    return line
        return span.line

    def closing(self, span) -> int:
        """The line of the ``)`` that closes the first ``(`` from ``span`` on."""
        if self.rows is not None:
            depth = 0
            for line, c in self._chars(span.line, span.col):
                if c in "([":
                    depth += 1
                elif c in ")]":
                    depth -= 1
                    if depth == 0:
                        return line
        return span.end_line or span.line


class _Writer:
    """The output lines, each with the source line it came from; the comments, placed as
    they were written: a comment on a line of its own before the next statement, a
    comment after code after the statement, header or ``}`` that ends its line."""

    def __init__(self, comments: list[tuple[int, int, str]], source: _Source):
        self.lines: list[str] = []
        self.origin: list[int] = []  # per output line: its source line (0 for none)
        self.comments = sorted(comments)
        self.i = 0
        self.source = source

    def add(self, text: str, line: int) -> None:
        self.lines.append(text)
        self.origin.append(line)

    def flush_before(self, line: int, depth: int) -> None:
        while self.i < len(self.comments) and self.comments[self.i][0] < line:
            c = self.comments[self.i]
            self.add(INDENT * depth + c[2].rstrip(), c[0])
            self.i += 1

    def trailing(self, line: int, next_line: int | None) -> str:
        """The comment at the end of ``line``, unless code that starts there on ``line``
        (``next_line``: the next statement, or a closing ``}``) ends it instead."""
        if next_line == line:
            return ""
        if self.i < len(self.comments) and self.comments[self.i][0] == line:
            text = self.comments[self.i][2].rstrip()
            self.i += 1
            return "  " + text
        return ""

    def emit(self, depth: int, text: str | list[str], line: int, end_line: int | None,
             next_line: int | None, brace: int | None = None) -> None:
        """A statement or header from source lines ``line..end_line``; a header's ``{``
        may stand on a later line, ``brace``."""
        end_line = end_line or line
        self.flush_before(line, depth)
        # comments inside a multi-line statement move above it
        while self.i < len(self.comments) and line <= self.comments[self.i][0] < end_line:
            self.add(INDENT * depth + self.comments[self.i][2].rstrip(), line)
            self.i += 1
        lines = [INDENT * depth + text] if isinstance(text, str) else list(text)
        after = self.trailing(end_line, next_line)
        if not after and brace is not None and brace > end_line and next_line != brace:
            # `{  # c` on a line of its own: the comment ends the header's line; those
            # between the header and its `{` open the body
            at = [k for k in range(self.i, len(self.comments)) if self.comments[k][0] == brace]
            if at:
                after = "  " + self.comments.pop(at[0])[2].rstrip()
        lines[-1] += after
        for out in lines:
            self.add(out, line)

    def close(self, depth: int, line: int | None, next_line: int | None) -> None:
        """A block's ``}``, from source line ``line``, after the comments before it."""
        if line is None:
            self.flush_before(10**9, depth + 1)
            self.add(INDENT * depth + "}", 0)
            return
        self.flush_before(line, depth + 1)
        self.add(INDENT * depth + "}" + self.trailing(line, next_line), line)

    def body(self, stmts, depth: int, close_line: int | None) -> None:
        for k, s in enumerate(stmts):
            next_line = stmts[k + 1].span.line if k + 1 < len(stmts) else close_line
            if isinstance(s, ast.Plate):
                head = "plate " + (f"{s.index} in " if s.index else "") + expr(s.size)
                if s.batch is not None:
                    head += f" batch {expr(s.batch)}"
                end = s.span.end_line or None
                first = s.body[0].span.line if s.body else end
                self.emit(depth, head + " {", s.span.line, (s.batch or s.size).span.end_line,
                          first, self.source.brace(s.span))
                self.body(s.body, depth + 1, end)
                self.close(depth, end, next_line)
            else:
                self.emit(depth, stmt_lines(s, depth), s.span.line, s.span.end_line, next_line)


def format_program(program: ast.Program, source: str | None = None) -> str:
    """The canonical layout of ``program``; ``source``, the text it was parsed from,
    places the comments of multi-line headers and infer lines."""
    return "\n".join(_layout(program, source).lines) + "\n"


def _layout(program: ast.Program, source: str | None) -> _Writer:
    w = _Writer(program.comments, _Source(source))
    items = sorted([*program.models, *program.guides, *program.infers],
                   key=lambda n: (n.span.line, n.span.col))
    for k, item in enumerate(items):
        next_line = items[k + 1].span.line if k + 1 < len(items) else None
        if k > 0:
            w.add("", 0)
        if isinstance(item, (ast.Model, ast.Guide)):
            if isinstance(item, ast.Model):
                args = [f"{a.name}: {type_text(a.type)}{'?' if a.optional else ''}"
                        for a in item.args]
                head = f"model {item.name}({', '.join(args)}) {{"
                if len(head) > LINE_LIMIT:
                    head = [f"model {item.name}(", *(f"{INDENT}{a}," for a in args), ") {"]
                head_end = w.source.closing(item.span)
            else:
                head, head_end = f"guide {item.name} {{", item.span.line
            end = _model_end(item)
            first = item.body[0].span.line if item.body else end
            w.emit(0, head, item.span.line, head_end, first, w.source.brace(item.span))
            w.body(item.body, 1, end)
            w.close(0, end, next_line)
        else:
            target = f"{item.model} with " if item.model else ""
            parts = [expr(a) for a in item.args] + [f"{k.name}={expr(k.value)}"
                                                    for k in item.options]
            line = f"infer {target}{item.method}({', '.join(parts)})"
            if len(line) > LINE_LIMIT:
                line = [f"infer {target}{item.method}(",
                        *(f"{INDENT}{part}," for part in parts), ")"]
            w.emit(0, line, item.span.line, w.source.closing(item.span), next_line)
    w.flush_before(10**9, 0)
    while w.lines and w.lines[0] == "":
        w.lines.pop(0)
        w.origin.pop(0)
    _squeeze(w)
    return w


def _model_end(m: ast.Model | ast.Guide) -> int | None:
    return getattr(m, "end_line", None)


def _squeeze(w: _Writer) -> None:
    """No two blank lines in a row."""
    keep = [k for k, line in enumerate(w.lines)
            if not (line == "" and k > 0 and w.lines[k - 1] == "")]
    w.lines = [w.lines[k] for k in keep]
    w.origin = [w.origin[k] for k in keep]


def fmt(text: str, filename: str = "<string>") -> str:
    """Canonical layout of ``text`` (raises BdlError when it does not parse, or when its
    layout would not read back as the same program: then nothing should be written)."""
    program = parse(text, filename)
    w = _layout(program, text)
    out = "\n".join(w.lines) + "\n"
    _same_program(program, out, w.origin, filename, text)
    return out


def _same_program(program: ast.Program, out: str, origin: list[int], filename: str,
                  text: str) -> None:
    """Raise a located BdlError when ``out`` (the layout of ``program``) does not parse
    back to ``program``: a bug of the formatter, refused rather than written."""
    try:
        again = parse(out, filename)
    except BdlError as e:
        d = e.diagnostics[0]
        line = origin[d.span.line - 1] if 0 < d.span.line <= len(origin) else 0
        raise _refusal(f"its layout would not parse ({d.message})", line, filename,
                       text) from None
    if again != program:
        raise _refusal("its layout would read as a different program",
                       _first_difference(program, again), filename, text)


def _refusal(why: str, line: int, filename: str, text: str) -> BdlError:
    rows = text.split("\n")
    line = line if 0 < line <= len(rows) else 1
    col = len(rows[line - 1]) - len(rows[line - 1].lstrip()) + 1
    return BdlError([Diagnostic(
        f"bdl fmt cannot lay out this statement: {why}", Span(line, col),
        notes=["the file is left as it is; this is a bug in bdl fmt, please report it"])],
        filename, text)


def _first_difference(a: ast.Program, b: ast.Program) -> int:
    """The source line of the first statement (or header) of ``a`` that ``b`` differs at."""
    def items(p):
        return sorted([*p.models, *p.guides, *p.infers], key=lambda n: (n.span.line, n.span.col))

    def stmts(x, y) -> int | None:
        for s, t in zip(x, y, strict=False):
            if s == t:
                continue
            if isinstance(s, ast.Plate) and isinstance(t, ast.Plate) and \
                    (s.index, s.size, s.batch) == (t.index, t.size, t.batch):
                return stmts(s.body, t.body) or s.span.line
            return s.span.line
        return None

    for x, y in zip(items(a), items(b), strict=False):
        if x == y:
            continue
        same_head = type(x) is type(y) and isinstance(x, (ast.Model, ast.Guide)) and \
            x.name == y.name and getattr(x, "args", None) == getattr(y, "args", None)
        return (stmts(x.body, y.body) if same_head else None) or x.span.line
    return 1
