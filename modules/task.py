"""What every firstlight task shares: its core, optimizer, LR schedule, weight penalties, one step for all
stages, and the hooks that callbacks use.

A model is a task (`ClassificationTask`, `LanguageModelTask`, `Seq2SeqTask`, `ForecastTask`) wrapped around
a core, a plain `nn.Module` that fulfils the task's contract (`cores/contracts.py`): on the command line
`--model ClassificationTask --model.net cores.cnn.CNNClassifier --model.net.channels [32,64]`. The task
turns batches into a loss and metrics; the core is the architecture. Hyperparameters, the core's included,
are saved as plain data, so checkpoints load with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import nn

from cores.contracts import Core, build_core, layer_depths
from modules.metrics import WeightedMean
from modules.optim import (
    OptimizerName,
    SchedulerName,
    build_optimizer,
    build_scheduler,
    split_decay_groups,
    weight_penalty,
)
from validation import ConfigError, check_range


@dataclass(frozen=True)
class ExportInputs:
    """What a task's core takes, as `python -m experiments.export` traces it: the inputs' names, the output's,
    each input's dynamic axes by name ("batch" shared by all), whether its sequence axes are bounded by the
    core's position table, whether token inputs are right-padded (classifiers, seq2seq) or whole, and what a
    user of the graph does around it, where the task's answers are more than one pass of it."""

    inputs: tuple[str, ...]
    output: str
    dynamic: tuple[dict[int, str], ...]
    bounded: bool = False
    padded: bool = False
    usage: str | None = None


def random_token_ids(generator: torch.Generator, net: nn.Module, rows: int, columns: int, padded: bool) -> torch.Tensor:
    """(rows, columns) random token ids of the core's vocabulary (its `vocab_size`), none of them its `pad_id`;
    `padded`: the first row whole, the others cut short (right-padded with `pad_id`), each keeping at least one
    real token."""
    hparams = getattr(net, "hparams", {})
    vocab_size, pad_id = int(hparams["vocab_size"]), int(hparams.get("pad_id", 0))
    tokens = torch.randint(0, vocab_size, (rows, columns), generator=generator)
    tokens[tokens == pad_id] = (pad_id + 1) % vocab_size
    if padded:
        for row in range(1, rows):
            tokens[row, int(torch.randint(1, columns + 1, (), generator=generator)) :] = pad_id
    return tokens


