"""One driver's study: the record every step of ``run_study`` passes along."""

from __future__ import annotations

import time
from dataclasses import dataclass

from raycert.spec import StudySpec
from raycert.study.policy.plan import StudyRequest
from raycert.studyfolder import StudyDir, StudyMeta


@dataclass
class Driver:
    """One driver's study: what was asked, the spec, study.json's record (``meta``, updated as
    the study runs), its folder, what an earlier driver recorded (``saved``, when resuming),
    and the ``time.monotonic()`` the study's clock counts from (this driver's start, less the
    time earlier drivers spent)."""

    request: StudyRequest
    spec: StudySpec
    meta: StudyMeta
    store: StudyDir
    saved: StudyMeta | None
    origin: float

    def spend(self) -> None:
        """Record the study's time so far in ``meta`` (written with it)."""
        self.meta.spent_s = time.monotonic() - self.origin
