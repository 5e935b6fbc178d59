"""Which way is better for each metric the tasks report, for sorting runs and choosing the best trial.

    higher_is_better("test/bleu")      # True
    higher_is_better("val/loss_best")  # False
    higher_is_better("val/iou")        # ConfigError: say --higher-better or --lower-better

A metric is named `<stage>/<name>` (a `_best` suffix is the best value so far of the same metric); the table
holds every name that a task of firstlight logs (tests/test_presets.py checks every preset's summary against
it), and a name it does not hold is refused rather than guessed.
"""

from __future__ import annotations

from validation import ConfigError

HIGHER_IS_BETTER = {
    "acc": True,  # classification accuracy
    "f1": True,  # macro F1
    "exact_match": True,  # sequence-to-sequence: whole outputs right
    "token_acc": True,  # sequence-to-sequence: target tokens right
    "bleu": True,  # sacreBLEU, 0-100
    "chrf": True,  # chrF, 0-100
    "loss": False,
    "bpc": False,  # bits per character
    "mse": False,
    "mae": False,
    "mse_naive": False,  # the last-value forecast's error on the same windows
    "perplexity": False,
}


def metric_name(metric: str) -> str:
    """ "test/acc" -> "acc", "val/loss_best" -> "loss"."""
    return metric.rpartition("/")[2].removesuffix("_best")


def higher_is_better(metric: str, stated: bool | None = None) -> bool:
    """Whether larger values of `metric` are better: `stated` where given (a sweep's goal, a command's flag),
    else the table's answer for its name; ConfigError for a name the table does not hold."""
    if stated is not None:
        return stated
    name = metric_name(metric)
    if name not in HIGHER_IS_BETTER:
        raise ConfigError(
            f"which way is better for {metric} is not known; say so with --higher-better or --lower-better"
        )
    return HIGHER_IS_BETTER[name]
