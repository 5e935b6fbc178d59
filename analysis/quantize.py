"""Dynamic int8 quantisation of a trained model for CPU inference: its Linear, LSTM and GRU layers.

    int8 = quantize_dynamic_int8(trained.task)      # a copy; the task (or a bare core) given is untouched
    int8(tokens)                                    # the same logits, give or take the int8 rounding

Dynamic quantisation stores the weights of every `nn.Linear`, `nn.LSTM` and `nn.GRU` as int8 (one scale per
weight matrix) and quantises their inputs per call, from each batch's own range, so it needs no calibration
data; matrix products run in int8 on the CPU (fbgemm / oneDNN, `torch.backends.quantized.engine`).
Embeddings, convolutions and norms stay fp32: on the sentiment presets the word embedding holds most of
the bytes, so the model shrinks by much less than its quantised layers do (`python -m
benchmarks.quantization` prints both).

Why torch's `torch.ao.quantization.quantize_dynamic`, whose use prints a deprecation notice pointing to
torchao: torchao (0.18, the newest on the package index, checked with torch 2.14.1) quantises only
`nn.Linear` (`quantize_` with `Int8DynamicActivationInt8WeightConfig` leaves every other module as it is)
and has no int8 LSTM or GRU; and its int8 Linear is a tensor subclass made for `torch.compile`. Run eagerly
on this CPU (1 thread, a Linear-GELU-Linear MLP over 1,920 tokens, median of 20), it took 2.0x fp32's time
at the presets' width 128 and 0.86x at width 512, where `quantize_dynamic`'s took 0.37x and 0.30x.
`quantize_dynamic` is the one API that covers Linear, LSTM and GRU with int8 CPU kernels, and torch 2.14
still ships it; its two deprecation notices are silenced here and nowhere else, and torchao is not needed.

Quantised LSTM/GRU layers keep their weights inside packed C++ objects, which `torch.load(weights_only=True)`
refuses; `int8_state_dict` writes them out as int8 tensors instead, and `load_int8_state_dict` packs them
again, so a saved int8 model loads without running any code of its own (`python -m experiments.shrink`).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import GRU as QuantizedGRU
from torch.ao.nn.quantized.dynamic import LSTM as QuantizedLSTM
from torch.ao.nn.quantized.dynamic import Linear as QuantizedLinear
from torch.ao.nn.quantized.dynamic.modules.rnn import RNNBase as QuantizedRNN

QUANTIZED_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.LSTM, nn.GRU)
INT8_TYPES: tuple[type[nn.Module], ...] = (QuantizedLinear, QuantizedLSTM, QuantizedGRU)
# The notices torch prints when dynamic quantisation is used (torch 2.10 and later); silenced only here.
DEPRECATION_NOTICES = (
    (r"torch\.ao\.quantization is deprecated", DeprecationWarning),  # in favour of torchao: see above
    (r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other quantized tensor", UserWarning),
)

ModuleT = TypeVar("ModuleT", bound=nn.Module)


@contextmanager
def without_deprecation_notices() -> Iterator[None]:
    with warnings.catch_warnings():
        for message, category in DEPRECATION_NOTICES:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


def quantize_dynamic_int8(model: ModuleT) -> ModuleT:
    """A copy of `model` (a task or a core, in eval mode) for CPU inference, its Linear, LSTM and GRU layers
    int8 with activations quantised per call; everything else (embeddings, convolutions, norms) stays fp32.
    `model` itself is left as it was, and the copy's fp32 parameters need no gradients. CPU only."""
    from torch.ao.quantization import quantize_dynamic

    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("dynamic int8 quantisation runs on the CPU; move the model there first (.cpu())")
    with without_deprecation_notices():
        if isinstance(model, QUANTIZED_LAYERS):  # quantize_dynamic swaps children, never the module given
            quantized = quantize_dynamic(nn.Sequential(model), set(QUANTIZED_LAYERS), dtype=torch.qint8)[0]
        else:
            quantized = quantize_dynamic(model, set(QUANTIZED_LAYERS), dtype=torch.qint8)
    return quantized.eval().requires_grad_(False)


def int8_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The quantised layers of `model`, by name."""
    return {name: module for name, module in model.named_modules() if isinstance(module, INT8_TYPES)}


def int8_state_dict(model: nn.Module) -> dict[str, Any]:
    """`model.state_dict()` of a quantised model as plain tensors and data only, which
    `torch.load(weights_only=True)` reads without torch's quantised-tensor unpickling: each int8 weight as
    `{"int8": its int8 values, "scale": ..., "zero_point": ...}`, and each quantised LSTM/GRU's packed weights
    as its weight and bias tensors, `<layer>.weight_ih_l0`, `<layer>.bias_ih_l0`, ... (torch's own names)."""
    with without_deprecation_notices():
        state = model.state_dict()  # an OrderedDict whose `_metadata` (module versions) is kept
        for name, module in model.named_modules():
            if isinstance(module, QuantizedRNN):
                prefix = f"{name}." if name else ""
                for key in [k for k in state if k.startswith(f"{prefix}_all_weight_values.")]:
                    del state[key]
                weights = module._weight_bias()
                state.update({prefix + key: value for part in weights.values() for key, value in part.items()})
        for key, value in state.items():
            state[key] = unpacked(value)
    return state


def unpacked(value: Any) -> Any:
    """A quantised tensor (also inside a tuple) as plain data; anything else as it is."""
    if isinstance(value, tuple):
        return tuple(unpacked(item) for item in value)
    if not (torch.is_tensor(value) and value.is_quantized):
        return value
    if value.qscheme() != torch.per_tensor_affine:
        raise ValueError(f"a {value.qscheme()} weight; dynamic int8 here quantises per tensor")
    return {"int8": value.int_repr(), "scale": value.q_scale(), "zero_point": value.q_zero_point()}


def repacked(value: Any) -> Any:
    """The inverse of `unpacked`."""
    if isinstance(value, tuple):
        return tuple(repacked(item) for item in value)
    if isinstance(value, dict) and set(value) == {"int8", "scale", "zero_point"}:
        return torch._make_per_tensor_quantized_tensor(value["int8"], value["scale"], value["zero_point"])
    return value


def load_int8_state_dict(model: nn.Module, state: dict[str, Any]) -> None:
    """Load what `int8_state_dict` wrote into `model`, a quantised model of the same architecture
    (`quantize_dynamic_int8` of a freshly built one); strict, as `load_state_dict` is."""
    # Per-module versions, which choose the kernels' options (a Linear's activation range): as saved, or, for
    # a state dict that lost them (copied into a plain dict), this torch's.
    metadata = getattr(state, "_metadata", None) or getattr(model.state_dict(), "_metadata", None)
    with without_deprecation_notices():
        state = OrderedDict((key, repacked(value)) for key, value in state.items())
        state._metadata = metadata  # type: ignore[attr-defined]
        for name, module in model.named_modules():
            if isinstance(module, QuantizedRNN):
                prefix = f"{name}." if name else ""
                names = [key for part in module._weight_bias().values() for key in part]
                missing = [prefix + key for key in names if prefix + key not in state]
                if missing:
                    raise KeyError(f"the int8 state dict lacks {', '.join(missing)}")
                module.set_weight_bias({key: state.pop(prefix + key) for key in names})  # packed again
                state.update({prefix + key: value for key, value in module.state_dict().items()})
        model.load_state_dict(state)
