"""Gradient and parameter norms per layer, and weight/gradient histograms, to W&B at a low frequency."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from callbacks.wandb_media import log_dict, wandb_logger


def histogram(values: torch.Tensor, bins: int = 64) -> Any:
    import numpy as np
    import wandb

    return wandb.Histogram(np_histogram=np.histogram(values.detach().float().cpu().numpy(), bins=bins))


class ParameterNorms(L.Callback):
    """Logs `grad_norm/<parameter>` and `param_norm/<parameter>` (L2 norms) and their totals every
    `every_n_steps` optimizer steps, and W&B histograms of every parameter and its gradient every
    `histogram_every_n_steps`. Gradients are read after they are unscaled and reduced across processes,
    just before the optimizer step. Does nothing without a WandbLogger.

    Args:
        every_n_steps: steps between norm logs (0 turns them off).
        histogram_every_n_steps: steps between histogram logs (0 turns them off).
    """

    def __init__(self, every_n_steps: int = 50, histogram_every_n_steps: int = 1000) -> None:
        self.every_n_steps = every_n_steps
        self.histogram_every_n_steps = histogram_every_n_steps

    @staticmethod
    def due(step: int, every: int) -> bool:
        return every > 0 and (step + 1) % every == 0

    @rank_zero_only
    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        step = trainer.global_step
        norms, histograms = self.due(step, self.every_n_steps), self.due(step, self.histogram_every_n_steps)
        logger = wandb_logger(trainer)
        if logger is None or not (norms or histograms):
            return
        named = [(name, p) for name, p in pl_module.named_parameters() if p.requires_grad]
        metrics: dict[str, Any] = {}
        if norms:
            with torch.no_grad():
                for name, param in named:
                    metrics[f"param_norm/{name}"] = param.detach().float().norm().item()
                    if param.grad is not None:
                        metrics[f"grad_norm/{name}"] = param.grad.detach().float().norm().item()
            grads = [metrics[k] for k in metrics if k.startswith("grad_norm/")]
            metrics["grad_norm/total"] = sum(g * g for g in grads) ** 0.5
            metrics["param_norm/total"] = sum(v * v for k, v in metrics.items() if k.startswith("param_norm/")) ** 0.5
        if histograms:
            for name, param in named:
                metrics[f"weights/{name}"] = histogram(param)
                if param.grad is not None:
                    metrics[f"gradients/{name}"] = histogram(param.grad)
        log_dict(logger, {**metrics, "trainer/global_step": step})
