"""firstlight's commands in a new process that starts with firstlight already imported.

A fresh `python -m experiments.run` spends about 7 of its 10 s on a 2-core CPU importing Lightning (which imports
all of torchmetrics, and with it torchvision, transformers and scipy) before it reads its first argument, and
the slow suite starts over a hundred of them. Here they are forked from a server (multiprocessing's
forkserver) that imported firstlight's command modules once: each command is still its own process, with its
own arguments, working directory, environment, signals, exit code, stdout and stderr, its W&B service and its
files, run by the module's `__main__` code as `python -m` runs it. What it shares with its siblings is the
modules imported at start-up, so a test of start-up itself (what a fresh interpreter imports or reads from its
environment as it imports: help timings, name clashes in the working directory, missing extras, CPU
capabilities capped by environment variables, launchers that start the command again) uses a fresh
interpreter instead (`tests.helpers.run_cli(..., fresh=True)`).
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.process
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import time
from functools import cache
from multiprocessing.context import ForkServerContext
from pathlib import Path

# The command modules the tests start (their imports are the cost); benchmarks import what they need on top.
PRELOADED = ["tests.forked", "experiments.run", "experiments.predict", "experiments.compare", "experiments.sweep"]
# The server's own process object, taken as it imports this module: each forked command becomes it again.
MAIN_PROCESS = multiprocessing.current_process()


@cache
def server() -> ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOADED)
    return context


def run_module(
    module: str, args: list[str], cwd: Path, env: dict[str, str], timeout: float, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m module *args` in `cwd` with exactly the environment `env`, in a forked process; `input` on
    its stdin and its output captured as `subprocess.run(..., capture_output=True, text=True)` does."""
    (done,) = run_together(module, [args], cwd, env, timeout, input)
    return done


def run_together(
    module: str, commands: list[list[str]], cwd: Path, env: dict[str, str], timeout: float, input: str | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """`python -m module *args` for each `args` of `commands`, all started before any is waited for."""
    with tempfile.TemporaryDirectory() as scratch:
        started = []
        for number, args in enumerate(commands):
            streams = [Path(scratch) / f"{number}.{name}" for name in ("stdin", "stdout", "stderr")]
            streams[0].write_text(input or "")
            streams[1].touch(), streams[2].touch()
            process = server().Process(target=command, args=(module, args, str(cwd), env, tuple(map(str, streams))))
            process.start()
            started.append((process, args, streams))
        deadline = time.monotonic() + timeout
        finished = []
        for process, args, (_, out, err) in started:
            process.join(max(deadline - time.monotonic(), 0))
            if process.exitcode is None:
                for other, *_ in started:
                    other.kill()
                raise subprocess.TimeoutExpired([module, *args], timeout, out.read_text(), err.read_text())
            stdout, stderr = (path.read_text(errors="replace") for path in (out, err))
            finished.append(
                subprocess.CompletedProcess([sys.executable, "-m", module, *args], process.exitcode, stdout, stderr)
            )
    return finished


def command(module: str, args: list[str], cwd: str, env: dict[str, str], streams: tuple[str, str, str]) -> None:
    """In the forked process: become `python -m module *args` started in `cwd` with `env` and the standard
    streams read from and written to the files `streams`, then run it."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in enumerate(streams):
        flags = os.O_RDONLY if fd == 0 else os.O_WRONLY | os.O_TRUNC
        target = os.open(path, flags)
        os.dup2(target, fd)
        os.close(target)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115  # multiprocessing closed the one it had
    # As in a fresh interpreter: Ctrl-C raises KeyboardInterrupt, the working directory leads sys.path (as for
    # `python -m`), and this is the main process, not a child of the test's (libraries ask).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path[0:0] = [cwd, *env.get("PYTHONPATH", "").split(os.pathsep)]
    multiprocessing.process._current_process = MAIN_PROCESS  # type: ignore[attr-defined]
    multiprocessing.process._parent_process = None  # type: ignore[attr-defined]
    multiprocessing.context._default_context._actual_context = None  # type: ignore[attr-defined]  # fork, not ours
    sys.argv = [module, *args]
    # `python -m` runs the module's code as __main__ before anything imports it under its own name: so here.
    sys.modules.pop(module, None)
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        atexit._run_exitfuncs()  # what the interpreter runs as it exits; a forked process skips it otherwise
