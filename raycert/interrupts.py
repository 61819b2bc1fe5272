"""Ctrl-C and SIGTERM: a long command stops where stopping is safe, records where it stopped
and exits 130.

Python turns SIGINT into a ``KeyboardInterrupt`` wherever the main thread happens to be, and
SIGTERM's default kills the process at once. Both go wrong around Ray: SIGTERM left
``status.json`` files "running" and Ray's agents orphaned, and an interrupt that cut Ray's
start-up in half crashed in native code. So:

- ``stop_signals``: within, SIGTERM raises ``KeyboardInterrupt`` as Ctrl-C does, once; a second
  signal while the first one's cleanup runs is ignored (cutting the cleanup would leave what
  the first one stops behind).
- ``held``: within, both signals wait until the block ends, then raise: for work an exception
  must not cut in half (Ray's start-up and shut-down, which spawn and reap processes).
- ``handlers_kept``: within, whatever a library installs for SIGINT or SIGUSR1 is undone when
  the block ends (Ray Tune leaves its graceful-stop handler behind after a run: later Ctrl-Cs
  would only set a flag nobody reads).
- ``Interrupted``: the ``KeyboardInterrupt`` a command raises once it has recorded where it
  stopped, naming that folder;
- ``InterruptedExit``: the exit with code 130 once the line saying so is printed.
- ``forget_handled_interrupt``: clears CPython's sticky mark of an interrupt it saw leave code
  run by ``exec`` (the console script calls it on its way out).

No handler is ``SIG_IGN``: processes started meanwhile (Ray's) would inherit it and ignore
SIGTERM for good. Signals can be handled in the main thread only; elsewhere these do nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_CODE = 130  # what a shell reports for a command Ctrl-C stopped


class Interrupted(KeyboardInterrupt):
    """A command stopped by a signal, after recording its state in ``where`` (a folder or URI;
    None when it had written nothing yet); ``resume_args`` are the options that continue it
    besides ``--resume`` and the command's own."""

    def __init__(self, where: str | None, resume_args: tuple[str, ...] = ()) -> None:
        super().__init__(where)
        self.where = where
        self.resume_args = resume_args  # what continuing needs beyond the command's own words


class InterruptedExit(SystemExit):
    """Exit code 130, raised once the stopped command has printed its line (Typer exits 130
    silently for a Ctrl-C taken before a command runs: this tells the two apart)."""

    def __init__(self) -> None:
        super().__init__(EXIT_CODE)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Within: the first SIGINT or SIGTERM raises ``KeyboardInterrupt``; later ones do nothing."""
    if not _main_thread():
        yield
        return
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Within: SIGINT and SIGTERM are held; if one came, ``KeyboardInterrupt`` is raised when the
    block ends (unless it raised already, or the handler outside is one that does nothing)."""
    if not _main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _: caught.append(signum)) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if caught:
        handler = previous[caught[0]]
        if callable(handler):
            handler(caught[0], None)  # stop_signals' or Python's own: raises if it should
        elif handler == signal.SIG_DFL:
            raise KeyboardInterrupt


def forget_handled_interrupt() -> None:
    """Clear CPython's mark that a ``KeyboardInterrupt`` went unhandled, once the program has
    handled it.

    CPython (3.11 to 3.13 at least) sets that mark whenever a ``KeyboardInterrupt`` leaves code
    that ``exec`` runs from a string, and ``dataclasses`` and ``namedtuple`` build their methods
    that way, so an import or a class definition is where a signal may land. The mark stays
    however the program goes on; when it exits, ``python -m`` then ends by SIGINT (code -2)
    instead of the code the program chose. Each ``exec`` of a string clears the mark as it
    starts, and this empty one raises nothing that could set it again.
    """
    exec("", {})


@contextlib.contextmanager
def handlers_kept(*signals: signal.Signals) -> Iterator[None]:
    """Within: anything may install handlers for ``signals``; the block's end puts back the
    ones from before."""
    if not _main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            if handler is not None:
                signal.signal(s, handler)
