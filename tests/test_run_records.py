"""Run records: run.json says which code and what
machine made a run (versions, git commit, platform, thread count); ``fit.save`` hashes
the data given as arrays (``data_hash_kind``); ``bdl predict`` writes predict.json beside
predictive.npz, replaced by ``--force`` with it, and recorded in the run folder."""

import hashlib
import json
import os
import platform
import subprocess

import numpy as np
import pytest
import torch
from test_run_folders import cli  # bdl ARGS through ppl.cli.main, in this process

import ppl
from ppl.io.run_folder import data_fingerprint, environment, file_hash, source_commit

MU = """model Mu(y: real[N], y_new: real[M]?) {
  mu ~ Normal(0, 1)
  y ~ Normal(mu, 1)
  y_new ~ Normal(mu, 1)
}
infer map(steps=20)
"""


def test_environment_names_the_code_and_the_machine():
    env = environment()
    v, e = env["versions"], env["environment"]
    assert set(v) == {"ppl", "ppl_commit", "ppl_dirty", "python", "numpy", "torch", "pyro"}
    assert v["python"] == platform.python_version() and v["numpy"] == np.__version__
    assert v["torch"] == torch.__version__ and v["ppl"] == ppl.__version__
    assert e["machine"] == platform.machine() and e["platform"] == platform.platform()
    assert e["torch_threads"] == torch.get_num_threads() and type(e["torch_threads"]) is int
    # this checkout's commit (others may commit or edit meanwhile: checked in a repo below)
    assert (v["ppl_commit"] is None) is (v["ppl_dirty"] is None)
    if v["ppl_commit"] is not None:
        int(v["ppl_commit"], 16)
        assert len(v["ppl_commit"]) == 40 and type(v["ppl_dirty"]) is bool


def test_source_commit_of_a_checkout(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_DIR", "/nonexistent")  # a caller's (a hook's): not followed
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              cwd=tmp_path, capture_output=True, text=True, env=env,
                              check=True).stdout.strip()

    pkg = tmp_path / "ppl"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("x = 1\n")
    git("init", "-q")
    assert source_commit(where=pkg) == (None, None)  # no commit yet
    git("add", "ppl/__init__.py")
    git("commit", "-q", "-m", "one")
    head = git("rev-parse", "HEAD")
    assert source_commit(where=pkg) == (head, False)
    (pkg / "notes.txt").write_text("untracked: not a change to the code")
    assert source_commit(where=pkg) == (head, False)
    (pkg / "__init__.py").write_text("x = 2\n")
    assert source_commit(where=pkg) == (head, True)
    # a package folder inside a repository that does not track it: not its code
    other = tmp_path / "venv" / "ppl"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("")
    assert source_commit(where=other) == (None, None)


def test_source_commit_outside_a_checkout_is_none(monkeypatch):
    """git missing (or not answering): None, never an error."""
    def missing(*a, **k):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", missing)
    assert source_commit() == (None, None)

    def slow(*a, **k):
        raise subprocess.TimeoutExpired("git", 5)

    monkeypatch.setattr(subprocess, "run", slow)
    assert source_commit() == (None, None)


def test_run_json_records_versions_and_environment(tmp_path):
    (tmp_path / "mu.bdl").write_text(MU)
    (tmp_path / "d.json").write_text('{"y": [0.5, 1.5], "M": 1}')
    r = cli("run", tmp_path / "mu.bdl", "--data", tmp_path / "d.json", "--out",
            tmp_path / "r", "-q")
    assert r.returncode == 0, r.stderr
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    env = environment()
    assert run["environment"] == env["environment"]
    for k in ("ppl", "python", "numpy", "torch", "pyro"):
        assert run["versions"][k] == env["versions"][k]
    assert {"ppl_commit", "ppl_dirty"} <= set(run["versions"])
    # the CLI's data hash is the file's, and says so
    assert run["data_hash"] == hashlib.sha256((tmp_path / "d.json").read_bytes()).hexdigest()
    assert run["data_hash_kind"] == "file"


# ---- 2. fit.save hashes the data given as arrays ----

def test_data_fingerprint_is_canonical():
    Y = torch.tensor([0.5, 1.5], dtype=torch.float64)
    a = {"y": Y, "N": 2, "w": None}
    base = data_fingerprint(a)
    assert len(base) == 64
    assert data_fingerprint({"w": None, "N": 2, "y": Y}) == base
    assert data_fingerprint({"y": np.array([0.5, 1.5]), "N": 2, "w": None}) == base
    changed = [{"y": torch.tensor([0.5, 1.6], dtype=torch.float64), "N": 2, "w": None},
               {"y": Y.float(), "N": 2, "w": None},   # another dtype
               {"y": Y[None], "N": 2, "w": None},     # another shape
               {"y": Y, "N": 3, "w": None},
               {"y": Y, "N": 2},                      # a key less
               {"z": Y, "N": 2, "w": None}]           # renamed
    hashes = [data_fingerprint(c) for c in changed]
    assert base not in hashes and len(set(hashes)) == len(hashes)
    # by hand: the layout documented in data_fingerprint
    h = hashlib.sha256(b"bdl-data-arrays-v1\0")
    for part in (b"y", b"<f8 (2,)", np.array([0.5, 1.5]).tobytes()):
        h.update(len(part).to_bytes(8, "little") + part)
    assert data_fingerprint({"y": np.array([0.5, 1.5])}) == h.hexdigest()


