"""The base of firstlight's datamodules, and what a datamodule tells the model it trains."""

from __future__ import annotations

from typing import Any, ClassVar

import lightning as L


class DataModule(L.LightningDataModule):
    """A LightningDataModule that declares its facts for the model.

    `model_facts` names the properties of the data that a model needs to be built (`num_classes`,
    `vocab_size`, `pad_id`, ...). The command gives each to the task and to its core wherever their
    `__init__` takes an argument of that name, so neither the user nor the CLI repeats them; a datamodule
    with a new fact declares it here, next to the property, and a core takes an argument of that name.

    Printing describes the settings only: Lightning's own `__str__` builds every dataloader, which would
    load the data just to show it.
    """

    model_facts: ClassVar[tuple[str, ...]] = ()

    def facts(self) -> dict[str, Any]:
        """The values of `model_facts` (reading them may load the data or train a tokenizer)."""
        return {name: getattr(self, name) for name in self.model_facts}

    def __str__(self) -> str:
        settings = ", ".join(f"{name}={value!r}" for name, value in self.hparams.items() if not name.startswith("_"))
        return f"{type(self).__name__}({settings})"

    __repr__ = __str__
