"""Draws of a site of an outer plate come out in its declared shape.

Pyro lays out ``m ~ Normal(0, 1)`` in plate N around plate M as [N, 1] (a unit dim for
M); a user reads ``m: real[N]``, so fits, summaries, predictions, run folders and prior
draws give [draws, N], and draws given back to the model (predict, a saved run, in
either layout) are re-aligned to Pyro's.
"""

import numpy as np
import pyro
import pytest
import torch

import ppl
from ppl.infer.draws import plate_layout
from ppl.runtime.shapes import declared, site_shaped

OA = """
model OA(g: real[N]?, y: real[N, M]) {
  s ~ HalfNormal(1)
  plate N {
    m ~ Normal(0, 1)
    g ~ Normal(m, 1)
    mu = 2 * m
    plate M {
      y ~ Normal(m, s)
    }
  }
}
infer svi(steps=20, samples=7)
"""

# a latent in the middle of three plates (b), one in the outer (a), and one in a plate
# beside the middle one (d: plates at dims -3 and -1, a unit dim between them)
THREE = """
model T(y: real[A, B, C], w: real[A, D]) {
  s ~ HalfNormal(1)
  plate A {
    a ~ Normal(0, 1)
    plate B {
      b ~ Normal(a, 1)
      plate C {
        y ~ Normal(b, s)
      }
    }
    plate D {
      d ~ Normal(a, 1)
      w ~ Normal(d, 1)
    }
  }
}
"""

# s is data: m[n] | g, y is Normal with precision 1 + 1 + M / s^2
CONJUGATE = """
model C(s: real<lower=0>, g: real[N], y: real[N, M]) {
  plate N {
    m ~ Normal(0, 1)
    g ~ Normal(m, 1)
    plate M {
      y ~ Normal(m, s)
    }
  }
}
"""

G = [0.3, -1.2, 0.8, 2.0, -0.4]
Y = [[0.5, 1.1, -0.2], [-0.9, -1.5, -0.3], [0.2, 0.9, 1.4], [1.7, 2.2, 1.1],
     [-0.6, 0.1, -0.8]]
RUNS = {"svi": {"steps": 20, "samples": 7}, "nuts": {"warmup": 30, "samples": 30, "chains": 1}}


def _oa_data(with_g: bool = True) -> dict:
    return {"g": G, "y": Y} if with_g else {"y": Y}


@pytest.fixture(scope="module")
def oa_nuts():
    """OA fitted by NUTS with g left out (predicted per draw)."""
    model = ppl.compile(OA)
    return model, model.fit(_oa_data(with_g=False), infer="nuts", seed=0, **RUNS["nuts"])


@pytest.mark.parametrize("method", ["svi", "nuts"])
def test_a_latent_of_the_outer_plate_is_one_number_per_element(method):
    fit = ppl.compile(OA).fit(_oa_data(), infer=method, seed=0, **RUNS[method])
    n = 7 if method == "svi" else 30
    assert fit.samples["m"].shape == (n, 5)
    assert fit.chains["m"].shape == (1, n, 5)
    assert fit.samples["mu"].shape == (n, 5)  # a deterministic of the outer plate
    assert fit.samples["s"].shape == (n,)
    # the deterministic is computed from the same draw, element by element
    assert torch.allclose(fit.samples["mu"], 2 * fit.samples["m"])
    rows = list(fit.summary().to_dict())
    assert rows == ["s", "m[0]", "m[1]", "m[2]", "m[3]", "m[4]",
                    "mu[0]", "mu[1]", "mu[2]", "mu[3]", "mu[4]"]


@pytest.mark.parametrize("method", ["svi", "nuts"])
def test_three_nested_plates_give_each_latent_its_plates_sizes(method):
    data = {"y": torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0)),
            "w": torch.randn(2, 5, generator=torch.Generator().manual_seed(1))}
    # shapes only, no values checked: 10 + 10 NUTS draws do (30 + 30 of these 19 latents
    # took 4-6 s on a loaded box)
    opts = RUNS[method] if method == "svi" else {"warmup": 10, "samples": 10, "chains": 1}
    fit = ppl.compile(THREE).fit(data, infer=method, seed=0, **opts)
    n = 7 if method == "svi" else 10
    assert fit.samples["a"].shape == (n, 2)
    assert fit.samples["b"].shape == (n, 2, 3)
    assert fit.samples["d"].shape == (n, 2, 5)
    rows = list(fit.summary().to_dict())
    assert "b[1, 2]" in rows and "d[1, 4]" in rows and "a[1]" in rows
    assert not any(r.startswith("a[") and "," in r for r in rows)


