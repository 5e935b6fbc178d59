"""What pretrained weights bring, over 3 seeds each, beside the references a practitioner tries first.

    python -m benchmarks.pretrained [--parts text images] [--seeds 0 1 2]

- text: `mpnet_sentiment` (the packaged MPNet encoder, frozen, under a trained head) and `minilm_sentiment` (the
  packaged MiniLM encoder fine-tuned) on Rotten Tomatoes, split by movie, each seed a whole run as a user starts
  it, timed; beside naive Bayes and NBSVM fitted on exactly the same split (`benchmarks.baselines`). The bar: a
  mean test accuracy of at least 83%, and at most 15 minutes a seed.
- images: `efficientnet_fashion_mnist` (ImageNet EfficientNet-Lite2 fine-tuned on 600 Fashion-MNIST images,
  1% of the labels, 60 a class, the same images for every seed), against the default CNN trained from scratch
  on the same 600 images (`cnn_fashion_mnist --data.train_labels 600`, given 100 epochs: 400 steps of 128, where
  its preset's 6 epochs would be 24) and logistic regression on their pixels. The bar: fine-tuning beats the CNN's
  mean test accuracy by at least 5 points.

Minutes of training each on 2 CPU cores (about 110 in all), so not part of the test suite. Prints the machine,
one row per run, then the means, standard deviations and verdicts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.baselines import references
from benchmarks.precision import build_preset
from experiments.hardware import machine_summary

TEXT_BAR, MINUTES_BAR, IMAGE_MARGIN = 0.83, 15.0, 0.05
SCRATCH = ["--data.train_labels", "600", "--trainer.max_epochs", "100", "--trainer.max_time", "null"]
PARTS = {
    "text": [("mpnet_sentiment", "mpnet_sentiment", []), ("minilm_sentiment", "minilm_sentiment", [])],
    "images": [
        ("efficientnet_fashion_mnist", "efficientnet_fashion_mnist", []),
        ("cnn_fashion_mnist, 600 labels", "cnn_fashion_mnist", SCRATCH),
    ],
}


def trained(preset: str, extra: list[str], seed: int, root: Path) -> tuple[dict[str, float], float]:
    """A whole run of `preset` in this process (CSV logger); its summary.json and minutes."""
    from experiments.run import main as run

    os.environ.pop("FIRSTLIGHT_RUN_ID", None)
    started = time.perf_counter()
    arguments = ["--config", preset, *extra, "--seed_everything", str(seed), "--run.logger", "csv"]
    if run([*arguments, "--run.root", str(root)]) != 0:
        raise SystemExit(f"experiments.run {' '.join(arguments)} failed")
    minutes = (time.perf_counter() - started) / 60
    (run_dir,) = (root / preset).iterdir()
    return json.loads((run_dir / "summary.json").read_text()), minutes


def spread(values: list[float]) -> str:
    deviation = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f}% ± {100 * deviation:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    print(machine_summary())
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    for part in args.parts:
        accuracies: dict[str, list[float]] = {}
        minutes: dict[str, list[float]] = {}
        for label, preset, extra in PARTS[part]:
            for seed in args.seeds:
                with tempfile.TemporaryDirectory() as root:
                    summary, took = trained(preset, extra, seed, Path(root))
                accuracies.setdefault(label, []).append(summary["test/acc"])
                minutes.setdefault(label, []).append(took)
                print(
                    f"{part:7s} {label:32s} seed {seed}  test/acc {summary['test/acc']:.4f}  ({took:.1f} min)",
                    flush=True,
                )
        print(f"\n{part}: mean test accuracy over seeds {args.seeds}")
        for label, values in accuracies.items():
            print(f"  {label:32s} {spread(values)}  ({max(minutes[label]):.1f} min at most)")
        _, data = build_preset(PARTS[part][0][1])
        for reference, metric, value, count in references(data):
            print(f"  {reference:32s} {100 * value:.2f}% ({metric} on the same {count:,} test examples)")
        if part == "text":
            for label, values in accuracies.items():
                met = statistics.mean(values) >= TEXT_BAR and max(minutes[label]) <= MINUTES_BAR
                verdict = "MET" if met else "MISSED"
                print(f"  {label}: mean >= {100 * TEXT_BAR:.0f}% in <= {MINUTES_BAR:.0f} min a seed: {verdict}")
        else:
            fine_tuned, scratch = (statistics.mean(values) for values in accuracies.values())
            met = fine_tuned - scratch >= IMAGE_MARGIN
            verdict = "MET" if met else "MISSED"
            print(f"  fine-tuned - from scratch: {100 * (fine_tuned - scratch):+.2f} points (bar: +5): {verdict}")
        print(flush=True)


if __name__ == "__main__":
    main()
