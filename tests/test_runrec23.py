"""Run records (reproducibility audit, runrec23): run.json says which code and what
machine made a run (versions, git commit, platform, thread count); ``fit.save`` hashes
the data given as arrays (``data_hash_kind``)."""

import hashlib
import json
import os
import platform
import subprocess

import numpy as np
import torch
from test_run_folders import cli  # bdl ARGS through ppl.cli.main, in this process

import ppl
from ppl.io.run_folder import data_fingerprint, environment, source_commit

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
