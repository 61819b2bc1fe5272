"""A study's wall-clock budget: when to stop starting trials, and when to stop them all.

``--budget 10m`` is the wall time of the whole study, from the command's start to its report:
Ray's start-up, the search, the test certification of the chosen models and the report. The
end is kept in reserve: ``RESERVE_SHARE`` of the budget, or more once the completed trials
show that certifying the chosen models on the test split takes longer (each raycert trial
times the final certification on a few validation images at its end).

The search ends at ``total - reserve``:
- the searcher starts no trial that would end after it, judged by the completed trials of the
  same length, else by the slowest pace per epoch (``room_for_another_trial``), so the budget
  goes to trials that finish;
- ``BudgetStopper`` then stops each running trial at its next epoch, unless its pace says it
  ends within ``SLACK_SHARE`` of the budget past that moment (cutting a trial one epoch short
  of its end wastes all of it), and every trial ``SLACK_SHARE`` later whatever its pace. A
  trial stopped so is PRUNED in Optuna and ``pruned`` in the trials table. A study without a
  completed trial would end with nothing to show, so until one completes the stopper waits for
  it: a budget too small for one trial of the preset overruns, and says so. The search then
  ends at that first completion instead (``first_done_s``), and the slack counts from there: the
  trials that started beside it are about as far along, and one an epoch from its end would
  otherwise be thrown away with all its work (on a busy 2-core machine, the recipe was).

Time spent by an earlier driver counts when the study is resumed (study.json's ``spent_s``,
written when a driver ends, by Ctrl-C and SIGTERM included; a driver killed with SIGKILL
cannot record its time, and that time is not counted).
Tune pickles its searcher and stopper into its experiment state and a resumed run uses the
unpickled copies, so the clock is kept per study in this module, as ``failures`` keeps errors.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ray.tune.stopper import Stopper

RESERVE_SHARE = 0.1  # of the budget, kept for test certification and the report at least
SLACK_SHARE = 0.08  # of the budget: how far past the search's end a nearly done trial may run
# Each raycert trial measures the final test certification's cost per image on a few validation
# images at its end (``final_cert_s_per_image``); the reserve takes that, with a margin for the
# test split's harder samples and a busier machine.
FINAL_CERT_SAFETY = 1.25
# A trial that does not measure it (a custom trainable): its last validation pass, IBP in
# float32, times this. The README's main job certified its test split with the cascade in
# float64 at 1.7x and 2.0x that pass per image (kappa 0); a kappa-0.68 model at 3.3x.
FINAL_CERT_COST = 3.5


@dataclass
class Clock:
    """One study's budget as this driver sees it (``time.monotonic`` seconds)."""

    total_s: float
    started: float  # when this driver started, less the time spent by earlier drivers
    targets: tuple[float, ...]
    test_size: int
    concurrency: int = 1  # test certifications at once
    reserve_s: float = field(init=False)
    runs: list[tuple[int, float]] = field(default_factory=list)  # completed: (epochs, seconds)
    # completed and probed: (clean_acc, acr, seconds per test image of the final certification)
    finals: list[tuple[float, float, float]] = field(default_factory=list)
    first_done_s: float | None = None  # when the first trial completed, in seconds of the study

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

    def final_seconds(self) -> float:
        """The test certification of each target's winner so far (``finals``; ties as
        ``studyfolder.choose`` breaks them), shared by ``concurrency`` slots (each winner's
        split is cut into that many shards), with a margin."""
        winners = set()
        for target in self.targets:
            feasible = [
                (acr, acc, -i) for i, (acc, acr, _) in enumerate(self.finals) if acc >= target
            ]
            if feasible:
                winners.add(-max(feasible)[2])
        if not winners:
            return 0.0
        per_image = sum(self.finals[i][2] for i in winners) / max(1, self.concurrency)
        return per_image * FINAL_CERT_SAFETY * self.test_size


_CLOCKS: dict[str, Clock] = {}


def start(
    uri: str,
    total_s: float,
    started: float,
    targets: Sequence[float],
    test_size: int,
    completed: Sequence[tuple[int, float]] = (),
) -> Clock:
    """Start the clock of study ``uri``: ``total_s`` in all, counted from ``started`` (a
    ``time.monotonic()`` moved back by the time earlier drivers spent), for accuracy
    ``targets`` and a test split of ``test_size``; ``completed`` are the (epochs, seconds) of
    the trials completed before (on resume)."""
    clock = Clock(total_s, started, tuple(targets), test_size)
    clock.runs = [(int(n), float(s)) for n, s in completed]
    _CLOCKS[uri] = clock
    return clock


def forget(uri: str) -> None:
    """Drop the clock of study ``uri`` (its driver has ended)."""
    _CLOCKS.pop(uri, None)


def observe(uri: str, result: dict) -> None:
    """Learn from a completed trial's last result how long a trial takes (Tune's
    ``time_total_s`` for its ``epoch`` epochs), and how long the end needs should it win a
    target (its ``clean_acc`` and ``acr``): the trial's own measure of the final certification
    (``final_cert_s_per_image``), else its last validation pass (``eval_seconds`` for
    ``eval_n`` samples) times ``FINAL_CERT_COST``."""
    clock = _CLOCKS.get(uri)
    if clock is None:
        return
    clock.runs.append((int(result.get("epoch") or 0), float(result.get("time_total_s", 0.0))))
    per_image = result.get("final_cert_s_per_image")
    if not per_image:
        eval_s, eval_n = result.get("eval_seconds"), result.get("eval_n")
        per_image = eval_s / eval_n * FINAL_CERT_COST if eval_s and eval_n else None
    acc, acr = result.get("clean_acc"), result.get("acr")
    if per_image and acc is not None and acr is not None:
        clock.finals.append((float(acc), float(acr), float(per_image)))
        final_s = min(clock.final_seconds(), 0.5 * clock.total_s)
        clock.reserve_s = max(RESERVE_SHARE * clock.total_s, final_s)
    if clock.completed == 1:  # the first: if the search waited for it, it ends now
        clock.first_done_s = time.monotonic() - clock.started


def room_for_another_trial(uri: str, epochs: int | None = None) -> bool:
    """Whether a trial of ``epochs`` (``None``: the longest kind) started now would end before
    the search does: always without a budget; before any trial completed, while the search has
    time left."""
    clock = _CLOCKS.get(uri)
    return clock is None or clock.trial_seconds(epochs) <= clock.search_left()


class BudgetStopper(Stopper):
    """Stops the trials once the search part of the study's budget is spent and at least one
    trial has completed (see the module note); ``epochs`` is every trial's length."""

    def __init__(self, study_uri: str, epochs: int | None = None) -> None:
        self.study_uri, self.epochs = study_uri, epochs

    def __call__(self, trial_id: str, result: dict) -> bool:
        clock = _CLOCKS.get(self.study_uri)
        if clock is None or clock.completed == 0 or clock.search_left() > 0:
            return False
        epoch, seconds = result.get("epoch"), result.get("time_total_s")
        epochs = result.get("epochs", self.epochs)  # a short trial's own length
        if not (epochs and epoch and seconds) or epoch >= epochs:
            return True  # no pace to judge by
        to_go = (epochs - epoch) * seconds / epoch
        return to_go > clock.search_left() + SLACK_SHARE * clock.total_s

    def stop_all(self) -> bool:
        clock = _CLOCKS.get(self.study_uri)
        if clock is None or clock.completed == 0:
            return False
        return clock.search_left() <= -SLACK_SHARE * clock.total_s
