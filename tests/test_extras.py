"""The core install and its extras: without the optional packages (`validation.EXTRAS`) the default preset and
a text preset train, and each feature that needs one stops in one line naming its extra.

"Without" is a fresh process whose `sitecustomize` hides those packages from every import finder and from
`importlib.metadata`, as an install that lacks them would (torchmetrics and Lightning probe both)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, fresh_env, interruptible, run_cli
from validation import EXTRAS, ConfigError, require

FAST = ["--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1"]
PACKAGES = ("cores", "modules", "analysis", "datamodules", "callbacks", "experiments")
SOURCES = [REPO / "validation.py", *(path for package in PACKAGES for path in (REPO / package).rglob("*.py"))]

HIDE = '''import sys

HIDDEN = {hidden!r}


def hidden(name):
    return (name or "").partition(".")[0].lower().replace("-", "_") in HIDDEN


class Without:
    """One of Python's finders, blind to the hidden packages and their distributions."""

    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        find = getattr(self.finder, "find_spec", None)
        return None if hidden(name) or find is None else find(name, path, target)

    def find_distributions(self, *args, **kwargs):
        find = getattr(self.finder, "find_distributions", None)
        found = find(*args, **kwargs) if find is not None else ()
        return (dist for dist in found if not hidden(dist.metadata["Name"]))

    def __getattr__(self, name):
        return getattr(self.finder, name)


