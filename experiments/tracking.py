"""Experiment trackers: W&B (offline unless configured online), CSV, or none."""

from __future__ import annotations

import contextlib
import functools
import http.client
import netrc
import os
import ssl
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
from lightning.pytorch.loggers import CSVLogger, Logger

from experiments.message_filters import silenced
from validation import first_line


@dataclass
class RunOptions:
    """Identity and tracking of a run.

    Args:
        experiment: experiment name; runs go to <root>/<experiment>/<run id>/. Default: the preset's name.
        root: directory that holds all experiments' runs.
        logger: "wandb" (offline unless W&B is configured online; WANDB_MODE is respected), "csv" or "none".
        project: W&B project.
        name: W&B run name. Default: the preset and the arguments given beside it ("cnn_digits lr=0.01").
        group: W&B group. Default: the experiment name.
        tags: W&B tags.
        test: after training, test the best checkpoint.
        patience: stop early after this many validations without improvement of checkpoint.monitor.
        resume: continue a run from its last checkpoint, in its directory and W&B run: a run directory,
            a run id, or "auto" (the newest unfinished run of this experiment; a new run if there is none).
    """

    experiment: str | None = None
    root: str = "runs"
    logger: Literal["wandb", "csv", "none"] = "wandb"
    project: str = "firstlight"
    name: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    test: bool = True
    patience: int | None = None
    resume: str | None = None


OFFLINE_RUN = "logging offline instead, sync it later with `wandb sync <run dir>/wandb/offline-run-*`"
PROBE_TIMEOUT_S = 3.0  # W&B itself waits 90 s (its init_timeout) for a server that does not answer


def wandb_mode(fallback: str = OFFLINE_RUN) -> str:
    """WANDB_MODE if set; else online only when credentials exist (WANDB_API_KEY or a netrc entry).
    Online without credentials (W&B would ask for a key), or with W&B's server unreachable (W&B would wait
    90 s for it), falls back to offline with a one-line warning that ends in `fallback`."""
    mode = os.environ.get("WANDB_MODE") or ("online" if has_wandb_credentials() else "offline")
    if mode == "online" and (problem := wandb_online_problem()):
        print(f"warning: {problem}; {fallback}", file=sys.stderr)
        return "offline"
    return mode


def wandb_online_problem() -> str | None:
    """Why W&B cannot go online from here, in a phrase, or None: no credentials, or no answer from its server."""
    if not has_wandb_credentials():
        return "WANDB_MODE=online but no W&B credentials (WANDB_API_KEY or `wandb login`)"
    if reason := unreachable(url := wandb_base_url()):
        return f"W&B could not start an online run ({url} is unreachable: {reason})"
    return None


def wandb_base_url() -> str:
    """The W&B server this process would talk to, as W&B resolves it (WANDB_BASE_URL, `wandb login --host`'s
    settings file, else W&B's default), without starting W&B's service."""
    from wandb.sdk import wandb_setup

    return str(wandb_setup.singleton().settings.base_url)


def unreachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why nothing answers at `url` within `timeout` seconds (no network, no DNS, nothing listening, no
    reply), or None when something does: any HTTP status, or a TLS handshake this process refuses, is an
    answer, and W&B then reports its own problem quickly. Proxies from the environment are used, as W&B
    uses them; the request runs in a thread so that a slow name lookup cannot outlast `timeout` either."""
    outcome: list[str | None] = []

    def request() -> None:
        try:
            urllib.request.urlopen(url, timeout=timeout + 1).close()  # the join below decides first
        except urllib.error.HTTPError:
            pass
        except urllib.error.URLError as error:  # its reason: the socket's error
            if not isinstance(error.reason, ssl.SSLError):
                outcome.append(str(error.reason) or type(error.reason).__name__)
                return
        except (ssl.SSLError, http.client.HTTPException):  # an answer, if not one urllib understands
            pass
        except OSError as error:  # TimeoutError or a reset while reading the reply
            outcome.append(str(error) or type(error).__name__)
            return
        outcome.append(None)

    thread = threading.Thread(target=request, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = wandb_base_url().split("//")[-1]  # W&B's own choice of server, as `wandb login` records it
        return bool(netrc.netrc().authenticators(host))
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_sweep_run_id() -> str | None:
    """The run id a W&B sweep agent gave this process, so the run directory and the W&B run share it."""
    return os.environ.get("WANDB_RUN_ID") if os.environ.get("WANDB_SWEEP_ID") else None


def outlives_wandb(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a W&B logging call; if W&B's service is gone, warn once and log nothing more to W&B."""

    @functools.wraps(method)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(self, "broken", False):
            return None
        try:
            return method(self, *args, **kwargs)
        except OSError as error:  # ConnectionResetError, BrokenPipeError: the service process has ended
            self.broken = True
            import wandb

            with contextlib.suppress(Exception):
                wandb.teardown()  # drops W&B's exit hook, which would otherwise fail again at exit, loudly
            print(
                f"warning: W&B stopped ({type(error).__name__}: {error}); logging to W&B is off for the rest of "
                "this run, history.jsonl and the checkpoints go on",
                file=sys.stderr,
            )
            return None

    return guarded


