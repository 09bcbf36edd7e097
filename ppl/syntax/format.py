"""``bdl fmt``: the canonical layout of a BDL file, comments kept.

Two-space indentation, one statement a line, single spaces around binary operators
(none around ``^``), ``name=value`` keywords, one blank line between top-level items.
Comments stay where they were relative to statements (own-line comments before the next
statement, end-of-line comments after theirs). The output parses to the same AST, and
formatting is idempotent: ``fmt(fmt(x)) == fmt(x)``.
"""

from __future__ import annotations

from . import ast
from .parser import parse

INDENT = "  "
LINE_LIMIT = 88
_PREC = {
    "<": 1, ">": 1, "<=": 1, ">=": 1, "==": 1, "!=": 1,
    "+": 2, "-": 2, "*": 3, "/": 3, "@": 3, "%": 3, "neg": 4, "^": 5,
}


def expr(e: ast.Expr, parent: int = 0) -> str:
    if isinstance(e, ast.Number):
        text = e.text
        return f"({text})" if text.startswith("-") and parent >= _PREC["neg"] else text
    if isinstance(e, ast.String):
        return '"' + e.value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(e, ast.Bool):
        return "true" if e.value else "false"
    if isinstance(e, ast.Name):
        return e.id
    if isinstance(e, ast.Neg):
        text = "-" + expr(e.operand, _PREC["neg"])
        return f"({text})" if parent > _PREC["neg"] else text
    if isinstance(e, ast.BinOp):
        p = _PREC[e.op]
        if e.op == "^":
            text = f"{expr(e.left, p + 1)}^{expr(e.right, p)}"
        else:
            text = f"{expr(e.left, p)} {e.op} {expr(e.right, p + 1)}"
        return f"({text})" if parent > p else text
    if isinstance(e, ast.Call):
        parts = [expr(a) for a in e.args] + [f"{k.name}={expr(k.value)}" for k in e.kwargs]
        return f"{expr(e.func, 9)}({', '.join(parts)})"
    if isinstance(e, ast.Index):
        return f"{expr(e.value, 9)}[{', '.join(expr(i) for i in e.indices)}]"
    if isinstance(e, ast.Slice):
        start = expr(e.start) if e.start is not None else ""
        stop = expr(e.stop) if e.stop is not None else ""
        return f"{start}:{stop}"
    if isinstance(e, ast.Attr):
        return f"{expr(e.value, 9)}.{e.attr}"
    if isinstance(e, ast.ListLit):
        return "[" + ", ".join(expr(i) for i in e.items) + "]"
    if isinstance(e, ast.FunctionLit):
        # the lowest precedence: parenthesised wherever it is an operand
        text = f"({', '.join(e.params)}) => {expr(e.body)}"
        return f"({text})" if parent > 0 else text
    raise TypeError(type(e).__name__)


def type_text(t: ast.Type) -> str:
    out = t.base
    if t.bounds:
        out += "<" + ", ".join(f"{b.name}={_bound(b.value)}" for b in t.bounds) + ">"
    if t.dims:
        out += "[" + ", ".join(expr(d) for d in t.dims) + "]"
    return out


def _bound(v: ast.Expr) -> str:
    if isinstance(v, (ast.Number, ast.Name)):
        return expr(v)
    return f"({expr(v)})"


def _wrapped(head: str, call: ast.Call, depth: int) -> list[str]:
    """``head f(`` / one argument a line / ``)``: the layout of a call too long for a line."""
    parts = [expr(a) for a in call.args] + [f"{k.name}={expr(k.value)}" for k in call.kwargs]
    lines = [INDENT * depth + f"{head}{expr(call.func, 9)}("]
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


