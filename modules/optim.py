"""Optimizers, learning-rate schedules and weight penalties built from plain settings."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import nn

OptimizerName = Literal["sgd", "adam", "adamw", "rmsprop"]
SchedulerName = Literal["none", "cosine", "onecycle"]


def split_decay_groups(module: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Weights of linear/conv/embedding layers (ndim >= 2) decay; biases and norm scales do not."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in module.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    return decay, no_decay


def layerwise_groups(
    module: nn.Module, lr: float, weight_decay: float, depths: dict[str, int], lr_decay: float
) -> list[dict[str, Any]]:
    """Parameter groups whose learning rate falls with depth: a parameter `depths[name]` layers below the output
    (0: the head, the default for names not in `depths`) learns at lr * lr_decay ** depth (layer-wise
    learning-rate decay, the usual way to fine-tune a pretrained network: the new head learns fastest, the
    embeddings slowest). Weights decay, biases and norm scales do not, as in `split_decay_groups`."""
    grouped: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for name, param in module.named_parameters():
        if param.requires_grad:
            grouped.setdefault((depths.get(name, 0), param.ndim >= 2), []).append(param)
    return [
        {
            "params": params,
            "lr": lr * lr_decay**depth,
            "weight_decay": weight_decay if decays else 0.0,
            "name": f"{'weights' if decays else 'biases_and_norms'}_depth{depth}",
        }
        for (depth, decays), params in sorted(grouped.items())
    ]


def build_optimizer(
    module: nn.Module,
    name: OptimizerName,
    lr: float,
    weight_decay: float,
    momentum: float,
    nesterov: bool,
    betas: tuple[float, float],
    fused: bool = True,
    depths: dict[str, int] | None = None,
    lr_decay: float = 1.0,
) -> torch.optim.Optimizer:
    """`fused`: Adam and AdamW update all parameters in one kernel where the parameters' device has one.
    `depths` and `lr_decay`: layer-wise learning rates (`layerwise_groups`); without them, one rate for all."""
    decay, no_decay = split_decay_groups(module)
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": weight_decay, "name": "weights"},
        {"params": no_decay, "weight_decay": 0.0, "name": "biases_and_norms"},
    ]
    if depths and lr_decay != 1.0:
        groups = layerwise_groups(module, lr, weight_decay, depths, lr_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    # The fused kernel updates every parameter in one pass: on a CPU 3.7x faster than the loop over tensors
    # that torch picks there by default (0.9 vs 3.3 ms per step for the 0.8 M parameters of the Transformer
    # language model, AMD EPYC), which is 5% of its training step.
    fused = fused and all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in decay + no_decay)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas, fused=fused)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, momentum=momentum)
    raise ValueError(f"unknown optimizer {name!r}")


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """LR multiplier: linear from 1/warmup up to 1 over `warmup_steps`, then a half cosine down to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(
    optimizer: torch.optim.Optimizer, name: SchedulerName, total_steps: int, warmup_fraction: float
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A per-step schedule over the whole run (`total_steps` optimizer steps), or None for a constant LR."""
    warmup_steps = round(warmup_fraction * total_steps)
    if name == "none":
        return None
    if name == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, total_steps, warmup_steps))
    if name == "onecycle":
        max_lrs = [group["lr"] for group in optimizer.param_groups]
        # OneCycle needs a warm-up phase: 30% is its own default when none is given.
        pct_start = warmup_fraction if warmup_fraction > 0 else 0.3
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lrs, total_steps=total_steps, pct_start=pct_start
        )
    raise ValueError(f"unknown scheduler {name!r}")


def weight_penalty(params: Iterable[nn.Parameter], l1: float, l2: float) -> torch.Tensor | None:
    """l1 * sum|w| + l2 * sum w^2 over the given weights, or None when both are zero (no extra work)."""
    if l1 == 0.0 and l2 == 0.0:
        return None
    params = list(params)
    penalty = torch.zeros((), device=params[0].device)
    if l1:
        penalty = penalty + l1 * sum(p.abs().sum() for p in params)
    if l2:
        penalty = penalty + l2 * sum(p.pow(2).sum() for p in params)
    return penalty
