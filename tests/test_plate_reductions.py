"""Each element's own value inside its plate: a reduction, an index, a ``dim`` or a matrix
product of a value drawn or computed in the open plates (``w = x2[t]``, a latent ``z:
real[T, K]`` drawn in plate t) acts on the element's own dims, as Stan's local ``w`` in
its loop. ``sum(w)`` summed every row, ``max(w)``/``mean(w)`` reduced over the plate too,
``w[0]`` indexed the plate's dim, ``M @ w`` read ``[T, K]`` as one matrix.

Densities are compared with the same sums written out by hand (numpy/scipy; a minibatch's
terms scaled by N / B, as Pyro scales them). T = 3 and K = 2 differ, so a reduction over
the wrong dims shows.
"""

from __future__ import annotations

import numpy as np
import pyro
import pytest
import scipy.special as sp
import scipy.stats as st

import ppl
from ppl.syntax.diagnostics import BdlError

X2 = np.arange(6.0).reshape(3, 2) / 3
Y = np.array([1.0, 5.0, 9.0]) / 3
MAT = np.array([[1.0, 2.0], [0.5, -1.0]])
V = np.array([0.3, -0.7])
DATA = {"x2": X2, "y": Y, "M": MAT, "v": V}

BASE = """model M(x2: real[T, K], y: real[T], M: real[K, K], v: real[K]) {{
  mu ~ Normal(0, 1)
  plate t in T{batch} {{
    {body}
    y ~ Normal(mu + {expr}, 1)
  }}
}}"""


def _normal(x, loc) -> float:
    return float(st.norm.logpdf(np.asarray(x), np.asarray(loc), 1).sum())


def _want(row) -> float:
    """log p(mu = 0) + sum_t log N(y[t] | row(x2[t]), 1)."""
    return _normal(0.0, 0.0) + _normal(Y, [row(r) for r in X2])


def _minibatch(m, data, seed):
    """One run of the model's Pyro program: its trace (log-probs computed) and plate t's
    minibatch."""
    pyro.set_rng_seed(seed)
    tr = pyro.poutine.trace(m.pyro_model).get_trace(**m.bind(data))
    tr.compute_log_prob()
    return tr, tr.nodes["t"]["value"].numpy()


CASES = [
    ("w = x2[t]", "sum(w)", lambda r: r.sum()),
    ("w = 2 * x2[t]", "sum(w)", lambda r: 2 * r.sum()),
    ("w = x2[t] + 0", "sum(w)", lambda r: r.sum()),
    ("w = x2", "sum(w)", lambda r: r.sum()),
    ("w = x2[t]", "sum(w) + sum(x2[t])", lambda r: 2 * r.sum()),
    ("w = x2[t]", "max(w)", lambda r: r.max()),
    ("w = x2[t]", "min(w)", lambda r: r.min()),
    ("w = x2[t]", "prod(w)", lambda r: r.prod()),
    ("w = x2[t]", "mean(w) * 2", lambda r: 2 * r.mean()),
    ("w = x2[t]", "sd(w)", lambda r: r.std(ddof=1)),
    ("w = x2[t]", "variance(w)", lambda r: r.var(ddof=1)),
    ("w = x2[t]", "sum(w, dim=0)", lambda r: r.sum()),
    ("w = x2[t]", "mean(w, 0)", lambda r: r.mean()),
    ("w = x2[t]", "sum(w, dim=-1)", lambda r: r.sum()),
    ("w = x2[t]", "sum(x2[t], dim=0) + max(2 * w, dim=0)", lambda r: r.sum() + 2 * r.max()),
    ("w = x2[t]", "logsumexp(w)", lambda r: sp.logsumexp(r)),
    ("w = x2[t]", "logsumexp(w, dim=0)", lambda r: sp.logsumexp(r)),
    ("w = x2[t]", "cumsum(w, dim=0)[1]", lambda r: r.sum()),
    ("w = x2[t]", "softmax(w, dim=0)[0]", lambda r: sp.softmax(r)[0]),
    ("w = x2[t]", "w[0] + w[1]", lambda r: r[0] + r[1]),
    ("w = 2 * x2[t]", "w[1]", lambda r: 2 * r[1]),
    ("w = x2[t]", "w[-1]", lambda r: r[-1]),
    ("w = x2[t]", "sum(w[1:])", lambda r: r[1:].sum()),
    ("w = x2[t]", "sum(w[:1]) + w[1:][0]", lambda r: r[0] + r[1]),
    ("w = x2[t]", "v @ w", lambda r: V @ r),
    ("w = x2[t]", "sum(M @ w)", lambda r: (MAT @ r).sum()),
    ("w = x2[t]", "(M @ w)[0]", lambda r: (MAT @ r)[0]),
    ("w = x2[t]", "w @ v + sum(w @ M)", lambda r: r @ V + (r @ MAT).sum()),
    ("w = x2[t]", "sum(matmul(M, w)) + sum(matmul(w, M))",
     lambda r: (MAT @ r).sum() + (r @ MAT).sum()),
    ("w = x2[t]", "cat([v, w])[2] - cat([w, v], dim=1)[3]", lambda r: r[0] - V[1]),
    ("w = x2[t]", "sum(cat([w, v]) * cat([v, w]))", lambda r: np.r_[r, V] @ np.r_[V, r]),
    ("w = x2[t]\n    s = sum(w)", "s", lambda r: r.sum()),
]


