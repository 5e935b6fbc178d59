"""Attention maps of a Transformer for one fixed validation example, as W&B images."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only

from callbacks.wandb_media import ScheduledMedia, log_dict, wandb_logger
from cores.transformer import Attention
from modules.task import TaskModule


class AttentionMaps(ScheduledMedia):
    """Logs `attention/<layer>`: one image per attention layer, a heat map per head (query rows, key
    columns), for the first example of the first validation batch (fixed for the whole run). Works for
    any model built from `cores.transformer.Attention`; does nothing for others or without W&B.

    Args:
        every_n_epochs: log after every n-th validation epoch...
        max_overhead: ...unless drawing them would take more than this share of the training time.
        max_tokens: show at most this many positions.
    """

    def __init__(self, every_n_epochs: int = 1, max_overhead: float = 0.005, max_tokens: int = 48) -> None:
        super().__init__(every_n_epochs, max_overhead)
        self.max_tokens = max_tokens
        self.example: Any = None

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.example is None and batch_idx == 0 and isinstance(batch, list | tuple):
            self.example = tuple(
                (item[:1, : self.max_tokens] if item.ndim > 1 else item[:1]).detach() for item in batch
            )

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = wandb_logger(trainer)
        layers = [(name, m) for name, m in pl_module.named_modules() if isinstance(m, Attention)]
        if logger is None or not layers or self.example is None or not self.schedule.due(trainer):
            return
        with self.schedule.timed():
            maps = self.capture(pl_module, layers)
            if maps:
                import wandb

                images = {
                    f"attention/{name}": wandb.Image(self.draw(weights), caption=self.caption(name, weights))
                    for name, weights in maps.items()
                }
                log_dict(logger, {**images, "trainer/global_step": trainer.global_step})

    @staticmethod
    def caption(name: str, weights: torch.Tensor) -> str:
        return f"{name}: heads 0-{weights.shape[0] - 1} left to right; rows are queries, columns keys (0 to 1)"

    def capture(self, pl_module: L.LightningModule, layers: list[tuple[str, Attention]]) -> dict[str, torch.Tensor]:
        """Run the example once, recomputing each layer's probabilities from the inputs it receives."""
        maps: dict[str, torch.Tensor] = {}

        def hook(name: str, module: Attention) -> Any:
            def record(_: Any, args: tuple, kwargs: dict, output: Any) -> None:
                maps[name] = module.weights(*args, **kwargs)[0].float().cpu()  # (H, T, S)

            return record

        handles = [m.register_forward_hook(hook(name, m), with_kwargs=True) for name, m in layers]
        try:
            example = tuple(t.to(pl_module.device) for t in self.example)
            # A firstlight task says which items of a batch its forward takes; other models get the first.
            inputs = pl_module.model_inputs(example) if isinstance(pl_module, TaskModule) else example[:1]
            with torch.no_grad():
                pl_module(*inputs)
        finally:
            for handle in handles:
                handle.remove()
        return maps

    @staticmethod
    def draw(weights: torch.Tensor, gap: int = 4) -> np.ndarray:
        """(H, T, S) probabilities -> an RGB image (T * cell, H * (S * cell + gap) - gap, 3), cells of about
        192 / max(T, S) pixels: the heads' heat maps side by side, queries down, keys across, viridis from 0
        to 1. Drawn with array operations: a matplotlib figure per layer took ~0.5 s, longer than a whole
        validation pass of a small model."""
        from matplotlib import colormaps

        cell = max(1, 192 // max(weights.shape[1:]))
        colours = colormaps["viridis"](weights.clamp(0, 1).numpy())[..., :3]  # (H, T, S, 3) in [0, 1]
        cells = colours.repeat(cell, axis=1).repeat(cell, axis=2)  # (H, T * cell, S * cell, 3)
        white = np.ones((cells.shape[1], gap, 3))
        panels = [part for head in cells for part in (head, white)][:-1]
        return (np.concatenate(panels, axis=1) * 255).astype(np.uint8)
