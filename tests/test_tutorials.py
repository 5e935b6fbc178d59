"""The tutorials in docs/ run as written: their files are written and their shell blocks run, in order, in
an empty folder, as a reader following them would (so the pages cannot rot).

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


def blocks(page: str) -> list[tuple[str, str, str]]:
    """(language, file name or "", content) of each fenced block of docs/`page`, in order."""
    text = (REPO / "docs" / page).read_text()
    return [(match[1], match[2], match[3]) for match in FENCE.finditer(text)]


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


@pytest.mark.slow
@pytest.mark.parametrize("page", TUTORIALS)
def test_a_tutorial_runs_as_written(page: str, tmp_path: Path) -> None:
    env = fresh_env({"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    for number, (_, name, content) in enumerate(blocks(page), start=1):
        if name:
            (tmp_path / name).write_text(content)
            continue
        result = subprocess.run(
            ["bash", "-eu", "-c", content], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, f"{page}, block {number}:\n{content}\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr, f"{page}, block {number}:\n{result.stderr[-3000:]}"
