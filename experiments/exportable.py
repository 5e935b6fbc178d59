"""What exporting a trained core needs beyond the core: its inputs (names, dynamic axes, examples) and a
form of it that `torch.export` traces for any batch size and sequence length.

Cores export as they are, except their recurrent encoders (`cores.recurrent.RecurrentEncoder`): packed
sequences (`pack_padded_sequence`, in `RNNClassifier` and the encoder of `RNNSeq2Seq`) have shapes that
depend on the lengths, which `torch.export` (and so the ONNX exporter) cannot trace, and `torch.export`
unrolls `nn.LSTM`/`nn.GRU` over the example's length. `exportable(net)` returns a copy of the core in which
every recurrent encoder runs a step at a time in a `torch.while_loop` (an ONNX `Loop`), each sequence's state
updated at its real positions only: the outputs and final states of packing (zeros at padding; the backward
direction starting from each sequence's own end), with the core's own weights.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cores.positional import PositionalEncoding
from cores.recurrent import RecurrentEncoder, State
from modules.task import ExportInputs, TaskModule
from validation import ConfigError

BATCH = "batch"


@dataclass(frozen=True)
class Signature:
    """The exported graph's inputs and output: names, and for each input its dynamic axes (axis -> name)."""

    inputs: tuple[str, ...]
    output: str
    dynamic: tuple[dict[int, str], ...]
    max_length: int | None  # the longest sequence the core takes (its position table), None: any
    usage: str | None = None  # what a user of the graph does around it (ExportInputs.usage)

    def dynamic_shapes(self) -> tuple[dict[int, torch.export.Dim], ...]:
        """`torch.export`'s form: one `Dim` per name, shared where inputs share a name (the batch)."""
        dims: dict[str, torch.export.Dim] = {}
        for axes in self.dynamic:
            for name in axes.values():
                if name not in dims:  # a sequence no longer than the core's position table
                    dims[name] = torch.export.Dim(name, min=1, max=None if name == BATCH else self.max_length)
        return tuple({axis: dims[name] for axis, name in axes.items()} for axes in self.dynamic)

    def describe(self, shapes: tuple[tuple[int, ...], ...]) -> str:
        """e.g. `tokens (batch, length)`, from the example inputs' shapes."""
        parts = []
        for name, axes, shape in zip(self.inputs, self.dynamic, shapes, strict=True):
            dims = [axes.get(axis, str(size)) for axis, size in enumerate(shape)]
            parts.append(f"{name} ({', '.join(dims)})")
        return ", ".join(parts)


def signature(task: TaskModule, datamodule: Any) -> Signature:
    """The inputs of the task's core, as the task declares them (`TaskModule.export_inputs`)."""
    spec = export_inputs(task, datamodule)
    bound = max_length(task.net) if spec.bounded else None
    return Signature(spec.inputs, spec.output, spec.dynamic, bound, spec.usage)


def export_inputs(task: TaskModule, datamodule: Any) -> ExportInputs:
    facts = {*getattr(task.net, "hparams", {}), *getattr(datamodule, "model_facts", ())}
    spec = task.export_inputs(facts)
    if spec is None:
        raise ConfigError(f"{type(task).__name__} with {type(datamodule).__name__}: no known inputs to export it with")
    return spec


def max_length(net: nn.Module) -> int | None:
    """The longest sequence a core takes: its position table's length (Transformers), else None."""
    lengths = [module.max_length for module in net.modules() if isinstance(module, PositionalEncoding)]
    positions = getattr(net, "max_positions", None)  # Hugging Face cores
    if isinstance(positions, int):
        lengths.append(positions)
    return min(lengths) if lengths else None


