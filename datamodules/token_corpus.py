"""Language-model corpora bigger than memory: token ids in flat binary files, prepared once (nanoGPT's
`train.bin`, which np.memmap maps), read as random windows with flat memory.

    prepare_corpus(text_file, folder)    a UTF-8 text of any size -> the folder below, in bounded memory
    TokenCorpus(folder)                  reads it; `loader` gives a split's batches of windows

    <folder>/train.bin, val.bin, test.bin    the splits' token ids, uint16 (uint32 for vocabularies > 65,535)
    <folder>/tokenizer.json                  the tokenizer, trained on the training part only
    <folder>/firstlight.json                 the manifest (datamodules/prepared.py), written last; its `state`
                                             is the datamodule's inference state, `settings` how it was cut

The text is cut by position exactly as `LanguageModelDataModule` cuts a text it holds in memory (the first
1 - val - test of the characters for training, then validation, then test), with the same line-end
normalisation and byte-order mark handling, so a prepared corpus and the in-memory path see the same
characters. Preparing reads the file in chunks of about `chunk_bytes` cut at line breaks, in a pool of
worker processes: one pass counts the characters (and collects those of the training part), a BPE
tokenizer is trained on a stream of the training part, and a second pass encodes each chunk into a part
file (`<folder>/.parts/<split>-<n>.bin`, written atomically). An interrupted prepare, run again with the same
arguments, keeps its plan, tokenizer and finished parts and goes on.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import mmap
import multiprocessing
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, AnyStr, Literal

import numpy as np
import torch

from datamodules.batches import IndexBatches, ShardedOrder
from datamodules.prepared import FORMAT_VERSION, MANIFEST, Manifest, fingerprint, read_manifest
from datamodules.special_tokens import SPECIALS, UNK_ID
from datamodules.splits import SPLITS
from datamodules.text_sources import GZIP_MAGIC
from datamodules.tokenization import CharTokenizer, Tokenizer, tokenizer_from_json, train_tokenizer
from validation import ConfigError, check_range

KIND = "corpus"
PARTS = ".parts"  # unfinished work of a prepare: its plan, tokenizer and encoded parts
CHUNK_BYTES = 16 * 2**20  # of text per task: a worker holds about 6 times this (bytes, text, ids)
PIECE_CHARS = 2**20  # encoded at a time within a chunk
SEARCH_BYTES = 2**20  # how far before a chunk's nominal end a line break to cut at is looked for
BYTES_PER_CHAR = 20  # what holding a text in memory costs LanguageModelDataModule: ids, windows, text
CorpusTokenizer = Literal["char", "bpe"]

# A line break between two printable ASCII characters other than space is a cut that changes nothing: no
# character (a "\r\n" stays whole) and no byte-level BPE pre-token (GPT-2's pattern never joins such a break
# with its neighbours), so the chunks encode to exactly the ids of the whole text.
PRINTABLE = "".join(map(chr, range(0x21, 0x7F)))
PRINTABLE_BYTES = PRINTABLE.encode()


def prepare_corpus(
    source: Path,
    output: Path,
    *,
    tokenizer: CorpusTokenizer = "char",
    vocab_size: int = 4096,
    val_fraction: float = 0.05,
    test_fraction: float = 0.05,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    chunk_bytes: int = CHUNK_BYTES,
) -> Manifest:
    """Prepare the UTF-8 text file `source` as a corpus in the folder `output` (see the module's docstring),
    with `workers` processes (default: one per usable core) and a progress line on stderr. Run again after an
    interruption, it goes on. A folder holding anything else is refused, and a finished corpus unless
    `overwrite`. Returns the manifest written."""
    source, output = Path(source), Path(output)
    if tokenizer not in ("char", "bpe"):
        raise ConfigError(f"a corpus uses tokenizer 'char' or 'bpe' (lossless), not {tokenizer!r}")
    check_range("val_fraction", val_fraction, 0.0, 0.5, low_open=True)
    check_range("test_fraction", test_fraction, 0.0, 0.5, low_open=True)
    check_range("chunk_bytes", chunk_bytes, 64)
    check_text_file(source)
    claim_folder(output, overwrite)
    workers = max(1, workers or usable_cores())
    say = Progress(source.name, progress)
    parts = output / PARTS
    settings: dict[str, Any] = {"tokenizer": tokenizer, "vocab_size": vocab_size}
    settings |= {"val_fraction": val_fraction, "test_fraction": test_fraction}
    identity: dict[str, Any] = {"source": str(source.resolve()), "fingerprint": fingerprint(source)}
    identity["settings"] = settings
    identity |= {"chunk_bytes": chunk_bytes, "version": FORMAT_VERSION}
    plan = read_plan(parts, identity) or make_plan(source, parts, identity, workers, say)
    trained = tokenizer_from_json(plan["tokenizer"])
    dtype = np.dtype(np.uint16 if trained.vocab_size <= 2**16 else np.uint32)

    tasks = [Part(**task) for task in plan["tasks"]]
    pending = [task for task in tasks if not joined(parts, task.split) and not (parts / task.name).is_file()]
    with worker_pool(min(workers, len(pending)), start_worker, (plan["tokenizer"],)) as imap:
        say.start("encoding", sum(task.bytes for task in pending))
        for size in imap(encode_part, [(str(source), task, str(parts), dtype.str) for task in pending]):
            say.advance(size)
        say.finish()
    sizes = {split: join_parts(output, split, [task for task in tasks if task.split == split]) for split in SPLITS}

    write_atomic(output / "tokenizer.json", trained.to_json().encode())
    shutil.rmtree(parts)  # before the manifest, which lists every file of the folder
    tokens = {split: size // dtype.itemsize for split, size in sizes.items()}
    manifest = Manifest(
        kind=KIND,
        source=identity["source"],
        fingerprint=identity["fingerprint"],
        splits=tokens,
        state={"tokenizer": trained.to_json(), "characters": plan["train_characters"], "tokens": tokens["train"]},
        settings=settings | {"dtype": dtype.name},
    )
    manifest.write(output)
    return manifest


@dataclass(frozen=True)
class Part:
    """Characters [lo, hi) of the chunk at bytes [start, end) of the text: part `number` of `split`."""

    split: str
    number: int
    start: int
    end: int
    lo: int
    hi: int
    bytes: int  # of the text it encodes, about: for the progress line

    @property
    def name(self) -> str:
        return f"{self.split}-{self.number:06d}.bin"


def make_plan(source: Path, parts: Path, identity: dict[str, Any], workers: int, say: Progress) -> dict[str, Any]:
    """Cut the text into chunks, count their characters (the first pass), train the tokenizer on the
    training part and list the parts to encode; saved as `.parts/plan.json` for a resumed prepare."""
    settings = identity["settings"]
    if parts.exists():  # the leftovers of a prepare with other arguments, or of another source
        shutil.rmtree(parts)
    parts.mkdir(parents=True)
    cuts = chunk_cuts(source, identity["chunk_bytes"])
    chunks = list(itertools.pairwise(cuts))
    scans: list[dict[str, Any]] = []
    with worker_pool(min(workers, len(chunks)), None, ()) as imap:
        say.start("counting characters", cuts[-1] - cuts[0])
        for scan in imap(scan_chunk, [(str(source), start, end) for start, end in chunks]):
            if scan["nul"] >= 0:
                line = sum(s["lines"] for s in scans) + scan["nul"] + 1
                message = "holds a NUL character: not UTF-8 text (UTF-16?); convert it to UTF-8"
                raise ConfigError(f"{source} line {line} {message}")
            scans.append(scan)
            say.advance(scan["bytes"])
        say.finish()
    if all(scan["blank"] for scan in scans):
        raise ConfigError(f"{source} is empty; give a file with text")
    firsts = [0, *itertools.accumulate(scan["chars"] for scan in scans)]  # each chunk's first character, the end
    characters = firsts[-1]
    val_start = int(characters * (1 - settings["val_fraction"] - settings["test_fraction"]))  # as the
    test_start = int(characters * (1 - settings["test_fraction"]))  # in-memory path cuts the text
    bounds = {"train": (0, val_start), "val": (val_start, test_start), "test": (test_start, characters)}
    tasks: list[Part] = []
    for split, (begin, stop) in bounds.items():
        numbers = itertools.count()
        for (start, end), first, scan in zip(chunks, firsts, scans, strict=False):
            lo, hi = max(begin, first) - first, min(stop, first + scan["chars"]) - first
            if lo < hi:
                share = round((hi - lo) / scan["chars"] * (end - start))
                tasks.append(Part(split, next(numbers), start, end, lo, hi, share))

    say.start("training the tokenizer", 0)
    training = [task for task in tasks if task.split == "train"]
    if settings["tokenizer"] == "char":
        codes: set[int] = set()
        for task, scan in zip(training, scans, strict=False):  # the training part's chunks come first
            whole = task.hi - task.lo == scan["chars"]
            codes.update(scan["codes"] if whole else code_points(read_part(source, task)).tolist())
        trained: Tokenizer = CharTokenizer([chr(code) for code in sorted(codes)])
    else:
        # train_tokenizer hands the texts to tokenizers' `train_from_iterator`, which takes any iterable: the
        # training part streams by chunks, whose cuts split no word (see PRINTABLE).
        texts = (read_part(source, task) for task in training)
        trained = train_tokenizer("bpe", texts, settings["vocab_size"])  # type: ignore[arg-type]
    say.finish()
    plan: dict[str, Any] = {"identity": identity, "tasks": [asdict(task) for task in tasks]}
    plan |= {"tokenizer": trained.to_json(), "train_characters": val_start}
    write_atomic(parts / "plan.json", json.dumps(plan).encode())
    return plan


def read_plan(parts: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The plan of an unfinished prepare of the same source with the same arguments, or None."""
    try:
        plan = json.loads((parts / "plan.json").read_text())
    except (OSError, ValueError):
        return None
    if plan.get("identity") != identity:
        return None
    for leftover in parts.glob("*.tmp"):  # a part being written when the prepare stopped
        leftover.unlink()
    return plan


def joined(parts: Path, split: str) -> bool:
    return (parts / f"{split}.done").is_file()


def join_parts(output: Path, split: str, tasks: list[Part]) -> int:
    """Concatenate a split's parts, in order, into <output>/<split>.bin; its size in bytes. Once it is joined
    (marked `.parts/<split>.done`), its parts go, so that the disk holds the ids about once."""
    parts = output / PARTS
    target = output / f"{split}.bin"
    if not tasks:  # a split without characters (a tiny text)
        target.write_bytes(b"")
        return 0
    if joined(parts, split) and target.is_file():
        return target.stat().st_size
    partial = output / f".{split}.bin.tmp"
    buffer = memoryview(bytearray(2**22))  # one buffer: a new one per read grew the heap with the bytes copied
    with partial.open("wb") as out:
        for task in tasks:
            with (parts / task.name).open("rb") as part:
                while count := part.readinto(buffer):
                    out.write(buffer[:count])
    partial.replace(target)
    (parts / f"{split}.done").touch()
    for task in tasks:
        (parts / task.name).unlink()
    return target.stat().st_size


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def write_atomic(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_bytes(data)
    partial.replace(path)


# -- the folder ---------------------------------------------------------------------------------------------

OUR_NAMES = {MANIFEST, f".{MANIFEST}.tmp", PARTS, ".tokenizer.json.tmp", "tokenizer.json"}
OUR_NAMES |= {f"{split}.bin" for split in SPLITS} | {f".{split}.bin.tmp" for split in SPLITS}


def claim_folder(output: Path, overwrite: bool) -> None:
    """Make `output` ready for a prepare: new, empty, an unfinished prepare's, or (with `overwrite`) a
    finished corpus's; anything else in it is the user's, and is refused, never deleted."""
    if output.exists() and not output.is_dir():
        raise ConfigError(f"{output} is a file; give a folder to prepare the corpus in")
    output.mkdir(parents=True, exist_ok=True)
    names = set(os.listdir(output))
    if names - OUR_NAMES:
        found = ", ".join(sorted(names - OUR_NAMES)[:3])
        raise ConfigError(
            f"{output} holds files that are not a prepared corpus ({found}, ...); give a new or empty folder"
        )
    if MANIFEST in names:
        if not overwrite:
            raise ConfigError(
                f"{output} already holds a prepared corpus; give another folder, or --overwrite to prepare it again"
            )
        (output / MANIFEST).unlink()  # first: from here on the folder is no dataset
        for name in names - {MANIFEST}:
            path = output / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()


# -- reading the text in chunks (in worker processes) -------------------------------------------------------


def check_text_file(path: Path) -> None:
    """What `read_text_file` checks before decoding, without reading the file."""
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give a text file to prepare")
    if not path.is_file():
        raise ConfigError(f"text file {path} not found; give an existing file")
    try:
        with path.open("rb") as file:
            head = file.read(2)
    except OSError as error:
        raise ConfigError(f"{path} cannot be read ({error.strerror}); check its permissions") from None
    if head in (b"\xff\xfe", b"\xfe\xff"):
        raise ConfigError(f"{path} is UTF-16 text; convert it to UTF-8")
    if head == GZIP_MAGIC:  # read in byte ranges by several workers: it must be plain text
        raise ConfigError(f"{path} is gzip-compressed; preparing reads plain text: gunzip it first")


def chunk_cuts(path: Path, chunk_bytes: int) -> list[int]:
    """Byte offsets that cut the file into chunks of about `chunk_bytes`: the text's start (after a UTF-8
    byte-order mark), the cuts, and the file's end. A cut is at a line break that changes nothing (see
    PRINTABLE), else after any line break, else between two characters but never inside a "\\r\\n"."""
    size = path.stat().st_size
    with path.open("rb") as file:
        cuts = [3 if file.read(3) == b"\xef\xbb\xbf" else 0]
        while size - cuts[-1] > chunk_bytes:
            target = cuts[-1] + chunk_bytes
            offset = max(cuts[-1], target - SEARCH_BYTES)  # data[i] is the byte at offset + i
            file.seek(offset)
            data = file.read(target + 1 - offset)  # up to the byte after the target, to see both sides of it
            cut = last_cut(data, 1, len(data) - 1)
            if cut < 0 and data.rfind(b"\n", 0, len(data) - 1) > 0:
                cut = data.rfind(b"\n", 0, len(data) - 1) + 1
            if cut < 0:
                cut = len(data) - 1
                while cut > 1 and ((data[cut] & 0xC0) == 0x80 or data[cut - 1] == 0x0D):
                    cut -= 1  # not inside a character's bytes, nor between "\r" and "\n"
            cuts.append(offset + cut)
    return [*cuts, size]


def last_cut(data: AnyStr, lo: int, hi: int) -> int:
    """The last position in [lo, hi] right after a line break with a printable ASCII character other than a
    space on each side (data[cut - 2] and data[cut]); -1 if there is none."""
    newline, printable = (b"\n", PRINTABLE_BYTES) if isinstance(data, bytes) else ("\n", PRINTABLE)
    end = min(hi, len(data) - 1)  # the break is at end - 1 at most, and data[end] must exist
    while True:
        at = data.rfind(newline, max(lo - 1, 1), end)
        if at < 0:
            return -1
        if data[at - 1 : at] in printable and data[at + 1 : at + 2] in printable:
            return at + 1
        end = at


def read_chunk(path: Path | str, start: int, end: int) -> str:
    """Bytes [start, end) of the file as text, line ends normalised as `read_text_file` does."""
    with open(path, "rb") as file:
        file.seek(start)
        data = file.read(end - start)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path} is not UTF-8 text (byte {start + error.start}); convert it to UTF-8") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def code_points(text: str) -> np.ndarray:
    """The distinct code points of a text, sorted; piece by piece, in a few MB whatever the text's length."""
    present = np.zeros(0x110000, dtype=bool)  # one flag per Unicode code point
    for first in range(0, len(text), PIECE_CHARS):
        present[character_codes(text[first : first + PIECE_CHARS])] = True
    return np.flatnonzero(present)


def character_codes(text: str) -> np.ndarray:
    """(N,) code points of a text: uint8 when it is ASCII (a quarter of the memory and time), else uint32."""
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), np.uint8)
    return np.frombuffer(text.encode("utf-32-le"), np.uint32)