def freeze_parameters(net: nn.Module, prefixes: list[str]) -> None:
    """Parameters of `net` named `prefix` or `prefix.*` stop training; a prefix that names none is refused."""
    parameters = dict(net.named_parameters())
    for prefix in prefixes:
        chosen = [param for name, param in parameters.items() if name == prefix or name.startswith(f"{prefix}.")]
        if not chosen:
            prefixes_known = {name.rsplit(".", depth)[0] for name in parameters for depth in range(name.count("."))}
            close = difflib.get_close_matches(prefix, prefixes_known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "see the names in a checkpoint's state_dict"
            raise ConfigError(f"--model.freeze {prefix!r} names no parameter of the core; {hint}")
        for param in chosen:
            param.requires_grad_(False)


class TaskModule(L.LightningModule):
    """What all tasks share: the core, its optimizer and schedule, weight penalties, epoch metrics.

    Args:
        net: the core network (`cores/`), whose contract the task names (e.g. `ClassifierCore`).
        optimizer: "sgd", "adam", "adamw" (decoupled weight decay) or "rmsprop".
        lr: peak learning rate.
        weight_decay: the optimizer's weight decay, applied to weights only (not biases or norm scales).
        momentum: momentum of SGD and RMSprop.
        nesterov: Nesterov momentum for SGD.
        betas: Adam/AdamW moment coefficients.
        scheduler: "none", "cosine" (linear warm-up then cosine to 0) or "onecycle", stepped every batch.
        warmup_fraction: share of all training steps spent warming up.
        l1: coefficient of the L1 penalty sum|w| added to the training loss (weights only).
        l2: coefficient of the L2 penalty sum w^2 added to the training loss (weights only).
        compile: compile the core network (`net`) with torch.compile, in place, so checkpoints keep plain
            parameter names (no `_orig_mod.` prefix) and load into an uncompiled model. Pays off on GPUs;
            on CPUs compiling costs more than it saves for these small models.
        lr_decay: layer-wise learning-rate decay for fine-tuning: a parameter d layers below the output learns
            at lr * lr_decay ** d (the core says how deep each is: `Core.layer_depths`), so the new head learns
            fastest and the pretrained embeddings slowest. 1: one rate for all.
        freeze: parameters of the core to keep as they are (not trained), by name or name prefix, e.g.
            `[model.bert.embeddings.word_embeddings]`: a pretrained vocabulary's embeddings, so that words the
            training data lacks keep their pretrained meaning. `python -m experiments.run ... --print_config`
            and the checkpoint's state_dict name them.
        init_from: start from the weights of an earlier run: its directory, run id, a .ckpt file or a W&B model
            artifact (wandb:entity/project/model-RUNID:best). Tensors of the same name and shape are loaded;
            the others (a head for another number of classes) are listed at the start and left as initialised.
            A checkpoint of another core is refused. Weights only: the optimizer and the epoch start afresh.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerName = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        nesterov: bool = False,
        betas: tuple[float, float] = (0.9, 0.999),
        scheduler: SchedulerName = "cosine",
        warmup_fraction: float = 0.0,
        l1: float = 0.0,
        l2: float = 0.0,
        compile: bool = False,
        lr_decay: float = 1.0,
        freeze: list[str] | None = None,
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        self.net = build_core(net)  # a checkpoint gives the core as plain data: {"class_path", "init_args"}
        check_range("lr", lr, 0.0, low_open=True)
        for name, value in (("weight_decay", weight_decay), ("l1", l1), ("l2", l2)):
            check_range(name, value, 0.0)
        check_range("momentum", momentum, 0.0, 1.0)
        check_range("warmup_fraction", warmup_fraction, 0.0, 1.0)
        check_range("lr_decay", lr_decay, 0.0, 1.0, low_open=True)
        if nesterov and (optimizer != "sgd" or momentum == 0):
            raise ConfigError("nesterov needs optimizer 'sgd' with momentum > 0")
        # The task's arguments and its subclass's, the core as plain data; the tracker gets the whole nested
        # run config instead.
        self.save_hyperparameters(ignore=["net"], logger=False)
        if isinstance(self.net, Core):  # a core of another kind must be passed again to load_from_checkpoint
            self.hparams["net"] = self.net.config()
        self.optimizer_name = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.nesterov = nesterov
        self.betas = (float(betas[0]), float(betas[1]))
        self.scheduler_name = scheduler
        self.warmup_fraction = warmup_fraction
        self.l1 = l1
        self.l2 = l2
        self.compile_net = compile
        self.lr_decay = lr_decay
        freeze_parameters(self.net, freeze or [])
        self.init_from = init_from  # applied by the command (experiments/init_from.py), not by a checkpoint's load
        # Epoch means of per-batch values ("val/loss", ...) as sums and counts on the model's device, reduced
        # across processes once, at the end of the epoch: the exact mean over all examples whatever the shards
        # and batch sizes (a mean of per-rank means is not), and no host sync or `self.log` per step.
        self.epoch_means = torch.nn.ModuleDict()
        self.resumed_train_metrics: dict[str, torch.Tensor] | None = None  # from a checkpoint, until training starts

    def setup(self, stage: str) -> None:
        if self.compile_net:
            self.net.compile()  # in place: the module and its state_dict keys stay as they are

    def shared_step(self, batch: Any, stage: str) -> torch.Tensor:
        """The loss of a batch at `stage` ("train", "val" or "test"), accumulating the stage's metrics."""
        raise NotImplementedError

    def predictions(
        self, inputs: Any, datamodule: Any, items: list[Any] | None = None, **options: Any
    ) -> list[dict[str, Any]]:
        """The answers for a batch of new inputs (made by `datamodule.encode_inputs` from `items`, the inputs
        as read: texts, files, ...), one row of plain data per input: what `python -m experiments.predict`
        prints and writes."""
        raise NotImplementedError(f"{type(self).__name__} does not predict on new inputs")

    def prediction_batch_size(self, requested: int) -> int:
        """How many new inputs `predictions` takes at once, of the `requested`: all, unless they cannot share
        a batch."""
        return requested

    #: The keyword options of `predictions` that `python -m experiments.predict` may pass on (each a flag of
    #: the command: "max_new_tokens", "temperature", "top_k"); the command refuses the others.
    prediction_options: ClassVar[tuple[str, ...]] = ()

    def printed_answers(self, names: list[str], rows: list[dict[str, Any]]) -> str | None:
        """How `python -m experiments.predict` prints the answers (`names`: one per input), where its table
        of the input and each plain answer column does not suit them; None: the table."""
        return None

    def explained_answers(
        self, inputs: torch.Tensor, outputs: torch.Tensor, datamodule: Any, class_index: int | None
    ) -> list[list[tuple[int, str]]]:
        """What `--explain` attributes, for each input of a batch: (index into the input's outputs flattened
        after the batch axis, what that answer is in words). `outputs` are the core's, classes on the last
        axis; `class_index`: the class to explain (None: each answer's predicted one). Tasks that explain
        their answers (`explains_answers`) say."""
        raise NotImplementedError(f"{type(self).__name__} does not explain its answers")

    def log_loss(self, stage: str, loss: torch.Tensor, weight: float | torch.Tensor) -> None:
        """Training loss of the step at logging steps (every `log_every_n_steps`: Lightning drops the values of
        the steps between, and `self.log` costs ~0.5 ms); evaluation loss as the epoch's mean over examples,
        each batch weighted by `weight` (its size; a tensor stays on the device, so no host sync)."""
        if stage != "train":
            self.add_to_mean(stage, "loss", loss, weight)
        elif self.logging_step():
            self.log("train/loss", loss, on_step=True, on_epoch=False, batch_size=1)  # batch size: no averaging

    def logging_step(self) -> bool:
        """Whether the trainer sends this training step's logged values to the loggers (never without one)."""
        if self._trainer is None:
            return False
        return bool(self.trainer._logger_connector.should_update_logs)

    def add_to_mean(self, stage: str, name: str, value: torch.Tensor, weight: float | torch.Tensor = 1.0) -> None:
        """Add a batch's mean `value` (weighted by `weight`, e.g. its size) to the epoch mean `<stage>/<name>`,
        logged when the epoch ends."""
        key = f"{stage}/{name}"
        if key not in self.epoch_means:  # created on first use, on the value's device
            self.epoch_means[key] = WeightedMean().to(value.device)
        cast(WeightedMean, self.epoch_means[key]).update(value, weight)

    def epoch_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        """The metrics of the epoch that ends at `stage`, reduced across processes; tasks add theirs."""
        metrics = {}
        for key, module in self.epoch_means.items():
            mean = cast(WeightedMean, module)
            if key.startswith(f"{stage}/") and mean.update_called:
                metrics[key] = mean.compute()
                mean.reset()
        return metrics

    def summed(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` summed over all processes (each must call this); as it is with one process."""
        if self._trainer is None or self.trainer.world_size == 1:
            return tensor
        return self.trainer.strategy.reduce(tensor.clone(), reduce_op="sum")

    def train_metric_state(self) -> dict[str, torch.Tensor]:
        """The tensors in which the running training epoch's metrics accumulate (tasks add theirs): saved in
        every checkpoint, so that a run resumed in the middle of an epoch reports that epoch's metrics over all
        its batches, as if it had never stopped."""
        return {}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Summed over processes (all of them save, rank 0 writes); restored on rank 0 alone, so sums stay exact.
        state = self.train_metric_state()
        checkpoint["train_metric_state"] = {name: self.summed(tensor).cpu() for name, tensor in state.items()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.resumed_train_metrics = checkpoint.get("train_metric_state")

    def on_train_start(self) -> None:
        saved, self.resumed_train_metrics = self.resumed_train_metrics, None
        # Only a checkpoint from inside an epoch resumes that epoch; one from its end starts the next.
        if saved and self.trainer.fit_loop.restarted_mid_epoch and self.trainer.is_global_zero:
            for name, tensor in self.train_metric_state().items():
                if name in saved:
                    tensor.copy_(saved[name])

    def log_epoch(self, stage: str) -> None:
        metrics = self.epoch_metrics(stage)
        # Already reduced across processes: sync_dist only averages equal values (and keeps Lightning quiet).
        self.log_dict(metrics, on_step=False, on_epoch=True, sync_dist=True)

    def on_train_epoch_end(self) -> None:
        self.log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self.log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self.log_epoch("test")

    # What callbacks ask of a task; each task overrides what applies to it.

    #: The padding id of token inputs (None: inputs without padding); Throughput counts real tokens with it.
    pad_id: int | None = None
    #: Whether `python -m experiments.predict --explain` can attribute the answers to the inputs (classifiers).
    explains_answers: bool = False
    #: Whether each answer is one class, the argmax of the outputs, scored by accuracy (classifiers).
    classifies: bool = False

    def forward(self, *inputs: torch.Tensor) -> Any:
        return self.net(*inputs)

    def model_inputs(self, batch: Any) -> tuple[torch.Tensor, ...]:
        """The arguments of `forward` for a batch: its inputs, without the targets (AttentionMaps runs it)."""
        return (batch[0],)

    def sample_rows(self, batch: Any, datamodule: Any) -> tuple[list[str], list[list]] | None:
        """Columns and rows of a table showing what the model makes of a few examples, as plain cells: text,
        numbers, images as uint8 arrays (H, W) or (H, W, C). PredictionSamples logs it to W&B, LocalReport
        draws it in the run directory; None: the task has no such table."""
        return None

    def confusion_counts(self, stage: str) -> torch.Tensor | None:
        """(true, predicted) counts of `stage` this epoch, summed over all processes (each must call);
        None: not a classification task (ConfusionMatrix charts them)."""
        return None

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.regularized(self.shared_step(batch, "train"))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.shared_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.shared_step(batch, "test")

    def regularized(self, loss: torch.Tensor) -> torch.Tensor:
        """The training objective: loss plus the L1/L2 penalties on weights."""
        if not (self.l1 or self.l2):
            return loss
        weights, _ = split_decay_groups(self)
        penalty = weight_penalty(weights, self.l1, self.l2)
        return loss if penalty is None else loss + penalty

    def export_inputs(self, facts: Collection[str]) -> ExportInputs | None:
        """What the core takes, for export (`facts`: the names of the core's arguments and of the data's facts):
        images of one size, or token ids padded to any length; None where neither. Tasks of other inputs
        override it."""
        if "image_shape" in facts:  # images, spectrograms
            return ExportInputs(("images",), "logits", ({0: "batch"},))
        if "vocab_size" in facts:
            return ExportInputs(("tokens",), "logits", ({0: "batch", 1: "length"},), bounded=True, padded=True)
        return None

    def example_inputs(
        self, data: Mapping[str, Any], batch_size: int, length: int, limit: int | None, generator: torch.Generator
    ) -> tuple[torch.Tensor, ...]:
        """Inputs for the core made from the facts alone, for when the run's data is not here (export traces and
        checks with them): normal images of the core's `image_shape`, or random token ids right-padded to
        different lengths, no longer than `limit` (the core's position table). `data`: the datamodule's
        arguments. Tasks of other inputs override it, as they do `export_inputs`."""
        core: dict[str, Any] = dict(getattr(self.net, "hparams", {}))  # its arguments: the data's facts among them
        if "image_shape" in core:
            return (torch.randn(batch_size, *core["image_shape"], generator=generator),)
        length = min(length, limit) if limit else length
        return (random_token_ids(generator, self.net, batch_size, length, padded=True),)

    def configure_optimizers(self) -> Any:
        # Lightning refuses to clip the gradients of a fused optimizer under mixed precision (it cannot tell
        # bf16, which needs no unscaling, from fp16 with its scaler), so that combination stays unfused.
        clipped = bool(self.trainer.gradient_clip_val)
        fused = not (clipped and isinstance(self.trainer.precision_plugin, MixedPrecision))
        depths = {f"net.{name}": depth for name, depth in layer_depths(self.net).items()}
        optimizer = build_optimizer(
            self,
            self.optimizer_name,
            self.lr,
            self.weight_decay,
            self.momentum,
            self.nesterov,
            self.betas,
            fused,
            depths=depths,
            lr_decay=self.lr_decay,
        )
        total_steps = int(self.trainer.estimated_stepping_batches)
        scheduler = build_scheduler(optimizer, self.scheduler_name, total_steps, self.warmup_fraction)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