@pytest.mark.parametrize("body, expr, row", CASES)
def test_each_elements_value_is_reduced_and_indexed_on_its_own_dims(body, expr, row):
    """sum(w) of w = x2[t] was every row's sum (-22.12 for -3.68), max/mean over the
    plate too; w[0] + w[1] was a size error ('[K] and y [T]'), sum(w[1:]) summed rows
    1.. of the plate, M @ w and v @ w were size errors (silently wrong where T = K), and
    cat([w, v]) of a global v was refused."""
    m = ppl.compile(BASE.format(batch="", body=body, expr=expr))
    assert abs(m.log_density({"mu": 0.0}, DATA) - _want(row)) < 1e-4


def test_under_a_subsampled_plate_the_minibatch_rows_are_reduced_each_on_its_own():
    m = ppl.compile(BASE.format(batch=" batch 2", body="w = x2[t]",
                                expr="sum(w) + w[0] + mean(w, dim=0)"))
    tr, t = _minibatch(m, DATA, 1)
    mu = float(tr.nodes["mu"]["value"])
    assert len(t) == 2
    loc = mu + X2[t].sum(1) + X2[t, 0] + X2[t].mean(1)
    assert abs(float(tr.nodes["y"]["log_prob_sum"]) - 1.5 * _normal(Y[t], loc)) < 1e-4
    # over all the data, the same model's density
    assert abs(m.log_density({"mu": 0.0}, DATA) - _want(lambda r: r.sum() + r[0] + r.mean())) \
        < 1e-4


def test_a_latent_vector_drawn_in_the_plate_is_each_elements_vector():
    m = ppl.compile("""
model M(y: real[T], K: int) {
  plate t in T {
    z: real[T, K] ~ Normal(0, 1)
    y ~ Normal(sum(z) + z[0] - max(z), 1)
  }
}""")
    z = np.random.default_rng(0).normal(size=(3, 2))
    want = _normal(z, 0.0) + _normal(Y, z.sum(1) + z[:, 0] - z.max(1))
    assert abs(m.log_density({"z": z}, {"y": Y, "K": 2}) - want) < 1e-4


