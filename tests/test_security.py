"""Secrets stay out of everything a run writes; checkpoints are never unpickled beyond plain data."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.helpers import run_cli, run_module
from validation import NOT_PLAIN

# Drawn afresh for each session: a run records the uncommitted changes of the code (code.diff), which may
# include this file, so a secret written out here would be found in it.
PLANTED = {
    "WANDB_API_KEY": f"planted0wandb0key{secrets.token_hex(12)}0",
    "MY_SERVICE_TOKEN": f"planted-service-token-{secrets.token_hex(3)}",
    "AWS_SECRET_ACCESS_KEY": f"planted-aws-secret-{secrets.token_hex(3)}",
    "HF_TOKEN": f"hf_plantedTokenValue{secrets.token_hex(2)}",
}


@pytest.mark.slow
def test_planted_secrets_appear_in_no_file_or_output_of_a_run(tmp_path: Path) -> None:
    result = run_cli("--config", "cnn_digits", "--trainer.max_epochs", "2", cwd=tmp_path, env=PLANTED, fresh=True)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "cnn_digits").iterdir()
    files = [path for path in run_dir.rglob("*") if path.is_file()]
    # config.yaml, summary.json, history.jsonl, provenance, checkpoints, and W&B's files: its run record
    # (config, summary, history, console output), metadata, logs and the model artifacts' staging.
    assert any(path.suffix == ".wandb" for path in files) and any(path.suffix == ".ckpt" for path in files)
    assert {"config.yaml", "summary.json", "history.jsonl"} <= {path.name for path in files}
    for secret in PLANTED.values():
        assert secret not in result.stdout + result.stderr
        for path in files:
            assert secret.encode() not in path.read_bytes(), f"{secret} found in {path}"


class Payload:
    """What an untrusted checkpoint can hide: unpickling it runs code (here: creates a file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


@pytest.mark.slow
def test_a_checkpoint_holding_pickled_objects_is_refused_not_unpickled(tmp_path: Path) -> None:
    stopped = run_cli(
        "--config",
        "cnn_digits",
        "--trainer.max_epochs",
        "1",
        "--trainer.callbacks+=tests.signals.SignalAt",
        "--trainer.callbacks.step=5",
        cwd=tmp_path,
    )
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "cnn_digits").iterdir()
    marker = tmp_path / "code-ran"
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["extra"] = Payload(marker)  # a tampered (or foreign) checkpoint in the run's place
    torch.save(checkpoint, run_dir / "checkpoints" / "last.ckpt")

    resumed = run_cli("--run.resume", str(run_dir), cwd=tmp_path)
    assert resumed.returncode == 2, resumed.stderr[-3000:]
    assert f"error: run {run_dir} has no checkpoint that loads; nothing to resume" in resumed.stderr
    assert "holding other pickled objects, which firstlight never unpickles" in resumed.stderr
    assert "Traceback" not in resumed.stderr

    # The commands after training refuse it in the same words, never with torch's advice to trust it.
    image = tmp_path / "digit.png"
    Image.new("L", (8, 8)).save(image)
    for module, *args in (("predict", str(image)), ("predict", str(image), "--explain"), ("export",), ("shrink",)):
        refused = run_module(f"experiments.{module}", str(run_dir), *args, cwd=tmp_path)
        assert refused.returncode == 2, (module, refused.stderr[-3000:])
        (line,) = refused.stderr.strip().splitlines()
        assert line == f"error: checkpoint {run_dir / 'checkpoints' / 'last.ckpt'} is refused: {NOT_PLAIN}", module
        assert "weights_only" not in refused.stdout + refused.stderr
    assert not marker.exists()  # the payload never ran
