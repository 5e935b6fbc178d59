"""Export a trained model's network to ONNX, TorchScript or a torch.export program, checked against PyTorch.

    python -m experiments.export runs/cnn_digits/RUN                        # -> RUN/export/model.onnx
    python -m experiments.export RUN_ID --format torchscript                # -> RUN/export/model.torchscript.pt
    python -m experiments.export RUN_ID --format exported-program           # -> RUN/export/model.pt2
    python -m experiments.export RUN_ID --output cnn.onnx --tolerance 1e-5 --wandb false

What is exported is the task's core network (`task.net`), in eval mode and fp32, with a dynamic batch
dimension, and a dynamic length for token ids and series windows: class logits for classifiers, next-token
logits for language models, the forecast for forecasters, and for seq2seq models the teacher-forced forward
(source, target_in) -> logits; greedy decoding runs outside the graph (feed it the tokens written so far as
target_in, take the last position's argmax, repeat until <eos>). Recurrences over padded sequences export
without packing (experiments/exportable.py), with the results of packing.

The exported model is then loaded back and run (ONNX in onnxruntime) on the first validation batch of the
run's data, rebuilt here when it is here and the same (else on inputs made from the data's facts, which it
says), and on those inputs at two other sizes (about half the batch at three quarters of the length; one
input of one position), and compared with the PyTorch model: its max abs difference is printed, and above
--tolerance the command exits 1 and keeps nothing. The file is logged as a W&B artifact
(type model-export) into the run's own W&B run, offline when the run was (`wandb sync` uploads it later).
The run is a run directory, a run id (under --root), a .ckpt file (with --output outside a run directory),
or a W&B model artifact.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from experiments.command_line import add_run_arguments, command_parser, ends_cleanly
from experiments.exportable import Signature, exportable, other_shapes, resized, signature, synthetic_inputs
from experiments.message_filters import muted
from experiments.outputs import check_output, commit
from experiments.trained import Trained, load_trained, rebuilt_data
from validation import ConfigError, check_range, first_line, require

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "exported-program": ".pt2"}
SUFFIXES = {"onnx": (".onnx",), "torchscript": (".pt", ".pth"), "exported-program": (".pt2",)}
DEFAULT_TOLERANCE = 1e-4
ARTIFACT_TYPE = "model-export"
ONNX = "ONNX export (--format onnx)"  # what needs the export extra

Inputs = tuple[torch.Tensor, ...]


def parser() -> argparse.ArgumentParser:
    parser = command_parser("export", __doc__)
    add_run_arguments(parser)
    parser.add_argument("--format", choices=list(FORMATS), default="onnx", help="what to export to (default: onnx)")
    parser.add_argument(
        "--output", type=Path, help="the exported file (default: <run dir>/export/model.onnx, .torchscript.pt, .pt2)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help=f"largest max abs difference from PyTorch's outputs accepted (default: {DEFAULT_TOLERANCE:g})",
    )
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="check on inputs made from the data's facts, without rebuilding the run's validation data",
    )
    parser.add_argument(
        "--wandb", choices=["true", "false"], default="true", help="log the file as a W&B artifact (default: true)"
    )
    return parser


def output_path(args: argparse.Namespace, trained: Trained) -> Path:
    """Where the exported file goes; refused if it exists (without --overwrite) or cannot be written there."""
    if args.output is None:
        if trained.run_dir is None:
            raise ConfigError(f"{args.run} is outside a run directory; give --output for the exported file")
        return trained.run_dir / "export" / f"model{FORMATS[args.format]}"
    path: Path = args.output
    if not path.name.endswith(SUFFIXES[args.format]):
        raise ConfigError(f"--output {path}: {args.format} files end in {' or '.join(SUFFIXES[args.format])}")
    return path


# The inputs the check runs on


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Rebuilding the data must fetch nothing: what is not here already is not here."""
    before = os.environ.get("FIRSTLIGHT_OFFLINE")
    os.environ["FIRSTLIGHT_OFFLINE"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("FIRSTLIGHT_OFFLINE", None)
        else:
            os.environ["FIRSTLIGHT_OFFLINE"] = before


def validation_inputs(trained: Trained) -> Inputs:
    """The model inputs of the first validation batch of the run's data, rebuilt from the checkpoint's data
    arguments (offline) and prepared as in evaluation with the checkpoint's statistics. Raises ConfigError
    (or OSError) where the data is not here, or differs from the run's (another tokenizer or statistics)."""
    with offline():
        fresh = rebuilt_data(trained)
    batch = next(iter(fresh.val_dataloader()))
    batch = trained.datamodule.on_after_batch_transfer(batch, 0)  # in-memory data: images, spectrograms made here
    return tuple(tensor.contiguous() for tensor in trained.task.model_inputs(batch))


def check_inputs(trained: Trained, synthetic: bool) -> tuple[Inputs, str]:
    """(inputs, what they are): the validation batch when the data is here, else made from the facts."""
    reason = "--synthetic"
    if not synthetic:
        try:
            return validation_inputs(trained), "the first validation batch"
        except (ConfigError, OSError, ImportError) as error:
            reason = f"no validation data here: {first_line(error)}"
    return synthetic_inputs(trained.task, trained.datamodule), f"inputs made from the data's facts [{reason}]"


def traceable(inputs: Inputs, sig: Signature) -> bool:
    """Every dynamic dimension at least 2: torch.export fixes dimensions of size 0 or 1 at that size."""
    return all(tensor.shape[axis] >= 2 for tensor, axes in zip(inputs, sig.dynamic, strict=True) for axis in axes)


# Export and run, per format


@dataclass
class Exported:
    path: Path
    run: Callable[[Inputs], np.ndarray]  # the exported model, loaded back from its file
    opset: int | None = None
    minimums: dict[str, int] = field(default_factory=dict)  # dynamic dimensions that take no size below these


def export_onnx(net: torch.nn.Module, example: Inputs, sig: Signature, path: Path) -> Exported:
    onnxruntime = require("onnxruntime", ONNX)
    program = torch.onnx.export(
        exportable(net),
        example,
        dynamo=True,
        dynamic_shapes=sig.dynamic_shapes(),
        input_names=list(sig.inputs),
        output_names=[sig.output],
        verbose=False,
    )
    assert program is not None  # the dynamo exporter returns its program
    program.save(str(path), external_data=False)
    opset = int(program.model.opset_imports.get("", 0)) or None  # the default domain's: ONNX's own operators
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [node.name for node in session.get_inputs()]

    def run(inputs: Inputs) -> np.ndarray:
        return session.run(None, {name: tensor.numpy() for name, tensor in zip(names, inputs, strict=True)})[0]

    return Exported(path, run, opset)


def export_torchscript(net: torch.nn.Module, example: Inputs, sig: Signature, path: Path) -> Exported:
    # Traced (packing included: the tracer records it for any lengths); the check at other shapes proves that
    # the trace did not fix a size.
    traced = torch.jit.trace(net.eval(), example, check_trace=False)
    torch.jit.save(traced, str(path))
    loaded = torch.jit.load(str(path), map_location="cpu")

    def run(inputs: Inputs) -> np.ndarray:
        with torch.no_grad():
            return loaded(*inputs).numpy()

    return Exported(path, run)


def export_program(net: torch.nn.Module, example: Inputs, sig: Signature, path: Path) -> Exported:
    """torch.export, as the ONNX exporter calls it: size-oblivious (a dynamic size is not assumed to be 1 where
    it broadcasts), and a check the trace needs (a size is not 1, for a kernel's memory layout) kept as a
    runtime assertion of the program instead of failing the export. The program then refuses that size: the
    sizes it refuses are found by running it (`minimums`)."""
    with torch.fx.experimental._config.patch(backed_size_oblivious=True):  # type: ignore[attr-defined]
        program = torch.export.export(
            exportable(net),
            example,
            dynamic_shapes=sig.dynamic_shapes(),
            prefer_deferred_runtime_asserts_over_guards=True,
        )
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()

    def run(inputs: Inputs) -> np.ndarray:
        with torch.no_grad():
            return loaded(*inputs).numpy()

    minimums = {}
    for name in dict.fromkeys(name for axes in sig.dynamic for name in axes.values()):
        try:
            run(resized(example, sig, {name: 1}))
        except RuntimeError as error:
            if "Runtime assertion failed" not in str(error):
                raise
            minimums[name] = 2
    return Exported(path, run, minimums=minimums)


EXPORTERS = {"onnx": export_onnx, "torchscript": export_torchscript, "exported-program": export_program}


def max_abs_difference(net: torch.nn.Module, exported: Exported, input_sets: list[Inputs]) -> float:
    """The largest |exported - PyTorch| over every output of every input set (inf where only one is NaN)."""
    worst = 0.0
    for inputs in input_sets:
        with torch.no_grad():
            expected = net(*inputs).float().numpy()
        got = np.asarray(exported.run(inputs), dtype=np.float32)
        if got.shape != expected.shape:
            return math.inf
        difference = np.abs(got - expected)
        difference[np.isnan(got) & np.isnan(expected)] = 0.0
        worst = max(worst, float(np.nan_to_num(difference, nan=math.inf).max(initial=0.0)))
    return worst


def exporters_muted() -> contextlib.AbstractContextManager[None]:
    """The exporters' warnings (tracer, deprecations), progress lines and torch's notes (torch.export.load's
    on symbols of its runtime checks) stay out of the output; their errors are reported after the block."""
    return muted("torch")


def shape_text(inputs: Inputs, sig: Signature) -> str:
    """e.g. `source 256x5, target_in 256x5`."""
    return ", ".join(f"{name} {'x'.join(map(str, t.shape))}" for name, t in zip(sig.inputs, inputs, strict=True))


# W&B


def wandb_run_id(run_dir: Path) -> str | None:
    """The run's W&B id, from the W&B folder training wrote in the run directory (None: it logged none)."""
    folders = sorted((run_dir / "wandb").glob("*run-*"))
    for folder in folders:
        match = re.fullmatch(r"(?:offline-)?run-\d{8}_\d{6}-(.+)", folder.name)
        if match:
            return match.group(1)
    return None


def log_artifact(run_dir: Path, path: Path, fmt: str, metadata: dict[str, Any]) -> str:
    """Log `path` as an artifact into the run's own W&B run (resumed; offline where W&B is), returning how."""
    import wandb

    from experiments.tracking import OFFLINE_RUN, wandb_mode

    run_id = wandb_run_id(run_dir)
    if run_id is None:
        return "not logged to W&B: the run logged nothing to W&B (--run.logger was not wandb)"
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    options = config.get("run") or {}
    mode = wandb_mode(OFFLINE_RUN.replace("<run dir>", str(run_dir)))
    name = f"export-{fmt}-{run_id}"
    with muted("wandb"):  # its notes on resuming and syncing; the line returned says what became of the file
        run = wandb.init(
            id=run_id,
            project=options.get("project") or "firstlight",
            group=options.get("group") or run_dir.parent.name,
            dir=str(run_dir),
            mode=mode,  # type: ignore[arg-type]
            resume="allow",
            job_type="export",
            settings=wandb.Settings(silent=True),
        )
        artifact = wandb.Artifact(name, type=ARTIFACT_TYPE, metadata=metadata)
        artifact.add_file(str(path))
        run.log_artifact(artifact)
        run.finish()
    where = f"offline; upload it with `wandb sync {run_dir}/wandb/offline-run-*`" if mode == "offline" else "online"
    return f"logged to W&B run {run_id} as artifact {name} (type {ARTIFACT_TYPE}; {where})"


@dataclass
class Checked:
    exported: Exported
    inputs: list[Inputs]  # the validation batch (or inputs from the facts), then at other sizes
    difference: float


def export_and_check(
    net: torch.nn.Module, fmt: str, inputs: Inputs, example: Inputs, sig: Signature, path: Path
) -> Checked:
    """Export to `path`, load it back, and compare it with `net` on `inputs` and at other sizes."""
    with exporters_muted():
        exported = EXPORTERS[fmt](net, example, sig, path)
        input_sets = [inputs, *other_shapes(inputs, sig, exported.minimums)]
        return Checked(exported, input_sets, max_abs_difference(net, exported, input_sets))


@ends_cleanly
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    check_range("tolerance", args.tolerance, 0.0)
    if args.format == "onnx":  # torch.onnx.export imports the first two itself
        require("onnx", ONNX)
        require("onnxscript", ONNX)
        require("onnxruntime", ONNX)
    trained = load_trained(args.run, args.root)
    output = output_path(args, trained)
    check_output(output, args.overwrite, given=args.output is not None, create=args.output is None)
    trained.task.float()
    net = trained.task.net.eval()
    sig = signature(trained.task, trained.datamodule)
    print(f"model: {trained.checkpoint} ({trained.note})", file=sys.stderr)
    inputs, source = check_inputs(trained, args.synthetic)
    example = inputs if traceable(inputs, sig) else synthetic_inputs(trained.task, trained.datamodule)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="firstlight-export-") as staging:  # nothing written until checked
        staged = Path(staging) / output.name
        try:
            checked = export_and_check(net, args.format, inputs, example, sig, staged)
        except Exception as error:  # the exporters raise many kinds; their first line names the cause
            print(
                f"error: {type(net).__name__} cannot be exported to {args.format}: {first_line(error)}", file=sys.stderr
            )
            return 1
        exported, difference = checked.exported, checked.difference
        print(f"exported {type(net).__name__}: {sig.describe(tuple(t.shape for t in example))} -> {sig.output}")
        sizes = "; ".join(shape_text(other, sig) for other in checked.inputs[1:])
        print(f"checked on {source} ({shape_text(inputs, sig)}) and at other sizes ({sizes})")
        if exported.minimums:
            least = ", ".join(f"{name} >= {size}" for name, size in exported.minimums.items())
            print(f"note: the program refuses size 1 of these dimensions (a runtime check torch.export added): {least}")
        print(f"max abs difference {difference:.3g} (tolerance {args.tolerance:g})")
        if not difference <= args.tolerance:
            message = f"the exported model differs from PyTorch's by more than {args.tolerance:g}; nothing kept"
            print(f"error: {message}", file=sys.stderr)
            return 1
        commit({output: staged})  # (the run's export/ folder made if need be)
    opset = f", ONNX opset {exported.opset}" if exported.opset else ""
    print(f"wrote {output} ({output.stat().st_size / 2**20:.1f} MiB{opset}; {time.monotonic() - started:.0f} s)")
    if sig.usage:
        print(f"note: {sig.usage}")
    if args.wandb == "true" and trained.run_dir is not None:
        metadata = {
            "format": args.format,
            "max_abs_difference": difference,
            "tolerance": args.tolerance,
            "opset": exported.opset,
            "inputs": sig.describe(tuple(t.shape for t in example)),
            "output": sig.output,
            "checked_on": source,
            "checkpoint": trained.checkpoint.name,
            "torch": torch.__version__,
        }
        try:
            print(log_artifact(trained.run_dir, output, args.format, metadata))
        except Exception as error:  # W&B's many errors: the export itself stands
            print(f"warning: not logged to W&B ({first_line(error)}); the exported file is kept", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
