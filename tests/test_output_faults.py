"""The after-training commands (predict, predict --explain, export, shrink) at faulty output locations and
under stop signals: one line, the right exit code (2 a mistake, 1 a fault, 130 Ctrl-C, 143 SIGTERM), and no
file left behind, temporary folders included. Read-only and full disks are real filesystems (tests.filesystems)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

import experiments.export
import experiments.outputs
from experiments.export import main as export
from experiments.predict import main as predict
from experiments.shrink import main as shrink
from tests.filesystems import make_read_only, small_filesystem
from tests.helpers import HANG_GUARD_S, fresh_env
from tests.signals import fill

Command = Callable[[list[str] | None], int]

# command, then its arguments for a run, an input image and an output folder: each writes into the folder.
INTO_FOLDER: dict[str, tuple[Command, Callable[[str, str, Path], list[str]], str]] = {
    "predict": (predict, lambda run, image, out: [run, image, "--output", str(out / "answers.jsonl")], "--output"),
    "explain": (predict, lambda run, image, out: [run, image, "--explain", "--explain_dir", str(out)], "--explain_dir"),
    "export": (
        export,
        lambda run, image, out: [run, "--format", "torchscript", "--output", str(out / "m.pt"), "--wandb", "false"],
        "--output",
    ),
    "shrink": (shrink, lambda run, image, out: [run, "--output", str(out / "m-int8.pt")], "--output"),
}
# command, then its arguments that write beside the run (its default output), and that output.
BESIDE_RUN: dict[str, tuple[Command, Callable[[str, str], list[str]], str]] = {
    "explain": (predict, lambda run, image: [run, image, "--explain"], "explain"),
    "export": (export, lambda run, image: [run, "--format", "torchscript", "--wandb", "false"], "export"),
    "shrink": (shrink, lambda run, image: [run], "model-int8.pt"),
}


@pytest.fixture
def digits(preset_runs: Callable[[str], Path], capsys: pytest.CaptureFixture[str]) -> Path:
    """The short cnn_digits run (trained by the first test that asks; its output is not the test's)."""
    run = preset_runs("cnn_digits")
    capsys.readouterr()
    return run


@pytest.fixture
def image(tmp_path: Path) -> str:
    path = tmp_path / "seven.png"
    Image.new("L", (8, 8), 128).save(path)
    return str(path)


@pytest.fixture
def system_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system temp folder the commands see (export stages its file there), empty to begin with."""
    folder = tmp_path / "system-temp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Path]:
    """A small real filesystem at tmp_path/mnt (skipped where mounting needs root)."""
    with small_filesystem(tmp_path / "mnt", 16) as mounted:
        if not mounted:
            pytest.skip("needs a small filesystem (mounting a tmpfs needs root)")
        yield tmp_path / "mnt"


def everything(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def one_error(err: str) -> str:
    """The only line of stderr that says what went wrong; no traceback."""
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if not line.startswith("model: ")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


@pytest.mark.parametrize("name", INTO_FOLDER)
def test_a_read_only_output_folder_is_one_line_before_any_work(
    name: str, digits: Path, image: str, mount: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command, arguments, option = INTO_FOLDER[name]
    make_read_only(mount)
    args = arguments(str(digits), image, mount)
    assert command(args) == 2
    given = Path(args[args.index(option) + 1])
    assert one_error(capsys.readouterr().err) == (
        f"error: {option} {given}: cannot write in {mount} (a read-only filesystem); choose a folder you can write to"
    )


@pytest.mark.parametrize("name", BESIDE_RUN)
def test_a_read_only_run_is_one_line_naming_the_option_that_writes_elsewhere(
    name: str, digits: Path, image: str, mount: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command, arguments, written = BESIDE_RUN[name]
    run = shutil.copytree(digits, mount / "run")
    make_read_only(mount)
    assert command(arguments(str(run), image)) == 2
    line = one_error(capsys.readouterr().err)
    assert line.startswith(f"error: {run / written}") and f"cannot write in {run} (a read-only filesystem)" in line
    assert line.endswith("with --explain_dir" if name == "explain" else "give another path with --output")


@pytest.mark.parametrize("name", INTO_FOLDER)
def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(
    name: str,
    digits: Path,
    image: str,
    mount: Path,
    system_temp: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    command, arguments, _ = INTO_FOLDER[name]
    fill(mount, leave=0)
    assert command(arguments(str(digits), image, mount)) == 1
    line = one_error(capsys.readouterr().err.replace(image, ""))  # (predict's table names the image: stdout)
    assert line.startswith(f"error: could not write {mount}/")
    assert line.endswith(
        "No space left on device; free some space, or write elsewhere with --output; nothing was written"
    )
    assert everything(mount) == ["ballast"] and everything(system_temp) == []


def test_a_full_disk_beside_the_run_removes_the_export_folder_it_made(
    digits: Path, mount: Path, system_temp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = shutil.copytree(digits, mount / "run")
    before = everything(mount)
    fill(mount, leave=0)
    assert export([str(run), "--format", "torchscript", "--wandb", "false"]) == 1
    assert "No space left on device" in one_error(capsys.readouterr().err)
    assert everything(mount) == sorted([*before, "ballast"]) and everything(system_temp) == []


@pytest.fixture
def default_ctrl_c() -> Iterator[None]:
    """Python's own Ctrl-C handler (KeyboardInterrupt), as in a user's shell, whatever the test runner set."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def signalling(function: Callable, signum: int) -> Callable:
    """`function`, then this process is sent `signum`: a stop that arrives just after it."""

    def wrapped(*args: object, **kwargs: object) -> object:
        result = function(*args, **kwargs)
        os.kill(os.getpid(), signum)
        return result

    return wrapped


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize(
    ("name", "where"),
    [(name, "writing") for name in INTO_FOLDER] + [("export", "exporting")],
)
def test_a_stop_signal_exits_128_plus_it_in_one_line_and_leaves_nothing(
    name: str,
    where: str,
    signum: int,
    digits: Path,
    image: str,
    tmp_path: Path,
    system_temp: Path,
    default_ctrl_c: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The signal arrives after the first temporary file is written beside the output (or, for export, after
    the file is exported into its staging folder in the system temp folder, before the check)."""
    command, arguments, _ = INTO_FOLDER[name]
    if where == "writing":
        monkeypatch.setattr(
            experiments.outputs, "write_temporary", signalling(experiments.outputs.write_temporary, signum)
        )
    else:
        exporters = experiments.export.EXPORTERS
        monkeypatch.setitem(exporters, "torchscript", signalling(exporters["torchscript"], signum))
    out = tmp_path / "out"
    out.mkdir()
    previous_sigterm = signal.getsignal(signal.SIGTERM)
    assert command(arguments(str(digits), image, out)) == 128 + signum
    what = "interrupted: SIGINT" if signum == signal.SIGINT else "terminated: SIGTERM"
    assert one_error(capsys.readouterr().err) == f"{what}; nothing was written"
    assert everything(out) == [] and everything(system_temp) == []
    assert signal.getsignal(signal.SIGTERM) == previous_sigterm  # the command's handler is gone with it


def test_ctrl_c_while_a_command_starts_is_one_line_and_130(digits: Path, tmp_path: Path) -> None:
    """A Ctrl-C in the seconds a fresh command spends importing its libraries (torch, ...), before any code of
    its own handles one: no traceback. (Python keeps a Ctrl-C ignored where its parent ignored it, as a
    shell's background job does: the command is started with the default.)"""
    output = tmp_path / "m.onnx"
    command = [sys.executable, "-m", "experiments.export", str(digits), "--output", str(output), "--wandb", "false"]
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=fresh_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(1.0)  # importing torch alone takes longer
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=HANG_GUARD_S)
    assert process.returncode == 130, err[-3000:]
    assert one_error(err).startswith("interrupted: SIGINT") and not output.exists()