def test_fit_save_records_an_arrays_hash(tmp_path):
    m = ppl.compile(MU)
    data = {"y": [0.5, 1.5], "M": 1}
    fit = m.fit(data)
    fit.save(tmp_path / "a")
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["data"] is None and run["data_hash_kind"] == "arrays"
    # the data as the model was given them: sizes, tensors (map's dtype, float32),
    # optional data left out as None
    assert run["data_hash"] == data_fingerprint(
        {"M": 1, "N": 2, "y": torch.tensor([0.5, 1.5], dtype=torch.float32), "y_new": None})
    assert run["versions"]["python"] == platform.python_version()
    m.fit({"y": [0.5, 1.25], "M": 1}).save(tmp_path / "b")
    other = json.loads((tmp_path / "b" / "run.json").read_text())
    assert other["data_hash"] != run["data_hash"]


# ---- 3. predict.json ----

@pytest.fixture
def mu_run(tmp_path):
    (tmp_path / "mu.bdl").write_text(MU)
    (tmp_path / "d.json").write_text('{"y": [0.5, 1.5], "M": 1}')
    (tmp_path / "new.json").write_text('{"y": [0.5, 1.5], "M": 3}')
    r = cli("run", tmp_path / "mu.bdl", "--data", tmp_path / "d.json", "--out",
            tmp_path / "r", "-q")
    assert r.returncode == 0, r.stderr
    return tmp_path


def test_predict_json_records_what_was_asked(mu_run):
    t = mu_run
    out = t / "p"
    r = cli("predict", t / "mu.bdl", "--posterior", t / "r", "--data", t / "new.json",
            "--out", out, "--seed", "7", "--draws", "5")
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"wrote {out}/ (predictive.npz, predict.json)"
    rec = json.loads((out / "predict.json").read_text())
    with np.load(out / "predictive.npz") as z:
        shapes = {k: list(z[k].shape) for k in z.files}
    assert shapes == {"y_new": [5, 3]}
    env = environment()
    for k in ("ppl_commit", "ppl_dirty"):  # this checkout's: others may commit meanwhile
        assert k in rec["versions"]
        del rec["versions"][k], env["versions"][k]
    assert rec == {
        "predictive": "predictive.npz", "model": "Mu", "file": str(t / "mu.bdl"),
        "model_hash": hashlib.sha256(MU.encode()).hexdigest(),
        "posterior": str(t / "r"),
        "posterior_model_hash": json.loads((t / "r" / "run.json").read_text())["model_hash"],
        "posterior_samples_hash": file_hash(t / "r" / "samples.npz"),
        "data": str(t / "new.json"),
        "data_hash": hashlib.sha256((t / "new.json").read_bytes()).hexdigest(),
        "data_hash_kind": "file", "seed": 7, "draws": 5, "num_draws": 5,
        "sites": shapes, "versions": env["versions"], "environment": env["environment"],
        "files": ["predictive.npz", "predict.json"]}
    # the default seed and draws are recorded as such
    r = cli("predict", t / "mu.bdl", "--posterior", t / "r", "--data", t / "new.json",
            "--out", t / "q")
    assert r.returncode == 0, r.stderr
    rec = json.loads((t / "q" / "predict.json").read_text())
    assert (rec["seed"], rec["draws"], rec["num_draws"]) == (0, None, 1000)  # map: 1000


def test_predict_force_replaces_its_files_not_the_users(mu_run):
    t = mu_run
    out = t / "p"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["predict", t / "mu.bdl", "--posterior", t / "r", "--data", t / "new.json",
            "--out", out]
    assert cli(*args, "--seed", "1").returncode == 0
    first = json.loads((out / "predict.json").read_text())
    # without --force an existing predict.json (alone) is refused, nothing written
    (out / "predictive.npz").unlink()
    r = cli(*args, "--seed", "2")
    assert (r.returncode, r.stderr.strip()) == (
        1, f"bdl: error: {out / 'predict.json'} exists; use --force to overwrite it")
    assert not (out / "predictive.npz").exists()
    assert json.loads((out / "predict.json").read_text()) == first
    r = cli(*args, "--seed", "2", "--force")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "predict.json").read_text())["seed"] == 2
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "predict.json",
                                                     "predictive.npz"]


def test_predict_into_the_run_folder_is_recorded_and_removed_with_the_run(mu_run):
    t = mu_run
    r = cli("predict", t / "mu.bdl", "--posterior", t / "r", "--data", t / "new.json")
    assert r.returncode == 0, r.stderr
    files = json.loads((t / "r" / "run.json").read_text())["files"]
    assert files[-2:] == ["predictive.npz", "predict.json"]
    again = cli("run", t / "mu.bdl", "--data", t / "d.json", "--out", t / "r", "--force",
                "-q")
    assert again.returncode == 0, again.stderr
    names = {p.name for p in (t / "r").iterdir()}
    assert "predict.json" not in names and "predictive.npz" not in names


def test_predict_refuses_data_it_would_write_over(mu_run):
    t = mu_run
    out = t / "p"
    out.mkdir()
    data = out / "predict.json"
    data.write_text('{"y": [0.5, 1.5], "M": 3}')
    r = cli("predict", t / "mu.bdl", "--posterior", t / "r", "--data", data, "--out", out,
            "--force")
    assert r.returncode == 1
    assert r.stderr.strip() == (f"bdl: error: --data {data} would be overwritten by the "
                                "predict.json that bdl predict writes there; move the data "
                                "file or choose another --out")
    assert data.read_text() == '{"y": [0.5, 1.5], "M": 3}'
    assert not (out / "predictive.npz").exists()
