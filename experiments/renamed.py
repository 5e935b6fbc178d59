"""Hints for settings of earlier versions: the class paths and keys that the task/core split renamed."""

from __future__ import annotations

import re

# Earlier model classes -> the task and the core that replace them.
RENAMED_MODELS = {
    "modules.image_classifier.ImageClassifier": (
        "modules.classification.ClassificationTask",
        "cores.cnn.CNNClassifier",
    ),
    "modules.sequence_classifiers.RNNClassifier": (
        "modules.classification.ClassificationTask",
        "cores.recurrent.RNNClassifier",
    ),
    "modules.sequence_classifiers.TransformerClassifier": (
        "modules.classification.ClassificationTask",
        "cores.transformer.TransformerClassifier",
    ),
    "modules.language_model.TransformerLanguageModel": (
        "modules.language_model.LanguageModelTask",
        "cores.transformer.TransformerLanguageModel",
    ),
    "modules.language_model.RNNLanguageModel": (
        "modules.language_model.LanguageModelTask",
        "cores.recurrent.RNNLanguageModel",
    ),
    "modules.seq2seq.TransformerSeq2Seq": ("modules.seq2seq.Seq2SeqTask", "cores.transformer.TransformerSeq2Seq"),
    "modules.forecaster.RNNForecaster": ("modules.forecasting.ForecastTask", "cores.recurrent.RNNForecaster"),
}


def renamed_hint(message: str, given: tuple[str, ...] = ()) -> str | None:
    """A one-line hint when a parsing error comes from a class path or key of an earlier version: an
    old model class, or a core's setting given to the task (`--model.dropout`, not `--model.net.dropout`)."""
    for old, (task, core) in RENAMED_MODELS.items():
        if old in message:
            return (
                f"{old} is now the task {task} with the core {core}: "
                f"--model {task} --model.net {core} (a config's model.init_args.net.class_path); "
                "the core's settings move under model.init_args.net.init_args"
            )
    key = re.search(r"(?:No action for key|Key|Option) \"?'?([\w.]+)", message)
    if key is None:
        return None
    name = key.group(1).rpartition(".")[2]
    at_task_level = any(re.fullmatch(rf"--model\.(init_args\.)?{re.escape(name)}(=.*)?", arg) for arg in given)
    if not (at_task_level and is_core_setting(name)):
        return None
    return (
        f"'{key.group(1)}' is a setting of the model's core now: "
        f"--model.init_args.net.init_args.{name} (in a config, under model.init_args.net.init_args)"
    )


def is_core_setting(name: str) -> bool:
    """Whether a firstlight core takes an argument of that name."""
    import importlib
    import inspect
    import pkgutil

    import cores
    from cores.contracts import Core

    for module in pkgutil.iter_modules(cores.__path__):  # every core defined, whichever file it is in
        importlib.import_module(f"cores.{module.name}")

    def all_cores(base: type[Core]) -> list[type[Core]]:
        return [c for sub in base.__subclasses__() for c in (sub, *all_cores(sub))]

    return any(name in inspect.signature(core).parameters for core in all_cores(Core))
