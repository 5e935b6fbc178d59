"""Integrated gradients (analysis.attribution): exact where the integral is known, complete on a trained digits
CNN and a trained text classifier, in the W&B run as a table of token attributions (callbacks.attributions),
and from the command line (`python -m experiments.predict RUN INPUTS --explain`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from analysis.attribution import (
    heat_map,
    image_attributions,
    image_baseline,
    token_attributions,
    token_embedding,
)
from callbacks.attributions import Attributions
from datamodules.tokenization import CharTokenizer
from experiments.predict import main as predict
from experiments.run import main as run
from experiments.trained import Trained, load_trained
from tests.helpers import logged_tables, wandb_records

RUN_ENV = ("FIRSTLIGHT_RUN_ID", "FIRSTLIGHT_RUN_DIR", "FIRSTLIGHT_RESUME_FROM")


@pytest.fixture(scope="module")
def train(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Runs a preset in this process, in a fresh folder, and gives its run directory."""

    def trained(preset: str, *args: str) -> Path:
        folder = tmp_path_factory.mktemp(preset)
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(folder)
            for name in RUN_ENV:
                patch.delenv(name, raising=False)
            assert run(["--config", preset, "--run.test=false", *args]) == 0
        (run_dir,) = (folder / "runs" / preset).iterdir()
        return run_dir

    return trained


@pytest.fixture(scope="module")
def digits_run(train: Any) -> Path:
    """The digits CNN after one epoch, W&B offline, with the Attributions callback (not in its preset)."""
    return train("cnn_digits", "--trainer.max_epochs=1", "--trainer.callbacks+=callbacks.attributions.Attributions")


POSITIVE, NEGATIVE = ("great", "superb", "wonderful"), ("awful", "boring", "dreadful")
FILLER = ("the", "a", "film", "plot", "story", "actor", "scene", "music", "camera", "script", "was", "with", "this")


