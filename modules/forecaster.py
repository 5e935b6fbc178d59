"""Forecasting: an LSTM/GRU predicting the next values of a series, with the naive baseline beside it."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from modules.recurrent import CellKind, RecurrentForecasterNet
from modules.task import TaskModule, check_range


class RNNForecaster(TaskModule):
    """Batches (window (B, T, F), next values (B, horizon, F)) in normalised units; loss = MSE.

    Evaluation also reports `mae` and `mse_naive`, the MSE of repeating the last observed value: a
    forecaster is only useful when its `mse` is below that.

    Args:
        num_features: values per time step; linked from the datamodule.
        horizon: future steps predicted; linked from the datamodule.
        hidden_dim: recurrent state size.
        num_layers: stacked recurrent layers.
        cell: "lstm" or "gru".
        dropout: dropout between recurrent layers.
        residual: predict the change from the last observed value (starts as the naive forecast).
        **task_options: optimizer, schedule and penalty settings (see `TaskModule`).
    """

    def __init__(
        self,
        num_features: int = 1,
        horizon: int = 1,
        hidden_dim: int = 64,
        num_layers: int = 2,
        cell: CellKind = "lstm",
        dropout: float = 0.1,
        residual: bool = True,
        **task_options: Any,
    ) -> None:
        super().__init__(**task_options)
        check_range("dropout", dropout, 0.0, 0.999)
        self.save_hyperparameters(logger=False)
        self.net = RecurrentForecasterNet(num_features, horizon, hidden_dim, num_layers, cell, dropout, residual)

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        return self.net(window)

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
