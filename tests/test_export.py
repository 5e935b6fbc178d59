"""`python -m experiments.export`: a trained run's core exported to ONNX, TorchScript and a torch.export
program, run on its validation batch and at other sizes and compared with PyTorch; the file logged into the
run's W&B run; bad input one line, with nothing written."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cores.recurrent import RNNClassifier, RNNSeq2Seq
from experiments.export import main as export
from experiments.exportable import exportable
from experiments.presets import preset_names
from experiments.trained import load_trained
from tests.helpers import runnable, wandb_records
from tests.preset_runs import PresetRuns, short_run


def exported(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the command in this process; usage errors exit through SystemExit."""
    try:
        code = export(list(args))
    except SystemExit as stop:
        code = int(stop.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def difference(out: str) -> float:
    (value,) = re.findall(r"^max abs difference (\S+) \(tolerance ", out, flags=re.MULTILINE)
    return float(value)


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `folder`, with its size and modification time."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits CNN, 4 training steps, W&B offline."""
    return short_run("cnn_digits", tmp_path_factory.mktemp("digits"), "--run.logger=wandb")


@pytest.mark.slow
def test_onnx_export_matches_pytorch_at_any_batch_size_and_is_logged_to_wandb(
    digits_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnxruntime

    code, out, err = exported(capsys, str(digits_run))
    assert code == 0, err
    path = digits_run / "export" / "model.onnx"
    assert f"wrote {path}" in out and "checked on the first validation batch" in out
    assert difference(out) <= 1e-4
    # Independently of the command's own check: another batch size in onnxruntime, against PyTorch.
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (node,) = session.get_inputs()
    assert node.name == "images" and node.shape[0] == "batch" and node.shape[1:] == [1, 8, 8]
    images = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        expected = load_trained(str(digits_run)).task.net(images).numpy()
    (got,) = session.run(None, {"images": images.numpy()})
    assert np.abs(got - expected).max() < 1e-4
    # Logged into the run's own W&B run (resumed offline), with what was measured.
    records = wandb_records(digits_run)
    (artifact,) = [
        r["artifact"] for r in records if r["type"] == "artifact" and r["artifact"]["type"] == "model-export"
    ]
    assert artifact["run_id"] == digits_run.name and artifact["name"] == f"export-onnx-{digits_run.name}"
    metadata = json.loads(artifact["metadata"])
    assert metadata["format"] == "onnx" and metadata["opset"] >= 17
    assert metadata["max_abs_difference"] == pytest.approx(difference(out), rel=1e-2, abs=1e-12)
    assert [entry["path"] for entry in artifact["manifest"]["contents"]] == ["model.onnx"]


@pytest.mark.parametrize(("fmt", "suffix"), [("torchscript", ".torchscript.pt"), ("exported-program", ".pt2")])
def test_torchscript_and_exported_programs_load_back_and_match(
    digits_run: Path, fmt: str, suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / f"cnn{suffix}"
    code, out, err = exported(capsys, str(digits_run), "--format", fmt, "--output", str(output), "--wandb", "false")
    assert code == 0, err
    assert difference(out) <= 1e-4 and "W&B" not in out
    images = torch.randn(5, 1, 8, 8)
    model = torch.jit.load(str(output)) if fmt == "torchscript" else torch.export.load(str(output)).module()
    with torch.no_grad():
        assert torch.allclose(model(images), load_trained(str(digits_run)).task.net(images), atol=1e-5)


def test_over_tolerance_exits_1_and_keeps_nothing(digits_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = digits_run.parent / "strict.onnx"
    before = listing(digits_run.parent)
    code, out, err = exported(capsys, str(digits_run), "--output", str(output), "--tolerance", "1e-30")
    assert code == 1 and difference(out) > 1e-30
    assert err.strip().splitlines()[-1].startswith("error: the exported model differs from PyTorch's by more than")
    assert listing(digits_run.parent) == before


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda run, tmp: [run, "--format", "coreml"], "argument --format: invalid choice: 'coreml'"),
        (lambda run, tmp: [str(tmp / "nowhere")], "nowhere not found"),
        (lambda run, tmp: [run, "--output", str(tmp / "model.pt")], "onnx files end in .onnx"),
        (lambda run, tmp: [run, "--output", str(tmp / "missing" / "m.onnx")], "does not exist"),
        (lambda run, tmp: [run, "--tolerance", "-1"], "tolerance must be in [0.0, inf)"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    digits_run: Path, tmp_path: Path, make_args: object, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = make_args(str(digits_run), tmp_path)  # type: ignore[operator]
    before, run_before = listing(tmp_path), listing(digits_run)
    code, out, err = exported(capsys, *args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert listing(tmp_path) == before and listing(digits_run) == run_before


def test_a_run_without_checkpoints_and_an_existing_output_are_refused(
    digits_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = tmp_path / "runs" / "cnn_digits" / "bare"
    bare.mkdir(parents=True)
    shutil.copy(digits_run / "config.yaml", bare / "config.yaml")
    before = listing(tmp_path)
    code, _, err = exported(capsys, "bare", "--root", str(tmp_path / "runs"))
    assert code == 2 and "has no checkpoint" in err and len(err.strip().splitlines()) == 1
    assert listing(tmp_path) == before

    output = tmp_path / "model.pt"
    output.write_text("mine\n")
    args = [str(digits_run), "--format", "torchscript", "--output", str(output), "--wandb", "false"]
    before, run_before = listing(tmp_path), listing(digits_run)
    code, _, err = exported(capsys, *args)
    assert code == 2 and "exists; give another path, or --overwrite" in err and len(err.strip().splitlines()) == 1
    assert listing(tmp_path) == before and listing(digits_run) == run_before
    code, _, err = exported(capsys, *args, "--overwrite")
    assert code == 0, err
    assert torch.jit.load(str(output)) is not None


def test_without_its_data_the_check_runs_on_inputs_made_from_the_facts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bidirectional LSTM (packed sequences) trained on a CSV that is gone by the time of the export."""
    rng = np.random.default_rng(0)
    words = ["the", "film", "plot", "was", "great", "dull", "superb", "flat", "a", "story"]
    source = tmp_path / "reviews.csv"
    rows = [f"{' '.join(rng.choice(words, size=int(rng.integers(2, 9))))},{('pos', 'neg')[i % 2]}" for i in range(120)]
    source.write_text("text,label\n" + "\n".join(rows) + "\n")
    small = ["--model.net.embed_dim=8", "--model.net.hidden_dim=8", "--run.logger=none"]
    run_dir = short_run("lstm_sentiment", tmp_path, f"--data.source={source}", *small)
    source.unlink()
    code, out, err = exported(capsys, str(run_dir), "--format", "torchscript")
    assert code == 0, err
    assert "checked on inputs made from the data's facts [no validation data here: " in out and f"{source}" in out
    assert difference(out) <= 1e-4


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_export_form_of_packed_recurrences_gives_packings_results(cell: str) -> None:
    """Without packing (a masked loop over the padded batch) the classifier and seq2seq cores give what they
    give with packing: outputs, final states of both directions, at every layer."""
    torch.manual_seed(0)
    tokens = torch.randint(4, 30, (5, 9))
    for row, length in enumerate([9, 4, 1, 7, 2]):
        tokens[row, length:] = 0
    classifier = RNNClassifier(vocab_size=30, cell=cell, num_layers=2, pooling="final").eval()
    seq2seq = RNNSeq2Seq(vocab_size=30, cell=cell, num_layers=2).eval()
    with torch.no_grad():
        assert torch.allclose(exportable(classifier)(tokens), classifier(tokens), atol=1e-5)
        target = tokens[:, :6].clone()
        assert torch.allclose(exportable(seq2seq)(tokens, target), seq2seq(tokens, target), atol=1e-5)
    assert exportable(classifier) is not classifier  # a copy: the trained core is left as it is


@pytest.mark.slow
@pytest.mark.parametrize("preset", [runnable(name) for name in preset_names()])
def test_every_preset_exports_to_onnx_with_dynamic_axes(
    preset: str, preset_runs: PresetRuns, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnx

    run_dir = preset_runs(preset)
    code, out, err = exported(capsys, str(run_dir))
    assert code == 0, err
    assert "checked on the first validation batch" in out  # the run's data, rebuilt here
    assert difference(out) <= 1e-4
    model = onnx.load(str(run_dir / "export" / "model.onnx"))
    for node in model.graph.input:
        dims = [dim.dim_param for dim in node.type.tensor_type.shape.dim]
        assert dims[0] == "batch"
        if node.type.tensor_type.elem_type == onnx.TensorProto.INT64:  # token ids: any length too
            assert dims[1].endswith("length"), dims


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["lstm_sentiment", "transformer_reverse", "gru_reverse"])
@pytest.mark.parametrize("fmt", ["torchscript", "exported-program"])
def test_sequence_models_export_to_torchscript_and_programs(
    preset: str, fmt: str, preset_runs: PresetRuns, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = exported(capsys, str(preset_runs(preset)), "--format", fmt)
    assert code == 0, err
    assert difference(out) <= 1e-4
    sizes = re.search(r"and at other sizes \(([^)]*)\)", out)
    assert sizes is not None and ";" in sizes.group(1)  # checked at two other batch sizes and lengths
    # The task says how its graph is used where that is more than one pass: seq2seq decodes around it.
    assert ("note: the graph is the teacher-forced forward" in out) == (preset != "lstm_sentiment")
