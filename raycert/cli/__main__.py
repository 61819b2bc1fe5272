"""The ``raycert`` console script (and ``python -m raycert.cli``).

Ctrl-C and SIGTERM are taken before Typer, Rich and the commands load, so a signal that comes
while they load is one line and exit 130, as at every later phase (``raycert.interrupts``).
"""

from __future__ import annotations

import sys

from raycert.interrupts import (
    EXIT_CODE,
    InterruptedExit,
    forget_handled_interrupt,
    stop_signals,
)


def main() -> None:
    try:
        with stop_signals():  # until the root group takes over (``raycert.cli.root``)
            try:
                from raycert.cli.commands import app

                app(prog_name="raycert")
            except KeyboardInterrupt:  # while Typer, Rich and the commands load
                _say_interrupted()
                sys.exit(EXIT_CODE)
            except SystemExit as end:  # Typer's own for a signal before the command ran is silent
                if end.code == EXIT_CODE and not isinstance(end, InterruptedExit):
                    _say_interrupted()
                raise
    finally:  # exit with the code chosen above (an interrupt that escapes is marked anew)
        forget_handled_interrupt()


def _say_interrupted() -> None:
    words = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    command = words[0] if words else "raycert"
    print(f"{command} interrupted before it wrote anything", file=sys.stderr)


if __name__ == "__main__":
    main()
