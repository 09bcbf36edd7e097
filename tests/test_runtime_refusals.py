"""Run-time failures found by fuzzing: failures that were internal errors (exit 3) or
unlocated, each now a located user error (exit 1) with the words checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ppl

ROOT = Path(__file__).resolve().parent.parent


def _write(tmp_path, text: str, data: dict | None = None, name: str = "m") -> tuple:
    model = tmp_path / f"{name}.bdl"
    model.write_text(text)
    out = [str(model), "--out", str(tmp_path / f"run-{name}")]
    if data is not None:
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
        out += ["--data", str(tmp_path / f"{name}.json")]
    return out


def test_empty_plate_is_a_located_data_error(tmp_path, bdl_here):
    # was ZeroDivisionError "size cannot be zero" from pyro.plate, exit 3
    args = _write(tmp_path, "model M(y: real[N]) {\n  mu ~ Normal(0, 1)\n  plate N {\n"
                            "    y ~ Normal(mu, 1)\n  }\n}\n"
                            "infer nuts(samples=3, warmup=3, chains=1)\n", {"y": []})
    r = bdl_here("run", *args)
    assert r.returncode == 1, r.stderr
    assert "m.bdl:3:3: error: plate 'N' has size 0 (N = 0 from data key 'y')\n" in r.stderr
    assert "Pyro's plates cannot be empty" in r.stderr
    assert "internal error" not in r.stderr and "looks like a bug" not in r.stderr


def test_observed_value_in_its_own_distribution_names_the_element(tmp_path, bdl_here):
    # Pyro formats the site's arguments one a line ("x", on its own): the site was not
    # found, and the support error was an internal error
    args = _write(tmp_path, "model M(x: real[N, K]) {\n  beta: real[K] ~ Normal(0, 1)\n"
                            "  plate N {\n    x ~ Bernoulli(logits=x @ beta)\n  }\n}\n"
                            "infer svi(steps=2)\n", {"x": [[0.5, 1], [0, 1], [1, 1]]})
    r = bdl_here("run", *args)
    assert r.returncode == 1, r.stderr
    assert ("m.bdl:4:5: error: 'x' element [0, 0] is 0.5; Bernoulli is over 0 or 1; "
            "declare x: int[N, K]") in r.stderr


@pytest.mark.parametrize("example, infer, said", [
    # lr=1e12: the parameters stay finite but a scale becomes 0 after the last step;
    # was a ValueError with a Trace Shapes dump, exit 3
    ("logistic_regression", "svi(steps=3, lr=1e12)",
     "infer: error: svi: the guide's parameters became NaN, infinite or too large to draw "
     "from at step 3 of 3: the optimisation diverged with lr=1e+12\n  note: lower lr (e.g. "
     "infer svi(lr=1e+11))"),
    # the guide's draw of a positive latent underflowed to 0: was "'variance' is 0;
    # Normal is over numbers > 0", blaming a value the user never gave
    ("gp_regression", "svi(steps=3, lr=1e12, samples=5)",
     "infer: error: svi: the guide's parameters became NaN, infinite or too large to draw "
     "from at step 2 of 3: the optimisation diverged with lr=1e+12"),
    # lr=100: a NaN loc in the second step's predictive was a ValueError, exit 3
    ("np_gp", "np_train(steps=5, lr=100)",
     "infer: error: np_train: the loss of network 'g' became infinite at step 2 of 5: the "
     "optimisation diverged with lr=100"),
])
def test_a_diverged_optimisation_is_a_user_error(bdl_here, tmp_path, example, infer, said):
    r = bdl_here("run", str(ROOT / "examples" / f"{example}.bdl"), "--infer", infer,
                 "--out", str(tmp_path / "run"))
    assert r.returncode == 1, r.stderr
    assert said in r.stderr
    assert "looks like a bug" not in r.stderr and "Trace Shapes" not in r.stderr


def test_a_construct_refusing_its_data_saves_no_traceback(tmp_path, bdl_here):
    # a deliberate check of the values (monotone_dbm's states) is not "a bug in bdl"
    args = _write(tmp_path, "model D(pixels: real[N, 4], label: int[N]?) {\n"
                            "  m = monotone_dbm(visible=categorical(4, 4), hidden=[categorical"
                            "(4, 4)], label=categorical(1, 3))\n  pixels ~ m.visible\n"
                            "  label ~ m.label\n}\ninfer map(steps=2)\n",
                  {"pixels": [[0.5, 1, 2, 3], [0, 1, 2, 3]]})
    r = bdl_here("run", *args)
    assert r.returncode == 1, r.stderr
    # at the pixels' statement, though the label's draw (label left out) first read them:
    # was m.bdl:4:3, the label's line
    assert (f"{args[0]}:3:3: error: monotone_dbm: visible units take whole-number states "
            "0..3 (NaN for a missing value), but the data hold 0.5") in r.stderr
    assert "looks like a bug" not in r.stderr


def test_uniform_with_low_above_high_saves_no_traceback(tmp_path, bdl_here):
    # low from the data: literals with low >= high are a check error (test_checker_refusals)
    args = _write(tmp_path, "model M(y: real[N], low: real) {\n  mu ~ Normal(0, 1)\n"
                            "  y ~ Uniform(low, 1)\n}\ninfer map(steps=2)\n",
                  {"y": [1.5], "low": 2.5})
    r = bdl_here("run", *args)
    assert r.returncode == 1, r.stderr
    assert "m.bdl:3:15: error: Uniform's low is 2.5; it must be numbers < 1" in r.stderr
    assert "looks like a bug" not in r.stderr


META = """\
model FewShotSine(xs: real[S, 1], ys: real[S], xq: real[Q, 1], yq: real[Q]) {
  f = mlp(1, [8], 1, act=relu)
  f ~ niw_meta(n0=1, gamma0=1e6, sgld_steps=1)
  ys ~ LIKELIHOOD
  yq ~ Normal(f(xq)[:, 0], 0.3)
}
infer meta(episodes="sine_line", steps=2, batch=2, test_episodes=2, samples=2)
"""
META_DATA = {"xs": [[-4.0], [-2.0], [0.0], [2.0], [4.0]], "ys": [0.1, 0.2, 0.3, 0.4, 0.5],
             "xq": [[0.5 * i] for i in range(45)], "yq": [0.0] * 45}


@pytest.mark.parametrize("likelihood, said", [
    # sine_line's ys are negative too: was torch's support error deep in SGLD, exit 3
    ("LogNormal(f(xs)[:, 0], 0.3)",
     "m.bdl:4:3: error: episodes 'sine_line' give ys = -6.29338 (point 0 of the first "
     "training episode), outside LogNormal's support (numbers > 0)"),
    ("Uniform(f(xs)[:, 0], f(xs)[:, 0] + 1)",
     "m.bdl:4:3: error: infer meta: the support of Uniform for 'ys' follows the weights"),
    # was "element 0 of tensors does not require grad" (RuntimeError)
    ("Delta(f(xs)[:, 0])",
     "m.bdl:4:3: error: infer meta: the log density of Delta for 'ys' does not depend on "
     "the weights"),
])
def test_meta_refuses_a_likelihood_it_cannot_train_through(tmp_path, bdl_here, likelihood,
                                                           said):
    args = _write(tmp_path, META.replace("LIKELIHOOD", likelihood), META_DATA)
    r = bdl_here("run", *args)
    assert r.returncode == 1, r.stderr
    assert said in r.stderr
    assert ("note: infer meta trains the weights through the log density of ys and yq, so "
            "each must be a distribution with a density whose support does not depend on "
            "the weights and holds every episode value: Normal, StudentT, Cauchy or Laplace "
            "for regression episodes, Categorical for classification") in r.stderr


def test_meta_episodes_of_another_shape_are_located(tmp_path, bdl_here):
    # gauss episodes have 16 features; was "infer: error: ..." with no place
    src = META.replace("LIKELIHOOD", "Normal(f(xs)[:, 0], 0.3)").replace(
        "real[S, 1]", "real[S, 2]").replace("real[Q, 1]", "real[Q, 2]").replace(
        "mlp(1,", "mlp(2,")
    data = {**META_DATA, "xs": [[x[0], 0.0] for x in META_DATA["xs"]],
            "xq": [[x[0], 0.0] for x in META_DATA["xq"]]}
    args = _write(tmp_path, src, data)
    r = bdl_here("run", *args)  # written on the infer line: at its episodes option
    assert r.returncode == 1, r.stderr
    assert ("m.bdl:7:12: error: episodes 'sine_line' give xs of shape (5, 1), the model's "
            "data has (5, 2)") in r.stderr
    # from --infer: at the statement that observes the support set
    r = bdl_here("run", *args, "--infer", 'meta(episodes="sine_line", steps=2, batch=2)')
    assert r.returncode == 1, r.stderr
    assert ("m.bdl:4:3: error: episodes 'sine_line' give xs of shape (5, 1), the model's "
            "data has (5, 2)") in r.stderr


def _nested(expr: str) -> str:
    return (f"model M(y: real[N]) {{\n  mu ~ Normal(0, 1)\n  a = {expr}\n"
            "  y ~ Normal(a, 1)\n}\ninfer map(steps=2)\n")


@pytest.mark.parametrize("expr", [" + ".join(["mu"] * 400), "-" * 2000 + "mu",
                                  "tanh(" * 130 + "mu" + ")" * 130])
def test_an_expression_too_deep_for_the_pipeline_is_a_located_check_error(
        tmp_path, bdl_here, expr):
    # was "bdl: error while running the model: maximum recursion depth exceeded" from
    # bdl check (lark's Transformer, the checker's _expr)
    args = _write(tmp_path, _nested(expr))
    r = bdl_here("check", args[0])
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith(f"{args[0]}:3:3: error: expression too deeply nested: more "
                               "than about 250 operators, or 125 calls, one inside another")
    assert "running" not in r.stderr


@pytest.mark.parametrize("expr", [" + ".join(["mu"] * 248), "-" * 248 + "mu",
                                  "tanh(" * 124 + "mu" + ")" * 124])
def test_the_deepest_expression_taken_runs_through_every_stage(tmp_path, bdl_here, expr):
    import ppl

    args = _write(tmp_path, _nested(expr), {"y": [0.5]})
    r = bdl_here("run", *args)
    assert r.returncode == 0, r.stderr
    fit = ppl.compile(_nested(expr)).fit({"y": [0.5]})
    assert fit.samples["mu"].shape == (1,)


@pytest.mark.parametrize("spec, said", [
    # was "infer: error: option 'chains' of nuts: must be at least 1", with no place
    ("nuts(chains=0)", ["--infer:1:12: error: option 'chains' of nuts: must be at least 1",
                        "  infer nuts(chains=0)", "             ^~~~~~~~"]),
    # was taken silently as samples=6 (the file's infer line refuses it)
    ("nuts(samples=5, samples=6)", ["--infer:1:23: error: option 'samples' given twice",
                                    "  infer nuts(samples=5, samples=6)",
                                    "                        ^~~~~~~~~"]),
    # was "infer ()": "unexpected '('", a spec the user never wrote
    ("", ["--infer:1:7: error: unexpected end of file; expected a name", "  infer ",
          "        ^"]),
    ("nuts(4)", ["--infer:1:12: error: infer options are keywords: name=value",
                 "  infer nuts(4)", "             ^"]),
])
def test_an_infer_spec_follows_the_infer_lines_rules_located(spec, said):
    import ppl

    m = ppl.compile(_nested("mu"), "m.bdl")
    with pytest.raises(ppl.BdlError) as e:
        m.resolve_infer(spec)
    assert str(e.value).splitlines()[:3] == said
    # a keyword given beside the spec with another value is refused (stop 27, S7); the
    # same value twice is fine
    with pytest.raises(ppl.BdlError, match="option 'seed' is 4 here but seed= gives 5"):
        m.resolve_infer("nuts(seed=4)", seed=5)
    assert m.resolve_infer("nuts(seed=4)", seed=4)[1]["seed"] == 4


def test_gp_tasks_with_a_large_scale_train_and_an_impossible_one_is_located(tmp_path,
                                                                            bdl_here):
    src = ("model NPGP(xc: real[C, 1], yc: real[C, 1], xt: real[T, 1], yt: real[T, 1]?) "
           "{\n  g = cnp(x_dim=1, y_dim=1, hidden=8)\n  yt ~ g(xc, yc, xt)\n}\n"
           "infer np_train(\n  steps=2,\n  batch=16,\n  lr=0.001,\n"
           "  tasks=gp_tasks(kernel=rbf, lengthscale=[0.1, 0.6], scale=[0.1, 1.0]),\n)\n")
    data = {"xc": [[0.0], [0.5]], "yc": [[0.1], [0.2]], "xt": [[0.25]]}
    # scale 100 against noise 0.02: float32's Cholesky failed, unlocated (exit 1, no place)
    args = _write(tmp_path, src.replace("scale=[0.1, 1.0]", "scale=[0.1, 100]"), data)
    r = bdl_here("run", *args)
    assert r.returncode == 0, r.stderr
    args = _write(tmp_path, src.replace("scale=[0.1, 1.0]", "scale=[1e4, 1e9]"), data, "big")
    r = bdl_here("run", *args)
    assert r.returncode == 1, r.stderr
    assert (f"{args[0]}:9:3: error: np_train: gp_tasks: the covariance of a rbf task with "
            "scale 2.61307e+08 and lengthscale 0.429798 is not positive-definite (noise "
            "0.02): narrow the scale range, or raise noise") in r.stderr


def test_a_size_beyond_memory_saves_no_traceback(tmp_path, bdl_here):
    args = _write(tmp_path, "model M(y: real[N]) {\n  a: real[9999999999] ~ Normal(0, 1)\n"
                            "  y ~ Normal(0, 1)\n}\ninfer map(steps=2)\n", {"y": [0.5]})
    r = bdl_here("run", *args)
    assert r.returncode == 1, r.stderr
    assert f"{args[0]}:2:3: error: [enforce fail" in r.stderr
    assert "can't allocate memory" in r.stderr and "looks like a bug" not in r.stderr


def test_a_model_error_while_the_guide_is_first_built_is_located(tmp_path, bdl_here):
    # the first step runs the model inside the autoguide with the initial parameters:
    # was "svi: the guide's parameters became NaN, ... diverged with lr=1e-06"
    args = _write(tmp_path, "model G1(y: real[N]) {\n  mu ~ Normal(100, 1)\n"
                            "  y ~ Normal(0, mu - 50)\n}\ninfer svi(steps=10, lr=1e-6)\n",
                  {"y": [1.0, 2.0]})
    r = bdl_here("run", *args)
    assert r.returncode == 1, r.stderr
    assert "m.bdl:3:17: error: Normal's scale is -50; it must be numbers > 0" in r.stderr
    assert "diverged" not in r.stderr


def _parens(n: int) -> str:
    """A model whose observation nests ``n`` parentheses, Normal's own the outermost."""
    expr = "(1.0 - " * (n - 1) + "mu" + ")" * (n - 1)
    return (f"model M(y: real[N]) {{\n  mu ~ Normal(0, 1)\n  y ~ Normal({expr}, 1)\n}}\n"
            "infer map(steps=2)\n")