def write_reviews(path: Path, count: int = 800) -> Path:
    """Reviews of filler words around one cue word, labelled by it: pos (great, superb, wonderful) or neg."""
    rng = np.random.default_rng(0)
    lines = ["text,label"]
    for index in range(count):
        cues, label = (POSITIVE, "pos") if index % 2 else (NEGATIVE, "neg")
        words = list(rng.choice(FILLER, size=int(rng.integers(4, 9))))
        words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(cues)))
        lines.append(f"{' '.join(words)},{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def sentiment_run(train: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The LSTM sentiment preset, tiny, on reviews whose label one word decides, W&B offline: the preset's
    Attributions callback logs at the first and the last validation."""
    return train(
        "lstm_sentiment",
        f"--data.source={write_reviews(tmp_path_factory.mktemp('reviews') / 'reviews.csv')}",
        "--model.net.embed_dim=16",
        "--model.net.hidden_dim=16",
        "--model.lr=0.01",
        "--data.batch_size=16",
        "--trainer.max_epochs=2",
    )


def digit_images(folder: Path, count: int) -> list[Path]:
    """scikit-learn's first `count` digits as 8x8 grey PNGs (0-16 scaled to 0-255, as the datamodule does)."""
    from sklearn.datasets import load_digits

    folder.mkdir(exist_ok=True)
    paths = []
    for index, pixels in enumerate(load_digits().images[:count]):
        path = folder / f"digit-{index}.png"
        Image.fromarray(np.rint(pixels * (255 / 16)).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


# Exact where the integral is known


def test_image_attributions_of_a_linear_model_are_its_weights_times_the_change() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(2 * 3 * 4, 5)
    images, baseline = torch.randn(3, 2, 3, 4), torch.randn(1, 2, 3, 4)
    results = image_attributions(nn.Sequential(nn.Flatten(), linear), images, baseline, targets=[4, 0, 2], steps=8)
    weights = linear.weight.detach().view(5, 2, 3, 4)
    for image, target, result in zip(images, [4, 0, 2], results, strict=True):
        assert result.target == target
        torch.testing.assert_close(result.scores, (image - baseline[0]) * weights[target], atol=1e-5, rtol=1e-4)
        assert result.relative_error < 1e-4


class MeanOfEmbeddings(nn.Module):
    """(B, T) ids padded with 0 -> logits, linear in the embeddings of the real tokens, averaged over them."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(12, 4)  # no padding_idx: the <pad> row is not zero
        self.head = nn.Linear(4, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        real = (tokens != 0).float()[..., None]  # (B, T, 1)
        return self.head((self.embedding(tokens) * real).sum(1) / real.sum(1))


def test_token_attributions_run_from_pad_vectors_under_the_inputs_mask() -> None:
    """Each text token's score is (its embedding - <pad>'s) . w / (real tokens), <bos> and padding are left
    out, and the scores add up to the logit's change: the path keeps the input's mask (an empty text at the
    start would divide by another count)."""
    torch.manual_seed(0)
    net, tokenizer = MeanOfEmbeddings(), CharTokenizer(list("abcdefgh"))  # ids 4..11
    tokens = torch.tensor([[2, 4, 5, 11, 0, 0], [2, 6, 6, 7, 8, 9]])  # <bos> abh, <bos> ccdef
    results = token_attributions(net, tokens, pad_id=0, tokenizer=tokenizer, steps=4)
    table, weights = net.embedding.weight.detach(), net.head.weight.detach()
    for row, result in zip(tokens, results, strict=True):
        text = [int(i) for i in row if i > 2]
        expected = [float((table[i] - table[0]) @ weights[result.target]) / (len(text) + 1) for i in text]
        assert result.tokens == [tokenizer.decode([i]) for i in text]
        assert result.scores == pytest.approx(expected, abs=1e-5)
        assert result.relative_error < 1e-4


def test_the_token_embedding_is_found_in_every_kind_of_text_core() -> None:
    from cores.recurrent import RNNClassifier
    from cores.transformer import TransformerClassifier

    rnn = RNNClassifier(vocab_size=20, ngram_buckets=8)
    transformer = TransformerClassifier(vocab_size=20, dim=8, num_heads=2, positional="learned", ngram_buckets=8)
    assert token_embedding(rnn) is rnn.embedding
    assert token_embedding(transformer) is transformer.encoder.embedding  # not positions, not the n-gram table


def test_a_heat_map_shows_the_input_the_attributions_and_both() -> None:
    image, scores = torch.zeros(1, 8, 8), torch.zeros(1, 8, 8)
    scores[0, 2, 3], scores[0, 5, 5] = 1.0, -0.5
    picture = heat_map(image, scores, size=64)  # cells of 8 pixels, 4-pixel gaps
    assert picture.shape == (64, 3 * 64 + 2 * 4, 3) and picture.dtype == np.uint8
    attributions = picture[:, 68:132].astype(int)
    red, blue = attributions[2 * 8 + 4, 3 * 8 + 4], attributions[5 * 8 + 4, 5 * 8 + 4]
    assert red[0] > 200 and red[2] < 60  # adds to the logit
    assert blue[2] > 200 and blue[0] < 200  # takes from it, half as much
    assert (attributions[0, 0] > 250).all()  # 0: white


# Complete on trained models


def test_integrated_gradients_on_the_digits_cnn_pass_the_completeness_check(digits_run: Path, tmp_path: Path) -> None:
    """The attributions of several digits sum to their class logit's change from the black image within 1%."""
    trained = load_trained(str(digits_run))
    images = trained.datamodule.encode_inputs(digit_images(tmp_path, 8))
    baseline = image_baseline(trained.datamodule, images, "black")
    mean, std = trained.datamodule.mean, trained.datamodule.std  # type: ignore[attr-defined]
    torch.testing.assert_close(baseline, ((0 - mean) / std).expand(1, 1, 8, 8))
    results = image_attributions(trained.task.net, images, baseline)  # 128 quadrature points
    for result in results:
        change = result.output - result.baseline_output
        assert abs(change) > 0.5  # a real change of the logit, so that 1% of it means something
        assert float(result.scores.sum()) == pytest.approx(change + result.delta, abs=1e-4)  # captum's delta
        assert result.relative_error < 0.01, (result.target, change, result.delta)
    predicted = [int(row["prediction"]) for row in trained.task.predictions(images, trained.datamodule)]
    assert [r.target for r in results] == predicted  # the predicted class is the one explained


def test_the_text_classifiers_attributions_find_the_deciding_word_and_pass_the_completeness_check(
    sentiment_run: Path,
) -> None:
    trained = load_trained(str(sentiment_run))
    texts = ["the plot was superb with the music", "this film was dreadful", "with actor the boring story"]
    tokens = trained.datamodule.encode_inputs(texts)
    tokenizer = trained.datamodule.tokenizer  # type: ignore[attr-defined]
    assert trained.task.pad_id is not None
    results = token_attributions(trained.task.net, tokens, trained.task.pad_id, tokenizer)
    expected = [("superb", "pos"), ("dreadful", "neg"), ("boring", "neg")]
    for result, text, (cue, label) in zip(results, texts, expected, strict=True):
        assert result.tokens == text.split()  # decoded one by one, without <bos> and padding
        assert trained.datamodule.classes[result.target] == label  # type: ignore[attr-defined]
        strongest = max(range(len(result.tokens)), key=lambda i: abs(result.scores[i]))
        assert result.tokens[strongest] == cue and result.scores[strongest] > 0  # the word that decides, for it
        assert result.relative_error < 0.01


# In the W&B run


def test_the_text_preset_logs_a_table_of_token_attributions_in_the_offline_wandb_run(sentiment_run: Path) -> None:
    tables = logged_tables(sentiment_run, "val/attributions")
    assert len(tables) >= 2  # the first validation and the last, at least
    table = tables[-1]  # the final model's
    assert table["columns"] == ["input", "true", "predicted", "attributions", "top tokens"]
    assert len(table["data"]) == 8  # the first 8 validation examples
    for text, true, predicted, _, top in table["data"]:
        assert {true, predicted} <= {"pos", "neg"}
        entries = [re.fullmatch(r"([+-])(.+) (-?\d+\.\d+)", entry) for entry in top.split(", ")]  # "+great 0.412"
        assert len(entries) == min(5, len(text.split())) and all(entries)
        for sign, token, score in (entry.groups() for entry in entries if entry):
            assert token in text.split() and (float(score) >= 0) == (sign == "+")
        cue = next(word for word in text.split() if word in POSITIVE + NEGATIVE)
        if true == predicted:  # learnt: its cue word decides
            assert entries[0].group(2) == cue and entries[0].group(1) == "+"  # type: ignore[union-attr]
    assert sum(true == predicted for _, true, predicted, _, _ in table["data"]) >= 6
    # Offline W&B keeps no media in tables: the coloured tokens are logged beside it, as HTML pages.
    history = [r["history"]["item"] for r in wandb_records(sentiment_run) if r["type"] == "history"]
    pages = [item["val/attribution_texts.html"] for item in history if "val/attribution_texts.html" in item][-1]
    (files,) = (sentiment_run / "wandb").glob("offline-run-*/files")
    names = [page["path"] for page in pages]
    assert len(names) == len(table["data"])
    for name, (text, true, predicted, *_) in zip(names, table["data"], strict=True):
        page = (files / name).read_text()
        spans = re.findall(r'<span title="([+-]\d+\.\d+)"[^>]*>([^<]*)</span>', page)
        assert [token for _, token in spans] == text.split()
        assert f"true: {true}, predicted: {predicted}" in page
        error = float(re.search(r"error (\d+\.\d+)%", page).group(1))  # type: ignore[union-attr]
        assert error < 3  # 64 quadrature points during training; the command's 128 keep within 1%


def test_the_digits_cnn_with_the_callback_logs_heat_maps_in_the_offline_wandb_run(digits_run: Path) -> None:
    (table,) = logged_tables(digits_run, "val/attributions")  # one epoch: one validation
    assert table["columns"] == ["attributions", "true", "predicted", "confidence", "completeness"]
    assert len(table["data"]) == 8 and all({row[1], row[2]} <= set("0123456789") for row in table["data"])
    history = [r["history"]["item"] for r in wandb_records(digits_run) if r["type"] == "history"]
    (logged,) = [item for item in history if "val/attribution_images.captions" in item]
    (files,) = (digits_run / "wandb").glob("offline-run-*/files")
    for caption, entry, row in zip(
        logged["val/attribution_images.captions"],
        logged["val/attribution_images.filenames"],
        table["data"],
        strict=True,
    ):
        assert caption.startswith(f"true: {row[1]}, predicted: {row[2]} (") and row[4] in caption
        assert float(re.findall(r"error (\d+\.\d+)%", caption)[0]) < 3  # 64 quadrature points
        with Image.open(files / entry) as image:
            assert image.size == (3 * 192 + 2 * 4, 192)


def test_the_callback_skips_models_it_cannot_explain_with_one_warning() -> None:
    import warnings

    from cores.recurrent import RNNForecaster
    from modules.forecasting import ForecastTask

    callback, forecaster = Attributions(), ForecastTask(RNNForecaster())
    callback.batch = (torch.randn(2, 10, 1), torch.randn(2, 3, 1))  # a forecaster's windows and targets
    with pytest.warns(UserWarning, match="explains image and token classifiers"):
        assert not callback.explainable(forecaster)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not callback.explainable(forecaster)  # said once


# From the command line


def test_predict_explain_writes_a_heat_map_per_image_and_never_overwrites_silently(
    digits_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [str(p) for p in digit_images(tmp_path / "digits", 3)]
    assert predict([str(digits_run), *paths, "--explain"]) == 0
    out = capsys.readouterr().out
    written = sorted((digits_run / "explain").iterdir())
    assert [p.name for p in written] == ["001-digit-0.png", "002-digit-1.png", "003-digit-2.png"]
    for path in written:
        with Image.open(path) as image:  # input | attributions and their colour scale | overlay, titled
            assert image.width > 3 * 192 and image.height > 192 and "predicted" in image.info["Title"]
        errors = re.findall(rf"{path.name} .*\(error (\d+\.\d+)%\)", out)
        assert len(errors) == 1 and float(errors[0]) < 1
    before = [p.read_bytes() for p in written]
    (written[0]).write_bytes(b"mine")
    assert predict([str(digits_run), *paths, "--explain"]) == 2  # they exist: nothing replaced
    assert "exists" in capsys.readouterr().err and written[0].read_bytes() == b"mine"
    assert predict([str(digits_run), *paths, "--explain", "--overwrite"]) == 0
    assert [p.read_bytes() for p in written] == before  # the same explanations again


def test_predict_explain_writes_an_html_page_per_text_and_prints_its_top_tokens(
    sentiment_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts, classes, cues = ["a wonderful film", "the story was awful"], ["pos", "neg"], ["wonderful", "awful"]
    assert predict([str(sentiment_run), *texts, "--explain", "--explain_dir", str(tmp_path / "why")]) == 0
    out = capsys.readouterr().out
    pages = sorted((tmp_path / "why").iterdir())
    assert [p.name for p in pages] == ["001-a-wonderful-film.html", "002-the-story-was-awful.html"]
    for page, text, answer, cue in zip(pages, texts, classes, cues, strict=True):
        spans = re.findall(r"<span [^>]*>([^<]*)</span>", page.read_text())
        assert spans == text.split()
        (line,) = [line for line in out.splitlines() if page.name in line]  # "... pos (0.97): +wonderful 1.234, ..."
        assert re.search(rf"  {answer} \(\d\.\d\d\): \+{cue} \d", line)  # the deciding word first, for it
        assert float(re.findall(r"error (\d+\.\d+)%", line)[0]) < 1
    # Another class than the predicted one, by name: the deciding word speaks against it.
    arguments = ["--explain", "--explain_dir", str(tmp_path / "against"), "--explain_class", "neg"]
    assert predict([str(sentiment_run), texts[0], *arguments]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "001-a-wonderful-film.html" in line]
    assert re.search(r"  neg \(0\.\d\d\): -wonderful -\d", line)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--explain", "--explain_class", "maybe"], "--explain_class 'maybe' is not one of this model's classes"),
        (["--explain_dir", "somewhere"], "--explain_dir and --explain_class go with --explain"),
        (["--explain", "--explain_dir", "a-file"], "is a file"),
    ],
)
def test_mistakes_with_explain_are_one_line_and_write_nothing(
    arguments: list[str], message: str, sentiment_run: Path, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (in_tmp / "a-file").write_text("")
    assert predict([str(sentiment_run), "a fine film", *arguments]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert sorted(p.name for p in in_tmp.iterdir()) == ["a-file"] and not (sentiment_run / "explain").exists()


@pytest.mark.parametrize("kind", ["language model", "forecaster"])
def test_explain_refuses_models_that_do_not_classify(
    kind: str, in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A language model's or a forecaster's checkpoint (loaded as `load_trained` would: its task and its
    datamodule) is refused before anything is predicted or written."""
    import experiments.predict
    from cores.recurrent import RNNForecaster, RNNLanguageModel
    from datamodules.language_model import LanguageModelDataModule
    from datamodules.timeseries import TimeSeriesDataModule
    from modules.forecasting import ForecastTask
    from modules.language_model import LanguageModelTask

    if kind == "language model":
        model: Any = Trained(
            LanguageModelTask(RNNLanguageModel(vocab_size=8)), LanguageModelDataModule(), in_tmp, in_tmp
        )
        inputs = ["ROMEO:"]
    else:
        model = Trained(ForecastTask(RNNForecaster()), TimeSeriesDataModule(), in_tmp, in_tmp)
        inputs = ["1", "2", "3"]
    monkeypatch.setattr(experiments.predict, "load_trained", lambda reference, root: model)
    assert predict(["run", *inputs, "--explain"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--explain explains classifiers' answers" in err
    assert list(in_tmp.iterdir()) == []
