"""A study's wall-clock budget: when to stop starting trials, and when to stop them all.

``--budget 10m`` is the wall time of the whole study, from the command's start to its report:
Ray's start-up, the search, the test certification of the chosen models and the report. The
end is kept in reserve: ``RESERVE_SHARE`` of the budget, or more once the completed trials
show that certifying the chosen models on the test split takes longer (each raycert trial
times the final certification on a few validation images at its end).

The search ends at ``total - reserve``:
- no trial starts that would end after it (``Clock.fits``), judged by the completed trials of
  the same length, else by the slowest pace per epoch, so the budget goes to trials that
  finish;
- then each running trial stops at its next epoch (``Clock.stops_trial``), unless its pace
  says it ends within ``SLACK_SHARE`` of the budget past that moment (cutting a trial one
  epoch short of its end wastes all of it), and every trial ``SLACK_SHARE`` later whatever its
  pace (``Clock.stops_all``). A study without a completed trial would end with nothing to
  show, so until one completes nothing stops: a budget too small for one trial of the preset
  overruns, and says so. The search then ends at that first completion instead
  (``first_done_s``), and the slack counts from there: the trials that started beside it are
  about as far along, and one an epoch from its end would otherwise be thrown away with all
  its work.

Time spent by an earlier driver counts when the study is resumed: ``started`` is moved back by
it (study.json's ``spent_s``, written when a driver ends, by Ctrl-C and SIGTERM included; a
driver killed with SIGKILL cannot record its time, and that time is not counted).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

RESERVE_SHARE = 0.1  # of the budget, kept for test certification and the report at least
SLACK_SHARE = 0.08  # of the budget: how far past the search's end a nearly done trial may run
# Each raycert trial measures the final test certification's cost per image on a few validation
# images at its end (``final_cert_s_per_image``); the reserve takes that, with a margin for the
# test split's harder samples and a busier machine.
FINAL_CERT_SAFETY = 1.25
# A trial that does not measure it (a custom trainable): its last validation pass (IBP in
# float32) per image times this, above what the default cascade in float64 costs per image.
FINAL_CERT_COST = 3.5


@dataclass(frozen=True)
class Final:
    """A completed trial as the reserve sees it: its val metrics and the seconds per test image
    of its final certification."""

    clean_acc: float
    acr: float
    cert_s_per_image: float


@dataclass
class Clock:
    """One study's budget as this driver sees it, in ``time.monotonic`` seconds.

    ``total_s`` in all, counted from ``started`` (this driver's start, less the time earlier
    drivers spent), for accuracy ``targets``, a test split of ``test_size`` images certified
    in ``concurrency`` shards at once; ``runs`` are the (epochs, seconds) of the completed
    trials, earlier drivers' included. ``observe`` learns from each completed trial."""

    total_s: float
    started: float
    targets: tuple[float, ...]
    test_size: int
    concurrency: int = 1
    runs: list[tuple[int, float]] = field(default_factory=list)
    finals: list[Final] = field(default_factory=list)
    first_done_s: float | None = None  # when the first trial completed, in seconds of the study
    reserve_s: float = field(init=False)

    def __post_init__(self) -> None:
        self.reserve_s = RESERVE_SHARE * self.total_s

    @property
    def completed(self) -> int:
        """Trials that ran to their end, earlier drivers' included."""
        return len(self.runs)

    def search_left(self) -> float:
        """Seconds the search may still run."""
        end = self.total_s - self.reserve_s
        if self.first_done_s is not None:  # the search waited for it (the module note)
            end = max(end, self.first_done_s)
        return end - (time.monotonic() - self.started)

    def trial_seconds(self, epochs: int | None = None) -> float:
        """How long a trial of ``epochs`` (``None``: the longest kind) takes, judged by the
        completed ones: the slowest of that length, else the slowest pace per epoch; 0 before
        any completed."""
        if not self.runs:
            return 0.0
        if epochs is None:
            return max(seconds for _, seconds in self.runs)
        same = [seconds for n, seconds in self.runs if n == epochs]
        if same:
            return max(same)
        return epochs * max(seconds / max(1, n) for n, seconds in self.runs)

    def fits(self, epochs: int | None = None) -> bool:
        """Whether a trial of ``epochs`` (``None``: the longest kind) started now ends before
        the search does; before any trial completed, whether the search has time left."""
        return self.trial_seconds(epochs) <= self.search_left()

    def final_seconds(self) -> float:
        """The test certification of each target's winner so far (ties broken as
        ``studyfolder.choose`` breaks them), shared by ``concurrency`` slots (each winner's
        split is cut into that many shards), with a margin."""
        winners = set()
        for target in self.targets:
            feasible = [
                (f.acr, f.clean_acc, -i) for i, f in enumerate(self.finals) if f.clean_acc >= target
            ]
            if feasible:
                winners.add(-max(feasible)[2])
        if not winners:
            return 0.0
        per_image = sum(self.finals[i].cert_s_per_image for i in winners) / max(1, self.concurrency)
        return per_image * FINAL_CERT_SAFETY * self.test_size

    def observe(self, result: dict[str, Any]) -> None:
        """Learn from a completed trial's last result how long a trial takes (Tune's
        ``time_total_s`` for its ``epoch`` epochs), and how long the end needs should it win a
        target (its ``clean_acc`` and ``acr``): the trial's own measure of the final
        certification (``final_cert_s_per_image``), else its last validation pass
        (``eval_seconds`` for ``eval_n`` samples) times ``FINAL_CERT_COST``."""
        self.runs.append((int(result.get("epoch") or 0), float(result.get("time_total_s", 0.0))))
        per_image = result.get("final_cert_s_per_image")
        if not per_image:
            eval_s, eval_n = result.get("eval_seconds"), result.get("eval_n")
            per_image = eval_s / eval_n * FINAL_CERT_COST if eval_s and eval_n else None
        acc, acr = result.get("clean_acc"), result.get("acr")
        if per_image and acc is not None and acr is not None:
            self.finals.append(Final(float(acc), float(acr), float(per_image)))
            final_s = min(self.final_seconds(), 0.5 * self.total_s)
            self.reserve_s = max(RESERVE_SHARE * self.total_s, final_s)
        if self.completed == 1:  # the first: if the search waited for it, it ends now
            self.first_done_s = time.monotonic() - self.started

    def stops_trial(self, result: dict[str, Any], epochs: int | None = None) -> bool:
        """Whether a running trial stops after the epoch of ``result`` (its ``epoch`` and
        ``time_total_s``; its length ``epochs``, or the result's own ``epochs``): only once a
        trial completed and the search's time is spent, and then unless its pace says it ends
        within the slack (the module note)."""
        if self.completed == 0 or self.search_left() > 0:
            return False
        epoch, seconds = result.get("epoch"), result.get("time_total_s")
        epochs = result.get("epochs", epochs)  # a short trial's own length
        if not (epochs and epoch and seconds) or epoch >= epochs:
            return True  # no pace to judge by
        to_go = (epochs - epoch) * seconds / epoch
        return to_go > self.search_left() + SLACK_SHARE * self.total_s

    def stops_all(self) -> bool:
        """Whether every trial stops now: the slack past the search's end is spent too."""
        return self.completed > 0 and self.search_left() <= -SLACK_SHARE * self.total_s