def test_more_parentheses_than_python_takes_is_a_located_check_error(tmp_path, bdl_here):
    # 200 passed check and compile, then bdl run exited 3 with Python's "SyntaxError: too
    # many nested parentheses" in the generated module
    args = _write(tmp_path, _parens(191), {"y": [0.5]})
    r = bdl_here("check", args[0])
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith(
        f"{args[0]}:3:{len('  y ~ Normal(') + 7 * 189 + 1}: error: expression too deeply "
        "nested: more than 190 parentheses and brackets one inside another")
    assert len(r.stderr.split("error:")) == 2  # one error
    # the most taken runs through every stage, Python's tokenizer included
    args = _write(tmp_path, _parens(190), {"y": [0.5]})
    r = bdl_here("run", *args)
    assert r.returncode == 0, r.stderr


_AR1 = ("model AR1(y: real[T]) {\n  b ~ Normal(0, 1)\n  ahead = y[1:]\n"
        "  plate t in T - 1 {\n    ahead ~ Normal(b * y[t], 1)\n  }\n}\n"
        "infer nuts(samples=3, warmup=3, chains=1)\n")
_AR1_NO_SLICE = ("model AR1(y: real[T]) {\n  b ~ Normal(0, 1)\n  s = 1.0\n"
                 "  plate t in T - 1 {\n    factor(log_prob(Normal(b * y[t], s), y[t + 1]))\n"
                 "  }\n}\ninfer nuts(samples=3, warmup=3, chains=1)\n")
