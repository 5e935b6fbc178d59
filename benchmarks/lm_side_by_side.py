"""firstlight's Transformer language model beside a hand-written loop (and nanoGPT), on the same text.

    python -m benchmarks.lm_side_by_side [--steps 2000] [--pair-steps 2000] [--nanogpt DIR] [--skip PART ...]
        [--characters 1115394]

The text is nanoGPT's Shakespeare size taken from firstlight's data: the first 1,115,394 characters of the
complete works (sha256 a089c185...), split by `LanguageModelDataModule` with val_fraction 0.1 and
test_fraction 0.001 (`--characters` takes a shorter prefix: a quicker run, a smaller validation split, no
longer nanoGPT's text; the preset needs about 450,000 for an epoch of its 500-batch validation interval).
The settings are nanoGPT's README configuration for a CPU (`GPTSettings`: 4 layers, 4 heads, width 128,
context 64, batch 12, 2,000 steps, lr 1e-3 with 100 warm-up steps and cosine decay, AdamW with weight decay
0.1, clipping at 1, an evaluation of 480 windows every 250 steps and, as nanoGPT's `train.py` does, a
checkpoint after each evaluation that improves on the best), in fp32. Parts:

1. `pairs`: the cost of a step. `python -m experiments.run` with those settings, as users run it (W&B
   offline, checkpoints, every callback), each of its steps followed by one step of the hand-written loop
   (`benchmarks.gpt_loop`) from a callback, for `--pair-steps` steps. Interleaving step by step puts both
   under the same conditions (a shared 2-core machine drifts by 10-20% from one minute to the next). A
   firstlight step runs from the end of one hand-written step to the next batch's end: loading, the step,
   hooks, loggers, and its validation when one falls due; a hand-written step includes its evaluations.
   Printed: the median step, the mean step (validation included) and tokens per second of both, and ratios.
2. `hand`: the hand-written loop alone for `--steps` steps; its wall time W is the budget of the rest.
3. `firstlight`: `experiments.run` with the same settings and `--trainer.max_time` W.
4. `preset`: the `transformer_shakespeare` preset itself on this text, `--trainer.max_time` W.
5. `nanogpt` (with `--nanogpt DIR`, a clone of karpathy/nanoGPT): its `train.py` with the README's CPU
   command on the same tokens; its own time, not W.

For 2-4 the validation loss is that of the final model over the whole validation split (nanoGPT reports its
estimate from 20 random batches of 12 at its last evaluation). Everything runs one after the other in this
process (nanoGPT in a child), so nothing else competes for the cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import pickle
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

from benchmarks.gpt_loop import GPTLoop, GPTSettings, validation_loss
from benchmarks.overhead import Interleaved
from datamodules.language_model import LanguageModelDataModule
from datamodules.text_sources import shakespeare
from experiments.hardware import machine_summary
from experiments.run import main as run

CHARACTERS = 1_115_394  # nanoGPT's tiny Shakespeare is this long
VAL_FRACTION, TEST_FRACTION = 0.1, 0.001
SETTINGS = GPTSettings()
PARTS = ("pairs", "hand", "firstlight", "preset", "nanogpt")


def write_text(directory: Path, characters: int = CHARACTERS) -> Path:
    path = directory / f"shakespeare_{characters}.txt"
    path.write_text(shakespeare()[:characters], encoding="utf-8")
    return path


def text_data(source: Path) -> LanguageModelDataModule:
    data = LanguageModelDataModule(
        source=str(source),
        context_length=SETTINGS.context_length,
        batch_size=SETTINGS.batch_size,
        val_fraction=VAL_FRACTION,
        test_fraction=TEST_FRACTION,
    )
    return data.ready()  # type: ignore[return-value]


class HandSteps(Interleaved):
    """After every firstlight training batch, one step of the hand-written language-model loop; both steps'
    seconds are written as JSON `{"firstlight": [...], "hand": [...]}` to `path` when fitting ends."""

    def __init__(self, text: str, path: str) -> None:
        self.text = text
        super().__init__(steps=SETTINGS.max_steps, path=path)

    def hand_written_loop(self, steps: int) -> GPTLoop:
        return GPTLoop(text_data(Path(self.text)), SETTINGS, checkpoint=Path(self.text).with_name("pairs-ckpt.pt"))

    def on_train_end(self, trainer: L.Trainer, *args: Any) -> None:
        """The validation after the last step (and what comes with it) belongs to that step."""
        self.times["firstlight"][-1] += time.perf_counter() - self.resumed


class FinalValidation(L.Callback):
    """When training ends: the model's loss over the whole validation split, the steps taken and the
    seconds training took, written as JSON to `path`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.started = 0.0

    def on_train_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.started = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = time.perf_counter() - self.started
        data = trainer.datamodule  # type: ignore[attr-defined]
        loss = validation_loss(pl_module.net, data.splits["val"], 2 * SETTINGS.batch_size)  # type: ignore[arg-type]
        tokens = trainer.global_step * data.batch_size * data.hparams["context_length"]
        out = {"val_loss": loss, "steps": trainer.global_step, "seconds": seconds, "tokens": tokens}
        Path(self.path).write_text(json.dumps(out))


