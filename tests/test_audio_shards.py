"""Recordings as prepared shards: the clips, labels and statistics of the in-memory path; batches across ranks
and resumed; prepare resumable, checked, refusing bad input in one line; the datamodule's choice of path; the
command; a run that streams and a checkpoint that predicts without the shards."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import soundfile
import torch

import datamodules.audio_shards as audio_shards
from datamodules.audio import AudioDataModule
from datamodules.audio_shards import prepare_audio
from datamodules.image_shards import chunk_sizes
from datamodules.prepared import MANIFEST, read_manifest
from experiments.prepare import guess_kind
from experiments.prepare import main as prepare_command
from tests.helpers import fresh_env, run_cli, run_module, write_images
from validation import ConfigError

RATE = 16000
TONES = {"low": 300.0, "mid": 1200.0, "high": 4000.0}  # a class per tone
SPLIT: dict[str, Any] = {"val_fraction": 0.25, "test_fraction": 0.25}  # 12 speakers: every split gets some


def clip_of(word: str, index: int, longest: float = 1.2) -> np.ndarray:
    """A tone of the word's pitch with some noise, 0.5 s to `longest` long (clips over 1 s are cut)."""
    rng = np.random.default_rng(index)
    count = round(rng.uniform(0.5, longest) * RATE)
    samples = 0.5 * np.sin(2 * np.pi * TONES[word] * (1 + 0.03 * rng.standard_normal()) * np.arange(count) / RATE)
    return np.clip(samples + 0.02 * rng.standard_normal(count), -1, 1).astype(np.float32)


