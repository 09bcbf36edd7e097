"""Values read inside plates: where they sit and which of them a minibatch cuts.

A value computed in an outer plate (``s = x[t]``) is that plate's, one value per row of
an inner plate, as Stan's nested loops and Pyro's nested plates read it; a value whose
size is not the plate's (``x: real[Z]`` in ``plate N``) is the same for every element
and is refused where broadcasting would pair it with the plate's elements; a value of
the plate's size defined before it (a latent ``f: real[N]``) is cut to the minibatch of
a subsampled plate, and an index along a subsampled dim reads the uncut value.

Densities are compared with the same sums written out by hand.
"""

from __future__ import annotations

import re

import pyro
import pytest
import torch
from torch.distributions import Normal

import ppl
from ppl.syntax.diagnostics import BdlError


def _normal(x, loc, scale=1.0) -> float:
    return float(Normal(torch.as_tensor(loc, dtype=torch.float64),
                        torch.as_tensor(scale, dtype=torch.float64)).log_prob(
        torch.as_tensor(x, dtype=torch.float64)).sum())


def _t(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def _errors(source: str) -> list[str]:
    """Each error's rendered text (location, message, source line, notes)."""
    with pytest.raises(BdlError) as info:
        ppl.compile(source)
    return [t for t in re.split(r"(?m)^(?=<string>:)", str(info.value)) if t]


# ---- a value computed in an outer plate, read in an inner plate ----

OUTER = """
model M(x: real[T], y: real[T, K]) {
  b ~ Normal(0, 1)
  plate t in T {
    s = x[t]
    plate k in K {
      y ~ Normal(b * s, 1)
    }
  }
}
"""


@pytest.mark.parametrize("t, k", [(3, 4), (3, 3)])
def test_outer_plate_value_is_one_value_per_row_of_the_inner_plate(t, k):
    """Was 'the distribution has shape [T, 1, 1], which does not fit y'."""
    m = ppl.compile(OUTER)
    x, y = _t(t), _t(t, k, seed=1)
    got = m.log_density({"b": 0.3}, {"x": x, "y": y})
    assert abs(got - (_normal(0.3, 0) + _normal(y, 0.3 * x[:, None]))) < 1e-4


def test_outer_plate_value_as_an_index_and_latents_of_the_outer_plate():
    m = ppl.compile("""
model A(G: int, g: int[T], y: real[T, K]) {
  mu: real[G] ~ Normal(0, 1)
  plate t in T {
    j = g[t]
    u ~ Normal(0, 1)
    plate k in K {
      y ~ Normal(mu[j] + u, 1)
    }
  }
}
""")
    g, y, mu, u = torch.tensor([0, 2, 1]), _t(3, 4), _t(3, seed=2), _t(3, seed=3)
    got = m.log_density({"mu": mu, "u": u}, {"G": 3, "g": g, "y": y})
    want = _normal(mu, 0) + _normal(u, 0) + _normal(y, (mu[g] + u)[:, None])
    assert abs(got - want) < 1e-4


def test_three_levels_of_nesting():
    m = ppl.compile("""
model C(x: real[T], z: real[K], y: real[T, K, L]) {
  b ~ Normal(0, 1)
  plate t in T {
    s = x[t]
    u ~ Normal(0, 1)
    plate k in K {
      r = s * z[k]
      v ~ Normal(u, 1)
      plate l in L {
        y ~ Normal(b * r + s + u + v, 1)
      }
    }
  }
}
""")
    x, z, y = _t(3), _t(4, seed=1), _t(3, 4, 2, seed=2)
    u, v = _t(3, seed=3), _t(3, 4, seed=4)
    got = m.log_density({"b": 0.3, "u": u, "v": v}, {"x": x, "z": z, "y": y})
    mean = 0.3 * (x[:, None] * z)[..., None] + x[:, None, None] + u[:, None, None] \
        + v[..., None]
    want = _normal(0.3, 0) + _normal(u, 0) + _normal(v, u[:, None]) + _normal(y, mean)
    assert abs(got - want) < 1e-4


def test_deterministic_of_the_outer_plate_keeps_its_declared_shape():
    m = ppl.compile("""
model B(x: real[T], y: real[T, K]) {
  b ~ Normal(0, 1)
  plate t in T {
    s = x[t]
    u ~ Normal(0, 1)
    d = b * s + u
    plate k in K {
      y ~ Normal(d, 1)
    }
  }
}
""")
    x, y, u = _t(3), _t(3, 4, seed=1), _t(3, seed=2)
    got = m.log_density({"b": 0.3, "u": u}, {"x": x, "y": y})
    want = _normal(0.3, 0) + _normal(u, 0) + _normal(y, (0.3 * x + u)[:, None])
    assert abs(got - want) < 1e-4
    prior = m.sample_prior({"x": x, "y": y}, num_samples=5)
    assert prior["d"].shape == (5, 3) and prior["y"].shape == (5, 3, 4)
    assert torch.allclose(prior["d"], prior["b"][:, None] * x + prior["u"])


def test_outer_plate_value_under_a_subsampled_outer_plate():
    """The minibatch's rows of x meet the minibatch's rows of y."""
    m = ppl.compile("""
model D(x: real[T], y: real[T, K]) {
  b ~ Normal(0, 1)
  plate t in T batch 2 {
    s = x[t]
    s2 = 2 * x
    plate k in K {
      y ~ Normal(b * s + s2, 1)
    }
  }
}
infer svi(steps=3, samples=2)
""")
    x, y = _t(5).float(), _t(5, 3, seed=1).float()
    pyro.set_rng_seed(0)
    tr = pyro.poutine.trace(m.pyro_model).get_trace(**m.bind({"x": x, "y": y}))
    idx, b = tr.nodes["t"]["value"], tr.nodes["b"]["value"]
    assert idx.shape == (2,)
    got = float(tr.nodes["y"]["fn"].log_prob(tr.nodes["y"]["value"]).sum())
    assert abs(got - _normal(y[idx].double(), ((b + 2) * x[idx]).double()[:, None])) < 1e-4
    assert m.fit({"x": x, "y": y}, seed=0).samples["b"].shape == (2,)


# ---- a value whose size is not the plate's ----

@pytest.mark.parametrize("batch", ["", " batch 2"])
def test_a_value_not_of_the_plates_size_is_refused_where_it_meets_the_plate(batch):
    """x: real[Z] read whole in plate N: Pyro paired x[n] with y[n] where Z = N (with
    batch: torch's raw 'Shape mismatch inside plate', x is not cut to the minibatch)."""
    errs = _errors(f"""
model M(x: real[Z], y: real[N]) {{
  w ~ Normal(0, 1)
  plate N{batch} {{ y ~ Normal(w * x, 1) }}
}}
""")
    assert len(errs) == 1
    assert f"4:{28 + len(batch)}: error: inside plate N, 'x' (shape [Z]) is one value for the " \
        "whole plate, not one per element: its size Z is not the plate's size N" in errs[0]
    assert ("nor subsampled" in errs[0]) == bool(batch)
    assert "x: real[N]" in errs[0] and "x[i] under plate i in N" in errs[0]


def test_values_not_of_the_plates_size_in_nested_plates_and_through_a_deterministic():
    errs = _errors("""
model M(v: real[K], x: real[Z], y: real[N, M], y2: real[N]) {
  w ~ Normal(0, 1)
  plate N {
    m = w * x
    y2 ~ Normal(m, 1)
    plate M { y ~ Normal(v, 1) }
  }
}
""")
    assert len(errs) == 2
    assert "6:17: error: inside plate N, 'm' (shape [Z]) is one value for the whole plate" \
        in errs[0] and "would fill dim -1, which Pyro keeps for the plate nested in plate N" \
        in errs[0]
    assert "7:26: error: inside plate M, 'v' (shape [K])" in errs[1]


def test_observed_data_not_of_a_subsampled_plates_size_is_refused():
    """y: real[Z] observed in plate N batch 2 was not cut to the minibatch (torch's 'not
    broadcastable'); without batch, Z = N is checked at binding as before."""
    src = """
model M(x: real[N], y: real[Z]) {
  w ~ Normal(0, 1)
  plate N batch 2 { y ~ Normal(w * x, 1) }
}
"""
    errs = _errors(src)
    assert len(errs) == 1
    assert "4:21: error: 'y' has leading size Z, not plate N's size N, and the plate is " \
        "subsampled (batch)" in errs[0] and "y: real[N]" in errs[0]
    m = ppl.compile(src.replace(" batch 2", ""))
    x, y = _t(4), _t(4, seed=1)
    got = m.log_density({"w": 0.5}, {"x": x, "y": y})
    assert abs(got - (_normal(0.5, 0) + _normal(y, 0.5 * x))) < 1e-4


def test_a_plate_sized_dim_that_is_not_first_in_a_subsampled_plate_is_refused():
    src = """
model L(X: real[D, N], y: real[N]) {
  w: real[D] ~ Normal(0, 1)
  plate N batch 2 { y ~ Normal(w @ X, 1) }
}
infer svi(steps=3, samples=2)
"""
    errs = _errors(src)
    assert len(errs) == 1
    assert "4:36: error: inside plate N, which is subsampled (batch), 'w @ X' has one value " \
        "per element of the plate, but 'X' (shape [D, N]) does not have the plate's size N " \
        "as its first dimension" in errs[0]
    # computed before the plate, it is a value of the plate's size, cut to the minibatch
    m = ppl.compile(src.replace("  plate N batch 2 { y ~ Normal(w @ X, 1) }",
                                "  v = w @ X\n  plate N batch 2 { y ~ Normal(v, 1) }"))
    assert "v_N = v.index_select(0, idx_N)" in m.source
    assert m.fit({"X": _t(3, 5).float(), "y": _t(5, seed=1).float()},
                 seed=0).samples["w"].shape == (2, 3)
    # without batch the same expression is one value per element
    ppl.compile(src.replace(" batch 2", ""))


@pytest.mark.parametrize("source", [
    "model L(X: real[N, K], y: real[N]) {\n  w: real[K] ~ Normal(0, 1)\n"
    "  plate N batch 2 { y ~ Normal(X @ w, 1) }\n}",
    "model L(y: real[N, K]) {\n  mu: real[K] ~ Normal(0, 1)\n"
    "  plate N batch 2 { y ~ Normal(mu, 1) }\n}",
    "model L(v: real[K], y: real[N, K]) {\n  s ~ HalfNormal(1)\n"
    "  plate N batch 2 { y ~ Normal(v * s, 1) }\n}",
    "model L(y: real[N, K]) {\n  mu: real[K] ~ Normal(0, 1)\n"
    "  plate N batch 2 { y ~ MultivariateNormal(mu, eye(K)) }\n}",
    "model L(K: int, y: int[N]) {\n  p: simplex[K] ~ Dirichlet(ones(K))\n"
    "  plate N batch 2 { y ~ Categorical(probs=p) }\n}",
    "model L(x: real[Z], y: real[N]) {\n  w ~ Normal(0, 1)\n"
    "  plate i in N batch 2 { y ~ Normal(w * x[i] + sum(x), 1) }\n}",
])
def test_global_values_that_meet_their_own_sizes_are_accepted(source):
    """X @ w, a K-vector with a K-sized thing, a simplex, x[i] and sum(x) of x: real[Z]."""
    ppl.compile(source)


# ---- values of the plate's size defined before it, and indexes into a minibatch ----

def test_a_global_latent_of_the_plates_size_is_cut_to_the_minibatch():
    """f: real[N] read whole in plate N batch 2 was Pyro's 'Shape mismatch inside plate'."""
    m = ppl.compile("""
model L(y: real[N]) {
  f: real[N] ~ Normal(0, 1)
  plate N batch 2 { y ~ Normal(f, 1) }
}
infer svi(steps=3, samples=2)
""")
    assert "f_N = f.index_select(0, idx_N)" in m.source
    y, f = _t(5).float(), _t(5, seed=1)
    pyro.set_rng_seed(0)
    cond = pyro.poutine.condition(m.pyro_model, data={"f": f.float()})
    tr = pyro.poutine.trace(cond).get_trace(**m.bind({"y": y}))
    idx = tr.nodes["N"]["value"]
    got = float(tr.nodes["y"]["fn"].log_prob(tr.nodes["y"]["value"]).sum())
    assert abs(got - _normal(y[idx].double(), f[idx])) < 1e-4
    assert m.fit({"y": y}, seed=0).samples["f"].shape == (2, 5)
    assert abs(m.log_density({"f": f}, {"y": y}) - _normal(f, 0) - _normal(y.double(), f)) \
        < 1e-4


def test_a_latent_of_a_closed_plate_is_cut_to_a_later_minibatch():
    m = ppl.compile("""
model C(y: real[I, W], z: real[I]) {
  plate I {
    u ~ Normal(0, 1)
    plate W { v ~ Normal(u, 1) }
  }
  plate i in I batch 2 {
    z ~ Normal(u, 1)
    y ~ Normal(u, 1)
  }
}
infer svi(steps=3, samples=2)
""")
    fit = m.fit({"y": _t(4, 3).float(), "z": _t(4, seed=1).float()}, seed=0)
    assert fit.samples["u"].shape == (2, 4)


def test_an_index_along_a_subsampled_dim_reads_the_uncut_value():
    """x[perm] and x[i, j] hold full-range positions: they index x itself, not its
    minibatch (x_n[perm_n] and x_i[i, j] were IndexErrors or the wrong rows)."""
    m = ppl.compile("""
model P(x: real[N], perm: int[N], y: real[N], x2: real[N, M], y2: real[N, M]) {
  a: real[N] ~ Normal(0, 1)
  plate n in N batch 2 { y ~ Normal(x[perm] + a[perm] + a[n], 1) }
  plate i in N batch 2 {
    plate j in M batch 2 { y2 ~ Normal(x2[i, j], 1) }
  }
}
""")
    assert "x[perm_n] + a[perm_n] + a[n]" in m.source and "x2[i, j]" in m.source
    x, y, a = _t(5).float(), _t(5, seed=1).float(), _t(5, seed=2).float()
    x2, y2 = _t(5, 4, seed=3).float(), _t(5, 4, seed=4).float()
    perm = torch.tensor([4, 3, 2, 1, 0])
    pyro.set_rng_seed(0)
    cond = pyro.poutine.condition(m.pyro_model, data={"a": a})
    tr = pyro.poutine.trace(cond).get_trace(**m.bind(
        {"x": x, "perm": perm, "y": y, "x2": x2, "y2": y2}))
    n, i, j = (tr.nodes[k]["value"] for k in ("n", "i", "j"))
    got = float(tr.nodes["y"]["fn"].log_prob(tr.nodes["y"]["value"]).sum())
    want = _normal(y[n].double(), (x[perm[n]] + a[perm[n]] + a[n]).double())
    assert abs(got - want) < 1e-4
    got = float(tr.nodes["y2"]["fn"].log_prob(tr.nodes["y2"]["value"]).sum())
    assert abs(got - _normal(y2[i][:, j].double(), x2[i][:, j].double())) < 1e-4


def test_the_suggested_declaration_keeps_an_index_vectors_int_type():
    """An int vector not of the plate's size: the fix declares it int (declaring it real,
    as the message once said, would break its use as an index)."""
    errs = _errors("""
model M(g: int[Z], a: real[K], y: real[N]) {
  plate N { y ~ Normal(a[g], 1) }
}
""")
    assert len(errs) == 1 and "g: int[N]" in errs[0] and "g: real[N]" not in errs[0]


def _minibatch_density(m, seed):
    """y's log density in one trace of ``m`` (data N = 5, x, X: [5, 3], w, y; f given),
    the plate i's minibatch, and the values in float64."""
    x, y, f = _t(5).float(), _t(5, seed=1).float(), _t(5, seed=2).float()
    X, w = _t(5, 3, seed=3).float(), _t(3, seed=4).float()
    pyro.set_rng_seed(seed)
    cond = pyro.poutine.condition(m.pyro_model, data={"f": f})
    tr = pyro.poutine.trace(cond).get_trace(**m.bind(
        {"N": 5, "x": x, "X": X, "w": w, "y": y}))
    got = float(tr.nodes["y"]["fn"].log_prob(tr.nodes["y"]["value"]).sum())
    return got, tr.nodes["i"]["value"], [v.double() for v in (f, x, X, w, y)]


def test_a_value_read_as_a_whole_in_a_subsampled_plate_is_read_uncut():
    """sum(f), mean(f[1:3]), (f + x)[i], sort(f)[i], cumsum(x)[i] and mean(X, 0)[1] read all of
    f, x and X, not their minibatch (sum(f_i) was two of five terms: y's log density -1.91
    where the model's is -12.88); f, x, mean(X, 1) and X @ w stay one value per element."""
    m = ppl.compile("""
model W(N: int, x: real[N], X: real[N, K], w: real[K], y: real[N]) {
  f: real[N] ~ Normal(0, 1)
  plate i in N batch 2 {
    y ~ Normal(sum(f) + sum(x) + mean(f[1:3]) + (f + x)[i] + sort(f)[i] + cumsum(x)[i]
               + mean(X, 0)[1] + f + x + mean(X, 1) + X @ w, 1)
  }
}
""")
    code = re.sub(r"\s+", "", m.source)
    assert "rt.sum(f)+rt.sum(x)+rt.mean(f[1:3])+(f+x)[i]+rt.sort(f)[i]+rt.cumsum(x)[i]" \
        "+rt.mean(X,0)[1]+f_i+x_i+rt.mean(X_i,1)+X_i@w" in code
    got, i, (f, x, X, w, y) = _minibatch_density(m, 0)
    whole = f.sum() + x.sum() + f[1:3].mean() + (f + x)[i] + f.sort().values[i] \
        + x.cumsum(0)[i] + X.mean(0)[1]
    assert abs(got - _normal(y[i], whole + f[i] + x[i] + X[i].mean(1) + X[i] @ w)) < 1e-4


def test_a_function_that_mixes_elements_reads_the_whole_value_then_is_cut():
    """cumsum(x), softmax(f) read element by element in a subsampled plate: the whole
    value's running sum (softmax), cut to the minibatch (was cumsum of the minibatch
    alone); softmax(X)[1] stays row by row and softmax(sum(f) * w)[0] whole. (X[:, 0] is
    the whole column, one vector for the plate: tests/test_plate_whole_reads.py.)"""
    m = ppl.compile("""
model S(N: int, x: real[N], X: real[N, K], w: real[K], y: real[N]) {
  f: real[N] ~ Normal(0, 1)
  plate i in N batch 2 {
    y ~ Normal(cumsum(x) + softmax(f) + softmax(sum(f) * w)[0]
               + cumsum(cumsum(exp(f))) + softmax(X)[1], 1)
  }
}
""")
    got, i, (f, x, X, w, y) = _minibatch_density(m, 1)
    loc = x.cumsum(0)[i] + f.softmax(0)[i] \
        + (f.sum() * w).softmax(0)[0] + f.exp().cumsum(0).cumsum(0)[i] + X[i].softmax(1)[:, 1]
    assert abs(got - _normal(y[i], loc)) < 1e-4


def test_a_value_computed_from_a_label_is_cut_along_its_own_dim():
    """v = x * (b + 3 * z) with z a label summed out, [2, 1, N], read in plate N batch 2:
    cut along its last dim (was not cut: 'Shape mismatch inside plate 2 vs 6' under svi
    and nuts); with z enumerated, y's log density for each z is the hand-written sum."""
    m = ppl.compile("""
model Z(N: int, x: real[N], y: real[N]) {
  z ~ Bernoulli(0.5)
  b ~ Normal(0, 1)
  v = x * (b + 3 * z)
  plate i in N batch 2 {
    y ~ Normal(v, 1)
  }
}
""")
    assert "v_i = v.index_select(-1, i)" in m.source
    x, y = torch.linspace(-1, 1, 6), _t(6)
    pyro.set_rng_seed(0)
    run = pyro.poutine.enum(pyro.infer.config_enumerate(pyro.poutine.condition(
        m.pyro_model, data={"b": torch.tensor(0.5)})), first_available_dim=-2)
    tr = pyro.poutine.trace(run).get_trace(**m.bind({"N": 6, "x": x, "y": y.float()}))
    i = tr.nodes["i"]["value"]
    got = tr.nodes["y"]["fn"].log_prob(tr.nodes["y"]["value"]).sum(-1).flatten()
    for z in (0, 1):
        assert abs(float(got[z]) - _normal(y[i], x[i].double() * (0.5 + 3 * z))) < 1e-4


@pytest.mark.parametrize("source, message, notes", [
    ("model A(x: real[N + 1], y: real[N]) {\n  plate i in N batch 2 { y ~ Normal(x[1:], 1) }\n}\n",
     "2:37: error: inside plate i, which is subsampled (batch), 'x[1:]' has one value per "
     "element of the plate, but it is computed in the plate from a value not of the plate's "
     "size N, which the plate does not cut to its minibatch",
     ["compute it before the plate (v = x[1:]), where a value of the plate's size is cut "
      "to the minibatch", "or drop `batch` from plate i"]),
    ("model O(y: real[N]) {\n  plate i in N batch 2 {\n    s ~ Normal(0, 1)\n"
     "    y ~ Normal(s, 1)\n  }\n}\nguide O {\n  param a: real[N] = 0\n"
     "  plate i in N batch 2 {\n    s ~ Normal(a, .5)\n  }\n}\n",
     "10:16: error: inside plate i, which is subsampled (batch), 'a' has one value per "
     "element of the plate, but 'a' is a param, which the plate does not cut to its "
     "minibatch: its N values would meet the minibatch's elements",
     ["index it with the plate's index: a[i]", "or drop `batch` from plate i"]),
])
def test_a_value_of_the_plates_size_that_is_not_cut_says_why(source, message, notes):
    """x[1:] of x: real[N + 1] and a guide's param a: real[N] read in a subsampled plate
    were said not to have N as their first dimension (they have), with the fix 'x[1:]:
    real[N, ...]', a declaration of an expression."""
    errs = _errors(source)
    assert len(errs) == 1 and errs[0].startswith(f"<string>:{message}\n")
    assert [line.strip()[len("note: "):] for line in errs[0].splitlines()
            if line.strip().startswith("note: ")] == notes
