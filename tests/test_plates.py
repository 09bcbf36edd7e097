"""Plates read as Stan reads loops: a value with one number per plate element meets the
other values element by element, whatever their sizes.

Each model's joint log density (``Model.log_density``) is compared with the same sum
written out by hand, at sizes that differ (a mismatch used to be a size error) and at
equal sizes (where the plate's dim used to be matched silently against the other one).
The model computes in float32, so the sums agree to about 1e-6 of their size.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch.distributions import HalfNormal, Normal

import ppl

torch.manual_seed(0)


def _normal(x, loc, scale) -> float:
    return float(Normal(torch.as_tensor(loc, dtype=torch.float64),
                        torch.as_tensor(scale, dtype=torch.float64)).log_prob(x).sum())


TWO_WAY = """
model TwoWay(y: real[N, M]) {
  a: real[N] ~ Normal(0, 1)
  b: real[M] ~ Normal(0, 1)
  plate i in N {
    plate j in M {
      y ~ Normal(a[i] + b[j], 0.5)
    }
  }
}
"""


@pytest.mark.parametrize("n, m", [(4, 3), (3, 3)])
def test_two_way_effects_by_the_plates_indices(n, m):
    """y[i, j] ~ Normal(a[i] + b[j], 0.5): the outer index is reshaped to its plate's dim,
    so a[i] + b[j] is [N, M] (it was [N] + [M])."""
    model = ppl.compile(TWO_WAY)
    y = torch.randn(n, m, dtype=torch.float64)
    a, b = torch.randn(n, dtype=torch.float64), torch.randn(m, dtype=torch.float64)
    got = model.log_density({"a": a, "b": b}, {"y": y})
    want = _normal(a, 0, 1) + _normal(b, 0, 1) + _normal(y, a[:, None] + b[None, :], 0.5)
    assert abs(got - want) < 1e-4


@pytest.mark.parametrize("n, w", [(4, 3), (3, 3)])
def test_outer_plate_data_in_nested_plates(n, w):
    """g: real[N] read inside plates N and W is g[n] for every column of row n."""
    model = ppl.compile("""
model Nested(g: real[N], y: real[N, W]) {
  b ~ Normal(0, 5)
  s ~ HalfNormal(1)
  plate N {
    plate W {
      y ~ Normal(b * g, s)
    }
  }
}
""")
    g, y = torch.randn(n, dtype=torch.float64), torch.randn(n, w, dtype=torch.float64)
    b, s = torch.tensor(0.7, dtype=torch.float64), torch.tensor(0.4, dtype=torch.float64)
    got = model.log_density({"b": b, "s": s}, {"g": g, "y": y})
    want = (_normal(b, 0, 5) + float(HalfNormal(1.0).log_prob(s))
            + _normal(y, b * g[:, None], s))
    assert abs(got - want) < 1e-4


@pytest.mark.parametrize("n, w", [(4, 3), (3, 3)])
def test_outer_plate_latent_in_nested_plates(n, w):
    """A latent drawn in the outer plate is one value per row under the inner plate."""
    model = ppl.compile("""
model Groups(y: real[N, W]) {
  s ~ HalfNormal(1)
  plate N {
    m ~ Normal(0, 5)
    plate W {
      y ~ Normal(m, s)
    }
  }
}
""")
    y = torch.randn(n, w, dtype=torch.float64)
    m, s = torch.randn(n, 1, dtype=torch.float64), torch.tensor(0.8, dtype=torch.float64)
    got = model.log_density({"m": m, "s": s}, {"y": y})
    want = float(HalfNormal(1.0).log_prob(s)) + _normal(m, 0, 5) + _normal(y, m, s)
    assert abs(got - want) < 1e-4


@pytest.mark.parametrize("n, w", [(4, 3), (3, 3)])
def test_per_row_values_meet_a_per_element_vector_row_by_row(n, w):
    """y: real[N, W] in a single plate N: each row is W draws around that row's value,
    for a latent drawn in the plate (m) and for plate data (b * g)."""
    model = ppl.compile("""
model Rows(g: real[N], y: real[N, W], v: real[N, W]) {
  b ~ Normal(0, 5)
  s ~ HalfNormal(1)
  plate N {
    m ~ Normal(0, 5)
    y ~ Normal(m, s)
    v ~ Normal(b * g, s)
  }
}
""")
    g = torch.randn(n, dtype=torch.float64)
    y, v = torch.randn(n, w, dtype=torch.float64), torch.randn(n, w, dtype=torch.float64)
    m = torch.randn(n, dtype=torch.float64)
    b, s = torch.tensor(-0.3, dtype=torch.float64), torch.tensor(1.3, dtype=torch.float64)
    got = model.log_density({"m": m, "b": b, "s": s}, {"g": g, "y": y, "v": v})
    want = (_normal(b, 0, 5) + float(HalfNormal(1.0).log_prob(s)) + _normal(m, 0, 5)
            + _normal(y, m[:, None], s) + _normal(v, b * g[:, None], s))
    assert abs(got - want) < 1e-4
    assert "rt.per_element(m, 0, 1)" in model.source


def test_per_element_vectors_and_global_vectors_are_left_alone():
    """A value that already has the site's per-element shape, or that does not vary along
    the plate, is not widened: mu: real[W] is the same mean vector for every row."""
    model = ppl.compile("""
