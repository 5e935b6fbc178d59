"""A real one-host SLURM cluster (experiments/cluster/local_slurm.sh, started by .ci/run): the sbatch
template trains a preset with 2 DDP tasks, and a requeued job resumes its run from the checkpoint."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import HANG_GUARD_S, run_module, wandb_records

REPO = Path(__file__).parents[1]
TEMPLATE = REPO / "experiments" / "cluster" / "train.sbatch"


def slurm_ready() -> bool:
    if not (os.environ.get("SLURM_CONF") and shutil.which("sbatch")):
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not slurm_ready() and not os.environ.get("FIRSTLIGHT_REQUIRE_SLURM"),
        reason="no SLURM cluster: eval $(experiments/cluster/local_slurm.sh start <dir>) (.ci/run does)",
    ),
]


def submit(cwd: Path, *run_args: str) -> str:
    """sbatch the template with 2 CPU tasks on one node; returns the job id."""
    command = [
        *("sbatch", "--parsable", "--gpus-per-node=0", "--ntasks-per-node=2", "--cpus-per-task=1"),
        *(f"--chdir={cwd}", f"--export=ALL,PYTHONPATH={REPO},WANDB_MODE=offline", str(TEMPLATE)),
        *("--config", "cnn_digits", "--trainer.accelerator", "cpu", *run_args),
    ]
    # The job gets sbatch's environment (--export=ALL), less this process's W&B service address: the job
    # starts its own service, as a user's job does.
    env = {name: value for name, value in os.environ.items() if name != "WANDB_SERVICE"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(";")[0]


def job_fields(job: str) -> dict[str, str]:
    """`scontrol show job`'s fields (JobState, Restarts, ...); {} if slurmctld did not answer this time.
    Unlike squeue, it keeps showing a job for MinJobAge (300 s) after it ends, with its final state."""
    result = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True)
    return dict(re.findall(r"(\w+)=(\S*)", result.stdout)) if result.returncode == 0 else {}


def state(job: str) -> str:
    """The job's state: PENDING, RUNNING, COMPLETED, FAILED, ...; "" when slurmctld did not answer."""
    return job_fields(job).get("JobState", "")


FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL"}


def final_state(job: str, timeout: float) -> str:
    """Waits for the job to end; its final state, read once (a second query might go unanswered)."""
    deadline = time.monotonic() + timeout
    while (current := state(job)) not in FINAL_STATES:
        assert time.monotonic() < deadline, f"timed out waiting for job {job} to finish"
        time.sleep(0.5)
    return current


def previous_instance_gone(job: str) -> bool:
    """No process of the job's previous run is left on this one-node cluster (its slurmstepd included)
    and the node is idle. Started before that, a requeued job meets the credential that SLURM revoked
    when it stopped the previous run, and fails ("Job credential revoked"); SLURM's own requeue delay
    avoids this, and the test skips that delay only once this holds."""
    steps = subprocess.run(["pgrep", "-f", rf"slurmstepd: \[{job}\."], capture_output=True)
    node = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    return steps.returncode == 1 and node.returncode == 0 and node.stdout.split() == ["idle"]


def cluster_log(job: str) -> str:
    """What to read when a job did not do what a test expected: its record and slurmctld's log."""
    log = Path(os.environ["SLURM_CONF"]).parent / "log" / "slurmctld.log"
    lines = log.read_text().splitlines()[-40:] if log.is_file() else []
    return "\n".join([f"{k}={v}" for k, v in job_fields(job).items()] + lines)


def wait_until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_a_two_task_job_trains_a_preset_with_ddp(tmp_path: Path) -> None:
    job = submit(tmp_path, "--trainer.max_epochs", "2")
    assert final_state(job, HANG_GUARD_S) == "COMPLETED", cluster_log(job)
    output = (tmp_path / f"slurm-{job}.out").read_text()
    (run_dir,) = (tmp_path / "runs" / "cnn_digits").glob(f"slurm-{job}-*")  # the run id: the job's and the command's
    assert f"run dir: {run_dir}" in output, output[-3000:]
    assert [p.name for p in run_dir.parent.iterdir()] == [run_dir.name]  # two tasks, one run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test/acc"] > 0.8
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    # 1,294 training digits over the 2 ranks: 10 batches of 64 each per epoch.
    history = [r["history"]["item"] for r in wandb_records(run_dir) if r["type"] == "history"]
    assert [item["trainer/global_step"] for item in history if "val/acc" in item] == [9, 19]


@pytest.mark.parametrize(
    ("stop", "signal_name"),
    [
        (["scontrol", "requeue"], "SIGTERM"),  # preemption or an operator: SLURM signals, then requeues
        (["scancel", "--signal=USR1"], "SIGUSR1"),  # as --signal=USR1@120 before the time limit: the run requeues
    ],
)
def test_a_requeued_job_resumes_its_run_from_the_checkpoint(stop: list[str], signal_name: str, tmp_path: Path) -> None:
    job = submit(tmp_path, "--trainer.max_epochs", "12")
    runs = tmp_path / "runs" / "cnn_digits"
    wait_until(lambda: any(runs.glob(f"slurm-{job}-*/history.jsonl")), HANG_GUARD_S, "the run to start")
    (run_dir,) = runs.glob(f"slurm-{job}-*")
    history = run_dir / "history.jsonl"
    wait_until(lambda: history.read_text().count('"val/acc"') >= 3, HANG_GUARD_S, "3 epochs")
    subprocess.run([*stop, job], check=True)
    wait_until(lambda: job_fields(job).get("Restarts") == "1" and state(job) == "PENDING", 120, "the requeue")
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file() and not (run_dir / "summary.json").exists()
    wait_until(lambda: previous_instance_gone(job), 120, f"job {job}'s previous run to end on the node")
    time.sleep(2)  # a margin: the node compares the new credential's time with that of the revocation
    subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], check=True)  # skip the requeue delay
    assert final_state(job, HANG_GUARD_S) == "COMPLETED", cluster_log(job)  # after its requeue

    output = (tmp_path / f"slurm-{job}.out").read_text()
    assert "restart 0" in output and "restart 1" in output, output[-3000:] + cluster_log(job)
    assert f"{signal_name}: saved {checkpoint} at step" in output  # mid-epoch, after the running batch
    assert f"resuming {run_dir} from last.ckpt" in output
    assert json.loads((run_dir / "summary.json").read_text())["test/acc"] > 0.8
    steps = [json.loads(line)["step"] for line in history.read_text().splitlines() if '"train/loss"' in line]
    assert steps == list(range(4, 12 * 10, 5))  # every 5th step of 12 epochs x 10, none twice, none missing


