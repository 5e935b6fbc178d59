"""`python -m experiments.run --help`: the program's name, the presets, the options people change most and
every core on its first screen, without markup; with `--config PRESET`, that preset's model and data
options; `--help all`, every option, titled in whole sentences."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import fresh_env, run_cli

import cores
from cores.contracts import Core
from experiments.help import COMMON, PROG, class_parameters, quick_help
from experiments.presets import PRESETS_DIR, preset_names, preset_summaries
from experiments.run import main

FIRST_SCREEN = 60  # lines
MARKUP = (":paramref:", ":class:", ":meth:", ":func:", "``")


def all_cores() -> set[str]:
    """Every core class in cores/, found by importing them (not by the help's own reading of the source)."""
    for module in pkgutil.iter_modules(cores.__path__):
        importlib.import_module(f"cores.{module.name}")
    found: set[str] = set()
    stack = list(Core.__subclasses__())  # the contracts, then their cores
    while stack:
        cls = stack.pop()
        stack += cls.__subclasses__()
        if cls.__module__.startswith("cores.") and cls.__module__ != "cores.contracts":
            found.add(f"{cls.__module__}.{cls.__qualname__}")
    return found


def real_parameters(cls: type) -> list[str]:
    """The arguments a class takes: its `__init__`'s, and where that passes `**kwargs` on, its base's."""
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = list(inspect.signature(vars(klass)["__init__"]).parameters.values())[1:]
        names += [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in names]
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            break
    return names


def test_the_first_screen_names_the_program_the_presets_and_the_common_options(tmp_path: Path) -> None:
    result = run_cli("--help", cwd=tmp_path, timeout=60, fresh=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {PROG} ")
    first_screen = "\n".join(result.stdout.splitlines()[:FIRST_SCREEN])
    for name in preset_names():
        assert f"\n  {name} " in first_screen
    for option, _, _ in COMMON[:8]:
        assert f"\n  {option} " in first_screen
    assert "Lightning Trainer command line tool" not in result.stdout
    assert not [mark for mark in MARKUP if mark in result.stdout]
    assert result.stderr == ""


def test_every_preset_has_a_one_line_summary() -> None:
    summaries = preset_summaries()
    assert sorted(summaries) == preset_names() and all(summaries.values()), summaries
    assert all(len(summary) <= 49 for summary in summaries.values())  # one line of an 80-column terminal


def test_the_help_names_every_core_by_its_task() -> None:
    text = quick_help(["--help"])
    missing = [core for core in all_cores() if core not in text]
    assert not missing, f"--help leaves out {missing}"


@pytest.mark.parametrize("preset", preset_names())
def test_help_with_a_preset_shows_its_model_and_data_options(preset: str) -> None:
    config = yaml.safe_load((PRESETS_DIR / f"{preset}.yaml").read_text())
    text = quick_help(["--help", "--config", preset])
    components = (
        ("--model", config["model"]),
        ("--model.net", config["model"]["init_args"]["net"]),
        ("--data", config["data"]),
    )
    for prefix, component in components:
        module, _, name = component["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        # The help reads the source; its arguments are those the class really takes (its bases' for **kwargs).
        read = [parameter.name for parameter in class_parameters(component["class_path"])]
        real = real_parameters(cls)
        assert set(real) <= set(read), f"{component['class_path']}: the help misses {set(real) - set(read)}"
        for argument in real:
            if not (prefix == "--model" and argument == "net"):
                assert f"  {prefix}.{argument}" in text
        for argument, value in (component.get("init_args") or {}).items():
            if not isinstance(value, dict):  # the preset's own values are shown beside their option
                assert f"  {prefix}.{argument} " in text
    assert not [mark for mark in MARKUP if mark in text]


def test_the_common_options_are_accepted(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    values = {"--model.net": "cores.cnn.CNNClassifier", "--model.net.OPTION": "", "-c, --config": ""}
    given = ["--config", "cnn_digits", "--model.net.dropout", "0.3", "--run.resume", "auto"]
    for option, metavar, _ in COMMON:
        if option in values:
            if values[option]:
                given += [option, values[option]]
            continue
        if option == "--print_config":
            continue
        value = {"N": "3", "LR": "0.01", "SEED": "1", "DD:HH:MM:SS": "00:00:10:00", "[A,B]": "[a,b]"}.get(
            metavar, metavar.split("|")[0]
        )
        given += [option, value]
    with pytest.raises(SystemExit) as stop:
        main([*given, "--print_config"])
    assert stop.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["init_args"]["lr"] == 0.01
    assert config["model"]["init_args"]["net"]["init_args"]["dropout"] == 0.3
    assert config["data"]["init_args"]["batch_size"] == 3


def test_help_all_is_every_option_titled_in_whole_sentences(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help", "all"])
    text = capsys.readouterr().out
    assert text.startswith(f"usage: {PROG} ")
    assert "--trainer.max_epochs" in text and "--checkpoint.monitor" in text and "--run.tags" in text
    assert not [mark for mark in MARKUP if mark in text]
    titles = [line for line in text.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert len(titles) >= 8
    for title in titles:
        assert not title.endswith((" the:", " is:", ";:", ",:", " a:")), f"cut-off title: {title}"


def test_a_task_s_help_lists_every_core_it_takes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--model.help", "modules.classification.ClassificationTask"])
    text = " ".join(capsys.readouterr().out.split())
    classifiers = [core for core in all_cores() if "Classifier" in core]
    assert len(classifiers) >= 7
    assert not [core for core in classifiers if core not in text]


@pytest.mark.parametrize("command", ["predict", "compare", "sweep", "prepare", "export", "shrink"])
def test_the_other_commands_help_names_them(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module(f"experiments.{command}")
    with pytest.raises(SystemExit) as stop:
        module.main(["--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m experiments.{command} ")


def test_explain_is_no_command_of_its_own_and_says_which_is(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "experiments.explain", "--help"],
        cwd=tmp_path,
        env=fresh_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "experiments.predict" in result.stderr
