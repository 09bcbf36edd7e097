"""A generated module run on its own reads --seed as bdl run does (ppl.cli._seed)."""
import runpy

import pytest

import ppl
from ppl.cli import main as bdl_main
from ppl.runtime.main import main as module_main

SRC = "model M(y: real[N]) {\n  mu ~ Normal(0, 1)\n  y ~ Normal(mu, 1)\n}\n"


@pytest.mark.parametrize("seed, words", [
    ("-1", "seed -1 is out of range: a seed is an integer from 0 to 4294967295"),
    ("4294967296", "seed 4294967296 is out of range: a seed is an integer from 0 to "
                   "4294967295"),
    ("x", "invalid seed 'x': expected an integer from 0 to 4294967295"),
])
def test_a_bad_seed_is_the_same_usage_error_in_both(tmp_path, capsys, seed, words):
    # before: the module exited 1 with "option 'seed' of nuts: must be in [0, 4294967295]"
    (tmp_path / "m.bdl").write_text(SRC)
    (tmp_path / "m.data.json").write_text('{"y": [0.5]}')
    (tmp_path / "m.py").write_text(ppl.compile(SRC, filename="m.bdl").source)
    module = runpy.run_path(str(tmp_path / "m.py"))  # not as __main__: its main unrun
    with pytest.raises(SystemExit) as own:
        module_main(module["M"], module["M_SIGNATURE"], module["M_INFER"],
                    argv=[str(tmp_path / "m.data.json"), "--seed", seed])
    own_err = capsys.readouterr().err.splitlines()[-1]
    with pytest.raises(SystemExit) as run:
        bdl_main(["run", str(tmp_path / "m.bdl"), "--seed", seed])
    run_err = capsys.readouterr().err.splitlines()[-1]
    assert own.value.code == run.value.code == 2
    assert own_err == f"model.py: error: argument --seed: {words}"
    assert run_err == f"bdl: error: argument --seed: {words}"
