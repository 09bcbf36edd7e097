"""Run-time errors pointed at the BDL statement that raised them.

Generated modules run under a pseudo file name (``ppl.model._execute``), and the backend's
source map (``generate_mapped``) says which BDL statement each generated line came from.
A ``ValueError`` or ``RuntimeError`` raised while such a line runs -- a construct refusing
an argument value, a torch shape mismatch in a distribution -- becomes a located
:class:`BdlError` (``file:line:col: error: ...``, exit status 1 in the CLI), like the
checker's errors. Errors raised outside generated code pass through unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager

from .syntax.diagnostics import BdlError, Diagnostic

# pseudo file name of a generated module -> (BDL file name, BDL text, source map)
_MODULES: dict[str, tuple[str, str, list]] = {}


def register(pseudo: str, filename: str, text: str, source_map: list) -> None:
    _MODULES[pseudo] = (filename, text, source_map)


def _original(exc: BaseException) -> BaseException:
    """The exception as first raised: Pyro's trace re-raises the same type with the trace's
    shapes appended to the message (``raise exc from e``), which says nothing to a user."""
    while (exc.__cause__ is not None and type(exc.__cause__) is type(exc)
           and str(exc).startswith(str(exc.__cause__))):
        exc = exc.__cause__
    return exc


def locate(exc: BaseException) -> BdlError | None:
    """``exc`` as a located :class:`BdlError` at the innermost generated statement that
    was running when it was raised; None when no generated line was running."""
    hit = None
    tb = exc.__traceback__
    while tb is not None:  # outermost -> innermost frame; keep the innermost generated one
        name = tb.tb_frame.f_code.co_filename
        if name in _MODULES:
            hit = (name, tb.tb_lineno)
        tb = tb.tb_next
    if hit is None:
        return None
    filename, text, source_map = _MODULES[hit[0]]
    lineno = hit[1]
    entries = [(first, ref) for first, last, ref in source_map if first <= lineno <= last]
    if not entries:
        return None
    ref = max(entries, key=lambda e: e[0])[1]  # a plate's body statement, not the plate
    original = _original(exc)
    argument = getattr(original, "argument", None)
    span = ref.args.get(argument, ref.span) if argument is not None else ref.span
    what = type(original).__name__
    note = f"raised while running this statement ({what}, line {lineno} of the generated Pyro)"
    return BdlError([Diagnostic(str(original), span, notes=[note])], filename, text)


@contextmanager
def located():
    """Re-raise run-time errors from generated code as located :class:`BdlError`\\ s."""
    try:
        yield
    except (ValueError, RuntimeError) as e:
        err = locate(e)
        if err is None:
            raise
        raise err from e
