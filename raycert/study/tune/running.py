"""The study this process's Tune run belongs to: what Tune's pickled shells read.

Tune pickles its searcher, callbacks and stopper into the experiment state, and a resumed run
uses the unpickled copies, not the ones ``run_study`` made. So those shells hold no path, clock
or error of their own: ``run_study`` lends a ``RunningStudy`` for the length of the Tune run
(``lend``), and they read it (``current``). This is what makes a study folder relocatable: a
copy or a move resumed in another place has its shells read and write there, never where the
folder was when Tune pickled them. One Tune run at a time per process (``Tuner.fit`` does not
nest), so one study is lent at a time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from raycert.study.policy.budget import Clock
from raycert.studyfolder import StudyDir


@dataclass
class RunningStudy:
    """The study folder now running (``store``), its Optuna study ``name``, its budget's clock
    (None without a budget), the first ``UserError`` one of its trials raised (trial id,
    message), which stops the study, and whether Ctrl-C or SIGTERM asked Tune to stop."""

    store: StudyDir
    name: str
    clock: Clock | None = None
    user_error: tuple[str, str] | None = None
    signalled: bool = False


_LENT: list[RunningStudy] = []  # the study of the Tune run in progress, if any


@contextlib.contextmanager
def lend(study: RunningStudy) -> Iterator[RunningStudy]:
    """Within: Tune's shells in this process read ``study``."""
    if _LENT:
        raise RuntimeError(f"a Tune run of {_LENT[0].store.uri} is already in progress")
    _LENT.append(study)
    try:
        yield study
    finally:
        _LENT.clear()


def current() -> RunningStudy:
    """The study lent now (``RuntimeError`` outside a Tune run of ``run_study``)."""
    if not _LENT:
        raise RuntimeError("no study is running: Tune's shells work inside run_study only")
    return _LENT[0]
