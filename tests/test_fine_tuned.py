"""What comes after training works on the fine-tuned pretrained models as on the others: predict, explain and
shrink (the session's short runs of their presets, `tests.preset_runs`; their ONNX export is checked with every
preset's in test_export)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from experiments.predict import main as predict
from tests.helpers import new_inputs
from tests.preset_runs import PresetRuns

pytest.importorskip("timm")  # the pretrained extra
pytestmark = pytest.mark.slow  # each preset's short run loads and fine-tunes a pretrained network


@pytest.mark.parametrize("preset", ["minilm_sentiment", "mpnet_sentiment"])
def test_the_pretrained_text_models_predict_and_explain_new_texts(
    preset: str, preset_runs: PresetRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = preset_runs(preset)
    texts = ["a wonderful, moving film", "dull and far too long"]
    assert predict([str(run), *texts, "--explain", "--explain_dir", str(tmp_path / "why")]) == 0
    out = capsys.readouterr().out
    pages = sorted((tmp_path / "why").iterdir())
    assert [page.suffix for page in pages] == [".html", ".html"]
    for page in pages:
        (line,) = [line for line in out.splitlines() if page.name in line]
        assert re.search(r"  (fresh|rotten) \(\d\.\d\d\): [+-]\w", line), line  # its answer and deciding tokens
        assert float(re.findall(r"error (\d+\.\d+)%", line)[0]) < 5  # integrated gradients add up to the change


def test_the_fine_tuned_image_model_predicts_and_explains_new_images(
    preset_runs: PresetRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from experiments.trained import load_trained

    run = preset_runs("efficientnet_fashion_mnist")
    trained = load_trained(str(run))
    images = new_inputs("images", trained.datamodule.inference_state(), dict(trained.datamodule.hparams), tmp_path)
    images = images[:1]  # 128 steps of integrated gradients through EfficientNet: ~20 s an image on 2 cores
    assert predict([str(run), *images, "--explain", "--explain_dir", str(tmp_path / "why")]) == 0
    out = capsys.readouterr().out
    assert len(list((tmp_path / "why").glob("*.png"))) == len(images)
    assert sum(name in out for name in trained.datamodule.classes) >= 1


@pytest.mark.parametrize("preset", ["minilm_sentiment", "mpnet_sentiment", "efficientnet_fashion_mnist"])
def test_a_fine_tuned_model_shrinks_to_int8_and_still_answers(
    preset: str, preset_runs: PresetRuns, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from experiments.shrink import load_int8, main
    from experiments.trained import load_trained

    run = preset_runs(preset)
    output = tmp_path / "model-int8.pt"
    assert main([str(run), "--output", str(output)]) == 0
    assert f"wrote {output}" in capsys.readouterr().out
    shrunk, trained = load_int8(output), load_trained(str(run))
    state, facts = trained.datamodule.inference_state(), dict(trained.datamodule.hparams)
    kind = "images" if "image_shape" in state else "texts"
    raw = new_inputs(kind, state, facts, tmp_path)
    inputs = shrunk.datamodule.encode_inputs([Path(item) for item in raw] if kind == "images" else raw)
    with torch.no_grad():
        agree = shrunk.task(inputs).argmax(-1) == trained.task(inputs).argmax(-1)
    assert agree.float().mean() >= 0.5  # int8 weights: the same answers, but for close calls
    answers = shrunk.task.predictions(inputs, shrunk.datamodule)
    assert all(answer["prediction"] in trained.datamodule.classes for answer in answers)
