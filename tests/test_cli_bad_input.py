"""Bad CLI and data-file input: every one a
clear error naming the file (and key, cell or option), exit status 1, no traceback and no
"internal error" — integers beyond int64 and numbers that overflow a float in data files,
a CSV family with a huge gap, a duplicate JSON key, JSON nested too deeply, a header
``x[-1]``, an ``--infer`` budget beyond int64, a flag and the same ``--infer`` option with
different values, outputs that cannot be written (checked before the fit), ``compile -o``
naming its own model file, damaged run folders for ``bdl predict`` (never prior draws in
place of a missing latent's), observed data holding inf; a folder holding only a failed
run's traceback is reused without --force."""

import json
import runpy
from pathlib import Path

import numpy as np
import pytest

from ppl.io.data import DataError, load_data
from ppl.runtime.main import main as module_main

MU = """model Mu(y: real[N]) {
  mu ~ Normal(0, 1)
  twice = 2 * mu
  y ~ Normal(mu, 1)
}
infer map(steps=5)
"""
FIT = "nuts(samples=3, warmup=3, chains=1)"


def _file(tmp_path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _refused(p: Path) -> str:
    """The message of the DataError that reading the data file ``p`` raises."""
    with pytest.raises(DataError) as e:
        load_data(p)
    return str(e.value)


def _user_error(r, *parts: str) -> str:
    """The stderr of a run that failed as the user's mistake (exit 1, no traceback, no
    internal error), which must hold every one of ``parts``."""
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    for part in parts:
        assert part in r.stderr, r.stderr
    return r.stderr


# ---- data files ----

def test_csv_integers_beyond_int64_are_located_errors(tmp_path, bdl_here):
    big = "99999999999999999999999"
    for cell in (big, "-" + big):
        p = _file(tmp_path, "d.csv", f"y,n\n1.5,2\n2.5,{cell}\n")
        assert _refused(p) == (f"{p}:3:5: column 'n': the integer {cell} is too large: it "
                               "is beyond a 64-bit integer (int, -9223372036854775808 to "
                               "9223372036854775807)")
    # the largest int64 still reads, as an int column
    p = _file(tmp_path, "d.csv", "n\n9223372036854775807\n-9223372036854775808\n")
    assert load_data(p)["n"].tolist() == [2**63 - 1, -2**63]
    model = _file(tmp_path, "m.bdl", MU)
    p = _file(tmp_path, "d.csv", f"y\n{big}\n")
    _user_error(bdl_here("run", model, "--data", p, "--out", tmp_path / "o", "-q"),
                f"bdl: error: {p}:2:1: column 'y': the integer {big} is too large")
    assert not (tmp_path / "o").exists()


def test_numbers_that_overflow_a_float_are_errors_inf_itself_is_read(tmp_path):
    p = _file(tmp_path, "d.csv", "y\n1e309\n")
    with pytest.raises(DataError, match=r"d.csv:2:1: column 'y': the number 1e309 is too "
                                        r"large: it overflows a 64-bit float \(real\)$"):
        load_data(p)
    p = _file(tmp_path, "d.json", '{"y": [[1, 2], [3, -2e308]]}')
    assert _refused(p) == (f"{p}: 'y' element 1, 1: the number -2e308 is too large: it "
                           "overflows a 64-bit float (real)")
    p = _file(tmp_path, "d.json", '{"N": 3, "y": [1, 2, 10000000000000000000]}')
    with pytest.raises(DataError, match=r"d.json: 'y' element 2: the integer "
                                        r"10000000000000000000 is too large"):
        load_data(p)
    # written inf is a value (a bound may be inf); 1e308 fits a float
    assert np.isinf(load_data(_file(tmp_path, "i.csv", "y\ninf\n-Infinity\n"))["y"]).all()
    d = load_data(_file(tmp_path, "i.json", '{"y": [Infinity, 1e308], "n": 9223372036854775807}'))
    assert d["y"][1] == 1e308 and d["n"] == 2**63 - 1


def test_duplicate_json_keys_and_deep_nesting_are_errors_naming_the_file(tmp_path):
    p = _file(tmp_path, "d.json", '{"y": [1, 2], "N": 2, "y": [3, 4]}')
    assert _refused(p) == f"{p}: key 'y' appears twice in one JSON object (give each key once)"
    p = _file(tmp_path, "d.json", '{"y": ' + "[" * 100000 + "]" * 100000 + "}")
    assert _refused(p) == f"{p}: the JSON is nested too deeply to read"


def test_csv_family_with_a_huge_gap_and_a_bad_index(tmp_path):
    p = _file(tmp_path, "d.csv", "x[0],x[99999999999]\n1,2\n")
    # was MemoryError, listing 10**11 indexes
    assert _refused(p) == (f"{p}:1:6: column family 'x' (x[0], x[99999999999]) has no "
                           "column x[1]: a family needs every index from 0 to its largest")
    for header in ("x[-1]", "x[a]", "x[1.5]"):
        p = _file(tmp_path, "d.csv", f'y,"{header}"\n1,2\n')
        assert _refused(p) == (f"{p}:1:3: column '{header}' is not an element of a family: "
                               "its index must be whole numbers >= 0 (x[0], x[1], ... or "
                               "x[0,1] for a matrix)")


def test_observed_inf_is_located_as_a_nan_is(tmp_path, bdl_here):
    model = _file(tmp_path, "m.bdl", MU)
    data = _file(tmp_path, "d.json", '{"y": [0.5, Infinity, 1.0]}')
    r = bdl_here("run", model, "--data", data, "--out", tmp_path / "o", "-q")
    err = _user_error(r)
    assert f"{model}:1:10: error: 'y' element 1 is inf; observed data are finite numbers" in err


# ---- options ----

def test_an_infer_budget_beyond_int64_is_refused_a_large_one_is_not(tmp_path, bdl_here):
    import ppl

    m = ppl.compile(MU, "m.bdl")
    with pytest.raises(ppl.BdlError, match="99999999999999999999 is beyond a 64-bit"):
        m.resolve_infer("nuts(samples=99999999999999999999)")  # was a run that never ends
    assert m.resolve_infer("svi(steps=9223372036854775807)")[1]["steps"] == 2**63 - 1
    model = _file(tmp_path, "m.bdl", MU)
    data = _file(tmp_path, "d.json", '{"y": [0.5]}')
    r = bdl_here("run", model, "--data", data, "--infer", "nuts(samples=99999999999999999999)")
    _user_error(r, "--infer:1:12: error: option 'samples' of nuts: 99999999999999999999 is "
                   "beyond a 64-bit integer (at most 9223372036854775807)")


@pytest.mark.parametrize("flags, spec, said", [
    (["--seed", "3"], "nuts(seed=4)", "option 'seed' is 4 here but --seed gives 3"),
    (["--dtype", "float32"], "nuts(dtype=float64)",
     "option 'dtype' is float64 here but --dtype gives float32"),
    (["--backend", "pyro-compiled"], "nuts(jit=false)",
     "option 'jit' is false here but --backend pyro-compiled gives true"),
])
def test_a_flag_and_the_same_infer_option_must_agree(tmp_path, bdl_here, flags, spec, said):
    model = _file(tmp_path, "m.bdl", MU)
    data = _file(tmp_path, "d.json", '{"y": [0.5]}')
    r = bdl_here("run", model, "--data", data, "--infer", spec, *flags, "--out",
                 tmp_path / "o", "-q")
    _user_error(r, said, "give it once, or the same value in both")
    assert not (tmp_path / "o").exists()
    # the same value twice is fine
    r = bdl_here("run", model, "--data", data, "--infer", "map(steps=2, seed=3)", "--seed",
                 "3", "--out", tmp_path / "ok", "-q")
    assert r.returncode == 0, r.stderr


# ---- outputs ----

def test_compile_output_checked_before_writing(tmp_path, bdl_here):
    model = _file(tmp_path, "m.bdl", MU)
    r = bdl_here("compile", model, "-o", model, "--force")
    _user_error(r, f"-o {model} is the model file {model} itself")
    assert model.read_text() == MU  # was overwritten with Python
    r = bdl_here("compile", model, "-o", tmp_path, "--force")
    _user_error(r, f"-o {tmp_path} is a directory")
    r = bdl_here("compile", model, "-o", tmp_path / "no" / "such" / "m.py")
    _user_error(r, f"the folder {tmp_path / 'no' / 'such'} does not exist")
    r = bdl_here("compile", model, "-o", tmp_path / "m.py")
    assert r.returncode == 0 and (tmp_path / "m.py").read_text().startswith(('"""', "#", "import"))


def test_run_and_predict_outputs_that_cannot_be_written_fail_before_the_work(tmp_path,
                                                                            bdl_here):
    model = _file(tmp_path, "m.bdl", MU)
    data = _file(tmp_path, "d.json", '{"y": [0.5, 1.5]}')
    r = bdl_here("run", model, "--data", data, "--out", "/proc/bdl-cx27/run", "-q")
    err = _user_error(r, "bdl: error: --out /proc/bdl-cx27/run cannot be written")
    assert r.stdout == "" and "map(" not in err  # refused before the fit started
    assert bdl_here("run", model, "--data", data, "--out", tmp_path / "run", "-q").returncode == 0
    r = bdl_here("predict", model, "--posterior", tmp_path / "run", "--data", data, "--out",
                 "/proc/bdl-cx27/pred")
    _user_error(r, "bdl: error: --out /proc/bdl-cx27/pred cannot be written")
    # a folder that holds only a failed run's traceback is written without --force
    left = tmp_path / "left"
    left.mkdir()
    (left / "bdl-error-traceback.txt").write_text("Traceback ...")
    r = bdl_here("run", model, "--data", data, "--out", left, "-q")
    assert r.returncode == 0, r.stderr
    assert not (left / "bdl-error-traceback.txt").exists() and (left / "run.json").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    r = bdl_here("run", model, "--data", data, "--out", tmp_path / "mine", "-q")
    _user_error(r, "exists and is not empty; use --force")


# ---- bdl predict on damaged run folders ----

@pytest.fixture(scope="module")
def mu_run(tmp_path_factory):
    from conftest import _bdl_here

    tmp = tmp_path_factory.mktemp("mu")
    _file(tmp, "m.bdl", MU)
    _file(tmp, "d.json", '{"y": [0.5, 1.5]}')
    r = _bdl_here("run", tmp / "m.bdl", "--data", tmp / "d.json", "--infer", FIT, "--out",
                  tmp / "run", "-q")
    assert r.returncode == 0, r.stderr
    return tmp


def _copy_run(mu_run, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(mu_run / "run", tmp_path / "run"))


def _predict(bdl_here, mu_run, run, *args):
    return bdl_here("predict", mu_run / "m.bdl", "--posterior", run, "--data",
                    mu_run / "d.json", "--out", run.parent / "pred", *args)


@pytest.mark.parametrize("text, said", [
    ("{", "run.json: cannot be read as a run record (Expecting property name"),
    ("[1, 2]", "run.json is not a JSON object: not the record of a run of bdl's"),
    ("{}", "run.json has no 'model' and no 'model_hash': not the record of a run of bdl's"),
])
def test_predict_refuses_a_run_json_that_is_not_a_run_record(tmp_path, bdl_here, mu_run,
                                                             text, said):
    run = _copy_run(mu_run, tmp_path)
    (run / "run.json").write_text(text)
    _user_error(_predict(bdl_here, mu_run, run), f"bdl: error: {run}/{said}")
    assert not (tmp_path / "pred").exists()


def test_predict_refuses_damaged_draws_and_params(tmp_path, bdl_here, mu_run):
    run = _copy_run(mu_run, tmp_path)
    record = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**record, "infer": "nuts"}))
    _user_error(_predict(bdl_here, mu_run, run), "its 'infer' is str, not the object")
    (run / "run.json").write_text(json.dumps(record))
    good = (run / "samples.npz").read_bytes()
    (run / "samples.npz").write_bytes(good[:40])
    _user_error(_predict(bdl_here, mu_run, run), f"bdl: error: {run / 'samples.npz'}: not a "
                                                 ".npz file numpy can read")
    np.savez(run / "samples.npz", mu=np.array([["a", "b"]]))
    _user_error(_predict(bdl_here, mu_run, run), f"{run / 'samples.npz'}: the draws of 'mu' "
                                                 "are <U1 values, not numbers")
    (run / "samples.npz").write_bytes(good)
    (run / "params.pt").write_bytes(b"\x00garbage")
    _user_error(_predict(bdl_here, mu_run, run), f"bdl: error: {run / 'params.pt'}: cannot "
                                                 "be read as the run's fitted parameters")


