"""Memory and speed of language-model training from a prepared corpus of many GB, beside a small prepared
corpus and the in-memory path: memory must stay flat as the corpus grows, and speed must not drop.

    python -m benchmarks.lm_corpus_scale [--gigabytes 2] [--workdir DIR] [--steps 200] [--warmup 20] [--repeats 2]

1. Writes a text of `--gigabytes` GB into `--workdir` (streamed, never held whole): Shakespeare's complete
   works again and again, each copy starting at another line, so that no two copies line up.
2. Prepares it with `prepare_corpus` (char tokenizer, uint16 ids, a worker per core) in a fresh process,
   timed, with its peak RSS and its largest worker's, and Shakespeare alone likewise. Both are
   kept in `--workdir` and reused by a later run.
3. Trains the `transformer_shakespeare` preset's model for `--warmup` + `--steps` steps, in a fresh
   `python -m experiments.run` each (tracker csv, no test, no validation after the sanity check), from
   (big) the big prepared corpus, (small) Shakespeare prepared, (memory) Shakespeare in memory, the preset
   as it is. The three run at once but take turns, one step each (TakeTurns): on a shared machine whose
   speed drifts from minute to minute, runs one after the other differ by 2-7x, steps in turn by little.
   Each run reports its peak resident memory (VmHWM, read when training ends) and its tokens per second
   (from its median timed step). `--repeats` times.

Printed: the machine, each case's peak RSS (the highest over the repeats) and tokens/s (the median over the
repeats), the time a batch of windows takes to gather in either path, and a last line
`lm_corpus_scale rss_big=<MB> rss_small=<MB> rss_memory=<MB> tokens_per_s_big=<> tokens_per_s_memory=<> ratio=x<>`
(ratio: tokens/s from the big corpus over tokens/s from memory).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L

from datamodules.language_model import LanguageModelDataModule
from datamodules.prepared import is_prepared, read_manifest
from datamodules.text_sources import shakespeare
from datamodules.token_corpus import KIND, usable_cores
from experiments.hardware import machine_summary
from validation import ConfigError

REPO = Path(__file__).resolve().parents[1]
PRESET = "transformer_shakespeare"
CASES = ("big", "small", "memory")


def memory_status() -> dict[str, float]:
    """This process's peak and current resident memory, in MB, from /proc/self/status."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


class TakeTurns(L.Callback):
    """Runs this process's training steps in turn with the other processes of a ring, one step each: the turn
    is a byte passed from FIFO `<ring>/<index>` to the next process's. Every case then trains under the same
    conditions, step by step, on a shared machine whose speed drifts by more than the differences measured.

    A step is timed from receiving the turn to passing it on (on_train_batch_end): the step, its hooks and
    fetching the next batch. When training ends, the times of the steps after `warmup` and the process's
    memory (`memory_status`) are written as JSON to `path`."""

    def __init__(self, ring: str, index: int, size: int, warmup: int, path: str) -> None:
        self.inbox = os.open(Path(ring) / str(index), os.O_RDWR)  # read-write: never blocks on opening
        self.outbox = os.open(Path(ring) / str((index + 1) % size), os.O_RDWR)
        self.warmup, self.path = warmup, path
        self.times: list[float] = []
        self.resumed = 0.0

    def on_train_start(self, trainer: L.Trainer, *args: Any) -> None:
        os.read(self.inbox, 1)
        self.resumed = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        ended = time.perf_counter()
        if trainer.global_step > self.warmup:
            self.times.append(ended - self.resumed)
        os.write(self.outbox, b"t")
        if trainer.global_step < trainer.max_steps:  # the others may still have steps to take
            os.read(self.inbox, 1)
        self.resumed = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, *args: Any) -> None:
        data = trainer.datamodule  # type: ignore[attr-defined]
        tokens = data.batch_size * data.hparams["context_length"]
        Path(self.path).write_text(json.dumps({"times": self.times, "tokens_per_step": tokens, **memory_status()}))


