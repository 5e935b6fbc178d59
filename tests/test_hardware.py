"""Precision chosen by what the machine can do, on this machine and with its bf16 capability switched off.

`ONEDNN_MAX_CPU_ISA=AVX2` caps oneDNN at AVX2, as on a CPU without native bf16: its probe then reports no
bf16 and its kernels are the AVX2 ones (bf16 emulated, no bf16 LSTM), so these runs take the real path
of such a CPU, not a mock of it.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from experiments.hardware import (
    choose_precision,
    cpu_has_native_bf16,
    cpu_name,
    device_kind,
    machine_summary,
    resolve_precision,
)
from tests.helpers import NO_NATIVE_BF16, fresh_env, run_cli, wandb_summary, x86_only


@pytest.mark.parametrize(
    ("device", "native", "precision"),
    [
        ("cuda", True, "bf16-mixed"),
        ("cuda", False, "16-mixed"),  # before Ampere: fp16 with loss scaling
        ("cpu", True, "bf16-mixed"),
        ("cpu", False, "32-true"),
        ("mps", True, "32-true"),
    ],
)
def test_auto_precision_follows_the_device_and_its_bf16(device: str, native: bool, precision: str) -> None:
    choice = choose_precision(device, native)
    assert choice.precision == precision
    assert str(choice).startswith(f"precision: {precision} (") and choice.reason


def test_a_given_precision_is_kept_and_auto_resolves_for_this_cpu() -> None:
    assert resolve_precision("bf16-mixed", "cpu") is None and resolve_precision("32-true", "auto") is None
    for requested in ("auto", None):
        choice = resolve_precision(requested, "cpu")
        assert choice is not None
        assert choice.precision == ("bf16-mixed" if cpu_has_native_bf16() else "32-true")
        assert cpu_name() in choice.reason


def test_accelerator_settings_name_their_device() -> None:
    assert device_kind("cpu") == "cpu" and device_kind("gpu") == "cuda" and device_kind("cuda") == "cuda"
    assert device_kind("mps") == "mps"
    assert device_kind({"class_path": "lightning.pytorch.accelerators.CUDAAccelerator"}) == "cuda"


def test_the_machine_summary_names_the_cpu_and_its_bf16() -> None:
    summary = machine_summary()
    assert cpu_name() in summary and ("no native bf16" in summary) != cpu_has_native_bf16()


def probe_in_subprocess(env: dict[str, str]) -> bool:
    code = "from experiments.hardware import cpu_has_native_bf16 as p; print(p())"
    done = subprocess.run([sys.executable, "-c", code], env=fresh_env(env), capture_output=True, text=True, check=True)
    return done.stdout.strip() == "True"


@x86_only
def test_capping_onednn_at_avx2_switches_the_bf16_probe_off() -> None:
    assert probe_in_subprocess(NO_NATIVE_BF16) is False
    assert probe_in_subprocess({}) is cpu_has_native_bf16()


@pytest.mark.slow
@pytest.mark.parametrize("native", [True, False], ids=["this-cpu", "no-native-bf16"])
def test_the_run_prints_and_records_the_precision_it_chose(native: bool, tmp_path: Path) -> None:
    if not native and platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("caps an x86 instruction set")
    env = {} if native else NO_NATIVE_BF16
    # 10 epochs of 20 batches: long enough to measure the network's speed-up (MIN_RUN_STEPS)
    args = ("--config", "cnn_digits", "--trainer.max_epochs", "10", "--trainer.accelerator", "cpu")
    result = run_cli(*args, cwd=tmp_path, env=env, fresh=True)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stderr.splitlines() if line.startswith("precision: "))
    if native and cpu_has_native_bf16():  # bf16-mixed, unless measured no faster for this network
        chosen = "bf16-mixed" if line.startswith("precision: bf16-mixed") else "32-true"
        measured = "trains x" if chosen == "bf16-mixed" else "but CNNClassifier trains in bf16-mixed x"
        assert line.startswith(f"precision: {chosen} (this CPU, {cpu_name()}, has native bf16") and measured in line
    else:
        chosen = "32-true"
        assert line == f"precision: 32-true (this CPU, {cpu_name()}, has no native bf16)"
    (run_dir,) = (tmp_path / "runs" / "cnn_digits").iterdir()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]["precision"] == chosen
    assert wandb_summary(run_dir)["config"]["trainer"]["precision"] == chosen
    assert json.loads((run_dir / "summary.json").read_text())["test/acc"] > 0.5


@pytest.mark.slow
@x86_only
def test_an_lstm_in_bf16_on_a_cpu_without_it_is_refused_in_one_line(tmp_path: Path) -> None:
    result = run_cli(
        "--config", "lstm_sunspots", "--trainer.precision", "bf16-mixed", cwd=tmp_path, env=NO_NATIVE_BF16, fresh=True
    )
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "cannot run an LSTM in bf16-mixed" in line and "--trainer.precision 32-true" in line
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing written


@pytest.mark.slow
@x86_only
def test_explicit_bf16_on_a_cpu_without_it_runs_with_a_warning(tmp_path: Path) -> None:
    result = run_cli(
        "--config",
        "cnn_digits",
        "--trainer.precision",
        "bf16-mixed",
        "--trainer.max_epochs",
        "1",
        "--run.logger",
        "none",
        cwd=tmp_path,
        env=NO_NATIVE_BF16,
        fresh=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("warning: bf16-mixed")]
    assert "no native bf16" in warning and "slower than 32-true" in warning
    (run_dir,) = (tmp_path / "runs" / "cnn_digits").iterdir()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]["precision"] == "bf16-mixed"
