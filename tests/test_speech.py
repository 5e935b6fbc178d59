"""Speech: log-mel spectrograms, SpecAugment, the user's recordings (class folders, CSV) and their mistakes,
the built-in espeak-ng keywords, and the speech presets end to end with their W&B audio table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from datamodules import espeak_commands
from datamodules.audio import AudioDataModule
from datamodules.spectrogram import LogMel, dct_matrix, mel_centres, mel_filterbank, mfcc, spec_augment
from experiments.run import main
from tests.helpers import logged_tables, run_cli, wandb_records
from validation import ConfigError

RATE = 16000
WORDS = {"low": 300.0, "mid": 1200.0, "high": 4000.0}  # a "class" per tone: what a model must tell apart
SPLIT = {"val_fraction": 0.25, "test_fraction": 0.25}  # a few speakers: every split gets some
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs Debian's espeak-ng (the set-up)")


def tone(hz: float, seconds: float = 1.0, rate: int = RATE, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * hz * np.arange(round(seconds * rate)) / rate)).astype(np.float32)


def clip_of(word: str, index: int, rate: int = RATE) -> np.ndarray:
    """A tone of the word's pitch, varied a little per index, with some noise: 0.5-1 s long."""
    rng = np.random.default_rng(index)
    samples = tone(WORDS[word] * (1 + 0.03 * rng.standard_normal()), rng.uniform(0.5, 1.0), rate)
    return np.clip(samples + 0.02 * rng.standard_normal(len(samples)), -1, 1).astype(np.float32)


def write_speech_commands(root: Path, speakers: int = 12, formats: tuple[str, ...] = ("wav", "flac")) -> Path:
    """Speech Commands' layout: root/<word>/<speaker>_nohash_<n>.<format>, two takes per speaker and word,
    the formats taking turns."""
    for word in WORDS:
        (root / word).mkdir(parents=True, exist_ok=True)
        for speaker in range(speakers):
            for take in range(2):
                kind = formats[(speaker + take) % len(formats)]
                path = root / word / f"spk{speaker:02d}_nohash_{take}.{kind}"
                soundfile.write(path, clip_of(word, 10 * speaker + take), RATE, subtype="PCM_16")
    return root


def write_table(root: Path, header: str = "path,label,speaker") -> Path:
    """A CSV of (path, label, speaker) beside a folder of its clips (relative paths)."""
    (root / "clips").mkdir(parents=True, exist_ok=True)
    lines = [header]
    for word in WORDS:
        for speaker in range(8):
            name = f"clips/{word}-{speaker}.wav"
            soundfile.write(root / name, clip_of(word, speaker), RATE, subtype="PCM_16")
            lines.append(f"{name},{word},s{speaker}")
    (root / "clips.csv").write_text("\n".join(lines) + "\n")
    return root / "clips.csv"


# Spectrograms


def test_mel_bands_are_triangles_that_sum_to_one_between_their_centres() -> None:
    bank = mel_filterbank(RATE, 512, 40, 20.0, 8000.0)  # (40, 257)
    assert bank.shape == (40, 257) and (bank >= 0).all() and bank.max() <= 1
    bins = torch.linspace(0, RATE / 2, 257)
    centres = mel_centres(40, 20.0, 8000.0)[1:-1].float()
    inside = (bins >= centres[0]) & (bins <= centres[-1])
    torch.testing.assert_close(bank[:, inside].sum(0), torch.ones(int(inside.sum())), atol=1e-5, rtol=0)
    # Each band peaks within a bin of its centre (a sampled, lopsided triangle); bands widen with frequency.
    peaks = bins[bank.argmax(1)]
    assert (abs(peaks - centres) < RATE / 512).all()
    widths = (bank > 0).sum(1)
    assert widths[-1] > 5 * widths[5]


