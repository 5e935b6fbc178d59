"""Presets are YAML files in experiments/configs/; `--config` takes a path or a preset's name."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from validation import ConfigError

PRESETS_DIR = Path(__file__).parent / "configs"
DEFAULT_PRESET = "cnn_fashion_mnist"
SUMMARY = "# summary: "  # the first line of each preset's file: its one line in `--help`


def preset_summaries() -> dict[str, str]:
    """Each preset's one line for `--help`, from its file's first line (`# summary: ...`; the lines below it
    say more); "" where it has none (`tests/test_help.py` checks that every preset has one)."""
    summaries = {}
    for name in preset_names():
        first = (PRESETS_DIR / f"{name}.yaml").read_text().partition("\n")[0]
        summaries[name] = first.removeprefix(SUMMARY).strip() if first.startswith(SUMMARY) else ""
    return summaries


def preset_names() -> list[str]:
    return sorted(path.stem for path in PRESETS_DIR.glob("*.yaml"))


def resolve_config(value: str) -> Path:
    """A config file by path; else a preset by file name or name, so presets work from any directory."""
    path = Path(value)
    candidates = [path, PRESETS_DIR / path.name, PRESETS_DIR / f"{path.name}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            check_yaml(candidate)
            return candidate
    raise ConfigError(
        f"config file {value} not found; give a path to a YAML file or a preset: {', '.join(preset_names())}"
    )


def expand_configs(args: Sequence[str]) -> tuple[list[str], str]:
    """Resolve every `--config`/`-c` value; add the default preset when none is given.

    Returns the new argument list and the name of the first preset (the default experiment name).
    """
    expanded: list[str] = []
    first: str | None = None
    items = iter(args)
    for arg in items:
        if arg in ("-c", "--config"):
            value = next(items, None)
            if value is None:
                raise ConfigError(f"{arg} needs a file: {arg} <path or preset name>")
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        else:
            expanded.append(arg)
            continue
        path = resolve_config(value)
        first = first or path.stem
        expanded += ["--config", str(path)]
    if first is None:
        return ["--config", str(PRESETS_DIR / f"{DEFAULT_PRESET}.yaml"), *expanded], DEFAULT_PRESET
    return expanded, first


def check_yaml(path: Path) -> None:
    """Report a YAML syntax error with the file and line, rather than as a parsing error of a string, and a
    file that holds no options (empty, or a list or a value) as that."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise ConfigError(f"YAML syntax error in {path}{where}: {problem}; fix the file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a UTF-8 text file; give a YAML config") from None
    if not isinstance(loaded, dict):
        holds = "nothing" if loaded is None else f"a {type(loaded).__name__}"
        raise ConfigError(f"{path} holds {holds}, not a mapping of options (`key: value` lines); fix the file")
