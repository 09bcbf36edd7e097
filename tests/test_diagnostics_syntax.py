"""Syntax and run-time diagnostics for mistakes the stop-22 audit found weak: each case
pins the exact rendered text (``file:line:col: error: ...``, the line, the caret and every
note), and one mistake is one error."""
# ruff: noqa: E501  (the expected text keeps the long lines the user sees)

import pytest

import ppl
from ppl.syntax.diagnostics import BdlError
from ppl.syntax.format import fmt
from ppl.syntax.parser import parse


def _syntax_error(src: str) -> str:
    with pytest.raises(BdlError) as e:
        parse(src, "model.bdl")
    return e.value.render()


SYNTAX = [
    pytest.param(
        "modle M(y: real[N]) {\n  y ~ Normal(0, 1)\n}\n",
        """\
model.bdl:1:1: error: unexpected name 'modle'; expected ';', 'guide', 'infer', 'model', end of file or end of line
  modle M(y: real[N]) {
  ^~~~~
  note: did you mean 'model'?""",
        id="keyword_typo",
    ),
    pytest.param(
        "model M(y: real[N]) {\n  plate n in 1:N {\n    y ~ Normal(0, 1)\n  }\n}\n",
        """\
model.bdl:2:15: error: unexpected ':'; expected 'batch' or '{'
    plate n in 1:N {
                ^
  note: a plate's indices start at 0: write plate n in N (indices run 0..N-1)""",
        id="plate_range_from_1",
    ),
    pytest.param(
        "model M(vector[N] y) {\n  y ~ Normal(0, 1)\n}\n",
        """\
model.bdl:1:15: error: unexpected '['; expected ':'
  model M(vector[N] y) {
                ^
  note: BDL writes the name first: y: real[N]""",
        id="stan_argument_declaration",
    ),
    pytest.param(
        "model M(y: real[N], int[N] k) {\n  y ~ Normal(0, 1)\n}\n",
        """\
model.bdl:1:24: error: unexpected '['; expected ':'
  model M(y: real[N], int[N] k) {
                         ^
  note: BDL writes the name first: k: int[N]""",
        id="stan_argument_declaration_second",
    ),
    pytest.param(
        "model M(y: real[N]) {\n  real<lower=0> sigma;\n  y ~ Normal(0, sigma)\n}\n",
        """\
model.bdl:2:7: error: unexpected '<'; expected ':', '=' or '~'
    real<lower=0> sigma;
        ^
  note: BDL declares a latent where it is drawn: sigma: real<lower=0> ~ ...""",
        id="stan_body_declaration",
    ),
    pytest.param(
        "model M(y: real[N]) {\n  param ~ Normal(0, 5)\n  y ~ Normal(param, 1)\n}\n",
        """\
model.bdl:2:9: error: unexpected '~'; expected a name
    param ~ Normal(0, 5)
          ^
  note: 'param' is a keyword: choose another name""",
        id="keyword_as_name",
    ),
    pytest.param(  # the grammar reads a name after 'param' and 'plate': was accepted
        "model M(y: real[N]) {\n  param guide: real = 0\n  y ~ Normal(guide, 1)\n}\n",
        """\
model.bdl:2:9: error: unexpected 'guide'; expected a name
    param guide: real = 0
          ^~~~~
  note: 'guide' is a keyword: choose another name""",
        id="keyword_as_param_name",
    ),
    pytest.param(
        "model M(y: real[N]) {\n  plate factor in N {\n    y ~ Normal(0, 1)\n  }\n}\n",
        """\
model.bdl:2:9: error: unexpected 'factor'; expected a name
    plate factor in N {
          ^~~~~~
  note: 'factor' is a keyword: choose another name""",
        id="keyword_as_plate_index",
    ),
    pytest.param(  # model names, guide names and data arguments: were accepted
        "model plate(y: real[N]) {\n  y ~ Normal(0, 1)\n}\n",
        """\
model.bdl:1:7: error: unexpected 'plate'; expected a name
  model plate(y: real[N]) {
        ^~~~~
  note: 'plate' is a keyword: choose another name""",
        id="keyword_as_model_name",
    ),
    pytest.param(  # a data argument named factor could not even be read
        "model M(factor: real, y: real[N]) {\n  y ~ Normal(0, 1)\n}\n",
        """\
model.bdl:1:9: error: unexpected 'factor'; expected a name
  model M(factor: real, y: real[N]) {
          ^~~~~~
  note: 'factor' is a keyword: choose another name""",
        id="keyword_as_argument_name",
    ),
    pytest.param(
        "model M(y: real[N]) {\n  mu ~ Normal(0, 5)\n  y ~ Normal(where(0 < mu < 1, mu, 0), 1)\n}\n",
        """\
model.bdl:3:27: error: unexpected '<'; expected ')' or ','
    y ~ Normal(where(0 < mu < 1, mu, 0), 1)
                            ^
  note: comparisons do not chain: a < b < c is written (a < b) * (b < c)""",
        id="chained_comparison",
    ),
    pytest.param(
        "model M(y: real[N]) {\n  y ~ Normal(0, 1)\n}\ninfer nuts(samples=20) with M\n",
        """\
model.bdl:4:24: error: unexpected 'with'; expected ';', end of file or end of line
  infer nuts(samples=20) with M
                         ^~~~
  note: the model comes first: infer M with nuts(samples=20)""",
        id="infer_order",
    ),
    pytest.param(
        "model M(y: real[N]) {\n  σ ~ HalfNormal(1)\n  y ~ Normal(0, σ)\n}\n",
        """\
model.bdl:2:3: error: unexpected character 'σ': names are ASCII (letters A-Z and a-z, digits, '_')
    σ ~ HalfNormal(1)
    ^""",
        id="non_ascii_name_once",
    ),
]


