"""Property tests: the front end never crashes, whatever the edit to a valid program.

Valid programs (the shipped examples plus a few inline ones) are edited at random --
a character range or a token deleted, two lines swapped, junk (non-ASCII, control
characters, stray brackets and keywords) inserted, a line duplicated, a token replaced.
``front`` must then either succeed or raise :class:`BdlError` whose diagnostics all have
a real location and render; no other exception, and no hang. Programs that still pass
the checker must also get through code generation with nothing but :class:`BdlError`.
"""

from __future__ import annotations

import contextlib
import re
import signal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppl.pipeline import compile_source, front
from ppl.syntax.diagnostics import BdlError

ROOT = Path(__file__).resolve().parent.parent

INLINE = [
    """\
# several models, named infer lines, params, factors, nested and subsampled plates
model Hier(y: real[N, T], group: int<lower=0>[N], zprior: real[G]) {
  mu ~ Normal(0, 1); tau ~ HalfNormal(1)
  param scale: real<lower=0> = 1.0
  z: real[G] ~ Normal(zprior, 1)
  plate i in N {
    plate T {
      y ~ Normal(mu + tau * z[group], scale)
    }
  }
  factor -0.5 * sum(z ^ 2)
}
model Simple(x: real[N, D], y: real[N], c: real?) {
  w: real[D] ~ Normal(0,
                      1)
  b: real<lower=-1, upper=1> ~ Uniform(-1, 1)
  c ~ Normal(0, 1)
  plate N batch 8 {
    y ~ Normal(x @ w + b, 1)
  }
}
infer Hier with nuts(samples=10, warmup=10, chains=1, seed=3)
infer Simple with svi(steps=5, guide=lowrank, lr=0.1)
""",
    """\
model Simplex(y: int[N], alpha: real<lower=0>[K]) {
  theta: simplex[K] ~ Dirichlet(alpha)
  L: cholesky_factor_corr[3] ~ LKJCholesky(3, 2.0)
  t = theta[1:] - theta[:-1]
  y ~ Categorical(probs=theta)
}
""",
    """\
model Kernels(x: real[N], y: real[N]) {
  k = rbf(lengthscale=1.0, variance=2.0) + matern32(lengthscale=0.5, variance=1.0)
  s ~ HalfNormal(1)
  y ~ MultivariateNormal(zeros(N), covariance_matrix=gram(k, x) + s ^ 2 * eye(N))
}
infer map(steps=3)
""",
]
EXAMPLES = sorted((ROOT / "examples").glob("*.bdl"))
PROGRAMS = [p.read_text() for p in EXAMPLES] + INLINE

# Things worth inserting: brackets, operators, keywords, names, numbers and strings, and
# characters a lexer may trip over (non-ASCII, control characters, byte-order mark...).
JUNK = [
    "(", ")", "[", "]", "{", "}", ",", ";", ":", "~", "=", "?", "<", ">", "^", "@", "-",
    "#", '"', "\\", ".", "\n", "\r", "\t", "\f", "model", "infer", "plate", "batch", "in",
    "with", "param", "factor", "true", "N", "x", "0", "1e", "-1", "1e999", '"s"',
    "Normal(", "é", "λ", "💥", "\x00", "\x07", "\x1b", "\x7f", "\xa0", "\ufeff", "\u2028",
    "\u200b",
]
# Replacements that keep a program plausible, so some edits reach the checker and codegen.
VOCAB = [
    "N", "K", "J", "D", "x", "y", "mu", "sigma", "0", "1", "2.5", "-1", "3", "0.5",
    "Normal", "HalfNormal", "Cauchy", "Exponential", "Bernoulli", "Categorical", "Beta",
    "real", "int", "bool", "ordered", "exp", "sum", "softplus", "zeros", "+", "-", "*", "@",
    "/", "^", "[0]", "[:, 0]", "true",
]
TOKEN = re.compile(r'"[^"\n]*"|\w+|\S')


# ---- edits ------------------------------------------------------------------------------
def _delete_range(draw, text: str) -> str:
    i = draw(st.integers(0, len(text)))
    return text[:i] + text[i + draw(st.integers(1, 25)):]


def _delete_token(draw, text: str) -> str:
    spans = [m.span() for m in TOKEN.finditer(text)]
    if not spans:
        return text
    a, b = draw(st.sampled_from(spans))
    return text[:a] + text[b:]


