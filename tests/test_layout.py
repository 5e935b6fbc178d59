"""The layers of the project import only downwards, read from the source (every import statement, those
inside functions too):

    experiments/   the command: may use everything below
    callbacks/     Lightning extensions: tasks' hooks, analysis, data, cores; never the command
    analysis/      tools for trained tasks that are not tasks (attribution, int8): tasks, data, cores; never
                   callbacks or the command
    modules/       tasks (LightningModules): cores and validation; never analysis, data, callbacks or the command
    datamodules/   data: validation and packaged only
    cores/         plain nn.Modules: validation and packaged only
    packaged.py    pretrained weights in pip packages, set up in the cache: validation only
    validation.py  neutral ground: nothing of the project
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGES = (
    "analysis",
    "benchmarks",
    "callbacks",
    "cores",
    "datamodules",
    "experiments",
    "modules",
    "packaged",
    "tests",
    "validation",
)

# Each part of the project, and the parts it must not import.
FORBIDDEN = {
    "analysis": {"callbacks", "experiments"},
    "datamodules": {"analysis", "modules", "cores", "callbacks", "experiments"},
    "cores": {"analysis", "modules", "datamodules", "callbacks", "experiments"},
    "validation": set(PACKAGES) - {"validation"},
    "packaged": set(PACKAGES) - {"packaged", "validation"},
    "modules": {"analysis", "datamodules", "callbacks", "experiments"},
    "callbacks": {"experiments"},
}


def part_files(part: str) -> list[Path]:
    return [REPO / f"{part}.py"] if part in ("validation", "packaged") else sorted((REPO / part).rglob("*.py"))


def imported_modules(source: str, package: tuple[str, ...]) -> list[tuple[int, str]]:
    """(line, dotted module name) of every import in a module of `package`; relative imports resolved."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.append((node.lineno, module))
            # `from . import x` and `from package import module` name modules too
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names if module]
    return found


@pytest.mark.parametrize("part", list(FORBIDDEN))
def test_each_part_imports_only_the_layers_below_it(part: str) -> None:
    files = part_files(part)
    assert files, f"no source found for {part}"
    violations = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in files
        for line, module in imported_modules(path.read_text(), path.relative_to(REPO).parent.parts)
        if module.split(".")[0] in FORBIDDEN[part]
    ]
    assert not violations, "\n".join(violations)


def test_test_modules_share_helpers_not_each_other() -> None:
    """Shared helpers live in tests/helpers.py (fixtures in tests/conftest.py): importing a test module
    from another would also collect its tests and run its module fixtures there."""
    violations = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in sorted((REPO / "tests").glob("*.py"))
        for line, module in imported_modules(path.read_text(), ("tests",))
        if module.startswith("tests.test_")
    ]
    assert not violations, "\n".join(violations)


def test_the_import_reader_sees_every_form_of_import() -> None:
    """The checker itself: plain, from, relative and function-level imports are all found."""
    source = (
        "import modules.task\n"
        "from datamodules import base\n"
        "def f():\n"
        "    from callbacks.norms import ParameterNorms\n"
        "from . import cnn\n"
        "from .contracts import Core\n"
        "from ..experiments import run\n"
    )
    found = [module for _, module in imported_modules(source, ("cores",))]
    assert {"modules.task", "datamodules", "callbacks.norms", "cores.cnn", "cores.contracts"} <= set(found)
    assert "experiments" in found  # `..` leaves the package