def test_plate_layout_names_the_sites_with_unit_dims():
    m = ppl.compile(THREE)
    tr = pyro.poutine.trace(m.pyro_model).get_trace(
        **m.bind({"y": torch.zeros(2, 3, 4), "w": torch.zeros(2, 5)}))
    assert tr.nodes["b"]["value"].shape == (2, 3, 1)
    assert tr.nodes["d"]["value"].shape == (2, 1, 5)
    assert plate_layout(tr) == {"a": (-3,), "b": (-3, -2), "d": (-3, -1), "w": (-3, -1)}


def test_declared_and_site_shaped_are_inverse_reshapes():
    x = torch.arange(24.0).reshape(4, 2, 3, 1)  # [draws, A, B, unit for C]
    d = declared({"b": x, "s": torch.ones(4)}, {"b": (-3, -2)}, lead=1)
    assert d["b"].shape == (4, 2, 3) and d["s"].shape == (4,)
    assert torch.equal(d["b"][:, 1, 2], x[:, 1, 2, 0])
    assert torch.equal(site_shaped(d["b"], (2, 3, 1), lead=1), x)
    assert torch.equal(site_shaped(x, (2, 3, 1), lead=1), x)  # already Pyro's: as is
    # a deterministic computed from globals only has no plate dims: left as it is
    assert declared({"c": torch.ones(4)}, {"c": (-2,)}, lead=1)["c"].shape == (4,)


def test_predict_conditions_on_the_declared_draws_and_returns_declared_shapes(oa_nuts):
    model, fit = oa_nuts
    assert fit.samples["g"].shape == (30, 5)  # optional data left out: predicted
    pred = fit.predict(_oa_data(with_g=False), seed=1)
    assert pred["g"].shape == (30, 5) and pred["mu"].shape == (30, 5)
    # mu is recomputed from the conditioned m: the same numbers, element by element
    assert torch.allclose(pred["mu"], 2 * fit.samples["m"])
    prior = model.sample_prior(_oa_data(with_g=False), num_samples=4)
    assert {k: tuple(v.shape) for k, v in prior.items()} == {
        "s": (4,), "m": (4, 5), "g": (4, 5), "mu": (4, 5), "y": (4, 5, 3)}


def test_a_saved_run_predicts_in_declared_shapes_and_old_runs_still_load(oa_nuts, tmp_path):
    model, fit = oa_nuts
    fit.save(tmp_path / "new")
    with np.load(tmp_path / "new" / "samples.npz") as z:
        assert z["m"].shape == (1, 30, 5) and z["g"].shape == (1, 30, 5)
    new = model.predict_run(tmp_path / "new", _oa_data(with_g=False), seed=3)
    assert new["g"].shape == (30, 5) and new["mu"].shape == (30, 5)
    assert torch.allclose(new["mu"], 2 * fit.samples["m"])
    # a run folder written before: every outer-plate site in Pyro's [.., N, 1]
    fit.save(tmp_path / "old")
    with np.load(tmp_path / "old" / "samples.npz") as z:
        old = {k: z[k] for k in z.files}
    for k in ("m", "g", "mu"):
        old[k] = old[k][..., None]
    np.savez(tmp_path / "old" / "samples.npz", **old)
    again = model.predict_run(tmp_path / "old", _oa_data(with_g=False), seed=3)
    assert set(again) == set(new)
    for k in new:
        assert torch.equal(again[k], new[k]), k