def _replace_token(draw, text: str) -> str:
    spans = [m.span() for m in TOKEN.finditer(text)]
    if not spans:
        return text
    a, b = draw(st.sampled_from(spans))
    return text[:a] + draw(st.sampled_from(VOCAB)) + text[b:]


def _swap_lines(draw, text: str) -> str:
    lines = text.split("\n")
    i = draw(st.integers(0, len(lines) - 1))
    j = draw(st.integers(0, len(lines) - 1))
    lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


def _duplicate_line(draw, text: str) -> str:
    lines = text.split("\n")
    i = draw(st.integers(0, len(lines) - 1))
    lines.insert(i, lines[i])
    return "\n".join(lines)


def _insert_junk(draw, text: str) -> str:
    i = draw(st.integers(0, len(text)))
    junk = draw(st.one_of(
        st.sampled_from(JUNK),
        st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=4),
    ))
    return text[:i] + junk + text[i:]


EDITS = [_delete_range, _delete_token, _replace_token, _swap_lines, _duplicate_line,
         _insert_junk]
MILD_EDITS = [_replace_token, _swap_lines, _duplicate_line, _delete_token]


@st.composite
def edited_programs(draw, edits=tuple(EDITS)):
    text = draw(st.sampled_from(PROGRAMS))
    for _ in range(draw(st.integers(1, 3))):
        text = draw(st.sampled_from(edits))(draw, text)
    return text


# ---- the property -----------------------------------------------------------------------
@contextlib.contextmanager
def time_limit(seconds: int):
    """Fail (rather than hang the suite) if the body runs longer than ``seconds``."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(signum, frame):
        raise TimeoutError(f"front end still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def front_or_located_error(text: str):
    """Run ``front``; return the checked program, or None after validating the error."""
    try:
        with time_limit(10):
            return front(text, "fuzz.bdl")
    except BdlError as e:
        assert e.diagnostics, "a BdlError must carry at least one diagnostic"
        n_lines = text.count("\n") + 1
        for d in e.diagnostics:
            line, col = d.span.line, d.span.col
            assert (line, col) == (0, 0) or (1 <= line <= n_lines and col >= 1), (d, text)
            assert d.severity == "error"
            assert d.message
        rendered = e.render()
        assert rendered.startswith("fuzz.bdl")
        assert rendered.count("error:") >= len(e.diagnostics)
        assert str(e) == rendered
        return None


FUZZ = settings(max_examples=200, deadline=2000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@pytest.fixture(scope="module", autouse=True)
def _warm_up():
    # Build the parser and load the registries once, outside the per-example deadline.
    for text in PROGRAMS:
        front(text, "warm.bdl")


@pytest.mark.parametrize("text", PROGRAMS, ids=[p.name for p in EXAMPLES] +
                         [f"inline{i}" for i in range(len(INLINE))])
def test_base_programs_are_valid(text):
    compiled = compile_source(text, "base.bdl")
    assert compiled.python


@FUZZ
@given(edited_programs())
def test_front_end_never_crashes(text):
    front_or_located_error(text)


@FUZZ
@given(edited_programs(edits=tuple(MILD_EDITS)))
def test_compile_never_crashes_after_the_checker(text):
    if front_or_located_error(text) is None:
        return
    try:
        with time_limit(10):
            compiled = compile_source(text, "fuzz.bdl")
    except BdlError as e:
        e.render()
        return
    assert isinstance(compiled.python, str)


@pytest.mark.parametrize("text", [
    "",
    "\n\n\n",
    "# only a comment",
    "\ufeffmodel M() {}",
    "model",
    "model M(",
    "model M() {",
    "}",
    "{{{{",
    ")))",
    "model M() { plate N batch { } }",
    "infer nuts()",
    "model M() {}\ninfer nuts(",
    "model M() {\n  x = \"unterminated\n}",
    "model M() {\r\n  x = 1\r}",
    "model M() {\x00}",
    "model M() { x = " + "(" * 200 + "1" + ")" * 200 + " }",
    "model M() { x = " + "-" * 300 + "1 }",
    "model M() { x = " + " + ".join(["1"] * 300) + " }",
    "model M() { x = 1 }\n" * 50,
    "\n".join(f"model M{i}() {{ x{i} = ( }}" for i in range(40)),
])
def test_degenerate_inputs(text):
    front_or_located_error(text)
