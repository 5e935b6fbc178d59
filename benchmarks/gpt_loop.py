"""A hand-written training loop for firstlight's Transformer language model, in the style of nanoGPT's
`train.py`: plain PyTorch, no Lightning, no logging beyond a line per evaluation.

It trains the same core (`cores.transformer.TransformerLanguageModel`) on the same tokens (the splits of
`LanguageModelDataModule`) as `python -m experiments.run` does, with nanoGPT's recipe: batches of windows
at random positions of the training text, AdamW with decay on weights only, linear warm-up then cosine,
gradients clipped to norm 1, and every `eval_interval` steps the mean loss over the first `eval_batches`
validation batches, after which, like nanoGPT, it saves a checkpoint (model, optimizer, schedule, step) when
that loss is the best so far, if given a `checkpoint` path. `benchmarks.lm_side_by_side` runs it beside
firstlight; it is the reference that firstlight's step time is held to.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cores.transformer import TransformerLanguageModel
from datamodules.language_model import LanguageModelDataModule, windows_at
from modules.optim import build_optimizer, build_scheduler


@torch.no_grad()
def validation_loss(net: nn.Module, windows: torch.Tensor, batch_size: int) -> float:
    """Mean next-token loss (nats per token) of a language model core over (N, T + 1) windows, in fp32."""
    net.eval()
    total = 0.0
    for chunk in windows.split(batch_size):
        logits = net(chunk[:, :-1]).float()  # (B, T, vocab)
        total += F.cross_entropy(logits.flatten(0, 1), chunk[:, 1:].flatten(), reduction="sum").item()
    return total / windows[:, 1:].numel()


@dataclass(frozen=True)
class GPTSettings:
    """nanoGPT's CPU configuration for Shakespeare (its README), in firstlight's names."""

    dim: int = 128
    num_layers: int = 4
    num_heads: int = 4
    dropout: float = 0.0
    positional: str = "learned"
    context_length: int = 64
    batch_size: int = 12
    max_steps: int = 2000
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_fraction: float = 0.05  # nanoGPT: 100 of 2,000 iterations
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_batches: int = 20  # of 2 * batch_size windows: nanoGPT's 20 batches of 12 for train and for val

    def cli_args(self) -> list[str]:
        """The same settings as `python -m experiments.run` options, over the `transformer_shakespeare` preset."""
        net = "--model.net.init_args."
        return [
            "--config", "transformer_shakespeare",
            f"{net}dim={self.dim}", f"{net}num_layers={self.num_layers}", f"{net}num_heads={self.num_heads}",
            f"{net}dropout={self.dropout}", f"{net}positional={self.positional}",
            f"{net}max_length={self.context_length}",
            "--model.optimizer=adamw", f"--model.lr={self.lr}", f"--model.weight_decay={self.weight_decay}",
            f"--model.betas=[{self.betas[0]},{self.betas[1]}]", "--model.scheduler=cosine",
            f"--model.warmup_fraction={self.warmup_fraction}",
            f"--data.context_length={self.context_length}", f"--data.batch_size={self.batch_size}",
            f"--trainer.max_steps={self.max_steps}", "--trainer.max_epochs=-1",
            f"--trainer.gradient_clip_val={self.grad_clip}",
            f"--trainer.val_check_interval={self.eval_interval}", "--trainer.check_val_every_n_epoch=null",
            f"--trainer.limit_val_batches={self.eval_batches}",
        ]  # fmt: skip


class GPTLoop:
    """One training run, a step at a time: `step()`, `evaluate()`, or `train(seconds)` for the whole loop."""

    def __init__(
        self, data: LanguageModelDataModule, settings: GPTSettings, seed: int = 0, checkpoint: Path | None = None
    ) -> None:
        s = self.settings = settings
        self.checkpoint, self.best_loss = checkpoint, float("inf")
        data.ready()
        self.train_ids, self.val_windows = data.ids["train"], data.splits["val"]  # (N,), (windows, T + 1)
        torch.manual_seed(seed)
        self.net = TransformerLanguageModel(
            vocab_size=data.vocab_size,
            dim=s.dim,
            num_layers=s.num_layers,
            num_heads=s.num_heads,
            dropout=s.dropout,
            max_length=s.context_length,
            positional=s.positional,  # type: ignore[arg-type]
        )
        self.optimizer = build_optimizer(self.net, "adamw", s.lr, s.weight_decay, 0.0, False, s.betas)
        scheduler = build_scheduler(self.optimizer, "cosine", s.max_steps, s.warmup_fraction)
        assert scheduler is not None
        self.scheduler = scheduler
        self.generator = torch.Generator().manual_seed(seed)
        self.steps = 0

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """nanoGPT's get_batch: `batch_size` windows starting anywhere in the training text."""
        T = self.settings.context_length
        starts = torch.randint(len(self.train_ids) - T, (self.settings.batch_size,), generator=self.generator)
        return windows_at(self.train_ids, starts, T)

    def step(self) -> float:
        """One optimizer step, and an evaluation after every `eval_interval`-th; returns the training loss."""
        self.net.train()
        inputs, targets = self.batch()
        logits = self.net(inputs)  # (B, T, vocab)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.settings.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.steps += 1
        if self.steps % self.settings.eval_interval == 0:
            evaluated = self.evaluate(self.settings.eval_batches)
            if self.checkpoint is not None and evaluated < self.best_loss:
                self.best_loss = evaluated
                self.save(self.checkpoint)
        return loss.item()

    def save(self, path: Path) -> None:
        """nanoGPT's checkpoint: one `torch.save` of the model, the optimizer and where training stands."""
        state: dict[str, Any] = {"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}
        state |= {"scheduler": self.scheduler.state_dict(), "step": self.steps, "best_loss": self.best_loss}
        torch.save(state, path)

    def evaluate(self, batches: int | None = None) -> float:
        """Mean loss per token over the first `batches` validation batches of 2 * batch_size (None: all)."""
        size = 2 * self.settings.batch_size
        windows = self.val_windows if batches is None else self.val_windows[: batches * size]
        return validation_loss(self.net, windows, size)

    def train(self, seconds: float | None = None) -> float:
        """Steps until `max_steps` (or `seconds` pass); returns the seconds taken."""
        started = time.perf_counter()
        while self.steps < self.settings.max_steps:
            self.step()
            if seconds is not None and time.perf_counter() - started >= seconds:
                break
        return time.perf_counter() - started
