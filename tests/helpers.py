"""Helpers shared by the test modules: the command line in a fresh process, the offline W&B files it
writes, image folders on disk, and the no-native-bf16 environment. Test modules import from here, never
from one another."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests import forked

REPO = Path(__file__).resolve().parents[1]
# How long a test waits for a command before calling it hung: a guard against hangs, not a speed limit, so
# generous enough for a slow 2-core CPU without native bf16 (no test may depend on the machine's speed).
HANG_GUARD_S = 1800

# A CPU without native bf16, for real: oneDNN capped at AVX2 (its probe then reports no bf16 and its kernels
# are the AVX2 ones) and ATen's kernels capped alike.
NO_NATIVE_BF16 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
x86_only = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="caps an x86 instruction set")


def fresh_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a user's command, W&B offline unless `extra` says otherwise: no run chosen by
    this process, and its own W&B service (W&B hands its service's address to children in WANDB_SERVICE)."""
    env = os.environ | {"WANDB_MODE": "offline", "PYTHONPATH": str(REPO)} | (extra or {})
    for name in ("FIRSTLIGHT_RUN_ID", "FIRSTLIGHT_RUN_DIR", "FIRSTLIGHT_RESUME_FROM", "WANDB_SERVICE"):
        env.pop(name, None)
    return env


def run_cli(
    *args: str, cwd: Path, timeout: int = HANG_GUARD_S, env: dict[str, str] | None = None, fresh: bool = False
) -> subprocess.CompletedProcess[str]:
    """`python -m experiments.run *args` (see `run_module`)."""
    return run_module("experiments.run", *args, cwd=cwd, timeout=timeout, env=env, fresh=fresh)


def run_module(
    module: str,
    *args: str,
    cwd: Path,
    timeout: int = HANG_GUARD_S,
    env: dict[str, str] | None = None,
    fresh: bool = False,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python -m module *args` in a new process (see `fresh_env`; `env` adds to it), its output captured:
    forked from one that has firstlight imported (`tests.forked`), or a `fresh` interpreter where start-up
    is under test or `env` matters as modules are imported (CPU capabilities, hidden packages, secrets);
    `input` is its stdin."""
    if not fresh:
        return forked.run_module(module, list(args), cwd, fresh_env(env), timeout, input)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        input=input,
        cwd=cwd,
        env=fresh_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=interruptible,
    )


def interruptible() -> None:
    """In a child before it starts: Ctrl-C (SIGINT) as in a terminal. A test suite started in the background
    (`make test &`, nohup) hands its children SIGINT ignored, and the tests that send it would see nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wandb_records(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of the run's offline W&B files, as `wandb leet inspect` reads them."""
    output = subprocess.run(
        ["wandb", "leet", "inspect", "--json", str(run_dir / "wandb")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def wandb_summary(run_dir: Path) -> dict[str, Any]:
    """The offline W&B run's state, name, tags, config and summary."""
    output = subprocess.run(
        ["wandb", "leet", "inspect", "--summary", "--json", str(run_dir / "wandb")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(output)


def logged_tables(run_dir: Path, key: str) -> list[dict[str, Any]]:
    """The W&B tables logged under `key`, read from the offline run's media files, in step order."""
    (files,) = (run_dir / "wandb").glob("offline-run-*/files")
    history = [r["history"]["item"] for r in wandb_records(run_dir) if r["type"] == "history"]
    paths = [item[f"{key}.path"] for item in history if f"{key}.path" in item]
    return [json.loads((files / path).read_text()) for path in paths]


def history(run_dir: Path, metric: str) -> tuple[list[int], list[float]]:
    """The steps and values of every record of `metric` in a run's history.jsonl."""
    records = list(map(json.loads, (run_dir / "history.jsonl").read_text().splitlines()))
    return [r["step"] for r in records if metric in r], [r[metric] for r in records if metric in r]


def final_state(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The weights of a run's last checkpoint and its summary.json."""
    import torch

    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    return checkpoint["state_dict"], json.loads((run_dir / "summary.json").read_text())


def write_images(folder: Path, colors: dict[str, int], count: int, size: tuple[int, int] = (6, 5)) -> None:
    """`count` PNGs of `size` (width, height) per class sub-folder, each class a flat colour (value + index)."""
    for name, value in colors.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            pixels = np.full((size[1], size[0], 3), value + index, dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{index}.png")


def new_inputs(kind: str, state: dict[str, Any], facts: dict[str, Any], folder: Path) -> list[str]:
    """Arguments for `python -m experiments.predict` that a model of this input `kind` takes: files made in
    `folder` (images of its shape, a one-second noise recording) or plain values (texts, letters, numbers).
    `state` is the datamodule's inference state and `facts` its arguments, both from the checkpoint."""
    from datamodules.input_kinds import KINDS

    return KINDS[kind].sample(folder, state, facts)


def runnable(preset: str) -> Any:
    """The preset as a test parameter, skipped where its data needs an install step this machine lacks (the
    set-up makes it): Debian's dataset-fashion-mnist, or espeak-ng for the built-in spoken keywords."""
    import shutil

    import yaml

    from datamodules.image_sources import DEBIAN_FASHION_MNIST
    from experiments.presets import PRESETS_DIR

    config = yaml.safe_load((PRESETS_DIR / f"{preset}.yaml").read_text())
    data = config["data"].get("init_args") or {}
    needs_debian_data = data.get("dataset") == "fashion_mnist" and not DEBIAN_FASHION_MNIST.is_dir()
    spoken = "audio" in config["data"]["class_path"] and data.get("source", "espeak_commands") == "espeak_commands"
    needs_espeak = spoken and shutil.which("espeak-ng") is None
    reason = "needs dataset-fashion-mnist" if needs_debian_data else "needs espeak-ng"
    return pytest.param(preset, marks=pytest.mark.skipif(needs_debian_data or needs_espeak, reason=reason))
