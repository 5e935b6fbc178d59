"""Streaming data engines side by side on one generated JPEG folder: LitData, MosaicML `streaming`, WebDataset.

    python -m benchmarks.streaming_engines [--images 20000] [--size 160] [--repeats 3] [--workdir DIR]

The other engines are not the project's dependencies; mosaicml-streaming 0.13.0 pins numpy<2.2 and
transformers<5, so install them in a virtual environment over the project's rather than in it:

    python -m venv --system-site-packages /tmp/engines
    /tmp/engines/bin/pip install mosaicml-streaming==0.13.0 webdataset==1.0.2
    /tmp/engines/bin/python -m benchmarks.streaming_engines

Each engine writes the folder's raw JPEG bytes, label and index per sample into ~64 MB shards from one
process (LitData: `BinaryWriter`; MosaicML: `MDSWriter`; WebDataset: `ShardWriter` tars), then reads them
back through its own loader (shuffled, batch 128, 2 worker processes), the workers decoding with PIL and
augmenting with torchvision v2 (`RandomResizedCrop(128)`, `RandomHorizontalFlip`) to uint8 tensors. Per
engine it prints:

- write time and the shards' size on disk;
- images/s over a full pass after 3 warm-up batches (median of `--repeats` passes, each in a fresh process);
- peak memory: the sum of VmHWM of the reading process and every process under it (the loader's workers)
  during the pass; pages they share (forked memory, memory-mapped shards) count once per process;
- mid-epoch resume: a process reads k batches of epoch 1 and saves the loader's `state_dict()`; a fresh
  process loads it and reads the rest; the indices seen are compared with one uninterrupted epoch;
- exactly-once under DDP: two processes in a gloo process group (ranks 0 and 1, one node) each read an
  epoch; their indices together are compared with the folder, then the same after a mid-epoch resume
  from rank 0's `state_dict()` (as a Lightning checkpoint does); for LitData also with `drop_last=False`
  (under DDP it defaults to True); ranks whose batch counts differ are flagged (a DDP step would wait);
- version, release date, the object-store URL schemes its reader accepts, and its install footprint: the
  distributions its requirements need beyond the base interpreter's (run from a virtual environment made
  with `--system-site-packages` holding the engines, so the project's own environment is left as it is).

An engine that is not installed is skipped with a note. Resume and DDP checks read the shards without
decoding the images (the order of samples does not depend on the transform). Linux only (/proc).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from PIL import Image
from torchvision.transforms import v2

from benchmarks.jpeg_folder import make_jpeg_folder
from experiments.hardware import machine_summary

BATCH = 128
WORKERS = 2  # DataLoader worker processes
WARMUP = 3  # batches before the clock starts
SHARD_BYTES = 1 << 26  # 64 MiB, MosaicML's default; LitData's default is 64 MB
RANKS = 2
REPO = Path(__file__).resolve().parents[1]
AUGMENT = v2.Compose([v2.RandomResizedCrop(128, antialias=True), v2.RandomHorizontalFlip(), v2.PILToTensor()])

Sample = tuple[Path, int, int]  # (JPEG file, label, index in the folder)


def decoded(image: bytes | memoryview, label: int, index: int) -> dict[str, Any]:
    """The sample the training step gets: (3, 128, 128) uint8 image, label, index."""
    with Image.open(io.BytesIO(image)) as pil:
        return {"image": AUGMENT(pil.convert("RGB")), "label": label, "index": index}


# --- LitData ---------------------------------------------------------------------------------------


def litdata_write(samples: list[Sample], out: Path) -> None:
    from litdata.streaming.writer import BinaryWriter

    writer = BinaryWriter(str(out), chunk_bytes=SHARD_BYTES)
    for position, (path, label, index) in enumerate(samples):
        writer.add_item(position, {"image": path.read_bytes(), "label": label, "index": index})
    writer.done()
    writer.merge()


def litdata_decode(item: dict[str, Any]) -> dict[str, Any]:
    return decoded(item["image"], item["label"], item["index"])


def litdata_index(item: dict[str, Any]) -> dict[str, Any]:
    return {"index": item["index"]}


def litdata_loader(shards: Path, decode: bool, **options: Any) -> Any:
    import litdata

    transform = litdata_decode if decode else litdata_index
    dataset = litdata.StreamingDataset(str(shards), shuffle=True, transform=transform, **options)
    return litdata.StreamingDataLoader(dataset, batch_size=BATCH, num_workers=WORKERS)


def litdata_schemes() -> list[str]:
    from litdata.streaming import downloader

    return sorted(getattr(downloader, "_DOWNLOADERS", {}))


# --- MosaicML streaming --------------------------------------------------------------------------


def mosaicml_write(samples: list[Sample], out: Path) -> None:
    from streaming import MDSWriter

    columns = {"image": "bytes", "label": "int", "index": "int"}
    with MDSWriter(out=str(out), columns=columns, size_limit=SHARD_BYTES) as writer:
        for path, label, index in samples:
            writer.write({"image": path.read_bytes(), "label": label, "index": index})


def mosaicml_loader(shards: Path, decode: bool, **options: Any) -> Any:
    import streaming

    class Decoding(streaming.StreamingDataset):  # the workers are forked: no need to pickle the class
        def get_item(self, sample_id: int, retry: int = 7) -> dict[str, Any]:
            item = super().get_item(sample_id, retry)
            return decoded(item["image"], item["label"], item["index"]) if decode else {"index": item["index"]}

    dataset = Decoding(local=str(shards), shuffle=True, batch_size=BATCH, **options)
    return streaming.StreamingDataLoader(dataset, batch_size=BATCH, num_workers=WORKERS)


def mosaicml_schemes() -> list[str]:
    from streaming.base.storage import download

    return sorted(f"{name}://" for name in getattr(download, "DOWNLOADER_MAPPINGS", {}) if name)


# --- WebDataset ----------------------------------------------------------------------------------


def webdataset_write(samples: list[Sample], out: Path) -> None:
    import webdataset

    pattern = str(out / "shard-%06d.tar")
    with webdataset.ShardWriter(pattern, maxsize=SHARD_BYTES, maxcount=10**9, verbose=0) as writer:
        for path, label, index in samples:
            writer.write(
                {"__key__": f"{index:08d}", "jpg": path.read_bytes(), "cls": b"%d" % label, "idx": b"%d" % index}
            )


def webdataset_decode(item: dict[str, Any]) -> dict[str, Any]:
    return decoded(item["jpg"], int(item["cls"]), int(item["idx"]))


def webdataset_index(item: dict[str, Any]) -> dict[str, Any]:
    return {"index": int(item["idx"])}


def webdataset_loader(shards: Path, decode: bool, **options: Any) -> Any:
    import webdataset

    urls = sorted(str(path) for path in shards.glob("*.tar"))
    dataset = webdataset.WebDataset(
        urls, shardshuffle=len(urls), nodesplitter=webdataset.split_by_node, empty_check=False, seed=0, **options
    )
    dataset = dataset.shuffle(1000).map(webdataset_decode if decode else webdataset_index)  # a buffer shuffle
    return webdataset.WebLoader(dataset, batch_size=BATCH, num_workers=WORKERS)


def webdataset_schemes() -> list[str]:
    gopen = importlib.import_module("webdataset.gopen")  # (the package's `gopen` is the function)
    schemes = [f"{name}:" for name in getattr(gopen, "gopen_schemes", {}) if not name.startswith("_")]
    return sorted(schemes)


@dataclass(frozen=True)
class Engine:
    distribution: str  # its name on PyPI
    module: str
    release: tuple[str, str]  # (version, month) measured here, from PyPI
    write: Callable[[list[Sample], Path], None]
    loader: Callable[..., Any]  # (shards, decode the images?, **dataset options) -> a loader of dict batches
    schemes: Callable[[], list[str]]  # URL schemes its reader opens, from its own dispatch table
    stores: str  # what its docs say about object stores
    resumable: bool  # its loader has state_dict() / load_state_dict()
    ddp_options: dict[str, dict[str, Any]] = field(default_factory=lambda: {"": {}})  # label -> dataset options


ENGINES = {
    "litdata": Engine(
        "litdata",
        "litdata",
        ("0.2.76", "2026-09"),
        litdata_write,
        litdata_loader,
        litdata_schemes,
        "reads s3:// (S3-compatible through an endpoint), gs://, azure://, hf://, r2://; writes s3://, gs://, r2://",
        resumable=True,
        ddp_options={"": {}, " drop_last=False": {"drop_last": False}},  # its default under DDP is True
    ),
    "mosaicml": Engine(
        "mosaicml-streaming",
        "streaming",
        ("0.13.0", "2025-07"),
        mosaicml_write,
        mosaicml_loader,
        mosaicml_schemes,
        "reads and writes s3:// (S3-compatible through S3_ENDPOINT_URL), gs://, oci://, azure://, azure-dl://, "
        "hf://, dbfs:/, alipan://; reads sftp://",
        resumable=True,
    ),
    "webdataset": Engine(
        "webdataset",
        "webdataset",
        ("1.0.2", "2025-06"),
        webdataset_write,
        webdataset_loader,
        webdataset_schemes,
        "reads any URL a shell command streams (pipe:aws s3 cp ... -, pipe:az ...), gs:// through the gsutil CLI, "
        "http(s):// through curl, hf://, ais://; no SDK of its own; writes local files (upload them yourself)",
        resumable=False,
    ),
}


# --- Measurements --------------------------------------------------------------------------------


def compare(seen: Iterable[int], expected: Iterable[int]) -> tuple[int, int]:
    """(repeated, missed): samples seen more often than expected, and expected samples not seen, as multisets."""
    have, want = Counter(seen), Counter(expected)
    return sum((have - want).values()), sum((want - have).values())


def verdict(seen: Iterable[int], expected: Iterable[int]) -> str:
    repeated, missed = compare(seen, expected)
    return "exact" if repeated == missed == 0 else f"{repeated} samples repeated, {missed} missed"


def high_water_kb(pid: int) -> int:
    """The process's peak resident set (VmHWM) in KiB; 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    return int(match.group(1)) if match else 0


