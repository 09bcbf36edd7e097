"""Data files read strictly (audit stop 22): a CSV column family with a gap, a blank cell,
JSON true/false for real data, and int data whose values index outside the dimension they
index (a negative one silently read from the end) are located errors, not NaN or a wrapped
index found (or not) at a later model statement."""

import json
import warnings

import numpy as np
import pytest

import ppl
from ppl import BdlError
from ppl.io.data import DataError, load_data
from ppl.runtime import ArgSpec, Signature, bind
from ppl.runtime.data import IndexCheck

LINREG = """model LRC(x: real[N, D], y: real[N]) {
  beta: real[D] ~ Normal(0, 2)
  y ~ Normal(x @ beta, 0.5)
}
"""


def _csv(tmp_path, text: str):
    p = tmp_path / "d.csv"
    p.write_text(text)
    return p


def test_csv_family_with_a_gap_is_an_error_at_the_column_after_it(tmp_path):
    p = _csv(tmp_path, "x[0],x[2],y\n1,2,3\n4,5,6\n")
    with pytest.raises(DataError) as e:
        load_data(p)
    assert str(e.value) == (f"{p}:1:6: column family 'x' (x[0], x[2]) has no column x[1]: "
                            "a family needs every index from 0 to its largest")
    # a matrix family, quoted headers: the missing element is x[1, 0]
    p = _csv(tmp_path, '"x[0,0]","x[0,1]","x[1,1]"\n1,2,3\n')
    with pytest.raises(DataError, match=r"d.csv:1:19: column family 'x' \(x\[0,0\], x\[0,1\], "
                       r"x\[1,1\]\) has no column x\[1, 0\]"):
        load_data(p)
    # a full family still reads, in any column order and spelling
    p = _csv(tmp_path, "y,x.1,x.0\n1.5,2,1\n2.5,4,3\n")
    d = load_data(p)
    assert d["x"].tolist() == [[1, 2], [3, 4]] and d["x"].dtype == np.int64
    assert d["y"].tolist() == [1.5, 2.5]


def test_csv_blank_cell_is_an_error_and_na_is_still_nan(tmp_path):
    p = _csv(tmp_path, "a,b,c\n1,2,3\n0.25,,6\n")
    with pytest.raises(DataError) as e:
        load_data(p)
    assert str(e.value) == (f"{p}:3:6: column 'b': blank cell (write NA or NaN for a missing "
                            "value, which only a construct with a missing-value convention "
                            "accepts)")
    p = _csv(tmp_path, "a,b\n1,  \n")  # white space only is blank too
    with pytest.raises(DataError, match=r"d.csv:2:3: column 'b': blank cell"):
        load_data(p)
    # the documented missing-value spellings (monotone DBM pixels, fractional_sde
    # observations) are NaN
    d = load_data(_csv(tmp_path, "v[0],v[1]\n1,NA\nnan,0\n"))
    assert d["v"].dtype == np.float64
    assert np.isnan(d["v"]).tolist() == [[False, True], [True, False]]
    assert d["v"][0, 0] == 1.0 and d["v"][1, 1] == 0.0
    # the row-length error keeps its form
    with pytest.raises(DataError, match=r"d.csv:3: expected 2 values, found 1$"):
        load_data(_csv(tmp_path, "a,b\n1,2\n3\n"))


def test_csv_columns_that_clash_are_errors(tmp_path):
    cases = {
        "y,x,y\n1,2,3\n": ":1:5: column 'y' appears twice (also column 1)",
        'x[0],"x[0,1]"\n1,2\n': ":1:6: column 'x[0,1]' has 2 indices but 'x[0]' has 1",
        "x[0],x.0\n1,2\n": ":1:6: column 'x.0' is the same element as 'x[0]'",
        "x,x[0]\n1,2\n": ":1:1: column 'x' and the column family 'x[0]', ... both give 'x'",
    }
    for text, msg in cases.items():
        p = _csv(tmp_path, text)
        with pytest.raises(DataError) as e:
            load_data(p)
        assert str(e.value) == f"{p}{msg}", text


