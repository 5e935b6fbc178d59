"""Train, then test the best checkpoint, in a run directory of its own.

    python -m experiments.run                                   # the default preset: CNN on Fashion-MNIST
    python -m experiments.run --config cnn_digits --model.init_args.lr 3e-3
    python -m experiments.run --config cnn_digits --print_config

Every option comes from the typed `__init__` of the model, the datamodule, the Trainer, the checkpoint
callback and `RunOptions`; `--help` lists them. User mistakes exit with code 2 and a one-line message.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import re
import shutil
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any, NoReturn

import lightning as L
import yaml
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from callbacks.attention import AttentionMaps
from callbacks.epoch_log import EpochLog
from callbacks.finite_loss import FiniteLoss, NonFiniteLoss
from callbacks.last_checkpoint import LastCheckpoint, Preempted
from callbacks.norms import ParameterNorms
from callbacks.provenance import Provenance
from callbacks.throughput import Throughput
from callbacks.time_budget import ScheduleFollowsTimeBudget
from callbacks.wandb_media import ConfusionMatrix, PredictionSamples
from experiments.checkpointing import AtomicCheckpointIO, CheckpointWriteError, RunState, resume_checkpoint
from experiments.hardware import check_bf16_on_cpu, resolve_precision
from experiments.history import HistoryLogger, trim_history
from experiments.no_profiler import NoProfiler
from experiments.presets import expand_configs
from experiments.rundir import (
    cluster_run_id,
    create_run_dir,
    finished,
    locate_run,
    new_run_id,
    run_lock,
    unfinished_runs,
    write_atomic,
    write_summary,
)
from experiments.tracking import RunOptions, make_logger, wandb_sweep_run_id
from experiments.trainer import Trainer
from modules.errors import ConfigError

# What a datamodule tells a model (decision 2): linked wherever the chosen model takes the argument.
DATA_TO_MODEL = (
    "image_shape",
    "num_classes",
    "vocab_size",
    "pad_id",
    "bos_id",
    "eos_id",
    "chars_per_token",
    "num_features",
    "horizon",
)
RUN_ID_ENV = "FIRSTLIGHT_RUN_ID"  # shared with the worker processes that DDP launches
RUN_DIR_ENV = "FIRSTLIGHT_RUN_DIR"  # the directory rank 0 chose, for those workers
RESUME_ENV = "FIRSTLIGHT_RESUME_FROM"  # the checkpoint rank 0 chose to resume from, for those workers


class QuietLightning(logging.Filter):
    """Drops Lightning's product tips and seed notice; its other messages stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("💡 Tip", "Seed set to"))