def scan_chunk(task: tuple[str, int, int]) -> dict[str, Any]:
    """A chunk's characters, line breaks, code points, whether it is all blank, and where a NUL is (or -1)."""
    path, start, end = task
    text = read_chunk(path, start, end)
    nul = text.find("\0")
    return {
        "bytes": end - start,
        "chars": len(text),
        "lines": text.count("\n"),
        "codes": code_points(text).tolist(),
        "blank": not text or text.isspace(),
        "nul": -1 if nul < 0 else text.count("\n", 0, nul),
    }


WORKER_TOKENIZER: list[Tokenizer] = []  # a worker's tokenizer, set by `start_worker`


def start_worker(tokenizer_json: str) -> None:
    WORKER_TOKENIZER[:] = [tokenizer_from_json(tokenizer_json)]


def read_part(path: Path | str, task: Part) -> str:
    return read_chunk(path, task.start, task.end)[task.lo : task.hi]


def encode_part(job: tuple[str, Part, str, str]) -> int:
    """Encode a part into `<parts>/<its name>` as `dtype`, written atomically. Returns its bytes of text."""
    path, task, parts, dtype = job
    ids = encode_text(WORKER_TOKENIZER[0], read_part(path, task), np.dtype(dtype))
    partial = Path(parts) / f"{task.name}.tmp"
    ids.tofile(partial)
    partial.replace(Path(parts) / task.name)
    return task.bytes