def test_cli_refuses_a_csv_with_a_gap_exit_1(tmp_path, bdl_here):
    model = tmp_path / "lrc.bdl"
    model.write_text(LINREG)
    p = _csv(tmp_path, "x[0],x[2],y\n0.5,1.0,2.0\n")
    r = bdl_here("run", model, "--data", p, "--out", tmp_path / "run", "-q")
    assert r.returncode == 1
    assert r.stderr.startswith(f"bdl: error: {p}:1:6: column family 'x' (x[0], x[2]) has no "
                               "column x[1]"), r.stderr
    assert "Traceback" not in r.stderr


REAL = "model R(y: real[N]) {\n  mu ~ Normal(0, 1)\n  y ~ Normal(mu, 1)\n}\n"
BOOL_MSG = ("r.bdl:1:9: error: data 'y': it is declared real but holds true/false values: "
            "declare it bool, or write the numbers 0 and 1")


def test_true_false_for_real_data_is_an_error():
    m = ppl.compile(REAL, "r.bdl")
    m2 = ppl.compile(REAL.replace("real[N]", "real[N, 1]"), "r.bdl")
    for value in ([True, False], [1.5, True], [[0.5], [False]], np.array([True, False])):
        with pytest.raises(BdlError) as e:
            (m2 if isinstance(value[0], list) else m).bind({"y": value})
        assert str(e.value).splitlines()[0] == BOOL_MSG, value
    assert m.bind({"y": [1, 0.5]})["y"].tolist() == [1.0, 0.5]
    # bool data takes them, as documented
    b = ppl.compile("model B(y: bool[N]) {\n  p ~ Beta(1, 1)\n  y ~ Bernoulli(p)\n}\n", "b.bdl")
    assert b.bind({"y": [True, False, True]})["y"].tolist() == [True, False, True]


def test_cli_refuses_true_false_for_real_exit_1(tmp_path, bdl_here):
    model = tmp_path / "r.bdl"
    model.write_text(REAL)
    data = tmp_path / "r.json"
    data.write_text(json.dumps({"y": [True, False]}))
    r = bdl_here("run", model, "--data", data, "--out", tmp_path / "run", "-q")
    assert r.returncode == 1
    assert f"{model}:1:9: error: data 'y': it is declared real but holds true/false" in r.stderr
    assert "Traceback" not in r.stderr


def _hier(checks):
    return Signature("H", "<h>", [ArgSpec("g", "int", ["M"], line=1, col=24),
                                  ArgSpec("u", "real", ["J"], line=1, col=40)],
                     ["M", "J"], index_checks=checks)


def test_bind_checks_int_data_that_indexes_a_dimension():
    chk = IndexCheck("g", "J", line=9, col=22, what="theta")
    sig = _hier([chk])
    u = [0.0, 0.0, 0.0]  # J = 3
    assert bind(sig, {"g": [0, 2, 1], "u": u})["g"].tolist() == [0, 2, 1]
    with pytest.raises(BdlError) as e:
        bind(sig, {"g": [0, 0, 1, 2, -1], "u": u})
    d = e.value.diagnostics[0]
    assert (d.span.line, d.span.col) == (9, 22)
    assert d.message == ("data 'g' indexes a dimension of 'theta' of size J = 3 but g[4] is "
                         "-1: an index must be in [0, 3)")
    assert d.notes == ["'g' is declared at 1:24", "a negative index is not read from the end "
                       "in data (a 1-based file converted with `- 1` turns a 0 into -1)"]
    with pytest.raises(BdlError) as e:
        bind(sig, {"g": [3, 0], "u": u})
    assert e.value.diagnostics[0].message.endswith("but g[0] is 3: an index must be in [0, 3)")
    assert e.value.diagnostics[0].notes[1] == ("indices are 0-based: subtract 1 from a "
                                               "1-based file once")
    # a composite size; one error for an argument that indexes twice
    sig = _hier([IndexCheck("g", "J + 1", line=9, col=22, what="a"),
                 IndexCheck("g", "J", line=10, col=5, what="b")])
    with pytest.raises(BdlError) as e:
        bind(sig, {"g": [4], "u": u})
    assert [x.message for x in e.value.diagnostics] == [
        "data 'g' indexes a dimension of 'a' of size J + 1 = 4 but g[0] is 4: an index must "
        "be in [0, 4)"]
    with pytest.raises(BdlError) as e:
        bind(sig, {"g": [3], "u": u})
    d = e.value.diagnostics[0]
    assert (d.span.line, d.message) == (10, "data 'g' indexes a dimension of 'b' of size J = 3 "
                                            "but g[0] is 3: an index must be in [0, 3)")


