"""Pictures of a run's results in its own directory, readable without W&B (an air-gapped cluster, an offline
or disabled tracker), and what `python -m experiments.compare --html` puts on its page:

    <run dir>/report/confusion_val.png   the last validation's confusion matrix (classifiers), and its counts
    <run dir>/report/confusion_val.json  as {"classes": [...], "counts": [[...]]} (rows: true, columns: predicted)
    <run dir>/report/samples_val.png     the first validation examples with true and predicted class (images)
    <run dir>/report/samples_val.txt     ...or as text, where the examples are texts (generated text, outputs)
    <run dir>/report/*_test.*            the same for the test of the best checkpoint

Written once, at the end of training and at the end of testing, from what the task already gives the W&B
media callbacks (`confusion_counts`, `sample_rows`); a task with neither (forecasting) gets no report.
Drawn with Pillow (a few milliseconds; importing matplotlib alone takes ~0.5 s).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from callbacks.wandb_media import first_examples
from modules.task import TaskModule

STAGE_NAMES = {"val": "validation", "test": "test"}
LIGHT, DARK = np.array([247, 251, 255]), np.array([8, 48, 107])  # matplotlib's "Blues" at 0 and 1
RIGHT, WRONG = (26, 150, 65), (215, 25, 28)
MAX_LABEL = 16  # characters of a class name shown


class LocalReport(L.Callback):
    """Writes `<run dir>/report/` (see the module's docstring) at the end of training and of testing.

    Args:
        run_dir: the run directory.
        num_samples: examples shown from the first batch of the stage.
    """

    def __init__(self, run_dir: str, num_samples: int = 16) -> None:
        self.folder = Path(run_dir) / "report"
        self.num_samples = num_samples
        self.batches: dict[str, Any] = {}
        self.counts: dict[str, torch.Tensor] = {}
        self.when: dict[str, str] = {}

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx == 0 and dataloader_idx == 0 and not trainer.sanity_checking:
            self.batches["val"] = first_examples(batch, self.num_samples)

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx == 0 and dataloader_idx == 0:
            self.batches["test"] = first_examples(batch, self.num_samples)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:  # kept, drawn when training ends
            self.keep_counts(trainer, pl_module, "val")
            self.when["val"] = f"after epoch {trainer.current_epoch}, step {trainer.global_step}"

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.keep_counts(trainer, pl_module, "test")
        tested = getattr(trainer, "ckpt_path", None)
        self.when["test"] = f"of {Path(tested).name}" if tested else "of the final weights"
        self.write(trainer, pl_module, "test")

    def keep_counts(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """The stage's confusion counts, before the task resets them (the task's own hook runs after the
        callbacks'); every process takes part in summing them."""
        counts = pl_module.confusion_counts(stage) if isinstance(pl_module, TaskModule) else None
        if counts is not None and trainer.is_global_zero and counts.sum() > 0:
            self.counts[stage] = counts.cpu().clone()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write(trainer, pl_module, "val")  # before Lightning's teardown moves the model off its device

    @rank_zero_only
    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Draw and write the stage's files; a failure to write is a warning, not the end of the run."""
        if not isinstance(pl_module, TaskModule) or trainer.sanity_checking:
            return
        title = f"{STAGE_NAMES[stage]} {self.when.get(stage, '')}".strip()
        files: dict[str, bytes] = {}
        counts = self.counts.pop(stage, None)
        names = [str(name) for name in getattr(trainer.datamodule, "classes", None) or []]  # type: ignore[attr-defined]
        if counts is not None:
            names = names if len(names) == len(counts) else [str(i) for i in range(len(counts))]
            files[f"confusion_{stage}.png"] = png(confusion_picture(counts.numpy(), names, title), title)
            files[f"confusion_{stage}.json"] = (
                json.dumps({"classes": names, "counts": counts.tolist()}) + "\n"
            ).encode()
        batch = self.batches.pop(stage, None)
        table = None if batch is None else sample_table(pl_module, batch, trainer.datamodule)  # type: ignore[attr-defined]
        if table is not None:
            columns, rows = table
            if any(isinstance(cell, np.ndarray) for row in rows for cell in row):
                files[f"samples_{stage}.png"] = png(samples_picture(columns, rows, title), title)
            else:
                files[f"samples_{stage}.txt"] = samples_text(columns, rows, title).encode()
        try:
            self.folder.mkdir(exist_ok=True)
            for name, content in files.items():
                temporary = self.folder / f".{name}.tmp"
                temporary.write_bytes(content)
                os.replace(temporary, self.folder / name)
        except OSError as error:
            print(f"warning: the run's {STAGE_NAMES[stage]} report was not written: {error}", file=sys.stderr)


def sample_table(pl_module: TaskModule, batch: Any, datamodule: Any) -> tuple[list[str], list[list]] | None:
    """The task's sample rows for `batch`, computed in eval mode on the model's device."""
    batch = type(batch)(t.to(pl_module.device) if isinstance(t, torch.Tensor) else t for t in batch)
    training = pl_module.training
    pl_module.eval()
    try:
        with torch.inference_mode():
            return pl_module.sample_rows(batch, datamodule)
    finally:
        pl_module.train(training)


# Pictures


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's own font at `size` pixels (its fixed small bitmap font where Pillow lacks FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def text_width(text: str, typeface: Any) -> int:
    left, _, right, _ = typeface.getbbox(text)
    return int(right - left)


def png(image: Image.Image, title: str) -> bytes:
    """The image as PNG bytes, its title in the file's metadata (a tEXt chunk "Title")."""
    import io

    info = PngImagePlugin.PngInfo()
    info.add_text("Title", title)
    buffer = io.BytesIO()
    image.save(buffer, format="png", pnginfo=info)
    return buffer.getvalue()


def shade(share: float) -> tuple[int, int, int]:
    """White to dark blue as `share` goes from 0 to 1."""
    r, g, b = (LIGHT + (DARK - LIGHT) * min(max(share, 0.0), 1.0)).round().astype(int)
    return int(r), int(g), int(b)


def confusion_geometry(names: list[str]) -> tuple[int, int, int]:
    """(left, top, cell): where the grid of `confusion_picture` starts and its cells' size in pixels."""
    cell = int(np.clip(480 // max(len(names), 1), 12, 48))
    label = max(text_width(name[:MAX_LABEL], font(12)) for name in names) + 8
    return 24 + label, 52 + label, cell


def confusion_picture(counts: np.ndarray, names: list[str], title: str) -> Image.Image:
    """(K, K) counts, rows true and columns predicted -> a grid shaded by each cell's share of its row (of the
    true class's examples), counts written in cells large enough, class names along both sides."""
    left, top, cell = confusion_geometry(names)
    size = len(names)
    width = max(left + size * cell + 16, 360)
    image = Image.new("RGB", (width, top + size * cell + 16), "white")
    draw = ImageDraw.Draw(image)
    total, right = int(counts.sum()), int(np.trace(counts))
    draw.text((8, 4), f"{title}: confusion matrix", fill="black", font=font(14))
    draw.text(
        (8, 22),
        f"{total} examples, accuracy {right / max(total, 1):.3f}; shade: share of the row",
        fill="black",
        font=font(12),
    )
    labels, small = font(12), font(max(8, min(14, cell * 2 // 5)))
    draw.text((left, 38), "predicted", fill="black", font=labels)
    rows = counts.sum(1, keepdims=True)
    shares = counts / np.maximum(rows, 1)
    for t in range(size):
        y = top + t * cell
        draw.text((left - 4, y + cell // 2), names[t][:MAX_LABEL], fill="black", font=labels, anchor="rm")
        for p in range(size):
            x = left + p * cell
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=shade(float(shares[t, p])), outline=(220, 220, 220))
            if cell >= 20 and counts[t, p]:
                colour = "white" if shares[t, p] > 0.5 else "black"
                draw.text((x + cell // 2, y + cell // 2), str(int(counts[t, p])), fill=colour, font=small, anchor="mm")
    for p in range(size):  # column names, turned upright: drawn on a strip, rotated
        name = names[p][:MAX_LABEL]
        strip = Image.new("RGB", (text_width(name, labels) + 4, 16), "white")
        ImageDraw.Draw(strip).text((0, 8), name, fill="black", font=labels, anchor="lm")
        turned = strip.rotate(90, expand=True)
        image.paste(turned, (left + p * cell + (cell - turned.width) // 2, top - 4 - turned.height))
    turned = Image.new("RGB", (40, 16), "white")
    ImageDraw.Draw(turned).text((0, 8), "true", fill="black", font=labels, anchor="lm")
    image.paste(turned.rotate(90, expand=True), (2, top))
    return image


def caption_cells(columns: list[str], row: list) -> list[str]:
    return [
        f"{column}: {cell:.2f}" if isinstance(cell, float) else f"{column}: {cell}"
        for column, cell in zip(columns, row, strict=True)
        if not isinstance(cell, np.ndarray)
    ]


def samples_picture(columns: list[str], rows: list[list], title: str, per_line: int = 8) -> Image.Image:
    """Rows holding an image (uint8 (H, W) or (H, W, C)) -> a grid of the images, each above its row's other
    cells; framed green where "true" equals "predicted", red where not."""
    typeface = font(11)
    images = [next(cell for cell in row if isinstance(cell, np.ndarray)) for row in rows]
    scale = max(1, 96 // max(max(image.shape[:2]) for image in images))
    captions = [[text[:22] for text in caption_cells(columns, row)] for row in rows]
    tile_w = max(
        max(image.shape[1] for image in images) * scale, *(text_width(t, typeface) for c in captions for t in c)
    )
    tile_w += 12
    tile_h = max(image.shape[0] for image in images) * scale + 14 * max(map(len, captions)) + 16
    across = min(per_line, len(rows))
    down = -(-len(rows) // across)
    picture = Image.new("RGB", (max(across * tile_w + 8, 300), 30 + down * tile_h), "white")
    draw = ImageDraw.Draw(picture)
    draw.text((8, 6), f"{title}: {len(rows)} examples", fill="black", font=font(14))
    for index, (pixels, caption, row) in enumerate(zip(images, captions, rows, strict=True)):
        x, y = 4 + (index % across) * tile_w, 30 + (index // across) * tile_h
        shown = Image.fromarray(pixels.squeeze(-1) if pixels.ndim == 3 and pixels.shape[-1] == 1 else pixels)
        shown = shown.convert("RGB").resize(
            (pixels.shape[1] * scale, pixels.shape[0] * scale), Image.Resampling.NEAREST
        )
        cells = dict(zip(columns, row, strict=True))
        if "true" in cells and "predicted" in cells:
            frame = RIGHT if cells["true"] == cells["predicted"] else WRONG
            draw.rectangle((x, y, x + shown.width + 5, y + shown.height + 5), fill=frame)
        picture.paste(shown, (x + 3, y + 3))
        for line, text in enumerate(caption):
            draw.text((x, y + shown.height + 8 + 14 * line), text, fill="black", font=typeface)
    return picture


def samples_text(columns: list[str], rows: list[list], title: str) -> str:
    """Rows of text cells, one block per example."""
    blocks = [f"{title}: {len(rows)} examples"]
    for number, row in enumerate(rows, 1):
        lines = [f"--- example {number}"] + [
            f"{column}: {cell:.4g}" if isinstance(cell, float) else f"{column}: {cell}"
            for column, cell in zip(columns, row, strict=True)
        ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
