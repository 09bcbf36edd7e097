"""``scan(f, init, xs)``, recursions (docs/language.md, "Recursions"): GARCH(1,1), a
stochastic-volatility AR(1) path and an HMM forward pass, each against a hand recursion
or brute force, the checker's located errors, the generated code and a tiny NUTS fit."""

from __future__ import annotations

import itertools
import math
import re

import pytest
import torch
from pyro import poutine

import ppl
from ppl.runtime import scan
from ppl.runtime.errors import ArgumentError

GARCH = """
model GARCH(y: real[T], sigma1: real<lower=0>) {
  mu ~ Normal(0, 1)
  a0: real<lower=0> ~ HalfNormal(1)
  a1: real<lower=0, upper=1> ~ Uniform(0, 1)
  b1: real<lower=0, upper=1> ~ Uniform(0, 1)
  sigma2 = scan((s2, r) => a0 + a1 * (r - mu) ^ 2 + b1 * s2, sigma1 ^ 2, y[:-1])
  y ~ Normal(mu, sqrt(sigma2))
}
"""

SV = """
model SV(y: real[T]) {
  mu ~ Normal(0, 1)
  phi: real<lower=-1, upper=1> ~ Uniform(-1, 1)
  s: real<lower=0> ~ HalfNormal(1)
  h0 ~ Normal(mu, 1)
  eps: real[T] ~ Normal(0, 1)
  h = scan((h, e) => mu + phi * (h - mu) + s * e, h0, eps)
  y ~ Normal(0, exp(h[1:] / 2))
}
"""

HMM = """
model HMM(y: real[T], logA: real[K, K], logpi: real[K]) {
  m: real[K] ~ Normal(0, 3)
  alpha = scan((a, r) => logsumexp(a + transpose(logA)) + log_prob(Normal(m, 1), r),
               logpi + log_prob(Normal(m, 1), y[0]), y[1:])
  factor(logsumexp(alpha[-1]))
}
"""


def _garch_series(T: int = 30, seed: int = 0):
    """A GARCH(1,1) series (mu 0.1, a0 0.2, a1 0.3, b1 0.5) from sigma1 = 1."""
    g = torch.Generator().manual_seed(seed)
    s2, y = 1.0, []
    for _ in range(T):
        r = 0.1 + math.sqrt(s2) * float(torch.randn((), generator=g))
        y.append(r)
        s2 = 0.2 + 0.3 * (r - 0.1) ** 2 + 0.5 * s2
    return torch.tensor(y, dtype=torch.float64)


