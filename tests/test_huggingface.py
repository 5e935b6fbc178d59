"""Hugging Face models as cores (cores/huggingface.py) and pretrained tokenizers for text (datamodules/):
through the command with W&B offline, resumed, loaded from a directory saved in the test, and refused in one
line when the input is wrong. Everything is built here; nothing is downloaded."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from cores.huggingface import HFClassifier
from datamodules.text import TextClassificationDataModule
from datamodules.tokenization import load_pretrained_tokenizer, load_tokenizer, tokenizer_from_json
from experiments.run import main
from modules.classification import ClassificationTask
from tests.helpers import run_cli, wandb_summary
from validation import NOT_PLAIN, ConfigError

TINY = "{hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 64}"
SHORT = ["--trainer.max_epochs", "5", "--trainer.limit_val_batches", "2", "--trainer.log_every_n_steps", "2"]
SHORT += ["--data.batch_size", "16", "--model.lr", "3e-3"]  # 11 steps an epoch
PAD, CLS, SEP = 3, 1, 2  # the pretrained tokenizer's ids: unlike firstlight's <pad>=0, <bos>=2
SAVED_LABELS = 5  # the saved model's head: the data has 2 classes


def reviews(path: Path, rows: int = 240) -> str:
    """A CSV of short reviews, each with one word that gives its label away (learnable in a few steps)."""
    rng = random.Random(0)
    words = {"pos": ["good", "great", "superb", "lovely"], "neg": ["bad", "awful", "dull", "boring"]}
    filler = ["the", "a", "film", "movie", "plot", "story", "was", "is", "really", "quite", "very", "acting"]
    lines = ["text,label"]
    for _ in range(rows):
        label = rng.choice(["pos", "neg"])
        text = [*rng.choices(filler, k=rng.randint(3, 9)), rng.choice(words[label])]
        rng.shuffle(text)
        lines.append(f"{' '.join(text)},{label}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> str:
    return reviews(tmp_path_factory.mktemp("data") / "reviews.csv")


def save_pretrained(directory: Path, texts: list[str]) -> Path:
    """A WordPiece tokenizer trained on `texts` ([PAD] at 3, [CLS] 1, [SEP] 2, framing "[CLS] $A [SEP]") and a
    tiny BERT classifier for SAVED_LABELS classes with that vocabulary, both saved with save_pretrained."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedTokenizerFast

    specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", CLS), ("[SEP]", SEP)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )
    wrapped.save_pretrained(directory)
    config = AutoConfig.for_model(
        "bert",
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=SAVED_LABELS,
        pad_token_id=PAD,
    )
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def pretrained(data: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = [line.rsplit(",", 1)[0] for line in Path(data).read_text().splitlines()[1:]]
    return save_pretrained(tmp_path_factory.mktemp("pretrained") / "tiny-bert", texts)


def command(data: str, *args: str) -> list[str]:
    """The bert_sentiment preset on the reviews CSV, at a tiny size."""
    return ["--config", "bert_sentiment", "--data.source", data, "--model.net.config", TINY, *SHORT, *args]


def train_steps(run_dir: Path) -> list[list[int]]:
    """trainer/global_step of every train/loss record, per offline W&B run segment (one per process)."""
    segments = []
    for offline in sorted((run_dir / "wandb").glob("offline-run-*")):
        output = subprocess.run(
            ["wandb", "leet", "inspect", "--json", str(offline)], capture_output=True, text=True, check=True
        ).stdout
        records = [json.loads(line) for line in output.splitlines() if line.strip()]
        items = [r["history"]["item"] for r in records if r["type"] == "history"]
        segments.append([int(i["trainer/global_step"]) for i in items if "train/loss" in i])
    return segments


@pytest.mark.slow
def test_a_tiny_bert_trains_with_wandb_logging_and_its_checkpoint_loads_by_itself(data: str, tmp_path: Path) -> None:
    result = run_cli(*command(data), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (run_dir,) = (tmp_path / "runs" / "bert_sentiment").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test/acc"] > 0.7  # one word decides each label; chance is about 0.5

    logged = wandb_summary(run_dir)  # the W&B run: the resolved config and the final metrics
    net = logged["config"]["model"]["init_args"]["net"]
    assert net["class_path"] == "cores.huggingface.HFClassifier" and net["init_args"]["config"]["hidden_size"] == 32
    assert logged["summary"]["test/acc"] == pytest.approx(summary["test/acc"])
    (steps,) = train_steps(run_dir)
    assert steps and steps == sorted(steps)

    last = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True, map_location="cpu")  # plain data and tensors only
    core = checkpoint["hyper_parameters"]["net"]["init_args"]
    assert core["architecture"] == "bert" and core["pad_id"] == 0 and core["vocab_size"] > 4  # the data's
    model = ClassificationTask.load_from_checkpoint(last, weights_only=True, map_location="cpu")
    assert isinstance(model.net, HFClassifier)
    assert type(model.net.model).__name__ == "BertForSequenceClassification"


@pytest.mark.slow
def test_a_stopped_run_resumes_from_its_checkpoint_and_ends_at_the_same_step(data: str, tmp_path: Path) -> None:
    steps = ["--trainer.max_steps", "12", "--trainer.max_epochs", "-1"]
    stop = ["--trainer.callbacks+=tests.signals.SignalAt", "--trainer.callbacks.step=5"]
    stopped = run_cli(*command(data, *steps, *stop), cwd=tmp_path)
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    (run_dir,) = (tmp_path / "runs" / "bert_sentiment").iterdir()
    step = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert step in (5, 6) and not (run_dir / "summary.json").exists()

    resumed = run_cli("--run.resume", str(run_dir), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming {run_dir} from last.ckpt" in resumed.stderr and "Traceback" not in resumed.stderr
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 12
    before, after = train_steps(run_dir)  # one W&B run, two offline segments: no step twice, none missing
    assert before and after and all(s < step for s in before) and all(s >= step for s in after)
    assert after[-1] == 11  # the last step logged is the 12th (counted from 0)


def test_a_pretrained_tokenizer_frames_and_pads_texts_as_its_model_was_trained(data: str, pretrained: Path) -> None:
    datamodule = TextClassificationDataModule(source=data, pretrained_tokenizer=str(pretrained), max_length=6)
    facts = datamodule.facts()
    tokenizer = datamodule.tokenizer
    assert tokenizer is not None
    assert facts["pad_id"] == PAD and facts["vocab_size"] == tokenizer.vocab_size
    tokens, _ = datamodule.fetch("train", torch.arange(16))
    real = tokens != PAD
    lengths = real.sum(1)
    assert (tokens[:, 0] == CLS).all() and (tokens[torch.arange(16), lengths - 1] == SEP).all()
    assert torch.equal(real, torch.arange(tokens.shape[1]) < lengths[:, None])  # padded on the right only
    assert lengths.max() <= 6 and "[SEP]" not in tokenizer.decode(tokens[0].tolist())
    # The same ids from the tokenizer.json alone, and after a round trip through a checkpoint's text.
    from_file = load_pretrained_tokenizer(str(pretrained / "tokenizer.json"))
    assert from_file.special_ids == tokenizer.special_ids == tokenizer_from_json(tokenizer.to_json()).special_ids
    assert from_file.encode("A GOOD film") == tokenizer.encode("a good film")


def test_firstlight_tokenizers_keep_their_ids(data: str, tmp_path: Path) -> None:
    datamodule = TextClassificationDataModule(source=data)
    assert datamodule.pad_id == 0
    tokens, _ = datamodule.fetch("train", torch.arange(8))
    assert (tokens[:, 0] == 2).all()  # <bos>, and no end token
    tokenizer = datamodule.tokenizer
    assert tokenizer is not None
    tokenizer.save(tmp_path / "tokenizer.json")
    again = load_tokenizer(tmp_path / "tokenizer.json")
    assert again.encode("a good film") == tokenizer.encode("a good film")


def test_a_pretrained_model_loads_its_weights_and_gets_a_head_for_the_data(pretrained: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    saved = AutoModelForSequenceClassification.from_pretrained(pretrained).state_dict()
    vocab_size = load_pretrained_tokenizer(str(pretrained)).vocab_size
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        core = HFClassifier(vocab_size=vocab_size, num_classes=2, pad_id=PAD, pretrained=str(pretrained))
    messages = [str(w.message) for w in caught]
    assert [m for m in messages if "classification head" in m] == [
        f"pretrained model {pretrained} classifies into {SAVED_LABELS} classes, the data into 2: its classification "
        "head (classifier.bias, classifier.weight) is replaced by a new one, randomly initialised"
    ]
    weights = core.model.state_dict()
    assert weights["classifier.weight"].shape == (2, 32)
    for name, tensor in saved.items():
        if not name.startswith("classifier."):
            assert torch.equal(weights[name], tensor), name
    # As a checkpoint names it: the architecture, without the directory, so it rebuilds offline anywhere.
    described = core.config()["init_args"]
    assert described["pretrained"] is None and described["architecture"] == "bert"
    rebuilt = HFClassifier(**described)
    assert {k: v.shape for k, v in rebuilt.model.state_dict().items()} == {k: v.shape for k, v in weights.items()}
    with pytest.raises(ConfigError, match=r"config sets num_attention_heads to 2, pretrained model .* has 4"):
        HFClassifier(vocab_size=vocab_size, pad_id=PAD, pretrained=str(pretrained), config={"num_attention_heads": 2})
    other_dropout = HFClassifier(
        vocab_size=vocab_size, pad_id=PAD, pretrained=str(pretrained), config={"hidden_dropout_prob": 0.3}
    )
    assert other_dropout.model.config.hidden_dropout_prob == 0.3


@pytest.mark.slow
def test_a_model_and_tokenizer_saved_with_save_pretrained_train_through_the_command(
    data: str, pretrained: Path, tmp_path: Path
) -> None:
    args = ["--model.net.config", "{}", "--model.net.pretrained", str(pretrained)]
    result = run_cli(*command(data, *args, "--data.pretrained_tokenizer", str(pretrained)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "its classification head (classifier.bias, classifier.weight) is replaced" in result.stderr
    (run_dir,) = (tmp_path / "runs" / "bert_sentiment").iterdir()
    assert json.loads((run_dir / "summary.json").read_text())["test/acc"] > 0.7
    last = run_dir / "checkpoints" / "last.ckpt"
    core = torch.load(last, weights_only=True)["hyper_parameters"]["net"]["init_args"]
    assert core["pad_id"] == PAD and core["pretrained"] is None  # the tokenizer's padding id, from the data
    moved = pretrained.with_name("moved")  # the checkpoint needs the pretrained directory no more
    pretrained.rename(moved)
    try:
        model = ClassificationTask.load_from_checkpoint(last, weights_only=True, map_location="cpu")
    finally:
        moved.rename(pretrained)
    assert model.net.pad_id == PAD


def bad_inputs(data: str, pretrained: Path, tmp: Path) -> dict[str, tuple[list[str], str]]:
    """(arguments, what the one line says) per mistake."""
    missing = str(tmp / "no-such-model")
    return {
        "missing-model": (["--model.net.pretrained", missing], f"pretrained model {missing} not found"),
        "unknown-architecture": (["--model.net.architecture", "bertt"], "architecture 'bertt' is not a transformers"),
        "wandb-offline": (
            ["--model.net.pretrained", "wandb:me/project/tiny-bert:latest"],
            "is a W&B artifact and W&B is offline (WANDB_MODE)",
        ),
        "missing-tokenizer": (["--data.pretrained_tokenizer", missing], f"pretrained tokenizer {missing} not found"),
        "not-its-tokenizer": (
            ["--model.net.config", "{}", "--model.net.pretrained", str(pretrained)],
            f"--data.pretrained_tokenizer {pretrained}",
        ),
        "unknown-setting": (["--model.net.config", "{hiden_size: 32}"], "did you mean hidden_size?"),
        "heads-do-not-divide": (["--model.net.config.num_attention_heads", "5"], "not a multiple of the number of"),
    }


MISTAKES = ["missing-model", "unknown-architecture", "wandb-offline", "missing-tokenizer", "not-its-tokenizer"]


@pytest.mark.parametrize("mistake", [*MISTAKES, "unknown-setting", "heads-do-not-divide"])
def test_bad_input_is_one_line_exit_2_and_leaves_no_run(
    mistake: str, data: str, pretrained: Path, in_tmp: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    arguments, expected = bad_inputs(data, pretrained, in_tmp)[mistake]
    try:
        code = main(command(data, *arguments))
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0]
    assert "Traceback" not in err
    assert not (in_tmp / "runs").exists()


class Payload:
    """What a foreign pytorch_model.bin can hide: unpickling it runs code (here: creates a file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def test_a_pretrained_folder_whose_weights_hold_pickled_objects_is_one_line(
    data: str, pretrained: Path, in_tmp: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import load_file

    monkeypatch.setenv("WANDB_MODE", "offline")
    unsafe, marker = in_tmp / "unsafe-bert", in_tmp / "code-ran"
    shutil.copytree(pretrained, unsafe)
    weights = load_file(unsafe / "model.safetensors")
    (unsafe / "model.safetensors").unlink()  # the weights as a pickle, as older folders hold them
    torch.save({**weights, "extra": Payload(marker)}, unsafe / "pytorch_model.bin")
    model = [
        "--model.net.config",
        "{}",
        "--model.net.pretrained",
        str(unsafe),
        "--data.pretrained_tokenizer",
        str(unsafe),
    ]
    code = main(command(data, *model))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and lines == [f"error: pretrained model {unsafe}: its weights file is refused: {NOT_PLAIN}"], err
    assert not marker.exists() and not (in_tmp / "runs").exists()
