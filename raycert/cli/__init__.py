"""The ``raycert`` command line: validates input, calls library functions, prints results.

``app`` is the Typer application; the console script is ``raycert.cli.__main__:main``, which
``python -m raycert.cli`` runs too. Modules, one line each:
- ``__main__``: the console script, which takes Ctrl-C and SIGTERM before the rest loads;
- ``commands``: the application with every command added;
- ``root``: the application, its error handling and the options several commands share;
- ``data``: ``raycert data check`` and ``raycert data download``;
- ``train``: ``raycert train`` and ``raycert certify``;
- ``study``: ``raycert study``;
- ``report``: ``raycert report``;
- ``export``: ``raycert export``;
- ``dashboard``: ``raycert dashboard``;
- ``output``: the tables and lines the commands print.

Start-up stays fast (``raycert --help`` well under a second): these modules import only Typer and
Rich at the top, and each command imports the library it needs (torch, Ray, the report) at the
top of its body, so ``raycert report`` never loads torch or Ray.

Error handling, shared by every command: a ``UserError`` raised anywhere below a command prints
``error: <message>`` as one line on stderr and exits with code 2, without a traceback (the root
group catches it, so new commands and sub-apps get this for free). Usage errors from Typer
(unknown option, bad value) are one ``error:`` line with exit code 2 as well. Any other
exception is a bug and keeps its traceback.

Paths mean what they say: every path option and ``RAYCERT_DATA`` is resolved against the
working folder the command was typed in, and every output is checked writable before any work
starts (``raycert.paths``). ``study`` exits 0 when it finished with at least one completed trial,
2 on bad input or when a trial hit one (the study stops at once), 1 when no trial completed, and
130 when stopped by Ctrl-C or SIGTERM (continue it with ``--resume``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    """``app``, loaded on first use: importing this package stays free of Typer and Rich, so
    the console script takes the signals before they load."""
    if name == "app":
        from raycert.cli.commands import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
