"""Every example compiles to clean, standalone Pyro that means the same as the embedded model.

For each ``examples/*.bdl`` (every model in the file):
- it compiles, and the generated module is valid Python that ``ruff`` passes;
- the module written to a file and imported on its own gives the same log density as
  the in-memory model on the same full assignment of the latent sites;
- prior (and prior predictive) sampling works.
Plus: a generated module runs as a script, and a short MAP fit of the MLP example learns.
Nothing here runs a full fit of the examples (``bdl run`` does that).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pyro
import pytest
import torch
from conftest import default_dtype

import ppl
from ppl.runtime import reset_networks

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.bdl"))
MODELS = [(p, name) for p in EXAMPLES for name in ppl.load(p).compiled.checked.models]


def _id(item) -> str:
    path, name = item
    return f"{path.stem}:{name}"


def _data(path: Path) -> dict:
    data_file = path.with_name(path.stem + ".data.json")
    return json.loads(data_file.read_text()) if data_file.exists() else {}


def _import_file(path: Path, module_name: str):
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ruff() -> list[str] | None:
    exe = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
    if exe:
        return [exe]
    try:
        import ruff  # noqa: F401
    except ImportError:
        return None
    return [sys.executable, "-m", "ruff"]


def test_examples_exist():
    names = {p.stem for p in EXAMPLES}
    for required in ("eight_schools", "linear_regression", "logistic_regression",
                     "varying_intercepts", "gp_regression", "mixture", "mlp_regression",
                     "minibatch_logistic"):
        assert required in names
        assert (ROOT / "examples" / f"{required}.data.json").exists()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_generated_source_is_valid_and_ruff_clean(path, tmp_path):
    m = ppl.load(path)
    ast.parse(m.source)  # valid Python
    ruff = _ruff()
    if ruff is None:
        pytest.skip("ruff is not installed")
    out = tmp_path / f"{path.stem}_generated.py"
    out.write_text(m.source)
    r = subprocess.run([*ruff, "check", "--no-cache", "--isolated", "--select", "E,F,W",
                        "--line-length", "120", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, f"ruff on the code generated from {path.name}:\n{r.stdout}{r.stderr}"


@pytest.mark.parametrize("item", MODELS, ids=_id)
def test_standalone_module_matches_embedded_log_density(item, tmp_path):
    path, name = item
    m = ppl.load(path, model=name)
    gen = tmp_path / f"gen_{path.stem}.py"
    gen.write_text(m.source)
    module = _import_file(gen, f"bdl_test_gen_{path.stem}_{name}")
    standalone = getattr(module, name)
    assert standalone is not m.pyro_model
    with default_dtype(torch.float64):
        pyro.set_rng_seed(0)
        pyro.clear_param_store()
        reset_networks()
        kwargs = m.bind(_data(path))
        prior = pyro.poutine.trace(m.pyro_model).get_trace(**kwargs)
        latents = {k: s["value"].detach() for k, s in prior.nodes.items()
                   if s["type"] == "sample" and not s["is_observed"]
                   and not s["infer"].get("_deterministic")}

        def log_density(fn) -> torch.Tensor:
            # the same RNG state for both: a construct may draw Monte Carlo noise inside
            # its density (the martingale neural process does)
            pyro.set_rng_seed(1)
            tr = pyro.poutine.trace(pyro.poutine.condition(fn, data=latents)).get_trace(**kwargs)
            for site in tr.nodes.values():
                if site["type"] == "sample" and not site["is_observed"]:
                    raise AssertionError(f"site {site['name']} was not conditioned")
            return tr.log_prob_sum()

        embedded = log_density(m.pyro_model).detach()
        alone = log_density(standalone).detach()
    assert embedded.dtype == torch.float64
    assert torch.isfinite(embedded), f"{name}: log density {embedded}"
    assert float(alone) == pytest.approx(float(embedded), rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("item", MODELS, ids=_id)
def test_prior_sampling(item):
    path, name = item
    m = ppl.load(path, model=name)
    draws = m.sample_prior(_data(path), num_samples=3, seed=1)
    assert set(m.ir.latents) <= set(draws)
    for site, v in draws.items():
        assert v.shape[0] == 3, site
    for site in m.ir.latents:
        assert torch.isfinite(draws[site].double()).all(), site
    optional_missing = [a.name for a in m.ir.args if a.optional and a.name not in _data(path)]
    for a in optional_missing:
        if a in m.ir.observed:
            assert a in draws  # the prior predictive of optional data left out


def test_generated_module_runs_as_a_script(tmp_path):
    text = (ROOT / "examples" / "eight_schools.bdl").read_text()
    head, _, _ = text.rpartition("infer ")
    src = tmp_path / "eight_schools.bdl"
    src.write_text(head + "infer nuts(samples=20, warmup=20, chains=1, seed=3)\n")
    m = ppl.load(src)
    gen = tmp_path / "eight_schools_gen.py"
    gen.write_text(m.source)
    data = tmp_path / "data.json"
    data.write_text((ROOT / "examples" / "eight_schools.data.json").read_text())
    r = subprocess.run([sys.executable, str(gen), str(data)], capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0] for line in r.stdout.splitlines() if line.strip()}
    assert {"mu", "tau", "theta[0]", "theta_raw[7]"} <= rows, r.stdout


def test_mlp_regression_short_map_fit_learns():
    path = ROOT / "examples" / "mlp_regression.bdl"
    m = ppl.load(path)
    data = _data(path)
    y = torch.tensor(data["y"])
    # predict at the training inputs: y_new ~ Normal(f(x)[:, 0], sigma)
    data = {**data, "x_new": data["x"]}
    fit = m.fit(data, infer="map", steps=200, lr=0.01, seed=0)
    assert len(fit.elbo) == 200
    first, last = sum(fit.elbo[:20]) / 20, sum(fit.elbo[-20:]) / 20
    assert last > first + 10, (first, last)
    sigma = float(fit.samples["sigma"].reshape(-1)[0])
    assert sigma < 0.8 * float(y.std())  # the network explains more than a constant would
    y_new = fit.samples["y_new"].reshape(-1, y.shape[0])[0].to(y.dtype)
    mse = float(((y_new - y) ** 2).mean())
    assert mse < float(((y - y.mean()) ** 2).mean())


# ---- regressions found while writing the examples and the reference -----------------
def test_reserved_python_names_are_renamed_in_generated_code():
    src = """
