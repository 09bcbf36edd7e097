"""Parse BDL source into an AST, reporting every independent syntax error.

The grammar (``grammar/bdl.lark``, installed as ``ppl.grammar``) is LALR. A small
post-lexer drops newlines inside ``( )`` and ``[ ]`` so that calls may wrap. On a syntax
error the parser records a located, readable message, blanks the offending statement
(keeping line and column numbers intact) and parses again, so one run reports several
independent errors, as stanc and compilers do.
"""

from __future__ import annotations

import functools
import math
import re
from importlib import resources

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput

from . import ast
from .diagnostics import BdlError, Diagnostic, Span

MAX_SYNTAX_ERRORS = 20

# the deepest parse tree taken: every stage after the parser (this module's transform,
# the checker, lowering, code generation) walks expressions recursively, and Python's
# default recursion limit (1000 frames) stops them between 300 and 400 levels (a sum of
# 400 terms, 200 calls one inside another); below that with room to spare for a caller's
# own stack, deeper input is one located error instead of a RecursionError
MAX_TREE_DEPTH = 256
# the rules whose start is shown for an expression too deep (its statement)
_STATEMENTS = frozenset({"sample", "assign", "param", "factor", "plate", "infer", "arg"})

_OPEN = {"LPAR": "(", "LSQB": "["}
_CLOSE = {"RPAR", "RSQB"}
_BRACES = {"LBRACE", "RBRACE"}

# How expected tokens read in a message.
_TOKEN_WORDS = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "_NL": "end of line",
    "$END": "end of file", "COMPOP": "a comparison", "MULOP": "an operator",
    "OPTIONAL": "'?'", "LT": "'<'", "GT": "'>'", "PLUS": "'+'", "MINUS": "'-'",
    "ARROW": "'=>'",
}


class _BracketNewlines:
    """Post-lexer: newlines inside brackets do not end a statement."""

    always_accept = ("_NL",)

    def __init__(self) -> None:
        self.open: list[Token] = []
        self.grouping: list[bool] = []  # per open bracket: a '(' that is not a call's
        self.cut: list[bool] = []
        self.braces: list[Token] = []  # unclosed '{', for end-of-file messages
        self.closed: Token | None = None  # the '}' that last closed a model

    def process(self, stream):
        self.open = []
        self.grouping = []
        self.cut = []
        self.braces = []
        self.closed = None
        prev = None
        for tok in stream:
            if tok.type in _OPEN:
                self.open.append(tok)
                # a '(' that does not follow a callee groups an expression (or starts a
                # function literal's parameters); messages use it to word what is expected
                self.grouping.append(tok.type == "LPAR" and (
                    prev is None or prev.type not in ("NAME", "RPAR", "RSQB")))
            elif tok.type in _CLOSE:
                if self.open:
                    self.open.pop()
                    self.grouping.pop()
            elif tok.type in _BRACES:
                self.cut = self.grouping  # what was open when a brace cut it short
                self.open = []
                self.grouping = []
                if tok.type == "LBRACE":
                    self.braces.append(tok)
                elif self.braces:
                    self.braces.pop()
                    if not self.braces:
                        self.closed = tok
            elif tok.type == "_NL" and self.open:
                continue
            prev = tok
            yield tok


@functools.lru_cache(maxsize=1)
def grammar_text() -> str:
    return resources.files("ppl.grammar").joinpath("bdl.lark").read_text()


@functools.lru_cache(maxsize=1)
def _lark() -> tuple[Lark, _BracketNewlines]:
    post = _BracketNewlines()
    comments: list[Token] = []
    parser = Lark(
        grammar_text(), parser="lalr", postlex=post, propagate_positions=True,
        maybe_placeholders=True, lexer_callbacks={"COMMENT": comments.append},
    )
    parser._bdl_comments = comments  # collected per parse for the formatter
    return parser, post


def _span_of(meta) -> Span:
    if getattr(meta, "empty", True):
        return Span(0, 0)
    return Span(meta.line, meta.column, meta.end_line, meta.end_column)


def _tok_span(tok: Token) -> Span:
    return Span(tok.line, tok.column, tok.end_line, tok.end_column)


