"""Sequence tagging: a tag for every word (part of speech, named entities), cross-entropy over the words.

Evaluation reports the accuracy over words (`acc`) and, where the tags are BIO-encoded entities (B-PER,
I-PER, O, ...), the F1 of whole entities (`entity_f1`), as seqeval and the CoNLL evaluation script count it:
an entity is right only with its exact span and type.
"""

from __future__ import annotations

import textwrap
from typing import Any

import torch
import torch.nn.functional as F

from cores.contracts import TaggerCore
from modules.task import TaskModule
from validation import ConfigError

IGNORED = -100  # the tag of padding in batches: the loss and the metrics skip it
Span = tuple[int, int, str]  # (first word, word after the last, entity type)


def entity_spans(tags: list[str]) -> set[Span]:
    """The entities of one sentence's BIO tags, as the CoNLL script reads them: an entity starts at B-X, or
    at I-X after anything but an entity of type X, and goes on over the I-X that follow."""
    spans: set[Span] = set()
    start, kind = None, ""
    for position, tag in enumerate([*tags, "O"]):
        prefix, _, tag_type = tag.partition("-")
        continues = prefix == "I" and start is not None and tag_type == kind
        if start is not None and not continues:
            spans.add((start, position, kind))
            start = None
        if prefix in ("B", "I") and not continues:
            start, kind = position, tag_type
    return spans


def is_bio(classes: list[str]) -> bool:
    """Whether tags name entities in BIO form: each is O, or B-/I- and a type."""
    return any(c.startswith(("B-", "I-")) for c in classes) and all(c == "O" or c[:2] in ("B-", "I-") for c in classes)


