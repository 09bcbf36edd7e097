"""`bdl fmt` is idempotent and keeps the program: on every example and test program."""

from __future__ import annotations

import random

import pytest
from test_cli import LINREG
from test_fuzz import PROGRAMS

from ppl.syntax.diagnostics import BdlError
from ppl.syntax.format import fmt
from ppl.syntax.parser import parse


def _bdl_strings_in_tests() -> list[str]:
    """Every valid BDL program written inline in the test files."""
    import ast as pyast
    from pathlib import Path

    out = []
    for f in sorted(Path(__file__).parent.glob("test_*.py")):
        for node in pyast.walk(pyast.parse(f.read_text())):
            if isinstance(node, pyast.Constant) and isinstance(node.value, str) \
                    and "model " in node.value and "{" in node.value:
                try:
                    parse(node.value)
                except Exception:  # noqa: BLE001 - malformed on purpose (golden tests)
                    continue
                out.append(node.value)
    return out


ALL = PROGRAMS + [LINREG] + _bdl_strings_in_tests()


@pytest.mark.parametrize("i", range(len(ALL)))
def test_fmt_is_idempotent_and_keeps_the_ast(i):
    text = ALL[i]
    once = fmt(text)
    assert fmt(once) == once
    assert parse(once) == parse(text)
    assert [c[2] for c in parse(once).comments] == [c[2] for c in parse(text).comments]


# ---- expressions: parenthesised by the grammar's levels, no more ---------------------
OPS = ["+", "-", "*", "/", "@", "%", "^", "<", ">", "<=", ">=", "==", "!="]


def _tree(r, depth: int) -> str:
    """A random small expression, every compound part in parentheses (so that its AST is
    the tree drawn, whatever the precedences)."""
    k = r.randrange(11) if depth < 4 else r.randrange(3)
    if k == 0:
        return r.choice(["x", "y", "mu"])
    if k == 1:
        return r.choice(["2", "2.5", ".5", "1e-3", "3."])
    if k == 2:
        return r.choice(['"s"', "true", "x"])
    if k in (3, 4, 5):
        return f"(({_tree(r, depth + 1)}) {r.choice(OPS)} ({_tree(r, depth + 1)}))"
    if k == 6:
        return f"(-({_tree(r, depth + 1)}))"
    if k == 7:
        args = [_tree(r, depth + 1) for _ in range(r.randrange(3))]
        return f"({r.choice(['f', 'x.g', '((t) => t)'])})({', '.join(args + ['k=2'])})"
    if k == 8:
        index = r.choice([_tree(r, depth + 1), "1:", ":" + _tree(r, depth + 1)])
        return f"(({_tree(r, depth + 1)})[{index}])"
    if k == 9:
        return f"(({_tree(r, depth + 1)}).{r.choice(['T', 'shape'])})"
    return f"((a, t) => {_tree(r, depth + 1)})"


def _groupings(text: str) -> list[tuple[int, int]]:
    """(open, close) offsets of the parentheses that group (not a call's)."""
    out, stack = [], []
    for i, c in enumerate(text):
        if c == "(":
            stack.append(i if i == 0 or not (text[i - 1].isalnum() or text[i - 1] in "_)]")
                         else None)
        elif c == ")":
            start = stack.pop()
            if start is not None:
                out.append((start, i))
    return out


def test_fmt_parenthesises_every_random_expression_exactly_where_the_grammar_needs_it():
    r = random.Random(26)
    for _ in range(300):
        src = f"model M(x: real) {{\n  z = {_tree(r, 0)}\n}}\n"
        out = fmt(src)
        assert parse(out) == parse(src), (src, out)
        assert fmt(out) == out
        for a, b in _groupings(out):  # each pair kept is needed: without it, not the AST
            if out[b + 1] == "." and out[a + 1] in "0123456789.":
                continue  # (2).T, kept: `2.T` reads as `2.` then `T`, `2 .T` as a typo
            bare = out[:a] + " " + out[a + 1:b] + " " + out[b + 1:]
            try:
                same = parse(bare) == parse(src)
            except BdlError:
                same = False
            assert not same, f"needless parentheses in {out!r}"


