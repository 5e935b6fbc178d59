"""`--model.init_from`: a new run starts from an earlier run's weights, those that fit; the rest, such as a head
for another number of classes, are named and left fresh. A checkpoint of another core is refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import run_cli
from tests.preset_runs import SHORT

QUIET = [*SHORT, "--run.logger=none"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short cnn_digits run (10 classes of 8x8 grey images)."""
    folder = tmp_path_factory.mktemp("digits")
    result = run_cli("--config", "cnn_digits", *QUIET, cwd=folder)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (folder / "runs" / "cnn_digits").iterdir()
    return run_dir


def three_classes(folder: Path) -> Path:
    """A folder of 8x8 grey images in 3 classes: the digits' size and channels, another number of classes."""
    rng = np.random.default_rng(0)
    for label in ("a", "b", "c"):
        (folder / label).mkdir(parents=True)
        for index in range(12):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), mode="L").save(
                folder / label / f"{index}.png"
            )
    return folder


def core_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return {key: tensor for key, tensor in state.items() if key.startswith("net.")}


def test_a_digits_run_starts_a_run_on_other_classes_with_its_head_left_fresh(digits_run: Path, tmp_path: Path) -> None:
    data = three_classes(tmp_path / "images")
    result = run_cli(
        "--config", "cnn_digits", "--data.dataset", "folder", "--data.data_dir", str(data), *QUIET,
        "--trainer.max_steps", "1", "--model.lr", "1e-12", "--model.weight_decay", "0",  # one step that moves nothing
        "--model.init_from", digits_run.name, f"--run.root={digits_run.parents[1]}",  # by run id
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert f"init_from {digits_run.name} (the best checkpoint" in output
    before = core_weights(digits_run)
    assert f"{len(before) - 2} of {len(before)} tensors of the core loaded" in output
    assert "left fresh: classifier.5.weight (3x128 here, 10x128 there), classifier.5.bias (3 here, 10 there)" in output
    (new_run,) = [path for path in (digits_run.parents[1] / "cnn_digits").iterdir() if path != digits_run]
    after = core_weights(new_run)
    for key, tensor in before.items():
        if key.startswith("net.classifier.5."):
            assert after[key].shape[0] == 3
        elif tensor.is_floating_point() and "running_" not in key:  # batch norms' statistics move with a step
            assert torch.allclose(after[key], tensor, atol=1e-6), key


def test_a_checkpoint_of_another_core_is_refused_in_one_line_before_anything_is_written(
    digits_run: Path, tmp_path: Path
) -> None:
    checkpoint = torch.load(digits_run / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["net"]["class_path"] = "cores.vit.ViTClassifier"
    other = tmp_path / "vit.ckpt"
    torch.save(checkpoint, other)
    result = run_cli("--config", "cnn_digits", *QUIET, "--model.init_from", str(other), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "its core is cores.vit.ViTClassifier, this run's cores.cnn.CNNClassifier" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_a_missing_run_is_refused_in_one_line(tmp_path: Path) -> None:
    result = run_cli("--config", "cnn_digits", *QUIET, "--model.init_from", "no-such-run", cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "no-such-run" in result.stderr
    assert not (tmp_path / "runs").exists()