@pytest.mark.parametrize("method,opts,tol", [
    # 5 MC s.e. (posterior sd 0.387 / sqrt(120 / 2): NUTS's draws are autocorrelated)
    ("nuts", {"warmup": 60, "samples": 120, "chains": 1}, 0.25),
    # the mean-field guide is exact here; 200 draws and the optimiser's last steps
    ("svi", {"steps": 400, "lr": 0.05, "lr_decay": 0.05, "samples": 200}, 0.25),
    # a Gaussian posterior's mode is its mean: exact up to the optimiser
    ("map", {"steps": 300, "lr": 0.05}, 1e-4),
])
def test_each_element_has_its_conjugate_posterior_mean(method, opts, tol):
    """m[n] | g, y ~ Normal((g[n] + sum(y[n]) / s^2) / P, 1 / P), P = 2 + M / s^2: the
    n-th declared element holds m[n]'s draws (no two rows' means are closer than 0.33)."""
    s = 0.8
    fit = ppl.compile(CONJUGATE).fit({"s": s, "g": G, "y": Y}, infer=method, seed=0,
                                     **opts)
    precision = 2 + 3 / s**2
    want = (torch.tensor(G, dtype=torch.float64)
            + torch.tensor(Y, dtype=torch.float64).sum(1) / s**2) / precision
    got = fit.samples["m"]
    assert got.shape == (opts.get("samples", 1), 5)
    assert (got.mean(0).double() - want).abs().max() < tol, (got.mean(0), want)


def test_labels_of_the_outer_plate_drawn_after_the_fit_are_declared_too():
    """A label summed out in the fit and drawn after it (infer_discrete) in the outer of
    two plates: [draws, N], and row n's label follows row n's data (rows near 6 are
    z = 1, rows near 0 are z = 0, each with posterior probability 1 - 1e-15 or so)."""
    model = ppl.compile("""
model D(y: real[N, M]) {
  mu ~ Normal(0, 1)
  plate N {
    z ~ Bernoulli(0.5)
    plate M { y ~ Normal(mu + 6 * z, 1) }
  }
}
""")
    y = [[6.1, 5.8, 6.3], [0.2, -0.1, 0.3], [-0.3, 0.1, 0.0], [5.9, 6.2, 6.0]]
    fit = model.fit({"y": y}, infer="nuts", warmup=30, samples=30, chains=1, seed=0)
    assert fit.samples["z"].shape == (30, 4)
    assert torch.equal(fit.samples["z"].long(), torch.tensor([[1, 0, 0, 1]] * 30))
    pred = fit.predict({"y": y}, seed=0)
    assert torch.equal(pred["z"].long(), torch.tensor([[1, 0, 0, 1]] * 30))


WHOLE = ("m.bdl:5:23: error: inside plate j, 'x' (shape {shape}) is one value for the whole "
         "plate, not one per element")
COLUMN = ("m.bdl:5:18: error: inside plate i, j, 'mu + {read}' has {own} numbers of its own "
          "per element, which do not fit 'y' (one number per element)")


@pytest.mark.parametrize("decl, read, message", [
    ("real[N, K]", "x[:, 0]", WHOLE.format(shape="[N, K]")),
    ("real[N, M]", "x[:, 0]", WHOLE.format(shape="[N, M]")),
    # column j (Stan's x[:, j]), N numbers per element: it was 'a slice over that
    # dimension reads it at the wrong plate'
    ("real[N, M]", "x[:, j]", COLUMN.format(read="x[:, j]", own="[N]")),
    # A[:, j] of A: real[K, M] passed where K = M = N, read against the wrong elements
    ("real[K, M]", "x[:, j]", COLUMN.format(read="x[:, j]", own="[K]"))])
def test_a_slice_over_an_outer_plate_dim_inside_nested_plates_is_refused(decl, read, message):
    # x[:, 0] of x: real[N, M] passed (its dims are the plates') and put N's rows at M's
    # dim: with N = M it fitted the transpose's column silently. An index written into the
    # data names the whole value (stop 27): x[:, 0] is the whole column, N numbers for one
    # number y[i, j], refused as Stan refuses a vector for a real
    src = (f"model M(x: {decl}, y: real[N, M]) {{\n  mu ~ Normal(0, 1)\n  plate i in N {{\n"
           f"    plate j in M {{\n      y ~ Normal(mu + {read}, 1)\n    }}\n  }}\n}}\n")
    with pytest.raises(ppl.BdlError) as e:
        ppl.compile(src, "m.bdl")
    assert str(e.value).startswith(message)


