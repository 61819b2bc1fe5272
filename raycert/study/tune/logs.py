"""What Ray Tune logs while a study's trials run, read or kept off the console.

- ``noting_stop_signals``: Tune's SIGINT handler logs "Stop signal received"; that record is
  how the study learns a signal stopped the run (the handler is Tune's own), and the study
  says so in its own line instead.
- ``quiet_state_copies``: Tune copies its driver staging folder to the storage while it
  writes temporary files there; one that is renamed mid-copy fails that copy with a
  traceback, though the next copy, a moment later, takes the finished file. A full disk fails
  them too, and the study ends on that in one line of its own. Those records are dropped; any
  other failure to save the state still shows.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from raycert.files import out_of_space
from raycert.study.tune.running import RunningStudy

TUNE_LOGGER = "ray.tune.tune"  # its run loop: stop signals, state snapshots
STATE_LOGGER = "ray.tune.execution.experiment_state"


class _StopSignalNote(logging.Filter):
    def __init__(self, study: RunningStudy) -> None:
        super().__init__()
        self.study = study

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Stop signal received"):
            self.study.signalled = True
            return False
        return True


class _StateCopyFailure(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        race = isinstance(exc, FileNotFoundError) and "-tmp-" in str(exc)
        return not (race or (exc is not None and out_of_space(exc)))


@contextlib.contextmanager
def _filtered(name: str, note: logging.Filter) -> Iterator[None]:
    logger = logging.getLogger(name)
    logger.addFilter(note)
    try:
        yield
    finally:
        logger.removeFilter(note)


def noting_stop_signals(study: RunningStudy) -> contextlib.AbstractContextManager[None]:
    """Within: ``study.signalled`` turns true when a signal asks Tune to stop."""
    return _filtered(TUNE_LOGGER, _StopSignalNote(study))


@contextlib.contextmanager
def quiet_state_copies() -> Iterator[None]:
    """Within: a state copy that met a temporary file renamed mid-copy, or a full disk, logs
    nothing."""
    with _filtered(STATE_LOGGER, _StateCopyFailure()), _filtered(TUNE_LOGGER, _StateCopyFailure()):
        yield
