"""Time series: statsmodels' bundled series (yearly sunspots by default), or the user's CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from datamodules.sequence_base import SequenceDataModule
from datamodules.text_sources import read_table
from validation import ConfigError, check_range, require

# statsmodels dataset -> the column to forecast
BUILTIN = {"sunspots": "SUNACTIVITY", "nile": "volume", "co2": "co2", "elnino": None}


def builtin_series(name: str) -> np.ndarray:
    """(T, 1) float64 values; co2's missing weeks are interpolated, El Nino's 12 months are laid end to end."""
    datasets = require("statsmodels.datasets", f"the built-in series {name}")
    frame = getattr(datasets, name).load_pandas().data
    if name == "elnino":
        values = frame.drop(columns="YEAR").to_numpy(dtype=np.float64).reshape(-1)  # months in order
    else:
        values = frame[BUILTIN[name]].interpolate(limit_direction="both").to_numpy(dtype=np.float64)
    return values[:, None]


def csv_series(path: Path, columns: list[str]) -> np.ndarray:
    """(T, F) float64 values of the named columns of a CSV, in file order (oldest first), all finite."""
    rows, lines = read_table(path, columns)
    values = np.empty((len(rows), len(columns)), dtype=np.float64)
    for index, row in enumerate(rows):
        for column, name in enumerate(columns):
            try:
                values[index, column] = float(row[name])
            except ValueError:
                raise ConfigError(
                    f"{path} line {lines[index]}: a value is not a number ({row[name]!r} in {name}); "
                    f"give numbers only in {columns}"
                ) from None
    if not np.isfinite(values).all():  # "nan" is a missing value; "inf" would make the mean and std inf
        index = int(np.argwhere(~np.isfinite(values))[0][0])
        what = "a missing value" if np.isnan(values[index]).any() else "an infinite value"
        raise ConfigError(f"{path} has {what} (row {lines[index]}); fill or drop it before training")
    return values


class TimeSeriesDataModule(SequenceDataModule):
    """A series split by time into train | val | test, normalised with the training part's mean and std,
    cut into sliding windows -> batches (window (B, window, F), next values (B, horizon, F)).

    A validation or test window may look back into the part before it (those values are known at
    forecast time); its targets always lie inside its own part.

    Args:
        source: "sunspots" (yearly, 1700-2008), "nile", "co2", "elnino", or a .csv file of your own.
        columns: the CSV columns to model (features); the first is the one reported.
        window: past values the model sees.
        horizon: future values it predicts.
        batch_size: windows per training batch.
        val_fraction: share of the time steps, after the training part, for validation.
        test_fraction: share of the time steps, at the end, for testing.
        seed: seed of the shuffling order.
    """

    model_facts = ("num_features", "horizon")
    input_kind = "series"

    def __init__(
        self,
        source: str = "sunspots",
        columns: list[str] | None = None,
        window: int = 24,
        horizon: int = 1,
        batch_size: int = 32,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, seed, bucket=False)
        check_range("window", window, 1)
        check_range("horizon", horizon, 1)
        check_range("val_fraction", val_fraction, 0.0, 0.5, low_open=True)
        check_range("test_fraction", test_fraction, 0.0, 0.5, low_open=True)
        if source not in BUILTIN and not columns:
            raise ConfigError("a CSV source needs --data.columns naming the value columns, e.g. [value]")
        if source in BUILTIN:
            require("statsmodels.datasets", f"the built-in series {source}")
        self.save_hyperparameters(logger=False)
        self.mean = self.std = np.zeros(1)

    def build(self) -> None:
        hp = self.hparams
        source = hp["source"]
        series = builtin_series(source) if source in BUILTIN else csv_series(Path(source), list(hp["columns"]))
        length = len(series)
        val_start = int(length * (1 - hp["val_fraction"] - hp["test_fraction"]))
        test_start = int(length * (1 - hp["test_fraction"]))
        with np.errstate(over="ignore", invalid="ignore"):  # out of range is caught just below
            self.mean, self.std = series[:val_start].mean(0), series[:val_start].std(0) + 1e-8  # training part only
            normalised = torch.from_numpy((series - self.mean) / self.std).float()  # (T, F)
        if val_start and not torch.isfinite(normalised).all():  # (no training part: too short, found below)
            # statistics beyond float64, or values beyond float32 once divided by the training part's spread
            # (1e40 after a constant part): the loss would be NaN
            raise ConfigError(
                f"the values of {source} are too large to normalise (up to {np.abs(series).max():g}); rescale them"
            )
        window, horizon = hp["window"], hp["horizon"]
        for name, (begin, end) in {
            "train": (0, val_start),
            "val": (val_start, test_start),
            "test": (test_start, length),
        }.items():
            targets_start = range(max(begin, window), end - horizon + 1)  # first target index of each window
            if len(targets_start) == 0:
                raise ConfigError(
                    f"the {name} part of {source} ({end - begin} steps) is too short for a window of {window} "
                    f"and a horizon of {horizon}; use a longer series or smaller --data.window/--data.horizon"
                )
            starts = torch.tensor(targets_start)
            inputs = normalised[starts[:, None] - window + torch.arange(window)]  # (N, window, F)
            targets = normalised[starts[:, None] + torch.arange(horizon)]  # (N, horizon, F)
            self.splits[name] = (inputs, targets)

    def fetch(self, split: str, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = self.splits[split]
        return inputs[indices], targets[indices]

    def encode_inputs(self, items: list[np.ndarray]) -> torch.Tensor:
        """Series of past values (T, F), oldest first, T >= window -> their last windows, normalised like the
        training part: (B, window, F)."""
        window = self.hparams["window"]
        return torch.stack([torch.from_numpy((series[-window:] - self.mean) / self.std).float() for series in items])

    def decode_outputs(self, outputs: torch.Tensor) -> np.ndarray:
        """Normalised forecasts (B, horizon, F) -> in the series' own units."""
        return outputs.double().numpy() * self.std + self.mean

    def inference_state(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "num_features": self.num_features}

    def load_inference_state(self, state: dict[str, Any]) -> None:
        super().load_inference_state(state)
        self.mean, self.std = np.array(state["mean"]), np.array(state["std"])
        self.stored_features = int(state["num_features"])

    @property
    def num_features(self) -> int:
        if self.restored:
            return self.stored_features
        return self.ready().splits["train"][0].shape[-1]

    @property
    def horizon(self) -> int:
        return self.hparams["horizon"]