def encode_text(tokenizer: Tokenizer, text: str, dtype: np.dtype) -> np.ndarray:
    """A text's ids, as `tokenizer.encode` gives them, in `dtype`; piece by piece, so that memory stays a few
    times the text's size."""
    if isinstance(tokenizer, CharTokenizer):  # a lookup table of code points, the ids of `encode_array`
        table = np.full(int(tokenizer.codes.max(initial=0)) + 2, UNK_ID, dtype=dtype)  # last: all beyond
        table[tokenizer.codes] = np.arange(len(SPECIALS), tokenizer.vocab_size, dtype=dtype)
        pieces = []
        for first in range(0, len(text), PIECE_CHARS):
            codes = character_codes(text[first : first + PIECE_CHARS])
            pieces.append(table[np.minimum(codes, len(table) - 1)])
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype)
    encode_batch = tokenizer.encode_batch  # type: ignore[attr-defined]  # a SubwordTokenizer's
    ids: list[np.ndarray] = []
    batch: list[str] = []
    first = 0
    while first < len(text):
        target = first + PIECE_CHARS // 16
        cut = len(text) if target >= len(text) else last_cut(text, first + 1, target)
        cut = target if cut < 0 else cut  # no such line break: a rare pre-token cut in two (still lossless)
        batch.append(text[first:cut])
        first = cut
        if len(batch) == 16 or first >= len(text):
            ids += [np.asarray(piece, dtype=dtype) for piece in encode_batch(batch)]
            batch = []
    return np.concatenate(ids) if ids else np.zeros(0, dtype)


