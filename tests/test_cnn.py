"""The ``cnn`` network value: shapes, checker errors, network priors on its weights (fan-in
C_in * k * k), GP matching on images, and SGHMC/MAP fits on 8x8 digits that beat chance."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine

# the autouse fixture keeps fitted priors in a per-test cache dir; the log densities are
# the same N and IG formulas the MLP tests check against
from test_network_priors import _cache, _ig_lp, _normal_lp  # noqa: F401

import ppl
from ppl.runtime import network_priors as npr
from ppl.runtime.kernels import RBF
from ppl.runtime.nn import CNN
from ppl.syntax.diagnostics import BdlError

ROOT = Path(__file__).resolve().parent.parent
F = torch.nn.functional



def _reference_forward(x, ws, pool):
    """The fan-in-scaled CNN written out layer by layer, one weight draw."""
    h = x
    for i in range(len(ws) // 2 - 1):
        w, b = ws[f"f.W{i}"], ws[f"f.b{i}"]
        fan_in = w.shape[1] * w.shape[2] * w.shape[3]
        h = torch.relu(F.conv2d(h, w, padding=w.shape[-1] // 2) / math.sqrt(fan_in)
                       + b[:, None, None])
        if pool > 1:
            h = F.max_pool2d(h, pool)
    h = h.flatten(1)
    last = len(ws) // 2 - 1
    return h @ ws[f"f.W{last}"].T / math.sqrt(h.shape[1]) + ws[f"f.b{last}"]


# ---- the point-estimate network ---------------------------------------------------------
def test_cnn_module_shapes_and_input_check():
    torch.manual_seed(0)
    net = CNN([2, 8, 6], [3, 5], 4, kernel_size=3, act="relu", pool=2)
    assert [m.weight.shape for m in net.features if isinstance(m, torch.nn.Conv2d)] == [
        (3, 2, 3, 3), (5, 3, 3, 3)]
    assert net.head.weight.shape == (4, 5 * 2 * 1)  # 8x6 -> 4x3 -> 2x1
    x = torch.randn(7, 2, 8, 6)
    assert net(x).shape == (7, 4)
    # leading dimensions are kept, and each image is mapped on its own
    xs = torch.randn(3, 7, 2, 8, 6)
    assert torch.allclose(net(xs)[1], net(xs[1]), atol=1e-6)
    with pytest.raises(ValueError, match=r"expects inputs \[\.\.\., 2, 8, 6\]"):
        net(torch.randn(7, 1, 8, 6))
    with pytest.raises(ValueError, match="odd"):
        CNN([1, 8, 8], [4], 2, kernel_size=2)
    with pytest.raises(ValueError, match="leaves no pixels"):
        CNN([1, 4, 4], [2, 2, 2], 2, pool=2)


# ---- the checker --------------------------------------------------------------------------
_MODEL = """model C(x: real[N, 1, 8, 8], y: int[N]) {{
  f = {net}
  y ~ Categorical(logits={call})
}}
"""


def _compile(net="cnn([1, 8, 8], [4, 8], 10, act=relu)", call="f(x)"):
    return ppl.compile(_MODEL.format(net=net, call=call))


def _error(**kw) -> BdlError:
    with pytest.raises(BdlError) as info:
        _compile(**kw)
    return info.value


def test_checker_types_cnn_call():
    m = _compile()
    assert "rt.nn.CNN, [1, 8, 8], [4, 8], 10, act='relu')" in m.compiled.python
    # keyword spelling and size names bind like mlp's
    src = ("model C(x: real[N, C, H, W], y: int[N]) {\n"
           "  f = cnn(in_shape=[C, H, W], channels=[4], out_dim=10, kernel_size=5, pool=2)\n"
           "  y ~ Categorical(logits=f(x))\n}\n")
    ppl.compile(src)
    # the result is [N, out]: indexing the class dimension gives [N]
    ppl.compile(_MODEL.format(net="cnn([1, 8, 8], [4], 2)", call="f(x)")
                .replace("Categorical(logits=f(x))", "Bernoulli(logits=f(x)[:, 0])")
                .replace("int[N]", "bool[N]"))


@pytest.mark.parametrize("net,call,message,line,col", [
    ("cnn([1, 8, 8], [4], 10)", "f(x[:, :, 0])",
     r"network 'f' takes images \[\.\.\., 1, 8, 8\] but gets \[N, 1, 8\]", 3, 28),
    ("cnn([3, 8, 8], [4], 10)", "f(x)",
     r"network 'f' takes images \[\.\.\., 3, 8, 8\] but gets \[N, 1, 8, 8\]", 3, 28),
    ("cnn([1, 8, 8], [4], 10)", "f(x[0, 0])", r"takes images .* but gets \[8, 8\]", 3, 28),
    ("cnn([1, 8], [4], 10)", "f(x)", r"'in_shape' of cnn must be a list of three sizes", 2, 11),
    ("cnn([1, 8, 8], [4], 10, kernel_size=4)", "f(x)",
     r"'kernel_size' of cnn must be a positive odd integer", 2, 43),
    ("cnn([1, 8, 8], [4, 0.5], 10)", "f(x)",
     r"channel counts of cnn must be positive integers, got 0.5", 2, 26),
    ("cnn([1, 8, 8], [4, 0], 10)", "f(x)",
     r"channel counts of cnn must be positive integers, got 0", 2, 26),
    ("cnn([1, 8, 8], [4], 10, act=sin)", "f(x)", r"argument 'act' of cnn must be one of", 2, 35),
    # one error for a misspelt activation (not also "'relux' is not defined")
    ("cnn([1, 8, 8], [4], 10, act=relux)", "f(x)", r"argument 'act' of cnn must be one of", 2, 35),
    ("cnn([1, 8, 8], [4, 4, 4, 4], 10, pool=2)", "f(x)",
     r"4 max-poolings by 2 leave no pixels of 8x8 images", 2, 22),
])
def test_checker_errors_are_located(net, call, message, line, col):
    err = _error(net=net, call=call)
    assert len(err.diagnostics) == 1, err.render()
    d = err.diagnostics[0]
    assert (d.span.line, d.span.col) == (line, col), err.render()
    assert re.search(message, d.message), d.message


# ---- network priors on a CNN -------------------------------------------------------------
def _trace(prior, *args, **kwargs):
    """One prior draw of the CNN 2x6x6 -> conv 3 -> pool -> conv 4 -> pool -> 5."""
    torch.manual_seed(0)
    pyro.set_rng_seed(3)
    net = CNN([2, 6, 6], [3, 4], 5, act="relu", pool=2)
    return poutine.trace(lambda: prior("f", net, *args, **kwargs)).get_trace()


def test_gaussian_prior_sites_density_and_fan_in_forward():
    tr = _trace(npr.gaussian_prior, 0.7)
    ws = {n: tr.nodes[n]["value"] for n in tr.nodes if n.startswith("f.")}
    assert {n: tuple(w.shape) for n, w in ws.items()} == {
        "f.W0": (3, 2, 3, 3), "f.b0": (3,), "f.W1": (4, 3, 3, 3), "f.b1": (4,),
        "f.W2": (5, 4 * 1 * 1), "f.b2": (5,)}
    assert tr.log_prob_sum().item() == pytest.approx(
        sum(_normal_lp(w, 0.7) for w in ws.values()), rel=1e-6)
    f = tr.nodes["_RETURN"]["value"]
    x = torch.randn(4, 2, 6, 6)
    assert torch.allclose(f(x), _reference_forward(x, ws, pool=2), atol=1e-5)
    with pytest.raises(ValueError, match="expects inputs"):
        f(torch.randn(4, 36))


def test_fan_in_scaling_gives_width_free_preactivation_variance():
    """First-layer pre-activation at a pixel: sum_j W_j x_j / sqrt(C_in k^2) + b with
    W, b ~ N(0, s^2) has variance s^2 (||patch||^2 / (C_in k^2) + 1) whatever C_in is."""
    s, n = 1.3, 20000
    for c_in in (1, 6):
        arch = npr.ConvArch((c_in, 3, 3), (c_in, 1), 1, 3, 1)
        psi = {"rho_W": torch.full((2,), math.log(math.expm1(s))),
               "rho_b": torch.full((2,), math.log(math.expm1(s)))}
        g = torch.Generator().manual_seed(c_in)
        (w0, b0), _ = npr.prior_weights(psi, "gaussian", arch, n, g)
        x = torch.rand(c_in, 3, 3, generator=g) + 0.5
        pre = (w0[:, 0] * x).sum((-1, -2, -3)) / math.sqrt(c_in * 9) + b0[:, 0]
        expect = s * s * (float(x.pow(2).sum()) / (c_in * 9) + 1)
        # sample variance of n normals: relative s.e. sqrt(2 / n) = 1%
        assert float(pre.var()) == pytest.approx(expect, rel=0.04)


def _weight_lp(tr, sd_of) -> float:
    """sum over the weight sites of log N(w; 0, sd_of(site name)^2)."""
    return sum(_normal_lp(node["value"], sd_of(name)) for name, node in tr.nodes.items()
               if name[2:3] in ("W", "b"))


def test_hierarchical_and_scale_mixture_priors_on_cnn():
    a, b = 2.0, 1.5
    tr = _trace(npr.hierarchical_prior, a, b)
    var = {f"f.{k}{i}": tr.nodes[f"f.v{k}{i}"] for i in range(3) for k in "Wb"}
    assert all(node["infer"]["bdl_gibbs"]["targets"] == [w] for w, node in var.items())
    expect = sum(_ig_lp(node["value"], a, b) for node in var.values())
    expect += _weight_lp(tr, lambda w: var[w]["value"].sqrt())
    assert tr.log_prob_sum().item() == pytest.approx(expect, rel=1e-6)

    tr = _trace(npr.scale_mixture_prior, 3.0, 2.0)
    v = tr.nodes["f.v"]["value"]
    assert tr.nodes["f.v"]["infer"]["bdl_gibbs"]["targets"] == ["f.W2", "f.b2"]
    expect = _ig_lp(v, 3.0, 2.0) + _weight_lp(tr, lambda w: v.sqrt() if w[-1] == "2" else 1.0)
    assert tr.log_prob_sum().item() == pytest.approx(expect, rel=1e-6)


def test_batched_draws_match_one_at_a_time():
    arch = npr.ConvArch((2, 5, 5), (2, 3, 2), 3, 3, 1)
    psi = npr._init_psi(3, "gaussian", torch.float32, "cpu")
    g = torch.Generator().manual_seed(0)
    weights = npr.prior_weights(psi, "gaussian", arch, 6, g)
    x = torch.randn(4, 2, 5, 5, generator=g)
    out = npr.forward(x, weights, torch.relu, arch)
    assert out.shape == (6, 4, 3)
    for d in range(6):
        one = {f"f.{k}{i}": wb[j][d] for i, wb in enumerate(weights) for j, k in
               enumerate("Wb")}
        assert torch.allclose(out[d], _reference_forward(x, one, pool=1), atol=1e-5)
    # draw dimensions [2, 3] are kept in front
    w23 = [(w.reshape(2, 3, *w.shape[1:]), b.reshape(2, 3, -1)) for w, b in weights]
    assert torch.allclose(npr.forward(x, w23, torch.relu, arch).reshape(6, 4, 3), out,
                          atol=1e-6)


def _digits(n):
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images[:n] / 16.0, dtype=torch.float32)[:, None]
    return x, d


def test_gp_prior_on_cnn_matches_towards_gp_variance():
    """GPiG on images: the kernel sees flattened pixels; the matched first-layer and output
    scales raise the function variance at the measurement points from FG's ~1.8 towards
    the GP's 9."""
    x, _ = _digits(100)
    net = CNN([1, 8, 8], [4], 1, act="relu", pool=2)
    k = RBF(lengthscale=4.0, variance=9.0)
    kw = dict(steps=25, samples=32, points=20, critic_steps=3, critic_init_steps=30, lr=0.1)

    def model():
        return npr.gp_prior("f", net, k, x, **kw)
    pyro.set_rng_seed(0)
    tr = poutine.trace(model).get_trace()
    arch, _, _ = npr.structure(net)
    fit = npr.fitted_psi(arch, "relu", k, x, family="gaussian", measure="data", seed=0, **kw)
    psi = fit["psi"]
    sp = F.softplus
    expect = sum(_normal_lp(tr.nodes[f"f.W{i}"]["value"], sp(psi["rho_W"][i]))
                 + _normal_lp(tr.nodes[f"f.b{i}"]["value"], sp(psi["rho_b"][i]))
                 for i in range(2))
    assert tr.log_prob_sum().item() == pytest.approx(expect, rel=1e-5)
    assert tr.nodes["f.W0"]["value"].shape == (4, 1, 3, 3)

    g = torch.Generator().manual_seed(5)
    xm = npr.measurement_set(x.reshape(100, -1), 20, "data", g).reshape(-1, 1, 8, 8)

    def fn_var(p):
        with torch.no_grad():
            f = npr.forward(xm, npr.prior_weights(p, "gaussian", arch, 4000, g), torch.relu,
                            arch)[..., 0]
        return float(f.var(0).mean())
    var0 = fn_var({k_: v[0] for k_, v in fit["psi_trace"].items()})
    var1 = fn_var(psi)
    assert 1.2 < var0 < 2.5
    # halfway there at least (9 - var1 < (9 - var0) / 2), and no overshoot
    assert 9.0 - var1 < 0.5 * (9.0 - var0)
    assert var1 < 12.0