model T(y: int[N], x: real[N]) {
  lambda ~ Gamma(2, 1)
  dist = lambda * 2
  plate in in N {
    y ~ Poisson(dist + 0 * x[in])
  }
}
"""
    m = ppl.compile(src)
    assert 'lambda_ = pyro.sample("lambda"' in m.source
    ast.parse(m.source)
    draws = m.sample_prior({"y": [1, 2], "x": [0.0, 1.0]}, num_samples=2)
    assert set(draws) >= {"lambda", "dist"}


def test_list_literal_stacks_and_subsampled_plate_index():
    src = """
model T(x: real[N], y: real[N], w: real[N]) {
  t ~ Beta(2, 2)
  mu: ordered[2] ~ Normal(0, 2)
  plate i in N batch 2 {
    y ~ MixtureSameFamily(Categorical(probs=[t, 1 - t]), Normal(mu, 1))
    w ~ Normal(x[i], 1)
  }
}
"""
    m = ppl.compile(src)
    assert "rt.stack([t, 1 - t])" in m.source
    assert "x[i]" in m.source and "x_i" not in m.source  # x[i] indexes the original x
    kwargs = m.bind({"x": [0.0, 1.0, 2.0], "y": [0.5, 1.0, -1.0], "w": [0.0, 0.0, 0.0]})
    tr = pyro.poutine.trace(m.pyro_model).get_trace(**kwargs)
    assert tr.nodes["y"]["value"].shape == (2,)
    assert tr.nodes["w"]["fn"].mean.shape == (2,)


@pytest.mark.parametrize("decl", [
    "v: unit_vector[3] ~ Normal(0, 1)",
    "v: cholesky_factor_cov[2] ~ Normal(0, 1)",
    "v: cov_matrix[2] ~ Wishart(3, eye(2))",
    "v: corr_matrix[2] ~ LKJ(2, 2)",
    "v: cholesky_factor_corr[2] ~ LKJCholesky(2, 1)",
    "v: simplex[3] ~ Dirichlet(ones(3))",
    "v: positive_ordered[3] ~ Exponential(1)",
])
@pytest.mark.filterwarnings("ignore:Singular sample")
def test_constrained_latents_sample_and_fit(decl):
    m = ppl.compile(f"model T(y: real) {{\n  {decl}\n  y ~ Normal(sum(v), 1)\n}}\n")
    draws = m.sample_prior({"y": 0.5}, num_samples=2)
    assert torch.isfinite(draws["v"]).all()
    fit = m.fit({"y": 0.5}, infer="nuts", samples=5, warmup=5, chains=1)
    assert fit.samples["v"].shape[0] == 5


def _run_script_here(gen: Path, *args, monkeypatch, capsys) -> subprocess.CompletedProcess:
    """``python GEN ARGS`` executed as ``__main__`` in this process (runpy), from GEN's
    folder: exit status and printed streams as a subprocess would give them, without the
    seconds of importing torch again. One subprocess per file type stays in each test
    below, for running on its own."""
    monkeypatch.setattr(sys, "argv", [str(gen), *map(str, args)])
    monkeypatch.chdir(gen.parent)
    capsys.readouterr()
    code = 0
    try:
        runpy.run_path(str(gen), run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def test_standalone_module_command_line(tmp_path, monkeypatch, capsys):
    """A generated module run on its own (`python model.py DATA`): it fits and prints the
    summary; --help works; a missing, malformed or ill-fitting data file is one error
    line and exit status 1, never a traceback."""
    m = ppl.compile("model M(y: real[N]) {\n  mu ~ Normal(0, 10)\n  y ~ Normal(mu, 1)\n}\n"
                    "infer map(steps=30, lr=0.1)\n", "m.bdl")
    gen = tmp_path / "m.py"
    gen.write_text(m.source)
    (tmp_path / "d.json").write_text(json.dumps({"y": [1.0, 2.0, 3.0]}))
    (tmp_path / "bad.json").write_text('{"y": [1.0, 2.0')
    (tmp_path / "wrong.json").write_text(json.dumps({"y": [[1.0], [2.0]]}))

    def run(*args):
        return subprocess.run([sys.executable, str(gen), *args], capture_output=True,
                              text=True, cwd=tmp_path, timeout=300)

    ok = run("d.json", "--quiet")  # a process of its own; the refusals run here (runpy)
    assert ok.returncode == 0, ok.stderr
    assert "mu" in ok.stdout
    assert _run_script_here(gen, "--help", monkeypatch=monkeypatch,
                            capsys=capsys).returncode == 0
    for args, message in ((["nope.json"], "nope.json: no such data file"),
                          (["bad.json"], "bad.json:1:"),
                          (["wrong.json"], "error:")):
        r = _run_script_here(gen, *args, monkeypatch=monkeypatch, capsys=capsys)
        assert r.returncode == 1 and message in r.stderr, r.stderr
        assert "Traceback" not in r.stderr


def test_standalone_module_prints_what_bdl_run_prints(tmp_path, monkeypatch, capsys):
    """The module run on its own goes through the same fit as `ppl.compile`: missing
    optional data are drawn after the fit (not fitted as latents), a construct's method
    (sghmc) resolves, and the summary, final ELBO and point estimates equal the API's."""
    src = ("model R(x: real[N], y: real[N], y_new: real[N]?) {\n"
           "  param a: real = 0.0\n  s ~ HalfNormal(1)\n"
           "  y ~ Normal(a * x, s)\n  y_new ~ Normal(a * x, s)\n}\n"
           "infer svi(steps=40, lr=0.05, samples=50)\n")
    data = {"x": [0.0, 1.0, 2.0, 3.0], "y": [0.1, 0.9, 2.2, 2.9]}
    m = ppl.compile(src, "r.bdl")
    fit = m.fit(data)
    from ppl.infer.report import fit_report

    gen = tmp_path / "r.py"
    gen.write_text(m.source)
    (tmp_path / "d.json").write_text(json.dumps(data))
    r = _run_script_here(gen, "d.json", "--quiet", monkeypatch=monkeypatch, capsys=capsys)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == fit_report(fit).strip()
    assert "final ELBO" in r.stdout and "a = " in r.stdout and "y_new[3]" in r.stdout
    # y_new is not a latent of the fit: the guide has no parameters for it
    assert not any("y_new" in k for k in fit.params)

    bnn = ppl.compile("model B(x: real[N, 1], y: real[N]) {\n  f = mlp(1, [4], 1)\n"
                      "  f ~ gaussian_prior(scale=1)\n  y ~ Normal(f(x)[:, 0], 0.5)\n}\n"
                      "infer sghmc(samples=3, warmup=4, chains=1)\n", "b.bdl")
    gen = tmp_path / "b.py"
    gen.write_text(bnn.source)
    (tmp_path / "b.json").write_text(json.dumps({"x": [[0.0], [1.0]], "y": [0.0, 1.0]}))
    # a fresh process: in this one ppl.compile has already loaded the constructs
    r = subprocess.run([sys.executable, str(gen), "b.json", "--quiet"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "f.W0[0, 0]" in r.stdout


def test_construct_settings_are_written_as_python_values():
    """A construct's list of unit groups and a settings helper's numbers read as written
    (``hidden=[units(64, 4)]``), not as stacked tensors; a fractional SDE's layer widths
    stay a list while its time grid, a list literal of values, is still a tensor."""
    m = ppl.load(ROOT / "examples" / "mdbm_digits.bdl")
    assert "hidden=[rt.monotone_dbm.units(64, 4)]" in m.source
    assert "label=rt.monotone_dbm.units(1, 10)" in m.source
    assert "rt.tensor(64)" not in m.source and "rt.stack(" not in m.source
    src = """
model F(y: real[3]) {
  x ~ fractional_sde(drift=(x, t) => -x, diffusion=0.5, times=[0.5, 1.0, 1.5],
                     x0=Normal(0, 1), data=y, hidden=[16, 8])
}
infer svi(steps=1, samples=2)
"""
    # two posterior draws: the fit only has to run (the default 1000 draws are 1000 SDE
    # solves, half a minute)
    m = ppl.compile(src)
    assert "hidden=[16, 8]" in m.source
    assert "times=rt.stack([0.5, 1.0, 1.5])" in m.source
    fit = m.fit({"y": [0.1, 0.2, 0.3]}, seed=0)
    assert fit is not None


def test_layer_widths_must_be_whole_numbers():
    m = ppl.compile("""
model F(y: real[3]) {
  x ~ fractional_sde(drift=(x, t) => -x, diffusion=0.5, times=[0.5, 1.0, 1.5],
                     x0=Normal(0, 1), data=y, hidden=[16.5])
}
infer svi(steps=1)
""")
    with pytest.raises(ppl.BdlError, match=r"hidden takes layer widths .* got \[16.5\]"):
        m.fit({"y": [0.1, 0.2, 0.3]})


COVARIANCE = """\
# a covariance read from the data
model C(y: real[N], S: real[N, N]) {
  mu ~ Normal(0, 1)  # the mean
  # S need not be positive definite
  y ~ MultivariateNormal(mu * ones(N), covariance_matrix=S)
}
infer svi(steps=2, samples=2)
"""


def test_generated_statements_carry_their_bdl_line_and_comments():
    m = ppl.compile(COVARIANCE, "c.bdl")
    body = m.source.split("def C(*, N, y, S):\n")
    assert body[0].endswith("# a covariance read from the data\n")
    assert body[1].split("\n")[:5] == [
        "    # bdl:3:3  mu ~ Normal(0, 1)  # the mean",
        '    mu = pyro.sample("mu", dist.Normal(0, 1))',
        "    # S need not be positive definite",
        "    # bdl:5:3  y ~ MultivariateNormal(mu * ones(N), covariance_matrix=S)",
        '    pyro.sample("y", rt.MultivariateNormal(mu * rt.ones(N), covariance_matrix=S), '
        "obs=y)"]
    # a label says it is summed out; a marker too long for the line is cut
    lab = ppl.compile("model L(y: real[N]) {\n  z ~ Categorical([0.5, 0.5])\n  y ~ Normal("
                      + " + ".join(["z * 1.0"] * 20) + ", 1)\n}\n", "l.bdl")
    lines = lab.source.split("\n")
    at = lines.index("    # bdl:2:3  z ~ Categorical([0.5, 0.5])")
    assert lines[at + 1:at + 3] == [
        "    # a label: summed out in the fit (Pyro's parallel enumeration), then drawn from "
        "its exact",
        "    # conditional (ppl.infer.discrete)"]
    cut = next(ln for ln in lines if ln.startswith("    # bdl:3:3  y ~ Normal(z * 1.0 + "))
    assert len(cut) == 99 and cut.endswith(" ...")


def test_a_long_rule_of_hashes_is_carried_into_the_generated_code():
    """A comment whose leading '#'s leave no room on the line (94 and more at depth 1) is
    copied, its text wrapped at 40 characters (was: ValueError: invalid width 0)."""
    rule = "#" * 96
    src = ("#" * 120 + "\nmodel R(y: real) {\n  " + "#" * 94 + "\n  " + rule
           + " the likelihood, after a long rule of hashes that leaves no room\n"
           "  y ~ Normal(0, 1)\n}\n")
    lines = ppl.compile(src, "r.bdl").source.split("\n")
    at = lines.index("def R(*, y):")
    assert lines[at - 1] == "#" * 120
    assert lines[at + 1:at + 4] == [
        "    " + "#" * 94, f"    {rule} the likelihood, after a long rule of",
        f"    {rule} hashes that leaves no room"]


def test_standalone_module_locates_run_time_errors(tmp_path, monkeypatch, capsys):
    """An error raised while a statement of a module run on its own runs is located in
    the .bdl by the module's statement markers, as `bdl run` locates it; without the
    .bdl beside it the location stands without the line."""
    m = ppl.compile(COVARIANCE, "c.bdl")
    (tmp_path / "c.bdl").write_text(COVARIANCE)
    gen = tmp_path / "c.py"
    gen.write_text(m.source)
    (tmp_path / "d.json").write_text(json.dumps({"y": [1.0, 2.0],
                                                 "S": [[1.0, 2.0], [2.0, 1.0]]}))
    r = _run_script_here(gen, "d.json", "--quiet", monkeypatch=monkeypatch, capsys=capsys)
    lines = r.stderr.strip().split("\n")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    refused = ("c.bdl:5:3: error: MultivariateNormal's covariance_matrix is [[1, 2], [2, 1]]; "
               "it must be symmetric positive-definite matrices")
    assert lines[0] == refused
    line = m.source.split("\n").index(next(ln for ln in m.source.split("\n")
                                           if ln.startswith('    pyro.sample("y"'))) + 1
    assert lines[-3:] == [
        "    y ~ MultivariateNormal(mu * ones(N), covariance_matrix=S)", "    ^",
        f"  note: raised while running this statement (ValueError, line {line} of c.py)"]
    (tmp_path / "c.bdl").unlink()
    r = _run_script_here(gen, "d.json", "--quiet", monkeypatch=monkeypatch, capsys=capsys)
    assert r.returncode == 1
    warning, _, rest = r.stderr.partition("\n")  # bdl run's checks before a fit not made
    assert warning.startswith("warning: c.bdl, the BDL file c.py was generated from, was not "
                              "found")
    assert rest.startswith(refused + "\n")
    assert "    y ~ MultivariateNormal" not in r.stderr


def test_markers_map_ends_a_statement_at_the_next_marker_or_the_function_end():
    from ppl.locate import markers_map

    lines = ["def M():", "    # bdl:2:3  a ~ Normal(0, 1)", "    a = 1", "    # bdl:3:3  plate N {",
             "    with p:", "        # bdl:4:5  y ~ Normal(a, 1)", "        y = 2", "", "",
             'if __name__ == "__main__":', "    main()"]
    got = [(first, last, ref.span.line, ref.span.col) for first, last, ref in markers_map(lines)]
    assert got == [(3, 3, 2, 3), (5, 5, 3, 3), (7, 9, 4, 5)]


def test_standalone_module_takes_infer_and_seed_as_bdl_run(tmp_path, monkeypatch, capsys):
    """`python m.py DATA --infer SPEC --seed S` resolves as `bdl run` does: the same method
    keeps the module's other settings, the seed is the run's; a bad spec is the same
    error and exit status 1."""
    src = ("model M(y: real[N]) {\n  mu ~ Normal(0, 10)\n  y ~ Normal(mu, 1)\n}\n"
           "infer svi(steps=30, lr=0.1, samples=20)\n")
    m = ppl.compile(src, "m.bdl")
    data = {"y": [1.0, 2.0, 3.0]}
    (tmp_path / "m.bdl").write_text(src)  # as bdl compile leaves it: beside the module
    gen = tmp_path / "m.py"
    gen.write_text(m.source)
    (tmp_path / "d.json").write_text(json.dumps(data))
    from ppl.infer.report import fit_report

    fit = m.fit(data, infer="svi(steps=7)", seed=5)
    assert fit.options["lr"] == 0.1 and fit.options["steps"] == 7
    r = _run_script_here(gen, "d.json", "--quiet", "--infer", "svi(steps=7)", "--seed", "5",
                         monkeypatch=monkeypatch, capsys=capsys)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == fit_report(fit).strip()
    bad = _run_script_here(gen, "d.json", "--infer", "svi(stepz=7)",
                           monkeypatch=monkeypatch, capsys=capsys)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    with pytest.raises(ppl.BdlError) as e:
        m.fit(data, infer="svi(stepz=7)")
    assert bad.stderr.strip() == str(e.value).strip()


def test_standalone_module_of_two_models_locates_in_the_model_it_runs(tmp_path, monkeypatch,
                                                                      capsys):
    # both models have a site 'y': a support error Pyro names by site is located in the
    # model the module runs (the last), not at the first 'y' of the file
    src = ("model A(y: real[N]) {\n  mu ~ Normal(0, 1)\n  y ~ Normal(mu, 1)\n}\n\n"
           "model P(y: int[N]) {\n  lam ~ Exponential(1)\n  y ~ Poisson(lam)\n}\n"
           "infer P with nuts(samples=5, warmup=5, chains=1)\n")
    (tmp_path / "two.bdl").write_text(src)
    gen = tmp_path / "two.py"
    gen.write_text(ppl.compile(src, "two.bdl").source)
    (tmp_path / "d.json").write_text(json.dumps({"y": [1, -2, 3]}))
    r = _run_script_here(gen, "d.json", "--quiet", monkeypatch=monkeypatch, capsys=capsys)
    assert r.returncode == 1
    assert r.stderr.split("\n")[:2] == [
        "two.bdl:8:3: error: 'y' element 1 is -2; Poisson is over integers >= 0",
        "    y ~ Poisson(lam)"]


def test_imports_follow_the_code_not_the_comments():
    # a comment naming torch.exp, carried into the module, imported torch for nothing
    m = ppl.compile("## Model notes\n# uses torch.exp and constraints.positive\n"
                    "model A(y: real[N]) {\n  mu ~ Normal(0, 1)\n  y ~ Normal(mu, 1)\n}\n", "a.bdl")
    head = m.source.split("\n\n\n")[0]
    assert "import torch" not in head and "constraints" not in head
    assert "import pyro.distributions as dist" in head
    assert "## Model notes\n# uses torch.exp and constraints.positive\ndef A(" in m.source
