"""The command line: LightningCLI with one-line errors, the data's facts given to the model, and the run's
callbacks, loggers and plugins."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

import lightning as L
import yaml
from jsonargparse import DefaultHelpFormatter, Namespace
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from callbacks.attention import AttentionMaps
from callbacks.checkpointing import AtomicCheckpointIO, RunState
from callbacks.dataset_artifact import DatasetArtifact
from callbacks.epoch_log import EpochLog
from callbacks.finite_loss import FiniteLoss
from callbacks.history import HistoryLogger
from callbacks.last_checkpoint import LastCheckpoint
from callbacks.local_report import LocalReport
from callbacks.monitor_check import MonitorCheck
from callbacks.no_profiler import NoProfiler
from callbacks.norms import ParameterNorms
from callbacks.provenance import Provenance
from callbacks.start_note import StartNote
from callbacks.throughput import Throughput
from callbacks.time_budget import ScheduleFollowsTimeBudget
from callbacks.wandb_media import ConfusionMatrix, PredictionSamples
from experiments.command_line import download_core_artifacts
from experiments.hardware import check_bf16_on_cpu, device_kind, resolve_precision
from experiments.help import DESCRIPTION, PROG, clean_markup
from experiments.init_from import init_from
from experiments.precision_probe import measured_speedup, network_choice, worth_measuring
from experiments.renamed import renamed_hint
from experiments.resume import RESUME_ENV, RUN_DIR_ENV, RUN_ID_ENV, choose_run
from experiments.stages import missing_stage
from experiments.sweep_pruning import pruning_from_environment
from experiments.tracking import RunOptions, make_logger
from experiments.trainer import Trainer
from validation import SEED_MAX, ConfigError, check_name, check_range


class PlainHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help without the Sphinx markup of Lightning's docstrings (`:paramref:`, ``x``)."""

    def _expand_help(self, action: Any) -> str:
        return clean_markup(super()._expand_help(action))


