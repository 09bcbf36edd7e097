"""Parser unit tests: the AST each construct becomes, precedence, layout and positions.

AST nodes compare without their spans, so expected trees are written with the node
constructors; positions are checked separately on ``.span`` / ``.name_span``.
"""

import re

import pytest

from ppl.syntax.ast import (
    Arg,
    Assign,
    BinOp,
    Bool,
    Bound,
    Call,
    Factor,
    FunctionLit,
    Index,
    Infer,
    Keyword,
    ListLit,
    Model,
    Name,
    Neg,
    Number,
    Param,
    Plate,
    Sample,
    Slice,
    String,
    Type,
)
from ppl.syntax.diagnostics import BdlError, Span
from ppl.syntax.parser import parse


def n(x: str) -> Name:
    return Name(x)


def num(v) -> Number:
    return Number(v, str(v))


def body(src: str):
    """The statements of a one-model program whose body is ``src``."""
    return parse("model M() {\n" + src + "\n}\n").models[0].body


def expr(src: str):
    """The parsed expression ``src`` (as the value of an assignment)."""
    (stmt,) = body("v = " + src)
    assert isinstance(stmt, Assign)
    return stmt.value


# ---- statements -----------------------------------------------------------------------
def test_model_signature_args_types_bounds_and_optional():
    prog = parse("model Reg(x: real[N, K], y: real<lower=0, upper=1>[N]?, n: int) {}")
    assert prog.infers == []
    assert prog.models == [Model("Reg", [
        Arg("x", Type("real", [], [n("N"), n("K")]), False),
        Arg("y", Type("real", [Bound("lower", num(0)), Bound("upper", num(1))], [n("N")]), True),
        Arg("n", Type("int", [], []), False),
    ], [])]


def test_model_without_args():
    assert parse("model Empty() {\n}\n").models == [Model("Empty", [], [])]


def test_statement_kinds():
    stmts = body(
        "mu ~ Normal(0, 5)\n"
        "theta: real[J] ~ Normal(mu, 1)\n"
        "t = mu + 1\n"
        "s: real<lower=0> = exp(mu)\n"
        "param w: real<lower=0> = 1.5\n"
        "factor -mu"
    )
    assert stmts == [
        Sample("mu", None, Call(n("Normal"), [num(0), num(5)], [])),
        Sample("theta", Type("real", [], [n("J")]), Call(n("Normal"), [n("mu"), num(1)], [])),
        Assign("t", None, BinOp("+", n("mu"), num(1))),
        Assign("s", Type("real", [Bound("lower", num(0))], []), Call(n("exp"), [n("mu")], [])),
        Param("w", Type("real", [Bound("lower", num(0))], []), Number(1.5, "1.5")),
        Factor(Neg(n("mu"))),
    ]


def test_constrained_types_and_dimension_arithmetic():
    (s1, s2) = body("L: cholesky_factor_corr[K] ~ LKJCholesky(K, 2)\n"
                    "z: real[N*T, K+1] ~ Normal(0, 1)")
    assert s1.type == Type("cholesky_factor_corr", [], [n("K")])
    assert s2.type == Type("real", [], [BinOp("*", n("N"), n("T")), BinOp("+", n("K"), num(1))])


def test_bound_with_negative_number_and_parenthesised_expression():
    (arg,) = parse("model M(x: real<lower=-1.5, upper=(2 * 3)>) {}").models[0].args
    assert arg.type.bounds == [Bound("lower", Number(-1.5, "-1.5")),
                               Bound("upper", BinOp("*", num(2), num(3)))]


def test_call_with_keywords_and_distribution_arguments():
    assert expr("MixtureSameFamily(Categorical(probs=[t, 1 - t]), Normal(mu, sigma))") == Call(
        n("MixtureSameFamily"),
        [Call(n("Categorical"), [], [Keyword("probs", ListLit([n("t"), BinOp("-", num(1),
                                                                              n("t"))]))]),
         Call(n("Normal"), [n("mu"), n("sigma")], [])],
        [],
    )


