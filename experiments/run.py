"""Train, then test the best checkpoint, in a run directory of its own.

    python -m experiments.run                                   # the default preset: CNN on Fashion-MNIST
    python -m experiments.run --config cnn_digits --model.init_args.lr 3e-3
    python -m experiments.run --config cnn_digits --model.init_args.net.init_args.channels [16,32]
    python -m experiments.run --config cnn_digits --print_config

Every option comes from the typed `__init__` of the task, its core, the datamodule, the Trainer, the
checkpoint callback and `RunOptions`; `--help` lists them. User mistakes exit with code 2 and a one-line
message.
"""

from __future__ import annotations

import sys

from experiments.help import answer_help, full_help_args

if __name__ == "__main__" and (code := answer_help(sys.argv[1:])) is not None:
    sys.exit(code)  # `--help` answered before the imports below, which take seconds (torch, Lightning)

import contextlib
import errno
import importlib
import io
import logging
import os
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.utilities.exceptions import SIGTERMException

from callbacks.checkpointing import CheckpointWriteError
from callbacks.finite_loss import NonFiniteLoss
from callbacks.history import last_logged, trim_history
from callbacks.last_checkpoint import LastCheckpoint, Preempted
from callbacks.monitor_check import unknown_monitor
from experiments.cli import FirstlightCLI, nested_config
from experiments.failures import (
    NON_FINITE_HINT,
    discard_unused_run,
    rejected_by_lightning,
    stopped_by_fault,
    user_error,
)
from experiments.help import cores_by_task, datamodules
from experiments.message_filters import hide_unactionable_messages
from experiments.outputs import Terminated, raise_terminated
from experiments.presets import expand_configs
from experiments.resume import (
    RUN_ID_ENV,
    check_checkpoint_fits,
    checkpoint_step,
    forget_run_choice,
    last_good_checkpoint,
    resumed_config,
)
from experiments.rundir import create_run_dir, missing_folders, run_lock, write_atomic, write_summary
from experiments.slurm import split_cluster_args, submit_run
from experiments.stages import missing_stage
from experiments.tracking import finish_tracking
from validation import ConfigError

hide_unactionable_messages()

SPACE_HINT = "; free some space, or keep runs on another disk with --run.root"


def main(argv: list[str] | None = None) -> int:
    # A library's log record that cannot be written (W&B's log file on a full disk) is dropped, not printed as
    # a traceback each: hundreds of lines that would bury the run's one error line.
    logging.raiseExceptions = False
    owns_run_id = RUN_ID_ENV not in os.environ
    on_sigterm = signal.signal(signal.SIGTERM, raise_terminated)  # until training starts (`fit_and_test`)
    given = sys.argv[1:] if argv is None else argv
    if (code := answer_help(given)) is not None:
        return code
    try:
        cluster, given = split_cluster_args(given)
        if cluster is not None:  # submitted as a SLURM job rather than trained here
            return submit_run(cluster, given, printed_config)
        args, preset = expand_configs(resumed_config(full_help(given)))
        with warnings.catch_warnings():  # the arguments are sys.argv with presets resolved: no mix-up
            warnings.filterwarnings("ignore", "LightningCLI's args parameter")
            cli = FirstlightCLI(args, preset)
        cli.datamodule.prepare_data()  # a missing dataset fails here, before anything is written
        return train_and_test(cli)
    except (KeyboardInterrupt, Terminated) as stop:  # before training started: nothing was saved
        what, number = ("preempted", signal.SIGTERM) if isinstance(stop, Terminated) else ("interrupted", signal.SIGINT)
        print(f"{what}: {number.name} before training started; nothing was saved", file=sys.stderr)
        return 128 + number
    except Exception as error:
        cause = user_error(error)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, on_sigterm)
        if owns_run_id:  # DDP workers inherit the id from this process's environment; the next run must not
            forget_run_choice()
        leave_process_group()


