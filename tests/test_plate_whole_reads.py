"""Plate densities found by the oracle fuzz (Stan's loop meaning), each against
the sum written out by hand: an explicit ``[:]`` over a plate-sized dim reads the whole
dim; an index of plate-sized data that is the same for every element (``xm[1]``,
``A[0]``) is one vector for the whole plate, also where it meets a per-element value; a
global vector meets a per-element number in an outer plate's body by its own dims; a
latent of an outer plate of nested plates is read by index in a later subsampled plate.

A minibatch's terms are scaled by N / B, as Pyro scales them.
"""

from __future__ import annotations

import pyro
import pytest
import torch
from torch.distributions import Normal, Poisson

import ppl


def _t(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def _normal(x, loc, scale=1.0) -> float:
    return float(Normal(torch.as_tensor(loc, dtype=torch.float64), scale).log_prob(
        torch.as_tensor(x, dtype=torch.float64)).sum())


def _poisson(y, rate) -> float:
    return float(Poisson(torch.as_tensor(rate, dtype=torch.float64)).log_prob(
        torch.as_tensor(y, dtype=torch.float64)).sum())


def _trace(m, data, seed=0, given=None):
    pyro.set_rng_seed(seed)
    model = m.pyro_model if given is None else pyro.poutine.condition(m.pyro_model, given)
    tr = pyro.poutine.trace(model).get_trace(**m.bind(data))
    tr.compute_log_prob()
    return tr


def _density(src: str, latents: dict, data: dict) -> float:
    return float(ppl.compile(src).log_density(latents, data))


SP = torch.nn.functional.softplus


# ---- 1. an explicit [:] over a plate-sized dim reads the whole dim ----

U = _t(4).abs()
Y1 = torch.poisson(torch.ones(4, 4), generator=torch.Generator().manual_seed(3))


def test_a_whole_slice_of_plate_sized_data_is_the_whole_vector():
    """u[:] in plate m was read as u[m] (-25.544 where Stan's is -23.448); as u[0:4]."""
    for read in ("u[:]", "u[0:4]"):
        got = _density("model F(u: real[M], y1: int[M, M]) {\n  plate m in M {\n"
                       f"    y1 ~ Poisson(softplus({read}))\n  }}\n}}", {},
                       {"u": U, "y1": Y1})
        assert abs(got - _poisson(Y1, SP(U).expand(4, 4))) < 1e-4


def test_a_whole_slice_of_a_global_latent_is_the_whole_vector():
    c, y = _t(4, seed=1), torch.poisson(torch.ones(4, 4),
                                        generator=torch.Generator().manual_seed(4))
    got = _density("model F(y3: int[K, K]) {\n  c: real[K] ~ Normal(0, 1)\n"
                   "  plate k in K {\n    y3 ~ Poisson(softplus(c[:]))\n  }\n}",
                   {"c": c}, {"y3": y})
    assert abs(got - (_normal(c, 0.0) + _poisson(y, SP(c).expand(4, 4)))) < 1e-4


def test_a_whole_column_of_plate_data_is_the_column_for_every_row():
    xm, y = _t(3, 4, seed=2), _t(3, 3, seed=3)
    got = _density("model F(xm: real[N, M], y5: real[N, N]) {\n  plate n in N {\n"
                   "    y5 ~ Normal(xm[:, 1], 1.0)\n  }\n}", {}, {"xm": xm, "y5": y})
    assert abs(got - _normal(y, xm[:, 1].expand(3, 3))) < 1e-4


def test_whole_slices_in_nested_plates():
    x, y6 = _t(4, seed=4), _t(5, 4, 4, seed=5)
    got = _density("model F(x: real[N], y6: real[K, N, N]) {\n  plate k in K {\n"
                   "    plate n in N {\n      y6 ~ Normal(x[:], 1.0)\n    }\n  }\n}",
                   {}, {"x": x, "y6": y6})
    assert abs(got - _normal(y6, x.expand(5, 4, 4))) < 1e-4
    A, y4 = _t(5, 4, seed=6), _t(4, 5, 5, seed=7)
    got = _density("model F(A: real[K, M], y4: real[M, K, K]) {\n  plate m in M {\n"
                   "    plate k in K {\n      y4 ~ Normal(A[:, 0], 0.7)\n    }\n  }\n}",
                   {}, {"A": A, "y4": y4})
    assert abs(got - _normal(y4, A[:, 0].expand(4, 5, 5), 0.7)) < 1e-4


def test_a_whole_slice_then_an_index_is_that_row():
    x2, y = _t(3, 4, seed=8), torch.poisson(torch.ones(3, 4),
                                            generator=torch.Generator().manual_seed(9))
    got = _density("model F(x2: real[N, M], y1: int[N, M]) {\n  plate n in N {\n"
                   "    y1 ~ Poisson(softplus(x2[:][1]))\n  }\n}", {}, {"x2": x2, "y1": y})
    assert abs(got - _poisson(y, SP(x2[1]).expand(3, 4))) < 1e-4


@pytest.mark.parametrize("read, loc", [("u[:]", lambda u, i: u.expand(len(i), 4)),
                                       ("u[:] + u", lambda u, i: u + u[i, None])])
def test_a_whole_slice_in_a_subsampled_plate_is_not_cut(read, loc):
    y = _t(4, 4, seed=10)
    m = ppl.compile("model F(u: real[M], y: real[M, M]) {\n  plate m in M batch 2 {\n"
                    f"    y ~ Normal({read}, 1)\n  }}\n}}")
    tr = _trace(m, {"u": U, "y": y}, seed=1)
    i = tr.nodes["m"]["value"]
    assert len(i) == 2
    want = 2 * _normal(y[i], loc(U, i))
    assert abs(float(tr.nodes["y"]["log_prob_sum"]) - want) < 1e-4


# ---- 2. an index of plate-sized data that is the same for every element ----

N, M, K = 3, 4, 5
XM, X, V = _t(N, M, seed=11), _t(N, seed=12), _t(M, seed=13)
Y = _t(N, M, seed=14)


@pytest.mark.parametrize("inner, loc, want", [
    (inner, loc, want) for loc, want in [
        ("xm[1] + x[n]", XM[1] + X[:, None]), ("v + x[n]", V + X[:, None]),
        ("v * n", V * torch.arange(N)[:, None])]
    for inner in ["", "plate m in M { }", "plate k in K { }"]
    if inner or loc == "xm[1] + x[n]"])  # v + x[n] alone was right
def test_a_global_vector_meets_a_per_element_number_by_its_own_dims(inner, loc, want):
    """With an (even empty) nested plate, v + x[n] put v's M on the inner plate's dim
    (-78.06 where Stan's is -21.15); without one, xm[1] + x[n] was refused."""
    got = _density(f"model F(N: int, M: int, K: int, xm: real[N, M], x: real[N], v: real[M], "
                   f"y: real[N, M]) {{\n  plate n in N {{\n    y ~ Normal({loc}, 1)\n"
                   f"    {inner}\n  }}\n}}", {},
                   {"N": N, "M": M, "K": K, "xm": XM, "x": X, "v": V, "y": Y})
    assert abs(got - _normal(Y, want)) < 1e-4


@pytest.mark.parametrize("inner", ["", "plate m in M { }"])
def test_an_entry_of_a_per_element_value_made_from_a_global_vector(inner):
    """w = v * n; factor(w[0]) was refused with a nested plate ('one number per element')."""
    got = _density(f"model F(N: int, M: int, v: real[M]) {{\n  a ~ Normal(0, 1)\n"
                   f"  plate n in N {{\n    w = v * n\n    factor(w[0])\n    {inner}\n"
                   "  }\n}", {"a": 0.0}, {"N": N, "M": M, "v": V})
    assert abs(got - (_normal(0.0, 0.0) + float(V[0] * torch.arange(N).sum()))) < 1e-4


A = _t(K, M, seed=15)
UM, YMM = _t(M, seed=16), _t(M, M, seed=17)


@pytest.mark.parametrize("inner", ["", "plate k in K { }"])
@pytest.mark.parametrize("loc, want", [("A[0] + 0 * u[m]", A[0].expand(M, M)),
                                       ("A[0] - u", A[0] - UM[:, None])])
def test_a_row_of_data_of_the_plates_size_is_one_vector_for_the_plate(inner, loc, want):
    """A[0] + 0 * u[m] paired A[0]'s M entries with plate m's elements (-41.66 where
    Stan's is -36.91): A[0] is each row's vector."""
    got = _density(f"model F(K: int, A: real[K, M], u: real[M], y: real[M, M]) {{\n"
                   f"  plate m in M {{\n    y ~ Normal({loc}, 1)\n    {inner}\n  }}\n}}", {},
                   {"K": K, "A": A, "u": UM, "y": YMM})
    assert abs(got - _normal(YMM, want)) < 1e-4


@pytest.mark.parametrize("term, want", [
    ("xm[0] @ xm[n]", lambda xm, x: (xm @ xm[0]).sum()),
    ("sum(xm[1] * x[n])", lambda xm, x: xm[1].sum() * x.sum())])
def test_a_factor_of_a_global_row_with_a_per_element_value(term, want):
    """Both were refused ('size mismatch', 'would match the plate's size N with M')."""
    got = _density("model F(x: real[N], xm: real[N, M]) {\n  a ~ Normal(0, 1)\n"
                   f"  plate n in N {{\n    factor({term})\n  }}\n}}", {"a": 0.0},
                   {"x": X, "xm": XM})
    assert abs(got - (_normal(0.0, 0.0) + float(want(XM, X)))) < 1e-4


def test_a_global_number_in_a_per_element_list_is_stacked_per_element():
    """[w, y[0]] was refused ('cannot be told'): y[0] is one number for the whole plate."""
    w, y = torch.tensor([0.2, 0.7, 0.4]), torch.tensor([0.5, -1.0, 2.0])
    got = _density("model P(y: real[N], w: real[N]) {\n  m ~ Normal(0, 3)\n  plate N {\n"
                   "    y ~ MixtureSameFamily(Categorical(probs=[w, y[0]]), "
                   "Normal([m, 0.0], 1))\n  }\n}", {"m": 0.3}, {"y": y, "w": w})
    p = torch.stack([w, y[0].expand(3)], -1)
    p = p / p.sum(-1, keepdim=True)
    dens = p[:, 0] * Normal(0.3, 1.0).log_prob(y).exp() + \
        p[:, 1] * Normal(0.0, 1.0).log_prob(y).exp()
    assert abs(got - (_normal(0.3, 0.0, 3.0) + float(dens.log().sum()))) < 1e-4


# ---- 4. a latent of an outer plate read in a later subsampled plate ----

LATER = """
model L(K: int, M: int) {{
  plate k in K {{
    plate m in M {{ }}
    z6: real[K] ~ Normal(0.5, 1)
  }}
  plate k in K{b} {{
    z8: real[K] ~ Normal({read}, 1)
  }}
}}
"""


@pytest.mark.parametrize("read", ["z6[k]", "z6 + 0 * z6[k]"])
def test_an_outer_plates_latent_read_in_a_later_subsampled_plate(read):
    """z6[k] in the batch plate read z6's [K, 1] layout ([K, K] terms: -30.71 where the
    model's density is -13.83); the same without batch, or with z6 read bare."""
    z6, z8 = _t(4, seed=18), _t(4, seed=19)
    for b, r in ((" batch 2", read), ("", read), (" batch 2", "z6")):
        m = ppl.compile(LATER.format(b=b, read=r))
        got = m.log_density({"z6": z6, "z8": z8}, {"K": 4, "M": 3})
        assert abs(got - (_normal(z6, 0.5) + _normal(z8, z6))) < 1e-4
        tr = _trace(m, {"K": 4, "M": 3}, seed=1, given={"z6": z6[:, None]})
        i = tr.nodes["k_2"]["value"]
        assert len(i) == (2 if b else 4)
        want = (4 / len(i)) * _normal(tr.nodes["z8"]["value"], z6[i])
        assert abs(float(tr.nodes["z8"]["log_prob_sum"]) - want) < 1e-4


def test_two_values_of_the_same_plates_meet_by_their_plate_dims():
    """x[n] * x2[n] under plates n and k, and v[gid[n]] + xm[n] in plate n around an
    (empty) plate k, met the number's plate dim with the row's own dim (-218.39 where
    Stan's is -214.17; -148.99 where it is -49.66)."""
    x2, y5 = _t(N, K, seed=20), _t(N, K, K, seed=21)
    got = _density("model F(x: real[N], x2: real[N, K], y5: real[N, K, K]) {\n"
                   "  plate n in N {\n    plate k in K {\n"
                   "      y5 ~ Normal(x[n] * x2[n], 0.5)\n    }\n  }\n}", {},
                   {"x": X, "x2": x2, "y5": y5})
    assert abs(got - _normal(y5, (X[:, None] * x2)[:, None, :].expand(N, K, K), 0.5)) < 1e-4
    gid = torch.tensor([2, 0, 3])
    got = _density("model F(K: int, v: real[M], gid: int[N], xm: real[N, M], y: real[N, M]) {\n"
                   "  plate n in N {\n    y ~ Normal(v[gid[n]] + xm[n], 0.7)\n"
                   "    plate k in K { }\n  }\n}", {},
                   {"K": K, "v": V, "gid": gid, "xm": XM, "y": Y})
    assert abs(got - _normal(Y, V[gid][:, None] + XM, 0.7)) < 1e-4


def test_an_index_written_into_the_data_is_the_whole_vector_in_an_assignment_and_a_factor():
    """w5 = x[:] / v[gid[n]] and factor(sum(A[0] * u[m])) paired the vector's entries with
    the plate's elements (x[:] and A[0] have the plate's size): each element's vector."""
    x, gid = _t(4, seed=22), torch.tensor([2, 0, 3, 1])
    y6 = torch.bernoulli(torch.full((4, 4), 0.5), generator=torch.Generator().manual_seed(5))
    got = _density("model F(x: real[N], v: real[M], gid: int[N], y6: int[N, N]) {\n"
                   "  plate n in N {\n    w5 = x[:] / v[gid[n]]\n"
                   "    y6 ~ Bernoulli(logits=w5)\n  }\n}", {},
                   {"x": x, "v": V, "gid": gid, "y6": y6})
    logits = x / V[gid][:, None]
    want = float(torch.distributions.Bernoulli(logits=logits).log_prob(y6).sum())
    assert abs(got - want) < 1e-4
    got = _density("model F(A: real[K, M], u: real[M]) {\n  a ~ Normal(0, 1)\n"
                   "  plate m in M {\n    factor(sum(A[0] * u[m]))\n  }\n}", {"a": 0.0},
                   {"A": A, "u": UM})
    assert abs(got - (_normal(0.0, 0.0) + float(A[0].sum() * UM.sum()))) < 1e-4


def test_a_bounded_slice_of_plate_data_by_global_indices_is_one_value_for_the_plate():
    """x2[0, 0:2] and A[0:2, 0] in the body of an outer plate of nested plates were read
    as the element's row (factor 26.512 where Stan's is 6.628)."""
    x2, gid = _t(4, K, seed=23), torch.tensor([2, 0, 3, 1])
    got = _density("model F(M: int, x2: real[N, K], v: real[M], gid: int[N]) {\n"
                   "  a ~ Normal(0, 1)\n  plate n in N {\n    plate m in M { }\n"
                   "    factor(x2[0, 0:2] - v[gid[n]])\n  }\n}", {"a": 0.0},
                   {"M": M, "x2": x2, "v": V, "gid": gid})
    want = (x2[0, 0:2][None, :] - V[gid][:, None]).sum()
    assert abs(got - (_normal(0.0, 0.0) + float(want))) < 1e-4
    x = _t(4, seed=24)
    got = _density("model F(x: real[N], A: real[K, M]) {\n  a ~ Normal(0, 1)\n"
                   "  plate n in N {\n    plate k in K {\n"
                   "      factor(logsumexp(A[0:2, 0] / x[n], dim=0))\n    }\n  }\n}",
                   {"a": 0.0}, {"x": x, "A": A})
    want = K * torch.logsumexp(A[0:2, 0][None, :] / x[:, None], -1).sum()
    assert abs(got - (_normal(0.0, 0.0) + float(want))) < 1e-4
