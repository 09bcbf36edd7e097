"""Run folders, ``bdl predict`` and the CLI's refusals (audit stop 22): seeds out of range,
``--force`` over an older run, ``--out`` naming a file, predicting with observe-only data
left out, map runs predicted at the point estimate, new data of another width, new data
that fix every site, the ArviZ export's attrs, a fit given a latent as data (the cuda
refusal is tests/test_devices.py's). The CLI runs in this process (``ppl.cli.main``)."""

import contextlib
import hashlib
import io
import json
import subprocess

import numpy as np
import pytest
import torch

import ppl
from ppl.io.run_folder import (
    RunFolderError,
    check_folder,
    clear_run,
    record_files,
    recorded_files,
)

LR = """model LR(x: real[N, D], y: real[N], x_new: real[M, D], y_new: real[M]?) {
  beta: real[D] ~ Normal(0, 2)
  alpha ~ Normal(0, 3)
  y ~ Normal(alpha + x @ beta, 0.5)
  y_new ~ Normal(alpha + x_new @ beta, 0.5)
}
infer map(steps=60, lr=0.1)
"""
X = [[0.3, 0.8], [0.3, -1.3], [0.9, 0.4], [-0.5, 0.6], [0.4, 0.3], [-0.7, -0.2]]
Y = [1.9, -1.4, 2.2, 1.3, 1.3, -0.6]

MU = """model Mu(y: real[N]) {
  mu ~ Normal(0, 1)
  twice = 2 * mu
  y ~ Normal(mu, 1)
}
"""


def cli(*args) -> subprocess.CompletedProcess:
    """``bdl ARGS`` through ``ppl.cli.main`` (argparse's exit 2 included)."""
    from ppl.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:
            code = e.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def lr_run(tmp_path_factory):
    """A map run of LR (written by ``bdl run``), its model file and folder."""
    tmp = tmp_path_factory.mktemp("lr")
    (tmp / "lr.bdl").write_text(LR)
    (tmp / "lr.json").write_text(json.dumps({"x": X, "y": Y, "x_new": [[0.0, 0.0]]}))
    r = cli("run", tmp / "lr.bdl", "--data", tmp / "lr.json", "--out", tmp / "run", "-q")
    assert r.returncode == 0, r.stderr
    return tmp


def _point(run) -> tuple[float, np.ndarray]:
    with np.load(run / "samples.npz") as z:
        return float(z["alpha"].reshape(-1)[0]), z["beta"].reshape(-1, 2)[0]


# ---- 1. seeds ----

@pytest.mark.parametrize("seed", ["-1", "99999999999", "4294967296"])
def test_cli_seed_out_of_range_is_a_usage_error(lr_run, seed):
    r = cli("run", lr_run / "lr.bdl", "--data", lr_run / "lr.json", "--seed", seed,
            "--out", lr_run / "never")
    assert r.returncode == 2
    assert r.stderr.splitlines()[-1] == (f"bdl: error: argument --seed: seed {int(seed)} is "
                                         "out of range: a seed is an integer from 0 to "
                                         "4294967295")
    p = cli("predict", lr_run / "lr.bdl", "--posterior", lr_run / "run", "--data",
            lr_run / "lr.json", "--seed", seed)
    assert p.returncode == 2 and "argument --seed: seed" in p.stderr
    assert not (lr_run / "never").exists()


def test_largest_seed_runs_with_several_chains(lr_run):
    """Chain seeds are derived from (seed, c) within numpy's range (chain_seed): the
    largest seed runs with 2 chains (with seed + c it was exit 1) and run.json keeps it."""
    r = cli("run", lr_run / "lr.bdl", "--data", lr_run / "lr.json", "--seed", "4294967295",
            "--infer", "nuts(samples=5, warmup=5, chains=2)", "--out", lr_run / "top")
    assert r.returncode == 0, r.stderr
    assert json.loads((lr_run / "top" / "run.json").read_text())["seed"] == 4294967295


def test_api_seeds_are_bdl_errors(lr_run):
    m = ppl.load(lr_run / "lr.bdl")
    data = {"x": X, "y": Y, "x_new": [[0.0, 0.0]]}
    with pytest.raises(ppl.BdlError, match="seed"):
        m.fit(data, seed=-1)
    with pytest.raises(ppl.BdlError) as e:
        m.predict_run(lr_run / "run", data, seed=-1)
    assert str(e.value) == ("predict: error: seed=-1 is out of range: a seed is an integer "
                            "from 0 to 4294967295")
    with pytest.raises(ppl.BdlError, match="seed=4294967296 is out of range"):
        m.sample_prior(data, num_samples=2, seed=2**32)


# ---- 2. --force over an older run ----