for _name in ("lightning.fabric.utilities.seed", "lightning.pytorch.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(QuietLightning())
# Lightning 2.6 calls a torch API that torch 2.14 deprecates, on every test run; nothing for users to do.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


class ConciseParser(LightningArgumentParser):
    """Reports a parsing mistake as one line on stderr and exits with code 2."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        print(f"error: {short_message(message)} (see --help)", file=sys.stderr)
        sys.exit(2)


# Lines of jsonargparse's nested reports that restate the type machinery rather than the mistake.
NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "Expected a <class 'NoneType'>",
    "Expected a path but",
)


def short_message(message: str) -> str:
    """One line from jsonargparse's multi-line report: the key, the reasons, and the value given."""
    lines = [line.strip().lstrip("-").strip() for line in str(message).splitlines()]
    lines = [line for line in lines if line and not line.startswith(NOISE)]
    given = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Given value:")]
    text = " ".join(line for line in lines if not line.startswith("Given value:")) or "invalid arguments"
    if given and "Got value:" not in text:
        text += f" (got {given[0]})"
    text = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", text)
    return text.replace("Expected a typing.Literal", "Expected one of ").replace("Expected a int", "Expected an int")


class FirstlightCLI(LightningCLI):
    def __init__(self, args: list[str], preset: str) -> None:
        self.preset = preset
        self.default_name = derived_name(preset, args)
        super().__init__(
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            trainer_class=Trainer,  # Lightning's, with precision "auto" (the default)
            parser_class=ConciseParser,
            save_config_callback=None,  # the run directory gets config.yaml instead
            seed_everything_default=0,
            trainer_defaults={"enable_progress_bar": sys.stdout.isatty()},
            auto_configure_optimizers=False,  # models configure their own optimizer and schedule
            run=False,
            args=args,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_class_arguments(RunOptions, "run")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(PredictionSamples, "samples")  # W&B media: no-ops without W&B
        parser.add_lightning_class_args(ConfusionMatrix, "confusion")
        parser.add_lightning_class_args(ParameterNorms, "norms")
        parser.add_lightning_class_args(Throughput, "throughput")
        parser.add_lightning_class_args(AttentionMaps, "attention")
        # save_last: last.ckpt becomes the W&B model artifact "latest" (LastCheckpoint keeps it current).
        # No "-v1" suffixes: LastCheckpoint rewrites last.ckpt too, and top-k names hold their step anyway.
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/loss",
                "checkpoint.mode": "min",
                "checkpoint.save_last": True,
                "checkpoint.enable_version_counter": False,
            }
        )
        for name in DATA_TO_MODEL:
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        """Name the run and point the checkpoints at its directory (created later, once the data is found)."""
        options = self.config.run
        self.run_dir, self.resume_from = choose_run(options, options.experiment or self.preset)
        self.experiment, self.run_id = self.run_dir.parent.name, self.run_dir.name
        os.environ.setdefault(RUN_ID_ENV, self.run_id)
        os.environ.setdefault(RUN_DIR_ENV, str(self.run_dir))
        if self.resume_from:
            os.environ.setdefault(RESUME_ENV, str(self.resume_from))
        # The config as the user gave it, without the run's own paths, so it can be rerun as a new run
        # of the same experiment.
        options.experiment, options.resume = self.experiment, None
        # "auto" precision resolved for this machine, so config.yaml, W&B and a resumed run record what ran.
        trainer = self.config.trainer
        self.precision_choice = resolve_precision(trainer.precision, trainer.accelerator)
        if self.precision_choice:
            trainer.precision = self.precision_choice.precision
        self.config_yaml = self.parser.dump(self.config)
        self.config.checkpoint.dirpath = str(self.run_dir / "checkpoints")
        self.config.trainer.default_root_dir = str(self.run_dir)

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        trainer = self.config.trainer
        # One line on what precision runs and why (or what a bf16 precision costs on this CPU).
        precision_note = check_bf16_on_cpu(trainer.precision, trainer.accelerator, self.model) or str(
            self.precision_choice or f"precision: {trainer.precision} (given)"
        )
        options = RunOptions(**self.config.run)
        options.name = options.name or self.default_name
        logger = make_logger(options, self.experiment, self.run_id, self.run_dir)
        callbacks = list(self.config_init.trainer.get("callbacks") or [])
        callbacks += [
            EpochLog(),
            Provenance(str(self.run_dir)),
            LearningRateMonitor(logging_interval="step"),
            ScheduleFollowsTimeBudget(),
            RunState(self.run_id),
            FiniteLoss(),
            MonitorCheck(),
            StartNote(precision_note),
            LastCheckpoint(self.config.checkpoint.dirpath),
        ]
        if options.patience is not None:
            checkpoint = self.config.checkpoint
            callbacks.append(EarlyStopping(checkpoint.monitor, patience=options.patience, mode=checkpoint.mode))
        loggers = [HistoryLogger(str(self.run_dir)), *([logger] if logger is not None else [])]
        plugins = self.config_init.trainer.get("plugins") or []
        plugins = [*(plugins if isinstance(plugins, list) else [plugins]), AtomicCheckpointIO()]
        if self.config_init.trainer.get("profiler") is None:
            kwargs["profiler"] = NoProfiler()
        try:
            return super().instantiate_trainer(logger=loggers, callbacks=callbacks, plugins=plugins, **kwargs)
        except (ValueError, MisconfigurationException) as error:  # Lightning rejects the trainer options
            raise ConfigError(f"trainer: {error}") from None


