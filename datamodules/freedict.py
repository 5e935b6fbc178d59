"""Parallel phrases from a FreeDict dictionary, Debian's `dict-freedict-<pair>` packages (dictd format):
real translations that work offline.

A dictd dictionary is two files in /usr/share/dictd: `freedict-<pair>.index`, one line per headword with
the byte offset and length of its entry (in base64 digits), and `freedict-<pair>.dict.dz`, the entries,
gzip-compressed. An entry of the German-English dictionary reads

    Marke /mˈaɾkə/ <fem, n, sg>
     [econ.] make <n>
          "Armbanduhren diverser Marken"  - wristwatches of various makes

and one whose headword is a sentence has its translation on the second line. The phrases are the usage
examples (`"German"  - English`) and the sentence headwords with their translations: 50,133 distinct pairs
in `deu-eng` (2022.04.06 in Debian 12), 33 characters long on average. Reading them takes about 6 s on a
2-core CPU, so the pairs are kept in the data cache after the first read, under a key of the dictionary's
files (their paths, sizes and modification times): a reinstalled or updated dictionary is read again.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

from datamodules.cache import cache_dir
from validation import ConfigError

DICTD = Path("/usr/share/dictd")
BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
EXAMPLE = re.compile(r'^\s*"(?P<source>[^"]+)"\s+- (?P<target>.+)$', re.MULTILINE)
# A headword that is a sentence (capital first, . ! or ? last), its pronunciation, then its translation.
SENTENCE = re.compile(r"^(?P<source>[^\s/<].*?[.!?]) /[^/\n]*/[^\n]*\n(?P<target>[^\n]+)")


def freedict_pairs(pair: str, directory: Path = DICTD) -> list[tuple[str, str]]:
    """The distinct (source phrase, translation) pairs of dictionary `pair` (e.g. "deu-eng"), in the order
    of its entries; a source phrase with several translations keeps its first."""
    index, entries = directory / f"freedict-{pair}.index", directory / f"freedict-{pair}.dict.dz"
    if not (index.is_file() and entries.is_file()):
        raise ConfigError(
            f"FreeDict dictionary {pair} not found in {directory}; install it with "
            f"`apt-get install dict-freedict-{pair}` (the set-up does for deu-eng)"
        )
    key = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    for path in (index, entries):
        stat = path.stat()
        key.update(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    cached = cache_dir() / "freedict" / f"{pair}-{key.hexdigest()[:16]}.json"
    try:
        return [(source, target) for source, target in json.loads(cached.read_text(encoding="utf-8"))]
    except (OSError, ValueError):  # not cached yet, or damaged: read the dictionary again
        pairs = read_pairs(index, entries)
    keep(cached, json.dumps(pairs, ensure_ascii=False))
    return pairs


CACHE_VERSION = 1  # of `read_pairs`: a change to it that changes the pairs must raise it


def keep(path: Path, text: str) -> None:
    """Write `path` whole or not at all, through a temporary file of its own (two runs may fill the cache at
    once, so not `write_atomic`'s one temporary name); a cache that cannot be written (a read-only home) is no
    error: the pairs are read from the dictionary again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, part = tempfile.mkstemp(dir=path.parent, suffix=".part")
    except OSError:
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(part, path)
    except OSError:
        Path(part).unlink(missing_ok=True)


def read_pairs(index: Path, entries: Path) -> list[tuple[str, str]]:
    """The pairs of the dictionary whose index and entries these are (see `freedict_pairs`)."""
    data = gzip.decompress(entries.read_bytes())
    pairs: dict[str, str] = {}
    for offset, length in dict.fromkeys(entry_spans(index)):  # several headwords share an entry
        entry = data[offset : offset + length].decode("utf-8", errors="replace")
        found = [(m["source"], m["target"]) for m in EXAMPLE.finditer(entry)]
        if sentence := SENTENCE.match(entry):
            found.insert(0, (sentence["source"], sentence["target"]))
        for source, target in found:
            source, target = clean(source), clean(target)
            if source and target:
                pairs.setdefault(source, target)
    return list(pairs.items())


def entry_spans(index: Path) -> list[tuple[int, int]]:
    """(offset, length) in bytes of every entry an index line points to, meta entries (00database...) left out."""
    spans = []
    for line in index.read_text(encoding="utf-8").splitlines():
        headword, offset, length = line.rsplit("\t", 2)
        if not headword.startswith("00database"):
            spans.append((from_base64(offset), from_base64(length)))
    return spans


def from_base64(digits: str) -> int:
    value = 0
    for digit in digits:
        value = value * 64 + BASE64.index(digit)
    return value


def clean(text: str) -> str:
    """A phrase without grammar tags (`<n>`), domain labels (`[econ.]`) and repeated spaces."""
    text = re.sub(r"<[^>]*>|\[[^\]]*\]", " ", text)
    return " ".join(text.split()).strip(" ,;")