def firstlight(args: list[str], source: Path, root: Path, callback: str, **options: Any) -> dict[str, Any]:
    """`experiments.run` with `args` on the text, plus one of this module's callbacks; its JSON output."""
    path = root / f"out-{time.perf_counter_ns()}.json"
    args = [*args, f"--data.source={source}", f"--data.val_fraction={VAL_FRACTION}"]
    args += [f"--data.test_fraction={TEST_FRACTION}"]
    args += ["--run.test=false", f"--run.root={root}", f"--trainer.callbacks+=benchmarks.lm_side_by_side.{callback}"]
    args += [f"--trainer.callbacks.{k}={v}" for k, v in {**options, "path": path}.items()]
    os.environ.pop("FIRSTLIGHT_RUN_ID", None)
    if run(args) != 0:
        raise SystemExit(f"experiments.run failed with {args}")
    return json.loads(path.read_text())


def pairs(source: Path, root: Path, steps: int) -> None:
    args = [*SETTINGS.cli_args(), f"--trainer.max_steps={steps}", "--trainer.precision=32-true"]
    times = firstlight(args, source, root, "HandSteps", text=source)
    ours, hand = times["firstlight"][10:], times["hand"][10:]  # past the first steps' warm-up
    tokens = SETTINGS.batch_size * SETTINGS.context_length
    print(f"step cost over {len(ours)} paired steps (validation every {SETTINGS.eval_interval} included in means):")
    for name, values in (("hand-written", hand), ("firstlight", ours)):
        median, mean = statistics.median(values), statistics.fmean(values)
        print(f"  {name:12s} median {median * 1e3:6.1f} ms  mean {mean * 1e3:6.1f} ms  {tokens / mean:7.0f} tokens/s")
    median_ratio = statistics.median(ours) / statistics.median(hand)
    mean_ratio = statistics.fmean(ours) / statistics.fmean(hand)
    print(f"step ratio firstlight/hand-written: median {median_ratio:.3f}  mean {mean_ratio:.3f}")


def report(name: str, seconds: float, steps: int, tokens: int, val_loss: float) -> None:
    print(
        f"  {name:27s} {seconds:6.1f} s  {steps:5d} steps  {1e3 * seconds / steps:6.1f} ms/step  "
        f"{tokens / seconds:6.0f} tokens/s  val loss {val_loss:.4f}"
    )