@pytest.mark.parametrize("src, expected", SYNTAX)
def test_syntax_error_and_its_note(src, expected):
    assert _syntax_error(src) == expected


def test_a_hint_needs_its_mistake():
    # a plain unexpected token gets no note from the table
    text = _syntax_error("model M(y: real[N]) {\n  y ~ Normal(0, 1) )\n}\n")
    assert "note:" not in text
    # a comparison in a type's bounds is not a chained comparison
    text = _syntax_error("model M(s: real<lower=0>) {\n  s ~ Normal(0, 1) < 2 < 3\n}\n")
    assert text.splitlines()[-1] == ("  note: comparisons do not chain: a < b < c is written "
                                     "(a < b) * (b < c)")
    text = _syntax_error("model M(s: real<lower=0>) {\n  s ~ < Normal(0, 1)\n}\n")
    assert "chain" not in text


ALLMAN = """\
model M(y: real[N])
# a comment between the header and the brace

{
  mu ~ Normal(0, 5)
  plate n in N
  {
    y ~ Normal(mu, 1)
  }
}
"""

HOUSE = """\
model M(y: real[N]) {
  # a comment between the header and the brace
  mu ~ Normal(0, 5)
  plate n in N {
    y ~ Normal(mu, 1)
  }
}
"""


def test_brace_on_the_next_line_is_accepted_and_fmt_writes_the_house_style():
    assert parse(ALLMAN) == parse(HOUSE)
    assert fmt(ALLMAN) == HOUSE
    assert fmt(HOUSE) == HOUSE


def test_a_plate_header_without_a_block_is_still_one_error():
    text = _syntax_error("model M(y: real[N]) {\n  plate N\n}\n")
    assert text.splitlines()[0] == "model.bdl:2:10: error: unexpected end of line; expected '{'"


# ---- run time ---------------------------------------------------------------------

POISSON = """\
model M(y: real[N]) {
  lam ~ Gamma(2, 1)
  y ~ Poisson(lam)
}
"""


def test_real_counts_under_poisson_name_element_support_and_declaration():
    m = ppl.compile(POISSON, filename="m.bdl")
    with pytest.raises(BdlError) as e:
        m.fit({"y": [2.0, 1.5, 3.0]}, infer="svi", steps=1)
    assert e.value.render() == """\
m.bdl:3:3: error: 'y' element 1 is 1.5; Poisson is over integers >= 0; declare y: int[N]
    y ~ Poisson(lam)
    ^~~~~~~~~~~~~~~~"""


def test_support_error_in_nested_plates_names_the_element_and_bound():
    src = ("model M(y: real[N, K], k: int[N], n: int[N]) {\n  lam ~ Gamma(2, 1)\n"
           "  plate N { plate K { y ~ Exponential(lam) } }\n  q ~ Beta(1, 1)\n"
           "  k ~ Binomial(n, q)\n}\n")
    m = ppl.compile(src, filename="m.bdl")
    with pytest.raises(BdlError) as e:
        m.fit({"y": [[1, 2, 3], [1, -2, 3]], "k": [0, 1], "n": [3, 3]}, infer="svi", steps=1)
    assert e.value.render().splitlines()[0] == (
        "m.bdl:3:23: error: 'y' element [1, 1] is -2; Exponential is over numbers >= 0")
    with pytest.raises(BdlError) as e:
        m.fit({"y": [[1, 2, 3], [1, 2, 3]], "k": [0, 5], "n": [3, 4]}, infer="svi", steps=1)
    assert e.value.render().splitlines()[0] == (
        "m.bdl:5:3: error: 'k' element 1 is 5; Binomial is over integers from 0 to 4")