@pytest.mark.parametrize("written, canonical", [
    ("(x < 1) < 2", "(x < 1) < 2"),
    ("(x < 1) == (x > 0)", "(x < 1) == (x > 0)"),
    ("x < (1 < 2)", "x < (1 < 2)"),
    ("-(x^2)", "-x^2"),
    ("(-x)^2", "(-x)^2"),
    ("(-2)^2", "(-2)^2"),
    ("a - (b - c)", "a - (b - c)"),
    ("(a - b) - c", "a - b - c"),
    ("(a / b) / c", "a / b / c"),
    ("a / (b * c)", "a / (b * c)"),
    ("2^(3^4)", "2^3^4"),
    ("(2^3)^4", "(2^3)^4"),
    ("x^(-x)", "x^-x"),
    ("a * (-b)", "a * -b"),
    ("-(-x)", "--x"),
    ("(2).T", "(2).T"),
    ("(2.5).T", "(2.5).T"),
    ("(-2).T", "(-2).T"),
    ("(x + 1).T", "(x + 1).T"),
    ("((t) => t)(2)", "((t) => t)(2)"),
])
def test_fmt_keeps_the_parentheses_an_expression_needs(written, canonical):
    src = f"model M(x: real) {{\n  z = {written}\n}}\n"
    assert fmt(src) == f"model M(x: real) {{\n  z = {canonical}\n}}\n"
    assert parse(fmt(src)) == parse(src)


def test_a_bound_of_two_signs_stays_parenthesised():
    src = "model M() {\n  z: real<lower=(--1)> ~ Normal(0, 1)\n}\n"
    assert fmt(src) == src


# ---- strings: escapes read and written back, other text as it is ---------------------
@pytest.mark.parametrize("written, value", [
    (r'"a\nb"', "a\nb"), (r'"tab\there"', "tab\there"), (r'"q\"q"', 'q"q'),
    (r'"back\\slash"', "back\\slash"), (r'"\r"', "\r"), ('"σ"', "σ"), ('"a😀b"', "a😀b"),
    ('"Ï"', "Ï"), ('""', ""),
])
def test_strings_read_their_escapes_and_fmt_writes_them_back(written, value):
    src = f"model M() {{\n  y ~ Normal(0, 1)\n}}\n\ninfer svi(guide={written})\n"
    assert parse(src).infers[0].options[0].value.value == value
    assert fmt(src) == src  # written back as written: a raw line break would end the line


def test_an_unknown_escape_is_a_located_error_and_a_non_ascii_value_reads_in_messages():
    from ppl.pipeline import front

    with pytest.raises(BdlError) as e:
        parse('model M() {\n  y ~ Normal(0, 1)\n}\ninfer svi(guide="a\\qb")\n', "u.bdl")
    assert e.value.render().split("\n")[0] == "u.bdl:4:19: error: unknown escape '\\q' in a string"
    with pytest.raises(BdlError) as e:
        front('model M() {\n  y ~ Normal(0, 1)\n}\ninfer svi(guide="σ")\n', "u.bdl")
    assert e.value.render().split("\n")[0].endswith(", got 'σ'")


# ---- comments stay where they were written; fmt(fmt(s)) == fmt(s) ---------------------
HEADER = ("model M(alpha_long_name: real, beta_long_name: real, gamma_long_name: real, "
          "delta_x: real) {  # c\n  y ~ Normal(0, 1)\n}\n")
HEADER_FMT = ("model M(\n  alpha_long_name: real,\n  beta_long_name: real,\n"
              "  gamma_long_name: real,\n  delta_x: real,\n) {  # c\n  y ~ Normal(0, 1)\n}\n")
INFER = ("model M() {\n  y ~ Normal(0, 1)\n}\n\ninfer svi(steps=1000, lr=0.01, seed=1, "
         "particles=4, guide=normal, dtype=float64, jit=true)  # c\n")
INFER_FMT = ("model M() {\n  y ~ Normal(0, 1)\n}\n\ninfer svi(\n  steps=1000,\n  lr=0.01,\n"
             "  seed=1,\n  particles=4,\n  guide=normal,\n  dtype=float64,\n  jit=true,\n)  # c\n")


