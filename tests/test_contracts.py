"""Every core keeps its task's contract (`cores/contracts.py`): one test, one line per core.

A line names the core, its own small settings and the task that trains it. The task brings the data's facts
(classes, vocabulary, padding id, ...), given to the task and to the core wherever their `__init__` takes
one of that name, as the command does; they differ from every default, so a core that ignores one fails.
The test then checks, per core:

- it describes itself: every `__init__` argument has a default and is recorded, and `build_core` rebuilds
  the same architecture from its plain-data form;
- the output shapes of its contract; causality for language models and decoders; padding invariance where
  inputs are padded (token classifiers: appended padding; seq2seq: padding the source);
- `generate` (language models) and `greedy_decode` (seq2seq: (B, L), `pad_id` after each <eos>, and each
  token the argmax of the decoder fed the tokens before it);
- inside its task and a real Trainer it overfits one small batch: the loss falls well below its start;
- the task's checkpoint loads with `torch.load(weights_only=True)`, and `load_from_checkpoint(...,
  weights_only=True)` rebuilds a model that gives the same outputs.

Specific properties of single cores (positional encodings, sampling, packing, attention weights) are in
test_sequence_cores.py and test_cnn.py.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cores.contracts import (
    ClassifierCore,
    Core,
    ForecasterCore,
    LanguageModelCore,
    Seq2SeqCore,
    TaggerCore,
    build_core,
)
from modules.classification import ClassificationTask
from modules.forecasting import ForecastTask
from modules.language_model import LanguageModelTask
from modules.seq2seq import Seq2SeqTask
from modules.tagging import IGNORED, TaggingTask
from modules.task import TaskModule

pytestmark = [  # Lightning's notes on a Trainer without validation data, outside SLURM, on a deprecated torch API
    pytest.mark.filterwarnings("ignore:.*no `val_dataloader`"),
    pytest.mark.filterwarnings("ignore:The `srun` command is available"),
    pytest.mark.filterwarnings(r"ignore:.*isinstance\(treespec, LeafSpec\)"),
]

# Special ids unlike the tokenizer's (pad 0, bos 2, eos 3) and every default, so a core that assumes them fails.
PAD, EOS, BOS = 1, 2, 3
FIRST_TOKEN = 4  # ids below are special
VOCAB = 23
CLASSES = 3


@dataclass(frozen=True)
class Task:
    """A task as the command builds it: its class, the core contract it names, the data's facts (as the
    task's datamodule declares them), and a small batch of such data."""

    name: str
    task_class: type[TaskModule]
    contract: type[Core]
    datamodule: str  # class path: its `model_facts` must all be taken by the task or the core
    facts: dict[str, Any]
    batch: Callable[[torch.Generator], tuple[torch.Tensor, ...]]
    # What an untrained core of the contract returns for a batch, in eval mode: shapes, causality, padding.
    check_outputs: Callable[[Any, tuple[torch.Tensor, ...]], None]
    # What a core that has learnt the batch does in eval mode (None: nothing beyond its loss).
    check_learnt: Callable[[Any, tuple[torch.Tensor, ...]], None] | None = None


def token_rows(generator: torch.Generator, rows: int, length: int, min_length: int) -> torch.Tensor:
    """(rows, length) real token ids, each row padded with PAD after its own length (one row is full)."""
    tokens = torch.randint(FIRST_TOKEN, VOCAB, (rows, length), generator=generator)
    lengths = torch.randint(min_length, length + 1, (rows,), generator=generator)
    lengths[0] = length
    tokens[torch.arange(length) >= lengths[:, None]] = PAD
    return tokens


