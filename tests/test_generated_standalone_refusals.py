"""A generated module run on its own (``python m.py DATA``, ``ppl.runtime.main``) refuses
what ``bdl run`` refuses between checking the model and fitting it, in the same located
words and with exit status 1, by checking the .bdl file the module names; without that
file (or with one that no longer generates the module) it says that those checks are not
made, and fits."""
import json
import runpy
import subprocess
import sys

import pytest

from ppl.cli import main as bdl_main
from ppl.runtime.main import main as module_main

VECTOR_LABEL = ("model M(y: real[N]) {\n  w ~ Dirichlet(ones(2))\n  z: int[N] ~ Categorical(w)\n"
                "  y ~ Normal(z * 1.0, 1)\n}\ninfer svi(steps=2, samples=20)\n")
# (samples=20: a fit of it runs the model once per draw; 1000, svi's default, took 7 s)
PLAIN = "model M(y: real[N]) {\n  mu ~ Normal(0, 1)\n  y ~ Normal(mu, 1)\n}\ninfer svi(steps=2)\n"
SKIPPED = ("the checks bdl run makes before a fit (a method that the model cannot be fitted "
           "by, a statement that no fit can run, data naming a latent) are not made")


def _module(tmp_path, monkeypatch, src: str, data: dict) -> None:
    """m.bdl, m.data.json and m.py (``bdl compile m.bdl -o m.py``) in ``tmp_path``, the
    current folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.bdl").write_text(src)
    (tmp_path / "m.data.json").write_text(json.dumps(data))
    assert bdl_main(["compile", "m.bdl", "-o", "m.py"]) == 0


def _standalone(tmp_path, capsys, *args) -> tuple[int, str]:
    """``python m.py m.data.json ARGS`` in this process: its exit status and stderr."""
    module = runpy.run_path(str(tmp_path / "m.py"))  # not as __main__: its main unrun
    capsys.readouterr()
    code = 0
    try:
        module_main(module["M"], module["M_SIGNATURE"], module["M_INFER"],
                    argv=["m.data.json", *args])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("src, data, args, head", [
    pytest.param(VECTOR_LABEL, {"y": [1.0, 2.0]}, [],
                 "m.bdl:3:3: error: 'z' is a vector of discrete latents, shape [N] outside "
                 "every plate: labels are summed out one per plate element, not as a whole "
                 "vector", id="vector_label"),
    pytest.param("model M(y: real[N]) {\n  k ~ Poisson(3)\n  y ~ Normal(k, 1)\n}\n",
                 {"y": [1.0]}, [],
                 "m.bdl:2:7: error: 'k' is a latent with unbounded discrete support (Poisson): "
                 "it cannot be summed out, and NUTS, HMC and SVI move continuous latents only",
                 id="poisson_latent"),
    pytest.param(PLAIN, {"y": [1.0]}, ["--infer", "meta"],
                 "m.bdl: error: infer meta needs a model that uses niw_meta",
                 id="method_needs_a_construct"),
    pytest.param("model M(y: real[3]) {\n  x ~ fractional_sde(drift=(x, t) => -x, "
                 "diffusion=0.5, times=[0.5, 1.0, 1.5], x0=Normal(0, 1), data=y)\n}\n",
                 {"y": [1.0, 2.0, 3.0]}, ["--infer", "nuts"],
                 "m.bdl:2:7: error: fractional_sde cannot be fitted by 'nuts'",
                 id="construct_refuses_the_method"),
    pytest.param(PLAIN, {"y": [1.0], "mu": 3.0}, [],
                 "m.bdl:2:3: error: 'mu' is given as data but the model draws it",
                 id="data_names_a_latent"),
    pytest.param(PLAIN, {"y": [1.0, float("inf")]}, [],
                 "m.bdl:1:9: error: 'y' element 1 is inf; observed data are finite numbers",
                 id="observed_inf"),
])
def test_standalone_module_refuses_as_bdl_run(tmp_path, monkeypatch, capsys, src, data, args,
                                              head):
    # before: the module fitted the vector label and the data naming a latent (exit 0),
    # and failed in Pyro's or the construct's own words for the rest
    _module(tmp_path, monkeypatch, src, data)
    code, own = _standalone(tmp_path, capsys, *args)
    assert bdl_main(["run", "m.bdl", "--out", "run", *args]) == 1
    run = capsys.readouterr().err
    assert code == 1
    assert own.splitlines()[0] == head
    assert run[run.index(head):] == own  # the same error block, word for word
    assert "Traceback" not in own and "warning" not in own


def test_standalone_refusal_in_a_process_of_its_own(tmp_path, monkeypatch):
    _module(tmp_path, monkeypatch, VECTOR_LABEL, {"y": [1.0, 2.0]})
    r = subprocess.run([sys.executable, "m.py", "m.data.json"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        "m.bdl:3:3: error: 'z' is a vector of discrete latents, shape [N] outside every "
        "plate: labels are summed out one per plate element, not as a whole vector",
        "    z: int[N] ~ Categorical(w)",
        "    ^~~~~~~~~~~~~~~~~~~~~~~~~~",
        "  note: draw it in a plate, with what reads it: plate i in N { z ~ ... }"]


FRACTIONAL = ("model M(y: real[3]) {\n  x ~ fractional_sde(drift=(x, t) => -x, diffusion=0.5, "
              "times=[0.5, 1.0, 1.5], x0=Normal(0, 1), data=y)\n}\ninfer svi(steps=2)\n")


@pytest.mark.parametrize("src, data, infer, head", [
    pytest.param(FRACTIONAL, {"y": [1.0, 2.0, 3.0]},
                 "M_INFER = {\n    'method': 'nuts',\n    'samples': 10,\n}",
                 "m.bdl:2:7: error: fractional_sde cannot be fitted by 'nuts'",
                 id="the_edited_method_refused"),
    pytest.param(PLAIN, {"y": [1.0], "mu": 3.0}, "M_INFER = {'method': 'svi', 'steps': 3}",
                 "m.bdl:2:3: error: 'mu' is given as data but the model draws it",
                 id="the_other_checks_still_made"),
])
def test_a_module_with_its_infer_dict_edited_still_refuses(tmp_path, monkeypatch, capsys, src,
                                                           data, infer, head):
    # before: 'm.bdl no longer generates m.py' and the checks were not made (the
    # construct's own words for nuts; the data naming a latent fitted)
    _module(tmp_path, monkeypatch, src, data)
    module = tmp_path / "m.py"
    text = module.read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("M_INFER = "))
    module.write_text(text.replace(line, infer))  # as the docs invite, a line or several
    code, err = _standalone(tmp_path, capsys)
    assert code == 1
    assert err.splitlines()[0] == head
    assert "warning" not in err


@pytest.mark.parametrize("change, why", [
    ("remove", "m.bdl, the BDL file m.py was generated from, was not found (beside m.py or "
               "in the current directory)"),
    ("edit", "m.bdl no longer generates m.py (the model file changed since, m.py was edited, "
             "or another version of bdl wrote it)"),
    ("edit_module", "m.bdl no longer generates m.py (the model file changed since, m.py was "
                    "edited, or another version of bdl wrote it)"),
])
def test_without_its_bdl_file_the_module_says_the_checks_are_not_made(
        tmp_path, monkeypatch, capsys, change, why):
    _module(tmp_path, monkeypatch, VECTOR_LABEL, {"y": [1.0, 2.0]})
    if change == "remove":
        (tmp_path / "m.bdl").unlink()
    elif change == "edit":
        (tmp_path / "m.bdl").write_text(VECTOR_LABEL.replace("ones(2)", "ones(2) * 2"))
    else:  # a line other than the *_INFER dict's
        module = tmp_path / "m.py"
        module.write_text(module.read_text() + "# mine\n")
    code, err = _standalone(tmp_path, capsys, "--quiet")
    assert code == 0  # fitted (the checks that would refuse it were not made)
    assert err.splitlines()[0] == f"warning: {why}: {SKIPPED}"
