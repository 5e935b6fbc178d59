"""Forecasting: the next values of a series, MSE loss, with the naive forecast's error beside it."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from cores.contracts import ForecasterCore
from modules.task import ExportInputs, TaskModule


class ForecastTask(TaskModule):
    """Batches (window (B, T, F), next values (B, horizon, F)) in normalised units; loss = MSE.

    Evaluation also reports `mae` and `mse_naive`, the MSE of repeating the last observed value: a
    forecaster is only useful when its `mse` is below that.

    Args:
        net: a `ForecasterCore`: `cores.recurrent.RNNForecaster`, or your own.
        **task_options: optimizer, schedule and penalty settings (see `TaskModule`).
    """

    def __init__(self, net: ForecasterCore, **task_options: Any) -> None:
        super().__init__(net, **task_options)

    @torch.no_grad()
    def predictions(self, inputs: torch.Tensor, datamodule: Any, **options: Any) -> list[dict[str, Any]]:
        """The next `horizon` values after each window (B, T, F), in the series' own units: a list of steps,
        each a number (one feature) or a list (several)."""
        forecast = datamodule.decode_outputs(self(inputs).float())  # (B, horizon, F)
        return [
            {"forecast": [step[0] if len(step) == 1 else step for step in window.round(6).tolist()]}
            for window in forecast
        ]

    def export_inputs(self, facts: Collection[str]) -> ExportInputs:
        return ExportInputs(("window",), "forecast", ({0: "batch", 1: "steps"},))

    def example_inputs(
        self, data: Mapping[str, Any], batch_size: int, length: int, limit: int | None, generator: torch.Generator
    ) -> tuple[torch.Tensor, ...]:
        """Normal windows of the data's window length (B, T, num_features)."""
        steps = int(data.get("window") or length)
        return (torch.randn(batch_size, steps, int(self.net.hparams["num_features"]), generator=generator),)

    def shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        window, target = batch
        forecast = self(window)
        loss = F.mse_loss(forecast.float(), target)
        size = len(window)
        self.log_loss(stage, loss, size)
        if stage != "train":  # per-batch means weighted by batch size: the epoch value is the split's mean
            naive = window[:, -1:, :].expand_as(target)
            self.add_to_mean(stage, "mse", loss, size)
            self.add_to_mean(stage, "mae", F.l1_loss(forecast.float(), target), size)
            self.add_to_mean(stage, "mse_naive", F.mse_loss(naive, target), size)
        return loss