def _parse_number(text: str) -> int | float:
    if any(c in text for c in ".eE"):
        return float(text)
    return int(text)


@v_args(meta=True)
class _Build(Transformer):
    """Parse tree -> AST, one method per grammar rule."""

    def __init__(self) -> None:
        super().__init__()
        # Errors the grammar cannot express: a function literal's parameter list is
        # parsed as expressions (see grammar/bdl.lark) and must hold bare names only.
        self.errors: list[Diagnostic] = []

    def start(self, meta, items):
        models = [i for i in items if isinstance(i, ast.Model)]
        infers = [i for i in items if isinstance(i, ast.Infer)]
        guides = [i for i in items if isinstance(i, ast.Guide)]
        return ast.Program(models, infers, guides=guides, span=_span_of(meta))

    def model(self, meta, c):
        name, args, body = c
        self._not_keyword(name)
        model = ast.Model(str(name), args or [], body, span=_tok_span(name))
        model.end_line = meta.end_line  # the closing brace, for the formatter's comments
        return model

    def guide(self, meta, c):
        name, body = c
        self._not_keyword(name)
        guide = ast.Guide(str(name), body, span=_tok_span(name))
        guide.end_line = meta.end_line  # the closing brace, for the formatter's comments
        return guide

    def args(self, meta, c):
        return list(c)

    def arg(self, meta, c):
        name, typ, opt = c[0], c[1], (c[2] if len(c) > 2 else None)
        self._not_keyword(name)
        return ast.Arg(str(name), typ, opt is not None, span=_tok_span(name))

    def type(self, meta, c):
        name = c[0]
        bounds, dims = [], []
        for item in c[1:]:
            if isinstance(item, tuple) and item[0] == "constraint":
                bounds = item[1]
            elif isinstance(item, tuple) and item[0] == "dims":
                dims = item[1]
        return ast.Type(str(name), bounds, dims, span=_span_of(meta))

    def constraint(self, meta, c):
        return ("constraint", [x for x in c if isinstance(x, ast.Bound)])

    def bound(self, meta, c):
        value = c[1]
        if isinstance(value, Token):  # a bare name: real<lower=a>
            value = ast.Name(str(value), span=_tok_span(value))
        return ast.Bound(str(c[0]), value, span=_tok_span(c[0]))

    def _number(self, tok: Token) -> int | float:
        """The literal's value; one too large for a 64-bit float is an error here (the
        generated code would read ``inf``)."""
        value = _parse_number(str(tok))
        if isinstance(value, float) and math.isinf(value):
            self.errors.append(Diagnostic(f"the number {tok} is too large: it overflows a "
                                          "64-bit float", _tok_span(tok)))
            return 0.0
        return value

    def signed_number(self, meta, c):
        num = c[-1]
        value = self._number(num)
        if len(c) == 2:
            return ast.Number(-value, "-" + str(num), span=_span_of(meta))
        return ast.Number(value, str(num), span=_span_of(meta))

    def dims(self, meta, c):
        return ("dims", list(c))

    def block(self, meta, c):
        return [s for s in c if isinstance(s, ast.Stmt)]

    def sample(self, meta, c):
        name, typ, dist = c
        return ast.Sample(str(name), typ, dist, span=_span_of(meta), name_span=_tok_span(name))

    def assign(self, meta, c):
        name, typ, value = c
        return ast.Assign(str(name), typ, value, span=_span_of(meta), name_span=_tok_span(name))

    def _not_keyword(self, tok) -> None:
        """A name the grammar takes where a keyword also fits (``param guide``): refused
        as a keyword is anywhere else a name is written."""
        if tok is not None and str(tok) in _STATEMENT_KEYWORDS:
            self.errors.append(Diagnostic(
                f"unexpected '{tok}'; expected a name", _tok_span(tok),
                notes=[f"'{tok}' is a keyword: choose another name"]))

    def param(self, meta, c):
        name, typ, init = c
        self._not_keyword(name)
        return ast.Param(str(name), typ, init, span=_span_of(meta), name_span=_tok_span(name))

    def factor(self, meta, c):
        return ast.Factor(c[0], span=_span_of(meta))

    def plate(self, meta, c):
        index, size, batch, body = c
        self._not_keyword(index)
        return ast.Plate(str(index) if index is not None else None, size, batch, body,
                         span=_span_of(meta))

    def infer(self, meta, c):
        model, method, callargs = c
        args, kwargs = callargs if callargs is not None else ([], [])
        return ast.Infer(str(model) if model is not None else None, str(method), args, kwargs,
                         span=_tok_span(method))

    # ---- expressions ----
    def binop(self, meta, c):
        left, op, right = c
        return ast.BinOp(str(op), left, right, span=_span_of(meta))

    def neg(self, meta, c):
        operand = c[-1]
        if isinstance(operand, ast.Number):
            return ast.Number(-operand.value, "-" + operand.text, span=_span_of(meta))
        return ast.Neg(operand, span=_span_of(meta))

    def pow(self, meta, c):
        return ast.BinOp("^", c[0], c[1], span=_span_of(meta))

    def call(self, meta, c):
        func, callargs = c
        args, kwargs = callargs if callargs is not None else ([], [])
        return ast.Call(func, args, kwargs, span=_span_of(meta))

    def callargs(self, meta, c):
        args = [x for x in c if not isinstance(x, ast.Keyword)]
        kwargs = [x for x in c if isinstance(x, ast.Keyword)]
        return args, kwargs

    def kwarg(self, meta, c):
        return ast.Keyword(str(c[0]), c[1], span=_tok_span(c[0]))

    def index(self, meta, c):
        return ast.Index(c[0], c[1], span=_span_of(meta))

    def indices(self, meta, c):
        return list(c)

    def slice(self, meta, c):
        start, stop = c
        return ast.Slice(start, stop, span=_span_of(meta))

    def attr(self, meta, c):
        return ast.Attr(c[0], str(c[1]), span=_span_of(meta))

    def number(self, meta, c):
        return ast.Number(self._number(c[0]), str(c[0]), span=_tok_span(c[0]))

    def string(self, meta, c):
        tok = c[0]
        value, bad = _unescape(str(tok)[1:-1])
        if bad is not None:
            at = tok.column + 1 + bad
            self.errors.append(Diagnostic(
                f"unknown escape '{str(tok)[1 + bad:3 + bad]}' in a string",
                Span(tok.line, at, tok.line, at + 2),
                notes=["a string's escapes are \\n, \\t, \\r, \\\" and \\\\ (a backslash)"]))
        return ast.String(value, span=_tok_span(tok))

    def true(self, meta, c):
        return ast.Bool(True, span=_span_of(meta))

    def false(self, meta, c):
        return ast.Bool(False, span=_span_of(meta))

    def name(self, meta, c):
        return ast.Name(str(c[0]), span=_tok_span(c[0]))

    def listlit(self, meta, c):
        return ast.ListLit([x for x in c if x is not None], span=_span_of(meta))

    def function(self, meta, c):
        params, spans = [], []
        for p in c[:-1]:
            if p is None:
                continue
            if not isinstance(p, ast.Name):
                self.errors.append(Diagnostic(
                    "a function literal's parameters must be names: (x, t) => ...", p.span))
                continue
            if p.id in params:
                self.errors.append(Diagnostic(f"parameter '{p.id}' is named twice", p.span))
                continue
            params.append(p.id)
            spans.append(p.span)
        return ast.FunctionLit(params, c[-1], spans, span=_span_of(meta))