def test_nested_plate_data_read_whole_or_by_both_indices_is_exact():
    x = torch.arange(6.0).reshape(2, 3)
    y = torch.tensor([[0.5, 1.0, 2.5], [3.0, 4.5, 5.0]])
    want = float(torch.distributions.Normal(x + 0.25, 1).log_prob(y).sum()
                 + torch.distributions.Normal(0.0, 1).log_prob(torch.tensor(0.25)))
    for read in ("x", "x[i, j]", "x[:, :]", "sum(x[i, :]) - sum(x[i, :]) + x"):
        m = ppl.compile("model M(x: real[N, M], y: real[N, M]) {\n  mu ~ Normal(0, 1)\n"
                        "  plate i in N {\n    plate j in M {\n"
                        f"      y ~ Normal(mu + {read}, 1)\n    }}\n  }}\n}}\n", "m.bdl")
        assert abs(float(m.log_density({"mu": 0.25}, {"x": x, "y": y})) - want) < 1e-5, read


def test_a_shifted_plate_index_may_not_wrap_or_run_past_the_end():
    # Stan's `for (t in 2:T) y[t] ~ normal(mu * y[t - 1], 1)` ported as plate t in T read
    # y[-1] at t = 0 (torch: the last element) and added a wrap-around term silently
    def src(body, args="y: real[T]"):
        return (f"model M({args}) {{\n  mu ~ Normal(0, 1)\n{body}}}\n")

    with pytest.raises(ppl.BdlError) as e:
        ppl.compile(src("  plate t in T {\n    y ~ Normal(mu * y[t - 1], 1)\n  }\n"), "m.bdl")
    assert str(e.value).split("\n")[0] == (
        "m.bdl:4:23: error: y[t - 1] at t = 0 reads y[-1], which torch counts from the end "
        "(y[T - 1])")
    assert "`ahead = y[1:]` then `plate t in T - 1 { ahead ~ ... y[t] ... }`" in str(e.value)
    with pytest.raises(ppl.BdlError, match=r"m.bdl:4:23: error: y\[t \+ 1\] reads y\[T\] at "
                       r"t = T - 1, past the end of a dimension of size T"):
        ppl.compile(src("  plate t in T {\n    y ~ Normal(mu * y[t + 1], 1)\n  }\n"), "m.bdl")
    # the port the note gives: the exact AR(1) density given y[0]
    good = ppl.compile(src("  ahead = y[1:]\n  plate t in T - 1 {\n"
                           "    ahead ~ Normal(mu * y[t], 1)\n  }\n"), "m.bdl")
    y = torch.tensor([1.0, 2.0, 5.0])
    want = float(torch.distributions.Normal(0.5 * y[:-1], 1).log_prob(y[1:]).sum()
                 + torch.distributions.Normal(0.0, 1).log_prob(torch.tensor(0.5)))
    assert abs(float(good.log_density({"mu": 0.5}, {"y": y})) - want) < 1e-5
    # a longer array read ahead: checked when the data bind the sizes
    ahead = ppl.compile(src("  plate t in T {\n    y ~ Normal(mu * z[t + 2], 1)\n  }\n",
                            "y: real[T], z: real[J]"), "m.bdl")
    assert set(ahead.bind({"y": [1.0, 2.0, 3.0], "z": [0.0] * 5})) >= {"T", "J"}
    with pytest.raises(ppl.BdlError, match=r"dimension 0 of 'z' read at t \+ 2 in plate t in "
                       r"T: J = 4 but must be at least T \+ 2 = 5"):
        ahead.bind({"y": [1.0, 2.0, 3.0], "z": [0.0] * 4})