def test_force_leaves_only_the_new_runs_files(tmp_path):
    (tmp_path / "mu.bdl").write_text(MU)
    (tmp_path / "d.json").write_text('{"y": [0.5, 1.5]}')
    out = tmp_path / "r"
    first = cli("run", tmp_path / "mu.bdl", "--data", tmp_path / "d.json", "--out", out,
                "--infer", "svi(steps=20)", "-q")
    assert first.returncode == 0, first.stderr
    pred = cli("predict", tmp_path / "mu.bdl", "--posterior", out, "--data",
               tmp_path / "d.json", "--out", out, "--draws", "5")
    assert pred.returncode == 0, pred.stderr
    assert {"elbo.txt", "elbo.png", "predictive.npz"} <= {p.name for p in out.iterdir()}
    (out / "notes.txt").write_text("mine")  # a file BDL does not write stays
    again = cli("run", tmp_path / "mu.bdl", "--data", tmp_path / "d.json", "--out", out,
                "--infer", "nuts(samples=5, warmup=5, chains=1)", "--force", "-q")
    assert again.returncode == 0, again.stderr
    wrote = again.stderr.strip().splitlines()[-1]
    assert wrote.startswith(f"wrote {out}/ (")
    listed = set(wrote.split("(", 1)[1].rstrip(")").split(", "))
    assert {p.name for p in out.iterdir()} == listed | {"notes.txt"}
    assert listed == {"summary.csv", "samples.npz", "run.json", "params.pt", "trace.png"}
    assert (out / "notes.txt").read_text() == "mine"


def test_clear_run_removes_only_what_a_run_recorded(tmp_path):
    names = ["run.json", "elbo.txt", "predictive_y.png", "posterior.nc", "data.json",
             "predictive.npz", "bdl-internal-error.txt"]
    for name in names:
        (tmp_path / name).write_text("x")
    # no run.json of BDL's: the same-named files are the user's (a saved traceback is not)
    assert clear_run(tmp_path) == ["bdl-internal-error.txt"]
    assert recorded_files(tmp_path) is None
    # another tool's run.json with a files list: nothing of it is BDL's
    foreign = json.dumps({"tool": "mine", "files": ["data.json"]})
    (tmp_path / "run.json").write_text(foreign)
    assert recorded_files(tmp_path) is None and clear_run(tmp_path) == []
    record_files(tmp_path, ["predictive.npz"])  # bdl predict into that folder: not written
    assert (tmp_path / "run.json").read_text() == foreign
    # a run that recorded its files: those go, the data file it is asked to keep stays
    (tmp_path / "run.json").write_text(json.dumps(
        {"model_hash": "0", "samples_layout": "...",
         "files": ["run.json", "elbo.txt", "predictive_y.png", "predictive.npz", "../x"]}))
    assert clear_run(tmp_path, keep=[tmp_path / "predictive.npz"]) == [
        "elbo.txt", "predictive_y.png", "run.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.json", "posterior.nc",
                                                          "predictive.npz"]
    # a run.json from before "files": the files write_run wrote, not posterior.nc
    (tmp_path / "run.json").write_text('{"model_hash": "0", "samples_layout": "..."}')
    (tmp_path / "elbo.txt").write_text("x")
    assert clear_run(tmp_path) == ["elbo.txt", "run.json"]


FORCE_MODEL = """model P(y: real[N]) {
  mu ~ Normal(0, 1)
  y ~ Normal(mu, 1)
}
infer map(steps=20)
"""


def test_force_keeps_the_users_data_and_hashes_it_first(tmp_path):
    """The reviewer's repro: --data predictive.npz and a posterior.nc of the user's in
    --out, with --force. Both stay, and run.json hashes the data as given."""
    (tmp_path / "m.bdl").write_text(FORCE_MODEL)
    data = tmp_path / "predictive.npz"
    np.savez(data, y=np.array([1.0, 2.0]))
    given = data.read_bytes()
    (tmp_path / "posterior.nc").write_text("mine")
    args = ["run", tmp_path / "m.bdl", "--data", data, "--out", tmp_path, "--force", "-q"]
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    assert data.read_bytes() == given and (tmp_path / "posterior.nc").read_text() == "mine"
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["data_hash"] == hashlib.sha256(given).hexdigest()
    assert run["files"][:5] == ["summary.csv", "samples.npz", "elbo.txt", "run.json",
                                "params.pt"]
    # again over its own run (recorded now), as nuts: elbo.txt/elbo.png go, the data stays
    again = cli(*args, "--infer", "nuts(samples=5, warmup=5, chains=1)")
    assert again.returncode == 0, again.stderr
    assert not (tmp_path / "elbo.txt").exists() and not (tmp_path / "elbo.png").exists()
    assert data.read_bytes() == given and (tmp_path / "posterior.nc").read_text() == "mine"
    assert json.loads((tmp_path / "run.json").read_text())["data_hash"] == run["data_hash"]
    # data that the run would write over: refused before the fit, nothing touched
    samples = (tmp_path / "samples.npz").read_bytes()
    over = cli("run", tmp_path / "m.bdl", "--data", tmp_path / "samples.npz", "--out",
               tmp_path, "--force", "-q")
    assert over.returncode == 1
    assert over.stderr.splitlines()[-1] == (
        f"bdl: error: --data {tmp_path / 'samples.npz'} is inside --out and would be "
        "overwritten (a run writes its own samples.npz there); move the data file or "
        "choose another --out")
    assert (tmp_path / "samples.npz").read_bytes() == samples