_ARK = ("model ARK(K: int, y: real[T]) {\n  b ~ Normal(0, 1)\n  ahead = y[K:]\n"
        "  plate t in T - K {\n    ahead ~ Normal(b * y[t + K - 1], 1)\n  }\n}\n"
        "infer nuts(samples=3, warmup=3, chains=1)\n")


@pytest.mark.parametrize("text, data, said", [
    # a negative size was torch.arange's RuntimeError "upper bound and lower bound
    # inconsistent with step sign" with the 'looks like a bug' note; the slice before the
    # plate is now refused first, at binding (a slice must lie in its dimension)
    (_AR1, {"y": []}, "3:13: error: size mismatch between the end and the start of the "
     "slice y[1:]: T = 0 but must be at least 1 = 1 (sizes from the data)"),
    (_ARK, {"K": 3, "y": [0.5, 1.0]}, "3:13: error: size mismatch between the end and the "
     "start of the slice y[K:]: T = 2 but must be at least K = 3 (sizes from the data)"),
    (_AR1_NO_SLICE, {"y": []}, "4:3: error: plate 't' has size T - 1 = -1 (T = 0 from data "
     "key 'y')"),
    # size 0 from one element was "(no elements in the data given)"
    (_AR1, {"y": [0.5]}, "4:3: error: plate 't' has size T - 1 = 0 (T = 1 from data key 'y')"),
])
def test_a_plate_size_below_one_names_its_value_and_source(tmp_path, bdl_here, text, data,
                                                            said):
    r = bdl_here("run", *_write(tmp_path, text, data))
    assert r.returncode == 1, r.stderr
    assert f"m.bdl:{said}\n" in r.stderr
    assert "looks like a bug" not in r.stderr and "RuntimeError" not in r.stderr


