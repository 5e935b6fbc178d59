"""Hyperparameter sweeps from a spec in W&B's format.

    python -m experiments.sweep experiments/sweeps/cnn_digits.yaml              # every trial of the grid
    python -m experiments.sweep spec.yaml --count 20                            # random search: 20 trials
    python -m experiments.compare runs/cnn_digits_sweep                         # the trials side by side

With W&B online (configured credentials, or WANDB_MODE=online) it creates a W&B sweep and runs an agent
(`--sweep-id` joins an existing sweep); W&B out of reach or refusing the key, it warns and goes on here.
Otherwise it runs the grid or random search itself: each trial is an ordinary run in
runs/<sweep name>/<run id>/, started as its own process; a failed trial is recorded and the sweep goes on,
a stop signal is passed to the running trial, which saves, and stops the sweep. State lives in
runs/<sweep name>/sweep.json: the same command again skips finished and failed trials, resumes a stopped
one's run and runs the rest, and several processes can work through one sweep at once.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import io
import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from experiments.rundir import finished as run_finished
from experiments.rundir import locked, new_run_id, write_atomic
from experiments.spread import spread_lines
from experiments.sweep_spec import SweepSpec, check_parameter, describe, load_spec, plan_trials, trial_args
from experiments.tracking import first_line, wandb_mode, wandb_online_problem
from validation import ConfigError


class SweepState:
    """runs/<sweep>/sweep.json: one record per trial (params, status, run dir, metric), shared by the
    processes that run the sweep; every change happens under an exclusive lock on sweep.lock."""

    def __init__(self, directory: Path, spec: SweepSpec) -> None:
        self.directory = directory
        self.path = directory / "sweep.json"
        self.spec = spec

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """The state, read under the lock and written back atomically when the block ends."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "sweep.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self.read()
            yield state
            write_atomic(self.path, json.dumps(state, indent=2) + "\n")

    def read(self) -> dict[str, Any]:
        if self.path.is_file():
            return json.loads(self.path.read_text())
        return {
            "name": self.spec.name,
            "spec": str(self.spec.path),
            "fingerprint": self.spec.fingerprint,
            "metric": self.spec.metric,  # and which way is better, for experiments.compare
            "goal": "maximize" if self.spec.maximize else "minimize",
            "trials": {},
        }

    def check_same_spec(self) -> None:
        state = self.read()
        if state["fingerprint"] != self.spec.fingerprint:
            raise ConfigError(
                f"{self.directory} holds a sweep planned from a different method, parameters or command; "
                f"give the new spec another name (name: in the spec) or another --root"
            )

    def claim(self, index: int, params: dict[str, Any], retry_failed: bool) -> dict[str, Any] | None:
        """Mark a trial as running in this process, unless it is done or still running: in another live
        sweep process, or in a trial process that outlived its sweep (it holds its run directory's lock).
        A trial stopped before it finished keeps its run, to resume from that run's last checkpoint."""
        with self.locked() as state:
            trial = state["trials"].get(str(index))
            if trial is not None:
                if trial["status"] == "finished" or (trial["status"] == "failed" and not retry_failed):
                    return None
                if trial["status"] == "running" and claim_alive(trial):
                    return None
                if self.run_in_progress(trial["run_id"]):
                    return None
                if run_finished(self.directory / trial["run_id"]):  # its trial process finished without it
                    state["trials"][str(index)] = trial | finished_trial(self.spec, self.directory / trial["run_id"])
                    return None
            resume = trial is not None and trial["status"] != "failed" and self.resumable(trial["run_id"])
            trial = {
                "index": index,
                "params": params,
                "status": "running",
                "run_id": trial["run_id"] if trial is not None and resume else new_run_id(),
                "resume": resume,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "lease_until": time.time() + lease_seconds(),
            }
            state["trials"][str(index)] = trial
            return dict(trial)

    def run_in_progress(self, run_id: str) -> bool:
        run_dir = self.directory / run_id
        return run_dir.is_dir() and locked(run_dir)

    def resumable(self, run_id: str) -> bool:
        """Whether a trial's run stopped with a checkpoint to go on from (it may have stopped before one)."""
        run_dir = self.directory / run_id
        return not run_finished(run_dir) and any(run_dir.glob("checkpoints/*.ckpt"))

    def record(self, trial: dict[str, Any]) -> None:
        with self.locked() as state:
            state["trials"][str(trial["index"])] = trial

    def renew(self, trial: dict[str, Any]) -> None:
        """Extend this process's claim on `trial` by a lease (unless the claim is no longer its own)."""
        with self.locked() as state:
            claimed = state["trials"].get(str(trial["index"]))
            if claimed and claimed["run_id"] == trial["run_id"] and claimed["pid"] == os.getpid():
                claimed["lease_until"] = time.time() + lease_seconds()

    @contextlib.contextmanager
    def leased(self, trial: dict[str, Any]) -> Iterator[None]:
        """The claim on `trial` renewed every quarter of a lease while the block runs (the trial trains), so
        that a sweep on another host takes it over only once this process has stopped renewing it."""
        done = threading.Event()

        def renew_until_done() -> None:
            while not done.wait(lease_seconds() / 4):
                with contextlib.suppress(OSError):  # a file system that hiccups: the next renewal tries again
                    self.renew(trial)

        renewer = threading.Thread(target=renew_until_done, name="sweep-lease", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            done.set()
            renewer.join()


def lease_seconds() -> float:
    """How long a claim lasts unless renewed: $FIRSTLIGHT_SWEEP_LEASE_S, default 120 s."""
    return float(os.environ.get("FIRSTLIGHT_SWEEP_LEASE_S", "120"))


def claim_alive(trial: dict[str, Any]) -> bool:
    """Whether the sweep process that claimed a trial still runs: on this host, whether its process exists; on
    another, whether its lease still runs (it renews it while the trial trains; a claim without one, written
    by an older sweep, is assumed alive)."""
    if trial.get("host") != socket.gethostname():
        return float(trial.get("lease_until", math.inf)) > time.time()
    return process_alive(trial)


def process_alive(trial: dict[str, Any]) -> bool:
    """Whether the process that claimed a trial on this host still runs."""
    try:
        os.kill(int(trial["pid"]), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def check_trial_args(spec: SweepSpec, trials: list[dict[str, Any]]) -> None:
    """Parse the arguments of the trials (each distinct parameter value once) as the run would, without
    training: an unknown option or a value of the wrong type stops the sweep before any trial starts."""
    from experiments.run import main as run

    seen: set[tuple[str, str]] = set()
    for params in trials:
        new = {(key, repr(value)) for key, value in params.items()} - seen
        if not new:
            continue
        seen |= new
        args = trial_args(spec, params)
        stderr = io.StringIO()
        code: int | str | None
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
            try:
                code = run([*args, "--print_config"])
            except SystemExit as exit_:
                code = exit_.code
        if code not in (0, None):
            message = stderr.getvalue().strip().splitlines()
            reason = message[-1].removeprefix("error: ").removesuffix(" (see --help)") if message else "rejected"
            shown = " ".join(f"--{k}={v}" for k, v in params.items())
            raise ConfigError(f"{spec.path}: the run rejects the trial {shown}: {reason}; fix the parameters")


def last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


class Stopper:
    """Stop signals to the sweep (SIGTERM, SIGUSR1 from a cluster, Ctrl-C) while it runs trials. Each is
    passed on to the running trial, which saves its last checkpoint and exits resumably (128 + the signal);
    the sweep waits for it, records it as interrupted and stops before the next trial. Trials run in their
    own session (process group), so that a Ctrl-C in the terminal reaches a trial once, through here (a
    second one still stops it at once)."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.trial: subprocess.Popen[bytes] | None = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        if self.trial is not None:
            self.trial.send_signal(signum)  # does nothing once the trial has ended

    @contextlib.contextmanager
    def installed(self) -> Iterator[Stopper]:
        previous = {sig: signal.signal(sig, self.handle) for sig in self.SIGNALS}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def run_trial(spec: SweepSpec, trial: dict[str, Any], root: Path, position: str, stopper: Stopper) -> dict[str, Any]:
    """Run one trial as its own process (a crash or a leak cannot take the sweep with it): a new run, or
    the resumed run of a trial that was stopped before."""
    sweep_dir = root / spec.name
    run_dir = sweep_dir / trial["run_id"]
    log = sweep_dir / "logs" / f"trial-{trial['index']:03d}-{trial['run_id']}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    args = [*trial_args(spec, trial["params"]), f"--run.experiment={spec.name}", f"--run.root={root}"]
    forgotten = ("WANDB_SWEEP", "FIRSTLIGHT_RU", "WANDB_SERVICE")  # the run chooses its own; W&B's service is ours
    env = {key: value for key, value in os.environ.items() if not key.startswith(forgotten)}
    if trial.get("resume"):
        args.append(f"--run.resume={run_dir}")
    else:
        env["FIRSTLIGHT_RUN_ID"] = trial["run_id"]
    resuming = "  (resuming)" if trial.get("resume") else ""
    print(f"trial {position}  {describe(trial['params'])}  ->  {run_dir}{resuming}", flush=True)
    started = time.perf_counter()
    with open(log, "a") as output:
        command = [sys.executable, "-m", "experiments.run", *args]
        stopper.trial = subprocess.Popen(
            command, stdout=output, stderr=output, env=env, start_new_session=True, preexec_fn=die_with_parent
        )
        code = stopper.trial.wait()
        stopper.trial = None
    trial |= {"exit_code": code, "wall_time_s": round(time.perf_counter() - started, 1), "log": str(log)}
    trial["run_dir"] = str(run_dir) if run_dir.is_dir() else None
    if code == 0:
        trial |= finished_trial(spec, run_dir)
        shown = f": {spec.metric}={trial['metric']:.4g}" if isinstance(trial["metric"], float) else ""
        print(f"  finished in {trial['wall_time_s']} s{shown}", flush=True)
    elif (signum := stopped_by(code)) is not None:
        trial["status"] = "interrupted"
        print(f"  stopped by {signal.Signals(signum).name} after {trial['wall_time_s']} s", flush=True)
    else:
        trial["status"] = "failed"
        trial["error"] = last_line(log)
        print(f"  failed (exit {code}) after {trial['wall_time_s']} s: {trial['error']}  [log: {log}]", flush=True)
    return trial


def die_with_parent() -> None:
    """In the trial's process, before it starts: if the sweep dies (`kill -9`, a closed terminal), the
    kernel sends the trial SIGTERM, so it saves and stops resumably rather than train on as an orphan
    (Linux; elsewhere the run lock alone keeps a rerun from starting it twice)."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1  # <sys/prctl.h>


def finished_trial(spec: SweepSpec, run_dir: Path) -> dict[str, Any]:
    """The record of a finished trial: its status, run directory and metric (from summary.json)."""
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    metric = summary.get(spec.metric) if spec.metric else None
    return {"status": "finished", "run_dir": str(run_dir), "metric": metric}


def stopped_by(code: int) -> int | None:
    """The stop signal that ended a trial: its exit code 128 + the signal, or killed by it (-signal)."""
    signum = code - 128 if code > 128 else -code
    return signum if signum in Stopper.SIGNALS else None


def stopped(signum: int, where: str) -> int:
    """Say how to go on after a stop signal; the exit code is 128 + the signal, as a run's."""
    again = shlex.join(["python", "-m", f"experiments.{Path(sys.argv[0]).stem}", *sys.argv[1:]])
    name = signal.Signals(signum).name
    print(f"sweep stopped by {name} {where}; the same command resumes it: {again}", file=sys.stderr)
    return 128 + signum


def run_local(
    spec: SweepSpec, root: Path, count: int | None, seed: int, retry_failed: bool, every_trial: bool = False
) -> int:
    """The sweep's trials one after another here; its exit code is 0 when a trial finished (a search may lose
    some), or with `every_trial` only when every trial finished (a measurement over all of them)."""
    if spec.method == "bayes":
        raise ConfigError(
            f"{spec.path}: method bayes needs W&B online (its optimiser runs on the W&B server); "
            "offline, use --method random or grid"
        )
    if spec.raw.get("early_terminate"):  # never accepted and then ignored
        raise ConfigError(
            f"{spec.path}: early_terminate needs W&B online (W&B's server stops the trials); offline, trials "
            "are not stopped early: remove early_terminate from the spec"
        )
    trials = plan_trials(spec, count, seed)
    state = SweepState(root / spec.name, spec)
    if state.path.is_file():
        state.check_same_spec()
    check_trial_args(spec, trials)
    print(f"sweep {spec.name}: {spec.method} search, {len(trials)} trials, in {state.directory}", flush=True)
    skipped = 0
    with Stopper().installed() as stopper:
        for index, params in enumerate(trials):
            if stopper.signum is not None:  # between two trials
                return stopped(stopper.signum, f"before trial {index + 1}")
            trial = state.claim(index, params, retry_failed)
            if trial is None:
                skipped += 1
                continue
            with state.leased(trial):
                trial = run_trial(spec, trial, root, f"{index + 1}/{len(trials)}", stopper)
            state.record(trial)
            signum = stopper.signum or stopped_by(trial["exit_code"])
            if signum is not None:
                return stopped(signum, f"in trial {index + 1} ({trial['status']})")
    if skipped:
        print(f"skipped {skipped} trials that were done already or running elsewhere", flush=True)
    return report(spec, state.read(), len(trials), root, every_trial)


def report(spec: SweepSpec, state: dict[str, Any], planned: int, root: Path, every_trial: bool = False) -> int:
    trials = [state["trials"][str(i)] for i in range(planned) if str(i) in state["trials"]]
    finished = [t for t in trials if t["status"] == "finished"]
    failed = [t for t in trials if t["status"] == "failed"]
    print(f"\nsweep {spec.name}: {len(finished)} finished, {len(failed)} failed, {planned - len(trials)} not run")
    for trial in failed:
        print(f"  failed trial {trial['index'] + 1}: {describe(trial['params'])}: {trial.get('error')}")
    scored = [t for t in finished if isinstance(t.get("metric"), int | float)]
    if scored:
        best = (max if spec.maximize else min)(scored, key=lambda t: t["metric"])
        print(f"best {spec.metric}={best['metric']:.4g}: trial {best['index'] + 1}, {describe(best['params'])}")
        print(f"  run dir: {best['run_dir']}")
    elif spec.metric and finished:
        print(f"no finished trial has {spec.metric} in its summary.json; check the metric name in the spec")
    for line in spread_lines(finished):
        print(line)
    print(f"compare the trials: python -m experiments.compare {root / spec.name}")
    if every_trial and len(finished) < planned:
        print(f"error: {planned - len(finished)} of {planned} trials did not finish; see above", file=sys.stderr)
        return 1
    return 0 if finished or not trials else 1


def wandb_sweep_config(spec: SweepSpec, root: Path) -> dict[str, Any]:
    """The spec for W&B, its command running experiments.run into the same run directories as offline."""
    config = dict(spec.raw) | {"name": spec.name, "method": spec.method}
    config.setdefault("program", "experiments/run.py")
    config["command"] = [
        "${env}",
        "${interpreter}",
        "-m",
        "experiments.run",
        *spec.base_args,
        f"--run.experiment={spec.name}",
        f"--run.root={root.absolute()}",
        "${args}",
    ]
    return config


LOCAL_SWEEP = "running the sweep here instead, its trials logging to W&B offline"


def run_online(spec: SweepSpec, root: Path, args: argparse.Namespace) -> int:
    """Create a W&B sweep (unless joining one) and run an agent here: W&B's server picks the trials. A sweep
    that W&B refuses to create (a refused key, say) runs here instead."""
    import wandb

    check_trial_args(spec, plan_trials(spec, args.count or 1) if spec.method != "bayes" else [])
    project = spec.raw.get("project") or args.project
    entity = spec.raw.get("entity")
    sweep_id = args.sweep_id
    if sweep_id is None:
        try:
            sweep_id = wandb.sweep(wandb_sweep_config(spec, root), project=project, entity=entity)
        except wandb.errors.Error as error:  # AuthenticationError, CommError, UsageError
            print(f"warning: W&B could not create the sweep ({first_line(error)}); {LOCAL_SWEEP}", file=sys.stderr)
            return run_local(spec, root, args.count, args.seed, args.retry_failed)
    print(f"W&B sweep {sweep_id}; more agents: python -m experiments.sweep {spec.path} --sweep-id {sweep_id}")
    try:
        wandb.agent(sweep_id, project=project, entity=entity, count=args.count)
    except wandb.errors.Error as error:
        print(f"error: W&B's agent for sweep {sweep_id} stopped: {first_line(error)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path, help="sweep spec (YAML, W&B's sweep format)")
    parser.add_argument("--count", type=int, help="number of trials (default: run_cap, or the whole grid)")
    parser.add_argument("--root", type=Path, default=Path("runs"), help="directory of all experiments' runs")
    parser.add_argument("--method", choices=("grid", "random", "bayes"), help="override the spec's method")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random search's choices")
    parser.add_argument("--retry-failed", action="store_true", help="run failed trials again")
    parser.add_argument("--sweep-id", help="join this W&B sweep (online) instead of creating one")
    parser.add_argument("--project", default="firstlight", help="W&B project, unless the spec names one")
    args = parser.parse_args(argv)
    try:
        if args.count is not None and args.count < 1:
            raise ConfigError(f"--count must be at least 1, got {args.count}")
        spec = load_spec(args.spec)
        if args.method:
            spec.method = args.method
            for key, definition in spec.parameters.items():
                check_parameter(key, definition, spec.method, spec.path)
        if args.sweep_id and (problem := wandb_online_problem()):
            raise ConfigError(f"--sweep-id {args.sweep_id} joins a W&B sweep, which needs W&B online: {problem}")
        if args.sweep_id or wandb_mode(LOCAL_SWEEP) == "online":
            return run_online(spec, args.root, args)
        return run_local(spec, args.root, args.count, args.seed, args.retry_failed)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before a trial started (during one, the trial gets it: `Stopper`)
        print("interrupted: SIGINT before a trial started", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
