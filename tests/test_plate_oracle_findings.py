"""Plate programs the plate oracle (tests/plate_oracle.py) found silently wrong,
each against its density written by hand as Stan's loops (docs/language.md "Plates"): a
value of an outer plate or an outer plate's row meeting an inner plate's number, a
per-element condition meeting a vector computed in the plate, logsumexp of a number, and
a reduction of a value read whole (data, a closed plate's value) in a plate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ppl

# sizes where every plate differs (the old readings were size errors) and where they are
# equal (the old readings ran, silently wrong)
SIZES = [dict(N=2, K=3, M=4), dict(N=3, K=3, M=3)]
HEAD = ("model F(x: real[N], x2: real[N, K], v: real[K], u: real[M], A: real[K, M], "
        "gid: int[N]{obs}) {{\n{body}\n}}")


def _data(N, K, M):
    rng = np.random.default_rng(N * 100 + K * 10 + M)
    return {"x": rng.normal(size=N), "x2": rng.normal(size=(N, K)), "v": rng.normal(size=K),
            "u": rng.normal(size=M), "A": rng.normal(size=(K, M)),
            "gid": [int(g) for g in rng.integers(0, K, size=N)]}


def _normal(y, loc, scale):
    y, loc = np.broadcast_arrays(np.asarray(y, float), np.asarray(loc, float))
    return float(np.sum(-0.5 * ((y - loc) / scale) ** 2 - math.log(scale)
                        - 0.5 * math.log(2 * math.pi)))


def _density(body, obs, data, latents=None):
    decl = "".join(f", {k}: real[{', '.join(s)}]" for k, s in obs.items())
    m = ppl.compile(HEAD.format(obs=decl, body=body))
    return m.log_density({k: torch.tensor(v) for k, v in (latents or {}).items()},
                         {k: (v if isinstance(v, list) else torch.tensor(v))
                          for k, v in data.items()})


pytestmark = pytest.mark.usefixtures("float64")


@pytest.mark.parametrize("sz", SIZES)
@pytest.mark.parametrize("w1", ["u[:]", "u + 0 * x[n]"])
def test_a_vector_of_the_outer_plate_is_each_elements_whole_vector_in_the_inner(sz, w1):
    """w1 = u[:] in plate n, read in plate m, is the whole u for every (n, m): Stan's
    (u - u[m]) * A[1]' (it was paired with plate m's elements: w1 - u[m] was 0)."""
    d = _data(**sz)
    got = _density(f"  plate n in N {{\n    w1 = {w1}\n    plate m in M {{\n"
                   "      factor((w1 - u[m]) @ A[0])\n    }\n  }", {}, d)
    u, A = d["u"], d["A"]
    want = sz["N"] * sum((u - u[m]) @ A[0] for m in range(sz["M"]))
    assert got == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("sz", SIZES)
@pytest.mark.parametrize("loc, hand", [
    ("u[m] - A[gid[n]]", lambda d, n, m: d["u"][m] - d["A"][d["gid"][n]]),
    ("A[gid[n]] + m", lambda d, n, m: d["A"][d["gid"][n]] + m),
])
def test_a_row_of_the_outer_plate_meets_the_inner_plates_number(sz, loc, hand):
    """A[gid[n]] is row gid[n] (M numbers) for every m: y4[n, m] ~ normal(u[m] -
    A[gid[n]], .5), each of the M entries against the one number u[m]."""
    N, M = sz["N"], sz["M"]
    d = _data(**sz)
    d["y4"] = np.random.default_rng(1).normal(size=(N, M, M))
    got = _density(f"  plate n in N {{\n    plate m in M {{\n      y4 ~ Normal({loc}, 0.5)\n"
                   "    }\n  }", {"y4": ("N", "M", "M")}, d)
    want = sum(_normal(d["y4"][n, m], hand(d, n, m), 0.5) for n in range(N) for m in range(M))
    assert got == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("sz", SIZES)
def test_an_outer_row_minus_an_inner_element_is_widened(sz):
    """sum(x2[n] - v[k]) under plates n, k is Stan's sum(x2[n] - v[k]): the row's K
    entries each minus the one number v[k] (they were paired with v's entries)."""
    N, K = sz["N"], sz["K"]
    d = _data(**sz)
    d["y7"] = np.random.default_rng(2).normal(size=(N, K))
    got = _density("  plate n in N {\n    plate k in K {\n"
                   "      y7 ~ Normal(sum(x2[n] - v[k]), 0.7)\n    }\n  }", {"y7": ("N", "K")}, d)
    want = sum(_normal(d["y7"][n, k], np.sum(d["x2"][n] - d["v"][k]), 0.7)
               for n in range(N) for k in range(K))
    assert got == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("sz", SIZES)
def test_a_condition_per_element_meets_a_vector_computed_in_the_plate(sz):
    """w5 = x2[:, 1] in plate n is the column (N numbers) for every n; where(x2[n, 0] >
    0.3, v[gid[n]] - w5, 0.5) takes element n's condition for all of them."""
    N = sz["N"]
    d = _data(**sz)
    d["y7"] = np.random.default_rng(3).normal(size=(N, N))
    got = _density("  plate n in N {\n    w5 = x2[:, 1]\n"
                   "    y7 ~ Normal(where(x2[n, 0] > 0.3, v[gid[n]] - w5, 0.5), 1)\n  }",
                   {"y7": ("N", "N")}, d)
    x2, v, gid = d["x2"], d["v"], d["gid"]
    want = sum(_normal(d["y7"][n], v[gid[n]] - x2[:, 1] if x2[n, 0] > 0.3 else 0.5, 1.0)
               for n in range(N))
    assert got == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("sz", SIZES)
def test_logsumexp_of_a_number_plus_the_plate_index(sz):
    """logsumexp(0.5) is 0.5; + m is one number per element, widened to y3[m]'s M."""
    M = sz["M"]
    d = _data(**sz)
    d["y3"] = np.random.default_rng(4).normal(size=(M, M))
    got = _density("  plate m in M {\n    y3 ~ Normal(logsumexp(0.5) + m, 0.5)\n  }",
                   {"y3": ("M", "M")}, d)
    want = sum(_normal(d["y3"][m], 0.5 + m, 0.5) for m in range(M))
    assert got == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("sz", SIZES)
def test_a_reduction_of_a_value_read_whole_is_one_number_for_every_element(sz):
    """sum(w3) of a closed plate's w3 = 0.5 is M * 0.5, sum(x) of data x: real[N] is over
    all of x, max(z1) of a closed plate's latent over all of it: one number, plus A[0]
    (M numbers) for each row (they were widened as one value per element: 'size
    mismatch', or with N = M paired with the elements)."""
    N, M = sz["N"], sz["M"]
    d = _data(**sz)
    A0 = d["A"][0]
    d["y4"] = np.random.default_rng(5).normal(size=(M, M))
    got = _density("  plate m in M {\n    w3 = 0.5\n  }\n  plate m in M {\n"
                   "    y4 ~ Normal(sum(w3) + A[0], 0.5)\n  }", {"y4": ("M", "M")}, d)
    assert got == pytest.approx(_normal(d["y4"], 0.5 * M + A0, 0.5), rel=1e-9)
    del d["y4"]
    d["y1"] = np.random.default_rng(6).normal(size=(N, M))
    got = _density("  plate n in N {\n    y1 ~ Normal(sum(x) + A[0], 1)\n  }",
                   {"y1": ("N", "M")}, d)
    assert got == pytest.approx(_normal(d["y1"], d["x"].sum() + A0, 1.0), rel=1e-9)
    z1 = np.array([0.3, -1.2, 0.8])[:N]
    got = _density("  plate n in N {\n    z1: real[N] ~ Normal(0, 1)\n  }\n"
                   "  plate n in N {\n    y1 ~ Normal(max(z1) + A[0], 1)\n  }",
                   {"y1": ("N", "M")}, d, {"z1": z1})
    want = _normal(z1, 0.0, 1.0) + _normal(d["y1"], z1.max() + A0, 1.0)
    assert got == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("sz", SIZES)
@pytest.mark.parametrize("body, hand", [
    ("w2 = 2 * u[m]\n    factor(mean(xm / (1.5 + tanh(w2))))",
     lambda d, m: np.mean(d["xm"] / (1.5 + np.tanh(2 * d["u"][m])))),
    ("factor(sum(v @ (A - u[m])))", lambda d, m: np.sum(d["v"] @ (d["A"] - d["u"][m]))),
])
def test_data_read_whole_with_the_plates_size_as_a_later_dim_meets_each_element(
        sz, body, hand):
    """xm: real[N, M] (or A: real[K, M]) read whole in plate m is the whole matrix for
    every element, as Stan's xm in the loop over m; the element's number is widened to
    meet it (its M was paired with the plate's elements: Pyro's 'Shape mismatch inside
    plate', an '@' size error, or with N = M a wrong density). Fuzz seeds 17319, 8261."""
    d = _data(**sz)
    d["xm"] = np.random.default_rng(7).normal(size=(sz["N"], sz["M"]))
    got = _density(f"  plate m in M {{\n    {body}\n  }}", {"xm": ("N", "M")}, d)
    assert got == pytest.approx(sum(hand(d, m) for m in range(sz["M"])), rel=1e-9)


@pytest.mark.parametrize("sz", SIZES)
def test_a_slice_of_outer_plate_data_in_nested_plates_is_the_whole_value(sz):
    """x[0:2][0] in the body of plate n of nested plates is x[0] for every element, and
    x2[:, 1] in plate k inside plate n is the whole column (N numbers) for every (n, k):
    Stan's x2[:, 2] in the loop (both were refused: 'a slice over that dimension reads it
    at the wrong plate'; an index written into the data names the whole value)."""
    N, K = sz["N"], sz["K"]
    d = _data(**sz)
    rng = np.random.default_rng(8)
    d["y1"], d["y6"] = rng.normal(size=N), rng.normal(size=(N, K, N))
    got = _density("  plate n in N {\n    y1 ~ Normal(x[0:2][0] + x[n], 1)\n"
                   "    plate k in K {\n      y6 ~ Normal(x2[:, 1] + v[k], 1)\n    }\n  }",
                   {"y1": ("N",), "y6": ("N", "K", "N")}, d)
    x, x2, v = d["x"], d["x2"], d["v"]
    want = sum(_normal(d["y1"][n], x[0] + x[n], 1.0) for n in range(N)) + sum(
        _normal(d["y6"][n, k], x2[:, 1] + v[k], 1.0) for n in range(N) for k in range(K))
    assert got == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("sz", SIZES)
@pytest.mark.parametrize("read, hand", [
    ("u[m] * xm[n]", lambda d, n, m: d["u"][m] * d["xm"][n]),
    ("u[:] * xm[n]", lambda d, n, m: d["u"] * d["xm"][n]),
    ("(u + 0) * xm[n]", lambda d, n, m: d["u"][m] * d["xm"][n]),
])
def test_a_number_or_the_whole_vector_meeting_an_outer_plates_row(sz, read, hand):
    """Under plates n, m the bare u is u[m]; with the row xm[n] (M numbers of its own)
    Stan's u in the loop is the whole vector, so `u * xm[n]` is refused (seed 11776,
    below) and each meaning is written out: u[m] * xm[n] is the element's number times
    the row, u[:] * xm[n] the entries paired, y7[n, m] ~ normal(., 1) by hand."""
    N, M = sz["N"], sz["M"]
    d = _data(**sz)
    d["xm"] = np.random.default_rng(9).normal(size=(N, M))
    d["y7"] = np.random.default_rng(10).normal(size=(N, M, M))
    got = _density(f"  plate n in N {{\n    plate m in M {{\n      y7 ~ Normal({read}, 1)\n"
                   "    }\n  }", {"xm": ("N", "M"), "y7": ("N", "M", "M")}, d)
    want = sum(_normal(d["y7"][n, m], hand(d, n, m), 1.0) for n in range(N) for m in range(M))
    assert got == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("sz", SIZES)
@pytest.mark.parametrize("read, hand", [
    ("u[m] - 0.5", lambda u, m: u[m] - 0.5),
    ("logsumexp(u[:] - 0.5)", lambda u, m: np.log(np.sum(np.exp(u - 0.5)))),
    ("sum(u - 0.5)", lambda u, m: u[m] - 0.5),  # a sum of u read as u[m]: that number
])
def test_logsumexp_of_one_number_per_element_or_of_the_whole_vector(sz, read, hand):
    """In plate m, u - 0.5 is u[m] - 0.5 (sum(u - 0.5) reads it so), and logsumexp of it
    ran over the whole u (M * logsumexp(u - 0.5)); it is refused now (seed 12902,
    below), and each meaning is written out: factor adds, by hand, the sum over m."""
    d = _data(**sz)
    got = _density(f"  plate m in M {{\n    factor({read})\n  }}", {}, d)
    assert got == pytest.approx(sum(hand(d["u"], m) for m in range(sz["M"])), rel=1e-9)


@pytest.mark.parametrize("body, says, notes", [
    ("plate n in N {\n    plate m in M {\n      factor(sum(u * xm[n]))\n    }\n  }",
     "'u' is read per element (u[m], one number), but it meets 'xm[n]'",
     ["u[m] * xm[n]", "u[:] * xm[n]"]),
    ("plate m in M {\n    factor(logsumexp(u - 0.5))\n  }",
     "'u - 0.5' is one number per element (it reads 'u' as u[m]), so logsumexp",
     ["u - 0.5", "logsumexp(u[:] - 0.5)"]),
    ("plate m in M {\n    factor(sum(exp(u), dim=-1))\n  }",
     "'exp(u)' is one number per element (it reads 'u' as u[m]), so sum along dim=-1",
     ["exp(u)", "sum(exp(u[:]), dim=-1)"]),
])
def test_a_program_with_two_loop_readings_is_a_located_error_spelling_both(body, says, notes):
    with pytest.raises(ppl.BdlError) as info:
        ppl.compile(HEAD.format(obs=", xm: real[N, M]", body="  " + body))
    (diag,) = info.value.diagnostics
    assert says in diag.message and "say which is meant" in diag.message
    assert [n.rsplit(": ", 1)[1] for n in diag.notes] == notes


@pytest.mark.parametrize("seed, says", [
    (11776, "'u' is read per element (u[m], one number), but it meets 'xm[n]'"),
    (12902, "'u' is read per element (u[m], one number), but it meets 'A[gid[n], :]'"),
])
def test_the_oracle_seeds_of_the_two_readings_are_refused_where_they_are_read(seed, says):
    """Seeds 11776 (y7 ~ Bernoulli(logits=... u * xm[n] ...) under plates n, m) and 12902
    (factor(logsumexp(u - A[gid[n], :], dim=0))) disagreed with the oracle: BDL read u
    whole, the oracle u[m]. Both are now the located error."""
    import plate_oracle as po
    result = po.compare(po.generate(seed), seed)
    assert result["status"] == "refused_compile" and says in result["error"], result


def _lse(a):
    return float(np.log(np.sum(np.exp(a))))


@pytest.mark.parametrize("sz", SIZES)
@pytest.mark.parametrize("body, obs, hand", [
    # A: real[K, M] read whole in the body of plate k, [K, 1, M] there: dim=1 is its M
    ("plate k in K {\n    y3 ~ Normal(logsumexp(A, dim=1), 1)\n    plate n in N {\n"
     "      y6 ~ Normal(max(A, dim=1) + x[n], 1)\n    }\n  }",
     {"y3": ("K",), "y6": ("K", "N")},
     lambda d, K, N, M: sum(_normal(d["y3"][k], _lse(d["A"][k]), 1.0) for k in range(K))
     + sum(_normal(d["y6"][k, n], d["A"][k].max() + d["x"][n], 1.0)
           for k in range(K) for n in range(N))),
    # an expression of xm in plate n's body: dim=0 is the element's own first dim (M)
    ("plate n in N {\n    y1 ~ Normal(sum(exp(-xm), dim=0), 1)\n    plate k in K {\n"
     "      y6 ~ Normal(mean(xm * 2, dim=0) + v[k], 1)\n    }\n  }",
     {"y1": ("N",), "y6": ("N", "K")},
     lambda d, K, N, M: sum(_normal(d["y1"][n], np.exp(-d["xm"][n]).sum(), 1.0) for n in range(N))
     + sum(_normal(d["y6"][n, k], (2 * d["xm"][n]).mean() + d["v"][k], 1.0)
           for n in range(N) for k in range(K))),
    # x2: real[N, K] in plate n's body, laid out [N, 1, K] there: dim=0 is its N as
    # declared, one [K] for the whole plate (Stan's column sums of the whole x2)
    ("plate n in N {\n    y2 ~ Normal(sum(x2, dim=0), 1)\n    plate k in K {\n"
     "      y6 ~ Normal(v[k], 1)\n    }\n  }",
     {"y2": ("N", "K"), "y6": ("N", "K")},
     lambda d, K, N, M: sum(_normal(d["y2"][n], d["x2"].sum(0), 1.0) for n in range(N))
     + _normal(d["y6"], d["v"], 1.0)),
    ("plate n in N {\n    factor(logsumexp(x2, dim=0) @ v + mean(x2, 0)[0])\n"
     "    plate m in M {\n      factor(max(xm, dim=0)[m] * x[n])\n    }\n  }",
     {},
     lambda d, K, N, M: N * (np.log(np.exp(d["x2"]).sum(0)) @ d["v"] + d["x2"].mean(0)[0])
     + sum(d["xm"].max(0)[m] * d["x"][n] for n in range(N) for m in range(M))),
    # a value computed there from it is the same [K] for every element
    ("plate n in N {\n    w = min(x2, dim=0)\n    plate k in K {\n"
     "      y6 ~ Normal(w[k] + x[n], 1)\n    }\n  }",
     {"y6": ("N", "K")},
     lambda d, K, N, M: sum(_normal(d["y6"][n, k], d["x2"].min(0)[k] + d["x"][n], 1.0)
                            for n in range(N) for k in range(K))),
])
def test_a_dim_from_the_left_of_data_laid_out_in_an_outer_plate_is_the_declared_dim(
        sz, body, obs, hand):
    """logsumexp(A, dim=1) in the body of an outer plate k is Stan's log_sum_exp(A[k]),
    sum(exp(-xm), dim=0) in plate n's body sum(exp(-xm[n])), also in the plate nested
    there; they were 'laid out at the plates' dims, so ... would not read it as declared'
    (the plate oracle's most common refusal over seeds 22000-25999, 61 of 253). Along
    the plate dim, sum(x2, dim=0) in the body of an outer plate n is over x2's N as
    declared, as in one plate (docs "Plates": sum(xm, dim=0) of data read whole), the
    same [K] for every element (it was that error too)."""
    N, K, M = sz["N"], sz["K"], sz["M"]
    d = _data(**sz)
    rng = np.random.default_rng(11)
    d["xm"] = rng.normal(size=(N, M))
    for name, shape in obs.items():
        d[name] = rng.normal(size=tuple(sz[s] for s in shape))
    got = _density("  " + body, {"xm": ("N", "M"), **obs}, d)
    assert got == pytest.approx(hand(d, K, N, M), rel=1e-9)


@pytest.mark.parametrize("sz", SIZES)
@pytest.mark.parametrize("loc, site, hand", [
    # column k of x2 (Stan's x2[:, k]), N numbers per (n, k), plus the outer number x[n]
    ("x2[:, k] + x[n]", ("N", "K", "N"), lambda d, n, k: d["x2"][:, k] + d["x"][n]),
    ("x[n] * x2[0:2, k]", ("N", "K", "2"), lambda d, n, k: d["x"][n] * d["x2"][0:2, k]),
    # a value of the inner plate with a dim of its own meets the outer plate's number
    ("logsumexp(x2[0:2, k], dim=0) + x2[n]", ("N", "K", "K"),
     lambda d, n, k: _lse(d["x2"][0:2, k]) + d["x2"][n]),
])
def test_a_column_read_by_the_inner_plates_index_in_nested_plates(sz, loc, site, hand):
    """x2[:, k] (x2[0:2, k]) under plates n, k is column k (two of its entries) for every
    n, as Stan's loop reads it (it was 'a slice over that dimension reads it at the wrong
    plate'); meeting x[n] (one number of the outer plate) each entry gets it, and an
    inner plate's number meets row x2[n] whole (both were 'would match the plate's size
    K with N', or with N = K silently misread had they run)."""
    N, K = sz["N"], sz["K"]
    d = _data(**sz)
    shape = tuple(2 if s == "2" else sz[s] for s in site)
    d["y9"] = np.random.default_rng(12).normal(size=shape)
    got = _density(f"  plate n in N {{\n    plate k in K {{\n      y9 ~ Normal({loc}, 1)\n"
                   "    }\n  }", {"y9": tuple(site)}, d)
    want = sum(_normal(d["y9"][n, k], hand(d, n, k), 1.0) for n in range(N) for k in range(K))
    assert got == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("sz", SIZES)
@pytest.mark.parametrize("body, site, hand", [
    # plates m, n: u[m] of the outer plate plus row n (x2[n] * x[n]) of the inner one
    ("plate m in M {\n    plate n in N {\n      y9 ~ Normal(min(u[m]) + x2 * x, 1)\n    }\n  }",
     ("M", "N", "K"), lambda d, a, b: d["u"][a] + d["x2"][b] * d["x"][b]),
    # plates k, n: a value of plate n with K of its own meeting k, number of plate k
    ("plate k in K {\n    plate n in N {\n      w3 = 2 * x2[n]\n"
     "      y9 ~ Normal(v[0] * k + w3, 1)\n    }\n  }",
     ("K", "N", "K"), lambda d, a, b: d["v"][0] * a + 2 * d["x2"][b]),
    # plates n, m: a value of both with K of its own (row n plus m) meets v[gid[n]]
    ("plate n in N {\n    plate m in M {\n      y9 ~ Normal((x2 + m * 0.5) - v[gid[n]], 1)"
     "\n    }\n  }",
     ("N", "M", "K"), lambda d, a, b: d["x2"][a] + b * 0.5 - d["v"][d["gid"][a]]),
    ("plate n in N {\n    plate k in K {\n"
     "      y9 ~ Normal(max(A[k] / (1.5 + tanh(n * 0.5)) + x[n], dim=0), 1)\n    }\n  }",
     ("N", "K"), lambda d, a, b: np.max(d["A"][b] / (1.5 + np.tanh(a * 0.5)) + d["x"][a])),
])
def test_an_inner_plates_value_with_dims_of_its_own_meets_an_outer_plates_number(
        sz, body, site, hand):
    """Each element of the inner plate n has a row (K numbers); the outer plate's number
    (u[m], k, or v[gid[n]] of both plates' value x2 + m) is widened to meet it, as Stan's
    loop adds it to each entry (it was
    'inside plate m, n, one operand has one value per plate element (shape [M, 1]) and
    one operand has shape [N, K]: '+' would match the plate's size M with N')."""
    d = _data(**sz)
    shape = tuple(sz[s] for s in site)
    d["y9"] = np.random.default_rng(13).normal(size=shape)
    got = _density("  " + body, {"y9": tuple(site)}, d)
    want = sum(_normal(d["y9"][a, b], hand(d, a, b), 1.0)
               for a in range(shape[0]) for b in range(shape[1]))
    assert got == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("sz", SIZES)
def test_a_column_by_an_outer_plates_per_element_index_reads_the_declared_data(sz):
    """x2[0:2, gid[n]] under plates n, m is Stan's x2[1:2, gid[n]], two numbers per n
    (x2 is laid out [N, 1, K] there, and the slice was 'a slice over that dimension
    reads it at the wrong plate'); under `batch 2` the slice still reads rows 0 and 1 of
    the whole x2, not of the minibatch (the trace's y9 term, scaled by N / 2)."""
    import pyro

    N, M = sz["N"], sz["M"]
    d = _data(**sz)
    d["y9"] = np.random.default_rng(14).normal(size=(N, M, 2))
    body = ("  plate n in N{b} {{\n    plate m in M {{\n"
            "      y9 ~ Normal(x2[0:2, gid[n]] + u[m], 1)\n    }}\n  }}")
    x2, gid, u, y9 = d["x2"], d["gid"], d["u"], d["y9"]

    def term(n, m):
        return _normal(y9[n, m], x2[0:2, gid[n]] + u[m], 1.0)

    got = _density(body.format(b=""), {"y9": ("N", "M", "2")}, d)
    assert got == pytest.approx(sum(term(n, m) for n in range(N) for m in range(M)), rel=1e-9)
    decl = ", y9: real[N, M, 2]"
    model = ppl.compile(HEAD.format(obs=decl, body=body.format(b=" batch 2")))
    pyro.set_rng_seed(3)
    tr = pyro.poutine.trace(model.pyro_model).get_trace(**model.bind(
        {k: (v if isinstance(v, list) else torch.tensor(v)) for k, v in d.items()}))
    tr.compute_log_prob()
    rows = [int(i) for i in tr.nodes["n"]["value"]]
    want = N / 2 * sum(term(n, m) for n in rows for m in range(M))
    assert float(tr.nodes["y9"]["log_prob_sum"]) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("sz", SIZES)
@pytest.mark.parametrize("read, hand", [
    # B: real[N, N]: row n (N numbers) with x[n], or with the whole x paired (the dot)
    ("sum(B[n, :] * x[n])", lambda d, n: np.sum(d["B"][n] * d["x"][n])),
    ("sum(B[n, :] * x[:])", lambda d, n: d["B"][n] @ d["x"]),
    ("B[n, :] @ x", lambda d, n: d["B"][n] @ d["x"]),
    ("sum(x[n] - B[n])", lambda d, n: np.sum(d["x"][n] - d["B"][n])),
    # x2: real[N, K] and v: real[K]: v's size is not the plate's, so the bare v is the
    # whole vector even where K = N (the second SIZES)
    ("sum(x2[n, :] * v)", lambda d, n: d["x2"][n] @ d["v"]),
    ("sum(x2[n, :] * x)", lambda d, n: np.sum(d["x2"][n] * d["x"][n])),
    # pow meets its arguments per element as ^ does (pow(exp(x2[n]), x) was torch's 'size
    # of tensor a (3) must match', or with K = N x's entries paired with the row's)
    ("sum(pow(exp(x2[n]), x))", lambda d, n: np.sum(np.exp(d["x2"][n]) ** d["x"][n])),
    ("sum(pow(exp(B[n, :]), x[:]))", lambda d, n: np.sum(np.exp(d["B"][n]) ** d["x"])),
    ("sum(pow(exp(B[n, :]), x[n]))", lambda d, n: np.sum(np.exp(d["B"][n]) ** d["x"][n])),
    # both bare: each its element's (x[n] times row n of B), no row written out
    ("sum(B * x)", lambda d, n: np.sum(d["B"][n] * d["x"][n])),
    ("sum(where(x > 0, exp(B), 0.5))", lambda d, n: np.sum(np.exp(d["B"][n]) if d["x"][n] > 0
                                                              else 0.5 * np.ones(len(d["x"])))),
])
def test_a_plates_row_meets_the_elements_number_or_the_whole_vector(sz, read, hand):
    """In one plate n, the row B[n, :] of B: real[N, N] has N numbers of its own; x[n]
    times it is the element's number times the row, x[:] times it Stan's dot product
    (as B[n, :] @ x), factor adds the sum over n by hand."""
    N = sz["N"]
    d = _data(**sz)
    d["B"] = np.random.default_rng(15).normal(size=(N, N))
    got = _density(f"  plate n in N {{\n    factor({read})\n  }}", {"B": ("N", "N")}, d)
    assert got == pytest.approx(sum(hand(d, n) for n in range(N)), rel=1e-9)


@pytest.mark.parametrize("read, col, row, notes", [
    ("sum(B[n, :] * x)", 20, "B[n, :]", ["B[n, :] * x[n]", "B[n, :] * x[:]"]),
    ("sum(x * B[n])", 20, "B[n]", ["x[n] * B[n]", "x[:] * B[n]"]),
    ("x - B[n, :]", 16, "B[n, :]", ["x[n] - B[n, :]", "x[:] - B[n, :]"]),
    ("2 * (B[n] + x)", 21, "B[n]", ["B[n] + x[n]", "B[n] + x[:]"]),
    ("pow(exp(B[n]), x)", 16, "exp(B[n])", ["pow(exp(B[n]), x[n])", "pow(exp(B[n]), x[:])"]),
    ("where(B[n, :] > 0, x, 0.5)", 16, "B[n, :] > 0",
     ["where(B[n, :] > 0, x[n], 0.5)", "where(B[n, :] > 0, x[:], 0.5)"]),
    ("clamp(B[n], min=x)", 16, "B[n]", ["clamp(B[n], min=x[n])", "clamp(B[n], min=x[:])"]),
])
def test_the_bare_name_meeting_its_plates_row_in_one_plate_says_which_is_meant(
        read, col, row, notes):
    """sum(B[n, :] * x) in plate n read x as x[n] (each element's number times the row)
    while B[n, :] @ x was the dot product with the whole x, Stan's x in the loop: the
    same two loop readings as under two plates, now the located error spelling both."""
    with pytest.raises(ppl.BdlError) as info:
        ppl.compile(HEAD.format(obs=", B: real[N, N], y: real[N, N]",
                                body=f"  plate n in N {{\n    y ~ Normal({read}, 1)\n  }}"))
    (diag,) = info.value.diagnostics
    assert diag.message == (
        f"inside plate n, 'x' is read per element (x[n], one number), but it meets '{row}', "
        "which has [N] numbers of its own, and Stan's 'x' in the loop would be the whole "
        "vector paired with them: say which is meant")
    assert (diag.span.line, diag.span.col) == (3, col)
    assert [n.rsplit(": ", 1)[1] for n in diag.notes] == notes


def test_a_function_keeping_the_plate_dim_of_laid_out_data_is_still_refused():
    """softmax(x2, dim=0) would keep x2's plate dim N, which the layout moves: the
    located error, whose note says to compute it before the plates."""
    with pytest.raises(ppl.BdlError) as info:
        ppl.compile(HEAD.format(obs="", body="  plate n in N {\n    factor(softmax(x2, dim=0)"
                                "[0, 1])\n    plate k in K {\n      factor(v[k])\n    }\n  }"))
    (diag,) = info.value.diagnostics
    assert "'x2' is laid out at the plates' dims, so softmax over its dims" in diag.message
    assert diag.notes[0].startswith("compute it before the plates")


@pytest.mark.parametrize("sz", SIZES)
def test_bare_data_of_both_plates_meeting_the_outer_row_is_the_elements_number(sz):
    """x2: real[N, K] bare under plates n, k is x2[n, k]; meeting row x2[n] (K numbers)
    it is that number against each entry: Stan's whole x2 (a matrix) could not pair with
    the row, so there is one reading and no error (the plate oracle's seed 1246, w9 =
    ((w2[0] * x2[n]) - x2) * x2, was refused by the one-plate rule at first)."""
    N, K = sz["N"], sz["K"]
    d = _data(**sz)
    d["y9"] = np.random.default_rng(17).normal(size=(N, K, K))
    got = _density("  plate n in N {\n    plate k in K {\n      y9 ~ Normal(x2[n] - x2, 1)\n"
                   "    }\n  }", {"y9": ("N", "K", "K")}, d)
    want = sum(_normal(d["y9"][n, k], d["x2"][n] - d["x2"][n, k], 1.0)
               for n in range(N) for k in range(K))
    assert got == pytest.approx(want, rel=1e-9)
    import plate_oracle as po
    assert po.compare(po.generate(1246), 1246)["status"] == "agree"