def descendants(root: int) -> list[int]:
    """`root` and every process under it, from the parent ids in /proc/<pid>/stat."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # the name may hold spaces and ")"
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


class PeakMemory:
    """Peak resident memory of this process and the processes under it, sampled between batches."""

    def __init__(self) -> None:
        self.peaks: dict[int, int] = {}  # pid -> VmHWM KiB

    def sample(self) -> None:
        for pid in descendants(os.getpid()):
            self.peaks[pid] = max(self.peaks.get(pid, 0), high_water_kb(pid))

    def megabytes(self) -> tuple[float, float, int]:
        """(all processes MB, this process MB, number of processes)."""
        return sum(self.peaks.values()) / 1024, self.peaks.get(os.getpid(), 0) / 1024, len(self.peaks)


def read(spec: dict[str, Any]) -> dict[str, Any]:
    """One pass (or its part) in this process: indices seen, images/s after the warm-up, peak memory."""
    if spec["world"] > 1:  # MosaicML reads the env variables; LitData and WebDataset ask the process group
        rank = spec["rank"]
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(spec["world"]))
        os.environ.update(LOCAL_WORLD_SIZE=str(spec["world"]), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(spec["port"]))
        torch.distributed.init_process_group("gloo", rank=rank, world_size=spec["world"])
    loader = ENGINES[spec["engine"]].loader(Path(spec["shards"]), spec["decode"], **spec.get("options", {}))
    if spec.get("state_in"):
        loader.load_state_dict(torch.load(spec["state_in"], weights_only=False))
    memory = PeakMemory()
    indices: list[int] = []
    start, timed_from, step = time.perf_counter(), 0, 0  # (a rank of WebDataset's may get no shard at all)
    for step, batch in enumerate(loader, 1):
        indices += batch["index"].tolist()
        memory.sample()
        if step == WARMUP:
            start, timed_from = time.perf_counter(), len(indices)
        if step == spec.get("stop_after"):
            break
    elapsed = time.perf_counter() - start
    if spec.get("state_out"):  # after `stop_after` batches, or once the epoch is over
        torch.save(loader.state_dict(), spec["state_out"])
    total_mb, main_mb, processes = memory.megabytes()
    return {
        "indices": indices,
        "batches": step,
        "images_per_s": (len(indices) - timed_from) / elapsed if step > WARMUP else float("nan"),
        "rss_mb": total_mb,
        "main_rss_mb": main_mb,
        "processes": processes,
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def in_fresh_processes(specs: list[dict[str, Any]], scratch: Path, timeout: float = 600) -> list[dict[str, Any]]:
    """Run `read` for each spec in its own Python process, all at once (the ranks of one group)."""
    runs = []
    for number, spec in enumerate(specs):
        out = scratch / f"result-{os.getpid()}-{time.monotonic_ns()}-{number}.json"
        command = [
            sys.executable,
            "-m",
            "benchmarks.streaming_engines",
            "--child",
            json.dumps({**spec, "out": str(out)}),
        ]
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        runs.append((process, out))
    results = []
    for process, out in runs:
        try:
            log, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other, _ in runs:
                other.kill()
            raise RuntimeError(f"no result in {timeout:.0f} s") from None
        if process.returncode != 0 or not out.exists():
            tail = [line for line in log.strip().splitlines() if line.strip()][-1:] or ["no output"]
            raise RuntimeError(f"exit {process.returncode}: {tail[0][:300]}")
        results.append(json.loads(out.read_text()))
        out.unlink()
    return results


# --- Install footprint ---------------------------------------------------------------------------


def site_size(dist: metadata.Distribution) -> int:
    """Bytes on disk of a distribution's installed files (its RECORD, what `pip show -f` lists)."""
    total = 0
    for file in dist.files or []:
        with contextlib.suppress(OSError):
            total += Path(str(dist.locate_file(file))).stat().st_size
    return total