def printed_config(args: list[str]) -> dict[str, Any]:
    """The whole config a run of `args` would train with (as --print_config prints it), without training;
    ConfigError with the run's own reason when it refuses the arguments."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main([*args, "--print_config"])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    if code not in (0, None):
        lines = stderr.getvalue().strip().splitlines()
        raise ConfigError(lines[-1].removeprefix("error: ").removesuffix(" (see --help)") if lines else "rejected")
    return yaml.safe_load(stdout.getvalue())


def full_help(args: list[str]) -> list[str]:
    """`--help all` as jsonargparse's `--help`; for it and for `--model.help CLASS` and the like, every task,
    core and datamodule imported, so that the help lists them all where one is chosen."""
    full = full_help_args(args)
    if full is None and not any(arg.partition("=")[0].endswith(".help") for arg in args):
        return args
    classes = [*cores_by_task(), *(core for cores in cores_by_task().values() for core in cores), *datamodules()]
    for module in sorted({path.rpartition(".")[0] for path in classes}):
        importlib.import_module(module)
    return args if full is None else full


def train_and_test(cli: FirstlightCLI) -> int:
    """Create (or reopen) the run directory, record the config, then fit and test in it."""
    trainer = cli.trainer
    started = time.perf_counter()
    if cli.resume_from:
        check_checkpoint_fits(cli.model, cli.resume_from)
    created = missing_folders(cli.run_dir) if trainer.is_global_zero else []
    with contextlib.ExitStack() as stack:
        if trainer.is_global_zero:
            try:
                create_run_dir(cli.run_dir, resuming=cli.resume_from is not None or cli.run_dir.is_dir())
                try:
                    stack.enter_context(run_lock(cli.run_dir))
                except BlockingIOError:
                    raise ConfigError(f"run {cli.run_dir} is being trained by another process") from None
                record_start(cli)
            except OSError as error:  # a full disk or a lost mount before anything was trained
                if error.errno == errno.EEXIST:
                    raise
                discard_unused_run(trainer, created)
                return stopped_by_fault(trainer, f"could not write in {cli.run_dir}: {error.strerror}{SPACE_HINT}")
            except (KeyboardInterrupt, Terminated):
                discard_unused_run(trainer, created)
                raise
        return fit_and_test(cli, started, created)
    raise AssertionError("unreachable")


def record_start(cli: FirstlightCLI) -> None:
    """config.yaml (what this part of the run runs with), history.jsonl cut to the checkpoint it resumes
    from, and the config in every logger."""
    config = cli.run_dir / "config.yaml"
    step = checkpoint_step(cli.resume_from) if cli.resume_from else 0
    if config.is_file() and config.read_text() != cli.config_yaml:  # resumed with other options
        kept = config.with_name(f"config.until-step-{step}.yaml")
        config.replace(kept)
        print(
            f"the run goes on with other options than before: its config until step {step} is {kept}", file=sys.stderr
        )
    if not config.is_file():
        write_atomic(config, cli.config_yaml)
    if cli.resume_from:
        print(f"resuming {cli.run_dir} from {cli.resume_from.name}", file=sys.stderr)
    trim_history(cli.run_dir, step)  # a cluster job that restarts from scratch starts its history anew
    for logger in cli.trainer.loggers:
        logger.log_hyperparams(nested_config(cli))


def fit_and_test(cli: FirstlightCLI, started: float, created: list[Path]) -> int:
    """Train, test the best checkpoint, write summary.json; the exit code says how the run ended."""
    trainer, model, datamodule = cli.trainer, cli.model, cli.datamodule
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # Lightning's handling from here (see `stopped_by_signal`)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cli.resume_from, weights_only=True)
    except SystemExit as stop:  # a signal before training started (the sanity check) or after it ended
        return stopped_by_signal(cli, stop, where_fit_stopped(trainer))
    except Preempted as stop:
        code = 128 + int(getattr(signal, stop.signal_name, signal.SIGTERM))
        if trainer.is_global_zero:
            then = "the job is requeued and will resume it" if stop.requeued else "resume it with"
            what = "interrupted" if stop.signal_name == "SIGINT" else "preempted"
            print(
                f"{what}: {stop}; {then}: {resume_command(cli.run_dir)}",
                file=sys.stderr,
                flush=True,
            )
            finish_tracking(trainer, exit_code=code)
        return code
    except NonFiniteLoss as error:
        return stopped_by_fault(trainer, f"{error}; {last_good_checkpoint(cli.run_dir)}. {NON_FINITE_HINT}")
    except CheckpointWriteError as error:
        return stopped_by_fault(trainer, f"{error.strerror}; {last_good_checkpoint(cli.run_dir)}")
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        written = f"could not write {error.filename}: " if error.filename else ""
        where = last_good_checkpoint(cli.run_dir)
        return stopped_by_fault(trainer, f"{written}{error.strerror}{SPACE_HINT}; {where}")
    except Exception as error:
        cause = user_error(error)
        mistake = cause or unknown_monitor(error, trainer) or rejected_by_lightning(error, trainer)
        if mistake is not None and trainer.is_global_zero:
            discard_unused_run(trainer, created)
        if mistake is not None and cause is None:  # Lightning's report, made ours
            raise mistake from None
        raise
    if trainer.interrupted:
        print(f"interrupted; run dir: {cli.run_dir}", file=sys.stderr)
        return 130
    return test_and_summarise(cli, started)


def test_and_summarise(cli: FirstlightCLI, started: float) -> int:
    """Test the best checkpoint and write summary.json, which marks the run finished. A full disk on the way
    leaves it unfinished, with the test metrics printed: resuming it tests it again and writes the summary."""
    trainer, checkpoint = cli.trainer, cli.trainer.checkpoint_callback
    best_path = getattr(checkpoint, "best_model_path", "")
    test_metrics: dict[str, float] = {}
    resume = resume_command(cli.run_dir)
    validated = missing_stage(cli.model, cli.datamodule, "validation") is None
    no_test = missing_stage(cli.model, cli.datamodule, "test") if cli.config.run.test else "--run.test false"
    if trainer.is_global_zero and cli.config.run.test and no_test:
        print(f"not testing: {no_test}", file=sys.stderr)
    try:
        if not no_test:
            try:
                results = trainer.test(
                    cli.model, datamodule=cli.datamodule, ckpt_path=best_path or None, verbose=False, weights_only=True
                )
            except SystemExit as stop:
                return stopped_by_signal(cli, stop, "while testing")
            test_metrics = {name: float(value) for name, value in (results[0] if results else {}).items()}
        if not trainer.is_global_zero:
            return 0
        metrics = last_logged(cli.run_dir) | {name: float(value) for name, value in trainer.callback_metrics.items()}
        best_score = getattr(checkpoint, "best_model_score", None)
        if best_score is not None:
            metrics[f"{checkpoint.monitor}_best"] = float(best_score)  # type: ignore[union-attr]
        summary = write_summary(
            cli.run_dir,
            metrics | test_metrics,
            run_id=cli.run_id,
            run_dir=str(cli.run_dir),
            best_checkpoint=best_path,
            stages=["fit", *(["validation"] if validated else []), *([] if no_test else ["test"])],
            wall_time_s=round(time.perf_counter() - started, 2),
        )
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        if trainer.is_global_zero:
            print_results(test_metrics, best_path, cli.run_dir)
        return stopped_by_fault(trainer, f"{error}; no summary written{SPACE_HINT}, then resume it with: {resume}")
    finish_tracking(trainer, summary)
    print_results(test_metrics, best_path, cli.run_dir)
    return 0


def stopped_by_signal(cli: FirstlightCLI, stop: SystemExit, when: str) -> int:
    """Lightning's own ends for a signal where firstlight's handler is not active (it is from the first
    training step to the last): SIGTERM raises its `SIGTERMException`, a SystemExit with no code (exit 0,
    a success to a scheduler), and Ctrl-C becomes `sys.exit(1)`. Both become firstlight's exit codes and
    its one-line report; the run is left unfinished and resumable. Any other SystemExit goes on."""
    if isinstance(stop, SIGTERMException):
        what, code = "preempted: SIGTERM", 128 + signal.SIGTERM
    elif isinstance(stop.__context__, KeyboardInterrupt):
        what, code = "interrupted: SIGINT", 128 + signal.SIGINT
    else:
        raise stop
    if cli.trainer.is_global_zero:
        if not any((cli.run_dir / "checkpoints").glob("*.ckpt")):  # the sanity check, before any save
            again = f"python -m experiments.run --config {cli.run_dir / 'config.yaml'}"
            line = f"{what} {when}, before the first checkpoint; nothing to resume; run it again with: {again}"
        else:
            line = f"{what} {when}; no summary written; resume it with: {resume_command(cli.run_dir)}"
        print(line, file=sys.stderr, flush=True)
        finish_tracking(cli.trainer, exit_code=code)
    return code


def where_fit_stopped(trainer: L.Trainer) -> str:
    """Where a signal that Lightning handled stopped `fit`: a second Ctrl-C in training (the first is
    firstlight's: save, then stop), or outside the training loop (before its first step, after its last)."""
    handlers = (c for c in trainer.callbacks if isinstance(c, LastCheckpoint))  # type: ignore[attr-defined]
    if any(handler.received is not None for handler in handlers):
        return "again in training, before saving"
    return "outside the training loop"


def resume_command(run_dir: Path) -> str:
    """The command that resumes a stopped run, for its one-line report."""
    return f"python -m experiments.run --run.resume {run_dir}"


def print_results(test_metrics: dict[str, float], checkpoint: str, run_dir: Path) -> None:
    if test_metrics:
        print(f"\ntest metrics of {Path(checkpoint).name if checkpoint else 'the final weights'}:")
        width = max(map(len, test_metrics))
        for name, value in sorted(test_metrics.items()):
            print(f"  {name:<{width}}  {value:.4f}")
    print(f"run dir: {run_dir}")


def leave_process_group() -> None:
    """Shut down this process's DDP process group before the interpreter exits. Left to interpreter
    shutdown, gloo's threads can be torn down while joinable, and the process aborts after a finished run
    ("terminate called without an active exception", exit code 134), which a scheduler records as a failure."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