def write_corpus(path: Path, gigabytes: float) -> None:
    """Shakespeare, copy after copy, each rotated to start at another line, up to `gigabytes` (cut at a line's
    end); written to a temporary name first, so a file of that name is complete and is kept."""
    if path.is_file():
        return
    size = int(gigabytes * 1e9)
    lines = shakespeare().encode().splitlines(keepends=True)
    partial = path.with_name(f".{path.name}.tmp")
    written, copy = 0, 0
    with partial.open("wb") as out:
        while written < size:
            start = copy * 7919 % len(lines)
            text = b"".join(lines[start:] + lines[:start])
            if written + len(text) > size:
                text = text[: text.rfind(b"\n", 0, size - written) + 1]
            out.write(text)
            written, copy = written + len(text), copy + 1
            if not text:
                break
    partial.replace(path)


PREPARE = """
import json, resource, sys
from pathlib import Path
from datamodules.token_corpus import prepare_corpus
prepare_corpus(Path(sys.argv[1]), Path(sys.argv[2]), tokenizer="char", overwrite=True)
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")).split()[1]
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # forked, never exec'd: their own peaks
print(json.dumps({"parent": int(peak) / 1024, "worker": workers / 1024}))
"""


def prepared(text: Path, folder: Path) -> tuple[float, dict[str, float]]:
    """Prepare `text` into `folder` in a fresh process, unless the folder holds it already: the seconds it took
    and the peak RSS in MB of that process and of its largest worker, or 0 and {} when reused."""
    if is_prepared(folder):
        try:
            read_manifest(folder, KIND)
            return 0.0, {}
        except ConfigError as error:  # changed or damaged: prepare again
            print(f"preparing again: {error}", file=sys.stderr)
    started = time.perf_counter()
    command = [sys.executable, "-c", PREPARE, str(text), str(folder)]
    result = subprocess.run(command, env=child_env(), check=True, stdout=subprocess.PIPE, text=True)
    return time.perf_counter() - started, json.loads(result.stdout.splitlines()[-1])


