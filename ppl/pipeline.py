"""The one pipeline: source -> parse -> check -> lower -> generate Pyro source.

The CLI and the Python API both come through here; the embedded path executes exactly
the source this returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .check.checker import CheckedProgram, check
from .lower import IRModel, lower
from .syntax.diagnostics import BdlError
from .syntax.parser import parse


@dataclass
class Compiled:
    filename: str
    text: str
    checked: CheckedProgram
    ir: dict[str, IRModel]
    python: str
    # (first, last, SourceRef) per generated statement: 1-based lines of ``python``
    source_map: list = field(default_factory=list)


def front(text: str, filename: str = "<string>") -> CheckedProgram:
    """Parse and check; raise :class:`BdlError` with every error found."""
    program = parse(text, filename)
    return check(program, filename, text)


def compile_source(text: str, filename: str = "<string>") -> Compiled:
    from .backends.pyro import generate_mapped

    checked = front(text, filename)
    irs = {name: lower(cm, filename) for name, cm in checked.models.items()}
    python, source_map = generate_mapped(list(irs.values()), filename, text)
    return Compiled(filename, text, checked, irs, python, source_map)


__all__ = ["BdlError", "Compiled", "compile_source", "front"]