def test_call_trailing_comma_and_empty_call():
    assert expr("f(a, b=1,)") == Call(n("f"), [n("a")], [Keyword("b", num(1))])
    assert expr("f()") == Call(n("f"), [], [])


def test_indexing_slicing_and_chained_postfix():
    assert expr("x[i, :]") == Index(n("x"), [n("i"), Slice(None, None)])
    assert expr("x[1:]") == Index(n("x"), [Slice(num(1), None)])
    assert expr("x[:-1]") == Index(n("x"), [Slice(None, Number(-1, "-1"))])
    assert expr("x[0:2, 1]") == Index(n("x"), [Slice(num(0), num(2)), num(1)])
    assert expr("f(x)[:, 0]") == Index(Call(n("f"), [n("x")], []), [Slice(None, None), num(0)])


def test_literals():
    assert expr("true") == Bool(True)
    assert expr("false") == Bool(False)
    assert expr('"a # not a comment"') == String("a # not a comment")
    assert expr("[a, [1, 2]]") == ListLit([n("a"), ListLit([num(1), num(2)])])
    assert expr("[]") == ListLit([])


@pytest.mark.parametrize("text, value", [
    ("3", 3), ("2.5", 2.5), ("1e-3", 0.001), (".5", 0.5), ("3.", 3.0), ("2E+2", 200.0),
])
def test_numbers(text, value):
    e = expr(text)
    assert e == Number(value, text)
    assert type(e.value) is type(value)


# ---- precedence -----------------------------------------------------------------------
@pytest.mark.parametrize("src, tree", [
    # unary minus binds looser than ^ (as in Python): -x^2 is -(x^2)
    ("-x ^ 2", Neg(BinOp("^", n("x"), num(2)))),
    ("-2 ^ 2", Neg(BinOp("^", num(2), num(2)))),
    # ^ is right-associative and takes a signed exponent
    ("a ^ b ^ c", BinOp("^", n("a"), BinOp("^", n("b"), n("c")))),
    ("2 ^ -1", BinOp("^", num(2), Number(-1, "-1"))),
    # * / @ share one level, left-associative
    ("a * b @ c", BinOp("@", BinOp("*", n("a"), n("b")), n("c"))),
    ("a @ b * c", BinOp("*", BinOp("@", n("a"), n("b")), n("c"))),
    ("a / b * c", BinOp("*", BinOp("/", n("a"), n("b")), n("c"))),
    # + - below them, left-associative
    ("a + b @ c", BinOp("+", n("a"), BinOp("@", n("b"), n("c")))),
    ("a @ b + c", BinOp("+", BinOp("@", n("a"), n("b")), n("c"))),
    ("a - b - c", BinOp("-", BinOp("-", n("a"), n("b")), n("c"))),
    ("a - -b", BinOp("-", n("a"), Neg(n("b")))),
    ("-a + b", BinOp("+", Neg(n("a")), n("b"))),
    ("a * -b ^ 2", BinOp("*", n("a"), Neg(BinOp("^", n("b"), num(2))))),
    # all of them together
    ("-x ^ 2 * w @ v + 1",
     BinOp("+", BinOp("@", BinOp("*", Neg(BinOp("^", n("x"), num(2))), n("w")), n("v")),
           num(1))),
    # comparisons are loosest
    ("a + b < c * d", BinOp("<", BinOp("+", n("a"), n("b")), BinOp("*", n("c"), n("d")))),
    ("a >= b", BinOp(">=", n("a"), n("b"))),
    # parentheses override, postfix binds tightest
    ("(a + b) * c", BinOp("*", BinOp("+", n("a"), n("b")), n("c"))),
    ("-x[0] ^ 2", Neg(BinOp("^", Index(n("x"), [num(0)]), num(2)))),
    # a function literal is loosest: its body takes everything to its right
    ("(x, t) => -a * x + t < 1",
     FunctionLit(["x", "t"], BinOp("<", BinOp("+", BinOp("*", Neg(n("a")), n("x")), n("t")),
                                   num(1)))),
    ("(x) => (y) => x", FunctionLit(["x"], FunctionLit(["y"], n("x")))),
    ("() => 1", FunctionLit([], num(1))),
    # `(x)` alone stays a parenthesised name; parenthesised, a literal is an operand
    ("(x) * 2", BinOp("*", n("x"), num(2))),
    ("((x) => x)(1)", Call(FunctionLit(["x"], n("x")), [num(1)], [])),
])
def test_precedence(src, tree):
    assert expr(src) == tree


