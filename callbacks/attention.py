"""Attention maps of a Transformer for one fixed validation example, as W&B images."""

from __future__ import annotations

import io
from typing import Any

import lightning as L
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

                images = {f"attention/{n}": wandb.Image(self.draw(n, weights)) for n, weights in maps.items()}
                log_dict(logger, {**images, "trainer/global_step": trainer.global_step})

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
    def draw(name: str, weights: torch.Tensor) -> Any:
        """(H, T, S) -> a PIL image with one heat map per head."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from PIL import Image

        heads = weights.shape[0]
        figure, axes = plt.subplots(1, heads, figsize=(2.6 * heads, 2.8), squeeze=False)
        for head, axis in enumerate(axes[0]):
            axis.imshow(weights[head].numpy(), cmap="viridis", vmin=0, vmax=1)
            axis.set_title(f"{name} head {head}", fontsize=7)
            axis.set_xlabel("key", fontsize=7)
            axis.set_ylabel("query", fontsize=7)
            axis.tick_params(labelsize=6)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=80)
        plt.close(figure)
        buffer.seek(0)
        return Image.open(buffer)
