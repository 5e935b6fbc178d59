"""Optimizers, schedules, penalties and the settings checks shared by every task."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from cores.cnn import CNNClassifier
from modules.classification import ClassificationTask
from modules.optim import build_optimizer, build_scheduler, split_decay_groups, warmup_cosine, weight_penalty
from validation import ConfigError


def classifier(num_classes: int = 10, core: dict | None = None, **task_options: object) -> ClassificationTask:
    """A small CNN on 8x8 images inside its task; `core` adds to the core's settings."""
    net = CNNClassifier(image_shape=(1, 8, 8), num_classes=num_classes, channels=(4,), **(core or {}))
    return ClassificationTask(net, num_classes=num_classes, **task_options)  # type: ignore[arg-type]


def small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def test_decay_groups_exclude_biases_and_norm_scales() -> None:
    decay, no_decay = split_decay_groups(small_net())
    assert [p.ndim for p in decay] == [4, 2]  # conv and linear weights
    assert all(p.ndim == 1 for p in no_decay) and len(no_decay) == 4  # conv bias, BN weight/bias, linear bias


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("sgd", torch.optim.SGD),
        ("adam", torch.optim.Adam),
        ("adamw", torch.optim.AdamW),
        ("rmsprop", torch.optim.RMSprop),
    ],
)
def test_build_optimizer(name: str, cls: type) -> None:
    optimizer = build_optimizer(small_net(), name, 0.1, 0.01, 0.9, name == "sgd", (0.8, 0.99))  # type: ignore[arg-type]
    assert type(optimizer) is cls
    weights, others = optimizer.param_groups
    assert weights["weight_decay"] == 0.01 and others["weight_decay"] == 0.0
    assert weights["lr"] == 0.1
    if name == "sgd":
        assert weights["nesterov"] and weights["momentum"] == 0.9
    if name in ("adam", "adamw"):
        assert weights["betas"] == (0.8, 0.99)
        assert weights["fused"]  # one kernel for all parameters: the CPU's default loops over tensors


@pytest.mark.parametrize(("precision", "fused"), [("32-true", True), ("bf16-mixed", False)])
def test_clipped_training_in_mixed_precision_uses_an_unfused_optimizer(precision: str, fused: bool) -> None:
    """Lightning refuses to clip a fused optimizer's gradients under mixed precision: there it stays unfused."""
    import lightning as L

    images, labels = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=8)
    task = classifier(optimizer="adamw")
    trainer = L.Trainer(
        max_steps=2, precision=precision, gradient_clip_val=1.0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(task, train_dataloaders=loader)
    assert trainer.global_step == 2
    assert trainer.optimizers[0].param_groups[0]["fused"] is fused


def test_warmup_cosine_shape() -> None:
    values = [warmup_cosine(step, total_steps=100, warmup_steps=10) for step in range(101)]
    assert values[0] == pytest.approx(0.1)
    assert values[9] == pytest.approx(1.0)
    assert values[100] == pytest.approx(0.0, abs=1e-12)
    after_warmup = values[9:]
    assert all(a >= b for a, b in itertools.pairwise(after_warmup))
    assert values[55] == pytest.approx(0.5, abs=1e-9)  # halfway through the cosine


@pytest.mark.parametrize("name", ["cosine", "onecycle"])
def test_schedules_warm_up_then_decay(name: str) -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, name, total_steps=50, warmup_fraction=0.2)  # type: ignore[arg-type]
    assert scheduler is not None
    lrs = []
    for _ in range(50):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    peak = max(range(50), key=lrs.__getitem__)
    assert 8 <= peak <= 11 and lrs[peak] == pytest.approx(1.0, rel=1e-3)
    assert lrs[0] < 0.2 and lrs[-1] < 0.01


def test_no_schedule() -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    assert build_scheduler(optimizer, "none", total_steps=10, warmup_fraction=0.0) is None


def test_weight_penalty_values() -> None:
    weights = [nn.Parameter(torch.tensor([1.0, -2.0])), nn.Parameter(torch.tensor([[3.0]]))]
    assert weight_penalty(weights, 0.0, 0.0) is None
    assert weight_penalty(weights, 0.5, 0.0).item() == pytest.approx(0.5 * 6)
    assert weight_penalty(weights, 0.0, 0.1).item() == pytest.approx(0.1 * 14)
    assert weight_penalty(weights, 0.5, 0.1).item() == pytest.approx(3 + 1.4)


def test_regularized_loss_adds_penalty_on_weights_only() -> None:
    model = classifier(core={"hidden_dim": 8}, l2=0.01)
    loss = torch.tensor(1.0)
    expected = 0.01 * sum(p.pow(2).sum() for p in model.parameters() if p.ndim >= 2)
    assert model.regularized(loss).item() == pytest.approx(1.0 + expected.item(), rel=1e-5)
    assert classifier().regularized(loss) is loss


def test_label_smoothing_raises_the_loss_of_confident_predictions() -> None:
    logits, labels = torch.tensor([[10.0, -10.0]]), torch.tensor([0])
    smooth = classifier(num_classes=2, label_smoothing=0.2)
    sharp = classifier(num_classes=2)
    assert smooth.loss_fn(logits, labels) > sharp.loss_fn(logits, labels) + 1.0