def nanogpt(clone: Path, data: LanguageModelDataModule, scratch: Path) -> None:
    """nanoGPT's train.py with the README's CPU command, on firstlight's train/val tokens (uint16 files)."""
    work = scratch / "nanogpt"
    (work / "data" / "firstlight").mkdir(parents=True)
    for name in ("train", "val"):
        data.ids[name].numpy().astype(np.uint16).tofile(work / "data" / "firstlight" / f"{name}.bin")
    with open(work / "data" / "firstlight" / "meta.pkl", "wb") as meta:
        pickle.dump({"vocab_size": data.vocab_size}, meta)
    for name in ("train.py", "model.py", "configurator.py", "config"):
        (work / name).symlink_to(clone.resolve() / name)
    s = SETTINGS
    command = [sys.executable, "train.py", "config/train_shakespeare_char.py", "--dataset=firstlight"]
    command += ["--device=cpu", "--compile=False", "--eval_iters=20", "--log_interval=1"]
    command += [f"--block_size={s.context_length}", f"--batch_size={s.batch_size}", f"--n_layer={s.num_layers}"]
    command += [f"--n_head={s.num_heads}", f"--n_embd={s.dim}", f"--max_iters={s.max_steps}"]
    command += [f"--lr_decay_iters={s.max_steps}", f"--dropout={s.dropout}"]
    started = time.perf_counter()
    output = subprocess.run(command, cwd=work, capture_output=True, text=True, check=True).stdout
    seconds = time.perf_counter() - started
    losses = re.findall(r"step (\d+): train loss [\d.]+, val loss ([\d.]+)", output)
    step, val = losses[-1]
    tokens = int(step) * s.batch_size * s.context_length
    report("nanoGPT (its own estimate)", seconds, int(step), tokens, float(val))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=SETTINGS.max_steps, help="steps of the hand-written loop")
    parser.add_argument("--pair-steps", type=int, default=SETTINGS.max_steps, help="paired steps for the step cost")
    parser.add_argument("--nanogpt", type=Path, help="a clone of karpathy/nanoGPT, to run it as well")
    parser.add_argument("--skip", nargs="*", default=[], choices=PARTS, help="parts to leave out")
    parser.add_argument("--characters", type=int, default=CHARACTERS, help="the text: this many characters")
    args = parser.parse_args()
    if not 10_000 <= args.characters <= CHARACTERS:
        parser.error(f"--characters must be in [10000, {CHARACTERS}], got {args.characters}")
    print(machine_summary())  # the figures below hold for this hardware
    os.environ.setdefault("WANDB_MODE", "offline")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as directory:
        scratch = Path(directory)
        source = write_text(scratch, args.characters)
        data = text_data(source)
        if "pairs" not in args.skip:
            pairs(source, scratch, args.pair_steps)
        budget_args: list[str] = []
        print("same text; validation loss of the final model over the whole validation split:")
        if "hand" not in args.skip:
            loop = GPTLoop(data, replace(SETTINGS, max_steps=args.steps), checkpoint=scratch / "hand-ckpt.pt")
            budget = loop.train()
            tokens = loop.steps * SETTINGS.batch_size * SETTINGS.context_length
            report("hand-written loop", budget, loop.steps, tokens, loop.evaluate())
            minutes, seconds = divmod(math.ceil(budget), 60)
            budget_args = [f"--trainer.max_time=00:00:{minutes:02d}:{seconds:02d}"]
        runs = {
            "firstlight": ("firstlight, same settings", [*SETTINGS.cli_args(), "--trainer.precision=32-true"]),
            "preset": ("transformer_shakespeare", ["--config", "transformer_shakespeare"]),
        }
        for part, (name, options) in runs.items():
            if part not in args.skip:
                steps = [f"--trainer.max_steps={args.steps}"] if part == "firstlight" else []
                out = firstlight([*options, *steps, *budget_args], source, scratch, "FinalValidation")
                report(name, out["seconds"], out["steps"], out["tokens"], out["val_loss"])
        if args.nanogpt:
            nanogpt(args.nanogpt, data, scratch)


if __name__ == "__main__":
    main()
