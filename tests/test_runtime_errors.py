"""Run-time errors raised by generated code are reported at the BDL statement (or the
construct argument) that caused them, like the checker's errors (ppl/locate.py)."""

from __future__ import annotations

import json
import re
import warnings

import pytest

import ppl
from ppl import locate
from ppl.cli import main

NEGATIVE_SCALE = """\
model M(y: real[N]) {
  s = 0.0 - 1.0
  mu ~ Normal(0, 1)
  plate i in N {
    y ~ Normal(mu, s)
  }
}
"""

GRID_ON_2D = """\
model M(x: real[N, 2], y: real[N]) {
  f = mlp(2, [4], 1, act=tanh)
  f ~ gp_prior(rbf(lengthscale=1, variance=1), inputs=x, steps=2, measure="grid")
  y ~ Normal(f(x)[:, 0], 1)
}
"""


def _fit_error(source: str, data: dict, infer: str) -> ppl.BdlError:
    model = ppl.compile(source, "m.bdl")
    with warnings.catch_warnings(), pytest.raises(ppl.BdlError) as e:
        warnings.simplefilter("ignore")
        model.fit(data, infer)
    return e.value


def test_a_distribution_error_is_located_at_its_statement():
    err = _fit_error(NEGATIVE_SCALE, {"y": [1.0, 2.0]}, "svi(steps=2)")
    lines = err.render().split("\n")
    # the statement inside the plate, not the plate, at the argument torch refused, in
    # words (not torch's, nor the trace shapes Pyro appends when it re-raises)
    assert lines[0] == "m.bdl:5:20: error: Normal's scale is -1; it must be numbers > 0"
    assert "Trace Shapes" not in err.render()
    assert lines[-3:-1] == ["      y ~ Normal(mu, s)", "                     ^"]
    assert lines[-1].startswith("  note: raised while running this statement (ValueError")
    assert isinstance(err.__cause__, ValueError)


def test_a_construct_argument_error_points_at_the_argument():
    data = {"x": [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]], "y": [0.0, 1.0, 0.5]}
    err = _fit_error(GRID_ON_2D, data, "map(steps=1)")
    head, line, caret, _ = err.render().split("\n")
    col = GRID_ON_2D.split("\n")[2].index('"grid"') + 1
    assert head == f'm.bdl:3:{col}: error: measure="grid" needs 1-D inputs'
    assert caret.index("^") == line.index('"grid"') and caret.count("~") == len('"grid"') - 1


