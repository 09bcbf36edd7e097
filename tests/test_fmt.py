"""`bdl fmt` is idempotent and keeps the program: on every example and test program."""

from __future__ import annotations

import pytest
from test_cli import LINREG
from test_fuzz import PROGRAMS

from ppl.syntax.format import fmt
from ppl.syntax.parser import parse


def _bdl_strings_in_tests() -> list[str]:
    """Every valid BDL program written inline in the test files."""
    import ast as pyast
    from pathlib import Path

    out = []
    for f in sorted(Path(__file__).parent.glob("test_*.py")):
        for node in pyast.walk(pyast.parse(f.read_text())):
            if isinstance(node, pyast.Constant) and isinstance(node.value, str) \
                    and "model " in node.value and "{" in node.value:
                try:
                    parse(node.value)
                except Exception:  # noqa: BLE001 - malformed on purpose (golden tests)
                    continue
                out.append(node.value)
    return out


ALL = PROGRAMS + [LINREG] + _bdl_strings_in_tests()


@pytest.mark.parametrize("i", range(len(ALL)))
def test_fmt_is_idempotent_and_keeps_the_ast(i):
    text = ALL[i]
    once = fmt(text)
    assert fmt(once) == once
    assert parse(once) == parse(text)
    assert [c[2] for c in parse(once).comments] == [c[2] for c in parse(text).comments]