@pytest.mark.parametrize("src, once", [
    (HEADER, HEADER_FMT),
    (INFER, INFER_FMT),
    # a comment inside a wrapped header or infer line moves above it
    ("model M(\n  a: real,  # the a\n  b: real,\n) {\n  y ~ Normal(a, b)\n}\n",
     "# the a\nmodel M(a: real, b: real) {\n  y ~ Normal(a, b)\n}\n"),
    ("model M() {\n  y ~ Normal(0, 1)\n}\ninfer svi(\n  steps=1,  # few\n  lr=0.1,\n)  # c\n",
     "model M() {\n  y ~ Normal(0, 1)\n}\n\n# few\ninfer svi(steps=1, lr=0.1)  # c\n"),
    # after a closing brace: the comment stays after it
    ("model M() {\n  y ~ Normal(0, 1)\n}  # end of M\n",
     "model M() {\n  y ~ Normal(0, 1)\n}  # end of M\n"),
    ("model M() {\n  plate 3 {\n    y ~ Normal(0, 1)\n  }  # end of the plate\n"
     "  z ~ Normal(0, 1)\n}\n",
     "model M() {\n  plate 3 {\n    y ~ Normal(0, 1)\n  }  # end of the plate\n"
     "  z ~ Normal(0, 1)\n}\n"),
    ("model M() { y ~ Normal(0, 1) }  # one line\n",
     "model M() {\n  y ~ Normal(0, 1)\n}  # one line\n"),
    # on the statement that ends the line, not the first one on it
    ("model M() {\n  x ~ Normal(0, 1); y ~ Normal(x, 1)  # about y\n}\n",
     "model M() {\n  x ~ Normal(0, 1)\n  y ~ Normal(x, 1)  # about y\n}\n"),
    ("model M() {\n  plate 2 { x ~ Normal(0, 1) }; y ~ Normal(0, 1)  # about y\n}\n",
     "model M() {\n  plate 2 {\n    x ~ Normal(0, 1)\n  }\n  y ~ Normal(0, 1)  # about y\n}\n"),
    # an Allman brace's comment ends the header line
    ("model M(y: real)\n{  # c\n  y ~ Normal(0, 1)\n}\n",
     "model M(y: real) {  # c\n  y ~ Normal(0, 1)\n}\n"),
])
def test_fmt_keeps_each_comment_where_it_was_written_and_is_idempotent(src, once):
    assert fmt(src) == once
    assert fmt(once) == once
    assert parse(once) == parse(src)


# ---- at the nesting limits: nothing added that the parser would refuse -----------------
def test_fmt_adds_no_bracket_at_the_nesting_limit():
    from ppl.syntax.parser import MAX_BRACKETS

    inner = "(" * (MAX_BRACKETS - 1) + "x^-x" + ")" * (MAX_BRACKETS - 1)
    src = f"model M(x: real) {{\n  z = [{inner}]\n}}\n"
    assert fmt(src) == "model M(x: real) {\n  z = [x^-x]\n}\n"
    brackets = "[" * MAX_BRACKETS + "x^-x" + "]" * MAX_BRACKETS
    src = f"model M(x: real) {{\n  z = {brackets}\n}}\n"
    assert fmt(src) == src


def test_fmt_refuses_a_layout_that_would_not_read_back(monkeypatch, tmp_path, bdl_here):
    """A formatter bug is a located refusal (exit 1), and --in-place writes nothing."""
    from ppl.syntax import format as fmt_module

    real = fmt_module.stmt_text
    monkeypatch.setattr(fmt_module, "stmt_text", lambda s: real(s).replace("~", "~ ~")
                        if getattr(s, "name", "") == "y" else real(s))
    src = "# m\nmodel M() {\n  x~Normal(0, 1)\n  y~Normal(x, 1)\n}\n"
    with pytest.raises(BdlError) as e:
        fmt(src, "m.bdl")
    assert e.value.render().split("\n")[0] == (
        "m.bdl:4:3: error: bdl fmt cannot lay out this statement: its layout would not parse "
        "(unexpected '~'; expected an expression)")
    monkeypatch.setattr(fmt_module, "stmt_text", lambda s: real(s).replace("Normal(x", "Normal(2")
                        if getattr(s, "name", "") == "y" else real(s))
    with pytest.raises(BdlError, match=r"m.bdl:4:3: error: bdl fmt cannot lay out this "
                                       r"statement: its layout would read as a different"):
        fmt(src, "m.bdl")
    f = tmp_path / "m.bdl"
    f.write_text(src)
    r = bdl_here("fmt", "--in-place", f)
    assert r.returncode == 1 and "would read as a different program" in r.stderr
    assert f.read_text() == src


