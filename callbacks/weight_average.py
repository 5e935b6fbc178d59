"""An exponential moving average of the weights (Polyak averaging), which validation, checkpoints and the test use.

Fine-tuning on a few hundred or thousand examples ends in noisy weights: each step moves them by one small batch.
The average of the recent steps generalises better than the last of them, at the cost of one copy of the
weights. `WeightAverage` keeps that copy of the trainable parameters and of the normalisation layers' running
statistics, updated after every optimizer step:

    average = decay * average + (1 - decay) * weights,  decay = min(decay, (1 + n) / (10 + n)) at update n

(the second term lets the average follow the fast early steps instead of remembering the starting weights).
Validation swaps the average in and back out, so `val/*`, the choice of the best checkpoint and early stopping
all judge the average. Each checkpoint holds the average as its `state_dict`, which is what the test, `predict`,
`export` and `--model.init_from` load, and the weights being trained under `trained_weights`, so a resumed
run goes on training them. Metric counts and other buffers are left alone.

In a preset:

    trainer:
      callbacks:
        - class_path: callbacks.weight_average.WeightAverage
          init_args: {decay: 0.998}

Lightning's own `WeightAveraging` swaps every buffer of the module, which would swap the task's metric counts.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn

from validation import check_range


class WeightAverage(L.Callback):
    """Args:
    decay: how much of the average each update keeps, in (0, 1); about 1 / (1 - decay) steps count (0.998: 500).
    """

    def __init__(self, decay: float = 0.998) -> None:
        check_range("WeightAverage decay", decay, 0.0, 0.9999999, low_open=True)
        self.decay = decay
        self.average: dict[str, torch.Tensor] = {}  # name in the module's state_dict -> its average
        self.last_step = 0  # the optimizer steps averaged in: one update after each

    @staticmethod
    def averaged(module: L.LightningModule) -> dict[str, torch.Tensor]:
        """The tensors averaged: trainable parameters, and the running statistics of batch norms."""
        tensors = {name: p for name, p in module.named_parameters() if p.requires_grad}
        for prefix, layer in module.named_modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.track_running_stats:
                for name in ("running_mean", "running_var"):
                    buffer = getattr(layer, name)
                    if buffer is not None:
                        tensors[f"{prefix}.{name}"] = buffer
        return tensors

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.average:  # (a resumed run has it from its checkpoint)
            self.average = {name: t.detach().clone() for name, t in self.averaged(pl_module).items()}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.global_step == self.last_step:  # accumulating gradients: no optimizer step yet
            return
        self.last_step = trainer.global_step
        decay = min(self.decay, (1 + self.last_step) / (10 + self.last_step))
        current = self.averaged(pl_module)
        with torch.no_grad():
            names = list(self.average)
            torch._foreach_lerp_([self.average[n] for n in names], [current[n].detach() for n in names], 1 - decay)

    def swap(self, pl_module: L.LightningModule) -> None:
        current = self.averaged(pl_module)
        with torch.no_grad():
            for name, average in self.average.items():
                kept = current[name].detach().clone()
                current[name].copy_(average)
                average.copy_(kept)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and self.average:
            self.swap(pl_module)

    # Swapped back at the end. Callbacks run before the module's hook, which reads only the metric counts.
    on_validation_epoch_end = on_validation_epoch_start

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        with torch.no_grad():
            current = self.averaged(pl_module)
            for name, average in self.average.items():
                current[name].copy_(average)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if not self.average or trainer.state.fn != TrainerFn.FITTING:
            return
        weights = checkpoint["state_dict"]
        checkpoint["trained_weights"] = {name: weights[name] for name in self.average}
        weights.update({name: average.detach().clone() for name, average in self.average.items()})

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # Resuming: the module was loaded with the average; the training goes on from the trained weights.
        if trainer.state.fn != TrainerFn.FITTING or "trained_weights" not in checkpoint:
            return
        current = self.averaged(pl_module)
        with torch.no_grad():
            self.average = {name: current[name].detach().clone() for name in checkpoint["trained_weights"]}
            for name, weights in checkpoint["trained_weights"].items():
                current[name].copy_(weights)

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_step = state_dict["last_step"]