def synthetic_inputs(
    task: TaskModule, datamodule: Any, batch_size: int = 4, length: int = 16, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """Inputs made from the data's facts, for when the run's data is not here, as the task makes them
    (`TaskModule.example_inputs`): images of the model's shape, token ids, windows of a series."""
    export_inputs(task, datamodule)  # a task with no known inputs is refused first
    generator = torch.Generator().manual_seed(seed)
    return task.example_inputs(dict(datamodule.hparams), batch_size, length, max_length(task.net), generator)


def resized(inputs: tuple[torch.Tensor, ...], sig: Signature, sizes: dict[str, int]) -> tuple[torch.Tensor, ...]:
    """The inputs with their dynamic dimensions named in `sizes` cut to those sizes (their first rows and
    positions; the last ones repeated where there are too few)."""
    changed = []
    for tensor, axes in zip(inputs, sig.dynamic, strict=True):
        for axis, name in axes.items():
            if name in sizes:
                positions = torch.arange(sizes[name]).clamp(max=tensor.shape[axis] - 1)
                tensor = tensor.index_select(axis, positions)
        changed.append(tensor.contiguous())
    return tuple(changed)


def other_shapes(
    inputs: tuple[torch.Tensor, ...], sig: Signature, minimums: dict[str, int] | None = None
) -> list[tuple[torch.Tensor, ...]]:
    """The inputs at other batch sizes and sequence lengths, to run an exported model at shapes it was not
    traced with: about half the rows at three quarters of the length, and the first row's first position (or
    the fewest the exported model takes, `minimums`: dynamic dimension's name -> smallest size)."""
    least = minimums or {}
    sizes = {
        name: tensor.shape[axis]
        for tensor, axes in zip(inputs, sig.dynamic, strict=True)
        for axis, name in axes.items()
    }

    def smaller(name: str, size: int) -> int:
        if size == 1:
            return max(2, least.get(name, 1))  # larger, then
        return max(size // 2 + 1 if name == BATCH else size - max(1, size // 4), least.get(name, 1))

    half = {name: smaller(name, size) for name, size in sizes.items()}
    return [resized(inputs, sig, half), resized(inputs, sig, {name: least.get(name, 1) for name in sizes})]


class MaskedRecurrentEncoder(nn.Module):
    """A `RecurrentEncoder` for export: the batch runs through each layer and direction in a
    `torch.while_loop` that updates each sequence's state at its real positions only (the first `lengths`;
    all of them without lengths): packing's outputs and final states, without packing, for any length."""

    def __init__(self, encoder: RecurrentEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.lstm = isinstance(encoder.rnn, nn.LSTM)
        if self.lstm and encoder.rnn.proj_size:
            raise ConfigError("an LSTM with proj_size cannot be exported; train it without")

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None, state: State | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, State]:
        rnn, directions = self.encoder.rnn, self.encoder.directions
        positions = torch.arange(x.shape[1], device=x.device)[None, :]  # (1, T)
        # (B, T): True at the positions that update the state
        real = (positions >= 0).expand(x.shape[0], -1) if lengths is None else positions < lengths[:, None]
        if state is None:
            initial_h = initial_c = None
        elif isinstance(state, tuple):
            initial_h, initial_c = state
        else:
            initial_h, initial_c = state, None
        hidden, cells = [], []
        inputs = x
        for layer in range(rnn.num_layers):
            outputs = []
            for direction in range(directions):
                index = layer * directions + direction  # nn.LSTM's order of layers and directions
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                h0 = None if initial_h is None else initial_h[index]
                c0 = None if initial_c is None else initial_c[index]
                out, h, c = self.direction(inputs, real, suffix, direction == 1, h0, c0)
                outputs.append(out)
                hidden.append(h)
                cells.append(c)
            inputs = torch.cat(outputs, dim=-1) if directions > 1 else outputs[0]  # (B, T, dirs * H)
        h_n = torch.stack(hidden)  # (layers * dirs, B, H)
        final = torch.cat(list(h_n[-directions:]), dim=-1)  # last layer, all directions: (B, dirs * H)
        return inputs, final, (h_n, torch.stack(cells)) if self.lstm else h_n

    def direction(
        self,
        x: torch.Tensor,
        real: torch.Tensor,
        suffix: str,
        reverse: bool,
        h0: torch.Tensor | None,
        c0: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One layer, one direction from state (h0, c0) (B, H) (None: zeros): (B, T, in) -> outputs (B, T, H)
        (0 at padding), final h and c (B, H) (GRU: c is h)."""
        rnn = self.encoder.rnn
        w_hh = getattr(rnn, f"weight_hh{suffix}")
        b_hh = getattr(rnn, f"bias_hh{suffix}", None)
        projected = F.linear(x, getattr(rnn, f"weight_ih{suffix}"), getattr(rnn, f"bias_ih{suffix}", None))
        if reverse:  # padding first, then the sequence from its end: the state stays 0 until it starts
            projected, real = projected.flip(1), real.flip(1)
        batch, steps, size = x.shape[0], x.shape[1], w_hh.shape[1]

        def condition(i: torch.Tensor, *carried: torch.Tensor) -> torch.Tensor:
            return i < steps

        def inputs_at(i: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """Position i's input gates (B, gates * H), recurrent gates, and (B, 1) whether it is real."""
            index = i.reshape(1)
            return projected.index_select(1, index).squeeze(1), F.linear(h, w_hh, b_hh), real.index_select(1, index)

        def written(out: torch.Tensor, i: torch.Tensor, keep: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
            return out.index_copy(1, i.reshape(1), torch.where(keep, h, torch.zeros_like(h)).unsqueeze(1))

        def lstm_step(i: torch.Tensor, h: torch.Tensor, c: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, ...]:
            gates_x, gates_h, keep = inputs_at(i, h)
            gate_i, gate_f, gate_g, gate_o = (gates_x + gates_h).chunk(4, dim=1)
            new_c = gate_f.sigmoid() * c + gate_i.sigmoid() * gate_g.tanh()
            new_h = gate_o.sigmoid() * new_c.tanh()
            return i + 1, torch.where(keep, new_h, h), torch.where(keep, new_c, c), written(out, i, keep, new_h)

        def gru_step(i: torch.Tensor, h: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, ...]:
            gates_x, gates_h, keep = inputs_at(i, h)
            x_r, x_z, x_n = gates_x.chunk(3, dim=1)
            h_r, h_z, h_n = gates_h.chunk(3, dim=1)
            reset, update = (x_r + h_r).sigmoid(), (x_z + h_z).sigmoid()
            new_h = (1 - update) * (x_n + reset * h_n).tanh() + update * h
            return i + 1, torch.where(keep, new_h, h), written(out, i, keep, new_h)

        start = torch.zeros((), dtype=torch.long, device=x.device)
        h = x.new_zeros(batch, size) if h0 is None else h0.clone()  # cloned: a loop input aliases nothing
        out = x.new_zeros(batch, steps, size)
        if self.lstm:
            c = x.new_zeros(batch, size) if c0 is None else c0.clone()
            _, h, c, out = torch.while_loop(condition, lstm_step, (start, h, c, out))
        else:
            _, h, out = torch.while_loop(condition, gru_step, (start, h, out))
            c = h
        return (out.flip(1) if reverse else out), h, c


def has_recurrence(net: nn.Module) -> bool:
    return any(isinstance(module, RecurrentEncoder) for module in net.modules())


def exportable(net: nn.Module) -> nn.Module:
    """The core in eval mode, or, where it has recurrent encoders, a copy in which each is a
    `MaskedRecurrentEncoder` (sharing nothing with `net`)."""
    net.eval()
    if not has_recurrence(net):
        return net
    copied = copy.deepcopy(net)
    for module in list(copied.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, RecurrentEncoder):
                setattr(module, name, MaskedRecurrentEncoder(child))
    return copied.eval()
