"""The bdl command end to end, as a user runs it.

Each subprocess pays the Python + torch import (seconds), so a command runs through a
subprocess where the process boundary is what is tested (exit codes at the shell, the main
run, the emitted module run on its own); refusals and the small runs call ``ppl.cli.main``
in this process (``bdl_here``), the same code behind ``python -m ppl.cli``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ppl.io.data import DataError, load_data

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.bdl"))

LINREG = """\
# a small regression with a posterior predictive for new inputs
model LinReg(x: real[N], y: real[N], x_new: real[M], y_new: real[M]?) {
  alpha ~ Normal(0, 10)
  beta ~ Normal(0, 10)
  sigma ~ HalfNormal(5)
  y ~ Normal(alpha + beta * x, sigma)
  y_new ~ Normal(alpha + beta * x_new, sigma)
}

infer nuts(samples=100, warmup=100, chains=2)
"""


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # small models: one thread is fastest


def bdl(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ppl.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300, env=ENV)


@pytest.fixture
def linreg(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    y = 1.0 + 2.0 * x + 0.5 * rng.normal(size=30)
    f = tmp_path / "linreg.bdl"
    f.write_text(LINREG)
    (tmp_path / "linreg.data.json").write_text(
        json.dumps({"x": x.tolist(), "y": y.tolist(), "x_new": [0.0, 1.0]}))
    (tmp_path / "new.json").write_text(
        json.dumps({"x": x.tolist(), "y": y.tolist(), "x_new": [2.0, 3.0, 4.0]}))
    return f


def test_check_ok_and_error_exit_codes(tmp_path):
    ok = bdl("check", ROOT / "examples" / "eight_schools.bdl")
    assert ok.returncode == 0 and "ok (EightSchools)" in ok.stdout
    bad = tmp_path / "bad.bdl"
    bad.write_text("model M(y: real[N]) {\n  mu ~ Normall(0, 1)\n  y ~ Normal(mu, 1)\n}\n")
    r = bdl("check", bad)
    assert r.returncode == 1
    assert r.stderr == (f"{bad}:2:8: error: unknown distribution 'Normall'\n"
                        "    mu ~ Normall(0, 1)\n"
                        "         ^~~~~~~\n"
                        "  note: did you mean 'Normal'?\n")
    assert "Traceback" not in r.stderr


def test_usage_error_exit_code_is_2():
    r = bdl("run")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr


def test_missing_file_is_a_user_error(tmp_path):
    r = bdl("check", tmp_path / "nope.bdl")
    assert r.returncode == 1
    assert r.stderr.strip() == f"bdl: error: {tmp_path / 'nope.bdl'}: no such file"


def test_compile_then_run_the_emitted_file(linreg, tmp_path, bdl_here, monkeypatch):
    out = tmp_path / "linreg.py"
    r = bdl_here("compile", linreg, "-o", out)  # (bdl in a process of its own: test_run_writes_...)
    assert r.returncode == 0, r.stderr
    # the generated module runs on its own with ppl installed
    run = subprocess.run([sys.executable, str(out), str(tmp_path / "linreg.data.json")],
                         capture_output=True, text=True, timeout=300, env=ENV)
    assert run.returncode == 0, run.stderr
    assert "beta" in run.stdout and "r_hat" in run.stdout
    beta_row = next(line for line in run.stdout.splitlines() if line.startswith("beta"))
    assert abs(float(beta_row.split()[1]) - 2.0) < 0.5
    # never overwrite without --force
    again = bdl_here("compile", linreg, "-o", out)
    assert again.returncode == 1 and "use --force" in again.stderr
    assert bdl_here("compile", linreg, "-o", out, "--force").returncode == 0
    # "-o -" is standard output, not a file named "-"
    monkeypatch.chdir(tmp_path)
    dash = bdl_here("compile", linreg, "-o", "-")
    assert dash.returncode == 0 and dash.stdout == out.read_text()
    assert not (tmp_path / "-").exists()


def test_run_writes_outputs_and_predict_uses_them(linreg, tmp_path, bdl_here):
    out = tmp_path / "run1"
    r = bdl("run", linreg, "--out", out, "--seed", "3", "-q")
    assert r.returncode == 0, r.stderr
    assert {"summary.csv", "samples.npz", "run.json"} <= {p.name for p in out.iterdir()}
    meta = json.loads((out / "run.json").read_text())
    assert meta["seed"] == 3 and meta["infer"]["method"] == "nuts"
    assert meta["versions"]["ppl"] == "0.1.0" and len(meta["model_hash"]) == 64
    with np.load(out / "samples.npz") as z:
        assert z["beta"].shape == (2, 100)  # chains kept apart
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0] == "name,mean,sd,5%,50%,95%,r_hat,ess"
    beta = next(line for line in summary if line.startswith('"beta"'))
    assert abs(float(beta.split(",")[1]) - 2.0) < 0.5
    # an existing, non-empty run folder is not overwritten
    again = bdl_here("run", linreg, "--out", out, "-q")
    assert again.returncode == 1 and "--force" in again.stderr
    pred = bdl_here("predict", linreg, "--posterior", out, "--data", tmp_path / "new.json")
    assert pred.returncode == 0, pred.stderr
    with np.load(out / "samples.npz") as z:
        mean_at_4 = (z["alpha"] + 4 * z["beta"]).reshape(-1)
    with np.load(out / "predictive.npz") as z:
        assert z["y_new"].shape == (200, 3)
        assert "y" not in z.files
        # y_new | x=4 is alpha + 4 beta plus noise: its mean agrees with the posterior's
        # mean of alpha + 4 beta within Monte Carlo error (4 standard errors)
        draws = z["y_new"][:, 2]
        assert abs(draws.mean() - mean_at_4.mean()) < 4 * draws.std() / np.sqrt(len(draws))
    # the model edited after the run: a new latent is drawn from its prior, with a warning
    edited = tmp_path / "edited.bdl"
    edited.write_text(linreg.read_text().replace(
        "  y_new ~ Normal(alpha + beta * x_new, sigma)",
        "  shift ~ Normal(100, 1)\n  y_new ~ Normal(alpha + beta * x_new + shift, sigma)"))
    pred = bdl_here("predict", edited, "--posterior", out, "--data", tmp_path / "new.json",
               "--out", tmp_path / "p2")
    assert pred.returncode == 0, pred.stderr
    assert "has changed since the run" in pred.stderr and "shift" in pred.stderr
    # a run of another model
    other = tmp_path / "other.bdl"
    other.write_text("model Other(y: real[N]) {\n  y ~ Normal(0, 1)\n}\n")
    pred = bdl_here("predict", other, "--posterior", out, "--data", tmp_path / "new.json")
    assert pred.returncode == 1 and "is a run of model 'LinReg'" in pred.stderr


def test_run_infer_override_and_bad_option(linreg, tmp_path, bdl_here):
    r = bdl_here("run", linreg, "--infer", "svi(steps=300, lr=0.05, samples=200)", "--out",
            tmp_path / "svi", "-q")
    assert r.returncode == 0, r.stderr
    assert "final ELBO" in r.stdout
    # autoguide parameters are machinery, not point estimates of the model
    assert "point estimates" not in r.stdout
    assert json.loads((tmp_path / "svi" / "run.json").read_text())["point_estimates"] == {}
    bad = bdl_here("run", linreg, "--infer", "svi(stepz=3)", "--out", tmp_path / "x")
    assert bad.returncode == 1
    assert "unknown option 'stepz' for svi" in bad.stderr
    assert "did you mean 'steps'?" in bad.stderr


def test_bad_data_is_a_located_error(linreg, tmp_path, bdl_here):
    data = tmp_path / "bad.json"
    data.write_text(json.dumps({"x": [1.0, 2.0], "y": [1.0, 2.0, 3.0], "x_new": [0.0]}))
    r = bdl_here("run", linreg, "--data", data, "--out", tmp_path / "o")
    assert r.returncode == 1
    assert r.stderr.splitlines()[-4:] == [
        f"{linreg}:2:26: error: size N is 2 from 'x' (dimension 0) but 3 from 'y' (dimension 0)",
        "  model LinReg(x: real[N], y: real[N], x_new: real[M], y_new: real[M]?) {",
        "                           ^",
        "  note: 'x' is declared at 2:14",
    ]
    broken = tmp_path / "broken.json"
    broken.write_text('{"x": [1, 2,}')
    r = bdl_here("run", linreg, "--data", broken, "--out", tmp_path / "o2")
    assert r.returncode == 1
    assert r.stderr.startswith(f"bdl: error: {broken}:1:13: invalid JSON")


def test_fmt_check_info_tex(tmp_path, linreg, bdl_here):
    r = bdl("fmt", "--check", *EXAMPLES)  # one process for all the examples
    assert r.returncode == 0, f"not in canonical layout:\n{r.stderr}"
    messy = tmp_path / "messy.bdl"
    messy.write_text(LINREG.replace("alpha ~ Normal(0, 10)", "alpha~Normal( 0,10 )  # a"))
    assert bdl_here("fmt", "--check", messy).returncode == 1
    assert bdl_here("fmt", "--in-place", messy).returncode == 0
    assert "  alpha ~ Normal(0, 10)  # a\n" in messy.read_text()
    assert bdl_here("fmt", "--check", messy).returncode == 0
    info = json.loads(bdl_here("info", linreg).stdout)
    assert info["data"]["y_new"] == {"type": "real", "dims": ["M"], "optional": True}
    assert set(info["latents"]) == {"alpha", "beta", "sigma"}
    assert info["sizes"] == ["N", "M"]
    tex = bdl_here("tex", linreg).stdout
    assert r"\alpha &\sim \mathrm{Normal}{\left(0,10 \right)}" in tex


def test_data_formats_round_trip(tmp_path):
    (tmp_path / "d.json").write_text('{"n": 3, "y": [1, 2, 3], "z": [0.5, 1.5]}')
    d = load_data(tmp_path / "d.json")
    assert d["n"] == 3 and d["y"] == [1, 2, 3]
    (tmp_path / "d.csv").write_text("y,x[0],x[1],k\n1.5,1,2,3\n2.5,3,4,5\n")
    d = load_data(tmp_path / "d.csv")
    assert d["y"].tolist() == [1.5, 2.5]
    assert d["x"].tolist() == [[1, 2], [3, 4]] and d["x"].dtype == np.int64
    assert d["k"].dtype == np.int64
    np.savez(tmp_path / "d.npz", a=np.arange(6).reshape(2, 3), b=np.ones(2))
    d = load_data(tmp_path / "d.npz")
    assert d["a"].shape == (2, 3) and d["a"].dtype.kind == "i"
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3\n")
    with pytest.raises(DataError, match=r"bad.csv:3: expected 2 values, found 1"):
        load_data(tmp_path / "bad.csv")
    with pytest.raises(DataError, match="unknown data format"):
        load_data(tmp_path / "d.txt") if (tmp_path / "d.txt").write_text("1") else None


def test_run_prints_and_records_point_estimates(tmp_path, bdl_here):
    src = tmp_path / "p.bdl"
    src.write_text("model P(y: real[N]) {\n  param m: real = 0.0\n  y ~ Normal(m, 1)\n}\n"
                   "infer map(steps=300, lr=0.05)\n")
    (tmp_path / "p.data.json").write_text(json.dumps({"y": [1.0, 2.0, 3.0]}))
    r = bdl_here("run", src, "--out", tmp_path / "run", "-q")
    assert r.returncode == 0, r.stderr
    assert "point estimates" in r.stdout
    m = json.loads((tmp_path / "run" / "run.json").read_text())["point_estimates"]["m"]
    assert abs(m - 2.0) < 0.05  # the MLE: the mean of y


def test_run_without_any_data_file_says_so(tmp_path, bdl_here):
    m = tmp_path / "nodata.bdl"
    m.write_text("model P(y: real[N]) {\n  mu ~ Normal(0, 1)\n  y ~ Normal(mu, 1)\n}\n")
    r = bdl_here("run", m, "--out", tmp_path / "o", "--infer", "svi(steps=1)")
    assert r.returncode == 1
    assert "missing data for 'y'" in r.stderr
    assert "no data file was given (--data) and there is no nodata.data.json" in r.stderr
    # the resolved options print as the language writes them: the line pastes back
    assert "jit=false" in r.stderr and "False" not in r.stderr


def _wrote(stderr: str, out: Path) -> list[str]:
    """The files the last line of ``bdl run`` says it wrote into ``out``."""
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"wrote {out}/ (") and last.endswith(")"), last
    return last[len(f"wrote {out}/ ("):-1].split(", ")


def test_run_lists_every_file_it_wrote(tmp_path, bdl_here):
    src = tmp_path / "p.bdl"
    src.write_text("model P(y: real[N]) {\n  mu ~ Normal(0, 1)\n  y ~ Normal(mu, 1)\n}\n"
                   "infer svi(steps=20, samples=20)\n")
    (tmp_path / "p.data.json").write_text(json.dumps({"y": [0.5, 1.5]}))
    r = bdl_here("run", src, "--out", tmp_path / "run", "-q")
    assert r.returncode == 0, r.stderr
    listed = _wrote(r.stderr, tmp_path / "run")
    assert listed[:5] == ["summary.csv", "samples.npz", "elbo.txt", "run.json", "params.pt"]
    # plots when matplotlib is there: the list is exactly the folder's files
    assert sorted(listed) == sorted(p.name for p in (tmp_path / "run").iterdir())


NP_MODEL = """\
model NP(xc: real[C, 1], yc: real[C, 1], xt: real[T, 1], yt: real[T, 1]?) {
  g = cnp(x_dim=1, y_dim=1, hidden=8)
  yt ~ g(xc, yc, xt)
}
infer np_train(steps=2, batch=2, tasks=gp_tasks(kernel=rbf, lengthscale=[0.1, 0.6]))
"""


def test_np_train_run_reports_and_records_its_evaluation(tmp_path, capsys):
    from ppl.cli import main

    src = tmp_path / "np.bdl"
    src.write_text(NP_MODEL)
    (tmp_path / "np.data.json").write_text(json.dumps(
        {"xc": [[0.0], [0.5], [1.0]], "yc": [[0.0], [0.4], [0.8]], "xt": [[0.25], [0.75]]}))
    assert main(["run", str(src), "--out", str(tmp_path / "run"), "-q"]) == 0
    out = capsys.readouterr()
    rec = json.loads((tmp_path / "run" / "run.json").read_text())
    ev, loss = rec["np_eval"]["g"], rec["train_loss"]["g"]
    assert loss["steps"] == 2 and loss["mean_last_10pct"] == loss["final"]
    # the line printed after the summary is what run.json holds
    assert (f"g: final train loss {loss['final']:.4g} after 2 steps; fresh tasks: context "
            f"ll {ev['ctx_ll']:.3f}, target ll {ev['tgt_ll']:.3f} per point"
            ) in out.out.splitlines()
    assert _wrote(out.err, tmp_path / "run") == ["summary.csv", "samples.npz", "run.json",
                                                 "params.pt"]


def test_meta_run_reports_and_records_its_meta_test(tmp_path, capsys):
    from ppl.cli import main

    src = tmp_path / "m.bdl"
    src.write_text("""\