@pytest.mark.parametrize("src, message", [
    ("(x + 1, t) => x", "2:6: error: a function literal's parameters must be names"),
    ("(x, 2) => x", "2:9: error: a function literal's parameters must be names"),
    ("(x, x) => x", "2:9: error: parameter 'x' is named twice"),
    ("1 + (x) => x", "2:13: error: unexpected '=>'"),
    ("(x, t)", "2:11: error: unexpected end of line; expected '=>'"),
])
def test_malformed_function_literals_are_located_syntax_errors(src, message):
    with pytest.raises(BdlError, match=re.escape(message)):
        expr(src)


def test_negative_literal_is_folded_into_the_number():
    assert expr("-2") == Number(-2, "-2")
    assert expr("-2.5e-1") == Number(-0.25, "-2.5e-1")


# ---- layout: newlines, semicolons, comments -------------------------------------------
def test_newline_inside_parens_and_brackets_continues_the_statement():
    stmts = body(
        "y ~ Normal(\n"
        "      mu,\n"
        "      sigma)\n"
        "v = [1,\n"
        "     2]\n"
        "w = x[0,\n"
        "      1]\n"
        "u = (a\n"
        "     + b)"
    )
    assert stmts == [
        Sample("y", None, Call(n("Normal"), [n("mu"), n("sigma")], [])),
        Assign("v", None, ListLit([num(1), num(2)])),
        Assign("w", None, Index(n("x"), [num(0), num(1)])),
        Assign("u", None, BinOp("+", n("a"), n("b"))),
    ]


def test_newline_outside_brackets_ends_the_statement():
    with pytest.raises(BdlError) as e:
        body("u = a +\n  b")
    # 'a +' ends at the newline, and 'b' alone is not a statement either.
    assert [(d.span.line, d.message) for d in e.value.diagnostics] == [
        (2, "unexpected end of line; expected an expression"),
        (3, "unexpected end of line; expected ':', '=' or '~'"),
    ]


def test_semicolons_separate_statements():
    prog = parse("model M() { a = 1; b = 2;; c = 3; }; infer nuts(seed=1)")
    assert prog.models[0].body == [Assign("a", None, num(1)), Assign("b", None, num(2)),
                                   Assign("c", None, num(3))]
    assert prog.infers == [Infer(None, "nuts", [], [Keyword("seed", num(1))])]


def test_blank_lines_and_comments_are_ignored_and_comments_recorded():
    src = ("# header\n"
           "\n"
           "model M() {  # opening\n"
           "\n"
           "  a = 1   # trailing ( [ { not brackets\n"
           "  # a whole line\n"
           "}\n")
    prog = parse(src)
    assert prog.models[0].body == [Assign("a", None, num(1))]
    assert prog.comments == [(1, 1, "# header"), (3, 14, "# opening"),
                             (5, 11, "# trailing ( [ { not brackets"), (6, 3, "# a whole line")]


def test_crlf_line_endings():
    prog = parse("model M() {\r\n  a = 1\r\n  b = 2\r\n}\r\n")
    assert prog.models[0].body == [Assign("a", None, num(1)), Assign("b", None, num(2))]