class TaggingTask(TaskModule):
    """Batches (word ids (B, T) padded with `pad_id`, tag ids (B, T) padded with -100); loss = cross-entropy
    over the real words.

    Args:
        net: a `TaggerCore`: `cores.tagger.RNNTagger`, `cores.tagger.TransformerTagger`, or your own.
        num_classes: number of tags; from the datamodule.
        pad_id: padding id of the word ids; from the datamodule.
        label_smoothing: cross-entropy label smoothing in [0, 1).
        **task_options: optimizer, schedule and penalty settings (see `TaskModule`).
    """

    explains_answers = True  # integrated gradients of each word's tag logit

    def __init__(
        self,
        net: TaggerCore,
        num_classes: int = 2,
        pad_id: int = 0,
        label_smoothing: float = 0.0,
        **task_options: Any,
    ) -> None:
        super().__init__(net, **task_options)
        self.pad_id = pad_id
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.entity_tags: list[str] = []  # the datamodule's tags where they are BIO entities (set up); else none
        # (true positives, predicted entities, true entities) of val and test this epoch, for entity F1
        self.register_buffer("entity_counts", torch.zeros(2, 3, dtype=torch.long), persistent=False)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        tags = list(getattr(self.trainer.datamodule, "classes", None) or [])
        self.entity_tags = tags if is_bio(tags) else []  # decided once: entity F1 is counted or not

    def shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        tokens, tags = batch
        logits = self(tokens)  # (B, T, num_classes)
        if logits.shape != (*tokens.shape, self.num_classes):
            raise ConfigError(
                f"{type(self.net).__name__} returned logits of shape {tuple(logits.shape)}; a tagger core returns "
                f"(batch, length, num_classes={self.num_classes}) for (batch, length) tokens"
            )
        loss = F.cross_entropy(
            logits.flatten(0, 1).float(), tags.flatten(), ignore_index=IGNORED, label_smoothing=self.label_smoothing
        )
        real = tags != IGNORED  # (B, T)
        words = real.sum()
        self.log_loss(stage, loss, words)
        predicted = logits.detach().argmax(-1)
        self.add_to_mean(stage, "acc", ((predicted == tags) & real).sum() / words.clamp(min=1), words)
        if stage != "train" and self.entity_tags:
            self.count_entities(stage, predicted, tags)
        return loss

    def count_entities(self, stage: str, predicted: torch.Tensor, tags: torch.Tensor) -> None:
        names = self.entity_tags
        counts = torch.zeros(3, dtype=torch.long)
        for guess, truth in zip(predicted.tolist(), tags.tolist(), strict=True):
            length = sum(1 for t in truth if t != IGNORED)
            guessed = entity_spans([names[i] for i in guess[:length]])
            true = entity_spans([names[i] for i in truth[:length]])
            counts += torch.tensor([len(guessed & true), len(guessed), len(true)])
        self.entity_counts[0 if stage == "val" else 1] += counts.to(self.entity_counts.device)

    def epoch_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        metrics = super().epoch_metrics(stage)
        if stage != "train" and self.entity_tags:
            row = 0 if stage == "val" else 1
            found, guessed, true = self.summed(self.entity_counts[row]).float()
            metrics[f"{stage}/entity_f1"] = 2 * found / (guessed + true).clamp(min=1)
            self.entity_counts[row] = 0
        return metrics

    def predicted_tags(self, tokens: torch.Tensor, outputs: torch.Tensor, datamodule: Any) -> list[list[str]]:
        """The tag names the outputs (B, T, num_classes) give each real token."""
        names = list(datamodule.classes)
        return [
            [names[i] for i in row[: int(length)]]
            for row, length in zip(outputs.argmax(-1).tolist(), (tokens != self.pad_id).sum(1), strict=True)
        ]

    def token_words(self, tokens: torch.Tensor, datamodule: Any) -> list[str]:
        """One sentence's ids (T,) as words again (lower-cased, as the vocabulary holds them)."""
        ids = [int(i) for i in tokens if int(i) != self.pad_id]
        return [datamodule.tokenizer.decode([i]) or "<unk>" for i in ids]

    @torch.no_grad()
    def predictions(
        self, inputs: torch.Tensor, datamodule: Any, items: list[Any] | None = None, **options: Any
    ) -> list[dict[str, Any]]:
        """Each sentence's words, their tags, and the tags' probabilities."""
        probabilities = self(inputs).float().softmax(-1)  # (B, T, num_classes)
        tags = self.predicted_tags(inputs, probabilities, datamodule)
        rows = []
        for index, (sentence_tags, sentence) in enumerate(zip(tags, probabilities, strict=True)):
            words = datamodule.input_words(items[index]) if items else self.token_words(inputs[index], datamodule)
            confidence = sentence[: len(words)].max(-1).values.tolist()
            rows.append(
                {
                    "tagged": " ".join(f"{w}/{t}" for w, t in zip(words, sentence_tags, strict=True)),
                    "words": words,
                    "tags": sentence_tags,
                    "confidence": [round(p, 4) for p in confidence],
                }
            )
        return rows

    def printed_answers(self, names: list[str], rows: list[dict[str, Any]]) -> str | None:
        """Each sentence, then its words with their tags (word/TAG), wrapped."""
        blocks = [
            f"{name}\n" + textwrap.fill(row["tagged"], 100, initial_indent="  ", subsequent_indent="  ")
            for name, row in zip(names, rows, strict=True)
        ]
        return "\n".join(blocks)

    def explained_answers(
        self, inputs: torch.Tensor, outputs: torch.Tensor, datamodule: Any, class_index: int | None
    ) -> list[list[tuple[int, str]]]:
        """Every word's tag (or the tag `class_index` at every word): index position * num_classes + tag."""
        names = list(datamodule.classes)
        answers = []
        for tokens, logits in zip(inputs, outputs, strict=True):
            words = self.token_words(tokens, datamodule)
            chosen = logits[: len(words)].argmax(-1).tolist() if class_index is None else [class_index] * len(words)
            answers.append(
                [
                    (position * logits.shape[-1] + tag, f"{word} → {names[tag]}")
                    for position, (word, tag) in enumerate(zip(words, chosen, strict=True))
                ]
            )
        return answers

    def sample_rows(self, batch: tuple[torch.Tensor, torch.Tensor], datamodule: Any) -> tuple[list[str], list[list]]:
        """Rows for a W&B table: a sentence, its true and predicted tags, and the share right."""
        tokens, tags = batch
        predicted = self.predicted_tags(tokens, self(tokens), datamodule)
        names = list(datamodule.classes)
        rows = []
        for index, guesses in enumerate(predicted):
            truth = [names[t] for t in tags[index].tolist() if t != IGNORED]
            right = sum(g == t for g, t in zip(guesses, truth, strict=True)) / max(1, len(truth))
            words = " ".join(self.token_words(tokens[index], datamodule))
            rows.append([words, " ".join(truth), " ".join(guesses), round(right, 4)])
        return ["input", "true", "predicted", "accuracy"], rows
