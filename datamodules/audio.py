"""`AudioDataModule`: spoken-word classification from recordings, as log-mel spectrograms.

Clips are decoded once and held in memory as int16 waveforms (N, samples), half the bytes of float16 and
what a 16-bit recording holds. Batches leave the loader as int16 and become log-mel spectrograms on the
device in `on_after_batch_transfer` (one batched STFT), normalised per mel band with the training clips'
statistics and, in training, masked SpecAugment-style. A model sees each clip as a one-channel image
(1, n_mels, frames), so every image core (the CNN, the ViT: patches of the spectrogram, as the Audio
Spectrogram Transformer) trains on it unchanged.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datamodules import espeak_commands
from datamodules.audio_files import Clip, Unreadable, find_clips, fit_length, header_rate, read_audio, resample
from datamodules.in_memory import InMemoryDataModule
from datamodules.spectrogram import LogMel, spec_augment
from datamodules.text import group_split
from validation import ConfigError, check_range

BUILTIN = "espeak_commands"
STATS_CLIPS = 2000  # training clips the normalisation statistics are estimated from (exact below that)


class AudioDataModule(InMemoryDataModule):
    """Labelled recordings -> batches (log-mel spectrograms (B, 1, n_mels, frames), labels (B,)).

    Args:
        source: "espeak_commands" (Speech Commands' ten keywords spoken by espeak-ng voices, generated once;
            test voices never heard in training), a folder of class sub-folders of recordings (WAV, FLAC,
            OGG, MP3), or a .csv/.tsv/.jsonl with a path and a label column.
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
    """

    model_facts = ("image_shape", "num_classes")
    input_kind = "audio"

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
    ) -> None:
        super().__init__()
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
        self.save_hyperparameters(logger=False)  # the tracker gets the whole nested config instead
        self.batch_size = batch_size
        self.clips: list[Clip] | None = None
        self.classes: list[str] = []
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # int16 (N, samples), labels (N,)
        self.mean = self.std = torch.zeros(0)
        self.normalisers: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._rate: int | None = sample_rate
        self._log_mel: LogMel | None = None

    # What a model must know, available before any audio is decoded (facts the command gives the model).
    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, self.hparams["n_mels"], self.log_mel.frames(self.clip_samples))

    @property
    def num_classes(self) -> int:
        return len(self.class_names())

    @property
    def sample_rate(self) -> int:
        """The rate clips are used at: given, or read from the first recording's header."""
        if self._rate is None:
            rates = (header_rate(clip.path) for clip in self.catalogue())
            self._rate = next((rate for rate in rates if rate), None)
            if self._rate is None:
                raise ConfigError(f"no recording in {self.hparams['source']} can be read; check the files")
        return self._rate

    @property
    def clip_samples(self) -> int:
        return max(1, round(self.hparams["clip_seconds"] * self.sample_rate))

    @property
    def log_mel(self) -> LogMel:
        if self._log_mel is None:
            hp, rate = self.hparams, self.sample_rate
            n_fft = max(2, round(hp["window_ms"] * rate / 1000))
            hop = max(1, round(hp["hop_ms"] * rate / 1000))
            f_max = rate / 2 if hp["f_max"] is None else hp["f_max"]
            if not hp["f_min"] < f_max <= rate / 2:
                raise ConfigError(
                    f"the mel bands need f_min < f_max <= {rate / 2:g} Hz (half the sample rate), "
                    f"got f_min {hp['f_min']:g} and f_max {f_max:g}"
                )
            if self.clip_samples // hop < 1:
                raise ConfigError(f"clip_seconds {hp['clip_seconds']} is shorter than one hop of {hp['hop_ms']} ms")
            self._log_mel = LogMel(rate, n_fft, hop, hp["n_mels"], hp["f_min"], f_max)
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
            clips = self.catalogue()
            assignment = self.assign_splits(clips)
            self.classes = sorted(
                {clip.label for clip, split in zip(clips, assignment, strict=True) if split == "train"}
            )
            if len(self.classes) < 2:
                raise ConfigError(
                    f"the training clips of {self.hparams['source']} have {len(self.classes)} label(s); need 2 or more"
                )
            unknown = sorted({clip.label for clip in clips} - set(self.classes))
            if unknown:
                raise ConfigError(
                    f"labels {', '.join(unknown)} occur only outside the training split; merge or drop them"
                )
        return self.classes

    def assign_splits(self, clips: list[Clip]) -> list[str]:
        """The source's own split where it has one, else a seeded hash of each clip's group (speaker), among
        train and the splits the source leaves open."""
        hp = self.hparams
        fixed = {clip.split for clip in clips}
        val_fraction = 0.0 if "val" in fixed else hp["val_fraction"]
        test_fraction = 0.0 if "test" in fixed else hp["test_fraction"]
        drawn = group_split([clip.group for clip in clips], val_fraction, test_fraction, hp["seed"])
        return [clip.split or split for clip, split in zip(clips, drawn, strict=True)]

    def prepare_data(self) -> None:
        """Generate the built-in dataset (once) and find the recordings and classes, so a missing or
        malformed source is reported before training starts."""
        _ = self.image_shape  # reads the sample rate and checks the spectrogram settings
        self.class_names()

    def setup(self, stage: str | None = None) -> None:
        if self.splits:  # loaded once, whatever the stage
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
            stacked = to_int16(np.stack(waveforms[split]))
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
        """The clip's samples at the sample rate, cut or padded to the clip length (None: skipped)."""
        try:
            samples, rate = read_audio(clip.path)
        except Unreadable as reason:
            if not self.hparams["skip_unreadable"]:
                raise ConfigError(
                    f"{clip.where} cannot be read as audio ({reason}); fix or remove it, "
                    "or skip such files with --data.skip_unreadable true"
                ) from None
            warnings.warn(f"skipping unreadable recording {clip.where}: {reason}", stacklevel=2)
            return None
        if rate != self.sample_rate:
            if not self.hparams["resample"]:
                raise ConfigError(
                    f"{clip.where} is sampled at {rate} Hz, the others at {self.sample_rate} Hz; "
                    "convert them all with --data.resample true (to --data.sample_rate, else the first file's rate)"
                )
            samples = resample(samples, rate, self.sample_rate)
        return fit_length(samples, self.clip_samples)

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
        waveforms, labels = batch
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
        waveforms, labels = self.splits[split]
        return self.to_float(waveforms[:count]), labels[:count]


def to_int16(samples: np.ndarray) -> np.ndarray:
    """float samples in [-1, 1] -> int16, exact for 16-bit recordings (v * 32768 is the integer they held)."""
    return np.round(np.clip(samples, -1.0, 32767 / 32768) * 32768).astype(np.int16)
