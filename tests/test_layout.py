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

and no two files import each other, directly or around a circle (a -> b -> c -> a): a circle means that
neither file can be read, tested or imported without the other.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Set
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


def module_file(module: str) -> Path | None:
    """The project file that a dotted module name is read from (a package: its __init__.py), if any."""
    path = REPO.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file() and candidate.relative_to(REPO).parts[0].removesuffix(".py") in PACKAGES:
            return candidate
    return None


def imported_files(path: Path) -> set[Path]:
    """The project files that one file imports, by every import statement (those inside functions too).

    `from package import name` imports the module package/name.py where there is one, else a name defined
    in package/__init__.py (its __init__); `from module import name` imports module.py."""
    package = path.relative_to(REPO).parent.parts
    found: set[Path | None] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {module_file(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                found.add(module_file(f"{module}.{alias.name}") or module_file(module))
    return {file for file in found if file is not None and file != path}


def import_graph() -> dict[str, set[str]]:
    """Each project file (as its path in the repository) -> the project files it imports."""
    files = [path for part in PACKAGES for path in part_files(part)]
    return {
        path.relative_to(REPO).as_posix(): {file.relative_to(REPO).as_posix() for file in imported_files(path)}
        for path in files
    }


def find_circle(graph: Mapping[str, Set[str]]) -> list[str] | None:
    """One circle of the directed graph, as the path around it [a, b, ..., a], or None where there is none.

    A depth-first walk: a node met again while it is still on the walk's current path closes a circle."""
    done: set[str] = set()
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        path.append(node)
        for successor in sorted(graph.get(node, ())):
            if circle := walk(successor):
                return circle
        path.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        if circle := walk(node):
            return circle
    return None


def test_no_two_files_import_each_other_even_around_a_circle() -> None:
    circle = find_circle(import_graph())
    assert circle is None, "an import circle between files: " + " -> ".join(circle or [])


def test_the_circle_finder_finds_a_circle_and_only_a_circle() -> None:
    """The finder itself, on made-up graphs: a circle of three behind a path into it, a self-import, and
    a graph where two paths meet again (a diamond) but never go round."""
    with_circle = {"a": {"b"}, "b": {"c", "x"}, "c": {"d"}, "d": {"b"}, "x": set()}
    assert find_circle(with_circle) == ["b", "c", "d", "b"]
    assert find_circle({"a": {"a"}}) == ["a", "a"]
    diamond = {"top": {"left", "right"}, "left": {"bottom"}, "right": {"bottom"}, "bottom": set()}
    assert find_circle(diamond) is None
    assert find_circle({}) is None


def test_the_import_graph_sees_modules_named_in_from_imports() -> None:
    """`from package import module` is an edge to the module, `from module import name` one to the module,
    and an import inside a function counts; imports of other projects are no edges."""
    graph = import_graph()
    assert "datamodules/kmers.py" in graph["datamodules/tokenization.py"]  # inside a function
    assert "datamodules/tokenization.py" in graph["datamodules/text.py"]  # from module import name
    assert not any(name.startswith(("torch", "numpy")) for name in graph["datamodules/text.py"])