def test_run_with_cluster_slurm_submits_a_job_that_trains_where_the_command_said(tmp_path: Path) -> None:
    args = ["--config", "cnn_digits", "--trainer.max_epochs", "2", "--run.logger", "csv", "--run.root", "runs"]
    cluster = ["--cluster", "slurm", "--cluster.gpus", "0", "--cluster.cpus", "1"]
    result = run_module("experiments.run", *args, *cluster, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    job = re.search(r"submitted SLURM job (\d+): python -m experiments.run --config cnn_digits", result.stdout)
    where = re.search(r"run directory: (\S+) \(summary.json there", result.stdout)
    assert job and where, result.stdout
    assert final_state(job[1], HANG_GUARD_S) == "COMPLETED", cluster_log(job[1])
    run_dir = Path(where[1])
    assert run_dir == Path("runs/cnn_digits") / f"slurm-{job[1]}-{run_dir.name.rsplit('-', 1)[1]}"
    assert json.loads((tmp_path / run_dir / "summary.json").read_text())["test/acc"] > 0.8
    output = (tmp_path / f"runs/cnn_digits/slurm-{job[1]}.out").read_text()
    assert f"run dir: {(tmp_path / run_dir).absolute()}" in output, output[-3000:]
    compared = run_module("experiments.compare", "runs/cnn_digits", cwd=tmp_path)  # the job's run, as any run
    assert compared.returncode == 0 and run_dir.name in compared.stdout, compared.stdout + compared.stderr


def test_a_sweep_of_two_slurm_workers_runs_each_trial_once_and_a_killed_workers_trial_is_resumed(
    tmp_path: Path,
) -> None:
    """`experiments.sweep --cluster slurm --workers 2`: a job array of two sweep workers sharing sweep.json.
    One worker's job is cancelled while its trial trains (after its first checkpoint); its trial is recorded
    as interrupted and the other worker takes it over, resuming its run. Every trial ran once: one run each."""
    lrs = [0.01, 0.005, 0.003]
    TRIAL = ["${env}", "${interpreter}", "-m", "experiments.run", "--config", "cnn_digits"]
    spec = {
        "name": "workers",
        "command": [*TRIAL, "--run.logger", "csv", "--trainer.precision", "32-true", "${args}"],
        "method": "grid",
        "metric": {"name": "val/acc", "goal": "maximize"},
        "parameters": {"model.lr": {"values": lrs}, "trainer.max_epochs": {"value": 15}},
    }
    (tmp_path / "workers.yaml").write_text(json.dumps(spec))
    cluster = ["--cluster", "slurm", "--workers", "2", "--cluster.gpus", "0", "--cluster.cpus", "1"]
    result = run_module("experiments.sweep", "workers.yaml", "--root", "runs", *cluster, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    job = re.search(r"submitted SLURM job array (\d+): 2 workers", result.stdout)
    assert job, result.stdout
    sweep_dir = tmp_path / "runs" / "workers"

    def training_with_a_checkpoint() -> str | None:
        record = sweep_dir / "sweep.json"
        trials = json.loads(record.read_text())["trials"].values() if record.is_file() else []
        return next(
            (
                t["run_id"]
                for t in trials
                if t["status"] == "running" and (sweep_dir / t["run_id"] / "checkpoints" / "last.ckpt").is_file()
            ),
            None,
        )

    wait_until(lambda: training_with_a_checkpoint() is not None, HANG_GUARD_S, "a trial's first checkpoint")
    run_id = training_with_a_checkpoint()
    (worker,) = [k for k in (0, 1) if run_id in (sweep_dir / f"slurm-{job[1]}_{k}.out").read_text()]
    subprocess.run(["scancel", f"{job[1]}_{worker}"], check=True)
    for task in (f"{job[1]}_0", f"{job[1]}_1"):
        final_state(task, HANG_GUARD_S)
    trials = json.loads((sweep_dir / "sweep.json").read_text())["trials"]
    outputs = {k: (sweep_dir / f"slurm-{job[1]}_{k}.out").read_text() for k in (0, 1)}
    assert sorted(trials) == ["0", "1", "2"], outputs
    assert [trials[str(i)]["status"] for i in range(3)] == ["finished"] * 3, outputs
    (killed,) = [t for t in trials.values() if t["run_id"] == run_id]
    assert killed["resume"] and f"{run_id}  (resuming)" in outputs[1 - worker], outputs  # the other worker
    assert "sweep stopped by SIGTERM" in outputs[worker]
    runs = sorted(p.parent.name for p in sweep_dir.glob("*/config.yaml"))
    assert runs == sorted(t["run_id"] for t in trials.values())  # one run per trial: none ran twice
    assert all((sweep_dir / r / "summary.json").is_file() for r in runs)