def test_predict_never_draws_a_missing_latent_from_its_prior(tmp_path, bdl_here, mu_run):
    run = _copy_run(mu_run, tmp_path)
    with np.load(run / "samples.npz") as z:
        kept = {k: z[k] for k in z.files if k != "mu"}
    np.savez(run / "samples.npz", **kept)
    r = _predict(bdl_here, mu_run, run)
    _user_error(r, f"bdl: error: {run / 'samples.npz'} has no draws of 'mu', which the run "
                   "saved (run.json's 'sites')")
    # a run.json from before 'sites': the model file is the one the run fitted
    record = json.loads((run / "run.json").read_text())
    del record["sites"]
    (run / "run.json").write_text(json.dumps(record))
    _user_error(_predict(bdl_here, mu_run, run),
                f"has no draws of the latent 'mu' of model 'Mu', although {mu_run / 'm.bdl'} "
                "is the file the run fitted")


def test_predict_says_how_many_draws_it_used_and_names_the_runs_model(tmp_path, bdl_here,
                                                                      mu_run):
    run = _copy_run(mu_run, tmp_path)
    r = _predict(bdl_here, mu_run, run, "--draws", "1000000")
    assert r.returncode == 0, r.stderr
    assert "draws=1000000: the run in " in r.stderr and "saved 3 posterior draws; all 3 " \
        "are used" in r.stderr
    with np.load(tmp_path / "pred" / "predictive.npz") as z:
        assert z["twice"].shape == (3,)
    r = _predict(bdl_here, mu_run, run, "--model", "Nope", "--force")
    _user_error(r, f"bdl: error: {mu_run / 'm.bdl'}: no model named 'Nope' (it has: Mu)")
    assert "is a run of model 'Nope'" not in r.stderr


