"""WeightAverage: the average it keeps is the exponential moving average of the weights after each step; validation,
checkpoints and the model after training hold it; metric buffers are left alone; a resumed run ends as an
uninterrupted one; and it trains a firstlight preset through the command."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from callbacks.weight_average import WeightAverage
from tests.helpers import run_cli
from validation import ConfigError

DECAY = 0.9


class Tiny(L.LightningModule):
    """Linear -> batch norm -> linear, and a buffer that counts validation batches (like a task's metric counts)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
        self.register_buffer("validated", torch.zeros((), dtype=torch.long))
        self.val_losses: list[float] = []

    def training_step(self, batch, batch_idx):
        inputs, targets = batch
        return nn.functional.mse_loss(self.net(inputs).squeeze(1), targets)

    def validation_step(self, batch, batch_idx):
        inputs, targets = batch
        self.validated += 1
        loss = nn.functional.mse_loss(self.net(inputs).squeeze(1), targets)
        self.val_losses.append(float(loss))
        self.log("val/loss", loss)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loaders() -> tuple[DataLoader, DataLoader]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(80, 3, generator=generator)
    targets = inputs @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(80, generator=generator)
    train = DataLoader(TensorDataset(inputs[:64], targets[:64]), batch_size=8)
    return train, DataLoader(TensorDataset(inputs[64:], targets[64:]), batch_size=16)


class Recorder(L.Callback):
    """The averaged tensors after each optimizer step (it runs before WeightAverage: the same weights)."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.steps.append({k: v.detach().clone() for k, v in WeightAverage.averaged(pl_module).items()})


def fit(root: Path, epochs: int, callbacks: list[L.Callback], resume: Path | None = None) -> Tiny:
    torch.manual_seed(0)
    model = Tiny()
    trainer = L.Trainer(
        max_epochs=epochs,
        default_root_dir=root,
        callbacks=[*callbacks, L.pytorch.callbacks.ModelCheckpoint(root, save_last=True)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    train, val = loaders()
    trainer.fit(model, train, val, ckpt_path=resume, weights_only=True)
    return model


def test_the_average_is_the_moving_average_of_the_steps_and_validation_checkpoints_and_the_model_hold_it(
    tmp_path: Path,
) -> None:
    recorder = Recorder()
    model = fit(tmp_path, 2, [recorder, WeightAverage(decay=DECAY)])
    assert len(recorder.steps) == 16
    assert set(recorder.steps[0]) == {
        "net.0.weight", "net.0.bias", "net.1.weight", "net.1.bias", "net.1.running_mean", "net.1.running_var",
        "net.2.weight", "net.2.bias",
    }  # fmt: skip
    # The update starts from the weights before the first step; replaying it by hand from those weights:
    torch.manual_seed(0)
    start = {k: v.detach().clone() for k, v in WeightAverage.averaged(Tiny()).items()}
    average = start
    for n, step in enumerate(recorder.steps, start=1):
        decay = min(DECAY, (1 + n) / (10 + n))
        average = {k: decay * average[k] + (1 - decay) * step[k] for k in average}
    trained = recorder.steps[-1]
    assert any(not torch.allclose(average[k], trained[k]) for k in average)  # the average is not the last step
    for name, tensor in WeightAverage.averaged(model).items():  # the model after training holds the average
        torch.testing.assert_close(tensor, average[name])
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    for name in average:  # the checkpoint: the average to use, the trained weights to resume
        torch.testing.assert_close(last["state_dict"][name], average[name])
        torch.testing.assert_close(last["trained_weights"][name], trained[name])
    # The last validation judged the average (no step came after it), and the metric buffer was never swapped.
    _, val = loaders()
    model.eval()
    with torch.no_grad():
        expected = [float(nn.functional.mse_loss(model.net(x).squeeze(1), y)) for x, y in val]
    assert model.val_losses[-len(expected) :] == pytest.approx(expected)
    assert int(model.validated) == 2 * len(val)
    assert int(last["state_dict"]["validated"]) == 2 * len(val)


def test_a_resumed_run_ends_with_the_weights_and_average_of_an_uninterrupted_one(tmp_path: Path) -> None:
    whole = fit(tmp_path / "whole", 3, [WeightAverage(decay=DECAY)])
    fit(tmp_path / "parts", 1, [WeightAverage(decay=DECAY)])
    resumed = fit(tmp_path / "parts", 3, [WeightAverage(decay=DECAY)], resume=tmp_path / "parts" / "last.ckpt")
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    ends = [torch.load(root / "last.ckpt", weights_only=True) for root in (tmp_path / "whole", tmp_path / "parts")]
    for name, weights in ends[0]["trained_weights"].items():
        torch.testing.assert_close(weights, ends[1]["trained_weights"][name], msg=name)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_a_decay_outside_zero_to_one_is_refused(decay: float) -> None:
    with pytest.raises(ConfigError, match="decay"):
        WeightAverage(decay=decay)


def test_a_preset_trains_with_the_average_through_the_command(tmp_path: Path) -> None:
    average = ["--trainer.callbacks+=callbacks.weight_average.WeightAverage", "--trainer.callbacks.decay=0.95"]
    short = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "8", "--run.logger", "csv"]
    result = run_cli("--config", "cnn_digits", *short, *average, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (summary_file,) = (tmp_path / "runs").glob("*/*/summary.json")
    summary = json.loads(summary_file.read_text())
    assert 0.0 <= summary["val/acc"] <= 1.0 and 0.0 <= summary["test/acc"] <= 1.0
    (best,) = (summary_file.parent / "checkpoints").glob("epoch*.ckpt")
    checkpoint = torch.load(best, weights_only=True)
    averaged, trained = checkpoint["state_dict"], checkpoint["trained_weights"]
    assert trained and all(name.startswith("net.") for name in trained)
    assert any(not torch.equal(averaged[name], trained[name]) for name in trained)
