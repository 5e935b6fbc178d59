"""What firstlight's commands share between their command line and their work: the parser, the run argument,
`wandb:` references, and how a command ends.

    parser = command_parser("export", __doc__)    # a usage mistake: one line `error: ... (see --help)`, exit 2
    add_run_arguments(parser)                     # RUN and --root
    path, run_dir, note = locate_checkpoint(args.run, args.root)   # a wandb: run downloaded here, first

    @ends_cleanly                                 # a ConfigError anywhere: `error: <message>`, exit 2; Ctrl-C
    def main(argv=None) -> int: ...               #   130, SIGTERM 143, a failed write 1; each in one line

The project's rule for a mistake: one line that names what is wrong and how to fix it, a non-zero exit, no
traceback, nothing overwritten. A `wandb:entity/project/name:alias` reference is the command's to download
(`downloaded_artifact`): a run to use (`locate_checkpoint`), or a core's pretrained weights
(`download_core_artifacts`, before the core is built), so that no core talks to W&B.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from experiments.outputs import OutputError, Terminated, raise_terminated, written
from experiments.rundir import locate_run
from validation import ConfigError, first_line

MISTAKE = 2  # the exit status of a mistake the user can fix (a usage error's, as argparse's)
WANDB_PREFIX = "wandb:"
OFFLINE_MODES = ("offline", "disabled", "dryrun")  # WANDB_MODE values under which nothing reaches W&B
RUN_HELP = "run directory, run id, .ckpt file, or wandb:entity/project/artifact:alias"


# The command line


class OneLineParser(argparse.ArgumentParser):
    """Usage errors (an unknown --format, a missing run) in one line, `error: ... (see --help)`, exit 2, as the
    run command's."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(MISTAKE)


def command_parser(name: str, doc: str | None, **options: Any) -> argparse.ArgumentParser:
    """The parser of `python -m experiments.<name>`: its module docstring's first paragraph describes it, the
    rest (the examples) closes its --help."""
    first, _, rest = (doc or "").partition("\n\n")
    return OneLineParser(
        prog=f"python -m experiments.{name}",
        description=first,
        epilog=rest or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **options,
    )


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The trained run a command uses (`locate_checkpoint` reads it), and where run ids are looked up."""
    parser.add_argument("run", help=RUN_HELP)
    parser.add_argument("--root", type=Path, default=Path("runs"), help="where run ids are looked up")


def refused(error: ConfigError) -> int:
    """A mistake the user can fix, printed in one line; the command's exit status."""
    print(f"error: {error}", file=sys.stderr)
    return MISTAKE


# W&B references


def downloaded_artifact(reference: str, option: str, instead: str) -> Path:
    """The local folder of the W&B artifact `reference` (wandb:entity/project/name:alias), downloaded with
    W&B's public API (into WANDB_ARTIFACT_DIR, default ./artifacts). `option` names where it was given, and
    `instead` what to give in its place once it is downloaded by hand (for the message where it cannot be)."""
    name = reference.removeprefix(WANDB_PREFIX)
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in OFFLINE_MODES:
        raise ConfigError(
            f"{option} {reference} is a W&B artifact and W&B is {mode} (WANDB_MODE): download it once online "
            f"(`wandb artifact get {name} --root DIR`), then {instead}"
        )
    import wandb

    try:
        return Path(wandb.Api(timeout=30).artifact(name).download())
    except Exception as error:  # no credentials, no network, no such artifact: W&B's own message says which
        raise ConfigError(
            f"W&B artifact {name} could not be downloaded ({first_line(error)}); check the name and that you are "
            f"online and logged in (wandb login), or {instead}"
        ) from None