# ---- the generated module run on its own ----

def test_standalone_module_reports_bad_numbers_without_a_traceback(tmp_path, monkeypatch,
                                                                  capsys, bdl_here):
    monkeypatch.chdir(tmp_path)
    _file(tmp_path, "m.bdl", MU)
    assert bdl_here("compile", "m.bdl", "-o", "m.py").returncode == 0
    _file(tmp_path, "big.csv", "y\n99999999999999999999999\n")
    _file(tmp_path, "d.json", '{"y": [0.5]}')
    module = runpy.run_path(str(tmp_path / "m.py"))
    capsys.readouterr()
    for argv, said in [
        (["big.csv"], "error: big.csv:2:1: column 'y': the integer 99999999999999999999999 is "
                      "too large"),
        (["d.json", "--infer", "nuts(samples=99999999999999999999)"],
         "--infer:1:12: error: option 'samples' of nuts: 99999999999999999999 is beyond a "
         "64-bit integer"),
        (["d.json", "--infer", "map(seed=4)", "--seed", "5"],
         "option 'seed' is 4 here but --seed gives 5"),
    ]:
        with pytest.raises(SystemExit) as e:
            module_main(module["Mu"], module["MU_SIGNATURE"], module["MU_INFER"], argv=argv)
        err = capsys.readouterr().err
        assert e.value.code == 1 and said in err and "Traceback" not in err, err
