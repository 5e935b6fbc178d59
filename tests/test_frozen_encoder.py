"""A pretrained text encoder kept frozen under a trained head (cores/huggingface.py): the encoder's weights stay,
it runs without dropout, and with `cache_encoded` each text's pooled vector is computed once, yet never where
gradients must reach the encoder's inputs, in an export, or in a copy. Tiny models built here, nothing loaded."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F

from analysis.quantize import quantize_dynamic_int8
from cores.huggingface import HFClassifier
from validation import ConfigError

pytest.importorskip("transformers")  # the hf extra

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
# Three texts, padded with 0: the third is the first with two more tokens.
TEXTS = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 0, 0, 0], [5, 6, 7, 8, 9]])


def tiny(architecture: str = "bert", **options: object) -> HFClassifier:
    torch.manual_seed(0)  # the same weights at every call
    return HFClassifier(vocab_size=100, pad_id=0, architecture=architecture, config=TINY, pooling="mean", **options)


def encoded_rows(core: HFClassifier) -> list[int]:
    """The number of texts of each pass through the core's encoder, recorded from now on."""
    rows: list[int] = []
    encode = core.mean_pooled

    def counted(tokens: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        rows.append(tokens.shape[0])
        return encode(tokens, real)

    core.mean_pooled = counted  # type: ignore[method-assign]
    return rows


def test_a_frozen_encoder_keeps_its_weights_and_runs_without_dropout_while_the_head_trains() -> None:
    core = tiny(freeze_encoder=True).train()
    assert not core.model.base_model.training and core.model.dropout.training
    before = {name: tensor.clone() for name, tensor in core.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in core.parameters() if p.requires_grad], lr=0.5)
    F.cross_entropy(core(TEXTS), torch.tensor([0, 1, 0])).backward()
    optimizer.step()
    changed = {name for name, tensor in core.state_dict().items() if not torch.equal(tensor, before[name])}
    assert changed == {"model.classifier.weight", "model.classifier.bias"}
    real = TEXTS != 0
    assert torch.equal(core.mean_pooled(TEXTS, real), core.mean_pooled(TEXTS, real))  # no dropout in the encoder


def test_each_text_is_encoded_once_whatever_its_padding_and_the_answers_are_unchanged() -> None:
    cached, plain = tiny(freeze_encoder=True, cache_encoded=True).eval(), tiny(freeze_encoder=True).eval()
    rows = encoded_rows(cached)
    with torch.no_grad():
        assert torch.allclose(cached(TEXTS), plain(TEXTS), atol=1e-6)
        # The second text padded further, the first, and a new one: only the new one is encoded.
        batch = torch.tensor([[8, 9, 0, 0, 0, 0, 0], [5, 6, 7, 0, 0, 0, 0], [10, 11, 12, 0, 0, 0, 0]])
        assert torch.allclose(cached(batch), plain(batch), atol=1e-5)
    assert rows == [3, 1]
    cached.train()  # and while training, which is what it is for
    cached(TEXTS).sum().backward()
    assert rows == [3, 1]
    assert cached.model.classifier.weight.grad is not None


def test_encodings_are_not_reused_for_gradients_exports_copies_or_another_precision() -> None:
    core = tiny(freeze_encoder=True, cache_encoded=True).eval()
    rows = encoded_rows(core)
    with torch.no_grad():
        core(TEXTS)
    core(TEXTS)  # eval mode with gradients: attributions, whose gradients must reach the embeddings
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # transformers' shape checks, frozen by the trace
        torch.jit.trace(core, TEXTS, check_trace=False)  # an export traces the encoder, not the cache
        with torch.autocast("cpu", dtype=torch.bfloat16):
            core(TEXTS)  # another precision: encoded anew
    assert rows == [3, 3, 3, 3]
    hooked = core.model.base_model.embeddings.register_forward_hook(lambda module, args, output: None)
    with torch.no_grad():
        core(TEXTS)  # observed: attributions read the embeddings through a hook, without gradients at first
    hooked.remove()
    assert rows == [3, 3, 3, 3, 3]
    copied = copy.deepcopy(core)
    assert len(copied.encoded) == 0 and len(core.encoded) == 3
    int8 = quantize_dynamic_int8(core)  # a copy whose encoder differs: never answered from the float one's cache
    assert len(int8.encoded) == 0


@pytest.mark.parametrize(
    "options",
    [{"cache_encoded": True}, {"cache_encoded": True, "freeze_encoder": True, "pooling": "model"}],
    ids=["not frozen", "not mean pooling"],
)
def test_caching_encodings_needs_a_frozen_encoder_and_mean_pooling(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="cache_encoded keeps the pooled vectors of a frozen encoder"):
        HFClassifier(vocab_size=100, config=TINY, **options)  # type: ignore[arg-type]


def test_mean_pooling_gives_an_architecture_with_a_two_layer_head_dropout_and_one_linear_layer() -> None:
    core = tiny("mpnet", freeze_encoder=True)
    assert isinstance(core.model.classifier, torch.nn.Linear) and core.model.classifier.in_features == 32
    assert isinstance(core.model.dropout, torch.nn.Dropout)
    assert core.model.base_model.pooler is None
    assert core(TEXTS).shape == (3, 2)
    rebuilt = HFClassifier(**core.config()["init_args"])  # as a checkpoint rebuilds it
    rebuilt.load_state_dict(core.state_dict())  # strict: the same tensors
