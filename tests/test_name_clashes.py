"""A user's own `callbacks.py`, `modules.py`, `cores/`, ... in the working directory never break a firstlight
command (`python -m` puts the working directory first on `sys.path`), and their other modules stay
importable; where a user's `experiments/` package hides firstlight's, the `firstlight` command still works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, fresh_env, run_cli

USER_CODE = "raise RuntimeError(\"the user's own module was imported in place of firstlight's\")\n"


def console_command(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`firstlight *args` as pip's console script runs it: the script's folder on sys.path, not the cwd."""
    script = cwd.parent / "bin" / "firstlight"
    script.parent.mkdir(exist_ok=True)
    script.write_text("import sys\nfrom experiments.command import main\nsys.exit(main())\n")
    return subprocess.run(
        [sys.executable, str(script), *args], cwd=cwd, env=fresh_env(), capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "shadow",
    ["callbacks.py", "modules.py", "datamodules.py", "cores.py", "validation.py", "callbacks/__init__.py"],
)
def test_a_module_named_like_firstlight_s_does_not_break_help(shadow: str, tmp_path: Path) -> None:
    (tmp_path / shadow).parent.mkdir(exist_ok=True)
    (tmp_path / shadow).write_text(USER_CODE)
    result = run_cli("--help", cwd=tmp_path, timeout=120, fresh=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m experiments.run")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_run_among_the_user_s_modules_uses_firstlight_s_and_theirs(tmp_path: Path) -> None:
    """Every clashing name at once, a plain `experiments/` folder of the user's results, and a core of the
    user's own (mymodels.py) named on the command line."""
    for shadow in ("callbacks.py", "modules.py", "datamodules.py", "cores.py", "validation.py"):
        (tmp_path / shadow).write_text(USER_CODE)
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "notes.txt").write_text("my results\n")
    (tmp_path / "mymodels.py").write_text(
        "from cores.cnn import CNNClassifier\n\n\nclass TinyNet(CNNClassifier):\n    pass\n"
    )
    result = run_cli(
        "--config",
        "cnn_digits",
        "--model.net",
        "mymodels.TinyNet",
        "--model.net.channels",
        "[4]",
        "--trainer.max_steps",
        "2",
        "--trainer.limit_val_batches",
        "1",
        "--run.test",
        "false",
        "--run.logger",
        "none",
        cwd=tmp_path,
        timeout=300,
        fresh=True,  # the user's modules are there as the command starts
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    (summary,) = (tmp_path / "runs" / "cnn_digits").glob("*/summary.json")
    config = (summary.parent / "config.yaml").read_text()
    assert "mymodels.TinyNet" in config
    assert json.loads(summary.read_text())["stages"] == ["fit", "validation"]


def test_the_firstlight_command_works_where_the_user_s_experiments_package_hides_firstlight_s(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "experiments").mkdir(parents=True)
    (project / "experiments" / "__init__.py").write_text(USER_CODE)
    (project / "callbacks.py").write_text(USER_CODE)
    result = console_command("run", "--help", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "cnn_digits" in result.stdout
    assert "Traceback" not in result.stderr


def test_the_firstlight_command_lists_its_commands_and_refuses_others_in_one_line(tmp_path: Path) -> None:
    listed = console_command("--help", cwd=tmp_path)
    assert listed.returncode == 0
    for command in ("run", "predict", "compare", "sweep", "prepare", "export", "shrink"):
        assert f"\n  {command} " in listed.stdout
    unknown = console_command("train", cwd=tmp_path)
    assert unknown.returncode == 2
    assert unknown.stderr.count("\n") == 1 and "run" in unknown.stderr


def test_the_firstlight_command_is_declared_in_pyproject() -> None:
    assert 'firstlight = "experiments.command:main"' in (REPO / "pyproject.toml").read_text()