def base_paths() -> list[str]:
    """The base interpreter's site-packages when this one is a virtual environment over it, else []."""
    if sys.prefix == sys.base_prefix:
        return []
    return [path for path in sys.path if "-packages" in path and not path.startswith(sys.prefix)]


def footprint(distribution: str) -> tuple[list[tuple[str, str, str | None, int]], int]:
    """What `distribution` needs beyond the base interpreter: (name, version here, version in the base or
    None, bytes) for each distribution of its requirement closure that the base lacks or that a requirement
    on the way rejects in the base's version; and the whole closure's bytes."""
    base = base_paths()

    def base_version(name: str) -> str | None:
        found = next(iter(metadata.distributions(name=name, path=base)), None) if base else None
        return found.version if found else None

    needed = {canonicalize_name(distribution)}
    closure: dict[str, metadata.Distribution] = {}
    todo: list[tuple[str, frozenset[str]]] = [(distribution, frozenset())]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if key in closure and not extras:
            continue
        try:
            dist = closure.get(key) or metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        closure[key] = dist
        for line in dist.requires or []:
            requirement = Requirement(line)
            wanted = {"", *extras}
            if requirement.marker and not any(requirement.marker.evaluate({"extra": e}) for e in wanted):
                continue
            in_base = base_version(requirement.name)
            if base and (in_base is None or not requirement.specifier.contains(in_base, prereleases=True)):
                needed.add(canonicalize_name(requirement.name))
            todo.append((requirement.name, frozenset(requirement.extras)))
    added = [
        (dist.metadata["Name"], dist.version, base_version(key), site_size(dist))
        for key, dist in closure.items()
        if base and key in needed and base_version(key) != dist.version
    ]
    return sorted(added, key=lambda row: -row[3]), sum(site_size(dist) for dist in closure.values())


