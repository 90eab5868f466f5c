"""How many steps a run takes: ``train.max_steps``, or fewer when they would not fit ``train.max_minutes``.

The wall-clock budget is turned into a number of steps after timing a few steps that follow a
warm-up (the first steps pay for reading files and the first batches), and fitted again, from the
mean time per step since the warm-up, each time the number of steps done doubles: early steps are
often slower (files entering the cache, kernels being built), and a run fitted on them alone
stopped at 40 % of its budget. The number is stored in the checkpoint, so a resumed run takes the
steps its checkpoint says.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import perf_counter

__all__ = ["StepBudget"]

log = logging.getLogger(__name__)

WARMUP_STEPS = 5  # steps not timed when fitting the budget
TIMED_STEPS = 20  # steps timed to fit the budget
RESERVE = 0.1  # share of the budget kept for validation and saving


class StepBudget:
    """The step count of a run and the clock it is measured by.

    Parameters
    ----------
    total
        Steps to take (``train.max_steps``, or the number fitted earlier in this run).
    minutes
        ``train.max_minutes``, or None for no time limit.
    start
        The step this process starts from (0, or the checkpoint's step on ``--resume``).
    elapsed_before
        Seconds spent before ``start`` (by the interrupted run).
    fitted
        Whether ``total`` was already fitted to the budget.
    agree
        Turns a value into the minimum over all processes (distributed runs).
    """

    def __init__(
        self,
        total: int,
        *,
        minutes: float | None,
        start: int = 0,
        elapsed_before: float = 0.0,
        fitted: bool = False,
        agree: Callable[[int], int] = lambda value: value,
    ) -> None:
        self.total = int(total)
        self.limit = int(total)  # train.max_steps: a refit never goes beyond it
        self.seconds = None if minutes is None else 60.0 * minutes
        self.start = start
        self.fitted = fitted or self.seconds is None
        self._agree = agree
        self._before = elapsed_before
        self._t0 = perf_counter()
        self._t_warm = self._t0
        self._next_fit = WARMUP_STEPS + TIMED_STEPS  # steps done at the next (re)fit, in this process
        self._refit = not self.fitted  # a resumed run keeps the total its checkpoint fitted

    def elapsed(self) -> float:
        """Seconds of training in this run, the interrupted part included."""
        return self._before + perf_counter() - self._t0

    def after_step(self, step: int) -> bool:
        """Account for the step that ended at ``step``; False when the time is up (``total`` becomes ``step``)."""
        if self.seconds is None:
            return True
        done = step - self.start
        if self._refit and done == WARMUP_STEPS:
            self._t_warm = perf_counter()
        if self._refit and done == self._next_fit:
            self._fit(step, (perf_counter() - self._t_warm) / (done - WARMUP_STEPS))
            self._next_fit *= 2
        over = int(self.elapsed() > self.seconds and step < self.total)
        if self._agree(1 - over) == 0:  # any process out of time stops them all
            log.warning("time budget of %.1f min reached at step %d: stopping", self.seconds / 60, step)
            self.total = step
            return False
        return True

    def _fit(self, step: int, per_step: float) -> None:
        assert self.seconds is not None
        fit = step + int(((1 - RESERVE) * self.seconds - self.elapsed()) / per_step)
        fit = self._agree(max(step, min(self.limit, fit)))
        if fit != self.total:
            log.info(
                "time budget %.1f min: training for %d steps (%.3f s/step)", self.seconds / 60, fit, per_step
            )
            self.total = fit
        self.fitted = True
