"""Shrink a trained model for CPU inference: its Linear, LSTM and GRU layers to dynamic int8, written beside the run.

    python -m experiments.shrink runs/lstm_sentiment/20261130-101010-abcdef     # -> <run>/model-int8.pt
    python -m experiments.shrink RUN_ID --output lstm-int8.pt                   # a run id under --root, elsewhere

    trained = load_int8("runs/lstm_sentiment/20261130-101010-abcdef/model-int8.pt")
    rows = trained.task.predictions(trained.datamodule.encode_inputs(["a gripping film"]), trained.datamodule)

The run is a run directory, a run id (under --root), a .ckpt file, or a W&B model artifact, as for
`python -m experiments.predict`; its best checkpoint is shrunk (`analysis/quantize.py` says how, and why
with torch's `quantize_dynamic`). The file holds what the checkpoint holds for inference (the task and core
as plain data, the datamodule's arguments and inference state: classes, tokenizer) and the int8 weights, all
as tensors and plain data: it loads with `torch.load(weights_only=True)`, running no code of its own.
`python -m benchmarks.quantization` measures size, speed and accuracy against fp32.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any

import torch

from analysis.quantize import int8_modules, int8_state_dict, load_int8_state_dict, quantize_dynamic_int8
from datamodules.base import DataModule
from experiments.command_line import add_run_arguments, command_parser, ends_cleanly
from experiments.outputs import check_output, commit
from experiments.trained import Trained, import_class, load_checkpoint, load_trained, plain_arguments
from modules.task import TaskModule
from validation import ConfigError

FORMAT = "firstlight-int8-dynamic-v1"
DEFAULT_NAME = "model-int8.pt"


def serialized(state: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def shrunk(trained: Trained) -> dict[str, Any]:
    """What the int8 file holds: the checkpoint's plain-data parts that rebuild the task and its datamodule,
    and the int8 core's weights (`analysis.quantize.int8_state_dict`)."""
    checkpoint = load_checkpoint(trained.checkpoint)
    data_key = type(trained.datamodule).__qualname__
    net = quantize_dynamic_int8(trained.task.net)
    return {
        "format": FORMAT,
        "source_checkpoint": str(trained.checkpoint),
        "torch": str(torch.__version__),
        "hyper_parameters": checkpoint["hyper_parameters"],
        "datamodule_hyper_parameters": checkpoint["datamodule_hyper_parameters"],
        data_key: {"inference": checkpoint[data_key]["inference"]},
        "int8_layers": sorted(int8_modules(net)),
        "state_dict": int8_state_dict(net),
    }


def load_int8(path: str | Path) -> Trained:
    """The model of an int8 file (`python -m experiments.shrink`), its task in eval mode on the CPU, ready for
    `task.predictions(datamodule.encode_inputs(...), datamodule)`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} not found; write it with python -m experiments.shrink <run>")
    payload = load_checkpoint(path)
    if payload.get("format") != FORMAT:
        raise ConfigError(f"{path} is not an int8 model written by python -m experiments.shrink")
    task_hparams, data_hparams = payload["hyper_parameters"], payload["datamodule_hyper_parameters"]
    task_class = import_class(task_hparams["_class_path"], TaskModule, "task")
    data_class = import_class(data_hparams["_class_path"], DataModule, "datamodule")
    datamodule = data_class(**plain_arguments(data_hparams))
    datamodule.load_inference_state(payload[data_class.__qualname__]["inference"])
    task = task_class(**plain_arguments(task_hparams)).eval()
    task.net = quantize_dynamic_int8(task.net)  # the layers' int8 form, its weights loaded next
    load_int8_state_dict(task.net, payload["state_dict"])
    return Trained(task, datamodule, path, None, f"int8 model of {Path(payload['source_checkpoint']).name}")


def default_output(trained: Trained) -> Path:
    if trained.run_dir is not None:
        return trained.run_dir / DEFAULT_NAME
    return trained.checkpoint.with_name(f"{trained.checkpoint.stem}-int8.pt")


def parser() -> argparse.ArgumentParser:
    parser = command_parser("shrink", __doc__)
    add_run_arguments(parser)
    parser.add_argument("--output", type=Path, help=f"where to write the int8 model (default: <run>/{DEFAULT_NAME})")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    return parser


@ends_cleanly
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.output is not None:  # before the model loads; the default output is known once it has
        check_output(args.output, args.overwrite, given=True)
    trained = load_trained(args.run, args.root)
    output = args.output or default_output(trained)
    if args.output is None:
        check_output(output, args.overwrite, given=False)
    payload = shrunk(trained)
    data = serialized(payload)
    commit({output: data})
    fp32 = len(serialized(trained.task.net.state_dict()))
    print(f"model: {trained.checkpoint} ({trained.note})", file=sys.stderr)
    print(
        f"wrote {output}: {len(data) / 1e6:.2f} MB, {len(payload['int8_layers'])} Linear/LSTM/GRU layers in int8 "
        f"(the fp32 weights: {fp32 / 1e6:.2f} MB); load it with experiments.shrink.load_int8"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