def test_nested_plates_a_value_of_both_plates_and_one_of_the_outer_plate():
    x3 = np.random.default_rng(1).normal(size=(2, 3, 4))
    y = np.random.default_rng(2).normal(size=(2, 3))
    m = ppl.compile("""
model M(x3: real[I, J, K], y: real[I, J]) {
  plate i in I {
    plate j in J {
      w = x3[i, j]
      y ~ Normal(sum(w) + w[1] + mean(w, dim=0), 1)
    }
  }
}""")
    want = _normal(y, x3.sum(-1) + x3[..., 1] + x3.mean(-1))
    assert abs(m.log_density({}, {"x3": x3, "y": y}) - want) < 1e-4
    # w of the outer plate (laid out [I, 1, K]) read in plate j: row i's sum and entry
    m = ppl.compile("""
model M(x2: real[I, K], y: real[I, J]) {
  plate i in I {
    w = 2 * x2[i]
    plate j in J {
      y ~ Normal(sum(w) + w[0], 1)
    }
  }
}""")
    x2 = x3[:, 0]
    want = _normal(y, (2 * x2.sum(-1) + 2 * x2[:, 0])[:, None])
    assert abs(m.log_density({}, {"x2": x2, "y": y}) - want) < 1e-4


def test_a_deterministic_reduction_is_recorded_per_element():
    m = ppl.compile("""
model M(x2: real[T, K], y: real[T]) {
  mu ~ Normal(0, 1)
  plate t in T {
    w = x2[t]
    s = sum(w) + mu
    y ~ Normal(s, 1)
  }
}""")
    fit = m.fit({"x2": X2, "y": Y}, infer="svi", steps=5, samples=4, seed=0)
    assert fit.samples["s"].shape == (4, 3)
    want = np.asarray(fit.samples["mu"])[:, None] + X2.sum(1)
    assert np.allclose(np.asarray(fit.samples["s"]), want, atol=1e-5)


@pytest.mark.parametrize("expr, says", [
    ("sum(transpose(w))", "'w' is one vector per element, and transpose needs a matrix"),
    ("logdet(w)", "'w' is one vector per element, and logdet needs a matrix"),
])
def test_a_matrix_function_of_each_elements_vector_is_a_located_error(expr, says):
    with pytest.raises(BdlError) as info:
        ppl.compile(BASE.format(batch="", body="w = x2[t]", expr=expr))
    (d,) = info.value.diagnostics
    assert says in d.message and d.span.line == 5


def test_an_index_into_one_number_per_element_is_a_located_error():
    """w = x2[t, 0] is one number per element: w[0] read the minibatch's first element."""
    with pytest.raises(BdlError) as info:
        ppl.compile(BASE.format(batch="", body="w = x2[t, 0]", expr="w[0]"))
    (d,) = info.value.diagnostics
    assert "'w' is one number per element, so 'w[0]' has nothing to index" in d.message
    assert (d.span.line, d.span.col) == (5, 21)


def test_a_global_index_vector_picks_entries_of_each_elements_vector():
    """w[idx] of a global idx: each row's entries idx (torch's w[..., idx]), not rows."""
    x2, idx = np.arange(12.0).reshape(3, 4) / 3, np.array([3, 1])
    y2 = np.random.default_rng(3).normal(size=(3, 2))
    m = ppl.compile("""
model M(x2: real[T, K], idx: int[J], y2: real[T, J]) {
  plate t in T {
    w = x2[t]
    y2 ~ Normal(w[idx] + w[0], 1)
  }
}""")
    want = _normal(y2, x2[:, idx] + x2[:, :1])
    assert abs(m.log_density({}, {"x2": x2, "idx": idx, "y2": y2}) - want) < 1e-4


VG = np.array([0.4, -1.2, 2.0, 0.7])
GID = [2, 1, 3]
XM = np.array([[0.5, -1.0, 2.0, 0.25, 1.5], [1.0, 0.0, -0.5, 3.0, -2.0],
               [0.2, 0.4, -0.6, 0.8, -1.0]])
GDATA = {"vg": VG, "gid": GID, "xm": XM, "y": Y}
GBASE = """model M(vg: real[G], gid: int[T], xm: real[T, J], y: real[T]) {{
  plate t in T{batch} {{
    {body}
    y ~ Normal({expr}, 1)
  }}
}}"""


def _gwant(loc) -> float:
    return _normal(Y, loc)


