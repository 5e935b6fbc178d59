"""Next-token language models: a Transformer decoder and an LSTM/GRU, with sampling."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from modules.positional import PositionalKind
from modules.recurrent import CellKind, RecurrentLMNet, State
from modules.sampling import sample_next
from modules.task import TaskModule
from modules.transformer import TransformerLMNet


class LanguageModelTask(TaskModule):
    """Batches (inputs (B, T), targets (B, T)); loss in nats per token, bits per character for evaluation.

    Args:
        vocab_size: vocabulary size; linked from the datamodule.
        pad_id: padding id, ignored in the loss; linked from the datamodule.
        chars_per_token: characters per token of the training text (1 for characters); linked from the
            datamodule, it turns nats per token into bits per character.
        **task_options: optimizer, schedule and penalty settings (see `TaskModule`).
    """

    def __init__(self, vocab_size: int, pad_id: int = 0, chars_per_token: float = 1.0, **task_options: Any) -> None:
        super().__init__(**task_options)
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        self.chars_per_token = chars_per_token

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def generate(
        self, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None
    ) -> torch.Tensor:
        raise NotImplementedError

    def sample_rows(self, batch: tuple[torch.Tensor, torch.Tensor], datamodule: Any) -> tuple[list[str], list[list]]:
        """Rows for a W&B table: a prompt from the validation text and what the model writes after it
        (200 tokens, temperature 0.8, top-k 20)."""
        prompts = batch[0][:4, :32]
        generated = self.generate(prompts, max_new_tokens=200, temperature=0.8, top_k=20)
        decode = datamodule.tokenizer.decode
        rows = [[decode(p.tolist()), decode(g[p.shape[0] :].tolist())] for p, g in zip(prompts, generated, strict=True)]
        return ["prompt", "generated"], rows

    def shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        inputs, targets = batch
        logits = self.logits(inputs)  # (B, T, vocab)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=self.pad_id)
        size = (targets != self.pad_id).sum()  # real tokens, left on the device
        self.log_loss(stage, loss, size)
        if stage != "train":  # linear in the loss, so its epoch mean is the bits per character of the split
            bpc = loss / math.log(2) / self.chars_per_token
            self.add_to_mean(stage, "bpc", bpc, size)
        return loss


class TransformerLanguageModel(LanguageModelTask):
    """Decoder-only Transformer: causal self-attention, tied input/output embeddings.

    Args:
        vocab_size: vocabulary size; linked from the datamodule.
        pad_id: padding id; linked from the datamodule.
        chars_per_token: linked from the datamodule (see `LanguageModelTask`).
        dim: model width.
        num_layers: decoder blocks.
        num_heads: attention heads (must divide dim).
        mlp_ratio: width of each block's MLP, in multiples of dim.
        dropout: dropout probability.
        max_length: longest context, in tokens.
        positional: "sinusoidal" (Vaswani et al.) or "learned".
        **task_options: optimizer, schedule and penalty settings (see `TaskModule`).
    """

    def __init__(
        self,
        vocab_size: int = 256,
        pad_id: int = 0,
        chars_per_token: float = 1.0,
        dim: int = 256,
        num_layers: int = 4,
        num_heads: int = 4,
        mlp_ratio: int = 4,
        dropout: float = 0.1,
        max_length: int = 256,
        positional: PositionalKind = "sinusoidal",
        **task_options: Any,
    ) -> None:
        super().__init__(vocab_size, pad_id, chars_per_token, **task_options)
        self.save_hyperparameters(logger=False)
        self.net = TransformerLMNet(vocab_size, dim, num_layers, num_heads, mlp_ratio, dropout, max_length, positional)

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs)

    @torch.no_grad()
    def generate(
        self, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None
    ) -> torch.Tensor:
        """(B, T) prompt ids -> (B, T + max_new_tokens); the context is cut to the last max_length tokens."""
        tokens = prompt
        for _ in range(max_new_tokens):
            logits = self.net(tokens[:, -self.net.max_length :])[:, -1]
            tokens = torch.cat([tokens, sample_next(logits, temperature, top_k)[:, None]], dim=1)
        return tokens


class RNNLanguageModel(LanguageModelTask):
    """Stacked LSTM/GRU language model with tied embeddings.

    Args:
        vocab_size: vocabulary size; linked from the datamodule.
        pad_id: padding id; linked from the datamodule.
        chars_per_token: linked from the datamodule (see `LanguageModelTask`).
        embed_dim: token embedding size.
        hidden_dim: recurrent state size.
        num_layers: stacked recurrent layers.
        cell: "lstm" or "gru".
        dropout: dropout on embeddings, between layers and before the output layer.
        tie_weights: share the embedding matrix with the output layer.
        **task_options: optimizer, schedule and penalty settings (see `TaskModule`).
    """

    def __init__(
        self,
        vocab_size: int = 256,
        pad_id: int = 0,
        chars_per_token: float = 1.0,
        embed_dim: int = 128,
        hidden_dim: int = 256,
        num_layers: int = 2,
        cell: CellKind = "lstm",
        dropout: float = 0.2,
        tie_weights: bool = True,
        **task_options: Any,
    ) -> None:
        super().__init__(vocab_size, pad_id, chars_per_token, **task_options)
        self.save_hyperparameters(logger=False)
        self.net = RecurrentLMNet(vocab_size, embed_dim, hidden_dim, num_layers, cell, dropout, tie_weights)

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs)[0]

    def forward(self, inputs: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        return self.net(inputs, state)

    @torch.no_grad()
    def generate(
        self, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None
    ) -> torch.Tensor:
        """(B, T) prompt ids -> (B, T + max_new_tokens), carrying the recurrent state token by token."""
        logits, state = self.net(prompt)
        tokens = prompt
        for _ in range(max_new_tokens):
            next_token = sample_next(logits[:, -1], temperature, top_k)[:, None]
            tokens = torch.cat([tokens, next_token], dim=1)
            logits, state = self.net(next_token, state)
        return tokens
