"""What a run prints besides its per-task lines: the overall progress line (``--quiet``) and
filters for Ray's messages that say nothing to a blip-ray user.

The progress line replaces Tune's trial table in ``--quiet`` mode: plain lines (no carriage
returns), at most one every :data:`~blip_ray.experiments.plan.PROGRESS_EVERY_S` seconds, so the
log of a day-long run (a terminal, ``ray job logs``) stays short.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ray import tune
from ray.tune.experiment import Trial

from blip_ray.experiments.plan.grid import PROGRESS_EVERY_S, TrialPlan, progress_line
from blip_ray.records.rows import TaskRow

#: Printed on every start of the embedded instance, which keeps token authentication on. Filtered
#: for the embedded instance only: attached to a cluster (``--address auto``) it is news.
TOKEN_NOTICE = {
    "ray._private.authentication.authentication_token_setup": (
        "Token authentication is enabled for this Ray cluster",
    ),
}
#: Ray's messages filtered out on every run, by logger: blip-ray prints its own or they are noise.
NOISE = {
    # Ctrl+C: blip-ray prints its own resume command (`blip-ray run ... --resume`).
    "ray.tune.tune": ("Resume experiment with: Tuner.restore",),
    # Ctrl+C: trials that never started have no results yet; the report says what ran.
    "ray.tune.analysis.experiment_analysis": ("Failed to fetch metrics for",),
}


class DropMessages(logging.Filter):
    """Drops log records whose message contains any of ``fragments``."""

    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def quiet_ray_notices(*, embedded: bool) -> None:
    """Filter :data:`NOISE` (and on an ``embedded`` instance :data:`TOKEN_NOTICE`) out of Ray's
    loggers: only those messages, one filter per logger however often this is called."""
    for name, fragments in (NOISE | TOKEN_NOTICE if embedded else NOISE).items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) for f in logger.filters):
            logger.addFilter(DropMessages(fragments))


class OverallProgress(tune.Callback):
    """``progress: 5/24 trials done, 2 running, 17 pending; tasks 23/96; 12m 30s elapsed, ETA
    38m 10s``: at a task's end or, while none ends, every ``every_s`` seconds, never more often.

    The ETA extrapolates the tasks finished since this run segment started (a resumed run's
    earlier tasks do not count toward the rate) over the tasks left.
    """

    def __init__(
        self,
        plan: TrialPlan,
        *,
        every_s: float = PROGRESS_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        out: Callable[[str], None] | None = None,
    ) -> None:
        self.plan, self.every_s, self.clock, self.out = plan, every_s, clock, out
        self.start = clock()
        self.last_line = -float("inf")
        self.finished_here = 0
        self.tasks: dict[str, int] = {}
        """Tasks done per trial id."""
        self.failed: set[str] = set()
        """Trials that ended early with a ``failed`` result (no retry)."""

    def setup(self, **info: Any) -> None:
        """The clock starts with the run segment (a restored run unpickles this callback)."""
        self.start, self.last_line, self.finished_here = self.clock(), -float("inf"), 0

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        self.maybe_print(trials)

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ) -> None:
        if "failed" in result:
            self.failed.add(trial.trial_id)
        row = TaskRow.from_result(result)
        if row is None:
            return
        if row.tasks_done > self.tasks.get(trial.trial_id, 0):
            self.finished_here += 1
        self.tasks[trial.trial_id] = row.tasks_done
        self.maybe_print(trials)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self.write(self.line(trials))

    def write(self, line: str) -> None:
        if self.out is not None:
            self.out(line)
        else:
            print(line, flush=True)

    def maybe_print(self, trials: list[Trial]) -> None:
        if self.clock() - self.last_line >= self.every_s:
            self.last_line = self.clock()
            self.write(self.line(trials))

    def line(self, trials: list[Trial]) -> str:
        plan = self.plan
        for trial in trials:  # a resumed run's trials carry their last result
            done = (trial.last_result or {}).get("tasks_done")
            if isinstance(done, int) and done > self.tasks.get(trial.trial_id, 0):
                self.tasks[trial.trial_id] = done
        # Ended: all tasks done, or failed. A trial stopped by Ctrl+C is TERMINATED too, with
        # tasks left: it still has to run (--resume).
        ended = [
            t
            for t in trials
            if self.tasks.get(t.trial_id, 0) >= plan.tasks
            or t.status == Trial.ERROR
            or t.trial_id in self.failed
        ]
        running = sum(t.status == Trial.RUNNING and t not in ended for t in trials)
        left = sum(plan.tasks - self.tasks.get(t.trial_id, 0) for t in trials if t not in ended)
        left += max(0, plan.trials - len(trials)) * plan.tasks  # trials Tune has not created
        return progress_line(
            done=len(ended),
            running=running,
            pending=max(0, plan.trials - len(ended) - running),
            trials=plan.trials,
            tasks_done=sum(self.tasks.values()),
            total_tasks=plan.total_tasks,
            tasks_left=left,
            elapsed_s=self.clock() - self.start,
            rate_tasks=self.finished_here,
        )