def test_an_optional_output_of_size_0_runs_and_predicts(tmp_path, bdl_here):
    # Stan's N_tilde = 0: the fit completed, then the summary failed "quantile() input
    # tensor must be non-empty", and the samples "cannot reshape tensor of 0 elements"
    import numpy as np

    data = {"x": [1.0, 2.0, 3.0], "y": [1.0, 2.0, 3.5], "x_new": []}
    args = _write(tmp_path, "model P0(x: real[N], y: real[N], x_new: real[M], "
                            "y_new: real[M]?) {\n  a ~ Normal(0, 1)\n  b ~ Normal(0, 1)\n"
                            "  s ~ HalfNormal(1)\n  y ~ Normal(a + b * x, s)\n"
                            "  y_new ~ Normal(a + b * x_new, s)\n}\n"
                            "infer nuts(samples=3, warmup=3, chains=1)\n", data)
    r = bdl_here("run", *args)
    assert r.returncode == 0, r.stderr
    rows = [line.split()[0] for line in r.stdout.splitlines()[1:] if line.strip()
            and not line.startswith("wrote")]
    assert rows[:3] == ["a", "b", "s"] and "y_new" not in r.stdout
    with np.load(tmp_path / "run-m" / "samples.npz") as z:
        assert z["y_new"].shape == (1, 3, 0) and z["a"].shape == (1, 3)
    p = bdl_here("predict", str(tmp_path / "m.bdl"), "--posterior", str(tmp_path / "run-m"),
                 "--data", str(tmp_path / "m.json"), "--out", str(tmp_path / "pred"))
    assert p.returncode == 0, p.stderr
    with np.load(tmp_path / "pred" / "predictive.npz") as z:
        assert z["y_new"].shape == (3, 0)