@contextlib.contextmanager
def worker_pool(
    workers: int, initializer: Callable[..., None] | None, initargs: tuple[Any, ...]
) -> Iterator[Callable[[Callable[[Any], Any], Sequence[Any]], Iterator[Any]]]:
    """An ordered, lazy `map` over `workers` processes (in this process for one)."""
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        yield map
        return
    # The workers encode one piece at a time each: tokenizers' own threads would only compete (and it warns
    # in a process forked after it used them).
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    try:
        with multiprocessing.get_context(method).Pool(workers, start_process, (initializer, initargs)) as pool:
            yield lambda function, items: pool.imap(function, items)
    finally:
        if previous is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous


def start_process(initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    """In a worker: Ctrl-C and SIGTERM are the parent's to handle (it stops the pool, and the parts written
    stay for the next run); then the worker's own set-up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if initializer is not None:
        initializer(*initargs)


class Progress:
    """One line on stderr per phase, updated in place at most twice a second."""

    def __init__(self, name: str, enabled: bool) -> None:
        self.name, self.enabled = name, enabled
        self.phase, self.total, self.count, self.started, self.shown = "", 0, 0, 0.0, 0.0

    def start(self, phase: str, total: int) -> None:
        self.phase, self.total, self.count, self.started, self.shown = phase, total, 0, time.perf_counter(), 0.0
        self.show()

    def advance(self, count: int) -> None:
        self.count += count
        if time.perf_counter() - self.shown > 0.5:
            self.show()

    def show(self, end: str = "") -> None:
        """The phase's line; updates overwrite it on a terminal, elsewhere (a log file) only its end is shown."""
        terminal = sys.stderr.isatty()
        if not self.enabled or not (terminal or end):
            return
        seconds = time.perf_counter() - self.started
        line = ("\r" if terminal else "") + f"prepare {self.name}: {self.phase}"
        if self.total:
            rate = self.count / max(seconds, 1e-9) / 1e6
            line += f" {self.count / 1e6:,.0f}/{self.total / 1e6:,.0f} MB ({rate:,.0f} MB/s)"
        print(f"{line} {seconds:.0f} s{end}", end="", file=sys.stderr, flush=True)
        self.shown = time.perf_counter()

    def finish(self) -> None:
        self.show(end="\n")


# -- reading ------------------------------------------------------------------------------------------------


class TokenCorpus:
    """A prepared corpus: each split's token ids in <folder>/<split>.bin, each batch's windows read from
    there (`windows`), nothing of a split's size held in memory.

    Windows are `context_length + 1` tokens (inputs, and targets shifted by one). Training windows start
    anywhere, drawn per batch from (seed, epoch, batch number): an epoch is as many windows as the in-memory
    path has ((tokens - 1) // context_length - 1), and a run resumed mid-epoch draws the same windows.
    Validation and test windows are the consecutive windows of their split, overlapping by one token, so
    every token is a target once; validation's in a fixed scattered order, so that the first batches
    (`--trainer.limit_val_batches N`) sample the whole split.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.manifest = read_manifest(folder, KIND)
        self.dtype = np.dtype(self.manifest.settings["dtype"])
        self.tokens = dict(self.manifest.splits)  # split -> tokens
        self.descriptors: dict[str, int] = {}  # split -> its file, open for reading windows
        for split in SPLITS:
            path = self.path(split)
            if path.stat().st_size != self.tokens[split] * self.dtype.itemsize:
                message = f"does not hold the {self.tokens[split]:,} tokens its manifest says; prepare the corpus again"
                raise ConfigError(f"{path} {message}")

    def path(self, split: str) -> Path:
        return self.folder / f"{split}.bin"

    def ids(self, split: str) -> np.ndarray:
        """The split's token ids (N,), mapped, not read."""
        if self.tokens[split] == 0:
            return np.zeros(0, self.dtype)  # an empty file cannot be mapped
        with self.path(split).open("rb") as file:  # the map outlives the file object
            mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        # A plain array over the map: np.memmap costs 100 µs to make and 50 µs per gather of 12 windows, this
        # 40 and 8.
        return np.frombuffer(mapped, dtype=self.dtype, count=self.tokens[split])

    def windows(self, split: str, starts: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) start positions -> inputs (B, length) and targets (B, length), targets shifted by one."""
        windows = np.empty((len(starts), length + 1), self.dtype)  # (B, length + 1)
        if hasattr(os, "preadv"):
            # Each window read straight into its row (12 windows of 65: 17 µs). Through a map, the pages a
            # window touches stay in the process's resident memory while the map lives, and the kernel maps
            # whole folios around each fault: 0.8 MB per random window measured (Linux 6.18), so a long-lived
            # map grows to the file's size, and even one map per batch (nanoGPT) costs B x 0.8 MB.
            descriptor = self.descriptor(split)
            for row, start in zip(windows, starts.tolist(), strict=True):
                if os.preadv(descriptor, [row], start * self.dtype.itemsize) != row.nbytes:
                    raise ConfigError(f"{self.path(split)} became shorter while training; prepare the corpus again")
        else:
            windows[:] = self.ids(split)[starts.numpy()[:, None] + np.arange(length + 1)]
        batch = torch.from_numpy(windows.astype(np.int64))
        return batch[:, :-1], batch[:, 1:]

    def descriptor(self, split: str) -> int:
        """An open file descriptor of the split's ids, this process's own."""
        if split not in self.descriptors:
            self.descriptors[split] = os.open(self.path(split), os.O_RDONLY)
        return self.descriptors[split]

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"descriptors": {}}  # a descriptor means nothing in another process

    def __del__(self) -> None:
        for descriptor in getattr(self, "descriptors", {}).values():
            with contextlib.suppress(OSError):
                os.close(descriptor)

    def count(self, split: str, context_length: int) -> int:
        """Windows of `split`: one fewer for training, whose windows move, as in the in-memory path."""
        return (self.tokens[split] - 1) // context_length - (split == "train")

    def loader(self, split: str, context_length: int, batch_size: int, *, seed: int, trainer: Any) -> WindowBatches:
        count = self.count(split, context_length)
        if count <= 0:
            raise ConfigError(
                f"the {split} part of {self.folder} has {self.tokens[split]} tokens, fewer than one window of "
                f"{context_length + 1}; use a longer text or a smaller --data.context_length"
            )
        order = ShardedOrder.for_trainer(trainer, count, shuffle=split == "train", seed=seed)
        return WindowBatches(self, split, context_length, batch_size, order)


class WindowBatches(IndexBatches):
    """IndexBatches (same length, epochs, mid-epoch resume) whose batches are windows of a `TokenCorpus`
    split, computed from the batch's number when it is due: an epoch's order is never materialised (30 M
    windows in 2 GB of text). A batch's "indices" (`batches()`, handed to `fetch`) are its windows' starts.

    Rank r of w takes batches r, r + w, ... of the epoch's numbering (training) or every w-th window of the
    order (evaluation), as ShardedOrder does."""

    def __init__(
        self, corpus: TokenCorpus, split: str, context_length: int, batch_size: int, order: ShardedOrder
    ) -> None:
        drop_last = order.shuffle and order.num_samples > batch_size
        super().__init__(
            lambda starts: corpus.windows(split, starts, context_length), batch_size, order, drop_last=drop_last
        )
        self.step = context_length
        self.positions = corpus.tokens[split] - context_length  # where a window may start: [0, positions)
        # Validation's order: window k = (a * i + c) mod n, with a near n / golden ratio and coprime to n:
        # a permutation whose every prefix is spread over the split, as a random one is.
        n = order.num_samples
        self.scatter, self.shift = 1, 0
        if split == "val":
            self.scatter = max(1, round(n * 0.6180339887))
            while math.gcd(self.scatter, n) != 1:
                self.scatter += 1
            self.shift = (order.seed * 0x9E3779B97F4A7C15) % n

    def starts(self, number: int) -> torch.Tensor:
        """The window starts of batch `number` of the running epoch (B,) (fewer in a last partial batch)."""
        order = self.sampler
        if order.shuffle:
            batch = number * order.world_size + order.rank
            draws = torch.Generator().manual_seed(mixed(order.seed, order.epoch, batch))
            return torch.randint(self.positions, (self.batch_size,), generator=draws)
        mine = torch.arange(number * self.batch_size, min((number + 1) * self.batch_size, len(order)))
        windows = (mine * order.world_size + order.rank) * self.scatter + self.shift  # this rank's share
        return windows % order.num_samples * self.step

    def batches(self) -> list[torch.Tensor]:
        """Every batch's starts (for inspection: iterating computes each when it is due)."""
        return [self.starts(number) for number in range(len(self))]

    def __iter__(self) -> Iterator[Any]:
        first = 0
        if self.resume_at is not None:
            if self.resume_at["epoch"] == self.sampler.epoch:
                first = self.resume_at["batches_done"]
            self.resume_at = None
        for number in range(first, len(self)):
            yield self.fetch(self.starts(number))


def mixed(*numbers: int) -> int:
    """One 64-bit seed from several integers (SplitMix64's finaliser over each in turn): neighbouring
    (seed, epoch, batch) give unrelated seeds."""
    state = 0
    for number in numbers:
        state = (state ^ number) % 2**64
        state = (state + 0x9E3779B97F4A7C15) % 2**64
        state = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
        state = ((state ^ (state >> 27)) * 0x94D049BB133111EB) % 2**64
        state ^= state >> 31
    return state


def available_memory() -> int | None:
    """Bytes of memory this process may still take: the system's available memory (MemAvailable: free
    memory and caches it can drop), within the process's cgroup limit if it has one; None where unknown."""
    available: int | None = None
    with contextlib.suppress(OSError, ValueError, StopIteration), open("/proc/meminfo") as meminfo:
        available = 1024 * int(next(line for line in meminfo if line.startswith("MemAvailable:")).split()[1])
    if available is None:
        with contextlib.suppress(ValueError, OSError, AttributeError):
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            available = min(available or 2**63, int(limit) - used)
    return available
