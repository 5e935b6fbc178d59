"""Messages of the libraries that tell a firstlight user nothing they can act on, kept out of the output.

hide_unactionable_messages()       # once, as the run command starts: for the whole process
with muted("lightning.pytorch"):   # a block of work the user did not ask to watch (a precision probe's
    ...                            #   Trainers, an exporter's passes): its notices, warnings and prints
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator


class QuietLightning(logging.Filter):
    """Drops Lightning's product tips and seed notice; its other messages stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("💡 Tip", "Seed set to"))


QUIET = QuietLightning()


def hide_unactionable_messages() -> None:
    """Install the filters (once: a logger keeps one copy of a filter)."""
    for name in ("lightning.fabric.utilities.seed", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).addFilter(QUIET)
    # Lightning 2.6 calls a torch API that torch 2.14 deprecates, on every test run; nothing for users to do.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # On any machine with SLURM's client (a login node, CI): firstlight's own job script runs under srun, and a
    # command started without it is a local run, as intended.
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system but is not used")


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """What a library prints (to sys.stdout or sys.stderr) in the block goes nowhere."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


@contextlib.contextmanager
def muted(logger_name: str) -> Iterator[None]:
    """In the block, the logger `logger_name` (and those below it) reports errors only, every warning is
    ignored, and what is printed goes nowhere; an error raised in the block is the caller's to report."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), silenced():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