@pytest.mark.parametrize("hz", [250.0, 1000.0, 3000.0, 6500.0])
def test_a_tone_lands_in_the_mel_band_centred_nearest_it(hz: float) -> None:
    log_mel = LogMel(RATE, n_fft=400, hop_length=160, n_mels=40, f_min=20.0, f_max=8000.0)
    features = log_mel(torch.from_numpy(tone(hz))[None])  # (1, 40, frames)
    assert features.shape == (1, 40, RATE // 160)
    centres = mel_centres(40, 20.0, 8000.0)[1:-1]
    assert int(features[0].mean(1).argmax()) == int((centres - hz).abs().argmin())
    # Louder by 20 dB: log power up by ln(100) in every band the tone fills (the 1e-6 floor aside).
    louder = log_mel(torch.from_numpy(tone(hz, amplitude=0.05))[None])
    band = int(features[0].mean(1).argmax())
    assert float((features - louder)[0, band].mean()) == pytest.approx(np.log(100), rel=1e-3)


def test_log_mel_of_a_batch_is_that_of_each_clip_and_of_silence_finite() -> None:
    log_mel = LogMel(RATE, 400, 160, 40, 20.0, 8000.0)
    clips = torch.stack([torch.from_numpy(clip_of(w, i)[: RATE // 2]) for i, w in enumerate(WORDS)])
    batched = log_mel(clips)
    for clip, features in zip(clips, batched, strict=True):
        torch.testing.assert_close(log_mel(clip[None])[0], features, atol=1e-4, rtol=1e-4)
    silence = log_mel(torch.zeros(1, RATE))
    assert torch.isfinite(silence).all() and float(silence.max()) == pytest.approx(np.log(1e-6))


def test_mfccs_are_an_orthonormal_transform_of_the_log_mels() -> None:
    basis = dct_matrix(40, 40)
    torch.testing.assert_close(basis @ basis.T, torch.eye(40), atol=1e-5, rtol=0)
    flat = torch.full((1, 40, 3), 2.0)  # a flat spectrum has only the 0th coefficient, 2 * sqrt(40)
    coefficients = mfcc(flat, 13)
    assert coefficients.shape == (1, 13, 3)
    torch.testing.assert_close(coefficients[0, 0], torch.full((3,), 2 * 40**0.5))
    assert coefficients[0, 1:].abs().max() < 1e-4


def test_spec_augment_masks_whole_bands_and_frame_ranges_within_their_widths() -> None:
    torch.manual_seed(0)
    features = torch.randn(256, 40, 100) + 5.0  # nothing is 0 until masked
    masked = spec_augment(features, freq_masks=2, freq_width=6, time_masks=2, time_width=10)
    zero = masked == 0
    assert torch.equal(masked[~zero], features[~zero])  # only masking, nothing else changes
    bands = zero.all(2)  # (B, 40) mel bands masked in every frame
    frames = zero.all(1)  # (B, 100) frames masked in every band
    assert (zero == (bands[:, :, None] | frames[:, None, :])).all()  # every zero is in a masked band or frame
    assert bands.sum(1).max() <= 12 and frames.sum(1).max() <= 20
    assert bands.any(1).float().mean() > 0.8 and frames.any(1).float().mean() > 0.8
    assert len({tuple(row.nonzero().flatten().tolist()) for row in bands}) > 50  # drawn per clip
    assert torch.equal(spec_augment(features, 0, 6, 3, 0), features)  # no masks, or masks of width 0


# The user's recordings


def test_class_folders_of_wav_and_flac_load_split_by_speaker(tmp_path: Path) -> None:
    root = write_speech_commands(tmp_path / "commands", speakers=20)
    data = AudioDataModule(source=str(root), val_fraction=0.2, test_fraction=0.2, batch_size=8)
    assert data.facts() == {"image_shape": (1, 40, 100), "num_classes": 3}
    data.setup()
    assert data.classes == ["high", "low", "mid"] and data.sample_rate == RATE
    sizes = {split: len(labels) for split, (_, labels) in data.splits.items()}
    assert sum(sizes.values()) == 3 * 20 * 2 and min(sizes.values()) > 0
    # Speakers never cross splits: each speaker's 6 clips (3 words, 2 takes) are in one split.
    splits_of: dict[str, set[str]] = {}
    for clip, split in zip(data.catalogue(), data.assign_splits(data.catalogue()), strict=True):
        assert clip.group == clip.path.name.split("_nohash_")[0]
        splits_of.setdefault(clip.group, set()).add(split)
    assert len(splits_of) == 20 and all(len(splits) == 1 for splits in splits_of.values())
    # Every test file comes back exactly (16 bits), padded with silence to 1 s, with its label; in a mixed order.
    assigned = data.assign_splits(data.catalogue())
    test_clips = [clip for clip, split in zip(data.catalogue(), assigned, strict=True) if split == "test"]
    waveforms, labels = data.splits["test"]
    assert len(test_clips) == len(labels) and {c.path.suffix for c in test_clips} == {".wav", ".flac"}
    for clip in test_clips:
        samples = torch.from_numpy(soundfile.read(clip.path, dtype="int16")[0])
        (row,) = [i for i, w in enumerate(waveforms) if torch.equal(w[: len(samples)], samples)]
        assert (waveforms[row, len(samples) :] == 0).all() and data.classes[labels[row]] == clip.label
    assert len(set(labels[:6].tolist())) > 1  # not sorted by class


def test_batches_become_normalised_log_mels_on_the_device_and_only_training_is_masked(tmp_path: Path) -> None:
    root = write_speech_commands(tmp_path / "commands")
    data = AudioDataModule(source=str(root), **SPLIT, specaugment=True, freq_masks=2, time_masks=2, batch_size=16)
    data.setup()
    waveforms, labels = next(iter(data.train_dataloader()))
    assert waveforms.dtype == torch.int16 and waveforms.shape == (16, RATE)  # what crosses to the device
    features, same = data.prepare_batch((waveforms, labels), training=False)
    assert features.shape == (16, 1, 40, 100) and features.dtype == torch.float32 and same is labels
    train_features = data.features(torch.cat([w for w, _ in [data.splits["train"]]]))
    assert train_features.mean(dim=(0, 2)).abs().max() < 1e-3  # normalised per mel band on the training clips
    assert (train_features.std(dim=(0, 2)) - 1).abs().max() < 1e-2
    masked, _ = data.prepare_batch((waveforms, labels), training=True)
    assert (masked == 0).float().mean() > 0.05 and not (features == 0).any()


def test_the_tone_classes_are_told_apart_by_their_mel_band(tmp_path: Path) -> None:
    """Each class's clips peak in the band of its own tone: the label reaches the batch with its clip."""
    root = write_speech_commands(tmp_path / "commands")
    data = AudioDataModule(source=str(root), **SPLIT, batch_size=64)
    data.setup()
    waveforms, labels = data.splits["train"]
    peak_band = data.log_mel(data.to_float(waveforms)).mean(2).argmax(1)  # (N,) loudest band, unnormalised
    centres = mel_centres(40, 20.0, 8000.0)[1:-1]
    for label, word in enumerate(data.classes):
        expected = int((centres - WORDS[word]).abs().argmin())
        assert (peak_band[labels == label] - expected).abs().max() <= 1, word


def test_the_split_layout_and_speech_commands_lists_fix_the_splits(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    write_speech_commands(layout / "train", speakers=4)
    write_speech_commands(layout / "test", speakers=2)
    data = AudioDataModule(source=str(layout), val_fraction=0.25)
    data.setup()
    assert len(data.splits["test"][1]) == 3 * 2 * 2  # exactly test/, and val drawn from train/ only
    assert len(data.splits["train"][1]) + len(data.splits["val"][1]) == 3 * 4 * 2

    listed = write_speech_commands(tmp_path / "listed", speakers=5)
    (listed / "_background_noise_").mkdir()  # Speech Commands' noise folder is no class
    soundfile.write(listed / "_background_noise_" / "hum.wav", tone(50.0), RATE)
    (listed / "validation_list.txt").write_text("low/spk00_nohash_0.wav\nmid/spk01_nohash_0.flac\n")
    (listed / "testing_list.txt").write_text("high/spk02_nohash_0.wav\n")
    data = AudioDataModule(source=str(listed))
    data.setup()
    assert data.classes == ["high", "low", "mid"]
    assert {split: len(labels) for split, (_, labels) in data.splits.items()} == {"train": 27, "val": 2, "test": 1}


def test_a_csv_of_paths_and_labels_keeps_each_speaker_in_one_split(tmp_path: Path) -> None:
    table = write_table(tmp_path)
    data = AudioDataModule(source=str(table), group_column="speaker", val_fraction=0.25, test_fraction=0.25)
    assert data.num_classes == 3
    data.setup()
    assigned = dict(zip([c.group for c in data.catalogue()], data.assign_splits(data.catalogue()), strict=True))
    by_speaker: dict[str, set[str]] = {}
    for clip, split in zip(data.catalogue(), data.assign_splits(data.catalogue()), strict=True):
        by_speaker.setdefault(clip.group, set()).add(split)
    assert all(len(splits) == 1 for splits in by_speaker.values()) and len(set(assigned.values())) == 3
    assert sum(len(labels) for _, labels in data.splits.values()) == 24


def test_other_sample_rates_are_refused_or_resampled_keeping_the_pitch(tmp_path: Path) -> None:
    root = write_speech_commands(tmp_path / "commands", formats=("wav",))
    odd = root / "mid" / "spk00_nohash_0.wav"
    soundfile.write(odd, tone(WORDS["mid"], rate=8000), 8000, subtype="PCM_16")
    with pytest.raises(ConfigError, match=r"spk00_nohash_0.wav is sampled at 8000 Hz, the others at 16000 Hz"):
        AudioDataModule(source=str(root), sample_rate=RATE).setup()
    data = AudioDataModule(source=str(root), **SPLIT, sample_rate=RATE, resample=True)
    data.setup()
    waveforms = data.to_float(torch.cat([w for w, _ in data.splits.values()]))
    expected = torch.from_numpy(tone(WORDS["mid"], rate=RATE))  # the 8 kHz tone at 16 kHz: same pitch and length
    middle = slice(1000, RATE - 1000)  # away from the filter's edges
    assert (waveforms[:, middle] - expected[middle]).abs().amax(1).min() < 0.01  # one clip is exactly that
    # All at 8 kHz: the rate is the files' own; the spectrogram keeps 10 ms frames.
    low = tmp_path / "low-rate"
    for word in ("a", "b"):
        (low / word).mkdir(parents=True)
        for i in range(10):
            soundfile.write(low / word / f"{i}.wav", tone(400.0 if word == "a" else 2000.0, rate=8000), 8000)
    assert AudioDataModule(source=str(low), n_mels=20).image_shape == (1, 20, 100)


def test_stereo_is_averaged_and_longer_clips_are_cut(tmp_path: Path) -> None:
    root = write_speech_commands(tmp_path / "commands", formats=("wav",))
    left, right = tone(300.0, 1.5), np.zeros(int(1.5 * RATE), dtype=np.float32)
    soundfile.write(root / "low" / "spk00_nohash_0.wav", np.stack([left, right], 1), RATE, subtype="FLOAT")
    data = AudioDataModule(source=str(root), **SPLIT)
    data.setup()
    held = torch.cat([w for w, _ in data.splits.values()])
    expected = torch.from_numpy(np.round(left[:RATE] / 2 * 32768).astype(np.int16))
    assert any(torch.equal(row, expected) for row in held)


# Mistakes in the user's recordings: one ConfigError naming the file and the fix


def bad_folder(tmp_path: Path, kind: str) -> AudioDataModule:
    root = write_speech_commands(tmp_path / "commands", formats=("wav",))
    broken = root / "mid" / "spk03_nohash_1.wav"
    if kind == "not audio":
        broken.write_text("this is not a recording")
    elif kind == "empty file":
        broken.write_bytes(b"")
    elif kind == "no samples":
        soundfile.write(broken, np.zeros(0, dtype=np.float32), RATE)
    elif kind == "beyond full scale":
        soundfile.write(broken, 3 * tone(300.0), RATE, subtype="FLOAT")
    elif kind == "NaN":
        soundfile.write(broken, np.full(RATE, np.nan, dtype=np.float32), RATE, subtype="FLOAT")
    return AudioDataModule(source=str(root), **SPLIT, sample_rate=RATE)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("not audio", r"commands/mid/spk03_nohash_1.wav cannot be read as audio \(.+\); fix or remove it, or skip"),
        ("empty file", r"spk03_nohash_1.wav cannot be read as audio"),
        ("no samples", r"spk03_nohash_1.wav cannot be read as audio \(it holds no samples\)"),
        ("beyond full scale", r"spk03_nohash_1.wav peaks at 1.5, beyond full scale \(1.0\); normalise it"),
        ("NaN", r"spk03_nohash_1.wav holds NaN or infinite samples"),
    ],
)
def test_a_bad_recording_is_one_error_naming_it(kind: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        bad_folder(tmp_path, kind).setup()


def test_unreadable_recordings_can_be_skipped_with_a_warning_naming_each(tmp_path: Path) -> None:
    data = bad_folder(tmp_path, "not audio")
    data.hparams["skip_unreadable"] = True
    with pytest.warns(UserWarning, match=r"skipping unreadable recording .*spk03_nohash_1.wav"):
        data.setup()
    assert sum(len(labels) for _, labels in data.splits.values()) == 3 * 12 * 2 - 1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t: t / "nowhere", r"nowhere does not exist; give a folder of class sub-folders or a CSV"),
        (lambda t: (t / "empty").mkdir() or t / "empty", r"empty needs one sub-folder of recordings per class"),
        (
            lambda t: [(t / "quiet" / c).mkdir(parents=True) for c in "ab"] and t / "quiet",
            r"no recordings found in .*quiet; supported types: .wav, .flac",
        ),
        (
            lambda t: write_table(t, "file,label,speaker"),
            r"clips.csv has no column path \(found: file, label, speaker\)",
        ),
        (
            lambda t: write_table(t, "path,word,speaker"),
            r"clips.csv has no column label \(found: path, word, speaker\)",
        ),
    ],
    ids=["missing folder", "no class folders", "no recordings", "no path column", "no label column"],
)
def test_a_source_without_recordings_or_columns_is_one_error(make, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        AudioDataModule(source=str(make(tmp_path))).setup()


def test_a_csv_row_naming_a_missing_file_is_an_error_naming_its_line(tmp_path: Path) -> None:
    table = write_table(tmp_path)
    (tmp_path / "clips" / "mid-3.wav").unlink()
    missing = r"clips.csv line 13 \(.*mid-3.wav\) cannot be read as audio \(no such file: moved or deleted\?\)"
    with pytest.raises(ConfigError, match=missing):
        AudioDataModule(source=str(table), sample_rate=RATE).setup()


def test_spectrogram_settings_the_sample_rate_cannot_hold_are_refused(tmp_path: Path) -> None:
    root = write_speech_commands(tmp_path / "commands", speakers=2, formats=("wav",))
    with pytest.raises(ConfigError, match=r"f_min < f_max <= 8000 Hz \(half the sample rate\)"):
        _ = AudioDataModule(source=str(root), f_max=11025.0).image_shape
    with pytest.raises(ConfigError, match="hop_ms must be in"):
        AudioDataModule(source=str(root), hop_ms=0)


# Mistakes through the command: exit 2, one line, nothing written


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda t: str(write_table(t, "file,label,speaker")), "has no column path (found: file, label, speaker)"),
        (lambda t: str(bad_folder(t, "not audio").hparams["source"]), "spk03_nohash_1.wav cannot be read as audio"),
    ],
    ids=["missing column", "unreadable recording"],
)
def test_a_speech_mistake_through_the_command_is_one_line_and_leaves_nothing(make, expected, in_tmp, capsys) -> None:
    source = make(in_tmp / "data")
    code = main(["--config", "cnn_speech_commands", "--data.source", source, "--run.logger", "none"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert not any((in_tmp / "runs").rglob("*.*"))


def test_a_sample_rate_mismatch_through_the_command_is_one_line(in_tmp: Path, capsys) -> None:
    root = write_speech_commands(in_tmp / "data", formats=("wav",))
    soundfile.write(root / "mid" / "spk00_nohash_0.wav", tone(1000.0, rate=8000), 8000)
    code = main(["--config", "cnn_speech_commands", "--data.source", str(root), "--run.logger", "none"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert [line for line in err.splitlines() if line.strip()] == [
        f"error: {root / 'mid' / 'spk00_nohash_0.wav'} is sampled at 8000 Hz, the others at 16000 Hz; convert them "
        "all with --data.resample true (to --data.sample_rate, else the first file's rate)"
    ]
    assert not any((in_tmp / "runs").rglob("*.*"))


# The built-in dataset


def test_without_espeak_ng_the_built_in_dataset_is_one_error_naming_the_install(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FIRSTLIGHT_DATA", str(tmp_path))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match=r"espeak-ng, which is not installed; install it with `apt-get install"):
        AudioDataModule().facts()
    assert not any(tmp_path.iterdir())


@needs_espeak
def test_built_in_speakers_never_cross_splits_and_clips_are_deterministic() -> None:
    binary = espeak_commands.espeak()
    speakers = espeak_commands.speakers(binary)
    variants: dict[str, set[str]] = {}
    for _accent, variant, split in speakers:
        variants.setdefault(variant, set()).add(split)
    assert all(len(splits) == 1 for splits in variants.values())  # a voice is in one split only
    counts = {split: sum(s == {split} for s in variants.values()) for split in ("train", "val", "test")}
    assert counts["test"] >= 8 and counts["val"] >= 8 and counts["train"] > 3 * counts["test"]
    assert len(speakers) == espeak_commands.ACCENTS_PER_VARIANT * len(variants)
    accent, variant, _ = speakers[0]
    clip = espeak_commands.synthesise(binary, accent, variant, "stop")
    assert clip.dtype == np.int16 and clip.shape == (espeak_commands.CLIP_SAMPLES,)
    assert np.abs(clip).max() > 3000  # speech, not silence or noise alone
    assert np.array_equal(clip, espeak_commands.synthesise(binary, accent, variant, "stop"))
    assert not np.array_equal(clip, espeak_commands.synthesise(binary, accent, variant, "go"))


@needs_espeak
def test_the_built_in_dataset_is_generated_once_verified_and_regenerated_when_damaged(tmp_path, monkeypatch) -> None:
    """A small version (3 variants, 2 words), generated into an empty cache as on a fresh clone."""
    monkeypatch.setenv("FIRSTLIGHT_DATA", str(tmp_path))
    monkeypatch.setattr(espeak_commands, "WORDS", ("yes", "no"))
    every = espeak_commands.speakers
    monkeypatch.setattr(
        espeak_commands, "speakers", lambda binary: [s for s in every(binary) if s[1] in ("m1", "f2", "klatt")]
    )
    root = espeak_commands.ensure(checksums=True)
    manifest = json.loads((root / "manifest.json").read_text())
    assert len(manifest["files"]) == 3 * 4 * 2 and espeak_commands.problems(root, checksums=True) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no scratch folder left
    victim = root / next(iter(manifest["files"]))
    victim.write_bytes(b"changed")
    assert espeak_commands.problems(root, checksums=False) == []  # sizes are not checked on every load...
    assert espeak_commands.problems(root, checksums=True) == [f"{victim} is missing or changed"]  # ...sums are
    espeak_commands.ensure(checksums=True)
    assert espeak_commands.problems(root, checksums=True) == []


# The presets end to end


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["cnn_speech_commands", "transformer_speech_commands"])
def test_a_speech_preset_trains_on_the_users_folder_and_logs_clips_with_their_predicted_words(
    preset: str, tmp_path: Path
) -> None:
    root = write_speech_commands(tmp_path / "commands", speakers=10)
    result = run_cli(
        "--config", preset,
        "--data.source", str(root),
        "--trainer.max_epochs", "15",
        "--data.batch_size", "8",
        "--data.val_fraction", "0.3",
        "--data.test_fraction", "0.3",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / preset).iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test/acc"] > 0.6  # three tones after 45 steps; chance is 1/3
    (table, *_) = reversed(logged_tables(run_dir, "val/audio_samples"))  # the last, the final model's
    assert table["columns"] == ["audio", "true", "predicted", "confidence"]
    assert {row[1] for row in table["data"]} <= set(WORDS) and {row[2] for row in table["data"]} <= set(WORDS)
    assert len({row[1] for row in table["data"]}) > 1  # the clips of several words
    # Offline W&B keeps no media in tables: the clips are logged beside it, captioned, as playable files.
    history = [r["history"]["item"] for r in wandb_records(run_dir) if r["type"] == "history"]
    (clips, *_) = reversed([item for item in history if "val/sample_audio.captions" in item])
    assert clips["val/sample_audio.captions"] == [
        f"true: {true}, predicted: {predicted} ({confidence:.2f})" for _, true, predicted, confidence in table["data"]
    ]
    assert clips["val/sample_audio.sampleRates"] == [RATE] * len(table["data"])
    (files,) = (run_dir / "wandb").glob("offline-run-*/files")
    for entry in clips["val/sample_audio.audio"]:
        samples, rate = soundfile.read(files / entry["path"])
        assert rate == RATE and len(samples) == RATE


@needs_espeak
def test_the_built_in_keywords_are_the_words_their_labels_say() -> None:
    """Logistic regression on each clip's averaged MFCCs, fitted on the preset's training voices, names the
    words of voices it never heard far above chance: clips under the wrong label would pull it to chance. (How
    well the presets' networks learn them, above 85% for the CNN: `make quality`.)"""
    from benchmarks.baselines import references
    from benchmarks.precision import build_preset

    _, data = build_preset("cnn_speech_commands")
    chance, logistic = (value for _, _, value, _ in references(data))
    assert chance < 0.2 and logistic > 0.5  # 10 words: 0.10 and 0.71 here
