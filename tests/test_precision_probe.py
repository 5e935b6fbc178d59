"""`--trainer.precision auto` per network: on a CPU with native bf16, bf16-mixed only where it trains the network
faster, measured once per machine and network (experiments/precision_probe.py), without changing the run."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

import experiments.precision_probe as probe
from benchmarks.precision import build_preset, no_run_identity
from experiments.cli import FirstlightCLI
from experiments.hardware import PrecisionChoice, cpu_has_native_bf16
from experiments.precision_probe import (
    MARGIN,
    MAX_ROUNDS,
    ROUNDS,
    WARMUP,
    bf16_speedup_within,
    cache_file,
    interval,
    measured_speedup,
    network_choice,
    network_key,
    quiet_trainers,
    round_ratio,
)
from experiments.presets import expand_configs
from experiments.run import main as run

native_bf16_only = pytest.mark.skipif(not cpu_has_native_bf16(), reason="the probe runs on CPUs with native bf16")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return cache_file()


def test_bf16_is_kept_only_where_it_is_measured_faster_by_the_margin() -> None:
    model, machine = torch.nn.Linear(2, 2), PrecisionChoice("bf16-mixed", "this CPU has native bf16")
    assert network_choice(MARGIN + 0.3, model, machine).precision == "bf16-mixed"
    slower = network_choice(0.65, model, machine)
    assert slower.precision == "32-true" and "Linear trains in bf16-mixed x0.65 as fast" in str(slower)
    assert network_choice(MARGIN - 0.01, model, machine).precision == "32-true"  # within the noise: fp32
    assert "unsupported" in str(network_choice(0.0, model, machine))
    assert network_choice(None, model, machine) is machine  # not measured


def test_the_probe_measures_once_changes_nothing_and_caches_its_answer(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, data = build_preset("cnn_digits")
    cache.unlink(missing_ok=True)
    monkeypatch.setattr(probe, "TIMED_SECONDS", 0.2)  # what is tested here needs no precise figure
    monkeypatch.setattr(probe, "MAX_ROUNDS", probe.ROUNDS)
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    torch.manual_seed(7)
    state = torch.get_rng_state()
    speedup = measured_speedup(model, data)
    assert speedup is not None and speedup > 0
    assert torch.equal(torch.get_rng_state(), state)  # the run draws as it would without the probe
    assert all(torch.equal(tensor, weights[name]) for name, tensor in model.state_dict().items())  # a copy trained
    assert json.loads(cache.read_text()) == {network_key(model, data): round(speedup, 3)}

    def measure_again(*args: object) -> float:
        raise AssertionError("measured again although cached")

    monkeypatch.setattr(probe, "bf16_speedup", measure_again)
    assert measured_speedup(model, data) == round(speedup, 3)


@native_bf16_only
@pytest.mark.parametrize(("speedup", "precision"), [(0.5, "32-true"), (1.5, "bf16-mixed")])
def test_a_run_uses_and_records_the_precision_measured_for_its_network(
    speedup: float, precision: str, cache: Path, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The measurement is planted in the cache (as an earlier run on this machine would have left it)."""
    model, data = build_preset("cnn_digits")
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({network_key(model, data): speedup}))
    capsys.readouterr()
    assert run(["--config", "cnn_digits", "--trainer.max_steps", "2", "--run.logger", "none"]) == 0
    line = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("precision:"))
    assert line.startswith(f"precision: {precision} (this CPU, ") and f"x{speedup:.2f}" in line
    (run_dir,) = (in_tmp / "runs" / "cnn_digits").iterdir()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]["precision"] == precision
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    # and the Trainer the run trains with runs in it (not only the line and the config)
    args, _ = expand_configs(["--config", "cnn_digits", "--run.logger", "none", "--trainer.max_steps", "2"])
    with no_run_identity():  # the CLI records the run it chose in the environment: not for the next test
        assert FirstlightCLI(args, "cnn_digits").trainer.precision == precision


def test_a_run_too_short_to_repay_a_measurement_uses_the_cache_or_the_machines_choice() -> None:
    from types import SimpleNamespace

    from experiments.precision_probe import MIN_RUN_STEPS, worth_measuring

    def trainer(max_steps: int = -1, max_epochs: int | None = None, limit: object = None) -> object:
        return SimpleNamespace(max_steps=max_steps, max_epochs=max_epochs, limit_train_batches=limit)

    assert worth_measuring(trainer(max_epochs=20))  # the presets: epochs of unknown length
    assert worth_measuring(trainer(max_steps=MIN_RUN_STEPS)) and not worth_measuring(trainer(max_steps=5))
    assert not worth_measuring(trainer(max_epochs=1, limit=4)) and worth_measuring(trainer(max_epochs=1, limit=0.5))


