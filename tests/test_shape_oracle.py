"""A seeded sweep of random programs outside plates (tests/shape_oracle.py): every local's
shape as the checker infers it (CheckedModel.symbols[name].ty.shape), substituted at three
sets of sizes (two unequal, one with N = K = M), against the value's shape when the
generated Pyro runs and against a hand-written numpy version; a program numpy cannot run
must be refused (at check, or by binding's size checks), never run or fail in torch.

Known disagreements are strict xfails, each with its seed or its smallest program, so a
fix flips them."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import shape_oracle as so

# (seed, bad): bad is the share of operands generated without regard to fit
SWEEP = [(seed, 0.0) for seed in range(50)] + [(seed, 0.3) for seed in range(45)]
# what the sweep finds today outside so.OK (each a class below)
KNOWN: dict = {}  # (seed, share): status, each a strict xfail until fixed
MUST_COVER = {"fn", "binop", "index", "slice", "slice_negative", "gather",
              "reduce", "reduce_dim", "along",
              "sort", "matmul", "transpose", "stack", "cat", "list", "outer", "diag", "tril",
              "make", "where", "clamp", "pow", "scale", "linalg", "bad"}
N3 = {"N": 7, "K": 3, "M": 5}    # unequal sizes
EQ = {"N": 4, "K": 4, "M": 4}    # equal sizes: a swapped dim runs


def _report(key, program, result):
    return f"seed {key} {result}\n{program.source()}"


@pytest.mark.slow
def test_random_programs_shapes_agree_with_the_checker_and_numpy(float64):
    counts = collections.Counter()
    covered = set()
    bad = []
    for seed, share in SWEEP:
        program = so.generate(seed, bad=share)
        result = so.compare(program, seed)
        counts[result["status"]] += 1
        covered |= program.features()
        if result["status"] not in so.OK and KNOWN.get((seed, share)) != result["status"]:
            bad.append(_report((seed, share), program, result))
    assert not bad, f"{len(bad)} of {len(SWEEP)} programs:\n" + "\n".join(bad[:5])
    assert counts["agree"] > 0.75 * len(SWEEP), counts
    # the ill-fitting share is refused, at check or by binding's size checks
    assert counts["refused"] + counts["refused_run"] >= 4, counts
    missing = MUST_COVER - covered
    assert not missing, f"the sweep no longer makes programs with {missing}"


@pytest.mark.parametrize("seed,share", sorted(KNOWN))
@pytest.mark.xfail(strict=True, reason="a known disagreement (KNOWN)")
def test_a_known_disagreement_of_the_sweep(seed, share, float64):
    result = so.compare(so.generate(seed, bad=share), seed)
    assert result["status"] in so.OK, result


def test_the_oracle_reads_shapes_as_torch_and_the_checker_do(float64):
    """Hand-computed shapes at N = 7, K = 3, M = 5: a symbolic slice, cat of two sizes,
    a reduction with dim, a gather, stack broadcasting its items, vector @ matrix."""
    body = "\n".join([
        "  w1 = x[1:N - 1]",           # N - 2 = 5
        "  w2 = cat([x, u])",          # N + M = 12
        "  w3 = sum(A, dim=0) * z",    # [K] = 3, a deterministic site
        "  w4 = v[g]",                 # [N] = 7
        "  w5 = stack([A, v], dim=1)",  # A [N, K] and v [K] broadcast: [N, 2, K]
        "  w6 = x @ A @ B",            # [M]
    ])
    out = so.outcome(body, N3)
    want = {"w1": (5,), "w2": (12,), "w3": (3,), "w4": (7,), "w5": (7, 2, 3), "w6": (5,)}
    assert out["checker"] == want and out["run"] == want, out
    program = so.Program([])  # numpy's version of the same, through the oracle's classes
    x, v, A = so.Var("x"), so.Var("v"), so.Var("A")
    program.statements = [
        ("w1", so.Typed(so.Index(x, [("s", 1, {("N",): 1, (): -1})]), ())),
        ("w4", so.Typed(so.Index(v, [("g", "g")]), ())),
        ("w5", so.Typed(so.Call("stack", [so.ListLit([A, v])], {"dim": 1}), ())),
    ]
    data = so.data_for(N3, 0)
    got = program.numpy(N3, data, 0.5)
    assert got["w1"].tolist() == data["x"][1:6].tolist()
    assert got["w4"].tolist() == data["v"][data["g"]].tolist()
    assert np.array_equal(got["w5"][:, 1], np.broadcast_to(data["v"], (7, 3)))


def test_a_size_mismatch_of_arithmetic_is_refused_by_binding_not_torch(float64):
    out = so.outcome("  w1 = S + u", N3)
    assert "located" in out and not out["torch"], out
    assert "size mismatch between the operands of '+' [K, K] and [M]" in out["located"]


# ---- the classes the sweep found, each by its smallest program (fixed; new ones: xfails) --

# (id, body, sizes); a new finding goes here as a strict xfail until it is fixed
FITS = [  # the checker's shape is the run's, or BDL refuses with its own words
    ("slice-end-past-the-dim", "  w1 = u[1:K + 1]", EQ),
    ("slice-start-past-the-dim", "  w1 = u[K:]", {"N": 4, "K": 6, "M": 5}),
    ("where-of-unequal-sizes", "  w1 = where(S > 0.0, S, u)", N3),
    ("where-at-equal-sizes", "  w1 = where(S > 0.0, S, u)", EQ),
    ("matmul-function-of-unequal-sizes", "  w1 = matmul(B, A)", N3),
    ("matmul-function-at-equal-sizes", "  w1 = matmul(B, A)", EQ),
    ("cat-of-unequal-other-dims", "  w1 = cat([A, C])", N3),
    ("cat-at-equal-sizes", "  w1 = cat([A, C])", EQ),
    ("cat-from-the-right-of-unequal-ranks", "  w1 = cat([S, v], dim=-2)", N3),
    ("cat-from-the-right-at-equal-sizes", "  w1 = cat([S, v], dim=-2)", EQ),
    ("diag-pre-multiply-of-a-vector-of-the-columns", "  w1 = diag_pre_multiply(u, B)", N3),
    ("diag-pre-multiply-at-equal-sizes", "  w1 = diag_pre_multiply(u, B)", EQ),
    ("diag-post-multiply-of-a-vector-of-the-rows", "  w1 = diag_post_multiply(B, v)", N3),
    ("quad-form-diag-of-a-matrix-not-square", "  w1 = quad_form_diag(B, v)", N3),
    ("clamp-of-a-list-literal", "  w1 = clamp([v, v], min=0.0)", N3),
    ("clamp-of-a-list-literal-of-ints", "  w1 = clamp([g, g], min=1)", N3),
    ("softmax-of-an-int", "  w1 = softmax(arange(N))", N3),
    ("int-data-at-real", "  w1 = g @ A", N3),
]
REFUSED = [  # provably different sizes: a check error, as for '+' and '@'
    ("where-of-provably-different-sizes", "  w1 = where(x > 0.0, x, ones(N + 1))", N3),
    ("matmul-function-of-provably-different-sizes", "  w1 = matmul(v, ones(K + 1))", N3),
    ("matmul-function-of-a-number", "  w1 = matmul(2.0, A)", N3),
    ("cat-of-provably-different-other-dims", "  w1 = cat([S, ones(K, K + 1)])", N3),
    ("diag-pre-multiply-of-a-matrix", "  w1 = diag_pre_multiply(eye(K), S)", N3),
    ("diag-pre-multiply-of-provably-different-sizes",
     "  w1 = diag_pre_multiply(ones(K + 1), S)", N3),
]


@pytest.mark.parametrize("body,sizes", [pytest.param(*c[1:], id=c[0]) for c in FITS])
def test_a_found_program_is_sized_as_it_runs_or_refused(body, sizes, float64):
    out = so.outcome(body, sizes)
    refused = "refused" in out or ("located" in out and not out["torch"])
    assert refused or ("checker" in out and out["checker"] == out["run"]), out


@pytest.mark.parametrize("body,sizes", [pytest.param(*c[1:], id=c[0]) for c in REFUSED])
def test_a_found_program_is_refused_at_check(body, sizes, float64):
    assert "refused" in so.outcome(body, sizes)


def test_a_short_slice_is_not_broadcast_silently_into_a_density(float64):
    import torch

    import ppl
    model = ppl.compile("model T(u: real[M], y: real[K]) {\n  mu ~ Normal(0, 1)\n"
                        "  y ~ Normal(u[1:K + 1] + mu, 1)\n}\n")
    # u[1:3] of u = [5, 0] is [0]: Normal(0, 1) for both y's, -2.757 with mu's prior
    with pytest.raises(ppl.BdlError, match=r"size mismatch between dimension 0 of 'u' and "
                       r"the end of the slice u\[1:K \+ 1\]: M = 2 but must be at least "
                       r"K \+ 1 = 3 \(sizes from the data\)"):
        model.log_density({"mu": torch.tensor(0.0)}, {"u": [5.0, 0.0], "y": [0.0, 0.0]})
    # at M = 3 the slice fits: Normal(u[1:3] + 0, 1) at y = [0, 0] with u = [5, 0, 1]
    got = model.log_density({"mu": torch.tensor(0.0)},
                            {"u": [5.0, 0.0, 1.0], "y": [0.0, 0.0]})
    half_log_2pi = 0.5 * np.log(2 * np.pi)
    assert float(got) == pytest.approx(-3 * half_log_2pi - 0.5, abs=1e-9)


@pytest.mark.parametrize("body,sizes,message", [
    ("  w1 = u[1:M + 1]", N3, "the slice u[1:M + 1] ends at M + 1, past the end of "
     "dimension 0 of 'u' of size M"),
    ("  w1 = S[:, K - 1:K - 2]", N3, "the slice S[:, K - 1:K - 2] starts at K - 1, past "
     "its end K - 2"),
    ("  w1 = ones(3)[1:5]", N3, "the slice ones(3)[1:5] ends at 5, past the end of "
     "dimension 0 of size 3"),
    # binding: sizes that put the end past the dimension, or the start past the end
    ("  w1 = x[1:3]", {"N": 2, "K": 3, "M": 5}, "size mismatch between dimension 0 of 'x' "
     "and the end of the slice x[1:3]: N = 2 but must be at least 3 = 3"),
    ("  w1 = C[:, K:]", {"N": 2, "K": 3, "M": 5}, "size mismatch between the end and the "
     "start of the slice C[:, K:]: N = 2 but must be at least K = 3"),
])
def test_a_slice_past_the_end_is_refused_at_check_or_binding(body, sizes, message, float64):
    out = so.outcome(body, sizes)
    assert message in out.get("refused", out.get("located", "")), out


@pytest.mark.parametrize("body,want", [
    ("  w1 = x[1:K + 1]", (3,)), ("  w1 = x[-2:]", (2,)), ("  w1 = ones(3)[2:1]", (0,)),
    ("  w1 = C[1:, K:]", (4, 4)), ("  w1 = x[:K - 1]", (2,))])
def test_a_slice_that_fits_runs_as_the_checker_says(body, want, float64):
    out = so.outcome(body, N3)  # N = 7, K = 3, M = 5
    assert out.get("checker") == {"w1": want} and out["run"] == {"w1": want}, out


@pytest.mark.parametrize("body,want", [
    ("  w1 = matmul(A, v)", (7,)), ("  w1 = matmul(x, A)", (3,)), ("  w1 = matmul(A, B)", (7, 5)),
    ("  w1 = diag_pre_multiply(v, B)", (3, 5)), ("  w1 = diag_post_multiply(B, u)", (3, 5)),
    ("  w1 = quad_form_diag(S, v)", (3, 3))])
def test_matmul_and_diag_multiply_of_fitting_sizes_run_as_the_checker_says(body, want,
                                                                           float64):
    out = so.outcome(body, N3)  # N = 7, K = 3, M = 5
    assert out.get("checker") == {"w1": want} and out["run"] == {"w1": want}, out


@pytest.mark.parametrize("body,message", [
    # at binding (N = 7, K = 3, M = 5)
    ("  w1 = where(S > 0.0, S, u)", "size mismatch between the arguments of where [K, K] "
     "and [M]: K = 3 but M = 5 (sizes from the data)"),
    ("  w1 = matmul(B, A)", "size mismatch between the arguments of matmul [K, M] and "
     "[N, K]: M = 5 but N = 7 (sizes from the data)"),
    ("  w1 = cat([A, C])", "size mismatch between the items of cat [N, K], [M, N] (dims "
     "other than dim=0): K = 3 but N = 7 (sizes from the data)"),
    ("  w1 = cat([B * B, diag(u)], dim=1)", "size mismatch between the items of cat [K, M], "
     "[M, M] (dims other than dim=1): K = 3 but M = 5 (sizes from the data)"),
    ("  w1 = diag_pre_multiply(u, B)", "size mismatch between the length of v [M] and the "
     "rows of m [K, M] in diag_pre_multiply: M = 5 but K = 3 (sizes from the data)"),
    ("  w1 = diag_post_multiply(B, v)", "size mismatch between the length of v [K] and the "
     "columns of m [K, M] in diag_post_multiply: K = 3 but M = 5 (sizes from the data)"),
    ("  w1 = quad_form_diag(B, v)", "size mismatch between the length of v [K] and the rows "
     "and columns of m [K, M] in quad_form_diag: K = 3 but M = 5 (sizes from the data)"),
    # at check
    ("  w1 = cat([S, ones(K, K + 1)])", "size mismatch between the items of cat [K, K], "
     "[K, K + 1] (dims other than dim=0): K vs K + 1"),
    ("  w1 = diag_pre_multiply(eye(K), S)", "diag_pre_multiply takes a vector v and a matrix "
     "m (Stan's), not v [K, K] and m [K, K]"),
    ("  w1 = quad_form_diag(S, 2.0)", "quad_form_diag takes a vector v and a matrix m "
     "(Stan's), not v a number and m [K, K]"),
])
def test_where_matmul_cat_and_diag_multiply_sizes_are_refused_in_bdls_words(body, message,
                                                                            float64):
    out = so.outcome(body, N3)
    assert message in out.get("located", out.get("refused", "")), out
    assert not out.get("torch"), out


def test_clamp_of_a_list_literal_stacks_it_as_a_list_literal(float64):
    import torch

    from ppl.runtime import functions as rt
    got = rt.clamp([torch.tensor([-1.0, 2.0]), torch.tensor([3.0, -4.0])], min=0.0)
    assert got.tolist() == [[0.0, 2.0], [3.0, 0.0]]
    got = rt.clamp([torch.tensor([0, 5]), 3], min=1, max=4)  # ints stay ints, 3 broadcast
    assert got.dtype == torch.int64 and got.tolist() == [[1, 4], [3, 3]]
    out = so.outcome("  w1 = clamp([g, g], min=1)", N3)
    assert out["kinds"] == {"w1": ("int", "torch.int64")} and out["run"] == {"w1": (2, 7)}


def test_cat_from_the_right_pads_an_item_of_fewer_dims_as_append_row(float64):
    import torch

    from ppl.runtime import functions as rt
    S = torch.arange(6.0).reshape(2, 3)
    v = torch.tensor([10.0, 20.0, 30.0])
    got = rt.cat([S, v], dim=-2)  # Stan's append_row(S, v'): [3, 3]
    assert got.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [10.0, 20.0, 30.0]]
    got = rt.cat([v, S], dim=-2)
    assert got.tolist() == [[10.0, 20.0, 30.0], [0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert rt.cat([S, S], dim=-1).shape == (2, 6)  # equal ranks: torch.cat as before


@pytest.mark.parametrize("body,run", [("  w1 = x[square(g)]", (7,)),
                                      ("  w1 = v[diag(g)]", (7, 7)),
                                      ("  w1 = x[relu(g)]", (7,))])
def test_an_int_value_of_int_data_indexes(body, run, float64):
    out = so.outcome(body, N3)  # g in 0..K - 1: g^2 <= 4 < N, diag(g) in 0..K - 1
    assert out.get("run") == {"w1": run}, out


@pytest.mark.parametrize("body,kind", [
    ("  w1 = square(g)", "int"), ("  w1 = relu(g)", "int"), ("  w1 = outer(g, h)", "int"),
    ("  w1 = outer(g, v)", "real"), ("  w1 = diag(g)", "int"), ("  w1 = tril(outer(g, g))", "int"),
    ("  w1 = transpose(outer(g, h))", "int"), ("  w1 = softmax(arange(N))", "real"),
    ("  w1 = log_softmax(g)", "real"), ("  w1 = softplus(g)", "real"), ("  w1 = elu(g)", "real"),
    ("  w1 = gelu(g)", "real"), ("  w1 = (1.0 * g) @ A", "real")])
def test_the_kind_of_a_function_of_ints_is_torchs(body, kind, float64):
    out = so.outcome(body, N3)
    dtype = {"int": "torch.int64", "real": "torch.float64"}[kind]
    assert out.get("kinds") == {"w1": (kind, dtype)}, out


@pytest.mark.parametrize("body,message", [
    ("  w1 = g @ A", "'@' multiplies real matrices and vectors, not an int value"),
    ("  w1 = matmul(A, g[:K])", "matmul multiplies real matrices and vectors, not an int value"),
    ("  w1 = (x > 0.0) @ A", "'@' multiplies real matrices and vectors, not a bool value"),
])
def test_a_matrix_product_of_ints_is_refused_at_check(body, message, float64):
    out = so.outcome(body, N3)
    assert message in out.get("refused", ""), out


# inside a plate: where's arguments, cat's items (dims other than the joined one) and
# diag_pre_multiply's vector and matrix meet as each element's values do (Stan's loop)
@pytest.mark.parametrize("call,where,message", [
    ("where(x[n] > 0.0, v, u)", "located", "size mismatch between the arguments of where "
     "[N, K] and [M]: K = 3 but M = 5 (sizes from the data)"),
    ("where(A[n] > 0.0, A[n], ones(K + 1))", "refused", "size mismatch between the "
     "arguments of where [N, K] and [K + 1]: K vs K + 1"),
    ("cat([S * x[n], B])", "located", "size mismatch between the items of cat [N, K, K], "
     "[N, K, M] (dims other than the one joined): K = 3 but M = 5"),
    ("cat([S * x[n], transpose(B)], dim=-1)", "located", "K = 3 but M = 5"),
    ("cat([S * x[n], ones(2, K + 1)])", "refused", "size mismatch between the items of cat "
     "[N, K, K], [N, 2, K + 1] (dims other than the one joined): K vs K + 1"),
    ("cat([S, B]) * x[n]", "located", "size mismatch between the items of cat [K, K], "
     "[K, M] (dims other than dim=0): K = 3 but M = 5"),
    ("diag_pre_multiply(u, B) * x[n]", "located", "size mismatch between the length of v [M] "
     "and the rows of m [K, M] in diag_pre_multiply: M = 5 but K = 3"),
    ("diag_post_multiply(B, v) * x[n]", "located", "the length of v [K] and the columns of m "
     "[K, M] in diag_post_multiply: K = 3 but M = 5"),
    ("quad_form_diag(S, ones(K + 1)) * x[n]", "refused", "the length of v [K + 1] and the "
     "rows and columns of m [K, K] in quad_form_diag"),
    ("clamp(A[n], max=u)", "located", "size mismatch between the arguments of clamp [N, K] "
     "and [M]: K = 3 but M = 5"),
])
def test_sizes_in_a_plate_are_checked_as_outside_it(call, where, message, float64):
    out = so.outcome(f"  plate n in N {{\n    w1 = {call}\n  }}", N3)
    assert message in out.get(where, ""), out


def test_fitting_sizes_in_a_plate_give_each_elements_density(float64):
    import torch

    import ppl
    model = ppl.compile(
        "model T(x: real[N], v: real[K], u: real[M], S: real[K, K], B: real[K, M], "
        "y: real[N]) {\n  mu ~ Normal(0, 1)\n  plate n in N {\n"
        "    w = sum(where(x[n] > 0.0, v, u)) + sum(cat([S * x[n], B]))"
        " + sum(diag_pre_multiply(v, B))\n    y ~ Normal(w + mu, 1)\n  }\n}\n")
    rng = np.random.default_rng(3)
    d = {"x": [0.5, -1.0, 2.0], "v": rng.normal(size=2), "u": rng.normal(size=2),
         "S": rng.normal(size=(2, 2)), "B": rng.normal(size=(2, 2)), "y": [0.1, -0.3, 1.2]}
    got = model.log_density({"mu": torch.tensor(0.25)}, {k: np.asarray(v).tolist()
                                                        for k, v in d.items()})
    want = -0.5 * 0.25 ** 2 - 0.5 * np.log(2 * np.pi)
    for xn, yn in zip(d["x"], d["y"], strict=True):
        w = (d["v"] if xn > 0 else d["u"]).sum() + (d["S"] * xn).sum() + d["B"].sum() \
            + (d["v"][:, None] * d["B"]).sum()
        want += -0.5 * (yn - w - 0.25) ** 2 - 0.5 * np.log(2 * np.pi)
    assert float(got) == pytest.approx(want, abs=1e-9)
    # at K = 2, M = 3 the same model is refused at binding, not torch's broadcast error
    d3 = dict(d, u=[0.0, 1.0, 2.0], B=np.ones((2, 3)))
    with pytest.raises(ppl.BdlError, match=r"the arguments of where \[N, K\] and \[M\]: "
                       r"K = 2 but M = 3"):
        model.log_density({"mu": torch.tensor(0.25)}, {k: np.asarray(v).tolist()
                                                      for k, v in d3.items()})


@pytest.mark.parametrize("name", ["x", "A", "B", "C"])
def test_slices_of_size_differences_agree_or_are_refused_at_binding(name, float64):
    """Every slice of so.signed_slices along each dim of the data: those whose ends are
    >= 0 at the three size sets agree with numpy (Stan's reading), those negative at one
    (K - 4 at K = 3, 3 - K at K = 4) are refused at binding, not read from the end."""
    statuses = []
    for program, fits in so.signed_slice_programs(name):
        result = so.compare(program, 0)
        statuses.append(result["status"])
        assert result["status"] == ("agree" if fits else "refused_run"), \
            _report(name, program, result)
    assert statuses.count("agree") == statuses.count("refused_run") / 2 > 0, statuses


@pytest.mark.parametrize("body,where,want", [
    ("  w1 = clamp(z, max=v)", "checker", {"w1": (3,)}),  # was () beside torch's [3]
    ("  w1 = clamp(v, max=A)", "checker", {"w1": (7, 3)}),  # was (3,)
    ("  w1 = clamp(v, max=u)", "located", "size mismatch between the arguments of clamp [K] "
     "and [M]: K = 3 but M = 5"),
    ("  w1 = clamp(v, min=ones(K + 1))", "refused", "size mismatch between the arguments of "
     "clamp [K] and [K + 1]: K vs K + 1"),
])
def test_clamps_tensor_bounds_broadcast_with_x_as_wheres_arguments(body, where, want, float64):
    out = so.outcome(body, N3)
    if where == "checker":
        assert out.get("checker") == want and out["run"] == want, out
    else:
        assert want in out.get(where, ""), out
