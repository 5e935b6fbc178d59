"""One preset trained with several seeds, and the spread of its test metrics, so a gain can be told from noise.

    python -m experiments.seeds lstm_sentiment                               # seeds 0, 1, 2
    python -m experiments.seeds cnn_digits --seeds 0 1 2 3 4 -- --trainer.max_epochs 10

A local grid sweep over `seed_everything` (`experiments.sweep`: each seed its own run in
runs/<preset>_seeds/, the same command again resumes it), which ends by printing each test metric's mean ±
sample standard deviation over the seeds. Run options after `--` apply to every seed. The seed sets the
initialisation and the data order; the datamodules' splits have their own seed and stay as they are.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from experiments.command_line import command_parser, refused
from experiments.sweep import run_local
from experiments.sweep_spec import parse_spec
from validation import SEED_MAX, ConfigError, check_range


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    run_options = argv[argv.index("--") + 1 :] if "--" in argv else []
    ours = argv[: argv.index("--")] if "--" in argv else argv
    parser = command_parser("seeds", __doc__)
    parser.add_argument("config", help="a preset name (experiments/configs) or a config file")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    parser.add_argument("--root", type=Path, default=Path("runs"), help="directory of all experiments' runs")
    args = parser.parse_args(ours)
    try:
        if len(set(args.seeds)) < 2:
            raise ConfigError(f"--seeds needs two or more different seeds for a spread, got {args.seeds}")
        for seed in args.seeds:
            check_range("--seeds", seed, 0, SEED_MAX)
        name = f"{Path(args.config).stem}_seeds"
        if run_options or args.seeds != [0, 1, 2]:  # other options or seeds: another sweep, its own directory
            planned = " ".join([*run_options, "--seeds", *map(str, args.seeds)])
            name += "_" + hashlib.sha256(planned.encode()).hexdigest()[:8]
        raw = {
            "name": name,
            "method": "grid",
            "command": ["-m", "experiments.run", "--config", args.config, *run_options, "${args}"],
            "parameters": {"seed_everything": {"values": args.seeds}},
        }
        # Every seed must finish: the spread of some of them is no spread over the seeds asked for.
        return run_local(parse_spec(raw, Path(f"seeds of {args.config}")), args.root, None, 0, False, every_trial=True)
    except ConfigError as error:
        return refused(error)


if __name__ == "__main__":
    sys.exit(main())
