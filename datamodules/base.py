"""The base of firstlight's datamodules, and what a datamodule tells the model it trains."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import lightning as L


class DataModule(L.LightningDataModule):
    """A LightningDataModule that declares its facts for the model.

    `model_facts` names the properties of the data that a model needs to be built (`num_classes`,
    `vocab_size`, `pad_id`, ...). The command gives each to the task and to its core wherever their
    `__init__` takes an argument of that name, so neither the user nor the CLI repeats them; a datamodule
    with a new fact declares it here, next to the property, and a core takes an argument of that name.
    `optional_facts` are given the same way, to the cores that take them, while most need not (whether
    images are standardised: a pretrained backbone that normalises them itself checks it).

    Printing describes the settings only: Lightning's own `__str__` builds every dataloader, which would
    load the data just to show it.
    """

    model_facts: ClassVar[tuple[str, ...]] = ()
    optional_facts: ClassVar[tuple[str, ...]] = ()
    # What new inputs `encode_inputs` takes (`python -m experiments.predict`): a kind of the table in
    # `datamodules/input_kinds.py` ("images", "audio", "texts", "sequences", "series"); "" where it takes none.
    input_kind: ClassVar[str] = ""

    def facts(self) -> dict[str, Any]:
        """The values of `model_facts` and `optional_facts` (reading them may load the data or train a
        tokenizer)."""
        return {name: getattr(self, name) for name in (*self.model_facts, *self.optional_facts)}

    def inference_state(self) -> dict[str, Any]:
        """What turning new inputs into model inputs (and outputs into answers) needs beyond the datamodule's
        arguments, as plain data: the training split's statistics, the class names, the tokenizer. Lightning
        saves it in every checkpoint (`state_dict`), so a checkpoint predicts on its own, wherever it goes."""
        return {}

    def load_inference_state(self, state: dict[str, Any]) -> None:
        """Take back `inference_state()` into a datamodule built from the checkpoint's arguments, whose data
        need not be on this machine."""

    def encode_inputs(self, items: list[Any]) -> Any:
        """New inputs of `input_kind` (decoded images, texts, ...) -> one batch of model inputs."""
        raise NotImplementedError(f"{type(self).__name__} takes no new inputs")

    def prepared_dataset(self) -> Path | None:
        """The prepared folder (`python -m experiments.prepare`) the data streams from, if it does."""
        return None

    def loading_note(self) -> str:
        """A line for the start note on how the data reaches training (in memory, streamed) and why."""
        return ""

    def state_dict(self) -> dict[str, Any]:
        return {"inference": self.inference_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore on resume: a resumed run rebuilds its data, statistics and tokenizer itself."""

    def __str__(self) -> str:
        settings = ", ".join(f"{name}={value!r}" for name, value in self.hparams.items() if not name.startswith("_"))
        return f"{type(self).__name__}({settings})"

    __repr__ = __str__
