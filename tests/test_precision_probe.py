"""`--trainer.precision auto` per network: on a CPU with native bf16, bf16-mixed only where it trains the network
faster, measured once per machine and network (experiments/precision_probe.py), without changing the run."""

from __future__ import annotations

import json
import math
import time
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
    CHUNKS,
    MARGIN,
    MAX_ROUNDS,
    MEASURE_SECONDS,
    ROUNDS,
    WARMUP,
    bf16_speedup_within,
    cache_file,
    measured_enough,
    measured_speedup,
    network_choice,
    network_key,
    speedup_of,
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


class FakeClock:
    """The probe's clock, standing in for `time`: it moves only as the steps say, so Lightning's own time per
    step, which grows on a busy machine, is not in the figures."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def __deepcopy__(self, memo: dict[int, object]) -> FakeClock:
        return self  # one clock: the probe trains a copy of the model


class AutocastWitness(L.LightningModule):
    """Records, for each training step, whether its forward pass ran under bf16 autocast and which batch it
    trained on; its steps take `fp32_seconds` or `bf16_seconds`, and `switch_seconds` more just after a switch."""

    def __init__(
        self,
        fp32_seconds: float = 0.0,
        bf16_seconds: float = 0.0,
        switch_seconds: float = 0.0,
        clock: FakeClock | None = None,
    ) -> None:
        super().__init__()
        self.clock = clock  # advanced by each step's seconds instead of sleeping, when given
        self.layer = torch.nn.Linear(2, 1)
        self.seconds = {False: fp32_seconds, True: bf16_seconds, "switch": switch_seconds}
        self.in_bf16: list[bool] = []
        self.batches: list[int] = []

    def training_step(self, batch: list[torch.Tensor], index: int) -> torch.Tensor:
        bf16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        switched = not self.in_bf16 or self.in_bf16[-1] != bf16
        self.in_bf16.append(bf16)
        self.batches.append(int(batch[0][0, 0]) // 8)  # 4 rows of 2 numbers a batch: its number
        seconds = self.seconds[bf16] + (self.seconds["switch"] if switched else 0.0)
        if self.clock is not None:
            self.clock.now += seconds
        else:
            time.sleep(seconds)
        return self.layer(batch[0]).square().mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class TenBatches(L.LightningDataModule):
    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.arange(80.0).view(40, 2)), batch_size=4)


def trained_copies(monkeypatch: pytest.MonkeyPatch) -> list[L.LightningModule]:
    """The models the probe's Trainers train, as it trains them."""
    models: list[L.LightningModule] = []
    original = probe.train_briefly

    def kept(model: L.LightningModule, *args: object, **kwargs: object) -> None:
        models.append(model)
        original(model, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(probe, "train_briefly", kept)
    return models


def test_rounds_train_the_same_batches_in_blocks_of_each_precision_in_turns(monkeypatch: pytest.MonkeyPatch) -> None:
    model, data, models = AutocastWitness(), TenBatches(), trained_copies(monkeypatch)
    speedup, _ = bf16_speedup_within(model, data, timed=2, most=3, until_clear=False)
    (trained,) = models
    block = WARMUP + 2
    fp32, bf16 = [False] * block, [True] * block
    assert trained.in_bf16 == (fp32 + bf16 + bf16 + fp32) * 3  # CHUNKS + 3 rounds; which goes first alternates
    # each of CHUNKS chunks of the first batches twice (the ten again where they run out), one block of each
    # precision, and the chunks again, in turn
    chunks = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]
    assert CHUNKS == 3 and trained.batches == [number for chunk in chunks * 2 for number in chunk * 2]
    assert speedup > 0 and model.in_bf16 == []  # a copy trained, not the model


def test_blocks_time_each_precision_apart_and_not_the_steps_after_a_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 steps twice as long as fp32 ones: x0.5 exactly, whatever the first steps after a switch take (on
    the steps' own clock); a switch step timed with either precision would give about 0.19 or 0.81."""
    clock = FakeClock()
    monkeypatch.setattr(probe, "time", clock)
    model = AutocastWitness(fp32_seconds=0.03, bf16_seconds=0.06, switch_seconds=0.3, clock=clock)
    speedup, (low, high) = bf16_speedup_within(model, TenBatches(), timed=3, most=2, until_clear=False)
    assert speedup == pytest.approx(0.5) and low <= speedup <= high


def test_the_figure_is_the_ratio_of_the_total_times_and_its_interval_of_the_rounds() -> None:
    assert speedup_of([(1.3, 1.0)]) == (1.3, (0.0, math.inf))  # one round says nothing of how sure it is
    # a long round at x1.2 and a short one at x0.5: the run's time is mostly the long one's
    assert speedup_of([(12.0, 10.0), (1.0, 2.0)])[0] == pytest.approx(13 / 12)
    speedup, (low, high) = speedup_of([(1.0, 1.0), (1.2, 1.0), (1.1, 1.0)])
    assert speedup == pytest.approx(1.1) and low < speedup < high < 1.4
    assert speedup_of([(2.2, 2.0), (1.1, 1.0)])[1] == pytest.approx((1.1, 1.1))  # rounds that agree: no doubt
    more = speedup_of([(1.0, 1.0), (1.2, 1.0)] * 4)[1]
    assert more[1] - more[0] < high - low  # more rounds: narrower


def test_the_measurement_goes_on_while_it_cannot_tell_within_its_time() -> None:
    clear = [(1.5, 1.0), (1.45, 1.0)] * 8  # bf16 x1.47: clear
    unclear = [(1.15, 1.0), (0.9, 1.0)] * 8  # x1.02 or so: cannot tell
    assert not measured_enough(clear[: ROUNDS - 1], 1.0, 0.1, MAX_ROUNDS, until_clear=True)  # too few rounds
    assert measured_enough(clear[:ROUNDS], 1.0, 0.1, MAX_ROUNDS, until_clear=True)
    slower = [(0.8, 1.0), (0.82, 1.0)] * 8
    assert measured_enough(slower[:ROUNDS], 1.0, 0.1, MAX_ROUNDS, until_clear=True)  # clear the other way
    assert not measured_enough(unclear[:ROUNDS], 1.0, 0.1, MAX_ROUNDS, until_clear=True)
    assert measured_enough(unclear[:ROUNDS], MEASURE_SECONDS - 1, 2.0, MAX_ROUNDS, until_clear=True)  # no time
    assert measured_enough(unclear[:MAX_ROUNDS], 1.0, 0.1, MAX_ROUNDS, until_clear=True)  # rounds all spent
    assert not measured_enough(clear[:ROUNDS], 1.0, 0.1, MAX_ROUNDS, until_clear=False)  # the benchmark: all


@native_bf16_only
def test_a_run_of_few_epochs_of_few_batches_measures_nothing(cache: Path, in_tmp: Path, capsys) -> None:
    """2 epochs of digits are 40 steps, known only once the data is set up: fewer than MIN_RUN_STEPS, so the
    probe stops after its first timing and the run keeps the machine's choice, uncached."""
    cache.unlink(missing_ok=True)
    assert run(["--config", "cnn_digits", "--trainer.max_epochs", "2", "--run.logger", "none"]) == 0
    line = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("precision:"))
    assert line.endswith("has native bf16)") and not cache.exists()
