"""Failed trials: why each one failed, and a stop for the whole study on a user's mistake.

Ray Tune retries a failed trial (``FailureConfig(max_failures=1)``), which is right for a
transient failure (a killed worker, a lost node) and wrong for a ``UserError`` raised inside a
trial (missing data on a node, a config the spec let through): every retry fails the same way,
and so does every other trial. ``StopOnUserError`` sees a trial's failure before its retry can
start and ends the Tune run the way Ctrl-C does (Tune's own interrupt, ``SIGUSR1``), so nothing
is retried, Tune's state is saved whole, and ``--resume`` continues once the problem is fixed.
Tune's traceback of such a trial is kept off the console: the study reports its one line.

Tune pickles its callbacks into the experiment state and a resumed run uses the unpickled
copies, so the error the callback sees is kept on the running study
(``raycert.study.tune.running``), not on the instance ``run_study`` made.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterator
from typing import Any

import ray.cloudpickle
from ray.exceptions import RayTaskError
from ray.tune import Callback
from ray.tune.experiment import Trial

from raycert.errors import UserError
from raycert.study.tune.running import current

MESSAGE_CHARS = 300
TUNE_CONTROLLER_LOGGER = "ray.tune.execution.tune_controller"


class StudyStopped(Exception):
    """Raised inside Tune's loop to end it when Tune's interrupt handler is not installed."""


def trial_exception(trial: Trial) -> BaseException | None:
    """The exception a failed trial raised (the cause, unwrapped from Ray's task error)."""
    exc: Any = None
    path = trial.pickled_error_file
    try:
        if path and os.path.exists(path):
            with open(path, "rb") as stream:
                exc = ray.cloudpickle.load(stream)
        else:
            exc = trial.get_pickled_error()
    except Exception:  # an unreadable error file: fall back to its text
        exc = None
    if isinstance(exc, RayTaskError) and exc.cause is not None:
        return exc.cause
    return exc if isinstance(exc, BaseException) else None


def error_message(trial: Trial) -> str | None:
    """One line saying why a trial failed (None if it has no error); a long traceback's last
    line is cut at ``MESSAGE_CHARS``."""
    exc = trial_exception(trial)
    if isinstance(exc, UserError):
        text = str(exc)
    elif exc is not None:
        text = f"{type(exc).__name__}: {exc}"
    else:
        try:
            error = trial.get_error()
        except Exception:
            error = None
        if error is None:
            return None
        lines = [line for line in str(error).splitlines() if line.strip()]
        text = lines[-1] if lines else type(error).__name__
    text = " ".join(text.split())
    if isinstance(exc, UserError) or len(text) <= MESSAGE_CHARS:
        return text  # a UserError's line is written to be read whole
    return text[: MESSAGE_CHARS - 3] + "..."


class StopOnUserError(Callback):
    """Ends the Tune run at the first trial that raised a ``UserError`` (see the module note)."""

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self._check(trial)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self._check(trial)

    def _check(self, trial: Trial) -> None:
        exc, study = trial_exception(trial), current()
        if not isinstance(exc, UserError) or study.user_error is not None:
            return
        study.user_error = (trial.trial_id, error_message(trial) or str(exc))
        handler = signal.getsignal(signal.SIGUSR1)
        if callable(handler):
            signal.raise_signal(signal.SIGUSR1)  # Tune's interrupt: stop, save state, return
        else:
            raise StudyStopped(str(exc))


class _HideUserErrorTracebacks(logging.Filter):
    """Drops Tune's "Trial task failed" record (a traceback) when the cause is a UserError."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, RayTaskError):
            exc = exc.cause
        return not isinstance(exc, UserError)


@contextlib.contextmanager
def quiet_user_errors() -> Iterator[None]:
    """Within: Tune logs no traceback for a trial that failed with a ``UserError``."""
    logger = logging.getLogger(TUNE_CONTROLLER_LOGGER)
    hide = _HideUserErrorTracebacks()
    logger.addFilter(hide)
    try:
        yield
    finally:
        logger.removeFilter(hide)
