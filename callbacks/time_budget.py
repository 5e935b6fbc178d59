"""Learning-rate schedules that keep to a time budget (`--trainer.max_time`).

Lightning's `max_time` stops training when the time is up; a schedule defined over the planned steps
would then stop wherever it had got to, often at a high learning rate, and the run would end with an
unannealed model. With `ScheduleFollowsTimeBudget`, every step-wise schedule runs on whichever is further
along: the steps taken or the share of the budget spent. On a machine fast enough for the planned steps
the steps lead and the run is exactly the run without a budget; on a slower one the schedule (warm-up,
peak, annealing) is compressed into the budget and ends as the time does. So a preset can promise both
a result on fast machines and a wall time on slow ones.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Timer
from torch.optim.lr_scheduler import LRScheduler


def budget_timer(trainer: L.Trainer) -> Timer | None:
    """The run's time budget: Lightning's Timer, if it has a duration (`--trainer.max_time`)."""
    timers = (c for c in trainer.callbacks if isinstance(c, Timer))  # type: ignore[attr-defined]
    return next((t for t in timers if t.time_remaining() is not None), None)


class ScheduleFollowsTimeBudget(L.Callback):
    """Advances step-interval LR schedulers to the share of `--trainer.max_time` spent, when that is ahead
    of the steps taken. A no-op without a time budget."""

    def __init__(self) -> None:
        self.timer: Timer | None = None
        self.planned = 0

    def on_train_start(self, trainer: L.Trainer, *args: Any) -> None:
        """Find the budget once per run, not at every step."""
        self.timer = budget_timer(trainer)
        # The schedules span `estimated_stepping_batches` steps (fixed for the run).
        self.planned = int(trainer.estimated_stepping_batches) if self.timer is not None else 0

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.timer is None:
            return
        elapsed, remaining = self.timer.time_elapsed(), self.timer.time_remaining() or 0.0
        spent = min(1.0, elapsed / max(elapsed + remaining, 1e-9))
        spent = trainer.strategy.broadcast(spent)  # rank 0's clock: every process steps its schedule alike
        # Lightning has stepped each scheduler for this batch already: it stands at `global_step` unless this
        # callback moved it. Where the budget leads, it is set to the budget's position at every step, not only
        # when that advances, so Lightning's own step cannot carry it past its end between two of ours while
        # the last share of the budget runs out (OneCycleLR refuses to step beyond its total, and a run
        # stopped with exactly that error). One step is kept for Lightning's last. Where the steps lead,
        # nothing changes.
        position = max(trainer.global_step, int(spent * self.planned))
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if isinstance(scheduler, LRScheduler) and config.interval == "step" and scheduler.last_epoch != position:
                scheduler.last_epoch = min(position, self.planned - 1) - 1
                scheduler.step()  # sets each group's learning rate (and OneCycle's momentum) for that position