@pytest.mark.parametrize("expr, loc", [
    ("min(vg[gid[t]])", VG[GID]),
    ("sum(vg[gid[t]]) + max(vg[gid[t]])", 2 * VG[GID]),
    ("sum(vg[gid])", VG[GID]),
    ("mean(xm[gid[t] - 1])", XM[np.array(GID) - 1].mean(1)),
    ("prod(vg[gid[t]] + 1) + sd(vg[gid[t]]) + variance(vg[gid[t]])", VG[GID] + 1),
    ("sum(xm, dim=1) + logsumexp(xm, dim=-1)", XM.sum(1) + sp.logsumexp(XM, axis=1)),
    ("sum(xm) + sum(vg)", np.full(3, XM.sum() + VG.sum())),
])
def test_a_reduction_of_a_per_element_expression_reduces_the_elements_own_dims(expr, loc):
    """min(vg[gid[t]]) was the minimum over every element's vg[gid[t]] (-4.57 for -3.63)
    and sd of one number was the number. Data read whole keep sum(g) over all of g, and
    a dim of their row that is the same dim as declared (dim=1, dim=-1 of xm)."""
    m = ppl.compile(GBASE.format(batch="", body="", expr=expr))
    assert abs(m.log_density({}, GDATA) - _gwant(loc)) < 1e-4


def test_under_a_subsampled_plate_a_per_element_index_and_a_row_of_data_reduce_each_row():
    m = ppl.compile(GBASE.format(batch=" batch 2", body="",
                                 expr="min(vg[gid[t]]) + sum(xm, dim=-1)"))
    tr, t = _minibatch(m, GDATA, 2)
    loc = VG[np.array(GID)[t]] + XM[t].sum(1)
    assert abs(float(tr.nodes["y"]["log_prob_sum"]) - 1.5 * _normal(Y[t], loc)) < 1e-4


@pytest.mark.parametrize("expr, col, says", [
    ("logsumexp(vg[gid[t]])", 16, "'vg[gid[t]]' has 0 dims of its own per element, so "
     "logsumexp along dim=-1 would run along the plate's elements"),
    ("softmax(xm[t, 0])", 16, "'xm[t, 0]' has 0 dims of its own per element, so softmax"),
    ("cumsum(2 * vg[gid[t]], dim=-1)", 16, "so cumsum along dim=-1 would run along"),
])
def test_a_dim_of_one_number_per_element_is_a_located_error(expr, col, says):
    """logsumexp(vg[gid[t]]) ran along the plate (-3.91 for -3.63, a silent wrong density)."""
    with pytest.raises(BdlError) as info:
        ppl.compile(GBASE.format(batch="", body="", expr=expr))
    (d,) = info.value.diagnostics
    assert says in d.message and (d.span.line, d.span.col) == (4, col)


@pytest.mark.parametrize("expr, col", [("sum(xm, dim=0)", 20), ("logsumexp(xm, dim=0)", 26),
                                       ("max(xm, dim=0) * 2", 20)])
def test_a_reduction_over_the_plate_dim_of_data_read_whole_is_not_paired_with_the_plate(
        expr, col):
    """sum(xm, dim=0) of xm: real[T, J] read whole in plate t is over all of its dim T as
    declared (mean(X, 0)[1] stays so), [J] for the whole plate: meeting y[t] it was a
    size error at run time where T != J and was paired with the plate by position where
    T = J (a silent wrong density); now the checker's located error for either."""
    with pytest.raises(BdlError) as info:
        ppl.compile(f"""model M(xm: real[T, J], y: real[T]) {{
  plate t in T {{
    y ~ Normal({expr}, 1)
  }}
}}""")
    (d,) = info.value.diagnostics
    assert "inside plate t, 'xm' (shape [T, J]) is one value for the whole plate, not one " \
        "per element" in d.message and (d.span.line, d.span.col) == (3, col)
    m = ppl.compile(GBASE.format(batch="", body="", expr="sum(xm, dim=0)[1] + mean(xm, 0)[0]"))
    assert abs(m.log_density({}, GDATA) - _gwant(np.full(3, XM.sum(0)[1] + XM.mean(0)[0]))) \
        < 1e-4