# ---- the command: every file, line ends kept -----------------------------------------
MESSY = "model M() {\n  y~Normal(0,1)\n}\n"
TIDY = "model M() {\n  y ~ Normal(0, 1)\n}\n"


def test_fmt_goes_on_after_a_file_that_fails_and_exits_1(tmp_path, bdl_here):
    a, bad, b = tmp_path / "a.bdl", tmp_path / "bad.bdl", tmp_path / "b.bdl"
    a.write_text(MESSY)
    bad.write_text("model M( {\n")
    b.write_text(MESSY)
    r = bdl_here("fmt", "--in-place", a, bad, tmp_path / "no.bdl", b)
    assert r.returncode == 1
    assert a.read_text() == TIDY and b.read_text() == TIDY
    lines = r.stderr.split("\n")
    assert lines[0] == f"reformatted {a}" and f"reformatted {b}" in lines
    assert f"{bad}:1:10: error: unexpected '{{'; expected ')' or a name" in lines
    assert f"bdl: error: {tmp_path / 'no.bdl'}: no such file" in lines
    a.write_text(MESSY)
    r = bdl_here("fmt", "--check", b, bad, a)
    assert r.returncode == 1 and r.stderr.endswith(f"{a}: would reformat\n")
    r = bdl_here("fmt", a, bad, b)
    assert r.returncode == 1 and r.stdout == TIDY + TIDY


def test_fmt_in_place_reports_a_file_it_cannot_write(tmp_path, monkeypatch, bdl_here):
    # the new text goes to a file beside it, renamed over it: a failed rename leaves the
    # old file whole and no stray file behind
    import os

    f = tmp_path / "a.bdl"
    f.write_text(MESSY)

    def denied(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(os, "replace", denied)
    r = bdl_here("fmt", "--in-place", f)
    assert (r.returncode, r.stderr) == (1, f"bdl: error: {f}: cannot write it: Permission "
                                           "denied\n")
    assert f.read_text() == MESSY and sorted(p.name for p in tmp_path.iterdir()) == ["a.bdl"]


def test_fmt_in_place_keeps_the_files_mode(tmp_path, bdl_here):
    f = tmp_path / "a.bdl"
    f.write_text(MESSY)
    f.chmod(0o640)
    assert bdl_here("fmt", "--in-place", f).returncode == 0
    assert f.read_text() == TIDY and (f.stat().st_mode & 0o777) == 0o640


def test_fmt_keeps_a_files_line_ends(tmp_path, bdl_here):
    crlf = tmp_path / "crlf.bdl"
    crlf.write_bytes(TIDY.replace("\n", "\r\n").encode())
    assert bdl_here("fmt", "--check", crlf).returncode == 0
    assert bdl_here("fmt", crlf).stdout == TIDY.replace("\n", "\r\n")
    crlf.write_bytes(MESSY.replace("\n", "\r\n").encode())
    assert bdl_here("fmt", "--check", crlf).returncode == 1
    assert bdl_here("fmt", "--in-place", crlf).returncode == 0
    assert crlf.read_bytes() == TIDY.replace("\n", "\r\n").encode()
    # mixed: the first line's end is the file's
    crlf.write_bytes(b"model M() {\r\n  y ~ Normal(0, 1)\n}\r\n")
    assert bdl_here("fmt", "--check", crlf).returncode == 1
    lf = tmp_path / "lf.bdl"
    lf.write_text(TIDY)
    assert bdl_here("fmt", "--check", lf).returncode == 0
    assert bdl_here("fmt", lf).stdout == TIDY
