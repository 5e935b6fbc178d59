"""The built-in spoken-command dataset: Speech Commands' ten keywords spoken by espeak-ng's voices.

Generated once, offline, with Debian's `espeak-ng` (`apt-get install espeak-ng`) into the cache, then read
as any folder of recordings in the standard layout:

    python -m datamodules.espeak_commands     # generate (about a minute on 2 cores) and verify; the set-up runs it

A speaker is one of espeak-ng's English accents with one of its voice variants (m1-m8, f1-f5, klatt, whisper,
...); every variant is spoken with 4 of the accents. Variants are split 70/15/15 into train/val/test by a
hash of their name, so test voices are never heard in training: the test measures generalisation to new
speakers. Each clip: one word at a random speed (130-200 words per minute) and pitch (25-75 of 99),
resampled from espeak-ng's 22,050 Hz to 16 kHz, trimmed of silence, placed at a random offset in a 1 s
clip, scaled to a random peak (0.1-0.9) with white noise at 10-30 dB SNR; 16-bit mono WAV. Every random
choice comes from a generator seeded by the clip's speaker and word, so the files are the same on every
run of one espeak-ng version. `manifest.json`, written last, holds every file's sha256.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from datamodules.audio_files import resample
from datamodules.cache import cache_dir
from packaged import sha256_of
from validation import ConfigError, require

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
VERSION = 1  # of the recipe below: a change makes a new folder, never a mix
SAMPLE_RATE = 16000
CLIP_SAMPLES = SAMPLE_RATE  # 1 s
ACCENTS_PER_VARIANT = 4
VAL_FRACTION = TEST_FRACTION = 0.15
INSTALL_HINT = "install it with `apt-get install espeak-ng` (Debian, Ubuntu; `brew install espeak-ng` on macOS)"


def dataset_dir() -> Path:
    return cache_dir() / f"espeak_commands-v{VERSION}"


def espeak() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise ConfigError(
            f"the built-in dataset espeak_commands is made with espeak-ng, which is not installed; {INSTALL_HINT}, "
            "or give your own recordings in --data.source"
        )
    return path


def voice_files(binary: str, kind: str) -> list[str]:
    """The voice files espeak-ng lists for `--voices=<kind>` (5th column), e.g. "gmw/en-US" or "!v/m3"."""
    listing = subprocess.run([binary, f"--voices={kind}"], capture_output=True, text=True, check=True).stdout
    return [line.split()[4] for line in listing.splitlines()[1:] if len(line.split()) >= 5]


def speakers(binary: str) -> list[tuple[str, str, str]]:
    """(accent, variant, split) for every speaker: each variant with ACCENTS_PER_VARIANT English accents."""
    accents = sorted(file.split("/", 1)[1] for file in voice_files(binary, "en") if file.startswith("gmw/en"))
    # Variants named by one word (one is "Mr serious": espeak-ng cannot take a name with a space after "+").
    variants = sorted(
        {file[3:] for file in voice_files(binary, "variant") if file.startswith("!v/") and " " not in file}
    )
    if len(accents) < ACCENTS_PER_VARIANT or len(variants) < 20:
        raise ConfigError(f"espeak-ng lists {len(accents)} English accents and {len(variants)} variants; reinstall it")
    chosen = []
    for variant in variants:
        u = (zlib.crc32(f"split:{variant}".encode()) & 0xFFFFFFFF) / 2**32  # uniform in [0, 1), fixed per name
        split = "test" if u < TEST_FRACTION else "val" if u < TEST_FRACTION + VAL_FRACTION else "train"
        rng = np.random.default_rng(zlib.crc32(f"accents:{variant}".encode()))
        for index in sorted(rng.choice(len(accents), ACCENTS_PER_VARIANT, replace=False)):
            chosen.append((accents[index], variant, split))
    return chosen


def synthesise(binary: str, accent: str, variant: str, word: str) -> np.ndarray:
    """One clip of `word`: (CLIP_SAMPLES,) int16 at SAMPLE_RATE (see the module's description)."""
    soundfile = require("soundfile", "making the spoken keywords")
    rng = np.random.default_rng(zlib.crc32(f"v{VERSION}:{accent}+{variant}:{word}".encode()))
    speed, pitch = int(rng.integers(130, 201)), int(rng.integers(25, 76))
    command = [binary, "-v", f"{accent}+{variant}", "-s", str(speed), "-p", str(pitch), "--stdout", word]
    wav = subprocess.run(command, capture_output=True, check=True).stdout
    samples, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    speech = resample(samples, rate, SAMPLE_RATE)
    loud = np.flatnonzero(np.abs(speech) > 0.02 * np.abs(speech).max())
    speech = speech[loud[0] : loud[-1] + 1][:CLIP_SAMPLES] if len(loud) else speech[:CLIP_SAMPLES]
    clip = np.zeros(CLIP_SAMPLES, dtype=np.float64)
    start = int(rng.integers(0, CLIP_SAMPLES - len(speech) + 1))
    clip[start : start + len(speech)] = speech
    clip *= rng.uniform(0.1, 0.9) / max(np.abs(clip).max(), 1e-9)
    signal_power = np.mean(clip[start : start + len(speech)] ** 2)
    snr_db = rng.uniform(10.0, 30.0)
    clip += rng.normal(0.0, np.sqrt(signal_power / 10 ** (snr_db / 10)), CLIP_SAMPLES)
    return np.round(np.clip(clip, -1.0, 32767 / 32768) * 32768).astype(np.int16)


def generate(target: Path) -> None:
    """Write every clip under target/<split>/<word>/<accent>-<variant>_nohash_0.wav, then the manifest; the
    folder appears whole (made beside it, then renamed) or not at all."""
    soundfile = require("soundfile", "making the spoken keywords")
    binary = espeak()
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    jobs = [(accent, variant, split, word) for accent, variant, split in speakers(binary) for word in WORDS]
    target.parent.mkdir(parents=True, exist_ok=True)
    # ignore_cleanup_errors: after the rename below there is nothing left to clean up
    with tempfile.TemporaryDirectory(
        dir=target.parent, prefix=f".{target.name}-", ignore_cleanup_errors=True
    ) as scratch:

        def write(job: tuple[str, str, str, str]) -> tuple[str, str]:
            accent, variant, split, word = job
            relative = f"{split}/{word}/{accent.lower()}-{variant.lower()}_nohash_0.wav"
            path = Path(scratch) / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(path, synthesise(binary, accent, variant, word), SAMPLE_RATE, subtype="PCM_16")
            return relative, sha256_of(path)

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # espeak-ng runs as subprocesses
            files = dict(pool.map(write, jobs))
        manifest = {"version": VERSION, "espeak_ng": version, "sample_rate": SAMPLE_RATE, "files": files}
        (Path(scratch) / "manifest.json").write_text(json.dumps(manifest, indent=0, sort_keys=True))
        try:
            os.rename(scratch, target)  # atomic; fails if another process finished first, whose copy stays
        except OSError:
            if not (target / "manifest.json").is_file():
                raise


def problems(root: Path, checksums: bool) -> list[str]:
    """What is wrong with a generated folder (missing, or files absent, or changed); [] when it is whole."""
    try:
        manifest = json.loads((root / "manifest.json").read_text())
        files: dict[str, str] = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return [f"{root} has no readable manifest.json"]
    bad = [name for name, digest in files.items() if not (root / name).is_file()]
    if checksums:
        bad += [name for name, digest in files.items() if (root / name).is_file() and sha256_of(root / name) != digest]
    return [f"{root / name} is missing or changed" for name in bad]


def ensure(checksums: bool = False) -> Path:
    """The dataset's folder, generated first if it is missing or damaged."""
    root = dataset_dir()
    if not problems(root, checksums):
        return root
    espeak()  # a missing espeak-ng is the one-line error, before anything is removed
    if root.exists():
        print(f"regenerating {root}: {problems(root, checksums)[0]}", file=sys.stderr)
        shutil.rmtree(root)
    else:
        print(f"generating the espeak_commands dataset in {root} (once; about a minute)", file=sys.stderr)
    generate(root)
    return root


if __name__ == "__main__":
    try:
        folder = ensure(checksums=True)
    except ConfigError as error:
        sys.exit(f"error: {error}")
    count = len(json.loads((folder / "manifest.json").read_text())["files"])
    print(f"{folder}  ({count:,} clips, sha256 verified)")
