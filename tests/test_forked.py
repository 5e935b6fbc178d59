"""The slow tests' commands, forked from a process that has imported firstlight (tests/forked.py), answer as
the fresh `python -m experiments.run` a user starts: the same exit code, the same stdout and stderr."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_cli


@pytest.mark.slow
@pytest.mark.parametrize(
    "arguments",
    [
        ["--config", "cnn_digits", "--model.lr", "0.01", "--print_config"],  # exit 0, the config on stdout
        ["--config", "cnn_digits", "--data.dataset", "folder", "--data.data_dir", "nowhere"],  # exit 2, one line
    ],
)
def test_a_forked_command_answers_as_the_fresh_one(arguments: list[str], tmp_path: Path) -> None:
    fresh = run_cli(*arguments, cwd=tmp_path, fresh=True)
    forked = run_cli(*arguments, cwd=tmp_path)
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert fresh.stdout or fresh.stderr  # something to compare
    assert not (tmp_path / "runs").exists()
