"""Lightning's Trainer, with one more precision: "auto", chosen for the machine it runs on."""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
from lightning.fabric.connector import _PRECISION_INPUT

from experiments.hardware import resolve_precision


class Trainer(L.Trainer):
    """`lightning.Trainer` with precision "auto" (every other argument is Lightning's).

    Args:
        precision: "auto" (the default) chooses for this machine: bf16-mixed on GPUs and CPUs that compute
            bf16 natively, 16-mixed (loss scaling) on older GPUs, else 32-true; the run prints its choice and
            why, and config.yaml records it. Or any of Lightning's: 32-true, bf16-mixed, 16-mixed, ...
    """

    def __init__(self, *, precision: _PRECISION_INPUT | Literal["auto"] | None = "auto", **kwargs: Any) -> None:
        choice = resolve_precision(precision, kwargs.get("accelerator", "auto"))
        super().__init__(precision=choice.precision if choice else precision, **kwargs)  # type: ignore[arg-type]
