"""User-facing diagnostics: ``FILE:LINE:COL: error: MESSAGE``, the line and a caret.

Every error a user can cause -- syntax, names, types, shapes, sizes, data -- is a
:class:`Diagnostic`; several are collected and raised together as :class:`BdlError`, and
the CLI renders them and exits with status 1 (never a Python traceback).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Span:
    """1-based line/column of the first character and one past the last."""

    line: int
    col: int
    end_line: int | None = None
    end_col: int | None = None

    def __str__(self) -> str:
        return f"{self.line}:{self.col}"


NO_SPAN = Span(0, 0)


@dataclass
class Diagnostic:
    message: str
    span: Span = NO_SPAN
    severity: str = "error"
    notes: list[str] = field(default_factory=list)

    def render(self, filename: str, source: str | None) -> str:
        """Render as ``file:line:col: severity: message`` plus the line and a caret."""
        if self.span.line <= 0:
            head = f"{filename}: {self.severity}: {self.message}"
            return "\n".join([head, *(f"  note: {n}" for n in self.notes)])
        head = f"{filename}:{self.span.line}:{self.span.col}: {self.severity}: {self.message}"
        out = [head]
        # Lines as the parser counts them: only '\n' ends one (not '\f', '\u2028', ...).
        lines = source.split("\n") if source is not None else []
        if 0 < self.span.line <= len(lines) and lines[self.span.line - 1].strip():
            text = _visible(lines[self.span.line - 1].rstrip("\r"))
            out.append(f"  {text}")
            width = 1
            if self.span.end_line == self.span.line and self.span.end_col:
                width = max(1, self.span.end_col - self.span.col)
            width = min(width, max(1, len(text) - self.span.col + 1))
            out.append("  " + " " * (self.span.col - 1) + "^" + "~" * (width - 1))
        out.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(out)


def _visible(line: str) -> str:
    """The line with one visible character per invisible one, so the caret still lines up."""
    return "".join(c if c.isprintable() else " " if c == "\t" else "?" for c in line)


class BdlError(Exception):
    """One or more user errors, each with a location; rendered by :meth:`render`."""

    def __init__(self, diagnostics: list[Diagnostic], filename: str = "<string>",
                 source: str | None = None):
        self.diagnostics = list(diagnostics)
        self.filename = filename
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(d.render(self.filename, self.source) for d in self.diagnostics)

    def with_source(self, filename: str, source: str | None) -> BdlError:
        self.filename, self.source = filename, source
        self.args = (self.render(),)
        return self


def error(message: str, span: Span = NO_SPAN, notes: list[str] | None = None) -> BdlError:
    """A single located error, ready to raise."""
    return BdlError([Diagnostic(message, span, "error", notes or [])])