# ---- 3. --out naming a file ----

def test_out_naming_a_file_is_exit_1(lr_run, tmp_path):
    f = tmp_path / "afile"
    f.write_text("")
    r = cli("run", lr_run / "lr.bdl", "--data", lr_run / "lr.json", "--out", f, "-q")
    assert (r.returncode, r.stderr.strip()) == (1, f"bdl: error: {f} is a file; --out names "
                                                   "a folder")
    p = cli("predict", lr_run / "lr.bdl", "--posterior", lr_run / "run", "--data",
            lr_run / "lr.json", "--out", f / "sub")
    assert (p.returncode, p.stderr.strip()) == (
        1, f"bdl: error: {f / 'sub'} is under {f}, which is a file; --out names a folder")
    assert f.read_text() == ""
    with pytest.raises(RunFolderError):
        check_folder(f)
    check_folder(tmp_path / "new" / "deeper")  # not there yet: fine


# ---- 4. tex --model ----

def test_tex_unknown_model_is_exit_1(lr_run):
    r = cli("tex", lr_run / "lr.bdl", "--model", "Nope")
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr.strip() == f"bdl: error: {lr_run / 'lr.bdl'}: no model named 'Nope'"


# ---- 5, 6. predict without the observed data; map runs ----

def test_predict_a_map_run_without_y_draws_y_at_the_estimate(lr_run, tmp_path):
    alpha, beta = _point(lr_run / "run")
    x = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, -1.0]])
    (tmp_path / "new.json").write_text(json.dumps({"x": x.tolist(), "x_new": [[1.0, 0.0]]}))
    r = cli("predict", lr_run / "lr.bdl", "--posterior", lr_run / "run", "--data",
            tmp_path / "new.json", "--out", tmp_path / "p")
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "p" / "predictive.npz") as z:
        assert sorted(z.files) == ["y", "y_new"]
        y, y_new = z["y"], z["y_new"]
    assert y.shape == (1000, 3) and y_new.shape == (1000, 1)  # a map run: 1000 draws
    # every draw is at the estimate: y ~ Normal(alpha + x @ beta, 0.5), 4 standard errors
    mean = alpha + x @ beta
    assert np.all(np.abs(y.mean(0) - mean) < 4 * 0.5 / np.sqrt(1000))
    assert abs(y_new.mean() - (alpha + beta[0])) < 4 * 0.5 / np.sqrt(1000)
    assert np.all(np.abs(y.std(0) - 0.5) < 0.05)  # the noise alone: sd 0.5
    assert "value" not in r.stdout.splitlines()[0]  # a table of draws, not one value


def test_predict_draws_option(lr_run, tmp_path):
    m = ppl.load(lr_run / "lr.bdl")
    new = {"x": X, "y": Y, "x_new": [[0.0, 0.0], [1.0, 1.0]]}
    pred = m.predict_run(lr_run / "run", new, seed=1, draws=7)
    assert list(pred) == ["y_new"] and pred["y_new"].shape == (7, 2)
    with pytest.raises(ppl.BdlError, match="draws=0: expected a positive integer"):
        m.predict_run(lr_run / "run", new, draws=0)
    r = cli("predict", lr_run / "lr.bdl", "--posterior", lr_run / "run", "--data",
            lr_run / "lr.json", "--draws", "0")
    assert r.returncode == 2 and "expected a positive integer, not '0'" in r.stderr


def test_draws_thins_a_sampled_run_evenly(tmp_path):
    m = ppl.compile(MU)
    fit = m.fit({"y": [0.5, 1.5]}, infer="nuts(samples=5, warmup=5, chains=2)")
    fit.save(tmp_path / "r")
    mu = fit.chains["mu"].reshape(-1)  # chains flattened: 10 draws
    pred = m.predict_run(tmp_path / "r", {"y": [0.5, 1.5]}, seed=0, draws=4)
    # draws 0, 3, 6, 9 of the 10; twice is recomputed from each
    assert torch.equal(pred["twice"], 2 * mu[[0, 3, 6, 9]])
    assert m.predict_run(tmp_path / "r", {"y": [0.5, 1.5]}, draws=50)["twice"].shape == (10,)