_GP = ("gp_prior(rbf(lengthscale=4, variance=1), inputs=x, steps=3, samples=16, points=10, "
       "critic_init_steps=5, critic_steps=2)")


@pytest.mark.parametrize("prior,variances", [
    ("gaussian_prior(1)", []),
    ("hierarchical_prior(2, 2)", ["f.vW0", "f.vb0", "f.vW1", "f.vb1"]),
    ("scale_mixture_prior(2, 2)", ["f.v"]),
    (_GP, []),
    (_GP.replace("inputs=x,", "inputs=x, family=\"hierarchical\","),
     ["f.vW0", "f.vb0", "f.vW1", "f.vb1"]),
])
def test_every_prior_family_compiles_samples_and_fits_by_svi(prior, variances):
    src = f"""model C(x: real[N, 1, 8, 8], y: int[N]) {{
  f = cnn([1, 8, 8], [4], 10, act=relu, pool=2)
  f ~ {prior}
  y ~ Categorical(logits=f(x))
}}
infer svi(steps=30, lr=0.02, samples=20)
"""
    x, d = _digits(40)
    data = {"x": x.tolist(), "y": d.target[:40].tolist()}
    m = ppl.compile(src)
    draws = m.sample_prior(data, num_samples=2)
    shapes = {k: tuple(v.shape) for k, v in draws.items() if k.startswith("f.")}
    assert shapes == {"f.W0": (2, 4, 1, 3, 3), "f.b0": (2, 4), "f.W1": (2, 10, 4 * 4 * 4),
                      "f.b1": (2, 10), **{v: (2,) for v in variances}}
    fit = m.fit(data)
    assert len(fit.elbo) == 30 and all(math.isfinite(e) for e in fit.elbo)
    assert fit.samples["f.W0"].shape[1:] == (4, 1, 3, 3)


