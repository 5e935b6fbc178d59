"""Options that would be accepted and then ignored are refused in one line that names what to use; the
data set-up says what it installs and why, and without apt-get or root says what is missing and goes on."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import REPO

from experiments.run import main


@pytest.mark.parametrize(
    ("logger", "instead"),
    [("false", "--run.logger none"), ("true", "--run.logger wandb|csv|none")],
)
def test_a_trainer_logger_is_refused_with_what_to_use_instead(
    logger: str, instead: str, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", "cnn_digits", "--trainer.logger", logger]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--trainer.logger" in error and instead in error
    assert not (in_tmp / "runs").exists()


def test_the_data_set_up_without_apt_get_says_what_is_missing_and_succeeds(tmp_path: Path) -> None:
    """A machine without the Debian packages' files (SYSTEM_ROOT points elsewhere) and without apt-get on
    its PATH; the Python steps are left out (PYTHON=true) as they need the network."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("id", "true", "sudo"):
        if found := shutil.which(tool):
            os.symlink(found, bin_dir / tool)
    result = subprocess.run(
        ["/bin/sh", str(REPO / "experiments" / "install_data.sh")],
        cwd=tmp_path,
        env={"PATH": str(bin_dir), "PYTHON": "true", "SYSTEM_ROOT": str(tmp_path / "empty")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    for package in ("dataset-fashion-mnist", "dict-freedict-deu-eng", "espeak-ng"):
        assert f"  {package}: " in result.stdout  # what it installs, and why
    (note,) = result.stderr.splitlines()
    assert "no apt-get" in note and "sudo apt-get install dataset-fashion-mnist" in note
