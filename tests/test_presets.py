"""Every preset runs end to end through the CLI (shortened) and reports its task's metrics; sequence tasks
log their media."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from experiments.hardware import resolve_precision
from experiments.metric_direction import higher_is_better
from experiments.predict import main as predict
from experiments.presets import PRESETS_DIR, preset_names
from experiments.run import main
from tests.helpers import logged_tables, new_inputs, runnable, wandb_records
from tests.preset_runs import SHORT, PresetRuns


def preset_monitor(preset: str) -> str:
    return yaml.safe_load((PRESETS_DIR / f"{preset}.yaml").read_text())["checkpoint"]["monitor"]


# Presets whose short run takes over 5 s on a 2-core CPU (a tokenizer to train, greedy decoding, spectrograms, a
# larger model) run with the slow tests; the fast suite runs the rest.
LONG_PRESETS = {
    "gru_deu_eng",
    "transformer_deu_eng",
    "cnn_speech_commands",
    "lstm_speech_commands",
    "transformer_speech_commands",
    "vit_fashion_mnist",
    "lstm_shakespeare",
    "transformer_shakespeare",
    "transformer_reverse",
    "minilm_sentiment",  # a pretrained 22.7 M-parameter encoder
    "mpnet_sentiment",  # a pretrained 109 M-parameter encoder
    "efficientnet_fashion_mnist",  # a pretrained backbone at 96 px
}


def preset_param(name: str) -> Any:
    """`runnable(name)`, marked slow if the preset is in LONG_PRESETS."""
    param = runnable(name)
    return pytest.param(*param.values, marks=[*param.marks, *([pytest.mark.slow] if name in LONG_PRESETS else [])])


@pytest.mark.parametrize("preset", [preset_param(name) for name in preset_names()])
def test_every_preset_runs_here_and_reports_its_metrics(preset: str, preset_runs: PresetRuns, in_tmp: Path) -> None:
    """Discovered from experiments/configs/: a preset that cannot run on the machine running the tests, in
    the precision `auto` resolves for it (bf16 where the CPU has it, else fp32), fails here. The run is the
    session's short run of the preset (`tests.preset_runs`), which the export tests export as well."""
    run_dir = preset_runs(preset)
    summary = json.loads((run_dir / "summary.json").read_text())
    monitor = preset_monitor(preset)  # e.g. val/acc, and its test counterpart test/acc
    for metric in (monitor, monitor.replace("val/", "test/"), "val/loss", "test/loss"):
        assert math.isfinite(summary[metric]) and summary[metric] >= 0, metric
    for metric in summary:  # compare and sweeps know which way is better for every metric a preset reports
        if "/" in metric and not metric.startswith("lr-"):
            higher_is_better(metric)
    if "test/bpc" in summary:  # characters: bits per character are nats per token / ln 2
        assert summary["test/bpc"] == pytest.approx(summary["test/loss"] / 0.6931471805599453, rel=1e-4)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    machine = resolve_precision("auto", "auto").precision  # type: ignore[union-attr]
    # bf16-mixed where the CPU has it, unless measured slower for this network (tests/test_precision_probe.py)
    assert config["trainer"]["precision"] in ({machine, "32-true"} if machine == "bf16-mixed" else {machine})
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    core = checkpoint["hyper_parameters"]["net"]["init_args"]  # the core, as plain data
    tokenized = "vocab_size" in core
    assert (run_dir / "tokenizer.json").is_file() == tokenized
    if tokenized:
        assert core["vocab_size"] > 4  # given by the data: the trained tokenizer's
    # Every fact of the data reaches the task or its core (the checkpoint rebuilds the model), none the config.
    module_name, _, class_name = config["data"]["class_path"].rpartition(".")
    facts = getattr(importlib.import_module(module_name), class_name).model_facts
    task = checkpoint["hyper_parameters"]
    model_args = config["model"]["init_args"]
    for fact in facts:
        assert fact in task or fact in core, fact
        assert fact not in model_args and fact not in model_args["net"]["init_args"], fact

    # The run predicts on new inputs of its kind, from its checkpoint alone (experiments.predict).
    kind = getattr(importlib.import_module(module_name), class_name).input_kind
    state = checkpoint[class_name]["inference"]
    inputs = new_inputs(kind, state, checkpoint["datamodule_hyper_parameters"], in_tmp)
    task_module, _, task_name = config["model"]["class_path"].rpartition(".")
    taken = getattr(importlib.import_module(task_module), task_name).prediction_options
    options = ["--max_new_tokens", "5"] if "max_new_tokens" in taken else []  # short generations
    assert predict([str(run_dir), *inputs, "--output", "answers.jsonl", *options]) == 0
    answers = [json.loads(line) for line in (in_tmp / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == (1 if kind == "series" else len(inputs))
    for answer in answers:
        if "probabilities" in answer:
            assert answer["prediction"] in state["classes"] and 0 <= answer["confidence"] <= 1
            assert sum(answer["probabilities"].values()) == pytest.approx(1, abs=1e-3)
        elif "forecast" in answer:
            assert len(answer["forecast"]) == checkpoint["datamodule_hyper_parameters"]["horizon"]
        elif "generated" in answer or "output" in answer:
            assert isinstance(answer.get("generated", answer.get("output")), str)
        else:  # a task's own answers: plain values, none of them empty
            assert len(answer) > 1 and all(value not in (None, "", []) for value in answer.values()), answer


@pytest.mark.slow
@pytest.mark.parametrize(
    ("preset", "columns"),
    [
        ("transformer_sentiment", ["input", "true", "predicted", "confidence"]),
        ("lstm_shakespeare", ["prompt", "generated"]),
        ("transformer_reverse", ["source", "target", "output", "correct"]),
    ],
)
def test_sample_tables_of_sequence_tasks(preset: str, columns: list[str], in_tmp: Path) -> None:
    forced = "--samples.max_overhead=1"  # logged whatever the machine's speed, not on a time budget
    assert main(["--config", preset, *SHORT, "--run.logger=wandb", "--samples.num_samples=4", forced]) == 0
    (run_dir,) = (in_tmp / "runs" / preset).iterdir()
    (table,) = logged_tables(run_dir, "val/samples")
    assert table["columns"] == columns and 1 <= len(table["data"]) <= 4
    assert all(isinstance(row[0], str) and row[0] for row in table["data"])  # decoded text, not ids
    if preset == "lstm_shakespeare":
        # 200 generated tokens; an untrained model may emit special tokens, which decode to nothing
        assert all(0 < len(row[1]) <= 200 for row in table["data"])


@pytest.mark.slow
@pytest.mark.parametrize(("preset", "layers"), [("transformer_sentiment", 2), ("transformer_reverse", 2 + 2 * 2)])
def test_attention_maps_are_logged_per_layer(preset: str, layers: int, in_tmp: Path) -> None:
    from PIL import Image

    forced = ["--attention.every_n_epochs=1", "--attention.max_overhead=1"]
    assert main(["--config", preset, *SHORT, "--run.logger=wandb", *forced]) == 0
    (run_dir,) = (in_tmp / "runs" / preset).iterdir()
    history = [r["history"]["item"] for r in wandb_records(run_dir) if r["type"] == "history"]
    (logged,) = [item for item in history if any(key.startswith("attention/") for key in item)]
    paths = [value for key, value in logged.items() if key.startswith("attention/") and key.endswith(".path")]
    assert len(paths) == layers  # encoder self-attention; decoder self- and cross-attention
    (files,) = (run_dir / "wandb").glob("offline-run-*/files")
    with Image.open(files / paths[0]) as image:
        assert image.width > 4 * image.height / 2  # four heads side by side
