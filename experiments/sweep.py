"""Hyperparameter sweeps from a spec in W&B's format.

    python -m experiments.sweep experiments/sweeps/cnn_digits.yaml              # every trial of the grid
    python -m experiments.sweep spec.yaml --count 20                            # random or Bayesian: 20 trials
    python -m experiments.sweep spec.yaml --cluster slurm --workers 8           # 8 workers, a SLURM job array
    python -m experiments.compare runs/cnn_digits_sweep                         # the trials side by side

With W&B online (configured credentials, or WANDB_MODE=online) it creates a W&B sweep and runs an agent
(`--sweep-id` joins an existing sweep); W&B out of reach or refusing the key, it warns and goes on here.
Otherwise it runs the search itself: grid, random, or Bayesian (Optuna's TPE), with early_terminate on
Optuna's Hyperband (`sweep_search`). Each trial is an ordinary run in runs/<sweep name>/<run id>/, started
as its own process; a failed trial is recorded and the sweep goes on, a pruned one is recorded as pruned,
a stop signal is passed to the running trial, which saves, and stops the sweep. State lives in
runs/<sweep name>/sweep.json (`sweep_record`): the same command again skips finished and failed trials,
resumes a stopped one's run and runs the rest, and several processes, on several hosts, can work through
one sweep at once.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
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
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from experiments.command_line import command_parser, refused
from experiments.rundir import finished as run_finished
from experiments.rundir import locked, new_run_id
from experiments.slurm import TEMPLATES, ClusterOptions, check_slurm, cluster_parser, sbatch, split_cluster_args
from experiments.spread import spread_lines
from experiments.sweep_record import DONE, locked_record
from experiments.sweep_search import check_honoured, hyperband_settings, propose, propose_wandb
from experiments.sweep_spec import (
    SweepSpec,
    check_parameter,
    describe,
    distribution,
    load_spec,
    plan_trials,
    trial_args,
)
from experiments.tracking import wandb_mode, wandb_online_problem
from validation import ConfigError, first_line


class SweepState:
    """runs/<sweep>/sweep.json: one record per trial (params, status, run dir, metric), shared by the
    processes that run the sweep; every change happens under an exclusive lock on sweep.lock."""

    def __init__(self, directory: Path, spec: SweepSpec) -> None:
        self.directory = directory
        self.path = directory / "sweep.json"
        self.spec = spec

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """The state, read under the sweep's lock and written back atomically when the block ends."""
        with locked_record(self.directory, self.new) as state:
            yield state

    def read(self) -> dict[str, Any]:
        return json.loads(self.path.read_text()) if self.path.is_file() else self.new()

    def new(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "spec": str(self.spec.path),
            "fingerprint": self.spec.fingerprint,
            "metric": self.spec.metric,  # and which way is better, for experiments.compare
            "goal": "maximize" if self.spec.maximize else "minimize",
            "early_terminate": hyperband_settings(self.spec),  # what the trials' pruning callback follows
            "trials": {},
        }

    def check_same_spec(self) -> None:
        state = self.read()
        if state["fingerprint"] != self.spec.fingerprint:
            raise ConfigError(
                f"{self.directory} holds a sweep planned from a different method, parameters or command; "
                f"give the new spec another name (name: in the spec) or another --root"
            )

    def claim_next(
        self,
        total: int,
        propose: Callable[[int, dict[str, Any]], dict[str, Any]],
        retry_failed: bool,
        tried: set[int] | frozenset[int] = frozenset(),
    ) -> dict[str, Any] | None:
        """Claim the first of `total` trials, in order, that is neither done nor running: one stopped before it
        finished or whose worker died (resumed), else the next new one, with the parameters `propose(index,
        state)` gives. None when every trial is done, running elsewhere or already `tried` by this process (a
        retried failure is tried once a sweep)."""
        with self.locked() as state:
            for index in range(total):
                if index in tried:
                    continue
                trial = state["trials"].get(str(index))
                if trial is None:
                    return self.take(state, index, propose(index, state), None)
                if self.available(state, index, trial, retry_failed):
                    return self.take(state, index, trial["params"], trial)
        return None

    def claim(self, index: int, params: dict[str, Any], retry_failed: bool) -> dict[str, Any] | None:
        """Claim trial `index` for this process, unless it is done or still running."""
        with self.locked() as state:
            trial = state["trials"].get(str(index))
            if trial is not None and not self.available(state, index, trial, retry_failed):
                return None
            return self.take(state, index, params, trial)

    def available(self, state: dict[str, Any], index: int, trial: dict[str, Any], retry_failed: bool) -> bool:
        """Whether a recorded trial may be claimed: not done, and not running in another live sweep process or
        in a trial process that outlived its sweep (it holds its run directory's lock). A trial whose process
        finished its run after its sweep died is recorded as done here."""
        if trial["status"] in DONE or (trial["status"] == "failed" and not retry_failed):
            return False
        if trial["status"] == "running" and claim_alive(trial):
            return False
        if self.run_in_progress(trial["run_id"]):
            return False
        if run_finished(self.directory / trial["run_id"]):
            state["trials"][str(index)] = trial | finished_trial(self.spec, self.directory / trial["run_id"], trial)
            return False
        return True

    def take(
        self, state: dict[str, Any], index: int, params: dict[str, Any], previous: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Record trial `index` as running in this process: a new run, or the run of a trial stopped before it
        finished, to resume from that run's last checkpoint (with what its pruning recorded so far)."""
        resume = previous is not None and previous["status"] != "failed" and self.resumable(previous["run_id"])
        trial = {
            "index": index,
            "params": params,
            "status": "running",
            "run_id": previous["run_id"] if previous is not None and resume else new_run_id(),
            "resume": resume,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "lease_until": time.time() + lease_seconds(),
        }
        if previous is not None and resume:
            trial |= {key: previous[key] for key in TRIAL_WRITES if key in previous}
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
        """Record how a trial ended, keeping what its trial process wrote into its record meanwhile."""
        with self.locked() as state:
            stored = state["trials"].get(str(trial["index"]), {})
            trial = {key: value for key, value in trial.items() if key not in TRIAL_WRITES}  # as at its claim
            trial |= {key: stored[key] for key in TRIAL_WRITES if key in stored}  # as its process left them
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


TRIAL_WRITES = ("intermediate", "optuna_system_attrs", "pruned_at")  # written by the trial process (pruning)


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
    from experiments.run import printed_config

    seen: set[tuple[str, str]] = set()
    for params in trials:
        new = {(key, repr(value)) for key, value in params.items()} - seen
        if not new:
            continue
        seen |= new
        try:
            printed_config(trial_args(spec, params))
        except ConfigError as reason:
            shown = " ".join(f"--{k}={v}" for k, v in params.items())
            raise ConfigError(f"{spec.path}: the run rejects the trial {shown}: {reason}; fix the parameters") from None


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


def run_trial(state: SweepState, trial: dict[str, Any], root: Path, position: str, stopper: Stopper) -> dict[str, Any]:
    """Run one trial as its own process (a crash or a leak cannot take the sweep with it): a new run, or
    the resumed run of a trial that was stopped before."""
    spec = state.spec
    sweep_dir = root / spec.name
    run_dir = sweep_dir / trial["run_id"]
    log = sweep_dir / "logs" / f"trial-{trial['index']:03d}-{trial['run_id']}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    args = [*trial_args(spec, trial["params"]), f"--run.experiment={spec.name}", f"--run.root={root}"]
    # The run chooses its own; W&B's service is ours; a worker's SLURM job is not the trial's (Lightning would
    # take the trial for one of the job's tasks)
    forgotten = ("WANDB_SWEEP", "FIRSTLIGHT_RU", "WANDB_SERVICE", "SLURM_")
    env = {key: value for key, value in os.environ.items() if not key.startswith(forgotten)}
    env |= {"FIRSTLIGHT_SWEEP_DIR": str(sweep_dir.absolute()), "FIRSTLIGHT_SWEEP_TRIAL": str(trial["index"])}
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
        trial |= finished_trial(spec, run_dir, state.read()["trials"].get(str(trial["index"])))
        shown = f": {spec.metric}={trial['metric']:.4g}" if isinstance(trial["metric"], float) else ""
        print(f"  {trial['status']} in {trial['wall_time_s']} s{shown}", flush=True)
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


def finished_trial(spec: SweepSpec, run_dir: Path, stored: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record of a trial whose run ended: finished, or pruned if early termination stopped it (its
    stored record says where), its run directory and metric (from summary.json)."""
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    metric = summary.get(spec.metric) if spec.metric else None
    status = "pruned" if (stored or {}).get("pruned_at") else "finished"
    return {"status": status, "run_dir": str(run_dir), "metric": metric}


def stopped_by(code: int) -> int | None:
    """The stop signal that ended a trial: its exit code 128 + the signal, or killed by it (-signal)."""
    signum = code - 128 if code > 128 else -code
    return signum if signum in Stopper.SIGNALS else None


def stopped(signum: int, where: str) -> int:
    """Say how to go on after a stop signal; the exit code is 128 + the signal, as a run's."""
    again = shlex.join(["python", "-m", f"experiments.{Path(sys.argv[0]).stem}", *sys.argv[1:]])
    name = signal.Signals(signum).name
    then = f"the same command resumes it: {again}"
    if signum == signal.SIGUSR1 and (job := slurm_job()):  # SLURM's warning of the time limit: come back
        subprocess.run(["scontrol", "requeue", job], check=False)
        then = f"SLURM job {job} is requeued to resume it"
    print(f"sweep stopped by {name} {where}; {then}", file=sys.stderr)
    return 128 + signum


def slurm_job() -> str | None:
    """The SLURM job (array task) this sweep worker runs in, else None."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def run_local(
    spec: SweepSpec,
    root: Path,
    count: int | None,
    seed: int,
    retry_failed: bool,
    every_trial: bool = False,
    engine: str = "optuna",
) -> int:
    """The sweep's trials one after another here; its exit code is 0 when a trial finished (a search may lose
    some), or with `every_trial` only when every trial finished (a measurement over all of them)."""
    check_honoured(spec)
    total, propose = plan(spec, count, seed, engine)
    state = SweepState(root / spec.name, spec)
    if state.path.is_file():
        state.check_same_spec()
    print(f"sweep {spec.name}: {search_name(spec, engine)}, {total} trials, in {state.directory}", flush=True)
    tried: set[int] = set()
    with Stopper().installed() as stopper:
        while True:
            if stopper.signum is not None:  # between two trials
                return stopped(stopper.signum, "before its next trial")
            trial = state.claim_next(total, propose, retry_failed, tried)
            if trial is None:
                break
            tried.add(trial["index"])
            with state.leased(trial):
                trial = run_trial(state, trial, root, f"{trial['index'] + 1}/{total}", stopper)
            state.record(trial)
            signum = stopper.signum or stopped_by(trial["exit_code"])
            if signum is not None:
                return stopped(signum, f"in trial {trial['index'] + 1} ({trial['status']})")
    if skipped := len(state.read()["trials"]) - len(tried):
        print(f"skipped {skipped} trials that were done already or running elsewhere", flush=True)
    return report(spec, state.read(), total, root, every_trial)


def plan(
    spec: SweepSpec, count: int | None, seed: int, engine: str = "optuna"
) -> tuple[int, Callable[[int, dict[str, Any]], dict[str, Any]]]:
    """How many trials the sweep has, and how trial `index` gets its parameters: from the grid or the seeded
    random draws planned up front (checked with the run before any trial starts), or proposed by Bayesian
    search from the trials before it."""
    if spec.method == "bayes":
        total = count or spec.run_cap
        if total is None:
            raise ConfigError(
                f"{spec.path}: a Bayesian search needs a number of trials: run_cap in the spec or --count N"
            )
        check_trial_args(spec, [bounds(spec, end) for end in (0, -1)])
        if engine == "wandb":
            return total, lambda index, state: propose_wandb(spec, state, index, seed)
        return total, lambda index, state: propose(spec, state, index, seed, total)
    trials = plan_trials(spec, count, seed)
    check_trial_args(spec, trials)
    return len(trials), lambda index, state: trials[index]


def bounds(spec: SweepSpec, end: int) -> dict[str, Any]:
    """Every parameter at one end of its range (its first or last value): what a Bayesian search may propose,
    checked with the run before any trial starts."""
    params = {}
    for key, definition in spec.parameters.items():
        kind = distribution(definition)
        if kind == "constant":
            params[key] = definition["value"]
        elif kind == "categorical":
            params[key] = definition["values"][end]
        elif kind == "log_uniform":
            params[key] = math.exp(definition["max" if end else "min"])
        else:
            params[key] = definition["max" if end else "min"]
    return params


def search_name(spec: SweepSpec, engine: str = "optuna") -> str:
    bayes = "Bayesian search (W&B's engine)" if engine == "wandb" else "Bayesian search (Optuna TPE)"
    search = bayes if spec.method == "bayes" else f"{spec.method} search"
    return search + (", early termination (Optuna Hyperband)" if spec.raw.get("early_terminate") else "")


def report(spec: SweepSpec, state: dict[str, Any], planned: int, root: Path, every_trial: bool = False) -> int:
    trials = [state["trials"][str(i)] for i in range(planned) if str(i) in state["trials"]]
    finished = [t for t in trials if t["status"] == "finished"]
    failed = [t for t in trials if t["status"] == "failed"]
    pruned = sum(t["status"] == "pruned" for t in trials)
    cut = f", {pruned} pruned" if spec.raw.get("early_terminate") else ""
    elsewhere = sum(t["status"] == "running" for t in trials)
    running = f", {elsewhere} running elsewhere" if elsewhere else ""
    not_run = planned - len(trials)
    print(f"\nsweep {spec.name}: {len(finished)} finished{cut}, {len(failed)} failed{running}, {not_run} not run")
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
            return run_local(spec, root, args.count, args.seed, args.retry_failed, engine=args.engine)
    print(f"W&B sweep {sweep_id}; more agents: python -m experiments.sweep {spec.path} --sweep-id {sweep_id}")
    try:
        wandb.agent(sweep_id, project=project, entity=entity, count=args.count)
    except wandb.errors.Error as error:
        print(f"error: W&B's agent for sweep {sweep_id} stopped: {first_line(error)}", file=sys.stderr)
        return 1
    return 0


def submit_workers(
    cluster: ClusterOptions, spec: SweepSpec, args: argparse.Namespace, given: list[str], online: bool
) -> int:
    """Submit the sweep's workers as a SLURM job array, each running this command without --cluster and
    --workers, once the spec and its trials are checked here. Online, the W&B sweep is created here, once,
    and every worker joins it."""
    check_slurm()  # before anything else: without SLURM, nothing to check the spec for
    workers = args.workers or 1
    command = strip_option(given, "--workers")
    if online and not args.sweep_id:
        import wandb

        project, entity = spec.raw.get("project") or args.project, spec.raw.get("entity")
        check_trial_args(spec, plan_trials(spec, args.count or 1) if spec.method != "bayes" else [])
        sweep_id = wandb.sweep(wandb_sweep_config(spec, args.root), project=project, entity=entity)
        command += ["--sweep-id", sweep_id]
    elif not online:
        check_honoured(spec)
        plan(spec, args.count, args.seed, args.engine)
        state = SweepState(args.root / spec.name, spec)
        if state.path.is_file():
            state.check_same_spec()
    directory = args.root / spec.name
    output = directory / "slurm-%A_%a.out"
    job = sbatch(cluster, TEMPLATES / "sweep.sbatch", command, output, ["--ntasks=1", f"--array=0-{workers - 1}"])
    print(f"submitted SLURM job array {job}: {workers} workers of python -m experiments.sweep {shlex.join(command)}")
    print(f"  trials: {directory}/<run id>/, recorded in {directory / 'sweep.json'}")
    print(f"  job output: {str(output).replace('%A', job).replace('%a', '<worker>')}; follow it: squeue -j {job}")
    print(f"  compare the trials: python -m experiments.compare {directory}")
    return 0


def strip_option(args: list[str], option: str) -> list[str]:
    """`args` without `option` and its value (`--option V` or `--option=V`)."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(f"{option}="):
            kept.append(arg)
    return kept


def main(argv: list[str] | None = None) -> int:
    # The cluster options are taken out by `split_cluster_args` before parsing; they are here for --help.
    parser = command_parser("sweep", __doc__, parents=[cluster_parser()])
    parser.add_argument("spec", type=Path, help="sweep spec (YAML, W&B's sweep format)")
    parser.add_argument("--count", type=int, help="number of trials (default: run_cap, or the whole grid)")
    parser.add_argument("--root", type=Path, default=Path("runs"), help="directory of all experiments' runs")
    parser.add_argument("--method", choices=("grid", "random", "bayes"), help="override the spec's method")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random search's choices")
    parser.add_argument("--retry-failed", action="store_true", help="run failed trials again")
    parser.add_argument(
        "--engine",
        choices=("optuna", "wandb"),
        default="optuna",
        help="Bayesian search offline: Optuna's TPE (default), or W&B's own engine (pip install sweeps)",
    )
    parser.add_argument("--sweep-id", help="join this W&B sweep (online) instead of creating one")
    parser.add_argument("--project", default="firstlight", help="W&B project, unless the spec names one")
    parser.add_argument("--workers", type=int, help="with --cluster slurm: how many workers (array tasks), default 1")
    given = sys.argv[1:] if argv is None else argv
    try:
        cluster, given = split_cluster_args(given)
        args = parser.parse_args(given)
        if args.count is not None and args.count < 1:
            raise ConfigError(f"--count must be at least 1, got {args.count}")
        if args.workers is not None and (cluster is None or args.workers < 1):
            raise ConfigError("--workers N needs --cluster slurm and N of at least 1 (here, start more sweeps alike)")
        spec = load_spec(args.spec)
        if args.method:
            spec.method = args.method
            for key, definition in spec.parameters.items():
                check_parameter(key, definition, spec.method, spec.path)
        if args.sweep_id and (problem := wandb_online_problem()):
            raise ConfigError(f"--sweep-id {args.sweep_id} joins a W&B sweep, which needs W&B online: {problem}")
        online = args.sweep_id or wandb_mode(LOCAL_SWEEP) == "online"
        if cluster is not None:
            return submit_workers(cluster, spec, args, given, online)
        if online:
            return run_online(spec, args.root, args)
        return run_local(spec, args.root, args.count, args.seed, args.retry_failed, engine=args.engine)
    except ConfigError as error:
        return refused(error)
    except KeyboardInterrupt:  # Ctrl-C before a trial started (during one, the trial gets it: `Stopper`)
        print("interrupted: SIGINT before a trial started", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