def choose_run(options: Any, experiment: str) -> tuple[Path, Path | None]:
    """The run's directory and the checkpoint to resume from (None for a new run).

    DDP workers take rank 0's choice from the environment. `--run.resume` names a run (directory or
    id) or asks for the newest unfinished run of the experiment ("auto"). Under SLURM the run id is the
    job's, so a requeued job finds and resumes its own run.
    """
    root = Path(options.root)
    if RUN_ID_ENV in os.environ:  # chosen by rank 0 (or by a sweep, which names the id only)
        chosen = os.environ.get(RESUME_ENV)
        chosen_dir = Path(os.environ.get(RUN_DIR_ENV) or root / experiment / os.environ[RUN_ID_ENV])
        return chosen_dir.absolute(), Path(chosen) if chosen else None
    run_dir: Path | None
    if options.resume == "auto":
        candidates = unfinished_runs(root / experiment)
        run_dir = candidates[0] if candidates else None
    elif options.resume:
        run_dir = locate_run(options.resume, root)
        if finished(run_dir):
            raise ConfigError(f"run {run_dir} has finished; nothing to resume (leave out --run.resume for a new run)")
    else:
        cluster_id = cluster_run_id()
        run_dir = root / experiment / cluster_id if cluster_id else None
        if run_dir is None or finished(run_dir):
            return (root / experiment / (wandb_sweep_run_id() or new_run_id())).absolute(), None
    if run_dir is None:
        return (root / experiment / new_run_id()).absolute(), None
    checkpoint = resume_checkpoint(run_dir) if run_dir.is_dir() else None
    if checkpoint is None and options.resume not in (None, "auto"):
        raise ConfigError(f"run {run_dir} has no checkpoint that loads; nothing to resume")
    return run_dir.absolute(), checkpoint


def resumed_config(args: list[str]) -> list[str]:
    """`--run.resume <run>` without `--config` runs with the config that run was started with."""
    options = dict(itertools.pairwise(args)) | dict(a.split("=", 1) for a in args if "=" in a)
    run = options.get("--run.resume")
    if not run or run == "auto" or any(a in ("-c", "--config") or a.startswith("--config=") for a in args):
        return args
    return ["--config", str(locate_run(run, Path(options.get("--run.root", "runs"))) / "config.yaml"), *args]


def derived_name(preset: str, args: list[str]) -> str:
    """A run name from the preset and the arguments given beside it: "cnn_digits lr=0.01 max_epochs=5"."""
    parts = [preset]
    items = iter(args)
    for arg in items:
        if not arg.startswith("--"):
            continue
        key, has_value, value = arg[2:].partition("=")
        if not has_value:
            value = next(items, "")
        if key != "config" and not key.startswith("run.") and key not in ("print_config", "help"):
            parts.append(f"{key.split('.')[-1]}={value}")
    return " ".join(parts)


def nested_config(cli: FirstlightCLI) -> dict[str, Any]:
    """The resolved config as nested plain data, for the tracker."""
    config: dict[str, Any] = yaml.safe_load(cli.config_yaml)
    config.pop("config", None)
    return config | {"experiment": cli.experiment, "run_id": cli.run_id}


def print_results(test_metrics: dict[str, float], checkpoint: str, run_dir: Path) -> None:
    if test_metrics:
        print(f"\ntest metrics of {Path(checkpoint).name if checkpoint else 'the final weights'}:")
        width = max(map(len, test_metrics))
        for name, value in sorted(test_metrics.items()):
            print(f"  {name:<{width}}  {value:.4f}")
    print(f"run dir: {run_dir}")