def download_core_artifacts(model: Any) -> None:
    """Each `wandb:` argument of the model's core (a jsonargparse Namespace: `--model.net.pretrained
    wandb:...`) replaced by the folder it downloads to, before the core is built: a core reads local folders
    only. The run's config.yaml keeps the reference as given."""
    net = model.init_args.get("net") if "init_args" in model else None
    if net is None or "init_args" not in net:
        return
    for key, value in vars(net.init_args).items():
        if isinstance(value, str) and value.startswith(WANDB_PREFIX):
            option = f"--model.net.{key}"
            net.init_args[key] = str(downloaded_artifact(value, option, f"give {option} DIR"))


# The run argument


def best_checkpoint(run_dir: Path) -> tuple[Path, str]:
    """The checkpoint a finished run was tested with (summary.json); else, for an unfinished run, its latest."""
    checkpoints = run_dir / "checkpoints"
    summary = run_dir / "summary.json"
    if summary.is_file():
        try:
            best = json.loads(summary.read_text()).get("best_checkpoint") or ""
        except (json.JSONDecodeError, AttributeError):
            best = ""
        if best and (checkpoints / Path(best).name).is_file():  # by name: the run directory may have moved
            return checkpoints / Path(best).name, f"the best checkpoint, {Path(best).name}"
    if (checkpoints / "last.ckpt").is_file():
        return checkpoints / "last.ckpt", "the latest weights (last.ckpt): the run has not finished"
    saved = sorted(checkpoints.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if saved:
        return saved[-1], f"the newest checkpoint, {saved[-1].name}"
    raise ConfigError(f"run {run_dir} has no checkpoint; train it to the end, or resume it, before using it")


def artifact_checkpoint(reference: str) -> Path:
    """The checkpoint file a W&B model artifact (`wandb:entity/project/model-RUNID:best`) holds, downloaded."""
    folder = downloaded_artifact(reference, "the run", "give the .ckpt file it holds")
    found = sorted(folder.glob("*.ckpt"))
    if not found:
        raise ConfigError(
            f"W&B artifact {reference.removeprefix(WANDB_PREFIX)} holds no checkpoint (.ckpt); give a model artifact"
        )
    return found[0]


def locate_checkpoint(reference: str, root: Path) -> tuple[Path, Path | None, str]:
    """(checkpoint, run directory or None, how it was chosen) for a run directory, run id (under `root`),
    .ckpt file or W&B model artifact."""
    if reference.startswith(WANDB_PREFIX):
        return artifact_checkpoint(reference), None, f"W&B artifact {reference.removeprefix(WANDB_PREFIX)}"
    path = Path(reference)
    if path.is_file():
        if path.suffix != ".ckpt":
            raise ConfigError(f"{path} is not a checkpoint (.ckpt); give a run directory, a run id or a .ckpt file")
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
        return path, run_dir, f"checkpoint {path.name}"
    if path.is_dir() and not (path / "config.yaml").is_file():
        raise ConfigError(f"{path} is not a run directory (no config.yaml); give runs/<experiment>/<run id>")
    run_dir = locate_run(reference, root)
    checkpoint, note = best_checkpoint(run_dir)
    return checkpoint, run_dir, note


# How a command ends


def stopped(what: str) -> str:
    if not written:
        return f"{what}; nothing was written"
    return f"{what} after writing {', '.join(map(str, written))}"


def ends_cleanly(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """A command's main that ends in one line however it stops: a mistake (ConfigError) is exit 2; Ctrl-C
    (130) and SIGTERM (143) raise through the work, so its temporary files and folders are removed on the way
    out; a write the system refused (a full disk) is exit 1."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        written.clear()
        previous = signal.signal(signal.SIGTERM, raise_terminated)
        try:
            return main(argv)
        except ConfigError as error:
            return refused(error)
        except KeyboardInterrupt:
            print(f"interrupted: {stopped('SIGINT')}", file=sys.stderr)
            return 128 + signal.SIGINT
        except Terminated:
            print(f"terminated: {stopped('SIGTERM')}", file=sys.stderr)
            return 128 + signal.SIGTERM
        except OutputError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapped
