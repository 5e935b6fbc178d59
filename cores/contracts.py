"""What a task asks of a core: one base class per task, with the methods it calls and their defaults.

Each contract names the task that trains its cores (`task`, as a class path: a core never imports a task).
A core is a plain `nn.Module` (no Lightning) whose `__init__` is the one description of its architecture:
typed, documented arguments, range-checked there. Arguments named like a datamodule's facts (`num_classes`,
`vocab_size`, `pad_id`, ...; see `datamodules.base.DataModule.model_facts`) are filled in from the data by
the command. Every core records its arguments (`self.hparams`), so a checkpoint names the core by class
path and plain values and loads with `torch.load(weights_only=True)`.

    ClassifierCore     forward(inputs) -> (B, num_classes) logits
    LanguageModelCore  forward(tokens (B, T)) -> (B, T, vocab) next-token logits; generate(...)
    Seq2SeqCore        encode(source) -> memory; decode(target_in, memory) -> (B, T, vocab); greedy_decode(...)
    ForecasterCore     forward(window (B, T, F)) -> (B, horizon, F)
    TaggerCore         forward(tokens (B, T)) -> (B, T, num_classes) a tag's logits at every position
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from lightning.pytorch.core.mixins import HyperparametersMixin
from torch import nn

from cores.sampling import sample_next


class Core(HyperparametersMixin, nn.Module):
    """A network that a task trains. Subclasses call `self.save_hyperparameters()` first in `__init__`."""

    def config(self) -> dict[str, Any]:
        """The core as plain data, `{"class_path": ..., "init_args": {...}}`: how checkpoints name it."""
        return {"class_path": f"{type(self).__module__}.{type(self).__qualname__}", "init_args": dict(self.hparams)}

    def layer_depths(self) -> dict[str, int]:
        """Parameter name -> how many layers below the output it is (0: the head; the default for names left
        out), for layer-wise learning rates (`--model.lr_decay`). Pretrained cores say; others need not."""
        return {}


def layer_depths(net: nn.Module) -> dict[str, int]:
    """How many layers below the output each parameter of `net` is, by name (`Core.layer_depths`); {} where
    the core does not say (all at the output's depth)."""
    depths = getattr(net, "layer_depths", None)
    return depths() if callable(depths) else {}


class ClassifierCore(Core):
    """Inputs (images (B, C, H, W), or token ids (B, T) padded with `pad_id`) -> class logits (B, num_classes)."""

    task: ClassVar[str] = "modules.classification.ClassificationTask"  # the task that trains cores of this contract

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class LanguageModelCore(Core):
    """Token ids (B, T) -> next-token logits (B, T, vocab_size), each position seeing only those before it.

    `max_length`: the longest context the core takes (None: any); `generate` cuts the context to it.
    """

    task: ClassVar[str] = "modules.language_model.LanguageModelTask"  # the task that trains cores of this contract

    max_length: int | None = None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def generate(
        self, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None
    ) -> torch.Tensor:
        """(B, T) prompt ids -> (B, T + max_new_tokens), one token at a time from the whole (cut) context.
        Recurrent cores override it to carry their state instead of rereading the context."""
        tokens = prompt
        for _ in range(max_new_tokens):
            context = tokens if self.max_length is None else tokens[:, -self.max_length :]
            tokens = torch.cat([tokens, sample_next(self(context)[:, -1], temperature, top_k)[:, None]], dim=1)
        return tokens


class Seq2SeqCore(Core):
    """Source ids (B, S) and the target shifted right (B, T, starting with <bos>) -> logits (B, T, vocab_size).

    In training the decoder reads the true previous tokens (teacher forcing); `greedy_decode` feeds it its
    own. Subclasses implement `encode` and `decode`; `pad_id` marks padding in both.
    """

    task: ClassVar[str] = "modules.seq2seq.Seq2SeqTask"  # the task that trains cores of this contract

    pad_id: int = 0
    max_length: int | None = None

    def encode(self, source: torch.Tensor) -> Any:
        """(B, S) -> whatever `decode` reads the source from (e.g. hidden states and their padding mask)."""
        raise NotImplementedError

    def decode(self, target_in: torch.Tensor, memory: Any) -> torch.Tensor:
        """(B, T) decoder input and the encoded source -> (B, T, vocab_size) logits."""
        raise NotImplementedError

    def forward(self, source: torch.Tensor, target_in: torch.Tensor) -> torch.Tensor:
        return self.decode(target_in, self.encode(source))

    @torch.no_grad()
    def greedy_decode(self, source: torch.Tensor, bos_id: int, eos_id: int, max_new_tokens: int) -> torch.Tensor:
        """(B, S) -> (B, L) generated ids without <bos>, `pad_id` after each sequence's <eos>."""
        memory = self.encode(source)
        output = torch.full((len(source), 1), bos_id, dtype=torch.long, device=source.device)
        finished = torch.zeros(len(source), dtype=torch.bool, device=source.device)
        steps = max_new_tokens if self.max_length is None else min(max_new_tokens, self.max_length - 1)
        for _ in range(steps):
            next_token = self.decode(output, memory)[:, -1].argmax(-1)
            next_token = torch.where(finished, torch.full_like(next_token, self.pad_id), next_token)
            output = torch.cat([output, next_token[:, None]], dim=1)
            finished |= next_token == eos_id
            if finished.all():
                break
        return output[:, 1:]


class ForecasterCore(Core):
    """A window of a series (B, T, num_features) -> its next `horizon` steps (B, horizon, num_features)."""

    task: ClassVar[str] = "modules.forecasting.ForecastTask"  # the task that trains cores of this contract

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TaggerCore(Core):
    """Token ids (B, T) padded with `pad_id` -> tag logits at every position (B, T, num_classes), each position
    reading the whole sentence (both directions); the logits at padding are never read."""

    task: ClassVar[str] = "modules.tagging.TaggingTask"  # the task that trains cores of this contract

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def build_core(net: nn.Module | dict[str, Any]) -> nn.Module:
    """The core itself, or one built from its plain-data form (`Core.config`), as a checkpoint stores it."""
    if isinstance(net, nn.Module):
        return net
    import importlib

    module_name, _, class_name = str(net["class_path"]).rpartition(".")
    core_class = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(core_class, type) and issubclass(core_class, Core)):  # a checkpoint names no other code
        raise TypeError(f"{net['class_path']} is not a firstlight core")
    return core_class(**dict(net.get("init_args") or {}))