# ---- plates ---------------------------------------------------------------------------
def test_plate_forms():
    stmts = body(
        "plate i in N batch 64 {\n"
        "  y ~ Normal(mu, 1)\n"
        "}\n"
        "plate N { }\n"
        "plate j in K {\n"
        "  plate T {\n"
        "    z = 1\n"
        "  }\n"
        "}"
    )
    y = Sample("y", None, Call(n("Normal"), [n("mu"), num(1)], []))
    assert stmts == [
        Plate("i", n("N"), num(64), [y]),
        Plate(None, n("N"), None, []),
        Plate("j", n("K"), None, [Plate(None, n("T"), None, [Assign("z", None, num(1))])]),
    ]


def test_plate_batch_with_expression_and_size_arithmetic():
    (p,) = body("plate N + 1 batch B * 2 {}")
    assert p == Plate(None, BinOp("+", n("N"), num(1)), BinOp("*", n("B"), num(2)), [])


# ---- infer directives -----------------------------------------------------------------
def test_infer_forms():
    prog = parse(
        "model A() {}\n"
        "model B() {}\n"
        "infer A with nuts(samples=1000, warmup=500, dense_mass=true)\n"
        "infer B with svi(steps=500, guide=lowrank, lr=1e-2)\n"
        "infer map()\n"
    )
    assert [m.name for m in prog.models] == ["A", "B"]
    assert prog.infers == [
        Infer("A", "nuts", [], [Keyword("samples", num(1000)), Keyword("warmup", num(500)),
                                Keyword("dense_mass", Bool(True))]),
        Infer("B", "svi", [], [Keyword("steps", num(500)), Keyword("guide", n("lowrank")),
                               Keyword("lr", Number(0.01, "1e-2"))]),
        Infer(None, "map", [], []),
    ]


def test_infer_positional_arguments_are_kept_for_the_checker():
    (inf,) = parse("model M() {}\ninfer nuts(10, seed=2)").infers
    assert inf == Infer(None, "nuts", [num(10)], [Keyword("seed", num(2))])


def test_keywords_are_not_names():
    with pytest.raises(BdlError) as e:
        body("plate = 1")
    assert e.value.diagnostics[0].message.startswith("unexpected '='")


# ---- positions ------------------------------------------------------------------------
def test_positions_of_models_args_and_statements():
    src = ("# c\n"
           "model Eight(y: real[J], sigma: real<lower=0>[J]) {\n"
           "  mu ~ Normal(0, 5)\n"
           "  theta_raw: real[J] ~ Normal(0, 1)\n"
           "  plate i in J {\n"
           "    t = mu +   tau\n"
           "  }\n"
           "}\n"
           "infer Eight with nuts(samples=10)\n")
    prog = parse(src)
    m = prog.models[0]
    assert (m.span.line, m.span.col) == (2, 7)
    assert [(a.span.line, a.span.col) for a in m.args] == [(2, 13), (2, 25)]
    assert m.args[1].type.span == Span(2, 32, 2, 48)
    mu, theta, plate = m.body
    assert mu.span == Span(3, 3, 3, 20)
    assert mu.name_span == Span(3, 3, 3, 5)
    assert mu.dist.span == Span(3, 8, 3, 20)
    assert mu.dist.args[1].span == Span(3, 18, 3, 19)
    assert theta.name_span == Span(4, 3, 4, 12)
    assert theta.type.span == Span(4, 14, 4, 21)
    assert plate.span.line == 5 and plate.span.col == 3
    (t,) = plate.body
    assert t.name_span == Span(6, 5, 6, 6)
    assert t.value.span == Span(6, 9, 6, 19)
    assert t.value.right.span == Span(6, 16, 6, 19)
    inf = prog.infers[0]
    assert inf.span == Span(9, 18, 9, 22)
    assert inf.options[0].span == Span(9, 23, 9, 30)
    assert inf.options[0].value.span == Span(9, 31, 9, 33)


def test_positions_survive_a_wrapped_call():
    (s,) = body("y ~ Normal(mu,\n           sigma)")
    assert s.span == Span(2, 1, 3, 18)
    assert s.dist.args[1].span == Span(3, 12, 3, 17)


def test_tabs_count_as_one_column():
    (s,) = body("\tz = 1")
    assert s.name_span == Span(2, 2, 2, 3)