# a string literal's escapes (docs/language.md, "Lexical structure"); any other character,
# non-ASCII text included, stands for itself
_UNESCAPE = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def _unescape(raw: str) -> tuple[str, int | None]:
    """The text between a string's quotes, escapes read: the value, and the offset in
    ``raw`` of the first unknown escape (None when there is none)."""
    out, bad, j = [], None, 0
    while j < len(raw):
        c = raw[j]
        if c == "\\" and j + 1 < len(raw):
            out.append(_UNESCAPE.get(raw[j + 1], raw[j:j + 2]))
            if raw[j + 1] not in _UNESCAPE and bad is None:
                bad = j
            j += 2
        else:
            out.append(c)
            j += 1
    return "".join(out), bad


def _describe_token(tok: Token) -> str:
    if tok.type == "$END":
        return "end of file"
    if tok.type == "_NL":
        return "end of line"
    if tok.type == "NAME":
        return f"name '{tok}'"
    if tok.type == "NUMBER":
        return f"number {tok}"
    return f"'{tok}'"


_EXPR_START = {"NAME", "NUMBER", "STRING", "LPAR", "LSQB", "MINUS", "TRUE", "FALSE"}
_CONTINUE = {"PLUS", "MINUS", "MULOP", "COMPOP", "LT", "GT", "CIRCUMFLEX", "DOT", "LPAR", "LSQB",
             "ARROW"}
