"""The one exception type that reaches users as a one-line message (exit code 2), and the
helper that folds another library's error into such a line (``raycert.validation`` does it for
pydantic's)."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: the message names the problem and the fix, on one line.

    The CLI prints it as ``error: <message>`` and exits with code 2, without a traceback.
    """


def one_line(exc: BaseException) -> str:
    """An exception's message folded onto one line (its type's name when it has no message),
    for quoting a library's error inside a ``UserError``."""
    return " ".join(str(exc).split()) or type(exc).__name__
