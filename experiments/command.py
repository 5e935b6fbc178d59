"""`firstlight COMMAND ...`: each of firstlight's commands by name, the same as `python -m experiments.COMMAND`.

    firstlight run --config cnn_digits        # = python -m experiments.run --config cnn_digits
    firstlight predict runs/cnn_digits/RUN seven.png

An installed console command does not put the working directory on `sys.path`, so a user's own
`experiments/` (or `callbacks.py`, ...) there cannot hide firstlight's packages; their modules named in a
config (`--model mymodels.Net`) stay importable, as the working directory is added after firstlight's.
"""

from __future__ import annotations

import os
import runpy
import sys

import experiments

# command -> what it does (one line of `firstlight --help`); each is the module experiments.<command>.
COMMANDS = {
    "run": "train, then test the best checkpoint, in a run directory of its own",
    "predict": "use a trained model on new inputs (--explain: why a classifier answered so)",
    "compare": "compare runs offline, from their directories",
    "sweep": "hyperparameter sweeps from a spec in W&B's format",
    "prepare": "prepare a dataset as shards, once, to stream it",
    "export": "export a trained network to ONNX, TorchScript or torch.export",
    "shrink": "shrink a trained model for CPU inference (dynamic int8)",
}


def usage() -> str:
    width = max(map(len, COMMANDS)) + 2
    rows = "\n".join(f"  {name:<{width}}{what}" for name, what in COMMANDS.items())
    return (
        "usage: firstlight COMMAND [OPTIONS ...]   (the same as python -m experiments.COMMAND)\n\n"
        f"commands:\n{rows}\n\n`firstlight COMMAND --help` describes one.\n"
    )


def main() -> int:
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(usage())
        return 0 if args else 2
    name = args[0]
    if name not in COMMANDS:
        print(
            f"error: unknown command {name!r}; give one of: {', '.join(COMMANDS)} (see firstlight --help)",
            file=sys.stderr,
        )
        return 2
    cwd = os.getcwd()
    if cwd not in sys.path and os.path.realpath(cwd) != os.path.realpath(experiments.ROOT):
        sys.path.append(cwd)  # the user's own modules, named in a config, after firstlight's packages
    sys.excepthook = experiments.interrupt_in_one_line
    sys.argv = [f"firstlight {name}", *args[1:]]
    runpy.run_module(f"experiments.{name}", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