model Cols(y: real[N, W]) {
  mu: real[W] ~ Normal(0, 1)
  plate N {
    y ~ Normal(mu, 1)
  }
}
""")
    assert "per_element" not in model.source
    y, mu = torch.randn(3, 3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    got = model.log_density({"mu": mu}, {"y": y})
    assert abs(got - (_normal(mu, 0, 1) + _normal(y, mu[None, :], 1))) < 1e-4


def test_subsampled_outer_plate_index_runs_under_svi():
    """The index of a subsampled outer plate is reshaped after the data are subsampled:
    the two-way model fits on minibatches of rows and its draws cover every row."""
    model = ppl.compile(TWO_WAY.replace("plate i in N {", "plate i in N batch 2 {")
                        + "infer svi(steps=5, samples=3)\n")
    fit = model.fit({"y": torch.randn(5, 3)}, seed=0)
    assert fit.samples["a"].shape == (3, 5) and fit.samples["b"].shape == (3, 3)


def test_outer_plate_observations_simulate_in_their_declared_shape():
    """g: real[N] observed in the outer of two plates is laid out [N, 1] in the model,
    but sample_prior gives it back as declared, [draws, N], ready to pass in as data; a
    slice or a dim counted from the left of such data, or of a latent drawn outside the
    plates with a plate's leading size, is refused (it would move)."""
    src = """
model OA(g: real[N], y: real[N, M]) {
  s ~ HalfNormal(1)
  plate N {
    m ~ Normal(0, 1)
    g ~ Normal(m, 1)
    plate M {
      y ~ Normal(m, s)
    }
  }
}
"""
    draws = ppl.compile(src).sample_prior({"N": 5, "M": 3}, num_samples=4, seed=0)
    assert draws["g"].shape == (4, 5) and draws["y"].shape == (4, 5, 3)
    src = """
model F(x: real[N, D], y: real[N, M]) {{
  b ~ Normal(0, 1)
  f: real[N, D] ~ Normal(0, 1)
  plate N {{
    plate M {{
      y ~ Normal({read}, 1)
    }}
  }}
}}
"""
    for bad in ("b * x[:, 0]", "b * f[:, 0]"):
        # (x[:, 0], f[:, 0]: the whole column, one value for the whole plate, stop 27)
        with pytest.raises(ppl.BdlError, match="inside nested plates|for the whole plate"):
            ppl.compile(src.format(read=bad))
    # sum(x, dim=1): dim 1 is x's own D as declared (Stan's sum(x[n])), not a dim of the
    # layout [N, 1, D] (it was refused)
    m = ppl.compile(src.format(read="b * sum(x, dim=1)"))
    x, y, f = torch.randn(2, 3), torch.randn(2, 4), torch.zeros(2, 3)
    want = torch.distributions.Normal(0.5 * x.sum(1, keepdim=True), 1).log_prob(y).sum() \
        + torch.distributions.Normal(0, 1).log_prob(torch.tensor([0.5])).sum() \
        + torch.distributions.Normal(0, 1).log_prob(f).sum()
    got = m.log_density({"b": torch.tensor(0.5), "f": f}, {"x": x, "y": y})
    assert abs(float(got) - float(want)) < 1e-4


