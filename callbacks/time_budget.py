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


class ScheduleFollowsTimeBudget(L.Callback):
    """Advances step-interval LR schedulers to the share of `--trainer.max_time` spent, when that is ahead
    of the steps taken. A no-op without a time budget."""

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)  # type: ignore[attr-defined]
        remaining = timer.time_remaining() if timer is not None else None
        if timer is None or remaining is None:
            return
        elapsed = timer.time_elapsed()
        spent = min(1.0, elapsed / max(elapsed + remaining, 1e-9))
        spent = trainer.strategy.broadcast(spent)  # rank 0's clock: every process steps its schedule alike
        # The schedules span `estimated_stepping_batches` steps; the last one is kept for the final step
        # (OneCycleLR refuses to step beyond its total).
        planned = int(trainer.estimated_stepping_batches)
        target = min(int(spent * planned), planned - 1)
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if isinstance(scheduler, LRScheduler) and config.interval == "step" and target > scheduler.last_epoch:
                scheduler.last_epoch = target - 1
                scheduler.step()  # sets each group's learning rate (and OneCycle's momentum) for step `target`
