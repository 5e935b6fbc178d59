"""W&B audio samples: validation clips played back beside the word the model heard in them.

Rank zero only, `wandb` imported lazily, nothing without a WandbLogger or without audio data (a datamodule
with `examples(split, count)` and `sample_rate`, as `datamodules.audio.AudioDataModule`). Logged on the media
budget of the other media callbacks (`MediaSchedule`).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from callbacks.wandb_media import ScheduledMedia, log_dict, wandb_logger


class AudioSamples(ScheduledMedia):
    """Logs `val/audio_samples`, a table of the first `num_samples` validation clips (W&B `Audio`, playable)
    with their true and predicted class and the confidence, and the clips again as `val/sample_audio`,
    captioned, since W&B keeps no media inside the tables of offline runs (wandb/wandb#4611).

    Args:
        every_n_epochs: log after every n-th validation epoch...
        max_overhead: ...unless logging them would take more than this share of the training time.
        num_samples: clips per table.
    """

    def __init__(self, every_n_epochs: int = 1, max_overhead: float = 0.005, num_samples: int = 8) -> None:
        super().__init__(every_n_epochs, max_overhead)
        self.num_samples = num_samples

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = wandb_logger(trainer)
        data = getattr(trainer, "datamodule", None)
        if logger is None or not hasattr(data, "examples") or not self.schedule.due(trainer):
            return
        with self.schedule.timed():
            self.log_clips(trainer, logger, pl_module, data)

    def log_clips(self, trainer: L.Trainer, logger: Any, model: L.LightningModule, data: Any) -> None:
        import wandb

        waveforms, labels = data.examples("val", self.num_samples)  # (n, samples) in [-1, 1), (n,)
        stored = (waveforms * 32768).round().to(torch.int16)  # the samples as batches hold them, exactly
        with torch.inference_mode():
            features, _ = data.prepare_batch((stored.to(model.device), labels), training=False)
            probabilities = model(features).float().softmax(-1)
        confidence, predicted = probabilities.max(-1)
        names = list(data.classes)
        rows, clips = [], []
        for clip, label, guess, p in zip(
            waveforms, labels.tolist(), predicted.tolist(), confidence.tolist(), strict=True
        ):
            p = round(p, 4)
            caption = f"true: {names[label]}, predicted: {names[guess]} ({p:.2f})"
            audio = wandb.Audio(clip.numpy(), sample_rate=data.sample_rate, caption=caption)
            rows.append([audio, names[label], names[guess], p])
            clips.append(audio)
        step = trainer.global_step
        logger.log_table(
            key="val/audio_samples", columns=["audio", "true", "predicted", "confidence"], data=rows, step=step
        )
        log_dict(logger, {"val/sample_audio": clips, "trainer/global_step": step})
