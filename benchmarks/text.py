"""Length bucketing vs plain padding on the sentiment data: padding per batch and tokens per second.

    python -m benchmarks.text [--steps 60] [--repeats 3]

Rotten Tomatoes training snippets (word tokenizer, batches of 64, as the sentiment presets use), batched
two ways by `TextClassificationDataModule`: `bucket=True` (pools of 50 batches sorted by length, so a
batch holds texts of similar length; batches shuffled) and `bucket=False` (random batches, padded to
their longest text). For each:

- padding: the share of a batch's token slots that are padding, over one epoch (mean of batches);
- loader: real (non-padding) tokens per second that the loader delivers;
- training: real tokens per second of the training step (forward, backward, AdamW) of the two sentiment
  presets' models, built from their config files: the bidirectional LSTM (which packs sequences, so it
  skips padding itself) and the Transformer encoder (which computes over every slot, padding included).

Alternated `--repeats` times; medians. The figures compare the batching, not the tokenizer: both use
the same tokens.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import yaml
from jsonargparse import ArgumentParser

from datamodules.text import TextClassificationDataModule
from experiments.cli import give_facts
from experiments.hardware import machine_summary
from modules.task import TaskModule

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"
PRESETS = {"lstm": "lstm_sentiment", "transformer": "transformer_sentiment"}


def sentiment(bucket: bool) -> TextClassificationDataModule:
    data = TextClassificationDataModule(source="rotten_tomatoes", tokenizer="word", batch_size=64, bucket=bucket)
    data.setup()
    return data


def preset_model(preset: str, data: TextClassificationDataModule) -> TaskModule:
    """The preset's task and core from its config file, given the data's facts (vocabulary, classes, padding
    id) as the command gives them."""
    parser = ArgumentParser()
    parser.add_subclass_arguments(TaskModule, "model")
    config = parser.parse_object({"model": yaml.safe_load((CONFIGS / f"{preset}.yaml").read_text())["model"]})
    give_facts(config.model, data.facts())
    torch.manual_seed(0)
    return parser.instantiate_classes(config).model


def padding_and_loader_rate(data: TextClassificationDataModule) -> tuple[float, float]:
    shares, real, start = [], 0, time.perf_counter()
    for tokens, _ in data.train_dataloader():
        mask = tokens != data.pad_id
        real += int(mask.sum())
        shares.append(1 - float(mask.float().mean()))
    return statistics.fmean(shares), real / (time.perf_counter() - start)


def training_rate(model: TaskModule, data: TextClassificationDataModule, steps: int) -> float:
    """Real tokens per second through `steps` training steps (after two untimed ones)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    batches = iter(data.train_dataloader())
    real, start = 0, 0.0
    for step in range(steps + 2):
        if step == 2:
            real, start = 0, time.perf_counter()
        batch = next(batches)
        loss = model.training_step(batch, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        real += int((batch[0] != data.pad_id).sum())
    return real / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="timed training steps per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(machine_summary())  # the figures below hold for this hardware
    data = {"bucketed": sentiment(bucket=True), "plain": sentiment(bucket=False)}
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeats):
        for batching, module in data.items():
            padding, rate = padding_and_loader_rate(module)
            results.setdefault((batching, "padding"), []).append(padding)
            results.setdefault((batching, "loader"), []).append(rate)
            for name, preset in PRESETS.items():
                rate = training_rate(preset_model(preset, module), module, args.steps)
                results.setdefault((batching, name), []).append(rate)
    median = {key: statistics.median(values) for key, values in results.items()}
    print("Rotten Tomatoes train split, word tokens, batch 64; real (non-padding) tokens per second")
    print(f"{'':10s} {'padding':>8s} {'loader tok/s':>13s} {'LSTM tok/s':>11s} {'Transformer tok/s':>18s}")
    for batching in data:
        print(
            f"{batching:10s} {median[batching, 'padding']:8.1%} {median[batching, 'loader']:13,.0f} "
            f"{median[batching, 'lstm']:11,.0f} {median[batching, 'transformer']:18,.0f}"
        )
    ratios = [median["bucketed", key] / median["plain", key] for key in ("loader", "lstm", "transformer")]
    print("bucketed/plain: loader x{:.2f}, LSTM x{:.2f}, Transformer x{:.2f}".format(*ratios))


if __name__ == "__main__":
    main()
