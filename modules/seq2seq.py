"""Sequence-to-sequence: teacher-forced cross-entropy in training, greedy decoding in evaluation."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from cores.contracts import Seq2SeqCore
from modules.task import ExportInputs, TaskModule, random_token_ids
from validation import ConfigError, check_range, require


def corpus_scores(outputs: list[str], references: list[str]) -> dict[str, float]:
    """sacreBLEU's corpus BLEU (13a tokens) and chrF (character 6-grams, beta 2), 0-100, one reference each."""
    sacrebleu = require("sacrebleu", "--model.text_metrics (BLEU and chrF)")
    if not outputs:
        return {}
    return {
        "bleu": sacrebleu.corpus_bleu(outputs, [references]).score,
        "chrf": sacrebleu.corpus_chrf(outputs, [references]).score,
    }


class Seq2SeqTask(TaskModule):
    """Batches (source (B, S), target (B, T)) with target = <bos> ... <eos>, padded with pad_id.

    The loss is teacher-forced cross-entropy; validation and test also decode greedily from the source
    alone and report `exact_match` (the whole output, up to and including <eos>, is right) and
    `token_acc` (share of target tokens right).

    Args:
        net: a `Seq2SeqCore`: `cores.transformer.TransformerSeq2Seq`, `cores.recurrent.RNNSeq2Seq`, or your own.
        pad_id: padding id; from the datamodule.
        bos_id: start-of-sequence id; from the datamodule.
        eos_id: end-of-sequence id; from the datamodule.
        label_smoothing: cross-entropy label smoothing.
        text_metrics: also report corpus BLEU and chrF (sacreBLEU's definitions, on a 0-100 scale) of the
            greedy outputs, decoded to text with the datamodule's tokenizer: for translation.
        **task_options: optimizer, schedule and penalty settings (see `TaskModule`).
    """

    net: Seq2SeqCore
    pad_id: int

    def __init__(
        self,
        net: Seq2SeqCore,
        pad_id: int = 0,
        bos_id: int = 2,
        eos_id: int = 3,
        label_smoothing: float = 0.0,
        text_metrics: bool = False,
        **task_options: Any,
    ) -> None:
        super().__init__(net, **task_options)
        check_range("label_smoothing", label_smoothing, 0.0, 0.999)
        if text_metrics:  # checked here, not at the end of the first validation
            require("sacrebleu", "--model.text_metrics (BLEU and chrF)")
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.label_smoothing = label_smoothing
        self.text_metrics = text_metrics
        self.texts: dict[str, tuple[list[str], list[str]]] = {}  # stage -> (outputs, references) this epoch

    prediction_options = ("max_new_tokens",)

    def model_inputs(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        source, target = batch
        return source, target[:, :-1]  # teacher forcing: the decoder reads the target shifted right

    def decode(self, source: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Greedy decoding: (B, S) -> (B, L) ids, <pad> after each <eos>."""
        return self.net.greedy_decode(source, self.bos_id, self.eos_id, max_new_tokens)

    @torch.no_grad()
    def predictions(
        self, inputs: torch.Tensor, datamodule: Any, max_new_tokens: int | None = None, **options: Any
    ) -> list[dict[str, Any]]:
        """The greedy output for each source (B, S); at most `max_new_tokens` tokens (default: twice the
        longest source's, and the core's own limit)."""
        output = self.decode(inputs, max_new_tokens or 2 * inputs.shape[1] + 8)
        return [{"output": datamodule.tokenizer.decode(ids.tolist())} for ids in output]

    def sample_rows(self, batch: tuple[torch.Tensor, torch.Tensor], datamodule: Any) -> tuple[list[str], list[list]]:
        """Rows for a W&B table: source, target and the greedy output, decoded, and whether they match."""
        source, target = batch
        output = self.decode(source, max_new_tokens=target.shape[1])

        def text(ids: torch.Tensor) -> str:
            return datamodule.tokenizer.decode(ids.tolist())  # <pad>, <bos> and <eos> decode to nothing

        rows = [[text(s), text(t), text(o), text(t) == text(o)] for s, t, o in zip(source, target, output, strict=True)]
        return ["source", "target", "output", "correct"], rows

    def export_inputs(self, facts: Collection[str]) -> ExportInputs:
        source, target = {0: "batch", 1: "source_length"}, {0: "batch", 1: "target_length"}
        usage = (
            "the graph is the teacher-forced forward (source, target_in) -> logits; greedy decoding runs outside "
            "it: start target_in with <bos>, append the last position's argmax, repeat until <eos>"
        )
        return ExportInputs(("source", "target_in"), "logits", (source, target), bounded=True, padded=True, usage=usage)

    def example_inputs(
        self, data: Mapping[str, Any], batch_size: int, length: int, limit: int | None, generator: torch.Generator
    ) -> tuple[torch.Tensor, ...]:
        """Random padded sources of `length` (cut to `limit`) and decoder inputs half as long, from <bos>."""
        length = min(length, limit) if limit else length
        target = random_token_ids(generator, self.net, batch_size, max(2, length // 2), padded=True)
        target[:, 0] = self.bos_id
        return random_token_ids(generator, self.net, batch_size, length, padded=True), target

    def shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        source, target = batch
        expected = target[:, 1:]  # (B, T-1): what follows each decoder input position
        logits = self(source, target[:, :-1])
        loss = F.cross_entropy(
            logits.flatten(0, 1).float(),
            expected.flatten(),
            ignore_index=self.pad_id,
            label_smoothing=self.label_smoothing,
        )
        self.log_loss(stage, loss, len(source))
        if stage != "train":
            decoded = self.decode(source, max_new_tokens=expected.shape[1])
            decoded = F.pad(decoded, (0, expected.shape[1] - decoded.shape[1]), value=self.pad_id)
            real = expected != self.pad_id
            exact_match = ((decoded == expected) | ~real).all(1).float().mean()
            self.add_to_mean(stage, "exact_match", exact_match, len(source))
            self.add_to_mean(stage, "token_acc", ((decoded == expected) & real).sum() / real.sum(), real.sum())
            if self.text_metrics:
                self.score_texts(stage, decoded, expected)
        return loss

    def score_texts(self, stage: str, decoded: torch.Tensor, expected: torch.Tensor) -> None:
        """Keep the batch's outputs and references as text for the epoch's corpus scores."""
        tokenizer = getattr(getattr(self.trainer, "datamodule", None), "tokenizer", None)
        if tokenizer is None:
            raise ConfigError("--model.text_metrics needs a datamodule with a tokenizer to decode the outputs")
        outputs, references = self.texts.setdefault(stage, ([], []))
        outputs += [tokenizer.decode(ids) for ids in decoded.tolist()]  # specials decode to nothing
        references += [tokenizer.decode(ids) for ids in expected.tolist()]

    def epoch_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        metrics = super().epoch_metrics(stage)
        if self.text_metrics and stage != "train":
            outputs, references = self.gathered(*self.texts.pop(stage, ([], [])))
            metrics |= {
                f"{stage}/{name}": torch.tensor(score, device=self.device)
                for name, score in corpus_scores(outputs, references).items()
            }
        return metrics

    def gathered(self, outputs: list[str], references: list[str]) -> tuple[list[str], list[str]]:
        """Every process's texts (each must call), for corpus scores over the whole split."""
        if self._trainer is None or self.trainer.world_size == 1:
            return outputs, references
        everyone: list[Any] = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(everyone, (outputs, references))
        return [o for part in everyone for o in part[0]], [r for part in everyone for r in part[1]]