# ---- end to end ------------------------------------------------------------------------------
def _example():
    m = ppl.load(ROOT / "examples" / "bnn_cnn_digits.bdl")
    data = json.loads((ROOT / "examples" / "bnn_cnn_digits.data.json").read_text())
    from sklearn.datasets import load_digits
    labels = load_digits().target[np.random.default_rng(0).permutation(1797)[150:200]]
    return m, data, labels


def test_sghmc_fit_of_example_beats_chance():
    m, data, labels = _example()
    assert len(data["x"]) == 150 and len(data["x_new"]) == 50
    # the example's own 2 chains (one batched step moves both): a single 300-step chain
    # is too seed-dependent to test (accuracy 0.30-0.68 over seeds 0-5)
    fit = m.fit(data, chains=2)
    logits = fit.chains["logits_new"]
    assert logits.shape == (2, 20, 50, 10)
    assert {"f.W0", "f.W1", "f.W2"} <= set(fit.chains)
    assert fit.chains["f.W0"].shape == (2, 20, 8, 1, 3, 3)
    p = torch.softmax(logits, -1).mean((0, 1))
    acc = float((p.argmax(-1).numpy() == labels).mean())
    # chance is 0.1 (s.e. 0.042 over 50 images); measured 0.54-0.70 over seeds 0-5
    assert acc > 0.45, acc
    # the predictive is wide (150 images, N(0, 1) weights): measured -2.02 to -1.86 over
    # seeds 0-5, against log(0.1) = -2.30 for a uniform guess
    ll = float(torch.log(p[torch.arange(50), torch.as_tensor(labels)]).mean())
    assert ll > math.log(0.1) + 0.2, ll


