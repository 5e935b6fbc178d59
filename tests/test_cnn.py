"""The CNN core: shapes for several image sizes, dropout only in training, its options, the channels-last layout,
clear errors, compiling in place. Its task contract (learning, checkpoints) is checked in test_contracts.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cores.cnn import CNNClassifier
from modules.classification import ClassificationTask
from validation import ConfigError


@pytest.mark.parametrize(
    ("image_shape", "channels"), [((1, 28, 28), (32, 64)), ((3, 32, 32), (16, 32, 64)), ((1, 8, 8), (8, 16))]
)
def test_output_shape_and_finite(image_shape: tuple[int, int, int], channels: tuple[int, ...]) -> None:
    model = CNNClassifier(image_shape=image_shape, num_classes=7, channels=channels)
    logits = model(torch.randn(5, *image_shape))
    assert logits.shape == (5, 7)
    assert torch.isfinite(logits).all()


def test_deterministic_in_eval_mode_stochastic_in_train_mode() -> None:
    torch.manual_seed(0)
    model = CNNClassifier(image_shape=(1, 16, 16), channels=(8,), dropout=0.5)
    images = torch.randn(8, 1, 16, 16)
    model.eval()
    assert torch.equal(model(images), model(images))
    model.train()
    assert not torch.equal(model(images), model(images))  # dropout is active while training


def test_options_change_the_layers() -> None:
    plain = CNNClassifier(image_shape=(1, 16, 16), channels=(8, 8), pool="avg", batch_norm=False)
    kinds = {type(layer) for layer in plain.modules()}
    assert nn.AvgPool2d in kinds and nn.MaxPool2d not in kinds
    assert nn.BatchNorm2d not in kinds
    assert all(conv.bias is not None for conv in plain.modules() if isinstance(conv, nn.Conv2d))
    normed = CNNClassifier(image_shape=(1, 16, 16), channels=(8, 8), kernel_size=5)
    convs = [conv for conv in normed.modules() if isinstance(conv, nn.Conv2d)]
    assert len(convs) == 4 and all(conv.kernel_size == (5, 5) and conv.bias is None for conv in convs)
    shallow = CNNClassifier(image_shape=(1, 16, 16), channels=(8, 16, 32), depths=(1, 2, 3))
    stages = [[m for m in stage.modules() if isinstance(m, nn.Conv2d)] for stage in shallow.features]
    assert [len(convs) for convs in stages] == [1, 2, 3]
    assert [convs[-1].out_channels for convs in stages] == [8, 16, 32]
    assert shallow(torch.randn(2, 1, 16, 16)).shape == (2, 10)


def test_channels_last_layout_gives_the_same_outputs() -> None:
    torch.manual_seed(0)
    nhwc = ClassificationTask(CNNClassifier(image_shape=(3, 16, 16), channels=(8, 16), channels_last=True)).eval()
    nchw = ClassificationTask(CNNClassifier(image_shape=(3, 16, 16), channels=(8, 16), channels_last=False)).eval()
    nchw.load_state_dict(nhwc.state_dict())
    conv = nhwc.net.features[0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    images = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(nhwc(images), nchw(images), rtol=1e-4, atol=1e-5)


def test_too_many_stages_for_the_image_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="too small for 4 pooling stages; use at most 3"):
        CNNClassifier(image_shape=(1, 8, 8), channels=(8, 8, 8, 8))
    with pytest.raises(ConfigError, match="kernel_size must be odd"):
        CNNClassifier(image_shape=(1, 8, 8), kernel_size=4)
    with pytest.raises(ConfigError, match="depths needs one count of at least 1 per entry of channels"):
        CNNClassifier(image_shape=(1, 8, 8), channels=(8, 8), depths=(2,))


@pytest.mark.slow
def test_a_compiled_network_keeps_plain_checkpoint_keys(tmp_path, monkeypatch) -> None:
    """`compile: true` compiles the core in place: its state_dict loads into an uncompiled model as is."""
    # Kernels of its own: Inductor's shared cache can hold kernels built under another instruction-set cap
    # (ATEN_CPU_CAPABILITY, as the no-native-bf16 runs use) that abort when loaded without it.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))

    compiled = ClassificationTask(CNNClassifier(image_shape=(1, 8, 8), num_classes=10), num_classes=10, compile=True)
    compiled.setup("fit")
    images = torch.randn(4, 1, 8, 8)
    plain = ClassificationTask(CNNClassifier(image_shape=(1, 8, 8), num_classes=10), num_classes=10)
    assert list(compiled.state_dict()) == list(plain.state_dict())  # no "_orig_mod." anywhere
    plain.load_state_dict(compiled.state_dict())
    compiled.eval(), plain.eval()
    torch.testing.assert_close(compiled(images), plain(images))  # the compiled forward runs, same numbers