# ---- the runtime -----------------------------------------------------------------------
def test_carries_start_with_init_and_have_one_row_per_step_more_than_xs():
    out = scan(lambda c, x: 2 * c + x, 1.0, torch.tensor([1.0, 0.0, -3.0]))
    assert out.tolist() == [1.0, 3.0, 6.0, 9.0]  # [init, f(init, x0), ...]: [T + 1]
    vec = scan(lambda c, x: c + x, torch.zeros(2), torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert vec.tolist() == [[0.0, 0.0], [1.0, 2.0], [4.0, 6.0]]
    assert scan(lambda c, x: c + x, 5.0, torch.zeros(0)).tolist() == [5.0]  # no step: init


def test_a_number_init_follows_the_dtype_of_xs_and_gradients_flow():
    xs = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    rho = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    out = scan(lambda c, x: rho * c + x, 0.0, xs)
    assert out.dtype == torch.float64 and out.shape == (4,)
    out[-1].backward()  # c3 = rho^2 x0 + rho x1 + x2: d/drho = 2 rho x0 + x1
    assert rho.grad.item() == pytest.approx(2 * 0.8 * 0.5 - 1.0)


def test_a_body_of_fewer_dims_is_broadcast_to_the_carry():
    out = scan(lambda c, x: x, torch.zeros(3), torch.tensor([1.0, 2.0]))
    assert out.tolist() == [[0.0] * 3, [1.0] * 3, [2.0] * 3]


def test_xs_must_be_a_sequence_and_f_a_function():
    with pytest.raises(ArgumentError, match="single number"):
        scan(lambda c, x: c + x, 0.0, 2.0)
    with pytest.raises(ArgumentError, match="must be a function"):
        scan(2.0, 0.0, torch.zeros(3))


# ---- models ---------------------------------------------------------------------------
def test_garch_log_density_equals_a_hand_loop():
    y = _garch_series()
    m = ppl.compile(GARCH)
    mu, a0, a1, b1 = 0.1, 0.2, 0.3, 0.5
    got = m.log_density({"mu": mu, "a0": a0, "a1": a1, "b1": b1},
                        {"y": y.tolist(), "sigma1": 1.0})
    s2, want = 1.0, 0.0
    for t in range(len(y)):
        if t > 0:
            s2 = a0 + a1 * (float(y[t - 1]) - mu) ** 2 + b1 * s2
        want += -0.5 * math.log(2 * math.pi * s2) - (float(y[t]) - mu) ** 2 / (2 * s2)
    want += -0.5 * math.log(2 * math.pi) - mu ** 2 / 2  # mu ~ Normal(0, 1)
    want += 0.5 * math.log(2 / math.pi) - a0 ** 2 / 2  # a0 ~ HalfNormal(1); Uniform(0, 1): 0
    assert float(got) == pytest.approx(want, rel=1e-6)  # float32
    assert "rt.scan(lambda s2, r: a0 + a1 * (r - mu) ** 2 + b1 * s2, sigma1 ** 2, y[:-1])" \
        in m.source


def test_stochastic_volatility_path_matches_a_hand_recursion():
    g = torch.Generator().manual_seed(1)
    T = 6
    eps = torch.randn(T, generator=g)
    mu, phi, s, h0 = -0.5, 0.9, 0.3, 0.2
    m = ppl.compile(SV)
    values = {"mu": mu, "phi": phi, "s": s, "h0": h0, "eps": eps}
    data = m.bind({"y": torch.randn(T, generator=g).tolist()})
    cond = {k: torch.as_tensor(v, dtype=torch.get_default_dtype()) for k, v in values.items()}
    tr = poutine.trace(poutine.condition(m.pyro_model, cond)).get_trace(**data)
    h = [h0]
    for e in eps.tolist():
        h.append(mu + phi * (h[-1] - mu) + s * e)
    assert tr.nodes["h"]["value"].tolist() == pytest.approx(h, abs=1e-6)
    want = sum(-0.5 * math.log(2 * math.pi) - hi / 2 - yi ** 2 / (2 * math.exp(hi))
               for hi, yi in zip(h[1:], data["y"].tolist(), strict=True))
    assert float(tr.nodes["y"]["fn"].log_prob(data["y"]).sum()) == pytest.approx(want, 1e-5)


def test_hmm_forward_pass_is_the_brute_force_marginal_likelihood():
    y = [0.3, -1.2, 2.5, 1.9, -0.4]  # T = 5, two states
    A = [[0.8, 0.2], [0.3, 0.7]]
    pi, m_val = [0.6, 0.4], [-1.0, 2.0]
    model = ppl.compile(HMM)
    data = {"y": y, "logA": torch.tensor(A).log().tolist(), "logpi": torch.tensor(pi).log()
            .tolist()}
    got = float(model.log_density({"m": m_val}, data))

    def normal(x, loc):
        return math.exp(-0.5 * (x - loc) ** 2) / math.sqrt(2 * math.pi)

    like = 0.0
    for z in itertools.product(range(2), repeat=len(y)):  # all 32 state paths
        p = pi[z[0]] * normal(y[0], m_val[z[0]])
        for t in range(1, len(y)):
            p *= A[z[t - 1]][z[t]] * normal(y[t], m_val[z[t]])
        like += p
    prior = sum(-0.5 * math.log(2 * math.pi * 9) - v ** 2 / 18 for v in m_val)
    assert got == pytest.approx(math.log(like) + prior, rel=1e-5)


def test_nuts_on_a_small_garch_runs_with_finite_draws():
    y = _garch_series(30, seed=2)  # simulated with unconditional variance 0.2 / 0.2 = 1
    m = ppl.compile(GARCH)
    # 20 draws (was 40) after the same 40 warm-up steps: a shorter warm-up (20 or 30) left
    # the chain stuck at some seeds
    fit = m.fit({"y": y.tolist(), "sigma1": 1.0},
                infer="nuts(warmup=40, samples=20, chains=1)", seed=0)
    for k in ("mu", "a0", "a1", "b1", "sigma2"):
        assert torch.isfinite(fit.samples[k]).all()
    assert fit.samples["sigma2"].shape == (20, 30)
    assert int(torch.as_tensor(fit.divergences).sum()) <= 2  # 0 at this seed
    assert (fit.samples["sigma2"] > 0).all()
    assert 0.2 < float(fit.samples["sigma2"].mean()) < 2.0
    assert len(set(fit.samples["a0"].tolist())) > 10  # the chain moves (20 of 20 here)


# ---- checker ---------------------------------------------------------------------------
def _model(body: str, args: str = "y: real[T]") -> str:
    return f"model M({args}) {{\n  {body}\n}}\n"


@pytest.mark.parametrize("body, message", [
    ("s = scan((c) => c, 1.0, y)\n  z ~ Normal(sum(s), 1)",
     r"2:12: error: 'f' of scan takes a function of 2 parameters \(carry, x\), but this one "
     r"has 1"),
    ("s = scan((c, r) => c + v, 1.0, y)\n  z ~ Normal(sum(s), 1)",
     r"2:22: error: 'f' of scan must give a value of shape \[\], but this body has shape "
     r"\[K\]"),
    ("s = scan((c, r) => c + r, 1.0, y)\n  y ~ Normal(s, 1)",
     r"3:7: error: size mismatch between the distribution \[T \+ 1\] and 'y' \[T\]"),
    ("s = scan(2.0, 1.0, y)\n  z ~ Normal(sum(s), 1)",
     r"2:12: error: 'f' of scan takes a function literal, not a real value"),
    ("plate n in T {\n    s = scan((c, r) => c + r, 0.0, v)\n  }",
     r"3:9: error: scan is not allowed inside a plate"),
])
def test_located_errors(body, message):
    with pytest.raises(ppl.BdlError, match=message):
        ppl.compile(_model(body, "y: real[T], v: real[K]"), filename="m.bdl")


def test_carry_and_x_shapes_come_from_init_and_the_rows_of_xs():
    # x is one row of m [K], the carry init's [K]: the result is [N + 1, K]
    src = _model("a = scan((c, r) => c + r, zeros(K), m)\n  z: real[N + 1, K] ~ Normal(a, 1)",
                 "m: real[N, K]")
    ppl.compile(src)
    with pytest.raises(ppl.BdlError, match=r"'f' of scan must give a value of shape \[K\], "
                                           r"but this body has shape \[N, K\]"):
        ppl.compile(_model("a = scan((c, r) => c + m, zeros(K), m)\n  z ~ Normal(sum(a), 1)",
                           "m: real[N, K]"))


def test_a_named_function_is_computed_in_the_model_where_it_is_defined():
    m = ppl.compile(_model("g = (c, r) => 0.5 * c + r\n  s = scan(g, 1.0, y)\n"
                           "  y ~ Normal(s[:-1], 1)"))
    assert "transformed" not in m.source.split("def M(")[0].split("M_INFER")[1]
    assert 'pyro.deterministic("s", rt.scan(g, rt.tensor(1.0), y))' in m.source


def test_a_body_of_fewer_dims_is_broadcast_before_the_next_step_reads_it():
    # sum(c) + r for a [2] carry: each step's number is the carry [2] the next step sums
    # (the broadcast happened only at the final stacking: [[0,0],[1,1],[2,2],[3,3]])
    from ppl.runtime.scan import scan

    out = scan(lambda c, r: c.sum() + r, torch.zeros(2), torch.ones(3))
    assert out.tolist() == [[0.0, 0.0], [1.0, 1.0], [3.0, 3.0], [7.0, 7.0]]


# ---- integer xs, a single number, labels summed out (docs "Recursions") ---------------
def test_an_int_xs_gives_an_int_x_that_indexes_in_the_body():
    src = ("model M(y: real[T], idx: int[T], K: int) {\n  theta: real[K] ~ Normal(0, 1)\n"
           "  s = scan((c, i) => c + theta[i], 0.0, idx)\n  y ~ Normal(s[1:], 1)\n}\n")
    y, idx, theta = [0.5, 1.0, -0.2], [2, 0, 2], [0.1, -0.4, 1.5]
    s = [0.0]
    for i in idx:  # 1.5, 1.6, 3.1
        s.append(s[-1] + theta[i])
    want = sum(-0.5 * math.log(2 * math.pi) - v ** 2 / 2 for v in theta) + sum(
        -0.5 * math.log(2 * math.pi) - (a - b) ** 2 / 2 for a, b in zip(y, s[1:], strict=True))
    named = src.replace("s = scan((c, i) => c + theta[i], 0.0, idx)",
                        "g = (c, i) => c + theta[i]\n  s = scan(g, 0.0, idx)")
    for text in (src, named):
        got = ppl.compile(text).log_density({"theta": theta}, {"y": y, "idx": idx, "K": 3})
        assert float(got) == pytest.approx(want, rel=1e-6)
    # arange(T) is int too: the body reads y[t] (c3 = 0.5 (0.5 y0 + y1) + y2 = 0.75)
    ar = ppl.compile("model M(y: real[T]) {\n  rho ~ Normal(0, 1)\n"
                     "  s = scan((c, t) => rho * c + y[t], 0.0, arange(T))\n"
                     "  z ~ Normal(s[-1], 1)\n}\n")
    got = ar.log_density({"rho": 0.5, "z": 0.0}, {"y": [1.0, 2.0, -0.5]})
    assert float(got) == pytest.approx(-math.log(2 * math.pi) - 0.5 ** 2 / 2 - 0.75 ** 2 / 2,
                                       rel=1e-6)
    # over a real xs, x is real: an index with it is refused, at the use for a named one
    with pytest.raises(ppl.BdlError, match=r"3:32: error: an index must be an integer, not "
                                           r"a real value"):
        ppl.compile(src.replace(", idx)", ", y)"), filename="m.bdl")
    with pytest.raises(ppl.BdlError, match=r"3:27: error: an index must be an integer(.|\n)*"
                                           r"note: in function 'g', given as 'f' of scan"):
        ppl.compile(named.replace(", idx)", ", y)"), filename="m.bdl")


def _scan_logp(theta, y, picks) -> float:
    """log density of theta ~ Normal(0, 1), y ~ Normal(s[1:], 1) with s the running sums
    of theta[picks] from 0, by hand."""
    s = [0.0]
    for p in picks:
        s.append(s[-1] + theta[p])
    return sum(-0.5 * math.log(2 * math.pi) - v ** 2 / 2 for v in theta) + sum(
        -0.5 * math.log(2 * math.pi) - (a - b) ** 2 / 2 for a, b in zip(y, s[1:], strict=True))


@pytest.mark.parametrize("read, idx, picks", [
    ("theta[abs(i)]", [2, -1, 1], [2, 1, 1]),
    ("theta[clamp(i, 0, 2)]", [2, -1, 5], [2, 0, 2]),
])
def test_a_named_function_keeps_an_unknown_parameter_through_as_first_builtins(read, idx,
                                                                              picks):
    # g's i is of unknown kind until scan's use; abs(i) and clamp(i, 0, 2) made it real at
    # the definition: "an index must be an integer, not a real value", inline accepted
    src = ("model M(y: real[T], idx: int[T], K: int) {\n  theta: real[K] ~ Normal(0, 1)\n"
           f"  g = (c, i) => c + {read}\n  s = scan(g, 0.0, idx)\n  y ~ Normal(s[1:], 1)\n}}\n")
    theta, y = [0.1, -0.4, 1.5], [0.5, 1.0, -0.2]
    got = ppl.compile(src, "m.bdl").log_density({"theta": theta}, {"y": y, "idx": idx, "K": 3})
    assert float(got) == pytest.approx(_scan_logp(theta, y, picks), rel=1e-6)
    # over a real xs the same function is refused at the index, naming the use
    with pytest.raises(ppl.BdlError, match=r"3:27: error: an index must be an integer, "
                       r"not a real value(.|\n)*note: in function 'g', given as 'f' of scan"):
        ppl.compile(src.replace("scan(g, 0.0, idx)", "scan(g, 0.0, y)"), "m.bdl")


@pytest.mark.parametrize("body, bad, first", [
    ("s = scan((c, i) => c + theta[i], 0.0, idx)", [-1, 0, 1],
     "3:32: error: data 'idx' indexes a dimension of 'theta' of size K = 3 but idx[0] is -1"),
    ("s = scan((c, i) => c + theta[i + 1], 0.0, idx)", [-2, 0, 1],
     "3:32: error: data 'idx' + 1 indexes a dimension of 'theta' of size K = 3 but idx[0] + 1 "
     "is -1"),
    ("g = (c, i) => c + theta[i]\n  s = scan(g, 0.0, idx)", [0, 1, -1],
     "3:27: error: data 'idx' indexes a dimension of 'theta' of size K = 3 but idx[2] is -1"),
    ("s = scan((c, i) => c + theta[i], 0.0, sort(idx))", [1, -1, 0],
     "3:32: error: data 'idx' indexes a dimension of 'theta' of size K = 3 but idx[1] is -1"),
    ("s = scan((c, idx) => c + theta[idx], 0.0, idx)", [-1, 0, 1],  # named as the data
     "3:34: error: data 'idx' indexes a dimension of 'theta' of size K = 3 but idx[0] is -1"),
])
def test_an_index_running_over_int_data_in_scan_is_checked_when_data_bind(body, bad, first):
    # x runs over every value of idx: idx = [-1, 0, 1] read theta[-1] silently (-8.52863)
    src = ("model M(y: real[T], idx: int[T], K: int) {\n  theta: real[K] ~ Normal(0, 1)\n"
           f"  {body}\n  y ~ Normal(s[1:], 1)\n}}\n")
    m = ppl.compile(src, "m.bdl")
    with pytest.raises(ppl.BdlError) as e:
        m.bind({"y": [1.0, 2.0, 3.0], "idx": bad, "K": 3})
    assert str(e.value).split("\n")[0] == f"m.bdl:{first}: an index must be in [0, 3)"
    theta, y = [0.1, -0.4, 1.5], [1.0, 2.0, 3.0]
    got = m.log_density({"theta": theta}, {"y": y, "idx": [0, 1, 1], "K": 3})
    picks = [1, 2, 2] if "i + 1" in body else [0, 1, 1]
    assert float(got) == pytest.approx(_scan_logp(theta, y, picks), rel=1e-6)


def test_an_index_in_scan_guarded_by_where_is_not_refused():
    # where's mask may drop what torch read for -1 ("none"), as outside scan
    m = ppl.compile("model M(y: real[T], idx: int[T], K: int) {\n"
                    "  theta: real[K] ~ Normal(0, 1)\n"
                    "  s = scan((c, i) => c + where(i >= 0, theta[i], 0.0), 0.0, idx)\n"
                    "  y ~ Normal(s[1:], 1)\n}\n", "m.bdl")
    theta, y = [0.1, -0.4, 1.5], [1.0, 2.0, 3.0]
    got = m.log_density({"theta": theta}, {"y": y, "idx": [-1, 0, 2], "K": 3})
    want = _scan_logp(theta + [0.0], y, [3, 0, 2]) + 0.5 * math.log(2 * math.pi)  # no 4th
    assert float(got) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("xs", ["2.0", "y[0]", "sum(y)"])
def test_a_single_number_xs_is_refused_at_check(xs):
    src = _model(f"s = scan((c, r) => c + r, 0.0, {xs})\n  z ~ Normal(sum(s), 1)")
    with pytest.raises(ppl.BdlError, match=r"2:34: error: scan runs over the first dimension "
                                           r"of 'xs', but 'xs' is a single number(.|\n)*"
                                           rf"or \[{re.escape(xs)}\] for one step"):
        ppl.compile(src, filename="m.bdl")
    ppl.compile(_model(f"s = scan((c, r) => c + r, 0.0, [{xs}])\n  z ~ Normal(sum(s), 1)"))


def test_steps_with_batch_dims_are_stacked_right_of_them():
    # a label summed out is [2, 1]: the body's value gains those dims on the left, and the
    # carries are stacked between them and the carry's own dims (init's)
    z = torch.tensor([[0.0], [1.0]])
    out = scan(lambda c, x: 0.5 * c + z * x, 0.0, torch.tensor([2.0, 4.0]))
    assert out.shape == (2, 1, 3)
    assert out.tolist() == [[[0.0, 0.0, 0.0]], [[0.0, 2.0, 5.0]]]
    # a vector carry: the label's value meets it widened, [2, 1, 1] (rt.per_element)
    vec = scan(lambda c, x: c + z[..., None] * x, torch.zeros(2), torch.tensor([[1.0, 2.0]]))
    assert vec.shape == (2, 1, 2, 2)
    assert vec.tolist() == [[[[0.0, 0.0], [0.0, 0.0]]], [[[0.0, 0.0], [1.0, 2.0]]]]


def _summed_out(m, data: dict, fixed: dict, nesting: int) -> float:
    """log p(data, fixed) with the labels summed out (TraceEnum_ELBO, an empty guide)."""
    from pyro.infer import TraceEnum_ELBO

    from ppl.infer.discrete import enumerated

    model = enumerated(poutine.condition(m.pyro_model, data=fixed))
    return -TraceEnum_ELBO(max_plate_nesting=nesting).loss(model, lambda **kw: None,
                                                             **m.bind(data))


LABELLED = """
model M(y: real[T]) {
  p: real<lower=0, upper=1> ~ Uniform(0, 1)
  z ~ Bernoulli(p)
  s = scan((c, r) => 0.5 * c + where(z > 0.5, r, 0.0), 0.0, y)
  y ~ Normal(s[:-1], 1)
}
"""


@pytest.mark.parametrize("named", [False, True])
def test_a_body_reading_a_label_summed_out_runs_one_recursion_per_value(named):
    src = LABELLED if not named else LABELLED.replace(
        "s = scan((c, r) => 0.5 * c + where(z > 0.5, r, 0.0), 0.0, y)",
        "g = (c, r) => 0.5 * c + where(z > 0.5, r, 0.0)\n  s = scan(g, 0.0, y)")
    y = [0.5, 1.0, -0.3, 2.0]

    def like(s):
        return math.exp(sum(-0.5 * math.log(2 * math.pi) - (a - b) ** 2 / 2
                            for a, b in zip(y, s, strict=True)))

    s1 = [0.0]  # z = 1: s[t + 1] = 0.5 s[t] + y[t]; z = 0: all zeros
    for r in y[:-1]:
        s1.append(0.5 * s1[-1] + r)
    want = math.log(0.3 * like(s1) + 0.7 * like([0.0] * 4))  # -6.397505...
    got = _summed_out(ppl.compile(src), {"y": y}, {"p": torch.tensor(0.3)}, 1)
    assert got == pytest.approx(want, rel=1e-6)


def test_a_vector_carry_reading_a_categorical_label_is_the_mixture():
    src = ("model M(y: real[T], obs: real[T, D], mu: real[K, D]) {\n"
           "  z ~ Categorical(ones(K) / K)\n"
           "  s = scan((c, r) => 0.5 * c + mu[z] * r, zeros(D), y)\n"
           "  obs ~ Normal(s[1:], 1)\n}\n")
    y, mu = [0.5, 1.0, -0.3], [[0.0, 1.0], [2.0, -1.0], [0.5, 0.5]]
    obs = [[0.1, 0.2], [1.0, -1.0], [0.3, 0.4]]
    total = 0.0
    for k in range(3):
        c, lp = [0.0, 0.0], 0.0
        for t, r in enumerate(y):
            c = [0.5 * c[d] + mu[k][d] * r for d in range(2)]
            lp += sum(-0.5 * math.log(2 * math.pi) - (obs[t][d] - c[d]) ** 2 / 2
                      for d in range(2))
        total += math.exp(lp) / 3
    got = _summed_out(ppl.compile(src), {"y": y, "obs": obs, "mu": mu}, {}, 2)
    assert got == pytest.approx(math.log(total), rel=1e-6)  # -7.530281...


@pytest.mark.parametrize("init, xs, message", [
    ("mu[z]", "y", r"4:35: error: 'init' of scan reads 'z', a discrete latent summed out in "
                   r"the fit: its values lie on a dim left of init's own, which scan would "
                   r"take for a dim of the carry"),
    ("0.0", "y * z", r"4:40: error: 'xs' of scan reads 'z', a discrete latent summed out in "
                     r"the fit: its values lie on a dim left of xs's own, which scan would "
                     r"run along instead of xs's first"),
])
def test_init_or_xs_reading_a_label_summed_out_is_refused(init, xs, message):
    src = ("model M(y: real[T], mu: real[2]) {\n  p: real<lower=0, upper=1> ~ Uniform(0, 1)\n"
           f"  z ~ Bernoulli(p)\n  s = scan((c, r) => 0.5 * c + r, {init}, {xs})\n"
           "  y ~ Normal(s[:-1], 1)\n}\n")
    with pytest.raises(ppl.BdlError, match=message + r"(.|\n)*note: read 'z' in the body"):
        ppl.compile(src, filename="m.bdl")