class _Writer:
    def __init__(self, comments: list[tuple[int, int, str]]):
        self.lines: list[str] = []
        self.comments = sorted(comments)
        self.i = 0

    def flush_before(self, line: int, depth: int) -> None:
        while self.i < len(self.comments) and self.comments[self.i][0] < line:
            self.lines.append(INDENT * depth + self.comments[self.i][2].rstrip())
            self.i += 1

    def trailing(self, line: int) -> str:
        if self.i < len(self.comments) and self.comments[self.i][0] == line:
            text = self.comments[self.i][2].rstrip()
            self.i += 1
            return "  " + text
        return ""

    def emit(self, depth: int, text: str | list[str], line: int, end_line: int | None = None
             ) -> None:
        self.flush_before(line, depth)
        # comments inside a multi-line statement move above it
        while end_line and self.i < len(self.comments) and line <= self.comments[self.i][0] \
                < end_line:
            self.lines.append(INDENT * depth + self.comments[self.i][2].rstrip())
            self.i += 1
        lines = [INDENT * depth + text] if isinstance(text, str) else list(text)
        lines[-1] += self.trailing(end_line or line)
        self.lines.extend(lines)

    def body(self, stmts, depth: int, close_line: int | None) -> None:
        for s in stmts:
            if isinstance(s, ast.Plate):
                head = "plate " + (f"{s.index} in " if s.index else "") + expr(s.size)
                if s.batch is not None:
                    head += f" batch {expr(s.batch)}"
                self.emit(depth, head + " {", s.span.line)
                self.body(s.body, depth + 1, s.span.end_line)
                self.flush_before(s.span.end_line or s.span.line, depth + 1)
                self.lines.append(INDENT * depth + "}" + self.trailing(s.span.end_line or 0))
            else:
                self.emit(depth, stmt_lines(s, depth), s.span.line, s.span.end_line)


def format_program(program: ast.Program) -> str:
    w = _Writer(program.comments)
    items = sorted([*program.models, *program.guides, *program.infers],
                   key=lambda n: (n.span.line, n.span.col))
    for k, item in enumerate(items):
        if k > 0:
            w.lines.append("")
        if isinstance(item, ast.Model):
            args = [f"{a.name}: {type_text(a.type)}{'?' if a.optional else ''}"
                    for a in item.args]
            head = f"model {item.name}({', '.join(args)}) {{"
            if len(head) > LINE_LIMIT:
                head = [f"model {item.name}(", *(f"{INDENT}{a}," for a in args), ") {"]
            w.emit(0, head, item.span.line)
            end = _model_end(item)
            w.body(item.body, 1, end)
            w.flush_before(end + 1 if end else 10**9, 1)
            w.lines.append("}" + w.trailing(end or 0))
        elif isinstance(item, ast.Guide):
            w.emit(0, f"guide {item.name} {{", item.span.line)
            end = _model_end(item)
            w.body(item.body, 1, end)
            w.flush_before(end + 1 if end else 10**9, 1)
            w.lines.append("}" + w.trailing(end or 0))
        else:
            target = f"{item.model} with " if item.model else ""
            parts = [expr(a) for a in item.args] + [f"{k.name}={expr(k.value)}"
                                                    for k in item.options]
            line = f"infer {target}{item.method}({', '.join(parts)})"
            if len(line) > LINE_LIMIT:
                line = [f"infer {target}{item.method}(",
                        *(f"{INDENT}{part}," for part in parts), ")"]
            w.emit(0, line, item.span.line, item.span.end_line)
    w.flush_before(10**9, 0)
    while w.lines and w.lines[0] == "":
        w.lines.pop(0)
    return "\n".join(_squeeze(w.lines)) + "\n"


def _model_end(m: ast.Model | ast.Guide) -> int | None:
    return getattr(m, "end_line", None)


def _squeeze(lines: list[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        if line == "" and out and out[-1] == "":
            continue
        out.append(line)
    return out


def fmt(text: str, filename: str = "<string>") -> str:
    """Canonical layout of ``text`` (raises BdlError when it does not parse)."""
    return format_program(parse(text, filename))