def child_env() -> dict[str, str]:
    env = os.environ | {"PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    for name in ("FIRSTLIGHT_RUN_ID", "FIRSTLIGHT_RUN_DIR", "FIRSTLIGHT_RESUME_FROM"):
        env.pop(name, None)
    return env


def train_in_turns(sources: dict[str, str], workdir: Path, warmup: int, steps: int) -> dict[str, dict[str, Any]]:
    """The preset from each source, each in a fresh `python -m experiments.run`, all at once, taking turns
    step by step (TakeTurns); each one's measurements."""
    ring = Path(tempfile.mkdtemp(prefix="ring-", dir=workdir))
    for index in range(len(sources)):
        os.mkfifo(ring / str(index))
    first = os.open(ring / "0", os.O_RDWR)
    os.write(first, b"t")  # the turn, to the first case
    processes, paths = {}, {}
    for index, (case, source) in enumerate(sources.items()):
        paths[case] = ring / f"{case}.json"
        args = [sys.executable, "-m", "experiments.run", f"--config={PRESET}", f"--data.source={source}"]
        args += [f"--trainer.max_steps={warmup + steps}", "--trainer.max_time=null", "--run.test=false"]
        args += ["--run.logger=csv", f"--run.root={workdir / 'runs'}", "--trainer.enable_progress_bar=false"]
        args += ["--trainer.callbacks+=benchmarks.lm_corpus_scale.TakeTurns", f"--trainer.callbacks.ring={ring}"]
        args += [f"--trainer.callbacks.index={index}", f"--trainer.callbacks.size={len(sources)}"]
        args += [f"--trainer.callbacks.warmup={warmup}", f"--trainer.callbacks.path={paths[case]}"]
        log = (ring / f"{case}.log").open("w")
        processes[case] = subprocess.Popen(args, cwd=workdir, env=child_env(), stdout=log, stderr=subprocess.STDOUT)
    for case, process in processes.items():
        if process.wait() != 0:
            for other in processes.values():
                other.kill()
            log_tail = (ring / f"{case}.log").read_text()[-3000:]
            raise SystemExit(f"training from {sources[case]} failed:\n{log_tail}")
    os.close(first)
    results = {case: json.loads(path.read_text()) for case, path in paths.items()}
    shutil.rmtree(ring)
    return results


def gather_microseconds(data: LanguageModelDataModule, batches: int = 2000) -> float:
    """Median time to gather one training batch of windows, in µs."""
    loader = data.train_dataloader()
    times = []
    iterator = iter(loader)
    for _ in range(batches):
        started = time.perf_counter()
        next(iterator)
        times.append(time.perf_counter() - started)
    return 1e6 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=2.0, help="size of the big corpus")
    parser.add_argument("--workdir", type=Path, default=Path("lm_corpus_scale"), help="texts, corpora and runs")
    parser.add_argument("--steps", type=int, default=200, help="timed training steps per run")
    parser.add_argument("--warmup", type=int, default=20, help="training steps before the clock starts")
    parser.add_argument("--repeats", type=int, default=2, help="times the three cases train (in turns)")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    print(machine_summary())
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    big_text, small_text = workdir / f"corpus_{args.gigabytes:g}gb.txt", workdir / "shakespeare.txt"
    started = time.perf_counter()
    write_corpus(big_text, args.gigabytes)
    print(f"text: {big_text} ({big_text.stat().st_size / 1e9:.2f} GB, {time.perf_counter() - started:.0f} s)")
    if not small_text.is_file():
        small_text.write_text(shakespeare(), encoding="utf-8")
    folders = {"big": workdir / f"corpus_{args.gigabytes:g}gb", "small": workdir / "shakespeare_corpus"}
    for case, text in (("big", big_text), ("small", small_text)):
        seconds, peaks = prepared(text, folders[case])
        manifest = read_manifest(folders[case], KIND)
        tokens = sum(manifest.splits.values())
        rate = text.stat().st_size / 1e6 / max(seconds, 1e-9)
        timing = f"prepared in {seconds:.0f} s ({rate:.0f} MB/s, {usable_cores()} workers), peak RSS "
        timing += f"{peaks.get('parent', 0):.0f} MB (its largest worker: {peaks.get('worker', 0):.0f} MB)"
        print(f"corpus {case}: {tokens:,} tokens ({manifest.settings['dtype']}), {timing if seconds else 'reused'}")

    sources = {"big": str(folders["big"]), "small": str(folders["small"]), "memory": "shakespeare"}
    settings = {"context_length": 64, "batch_size": 12}  # the preset's
    for case in ("big", "memory"):
        data = LanguageModelDataModule(source=sources[case], **settings)  # type: ignore[arg-type]
        print(f"gather a training batch ({case}): {gather_microseconds(data):.0f} µs")

    # tokens/s of a run: from its median step (a burst of other work on the machine slows a few steps of
    # whichever case has the turn; the median leaves them out); the mean step's figure is printed beside it.
    results: dict[str, list[dict[str, Any]]] = {case: [] for case in CASES}
    for repeat in range(args.repeats):
        for case, run in train_in_turns(sources, workdir, args.warmup, args.steps).items():
            run["speed"] = run["tokens_per_step"] / statistics.median(run["times"])
            mean = run["tokens_per_step"] / statistics.fmean(run["times"])
            results[case].append(run)
            print(
                f"  run {repeat + 1} {case:6s} peak RSS {run['VmHWM']:6.0f} MB (at the end: anon {run['RssAnon']:.0f}, "
                f"file {run['RssFile']:.0f})  {run['speed']:7.0f} tokens/s (mean step: {mean:.0f})",
                flush=True,
            )
    rss = {case: max(run["VmHWM"] for run in runs) for case, runs in results.items()}
    speed = {case: statistics.median(run["speed"] for run in runs) for case, runs in results.items()}
    print(f"{PRESET}, {args.steps} steps after {args.warmup}, the 3 cases in turns, {args.repeats} times")
    for case in CASES:
        print(f"  {case:6s} {sources[case]:45s} peak RSS {rss[case]:6.0f} MB (highest)  {speed[case]:7.0f} tokens/s")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"lm_corpus_scale rss_big={rss['big']:.0f} rss_small={rss['small']:.0f} rss_memory={rss['memory']:.0f} "
        f"tokens_per_s_big={speed['big']:.0f} tokens_per_s_memory={speed['memory']:.0f} "
        f"ratio=x{speed['big'] / speed['memory']:.3f}"
    )


if __name__ == "__main__":
    main()