def test_bind_checks_an_index_shifted_by_a_constant():
    # a[county - 1]: the Stan user's conversion in the model, with a 0 in a 1-based file
    sig = _hier([IndexCheck("g", "J", line=4, col=18, what="a", offset=-1)])
    u = [0.0, 0.0, 0.0]
    assert bind(sig, {"g": [1, 3, 2], "u": u})["g"].tolist() == [1, 3, 2]
    with pytest.raises(BdlError) as e:
        bind(sig, {"g": [1, 0, 3], "u": u})
    d = e.value.diagnostics[0]
    assert d.message == ("data 'g' - 1 indexes a dimension of 'a' of size J = 3 but g[1] - 1 "
                         "is -1: an index must be in [0, 3)")
    with pytest.raises(BdlError) as e:
        bind(sig, {"g": [4], "u": u})
    d = e.value.diagnostics[0]
    assert (d.message.endswith("but g[0] - 1 is 3: an index must be in [0, 3)")
            and d.notes[1] == "indices are 0-based")


def test_negative_size_key_is_an_error():
    sig = Signature("S", "<s>", [ArgSpec("y", "real", ["N"], line=1, col=9),
                                 ArgSpec("K", "int", [], line=1, col=22)], ["N", "K"])
    with pytest.raises(BdlError) as e:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bind(sig, {"y": [1.0], "K": -1})
    assert [x.message for x in e.value.diagnostics] == ["size 'K' must be >= 0, got -1"]
    assert bind(sig, {"y": [1.0], "K": 2})["K"] == 2


HIER = """model H(y: real[J, K], g: int[M], z: real[M]) {
  plate j in J {
    theta ~ Normal(1, 2)
    plate K {
      y ~ Normal(theta, 1.5)
    }
  }
  plate m in M {
    z ~ Normal(theta[g[m]], 1.0)
  }
}
"""
HIER_DATA = {"y": [[1, 2, 3, 4]] * 3, "z": [1.0, 2.0, 3.0, 4.0, 5.0]}


def test_int_data_index_out_of_range_is_a_located_error_before_the_fit():
    m = ppl.compile(HIER, "hier.bdl")
    assert "rt.IndexCheck('g', 'J', line=9, col=22, what='theta')" in m.source
    assert m.bind({**HIER_DATA, "g": [0, 0, 1, 2, 2]})["g"].tolist() == [0, 0, 1, 2, 2]
    for g, v, note in (([0, 0, 1, 2, -1], -1, "a negative index is not read from the end"),
                       ([0, 0, 1, 2, 5], 5, "indices are 0-based")):
        with pytest.raises(BdlError) as e:
            m.bind({**HIER_DATA, "g": g})
        text = str(e.value)
        assert text.startswith(f"hier.bdl:9:22: error: data 'g' indexes a dimension of 'theta' "
                               f"of size J = 3 but g[4] is {v}: an index must be in [0, 3)")
        assert "    z ~ Normal(theta[g[m]], 1.0)\n" in text and note in text
    # a vectorised gather, and a size read as an index
    vi = ppl.compile("model V(c: int[N], y: real[N], u: real[J]) {\n  a: real[J] ~ Normal(u, 1)"
                     "\n  plate N {\n    y ~ Normal(a[c], 1)\n  }\n}\n", "v.bdl")
    with pytest.raises(BdlError, match=r"v.bdl:4:18: error: data 'c' indexes a dimension of "
                       r"'a' of size J = 2 but c\[1\] is -2"):
        vi.bind({"c": [1, -2], "y": [0.0, 0.0], "u": [0.0, 0.0]})
    # Stan's 1-based county converted in the model, a 0 left in the file
    st = ppl.compile("model S(c: int[N], y: real[N], u: real[J]) {\n  a: real[J] ~ Normal(u, 1)"
                     "\n  plate n in N {\n    y ~ Normal(a[c[n] - 1], 1)\n  }\n}\n", "s.bdl")
    assert st.bind({"c": [1, 2], "y": [0.0, 0.0], "u": [0.0, 0.0]})["c"].tolist() == [1, 2]
    with pytest.raises(BdlError, match=r"s.bdl:4:18: error: data 'c' - 1 indexes a dimension "
                       r"of 'a' of size J = 2 but c\[1\] - 1 is -1"):
        st.bind({"c": [1, 0], "y": [0.0, 0.0], "u": [0.0, 0.0]})
    # g[0] reads one value, 2 * g values binding does not see: not checked at binding
    one = ppl.compile("model A(g: int[M], x: real[M]) {\n  th: real[3] ~ Normal(0, 1)\n"
                      "  x ~ Normal(th[g[0]], 1)\n}\n", "a.bdl")
    assert one.signature.index_checks == []