def write_commands(root: Path, speakers: int = 12, takes: int = 2, longest: float = 1.2) -> Path:
    """Speech Commands' layout, root/<word>/<speaker>_nohash_<take>.{wav,flac}; one clip in stereo."""
    for word in TONES:
        (root / word).mkdir(parents=True, exist_ok=True)
        for speaker in range(speakers):
            for take in range(takes):
                samples = clip_of(word, 10 * speaker + take, longest)
                kind = "wav" if (speaker + take) % 2 else "flac"
                soundfile.write(root / word / f"spk{speaker:02d}_nohash_{take}.{kind}", samples, RATE, subtype="PCM_16")
    stereo = np.stack([clip_of("low", 999), np.zeros(len(clip_of("low", 999)), np.float32)], 1)
    soundfile.write(root / "low" / "spk00_nohash_0.flac", stereo, RATE, subtype="PCM_16")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_commands(tmp_path_factory.mktemp("audio") / "commands")


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CSV of (file, word, speaker) beside a folder of its clips (relative paths)."""
    root = tmp_path_factory.mktemp("table")
    (root / "clips").mkdir()
    lines = ["file,word,speaker"]
    for word in TONES:
        for speaker in range(12):
            name = f"clips/{word}-{speaker}.wav"
            soundfile.write(root / name, clip_of(word, speaker), RATE, subtype="PCM_16")
            lines.append(f"{name},{word},s{speaker // 2}")
    (root / "clips.csv").write_text("\n".join(lines) + "\n")
    return root / "clips.csv"


TABLE: dict[str, Any] = {"path_column": "file", "label_column": "word", "group_column": "speaker"}


@pytest.fixture(scope="module")
def prepared(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("prepared") / "commands"
    prepare_audio(folder, output, **SPLIT, workers=1, progress=False, part_clips=8)
    return output


def streamed(folder: Path, **options: Any) -> AudioDataModule:
    return AudioDataModule(source=str(folder), **{**SPLIT, "workers": 0, **options})


def in_order(dataset: Any) -> list[tuple[torch.Tensor, int, int]]:
    return [dataset[(index, 0)] for index in range(len(dataset))]


@pytest.mark.parametrize(("source", "workers"), [("folder", 1), ("table", 2)])
def test_prepared_splits_hold_the_in_memory_paths_clips_labels_and_statistics(
    source: str, workers: int, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    path = request.getfixturevalue(source)
    columns = TABLE if source == "table" else {}
    manifest = prepare_audio(path, tmp_path / "out", **SPLIT, **columns, workers=workers, progress=False, part_clips=8)
    in_memory = AudioDataModule(source=str(path), **SPLIT, **columns, loading="memory")
    in_memory.setup()
    from_shards = streamed(tmp_path / "out", **columns)
    from_shards.setup()
    assert from_shards.facts() == in_memory.facts() == {"image_shape": (1, 40, 100), "num_classes": 3}
    assert manifest.splits == {split: len(labels) for split, (_, labels) in in_memory.splits.items()}
    assert manifest.state["classes"] == in_memory.classes == ["high", "low", "mid"]
    assert manifest.state["sample_rate"] == from_shards.sample_rate == RATE
    for split, (waveforms, labels) in in_memory.splits.items():
        samples = in_order(from_shards.streamed[split])  # in the order memory holds them
        assert torch.equal(torch.stack([waveform for waveform, _, _ in samples]), waveforms), split
        assert [label for _, label, _ in samples] == labels.tolist()
        assert [index for _, _, index in samples] == list(range(len(labels)))
    # Exact over every training frame, merged from the workers' sums: as memory computes them.
    torch.testing.assert_close(from_shards.mean, in_memory.mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(from_shards.std, in_memory.std, atol=1e-5, rtol=0)
    assert len(chunk_sizes(tmp_path / "out" / "train")) > 2  # a chunk per part of 8 clips


def test_streamed_batches_cross_as_int16_and_become_the_in_memory_log_mels(folder: Path, prepared: Path) -> None:
    data = streamed(prepared, batch_size=2, specaugment=True)
    in_memory = AudioDataModule(source=str(folder), **SPLIT, batch_size=2, loading="memory")
    in_memory.setup()
    waveforms, labels, ids = next(iter(data.val_dataloader()))  # evaluation batches: 4x the training batch
    assert waveforms.dtype == torch.int16 and waveforms.shape == (8, RATE) and ids.tolist() == list(range(8))
    expected_waveforms, expected_labels = next(iter(in_memory.val_dataloader()))
    assert torch.equal(waveforms, expected_waveforms) and torch.equal(labels, expected_labels)
    features, same = data.prepare_batch((waveforms, labels, ids), training=False)
    assert features.shape == (8, 1, 40, 100) and same is labels
    torch.testing.assert_close(features, in_memory.prepare_batch((waveforms, labels), training=False)[0])
    masked, _ = data.prepare_batch((waveforms, labels, ids), training=True)  # SpecAugment, on the device
    assert (masked == 0).float().mean() > 0.02 and not (features == 0).any()
    played, played_labels = data.examples("val", 3)  # what the W&B audio table plays
    assert torch.equal(played, in_memory.examples("val", 3)[0]) and torch.equal(played_labels, labels[:3])


def test_two_ranks_see_every_training_clip_once_in_equal_batch_counts(prepared: Path) -> None:
    total = read_manifest(prepared, "audio").splits["train"]
    for epoch in (0, 1):
        seen, counts = [], []
        for rank in (0, 1):
            data = streamed(prepared, batch_size=5)
            data.trainer = SimpleNamespace(global_rank=rank, world_size=2)  # what the loader asks of a trainer
            loader = data.train_dataloader()
            loader.sampler.set_epoch(epoch)
            batches = list(loader)
            counts.append(len(batches))
            seen += torch.cat([ids for _, _, ids in batches]).tolist()
        assert sorted(seen) == list(range(total))  # every clip once, none dropped, none repeated
        assert len(set(counts)) == 1  # DDP needs every rank to take the same number of steps


def test_the_training_loader_with_a_worker_resumes_mid_epoch(prepared: Path) -> None:
    loader = streamed(prepared, batch_size=8, workers=1).train_dataloader()
    loader.sampler.set_epoch(2)
    batches = list(loader)
    loader.progress = lambda: 2
    resumed = streamed(prepared, batch_size=8).train_dataloader()
    resumed.load_state_dict(loader.state_dict())
    resumed.sampler.set_epoch(2)
    rest = list(resumed)
    assert len(rest) == len(batches) - 2 > 0
    for mine, theirs in zip(rest, batches[2:], strict=True):
        assert all(torch.equal(a, b) for a, b in zip(mine, theirs, strict=True))


def test_a_stopped_prepare_goes_on_and_writes_the_same_bytes(
    folder: Path, prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "again"
    real_write = audio_shards.write_part
    calls = []

    def failing(task: tuple) -> dict:
        calls.append(task[0])
        if len(calls) == 3:
            raise RuntimeError("a worker failed")  # the whole prepare stops
        return real_write(task)

    with monkeypatch.context() as patched:
        patched.setattr(audio_shards, "write_part", failing)
        with pytest.raises(RuntimeError, match="a worker failed"):
            prepare_audio(folder, output, **SPLIT, workers=1, progress=False, part_clips=8)
    with pytest.raises(ConfigError, match="its prepare did not finish"):
        read_manifest(output, "audio")
    assert sorted(path.name for path in (output / "train" / "parts").iterdir()) == ["000000", "000001"]
    prepare_audio(folder, output, **SPLIT, workers=2, progress=False, part_clips=8)
    names = sorted(str(path.relative_to(prepared)) for path in prepared.rglob("*") if path.is_file())
    assert names == sorted(str(path.relative_to(output)) for path in output.rglob("*") if path.is_file())
    for name in names:  # the manifest too: the same statistics, whichever process summed them
        assert (prepared / name).read_bytes() == (output / name).read_bytes(), name


def test_a_shard_damaged_in_place_stops_reading_with_one_line(prepared: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    chunk = sorted((copy / "val").glob("chunk-*.bin"))[0]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the same size, so only its digest tells
    chunk.write_bytes(bytes(data))
    with pytest.raises(ConfigError) as raised:
        list(streamed(copy).val_dataloader())
    assert str(raised.value) == f"shard {chunk} is damaged (not as prepared); restore it, or prepare the dataset again"


def no_audio(root: Path) -> Path:
    for word in ("a", "b"):
        (root / word).mkdir(parents=True)
        (root / word / "notes.txt").write_text("no recording")
    return root


def unreadable_only(root: Path) -> Path:
    for word in ("a", "b"):
        (root / word).mkdir(parents=True)
        for index in range(10):
            (root / word / f"{index}.wav").write_text("not a recording")
    return root


def one_class(root: Path) -> Path:
    (root / "a").mkdir(parents=True)
    soundfile.write(root / "a" / "0.wav", clip_of("low", 0), RATE)
    return root


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root, r"source does not exist; give a folder of class sub-folders of recordings or a CSV"),
        (no_audio, r"no recordings found in .*source; supported types: .wav, .flac"),
        (unreadable_only, r"no recording in .*source can be read; check the files"),
        (one_class, r"source needs one sub-folder of recordings per class \(at least 2\), found 1"),
    ],
    ids=["missing folder", "no audio", "nothing readable", "one class"],
)
def test_a_bad_source_is_refused_in_one_line_before_anything_is_written(make, message: str, tmp_path: Path) -> None:
    source = make(tmp_path / "source")
    with pytest.raises(ConfigError, match=message) as raised:
        prepare_audio(source, tmp_path / "out", workers=1, progress=False)
    assert "\n" not in str(raised.value) and not (tmp_path / "out").exists()


def test_a_table_without_its_columns_is_refused_before_anything_is_written(table: Path, tmp_path: Path) -> None:
    message = r"clips.csv has no column path, label \(found: file, word, speaker\); name the right columns$"
    with pytest.raises(ConfigError, match=message):
        prepare_audio(table, tmp_path / "out", workers=1, progress=False)
    assert not (tmp_path / "out").exists()


def test_unreadable_recordings_stop_the_prepare_naming_one_or_are_skipped_and_named(
    folder: Path, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    shutil.copytree(folder, source)
    broken = source / "mid" / "spk03_nohash_1.wav"
    broken.write_text("this is not a recording")
    fix = "fix or remove it, or skip such files with --skip_unreadable"
    message = rf"^{re.escape(str(broken))} cannot be read as audio \(.+\); {fix}$"
    with pytest.raises(ConfigError, match=message):
        prepare_audio(source, tmp_path / "stopped", **SPLIT, workers=2, progress=False, part_clips=8)
    with pytest.warns(UserWarning, match=rf"skipping unreadable recording {re.escape(str(broken))}"):
        manifest = prepare_audio(source, tmp_path / "out", **SPLIT, skip_unreadable=True, workers=1, progress=False)
    assert manifest.settings["skipped"] == 1
    in_memory = AudioDataModule(source=str(source), **SPLIT, skip_unreadable=True, loading="memory")
    with pytest.warns(UserWarning, match="skipping unreadable recording"):
        in_memory.setup()
    from_shards = streamed(tmp_path / "out", skip_unreadable=True)
    from_shards.setup()
    for split, (waveforms, _) in in_memory.splits.items():  # the same clips (in another order, from the skip on)
        stored = torch.stack([waveform for waveform, _, _ in in_order(from_shards.streamed[split])])
        assert sorted(map(bytes, stored.numpy())) == sorted(map(bytes, waveforms.numpy())), split


def test_other_settings_and_outputs_that_would_lose_files_are_refused(
    folder: Path, prepared: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"was prepared with clip_seconds 1.0, seed 0, not --data.clip_seconds 0.5, "):
        streamed(prepared, clip_seconds=0.5, seed=1).setup()
    with pytest.raises(ConfigError, match=r"was prepared with sample_rate 16000, not --data.sample_rate 8000"):
        _ = streamed(prepared, sample_rate=8000).image_shape
    with pytest.raises(ConfigError, match=r"is a prepared dataset, which streams; leave out --data.loading"):
        streamed(prepared, loading="memory").setup()
    with pytest.raises(ConfigError, match=r"espeak_commands is held in memory; --data.loading streaming takes"):
        AudioDataModule(loading="streaming")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="exists and is not a prepared dataset"):
        prepare_audio(folder, mine, workers=1, progress=False)
    assert (mine / "notes.txt").read_text() == "keep"
    with pytest.raises(ConfigError, match="is already a prepared dataset; give --overwrite"):
        prepare_audio(folder, prepared, **SPLIT, workers=1, progress=False, part_clips=8)


def test_other_spectrogram_settings_estimate_the_statistics_as_memory_does(folder: Path, prepared: Path) -> None:
    data = streamed(prepared, n_mels=20, hop_ms=20.0)
    data.setup()
    in_memory = AudioDataModule(source=str(folder), **SPLIT, n_mels=20, hop_ms=20.0, loading="memory")
    in_memory.setup()
    assert data.facts() == in_memory.facts() == {"image_shape": (1, 20, 50), "num_classes": 3}
    torch.testing.assert_close(data.mean, in_memory.mean, atol=1e-5, rtol=0)  # fewer than 2,000 clips: all
    torch.testing.assert_close(data.std, in_memory.std, atol=1e-5, rtol=0)
    assert "log-mel statistics estimated from up to 2,000 training clips" in data.loading_note()
    assert "estimated" not in streamed(prepared).loading_note()


def test_recordings_too_big_for_memory_stream_from_shards_prepared_in_the_cache(
    table: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIRSTLIGHT_DATA", str(tmp_path / "cache"))
    in_memory = AudioDataModule(source=str(table), **SPLIT, **TABLE)
    assert in_memory.loading_note().startswith("data: in memory: about 0.0 GB of ")
    monkeypatch.setattr("datamodules.audio.available_memory", lambda: 1_000_000)  # a machine with 1 MB to spare
    data = AudioDataModule(source=str(table), **SPLIT, **TABLE, workers=0)
    assert data.facts() == in_memory.facts()
    assert data.shards is not None and data.shards.parent == tmp_path / "cache" / "prepared"
    assert data.prepared_dataset() == data.shards
    note = data.loading_note()
    assert note.startswith("data: streaming: in memory it would take about") and "GB available" in note
    in_memory.setup()
    streamed_test = torch.cat([waveforms for waveforms, _, _ in data.test_dataloader()])
    assert torch.equal(streamed_test, in_memory.splits["test"][0])


def test_the_prepare_command_guesses_audio_and_prepares_with_the_datamodules_defaults(
    table: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_commands(tmp_path / "many", speakers=40, takes=1, longest=0.6)
    write_images(tmp_path / "photos", {"a": 10, "b": 50}, 2)
    assert (guess_kind(source), guess_kind(table, "file"), guess_kind(tmp_path / "photos")) == ("audio",) * 2 + (
        "images",
    )
    (tmp_path / "texts.csv").write_text("path,label\nfine,pos\n")
    assert guess_kind(table) == guess_kind(tmp_path / "texts.csv") == "texts"  # no path column naming a recording
    output = tmp_path / "prepared"
    arguments = [str(source), str(output), "--workers", "1"]
    handler = signal.getsignal(signal.SIGTERM)  # the command sets its own (in a process of its own, as a user runs it)
    try:
        assert prepare_command(arguments) == 0
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"prepared {output} (audio: train ")
        data = AudioDataModule(source=str(output))  # every setting its default: nothing to repeat
        data.setup()
        assert data.facts() == {"image_shape": (1, 40, 100), "num_classes": 3}
        assert "estimated" not in data.loading_note()  # the statistics are those of the default spectrogram
        assert prepare_command(arguments) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            f"error: {output} is already a prepared dataset; give --overwrite to prepare it again"
        ]
    finally:
        signal.signal(signal.SIGTERM, handler)


@pytest.mark.slow
def test_a_run_streams_a_prepared_folder_and_its_checkpoint_predicts_without_it(
    folder: Path, prepared: Path, tmp_path: Path
) -> None:
    run = run_cli(
        *("--config", "cnn_speech_commands", "--data.source", str(prepared), "--data.workers", "1"),
        *("--data.val_fraction", "0.25", "--data.test_fraction", "0.25", "--data.batch_size", "8"),
        *("--trainer.max_steps", "3", "--model.net.channels", "[4,8]", "--model.net.hidden_dim", "16"),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"data: streaming: a prepared folder; from {prepared}, 1 DataLoader worker(s) per process" in run.stderr
    (run_dir,) = (tmp_path / "runs" / "cnn_speech_commands").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert np.isfinite(summary["test/acc"]) and np.isfinite(summary["test/loss"])
    hidden = prepared.with_name("elsewhere")
    prepared.rename(hidden)  # the checkpoint holds the classes, rate and statistics: the shards are not needed
    try:
        clips = [str(folder / "low" / "spk01_nohash_0.wav"), str(folder / "high" / "spk02_nohash_0.flac")]
        result = run_module("experiments.predict", str(run_dir), *clips, cwd=tmp_path)
    finally:
        hidden.rename(prepared)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = result.stdout.strip().splitlines()[1:]  # input, prediction, confidence
    assert len(rows) == 2 and all(row.split()[-2] in TONES for row in rows), result.stdout


class Recorder:
    """What the audio table callback hands W&B, and the inputs its model got."""

    def __init__(self) -> None:
        self.tables: list[dict[str, Any]] = []
        self.inputs: list[torch.Tensor] = []
        self.device = torch.device("cpu")

    def log_table(self, key: str, columns: list[str], data: list[list[Any]], step: int) -> None:
        self.tables.append({"key": key, "columns": columns, "data": data})

    def log_dict(self, data: dict[str, Any]) -> None:
        pass

    def __call__(self, features: torch.Tensor) -> torch.Tensor:  # the model: a class per clip, by its label
        self.inputs.append(features)
        return torch.nn.functional.one_hot(torch.arange(len(features)) % 3, 3).float()


def test_the_audio_table_predicts_from_the_log_mels_that_validation_gives_the_model(prepared: Path) -> None:
    from callbacks.audio_samples import AudioSamples

    data = streamed(prepared)
    recorder = Recorder()
    AudioSamples(num_samples=4).log_clips(SimpleNamespace(global_step=7), recorder, recorder, data)
    waveforms, labels, _ = next(iter(data.val_dataloader()))
    (seen,) = recorder.inputs
    torch.testing.assert_close(seen, data.prepare_batch((waveforms[:4], labels[:4]), training=False)[0])
    (table,) = recorder.tables
    assert [row[1] for row in table["data"]] == [data.classes[label] for label in labels[:4].tolist()]


@pytest.mark.slow
def test_two_ddp_processes_train_on_every_clip_once_per_epoch(prepared: Path, tmp_path: Path) -> None:
    record = ["--trainer.callbacks+=tests.sample_log.RecordSamples", f"--trainer.callbacks.folder={tmp_path}"]
    run = run_cli(
        *("--config", "cnn_speech_commands", "--data.source", str(prepared), "--data.workers", "1"),
        *("--data.val_fraction", "0.25", "--data.test_fraction", "0.25", "--data.batch_size", "8"),
        *("--trainer.max_epochs", "2", "--model.net.channels", "[4,8]", "--model.net.hidden_dim", "16"),
        *("--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp", "--run.logger", "csv"),
        *record,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    total = read_manifest(prepared, "audio").splits["train"]
    ranks = [json.loads((tmp_path / f"samples-rank{rank}.json").read_text()) for rank in (0, 1)]
    for epoch in ("0", "1"):
        per_rank = [[i for batch in rank[epoch] for i in batch] for rank in ranks]
        assert sorted(per_rank[0] + per_rank[1]) == list(range(total))  # every clip once across both ranks
        assert len(ranks[0][epoch]) == len(ranks[1][epoch])  # the same number of steps


def test_a_recording_at_another_rate_stops_the_prepare_or_is_resampled_as_in_memory(
    folder: Path, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    shutil.copytree(folder, source)
    odd = source / "mid" / "spk05_nohash_1.wav"
    soundfile.write(odd, clip_of("mid", 3)[::2], 8000, subtype="PCM_16")
    message = rf"^{re.escape(str(odd))} is sampled at 8000 Hz, the others at 16000 Hz; convert them all with --resample"
    with pytest.raises(ConfigError, match=message + r" \(to --sample_rate, else the first file's rate\)$"):
        prepare_audio(source, tmp_path / "stopped", **SPLIT, workers=1, progress=False)
    prepare_audio(source, tmp_path / "out", **SPLIT, resample=True, workers=2, progress=False, part_clips=16)
    in_memory = AudioDataModule(source=str(source), **SPLIT, resample=True, loading="memory")
    in_memory.setup()
    from_shards = streamed(tmp_path / "out", resample=True)
    from_shards.setup()
    for split, (waveforms, _) in in_memory.splits.items():
        assert torch.equal(torch.stack([w for w, _, _ in in_order(from_shards.streamed[split])]), waveforms), split
    with pytest.raises(ConfigError, match=r"was prepared with resample True, not --data.resample False"):
        streamed(tmp_path / "out").setup()


@pytest.mark.slow
def test_a_prepare_stopped_by_sigterm_goes_on_when_run_again_and_writes_the_same_bytes(
    folder: Path, tmp_path: Path
) -> None:
    """The command in a process of its own, one clip a part (so it is stopped between parts, or in one), SIGTERM
    once three parts are complete; run again, it ends as a prepare that was never stopped."""
    output = tmp_path / "stopped"
    arguments = [str(folder), str(output), "--workers", "1", "--val_fraction", "0.25", "--test_fraction", "0.25"]
    script = (
        "import sys; import datamodules.audio_shards as shards; from experiments.prepare import main; "
        f"shards.prepare_audio.__kwdefaults__['part_clips'] = 1; sys.exit(main({arguments!r}))"
    )
    command = [sys.executable, "-c", script]
    process = subprocess.Popen(command, env=fresh_env(), stderr=subprocess.PIPE, text=True)
    parts = output / "train" / "parts"
    while process.poll() is None and not (parts.is_dir() and len([p for p in parts.iterdir() if p.suffix == ""]) >= 3):
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1].startswith("preempted: SIGTERM; the parts written are kept; run the same")
    assert not (output / MANIFEST).exists()
    again = subprocess.run(command, env=fresh_env(), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    reference = tmp_path / "reference"
    prepare_audio(folder, reference, **SPLIT, workers=1, progress=False, part_clips=1)
    names = sorted(str(path.relative_to(reference)) for path in reference.rglob("*") if path.is_file())
    assert names == sorted(str(path.relative_to(output)) for path in output.rglob("*") if path.is_file())
    assert all((reference / name).read_bytes() == (output / name).read_bytes() for name in names)
