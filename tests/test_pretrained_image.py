"""The ImageNet-pretrained image core (cores/pretrained_image.py): it knows real photos before any training,
takes the data's grey or colour images at their size, freezes its backbone on request, and refuses what it
cannot use in one line."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from validation import ConfigError

pytest.importorskip("timm")  # the pretrained extra

from cores.pretrained_image import PretrainedImageClassifier

# scikit-image's bundled sample photos (BSD-3), and the ImageNet classes that name what is in them. ImageNet has
# no "motorcycle": its nearest classes are the moped and the motor scooter. (Its rocket photo is left out: on
# its launch tower, both networks see a "drilling platform" first.)
PHOTOS = {
    "chelsea.png": {"tabby", "tiger cat", "Egyptian cat"},  # a cat
    "coffee.png": {"espresso", "cup", "coffee mug"},
    "camera.png": {"tripod"},  # the cameraman, at his camera on a tripod
    "motorcycle_left.png": {"moped", "motor scooter"},
}


def sample_photo(name: str) -> torch.Tensor:
    """A photo as the datamodule gives it without standardising: (1, 3, H, W), pixels in [0, 1]."""
    spec = importlib.util.find_spec("skimage")  # located, not imported: only its data files are read
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("needs scikit-image's sample photos (the dev extra)")
    path = Path(spec.submodule_search_locations[0]) / "data" / name
    pixels = np.array(Image.open(path).convert("RGB"))
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope="module", params=["lite0", "lite2"])
def imagenet_model(request: pytest.FixtureRequest) -> PretrainedImageClassifier:
    backbone, weights = f"tf_efficientnet_{request.param}", f"package:efficientnet-{request.param}"
    return PretrainedImageClassifier((3, 224, 224), 1000, backbone=backbone, pretrained=weights).eval()


@pytest.mark.parametrize("photo", list(PHOTOS))
def test_the_pretrained_weights_name_what_is_in_real_photos(
    photo: str, imagenet_model: PretrainedImageClassifier
) -> None:
    """The ImageNet head is kept (1000 classes), and the core resizes the photo (of any size) itself."""
    from torchvision.models import EfficientNet_B0_Weights

    classes = EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"]  # ImageNet's names, shipped in torchvision
    with torch.no_grad():
        probabilities = imagenet_model(sample_photo(photo)).softmax(-1)[0]
    assert classes[int(probabilities.argmax())] in PHOTOS[photo]
    assert float(probabilities.max()) > 0.15  # 150 times chance


def test_grey_images_of_any_size_reach_a_new_head() -> None:
    model = PretrainedImageClassifier(image_shape=(1, 28, 28), num_classes=10, input_size=64)
    images = torch.rand(4, 1, 28, 28)
    logits = model(images)
    assert logits.shape == (4, 10)
    logits.sum().backward()
    assert model.backbone.conv_stem.weight.grad is not None  # fine-tuned whole by default


def test_the_new_head_is_fresh_and_the_backbone_pretrained() -> None:
    from safetensors.torch import load_file

    from packaged import packaged_folder

    pretrained = load_file(str(packaged_folder("package:efficientnet-lite0") / "model.safetensors"))
    model = PretrainedImageClassifier(image_shape=(1, 28, 28), num_classes=10)
    state = model.backbone.state_dict()
    assert torch.equal(state["conv_stem.weight"], pretrained["conv_stem.weight"])
    assert torch.equal(state["blocks.6.0.conv_pwl.weight"], pretrained["blocks.6.0.conv_pwl.weight"])
    assert state["classifier.weight"].shape == (10, 1280)


def test_a_frozen_backbone_trains_only_its_head_and_keeps_its_statistics() -> None:
    model = PretrainedImageClassifier(image_shape=(3, 32, 32), num_classes=3, input_size=64, freeze_backbone=True)
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    assert trainable == {"backbone.classifier.weight", "backbone.classifier.bias"}
    model.train()
    statistics = model.backbone.bn1.running_mean.clone()
    model(torch.rand(8, 3, 32, 32))
    assert torch.equal(model.backbone.bn1.running_mean, statistics)  # batch norms in eval mode
    assert model.backbone.classifier.training


def test_layer_depths_fall_from_the_stem_to_the_head() -> None:
    model = PretrainedImageClassifier(image_shape=(3, 32, 32), num_classes=3, pretrained=None)
    depths = model.layer_depths()
    assert "backbone.classifier.weight" not in depths  # the head: depth 0
    stem, first, last, top = (
        depths["backbone.conv_stem.weight"],
        depths["backbone.blocks.0.0.conv_dw.weight"],
        depths["backbone.blocks.6.0.conv_pwl.weight"],
        depths["backbone.conv_head.weight"],
    )
    assert stem > first > last > top == 1


def test_a_checkpoint_rebuilds_the_core_without_the_pretrained_weights() -> None:
    model = PretrainedImageClassifier(image_shape=(1, 28, 28), num_classes=10)
    assert model.config()["init_args"]["pretrained"] is None


def test_standardised_data_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"--data\.standardize false"):
        PretrainedImageClassifier(image_shape=(1, 28, 28), num_classes=10, standardized=True)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"backbone": "efficientnet_lite9"}, "not a timm architecture"),
        ({"backbone": "resnet18"}, "are not resnet18's"),  # weights of another architecture
    ],
)
def test_what_the_core_cannot_use_is_refused_in_one_line(arguments: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        PretrainedImageClassifier(**({"image_shape": (3, 32, 32), "num_classes": 3} | arguments))
    assert "\n" not in str(error.value)


def test_a_pickle_that_is_not_plain_tensors_is_refused(tmp_path: Path) -> None:
    import pickle

    path = tmp_path / "weights.pth"
    path.write_bytes(pickle.dumps(Path("not a tensor")))  # an object whose loading would run code
    with pytest.raises(ConfigError, match="firstlight never unpickles"):
        PretrainedImageClassifier(image_shape=(3, 32, 32), num_classes=3, pretrained=str(path))


def test_weights_saved_by_a_run_load_as_a_file_or_a_folder(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    trained = PretrainedImageClassifier(image_shape=(3, 32, 32), num_classes=3, pretrained=None)
    save_file(trained.backbone.state_dict(), str(tmp_path / "model.safetensors"))
    for source in (tmp_path, tmp_path / "model.safetensors"):
        model = PretrainedImageClassifier(image_shape=(3, 32, 32), num_classes=3, pretrained=str(source))
        assert torch.equal(model.backbone.classifier.weight, trained.backbone.classifier.weight)  # its head too
