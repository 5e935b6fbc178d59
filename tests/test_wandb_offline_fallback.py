"""W&B online but its server out of reach, or refusing the key: a run logs offline at once instead of
waiting out W&B's 90-s start-up timeout, and a sweep runs here instead of failing. Real servers on
localhost stand in for W&B's: one that never answers, one that refuses every key, a port nothing listens
on."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from experiments.sweep import LOCAL_SWEEP
from experiments.tracking import PROBE_TIMEOUT_S, unreachable
from tests.helpers import run_cli, run_module, wandb_summary

KEY = "0123456789abcdef0123456789abcdef01234567"  # well-formed, refused by any server
CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens on it


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server that accepts connections and never answers, as a black-holed network does."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


class RefusingHandler(http.server.BaseHTTPRequestHandler):
    """Answers every request as W&B's server answers an unknown API key."""

    def answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"errors": [{"message": "invalid api key"}]}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_HEAD = answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def refusing_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RefusingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def online(url: str) -> dict[str, str]:
    return {"WANDB_MODE": "online", "WANDB_API_KEY": KEY, "WANDB_BASE_URL": url}


def test_the_probe_tells_no_answer_from_any_answer(silent_server: str, refusing_server: str) -> None:
    started = time.perf_counter()
    assert unreachable(silent_server, timeout=1) == "no answer within 1 s"
    assert time.perf_counter() - started < 1 + PROBE_TIMEOUT_S  # bounded, however the network fails
    assert "Connection refused" in str(unreachable(CLOSED))
    assert unreachable(refusing_server) is None  # an error status is an answer: W&B reports it itself


@pytest.mark.slow
def test_online_with_a_server_that_never_answers_logs_offline_without_waiting(
    silent_server: str, tmp_path: Path
) -> None:
    """One warning naming the server and why; W&B is never asked to start an online run (it would wait
    90 s for this server, then leave a half-started online run directory), and the offline run is whole."""
    args = ["--config", "cnn_digits", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3"]
    result = run_cli(*args, cwd=tmp_path, env=online(silent_server))
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "cnn_digits").iterdir()
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: W&B")]
    assert warnings == [
        f"warning: W&B could not start an online run ({silent_server} is unreachable: no answer within "
        f"{PROBE_TIMEOUT_S:g} s); logging offline instead, sync it later with "
        f"`wandb sync {run_dir}/wandb/offline-run-*`"
    ]
    assert [p.name.startswith("offline-run-") for p in (run_dir / "wandb").glob("*run-*")] == [True]
    assert wandb_summary(run_dir)["state"] == "finished"


def sweep_online(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    spec = {
        "name": "digits",
        "command": ["${env}", "${interpreter}", "-m", "experiments.run", "--config", "cnn_digits", "${args}"],
        "method": "grid",
        "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": {"trainer.max_epochs": {"value": 1}, "trainer.limit_train_batches": {"value": 3}},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    return run_module(
        "experiments.sweep", str(tmp_path / "spec.yaml"), "--root", str(tmp_path), *args, cwd=tmp_path, env=online(url)
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("server", "warning"),
    [
        ("closed", f"warning: W&B could not start an online run ({CLOSED} is unreachable: [Errno 111]"),
        ("refusing", "warning: W&B could not create the sweep (Failed to verify credentials with http://127.0.0.1:"),
    ],
)
def test_a_sweep_that_cannot_go_online_runs_here(server: str, warning: str, refusing_server: str, tmp_path: Path):
    """W&B unreachable, or refusing the key: one warning, then the local sweep, its trial logging offline."""
    url = refusing_server if server == "refusing" else CLOSED
    result = sweep_online(url, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert line.startswith(warning) and line.endswith(f"; {LOCAL_SWEEP}")
    assert "1 finished, 0 failed, 0 not run" in result.stdout
    trial = json.loads((tmp_path / "digits" / "sweep.json").read_text())["trials"]["0"]
    assert "Traceback" not in Path(trial["log"]).read_text()
    assert wandb_summary(Path(trial["run_dir"]))["state"] == "finished"  # an offline run, ready for `wandb sync`


@pytest.mark.slow
def test_joining_a_wandb_sweep_out_of_reach_is_one_line(tmp_path: Path) -> None:
    result = sweep_online(CLOSED, tmp_path, "--sweep-id", "abc123")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: --sweep-id abc123 joins a W&B sweep, which needs W&B online: W&B could not start an online run "
        f"({CLOSED} is unreachable: [Errno 111] Connection refused)"
    ]
