"""The options of `bdl run`, `bdl predict` and of a generated module run on its own are
the ones docs/language.md writes, with the same metavars, and no others."""
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from ppl.cli import build_parser
from ppl.runtime.main import command_line
from ppl.runtime.main import main as module_main

DOCS = (Path(__file__).resolve().parent.parent / "docs" / "language.md").read_text()


def _usage(actions) -> list[str]:
    """The options of an argparse parser as the docs write them: ``--data PATH``,
    ``--device cpu|cuda``, ``--force``, ``-q``; optional ones in brackets."""
    out = []
    for a in actions:
        if "-h" in a.option_strings:
            continue
        if not a.option_strings:
            out.append(a.metavar if a.nargs != "?" else f"[{a.metavar}]")
            continue
        word = a.option_strings[0]
        if a.nargs != 0:
            word += " " + ("|".join(a.choices) if a.choices else a.metavar)
        out.append(word if a.required else f"[{word}]")
    return out


def _documented(verb: str) -> str:
    """The usage of ``bdl VERB`` in the docs' "Command line" block, on one line."""
    block = DOCS.split("## Command line", 1)[1].split("```")[1]
    m = re.search(rf"^bdl {verb} .*(?:\n +\[.*)*", block, re.M)
    return " ".join(m.group(0).split())


@pytest.mark.parametrize("verb", ["run", "predict"])
def test_bdl_options_are_the_documented_ones(verb):
    sub = next(a for a in build_parser()._actions if a.choices and verb in a.choices)
    parser = sub.choices[verb]
    # before: --help said --data DATA, --seed SEED, --out OUT where the docs say PATH, S, DIR
    assert _documented(verb) == " ".join([f"bdl {verb}", *_usage(parser._actions)])


def test_generated_module_options_are_the_documented_ones():
    parser = command_line("M", "nuts", "out.py")
    documented = re.search(r"`python out\.py (\[DATA \| --data PATH\] .*?)`", DOCS).group(1)
    words = _usage(parser._actions)
    # DATA and --data PATH are one choice: written [DATA | --data PATH]
    assert words[:2] == ["[DATA]", "[--data PATH]"]
    assert documented == " ".join(["[DATA | --data PATH]", *words[2:]])
    assert documented == "[DATA | --data PATH] [--infer SPEC] [--seed S] [-q]"


def test_generated_module_takes_its_data_file_once(capsys):
    parser = command_line("M", "nuts", "out.py")
    assert parser.parse_args(["--data", "d.json"]).data_path == "d.json"
    assert parser.parse_args(["d.json"]).data == "d.json"

    def M():  # the module's model function: never run here
        raise AssertionError

    with pytest.raises(SystemExit) as e:
        module_main(M, SimpleNamespace(name="M"), None, argv=["d.json", "--data", "e.json"])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "model.py: error: give the data file once: DATA or --data PATH")