def test_map_fit_of_point_estimate_cnn_learns():
    src = """model C(x: real[N, 1, 8, 8], y: int[N], x_new: real[M, 1, 8, 8]) {
  f = cnn([1, 8, 8], [8], 10, act=relu, pool=2)
  y ~ Categorical(logits=f(x))
  logits_new = f(x_new)
}
infer map(steps=150, lr=0.02)
"""
    _, data, labels = _example()
    fit = ppl.compile(src).fit({k: data[k] for k in ("x", "y", "x_new")})
    logits = fit.samples["logits_new"].reshape(-1, 50, 10)[-1]
    acc = float((logits.argmax(-1).numpy() == labels).mean())
    assert acc > 0.6, acc


@pytest.mark.parametrize("hidden, got", [("0", "0"), ("[4, -2]", "-2"), ("[4, 2.5]", "2.5")])
def test_mlp_hidden_sizes_must_be_positive_integers(hidden, got):
    # mlp(1, 0, 1) checked, then fitted a constant network (its last bias)
    src = ("model L(x: real[N, 1], y: real[N]) {\n"
           f"  g = mlp(1, {hidden}, 1, act=tanhh)\n  y ~ Normal(g(x)[:, 0], 0.1)\n}}\n")
    with pytest.raises(ppl.BdlError) as e:
        ppl.compile(src, "m.bdl")
    first, act = e.value.diagnostics
    assert first.message == f"hidden layer sizes of mlp must be positive integers, got {got}"
    assert act.message.startswith("argument 'act' of mlp must be one of") and act.notes == [
        "did you mean 'tanh'?"]