def image_batch(generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    return torch.randn(16, 2, 8, 8, generator=generator), torch.randint(0, CLASSES, (16,), generator=generator)


def text_batch(generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    return token_rows(generator, 16, 10, 3), torch.randint(0, CLASSES, (16,), generator=generator)


def lm_batch(generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    tokens = torch.randint(FIRST_TOKEN, VOCAB, (8, 13), generator=generator)
    return tokens[:, :-1], tokens[:, 1:]


def seq2seq_batch(generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Reverse the source: target = <bos> reversed source <eos>, both padded with PAD."""
    source = token_rows(generator, 16, 5, 2)
    target = torch.full((16, 7), PAD)
    for row, tokens in enumerate(source):
        real = tokens[tokens != PAD]
        target[row, : len(real) + 2] = torch.cat([torch.tensor([BOS]), real.flip(0), torch.tensor([EOS])])
    return source, target


def forecast_batch(generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Windows of 12 steps of two sinusoids of random frequency and phase, and their next 3 steps."""
    frequency = 0.3 + 0.6 * torch.rand(16, 1, 2, generator=generator)
    phase = 6.3 * torch.rand(16, 1, 2, generator=generator)
    series = torch.sin(frequency * torch.arange(15.0)[None, :, None] + phase)
    return series[:, :12], series[:, 12:]


def changed_at(tokens: torch.Tensor, position: int) -> torch.Tensor:
    """A copy with another real token at `position` in every row."""
    changed = tokens.clone()
    changed[:, position] = (changed[:, position] - FIRST_TOKEN + 1) % (VOCAB - FIRST_TOKEN) + FIRST_TOKEN
    return changed


def check_class_logits(core: Any, batch: tuple[torch.Tensor, ...]) -> None:
    inputs = batch[0]
    logits = core(inputs)
    assert logits.shape == (len(inputs), CLASSES) and torch.isfinite(logits).all()
    if not inputs.is_floating_point():  # token ids: appended padding changes nothing
        padded = torch.cat([inputs, torch.full((len(inputs), 4), PAD)], dim=1)
        torch.testing.assert_close(core(padded), logits, atol=1e-5, rtol=1e-4)


def check_every_example_learnt(core: Any, batch: tuple[torch.Tensor, ...]) -> None:
    assert torch.equal(core(batch[0]).argmax(-1), batch[1]), "every example of the batch learnt"


def check_next_token_logits(core: Any, batch: tuple[torch.Tensor, ...]) -> None:
    inputs = batch[0]
    logits = core(inputs)
    assert logits.shape == (*inputs.shape, VOCAB) and torch.isfinite(logits).all()
    after = core(changed_at(inputs, 6))  # positions before 6 cannot see it; 6 on do
    torch.testing.assert_close(after[:, :6], logits[:, :6], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(after[:, 6:], logits[:, 6:], atol=1e-4)
    check_generation(core, inputs[:2, :5])


def check_decoder_logits(core: Any, batch: tuple[torch.Tensor, ...]) -> None:
    source, target = batch
    target_in = target[:, :-1]
    logits = core(source, target_in)
    assert logits.shape == (*target_in.shape, VOCAB) and torch.isfinite(logits).all()
    padded = torch.cat([source, torch.full((len(source), 3), PAD)], dim=1)  # padding the source
    torch.testing.assert_close(core(padded, target_in), logits, atol=1e-5, rtol=1e-4)
    full = target_in[:1].expand(2, -1)  # the longest row: no padding in the decoder input
    after = core(source[:2], changed_at(full, 3))
    before = core(source[:2], full)
    torch.testing.assert_close(after[:, :3], before[:, :3], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(after[:, 3:], before[:, 3:], atol=1e-4)


def check_forecast(core: Any, batch: tuple[torch.Tensor, ...]) -> None:
    window = batch[0]
    forecast = core(window)
    assert forecast.shape == (len(window), FORECAST.facts["horizon"], FORECAST.facts["num_features"])
    assert torch.isfinite(forecast).all()


def check_generation(core: LanguageModelCore, prompt: torch.Tensor) -> None:
    """(B, T) -> (B, T + n), the prompt kept; greedy takes the argmax given all before it, recomputed from
    scratch (for a recurrent core: its carried state equals rereading the whole sequence)."""
    greedy = core.generate(prompt, max_new_tokens=6, temperature=0)
    assert greedy.shape == (2, 11) and torch.equal(greedy[:, :5], prompt)
    for t in range(5, 11):
        assert torch.equal(greedy[:, t], core(greedy[:, :t])[:, -1].argmax(-1)), t
    assert torch.equal(core.generate(prompt, 6, temperature=1.0, top_k=1), greedy)
    sampled = core.generate(prompt, 6, temperature=1.0, top_k=5)
    assert sampled.shape == (2, 11) and sampled.min() >= 0 and sampled.max() < VOCAB


def check_greedy_decode(core: Any, batch: tuple[torch.Tensor, ...]) -> None:
    """(B, L) without <bos>, L <= max_new_tokens; PAD after each row's first <eos>; each token up to it
    is the argmax of the decoder fed <bos> and the tokens before it."""
    source, target = batch
    max_new_tokens = target.shape[1] + 2
    output = core.greedy_decode(source, BOS, EOS, max_new_tokens)
    assert output.dim() == 2 and len(output) == len(source) and 1 <= output.shape[1] <= max_new_tokens
    ended = (output == EOS).cumsum(1) > 0  # at and after each row's first <eos>
    after_eos = torch.cat([torch.zeros_like(ended[:, :1]), ended[:, :-1]], dim=1)
    assert (output[after_eos] == PAD).all()
    assert ended[:, -1].any(), "a decoder trained on this batch ends some outputs with <eos>"
    with torch.no_grad():
        fed = torch.cat([torch.full((len(source), 1), BOS), output[:, :-1]], dim=1)
        argmax = core(source, fed).argmax(-1)
    assert torch.equal(argmax[~after_eos], output[~after_eos])


IMAGES = Task(
    "images",
    ClassificationTask,
    ClassifierCore,
    "datamodules.image.ImageDataModule",
    {"image_shape": (2, 8, 8), "num_classes": CLASSES},
    image_batch,
    check_class_logits,
    check_every_example_learnt,
)
TEXT = Task(
    "text",
    ClassificationTask,
    ClassifierCore,
    "datamodules.text.TextClassificationDataModule",
    {"vocab_size": VOCAB, "pad_id": PAD, "num_classes": CLASSES},
    text_batch,
    check_class_logits,
    check_every_example_learnt,
)
LM = Task(
    "lm",
    LanguageModelTask,
    LanguageModelCore,
    "datamodules.language_model.LanguageModelDataModule",
    {"vocab_size": VOCAB, "pad_id": PAD, "chars_per_token": 1.5},
    lm_batch,
    check_next_token_logits,
)
SEQ2SEQ = Task(
    "seq2seq",
    Seq2SeqTask,
    Seq2SeqCore,
    "datamodules.seq2seq.Seq2SeqDataModule",
    {"vocab_size": VOCAB, "pad_id": PAD, "bos_id": BOS, "eos_id": EOS},
    seq2seq_batch,
    check_decoder_logits,
    check_greedy_decode,
)


def tag_batch(generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Sentences of token ids padded with PAD, each real token's tag its id mod CLASSES, padding's IGNORED."""
    tokens = token_rows(generator, 16, 10, 3)
    return tokens, torch.where(tokens == PAD, IGNORED, tokens % CLASSES)


def check_tag_logits(core: Any, batch: tuple[torch.Tensor, ...]) -> None:
    """(B, T, CLASSES); appended padding changes nothing; a position reads the tokens after it too."""
    tokens = batch[0]
    logits = core(tokens)
    assert logits.shape == (*tokens.shape, CLASSES) and torch.isfinite(logits).all()
    real = tokens != PAD
    padded = core(torch.cat([tokens, torch.full((len(tokens), 4), PAD)], dim=1))[:, : tokens.shape[1]]
    torch.testing.assert_close(padded[real], logits[real], atol=1e-5, rtol=1e-4)
    full = tokens[:1]  # the longest row: its last position is real
    assert not torch.allclose(core(changed_at(full, 9))[:, :9], core(full)[:, :9], atol=1e-4)


def check_every_tag_learnt(core: Any, batch: tuple[torch.Tensor, ...]) -> None:
    tokens, tags = batch
    real = tags != IGNORED
    assert torch.equal(core(tokens).argmax(-1)[real], tags[real]), "every tag of the batch learnt"


TAGS = Task(
    "tagging",
    TaggingTask,
    TaggerCore,
    "datamodules.tagging.TaggingDataModule",
    {"vocab_size": VOCAB, "pad_id": PAD, "num_classes": CLASSES},
    tag_batch,
    check_tag_logits,
    check_every_tag_learnt,
)
FORECAST = Task(
    "forecast",
    ForecastTask,
    ForecasterCore,
    "datamodules.timeseries.TimeSeriesDataModule",
    {"num_features": 2, "horizon": 3},
    forecast_batch,
    check_forecast,
)


@dataclass(frozen=True)
class Line:
    """One core under test: its class path, the task that trains it, its own (small) settings."""

    core: str
    task: Task
    settings: dict[str, Any] = field(default_factory=dict)
    # Whether the batch it overfit is also learnt in eval mode. Not for a deep batch-norm network (a pretrained
    # backbone): 40 steps at 1e-2 move its weights faster than its running statistics follow; its eval mode is
    # checked on real photos in test_pretrained_image.
    learnt_in_eval_mode: bool = True

    @property
    def id(self) -> str:
        variant = "-".join(
            str(value)
            for key, value in self.settings.items()
            if key in ("cell", "pooling", "positional", "architecture", "backbone")
        )
        return self.core.rpartition(".")[2] + (f"-{variant}" if variant else "")


def line(core: str, task: Task, learnt_in_eval_mode: bool = True, **settings: Any) -> Any:
    entry = Line(core, task, settings, learnt_in_eval_mode)
    return pytest.param(entry, id=entry.id)


# Hugging Face models (cores.huggingface.HFClassifier) of a few thousand weights, an encoder and a decoder.
TINY_BERT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
TINY_BERT |= {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
TINY_GPT2 = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "resid_pdrop": 0.0}
TINY_GPT2 |= {"embd_pdrop": 0.0, "attn_pdrop": 0.0, "max_position_embeddings": 64}


LINES = [
    line("cores.cnn.CNNClassifier", IMAGES, channels=(8, 16), hidden_dim=32, dropout=0.0),
    line("cores.vit.ViTClassifier", IMAGES, patch_size=4, dim=32, num_layers=2, num_heads=4),
    line("cores.vit.ViTClassifier", IMAGES, patch_size=2, dim=32, num_heads=4, pooling="cls"),
    line(
        "cores.pretrained_image.PretrainedImageClassifier",
        IMAGES,
        learnt_in_eval_mode=False,
        input_size=32,
        dropout=0.0,
    ),
    line("cores.frame_rnn.FrameRNNClassifier", IMAGES, hidden_dim=16, frame_stack=2, dropout=0.0),
    line("cores.frame_rnn.FrameRNNClassifier", IMAGES, hidden_dim=16, cell="gru", pooling="final", dropout=0.0),
    line("cores.recurrent.RNNClassifier", TEXT, embed_dim=16, hidden_dim=16, cell="lstm", dropout=0.0),
    line("cores.recurrent.RNNClassifier", TEXT, embed_dim=16, hidden_dim=16, cell="gru", dropout=0.0),
    line("cores.cnn1d.SequenceCNNClassifier", TEXT, embed_dim=8, channels=(16, 16), kernel_size=5, dropout=0.0),
    line(
        "cores.recurrent.RNNClassifier", TEXT, embed_dim=16, hidden_dim=16, dropout=0.0, pooling="max", word_dropout=0.1
    ),
    line("cores.recurrent.RNNClassifier", TEXT, embed_dim=16, hidden_dim=16, dropout=0.0, ngram_buckets=64),
    line("cores.transformer.TransformerClassifier", TEXT, dim=32, num_layers=2, num_heads=4, dropout=0.0),
    line("cores.transformer.TransformerClassifier", TEXT, dim=32, num_heads=4, dropout=0.0, pooling="first"),
    line(
        "cores.transformer.TransformerClassifier",
        TEXT,
        dim=32,
        num_heads=4,
        dropout=0.0,
        pooling="max",
        word_dropout=0.1,
        ngram_buckets=64,
    ),
    line("cores.huggingface.HFClassifier", TEXT, architecture="bert", config=TINY_BERT),
    line("cores.huggingface.HFClassifier", TEXT, architecture="gpt2", config=TINY_GPT2),
    line("cores.recurrent.RNNLanguageModel", LM, embed_dim=16, hidden_dim=32, num_layers=2, dropout=0.0),
    line("cores.transformer.TransformerLanguageModel", LM, dim=32, num_layers=2, num_heads=4, max_length=16),
    line("cores.transformer.TransformerLanguageModel", LM, dim=32, num_heads=4, max_length=16, positional="learned"),
    line("cores.transformer.TransformerSeq2Seq", SEQ2SEQ, dim=32, num_layers=2, num_heads=4, max_length=16),
    line("cores.recurrent.RNNSeq2Seq", SEQ2SEQ, embed_dim=16, hidden_dim=32, max_length=16),
    line("cores.recurrent.RNNSeq2Seq", SEQ2SEQ, embed_dim=16, hidden_dim=32, num_layers=2, cell="lstm"),
    line("cores.recurrent.RNNForecaster", FORECAST, hidden_dim=16, num_layers=2, dropout=0.0),
    line("cores.tagger.RNNTagger", TAGS, embed_dim=16, hidden_dim=16, dropout=0.0),
    line("cores.tagger.RNNTagger", TAGS, embed_dim=16, hidden_dim=16, cell="gru", num_layers=1, dropout=0.0),
    line("cores.tagger.TransformerTagger", TAGS, dim=32, num_layers=2, num_heads=4, dropout=0.0),
]

OVERFIT_STEPS = 40
OVERFIT_LR = 1e-2


def core_class(entry: Line) -> type[Core]:
    module_name, _, name = entry.core.rpartition(".")
    return getattr(importlib.import_module(module_name), name)


def taken(cls: type, facts: dict[str, Any]) -> dict[str, Any]:
    """The facts that `cls.__init__` takes, as the command gives them (experiments.cli.give_facts)."""
    parameters = inspect.signature(cls.__init__).parameters
    return {name: value for name, value in facts.items() if name in parameters}


class LossRecorder(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any) -> None:
        self.losses.append(float(outputs["loss"]))


def fit_one_batch(task: TaskModule, batch: tuple[torch.Tensor, ...], root: Path) -> list[float]:
    """Train on the same batch for OVERFIT_STEPS steps through a real Trainer; the loss of every step."""
    recorder = LossRecorder()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=OVERFIT_STEPS,
        logger=False,
        callbacks=[recorder],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=root,
    )
    same_batch = [list(range(len(batch[0])))] * OVERFIT_STEPS  # one epoch of the same batch, in order
    trainer.fit(task, train_dataloaders=DataLoader(TensorDataset(*batch), batch_sampler=same_batch))
    trainer.save_checkpoint(root / "task.ckpt")
    return recorder.losses


def check_self_description(cls: type[Core], core: Core) -> None:
    parameters = [p for name, p in inspect.signature(cls.__init__).parameters.items() if name != "self"]
    assert all(p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD for p in parameters)
    assert all(p.default is not p.empty for p in parameters), "every argument needs a default (the CLI's)"
    assert set(core.hparams) == {p.name for p in parameters}, "save_hyperparameters() records every argument"
    config = core.config()
    assert config["class_path"] == f"{cls.__module__}.{cls.__qualname__}"
    rebuilt = build_core(config)
    assert type(rebuilt) is cls
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in core.state_dict().items()}


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    """Models this small run fastest on one thread; on a busy machine, many times faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("entry", LINES)
def test_core_keeps_its_task_contract(entry: Line, tmp_path: Path) -> None:
    cls = core_class(entry)
    task_kind = entry.task
    assert issubclass(cls, task_kind.contract)
    facts = task_kind.facts
    datamodule_name, _, datamodule_class = task_kind.datamodule.rpartition(".")
    declared = getattr(importlib.import_module(datamodule_name), datamodule_class).model_facts
    assert set(declared) == set(facts)  # the facts here are those the datamodule gives
    core_facts, task_facts = taken(cls, facts), taken(task_kind.task_class, facts)
    assert set(core_facts) | set(task_facts) == set(facts), "every fact of the data is taken by task or core"

    generator = torch.Generator().manual_seed(0)
    batch = task_kind.batch(generator)
    torch.manual_seed(0)
    core = cls(**core_facts, **entry.settings)
    check_self_description(cls, core)
    core.eval()
    with torch.no_grad():
        task_kind.check_outputs(core, batch)

    task = task_kind.task_class(core, **task_facts, lr=OVERFIT_LR, scheduler="none")
    assert task.net is core
    task.train()
    losses = fit_one_batch(task, batch, tmp_path)
    assert len(losses) == OVERFIT_STEPS and all(map(math.isfinite, losses))
    first, last = losses[0], sum(losses[-3:]) / 3
    assert last < 0.3 * first, f"loss {first:.3f} -> {last:.3f} in {OVERFIT_STEPS} steps on one batch"

    task.eval()
    # In eval mode too (batch norm's running statistics, no dropout).
    if task_kind.check_learnt is not None and entry.learnt_in_eval_mode:
        with torch.no_grad():
            task_kind.check_learnt(core, batch)

    path = tmp_path / "task.ckpt"
    checkpoint = torch.load(path, weights_only=True, map_location="cpu")  # plain data and tensors only
    assert checkpoint["hyper_parameters"]["net"] == core.config()
    loaded = task_kind.task_class.load_from_checkpoint(path, weights_only=True, map_location="cpu")
    assert type(loaded.net) is cls and loaded.net.config() == core.config()  # as the checkpoint describes it
    task_settings = {key: value for key, value in task.hparams.items() if key != "net"}
    assert {key: value for key, value in loaded.hparams.items() if key != "net"} == task_settings
    loaded.eval()
    with torch.no_grad():
        expected, got = task(*task.model_inputs(batch)), loaded(*loaded.model_inputs(batch))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_every_core_has_a_line() -> None:
    """A new core in cores/ gets a line above (its contract is what the tasks rely on)."""
    import pkgutil

    import cores

    found = set()
    for module_info in pkgutil.iter_modules(cores.__path__):
        module = importlib.import_module(f"cores.{module_info.name}")
        for value in vars(module).values():
            defined_here = isinstance(value, type) and value.__module__ == module.__name__
            if defined_here and issubclass(value, Core) and module_info.name != "contracts":
                found.add(f"{value.__module__}.{value.__qualname__}")
    listed = {param.values[0].core for param in LINES}
    assert found <= listed, f"cores without a contract line: {sorted(found - listed)}"


def test_a_core_outside_the_project_is_not_built_from_a_checkpoint() -> None:
    """A checkpoint names its core by class path: only firstlight cores are built from one."""
    with pytest.raises(TypeError, match="is not a firstlight core"):
        build_core({"class_path": "torch.nn.Linear", "init_args": {"in_features": 1, "out_features": 1}})
    linear = nn.Linear(1, 1)
    assert build_core(linear) is linear