def test_inner_plate_data_and_both_indices():
    """g: real[M] is one value per element of the inner plate (widened against the
    site's per-element [W]); x[i, j] reads element (i, j) with the two indices
    broadcast together."""
    model = ppl.compile("""
model G(g: real[M], x: real[N, M], y: real[N, M, W], v: real[N, M]) {
  b ~ Normal(0, 1)
  plate i in N {
    plate j in M {
      y ~ Normal(b * g, 1)
      v ~ Normal(b * x[i, j], 1)
    }
  }
}
""")
    g, x = torch.randn(3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    y, v = torch.randn(2, 3, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    b = torch.tensor(0.6, dtype=torch.float64)
    got = model.log_density({"b": b}, {"g": g, "x": x, "y": y, "v": v})
    want = (_normal(b, 0, 1) + _normal(y, b * g[None, :, None], 1) + _normal(v, b * x, 1))
    assert abs(got - want) < 1e-4


def test_two_subsampled_nested_plates():
    """Both plates subsampled: the inner plate subsamples the outer one's minibatch (the
    outer local was dropped as unused, a NameError), and svi runs."""
    model = ppl.compile("""
model D(y: real[N, M]) {
  mu ~ Normal(0, 5)
  plate N batch 2 {
    plate M batch 2 {
      y ~ Normal(mu, 1)
    }
  }
}
infer svi(steps=5, samples=2)
""")
    assert "y_M = None if y_N is None else y_N.index_select(1, idx_M)" in model.source
    fit = model.fit({"y": torch.randn(4, 6)}, seed=0)
    assert fit.samples["mu"].shape == (2,)


@pytest.mark.parametrize("n, w", [(4, 3), (3, 3)])
def test_per_row_values_meet_per_element_vectors_in_arithmetic(n, w):
    """m + mu with m drawn in plate N and mu: real[W] is each row m[n] + mu, and
    sum(x * g, dim=-1) is x[n] . g[n] per row (Stan's x[n] * g[n]), at equal sizes too."""
    model = ppl.compile("""
model Rows(y: real[N, W], x: real[N, W], g: real[N], v: real[N]) {
  mu: real[W] ~ Normal(0, 1)
  plate N {
    m ~ Normal(0, 5)
    y ~ Normal(m + mu, 1)
    v ~ Normal(sum(x * g, dim=-1), 1)
  }
}
""")
    y, x = torch.randn(n, w, dtype=torch.float64), torch.randn(n, w, dtype=torch.float64)
    g, v = torch.randn(n, dtype=torch.float64), torch.randn(n, dtype=torch.float64)
    m, mu = torch.randn(n, dtype=torch.float64), torch.randn(w, dtype=torch.float64)
    got = model.log_density({"m": m, "mu": mu}, {"y": y, "x": x, "g": g, "v": v})
    want = (_normal(mu, 0, 1) + _normal(m, 0, 5) + _normal(y, m[:, None] + mu[None, :], 1)
            + _normal(v, (x * g[:, None]).sum(-1), 1))
    assert abs(got - want) < 1e-4


def test_outer_plate_latent_given_in_its_declared_shape():
    """log_density takes a latent of the outer plate as declared ([N]) or as laid out
    ([N, 1]), with the same value; the per-row sum m + b * g + h meets y's per-element
    W row by row."""
    model = ppl.compile("""
model S(g: real[N], h: real[M], y: real[N, M, W]) {
  b ~ Normal(0, 1)
  plate N {
    m ~ Normal(0, 1)
    plate M {
      y ~ Normal(m + b * g + h, 1)
    }
  }
}
""")
    n, mm, w = 3, 3, 3
    g, h = torch.randn(n, dtype=torch.float64), torch.randn(mm, dtype=torch.float64)
    y = torch.randn(n, mm, w, dtype=torch.float64)
    m, b = torch.randn(n, dtype=torch.float64), torch.tensor(0.4, dtype=torch.float64)
    loc = m[:, None, None] + b * g[:, None, None] + h[None, :, None]
    want = _normal(b, 0, 1) + _normal(m, 0, 1) + _normal(y, loc, 1)
    for given in (m, m[:, None]):
        got = model.log_density({"m": given, "b": b}, {"g": g, "h": h, "y": y})
        assert abs(got - want) < 1e-4


def test_reductions_over_nested_plate_data():
    """sum(g) over everything and a per-row dim=-1 read the same whatever the layout;
    a dim that reaches the plate dims (logsumexp(g) of g: real[N]) is a located error."""
    ok = ppl.compile("""
model S(g: real[N], x: real[N, D], y: real[N, M]) {
  b ~ Normal(0, 1)
  plate N {
    plate M {
      y ~ Normal(b * sum(g) + max(x, dim=-1), 1)
    }
  }
}
""")
    g, x = torch.randn(3, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    y, b = torch.randn(3, 4, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)
    got = ok.log_density({"b": b}, {"g": g, "x": x, "y": y})
    want = _normal(b, 0, 1) + _normal(y, b * g.sum() + x.max(-1).values[:, None], 1)
    assert abs(got - want) < 1e-4
    with pytest.raises(ppl.BdlError, match="logsumexp over its dims"):
        ppl.compile("""
model S(g: real[N], y: real[N, M]) {
  b ~ Normal(0, 1)
  plate N {
    plate M {
      y ~ Normal(b * logsumexp(g), 1)
    }
  }
}
""")


def test_inner_subsampled_plate_subsamples_its_own_data():
    """g: real[M] under plates N and M batch 2 is subsampled with M's minibatch (at its
    dim 0, not at the plate's depth), so svi runs; over all the data the density is the
    per-element one."""
    model = ppl.compile("""
model G(g: real[M], y: real[N, M]) {
  b ~ Normal(0, 1)
  plate N {
    plate M batch 2 {
      y ~ Normal(b * g, 1)
    }
  }
}
infer svi(steps=5, samples=2)
""")
    assert "g_M = g.index_select(0, idx_M)" in model.source
    g, y = torch.randn(3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    b = torch.tensor(0.2, dtype=torch.float64)
    got = model.log_density({"b": b}, {"g": g, "y": y})
    assert abs(got - (_normal(b, 0, 1) + _normal(y, b * g[None, :], 1))) < 1e-4
    assert model.fit({"g": g, "y": y}, seed=0).samples["b"].shape == (2,)


# ---- values of plates that have closed, subsampled plates, plate names (audit) ----

def _tensor(*shape):
    return torch.randn(*shape, dtype=torch.float64)


def test_latent_of_a_closed_plate_is_one_value_per_element_of_a_later_plate():
    """u drawn in `plate I` and read whole in a later `plate i in I` is u[i] for row i of
    y: [I, W] (with I = W it was paired along W: -16.90 where the density is -13.90)."""
    model = ppl.compile("""
model M(y: real[I, W]) {
  plate I { u ~ Normal(0, 1) }
  plate i in I { y ~ Normal(u, 1) }
}
""")
    u, y = _tensor(3), _tensor(3, 3)
    got = model.log_density({"u": u}, {"y": y})
    assert abs(got - (_normal(u, 0, 1) + _normal(y, u[:, None], 1))) < 1e-4


def test_latents_of_closed_plates_in_nested_and_crossed_plates():
    """y[i, j] ~ Normal(mu + u[i] + v[j]) with u and v drawn in their own plate blocks
    (and the second block of plates I and J named I_2, J_2 for Pyro); I = J."""
    model = ppl.compile("""
model Crossed(y: real[I, J]) {
  mu ~ Normal(0, 5)
  plate I { u ~ Normal(0, 1) }
  plate J { v ~ Normal(0, 1) }
  plate I {
    plate J {
      y ~ Normal(mu + u + v, 0.5)
    }
  }
}
""")
    mu, u, v, y = torch.tensor(0.3, dtype=torch.float64), _tensor(3), _tensor(3), _tensor(3, 3)
    got = model.log_density({"mu": mu, "u": u, "v": v}, {"y": y})
    want = (_normal(mu, 0, 5) + _normal(u, 0, 1) + _normal(v, 0, 1)
            + _normal(y, mu + u[:, None] + v[None, :], 0.5))
    assert abs(got - want) < 1e-4


def test_deterministic_of_a_closed_plate_in_nested_plates():
    """u2 computed in `plate I` is u2[i] for every j under `plate i in I { plate j in J }`."""
    model = ppl.compile("""
model M(y: real[I, J]) {
  plate I {
    u ~ Normal(0, 1)
    u2 = u * 2.0
  }
  plate i in I {
    plate j in J { y ~ Normal(u2, 1) }
  }
}
""")
    u, y = _tensor(3), _tensor(3, 3)
    got = model.log_density({"u": u}, {"y": y})
    assert abs(got - (_normal(u, 0, 1) + _normal(y, 2 * u[:, None], 1))) < 1e-4


def test_latent_of_a_closed_outer_plate_has_its_declared_shape():
    """u of plate I around plate K is [I, 1] in those plates; after them it is [I] again
    (rt.plate_closed), read one per row in a later plate and whole after the plates."""
    model = ppl.compile("""
model M(x: real[I, K], y: real[I, W]) {
  plate I {
    u ~ Normal(0, 1)
    plate K { x ~ Normal(u, 1) }
  }
  plate i in I { y ~ Normal(u, 1) }
  s = sum(u * u)
  factor(-s)
}
""")
    assert "rt.plate_closed(u, (-2,), 0)" in model.source
    u, x, y = _tensor(3), _tensor(3, 3), _tensor(3, 3)
    got = model.log_density({"u": u}, {"x": x, "y": y})
    want = (_normal(u, 0, 1) + _normal(x, u[:, None], 1) + _normal(y, u[:, None], 1)
            - float((u * u).sum()))
    assert abs(got - want) < 1e-4


def test_latent_of_a_subsampled_plate_read_after_it_is_an_error():
    """After `plate J batch 3`, `a` holds one minibatch's rows: a[group] is refused."""
    with pytest.raises(ppl.BdlError) as err:
        ppl.compile("""
model M(group: int[N], y: real[N], J: int) {
  mu ~ Normal(0, 5)
  plate J batch 3 {
    a ~ Normal(mu, 1)
  }
  plate N {
    y ~ Normal(a[group], 1)
  }
}
""", filename="leak.bdl")
    text = str(err.value)
    assert "leak.bdl:8:16" in text and "subsampled" in text
    assert "draw 'a' in a plate without batch, or read it inside plate J" in text


def test_a_plate_local_value_indexed_by_its_own_plate():
    """a[j] of a drawn in `plate j in J` is a (Stan's loop spelling): over all the data the
    density is the per-element one, and under svi's minibatches of 3 it runs."""
    model = ppl.compile("""
model M(y: real[J, K]) {
  plate j in J batch 3 {
    a ~ Normal(0, 1)
    c = a * 2
    y1 = a[j]
    plate k in K {
      y ~ Normal(c[j] + y1, 1)
    }
  }
}
infer svi(steps=3, samples=2)
""")
    a, y = _tensor(5), _tensor(5, 3)
    got = model.log_density({"a": a}, {"y": y})
    assert abs(got - (_normal(a, 0, 1) + _normal(y, 3 * a[:, None], 1))) < 1e-4
    assert model.fit({"y": y.float()}, seed=0).samples["a"].shape == (2, 5)


def test_varying_slopes_drawn_in_the_outer_plate():
    """b: real[J, 2] drawn in `plate j in J` around `plate k in K`: b[j, 1] is b's
    element (j, 1) (it was 'index 1 is out of range for size 1'); b[:, 1] is refused."""
    model = ppl.compile("""
model M(y: real[J, K], x: real[J, K]) {
  plate j in J {
    b: real[J, 2] ~ Normal(0, 1)
    plate k in K {
      y ~ Normal(b[j, 0] + b[j, 1] * x, 1)
    }
  }
}
""")
    b, x, y = _tensor(3, 2), _tensor(3, 3), _tensor(3, 3)
    got = model.log_density({"b": b}, {"x": x, "y": y})
    want = _normal(b, 0, 1) + _normal(y, b[:, :1] + b[:, 1:] * x, 1)
    assert abs(got - want) < 1e-4
    with pytest.raises(ppl.BdlError) as err:
        ppl.compile("""
model M(y: real[J, K], x: real[J, K]) {
  plate J {
    b: real[J, 2] ~ Normal(0, 1)
    b1 = b[:, 1]
    plate K { y ~ Normal(b1 * x, 1) }
  }
}
""", filename="slopes.bdl")
    assert "slopes.bdl:5:10" in str(err.value)
    assert "write b[j, 1] under plate j in J" in str(err.value)


def test_two_blocks_of_the_same_plate():
    """`plate N { y1 ~ ... }` then `plate N { y2 ~ ... }`: the second Pyro plate is N_2
    (Pyro refused two sites named N); two subsampled blocks would draw two minibatches."""
    model = ppl.compile("""
model M(y1: real[N], y2: real[N]) {
  mu ~ Normal(0, 1)
  plate N { y1 ~ Normal(mu, 1) }
  plate N { y2 ~ Normal(mu, 2) }
}
""")
    assert 'pyro.plate("N_2", N, dim=-1)' in model.source
    mu, y1, y2 = torch.tensor(0.4, dtype=torch.float64), _tensor(3), _tensor(3)
    got = model.log_density({"mu": mu}, {"y1": y1, "y2": y2})
    assert abs(got - (_normal(mu, 0, 1) + _normal(y1, mu, 1) + _normal(y2, mu, 2))) < 1e-4
    with pytest.raises(ppl.BdlError) as err:
        ppl.compile("""
model M(y1: real[N], y2: real[N]) {
  mu ~ Normal(0, 1)
  plate N batch 2 { y1 ~ Normal(mu, 1) }
  plate N batch 2 { y2 ~ Normal(mu, 1) }
}
""", filename="twice.bdl")
    assert "twice.bdl:5:17" in str(err.value) and "subsampled twice" in str(err.value)


def test_a_value_of_a_plate_that_does_not_vary_along_it_is_indexed_as_declared():
    """c = mu * 2 in plate j (mu: real[2], J = 2) is not one value per plate element:
    c[0] is its element 0, not a plate's own element."""
    model = ppl.compile("""
model M(y: real[J, K], mu: real[2]) {
  plate j in J {
    c = mu * 2
    a ~ Normal(c[0], 1)
    plate k in K {
      y ~ Normal(a + c[1], 1)
    }
  }
}
""")
    mu, a, y = _tensor(2), _tensor(2), _tensor(2, 2)
    got = model.log_density({"a": a}, {"y": y, "mu": mu})
    want = _normal(a, 2 * mu[0], 1) + _normal(y, a[:, None] + 2 * mu[1], 1)
    assert abs(got - want) < 1e-4


def test_a_label_of_a_closed_plate_is_refused_when_a_fit_starts():
    """z ~ Categorical(w) in `plate N`, read in a later `plate n in N`: summed out, z would
    be one label shared by every row of y (Pyro's enumeration meets two plates), so a fit
    refuses it at its read; a prior simulation runs (z is drawn there)."""
    m = ppl.compile("""
model L(y: real[N]) {
  w ~ Dirichlet(ones(2))
  plate N { z ~ Categorical(w) }
  mu: real[2] ~ Normal(0, 3)
  plate n in N { y ~ Normal(mu[z], 1) }
}
""", filename="label.bdl")
    words = "'z' is a discrete latent of plate N (or computed from one there)"
    assert any(words in w.message and w.span.line == 6 for w in m.warnings)
    with pytest.raises(ppl.BdlError, match=re.escape(words)):
        m.fit({"y": [0.5, 1.0, 4.0]}, infer="svi")
    assert m.sample_prior({"N": 3}, num_samples=4, seed=0)["y"].shape == (4, 3)


def test_a_reduction_without_dim_reads_each_plate_element():
    """sum(w[i]) / mean(w[i]) in plate i is one sum per row, as Stan's loop reads it (it
    summed the whole [I, J] matrix); I = J so a wrong axis would not fail on shapes."""
    model = ppl.compile("""
model S(w: real[I, J], y: real[I]) {
  b ~ Normal(0, 1)
  plate i in I {
    y ~ Normal(b * sum(w[i]) + max(x=w[i]), 1)
  }
}
""")
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(3, generator=gen, dtype=torch.float64)
    b = torch.tensor(0.7, dtype=torch.float64)
    got = model.log_density({"b": b}, {"w": w, "y": y})
    want = _normal(b, 0, 1) + _normal(y, b * w.sum(1) + w.max(1).values, 1)
    assert abs(got - want) < 1e-4


def test_a_value_of_a_closed_inner_plate_read_in_its_open_outer_plate():
    """a drawn in plates i, j and read in plate i after plate j closed: its J dim would
    meet plate i's layout (the density was wrong, I = J); a located error. Read in a new
    block of plate i after both closed, sum(a[i]) is the row's sum."""
    body = """
model P(y: real[I], J: int) {
  plate i in I {
    plate j in J {
      a ~ Normal(0, 1)
    }
    READ
  }
}
"""
    with pytest.raises(ppl.BdlError, match=r"<string>:7:20: error: 'a' is drawn in plates "
                                           r"i, j, and plate j has closed while i is still"):
        ppl.compile(body.replace("READ", "y ~ Normal(sum(a, dim=-1), 1)"))
    model = ppl.compile(body.replace("READ\n  }\n", "}\n  plate i in I {\n"
                                     "    y ~ Normal(sum(a[i]), 1)\n  }\n"))
    gen = torch.Generator().manual_seed(6)
    a = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(3, generator=gen, dtype=torch.float64)
    got = model.log_density({"a": a}, {"y": y, "J": 3})
    want = _normal(a, 0, 1) + _normal(y, a.sum(1), 1)
    assert abs(got - want) < 1e-4


# y_i ~ w_i N(m, 1) + (1 - w_i) N(0, 1): the audit's data, N = 2 (pew2) and N = 6
PEW = {2: ([0.953, 3.43], [0.37, 0.443]),
       6: ([1.594, 0.329, 0.142, 0.193, 0.782, 2.686], [0.863, 0.714, 0.201, 0.762, 0.779, 0.38])}


def _mixture(y, w, m, means=None) -> float:
    """log N(m; 0, 3) + sum_i logsumexp(log w_i + log N(y_i; m, 1), log (1 - w_i) + log
    N(y_i; means_i, 1)), with ``means`` 0 unless given."""
    y, w = torch.as_tensor(y, dtype=torch.float64), torch.as_tensor(w, dtype=torch.float64)
    means = torch.zeros_like(y) if means is None else means
    terms = torch.stack([w.log() + Normal(m, 1.0).log_prob(y),
                         (1 - w).log() + Normal(means, 1.0).log_prob(y)])
    return _normal(torch.tensor(m), 0, 3) + float(torch.logsumexp(terms, 0).sum())


def _summed_out(model, data: dict, fixed: dict, nesting: int) -> float:
    """log p(data, fixed) with the labels summed out by Pyro's TraceEnum_ELBO."""
    from pyro import poutine
    from pyro.infer import TraceEnum_ELBO

    from ppl.infer.discrete import enumerated

    conditioned = enumerated(poutine.condition(model.pyro_model, data=fixed))
    return -TraceEnum_ELBO(max_plate_nesting=nesting).loss(
        conditioned, lambda **kw: None, **model.bind(data))


@pytest.mark.parametrize("n", [2, 6])
@pytest.mark.parametrize("probs", ["[w, 1 - w]", "stack([w, 1 - w])",
                                   "stack([w, 1 - w], dim=1)", "stack([w, 1 - w], dim=-1)"])
def test_a_list_of_per_element_values_is_each_elements_own_list(n, probs):
    """[w, 1 - w] of w: real[N] in plate N is each element's [w_i, 1 - w_i] ([N, 2]), as
    Stan's loop reads it; it was stacked along a new first dim, [2, N]: at N = 2 the
    density was the transposed reading's (-7.67314), at N = 6 a shape error. stack
    without dim joins each element's values the same way."""
    model = ppl.compile(f"""
model PEW(y: real[N], w: real[N]) {{
  m ~ Normal(0, 3)
  plate N {{
    y ~ MixtureSameFamily(Categorical(probs={probs}), Normal([m, 0.0], 1))
  }}
}}
""")
    y, w = PEW[n]
    got = model.log_density({"m": 1.0}, {"y": y, "w": w})
    assert abs(got - _mixture(y, w, 1.0)) < 1e-4
    if n == 2:
        assert abs(got - -7.87446) < 1e-4


def test_a_list_of_per_element_and_global_values():
    """[w, 0.5] (probs w_i / (w_i + 0.5), 0.5 / (w_i + 0.5)) and [m, w] (the second
    component's mean w_i): a global item is the same in every element's list."""
    model = ppl.compile("""
model Mixed(y: real[N], w: real[N]) {
  m ~ Normal(0, 3)
  plate N {
    y ~ MixtureSameFamily(Categorical(probs=[w, 0.5]), Normal([m, w], 1))
  }
}
""")
    y, w = PEW[6]
    got = model.log_density({"m": 0.6}, {"y": y, "w": w})
    wt = torch.tensor(w, dtype=torch.float64)
    p = (wt / (wt + 0.5)).tolist()
    assert abs(got - _mixture(y, p, 0.6, means=wt)) < 1e-4


@pytest.mark.parametrize("n", [2, 6])
def test_a_label_drawn_from_a_per_element_list(n):
    """z ~ Categorical(probs=[w, 1 - w]) in plate N is one label per element with its
    own probabilities (the check said '2 = 2 but N = 6'); summed out, y_i ~ Normal(m *
    (1 - z_i), 1) is the mixture above."""
    model = ppl.compile("""
model PEWc(y: real[N], w: real[N]) {
  m ~ Normal(0, 3)
  plate N {
    z ~ Categorical(probs=[w, 1 - w])
    y ~ Normal(m * (1 - z), 1)
  }
}
""")
    y, w = PEW[n]
    got = _summed_out(model, {"y": y, "w": w}, {"m": torch.tensor(1.0)}, 1)
    assert abs(got - _mixture(y, w, 1.0)) < 1e-4


@pytest.mark.parametrize("values", ["[u, 2 * u]", "stack([u, 2 * u])"])
def test_a_list_of_a_plates_label_and_of_a_global_label(values):
    """[m * z, 1 - z] of a label z drawn in plate N is each element's [2] (its summed-out
    values [2, 1] stack on their right, [2, 1, 2]); [u, 2 * u] of a label u drawn outside
    the plates is one [2] for every element (stack too). Exact sums over the labels by
    hand."""
    y = torch.tensor([[0.5, 0.2], [1.3, -0.4], [0.1, 0.9]])
    model = ppl.compile("""
model Z(y: real[N, 2], w: real[N]) {
  m ~ Normal(0, 3)
  plate N {
    z ~ Bernoulli(w)
    y ~ Normal([m * z, 1 - z], 1)
  }
}
""")
    w = torch.tensor([0.3, 0.6, 0.8], dtype=torch.float64)
    got = _summed_out(model, {"y": y, "w": w.float()}, {"m": torch.tensor(1.5)}, 1)
    yd = y.double()

    def rows(loc):  # log N(y_i; loc, 1) per row
        return Normal(torch.tensor(loc), 1.0).log_prob(yd).sum(-1)

    per_z = torch.stack([(1 - w).log() + rows([0.0, 1.0]), w.log() + rows([1.5, 0.0])])
    want = _normal(torch.tensor(1.5), 0, 3) + float(torch.logsumexp(per_z, 0).sum())
    assert abs(got - want) < 1e-4
    model = ppl.compile("""
model U(y: real[N, 2]) {
  u ~ Bernoulli(0.3)
  plate N { y ~ Normal(VALUES, 1) }
}
""".replace("VALUES", values))
    got = _summed_out(model, {"y": y}, {}, 1)
    per_u = torch.tensor([math.log(0.7) + _normal(yd, torch.tensor([0.0, 0.0]), 1),
                          math.log(0.3) + _normal(yd, torch.tensor([1.0, 2.0]), 1)])
    assert abs(got - float(torch.logsumexp(per_u, 0))) < 1e-4


def test_a_list_of_per_element_vectors():
    """[v, w, mu] in plate N with v: real[N, D], w: real[N], mu: real[D] is each element's
    [3, D]: v_n, w_n in every column, mu (N = 4, D = 2, 3 items: no size coincides)."""
    model = ppl.compile("""
model V(y: real[N, 3, D], v: real[N, D], w: real[N], mu: real[D]) {
  s ~ HalfNormal(1)
  plate N {
    y ~ Normal([v, w, mu], s)
  }
}
""")
    v, w, mu, y = _tensor(4, 2), _tensor(4), _tensor(2), _tensor(4, 3, 2)
    got = model.log_density({"s": 0.8}, {"y": y, "v": v, "w": w, "mu": mu})
    loc = torch.stack([v, w[:, None].expand(4, 2), mu.expand(4, 2)], 1)
    want = float(HalfNormal(1.0).log_prob(torch.tensor(0.8))) + _normal(y, loc, 0.8)
    assert abs(got - want) < 1e-4


def test_per_element_vectors_joined_by_cat():
    """cat([v, 2 * v]) in plate N joins each element's vectors ([N, 2D]), not the rows
    of v (it was [2N, D])."""
    model = ppl.compile("""
model C(y: real[N, E], v: real[N, D]) {
  s ~ HalfNormal(1)
  plate N {
    y ~ Normal(cat([v, 2 * v]), s)
  }
}
""")
    v, y = _tensor(3, 2), _tensor(3, 4)
    got = model.log_density({"s": 0.8}, {"y": y, "v": v})
    want = float(HalfNormal(1.0).log_prob(torch.tensor(0.8))) + \
        _normal(y, torch.cat([v, 2 * v], 1), 0.8)
    assert abs(got - want) < 1e-4


@pytest.mark.parametrize("n, m", [(3, 2), (2, 2)])
def test_a_per_element_list_in_nested_plates(n, m):
    """In plates N and M, [w, 1 - w] of w: real[N] (laid out [N, 1]) is row n's list for
    every column, and [m, x] of x: real[N, M] element (n, j)'s."""
    model = ppl.compile("""
model Nest(y: real[N, M], w: real[N], x: real[N, M]) {
  m ~ Normal(0, 3)
  plate N {
    plate M {
      y ~ MixtureSameFamily(Categorical(probs=[w, 1 - w]), Normal([m, x], 1))
    }
  }
}
""")
    gen = torch.Generator().manual_seed(3)
    y, x = torch.randn(n, m, generator=gen), torch.randn(n, m, generator=gen)
    w = torch.rand(n, generator=gen) * 0.8 + 0.1
    got = model.log_density({"m": 0.7}, {"y": y, "w": w, "x": x})
    want = _mixture(y, w[:, None].expand(n, m), 0.7, means=x.double())
    assert abs(got - want) < 1e-4


def test_a_list_outside_plates_stacks_along_a_new_first_dim():
    """Outside plates nothing changes: [a, b] of two real[N] is [2, N]."""
    model = ppl.compile("""
model O(y: real[2, N], a: real[N], b: real[N]) {
  s ~ HalfNormal(1)
  y ~ Normal([a, b], s)
}
""")
    a, b, y = _tensor(3), _tensor(3), _tensor(2, 3)
    got = model.log_density({"s": 0.5}, {"y": y, "a": a, "b": b})
    want = float(HalfNormal(1.0).log_prob(torch.tensor(0.5))) + \
        _normal(y, torch.stack([a, b]), 0.5)
    assert abs(got - want) < 1e-4


@pytest.mark.parametrize("probs, at, words", [
    ("stack([w, 1 - w], dim=0)", "5:67", "dim=0 is a plate dim: it would stack the plate's"),
    ("cat([w, 1 - w])", "5:45", "cat joins each element's own vectors"),
    ("[w, (2 * y)[1:]]", "5:49", "whether this item is one too cannot be told"),
])
def test_joining_per_element_values_across_the_plate_is_an_error(probs, at, words):
    """stack(..., dim=0) of per-element values would stack the plate's elements with each
    other, cat of per-element numbers would join the plate's rows, and an item whose plate
    dims cannot be told would not be stacked per element: located errors."""
    with pytest.raises(ppl.BdlError, match=re.escape(f"<string>:{at}: error: ") + ".*"
                       + re.escape(words)):
        ppl.compile(f"""
model PEW(y: real[N], w: real[N]) {{
  m ~ Normal(0, 3)
  plate N {{
    y ~ MixtureSameFamily(Categorical(probs={probs}), Normal([m, 0.0], 1))
  }}
}}
""")