def test_an_index_in_a_branch_of_where_is_left_to_its_mask():
    """where(g >= 0, a[g], 0.0) with -1 for "no group": the condition masks what a[-1]
    reads, so binding does not refuse it; in the condition the index is still checked."""
    src = ("model A(g: int[N], y: real[N]) {\n  a: real[2] ~ Normal(0, 1)\n"
           "  y ~ Normal(where(g >= 0, a[g], 0.0), 1)\n}\n")
    m = ppl.compile(src, "w.bdl")
    assert m.signature.index_checks == []
    fit = m.fit({"g": [0, -1, 1], "y": [1.0, 0.0, 2.0]}, infer="svi(steps=2)")
    assert fit.samples["a"].shape[-1] == 2
    cond = ppl.compile(src.replace("where(g >= 0, a[g], 0.0)", "where(a[g] >= 0, 1.0, 0.0)"),
                       "c.bdl")
    with pytest.raises(BdlError, match=r"c.bdl:3:22: error: data 'g' indexes a dimension of "
                       r"'a' of size 2 but g\[1\] is -1"):
        cond.bind({"g": [0, -1, 1], "y": [1.0, 0.0, 2.0]})


def test_cli_refuses_a_negative_data_index_exit_1(tmp_path, bdl_here):
    model = tmp_path / "hier.bdl"
    model.write_text(HIER)
    data = tmp_path / "h.json"
    data.write_text(json.dumps({**HIER_DATA, "g": [0, 0, 1, 2, -1]}))
    r = bdl_here("run", model, "--data", data, "--out", tmp_path / "run", "-q")
    assert r.returncode == 1
    assert f"{model}:9:22: error: data 'g' indexes a dimension of 'theta'" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "run" / "samples.npz").exists()


def test_a_size_expression_that_is_not_whole_is_an_error_at_binding():
    """x: real[N / 2] with N = 5 took the 2 elements given (int(5 / 2)); a latent f:
    real[N / 2] would be drawn with 2: both are located errors naming N's value."""
    m = ppl.compile("model M(N: int, x: real[N / 2], y: real[N]) {\n  mu ~ Normal(0, 1)\n"
                    "  y ~ Normal(mu + sum(x), 1)\n}\n")
    with pytest.raises(BdlError) as e:
        m.bind({"N": 5, "x": [1.0, 2.0], "y": [1.0, 2.0, 3.0, 4.0, 5.0]})
    d = e.value.diagnostics[0]
    assert (d.span.line, d.span.col) == (1, 17) and d.message == (
        "'x' dimension 0 is declared N / 2 = 5 / 2, which is not a whole number of elements "
        "(sizes from the data)") and d.notes == ["N is 5 from 'y' (dimension 0)"]
    assert m.bind({"N": 4, "x": [1.0, 2.0], "y": [1.0, 2.0, 3.0, 4.0]})["x"].shape == (2,)
    m = ppl.compile("model M(y: real[N]) {\n  f: real[N / 2] ~ Normal(0, 1)\n"
                    "  y ~ Normal(sum(f), 1)\n}\n")
    with pytest.raises(BdlError) as e:
        m.fit({"y": [1.0, 2.0, 3.0]}, infer="map(steps=2)")
    d = e.value.diagnostics[0]
    assert (d.span.line, d.message) == (2, "latent 'f' is declared N / 2 = 3 / 2, which is not a "
                                           "whole number of elements (sizes from the data)")