def resilient_wandb_logger(**kwargs: Any) -> Logger:
    """A WandbLogger that a dead W&B service cannot stop. On a cluster, the SIGTERM that asks a job to stop
    reaches every process of it, W&B's service too; training must still reach its next batch end to save
    the checkpoint it resumes from."""
    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.loggers.logger import rank_zero_experiment

    class ResilientWandbLogger(WandbLogger):
        broken = False

        def __init__(self, **options: Any) -> None:
            super().__init__(**options)
            self._wandb_init.pop("anonymous", None)  # Lightning always sets it; W&B 0.31 warns on every run

        @property
        @rank_zero_experiment
        def experiment(self) -> Any:
            """The W&B run; an online run that cannot start (no network, W&B down, a refused key) becomes an
            offline run, with a warning: everything is kept for `wandb sync`."""
            if self._experiment is None and self._wandb_init.get("mode") == "online":
                try:
                    return WandbLogger.experiment.fget(self)  # type: ignore[attr-defined]
                except Exception as error:  # wandb.errors.CommError, UsageError, AuthenticationError, ...
                    import wandb

                    with contextlib.suppress(Exception):
                        wandb.teardown()  # W&B's service still holds the half-started run's id
                    print(
                        f"warning: W&B could not start an online run ({first_line(error)}); "
                        + OFFLINE_RUN.replace("<run dir>", str(self.save_dir)),
                        file=sys.stderr,
                    )
                    self._wandb_init["mode"] = "offline"
            return WandbLogger.experiment.fget(self)  # type: ignore[attr-defined]

        log_hyperparams = outlives_wandb(WandbLogger.log_hyperparams)
        log_metrics = outlives_wandb(WandbLogger.log_metrics)
        log_table = outlives_wandb(WandbLogger.log_table)
        log_image = outlives_wandb(WandbLogger.log_image)
        after_save_checkpoint = outlives_wandb(WandbLogger.after_save_checkpoint)
        finalize = outlives_wandb(WandbLogger.finalize)

        @outlives_wandb
        def log_dict(self, data: dict[str, Any]) -> None:
            """Log a dict of W&B values (media, charts) in one call."""
            self.experiment.log(data)

    return ResilientWandbLogger(**kwargs)


def make_logger(options: RunOptions, experiment: str, run_id: str, run_dir: Path) -> Logger | None:
    if options.logger == "none":
        return None
    if options.logger == "csv":
        return CSVLogger(save_dir=run_dir, name="", version="csv")
    return resilient_wandb_logger(
        save_dir=str(run_dir),
        project=options.project,
        name=options.name or experiment,
        group=options.group or experiment,
        tags=list(dict.fromkeys(options.tags)),  # unique, order kept
        id=run_id,
        job_type="train",
        mode=wandb_mode(OFFLINE_RUN.replace("<run dir>", str(run_dir))),
        resume="allow",  # a resumed run continues its W&B run
        log_model=True,  # checkpoints become model artifacts ("best", "latest") at the end of training
    )


def finish_tracking(
    trainer: L.Trainer, summary: dict[str, Any] | None = None, exit_code: int = 0, silent: bool = False
) -> None:
    """Put the final metrics (best validation value, test metrics) in the W&B summary and close the run,
    so its files are complete (offline runs can then be synced or inspected). A preempted run (non-zero
    `exit_code`) is marked as preempting, which W&B shows as resumable. `silent`: without W&B's footer (a
    run about to be removed, whose files it would tell the user to sync)."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if not isinstance(logger, WandbLogger) or logger._experiment is None or getattr(logger, "broken", False):
            continue
        try:
            if summary:
                logger.experiment.summary.update(summary)
            if exit_code:
                logger.experiment.mark_preempting()
            with silenced() if silent else contextlib.nullcontext():
                logger.experiment.finish(exit_code=exit_code)
        except OSError:  # W&B's service stopped (a cluster signals every process of a job, W&B's too)
            print("note: W&B's service had stopped; its files keep what was logged until then", file=sys.stderr)