sys.meta_path[:] = [Without(finder) for finder in sys.meta_path]
'''


@pytest.fixture(scope="module")
def lean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a process where the optional packages are not installed."""
    folder = tmp_path_factory.mktemp("lean")
    (folder / "sitecustomize.py").write_text(HIDE.format(hidden=sorted(EXTRAS)))
    return {"PYTHONPATH": f"{folder}:{REPO}"}


def lean_command(module: str, *args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=fresh_env(env),
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=interruptible,
    )


def the_one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The command's only non-blank line of output (a tokenizer's progress prints blank lines)."""
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout[-2000:] + result.stderr[-3000:]
    return lines[0]


def extra_line(feature: str, extra: str) -> str:
    return f"error: {feature} needs the {extra} extra: pip install 'firstlight[{extra}]'"


def test_the_hidden_packages_look_uninstalled(lean: dict[str, str]) -> None:
    probe = (
        "import importlib.metadata as m, importlib.util as u\n"
        "print(u.find_spec('sacrebleu'), [d for d in m.distributions() if d.metadata['Name'] == 'sacrebleu'])\n"
        "import sacrebleu"
    )
    result = subprocess.run([sys.executable, "-c", probe], env=fresh_env(lean), capture_output=True, text=True)
    assert result.stdout == "None []\n"
    assert result.stderr.strip().endswith("ModuleNotFoundError: No module named 'sacrebleu'")


@pytest.fixture(scope="module")
def default_run(lean: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default preset (a CNN on Fashion-MNIST), two steps, tracked in an offline W&B run, without the extras."""
    cwd = tmp_path_factory.mktemp("default")
    result = run_cli(*FAST, cwd=cwd, env=lean, fresh=True)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (cwd / "runs" / "cnn_fashion_mnist").iterdir()
    return run_dir


def test_the_default_preset_trains_and_tracks_without_the_extras(default_run: Path) -> None:
    assert (default_run / "summary.json").is_file()
    assert list((default_run / "wandb").glob("offline-run-*"))


@pytest.mark.slow
def test_a_text_preset_trains_without_the_extras(lean: dict[str, str], tmp_path: Path) -> None:
    """An LSTM on reviews: its own tokenizer, and the attributions it logs (captum is in the core install)."""
    result = run_cli("--config", "lstm_sentiment", *FAST, cwd=tmp_path, env=lean, fresh=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "extra" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "feature", "extra"),
    [
        pytest.param(["--config", "cnn_speech_commands"], "speech", "audio", id="speech"),
        pytest.param(
            ["--config", "bert_sentiment"], "a Hugging Face model (cores.huggingface.HFClassifier)", "hf", id="hf"
        ),
        # gru_deu_eng sets it too, after a tokenizer is trained on its pairs (15 s): the reversed strings are ready
        pytest.param(
            ["--config", "gru_reverse", "--model.text_metrics", "true"],
            "--model.text_metrics (BLEU and chrF)",
            "translation",
            id="bleu",
        ),
        pytest.param(["--config", "lstm_sunspots"], "the built-in series sunspots", "series", id="series"),
        pytest.param(
            ["--config", "efficientnet_fashion_mnist"],
            "a pretrained image backbone (cores.pretrained_image.PretrainedImageClassifier)",
            "pretrained",
            id="pretrained",
        ),
    ],
)
def test_a_preset_that_needs_an_extra_says_which_in_one_line(
    lean: dict[str, str], tmp_path: Path, args: list[str], feature: str, extra: str
) -> None:
    result = run_cli(*args, *FAST, cwd=tmp_path, env=lean, fresh=True)
    assert result.returncode == 2
    assert the_one_line(result) == extra_line(feature, extra)
    assert not (tmp_path / "runs").exists()  # stopped before anything was written


@pytest.mark.slow
def test_onnx_export_needs_the_export_extra(lean: dict[str, str], default_run: Path) -> None:
    result = lean_command("experiments.export", str(default_run), cwd=default_run, env=lean)
    assert result.returncode == 2
    assert the_one_line(result) == extra_line("ONNX export (--format onnx)", "export")
    assert not (default_run / "export").exists()


def test_preparing_recordings_needs_the_audio_extra(lean: dict[str, str], tmp_path: Path) -> None:
    for label in ("yes", "no"):
        (tmp_path / "recordings" / label).mkdir(parents=True)
        (tmp_path / "recordings" / label / "0.wav").write_bytes(b"RIFF")  # told apart by name, never read
    result = lean_command("experiments.prepare", "recordings", "prepared", cwd=tmp_path, env=lean)
    assert result.returncode == 2
    assert the_one_line(result) == extra_line("preparing recordings", "audio")
    assert not (tmp_path / "prepared").exists()


@pytest.mark.slow
def test_predicting_with_a_model_of_an_extra_needs_that_extra(lean: dict[str, str], tmp_path: Path) -> None:
    """A checkpoint trained where the extra is installed, used where it is not."""
    tiny = "{hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 1, intermediate_size: 16}"
    trained = run_cli(
        "--config", "bert_sentiment", "--model.net.config", tiny, "--data.vocab_size", "500", *FAST, cwd=tmp_path
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "bert_sentiment").iterdir()
    result = lean_command("experiments.predict", str(run_dir), "a fine film", cwd=tmp_path, env=lean)
    assert result.returncode == 2
    assert the_one_line(result) == extra_line("a Hugging Face model (cores.huggingface.HFClassifier)", "hf")


# The table, pyproject.toml and the source agree


def test_every_extra_installs_its_packages_and_the_core_none() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 on
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower().replace("-", "_") for r in requirements}

    assert not names(project["dependencies"]) & EXTRAS.keys()
    for package, extra in EXTRAS.items():
        assert package in names(extras[extra]), f"{package} is not in the {extra} extra of pyproject.toml"
    (everything,) = extras["all"]
    assert set(re.fullmatch(r"firstlight\[(.*)\]", everything)[1].split(",")) == set(EXTRAS.values())  # type: ignore[index]


def test_optional_packages_are_imported_only_through_require() -> None:
    """No `import` of an optional package anywhere in the source (a module-level one would break the core
    install wherever that module is imported; a lazy one would fail with a traceback); every `require` names
    a package of the table, as a literal."""
    found = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module or ""]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require":
                argument = node.args[0] if node.args else None
                if not (isinstance(argument, ast.Constant) and str(argument.value).partition(".")[0] in EXTRAS):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: require of no package in EXTRAS")
                continue
            else:
                continue
            found += [
                f"{path.relative_to(REPO)}:{node.lineno}: import {m}" for m in modules if m.split(".")[0] in EXTRAS
            ]
    assert not found, "use validation.require:\n" + "\n".join(found)


def test_require_raises_a_config_error_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sacrebleu", None)  # an import of it fails as if it were not installed
    with pytest.raises(
        ConfigError, match=re.escape("BLEU needs the translation extra: pip install 'firstlight[translation]'")
    ):
        require("sacrebleu", "BLEU")


def test_a_package_with_a_dependency_missing_is_no_missing_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An installed package that fails to import is a broken install: its own error, not "install the extra"."""
    (tmp_path / "halfinstalled").mkdir()
    (tmp_path / "halfinstalled" / "__init__.py").write_text("import firstlight_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(EXTRAS, "halfinstalled", "audio")
    with pytest.raises(ModuleNotFoundError, match="firstlight_no_such_dependency"):
        require("halfinstalled", "a test")
