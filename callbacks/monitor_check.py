"""A checkpoint monitor that names no metric of the model, reported before anything is trained."""

from __future__ import annotations

import lightning as L

from validation import ConfigError


class MonitorCheck(L.Callback):
    """Rejects a checkpoint monitor that names no validation metric of the model at the end of the sanity
    check, before anything is trained or saved (Lightning finds out at the end of the first epoch)."""

    def on_sanity_check_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        monitor = getattr(trainer.checkpoint_callback, "monitor", None)
        if monitor and monitor.startswith("val/") and monitor not in trainer.callback_metrics:
            raise unknown_monitor_error(monitor, trainer)


def unknown_monitor(error: BaseException, trainer: L.Trainer) -> ConfigError | None:
    """A checkpoint or early-stopping monitor that names no logged metric, as Lightning reports it."""
    text = str(error)
    if "could not find the monitored key" not in text and "which is not available" not in text:
        return None
    return unknown_monitor_error(getattr(trainer.checkpoint_callback, "monitor", None), trainer)


def unknown_monitor_error(monitor: str | None, trainer: L.Trainer) -> ConfigError:
    logged = ", ".join(sorted(name for name in trainer.callback_metrics if "/" in name))
    return ConfigError(f"--checkpoint.monitor {monitor} is not a metric this model logs; choose one of: {logged}")