@pytest.mark.parametrize(
    ("core", "options", "message"),
    [
        ({}, {"lr": -0.1}, r"lr must be in \(0.0, inf\), got -0.1"),
        ({}, {"lr": 0.0}, "lr must be in"),
        ({"dropout": 1.5}, {}, "dropout must be in"),
        ({}, {"weight_decay": -1.0}, "weight_decay must be in"),
        ({}, {"momentum": 1.5}, "momentum must be in"),
        ({}, {"label_smoothing": 1.0}, "label_smoothing must be in"),
        ({}, {"num_classes": 1}, "num_classes must be in"),
        ({"hidden_dim": 0}, {}, "hidden_dim"),
        ({}, {"optimizer": "adam", "nesterov": True}, "nesterov needs optimizer 'sgd'"),
    ],
)
def test_bad_settings_are_clear_errors(core: dict, options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        classifier(core=core, **options)


def plain_data(value: object) -> bool:
    if isinstance(value, dict):
        return all(isinstance(key, str) and plain_data(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return all(plain_data(item) for item in value)
    return isinstance(value, int | float | str | bool | type(None))


def test_hyperparameters_are_plain_data() -> None:
    """The task's settings and its core's, as plain data: a checkpoint loads with torch.load(weights_only=True)."""
    model = classifier(core={"dropout": 0.3}, optimizer="sgd", lr=0.1)
    assert plain_data(dict(model.hparams))
    assert model.hparams["optimizer"] == "sgd" and model.hparams["lr"] == 0.1
    assert model.hparams["net"]["class_path"] == "cores.cnn.CNNClassifier"
    assert model.hparams["net"]["init_args"]["dropout"] == 0.3


def test_layerwise_learning_rates_fall_by_lr_decay_per_layer_below_the_head() -> None:
    net = small_net()
    depths = {"0.weight": 2, "0.bias": 2, "1.weight": 1, "1.bias": 1}  # the linear head "3.*" is left at 0
    optimizer = build_optimizer(net, "adamw", 0.1, 0.01, 0.9, False, (0.9, 0.999), depths=depths, lr_decay=0.5)
    by_name = {group["name"]: group for group in optimizer.param_groups}
    assert by_name["weights_depth0"]["lr"] == pytest.approx(0.1)
    assert by_name["biases_and_norms_depth1"]["lr"] == pytest.approx(0.05)
    assert by_name["weights_depth2"]["lr"] == pytest.approx(0.025)
    assert by_name["weights_depth2"]["weight_decay"] == 0.01 and by_name["biases_and_norms_depth2"]["weight_decay"] == 0
    grouped = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in net.parameters())  # each parameter once
    # A cosine schedule scales every group's own rate: the ratios between layers hold all along.
    scheduler = build_scheduler(optimizer, "cosine", total_steps=10, warmup_fraction=0.2)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    rates = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert rates["weights_depth2"] == pytest.approx(rates["weights_depth0"] * 0.25)


def test_without_decay_or_depths_there_is_one_rate_for_all() -> None:
    net = small_net()
    optimizer = build_optimizer(net, "adamw", 0.1, 0.01, 0.9, False, (0.9, 0.999), depths={"0.weight": 3})
    assert [group["name"] for group in optimizer.param_groups] == ["weights", "biases_and_norms"]


def test_freeze_keeps_the_named_parameters_out_of_training() -> None:
    task = classifier(freeze=["features.0.0"])
    frozen = {name for name, param in task.net.named_parameters() if not param.requires_grad}
    assert frozen == {"features.0.0.weight"}  # the first convolution (without bias: batch norm follows)
    optimized = {id(p) for group in split_decay_groups(task) for p in group}
    assert id(task.net.features[0][0].weight) not in optimized


def test_freeze_refuses_a_name_of_no_parameter_with_the_nearest() -> None:
    with pytest.raises(
        ConfigError, match=r"'featurs\.0\.0' names no parameter of the core; did you mean 'features\.0\.0'"
    ):
        classifier(freeze=["featurs.0.0"])


def test_lr_decay_is_a_share_of_the_rate() -> None:
    with pytest.raises(ConfigError, match="lr_decay"):
        classifier(lr_decay=1.5)


def test_mixup_mixes_each_image_with_another_and_the_loss_with_both_labels() -> None:
    from modules.classification import mixed

    torch.manual_seed(0)
    images, labels = torch.randn(6, 1, 8, 8), torch.arange(6)
    blended, first, second, share = mixed(images, labels, alpha=0.4)
    assert 0 <= share <= 1 and torch.equal(first, labels)
    assert sorted(second.tolist()) == labels.tolist()  # a permutation of the batch's labels
    assert torch.allclose(blended, share * images + (1 - share) * images[second])  # labels are the indices here
    task = classifier(mixup=0.4)
    torch.manual_seed(1)
    loss = task.shared_step((images, labels), "train")
    torch.manual_seed(1)  # the same draw, by hand
    blended, first, second, share = mixed(images, labels, 0.4)
    logits = task.net(blended)
    expected = share * task.loss_fn(logits, first) + (1 - share) * task.loss_fn(logits, second)
    assert torch.allclose(loss, expected)
    task.eval()  # no dropout: evaluation sees the images as they are
    assert torch.allclose(task.shared_step((images, labels), "val"), task.loss_fn(task.net(images), labels))


def test_mixup_refuses_token_inputs() -> None:
    with pytest.raises(ConfigError, match="token ids cannot be mixed"):
        classifier(mixup=0.2, pad_id=0)