def _write(tmp_path, src: str, data: str):
    (tmp_path / "m.bdl").write_text(src)
    (tmp_path / "m.data.json").write_text(data)
    return tmp_path / "m.bdl"


def test_cli_support_error_is_one_located_error_with_no_traceback_note(tmp_path, bdl_here):
    path = _write(tmp_path, POISSON + "infer nuts(samples=5, warmup=5, chains=1)\n",
                  '{"y": [1.5, 2, 3]}')
    r = bdl_here("run", path, "--out", tmp_path / "run")
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert lines[0] == f"{path}:3:3: warning: 'y' is real but Poisson is a discrete distribution"
    errors = [x for x in lines if ": error: " in x]
    assert errors == [f"{path}:3:3: error: 'y' element 0 is 1.5; Poisson is over integers "
                      ">= 0; declare y: int[N]"]
    assert "traceback" not in r.stderr


@pytest.mark.parametrize("src, data, line", [
    pytest.param("model M(y: real[N]) {\n  k ~ Poisson(3)\n  y ~ Normal(k, 1)\n}\n",
                 '{"y": [1.0, 2.0]}',
                 "m.bdl:2:7: error: 'k' is a latent with unbounded discrete support (Poisson): "
                 "it cannot be summed out, and NUTS, HMC and SVI move continuous latents only",
                 id="latent_poisson"),
    pytest.param("model M(y: real[N]) {\n  w ~ Dirichlet(ones(2))\n  z: int[N] ~ Categorical(w)\n"
                 "  y ~ Normal(z * 1.0, 1)\n}\n", '{"y": [1.0, 2.0]}',
                 "m.bdl:3:3: error: 'z' is a vector of discrete latents, shape [N] outside every "
                 "plate: labels are summed out one per plate element, not as a whole vector",
                 id="label_vector"),
])
def test_cli_unfittable_statement_is_printed_once(tmp_path, bdl_here, src, data, line):
    path = _write(tmp_path, src, data)
    r = bdl_here("run", path, "--out", tmp_path / "run")
    assert r.returncode == 1
    heads = [x for x in r.stderr.splitlines() if x.startswith(str(path))]
    assert heads == [line.replace("m.bdl", str(path), 1)]


def test_cli_unfittable_statement_is_still_a_warning_for_check(tmp_path, bdl_here):
    path = _write(tmp_path, "model M(y: real[N]) {\n  k ~ Poisson(3)\n  y ~ Normal(k, 1)\n}\n",
                  "{}")
    r = bdl_here("check", path)
    assert r.returncode == 0
    assert r.stderr.splitlines()[0].endswith("; a fit refuses it, sample_prior runs it")


def test_data_in_the_wrong_plate_is_one_error():
    src = "model M(y: real[N], J: int) {\n  a: real[J] ~ Normal(0, 1)\n  plate J {\n    y ~ Normal(a, 1)\n  }\n}\n"
    m = ppl.compile(src, filename="m.bdl")
    with pytest.raises(BdlError) as e:
        m.bind({"y": [1.0, 2.0, 3.0], "J": 2})
    assert e.value.render() == """\
m.bdl:4:5: error: size mismatch between dimension 0 of 'y' and the plate: N = 3 but J = 2 (sizes from the data)
      y ~ Normal(a, 1)
      ^
  note: N is 3 from 'y' (dimension 0)
  note: J is 2 from data key 'J'"""


@pytest.mark.parametrize("src, head", [
    # a keyword spelt right gets no did-you-mean: the mistake is elsewhere
    ("model A(y: real[N]) {\n  y ~ Normal(0, 1)\n}\ninfer nuts(samples=100 warmup=10)\n",
     "m.bdl:4:24: error: unexpected name 'warmup'; expected ')' or ','"),
    ("model A(y real[N]) {\n  y ~ Normal(0, 1)\n}\n",
     "m.bdl:1:11: error: unexpected name 'real'; expected ':'"),
    # a block that never opens is one error at its header (not a cascade after it)
    ("model A(y: real[N]) {\n  m ~ Normal(0, 1)\n  plate N\n  y ~ Normal(m, 1)\n}\n",
     "m.bdl:3:10: error: unexpected end of line; expected '{'"),
    ("model A(y: real[N])\n  y ~ Normal(0, 1)\n}\n",
     "m.bdl:1:20: error: unexpected end of line; expected '{'"),
])
def test_one_plain_error_without_a_misleading_note(src, head):
    with pytest.raises(ppl.BdlError) as e:
        ppl.compile(src, "m.bdl")
    assert len(e.value.diagnostics) == 1
    assert e.value.render().splitlines()[0] == head
    assert "did you mean" not in e.value.render()