@pytest.mark.parametrize("written, words", [
    ("Normal(0, a)", "m.bdl:1:62: error: Normal's scale is -1; it must be numbers > 0"),
    ("Gamma(a, 1)", "m.bdl:1:58: error: Gamma's concentration is -1; it must be numbers > 0"),
    # refused by a distribution built inside the one written: torch's words, at the statement
    ("Beta(a, 2)", "m.bdl:1:48: error: Expected parameter concentration"),
    ("StudentT(a, 0, 1)", "m.bdl:1:48: error: Expected parameter df"),
    ("LogNormal(0, a)", "m.bdl:1:48: error: Expected parameter scale"),
])
def test_an_argument_outside_its_constraint_is_named_as_written(written, words):
    m = ppl.compile(f"model M(y: real, a: real) {{ mu ~ Normal(0, 1); y ~ {written} }}", "m.bdl")
    with pytest.raises(ppl.BdlError) as e:
        m.log_density({"mu": 0.0}, {"y": 0.5, "a": -1.0})
    assert str(e.value).startswith(words)
    assert "Dirichlet's" not in str(e.value) and "Chi2's" not in str(e.value)


def test_log_density_shows_a_plates_run_time_error_not_its_indices_as_a_missing_latent():
    # a plate's subsample site is no latent: 'missing value for latent 'n'' hid the error
    m = ppl.compile("model M(N: int, y: real[N], v: real) {\n"
                    "  plate n in N { y ~ Normal(0, v - 5) }\n}\n", "m.bdl")
    with pytest.raises(ppl.BdlError) as e:
        m.log_density({}, {"N": 2, "y": [1.0, 2.0], "v": 1.0})
    assert "error: Normal's scale is -4; it must be numbers > 0" in str(e.value)
    assert "latent 'n'" not in str(e.value)
