"""The base of firstlight's datamodules."""

from __future__ import annotations

import lightning as L


class DataModule(L.LightningDataModule):
    """Printing describes the settings only: Lightning's own `__str__` builds every dataloader, which
    would load the data just to show it (jsonargparse prints datamodules while linking arguments)."""

    def __str__(self) -> str:
        settings = ", ".join(f"{name}={value!r}" for name, value in self.hparams.items() if not name.startswith("_"))
        return f"{type(self).__name__}({settings})"

    __repr__ = __str__
