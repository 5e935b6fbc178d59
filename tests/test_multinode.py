"""Multi-node: two torchrun "nodes" of one process each on 127.0.0.1 train one run together."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import HANG_GUARD_S, wandb_records

ARGS = [
    "--config",
    "cnn_digits",
    "--trainer.max_epochs",
    "2",
    "--trainer.accelerator",
    "cpu",
    "--trainer.devices",
    "1",
    "--trainer.num_nodes",
    "2",
    "--trainer.strategy",
    "ddp",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_torchrun_with_two_nodes_completes_a_preset(tmp_path: Path) -> None:
    port = free_port()
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parents[1])}
    nodes = []
    for rank in (0, 1):
        command = [
            *(sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1"),
            *("--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port)),
            *("-m", "experiments.run", *ARGS),
        ]
        log = open(tmp_path / f"node{rank}.log", "w")  # noqa: SIM115 - closed below
        nodes.append((subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    codes = [process.wait(timeout=HANG_GUARD_S) for process, _ in nodes]
    for _, log in nodes:
        log.close()
    output = (tmp_path / "node0.log").read_text()
    assert codes == [0, 0], output[-3000:] + (tmp_path / "node1.log").read_text()[-3000:]
    (run_dir,) = (tmp_path / "runs" / "cnn_digits").iterdir()  # one run for the two nodes
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test/acc"] > 0.8 and f"run dir: {run_dir}" in output
    # 1,294 training digits over 2 processes: 10 batches of 64 each per epoch, so each node saw half.
    history = [r["history"]["item"] for r in wandb_records(run_dir) if r["type"] == "history"]
    assert [item["trainer/global_step"] for item in history if "val/acc" in item] == [9, 19]
