"""Errors a runtime raises about what the user wrote.

:class:`ArgumentError` names the argument at fault, so that ``ppl.locate`` can point the
caret at that argument in the ``.bdl`` source rather than at the whole statement.
"""

from __future__ import annotations


class ArgumentError(ValueError):
    """An argument value a construct cannot take (``margin=1.5`` where it must be below
    ``cap=1``). ``argument`` is the construct's parameter name. The message comes first, alone
    positional: Pyro's trace re-raises an error as ``type(e)(message)``."""

    def __init__(self, message: str, argument: str | None = None):
        super().__init__(message)
        self.argument = argument