_CLOSERS = {"RPAR", "RSQB", "COMMA", "RBRACE", "_NL", "SEMICOLON"}


def _describe_expected(parser: Lark, names) -> str:
    names = set(names)
    if "LBRACE" in names:  # a header's '{' may start the next line: the '{' is what's missing
        names.discard("_NL")
    words = set()
    if {"NAME", "NUMBER"} <= names:
        names -= _EXPR_START
        words.add("an expression")
    if names & _CLOSERS:
        names -= _CONTINUE
    for n in names:
        if n in _TOKEN_WORDS:
            words.add(_TOKEN_WORDS[n])
            continue
        try:
            pattern = parser.get_terminal(n).pattern
        except KeyError:
            continue
        if pattern.type == "str":
            words.add(f"'{pattern.value}'")
    if not words:
        return ""
    ordered = sorted(words, key=lambda w: (not w.startswith("'"), w))
    if len(ordered) > 6:
        ordered = ordered[:6] + ["..."]
    if len(ordered) == 1:
        return "expected " + ordered[0]
    return "expected " + ", ".join(ordered[:-1]) + " or " + ordered[-1]


def _syntax_message(parser: Lark, e: UnexpectedInput, post: _BracketNewlines
                    ) -> tuple[str, list[str]]:
    """The message and notes for one syntax error."""
    if isinstance(e, UnexpectedCharacters):
        if e.char == '"':
            return "unterminated string (a string must end with '\"' on the same line)", []
        if not e.char.isprintable():
            return f"unexpected invisible character U+{ord(e.char):04X}", []
        if _non_ascii_letter(e):
            return (f"unexpected character '{e.char}': names are ASCII (letters A-Z and a-z, "
                    "digits, '_')"), []
        return f"unexpected character '{e.char}'", []
    tok = getattr(e, "token", None)
    names = getattr(e, "accepts", None) or getattr(e, "expected", ()) or ()
    grouping = post.grouping or (post.cut if tok is not None and tok.type in _BRACES else [])
    if grouping and grouping[-1] and "RPAR" in names:
        # inside `( expr` the grammar also allows ',' (a function literal's parameters,
        # `(x, t) => ...`), which is rarely what a missing ')' means
        names = set(names) - {"COMMA"}
    if isinstance(e, UnexpectedEOF) or tok is None or tok.type == "$END":
        if post.open:
            o = post.open[-1]
            closer = ")" if o.type == "LPAR" else "]"
            return (f"unexpected end of file: missing '{closer}'",
                    [f"the '{o}' opened at {o.line}:{o.column} is not closed"])
        if post.braces:
            o = post.braces[-1]
            return ("unexpected end of file: missing '}'",
                    [f"the '{{' opened at {o.line}:{o.column} is not closed"])
        expected = _describe_expected(parser, names)
        return "unexpected end of file" + (f"; {expected}" if expected else ""), []
    return _token_message(parser, e, tok, names), []


def _non_ascii_letter(e: UnexpectedInput) -> bool:
    """A letter outside ASCII (``σ``) where a name could start, which it cannot hold."""
    char = getattr(e, "char", "") if isinstance(e, UnexpectedCharacters) else ""
    return (bool(char) and char.isalpha() and not char.isascii()
            and "NAME" in (getattr(e, "allowed", None) or ()))


def _token_message(parser: Lark, e: UnexpectedInput, tok: Token, names) -> str:
    expected = _describe_expected(parser, names)
    msg = f"unexpected {_describe_token(tok)}"
    if tok.type in ("TILDE", "EQUAL") and "NAME" not in (getattr(e, "expected", ()) or ()):
        msg += "; a '~' or '=' statement must start with a single name"
    return f"{msg}; {expected}" if expected else msg