class ConciseParser(LightningArgumentParser):
    """Reports a parsing mistake as one line on stderr and exits with code 2; `--help all` names the
    command as it is typed and titles each group with a whole sentence."""

    # The command-line arguments, for hints about keys of earlier versions; on the class, because the
    # parsers that jsonargparse makes for nested classes report their own mistakes.
    given: tuple[str, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("prog", PROG)
        kwargs.setdefault("usage", f"{PROG} [--config PRESET|FILE ...] [--OPTION VALUE ...]")
        kwargs.setdefault("description", f"{DESCRIPTION} `{PROG} --help` is the short version.")
        kwargs.setdefault("formatter_class", PlainHelpFormatter)
        super().__init__(*args, **kwargs)

    def format_help(self, *args: Any, **kwargs: Any) -> str:
        one_class = str(self.description or "").startswith("Help for")  # `--model.help CLASS` and the like
        for name, group in (self.groups or {}).items():
            group.title = section_title(name, group, one_class)
        return super().format_help(*args, **kwargs)

    def parse_args(self, args: Any = None, *rest: Any, **kwargs: Any) -> Any:
        ConciseParser.given = tuple(sys.argv[1:] if args is None else args)
        return super().parse_args(args, *rest, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        hint = renamed_hint(str(message), self.given)
        print(f"error: {hint or short_message(message)} (see --help)", file=sys.stderr)
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


SECTION_TITLES = {
    "trainer": "--trainer: Lightning's Trainer (precision 'auto' chooses for this machine)",
    "model": "--model: the task (--model CLASS) and its core (--model.net CLASS)",
    "data": "--data: the datamodule (--data CLASS)",
}


def section_title(name: str, group: Any, one_class: bool = False) -> str:
    """A group's title: its option prefix and the first sentence of its class's docstring (jsonargparse takes
    the first line, which often stops mid-sentence)."""
    if name in SECTION_TITLES and not one_class:
        return SECTION_TITLES[name]
    cls = getattr(group, "group_class", None)
    paragraph = (inspect.getdoc(cls) or "").split("\n\n")[0] if cls is not None else str(group.title or "")
    sentence = re.split(r"(?<=[.!?])\s", " ".join(paragraph.split()), maxsplit=1)[0].rstrip(".;:, ")
    return f"--{name}: {clean_markup(sentence)}"


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


def import_class(class_path: str) -> type:
    """The class a config's `class_path` names (jsonargparse has imported it while parsing)."""
    module_name, _, class_name = class_path.rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)


def refuse_a_task_without_facts(model: Namespace, data: L.LightningDataModule) -> None:
    """A firstlight task builds its core from the data's facts: a datamodule without them (a plain
    LightningDataModule) trains only a LightningModule of the user's own."""
    from experiments.help import datamodules  # reads the package's sources: only on this mistake
    from modules.task import TaskModule

    if not issubclass(import_class(model.class_path), TaskModule):
        return
    known = {fact for path in datamodules() for fact in import_class(path).model_facts}
    wanted = [
        name
        for component in (model, model.init_args.get("net"))
        if isinstance(component, Namespace) and "class_path" in component
        for name in inspect.signature(import_class(component.class_path)).parameters
        if name in known
    ]
    raise ConfigError(
        f"--data {type(data).__name__} is a LightningDataModule without firstlight's facts, and the task "
        f"{model.class_path.rpartition('.')[2]} takes {', '.join(dict.fromkeys(wanted)) or 'its sizes'} from them: "
        "subclass datamodules.base.DataModule and declare model_facts (docs/your-own-data.md), or train a "
        "LightningModule of your own (--model)"
    )


def give_facts(model: Namespace, facts: dict[str, Any]) -> None:
    """Set each of the data's facts as an argument of the task and of its core, wherever their `__init__`
    takes one of that name (a `num_classes` for the classifier, a `vocab_size` for its embedding, ...)."""
    for component in (model, model.init_args.get("net")):
        if not isinstance(component, Namespace) or "class_path" not in component:
            continue
        parameters = inspect.signature(import_class(component.class_path)).parameters
        for name, value in facts.items():
            if name in parameters:
                component.init_args[name] = value


class FirstlightCLI(LightningCLI):
    def __init__(self, args: list[str], preset: str) -> None:
        self.preset = preset
        self.args = args
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

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parsed, and the seed checked before Lightning seeds with it (numpy's range: a ValueError there)."""
        super().parse_arguments(parser, args)
        seed = self.config.get("seed_everything")
        if isinstance(seed, int) and not isinstance(seed, bool):  # True: a random seed; False: no seeding
            check_range("seed_everything", seed, 0, SEED_MAX)

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        parser = super().init_parser(**kwargs)
        for action in parser._actions:
            if "--config" in action.option_strings:  # `presets.expand_configs` resolves names before parsing
                action.metavar, action.help = "PRESET|FILE", "a preset's name or a YAML file; several merge"
        return parser

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

    def before_instantiate_classes(self) -> None:
        """Name the run and point the checkpoints at its directory (created later, once the data is found)."""
        options = self.config.run
        refuse_training_nothing(self.config.trainer)
        refuse_trainer_logger(self.config.trainer)
        experiment = check_name("--run.experiment", options.experiment or self.preset)
        self.run_dir, self.resume_from = choose_run(options, experiment, self.args)
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
        self.config_yaml = without_facts(self.parser.dump(self.config), self.config.data)
        self.config.checkpoint.dirpath = str(self.run_dir / "checkpoints")
        self.config.trainer.default_root_dir = str(self.run_dir)

    def choose_precision_for_the_network(self) -> None:
        """`auto` chose bf16-mixed for this CPU; keep it only if it trains this network faster here, measured
        (experiments/precision_probe.py). One process only: ranks that measured apart could disagree."""
        trainer, choice = self.config.trainer, self.precision_choice
        if choice is None or choice.precision != "bf16-mixed" or device_kind(trainer.accelerator) != "cpu":
            return
        if str(trainer.devices) not in ("1", "auto") or int(trainer.num_nodes or 1) != 1 or "LOCAL_RANK" in os.environ:
            return
        measure = worth_measuring(trainer)
        speedup = measured_speedup(self.model, self.datamodule, measure=measure, epochs=trainer.max_epochs)
        self.precision_choice = network_choice(speedup, self.model, choice)
        if self.precision_choice.precision != choice.precision:  # the Trainer is made from config_init
            trainer.precision = self.config_init.trainer.precision = self.precision_choice.precision
            self.config_yaml = with_precision(self.config_yaml, trainer.precision)

    def instantiate_classes(self) -> None:
        """The datamodule first; then the model, with the data's facts among its arguments (recorded in its
        hyperparameters, so a checkpoint rebuilds the same model) and a W&B artifact its core loads from
        downloaded first; then the trainer."""
        data_only = self.config.clone()
        data_only.model = None
        self.datamodule = self.parser.instantiate_classes(data_only, instantiate_groups=False).data
        if not hasattr(self.datamodule, "facts"):  # a LightningDataModule not firstlight's: it gives none
            refuse_a_task_without_facts(self.config.model, self.datamodule)
        give_facts(self.config.model, getattr(self.datamodule, "facts", dict)())
        vars(self).pop("config_dump", None)  # Lightning's record of the given hyperparameters, now with the facts
        rest = self.config.clone()
        rest.data = None
        download_core_artifacts(rest.model)  # on the copy: the config that is logged keeps the wandb: reference
        self.config_init = self.parser.instantiate_classes(rest)
        self.config_init.data = self.datamodule
        self.model = self.config_init.model
        self.init_note = self.start_from_another_run()
        self.trainer = self.instantiate_trainer()

    def start_from_another_run(self) -> str:
        """`--model.init_from`: the earlier run's weights that fit, copied in; a resumed run has its own."""
        reference = getattr(self.model, "init_from", None)
        if not reference or self.resume_from:
            return ""
        return init_from(self.model, reference, Path(self.config.run.root))

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        trainer = self.config.trainer
        self.choose_precision_for_the_network()
        # One line on what precision runs and why (or what a bf16 precision costs on this CPU).
        precision_note = check_bf16_on_cpu(trainer.precision, trainer.accelerator, self.model) or str(
            self.precision_choice or f"precision: {trainer.precision} (given)"
        )
        if loading := getattr(self.datamodule, "loading_note", str)():
            precision_note += f"\n{loading}"
        if self.init_note:
            precision_note += f"\n{self.init_note}"
        options = RunOptions(**self.config.run)
        options.name = options.name or self.default_name
        no_validation = missing_stage(self.model, self.datamodule, "validation")
        if no_validation:  # Lightning skips validation; checkpoints then keep the latest state, not the best
            if options.patience is not None:
                raise ConfigError(f"--run.patience needs validation, and {no_validation}")
            self.config_init.checkpoint.monitor = None
            precision_note += f"\nno validation ({no_validation}): checkpoints keep the latest weights"
        logger = make_logger(options, self.experiment, self.run_id, self.run_dir)
        callbacks = list(self.config_init.trainer.get("callbacks") or [])
        callbacks += [
            EpochLog(),
            Provenance(str(self.run_dir)),
            LocalReport(str(self.run_dir)),
            DatasetArtifact(),
            LearningRateMonitor(logging_interval="step"),
            ScheduleFollowsTimeBudget(),
            RunState(self.run_id),
            FiniteLoss(),
            MonitorCheck(),
            StartNote(precision_note),
            LastCheckpoint(self.config.checkpoint.dirpath),
        ]
        if (pruning := pruning_from_environment()) is not None:  # a trial of an offline sweep with early_terminate
            callbacks.append(pruning)
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


def refuse_training_nothing(trainer: Namespace) -> None:
    """Lightning takes a limit of 0 batches, epochs or steps and "finishes" without training anything."""
    for option in ("limit_train_batches", "max_epochs", "max_steps"):
        if trainer.get(option) == 0:
            raise ConfigError(f"--trainer.{option} 0 trains nothing; give at least one (or leave it out)")


def refuse_trainer_logger(trainer: Namespace) -> None:
    """firstlight makes the run's loggers itself (history.jsonl, and W&B or CSV by --run.logger); a
    `trainer.logger` would be replaced without a word."""
    logger = trainer.get("logger")
    if logger is None:
        return
    instead = "--run.logger none" if logger is False else "--run.logger wandb|csv|none (W&B: --run.project, --run.name)"
    raise ConfigError(f"--trainer.logger is not used: firstlight sets up the run's loggers; use {instead}")


def with_precision(config_yaml: str, precision: str) -> str:
    config = yaml.safe_load(config_yaml)
    config["trainer"]["precision"] = precision
    return yaml.safe_dump(config, sort_keys=False)


def without_facts(config_yaml: str, data: Namespace) -> str:
    """The config without the model arguments that the data fills in (their defaults would mislead)."""
    data_class = import_class(data.class_path)
    facts = (*getattr(data_class, "model_facts", ()), *getattr(data_class, "optional_facts", ()))
    config = yaml.safe_load(config_yaml)
    model = config.get("model") or {}
    for component in (model, (model.get("init_args") or {}).get("net")):
        init_args = component.get("init_args") if isinstance(component, dict) else None
        for name in facts:
            (init_args or {}).pop(name, None)
    return yaml.safe_dump(config, sort_keys=False)


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