@native_bf16_only
def test_a_short_run_measures_nothing_and_keeps_the_machines_choice(
    cache: Path, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["--config", "cnn_digits", "--trainer.max_steps", "2", "--run.logger", "none"]) == 0
    line = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("precision:"))
    assert line.endswith("has native bf16)") and not cache.exists()


class AutocastWitness(L.LightningModule):
    """Records, for each training step, whether its forward pass ran under bf16 autocast."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.in_bf16: list[bool] = []

    def training_step(self, batch: list[torch.Tensor], index: int) -> torch.Tensor:
        self.in_bf16.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return self.layer(batch[0]).square().mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class TenBatches(L.LightningDataModule):
    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.randn(40, 2)), batch_size=4)


def test_each_round_trains_copies_of_the_model_in_each_precision_in_turns(monkeypatch: pytest.MonkeyPatch) -> None:
    model, data = AutocastWitness(), TenBatches()
    order: list[str] = []
    original = probe.step_times

    def recorded(model: AutocastWitness, data: TenBatches, steps: int, precision: str) -> list[float]:
        seconds = original(model, data, steps, precision)
        assert model.in_bf16 == [precision == "bf16-mixed"] * (WARMUP + steps)  # the Trainer ran in it
        assert len(seconds) == steps and all(second > 0 for second in seconds)
        order.append(precision)
        return [2.0] * steps if precision == "32-true" else [1.0] * steps

    monkeypatch.setattr(probe, "step_times", recorded)
    with quiet_trainers():
        ratios = [round_ratio(model, data, 13, fp32_first=first) for first in (True, False)]  # 2 epochs
    assert order == ["32-true", "bf16-mixed", "bf16-mixed", "32-true"] and ratios == [2.0, 2.0]
    assert model.in_bf16 == []  # copies trained, not the model


def test_the_interval_is_of_the_rounds_geometric_mean() -> None:
    assert interval([1.3]) == (0.0, math.inf)  # one round says nothing of how sure it is
    low, high = interval([1.0, 1.2, 1.1])
    assert low < statistics.geometric_mean([1.0, 1.2, 1.1]) < high < 1.4
    assert interval([1.1] * 4) == pytest.approx((1.1, 1.1))  # rounds that agree: no doubt
    assert interval([1.0, 1.2] * 4)[1] - interval([1.0, 1.2] * 4)[0] < high - low  # more rounds: narrower


def fake_rounds(ratios: list[float], calls: list[bool]) -> Callable[..., float]:
    """A `round_ratio` giving `ratios` in turn."""

    def round_ratio(model: object, data: object, steps: int, fp32_first: bool) -> float:
        calls.append(fp32_first)
        return ratios[(len(calls) - 1) % len(ratios)]

    return round_ratio


def test_the_measurement_goes_on_while_it_cannot_tell_and_the_figure_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(probe, "round_ratio", fake_rounds([1.5, 1.45], calls))
    speedup, (low, high) = bf16_speedup_within(None, None, 8, MAX_ROUNDS)  # type: ignore[arg-type]
    assert calls == [True, False, True][:ROUNDS] and low >= MARGIN  # clear after the first rounds
    calls.clear()
    monkeypatch.setattr(probe, "round_ratio", fake_rounds([1.15, 0.9], calls))  # x1.02 or so: cannot tell
    speedup, (low, high) = bf16_speedup_within(None, None, 8, MAX_ROUNDS)  # type: ignore[arg-type]
    assert len(calls) == MAX_ROUNDS and low < MARGIN <= high
    assert speedup == pytest.approx(
        statistics.geometric_mean([1.15, 0.9] * (MAX_ROUNDS // 2) + [1.15] * (MAX_ROUNDS % 2))
    )
    calls.clear()
    monkeypatch.setattr(probe, "round_ratio", fake_rounds([1.5], calls))
    bf16_speedup_within(None, None, 8, 4, until_clear=False)  # type: ignore[arg-type]
    assert len(calls) == 4  # as many rounds as asked (the benchmark)
