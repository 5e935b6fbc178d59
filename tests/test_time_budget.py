"""Learning-rate schedules keep to `max_time`: compressed into the budget where it binds, untouched where not."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Timer

from callbacks.time_budget import ScheduleFollowsTimeBudget
from modules.optim import build_scheduler


class SlowRegression(L.LightningModule):
    """A linear model whose steps take at least `step_seconds`, recording the learning rate of every step."""

    def __init__(self, scheduler: str, step_seconds: float = 0.0) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.scheduler, self.step_seconds = scheduler, step_seconds
        self.lrs: list[float] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        time.sleep(self.step_seconds)
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=0.01)
        scheduler = build_scheduler(optimizer, self.scheduler, int(self.trainer.estimated_stepping_batches), 0.1)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def train_dataloader(self) -> Any:
        data = torch.utils.data.TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
        return torch.utils.data.DataLoader(data, batch_size=4)  # 16 steps per epoch


class SteppedClock(Timer):
    """Lightning's Timer on a clock that moves by the given seconds at the start of each training batch: a
    machine whose step times vary, made deterministic."""

    def __init__(self, seconds: float, advances: list[float], then: float) -> None:
        super().__init__(duration=timedelta(seconds=seconds), interval="step")
        self.now, self.advances, self.then = 0.0, iter(advances), then

    def on_train_batch_start(self, *args: Any) -> None:
        self.now += next(self.advances, self.then)

    def time_elapsed(self, stage: str = "train") -> float:
        return self.now


def fit(
    model: SlowRegression, max_time: dict[str, float] | None, max_epochs: int, clock: Timer | None = None
) -> L.Trainer:
    trainer = L.Trainer(
        max_epochs=max_epochs,
        max_time=max_time,
        callbacks=[*([clock] if clock else []), ScheduleFollowsTimeBudget()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model)
    return trainer


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle"])
def test_a_binding_budget_compresses_the_whole_schedule_into_it(scheduler: str) -> None:
    """400 planned steps of at least 20 ms cannot fit in 1.5 s on any machine: the run stops within the
    budget, yet its schedule has warmed up, peaked and annealed to nearly its final value."""
    model = SlowRegression(scheduler, step_seconds=0.02)
    trainer = fit(model, {"seconds": 1.5}, max_epochs=25)
    assert len(model.lrs) < 75 < 400  # stopped by the budget: 1.5 s / 20 ms
    top = model.lrs.index(max(model.lrs))
    rise, fall = model.lrs[: top + 1], model.lrs[top:]
    assert rise == sorted(rise) and fall == sorted(fall, reverse=True) and len(fall) > 5
    assert max(model.lrs) == pytest.approx(0.01, rel=0.05)  # it reached its peak...
    assert trainer.optimizers[0].param_groups[0]["lr"] < 0.05 * 0.01  # ...and annealed, not stopped high


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle"])
def test_a_budget_that_does_not_bind_changes_nothing(scheduler: str) -> None:
    torch.manual_seed(0)
    without = SlowRegression(scheduler)
    fit(without, None, max_epochs=3)
    torch.manual_seed(0)
    within = SlowRegression(scheduler)
    fit(within, {"hours": 1}, max_epochs=3)
    assert len(within.lrs) == 48 and within.lrs == without.lrs
    assert torch.equal(within.layer.weight, without.layer.weight)


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle"])
def test_steps_left_after_the_budget_carried_the_schedule_to_its_end_keep_it_there(scheduler: str) -> None:
    """A first step that spends 99.99% of the budget carries the schedule to its end; ten fast steps follow
    before the time is up. Lightning steps the schedulers at every one of them: the schedule must stay at
    its end, not run past it (OneCycleLR raised "Tried to step 401 times" and the run died)."""
    model = SlowRegression(scheduler)
    fit(model, None, max_epochs=25, clock=SteppedClock(10.0, [9.999], then=0.0001))  # 400 steps planned
    assert 5 < len(model.lrs) < 20  # stopped by the clock, not by the 400 planned steps
    assert model.lrs[1:] == sorted(model.lrs[1:], reverse=True)
    assert max(model.lrs[1:]) < 0.001 * 0.01  # annealed from the second step on, and stays so
