"""Language modelling: next-token cross-entropy, bits per character, and samples of generated text."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from cores.contracts import LanguageModelCore
from modules.task import ExportInputs, TaskModule, random_token_ids


class LanguageModelTask(TaskModule):
    """Batches (inputs (B, T), targets (B, T)); loss in nats per token, bits per character for evaluation.

    Args:
        net: a `LanguageModelCore`: `cores.transformer.TransformerLanguageModel`,
            `cores.recurrent.RNNLanguageModel`, or your own.
        pad_id: padding id, ignored in the loss; from the datamodule.
        chars_per_token: characters per token of the training text (1 for characters); from the
            datamodule, it turns nats per token into bits per character.
        **task_options: optimizer, schedule and penalty settings (see `TaskModule`).
    """

    net: LanguageModelCore
    pad_id: int
    prediction_options = ("max_new_tokens", "temperature", "top_k")

    def __init__(
        self, net: LanguageModelCore, pad_id: int = 0, chars_per_token: float = 1.0, **task_options: Any
    ) -> None:
        super().__init__(net, **task_options)
        self.pad_id = pad_id
        self.chars_per_token = chars_per_token

    def generate(
        self, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None
    ) -> torch.Tensor:
        """(B, T) prompt ids -> (B, T + max_new_tokens), sampled by the core."""
        return self.net.generate(prompt, max_new_tokens, temperature, top_k)

    @torch.no_grad()
    def prediction_batch_size(self, requested: int) -> int:
        return 1  # prompts differ in length, and a prompt is not padded

    def predictions(
        self,
        inputs: torch.Tensor,
        datamodule: Any,
        max_new_tokens: int = 200,
        temperature: float = 1.0,
        top_k: int | None = None,
        **options: Any,
    ) -> list[dict[str, Any]]:
        """The text each prompt (B, T) goes on with, sampled."""
        generated = self.generate(inputs, max_new_tokens, temperature, top_k)[:, inputs.shape[1] :]
        return [{"generated": datamodule.tokenizer.decode(ids.tolist())} for ids in generated]

    def sample_rows(self, batch: tuple[torch.Tensor, torch.Tensor], datamodule: Any) -> tuple[list[str], list[list]]:
        """Rows for a W&B table: a prompt from the validation text and what the model writes after it
        (200 tokens, temperature 0.8, top-k 20)."""
        prompts = batch[0][:4, :32]
        generated = self.generate(prompts, max_new_tokens=200, temperature=0.8, top_k=20)
        decode = datamodule.tokenizer.decode
        rows = [[decode(p.tolist()), decode(g[p.shape[0] :].tolist())] for p, g in zip(prompts, generated, strict=True)]
        return ["prompt", "generated"], rows

    def export_inputs(self, facts: Collection[str]) -> ExportInputs:
        return ExportInputs(("tokens",), "logits", ({0: "batch", 1: "length"},), bounded=True)  # never padded

    def example_inputs(
        self, data: Mapping[str, Any], batch_size: int, length: int, limit: int | None, generator: torch.Generator
    ) -> tuple[torch.Tensor, ...]:
        """Random contexts of the data's context length (cut to `limit`), whole: a context is never padded."""
        length = int(data.get("context_length") or length)
        length = min(length, limit) if limit else length
        return (random_token_ids(generator, self.net, batch_size, length, padded=False),)

    def shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        inputs, targets = batch
        logits = self(inputs)  # (B, T, vocab)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=self.pad_id)
        size = (targets != self.pad_id).sum()  # real tokens, left on the device
        self.log_loss(stage, loss, size)
        if stage != "train":  # linear in the loss, so its epoch mean is the bits per character of the split
            bpc = loss / math.log(2) / self.chars_per_token
            self.add_to_mean(stage, "bpc", bpc, size)
        return loss
