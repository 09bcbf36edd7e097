"""Nested and subsampled plate reads: a row read by the outer plate's index under subsampled
plates, an entry of an outer plate's row read by the inner plate's index, latents
declared without the plate's size, a factor of an outer plate's value in nested plates,
one error per mistake, and sizes printed with spaces.

Densities are compared with the same sums written out by hand (a minibatch's terms
scaled by N / B, as Pyro scales them).
"""

from __future__ import annotations

import pyro
import pytest
import sympy
import torch
from torch.distributions import Normal

import ppl
from ppl.check.sizes import shown
from ppl.syntax.diagnostics import BdlError


def _t(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _normal(x, loc) -> float:
    return float(Normal(torch.as_tensor(loc, dtype=torch.float64), 1.0).log_prob(
        torch.as_tensor(x, dtype=torch.float64)).sum())


def _trace(m, data, seed=0):
    pyro.set_rng_seed(seed)
    tr = pyro.poutine.trace(m.pyro_model).get_trace(**m.bind(data))
    tr.compute_log_prob()
    return tr


def _errors(source: str) -> list:
    with pytest.raises(BdlError) as info:
        ppl.compile(source)
    return info.value.diagnostics


# ---- 1. x2[i, :] under two subsampled plates: the whole row i ----

ROW = """
model M(x2: real[I, J], v: real[J], y: real[I, J]) {{
  plate i in I{b1} {{
    plate j in J{b2} {{
      y ~ Normal({read}, 1)
    }}
  }}
}}
"""
X2, V, Y = _t(3, 4), _t(4, seed=1), _t(3, 4, seed=2)
ROWS = [("sum(x2[i, :])", X2.sum(1)), ("mean(x2[i])", X2.mean(1)),
        ("x2[i, :] @ v", X2 @ V), ("sum(x2[i, :] * v[:])", X2 @ V)]


@pytest.mark.parametrize("b1, b2", [(" batch 2", " batch 2"), ("", " batch 2"),
                                    (" batch 2", ""), ("", "")])
@pytest.mark.parametrize("read, row", ROWS)
def test_a_row_read_by_the_outer_index_is_the_whole_row_under_minibatches(b1, b2, read, row):
    """sum(x2[i, :] * v[:]) under two batch plates was torch's 'The size of tensor a (4)
    must match the size of tensor b (2)' (written with the bare v, which is now the
    located error below); with only plate j subsampled sum(x2[i, :]) summed the
    minibatch's columns of the row (a wrong density)."""
    m = ppl.compile(ROW.format(b1=b1, b2=b2, read=read))
    tr = _trace(m, {"x2": X2, "y": Y, "v": V})
    i, j = tr.nodes["i"]["value"], tr.nodes["j"]["value"]
    assert len(i) == (2 if b1 else 3) and len(j) == (2 if b2 else 4)
    scale = (3 / len(i)) * (4 / len(j))
    want = scale * _normal(Y[i][:, j], row[i][:, None])
    assert abs(float(tr.nodes["y"]["log_prob_sum"]) - want) < 1e-4
    # the density over all the data is the same model's
    assert abs(m.log_density({}, {"x2": X2, "y": Y, "v": V}) - _normal(Y, row[:, None])) < 1e-4


@pytest.mark.parametrize("b2", ["", " batch 2"])
def test_the_bare_name_meeting_the_rows_entries_says_which_is_meant(b2):
    """sum(x2[i, :] * v): v is v[j] everywhere else in plate j (sum(x2[i, :] * (v + 0))
    is v[j] times the row), Stan's v in the loop the whole vector: a located error
    that spells both (it paired v's entries with the row's, silently)."""
    (d,) = _errors(ROW.format(b1="", b2=b2, read="sum(x2[i, :] * v)"))
    assert "'v' is read per element (v[j], one number), but it meets 'x2[i, :]'" in d.message
    assert (d.span.line, d.span.col) == (5, 22)
    assert [n for n in d.notes if "x2[i, :] * v[j]" in n or "x2[i, :] * v[:]" in n] == d.notes
    assert len(d.notes) == 2


def test_an_entry_of_the_row_read_by_the_inner_index_under_minibatches():
    m = ppl.compile(ROW.format(b1=" batch 2", b2=" batch 2", read="x2[i, :][j]"))
    tr = _trace(m, {"x2": X2, "y": Y, "v": V}, seed=3)
    i, j = tr.nodes["i"]["value"], tr.nodes["j"]["value"]
    want = 1.5 * 2 * _normal(Y[i][:, j], X2[i][:, j])
    assert abs(float(tr.nodes["y"]["log_prob_sum"]) - want) < 1e-4


# ---- 2. w = x2[t] in plate t, w[k] in plate k: entry k of row t ----

ENTRY = """
model M(x2: real[T, K], y: real[T, K]) {{
  b ~ Normal(0, 1)
  plate t in T{b1} {{
    w = {w}
    plate k in K{b2} {{
      y ~ Normal(b * ({read}), 1)
    }}
  }}
}}
"""


@pytest.mark.parametrize("w, read, loc", [
    ("x2[t]", "w[k]", lambda x: x), ("2 * x2[t]", "w[k] + x2[t, k]", lambda x: 3 * x),
    ("x2", "w[k]", lambda x: x), ("x2[t]", "x2[t][k]", lambda x: x)])
def test_an_outer_plates_row_indexed_by_the_inner_plates_index(w, read, loc):
    """w[k] of w = x2[t] was refused ('would read the layout'); it is Stan's w[k] of the
    local row w, the same density as x2[t, k]."""
    m = ppl.compile(ENTRY.format(b1="", b2="", w=w, read=read))
    same = ppl.compile(ENTRY.format(b1="", b2="", w=w, read="x2[t, k]"))
    x, y = _t(3, 4), _t(3, 4, seed=1)
    want = _normal(0.5, 0.0) + _normal(y, 0.5 * loc(x))
    assert abs(m.log_density({"b": 0.5}, {"x2": x, "y": y}) - want) < 1e-4
    if loc(x) is x:
        assert abs(same.log_density({"b": 0.5}, {"x2": x, "y": y}) - want) < 1e-4
    # under two subsampled plates: the minibatch's entries
    m = ppl.compile(ENTRY.format(b1=" batch 2", b2=" batch 2", w=w, read=read))
    tr = _trace(m, {"x2": x, "y": y}, seed=1)
    t, k, b = tr.nodes["t"]["value"], tr.nodes["k"]["value"], tr.nodes["b"]["value"]
    want = 1.5 * 2 * _normal(y[t][:, k], float(b) * loc(x)[t][:, k])
    assert abs(float(tr.nodes["y"]["log_prob_sum"]) - want) < 1e-4


def test_a_latent_row_of_an_outer_plate_indexed_by_the_inner_plates_index():
    m = ppl.compile("""
model M(x2: real[T, K], y: real[T, K]) {
  plate t in T {
    w: real[T, K] ~ Normal(x2[t], 1)
    plate k in K {
      y ~ Normal(w[k], 1)
    }
  }
}
""")
    x, y, w = _t(3, 4), _t(3, 4, seed=1), _t(3, 4, seed=2)
    want = _normal(w, x) + _normal(y, w)
    assert abs(m.log_density({"w": w}, {"x2": x, "y": y}) - want) < 1e-4
    # undeclared, the suggested declaration is the plates' sizes and the row's: not
    # Pyro's layout [T, 1, K]
    (d,) = _errors("model M(x2: real[T, K], y: real[T, K]) {\n  plate t in T {\n"
                   "    w ~ Normal(x2[t], 1)\n    plate k in K { y ~ Normal(w[k], 1) }\n"
                   "  }\n}\n")
    assert d.notes == ["declare the shape, the plates' sizes first: w: real[T, K] ~ ..."]


# ---- 3. a latent declared without the plate's size ----

@pytest.mark.parametrize("decl, why, per, shared", [
    ("real[Z]", "dimension 0 (Z) is not plate N's size N", "for Z values per element of the "
     "plate: z: real[N, Z] ~ ...", "for one real[Z] shared by every element: draw it before "
     "plate N"),
    ("real<lower=0>[2]", "dimension 0 (2) is not plate N's size N", "for 2 values per element "
     "of the plate: z: real<lower=0>[N, 2] ~ ...", "for one real<lower=0>[2] shared by every "
     "element: draw it before plate N"),
    ("real", "it has 0 dimensions", "for one value per element of the plate: z: real[N] ~ ...",
     "for one real shared by every element: draw it before plate N"),
])
def test_a_latent_declared_without_the_plates_size_is_a_located_error(decl, why, per, shared):
    """z: real[Z] in plate N was 'size mismatch between dimension 0 of 'z' and the plate'
    at binding, and ran where the data made Z = N; z: real[N + 1] was followed by a second
    error at the read of z."""
    (d,) = _errors(f"model M(y: real[N], Z: int) {{\n  plate N {{\n    z: {decl} ~ "
                   "HalfNormal(1)\n    y ~ Normal(sum(z), 1)\n  }\n}\n")
    assert (d.span.line, d.span.col) == (3, 5)
    assert d.message == (f"'z' is declared {decl} inside plate N: a latent drawn in a plate "
                         f"has the plates' sizes first, and {why}")
    assert d.notes == [per, shared]


def test_a_refused_latent_shape_gives_no_follow_on_error():
    (d,) = _errors("model M(y: real[N]) {\n  plate N {\n    z: real[N + 1] ~ Normal(0, 1)\n"
                   "    y ~ Normal(z, 1)\n  }\n}\n")
    assert "dimension 0 (N + 1) is not plate N's size N" in d.message
    # the right declaration runs: one value per element
    m = ppl.compile("model M(y: real[N], Z: int) {\n  plate N {\n    z: real[N, Z] ~ "
                    "Normal(0, 1)\n    y ~ Normal(sum(z, dim=-1), 1)\n  }\n}\n")
    z, y = _t(3, 2), _t(3, seed=1)
    got = m.log_density({"z": z}, {"y": y, "Z": 2})
    assert abs(got - (_normal(z, 0.0) + _normal(y, z.sum(1)))) < 1e-4


# ---- 4. a factor of an outer plate's value in nested plates ----

@pytest.mark.parametrize("stmt, term", [
    ("a ~ Normal(0, 1)\n    plate j in J { factor(-a * a) }", lambda a, g: -3 * (a * a).sum()),
    ("plate j in J { factor(log_prob(Normal(0, 1), g)) }",
     lambda a, g: 3 * float(Normal(0.0, 1.0).log_prob(g).sum())),
    ("s = 2 * g\n    plate j in J { factor(s) }", lambda a, g: 3 * 2 * g.sum())])
def test_a_factor_of_an_outer_plates_value_in_nested_plates(stmt, term):
    """factor(-a * a) of a drawn in the outer plate ([I, 1] there) was Pyro's 'Shape
    mismatch inside plate('j') at site factor_4 dim -1, 3 vs 2': its unit dim was summed.
    As Stan's target += in the inner loop, each (i, j) adds the outer element's term."""
    m = ppl.compile(f"model M(g: real[I], J: int) {{\n  plate i in I {{\n    {stmt}\n  }}\n}}\n")
    a, g = _t(2), _t(2, seed=1)
    values = {"a": a} if "a ~" in stmt else {}
    got = m.log_density(values, {"g": g, "J": 3})
    want = float(term(a, g)) + (_normal(a, 0.0) if values else 0.0)
    assert abs(got - want) < 1e-4


def test_a_factor_of_data_of_the_inner_plates_size_first_is_per_inner_element():
    # m: real[J, I] is one row of I numbers per element of plate j (its leading size is
    # plate j's), summed per element: I * sum(m) over the I x J elements
    m = ppl.compile("model M(m: real[J, I]) {\n  plate i in I { plate j in J { factor(m) } }\n}\n")
    x = _t(3, 2)
    assert abs(m.log_density({}, {"m": x}) - 2 * float(x.sum())) < 1e-4


# ---- 6. sizes printed with spaces ----

def test_sizes_print_with_spaces_in_check_and_binding_messages():
    N, K = sympy.symbols("N K", integer=True, positive=True)
    assert [shown(e) for e in (N ** 2 + 1, N / 2, sympy.Rational(5, 2), 2 * N - K, N * K - K + 2)] \
        == ["N * N + 1", "N / 2", "5 / 2", "2 * N - K", "K * N - K + 2"]
    (d,) = _errors("model M(y: real[N * N + 1]) {\n  plate i in N * N { y ~ Normal(0, 1) }\n}\n")
    assert d.message == "'y' has leading size N * N + 1 but plate i has size N * N"
    m = ppl.compile("model M(x: real[N * N], y: real[N]) {\n  y ~ Normal(sum(x), 1)\n}\n")
    with pytest.raises(BdlError, match=r"'x' dimension 0 is 3 but is declared N \* N = 4"):
        m.bind({"x": [1.0, 2.0, 3.0], "y": [1.0, 2.0]})