# Syntax hints: (pattern on the erring line, the note; a callable note gets the match and
# may decline with None; tokens: the error's token types it applies to, None for any).
# Stan habits first, then misspelt keywords and misplaced parts of BDL's own statements.
# One table, read by _hint on every syntax error.
_KEYWORDS = ("model", "guide", "infer", "plate", "param", "factor", "batch", "with", "in",
             "true", "false")
# the keywords that cannot name anything (batch, with, in are keywords only in place)
_STATEMENT_KEYWORDS = ("model", "guide", "infer", "plate", "param", "factor")
# Stan's declaration types and the BDL base type each becomes
_STAN_TYPES = {"vector": "real", "row_vector": "real", "matrix": "real", "real": "real",
               "int": "int", "simplex": "simplex", "ordered": "ordered",
               "positive_ordered": "positive_ordered", "cov_matrix": "cov_matrix",
               "corr_matrix": "corr_matrix", "cholesky_factor_corr": "cholesky_factor_corr",
               "cholesky_factor_cov": "cholesky_factor_cov"}
_DECL = (r"(?P<type>" + "|".join(sorted(_STAN_TYPES, key=len, reverse=True)) +
         r")\s*(?P<bounds><[^>]*>)?\s*(?P<dims>\[[^\]]*\])?\s+(?P<name>[A-Za-z_]\w*)")