model FewShot(xs: real[S, 1], ys: real[S], xq: real[Q, 1], yq: real[Q]) {
  f = mlp(1, [4], 1, act=relu)
  f ~ niw_meta(n0=1, gamma0=1e6, sgld_steps=3)
  ys ~ Normal(f(xs)[:, 0], 0.3)
  yq ~ Normal(f(xq)[:, 0], 0.3)
}
infer meta(episodes="sine_line", steps=2, batch=2, test_episodes=3, samples=2)
""")
    x = np.linspace(-4, 4, 50)
    (tmp_path / "m.data.json").write_text(json.dumps(
        {"xs": x[:5, None].tolist(), "ys": np.sin(x[:5]).tolist(),
         "xq": x[5:, None].tolist(), "yq": np.sin(x[5:]).tolist()}))
    assert main(["run", str(src), "--out", str(tmp_path / "run"), "-q"]) == 0
    out = capsys.readouterr().out
    meta = json.loads((tmp_path / "run" / "run.json").read_text())["meta"]
    test = meta["test"]
    assert set(test) >= {"err", "err_ci", "nll", "ece"} and "history" not in meta
    assert (f"meta-test (3 episodes): query err {test['err']:.4g} \u00b1 "
            f"{test['err_ci']:.2g}, nll {test['nll']:.4g}, ece {test['ece']:.4g}"
            ) in out.splitlines()
