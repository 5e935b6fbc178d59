"""firstlight's commands: `python -m experiments.run`, `.predict`, `.compare`, ... (or `firstlight run`, ...).

`python -m` puts the working directory first on `sys.path`, so a user's own `callbacks.py`, `modules.py`,
`cores/`, ... there would hide firstlight's packages of that name, and the command would fail deep in an
import. Importing this package first puts firstlight's folder before the working directory when the
working directory holds such a name; the user's other modules stay importable (`--model mymodels.Net`).

A command also ends a Ctrl-C that no code of its own handles (one while its libraries load, for seconds) in
one line with exit code 130, as it does any other Ctrl-C, not in a traceback.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the folder that holds firstlight's packages
PACKAGES = ("analysis", "callbacks", "cores", "datamodules", "experiments", "modules", "validation")


def shadowing(folder: str) -> list[str]:
    """The files or packages in `folder` that would be imported in place of firstlight's top-level names."""
    found = []
    for name in PACKAGES:
        for candidate in (os.path.join(folder, f"{name}.py"), os.path.join(folder, name, "__init__.py")):
            if os.path.isfile(candidate):
                found.append(os.path.dirname(candidate) if candidate.endswith("__init__.py") else candidate)
    return found


def put_firstlight_first() -> None:
    """Move the working directory's `sys.path` entries after firstlight's own folder, if it shadows one of
    firstlight's names; then say in one line which path still hides one, if any does (e.g. a PYTHONPATH)."""
    cwd = os.getcwd()
    if os.path.realpath(cwd) == os.path.realpath(ROOT) or not shadowing(cwd):
        return
    here = [i for i, entry in enumerate(sys.path) if os.path.realpath(entry or ".") == os.path.realpath(cwd)]
    if not here:
        return
    entries = [sys.path[i] for i in here]
    for i in reversed(here):
        del sys.path[i]
    if ROOT in sys.path[: here[0]]:
        position = sys.path.index(ROOT) + 1
    else:
        sys.path.insert(here[0], ROOT)
        position = here[0] + 1
    sys.path[position:position] = entries
    for name in PACKAGES:
        spec = importlib.util.find_spec(name) if name not in sys.modules else None
        origin = (spec.origin or "") if spec else ""
        if spec and not os.path.realpath(origin).startswith(os.path.realpath(ROOT) + os.sep):
            print(
                f"error: {origin} hides firstlight's `{name}`; rename it, or run from another folder", file=sys.stderr
            )
            raise SystemExit(2)


def interrupt_in_one_line(kind: type[BaseException], error: BaseException, trace: object) -> None:
    """`sys.excepthook` of a command: an unhandled Ctrl-C (KeyboardInterrupt) is one line and exit 130."""
    if not issubclass(kind, KeyboardInterrupt):
        return sys.__excepthook__(kind, error, trace)  # type: ignore[arg-type]
    print("interrupted: SIGINT", file=sys.stderr)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(130)  # (an excepthook cannot set the exit code; nothing was running that needs to finish)


put_firstlight_first()
if sys.argv[:1] == ["-m"]:  # `python -m experiments.COMMAND`, while the module is being found
    sys.excepthook = interrupt_in_one_line