def _typo(m: re.Match) -> str | None:
    import difflib

    if m.group(1) in ("model", "guide", "infer"):  # spelt right: the mistake is elsewhere
        return None
    close = difflib.get_close_matches(m.group(1), ("model", "guide", "infer"), n=1,
                                      cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def _stan_decl(m: re.Match, how: str) -> str:
    typ = _STAN_TYPES[m.group("type")] + (m.group("bounds") or "").replace(" ", "")
    return how.format(name=m.group("name"), type=typ + (m.group("dims") or ""))


_COMPARE = {"LT", "GT", "COMPOP"}


def _truncation(m) -> str:
    """Stan's ``y ~ normal(mu, s) T[L, U]``, in BDL's spelling."""
    bounds = [f"{k}={v.strip()}" for k, v in (("low", m.group("low")), ("high", m.group("high")))
              if v is not None and v.strip()]
    dist = re.sub(r"^\s*([A-Za-z_]\w*)", lambda n: _stan_dist(n.group(1)), m.group("dist"))
    return (f"BDL writes a truncation as a distribution: did you mean "
            f"Truncated({dist.strip()}, {', '.join(bounds) or 'low=L, high=U'})?")


_STAN_DISTS = {"lognormal": "LogNormal", "double_exponential": "Laplace", "chi_square": "Chi2",
               "inv_gamma": "InverseGamma", "student_t": "StudentT",
               "neg_binomial_2": "GammaPoisson"}


def _stan_dist(name: str) -> str:
    """Stan's distribution name in BDL's (Pyro's) spelling: ``normal`` -> ``Normal``."""
    if name in _STAN_DISTS:
        return _STAN_DISTS[name]
    return "".join(w[:1].upper() + w[1:] for w in name.split("_")) if name.islower() else name
_HINTS = (
    (re.compile(r"^\s*(for|while)\b"),
     "BDL has no loops: write the statement on whole vectors, `plate n in N { ... }` "
     "for conditionally independent terms, or `scan((carry, x) => ..., init, xs)` for a "
     "recursion over time (AR, GARCH, an HMM's forward pass)", None),
    (re.compile(r"^\s*target\s*\+="),
     "add a term to the log density with `factor(expr)`", None),
    (re.compile(r"^\s*\w+\s*\[.*\]\s*~"),
     "a `~` statement observes or draws a whole variable: write `y ~ ...`; inside "
     "`plate i in N { ... }` its leading dimension is the plate's, and `x[i]` reads the "
     "matching element of other data; a density on part of a latent, such as a random "
     "walk's steps, is `factor(log_prob(Normal(0, s), x[1:] - x[:-1]))`", None),
    (re.compile(r".*?~\s*(?P<dist>.*\))\s*T\s*\[(?P<low>[^,\]]*)(?:,(?P<high>[^\]]*))?\]?"),
     _truncation, None),
    # a Stan argument declaration: model M(vector[N] y)
    (re.compile(r"^\s*model\s+\w+\s*\((?:.*?,)?\s*" + _DECL + r"\s*[,)]"),
     lambda m: _stan_decl(m, "BDL writes the name first: {name}: {type}"), None),
    # a Stan declaration in a body: real<lower=0> sigma;
    (re.compile(r"^\s*" + _DECL + r"\s*;?\s*(#.*)?$"),
     lambda m: _stan_decl(m, "BDL declares a latent where it is drawn: "
                             "{name}: {type} ~ ..."), None),
    (re.compile(r"^\s*([A-Za-z_]\w*)\s+[A-Za-z_]\w*\s*\("), _typo, {"NAME"}),
    (re.compile(r"^\s*plate\s+(\w+)\s+in\s+[^:{]*:\s*([^\s{]+)"),
     lambda m: f"a plate's indices start at 0: write plate {m.group(1)} in {m.group(2)} "
               f"(indices run 0..{m.group(2)}-1)", None),
    (re.compile(r"^\s*(" + "|".join(_KEYWORDS) + r")\s*(:.*)?[~=]"),
     lambda m: f"'{m.group(1)}' is a keyword: choose another name", None),
    (re.compile(r"(<=?|>=?|==|!=)[^<>=!,()]*(<=?|>=?|==|!=)"),
     "comparisons do not chain: a < b < c is written (a < b) * (b < c)", _COMPARE),
    (re.compile(r"^\s*infer\s+(\w+\s*\(.*\))\s*with\s+(\w+)"),
     lambda m: f"the model comes first: infer {m.group(2)} with {m.group(1)}", None),
)


def _hint(line: str, tok_type: str | None) -> str | None:
    """The note for a syntax error on ``line`` at a token of type ``tok_type``, if a
    pattern of :data:`_HINTS` knows the mistake."""
    for pattern, note, tokens in _HINTS:
        if tokens is not None and tok_type not in tokens:
            continue
        m = pattern.search(line) if tokens is _COMPARE else pattern.match(line)
        if m is None:
            continue
        text = note(m) if callable(note) else note
        if text is not None:
            return text
    return None


def _braces(line: str) -> list[tuple[int, str]]:
    """The braces of a line outside strings and comments, with their 0-based columns."""
    out, in_str = [], False
    for j, ch in enumerate(line):
        if ch == '"':
            in_str = not in_str
        elif ch == "#" and not in_str:
            break
        elif not in_str and ch in "{}":
            out.append((j, ch))
    return out


def _code_part(line: str) -> str:
    """The braces of a line outside strings and comments (for counting them)."""
    return "".join(ch for _, ch in _braces(line))


def _brace_depth(lines: list[str], line: int, col: int) -> int:
    """How many '{' are open before 1-based (line, col)."""
    depth = 0
    for i in range(min(line, len(lines) + 1) - 1):
        code = _code_part(lines[i])
        depth += code.count("{") - code.count("}")
    if 0 < line <= len(lines):
        code = _code_part(lines[line - 1][: max(col - 1, 0)])
        depth += code.count("{") - code.count("}")
    return depth


def _blank(text: str, start_line: int, end_line: int, stub: bool) -> str:
    """Blank lines ``start_line..end_line``, keeping line and column numbers elsewhere.

    With ``stub``, the braces of the blanked statement survive: a '}' that closes an
    earlier '{' stays, and a '{' left open becomes a valid block opener (``model _() {``
    at the top level, ``plate 1 {`` inside a model), so that the body after a broken
    model or plate header still parses and reports only its own errors.
    """
    lines = text.split("\n")
    lo, hi = max(start_line, 1) - 1, min(end_line, len(lines))
    if not stub:
        for i in range(lo, hi):
            lines[i] = " " * len(lines[i])
        return "\n".join(lines)
    depth = max(_brace_depth(lines, lo + 1, 1), 0)
    # Braces matched inside the blanked range vanish together.
    keep: list[tuple[int, int, str]] = []
    stack: list[int] = []
    for i in range(lo, hi):
        for j, ch in _braces(lines[i]):
            if ch == "{":
                stack.append(len(keep))
                keep.append((i, j, "{"))
            elif stack:
                keep[stack.pop()] = (-1, 0, "")
            else:
                keep.append((i, j, "}"))
    rows = {i: [" "] * len(lines[i]) for i in range(lo, hi)}
    cursor = dict.fromkeys(rows, 0)
    for i, j, ch in keep:
        if ch == "}":
            depth = max(depth - 1, 0)
            piece = "}"
        elif ch == "{":
            piece = "model _() {" if depth == 0 else "plate 1 {"
            depth += 1
        else:
            continue
        # End the piece at the brace's own column when it fits, so positions stay true.
        at = max(j - len(piece) + 1, cursor[i])
        row = rows[i]
        row.extend(" " * max(at + len(piece) - len(row), 0))
        row[at:at + len(piece)] = piece
        cursor[i] = at + len(piece) + 1
    for i, row in rows.items():
        lines[i] = "".join(row)
    return "\n".join(lines)


def _blank_char(text: str, line: int, col: int) -> str:
    lines = text.split("\n")
    row = lines[line - 1]
    lines[line - 1] = row[: col - 1] + " " + row[col:]
    return "\n".join(lines)


def parse(text: str, filename: str = "<string>") -> ast.Program:
    """Parse ``text``; raise :class:`BdlError` holding every syntax error found."""
    parser, post = _lark()
    work = " " + text[1:] if text.startswith("\ufeff") else text  # a byte-order mark
    diags: list[Diagnostic] = []
    seen: dict[tuple[int, int], int] = {}
    tree = None
    stubbed: set[int] = set()  # lines replaced by recovery stubs
    source_lines = text.split("\n")  # as written (work is blanked by recovery)
    ascii_said = False
    for _ in range(MAX_SYNTAX_ERRORS):
        parser._bdl_comments.clear()
        try:
            tree = parser.parse(work)
            break
        except UnexpectedInput as e:
            tok = getattr(e, "token", None)
            at_eof = isinstance(e, UnexpectedEOF) or (tok is not None and tok.type == "$END")
            line = getattr(e, "line", None) or 0
            col = getattr(e, "column", None) or 0
            if line <= 0 or at_eof:
                line, col = _eof_position(text)
            tries = seen.get((line, col), 0)
            seen[(line, col)] = tries + 1
            stray = (tok is not None and tok.type == "RBRACE"
                     and _brace_depth(work.split("\n"), line, col) <= 0)
            # names are ASCII: said once, not at every use of a name such as 'σ'
            repeated = _non_ascii_letter(e) and ascii_said
            ascii_said = ascii_said or _non_ascii_letter(e)
            if tries == 0 and (at_eof or line not in stubbed) and not repeated:
                message, notes = _syntax_message(parser, e, post)
                if stray:
                    message = "unexpected '}': no '{' is open here"
                if (tok is not None and tok.type == "NAME" and not post.braces and post.closed
                        and "MODEL" in getattr(e, "expected", ())):
                    c = post.closed
                    notes.append(f"this is outside any model: the '}}' at {c.line}:{c.column} "
                                 "closed the model before it")
                habit = _hint(source_lines[line - 1] if line <= len(source_lines) else "",
                              tok.type if tok is not None else None)
                if habit:
                    notes.append(habit)
                if (not notes and post.open and not isinstance(e, UnexpectedCharacters)
                        and post.open[-1].line < line):
                    o = post.open[-1]
                    notes.append(f"the '{o}' opened at {o.line}:{o.column} is not closed")
                span = Span(line, col, line, col + _token_width(e))
                block = _missing_block(e, source_lines, line)
                if block is not None:  # said at the header the '{' belongs to
                    message, span = "unexpected end of line; expected '{'", block
                diags.append(Diagnostic(message, span, "error", notes))
                if block is not None:
                    break  # what follows a block that never opened only cascades
            if tries >= 2 or at_eof or line > text.count("\n") + 1:
                break
            if tries == 0 and stray:
                work = _blank_char(work, line, col)  # a stray '}': drop just that
                continue
            first = post.open[0].line if post.open else line
            start = min(first, line)
            work = _blank(work, start, line, stub=tries == 0)
            stubbed.update(range(start, line + 1))
    if diags:
        raise BdlError(diags, filename, text)
    deep = _too_deep(tree) or _too_many_brackets(text)
    if deep is not None:
        raise BdlError([deep], filename, text)
    builder = _Build()
    program = builder.transform(tree)
    if builder.errors:
        raise BdlError(builder.errors, filename, text)
    program.comments = [(c.line, c.column, str(c)) for c in parser._bdl_comments]
    return program


def _too_deep(tree) -> Diagnostic | None:
    """The error for a parse tree deeper than :data:`MAX_TREE_DEPTH` (walked without
    recursion), at the statement that holds the deepest part; None when it is not."""
    from lark import Tree

    stack = [(tree, 1, None)]
    while stack:
        node, depth, statement = stack.pop()
        if not isinstance(node, Tree):
            continue
        if node.data in _STATEMENTS:
            statement = node
        if depth > MAX_TREE_DEPTH:
            at = statement if statement is not None else node
            meta = at.meta
            line, col = getattr(meta, "line", 1), getattr(meta, "column", 1)
            return Diagnostic(
                "expression too deeply nested: more than about "
                f"{MAX_TREE_DEPTH - 6} operators, or {(MAX_TREE_DEPTH - 6) // 2} calls, one "
                "inside another (a sum of that many terms is as deep)", Span(line, col),
                notes=["split it into named steps (a = x1 + x2 + ...; b = a + ...), or sum "
                       "a vector: sum(v)"])
        stack.extend((c, depth + 1, statement) for c in node.children)
    return None


# Python's tokenizer refuses more than 200 brackets one inside another ("too many nested
# parentheses") in the generated module, whose statements wrap an expression in a few of
# their own (pyro.sample("y", dist.Normal(...))): an expression keeps below this many
MAX_BRACKETS = 190


def _too_many_brackets(text: str) -> Diagnostic | None:
    """The error for more than :data:`MAX_BRACKETS` parentheses and brackets one inside
    another (``(1.0 - (1.0 - (...)))``, ``f(g(...))``, ``y[g[...]]``), at the first bracket
    past the limit; None when there are not. Strings and comments are skipped."""
    depth, quote = 0, None
    for line_no, row in enumerate(text.split("\n"), 1):
        for col, ch in enumerate(row, 1):
            if quote is not None:
                quote = None if ch == quote else quote
            elif ch in "\"'":
                quote = ch
            elif ch == "#":
                break
            elif ch in "([":
                depth += 1
                if depth > MAX_BRACKETS:
                    return Diagnostic(
                        f"expression too deeply nested: more than {MAX_BRACKETS} parentheses "
                        "and brackets one inside another (Python, which runs the model, "
                        "takes about 200)", Span(line_no, col),
                        notes=["split it into named steps (a = (...); b = 1.0 - a)"])
            elif ch in ")]":
                depth = max(depth - 1, 0)
    return None


def _missing_block(e: UnexpectedInput, lines: list[str], line: int) -> Span | None:
    """Where the '{' of a model or plate is missing: the end of its header line, when
    only a '{' (on that line or after blank lines, as braces may sit) could follow."""
    expected = set(getattr(e, "expected", ()) or ())
    if "LBRACE" not in expected or not expected <= {"LBRACE", "_NL"}:
        return None
    head = line - 1
    while head > 0 and (not lines[head - 1].strip() or lines[head - 1].lstrip().startswith("#")):
        head -= 1
    if head <= 0:
        return None
    end = len(lines[head - 1].rstrip()) + 1
    return Span(head, end, head, end + 1)


def _token_width(e: UnexpectedInput) -> int:
    tok = getattr(e, "token", None)
    if tok is not None and tok.type not in ("$END", "_NL"):
        return max(1, len(str(tok)))
    return 1


def _eof_position(text: str) -> tuple[int, int]:
    lines = text.split("\n")
    while len(lines) > 1 and not lines[-1].strip():
        lines.pop()
    return len(lines), len(lines[-1]) + 1