@pytest.mark.parametrize("nested", [False, True])
def test_a_reduction_of_an_expression_of_plate_rows_is_one_per_row(nested):
    # sum(x[i] * w) (Stan's dot_product(x[i], w)) inside plate i summed over every row:
    # only sum(x[i]) of a plain index was one sum per row
    x = torch.arange(6.0).reshape(2, 3)
    w = torch.tensor([1.0, 2.0, 3.0])
    z = torch.tensor([[1.0, 0.5, 2.0], [2.0, 1.0, 0.0]])
    for read, loc in (("sum(x[i] * w)", (x * w).sum(1)), ("mean(exp(x[i]) * w + 1)",
                                                         (x.exp() * w + 1).mean(1)),
                      ("sum(x[i, :] * w)", (x * w).sum(1)), ("sum(w)", w.sum())):
        if nested:
            # w alone in plate j is w[j]: the whole vector paired with row i is w[:] (the
            # bare w meeting the row is the located error of tests/test_plate_nested_reads)
            read = read.replace("* w)", "* w[:])").replace("* w +", "* w[:] +")
            body = (f"  plate i in N {{\n    plate j in M {{\n      z ~ Normal(mu + {read}, 1)"
                    "\n    }\n  }\n")
            zz, loc = z, torch.as_tensor(loc).reshape(-1, 1).expand(2, 3)
        else:
            body = f"  plate i in N {{\n    z ~ Normal(mu + {read}, 1)\n  }}\n"
            zz, loc = z[:, 0], torch.as_tensor(loc).expand(2)
        m = ppl.compile("model M(x: real[N, M], w: real[M], z: real[N"
                        + (", M" if nested else "") + "]) {\n  mu ~ Normal(0, 1)\n" + body + "}\n",
                        "m.bdl")
        want = float(torch.distributions.Normal(loc, 1).log_prob(zz).sum()
                     + torch.distributions.Normal(0.0, 1).log_prob(torch.tensor(0.0)))
        got = float(m.log_density({"mu": 0.0}, {"x": x, "w": w, "z": zz}))
        assert abs(got - want) < 1e-3 * abs(want), read


def test_a_dim_from_the_left_of_a_plate_row_counts_within_the_row():
    # cumsum(v[i], 0) inside plate i ran along the plate (v[i] is laid out [N, K]): a
    # silent wrong value; now dim=0 is the row's own first dim, as Stan's loop reads it
    v = torch.arange(6.0).reshape(2, 3) / 3
    z = torch.ones(2, 3)
    for read, loc in (("cumsum(v[i], 0)", v.cumsum(1)), ("cumprod(v[i], dim=0)", v.cumprod(1)),
                      ("softmax(v[i], dim=0)", v.softmax(1)),
                      ("log_softmax(2 * v[i], dim=0)", (2 * v).log_softmax(1))):
        m = ppl.compile("model M(v: real[N, K], z: real[N, K]) {\n  mu ~ Normal(0, 1)\n"
                        f"  plate i in N {{\n    z ~ Normal(mu + {read}, 1)\n  }}\n}}\n", "m.bdl")
        want = float(torch.distributions.Normal(loc, 1).log_prob(z).sum()
                     + torch.distributions.Normal(0.0, 1).log_prob(torch.tensor(0.0)))
        got = float(m.log_density({"mu": 0.0}, {"v": v, "z": z}))
        assert abs(got - want) < 1e-4, read
    with pytest.raises(ppl.BdlError, match="each element's value has 1 dim of its own, so "
                       "dim=1 is out of range"):
        ppl.compile("model M(v: real[N, K], z: real[N, K]) {\n  plate i in N {\n"
                    "    z ~ Normal(cumsum(v[i], dim=1), 1)\n  }\n}\n", "m.bdl")
    # outer(v[i], w[i])[2, 1] read the plate's dims: refused, outer of globals is fine
    with pytest.raises(ppl.BdlError, match="inside plate i, outer of values that vary along "
                       "the plate is not supported"):
        ppl.compile("model M(v: real[N, K], z: real[N]) {\n  plate i in N {\n"
                    "    z ~ Normal(outer(v[i], v[i])[2, 1], 1)\n  }\n}\n", "m.bdl")
    ppl.compile("model M(w: real[K], z: real[N]) {\n  plate i in N {\n"
                "    z ~ Normal(outer(w, w)[0, 1], 1)\n  }\n}\n", "m.bdl")


def test_a_plate_index_minus_a_size_may_not_wrap():
    # y[t - L] of a size L read y[-L] at t = 0 (the last L values), silently; L = 0 is a
    # legal size (y[t]), so the sizes are checked when data bind them
    m = ppl.compile("model M(y: real[T], L: int) {\n  mu ~ Normal(0, 1)\n  plate t in T {\n"
                    "    y ~ Normal(mu * y[t - L], 1)\n  }\n}\n", "m.bdl")
    with pytest.raises(ppl.BdlError) as e:
        m.bind({"y": [1.0, 2.0], "L": 1})
    assert str(e.value).split("\n")[0] == (
        "m.bdl:4:23: error: y[t - L] at t = 0 reads y[-L]: -L = -1 is negative, which torch "
        "counts from the end (sizes from the data)")
    assert m.bind({"y": [1.0, 2.0], "L": 0})["L"] == 0
