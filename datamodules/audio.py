"""`AudioDataModule`: spoken-word classification from recordings, as log-mel spectrograms.

Clips are decoded once and held in memory as int16 waveforms (N, samples), half the bytes of float16 and
what a 16-bit recording holds, or, when they are too many for memory, streamed as such from prepared shards
(`python -m experiments.prepare SOURCE DIR --kind audio`, datamodules/audio_shards.py). Batches leave the
loader as int16 and become log-mel spectrograms on the
device in `on_after_batch_transfer` (one batched STFT), normalised per mel band with the training clips'
statistics and, in training, masked SpecAugment-style. A model sees each clip as a one-channel image
(1, n_mels, frames), so every image core (the CNN, the ViT: patches of the spectrogram, as the Audio
Spectrogram Transformer) trains on it unchanged.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import sys
import warnings
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from datamodules import espeak_commands
from datamodules.audio_files import (
    RUN_OPTIONS,
    Clip,
    Unreadable,
    assign_splits,
    decode_clip,
    find_clips,
    first_rate,
    fit_length,
    read_audio,
    resample,
    to_int16,
    training_classes,
    unreadable,
)
from datamodules.audio_shards import (
    COLUMNS,
    FEATURES,
    KIND,
    SHARD_SETTINGS,
    ShardAudio,
    clip_length,
    collate,
    log_mel_of,
    prepare_audio,
)
from datamodules.batches import batches_done
from datamodules.cache import cache_dir
from datamodules.image_shards import IN_PROGRESS, chunk_sizes
from datamodules.in_memory import InMemoryDataModule
from datamodules.prepared import Manifest, fingerprint, is_prepared, read_manifest
from datamodules.spectrogram import LogMel, spec_augment
from datamodules.streaming import (
    ChunkedOrder,
    StreamingBatches,
    StreamsWhenPrepared,
    available_memory,
    default_workers,
    fits_in_memory,
    memory_note,
    processes_per_machine,
    streaming_reason,
)
from validation import ConfigError, check_range, require

BUILTIN = "espeak_commands"
STATS_CLIPS = 2000  # training clips the normalisation statistics are estimated from (exact below that)
Loading = Literal["auto", "memory", "streaming"]
# Peak memory of the in-memory path per byte of the int16 clips it holds: the list of decoded clips, their stack
# and its shuffled copy (measured: 483 MB of peak growth for 96 MB of clips and 933 MB for 288 MB, 3,000 and
# 9,000 clips of 1 s at 16 kHz: 2.3x at the margin, plus about 260 MB for the statistics).
IN_MEMORY_OVERHEAD = 3


class AudioDataModule(StreamsWhenPrepared, InMemoryDataModule):
    """Labelled recordings -> batches (log-mel spectrograms (B, 1, n_mels, frames), labels (B,)).

    Args:
        source: "espeak_commands" (Speech Commands' ten keywords spoken by espeak-ng voices, generated once;
            test voices never heard in training), a folder of class sub-folders of recordings (WAV, FLAC,
            OGG, MP3), a .csv/.tsv/.jsonl with a path and a label column, or a folder prepared from either by
            `python -m experiments.prepare SOURCE DIR --kind audio` (streamed; its clips, split, classes and
            statistics are the folder's, and the settings that shaped it must be those it was prepared with).
        path_column: the column holding each recording's path, in a table (relative to the table's folder).
        label_column: the column holding the label, in a table.
        group_column: optional column whose values stay within one split (a speaker), in a table.
        sample_rate: the rate clips are used at, in Hz; None: the first recording's. Recordings at another
            rate are an error unless `resample`.
        resample: convert recordings at another rate to `sample_rate` (polyphase filter) instead of refusing.
        clip_seconds: every clip is cut to this length, or padded with silence at its end.
        n_mels: mel bands of the spectrogram.
        window_ms: STFT window (and FFT) length in milliseconds.
        hop_ms: step between frames in milliseconds; a clip has clip_seconds * 1000 / hop_ms frames.
        f_min: lowest frequency of the mel bands, Hz.
        f_max: highest frequency of the mel bands, Hz; None: half the sample rate.
        specaugment: mask random mel bands and frame ranges of training spectrograms (Park et al., 2019).
        freq_masks: mel-band masks per clip, each up to `freq_mask_width` bands wide.
        freq_mask_width: widest mel-band mask.
        time_masks: frame masks per clip, each up to `time_mask_width` frames wide.
        time_mask_width: widest frame mask.
        batch_size: training batch size; evaluation uses batches 4x larger.
        val_fraction: share of the speakers (or files) held out for validation, where the source fixes no split.
        test_fraction: share held out for testing, likewise.
        seed: seed of the split and of the shuffling order.
        skip_unreadable: skip recordings that cannot be decoded, with a warning naming each, instead of
            stopping at the first.
        loading: how the recordings reach training. "memory": decoded once into memory (the fast path for small
            data; the built-in dataset always). "streaming": from prepared shards, read in DataLoader workers,
            each rank its own part, memory flat whatever the size; recordings are prepared on first use into
            the cache. "auto": a prepared folder streams; recordings stream when the in-memory path would need
            more than half of the memory available to each process; the start note says which and why.
        workers: DataLoader worker processes per training process when streaming (default: the CPUs of the
            process shared among the processes of the machine, at most 8).
    """

    model_facts = ("image_shape", "num_classes")
    input_kind = "audio"
    eval_batch_factor = 4  # as InMemoryDataModule's evaluation batches

    def __init__(
        self,
        source: str = BUILTIN,
        path_column: str = "path",
        label_column: str = "label",
        group_column: str | None = None,
        sample_rate: int | None = None,
        resample: bool = False,
        clip_seconds: float = 1.0,
        n_mels: int = 40,
        window_ms: float = 25.0,
        hop_ms: float = 10.0,
        f_min: float = 20.0,
        f_max: float | None = None,
        specaugment: bool = False,
        freq_masks: int = 2,
        freq_mask_width: int = 6,
        time_masks: int = 2,
        time_mask_width: int = 10,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 0,
        skip_unreadable: bool = False,
        loading: Loading = "auto",
        workers: int | None = None,
    ) -> None:
        super().__init__()
        require("soundfile", "speech")  # before anything is read or made
        check_range("batch_size", batch_size, 1)
        check_range("clip_seconds", clip_seconds, 0.0, low_open=True)
        check_range("n_mels", n_mels, 1)
        check_range("window_ms", window_ms, 0.0, low_open=True)
        check_range("hop_ms", hop_ms, 0.0, low_open=True)
        check_range("f_min", f_min, 0.0)
        for name, value in (("freq_masks", freq_masks), ("time_masks", time_masks)):
            check_range(name, value, 0)
        for name, value in (("freq_mask_width", freq_mask_width), ("time_mask_width", time_mask_width)):
            check_range(name, value, 0)
        check_range("val_fraction", val_fraction, 0.0, 0.5, low_open=True)
        check_range("test_fraction", test_fraction, 0.0, 0.5, low_open=True)
        if sample_rate is not None:
            check_range("sample_rate", sample_rate, 1)
        if workers is not None:
            check_range("workers", workers, 0)
        if loading == "streaming" and source == BUILTIN:
            raise ConfigError(f"{BUILTIN} is held in memory; --data.loading streaming takes recordings of yours")
        self.save_hyperparameters(logger=False)  # the tracker gets the whole nested config instead
        self.batch_size = batch_size
        self.clips: list[Clip] | None = None
        self.classes: list[str] = []
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # int16 (N, samples), labels (N,)
        self.mean = self.std = torch.zeros(0)
        self.normalisers: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._rate: int | None = sample_rate
        self._log_mel: LogMel | None = None
        self.streamed: dict[str, ShardAudio] = {}  # split -> its shards, when streaming
        self.manifest: Manifest | None = None  # of the shards, when streaming
        self.restored = False  # from a checkpoint's inference state: the data need not be there
        self.loading_reason = ""

    # What a model must know, available before any audio is decoded (facts the command gives the model).
    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, self.hparams["n_mels"], self.log_mel.frames(self.clip_samples))

    @property
    def num_classes(self) -> int:
        return len(self.class_names())

    @property
    def sample_rate(self) -> int:
        """The rate clips are used at: given, the prepared folder's, or read from the first recording's header."""
        if self.manifest is None and not self.restored and self.prepared_source() is not None:
            self.opened_manifest()  # its rate, refusing another one given
        if self._rate is None:
            clips = self.catalogue()  # the built-in dataset's rate is known
            self._rate = self._rate or first_rate(self.hparams["source"], clips)
        return self._rate

    @property
    def clip_samples(self) -> int:
        return clip_length(self.hparams["clip_seconds"], self.sample_rate)

    def features_settings(self) -> dict[str, Any]:
        """The spectrogram's settings (`audio_shards.FEATURES`' names), as this datamodule's."""
        return {name: self.hparams[name] for name in FEATURES}

    @property
    def log_mel(self) -> LogMel:
        if self._log_mel is None:
            self._log_mel = log_mel_of(self.sample_rate, self.hparams["clip_seconds"], self.features_settings())
        return self._log_mel

    def source_path(self) -> Path:
        if self.hparams["source"] == BUILTIN:
            return espeak_commands.ensure()
        return Path(self.hparams["source"])

    def catalogue(self) -> list[Clip]:
        """Every labelled recording of the source (not yet read), its split where the source fixes one."""
        if self.clips is None:
            hp = self.hparams
            self.clips = find_clips(self.source_path(), hp["path_column"], hp["label_column"], hp["group_column"])
            if self._rate is None and hp["source"] == BUILTIN:
                self._rate = espeak_commands.SAMPLE_RATE
        return self.clips

    def class_names(self) -> list[str]:
        """The labels of the training clips, sorted."""
        if not self.classes:
            if self.shards is not None:
                self.classes = list(self.opened_manifest().state["classes"])
            else:
                clips = self.catalogue()
                self.classes = training_classes(self.hparams["source"], clips, self.assign_splits(clips))
        return self.classes

    def assign_splits(self, clips: list[Clip]) -> list[str]:
        """The source's own split where it has one, else a seeded hash of each clip's group (speaker), among
        train and the splits the source leaves open."""
        hp = self.hparams
        return assign_splits(clips, hp["val_fraction"], hp["test_fraction"], hp["seed"])

    def prepare_data(self) -> None:
        """Generate the built-in dataset (once) and find the recordings and classes, so a missing or
        malformed source is reported before training starts."""
        _ = self.image_shape  # reads the sample rate and checks the spectrogram settings
        self.class_names()

    def setup(self, stage: str | None = None) -> None:
        if self.splits or self.streamed:  # loaded once, whatever the stage
            return
        if self.shards is not None:
            self.open_prepared()
            return
        clips = self.catalogue()
        label_ids = {name: index for index, name in enumerate(self.class_names())}
        assignment = self.assign_splits(clips)
        waveforms: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
        labels: dict[str, list[int]] = {"train": [], "val": [], "test": []}
        for clip, split in zip(clips, assignment, strict=True):
            samples = self.decode(clip)
            if samples is not None:
                waveforms[split].append(samples)
                labels[split].append(label_ids[clip.label])
        for split in ("train", "val", "test"):
            if not waveforms[split]:
                raise ConfigError(
                    f"the {split} split of {self.hparams['source']} has no clips; use more recordings "
                    "or larger fractions"
                )
            stacked = np.stack(waveforms[split])
            # In a fixed random order, not by class: the first validation clips (W&B's sample tables) are mixed.
            order = torch.randperm(len(stacked), generator=torch.Generator().manual_seed(self.hparams["seed"]))
            self.splits[split] = torch.from_numpy(stacked)[order], torch.tensor(labels[split], dtype=torch.long)[order]
        # Per mel band, from (up to STATS_CLIPS of) the training clips.
        train = self.splits["train"][0]
        sample = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.hparams["seed"]))
        features = torch.cat([self.log_mel(self.to_float(chunk)) for chunk in train[sample[:STATS_CLIPS]].split(256)])
        self.mean = features.mean(dim=(0, 2)).view(1, -1, 1)  # (1, n_mels, 1)
        self.std = features.std(dim=(0, 2)).clamp(min=1e-3).view(1, -1, 1)

    def decode(self, clip: Clip) -> np.ndarray | None:
        """The clip's int16 samples at the sample rate, cut or padded to the clip length (None: skipped)."""
        try:
            return decode_clip(clip, self.sample_rate, self.hparams["resample"], self.clip_samples, RUN_OPTIONS)
        except Unreadable as reason:
            if not self.hparams["skip_unreadable"]:
                raise unreadable(clip, reason, RUN_OPTIONS) from None
            warnings.warn(f"skipping unreadable recording {clip.where}: {reason}", stacklevel=2)
            return None

    @staticmethod
    def to_float(waveforms: torch.Tensor) -> torch.Tensor:
        return waveforms.float() / 32768  # int16 -> [-1, 1)

    def inference_state(self) -> dict[str, Any]:
        return {
            "classes": self.classes,
            "sample_rate": self.sample_rate,
            "mean": self.mean.flatten().tolist(),
            "std": self.std.flatten().tolist(),
        }

    def load_inference_state(self, state: dict[str, Any]) -> None:
        self.restored = True
        self.classes = list(state["classes"])
        self._rate = int(state["sample_rate"])
        self.mean = torch.tensor(state["mean"]).view(1, -1, 1)
        self.std = torch.tensor(state["std"]).view(1, -1, 1)

    def encode_inputs(self, items: list[Path]) -> torch.Tensor:
        """Recordings of any sample rate (resampled to the model's) -> normalised log-mels (B, 1, n_mels, frames)."""
        waveforms = []
        for path in items:
            try:
                samples, rate = read_audio(path)
            except Unreadable as reason:
                raise ConfigError(
                    f"{path} cannot be read as audio ({reason}); give a WAV, FLAC, OGG or MP3 file"
                ) from None
            if rate != self.sample_rate:
                samples = resample(samples, rate, self.sample_rate)
            waveforms.append(to_int16(fit_length(samples, self.clip_samples)))
        return self.prepare_batch((torch.from_numpy(np.stack(waveforms)), None), training=False)[0]

    def prepare_batch(self, batch: Any, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """int16 waveforms (B, samples) -> normalised log-mels (B, 1, n_mels, frames), masked while training."""
        waveforms, labels = batch[0], batch[1]  # streamed batches also carry the sample ids
        features = self.features(waveforms)
        hp = self.hparams
        if training and hp["specaugment"]:
            features = spec_augment(
                features, hp["freq_masks"], hp["freq_mask_width"], hp["time_masks"], hp["time_mask_width"]
            )
        return features.unsqueeze(1), labels

    def features(self, waveforms: torch.Tensor) -> torch.Tensor:
        """int16 waveforms (B, samples) -> log-mels (B, n_mels, frames), normalised per mel band."""
        device = waveforms.device
        if device not in self.normalisers:
            self.normalisers[device] = self.mean.to(device), self.std.to(device)
        mean, std = self.normalisers[device]
        return (self.log_mel(self.to_float(waveforms)) - mean) / std

    def examples(self, split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `count` clips of a split as float waveforms (count, samples) in [-1, 1), and their labels:
        what a W&B table plays back."""
        self.setup()
        if self.streamed:  # the split's first clips as stored (a seeded random order, as in memory)
            shards = ShardAudio(self.streamed[split].folder, self.streamed[split].digests)
            samples = [shards[(index, 0)] for index in range(min(count, len(shards)))]
            return self.to_float(torch.stack([s[0] for s in samples])), torch.tensor([s[1] for s in samples])
        waveforms, labels = self.splits[split]
        return self.to_float(waveforms[:count]), labels[:count]

    # Streaming from prepared shards.
    def prepared_source(self) -> Path | None:
        """The source, when it is a prepared folder (or an unfinished prepare's, which `read_manifest` refuses)."""
        source = self.hparams["source"]
        if source == BUILTIN:
            return None
        path = Path(source)
        return path if is_prepared(path) or (path / IN_PROGRESS).is_file() else None

    @cached_property
    def shards(self) -> Path | None:
        """The prepared folder to stream from, or None to hold the clips in memory (see `loading`); recordings
        chosen for streaming are prepared into the cache here, once."""
        hp = self.hparams
        loading, source = hp["loading"], hp["source"]
        if source == BUILTIN:
            self.loading_reason = "in memory (built-in)"
            return None
        prepared = self.prepared_source()
        if prepared is not None:
            if loading == "memory":
                raise ConfigError(f"{prepared} is a prepared dataset, which streams; leave out --data.loading")
            self.loading_reason = "streaming: a prepared folder"
            return prepared
        path = Path(source)
        if loading == "memory" or not path.exists():  # a missing source: the in-memory reader says so
            self.loading_reason = "in memory"
            return None
        needed = len(self.catalogue()) * self.clip_samples * 2 * IN_MEMORY_OVERHEAD
        per_process = available_memory() // processes_per_machine()
        if loading == "auto" and fits_in_memory(needed, per_process):
            self.loading_reason = f"in memory: {memory_note(needed, per_process)}"
            return None
        self.loading_reason = streaming_reason(loading, needed, per_process)
        return self.prepared_in_cache(path)

    def prepare_settings(self) -> dict[str, Any]:
        """The arguments of `prepare_audio` that shape the shards, as this datamodule's."""
        names = (*SHARD_SETTINGS, "sample_rate", "skip_unreadable")
        return {name: self.hparams[name] for name in names} | {"features": self.features_settings()}

    def prepared_in_cache(self, path: Path) -> Path:
        """The cache's prepared copy of the recordings at `path` for these settings, made on first use (one
        process prepares while the others of the machine wait for it)."""
        settings = self.prepare_settings()
        key = json.dumps([str(path.resolve()), fingerprint(path), settings], sort_keys=True)
        target = cache_dir() / "prepared" / f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not is_prepared(target):
                print(f"preparing {path} as shards in {target} (once)", file=sys.stderr, flush=True)
                prepare_audio(path, target, **settings, workers=default_workers(None), options=RUN_OPTIONS)
        return target

    def opened_manifest(self) -> Manifest:
        """The prepared folder's manifest, refusing settings other than those that shaped its shards (the run's
        config would then say what it did not train on)."""
        if self.manifest is None:
            folder = self.prepared_source() or self.shards
            assert folder is not None
            manifest = read_manifest(folder, KIND)
            hp, prepared = self.hparams, manifest.settings
            names = [name for name in SHARD_SETTINGS if prepared["table"] or name not in COLUMNS]
            differ = [name for name in names if prepared[name] != hp[name]]
            differ += ["sample_rate"] if hp["sample_rate"] not in (None, prepared["sample_rate"]) else []
            if differ:
                was = ", ".join(f"{name} {prepared[name]}" for name in differ)
                given = ", ".join(f"--data.{name} {hp[name]}" for name in differ)
                raise ConfigError(
                    f"{folder} was prepared with {was}, not {given}: give its settings, or prepare the recordings "
                    "again with yours"
                )
            self.manifest = manifest
            self._rate = int(manifest.state["sample_rate"])
        return self.manifest

    def open_prepared(self) -> None:
        """The prepared folder's classes and splits, and the log-mel statistics: the manifest's, exact, when they
        are of this spectrogram, else estimated from (up to STATS_CLIPS of) the training clips, as in memory."""
        assert self.shards is not None
        manifest = self.opened_manifest()
        self.classes = list(manifest.state["classes"])
        for split in ("train", "val", "test"):
            prefix = f"{split}/"
            digests = {
                name[len(prefix) :]: value for name, value in manifest.digests.items() if name.startswith(prefix)
            }
            self.streamed[split] = ShardAudio(self.shards / split, digests)
        if self.exact_statistics():
            self.mean = torch.tensor(manifest.state["mean"]).view(1, -1, 1)
            self.std = torch.tensor(manifest.state["std"]).view(1, -1, 1)
            return
        train = ShardAudio(self.streamed["train"].folder, self.streamed["train"].digests)  # read here, not forked
        generator = torch.Generator().manual_seed(self.hparams["seed"])
        chosen = torch.randperm(len(train), generator=generator)[:STATS_CLIPS].sort().values.tolist()
        features = []
        for start in range(0, len(chosen), 256):
            waveforms = torch.stack([train[(index, 0)][0] for index in chosen[start : start + 256]])
            features.append(self.log_mel(self.to_float(waveforms)))
        stacked = torch.cat(features)
        self.mean = stacked.mean(dim=(0, 2)).view(1, -1, 1)  # (1, n_mels, 1)
        self.std = stacked.std(dim=(0, 2)).clamp(min=1e-3).view(1, -1, 1)

    def exact_statistics(self) -> bool:
        """Whether the prepared folder's statistics are of this datamodule's spectrogram."""
        return self.opened_manifest().settings["features"] == self.features_settings()

    def prepared_dataset(self) -> Path | None:
        return self.shards

    def loading_note(self) -> str:
        shards = self.shards
        if shards is None:
            return f"data: {self.loading_reason}"
        note = f"data: {self.loading_reason}; from {shards}, {self.workers()} DataLoader worker(s) per process"
        if not self.exact_statistics():
            note += f"; log-mel statistics estimated from up to {STATS_CLIPS:,} training clips (the folder's are of "
            note += "other spectrogram settings)"
        return note

    def workers(self) -> int:
        given = self.hparams["workers"]
        return default_workers(self.trainer) if given is None else given

    def streaming_loader(self, split: str, batch_size: int, training: bool) -> StreamingBatches:
        """Batches of the split's shards (int16 waveforms (B, samples), labels (B,), sample ids (B,)), fetched by
        DataLoader workers; they become log-mels on the device, as in memory."""
        self.setup("fit")
        dataset, trainer = self.streamed[split], self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        order = ChunkedOrder(
            chunk_sizes(dataset.folder),
            batch_size,
            shuffle=training,
            equal_batches=training,
            seed=self.hparams["seed"],
            rank=rank,
            world_size=world_size,
        )
        loader = StreamingBatches(dataset, order, collate, self.workers())
        if training:
            loader.progress = batches_done(trainer)  # resumable mid-epoch
        return loader
