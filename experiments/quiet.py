"""Lightning's and torch's messages that tell a firstlight user nothing they can act on, silenced."""

from __future__ import annotations

import logging
import warnings


class QuietLightning(logging.Filter):
    """Drops Lightning's product tips and seed notice; its other messages stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("💡 Tip", "Seed set to"))


QUIET = QuietLightning()


def quiet() -> None:
    """Install the filters (once: a logger keeps one copy of a filter)."""
    for name in ("lightning.fabric.utilities.seed", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).addFilter(QUIET)
    # Lightning 2.6 calls a torch API that torch 2.14 deprecates, on every test run; nothing for users to do.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # On any machine with SLURM's client (a login node, CI): firstlight's own job script runs under srun, and a
    # command started without it is a local run, as intended.
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system but is not used")
