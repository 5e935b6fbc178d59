"""The tutorials in docs/ run as written: their files are written and their shell blocks run, in order, in
an empty folder, as a reader following them would (so the pages cannot rot). Each numbered section runs as
a test of its own (one that builds on an earlier section runs with it), so the sections run side by side.

A fenced block whose info string names a file (```python my_cores.py```) is that file's content; a
```bash``` block is run with `bash -eu` (a failing command fails the test, naming the block).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, fresh_env

TUTORIALS = ("your-own-model.md", "your-own-data.md")
FENCE = re.compile(r"^```(\S*)[ \t]*(\S*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
SECTION = re.compile(r"^## (\d+)\. ", re.MULTILINE)
# The numbered sections each test runs, in order: a section that uses an earlier one's results runs with it.
RUNS = {
    "your-own-model.md": [("2",), ("3", "4")],  # 4 predicts with the run that 3 trains
    "your-own-data.md": [("1", "5"), ("2",), ("3",), ("4",)],  # 5 prepares the folder that 1 makes
}


def blocks(page: str) -> list[tuple[str, str, str]]:
    """(language, file name or "", content) of each fenced block of docs/`page`, in order."""
    text = (REPO / "docs" / page).read_text()
    return [(match[1], match[2], match[3]) for match in FENCE.finditer(text)]


def sections(page: str) -> dict[str, list[tuple[str, str, str]]]:
    """Each numbered section's blocks (as `blocks`), by its number; blocks before the first go under "0"."""
    text = (REPO / "docs" / page).read_text()
    starts = [(0, "0"), *((match.start(), match[1]) for match in SECTION.finditer(text))]
    found: dict[str, list[tuple[str, str, str]]] = {}
    for (start, number), (end, _) in zip(starts, [*starts[1:], (len(text), "")], strict=True):
        found[number] = [(m[1], m[2], m[3]) for m in FENCE.finditer(text[start:end])]
    return found


@pytest.mark.parametrize("page", TUTORIALS)
def test_every_block_of_a_tutorial_is_a_file_to_write_or_commands_to_run(page: str) -> None:
    """A block that is neither would be skipped by the run below, untested: each names its file, or is bash,
    and every file is valid (Python compiles)."""
    found = blocks(page)
    assert any(language == "bash" for language, _, _ in found)
    for language, name, content in found:
        assert name or language == "bash", f"a {language or 'plain'} block without a file name in {page}"
        if name.endswith(".py"):
            compile(content, name, "exec")


@pytest.mark.parametrize("page", TUTORIALS)
def test_every_section_with_commands_is_run_once(page: str) -> None:
    with_commands = sorted(number for number, found in sections(page).items() if any(not name for _, name, _ in found))
    assert sorted(number for run in RUNS[page] for number in run) == with_commands


@pytest.mark.slow
@pytest.mark.parametrize(("page", "run"), [(page, run) for page in TUTORIALS for run in RUNS[page]])
def test_a_tutorial_section_runs_as_written(page: str, run: tuple[str, ...], tmp_path: Path) -> None:
    """Every file of the page is written first (a section may use an earlier one's file); then the section's
    commands run."""
    env = fresh_env({"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    for _, name, content in blocks(page):
        if name:
            (tmp_path / name).write_text(content)
    for number in run:
        for _, name, content in sections(page)[number]:
            if name:
                continue
            result = subprocess.run(
                ["bash", "-eu", "-c", content], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
            )
            assert result.returncode == 0, f"{page}, section {number}:\n{content}\n{result.stderr[-3000:]}"
            assert "Traceback" not in result.stderr, f"{page}, section {number}:\n{result.stderr[-3000:]}"