def train_and_test(cli: FirstlightCLI) -> int:
    trainer = cli.trainer
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if trainer.is_global_zero:
            create_run_dir(cli.run_dir, resuming=cli.resume_from is not None or cli.run_dir.is_dir())
            try:
                stack.enter_context(run_lock(cli.run_dir))
            except BlockingIOError:
                raise ConfigError(f"run {cli.run_dir} is being trained by another process") from None
            if not (cli.run_dir / "config.yaml").is_file():
                write_atomic(cli.run_dir / "config.yaml", cli.config_yaml)
            if cli.resume_from:
                trim_history(cli.run_dir, checkpoint_step(cli.resume_from))
                print(f"resuming {cli.run_dir} from {cli.resume_from.name}", file=sys.stderr)
            for logger in trainer.loggers:
                logger.log_hyperparams(nested_config(cli))
        return fit_and_test(cli, started)
    raise AssertionError("unreachable")


def checkpoint_step(path: Path) -> int:
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])


def fit_and_test(cli: FirstlightCLI, started: float) -> int:
    trainer, model, datamodule = cli.trainer, cli.model, cli.datamodule
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cli.resume_from, weights_only=True)
    except Preempted as stop:
        code = 128 + int(getattr(signal, stop.signal_name, signal.SIGTERM))
        if trainer.is_global_zero:
            then = "the job is requeued and will resume it" if stop.requeued else "resume it with"
            what = "interrupted" if stop.signal_name == "SIGINT" else "preempted"
            print(
                f"{what}: {stop}; {then}: python -m experiments.run --run.resume {cli.run_dir}",
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
        return stopped_by_fault(trainer, f"{error}; free some space, or keep runs on another disk")
    except Exception as error:
        cause = user_error(error)
        mistake = cause or unknown_monitor(error, trainer)
        if mistake is not None and trainer.is_global_zero:
            discard_unused_run(trainer, cli.run_dir)
        if mistake is not None and cause is None:  # Lightning's report of an unknown monitor, made ours
            raise mistake from None
        raise
    if trainer.interrupted:
        print(f"interrupted; run dir: {cli.run_dir}", file=sys.stderr)
        return 130
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    checkpoint = trainer.checkpoint_callback
    best_path = getattr(checkpoint, "best_model_path", "")
    test_metrics: dict[str, float] = {}
    if cli.config.run.test:
        results = trainer.test(
            model, datamodule=datamodule, ckpt_path=best_path or None, verbose=False, weights_only=True
        )
        test_metrics = {name: float(value) for name, value in (results[0] if results else {}).items()}
    if trainer.is_global_zero:
        best_score = getattr(checkpoint, "best_model_score", None)
        if best_score is not None:
            metrics[f"{checkpoint.monitor}_best"] = float(best_score)  # type: ignore[union-attr]
        summary = write_summary(
            cli.run_dir,
            metrics | test_metrics,
            run_id=cli.run_id,
            run_dir=str(cli.run_dir),
            best_checkpoint=best_path,
            wall_time_s=round(time.perf_counter() - started, 2),
        )
        finish_tracking(trainer, summary)
        print_results(test_metrics, best_path, cli.run_dir)
    return 0


def stopped_by_fault(trainer: L.Trainer, message: str) -> int:
    """Report a run stopped by a fault (not a user's mistake) in one line; exit code 1, files kept."""
    if trainer.is_global_zero:
        print(f"error: {message}", file=sys.stderr)
        finish_tracking(trainer, exit_code=1)
    return 1


NON_FINITE_HINT = "Lower the learning rate (--model.init_args.lr) or clip gradients (--trainer.gradient_clip_val 1.0)"


def last_good_checkpoint(run_dir: Path) -> str:
    """Which checkpoint a stopped run keeps, for its error message."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        return f"the last good checkpoint is {last} (step {checkpoint_step(last)})"
    return "no checkpoint had been saved yet"


class MonitorCheck(L.Callback):
    """Rejects a checkpoint monitor that names no validation metric of the model at the end of the sanity
    check, before anything is trained or saved (Lightning finds out at the end of the first epoch)."""

    def on_sanity_check_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        monitor = getattr(trainer.checkpoint_callback, "monitor", None)
        if monitor and monitor.startswith("val/") and monitor not in trainer.callback_metrics:
            raise unknown_monitor_error(monitor, trainer)


class StartNote(L.Callback):
    """Prints a line about the run's set-up (its precision and why) when training starts: after the data
    and the sanity check have passed, so a mistake found there is still reported in one line alone."""

    def __init__(self, note: str) -> None:
        self.note = note

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            print(self.note, file=sys.stderr, flush=True)


def unknown_monitor(error: BaseException, trainer: L.Trainer) -> ConfigError | None:
    """A checkpoint or early-stopping monitor that names no logged metric, as Lightning reports it."""
    text = str(error)
    if "could not find the monitored key" not in text and "which is not available" not in text:
        return None
    return unknown_monitor_error(getattr(trainer.checkpoint_callback, "monitor", None), trainer)


def unknown_monitor_error(monitor: str | None, trainer: L.Trainer) -> ConfigError:
    logged = ", ".join(sorted(name for name in trainer.callback_metrics if "/" in name))
    return ConfigError(f"--checkpoint.monitor {monitor} is not a metric this model logs; choose one of: {logged}")


def discard_unused_run(trainer: L.Trainer, run_dir: Path) -> None:
    """Remove the directory of a run stopped by a user mistake before it saved anything worth keeping
    (and the experiment and root folders if that leaves them empty)."""
    if not any((run_dir / "checkpoints").glob("*.ckpt")):
        finish_tracking(trainer)
        shutil.rmtree(run_dir, ignore_errors=True)
        for folder in (run_dir.parent, run_dir.parent.parent):
            with contextlib.suppress(OSError):  # not empty: other runs live there
                folder.rmdir()


def finish_tracking(trainer: L.Trainer, summary: dict[str, Any] | None = None, exit_code: int = 0) -> None:
    """Put the final metrics (best validation value, test metrics) in the W&B summary and close the run,
    so its files are complete (offline runs can then be synced or inspected). A preempted run (non-zero
    `exit_code`) is marked as preempting, which W&B shows as resumable."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if not isinstance(logger, WandbLogger) or logger._experiment is None or getattr(logger, "broken", False):
            continue
        try:
            if summary:
                logger.experiment.summary.update(summary)
            if exit_code:
                logger.experiment.mark_preempting()
            logger.experiment.finish(exit_code=exit_code)
        except OSError:  # W&B's service stopped (a cluster signals every process of a job, W&B's too)
            print("note: W&B's service had stopped; its files keep what was logged until then", file=sys.stderr)


def user_error(error: BaseException) -> ConfigError | None:
    """The ConfigError behind an exception, if any (jsonargparse wraps errors raised while instantiating)."""
    while error is not None and not isinstance(error, ConfigError):
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return error


def main(argv: list[str] | None = None) -> int:
    owns_run_id = RUN_ID_ENV not in os.environ
    try:
        args, preset = expand_configs(resumed_config(sys.argv[1:] if argv is None else argv))
        with warnings.catch_warnings():  # the arguments are sys.argv with presets resolved: no mix-up
            warnings.filterwarnings("ignore", "LightningCLI's args parameter")
            cli = FirstlightCLI(args, preset)
        cli.datamodule.prepare_data()  # a missing dataset fails here, before anything is written
        return train_and_test(cli)
    except KeyboardInterrupt:  # Ctrl-C outside training (while loading data, testing, ...)
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        cause = user_error(error)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        return 2
    finally:
        if owns_run_id:  # DDP workers inherit the id from this process's environment; the next run must not
            for name in (RUN_ID_ENV, RUN_DIR_ENV, RESUME_ENV):
                os.environ.pop(name, None)
        leave_process_group()


def leave_process_group() -> None:
    """Shut down this process's DDP process group before the interpreter exits. Left to interpreter
    shutdown, gloo's threads can be torn down while joinable, and the process aborts after a finished run
    ("terminate called without an active exception", exit code 134), which a scheduler records as a failure."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