def footprint_line(engine: Engine) -> str:
    added, closure = footprint(engine.distribution)
    if not base_paths():
        return f"its requirement closure {closure / 1e6:,.0f} MB (run from a venv over the base to see what it adds)"
    if not added:
        return f"nothing beyond the base environment (its requirement closure: {closure / 1e6:,.0f} MB)"
    listed = ", ".join(
        f"{name} {version}" + (f" (base has {was})" if was else "") + f" {size / 1e6:.1f}"
        for name, version, was, size in added
    )
    downgrades = sum(1 for _, _, was, _ in added if was)
    return (
        f"{len(added)} distributions, {sum(row[3] for row in added) / 1e6:,.0f} MB, {downgrades} of them replacing "
        f"the base's version (its requirement closure: {closure / 1e6:,.0f} MB). MB each: {listed}"
    )


# --- The run -------------------------------------------------------------------------------------


def folder_samples(folder: Path) -> list[Sample]:
    """Every JPEG of the folder in index order (so shards hold the classes interleaved)."""
    samples = [(path, int(path.parent.name.rsplit("_", 1)[1]), int(path.stem)) for path in folder.glob("*/*.jpg")]
    return sorted(samples, key=lambda sample: sample[2])


def disk_mb(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 1e6


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


@dataclass
class Figures:
    write_s: float = float("nan")
    shards_mb: float = float("nan")
    rates: list[float] = field(default_factory=list)  # img/s of each pass
    rss_mb: list[float] = field(default_factory=list)  # reader and workers, each pass
    main_rss_mb: list[float] = field(default_factory=list)  # reader alone, each pass
    checks: dict[str, str] = field(default_factory=dict)  # what was checked -> verdict

    def rate(self) -> float:
        return statistics.median(self.rates) if self.rates else float("nan")

    def peak_mb(self) -> float:
        return max(self.rss_mb, default=float("nan"))


def write_shards(name: str, samples: list[Sample], shards: Path) -> Figures:
    """The engine's shards of `samples` (kept from an earlier run with --workdir), timed."""
    importlib.import_module(ENGINES[name].module)  # not timed: importing MosaicML's takes seconds
    done = shards / ".write_seconds"
    if not done.exists():
        shards.mkdir(exist_ok=True)
        for old in shards.iterdir():
            old.unlink()
        start = time.perf_counter()
        ENGINES[name].write(samples, shards)
        done.write_text(f"{time.perf_counter() - start}")
    return Figures(write_s=float(done.read_text()), shards_mb=disk_mb(shards))


def time_pass(name: str, shards: Path, scratch: Path, figures: Figures) -> str:
    """One decoding pass in a fresh process; adds its figures and returns a line about it."""
    try:
        (run,) = in_fresh_processes([{"engine": name, "shards": str(shards), "decode": True, "world": 1}], scratch)
    except RuntimeError as error:
        return f"{name}: read pass failed: {error}"
    figures.rates.append(run["images_per_s"])
    figures.rss_mb.append(run["rss_mb"])
    figures.main_rss_mb.append(run["main_rss_mb"])
    return f"{name}: {run['images_per_s']:,.0f} img/s, peak {run['rss_mb']:,.0f} MB over {run['processes']} processes"


def stop_point(batches: int) -> int:
    """Where to stop an epoch of `batches` (at least 2): about 2/5 in, at an odd batch, so the workers are
    not at the same point, and before the last batch (a state saved there is the epoch's end)."""
    if batches < 2:
        raise RuntimeError(f"{batches} batch(es) per rank: too few to stop mid-epoch (use more --images)")
    return min(max(1, batches * 2 // 5) | 1, batches - 1)


def check_resume(engine: str, shards: Path, count: int, scratch: Path) -> str:
    """Stop after k batches, resume in a fresh process, and compare with one uninterrupted epoch."""
    if not ENGINES[engine].resumable:
        return "not supported (the loader has no state_dict)"
    stop = stop_point(-(-count // BATCH))
    spec = {"engine": engine, "shards": str(shards), "decode": False, "world": 1}
    (whole,) = in_fresh_processes([spec], scratch)
    state = str(scratch / f"{engine}-state.pt")
    (first,) = in_fresh_processes([{**spec, "stop_after": stop, "state_out": state}], scratch)
    (rest,) = in_fresh_processes([{**spec, "state_in": state}], scratch)
    coverage = verdict(whole["indices"], range(count))
    resumed = verdict(first["indices"] + rest["indices"], whole["indices"])
    return f"{resumed} (stopped after {stop} of {whole['batches']} batches; an uninterrupted epoch: {coverage})"


def check_ddp(engine: str, shards: Path, count: int, scratch: Path, options: dict[str, Any]) -> tuple[str, str]:
    """Two ranks in one gloo group each read an epoch; then the same, stopped and resumed from rank 0's state.
    Returns the verdicts of both."""
    specs = [
        {"engine": engine, "shards": str(shards), "decode": False, "world": RANKS, "rank": rank, "options": options}
        for rank in range(RANKS)
    ]
    port = free_port()
    ranks = in_fresh_processes([{**spec, "port": port} for spec in specs], scratch)
    epoch = [i for rank in ranks for i in rank["indices"]]
    per_rank = ", ".join(f"{len(rank['indices']):,} samples in {rank['batches']} batches" for rank in ranks)
    uneven = len({rank["batches"] for rank in ranks}) > 1  # a DDP step's all-reduce would wait on the rank done
    whole = f"{verdict(epoch, range(count))} (ranks: {per_rank}{'; UNEVEN batch counts' if uneven else ''})"
    if not ENGINES[engine].resumable:
        return whole, "not supported (the loader has no state_dict)"
    try:
        stop = stop_point(min(rank["batches"] for rank in ranks))
    except RuntimeError as error:
        return whole, str(error)
    state = str(scratch / f"{engine}-ddp-state")
    port = free_port()
    firsts = in_fresh_processes(
        [{**spec, "port": port, "stop_after": stop, "state_out": f"{state}-{spec['rank']}.pt"} for spec in specs],
        scratch,
    )
    port = free_port()
    rests = in_fresh_processes([{**spec, "port": port, "state_in": f"{state}-0.pt"} for spec in specs], scratch)
    seen = [i for part in firsts + rests for i in part["indices"]]
    per_rank = ", ".join(f"{a['batches']}+{b['batches']}" for a, b in zip(firsts, rests, strict=True))
    return whole, (
        f"{verdict(seen, range(count))} (batches per rank before+after: {per_rank}; "
        f"against the uninterrupted DDP epoch: {verdict(seen, epoch)})"
    )


def run_checks(name: str, shards: Path, count: int, scratch: Path) -> dict[str, str]:
    checks = {}
    try:
        checks["resume mid-epoch"] = check_resume(name, shards, count, scratch)
    except RuntimeError as error:
        checks["resume mid-epoch"] = f"failed: {error}"
    for label, options in ENGINES[name].ddp_options.items():
        try:
            epoch, resumed = check_ddp(name, shards, count, scratch, options)
        except RuntimeError as error:
            epoch = resumed = f"failed: {error}"
        checks[f"DDP 2 ranks{label}, one epoch"] = epoch
        checks[f"DDP 2 ranks{label}, resumed"] = resumed
    return checks


def report(figures: dict[str, Figures], repeats: int) -> None:
    print(
        f"\n{'engine':<11} {'version':<8} {'released':<8} {'write s':>8} {'shards MB':>10} {'img/s':>8} "
        f"{'peak RSS MB':>12} {'reader MB':>10}"
    )
    for name, result in figures.items():
        engine = ENGINES[name]
        version = metadata.version(engine.distribution)
        released = engine.release[1] if version == engine.release[0] else "?"
        print(
            f"{name:<11} {version:<8} {released:<8} {result.write_s:>8.1f} {result.shards_mb:>10,.0f} "
            f"{result.rate():>8,.0f} {result.peak_mb():>12,.0f} {max(result.main_rss_mb, default=0):>10,.0f}"
        )
    print(f"(img/s: median of {repeats} passes; peak RSS: sum of VmHWM of the reader and its workers, max of passes)")
    for name, result in figures.items():
        engine = ENGINES[name]
        print(f"\n{name} (PyPI {engine.distribution})")
        for label, outcome in result.checks.items():
            print(f"  {label + ':':<41} {outcome}")
        print(f"  {'object stores (docs):':<41} {engine.stores}")
        print(f"  {'URL schemes (its code):':<41} {' '.join(engine.schemes())}")
        print(f"  {'install footprint:':<41} {footprint_line(engine)}")


def installed(name: str) -> bool:
    engine = ENGINES[name]
    try:
        metadata.version(engine.distribution)
    except metadata.PackageNotFoundError:
        print(f"{name}: not installed (pip install {engine.distribution}=={engine.release[0]}), skipped")
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=160, help="JPEG side in pixels")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per engine, each in a fresh process")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    parser.add_argument("--workdir", type=Path, help="keep the folder and shards here (default: a temp dir)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: one read pass, as JSON
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        Path(spec["out"]).write_text(json.dumps(read(spec)))
        return
    print(machine_summary())  # the figures below hold for this hardware
    print(f"load average at start (1, 5, 15 min): {load()}; {os.cpu_count()} cores, shared with other jobs")
    engines = [name for name in args.engines if installed(name)]
    with tempfile.TemporaryDirectory() as temporary:
        work = args.workdir or Path(temporary)
        scratch = work / "scratch"
        scratch.mkdir(parents=True, exist_ok=True)
        folder = make_jpeg_folder(work / "jpeg", args.images, args.size, workers=os.cpu_count() or 1)
        samples = folder_samples(folder)[: args.images]
        for path, _, _ in samples:  # every writer finds the files in the page cache, not only the later ones
            path.read_bytes()
        print(
            f"data: {len(samples):,} JPEGs of {args.size} px, {disk_mb(folder):,.0f} MB; batch {BATCH}, "
            f"{WORKERS} workers, shards of {SHARD_BYTES >> 20} MiB"
        )
        figures = {}
        for name in engines:
            figures[name] = write_shards(name, samples, work / f"shards-{name}")
            print(f"{name}: wrote {figures[name].shards_mb:,.0f} MB in {figures[name].write_s:.1f} s", flush=True)
        for repeat in range(args.repeats):  # the engines alternate, so a busy minute falls on all of them
            for name in engines:
                line = time_pass(name, work / f"shards-{name}", scratch, figures[name])
                print(f"pass {repeat + 1} {line}, load {load()}", flush=True)
        for name in engines:
            figures[name].checks = run_checks(name, work / f"shards-{name}", len(samples), scratch)
            print(f"{name}: resume and DDP checks done, load {load()}", flush=True)
    report(figures, args.repeats)
    print(f"\nload average at end: {load()}")
    rates = " ".join(f"{name}={result.rate():.0f}" for name, result in figures.items())
    memory = " ".join(f"{name}_rss={result.peak_mb():.0f}" for name, result in figures.items())
    print(f"streaming_engines {rates} {memory}")


if __name__ == "__main__":
    main()