def test_the_cli_reports_it_with_exit_status_1(tmp_path, capsys):
    src = tmp_path / "m.bdl"
    src.write_text(NEGATIVE_SCALE + "\ninfer svi(steps=2)\n")
    (tmp_path / "m.data.json").write_text('{"y": [1.0, 2.0]}')
    rc = main(["run", str(src), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"{src}:5:20: error: Normal's scale is -1; it must be numbers > 0" in err
    assert "Traceback" not in err and "internal error" not in err
    # a distribution refusing a parameter is a check of the values, not a sign of a bug
    assert "looks like a bug" not in err
    assert not (tmp_path / "out" / "bdl-error-traceback.txt").exists()


def test_a_library_failure_keeps_its_traceback_for_a_report(tmp_path, capsys):
    src = tmp_path / "m.bdl"
    # (an index of sizes, mu[k * 3] of an int k, is checked at binding: one from data is not)
    src.write_text("model M(y: real[N], k: int[1]) {\n  mu: real[N] ~ Normal(0, 1)\n"
                   "  y ~ Normal(mu[k[0] * 3], 1)\n}\ninfer map(steps=2)\n")
    (tmp_path / "m.data.json").write_text('{"y": [1.0, 2.0], "k": [1]}')
    rc = main(["run", str(src), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"{src}:3:3: error: index 3 is out of bounds for dimension 0 with size 2" in err
    # the Python side is kept for a bug report, not printed
    log = tmp_path / "out" / "bdl-error-traceback.txt"
    assert f"the traceback is in {log}" in err
    assert "Traceback" in log.read_text() and "IndexError" in log.read_text()


def test_errors_outside_generated_code_pass_through():
    with pytest.raises(ValueError, match="^plain$"):
        with locate.located():
            raise ValueError("plain")
    assert locate.locate(RuntimeError("no traceback")) is None


@pytest.mark.parametrize("model", [ppl.load("examples/eight_schools.bdl"),
                                   ppl.compile(NEGATIVE_SCALE, "m.bdl")],
                         ids=["eight_schools", "plate_and_transformed_data"])
def test_the_source_map_names_each_statement(model):
    """Every generated statement maps to the BDL statement it came from: the generated
    lines of a statement mention its name, and its BDL line starts with that name."""
    py = model.source.split("\n")
    bdl = model.bdl_source.split("\n")
    smap = model.compiled.source_map
    assert len(smap) >= 4
    for first, last, ref in smap:
        name = re.match(r"\w+", bdl[ref.span.line - 1][ref.span.col - 1:]).group()
        if name == "plate":
            assert py[first - 1].lstrip().startswith("with pyro.plate(")
            continue
        assert any(name in py[i - 1] for i in range(first, last + 1)), (name, first, last)


def test_a_construct_value_only_wrong_with_another_argument_is_located_at_run_time():
    """margin = 1.5 passes the checker's literal range (0, 2) but not the runtime's
    (0, cap) at cap = 1: the caret goes on the margin."""
    source = """\
model M(pixels: int[N, 4]) {
  m = monotone_dbm(visible=categorical(4, 2), cap=1, margin=1.5)
  pixels ~ m.visible
}
"""
    err = _fit_error(source, {"pixels": [[0, 1, 0, 1], [1, 1, 0, 0]]}, "map(steps=1)")
    head, line, caret = err.render().split("\n")[:3]
    assert head == (f"m.bdl:2:{line.index('1.5') - 1}: error: monotone_dbm: margin must be in "
                    "(0, cap) = (0, 1), got 1.5")
    assert caret.index("^") == line.index("1.5")


ONE_BASED = """\
model I(g: int[N], y: real[N]) {
  a: real[3] ~ Normal(0, 1)
  y ~ Normal(a[g], 1)
}
"""

COUNTS = """\
model P(y: int[N]) {
  lam ~ HalfNormal(5)
  y ~ Poisson(lam)
}
"""


def test_an_index_past_the_end_is_located():
    """Stan's 1-based habit: a[g] with g = 1..3 on a 3-vector is refused when the data are
    bound, at the index (ppl.runtime.data.IndexCheck); an index computed from the data
    (2 * g) that runs past the end is torch's error, located at its statement."""
    err = _fit_error(ONE_BASED, {"g": [1, 2, 3], "y": [0.1, 0.2, 0.3]}, "svi(steps=1)")
    head = err.render().split("\n")[0]
    assert head == ("m.bdl:3:16: error: data 'g' indexes a dimension of 'a' of size 3 but "
                    "g[2] is 3: an index must be in [0, 3)")
    err = _fit_error(ONE_BASED.replace("a[g]", "a[2 * g]"), {"g": [0, 1, 2],
                     "y": [0.1, 0.2, 0.3]}, "svi(steps=1)")
    head = err.render().split("\n")[0]
    assert head == "m.bdl:3:3: error: index 4 is out of bounds for dimension 0 with size 3"


def test_data_outside_the_support_is_located_at_its_site():
    """Pyro scores observed sites outside the model's code and names the site: the error
    goes to that site's statement, naming the first bad element and the support."""
    err = _fit_error(COUNTS, {"y": [1, -2, 3]}, "svi(steps=1)")
    head = err.render().split("\n")[0]
    assert head == "m.bdl:3:3: error: 'y' element 1 is -2; Poisson is over integers >= 0"
    assert "Error while computing" not in err.render()


def test_data_outside_the_support_is_located_under_nuts_too():
    """NUTS runs with Pyro's validation off: the observed values are checked before it
    (ppl.infer.run.check_supports), so a negative count is the same located error."""
    err = _fit_error(COUNTS, {"y": [1, -2, 3]}, "nuts(samples=2, warmup=2, chains=1)")
    assert err.render().split("\n")[0] == ("m.bdl:3:3: error: 'y' element 1 is -2; Poisson is "
                                           "over integers >= 0")


def test_no_valid_initial_point_is_a_user_error_with_a_hint():
    # every count in the support, but a rate of 0 gives each of them density 0
    err = _fit_error(COUNTS.replace("Poisson(lam)", "Poisson(lam * 0)"), {"y": [1, 2, 3]},
                     "nuts(samples=2, warmup=2, chains=1)")
    text = err.render()
    assert text.startswith("m.bdl: error: ") and "cannot find valid initial params" in text
    assert "in its distribution's support" in text


def test_a_tensor_in_an_error_message_is_cut_short():
    import torch

    nan = repr(torch.full((50, 20, 1), float("nan")))
    assert len(nan) > 10_000
    msg = locate.bounded(f"but found invalid values:\n{nan} (after)")
    head = "tensor([[[nan], [nan], [nan],"
    assert msg.startswith("but found invalid values:\n" + head)
    assert msg.endswith(" ... (after)") and len(msg) == len("but found invalid values:\n") \
        + locate.TENSOR_REPR_LIMIT + len(" ... (after)")
    # short ones are only put on one line
    assert locate.bounded("x tensor([[1., 2.],\n        [3., 4.]]) y") == \
        "x tensor([[1., 2.], [3., 4.]]) y"


def test_nan_in_data_is_a_short_error_that_names_the_argument(tmp_path, capsys):
    src = tmp_path / "m.bdl"
    src.write_text("model M(x: real[N], y: real[N]) {\n  mu ~ Normal(0, 1)\n"
                   "  y ~ Normal(mu + x, 1)\n}\ninfer svi(steps=2)\n")
    x = [0.1 * i for i in range(300)]
    x[7] = float("nan")
    (tmp_path / "m.data.json").write_text(json.dumps({"x": x, "y": [1.0] * 300}))  # NaN
    rc = main(["run", str(src), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"{src}:3:14: error: Normal's loc element 7 is nan; it must be numbers (not NaN)" in err
    assert len(err) < 1500 and err.count("\n") < 12  # the tensor was 300 numbers
    assert ("note: the data hold NaN: 'x' (1 NaN value); NaN is not a missing-value marker "
            "here") in err


def test_a_literal_size_is_named_once_in_a_shape_error():
    m = ppl.compile("model M(x: real[N, 1], z: real[K + 1]) {\n  x ~ Normal(0, 1)\n"
                    "  z ~ Normal(0, 1)\n}\n", "m.bdl")
    with pytest.raises(ppl.BdlError) as e:
        m.bind({"x": [[1.0, 2.0]], "z": [1.0, 2.0], "K": 3})
    messages = [d.message for d in e.value.diagnostics]
    assert messages == ["'x' dimension 1 is 2 but is declared 1",
                        "'z' dimension 0 is 2 but is declared K + 1 = 4"]


@pytest.mark.parametrize("make, message", [
    ("mlp(1, H, 1)", "mlp: hidden must be at least 1, got [0]"),
    ("mlp(1, [4, H], 1)", "mlp: hidden must be at least 1, got [4, 0]"),
    ("cnn(in_shape=[1, 2, 2], channels=[H], out_dim=1)", "cnn: channels must be at least 1"),
])
def test_a_network_with_a_layer_of_zero_units_is_an_error(make, message):
    # a hidden layer of 0 units made the network a constant (its last bias), silently
    x = [[0.0], [1.0]] if make.startswith("mlp") else [[[[0.0, 1.0], [1.0, 0.0]]]] * 2
    shape = "real[N, 1]" if make.startswith("mlp") else "real[N, 1, 2, 2]"
    src = (f"model L(x: {shape}, y: real[N], H: int) {{\n  g = {make}\n"
           f"  y ~ Normal(g(x)[:, 0], 0.1)\n}}\n")
    err = _fit_error(src, {"x": x, "y": [0.0, 3.0], "H": 0}, "map(steps=1)")
    head = err.render().split("\n")[0]
    assert head.startswith("m.bdl:2:3: error: " + message)


def test_no_nan_note_for_data_a_construct_reads(tmp_path, capsys):
    # monotone_dbm reads NaN pixels as missing: a run-time error of such a model (alpha
    # past 1/cap) does not tell the user to remove them (it did, naming the pixels); the
    # note stays for data that no construct reads
    from pathlib import Path

    from ppl.cli import _construct_data

    src = tmp_path / "d.bdl"
    src.write_text("model D(pixels: real[N, 4], label: int[N]?, x: real[N]) {\n"
                   "  m = monotone_dbm(visible=categorical(4, 2), hidden=[categorical(2, 2)], "
                   "label=categorical(1, 2), alpha=0.6)\n"
                   "  pixels ~ m.visible\n  label ~ m.label\n  s ~ HalfNormal(1)\n"
                   "  x ~ Normal(0, s)\n}\ninfer map(steps=2)\n")
    assert _construct_data(ppl.load(src)) == {"pixels"}  # m.label is not missing_as_nan
    fou = ppl.load(Path(__file__).resolve().parent.parent / "examples" / "fou.bdl")
    assert _construct_data(fou) == {"y"}  # data=y; times=t and data_index=idx are plain
    nan = float("nan")
    data = tmp_path / "d.json"
    for x, noted in (([0.5, 0.1], False), ([0.5, nan], True)):
        data.write_text(json.dumps({"pixels": [[0.0, nan, 1.0, 0.0], [1.0, 1.0, nan, 0.0]],
                                    "label": [0, 1], "x": x}))
        rc = main(["run", str(src), "--data", str(data)])
        err = capsys.readouterr().err
        assert rc == 1 and "alpha must be <= 1/cap = 0.5" in err
        assert "'pixels'" not in err
        assert ("note: the data hold NaN: 'x' (1 NaN value)" in err) is noted