REG = """model R(x: real[N], y: real[N], x_new: real[M], y_new: real[M]?) {
  b ~ Normal(0, 10)
  y ~ Normal(b * x, 1)
  y_new ~ Normal(b * x_new, 1)
}
"""


def test_map_run_has_no_predictive_plot_of_one_draw(tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "r.bdl").write_text(REG)
    (tmp_path / "r.json").write_text(json.dumps(
        {"x": [0.0, 1.0, 2.0], "y": [0.1, 0.9, 2.2], "x_new": [0.5, 1.5, 3.0]}))
    # y_new is one draw at the estimate in a map fit: no mean and bands to plot
    for spec, plotted in [("map(steps=20)", False), ("map(steps=20, samples=30)", True)]:
        out = tmp_path / spec[-3:-1]
        r = cli("run", tmp_path / "r.bdl", "--data", tmp_path / "r.json", "--infer", spec,
                "--out", out, "-q")
        assert r.returncode == 0, r.stderr
        assert (out / "predictive_y_new.png").exists() == plotted
        assert ("predictive_y_new.png" in r.stderr) == plotted


# ---- 7. new data of another width ----

def test_new_data_of_another_width_names_the_saved_shape(lr_run, tmp_path):
    (tmp_path / "d3.json").write_text(json.dumps(
        {"x": [[0, 0, 0]], "y": [1.0], "x_new": [[0, 0, 0], [1, 1, 1]]}))
    r = cli("predict", lr_run / "lr.bdl", "--posterior", lr_run / "run", "--data",
            tmp_path / "d3.json", "--out", tmp_path / "p")
    assert r.returncode == 1
    assert r.stderr.strip() == (
        f"bdl: error: the new data do not fit the draws saved in {lr_run / 'run'}: latent "
        "'beta' was saved as [2] per draw; with these data it is [3]. A latent's shape "
        "comes from the data's sizes: predict with data of the sizes the run was fitted "
        "with, or re-run 'bdl run'")
    assert not (tmp_path / "p").exists()


# ---- 8. new data that fix every site ----

def test_nothing_to_predict_is_a_note(lr_run, tmp_path):
    new = tmp_path / "all.json"
    new.write_text(json.dumps({"x": [[0, 0]], "y": [1.0], "x_new": [[0, 0]], "y_new": [0.5]}))
    r = cli("predict", lr_run / "lr.bdl", "--posterior", lr_run / "run", "--data", new,
            "--out", tmp_path / "p")
    assert (r.returncode, r.stdout) == (0, "")
    assert r.stderr.strip() == (
        f"bdl: note: nothing to predict: {new} gives every site that the run did not sample "
        "(y, y_new); leave out what to predict (optional data such as 'y_new: real[M]?', or "
        "observed data at new inputs). Nothing was written")
    assert not (tmp_path / "p").exists()


# ---- 9. ArviZ attrs ----

def test_arviz_export_keeps_attrs_without_a_warning(tmp_path):
    pytest.importorskip("arviz_base")
    import warnings

    m = ppl.compile(MU)
    fit = m.fit({"y": [0.5, 1.5]}, infer="nuts(samples=5, warmup=5, chains=1)")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tree = fit.to_inference_data()
    attrs = tree["posterior"].attrs
    assert (attrs["inference_library"], attrs["bdl_method"]) == ("pyro", "nuts")


# ---- 10. a fit given a latent as data ----

LATENT_AS_DATA = """model M(x: real[N]) {
  mu ~ Normal(0, 5)
  y ~ Normal(mu + x, 1)
}
"""


def test_fit_with_a_data_key_naming_a_latent_is_an_error_at_its_draw():
    m = ppl.compile(LATENT_AS_DATA, "m.bdl")
    with pytest.raises(ppl.BdlError) as e:
        m.fit({"x": [1.0, 2.0], "y": [1.5, 2.5]}, infer="map(steps=5)")
    assert e.value.render() == """\
m.bdl:3:3: error: 'y' is given as data but the model draws it
    y ~ Normal(mu + x, 1)
    ^
  note: declare 'y: real[N]' as an argument of model M to observe it"""
    # predict and sample_prior take it as an unused key, with the warning
    with pytest.warns(UserWarning, match=r"data keys not used by model M: y \(ignored\)"):
        prior = m.sample_prior({"x": [1.0, 2.0], "y": [1.5, 2.5]}, num_samples=3, seed=0)
    assert prior["y"].shape == (3, 2)
