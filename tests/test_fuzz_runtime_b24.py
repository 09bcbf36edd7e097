"""Fuzz-audit round 24: run-time failures that were internal errors (exit 3) or
unlocated, each now a located user error (exit 1) with the words checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _write(tmp_path, text: str, data: dict | None = None, name: str = "m") -> tuple:
    model = tmp_path / f"{name}.bdl"
    model.write_text(text)
    out = [str(model), "--out", str(tmp_path / "run")]
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
    assert "m.bdl:3:3: error: plate 'N' has size 0" in r.stderr
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
     "infer: error: svi: the guide's parameters became NaN, infinite or a scale 0 at step 3 "
     "of 3: the optimisation diverged with lr=1e+12\n  note: lower lr (e.g. infer "
     "svi(lr=1e+11))"),
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
    assert "visible units take whole-number states 0..3" in r.stderr
    assert "looks like a bug" not in r.stderr


def test_uniform_with_low_above_high_saves_no_traceback(tmp_path, bdl_here):
    args = _write(tmp_path, "model M(y: real[N]) {\n  mu ~ Normal(0, 1)\n"
                            "  y ~ Uniform(2.5, 1)\n}\ninfer map(steps=2)\n", {"y": [1.5]})
    r = bdl_here("run", *args)
    assert r.returncode == 1, r.stderr
    assert "m.bdl:3:3: error: Expected parameter low" in r.stderr
    assert "looks like a bug" not in r.stderr
