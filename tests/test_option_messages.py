"""Method option messages: svi's lr rule, a misspelt option value's suggestion."""
import pytest

import ppl

A = "model A(y: real[N]) { mu ~ Normal(0, 1); y ~ Normal(mu, 1) }\n"
LR_RULE = ("must be positive, or 0 with lr_scalars > 0 (then only the one-number parameters "
           "move)")


@pytest.mark.parametrize("method", ["svi", "map"])
@pytest.mark.parametrize("lr", ["-1", "0", "-0.5"])
def test_a_negative_lr_and_lr_0_alone_state_the_same_rule(method, lr):
    # before: -1 "must be at least 0", yet 0 "must be positive (...)"
    m = ppl.compile(A, filename="a.bdl")
    with pytest.raises(ppl.BdlError) as e:
        m.resolve_infer(f"{method}(lr={lr})")
    # located in the spec, as the file's infer line is
    col = len(f"infer {method}(") + 1
    assert str(e.value).splitlines() == [
        f"--infer:1:{col}: error: option 'lr' of {method}: {LR_RULE}",
        f"  infer {method}(lr={lr})", " " * (col + 1) + "^" + "~" * (len(f"lr={lr}") - 1)]


def test_a_negative_lr_in_the_file_states_the_rule_at_the_option():
    src = A + "infer A with svi(lr=-1, lr_scalars=0.1)\n"
    with pytest.raises(ppl.BdlError) as e:
        ppl.compile(src, filename="a.bdl")
    assert str(e.value).splitlines()[0] == f"a.bdl:2:18: error: option 'lr' of svi: {LR_RULE}"


def test_lr_0_with_lr_scalars_is_accepted():
    m = ppl.compile(A, filename="a.bdl")
    assert m.resolve_infer("svi(lr=0, lr_scalars=0.1)")[1]["lr"] == 0.0


def test_a_misspelt_option_value_gets_a_suggestion_on_the_command_line(tmp_path, capsys):
    # before: "expected one of ..." alone (a construct's choice argument had the note)
    from ppl.cli import main

    (tmp_path / "a.bdl").write_text(A)
    (tmp_path / "a.data.json").write_text('{"y": [0.5]}')
    rc = main(["run", str(tmp_path / "a.bdl"), "--infer", "svi(guide=lowrnk)", "-q",
               "--out", str(tmp_path / "out")])
    assert rc == 1
    assert capsys.readouterr().err.splitlines() == [
        "--infer:1:11: error: option 'guide' of svi: expected one of normal, delta, lowrank, "
        "iaf, custom, got 'lowrnk'", "  infer svi(guide=lowrnk)", "            ^~~~~~~~~~~~",
        "  note: did you mean 'lowrank'?"]


def test_a_misspelt_option_value_gets_a_suggestion_in_the_file_and_from_python():
    with pytest.raises(ppl.BdlError) as e:
        ppl.compile(A + "infer A with svi(dtype=float63)\n", filename="a.bdl")
    assert str(e.value).splitlines()[0::3] == [
        "a.bdl:2:18: error: option 'dtype' of svi: expected one of float32, float64, got "
        "'float63'", "  note: did you mean 'float64'?"]
    m = ppl.compile(A, filename="a.bdl")
    with pytest.raises(ppl.BdlError) as e:
        m.resolve_infer("svi", guide="delt")
    assert str(e.value).splitlines()[1] == "  note: did you mean 'delta'?"
    with pytest.raises(ppl.BdlError) as e:  # nothing near: no note
        m.resolve_infer("svi", guide="zzzzzz")
    assert "note" not in str(e.value)
