"""Training throughput to W&B: samples, tokens and FLOPs per second and model FLOPs utilisation (MFU),
over intervals (no per-step device sync)."""

from __future__ import annotations

import contextlib
import time
import warnings
from typing import Any

import lightning as L
import torch
from torch.utils.flop_counter import FlopCounterMode

from callbacks.wandb_media import wandb_logger
from modules.task import TaskModule

# Dense (not 2:4-sparse) peak FLOP/s of GPUs whose entry Lightning lacks or gives with sparsity: the H200
# has the H100 SXM's tensor cores (NVIDIA's H200 datasheet lists 1,979 TFLOPS bf16 "with sparsity").
DENSE_PEAK_FLOPS = {"h200": {torch.bfloat16: 989.4e12, torch.float16: 989.4e12, "tfloat32": 494.7e12}}


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """The device's dense peak FLOP/s for a compute dtype, where known (GPUs; not CPUs)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device).lower()
        for chip, peaks in DENSE_PEAK_FLOPS.items():
            if chip in name:
                tf32 = dtype is torch.float32 and torch.get_float32_matmul_precision() != "highest"
                return peaks.get("tfloat32" if tf32 else dtype)
    from lightning.fabric.utilities.throughput import get_available_flops

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "FLOPs not found for ...": MFU is simply left out
        flops = get_available_flops(device, dtype) if device.type in ("cuda", "xla") else None
    return float(flops) if flops else None


def compute_dtype(trainer: L.Trainer) -> torch.dtype:
    from lightning.pytorch.callbacks.throughput_monitor import _plugin_to_compute_dtype

    return _plugin_to_compute_dtype(trainer.precision_plugin)


def count_tokens(inputs: Any, pad_id: int | None = None) -> torch.Tensor | int:
    """Non-padding tokens of an integer (B, T) batch (all of them without a `pad_id`), as a tensor left on
    its device; 0 for other inputs."""
    if isinstance(inputs, torch.Tensor) and inputs.ndim == 2 and not inputs.is_floating_point():
        return inputs.numel() if pad_id is None else (inputs != pad_id).sum()
    return 0


class Throughput(L.Callback):
    """Logs `throughput/samples_per_s` and, for token inputs, `throughput/tokens_per_s` (non-padding
    tokens) every `every_n_steps` batches, summed over all processes. Counts stay on the device until
    logged, so measuring adds no synchronisation to the step. Does nothing without a WandbLogger.

    The FLOPs of a training step (forward, backward and optimizer) are counted once, on the first batch,
    with torch's FlopCounterMode; from then on `throughput/tflops_per_s` (all processes) is logged too,
    and `throughput/mfu` (achieved / peak, per device) where the device's peak is known: GPUs in
    Lightning's table, or `peak_tflops`. A compiled network hides its operations from the counter, so
    its FLOPs are not reported.

    Args:
        every_n_steps: batches per measured interval.
        count_flops: count the FLOPs of the first training step (that step runs slower while counted).
        peak_tflops: the peak of one device in TFLOP/s for the run's precision, if not in the table.
    """

    def __init__(self, every_n_steps: int = 50, count_flops: bool = True, peak_tflops: float | None = None) -> None:
        self.every_n_steps = every_n_steps
        self.count_flops = count_flops
        self.peak_tflops = peak_tflops
        self.flops_per_sample: float | None = None
        self.peak: float | None = None  # one device's peak FLOP/s, once the step is counted
        self.counter: FlopCounterMode | None = None
        self.last = time.perf_counter()
        self.start_interval()

    def start_interval(self) -> None:
        self.seconds = 0.0  # training time only: validation between batches is left out
        self.batches = self.samples = 0
        self.tokens: torch.Tensor | int = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.last = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.last = time.perf_counter()  # resume the clock after validation

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.count_flops and self.flops_per_sample is None and wandb_logger(trainer) is not None:
            self.counter = FlopCounterMode(display=False)
            self.counter.__enter__()

    def end_flop_count(self, trainer: L.Trainer, samples: int) -> None:
        """Stop counting after the first step; its time is left out, as counting slows it down."""
        assert self.counter is not None
        self.counter.__exit__(None, None, None)
        self.flops_per_sample = self.counter.get_total_flops() / max(samples, 1)
        self.counter = None
        device_peak = peak_flops(trainer.strategy.root_device, compute_dtype(trainer))
        self.peak = self.peak_tflops * 1e12 if self.peak_tflops else device_peak  # looked up once per run
        logger = wandb_logger(trainer)
        if logger is not None and trainer.is_global_zero and self.flops_per_sample:
            with contextlib.suppress(OSError):  # W&B's service may have stopped: nothing to keep it for
                logger.experiment.summary["throughput/flops_per_sample"] = self.flops_per_sample
        self.last = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        inputs = batch[0] if isinstance(batch, list | tuple) else batch
        if self.counter is not None:
            self.end_flop_count(trainer, len(inputs))
            return
        now = time.perf_counter()
        self.seconds += now - self.last  # since the previous batch ended: loading, step and callbacks
        self.last = now
        self.batches += 1
        self.samples += len(inputs)
        self.tokens = self.tokens + count_tokens(
            inputs, pl_module.pad_id if isinstance(pl_module, TaskModule) else None
        )
        if self.batches < self.every_n_steps:
            return
        logger = wandb_logger(trainer)
        if logger is not None and trainer.is_global_zero:
            metrics = {"throughput/samples_per_s": self.samples * trainer.world_size / self.seconds}
            tokens = int(self.tokens)
            if tokens:
                metrics["throughput/tokens_per_s"] = tokens * trainer.world_size / self.seconds
            metrics |= self.flops_metrics(trainer, metrics["throughput/samples_per_s"])
            logger.log_metrics(metrics, step=trainer.global_step - 1)
        self.start_interval()

    def flops_metrics(self, trainer: L.Trainer, samples_per_s: float) -> dict[str, float]:
        if not self.flops_per_sample:  # not counted, or hidden by torch.compile
            return {}
        flops_per_s = self.flops_per_sample * samples_per_s
        metrics = {"throughput/tflops_per_s": flops_per_s / 1e12}
        if self.peak:
            metrics["throughput/mfu"] = flops_per_s / trainer.world_size / self.peak
        return metrics
